// FrontSync without sockets: the snapshot, contributions, Updates applied in round order
// at safe points, rejected contributions back into the residual, the fp16 rounding error
// kept, and what a re-join gives up.
#include "cutlayer/client/front_sync.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cutlayer/error.h"
#include "cutlayer/sync/snapshot.h"
#include "cutlayer/sync/sparse_wire.h"

namespace cutlayer::client {
namespace {

constexpr std::int64_t kNumel = 4 * 3 + 3;

// One member's front: a seeded linear layer, plain SGD at lr 0.1.
struct Member {
  torch::nn::Sequential front;
  std::unique_ptr<torch::optim::Optimizer> opt;
  std::unique_ptr<FrontSync> sync;

  explicit Member(std::uint64_t seed, sync::SyncOptions o = dense()) {
    torch::manual_seed(seed);
    front = torch::nn::Sequential(torch::nn::Linear(4, 3));
    opt = std::make_unique<torch::optim::SGD>(front->parameters(), torch::optim::SGDOptions(0.1));
    sync = std::make_unique<FrontSync>(o, sync::flat_params(front, nullptr), *opt);
  }
  static sync::SyncOptions dense() {
    sync::SyncOptions o;
    o.enabled = true;
    o.compressor = "none";
    o.density = 1.0;
    return o;
  }
  torch::Tensor flat() const {
    std::vector<torch::Tensor> v;
    for (auto& p : front->parameters()) v.push_back(p.detach().flatten());
    return torch::cat(v);
  }
  torch::Tensor flat_grad() const {
    std::vector<torch::Tensor> v;
    for (auto& p : front->parameters()) v.push_back(p.grad().flatten());
    return torch::cat(v);
  }
  void backward(std::uint64_t seed) {
    torch::manual_seed(seed);
    opt->zero_grad();
    front->forward(torch::randn({8, 4})).pow(2).sum().backward();
  }
  // A contribution the link took.
  wire::Message send(std::uint64_t samples) {
    auto msg = sync->contribute(samples, 0);
    sync->sent();
    return msg;
  }
  void start(std::uint64_t round, std::uint32_t staleness) {
    Member server(99);
    sync->load_snapshot(sync::make_snapshot(round, staleness, sync::flat_params(server.front, nullptr), *server.opt));
  }
};

wire::Message update(std::uint64_t round, std::uint64_t mine, const torch::Tensor& dense, double lr = 0.5) {
  wire::Update u;
  u.round = round;
  u.mine = mine;
  u.lr = lr;
  auto tensors = sync::to_tensors(kernels::SparseTensor{torch::Tensor(), dense, dense.numel()}, false, true, u.layout);
  return wire::make_message(u, tensors);
}

wire::Message reject(std::uint64_t seq) {
  wire::SyncReject r;
  r.seq = seq;
  r.reason = "too stale";
  return wire::make_message(r);
}

torch::Tensor sent_values(const wire::Message& m) {
  const auto g = wire::meta_as<wire::SparseGrad>(m);
  return sync::from_tensors(g.layout, m.tensors, kNumel).to_dense();
}

TEST(FrontSync, TheSnapshotSetsTheFrontTheRoundAndTheBound) {
  Member server(99), m(1);
  ASSERT_NE(m.sync->hash(), server.sync->hash());
  EXPECT_EQ(FrontSync::snapshot_request().type, wire::MsgType::kSnapshotRequest);
  m.start(4, 2);
  EXPECT_TRUE(m.sync->started());
  EXPECT_EQ(m.sync->hash(), server.sync->hash());
  EXPECT_EQ(m.sync->version(), 4u);
  EXPECT_EQ(m.sync->staleness(), 2u);
  EXPECT_EQ(m.sync->stats().snapshot_round, 4u);
}

TEST(FrontSync, ASnapshotOfAnotherModelIsRefused) {
  Member m(1);
  torch::nn::Sequential other(torch::nn::Linear(5, 3));
  torch::optim::SGD opt(other->parameters(), torch::optim::SGDOptions(0.1));
  EXPECT_THROW(m.sync->load_snapshot(sync::make_snapshot(1, 0, sync::flat_params(other, nullptr), opt)), ProtocolError);
  EXPECT_FALSE(m.sync->started());
}

TEST(FrontSync, ContributingBeforeTheSnapshotIsACallerBug) {
  Member m(1);
  m.backward(5);
  EXPECT_THROW(m.sync->contribute(8, 0), InternalError);
}

TEST(FrontSync, AContributionCarriesItsSeqBaseSamplesAndTheGradient) {
  Member m(1);
  m.start(4, 0);
  m.backward(5);
  const auto before = m.flat();
  const auto msg = m.send(8);
  ASSERT_EQ(msg.type, wire::MsgType::kSparseGrad);
  const auto g = wire::meta_as<wire::SparseGrad>(msg);
  EXPECT_EQ(g.seq, 1u);
  EXPECT_EQ(g.base, 4u);
  EXPECT_EQ(g.samples, 8u);
  EXPECT_TRUE(torch::equal(sent_values(msg), m.flat_grad()));
  EXPECT_TRUE(torch::equal(m.flat(), before));  // the front does not step on its own gradient
  EXPECT_EQ(m.sync->outstanding(), 1u);
  EXPECT_FALSE(m.sync->settle(0));
  EXPECT_TRUE(m.sync->settle(1));
  EXPECT_EQ(wire::meta_as<wire::SparseGrad>(m.send(8)).seq, 2u);
  EXPECT_EQ(m.sync->stats().contributions, 2u);
  EXPECT_EQ(m.sync->stats().nnz_up, 2u * kNumel);
}

TEST(FrontSync, AContributionCountsOnlyOnceTheLinkTookIt) {
  Member m(1);
  m.start(0, 0);
  m.backward(5);
  m.sync->contribute(8, 0);  // the send failed: a re-join, then the step's contribution again
  EXPECT_EQ(m.sync->outstanding(), 0u);
  EXPECT_EQ(m.sync->stats().contributions, 0u);
  EXPECT_EQ(m.sync->stats().bytes_up, 0u);
  m.sync->reset();
  EXPECT_THROW(m.sync->sent(), InternalError);
  m.start(0, 0);
  m.send(8);
  EXPECT_EQ(m.sync->outstanding(), 1u);
  EXPECT_EQ(m.sync->stats().contributions, 1u);
  EXPECT_EQ(m.sync->stats().bytes_up, 4u * kNumel);  // dense float32
}

TEST(FrontSync, UpdatesApplyOnlyAtTheSafePointInRoundOrder) {
  Member m(1);
  m.start(4, 0);
  m.backward(5);
  auto msg = m.send(8);
  const auto before = m.flat();
  const auto u5 = torch::linspace(-1, 1, kNumel);
  auto up = update(5, 1, u5);
  ASSERT_TRUE(m.sync->offer(up));
  EXPECT_TRUE(torch::equal(m.flat(), before));  // taken, not applied
  EXPECT_TRUE(m.sync->settle(0));
  EXPECT_TRUE(torch::allclose(m.flat(), before - 0.5 * u5));
  EXPECT_EQ(m.sync->version(), 5u);
  EXPECT_EQ(m.sync->outstanding(), 0u);
  EXPECT_EQ(m.sync->stats().updates, 1u);

  auto old = update(5, 0, torch::ones({kNumel}));  // a round this front already holds
  m.sync->offer(old);
  const auto at5 = m.flat();
  m.sync->settle(0);
  EXPECT_TRUE(torch::equal(m.flat(), at5));

  auto gap = update(7, 0, torch::ones({kNumel}));
  m.sync->offer(gap);
  EXPECT_THROW(m.sync->settle(0), ProtocolError);
}

TEST(FrontSync, AnImpossibleLearningRateIsRefused) {
  Member m(1);
  m.start(0, 0);
  auto u = update(1, 0, torch::ones({kNumel}), std::nan(""));
  m.sync->offer(u);
  EXPECT_THROW(m.sync->settle(0), ProtocolError);
}

TEST(FrontSync, ARejectedContributionGoesBackIntoTheResidual) {
  Member m(1);
  m.start(0, 1);
  m.backward(5);
  const auto first = sent_values(m.send(8));
  auto r = reject(1);
  m.sync->offer(r);
  EXPECT_TRUE(m.sync->settle(0));
  EXPECT_EQ(m.sync->stats().rejected, 1u);
  // Next step's gradient is zero: what goes out is what the server refused.
  m.opt->zero_grad();
  for (auto& p : m.front->parameters()) p.mutable_grad() = torch::zeros_like(p);
  EXPECT_TRUE(torch::equal(sent_values(m.send(8)), first));
}

TEST(FrontSync, Fp16ValuesKeepTheirRoundingErrorInTheResidual) {
  auto o = Member::dense();
  o.fp16_values = true;
  Member m(1, o);
  m.start(0, 4);
  m.backward(5);
  const auto g = m.flat_grad();
  const auto s1 = sent_values(m.send(8));
  const auto err1 = (g - s1).abs().max().item<double>();
  ASSERT_GT(err1, 0);  // fp16 did round
  for (auto& p : m.front->parameters()) p.mutable_grad() = torch::zeros_like(p);
  const auto s2 = sent_values(m.send(8));
  // The second contribution carries the first one's rounding error.
  EXPECT_LT((g - s1 - s2).abs().max().item<double>(), err1 / 100);
}

TEST(FrontSync, AGradientBeyondFp16IsRefusedBeforeItIsSent) {
  auto o = Member::dense();
  o.fp16_values = true;
  Member m(1, o);
  m.start(0, 4);
  for (auto& p : m.front->parameters()) p.mutable_grad() = torch::full_like(p, 1e5);  // > 65504
  EXPECT_THROW(m.sync->contribute(8, 0), ConfigError);
  EXPECT_EQ(m.sync->stats().contributions, 0u);
}

TEST(FrontSync, ARejoinGivesUpWhatWasInFlightAndIgnoresTheOldSession) {
  Member m(1);
  auto early = update(1, 0, torch::ones({kNumel}));
  EXPECT_TRUE(m.sync->offer(early));  // before the snapshot: not this session's
  m.start(0, 0);
  const auto at0 = m.flat();
  EXPECT_TRUE(m.sync->settle(0));
  EXPECT_TRUE(torch::equal(m.flat(), at0));

  m.backward(5);
  m.send(8);
  m.sync->reset();
  EXPECT_FALSE(m.sync->started());
  EXPECT_EQ(m.sync->outstanding(), 0u);
  auto stale = update(1, 1, torch::ones({kNumel}));
  m.sync->offer(stale);
  m.start(0, 0);
  EXPECT_TRUE(m.sync->settle(0));
  EXPECT_EQ(m.sync->version(), 0u);
}

// A member with K-FAC on its front (factors and inverses every step).
struct KfacMember {
  torch::nn::Sequential front{torch::nn::Linear(4, 3)};
  torch::optim::SGD opt{front->parameters(), torch::optim::SGDOptions(0.1)};
  train::Kfac kfac;
  FrontSync sync;

  explicit KfacMember(bool share, const char* method = "inverse")
      : kfac({front}, {"front"}, options(method), "member"), sync(sync_options(share), sync::flat_params(front, nullptr), opt, &kfac) {}
  static train::KfacOptions options(const char* method) {
    train::KfacOptions o;
    o.method = method;
    o.factor_every = o.inverse_every = 1;
    return o;
  }
  static sync::SyncOptions sync_options(bool share) {
    auto o = Member::dense();
    o.share_kfac_factors = share;
    return o;
  }
  // A snapshot from an aggregation with `sharing` ("" local), carrying `tensors` as `content`.
  wire::Message snapshot(const std::string& sharing, const std::string& method = "inverse",
                         wire::KfacContent content = wire::KfacContent::kNone,
                         std::vector<torch::Tensor> tensors = {}, double damping = train::KfacOptions{}.damping) {
    Member server(99);
    return sync::make_snapshot(0, 0, sync::flat_params(server.front, nullptr), *server.opt,
                               sync::SnapshotKfac{sharing, method, damping, content, std::move(tensors)});
  }
};

TEST(FrontSync, SharingKfacFactorsNeedsBothSidesToAgree) {
  EXPECT_THROW(KfacMember(true).sync.load_snapshot(KfacMember(true).snapshot("")), ConfigError);
  EXPECT_THROW(KfacMember(false).sync.load_snapshot(KfacMember(false).snapshot("server")), ConfigError);
  EXPECT_THROW(KfacMember(false).sync.load_snapshot(KfacMember(false).snapshot("members")), ConfigError);
  EXPECT_THROW(KfacMember(true, "eigen").sync.load_snapshot(KfacMember(true).snapshot("server", "inverse")),
               ConfigError);  // the server's decompositions would not be of its method
  EXPECT_THROW(KfacMember(true).sync.load_snapshot(KfacMember(true).snapshot("members", "eigen")),
               ConfigError);  // every member decomposes with the same method ...
  EXPECT_THROW(KfacMember(true).sync.load_snapshot(
                   KfacMember(true).snapshot("members", "inverse", wire::KfacContent::kNone, {}, 0.5)),
               ConfigError);  // ... and damping
  EXPECT_THROW(KfacMember(true).sync.load_snapshot(KfacMember(true).snapshot("everyone")), ProtocolError);
  KfacMember local(false), shared(true);
  EXPECT_NO_THROW(local.sync.load_snapshot(local.snapshot("")));
  EXPECT_NO_THROW(shared.sync.load_snapshot(shared.snapshot("members", "inverse")));
  EXPECT_EQ(local.sync.kfac_hash(), "");
}

TEST(FrontSync, ASharingMemberSendsItsBatchFactorsAndTakesTheServersDecompositions) {
  KfacMember m(true);
  const std::vector<torch::Tensor> inverses{torch::eye(5) * 0.5, torch::eye(3) * 0.25};
  m.sync.load_snapshot(m.snapshot("server", "inverse", wire::KfacContent::kDecompositions, inverses));
  const auto installed = m.sync.kfac_hash();
  EXPECT_NE(installed, "none");
  // A snapshot whose K-FAC part does not fit is refused before anything of it is loaded.
  {
    torch::NoGradGuard no_grad;
    for (auto& p : m.front->parameters()) p.add_(1);  // unlike the snapshot's front
  }
  const auto front = m.sync.hash();
  EXPECT_THROW(m.sync.load_snapshot(m.snapshot("server", "inverse", wire::KfacContent::kDecompositions,
                                               {torch::eye(4), torch::eye(3)})),
               ProtocolError);
  EXPECT_EQ(m.sync.hash(), front);
  EXPECT_EQ(m.sync.kfac_hash(), installed);
  // One from an aggregation that has shipped nothing yet leaves no preconditioner from before.
  {
    KfacMember again(true);
    again.sync.load_snapshot(again.snapshot("server", "inverse", wire::KfacContent::kDecompositions, inverses));
    again.sync.load_snapshot(again.snapshot("server"));
    EXPECT_EQ(again.sync.kfac_hash(), "none");
  }
  // A factor step: its batch factors ride after the gradient's tensors.
  auto x = torch::randn({8, 4});
  m.opt.zero_grad();
  m.kfac.forward(m.front, x).pow(2).sum().backward();
  m.kfac.step(0.1);
  auto msg = m.sync.contribute(8, 0);
  m.sync.sent();
  const auto g = wire::meta_as<wire::SparseGrad>(msg);
  ASSERT_EQ(g.kfac_tensors, 2u);
  ASSERT_EQ(msg.tensors.size(), 3u);  // [values] (dense) + A, G
  EXPECT_TRUE(torch::allclose(msg.tensors[1], train::pack_symmetric(train::linear_a_factor(x, true)), 1e-5, 1e-7));
  EXPECT_GT(m.sync.stats().kfac_bytes_up, 0u);
  // An Update that carries decompositions replaces the preconditioner at the safe point.
  auto u = update(1, g.seq, torch::zeros({kNumel}));
  auto meta = wire::meta_as<wire::Update>(u);
  meta.kfac = wire::KfacContent::kDecompositions;
  auto tensors = u.tensors;
  tensors.push_back(torch::eye(5));
  tensors.push_back(torch::eye(3));
  auto with = wire::make_message(meta, tensors);
  EXPECT_TRUE(m.sync.offer(with));
  m.sync.settle(0);
  EXPECT_NE(m.sync.kfac_hash(), installed);
  EXPECT_EQ(m.sync.version(), 1u);
  // Trailing tensors the Update does not name are refused.
  meta.round = 2;
  meta.kfac = wire::KfacContent::kNone;
  auto unnamed = wire::make_message(meta, tensors);
  EXPECT_TRUE(m.sync.offer(unnamed));
  EXPECT_THROW(m.sync.settle(0), ProtocolError);
}

TEST(FrontSync, OtherMessagesAreNotItsOwn) {
  Member m(1);
  auto cg = wire::make_message(wire::CutGrad{});
  EXPECT_FALSE(m.sync->offer(cg));
}

}  // namespace
}  // namespace cutlayer::client
