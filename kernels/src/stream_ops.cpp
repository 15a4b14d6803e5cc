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

CUTLAYER_CLONES
std::int64_t count_above(const float* x, std::int64_t n, float t) {
  std::int64_t count = 0;
#pragma omp simd reduction(+ : count)
  for (std::int64_t i = 0; i < n; ++i) count += std::fabs(x[i]) > t;
  return count;
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
