// Sparse tensors for the wire: int32 indices (int64 past 2^31 elements), fp32 or fp16
// values, and optionally delta + LEB128-varint coded indices (gaps are small at the
// densities used, so most take one byte instead of four). unpack() treats its input as
// untrusted: every count, index and byte is checked before it is used.
#pragma once

#include <torch/types.h>

#include <cstdint>

#include "cutlayer/kernels/sparse_tensor.h"

namespace cutlayer::kernels {

enum class ValueType : std::uint8_t { kFloat32 = 0, kFloat16 = 1 };
enum class IndexCoding : std::uint8_t { kRaw = 0, kDeltaVarint = 1 };

struct PackOptions {
  ValueType values = ValueType::kFloat32;
  IndexCoding index = IndexCoding::kRaw;
};

struct PackedSparse {
  std::int64_t numel = 0;
  IndexCoding coding = IndexCoding::kRaw;
  torch::Tensor indices;  // int32/int64 (raw), uint8 bytes (delta-varint), undefined (dense)
  torch::Tensor values;   // float32 or float16

  std::size_t bytes() const;  // what travels: index and value bytes
};

PackedSparse pack(const SparseTensor& s, const PackOptions& options = {});

// Throws cutlayer::ProtocolError for anything malformed: numel over `max_numel`, counts
// that differ, indices out of range or not strictly ascending, truncated varints.
SparseTensor unpack(const PackedSparse& p, std::int64_t max_numel);

}  // namespace cutlayer::kernels
