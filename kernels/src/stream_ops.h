// Internal: the streaming inner loops of the CPU compressors, vectorized (omp simd,
// cloned for AVX-512/AVX2/baseline) and run over chunks by at::parallel_for.
#pragma once

#include <cstdint>
#include <vector>

namespace cutlayer::kernels::detail {

// Elements per parallel chunk: large enough to amortize scheduling.
constexpr std::int64_t kGrain = 1 << 16;

struct Moments {
  double sum = 0;
  double sumsq = 0;
  bool finite() const;
};

// r[i] += g[i] (when g != nullptr) and the moments of the result over [0, n).
Moments accumulate_moments(float* r, const float* g, std::int64_t n);

// Appends (i + base, x[i]) for |x[i]| > t to idx/val; returns the count.
std::int64_t select_above(const float* x, std::int64_t n, float t, std::int64_t base,
                          std::vector<std::int64_t>& idx, std::vector<float>& val);

// Number of |x[i]| > t (a read-only vectorized pass).
std::int64_t count_above(const float* x, std::int64_t n, float t);

// Appends |x[i]| for i = offset, offset + stride, ... < n to `out`.
void sample_abs(const float* x, std::int64_t n, std::int64_t offset, std::int64_t stride,
                std::vector<float>& out);

// r[i] += g[i]; 2048-bin histogram of (bits(|r[i]|) >> 20); returns false when a
// non-finite element is seen.
bool accumulate_histogram(float* r, const float* g, std::int64_t n, std::int64_t* hist);

// Sum of a vector of moments (fixed order: deterministic).
Moments combine(const std::vector<Moments>& parts);

}  // namespace cutlayer::kernels::detail
