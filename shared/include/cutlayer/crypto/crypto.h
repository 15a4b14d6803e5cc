// Small OpenSSL helpers: random bytes, SHA-256, HKDF-SHA256, wiping secrets.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace cutlayer::crypto {

using Bytes = std::vector<std::uint8_t>;
using Digest = std::array<std::uint8_t, 32>;

// Fills `out` with cryptographically secure random bytes (RAND_bytes).
void random_bytes(void* out, std::size_t n);

// SHA-256 of a byte string.
Digest sha256(const void* data, std::size_t n);

// HKDF-SHA256 (RFC 5869): extract with `salt`, expand with `info` to `out_len` bytes.
// The result is key material: the caller wipes it (wipe below) once done with it. OpenSSL
// clears its own copies (the pseudo-random key, the input key) when the context is freed.
Bytes hkdf_sha256(const void* ikm, std::size_t ikm_len, std::string_view salt,
                  std::string_view info, std::size_t out_len);

// Overwrites `n` bytes at `p` with zeros in a way the compiler cannot drop (OPENSSL_cleanse).
void wipe(void* p, std::size_t n) noexcept;
// Wipes a buffer's whole allocation (its capacity, not only its size: a moved-from or
// shrunk string keeps old bytes there) and leaves it empty.
void wipe(std::string& s) noexcept;
void wipe(Bytes& b) noexcept;

// Wipes a string or byte buffer when the scope ends, exceptions included:
//   std::string text = read_secret(); crypto::ScopedWipe guard(text);
template <class Buffer>
class ScopedWipe {
 public:
  explicit ScopedWipe(Buffer& b) noexcept : b_(b) {}
  ~ScopedWipe() { wipe(b_); }
  ScopedWipe(const ScopedWipe&) = delete;
  ScopedWipe& operator=(const ScopedWipe&) = delete;

 private:
  Buffer& b_;
};

// The pending OpenSSL error queue as text (and clears it); `what` prefixes it.
std::string openssl_error(std::string_view what);

// Lower-case hex of a byte string, for logs and tests.
std::string to_hex(const void* data, std::size_t n);

}  // namespace cutlayer::crypto
