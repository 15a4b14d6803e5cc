#include "stream_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define CUTLAYER_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

namespace cutlayer::kernels::detail {

bool Moments::finite() const { return std::isfinite(sum) && std::isfinite(sumsq); }

double Moments::stddev(std::int64_t n) const {
  const double mu = mean(n);
  return std::sqrt(std::max(0.0, sumsq / static_cast<double>(n) - mu * mu));
}

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

// Candidate bookkeeping of one scan_above call. The shared budget is read when the call
// starts and charged when it ends (one atomic per chunk, not per candidate); in between
// the call keeps at most the whole cap itself, so a pass holds at most (chunks in flight
// + 1) x cap entries before it knows the cap was exceeded. The lists are grown ahead and
// written through pointers (a block of 8 is stored at once), then cut to size in finish().
struct Collector {
  CandidateBudget& budget;
  std::vector<std::int64_t>& idx;
  std::vector<float>& val;
  const std::size_t start = idx.size();
  std::size_t size = start;  // entries written
  bool open = !budget.exceeded.load(std::memory_order_relaxed);
  std::int64_t above = 0;

  // Room for `m` more entries; false (and closed) once the cap would be passed.
  bool room(std::size_t m) {
    if (!open) return false;
    if (static_cast<std::int64_t>(size - start + m) > budget.cap) {
      open = false;
      budget.exceeded.store(true, std::memory_order_relaxed);
      return false;
    }
    if (size + 8 > idx.size()) {
      const std::size_t grown = std::max<std::size_t>({2 * idx.size(), size + 8, 1024});
      idx.resize(grown);
      val.resize(grown);
    }
    return true;
  }
  void take(std::int64_t i, float v) {
    if (!room(1)) return;
    idx[size] = i;
    val[size] = v;
    ++size;
  }
  void finish() {
    idx.resize(size);
    val.resize(size);
    const auto kept = static_cast<std::int64_t>(size - start);
    if (kept > 0 && budget.used.fetch_add(kept, std::memory_order_relaxed) + kept > budget.cap)
      budget.exceeded.store(true, std::memory_order_relaxed);
  }
};

// The scalar span [b, e): update, moments, candidates. Shared by both versions.
template <bool kUpdate>
void scan_span(float* x, const float* g, std::int64_t b, std::int64_t e, float bound,
               std::int64_t base, Collector& col, float& s, float& ss) {
  for (std::int64_t i = b; i < e; ++i) {
    const float v = kUpdate ? x[i] + g[i] : x[i];
    if (kUpdate) x[i] = v;
    s += v;
    ss += v * v;
    if (std::fabs(v) > bound) {
      ++col.above;
      col.take(base + i, v);
    }
  }
}

// Portable: blocks of 64 with a vectorized "any above?", looked at again only when one is.
template <bool kUpdate>
Moments scan_portable(float* x, const float* g, std::int64_t n, float bound, std::int64_t base,
                      Collector& col) {
  constexpr std::int64_t kBlock = 64;
  Moments m;
  std::int64_t b = 0;
  for (; b + kBlock <= n; b += kBlock) {
    float s = 0.f, ss = 0.f;
    int any = 0;
#pragma omp simd reduction(+ : s, ss) reduction(| : any)
    for (std::int64_t i = b; i < b + kBlock; ++i) {
      const float v = kUpdate ? x[i] + g[i] : x[i];
      if (kUpdate) x[i] = v;
      s += v;
      ss += v * v;
      any |= std::fabs(v) > bound;
    }
    m.sum += s;
    m.sumsq += ss;
    if (any) {
      for (std::int64_t i = b; i < b + kBlock; ++i) {
        if (std::fabs(x[i]) > bound) {
          ++col.above;
          col.take(base + i, x[i]);
        }
      }
    }
  }
  float s = 0.f, ss = 0.f;
  scan_span<kUpdate>(x, g, b, n, bound, base, col, s, ss);
  m.sum += s;
  m.sumsq += ss;
  return m;
}

#if defined(__x86_64__)
// kPack[mask]: the lanes whose bit is set in `mask`, in order, then zeros.
struct PackTable {
  alignas(32) std::int32_t lanes[256][8];
  PackTable() {
    for (int m = 0; m < 256; ++m) {
      int k = 0;
      for (int j = 0; j < 8; ++j)
        if (m & (1 << j)) lanes[m][k++] = j;
      for (; k < 8; ++k) lanes[m][k] = 0;
    }
  }
};
const PackTable kPackTable;
const auto& kPack = kPackTable.lanes;

// AVX2: one compare mask per 8 elements; the selected lanes are left-packed with a
// permutation and stored in one go, so candidates cost no branch each and the stream
// never leaves the registers. Partial moments in float per 256 elements, folded into
// doubles.
template <bool kUpdate>
__attribute__((target("avx2,fma"))) Moments scan_avx2(float* x, const float* g, std::int64_t n,
                                                      float bound, std::int64_t base,
                                                      Collector& col) {
  constexpr std::int64_t kFold = 256;
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 vb = _mm256_set1_ps(bound);
  Moments m;
  std::int64_t i = 0;
  const std::int64_t n8 = n & ~std::int64_t{7};
  while (i < n8) {
    const std::int64_t fold_end = std::min(n8, i + kFold);
    __m256 vs = _mm256_setzero_ps(), vss = _mm256_setzero_ps();
    for (; i < fold_end; i += 8) {
      __m256 v = _mm256_loadu_ps(x + i);
      if (kUpdate) {
        v = _mm256_add_ps(v, _mm256_loadu_ps(g + i));
        _mm256_storeu_ps(x + i, v);
      }
      vs = _mm256_add_ps(vs, v);
      vss = _mm256_fmadd_ps(v, v, vss);
      const unsigned mask = static_cast<unsigned>(
          _mm256_movemask_ps(_mm256_cmp_ps(_mm256_and_ps(v, abs_mask), vb, _CMP_GT_OQ)));
      if (mask != 0) {
        // Left-pack the selected lanes (a permutation from the table) and store all 8;
        // the next store starts where the selected ones end.
        const int m = __builtin_popcount(mask);
        col.above += m;
        if (col.room(static_cast<std::size_t>(m))) {
          const __m256i lanes = _mm256_load_si256(reinterpret_cast<const __m256i*>(kPack[mask]));
          _mm256_storeu_ps(col.val.data() + col.size, _mm256_permutevar8x32_ps(v, lanes));
          const __m256i at = _mm256_set1_epi64x(base + i);
          std::int64_t* out = col.idx.data() + col.size;
          _mm256_storeu_si256(
              reinterpret_cast<__m256i*>(out),
              _mm256_add_epi64(at, _mm256_cvtepi32_epi64(_mm256_castsi256_si128(lanes))));
          _mm256_storeu_si256(
              reinterpret_cast<__m256i*>(out + 4),
              _mm256_add_epi64(at, _mm256_cvtepi32_epi64(_mm256_extracti128_si256(lanes, 1))));
          col.size += static_cast<std::size_t>(m);
        }
      }
    }
    alignas(32) float ps[8], pss[8];
    _mm256_store_ps(ps, vs);
    _mm256_store_ps(pss, vss);
    float s = 0.f, ss = 0.f;
    for (int j = 0; j < 8; ++j) {
      s += ps[j];
      ss += pss[j];
    }
    m.sum += s;
    m.sumsq += ss;
  }
  float s = 0.f, ss = 0.f;
  scan_span<kUpdate>(x, g, n8, n, bound, base, col, s, ss);
  m.sum += s;
  m.sumsq += ss;
  return m;
}

bool have_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#endif

}  // namespace

Moments scan_above(float* x, const float* g, std::int64_t n, float bound, std::int64_t base,
                   CandidateBudget& budget, std::vector<std::int64_t>& idx, std::vector<float>& val,
                   std::int64_t* above, ScanPath path) {
  Collector col{budget, idx, val};
  Moments m;
#if defined(__x86_64__)
  const bool avx2 = path == ScanPath::kAvx2 || (path == ScanPath::kBest && have_avx2());
  if (avx2)
    m = g != nullptr ? scan_avx2<true>(x, g, n, bound, base, col)
                     : scan_avx2<false>(x, nullptr, n, bound, base, col);
  else
#endif
    m = g != nullptr ? scan_portable<true>(x, g, n, bound, base, col)
                     : scan_portable<false>(x, nullptr, n, bound, base, col);
  col.finish();
  *above += col.above;
  return m;
}

bool scan_path_available(ScanPath path) {
#if defined(__x86_64__)
  if (path == ScanPath::kAvx2) return have_avx2();
#else
  if (path == ScanPath::kAvx2) return false;
#endif
  return true;
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
