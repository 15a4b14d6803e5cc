// SplitClient's durable state: sealed checkpoints of the front (and head), its optimizer,
// the generator, the place in the data and, with aggregation, the error-feedback residual.
#include <fmt/format.h>

#include "cutlayer/client/split_client.h"
#include "cutlayer/log.h"
#include "cutlayer/state/archive.h"

namespace cutlayer::client {

state::Identity SplitClient::identity() const {
  std::vector<const torch::nn::Module*> parts{model_.front.ptr().get()};
  if (model_.has_head()) parts.push_back(model_.head.ptr().get());
  const auto& s = options_.sync;
  std::string run = train::run_identity(options_.train) + privacy::identity(options_.nopeek) + "\n";
  if (s.enabled)
    run += fmt::format("sync compressor={} density={:.17g} schedule={} error_feedback={}", s.compressor, s.density,
                       s.density_schedule, s.error_feedback);
  return {"client", state::fingerprint(spec_.front + "|" + spec_.head, parts), crypto::sha256(run.data(), run.size())};
}

std::string SplitClient::snapshot(std::int64_t steps_done, const torch::Tensor& rng) const {
  state::OutputArchive a;
  state::save_part(a, "front", *model_.front);
  if (model_.has_head()) state::save_part(a, "head", *model_.head);
  state::save_part(a, "optimizer", *opt_);
  if (sync_) sync_->save(a);
  if (kfac_->active()) kfac_->save(a, "kfac");
  state::save_rng(a, rng);
  state::save_int(a, "steps_done", steps_done);
  return state::to_bytes(a);
}

std::int64_t SplitClient::restore(const std::string& bytes) {
  state::InputArchive a;
  state::from_bytes(a, bytes);
  state::load_part(a, "front", *model_.front);
  if (model_.has_head()) state::load_part(a, "head", *model_.head);
  state::load_part(a, "optimizer", *opt_);
  if (sync_) sync_->load(a);
  if (kfac_->active()) kfac_->load(a, "kfac");
  state::load_rng(a);
  return state::load_int(a, "steps_done");
}

std::int64_t SplitClient::resume() {
  const auto& o = options_.checkpoint;
  if (!o.enabled()) return 0;
  checkpoints_.emplace(o, state::CheckpointKey::from_key_file(options_.checkpoint_key), identity());
  rng_before_step_ = state::rng_state();
  if (!o.resume) return 0;
  auto log = log::get("client");
  const std::int64_t reached = checkpoints_->noted_progress();
  std::int64_t steps = 0;
  auto found = checkpoints_->load_newest([&](const state::Opened& op) { steps = restore(op.state); });
  if (!found) {
    log->info("{}: no checkpoint in {} yet: starting from step 0", options_.name, o.dir);
    return 0;
  }
  rng_before_step_ = state::rng_state();
  log->info("{}: resumed from {} after {} steps; {} steps done before the stop are redone", options_.name, found->file,
            steps, reached > steps ? reached - steps : 0);
  return steps;
}

// After `steps_done` steps: notes the progress and writes a checkpoint when due, or now
// when `force` (a stop, the end). The generator saved is the one after the last finished
// step, even when a step was cut short since. A failed write is logged; training goes on.
void SplitClient::checkpoint(std::int64_t steps_done, bool force) {
  if (!checkpoints_) return;
  if (!force) rng_before_step_ = state::rng_state();  // a step just finished
  try {
    checkpoints_->note_progress(steps_done);
    if (!force && !checkpoints_->due(steps_done)) return;
    const auto path = checkpoints_->write(steps_done, snapshot(steps_done, rng_before_step_));
    log::get("client")->debug("{}: checkpoint {} ({:.1f} ms)", options_.name, path, checkpoints_->last_write_ms());
  } catch (const std::exception& e) {
    log::get("client")->error("{}: checkpoint after step {} not written (training goes on): {}", options_.name,
                              steps_done, e.what());
  }
}

}  // namespace cutlayer::client
