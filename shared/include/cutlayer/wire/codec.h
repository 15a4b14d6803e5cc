// What the codec accepts from a peer. A message travels as frames: frame 0 the envelope,
// frame 1 the meta (tensor descriptors + the type's struct), then each tensor's raw
// little-endian bytes in order. A tensor of at most kChunkBytes takes one frame (an empty
// tensor too); a larger one takes ceil(bytes / kChunkBytes) consecutive frames, every one
// full but the last. Everything a peer declares is checked against Limits before anything
// is allocated. The codec itself works on ZeroMQ frames and is internal to the transport
// (shared/src/frame_codec.h).
#pragma once

#include <cstddef>
#include <cstdint>

namespace cutlayer::wire {

// Tensor payload per frame. A protocol constant, not a setting: the receiver derives each
// tensor's frames from its declared shape, so both ends must agree (envelope version 2).
inline constexpr std::size_t kChunkBytes = std::size_t{1} << 20;

// Frames a tensor of `bytes` payload bytes takes: 1 up to kChunkBytes (0 included).
constexpr std::size_t chunk_count(std::size_t bytes) {
  return bytes <= kChunkBytes ? 1 : bytes / kChunkBytes + (bytes % kChunkBytes != 0 ? 1 : 0);
}

struct Limits {
  std::size_t max_meta_bytes = 64 * 1024;             // meta frame, before sealing
  // One tensor; also bounds its shape read with every 0 as 1 (times the dtype size), so
  // even an empty tensor's dimensions and strides stay small.
  std::size_t max_tensor_bytes = std::size_t{1} << 30;
  std::size_t max_message_bytes = std::size_t{2} << 30;  // all tensors together
  std::uint32_t max_tensors = 64;
  std::uint32_t max_dims = 8;

  // The most frames a message within these limits can have: envelope + meta + one per
  // tensor + one per full chunk of max_message_bytes (each tensor takes at most
  // 1 + bytes / kChunkBytes frames). The transports read at most this many parts.
  std::size_t max_frames() const {
    return 2 + std::size_t{max_tensors} + max_message_bytes / kChunkBytes;
  }
};

}  // namespace cutlayer::wire
