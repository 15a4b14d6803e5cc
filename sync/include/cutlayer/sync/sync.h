// What the aggregation of front-model gradients across clients shares between the client
// (compress, send, apply) and the server (sum, broadcast, keep a replica for joiners):
// the client's "sync" options, the flat view of the synced parameters, sparse vectors on
// the wire and the model snapshot a joiner starts from.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cutlayer/kernels/sparse_codec.h"
#include "cutlayer/kernels/sparse_tensor.h"
#include "cutlayer/wire/message.h"
#include "cutlayer/wire/messages.h"

namespace cutlayer::config {
class Object;
}

namespace cutlayer::sync {

// The client config's "sync" object: present (and "enabled" not false) means this
// client's front joins the server's aggregation instead of stepping on its own.
struct SyncOptions {
  bool enabled = false;
  std::string compressor = "gaussiank";  // none | topk | gaussiank | sampledk | randomk
  double density = 0.01;
  std::string density_schedule;  // per epoch, e.g. "0.25,0.0625,0.0156,0.004"; "" constant
  bool error_feedback = true;
  bool per_layer = false;        // select k per parameter tensor instead of model-wide
  bool fp16_values = false;
  bool varint_indices = true;    // delta + LEB128 indices (about 1 byte each at density 0.01)
  std::uint64_t seed = 0;        // randomk
};
// Reads a present "sync" object (enabled unless it says "enabled": false).
SyncOptions read_sync_options(config::Object& sync);

// The synced parameters (front, then head) as one flat float32 vector.
class FlatParams {
 public:
  FlatParams() = default;
  FlatParams(std::vector<torch::Tensor> params, std::vector<std::string> names);

  std::int64_t numel() const { return numel_; }
  const std::vector<torch::Tensor>& params() const { return params_; }
  const std::vector<std::string>& names() const { return names_; }
  std::vector<std::int64_t> layer_sizes() const;

  // The gradients as one flat vector (zeros for a parameter without one) into `out`.
  void gather_grads(torch::Tensor& out) const;
  // Sets every parameter's .grad to its slice of `update` (zeros where it has no entry).
  void set_grads(const kernels::SparseTensor& update);
  // A short hex digest of the parameter bytes: equal on two machines iff the fronts are.
  std::string hash() const;

 private:
  std::vector<torch::Tensor> params_;
  std::vector<std::string> names_;
  std::vector<std::int64_t> offsets_;
  std::int64_t numel_ = 0;
};

// Named parameters of the synced model, front first ("front.0.weight", "head.0.bias").
FlatParams flat_params(torch::nn::Sequential& front, torch::nn::Sequential* head);

// A sparse vector to message tensors and back. from_tensors treats its input as
// untrusted (ProtocolError on anything malformed, numel must equal `expect_numel`).
std::vector<torch::Tensor> to_tensors(const kernels::SparseTensor& s, bool fp16, bool varint,
                                      wire::SparseLayout& layout);
kernels::SparseTensor from_tensors(const wire::SparseLayout& layout,
                                   const std::vector<torch::Tensor>& tensors,
                                   std::int64_t expect_numel);
// Bytes of index and value data in those tensors (what the accounting counts).
std::size_t payload_bytes(const std::vector<torch::Tensor>& tensors);

// The snapshot a joiner starts from: parameters and the optimizer's state.
wire::Message make_snapshot(std::uint64_t round, std::uint32_t staleness, const FlatParams& p,
                            torch::optim::Optimizer& opt);
// Copies a snapshot into `p` and `opt` after checking names, shapes and dtypes; returns
// its round. Throws ProtocolError when it does not fit this model.
std::uint64_t load_snapshot(const wire::Message& msg, FlatParams& p, torch::optim::Optimizer& opt);

}  // namespace cutlayer::sync
