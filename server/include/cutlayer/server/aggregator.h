// Cross-client aggregation of the clients' front-model gradients (docs/aggregation.md).
// Clients send compressed contributions (SparseGrad), each computed on some model version;
// the aggregator sums a round's contributions weighted by samples (and down-weighted by
// staleness: 1/(1+tau) by default), broadcasts the sum (Update) to every member, and
// applies it to its own replica of the front with the same optimizer, so that it can
// hand a joiner a dense snapshot of the current front.
//
// A round closes when every member has contributed, or when `target_samples` examples
// are in (DeDLOC-style, 0: off), or `deadline` after its first contribution. Each member
// adds at most one contribution per round; later ones queue for the next rounds. A
// contribution computed on version b and summed into round k is k-1-b rounds stale;
// beyond `staleness` it is refused (SyncReject: the client returns it to its error-
// feedback residual). staleness 0 is synchronous training.
//
// One member cannot poison the front: a contribution's values must be finite and within
// `max_abs_value` (else refused: ProtocolError, nothing applied); its weight counts at most
// the examples the member declared at Join; with `clip` > 0 its L2 norm is scaled down to
// at most clip x the median norm of the last `clip_window` contributions.
//
// Pure logic over wire::Message: no sockets, the clock is passed in (tests drive it).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <array>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cutlayer/kernels/sparse_sum.h"
#include "cutlayer/model/model_spec.h"
#include "cutlayer/server/checks.h"
#include "cutlayer/state/archive.h"
#include "cutlayer/sync/flat_params.h"
#include "cutlayer/train/kfac.h"
#include "cutlayer/train/train_options.h"
#include "cutlayer/wire/messages.h"
#include "cutlayer/wire/message.h"

namespace cutlayer::server {

enum class StaleWeight { kInvSqrt, kInv, kNone };  // 1/sqrt(1+tau), 1/(1+tau), 1

struct AggregatorOptions {
  std::uint32_t staleness = 0;
  StaleWeight stale_weight = StaleWeight::kInv;
  std::chrono::milliseconds deadline{10000};
  std::int64_t target_samples = 0;
  // Every value of a contribution finite and |v| <= this (limits.max_abs_value).
  double max_abs_value = kDefaultMaxAbsValue;
  // > 0: a contribution's norm is clipped to clip x the running median of the norms of the
  // last clip_window contributions (as received, before clipping), once at least
  // kClipMinHistory are known. 0: off.
  double clip = 0;
  std::size_t clip_window = 64;
  // No round closes until this many members have joined since the server started (a
  // restart waits for them again): every round then has the same company from the start,
  // instead of the first to join running rounds alone. 1: rounds start with the first.
  std::size_t start_members = 1;
  // K-FAC factors of the members' fronts (docs/kfac.md): "local" (each member keeps its own)
  // or "average" (members that consent send their batch factors with their contributions;
  // a round averages them by examples into the aggregation's running factors). Averaged,
  // every inverse_every/factor_every-th factor round ships either the decompositions the
  // server computed once (kfac_decompositions "server") or the factors, which every member
  // then decomposes itself ("members").
  std::string kfac_factors = "local";
  std::string kfac_decompositions = "server";
};

constexpr std::size_t kClipMinHistory = 5;

struct AggregatorStats {
  std::uint64_t rounds = 0;
  std::uint64_t closed_all = 0, closed_samples = 0, closed_deadline = 0;
  std::uint64_t contributions = 0, rejected = 0;
  std::uint64_t clipped = 0;         // contributions scaled down by the norm clip
  std::uint64_t samples_capped = 0;  // contributions whose samples exceeded the member's Join
  std::uint64_t bytes_up = 0;    // index + value bytes received
  std::uint64_t bytes_down = 0;  // index + value bytes sent (every member's copy)
  std::uint64_t updates_sent = 0;
  std::uint64_t nnz_up = 0, nnz_down = 0;  // entries received / broadcast (once per round)
  std::vector<std::uint64_t> staleness;    // histogram: [tau] -> contributions summed
  std::uint64_t max_staleness = 0;
  // Rounds closed by their deadline: the longest one stayed open past it (the loop's
  // latency: it was busy, or blocked), and how many stayed more than kOverdue past it.
  std::uint64_t max_overrun_ms = 0;
  std::uint64_t overdue = 0;
  // Shared K-FAC: factor bytes received, factor rounds, rounds that shipped factors or
  // decompositions, and their bytes (every member's copy).
  std::uint64_t kfac_bytes_up = 0, kfac_rounds = 0, kfac_shipped = 0, kfac_bytes_down = 0;
  double kfac_decompose_ms = 0;  // the server's decompositions, all together
};

// A round closed this long after its deadline is "overdue" (AggregatorStats::overdue).
constexpr std::chrono::milliseconds kOverdue{1000};

class Aggregator {
 public:
  using Clock = std::chrono::steady_clock;
  using Outbox = std::vector<std::pair<std::uint64_t, wire::Message>>;

  // The replica is built from `train` exactly as the clients build their front (same
  // seed), and stepped with `train`'s optimizer and learning-rate schedule over rounds.
  Aggregator(const train::TrainOptions& train, AggregatorOptions options);

  // A joined session asks for the snapshot: it becomes a member and gets the current
  // front, optimizer state and round. `declared_samples`: the examples it declared at
  // Join, the most any one of its contributions weighs (0: not declared, no cap).
  Outbox add_member(std::uint64_t session, const std::string& name, std::uint64_t declared_samples = 0);
  // A member left or was evicted (session ended): its queued contributions are dropped,
  // the open round stops waiting for it.
  Outbox remove_member(std::uint64_t session, Clock::time_point now);
  // A SparseGrad from `session`. Throws ProtocolError for a malformed or impossible one, or
  // one with a value not finite or past max_abs_value; nothing of it is applied then.
  Outbox contribute(std::uint64_t session, const wire::Message& msg, Clock::time_point now);
  // Closes a round whose deadline has passed.
  Outbox tick(Clock::time_point now);
  // The learning-rate schedule's clock: the back's optimizer steps so far. A round's
  // update is applied at the schedule's position before the round's batches, so the
  // front decays with the back (1 client: round r at step r-1, as without aggregation).
  // Unset, round r uses position r-1.
  void set_schedule_steps(std::int64_t back_steps) { schedule_steps_ = back_steps; }

  // Across the ranks of a server tier (docs/scale-out.md): rounds close only through
  // close_collective, which every rank calls after the same header (the ranks' offers summed).
  void set_collective() { collective_ = true; }
  // What this rank's open round offers: [contributions, examples, members, members in the
  // round, its deadline passed (0/1), members that joined since the start].
  static constexpr int kOfferSize = 6;
  std::array<double, kOfferSize> offer(Clock::time_point now) const;
  // Whether the summed offers close the round (all members in, target examples, a deadline).
  bool closes(const std::array<double, kOfferSize>& summed) const;
  // Closing the round on every rank, in two halves around the allreduce: this rank's
  // contributions weighted by the round's examples on all ranks (`summed`), as a dense
  // vector to sum over the ranks; then that sum applied to the replica (the same update on
  // every rank: its non-zero entries) and the Update sent to this rank's members.
  torch::Tensor begin_collective(const std::array<double, kOfferSize>& summed);
  // `back_steps`: the back's steps so far (the learning-rate schedule's clock), `world`: the
  // ranks.
  Outbox finish_collective(const std::array<double, kOfferSize>& summed, const torch::Tensor& sum,
                           std::int64_t back_steps, std::int64_t world, Clock::time_point now);
  // From offer() to the end of its collective: contributions wait in their members' queues,
  // so the round holds exactly what it offered. thaw(): the round did not close.
  void freeze() { frozen_ = true; }
  Outbox thaw(Clock::time_point now);

  // The durable part: the replica (front and head), its optimizer and the round. Members
  // and an open round are not: after a restart the clients re-join and re-sync to the round
  // through the snapshot, and the open round's contributions are lost (at most one each).
  void save(state::OutputArchive& a) const;
  // Loads a saved state (throws CheckpointRefused when it does not fit); only before any
  // member has joined.
  void load(state::InputArchive& a);
  // The replica's modules (their fingerprint goes into the server's checkpoints).
  std::vector<const torch::nn::Module*> replica_parts() const;

  std::size_t members() const { return members_.size(); }
  std::uint64_t version() const { return version_; }
  std::int64_t numel() const { return flat_.numel(); }
  std::string hash() const { return flat_.hash(); }
  // The shared preconditioner's hash (Kfac::hash; "none" before the first, or when the
  // factors stay local).
  std::string kfac_hash() const { return kfac_ ? kfac_->hash() : "none"; }
  // ... and of all the shared K-FAC state (the running factors and their count too).
  std::string kfac_state_hash() const { return kfac_ ? kfac_->hash(true) : "none"; }
  // The replica's parameters (tests check them).
  const std::vector<torch::Tensor>& params() const { return flat_.params(); }
  const AggregatorStats& stats() const { return stats_; }
  const AggregatorOptions& options() const { return options_; }

 private:
  struct Contribution {
    std::uint64_t session = 0, seq = 0, base = 0, samples = 0;
    kernels::SparseTensor grad;
    std::vector<torch::Tensor> factors;  // shared K-FAC: the batch factors sent with it
  };
  struct Member {
    std::string name;
    std::uint64_t declared_samples = 0;
    std::uint64_t last_seq = 0;
    bool in_round = false;
    std::deque<Contribution> queue;
  };
  void admit(Contribution c, Clock::time_point now, Outbox& out);
  void maybe_close(Clock::time_point now, Outbox& out);
  void close_late(Clock::time_point now);  // counts a deadline close and its overrun
  void close(Outbox& out);
  // The round's update applied to the replica and sent to every member.
  void apply_update(kernels::SparseTensor update, std::uint32_t contributors, std::uint64_t samples,
                    std::size_t batches, wire::KfacContent kfac, std::vector<torch::Tensor> shipped, Outbox& out);
  void admit_queued(Clock::time_point now, Outbox& out);
  double weigh(const Contribution& c, double samples);
  void clip(Contribution& c);
  void load_kfac(state::InputArchive& a);
  std::vector<torch::Tensor> read_factors(const Member& m, const wire::Message& msg, std::uint32_t n);
  // Folds the round's batch factors; when this factor round ships, the factors or
  // decompositions (and their kind) that every Update of the round carries.
  wire::KfacContent fold_factors(std::vector<torch::Tensor>& shipped);

  train::TrainOptions train_;
  AggregatorOptions options_;
  model::SplitModel model_;
  sync::FlatParams flat_;
  std::unique_ptr<torch::optim::Optimizer> opt_;
  kernels::DenseAccumulator acc_;
  std::map<std::uint64_t, Member> members_;
  std::vector<Contribution> round_;  // the open round's contributions, in arrival order
  std::uint64_t round_samples_ = 0;
  Clock::time_point round_deadline_{};
  std::deque<double> norms_;  // the last clip_window contributions' norms (clip > 0)
  std::uint64_t version_ = 0;  // rounds applied
  std::int64_t schedule_steps_ = -1;
  bool quorum_ = false;  // start_members have joined
  bool collective_ = false;
  bool frozen_ = false;
  std::uint64_t joined_ = 0;  // members that joined since the start
  std::unique_ptr<train::Kfac> kfac_;  // kfac_factors "average": the shared factors
  std::vector<torch::Tensor> kfac_shipped_;  // what the last shipping round sent (joiners get it)
  AggregatorStats stats_;
};

}  // namespace cutlayer::server
