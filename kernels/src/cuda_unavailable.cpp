// Built when this build has no CUDA-enabled LibTorch: CUDA tensors cannot exist here, so
// these entry points only answer that the kernels are absent.
#include "cutlayer/error.h"
#include "cutlayer/kernels/cuda.h"

namespace cutlayer::kernels {

bool cuda_available() { return false; }

SparseTensor cuda_gaussiank(const torch::Tensor&, torch::Tensor&, bool, double, int, bool,
                            detail::ThresholdMemory&, CompressStats&) {
  throw Error("this build has no CUDA kernels (configure with a CUDA LibTorch and nvcc)");
}
SparseTensor cuda_topk(const torch::Tensor&, torch::Tensor&, bool, double, CompressStats&) {
  throw Error("this build has no CUDA kernels (configure with a CUDA LibTorch and nvcc)");
}

}  // namespace cutlayer::kernels
