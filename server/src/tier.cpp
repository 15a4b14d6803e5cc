#include "cutlayer/server/tier.h"

#include "cutlayer/crypto/crypto.h"
#include "cutlayer/log.h"

namespace cutlayer::server {
namespace {

// Meets the other ranks (blocks until all are in, or the timeout).
std::unique_ptr<RankGroup> join_ranks(const ServerConfig& cfg) {
  const auto& so = cfg.scale_out;
  auto log = log::get("server");
  log->info("rank {} of {}: meeting the others through {} (up to {} ms)", so.rank, so.world, so.store,
            so.timeout.count());
  auto group = std::make_unique<RankGroup>(so);
  log->info("rank {} of {}: all ranks met; the back steps once per round of up to {} batch(es) per rank", so.rank,
            so.world, cfg.rounds.accumulate);
  return group;
}

// The ranks agree on where they start: after --resume, the newest back step all of them
// hold (one may have been killed while writing its newest checkpoint), which each loads.
void agree_on_resume(RankGroup& group, ServerCheckpoints* checkpoints, bool resumed,
                     const BackTrainer& trainer) {
  const auto mine = static_cast<double>(resumed ? trainer.stats().steps : -1);
  auto lo = torch::tensor({mine}, torch::kFloat64), hi = lo.clone();
  group.allreduce(lo, RankGroup::Op::kMin);
  group.allreduce(hi, RankGroup::Op::kMax);
  const auto low = static_cast<std::int64_t>(lo.item<double>()), high = static_cast<std::int64_t>(hi.item<double>());
  if (low == high) return;
  const auto rank = std::to_string(group.rank());
  if (low < 0)
    throw ScaleOutError("rank " + rank + ": some ranks resumed from checkpoints (up to step " +
                                std::to_string(high) + ") and some found none: give every rank its own " +
                                "checkpoint directory back, or start them all fresh (without --resume)");
  const bool ok = !resumed || trainer.stats().steps == low || checkpoints->resume_at(low);
  // Every rank learns whether every rank could: the others' error then names the cause too.
  auto all_ok = torch::tensor({ok ? 1.0 : 0.0}, torch::kFloat64);
  group.allreduce(all_ok, RankGroup::Op::kMin);
  if (all_ok.item<double>() == 0)
    throw ScaleOutError("rank " + rank + ": the ranks' newest checkpoints differ (steps " +
                                std::to_string(low) + " to " + std::to_string(high) + ") and " +
                                (ok ? "another rank" : "this rank") + " holds no usable one of step " +
                                std::to_string(low) +
                                ": restore the ranks' checkpoints of one step, or start them all fresh");
}

void check_same_start(RankGroup& group, ServerRounds& rounds, const ServerConfig& cfg,
                      const BackTrainer& trainer) {
  const auto id = tier_identity(cfg);
  if (!group.same_everywhere(crypto::sha256(id.data(), id.size())))
    throw ScaleOutError("rank " + std::to_string(group.rank()) +
                                ": the ranks' configs differ (\"train\", \"aggregation\", \"scale_out\" "
                                "check_every or world, checkpoint.every_steps): give every rank the same server "
                                "config (and the same --world, --u-shaped, --staleness)");
  if (rounds.replicas_identical()) return;
  throw ScaleOutError("rank " + std::to_string(rounds.rank()) +
                              ": the ranks start from different models (this rank at back step " +
                              std::to_string(trainer.stats().steps) +
                              "): start every rank fresh, or from its checkpoint of the same step (--resume on all "
                              "of them)");
}

}  // namespace

Tier start_rounds(const ServerConfig& cfg, BackTrainer* trainer, Aggregator* aggregator,
                  ServerCheckpoints* checkpoints, bool resumed) {
  Tier t;
  if (!trainer || !cfg.in_rounds()) return t;
  trainer->enable_rounds(cfg.rounds);
  if (cfg.scale_out.world > 1) {
    t.group = join_ranks(cfg);
    agree_on_resume(*t.group, checkpoints, resumed, *trainer);  // every rank: the same collectives
  }
  t.rounds = std::make_unique<ServerRounds>(*trainer, t.group.get(), aggregator);
  if (t.group) check_same_start(*t.group, *t.rounds, cfg, *trainer);
  return t;
}

}  // namespace cutlayer::server
