#include "cutlayer/data/source.h"

#include <torch/torch.h>

namespace cutlayer::data {

Split load_split(const DataOptions& o, std::int64_t test_samples, std::uint64_t seed) {
  // Images stay bytes until this client's rows are taken: a shard of 60,000 examples
  // never needs the whole set as float32.
  const bool idx = o.dataset == "fashion-mnist" || o.dataset == "idx";
  const auto load = [&](const std::string& images, const std::string& labels, bool train) {
    return o.dataset == "fashion-mnist" ? load_fashion_mnist_bytes(o.data_dir, train)
                                        : load_idx_bytes(images, labels);
  };
  Split d;
  if (idx) {
    d.train = load(o.train_images, o.train_labels, true);
    if (o.dataset == "fashion-mnist" || !o.test_images.empty()) d.test = load(o.test_images, o.test_labels, false);
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
  if (idx) {
    normalize(d.train, o.normalization);
    if (d.test.x.defined()) normalize(d.test, o.normalization);
  }
  return d;
}

}  // namespace cutlayer::data
