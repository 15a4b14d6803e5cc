// Small OpenSSL helpers: random bytes, SHA-256, HKDF-SHA256.
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
Bytes hkdf_sha256(const void* ikm, std::size_t ikm_len, std::string_view salt,
                  std::string_view info, std::size_t out_len);

// The pending OpenSSL error queue as text (and clears it); `what` prefixes it.
std::string openssl_error(std::string_view what);

// Lower-case hex of a byte string, for logs and tests.
std::string to_hex(const void* data, std::size_t n);

}  // namespace cutlayer::crypto
