// The CUDA gaussiank's host-side flow: which passes run, and what is decided after each.
// The device work sits behind `Ops`, so that one flow serves the glue (cuda_torch.cpp:
// kernels on the GPU) and CudaWarmPathModel (stream_ops_test.cpp: the same decisions done
// on the CPU), and the model measures this code, not a copy of it. Host C++ (LibTorch for
// ThresholdMemory), never compiled by nvcc.
//
// Ops, all waiting for their results:
//   FirstPassSummary first_pass(const ThresholdBins* bins)
//     r += g with error feedback, the moments and, with bins, every |x| above bins->edge[0]
//     binned and kept as a candidate (at most plan.cap), with the selection queued behind
//     it and decided on the device (warm_select). `usable` in the summary: selected.
//   FirstPassSummary binned_pass(const ThresholdBins& bins)
//     the same, read-only (no r += g), over the residual as it stands.
//   void count_passes(double t, int max_passes, ThresholdSearch& search, int& passes)
//     count passes from t (or from search.next() when it holds observations) until a count
//     is in the band or max_passes were made (search_passes).
//   void take_selection(std::int64_t count)
//     the output is the device's selection: `count` elements, already zeroed in r.
//   void compact(float t, std::int64_t count)
//     the output is every |x| > t (`count` of them), selected by a compaction pass that
//     zeroes them in r.
//   [[noreturn]] void refuse()
//     NaN/Inf in the gradient: reset the residual and throw.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "../compress_common.h"
#include "../threshold_bins.h"
#include "../threshold_search.h"
#include "first_pass.h"

namespace cutlayer::kernels::detail {

// What a call needs before any pass: the buffers it sizes depend on it.
struct GaussianKPlan {
  std::int64_t k = 0;
  bool corrected = false;  // a threshold is searched for (density < 1, corrections allowed)
  bool binnable = false;   // candidates and bins possible (candidate indices are 32-bit)
  bool warm = false;       // the first pass bins above the remembered bound
  std::int64_t cap = 0;    // candidates kept at most
  float bound = 0;         // the remembered bound (warm)
};

inline GaussianKPlan plan_gaussiank(std::int64_t n, double density, int max_corrections, bool reuse,
                                    const ThresholdMemory& mem) {
  GaussianKPlan p;
  p.k = target_k(n, density);
  p.corrected = density < 1.0 && max_corrections > 0;
  p.bound = mem.bound();
  p.binnable = p.corrected && n <= (std::int64_t{1} << 31);
  p.warm = reuse && p.binnable && std::isfinite(p.bound) && p.bound > 0.f;
  p.cap = p.binnable ? std::min(candidate_cap(p.k), n) : 0;
  return p;
}

template <class Ops>
void gaussiank_flow(Ops& ops, const GaussianKPlan& plan, std::int64_t n, double density,
                    int max_corrections, bool reuse, ThresholdMemory& mem, CompressStats& stats) {
  const std::int64_t k = plan.k;
  stats = {k, 0, 0, 0};
  // Warm: the first pass also bins and keeps every |x| above a margin under the threshold
  // the last call accepted, and the selection is queued right behind it: one wait per call.
  const ThresholdBins bins = make_threshold_bins(plan.bound);
  const cuda::FirstPassSummary sum = ops.first_pass(plan.warm ? &bins : nullptr);
  stats.passes = 1;
  if (sum.nonfinite != 0 || !std::isfinite(sum.sum) || !std::isfinite(sum.sumsq)) ops.refuse();
  const double mean = sum.sum / static_cast<double>(n);
  const double sd = std::sqrt(std::max(0.0, sum.sumsq / static_cast<double>(n) - mean * mean));

  const bool searchable = plan.corrected && sd > 0.0;
  double estimate = 0, t;
  if (density >= 1.0) {
    t = -1.0;  // everything
  } else if (sd == 0.0) {
    t = std::nextafter(static_cast<float>(std::fabs(mean)), 0.f);  // as on the CPU
  } else {
    estimate = gaussiank_estimate(mean, sd, density);
    t = estimate * mem.factor;
  }
  ThresholdSearch search(n, k, sd, mean);
  const auto above = static_cast<std::int64_t>(sum.above);
  std::int64_t count = 0;
  bool on_device = plan.warm && sum.usable != 0;  // selected there, with the residual zeroed
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
    if (plan.warm && searchable) {
      observe_bins(bins, sum.hist, above, search);
      const EdgePick p = pick_edge(sum.hist, above, k);
      if (p.bin >= 0) {  // in the bins, but the candidates overflowed: compaction below
        t = bins.edge[p.bin];
        count = p.count;
        decided = true;
      }
    }
    const int attempts = searchable && plan.cap > 0 ? cuda::device_corrections(max_corrections) : 0;
    for (int attempt = 0; attempt < attempts && !decided; ++attempt) {
      const auto b2 = static_cast<float>(0.9 * (search.observed() ? search.next() : t));
      if (!(b2 > 0.f) || !std::isfinite(b2)) break;
      const ThresholdBins bins2 = make_threshold_bins(b2);
      const cuda::FirstPassSummary s2 = ops.binned_pass(bins2);
      ++stats.passes;
      const auto a2 = static_cast<std::int64_t>(s2.above);
      const EdgePick p2 = pick_edge(s2.hist, a2, k);
      if (s2.usable != 0) {
        t = s2.threshold;
        count = s2.chosen;
        on_device = decided = true;
      } else if (p2.bin >= 0) {
        t = bins2.edge[p2.bin];
        count = p2.count;
        decided = true;
      } else {
        observe_bins(bins2, s2.hist, a2, search);
      }
    }
    if (!decided) {
      // Count passes: the last resort, and the only way for a threshold no bins can hold
      // (everything, a constant vector, or no corrections at all).
      const int max_passes = searchable ? cuda::device_corrections(max_corrections) + 1 : 1;
      ops.count_passes(t, max_passes, search, stats.passes);
      t = search.best_threshold();
      count = search.best_count();
    }
  }
  if (on_device) {
    ops.take_selection(count);
  } else {
    ops.compact(static_cast<float>(t), count);
    ++stats.passes;
  }
  stats.selected = count;
  stats.threshold = t;
  if (reuse) {
    if (searchable && estimate > 0) mem.factor = learned_factor(search, t, count, estimate);
    mem.learn(t, !plan.warm || above <= plan.cap, above, k);
  }
}

}  // namespace cutlayer::kernels::detail
