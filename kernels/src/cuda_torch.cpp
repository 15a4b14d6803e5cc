// The compressors' CUDA path, for builds against a CUDA-enabled LibTorch (a GPU machine's
// PyTorch). Glue only: the work is in cuda/gaussiank.cu and torch::topk.
#include <ATen/cuda/CUDAContext.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "compress_common.h"
#include "cuda/gaussiank_cuda.h"
#include "cuda/gaussiank_flow.h"
#include "cutlayer/error.h"
#include "cutlayer/kernels/cuda.h"

namespace cutlayer::kernels {
namespace {
void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string(what) + ": " + cudaGetErrorString(e));
}
// Device scratch is carved out of one allocation at 256-byte boundaries.
std::int64_t aligned(std::int64_t bytes) { return (bytes + 255) / 256 * 256; }
[[noreturn]] void refuse(torch::Tensor& residual, bool ef) {
  if (ef) residual.zero_();
  throw Error("compress: the gradient holds NaN or Inf; step refused (error-feedback residual reset)");
}
}  // namespace

bool cuda_available() { return cuda::device_count() > 0 && torch::cuda::is_available(); }

SparseTensor cuda_gaussiank(const torch::Tensor& grad, torch::Tensor& residual, bool ef,
                            double density, int max_corrections, bool reuse,
                            detail::ThresholdMemory& mem, CompressStats& stats) {
  const std::int64_t n = grad.numel();
  const auto dev = torch::TensorOptions().device(grad.device());
  SparseTensor out;
  out.numel = n;
  if (n == 0) {
    stats = {target_k(n, density), 0, 0, 0};
    out.indices = torch::empty({0}, dev.dtype(index_dtype_for(n)));
    out.values = torch::empty({0}, dev.dtype(torch::kFloat32));
    return out;
  }
  cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
  float* r = ef ? residual.data_ptr<float>() : nullptr;
  const float* g = grad.data_ptr<float>();
  float* x = ef ? r : const_cast<float*>(g);  // written only with error feedback

  // The passes and decisions are gaussiank_flow's (shared with CudaWarmPathModel); here,
  // the buffers and the launches behind its ops.
  const detail::GaussianKPlan plan =
      detail::plan_gaussiank(n, density, max_corrections, reuse, mem);
  const std::int64_t k = plan.k, cap = plan.cap;
  const std::int64_t room = plan.binnable ? cuda::warm_room(k) : 0;
  const auto scratch_bytes = plan.binnable
                                 ? static_cast<std::int64_t>(cuda::warm_select_scratch_bytes(n))
                                 : std::int64_t{0};
  // One scratch allocation: the summary, the candidates, the selection's bitmap.
  const std::int64_t at_cand = aligned(sizeof(cuda::FirstPassSummary));
  const std::int64_t at_scratch = at_cand + 2 * aligned(cap * 4);
  auto work = torch::empty({at_scratch + scratch_bytes}, dev.dtype(torch::kUInt8));
  char* base = static_cast<char*>(work.data_ptr());
  auto* dsum = reinterpret_cast<cuda::FirstPassSummary*>(base);
  auto* cand_idx = reinterpret_cast<unsigned int*>(base + at_cand);
  auto* cand_val = reinterpret_cast<float*>(base + at_cand + aligned(cap * 4));
  auto idx_out = torch::empty({room}, dev.dtype(torch::kInt32));
  auto val_out = torch::empty({room}, dev.dtype(torch::kFloat32));

  struct DeviceOps {
    const std::int64_t n, k, cap, room, scratch_bytes;
    float *r, *x;
    const float* g;
    bool ef;
    char* base;
    std::int64_t at_scratch;
    cuda::FirstPassSummary* dsum;
    unsigned int* cand_idx;
    float* cand_val;
    torch::Tensor &idx_out, &val_out, &residual;
    torch::TensorOptions dev;
    cudaStream_t stream;
    SparseTensor& out;

    // The selection decided on the device, queued behind a pass that binned above `b`.
    void queue_selection(const cuda::ThresholdBins& b) {
      check(cuda::warm_select(dsum, b, k, cap, cand_idx, cand_val, n, x, r,
                              reinterpret_cast<unsigned int*>(idx_out.data_ptr<std::int32_t>()),
                              val_out.data_ptr<float>(), base + at_scratch,
                              static_cast<std::size_t>(scratch_bytes), stream),
            "gaussiank selection");
    }
    cuda::FirstPassSummary wait(const char* what) {
      cuda::FirstPassSummary s;
      check(cuda::read_summary(dsum, &s, stream), what);
      return s;
    }
    cuda::FirstPassSummary first_pass(const cuda::ThresholdBins* bins) {
      check(cuda::queue_first_pass(r, g, n, bins, cand_idx, cand_val, cap, dsum, stream),
            "gaussiank first pass");
      if (bins != nullptr) queue_selection(*bins);
      return wait("gaussiank first pass");
    }
    cuda::FirstPassSummary binned_pass(const cuda::ThresholdBins& bins) {
      check(cuda::queue_first_pass(x, nullptr, n, &bins, cand_idx, cand_val, cap, dsum, stream),
            "gaussiank binned pass");
      queue_selection(bins);
      return wait("gaussiank binned pass");
    }
    void count_passes(double t, int max_passes, detail::ThresholdSearch& search, int& passes) {
      check(cuda::search_passes(x, n, t, max_passes, search, &dsum->above, &passes, stream),
            "gaussiank count");
    }
    void take_selection(std::int64_t count) {
      out.indices = idx_out.narrow(0, 0, count);
      out.values = val_out.narrow(0, 0, count);
    }
    void compact(float t, std::int64_t count) {
      auto idx = torch::empty({count}, dev.dtype(torch::kInt64));
      auto val = torch::empty({count}, dev.dtype(torch::kFloat32));
      long long selected = 0;
      // The raw API takes long long*; int64_t is long on LP64 Linux (same width, other type).
      static_assert(sizeof(long long) == sizeof(std::int64_t));
      auto* idx_ptr = reinterpret_cast<long long*>(idx.data_ptr<std::int64_t>());
      check(cuda::select_compact(x, n, t, ef, idx_ptr, val.data_ptr<float>(), count, &selected,
                                 stream),
            "gaussiank compaction");
      out.indices = idx.to(index_dtype_for(n));
      out.values = val;
    }
    [[noreturn]] void refuse() { cutlayer::kernels::refuse(residual, ef); }
  };
  DeviceOps ops{n,        k,       cap,     room,     scratch_bytes, r,   x,      g,
                ef,       base,    at_scratch, dsum, cand_idx,  cand_val, idx_out, val_out,
                residual, dev,     stream,  out};
  detail::gaussiank_flow(ops, plan, n, density, max_corrections, reuse, mem, stats);
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
