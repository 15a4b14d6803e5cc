#include "cutlayer/sync/flat_params.h"

#include "cutlayer/crypto/crypto.h"
#include "cutlayer/error.h"

namespace cutlayer::sync {

FlatParams::FlatParams(std::vector<torch::Tensor> params, std::vector<std::string> names)
    : params_(std::move(params)), names_(std::move(names)) {
  for (auto& p : params_) {
    if (p.scalar_type() != torch::kFloat32 || !p.is_contiguous())
      throw Error("synced parameters must be contiguous float32");
    offsets_.push_back(numel_);
    numel_ += p.numel();
  }
}

std::vector<std::int64_t> FlatParams::layer_sizes() const {
  std::vector<std::int64_t> out;
  for (auto& p : params_) out.push_back(p.numel());
  return out;
}

void FlatParams::gather_grads(torch::Tensor& out) const {
  if (!out.defined() || out.numel() != numel_) out = torch::empty({numel_}, torch::kFloat32);
  for (std::size_t i = 0; i < params_.size(); ++i) {
    auto slice = out.narrow(0, offsets_[i], params_[i].numel());
    const auto& g = params_[i].grad();
    if (g.defined())
      slice.copy_(g.reshape({-1}));
    else
      slice.zero_();
  }
}

void FlatParams::set_grads(const kernels::SparseTensor& update) {
  if (update.numel != numel_)
    throw ProtocolError("update of " + std::to_string(update.numel) + " elements for a model of " +
                        std::to_string(numel_));
  const auto dense = update.to_dense();
  for (std::size_t i = 0; i < params_.size(); ++i) {
    auto g = dense.narrow(0, offsets_[i], params_[i].numel()).view(params_[i].sizes());
    auto& grad = params_[i].mutable_grad();
    if (grad.defined())
      grad.copy_(g);
    else
      grad = g.clone();
  }
}

std::string FlatParams::hash() const {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> flat;
  for (auto& p : params_) flat.push_back(p.detach().reshape({-1}));
  auto all = torch::cat(flat).contiguous();
  const auto d = crypto::sha256(all.data_ptr(), all.numel() * sizeof(float));
  return crypto::to_hex(d.data(), 8);
}

FlatParams flat_params(torch::nn::Sequential& front, torch::nn::Sequential* head) {
  std::vector<torch::Tensor> params;
  std::vector<std::string> names;
  for (auto& np : front->named_parameters()) {
    params.push_back(np.value());
    names.push_back("front." + np.key());
  }
  if (head && *head)
    for (auto& np : (*head)->named_parameters()) {
      params.push_back(np.value());
      names.push_back("head." + np.key());
    }
  return FlatParams(std::move(params), std::move(names));
}

}  // namespace cutlayer::sync
