// The server's event loop: admits joins (checking them against the trainer), serves each
// session's messages, reports progress.
//
// No client's input ends the loop: every message is handled under a catch of
// std::exception (LibTorch's c10::Error included) that answers that client with an Error.
// A client refused refusals_to_evict times within refusal_window (by name: a re-join does
// not reset the count) is evicted: an Error naming the reason, its session ended, and its
// joins refused for rejoin_after_eviction.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <set>
#include <string>

#include "cutlayer/server/aggregator.h"
#include "cutlayer/server/back_trainer.h"
#include "cutlayer/server/checkpoints.h"
#include "cutlayer/server/report.h"
#include "cutlayer/server/scale_out.h"
#include "cutlayer/server/vertical_join.h"
#include "cutlayer/train/loop.h"
#include "cutlayer/transport/server_transport.h"

namespace cutlayer::server {

// What one client may do (server config: the "limits" object).
struct ServiceLimits {
  // The most examples a client may declare at Join (its contributions weigh at most that).
  std::uint64_t max_join_samples = std::uint64_t{1} << 24;
  // Refused messages (Errors sent) within refusal_window that evict the client; 0: never.
  int refusals_to_evict = 8;
  std::chrono::milliseconds refusal_window{60000};
  // An evicted client's joins are refused this long (0: it may re-join at once).
  std::chrono::milliseconds rejoin_after_eviction{60000};
};

class Service {
 public:
  // `trainer` and `metrics` may be null (a probe-only server); `aggregator` is null when
  // the clients' fronts are not aggregated.
  Service(transport::ServerTransport& transport, BackTrainer* trainer, train::MetricsFile* metrics,
          Aggregator* aggregator = nullptr, ServiceLimits limits = {});

  // Checkpoints written as training goes (null: none).
  void set_checkpoints(ServerCheckpoints* c) { checkpoints_ = c; }
  // Vertical split learning: joins are parties, their PSI rounds and cuts go through it
  // (null: horizontal clients).
  void set_vertical(VerticalJoin* v) { vertical_ = v; }
  // The back steps in rounds (train.accumulate, or a server tier of several ranks; null:
  // with each batch).
  void set_rounds(ServerRounds* r) { rounds_ = r; }
  // Polls and handles events until `stop` is set (with rounds across ranks: until the ranks
  // agree to stop, after the round that follows `stop`). Throws ScaleOutError when a
  // collective fails: this rank stops.
  void run(const std::atomic<bool>& stop);
  // Handles one event (public for tests).
  void handle(transport::ServerEvent& event);

  std::uint64_t probes_served() const { return probes_served_; }
  std::uint64_t refusals() const { return refusals_total_; }
  std::uint64_t evictions() const { return evictions_; }
  // What it served, for the summary line printed on exit.
  ServerSummary summary() const;

 private:
  std::optional<std::string> model_refusal(const wire::Join& j) const;
  void on_join(const transport::JoinRequest& req);
  void on_message(transport::Received& rx);
  void on_ended(const transport::SessionEnded& ended);
  // Sends each reply; an Error among them is a refusal (counted towards eviction).
  void send_all(std::vector<std::pair<std::uint64_t, wire::Message>>& replies);
  // Answers `session` with an Error carrying `text`, logs it, counts it; evicts the client
  // past its refusals.
  void refuse(std::uint64_t session, const std::string& text);
  void evict(std::uint64_t session, const std::string& name, const std::string& last);
  // Sends what `r` holds and ends the sessions it names (each told why; not refusals).
  void apply(VerticalJoin::Result r);
  void on_vertical(transport::Received& rx);
  std::string name_of(std::uint64_t session) const;
  void report();
  void report_round();
  // Rounds: closes one when due; false once the ranks agreed to stop.
  bool step_rounds(bool stop_requested);

  transport::ServerTransport& transport_;
  BackTrainer* trainer_;
  train::MetricsFile* metrics_;
  Aggregator* aggregator_;
  ServerCheckpoints* checkpoints_ = nullptr;
  VerticalJoin* vertical_ = nullptr;
  ServerRounds* rounds_ = nullptr;
  ServiceLimits limits_;
  struct Client {
    std::string name;
    std::uint64_t samples = 0;  // declared at Join
  };
  std::map<std::uint64_t, Client> clients_;  // open sessions
  std::map<std::string, std::deque<std::chrono::steady_clock::time_point>> refused_at_;  // by client name
  std::map<std::string, std::chrono::steady_clock::time_point> evicted_until_;
  std::uint64_t refusals_total_ = 0, evictions_ = 0;
  std::uint64_t last_report_round_ = 0;
  AggregatorStats stats_at_report_;
  std::uint64_t probes_served_ = 0;
  std::set<std::uint64_t> probe_only_;  // sessions that joined for the link check (no model)
  std::set<std::uint64_t> inference_only_;  // sessions that joined for predictions (no training, no sync)
  std::int64_t last_report_step_ = 0;
  std::int64_t samples_at_report_ = 0;
  std::chrono::steady_clock::time_point start_, last_report_;
};

}  // namespace cutlayer::server
