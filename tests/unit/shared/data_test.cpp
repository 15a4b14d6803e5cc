#include <gtest/gtest.h>
#include <zlib.h>

#include <fstream>
#include <numeric>
#include <set>

#include "cutlayer/data/dataset.h"
#include "cutlayer/error.h"
#include "cutlayer/config/reader.h"
#include "cutlayer/model/model_spec.h"
#include "cutlayer/train/train_options.h"

namespace cutlayer {
namespace {

std::string temp(const std::string& name) { return ::testing::TempDir() + "/" + name; }

void write_gz(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
}

std::vector<std::uint8_t> idx(std::uint8_t rank, std::vector<std::uint32_t> dims, std::size_t payload) {
  std::vector<std::uint8_t> b = {0, 0, 8, rank};
  for (auto d : dims)
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<std::uint8_t>(d >> s));
  for (std::size_t i = 0; i < payload; ++i) b.push_back(static_cast<std::uint8_t>(i * 7));
  return b;
}

TEST(Dataset, IdxRoundTripAndNormalization) {
  write_gz(temp("img.gz"), idx(3, {5, 2, 3}, 30));
  write_gz(temp("lab.gz"), idx(1, {5}, 5));
  const auto d = data::load_idx(temp("img.gz"), temp("lab.gz"), {1.0, 0.0, 1.0});
  EXPECT_EQ(d.x.sizes(), (std::vector<std::int64_t>{5, 1, 2, 3}));
  EXPECT_EQ(d.x[0][0][0][1].item<float>(), 7.f);
  EXPECT_EQ(d.y[1].item<std::int64_t>(), 7);
}

TEST(Dataset, BadIdxFilesNameThePath) {
  write_gz(temp("short.gz"), idx(3, {5, 2, 3}, 29));  // one byte missing
  write_gz(temp("lab5.gz"), idx(1, {5}, 5));
  write_gz(temp("lab4.gz"), idx(1, {4}, 4));
  write_gz(temp("good.gz"), idx(3, {5, 2, 3}, 30));
  auto message_of = [](auto fn) {
    try {
      fn();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(message_of([&] { data::load_idx(temp("short.gz"), temp("lab5.gz"), {}); }).find("short.gz"),
            std::string::npos);
  EXPECT_NE(message_of([&] { data::load_idx(temp("good.gz"), temp("lab4.gz"), {}); }).find("4 labels"),
            std::string::npos);
  EXPECT_NE(message_of([&] { data::load_idx("/nonexistent/x.gz", temp("lab5.gz"), {}); }).find("/nonexistent/x.gz"),
            std::string::npos);
  write_gz(temp("huge.gz"), idx(3, {0xffffff, 0xffffff, 0xffffff}, 0));
  EXPECT_THROW(data::load_idx(temp("huge.gz"), temp("lab5.gz"), {}), ConfigError);
}

TEST(Dataset, FashionMnistFromDebian) {
  const auto test = data::load_fashion_mnist(data::kFashionMnistDir, false, {});
  EXPECT_EQ(test.size(), 10000);
  EXPECT_EQ(test.x.sizes(), (std::vector<std::int64_t>{10000, 1, 28, 28}));
  EXPECT_EQ(test.y.max().item<std::int64_t>(), 9);
}

TEST(Dataset, CsvWithLabelColumn) {
  std::ofstream(temp("d.csv")) << "a,label,b\n1,0,2\n3,1,4\n";
  const auto d = data::load_csv(temp("d.csv"), "label", {1.0, 0.0, 1.0});
  EXPECT_EQ(d.x.sizes(), (std::vector<std::int64_t>{2, 2}));
  EXPECT_EQ(d.x[1][1].item<float>(), 4.f);
  EXPECT_EQ(d.y[1].item<std::int64_t>(), 1);
  std::ofstream(temp("bad.csv")) << "a,label\n1,x\n";
  EXPECT_THROW(data::load_csv(temp("bad.csv"), "label", {}), ConfigError);
  EXPECT_THROW(data::load_csv(temp("d.csv"), "class", {}), ConfigError);
  // CRLF line ends (Python's csv module, spreadsheets) read the same.
  std::ofstream(temp("crlf.csv")) << "a,label,b\r\n1,0,2\r\n3,1,4\r\n";
  const auto c = data::load_csv(temp("crlf.csv"), "label", {1.0, 0.0, 1.0});
  EXPECT_TRUE(torch::equal(c.x, d.x));
  EXPECT_TRUE(torch::equal(c.y, d.y));
}

TEST(Dataset, ShardsAreDeterministicDisjointAndComplete) {
  std::set<std::int64_t> all;
  for (int i = 0; i < 3; ++i) {
    const auto s = data::shard_iid(1000, 3, i, 7);
    EXPECT_EQ(s, data::shard_iid(1000, 3, i, 7));
    for (auto v : s) EXPECT_TRUE(all.insert(v).second);
  }
  EXPECT_EQ(all.size(), 1000u);
  const auto labels = torch::arange(1000, torch::kInt64) % 10;
  std::set<std::int64_t> dall;
  std::vector<std::size_t> sizes;
  for (int i = 0; i < 4; ++i) {
    const auto s = data::shard_dirichlet(labels, 4, i, 0.1, 3);
    sizes.push_back(s.size());
    for (auto v : s) EXPECT_TRUE(dall.insert(v).second);
  }
  EXPECT_EQ(dall.size(), 1000u);
  EXPECT_NE(*std::max_element(sizes.begin(), sizes.end()), *std::min_element(sizes.begin(), sizes.end()));
  EXPECT_THROW(data::shard_iid(10, 3, 3, 1), ConfigError);
  EXPECT_EQ(data::epoch_order(100, 1, 0), data::epoch_order(100, 1, 0));
  EXPECT_NE(data::epoch_order(100, 1, 0), data::epoch_order(100, 1, 1));
}

TEST(ModelSpec, BuildsPresetsAndComputesTheCutShape) {
  auto spec = model::preset("fmnist-cnn", false);
  auto m = model::build_split(spec, 1);
  EXPECT_EQ(model::output_shape(m.front, spec.input_shape), (std::vector<std::int64_t>{32, 12, 12}));
  EXPECT_EQ(model::output_shape(m.back, {32, 12, 12}), (std::vector<std::int64_t>{10}));
  EXPECT_FALSE(m.has_head());
  auto u = model::build_split(model::preset("fmnist-cnn", true), 1);
  EXPECT_TRUE(u.has_head());
  // Same seed, same weights: the split and the monolithic runs start alike.
  auto m2 = model::build_split(spec, 1);
  EXPECT_TRUE(torch::equal(m.front->parameters()[0], m2.front->parameters()[0]));
}

TEST(ModelSpec, BadSpecsAreConfigErrors) {
  EXPECT_THROW(model::build("conv2d(1,32)"), ConfigError);
  EXPECT_THROW(model::build("linear(10,x)"), ConfigError);
  EXPECT_THROW(model::build("transformer(4)"), ConfigError);
  EXPECT_THROW(model::build("dropout(1.5)"), ConfigError);
  EXPECT_THROW(model::preset("resnet50", false), ConfigError);
  // Sizes past 2^24, infinite or NaN are refused before any conversion to an integer (the
  // config fuzzer found linear(1e300, 8) converting out of range: undefined behaviour).
  for (const char* bad : {"linear(1e300,8)", "linear(16777217,8)", "linear(inf,8)", "linear(nan,8)",
                          "linear(2.5,8)", "conv2d(1,4,3,1,1e300)", "conv2d(1,4,3,1,-1)", "maxpool(nan)", "dropout(nan)"})
    EXPECT_THROW(model::build(bad), ConfigError) << bad;
  EXPECT_NO_THROW(model::build("conv2d(1,4,3,1,0) linear(16,8)"));  // padding 0 is fine
  auto net = model::build("linear(10,5) relu");
  EXPECT_THROW(model::output_shape(net, {7}), ConfigError);
}

TEST(TrainOptions, CustomModelFromConfig) {
  auto doc = config::Document::parse(R"J({"train": {"model": "tiny", "u_shaped": true,
      "front": "flatten linear(784,64) relu", "back": "linear(64,32) relu", "head": "linear(32,10)",
      "input_shape": [1, 28, 28]}})J", "client.json");
  auto root = doc->root();
  auto t = root.child("train");
  const auto o = train::read_train_options(t);
  auto spec = train::split_spec(o);
  EXPECT_EQ(spec.name, "tiny");
  auto m = model::build_split(spec, 3);
  EXPECT_TRUE(m.has_head());
  EXPECT_EQ(model::output_shape(m.front, spec.input_shape), (std::vector<std::int64_t>{64}));

  auto bad = config::Document::parse(R"J({"train": {"front": "flatten linear(784,64) relu"}})J", "client.json");
  auto broot = bad->root();
  auto bt = broot.child("train");
  EXPECT_THROW(train::read_train_options(bt), ConfigError);
  auto typo = config::Document::parse(R"({"train": {"front": "flaten", "back": "relu", "input_shape": [4]}})", "c.json");
  auto troot = typo->root();
  auto tt = troot.child("train");
  try {
    train::read_train_options(tt);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("c.json"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("flaten"), std::string::npos);
  }
}

}  // namespace
}  // namespace cutlayer
