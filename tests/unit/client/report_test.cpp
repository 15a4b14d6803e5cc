// The client's report lines: their keys in order, the values they stand for, the decimals.
#include "cutlayer/client/report.h"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

namespace cutlayer::client {
namespace {

rapidjson::Document parse(const report::Json& j) {
  rapidjson::Document d;
  d.Parse(j.str().c_str());
  EXPECT_FALSE(d.HasParseError()) << j.str();
  return d;
}

// The keys of an object, in order (rapidjson's operator[] asserts on a missing key: check
// the keys first).
std::vector<std::string> keys(const rapidjson::Value& v) {
  std::vector<std::string> out;
  for (auto it = v.MemberBegin(); it != v.MemberEnd(); ++it) out.emplace_back(it->name.GetString());
  return out;
}
using Keys = std::vector<std::string>;

SyncReport a_sync_report() {
  SyncReport r;
  r.options.compressor = "topk";
  r.options.density = 0.01;
  r.stats.contributions = 4;
  r.stats.updates = 2;
  r.stats.bytes_up = 4 * 400;   // 400 B per contribution
  r.stats.bytes_down = 2 * 800;  // 800 B per update
  r.stats.nnz_up = 4 * 10;
  r.stats.nnz_down = 2 * 25;
  r.round = 7;
  r.numel = 1000;  // 4000 B dense
  r.front_hash = "abc123";
  return r;
}

TEST(ClientReport, SyncFiguresAgainstTheDenseVector) {
  const auto r = a_sync_report();
  EXPECT_DOUBLE_EQ(r.ratio_to_dense(), (400.0 + 800.0) / 8000.0);
  EXPECT_EQ(r.progress(), "  round 7  sync 0.4 KB up 0.8 KB down/round (0.150 of dense)");
  const auto d = parse(r.json());
  ASSERT_EQ(keys(d), (Keys{"compressor", "density", "error_feedback", "round", "snapshot_round", "contributions",
                           "updates", "rejected", "waits", "bytes_up", "bytes_down", "density_up", "density_down",
                           "bytes_ratio_to_dense", "front_hash"}));
  EXPECT_STREQ(d["compressor"].GetString(), "topk");
  EXPECT_EQ(d["round"].GetUint64(), 7u);
  EXPECT_EQ(d["contributions"].GetUint64(), 4u);
  EXPECT_DOUBLE_EQ(d["density_up"].GetDouble(), 0.01);
  EXPECT_DOUBLE_EQ(d["density_down"].GetDouble(), 0.025);
  EXPECT_DOUBLE_EQ(d["bytes_ratio_to_dense"].GetDouble(), 0.15);
  EXPECT_STREQ(d["front_hash"].GetString(), "abc123");
  EXPECT_TRUE(d["error_feedback"].IsBool());

  SyncReport none;
  EXPECT_EQ(none.ratio_to_dense(), 0);  // nothing sent yet: no division by zero
  EXPECT_DOUBLE_EQ(parse(none.json())["density_up"].GetDouble(), 0);
}

TEST(ClientReport, AWindowIsWeightedByExamples) {
  Window w;
  w.add(1.0, 0.5, 30, 40);
  w.add(2.0, 0.1, 5, 10);
  EXPECT_DOUBLE_EQ(w.mean_loss(), (40 + 20) / 50.0);
  EXPECT_DOUBLE_EQ(w.accuracy(), 35 / 50.0);
  transport::TransportStats ts;
  ts.bytes_out = 111;
  ts.bytes_in = 222;
  auto d = parse(w.json(50, 123.45, ts, std::nullopt));
  ASSERT_EQ(keys(d), (Keys{"step", "loss", "acc", "dcor", "samples_per_s", "bytes_up", "bytes_down"}));
  EXPECT_EQ(d["step"].GetInt64(), 50);
  EXPECT_DOUBLE_EQ(d["loss"].GetDouble(), 1.2);
  EXPECT_DOUBLE_EQ(d["acc"].GetDouble(), 0.7);
  EXPECT_DOUBLE_EQ(d["samples_per_s"].GetDouble(), 123.5);
  EXPECT_EQ(d["bytes_up"].GetUint64(), 111u);
  EXPECT_EQ(d["bytes_down"].GetUint64(), 222u);
  EXPECT_FALSE(d.HasMember("sync"));
  d = parse(w.json(50, 1, ts, a_sync_report()));
  EXPECT_EQ(d["sync"]["round"].GetUint64(), 7u);
}

TEST(ClientReport, TheSummaryCarriesEveryFigure) {
  ClientSummary s;
  s.client = "c\"1";  // escaped, not broken
  s.mode = "vanilla";
  s.alpha = 1.5;
  s.steps = 10;
  s.samples = 640;
  s.seconds = 2;
  s.final_loss = 0.25;
  s.eval = Evaluation{0.875, 0.5, 0.3, 0.09};
  s.bytes_up = 5;
  s.bytes_down = 6;
  auto d = parse(s.json());
  ASSERT_EQ(keys(d), (Keys{"client", "mode", "alpha", "steps", "samples", "seconds", "samples_per_s", "final_loss",
                           "test_acc", "test_loss", "eval_dcor", "eval_dcor2_u", "bytes_up", "bytes_down"}));
  EXPECT_EQ(s.json().str().find(R"({"client":"c\"1","mode":"vanilla","alpha":1.5,"steps":10,"samples":640,)"), 0u);
  EXPECT_STREQ(d["client"].GetString(), "c\"1");
  EXPECT_DOUBLE_EQ(d["alpha"].GetDouble(), 1.5);
  EXPECT_DOUBLE_EQ(d["samples_per_s"].GetDouble(), 320);
  EXPECT_DOUBLE_EQ(d["test_acc"].GetDouble(), 0.875);
  EXPECT_DOUBLE_EQ(d["eval_dcor"].GetDouble(), 0.3);
  EXPECT_EQ(d["bytes_down"].GetUint64(), 6u);
  EXPECT_FALSE(d.HasMember("sync"));
  s.sync = a_sync_report();
  EXPECT_STREQ(parse(s.json())["sync"]["compressor"].GetString(), "topk");

  d = parse(ClientSummary::interrupted("c0"));
  EXPECT_TRUE(d["interrupted"].GetBool());
  EXPECT_EQ(d["steps"].GetInt(), 0);
}

TEST(ClientReport, AnEvaluationLineNamesItsRoundWhenSynced) {
  const Evaluation e{0.5, 1.25, -1, -1};
  auto d = parse(e.json(20, std::nullopt));
  ASSERT_EQ(keys(d), (Keys{"step", "test_acc", "test_loss", "eval_dcor", "eval_dcor2_u"}));
  EXPECT_EQ(e.json(20, std::nullopt).str(),
            R"({"step":20,"test_acc":0.5000,"test_loss":1.2500,"eval_dcor":-1.0000,"eval_dcor2_u":-1.0000})");
  EXPECT_EQ(d["step"].GetInt64(), 20);
  EXPECT_DOUBLE_EQ(d["test_loss"].GetDouble(), 1.25);
  EXPECT_DOUBLE_EQ(d["eval_dcor"].GetDouble(), -1);
  EXPECT_FALSE(d.HasMember("round"));
  EXPECT_EQ(parse(e.json(20, 3))["round"].GetUint64(), 3u);
}

}  // namespace
}  // namespace cutlayer::client
