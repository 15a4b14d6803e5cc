// What the server reports: the progress lines it logs, the JSON lines of its metrics file
// and the summary it prints on exit. Plain figures, no I/O; Service fills them in from its
// counters and decides when.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cutlayer/report/json.h"
#include "cutlayer/server/aggregator.h"
#include "cutlayer/server/scale_out.h"
#include "cutlayer/server/back_trainer.h"
#include "cutlayer/transport/stats.h"

namespace cutlayer::server {

// The back model's training since the last report.
struct StepReport {
  std::int64_t step = 0;
  double loss = 0;  // mean over the window's batches that carried labels
  double acc = 0;
  double samples_per_s = 0;
  std::size_t clients = 0;                    // open sessions
  std::uint64_t bytes_in = 0, bytes_out = 0;  // transport totals
  std::int64_t labels_received = 0;

  // From the trainer's window counters (loss_sum, loss_samples, correct), `samples_before`
  // at the last report and the `seconds` since.
  static StepReport since(const TrainerStats& st, std::int64_t samples_before, double seconds,
                          std::size_t clients, const transport::TransportStats& ts);
  // "step 450  loss 0.5123  acc 0.812  1234 samples/s  clients 2  in 1.2 MB  out 1.2 MB"
  std::string line() const;
  report::Json json() const;  // one metrics line
};

// The aggregation since the last report: traffic, density, staleness.
struct RoundReport {
  std::uint64_t round = 0;
  std::size_t members = 0;
  // totals
  std::uint64_t contributions = 0, bytes_up = 0, bytes_down = 0;
  std::uint64_t closed_all = 0, closed_samples = 0, closed_deadline = 0, rejected = 0;
  // since the last report
  double up_bytes_per_contribution = 0, down_bytes_per_update = 0;
  double density_up = 0, density_down = 0;
  // up + down per client per round, against the dense float32 vectors both ways
  double bytes_ratio_to_dense = 0;
  std::vector<std::uint64_t> staleness_hist;  // contributions per staleness
  std::string front_hash;

  // `before`: the aggregator's stats at the last report.
  static RoundReport since(const Aggregator& aggregator, const AggregatorStats& before);
  // The same from the stats alone; `numel`: the front's parameter count.
  static RoundReport between(const AggregatorStats& before, const AggregatorStats& now,
                             std::int64_t numel, std::size_t members, std::string front_hash);
  // "round 20  members 2  up 12.3 KB/contribution (density 0.0100)  down ...  staleness [3,1]  ..."
  std::string line() const;
  report::Json json() const;  // one metrics line
};

// The aggregation's totals, in the summary.
struct AggregationSummary {
  std::uint64_t rounds = 0;
  std::uint32_t staleness_bound = 0;
  std::uint64_t max_staleness = 0;
  std::vector<std::uint64_t> staleness_hist;
  std::uint64_t contributions = 0, rejected = 0;
  std::uint64_t closed_all = 0, closed_samples = 0, closed_deadline = 0;
  std::uint64_t max_overrun_ms = 0, overdue = 0;  // AggregatorStats
  std::uint64_t bytes_up = 0, bytes_down = 0;
  std::string front_hash;
  std::optional<report::Json> kfac;  // shared K-FAC factors: their traffic and the server's work

  static AggregationSummary of(const Aggregator& aggregator);
  report::Json json() const;
};

// The one JSON line the server prints when it stops ({"server":"summary",...}).
struct ServerSummary {
  double seconds = 0;
  std::int64_t steps = 0, samples = 0, labels_received = 0,
               eval_batches = 0, predict_batches = 0;  // 0 without a trainer
  double busy_seconds = 0;  // handling the clients' training and evaluation batches (TrainerStats)
  std::uint64_t probes = 0;
  std::size_t sessions_open = 0;
  std::uint64_t messages_in = 0, messages_out = 0, bytes_in = 0, bytes_out = 0, dropped = 0;
  std::optional<AggregationSummary> aggregation;
  std::string back_sha256;  // over the back model's parameters and buffers ("" without a trainer)
  // Rounds (train.accumulate > 1, or a server tier): this rank and what its rounds did.
  struct Rounds {
    int rank = 0, world = 1;
    RoundStats stats;
  };
  std::optional<Rounds> rounds;

  report::Json json() const;
};

}  // namespace cutlayer::server
