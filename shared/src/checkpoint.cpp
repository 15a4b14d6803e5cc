#include "cutlayer/state/checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <filesystem>

#include "cutlayer/config/reader.h"
#include "cutlayer/io/files.h"
#include "cutlayer/log.h"
#include "cutlayer/transport/keys.h"

namespace cutlayer::state {
namespace {

namespace fs = std::filesystem;

constexpr char kMagic[12] = {'c', 'u', 't', 'l', 'a', 'y', 'e', 'r', 'c', 'k', 'p', 't'};
constexpr std::size_t kKindBytes = 8;
constexpr const char* kPrefix = "ckpt-";
constexpr const char* kSuffix = ".cutlayer";
constexpr std::size_t kStepDigits = 12;

// The header's fields at their offsets (little-endian integers).
struct Header {
  std::uint32_t version = kCheckpointVersion;
  std::string kind;
  std::uint64_t step = 0;
  std::array<std::uint8_t, 8> key_id{};
  crypto::Digest model{}, config{};
  crypto::Aead::Nonce nonce{};
  std::uint64_t state_bytes = 0;
};
enum Offset : std::size_t {
  kVersionAt = 12, kKindAt = 16, kStepAt = 24, kKeyIdAt = 32, kModelAt = 40, kConfigAt = 72,
  kNonceAt = 104, kReservedAt = 116, kStateBytesAt = 120
};
static_assert(kStateBytesAt + 8 == kHeaderBytes);

template <class Int>
void put(std::uint8_t* p, Int v) {
  for (std::size_t i = 0; i < sizeof(Int); ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
template <class Int>
Int get(const std::uint8_t* p) {
  Int v = 0;
  for (std::size_t i = 0; i < sizeof(Int); ++i) v |= static_cast<Int>(p[i]) << (8 * i);
  return v;
}

std::array<std::uint8_t, kHeaderBytes> encode(const Header& h) {
  std::array<std::uint8_t, kHeaderBytes> b{};
  std::memcpy(b.data(), kMagic, sizeof kMagic);
  put(&b[kVersionAt], h.version);
  std::memcpy(&b[kKindAt], h.kind.data(), std::min(h.kind.size(), kKindBytes));
  put(&b[kStepAt], h.step);
  std::memcpy(&b[kKeyIdAt], h.key_id.data(), h.key_id.size());
  std::memcpy(&b[kModelAt], h.model.data(), h.model.size());
  std::memcpy(&b[kConfigAt], h.config.data(), h.config.size());
  std::memcpy(&b[kNonceAt], h.nonce.data(), h.nonce.size());
  put(&b[kStateBytesAt], h.state_bytes);
  return b;
}

Header decode(const std::uint8_t* b) {
  if (std::memcmp(b, kMagic, sizeof kMagic) != 0)
    throw CheckpointRefused("not a cutlayer checkpoint (no 'cutlayerckpt' magic)", true);
  Header h;
  h.version = get<std::uint32_t>(&b[kVersionAt]);
  if (h.version > kCheckpointVersion)
    throw CheckpointRefused("written by a newer cutlayer (format version " + std::to_string(h.version) +
                            "; this one reads up to " + std::to_string(kCheckpointVersion) + ")");
  if (h.version == 0 || get<std::uint32_t>(&b[kReservedAt]) != 0)
    throw CheckpointRefused("corrupted header (version 0 or reserved bits set)", true);
  const auto* kind = reinterpret_cast<const char*>(&b[kKindAt]);
  h.kind.assign(kind, strnlen(kind, kKindBytes));
  h.step = get<std::uint64_t>(&b[kStepAt]);
  std::memcpy(h.key_id.data(), &b[kKeyIdAt], h.key_id.size());
  std::memcpy(h.model.data(), &b[kModelAt], h.model.size());
  std::memcpy(h.config.data(), &b[kConfigAt], h.config.size());
  std::memcpy(h.nonce.data(), &b[kNonceAt], h.nonce.size());
  h.state_bytes = get<std::uint64_t>(&b[kStateBytesAt]);
  return h;
}

std::string short_hex(const crypto::Digest& d) { return crypto::to_hex(d.data(), 6); }

// Reads exactly n bytes at `offset`; false at a premature end of file.
bool read_at(int fd, void* out, std::size_t n, off_t offset) {
  auto* p = static_cast<char*>(out);
  while (n > 0) {
    const ssize_t r = ::pread(fd, p, n, offset);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw IoError(std::string("read failed: ") + std::strerror(errno));
    if (r == 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
    offset += r;
  }
  return true;
}

// "ckpt-000000001200.cutlayer" -> 1200; -1 for any other name.
std::int64_t step_of(const std::string& name) {
  const std::string prefix = kPrefix, suffix = kSuffix;
  if (name.size() != prefix.size() + kStepDigits + suffix.size() || name.compare(0, prefix.size(), prefix) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return -1;
  std::int64_t step = 0;
  for (std::size_t i = prefix.size(); i < prefix.size() + kStepDigits; ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

std::string file_name(std::int64_t step) {
  std::string digits = std::to_string(step);
  return kPrefix + std::string(kStepDigits - std::min(kStepDigits, digits.size()), '0') + digits + kSuffix;
}

}  // namespace

CheckpointOptions read_checkpoint_options(config::Object& o) {
  CheckpointOptions c;
  o.get("dir", c.dir);
  o.get("every_steps", c.every_steps, 0, std::int64_t{1} << 40);
  o.get("every_seconds", c.every_seconds, 0.0, 1e7);
  o.get_int("keep", c.keep, 1, 1000);
  o.get("resume", c.resume);
  o.finish();
  if (c.resume && c.dir.empty())
    o.fail("resume", "needs a checkpoint directory: set `dir` (e.g. \"/var/lib/cutlayer/checkpoints\")");
  return c;
}

CheckpointKey::CheckpointKey(const std::array<std::uint8_t, 32>& ikm) {
  auto key = crypto::hkdf_sha256(ikm.data(), ikm.size(), "cutlayer checkpoint v1", "aes-256-gcm", 32);
  crypto::ScopedWipe wipe_key(key);
  crypto::Aead::Key k{};
  std::memcpy(k.data(), key.data(), k.size());
  aead_ = std::make_unique<crypto::Aead>(k);
  crypto::wipe(k.data(), k.size());
  auto id = crypto::hkdf_sha256(ikm.data(), ikm.size(), "cutlayer checkpoint v1", "key id", id_.size());
  std::memcpy(id_.data(), id.data(), id_.size());
}

CheckpointKey CheckpointKey::from_key_file(const std::string& key_pair_path) {
  auto kp = transport::load_key_pair(key_pair_path);
  auto secret = transport::decode_z85_key(kp.secret_key);
  CheckpointKey key(secret);
  crypto::wipe(secret.data(), secret.size());
  return key;
}

std::string seal_checkpoint(CheckpointKey& key, const Identity& id, std::int64_t step,
                            const std::string& state) {
  if (id.kind.empty() || id.kind.size() > kKindBytes || step < 0)
    throw InternalError("seal_checkpoint: kind must be 1-8 characters and step >= 0");
  Header h;
  h.kind = id.kind;
  h.step = static_cast<std::uint64_t>(step);
  h.key_id = key.id();
  h.model = id.model;
  h.config = id.config;
  crypto::random_bytes(h.nonce.data(), h.nonce.size());  // 96 random bits per file
  h.state_bytes = state.size();
  const auto header = encode(h);
  std::string out(kHeaderBytes + state.size() + crypto::Aead::kTagBytes, '\0');
  std::memcpy(out.data(), header.data(), header.size());
  key.aead().seal(h.nonce, header.data(), header.size(), state.data(), state.size(),
                  out.data() + kHeaderBytes, out.data() + kHeaderBytes + state.size());
  return out;
}

Opened open_checkpoint(CheckpointKey& key, const Identity& id, const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) throw IoError("cannot open: " + std::string(std::strerror(errno)));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) throw CheckpointRefused("not a regular file", true);
  const auto size = static_cast<std::uint64_t>(st.st_size);
  constexpr std::uint64_t kMin = kHeaderBytes + crypto::Aead::kTagBytes;
  std::array<std::uint8_t, kHeaderBytes> hb{};
  if (size < kMin || !read_at(fd, hb.data(), hb.size(), 0))
    throw CheckpointRefused("truncated (" + std::to_string(size) + " bytes; a checkpoint has at least " +
                                std::to_string(kMin) + ")",
                            true);
  const Header h = decode(hb.data());
  if (h.state_bytes != size - kMin)
    throw CheckpointRefused("truncated or altered: the header promises " + std::to_string(h.state_bytes) +
                                " bytes of state, the file holds " + std::to_string(size - kMin),
                            true);
  if (h.state_bytes > kMaxStateBytes)
    throw CheckpointRefused("holds " + std::to_string(h.state_bytes) + " bytes of state, more than the " +
                                std::to_string(kMaxStateBytes) + " a checkpoint may",
                            true);
  if (h.key_id != key.id())
    throw CheckpointRefused("sealed under another key (key id " + crypto::to_hex(h.key_id.data(), 8) +
                            ", this party's is " + crypto::to_hex(key.id().data(), 8) +
                            "): another party's checkpoint, or the key file was replaced");
  Opened o;
  o.state.resize(h.state_bytes);
  std::array<std::uint8_t, crypto::Aead::kTagBytes> tag{};
  if (!read_at(fd, o.state.data(), o.state.size(), kHeaderBytes) ||
      !read_at(fd, tag.data(), tag.size(), static_cast<off_t>(kHeaderBytes + h.state_bytes)))
    throw CheckpointRefused("truncated while being read", true);
  if (!key.aead().open(h.nonce, hb.data(), hb.size(), o.state.data(), o.state.size(), o.state.data(), tag.data()))
    throw CheckpointRefused("corrupted: authentication failed (the file changed after it was written)", true);
  if (h.kind != id.kind)
    throw CheckpointRefused("a " + h.kind + " checkpoint, and this is a " + id.kind);
  if (h.model != id.model)
    throw CheckpointRefused("for another model (fingerprint " + short_hex(h.model) + ", this run's is " +
                            short_hex(id.model) + ")");
  if (h.config != id.config)
    throw CheckpointRefused("written under another training config (hash " + short_hex(h.config) +
                            ", this run's is " + short_hex(id.config) +
                            "): the optimizer, schedule, batch size, seed, data sharding or privacy options differ");
  o.step = static_cast<std::int64_t>(h.step);
  o.file = path;
  return o;
}

CheckpointStore::CheckpointStore(CheckpointOptions o, CheckpointKey key, Identity id)
    : o_(std::move(o)), key_(std::move(key)), id_(std::move(id)), last_time_(std::chrono::steady_clock::now()) {
  std::error_code ec;
  if (!fs::exists(o_.dir, ec)) {
    fs::create_directories(o_.dir, ec);
    if (!ec) fs::permissions(o_.dir, fs::perms::owner_all, ec);
    if (ec) throw IoError("cannot create the checkpoint directory '" + o_.dir + "': " + ec.message());
  } else if (!fs::is_directory(o_.dir, ec)) {
    throw ConfigError("checkpoint.dir '" + o_.dir + "' is not a directory");
  }
}

bool CheckpointStore::due_by_steps(std::int64_t steps_done) const {
  // On an absolute grid (every multiple of every_steps), so that a time-based write does not
  // shift it and two parties with the same every_steps write at the same steps.
  return o_.every_steps > 0 && steps_done / o_.every_steps > last_step_ / o_.every_steps;
}

bool CheckpointStore::due_by_time(std::int64_t steps_done) const {
  const double since = std::chrono::duration<double>(std::chrono::steady_clock::now() - last_time_).count();
  return o_.every_seconds > 0 && since >= o_.every_seconds && steps_done > last_step_;
}

CheckpointStore::~CheckpointStore() {
  if (progress_fd_ >= 0) ::close(progress_fd_);
}

void CheckpointStore::note_progress(std::int64_t steps_done) {
  if (progress_fd_ < 0) {
    const auto path = (fs::path(o_.dir) / "progress").string();
    progress_fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (progress_fd_ < 0) throw IoError("cannot write '" + path + "': " + std::strerror(errno));
  }
  char line[32];
  const int n = std::snprintf(line, sizeof line, "%020lld\n", static_cast<long long>(steps_done));
  if (::pwrite(progress_fd_, line, static_cast<std::size_t>(n), 0) != n)
    throw IoError("cannot write the progress file in '" + o_.dir + "': " + std::strerror(errno));
}

std::int64_t CheckpointStore::noted_progress() const {
  const auto path = (fs::path(o_.dir) / "progress").string();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) return -1;
  char line[21] = {};
  const ssize_t n = ::pread(fd, line, 20, 0);
  ::close(fd);
  if (n != 20) return -1;
  std::int64_t v = 0;
  if (line[0] != '0' || line[1] != '0') return -1;  // at most 18 digits: no overflow
  for (char c : std::string_view(line, 20)) {
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  return v;
}

std::vector<std::string> CheckpointStore::files() const {
  std::vector<std::pair<std::int64_t, std::string>> found;
  std::error_code ec;
  for (fs::directory_iterator it(o_.dir, ec), end; !ec && it != end; it.increment(ec)) {
    const auto name = it->path().filename().string();
    if (const auto step = step_of(name); step >= 0) found.emplace_back(step, it->path().string());
  }
  if (ec) throw IoError("cannot list the checkpoint directory '" + o_.dir + "': " + ec.message());
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(std::move(f.second));
  return out;
}

std::string CheckpointStore::write(std::int64_t steps_done, const std::string& state) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::string sealed = seal_checkpoint(key_, id_, steps_done, state);
  const std::string path = (fs::path(o_.dir) / file_name(steps_done)).string();
  io::write_file_atomically(path, sealed.data(), sealed.size(), 0600, /*replace=*/true);
  // Newest first: the checkpoints of later steps belong to an abandoned future (a run
  // started over in this directory, or rewound) and go, so this one is the newest.
  bool removed = false;
  std::size_t kept = 0;
  for (const auto& f : files()) {
    const auto step = step_of(fs::path(f).filename().string());
    if (step > steps_done || (step < steps_done && ++kept >= static_cast<std::size_t>(o_.keep)))
      removed |= ::unlink(f.c_str()) == 0;
  }
  if (removed) io::fsync_dir(o_.dir);
  last_step_ = steps_done;
  last_time_ = std::chrono::steady_clock::now();
  last_write_ms_ = std::chrono::duration<double, std::milli>(last_time_ - t0).count();
  return path;
}

// Opens `path` and applies it; a refused one is logged (and set aside when damaged) and
// its reason added to `reasons`.
std::optional<Opened> CheckpointStore::try_load(const std::string& path, const std::function<void(const Opened&)>& apply,
                                                std::string& reasons) {
  try {
    auto o = open_checkpoint(key_, id_, path);
    if (apply) apply(o);
    last_step_ = o.step;
    last_time_ = std::chrono::steady_clock::now();
    return o;
  } catch (const Error& e) {  // CheckpointRefused, or IoError (unreadable)
    const auto* refused = dynamic_cast<const CheckpointRefused*>(&e);
    const bool damaged = refused != nullptr && refused->damaged();
    log::get("checkpoint")->warn("checkpoint {} refused: {}{}", path, e.what(),
                                 damaged ? "; it is renamed " + fs::path(path).filename().string() + ".refused" : "");
    reasons += "\n  " + path + ": " + e.what();
    std::error_code ec;
    if (damaged) {
      fs::rename(path, path + ".refused", ec);
      io::fsync_dir(o_.dir);
    }
    return std::nullopt;
  }
}

std::optional<Opened> CheckpointStore::load_newest(const std::function<void(const Opened&)>& apply) {
  const auto all = files();
  if (all.empty()) return std::nullopt;
  std::string reasons;
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (auto o = try_load(all[i], apply, reasons)) return o;
    if (i + 1 < all.size()) log::get("checkpoint")->info("the previous checkpoint, {}, is tried", all[i + 1]);
  }
  throw ConfigError("no checkpoint in '" + o_.dir + "' can be used:" + reasons +
                    "\nRestore the key file or config they were written with, or move them away to start over");
}

std::optional<Opened> CheckpointStore::load_step(std::int64_t steps_done,
                                                 const std::function<void(const Opened&)>& apply) {
  const std::string path = (fs::path(o_.dir) / file_name(steps_done)).string();
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return std::nullopt;
  std::string reasons;
  return try_load(path, apply, reasons);
}

}  // namespace cutlayer::state
