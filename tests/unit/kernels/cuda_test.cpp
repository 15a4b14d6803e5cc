// GPU tests (label gpu): skip without a CUDA device. The raw kernels are checked against
// a CPU reference on the same data; with a CUDA LibTorch the compressor's CUDA path is
// checked against its CPU path.
#include "cutlayer/kernels/cuda.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
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

}  // namespace
}  // namespace cutlayer::kernels
