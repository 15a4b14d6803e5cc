// The data owner's half of split training: its shard, the front (and, U-shaped, the
// head) of the model, and the step protocol with the server.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>

#include "cutlayer/client/dispatcher.h"
#include "cutlayer/client/front_sync.h"
#include "cutlayer/client/report.h"
#include "cutlayer/data/source.h"
#include "cutlayer/model/model_spec.h"
#include "cutlayer/cut/codec.h"
#include "cutlayer/cut/options.h"
#include "cutlayer/privacy/adversary.h"
#include "cutlayer/privacy/nopeek.h"
#include "cutlayer/state/checkpoint.h"
#include "cutlayer/train/loop.h"
#include "cutlayer/train/train_options.h"
#include "cutlayer/transport/client_transport.h"

namespace cutlayer::client {

struct SplitClientOptions {
  std::string name = "client";
  train::TrainOptions train;
  privacy::PrivacyOptions nopeek;
  cut::CutOptions cut;                               // how the cut crosses the wire
  std::chrono::milliseconds reply_timeout{120000};  // one step's answer
  int rejoins = 5;                                   // after the server went away
  std::string save_front;                            // torch::save the trained front here
  std::string export_path;                           // the trained front (+head) as TorchScript here
  sync::SyncOptions sync;                            // enabled: the front joins the aggregation
  state::CheckpointOptions checkpoint;               // enabled: sealed checkpoints of this client
  std::string checkpoint_key;                        // the key pair file that seals them
};

class SplitClient {
 public:
  SplitClient(transport::ClientTransport& link, SplitClientOptions options);

  // Joins, trains until done (or `stop`), evaluates, leaves. Returns a JSON summary.
  std::string run(const std::atomic<bool>& stop);
  // Predictions for the inputs in `input` (IDX images or CSV) with the model of this
  // client's newest checkpoint and the server's back: joins for inference only, sends the
  // cut of each batch (no labels), writes `output` (CSV: index, class, p0..pK-1). Returns a
  // JSON summary.
  std::string predict(const std::string& input, const std::string& output, const std::atomic<bool>& stop);

 private:
  struct StepResult {
    double loss = 0;
    std::int64_t correct = 0;
    double dcor = 0;  // NoPeek term of this batch (alpha > 0)
    double seconds = 0, wait_seconds = 0;  // the step's, and of them waiting for the server
  };
  StepResult step(const train::Batch& b);
  struct Totals {
    std::int64_t steps = 0, samples = 0;
    double last_loss = 0;
    std::int64_t timed = 0;                     // training steps taken in this run
    double step_seconds = 0, wait_seconds = 0;  // over them
  };
  Evaluation evaluate();
  void contribute(const train::Batch& b);
  void settle_sync(std::size_t max_outstanding);
  void join();
  // Thrown out of a step when a re-join finds the server at an earlier round: training
  // goes on from `step`.
  struct Rewind {
    std::int64_t step;
  };
  void rewind_to_round(std::uint64_t was);
  bool align_with_server(std::uint64_t steps_held);
  void announce() const;
  void train_steps(const std::atomic<bool>& stop, train::Batches& batches, train::MetricsFile& metrics,
                   const train::Progress& progress, Totals& totals);
  report::Json step_json(std::int64_t step, const StepResult& r) const;
  void report_window(std::int64_t step, const Window& w, const train::Progress& progress, std::int64_t samples,
                     train::MetricsFile& metrics) const;
  std::string finish(const std::atomic<bool>& stop, train::MetricsFile& metrics, const train::Progress& progress,
                     const Totals& totals);
  std::optional<SyncReport> sync_report() const;
  // Checkpoints (split_client_state.cpp): what a checkpoint must match, the state as bytes
  // and back, resuming at start, writing when due and at the end.
  state::Identity identity() const;
  std::string snapshot(std::int64_t steps_done, const torch::Tensor& rng) const;
  std::int64_t restore(const std::string& bytes);
  std::int64_t resume();
  void checkpoint(std::int64_t steps_done, bool force);
  std::optional<std::uint64_t> round() const;
  // split_client_inference.cpp: the TorchScript export (and its parity reference).
  void export_parts(const std::string& path);
  std::vector<std::int64_t> head_input_shape() const;
  // Join's fingerprints of the parts this client holds (the server checks them).
  void set_fingerprints(wire::Join& j) const;
  std::int64_t load_trained();
  torch::Tensor predict_batch(const torch::Tensor& x, std::int64_t& width);
  template <class Fn>
  auto with_rejoin(Fn&& fn) -> decltype(fn());

  transport::ClientTransport& link_;
  SplitClientOptions options_;
  data::Split data_;
  model::SplitSpec spec_;
  model::SplitModel model_;
  std::unique_ptr<torch::optim::Optimizer> opt_;
  std::unique_ptr<train::Kfac> kfac_;  // inactive unless the optimizer is "kfac"
  std::optional<privacy::DecoderAdversary> adversary_;  // privacy.adversary
  double eval_seconds_ = 0;            // spent in periodic evaluations (metrics' train_seconds)
  std::vector<std::int64_t> cut_shape_;
  // dL/dz from the server: finite and within this bound, else a ProtocolError.
  static constexpr double kMaxCutGrad = 1e18;
  wire::CutCoding cut_coding_;  // options_.cut for this cut shape (sent at Join)
  // What leaves this client for front activations z: noise (privacy), then the cut's coding.
  cut::Sent send_cut(const torch::Tensor& z) const;
  std::uint64_t eval_id_ = 1ull << 62;
  Dispatcher dispatch_;  // every wait for the server (deadline, stop flag, strays)
  std::unique_ptr<FrontSync> sync_;
  std::optional<state::CheckpointStore> checkpoints_;
  torch::Tensor rng_before_step_;  // the generator before the step in progress (checkpoints)
  // With aggregation: each recent step and the round its front started from (a rewind
  // after a server restart looks the server's round up here).
  static constexpr std::size_t kMaxStepRounds = 1 << 16;
  std::deque<std::pair<std::int64_t, std::uint64_t>> step_rounds_;
  bool in_step_ = false;            // a Rewind may be thrown (only out of a training step)
  bool joined_ = false;             // the first join is done (training has started)
  std::int64_t steps_done_ = 0;     // training steps completed (a rewind sets it back)
  int rejoins_ = 0;                 // re-joins since the last completed training step
};

}  // namespace cutlayer::client
