// The compressors' CUDA path, for builds against a CUDA-enabled LibTorch (a GPU machine's
// PyTorch). Glue only: the work is in cuda/gaussiank.cu and torch::topk.
#include <ATen/cuda/CUDAContext.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "compress_common.h"
#include "cuda/gaussiank_cuda.h"
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
  const std::int64_t k = target_k(n, density);
  stats = {k, 0, 0, 0};
  const auto dev = torch::TensorOptions().device(grad.device());
  SparseTensor out;
  out.numel = n;
  if (n == 0) {
    out.indices = torch::empty({0}, dev.dtype(index_dtype_for(n)));
    out.values = torch::empty({0}, dev.dtype(torch::kFloat32));
    return out;
  }
  cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
  float* r = ef ? residual.data_ptr<float>() : nullptr;
  const float* g = grad.data_ptr<float>();
  float* x = ef ? r : const_cast<float*>(g);  // written only with error feedback

  // Warm: the first pass also bins and keeps every |x| above a margin under the threshold
  // the last call accepted (candidate indices are 32-bit, hence n <= 2^31), and the
  // selection is queued right behind it, decided on the device: one wait per call.
  const bool corrected = density < 1.0 && max_corrections > 0;
  const float bound = mem.bound();
  const bool binnable = corrected && n <= (std::int64_t{1} << 31);
  const bool warm = reuse && binnable && std::isfinite(bound) && bound > 0.f;
  const std::int64_t cap = binnable ? std::min(detail::candidate_cap(k), n) : 0;
  const std::int64_t room = binnable ? cuda::warm_room(k) : 0;
  const auto sort_bytes =
      binnable ? static_cast<std::int64_t>(cuda::warm_select_temp_bytes(k, n)) : std::int64_t{0};
  // One scratch allocation: the summary, the candidates, the picked, the sort's temp.
  const std::int64_t at_cand = aligned(sizeof(cuda::FirstPassSummary));
  const std::int64_t at_pick = at_cand + 2 * aligned(cap * 4);
  const std::int64_t at_temp = at_pick + 2 * aligned(room * 4);
  auto work = torch::empty({at_temp + sort_bytes}, dev.dtype(torch::kUInt8));
  char* base = static_cast<char*>(work.data_ptr());
  auto* dsum = reinterpret_cast<cuda::FirstPassSummary*>(base);
  auto* cand_idx = reinterpret_cast<unsigned int*>(base + at_cand);
  auto* cand_val = reinterpret_cast<float*>(base + at_cand + aligned(cap * 4));
  auto idx_out = torch::empty({room}, dev.dtype(torch::kInt32));
  auto val_out = torch::empty({room}, dev.dtype(torch::kFloat32));
  // The selection decided on the device, queued behind a pass that binned above `b`.
  auto queue_selection = [&](const cuda::ThresholdBins& b) {
    check(cuda::warm_select(dsum, b, k, cap, cand_idx, cand_val, n,
                            reinterpret_cast<unsigned int*>(base + at_pick),
                            reinterpret_cast<float*>(base + at_pick + aligned(room * 4)),
                            reinterpret_cast<unsigned int*>(idx_out.data_ptr<std::int32_t>()),
                            val_out.data_ptr<float>(), r, base + at_temp,
                            static_cast<std::size_t>(sort_bytes), stream),
          "gaussiank selection");
  };
  const cuda::ThresholdBins bins = detail::make_threshold_bins(bound);
  check(cuda::queue_first_pass(r, g, n, warm ? &bins : nullptr, cand_idx, cand_val, cap, dsum,
                               stream),
        "gaussiank first pass");
  if (warm) queue_selection(bins);
  cuda::FirstPassSummary sum;
  check(cuda::read_summary(dsum, &sum, stream), "gaussiank first pass");
  stats.passes = 1;
  if (sum.nonfinite != 0 || !std::isfinite(sum.sum) || !std::isfinite(sum.sumsq))
    refuse(residual, ef);
  const double mean = sum.sum / n;
  const double sd = std::sqrt(std::max(0.0, sum.sumsq / n - mean * mean));

  const bool searchable = corrected && sd > 0.0;
  double estimate = 0, t;
  if (density >= 1.0) {
    t = -1.0;  // everything
  } else if (sd == 0.0) {
    t = std::nextafter(static_cast<float>(std::fabs(mean)), 0.f);  // as on the CPU
  } else {
    estimate = detail::gaussiank_estimate(mean, sd, density);
    t = estimate * mem.factor;
  }
  detail::ThresholdSearch search(n, k, sd, mean);
  const auto above = static_cast<std::int64_t>(sum.above);
  std::int64_t count = 0;
  bool on_device = warm && sum.usable != 0;  // selected there, with the residual zeroed
  if (on_device) {
    t = sum.threshold;
    count = sum.chosen;
  } else {
    // Not selected by the first pass. When the band lies in its bins but the candidates
    // overflowed, the bins' exact counts give the threshold and a compaction pass selects.
    // Otherwise (cold, a jump out of the bins' reach): binned passes, each a read-only first
    // pass with bins at 0.9 x the search's next guess, decided the same way. The bins'
    // counts feed the search either way.
    bool decided = false;
    if (warm && searchable) {
      detail::observe_bins(bins, sum.hist, above, search);
      const detail::EdgePick p = detail::pick_edge(sum.hist, above, k);
      if (p.bin >= 0) {  // in the bins, but the candidates overflowed: compaction below
        t = bins.edge[p.bin];
        count = p.count;
        decided = true;
      }
    }
    const int attempts = searchable && cap > 0 ? cuda::device_corrections(max_corrections) : 0;
    for (int attempt = 0; attempt < attempts && !decided; ++attempt) {
      const auto b2 = static_cast<float>(0.9 * (search.observed() ? search.next() : t));
      if (!(b2 > 0.f) || !std::isfinite(b2)) break;
      const cuda::ThresholdBins bins2 = detail::make_threshold_bins(b2);
      check(cuda::queue_first_pass(x, nullptr, n, &bins2, cand_idx, cand_val, cap, dsum, stream),
            "gaussiank binned pass");
      queue_selection(bins2);
      cuda::FirstPassSummary s2;
      check(cuda::read_summary(dsum, &s2, stream), "gaussiank binned pass");
      ++stats.passes;
      const auto a2 = static_cast<std::int64_t>(s2.above);
      const detail::EdgePick p2 = detail::pick_edge(s2.hist, a2, k);
      if (s2.usable != 0) {
        t = s2.threshold;
        count = s2.chosen;
        on_device = decided = true;
      } else if (p2.bin >= 0) {
        t = bins2.edge[p2.bin];
        count = p2.count;
        decided = true;
      } else {
        detail::observe_bins(bins2, s2.hist, a2, search);
      }
    }
    if (!decided) {
      // Count passes: the last resort, and the only way for a threshold no bins can hold
      // (everything, a constant vector, or no corrections at all).
      const int max_passes = searchable ? cuda::device_corrections(max_corrections) + 1 : 1;
      check(cuda::search_passes(x, n, t, max_passes, search, &dsum->above, &stats.passes, stream),
            "gaussiank count");
      t = search.best_threshold();
      count = search.best_count();
    }
  }
  if (on_device) {
    out.indices = idx_out.narrow(0, 0, count);
    out.values = val_out.narrow(0, 0, count);
  } else {
    auto idx = torch::empty({count}, dev.dtype(torch::kInt64));
    auto val = torch::empty({count}, dev.dtype(torch::kFloat32));
    long long selected = 0;
    // The raw API takes long long*; int64_t is long on LP64 Linux (same width, other type).
    static_assert(sizeof(long long) == sizeof(std::int64_t));
    auto* idx_ptr = reinterpret_cast<long long*>(idx.data_ptr<std::int64_t>());
    check(cuda::select_compact(x, n, static_cast<float>(t), ef, idx_ptr, val.data_ptr<float>(),
                               count, &selected, stream),
          "gaussiank compaction");
    ++stats.passes;
    out.indices = idx.to(index_dtype_for(n));
    out.values = val;
  }
  stats.selected = count;
  stats.threshold = t;
  if (reuse) {
    if (searchable && estimate > 0) mem.factor = detail::learned_factor(search, t, count, estimate);
    mem.learn(t, !warm || above <= cap, above, k);
  }
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
