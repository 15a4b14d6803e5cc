#include "cutlayer/client/split_client.h"

#include <fmt/format.h>

#include <algorithm>
#include <iostream>
#include <limits>
#include <thread>

#include "cutlayer/error.h"
#include "cutlayer/log.h"
#include "cutlayer/privacy/dcor.h"
#include "cutlayer/privacy/label_defense.h"
#include "cutlayer/state/archive.h"
#include "cutlayer/train/optimizer.h"

namespace cutlayer::client {

SplitClient::SplitClient(transport::ClientTransport& link, SplitClientOptions options)
    : link_(link), options_(std::move(options)), dispatch_(link, DispatcherOptions{options_.reply_timeout}) {
  const auto& o = options_.train;
  data_ = data::load_split(o.data, o.eval_samples, o.seed);
  spec_ = train::split_spec(o);
  model_ = model::build_split(spec_, o.seed);
  std::vector<torch::Tensor> params = model_.front->parameters();
  if (model_.has_head())
    for (auto& p : model_.head->parameters()) params.push_back(p);
  opt_ = train::make_optimizer(params, o);
  kfac_ = train::make_kfac({model_.front, model_.head}, {"front", "head"}, o, options_.name);
  cut_shape_ = model::output_shape(model_.front, spec_.input_shape);
  if (options_.nopeek.adversary.active()) adversary_.emplace(options_.nopeek.adversary, o.seed);
  cut_coding_ = cut::coding_for(options_.cut, c10::multiply_integers(cut_shape_));
  if (options_.sync.enabled) {
    sync_ = std::make_unique<FrontSync>(options_.sync, sync::flat_params(model_.front, &model_.head), *opt_,
                                        kfac_.get());
    dispatch_.set_stray_handler([this](wire::Message& m) { return sync_->offer(m); });
  }
}

void SplitClient::set_fingerprints(wire::Join& j) const {
  j.front_fingerprint = state::part_fingerprint(*model_.front);
  if (model_.has_head()) j.head_fingerprint = state::part_fingerprint(*model_.head);
  j.back_fingerprint = state::part_fingerprint(*model_.back);
}

void SplitClient::join() {
  wire::Join j;
  j.client_name = options_.name;
  j.model = options_.train.model;
  j.cut_shape = cut_shape_;
  j.samples = static_cast<std::uint64_t>(data_.train.size());
  j.u_shaped = options_.train.u_shaped;
  j.sync = sync_ != nullptr;
  j.cut = cut_coding_;
  set_fingerprints(j);
  const auto ack = link_.join(j);
  // The first join, or one within a training step, may take this client back to the
  // server's step; elsewhere (an evaluation, the last settle) the difference is only logged.
  const bool may_go_back = !joined_ || in_step_;
  const bool back = may_go_back && align_with_server(ack.steps_held);
  if (!may_go_back && ack.steps_held != static_cast<std::uint64_t>(steps_done_))
    log::get("client")->warn("{}: re-joined outside a training step; the server holds {} of this client's {} steps",
                             options_.name,
                             ack.steps_held == wire::kStepsUnknown ? std::string("none") : std::to_string(ack.steps_held),
                             steps_done_);
  joined_ = true;
  if (sync_) {
    const std::uint64_t was = sync_->version();
    sync_->reset();
    dispatch_.send(FrontSync::snapshot_request());
    sync_->load_snapshot(dispatch_.await_first<wire::ModelSnapshot>("model snapshot from the server").msg);
    if (!back) rewind_to_round(was);
  }
  if (back && in_step_) {
    while (!step_rounds_.empty() && step_rounds_.back().first >= steps_done_) step_rounds_.pop_back();
    throw Rewind{steps_done_};
  }
}

// The server's back model holds `held` of this client's steps. A client ahead of it (the
// server came back from an earlier checkpoint than this client's) goes back to its own
// checkpoint of that very step when it has one: both sides then go on from the same state,
// as if the run had not been interrupted. Returns whether it went back.
bool SplitClient::align_with_server(std::uint64_t held) {
  auto log = log::get("client");
  const auto& name = options_.name;
  if (held == wire::kStepsUnknown) {
    if (steps_done_ > 0)
      log->warn("{}: the server holds none of this client's steps (a new back model); training goes on from step {}",
                name, steps_done_);
    return false;
  }
  const auto h = static_cast<std::int64_t>(std::min<std::uint64_t>(held, std::numeric_limits<std::int64_t>::max()));
  // Within a step the server may already have taken it (the reply was lost): it is taken again.
  if (h == steps_done_ || (in_step_ && h == steps_done_ + 1)) return false;
  if (h > steps_done_) {
    log->warn("{}: the server's back model already learnt from steps {} to {} of this client; they are taken again",
              name, steps_done_, h - 1);
    return false;
  }
  // A checkpoint refused half-way through restoring leaves this client as it was.
  const auto before = checkpoints_ ? snapshot(steps_done_, rng_before_step_) : std::string();
  bool applied = false;
  if (checkpoints_ && checkpoints_->load_step(h, [&](const state::Opened& op) {
        applied = true;
        if (restore(op.state) != h) throw state::CheckpointRefused("its state is of another step than its name");
      })) {
    log->info("{}: the server holds {} of this client's {} steps: back to this client's checkpoint of step {}, "
              "both go on from there",
              name, h, steps_done_, h);
    rng_before_step_ = state::rng_state();
    steps_done_ = h;
    return true;
  }
  if (applied) restore(before);
  log->warn("{}: the server holds {} of this client's {} steps and this client has no usable checkpoint of step {}: "
            "the back model has lost steps {} to {}",
            name, h, steps_done_, h, h, steps_done_ - 1);
  return false;
}

// A re-join within a training step (with aggregation): the snapshot has replaced the front
// the step's graph was built on, so the step is taken again from its start. If the server
// came back from a checkpoint at an earlier round than this client had reached, the steps
// taken since that round are lost to the front and are taken again too: training goes on
// from the first step that started at or after the server's round. Outside a training step
// (an evaluation, the last settle) the rounds lost are only logged.
void SplitClient::rewind_to_round(std::uint64_t was) {
  const auto round = sync_->version();
  auto log = log::get("client");
  if (round < was)
    log->warn("{}: the server is back at round {} (this client was at round {})", options_.name, round, was);
  if (!in_step_ || step_rounds_.empty()) return;
  // The step in progress, or, when the server went back, the first since its round.
  auto it = std::prev(step_rounds_.end());
  if (round < was)
    it = std::find_if(step_rounds_.begin(), it, [&](const auto& sr) { return sr.second >= round; });
  const std::int64_t step = it->first;
  step_rounds_.erase(it, step_rounds_.end());
  log->info("{}: steps from {} on are taken again on the synced front", options_.name, step);
  throw Rewind{step};
}

// Runs fn; when the server has gone away (IoError), re-joins and runs it again.
template <class Fn>
auto SplitClient::with_rejoin(Fn&& fn) -> decltype(fn()) {
  // The count runs until a training step completes (train_steps resets it), so a step
  // taken again after a re-join (Rewind) does not restart it.
  for (;;) {
    try {
      return fn();
    } catch (const IoError& e) {
      if (rejoins_ >= options_.rejoins) throw;
      const int attempt = rejoins_++;
      log::get("client")->warn("{}; re-joining ({} of {})", e.what(), attempt + 1, options_.rejoins);
      std::this_thread::sleep_for(std::chrono::milliseconds(500 << std::min(attempt, 4)));
      join();
    }
  }
}

// After the step's backward pass: the gradient goes to the aggregation instead of the
// optimizer; at most `staleness` contributions stay unanswered.
void SplitClient::contribute(const train::Batch& b) {
  dispatch_.send(sync_->contribute(static_cast<std::uint64_t>(b.x.size(0)), b.epoch));
  sync_->sent();
  settle_sync(sync_->staleness());
}

void SplitClient::settle_sync(std::size_t max_outstanding) {
  if (sync_->settle(max_outstanding)) return;
  sync_->count_wait();
  dispatch_.wait_for([&] { return sync_->settle(max_outstanding); },
                     [&] { return "Update for contribution " + std::to_string(sync_->oldest_outstanding()); });
}

SplitClient::StepResult SplitClient::step(const train::Batch& b) {
  const auto start = std::chrono::steady_clock::now();
  const bool u = options_.train.u_shaped;
  train::set_lr(*opt_, train::lr_at(options_.train, b.step));
  opt_->zero_grad();
  auto z = kfac_->forward(model_.front, b.x);
  const auto s = static_cast<std::uint64_t>(b.step);
  StepResult r;
  // Time spent waiting for the server's answers (its compute, the transport both ways).
  auto await_timed = [&](auto&& wait) {
    const auto t = std::chrono::steady_clock::now();
    auto reply = wait();
    r.wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    return reply;
  };
  // What leaves this client: z with the configured noise, as the cut's coding sends it.
  const auto sent = send_cut(z.detach());
  // NoPeek: alpha * dCor(x, z) joins the front's loss; its gradient flows into the front
  // beside the server's dL/dz. With a compressed cut it is measured on what is sent.
  // The decoder adversary's penalty joins it the same way.
  const auto measured = options_.cut.compressed() ? cut::straight_through(z, sent) : z;
  const auto local_terms = privacy::client_terms(options_.nopeek, b.step, b.x, measured,
                                                   adversary_ ? &*adversary_ : nullptr, &r.dcor);
  auto backprop_front = [&](const wire::Message& reply) {
    const auto dz = cut::decode_gradient(reply.tensors, cut_coding_, sent.cols, z.sizes(), kMaxCutGrad);
    if (local_terms.defined()) torch::autograd::backward({z, local_terms}, {dz, torch::Tensor()});
    else z.backward(dz);
  };
  auto with_labels = sent.tensors;
  if (!u) {
    with_labels.push_back(b.y);
    auto reply = with_rejoin([&] {
      dispatch_.send(wire::make_message(wire::Activations{s, true, true}, with_labels));
      return await_timed([&] { return dispatch_.await<wire::CutGrad>(s); });
    });
    backprop_front(reply.msg);
    r.loss = reply.meta.loss;
    r.correct = reply.meta.correct;
  } else {
    // Round trip 1: cut activations out, the server's output back; the head computes the
    // loss here, so labels never leave this process. Round trip 2: dL/dh back, dL/dz out
    // of the server. A re-join between them (the server restarted and lost its half of the
    // step) takes the pair again from round trip 1.
    const auto bwd = with_rejoin([&] {
      if (model_.has_head())
        for (auto& p : model_.head->parameters())
          if (p.grad().defined()) p.grad().zero_();
      dispatch_.send(wire::make_message(wire::Activations{s, false, true}, sent.tensors));
      const auto fwd = await_timed([&] { return dispatch_.await<wire::ServerActivations>(s).msg; });
      if (fwd.tensors.size() != 1 || fwd.tensors[0].dim() != 2 || fwd.tensors[0].size(0) != b.x.size(0))
        throw ProtocolError("server: ServerActivations of the wrong shape");
      auto h = fwd.tensors[0].clone().requires_grad_(true);
      auto logits = kfac_->forward(model_.head, h);
      auto loss = torch::nn::functional::cross_entropy(logits, b.y);
      // dL/dh, or what the label defence makes of it; the head learns from the true one.
      const auto dh = privacy::head_backward(h, logits, loss, options_.nopeek.label_defense);
      r.loss = loss.item<double>();
      r.correct = train::count_correct(logits.detach(), b.y);
      dispatch_.send(wire::make_message(wire::HeadGrad{s}, {dh}));
      return await_timed([&] { return dispatch_.await<wire::CutGrad>(s).msg; });
    });
    backprop_front(bwd);
  }
  kfac_->step(train::lr_at(options_.train, b.step));
  if (sync_)
    with_rejoin([&] { contribute(b); });
  else
    opt_->step();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

cut::Sent SplitClient::send_cut(const torch::Tensor& z) const {
  return cut::encode_activations(privacy::cut_to_send(z, options_.nopeek), cut_coding_, options_.cut.random);
}

Evaluation SplitClient::evaluate() {
  torch::NoGradGuard no_grad;
  state::RngGuard rng;  // the cut's noise draws: training's numbers (and a resume) stay as they were
  const auto& d = data_.test;
  Evaluation out;
  if (d.size() == 0) return out;
  model_.front->eval();
  if (model_.has_head()) model_.head->eval();
  double correct = 0, loss = 0;
  for (std::int64_t b = 0; b < d.size(); b += 500) {
    const auto n = std::min<std::int64_t>(500, d.size() - b);
    auto x = d.x.narrow(0, b, n);
    auto y = d.y.narrow(0, b, n);
    auto z = model_.front->forward(x);
    const auto cut = send_cut(z);
    if (b == 0 && n >= 4) {  // what a curious server could measure on what it sees
      out.dcor = privacy::dcor(x, cut.as_received).item<double>();
      out.dcor2_u = privacy::dcor2_unbiased(x, cut.as_received).item<double>();
    }
    auto with_labels = cut.tensors;
    with_labels.push_back(y.contiguous());
    const auto id = eval_id_++;
    if (!options_.train.u_shaped) {
      const auto er = with_rejoin([&] {
        dispatch_.send(wire::make_message(wire::Activations{id, true, false}, with_labels));
        return dispatch_.await<wire::EvalResult>(id).meta;
      });
      correct += er.accuracy * n;
      loss += er.loss * n;
    } else {
      const auto reply = with_rejoin([&] {
        dispatch_.send(wire::make_message(wire::Activations{id, false, false}, cut.tensors));
        return dispatch_.await<wire::ServerActivations>(id).msg;
      });
      auto logits = model_.head->forward(reply.tensors.at(0));
      correct += train::count_correct(logits, y);
      loss += torch::nn::functional::cross_entropy(logits, y).item<double>() * n;
    }
  }
  model_.front->train();
  if (model_.has_head()) model_.head->train();
  out.accuracy = correct / d.size();
  out.loss = loss / d.size();
  return out;
}

std::string SplitClient::run(const std::atomic<bool>& stop) {
  announce();
  dispatch_.set_stop(&stop);
  // The checkpoint comes back before the join: with aggregation the join's snapshot then
  // replaces the front, as at any re-join, and the residual stays this client's.
  steps_done_ = resume();
  try {
    join();  // may go back to the step the server holds
  } catch (const Interrupted&) {
    return ClientSummary::interrupted(options_.name).str();
  }
  const std::int64_t start = steps_done_;
  const auto& o = options_.train;
  train::Batches batches(data_.train, o.batch_size, o.epochs, o.max_steps, o.seed);
  batches.seek(start);
  train::MetricsFile metrics(o.metrics_file, /*append=*/start > 0);
  train::Progress progress(options_.name, batches.total_steps(), start);
  Totals totals;
  totals.steps = start;
  // A SIGINT/SIGTERM during a wait for the server ends the wait (Interrupted); the
  // client then leaves cleanly as it would between steps.
  try {
    train_steps(stop, batches, metrics, progress, totals);
    // Every contribution answered, so the final front holds them all.
    if (sync_ && !stop) with_rejoin([&] { settle_sync(0); });
  } catch (const Interrupted&) {
    log::get("client")->info("{}: interrupted while waiting for the server", options_.name);
  }
  checkpoint(totals.steps, /*force=*/stop || totals.steps == batches.total_steps());
  return finish(stop, metrics, progress, totals);  // reads the flag again: a late signal still counts
}

void SplitClient::announce() const {
  auto log = log::get("client");
  const auto& o = options_.train;
  log->info("{}: {} split learning of {} ({}), {} training examples, cut layer {}", options_.name,
            o.u_shaped ? "U-shaped" : "vanilla", o.model,
            o.u_shaped ? "labels stay here" : "labels go to the server", data_.train.size(),
            model::shape_string(cut_shape_));
  const auto& so = options_.sync;
  if (sync_)
    log->info("{}: front synced across clients: {} at density {}{}, error feedback {}", options_.name,
              so.compressor, so.density, so.density_schedule.empty() ? "" : " (warm-up " + so.density_schedule + ")",
              so.error_feedback ? "on" : "off");
  if (options_.cut.compressed())
    log->info("{}: compressed cut: {}", options_.name, cut::describe(cut_coding_, c10::multiply_integers(cut_shape_)));
  if (options_.nopeek.alpha > 0)
    log->info("{}: NoPeek on, alpha {} (dCor(x, z) added to the front's loss)", options_.name,
              options_.nopeek.alpha);
}

void SplitClient::train_steps(const std::atomic<bool>& stop, train::Batches& batches, train::MetricsFile& metrics,
                              const train::Progress& progress, Totals& totals) {
  const auto& o = options_.train;
  Window window;
  train::Batch b;
  while (!stop && batches.next(b)) {
    if (sync_) {
      step_rounds_.emplace_back(b.step, sync_->version());
      if (step_rounds_.size() > kMaxStepRounds) step_rounds_.pop_front();
    }
    StepResult r;
    try {
      in_step_ = true;
      r = step(b);
      in_step_ = false;
      rejoins_ = 0;
    } catch (const Rewind& rw) {
      in_step_ = false;
      batches.seek(rw.step);
      totals.steps = steps_done_ = rw.step;
      window = Window{};  // its steps are taken again
      continue;
    }
    const auto n = b.x.size(0);
    ++totals.steps;
    totals.samples += n;
    totals.last_loss = r.loss;
    ++totals.timed;
    totals.step_seconds += r.seconds;
    totals.wait_seconds += r.wait_seconds;
    window.add(r.loss, r.dcor, r.correct, n);
    if (o.metrics_every_step) metrics.write(step_json(b.step, r));
    const auto done = b.step + 1;
    steps_done_ = done;
    checkpoint(done, /*force=*/false);
    if (done % o.log_every == 0 || done == batches.total_steps()) {
      report_window(done, window, progress, totals.samples, metrics);
      window = Window{};
    }
    if (o.eval_every > 0 && done % o.eval_every == 0) {
      const double before = progress.seconds();
      const auto e = evaluate();
      log::get("client")->info(
          "{}: step {} test accuracy {:.4f} (loss {:.4f}); dCor(x, z) {:.4f}, bias-corrected dCor^2 {:.4f}",
          options_.name, done, e.accuracy, e.loss, e.dcor, e.dcor2_u);
      // train_seconds: the run's time so far less its evaluations (time to an accuracy)
      metrics.write(e.json(done, round()).add("train_seconds", before - eval_seconds_, 3));
      eval_seconds_ += progress.seconds() - before;
    }
  }
}

// One line per step (parity checks): the exact loss, and the front's round and hash.
report::Json SplitClient::step_json(std::int64_t step, const StepResult& r) const {
  report::Json j;
  j.add("step", step).add_significant("loss", r.loss, 9).add_significant("dcor", r.dcor, 6);
  if (sync_) j.add("round", sync_->version()).add("front_hash", sync_->hash());
  if (sync_ && !sync_->kfac_hash().empty()) j.add("kfac_hash", sync_->kfac_hash());
  return j;
}

void SplitClient::report_window(std::int64_t step, const Window& w, const train::Progress& progress,
                                std::int64_t samples, train::MetricsFile& metrics) const {
  const auto& ts = link_.stats();
  const auto sync = sync_report();
  log::get("client")->info("{}{}{}", progress.line(step, w.mean_loss(), w.accuracy(), samples, ts.bytes_out, ts.bytes_in),
                           options_.nopeek.alpha > 0 ? fmt::format("  dcor {:.4f}", w.mean_dcor()) : "",
                           sync ? sync->progress() : "");
  if (!options_.train.metrics_every_step) metrics.write(w.json(step, samples / progress.seconds(), ts, sync));
}

std::string SplitClient::finish(const std::atomic<bool>& stop, train::MetricsFile& metrics,
                                const train::Progress& progress, const Totals& totals) {
  auto log = log::get("client");
  const double seconds = progress.seconds();
  const auto e = stop ? Evaluation{} : evaluate();
  if (!stop) {
    log->info("{}: final test accuracy {:.4f} over {} examples; dCor(x, z) {:.4f}, bias-corrected dCor^2 {:.4f}",
              options_.name, e.accuracy, data_.test.size(), e.dcor, e.dcor2_u);
    // The metrics file ends with the same figures as the summary: a plot or a script
    // reading only the file sees where the run ended.
    metrics.write(e.json(totals.steps, round()).add("final", true));
  }
  link_.leave(stop ? "interrupted" : "training done");
  if (!options_.save_front.empty()) {
    torch::save(model_.front, options_.save_front);
    log->info("{}: front model saved to {}", options_.name, options_.save_front);
  }
  if (!options_.export_path.empty() && !stop) {
    try {
      export_parts(options_.export_path);
    } catch (const std::exception& e) {  // the run itself is done: its summary still comes
      log->error("{}: the export to {} failed: {}", options_.name, options_.export_path, e.what());
    }
  }
  const auto& ts = link_.stats();
  ClientSummary s;
  s.client = options_.name;
  s.mode = options_.train.u_shaped ? "u-shaped" : "vanilla";
  s.alpha = options_.nopeek.alpha;
  s.steps = totals.steps;
  s.samples = totals.samples;
  s.seconds = seconds;
  s.final_loss = totals.last_loss;
  s.eval = e;
  s.bytes_up = ts.bytes_out;
  s.bytes_down = ts.bytes_in;
  if (totals.timed > 0) {
    s.step_ms = 1e3 * totals.step_seconds / static_cast<double>(totals.timed);
    s.wait_ms = 1e3 * totals.wait_seconds / static_cast<double>(totals.timed);
  }
  s.sync = sync_report();
  std::vector<const torch::nn::Module*> parts{model_.front.ptr().get()};
  if (model_.has_head()) parts.push_back(model_.head.ptr().get());
  const auto h = state::values_hash(parts);
  s.model_sha256 = crypto::to_hex(h.data(), h.size());
  return s.json().str();
}

std::optional<SyncReport> SplitClient::sync_report() const {
  if (!sync_) return std::nullopt;
  return SyncReport::of(*sync_);
}

std::optional<std::uint64_t> SplitClient::round() const {
  if (!sync_) return std::nullopt;
  return sync_->version();
}

}  // namespace cutlayer::client
