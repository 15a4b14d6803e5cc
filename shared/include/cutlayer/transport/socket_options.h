// Settings every cutlayer socket gets: size cap, heartbeats, handshake timeout, linger 0
// (applied in shared/src/socket_setup.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include "cutlayer/wire/codec.h"

namespace cutlayer::transport {

struct SocketOptions {
  // ZMQ_MAXMSGSIZE, which libzmq applies to each frame: a peer announcing a bigger one is
  // disconnected before it is buffered. The largest data frame is a sealed tensor chunk
  // (kChunkBytes + 16-byte tag) or a meta frame (Limits::max_meta_bytes, 64 KiB, + tag):
  // one chunk plus 64 KiB covers both. The front door sets 64 KiB.
  std::int64_t max_frame_bytes = static_cast<std::int64_t>(wire::kChunkBytes) + 64 * 1024;
  int heartbeat_ivl_ms = 1000;      // ZMTP PING interval
  int heartbeat_timeout_ms = 5000;  // peer silent this long: connection dropped
  int handshake_ms = 5000;          // a handshake not finished by then is dropped
  // Queued messages per peer, each direction. Small on purpose: every queued tensor
  // message is a live multi-MiB buffer; 8 keeps the pipeline full (measured: 64 in
  // flight cost ~10% of sealed throughput in page faults).
  int hwm = 8;
  int send_timeout_ms = 10000;      // a blocked send gives up (slow or gone peer)
};

}  // namespace cutlayer::transport
