#include "cutlayer/privacy/metrics.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "cutlayer/error.h"

namespace cutlayer::privacy {

double mse(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).pow(2).mean().item<double>();
}

double psnr(const torch::Tensor& a, const torch::Tensor& b, double data_range) {
  const double m = mse(a, b);
  if (m == 0) return std::numeric_limits<double>::infinity();
  return 10 * std::log10(data_range * data_range / m);
}

double ssim(const torch::Tensor& a, const torch::Tensor& b, double data_range) {
  if (a.dim() != 4 || a.sizes() != b.sizes()) throw Error("ssim: inputs must be N x C x H x W of one shape");
  if (a.size(2) < 11 || a.size(3) < 11) throw Error("ssim: images must be at least 11 x 11");
  const auto x = a.to(torch::kFloat64), y = b.to(torch::kFloat64);
  const auto c = a.size(1);
  auto g = torch::arange(11, torch::kFloat64) - 5;
  g = torch::exp(-g.pow(2) / (2 * 1.5 * 1.5));
  g = g / g.sum();
  const auto w = torch::outer(g, g).expand({c, 1, 11, 11}).contiguous();
  auto filt = [&](const torch::Tensor& t) {
    const std::vector<std::int64_t> one{1, 1}, zero{0, 0};
    return torch::conv2d(t, w, torch::Tensor(), one, zero, one, c);  // valid positions, per channel
  };
  const double c1 = std::pow(0.01 * data_range, 2), c2 = std::pow(0.03 * data_range, 2);
  const auto mx = filt(x), my = filt(y);
  const auto sxx = filt(x * x) - mx * mx, syy = filt(y * y) - my * my, sxy = filt(x * y) - mx * my;
  const auto map = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2));
  return map.mean().item<double>();
}

double roc_auc(const torch::Tensor& scores, const torch::Tensor& labels) {
  const auto s = scores.reshape({-1}).to(torch::kFloat64).contiguous();
  const auto l = labels.reshape({-1}).to(torch::kInt64).contiguous();
  if (s.numel() != l.numel()) throw Error("roc_auc: one label per score");
  const auto n = s.numel();
  const auto order = std::get<1>(s.sort());
  const auto* ps = s.data_ptr<double>();
  const auto* pl = l.data_ptr<std::int64_t>();
  const auto* po = order.data_ptr<std::int64_t>();
  double rank_sum = 0;
  std::int64_t pos = 0;
  for (std::int64_t i = 0; i < n;) {
    std::int64_t j = i;
    while (j + 1 < n && ps[po[j + 1]] == ps[po[i]]) ++j;
    const double avg_rank = 0.5 * (i + j) + 1;  // ties share the average rank
    for (std::int64_t k = i; k <= j; ++k)
      if (pl[po[k]] == 1) {
        rank_sum += avg_rank;
        ++pos;
      }
    i = j + 1;
  }
  const std::int64_t neg = n - pos;
  if (pos == 0 || neg == 0) throw Error("roc_auc: needs both positive and negative labels");
  return (rank_sum - pos * (pos + 1) / 2.0) / (static_cast<double>(pos) * neg);
}

}  // namespace cutlayer::privacy
