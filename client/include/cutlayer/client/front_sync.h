// The client's side of the cross-client aggregation: its front (and head) no longer steps
// on its own gradient. Each step's gradient is compressed (error feedback kept here) and
// sent as a contribution; the server's aggregated Updates are applied, in round order and
// with the same optimizer, by every member, so all fronts stay identical. A client may run
// at most `staleness` contributions ahead of the updates it has applied (the server's
// bound, learnt from the snapshot it starts from).
//
// Pure logic over wire::Message, like the server's Aggregator: messages in, messages out,
// no sockets and no clock (the client's Dispatcher owns the waiting and its deadline).
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "cutlayer/kernels/compressor.h"
#include "cutlayer/kernels/density_schedule.h"
#include "cutlayer/state/archive.h"
#include "cutlayer/sync/flat_params.h"
#include "cutlayer/sync/options.h"
#include "cutlayer/train/kfac.h"
#include "cutlayer/wire/messages.h"
#include "cutlayer/wire/message.h"

namespace cutlayer::client {

struct SyncStats {
  std::uint64_t contributions = 0, updates = 0, rejected = 0;
  std::uint64_t bytes_up = 0, bytes_down = 0;  // index + value bytes
  std::uint64_t nnz_up = 0, nnz_down = 0;
  std::uint64_t snapshot_round = 0;            // where this member started
  std::uint64_t waits = 0;                     // contributions that had to wait for an update
  std::uint64_t kfac_bytes_up = 0, kfac_bytes_down = 0;  // shared K-FAC factors / decompositions
};

class FrontSync {
 public:
  // `kfac`: this party's K-FAC (null or inactive without optimizer "kfac"); with
  // options.share_kfac_factors its factors are the aggregation's (Kfac::share).
  FrontSync(sync::SyncOptions options, sync::FlatParams params, torch::optim::Optimizer& opt,
            train::Kfac* kfac = nullptr);

  // A (re-)join: contributions in flight in the old session are given up, and nothing is
  // taken until the new session's snapshot is loaded.
  void reset();
  // What to send for the snapshot, and loading the snapshot that answers it (checked
  // against this model: ProtocolError when it does not fit).
  static wire::Message snapshot_request();
  void load_snapshot(const wire::Message& snapshot);
  bool started() const { return started_; }

  // An Update or a SyncReject: kept until the next safe point (settle), or dropped when
  // it came before this session's snapshot. Returns false for any other message.
  bool offer(wire::Message& msg);
  // After the step's backward pass: the gradient, compressed, as the SparseGrad to send.
  // It counts (outstanding, stats) once sent() says the link took it.
  wire::Message contribute(std::uint64_t samples, int epoch);
  void sent();
  // A safe point (no gradient in use): applies what was offered, in order. True when at
  // most `max_outstanding` contributions are still unanswered.
  bool settle(std::size_t max_outstanding);
  void count_wait() { ++stats_.waits; }

  // The durable part: the error-feedback residual, the compressor's memory, the
  // contribution sequence and counters.
  // The front itself comes from the server's snapshot at every (re-)join; contributions in
  // flight are given up as at a re-join.
  void save(state::OutputArchive& a) const;
  void load(state::InputArchive& a);

  std::uint32_t staleness() const { return staleness_; }  // the server's bound
  std::size_t outstanding() const { return outstanding_.size(); }
  std::uint64_t oldest_outstanding() const { return outstanding_.empty() ? 0 : outstanding_.begin()->first; }
  std::uint64_t version() const { return version_; }
  std::string hash() const { return flat_.hash(); }
  // The shared preconditioner's hash ("" when this member's factors are its own).
  std::string kfac_hash() const { return shares_kfac() ? kfac_->hash() : ""; }
  std::int64_t numel() const { return flat_.numel(); }
  const SyncStats& stats() const { return stats_; }
  const sync::SyncOptions& options() const { return options_; }

 private:
  void apply(const wire::Message& msg);
  const void* compressed_buffer() const;
  std::size_t buffer_bytes() const;
  void take_back(const wire::SyncReject& r);
  bool shares_kfac() const { return kfac_ && kfac_->sharing(); }
  void check_kfac_sharing(const wire::ModelSnapshot& s) const;
  void check_kfac_part(const wire::ModelSnapshot& s, const std::vector<torch::Tensor>& tensors) const;
  void install_kfac(wire::KfacContent content, const std::vector<torch::Tensor>& tensors);

  sync::SyncOptions options_;
  sync::FlatParams flat_;
  torch::optim::Optimizer& opt_;
  train::Kfac* kfac_;
  std::unique_ptr<kernels::Compressor> compressor_;
  kernels::DensitySchedule schedule_;
  torch::Tensor grad_, residual_;
  struct Contribution {
    std::uint64_t seq = 0;
    kernels::SparseTensor values;  // as the server will decode them
    std::size_t bytes = 0, kfac_bytes = 0;
  };
  std::optional<Contribution> unsent_;                          // contribute()d, not yet sent()
  std::map<std::uint64_t, kernels::SparseTensor> outstanding_;  // seq -> what was sent
  std::deque<wire::Message> pending_;                           // Updates/SyncRejects not yet applied
  std::uint64_t seq_ = 0, version_ = 0;
  std::uint32_t staleness_ = 0;
  bool started_ = false;
  SyncStats stats_;
};

}  // namespace cutlayer::client
