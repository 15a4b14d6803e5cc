// A sparse view of a flat gradient: `numel` positions, `indices` (int32 below 2^31
// elements, int64 beyond; ascending) and their `values`.
#pragma once

#include <torch/types.h>

#include <cstdint>

namespace cutlayer::kernels {

struct SparseTensor {
  // 1-D int32 or int64, ascending, unique. Undefined means dense: `values` then holds
  // all `numel` elements (the "none" compressor), so a dense baseline pays no indices.
  torch::Tensor indices;
  torch::Tensor values;   // 1-D float32, same length (sparse_codec.h packs them for the wire)
  std::int64_t numel = 0;

  bool dense() const { return !indices.defined(); }
  std::int64_t nnz() const { return values.defined() ? values.numel() : 0; }
  // The dense float32 vector this stands for.
  torch::Tensor to_dense() const;
};

// The index dtype for a vector of `numel` elements.
inline torch::ScalarType index_dtype_for(std::int64_t numel) {
  return numel <= (std::int64_t{1} << 31) ? torch::kInt32 : torch::kInt64;
}

}  // namespace cutlayer::kernels
