#include "socket_setup.h"

namespace cutlayer::transport {

void apply_socket_options(zmq::socket_t& s, const SocketOptions& o) {
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::maxmsgsize, o.max_frame_bytes);
  s.set(zmq::sockopt::heartbeat_ivl, o.heartbeat_ivl_ms);
  s.set(zmq::sockopt::heartbeat_timeout, o.heartbeat_timeout_ms);
  s.set(zmq::sockopt::heartbeat_ttl, o.heartbeat_timeout_ms);
  s.set(zmq::sockopt::handshake_ivl, o.handshake_ms);
  s.set(zmq::sockopt::sndhwm, o.hwm);
  s.set(zmq::sockopt::rcvhwm, o.hwm);
  s.set(zmq::sockopt::sndtimeo, o.send_timeout_ms);
}

}  // namespace cutlayer::transport
