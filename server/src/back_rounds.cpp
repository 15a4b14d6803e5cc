// BackTrainer's rounds (RoundOptions): the gradient of several batches, from this rank's
// clients and, summed by the caller, from the other ranks', in one optimizer step.
#include <algorithm>
#include <cmath>

#include "cutlayer/error.h"
#include "cutlayer/log.h"
#include "cutlayer/server/back_trainer.h"
#include "cutlayer/server/checks.h"
#include "cutlayer/train/optimizer.h"

namespace cutlayer::server {

void BackTrainer::enable_rounds(RoundOptions o) {
  if (kfac_->active())
    throw ConfigError("train.optimizer \"kfac\" steps with each batch's own factors: it does not take rounds "
                      "(train.accumulate > 1 or a server tier of several ranks) yet; use \"sgd\" or \"adam\"");
  if (o.accumulate < 1) throw ConfigError("train.accumulate must be at least 1");
  std::int64_t numel = 0;
  for (const auto& p : back_->parameters()) numel += p.numel();
  round_grad_ = torch::zeros({numel}, torch::kFloat32);
  round_views_.clear();
  std::int64_t offset = 0;
  for (const auto& p : back_->parameters()) {
    if (p.scalar_type() != torch::kFloat32)
      throw ConfigError("rounds need a float32 back model (a parameter is " +
                        std::string(c10::toString(p.scalar_type())) + ")");
    round_views_.push_back(round_grad_.narrow(0, offset, p.numel()).view(p.sizes()));
    offset += p.numel();
  }
  rounds_ = o;
  if (static_cast<std::int64_t>(joined_.size()) >= o.start_clients) quorum_at_ = Clock::now();
  clear_round();
}

void BackTrainer::clear_round() {
  round_closed_ = false;
  round_steps_.clear();
  round_grad_.zero_();
  round_batches_ = 0;
  round_samples_ = 0;
  round_sessions_.clear();
}

void BackTrainer::apply_batch(std::uint64_t session, std::int64_t examples) {
  check_grads();
  if (!rounds_) {
    kfac_->step(train::lr_at(options_, stats_.steps));
    opt_->step();
    ++stats_.steps;
    return;
  }
  torch::NoGradGuard no_grad;
  std::size_t i = 0;
  for (const auto& p : back_->parameters()) {
    if (p.grad().defined()) round_views_[i].add_(p.grad(), static_cast<double>(examples));
    ++i;
  }
  if (round_batches_ == 0) round_started_ = Clock::now();
  ++round_batches_;
  round_samples_ += examples;
  round_sessions_.insert(session);
}

bool BackTrainer::must_hold(std::uint64_t session) const {
  if (!rounds_) return false;
  return round_closed_ || round_sessions_.count(session) > 0 || round_batches_ >= rounds_->accumulate;
}

void BackTrainer::hold(std::uint64_t session, wire::Message msg) {
  std::size_t mine = 0;
  for (const auto& h : held_) mine += h.session == session;
  if (mine >= limits_.max_deferred_per_session)
    throw ProtocolError("more than " + std::to_string(limits_.max_deferred_per_session) +
                        " training batches of this client wait for the next round (train.max_deferred_per_session): "
                        "batch dropped");
  std::size_t bytes = msg.meta.size();
  for (const auto& t : msg.tensors) bytes += static_cast<std::size_t>(t.nbytes());
  if (deferred_bytes_ + bytes > limits_.max_deferred_bytes)
    throw ProtocolError("the server's queue of batches waiting for the next round is full (" +
                        std::to_string(deferred_bytes_ >> 20) + " MiB, train.max_deferred_mb): batch dropped");
  held_.push_back(Held{session, std::move(msg), bytes});
  deferred_bytes_ += bytes;
}

void BackTrainer::drop_held(std::uint64_t session) {
  std::deque<Held> keep;
  for (auto& h : held_) {
    if (h.session == session) deferred_bytes_ -= h.bytes;
    else keep.push_back(std::move(h));
  }
  held_.swap(keep);
}

std::size_t BackTrainer::active_sessions() const {
  std::size_t n = 0;
  for (const auto& [session, name] : session_names_)
    n += last_round_sessions_.count(session) + fresh_sessions_.count(session) > 0;
  return n;
}

bool BackTrainer::round_ready(Clock::time_point now) const {
  if (!rounds_ || round_batches_ == 0 || !round_quorum()) return false;
  // The wait runs from the round's first batch, or from the quorum when that came later.
  if (round_batches_ >= rounds_->accumulate || now >= std::max(round_started_, quorum_at_) + rounds_->wait)
    return true;
  for (const auto& [session, name] : session_names_)
    if (!round_sessions_.count(session)) return false;
  return true;
}

BackTrainer::Outbox BackTrainer::finish_round(std::int64_t total_samples, Clock::time_point now, bool replay) {
  if (!rounds_) throw std::logic_error("finish_round without rounds");
  if (pending_) throw std::logic_error("finish_round between a U-shaped step's forward and backward");
  if (total_samples > 0) {
    const auto start = Clock::now();
    torch::NoGradGuard no_grad;
    round_grad_.div_(static_cast<double>(total_samples));
    std::size_t i = 0;
    for (auto& p : back_->parameters()) {
      if (!p.mutable_grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      p.mutable_grad().copy_(round_views_[i++]);
    }
    try {
      check_grads();
      train::set_lr(*opt_, train::lr_at(options_, stats_.steps));
      opt_->step();
      ++stats_.steps;
      for (const auto& [name, step] : round_steps_) hold_step(name, step);
      last_round_sessions_ = round_sessions_;
      fresh_sessions_.clear();
    } catch (const ProtocolError& e) {
      log::get("server")->error("round of {} examples not applied: {}", total_samples, e.what());
    }
    stats_.busy_seconds += std::chrono::duration<double>(Clock::now() - start).count();
  }
  clear_round();
  if (!replay) {
    held_.clear();
    deferred_.clear();
    deferred_bytes_ = 0;
  }
  return reopen_round(now);
}

BackTrainer::Outbox BackTrainer::reopen_round(Clock::time_point now) {
  round_closed_ = false;
  Outbox out;
  drain(out, now);
  auto held = std::move(held_);
  held_.clear();
  for (auto& h : held) {
    deferred_bytes_ -= h.bytes;
    try {
      auto replies = handle(h.session, std::move(h.msg), now);
      for (auto& r : replies) out.push_back(std::move(r));
    } catch (const std::exception& e) {
      out.emplace_back(h.session, error_message(error_text(e)));
    }
  }
  return out;
}

}  // namespace cutlayer::server
