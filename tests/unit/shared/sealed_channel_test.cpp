#include "sealed_channel.h"  // shared/src

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <utility>

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


// Chunked tensors: every chunk sealed on its own (ciphertext ‖ tag), opened straight into
// one buffer; a tensor of up to a chunk still aliases its frame, decrypted in place.
TEST(SealedChannel, ChunkedTensorsRoundTripAtTheChunkBoundaries) {
  const auto secret = fresh_secret();
  SealedChannel client(5, secret, Side::kClient), server(5, secret, Side::kServer);
  constexpr std::size_t kChunk = wire::kChunkBytes;
  constexpr std::size_t kTag = crypto::Aead::kTagBytes;
  for (const auto type : {torch::kUInt8, torch::kFloat32, torch::kFloat64}) {
    const std::size_t s = c10::elementSize(type);
    for (const std::size_t bytes : {kChunk - s, kChunk, kChunk + s, 4 * kChunk + 3 * s}) {
      const auto n = static_cast<std::int64_t>(bytes / s);
      const auto big = torch::randint(0, 100, {n}, torch::TensorOptions().dtype(type));
      const auto small = torch::randn({5, 3});
      auto frames = client.seal(wire::make_message(wire::Probe{9}, {big, small}));
      const std::size_t chunks = wire::chunk_count(bytes);
      ASSERT_EQ(frames.size(), 2 + chunks + 1) << bytes;
      for (std::size_t k = 0; k < chunks; ++k)
        EXPECT_EQ(frames[2 + k].size(), std::min(kChunk, bytes - k * kChunk) + kTag) << bytes;
      EXPECT_EQ(frames.back().size(), small.nbytes() + kTag);
      // Ciphertext on the wire, every chunk.
      // (A last chunk can be a few bytes: compared when it holds 16 or more, so a chance
      // match of a byte or two cannot fail the test; never read past the tensor.)
      for (std::size_t k = 0; k < chunks; ++k)
        if (bytes - k * kChunk >= 16)
          EXPECT_NE(std::memcmp(frames[2 + k].data(), static_cast<const char*>(big.data_ptr()) + k * kChunk,
                                std::min<std::size_t>(64, bytes - k * kChunk)),
                    0);
      const void* small_frame = frames.back().data();
      const void* first_chunk = frames[2].data();
      auto got = open_one(server, frames);
      ASSERT_EQ(got.tensors.size(), 2u);
      EXPECT_TRUE(torch::equal(got.tensors[0], big)) << bytes;
      EXPECT_TRUE(torch::equal(got.tensors[1], small));
      EXPECT_EQ(got.tensors[1].data_ptr(), small_frame);  // one frame: decrypted in place
      if (chunks == 1) EXPECT_EQ(got.tensors[0].data_ptr(), first_chunk);
      else EXPECT_NE(got.tensors[0].data_ptr(), first_chunk);
    }
  }
}

TEST(SealedChannel, TamperedMiddleChunkFailsItsTag) {
  const auto secret = fresh_secret();
  SealedChannel client(6, secret, Side::kClient), server(6, secret, Side::kServer);
  const auto big = torch::randn({static_cast<std::int64_t>(3 * wire::kChunkBytes / 4 + 10)});
  auto frames = client.seal(wire::make_message(wire::Probe{1}, {big}));
  ASSERT_EQ(frames.size(), 2u + 4);
  std::string mid(frames[3].data<char>(), frames[3].size());
  mid[mid.size() / 2] ^= 0x01;
  frames[3] = zmq::message_t(mid.data(), mid.size());
  const auto env = wire::parse_envelope(frames, wire::Limits{});
  bool auth = false;
  try {
    server.open(env, frames, wire::Limits{}, auth);
    FAIL() << "a tampered chunk opened";
  } catch (const AuthError& e) {
    EXPECT_NE(std::string(e.what()).find("chunk 2 of 4"), std::string::npos) << e.what();
  }
  // The meta was authentic: the sender holds the key, the sequence is spent.
  EXPECT_TRUE(auth);
  EXPECT_EQ(server.last_rx_sequence(), 1u);

  // Two full chunks swapped: each is authentic, but under another frame index (nonce).
  auto swapped = client.seal(wire::make_message(wire::Probe{2}, {big}));
  std::swap(swapped[2], swapped[3]);
  EXPECT_THROW(open_one(server, swapped), AuthError);

  // The untampered next message still opens.
  auto next = client.seal(wire::make_message(wire::Probe{3}, {big}));
  EXPECT_TRUE(torch::equal(open_one(server, next).tensors[0], big));
}

}  // namespace
}  // namespace cutlayer::transport
