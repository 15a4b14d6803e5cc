// The client's side of the cross-client aggregation: its front (and head) no longer steps
// on its own gradient. Each step's gradient is compressed (error feedback kept here) and
// sent as a contribution; the server's aggregated Updates are applied, in round order and
// with the same optimizer, by every member, so all fronts stay identical. A client may run
// at most `staleness` contributions ahead of the updates it has applied (the server's
// bound, learnt from the snapshot it starts from).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>

#include "cutlayer/error.h"  // Interrupted
#include "cutlayer/kernels/compressor.h"
#include "cutlayer/kernels/density_schedule.h"
#include "cutlayer/sync/sync.h"
#include "cutlayer/transport/client_transport.h"

namespace cutlayer::client {

// Thrown out of a wait when the stop flag is set (SIGINT/SIGTERM): not an error.

struct SyncStats {
  std::uint64_t contributions = 0, updates = 0, rejected = 0;
  std::uint64_t bytes_up = 0, bytes_down = 0;  // index + value bytes
  std::uint64_t nnz_up = 0, nnz_down = 0;
  std::uint64_t snapshot_round = 0;            // where this member started
  std::uint64_t waits = 0;                     // contributions that had to wait for an update
};

class FrontSync {
 public:
  FrontSync(sync::SyncOptions options, sync::FlatParams params, torch::optim::Optimizer& opt);

  // Once joined: asks for the snapshot and loads it (nothing else is consumed meanwhile).
  void start(transport::ClientTransport& link, std::chrono::milliseconds timeout);
  // After a re-join: contributions in flight in the old session are given up.
  void reset();
  // A message that came while the client waited for another: Updates and SyncRejects are
  // kept for the next safe point. Returns false for messages that are not ours.
  bool offer(wire::Message& msg);
  // After the step's backward pass: sends the gradient (compressed) and applies what the
  // server sent, waiting while more than `staleness` contributions are unanswered.
  void contribute(transport::ClientTransport& link, std::uint64_t samples, int epoch,
                  std::chrono::milliseconds timeout);
  // Waits until every contribution is answered (the end of training).
  void drain(transport::ClientTransport& link, std::chrono::milliseconds timeout);

  // Waits end with Interrupted once *stop is set.
  void set_stop(const std::atomic<bool>* stop) { stop_ = stop; }
  std::uint64_t version() const { return version_; }
  std::string hash() const { return flat_.hash(); }
  std::int64_t numel() const { return flat_.numel(); }
  const SyncStats& stats() const { return stats_; }
  const sync::SyncOptions& options() const { return options_; }

 private:
  void apply_pending();
  void wait_until(transport::ClientTransport& link, std::size_t max_outstanding,
                  std::chrono::milliseconds timeout);

  sync::SyncOptions options_;
  sync::FlatParams flat_;
  torch::optim::Optimizer& opt_;
  std::unique_ptr<kernels::Compressor> compressor_;
  kernels::DensitySchedule schedule_;
  torch::Tensor grad_, residual_;
  std::map<std::uint64_t, kernels::SparseTensor> outstanding_;  // seq -> what was sent
  std::deque<wire::Message> pending_;                           // Updates/SyncRejects not yet applied
  std::uint64_t seq_ = 0, version_ = 0;
  std::uint32_t staleness_ = 0;
  bool started_ = false;
  const std::atomic<bool>* stop_ = nullptr;
  SyncStats stats_;
};

}  // namespace cutlayer::client
