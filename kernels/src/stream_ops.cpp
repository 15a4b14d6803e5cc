#include "stream_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#define CUTLAYER_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

namespace cutlayer::kernels::detail {

bool Moments::finite() const { return std::isfinite(sum) && std::isfinite(sumsq); }

CUTLAYER_CLONES
Moments accumulate_moments(float* r, const float* g, std::int64_t n) {
  // Float partial sums per 4096-element block (vectorizable), folded into doubles.
  constexpr std::int64_t kBlock = 4096;
  Moments m;
  for (std::int64_t b = 0; b < n; b += kBlock) {
    const std::int64_t e = std::min(n, b + kBlock);
    float s = 0.f, ss = 0.f;
    if (g != nullptr) {
#pragma omp simd reduction(+ : s, ss)
      for (std::int64_t i = b; i < e; ++i) {
        const float v = r[i] + g[i];
        r[i] = v;
        s += v;
        ss += v * v;
      }
    } else {
#pragma omp simd reduction(+ : s, ss)
      for (std::int64_t i = b; i < e; ++i) {
        const float v = r[i];
        s += v;
        ss += v * v;
      }
    }
    m.sum += s;
    m.sumsq += ss;
  }
  return m;
}

CUTLAYER_CLONES
std::int64_t select_above(const float* x, std::int64_t n, float t, std::int64_t base,
                          std::vector<std::int64_t>& idx, std::vector<float>& val) {
  // Blocks of 64: a vectorized "any above?" test, then a scalar look only where needed.
  constexpr std::int64_t kBlock = 64;
  std::int64_t count = 0;
  std::int64_t b = 0;
  for (; b + kBlock <= n; b += kBlock) {
    int any = 0;
#pragma omp simd reduction(| : any)
    for (std::int64_t i = b; i < b + kBlock; ++i) any |= std::fabs(x[i]) > t;
    if (!any) continue;
    for (std::int64_t i = b; i < b + kBlock; ++i) {
      if (std::fabs(x[i]) > t) {
        idx.push_back(base + i);
        val.push_back(x[i]);
        ++count;
      }
    }
  }
  for (std::int64_t i = b; i < n; ++i) {
    if (std::fabs(x[i]) > t) {
      idx.push_back(base + i);
      val.push_back(x[i]);
      ++count;
    }
  }
  return count;
}

namespace {

// The candidates of one block that had any: counted always, appended while the budget
// holds (the shared counter is touched only here, in the rare blocks with candidates).
void take_block(const float* x, std::int64_t b, std::int64_t e, float bound, std::int64_t base,
                CandidateBudget& budget, std::vector<std::int64_t>& idx, std::vector<float>& val,
                std::int64_t* above) {
  std::int64_t c = 0;
  for (std::int64_t i = b; i < e; ++i) c += std::fabs(x[i]) > bound;
  *above += c;
  if (budget.exceeded.load(std::memory_order_relaxed)) return;
  if (budget.used.fetch_add(c, std::memory_order_relaxed) + c > budget.cap) {
    budget.exceeded.store(true, std::memory_order_relaxed);
    return;
  }
  for (std::int64_t i = b; i < e; ++i) {
    if (std::fabs(x[i]) > bound) {
      idx.push_back(base + i);
      val.push_back(x[i]);
    }
  }
}

}  // namespace

CUTLAYER_CLONES
Moments scan_above(float* x, const float* g, std::int64_t n, float bound, std::int64_t base,
                   CandidateBudget& budget, std::vector<std::int64_t>& idx, std::vector<float>& val,
                   std::int64_t* above) {
  // Blocks of 256: the update, float partial moments and a vectorized "any above?" in one
  // loop; the block is looked at again (from L1) only when it holds a candidate.
  constexpr std::int64_t kBlock = 256;
  Moments m;
  for (std::int64_t b = 0; b < n; b += kBlock) {
    const std::int64_t e = std::min(n, b + kBlock);
    float s = 0.f, ss = 0.f;
    int any = 0;
    if (g != nullptr) {
#pragma omp simd reduction(+ : s, ss) reduction(| : any)
      for (std::int64_t i = b; i < e; ++i) {
        const float v = x[i] + g[i];
        x[i] = v;
        s += v;
        ss += v * v;
        any |= std::fabs(v) > bound;
      }
    } else {
#pragma omp simd reduction(+ : s, ss) reduction(| : any)
      for (std::int64_t i = b; i < e; ++i) {
        const float v = x[i];
        s += v;
        ss += v * v;
        any |= std::fabs(v) > bound;
      }
    }
    m.sum += s;
    m.sumsq += ss;
    if (any) take_block(x, b, e, bound, base, budget, idx, val, above);
  }
  return m;
}

void sample_abs(const float* x, std::int64_t n, std::int64_t offset, std::int64_t stride,
                std::vector<float>& out) {
  for (std::int64_t i = offset; i < n; i += stride) out.push_back(std::fabs(x[i]));
}

CUTLAYER_CLONES
bool accumulate_histogram(float* r, const float* g, std::int64_t n, std::int64_t* hist) {
  std::uint32_t worst = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const float v = g != nullptr ? r[i] + g[i] : r[i];
    if (g != nullptr) r[i] = v;
    std::uint32_t bits;
    std::memcpy(&bits, &v, 4);
    bits &= 0x7fffffffu;
    worst = std::max(worst, bits);
    ++hist[bits >> 20];
  }
  return worst < 0x7f800000u;  // no Inf, no NaN
}

Moments combine(const std::vector<Moments>& parts) {
  Moments m;
  for (const auto& p : parts) {
    m.sum += p.sum;
    m.sumsq += p.sumsq;
  }
  return m;
}

}  // namespace cutlayer::kernels::detail
