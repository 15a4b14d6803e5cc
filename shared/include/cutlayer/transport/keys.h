// Curve25519 key pairs (Z85 text) and their files.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace cutlayer::transport {

struct CurveKeyPair {
  std::string public_key;  // 40 Z85 characters
  std::string secret_key;  // 40 Z85 characters; wiped (OPENSSL_cleanse) when the pair is
                           // destroyed and before it is overwritten by an assignment

  CurveKeyPair() = default;
  CurveKeyPair(std::string public_z85, std::string secret_z85);
  CurveKeyPair(const CurveKeyPair&) = default;
  CurveKeyPair(CurveKeyPair&&) noexcept = default;  // the secret's buffer moves, no copy
  CurveKeyPair& operator=(const CurveKeyPair& other);
  CurveKeyPair& operator=(CurveKeyPair&& other) noexcept;
  ~CurveKeyPair();
};

// A fresh key pair from libzmq (libsodium underneath).
CurveKeyPair generate_key_pair();

// True for a 40-character Z85 string that decodes to 32 bytes and is their canonical
// encoding (a group worth more than 2^32 - 1, such as "#####", is refused).
bool is_z85_key(const std::string& s);

// The 32 bytes a canonical Z85 key (is_z85_key) stands for; throws ConfigError otherwise.
// For a secret key the bytes are key material: wipe them (crypto::wipe) once used.
std::array<std::uint8_t, 32> decode_z85_key(const std::string& z85);

// Key pair file: "public-key = <z85>" and "secret-key = <z85>" lines ('#' comments).
// The returned text holds the secret: wipe it (crypto::wipe) once written.
std::string format_key_pair(const CurveKeyPair& kp, const std::string& comment);
// Reads a key pair file after checking it as FileProtection::kSecret (below).
CurveKeyPair load_key_pair(const std::string& path);

// A public key from a ".pub" file (one "public-key = <z85>" line) or a key pair file. The
// file is checked as FileProtection::kTrusted: a client pins the server by this key.
std::string load_public_key(const std::string& path);

// How a key-related file must be protected before it is read. The check is made as ssh
// makes it: on the opened file (fstat of the descriptor, so what is checked is what is read;
// a symbolic link is followed and its target checked), never by path.
//   kSecret  (key pair files): a regular file owned by this process's user (euid) or by
//            root, with no access at all for group or other (0600 or 0400).
//   kTrusted (the allow-list, a pinned public key): a regular file owned by this process's
//            user or by root, not writable by group or other (0644 is fine).
// A failed check throws ConfigError naming the file, what is wrong and the command that
// fixes it (e.g. "chmod 600 /etc/cutlayer/keys/server.key").
enum class FileProtection { kSecret, kTrusted };

// Reads a whole key-related file (`what` names it in errors, e.g. "key pair file") after
// the check above. Throws IoError when it cannot be opened or read (the message says how
// keys are made) or is larger than `max_bytes`. A kSecret file's text is the caller's to wipe.
std::string read_protected_file(const std::string& path, FileProtection protection,
                                const char* what, std::size_t max_bytes);

// Writes `content` to a new file at `path`, atomically: a temp file "<path>.tmp" is created
// with O_CREAT|O_EXCL|O_NOFOLLOW (so it is always a fresh file, never an existing file or
// the target of a symbolic link planted there), written, fsynced and renamed over `path`.
// A stale temp file of this user's from an interrupted run is removed first; anything else
// at the temp path (a symbolic link, another user's file) is refused. Refuses to replace
// an existing `path` unless `force`.
//   write_private_file: mode 0600 (secret keys, the allow-list).
//   write_public_file:  mode 0644 less the umask (.pub files).
void write_private_file(const std::string& path, const std::string& content, bool force);
void write_public_file(const std::string& path, const std::string& content, bool force);

}  // namespace cutlayer::transport
