// Cut-layer activations and their gradients as message tensors, both ways, as a session's
// wire::CutCoding says (options.h reads it from the client config; the server learns it at
// Join). Values travel as float32, bfloat16, float16 or int8 with a float32 scale per
// sample; with top-k only `kept` activations of each sample travel ([indices, values]),
// and only their gradients come back.
//
// The decoders treat their input as untrusted: tensor counts, dtypes and shapes are checked
// before anything is allocated from them, indices must be in their sample's range and
// strictly ascending, and every decoded value must be finite and within max_abs
// (ProtocolError otherwise).
#pragma once

#include <torch/types.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "cutlayer/wire/messages.h"

namespace cutlayer::cut {

// What the client sends for a batch of activations, and what it keeps to read the reply.
struct Sent {
  std::vector<torch::Tensor> tensors;  // the message's cut tensors
  torch::Tensor cols;                  // top-k: [B x kept] int64, each row ascending; else undefined
  torch::Tensor as_received;           // what the server decodes: float32, z's shape
};

// `z`: float32 [B x cut shape]. `random`: the fraction of the kept slots drawn uniformly
// from the entries outside the top (randomized top-k; LibTorch's generator). fp16 values
// saturate at ±65504.
Sent encode_activations(const torch::Tensor& z, const wire::CutCoding& c, double random = 0);

// The number of tensors an Activations message's cut takes under `c` (labels follow them).
std::size_t activation_tensors(const wire::CutCoding& c);

struct Received {
  torch::Tensor z;     // float32 [B x cut shape], zero where nothing was sent
  torch::Tensor cols;  // top-k: [B x kept] int64; else undefined
};

// Server: the first activation_tensors(c) tensors of an Activations message.
Received decode_activations(const std::vector<torch::Tensor>& tensors, const wire::CutCoding& c,
                            const std::vector<std::int64_t>& cut_shape, std::int64_t max_batch, double max_abs);

// Server: dL/dz (float32, the received z's shape) as a CutGrad's tensors: the kept entries
// only under top-k ([B x kept]), else z's shape; int8 values followed by their scales.
std::vector<torch::Tensor> encode_gradient(const torch::Tensor& dz, const torch::Tensor& cols,
                                           const wire::CutCoding& c);

// Client: a CutGrad's tensors as dL/dz, float32 of shape `sizes` (z's), zero where nothing
// was sent. `cols`: the Sent's.
torch::Tensor decode_gradient(const std::vector<torch::Tensor>& tensors, const wire::CutCoding& c,
                              const torch::Tensor& cols, torch::IntArrayRef sizes, double max_abs);

// `z` (with its graph) made equal to s.as_received: the gradient flows straight through
// to the entries that were sent (value rounding passes it unchanged), none to the rest.
// NoPeek's dCor on what is sent uses it.
torch::Tensor straight_through(const torch::Tensor& z, const Sent& s);

// The cut without a wire (cutlayer-train): `back` is z as the server would decode it
// (straight_through) with its gradient rounded to c.grad_values as it would come back;
// `nopeek` the same values with the gradient passed unrounded, as the client's NoPeek term
// takes them (its gradient never travels).
struct ThroughCut {
  torch::Tensor back, nopeek;
};
ThroughCut through_cut(const torch::Tensor& z, const wire::CutCoding& c, double random = 0);

// Values as they arrive after travelling as `v` (float32 in, float32 out); rows are the
// first dimension (int8 scales are per row).
torch::Tensor round_values(const torch::Tensor& x, wire::CutValues v);

}  // namespace cutlayer::cut
