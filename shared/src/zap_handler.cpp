#include "zap_handler.h"

#include <vector>

#include "cutlayer/log.h"

namespace cutlayer::transport {

ZapHandler::ZapHandler(zmq::context_t& ctx, AllowList allow, std::string domain)
    : socket_(ctx, zmq::socket_type::rep), allow_(std::move(allow)), domain_(std::move(domain)) {
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
    if (req.size() >= 6 && req[0].to_string_view() == "1.0") {
      const auto domain = req[2].to_string_view();
      const auto mechanism = req[5].to_string_view();
      if (domain != domain_) {
        text = "wrong ZAP domain";
      } else if (mechanism != "CURVE" || req.size() != 7 || req[6].size() != 32) {
        text = "CURVE required";
      } else if (const std::string* name = allow_.find_binary(req[6].data())) {
        status = "200";
        text = "OK";
        user = *name;
      } else {
        text = "client key not on the allow-list";
      }
    }
    if (status == "200") {
      ++accepted_;
      log->debug("accepted client '{}' from {}", user, req[3].to_string_view());
    } else {
      ++rejected_;
      log->warn("rejected a connection from {}: {}",
                req.size() > 3 ? req[3].to_string() : std::string("?"), text);
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
