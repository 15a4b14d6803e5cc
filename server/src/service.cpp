#include "cutlayer/server/service.h"

#include "cutlayer/error.h"
#include "cutlayer/log.h"

namespace cutlayer::server {

void Service::run(const std::atomic<bool>& stop) {
  while (!stop) {
    auto ev = transport_.poll(std::chrono::milliseconds(100));
    if (ev) handle(*ev);
  }
}

void Service::handle(transport::ServerEvent& event) {
  if (auto* join = std::get_if<transport::JoinRequest>(&event)) {
    on_join(*join);
  } else if (auto* rx = std::get_if<transport::Received>(&event)) {
    on_message(*rx);
  } else if (auto* ended = std::get_if<transport::SessionEnded>(&event)) {
    log::get("server")->info("client '{}' gone ({})", ended->client_name, ended->reason);
  }
}

void Service::on_join(const transport::JoinRequest& req) {
  if (req.join.protocol != wire::kProtocolVersion) {
    transport_.refuse(req, "protocol version " + std::to_string(req.join.protocol) +
                               " is not served; this server speaks version " +
                               std::to_string(wire::kProtocolVersion));
    return;
  }
  transport_.accept(req);
}

void Service::on_message(transport::Received& rx) {
  auto log = log::get("server");
  try {
    switch (rx.message.type) {
      case wire::MsgType::kProbe: {
        const auto probe = wire::meta_as<wire::Probe>(rx.message);
        transport_.send(rx.session_id,
                        wire::make_message(wire::ProbeReply{probe.id}, std::move(rx.message.tensors)));
        ++probes_served_;
        break;
      }
      default:
        throw ProtocolError(std::string(wire::msg_type_name(rx.message.type)) +
                            " is not served by this server");
    }
  } catch (const ProtocolError& e) {
    log->warn("client '{}': {}", rx.client_name, e.what());
    transport_.send(rx.session_id,
                    wire::make_message(wire::ErrorMsg{
                        static_cast<std::uint16_t>(wire::ErrorCode::kProtocol), e.what()}));
  }
}

}  // namespace cutlayer::server
