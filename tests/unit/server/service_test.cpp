// The server's join checks and its handling of malformed training messages, through the
// real transport (CURVE front door, sealed channel) and the real back model: refused
// tensors, a batch the model cannot take, a U-shaped client that never sends its HeadGrad,
// and the eviction of a client refused again and again.
#include <gtest/gtest.h>

#include <cfloat>
#include <cstring>
#include <thread>

#include "cutlayer/error.h"
#include "cutlayer/server/back_trainer.h"
#include "cutlayer/server/service.h"
#include "cutlayer/state/archive.h"
#include "cutlayer/transport/client_transport.h"

namespace cutlayer::server {
namespace {

using namespace std::chrono_literals;

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_keys_ = transport::generate_key_pair();
    client_keys_ = transport::generate_key_pair();
    bob_keys_ = transport::generate_key_pair();
    transport::ServerTransportOptions so;
    so.server_keys = server_keys_;
    so.allow_list.add("alice", client_keys_.public_key);
    so.allow_list.add("bob", bob_keys_.public_key);
    transport_ = std::make_unique<transport::ServerTransport>(so);
  }
  // The service, in its own thread, over a trainer built from `o`.
  void start(const train::TrainOptions& o = {}, TrainerLimits tl = {}, ServiceLimits sl = {},
             bool aggregate = false) {
    trainer_ = std::make_unique<BackTrainer>(o, tl);
    if (aggregate) aggregator_ = std::make_unique<Aggregator>(o, AggregatorOptions{});
    service_ = std::make_unique<Service>(*transport_, trainer_.get(), nullptr, aggregator_.get(), sl);
    thread_ = std::thread([this] { service_->run(stop_); });
  }
  void TearDown() override {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  transport::ClientTransport make_client(const std::string& name = "alice") {
    transport::ClientTransportOptions co;
    co.join_port = transport_->join_port();
    co.server_public_key = server_keys_.public_key;
    co.client_keys = name == "bob" ? bob_keys_ : client_keys_;
    co.join_attempts = 1;
    return transport::ClientTransport(co);
  }
  // A small model: cut [8], back `back` (and the head "linear(8,3)" in vanilla mode).
  static train::TrainOptions tiny(bool u_shaped, const std::string& back = "linear(8,8) relu") {
    train::TrainOptions o;
    o.model = "tiny";
    o.u_shaped = u_shaped;
    o.front = "linear(16,8) relu";
    o.back = back;
    o.head = "linear(8,3)";
    o.input_shape = {16};
    return o;
  }
  static wire::Join tiny_join(bool u_shaped) {
    wire::Join j;
    j.model = "tiny";
    j.cut_shape = {8};
    j.u_shaped = u_shaped;
    j.samples = 100;
    const auto m = model::build_split(train::split_spec(tiny(u_shaped)), 1);
    j.front_fingerprint = state::part_fingerprint(*m.front);
    if (u_shaped) j.head_fingerprint = state::part_fingerprint(*m.head);
    return j;  // the back's left out, as a client that holds none
  }
  std::vector<torch::Tensor> back_state() const {
    std::vector<torch::Tensor> s;
    for (const auto& p : trainer_->back()->parameters()) s.push_back(p.detach().clone());
    for (const auto& b : trainer_->back()->buffers()) s.push_back(b.detach().clone());
    return s;
  }
  static bool identical(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
      if (a[i].sizes() != b[i].sizes() || std::memcmp(a[i].data_ptr(), b[i].data_ptr(), a[i].nbytes()) != 0)
        return false;
    return true;
  }
  static std::string error_of(const wire::Message& m) {
    return m.type == wire::MsgType::kError ? wire::meta_as<wire::ErrorMsg>(m).message : std::string();
  }
  static wire::Join good_join() {
    wire::Join j;
    j.model = "fmnist-cnn";
    j.cut_shape = {32, 12, 12};
    const auto m = model::build_split(model::preset("fmnist-cnn", false), 1);
    j.front_fingerprint = state::part_fingerprint(*m.front);
    j.back_fingerprint = state::part_fingerprint(*m.back);
    return j;
  }
  // The server's answer to one message.
  static wire::Message answer(transport::ClientTransport& c, const wire::Message& m) {
    c.send(m);
    auto r = c.recv(10s);
    EXPECT_TRUE(r.has_value());
    return r ? std::move(*r) : wire::Message{};
  }

  transport::CurveKeyPair server_keys_, client_keys_, bob_keys_;
  std::unique_ptr<transport::ServerTransport> transport_;
  std::unique_ptr<BackTrainer> trainer_;
  std::unique_ptr<Aggregator> aggregator_;
  std::unique_ptr<Service> service_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST_F(ServiceTest, MismatchedCutShapeIsRefusedAtJoin) {
  start();
  auto c = make_client();
  auto j = good_join();
  j.cut_shape = {32, 10, 10};
  try {
    c.join(j);
    FAIL() << "a client with the wrong cut shape joined";
  } catch (const AuthError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("cut shape [32x10x10] does not match fmnist-cnn's cut layer [32x12x12]"),
              std::string::npos) << m;
  }
  j = good_join();
  j.model = "resnet";
  EXPECT_THROW(c.join(j), AuthError);
  EXPECT_NO_THROW(c.join(good_join()));
}

// The cut shape can agree while the model does not: the parts' fingerprints tell.
TEST_F(ServiceTest, AFrontOrBackOtherThanTheServersIsRefusedAtJoinWithTheReason) {
  start();
  auto c = make_client();
  const auto other = model::build_split(model::preset("fmnist-deep-front", false), 1);
  auto j = good_join();
  j.front_fingerprint = state::part_fingerprint(*other.front);  // another front, same name and cut shape
  try {
    c.join(j);
    FAIL() << "a client with another front joined";
  } catch (const AuthError& e) {
    EXPECT_NE(std::string(e.what()).find("the client's front (fingerprint " + j.front_fingerprint.substr(0, 12)),
              std::string::npos) << e.what();
  }
  j = good_join();
  j.back_fingerprint = state::part_fingerprint(*other.back);
  try {
    c.join(j);
    FAIL() << "a client that knows another back joined";
  } catch (const AuthError& e) {
    EXPECT_NE(std::string(e.what()).find("the client's back"), std::string::npos) << e.what();
  }
  j = good_join();
  j.back_fingerprint.clear();  // a client without the back: its front is enough
  EXPECT_NO_THROW(c.join(j));
}

TEST_F(ServiceTest, MalformedTrainingMessagesGetAnError) {
  start();
  auto c = make_client();
  c.join(good_join());
  const auto z = torch::randn({8, 32, 12, 12});
  const auto y = torch::randint(0, 10, {8}, torch::kInt64);
  struct Case {
    const char* what;
    wire::Message msg;
  } cases[] = {
      {"wrong cut shape", wire::make_message(wire::Activations{1, true, true}, {torch::randn({8, 32, 10, 10}), y})},
      {"no labels in vanilla mode", wire::make_message(wire::Activations{2, false, true}, {z})},
      {"label out of range", wire::make_message(wire::Activations{3, true, true}, {z, y + 10})},
      {"labels of the wrong length", wire::make_message(wire::Activations{4, true, true}, {z, y.narrow(0, 0, 4)})},
      {"float64 activations", wire::make_message(wire::Activations{5, true, true}, {z.to(torch::kFloat64), y})},
      {"HeadGrad in vanilla mode", wire::make_message(wire::HeadGrad{6}, {z})},
      {"unparseable meta", [] {
         auto m = wire::make_message(wire::Activations{7, true, true});
         m.meta = "x";
         return m;
       }()},
  };
  for (auto& k : cases) {
    auto r = answer(c, k.msg);
    EXPECT_EQ(r.type, wire::MsgType::kError) << k.what;
  }
  // And a good batch trains: one step, with dL/dz of z's shape back.
  auto r = answer(c, wire::make_message(wire::Activations{8, true, true}, {z, y}));
  ASSERT_EQ(r.type, wire::MsgType::kCutGrad);
  EXPECT_EQ(wire::meta_as<wire::CutGrad>(r).step, 8u);
  EXPECT_EQ(r.tensors.at(0).sizes(), z.sizes());
}

TEST_F(ServiceTest, ANonFiniteActivationBatchGetsAnErrorAndTheBackModelIsBitIdentical) {
  start(tiny(false));
  auto c = make_client();
  c.join(tiny_join(false));
  const auto y = torch::randint(0, 3, {8}, torch::kInt64);
  auto r = answer(c, wire::make_message(wire::Activations{1, true, true}, {torch::randn({8, 8}), y}));
  ASSERT_EQ(r.type, wire::MsgType::kCutGrad);
  const auto before = back_state();
  for (float bad : {std::nanf(""), INFINITY, FLT_MAX}) {
    auto z = torch::randn({8, 8});
    z[2][3] = bad;
    r = answer(c, wire::make_message(wire::Activations{2, true, true}, {z, y}));
    ASSERT_EQ(r.type, wire::MsgType::kError) << bad;
    EXPECT_NE(error_of(r).find("refused, nothing applied"), std::string::npos) << error_of(r);
  }
  EXPECT_TRUE(identical(before, back_state()));
  EXPECT_EQ(trainer_->stats().steps, 1);
  r = answer(c, wire::make_message(wire::Activations{3, true, true}, {torch::randn({8, 8}), y}));
  EXPECT_EQ(r.type, wire::MsgType::kCutGrad);
}

TEST_F(ServiceTest, ABatchTheModelCannotTakeGetsAnErrorAndTheNextMessageIsServed) {
  // A batch of 1 through batchnorm in training mode: LibTorch throws c10::Error.
  start(tiny(false, "linear(8,8) batchnorm1d(8) relu"));
  auto c = make_client();
  c.join(tiny_join(false));
  auto r = answer(c, wire::make_message(wire::Activations{1, true, true},
                                        {torch::randn({1, 8}), torch::zeros({1}, torch::kInt64)}));
  ASSERT_EQ(r.type, wire::MsgType::kError);
  EXPECT_NE(error_of(r).find("could not process"), std::string::npos) << error_of(r);
  EXPECT_EQ(error_of(r).find('\n'), std::string::npos);  // no backtrace, one line
  r = answer(c, wire::make_message(wire::Activations{2, true, true},
                                   {torch::randn({8, 8}), torch::randint(0, 3, {8}, torch::kInt64)}));
  EXPECT_EQ(r.type, wire::MsgType::kCutGrad);
  EXPECT_EQ(trainer_->stats().steps, 1);
}

TEST_F(ServiceTest, AUShapedClientThatNeverSendsItsHeadGradStallsOthersOnlyUntilTheDeadline) {
  TrainerLimits tl;
  tl.head_grad_timeout = 400ms;
  start(tiny(true), tl);
  auto alice = make_client("alice");
  auto bob = make_client("bob");
  alice.join(tiny_join(true));
  bob.join(tiny_join(true));
  // Alice's forward pass; she never sends the HeadGrad (her transport stays alive).
  auto r = answer(alice, wire::make_message(wire::Activations{1, false, true}, {torch::randn({4, 8})}));
  ASSERT_EQ(r.type, wire::MsgType::kServerActivations);
  const auto t0 = std::chrono::steady_clock::now();
  bob.send(wire::make_message(wire::Activations{1, false, true}, {torch::randn({4, 8})}));
  auto b = bob.recv(10s);
  const auto waited = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(b.has_value());
  ASSERT_EQ(b->type, wire::MsgType::kServerActivations) << error_of(*b);
  EXPECT_GE(waited, 300ms);
  EXPECT_LT(waited, 5s);
  auto a = alice.recv(5s);
  ASSERT_TRUE(a.has_value());
  EXPECT_NE(error_of(*a).find("no HeadGrad for step 1 within 400 ms"), std::string::npos) << error_of(*a);
  // Bob's step completes, and so do his next ones.
  for (std::uint64_t s = 1; s <= 3; ++s) {
    if (s > 1) {
      r = answer(bob, wire::make_message(wire::Activations{s, false, true}, {torch::randn({4, 8})}));
      ASSERT_EQ(r.type, wire::MsgType::kServerActivations);
    }
    r = answer(bob, wire::make_message(wire::HeadGrad{s}, {torch::randn({4, 8})}));
    ASSERT_EQ(r.type, wire::MsgType::kCutGrad) << error_of(r);
  }
  EXPECT_EQ(trainer_->stats().steps, 3);
}

TEST_F(ServiceTest, ATrainingBatchOverTheDeferredBoundGetsAnError) {
  TrainerLimits tl;
  tl.max_deferred_per_session = 1;
  start(tiny(true), tl);
  auto alice = make_client("alice");
  auto bob = make_client("bob");
  alice.join(tiny_join(true));
  bob.join(tiny_join(true));
  auto r = answer(alice, wire::make_message(wire::Activations{1, false, true}, {torch::randn({4, 8})}));
  ASSERT_EQ(r.type, wire::MsgType::kServerActivations);
  bob.send(wire::make_message(wire::Activations{1, false, true}, {torch::randn({4, 8})}));  // waits
  r = answer(bob, wire::make_message(wire::Activations{2, false, true}, {torch::randn({4, 8})}));
  ASSERT_EQ(r.type, wire::MsgType::kError);
  EXPECT_NE(error_of(r).find("max_deferred_per_session"), std::string::npos) << error_of(r);
  // Alice completes her step: Bob's first batch goes on.
  r = answer(alice, wire::make_message(wire::HeadGrad{1}, {torch::randn({4, 8})}));
  EXPECT_EQ(r.type, wire::MsgType::kCutGrad);
  auto b = bob.recv(5s);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->type, wire::MsgType::kServerActivations);
  EXPECT_EQ(wire::meta_as<wire::ServerActivations>(*b).step, 1u);
}

TEST_F(ServiceTest, AClientRefusedRepeatedlyIsEvictedAndItsJoinsRefusedForAWhile) {
  ServiceLimits sl;
  sl.refusals_to_evict = 3;
  sl.rejoin_after_eviction = 60s;
  start(tiny(false), {}, sl);
  auto c = make_client("alice");
  auto bob = make_client("bob");
  c.join(tiny_join(false));
  bob.join(tiny_join(false));
  auto nan = torch::full({8, 8}, std::nanf(""));
  const auto y = torch::randint(0, 3, {8}, torch::kInt64);
  for (int i = 0; i < 2; ++i) {
    auto r = answer(c, wire::make_message(wire::Activations{1, true, true}, {nan, y}));
    ASSERT_EQ(r.type, wire::MsgType::kError);
  }
  c.send(wire::make_message(wire::Activations{1, true, true}, {nan, y}));
  auto r = c.recv(5s);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->type, wire::MsgType::kError);  // the third refusal
  r = c.recv(5s);
  ASSERT_TRUE(r.has_value());
  EXPECT_NE(error_of(*r).find("evicted: 3 refused messages within 60 s"), std::string::npos) << error_of(*r);
  // Its session is gone: a good batch gets no answer.
  c.send(wire::make_message(wire::Activations{2, true, true}, {torch::randn({8, 8}), y}));
  EXPECT_FALSE(c.recv(500ms).has_value());
  EXPECT_EQ(service_->evictions(), 1u);
  EXPECT_EQ(trainer_->stats().steps, 0);
  // A re-join is refused, naming why.
  try {
    c.join(tiny_join(false));
    FAIL() << "an evicted client joined again at once";
  } catch (const AuthError& e) {
    EXPECT_NE(std::string(e.what()).find("evicted"), std::string::npos) << e.what();
  }
  // The others are served as before.
  auto b = answer(bob, wire::make_message(wire::Activations{1, true, true}, {torch::randn({8, 8}), y}));
  EXPECT_EQ(b.type, wire::MsgType::kCutGrad);
}

TEST_F(ServiceTest, TheSamplesAClientDeclaresAtJoinAreBounded) {
  ServiceLimits sl;
  sl.max_join_samples = 1000;
  start(tiny(false), {}, sl, true);
  auto c = make_client();
  auto j = tiny_join(false);
  j.sync = true;
  j.samples = 1001;
  try {
    c.join(j);
    FAIL() << "a declaration past the bound was accepted";
  } catch (const AuthError& e) {
    EXPECT_NE(std::string(e.what()).find("limits.max_join_samples"), std::string::npos) << e.what();
  }
  j.samples = 0;
  EXPECT_THROW(c.join(j), AuthError);  // a contributor must declare its examples
  j.samples = 1000;
  EXPECT_NO_THROW(c.join(j));
}

}  // namespace
}  // namespace cutlayer::server
