#include "zap_handler.h"

#include <openssl/crypto.h>

#include <vector>

namespace cutlayer::transport {

ZapHandler::ZapHandler(zmq::context_t& ctx, AllowList allow, std::string front_domain,
                       std::string data_domain, std::shared_ptr<AdmissionRegistry> admissions)
    : socket_(ctx, zmq::socket_type::rep),
      allow_(std::move(allow)),
      front_domain_(std::move(front_domain)),
      data_domain_(std::move(data_domain)),
      admissions_(std::move(admissions)) {
  socket_.set(zmq::sockopt::linger, 0);
  socket_.bind("inproc://zeromq.zap.01");
  thread_ = std::thread([this] { serve(); });
}

ZapHandler::~ZapHandler() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void ZapHandler::serve() {
  auto log = log::get("zap");
  while (!stop_) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    try {
      if (zmq::poll(&item, 1, std::chrono::milliseconds(100)) == 0) continue;
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) return;
      continue;  // EINTR: a signal; loop and re-check stop_
    }
    std::vector<zmq::message_t> req;
    try {
      zmq::message_t part;
      do {
        if (!socket_.recv(part, zmq::recv_flags::none)) break;
        if (req.size() < 16) req.push_back(std::move(part));
      } while (socket_.get(zmq::sockopt::rcvmore));
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) return;
      continue;
    }
    // RFC 27 request: version, request id, domain, address, identity, mechanism, credentials.
    const std::string request_id = req.size() > 1 ? req[1].to_string() : "";
    std::string status = "400", text = "malformed ZAP request", user;
    bool data = false;
    if (req.size() >= 6 && req[0].to_string_view() == "1.0") {
      const auto domain = req[2].to_string_view();
      const auto mechanism = req[5].to_string_view();
      if (domain == front_domain_) {
        if (mechanism != "CURVE" || req.size() != 7 || req[6].size() != 32) {
          text = "CURVE required";
        } else if (const std::string* name = allow_.find_binary(req[6].data())) {
          status = "200";
          text = "OK";
          user = *name;
        } else {
          text = "client key not on the allow-list";
        }
      } else if (domain == data_domain_) {
        data = true;
        if (mechanism != "PLAIN" || req.size() != 8) {
          text = "PLAIN with a session's admission token required";
        } else {
          std::uint64_t session = 0;
          const auto verdict = admissions_->admit(req[6].to_string_view(), req[7].to_string_view(), session);
          if (verdict == AdmissionRegistry::Verdict::kAdmitted) {
            status = "200";
            text = "OK";
            user = session_user(session);
          } else {
            text = verdict_text(verdict);
          }
        }
        // The password frame held a token: do not leave it in freed memory.
        if (req.size() >= 8) OPENSSL_cleanse(req[7].data(), req[7].size());
      } else {
        text = "wrong ZAP domain";
      }
    }
    // The address is libzmq's text for the peer's IP and port; escaped all the same.
    const std::string peer = req.size() > 3 ? log::peer_text(req[3].to_string_view(), 64) : "?";
    if (status == "200") {
      ++(data ? data_admitted_ : accepted_);
      log->debug("{}: admitted {} from {}", data ? "data port" : "front door", user, peer);
    } else {
      ++(data ? data_refused_ : rejected_);
      std::uint64_t n = 0;
      if ((data ? data_log_ : front_log_).allow(n))
        log->warn("{}: refused a connection from {}: {} ({} refused so far{})",
                  data ? "data port" : "front door", peer, text, n,
                  n > 8 ? ", logging every 1024th" : "");
    }
    try {
      socket_.send(zmq::str_buffer("1.0"), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(request_id), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(status), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(text), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(user), zmq::send_flags::sndmore);
      socket_.send(zmq::str_buffer(""), zmq::send_flags::none);
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) return;
    }
  }
}

}  // namespace cutlayer::transport
