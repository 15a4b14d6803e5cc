// The client side: joins through the server's CURVE front door (server key pinned),
// then talks over its session's sealed channel. Join retries with backoff; every wait
// has a timeout. ZeroMQ and the sealed channel (OpenSSL) stay in client_transport.cpp.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "cutlayer/transport/keys.h"
#include "cutlayer/transport/link.h"
#include "cutlayer/transport/socket_options.h"
#include "cutlayer/transport/stats.h"
#include "cutlayer/wire/codec.h"
#include "cutlayer/wire/message.h"
#include "cutlayer/wire/messages.h"

namespace cutlayer::transport {

struct ClientTransportOptions {
  std::string server_host = "127.0.0.1";
  std::uint16_t join_port = 0;
  std::string server_public_key;  // pinned (Z85)
  CurveKeyPair client_keys;
  std::chrono::milliseconds join_timeout{3000};  // per attempt
  int join_attempts = 5;
  std::chrono::milliseconds backoff_initial{200};
  std::chrono::milliseconds backoff_max{5000};
  SocketOptions socket;
  wire::Limits limits;
};

class ClientTransport final : public MessageLink {
 public:
  explicit ClientTransport(ClientTransportOptions options);
  ~ClientTransport() override;
  ClientTransport(const ClientTransport&) = delete;
  ClientTransport& operator=(const ClientTransport&) = delete;

  // Joins (or re-joins, with fresh keys). Throws AuthError when the server refuses our
  // key or the join, IoError when no answer came after all attempts.
  wire::JoinAck join(const wire::Join& join);

  void send(const wire::Message& msg) override;

  // The next message from the server, or nullopt after `timeout`. Heartbeats are
  // answered here; bad frames are dropped and counted. Throws IoError when the server
  // has been silent past the session timeout (re-join then).
  std::optional<wire::Message> recv(std::chrono::milliseconds timeout) override;

  // Tells the server we leave and closes the session (best effort, never blocks long).
  void leave(const std::string& reason);

  bool joined() const;
  std::uint64_t session_id() const;
  const TransportStats& stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cutlayer::transport
