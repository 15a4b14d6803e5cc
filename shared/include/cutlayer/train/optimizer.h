// The optimizer a "train" object asks for and its learning-rate schedule. The client's
// front, the server's back and the aggregator's replica all step through these, so the
// same config means the same updates everywhere.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "cutlayer/train/train_options.h"

namespace cutlayer::train {

// SGD (momentum, weight decay) or Adam over `params`.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<torch::Tensor>& params,
                                                        const TrainOptions& o);
// The learning rate at `step` (0-based) under the schedule.
double lr_at(const TrainOptions& o, std::int64_t step);
void set_lr(torch::optim::Optimizer& opt, double lr);

}  // namespace cutlayer::train
