// What the client reports: the progress suffix it logs, the JSON lines of its metrics file
// and the summary it prints when it stops. Plain figures, no I/O; SplitClient fills them
// in and decides when.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "cutlayer/client/front_sync.h"
#include "cutlayer/report/json.h"
#include "cutlayer/transport/stats.h"

namespace cutlayer::client {

// The aggregation as this member saw it.
struct SyncReport {
  sync::SyncOptions options;
  SyncStats stats;
  std::uint64_t round = 0;
  std::int64_t numel = 0;
  std::string front_hash;

  static SyncReport of(const FrontSync& s);
  // Traffic per contribution (up) and per update (down) against dense float32 vectors.
  double ratio_to_dense() const;
  // "  round 20  sync 1.2 KB up 3.4 KB down/round (0.012 of dense)"
  std::string progress() const;
  report::Json json() const;  // the "sync" object
};

// Training since the last progress line.
struct Window {
  double loss = 0, dcor = 0;  // sums weighted by examples
  std::int64_t correct = 0, seen = 0;

  void add(double batch_loss, double batch_dcor, std::int64_t batch_correct, std::int64_t n);
  double mean_loss() const { return loss / seen; }
  double accuracy() const { return static_cast<double>(correct) / seen; }
  double mean_dcor() const { return dcor / seen; }
  // One metrics line at `step` (1-based: steps done).
  report::Json json(std::int64_t step, double samples_per_s, const transport::TransportStats& ts,
                    const std::optional<SyncReport>& sync) const;
};

// A pass over the test split: the server's (or the head's) accuracy and loss, and what a
// curious server could measure on the first batch it saw (-1: not measured).
struct Evaluation {
  double accuracy = -1, loss = -1;
  double dcor = -1, dcor2_u = -1;  // dCor(X, Z) and its bias-corrected square

  report::Json json(std::int64_t step, std::optional<std::uint64_t> round) const;
};

// The one JSON line cutlayer-client prints when it stops.
struct ClientSummary {
  std::string client, mode;
  double alpha = 0;
  std::int64_t steps = 0, samples = 0;
  double seconds = 0, final_loss = 0;
  Evaluation eval;
  std::uint64_t bytes_up = 0, bytes_down = 0;
  // Per training step of this run: its time, and of it the waits for the server's answers
  // (its compute, the transport both ways, the hand-offs); 0 when none was taken.
  double step_ms = 0, wait_ms = 0;
  std::optional<SyncReport> sync;
  std::string model_sha256;  // over the front's (and head's) parameters and buffers

  report::Json json() const;
  // Stopped before it joined.
  static report::Json interrupted(const std::string& client);
};

}  // namespace cutlayer::client
