// Models from config: a small layer language for the client's front, the server's back
// and (U-shaped) the client's head, and named presets.
//   "conv2d(1,32,5) relu maxpool(2) flatten linear(1024,512) dropout(0.5)"
// Layers: conv2d(in,out,k[,stride[,padding]]) linear(in,out) relu tanh sigmoid
//         maxpool(k[,stride]) avgpool(k[,stride]) flatten dropout(p) batchnorm1d(n)
//         batchnorm2d(n) cutnorm
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace cutlayer::model {

torch::nn::Sequential build(const std::string& spec);

// The "cutnorm" layer: each sample's values normalised together (zero mean, unit variance),
// no affine scale. As a front's last layer (privacy.cut_norm) the front cannot out-scale
// the noise added to what it sends.
struct CutNormImpl : torch::nn::Module {
  torch::Tensor forward(const torch::Tensor& x) { return torch::layer_norm(x, x.sizes().slice(1), {}, {}, kEps); }
  static constexpr double kEps = 1e-5;
};
TORCH_MODULE(CutNorm);

struct SplitSpec {
  std::string name;
  std::string front;  // client
  std::string back;   // server (vanilla: through the logits; U-shaped: up to the head)
  std::string head;   // client, U-shaped only ("" in vanilla mode)
  std::vector<std::int64_t> input_shape;  // per sample, e.g. {1, 28, 28}
  // A user's own model (model/script_model.h): TorchScript files, in order, instead of the
  // layer specs above; a part without files or a spec is empty (a client needs no back).
  std::vector<std::string> front_files, back_files, head_files;
  bool scripted() const { return !front_files.empty(); }
};

// Known presets: fmnist-cnn and fmnist-deep-front (docs/split-training.md).
std::vector<std::string> preset_names();
SplitSpec preset(const std::string& name, bool u_shaped);

struct SplitModel {
  torch::nn::Sequential front, back, head;  // head empty in vanilla mode
  bool has_head() const { return !head->is_empty(); }
};

// Builds every part in the order front, back, head after seeding LibTorch's generator
// with `seed`, so that a split run and a monolithic run start from identical weights.
// TorchScript parts are loaded from their files (their weights are the files').
SplitModel build_split(const SplitSpec& spec, std::uint64_t seed);

// Throws ConfigError when `m` has no back (a TorchScript model whose config names no back
// file): `program` needs one ("the server", "cutlayer-train").
void require_back(const SplitModel& m, const std::string& program);

// The per-sample output shape of `net` for a per-sample input shape (a dry run).
std::vector<std::int64_t> output_shape(torch::nn::Sequential& net,
                                       const std::vector<std::int64_t>& input_shape);

std::string shape_string(const std::vector<std::int64_t>& shape);

}  // namespace cutlayer::model
