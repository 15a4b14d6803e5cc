// Internal (ZeroMQ): Message <-> frames, as wire/codec.h describes them. Only the
// transport's sources, and the tests and benches that handle raw frames, include this.
#pragma once

#include <zmq.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "cutlayer/wire/codec.h"
#include "cutlayer/wire/envelope.h"
#include "cutlayer/wire/message.h"

namespace cutlayer::wire {

// How payload bytes (meta and tensors) become frames: copied as they are, or sealed.
class FrameCodec {
 public:
  virtual ~FrameCodec() = default;
  // Extra bytes each frame carries beyond its payload (a tag, say).
  virtual std::size_t overhead() const = 0;
  virtual std::uint32_t flags() const = 0;
  // Makes frame `index` from `n` payload bytes. `owner`, when set, holds the bytes alive
  // and lets a plain codec send them without copying.
  virtual zmq::message_t make_frame(const Envelope::Bytes& env, std::uint32_t index,
                                    const void* data, std::size_t n,
                                    const torch::Tensor* owner) = 0;
  // Turns frame `index` back into payload in place (its first size()-overhead() bytes).
  // False when it does not authenticate.
  virtual bool open_frame(const Envelope::Bytes& env, std::uint32_t index,
                          zmq::message_t& frame) = 0;
  // The same, out of place: writes the frame's size()-overhead() payload bytes to `out`
  // and leaves the frame as it was (a chunk of a tensor assembled in its own buffer).
  // False when it does not authenticate (`out` then holds garbage).
  virtual bool open_frame_into(const Envelope::Bytes& env, std::uint32_t index,
                               const zmq::message_t& frame, void* out) = 0;
};

// Payload frames as they are; tensors are sent without a copy (the frame holds a
// reference to the tensor, which must not be modified until the frame is sent).
class PlainCodec final : public FrameCodec {
 public:
  std::size_t overhead() const override { return 0; }
  std::uint32_t flags() const override { return 0; }
  zmq::message_t make_frame(const Envelope::Bytes& env, std::uint32_t index, const void* data,
                            std::size_t n, const torch::Tensor* owner) override;
  bool open_frame(const Envelope::Bytes&, std::uint32_t, zmq::message_t&) override {
    return true;
  }
  bool open_frame_into(const Envelope::Bytes&, std::uint32_t, const zmq::message_t& frame,
                       void* out) override;
};

// Encodes `msg` for `session_id`/`sequence` into frames (envelope first), a tensor over
// kChunkBytes as several frames.
std::vector<zmq::message_t> encode(const Message& msg, std::uint64_t session_id,
                                   std::uint64_t sequence, FrameCodec& codec);

// Step 1 of decoding: the envelope, checked against the frame count and the codec-free
// limits (at most limits.max_frames() frames). Throws ProtocolError.
Envelope parse_envelope(const std::vector<zmq::message_t>& frames, const Limits& limits);

// Step 2: opens and validates the meta, derives every tensor's frames from its declared
// shape x dtype and checks each frame's size exactly, then builds the message. A
// one-frame tensor aliases its frame (no copy) when aligned; a chunked one is opened
// straight into one new contiguous buffer, each frame released once opened. Throws
// ProtocolError, or AuthError when a frame does not authenticate. `frames` is consumed.
Message decode_body(const Envelope& env, std::vector<zmq::message_t>& frames,
                    const Limits& limits, FrameCodec& codec);

// Both steps with the plain codec.
Message decode(std::vector<zmq::message_t>& frames, const Limits& limits);

}  // namespace cutlayer::wire
