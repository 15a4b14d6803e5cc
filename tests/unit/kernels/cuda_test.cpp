// GPU tests (label gpu): skip without a CUDA device. The raw kernels are checked against
// a CPU reference on the same data; with a CUDA LibTorch the compressor's CUDA path is
// checked against its CPU path.
#include "cutlayer/kernels/cuda.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <random>
#include <string>
#include <vector>

#include "cutlayer/kernels/compressor.h"
#include "gaussiank_cuda.h"

namespace cutlayer::kernels {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device"

TEST(CudaGaussianK, MatchesCpuReferenceWithErrorFeedback) {
  SKIP_WITHOUT_GPU();
  const long long n = 1 << 22;
  const double density = 0.001;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> g(n), r(n);
  for (auto& v : g) v = nd(rng);
  for (auto& v : r) v = 0.1f * nd(rng);
  float *dg, *dr;
  ASSERT_EQ(cudaMalloc(&dg, n * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dr, n * 4), cudaSuccess);
  cudaMemcpy(dg, g.data(), n * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(dr, r.data(), n * 4, cudaMemcpyHostToDevice);
  cuda::ThresholdResult tr;
  ASSERT_EQ(cuda::gaussiank_threshold(dr, dg, n, density, 3, 1.0, &tr, nullptr), cudaSuccess);
  ASSERT_TRUE(tr.finite);
  // CPU reference: the same compensated vector and the same threshold select the same set.
  std::vector<float> comp(n);
  long long expected = 0;
  for (long long i = 0; i < n; ++i) {
    comp[i] = r[i] + g[i];
    expected += std::fabs(comp[i]) > static_cast<float>(tr.threshold);
  }
  EXPECT_EQ(tr.count, expected);
  const double k = std::ceil(density * n);
  EXPECT_GE(tr.count, 2 * k / 3);
  EXPECT_LE(tr.count, 4 * k / 3);
  long long *didx, count = 0;
  float* dval;
  cudaMalloc(&didx, tr.count * 8);
  cudaMalloc(&dval, tr.count * 4);
  ASSERT_EQ(cuda::select_compact(dr, n, static_cast<float>(tr.threshold), true, didx, dval, tr.count,
                                 &count, nullptr),
            cudaSuccess);
  ASSERT_EQ(count, expected);
  std::vector<long long> idx(count);
  std::vector<float> val(count), res(n);
  cudaMemcpy(idx.data(), didx, count * 8, cudaMemcpyDeviceToHost);
  cudaMemcpy(val.data(), dval, count * 4, cudaMemcpyDeviceToHost);
  cudaMemcpy(res.data(), dr, n * 4, cudaMemcpyDeviceToHost);
  long long j = 0;
  for (long long i = 0; i < n; ++i) {
    if (std::fabs(comp[i]) > static_cast<float>(tr.threshold)) {
      ASSERT_EQ(idx[j], i);                 // ascending, same set
      ASSERT_EQ(val[j], comp[i]);           // exact value
      ASSERT_EQ(res[i], 0.f);               // left the residual
      ++j;
    } else {
      ASSERT_EQ(res[i], comp[i]);           // stayed, bit for bit
    }
  }
  cudaFree(dg);
  cudaFree(dr);
  cudaFree(didx);
  cudaFree(dval);
}

TEST(CudaGaussianK, NonFiniteIsReported) {
  SKIP_WITHOUT_GPU();
  const long long n = 100000;
  std::vector<float> g(n, 1.f);
  g[777] = NAN;
  float* dg;
  cudaMalloc(&dg, n * 4);
  cudaMemcpy(dg, g.data(), n * 4, cudaMemcpyHostToDevice);
  cuda::ThresholdResult tr;
  ASSERT_EQ(cuda::gaussiank_threshold(nullptr, dg, n, 0.01, 3, 1.0, &tr, nullptr), cudaSuccess);
  EXPECT_FALSE(tr.finite);
  cudaFree(dg);
}

// Error-feedback streams on the device, as the CPU test does them: the residual keeps what
// was not sent, the factor learned by each call starts the next. After four steps every
// count lands in [2k/3, 4k/3], and each count equals the CPU's count at that threshold.
TEST(CudaGaussianK, StaysInBandOnErrorFeedbackStreams) {
  SKIP_WITHOUT_GPU();
  const long long n = 1 << 22;
  const double density = 0.001;
  const double k = std::ceil(density * n);
  std::mt19937 rng(17);
  std::normal_distribution<float> nd(0.f, 0.01f);
  std::vector<std::vector<float>> cycle(4, std::vector<float>(n));
  for (auto& c : cycle)
    for (auto& v : c) v = nd(rng);
  float *dg, *dr;
  long long* didx;
  float* dval;
  ASSERT_EQ(cudaMalloc(&dg, n * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dr, n * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&didx, n * 8), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dval, n * 4), cudaSuccess);
  for (const char* stream : {"fresh", "cycled"}) {
    cudaMemset(dr, 0, n * 4);
    double factor = 1.0;
    int in_band = 0;
    std::vector<float> g(n), res(n);
    for (int step = 0; step < 30; ++step) {
      if (std::string(stream) == "fresh") {
        for (auto& v : g) v = nd(rng);
      } else {
        g = cycle[step % 4];
      }
      cudaMemcpy(dg, g.data(), n * 4, cudaMemcpyHostToDevice);
      cuda::ThresholdResult tr;
      ASSERT_EQ(cuda::gaussiank_threshold(dr, dg, n, density, 3, factor, &tr, nullptr),
                cudaSuccess);
      ASSERT_TRUE(tr.finite);
      factor = tr.factor;
      cudaMemcpy(res.data(), dr, n * 4, cudaMemcpyDeviceToHost);
      long long expected = 0;
      for (long long i = 0; i < n; ++i)
        expected += std::fabs(res[i]) > static_cast<float>(tr.threshold);
      ASSERT_EQ(tr.count, expected) << stream << " step " << step;
      long long count = 0;
      ASSERT_EQ(cuda::select_compact(dr, n, static_cast<float>(tr.threshold), true, didx, dval, n,
                                     &count, nullptr),
                cudaSuccess);
      ASSERT_EQ(count, expected);
      const bool ok = count >= 2 * k / 3 && count <= 4 * k / 3;
      in_band += ok;
      if (step >= 4) {
        EXPECT_TRUE(ok) << stream << " step " << step << ": " << count << " for k " << k;
      }
    }
    std::printf("[ measure ] cuda gaussiank %s stream: %d/30 in band\n", stream, in_band);
  }
  cudaFree(dg);
  cudaFree(dr);
  cudaFree(didx);
  cudaFree(dval);
}

// The warm path's pieces against a CPU reference on the same data: the first pass (error
// feedback, moments, the histogram and the candidates above a bound), then the selection
// decided on the device (ascending indices, exact values, zeroed residual). Run on an
// aligned vector (the float4 kernel) and one offset by a float (the scalar kernel), with
// room for every candidate and with too little (then nothing may be selected or zeroed).
TEST(CudaGaussianK, WarmPassMatchesCpuReference) {
  SKIP_WITHOUT_GPU();
  const long long n = (1 << 22) + 3;
  std::mt19937 rng(29);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> g(n), r(n), comp(n);
  for (auto& v : g) v = nd(rng);
  for (auto& v : r) v = 0.1f * nd(rng);
  for (long long i = 0; i < n; ++i) comp[i] = r[i] + g[i];
  const float bound = 2.8f;  // ~0.5% of the elements above
  const cuda::ThresholdBins bins = detail::make_threshold_bins(bound);
  std::vector<unsigned int> hist(detail::kThresholdBins, 0);
  std::vector<long long> above_ref;
  double sum = 0, sumsq = 0;
  for (long long i = 0; i < n; ++i) {
    sum += comp[i];
    sumsq += static_cast<double>(comp[i]) * comp[i];
    if (std::fabs(comp[i]) > bound) {
      above_ref.push_back(i);
      ++hist[detail::threshold_bin(bins.edge, std::fabs(comp[i]))];
    }
  }
  const long long above = static_cast<long long>(above_ref.size());
  float *dg, *dr, *dval, *oval;
  unsigned int *didx, *oidx;
  cuda::FirstPassSummary* dsum;
  ASSERT_EQ(cudaMalloc(&dg, (n + 1) * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dr, (n + 1) * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&didx, n * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dval, n * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&oidx, n * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&oval, n * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dsum, sizeof(cuda::FirstPassSummary)), cudaSuccess);
  for (int offset : {0, 1}) {
    for (long long cap : {n, above / 2}) {
      SCOPED_TRACE("offset " + std::to_string(offset) + " cap " + std::to_string(cap));
      float* xr = dr + offset;
      float* xg = dg + offset;
      cudaMemcpy(xg, g.data(), n * 4, cudaMemcpyHostToDevice);
      cudaMemcpy(xr, r.data(), n * 4, cudaMemcpyHostToDevice);
      cuda::FirstPassSummary hs;
      ASSERT_EQ(cuda::first_pass(xr, xg, n, &bins, didx, dval, cap, dsum, &hs, nullptr),
                cudaSuccess);
      EXPECT_EQ(hs.nonfinite, 0u);
      EXPECT_NEAR(hs.sum, sum, 1e-9 * sumsq);
      EXPECT_NEAR(hs.sumsq, sumsq, 1e-9 * sumsq);
      ASSERT_EQ(static_cast<long long>(hs.above), above);
      for (int j = 0; j < detail::kThresholdBins; ++j) ASSERT_EQ(hs.hist[j], hist[j]) << j;
      std::vector<float> res(n);
      cudaMemcpy(res.data(), xr, n * 4, cudaMemcpyDeviceToHost);
      ASSERT_EQ(std::memcmp(res.data(), comp.data(), n * 4), 0);  // r += g, bit for bit
      const long long kept = std::min(cap, above);
      std::vector<unsigned int> ci(kept);
      std::vector<float> cv(kept);
      cudaMemcpy(ci.data(), didx, kept * 4, cudaMemcpyDeviceToHost);
      cudaMemcpy(cv.data(), dval, kept * 4, cudaMemcpyDeviceToHost);
      std::vector<char> seen(n, 0);
      for (long long q = 0; q < kept; ++q) {
        ASSERT_LT(ci[q], static_cast<unsigned>(n));
        ASSERT_EQ(seen[ci[q]], 0) << "candidate twice";
        seen[ci[q]] = 1;
        ASSERT_EQ(cv[q], comp[ci[q]]);
        ASSERT_GT(std::fabs(cv[q]), bound);
      }
      // The selection decided on the device, for a k that an edge's count matches (an
      // edge near a fifth of the candidates).
      int j = 0;
      long long k = above;
      while (j + 1 < detail::kThresholdBins && k > above / 5) k -= hist[j++];
      const std::size_t bytes = cuda::warm_select_scratch_bytes(n);
      void* temp = nullptr;
      ASSERT_EQ(cudaMalloc(&temp, bytes), cudaSuccess);
      ASSERT_EQ(cuda::warm_select(dsum, bins, k, cap, didx, dval, n, xr, xr, oidx, oval, temp,
                                  bytes, nullptr),
                cudaSuccess);
      ASSERT_EQ(cuda::read_summary(dsum, &hs, nullptr), cudaSuccess);
      cudaFree(temp);
      cudaMemcpy(res.data(), xr, n * 4, cudaMemcpyDeviceToHost);
      if (cap < above) {  // not every candidate kept: not usable, nothing selected or zeroed
        EXPECT_EQ(hs.usable, 0u);
        ASSERT_EQ(std::memcmp(res.data(), comp.data(), n * 4), 0);
        continue;
      }
      ASSERT_EQ(hs.usable, 1u);
      ASSERT_GE(hs.bin, 0);
      ASSERT_EQ(hs.threshold, bins.edge[hs.bin]);
      const float t = hs.threshold;
      std::vector<long long> want;
      for (long long i : above_ref)
        if (std::fabs(comp[i]) > t) want.push_back(i);
      const long long count = static_cast<long long>(want.size());
      ASSERT_EQ(static_cast<long long>(hs.chosen), count);
      EXPECT_EQ(count, k);  // the edge whose count is k itself
      std::vector<unsigned int> oi(count);
      std::vector<float> ov(count);
      cudaMemcpy(oi.data(), oidx, count * 4, cudaMemcpyDeviceToHost);
      cudaMemcpy(ov.data(), oval, count * 4, cudaMemcpyDeviceToHost);
      for (long long q = 0; q < count; ++q) {
        ASSERT_EQ(static_cast<long long>(oi[q]), want[q]);  // ascending, the same set
        ASSERT_EQ(ov[q], comp[want[q]]);
      }
      long long q = 0;
      for (long long i = 0; i < n; ++i) {
        if (q < count && want[q] == i) {
          ASSERT_EQ(res[i], 0.f);
          ++q;
        } else {
          ASSERT_EQ(res[i], comp[i]);
        }
      }
    }
  }
  // Read-only (no error feedback): x is the gradient, left as it was.
  cudaMemcpy(dg, g.data(), n * 4, cudaMemcpyHostToDevice);
  cuda::FirstPassSummary hs;
  ASSERT_EQ(cuda::first_pass(nullptr, dg, n, &bins, didx, dval, n, dsum, &hs, nullptr),
            cudaSuccess);
  std::vector<float> back(n);
  cudaMemcpy(back.data(), dg, n * 4, cudaMemcpyDeviceToHost);
  EXPECT_EQ(std::memcmp(back.data(), g.data(), n * 4), 0);
  long long above_g = 0;
  for (float v : g) above_g += std::fabs(v) > bound;
  EXPECT_EQ(static_cast<long long>(hs.above), above_g);
  for (void* p : std::initializer_list<void*>{dg, dr, didx, dval, oidx, oval, dsum})
    cudaFree(p);
}

TEST(CudaCompressor, CudaPathMatchesCpuPath) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA LibTorch or no device";
  torch::manual_seed(9);
  const std::int64_t n = 1 << 22;
  auto g = torch::randn({n});
  auto r_cpu = torch::randn({n}) * 0.1;
  auto g_gpu = g.cuda();
  auto r_gpu = r_cpu.cuda();
  // topk: exactly the CPU's selection (ties aside: continuous random data has none).
  {
    auto cpu = make_compressor("topk"), gpu = make_compressor("topk");
    auto rc = r_cpu.clone(), rg = r_gpu.clone();
    const auto sc = cpu->compress(g, rc, 0.001);
    const auto sg = gpu->compress(g_gpu, rg, 0.001);
    EXPECT_TRUE(torch::equal(sg.indices.cpu().to(torch::kInt64), sc.indices.to(torch::kInt64)));
    EXPECT_TRUE(torch::equal(sg.values.cpu(), sc.values));
    EXPECT_TRUE(torch::equal(rg.cpu(), rc));
  }
  // gaussiank: its threshold comes from moments summed in another order than the CPU's,
  // so the sets may differ at the margin; the error-feedback invariant and the count
  // band must hold exactly as on the CPU.
  {
    auto gpu = make_compressor("gaussiank");
    auto rg = r_gpu.clone();
    const auto old_plus_g = (r_cpu + g);
    const auto sg = gpu->compress(g_gpu, rg, 0.001);
    const auto sent = sg.to_dense();
    EXPECT_TRUE(torch::equal(sent.cpu() + rg.cpu(), old_plus_g));
    const double k = std::ceil(0.001 * n);
    EXPECT_GE(sg.nnz(), 2 * k / 3);
    EXPECT_LE(sg.nnz(), 4 * k / 3);
  }
}

// The compressor on the device over an error-feedback stream: every step keeps the
// invariant bit for bit, lands in the band and sends ascending int32 indices. A call that
// follows a call at the same scale reads its threshold off the first pass's histogram and
// selects from its candidates: one pass. The others may take more: the cold call, the
// second (its residual is the first's leftovers plus a fresh gradient, sqrt(2) wider, and
// its candidates overflow), each x10 step (a jump the margin misses) and the step after
// it (the residual falls back). First device run (H200): 2212211221123112, one pass on
// exactly the 7 calls that follow one at the same scale.
TEST(CudaCompressor, WarmGaussianKIsOnePassAndKeepsTheInvariant) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA LibTorch or no device";
  torch::manual_seed(31);
  const std::int64_t n = (1 << 22) + 5;
  const double density = 0.001;
  const double k = std::ceil(density * n);
  auto c = make_compressor("gaussiank");
  auto residual = torch::zeros({n}, torch::kCUDA);
  int one_pass = 0, one_pass_expected = 0;
  std::string passes;
  for (int step = 0; step < 16; ++step) {
    // Four gradients cycled, one of them ten times the others (a jump the margin misses).
    auto g = torch::randn({n}, torch::kCUDA) * (step % 4 == 3 ? 0.1 : 0.01);
    const auto before = residual.cpu() + g.cpu();
    const auto s = c->compress(g, residual, density);
    ASSERT_EQ(s.indices.scalar_type(), torch::kInt32);
    ASSERT_TRUE(s.indices.is_cuda());
    const auto idx = s.indices.cpu().to(torch::kInt64);
    if (idx.numel() > 1) {
      ASSERT_TRUE((idx.slice(0, 1) > idx.slice(0, 0, -1)).all().item<bool>()) << "step " << step;
    }
    ASSERT_TRUE(torch::equal(s.to_dense().cpu() + residual.cpu(), before)) << "step " << step;
    EXPECT_GE(s.nnz(), 2 * k / 3) << "step " << step;
    EXPECT_LE(s.nnz(), 4 * k / 3) << "step " << step;
    EXPECT_EQ(c->last_stats().selected, s.nnz());
    const bool same_scale_as_before = step >= 2 && step % 4 != 0 && step % 4 != 3;
    if (same_scale_as_before) {
      EXPECT_EQ(c->last_stats().passes, 1) << "step " << step;
      ++one_pass_expected;
    }
    EXPECT_LE(c->last_stats().passes, 3) << "step " << step;
    one_pass += c->last_stats().passes == 1;
    passes += std::to_string(c->last_stats().passes);
  }
  std::printf("[ measure ] cuda gaussiank passes per call: %s\n", passes.c_str());
  EXPECT_GE(one_pass, one_pass_expected) << passes;
}

}  // namespace
}  // namespace cutlayer::kernels
