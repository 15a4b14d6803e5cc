// The compressor factory, none, randomk and per-layer selection; topk, gaussiank and
// sampledk live in top_k.cpp and threshold_k.cpp.
#include <algorithm>
#include <cmath>
#include <random>
#include <sstream>

#include "compress_common.h"
#include "cutlayer/error.h"
#include "cutlayer/kernels/compressor.h"

namespace cutlayer::kernels {
namespace {

using namespace detail;

// ---- none -------------------------------------------------------------------------
class NoneCompressor final : public Compressor {
 public:
  explicit NoneCompressor(const CompressorOptions& o) : opts_(o) {}
  std::string name() const override { return "none"; }
  SparseTensor compress(const torch::Tensor& grad, torch::Tensor& residual, double density) override {
    check_inputs(grad, residual, opts_.error_feedback, density);
    SparseTensor out;
    out.numel = grad.numel();
    if (opts_.error_feedback) {
      residual.add_(grad);
      out.values = residual.clone();
      residual.zero_();
    } else {
      out.values = grad.clone();
    }
    if (!std::isfinite(out.values.sum().item<double>())) refuse_non_finite(residual, opts_.error_feedback);
    stats_ = {out.numel, out.numel, 1, 0};
    return out;
  }

 private:
  CompressorOptions opts_;
};

// ---- randomk ------------------------------------------------------------------------
// The baseline the GaussianK paper argues against: k uniformly random positions.

// Sorts positions in [0, n) in O(m): a counting sort into m buckets by value (uniform
// draws put about one in each), then an insertion sort that only meets the few
// inversions left inside buckets.
void sort_positions(std::vector<std::int64_t>& v, std::int64_t n) {
  const std::size_t m = v.size();
  if (m < 4096) {
    std::sort(v.begin(), v.end());
    return;
  }
  const double scale = static_cast<double>(m) / static_cast<double>(n);
  auto bucket = [&](std::int64_t p) {
    return std::min(m - 1, static_cast<std::size_t>(p * scale));
  };
  std::vector<std::size_t> start(m + 1, 0);
  for (auto p : v) ++start[bucket(p) + 1];
  for (std::size_t b = 0; b < m; ++b) start[b + 1] += start[b];
  std::vector<std::int64_t> out(m);
  for (auto p : v) out[start[bucket(p)]++] = p;
  for (std::size_t i = 1; i < m; ++i) {
    const std::int64_t x = out[i];
    std::size_t j = i;
    for (; j > 0 && out[j - 1] > x; --j) out[j] = out[j - 1];
    out[j] = x;
  }
  v.swap(out);
}

// k distinct positions of [0, n), ascending: draws, sorted, duplicates dropped, topped up.
std::vector<std::int64_t> sample_positions(std::int64_t n, std::int64_t k, std::mt19937_64& rng) {
  std::vector<std::int64_t> pick;
  if (k >= n) {  // everything (drawing would be a coupon collector's wait)
    pick.resize(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) pick[i] = i;
    return pick;
  }
  pick.reserve(static_cast<std::size_t>(k));
  std::uniform_int_distribution<std::int64_t> dist(0, n - 1);
  while (static_cast<std::int64_t>(pick.size()) < k) {
    while (static_cast<std::int64_t>(pick.size()) < k) pick.push_back(dist(rng));
    sort_positions(pick, n);
    pick.erase(std::unique(pick.begin(), pick.end()), pick.end());
  }
  return pick;
}

// The positions are drawn first (they do not depend on the data), so the gather and the
// zeroing ride on the error-feedback pass, chunk by chunk, while the chunk is in cache.
class RandomK final : public Compressor {
 public:
  explicit RandomK(const CompressorOptions& o) : opts_(o), rng_(o.seed) {}
  std::string name() const override { return "randomk"; }
  SparseTensor compress(const torch::Tensor& grad, torch::Tensor& residual, double density) override {
    const bool ef = opts_.error_feedback;
    check_inputs(grad, residual, ef, density);
    if (grad.is_cuda()) throw Error("randomk runs on CPU tensors only");
    const std::int64_t n = grad.numel();
    const std::int64_t k = target_k(n, density);
    const Source src = make_source(grad, residual, ef);
    const std::vector<std::int64_t> pick =
        n > 0 ? sample_positions(n, k, rng_) : std::vector<std::int64_t>{};
    const std::int64_t chunks = chunk_count(n);
    std::vector<std::size_t> first(chunks + 1,
                                   pick.size());  // pick[first[c]..first[c+1]) in chunk c
    for (std::int64_t c = 0, j = 0; c < chunks; ++c) {
      while (j < static_cast<std::int64_t>(pick.size()) && pick[j] < c * kGrain) ++j;
      first[c] = static_cast<std::size_t>(j);
    }
    ChunkLists sel(chunks);
    std::vector<Moments> parts(ef ? chunks : 0);
    for_chunks(n, [&](std::int64_t c, std::int64_t b, std::int64_t e) {
      if (ef) parts[c] = accumulate_moments(src.r + b, src.g + b, e - b);
      auto& idx = sel.idx[c];
      auto& val = sel.val[c];
      idx.assign(pick.begin() + first[c], pick.begin() + first[c + 1]);
      val.reserve(idx.size());
      for (auto i : idx) {
        val.push_back(src.x[i]);
        if (ef) src.r[i] = 0.f;
      }
    });
    if (ef) {
      if (!combine(parts).finite()) refuse_non_finite(residual, ef);
    } else {
      for (const auto& v : sel.val)
        for (float x : v)
          if (!std::isfinite(x)) refuse_non_finite(residual, ef);
    }
    stats_ = {k, sel.size(), ef ? 1 : 0, 0};
    return assemble(n, sel);
  }

  std::string save_memory(const void*, std::size_t) const override {
    std::ostringstream out;
    out << rng_;
    return out.str();
  }
  void restore_memory(const void*, std::size_t, const std::string& bytes) override {
    if (bytes.size() > 16384) throw Error("a randomk memory of " + std::to_string(bytes.size()) + " bytes");
    std::istringstream in(bytes);
    std::mt19937_64 rng;
    in >> rng;
    if (!in) throw Error("randomk: the saved generator state does not parse");
    rng_ = rng;
  }

 private:
  CompressorOptions opts_;
  std::mt19937_64 rng_;
};

}  // namespace

std::int64_t target_k(std::int64_t numel, double density) {
  if (numel <= 0) return 0;
  const auto k = static_cast<std::int64_t>(std::ceil(density * static_cast<double>(numel)));
  return std::clamp<std::int64_t>(k, 1, numel);
}

std::string Compressor::save_memory(const void*, std::size_t) const { return {}; }

void Compressor::restore_memory(const void*, std::size_t, const std::string& bytes) {
  if (!bytes.empty()) throw Error(name() + " keeps no memory between calls, yet " + std::to_string(bytes.size()) +
                                  " bytes of one were given");
}

std::vector<std::string> compressor_names() {
  return {"none", "topk", "gaussiank", "sampledk", "randomk"};
}

std::unique_ptr<Compressor> make_compressor(const std::string& name, const CompressorOptions& o) {
  if (name == "none") return std::make_unique<NoneCompressor>(o);
  if (name == "topk") return make_top_k(o);
  if (name == "gaussiank") return make_threshold_k(o, false);
  if (name == "sampledk") return make_threshold_k(o, true);
  if (name == "randomk") return std::make_unique<RandomK>(o);
  std::string known;
  for (const auto& n : compressor_names()) known += (known.empty() ? "" : "|") + n;
  throw ConfigError("unknown compressor '" + name + "' (known: " + known + ")");
}

SparseTensor compress_per_layer(Compressor& c, const torch::Tensor& grad, torch::Tensor& residual,
                                const std::vector<std::int64_t>& layer_sizes, double density) {
  std::int64_t total = 0;
  for (auto s : layer_sizes) total += s;
  if (total != grad.numel())
    throw InternalError("compress_per_layer: layer sizes sum to " + std::to_string(total) +
                ", the gradient has " + std::to_string(grad.numel()) + " elements");
  std::vector<torch::Tensor> idx, val;
  std::int64_t offset = 0;
  for (auto s : layer_sizes) {
    auto g = grad.narrow(0, offset, s);
    torch::Tensor r = residual.defined() ? residual.narrow(0, offset, s) : torch::Tensor();
    SparseTensor part = c.compress(g, r, density);
    if (part.dense()) part.indices = torch::arange(s, torch::kInt64);
    idx.push_back(part.indices.to(torch::kInt64) + offset);
    val.push_back(part.values);
    offset += s;
  }
  SparseTensor out;
  out.numel = grad.numel();
  out.indices = torch::cat(idx).to(index_dtype_for(out.numel));
  out.values = torch::cat(val);
  return out;
}

torch::Tensor SparseTensor::to_dense() const {
  if (dense()) return values.to(torch::kFloat32).clone();
  auto d = torch::zeros({numel}, values.options().dtype(torch::kFloat32));
  if (nnz() > 0) d.index_put_({indices.to(torch::kInt64)}, values.to(torch::kFloat32));
  return d;
}

}  // namespace cutlayer::kernels
