// ZAP (RFC 27) handler: decides which CURVE clients may connect to the front door.
// libzmq's CURVE server accepts any client unless a ZAP handler answers for its domain;
// this one answers 200 only for keys on the allow-list and only for its own domain.
// Internal to the server transport.
#pragma once

#include <zmq.hpp>

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>

#include "cutlayer/transport/allow_list.h"

namespace cutlayer::transport {

class ZapHandler {
 public:
  // Binds inproc://zeromq.zap.01 in `ctx` (before the CURVE socket binds) and serves it.
  ZapHandler(zmq::context_t& ctx, AllowList allow, std::string domain);
  ~ZapHandler();
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  std::uint64_t accepted() const { return accepted_.load(); }
  std::uint64_t rejected() const { return rejected_.load(); }

 private:
  void serve();
  zmq::socket_t socket_;
  AllowList allow_;
  std::string domain_;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> accepted_{0};
  std::atomic<std::uint64_t> rejected_{0};
  std::thread thread_;
};

}  // namespace cutlayer::transport
