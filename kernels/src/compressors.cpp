// The compressor factory, none, randomk and per-layer selection; topk, gaussiank and
// sampledk live in top_k.cpp and threshold_k.cpp.
#include <algorithm>
#include <cmath>
#include <random>

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
    if (ef) {
      std::vector<Moments> parts(chunk_count(n));
      for_chunks(n, [&](std::int64_t c, std::int64_t b, std::int64_t e) {
        parts[c] = detail::accumulate_moments(src.r + b, src.g + b, e - b);
      });
      if (!detail::combine(parts).finite()) refuse_non_finite(residual, ef);
    }
    std::vector<std::int64_t> pick;
    pick.reserve(static_cast<std::size_t>(k));
    if (n > 0) {
      std::uniform_int_distribution<std::int64_t> dist(0, n - 1);
      while (static_cast<std::int64_t>(pick.size()) < k) {
        while (static_cast<std::int64_t>(pick.size()) < k) pick.push_back(dist(rng_));
        std::sort(pick.begin(), pick.end());
        pick.erase(std::unique(pick.begin(), pick.end()), pick.end());
      }
    }
    ChunkLists sel(1);
    sel.idx[0] = std::move(pick);
    sel.val[0].reserve(sel.idx[0].size());
    for (auto i : sel.idx[0]) sel.val[0].push_back(src.x[i]);
    if (!ef)
      for (float v : sel.val[0])
        if (!std::isfinite(v)) refuse_non_finite(residual, ef);
    if (ef) zero_selected(src.r, sel);
    stats_ = {k, sel.size(), ef ? 1 : 0, 0};
    return assemble(n, sel);
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
    throw Error("compress_per_layer: layer sizes sum to " + std::to_string(total) +
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
