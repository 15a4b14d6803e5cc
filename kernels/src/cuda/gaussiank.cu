// gaussiank on the GPU (Shi et al. 2019): no sort, a few streaming passes.
//   pass 1: r += g and the moments (block reduce, double atomics)
//   count passes: |x| > t with threshold corrections (the CPU's search; the threshold
//   starts from the factor the last call on this vector learned, so usually one)
//   compaction: cub::DeviceSelect::If over the index range (stable: ascending), then a
//   gather that also zeroes the selected residual entries (error feedback).
#include <thrust/iterator/counting_iterator.h>

#include <cmath>
#include <cub/cub.cuh>

#include "../normal_quantile.h"   // the same quantile as the CPU side
#include "../threshold_search.h"  // and the same corrections
#include "gaussiank_cuda.h"

namespace cutlayer::kernels::cuda {
namespace {

constexpr int kThreads = 256;

int grid_for(long long n) {
  long long blocks = (n + kThreads - 1) / kThreads;
  if (blocks > 4096) blocks = 4096;  // grid-stride beyond this
  return static_cast<int>(blocks < 1 ? 1 : blocks);
}

struct Moments {
  double sum;
  double sumsq;
  unsigned int nonfinite;
  unsigned long long count;
};

__global__ void accumulate_moments(float* __restrict__ r, const float* __restrict__ g,
                                   const float* __restrict__ x_in, long long n, Moments* m) {
  using Reduce = cub::BlockReduce<double, kThreads>;
  __shared__ typename Reduce::TempStorage tmp_s;
  __shared__ typename Reduce::TempStorage tmp_ss;
  double s = 0, ss = 0;
  bool bad = false;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x) {
    float v;
    if (g != nullptr) {
      v = r[i] + g[i];
      r[i] = v;
    } else {
      v = x_in[i];
    }
    bad |= !isfinite(v);
    s += v;
    ss += (double)v * v;
  }
  const double bs = Reduce(tmp_s).Sum(s);
  const double bss = Reduce(tmp_ss).Sum(ss);
  if (threadIdx.x == 0) {
    atomicAdd(&m->sum, bs);
    atomicAdd(&m->sumsq, bss);
  }
  if (bad) atomicOr(&m->nonfinite, 1u);
}

__global__ void count_above(const float* __restrict__ x, long long n, float t, Moments* m) {
  using Reduce = cub::BlockReduce<unsigned long long, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  unsigned long long c = 0;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x)
    c += fabsf(x[i]) > t;
  const unsigned long long bc = Reduce(tmp).Sum(c);
  if (threadIdx.x == 0) atomicAdd(&m->count, bc);
}

struct AboveThreshold {
  const float* x;
  float t;
  __host__ __device__ bool operator()(long long i) const { return fabsf(x[i]) > t; }
};

__global__ void gather_and_zero(float* __restrict__ x, const long long* __restrict__ idx,
                                float* __restrict__ val, long long count, bool zero) {
  for (long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x; j < count;
       j += (long long)gridDim.x * blockDim.x) {
    const long long i = idx[j];
    val[j] = x[i];
    if (zero) x[i] = 0.f;
  }
}

#define CUTLAYER_CUDA_TRY(expr)          \
  do {                                   \
    cudaError_t err_ = (expr);           \
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

cudaError_t gaussiank_threshold(float* r, const float* g, long long n, double density,
                                int max_corrections, double factor, ThresholdResult* out,
                                cudaStream_t stream) {
  *out = ThresholdResult{};
  if (n <= 0) return cudaSuccess;
  const float* x = r != nullptr ? r : g;
  Moments* dm = nullptr;
  Moments hm{};
  CUTLAYER_CUDA_TRY(cudaMallocAsync(&dm, sizeof(Moments), stream));
  CUTLAYER_CUDA_TRY(cudaMemsetAsync(dm, 0, sizeof(Moments), stream));
  accumulate_moments<<<grid_for(n), kThreads, 0, stream>>>(r, r != nullptr ? g : nullptr, x, n, dm);
  CUTLAYER_CUDA_TRY(cudaGetLastError());
  CUTLAYER_CUDA_TRY(cudaMemcpyAsync(&hm, dm, sizeof hm, cudaMemcpyDeviceToHost, stream));
  CUTLAYER_CUDA_TRY(cudaStreamSynchronize(stream));
  out->passes = 1;
  out->factor = factor;
  if (hm.nonfinite || !std::isfinite(hm.sum) || !std::isfinite(hm.sumsq)) {
    out->finite = false;
    return cudaFreeAsync(dm, stream);
  }
  const double mean = hm.sum / n;
  const double sd = std::sqrt(std::fmax(0.0, hm.sumsq / n - mean * mean));
  long long k = static_cast<long long>(std::ceil(density * n));
  k = k < 1 ? 1 : (k > n ? n : k);
  const bool searchable = density < 1.0 && sd > 0.0 && max_corrections > 0;
  const int corrections = max_corrections > 0 ? (max_corrections > 8 ? max_corrections : 8) : 0;
  double estimate = 0, t;
  if (density >= 1.0) {
    t = -1.0;
  } else if (sd == 0.0) {
    t = std::nextafter(static_cast<float>(std::fabs(mean)), 0.f);  // constant x
  } else {
    estimate = std::fabs(mean) + std::fabs(kernels::normal_quantile(density / 2)) * sd;
    t = estimate * factor;
  }
  kernels::detail::ThresholdSearch search(n, k, sd);
  for (int attempt = 0;; ++attempt) {
    CUTLAYER_CUDA_TRY(cudaMemsetAsync(&dm->count, 0, sizeof(unsigned long long), stream));
    count_above<<<grid_for(n), kThreads, 0, stream>>>(x, n, static_cast<float>(t), dm);
    CUTLAYER_CUDA_TRY(cudaGetLastError());
    CUTLAYER_CUDA_TRY(cudaMemcpyAsync(&hm.count, &dm->count, sizeof hm.count,
                                      cudaMemcpyDeviceToHost, stream));
    CUTLAYER_CUDA_TRY(cudaStreamSynchronize(stream));
    ++out->passes;
    search.observe(t, static_cast<std::int64_t>(hm.count));
    if (!searchable || search.in_band(static_cast<std::int64_t>(hm.count)) ||
        attempt >= corrections)
      break;
    t = search.next();
  }
  t = search.best_threshold();
  out->count = static_cast<long long>(search.best_count());
  out->threshold = t;
  out->estimate = estimate;
  if (searchable && estimate > 0) {
    const double f = search.gaussian_step(t, static_cast<double>(out->count)) / estimate;
    out->factor = f < 0.05 ? 0.05 : (f > 20.0 ? 20.0 : f);
  }
  out->mean = mean;
  out->stddev = sd;
  return cudaFreeAsync(dm, stream);
}

cudaError_t select_compact(float* x, long long n, float t, bool zero_selected, long long* out_idx,
                           float* out_val, long long capacity, long long* out_count,
                           cudaStream_t stream) {
  *out_count = 0;
  if (n <= 0) return cudaSuccess;
  thrust::counting_iterator<long long> first(0);
  long long* d_count = nullptr;
  void* temp = nullptr;
  size_t temp_bytes = 0;
  AboveThreshold pred{x, t};
  CUTLAYER_CUDA_TRY(cub::DeviceSelect::If(nullptr, temp_bytes, first, out_idx, d_count, n, pred, stream));
  CUTLAYER_CUDA_TRY(cudaMallocAsync(&temp, temp_bytes + sizeof(long long), stream));
  d_count = reinterpret_cast<long long*>(static_cast<char*>(temp) + temp_bytes);
  // A capacity too small for the count is the caller's error; DeviceSelect writes all.
  CUTLAYER_CUDA_TRY(cub::DeviceSelect::If(temp, temp_bytes, first, out_idx, d_count, n, pred, stream));
  CUTLAYER_CUDA_TRY(cudaMemcpyAsync(out_count, d_count, sizeof(long long), cudaMemcpyDeviceToHost, stream));
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

}  // namespace cutlayer::kernels::cuda
