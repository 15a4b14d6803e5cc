#include "cutlayer/server/aggregator.h"

#include <algorithm>
#include <cmath>

#include "cutlayer/error.h"
#include "cutlayer/log.h"
#include "cutlayer/state/checkpoint.h"
#include "cutlayer/sync/snapshot.h"
#include "cutlayer/sync/sparse_wire.h"
#include "cutlayer/train/optimizer.h"

namespace cutlayer::server {

namespace {
constexpr std::uint64_t kMaxSamples = 1ull << 32;
}

Aggregator::Aggregator(const train::TrainOptions& train, AggregatorOptions options)
    : train_(train),
      options_(options),
      model_(model::build_split(train::split_spec(train), train.seed)),
      flat_(sync::flat_params(model_.front, &model_.head)),
      opt_(train::make_optimizer(flat_.params(), train)),
      acc_(flat_.numel()) {
  if (options_.kfac_factors == "average")
    kfac_ = std::make_unique<train::Kfac>(std::vector<torch::nn::Sequential>{model_.front, model_.head},
                                          std::vector<std::string>{"front", "head"}, train.kfac,
                                          "aggregation (averaged factors, decomposed by the " +
                                              options_.kfac_decompositions + ")");
}

void Aggregator::save(state::OutputArchive& a) const {
  state::save_part(a, "replica_front", *model_.front);
  if (model_.has_head()) state::save_part(a, "replica_head", *model_.head);
  state::save_part(a, "replica_optimizer", *opt_);
  state::save_int(a, "round", static_cast<std::int64_t>(version_));
  // The clip's history: a resumed run clips as the uninterrupted one would.
  a.write("clip_norms", torch::tensor(std::vector<double>(norms_.begin(), norms_.end()), torch::kFloat64));
  if (!kfac_) return;
  kfac_->save(a, "replica_kfac");
  state::save_int(a, "replica_kfac_shipped", static_cast<std::int64_t>(kfac_shipped_.size()));
  for (std::size_t i = 0; i < kfac_shipped_.size(); ++i)
    a.write("replica_kfac_shipped." + std::to_string(i), kfac_shipped_[i]);
}

void Aggregator::load(state::InputArchive& a) {
  if (!members_.empty()) throw InternalError("Aggregator::load after members joined");
  state::load_part(a, "replica_front", *model_.front);
  if (model_.has_head()) state::load_part(a, "replica_head", *model_.head);
  state::load_part(a, "replica_optimizer", *opt_);
  version_ = static_cast<std::uint64_t>(state::load_int(a, "round"));
  torch::Tensor norms = torch::zeros({0}, torch::kFloat64);  // a checkpoint from before the clip history: none
  try {
    a.try_read("clip_norms", norms);
  } catch (const c10::Error& e) {
    throw state::CheckpointRefused(std::string("its clip history does not read: ") + e.what_without_backtrace());
  }
  if (norms.scalar_type() != torch::kFloat64 || norms.dim() != 1)
    throw state::CheckpointRefused("its clip history is not a vector of doubles");
  norms = norms.contiguous();
  const auto* p = norms.data_ptr<double>();
  const auto keep = std::min<std::int64_t>(norms.numel(), static_cast<std::int64_t>(std::max<std::size_t>(options_.clip_window, 1)));
  norms_.assign(p + norms.numel() - keep, p + norms.numel());
  if (kfac_) load_kfac(a);
  round_.clear();
  round_samples_ = 0;
}

void Aggregator::load_kfac(state::InputArchive& a) {
  const auto n = state::load_int(a, "replica_kfac_shipped");
  std::vector<torch::Tensor> shipped(static_cast<std::size_t>(std::max<std::int64_t>(n, 0)));
  for (std::size_t i = 0; i < shipped.size(); ++i)
    if (!a.try_read("replica_kfac_shipped." + std::to_string(i), shipped[i]))
      throw state::CheckpointRefused("its shared K-FAC state is incomplete");
  try {
    if (!shipped.empty() && options_.kfac_decompositions == "members")
      kfac_->check_factors(kfac_->unpack(shipped, "shipped"), "shipped");
  } catch (const ProtocolError& e) {
    throw state::CheckpointRefused(e.what());
  }
  kfac_->load(a, "replica_kfac");  // refuses without changing anything
  kfac_shipped_ = std::move(shipped);
}

std::vector<const torch::nn::Module*> Aggregator::replica_parts() const {
  std::vector<const torch::nn::Module*> p{model_.front.ptr().get()};
  if (model_.has_head()) p.push_back(model_.head.ptr().get());
  return p;
}

Aggregator::Outbox Aggregator::add_member(std::uint64_t session, const std::string& name,
                                          std::uint64_t declared_samples) {
  Outbox out;
  if (members_.count(session)) throw ProtocolError("SnapshotRequest twice in one session");
  auto& m = members_[session];
  m.name = name;
  m.declared_samples = declared_samples;
  sync::SnapshotKfac shared;
  if (kfac_) {
    shared.sharing = options_.kfac_decompositions;
    shared.method = train_.kfac.method;
    shared.damping = train_.kfac.damping;
    if (!kfac_shipped_.empty())
      shared.content = options_.kfac_decompositions == "server" ? wire::KfacContent::kDecompositions
                                                                : wire::KfacContent::kFactors;
    shared.tensors = kfac_shipped_;
  }
  out.emplace_back(session, sync::make_snapshot(version_, options_.staleness, flat_, *opt_, shared));
  log::get("aggregator")->info("'{}' joined the aggregation at round {} ({} members)", name, version_,
                               members_.size());
  ++joined_;
  if (!quorum_ && members_.size() >= options_.start_members) {
    quorum_ = true;
    round_deadline_ = Clock::now() + options_.deadline;  // the open round's clock starts now
    if (options_.start_members > 1)
      log::get("aggregator")->info("{} members have joined: rounds close from now on", members_.size());
  }
  return out;
}

Aggregator::Outbox Aggregator::remove_member(std::uint64_t session, Clock::time_point now) {
  Outbox out;
  auto it = members_.find(session);
  if (it == members_.end()) return out;
  log::get("aggregator")->info("'{}' left the aggregation at round {}", it->second.name, version_);
  members_.erase(it);  // its contribution in the open round, if any, stays
  maybe_close(now, out);
  return out;
}

Aggregator::Outbox Aggregator::contribute(std::uint64_t session, const wire::Message& msg,
                                          Clock::time_point now) {
  auto it = members_.find(session);
  if (it == members_.end())
    throw ProtocolError("SparseGrad before SnapshotRequest: ask for the model snapshot first");
  auto& m = it->second;
  const auto g = wire::meta_as<wire::SparseGrad>(msg);
  if (g.seq <= m.last_seq)
    throw ProtocolError("SparseGrad seq " + std::to_string(g.seq) + " after " + std::to_string(m.last_seq));
  if (g.base > version_)
    throw ProtocolError("SparseGrad computed on version " + std::to_string(g.base) + ", but only " +
                        std::to_string(version_) + " rounds exist");
  if (g.samples == 0 || g.samples > kMaxSamples) throw ProtocolError("SparseGrad with an impossible sample count");
  // While a collective close is in flight (frozen), a member not in the round queues its
  // contribution for the next round, where it would have been admitted.
  const std::size_t ahead = m.in_round ? options_.staleness : options_.staleness + 1;
  if ((m.in_round || frozen_) && m.queue.size() >= ahead)
    throw ProtocolError("more than " + std::to_string(options_.staleness) +
                        " contributions ahead of the open round (the staleness bound)");
  Contribution c;
  c.session = session;
  c.seq = g.seq;
  c.base = g.base;
  c.samples = g.samples;
  c.factors = read_factors(m, msg, g.kfac_tensors);
  c.grad = sync::from_tensors(g.layout, sync::leading(msg.tensors, g.kfac_tensors, "SparseGrad"), flat_.numel());
  check_values(c.grad.values, options_.max_abs_value, "SparseGrad");
  // Its weight: at most the examples the member declared at Join (a batch never holds more).
  if (m.declared_samples > 0 && c.samples > m.declared_samples) {
    log::get("aggregator")->debug("'{}': SparseGrad seq {} claims {} examples, weighed as the {} declared at Join",
                                  m.name, g.seq, c.samples, m.declared_samples);
    c.samples = m.declared_samples;
    ++stats_.samples_capped;
  }
  clip(c);
  m.last_seq = g.seq;
  const auto kfac_bytes = sync::payload_bytes({msg.tensors.end() - g.kfac_tensors, msg.tensors.end()});
  stats_.kfac_bytes_up += kfac_bytes;
  stats_.bytes_up += sync::payload_bytes(msg.tensors) - kfac_bytes;
  stats_.nnz_up += static_cast<std::uint64_t>(c.grad.nnz());
  Outbox out;
  if (m.in_round || frozen_) {
    m.queue.push_back(std::move(c));
  } else {
    admit(std::move(c), now, out);
    maybe_close(now, out);
  }
  return out;
}

// A contribution's batch K-FAC factors (its last `n` tensors), checked: the layers' shapes,
// finite, within max_abs_value, covariances (symmetric, diagonal >= 0).
std::vector<torch::Tensor> Aggregator::read_factors(const Member& m, const wire::Message& msg, std::uint32_t n) {
  if (n == 0) return {};
  if (!kfac_)
    throw ProtocolError("SparseGrad with K-FAC factors, but this aggregation keeps them with each member "
                        "(aggregation.kfac_factors \"local\")");
  if (n > msg.tensors.size()) throw ProtocolError("SparseGrad: more K-FAC tensors than tensors");
  const std::vector<torch::Tensor> packed(msg.tensors.end() - n, msg.tensors.end());
  const auto what = "batch factors from '" + m.name + "'";
  auto f = kfac_->unpack(packed, what);  // lengths checked before anything is allocated
  kfac_->check_factors(f, what);
  for (const auto& t : packed) check_values(t, options_.max_abs_value, "SparseGrad's K-FAC factors");
  return f;
}

void Aggregator::clip(Contribution& c) {
  if (options_.clip <= 0 || !c.grad.values.defined()) return;
  const double norm = c.grad.values.norm().item<double>();  // float32 sums, finite: |v| <= max_abs_value
  const std::size_t window = std::max<std::size_t>(options_.clip_window, 1);
  if (norms_.size() >= std::min(kClipMinHistory, window)) {
    std::vector<double> sorted(norms_.begin(), norms_.end());
    auto mid = sorted.begin() + static_cast<std::ptrdiff_t>(sorted.size() / 2);
    std::nth_element(sorted.begin(), mid, sorted.end());
    const double limit = options_.clip * *mid;
    if (norm > limit) {
      log::get("aggregator")->debug("contribution seq {} of norm {:g} clipped to {:g} ({:g} x median {:g})", c.seq,
                                    norm, limit, options_.clip, *mid);
      c.grad.values = c.grad.values * static_cast<float>(limit / norm);
      ++stats_.clipped;
    }
  }
  norms_.push_back(norm);  // as received: a few large ones do not move the median
  while (norms_.size() > window) norms_.pop_front();
}

void Aggregator::admit(Contribution c, Clock::time_point now, Outbox& out) {
  const auto tau = version_ - c.base;
  if (tau > options_.staleness) {
    ++stats_.rejected;
    out.emplace_back(c.session, wire::make_message(wire::SyncReject{
                                    c.seq, tau,
                                    "computed on round " + std::to_string(c.base) + ", " + std::to_string(tau) +
                                        " rounds stale (bound " + std::to_string(options_.staleness) + ")"}));
    return;
  }
  if (round_.empty()) round_deadline_ = now + options_.deadline;
  members_.at(c.session).in_round = true;
  round_samples_ += c.samples;
  round_.push_back(std::move(c));
}

void Aggregator::maybe_close(Clock::time_point now, Outbox& out) {
  if (!quorum_ || collective_) return;
  while (!round_.empty()) {
    bool all = true;
    for (auto& [s, m] : members_) all = all && m.in_round;
    const bool enough = options_.target_samples > 0 &&
                        round_samples_ >= static_cast<std::uint64_t>(options_.target_samples);
    const bool late = now >= round_deadline_;
    if (!all && !enough && !late) return;
    if (all) ++stats_.closed_all;
    else if (enough) ++stats_.closed_samples;
    else close_late(now);
    close(out);
    admit_queued(now, out);
  }
}

// The next round starts with what members queued for it.
void Aggregator::admit_queued(Clock::time_point now, Outbox& out) {
  for (auto& [s, m] : members_) {
    if (m.queue.empty()) continue;
    auto c = std::move(m.queue.front());
    m.queue.pop_front();
    admit(std::move(c), now, out);
  }
}

void Aggregator::close_late(Clock::time_point now) {
  ++stats_.closed_deadline;
  const auto overrun = now - round_deadline_;
  const auto ms = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(overrun).count());
  stats_.max_overrun_ms = std::max(stats_.max_overrun_ms, ms);
  if (overrun > kOverdue) ++stats_.overdue;
}

// A contribution's weight: its share of the round's `samples` examples, times the
// staleness factor (1/(1 + tau) by default); counted in the staleness histogram.
double Aggregator::weigh(const Contribution& c, double samples) {
  const auto tau = version_ - c.base;
  if (stats_.staleness.size() <= tau) stats_.staleness.resize(tau + 1, 0);
  ++stats_.staleness[tau];
  stats_.max_staleness = std::max<std::uint64_t>(stats_.max_staleness, tau);
  double w = static_cast<double>(c.samples) / samples;
  if (tau > 0 && options_.stale_weight == StaleWeight::kInvSqrt) w /= std::sqrt(1.0 + static_cast<double>(tau));
  if (tau > 0 && options_.stale_weight == StaleWeight::kInv) w /= 1.0 + static_cast<double>(tau);
  return w;
}

void Aggregator::close(Outbox& out) {
  // The shared K-FAC part first: it cannot throw, and nothing of the round is applied yet.
  std::vector<torch::Tensor> shipped;
  const auto kfac = fold_factors(shipped);
  for (const auto& c : round_) acc_.add(c.grad, static_cast<float>(weigh(c, static_cast<double>(round_samples_))));
  apply_update(acc_.take(), static_cast<std::uint32_t>(round_.size()), round_samples_, round_.size(), kfac,
               std::move(shipped), out);
}

void Aggregator::apply_update(kernels::SparseTensor update, std::uint32_t contributors, std::uint64_t samples,
                              std::size_t batches, wire::KfacContent kfac, std::vector<torch::Tensor> shipped,
                              Outbox& out) {
  // A union denser than about 4/5 is cheaper sent whole (values only).
  if (!update.dense() && update.nnz() * 5 > update.numel * 4)
    update = kernels::SparseTensor{torch::Tensor(), update.to_dense(), update.numel};
  ++version_;
  const auto position = schedule_steps_ < 0
                            ? static_cast<std::int64_t>(version_ - 1)
                            : std::max<std::int64_t>(0, schedule_steps_ - static_cast<std::int64_t>(batches));
  const double lr = train::lr_at(train_, position);
  train::set_lr(*opt_, lr);
  flat_.set_grads(update);
  opt_->step();

  wire::Update u;
  u.round = version_;
  u.contributors = contributors;
  u.samples = samples;
  u.lr = lr;
  auto tensors = sync::to_tensors(update, false, true, u.layout);
  u.kfac = kfac;
  const auto bytes = sync::payload_bytes(tensors), kfac_bytes = sync::payload_bytes(shipped);
  for (auto& t : shipped) tensors.push_back(t);
  for (auto& [s, m] : members_) {
    u.mine = 0;
    for (const auto& c : round_)
      if (c.session == s) u.mine = c.seq;
    out.emplace_back(s, wire::make_message(u, tensors));
    stats_.bytes_down += bytes;
    stats_.kfac_bytes_down += kfac_bytes;
    ++stats_.updates_sent;
    m.in_round = false;
  }
  stats_.nnz_down += static_cast<std::uint64_t>(update.nnz());
  stats_.contributions += round_.size();
  ++stats_.rounds;
  round_.clear();
  round_samples_ = 0;
}

std::array<double, Aggregator::kOfferSize> Aggregator::offer(Clock::time_point now) const {
  double in = 0;
  for (const auto& [s, m] : members_) in += m.in_round;
  return {static_cast<double>(round_.size()), static_cast<double>(round_samples_),
          static_cast<double>(members_.size()), in, !round_.empty() && now >= round_deadline_ ? 1.0 : 0.0,
          static_cast<double>(joined_)};
}

bool Aggregator::closes(const std::array<double, kOfferSize>& summed) const {
  if (summed[0] <= 0 || summed[5] < static_cast<double>(options_.start_members)) return false;
  const bool all = summed[3] >= summed[2];
  const bool enough = options_.target_samples > 0 && summed[1] >= static_cast<double>(options_.target_samples);
  return all || enough || summed[4] > 0;
}

torch::Tensor Aggregator::begin_collective(const std::array<double, kOfferSize>& summed) {
  auto dense = torch::zeros({flat_.numel()}, torch::kFloat32);
  for (const auto& c : round_) {
    const double w = weigh(c, summed[1]);
    if (c.grad.dense()) dense.add_(c.grad.values, w);
    else dense.index_add_(0, c.grad.indices.to(torch::kInt64), c.grad.values * static_cast<float>(w));
  }
  return dense;
}

Aggregator::Outbox Aggregator::thaw(Clock::time_point now) {
  frozen_ = false;
  Outbox out;
  admit_queued(now, out);
  return out;
}

Aggregator::Outbox Aggregator::finish_collective(const std::array<double, kOfferSize>& summed,
                                                 const torch::Tensor& sum, std::int64_t back_steps,
                                                 std::int64_t world, Clock::time_point now) {
  frozen_ = false;
  // The schedule's position: the back's steps before the round's batches (on R ranks the
  // back steps once per R batches).
  schedule_steps_ = back_steps;
  ++(summed[3] >= summed[2] ? stats_.closed_all : summed[4] > 0 ? stats_.closed_deadline : stats_.closed_samples);
  const auto idx = sum.nonzero().flatten();
  kernels::SparseTensor update{idx.to(kernels::index_dtype_for(flat_.numel())), sum.index_select(0, idx),
                               flat_.numel()};
  Outbox out;
  apply_update(std::move(update), static_cast<std::uint32_t>(summed[0]), static_cast<std::uint64_t>(summed[1]),
               static_cast<std::size_t>(summed[0]) / static_cast<std::size_t>(std::max<std::int64_t>(world, 1)),
               wire::KfacContent::kNone, {}, out);
  admit_queued(now, out);
  return out;
}

// The round's batch factors, averaged by examples, join the running ones; every
// inverse_every/factor_every-th factor round (the first too) ships them, or the server's
// decompositions of them, to every member.
wire::KfacContent Aggregator::fold_factors(std::vector<torch::Tensor>& shipped) {
  if (!kfac_) return wire::KfacContent::kNone;
  double total = 0;
  for (const auto& c : round_)
    if (!c.factors.empty()) total += static_cast<double>(c.samples);
  if (total == 0) return wire::KfacContent::kNone;
  std::vector<torch::Tensor> mean;  // a convex combination of checked covariances: finite, one too
  for (const auto& c : round_) {
    if (c.factors.empty()) continue;
    const double w = static_cast<double>(c.samples) / total;
    if (mean.empty())
      for (const auto& f : c.factors) mean.push_back(f * w);
    else
      for (std::size_t i = 0; i < mean.size(); ++i) mean[i].add_(c.factors[i], w);
  }
  std::int64_t folds = 0;
  try {
    folds = kfac_->fold(mean);
  } catch (const ProtocolError& e) {  // rounding made the mean unusable: this round's factors are dropped
    log::get("aggregator")->warn("round {}: the members' averaged K-FAC factors were dropped ({})", version_ + 1,
                                 e.what());
    return wire::KfacContent::kNone;
  }
  ++stats_.kfac_rounds;
  const auto every = std::max<std::int64_t>(1, train_.kfac.inverse_every / train_.kfac.factor_every);
  if ((folds - 1) % every != 0) return wire::KfacContent::kNone;
  const bool members = options_.kfac_decompositions == "members";
  if (!members) {
    const auto t0 = Clock::now();
    kfac_->decompose_now();  // a layer whose decomposition fails keeps its previous one
    stats_.kfac_decompose_ms += std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  }
  auto next = members ? train::Kfac::pack(kfac_->factor_tensors()) : kfac_->decomposition_tensors();
  if (next.empty()) return wire::KfacContent::kNone;  // nothing whole to ship yet
  ++stats_.kfac_shipped;
  kfac_shipped_ = std::move(next);
  shipped = kfac_shipped_;
  return members ? wire::KfacContent::kFactors : wire::KfacContent::kDecompositions;
}

Aggregator::Outbox Aggregator::tick(Clock::time_point now) {
  Outbox out;
  maybe_close(now, out);
  return out;
}

}  // namespace cutlayer::server
