#include "cutlayer/privacy/label_attacks.h"

#include <torch/torch.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <random>

#include "cutlayer/error.h"
#include "cutlayer/privacy/metrics.h"

namespace cutlayer::privacy {
namespace {

// Classes present among `y` with at least 2 examples and at least one example of another class.
std::vector<std::int64_t> scored_classes(const torch::Tensor& y) {
  std::vector<std::int64_t> out;
  const auto n = y.size(0);
  for (std::int64_t c = 0; c <= y.max().item<std::int64_t>(); ++c) {
    const auto k = (y == c).sum().item<std::int64_t>();
    if (k >= 2 && k < n) out.push_back(c);
  }
  return out;
}

// AUC per class from `score(c)` -> (scores, labels 0/1), folded into mean/min/max.
AttackAuc fold(const std::string& name, const std::vector<std::int64_t>& classes,
               const std::function<double(std::int64_t)>& auc_of) {
  AttackAuc a;
  a.attack = name;
  for (auto c : classes) {
    const double v = auc_of(c);
    a.mean += v;
    a.max = std::max(a.max, v);
    a.min = std::min(a.min, v);
    ++a.classes;
  }
  if (a.classes > 0) a.mean /= a.classes;
  return a;
}

// The top `k` principal directions of the rows of `g` (D x k).
torch::Tensor principal_directions(const torch::Tensor& g, std::int64_t k) {
  const auto c = g - g.mean(0, true);
  const auto cov = c.t().matmul(c) / std::max<std::int64_t>(1, g.size(0) - 1);
  const auto [vals, vecs] = torch::linalg::eigh(cov, "L");  // ascending
  k = std::min<std::int64_t>(k, vecs.size(1));
  return vecs.narrow(1, vecs.size(1) - k, k);
}

// Linear discriminant fitted on (x_fit, y_fit): posteriors of every class for x (N x K).
torch::Tensor lda_posteriors(const torch::Tensor& x_fit, const torch::Tensor& y_fit, const torch::Tensor& x,
                             std::int64_t k) {
  const auto d = x_fit.size(1);
  auto means = torch::zeros({k, d}, x_fit.options());
  auto prior = torch::full({k}, 1e-12, x_fit.options());
  auto within = torch::zeros({d, d}, x_fit.options());
  for (std::int64_t c = 0; c < k; ++c) {
    const auto rows = x_fit.index({y_fit == c});
    if (rows.size(0) == 0) continue;
    means[c] = rows.mean(0);
    prior[c] = static_cast<double>(rows.size(0)) / x_fit.size(0);
    const auto r = rows - means[c];
    within += r.t().matmul(r);
  }
  within = within / std::max<std::int64_t>(1, x_fit.size(0) - k);
  within += torch::eye(d, x_fit.options()) * (1e-6 * within.trace().item<double>() / d + 1e-30);
  const auto w = torch::linalg::solve(within, means.t(), true);  // d x k
  const auto bias = -0.5 * (means * w.t()).sum(1) + prior.log();
  return torch::softmax(x.matmul(w) + bias, 1);
}

// Lloyd's k-means with k-means++ seeding; several starts, the lowest inertia kept.
torch::Tensor kmeans_centres(const torch::Tensor& x, std::int64_t k, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  torch::Tensor best;
  double best_inertia = std::numeric_limits<double>::infinity();
  const auto n = x.size(0);
  for (int start = 0; start < 4; ++start) {
    std::vector<std::int64_t> picks{static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(n))};
    auto d2 = (x - x[picks[0]]).pow(2).sum(1);
    while (static_cast<std::int64_t>(picks.size()) < k) {
      const auto w = d2.contiguous();
      const double total = w.sum().item<double>();
      double u = std::uniform_real_distribution<double>(0, total)(rng);
      std::int64_t i = 0;
      const auto* p = w.data_ptr<double>();
      for (; i + 1 < n && u > p[i]; ++i) u -= p[i];
      picks.push_back(i);
      d2 = torch::minimum(d2, (x - x[i]).pow(2).sum(1));
    }
    auto centres = x.index_select(0, torch::tensor(picks, torch::kInt64));
    torch::Tensor assign;
    for (int it = 0; it < 50; ++it) {
      assign = torch::cdist(x, centres).argmin(1);
      auto next = centres.clone();
      for (std::int64_t c = 0; c < k; ++c) {
        const auto rows = x.index({assign == c});
        if (rows.size(0) > 0) next[c] = rows.mean(0);
      }
      const bool moved = !torch::allclose(next, centres);
      centres = next;
      if (!moved) break;
    }
    const double inertia = std::get<0>(torch::cdist(x, centres).min(1)).pow(2).sum().item<double>();
    if (inertia < best_inertia) {
      best_inertia = inertia;
      best = centres;
    }
  }
  return best;
}

}  // namespace

std::vector<AttackAuc> attack_labels(const torch::Tensor& grads, const torch::Tensor& labels, std::uint64_t seed) {
  const auto g = grads.reshape({grads.size(0), -1}).to(torch::kFloat64);
  const auto y = labels.reshape({-1}).to(torch::kInt64);
  if (g.size(0) != y.size(0) || g.size(0) < 4) throw Error("label attacks: need one label per gradient, 4 or more");
  const auto classes = scored_classes(y);
  if (classes.empty()) throw Error("label attacks: no class has 2 examples and a rest");
  if (!torch::isfinite(g).all().item<bool>()) throw Error("label attacks: the gradients are not all finite");
  const auto n = g.size(0);
  const auto k = y.max().item<std::int64_t>() + 1;
  const auto norms = g.norm(2, 1);
  const auto unit = g / norms.clamp_min(1e-30).unsqueeze(1);
  // The attacks that learn (norm's direction, lda) fit on the first half and score the
  // second, on the classes both halves hold.
  const auto half = n / 2;
  const auto fit_y = y.narrow(0, 0, half), test_y = y.narrow(0, half, n - half);
  std::vector<std::int64_t> learnt;
  for (auto c : scored_classes(test_y)) {
    const auto k_fit = (fit_y == c).sum().item<std::int64_t>();
    if (k_fit >= 1 && k_fit < half) learnt.push_back(c);
  }
  std::vector<AttackAuc> out;
  // A plain one-vs-rest AUC of ||g|| averages to 0.5 over balanced classes whatever leaks
  // (a class with small norms scores below 0.5 by as much as another scores above): the
  // attacker learns from the labelled half whether each class's norms run high or low.
  out.push_back(fold("norm", learnt, [&](std::int64_t c) {
    const double fit = roc_auc(norms.narrow(0, 0, half), (fit_y == c).to(torch::kInt64));
    const auto score = fit >= 0.5 ? norms.narrow(0, half, n - half) : -norms.narrow(0, half, n - half);
    return roc_auc(score, (test_y == c).to(torch::kInt64));
  }));
  out.push_back(fold("cosine", classes, [&](std::int64_t c) {
    const auto pos = (y == c).to(torch::kInt64);
    const auto ref = torch::nonzero(pos).flatten()[0].item<std::int64_t>();
    auto rest = torch::ones({n}, torch::kBool);
    rest[ref] = false;
    return roc_auc(unit.matmul(unit[ref]).masked_select(rest), pos.masked_select(rest));
  }));
  // Both learnt attacks work in the span of the top principal directions.
  const auto proj = g.matmul(principal_directions(g, k));
  const auto fit_x = proj.narrow(0, 0, half), test_x = proj.narrow(0, half, n - half);
  const auto post = lda_posteriors(fit_x, fit_y, test_x, k);
  if (!learnt.empty())
    out.push_back(fold("lda", learnt, [&](std::int64_t c) {
      return roc_auc(post.select(1, c), (test_y == c).to(torch::kInt64));
    }));
  const auto unit_proj = unit.matmul(principal_directions(unit, k));
  const auto dist = torch::cdist(unit_proj, kmeans_centres(unit_proj, k, seed));  // n x k
  out.push_back(fold("cluster", classes, [&](std::int64_t c) {
    const auto pos = (y == c).to(torch::kInt64);
    double best = 0;
    for (std::int64_t j = 0; j < dist.size(1); ++j) best = std::max(best, roc_auc(-dist.select(1, j), pos));
    return best;
  }));
  return out;
}

}  // namespace cutlayer::privacy
