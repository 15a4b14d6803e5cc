// Where a run's examples come from and which of them this client holds: the data fields
// of the "train" object, and loading the client's training shard and test split.
#pragma once

#include <cstdint>
#include <string>

#include "cutlayer/data/dataset.h"

namespace cutlayer::data {

struct DataOptions {
  std::string dataset = "fashion-mnist";  // fashion-mnist | idx | csv
  std::string data_dir = kFashionMnistDir;
  std::string train_images, train_labels, test_images, test_labels;  // idx
  std::string train_csv, test_csv, label_column = "label";           // csv
  Normalization normalization;
  int clients = 1;            // shards of the training set
  int client_index = 0;       // this client's shard
  std::string shard = "iid";  // iid | dirichlet
  double dirichlet_alpha = 0.5;
};

struct Split {
  Dataset train;  // this client's shard
  Dataset test;   // the first `test_samples` test examples
};
// Shards are drawn from `seed`, so every client cuts the same permutation.
Split load_split(const DataOptions& o, std::int64_t test_samples, std::uint64_t seed);

}  // namespace cutlayer::data
