// What the CUDA gaussiank's first pass leaves in device memory, and how many corrections
// the device may spend. Plain C++ (no CUDA headers): shared by the launches, the kernels,
// the host flow (gaussiank_flow.h) and the CPU tests that emulate them.
#pragma once

#include "../threshold_bins.h"

namespace cutlayer::kernels::cuda {

// What the first pass leaves (first_pass copies it back), and warm_select's decision.
struct FirstPassSummary {
  double sum = 0;
  double sumsq = 0;
  unsigned long long above = 0;  // |x| > bins.edge[0]: all of them (only `cap` are kept)
  unsigned int nonfinite = 0;    // non-zero: NaN/Inf seen
  unsigned int hist[detail::kThresholdBins] = {};
  // warm_select's decision: `usable` when an edge's count is in the band and every
  // element above the bound was kept; then `chosen` elements above `threshold` = edge `bin`.
  unsigned int usable = 0;
  unsigned int chosen = 0;
  int bin = -1;
  float threshold = 0;
  // When the band falls inside one bin (band_crossing): that bin, binned again 128 times
  // finer over the candidates in it.
  unsigned int refine = 0;
  int refine_bin = -1;
  float refine_hi = 0;  // the refined bin's upper edge
  float sub_edge[detail::kThresholdBins] = {};
  unsigned int sub_hist[detail::kThresholdBins] = {};
};

// Corrections allowed on the device: a count pass costs microseconds, so at least 16 (the
// step after a x0.05 jump takes 6-7 count passes in CudaWarmPathModel's streams, and up to
// 8 on the tails of ThresholdSearch.ConvergesOnAnyTailFromAnyStart).
inline int device_corrections(int max_corrections) {
  return max_corrections > 0 ? (max_corrections > 16 ? max_corrections : 16) : 0;
}

}  // namespace cutlayer::kernels::cuda
