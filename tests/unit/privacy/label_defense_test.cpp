// The U-shaped label defence: off, it is the identity and the plain backward; on, what
// leaves the client is the logit gradient plus zero-mean noise in the rows' sum-zero
// subspace, of standard deviation sigma * max(row norm, batch median), optionally after
// clipping the rows to the median; the head itself still learns from the true gradient.
#include "cutlayer/privacy/label_defense.h"

#include <gtest/gtest.h>

#include <limits>
#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "cutlayer/error.h"

namespace cutlayer::privacy {
namespace {

LabelDefenseOptions noise(double sigma, bool clip = false) {
  LabelDefenseOptions o;
  o.kind = "noise";
  o.sigma = sigma;
  o.clip = clip;
  return o;
}

// Rows in the sum-zero subspace (as softmax - onehot is) with the given norms, double.
torch::Tensor rows_with_norms(const std::vector<double>& norms, std::int64_t k, std::uint64_t seed) {
  torch::manual_seed(seed);
  auto g = torch::randn({static_cast<std::int64_t>(norms.size()), k}, torch::kFloat64);
  g = g - g.mean(1, true);
  g = g / g.norm(2, 1, true) * torch::tensor(norms, torch::kFloat64).unsqueeze(1);
  return g;
}

// A realistic logit gradient: (softmax(l) - onehot(y)) / batch.
torch::Tensor logit_grad(std::int64_t n, std::int64_t k, std::uint64_t seed) {
  torch::manual_seed(seed);
  const auto l = torch::randn({n, k}, torch::kFloat64) * 2;
  const auto y = torch::randint(k, {n}, torch::kInt64);
  return (torch::softmax(l, 1) - torch::one_hot(y, k).to(torch::kFloat64)) / static_cast<double>(n);
}

TEST(LabelDefense, KindNoneReturnsTheGradientUnchanged) {
  const auto g = logit_grad(8, 5, 1);
  LabelDefenseOptions o;
  EXPECT_FALSE(o.active());
  const auto out = defend_logit_grad(g, o);
  EXPECT_TRUE(torch::equal(out, g));
  // A sigma with kind none does nothing either (the config refuses it; the code ignores it).
  o.sigma = 3;
  EXPECT_TRUE(torch::equal(defend_logit_grad(g, o), g));
  EXPECT_TRUE(noise(1).active());
}

TEST(LabelDefense, KindsAreNoneAndNoise) {
  EXPECT_EQ(label_defense_kinds(), (std::vector<std::string>{"none", "noise"}));
}

TEST(LabelDefense, UnknownKindIsAConfigError) {
  LabelDefenseOptions o;
  o.kind = "bogus";
  o.sigma = 1;
  EXPECT_THROW(defend_logit_grad(logit_grad(4, 3, 2), o), ConfigError);

  torch::nn::Linear head(3, 2);
  const auto h = torch::randn({4, 3}).requires_grad_(true);
  const auto logits = head->forward(h);
  const auto loss = torch::nn::functional::cross_entropy(logits, torch::tensor({0, 1, 0, 1}, torch::kInt64));
  EXPECT_THROW(head_backward(h, logits, loss, o), ConfigError);
}

TEST(LabelDefense, MalformedGradientIsRefused) {
  EXPECT_THROW(defend_logit_grad(torch::randn({6}), noise(1)), Error);
  EXPECT_THROW(defend_logit_grad(torch::randn({2, 3, 4}), noise(1)), Error);
  EXPECT_THROW(defend_logit_grad(torch::zeros({0, 4}), noise(1)), Error);
}

TEST(LabelDefense, AllZeroGradientHasNothingToHide) {
  const auto g = torch::zeros({5, 4});
  const auto out = defend_logit_grad(g, noise(2, true));
  EXPECT_TRUE(torch::equal(out, g));
}

// A batch mostly of confident examples (rows exactly 0 once the softmax rounds to one-hot)
// must not send its few informative rows unprotected: the scale is the median of the rows
// that carry anything.
TEST(LabelDefense, MostlyZeroRowsStillProtectTheRest) {
  auto g = torch::zeros({8, 4}, torch::kFloat64);
  g[0] = torch::tensor({0.3, -0.1, -0.1, -0.1}, torch::kFloat64);
  g[1] = torch::tensor({-0.2, 0.4, -0.1, -0.1}, torch::kFloat64);
  torch::manual_seed(5);
  const auto out = defend_logit_grad(g, noise(2, false));
  EXPECT_GT((out[0] - g[0]).norm().item<double>(), 1e-3);
  EXPECT_GT((out[1] - g[1]).norm().item<double>(), 1e-3);
  EXPECT_GT((out[5] - g[5]).norm().item<double>(), 1e-3);  // the zero rows get noise of the live median's size
  EXPECT_THROW(defend_logit_grad(g * std::numeric_limits<double>::infinity(), noise(2, false)), cutlayer::Error);
}

TEST(LabelDefense, NoisyRowsStayInTheSumZeroSubspace) {
  const auto g = logit_grad(16, 10, 3);
  ASSERT_LT(g.sum(1).abs().max().item<double>(), 1e-15);
  for (bool clip : {false, true}) {
    torch::manual_seed(4);
    const auto out = defend_logit_grad(g, noise(5, clip));
    ASSERT_EQ(out.sizes(), g.sizes());
    EXPECT_FALSE(torch::allclose(out, g)) << clip;               // noise was added
    EXPECT_LT(out.sum(1).abs().max().item<double>(), 1e-12) << clip;  // every row still sums to 0
  }
  // Float, as training sends it.
  const auto gf = g.to(torch::kFloat32);
  const auto outf = defend_logit_grad(gf, noise(5));
  EXPECT_EQ(outf.scalar_type(), torch::kFloat32);
  EXPECT_LT(outf.sum(1).abs().max().item<double>(), 1e-5 * outf.abs().max().item<double>());
}

// Per row: the noise's element std over many draws is sigma * max(|g_i|, median) *
// sqrt(1 - 1/K) (iid Gaussian, then the row mean removed); its mean is 0.
TEST(LabelDefense, NoiseStdScalesWithTheRowNormOrTheMedianAndIsZeroMean) {
  const std::vector<double> norms{0.1, 0.5, 1.0, 2.0, 4.0};  // median 1
  const std::int64_t k = 10;
  const auto g = rows_with_norms(norms, k, 5);
  const double sigma = 0.5;
  const int draws = 3000;
  torch::manual_seed(6);
  auto sum = torch::zeros_like(g), sum2 = torch::zeros_like(g);
  for (int t = 0; t < draws; ++t) {
    const auto d = defend_logit_grad(g, noise(sigma)) - g;
    sum += d;
    sum2 += d * d;
  }
  const auto mean = sum / draws;
  const auto var = sum2 / draws - mean * mean;
  for (std::size_t i = 0; i < norms.size(); ++i) {
    const double s = sigma * std::max(norms[i], 1.0) * std::sqrt(1.0 - 1.0 / k);
    const double got = std::sqrt(var[i].mean().item<double>());
    EXPECT_NEAR(got, s, 0.05 * s) << "row " << i << " (norm " << norms[i] << ")";
    // Zero mean: every element's average within 5 standard errors of the true gradient.
    EXPECT_LT((mean[i]).abs().max().item<double>(), 5 * s / std::sqrt(draws)) << "row " << i;
  }
  // The rows below the median get the median's noise, not their own (tiny) size's.
  EXPECT_NEAR(std::sqrt(var[0].mean().item<double>()) / std::sqrt(var[2].mean().item<double>()), 1.0, 0.07);
  EXPECT_NEAR(std::sqrt(var[4].mean().item<double>()) / std::sqrt(var[2].mean().item<double>()), 4.0, 0.3);
}

TEST(LabelDefense, ClipWithoutNoiseCapsRowsAtTheMedianAndLeavesTheRestAlone) {
  const std::vector<double> norms{0.2, 3.0, 0.7, 1.5, 5.0, 1.0, 0.05};  // median 1
  const auto g = rows_with_norms(norms, 6, 7);
  const auto out = defend_logit_grad(g, noise(0, true));
  const auto out_norms = out.norm(2, 1);
  for (std::size_t i = 0; i < norms.size(); ++i) {
    const auto r = static_cast<std::int64_t>(i);
    EXPECT_LE(out_norms[r].item<double>(), 1.0 + 1e-12) << "row " << i;
    if (norms[i] <= 1.0) {
      EXPECT_TRUE(torch::equal(out[r], g[r])) << "row " << i << " is at or below the median";
    } else {
      EXPECT_NEAR(out_norms[r].item<double>(), 1.0, 1e-12) << "row " << i;
      // Scaled, not turned: the same direction.
      EXPECT_TRUE(torch::allclose(out[r], g[r] / norms[i], 1e-10, 1e-12)) << "row " << i;
    }
  }
  // Without clip and without noise the defence sends the gradient as it is.
  EXPECT_TRUE(torch::allclose(defend_logit_grad(g, noise(0, false)), g, 0, 0));
}

TEST(LabelDefense, ClipMakesEveryRowsNoiseTheMediansSize) {
  const std::vector<double> norms{0.1, 0.5, 1.0, 2.0, 4.0};  // median 1; clipped: all <= 1
  const std::int64_t k = 8;
  const auto g = rows_with_norms(norms, k, 8);
  const double sigma = 1.0;
  const int draws = 3000;
  const auto clipped = defend_logit_grad(g, noise(0, true));
  torch::manual_seed(9);
  auto sum = torch::zeros_like(g), sum2 = torch::zeros_like(g);
  for (int t = 0; t < draws; ++t) {
    const auto d = defend_logit_grad(g, noise(sigma, true)) - clipped;
    sum += d;
    sum2 += d * d;
  }
  const auto mean = sum / draws;
  const auto var = sum2 / draws - mean * mean;
  const double s = sigma * std::sqrt(1.0 - 1.0 / k);  // max(clipped norm, 1) = 1 for every row
  for (std::size_t i = 0; i < norms.size(); ++i) {
    EXPECT_NEAR(std::sqrt(var[static_cast<std::int64_t>(i)].mean().item<double>()), s, 0.05 * s) << "row " << i;
    EXPECT_LT(mean[static_cast<std::int64_t>(i)].abs().max().item<double>(), 5 * s / std::sqrt(draws)) << "row " << i;
  }
}

TEST(LabelDefense, DrawsFromTheGlobalGenerator) {
  const auto g = logit_grad(6, 4, 10);
  torch::manual_seed(11);
  const auto a = defend_logit_grad(g, noise(1));
  torch::manual_seed(11);
  const auto b = defend_logit_grad(g, noise(1));
  const auto c = defend_logit_grad(g, noise(1));
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(b, c));
}

// A small head and its batch; `copy` gets the same weights.
struct Head {
  torch::nn::Linear lin{torch::nn::LinearOptions(6, 4)};
  torch::Tensor y;
  Head() {
    torch::manual_seed(12);
    lin = torch::nn::Linear(torch::nn::LinearOptions(6, 4));
    y = torch::tensor({0, 1, 2, 3, 0, 1, 2, 3}, torch::kInt64);
  }
  torch::nn::Linear copy() const {
    torch::nn::Linear c(torch::nn::LinearOptions(6, 4));
    torch::NoGradGuard no_grad;
    c->weight.copy_(lin->weight);
    c->bias.copy_(lin->bias);
    return c;
  }
};

TEST(LabelDefense, HeadBackwardWithoutDefenceIsThePlainBackward) {
  Head head;
  auto ref = head.copy();
  torch::manual_seed(13);
  const auto h0 = torch::randn({8, 6});
  auto h = h0.clone().requires_grad_(true);
  auto logits = head.lin->forward(h);
  auto loss = torch::nn::functional::cross_entropy(logits, head.y);
  const auto dh = head_backward(h, logits, loss, LabelDefenseOptions{});

  auto h_ref = h0.clone().requires_grad_(true);
  auto loss_ref = torch::nn::functional::cross_entropy(ref->forward(h_ref), head.y);
  loss_ref.backward();
  ASSERT_TRUE(dh.defined());
  EXPECT_TRUE(torch::allclose(dh, h_ref.grad(), 1e-6, 1e-7));
  EXPECT_TRUE(torch::allclose(head.lin->weight.grad(), ref->weight.grad(), 1e-6, 1e-7));
  EXPECT_TRUE(torch::allclose(head.lin->bias.grad(), ref->bias.grad(), 1e-6, 1e-7));
}

TEST(LabelDefense, HeadBackwardWithDefenceGivesTheHeadTheTrueGradientAndTheServerTheNoisyOne) {
  Head head;
  auto ref = head.copy();
  torch::manual_seed(14);
  const auto h0 = torch::randn({8, 6});
  const auto o = noise(1.0, true);

  auto h = h0.clone().requires_grad_(true);
  auto logits = head.lin->forward(h);
  auto loss = torch::nn::functional::cross_entropy(logits, head.y);
  torch::manual_seed(15);
  const auto dh = head_backward(h, logits, loss, o);

  auto h_ref = h0.clone().requires_grad_(true);
  auto logits_ref = ref->forward(h_ref);
  auto loss_ref = torch::nn::functional::cross_entropy(logits_ref, head.y);
  const auto dlogits = torch::autograd::grad({loss_ref}, {logits_ref}, {}, true)[0];
  loss_ref.backward();

  // The head's parameters: exactly the clean gradient (the defence does not slow the head).
  ASSERT_TRUE(head.lin->weight.grad().defined());
  EXPECT_TRUE(torch::allclose(head.lin->weight.grad(), ref->weight.grad(), 1e-6, 1e-7));
  EXPECT_TRUE(torch::allclose(head.lin->bias.grad(), ref->bias.grad(), 1e-6, 1e-7));
  // What goes to the server is not dL/dh...
  ASSERT_TRUE(dh.defined());
  ASSERT_EQ(dh.sizes(), h0.sizes());
  EXPECT_GT((dh - h_ref.grad()).abs().max().item<double>(), 1e-3);
  // ...but the head's backward of the defended logit gradient (the same draw): for a linear
  // head, sent @ W.
  torch::manual_seed(15);
  const auto sent = defend_logit_grad(dlogits, o);
  EXPECT_TRUE(torch::allclose(dh, sent.matmul(ref->weight), 1e-5, 1e-6));
}

TEST(LabelDefense, HeadBackwardWithClipOnlyIsTheClippedGradientsBackward) {
  Head head;
  auto ref = head.copy();
  torch::manual_seed(16);
  const auto h0 = torch::randn({8, 6}) * 3;
  const auto o = noise(0.0, true);
  auto h = h0.clone().requires_grad_(true);
  auto logits = head.lin->forward(h);
  const auto dh = head_backward(h, logits, torch::nn::functional::cross_entropy(logits, head.y), o);

  auto h_ref = h0.clone().requires_grad_(true);
  auto logits_ref = ref->forward(h_ref);
  auto loss_ref = torch::nn::functional::cross_entropy(logits_ref, head.y);
  const auto dlogits = torch::autograd::grad({loss_ref}, {logits_ref}, {}, true)[0];
  loss_ref.backward();
  const auto norms = dlogits.norm(2, 1, true);
  const auto m = norms.median().item<double>();
  const auto clipped = dlogits * (m / norms.clamp_min(m));
  EXPECT_TRUE(torch::allclose(dh, clipped.matmul(ref->weight), 1e-5, 1e-7));
  EXPECT_FALSE(torch::allclose(dh, h_ref.grad(), 1e-5, 1e-7));  // some row was above the median
  EXPECT_TRUE(torch::allclose(head.lin->weight.grad(), ref->weight.grad(), 1e-6, 1e-7));
}

}  // namespace
}  // namespace cutlayer::privacy
