// The server's durable state: the back model and its optimizer, and with aggregation the
// replica of the front, its optimizer and the round, sealed under a key derived from the
// server's key pair (state/checkpoint.h). Written every checkpoint.every_steps back steps
// (before the next training batch is taken) or every_seconds, and on SIGINT/SIGTERM; `--resume` starts from the newest good one.
// A failed write (disk full, ...) is logged and retried later: training goes on.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "cutlayer/server/aggregator.h"
#include "cutlayer/server/back_trainer.h"
#include "cutlayer/state/checkpoint.h"

namespace cutlayer::server {

class ServerCheckpoints {
 public:
  // `aggregator` may be null (no aggregation).
  ServerCheckpoints(const state::CheckpointOptions& o, const std::string& server_key, BackTrainer& trainer,
                    Aggregator* aggregator);

  // Loads the newest good checkpoint into the trainer (and aggregator); false when the
  // directory holds none yet. Throws ConfigError when it holds some and none can be used.
  bool resume();
  // Loads the checkpoint of exactly `steps` back steps (the ranks of a server tier agree on
  // the newest step all of them hold); false when there is none of that step or it cannot
  // be used.
  bool resume_at(std::int64_t steps);
  // Before a training batch is taken: writes a checkpoint when one is due by step count.
  // Never throws.
  void before_step();
  // From the service loop: notes the progress and, unless `write_when_due` is false (the
  // ranks of a server tier agree on it first: due_by_time), writes a checkpoint when one is
  // due by time. Never throws.
  void tick(bool write_when_due = true);
  bool due_by_time() const;
  // Writes one now (shutdown); a failure is logged. Returns whether it was written.
  bool write();

  // The writes done and how long they took (sealing, writing, fsync, pruning).
  std::uint64_t written() const { return written_; }
  double mean_write_ms() const { return written_ ? total_ms_ / static_cast<double>(written_) : 0; }
  double max_write_ms() const { return max_ms_; }
  std::uint64_t last_bytes() const { return last_bytes_; }

 private:
  std::string snapshot() const;
  void restore(const state::Opened& o);
  BackTrainer& trainer_;
  Aggregator* aggregator_;
  state::CheckpointStore store_;
  std::uint64_t written_ = 0, last_bytes_ = 0;
  double total_ms_ = 0, max_ms_ = 0;
  std::optional<std::chrono::steady_clock::time_point> retry_at_;  // after a failed write
};

// What a server checkpoint must match: the back (and replica) structure and the options
// that decide the training.
state::Identity server_identity(const BackTrainer& trainer, const Aggregator* aggregator);

}  // namespace cutlayer::server
