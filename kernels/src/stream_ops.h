// Internal: the streaming inner loops of the CPU compressors, run over chunks by
// at::parallel_for: omp simd loops cloned for AVX-512/AVX2/baseline, and the first pass
// of the threshold compressors (scan_above) with AVX2 intrinsics chosen at run time.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

namespace cutlayer::kernels::detail {

// Elements per parallel chunk: large enough to amortize scheduling.
constexpr std::int64_t kGrain = 1 << 16;

struct Moments {
  double sum = 0;
  double sumsq = 0;
  bool finite() const;
  // Mean and standard deviation over n elements.
  double mean(std::int64_t n) const { return sum / static_cast<double>(n); }
  double stddev(std::int64_t n) const;
};

// r[i] += g[i] (when g != nullptr) and the moments of the result over [0, n).
Moments accumulate_moments(float* r, const float* g, std::int64_t n);

// A cap on candidate entries shared by the chunks of one pass (they run in parallel).
struct CandidateBudget {
  std::int64_t cap = 0;
  std::atomic<std::int64_t> used{0};
  std::atomic<bool> exceeded{false};
};

// Which version of scan_above runs: the best this CPU has (AVX2 when present, chosen at
// run time), or one of them by name (tests compare them).
enum class ScanPath { kBest, kAvx2, kPortable };
bool scan_path_available(ScanPath path);

// One streaming pass: x[i] += g[i] when g != nullptr (x is only read otherwise), the
// moments of the result, and (i + base, x[i]) appended to idx/val, ascending, for every
// |x[i]| > bound while `budget` holds (once it is exceeded the entries are unusable).
// Returns the moments; adds to *above the exact number of |x[i]| > bound, whether or not
// the budget held. A bound of +inf collects nothing.
Moments scan_above(float* x, const float* g, std::int64_t n, float bound, std::int64_t base,
                   CandidateBudget& budget, std::vector<std::int64_t>& idx, std::vector<float>& val,
                   std::int64_t* above, ScanPath path = ScanPath::kBest);

// Appends (i + base, x[i]) for |x[i]| > t to idx/val; returns the count.
std::int64_t select_above(const float* x, std::int64_t n, float t, std::int64_t base,
                          std::vector<std::int64_t>& idx, std::vector<float>& val);

// Appends |x[i]| for i = offset, offset + stride, ... < n to `out`.
void sample_abs(const float* x, std::int64_t n, std::int64_t offset, std::int64_t stride,
                std::vector<float>& out);

// r[i] += g[i]; 2048-bin histogram of (bits(|r[i]|) >> 20); returns false when a
// non-finite element is seen.
bool accumulate_histogram(float* r, const float* g, std::int64_t n, std::int64_t* hist);

// Sum of a vector of moments (fixed order: deterministic).
Moments combine(const std::vector<Moments>& parts);

}  // namespace cutlayer::kernels::detail
