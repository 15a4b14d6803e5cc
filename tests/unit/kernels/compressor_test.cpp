#include "cutlayer/kernels/compressor.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <set>

#include "cutlayer/error.h"

namespace cutlayer::kernels {
namespace {

std::set<std::int64_t> index_set(const SparseTensor& s) {
  auto i = s.indices.to(torch::kInt64);
  return {i.data_ptr<std::int64_t>(), i.data_ptr<std::int64_t>() + i.numel()};
}

bool bitwise_equal(const torch::Tensor& a, const torch::Tensor& b) {
  return a.sizes() == b.sizes() && std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()) == 0;
}

void expect_ascending_unique(const SparseTensor& s) {
  auto i = s.indices.to(torch::kInt64);
  const auto* p = i.data_ptr<std::int64_t>();
  for (std::int64_t j = 1; j < i.numel(); ++j) ASSERT_LT(p[j - 1], p[j]) << "at " << j;
}

TEST(Compressor, FactoryKnowsItsNamesAndRefusesOthers) {
  for (const auto& n : compressor_names()) EXPECT_EQ(make_compressor(n)->name(), n);
  EXPECT_THROW(make_compressor("top-k"), ConfigError);
}

TEST(Compressor, TopKSelectsExactlyTorchTopKSet) {
  torch::manual_seed(1);
  for (std::int64_t n : {1000, 100003, 1 << 20}) {
    for (double density : {0.001, 0.01, 0.1}) {
      auto g = torch::randn({n});
      auto residual = torch::randn({n}) * 0.1;
      const auto compensated = residual + g;
      const std::int64_t k = target_k(n, density);
      auto expect_idx = std::get<1>(compensated.abs().topk(k));
      std::set<std::int64_t> expected(expect_idx.data_ptr<std::int64_t>(),
                                      expect_idx.data_ptr<std::int64_t>() + k);
      auto c = make_compressor("topk");
      const auto s = c->compress(g, residual, density);
      EXPECT_EQ(s.nnz(), k);
      EXPECT_EQ(index_set(s), expected) << "n=" << n << " density=" << density;
      expect_ascending_unique(s);
    }
  }
}

TEST(Compressor, ErrorFeedbackInvariantIsBitwise) {
  torch::manual_seed(2);
  for (const auto& name : compressor_names()) {
    auto c = make_compressor(name, {});
    const std::int64_t n = 300007;
    auto residual = torch::zeros({n});
    for (int step = 0; step < 4; ++step) {
      auto g = torch::randn({n}) * (step + 1);
      const auto old_plus_g = residual + g;  // what must be conserved
      const auto s = c->compress(g, residual, 0.01);
      const auto sent = s.to_dense();
      // Exact: every element is either sent (and zero in the residual) or kept.
      EXPECT_TRUE(bitwise_equal(sent + residual, old_plus_g)) << name << " step " << step;
      EXPECT_TRUE(torch::all((sent == 0) | (residual == 0)).item<bool>()) << name;
    }
  }
}

TEST(Compressor, GaussianKCountLandsInBandOnGaussianData) {
  torch::manual_seed(3);
  for (const char* name : {"gaussiank", "sampledk"}) {
    auto c = make_compressor(name);
    for (double density : {0.001, 0.01, 0.05}) {
      for (int rep = 0; rep < 3; ++rep) {
        const std::int64_t n = 1 << 20;
        auto g = torch::randn({n}) * 0.01 + 0.001;
        auto residual = torch::zeros({n});
        const auto s = c->compress(g, residual, density);
        const double k = static_cast<double>(target_k(n, density));
        EXPECT_GE(s.nnz(), 2 * k / 3) << name << " density " << density;
        EXPECT_LE(s.nnz(), 4 * k / 3) << name << " density " << density;
        expect_ascending_unique(s);
      }
    }
  }
}

// Heavy tails: the Gaussian threshold misses. Measured and printed, not hidden: the
// test asserts only what the algorithm guarantees (a non-empty, valid selection) and
// records the ratio selected/k, which the closing note reports.
TEST(Compressor, GaussianKOnHeavyTailedDataReportsItsMiss) {
  torch::manual_seed(4);
  const std::int64_t n = 1 << 20;
  const double density = 0.001;
  const double k = static_cast<double>(target_k(n, density));
  auto u = torch::rand({n}) - 0.5;
  const auto laplace = -torch::sign(u) * torch::log1p(-2 * u.abs());
  const auto normal = torch::randn({n});
  const auto chi2 = torch::randn({n, 3}).pow(2).sum(1);
  const auto student_t3 = torch::randn({n}) / torch::sqrt(chi2 / 3);
  for (const auto& [label, data] : {std::pair<const char*, torch::Tensor>{"laplace", laplace},
                                    {"student-t3", student_t3}}) {
    for (int corrections : {0, 3}) {
      CompressorOptions o;
      o.max_corrections = corrections;
      auto c = make_compressor("gaussiank", o);
      auto residual = torch::zeros({n});
      const auto s = c->compress(data.contiguous(), residual, density);
      const double ratio = s.nnz() / k;
      std::printf("[ measure ] gaussiank %s density %.3f corrections %d: selected/k = %.3f (%d passes)\n",
                  label, density, corrections, ratio, c->last_stats().passes);
      EXPECT_GT(s.nnz(), 0);
      expect_ascending_unique(s);
      if (corrections == 3) {
        // With corrections the count must be nearer the band than the raw threshold's.
        EXPECT_GT(ratio, 0.3) << label;
        EXPECT_LT(ratio, 3.0) << label;
      }
    }
  }
  (void)normal;
}

TEST(Compressor, RandomKSelectsKDistinctPositions) {
  auto c = make_compressor("randomk", {true, 3, 42});
  auto g = torch::randn({50000});
  auto residual = torch::zeros({50000});
  const auto s = c->compress(g, residual, 0.01);
  EXPECT_EQ(s.nnz(), 500);
  expect_ascending_unique(s);
}

TEST(Compressor, WithoutErrorFeedbackTheGradientIsUntouched) {
  CompressorOptions o;
  o.error_feedback = false;
  for (const auto& name : compressor_names()) {
    auto c = make_compressor(name, o);
    auto g = torch::randn({10000});
    const auto copy = g.clone();
    torch::Tensor none;
    const auto s = c->compress(g, none, 0.05);
    EXPECT_TRUE(torch::equal(g, copy)) << name;
    // What was sent is the gradient at those positions.
    const auto sent = s.to_dense();
    const auto mask = sent != 0;
    EXPECT_TRUE(torch::equal(sent.masked_select(mask), g.masked_select(mask))) << name;
  }
}

TEST(Compressor, EdgeCases) {
  for (const auto& name : compressor_names()) {
    auto c = make_compressor(name);
    // numel 0
    auto g0 = torch::empty({0});
    auto r0 = torch::empty({0});
    EXPECT_EQ(c->compress(g0, r0, 0.01).nnz(), name == "none" ? 0 : 0) << name;
    // numel 1: k is 1, the element is sent
    auto g1 = torch::tensor({2.5f});
    auto r1 = torch::zeros({1});
    const auto s1 = c->compress(g1, r1, 0.01);
    EXPECT_FLOAT_EQ(s1.to_dense()[0].item<float>(), 2.5f) << name;
    EXPECT_EQ(r1[0].item<float>(), 0.f) << name;
    // k >= numel: density 1 sends everything
    auto g = torch::randn({1000});
    auto r = torch::zeros({1000});
    const auto s = c->compress(g, r, 1.0);
    if (name != "gaussiank" && name != "sampledk") {
      EXPECT_TRUE(torch::equal(s.to_dense(), g)) << name;
    } else {
      EXPECT_EQ(s.nnz(), 1000) << name;
    }
    // bad arguments
    EXPECT_THROW(c->compress(g, r, 0.0), Error) << name;
    EXPECT_THROW(c->compress(g, r, 1.5), Error) << name;
    auto wrong = torch::zeros({999});
    EXPECT_THROW(c->compress(g, wrong, 0.1), Error) << name;
    EXPECT_THROW(c->compress(g.to(torch::kFloat64), r, 0.1), Error) << name;
  }
}

TEST(Compressor, NonFiniteGradientIsRefusedAndResidualReset) {
  for (const auto& name : compressor_names()) {
    for (float bad : {NAN, INFINITY}) {
      auto c = make_compressor(name);
      auto g = torch::randn({100000});
      g[12345] = bad;
      auto r = torch::ones({100000});
      try {
        c->compress(g, r, 1.0);  // density 1 so randomk reads every element too
        FAIL() << name << " accepted a non-finite gradient";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("NaN or Inf"), std::string::npos) << e.what();
      }
      EXPECT_TRUE(torch::all(r == 0).item<bool>()) << name << ": residual not reset";
    }
  }
}

TEST(Compressor, PerLayerSelectsWithinEachLayer) {
  torch::manual_seed(5);
  auto c = make_compressor("topk");
  // Layer 0 has tiny gradients, layer 1 large: whole-model selection would take nothing
  // from layer 0; per-layer takes k from each.
  auto g = torch::cat({torch::randn({10000}) * 1e-3, torch::randn({20000})});
  auto r = torch::zeros({30000});
  const auto s = compress_per_layer(*c, g, r, {10000, 20000}, 0.01);
  auto idx = s.indices.to(torch::kInt64);
  EXPECT_EQ((idx < 10000).sum().item<std::int64_t>(), 100);
  EXPECT_EQ((idx >= 10000).sum().item<std::int64_t>(), 200);
  auto r2 = torch::zeros({30000});
  const auto whole = make_compressor("topk")->compress(g, r2, 0.01);
  EXPECT_EQ((whole.indices.to(torch::kInt64) < 10000).sum().item<std::int64_t>(), 0);
  EXPECT_THROW(compress_per_layer(*c, g, r, {10000, 10000}, 0.01), Error);
}

}  // namespace
}  // namespace cutlayer::kernels
