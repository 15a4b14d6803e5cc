// The decoder adversary: the decoder lands on the input's shape (transposed convolutions
// where the shapes allow, an MLP otherwise); the penalty is minus the decoder's normalised
// error, reaches the front through z, scales with the weight, the decoder learns over
// steps, and building it leaves the training's random stream alone.
#include "cutlayer/privacy/adversary.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <vector>

#include "cutlayer/error.h"
#include "cutlayer/privacy/dcor.h"

namespace cutlayer::privacy {
namespace {

std::vector<std::int64_t> shape_of(const torch::Tensor& t) { return t.sizes().vec(); }

TEST(Adversary, DecoderMapsAConvCutBackToTheImage) {
  torch::manual_seed(1);
  auto d = make_decoder({32, 12, 12}, {1, 28, 28});  // fmnist-cnn's cut
  ASSERT_FALSE(d->is_empty());
  EXPECT_NE(d[0]->as<torch::nn::ConvTranspose2d>(), nullptr) << "the convolutional decoder, not the MLP";
  torch::NoGradGuard no_grad;
  EXPECT_EQ(shape_of(d->forward(torch::randn({3, 32, 12, 12}))), (std::vector<std::int64_t>{3, 1, 28, 28}));
  // A deeper cut, several input channels.
  auto d2 = make_decoder({64, 4, 4}, {3, 16, 16});
  EXPECT_NE(d2[0]->as<torch::nn::ConvTranspose2d>(), nullptr);
  EXPECT_EQ(shape_of(d2->forward(torch::randn({2, 64, 4, 4}))), (std::vector<std::int64_t>{2, 3, 16, 16}));
}

TEST(Adversary, DecoderFallsBackToAnMlpForOtherShapes) {
  torch::manual_seed(2);
  torch::NoGradGuard no_grad;
  struct Case {
    std::vector<std::int64_t> cut, in;
  };
  const Case cases[] = {
      {{50}, {1, 28, 28}},         // a flat cut
      {{8, 20, 20}, {1, 28, 28}},  // doubling overshoots the input
      {{4, 7, 8}, {1, 28, 28}},    // height and width would need different kernels
      {{6, 5, 5}, {10}},           // a flat input
  };
  for (const auto& c : cases) {
    auto d = make_decoder(c.cut, c.in);
    ASSERT_FALSE(d->is_empty());
    EXPECT_NE(d[0]->as<torch::nn::Flatten>(), nullptr) << c.cut.size();
    auto z_shape = c.cut;
    z_shape.insert(z_shape.begin(), 4);
    auto want = c.in;
    want.insert(want.begin(), 4);
    EXPECT_EQ(shape_of(d->forward(torch::randn(z_shape))), want);
  }
}

// A fixed small batch whose z is an invertible (orthogonal) function of x.
struct Batch {
  torch::Tensor x, z;
  explicit Batch(std::uint64_t seed) {
    torch::manual_seed(seed);
    x = torch::randn({16, 1, 6, 6});
    const auto q = std::get<0>(torch::linalg::qr(torch::randn({36, 36})));
    z = x.flatten(1).matmul(q).detach().requires_grad_(true);
  }
};

AdversaryOptions weight(double w, double lr = 1e-3) {
  AdversaryOptions o;
  o.weight = w;
  o.lr = lr;
  return o;
}

TEST(Adversary, PenaltyIsMinusTheErrorAndReachesTheFront) {
  Batch b(3);
  DecoderAdversary adv(weight(2.0), 4);
  for (int i = 0; i < 60 && (i == 0 || adv.last_nmse() > 0.8); ++i) (void)adv.penalty(b.x, b.z.detach());
  ASSERT_LT(adv.last_nmse(), 0.8) << "the decoder should learn this batch";  // below the cap of 1
  const auto p = adv.penalty(b.x, b.z);
  ASSERT_EQ(p.dim(), 0);
  EXPECT_LT(p.item<double>(), 0.0);
  EXPECT_GT(adv.last_nmse(), 0.0);
  // After one small step the decoder's error is still about the one it started from.
  EXPECT_NEAR(-p.item<double>() / 2.0, adv.last_nmse(), 0.2 * adv.last_nmse());
  p.backward();
  ASSERT_TRUE(b.z.grad().defined());
  EXPECT_GT(b.z.grad().abs().max().item<double>(), 0.0);
}

// A decoder no better than the mean image (normalised error >= 1) gives the front nothing
// more to gain: the penalty stops at -weight and passes no gradient.
TEST(Adversary, PenaltyIsCappedAtTheWeight) {
  Batch b(7);
  DecoderAdversary adv(weight(3.0), 8);
  const auto noise_z = torch::randn_like(b.z).requires_grad_(true);  // carries nothing of x
  const auto p = adv.penalty(b.x, noise_z * 1e3);
  if (adv.last_nmse() >= 1.0) {
    EXPECT_DOUBLE_EQ(p.item<double>(), -3.0);
    p.backward();
    EXPECT_EQ(noise_z.grad().abs().max().item<double>(), 0.0);
  } else {
    EXPECT_NEAR(p.item<double>(), -3.0 * adv.last_nmse(), 0.5);
  }
  EXPECT_GE(p.item<double>(), -3.0);
}

TEST(Adversary, PenaltyScalesWithTheWeight) {
  Batch b(5);
  DecoderAdversary one(weight(1.0), 6), more(weight(2.5), 6);
  for (int step = 0; step < 3; ++step) {
    const auto p1 = one.penalty(b.x, b.z.detach()).item<double>();
    const auto p2 = more.penalty(b.x, b.z.detach()).item<double>();
    // The same seed and learning rate: the same decoder, whatever the weight.
    EXPECT_DOUBLE_EQ(one.last_nmse(), more.last_nmse()) << step;
    EXPECT_NEAR(p2, 2.5 * p1, 1e-6 * std::abs(p2)) << step;
  }
}

TEST(Adversary, TheDecoderLearnsOverSteps) {
  Batch b(7);
  DecoderAdversary adv(weight(1.0, 1e-3), 8);
  adv.penalty(b.x, b.z);
  const double first = adv.last_nmse();
  EXPECT_GT(first, 0.5);  // an untrained decoder knows nothing of x
  for (int step = 0; step < 200; ++step) adv.penalty(b.x, b.z);
  EXPECT_LT(adv.last_nmse(), 0.3 * first);
}

TEST(Adversary, TheSeedFixesTheDecoder) {
  Batch b(9);
  DecoderAdversary a(weight(1.0), 10), same(weight(1.0), 10), other(weight(1.0), 11);
  torch::manual_seed(100);
  a.penalty(b.x, b.z);
  torch::manual_seed(200);  // whatever the global generator's state
  same.penalty(b.x, b.z);
  other.penalty(b.x, b.z);
  EXPECT_DOUBLE_EQ(a.last_nmse(), same.last_nmse());
  EXPECT_NE(a.last_nmse(), other.last_nmse());
}

TEST(Adversary, ThePenaltyDrawsNothingFromTheGlobalGenerator) {
  Batch b(12);
  DecoderAdversary adv(weight(1.0), 13);
  torch::manual_seed(14);
  adv.penalty(b.x, b.z);  // builds the decoder from its own seed
  adv.penalty(b.x, b.z);  // a second Adam step
  const auto after = torch::randn({64});
  const auto after_small = torch::randn({3});
  torch::manual_seed(14);
  EXPECT_TRUE(torch::equal(after, torch::randn({64})));
  EXPECT_TRUE(torch::equal(after_small, torch::randn({3})));
}

TEST(Adversary, ConvolutionalCutWorksEndToEnd) {
  torch::manual_seed(15);
  const auto x = torch::rand({4, 1, 28, 28});
  const auto z = torch::randn({4, 32, 12, 12}).requires_grad_(true);
  DecoderAdversary adv(weight(0.5), 16);
  // Random z says nothing of x: let the decoder first learn these 4 pairs below the cap.
  for (int i = 0; i < 100 && (i == 0 || adv.last_nmse() > 0.9); ++i) (void)adv.penalty(x, z.detach());
  ASSERT_LT(adv.last_nmse(), 0.9);
  const auto p = adv.penalty(x, z);
  EXPECT_LT(p.item<double>(), 0.0);
  p.backward();
  EXPECT_GT(z.grad().abs().sum().item<double>(), 0.0);
}

TEST(Adversary, BatchesThatCannotBeUsedAreRefused) {
  DecoderAdversary adv(weight(1.0), 17);
  EXPECT_THROW(adv.penalty(torch::randn({1, 4}), torch::randn({1, 3})), Error);
  EXPECT_THROW(adv.penalty(torch::randn({4, 4}), torch::randn({3, 3})), Error);
}

// The client's terms, as every trainer composes them: nothing when both are off; alpha(step)
// * dCor (warm-up included) with its value reported; plus the adversary's penalty, which
// takes the adversary's step like a direct call would.
TEST(Adversary, ClientTermsComposeNoPeekAndThePenalty) {
  Batch b(12);
  PrivacyOptions p;
  double measured = -1;
  EXPECT_FALSE(client_terms(p, 0, b.x, b.z, nullptr, &measured).defined());
  EXPECT_EQ(measured, -1) << "no dCor is measured when alpha is 0";

  p.alpha = 0.5;
  p.alpha_warmup_steps = 10;
  const auto expected_dcor = dcor(b.x, b.z).item<double>();
  const auto at5 = client_terms(p, 5, b.x, b.z, nullptr, &measured).item<double>();
  EXPECT_DOUBLE_EQ(measured, expected_dcor);
  EXPECT_NEAR(at5, alpha_at(p, 5) * expected_dcor, 1e-6);
  EXPECT_NEAR(alpha_at(p, 5), 0.25, 1e-12);

  DecoderAdversary inside(weight(1.0), 13), beside(weight(1.0), 13);
  const auto both = client_terms(p, 20, b.x, b.z, &inside).item<double>();
  const auto penalty = beside.penalty(b.x, b.z).item<double>();
  EXPECT_DOUBLE_EQ(inside.last_nmse(), beside.last_nmse()) << "the adversary took the same step";
  EXPECT_NEAR(both, 0.5 * expected_dcor + penalty, 1e-6);
  p.alpha = 0;  // the penalty alone
  EXPECT_DOUBLE_EQ(client_terms(p, 21, b.x, b.z, &inside).item<double>(), beside.penalty(b.x, b.z).item<double>());
}

}  // namespace
}  // namespace cutlayer::privacy
