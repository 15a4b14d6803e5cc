#include "cutlayer/transport/keys.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <vector>

#include "cutlayer/crypto/crypto.h"
#include "cutlayer/error.h"
#include "cutlayer/io/files.h"

namespace cutlayer::transport {
namespace {

constexpr std::size_t kMaxKeyFileBytes = 64 * 1024;  // a key file is ~150 bytes

std::string_view trim(std::string_view s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// "alice (uid 1000)", or "uid 1000" for a uid without a passwd entry.
std::string user_text(uid_t uid) {
  std::vector<char> buf(16384);
  struct passwd pw {};
  struct passwd* found = nullptr;
  const std::string num = "uid " + std::to_string(uid);
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr &&
      found->pw_name != nullptr)
    return std::string(found->pw_name) + " (" + num + ")";
  return num;
}

std::string user_name_or_uid(uid_t uid) {
  std::vector<char> buf(16384);
  struct passwd pw {};
  struct passwd* found = nullptr;
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr &&
      found->pw_name != nullptr)
    return found->pw_name;
  return std::to_string(uid);
}

std::string mode_text(mode_t mode) {
  char m[8];
  std::snprintf(m, sizeof m, "%04o", static_cast<unsigned>(mode & 07777));
  return m;
}

// The checks of FileProtection, on the opened file's fstat.
void check_protection(const struct stat& st, const std::string& path, FileProtection protection,
                      const char* what) {
  if (!S_ISREG(st.st_mode))
    throw ConfigError(path + ": " + what + " is not a regular file; point the config at the file " +
                      "cutlayer-keygen wrote");
  const uid_t me = ::geteuid();
  if (st.st_uid != me && st.st_uid != 0)
    throw ConfigError(path + ": " + what + " is owned by " + user_text(st.st_uid) +
                      ", who can change it; it must belong to " +
                      (me == 0 ? std::string("root, the user cutlayer runs as")
                               : "the user cutlayer runs as, " + user_text(me) + ", or to root") +
                      "; fix with: chown " + user_name_or_uid(me) + " " + io::shell_word(path));
  if (protection == FileProtection::kSecret && (st.st_mode & 077) != 0)
    throw ConfigError(path + ": " + what + " holds a secret key but is open to " +
                      ((st.st_mode & 070) != 0 && (st.st_mode & 07) != 0 ? "group and other users"
                       : (st.st_mode & 070) != 0                          ? "its group"
                                                                          : "other users") +
                      " (mode " + mode_text(st.st_mode) +
                      "; it must be 0600 or 0400); fix with: chmod 600 " + io::shell_word(path));
  if (protection == FileProtection::kTrusted && (st.st_mode & 022) != 0)
    throw ConfigError(path + ": " + what + " is writable by " +
                      ((st.st_mode & 020) != 0 && (st.st_mode & 02) != 0 ? "group and other users"
                       : (st.st_mode & 020) != 0                          ? "its group"
                                                                          : "other users") +
                      " (mode " + mode_text(st.st_mode) +
                      "), who could then choose which keys are trusted; fix with: chmod go-w " +
                      io::shell_word(path));
}

// Parses "name = value" lines into the two key fields. Works on views of `text` so that
// no copy of a secret is made beyond the one assigned to `sec`.
void parse_key_lines(std::string_view text, const std::string& path, std::string& pub,
                     std::string& sec) {
  int lineno = 0;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    ++lineno;
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    const auto eq = line.find('=');
    if (eq == std::string_view::npos)
      throw ConfigError(path + ":" + std::to_string(lineno) + ": expected 'public-key = <z85>'");
    const std::string name(trim(line.substr(0, eq)));
    const std::string_view value = trim(line.substr(eq + 1));
    std::string* field = nullptr;
    if (name == "public-key") field = &pub;
    else if (name == "secret-key") field = &sec;
    else throw ConfigError(path + ":" + std::to_string(lineno) + ": unknown field '" + name + "'");
    crypto::wipe(*field);  // a repeated line: the old value goes
    field->assign(value.data(), value.size());
    if (!is_z85_key(*field))
      throw ConfigError(path + ":" + std::to_string(lineno) + ": " + name +
                        " is not a 40-character Z85 Curve25519 key");
  }
}

}  // namespace

CurveKeyPair::CurveKeyPair(std::string public_z85, std::string secret_z85)
    : public_key(std::move(public_z85)), secret_key(std::move(secret_z85)) {}

CurveKeyPair& CurveKeyPair::operator=(const CurveKeyPair& other) {
  if (this != &other) {
    public_key = other.public_key;
    crypto::wipe(secret_key);  // an assignment may reallocate and free the old bytes
    secret_key = other.secret_key;
  }
  return *this;
}

CurveKeyPair& CurveKeyPair::operator=(CurveKeyPair&& other) noexcept {
  if (this != &other) {
    public_key = std::move(other.public_key);
    crypto::wipe(secret_key);  // a move may hand the old buffer to `other` or free it
    secret_key = std::move(other.secret_key);
  }
  return *this;
}

CurveKeyPair::~CurveKeyPair() { crypto::wipe(secret_key); }

CurveKeyPair generate_key_pair() {
  char pub[41], sec[41];
  if (zmq_curve_keypair(pub, sec) != 0)
    throw Error(std::string("zmq_curve_keypair failed: ") + zmq_strerror(zmq_errno()) +
                " (libzmq built without CURVE?)");
  CurveKeyPair kp(std::string(pub, 40), std::string(sec, 40));
  crypto::wipe(sec, sizeof sec);
  return kp;
}

bool is_z85_key(const std::string& s) {
  if (s.size() != 40) return false;
  std::uint8_t out[32];
  char again[41];
  // Canonical only: libzmq decodes a 5-character group worth more than 2^32 - 1 by
  // wrapping, so such a text names the same 32 bytes as another one, and a key listed that
  // way would never match the peer's key (found by the keys and allow_list fuzzers).
  const bool ok = zmq_z85_decode(out, s.c_str()) != nullptr && zmq_z85_encode(again, out, sizeof out) != nullptr &&
                  s.compare(0, 40, again, 40) == 0;
  crypto::wipe(out, sizeof out);  // `s` may be a secret key
  crypto::wipe(again, sizeof again);
  return ok;
}

std::array<std::uint8_t, 32> decode_z85_key(const std::string& z85) {
  if (!is_z85_key(z85)) throw ConfigError("not a 40-character canonical Z85 Curve25519 key");
  std::array<std::uint8_t, 32> out{};
  zmq_z85_decode(out.data(), z85.c_str());
  return out;
}

std::string format_key_pair(const CurveKeyPair& kp, const std::string& comment) {
  std::string s;
  s.reserve(comment.size() + 128);  // one buffer: no reallocation leaves a copy behind
  if (!comment.empty()) s += "# " + comment + "\n";
  s += "public-key = " + kp.public_key + "\n";
  s += "secret-key = ";
  s += kp.secret_key;
  s += "\n";
  return s;
}

std::string read_protected_file(const std::string& path, FileProtection protection,
                                const char* what, std::size_t max_bytes) {
  // O_NONBLOCK: a FIFO planted at the path must not hang the open (it is refused below as
  // not a regular file); it changes nothing for a regular file. Symbolic links are
  // followed (keys are often links into a secrets mount); the fstat sees the target.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0)
    throw IoError("cannot read " + std::string(what) + " '" + path + "': " + std::strerror(errno) +
                  ". Make keys with: cutlayer-keygen --out <dir> --clients <name,...>");
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    throw IoError("cannot stat " + std::string(what) + " '" + path + "': " + std::strerror(errno));
  check_protection(st, path, protection, what);
  if (static_cast<std::uint64_t>(st.st_size) > max_bytes)
    throw IoError(path + ": " + what + " is " + std::to_string(st.st_size) +
                  " bytes, more than the " + std::to_string(max_bytes) + " such a file can be");
  std::string text;
  // One allocation of the final size (+1 to see the end): no growth leaves stray copies.
  text.resize(static_cast<std::size_t>(st.st_size) + 1);
  std::size_t got = 0;
  for (;;) {
    if (got == text.size()) {  // grew since the fstat
      if (text.size() > max_bytes) {
        if (protection == FileProtection::kSecret) crypto::wipe(text);
        throw IoError(path + ": " + what + " is larger than the " + std::to_string(max_bytes) +
                      " bytes such a file can be");
      }
      std::string bigger(std::min(text.size() * 2, max_bytes + 1), '\0');
      bigger.replace(0, got, text.data(), got);
      if (protection == FileProtection::kSecret) crypto::wipe(text);
      text.swap(bigger);
    }
    const ssize_t r = ::read(fd, text.data() + got, text.size() - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      const std::string err = std::strerror(errno);
      if (protection == FileProtection::kSecret) crypto::wipe(text);
      throw IoError("cannot read " + std::string(what) + " '" + path + "': " + err);
    }
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  text.resize(got);  // shrinking keeps the buffer
  return text;
}

CurveKeyPair load_key_pair(const std::string& path) {
  std::string text = read_protected_file(path, FileProtection::kSecret, "key pair file",
                                         kMaxKeyFileBytes);
  crypto::ScopedWipe wipe_text(text);
  CurveKeyPair kp;
  parse_key_lines(text, path, kp.public_key, kp.secret_key);
  if (kp.public_key.empty() || kp.secret_key.empty())
    throw ConfigError(path + ": a key pair file needs both public-key and secret-key lines");
  return kp;
}

std::string load_public_key(const std::string& path) {
  std::string text = read_protected_file(path, FileProtection::kTrusted, "public key file",
                                         kMaxKeyFileBytes);
  crypto::ScopedWipe wipe_text(text);  // it may be a key pair file
  std::string pub, sec;
  crypto::ScopedWipe wipe_sec(sec);
  parse_key_lines(text, path, pub, sec);
  if (pub.empty()) throw ConfigError(path + ": no 'public-key = <z85>' line");
  return pub;
}

void write_private_file(const std::string& path, const std::string& content, bool force) {
  io::write_file_atomically(path, content.data(), content.size(), 0600, force);
}

void write_public_file(const std::string& path, const std::string& content, bool force) {
  io::write_file_atomically(path, content.data(), content.size(), 0644, force);
}

}  // namespace cutlayer::transport
