#include "cutlayer/privacy/dcor.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "cutlayer/error.h"
#include "cutlayer/data/dataset.h"
#include "cutlayer/privacy/metrics.h"

namespace cutlayer::privacy {
namespace {

// Direct O(B^2) reference in double precision, loops only.
double reference_dcor(const torch::Tensor& x_in, const torch::Tensor& z_in, bool unbiased) {
  const auto x = x_in.reshape({x_in.size(0), -1}).to(torch::kFloat64).contiguous();
  const auto z = z_in.reshape({z_in.size(0), -1}).to(torch::kFloat64).contiguous();
  const int n = static_cast<int>(x.size(0));
  auto dist = [&](const torch::Tensor& m) {
    std::vector<std::vector<double>> d(n, std::vector<double>(n));
    const auto* p = m.data_ptr<double>();
    const auto dim = m.size(1);
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) {
        double s = 0;
        for (std::int64_t k = 0; k < dim; ++k) s += (p[i * dim + k] - p[j * dim + k]) * (p[i * dim + k] - p[j * dim + k]);
        d[i][j] = std::sqrt(s);
      }
    return d;
  };
  auto centre = [&](std::vector<std::vector<double>> d) {
    std::vector<double> row(n), col(n);
    double all = 0;
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) {
        row[i] += d[i][j];
        col[j] += d[i][j];
        all += d[i][j];
      }
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) {
        if (unbiased) d[i][j] = i == j ? 0 : d[i][j] - row[i] / (n - 2) - col[j] / (n - 2) + all / ((n - 1.0) * (n - 2));
        else d[i][j] = d[i][j] - row[i] / n - col[j] / n + all / (double(n) * n);
      }
    return d;
  };
  const auto a = centre(dist(x)), b = centre(dist(z));
  double ab = 0, aa = 0, bb = 0;
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      ab += a[i][j] * b[i][j];
      aa += a[i][j] * a[i][j];
      bb += b[i][j] * b[i][j];
    }
  if (unbiased) return ab / std::sqrt(aa * bb);  // dCor^2 (the normalizations cancel)
  return std::sqrt(ab / std::sqrt(aa * bb));
}

TEST(Dcor, MatchesDirectDoubleReference) {
  torch::manual_seed(1);
  for (int n : {5, 16, 40}) {
    const auto x = torch::randn({n, 3, 4, 4}, torch::kFloat64);
    const auto z = torch::tanh(x.reshape({n, -1}).narrow(1, 0, 20)) + 0.5 * torch::randn({n, 20}, torch::kFloat64);
    EXPECT_NEAR(dcor(x, z).item<double>(), reference_dcor(x, z, false), 1e-6) << n;
    EXPECT_NEAR(dcor2_unbiased(x, z).item<double>(), reference_dcor(x, z, true), 1e-6) << n;
  }
}

TEST(Dcor, OfAVariableWithItselfIsOne) {
  const auto x = torch::randn({32, 10}, torch::kFloat64);
  EXPECT_NEAR(dcor(x, x).item<double>(), 1.0, 1e-9);
  EXPECT_NEAR(dcor2_unbiased(x, x).item<double>(), 1.0, 1e-9);
}

TEST(Dcor, IndependentSamplesBiasCorrectedNearZeroBiasedNot) {
  torch::manual_seed(2);
  const auto x = torch::randn({500, 50}, torch::kFloat64);
  const auto z = torch::randn({500, 200}, torch::kFloat64);
  const double u = dcor2_unbiased(x, z).item<double>();
  const double b = dcor(x, z).item<double>();
  EXPECT_LT(std::abs(u), 0.01);
  EXPECT_GT(b, 0.1);  // the V-statistic's floor at finite n
  EXPECT_NEAR(permutation_floor(x, z, 3).item<double>(), b, 0.05);
}

TEST(Dcor, InvariantToScaleTranslationAndRotation) {
  torch::manual_seed(3);
  const auto x = torch::randn({30, 6}, torch::kFloat64);
  const auto z = x.pow(2) + 0.3 * torch::randn({30, 6}, torch::kFloat64);
  const auto q = std::get<0>(torch::linalg_qr(torch::randn({6, 6}, torch::kFloat64)));  // orthogonal
  const auto moved = 3.5 * x.mm(q) + 7.0;
  EXPECT_NEAR(dcor(moved, z).item<double>(), dcor(x, z).item<double>(), 1e-9);
  EXPECT_NEAR(dcor2_unbiased(moved, z).item<double>(), dcor2_unbiased(x, z).item<double>(), 1e-9);
}

TEST(Dcor, GradientMatchesFiniteDifferences) {
  torch::manual_seed(4);
  const auto x = torch::randn({12, 5}, torch::kFloat64);
  auto z = torch::randn({12, 4}, torch::kFloat64).requires_grad_(true);
  for (bool unbiased : {false, true}) {
    auto f = [&](const torch::Tensor& zz) { return unbiased ? dcor2_unbiased(x, zz) : dcor(x, zz); };
    auto value = f(z);
    const auto grad = torch::autograd::grad({value}, {z})[0];
    const double h = 1e-6;
    for (int i = 0; i < 12; i += 3)
      for (int j = 0; j < 4; ++j) {
        auto zp = z.detach().clone(), zm = z.detach().clone();
        zp[i][j] += h;
        zm[i][j] -= h;
        const double fd = (f(zp).item<double>() - f(zm).item<double>()) / (2 * h);
        EXPECT_NEAR(grad[i][j].item<double>(), fd, 1e-6) << (unbiased ? "unbiased " : "biased ") << i << "," << j;
      }
  }
}

TEST(Dcor, HandWrittenBackwardMatchesAutogradAtTheCutLayer) {
  // X constant (data) takes the hand-written backward; X requiring grad the autograd one.
  torch::manual_seed(6);
  const auto x = torch::randn({64, 1, 28, 28});
  auto z = torch::relu(torch::randn({64, 32, 12, 12})).requires_grad_(true);
  auto fast = dcor(x, z);
  const auto g_fast = torch::autograd::grad({fast}, {z})[0];
  auto slow = dcor(x.clone().requires_grad_(true), z);
  const auto g_slow = torch::autograd::grad({slow}, {z})[0];
  EXPECT_NEAR(fast.item<double>(), slow.item<double>(), 1e-6);
  EXPECT_TRUE(torch::allclose(g_fast, g_slow, 1e-3, 1e-9)) << (g_fast - g_slow).abs().max().item<double>();
}

TEST(Dcor, ConstantActivationsGiveZeroNotNaN) {
  const auto x = torch::randn({16, 8});
  auto z = torch::full({16, 4}, 0.25f).requires_grad_(true);  // a collapsed layer
  auto d = dcor(x, z);
  EXPECT_EQ(d.item<float>(), 0.f);
  d.backward();
  EXPECT_TRUE(torch::isfinite(z.grad()).all().item<bool>());
  auto z2 = torch::full({16, 4}, 0.25f).requires_grad_(true);
  auto u = dcor2_unbiased(x, z2);
  EXPECT_EQ(u.item<float>(), 0.f);
  u.backward();
  EXPECT_TRUE(torch::isfinite(z2.grad()).all().item<bool>());
  EXPECT_THROW(dcor(torch::randn({4, 2}), torch::randn({5, 2})), Error);
  EXPECT_THROW(dcor2_unbiased(torch::randn({3, 2}), torch::randn({3, 2})), Error);
}

TEST(Metrics, SsimIdentityAndKnownValue) {
  torch::manual_seed(5);
  const auto x = torch::rand({2, 1, 28, 28});
  EXPECT_NEAR(ssim(x, x, 1.0), 1.0, 1e-12);
  // Constant images: SSIM = (2 c1 c2 + C1) / (c1^2 + c2^2 + C1), C1 = (0.01 L)^2.
  const double c1 = 0.2, c2 = 0.6, C1 = 1e-4;
  EXPECT_NEAR(ssim(torch::full({1, 1, 16, 16}, c1), torch::full({1, 1, 16, 16}, c2), 1.0),
              (2 * c1 * c2 + C1) / (c1 * c1 + c2 * c2 + C1), 1e-6);
  EXPECT_LT(ssim(x, torch::rand({2, 1, 28, 28}), 1.0), 0.2);
  EXPECT_NEAR(psnr(torch::zeros({10}, torch::kFloat64), torch::full({10}, 0.1, torch::kFloat64), 1.0), 20.0, 1e-9);
  EXPECT_NEAR(mse(torch::zeros({4}), torch::full({4}, 2.0)), 4.0, 1e-12);
}

TEST(Metrics, RocAucOnKnownScoreSets) {
  EXPECT_DOUBLE_EQ(roc_auc(torch::tensor({0.1, 0.4, 0.35, 0.8}), torch::tensor({0, 0, 1, 1})), 0.75);
  EXPECT_DOUBLE_EQ(roc_auc(torch::tensor({1.0, 2.0, 3.0, 4.0}), torch::tensor({0, 0, 1, 1})), 1.0);
  EXPECT_DOUBLE_EQ(roc_auc(torch::tensor({4.0, 3.0, 2.0, 1.0}), torch::tensor({0, 0, 1, 1})), 0.0);
  EXPECT_DOUBLE_EQ(roc_auc(torch::tensor({1.0, 1.0, 1.0, 1.0}), torch::tensor({0, 1, 0, 1})), 0.5);
  EXPECT_THROW(roc_auc(torch::tensor({1.0, 2.0}), torch::tensor({1, 1})), Error);
}

}  // namespace
}  // namespace cutlayer::privacy

// The handbook's calibration: independent 4,608-dim activations against Fashion-MNIST
// test images score a biased dCor of about 0.73 at n = 64 and 0.33 at n = 2,000.
namespace cutlayer::privacy {
namespace {
TEST(Dcor, PermutationFloorMatchesTheHandbookOnFashionMnist) {
  torch::manual_seed(6);
  const auto test = data::load_fashion_mnist(data::kFashionMnistDir, false, {});
  const auto images = test.x.narrow(0, 0, 2000).reshape({2000, -1});
  const auto z = torch::randn({2000, 4608});
  const double small = dcor(images.narrow(0, 0, 64), z.narrow(0, 0, 64)).item<double>();
  const double large = dcor(images, z).item<double>();
  std::printf("[ measure ] independent 4608-dim vs Fashion-MNIST: biased dCor %.3f at n=64, %.3f at n=2000\n",
              small, large);
  EXPECT_NEAR(small, 0.73, 0.05);
  EXPECT_NEAR(large, 0.33, 0.03);
  EXPECT_LT(std::abs(dcor2_unbiased(images, z).item<double>()), 0.01);
}
}  // namespace
}  // namespace cutlayer::privacy
