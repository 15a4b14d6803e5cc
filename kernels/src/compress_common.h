// Internal: what the CPU compressors share — chunked parallel loops, argument checks,
// candidate sets, the memory of the last threshold per vector, assembling the result.
#pragma once

#include <ATen/Parallel.h>
#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <unordered_map>
#include <vector>

#include "cutlayer/kernels/compressor.h"
#include "stream_ops.h"

namespace cutlayer::kernels::detail {

inline std::int64_t chunk_count(std::int64_t n) { return (n + kGrain - 1) / kGrain; }

// Runs fn(chunk, begin, end) over the fixed chunking of [0, n) in parallel.
template <class Fn>
void for_chunks(std::int64_t n, Fn&& fn) {
  const std::int64_t chunks = chunk_count(n);
  at::parallel_for(0, chunks, 1, [&](std::int64_t c0, std::int64_t c1) {
    for (std::int64_t c = c0; c < c1; ++c) {
      const std::int64_t b = c * kGrain;
      fn(c, b, std::min(n, b + kGrain));
    }
  });
}

void check_inputs(const torch::Tensor& grad, const torch::Tensor& residual, bool ef,
                  double density);

// The step is refused; with error feedback the residual, which absorbed the bad gradient,
// is reset (what it carried was unsent gradient, now dropped).
[[noreturn]] void refuse_non_finite(torch::Tensor& residual, bool ef);

// The source to select from: with EF the residual (after += grad), else grad itself.
struct Source {
  float* r = nullptr;        // residual (EF) or nullptr
  const float* g = nullptr;  // gradient
  const float* x = nullptr;  // what selection reads
};
Source make_source(const torch::Tensor& grad, torch::Tensor& residual, bool ef);

// Per-chunk index/value lists, each ascending; concatenated in chunk order they are the
// ascending selection.
struct ChunkLists {
  std::vector<std::vector<std::int64_t>> idx;
  std::vector<std::vector<float>> val;
  ChunkLists() = default;
  explicit ChunkLists(std::int64_t chunks) : idx(chunks), val(chunks) {}
  std::int64_t size() const;
  // `chunks` empty lists, keeping the room the lists had (no allocation, no page faults
  // when a compressor's scratch is reused from call to call).
  void reset(std::int64_t chunks);
};

// The elements above `bound`. `complete` when none was left out (the budget held), so
// that counting or selecting at any t >= bound can read these instead of the vector.
struct Candidates {
  float bound = INFINITY;
  bool complete = true;
  ChunkLists lists;
  bool covers(double t) const { return complete && static_cast<float>(t) >= bound; }
  std::int64_t count_above(float t) const;
  // The candidates above t into `out` (reset first).
  void select_above(float t, ChunkLists& out) const;
  // The value of the j-th largest |x| (j >= 1) among the candidates; j <= size.
  float kth_largest_abs(std::int64_t j) const;
};

// One pass over src (with EF: r += g; src.r null: read-only), its moments, and candidates
// above `bound`, at most `cap` of them (more: `complete` false). `out` is overwritten; its
// lists' room is reused. Returns the moments;
// *above gets the exact count above `bound`. `per_chunk(chunk, b, e)`, when given, runs
// on each chunk right after it was scanned (its data still in cache).
Moments scan(const Source& src, std::int64_t n, float bound, std::int64_t cap, Candidates& out,
             std::int64_t* above,
             const std::function<void(std::int64_t, std::int64_t, std::int64_t)>& per_chunk = {});

// The same source, read only (selection and counting passes after the first).
inline Source read_only(const Source& s) { return Source{nullptr, nullptr, s.x}; }

// The candidate cap for k: room for a generous margin under the threshold (the margin
// narrows once more than 4k are kept), and a floor so that small k is never starved.
inline std::int64_t candidate_cap(std::int64_t k) { return std::max<std::int64_t>(8 * k, 65536); }

// What a compressor remembers of its last call on one vector (keyed by the address it
// selects from, its length and the density): the threshold it accepted, the correction
// its model needed, and how far below that threshold the next call collects candidates.
// A guess from a stale or foreign entry costs passes, never a wrong count.
struct ThresholdMemory {
  double threshold = 0;  // 0: nothing remembered yet
  double trend = 0;      // smoothed log(threshold / the one before): a residual that grows
  double factor = 1;     // gaussiank / sampledk: where the count is k / the model's estimate
  double gap = 0.1;      // candidates above (1 - gap) * the predicted threshold
  float bound() const {
    return threshold > 0 ? static_cast<float>((1.0 - gap) * threshold * std::exp(trend)) : INFINITY;
  }
  // After a call whose first pass collected `count` candidates above bound() (`complete`:
  // the cap held) and accepted `accepted` (with k wanted).
  void learn(double accepted, bool complete, std::int64_t count, std::int64_t k);
};

class ThresholdMemories {
 public:
  // The memory of the vector at `where` (created blank on first use); with `reuse` off a
  // blank one each call, so that every call stands alone.
  ThresholdMemory& recall(bool reuse, const void* where, std::int64_t numel, double density);
  // Every memory of a vector within [base, base + bytes), its place as an offset
  // (Compressor::save_memory); restore checks every entry against that buffer.
  std::string save(const void* base, std::size_t bytes) const;
  void restore(const void* base, std::size_t bytes, const std::string& saved);

 private:
  ThresholdMemory blank_;
  struct Key {
    const void* where;
    std::int64_t numel;
    double density;
    bool operator==(const Key& o) const {
      return where == o.where && numel == o.numel && density == o.density;
    }
  };
  struct Hash {
    std::size_t operator()(const Key& k) const {
      return std::hash<const void*>()(k.where) ^ (std::hash<std::int64_t>()(k.numel) * 31) ^
             (std::hash<double>()(k.density) * 131);
    }
  };
  std::unordered_map<Key, ThresholdMemory, Hash> entries_;
};

// Concatenates per-chunk selections (already ascending) into a SparseTensor.
SparseTensor assemble(std::int64_t numel, const ChunkLists& sel);
SparseTensor empty_sparse(std::int64_t numel);
void zero_selected(float* r, const ChunkLists& sel);

std::unique_ptr<Compressor> make_threshold_k(const CompressorOptions& o, bool sampled);
std::unique_ptr<Compressor> make_top_k(const CompressorOptions& o);

}  // namespace cutlayer::kernels::detail
