#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <functional>

#include "cutlayer/error.h"
#include "cutlayer/kernels/compressor.h"
#include "cutlayer/kernels/cuda.h"
#include "normal_quantile.h"
#include "stream_ops.h"

namespace cutlayer::kernels {
namespace {

using detail::kGrain;
using detail::Moments;

std::int64_t chunk_count(std::int64_t n) { return (n + kGrain - 1) / kGrain; }

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
                  double density) {
  if (!grad.defined() || grad.dim() != 1 || grad.scalar_type() != torch::kFloat32 ||
      !grad.is_contiguous())
    throw Error("compress: the gradient must be a contiguous 1-D float32 tensor");
  if (!(density > 0.0 && density <= 1.0))
    throw Error("compress: density must be in (0, 1], got " + std::to_string(density));
  if (ef && (!residual.defined() || residual.sizes() != grad.sizes() ||
             residual.scalar_type() != torch::kFloat32 || !residual.is_contiguous() ||
             residual.device() != grad.device()))
    throw Error("compress: the error-feedback residual must be a contiguous float32 tensor "
                "shaped like the gradient, on its device");
}

[[noreturn]] void refuse_non_finite(torch::Tensor& residual, bool ef) {
  // The step is refused. A residual that absorbed the bad gradient would poison every
  // later step, so it is reset: what it carried was unsent gradient, now dropped.
  if (ef) residual.zero_();
  throw Error("compress: the gradient holds NaN or Inf; step refused (error-feedback "
              "residual reset). Lower the learning rate or clip gradients.");
}

// Concatenates per-chunk selections (already ascending) into a SparseTensor.
SparseTensor assemble(std::int64_t numel, std::vector<std::vector<std::int64_t>>& idx,
                      std::vector<std::vector<float>>& val) {
  std::int64_t total = 0;
  for (const auto& v : idx) total += static_cast<std::int64_t>(v.size());
  SparseTensor out;
  out.numel = numel;
  out.indices = torch::empty({total}, torch::TensorOptions().dtype(index_dtype_for(numel)));
  out.values = torch::empty({total}, torch::kFloat32);
  float* pv = out.values.data_ptr<float>();
  std::int64_t at = 0;
  const bool narrow = out.indices.scalar_type() == torch::kInt32;
  for (std::size_t c = 0; c < idx.size(); ++c) {
    const std::size_t m = idx[c].size();
    if (narrow) {
      auto* pi = out.indices.data_ptr<std::int32_t>() + at;
      for (std::size_t j = 0; j < m; ++j) pi[j] = static_cast<std::int32_t>(idx[c][j]);
    } else {
      std::memcpy(out.indices.data_ptr<std::int64_t>() + at, idx[c].data(), m * 8);
    }
    std::memcpy(pv + at, val[c].data(), m * 4);
    at += static_cast<std::int64_t>(m);
  }
  return out;
}

void zero_selected(float* r, const std::vector<std::vector<std::int64_t>>& idx) {
  for (const auto& v : idx)
    for (auto i : v) r[i] = 0.f;
}

// The source to select from: with EF the residual (after += grad), else grad itself.
struct Source {
  float* r = nullptr;        // residual (EF) or nullptr
  const float* g = nullptr;  // gradient
  const float* x = nullptr;  // what selection reads
};

Source make_source(const torch::Tensor& grad, torch::Tensor& residual, bool ef) {
  Source s;
  s.g = grad.data_ptr<float>();
  if (ef) {
    s.r = residual.data_ptr<float>();
    s.x = s.r;
  } else {
    s.x = s.g;
  }
  return s;
}

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

// ---- gaussiank and sampledk ----------------------------------------------------------
// One pass fused with error feedback (r += g, plus what the threshold needs), then one
// selection pass into per-chunk buffers that leaves r alone; when the count lands in
// [2k/3, 4k/3] the selected entries leave r by sparse writes. Otherwise corrections run
// as read-only count passes (x0.5 when too few, x1.5 when too many, as in the paper, then
// bisection once the band is bracketed: the fixed steps alone can oscillate past it,
// since a residual whose tails were just sent is far from Gaussian), and one last
// selection pass uses the threshold whose count came closest to k.
//   gaussiank (Shi et al. 2019): t = mu + |Phi^-1(rho/2)| sigma from the moments.
//   sampledk (as in DGC): t = the (1 - rho) quantile of |x| over a strided sample taken
//     in the same first pass: any distribution, so corrections are rarely needed.
class ThresholdK : public Compressor {
 public:
  ThresholdK(const CompressorOptions& o, bool sampled) : opts_(o), sampled_(sampled) {}
  std::string name() const override { return sampled_ ? "sampledk" : "gaussiank"; }

  SparseTensor compress(const torch::Tensor& grad, torch::Tensor& residual, double density) override {
    const bool ef = opts_.error_feedback;
    check_inputs(grad, residual, ef, density);
    if (grad.is_cuda()) {
      if (sampled_) throw Error("sampledk runs on CPU tensors only; use gaussiank on CUDA");
      return cuda_gaussiank(grad, residual, ef, density, opts_.max_corrections, stats_);
    }
    const std::int64_t n = grad.numel();
    const std::int64_t k = target_k(n, density);
    stats_ = {k, 0, 0, 0};
    if (n == 0) return empty(n);
    const Source src = make_source(grad, residual, ef);
    const std::int64_t chunks = chunk_count(n);

    // Pass 1: error feedback, moments, and (sampledk) a strided sample of |x|.
    // ~256 sampled elements above the threshold (count error ~6%), but at most 1/16 of
    // the vector so that small vectors do not pay a large nth_element.
    const std::int64_t sample_target = std::clamp<std::int64_t>(
        static_cast<std::int64_t>(256.0 / density), 1, std::max<std::int64_t>(n / 16, 16384));
    const std::int64_t stride = std::max<std::int64_t>(1, n / sample_target);
    std::vector<Moments> parts(chunks);
    std::vector<std::vector<float>> samples(sampled_ ? chunks : 0);
    for_chunks(n, [&](std::int64_t c, std::int64_t b, std::int64_t e) {
      parts[c] = detail::accumulate_moments(src.r ? src.r + b : const_cast<float*>(src.x) + b,
                                           src.r ? src.g + b : nullptr, e - b);
      if (sampled_) detail::sample_abs(src.x + b, e - b, (stride - b % stride) % stride, stride, samples[c]);
    });
    stats_.passes = 1;
    const Moments m = detail::combine(parts);
    if (!m.finite()) refuse_non_finite(residual, ef);
    const double mean = m.sum / static_cast<double>(n);
    const double sd = std::sqrt(std::max(0.0, m.sumsq / static_cast<double>(n) - mean * mean));

    double t;
    if (density >= 1.0) {
      t = -1.0;  // everything
    } else if (sd == 0.0) {
      // A constant vector: nothing tells its elements apart, so a non-zero one is sent
      // whole (and an all-zero one not at all).
      t = std::nextafter(static_cast<float>(std::abs(mean)), 0.f);
    } else if (sampled_) {
      std::vector<float> all;
      for (auto& v : samples) all.insert(all.end(), v.begin(), v.end());
      const auto above = std::clamp<std::int64_t>(
          static_cast<std::int64_t>(std::ceil(density * all.size())), 1, all.size());
      std::nth_element(all.begin(), all.begin() + (above - 1), all.end(), std::greater<float>());
      // Just below the sample's k-th largest, so that it is itself selected.
      t = std::nextafter(all[above - 1], 0.f);
    } else {
      t = mean + std::abs(normal_quantile(density / 2.0)) * sd;
    }

    std::vector<std::vector<std::int64_t>> idx(chunks);
    std::vector<std::vector<float>> val(chunks);
    auto select = [&](double thr) {
      std::vector<std::int64_t> counts(chunks, 0);
      const float tf = static_cast<float>(thr);
      for (auto& v : idx) v.clear();
      for (auto& v : val) v.clear();
      for_chunks(n, [&](std::int64_t c, std::int64_t b, std::int64_t e) {
        counts[c] = detail::select_above(src.x + b, e - b, tf, b, idx[c], val[c]);
      });
      ++stats_.passes;
      std::int64_t total = 0;
      for (auto c : counts) total += c;
      return total;
    };
    auto count = [&](double thr) {
      std::vector<std::int64_t> counts(chunks, 0);
      const float tf = static_cast<float>(thr);
      for_chunks(n, [&](std::int64_t c, std::int64_t b, std::int64_t e) {
        counts[c] = detail::count_above(src.x + b, e - b, tf);
      });
      ++stats_.passes;
      std::int64_t total = 0;
      for (auto c : counts) total += c;
      return total;
    };

    const double lo = 2.0 * k / 3.0, hi = 4.0 * k / 3.0;
    auto miss = [&](std::int64_t c) { return std::abs(std::log((c + 1.0) / (k + 1.0))); };
    const std::int64_t first = select(t);
    std::int64_t selected = first;
    const bool in_band = first >= lo && first <= hi;
    if (!in_band && sd > 0.0 && density < 1.0 && opts_.max_corrections > 0) {
      double t_few = -1, t_many = -1, best_t = t, tc = t;
      std::int64_t c = first, best_c = first;
      for (int attempt = 0; attempt < opts_.max_corrections && !(c >= lo && c <= hi); ++attempt) {
        if (c < lo) t_few = tc;
        else t_many = tc;
        tc = (t_few >= 0 && t_many >= 0) ? 0.5 * (t_few + t_many) : tc * (c < lo ? 0.5 : 1.5);
        c = count(tc);
        if (miss(c) < miss(best_c)) {
          best_c = c;
          best_t = tc;
        }
      }
      if (best_t != t) {
        t = best_t;
        selected = select(t);
      }
    }
    if (ef) zero_selected(src.r, idx);
    stats_.selected = selected;
    stats_.threshold = t;
    return assemble(n, idx, val);
  }

 private:
  static SparseTensor empty(std::int64_t n) {
    SparseTensor s;
    s.numel = n;
    s.indices = torch::empty({0}, torch::TensorOptions().dtype(index_dtype_for(n)));
    s.values = torch::empty({0}, torch::kFloat32);
    return s;
  }
  CompressorOptions opts_;
  bool sampled_;
};

// ---- topk (exact) -------------------------------------------------------------------
// Radix select on the bits of |x|: pass 1 (fused with EF) builds a 2048-bin histogram of
// the top bits; the bin holding the k-th largest is resolved exactly with nth_element on
// its few members during pass 2, which also collects everything above it.
class TopK final : public Compressor {
 public:
  explicit TopK(const CompressorOptions& o) : opts_(o) {}
  std::string name() const override { return "topk"; }

  SparseTensor compress(const torch::Tensor& grad, torch::Tensor& residual, double density) override {
    const bool ef = opts_.error_feedback;
    check_inputs(grad, residual, ef, density);
    if (grad.is_cuda()) return cuda_topk(grad, residual, ef, density, stats_);
    const std::int64_t n = grad.numel();
    const std::int64_t k = target_k(n, density);
    stats_ = {k, 0, 2, 0};
    const Source src = make_source(grad, residual, ef);
    const std::int64_t chunks = chunk_count(n);
    constexpr int kBins = 2048;
    std::vector<std::int64_t> hists(static_cast<std::size_t>(chunks) * kBins, 0);
    std::vector<char> ok(chunks, 1);
    for_chunks(n, [&](std::int64_t c, std::int64_t b, std::int64_t e) {
      ok[c] = detail::accumulate_histogram(src.r ? src.r + b : const_cast<float*>(src.x) + b,
                                          src.r ? src.g + b : nullptr, e - b,
                                          hists.data() + c * kBins);
    });
    for (char c : ok)
      if (!c) refuse_non_finite(residual, ef);
    std::vector<std::int64_t> hist(kBins, 0);
    for (std::int64_t c = 0; c < chunks; ++c)
      for (int b = 0; b < kBins; ++b) hist[b] += hists[c * kBins + b];
    // The bin B where the running count from the top reaches k.
    std::int64_t above = 0;
    int bin = kBins - 1;
    for (; bin > 0; --bin) {
      if (above + hist[bin] >= k) break;
      above += hist[bin];
    }
    const std::int64_t need = k - above;  // to take from bin B
    const std::uint32_t bin_lo = static_cast<std::uint32_t>(bin) << 20;
    const std::uint32_t bin_hi = bin_lo + (1u << 20);

    std::vector<std::vector<std::int64_t>> idx(chunks), cand_idx(chunks);
    std::vector<std::vector<float>> val(chunks), cand_val(chunks);
    for_chunks(n, [&](std::int64_t c, std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i) {
        std::uint32_t bits;
        std::memcpy(&bits, src.x + i, 4);
        bits &= 0x7fffffffu;
        if (bits >= bin_hi) {
          idx[c].push_back(i);
          val[c].push_back(src.x[i]);
        } else if (bits >= bin_lo) {
          cand_idx[c].push_back(i);
          cand_val[c].push_back(src.x[i]);
        }
      }
    });
    // Exact cut inside bin B.
    std::vector<std::pair<float, std::int64_t>> cands;
    for (std::int64_t c = 0; c < chunks; ++c)
      for (std::size_t j = 0; j < cand_idx[c].size(); ++j)
        cands.emplace_back(std::fabs(cand_val[c][j]), cand_idx[c][j]);
    const auto take = std::min<std::int64_t>(need, static_cast<std::int64_t>(cands.size()));
    if (take > 0 && take < static_cast<std::int64_t>(cands.size()))
      std::nth_element(cands.begin(), cands.begin() + take, cands.end(),
                       [](const auto& a, const auto& b) { return a.first > b.first; });
    cands.resize(static_cast<std::size_t>(std::max<std::int64_t>(take, 0)));
    std::sort(cands.begin(), cands.end(),
              [](const auto& a, const auto& b) { return a.second < b.second; });
    // Merge the chosen candidates into the chunk lists, keeping indices ascending.
    std::size_t ci = 0;
    for (std::int64_t c = 0; c < chunks && ci < cands.size(); ++c) {
      const std::int64_t end = std::min(n, (c + 1) * kGrain);
      std::vector<std::int64_t> mi;
      std::vector<float> mv;
      std::size_t a = 0;
      while (a < idx[c].size() || (ci < cands.size() && cands[ci].second < end)) {
        if (ci < cands.size() && cands[ci].second < end &&
            (a == idx[c].size() || cands[ci].second < idx[c][a])) {
          mi.push_back(cands[ci].second);
          mv.push_back(src.x[cands[ci].second]);
          ++ci;
        } else {
          mi.push_back(idx[c][a]);
          mv.push_back(val[c][a]);
          ++a;
        }
      }
      idx[c].swap(mi);
      val[c].swap(mv);
    }
    if (ef) zero_selected(src.r, idx);
    std::int64_t count = 0;
    for (const auto& v : idx) count += static_cast<std::int64_t>(v.size());
    stats_.selected = count;
    std::uint32_t tb = bin_lo;
    float tf;
    std::memcpy(&tf, &tb, 4);
    stats_.threshold = tf;
    return assemble(n, idx, val);
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
    std::vector<std::vector<std::int64_t>> idx{std::move(pick)};
    std::vector<std::vector<float>> val(1);
    val[0].reserve(idx[0].size());
    for (auto i : idx[0]) val[0].push_back(src.x[i]);
    if (!ef)
      for (float v : val[0])
        if (!std::isfinite(v)) refuse_non_finite(residual, ef);
    if (ef) zero_selected(src.r, idx);
    stats_ = {k, static_cast<std::int64_t>(idx[0].size()), ef ? 1 : 0, 0};
    return assemble(n, idx, val);
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
  if (name == "topk") return std::make_unique<TopK>(o);
  if (name == "gaussiank") return std::make_unique<ThresholdK>(o, false);
  if (name == "sampledk") return std::make_unique<ThresholdK>(o, true);
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
