#include "cutlayer/privacy/dcor.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

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

// dCor(X, Z) for a constant X (NoPeek's case: X is data), with a hand-written backward:
// one Gram product forward and one product backward, instead of autograd's three, and
// no B x d temporaries beyond the centred Z. `a` is X's double-centred distance matrix.
// The same clamps as the autograd path: r <= eps and d2 <= 0 give zero, never NaN.
class DcorZ : public torch::autograd::Function<DcorZ> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& a, const torch::Tensor& z) {
    const auto n = z.size(0);
    auto zc = z.reshape({n, -1});
    zc = zc - zc.mean(0, true);
    const auto gram = zc.mm(zc.t());
    const auto sq = gram.diagonal().unsqueeze(1);
    const auto d2 = (sq + sq.t() - 2 * gram).clamp_min(0);
    const double eps = z.scalar_type() == torch::kFloat64 ? 1e-300 : 1e-30;
    auto d = torch::where(d2 > 0, d2.clamp_min(eps).sqrt(), torch::zeros_like(d2));
    d.fill_diagonal_(0);
    const auto b = double_centre(d);
    const double nn = static_cast<double>(n) * static_cast<double>(n);
    const double c = (a * b).sum().item<double>() / nn;
    const double vx = (a * a).sum().item<double>() / nn, vz = (b * b).sum().item<double>() / nn;
    const double denom = vx * vz > 0 ? std::sqrt(vx * vz) : 0.0;
    const double r = denom > 0 ? std::max(c, 0.0) / std::max(denom, 1e-30) : 0.0;
    const double r_eps = z.scalar_type() == torch::kFloat64 ? 1e-30 : 1e-20;
    const double value = r > r_eps ? std::sqrt(r) : 0.0;
    ctx->save_for_backward({a, zc, d, b});
    ctx->saved_data["c"] = c;
    ctx->saved_data["vz"] = vz;
    ctx->saved_data["denom"] = denom;
    ctx->saved_data["r"] = r;
    ctx->saved_data["value"] = value;
    ctx->saved_data["shape"] = z.sizes().vec();
    return torch::full({}, value, z.options());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto &a = saved[0], &zc = saved[1], &d = saved[2], &b = saved[3];
    const double c = ctx->saved_data["c"].toDouble(), vz = ctx->saved_data["vz"].toDouble();
    const double denom = ctx->saved_data["denom"].toDouble(), r = ctx->saved_data["r"].toDouble();
    const double value = ctx->saved_data["value"].toDouble();
    const auto shape = ctx->saved_data["shape"].toIntVector();
    const auto n = zc.size(0);
    if (value == 0.0 || denom <= 0 || c < 0) return {torch::Tensor(), torch::zeros(shape, zc.options())};
    // value = sqrt(r), r = c / sqrt(vx vz); c = <A, B>/n^2, vz = <B, B>/n^2.
    const double nn = static_cast<double>(n) * static_cast<double>(n);
    const double dr = 0.5 / value;
    const double dc = dr / denom, dvz = -dr * r / (2 * vz);
    auto g_b = (dc / nn) * a + (2 * dvz / nn) * b;  // dL/dB, before the outer grad scalar
    auto g_d = double_centre(g_b);                  // centring is a symmetric projection
    // D = sqrt(d2) off the diagonal: dD/dd2 = 1 / (2 D); zero where D is.
    auto g_d2 = torch::where(d > 0, g_d / (2 * d.clamp_min(1e-30)), torch::zeros_like(d));
    g_d2.fill_diagonal_(0);
    // d2 = sq_i + sq_j - 2 G_ij  ->  dL/dG = diag(rowsum + colsum) - 2 g_d2 (symmetric)
    auto g_gram = -2 * g_d2;
    g_gram.diagonal().add_(g_d2.sum(1) + g_d2.sum(0));
    // G = Zc Zc^T -> dZc = (H + H^T) Zc; Zc = Z - mean -> dZ = (I - 11^T/n) dZc. The
    // centring and the outer gradient are folded into the n x n matrix, so the only
    // pass over n x d is the product itself.
    auto m = g_gram + g_gram.t();
    m = (m - m.mean(0, true)) * grad_out[0];
    return {torch::Tensor(), m.mm(zc).reshape(shape)};
  }
};

}  // namespace

torch::Tensor dcor(const torch::Tensor& x, const torch::Tensor& z) {
  check(x, z, 2);
  if (!x.requires_grad()) {
    torch::Tensor a;
    {
      torch::NoGradGuard no_grad;
      a = double_centre(distances(x));
    }
    return DcorZ::apply(a, z.to(x.scalar_type()));
  }
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
