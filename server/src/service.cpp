#include "cutlayer/server/service.h"

#include "cutlayer/cut/options.h"
#include "cutlayer/error.h"
#include "cutlayer/log.h"
#include "cutlayer/server/checks.h"
#include "cutlayer/state/archive.h"

namespace cutlayer::server {

Service::Service(transport::ServerTransport& transport, BackTrainer* trainer, train::MetricsFile* metrics,
                 Aggregator* aggregator, ServiceLimits limits)
    : transport_(transport),
      trainer_(trainer),
      metrics_(metrics),
      aggregator_(aggregator),
      limits_(limits),
      start_(std::chrono::steady_clock::now()),
      last_report_(start_) {}

void Service::run(const std::atomic<bool>& stop) {
  while (rounds_ || !stop) {
    // Rounds across ranks: an idle rank joins the next round after scale_out.idle_ms.
    // A collective in flight is polled every millisecond.
    auto ev = transport_.poll(std::chrono::milliseconds(!rounds_ ? 100 : rounds_->in_flight() ? 1 : 5));
    // Every message is handled under its own catch (on_message); this one keeps the loop
    // alive whatever else throws while handling an event or a timer.
    try {
      if (ev) handle(*ev);
      if (trainer_) {
        auto out = trainer_->tick(BackTrainer::Clock::now());  // overdue HeadGrads
        send_all(out);
      }
      if (aggregator_) {
        if (trainer_) aggregator_->set_schedule_steps(trainer_->stats().steps);
        auto out = aggregator_->tick(Aggregator::Clock::now());
        send_all(out);
        report_round();
      }
      if (vertical_) apply(vertical_->tick());
      if (checkpoints_) checkpoints_->tick(/*write_when_due=*/rounds_ == nullptr);
    } catch (const std::exception& e) {
      log::get("server")->error("event not handled: {}", error_text(e));
    }
    // Outside the catch: a failed collective (ScaleOutError) ends this rank.
    if (rounds_ && !step_rounds(stop)) return;
  }
}

bool Service::step_rounds(bool stop_requested) {
  const bool checkpoint_due = checkpoints_ && checkpoints_->due_by_time();
  auto r = rounds_->poll(ServerRounds::Clock::now(), stop_requested, checkpoint_due);
  send_all(r.out);
  if (checkpoints_) {
    // Every rank writes at the same step: by step count after a step, or by time when any
    // rank asked (the header's flag).
    if (r.checkpoint) checkpoints_->write();
    else if (r.stepped) checkpoints_->before_step();
  }
  if (r.stepped) report();
  if (aggregator_) report_round();
  return !r.stop;
}

void Service::handle(transport::ServerEvent& event) {
  if (auto* join = std::get_if<transport::JoinRequest>(&event)) {
    try {
      on_join(*join);
    } catch (const std::exception& e) {
      log::get("server")->error("join from '{}' not handled: {}", join->client_name, error_text(e));
      transport_.refuse(*join, error_text(e));
    }
  } else if (auto* rx = std::get_if<transport::Received>(&event)) {
    on_message(*rx);
  } else if (auto* ended = std::get_if<transport::SessionEnded>(&event)) {
    on_ended(*ended);
  }
}

void Service::on_ended(const transport::SessionEnded& ended) {
  log::get("server")->info("client '{}' gone ({})", ended.client_name, ended.reason);
  clients_.erase(ended.session_id);
  inference_only_.erase(ended.session_id);
  if (vertical_) apply(vertical_->left(ended.session_id, ended.reason));
  if (probe_only_.erase(ended.session_id) == 0 && trainer_) {
    auto replies = trainer_->forget(ended.session_id);
    send_all(replies);
    if (aggregator_) {
      auto out = aggregator_->remove_member(ended.session_id, Aggregator::Clock::now());
      send_all(out);
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
  const auto now = std::chrono::steady_clock::now();
  if (auto it = evicted_until_.find(req.client_name); it != evicted_until_.end()) {
    if (now < it->second) {
      const auto left = std::chrono::duration_cast<std::chrono::seconds>(it->second - now).count() + 1;
      transport_.refuse(req, "this client was evicted for repeated refused messages; joins are refused for another " +
                                 std::to_string(left) + " s (the server's limits.rejoin_after_eviction_ms)");
      return;
    }
    evicted_until_.erase(it);
  }
  // A join that names no model is a link self-check (probes only), never a trainer.
  const bool probe_only = req.join.model.empty();
  if (trainer_ && !probe_only) {
    if (auto why = vertical_ ? vertical_->check_join(req.join) : model_refusal(req.join)) {
      transport_.refuse(req, *why);
      return;
    }
  }
  // One session per name: a join for predictions would end this client's training session.
  if (req.join.inference)
    for (const auto& [session, c] : clients_)
      if (c.name == req.client_name && !inference_only_.count(session) && !probe_only_.count(session)) {
        transport_.refuse(req, "this client is training: predictions once its training has ended (or with another "
                               "key on the allow-list)");
        return;
      }
  const bool trains = trainer_ && !probe_only && !req.join.inference;
  const auto session = transport_.accept(req, aggregator_ ? aggregator_->version() : 0,
                                         trains ? trainer_->steps_held(req.client_name) : wire::kStepsUnknown);
  clients_[session] = Client{req.client_name, req.join.samples};
  if (trainer_ && !probe_only) trainer_->set_cut(session, req.join.cut);
  if (probe_only) {
    probe_only_.insert(session);
    return;
  }
  if (req.join.inference) {
    inference_only_.insert(session);
    log::get("server")->info("client '{}' joined for predictions", req.client_name);
    return;
  }
  if (vertical_) {
    log::get("server")->info("client '{}' joined as party {} of {} ({} sample IDs)", req.client_name,
                             req.join.vertical_party, req.join.vertical_parties, req.join.samples);
    vertical_->admit(session, req.client_name, req.join);
    return;
  }
  if (trainer_) trainer_->name_session(session, req.client_name);
  if (trainer_)
    log::get("server")->info("client '{}' ({} examples, {} mode{}) joined", req.client_name, req.join.samples,
                             req.join.u_shaped ? "U-shaped" : "vanilla",
                             req.join.cut == wire::CutCoding{}
                                 ? ""
                                 : ", cut " + cut::describe(req.join.cut, c10::multiply_integers(trainer_->cut_shape())));
}

// Why a join that names a model cannot be served here (size, model, mode, aggregation), or
// nullopt.
std::optional<std::string> Service::model_refusal(const wire::Join& j) const {
  if (j.samples > limits_.max_join_samples)
    return "the client declares " + std::to_string(j.samples) + " training examples; this server accepts at most " +
           std::to_string(limits_.max_join_samples) +
           " (raise limits.max_join_samples in the server config, or split the data)";
  if (j.vertical_parties > 0)
    return std::string("this server trains horizontal split learning (each client holds whole samples): remove "
                       "\"vertical\" from the client config, or give the server a \"vertical\" object");
  if (j.sync && j.samples == 0)
    return std::string("a client whose front joins the aggregation must declare its training examples "
                       "(Join.samples is 0)");
  if (auto why = trainer_->check_join(j)) return why;
  if (j.inference)
    return j.sync ? std::optional<std::string>("a join for predictions cannot also join the aggregation "
                                               "(Join.inference with Join.sync)")
                  : std::nullopt;
  if (j.sync && !aggregator_)
    return std::string("this server does not aggregate the clients' fronts: remove \"sync\" from the client config, "
                       "or add an \"aggregation\" object to the server's");
  if (!j.sync && aggregator_)
    return std::string("this server aggregates the clients' front gradients: add a \"sync\" object (e.g. "
                       "{\"compressor\": \"gaussiank\", \"density\": 0.01}) to the client config");
  return std::nullopt;
}

void Service::send_all(std::vector<std::pair<std::uint64_t, wire::Message>>& replies) {
  for (auto& [session, msg] : replies) {
    if (msg.type != wire::MsgType::kError) {
      transport_.send(session, msg);
      continue;
    }
    std::string text;
    try {
      text = wire::meta_as<wire::ErrorMsg>(msg).message;
    } catch (const std::exception&) {
      text = "refused";
    }
    refuse(session, text);
  }
}

std::string Service::name_of(std::uint64_t session) const {
  auto it = clients_.find(session);
  return it == clients_.end() ? std::string("?") : it->second.name;
}

void Service::refuse(std::uint64_t session, const std::string& text) {
  const auto name = name_of(session);
  // The text can quote what the peer sent (a model name, a shape): escaped and capped.
  log::get("server")->warn("client '{}': {}", name, log::peer_text(text, 1024));
  transport_.send(session, error_message(text));
  ++refusals_total_;
  if (limits_.refusals_to_evict <= 0 || !clients_.count(session)) return;
  const auto now = std::chrono::steady_clock::now();
  auto& times = refused_at_[name];
  times.push_back(now);
  while (!times.empty() && now - times.front() > limits_.refusal_window) times.pop_front();
  if (times.size() < static_cast<std::size_t>(limits_.refusals_to_evict)) return;
  refused_at_.erase(name);
  evict(session, name, text);
}

void Service::evict(std::uint64_t session, const std::string& name, const std::string& last) {
  const auto window_s = std::chrono::duration<double>(limits_.refusal_window).count();
  const std::string reason = fmt::format("evicted: {} refused messages within {:g} s (last: {})",
                                         limits_.refusals_to_evict, window_s, last);
  log::get("server")->warn("client '{}' {}; its joins are refused for {} ms", name, reason,
                           limits_.rejoin_after_eviction.count());
  transport_.send(session, error_message(reason));
  if (limits_.rejoin_after_eviction.count() > 0)
    evicted_until_[name] = std::chrono::steady_clock::now() + limits_.rejoin_after_eviction;
  ++evictions_;
  // SessionEnded follows at the next poll: the trainer and the aggregator forget it there.
  transport_.end_session(session, reason);
  clients_.erase(session);
}

void Service::apply(VerticalJoin::Result r) {
  send_all(r.out);
  for (const auto& e : r.end) {
    log::get("server")->warn("client '{}': {}", name_of(e.session), e.reason);
    transport_.send(e.session, error_message(e.reason));
    transport_.end_session(e.session, e.reason);
    clients_.erase(e.session);
  }
}

// A vertical party's PSI round or cut.
void Service::on_vertical(transport::Received& rx) {
  if (rx.message.type == wire::MsgType::kPsi) {
    auto r = vertical_->psi(rx.session_id, rx.message);
    if (r.started)
      log::get("server")->info("all {} parties ready: their private set intersection starts",
                               vertical_->options().parties);
    apply(std::move(r));
    return;
  }
  if (rx.message.type != wire::MsgType::kActivations)
    throw ProtocolError(std::string(wire::msg_type_name(rx.message.type)) + " is not served to a vertical party");
  apply(vertical_->cut(rx.session_id, rx.message));
  report();
}

void Service::on_message(transport::Received& rx) {
  try {
    // Vertical: the parties' messages, and any cut or PSI round from a session that is
    // no longer one (queued before its cohort ended), go to VerticalJoin, never to the
    // trainer alone.
    if (vertical_ && rx.message.type != wire::MsgType::kProbe) return on_vertical(rx);
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
        if (inference_only_.count(rx.session_id))
          throw ProtocolError("this session joined for predictions; join to train to sync");
        const auto now = Aggregator::Clock::now();
        if (trainer_) aggregator_->set_schedule_steps(trainer_->stats().steps);
        auto it = clients_.find(rx.session_id);
        const std::uint64_t declared = it == clients_.end() ? 0 : it->second.samples;
        auto out = rx.message.type == wire::MsgType::kSparseGrad
                       ? aggregator_->contribute(rx.session_id, rx.message, now)
                       : aggregator_->add_member(rx.session_id, rx.client_name, declared);
        send_all(out);
        report_round();
        break;
      }
      case wire::MsgType::kActivations:
      case wire::MsgType::kHeadGrad:
        if (probe_only_.count(rx.session_id))
          throw ProtocolError("this session joined for the link self-check (no model); join with a model to train");
        if (inference_only_.count(rx.session_id) &&
            (rx.message.type != wire::MsgType::kActivations || wire::meta_as<wire::Activations>(rx.message).train))
          throw ProtocolError("this session joined for predictions: only Activations with train false are served");
        if (trainer_) {
          // A checkpoint due by step count is written before a training batch is taken: it
          // then holds whole steps and, with aggregation, the contributions they led to (in
          // a 1-client run, exactly the client's state at its checkpoint of the same step).
          if (checkpoints_ && !rounds_ && rx.message.type == wire::MsgType::kActivations &&
              wire::meta_as<wire::Activations>(rx.message).train)
            checkpoints_->before_step();
          auto replies = trainer_->handle(rx.session_id, std::move(rx.message), BackTrainer::Clock::now());
          send_all(replies);
          report();
          break;
        }
        [[fallthrough]];
      default:
        throw ProtocolError(std::string(wire::msg_type_name(rx.message.type)) +
                            " is not served by this server");
    }
  } catch (const std::exception& e) {
    // ProtocolError, a LibTorch error (c10::Error: a batch the model cannot take), or
    // anything else this message caused: the client is told, the server goes on.
    refuse(rx.session_id, error_text(e));
  } catch (...) {
    refuse(rx.session_id, "the server could not process this message");
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
    s.busy_seconds = st.busy_seconds;
    s.predict_batches = st.predict_batches;
    const auto h = state::values_hash({trainer_->back_model().ptr().get()});
    s.back_sha256 = crypto::to_hex(h.data(), h.size());
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
  if (rounds_) s.rounds = ServerSummary::Rounds{rounds_->rank(), rounds_->world(), rounds_->stats()};
  return s;
}

}  // namespace cutlayer::server
