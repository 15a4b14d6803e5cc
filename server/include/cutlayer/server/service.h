// The server's event loop: admits joins, serves each session's messages.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "cutlayer/transport/server_transport.h"

namespace cutlayer::server {

class Service {
 public:
  explicit Service(transport::ServerTransport& transport) : transport_(transport) {}

  // Polls and handles events until `stop` is set.
  void run(const std::atomic<bool>& stop);
  // Handles one event (public for tests).
  void handle(transport::ServerEvent& event);

  std::uint64_t probes_served() const { return probes_served_; }

 private:
  void on_join(const transport::JoinRequest& req);
  void on_message(transport::Received& rx);

  transport::ServerTransport& transport_;
  std::uint64_t probes_served_ = 0;
};

}  // namespace cutlayer::server
