#include "cutlayer/privacy/adversary.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "cutlayer/error.h"
#include "cutlayer/privacy/dcor.h"

namespace cutlayer::privacy {

torch::nn::Sequential make_decoder(const std::vector<std::int64_t>& cut, const std::vector<std::int64_t>& in) {
  torch::nn::Sequential d;
  if (cut.size() == 3 && in.size() == 3 && in[1] - 2 * cut[1] + 1 >= 1 && in[2] - 2 * cut[2] + 1 >= 1 &&
      in[1] - 2 * cut[1] == in[2] - 2 * cut[2]) {
    d->push_back(torch::nn::ConvTranspose2d(torch::nn::ConvTranspose2dOptions(cut[0], 32, 4).stride(2).padding(1)));
    d->push_back(torch::nn::ReLU());
    d->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 32, 3).padding(1)));
    d->push_back(torch::nn::ReLU());
    d->push_back(torch::nn::ConvTranspose2d(torch::nn::ConvTranspose2dOptions(32, in[0], in[1] - 2 * cut[1] + 1)));
    return d;
  }
  std::int64_t zn = 1, xn = 1;
  for (auto v : cut) zn *= v;
  for (auto v : in) xn *= v;
  d->push_back(torch::nn::Flatten());
  d->push_back(torch::nn::Linear(zn, 512));
  d->push_back(torch::nn::ReLU());
  d->push_back(torch::nn::Linear(512, xn));
  d->push_back(torch::nn::Unflatten(torch::nn::UnflattenOptions(1, in)));
  return d;
}

torch::Tensor DecoderAdversary::penalty(const torch::Tensor& x, const torch::Tensor& z) {
  if (x.size(0) != z.size(0) || x.size(0) < 2) throw Error("decoder adversary: needs a batch of 2 or more (x, z) pairs");
  if (!decoder_) {
    // The decoder's initial weights: the same in every run, and the training's own draws
    // (the cut's noise) unchanged.
    auto gen = at::detail::getDefaultCPUGenerator();
    const auto saved = gen.get_state();
    torch::manual_seed(seed_);
    decoder_ = make_decoder(z.sizes().slice(1).vec(), x.sizes().slice(1).vec());
    gen.set_state(saved);
    opt_ = std::make_unique<torch::optim::Adam>(decoder_->parameters(), torch::optim::AdamOptions(options_.lr));
  }
  const auto var = x.var().detach().clamp_min(1e-12);
  {
    opt_->zero_grad();
    auto loss = torch::mse_loss(decoder_->forward(z.detach()), x) / var;
    last_nmse_ = loss.item<double>();
    loss.backward();
    opt_->step();
  }
  // The decoder's parameters collect this term's gradient too; the next step zeroes them.
  // Capped at 1 (the decoder no better than the mean image): past that the front would
  // only be paid for making noise, which it can do without bound.
  return -options_.weight * (torch::mse_loss(decoder_->forward(z), x) / var).clamp_max(1.0);
}

torch::Tensor client_terms(const PrivacyOptions& p, std::int64_t step, const torch::Tensor& x, const torch::Tensor& z,
                           DecoderAdversary* adversary, double* dcor_value) {
  torch::Tensor t;
  if (const double alpha = alpha_at(p, step); alpha > 0) {
    auto d = dcor(x, z);
    if (dcor_value) *dcor_value = d.item<double>();
    t = alpha * d;
  }
  if (adversary) {
    auto pen = adversary->penalty(x, z);
    t = t.defined() ? t + pen : pen;
  }
  return t;
}

}  // namespace cutlayer::privacy
