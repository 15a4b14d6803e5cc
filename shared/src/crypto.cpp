#include "cutlayer/crypto/crypto.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <climits>
#include <memory>

#include "cutlayer/error.h"

namespace cutlayer::crypto {

std::string openssl_error(std::string_view what) {
  std::string text(what);
  unsigned long code;
  bool first = true;
  while ((code = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof buf);
    text += first ? ": " : "; ";
    text += buf;
    first = false;
  }
  if (first) text += ": (no OpenSSL error queued)";
  return text;
}

void random_bytes(void* out, std::size_t n) {
  auto* p = static_cast<unsigned char*>(out);
  while (n > 0) {
    const int chunk = n > INT_MAX ? INT_MAX : static_cast<int>(n);
    if (RAND_bytes(p, chunk) != 1) throw CryptoError(openssl_error("RAND_bytes failed"));
    p += chunk;
    n -= static_cast<std::size_t>(chunk);
  }
}

Digest sha256(const void* data, std::size_t n) {
  Digest d{};
  if (EVP_Digest(data, n, d.data(), nullptr, EVP_sha256(), nullptr) != 1)
    throw CryptoError(openssl_error("SHA-256 failed"));
  return d;
}

Bytes hkdf_sha256(const void* ikm, std::size_t ikm_len, std::string_view salt,
                  std::string_view info, std::size_t out_len) {
  struct KdfFree {
    void operator()(EVP_KDF* k) const { EVP_KDF_free(k); }
  };
  struct CtxFree {
    void operator()(EVP_KDF_CTX* c) const { EVP_KDF_CTX_free(c); }
  };
  std::unique_ptr<EVP_KDF, KdfFree> kdf(EVP_KDF_fetch(nullptr, "HKDF", nullptr));
  if (!kdf) throw CryptoError(openssl_error("HKDF unavailable"));
  std::unique_ptr<EVP_KDF_CTX, CtxFree> ctx(EVP_KDF_CTX_new(kdf.get()));
  if (!ctx) throw CryptoError(openssl_error("EVP_KDF_CTX_new failed"));

  char digest[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<void*>(ikm), ikm_len),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, const_cast<char*>(salt.data()),
                                        salt.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, const_cast<char*>(info.data()),
                                        info.size()),
      OSSL_PARAM_construct_end()};
  Bytes out(out_len);
  if (EVP_KDF_derive(ctx.get(), out.data(), out.size(), params) != 1) {
    wipe(out);  // whatever part of the output was written
    throw CryptoError(openssl_error("HKDF-SHA256 derive failed"));
  }
  return out;  // moved (NRVO): no copy of the key material is left behind
}

void wipe(void* p, std::size_t n) noexcept {
  if (p != nullptr && n > 0) OPENSSL_cleanse(p, n);
}

void wipe(std::string& s) noexcept {
  // resize() within the capacity never reallocates; it makes every byte of the buffer part
  // of the string, so the cleanse below may legally touch all of them.
  s.resize(s.capacity());
  wipe(s.data(), s.size());
  s.clear();
}

void wipe(Bytes& b) noexcept {
  b.resize(b.capacity());
  wipe(b.data(), b.size());
  b.clear();
}

std::string to_hex(const void* data, std::size_t n) {
  static const char* kDigits = "0123456789abcdef";
  const auto* p = static_cast<const std::uint8_t*>(data);
  std::string s(2 * n, '0');
  for (std::size_t i = 0; i < n; ++i) {
    s[2 * i] = kDigits[p[i] >> 4];
    s[2 * i + 1] = kDigits[p[i] & 15];
  }
  return s;
}

}  // namespace cutlayer::crypto
