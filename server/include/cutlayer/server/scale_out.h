// The server tier across processes and machines (docs/scale-out.md): R ranks of
// cutlayer-server, each serving its own clients through its own door, train one back
// model data-parallel. They rendezvous through c10d's store (a TCPStore hosted by rank 0,
// or a FileStore on a shared file system) and allreduce over one ProcessGroupGloo.
//
// Rounds are collective: every rank takes part in every round, with the batches its
// clients sent (up to train.accumulate, one per client) or with none when it has been
// idle for `idle`. A round first agrees on a small header (examples, stop, checkpoint), then
// sums the round's gradients, and every rank steps its replica with the same sum: the
// replicas stay identical, which a hash check proves every `check_every` rounds. A rank
// that dies or stalls past `timeout` makes the others' next collective fail: they stop
// with a ScaleOutError naming it (no rank hangs).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <torch/torch.h>

#include "cutlayer/error.h"
#include "cutlayer/server/aggregator.h"
#include "cutlayer/server/back_trainer.h"

namespace cutlayer::server {

struct ScaleOutOptions {
  int rank = 0;
  int world = 1;
  // "HOST:PORT": a TCPStore that rank 0 hosts on PORT (HOST: its address as the others
  // reach it); "file:PATH": a FileStore (every rank sees PATH; remove it between runs).
  std::string store;
  // This rank's address for the other ranks' connections ("": the store's host on rank 0's
  // machine, else this machine's hostname).
  std::string host;
  std::chrono::milliseconds timeout{30000};  // the rendezvous, and each collective
  std::chrono::milliseconds idle{20};        // a rank without batches joins a round after this
  int check_every = 50;                      // rounds between replica hash checks (0: never)
};

// A collective failed: another rank died or stalled past the timeout, or the replicas
// differ. Every rank stops.
class ScaleOutError : public Error {
 public:
  using Error::Error;
};

// The c10d process group of the server's ranks.
class RankGroup {
 public:
  // Rendezvous: returns once every rank has joined; throws ScaleOutError past the timeout.
  explicit RankGroup(const ScaleOutOptions& o);
  ~RankGroup();
  RankGroup(const RankGroup&) = delete;
  RankGroup& operator=(const RankGroup&) = delete;

  int rank() const { return options_.rank; }
  int world() const { return options_.world; }
  const ScaleOutOptions& options() const { return options_; }
  enum class Op { kSum, kMin, kMax };
  // One allreduce in flight (in place on its tensor): done() polls it without blocking.
  class Pending {
   public:
    // True once finished; throws ScaleOutError when it failed (a rank gone, or past the
    // timeout).
    bool done();
    // Blocks until finished; throws as done() does.
    void wait();

   private:
    friend class RankGroup;
    struct Work;
    std::shared_ptr<Work> work_;
  };
  Pending start(torch::Tensor& t, Op op = Op::kSum);
  // start() and wait.
  void allreduce(torch::Tensor& t, Op op = Op::kSum);
  // Whether every rank holds the same 32 bytes (a hash): two small allreduces (min, max).
  bool same_everywhere(const std::array<std::uint8_t, 32>& bytes);

 private:
  struct Impl;
  ScaleOutOptions options_;
  std::unique_ptr<Impl> impl_;
};

// What the rounds did, for the progress lines and the scale-out benchmark.
struct RoundStats {
  std::uint64_t rounds = 0;         // collective rounds (idle ones included)
  std::uint64_t steps = 0;          // rounds that stepped (some rank had examples)
  std::uint64_t hash_checks = 0;    // all passed (a failed one throws)
  double allreduce_seconds = 0;     // in the collectives (header, gradient, hash)
  double gradient_seconds = 0;      // ... of which the gradient's allreduce
  std::uint64_t front_rounds = 0;   // aggregation rounds closed together
};

// Drives the back's rounds (BackTrainer::enable_rounds): locally when `group` is null
// (train.accumulate > 1 on one server), else collectively across the ranks. A collective
// round never blocks the service loop: its allreduces run on c10d's thread while the loop
// keeps serving (heartbeats, joins, evaluation); training batches that arrive meanwhile
// wait for the next round.
class ServerRounds {
 public:
  using Clock = BackTrainer::Clock;
  // `aggregator` (may be null): across ranks, its rounds close in the same collectives.
  ServerRounds(BackTrainer& trainer, RankGroup* group, Aggregator* aggregator = nullptr);

  struct Result {
    BackTrainer::Outbox out;  // replies released by the round (held batches)
    bool stepped = false;     // the back took a step
    bool checkpoint = false;  // some rank asked for a checkpoint now (all write one)
    bool stop = false;        // the ranks agreed to stop after this round
  };
  // From the service loop: closes a round when it is due (or, across ranks, when this rank
  // is idle, asked to stop, or has a checkpoint due), or advances the one in flight.
  // Throws ScaleOutError (collectives).
  Result poll(Clock::time_point now, bool stop_requested, bool checkpoint_due);
  // Whether the back is the same on every rank (no group: true). Blocks.
  bool replicas_identical();
  const RoundStats& stats() const { return stats_; }
  // A collective round is in flight (the service loop polls it more often).
  bool in_flight() const { return phase_ != Phase::kNone; }
  int rank() const { return group_ ? group_->rank() : 0; }
  int world() const { return group_ ? group_->world() : 1; }

 private:
  Result local(Clock::time_point now, bool stop_requested, bool checkpoint_due);
  bool should_start(Clock::time_point now, bool stop_requested, bool checkpoint_due) const;
  void start(bool stop_requested, bool checkpoint_due);
  Result advance(Clock::time_point now);
  Result conclude(Result r);
  void check_replicas();
  BackTrainer& trainer_;
  RankGroup* group_;
  Aggregator* aggregator_;
  Clock::time_point last_round_;
  // The round in flight: its header (examples, ready, stop, checkpoint, the aggregator's
  // offer), then the back's gradient, then the front's update.
  enum class Phase { kNone, kHeader, kGradient, kFront } phase_ = Phase::kNone;
  torch::Tensor header_;
  torch::Tensor front_;  // the front's update being summed
  std::array<double, Aggregator::kOfferSize> offers_{};
  bool stepped_ = false;  // the back stepped in the round in flight
  bool ready_ = true;     // the last header found every rank ready
  std::optional<RankGroup::Pending> pending_;
  Clock::time_point started_{}, gradient_started_{};
  RoundStats stats_;
};

// Throws ConfigError unless `o` describes a usable group (rank in [0, world), a store).
void check_scale_out(const ScaleOutOptions& o, const std::string& where);

}  // namespace cutlayer::server
