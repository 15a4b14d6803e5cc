// Internal (ZeroMQ): SocketOptions applied to a socket.
#pragma once

#include <zmq.hpp>

#include "cutlayer/transport/socket_options.h"

namespace cutlayer::transport {

void apply_socket_options(zmq::socket_t& s, const SocketOptions& o);

}  // namespace cutlayer::transport
