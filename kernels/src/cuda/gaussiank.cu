// gaussiank on the GPU (Shi et al. 2019): no sort of the vector, few streaming passes.
// The launches; the kernels themselves are in gaussiank_kernels.cuh.
//   first pass: r += g (error feedback), the moments (block sums, double atomics) and,
//     on a warm call, every |x| above a margin under the last threshold: counted into a
//     log-spaced histogram (exact counts at 128 thresholds) and kept as candidates.
//   a warm call then decides on the device: the histogram's edge nearest k in the band
//     (or, when the band falls inside one bin, that bin refined 128 times finer), then
//     selects from the candidates in index order without a sort (marked in a bitmap of n
//     bits, counted per chunk, written out with the values and zeroed in the residual):
//     one streaming pass, one wait.
//   otherwise (cold, a jump, too many candidates): count passes with the CPU's threshold
//     corrections, and a compaction pass (cub::DeviceSelect::If over the index range,
//     stable, then a gather that also zeroes the selected residual entries).
#include <thrust/iterator/counting_iterator.h>

#include <cmath>
#include <cstdint>
#include <cub/cub.cuh>

#include "gaussiank_cuda.h"
#include "gaussiank_kernels.cuh"

namespace cutlayer::kernels::cuda {
namespace {

using namespace device;  // the kernels and their constants (gaussiank_kernels.cuh)

int grid_for(long long n) {
  long long blocks = (n + kThreads - 1) / kThreads;
  if (blocks > 4096) blocks = 4096;  // grid-stride beyond this
  return static_cast<int>(blocks < 1 ? 1 : blocks);
}

struct AboveThreshold {
  const float* x;
  float t;
  __host__ __device__ bool operator()(long long i) const { return fabsf(x[i]) > t; }
};

// Blocks of the first pass: enough to fill every SM (queried once per process).
int first_pass_grid(long long n) {
  static const int resident = [] {
    int dev = 0, sms = 0, per_sm = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, first_pass_kernel<true>, kThreads,
                                                      0) != cudaSuccess) {
      cudaGetLastError();
      return 1024;
    }
    return sms * (per_sm > 0 ? per_sm : 1);
  }();
  const long long tiles = (n + kTile - 1) / kTile;
  return static_cast<int>(tiles < resident ? (tiles < 1 ? 1 : tiles) : resident);
}

bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

#define CUTLAYER_CUDA_TRY(expr)           \
  do {                                    \
    cudaError_t err_ = (expr);            \
    if (err_ != cudaSuccess) return err_; \
  } while (0)

}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

cudaError_t queue_first_pass(float* r, const float* g, long long n, const ThresholdBins* bins,
                             unsigned int* cand_idx, float* cand_val, long long cap,
                             FirstPassSummary* dev, cudaStream_t stream) {
  CUTLAYER_CUDA_TRY(cudaMemsetAsync(dev, 0, sizeof(FirstPassSummary), stream));
  if (n <= 0) return cudaSuccess;
  FirstPassArgs a{};
  a.x = r != nullptr ? r : g;
  a.r = r != nullptr && g != nullptr ? r : nullptr;  // error feedback: r += g
  a.g = a.r != nullptr ? g : nullptr;
  a.n = n;
  a.collect = bins != nullptr && n <= (1LL << 31);
  a.cap = cap > 0 ? static_cast<unsigned long long>(cap) : 0;
  a.cand_idx = cand_idx;
  a.cand_val = cand_val;
  a.sum = dev;
  if (a.collect) {
    a.bins = *bins;
  } else {
    for (float& e : a.bins.edge) e = INFINITY;
  }
  const bool vector = a.g != nullptr ? aligned16(a.r) && aligned16(a.g) : aligned16(a.x);
  if (vector) {
    first_pass_kernel<true><<<first_pass_grid(n), kThreads, 0, stream>>>(a);
  } else {
    first_pass_kernel<false><<<first_pass_grid(n), kThreads, 0, stream>>>(a);
  }
  return cudaGetLastError();
}

cudaError_t read_summary(const FirstPassSummary* dev, FirstPassSummary* out, cudaStream_t stream) {
  CUTLAYER_CUDA_TRY(cudaMemcpyAsync(out, dev, sizeof *out, cudaMemcpyDeviceToHost, stream));
  return cudaStreamSynchronize(stream);
}

cudaError_t first_pass(float* r, const float* g, long long n, const ThresholdBins* bins,
                       unsigned int* cand_idx, float* cand_val, long long cap,
                       FirstPassSummary* dev, FirstPassSummary* out, cudaStream_t stream) {
  *out = FirstPassSummary{};
  CUTLAYER_CUDA_TRY(queue_first_pass(r, g, n, bins, cand_idx, cand_val, cap, dev, stream));
  return read_summary(dev, out, stream);
}

cudaError_t search_passes(const float* x, long long n, double t, int max_passes,
                          ThresholdSearch& search, unsigned long long* dev_count, int* passes,
                          cudaStream_t stream) {
  if (search.observed()) t = search.next();
  for (int attempt = 0;; ++attempt) {
    unsigned long long count = 0;
    CUTLAYER_CUDA_TRY(cudaMemsetAsync(dev_count, 0, sizeof count, stream));
    if (aligned16(x)) {
      count_above_kernel<true>
          <<<grid_for(n / 4), kThreads, 0, stream>>>(x, n, static_cast<float>(t), dev_count);
    } else {
      count_above_kernel<false>
          <<<grid_for(n), kThreads, 0, stream>>>(x, n, static_cast<float>(t), dev_count);
    }
    CUTLAYER_CUDA_TRY(cudaGetLastError());
    CUTLAYER_CUDA_TRY(
        cudaMemcpyAsync(&count, dev_count, sizeof count, cudaMemcpyDeviceToHost, stream));
    CUTLAYER_CUDA_TRY(cudaStreamSynchronize(stream));
    ++*passes;
    search.observe(t, static_cast<std::int64_t>(count));
    if (search.in_band(static_cast<std::int64_t>(count)) || attempt + 1 >= max_passes)
      return cudaSuccess;
    t = search.next();
  }
}

cudaError_t gaussiank_threshold(float* r, const float* g, long long n, double density,
                                int max_corrections, double factor, ThresholdResult* out,
                                cudaStream_t stream) {
  *out = ThresholdResult{};
  if (n <= 0) return cudaSuccess;
  const float* x = r != nullptr ? r : g;
  FirstPassSummary* dev = nullptr;
  FirstPassSummary hs;
  CUTLAYER_CUDA_TRY(cudaMallocAsync(&dev, sizeof(FirstPassSummary), stream));
  cudaError_t err = first_pass(r, g, n, nullptr, nullptr, nullptr, 0, dev, &hs, stream);
  if (err != cudaSuccess) {
    cudaFreeAsync(dev, stream);
    return err;
  }
  out->passes = 1;
  out->factor = factor;
  if (hs.nonfinite || !std::isfinite(hs.sum) || !std::isfinite(hs.sumsq)) {
    out->finite = false;
    return cudaFreeAsync(dev, stream);
  }
  const double mean = hs.sum / n;
  const double sd = std::sqrt(std::fmax(0.0, hs.sumsq / n - mean * mean));
  long long k = static_cast<long long>(std::ceil(density * n));
  k = k < 1 ? 1 : (k > n ? n : k);
  const bool searchable = density < 1.0 && sd > 0.0 && max_corrections > 0;
  double estimate = 0, t;
  if (density >= 1.0) {
    t = -1.0;
  } else if (sd == 0.0) {
    t = std::nextafter(static_cast<float>(std::fabs(mean)), 0.f);  // constant x
  } else {
    estimate = detail::gaussiank_estimate(mean, sd, density);
    t = estimate * factor;
  }
  ThresholdSearch search(n, k, sd, mean);
  err = search_passes(x, n, t, searchable ? device_corrections(max_corrections) + 1 : 1, search,
                      &dev->above, &out->passes, stream);
  if (err != cudaSuccess) {
    cudaFreeAsync(dev, stream);
    return err;
  }
  t = search.best_threshold();
  out->count = static_cast<long long>(search.best_count());
  out->threshold = t;
  out->estimate = estimate;
  if (searchable && estimate > 0)
    out->factor = detail::learned_factor(search, t, out->count, estimate);
  out->mean = mean;
  out->stddev = sd;
  return cudaFreeAsync(dev, stream);
}

cudaError_t select_compact(float* x, long long n, float t, bool zero_selected, long long* out_idx,
                           float* out_val, long long capacity, long long* out_count,
                           cudaStream_t stream) {
  *out_count = 0;
  if (n <= 0) return cudaSuccess;
  thrust::counting_iterator<long long> first(0);
  void* temp = nullptr;
  size_t temp_bytes = 0;
  AboveThreshold pred{x, t};
  long long* d_count = nullptr;
  CUTLAYER_CUDA_TRY(
      cub::DeviceSelect::If(nullptr, temp_bytes, first, out_idx, d_count, n, pred, stream));
  const size_t count_at = (temp_bytes + 15) / 16 * 16;  // the counter, aligned, after CUB's
  CUTLAYER_CUDA_TRY(cudaMallocAsync(&temp, count_at + sizeof(long long), stream));
  d_count = reinterpret_cast<long long*>(static_cast<char*>(temp) + count_at);
  // DeviceSelect writes every selected index: `capacity` must hold the count (the caller
  // counted at the same t over the same x).
  CUTLAYER_CUDA_TRY(
      cub::DeviceSelect::If(temp, temp_bytes, first, out_idx, d_count, n, pred, stream));
  CUTLAYER_CUDA_TRY(
      cudaMemcpyAsync(out_count, d_count, sizeof(long long), cudaMemcpyDeviceToHost, stream));
  CUTLAYER_CUDA_TRY(cudaStreamSynchronize(stream));
  if (*out_count > capacity) {
    cudaFreeAsync(temp, stream);
    return cudaErrorInvalidValue;
  }
  if (*out_count > 0) {
    gather_and_zero<<<grid_for(*out_count), kThreads, 0, stream>>>(x, out_idx, out_val, *out_count,
                                                                   zero_selected);
    CUTLAYER_CUDA_TRY(cudaGetLastError());
  }
  return cudaFreeAsync(temp, stream);
}

long long warm_room(long long k) { return (4 * k) / 3; }

namespace {
long long bitmap_words(long long n) { return (n + 31) / 32; }
long long mark_chunks(long long n) {
  return (bitmap_words(n) + kWordsPerChunk - 1) / kWordsPerChunk;
}
}  // namespace

std::size_t warm_select_scratch_bytes(long long n) {
  return static_cast<std::size_t>(4 * (bitmap_words(n) + mark_chunks(n)));
}

cudaError_t warm_select(FirstPassSummary* dev, const ThresholdBins& bins, long long k,
                        long long cap, const unsigned int* cand_idx, const float* cand_val,
                        long long n, const float* x, float* r, unsigned int* out_idx,
                        float* out_val, void* scratch, std::size_t scratch_bytes,
                        cudaStream_t stream) {
  const long long room = warm_room(k);
  if (room <= 0 || cap <= 0 || n <= 0) return cudaSuccess;  // nothing is ever usable
  if (scratch_bytes < warm_select_scratch_bytes(n)) return cudaErrorInvalidValue;
  const long long words = bitmap_words(n), chunks = mark_chunks(n);
  auto* bitmap = static_cast<unsigned int*>(scratch);
  unsigned int* chunk_counts = bitmap + words;
  const auto ucap = static_cast<unsigned long long>(cap);
  CUTLAYER_CUDA_TRY(cudaMemsetAsync(bitmap, 0, words * sizeof(unsigned int), stream));
  // The phases, one launch each. (As one cooperative kernel with a grid barrier between
  // phases they were slower on an H200: 0.164 against 0.158 ms for the first pass and the
  // selection at 25M / 0.001; the barriers cost more than the launches.)
  decide_kernel<<<1, 32, 0, stream>>>(dev, k, ucap, bins);
  CUTLAYER_CUDA_TRY(cudaGetLastError());
  refine_kernel<<<grid_for(cap), kThreads, 0, stream>>>(dev, cand_val);
  CUTLAYER_CUDA_TRY(cudaGetLastError());
  refine_decide_kernel<<<1, 32, 0, stream>>>(dev, k);
  CUTLAYER_CUDA_TRY(cudaGetLastError());
  mark_kernel<<<grid_for(cap), kThreads, 0, stream>>>(dev, cand_idx, cand_val, bitmap);
  CUTLAYER_CUDA_TRY(cudaGetLastError());
  const auto grid = static_cast<unsigned int>(chunks);
  count_marks_kernel<<<grid, kThreads, 0, stream>>>(dev, bitmap, words, chunk_counts);
  CUTLAYER_CUDA_TRY(cudaGetLastError());
  extract_kernel<<<grid, kThreads, 0, stream>>>(dev, bitmap, words, chunk_counts, room, x, r,
                                                out_idx, out_val);
  return cudaGetLastError();
}

}  // namespace cutlayer::kernels::cuda
