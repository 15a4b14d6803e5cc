// AES-256-GCM with a fixed key: one EVP context, the key schedule computed once. The key
// is not kept anywhere else: the caller wipes its copy; destroying (or assigning over) an
// Aead frees its contexts with EVP_CIPHER_CTX_free, which wipes the key schedule
// (OpenSSL clears a cipher context's key material when it frees it).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>

struct evp_cipher_ctx_st;  // OpenSSL's EVP_CIPHER_CTX, used only in aead.cpp

namespace cutlayer::crypto {

class Aead {
 public:
  static constexpr std::size_t kKeyBytes = 32;
  static constexpr std::size_t kNonceBytes = 12;
  static constexpr std::size_t kTagBytes = 16;
  using Key = std::array<std::uint8_t, kKeyBytes>;
  using Nonce = std::array<std::uint8_t, kNonceBytes>;

  explicit Aead(const Key& key);
  Aead(Aead&&) noexcept = default;
  Aead& operator=(Aead&&) noexcept = default;

  // Encrypts n bytes from `in` into `out` (which may equal `in`) and writes the
  // 16-byte tag to `tag`. `aad` is authenticated, not encrypted.
  void seal(const Nonce& nonce, const void* aad, std::size_t aad_len, const void* in,
            std::size_t n, void* out, void* tag);

  // Decrypts n bytes from `in` into `out` (which may equal `in`); false when the tag
  // does not verify (the output is then garbage and must not be used).
  bool open(const Nonce& nonce, const void* aad, std::size_t aad_len, const void* in,
            std::size_t n, void* out, const void* tag);

 private:
  struct CtxFree {
    void operator()(evp_cipher_ctx_st* c) const;
  };
  std::unique_ptr<evp_cipher_ctx_st, CtxFree> enc_;
  std::unique_ptr<evp_cipher_ctx_st, CtxFree> dec_;
};

}  // namespace cutlayer::crypto
