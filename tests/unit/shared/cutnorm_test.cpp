// The "cutnorm" layer (privacy.cut_norm): each sample normalised as a whole, no affine
// weights; split_spec appends it to a layered front; the TorchScript export computes it too.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

#include "cutlayer/error.h"
#include "cutlayer/model/model_spec.h"
#include "cutlayer/model/script_export.h"
#include "cutlayer/train/train_options.h"

namespace cutlayer::model {
namespace {

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

TEST(CutNorm, EverySampleComesOutWithMeanZeroAndVarianceOne) {
  torch::manual_seed(1);
  auto net = build("conv2d(1,4,3) cutnorm");
  const auto x = torch::randn({5, 1, 8, 8}) * 3 + 2;
  const auto y = net->forward(x);
  ASSERT_EQ(y.sizes(), (std::vector<std::int64_t>{5, 4, 6, 6}));
  const auto flat = y.flatten(1);
  EXPECT_LT(flat.mean(1).abs().max().item<double>(), 1e-5);
  EXPECT_LT((flat.var(1, /*unbiased=*/false) - 1).abs().max().item<double>(), 1e-3);
  // Per sample, not per batch or per channel: each sample's own statistics.
  const auto conv = net[0]->as<torch::nn::Conv2d>()->forward(x).flatten(1);
  const auto mu = conv.mean(1, true);
  const auto sd = (conv.var(1, false, true) + CutNormImpl::kEps).sqrt();
  EXPECT_LT(max_diff(flat, (conv - mu) / sd), 1e-5);
}

TEST(CutNorm, OutputIgnoresTheInputsScaleAndShiftAndHasNoWeights) {
  torch::manual_seed(2);
  auto net = build("cutnorm");
  EXPECT_TRUE(net->parameters().empty());
  EXPECT_TRUE(net->buffers().empty());
  const auto x = torch::randn({3, 2, 4, 4});
  EXPECT_LT(max_diff(net->forward(x), net->forward(x * 50 + 7)), 1e-4);
  // Train and eval mode alike (no running statistics).
  net->eval();
  EXPECT_LT(max_diff(net->forward(x), net->forward(x * 50 + 7)), 1e-4);
  // Flat features too.
  const auto f = net->forward(torch::randn({4, 10}) * 5);
  EXPECT_LT(f.mean(1).abs().max().item<double>(), 1e-5);
  // Gradients flow through it.
  auto xg = torch::randn({3, 6}).requires_grad_(true);
  (net->forward(xg) * torch::randn({3, 6})).sum().backward();
  ASSERT_TRUE(xg.grad().defined());
  EXPECT_GT(xg.grad().abs().max().item<double>(), 0.0);
}

TEST(CutNorm, TakesNoArguments) {
  EXPECT_THROW(build("cutnorm(3)"), ConfigError);
  EXPECT_THROW(build("linear(4,4) cutnorm(1,2)"), ConfigError);
  try {
    build("layernorm");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("cutnorm"), std::string::npos) << "known layers should list it: " << e.what();
  }
}

TEST(CutNorm, SplitSpecAppendsItToTheFront) {
  for (bool u : {false, true}) {
    train::TrainOptions o;  // the fmnist-cnn preset
    o.u_shaped = u;
    const auto plain = train::split_spec(o);
    EXPECT_FALSE(ends_with(plain.front, "cutnorm")) << u;
    o.cut_norm = true;
    const auto s = train::split_spec(o);
    EXPECT_EQ(s.front, plain.front + " cutnorm") << u;
    EXPECT_EQ(s.back, plain.back) << u;
    EXPECT_EQ(s.head, plain.head) << u;
    EXPECT_EQ(s.input_shape, plain.input_shape) << u;
    // It builds, the cut keeps its shape, and the front's output is normalised.
    auto m = build_split(s, 3);
    EXPECT_EQ(output_shape(m.front, s.input_shape), (std::vector<std::int64_t>{32, 12, 12})) << u;
    const auto z = m.front->forward(torch::rand({2, 1, 28, 28})).flatten(1);
    EXPECT_LT(z.mean(1).abs().max().item<double>(), 1e-5) << u;
    EXPECT_EQ(m.back->forward(m.front->forward(torch::rand({2, 1, 28, 28}))).size(0), 2) << u;
  }
}

TEST(CutNorm, SplitSpecAppendsItToACustomFront) {
  train::TrainOptions o;
  o.model = "tiny";
  o.front = "linear(4,6) relu";
  o.back = "linear(6,3)";
  o.input_shape = {4};
  o.cut_norm = true;
  const auto s = train::split_spec(o);
  EXPECT_EQ(s.front, "linear(4,6) relu cutnorm");
  EXPECT_EQ(s.back, "linear(6,3)");
}

TEST(CutNorm, SplitSpecRefusesItForATorchScriptFront) {
  train::TrainOptions o;
  o.model = "mine";
  o.front_file = "/nonexistent/front.pt";
  o.back_file = "/nonexistent/back.pt";
  o.input_shape = {1, 28, 28};
  o.cut_norm = true;
  try {
    train::split_spec(o);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("privacy.cut_norm"), std::string::npos) << e.what();
  }
  o.cut_norm = false;
  EXPECT_NO_THROW(train::split_spec(o));  // the spec alone reads no file
}

TEST(CutNorm, ScriptExportComputesWhatTheModuleDoes) {
  torch::manual_seed(4);
  auto net = build("conv2d(1,4,3) relu cutnorm");
  net->eval();
  auto script = to_script(net, "front");
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({6, 1, 10, 10}) * 4;
  const auto want = net->forward(x);
  const auto got = script.forward({x}).toTensor();
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_LE(max_diff(got, want), 1e-5);
  // The exported normalisation is per sample: a batch of one gives the same row.
  EXPECT_LE(max_diff(script.forward({x.narrow(0, 2, 1)}).toTensor(), want.narrow(0, 2, 1)), 1e-5);
}

TEST(CutNorm, ExportedSplitWithCutNormJoinsIntoTheWholeModel) {
  torch::manual_seed(5);
  for (bool u : {false, true}) {
    train::TrainOptions o;
    o.u_shaped = u;
    o.cut_norm = true;
    auto m = build_split(train::split_spec(o), 6);
    m.front->eval();
    m.back->eval();
    if (u) m.head->eval();
    auto client = client_script(m.front, u ? &m.head : nullptr);
    auto joined = join_scripts(client, to_script(m.back, "back"));
    torch::NoGradGuard no_grad;
    const auto x = torch::rand({3, 1, 28, 28});
    auto want = m.back->forward(m.front->forward(x));
    if (u) want = m.head->forward(want);
    EXPECT_LE(max_diff(joined.forward({x}).toTensor(), want), 1e-4) << u;
    EXPECT_LE(max_diff(client.forward({x}).toTensor(), m.front->forward(x)), 1e-5) << u;
  }
}

}  // namespace
}  // namespace cutlayer::model
