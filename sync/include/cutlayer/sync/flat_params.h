// The synced parameters (front, then head) as one flat float32 vector: the view that
// compressed gradients and aggregated updates index into, and its hash.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cutlayer/kernels/sparse_tensor.h"

namespace cutlayer::sync {

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

}  // namespace cutlayer::sync
