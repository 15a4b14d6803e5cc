// Internal (ZeroMQ): SocketOptions applied to a socket.
#pragma once

#include <zmq.hpp>

#include <algorithm>
#include <cstdint>

#include "cutlayer/transport/socket_options.h"
#include "cutlayer/wire/codec.h"

namespace cutlayer::transport {

void apply_socket_options(zmq::socket_t& s, const SocketOptions& o);

// The largest frame a well-formed data message has: a sealed tensor chunk or a sealed meta
// frame, plus slack. Data sockets cap ZMQ_MAXMSGSIZE at this whatever the options say:
// libzmq applies it to every frame, the handshake's commands included, so it is also what
// a peer not yet admitted can make the server allocate per connection (a PLAIN HELLO
// announcing more is refused before anything is allocated).
inline std::int64_t data_frame_cap(const wire::Limits& limits) {
  return static_cast<std::int64_t>(std::max(wire::kChunkBytes, limits.max_meta_bytes) + 4096);
}

}  // namespace cutlayer::transport
