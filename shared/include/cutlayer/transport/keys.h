// Curve25519 key pairs (Z85 text) and their files.
#pragma once

#include <string>

namespace cutlayer::transport {

struct CurveKeyPair {
  std::string public_key;  // 40 Z85 characters
  std::string secret_key;  // 40 Z85 characters
};

// A fresh key pair from libzmq (libsodium underneath).
CurveKeyPair generate_key_pair();

// True for a 40-character Z85 string that decodes to 32 bytes.
bool is_z85_key(const std::string& s);

// Key pair file: "public-key = <z85>" and "secret-key = <z85>" lines ('#' comments).
std::string format_key_pair(const CurveKeyPair& kp, const std::string& comment);
CurveKeyPair load_key_pair(const std::string& path);

// A public key from a ".pub" file (one "public-key = <z85>" line) or a key pair file.
std::string load_public_key(const std::string& path);

// Writes `content` to `path` with mode 0600 (created 0600, never wider). Refuses to
// replace an existing file unless `force`; writes atomically (temp file + rename).
void write_private_file(const std::string& path, const std::string& content, bool force);

}  // namespace cutlayer::transport
