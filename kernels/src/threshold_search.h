// Internal: the search for a threshold t whose count #{|x| > t} lands in [2k/3, 4k/3],
// shared by the CPU compressors and the CUDA gaussiank (plain host C++, no LibTorch).
//
// Until the band is bracketed, a step from the nearest end assumes |x| is a zero-mean
// Gaussian of unknown scale: c elements above t say sigma = t / |Phi^-1(c / 2n)|, and the
// next t is that sigma's |Phi^-1(k / 2n)| (one step is exact on Gaussian data whatever the
// scale; the step is kept within x1/4 .. x4). When such a step already fell short on the
// same side (a heavier tail than Gaussian), the step is at least the log-log secant
// through that end's last two points (exact on a power-law tail); two equal counts (a
// plateau: nothing between them) step as far as allowed; and each step that fell short
// widens what the next may reach (x16, x256, x65536: an exponential search). A count of 0,
// or of more than half the vector, says nothing of the tail's shape: then the step goes to
// where the moments alone put k (|mean| + |Phi^-1(k / 2n)| sd), and a count of 0 above a
// count over the band is approached by halves in log t. Once bracketed by two non-zero
// counts, log(count) is interpolated linearly between the bracket's ends (regula falsi),
// kept inside the bracket's middle 80%. The result is the best threshold seen: in the band
// if any was, then nearest k in log. The paper's fixed x0.5 / x1.5 steps overshoot on
// error-feedback residuals, whose tails were just sent and are far from Gaussian;
// ThresholdSearch.ConvergesOnAnyTailFromAnyStart and .FindsTheBandWheneverOneExists
// measure the steps.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "normal_quantile.h"

namespace cutlayer::kernels::detail {

class ThresholdSearch {
 public:
  // `scale`: the standard deviation of x, and `center` its |mean|: where they alone put k
  // (|mean| + |Phi^-1(k / 2n)| scale) is the guess when a count says nothing of the tail.
  ThresholdSearch(std::int64_t n, std::int64_t k, double scale, double center = 0.0)
      : n_(static_cast<double>(n)),
        k_(static_cast<double>(k)),
        lo_(2.0 * k / 3.0),
        hi_(4.0 * k / 3.0),
        scale_(scale),
        center_(std::fabs(center)) {}

  bool in_band(std::int64_t c) const { return c >= lo_ && c <= hi_; }
  // Whether anything was observed yet.
  bool observed() const { return has_best_; }
  // The smallest count in the band.
  std::int64_t band_low() const { return static_cast<std::int64_t>(std::ceil(lo_)); }

  // Records that `c` elements lie above `t`.
  void observe(double t, std::int64_t c) {
    const double cd = static_cast<double>(c);
    if (c < lo_ && (!few_.seen || t < few_.t)) {
      few_.push(t, cd);
    } else if (c > hi_ && (!many_.seen || t > many_.t)) {
      many_.push(t, cd);
    }
    // The best: in the band if any count was (the band is lopsided in log, so a count just
    // over it can be nearer k than one just inside), then nearest k in log.
    const double miss =
        std::fabs(std::log((cd + 1.0) / (k_ + 1.0))) + (in_band(c) ? 0.0 : kOutOfBand);
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
    if (many_.seen && few_.seen && few_.c > 0) {
      const double lm = std::log(many_.c + 1.0), lf = std::log(few_.c + 1.0);
      double f = (lm - std::log(k_ + 1.0)) / (lm - lf);
      f = std::clamp(f, 0.1, 0.9);
      return many_.t + f * (few_.t - many_.t);
    }
    if (many_.seen) {  // up from counts over the band
      if (!(many_.t > 0.0)) return gaussian_step(many_.t, many_.c);  // the moments' guess
      double t = std::clamp(one_sided(many_), many_.t, many_.reach() * many_.t);
      if (many_.c > n_ / 2) t = std::max(t, scale_guess());
      // A count of 0 above says only that max |x| lies under it: at most halfway there (in
      // log t).
      if (few_.seen)
        t = std::min(t, many_.t > 0.0 ? std::sqrt(many_.t * few_.t) : 0.5 * (many_.t + few_.t));
      return t;
    }
    if (few_.seen) {  // down from counts under the band
      if (few_.c == 0) {
        const double guess = scale_guess();
        return guess > 0.0 && guess < 0.9 * few_.t ? guess : gaussian_step(few_.t, 0.0);
      }
      return std::clamp(one_sided(few_), few_.t / few_.reach(), few_.t);
    }
    return gaussian_step(last_t_, last_c_);
  }

  // Where a Gaussian tail through (t, c) puts the count k (the step before bracketing).
  double gaussian_step(double t, double c) const {
    const double zk = tail_z(k_);
    if (!(t > 0.0)) return scale_guess();
    return t * std::clamp(zk / tail_z(std::max(c, 0.5)), 0.25, 4.0);
  }

  double best_threshold() const { return best_t_; }
  std::int64_t best_count() const { return best_c_; }

 private:
  // One side of the band: the observation nearest it, and the one before.
  struct End {
    bool seen = false, has_prev = false;
    double t = 0, c = 0, prev_t = 0, prev_c = 0;
    int moves = 0;  // steps of 5% or more that kept landing on this side
    void push(double nt, double nc) {
      if (seen && std::fabs(std::log(nt / t)) >= std::log(1.05)) ++moves;
      has_prev = seen;
      prev_t = t;
      prev_c = c;
      seen = true;
      t = nt;
      c = nc;
    }
    // How far one step from here may go: x4, and x16, x256, x65536 after 1, 2, 3 moves
    // that all fell short (an exponential search, for a gap of many orders of magnitude).
    double reach() const {
      constexpr double kReach[] = {4.0, 16.0, 256.0, 65536.0};
      return kReach[std::min(moves, 3)];
    }
  };

  // The step from one end: the Gaussian step or, when the end's previous point was a real
  // step away (not a neighbouring histogram edge) and in the tail, the farther of it and
  // the log-log secant through both points (a Gaussian step from the previous point fell
  // short, so the tail is heavier than it assumes).
  double one_sided(const End& e) const {
    const double step = gaussian_step(e.t, e.c);
    // A plateau (no element between the two points): as far as the end may reach.
    if (e.has_prev && e.c == e.prev_c && e.c > 0.0 && e.t != e.prev_t)
      return e.c > hi_ ? e.t * e.reach() : e.t / e.reach();
    if (!e.has_prev || !(e.t > 0.0) || !(e.prev_t > 0.0) || e.prev_c > n_ / 4) return step;
    const double span = std::log(e.t / e.prev_t);
    if (std::fabs(span) < std::log(1.05) || !(e.c > 0.0) || !(e.prev_c > 0.0)) return step;
    const double slope = (std::log(e.c + 1.0) - std::log(e.prev_c + 1.0)) / span;
    if (!(slope < 0.0)) return step;
    const double secant = e.t * std::exp((std::log(k_ + 1.0) - std::log(e.c + 1.0)) / slope);
    return e.c > hi_ ? std::max(step, secant) : std::min(step, secant);
  }
  // Where the scale alone puts k.
  double scale_guess() const { return center_ + tail_z(k_) * scale_; }
  // |Phi^-1(p / 2)| for the tail share p = c / n of a symmetric Gaussian.
  double tail_z(double c) const {
    const double p = std::min(c / n_, 0.999);
    return std::max(std::fabs(normal_quantile(p / 2.0)), 1e-3);
  }

  static constexpr double kOutOfBand = 1e6;  // above any log ratio of counts
  double n_, k_, lo_, hi_, scale_, center_;
  End few_, many_;
  bool has_best_ = false;
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
