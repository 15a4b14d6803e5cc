// The TorchScript export computes what the Sequential computes in eval mode, for every layer
// the model language has, and refuses what it cannot express.
#include <gtest/gtest.h>

#include "cutlayer/error.h"
#include "cutlayer/model/model_spec.h"
#include "cutlayer/model/script_export.h"

namespace cutlayer::model {
namespace {

double max_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

// Trains a few steps first, so that batch norm's running statistics are not their defaults.
void season(torch::nn::Sequential& net, const torch::Tensor& x) {
  torch::optim::SGD opt(net->parameters(), 0.01);
  for (int i = 0; i < 3; ++i) {
    opt.zero_grad();
    net->forward(x).pow(2).mean().backward();
    opt.step();
  }
  net->eval();
}

TEST(ScriptExport, EveryLayerComputesWhatTheSequentialDoes) {
  torch::manual_seed(5);
  auto net = build("conv2d(1,4,3,1,1) batchnorm2d(4) relu maxpool(2) conv2d(4,6,3,2) tanh avgpool(2,1) flatten "
                   "dropout(0.5) linear(6,16) batchnorm1d(16) sigmoid linear(16,3)");
  const auto x = torch::randn({8, 1, 12, 12});
  season(net, x);
  auto script = to_script(net, "t");
  torch::NoGradGuard no_grad;
  const auto want = net->forward(x);
  const auto got = script.forward({x}).toTensor();
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_LE(max_diff(got, want), 1e-6);
  // The weights are copies: training on does not change the export.
  net->train();
  net->forward(x);
  EXPECT_LE(max_diff(script.forward({x}).toTensor(), want), 1e-6);
}

TEST(ScriptExport, PartsJoinIntoTheWholeModelAndSurviveSaving) {
  torch::manual_seed(6);
  for (bool u : {false, true}) {
    auto spec = preset("fmnist-cnn", u);
    auto m = build_split(spec, 1);
    m.front->eval();
    m.back->eval();
    if (u) m.head->eval();
    const auto client = client_script(m.front, u ? &m.head : nullptr);
    const auto joined = join_scripts(client, to_script(m.back, "back"));
    const std::string path = ::testing::TempDir() + "/joined" + (u ? "-u" : "") + ".pt";
    save_script(joined, path);
    auto loaded = torch::jit::load(path);
    torch::NoGradGuard no_grad;
    const auto x = torch::randn({5, 1, 28, 28});
    auto want = m.back->forward(m.front->forward(x));
    if (u) want = m.head->forward(want);
    EXPECT_LE(max_diff(loaded.forward({x}).toTensor(), want), 1e-5) << u;
    EXPECT_EQ(client.find_method("head_forward").has_value(), u);
  }
}

TEST(ScriptExport, WhatCannotBeExpressedIsRefusedByName) {
  torch::nn::Sequential net(torch::nn::Linear(4, 4), torch::nn::GELU());
  try {
    to_script(net, "t");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("layer 1"), std::string::npos) << e.what();
  }
  torch::jit::Module empty("e");
  EXPECT_THROW(join_scripts(empty, empty), ConfigError);
}

}  // namespace
}  // namespace cutlayer::model
