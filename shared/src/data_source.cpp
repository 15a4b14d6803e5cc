#include "cutlayer/data/source.h"

#include <torch/torch.h>

namespace cutlayer::data {

Split load_split(const DataOptions& o, std::int64_t test_samples, std::uint64_t seed) {
  Split d;
  if (o.dataset == "fashion-mnist") {
    d.train = load_fashion_mnist(o.data_dir, true, o.normalization);
    d.test = load_fashion_mnist(o.data_dir, false, o.normalization);
  } else if (o.dataset == "idx") {
    d.train = load_idx(o.train_images, o.train_labels, o.normalization);
    if (!o.test_images.empty()) d.test = load_idx(o.test_images, o.test_labels, o.normalization);
  } else {
    d.train = load_csv(o.train_csv, o.label_column, o.normalization);
    if (!o.test_csv.empty()) d.test = load_csv(o.test_csv, o.label_column, o.normalization);
  }
  const auto shard = o.shard == "dirichlet"
                         ? shard_dirichlet(d.train.y, o.clients, o.client_index, o.dirichlet_alpha, seed)
                         : shard_iid(d.train.size(), o.clients, o.client_index, seed);
  if (o.clients > 1 || o.shard == "dirichlet") d.train = d.train.subset(shard);
  if (d.test.size() > test_samples) {
    std::vector<std::int64_t> first(static_cast<std::size_t>(test_samples));
    for (std::int64_t i = 0; i < test_samples; ++i) first[i] = i;
    d.test = d.test.subset(first);
  }
  return d;
}

}  // namespace cutlayer::data
