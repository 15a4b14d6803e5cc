// Distance correlation between a batch of inputs X and their cut-layer activations Z
// (NoPeek, Vepakomma et al. 2020; Székely & Rizzo). Rows are samples; each row is
// flattened. Differentiable in LibTorch (the NoPeek loss adds alpha * dcor(X, Z)), stable
// (distances clamped before the square root; the diagonal held at exactly zero) and
// NaN-free for constant inputs (a zero distance variance gives 0).
#pragma once

#include <torch/types.h>

#include <cstdint>

namespace cutlayer::privacy {

// The biased (V-statistic) sample distance correlation, NoPeek's: dCov / sqrt(dVarX dVarZ)
// with double-centred distance matrices. In [0, 1]; it does not reach 0 for independent
// samples at finite n (see permutation_floor).
torch::Tensor dcor(const torch::Tensor& x, const torch::Tensor& z);

// The bias-corrected squared distance correlation (U-centred, Székely & Rizzo 2014):
// near 0 for independent samples, 1 for X = Z; may be slightly negative. Needs n > 3.
torch::Tensor dcor2_unbiased(const torch::Tensor& x, const torch::Tensor& z);

// The biased dCor of X against Z with its rows shuffled (seeded): what independent
// activations would score at this n and these dimensions.
torch::Tensor permutation_floor(const torch::Tensor& x, const torch::Tensor& z, std::uint64_t seed);

}  // namespace cutlayer::privacy
