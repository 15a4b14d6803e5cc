// A sparse vector (kernels::SparseTensor) to message tensors and a wire::SparseLayout
// meta, and back. This is where kernels' codec (sparse_codec.h, which cannot see wire/)
// meets the wire's SparseLayout (which cannot see kernels/).
#pragma once

#include <torch/types.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "cutlayer/kernels/sparse_tensor.h"
#include "cutlayer/wire/messages.h"

namespace cutlayer::sync {

// A sparse vector ready to send, and the vector the receiver will decode from it.
struct Encoded {
  std::vector<torch::Tensor> tensors;  // the message's tensors: [indices, values], or [values]
  wire::SparseLayout layout;           // the message meta's description of them
  // from_tensors(layout, tensors, numel) bit for bit, computed without parsing the
  // tensors: the values as they travel (fp16-rounded with fp16), back in float32, and the
  // indices in index_dtype_for(numel). With error feedback, the input minus this (the
  // rounding error) belongs in the residual. May share storage with the input.
  kernels::SparseTensor sent;
};

// `s` (valid: indices ascending, unique and in range) with fp16 or fp32 values and
// delta-varint or raw indices. Does not check the values: a NaN, an infinity or (fp16)
// a value past 65504 is sent as it comes, and from_tensors refuses it.
Encoded encode(const kernels::SparseTensor& s, bool fp16, bool varint);

// encode() without the as-sent vector: the tensors, and their description in `layout`.
std::vector<torch::Tensor> to_tensors(const kernels::SparseTensor& s, bool fp16, bool varint,
                                      wire::SparseLayout& layout);

// Treats its input as untrusted: ProtocolError on anything malformed, on a NaN or
// infinite value, or when numel differs from `expect_numel`.
kernels::SparseTensor from_tensors(const wire::SparseLayout& layout,
                                   const std::vector<torch::Tensor>& tensors,
                                   std::int64_t expect_numel);

// A message's sparse-vector tensors when `trailing` other tensors follow them (SparseGrad's
// K-FAC factors): ProtocolError when there are fewer than `trailing`.
std::vector<torch::Tensor> leading(const std::vector<torch::Tensor>& tensors, std::size_t trailing, const char* what);
// The tensors after `layout`'s sparse vector ([indices, values] or [values]) in a message
// that starts with one (an Update's K-FAC tensors); ProtocolError when there are too few.
std::vector<torch::Tensor> after_sparse(const wire::SparseLayout& layout, const std::vector<torch::Tensor>& tensors,
                                        const char* what);

// Bytes of index and value data in those tensors (what the accounting counts).
std::size_t payload_bytes(const std::vector<torch::Tensor>& tensors);

}  // namespace cutlayer::sync
