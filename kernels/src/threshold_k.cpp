// gaussiank and sampledk: a threshold from a model of |x|, counted and corrected until the
// count lands in [2k/3, 4k/3], never a sort.
//   gaussiank (Shi et al. 2019): t = |mu| + |Phi^-1(rho/2)| sigma from the moments (|mu|:
//     a positive threshold even for a vector far from zero mean).
//   sampledk (as in DGC): t = the (1 - rho) quantile of |x| over a strided sample.
//
// Pass 1 is fused with error feedback: r += g, the moments, and (sampledk) the sample.
// With threshold reuse (the default) the compressor remembers, per vector, the threshold
// it accepted last time and how far its model was off (`factor`): pass 1 then also keeps
// every element above a margin under the old threshold as a candidate, the new estimate is
// scaled by the factor, and every count and the selection at a threshold the candidates
// cover read the candidates only — a warm call is one streaming pass. A threshold under the
// candidates' bound (or too many candidates) costs full read-only passes, never a wrong
// count. Without reuse each call stands alone, as in the paper.
#include <algorithm>
#include <cmath>
#include <functional>

#include "compress_common.h"
#include "cutlayer/error.h"
#include "cutlayer/kernels/cuda.h"
#include "threshold_search.h"

namespace cutlayer::kernels::detail {
namespace {

// Counts over the candidates are cheap; this only stops a search that cannot settle.
constexpr int kMaxSearchSteps = 40;

class ThresholdK final : public Compressor {
 public:
  ThresholdK(const CompressorOptions& o, bool sampled) : opts_(o), sampled_(sampled) {}
  std::string name() const override { return sampled_ ? "sampledk" : "gaussiank"; }

  SparseTensor compress(const torch::Tensor& grad, torch::Tensor& residual,
                        double density) override {
    const bool ef = opts_.error_feedback;
    check_inputs(grad, residual, ef, density);
    if (grad.is_cuda()) {
      if (sampled_) throw Error("sampledk runs on CPU tensors only; use gaussiank on CUDA");
      ThresholdMemory& mem = memories_.recall(
          opts_.reuse_threshold, ef ? residual.data_ptr() : grad.data_ptr(), grad.numel(), density);
      return cuda_gaussiank(grad, residual, ef, density, opts_.max_corrections,
                            opts_.reuse_threshold, mem, stats_);
    }
    const std::int64_t n = grad.numel();
    const std::int64_t k = target_k(n, density);
    stats_ = {k, 0, 0, 0};
    if (n == 0) return empty_sparse(n);
    const Source src = make_source(grad, residual, ef);
    ThresholdMemory& mem = memories_.recall(opts_.reuse_threshold, src.x, n, density);
    const std::int64_t cap = candidate_cap(k);

    // Pass 1: error feedback, moments, candidates above the remembered margin and
    // (sampledk) a strided sample of |x|: ~256 sampled elements above the threshold
    // (count error ~6%), at most 1/16 of the vector so that small vectors pay little.
    const std::int64_t sample_target = std::clamp<std::int64_t>(
        static_cast<std::int64_t>(256.0 / density), 1, std::max<std::int64_t>(n / 16, 16384));
    const std::int64_t stride = std::max<std::int64_t>(1, n / sample_target);
    std::vector<std::vector<float>>& samples = samples_;
    samples.resize(sampled_ ? chunk_count(n) : 0);
    for (auto& v : samples) v.clear();
    Candidates& cands = cands_;
    std::int64_t first_count = 0;
    const float first_bound = mem.bound();
    const Moments m =
        scan(src, n, first_bound, cap, cands, &first_count,
             [&](std::int64_t c, std::int64_t b, std::int64_t e) {
               if (sampled_)
                 sample_abs(src.x + b, e - b, (stride - b % stride) % stride, stride, samples[c]);
             });
    stats_.passes = 1;
    if (!m.finite()) refuse_non_finite(residual, ef);
    const bool first_complete = cands.complete;
    const double mean = m.mean(n), sd = m.stddev(n);

    const bool searchable = density < 1.0 && sd > 0.0;
    double estimate = 0;  // the model's threshold, before the remembered factor
    double t;
    if (density >= 1.0) {
      t = -1.0;  // everything
    } else if (sd == 0.0) {
      // A constant vector: nothing tells its elements apart, so a non-zero one is sent
      // whole (and an all-zero one not at all).
      t = std::nextafter(static_cast<float>(std::abs(mean)), 0.f);
    } else {
      estimate = sampled_ ? sample_threshold(samples, density, first_bound)
                          : gaussiank_estimate(mean, sd, density);
      t = estimate * mem.factor;
    }

    ThresholdSearch search(n, k, sd, mean);
    int corrections = 0;
    for (int step = 0;; ++step) {
      // Under the candidates' bound, when they alone already fill the band, a full pass
      // could only find more: the answer is read off them instead (see below).
      if (searchable && opts_.max_corrections > 0 && !cands.covers(t) && held_band(cands, search))
        t = candidate_threshold(cands, k);
      std::int64_t c;
      if (cands.covers(t)) {
        c = cands.count_above(static_cast<float>(t));
      } else {
        // A read-only pass that counts and keeps what lies above t; when it fits, it
        // serves every later count and the selection at t or above.
        scan(read_only(src), n, static_cast<float>(t), cap, fresh_, &c);
        ++stats_.passes;
        if (step > 0) ++corrections;
        if (fresh_.complete) std::swap(cands_, fresh_);  // `cands` names cands_
      }
      search.observe(t, c);
      if (!searchable || opts_.max_corrections <= 0 || search.in_band(c) ||
          step + 1 >= kMaxSearchSteps)
        break;
      // When the candidates hold the answer, the correction reads it off them.
      const double next = held_band(cands, search) ? candidate_threshold(cands, k) : search.next();
      if (!cands.covers(next) && corrections >= opts_.max_corrections) break;
      t = next;
    }
    t = search.best_threshold();

    ChunkLists& sel = sel_;
    if (cands.covers(t)) {
      cands.select_above(static_cast<float>(t), sel);
    } else {
      sel.reset(chunk_count(n));
      const float tf = static_cast<float>(t);
      for_chunks(n, [&](std::int64_t c, std::int64_t b, std::int64_t e) {
        select_above(src.x + b, e - b, tf, b, sel.idx[c], sel.val[c]);
      });
      ++stats_.passes;
    }
    if (ef) zero_selected(src.r, sel);
    stats_.selected = sel.size();
    stats_.threshold = t;

    if (opts_.reuse_threshold) {
      if (searchable && estimate > 0) {
        // Next time the model starts where this call's count would have been k (by the
        // Gaussian tail through the accepted point), so the first count lands mid-band.
        mem.factor = learned_factor(search, t, stats_.selected, estimate);
      }
      mem.learn(t, first_complete, first_count, k);
    }
    return assemble(n, sel);
  }

  std::string save_memory(const void* base, std::size_t bytes) const override { return memories_.save(base, bytes); }
  void restore_memory(const void* base, std::size_t bytes, const std::string& saved) override {
    memories_.restore(base, bytes, saved);
  }

 private:
  // The candidates are complete and at least the band's lower end.
  static bool held_band(const Candidates& cands, const ThresholdSearch& search) {
    return cands.complete && cands.lists.size() >= search.band_low();
  }
  // Just under the candidates' k-th largest |x| (their smallest, when fewer than k): that
  // many are selected, ties aside.
  static double candidate_threshold(const Candidates& cands, std::int64_t k) {
    return std::nextafter(cands.kth_largest_abs(std::min(cands.lists.size(), k)), 0.f);
  }

  // Just below the sample's (1 - density) quantile, so that that element is selected.
  // When at least that many sampled |x| lie above `bound` (the candidates' margin, on a warm
  // call), the quantile is among them: the selection runs over those few instead of the
  // whole sample (256K at density 0.001, ~1 ms of nth_element), with the same answer.
  double sample_threshold(const std::vector<std::vector<float>>& samples, double density,
                          float bound) {
    std::size_t total = 0;
    for (const auto& v : samples) total += v.size();
    const auto above = static_cast<std::size_t>(
        std::clamp<double>(std::ceil(density * static_cast<double>(total)), 1.0,
                           static_cast<double>(std::max<std::size_t>(total, 1))));
    std::vector<float>& pool = pool_;
    pool.clear();
    if (bound > 0.f && std::isfinite(bound))
      for (const auto& v : samples)
        for (float a : v)
          if (a > bound) pool.push_back(a);
    if (pool.size() < above) {
      pool.clear();
      for (const auto& v : samples) pool.insert(pool.end(), v.begin(), v.end());
    }
    std::nth_element(pool.begin(), pool.begin() + static_cast<std::ptrdiff_t>(above - 1),
                     pool.end(), std::greater<float>());
    return std::nextafter(pool[above - 1], 0.f);
  }

  CompressorOptions opts_;
  bool sampled_;
  ThresholdMemories memories_;
  // Scratch reused from call to call, its room kept: fresh buffers faulted ~14K pages in
  // on every call at 25M / 0.01 (~55 MB), about a tenth of the call's time.
  Candidates cands_, fresh_;
  ChunkLists sel_;
  std::vector<std::vector<float>> samples_;
  std::vector<float> pool_;
};

}  // namespace

std::unique_ptr<Compressor> make_threshold_k(const CompressorOptions& o, bool sampled) {
  return std::make_unique<ThresholdK>(o, sampled);
}

}  // namespace cutlayer::kernels::detail
