#include "cutlayer/train/optimizer.h"

#include <algorithm>
#include <cmath>

namespace cutlayer::train {

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<torch::Tensor>& params,
                                                        const TrainOptions& o) {
  if (o.optimizer == "adam")
    return std::make_unique<torch::optim::Adam>(
        params, torch::optim::AdamOptions(o.lr).weight_decay(o.weight_decay));
  return std::make_unique<torch::optim::SGD>(
      params, torch::optim::SGDOptions(o.lr).momentum(o.momentum).weight_decay(o.weight_decay));
}

std::unique_ptr<Kfac> make_kfac(const std::vector<torch::nn::Sequential>& parts,
                                const std::vector<std::string>& part_names, const TrainOptions& o,
                                const std::string& who) {
  if (o.optimizer != "kfac") return std::make_unique<Kfac>(std::vector<torch::nn::Sequential>{}, part_names, o.kfac, who);
  return std::make_unique<Kfac>(parts, part_names, o.kfac, who);
}

double lr_at(const TrainOptions& o, std::int64_t step) {
  if (o.lr_schedule == "step") return o.lr * std::pow(o.lr_gamma, static_cast<double>(step / o.lr_step_every));
  if (o.lr_schedule == "cosine") {
    const double p = std::min(1.0, static_cast<double>(step) / static_cast<double>(o.lr_total_steps));
    return 0.5 * o.lr * (1 + std::cos(M_PI * p));
  }
  return o.lr;
}

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& group : opt.param_groups()) {
    if (auto* sgd = dynamic_cast<torch::optim::SGDOptions*>(&group.options())) sgd->lr(lr);
    else if (auto* adam = dynamic_cast<torch::optim::AdamOptions*>(&group.options())) adam->lr(lr);
  }
}

}  // namespace cutlayer::train
