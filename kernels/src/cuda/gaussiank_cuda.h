// Raw CUDA entry points of the gaussiank compressor, on device pointers (no LibTorch
// types, so this compiles with nvcc alone). All work is queued on `stream`.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace cutlayer::kernels::cuda {

struct ThresholdResult {
  long long count = 0;   // elements with |x| > threshold
  double threshold = 0;
  double estimate = 0;  // the model's threshold, before the factor
  double factor = 1;    // for the next call on this vector: where the count was k / estimate
  double mean = 0;
  double stddev = 0;
  int passes = 0;        // streaming passes so far
  bool finite = true;    // false: NaN/Inf seen (nothing selected)
};

// Pass 1: r += g when `g` is non-null (error feedback), and the moments of x (= r, or g
// when r is null); then t = (|mu| + |Phi^-1(density/2)| sigma) * factor (factor: what the
// last call on this vector learned, 1 for none) and count passes, corrected as on the CPU
// (threshold_search.h) until the count is in [2k/3, 4k/3]: up to max(max_corrections, 8)
// corrections, as a count pass costs microseconds here; max_corrections 0: none.
cudaError_t gaussiank_threshold(float* r, const float* g, long long n, double density,
                                int max_corrections, double factor, ThresholdResult* out,
                                cudaStream_t stream);

// Writes the ascending indices and values of |x| > t into out_idx/out_val (room for
// `capacity`, which must be >= the count) and, when `zero_selected`, zeroes them in x.
cudaError_t select_compact(float* x, long long n, float t, bool zero_selected,
                           long long* out_idx, float* out_val, long long capacity,
                           long long* out_count, cudaStream_t stream);

// Number of CUDA devices (0 when none or no driver).
int device_count();

}  // namespace cutlayer::kernels::cuda
