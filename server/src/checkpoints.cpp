#include "cutlayer/server/checkpoints.h"

#include <algorithm>

#include "cutlayer/log.h"

namespace cutlayer::server {
namespace {
constexpr std::chrono::seconds kRetryAfterFailure{30};
}

state::Identity server_identity(const BackTrainer& trainer, const Aggregator* aggregator) {
  const auto& o = trainer.options();
  const auto spec = train::split_spec(o);
  std::vector<const torch::nn::Module*> parts{trainer.back_model().ptr().get()};
  if (aggregator)
    for (const auto* m : aggregator->replica_parts()) parts.push_back(m);
  std::string run = train::run_identity(o) + (aggregator ? "aggregation=on" : "aggregation=off");
  // Shared K-FAC factors are state of their own (a run with local factors has none).
  if (aggregator && aggregator->options().kfac_factors == "average")
    run += " kfac_factors=average kfac_decompositions=" + aggregator->options().kfac_decompositions;
  return {"server", state::fingerprint(spec.front + "|" + spec.back + "|" + spec.head, parts),
          crypto::sha256(run.data(), run.size())};
}

ServerCheckpoints::ServerCheckpoints(const state::CheckpointOptions& o, const std::string& server_key,
                                     BackTrainer& trainer, Aggregator* aggregator)
    : trainer_(trainer),
      aggregator_(aggregator),
      store_(o, state::CheckpointKey::from_key_file(server_key), server_identity(trainer, aggregator)) {}

bool ServerCheckpoints::resume() {
  auto log = log::get("server");
  const std::int64_t reached = store_.noted_progress();
  auto found = store_.load_newest([&](const state::Opened& o) { restore(o); });
  if (!found) {
    log->info("no checkpoint in {} yet: starting from a fresh back model", store_.options().dir);
    return false;
  }
  const auto steps = trainer_.stats().steps;
  log->info("resumed from {}: {} back steps{}; {} steps done before the stop are redone", found->file, steps,
            aggregator_ ? fmt::format(", round {}", aggregator_->version()) : std::string(),
            reached > steps ? reached - steps : 0);
  return true;
}

void ServerCheckpoints::restore(const state::Opened& o) {
  state::InputArchive a;
  state::from_bytes(a, o.state);
  trainer_.load(a);
  if (aggregator_) aggregator_->load(a);
  state::load_rng(a);
}

bool ServerCheckpoints::resume_at(std::int64_t steps) {
  auto found = store_.load_step(steps, [&](const state::Opened& o) { restore(o); });
  if (found) log::get("server")->info("resumed from {} instead: {} back steps", found->file, steps);
  return found.has_value();
}

std::string ServerCheckpoints::snapshot() const {
  state::OutputArchive a;
  trainer_.save(a);
  if (aggregator_) aggregator_->save(a);
  state::save_rng(a);
  return state::to_bytes(a);
}

void ServerCheckpoints::before_step() {
  if (retry_at_ && std::chrono::steady_clock::now() < *retry_at_) return;
  if (store_.due_by_steps(trainer_.stats().steps)) write();
}

void ServerCheckpoints::tick(bool write_when_due) {
  const auto steps = trainer_.stats().steps;
  try {
    store_.note_progress(steps);
  } catch (const Error&) {
    // The progress note only sizes the redo after a crash; a failed write shows in write().
  }
  if (write_when_due && due_by_time()) write();
}

bool ServerCheckpoints::due_by_time() const {
  if (retry_at_ && std::chrono::steady_clock::now() < *retry_at_) return false;
  return store_.due_by_time(trainer_.stats().steps);
}

bool ServerCheckpoints::write() {
  try {
    const auto state = snapshot();
    const auto path = store_.write(trainer_.stats().steps, state);
    ++written_;
    last_bytes_ = state.size();
    total_ms_ += store_.last_write_ms();
    max_ms_ = std::max(max_ms_, store_.last_write_ms());
    retry_at_.reset();
    log::get("server")->debug("checkpoint {} ({:.1f} ms)", path, store_.last_write_ms());
    return true;
  } catch (const std::exception& e) {
    retry_at_ = std::chrono::steady_clock::now() + kRetryAfterFailure;
    log::get("server")->error("checkpoint not written (training goes on; retried in {} s): {}",
                              kRetryAfterFailure.count(), e.what());
    return false;
  }
}

}  // namespace cutlayer::server
