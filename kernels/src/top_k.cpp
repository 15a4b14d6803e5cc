// topk (exact): the k largest |x|, ties at the k-th value going to the lowest index.
//
// Warm (threshold reuse, the default, and a threshold remembered for this vector): pass 1
// is fused with error feedback and keeps every element above a margin under last call's
// k-th value as a candidate; when at least k are, the k-th is found among them
// (nth_element) and the call was one streaming pass. Too few, or more than the cap: one
// read-only pass collects again above a bound estimated as if the tail were Gaussian.
// Still not: the cold path over what pass 1 left.
// Cold: radix select on the bits of |x| — a 2048-bin histogram of the top bits (fused with
// error feedback on a first call), then a pass that keeps everything above the bin of the
// k-th largest and resolves that bin exactly.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "compress_common.h"
#include "cutlayer/kernels/cuda.h"
#include "threshold_search.h"

namespace cutlayer::kernels::detail {
namespace {

struct Ranked {
  float mag;
  std::int64_t idx;
};
// The order of selection: larger |x| first, then the lower index.
bool before(const Ranked& a, const Ranked& b) {
  return a.mag > b.mag || (a.mag == b.mag && a.idx < b.idx);
}

// The j-th entry (j >= 1) of `r` in selection order; reorders r.
Ranked nth_ranked(std::vector<Ranked>& r, std::int64_t j) {
  std::nth_element(r.begin(), r.begin() + (j - 1), r.end(), before);
  return r[j - 1];
}

// Of `lists` (ascending per chunk), those that come no later than `last` in selection
// order: exactly the top j when `last` is the j-th.
void take_until(const ChunkLists& lists, const Ranked& last, ChunkLists& out) {
  out.reset(static_cast<std::int64_t>(lists.idx.size()));
  for (std::size_t c = 0; c < lists.idx.size(); ++c) {
    for (std::size_t j = 0; j < lists.idx[c].size(); ++j) {
      const Ranked e{std::fabs(lists.val[c][j]), lists.idx[c][j]};
      if (!before(last, e)) {
        out.idx[c].push_back(e.idx);
        out.val[c].push_back(lists.val[c][j]);
      }
    }
  }
}

class TopK final : public Compressor {
 public:
  explicit TopK(const CompressorOptions& o) : opts_(o) {}
  std::string name() const override { return "topk"; }

  SparseTensor compress(const torch::Tensor& grad, torch::Tensor& residual,
                        double density) override {
    const bool ef = opts_.error_feedback;
    check_inputs(grad, residual, ef, density);
    if (grad.is_cuda()) return cuda_topk(grad, residual, ef, density, stats_);
    const std::int64_t n = grad.numel();
    const std::int64_t k = target_k(n, density);
    stats_ = {k, 0, 0, 0};
    if (n == 0) return empty_sparse(n);
    const Source src = make_source(grad, residual, ef);
    ThresholdMemory& mem = memories_.recall(opts_.reuse_threshold, src.x, n, density);
    const std::int64_t cap = candidate_cap(k);

    ChunkLists& sel = sel_;
    sel.reset(0);
    Ranked kth{0, 0};
    bool done = false, accumulated = false, first_complete = false;
    std::int64_t first_count = 0;
    const float first_bound = mem.bound();
    if (mem.threshold > 0 && k < n) {
      Candidates& cands = cands_;
      const Moments m = scan(src, n, first_bound, cap, cands, &first_count);
      stats_.passes = 1;
      accumulated = true;
      if (!m.finite()) refuse_non_finite(residual, ef);
      first_complete = cands.complete;
      if (!(cands.complete && first_count >= k)) {
        // Too few above the margin, or more than the cap: collect again above a bound
        // meant to hold ~2k, by the Gaussian tail through what the first pass counted.
        ThresholdSearch guess(n, 2 * k, m.stddev(n), m.mean(n));
        guess.observe(first_bound, first_count);
        const auto bound = static_cast<float>(guess.next());
        std::int64_t above = 0;
        // A step at its x1/4 or x4 limit is a jump this guess cannot follow: straight to
        // the cold path then.
        const double ratio = bound / first_bound;
        if (ratio > 0.26 && ratio < 3.9 && bound != first_bound) {
          scan(read_only(src), n, bound, cap, again_, &above);
          ++stats_.passes;
          if (again_.complete && above >= k) std::swap(cands_, again_);  // `cands` names cands_
        }
      }
      if (cands.complete && cands.lists.size() >= k) {
        std::vector<Ranked>& ranked = ranked_;
        ranked.clear();
        ranked.reserve(static_cast<std::size_t>(cands.lists.size()));
        for (std::size_t c = 0; c < cands.lists.idx.size(); ++c)
          for (std::size_t j = 0; j < cands.lists.idx[c].size(); ++j)
            ranked.push_back({std::fabs(cands.lists.val[c][j]), cands.lists.idx[c][j]});
        kth = nth_ranked(ranked, k);
        take_until(cands.lists, kth, sel);
        done = true;
      }
    }
    if (!done) kth = radix_select(src, n, k, accumulated, residual, sel);
    if (ef) zero_selected(src.r, sel);
    stats_.selected = sel.size();
    stats_.threshold = kth.mag;
    if (opts_.reuse_threshold) mem.learn(kth.mag, first_complete, first_count, k);
    return assemble(n, sel);
  }

  std::string save_memory(const void* base, std::size_t bytes) const override { return memories_.save(base, bytes); }
  void restore_memory(const void* base, std::size_t bytes, const std::string& saved) override {
    memories_.restore(base, bytes, saved);
  }

 private:
  // The cold path: the k largest of x into `sel`; returns the k-th. `accumulated`: error
  // feedback has already been applied (a warm attempt ran), so the histogram pass only reads.
  Ranked radix_select(const Source& src, std::int64_t n, std::int64_t k, bool accumulated,
                      torch::Tensor& residual, ChunkLists& sel) {
    const std::int64_t chunks = chunk_count(n);
    constexpr int kBins = 2048;
    std::vector<std::int64_t> hists(static_cast<std::size_t>(chunks) * kBins, 0);
    std::vector<char> ok(chunks, 1);
    const bool fuse_ef = src.r != nullptr && !accumulated;
    float* x = const_cast<float*>(src.x);  // written only when fusing error feedback
    for_chunks(n, [&](std::int64_t c, std::int64_t b, std::int64_t e) {
      ok[c] = accumulate_histogram(x + b, fuse_ef ? src.g + b : nullptr, e - b,
                                   hists.data() + c * kBins);
    });
    ++stats_.passes;
    for (char c : ok)
      if (!c) refuse_non_finite(residual, opts_.error_feedback);
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

    // Everything above bin B, and bin B's members as candidates.
    sel.reset(chunks);
    ChunkLists in_bin(chunks);
    for_chunks(n, [&](std::int64_t c, std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i) {
        std::uint32_t bits;
        std::memcpy(&bits, src.x + i, 4);
        bits &= 0x7fffffffu;
        if (bits >= bin_hi) {
          sel.idx[c].push_back(i);
          sel.val[c].push_back(src.x[i]);
        } else if (bits >= bin_lo) {
          in_bin.idx[c].push_back(i);
          in_bin.val[c].push_back(src.x[i]);
        }
      }
    });
    ++stats_.passes;
    std::vector<Ranked> ranked;
    for (std::int64_t c = 0; c < chunks; ++c)
      for (std::size_t j = 0; j < in_bin.idx[c].size(); ++j)
        ranked.push_back({std::fabs(in_bin.val[c][j]), in_bin.idx[c][j]});
    const Ranked last =
        nth_ranked(ranked, std::min<std::int64_t>(need, static_cast<std::int64_t>(ranked.size())));
    ChunkLists from_bin;
    take_until(in_bin, last, from_bin);
    // Merge bin B's chosen members into the chunk lists, keeping indices ascending.
    for (std::int64_t c = 0; c < chunks; ++c) {
      if (from_bin.idx[c].empty()) continue;
      ChunkLists merged(1);
      const auto& fi = from_bin.idx[c];
      const auto& fv = from_bin.val[c];
      auto &mi = merged.idx[0], &si = sel.idx[c];
      auto &mv = merged.val[0], &sv = sel.val[c];
      std::size_t a = 0, f = 0;
      while (a < si.size() || f < fi.size()) {
        if (f < fi.size() && (a == si.size() || fi[f] < si[a])) {
          mi.push_back(fi[f]);
          mv.push_back(fv[f++]);
        } else {
          mi.push_back(si[a]);
          mv.push_back(sv[a++]);
        }
      }
      si.swap(mi);
      sv.swap(mv);
    }
    return last;
  }

  CompressorOptions opts_;
  ThresholdMemories memories_;
  // Scratch reused from call to call, as in threshold_k.cpp (no page faults per call).
  Candidates cands_, again_;
  ChunkLists sel_;
  std::vector<Ranked> ranked_;
};

}  // namespace

std::unique_ptr<Compressor> make_top_k(const CompressorOptions& o) {
  return std::make_unique<TopK>(o);
}

}  // namespace cutlayer::kernels::detail
