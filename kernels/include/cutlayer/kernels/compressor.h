// Gradient compressors with error feedback fused into their passes:
//   residual += grad; select from residual; the selected entries leave the residual.
// Invariant (exact, bitwise): densify(sent) + new residual == old residual + grad.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cutlayer/kernels/sparse_tensor.h"

namespace cutlayer::kernels {

struct CompressorOptions {
  bool error_feedback = true;
  // gaussiank, sampledk: full read-only correction passes at most (counts over candidates
  // are free and not limited); 0: no correction at all, the model's raw threshold.
  int max_corrections = 3;
  std::uint64_t seed = 0;   // randomk
  // topk, gaussiank, sampledk: remember each vector's last threshold (keyed by where it
  // lives) and collect candidates near it in the first pass, so that a call on a vector
  // whose scale moves little is one streaming pass. Off: every call stands alone.
  bool reuse_threshold = true;
};

// What a compression did, for accounting and tests.
struct CompressStats {
  std::int64_t target_k = 0;
  std::int64_t selected = 0;
  int passes = 0;          // streaming passes over the data (1: a warm call)
  double threshold = 0;    // threshold used (gaussiank, topk)
};

class Compressor {
 public:
  virtual ~Compressor() = default;
  virtual std::string name() const = 0;

  // Compresses the float32 1-D contiguous `grad` at `density` (0, 1]. With error
  // feedback `residual` (same shape, float32) is updated in place; without it, it may
  // be an undefined tensor and `grad` is not modified. Throws cutlayer::Error on bad
  // shapes or a non-finite gradient element (NaN/Inf are refused, never sent).
  virtual SparseTensor compress(const torch::Tensor& grad, torch::Tensor& residual,
                                double density) = 0;

  const CompressStats& last_stats() const { return stats_; }

  // What the compressor carries from one call to the next (topk, gaussiank, sampledk: the
  // remembered thresholds of the vectors within the buffer [base, base + bytes), each keyed
  // by its offset; randomk: its generator), as bytes. A checkpoint keeps them, so that a
  // resumed run selects exactly what the uninterrupted one would. restore_memory throws
  // Error for bytes this compressor did not save or that do not fit the buffer.
  virtual std::string save_memory(const void* base, std::size_t bytes) const;
  virtual void restore_memory(const void* base, std::size_t bytes, const std::string& saved);

 protected:
  CompressStats stats_;
};

// none | topk | gaussiank | sampledk | randomk. Throws ConfigError for an unknown name.
std::unique_ptr<Compressor> make_compressor(const std::string& name,
                                            const CompressorOptions& options = {});
std::vector<std::string> compressor_names();

// k for a vector of `numel` at `density`: at least 1 for non-empty vectors, at most numel.
std::int64_t target_k(std::int64_t numel, double density);

// Per-layer selection: compresses each [offset, offset+size) slice of the flat `grad`
// at `density` and returns one SparseTensor over the whole vector. Whole-model
// selection is simply compress() on the flat vector.
SparseTensor compress_per_layer(Compressor& c, const torch::Tensor& grad, torch::Tensor& residual,
                                const std::vector<std::int64_t>& layer_sizes, double density);

}  // namespace cutlayer::kernels
