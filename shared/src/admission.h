// Data-port admission (internal to the transports). The data socket speaks ZMTP PLAIN:
// user name = the session id (16 lower-case hex digits), password = the session's
// admission token in hex. The token is
//   HMAC-SHA256(key = session secret, "cutlayer v2 data-port admission" ‖ session id u64 LE)[0:16]
// so only a holder of the JoinAck (sent under CURVE) can compute it; it is a bearer
// credential, not a secret key: PLAIN sends it in clear, so it only decides who gets a
// connection buffered at all (the sealed channel authenticates every message anyway), and
// each session admits a bounded number of handshakes. The server's ZAP handler checks it
// against AdmissionRegistry, shared with the server loop, which adds a session at accept
// and removes it when the session ends.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace cutlayer::transport {

inline constexpr std::size_t kAdmissionTokenBytes = 16;
using AdmissionToken = std::array<std::uint8_t, kAdmissionTokenBytes>;

// The session id as the PLAIN user name and ZAP user id: 16 lower-case hex digits.
std::string session_user(std::uint64_t session_id);
// Parses session_user's form; nullopt for anything else.
std::optional<std::uint64_t> parse_session_user(std::string_view text);

// The token for `session_id` under its 32-byte session secret.
AdmissionToken admission_token(std::uint64_t session_id, const std::array<std::uint8_t, 32>& secret);

// What a client sets as ZMQ_PLAIN_USERNAME / ZMQ_PLAIN_PASSWORD. Wipes itself.
struct DataPortCredentials {
  std::string username;
  std::string password;  // the token in hex (32 characters)
  DataPortCredentials() = default;
  DataPortCredentials(const DataPortCredentials&) = delete;
  DataPortCredentials& operator=(const DataPortCredentials&) = delete;
  ~DataPortCredentials();
};
void data_port_credentials(std::uint64_t session_id, const std::array<std::uint8_t, 32>& secret,
                           DataPortCredentials& out);

// Live sessions and their tokens, for the ZAP thread. Thread-safe.
class AdmissionRegistry {
 public:
  enum class Verdict { kAdmitted, kMalformed, kUnknownSession, kBadToken, kExhausted };

  explicit AdmissionRegistry(int max_handshakes_per_session = 8)
      : max_handshakes_(max_handshakes_per_session) {}
  ~AdmissionRegistry();
  AdmissionRegistry(const AdmissionRegistry&) = delete;
  AdmissionRegistry& operator=(const AdmissionRegistry&) = delete;

  void add(std::uint64_t session_id, const AdmissionToken& token);
  void remove(std::uint64_t session_id);
  // A PLAIN handshake asks: admitted only for a live session, the right token (constant-
  // time compare) and fewer than max handshakes so far; each admission counts one.
  Verdict admit(std::string_view username, std::string_view password, std::uint64_t& session_id);
  std::size_t size() const;

 private:
  struct Entry {
    AdmissionToken token{};
    int handshakes = 0;
  };
  mutable std::mutex mu_;
  std::unordered_map<std::uint64_t, Entry> sessions_;
  int max_handshakes_;
};

const char* verdict_text(AdmissionRegistry::Verdict v);

}  // namespace cutlayer::transport
