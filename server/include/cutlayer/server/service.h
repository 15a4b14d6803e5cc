// The server's event loop: admits joins (checking them against the trainer), serves each
// session's messages, reports progress.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <set>

#include "cutlayer/server/aggregator.h"
#include "cutlayer/server/back_trainer.h"
#include "cutlayer/server/report.h"
#include "cutlayer/train/loop.h"
#include "cutlayer/transport/server_transport.h"

namespace cutlayer::server {

class Service {
 public:
  // `trainer` and `metrics` may be null (a probe-only server); `aggregator` is null when
  // the clients' fronts are not aggregated.
  Service(transport::ServerTransport& transport, BackTrainer* trainer, train::MetricsFile* metrics,
          Aggregator* aggregator = nullptr);

  // Polls and handles events until `stop` is set.
  void run(const std::atomic<bool>& stop);
  // Handles one event (public for tests).
  void handle(transport::ServerEvent& event);

  std::uint64_t probes_served() const { return probes_served_; }
  // What it served, for the summary line printed on exit.
  ServerSummary summary() const;

 private:
  void on_join(const transport::JoinRequest& req);
  void on_message(transport::Received& rx);
  void send_all(std::vector<std::pair<std::uint64_t, wire::Message>>& replies);
  void report();
  void report_round();

  transport::ServerTransport& transport_;
  BackTrainer* trainer_;
  train::MetricsFile* metrics_;
  Aggregator* aggregator_;
  std::uint64_t last_report_round_ = 0;
  AggregatorStats stats_at_report_;
  std::uint64_t probes_served_ = 0;
  std::set<std::uint64_t> probe_only_;  // sessions that joined for the link check (no model)
  std::int64_t last_report_step_ = 0;
  std::int64_t samples_at_report_ = 0;
  std::chrono::steady_clock::time_point start_, last_report_;
};

}  // namespace cutlayer::server
