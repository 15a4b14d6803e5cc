// The aggregator's rounds, weights, staleness bound, membership and snapshots, driven
// message by message with an explicit clock.
#include <gtest/gtest.h>

#include <array>

#include <cfloat>
#include <cmath>

#include "cutlayer/error.h"
#include "cutlayer/kernels/compressor.h"
#include "cutlayer/server/aggregator.h"
#include "cutlayer/sync/snapshot.h"
#include "cutlayer/sync/sparse_wire.h"
#include "cutlayer/train/kfac.h"
#include "cutlayer/train/optimizer.h"

namespace cutlayer::server {
namespace {

using namespace std::chrono_literals;
using Clock = Aggregator::Clock;

train::TrainOptions tiny() {
  train::TrainOptions o;
  o.model = "tiny";
  o.front = "linear(16,8) relu linear(8,6)";
  o.back = "linear(6,3)";
  o.input_shape = {16};
  o.lr = 0.1;
  o.momentum = 0.9;
  return o;
}

constexpr std::int64_t kNumel = 16 * 8 + 8 + 8 * 6 + 6;

kernels::SparseTensor random_sparse(std::uint64_t seed, double density = 0.2) {
  torch::manual_seed(seed);
  auto g = torch::randn({kNumel});
  auto c = kernels::make_compressor("topk", {false, 3, 0});
  torch::Tensor none;
  return c->compress(g, none, density);
}

kernels::SparseTensor as_dense(const kernels::SparseTensor& s) {
  return kernels::SparseTensor{torch::Tensor(), s.to_dense(), s.numel};
}

wire::Message contribution(std::uint64_t seq, std::uint64_t base, std::uint64_t samples,
                           const kernels::SparseTensor& s, bool varint = true) {
  wire::SparseGrad g;
  g.seq = seq;
  g.base = base;
  g.samples = samples;
  auto tensors = sync::to_tensors(s, false, varint, g.layout);
  return wire::make_message(g, tensors);
}

std::vector<wire::Message> of_type(const Aggregator::Outbox& out, wire::MsgType t) {
  std::vector<wire::Message> r;
  for (auto& [s, m] : out)
    if (m.type == t) r.push_back(m);
  return r;
}

torch::Tensor update_values(const wire::Message& m) {
  const auto u = wire::meta_as<wire::Update>(m);
  return sync::from_tensors(u.layout, m.tensors, kNumel).to_dense();
}

TEST(Aggregator, ReplicaHasTheClientsParameterCount) {
  Aggregator a(tiny(), {});
  EXPECT_EQ(a.numel(), kNumel);
}

TEST(Aggregator, SparseAggregationEqualsDenseAggregationOfTheSameVectors) {
  Aggregator sparse(tiny(), {}), dense(tiny(), {});
  const auto t = Clock::now();
  for (auto* a : {&sparse, &dense}) {
    a->add_member(1, "a");
    a->add_member(2, "b");
  }
  const auto s1 = random_sparse(1), s2 = random_sparse(2);
  sparse.contribute(1, contribution(1, 0, 64, s1), t);
  dense.contribute(1, contribution(1, 0, 64, as_dense(s1)), t);
  auto out_s = sparse.contribute(2, contribution(1, 0, 32, s2), t);
  auto out_d = dense.contribute(2, contribution(1, 0, 32, as_dense(s2)), t);
  auto us = of_type(out_s, wire::MsgType::kUpdate), ud = of_type(out_d, wire::MsgType::kUpdate);
  ASSERT_EQ(us.size(), 2u);
  ASSERT_EQ(ud.size(), 2u);
  const auto vs = update_values(us[0]), vd = update_values(ud[0]);
  EXPECT_TRUE(torch::equal(vs, vd));
  // and both are the samples-weighted mean
  auto expect = s1.to_dense() * static_cast<float>(64.0 / 96) + s2.to_dense() * static_cast<float>(32.0 / 96);
  EXPECT_TRUE(torch::allclose(vs, expect, 1e-6, 1e-7));
  EXPECT_FALSE(wire::meta_as<wire::Update>(us[0]).layout.dense);  // the union stays sparse
  EXPECT_EQ(sparse.hash(), dense.hash());
  EXPECT_EQ(sparse.version(), 1u);
}

TEST(Aggregator, RoundWaitsForEveryMemberAndTellsEachWhichContributionWasIn) {
  Aggregator a(tiny(), {});
  const auto t = Clock::now();
  for (std::uint64_t s = 1; s <= 3; ++s) a.add_member(s, "m");
  EXPECT_TRUE(a.contribute(1, contribution(7, 0, 64, random_sparse(1)), t).empty());
  EXPECT_TRUE(a.contribute(2, contribution(3, 0, 64, random_sparse(2)), t).empty());
  EXPECT_EQ(a.version(), 0u);
  auto out = a.contribute(3, contribution(1, 0, 64, random_sparse(3)), t);
  ASSERT_EQ(out.size(), 3u);
  std::map<std::uint64_t, std::uint64_t> mine;
  for (auto& [s, m] : out) {
    const auto u = wire::meta_as<wire::Update>(m);
    EXPECT_EQ(u.round, 1u);
    EXPECT_EQ(u.contributors, 3u);
    EXPECT_EQ(u.samples, 192u);
    EXPECT_DOUBLE_EQ(u.lr, 0.1);
    mine[s] = u.mine;
  }
  EXPECT_EQ(mine, (std::map<std::uint64_t, std::uint64_t>{{1, 7}, {2, 3}, {3, 1}}));
  EXPECT_EQ(a.stats().closed_all, 1u);
}

// The deadline runs from a round's first contribution; a close later than that is the
// loop's latency, measured: the longest overrun, and the rounds more than kOverdue late.
TEST(Aggregator, DeadlineClosesCountHowLongTheRoundStayedOpenPastItsDeadline) {
  AggregatorOptions o;
  o.deadline = 500ms;
  Aggregator a(tiny(), o);
  const auto t0 = Clock::now();
  for (std::uint64_t s = 1; s <= 2; ++s) a.add_member(s, "m");
  a.contribute(1, contribution(1, 0, 64, random_sparse(1)), t0 + 200ms);
  a.tick(t0 + 730ms);  // the deadline is t0 + 700 ms: 30 ms late
  EXPECT_EQ(a.stats().closed_deadline, 1u);
  EXPECT_EQ(a.stats().max_overrun_ms, 30u);
  EXPECT_EQ(a.stats().overdue, 0u);
  a.contribute(1, contribution(2, 1, 64, random_sparse(2)), t0 + 1000ms);
  a.tick(t0 + 1000ms + 500ms + kOverdue + 1ms);
  EXPECT_EQ(a.stats().closed_deadline, 2u);
  EXPECT_EQ(a.stats().max_overrun_ms, 1001u);
  EXPECT_EQ(a.stats().overdue, 1u);
  // A round every member closed is not a deadline close, however late.
  a.contribute(1, contribution(3, 2, 64, random_sparse(3)), t0 + 5000ms);
  a.contribute(2, contribution(1, 2, 64, random_sparse(4)), t0 + 9000ms);
  a.tick(t0 + 9000ms);
  EXPECT_EQ(a.stats().closed_all, 1u);
  EXPECT_EQ(a.stats().overdue, 1u);
}

TEST(Aggregator, NoRoundClosesBeforeStartMembersHaveJoined) {
  AggregatorOptions o;
  o.deadline = 500ms;
  o.start_members = 2;
  Aggregator a(tiny(), o);
  const auto t0 = Clock::now();
  a.add_member(1, "first");
  EXPECT_TRUE(a.contribute(1, contribution(1, 0, 64, random_sparse(1)), t0).empty());
  EXPECT_TRUE(a.tick(t0 + 10s).empty());  // far past the deadline, but alone: no round
  EXPECT_EQ(a.version(), 0u);
  a.add_member(2, "second");
  const auto ups = of_type(a.contribute(2, contribution(1, 0, 64, random_sparse(2)), Clock::now()),
                           wire::MsgType::kUpdate);
  ASSERT_EQ(ups.size(), 2u);  // one per member
  EXPECT_EQ(wire::meta_as<wire::Update>(ups[0]).contributors, 2u);
  EXPECT_EQ(a.version(), 1u);
  EXPECT_EQ(a.stats().closed_all, 1u);
}

TEST(Aggregator, DeadlineClosesTheRoundWithoutASilentMemberAndItsLateContributionIsRefused) {
  AggregatorOptions o;
  o.deadline = 500ms;
  Aggregator a(tiny(), o);
  const auto t0 = Clock::now();
  for (std::uint64_t s = 1; s <= 3; ++s) a.add_member(s, "m");
  a.contribute(1, contribution(1, 0, 64, random_sparse(1)), t0);
  a.contribute(2, contribution(1, 0, 64, random_sparse(2)), t0 + 100ms);
  EXPECT_TRUE(a.tick(t0 + 499ms).empty());
  auto out = a.tick(t0 + 500ms);
  ASSERT_EQ(of_type(out, wire::MsgType::kUpdate).size(), 3u);  // the silent member is still sent it
  for (auto& [s, m] : out)
    if (s == 3) {
      EXPECT_EQ(wire::meta_as<wire::Update>(m).mine, 0u);
    }
  EXPECT_EQ(a.stats().closed_deadline, 1u);
  EXPECT_EQ(a.version(), 1u);
  // Member 3's contribution computed on round 0 arrives now: 1 round stale, bound 0.
  auto late = a.contribute(3, contribution(1, 0, 64, random_sparse(3)), t0 + 600ms);
  ASSERT_EQ(late.size(), 1u);
  EXPECT_EQ(late[0].first, 3u);
  ASSERT_EQ(late[0].second.type, wire::MsgType::kSyncReject);
  EXPECT_EQ(wire::meta_as<wire::SyncReject>(late[0].second).staleness, 1u);
  EXPECT_EQ(a.stats().rejected, 1u);
  EXPECT_EQ(a.stats().max_staleness, 0u);
}

TEST(Aggregator, StalenessNeverExceedsTheBoundAndStaleContributionsAreDownWeighted) {
  AggregatorOptions o;
  o.staleness = 2;
  o.stale_weight = StaleWeight::kInvSqrt;
  o.target_samples = 1;  // every contribution closes a round: fully asynchronous
  Aggregator a(tiny(), o);
  const auto t = Clock::now();
  a.add_member(1, "fast");
  a.add_member(2, "slow");
  for (std::uint64_t r = 0; r < 3; ++r) a.contribute(1, contribution(r + 1, r, 64, random_sparse(r)), t);
  EXPECT_EQ(a.version(), 3u);
  // 3 rounds stale: refused
  auto out = a.contribute(2, contribution(1, 0, 64, random_sparse(10)), t);
  ASSERT_EQ(of_type(out, wire::MsgType::kSyncReject).size(), 1u);
  // 2 rounds stale: summed, scaled by 1/sqrt(3)
  const auto s = random_sparse(11);
  out = a.contribute(2, contribution(2, 1, 64, s), t);
  auto ups = of_type(out, wire::MsgType::kUpdate);
  ASSERT_EQ(ups.size(), 2u);
  EXPECT_TRUE(torch::allclose(update_values(ups[0]), s.to_dense() * static_cast<float>(1 / std::sqrt(3.0)), 1e-6, 0));
  EXPECT_EQ(a.stats().max_staleness, 2u);
  EXPECT_EQ(a.stats().staleness, (std::vector<std::uint64_t>{3, 0, 1}));
  // from the future: a protocol error
  EXPECT_THROW(a.contribute(2, contribution(3, 9, 64, s), t), ProtocolError);
}

TEST(Aggregator, InverseStalenessWeightIsTheDefault) {
  AggregatorOptions o;
  o.staleness = 2;
  o.target_samples = 1;
  EXPECT_EQ(o.stale_weight, StaleWeight::kInv);
  Aggregator a(tiny(), o);
  const auto t = Clock::now();
  a.add_member(1, "fast");
  a.add_member(2, "slow");
  for (std::uint64_t r = 0; r < 2; ++r) a.contribute(1, contribution(r + 1, r, 64, random_sparse(r)), t);
  const auto s = random_sparse(11);
  auto ups = of_type(a.contribute(2, contribution(1, 0, 64, s), t), wire::MsgType::kUpdate);
  ASSERT_EQ(ups.size(), 2u);
  EXPECT_TRUE(torch::allclose(update_values(ups[0]), s.to_dense() * static_cast<float>(1.0 / 3), 1e-6, 0));
}

TEST(Aggregator, AMemberCannotQueueMoreThanTheBoundAhead) {
  AggregatorOptions o;
  o.staleness = 1;
  Aggregator a(tiny(), o);
  const auto t = Clock::now();
  a.add_member(1, "fast");
  a.add_member(2, "slow");
  a.contribute(1, contribution(1, 0, 64, random_sparse(1)), t);
  a.contribute(1, contribution(2, 0, 64, random_sparse(2)), t);  // queued for round 2
  EXPECT_THROW(a.contribute(1, contribution(3, 0, 64, random_sparse(3)), t), ProtocolError);
  // The slow member closes round 1; the queued contribution opens round 2 (1 stale, allowed).
  auto out = a.contribute(2, contribution(1, 0, 64, random_sparse(4)), t);
  EXPECT_EQ(of_type(out, wire::MsgType::kUpdate).size(), 2u);
  EXPECT_EQ(a.version(), 1u);
  out = a.contribute(2, contribution(2, 1, 64, random_sparse(5)), t);
  EXPECT_EQ(a.version(), 2u);
  EXPECT_EQ(a.stats().staleness, (std::vector<std::uint64_t>{3, 1}));
}

TEST(Aggregator, ALeavingMemberNoLongerHoldsTheRound) {
  Aggregator a(tiny(), {});
  const auto t = Clock::now();
  a.add_member(1, "a");
  a.add_member(2, "b");
  EXPECT_TRUE(a.contribute(1, contribution(1, 0, 64, random_sparse(1)), t).empty());
  auto out = a.remove_member(2, t);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].first, 1u);
  EXPECT_EQ(a.version(), 1u);
  EXPECT_EQ(a.members(), 1u);
}

TEST(Aggregator, AJoinersSnapshotReproducesTheReplicaIncludingMomentum) {
  Aggregator a(tiny(), {});
  const auto t = Clock::now();
  a.add_member(1, "a");
  for (std::uint64_t r = 0; r < 3; ++r) a.contribute(1, contribution(r + 1, r, 64, random_sparse(r)), t);
  // A client built from another seed: the snapshot must overwrite everything.
  auto o = tiny();
  o.seed = 99;
  auto m = model::build_split(train::split_spec(o), o.seed);
  auto flat = sync::flat_params(m.front, &m.head);
  auto opt = train::make_optimizer(flat.params(), o);
  EXPECT_NE(flat.hash(), a.hash());
  auto out = a.add_member(2, "joiner");
  ASSERT_EQ(out.size(), 1u);
  ASSERT_EQ(out[0].second.type, wire::MsgType::kModelSnapshot);
  EXPECT_EQ(sync::load_snapshot(out[0].second, flat, *opt), 3u);
  EXPECT_EQ(flat.hash(), a.hash());
  // The next round applied on both: equal only if the momentum came along too.
  a.contribute(1, contribution(4, 3, 64, random_sparse(7)), t);
  out = a.contribute(2, contribution(1, 3, 64, random_sparse(8)), t);
  const auto u = of_type(out, wire::MsgType::kUpdate).at(0);
  const auto meta = wire::meta_as<wire::Update>(u);
  flat.set_grads(sync::from_tensors(meta.layout, u.tensors, kNumel));
  train::set_lr(*opt, meta.lr);
  opt->step();
  EXPECT_EQ(flat.hash(), a.hash());
}

TEST(Aggregator, MalformedContributionsAreProtocolErrors) {
  Aggregator a(tiny(), {});
  const auto t = Clock::now();
  EXPECT_THROW(a.contribute(1, contribution(1, 0, 64, random_sparse(1)), t), ProtocolError);  // not a member
  a.add_member(1, "a");
  EXPECT_THROW(a.add_member(1, "a"), ProtocolError);
  EXPECT_THROW(a.contribute(1, contribution(1, 0, 0, random_sparse(1)), t), ProtocolError);  // no samples
  auto wrong = random_sparse(1);
  wrong.numel = kNumel + 1;
  wrong.values = wrong.values.clone();
  EXPECT_THROW(a.contribute(1, contribution(2, 0, 64, wrong), t), ProtocolError);
  auto nan = random_sparse(2);
  nan.values = nan.values.clone();
  nan.values[0] = std::nanf("");
  EXPECT_THROW(a.contribute(1, contribution(3, 0, 64, nan, false), t), ProtocolError);
  a.contribute(1, contribution(4, 0, 64, random_sparse(3)), t);
  EXPECT_THROW(a.contribute(1, contribution(4, 1, 64, random_sparse(3)), t), ProtocolError);  // seq reused
  EXPECT_EQ(a.version(), 1u);
}

TEST(Aggregator, ValuesPastTheBoundAreRefusedAndTheReplicaStaysFiniteOverManyRounds) {
  Aggregator a(tiny(), {});
  const auto t = Clock::now();
  a.add_member(1, "a", 64);
  const auto hash = a.hash();
  std::uint64_t seq = 0;
  for (float big : {FLT_MAX, 3e38f, -1e30f, 1.0001e6f}) {
    auto s = as_dense(random_sparse(1));
    s.values[5] = big;
    try {
      a.contribute(1, contribution(++seq, 0, 64, s, false), t);
      FAIL() << big << " accepted";
    } catch (const ProtocolError& e) {
      EXPECT_NE(std::string(e.what()).find("max_abs_value"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(a.hash(), hash);
  EXPECT_EQ(a.version(), 0u);
  // At the bound, every round: momentum 0.9 sums them, the replica stays finite.
  for (std::uint64_t r = 0; r < 200; ++r) {
    auto s = as_dense(random_sparse(r));
    s.values = torch::sign(s.values) * 1e6f;
    a.contribute(1, contribution(++seq, r, 64, s, false), t);
  }
  EXPECT_EQ(a.version(), 200u);
  for (const auto& p : a.params()) EXPECT_TRUE(torch::isfinite(p).all().item<bool>());
}

TEST(Aggregator, SamplesAreCappedByWhatTheMemberDeclaredAtJoin) {
  Aggregator a(tiny(), {});
  const auto t = Clock::now();
  a.add_member(1, "greedy", 64);
  a.add_member(2, "honest", 64);
  const auto s1 = random_sparse(1), s2 = random_sparse(2);
  a.contribute(1, contribution(1, 0, std::uint64_t{1} << 32, s1), t);
  auto ups = of_type(a.contribute(2, contribution(1, 0, 64, s2), t), wire::MsgType::kUpdate);
  ASSERT_EQ(ups.size(), 2u);
  EXPECT_EQ(wire::meta_as<wire::Update>(ups[0]).samples, 128u);
  // Both weigh the same: the plain mean.
  EXPECT_TRUE(torch::allclose(update_values(ups[0]), (s1.to_dense() + s2.to_dense()) * 0.5f, 1e-6, 1e-7));
  EXPECT_EQ(a.stats().samples_capped, 1u);
  // Past 2^32 it is still an impossible count.
  EXPECT_THROW(a.contribute(1, contribution(2, 1, (std::uint64_t{1} << 32) + 1, s1), t), ProtocolError);
}

TEST(Aggregator, NormClipScalesAContributionToCTimesTheRunningMedian) {
  AggregatorOptions o;
  o.clip = 2;
  o.clip_window = 8;
  Aggregator a(tiny(), o);
  const auto t = Clock::now();
  a.add_member(1, "a", 64);
  std::uint64_t seq = 0;
  auto with_norm = [](std::uint64_t seed, double norm) {
    auto s = random_sparse(seed);
    s.values = s.values * static_cast<float>(norm / s.values.norm().item<double>());
    return s;
  };
  auto norm_of_update = [&](const Aggregator::Outbox& out) {
    return update_values(of_type(out, wire::MsgType::kUpdate).at(0)).norm().item<double>();
  };
  // Too little history: not clipped (the first kClipMinHistory contributions).
  for (std::uint64_t r = 0; r < kClipMinHistory; ++r) {
    auto out = a.contribute(1, contribution(++seq, r, 64, with_norm(r, 1.0 + 0.1 * r)), t);
    EXPECT_NEAR(norm_of_update(out), 1.0 + 0.1 * r, 1e-5);
  }
  EXPECT_EQ(a.stats().clipped, 0u);
  // Norms 1.0 .. 1.4: median 1.2, so a contribution of norm 1000 is scaled to 2.4.
  auto out = a.contribute(1, contribution(++seq, kClipMinHistory, 64, with_norm(99, 1000)), t);
  EXPECT_NEAR(norm_of_update(out), 2.4, 1e-5);
  EXPECT_EQ(a.stats().clipped, 1u);
  // One large norm does not move the median: an honest one passes unchanged, the next
  // large one is clipped as much.
  out = a.contribute(1, contribution(++seq, kClipMinHistory + 1, 64, with_norm(7, 1.1)), t);
  EXPECT_NEAR(norm_of_update(out), 1.1, 1e-5);
  out = a.contribute(1, contribution(++seq, kClipMinHistory + 2, 64, with_norm(98, 1e5)), t);
  EXPECT_NEAR(norm_of_update(out), 2.4, 1e-5);
  EXPECT_EQ(a.stats().clipped, 2u);
}

TEST(Aggregator, NormClipIsOffByDefault) {
  EXPECT_EQ(AggregatorOptions{}.clip, 0.0);
  Aggregator a(tiny(), {});
  const auto t = Clock::now();
  a.add_member(1, "a", 64);
  for (std::uint64_t r = 0; r < 10; ++r) a.contribute(1, contribution(r + 1, r, 64, random_sparse(r)), t);
  auto big = random_sparse(50);
  big.values = big.values * 1000.f;
  auto out = a.contribute(1, contribution(11, 10, 64, big), t);
  EXPECT_TRUE(torch::allclose(update_values(of_type(out, wire::MsgType::kUpdate).at(0)), big.to_dense(), 1e-6, 0));
  EXPECT_EQ(a.stats().clipped, 0u);
}

// Shared K-FAC on the tiny model: factors every step, decompositions every 2nd factor round.
// Two ranks' aggregators, one member each, closing collectively (their offers and dense
// parts summed as the allreduce would) update their replicas exactly as one aggregator with
// both members; a contribution that arrives while the close is in flight waits for the
// next round instead of joining this one's weights.
TEST(Aggregator, ACollectiveCloseOverTwoRanksEqualsOneAggregatorOverAllMembers) {
  AggregatorOptions o;
  o.staleness = 1;  // a member may send its next contribution while the round closes
  Aggregator one(tiny(), o), r0(tiny(), o), r1(tiny(), o);
  r0.set_collective();
  r1.set_collective();
  const auto t = Clock::now();
  one.add_member(1, "a");
  one.add_member(2, "b");
  r0.add_member(1, "a");
  r1.add_member(2, "b");
  const auto ga = random_sparse(11), gb = random_sparse(12);
  one.contribute(1, contribution(1, 0, 3, ga), t);
  ASSERT_EQ(of_type(one.contribute(2, contribution(1, 0, 5, gb), t), wire::MsgType::kUpdate).size(), 2u);
  EXPECT_TRUE(r0.contribute(1, contribution(1, 0, 3, ga), t).empty());  // no close of its own
  EXPECT_TRUE(r1.contribute(2, contribution(1, 0, 5, gb), t).empty());
  EXPECT_EQ(r0.version(), 0u);

  auto o0 = r0.offer(t), o1 = r1.offer(t);
  std::array<double, Aggregator::kOfferSize> summed{};
  for (int i = 0; i < Aggregator::kOfferSize; ++i) summed[i] = o0[i] + o1[i];
  ASSERT_TRUE(r0.closes(summed));
  r0.freeze();
  r1.freeze();
  EXPECT_TRUE(r0.contribute(1, contribution(2, 0, 7, random_sparse(13)), t).empty());  // queued, not weighed
  const auto sum = r0.begin_collective(summed) + r1.begin_collective(summed);
  const auto out0 = r0.finish_collective(summed, sum, 1, 2, t);
  r1.finish_collective(summed, sum, 1, 2, t);
  ASSERT_EQ(of_type(out0, wire::MsgType::kUpdate).size(), 1u);
  EXPECT_EQ(wire::meta_as<wire::Update>(of_type(out0, wire::MsgType::kUpdate)[0]).samples, 8u);
  EXPECT_EQ(r0.version(), 1u);
  EXPECT_EQ(r0.hash(), r1.hash());
  for (std::size_t i = 0; i < one.params().size(); ++i)
    EXPECT_TRUE(torch::allclose(one.params()[i], r0.params()[i], 1e-6, 1e-7)) << i;
  EXPECT_EQ(r0.offer(t)[0], 1.0);  // the queued contribution opened the next round
}

train::TrainOptions tiny_kfac() {
  auto o = tiny();
  o.optimizer = "kfac";
  o.kfac.factor_decay = 0.5;
  o.kfac.factor_every = 1;
  o.kfac.inverse_every = 2;
  return o;
}

AggregatorOptions averaged(const char* decompositions) {
  AggregatorOptions o;
  o.kfac_factors = "average";
  o.kfac_decompositions = decompositions;
  return o;
}

// A batch's factors for the tiny front (linear(16,8), linear(8,6)): covariances of random rows.
std::vector<torch::Tensor> batch_factors(std::uint64_t seed) {
  torch::manual_seed(seed);
  return {train::linear_a_factor(torch::randn({5, 16}), true), train::linear_g_factor(torch::randn({5, 8})),
          train::linear_a_factor(torch::randn({5, 8}), true), train::linear_g_factor(torch::randn({5, 6}))};
}

wire::Message with_factors(wire::Message m, const std::vector<torch::Tensor>& f) {
  auto g = wire::meta_as<wire::SparseGrad>(m);
  g.kfac_tensors = static_cast<std::uint32_t>(f.size());
  auto tensors = m.tensors;
  for (auto& t : f) tensors.push_back(train::pack_symmetric(t));  // as members send them
  return wire::make_message(g, tensors);
}

TEST(Aggregator, SharedKfacFactorsAreTheExampleWeightedMeanAndShipEveryInverseRound) {
  const auto o = tiny_kfac();
  Aggregator a(o, averaged("server"));
  const auto t = Clock::now();
  a.add_member(1, "a");
  a.add_member(2, "b");
  const auto f1 = batch_factors(1), f2 = batch_factors(2);
  a.contribute(1, with_factors(contribution(1, 0, 64, random_sparse(1)), f1), t);
  auto out = a.contribute(2, with_factors(contribution(1, 0, 32, random_sparse(2)), f2), t);
  auto updates = of_type(out, wire::MsgType::kUpdate);
  ASSERT_EQ(updates.size(), 2u);
  // Round 1 (the first factor round) ships the server's decompositions of
  // 0.5·I + 0.5·(64 F1 + 32 F2)/96 to both members, after the update's own tensors.
  for (const auto& u : updates) {
    const auto meta = wire::meta_as<wire::Update>(u);
    ASSERT_EQ(meta.kfac, wire::KfacContent::kDecompositions);
    const auto k = sync::after_sparse(meta.layout, u.tensors, "Update");
    ASSERT_EQ(k.size(), 4u);
    for (std::size_t i = 0; i < 4; ++i) {
      auto running = 0.5 * torch::eye(f1[i].size(0)) + 0.5 * (64 * f1[i] + 32 * f2[i]) / 96;
      EXPECT_TRUE(torch::allclose(k[i], train::damped_inverse(running, o.kfac.damping), 1e-5, 1e-6)) << i;
    }
  }
  EXPECT_EQ(a.stats().kfac_rounds, 1u);
  // Upper triangles: n(n+1)/2 floats per factor.
  EXPECT_EQ(a.stats().kfac_bytes_up, 2 * (17 * 18 / 2 + 8 * 9 / 2 + 9 * 10 / 2 + 6 * 7 / 2) * 4u);
  // Round 2 folds without shipping; round 3 ships again; a round without factors folds nothing.
  a.contribute(1, with_factors(contribution(2, 1, 64, random_sparse(3)), f2), t);
  out = a.contribute(2, contribution(2, 1, 32, random_sparse(4)), t);
  EXPECT_EQ(wire::meta_as<wire::Update>(of_type(out, wire::MsgType::kUpdate).at(0)).kfac, wire::KfacContent::kNone);
  a.contribute(1, contribution(3, 2, 64, random_sparse(5)), t);
  out = a.contribute(2, contribution(3, 2, 32, random_sparse(6)), t);
  EXPECT_EQ(wire::meta_as<wire::Update>(of_type(out, wire::MsgType::kUpdate).at(0)).kfac, wire::KfacContent::kNone);
  a.contribute(1, with_factors(contribution(4, 3, 64, random_sparse(7)), f1), t);
  out = a.contribute(2, contribution(4, 3, 32, random_sparse(8)), t);
  EXPECT_EQ(wire::meta_as<wire::Update>(of_type(out, wire::MsgType::kUpdate).at(0)).kfac,
            wire::KfacContent::kDecompositions);
  EXPECT_EQ(a.stats().kfac_rounds, 3u);
  EXPECT_EQ(a.stats().kfac_shipped, 2u);
}

TEST(Aggregator, AJoinerGetsTheLastShippedKfacStateAndACheckpointKeepsIt) {
  for (const char* mode : {"server", "members"}) {
    Aggregator a(tiny_kfac(), averaged(mode));
    const auto t = Clock::now();
    a.add_member(1, "a");
    a.contribute(1, with_factors(contribution(1, 0, 64, random_sparse(1)), batch_factors(1)), t);  // ships
    a.contribute(1, with_factors(contribution(2, 1, 64, random_sparse(2)), batch_factors(2)), t);  // folds only
    // A member's K-FAC over the same front, installing what the snapshot carries.
    auto o = tiny_kfac();
    auto m = model::build_split(train::split_spec(o), o.seed);
    auto flat = sync::flat_params(m.front, &m.head);
    auto opt = train::make_optimizer(flat.params(), o);
    train::Kfac member({m.front}, {"front"}, o.kfac, "member");
    member.share(true);
    sync::SnapshotKfac shared;
    sync::load_snapshot(a.add_member(2, "joiner").at(0).second, flat, *opt, &shared);
    EXPECT_EQ(shared.sharing, mode);
    EXPECT_EQ(shared.method, "inverse");
    if (std::string(mode) == "server") {
      ASSERT_EQ(shared.content, wire::KfacContent::kDecompositions);
      member.install_decompositions(shared.tensors);
      EXPECT_EQ(member.hash(), a.kfac_hash());
    } else {
      ASSERT_EQ(shared.content, wire::KfacContent::kFactors);
      member.install_factors(member.unpack(shared.tensors, "factors"));  // of round 1, not the running ones of round 2
      train::Kfac at_round_1({m.front}, {"front"}, o.kfac, "reference");
      at_round_1.fold(batch_factors(1));
      EXPECT_TRUE(torch::equal(shared.tensors[0], train::pack_symmetric(at_round_1.factors(0).a)));
      EXPECT_EQ(a.kfac_hash(), "none");  // the server decomposes nothing
    }
    // Saved and loaded: the same state and what was shipped; the next ship the same.
    state::OutputArchive out;
    a.save(out);
    Aggregator b(tiny_kfac(), averaged(mode));
    state::InputArchive in;
    state::from_bytes(in, state::to_bytes(out));
    b.load(in);
    EXPECT_EQ(b.kfac_state_hash(), a.kfac_state_hash());
    auto snap = [](Aggregator& x) {
      auto s = wire::meta_as<wire::ModelSnapshot>(x.add_member(9, "j").at(0).second);
      return s.kfac;
    };
    EXPECT_EQ(snap(b), snap(a));
    b.add_member(1, "a");
    a.add_member(3, "c");
    const auto f = batch_factors(3);
    a.remove_member(9, t);
    a.remove_member(2, t);
    a.remove_member(3, t);
    b.remove_member(9, t);
    auto ua = of_type(a.contribute(1, with_factors(contribution(3, 2, 64, random_sparse(3)), f), t),
                      wire::MsgType::kUpdate).at(0);
    auto ub = of_type(b.contribute(1, with_factors(contribution(3, 2, 64, random_sparse(3)), f), t),
                      wire::MsgType::kUpdate).at(0);
    ASSERT_EQ(ua.tensors.size(), ub.tensors.size());
    for (std::size_t i = 0; i < ua.tensors.size(); ++i) EXPECT_TRUE(torch::equal(ua.tensors[i], ub.tensors[i])) << i;
  }
}

TEST(Aggregator, MalformedOrUnwantedKfacFactorsAreProtocolErrorsAndNothingIsApplied) {
  const auto t = Clock::now();
  {
    Aggregator local(tiny_kfac(), {});  // factors stay with the members
    local.add_member(1, "a");
    EXPECT_THROW(local.contribute(1, with_factors(contribution(1, 0, 64, random_sparse(1)), batch_factors(1)), t),
                 ProtocolError);
    EXPECT_EQ(local.version(), 0u);
  }
  Aggregator a(tiny_kfac(), averaged("server"));
  a.add_member(1, "a");
  auto f = batch_factors(1);
  std::uint64_t seq = 0;
  auto refused = [&](const std::vector<torch::Tensor>& bad) {
    EXPECT_THROW(a.contribute(1, with_factors(contribution(++seq, 0, 64, random_sparse(1)), bad), t), ProtocolError);
  };
  refused({f[0], f[1], f[2]});                                   // a factor short
  refused({f[1], f[0], f[2], f[3]});                             // shapes swapped
  {
    auto g = wire::meta_as<wire::SparseGrad>(contribution(++seq, 0, 64, random_sparse(1)));
    auto tensors = contribution(seq, 0, 64, random_sparse(1)).tensors;
    g.kfac_tensors = 4;
    for (auto& t : f) tensors.push_back(t);  // whole matrices, not the upper triangles
    EXPECT_THROW(a.contribute(1, wire::make_message(g, tensors), t), ProtocolError);
  }
  refused({-f[0], f[1], f[2], f[3]});                            // a negative variance
  auto huge = f[0] * 1e12;
  refused({huge, f[1], f[2], f[3]});                             // past max_abs_value
  auto g = wire::meta_as<wire::SparseGrad>(contribution(++seq, 0, 64, random_sparse(1)));
  g.kfac_tensors = 9;                                            // more than it carries
  EXPECT_THROW(a.contribute(1, wire::make_message(g, contribution(seq, 0, 64, random_sparse(1)).tensors), t),
               ProtocolError);
  EXPECT_EQ(a.version(), 0u);
  EXPECT_EQ(a.stats().kfac_rounds, 0u);
  EXPECT_EQ(a.kfac_hash(), "none");
  a.contribute(1, with_factors(contribution(++seq, 0, 64, random_sparse(1)), f), t);
  EXPECT_EQ(a.version(), 1u);
  EXPECT_NE(a.kfac_hash(), "none");
  // Once it holds running factors: a refused contribution leaves them, and their count, as they were.
  const auto state = a.kfac_state_hash();
  EXPECT_THROW(a.contribute(1, with_factors(contribution(++seq, 1, 64, random_sparse(2)), {-f[0], f[1], f[2], f[3]}), t),
               ProtocolError);
  EXPECT_EQ(a.kfac_state_hash(), state);
  EXPECT_EQ(a.version(), 1u);
}

}  // namespace
}  // namespace cutlayer::server
