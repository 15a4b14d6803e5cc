// The server's half of split training: the back model, shared by every client's batches
// (interleaved as they arrive), its optimizer, and the U-shaped round trip.
//
// One client cannot stall or poison the others: every tensor is validated (shape, dtype,
// finite, |v| <= max_abs_value) before it is applied or queued; a step whose loss or
// gradient is not finite is not taken; a U-shaped step waits for its HeadGrad at most
// head_grad_timeout; the batches waiting behind it are bounded per session and in total.
#pragma once

#include <torch/torch.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cutlayer/cut/codec.h"
#include "cutlayer/model/model_spec.h"
#include "cutlayer/server/checks.h"
#include "cutlayer/state/archive.h"
#include "cutlayer/train/loop.h"
#include "cutlayer/train/train_options.h"
#include "cutlayer/wire/message.h"
#include "cutlayer/wire/messages.h"

namespace cutlayer::server {

struct TrainerStats {
  std::int64_t steps = 0;            // optimizer steps on the back model
  std::int64_t samples = 0;          // training examples seen
  std::int64_t labels_received = 0;  // label tensors decoded (U-shaped: must stay 0)
  std::int64_t eval_batches = 0;
  std::int64_t predict_batches = 0;  // vanilla batches answered with logits (no labels)
  double loss_sum = 0;               // over vanilla training batches since the last report
  std::int64_t loss_samples = 0;
  std::int64_t correct = 0;
  // Time handling the clients' training and evaluation messages: decoding the cut, the
  // back's forward, backward and optimizer step, encoding the answer (what a client's wait
  // holds besides the transport and the hand-offs).
  double busy_seconds = 0;
};

// What one client may ask of the back model (server config: train.head_grad_timeout_ms,
// train.max_deferred_per_session, train.max_deferred_mb, limits.max_abs_value).
struct TrainerLimits {
  // U-shaped: how long a client's step waits for its HeadGrad. Past it the step is dropped,
  // that client gets an Error and the next client's batch goes on.
  std::chrono::milliseconds head_grad_timeout{5000};
  // U-shaped: training batches waiting for another client's step, per session (an honest
  // client has at most one) and in total (bytes of cut activations). Over either bound the
  // batch is refused (Error) and dropped.
  std::size_t max_deferred_per_session = 2;
  std::size_t max_deferred_bytes = std::size_t{1024} << 20;
  // Activations and head gradients: every value finite and |v| <= this.
  double max_abs_value = kDefaultMaxAbsValue;
};

// Steps in rounds (train.accumulate, train.round_wait_ms; the server tier across ranks:
// docs/scale-out.md). A round takes at most `accumulate` training batches, at most one per
// session; it is due when it is full, when every training session has a batch in it, or
// `wait` after its first batch. Its gradient is the example-weighted mean of its batches'
// gradients (summed across ranks by the caller), and the optimizer steps once per round.
//
// No round closes until `start_clients` training sessions have joined since the server
// started (across ranks: until every rank has its own), so that the first rounds hold the
// same company as the later ones.
struct RoundOptions {
  std::int64_t accumulate = 1;
  std::chrono::milliseconds wait{1000};
  std::int64_t start_clients = 0;
};

class BackTrainer {
 public:
  static constexpr std::int64_t kMaxBatch = 4096;
  using Clock = std::chrono::steady_clock;
  using Outbox = std::vector<std::pair<std::uint64_t, wire::Message>>;

  explicit BackTrainer(const train::TrainOptions& options, TrainerLimits limits = {});
  // A back the caller built, taking cuts of `cut_shape` (vertical split learning: the back
  // over the parties' joined cuts, whose Joins VerticalJoin checks instead of check_join).
  BackTrainer(const train::TrainOptions& options, torch::nn::Sequential back, std::vector<std::int64_t> cut_shape,
              TrainerLimits limits = {});

  // Why `join` cannot be served (model, mode or cut shape differ), or nullopt.
  std::optional<std::string> check_join(const wire::Join& join) const;
  const std::vector<std::int64_t>& cut_shape() const { return cut_shape_; }
  std::int64_t classes() const { return classes_; }  // the back's output width (vanilla)

  // Activations or HeadGrad from `session`. Returns the replies to send now, as
  // (session, message) pairs: U-shaped steps of different clients are serialized, so a
  // completed step may release another client's deferred batch. Throws ProtocolError
  // for a malformed or refused message, and LibTorch's c10::Error where the model cannot
  // take the batch (the caller answers the peer with an Error); nothing is applied then.
  // The outbox may itself hold Errors: to another client whose deferred batch failed, or
  // to `session` when its refused HeadGrad dropped its pending step.
  Outbox handle(std::uint64_t session, wire::Message msg, Clock::time_point now = Clock::now());
  // Drops a pending step whose HeadGrad is overdue (an Error to its client, with its
  // deferred batches) and starts the next deferred batch.
  Outbox tick(Clock::time_point now = Clock::now());
  // A session ended: drop its pending step and deferred batches.
  Outbox forget(std::uint64_t session, Clock::time_point now = Clock::now());

  // Rounds (RoundOptions): from now on the optimizer steps in finish_round only. A training
  // batch of a session already in the round, or one that finds the round full, is held
  // (bounded like deferred batches) and taken in the next round. Not with K-FAC.
  void enable_rounds(RoundOptions o);
  bool in_rounds() const { return rounds_.has_value(); }
  // The round can close: no U-shaped step between its forward and backward, and it is full,
  // holds every training session, or has waited long enough.
  bool round_due(Clock::time_point now) const { return !pending_ && round_ready(now); }
  // ... but for a U-shaped step between its forward and backward (which the round waits for).
  bool round_ready(Clock::time_point now) const;
  // Training sessions still here that had a batch in the last round that stepped, or joined
  // since: the ones a round is worth waiting for (a client that let a round pass, idle or
  // evaluating, is not until its next batch).
  std::size_t active_sessions() const;
  // start_clients training sessions have joined.
  bool round_quorum() const {
    return !rounds_ || static_cast<std::int64_t>(joined_.size()) >= rounds_->start_clients;
  }
  std::int64_t round_batches() const { return round_batches_; }
  std::size_t training_sessions() const { return session_names_.size(); }
  const RoundOptions& round_options() const { return *rounds_; }
  std::int64_t round_samples() const { return round_samples_; }
  // The round's gradient: one flat float32 tensor, the sum over its batches of examples x
  // the batch's mean-loss gradient. The caller may sum it across ranks in place.
  torch::Tensor& round_gradient() { return round_grad_; }
  // Steps with round_gradient() / total_samples (no step when total_samples is 0) and
  // starts the next round with the batches that were held. A gradient that is not finite
  // is not applied (every rank sees the same sum and skips it too); returns its Errors.
  // `replay` false (the last round before a stop): held batches are dropped, not answered.
  Outbox finish_round(std::int64_t total_samples, Clock::time_point now = Clock::now(), bool replay = true);
  std::size_t held() const { return held_.size(); }
  // A collective round is in flight with what the round holds now: every training batch
  // is held until finish_round or reopen_round.
  void close_round() { round_closed_ = true; }
  // The round goes on without a step (the ranks were not all ready): held batches are taken.
  Outbox reopen_round(Clock::time_point now = Clock::now());

  // How a session's cut travels (its Join's; check_join has accepted it). A session
  // without one sends a float32 cut.
  void set_cut(std::uint64_t session, const wire::CutCoding& coding);

  // Which client (its allow-list name) a session is; the training steps of each client are
  // counted by name (steps_held), so that they outlive sessions and restarts.
  void name_session(std::uint64_t session, const std::string& name);
  // One past the last training step of `name` this back model learnt from (the client's
  // own step numbering), or wire::kStepsUnknown when it holds none.
  std::uint64_t steps_held(const std::string& name) const;

  // The durable part: the back model, its optimizer, its step and example counters and
  // each client's steps held (a U-shaped step in flight and the deferred batches are not:
  // their clients retry).
  void save(state::OutputArchive& a) const;
  // Loads a saved state (throws CheckpointRefused when it does not fit); drops any step in
  // flight and the deferred batches.
  void load(state::InputArchive& a);
  const torch::nn::Sequential& back_model() const { return back_; }
  // The back, its optimizer and counters as at construction (a new vertical cohort is a
  // new run: the back starts from the weights every party's reference starts from).
  void restart();

  const TrainerStats& stats() const { return stats_; }
  TrainerStats& stats() { return stats_; }
  const train::TrainOptions& options() const { return options_; }
  const TrainerLimits& limits() const { return limits_; }
  // The back model (tests compare its parameters).
  const torch::nn::Sequential& back() const { return back_; }
  // U-shaped: the session whose step waits for its HeadGrad, if any; batches waiting.
  std::optional<std::uint64_t> pending_session() const;
  std::size_t deferred() const { return deferred_.size(); }
  std::size_t deferred_bytes() const { return deferred_bytes_; }

 private:
  struct Pending {
    std::uint64_t session = 0;
    std::uint64_t step = 0;
    torch::Tensor z, h;
    torch::Tensor cols;  // top-k cut: the columns sent (the gradient goes back for those)
    Clock::time_point deadline;
  };
  struct Deferred {  // a validated training batch waiting for another client's step
    std::uint64_t session = 0;
    wire::Activations meta;
    cut::Received cut;
    std::size_t bytes = 0;
  };
  const wire::CutCoding& coding(std::uint64_t session) const;
  cut::Received check_cut(std::uint64_t session, const wire::Message& msg) const;
  void check_grads() const;
  wire::Message vanilla(std::uint64_t session, const wire::Message& msg);
  wire::Message predict(const wire::Activations& a, const torch::Tensor& z);
  void count_step(std::uint64_t session, std::uint64_t step);
  void hold_step(const std::string& name, std::uint64_t step);
  wire::Message u_forward(std::uint64_t session, const wire::Activations& a, cut::Received cut,
                          Clock::time_point now);
  wire::Message u_backward(std::uint64_t session, const wire::Message& msg);
  void defer(std::uint64_t session, const wire::Activations& a, cut::Received cut);
  void drop_deferred(std::uint64_t session);
  void drain(Outbox& out, Clock::time_point now);
  // The optimizer step after a batch's backward, or (rounds) its gradient added to the round.
  void apply_batch(std::uint64_t session, std::int64_t examples);
  // Rounds: whether `session`'s training batch must wait for the next round.
  bool must_hold(std::uint64_t session) const;
  void hold(std::uint64_t session, wire::Message msg);
  void drop_held(std::uint64_t session);
  void clear_round();
  void init_back(torch::nn::Sequential back, std::vector<std::int64_t> cut_shape);
  std::vector<torch::Tensor> initial_;  // the back's parameters and buffers at construction

  train::TrainOptions options_;
  model::SplitSpec spec_;
  torch::nn::Sequential back_;
  std::unique_ptr<torch::optim::Optimizer> opt_;
  std::unique_ptr<train::Kfac> kfac_;  // inactive unless the optimizer is "kfac"
  std::vector<std::int64_t> cut_shape_;
  // Hex fingerprints of the front, the head ("" in vanilla) and the back (Join's check).
  std::array<std::string, 3> fingerprints_;
  std::optional<std::string> check_fingerprints(const wire::Join& join) const;
  std::int64_t classes_ = 0;  // vanilla: the back's output width (labels are checked against it)
  std::optional<Pending> pending_;  // U-shaped: the one step between forward and backward
  TrainerLimits limits_;
  std::deque<Deferred> deferred_;
  std::size_t deferred_bytes_ = 0;
  TrainerStats stats_;
  static constexpr std::size_t kMaxNamedClients = 1 << 16;
  std::map<std::uint64_t, std::string> session_names_;
  std::map<std::uint64_t, wire::CutCoding> codings_;  // sessions whose cut is not plain float32
  std::map<std::string, std::uint64_t> steps_held_;
  // Rounds.
  struct Held {
    std::uint64_t session = 0;
    wire::Message msg;
    std::size_t bytes = 0;
  };
  std::optional<RoundOptions> rounds_;
  torch::Tensor round_grad_;
  std::vector<torch::Tensor> round_views_;  // round_grad_ viewed as each parameter
  std::int64_t round_batches_ = 0, round_samples_ = 0;
  std::set<std::uint64_t> round_sessions_, last_round_sessions_, fresh_sessions_;
  std::vector<std::pair<std::string, std::uint64_t>> round_steps_;  // (client, step) in the round
  Clock::time_point round_started_{};  // its first batch
  std::deque<Held> held_;
  bool round_closed_ = false;
  std::set<std::string> joined_;  // the clients (names) whose sessions joined since construction
  Clock::time_point quorum_at_{};  // when joined_ reached start_clients
};

}  // namespace cutlayer::server
