// What the codec accepts from a peer. A message travels as frames: frame 0 the envelope,
// frame 1 the meta (tensor descriptors + the type's struct), frames 2.. one raw
// little-endian tensor each. Everything a peer declares is checked against Limits before
// anything is allocated. The codec itself works on ZeroMQ frames and is internal to the
// transport (shared/src/frame_codec.h).
#pragma once

#include <cstddef>
#include <cstdint>

namespace cutlayer::wire {

struct Limits {
  std::size_t max_meta_bytes = 64 * 1024;             // meta frame, before sealing
  std::size_t max_tensor_bytes = std::size_t{1} << 30;  // one tensor frame
  std::size_t max_message_bytes = std::size_t{2} << 30;  // all tensor frames together
  std::uint32_t max_tensors = 64;
  std::uint32_t max_dims = 8;
};

}  // namespace cutlayer::wire
