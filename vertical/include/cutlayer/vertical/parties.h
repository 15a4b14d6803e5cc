// Vertical split learning's data and model: K parties hold different features (columns)
// of the same people. An image is cut into K vertical strips (a table into K groups of
// columns), each party holds its strip for a random share of the people, identified by
// string IDs; private set intersection (psi.h) finds the people all of them hold, and each
// party's front turns its strip into features that the back joins (concatenated) and
// trains on. docs/vertical.md.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cutlayer/data/dataset.h"

namespace cutlayer::vertical {

// The columns [begin, end) of party k of `parties` over `width` features or image columns:
// contiguous, as equal as integers allow, together exactly [0, width).
struct Columns {
  std::int64_t begin = 0, end = 0;
  std::int64_t size() const { return end - begin; }
};
Columns columns_of(std::int64_t width, int parties, int k);

// Party k's features of x: images (N x C x H x W) by image column, tables (N x F) by
// feature column.
torch::Tensor strip(const torch::Tensor& x, int parties, int k);

// The rows a party holds and their IDs: a random `keep` share of the dataset's rows
// (drawn from `seed` and k, so each party holds a different share), in row order; IDs are
// `prefix` + the row number (a demo's stand-in for customer numbers or patient IDs).
struct Holding {
  std::vector<std::int64_t> rows;
  std::vector<std::string> ids;
};
Holding holding(std::int64_t rows, int k, double keep, std::uint64_t seed, const std::string& prefix);

// How the server joins the parties' cuts of one sample: concatenated along the features
// (the back sees every party's features apart), or summed (every party's cut has the same
// width; the back sees only their sum).
enum class JoinMode { kConcat, kSum };
// "concat" / "sum"; ConfigError naming `where` otherwise.
JoinMode join_mode(const std::string& name, const std::string& where);
const char* join_name(JoinMode m);

// The parties' cuts of a batch (each [B x f_k], in party order) joined as the back takes them.
torch::Tensor join_cuts(const std::vector<torch::Tensor>& cuts, JoinMode mode);
// Party k's share of the gradient of the joined cut: its columns (concat) or all of it (sum).
torch::Tensor cut_grad_of(const torch::Tensor& joined_grad, const std::vector<std::int64_t>& widths, int k,
                          JoinMode mode);

// Each party's front, one per strip, and the back over their joined features.
struct VerticalModel {
  std::vector<torch::nn::Sequential> fronts;
  torch::nn::Sequential back;
  JoinMode join = JoinMode::kConcat;
  std::vector<std::int64_t> widths;  // each front's output features per sample (its cut)
  std::int64_t joined_width() const;  // the back's input features
  // x: whole samples; each front sees only its party's strip.
  torch::Tensor forward(const torch::Tensor& x);
  std::vector<torch::Tensor> parameters() const;
  void train(bool on);
};

// The model for samples of `input_shape` cut among `parties`: for images (C x H x W) each
// front is "conv2d(C,32,5,1,2) relu maxpool(2) conv2d(32,64,5,1,2) relu maxpool(2)
// flatten" on its strip (fmnist-cnn's convolutions, padded so that narrow strips keep a
// column), for tables (F) "linear(f_k,64) relu"; the back is "linear(sum of the fronts'
// features,512) relu linear(512,classes)" (summed: the width of one). Built in order,
// fronts then back, after seeding LibTorch with `seed`, so that every party and the server
// build the same weights as the monolithic reference. ConfigError when a strip is too
// narrow (fewer than 4 image columns or no feature), or the cuts to sum differ in width.
VerticalModel build_vertical(const std::vector<std::int64_t>& input_shape, int parties, std::int64_t classes,
                             std::uint64_t seed, JoinMode join = JoinMode::kConcat);

}  // namespace cutlayer::vertical
