#include "admission.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstring>

#include "cutlayer/crypto/crypto.h"
#include "cutlayer/error.h"

namespace cutlayer::transport {
namespace {

constexpr char kLabel[] = "cutlayer v2 data-port admission";

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;  // upper case is not the canonical form: refused
}

// Lower-case hex of exactly out.size() bytes; false for anything else.
template <std::size_t N>
bool parse_hex(std::string_view text, std::array<std::uint8_t, N>& out) {
  if (text.size() != 2 * N) return false;
  for (std::size_t i = 0; i < N; ++i) {
    const int hi = hex_value(text[2 * i]), lo = hex_value(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return true;
}

}  // namespace

std::string session_user(std::uint64_t session_id) {
  std::uint8_t be[8];
  for (int i = 0; i < 8; ++i) be[i] = static_cast<std::uint8_t>(session_id >> (56 - 8 * i));
  return crypto::to_hex(be, sizeof be);
}

std::optional<std::uint64_t> parse_session_user(std::string_view text) {
  std::array<std::uint8_t, 8> be{};
  if (!parse_hex(text, be)) return std::nullopt;
  std::uint64_t id = 0;
  for (auto b : be) id = id << 8 | b;
  return id;
}

AdmissionToken admission_token(std::uint64_t session_id, const std::array<std::uint8_t, 32>& secret) {
  unsigned char input[sizeof kLabel - 1 + 8];
  std::memcpy(input, kLabel, sizeof kLabel - 1);
  for (int i = 0; i < 8; ++i)
    input[sizeof kLabel - 1 + i] = static_cast<unsigned char>(session_id >> (8 * i));
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  if (HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), input, sizeof input, mac,
           &mac_len) == nullptr ||
      mac_len < kAdmissionTokenBytes)
    throw CryptoError(crypto::openssl_error("HMAC-SHA256 failed"));
  AdmissionToken token{};
  std::memcpy(token.data(), mac, token.size());
  OPENSSL_cleanse(mac, sizeof mac);
  return token;
}

DataPortCredentials::~DataPortCredentials() {
  OPENSSL_cleanse(password.data(), password.size());
}

void data_port_credentials(std::uint64_t session_id, const std::array<std::uint8_t, 32>& secret,
                           DataPortCredentials& out) {
  AdmissionToken token = admission_token(session_id, secret);
  out.username = session_user(session_id);
  OPENSSL_cleanse(out.password.data(), out.password.size());
  out.password = crypto::to_hex(token.data(), token.size());
  OPENSSL_cleanse(token.data(), token.size());
}

AdmissionRegistry::~AdmissionRegistry() {
  for (auto& [id, e] : sessions_) OPENSSL_cleanse(e.token.data(), e.token.size());
}

void AdmissionRegistry::add(std::uint64_t session_id, const AdmissionToken& token) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry& e = sessions_[session_id];
  e.token = token;
  e.handshakes = 0;
}

void AdmissionRegistry::remove(std::uint64_t session_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return;
  OPENSSL_cleanse(it->second.token.data(), it->second.token.size());
  sessions_.erase(it);
}

AdmissionRegistry::Verdict AdmissionRegistry::admit(std::string_view username, std::string_view password,
                                                    std::uint64_t& session_id) {
  const auto id = parse_session_user(username);
  AdmissionToken offered{};
  if (!id || !parse_hex(password, offered)) return Verdict::kMalformed;
  Verdict v = Verdict::kUnknownSession;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sessions_.find(*id);
    if (it != sessions_.end()) {
      Entry& e = it->second;
      if (CRYPTO_memcmp(e.token.data(), offered.data(), offered.size()) != 0) {
        v = Verdict::kBadToken;
      } else if (e.handshakes >= max_handshakes_) {
        v = Verdict::kExhausted;
      } else {
        ++e.handshakes;
        v = Verdict::kAdmitted;
      }
    }
  }
  OPENSSL_cleanse(offered.data(), offered.size());
  session_id = *id;
  return v;
}

std::size_t AdmissionRegistry::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return sessions_.size();
}

const char* verdict_text(AdmissionRegistry::Verdict v) {
  switch (v) {
    case AdmissionRegistry::Verdict::kAdmitted: return "admitted";
    case AdmissionRegistry::Verdict::kMalformed: return "malformed credentials";
    case AdmissionRegistry::Verdict::kUnknownSession: return "no such live session";
    case AdmissionRegistry::Verdict::kBadToken: return "wrong admission token";
    case AdmissionRegistry::Verdict::kExhausted: return "the session's handshakes are used up";
  }
  return "?";
}

}  // namespace cutlayer::transport
