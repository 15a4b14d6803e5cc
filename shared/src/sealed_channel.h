// One session's sealed channel, from one side: AES-256-GCM under per-direction keys
// derived with HKDF-SHA256 from the session secret. Every frame after the envelope is
// sealed on its own, a tensor's chunks too; nonce = frame index (u32 LE) ‖ sequence
// (u64 LE), unique per key since a message's frame indices are distinct and sequences
// never repeat; the envelope is the associated data; a receiver accepts only strictly
// increasing sequence numbers. The derived keys exist only inside the two AEAD contexts
// (the buffers they were derived in are wiped at once) and are wiped with them when the
// channel is destroyed. Internal to the transport (ZeroMQ frames).
#pragma once

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "cutlayer/crypto/aead.h"
#include "cutlayer/error.h"
#include "frame_codec.h"

namespace cutlayer::transport {

using SessionSecret = std::array<std::uint8_t, 32>;

enum class Side { kClient, kServer };

// A sequence number at or below the last accepted one.
class ReplayError : public ProtocolError {
 public:
  using ProtocolError::ProtocolError;
};

class SealedChannel {
 public:
  SealedChannel(std::uint64_t session_id, const SessionSecret& secret, Side side);

  std::uint64_t session_id() const { return session_id_; }

  // Seals `msg` under the next outgoing sequence number; meta and tensors are
  // encrypted straight into the outgoing frames.
  std::vector<zmq::message_t> seal(const wire::Message& msg);

  // Opens a message whose envelope names this session, in place. Throws ReplayError,
  // AuthError (a frame failed its tag) or ProtocolError. `authenticated` tells whether
  // the peer was proven (meta frame opened) even when a later check threw.
  wire::Message open(const wire::Envelope& env, std::vector<zmq::message_t>& frames,
                     const wire::Limits& limits, bool& authenticated);

  std::uint64_t last_rx_sequence() const { return last_rx_seq_; }

 private:
  class Codec final : public wire::FrameCodec {
   public:
    explicit Codec(crypto::Aead aead) : aead_(std::move(aead)) {}
    std::size_t overhead() const override { return crypto::Aead::kTagBytes; }
    std::uint32_t flags() const override { return wire::kFlagSealed; }
    zmq::message_t make_frame(const wire::Envelope::Bytes& env, std::uint32_t index,
                              const void* data, std::size_t n,
                              const torch::Tensor* owner) override;
    bool open_frame(const wire::Envelope::Bytes& env, std::uint32_t index,
                    zmq::message_t& frame) override;
    bool open_frame_into(const wire::Envelope::Bytes& env, std::uint32_t index,
                         const zmq::message_t& frame, void* out) override;
    bool meta_opened = false;

   private:
    crypto::Aead aead_;
  };

  std::uint64_t session_id_;
  Codec tx_;
  Codec rx_;
  std::uint64_t next_tx_seq_ = 1;
  std::uint64_t last_rx_seq_ = 0;
};

}  // namespace cutlayer::transport
