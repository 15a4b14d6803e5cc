// The CUDA gaussiank kernels' device code, run on the CPU under cuda_emu.h (fibers for
// threads, real barriers for __syncthreads and the warp collectives), against scalar
// references: the first pass (error feedback, moments, the exact histogram, the
// warp-aggregated candidate append, the cap), the device-side decision, the pick and the
// zeroing, and the count pass. Grids of several blocks make every block stride over more
// than one tile. The GPU tests (cuda_test.cpp, label gpu) check the same on a device.
#include "cuda_emu.h"  // first: the built-ins the kernels use

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "cuda/gaussiank_kernels.cuh"

namespace cutlayer::kernels::cuda {
namespace {

namespace dev = device;
using detail::ThresholdBins;

struct Data {
  std::vector<float> r, g, comp;
};

Data make_data(long long n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  Data d;
  d.r.resize(n);
  d.g.resize(n);
  d.comp.resize(n);
  for (long long i = 0; i < n; ++i) {
    d.g[i] = nd(rng);
    d.r[i] = 0.1f * nd(rng);
    d.comp[i] = d.r[i] + d.g[i];
  }
  return d;
}

void run_first_pass(bool vector, const dev::FirstPassArgs& a, unsigned grid) {
  cuda_emu::launch(grid, dev::kThreads, [&] {
    if (vector) {
      dev::first_pass_kernel<true>(a);
    } else {
      dev::first_pass_kernel<false>(a);
    }
  });
}

dev::FirstPassArgs args_for(float* r, const float* g, long long n, const ThresholdBins& bins,
                            long long cap, std::vector<unsigned>& ci, std::vector<float>& cv,
                            FirstPassSummary* sum) {
  dev::FirstPassArgs a{};
  a.x = r != nullptr ? r : g;
  a.r = r != nullptr && g != nullptr ? r : nullptr;
  a.g = a.r != nullptr ? g : nullptr;
  a.n = n;
  a.collect = true;
  a.cap = static_cast<unsigned long long>(cap);
  ci.assign(static_cast<std::size_t>(std::max<long long>(cap, 1)), 0xdeadbeefu);
  cv.assign(ci.size(), NAN);
  a.cand_idx = ci.data();
  a.cand_val = cv.data();
  a.sum = sum;
  a.bins = bins;
  return a;
}

TEST(CudaKernelsEmulated, FirstPassMatchesScalarReference) {
  const long long n = 7 * dev::kTile + 37;  // 8 tiles, the last one partial
  const Data d = make_data(n, 41);
  const float bound = 1.9f;  // ~6% above: many warps append several at once
  const ThresholdBins bins = detail::make_threshold_bins(bound);
  std::vector<unsigned> hist(detail::kThresholdBins, 0);
  std::vector<long long> above_ref;
  double sum = 0, sumsq = 0;
  for (long long i = 0; i < n; ++i) {
    sum += d.comp[i];
    sumsq += static_cast<double>(d.comp[i]) * d.comp[i];
    if (std::fabs(d.comp[i]) > bound) {
      above_ref.push_back(i);
      ++hist[detail::threshold_bin(bins.edge, std::fabs(d.comp[i]))];
    }
  }
  const auto above = static_cast<long long>(above_ref.size());
  for (bool vector : {true, false}) {
    for (long long cap : {n, above / 3}) {
      for (unsigned grid : {1u, 3u}) {
        SCOPED_TRACE(std::string(vector ? "float4" : "scalar") + " cap " + std::to_string(cap) +
                     " grid " + std::to_string(grid));
        std::vector<float> r = d.r;
        std::vector<unsigned> ci;
        std::vector<float> cv;
        FirstPassSummary s{};
        run_first_pass(vector, args_for(r.data(), d.g.data(), n, bins, cap, ci, cv, &s), grid);
        ASSERT_EQ(r, d.comp);  // r += g, bit for bit
        EXPECT_EQ(s.nonfinite, 0u);
        EXPECT_NEAR(s.sum, sum, 1e-9 * sumsq);
        EXPECT_NEAR(s.sumsq, sumsq, 1e-9 * sumsq);
        ASSERT_EQ(static_cast<long long>(s.above), above);
        for (int j = 0; j < detail::kThresholdBins; ++j) ASSERT_EQ(s.hist[j], hist[j]) << j;
        const long long kept = std::min(cap, above);
        std::vector<long long> got;
        for (long long q = 0; q < kept; ++q) {
          ASSERT_LT(ci[q], static_cast<unsigned>(n));
          ASSERT_EQ(cv[q], d.comp[ci[q]]);
          got.push_back(ci[q]);
        }
        if (kept < static_cast<long long>(ci.size())) {
          ASSERT_EQ(ci[kept], 0xdeadbeefu);  // nothing written past the cap
        }
        std::sort(got.begin(), got.end());
        ASSERT_TRUE(std::adjacent_find(got.begin(), got.end()) == got.end()) << "a candidate twice";
        if (cap >= above) {
          ASSERT_EQ(got, above_ref);
        } else {
          ASSERT_TRUE(std::includes(above_ref.begin(), above_ref.end(), got.begin(), got.end()));
        }
      }
    }
  }
  // Read-only: x is the gradient, untouched; the moments and counts are the gradient's.
  std::vector<float> g = d.g;
  std::vector<unsigned> ci;
  std::vector<float> cv;
  FirstPassSummary s{};
  run_first_pass(true, args_for(nullptr, g.data(), n, bins, n, ci, cv, &s), 2);
  EXPECT_EQ(g, d.g);
  long long above_g = 0;
  for (float v : d.g) above_g += std::fabs(v) > bound;
  EXPECT_EQ(static_cast<long long>(s.above), above_g);
}

TEST(CudaKernelsEmulated, NonFiniteIsFlagged) {
  const long long n = 3000;
  Data d = make_data(n, 43);
  d.g[1234] = INFINITY;
  const ThresholdBins bins = detail::make_threshold_bins(2.f);
  for (bool vector : {true, false}) {
    std::vector<float> r = d.r;
    std::vector<unsigned> ci;
    std::vector<float> cv;
    FirstPassSummary s{};
    run_first_pass(vector, args_for(r.data(), d.g.data(), n, bins, n, ci, cv, &s), 2);
    EXPECT_NE(s.nonfinite, 0u);
  }
}

// decide -> mark -> count -> extract, the phases of warm_select: the selection in index
// order with its values, zeroed in r; and nothing selected or zeroed when the decision is
// not usable. The vector spans three chunks of kWordsPerChunk words; the count and the
// extraction run on a grid of one block per chunk (as warm_select launches them) and on
// a smaller one (each block then takes chunks blockIdx.x, + gridDim.x, ...), with the
// same result.
TEST(CudaKernelsEmulated, DecisionMarkAndExtractMatchTheReference) {
  const long long n = 2 * dev::kWordsPerChunk * 32 + 5 * dev::kTile + 11;
  const Data d = make_data(n, 47);
  const float bound = 2.2f;
  const ThresholdBins bins = detail::make_threshold_bins(bound);
  const long long words = (n + 31) / 32;
  const long long blocks = (words + dev::kWordsPerChunk - 1) / dev::kWordsPerChunk;
  ASSERT_EQ(blocks, 3);
  for (const auto& [cap, grid] : {std::pair{n, 3LL}, std::pair{n, 2LL}, std::pair{10LL, 3LL}}) {
    SCOPED_TRACE("cap " + std::to_string(cap) + " grid " + std::to_string(grid));
    std::vector<float> r = d.r;
    std::vector<unsigned> ci;
    std::vector<float> cv;
    FirstPassSummary s{};
    run_first_pass(true, args_for(r.data(), d.g.data(), n, bins, cap, ci, cv, &s), 8);
    const long long above = static_cast<long long>(s.above);
    const long long k = std::max<long long>(1, above / 4);
    const long long room = 4 * k / 3;
    cuda_emu::launch(
        1, 32, [&] { dev::decide_kernel(&s, k, static_cast<unsigned long long>(cap), bins); });
    std::vector<unsigned> bitmap(words, 0), counts(blocks, 0xdeadu);
    std::vector<unsigned> out_idx(room, 0xffffffffu);
    std::vector<float> out_val(room, NAN);
    auto select = [&] {
      cuda_emu::launch(2, dev::kThreads,
                       [&] { dev::mark_kernel(&s, ci.data(), cv.data(), bitmap.data()); });
      cuda_emu::launch(static_cast<unsigned>(grid), dev::kThreads, [&] {
        dev::count_marks_kernel(&s, bitmap.data(), words, counts.data());
      });
      cuda_emu::launch(static_cast<unsigned>(grid), dev::kThreads, [&] {
        dev::extract_kernel(&s, bitmap.data(), words, counts.data(), room, r.data(), r.data(),
                            out_idx.data(), out_val.data());
      });
    };
    if (cap < above) {
      EXPECT_EQ(s.usable, 0u);
      select();
      EXPECT_EQ(r, d.comp);
      for (unsigned w : bitmap) ASSERT_EQ(w, 0u);
      for (unsigned i : out_idx) ASSERT_EQ(i, 0xffffffffu);
      continue;
    }
    ASSERT_EQ(s.usable, 1u);
    const detail::EdgePick want = detail::pick_edge(s.hist, above, k);
    ASSERT_EQ(s.bin, want.bin);
    ASSERT_EQ(s.threshold, bins.edge[want.bin]);
    ASSERT_EQ(static_cast<long long>(s.chosen), want.count);
    select();
    std::vector<long long> ref;
    for (long long i = 0; i < n; ++i)
      if (std::fabs(d.comp[i]) > s.threshold) ref.push_back(i);
    ASSERT_EQ(static_cast<long long>(ref.size()), want.count);
    long long total = 0;
    for (unsigned c : counts) total += c;
    ASSERT_EQ(total, want.count);
    ASSERT_GT(counts[0], 0u);  // every block holds some: the offsets are exercised
    ASSERT_GT(counts[2], 0u);
    for (long long q = 0; q < room; ++q) {
      if (q < want.count) {
        ASSERT_EQ(static_cast<long long>(out_idx[q]), ref[q]) << q;  // ascending, the same set
        ASSERT_EQ(out_val[q], d.comp[ref[q]]);
      } else {
        ASSERT_EQ(out_idx[q], 0xffffffffu);  // past the selection: untouched
      }
    }
    long long q = 0;
    for (long long i = 0; i < n; ++i) {
      if (q < want.count && ref[q] == i) {
        ASSERT_EQ(r[i], 0.f);
        ++q;
      } else {
        ASSERT_EQ(r[i], d.comp[i]);
      }
    }
  }
}

// Without error feedback the selection reads x (the gradient) and zeroes nothing.
TEST(CudaKernelsEmulated, ExtractWithoutErrorFeedbackLeavesXAlone) {
  const long long n = dev::kWordsPerChunk * 32 + 77;
  const Data d = make_data(n, 5);
  const std::vector<float> g = d.g;
  const ThresholdBins bins = detail::make_threshold_bins(2.2f);
  std::vector<unsigned> ci;
  std::vector<float> cv;
  FirstPassSummary s{};
  run_first_pass(true, args_for(nullptr, g.data(), n, bins, n, ci, cv, &s), 4);
  const long long k = std::max<long long>(1, static_cast<long long>(s.above) / 4);
  const long long room = 4 * k / 3;
  cuda_emu::launch(
      1, 32, [&] { dev::decide_kernel(&s, k, static_cast<unsigned long long>(n), bins); });
  ASSERT_EQ(s.usable, 1u);
  const long long words = (n + 31) / 32;
  std::vector<unsigned> bitmap(words, 0), counts(2, 0);
  std::vector<unsigned> out_idx(room, 0xffffffffu);
  std::vector<float> out_val(room, NAN);
  cuda_emu::launch(2, dev::kThreads,
                   [&] { dev::mark_kernel(&s, ci.data(), cv.data(), bitmap.data()); });
  cuda_emu::launch(2, dev::kThreads,
                   [&] { dev::count_marks_kernel(&s, bitmap.data(), words, counts.data()); });
  cuda_emu::launch(2, dev::kThreads, [&] {
    dev::extract_kernel(&s, bitmap.data(), words, counts.data(), room, g.data(), nullptr,
                        out_idx.data(), out_val.data());
  });
  std::vector<long long> ref;
  for (long long i = 0; i < n; ++i)
    if (std::fabs(g[i]) > s.threshold) ref.push_back(i);
  ASSERT_EQ(static_cast<long long>(ref.size()), static_cast<long long>(s.chosen));
  for (std::size_t q = 0; q < ref.size(); ++q) {
    ASSERT_EQ(static_cast<long long>(out_idx[q]), ref[q]) << q;
    ASSERT_EQ(out_val[q], g[ref[q]]);
  }
  EXPECT_EQ(g, d.g);  // read only
}

TEST(CudaKernelsEmulated, CountAboveMatchesTheReference) {
  const long long n = 4 * dev::kTile + 3;
  const Data d = make_data(n, 53);
  for (float t : {0.5f, 2.f, 10.f}) {
    long long want = 0;
    for (float v : d.comp) want += std::fabs(v) > t;
    for (bool vector : {true, false}) {
      unsigned long long count = 0;
      cuda_emu::launch(3, dev::kThreads, [&] {
        if (vector) {
          dev::count_above_kernel<true>(d.comp.data(), n, t, &count);
        } else {
          dev::count_above_kernel<false>(d.comp.data(), n, t, &count);
        }
      });
      EXPECT_EQ(static_cast<long long>(count), want) << "t " << t << (vector ? " float4" : "");
    }
  }
}

// A cliff inside one bin (error-feedback residuals pile up right under the last
// threshold): no edge is in the band, so the decision refines that bin 128 times finer over
// the candidates and decides there, exactly.
TEST(CudaKernelsEmulated, RefinementResolvesACliffInsideOneBin) {
  const long long n = 5 * dev::kTile + 11;
  const float bound = 1.0f;
  const ThresholdBins bins = detail::make_threshold_bins(bound);
  std::mt19937 rng(59);
  std::uniform_real_distribution<float> cliff(1.001f, 1.02f), low(-0.9f, 0.9f);
  std::vector<float> g(n), r(n, 0.f);
  for (auto& v : g) v = low(rng);
  for (long long i = 0; i < 600; ++i) g[i * 7] = (i % 2 ? -1.f : 1.f) * cliff(rng);  // all in bin 0
  ASSERT_LT(1.02f, bins.edge[1]);
  const long long k = 300;  // band [200, 400]: the 600 in bin 0, none above it
  std::vector<unsigned> ci;
  std::vector<float> cv;
  FirstPassSummary s{};
  run_first_pass(true, args_for(r.data(), g.data(), n, bins, n, ci, cv, &s), 2);
  ASSERT_EQ(s.above, 600u);
  ASSERT_EQ(detail::pick_edge(s.hist, 600, k).bin, -1);
  const auto cap = static_cast<unsigned long long>(n);
  cuda_emu::launch(1, 32, [&] { dev::decide_kernel(&s, k, cap, bins); });
  EXPECT_EQ(s.usable, 0u);
  ASSERT_EQ(s.refine, 1u);
  ASSERT_EQ(s.refine_bin, 0);
  cuda_emu::launch(3, dev::kThreads, [&] { dev::refine_kernel(&s, cv.data()); });
  cuda_emu::launch(1, 32, [&] { dev::refine_decide_kernel(&s, k); });
  ASSERT_EQ(s.usable, 1u);
  long long want = 0;
  for (float v : r) want += std::fabs(v) > s.threshold;
  EXPECT_EQ(static_cast<long long>(s.chosen), want);
  EXPECT_GE(3 * want, 2 * k);
  EXPECT_LE(3 * want, 4 * k);
  EXPECT_GT(s.threshold, bins.edge[0]);
  EXPECT_LT(s.threshold, bins.edge[1]);
  // Not a cliff: no refinement planned once an edge was in the band.
  FirstPassSummary s2{};
  std::vector<float> r2(n, 0.f);
  run_first_pass(true, args_for(r2.data(), g.data(), n, bins, n, ci, cv, &s2), 1);
  cuda_emu::launch(1, 32, [&] { dev::decide_kernel(&s2, 600, cap, bins); });
  EXPECT_EQ(s2.usable, 1u);
  EXPECT_EQ(s2.refine, 0u);
}

}  // namespace
}  // namespace cutlayer::kernels::cuda
