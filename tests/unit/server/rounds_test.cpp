// The back's rounds (train.accumulate, round_wait_ms, round_start_clients) driven message
// by message; the server tier's process group (two ranks in one process, over a FileStore
// and a TCPStore) and a rendezvous whose peer never comes; ServerRounds in local mode; and
// the config checks of the server tier (check_server_tier, the "scale_out" object).
#include <gtest/gtest.h>

#include <limits>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "../config_text.h"
#include "cutlayer/error.h"
#include "cutlayer/server/back_trainer.h"
#include "cutlayer/server/scale_out.h"
#include "cutlayer/server/server_config.h"

namespace cutlayer::server {
namespace {

using namespace std::chrono_literals;
using Clock = BackTrainer::Clock;

// As back_trainer_test.cpp's: a small custom model (the back: linear(8,8) relu, no
// batchnorm or dropout, so a batch's gradient does not depend on its company), SGD with
// momentum 0.9.
train::TrainOptions tiny(bool u_shaped) {
  train::TrainOptions o;
  o.model = "tiny";
  o.u_shaped = u_shaped;
  o.front = "linear(16,8) relu";
  o.back = "linear(8,8) relu";
  o.head = "linear(8,3)";
  o.input_shape = {16};
  o.lr = 0.1;
  o.momentum = 0.9;
  return o;
}

// A long wait by default: the tests decide when it has passed through round_due's `now`.
RoundOptions rounds(std::int64_t accumulate, std::chrono::milliseconds wait = 1h, std::int64_t start_clients = 0) {
  RoundOptions o;
  o.accumulate = accumulate;
  o.wait = wait;
  o.start_clients = start_clients;
  return o;
}

wire::Message batch(std::uint64_t step, torch::Tensor z, torch::Tensor y) {
  return wire::make_message(wire::Activations{step, true, true}, {std::move(z), std::move(y)});
}

// A vanilla training batch of n examples (cut [n x 8], labels in [0, 3)).
wire::Message random_batch(std::uint64_t step, std::int64_t n) {
  return batch(step, torch::randn({n, 8}), torch::randint(0, 3, {n}, torch::kInt64));
}

wire::Message eval_batch(std::uint64_t step, std::int64_t n) {
  return wire::make_message(wire::Activations{step, true, false},
                            {torch::randn({n, 8}), torch::randint(0, 3, {n}, torch::kInt64)});
}

wire::Message u_batch(std::uint64_t step, torch::Tensor z) {
  return wire::make_message(wire::Activations{step, false, true}, {std::move(z)});
}

wire::Message head_grad(std::uint64_t step, torch::Tensor g) {
  return wire::make_message(wire::HeadGrad{step}, {std::move(g)});
}

std::size_t count(const BackTrainer::Outbox& out, std::uint64_t session, wire::MsgType type) {
  std::size_t n = 0;
  for (const auto& [s, m] : out) n += s == session && m.type == type;
  return n;
}

std::vector<torch::Tensor> params(const BackTrainer& t) {
  std::vector<torch::Tensor> s;
  for (const auto& p : t.back()->parameters()) s.push_back(p.detach().clone());
  return s;
}

double max_difference(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  EXPECT_EQ(a.size(), b.size());
  double d = 0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i)
    d = std::max(d, (a[i] - b[i]).abs().max().item<double>());
  return d;
}

// ---- BackTrainer's rounds ----

// Two sessions' batches of 3 and 5 examples make one round and one step, equal to the
// step a plain back takes on the 8 examples as one batch: the round's gradient is the
// example-weighted mean of its batches' mean-loss gradients.
TEST(BackRounds, ARoundStepsOnceWithTheExampleWeightedMeanGradient) {
  torch::manual_seed(11);
  const auto za = torch::randn({3, 8}), zb = torch::randn({5, 8});
  const auto ya = torch::randint(0, 3, {3}, torch::kInt64), yb = torch::randint(0, 3, {5}, torch::kInt64);

  BackTrainer t(tiny(false)), ref(tiny(false));
  const auto initial = params(t);
  ASSERT_EQ(max_difference(initial, params(ref)), 0.0);  // same seed, same start
  t.enable_rounds(rounds(2));
  EXPECT_TRUE(t.in_rounds());
  t.name_session(1, "a");
  t.name_session(2, "b");
  const auto now = Clock::now();

  auto out = t.handle(1, batch(0, za, ya), now);
  EXPECT_EQ(count(out, 1, wire::MsgType::kCutGrad), 1u);  // answered at once, the step comes later
  EXPECT_EQ(t.round_batches(), 1);
  EXPECT_EQ(t.round_samples(), 3);
  EXPECT_FALSE(t.round_due(now));  // neither full, nor all in, nor waited
  EXPECT_EQ(t.stats().steps, 0);
  EXPECT_EQ(max_difference(initial, params(t)), 0.0);

  out = t.handle(2, batch(0, zb, yb), now);
  EXPECT_EQ(count(out, 2, wire::MsgType::kCutGrad), 1u);
  EXPECT_EQ(t.round_samples(), 8);
  EXPECT_TRUE(t.round_due(now));
  EXPECT_EQ(t.stats().steps, 0);

  out = t.finish_round(t.round_samples(), now);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(t.stats().steps, 1);
  EXPECT_EQ(t.round_batches(), 0);
  EXPECT_EQ(t.round_samples(), 0);
  EXPECT_FALSE(t.round_due(now + 24h));  // an empty round is never due
  EXPECT_EQ(t.round_gradient().abs().sum().item<double>(), 0.0);

  ref.handle(9, batch(0, torch::cat({za, zb}), torch::cat({ya, yb})), now);
  ASSERT_EQ(ref.stats().steps, 1);
  EXPECT_GT(max_difference(initial, params(t)), 1e-5);  // the step moved the back
  EXPECT_LT(max_difference(params(ref), params(t)), 1e-6);
}

// Data parallel by hand: two replicas, one batch each, their round gradients summed (what
// the ranks' allreduce does), each steps with the sum over all 8 examples: the replicas
// are identical and equal the one-batch reference.
TEST(BackRounds, SummedRoundGradientsOfTwoReplicasGiveTheSameStepAsOneBatch) {
  torch::manual_seed(12);
  const auto za = torch::randn({3, 8}), zb = torch::randn({5, 8});
  const auto ya = torch::randint(0, 3, {3}, torch::kInt64), yb = torch::randint(0, 3, {5}, torch::kInt64);
  BackTrainer r0(tiny(false)), r1(tiny(false)), ref(tiny(false));
  r0.enable_rounds(rounds(1));
  r1.enable_rounds(rounds(1));
  const auto now = Clock::now();
  r0.handle(1, batch(0, za, ya), now);
  r1.handle(1, batch(0, zb, yb), now);
  ASSERT_TRUE(r0.round_due(now));  // full
  ASSERT_TRUE(r1.round_due(now));
  const auto sum = r0.round_gradient() + r1.round_gradient();
  r0.round_gradient().copy_(sum);
  r1.round_gradient().copy_(sum);
  const auto total = r0.round_samples() + r1.round_samples();
  EXPECT_EQ(total, 8);
  r0.finish_round(total, now);
  r1.finish_round(total, now);
  ref.handle(1, batch(0, torch::cat({za, zb}), torch::cat({ya, yb})), now);
  EXPECT_EQ(max_difference(params(r0), params(r1)), 0.0);
  EXPECT_LT(max_difference(params(ref), params(r0)), 1e-6);
  EXPECT_EQ(r0.stats().steps, 1);
  EXPECT_EQ(r1.stats().steps, 1);
}

// A session already in the round: its next training batch waits (no reply) and goes into
// the next round when this one is finished.
TEST(BackRounds, ASecondBatchOfASessionInTheRoundIsHeldForTheNextRound) {
  BackTrainer t(tiny(false));
  t.enable_rounds(rounds(2));
  t.name_session(1, "a");
  t.name_session(2, "b");
  const auto now = Clock::now();
  EXPECT_EQ(count(t.handle(1, random_batch(1, 4), now), 1, wire::MsgType::kCutGrad), 1u);
  EXPECT_TRUE(t.handle(1, random_batch(2, 6), now).empty());
  EXPECT_EQ(t.held(), 1u);
  EXPECT_GT(t.deferred_bytes(), 0u);
  EXPECT_EQ(t.round_batches(), 1);
  // An evaluation batch never waits.
  EXPECT_EQ(count(t.handle(1, eval_batch(3, 4), now), 1, wire::MsgType::kEvalResult), 1u);
  EXPECT_EQ(count(t.handle(2, random_batch(1, 4), now), 2, wire::MsgType::kCutGrad), 1u);
  ASSERT_TRUE(t.round_due(now));

  const auto out = t.finish_round(t.round_samples(), now);
  EXPECT_EQ(t.stats().steps, 1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].first, 1u);
  ASSERT_EQ(out[0].second.type, wire::MsgType::kCutGrad);
  EXPECT_EQ(wire::meta_as<wire::CutGrad>(out[0].second).step, 2u);
  EXPECT_EQ(t.held(), 0u);
  EXPECT_EQ(t.deferred_bytes(), 0u);
  EXPECT_EQ(t.round_batches(), 1);  // the held batch is the new round's first
  EXPECT_EQ(t.round_samples(), 6);
  EXPECT_FALSE(t.round_due(now));   // b is not in it yet
}

TEST(BackRounds, HeldBatchesAreBoundedPerSessionAndInBytes) {
  const auto limit = TrainerLimits{}.max_deferred_per_session;
  BackTrainer t(tiny(false));
  t.enable_rounds(rounds(2));
  t.name_session(1, "a");
  const auto now = Clock::now();
  t.handle(1, random_batch(0, 4), now);
  for (std::size_t i = 0; i < limit; ++i) EXPECT_TRUE(t.handle(1, random_batch(1 + i, 4), now).empty());
  EXPECT_EQ(t.held(), limit);
  try {
    t.handle(1, random_batch(100, 4), now);
    FAIL() << "more than max_deferred_per_session batches were held";
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("max_deferred_per_session"), std::string::npos) << e.what();
  }
  EXPECT_EQ(t.held(), limit);

  TrainerLimits tight;
  tight.max_deferred_bytes = 1;
  BackTrainer u(tiny(false), tight);
  u.enable_rounds(rounds(2));
  u.handle(1, random_batch(0, 4), now);  // into the round: not held, not bounded
  try {
    u.handle(1, random_batch(1, 4), now);
    FAIL() << "a held batch passed max_deferred_bytes";
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("max_deferred_mb"), std::string::npos) << e.what();
  }
  EXPECT_EQ(u.held(), 0u);
  EXPECT_EQ(u.deferred_bytes(), 0u);
}

// A collective round in flight: every training batch waits, even one from a session not in
// the round; reopening the round (the ranks were not all ready) takes it, without a step.
TEST(BackRounds, AClosedRoundHoldsEveryTrainingBatchAndReopeningTakesThem) {
  BackTrainer t(tiny(false));
  t.enable_rounds(rounds(2));
  t.name_session(1, "a");
  t.name_session(2, "b");
  const auto now = Clock::now();
  t.handle(1, random_batch(0, 4), now);
  t.close_round();
  EXPECT_TRUE(t.handle(2, random_batch(5, 4), now).empty());
  EXPECT_EQ(t.held(), 1u);
  EXPECT_EQ(t.round_batches(), 1);
  EXPECT_EQ(count(t.handle(2, eval_batch(6, 4), now), 2, wire::MsgType::kEvalResult), 1u);
  const auto before = params(t);

  const auto out = t.reopen_round(now);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].first, 2u);
  ASSERT_EQ(out[0].second.type, wire::MsgType::kCutGrad);
  EXPECT_EQ(wire::meta_as<wire::CutGrad>(out[0].second).step, 5u);
  EXPECT_EQ(t.stats().steps, 0);
  EXPECT_EQ(max_difference(before, params(t)), 0.0);
  EXPECT_EQ(t.held(), 0u);
  EXPECT_EQ(t.round_batches(), 2);
  EXPECT_EQ(t.round_samples(), 8);
  EXPECT_TRUE(t.round_due(now));
}

// round_start_clients: no round is due before that many training sessions have joined,
// however long it waited; then the usual rules (all in, full, or the wait from the quorum).
TEST(BackRounds, NoRoundIsDueBeforeStartClientsHaveJoined) {
  BackTrainer t(tiny(false));
  t.enable_rounds(rounds(2, 1h, 2));
  t.name_session(1, "a");
  t.handle(1, random_batch(0, 4));
  EXPECT_FALSE(t.round_quorum());
  EXPECT_EQ(t.round_batches(), 1);
  EXPECT_FALSE(t.round_due(Clock::now()));  // a is all there is, but no quorum
  EXPECT_FALSE(t.round_due(Clock::now() + 48h));
  t.name_session(2, "b");
  EXPECT_TRUE(t.round_quorum());
  EXPECT_EQ(t.training_sessions(), 2u);
  EXPECT_FALSE(t.round_due(Clock::now()));  // b is not in, the wait runs from the quorum
  EXPECT_TRUE(t.round_due(Clock::now() + 2h));
  t.handle(2, random_batch(0, 4));
  EXPECT_TRUE(t.round_due(Clock::now()));
}

// Every named training session in the round: due, though not full.
// A client's step counts as held by the back (what a restarted client resumes from) only
// once the round that holds it has stepped.
TEST(BackRounds, ClientStepsAreHeldOnlyOnceTheirRoundSteps) {
  BackTrainer t(tiny(false));
  t.enable_rounds(rounds(2));
  t.name_session(1, "a");
  t.name_session(2, "b");
  t.handle(1, random_batch(5, 4));
  EXPECT_EQ(t.steps_held("a"), wire::kStepsUnknown);
  t.handle(2, random_batch(7, 4));
  t.finish_round(t.round_samples());
  EXPECT_EQ(t.steps_held("a"), 6u);
  EXPECT_EQ(t.steps_held("b"), 8u);
  t.handle(1, random_batch(6, 4));
  t.close_round();
  t.reopen_round();  // no step: still 6
  EXPECT_EQ(t.steps_held("a"), 6u);
}

// The last round before a stop: held batches are dropped, not answered with cut gradients
// of a round that will never step.
TEST(BackRounds, TheStopRoundDropsHeldBatches) {
  BackTrainer t(tiny(false));
  t.enable_rounds(rounds(2));
  t.name_session(1, "a");
  t.handle(1, random_batch(0, 4));
  t.handle(1, random_batch(1, 4));
  ASSERT_EQ(t.held(), 1u);
  EXPECT_TRUE(t.finish_round(t.round_samples(), Clock::now(), /*replay=*/false).empty());
  EXPECT_EQ(t.held(), 0u);
  EXPECT_EQ(t.deferred_bytes(), 0u);
  EXPECT_EQ(t.round_batches(), 0);
}

TEST(BackRounds, TheQuorumCountsClientsNotSessions) {
  BackTrainer t(tiny(false));
  t.enable_rounds(rounds(2, 1h, 2));
  t.name_session(1, "a");
  t.forget(1);
  t.name_session(2, "a");  // the same client again
  EXPECT_FALSE(t.round_quorum());
  t.name_session(3, "b");
  EXPECT_TRUE(t.round_quorum());
}

TEST(BackRounds, ABatchIsValidatedBeforeItIsHeld) {
  BackTrainer t(tiny(false));
  t.enable_rounds(rounds(2));
  t.name_session(1, "a");
  t.handle(1, random_batch(0, 4));
  auto z = torch::randn({4, 8});
  z[0][0] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(t.handle(1, batch(1, z, torch::randint(0, 3, {4}, torch::kInt64))), ProtocolError);
  EXPECT_THROW(t.handle(1, batch(2, torch::randn({4, 9}), torch::randint(0, 3, {4}, torch::kInt64))), ProtocolError);
  EXPECT_EQ(t.held(), 0u);
  EXPECT_EQ(t.deferred_bytes(), 0u);
}

TEST(BackRounds, ARoundHoldingEverySessionIsDueBeforeItIsFull) {
  BackTrainer t(tiny(false));
  t.enable_rounds(rounds(4));
  t.name_session(1, "a");
  t.name_session(2, "b");
  t.handle(1, random_batch(0, 4));
  EXPECT_FALSE(t.round_due(Clock::now()));
  EXPECT_TRUE(t.round_due(Clock::now() + 2h));  // waited
  t.handle(2, random_batch(0, 4));
  EXPECT_EQ(t.round_batches(), 2);
  EXPECT_TRUE(t.round_due(Clock::now()));
}

TEST(BackRounds, KfacDoesNotTakeRounds) {
  auto o = tiny(false);
  o.optimizer = "kfac";
  BackTrainer t(o);
  EXPECT_THROW(t.enable_rounds(rounds(2)), ConfigError);
  EXPECT_FALSE(t.in_rounds());
  BackTrainer sgd(tiny(false));
  EXPECT_THROW(sgd.enable_rounds(rounds(0)), ConfigError);
}

// A session that ends takes its held batches with it; the others' stay.
TEST(BackRounds, ForgetDropsTheSessionsHeldBatches) {
  BackTrainer t(tiny(false));
  t.enable_rounds(rounds(2));
  t.name_session(1, "a");
  t.name_session(2, "b");
  const auto now = Clock::now();
  t.handle(1, random_batch(0, 4), now);
  EXPECT_TRUE(t.handle(1, random_batch(1, 4), now).empty());
  EXPECT_TRUE(t.handle(1, random_batch(2, 4), now).empty());
  t.handle(2, random_batch(0, 4), now);  // the round is full now
  EXPECT_TRUE(t.handle(2, random_batch(1, 4), now).empty());
  EXPECT_EQ(t.held(), 3u);
  const auto bytes = t.deferred_bytes();
  t.forget(1, now);
  EXPECT_EQ(t.held(), 1u);
  EXPECT_EQ(t.deferred_bytes(), bytes / 3);  // three batches of the same size
  EXPECT_EQ(t.training_sessions(), 1u);
  const auto out = t.finish_round(t.round_samples(), now);
  EXPECT_EQ(t.stats().steps, 1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].first, 2u);
  EXPECT_EQ(out[0].second.type, wire::MsgType::kCutGrad);
  EXPECT_EQ(t.held(), 0u);
  EXPECT_EQ(t.deferred_bytes(), 0u);
}

// U-shaped: a batch counts in the round once its HeadGrad is in; no round is due, nor can
// it finish, between a step's forward and backward.
TEST(BackRounds, UShapedNoRoundBetweenForwardAndBackward) {
  BackTrainer t(tiny(true));
  t.enable_rounds(rounds(2));
  t.name_session(1, "a");
  t.name_session(2, "b");
  const auto now = Clock::now();
  ASSERT_EQ(count(t.handle(1, u_batch(0, torch::randn({4, 8})), now), 1, wire::MsgType::kServerActivations), 1u);
  EXPECT_EQ(t.round_batches(), 0);
  ASSERT_EQ(count(t.handle(1, head_grad(0, torch::randn({4, 8})), now), 1, wire::MsgType::kCutGrad), 1u);
  EXPECT_EQ(t.round_batches(), 1);
  ASSERT_EQ(count(t.handle(2, u_batch(0, torch::randn({4, 8})), now), 2, wire::MsgType::kServerActivations), 1u);
  EXPECT_FALSE(t.round_due(now + 48h));
  EXPECT_THROW(t.finish_round(t.round_samples(), now), std::logic_error);
  ASSERT_EQ(count(t.handle(2, head_grad(0, torch::randn({4, 8})), now), 2, wire::MsgType::kCutGrad), 1u);
  EXPECT_TRUE(t.round_due(now));
  t.finish_round(t.round_samples(), now);
  EXPECT_EQ(t.stats().steps, 1);
}

// ---- ServerRounds, local (one server, train.accumulate > 1) ----

TEST(ServerRoundsLocal, PollClosesTheRoundOnlyWhenDueAndOnStopWithWhatItHolds) {
  BackTrainer t(tiny(false));
  t.enable_rounds(rounds(2));
  ServerRounds r(t, nullptr);
  EXPECT_EQ(r.world(), 1);
  EXPECT_EQ(r.rank(), 0);
  EXPECT_TRUE(r.replicas_identical());
  t.name_session(1, "a");
  t.name_session(2, "b");
  const auto now = Clock::now();

  auto res = r.poll(now, false, false);  // nothing in the round
  EXPECT_FALSE(res.stepped);
  EXPECT_FALSE(res.stop);
  t.handle(1, random_batch(0, 4), now);
  EXPECT_TRUE(t.handle(1, random_batch(1, 4), now).empty());  // held
  res = r.poll(now, false, true);
  EXPECT_FALSE(res.stepped);
  EXPECT_TRUE(res.checkpoint);  // passed through
  EXPECT_EQ(t.stats().steps, 0);
  EXPECT_EQ(t.round_batches(), 1);

  t.handle(2, random_batch(0, 4), now);
  res = r.poll(now, false, false);
  EXPECT_TRUE(res.stepped);
  EXPECT_FALSE(res.stop);
  EXPECT_EQ(t.stats().steps, 1);
  EXPECT_EQ(r.stats().rounds, 1u);
  EXPECT_EQ(r.stats().steps, 1u);
  EXPECT_EQ(count(res.out, 1, wire::MsgType::kCutGrad), 1u);  // the held batch, taken now
  EXPECT_EQ(t.round_batches(), 1);

  // Stopping: the round steps with the one batch it holds, and the loop may stop.
  res = r.poll(now, true, false);
  EXPECT_TRUE(res.stepped);
  EXPECT_TRUE(res.stop);
  EXPECT_EQ(t.stats().steps, 2);
  EXPECT_EQ(t.round_batches(), 0);

  // Stopping with nothing in the round: no step.
  res = r.poll(now, true, false);
  EXPECT_FALSE(res.stepped);
  EXPECT_TRUE(res.stop);
  EXPECT_EQ(t.stats().steps, 2);
}

// ---- RankGroup: two ranks in one process ----

// A fresh directory under /tmp, removed with what is in it.
struct TempDir {
  std::string path;
  TempDir() {
    char p[] = "/tmp/cutlayer-rounds-XXXXXX";
    const char* d = ::mkdtemp(p);
    EXPECT_NE(d, nullptr);
    path = d ? d : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path.empty()) std::filesystem::remove_all(path, ec);
  }
};

// A TCP port that was free a moment ago.
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

ScaleOutOptions rank_options(int rank, int world, const std::string& store, std::chrono::milliseconds timeout) {
  ScaleOutOptions o;
  o.rank = rank;
  o.world = world;
  o.store = store;
  o.host = "127.0.0.1";
  o.timeout = timeout;
  return o;
}

struct RankRun {
  std::string error;  // what the rank threw, if anything
  int rank = -1, world = 0;
  torch::Tensor sum, min, max;
  bool same = false;     // equal bytes everywhere
  bool differs = false;  // same_everywhere said false when rank 1's bytes differ
};

// One rank's part: the rendezvous, three allreduces (the last through start/done), and two
// hash checks. Every rank makes the same calls in the same order.
RankRun run_rank(const ScaleOutOptions& o) {
  RankRun r;
  try {
    RankGroup g(o);
    r.rank = g.rank();
    r.world = g.world();
    const float k = static_cast<float>(o.rank + 1);
    r.sum = torch::tensor({k, 10 * k});
    g.allreduce(r.sum, RankGroup::Op::kSum);
    r.min = torch::tensor({k, 10 * k});
    g.allreduce(r.min, RankGroup::Op::kMin);
    r.max = torch::tensor({k, 10 * k});
    auto pending = g.start(r.max, RankGroup::Op::kMax);
    while (!pending.done()) std::this_thread::sleep_for(1ms);
    std::array<std::uint8_t, 32> bytes{};
    for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>(7 * i + 1);
    r.same = g.same_everywhere(bytes);
    if (o.rank == 1) bytes[17] ^= 0x10;
    r.differs = !g.same_everywhere(bytes);
  } catch (const std::exception& e) {
    r.error = e.what();
  }
  return r;
}

TEST(RankGroup, TwoRanksInOneProcessAllreduceAndCompareHashes) {
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  const std::string stores[] = {"file:" + dir.path + "/store", "127.0.0.1:" + std::to_string(free_port())};
  for (const auto& store : stores) {
    SCOPED_TRACE(store);
    // The constructor is the rendezvous: both ranks must be in it at once.
    std::vector<RankRun> runs(2);
    std::thread t0([&] { runs[0] = run_rank(rank_options(0, 2, store, 10s)); });
    std::thread t1([&] { runs[1] = run_rank(rank_options(1, 2, store, 10s)); });
    t0.join();
    t1.join();
    for (int r = 0; r < 2; ++r) {
      SCOPED_TRACE("rank " + std::to_string(r));
      const auto& run = runs[r];
      ASSERT_EQ(run.error, "");
      EXPECT_EQ(run.rank, r);
      EXPECT_EQ(run.world, 2);
      EXPECT_TRUE(torch::equal(run.sum, torch::tensor({3.f, 30.f}))) << run.sum;
      EXPECT_TRUE(torch::equal(run.min, torch::tensor({1.f, 10.f}))) << run.min;
      EXPECT_TRUE(torch::equal(run.max, torch::tensor({2.f, 20.f}))) << run.max;
      EXPECT_TRUE(run.same);
      EXPECT_TRUE(run.differs);  // on both ranks, though only rank 1's bytes changed
    }
  }
}

// What constructing a RankGroup with `o` threw ("" when it did not throw), or nullopt when
// it was still blocked after `limit` (a guard against a hang, not a timing check: the
// thread is then left behind and the test fails).
std::optional<std::string> construction_error(const ScaleOutOptions& o, std::chrono::seconds limit) {
  auto result = std::make_shared<std::promise<std::string>>();
  auto done = result->get_future();
  std::thread th([o, result] {
    try {
      RankGroup g(o);
      result->set_value("");
    } catch (const ScaleOutError& e) {
      result->set_value(std::string("ScaleOutError: ") + e.what());
    } catch (const std::exception& e) {
      result->set_value(std::string("another exception: ") + e.what());
    }
  });
  if (done.wait_for(limit) != std::future_status::ready) {
    th.detach();
    return std::nullopt;
  }
  th.join();
  return done.get();
}

// Rank 1 never comes: rank 0's rendezvous fails with a ScaleOutError (past its timeout),
// through either kind of store; it does not hang.
TEST(RankGroup, ARendezvousWhosePeerNeverComesThrows) {
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  const std::string stores[] = {"file:" + dir.path + "/lonely", "127.0.0.1:" + std::to_string(free_port())};
  for (const auto& store : stores) {
    SCOPED_TRACE(store);
    const auto e = construction_error(rank_options(0, 2, store, 1000ms), 120s);
    ASSERT_TRUE(e.has_value()) << "the rendezvous hung";
    EXPECT_EQ(e->rfind("ScaleOutError: ", 0), 0u) << *e;
    EXPECT_NE(e->find("did not meet"), std::string::npos) << *e;
    EXPECT_NE(e->find("rank 0 of 2"), std::string::npos) << *e;
  }
}

TEST(RankGroup, OptionsAreCheckedBeforeTheRendezvous) {
  EXPECT_THROW(RankGroup(rank_options(2, 2, "127.0.0.1:29999", 1000ms)), ConfigError);
  EXPECT_THROW(RankGroup(rank_options(0, 2, "", 1000ms)), ConfigError);
  EXPECT_THROW(RankGroup(rank_options(0, 2, "no-port", 1000ms)), ConfigError);
  EXPECT_THROW(RankGroup(rank_options(0, 2, "file:", 1000ms)), ConfigError);
}

// ---- The server tier's config ----

ServerConfig load_text(const std::string& text) { return testing_config::load_text(text, &load_server_config); }

void expect_refused(const std::string& text, const std::string& field, const std::string& reason) {
  testing_config::expect_refused(text, field, reason, &load_server_config);
}

// check_server_tier on `text` loaded from a temp file, `edit` applied first (the command
// line's --rank, --world, --store): its ConfigError's message, or "" when accepted.
std::string tier_refusal(const std::string& text, const std::function<void(ServerConfig&)>& edit = {}) {
  const auto path = testing_config::write_temp(text);
  ServerConfig c;
  try {
    c = load_server_config(path);
  } catch (const std::exception& e) {
    std::remove(path.c_str());
    ADD_FAILURE() << text << " did not load: " << e.what();
    return "(did not load)";
  }
  if (edit) edit(c);
  std::string message;
  try {
    check_server_tier(c, path);
  } catch (const ConfigError& e) {
    message = e.what();
    EXPECT_EQ(message.rfind(path + ": ", 0), 0u) << "should start with the file: " << message;
  }
  std::remove(path.c_str());
  return message;
}

const char* const kTwoRanks = R"({"train": {}, "scale_out": {"world": 2, "store": "127.0.0.1:29999"}})";

TEST(ServerTierConfig, ScaleOutAndRoundFieldsAreRead) {
  const auto d = load_text(R"({"train": {}})");
  const ScaleOutOptions so{};
  const RoundOptions ro{};
  EXPECT_EQ(d.scale_out.world, 1);
  EXPECT_EQ(d.scale_out.rank, 0);
  EXPECT_EQ(d.scale_out.timeout, so.timeout);
  EXPECT_EQ(d.scale_out.idle, so.idle);
  EXPECT_EQ(d.scale_out.check_every, so.check_every);
  EXPECT_EQ(d.rounds.accumulate, ro.accumulate);
  EXPECT_EQ(d.rounds.wait, ro.wait);
  EXPECT_EQ(d.rounds.start_clients, ro.start_clients);
  EXPECT_FALSE(d.in_rounds());

  const auto c = load_text(R"({"train": {"accumulate": 3, "round_wait_ms": 250, "round_start_clients": 4},
      "scale_out": {"world": 3, "store": "file:/shared/store", "host": "10.0.0.2", "timeout_ms": 5000,
                    "idle_ms": 5, "check_every": 0}})");
  EXPECT_EQ(c.rounds.accumulate, 3);
  EXPECT_EQ(c.rounds.wait, 250ms);
  EXPECT_EQ(c.rounds.start_clients, 4);
  EXPECT_EQ(c.scale_out.world, 3);
  EXPECT_EQ(c.scale_out.store, "file:/shared/store");
  EXPECT_EQ(c.scale_out.host, "10.0.0.2");
  EXPECT_EQ(c.scale_out.timeout, 5000ms);
  EXPECT_EQ(c.scale_out.idle, 5ms);
  EXPECT_EQ(c.scale_out.check_every, 0);
  EXPECT_TRUE(c.in_rounds());
  EXPECT_TRUE(load_text(R"({"train": {"accumulate": 2}})").in_rounds());
  EXPECT_TRUE(load_text(kTwoRanks).in_rounds());
}

TEST(ServerTierConfig, OutOfRangeFieldsAreRefusedWhenLoaded) {
  expect_refused(R"({"train": {"optimizer": "kfac", "accumulate": 2}})", "train.accumulate", "kfac");
  expect_refused(R"({"train": {"accumulate": 0}})", "train.accumulate", "");
  expect_refused(R"({"train": {"round_wait_ms": 0}})", "train.round_wait_ms", "");
  expect_refused(R"({"train": {"accumulate": 2}, "vertical": {}})", "train", "remove train.accumulate");
  expect_refused(R"({"train": {}, "scale_out": {"world": 0}})", "scale_out.world", "");
  expect_refused(R"({"train": {}, "scale_out": {"timeout_ms": 99}})", "scale_out.timeout_ms", "");
  expect_refused(R"({"train": {}, "scale_out": {"idle_ms": 0}})", "scale_out.idle_ms", "");
  // The rank comes from the command line (--rank), not the file.
  expect_refused(R"({"train": {}, "scale_out": {"rank": 1}})", "scale_out.rank", "known here");
}

TEST(ServerTierConfig, UnusableTiersAreRefusedNamingTheField) {
  struct Case {
    std::string text;
    std::function<void(ServerConfig&)> edit;
    const char* field;
  };
  const Case cases[] = {
      {kTwoRanks, [](ServerConfig& c) { c.scale_out.rank = 2; }, "--rank"},
      {kTwoRanks, [](ServerConfig& c) { c.scale_out.rank = -1; }, "--rank"},
      {R"({"train": {}, "scale_out": {"world": 2}})", {}, "scale_out.store"},
      {R"({"train": {}, "scale_out": {"world": 2, "store": "localhost"}})", {}, "scale_out.store"},
      {R"({"train": {}, "scale_out": {"world": 2, "store": "file:"}})", {}, "scale_out.store"},
      {R"({"train": {}})", [](ServerConfig& c) { c.scale_out.world = 2; }, "scale_out.store"},
      {R"({"train": {}})", [](ServerConfig& c) { c.scale_out.world = 0; }, "scale_out.world"},
      {R"({"train": {"optimizer": "kfac"}, "scale_out": {"world": 2, "store": "127.0.0.1:29999"}})", {},
       "scale_out.world"},
      {R"({"scale_out": {"world": 2, "store": "127.0.0.1:29999"}})", {}, "scale_out.world"},
      {R"({"train": {}, "vertical": {}, "scale_out": {"world": 2, "store": "127.0.0.1:29999"}})", {},
       "scale_out.world"},
      {R"({"train": {"optimizer": "kfac"}, "aggregation": {"kfac_factors": "average"},
           "scale_out": {"world": 2, "store": "127.0.0.1:29999"}})",
       {}, "aggregation.kfac_factors"},
      // A rank waits round_wait_ms + idle_ms for the others' rounds: the timeout must exceed it.
      {R"({"train": {"round_wait_ms": 500}, "scale_out": {"world": 2, "store": "127.0.0.1:29999",
           "timeout_ms": 520, "idle_ms": 20}})",
       {}, "scale_out.timeout_ms"},
      {kTwoRanks, [](ServerConfig& c) { c.scale_out.timeout = c.rounds.wait; }, "scale_out.timeout_ms"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    const auto message = tier_refusal(c.text, c.edit);
    ASSERT_FALSE(message.empty()) << "accepted";
    EXPECT_NE(message.find(c.field), std::string::npos) << "should name " << c.field << ": " << message;
  }
}

TEST(ServerTierConfig, UsableTiersAreAccepted) {
  EXPECT_EQ(tier_refusal(kTwoRanks), "");
  EXPECT_EQ(tier_refusal(kTwoRanks, [](ServerConfig& c) { c.scale_out.rank = 1; }), "");
  EXPECT_EQ(tier_refusal(R"({"train": {"round_wait_ms": 500}, "scale_out": {"world": 2,
      "store": "127.0.0.1:29999", "timeout_ms": 521, "idle_ms": 20}})"),
            "");
  EXPECT_EQ(tier_refusal(R"({"train": {"optimizer": "adam"}, "scale_out": {"world": 2, "store": "file:/nfs/s"}})"),
            "");
  // The command line's --world and --store on a one-server file.
  EXPECT_EQ(tier_refusal(R"({"train": {}})",
                         [](ServerConfig& c) {
                           c.scale_out.world = 4;
                           c.scale_out.store = "10.0.0.1:29510";
                           c.scale_out.rank = 3;
                         }),
            "");
  // One server: nothing of the tier is checked.
  EXPECT_EQ(tier_refusal(R"({"train": {"optimizer": "kfac"}})"), "");
  EXPECT_EQ(tier_refusal(R"({"scale_out": {"timeout_ms": 100}})"), "");
  // Aggregation across ranks closes its rounds in the same collectives (local K-FAC factors).
  EXPECT_EQ(tier_refusal(R"({"train": {}, "aggregation": {},
      "scale_out": {"world": 2, "store": "127.0.0.1:29999"}})"),
            "");
}

}  // namespace
}  // namespace cutlayer::server
