// Datasets held by a data owner: IDX files (gzipped or not; Fashion-MNIST from Debian's
// dataset-fashion-mnist), CSV (feature columns + a label column), deterministic
// per-client shards (IID or label-skewed by a Dirichlet draw) and batch orders.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace cutlayer::data {

constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

struct Dataset {
  torch::Tensor x;  // float32, N x ... (images: N x 1 x H x W)
  torch::Tensor y;  // int64, N
  std::string source;
  std::int64_t size() const { return y.defined() ? y.size(0) : 0; }
  // The rows `indices` (in that order).
  Dataset subset(const std::vector<std::int64_t>& indices) const;
};

struct Normalization {
  double scale = 1.0 / 255.0;  // applied first (raw bytes -> [0, 1])
  double mean = 0.2860;        // then (x - mean) / std; Fashion-MNIST's figures
  double std = 0.3530;
};

// An IDX image file (magic 0x803, u8, N x H x W) and its label file (0x801, u8, N).
// Throws IoError/ConfigError naming the path for a missing, truncated or malformed file.
Dataset load_idx(const std::string& images, const std::string& labels, const Normalization& norm);
// The same with x left as the file's bytes (uint8, N x 1 x H x W): a client takes its
// shard before normalize(), so it never holds the whole set as float32.
Dataset load_idx_bytes(const std::string& images, const std::string& labels);
// x to float32, then (x * scale - mean) / std, in place.
void normalize(Dataset& d, const Normalization& norm);

// Fashion-MNIST's train (60,000) or test (10,000) split from `dir`.
Dataset load_fashion_mnist(const std::string& dir, bool train, const Normalization& norm);
Dataset load_fashion_mnist_bytes(const std::string& dir, bool train);  // x uint8, as load_idx_bytes

// CSV: one header line, numeric columns; `label_column` is the class (0-based integer).
Dataset load_csv(const std::string& path, const std::string& label_column, const Normalization& norm);

// Inputs to predict for, without labels (y undefined): a CSV (by its ".csv" name; every
// column a feature, except one named `label_column`, which is left out when present) or
// else an IDX image file (gzipped or not, as above). Normalized as training data.
Dataset load_inputs(const std::string& path, const std::string& label_column, const Normalization& norm);

// The indices of client `index` of `clients`: a seeded permutation cut into equal parts.
std::vector<std::int64_t> shard_iid(std::int64_t n, int clients, int index, std::uint64_t seed);

// Label-skewed: each class's examples are split over clients by proportions drawn from
// Dirichlet(alpha) (small alpha: few classes per client).
std::vector<std::int64_t> shard_dirichlet(const torch::Tensor& labels, int clients, int index,
                                          double alpha, std::uint64_t seed);

// The order of examples in `epoch`: a permutation of [0, n) from (seed, epoch).
std::vector<std::int64_t> epoch_order(std::int64_t n, std::uint64_t seed, int epoch);

}  // namespace cutlayer::data
