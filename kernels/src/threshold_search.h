// Internal: the search for a threshold t whose count #{|x| > t} lands in [2k/3, 4k/3],
// shared by the CPU compressors and the CUDA gaussiank (plain host C++, no LibTorch).
//
// Until the band is bracketed, each step assumes |x| is a zero-mean Gaussian of unknown
// scale: c elements above t say sigma = t / |Phi^-1(c / 2n)|, and the next t is that
// sigma's |Phi^-1(k / 2n)| (one step is exact on Gaussian data whatever the scale; the
// step is kept within x1/4 .. x4). Once bracketed, log(count) is interpolated linearly
// between the bracket's ends (regula falsi), kept inside the bracket's middle 80%. The
// paper's fixed x0.5 / x1.5 steps overshoot on error-feedback residuals, whose tails were
// just sent and are far from Gaussian.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "normal_quantile.h"

namespace cutlayer::kernels::detail {

class ThresholdSearch {
 public:
  // `scale`: a typical |x| (the standard deviation), used when a threshold is not positive.
  ThresholdSearch(std::int64_t n, std::int64_t k, double scale)
      : n_(static_cast<double>(n)),
        k_(static_cast<double>(k)),
        lo_(2.0 * k / 3.0),
        hi_(4.0 * k / 3.0),
        scale_(scale) {}

  bool in_band(std::int64_t c) const { return c >= lo_ && c <= hi_; }
  // Whether anything was observed yet.
  bool observed() const { return has_best_; }
  // The smallest count in the band.
  std::int64_t band_low() const { return static_cast<std::int64_t>(std::ceil(lo_)); }

  // Records that `c` elements lie above `t`.
  void observe(double t, std::int64_t c) {
    const double cd = static_cast<double>(c);
    if (c < lo_ && (!has_few_ || t < t_few_)) {
      has_few_ = true;
      t_few_ = t;
      c_few_ = cd;
    } else if (c > hi_ && (!has_many_ || t > t_many_)) {
      has_many_ = true;
      t_many_ = t;
      c_many_ = cd;
    }
    const double miss = std::fabs(std::log((cd + 1.0) / (k_ + 1.0)));
    if (!has_best_ || miss < best_miss_) {
      has_best_ = true;
      best_miss_ = miss;
      best_t_ = t;
      best_c_ = c;
    }
    last_t_ = t;
    last_c_ = cd;
  }

  // The next threshold to try (after at least one observe()).
  double next() const {
    if (has_few_ && has_many_) {
      const double lm = std::log(c_many_ + 1.0), lf = std::log(c_few_ + 1.0);
      const double w = t_few_ - t_many_;
      double f = (lm - std::log(k_ + 1.0)) / (lm - lf);
      f = std::clamp(f, 0.1, 0.9);
      return t_many_ + f * w;
    }
    return gaussian_step(last_t_, last_c_);
  }

  // Where a Gaussian tail through (t, c) puts the count k (the step before bracketing).
  double gaussian_step(double t, double c) const {
    const double zk = tail_z(k_);
    if (!(t > 0.0)) return zk * scale_;
    return t * std::clamp(zk / tail_z(std::max(c, 0.5)), 0.25, 4.0);
  }

  double best_threshold() const { return best_t_; }
  std::int64_t best_count() const { return best_c_; }

 private:
  // |Phi^-1(p / 2)| for the tail share p = c / n of a symmetric Gaussian.
  double tail_z(double c) const {
    const double p = std::min(c / n_, 0.999);
    return std::max(std::fabs(normal_quantile(p / 2.0)), 1e-3);
  }

  double n_, k_, lo_, hi_, scale_;
  bool has_few_ = false, has_many_ = false, has_best_ = false;
  double t_few_ = 0, c_few_ = 0, t_many_ = 0, c_many_ = 0;
  double best_t_ = 0, best_miss_ = 0;
  std::int64_t best_c_ = 0;
  double last_t_ = 0, last_c_ = 0;
};

// gaussiank's model (Shi et al. 2019): t = |mu| + |Phi^-1(rho/2)| sigma (|mu|: positive
// even for a vector far from zero mean). Shared by the CPU and CUDA compressors.
inline double gaussiank_estimate(double mean, double sd, double density) {
  return std::fabs(mean) + std::fabs(normal_quantile(density / 2.0)) * sd;
}

// The correction factor for the next call on a vector: where the Gaussian tail through
// this call's accepted (t, count) puts the count k, over the model's estimate, so that the
// next first guess lands mid-band (clamped to x0.05 .. x20).
inline double learned_factor(const ThresholdSearch& search, double t, std::int64_t count,
                             double estimate) {
  return std::clamp(search.gaussian_step(t, static_cast<double>(count)) / estimate, 0.05, 20.0);
}

}  // namespace cutlayer::kernels::detail
