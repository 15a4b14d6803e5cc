// The server's reports: progress lines, metrics lines and the summary, from plain counters.
#include "cutlayer/server/report.h"

#include <gtest/gtest.h>

namespace cutlayer::server {
namespace {

TEST(StepReport, WindowFiguresLineAndMetrics) {
  TrainerStats st;
  st.steps = 450;
  st.samples = 30000;
  st.labels_received = 450;
  st.loss_sum = 0.51234 * 6400;
  st.loss_samples = 6400;
  st.correct = 5201;  // acc 0.81265625
  transport::TransportStats ts;
  ts.bytes_in = 1234567;
  ts.bytes_out = 2345678;
  const auto r = StepReport::since(st, 30000 - 6400, 2.0, 2, ts);
  EXPECT_DOUBLE_EQ(r.samples_per_s, 3200.0);
  EXPECT_EQ(r.line(),
            "step 450  loss 0.5123  acc 0.813  3200 samples/s  clients 2  in 1.2 MB  out 2.3 MB");
  EXPECT_EQ(r.json().str(),
            R"({"step":450,"loss":0.512340,"acc":0.8127,"samples_per_s":3200.0,"clients":2,)"
            R"("bytes_in":1234567,"bytes_out":2345678,"labels_received":450})");
}

TEST(StepReport, NoLabelledBatchesGiveZeroLossAndAccuracy) {
  TrainerStats st;  // U-shaped: the server never sees labels
  st.steps = 10;
  st.samples = 640;
  const auto r = StepReport::since(st, 0, 0.0, 1, {});
  EXPECT_EQ(r.loss, 0.0);
  EXPECT_EQ(r.acc, 0.0);
  EXPECT_GT(r.samples_per_s, 0.0);  // no division by zero
  EXPECT_EQ(r.line().rfind("step 10  loss 0.0000  acc 0.000  ", 0), 0u) << r.line();
}

TEST(RoundReport, WindowSinceTheLastReport) {
  AggregatorStats before, now;
  before.rounds = 10;
  before.contributions = 20;
  before.bytes_up = 20000;
  before.bytes_down = 10000;
  before.updates_sent = 20;
  before.nnz_up = 200;
  before.nnz_down = 150;
  before.staleness = {15, 5};
  now = before;
  now.rounds = 20;
  now.contributions = 40;  // 20 in the window
  now.bytes_up = 20000 + 24000;
  now.bytes_down = 10000 + 16000;
  now.updates_sent = 40;
  now.nnz_up = 200 + 400;
  now.nnz_down = 150 + 300;
  now.staleness = {27, 12, 1};
  now.closed_all = 18;
  now.closed_samples = 1;
  now.closed_deadline = 1;
  now.rejected = 3;
  const std::int64_t numel = 1000;
  const auto r = RoundReport::between(before, now, numel, 2, "ab12");
  EXPECT_DOUBLE_EQ(r.up_bytes_per_contribution, 1200.0);
  EXPECT_DOUBLE_EQ(r.down_bytes_per_update, 800.0);
  EXPECT_DOUBLE_EQ(r.density_up, 400.0 / (20 * 1000));
  EXPECT_DOUBLE_EQ(r.density_down, 300.0 / (10 * 1000));
  EXPECT_DOUBLE_EQ(r.bytes_ratio_to_dense, (1200.0 + 800.0) / (2 * 4000.0));
  EXPECT_EQ(r.staleness_hist, (std::vector<std::uint64_t>{12, 7, 1}));
  EXPECT_EQ(r.line(),
            "round 20  members 2  up 1.2 KB/contribution (density 0.0200)  down 0.8 KB/client "
            "(density 0.0300)  "
            "0.250 of dense  staleness [12,7,1]  closed all/samples/deadline 18/1/1  rejected 3");
  EXPECT_EQ(r.json().str(),
            R"({"round":20,"members":2,"contributions":40,"bytes_up":44000,"bytes_down":26000,)"
            R"("density_up":0.020000,"density_down":0.030000,"bytes_ratio_to_dense":0.250000,)"
            R"("staleness_hist":[12,7,1],"closed_all":18,"closed_samples":1,"closed_deadline":1,)"
            R"("rejected":3,"front_hash":"ab12"})");
}

TEST(RoundReport, EmptyWindowIsAllZero) {
  AggregatorStats s;
  const auto r = RoundReport::between(s, s, 100, 0, "");
  EXPECT_EQ(r.line(),
            "round 0  members 0  up 0.0 KB/contribution (density 0.0000)  down 0.0 KB/client "
            "(density 0.0000)  "
            "0.000 of dense  staleness []  closed all/samples/deadline 0/0/0  rejected 0");
  EXPECT_NE(r.json().str().find(R"("staleness_hist":[],)"), std::string::npos) << r.json().str();
}

TEST(ServerSummary, WithoutAndWithAggregation) {
  ServerSummary s;
  s.seconds = 12.3456;
  s.steps = 100;
  s.samples = 6400;
  s.labels_received = 100;
  s.eval_batches = 3;
  s.busy_seconds = 1.25;  // 12.5 ms per step
  s.probes = 0;
  s.sessions_open = 1;
  s.messages_in = 203;
  s.messages_out = 203;
  s.bytes_in = 555;
  s.bytes_out = 666;
  s.dropped = 0;
  const std::string head =
      R"({"server":"summary","seconds":12.346,"steps":100,"samples":6400,"labels_received":100,)"
      R"("eval_batches":3,"predict_batches":0,"busy_ms_per_step":12.500,"probes":0,"sessions_open":1,)"
      R"("messages_in":203,"messages_out":203,)"
      R"("bytes_in":555,"bytes_out":666,"dropped":0)";
  EXPECT_EQ(s.json().str(), head + "}");
  AggregationSummary a;
  a.rounds = 50;
  a.staleness_bound = 2;
  a.max_staleness = 1;
  a.staleness_hist = {40, 10};
  a.contributions = 50;
  a.closed_all = 50;
  a.bytes_up = 100;
  a.bytes_down = 200;
  a.front_hash = "f00d";
  s.aggregation = a;
  EXPECT_EQ(
      s.json().str(),
      head +
          R"(,"aggregation":{"rounds":50,"staleness_bound":2,"max_staleness":1,"staleness_hist":[40,10],)"
          R"("contributions":50,"rejected":0,"closed_all":50,"closed_samples":0,"closed_deadline":0,)"
          R"("max_overrun_ms":0,"overdue":0,"bytes_up":100,"bytes_down":200,"front_hash":"f00d"}})");
}

}  // namespace
}  // namespace cutlayer::server
