#include "cutlayer/client/front_sync.h"

#include <cmath>

#include "cutlayer/error.h"
#include "cutlayer/log.h"
#include "cutlayer/train/train_options.h"

namespace cutlayer::client {

FrontSync::FrontSync(sync::SyncOptions options, sync::FlatParams params, torch::optim::Optimizer& opt)
    : options_(std::move(options)),
      flat_(std::move(params)),
      opt_(opt),
      compressor_(kernels::make_compressor(options_.compressor,
                                           kernels::CompressorOptions{options_.error_feedback, 3, options_.seed})),
      schedule_(options_.density_schedule.empty() ? kernels::DensitySchedule(options_.density)
                                                  : kernels::DensitySchedule::parse(options_.density_schedule)) {
  if (options_.error_feedback) residual_ = torch::zeros({flat_.numel()}, torch::kFloat32);
}

void FrontSync::reset() {
  outstanding_.clear();
  pending_.clear();
  started_ = false;
}

void FrontSync::start(transport::ClientTransport& link, std::chrono::milliseconds timeout) {
  link.send(wire::make_message(wire::SnapshotRequest{}));
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (stop_ && *stop_) throw Interrupted{};
    auto msg = link.recv(std::chrono::milliseconds(500));
    if (!msg) continue;
    if (msg->type == wire::MsgType::kError)
      throw ProtocolError("server: " + wire::meta_as<wire::ErrorMsg>(*msg).message);
    if (msg->type != wire::MsgType::kModelSnapshot) continue;  // from before a re-join
    version_ = sync::load_snapshot(*msg, flat_, opt_);
    staleness_ = wire::meta_as<wire::ModelSnapshot>(*msg).staleness;
    stats_.snapshot_round = version_;
    started_ = true;
    log::get("client")->info("front synced from the server's snapshot at round {} ({} parameters, staleness bound {})",
                             version_, flat_.numel(), staleness_);
    return;
  }
  throw IoError("no model snapshot from the server within " + std::to_string(timeout.count() / 1000) + " s");
}

bool FrontSync::offer(wire::Message& msg) {
  if (msg.type != wire::MsgType::kUpdate && msg.type != wire::MsgType::kSyncReject) return false;
  pending_.push_back(std::move(msg));
  return true;
}

void FrontSync::apply_pending() {
  while (!pending_.empty()) {
    auto msg = std::move(pending_.front());
    pending_.pop_front();
    if (msg.type == wire::MsgType::kSyncReject) {
      const auto r = wire::meta_as<wire::SyncReject>(msg);
      auto it = outstanding_.find(r.seq);
      if (it == outstanding_.end()) continue;  // from before a re-join
      // Not used by the server: with error feedback it goes back where it came from.
      if (residual_.defined()) {
        const auto& s = it->second;
        if (s.dense()) residual_.add_(s.values);
        else residual_.index_add_(0, s.indices.to(torch::kInt64), s.values.to(torch::kFloat32));
      }
      outstanding_.erase(it);
      ++stats_.rejected;
      log::get("client")->debug("contribution {} refused: {}", r.seq, r.reason);
      continue;
    }
    const auto u = wire::meta_as<wire::Update>(msg);
    if (u.round <= version_) continue;  // already in the snapshot this client started from
    if (u.round != version_ + 1)
      throw ProtocolError("server: Update for round " + std::to_string(u.round) + " while this client is at round " +
                          std::to_string(version_));
    if (!std::isfinite(u.lr) || u.lr < 0 || u.lr > 1e3) throw ProtocolError("server: Update with an impossible learning rate");
    const auto update = sync::from_tensors(u.layout, msg.tensors, flat_.numel());
    flat_.set_grads(update);
    train::set_lr(opt_, u.lr);
    opt_.step();
    version_ = u.round;
    if (u.mine) outstanding_.erase(u.mine);
    ++stats_.updates;
    stats_.bytes_down += sync::payload_bytes(msg.tensors);
    stats_.nnz_down += static_cast<std::uint64_t>(update.nnz());
  }
}

void FrontSync::wait_until(transport::ClientTransport& link, std::size_t max_outstanding,
                           std::chrono::milliseconds timeout) {
  apply_pending();
  if (outstanding_.size() <= max_outstanding) return;
  ++stats_.waits;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (outstanding_.size() > max_outstanding) {
    if (stop_ && *stop_) throw Interrupted{};
    if (std::chrono::steady_clock::now() >= deadline)
      throw IoError("no Update for contribution " + std::to_string(outstanding_.begin()->first) + " within " +
                    std::to_string(timeout.count() / 1000) + " s");
    auto msg = link.recv(std::chrono::milliseconds(500));
    if (!msg) continue;
    if (msg->type == wire::MsgType::kError)
      throw ProtocolError("server: " + wire::meta_as<wire::ErrorMsg>(*msg).message);
    if (offer(*msg)) apply_pending();
  }
}

void FrontSync::contribute(transport::ClientTransport& link, std::uint64_t samples, int epoch,
                           std::chrono::milliseconds timeout) {
  if (!started_) throw InternalError("FrontSync::contribute before start()");
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
  auto tensors = sync::to_tensors(s, options_.fp16_values, options_.varint_indices, g.layout);
  if (options_.fp16_values && residual_.defined()) {
    // What the server gets is the fp16 value; the rounding error stays in the residual.
    auto sent = sync::from_tensors(g.layout, tensors, flat_.numel());
    auto err = s.values - sent.values;
    if (s.dense()) residual_.add_(err);
    else residual_.index_add_(0, s.indices.to(torch::kInt64), err);
    s = std::move(sent);
  }
  link.send(wire::make_message(g, tensors));
  stats_.bytes_up += sync::payload_bytes(tensors);
  stats_.nnz_up += static_cast<std::uint64_t>(s.nnz());
  ++stats_.contributions;
  outstanding_.emplace(g.seq, std::move(s));
  wait_until(link, staleness_, timeout);
}

void FrontSync::drain(transport::ClientTransport& link, std::chrono::milliseconds timeout) {
  wait_until(link, 0, timeout);
}

}  // namespace cutlayer::client
