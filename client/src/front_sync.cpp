#include "cutlayer/client/front_sync.h"

#include <fmt/format.h>

#include <cmath>

#include "cutlayer/error.h"
#include "cutlayer/log.h"
#include "cutlayer/state/checkpoint.h"
#include "cutlayer/sync/snapshot.h"
#include "cutlayer/sync/sparse_wire.h"
#include "cutlayer/train/optimizer.h"

namespace cutlayer::client {

FrontSync::FrontSync(sync::SyncOptions options, sync::FlatParams params, torch::optim::Optimizer& opt,
                     train::Kfac* kfac)
    : options_(std::move(options)),
      flat_(std::move(params)),
      opt_(opt),
      kfac_(kfac && kfac->active() ? kfac : nullptr),
      compressor_(kernels::make_compressor(options_.compressor,
                                           kernels::CompressorOptions{options_.error_feedback, 3, options_.seed})),
      schedule_(options_.density_schedule.empty() ? kernels::DensitySchedule(options_.density)
                                                  : kernels::DensitySchedule::parse(options_.density_schedule)) {
  if (options_.error_feedback) residual_ = torch::zeros({flat_.numel()}, torch::kFloat32);
  grad_ = torch::zeros({flat_.numel()}, torch::kFloat32);  // one buffer for the whole run (compressor memory)
  if (kfac_) kfac_->share(options_.share_kfac_factors);
}

// The buffer the compressor selects from: its remembered thresholds are keyed by their
// place in it.
const void* FrontSync::compressed_buffer() const {
  return residual_.defined() ? residual_.data_ptr() : grad_.data_ptr();
}

std::size_t FrontSync::buffer_bytes() const { return static_cast<std::size_t>(flat_.numel()) * sizeof(float); }

void FrontSync::reset() {
  unsent_.reset();
  outstanding_.clear();
  pending_.clear();
  started_ = false;
}

void FrontSync::save(state::OutputArchive& a) const {
  if (residual_.defined()) a.write("sync_residual", residual_);
  const auto memory = compressor_->save_memory(compressed_buffer(), buffer_bytes());
  state::save_bytes(a, "sync_compressor", std::vector<std::uint8_t>(memory.begin(), memory.end()));
  state::save_int(a, "sync_seq", static_cast<std::int64_t>(seq_));
  state::save_int(a, "sync_contributions", static_cast<std::int64_t>(stats_.contributions));
  state::save_int(a, "sync_updates", static_cast<std::int64_t>(stats_.updates));
  state::save_int(a, "sync_rejected", static_cast<std::int64_t>(stats_.rejected));
}

void FrontSync::load(state::InputArchive& a) {
  if (residual_.defined()) {
    torch::Tensor r;
    bool found = false;
    try {
      found = a.try_read("sync_residual", r);
    } catch (const c10::Error&) {
    }
    if (!found || r.sizes() != residual_.sizes() || r.scalar_type() != residual_.scalar_type())
      throw state::CheckpointRefused("its error-feedback residual does not fit this front");
    residual_.copy_(r);
  }
  const auto memory = state::load_bytes(a, "sync_compressor", /*optional=*/true);  // older: a cold start
  try {
    compressor_->restore_memory(compressed_buffer(), buffer_bytes(), std::string(memory.begin(), memory.end()));
  } catch (const Error& e) {
    throw state::CheckpointRefused(std::string("its compressor memory does not fit: ") + e.what());
  }
  seq_ = static_cast<std::uint64_t>(state::load_int(a, "sync_seq"));
  stats_.contributions = static_cast<std::uint64_t>(state::load_int(a, "sync_contributions"));
  stats_.updates = static_cast<std::uint64_t>(state::load_int(a, "sync_updates"));
  stats_.rejected = static_cast<std::uint64_t>(state::load_int(a, "sync_rejected"));
  reset();
}

wire::Message FrontSync::snapshot_request() { return wire::make_message(wire::SnapshotRequest{}); }

// Both sides must agree on sharing K-FAC factors: they show the covariance of this client's
// inputs, so a client shares them only when its config says so (docs/privacy.md). Members
// decompose with the same method and damping, so their preconditioners are the same.
void FrontSync::check_kfac_sharing(const wire::ModelSnapshot& s) const {
  if (!s.kfac_sharing.empty() && s.kfac_sharing != "server" && s.kfac_sharing != "members")
    throw ProtocolError("model snapshot: K-FAC sharing '" + s.kfac_sharing + "' is not \"server\" or \"members\"");
  if (s.kfac_sharing.empty() && shares_kfac())
    throw ConfigError("sync.share_kfac_factors: this client would share its K-FAC factors, but the server's "
                      "aggregation keeps them with each member (aggregation.kfac_factors \"local\"): remove "
                      "share_kfac_factors, or ask the operator to set kfac_factors \"average\"");
  if (s.kfac_sharing.empty()) return;
  if (!shares_kfac())
    throw ConfigError("sync.share_kfac_factors: the server's aggregation averages its members' K-FAC factors (the "
                      "covariance of each member's inputs, docs/privacy.md); to take part set train.optimizer "
                      "\"kfac\" and sync.share_kfac_factors true, or ask the operator for kfac_factors \"local\"");
  const auto& mine = kfac_->options();
  if (s.kfac_method != mine.method)
    throw ConfigError("train.kfac.method: the aggregation's shared K-FAC uses the \"" + s.kfac_method +
                      "\" method, this client's is \"" + mine.method + "\": set it to \"" + s.kfac_method + "\"");
  if (s.kfac_sharing == "members" && s.kfac_damping != mine.damping)
    throw ConfigError("train.kfac.damping: the aggregation's members decompose the shared factors with damping " +
                      fmt::format("{}", s.kfac_damping) + ", this client's is " + fmt::format("{}", mine.damping) +
                      ": set it to the same");
}

// The snapshot's K-FAC part, checked before anything of the snapshot is loaded.
void FrontSync::check_kfac_part(const wire::ModelSnapshot& s, const std::vector<torch::Tensor>& tensors) const {
  if (s.kfac == wire::KfacContent::kNone || !shares_kfac()) return;
  const auto model = s.names.size() * (1 + static_cast<std::size_t>(s.state_per_param));
  if (tensors.size() < model) return;  // load_snapshot refuses it
  const std::vector<torch::Tensor> part(tensors.begin() + static_cast<std::ptrdiff_t>(model), tensors.end());
  if (s.kfac == wire::KfacContent::kFactors) kfac_->check_factors(kfac_->unpack(part, "factors"), "factors");
  else kfac_->check_decompositions(part);
}

void FrontSync::install_kfac(wire::KfacContent content, const std::vector<torch::Tensor>& tensors) {
  if (content == wire::KfacContent::kNone) {
    if (!tensors.empty()) throw ProtocolError("server: K-FAC tensors without saying what they are");
    return;
  }
  if (!shares_kfac()) throw ProtocolError("server: K-FAC factors for a member that keeps its own");
  if (content == wire::KfacContent::kFactors) kfac_->install_factors(kfac_->unpack(tensors, "factors"));
  else kfac_->install_decompositions(tensors);
  stats_.kfac_bytes_down += sync::payload_bytes(tensors);
}

void FrontSync::load_snapshot(const wire::Message& snapshot) {
  const auto meta = wire::meta_as<wire::ModelSnapshot>(snapshot);
  check_kfac_sharing(meta);
  check_kfac_part(meta, snapshot.tensors);
  sync::SnapshotKfac shared;
  version_ = sync::load_snapshot(snapshot, flat_, opt_, &shared);
  // The aggregation's preconditioner replaces this member's (none when it has shipped none).
  if (shares_kfac() && shared.content == wire::KfacContent::kNone) kfac_->clear_shared();
  install_kfac(shared.content, shared.tensors);
  staleness_ = meta.staleness;
  stats_.snapshot_round = version_;
  started_ = true;
  log::get("client")->info("front synced from the server's snapshot at round {} ({} parameters, staleness bound {})",
                           version_, flat_.numel(), staleness_);
}

bool FrontSync::offer(wire::Message& msg) {
  if (msg.type != wire::MsgType::kUpdate && msg.type != wire::MsgType::kSyncReject) return false;
  if (started_) pending_.push_back(std::move(msg));  // else from before this session's snapshot
  return true;
}

bool FrontSync::settle(std::size_t max_outstanding) {
  while (!pending_.empty()) {
    auto msg = std::move(pending_.front());
    pending_.pop_front();
    if (msg.type == wire::MsgType::kSyncReject) take_back(wire::meta_as<wire::SyncReject>(msg));
    else apply(msg);
  }
  return outstanding_.size() <= max_outstanding;
}

// A contribution the server did not use: with error feedback it goes back where it came from.
void FrontSync::take_back(const wire::SyncReject& r) {
  auto it = outstanding_.find(r.seq);
  if (it == outstanding_.end()) return;  // from before a re-join
  if (residual_.defined()) {
    const auto& s = it->second;
    if (s.dense()) residual_.add_(s.values);
    else residual_.index_add_(0, s.indices.to(torch::kInt64), s.values.to(torch::kFloat32));
  }
  outstanding_.erase(it);
  ++stats_.rejected;
  log::get("client")->debug("contribution {} refused: {}", r.seq, r.reason);
}

void FrontSync::apply(const wire::Message& msg) {
  const auto u = wire::meta_as<wire::Update>(msg);
  if (u.round <= version_) return;  // already in the snapshot this client started from
  if (u.round != version_ + 1)
    throw ProtocolError("server: Update for round " + std::to_string(u.round) + " while this client is at round " +
                        std::to_string(version_));
  if (!std::isfinite(u.lr) || u.lr < 0 || u.lr > 1e3) throw ProtocolError("server: Update with an impossible learning rate");
  const auto kfac_tensors = sync::after_sparse(u.layout, msg.tensors, "Update");
  const auto update_tensors = sync::leading(msg.tensors, kfac_tensors.size(), "Update");
  const auto update = sync::from_tensors(u.layout, update_tensors, flat_.numel());
  install_kfac(u.kfac, kfac_tensors);
  flat_.set_grads(update);
  train::set_lr(opt_, u.lr);
  opt_.step();
  version_ = u.round;
  if (u.mine) outstanding_.erase(u.mine);
  ++stats_.updates;
  stats_.bytes_down += sync::payload_bytes(update_tensors);
  stats_.nnz_down += static_cast<std::uint64_t>(update.nnz());
}

wire::Message FrontSync::contribute(std::uint64_t samples, int epoch) {
  if (!started_) throw InternalError("FrontSync::contribute before the snapshot was loaded");
  flat_.gather_grads(grad_);
  const double density = schedule_.at_epoch(epoch);
  auto s = options_.per_layer
               ? kernels::compress_per_layer(*compressor_, grad_, residual_, flat_.layer_sizes(), density)
               : compressor_->compress(grad_, residual_, density);
  if (s.dense()) s.values = s.values.clone();  // may alias grad_, which the next step reuses
  wire::SparseGrad g;
  g.seq = ++seq_;
  g.base = version_;
  g.samples = samples;
  auto e = sync::encode(s, options_.fp16_values, options_.varint_indices);
  g.layout = e.layout;
  auto& tensors = e.tensors;
  if (options_.fp16_values && !torch::isfinite(e.sent.values).all().item<bool>())
    throw ConfigError("sync.fp16_values: a gradient value is beyond float16's range (65504); set "
                      "\"fp16_values\": false or lower the learning rate");
  if (options_.fp16_values && residual_.defined()) {
    // What the server gets is the fp16 value; the rounding error stays in the residual.
    auto err = s.values - e.sent.values;
    if (s.dense()) residual_.add_(err);
    else residual_.index_add_(0, s.indices.to(torch::kInt64), err);
    s = std::move(e.sent);
  }
  const auto bytes = sync::payload_bytes(tensors);
  std::size_t kfac_bytes = 0;
  if (shares_kfac()) {
    const auto factors = train::Kfac::pack(kfac_->take_batch_factors());  // a factor step's (else none)
    g.kfac_tensors = static_cast<std::uint32_t>(factors.size());
    kfac_bytes = sync::payload_bytes(factors);
    for (const auto& f : factors) tensors.push_back(f.contiguous());
  }
  unsent_ = Contribution{g.seq, std::move(s), bytes, kfac_bytes};
  return wire::make_message(g, std::move(tensors));
}

void FrontSync::sent() {
  if (!unsent_) throw InternalError("FrontSync::sent without a contribution");
  stats_.bytes_up += unsent_->bytes;
  stats_.kfac_bytes_up += unsent_->kfac_bytes;
  stats_.nnz_up += static_cast<std::uint64_t>(unsent_->values.nnz());
  ++stats_.contributions;
  outstanding_.emplace(unsent_->seq, std::move(unsent_->values));
  unsent_.reset();
}

}  // namespace cutlayer::client
