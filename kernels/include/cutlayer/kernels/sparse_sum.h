// The aggregator's inner loop: the weighted sum of many clients' sparse contributions.
// Two ways, benchmarked against each other (bench/compress_bench): a reusable dense
// accumulator (scatter-add, then gather the touched entries) and a k-way merge of the
// sorted index lists. Both add contributions in the order given, so both equal the
// dense sum of the same vectors bit for bit.
#pragma once

#include <cstdint>
#include <vector>

#include "cutlayer/kernels/sparse_tensor.h"

namespace cutlayer::kernels {

class DenseAccumulator {
 public:
  explicit DenseAccumulator(std::int64_t numel);
  // acc += weight * s (s sparse or dense, numel must match).
  void add(const SparseTensor& s, float weight);
  // The sum over the touched entries (ascending indices); resets for the next round
  // without touching untouched memory.
  SparseTensor take();
  std::int64_t numel() const { return numel_; }

 private:
  std::int64_t numel_;
  std::vector<float> acc_;
  std::vector<std::uint8_t> touched_;
  std::vector<std::int64_t> touched_list_;
};

// sum_c weights[c] * parts[c] by merging sorted index lists (all sparse, same numel).
SparseTensor merge_sum(const std::vector<SparseTensor>& parts, const std::vector<float>& weights);

}  // namespace cutlayer::kernels
