// Raw CUDA entry points of the gaussiank compressor, on device pointers (no LibTorch
// types, so this compiles with nvcc alone). All work is queued on `stream`; the calls that
// return a count wait for it.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "../threshold_bins.h"
#include "../threshold_search.h"
#include "first_pass.h"

namespace cutlayer::kernels::cuda {

using detail::ThresholdBins;
using detail::ThresholdSearch;

// The first pass: r += g when `g` is non-null (error feedback) and the moments of x (= r,
// or g when r is null). With `bins`, every |x| > bins->edge[0] is also counted and binned
// (all of them, so the counts at every edge are exact) and the first `cap` of them, in no
// particular order, kept as candidates (index, value). `dev` is a device FirstPassSummary
// that this zeroes; the summary comes back in *out (the call waits for it). Candidate
// indices are 32-bit: with bins, n must be <= 2^31.
cudaError_t first_pass(float* r, const float* g, long long n, const ThresholdBins* bins,
                       unsigned int* cand_idx, float* cand_val, long long cap,
                       FirstPassSummary* dev, FirstPassSummary* out, cudaStream_t stream);
// The same in two halves: queued only, and the wait for the summary.
cudaError_t queue_first_pass(float* r, const float* g, long long n, const ThresholdBins* bins,
                             unsigned int* cand_idx, float* cand_val, long long cap,
                             FirstPassSummary* dev, cudaStream_t stream);
cudaError_t read_summary(const FirstPassSummary* dev, FirstPassSummary* out, cudaStream_t stream);

// The count passes of the threshold search, read-only over x: from the search's next
// threshold when it holds observations (or from `t` when it holds none), until the count
// is in the band or `max_passes` passes were made (at least one). `dev_count`: device
// scratch for one counter. *passes is incremented per pass.
cudaError_t search_passes(const float* x, long long n, double t, int max_passes,
                          ThresholdSearch& search, unsigned long long* dev_count, int* passes,
                          cudaStream_t stream);

// Pass 1 and the search, as one call (the cold path and the tests): r += g (g non-null),
// moments, t = (|mu| + |Phi^-1(density/2)| sigma) * factor, and count passes corrected as
// on the CPU until the count is in [2k/3, 4k/3]: up to max(max_corrections, 16)
// corrections, as a count pass costs microseconds here; max_corrections 0: none.
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
cudaError_t gaussiank_threshold(float* r, const float* g, long long n, double density,
                                int max_corrections, double factor, ThresholdResult* out,
                                cudaStream_t stream);

// Writes the ascending indices and values of |x| > t into out_idx/out_val (room for
// `capacity`, which must be >= the count) and, when `zero_selected`, zeroes them in x.
// One read-only pass; waits for the count.
cudaError_t select_compact(float* x, long long n, float t, bool zero_selected,
                           long long* out_idx, float* out_val, long long capacity,
                           long long* out_count, cudaStream_t stream);

// A warm call's selection, queued right behind queue_first_pass so that the device never
// waits for the host: it decides on the device (the histogram's edge nearest k in the
// band; usable only when every element above the bound was kept, `cap` of them at most),
// marks the candidates above it in a bitmap of n bits and writes them out in index order
// (no sort): indices to out_idx, values read from x to out_val, and, when r is non-null,
// zeroes them in r (x and r may be the same vector). When the decision is not usable
// nothing is selected or zeroed. Room: out_idx/out_val hold warm_room(k) entries; scratch
// holds warm_select_scratch_bytes(n) bytes. read_summary then tells usable, chosen (how
// many of out_idx/out_val are the selection) and threshold.
long long warm_room(long long k);
std::size_t warm_select_scratch_bytes(long long n);
cudaError_t warm_select(FirstPassSummary* dev, const ThresholdBins& bins, long long k,
                        long long cap, const unsigned int* cand_idx, const float* cand_val,
                        long long n, const float* x, float* r, unsigned int* out_idx,
                        float* out_val, void* scratch, std::size_t scratch_bytes,
                        cudaStream_t stream);

// Number of CUDA devices (0 when none or no driver).
int device_count();

}  // namespace cutlayer::kernels::cuda
