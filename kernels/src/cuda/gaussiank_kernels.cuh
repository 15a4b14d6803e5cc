// The gaussiank kernels' device code, kept apart from their launches so that the CPU tests
// can run it too: included by gaussiank.cu (nvcc, the real built-ins) and by
// tests/unit/kernels/cuda_emu_test.cpp (g++, with cuda_emu.h's emulated threads, warps
// and blocks). Plain CUDA C++: no CUB, no runtime calls.
#pragma once

#include "../threshold_bins.h"
#include "first_pass.h"

namespace cutlayer::kernels::cuda::device {

using detail::ThresholdBins;

constexpr int kThreads = 256;
constexpr int kPerThread = 4;  // one float4 per thread per tile
constexpr int kTile = kThreads * kPerThread;
constexpr unsigned kFullMask = 0xffffffffu;

// The sum of v over the block (every thread calls it); the total is valid in thread 0.
// `warp_sums`: shared scratch for one value per warp.
template <class T>
__device__ T block_sum(T v, T* warp_sums) {
  for (int d = 16; d > 0; d >>= 1) v += __shfl_down_sync(kFullMask, v, d);
  if ((threadIdx.x & 31u) == 0) warp_sums[threadIdx.x >> 5] = v;
  __syncthreads();
  T total = 0;
  if (threadIdx.x == 0)
    for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
  __syncthreads();  // the scratch may be reused next
  return total;
}

struct FirstPassArgs {
  float* r;        // residual (error feedback), or null
  const float* g;  // gradient, or null (read x only)
  const float* x;  // what is read when g is null
  long long n;
  bool collect;  // candidates and histogram
  unsigned long long cap;
  unsigned int* cand_idx;
  float* cand_val;
  FirstPassSummary* sum;
  ThresholdBins bins;  // by value: 512 bytes of kernel parameters
};

// Every thread of the block runs every tile (the loop bound is the block's), so warp-wide
// votes and shuffles see all 32 lanes.
template <bool kVector>
__global__ void __launch_bounds__(kThreads) first_pass_kernel(const FirstPassArgs a) {
  __shared__ double warp_sums[kThreads / 32];
  __shared__ float edge[detail::kThresholdBins];
  __shared__ unsigned int hist[detail::kThresholdBins];
  for (int j = threadIdx.x; j < detail::kThresholdBins; j += kThreads) {
    edge[j] = a.bins.edge[j];
    hist[j] = 0;
  }
  __syncthreads();
  const float bound = edge[0];
  const unsigned lane = threadIdx.x & 31u;
  double s = 0, ss = 0;
  bool bad = false;
  for (long long base = static_cast<long long>(blockIdx.x) * kTile; base < a.n;
       base += static_cast<long long>(gridDim.x) * kTile) {
    const long long i0 = base + static_cast<long long>(threadIdx.x) * kPerThread;
    float v[kPerThread];
    bool in[kPerThread];
    if (kVector && i0 + kPerThread <= a.n) {
      float4 x4;
      if (a.g != nullptr) {
        const float4 r4 = *reinterpret_cast<const float4*>(a.r + i0);
        const float4 g4 = *reinterpret_cast<const float4*>(a.g + i0);
        x4 = make_float4(r4.x + g4.x, r4.y + g4.y, r4.z + g4.z, r4.w + g4.w);
        *reinterpret_cast<float4*>(a.r + i0) = x4;
      } else {
        x4 = *reinterpret_cast<const float4*>(a.x + i0);
      }
      v[0] = x4.x;
      v[1] = x4.y;
      v[2] = x4.z;
      v[3] = x4.w;
#pragma unroll
      for (int q = 0; q < kPerThread; ++q) in[q] = true;
    } else {
#pragma unroll
      for (int q = 0; q < kPerThread; ++q) {
        const long long i = i0 + q;
        in[q] = i < a.n;
        v[q] = 0.f;
        if (in[q]) {
          if (a.g != nullptr) {
            v[q] = a.r[i] + a.g[i];
            a.r[i] = v[q];
          } else {
            v[q] = a.x[i];
          }
        }
      }
    }
    unsigned mine = 0;  // bit q: element q is a candidate
#pragma unroll
    for (int q = 0; q < kPerThread; ++q) {
      if (in[q]) {
        bad |= !isfinite(v[q]);
        s += v[q];
        ss += static_cast<double>(v[q]) * v[q];
        if (fabsf(v[q]) > bound) mine |= 1u << q;
      }
    }
    if (a.collect && __any_sync(kFullMask, mine != 0)) {
      // Warp-aggregated append: one atomic per warp and tile.
      const unsigned c = __popc(mine);
      unsigned incl = c;
#pragma unroll
      for (int d = 1; d < 32; d <<= 1) {
        const unsigned up = __shfl_up_sync(kFullMask, incl, d);
        if (lane >= static_cast<unsigned>(d)) incl += up;
      }
      const unsigned total = __shfl_sync(kFullMask, incl, 31);
      unsigned long long first = 0;
      if (lane == 31) first = atomicAdd(&a.sum->above, static_cast<unsigned long long>(total));
      first = __shfl_sync(kFullMask, first, 31);
      unsigned long long pos = first + (incl - c);
#pragma unroll
      for (int q = 0; q < kPerThread; ++q) {
        if (mine & (1u << q)) {
          if (pos < a.cap) {
            a.cand_idx[pos] = static_cast<unsigned int>(i0 + q);
            a.cand_val[pos] = v[q];
          }
          ++pos;
          const int b = detail::threshold_bin(edge, fabsf(v[q]));
          atomicAdd(&hist[b], 1u);  // b >= 0: |v| > edge[0]
        }
      }
    }
  }
  const double bs = block_sum(s, warp_sums);
  const double bss = block_sum(ss, warp_sums);
  if (threadIdx.x == 0) {
    atomicAdd(&a.sum->sum, bs);
    atomicAdd(&a.sum->sumsq, bss);
  }
  if (bad) atomicOr(&a.sum->nonfinite, 1u);
  if (a.collect) {
    __syncthreads();
    for (int j = threadIdx.x; j < detail::kThresholdBins; j += kThreads)
      if (hist[j] != 0) atomicAdd(&a.sum->hist[j], hist[j]);
  }
}

// |x| > t, counted; float4 loads when x is 16-byte aligned.
template <bool kVector>
__global__ void count_above_kernel(const float* __restrict__ x, long long n, float t,
                                   unsigned long long* count) {
  __shared__ unsigned long long warp_sums[kThreads / 32];
  unsigned long long c = 0;
  const long long first = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  const long long stride = (long long)gridDim.x * blockDim.x;
  long long tail = 0;
  if (kVector) {
    const long long n4 = n / 4;
    const float4* x4 = reinterpret_cast<const float4*>(x);
    for (long long i = first; i < n4; i += stride) {
      const float4 v = x4[i];
      c += (fabsf(v.x) > t) + (fabsf(v.y) > t) + (fabsf(v.z) > t) + (fabsf(v.w) > t);
    }
    tail = n4 * 4;
  }
  for (long long i = tail + first; i < n; i += stride) c += fabsf(x[i]) > t;
  const unsigned long long bc = block_sum(c, warp_sums);
  if (threadIdx.x == 0) atomicAdd(count, bc);
}

__global__ void gather_and_zero(float* __restrict__ x, const long long* __restrict__ idx,
                                float* __restrict__ val, long long count, bool zero) {
  for (long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x; j < count;
       j += (long long)gridDim.x * blockDim.x) {
    const long long i = idx[j];
    val[j] = x[i];
    if (zero) x[i] = 0.f;
  }
}

// The candidates above the decision's threshold, appended (warp-aggregated) in no
// particular order; nothing when the decision is not usable.
__global__ void pick_kernel(const FirstPassSummary* d, const unsigned int* __restrict__ cand_idx,
                            const float* __restrict__ cand_val, unsigned int* picked,
                            long long room, unsigned int* __restrict__ pick_idx,
                            float* __restrict__ pick_val) {
  if (d->usable == 0) return;
  const float t = d->threshold;
  const auto kept = static_cast<long long>(d->above);  // usable: all of them were kept
  const unsigned lane = threadIdx.x & 31u;
  for (long long base = static_cast<long long>(blockIdx.x) * kThreads; base < kept;
       base += static_cast<long long>(gridDim.x) * kThreads) {
    const long long j = base + threadIdx.x;
    const float v = j < kept ? cand_val[j] : 0.f;
    const bool take = j < kept && fabsf(v) > t;
    const unsigned mask = __ballot_sync(kFullMask, take);
    if (mask == 0) continue;
    unsigned first = 0;
    if (lane == 0) first = atomicAdd(picked, static_cast<unsigned>(__popc(mask)));
    first = __shfl_sync(kFullMask, first, 0);
    if (take) {
      const unsigned pos = first + __popc(mask & ((1u << lane) - 1u));
      if (pos < room) {  // never more than counted, but never past the buffers either
        pick_idx[pos] = cand_idx[j];
        pick_val[pos] = v;
      }
    }
  }
}

// Zeroes the decision's selected entries of r (sorted into idx), when it is usable.
__global__ void zero_at(const FirstPassSummary* d, float* __restrict__ r,
                        const unsigned int* __restrict__ idx) {
  if (d->usable == 0) return;
  const long long count = d->chosen;
  for (long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x; j < count;
       j += (long long)gridDim.x * blockDim.x)
    r[idx[j]] = 0.f;
}

// A warm call's decision, on the device (one thread): the histogram's edge nearest k in
// the band, usable when every element above the bound was kept and all were finite.
__global__ void decide_kernel(FirstPassSummary* d, long long k, unsigned long long cap,
                              const ThresholdBins bins) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  d->usable = 0;
  if (d->nonfinite != 0 || d->above > cap) return;
  const detail::EdgePick pick = detail::pick_edge(d->hist, static_cast<std::int64_t>(d->above), k);
  if (pick.bin < 0) return;
  d->bin = pick.bin;
  d->chosen = static_cast<unsigned int>(pick.count);
  d->threshold = bins.edge[pick.bin];
  d->usable = 1;
}

// Right after decide_kernel: when no edge was in the band but the band falls inside one
// bin, plans that bin's sub-edges for refine_kernel and refine_decide_kernel. One thread.
__global__ void plan_refine_kernel(FirstPassSummary* d, long long k, unsigned long long cap,
                                   const ThresholdBins bins) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  d->refine = 0;
  if (d->usable != 0 || d->nonfinite != 0 || d->above > cap) return;
  const int j = detail::band_crossing(d->hist, static_cast<std::int64_t>(d->above), k);
  if (j < 0) return;
  d->refine_bin = j;
  d->refine_hi = bins.edge[j + 1];
  detail::make_sub_edges(bins.edge[j], bins.edge[j + 1], d->sub_edge);
  d->refine = 1;
}

// The candidates inside the refined bin, binned over its sub-edges.
__global__ void refine_kernel(FirstPassSummary* d, const float* __restrict__ cand_val) {
  __shared__ float sub[detail::kThresholdBins];
  __shared__ unsigned int hist[detail::kThresholdBins];
  if (d->refine == 0) return;  // uniform: every thread reads the same flag
  for (int j = threadIdx.x; j < detail::kThresholdBins; j += blockDim.x) {
    sub[j] = d->sub_edge[j];
    hist[j] = 0;
  }
  __syncthreads();
  const float lo = sub[0];
  const float hi = d->refine_hi;
  const auto kept = static_cast<long long>(d->above);
  for (long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x; j < kept;
       j += (long long)gridDim.x * blockDim.x) {
    const float a = fabsf(cand_val[j]);
    if (a > lo && a <= hi) atomicAdd(&hist[detail::threshold_bin(sub, a)], 1u);
  }
  __syncthreads();
  for (int j = threadIdx.x; j < detail::kThresholdBins; j += blockDim.x)
    if (hist[j] != 0) atomicAdd(&d->sub_hist[j], hist[j]);
}

// The decision over the sub-edges: the one nearest k in the band, exact (the count above
// the refined bin plus its sub-bins from there up). One thread.
__global__ void refine_decide_kernel(FirstPassSummary* d, long long k) {
  if (blockIdx.x != 0 || threadIdx.x != 0 || d->refine == 0) return;
  std::int64_t upper = 0;  // the count above the refined bin's upper edge
  for (int j = d->refine_bin + 1; j < detail::kThresholdBins; ++j) upper += d->hist[j];
  const std::int64_t lower = upper + d->hist[d->refine_bin];
  const detail::EdgePick pick = detail::pick_edge(d->sub_hist, lower, k, upper);
  if (pick.bin < 0) return;
  d->bin = d->refine_bin;
  d->chosen = static_cast<unsigned int>(pick.count);
  d->threshold = d->sub_edge[pick.bin];
  d->usable = 1;
}

}  // namespace cutlayer::kernels::cuda::device
