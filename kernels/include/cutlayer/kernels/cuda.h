// The CUDA side of the compressors. Built when CUDA is found and LibTorch has CUDA;
// otherwise these report that they are not built (CPU tensors never reach them).
#pragma once

#include <torch/types.h>

#include "cutlayer/kernels/compressor.h"

namespace cutlayer::kernels {

// True when this build carries the CUDA kernels and a CUDA device is present.
bool cuda_available();

namespace detail {
struct ThresholdMemory;
}

// gaussiank + error feedback + compaction on a CUDA tensor (CUB, no sort of the vector).
// `memory`: what the last call on this vector learned (the threshold it accepted, the
// model's correction factor, the candidates' margin), updated when `reuse` is on. A warm
// call is one streaming pass: its threshold comes off a histogram of the candidates.
SparseTensor cuda_gaussiank(const torch::Tensor& grad, torch::Tensor& residual, bool ef,
                            double density, int max_corrections, bool reuse,
                            detail::ThresholdMemory& memory, CompressStats& stats);
// Exact top-k baseline on a CUDA tensor (torch::topk + the same error feedback).
SparseTensor cuda_topk(const torch::Tensor& grad, torch::Tensor& residual, bool ef,
                       double density, CompressStats& stats);

}  // namespace cutlayer::kernels
