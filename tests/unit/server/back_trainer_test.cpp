// The back model's defences, driven message by message with an explicit clock: refused
// tensors leave the model bit-identical, a U-shaped step waits for its HeadGrad only so
// long, validation happens before a batch is deferred and the deferred queue is bounded.
#include <gtest/gtest.h>

#include <cfloat>

#include "cutlayer/error.h"
#include "cutlayer/server/back_trainer.h"

namespace cutlayer::server {
namespace {

using namespace std::chrono_literals;
using Clock = BackTrainer::Clock;

train::TrainOptions tiny(bool u_shaped, const std::string& back = "linear(8,8) relu") {
  train::TrainOptions o;
  o.model = "tiny";
  o.u_shaped = u_shaped;
  o.front = "linear(16,8) relu";
  o.back = back;
  o.head = "linear(8,3)";
  o.input_shape = {16};
  o.lr = 0.1;
  o.momentum = 0.9;
  return o;
}

// Every parameter and buffer (batchnorm's running statistics), cloned.
std::vector<torch::Tensor> state_of(const BackTrainer& t, bool buffers = true) {
  std::vector<torch::Tensor> s;
  for (const auto& p : t.back()->parameters()) s.push_back(p.detach().clone());
  if (buffers)
    for (const auto& b : t.back()->buffers()) s.push_back(b.detach().clone());
  return s;
}

bool identical(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].sizes() != b[i].sizes() ||
        std::memcmp(a[i].data_ptr(), b[i].data_ptr(), a[i].nbytes()) != 0)  // bit for bit
      return false;
  return true;
}

bool all_finite(const BackTrainer& t) {
  for (const auto& p : t.back()->parameters())
    if (!torch::isfinite(p).all().item<bool>()) return false;
  return true;
}

wire::Message vanilla_batch(std::uint64_t step, torch::Tensor z) {
  const auto y = torch::randint(0, 3, {z.size(0)}, torch::kInt64);
  return wire::make_message(wire::Activations{step, true, true}, {std::move(z), y});
}

wire::Message u_batch(std::uint64_t step, torch::Tensor z, bool train = true) {
  return wire::make_message(wire::Activations{step, false, train}, {std::move(z)});
}

wire::Message head_grad(std::uint64_t step, torch::Tensor g) {
  return wire::make_message(wire::HeadGrad{step}, {std::move(g)});
}

std::size_t count(const BackTrainer::Outbox& out, std::uint64_t session, wire::MsgType type) {
  std::size_t n = 0;
  for (const auto& [s, m] : out) n += s == session && m.type == type;
  return n;
}

// Each client's steps are counted by name across sessions and survive a checkpoint; a
// session with no name (not joined through the service) counts for nobody.
TEST(BackTrainer, StepsHeldAreCountedPerClientAndCheckpointed) {
  for (bool u : {false, true}) {
    BackTrainer t(tiny(u));
    EXPECT_EQ(t.steps_held("alice"), wire::kStepsUnknown);
    t.name_session(1, "alice");
    t.name_session(2, "bob");
    for (std::uint64_t step : {0, 1, 2}) {
      if (u) {
        auto fwd = t.handle(1, u_batch(step, torch::randn({4, 8})));
        ASSERT_EQ(count(fwd, 1, wire::MsgType::kServerActivations), 1u);
        t.handle(1, head_grad(step, torch::randn({4, 8})));
      } else {
        t.handle(1, vanilla_batch(step, torch::randn({4, 8})));
      }
    }
    if (u) {
      t.handle(2, u_batch(7, torch::randn({4, 8})));
      t.handle(2, head_grad(7, torch::randn({4, 8})));
      t.handle(3, u_batch(0, torch::randn({4, 8})));
      t.handle(3, head_grad(0, torch::randn({4, 8})));
      t.handle(1, u_batch(3, torch::randn({4, 8})));  // forward only: not a step yet
    } else {
      t.handle(2, vanilla_batch(7, torch::randn({4, 8})));
      t.handle(3, vanilla_batch(0, torch::randn({4, 8})));
    }
    EXPECT_EQ(t.steps_held("alice"), 3u) << u;
    EXPECT_EQ(t.steps_held("bob"), 8u) << u;
    EXPECT_EQ(t.stats().steps, 5) << u;
    state::OutputArchive out;
    t.save(out);
    const auto bytes = state::to_bytes(out);
    BackTrainer back(tiny(u));
    state::InputArchive in;
    state::from_bytes(in, bytes);
    back.load(in);
    EXPECT_EQ(back.steps_held("alice"), 3u) << u;
    EXPECT_EQ(back.steps_held("bob"), 8u) << u;
    EXPECT_EQ(back.steps_held("carol"), wire::kStepsUnknown) << u;
    EXPECT_TRUE(identical(state_of(t), state_of(back))) << u;
  }
}

TEST(BackTrainer, NonFiniteActivationsAreRefusedAndTheModelIsUntouched) {
  BackTrainer t(tiny(false));
  t.handle(1, vanilla_batch(1, torch::randn({8, 8})));  // momentum buffers exist
  const auto before = state_of(t);
  for (float bad : {std::nanf(""), INFINITY, -INFINITY}) {
    auto z = torch::randn({8, 8});
    z[3][5] = bad;
    EXPECT_THROW(t.handle(1, vanilla_batch(2, z)), ProtocolError) << bad;
  }
  EXPECT_TRUE(identical(before, state_of(t)));
  EXPECT_EQ(t.stats().steps, 1);
  EXPECT_EQ(t.handle(1, vanilla_batch(3, torch::randn({8, 8}))).at(0).second.type, wire::MsgType::kCutGrad);
}

TEST(BackTrainer, ValuesPastTheBoundAreRefusedAndTheModelStaysFiniteOverManySteps) {
  BackTrainer t(tiny(false));
  const auto before = state_of(t);
  for (float big : {FLT_MAX, 3e38f, -1e30f, 1.0001e6f}) {
    auto z = torch::randn({8, 8});
    z[0][0] = big;
    try {
      t.handle(1, vanilla_batch(1, z));
      FAIL() << big << " accepted";
    } catch (const ProtocolError& e) {
      EXPECT_NE(std::string(e.what()).find("max_abs_value"), std::string::npos) << e.what();
    }
  }
  EXPECT_TRUE(identical(before, state_of(t)));
  // At the bound every value is accepted; a hostile client sending nothing else for many
  // steps must still leave the model finite (a step whose loss or gradient is not is not
  // taken), with momentum 0.9 summing its gradients.
  int refused = 0;
  for (int i = 0; i < 300; ++i) {
    auto z = torch::sign(torch::randn({8, 8})) * 1e6f;
    try {
      t.handle(1, vanilla_batch(i, z));
    } catch (const ProtocolError&) {
      ++refused;
    }
    ASSERT_TRUE(all_finite(t)) << "after step " << i;
  }
  EXPECT_GT(t.stats().steps, 0);
  // and an honest batch still trains
  EXPECT_NO_THROW(t.handle(1, vanilla_batch(1000, torch::randn({8, 8}))));
  EXPECT_TRUE(all_finite(t));
}

TEST(BackTrainer, NonFiniteHeadGradIsRefusedDropsThePendingStepAndLeavesTheModelUntouched) {
  BackTrainer t(tiny(true));
  const auto now = Clock::now();
  auto out = t.handle(1, u_batch(1, torch::randn({4, 8})), now);
  ASSERT_EQ(count(out, 1, wire::MsgType::kServerActivations), 1u);
  const auto h = out[0].second.tensors.at(0);
  EXPECT_TRUE(t.handle(2, u_batch(1, torch::randn({4, 8})), now).empty());  // deferred
  const auto before = state_of(t);
  for (float bad : {std::nanf(""), INFINITY, 2e6f}) {
    auto g = torch::randn(h.sizes());
    g[0][0] = bad;
    // A refused HeadGrad from the client whose step is pending: an Error to it, its step
    // dropped, the next client's batch goes on.
    BackTrainer u(tiny(true));
    const auto u_before = state_of(u);
    u.handle(1, u_batch(1, torch::randn({4, 8})), now);
    u.handle(2, u_batch(1, torch::randn({4, 8})), now);
    out = u.handle(1, head_grad(1, g), now);
    EXPECT_EQ(count(out, 1, wire::MsgType::kError), 1u) << bad;
    EXPECT_EQ(count(out, 2, wire::MsgType::kServerActivations), 1u) << bad;
    EXPECT_EQ(u.pending_session(), std::optional<std::uint64_t>(2));
    EXPECT_TRUE(identical(u_before, state_of(u)));
    EXPECT_EQ(u.stats().steps, 0);
  }
  // A bad HeadGrad from a client with no pending step changes nothing.
  auto g = torch::randn(h.sizes());
  g[1][1] = std::nanf("");
  EXPECT_THROW(t.handle(3, head_grad(1, g), now), ProtocolError);
  EXPECT_EQ(t.pending_session(), std::optional<std::uint64_t>(1));
  EXPECT_EQ(t.deferred(), 1u);
  // The good one completes the step.
  out = t.handle(1, head_grad(1, torch::randn(h.sizes())), now);
  EXPECT_EQ(count(out, 1, wire::MsgType::kCutGrad), 1u);
  EXPECT_EQ(count(out, 2, wire::MsgType::kServerActivations), 1u);
  EXPECT_FALSE(identical(before, state_of(t)));
}

TEST(BackTrainer, AStepWaitsForItsHeadGradOnlyUntilTheDeadline) {
  TrainerLimits limits;
  limits.head_grad_timeout = 500ms;
  BackTrainer t(tiny(true), limits);
  const auto t0 = Clock::now();
  auto out = t.handle(1, u_batch(7, torch::randn({4, 8})), t0);  // client 1 never answers
  ASSERT_EQ(count(out, 1, wire::MsgType::kServerActivations), 1u);
  EXPECT_TRUE(t.handle(2, u_batch(1, torch::randn({4, 8})), t0 + 100ms).empty());
  EXPECT_TRUE(t.handle(1, u_batch(8, torch::randn({4, 8})), t0 + 200ms).empty());  // its own next batch waits too
  EXPECT_EQ(t.deferred(), 2u);
  // An evaluation batch never waits.
  out = t.handle(2, u_batch(2, torch::randn({4, 8}), false), t0 + 200ms);
  EXPECT_EQ(count(out, 2, wire::MsgType::kServerActivations), 1u);
  EXPECT_TRUE(t.tick(t0 + 499ms).empty());
  out = t.tick(t0 + 500ms);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].first, 1u);
  ASSERT_EQ(out[0].second.type, wire::MsgType::kError);
  EXPECT_NE(wire::meta_as<wire::ErrorMsg>(out[0].second).message.find("no HeadGrad for step 7 within 500 ms"),
            std::string::npos);
  EXPECT_EQ(out[1].first, 2u);  // the other client's batch goes on
  ASSERT_EQ(out[1].second.type, wire::MsgType::kServerActivations);
  EXPECT_EQ(wire::meta_as<wire::ServerActivations>(out[1].second).step, 1u);
  EXPECT_EQ(t.deferred(), 0u);  // the stuck client's own queued batch went with its step
  EXPECT_EQ(t.deferred_bytes(), 0u);
  // Its late HeadGrad is refused; the other client's step completes.
  EXPECT_THROW(t.handle(1, head_grad(7, torch::randn({4, 8})), t0 + 600ms), ProtocolError);
  out = t.handle(2, head_grad(1, torch::randn({4, 8})), t0 + 600ms);
  EXPECT_EQ(count(out, 2, wire::MsgType::kCutGrad), 1u);
  EXPECT_EQ(t.stats().steps, 1);
}

TEST(BackTrainer, BatchesAreValidatedBeforeTheyAreDeferred) {
  BackTrainer t(tiny(true));
  const auto now = Clock::now();
  t.handle(1, u_batch(1, torch::randn({4, 8})), now);
  auto nan = torch::randn({4, 8});
  nan[0][0] = std::nanf("");
  EXPECT_THROW(t.handle(2, u_batch(1, nan), now), ProtocolError);
  EXPECT_THROW(t.handle(2, u_batch(1, torch::randn({4, 9})), now), ProtocolError);
  EXPECT_THROW(t.handle(2, u_batch(1, torch::randn({4, 8}).to(torch::kFloat64)), now), ProtocolError);
  EXPECT_THROW(t.handle(2, wire::make_message(wire::Activations{1, true, true},
                                              {torch::randn({4, 8}), torch::zeros({4}, torch::kInt64)}),
                        now),
               ProtocolError);
  EXPECT_EQ(t.deferred(), 0u);
}

TEST(BackTrainer, TheDeferredQueueIsBoundedPerSessionAndInTotal) {
  TrainerLimits limits;
  limits.max_deferred_per_session = 2;
  limits.max_deferred_bytes = 5 * 4 * 8 * sizeof(float);  // five batches of [4 x 8]
  BackTrainer t(tiny(true), limits);
  const auto now = Clock::now();
  t.handle(1, u_batch(1, torch::randn({4, 8})), now);
  EXPECT_TRUE(t.handle(2, u_batch(1, torch::randn({4, 8})), now).empty());
  EXPECT_TRUE(t.handle(2, u_batch(2, torch::randn({4, 8})), now).empty());
  try {
    t.handle(2, u_batch(3, torch::randn({4, 8})), now);
    FAIL() << "a third deferred batch of one session was taken";
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("max_deferred_per_session"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(t.handle(3, u_batch(1, torch::randn({4, 8})), now).empty());
  EXPECT_TRUE(t.handle(3, u_batch(2, torch::randn({4, 8})), now).empty());
  EXPECT_TRUE(t.handle(4, u_batch(1, torch::randn({4, 8})), now).empty());
  EXPECT_EQ(t.deferred_bytes(), 5u * 4 * 8 * sizeof(float));
  try {
    t.handle(5, u_batch(1, torch::randn({4, 8})), now);
    FAIL() << "the total bound was passed";
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("max_deferred_mb"), std::string::npos) << e.what();
  }
  EXPECT_EQ(t.deferred(), 5u);
  // A session that ends takes its queued batches with it.
  t.forget(3, now);
  EXPECT_EQ(t.deferred(), 3u);
  EXPECT_EQ(t.deferred_bytes(), 3u * 4 * 8 * sizeof(float));
}

TEST(BackTrainer, ABatchTheModelCannotTakeThrowsAndTheNextOneTrains) {
  // A batch of 1 through batchnorm in training mode: LibTorch's c10::Error.
  BackTrainer t(tiny(false, "linear(8,8) batchnorm1d(8) relu"));
  // (LibTorch's BatchNorm counts the batch in num_batches_tracked before it checks it;
  // the parameters stay as they were.)
  const auto before = state_of(t, false);
  try {
    t.handle(1, vanilla_batch(1, torch::randn({1, 8})));
    FAIL() << "a batch of 1 went through batchnorm";
  } catch (const c10::Error&) {
  }
  EXPECT_TRUE(identical(before, state_of(t, false)));
  EXPECT_EQ(t.handle(1, vanilla_batch(2, torch::randn({8, 8}))).at(0).second.type, wire::MsgType::kCutGrad);
  // U-shaped: nothing stays pending after the failed forward pass.
  BackTrainer u(tiny(true, "linear(8,8) batchnorm1d(8) relu"));
  EXPECT_THROW(u.handle(1, u_batch(1, torch::randn({1, 8}))), c10::Error);
  EXPECT_FALSE(u.pending_session().has_value());
  EXPECT_EQ(count(u.handle(2, u_batch(1, torch::randn({4, 8}))), 2, wire::MsgType::kServerActivations), 1u);
}

// A compressed cut (int8 up, top 3 of 8, bf16 down): the back learns from exactly what the
// client says it sent (the same step as a plain session sending those values), and only the
// kept entries' gradients go back, rounded to bf16. A plain session's float32 cut is not
// read as a compressed one's, nor the other way round.
TEST(BackTrainer, ACompressedCutTrainsOnWhatWasSentAndAnswersForTheKeptEntries) {
  wire::CutCoding c;
  c.values = wire::CutValues::kInt8;
  c.grad_values = wire::CutValues::kBf16;
  c.kept = 3;
  BackTrainer t(tiny(false)), plain(tiny(false));
  t.set_cut(1, c);
  torch::manual_seed(5);
  const auto z = torch::relu(torch::randn({4, 8}));
  const auto y = torch::randint(0, 3, {4}, torch::kInt64);
  const auto sent = cut::encode_activations(z, c);
  auto tensors = sent.tensors;
  tensors.push_back(y);
  const auto out = t.handle(1, wire::make_message(wire::Activations{0, true, true}, tensors));
  const auto ref = plain.handle(1, wire::make_message(wire::Activations{0, true, true}, {sent.as_received, y}));
  ASSERT_EQ(out.at(0).second.type, wire::MsgType::kCutGrad);
  EXPECT_TRUE(identical(state_of(t), state_of(plain)));
  const auto& g = out.at(0).second.tensors;
  ASSERT_EQ(g.size(), 1u);
  EXPECT_EQ(g[0].scalar_type(), torch::kBFloat16);
  EXPECT_EQ(g[0].sizes(), torch::IntArrayRef({4, 3}));
  const auto full = ref.at(0).second.tensors.at(0);
  EXPECT_TRUE(g[0].equal(full.gather(1, sent.cols).to(torch::kBFloat16)));

  const auto before = state_of(t);
  EXPECT_THROW(t.handle(1, vanilla_batch(1, z)), ProtocolError);  // float32 where int8 top-k is agreed
  EXPECT_THROW(plain.handle(2, wire::make_message(wire::Activations{1, true, true}, tensors)), ProtocolError);
  EXPECT_TRUE(identical(before, state_of(t)));
  t.forget(1, Clock::now());  // the next session 1 is a plain one
  EXPECT_EQ(t.handle(1, vanilla_batch(2, z)).at(0).second.type, wire::MsgType::kCutGrad);
}

TEST(BackTrainer, AJoinWhoseCutKeepsMoreThanTheCutHasIsRefused) {
  BackTrainer t(tiny(false));
  wire::Join j;
  j.model = "tiny";
  j.cut_shape = t.cut_shape();
  j.cut.kept = 9;  // of 8
  const auto why = t.check_join(j);
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find("cut.topk"), std::string::npos) << *why;
}

}  // namespace
}  // namespace cutlayer::server
