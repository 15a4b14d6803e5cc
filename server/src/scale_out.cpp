#include "cutlayer/server/scale_out.h"

#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cstring>

#include "cutlayer/crypto/crypto.h"
#include "cutlayer/log.h"
#include "cutlayer/state/archive.h"

namespace cutlayer::server {
namespace {

// "HOST:PORT" -> (HOST, PORT); throws ConfigError.
std::pair<std::string, std::uint16_t> host_port(const std::string& store, const std::string& where) {
  const auto colon = store.rfind(':');
  int port = -1;
  if (colon != std::string::npos && colon > 0) {
    try {
      std::size_t used = 0;
      port = std::stoi(store.substr(colon + 1), &used);
      if (used != store.size() - colon - 1) port = -1;
    } catch (const std::exception&) {
      port = -1;
    }
  }
  if (port < 1 || port > 65535)
    throw ConfigError(where + ": field `scale_out.store`: \"" + store +
                      "\" is neither HOST:PORT (rank 0 hosts a TCPStore on PORT) nor file:PATH (a FileStore)");
  return {store.substr(0, colon), static_cast<std::uint16_t>(port)};
}

bool is_file_store(const std::string& store) { return store.rfind("file:", 0) == 0; }

c10d::ReduceOp reduce_op(RankGroup::Op op) {
  switch (op) {
    case RankGroup::Op::kMin: return c10d::ReduceOp::MIN;
    case RankGroup::Op::kMax: return c10d::ReduceOp::MAX;
    default: return c10d::ReduceOp::SUM;
  }
}

}  // namespace

void check_scale_out(const ScaleOutOptions& o, const std::string& where) {
  if (o.world < 1 || o.world > 1024)
    throw ConfigError(where + ": field `scale_out.world` must be in [1, 1024] (--world), not " + std::to_string(o.world));
  if (o.rank < 0 || o.rank >= o.world)
    throw ConfigError(where + ": the rank (--rank) must be in [0, " + std::to_string(o.world) + "), not " +
                      std::to_string(o.rank));
  if (o.world == 1) return;
  if (o.store.empty())
    throw ConfigError(where + ": field `scale_out.store` is needed with " + std::to_string(o.world) +
                      " ranks (e.g. \"10.0.0.1:29510\", where rank 0 runs; or --store)");
  if (is_file_store(o.store)) {
    if (o.store.size() == 5) throw ConfigError(where + ": field `scale_out.store`: \"file:\" names no file (file:PATH)");
  } else {
    host_port(o.store, where);
  }
}

struct RankGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
};

RankGroup::RankGroup(const ScaleOutOptions& o) : options_(o), impl_(std::make_unique<Impl>()) {
  check_scale_out(o, "scale-out");
  std::string host = o.host;
  try {
    if (is_file_store(o.store)) {
      impl_->store = c10::make_intrusive<c10d::FileStore>(o.store.substr(5), o.world);
    } else {
      const auto [store_host, port] = host_port(o.store, "scale-out");
      c10d::TCPStoreOptions so;
      so.port = port;
      so.isServer = o.rank == 0;
      so.numWorkers = static_cast<std::size_t>(o.world);
      so.waitWorkers = false;
      so.timeout = o.timeout;
      impl_->store = c10::make_intrusive<c10d::TCPStore>(store_host, so);
      if (host.empty() && o.rank == 0) host = store_host;
    }
    impl_->store->setTimeout(o.timeout);
    auto po = c10d::ProcessGroupGloo::Options::create(o.timeout);
    po->devices.push_back(host.empty() ? c10d::ProcessGroupGloo::createDefaultDevice()
                                       : c10d::ProcessGroupGloo::createDeviceForHostname(host));
    po->threads = 1;
    impl_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, o.rank, o.world, po);
  } catch (const std::exception& e) {
    throw ScaleOutError("rank " + std::to_string(o.rank) + " of " + std::to_string(o.world) +
                        ": the ranks did not meet through the store " + o.store + " within " +
                        std::to_string(o.timeout.count()) + " ms (start every rank, with the same store and "
                        "world; is rank 0 reachable?): " + e.what());
  }
}

RankGroup::~RankGroup() = default;

struct RankGroup::Pending::Work {
  std::vector<at::Tensor> tensors;
  c10::intrusive_ptr<c10d::Work> work;
  std::string who;
};

RankGroup::Pending RankGroup::start(torch::Tensor& t, Op op) {
  Pending p;
  p.work_ = std::make_shared<Pending::Work>();
  p.work_->tensors = {t};
  p.work_->who = "rank " + std::to_string(options_.rank) + " of " + std::to_string(options_.world) +
                 ": a collective with the other ranks failed (a rank stopped, died or stalled past " +
                 std::to_string(options_.timeout.count()) + " ms): ";
  c10d::AllreduceOptions ao;
  ao.reduceOp = reduce_op(op);
  ao.timeout = options_.timeout;
  try {
    p.work_->work = impl_->pg->allreduce(p.work_->tensors, ao);
  } catch (const std::exception& e) {
    throw ScaleOutError(p.work_->who + e.what());
  }
  return p;
}

bool RankGroup::Pending::done() {
  try {
    if (!work_->work->isCompleted()) return false;
    work_->work->wait();  // rethrows the collective's failure
    return true;
  } catch (const std::exception& e) {
    throw ScaleOutError(work_->who + e.what());
  }
}

void RankGroup::allreduce(torch::Tensor& t, Op op) { start(t, op).wait(); }

void RankGroup::Pending::wait() {
  try {
    work_->work->wait();  // bounded by the group's timeout; rethrows the collective's failure
  } catch (const std::exception& e) {
    throw ScaleOutError(work_->who + e.what());
  }
}

bool RankGroup::same_everywhere(const std::array<std::uint8_t, 32>& bytes) {
  auto lo = torch::empty({4}, torch::kInt64);
  std::memcpy(lo.data_ptr(), bytes.data(), bytes.size());
  auto hi = lo.clone();
  allreduce(lo, Op::kMin);
  allreduce(hi, Op::kMax);
  return torch::equal(lo, hi);
}

ServerRounds::ServerRounds(BackTrainer& trainer, RankGroup* group, Aggregator* aggregator)
    : trainer_(trainer), group_(group), aggregator_(group ? aggregator : nullptr), last_round_(Clock::now()) {
  if (aggregator_) aggregator_->set_collective();
}

// The back's values and, with aggregation, the front replica's, on every rank.
bool ServerRounds::replicas_identical() {
  if (!group_) return true;
  const auto back = state::values_hash({trainer_.back_model().ptr().get()});
  std::string both(back.begin(), back.end());
  if (aggregator_) both += aggregator_->hash();
  const auto start = Clock::now();
  const bool same = group_->same_everywhere(crypto::sha256(both.data(), both.size()));
  stats_.allreduce_seconds += std::chrono::duration<double>(Clock::now() - start).count();
  ++stats_.hash_checks;
  return same;
}

void ServerRounds::check_replicas() {
  if (!replicas_identical())
    throw ScaleOutError("the replicas (back" + std::string(aggregator_ ? " and front" : "") +
                        ") differ across the ranks after step " + std::to_string(trainer_.stats().steps) +
                        ": stopping every rank (restart them from checkpoints of the same step)");
}

ServerRounds::Result ServerRounds::poll(Clock::time_point now, bool stop_requested, bool checkpoint_due) {
  if (!group_) return local(now, stop_requested, checkpoint_due);
  if (phase_ == Phase::kNone) {
    // A round waiting only for a U-shaped step's HeadGrad starts no new forward meanwhile:
    // one client's step delays the ranks at most head_grad_timeout_ms.
    if (trainer_.pending_session() && (trainer_.round_ready(now) || stop_requested || checkpoint_due))
      trainer_.close_round();
    if (!should_start(now, stop_requested, checkpoint_due)) return {};
    start(stop_requested, checkpoint_due);
  }
  return advance(now);
}

// One server: a round closes when due, or with what it holds when stopping.
ServerRounds::Result ServerRounds::local(Clock::time_point now, bool stop_requested, bool checkpoint_due) {
  Result r;
  const bool idle = trainer_.round_batches() == 0 || trainer_.pending_session();
  if (trainer_.round_due(now) || (stop_requested && !idle)) {
    r.out = trainer_.finish_round(trainer_.round_samples(), now, /*replay=*/!stop_requested);
    r.stepped = true;
    ++stats_.rounds;
    ++stats_.steps;
  }
  r.checkpoint = checkpoint_due;
  r.stop = stop_requested && !trainer_.pending_session();
  return r;
}

// A rank joins a round when its own is due; with no batch to offer, after `idle` when it
// serves no client (or its clients are not all in yet: nobody steps then), else after the
// round's wait (its clients are slow: the round goes on without them).
bool ServerRounds::should_start(Clock::time_point now, bool stop_requested, bool checkpoint_due) const {
  // Between a U-shaped step's forward and backward the back must not change.
  if (trainer_.pending_session()) return false;
  const auto since = now - last_round_;
  const bool idle = since >= group_->options().idle;
  if (stop_requested || checkpoint_due) return true;
  // Until every rank is ready nobody steps: ask again every idle_ms, not every turn.
  if (trainer_.round_due(now)) return ready_ || idle;
  if (aggregator_) {  // this rank's members are all in the aggregation's round, or it is late
    const auto o = aggregator_->offer(now);
    if (o[0] > 0 && (o[3] >= o[2] || o[4] > 0)) return true;
  }
  if (!trainer_.round_quorum()) return idle;
  // No batch to offer: a round is worth waiting for only while clients that had a batch in
  // the last round are still here (not one that is idle, evaluating or gone).
  return trainer_.round_batches() == 0 &&
         (trainer_.active_sessions() == 0 ? idle : since >= trainer_.round_options().wait);
}

void ServerRounds::start(bool stop_requested, bool checkpoint_due) {
  trainer_.close_round();  // what it holds now is what it offers
  std::vector<double> h{static_cast<double>(trainer_.round_samples()), trainer_.round_quorum() ? 1.0 : 0.0,
                        stop_requested ? 1.0 : 0.0, checkpoint_due ? 1.0 : 0.0};
  if (aggregator_) {
    for (const double v : aggregator_->offer(Clock::now())) h.push_back(v);
    aggregator_->freeze();  // the round holds what it offers until the collective ends
  }
  header_ = torch::tensor(h, torch::kFloat64);
  started_ = Clock::now();
  pending_ = group_->start(header_);
  phase_ = Phase::kHeader;
}

// Advances the round in flight by one finished collective: the header, then the back's
// gradient (when any rank has examples and all are ready, or they stop), then the front's
// update (when the summed offers close the aggregation's round).
ServerRounds::Result ServerRounds::advance(Clock::time_point now) {
  if (!pending_->done()) return {};
  Result r;
  if (phase_ == Phase::kHeader) {
    if (aggregator_)
      for (int i = 0; i < Aggregator::kOfferSize; ++i) offers_[i] = header_[4 + i].item<double>();
    const bool ready = header_[1].item<double>() >= group_->world() || header_[2].item<double>() > 0;
    ready_ = ready;
    if (ready && header_[0].item<double>() > 0) {
      gradient_started_ = Clock::now();
      pending_ = group_->start(trainer_.round_gradient());
      phase_ = Phase::kGradient;
      return r;
    }
    r.out = trainer_.reopen_round(now);  // no step: the batches stay in the round
  } else if (phase_ == Phase::kGradient) {
    stats_.gradient_seconds += std::chrono::duration<double>(Clock::now() - gradient_started_).count();
    r.out = trainer_.finish_round(static_cast<std::int64_t>(header_[0].item<double>()), now,
                                  /*replay=*/header_[2].item<double>() == 0);
    stepped_ = true;
    ++stats_.steps;
  } else {
    r.out = aggregator_->finish_collective(offers_, front_, trainer_.stats().steps, group_->world(), now);
    ++stats_.front_rounds;
    return conclude(std::move(r));
  }
  if (aggregator_ && aggregator_->closes(offers_)) {
    front_ = aggregator_->begin_collective(offers_);
    pending_ = group_->start(front_);
    phase_ = Phase::kFront;
    return r;  // the back's replies go now; the Updates when the front's sum is in
  }
  return conclude(std::move(r));
}

ServerRounds::Result ServerRounds::conclude(Result r) {
  if (aggregator_ && phase_ != Phase::kFront)  // the round did not close: what queued joins it
    for (auto& o : aggregator_->thaw(Clock::now())) r.out.push_back(std::move(o));
  pending_.reset();
  phase_ = Phase::kNone;
  stats_.allreduce_seconds += std::chrono::duration<double>(Clock::now() - started_).count();
  ++stats_.rounds;
  r.stepped = stepped_;
  r.stop = header_[2].item<double>() > 0;
  r.checkpoint = header_[3].item<double>() > 0;
  stepped_ = false;
  last_round_ = Clock::now();
  const int every = group_->options().check_every;
  if (r.stepped && every > 0 && stats_.steps % static_cast<std::uint64_t>(every) == 0) check_replicas();
  return r;
}

}  // namespace cutlayer::server
