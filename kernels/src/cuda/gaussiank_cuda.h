// Raw CUDA entry points of the gaussiank compressor, on device pointers (no LibTorch
// types, so this compiles with nvcc alone). All work is queued on `stream`.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace cutlayer::kernels::cuda {

struct ThresholdResult {
  long long count = 0;   // elements with |x| > threshold
  double threshold = 0;
  double mean = 0;
  double stddev = 0;
  int passes = 0;        // streaming passes so far
  bool finite = true;    // false: NaN/Inf seen (nothing selected)
};

// Pass 1: r += g when `g` is non-null (error feedback), and the moments of x (= r, or g
// when r is null); then t = mu + |Phi^-1(density/2)| sigma and count passes, correcting
// t (x0.5 / x1.5) up to `max_corrections` times until the count is in [2k/3, 4k/3].
cudaError_t gaussiank_threshold(float* r, const float* g, long long n, double density,
                                int max_corrections, ThresholdResult* out, cudaStream_t stream);

// Writes the ascending indices and values of |x| > t into out_idx/out_val (room for
// `capacity`, which must be >= the count) and, when `zero_selected`, zeroes them in x.
cudaError_t select_compact(float* x, long long n, float t, bool zero_selected,
                           long long* out_idx, float* out_val, long long capacity,
                           long long* out_count, cudaStream_t stream);

// Number of CUDA devices (0 when none or no driver).
int device_count();

}  // namespace cutlayer::kernels::cuda
