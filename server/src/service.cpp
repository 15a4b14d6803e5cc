#include "cutlayer/server/service.h"

#include <fmt/format.h>

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

namespace {
// "n0,n1,..": contributions per staleness since `before` (empty: since the start).
std::string staleness_list(const std::vector<std::uint64_t>& now, const std::vector<std::uint64_t>& before) {
  std::string out;
  for (std::size_t t = 0; t < now.size(); ++t)
    out += fmt::format("{}{}", t ? "," : "", now[t] - (t < before.size() ? before[t] : 0));
  return out;
}
}  // namespace

// The aggregation's accounting every log_every rounds: traffic, density, staleness.
void Service::report_round() {
  const auto& a = aggregator_->stats();
  const auto every = static_cast<std::uint64_t>(trainer_->options().log_every);
  if (a.rounds < last_report_round_ + every) return;
  const auto& p = stats_at_report_;
  const double rounds = static_cast<double>(a.rounds - p.rounds);
  const double numel = static_cast<double>(aggregator_->numel());
  const double contrib = static_cast<double>(a.contributions - p.contributions);
  const double dense_bytes = 4.0 * numel;
  const double up = static_cast<double>(a.bytes_up - p.bytes_up);
  const double down = static_cast<double>(a.bytes_down - p.bytes_down);
  const double updates = static_cast<double>(a.updates_sent - p.updates_sent);
  const double density = contrib > 0 ? (a.nnz_up - p.nnz_up) / (contrib * numel) : 0.0;
  const double down_density = rounds > 0 ? (a.nnz_down - p.nnz_down) / (rounds * numel) : 0.0;
  // up + down per client per round, against the dense float32 vectors both ways
  const double ratio = (contrib > 0 && updates > 0) ? (up / contrib + down / updates) / (2 * dense_bytes) : 0.0;
  const auto hist = staleness_list(a.staleness, p.staleness);
  log::get("aggregator")
      ->info("round {}  members {}  up {:.1f} KB/contribution (density {:.4f})  down {:.1f} KB/client (density {:.4f})  "
             "{:.3f} of dense  staleness [{}]  closed all/samples/deadline {}/{}/{}  rejected {}",
             a.rounds, aggregator_->members(), contrib ? up / contrib / 1e3 : 0.0, density,
             updates ? down / updates / 1e3 : 0.0, down_density, ratio, hist, a.closed_all, a.closed_samples,
             a.closed_deadline, a.rejected);
  if (metrics_)
    metrics_->write(fmt::format(
        R"({{"round":{},"members":{},"contributions":{},"bytes_up":{},"bytes_down":{},"density_up":{:.6f},"density_down":{:.6f},"bytes_ratio_to_dense":{:.6f},"staleness_hist":[{}],"closed_all":{},"closed_samples":{},"closed_deadline":{},"rejected":{},"front_hash":"{}"}})",
        a.rounds, aggregator_->members(), a.contributions, a.bytes_up, a.bytes_down, density, down_density,
        ratio, hist, a.closed_all, a.closed_samples, a.closed_deadline, a.rejected, aggregator_->hash()));
  last_report_round_ = a.rounds;
  stats_at_report_ = a;
}

std::string Service::summary_json() const {
  const auto& ts = transport_.stats();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  return fmt::format(
      R"({{"server":"summary","seconds":{:.3f},"steps":{},"samples":{},"labels_received":{},"eval_batches":{},"probes":{},"sessions_open":{},"messages_in":{},"messages_out":{},"bytes_in":{},"bytes_out":{},"dropped":{}{}}})",
      s, trainer_ ? trainer_->stats().steps : 0, trainer_ ? trainer_->stats().samples : 0,
      trainer_ ? trainer_->stats().labels_received : 0, trainer_ ? trainer_->stats().eval_batches : 0,
      probes_served_, transport_.session_count(), ts.messages_in, ts.messages_out, ts.bytes_in,
      ts.bytes_out, ts.dropped(), aggregation_json());
}

std::string Service::aggregation_json() const {
  if (!aggregator_) return "";
  const auto& a = aggregator_->stats();
  const auto hist = staleness_list(a.staleness, {});
  return fmt::format(
      R"(,"aggregation":{{"rounds":{},"staleness_bound":{},"max_staleness":{},"staleness_hist":[{}],"contributions":{},"rejected":{},"closed_all":{},"closed_samples":{},"closed_deadline":{},"bytes_up":{},"bytes_down":{},"front_hash":"{}"}})",
      a.rounds, aggregator_->options().staleness, a.max_staleness, hist, a.contributions, a.rejected, a.closed_all,
      a.closed_samples, a.closed_deadline, a.bytes_up, a.bytes_down, aggregator_->hash());
}

}  // namespace cutlayer::server
