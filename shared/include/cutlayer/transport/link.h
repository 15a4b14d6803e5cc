// What the client's training code needs of a connection to the server: send a message,
// take the next one. ClientTransport is the real one (sealed channel over ZeroMQ); the
// client's unit tests script one in memory.
#pragma once

#include <chrono>
#include <optional>

#include "cutlayer/wire/message.h"

namespace cutlayer::transport {

class MessageLink {
 public:
  virtual ~MessageLink() = default;
  virtual void send(const wire::Message& msg) = 0;
  // The next message, or nullopt after `timeout`. Throws IoError when the peer is gone.
  virtual std::optional<wire::Message> recv(std::chrono::milliseconds timeout) = 0;
};

}  // namespace cutlayer::transport
