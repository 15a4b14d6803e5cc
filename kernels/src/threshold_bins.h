// Internal: a log-spaced histogram of |x| above a bound. The CUDA gaussiank fills it in its
// first pass (error feedback, moments, candidates), so that a warm call has the exact
// counts at 128 thresholds with the moments and picks its threshold without a counting
// pass. Plain C++ for host and device: shared by gaussiank.cu, its glue and the CPU tests.
#pragma once

#include <cmath>
#include <cstdint>

#include "threshold_search.h"

#ifdef __CUDACC__
#define CUTLAYER_HOST_DEVICE __host__ __device__
#else
#define CUTLAYER_HOST_DEVICE
#endif

namespace cutlayer::kernels::detail {

// Edge j = bound * 2^(j/32): the bins span x16 above the bound, 2.2% apart. On a Gaussian
// tail near 3 sigma one bin is a count step of about 8%, so the band [2k/3, 4k/3] holds
// several edges; on heavier tails the step is smaller.
constexpr int kThresholdBins = 128;
constexpr int kBinsPerOctave = 32;

struct ThresholdBins {
  float edge[kThresholdBins];  // ascending (non-decreasing where they overflow to inf)
};

inline ThresholdBins make_threshold_bins(float bound) {
  ThresholdBins b{};
  for (int j = 0; j < kThresholdBins; ++j)
    b.edge[j] = static_cast<float>(static_cast<double>(bound) *
                                   std::exp2(static_cast<double>(j) / kBinsPerOctave));
  return b;
}

// The bin of a = |x|: the largest j with a > edge[j]; -1 when a <= edge[0] (or NaN).
// Element counts above edge[j] are then the histogram's sums over bins j and up, exactly
// as a count pass at that threshold (the same float comparison) would give them.
CUTLAYER_HOST_DEVICE inline int threshold_bin(const float* edge, float a) {
  int lo = 0, hi = kThresholdBins;  // the number of edges under a
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (a > edge[mid]) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo - 1;
}

// Of the edges whose count (from the histogram) lies in the band [2k/3, 4k/3], the one
// nearest k by ratio (ties to the higher edge). `bin` -1: none is, or the histogram does not
// add up to `above`. Runs on the device too (one thread, no logarithms).
struct EdgePick {
  int bin = -1;
  std::int64_t count = 0;
};
// `base`: elements above the top bin (0 for the bins above a bound; for the sub-bins of
// one bin, the count above that bin).
CUTLAYER_HOST_DEVICE inline EdgePick pick_edge(const unsigned int* hist, std::int64_t above,
                                               std::int64_t k, std::int64_t base = 0) {
  EdgePick best;
  const double lo = 2.0 * static_cast<double>(k) / 3.0, hi = 4.0 * static_cast<double>(k) / 3.0;
  const double kk = static_cast<double>(k) + 1.0;
  double best_ratio = 0;
  std::int64_t c = base;
  for (int j = kThresholdBins - 1; j >= 0; --j) {
    c += hist[j];
    const double cd = static_cast<double>(c);
    if (cd >= lo && cd <= hi) {
      const double ratio = cd + 1.0 > kk ? (cd + 1.0) / kk : kk / (cd + 1.0);
      if (best.bin < 0 || ratio < best_ratio) {
        best.bin = j;
        best.count = c;
        best_ratio = ratio;
      }
    }
  }
  if (c != above) return EdgePick{};
  return best;
}

// When no edge is in the band because the count falls across it inside one bin (a cliff:
// error-feedback residuals pile up right under the last threshold), that bin: the count
// above its lower edge is over 4k/3 and above its upper edge under 2k/3. -1 otherwise (the
// band under the bound, over the top edge, or inside the open top bin).
CUTLAYER_HOST_DEVICE inline int band_crossing(const unsigned int* hist, std::int64_t above,
                                              std::int64_t k) {
  const double lo = 2.0 * static_cast<double>(k) / 3.0, hi = 4.0 * static_cast<double>(k) / 3.0;
  std::int64_t upper = hist[kThresholdBins - 1];  // the count above edge j + 1
  for (int j = kThresholdBins - 2; j >= 0; --j) {
    const std::int64_t lower = upper + hist[j];
    if (static_cast<double>(lower) > hi) {
      return static_cast<double>(upper) < lo && lower <= above ? j : -1;
    }
    upper = lower;
  }
  return -1;
}

// The sub-edges of bin [lo, hi): lo + (hi - lo) s / 128, s = 0..127 (non-decreasing floats,
// the same on host and device). Binned by threshold_bin like the edges; the count above
// sub-edge s is the count above hi plus the sub-bins from s up (pick_edge with that base).
CUTLAYER_HOST_DEVICE inline void make_sub_edges(float lo, float hi, float* sub) {
  for (int s = 0; s < kThresholdBins; ++s)
    sub[s] = lo + (hi - lo) * (static_cast<float>(s) / static_cast<float>(kThresholdBins));
}

// Feeds the count above every edge into `search` (observations that cost no pass).
// Returns false when the histogram does not add up to `above` (then it is not used).
inline bool observe_bins(const ThresholdBins& b, const unsigned int* hist, std::int64_t above,
                         ThresholdSearch& search) {
  std::int64_t c = 0;
  for (int j = kThresholdBins - 1; j >= 0; --j) c += hist[j];
  if (c != above) return false;
  c = 0;
  for (int j = kThresholdBins - 1; j >= 0; --j) {
    c += hist[j];
    search.observe(b.edge[j], c);
  }
  return true;
}

}  // namespace cutlayer::kernels::detail
