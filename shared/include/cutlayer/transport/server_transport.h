// The server side: a CURVE front door (ZAP allow-list enforced) that hands out sessions,
// and a data socket carrying every session's sealed channel. Single-threaded: the
// owner calls poll() in its loop and send() between polls. ZeroMQ, the ZAP handler and the
// sealed channels (OpenSSL) stay in server_transport.cpp.
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
  std::string zap_domain = "cutlayer";
  int session_timeout_ms = 30000;  // no authenticated message this long: session ends
  int client_heartbeat_ms = 1000;  // told to clients in JoinAck
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
  std::string reason;  // "left: ...", "timeout", "replaced"
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

  // Opens a session for `req` and sends its JoinAck; returns the session id.
  std::uint64_t accept(const JoinRequest& req, std::uint64_t round = 0);
  // Answers `req` with an Error naming `reason`.
  void refuse(const JoinRequest& req, const std::string& reason);

  // Sends over the session's sealed channel. False when the session is unknown or the
  // peer is gone or did not drain its queue within the send timeout. Such a session ends
  // (SessionEnded, "send failed") at the next poll() that has read everything queued, so
  // that what the peer sent before it went, a Leave say, is still seen first.
  bool send(std::uint64_t session_id, const wire::Message& msg);
  void end_session(std::uint64_t session_id, const std::string& reason);

  bool has_session(std::uint64_t session_id) const;
  std::size_t session_count() const;
  const TransportStats& stats() const;
  std::uint64_t zap_accepted() const;
  std::uint64_t zap_rejected() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cutlayer::transport
