#include "cutlayer/server/service.h"

#include "cutlayer/error.h"
#include "cutlayer/log.h"

namespace cutlayer::server {

Service::Service(transport::ServerTransport& transport, BackTrainer* trainer, train::MetricsFile* metrics,
                 Aggregator* aggregator)
    : transport_(transport),
      trainer_(trainer),
      metrics_(metrics),
      aggregator_(aggregator),
      start_(std::chrono::steady_clock::now()),
      last_report_(start_) {}

void Service::run(const std::atomic<bool>& stop) {
  while (!stop) {
    auto ev = transport_.poll(std::chrono::milliseconds(100));
    if (ev) handle(*ev);
    if (aggregator_) {
      if (trainer_) aggregator_->set_schedule_steps(trainer_->stats().steps);
      auto out = aggregator_->tick(Aggregator::Clock::now());
      send_all(out);
      report_round();
    }
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
      if (aggregator_) {
        auto out = aggregator_->remove_member(ended->session_id, Aggregator::Clock::now());
        send_all(out);
      }
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
    if (req.join.sync && !aggregator_) {
      transport_.refuse(req, "this server does not aggregate the clients' fronts: remove \"sync\" from the "
                             "client config, or add an \"aggregation\" object to the server's");
      return;
    }
    if (!req.join.sync && aggregator_) {
      transport_.refuse(req, "this server aggregates the clients' front gradients: add a \"sync\" object "
                             "(e.g. {\"compressor\": \"gaussiank\", \"density\": 0.01}) to the client config");
      return;
    }
  }
  const auto session = transport_.accept(req, aggregator_ ? aggregator_->version() : 0);
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
      case wire::MsgType::kSnapshotRequest:
      case wire::MsgType::kSparseGrad: {
        if (!aggregator_) throw ProtocolError("this server does not aggregate the clients' fronts");
        if (probe_only_.count(rx.session_id))
          throw ProtocolError("this session joined for the link self-check (no model); join with a model to sync");
        const auto now = Aggregator::Clock::now();
        if (trainer_) aggregator_->set_schedule_steps(trainer_->stats().steps);
        auto out = rx.message.type == wire::MsgType::kSparseGrad
                       ? aggregator_->contribute(rx.session_id, rx.message, now)
                       : aggregator_->add_member(rx.session_id, rx.client_name);
        send_all(out);
        report_round();
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

// The back model's progress every log_every steps.
void Service::report() {
  auto& st = trainer_->stats();
  if (st.steps - last_report_step_ < trainer_->options().log_every) return;
  const auto now = std::chrono::steady_clock::now();
  const double seconds = std::chrono::duration<double>(now - last_report_).count();
  const auto r = StepReport::since(st, samples_at_report_, seconds, transport_.session_count(),
                                   transport_.stats());
  log::get("server")->info("{}", r.line());
  if (metrics_) metrics_->write(r.json());
  last_report_step_ = st.steps;
  samples_at_report_ = st.samples;
  last_report_ = now;
  st.loss_sum = 0;
  st.loss_samples = 0;
  st.correct = 0;
}

// The aggregation's accounting every log_every rounds: traffic, density, staleness.
void Service::report_round() {
  const auto& a = aggregator_->stats();
  const auto every = static_cast<std::uint64_t>(trainer_->options().log_every);
  if (a.rounds < last_report_round_ + every) return;
  const auto r = RoundReport::since(*aggregator_, stats_at_report_);
  log::get("aggregator")->info("{}", r.line());
  if (metrics_) metrics_->write(r.json());
  last_report_round_ = a.rounds;
  stats_at_report_ = a;
}

ServerSummary Service::summary() const {
  ServerSummary s;
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (trainer_) {
    const auto& st = trainer_->stats();
    s.steps = st.steps;
    s.samples = st.samples;
    s.labels_received = st.labels_received;
    s.eval_batches = st.eval_batches;
  }
  s.probes = probes_served_;
  s.sessions_open = transport_.session_count();
  const auto& ts = transport_.stats();
  s.messages_in = ts.messages_in;
  s.messages_out = ts.messages_out;
  s.bytes_in = ts.bytes_in;
  s.bytes_out = ts.bytes_out;
  s.dropped = ts.dropped();
  if (aggregator_) s.aggregation = AggregationSummary::of(*aggregator_);
  return s;
}

}  // namespace cutlayer::server
