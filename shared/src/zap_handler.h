// ZAP (RFC 27) handler: the one handler of the server's ZeroMQ context, answering for two
// domains (libzmq's mechanisms accept any peer unless a ZAP handler answers for their
// domain; both server sockets set ZMQ_ZAP_ENFORCE_DOMAIN):
//   front door: domain `front_domain`, mechanism CURVE: 200 only for a client key on the
//     allow-list; ZAP user id = the client's name.
//   data port: domain `data_domain`, mechanism PLAIN: 200 only when the user name is a live
//     session's id and the password its admission token (admission.h), and the session
//     has handshakes left; ZAP user id = the session id (16 hex digits), which libzmq puts
//     on every message of that connection as the "User-Id" property.
// Anything else is refused (400). Refusals are logged rate-limited, peer strings escaped.
// Internal to the server transport.
#pragma once

#include <zmq.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "admission.h"
#include "cutlayer/log.h"
#include "cutlayer/transport/allow_list.h"

namespace cutlayer::transport {

class ZapHandler {
 public:
  // Binds inproc://zeromq.zap.01 in `ctx` (before the server sockets bind) and serves it.
  ZapHandler(zmq::context_t& ctx, AllowList allow, std::string front_domain, std::string data_domain,
             std::shared_ptr<AdmissionRegistry> admissions);
  ~ZapHandler();
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  // Front door (CURVE) handshakes.
  std::uint64_t accepted() const { return accepted_.load(); }
  std::uint64_t rejected() const { return rejected_.load(); }
  // Data port (PLAIN) handshakes.
  std::uint64_t data_admitted() const { return data_admitted_.load(); }
  std::uint64_t data_refused() const { return data_refused_.load(); }

 private:
  void serve();
  zmq::socket_t socket_;
  AllowList allow_;
  std::string front_domain_;
  std::string data_domain_;
  std::shared_ptr<AdmissionRegistry> admissions_;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> accepted_{0};
  std::atomic<std::uint64_t> rejected_{0};
  std::atomic<std::uint64_t> data_admitted_{0};
  std::atomic<std::uint64_t> data_refused_{0};
  log::Limiter front_log_;
  log::Limiter data_log_;
  std::thread thread_;
};

}  // namespace cutlayer::transport
