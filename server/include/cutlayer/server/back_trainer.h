// The server's half of split training: the back model, shared by every client's batches
// (interleaved as they arrive), its optimizer, and the U-shaped round trip.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cutlayer/model/model_spec.h"
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
  double loss_sum = 0;               // over vanilla training batches since the last report
  std::int64_t loss_samples = 0;
  std::int64_t correct = 0;
};

class BackTrainer {
 public:
  static constexpr std::int64_t kMaxBatch = 4096;

  explicit BackTrainer(const train::TrainOptions& options);

  // Why `join` cannot be served (model, mode or cut shape differ), or nullopt.
  std::optional<std::string> check_join(const wire::Join& join) const;
  const std::vector<std::int64_t>& cut_shape() const { return cut_shape_; }

  // Activations or HeadGrad from `session`. Returns the replies to send now, as
  // (session, message) pairs: U-shaped steps of different clients are serialized, so a
  // completed step may release another client's deferred batch. Throws ProtocolError
  // for a malformed message (the caller answers the peer with an Error).
  std::vector<std::pair<std::uint64_t, wire::Message>> handle(std::uint64_t session,
                                                              wire::Message msg);
  // A session ended: drop its pending step and deferred batches.
  std::vector<std::pair<std::uint64_t, wire::Message>> forget(std::uint64_t session);

  const TrainerStats& stats() const { return stats_; }
  TrainerStats& stats() { return stats_; }
  const train::TrainOptions& options() const { return options_; }

 private:
  struct Pending {
    std::uint64_t session = 0;
    std::uint64_t step = 0;
    torch::Tensor z, h;
  };
  torch::Tensor check_cut(const wire::Message& msg) const;
  wire::Message vanilla(const wire::Message& msg);
  wire::Message u_forward(std::uint64_t session, const wire::Message& msg);
  wire::Message u_backward(std::uint64_t session, const wire::Message& msg);
  void drain(std::vector<std::pair<std::uint64_t, wire::Message>>& out);

  train::TrainOptions options_;
  model::SplitSpec spec_;
  torch::nn::Sequential back_;
  std::unique_ptr<torch::optim::Optimizer> opt_;
  std::vector<std::int64_t> cut_shape_;
  std::int64_t classes_ = 0;  // vanilla: the back's output width (labels are checked against it)
  std::optional<Pending> pending_;  // U-shaped: the one step between forward and backward
  std::deque<std::pair<std::uint64_t, wire::Message>> deferred_;
  TrainerStats stats_;
};

}  // namespace cutlayer::server
