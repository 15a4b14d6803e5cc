#include "cutlayer/transport/keys.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "cutlayer/error.h"

namespace cutlayer::transport {
namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::string read_file(const std::string& path, const char* what) {
  std::ifstream in(path);
  if (!in)
    throw IoError("cannot read " + std::string(what) + " '" + path + "': " + std::strerror(errno) +
                  ". Make keys with: cutlayer-keygen --out <dir> --clients <name,...>");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Parses "name = value" lines into the two key fields.
void parse_key_lines(const std::string& text, const std::string& path, std::string& pub,
                     std::string& sec) {
  std::istringstream in(text);
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    const auto eq = line.find('=');
    if (eq == std::string::npos)
      throw ConfigError(path + ":" + std::to_string(lineno) + ": expected 'public-key = <z85>'");
    const std::string name = trim(line.substr(0, eq));
    const std::string value = trim(line.substr(eq + 1));
    if (name == "public-key") pub = value;
    else if (name == "secret-key") sec = value;
    else throw ConfigError(path + ":" + std::to_string(lineno) + ": unknown field '" + name + "'");
    if (!is_z85_key(value))
      throw ConfigError(path + ":" + std::to_string(lineno) + ": " + name +
                        " is not a 40-character Z85 Curve25519 key");
  }
}

}  // namespace

CurveKeyPair generate_key_pair() {
  char pub[41], sec[41];
  if (zmq_curve_keypair(pub, sec) != 0)
    throw Error(std::string("zmq_curve_keypair failed: ") + zmq_strerror(zmq_errno()) +
                " (libzmq built without CURVE?)");
  return {pub, sec};
}

bool is_z85_key(const std::string& s) {
  if (s.size() != 40) return false;
  std::uint8_t out[32];
  return zmq_z85_decode(out, s.c_str()) != nullptr;
}

std::string format_key_pair(const CurveKeyPair& kp, const std::string& comment) {
  std::string s;
  if (!comment.empty()) s += "# " + comment + "\n";
  s += "public-key = " + kp.public_key + "\n";
  s += "secret-key = " + kp.secret_key + "\n";
  return s;
}

CurveKeyPair load_key_pair(const std::string& path) {
  CurveKeyPair kp;
  parse_key_lines(read_file(path, "key pair file"), path, kp.public_key, kp.secret_key);
  if (kp.public_key.empty() || kp.secret_key.empty())
    throw ConfigError(path + ": a key pair file needs both public-key and secret-key lines");
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0)
  {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%03o", static_cast<unsigned>(st.st_mode & 0777));
    throw ConfigError(path + ": secret key file is open to other users (mode " + mode +
                      "); fix with: chmod 600 " + path);
  }
  return kp;
}

std::string load_public_key(const std::string& path) {
  std::string pub, sec;
  parse_key_lines(read_file(path, "public key file"), path, pub, sec);
  if (pub.empty()) throw ConfigError(path + ": no 'public-key = <z85>' line");
  return pub;
}

void write_private_file(const std::string& path, const std::string& content, bool force) {
  struct stat st {};
  if (!force && ::stat(path.c_str(), &st) == 0)
    throw IoError("'" + path + "' exists; refusing to overwrite it (pass --force to replace it)");
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw IoError("cannot create '" + tmp + "': " + std::strerror(errno));
  ::fchmod(fd, 0600);  // O_CREAT's mode does not narrow an existing temp file
  const char* p = content.data();
  std::size_t left = content.size();
  while (left > 0) {
    const ssize_t w = ::write(fd, p, left);
    if (w < 0) {
      if (errno == EINTR) continue;
      const std::string err = std::strerror(errno);
      ::close(fd);
      throw IoError("cannot write '" + tmp + "': " + err);
    }
    p += w;
    left -= static_cast<std::size_t>(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0)
    throw IoError("cannot flush '" + tmp + "': " + std::strerror(errno));
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    throw IoError("cannot rename '" + tmp + "' to '" + path + "': " + std::strerror(errno));
}

}  // namespace cutlayer::transport
