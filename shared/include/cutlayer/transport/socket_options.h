// Settings every cutlayer socket gets: size cap, heartbeats, handshake timeout, linger 0.
#pragma once

#include <zmq.hpp>

#include <cstddef>
#include <cstdint>

namespace cutlayer::transport {

struct SocketOptions {
  std::int64_t max_frame_bytes = (std::int64_t{1} << 30) + 4096;  // ZMQ_MAXMSGSIZE
  int heartbeat_ivl_ms = 1000;      // ZMTP PING interval
  int heartbeat_timeout_ms = 5000;  // peer silent this long: connection dropped
  int handshake_ms = 5000;          // a handshake not finished by then is dropped
  int hwm = 64;                     // queued messages per peer, each direction
  int send_timeout_ms = 10000;      // a blocked send gives up (slow or gone peer)
};

void apply_socket_options(zmq::socket_t& s, const SocketOptions& o);

}  // namespace cutlayer::transport
