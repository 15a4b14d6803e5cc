// The fixed-size, little-endian first frame of every message. Plaintext, but it is the
// associated data of every sealed frame, so a changed byte fails authentication.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "cutlayer/wire/msg_type.h"

namespace cutlayer::wire {

enum EnvelopeFlags : std::uint32_t {
  kFlagSealed = 1u << 0,  // meta and tensor frames are AES-256-GCM sealed
};

struct Envelope {
  static constexpr std::uint32_t kMagic = 0x4c545543;  // "CUTL" read little-endian
  // 2: tensors over wire::kChunkBytes travel in several frames (1: one frame each).
  static constexpr std::uint16_t kVersion = 2;
  static constexpr std::size_t kBytes = 32;
  using Bytes = std::array<std::uint8_t, kBytes>;

  MsgType type = MsgType::kHeartbeat;
  std::uint32_t flags = 0;
  std::uint32_t frame_count = 0;  // envelope + meta + every tensor frame (chunks included)
  std::uint64_t session_id = 0;
  std::uint64_t sequence = 0;

  bool sealed() const { return (flags & kFlagSealed) != 0; }

  // Layout: magic u32 | version u16 | type u16 | flags u32 | frame_count u32 |
  //         session_id u64 | sequence u64
  Bytes serialize() const;
  // Checks size, magic, version, type and known flags; throws ProtocolError.
  static Envelope parse(const void* data, std::size_t n);
};

}  // namespace cutlayer::wire
