#include "cutlayer/privacy/dcor.h"

#include <torch/torch.h>

#include "cutlayer/error.h"

namespace cutlayer::privacy {
namespace {

// Pairwise Euclidean distances of the rows of x (B x d), differentiable and NaN-free:
// squared distances from the Gram matrix of the column-centred rows (centring changes no
// distance but keeps the Gram trick's cancellation small, and makes a constant batch
// exactly zero), clamped before the square root, exactly zero where the squared distance
// is (the diagonal, duplicate rows) with a zero gradient there.
torch::Tensor distances(const torch::Tensor& x) {
  auto flat = x.reshape({x.size(0), -1});
  flat = flat - flat.mean(0, true);
  const auto sq = flat.pow(2).sum(1, true);
  const auto d2 = (sq + sq.t() - 2 * flat.mm(flat.t())).clamp_min(0);
  const double eps = x.scalar_type() == torch::kFloat64 ? 1e-300 : 1e-30;
  const auto off = 1 - torch::eye(x.size(0), x.options());
  return torch::where(d2 > 0, d2.clamp_min(eps).sqrt(), torch::zeros_like(d2)) * off;
}

torch::Tensor double_centre(const torch::Tensor& a) {
  return a - a.mean(0, true) - a.mean(1, true) + a.mean();
}

// U-centring (Székely & Rizzo 2014), zero diagonal.
torch::Tensor u_centre(const torch::Tensor& a) {
  const auto n = static_cast<double>(a.size(0));
  const auto rows = a.sum(1, true) / (n - 2);
  const auto cols = a.sum(0, true) / (n - 2);
  const auto all = a.sum() / ((n - 1) * (n - 2));
  const auto off = 1 - torch::eye(a.size(0), a.options());
  return (a - rows - cols + all) * off;
}

void check(const torch::Tensor& x, const torch::Tensor& z, std::int64_t min_n) {
  if (x.dim() < 1 || z.dim() < 1 || x.size(0) != z.size(0))
    throw Error("dcor: X and Z need the same number of rows (samples)");
  if (x.size(0) < min_n)
    throw Error("dcor: needs at least " + std::to_string(min_n) + " samples, got " + std::to_string(x.size(0)));
}

// sqrt(r) for r > eps, else 0, with a finite gradient everywhere.
torch::Tensor safe_sqrt(const torch::Tensor& r) {
  const double eps = r.scalar_type() == torch::kFloat64 ? 1e-30 : 1e-20;
  return torch::where(r > eps, r.clamp_min(eps).sqrt(), torch::zeros_like(r));
}

}  // namespace

torch::Tensor dcor(const torch::Tensor& x, const torch::Tensor& z) {
  check(x, z, 2);
  const auto a = double_centre(distances(x));
  const auto b = double_centre(distances(z.to(x.scalar_type())));
  const auto dcov2 = (a * b).mean();
  const auto vx = (a * a).mean(), vz = (b * b).mean();
  const auto denom = safe_sqrt(vx * vz);
  const auto r = torch::where(denom > 0, dcov2.clamp_min(0) / denom.clamp_min(1e-30), torch::zeros_like(dcov2));
  return safe_sqrt(r);
}

torch::Tensor dcor2_unbiased(const torch::Tensor& x, const torch::Tensor& z) {
  check(x, z, 4);
  const auto a = u_centre(distances(x));
  const auto b = u_centre(distances(z.to(x.scalar_type())));
  const auto n = static_cast<double>(x.size(0));
  const double k = 1.0 / (n * (n - 3));
  const auto dcov2 = (a * b).sum() * k;
  const auto vx = (a * a).sum() * k, vz = (b * b).sum() * k;
  const auto denom = safe_sqrt((vx * vz).clamp_min(0));
  return torch::where(denom > 0, dcov2 / denom.clamp_min(1e-30), torch::zeros_like(dcov2));
}

torch::Tensor permutation_floor(const torch::Tensor& x, const torch::Tensor& z, std::uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  const auto perm = torch::randperm(z.size(0), gen, torch::TensorOptions().dtype(torch::kInt64));
  return dcor(x, z.index_select(0, perm.to(z.device())));
}

}  // namespace cutlayer::privacy
