// Reconstruction attacks and the decoder-aware defence. make_decoder is the attacker's
// decoder z -> x (cutlayer-leakage trains it on the defended activations); DecoderAdversary
// is the client-side defence: the client trains the same kind of decoder on its own batches
// every step, and the front is penalised for that decoder's success.
#pragma once

#include <torch/nn/modules/container/sequential.h>
#include <torch/optim/adam.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "cutlayer/privacy/nopeek.h"

namespace cutlayer::privacy {

// z (C x H x W) -> x (Cin x Hin x Win): one stride-2 transposed convolution doubling H, W,
// a 3 x 3 convolution, then a transposed convolution that lands on the input size; an MLP
// (z -> 512 -> x) when the shapes do not allow it.
torch::nn::Sequential make_decoder(const std::vector<std::int64_t>& cut, const std::vector<std::int64_t>& in);

class DecoderAdversary {
 public:
  DecoderAdversary(const AdversaryOptions& o, std::uint64_t seed) : options_(o), seed_(seed) {}

  // One step on a batch: the decoder takes an Adam step towards rebuilding x from
  // z.detach(); returns the front's penalty -weight * min(1, MSE(decoder(z), x) / Var(x)), whose
  // graph reaches the front through z. The decoder is built on the first call.
  torch::Tensor penalty(const torch::Tensor& x, const torch::Tensor& z);
  // The decoder's normalised MSE (MSE / Var(x)) on the last batch, before its step.
  double last_nmse() const { return last_nmse_; }

 private:
  AdversaryOptions options_;
  std::uint64_t seed_;
  torch::nn::Sequential decoder_{nullptr};
  std::unique_ptr<torch::optim::Adam> opt_;
  double last_nmse_ = 0;
};

// The client's own terms of its loss on the cut z, as every trainer composes them:
// alpha(step) * dCor(x, z) (NoPeek) plus the decoder adversary's penalty when there is one
// (the adversary takes its step; nullptr: none). Undefined when neither is on. dcor_value,
// when given and alpha > 0, receives dCor(x, z).
torch::Tensor client_terms(const PrivacyOptions& p, std::int64_t step, const torch::Tensor& x, const torch::Tensor& z,
                           DecoderAdversary* adversary, double* dcor_value = nullptr);

}  // namespace cutlayer::privacy
