// The server side: a CURVE front door (ZAP allow-list enforced) that hands out sessions,
// and a data socket carrying every session's sealed channel. Single-threaded: the
// owner calls poll() in its loop and send() between polls.
#pragma once

#include <zmq.hpp>

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>

#include "cutlayer/transport/allow_list.h"
#include "cutlayer/transport/keys.h"
#include "cutlayer/transport/sealed_channel.h"
#include "cutlayer/transport/socket_options.h"
#include "cutlayer/transport/stats.h"
#include "cutlayer/transport/zap_handler.h"
#include "cutlayer/wire/codec.h"
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

  std::uint16_t join_port() const { return join_port_; }
  std::uint16_t data_port() const { return data_port_; }

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

  bool has_session(std::uint64_t session_id) const { return sessions_.count(session_id) != 0; }
  std::size_t session_count() const { return sessions_.size(); }
  const TransportStats& stats() const { return stats_; }
  std::uint64_t zap_accepted() const { return zap_.accepted(); }
  std::uint64_t zap_rejected() const { return zap_.rejected(); }

 private:
  struct Session;
  void on_front_door();
  bool on_data();  // true when the data queue was drained
  void end_gone_sessions();
  void expire_sessions();
  void send_error(std::uint64_t session_id, wire::ErrorCode code, const std::string& text);

  ServerTransportOptions options_;
  zmq::context_t ctx_;
  ZapHandler zap_;
  zmq::socket_t front_;
  zmq::socket_t data_;
  std::uint16_t join_port_ = 0;
  std::uint16_t data_port_ = 0;
  std::unordered_map<std::uint64_t, std::unique_ptr<Session>> sessions_;
  std::deque<ServerEvent> events_;
  TransportStats stats_;
  std::chrono::steady_clock::time_point last_expiry_check_;
};

}  // namespace cutlayer::transport
