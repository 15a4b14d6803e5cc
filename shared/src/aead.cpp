#include "cutlayer/crypto/aead.h"

#include <openssl/err.h>
#include <openssl/evp.h>

#include <algorithm>
#include <climits>

#include "cutlayer/crypto/crypto.h"
#include "cutlayer/error.h"

namespace cutlayer::crypto {
namespace {

// EVP takes int lengths: feed large buffers in 1 GiB pieces.
constexpr std::size_t kChunk = std::size_t{1} << 30;

}  // namespace

void Aead::CtxFree::operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }

Aead::Aead(const Key& key) : enc_(EVP_CIPHER_CTX_new()), dec_(EVP_CIPHER_CTX_new()) {
  if (!enc_ || !dec_) throw CryptoError(openssl_error("EVP_CIPHER_CTX_new failed"));
  // Key once; every message then only sets its nonce, reusing the key schedule.
  if (EVP_EncryptInit_ex(enc_.get(), EVP_aes_256_gcm(), nullptr, key.data(), nullptr) != 1 ||
      EVP_DecryptInit_ex(dec_.get(), EVP_aes_256_gcm(), nullptr, key.data(), nullptr) != 1)
    throw CryptoError(openssl_error("AES-256-GCM key setup failed"));
}

void Aead::seal(const Nonce& nonce, const void* aad, std::size_t aad_len, const void* in,
                std::size_t n, void* out, void* tag) {
  EVP_CIPHER_CTX* c = enc_.get();
  int len = 0;
  if (EVP_EncryptInit_ex(c, nullptr, nullptr, nullptr, nonce.data()) != 1)
    throw CryptoError(openssl_error("AES-GCM nonce setup failed"));
  if (aad_len > 0 &&
      EVP_EncryptUpdate(c, nullptr, &len, static_cast<const unsigned char*>(aad),
                        static_cast<int>(aad_len)) != 1)
    throw CryptoError(openssl_error("AES-GCM associated data failed"));
  const auto* src = static_cast<const unsigned char*>(in);
  auto* dst = static_cast<unsigned char*>(out);
  for (std::size_t off = 0; off < n; off += kChunk) {
    const int piece = static_cast<int>(std::min(kChunk, n - off));
    if (EVP_EncryptUpdate(c, dst + off, &len, src + off, piece) != 1)
      throw CryptoError(openssl_error("AES-GCM encrypt failed"));
  }
  if (EVP_EncryptFinal_ex(c, dst + n, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, kTagBytes, tag) != 1)
    throw CryptoError(openssl_error("AES-GCM finalize failed"));
}

bool Aead::open(const Nonce& nonce, const void* aad, std::size_t aad_len, const void* in,
                std::size_t n, void* out, const void* tag) {
  EVP_CIPHER_CTX* c = dec_.get();
  int len = 0;
  if (EVP_DecryptInit_ex(c, nullptr, nullptr, nullptr, nonce.data()) != 1)
    throw CryptoError(openssl_error("AES-GCM nonce setup failed"));
  if (aad_len > 0 &&
      EVP_DecryptUpdate(c, nullptr, &len, static_cast<const unsigned char*>(aad),
                        static_cast<int>(aad_len)) != 1)
    throw CryptoError(openssl_error("AES-GCM associated data failed"));
  const auto* src = static_cast<const unsigned char*>(in);
  auto* dst = static_cast<unsigned char*>(out);
  for (std::size_t off = 0; off < n; off += kChunk) {
    const int piece = static_cast<int>(std::min(kChunk, n - off));
    if (EVP_DecryptUpdate(c, dst + off, &len, src + off, piece) != 1)
      throw CryptoError(openssl_error("AES-GCM decrypt failed"));
  }
  if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, kTagBytes, const_cast<void*>(tag)) != 1)
    throw CryptoError(openssl_error("AES-GCM set tag failed"));
  // A failed tag check is an attacker's input, not an OpenSSL fault: report it, clear queue.
  const bool ok = EVP_DecryptFinal_ex(c, dst + n, &len) == 1;
  if (!ok) ERR_clear_error();
  return ok;
}

}  // namespace cutlayer::crypto
