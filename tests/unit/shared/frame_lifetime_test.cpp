// A received tensor stays valid after the frames it came in are gone. libzmq keeps a very
// small message (<= 33 bytes) inside the message object itself, so a tensor that aliased
// such a frame's bytes before the frame was moved read freed memory once the caller's
// frame vector went away (seen as random "varint indices truncated" errors at a server
// holding small SparseGrads for a round).
#include "frame_codec.h"  // shared/src: the codec works on ZeroMQ frames

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "cutlayer/wire/messages.h"
#include "sealed_channel.h"

namespace cutlayer::wire {
namespace {

// Tensors small enough that their frames are libzmq "very small messages", plain and
// sealed (payload + 16-byte tag <= 33 bytes), and one well past that.
std::vector<torch::Tensor> small_tensors() {
  return {torch::arange(3, torch::kFloat32), torch::arange(17, torch::kUInt8),
          torch::arange(4, torch::kInt32), torch::arange(300, torch::kFloat32)};
}

// Frees the frames and fills the heap with garbage of the sizes they had, so that memory
// a tensor still pointed into would now hold 0xAB bytes.
void drop_and_scribble(std::vector<zmq::message_t>& frames) {
  const std::size_t bytes = frames.capacity() * sizeof(zmq::message_t);
  frames.clear();
  frames.shrink_to_fit();
  std::vector<std::vector<unsigned char>> junk;
  for (int i = 0; i < 64; ++i) junk.emplace_back(bytes, 0xAB);  // reuses the freed block
}

void expect_intact(const Message& got) {
  const auto want = small_tensors();
  ASSERT_EQ(got.tensors.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i)
    EXPECT_TRUE(torch::equal(got.tensors[i], want[i])) << "tensor " << i << " changed after its frame went away";
}

TEST(FrameLifetime, PlainTensorsOutliveTheirFrames) {
  PlainCodec plain;
  auto frames = encode(make_message(Heartbeat{}, small_tensors()), 0, 0, plain);
  Message got = decode(frames, Limits{});
  drop_and_scribble(frames);
  expect_intact(got);
}

TEST(FrameLifetime, SealedTensorsOutliveTheirFrames) {
  transport::SessionSecret secret{};
  for (std::size_t i = 0; i < secret.size(); ++i) secret[i] = static_cast<std::uint8_t>(i * 7 + 1);
  transport::SealedChannel client(42, secret, transport::Side::kClient);
  transport::SealedChannel server(42, secret, transport::Side::kServer);
  auto frames = client.seal(make_message(Heartbeat{}, small_tensors()));
  const Envelope env = parse_envelope(frames, Limits{});
  bool authenticated = false;
  Message got = server.open(env, frames, Limits{}, authenticated);
  ASSERT_TRUE(authenticated);
  drop_and_scribble(frames);
  expect_intact(got);
}

}  // namespace
}  // namespace cutlayer::wire
