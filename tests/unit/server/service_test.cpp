// The server's join checks and its handling of malformed training messages, through the
// real transport (CURVE front door, sealed channel) and the real back model.
#include <gtest/gtest.h>

#include <thread>

#include "cutlayer/error.h"
#include "cutlayer/server/back_trainer.h"
#include "cutlayer/server/service.h"
#include "cutlayer/transport/client_transport.h"

namespace cutlayer::server {
namespace {

using namespace std::chrono_literals;

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_keys_ = transport::generate_key_pair();
    client_keys_ = transport::generate_key_pair();
    transport::ServerTransportOptions so;
    so.server_keys = server_keys_;
    so.allow_list.add("alice", client_keys_.public_key);
    transport_ = std::make_unique<transport::ServerTransport>(so);
    trainer_ = std::make_unique<BackTrainer>(train::TrainOptions{});
    service_ = std::make_unique<Service>(*transport_, trainer_.get(), nullptr);
    thread_ = std::thread([this] { service_->run(stop_); });
  }
  void TearDown() override {
    stop_ = true;
    thread_.join();
  }
  transport::ClientTransport make_client() {
    transport::ClientTransportOptions co;
    co.join_port = transport_->join_port();
    co.server_public_key = server_keys_.public_key;
    co.client_keys = client_keys_;
    co.join_attempts = 1;
    return transport::ClientTransport(co);
  }
  static wire::Join good_join() {
    wire::Join j;
    j.model = "fmnist-cnn";
    j.cut_shape = {32, 12, 12};
    return j;
  }
  // The server's answer to one message.
  static wire::Message answer(transport::ClientTransport& c, const wire::Message& m) {
    c.send(m);
    auto r = c.recv(10s);
    EXPECT_TRUE(r.has_value());
    return r ? std::move(*r) : wire::Message{};
  }

  transport::CurveKeyPair server_keys_, client_keys_;
  std::unique_ptr<transport::ServerTransport> transport_;
  std::unique_ptr<BackTrainer> trainer_;
  std::unique_ptr<Service> service_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST_F(ServiceTest, MismatchedCutShapeIsRefusedAtJoin) {
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

TEST_F(ServiceTest, MalformedTrainingMessagesGetAnError) {
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

}  // namespace
}  // namespace cutlayer::server
