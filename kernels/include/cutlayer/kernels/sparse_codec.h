// Sparse tensors for the wire: int32 indices (int64 past 2^31 elements), fp32 or fp16
// values, and optionally delta + LEB128-varint coded indices (gaps are small at the
// densities used, so most take one byte instead of four). unpack() treats its input as
// untrusted: every count, index and byte is checked before it is used.
//
// The packed form is the tensors a message carries, [indices, values], or [values] alone
// for a dense vector; numel and the index coding travel beside them (the sync layer puts
// them in the message meta's wire::SparseLayout, which kernels/ cannot see).
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <vector>

#include "cutlayer/kernels/sparse_tensor.h"

namespace cutlayer::kernels {

enum class ValueType : std::uint8_t { kFloat32 = 0, kFloat16 = 1 };
enum class IndexCoding : std::uint8_t { kRaw = 0, kDeltaVarint = 1 };

struct PackOptions {
  ValueType values = ValueType::kFloat32;
  IndexCoding index = IndexCoding::kRaw;
};

// [indices, values] (indices int32/int64 raw, or uint8 delta-varint bytes), or [values]
// when `s` is dense; values float32 or float16. `s` must be valid (indices ascending,
// unique, in range); float32 values may be returned without a copy.
std::vector<torch::Tensor> pack(const SparseTensor& s, const PackOptions& options = {});

// The coding pack(s, options) used: a dense vector has no indices, so kRaw.
inline IndexCoding packed_coding(const SparseTensor& s, const PackOptions& options) {
  return s.dense() ? IndexCoding::kRaw : options.index;
}

// What unpack() returns for `packed` = pack(s, ...), bit for bit, without parsing it: the
// packed values back in float32 (fp16-rounded if they travel as fp16), s's indices in
// index_dtype_for(s.numel). May share storage with `s` and `packed`.
SparseTensor as_unpacked(const SparseTensor& s, const std::vector<torch::Tensor>& packed);

// The index part of pack() on its own: ascending, unique `indices` (any integer dtype) as
// delta + varint bytes (uint8, 1-D).
torch::Tensor encode_varint_indices(const torch::Tensor& indices);

// The index part of unpack() on its own: `nnz` indices in [0, numel), strictly ascending,
// from raw int32/int64 or varint bytes; in index_dtype_for(numel). Untrusted input:
// ProtocolError for anything malformed (checked before allocating).
torch::Tensor decode_indices(const torch::Tensor& indices, IndexCoding coding, std::int64_t nnz,
                             std::int64_t numel);

// The vector `packed` stands for: dense when it holds one tensor, sparse with two.
// Throws cutlayer::ProtocolError for anything malformed: numel over `max_numel`, a tensor
// count other than 1 or 2, counts that differ, indices out of range or not strictly
// ascending, truncated varints.
SparseTensor unpack(const std::vector<torch::Tensor>& packed, IndexCoding coding,
                    std::int64_t numel, std::int64_t max_numel);

}  // namespace cutlayer::kernels
