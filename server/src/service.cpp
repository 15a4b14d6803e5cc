#include "cutlayer/server/service.h"

#include <fmt/format.h>

#include "cutlayer/error.h"
#include "cutlayer/log.h"

namespace cutlayer::server {

Service::Service(transport::ServerTransport& transport, BackTrainer* trainer, train::MetricsFile* metrics)
    : transport_(transport),
      trainer_(trainer),
      metrics_(metrics),
      start_(std::chrono::steady_clock::now()),
      last_report_(start_) {}

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
    if (probe_only_.erase(ended->session_id) == 0 && trainer_) {
      auto replies = trainer_->forget(ended->session_id);
      send_all(replies);
    }
  }
}

void Service::on_join(const transport::JoinRequest& req) {
  if (req.join.protocol != wire::kProtocolVersion) {
    transport_.refuse(req, "protocol version " + std::to_string(req.join.protocol) +
                               " is not served; this server speaks version " +
                               std::to_string(wire::kProtocolVersion));
    return;
  }
  // A join that names no model is a link self-check (probes only), never a trainer.
  const bool probe_only = req.join.model.empty();
  if (trainer_ && !probe_only) {
    if (auto why = trainer_->check_join(req.join)) {
      transport_.refuse(req, *why);
      return;
    }
  }
  const auto session = transport_.accept(req, trainer_ ? static_cast<std::uint64_t>(trainer_->stats().steps) : 0);
  if (probe_only) {
    probe_only_.insert(session);
    return;
  }
  if (trainer_)
    log::get("server")->info("client '{}' ({} examples, {} mode) joined", req.client_name,
                             req.join.samples, req.join.u_shaped ? "U-shaped" : "vanilla");
}

void Service::send_all(std::vector<std::pair<std::uint64_t, wire::Message>>& replies) {
  for (auto& [session, msg] : replies) transport_.send(session, msg);
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
      case wire::MsgType::kActivations:
      case wire::MsgType::kHeadGrad:
        if (probe_only_.count(rx.session_id))
          throw ProtocolError("this session joined for the link self-check (no model); join with a model to train");
        if (trainer_) {
          auto replies = trainer_->handle(rx.session_id, std::move(rx.message));
          send_all(replies);
          report();
          break;
        }
        [[fallthrough]];
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

void Service::report() {
  auto& st = trainer_->stats();
  const auto every = trainer_->options().log_every;
  if (st.steps - last_report_step_ < every) return;
  const auto now = std::chrono::steady_clock::now();
  const double dt = std::chrono::duration<double>(now - last_report_).count();
  const double rate = (st.samples - samples_at_report_) / std::max(dt, 1e-9);
  const double loss = st.loss_samples ? st.loss_sum / st.loss_samples : 0.0;
  const double acc = st.loss_samples ? static_cast<double>(st.correct) / st.loss_samples : 0.0;
  const auto& ts = transport_.stats();
  log::get("server")->info("step {}  loss {:.4f}  acc {:.3f}  {:.0f} samples/s  clients {}  in {:.1f} MB  out {:.1f} MB",
                           st.steps, loss, acc, rate, transport_.session_count(), ts.bytes_in / 1e6,
                           ts.bytes_out / 1e6);
  if (metrics_)
    metrics_->write(fmt::format(
        R"({{"step":{},"loss":{:.6f},"acc":{:.4f},"samples_per_s":{:.1f},"clients":{},"bytes_in":{},"bytes_out":{},"labels_received":{}}})",
        st.steps, loss, acc, rate, transport_.session_count(), ts.bytes_in, ts.bytes_out, st.labels_received));
  last_report_step_ = st.steps;
  samples_at_report_ = st.samples;
  last_report_ = now;
  st.loss_sum = 0;
  st.loss_samples = 0;
  st.correct = 0;
}

std::string Service::summary_json() const {
  const auto& ts = transport_.stats();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  return fmt::format(
      R"({{"server":"summary","seconds":{:.3f},"steps":{},"samples":{},"labels_received":{},"eval_batches":{},"probes":{},"sessions_open":{},"messages_in":{},"messages_out":{},"bytes_in":{},"bytes_out":{},"dropped":{}}})",
      s, trainer_ ? trainer_->stats().steps : 0, trainer_ ? trainer_->stats().samples : 0,
      trainer_ ? trainer_->stats().labels_received : 0, trainer_ ? trainer_->stats().eval_batches : 0,
      probes_served_, transport_.session_count(), ts.messages_in, ts.messages_out, ts.bytes_in,
      ts.bytes_out, ts.dropped());
}

}  // namespace cutlayer::server
