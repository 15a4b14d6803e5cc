// The optimizer a "train" object asks for and its learning-rate schedule. The client's
// front, the server's back and the aggregator's replica all step through these, so the
// same config means the same updates everywhere.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cutlayer/train/kfac.h"
#include "cutlayer/train/train_options.h"

namespace cutlayer::train {

// SGD (momentum, weight decay) or Adam over `params`; "kfac" is SGD, stepping on the
// gradients make_kfac's preconditioner has rewritten.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<torch::Tensor>& params,
                                                        const TrainOptions& o);
// The K-FAC preconditioner of this party's `parts` under optimizer "kfac"; otherwise an
// inactive one (plain forward, no-op step), so that a training loop reads the same either way.
std::unique_ptr<Kfac> make_kfac(const std::vector<torch::nn::Sequential>& parts,
                                const std::vector<std::string>& part_names, const TrainOptions& o,
                                const std::string& who);
// The learning rate at `step` (0-based) under the schedule.
double lr_at(const TrainOptions& o, std::int64_t step);
void set_lr(torch::optim::Optimizer& opt, double lr);

}  // namespace cutlayer::train
