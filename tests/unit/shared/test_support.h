// Helpers shared by the shared/ tests: fresh keys, a server running in its own thread,
// and waiting on conditions with a deadline (never bare sleeps).
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cutlayer/transport/client_transport.h"
#include "cutlayer/transport/server_transport.h"

namespace cutlayer::test {

// Polls `pred` until true or `timeout`; returns its last value.
inline bool wait_until(const std::function<bool()>& pred,
                       std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return pred();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

struct Snapshot {
  transport::TransportStats stats;
  std::uint64_t zap_accepted = 0;
  std::uint64_t zap_rejected = 0;
  std::uint64_t data_admitted = 0;  // data-port handshakes admitted / refused
  std::uint64_t data_refused = 0;
  std::uint64_t joins_seen = 0;
  std::uint64_t probes_echoed = 0;
  std::uint64_t other_messages = 0;
  std::vector<std::string> ended;  // SessionEnded reasons, in order
};

// A ServerTransport owned and polled by a background thread: accepts every join,
// echoes probes, counts everything else.
class ServerThread {
 public:
  explicit ServerThread(transport::ServerTransportOptions opts) {
    std::mutex m;
    std::condition_variable cv;
    bool ready = false;
    std::string error;
    thread_ = std::thread([&, opts]() mutable {
      std::unique_ptr<transport::ServerTransport> server;
      try {
        server = std::make_unique<transport::ServerTransport>(std::move(opts));
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> l(m);
        error = e.what();
        ready = true;
        cv.notify_one();
        return;
      }
      {
        std::lock_guard<std::mutex> l(m);
        join_port_ = server->join_port();
        data_port_ = server->data_port();
        ready = true;
        cv.notify_one();
      }
      loop(*server);
    });
    std::unique_lock<std::mutex> l(m);
    cv.wait(l, [&] { return ready; });
    if (!error.empty()) {
      thread_.join();
      throw std::runtime_error(error);
    }
  }
  ~ServerThread() {
    stop_ = true;
    thread_.join();
  }
  std::uint16_t join_port() const { return join_port_; }
  std::uint16_t data_port() const { return data_port_; }
  Snapshot snapshot() const {
    std::lock_guard<std::mutex> l(mu_);
    return snap_;
  }
  bool wait_for(const std::function<bool(const Snapshot&)>& pred,
                std::chrono::milliseconds timeout = std::chrono::seconds(10)) const {
    return wait_until([&] { return pred(snapshot()); }, timeout);
  }

 private:
  void loop(transport::ServerTransport& server) {
    while (!stop_) {
      auto ev = server.poll(std::chrono::milliseconds(20));
      Snapshot local;
      {
        std::lock_guard<std::mutex> l(mu_);
        local = snap_;
      }
      if (ev) {
        if (auto* j = std::get_if<transport::JoinRequest>(&*ev)) {
          ++local.joins_seen;
          server.accept(*j);
        } else if (auto* rx = std::get_if<transport::Received>(&*ev)) {
          if (rx->message.type == wire::MsgType::kProbe) {
            const auto p = wire::meta_as<wire::Probe>(rx->message);
            server.send(rx->session_id,
                        wire::make_message(wire::ProbeReply{p.id}, rx->message.tensors));
            ++local.probes_echoed;
          } else {
            ++local.other_messages;
          }
        } else if (auto* e = std::get_if<transport::SessionEnded>(&*ev)) {
          local.ended.push_back(e->reason);
        }
      }
      local.stats = server.stats();
      local.zap_accepted = server.zap_accepted();
      local.zap_rejected = server.zap_rejected();
      local.data_admitted = server.data_admitted();
      local.data_refused = server.data_refused();
      std::lock_guard<std::mutex> l(mu_);
      snap_ = local;
    }
  }

  std::thread thread_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  Snapshot snap_;
  std::uint16_t join_port_ = 0;
  std::uint16_t data_port_ = 0;
};

// Fresh server and client ("alice") keys per test; the allow-list holds alice only.
struct Keys {
  transport::CurveKeyPair server = transport::generate_key_pair();
  transport::CurveKeyPair alice = transport::generate_key_pair();
};

inline transport::ServerTransportOptions server_options(const Keys& k) {
  transport::ServerTransportOptions o;
  o.server_keys = k.server;
  o.allow_list.add("alice", k.alice.public_key);
  o.socket.handshake_ms = 2000;
  return o;
}

inline transport::ClientTransportOptions client_options(const Keys& k, std::uint16_t port) {
  transport::ClientTransportOptions o;
  o.join_port = port;
  o.server_public_key = k.server.public_key;
  o.client_keys = k.alice;
  o.join_timeout = std::chrono::milliseconds(3000);
  o.join_attempts = 2;
  return o;
}

}  // namespace cutlayer::test
