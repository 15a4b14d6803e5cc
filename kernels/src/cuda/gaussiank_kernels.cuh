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

// ---- A warm call's selection, after the first pass --------------------------------------
// Six phases; between two of them every block's writes must be visible to every block,
// so gaussiank.cu launches each on its own (the kernels at the end of this file, which the
// emulated tests run too). Each phase works for any grid size.
//   1. decide_phase: the histogram's edge nearest k in the band and, when no edge is in
//      the band but it falls inside one bin, that bin's sub-edges (one thread).
//   2. refine_phase: the candidates inside that bin binned over its sub-edges.
//   3. refine_decide_phase: the decision over the sub-edges (one thread).
//   4. mark_phase: the candidates above the decision's threshold marked in a bitmap of
//      x's elements (zeroed before).
//   5. count_phase: the marks in each chunk of kWordsPerChunk words.
//   6. extract_phase: the marked elements in ascending order, with their values; zeroed
//      in r.
// Nothing is selected, marked or zeroed when the decision is not usable.

constexpr int kWordsPerThread = 16;
constexpr long long kWordsPerChunk = static_cast<long long>(kThreads) * kWordsPerThread;

// Phase 1 (one thread): usable when every element above the bound was kept, all were
// finite and an edge's count is in the band; else, when the band falls inside one bin,
// that bin's sub-edges are planned for phases 2 and 3.
__device__ inline void decide_phase(FirstPassSummary* d, long long k, unsigned long long cap,
                                    const ThresholdBins& bins) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  d->usable = 0;
  d->refine = 0;
  if (d->nonfinite != 0 || d->above > cap) return;
  const detail::EdgePick pick = detail::pick_edge(d->hist, static_cast<std::int64_t>(d->above), k);
  if (pick.bin >= 0) {
    d->bin = pick.bin;
    d->chosen = static_cast<unsigned int>(pick.count);
    d->threshold = bins.edge[pick.bin];
    d->usable = 1;
    return;
  }
  const int j = detail::band_crossing(d->hist, static_cast<std::int64_t>(d->above), k);
  if (j < 0) return;
  d->refine_bin = j;
  d->refine_hi = bins.edge[j + 1];
  detail::make_sub_edges(bins.edge[j], bins.edge[j + 1], d->sub_edge);
  d->refine = 1;
}

// Phase 2: the candidates inside the refined bin, binned over its sub-edges.
__device__ inline void refine_phase(FirstPassSummary* d, const float* __restrict__ cand_val) {
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

// Phase 3 (one thread): the decision over the sub-edges, the one nearest k in the band,
// exact (the count above the refined bin plus its sub-bins from there up).
__device__ inline void refine_decide_phase(FirstPassSummary* d, long long k) {
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

// Phase 4: the candidates above the decision's threshold marked in `bitmap`.
__device__ inline void mark_phase(const FirstPassSummary* d,
                                  const unsigned int* __restrict__ cand_idx,
                                  const float* __restrict__ cand_val, unsigned int* bitmap) {
  if (d->usable == 0) return;
  const float t = d->threshold;
  const auto kept = static_cast<long long>(d->above);  // usable: all of them were kept
  for (long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x; j < kept;
       j += (long long)gridDim.x * blockDim.x) {
    if (fabsf(cand_val[j]) > t) {
      const unsigned int i = cand_idx[j];
      atomicOr(&bitmap[i >> 5], 1u << (i & 31u));
    }
  }
}

// Phase 5: the marks in each chunk of kWordsPerChunk words (read coalesced), for the
// offsets of phase 6. A block takes chunks blockIdx.x, + gridDim.x, ...
__device__ inline void count_phase(const FirstPassSummary* d,
                                   const unsigned int* __restrict__ bitmap, long long words,
                                   unsigned int* __restrict__ chunk_counts) {
  __shared__ unsigned int warp_sums[kThreads / 32];
  if (d->usable == 0) return;  // uniform over the grid
  const long long chunks = (words + kWordsPerChunk - 1) / kWordsPerChunk;
  for (long long chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
    const long long base = chunk * kWordsPerChunk;
    unsigned int c = 0;
    for (int q = 0; q < kWordsPerThread; ++q) {
      const long long w = base + static_cast<long long>(q) * kThreads + threadIdx.x;
      if (w < words) c += __popc(bitmap[w]);
    }
    const unsigned int total = block_sum(c, warp_sums);
    if (threadIdx.x == 0) chunk_counts[chunk] = total;
  }
}

// Phase 6: the marked elements in ascending order. A chunk starts after the marks of the
// chunks before it, each thread takes kWordsPerThread consecutive words of it and a scan
// over the block's threads orders them. Values are read from x; r (when not null) is
// zeroed there.
__device__ inline void extract_phase(const FirstPassSummary* d,
                                     const unsigned int* __restrict__ bitmap, long long words,
                                     const unsigned int* __restrict__ chunk_counts,
                                     long long room, const float* x, float* r,
                                     unsigned int* __restrict__ out_idx,
                                     float* __restrict__ out_val) {
  __shared__ unsigned int warp_sums[kThreads / 32];
  __shared__ unsigned int chunk_offset;
  if (d->usable == 0) return;  // uniform over the grid
  const long long chunks = (words + kWordsPerChunk - 1) / kWordsPerChunk;
  const unsigned int lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
  for (long long chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
    // The chunks before this one, summed again by every chunk: quadratic in the chunk
    // count, negligible at 25M (191 chunks), 134M loads at 2^31 (a scan would fix that).
    unsigned int before = 0;
    for (long long j = threadIdx.x; j < chunk; j += kThreads) before += chunk_counts[j];
    before = block_sum(before, warp_sums);
    if (threadIdx.x == 0) chunk_offset = before;
    __syncthreads();
    const long long first = chunk * kWordsPerChunk + static_cast<long long>(threadIdx.x) * kWordsPerThread;
    unsigned int mine = 0;
    for (int q = 0; q < kWordsPerThread; ++q)
      if (first + q < words) mine += __popc(bitmap[first + q]);
    unsigned int incl = mine;
#pragma unroll
    for (int s = 1; s < 32; s <<= 1) {
      const unsigned int up = __shfl_up_sync(kFullMask, incl, s);
      if (lane >= static_cast<unsigned int>(s)) incl += up;
    }
    if (lane == 31) warp_sums[warp] = incl;
    __syncthreads();
    unsigned int warp_before = 0;
    for (unsigned int w = 0; w < warp; ++w) warp_before += warp_sums[w];
    long long pos = static_cast<long long>(chunk_offset) + warp_before + (incl - mine);
    __syncthreads();  // warp_sums and chunk_offset are rewritten by the next chunk
    for (int q = 0; q < kWordsPerThread && first + q < words; ++q) {
      unsigned int bits = bitmap[first + q];
      while (bits != 0) {
        const unsigned int low = bits & (0u - bits);
        bits ^= low;
        const long long i = (first + q) * 32 + __popc(low - 1u);
        // Never more than decided (chosen <= room), but never past the buffers either, and
        // nothing is zeroed that was not written out (it would be lost from the residual).
        if (pos < room) {
          out_idx[pos] = static_cast<unsigned int>(i);
          out_val[pos] = x[i];
          if (r != nullptr) r[i] = 0.f;
        }
        ++pos;
      }
    }
  }
}

// The phases as one launch each (gaussiank.cu's launches, and the emulated tests). The
// block sums and the extraction's scan assume blockDim.x == kThreads.
__global__ void decide_kernel(FirstPassSummary* d, long long k, unsigned long long cap,
                              const ThresholdBins bins) {
  decide_phase(d, k, cap, bins);
}
__global__ void refine_kernel(FirstPassSummary* d, const float* __restrict__ cand_val) {
  refine_phase(d, cand_val);
}
__global__ void refine_decide_kernel(FirstPassSummary* d, long long k) {
  refine_decide_phase(d, k);
}
__global__ void mark_kernel(const FirstPassSummary* d, const unsigned int* __restrict__ cand_idx,
                            const float* __restrict__ cand_val, unsigned int* bitmap) {
  mark_phase(d, cand_idx, cand_val, bitmap);
}
__global__ void __launch_bounds__(kThreads)
    count_marks_kernel(const FirstPassSummary* d, const unsigned int* __restrict__ bitmap,
                       long long words, unsigned int* __restrict__ chunk_counts) {
  count_phase(d, bitmap, words, chunk_counts);
}
__global__ void __launch_bounds__(kThreads)
    extract_kernel(const FirstPassSummary* d, const unsigned int* __restrict__ bitmap,
                   long long words, const unsigned int* __restrict__ chunk_counts, long long room,
                   const float* x, float* r, unsigned int* __restrict__ out_idx,
                   float* __restrict__ out_val) {
  extract_phase(d, bitmap, words, chunk_counts, room, x, r, out_idx, out_val);
}

}  // namespace cutlayer::kernels::cuda::device
