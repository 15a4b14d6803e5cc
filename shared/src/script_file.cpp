#include "script_file.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <string_view>

#include "cutlayer/crypto/crypto.h"
#include "cutlayer/error.h"

namespace cutlayer::model::detail {
namespace {

constexpr std::uint32_t kEndSig = 0x06054b50, kEnd64Sig = 0x06064b50, kLocator64Sig = 0x07064b50;
constexpr std::uint32_t kCentralSig = 0x02014b50, kLocalSig = 0x04034b50;
constexpr std::uint64_t kMaxRecords = 1 << 20;
constexpr std::uint64_t kMaxCodeBytes = 64ull << 20;
constexpr std::uint64_t kMaxUnpackedBytes = 16ull << 30;  // TorchScript source: kilobytes in practice

// Little-endian reads within the file; any read past its end is a truncated file.
class Reader {
 public:
  Reader(const std::string& bytes, const std::string& path) : b_(bytes), path_(path) {}
  std::uint64_t u(std::uint64_t at, int n) const {
    need(at, static_cast<std::uint64_t>(n));
    std::uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= std::uint64_t{static_cast<unsigned char>(b_[at + i])} << (8 * i);
    return v;
  }
  void need(std::uint64_t at, std::uint64_t n) const {
    if (at > b_.size() || n > b_.size() - at) fail("truncated (a record reaches past the end of the file)");
  }
  std::string_view view(std::uint64_t at, std::uint64_t n) const {
    need(at, n);
    return std::string_view(b_).substr(at, n);
  }
  std::uint64_t size() const { return b_.size(); }
  [[noreturn]] void fail(const std::string& why) const {
    throw ConfigError(path_ + ": " + why + "; not a usable TorchScript file (write it again with torch.jit.save)");
  }

 private:
  const std::string& b_;
  const std::string& path_;
};

struct Directory {
  std::uint64_t records = 0, offset = 0, size = 0;
};

Directory find_directory(const Reader& r) {
  if (r.size() < 22) r.fail("truncated or not a zip archive (" + std::to_string(r.size()) + " bytes)");
  const std::uint64_t lowest = r.size() > 22 + 0xffff ? r.size() - 22 - 0xffff : 0;
  std::uint64_t at = r.size() - 22;
  while (r.u(at, 4) != kEndSig) {
    if (at == lowest) r.fail("truncated or not a zip archive (no end-of-directory record)");
    --at;
  }
  Directory d{r.u(at + 10, 2), r.u(at + 16, 4), r.u(at + 12, 4)};
  if (d.records == 0xffff || d.offset == 0xffffffff || d.size == 0xffffffff) {  // zip64
    if (at < 20 || r.u(at - 20, 4) != kLocator64Sig) r.fail("a zip64 archive without its locator");
    const auto end64 = r.u(at - 20 + 8, 8);
    if (r.u(end64, 4) != kEnd64Sig) r.fail("a zip64 locator pointing at no zip64 directory end");
    d = Directory{r.u(end64 + 32, 8), r.u(end64 + 48, 8), r.u(end64 + 40, 8)};
  }
  if (d.records > kMaxRecords) r.fail(std::to_string(d.records) + " records (at most 2^20 accepted)");
  r.need(d.offset, d.size);
  return d;
}

struct Record {
  std::string name;
  std::uint64_t method = 0, crc = 0, packed = 0, size = 0, local = 0;
};

// Sizes and offset saturated at 0xffffffff are in the zip64 extra field (id 1), in order.
void read_zip64_extra(const Reader& r, std::uint64_t at, std::uint64_t len, Record& e) {
  for (std::uint64_t p = at; p + 4 <= at + len;) {
    const auto id = r.u(p, 2), n = r.u(p + 2, 2);
    if (id == 1) {
      std::uint64_t q = p + 4;
      for (auto* f : {&e.size, &e.packed, &e.local})
        if (*f == 0xffffffff) {
          if (q + 8 > p + 4 + n) r.fail("a zip64 field shorter than its record needs");
          *f = r.u(q, 8);
          q += 8;
        }
      return;
    }
    p += 4 + n;
  }
}

Record read_record(const Reader& r, std::uint64_t& at) {
  if (r.u(at, 4) != kCentralSig) r.fail("corrupted (a directory entry without its signature)");
  Record e;
  e.method = r.u(at + 10, 2);
  e.crc = r.u(at + 16, 4);
  e.packed = r.u(at + 20, 4);
  e.size = r.u(at + 24, 4);
  const auto name_len = r.u(at + 28, 2), extra_len = r.u(at + 30, 2), comment_len = r.u(at + 32, 2);
  e.local = r.u(at + 42, 4);
  e.name = std::string(r.view(at + 46, name_len));
  // miniz (LibTorch's reader) extracts nothing from a record marked as a directory: its
  // tensor would be left as uninitialized memory.
  if ((r.u(at + 38, 4) & 0x10) != 0 || e.name.empty() || e.name.back() == '/')
    r.fail("corrupted (record '" + e.name + "' is marked as a directory)");
  read_zip64_extra(r, at + 46 + name_len, extra_len, e);
  at += 46 + name_len + extra_len + comment_len;
  return e;
}

// The record's data: where it starts, after its local header.
std::uint64_t data_start(const Reader& r, const Record& e) {
  if (r.u(e.local, 4) != kLocalSig) r.fail("corrupted (record '" + e.name + "' has no local header)");
  return e.local + 30 + r.u(e.local + 26, 2) + r.u(e.local + 28, 2);
}

// Checks the record's CRC-32 and size; appends its uncompressed bytes to `keep` when given.
void check_data(const Reader& r, const Record& e, std::string* keep) {
  const auto packed = r.view(data_start(r, e), e.packed);
  const std::uint64_t kept = std::max<std::uint64_t>(e.size, e.method == 0 ? packed.size() : 0);
  if (keep && kept > kMaxCodeBytes - std::min<std::uint64_t>(keep->size(), kMaxCodeBytes))
    r.fail("more than 64 MiB of code");
  uLong crc = crc32(0L, Z_NULL, 0);
  std::uint64_t produced = 0;
  auto take = [&](const char* p, std::size_t n) {
    crc = crc32(crc, reinterpret_cast<const Bytef*>(p), static_cast<uInt>(n));
    produced += n;
    if (keep) keep->append(p, n);
  };
  if (e.method == 0) {
    for (std::size_t i = 0; i < packed.size(); i += 1 << 30) take(packed.data() + i, std::min<std::size_t>(packed.size() - i, 1 << 30));
  } else if (e.method == 8) {
    z_stream z{};
    if (inflateInit2(&z, -MAX_WBITS) != Z_OK) r.fail("zlib could not start");
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(packed.data()));
    z.avail_in = static_cast<uInt>(std::min<std::uint64_t>(packed.size(), 0xffffffffu));
    char out[1 << 16];
    int rc = Z_OK;
    while (rc == Z_OK && produced <= e.size) {
      z.next_out = reinterpret_cast<Bytef*>(out);
      z.avail_out = sizeof out;
      rc = inflate(&z, Z_NO_FLUSH);
      take(out, sizeof out - z.avail_out);
      if (rc == Z_BUF_ERROR && z.avail_in == 0) break;
    }
    inflateEnd(&z);
    if (rc != Z_STREAM_END) r.fail("corrupted (record '" + e.name + "' does not inflate)");
  } else {
    r.fail("record '" + e.name + "' uses compression method " + std::to_string(e.method) + " (PyTorch writes 0 or 8)");
  }
  if (produced != e.size || crc != e.crc)
    r.fail("corrupted (record '" + e.name + "' fails its CRC-32 or size check)");
}

// "archive/code/__torch__/x.py" -> "code/__torch__/x.py": the root is the name the file was
// saved under, which the model's identity should not depend on.
std::string_view below_root(std::string_view name) {
  const auto slash = name.find('/');
  return slash == std::string_view::npos ? std::string_view() : name.substr(slash + 1);
}

bool ends_with(std::string_view s, std::string_view tail) {
  return s.size() >= tail.size() && s.substr(s.size() - tail.size()) == tail;
}

}  // namespace

ScriptArchive check_script_archive(const std::string& bytes, const std::string& path) {
  const Reader r(bytes, path);
  const auto dir = find_directory(r);
  ScriptArchive out;
  std::string code, version;
  bool has_version = false;
  std::uint64_t at = dir.offset, packed_total = 0, size_total = 0;
  for (std::uint64_t i = 0; i < dir.records; ++i) {
    const auto e = read_record(r, at);
    if (at > dir.offset + dir.size) r.fail("corrupted (the directory overruns its declared size)");
    // Records do not overlap, so their data add up to at most the file; and what they inflate
    // to is bounded: the check's work stays proportional to the file.
    packed_total += std::min<std::uint64_t>(e.packed, r.size() + 1);
    size_total += std::min<std::uint64_t>(e.size, kMaxUnpackedBytes + 1);
    if (packed_total > r.size()) r.fail("corrupted (records overlap or overrun the file)");
    if (size_total > kMaxUnpackedBytes) r.fail("more than 16 GiB when unpacked");
    const auto inner = below_root(e.name);
    const bool is_code = inner.substr(0, 5) == "code/" && !ends_with(inner, ".debug_pkl");
    if (is_code) {
      out.torchscript = true;
      code += e.name.substr(e.name.size() - inner.size()) + '\n';
    }
    if (inner == "version" || inner == ".data/version") {  // the latter from format 6 on
      has_version = true;
      version.clear();
      check_data(r, e, &version);
      if (version.size() > 32) r.fail("its version record is not a number");
    } else {
      check_data(r, e, is_code ? &code : nullptr);
    }
  }
  if (!has_version) r.fail("no version record (not written by torch.jit.save)");
  char* end = nullptr;
  out.format_version = std::strtoull(version.c_str(), &end, 10);
  if (end == version.c_str()) r.fail("its version record is not a number");
  const auto d = crypto::sha256(code.data(), code.size());
  out.code_sha256 = crypto::to_hex(d.data(), d.size());
  return out;
}

}  // namespace cutlayer::model::detail
