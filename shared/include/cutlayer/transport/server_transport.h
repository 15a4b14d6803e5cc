// The server side: a CURVE front door (ZAP allow-list enforced) that hands out sessions,
// and a data socket carrying every session's sealed channel. The data socket admits only
// connections that prove a live session (ZMTP PLAIN: session id + admission token, checked
// by ZAP; see docs/security.md), and each message only when its envelope names the session
// its connection was admitted for. Single-threaded: the owner calls poll() in its loop and
// send() between polls; neither ever blocks on a peer (a peer that does not read fills its
// session's bounded outbox, then its session ends). ZeroMQ, the ZAP handler and the sealed
// channels (OpenSSL) stay in server_transport.cpp.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>

#include "cutlayer/transport/allow_list.h"
#include "cutlayer/transport/keys.h"
#include "cutlayer/transport/socket_options.h"
#include "cutlayer/transport/stats.h"
#include "cutlayer/wire/codec.h"
#include "cutlayer/wire/message.h"
#include "cutlayer/wire/messages.h"

namespace cutlayer::transport {

struct ServerTransportOptions {
  std::string bind_host = "127.0.0.1";
  std::uint16_t join_port = 0;  // 0: an ephemeral port (see join_port())
  std::uint16_t data_port = 0;
  CurveKeyPair server_keys;
  AllowList allow_list;
  std::string zap_domain = "cutlayer";            // front door (CURVE)
  std::string data_zap_domain = "cutlayer-data";  // data port (PLAIN admission)
  int session_timeout_ms = 30000;  // no authenticated message this long: session ends
  int client_heartbeat_ms = 1000;  // told to clients in JoinAck
  // Data-port handshakes one session may make (libzmq reconnects after a network blip;
  // a token seen on the wire cannot be replayed past this).
  int max_data_handshakes = 8;
  // A session's outbox: sealed messages waiting because the peer's queue (HWM) is full.
  // Over either cap, or not moving for outbox_stall_ms, the session ends ("not
  // draining"). One message is always accepted into an empty outbox, whatever its size.
  std::size_t outbox_max_messages = 32;
  std::size_t outbox_max_bytes = std::size_t{64} << 20;
  int outbox_stall_ms = 10000;
  SocketOptions socket;
  wire::Limits limits;
};

// A client passed ZAP and asked to join; answer with accept() or refuse().
struct JoinRequest {
  std::string route;        // front-door routing id
  std::string client_name;  // from the allow-list (ZAP user id), not from the client
  wire::Join join;
};

struct Received {
  std::uint64_t session_id = 0;
  std::string client_name;
  wire::Message message;
};

struct SessionEnded {
  std::uint64_t session_id = 0;
  std::string client_name;
  // "left: <the peer's reason, escaped and capped (log::peer_text)>", "timeout",
  // "replaced by a new join", "send failed: ...", "not draining: ..."
  std::string reason;
};

using ServerEvent = std::variant<JoinRequest, Received, SessionEnded>;

class ServerTransport {
 public:
  explicit ServerTransport(ServerTransportOptions options);
  ~ServerTransport();
  ServerTransport(const ServerTransport&) = delete;
  ServerTransport& operator=(const ServerTransport&) = delete;

  std::uint16_t join_port() const;
  std::uint16_t data_port() const;

  // Waits up to `timeout` for the next event. Bad input is dropped and counted here.
  std::optional<ServerEvent> poll(std::chrono::milliseconds timeout);

  // Opens a session for `req` and sends its JoinAck (with the aggregation's round and the
  // client's steps the back model holds); returns the session id.
  std::uint64_t accept(const JoinRequest& req, std::uint64_t round = 0,
                       std::uint64_t steps_held = wire::kStepsUnknown);
  // Answers `req` with an Error naming `reason`.
  void refuse(const JoinRequest& req, const std::string& reason);

  // Sends over the session's sealed channel, never blocking: when the peer's queue is full
  // the message waits in the session's outbox, sent in order by later poll()s. False when
  // the session is unknown or ending, the peer is gone, or the outbox overflowed. A session
  // whose peer is gone or does not drain ends (SessionEnded, "send failed: ..." / "not
  // draining: ...") at the next poll() that has read everything queued, so that what the
  // peer sent before it went, a Leave say, is still seen first.
  bool send(std::uint64_t session_id, const wire::Message& msg);
  void end_session(std::uint64_t session_id, const std::string& reason);

  bool has_session(std::uint64_t session_id) const;
  std::size_t session_count() const;
  const TransportStats& stats() const;
  std::uint64_t zap_accepted() const;
  std::uint64_t zap_rejected() const;
  // Data-port handshakes admitted / refused by the admission check.
  std::uint64_t data_admitted() const;
  std::uint64_t data_refused() const;
  // Messages waiting in `session_id`'s outbox (0 for an unknown session).
  std::size_t outbox_size(std::uint64_t session_id) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cutlayer::transport
