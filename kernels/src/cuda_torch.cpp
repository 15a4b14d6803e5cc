// The compressors' CUDA path, for builds against a CUDA-enabled LibTorch (a GPU machine's
// PyTorch). Glue only: the work is in cuda/gaussiank.cu and torch::topk.
#include <ATen/cuda/CUDAContext.h>
#include <torch/torch.h>

#include "cuda/gaussiank_cuda.h"
#include "cutlayer/error.h"
#include "cutlayer/kernels/cuda.h"

namespace cutlayer::kernels {
namespace {
void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string(what) + ": " + cudaGetErrorString(e));
}
[[noreturn]] void refuse(torch::Tensor& residual, bool ef) {
  if (ef) residual.zero_();
  throw Error("compress: the gradient holds NaN or Inf; step refused (error-feedback residual reset)");
}
}  // namespace

bool cuda_available() { return cuda::device_count() > 0 && torch::cuda::is_available(); }

SparseTensor cuda_gaussiank(const torch::Tensor& grad, torch::Tensor& residual, bool ef,
                            double density, int max_corrections, double& factor,
                            CompressStats& stats) {
  const std::int64_t n = grad.numel();
  cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
  float* r = ef ? residual.data_ptr<float>() : nullptr;
  const float* g = grad.data_ptr<float>();
  cuda::ThresholdResult tr;
  check(cuda::gaussiank_threshold(r, g, n, density, max_corrections, factor, &tr, stream),
        "gaussiank");
  if (!tr.finite) refuse(residual, ef);
  factor = tr.factor;
  const auto dev = torch::TensorOptions().device(grad.device());
  auto idx = torch::empty({tr.count}, dev.dtype(torch::kInt64));
  auto val = torch::empty({tr.count}, dev.dtype(torch::kFloat32));
  long long count = 0;
  float* x = ef ? r : const_cast<float*>(g);
  // The raw API takes long long*; int64_t is long on LP64 Linux (same width, other type).
  static_assert(sizeof(long long) == sizeof(std::int64_t));
  auto* idx_ptr = reinterpret_cast<long long*>(idx.data_ptr<std::int64_t>());
  check(cuda::select_compact(x, n, static_cast<float>(tr.threshold), ef, idx_ptr,
                             val.data_ptr<float>(), tr.count, &count, stream),
        "gaussiank compaction");
  stats = {target_k(n, density), count, tr.passes + 1, tr.threshold};
  SparseTensor out;
  out.numel = n;
  out.indices = idx.to(index_dtype_for(n));
  out.values = val;
  return out;
}

SparseTensor cuda_topk(const torch::Tensor& grad, torch::Tensor& residual, bool ef, double density,
                       CompressStats& stats) {
  const std::int64_t n = grad.numel();
  const std::int64_t k = target_k(n, density);
  if (ef) residual.add_(grad);
  const torch::Tensor x = ef ? residual : grad;
  auto top = std::get<1>(x.abs().topk(k, 0, true, false));
  top = std::get<0>(top.sort());
  SparseTensor out;
  out.numel = n;
  out.values = x.index_select(0, top);
  if (!torch::isfinite(out.values).all().item<bool>() || !torch::isfinite(x).all().item<bool>())
    refuse(residual, ef);
  if (ef) residual.index_fill_(0, top, 0.f);
  out.indices = top.to(index_dtype_for(n));
  stats = {k, k, 2, 0};
  return out;
}

}  // namespace cutlayer::kernels
