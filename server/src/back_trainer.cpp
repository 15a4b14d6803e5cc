#include "cutlayer/server/back_trainer.h"

#include <cmath>

#include "cutlayer/error.h"
#include "cutlayer/state/archive.h"
#include "cutlayer/train/optimizer.h"

namespace cutlayer::server {

namespace {
// Adds the scope's wall time to `total` (seconds).
class ScopeTimer {
 public:
  explicit ScopeTimer(double& total) : total_(total), start_(std::chrono::steady_clock::now()) {}
  ~ScopeTimer() { total_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }
  ScopeTimer(const ScopeTimer&) = delete;
  ScopeTimer& operator=(const ScopeTimer&) = delete;

 private:
  double& total_;
  std::chrono::steady_clock::time_point start_;
};
}  // namespace

BackTrainer::BackTrainer(const train::TrainOptions& options, TrainerLimits limits)
    : options_(options), spec_(train::split_spec(options)), limits_(limits) {
  // Same construction order and seed as the client and the monolithic reference, so the
  // back starts from the weights they would give it.
  auto m = model::build_split(spec_, options.seed);
  model::require_back(m, "the server");
  fingerprints_ = {state::part_fingerprint(*m.front), m.has_head() ? state::part_fingerprint(*m.head) : "",
                   state::part_fingerprint(*m.back)};
  init_back(m.back, model::output_shape(m.front, spec_.input_shape));
}

BackTrainer::BackTrainer(const train::TrainOptions& options, torch::nn::Sequential back,
                         std::vector<std::int64_t> cut_shape, TrainerLimits limits)
    : options_(options), limits_(limits) {
  fingerprints_ = {"", "", state::part_fingerprint(*back)};
  init_back(std::move(back), std::move(cut_shape));
}

void BackTrainer::init_back(torch::nn::Sequential back, std::vector<std::int64_t> cut_shape) {
  back_ = std::move(back);
  cut_shape_ = std::move(cut_shape);
  const auto out = model::output_shape(back_, cut_shape_);
  classes_ = out.empty() ? 0 : out.back();
  opt_ = train::make_optimizer(back_->parameters(), options_);
  kfac_ = train::make_kfac({back_}, {"back"}, options_, "server");
  initial_.clear();
  for (const auto& p : back_->parameters()) initial_.push_back(p.detach().clone());
  for (const auto& b : back_->buffers()) initial_.push_back(b.detach().clone());
}

void BackTrainer::restart() {
  torch::NoGradGuard no_grad;
  std::size_t i = 0;
  for (auto& p : back_->parameters()) p.copy_(initial_.at(i++));
  for (auto& b : back_->buffers()) b.copy_(initial_.at(i++));
  opt_ = train::make_optimizer(back_->parameters(), options_);
  kfac_ = train::make_kfac({back_}, {"back"}, options_, "server");
  stats_ = TrainerStats{};
  pending_.reset();
  deferred_.clear();
  held_.clear();
  deferred_bytes_ = 0;
  if (rounds_) clear_round();
}

std::optional<std::string> BackTrainer::check_join(const wire::Join& join) const {
  if (join.model != options_.model)
    return "this server trains model '" + options_.model + "', the client asked for '" + join.model + "'";
  if (join.u_shaped != options_.u_shaped)
    return std::string("this server runs ") + (options_.u_shaped ? "U-shaped" : "vanilla") +
           " split learning; set train.u_shaped to " + (options_.u_shaped ? "true" : "false") +
           " in the client config";
  if (join.cut_shape != cut_shape_)
    return "cut shape " + model::shape_string(join.cut_shape) + " does not match " + options_.model +
           "'s cut layer " + model::shape_string(cut_shape_) + " (is the client's front model the same?)";
  const auto per_sample = c10::multiply_integers(cut_shape_);
  if (join.cut.kept > static_cast<std::uint64_t>(per_sample))
    return "the client's cut keeps the top " + std::to_string(join.cut.kept) + " of each sample's activations, of " +
           std::to_string(per_sample) + " (cut.topk must be at most 1)";
  return check_fingerprints(join);
}

std::optional<std::string> BackTrainer::check_fingerprints(const wire::Join& join) const {
  const auto& [front, head, back] = fingerprints_;
  auto differs = [](const std::string& part, const std::string& theirs, const std::string& ours) {
    return "the client's " + part + " (fingerprint " + theirs.substr(0, 12) + ") is not this server's (" +
           ours.substr(0, 12) + "): give both the same model, the same layers, parameter names and shapes" +
           (part == "back" ? "" : " and code");
  };
  if (join.front_fingerprint != front) return differs("front", join.front_fingerprint, front);
  if (join.head_fingerprint != head) return differs("head", join.head_fingerprint, head);
  if (!join.back_fingerprint.empty() && join.back_fingerprint != back)
    return differs("back", join.back_fingerprint, back);
  return std::nullopt;
}

void BackTrainer::save(state::OutputArchive& a) const {
  state::save_part(a, "back", *back_);
  state::save_part(a, "back_optimizer", *opt_);
  if (kfac_->active()) kfac_->save(a, "back_kfac");
  state::save_int(a, "back_steps", stats_.steps);
  state::save_int(a, "back_samples", stats_.samples);
  state::save_counts(a, "client_steps", steps_held_);
}

void BackTrainer::load(state::InputArchive& a) {
  state::load_part(a, "back", *back_);
  state::load_part(a, "back_optimizer", *opt_);
  if (kfac_->active()) kfac_->load(a, "back_kfac");
  stats_.steps = state::load_int(a, "back_steps");
  stats_.samples = state::load_int(a, "back_samples");
  steps_held_ = state::load_counts(a, "client_steps", kMaxNamedClients, /*optional=*/true);  // older: none
  pending_.reset();
  deferred_.clear();
  held_.clear();
  deferred_bytes_ = 0;
  if (rounds_) clear_round();
}

void BackTrainer::name_session(std::uint64_t session, const std::string& name) {
  session_names_[session] = name;
  if (rounds_) fresh_sessions_.insert(session);
  // The quorum counts clients (names), not sessions: a client that re-joins counts once.
  if (joined_.size() < kMaxNamedClients && joined_.insert(name).second &&
      static_cast<std::int64_t>(joined_.size()) == (rounds_ ? rounds_->start_clients : 0))
    quorum_at_ = Clock::now();
}

void BackTrainer::set_cut(std::uint64_t session, const wire::CutCoding& coding) {
  if (coding == wire::CutCoding{}) codings_.erase(session);
  else codings_[session] = coding;
}

const wire::CutCoding& BackTrainer::coding(std::uint64_t session) const {
  static const wire::CutCoding plain;
  const auto it = codings_.find(session);
  return it == codings_.end() ? plain : it->second;
}

std::uint64_t BackTrainer::steps_held(const std::string& name) const {
  auto it = steps_held_.find(name);
  return it == steps_held_.end() ? wire::kStepsUnknown : it->second;
}

void BackTrainer::count_step(std::uint64_t session, std::uint64_t step) {
  auto it = session_names_.find(session);
  if (it == session_names_.end() || step >= wire::kStepsUnknown - 1) return;
  if (rounds_) {  // held only once the round's step is applied (finish_round)
    round_steps_.emplace_back(it->second, step);
    return;
  }
  hold_step(it->second, step);
}

void BackTrainer::hold_step(const std::string& name, std::uint64_t step) {
  if (!steps_held_.count(name) && steps_held_.size() >= kMaxNamedClients) return;
  steps_held_[name] = step + 1;
}

std::optional<std::uint64_t> BackTrainer::pending_session() const {
  if (!pending_) return std::nullopt;
  return pending_->session;
}

cut::Received BackTrainer::check_cut(std::uint64_t session, const wire::Message& msg) const {
  return cut::decode_activations(msg.tensors, coding(session), cut_shape_, kMaxBatch, limits_.max_abs_value);
}

// Before the optimizer steps: a gradient past kMaxParamGrad (or not finite) would put an
// Inf or NaN into the parameters or the optimizer's state for good.
void BackTrainer::check_grads() const {
  for (const auto& p : back_->parameters())
    if (!within_bound(p.grad(), kMaxParamGrad))
      throw ProtocolError("this batch gives the back model a gradient that is not finite (or above 1e18): "
                          "the step was not taken");
}

wire::Message BackTrainer::vanilla(std::uint64_t session, const wire::Message& msg) {
  const auto a = wire::meta_as<wire::Activations>(msg);
  const auto& c = coding(session);
  const auto received = check_cut(session, msg);
  auto z = received.z;
  const auto cut_tensors = cut::activation_tensors(c);
  if (!a.train && !a.has_labels && msg.tensors.size() == cut_tensors) return predict(a, z);
  if (!a.has_labels || msg.tensors.size() != cut_tensors + 1)
    throw ProtocolError("vanilla Activations need labels (only a prediction, train false, comes without)");
  const auto& y = msg.tensors[cut_tensors];
  if (y.scalar_type() != torch::kInt64 || y.dim() != 1 || y.size(0) != z.size(0))
    throw ProtocolError("labels must be int64 [B] matching the batch");
  if (y.min().item<std::int64_t>() < 0 || y.max().item<std::int64_t>() >= classes_)
    throw ProtocolError("labels must be class numbers in [0, " + std::to_string(classes_) + ")");
  ++stats_.labels_received;
  const auto n = z.size(0);
  if (!a.train) {
    torch::NoGradGuard no_grad;
    back_->eval();
    torch::Tensor logits;
    try {
      logits = back_->forward(z);
    } catch (...) {
      back_->train();
      throw;
    }
    back_->train();
    ++stats_.eval_batches;
    const double loss = torch::nn::functional::cross_entropy(logits, y).item<double>();
    const auto correct = train::count_correct(logits, y);
    return wire::make_message(wire::EvalResult{a.step, loss, static_cast<double>(correct) / n,
                                               static_cast<std::uint64_t>(n)});
  }
  z = z.detach().requires_grad_(true);
  train::set_lr(*opt_, train::lr_at(options_, stats_.steps));
  auto logits = kfac_->forward(back_, z);
  auto loss = torch::nn::functional::cross_entropy(logits, y);
  const float l = loss.item<float>();
  if (!std::isfinite(l))
    throw ProtocolError("this batch's loss is not finite: the step was not taken");
  opt_->zero_grad();
  loss.backward();
  apply_batch(session, n);
  stats_.samples += n;
  const auto correct = train::count_correct(logits.detach(), y);
  stats_.loss_sum += l * n;
  stats_.loss_samples += n;
  stats_.correct += correct;
  count_step(session, a.step);
  return wire::make_message(wire::CutGrad{a.step, l, static_cast<std::uint32_t>(correct)},
                            cut::encode_gradient(z.grad(), received.cols, c));
}

// A prediction (vanilla, no labels): the logits go back.
wire::Message BackTrainer::predict(const wire::Activations& a, const torch::Tensor& z) {
  torch::NoGradGuard no_grad;
  back_->eval();
  torch::Tensor logits;
  try {
    logits = back_->forward(z);
  } catch (...) {
    back_->train();
    throw;
  }
  back_->train();
  ++stats_.predict_batches;
  return wire::make_message(wire::ServerActivations{a.step}, {logits});
}

wire::Message BackTrainer::u_forward(std::uint64_t session, const wire::Activations& a, cut::Received cut,
                                     Clock::time_point now) {
  auto z = std::move(cut.z);
  if (!a.train) {
    torch::NoGradGuard no_grad;
    back_->eval();
    torch::Tensor h;
    try {
      h = back_->forward(z);
    } catch (...) {
      back_->train();
      throw;
    }
    back_->train();
    ++stats_.eval_batches;
    return wire::make_message(wire::ServerActivations{a.step}, {h});
  }
  z = z.detach().requires_grad_(true);
  auto h = kfac_->forward(back_, z);
  if (!within_bound(h))
    throw ProtocolError("the back model's output for this batch is not finite: the step was not taken");
  pending_ = Pending{session, a.step, z, h, std::move(cut.cols), now + limits_.head_grad_timeout};
  return wire::make_message(wire::ServerActivations{a.step}, {h.detach()});
}

wire::Message BackTrainer::u_backward(std::uint64_t session, const wire::Message& msg) {
  const auto g = wire::meta_as<wire::HeadGrad>(msg);
  if (!pending_ || pending_->session != session || pending_->step != g.step)
    throw ProtocolError("HeadGrad for step " + std::to_string(g.step) + " without its forward pass");
  if (msg.tensors.size() != 1 || msg.tensors[0].sizes() != pending_->h.sizes() ||
      msg.tensors[0].scalar_type() != torch::kFloat32)
    throw ProtocolError("HeadGrad's gradient must match the server's output shape " +
                        model::shape_string(pending_->h.sizes().vec()));
  check_values(msg.tensors[0], limits_.max_abs_value, "HeadGrad");
  train::set_lr(*opt_, train::lr_at(options_, stats_.steps));
  opt_->zero_grad();
  pending_->h.backward(msg.tensors[0]);
  apply_batch(session, pending_->z.size(0));
  stats_.samples += pending_->z.size(0);
  auto dz = cut::encode_gradient(pending_->z.grad(), pending_->cols, coding(session));
  const auto step = pending_->step;
  count_step(session, step);
  pending_.reset();
  return wire::make_message(wire::CutGrad{step, 0.f, 0}, std::move(dz));
}

BackTrainer::Outbox BackTrainer::handle(std::uint64_t session, wire::Message msg, Clock::time_point now) {
  ScopeTimer timer(stats_.busy_seconds);
  Outbox out;
  if (!options_.u_shaped) {
    if (msg.type != wire::MsgType::kActivations)
      throw ProtocolError(std::string(wire::msg_type_name(msg.type)) + " is not served in vanilla mode");
    if (must_hold(session) && wire::meta_as<wire::Activations>(msg).train) {
      check_cut(session, msg);  // validated before it is queued
      hold(session, std::move(msg));
      return out;
    }
    out.emplace_back(session, vanilla(session, msg));
    return out;
  }
  if (msg.type == wire::MsgType::kHeadGrad) {
    const bool mine = pending_ && pending_->session == session;
    try {
      out.emplace_back(session, u_backward(session, msg));
    } catch (const std::exception& e) {
      if (!mine) throw;  // nothing of this client's is pending: nothing changes
      // The pending step is this client's and its HeadGrad was refused: the step is
      // dropped (its gradients with it), so that the next client's batch goes on.
      pending_.reset();
      opt_->zero_grad();
      out.emplace_back(session, error_message(error_text(e) + "; the step was dropped"));
    }
    drain(out, now);
    return out;
  }
  if (msg.type != wire::MsgType::kActivations)
    throw ProtocolError(std::string(wire::msg_type_name(msg.type)) + " is not served in U-shaped mode");
  // Validated before anything else, a deferred batch included.
  const auto a = wire::meta_as<wire::Activations>(msg);
  auto received = check_cut(session, msg);
  if (a.has_labels || msg.tensors.size() != cut::activation_tensors(coding(session))) {
    ++stats_.labels_received;  // counted, then refused: labels must not come here
    throw ProtocolError("U-shaped Activations must not carry labels");
  }
  // Between one client's forward and backward the back's weights must not change, so a
  // second client's training batch waits for the first to finish its step.
  if (a.train && must_hold(session)) {
    hold(session, std::move(msg));
    return out;
  }
  if (pending_ && a.train) {
    defer(session, a, std::move(received));
    return out;
  }
  out.emplace_back(session, u_forward(session, a, std::move(received), now));
  return out;
}

void BackTrainer::defer(std::uint64_t session, const wire::Activations& a, cut::Received cut) {
  std::size_t mine = 0;
  for (const auto& d : deferred_) mine += d.session == session;
  if (mine >= limits_.max_deferred_per_session)
    throw ProtocolError("more than " + std::to_string(limits_.max_deferred_per_session) +
                        " training batches of this client wait for another client's step "
                        "(train.max_deferred_per_session): batch " + std::to_string(a.step) + " dropped");
  const auto bytes = static_cast<std::size_t>(cut.z.nbytes()) +
                     (cut.cols.defined() ? static_cast<std::size_t>(cut.cols.nbytes()) : 0);
  if (deferred_bytes_ + bytes > limits_.max_deferred_bytes)
    throw ProtocolError("the server's queue of batches waiting for another client's step is full (" +
                        std::to_string(deferred_bytes_ >> 20) + " MiB, train.max_deferred_mb): batch " +
                        std::to_string(a.step) + " dropped");
  deferred_.push_back(Deferred{session, a, std::move(cut), bytes});
  deferred_bytes_ += bytes;
}

void BackTrainer::drop_deferred(std::uint64_t session) {
  std::deque<Deferred> keep;
  for (auto& d : deferred_) {
    if (d.session == session) deferred_bytes_ -= d.bytes;
    else keep.push_back(std::move(d));
  }
  deferred_.swap(keep);
}

void BackTrainer::drain(Outbox& out, Clock::time_point now) {
  while (!pending_ && !deferred_.empty()) {
    // Rounds: the first batch whose session is not in the round yet, while there is room.
    auto it = deferred_.begin();
    while (it != deferred_.end() && must_hold(it->session)) ++it;
    if (it == deferred_.end()) return;
    auto d = std::move(*it);
    deferred_.erase(it);
    deferred_bytes_ -= d.bytes;
    try {
      out.emplace_back(d.session, u_forward(d.session, d.meta, std::move(d.cut), now));
    } catch (const std::exception& e) {
      out.emplace_back(d.session, error_message(error_text(e)));
    }
  }
}

BackTrainer::Outbox BackTrainer::tick(Clock::time_point now) {
  Outbox out;
  if (!pending_ || now < pending_->deadline) return out;
  const auto session = pending_->session;
  const auto step = pending_->step;
  pending_.reset();
  drop_deferred(session);  // it would stall the others again
  out.emplace_back(session, error_message("no HeadGrad for step " + std::to_string(step) + " within " +
                                          std::to_string(limits_.head_grad_timeout.count()) +
                                          " ms (the server's train.head_grad_timeout_ms): the step was dropped"));
  drain(out, now);
  return out;
}

BackTrainer::Outbox BackTrainer::forget(std::uint64_t session, Clock::time_point now) {
  Outbox out;
  if (pending_ && pending_->session == session) pending_.reset();
  drop_deferred(session);
  drop_held(session);
  fresh_sessions_.erase(session);
  last_round_sessions_.erase(session);
  session_names_.erase(session);
  codings_.erase(session);
  drain(out, now);
  return out;
}

}  // namespace cutlayer::server
