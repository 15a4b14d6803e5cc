#include "sealed_channel.h"  // shared/src

#include <gtest/gtest.h>

#include "cutlayer/crypto/crypto.h"
#include "cutlayer/wire/messages.h"

namespace cutlayer::transport {
namespace {

SessionSecret fresh_secret() {
  SessionSecret s{};
  crypto::random_bytes(s.data(), s.size());
  return s;
}

wire::Message open_one(SealedChannel& rx, std::vector<zmq::message_t>& frames) {
  const auto env = wire::parse_envelope(frames, wire::Limits{});
  bool auth = false;
  return rx.open(env, frames, wire::Limits{}, auth);
}

TEST(SealedChannel, RoundTripBothDirections) {
  const auto secret = fresh_secret();
  SealedChannel client(77, secret, Side::kClient), server(77, secret, Side::kServer);
  auto t = torch::randn({128, 33});
  auto up = client.seal(wire::make_message(wire::Probe{5}, {t}));
  // Ciphertext on the wire, not the plaintext.
  EXPECT_NE(std::memcmp(up[2].data(), t.data_ptr(), 64), 0);
  auto got = open_one(server, up);
  EXPECT_EQ(wire::meta_as<wire::Probe>(got).id, 5u);
  EXPECT_TRUE(torch::equal(got.tensors[0], t));

  auto down = server.seal(wire::make_message(wire::ProbeReply{5}, {t}));
  auto back = open_one(client, down);
  EXPECT_TRUE(torch::equal(back.tensors[0], t));
}

TEST(SealedChannel, DirectionsUseDifferentKeys) {
  const auto secret = fresh_secret();
  SealedChannel client(1, secret, Side::kClient), other_client(1, secret, Side::kClient);
  // A client's own message reflected back at a client must not open.
  auto frames = client.seal(wire::make_message(wire::Heartbeat{}));
  EXPECT_THROW(open_one(other_client, frames), AuthError);
}

TEST(SealedChannel, WrongSecretFailsAuthentication) {
  SealedChannel client(9, fresh_secret(), Side::kClient), server(9, fresh_secret(), Side::kServer);
  auto frames = client.seal(wire::make_message(wire::Probe{1}, {torch::ones({4})}));
  EXPECT_THROW(open_one(server, frames), AuthError);
  EXPECT_EQ(server.last_rx_sequence(), 0u);
}

TEST(SealedChannel, SequenceMustIncrease) {
  const auto secret = fresh_secret();
  SealedChannel client(3, secret, Side::kClient), server(3, secret, Side::kServer);
  auto m1 = client.seal(wire::make_message(wire::Probe{1}));
  auto m2 = client.seal(wire::make_message(wire::Probe{2}));
  std::vector<zmq::message_t> m1_copy;
  for (auto& f : m1) m1_copy.emplace_back(f.data(), f.size());
  open_one(server, m2);  // seq 2 first: fine
  EXPECT_THROW(open_one(server, m1), ReplayError);  // seq 1 after 2: reordered/replayed
  EXPECT_THROW(open_one(server, m1_copy), ReplayError);
  EXPECT_EQ(server.last_rx_sequence(), 2u);
}

TEST(SealedChannel, TamperedEnvelopeFailsAuthentication) {
  const auto secret = fresh_secret();
  SealedChannel client(3, secret, Side::kClient), server(3, secret, Side::kServer);
  auto frames = client.seal(wire::make_message(wire::Probe{1}));
  std::string env(frames[0].data<char>(), frames[0].size());
  env[6] = static_cast<char>(wire::MsgType::kLeave);  // same size, other type
  frames[0] = zmq::message_t(env.data(), env.size());
  EXPECT_THROW(open_one(server, frames), AuthError);
}

}  // namespace
}  // namespace cutlayer::transport
