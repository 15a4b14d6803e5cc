// Counters a transport keeps about what it moved and what it dropped.
#pragma once

#include <cstdint>

namespace cutlayer::transport {

struct TransportStats {
  std::uint64_t messages_in = 0;
  std::uint64_t messages_out = 0;
  std::uint64_t bytes_in = 0;
  std::uint64_t bytes_out = 0;
  std::uint64_t joins_accepted = 0;
  std::uint64_t joins_refused = 0;
  std::uint64_t protocol_errors = 0;  // malformed input (dropped)
  std::uint64_t bad_tag = 0;          // failed AES-GCM authentication (dropped)
  std::uint64_t replayed = 0;         // sequence number not increasing (dropped)
  std::uint64_t unknown_session = 0;  // envelope names no live session (dropped)
  // Server: the envelope names another session than the one whose admission token its
  // data connection was admitted with (dropped before it is opened).
  std::uint64_t wrong_session = 0;
  std::uint64_t sessions_expired = 0;
  std::uint64_t send_failures = 0;
  // Server: sends that found the peer's queue full and waited in its session's outbox.
  std::uint64_t sends_deferred = 0;
  // Server: sessions ended because their outbox overflowed or did not move in time.
  std::uint64_t sessions_not_draining = 0;

  std::uint64_t dropped() const {
    return protocol_errors + bad_tag + replayed + unknown_session + wrong_session;
  }
};

}  // namespace cutlayer::transport
