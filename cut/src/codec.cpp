#include "cutlayer/cut/codec.h"

#include <torch/torch.h>

#include <cfloat>
#include <cmath>
#include <string>

#include "cutlayer/cut/options.h"
#include "cutlayer/error.h"
#include "cutlayer/kernels/sparse_codec.h"
#include "cutlayer/wire/values.h"

namespace cutlayer::cut {

namespace {

using wire::CutValues;

constexpr double kFp16Max = 65504.0;

// The bound decoded values must keep, and its name in a refusal.
struct Bound {
  double max_abs;
  const char* name;
};

torch::ScalarType dtype_of(CutValues v) {
  switch (v) {
    case CutValues::kBf16: return torch::kBFloat16;
    case CutValues::kFp16: return torch::kFloat16;
    case CutValues::kInt8: return torch::kInt8;
    default: return torch::kFloat32;
  }
}

// int8: one scale per row, |q| <= 127. A row whose scale would be below float32's smallest
// normal (its inverse would overflow) travels as zeros: scale 0.
torch::Tensor row_scales(const torch::Tensor& x) {
  const auto s = x.reshape({x.size(0), -1}).abs().amax(1) / 127.0;
  return torch::where(s >= FLT_MIN, s, torch::zeros_like(s));
}

std::vector<std::int64_t> row_view(const torch::Tensor& x) { return {x.size(0), x.numel() / std::max<std::int64_t>(1, x.size(0))}; }

// `x` (float32, rows first) as it travels: one tensor, or [q, scales] for int8.
std::vector<torch::Tensor> encode_values(const torch::Tensor& x, CutValues v) {
  switch (v) {
    case CutValues::kFp32: return {x.contiguous()};
    case CutValues::kBf16: return {x.to(torch::kBFloat16)};
    case CutValues::kFp16: return {x.clamp(-kFp16Max, kFp16Max).to(torch::kFloat16)};
    case CutValues::kInt8: {
      const auto scales = row_scales(x);
      const auto inv = torch::where(scales > 0, 1.0 / scales, torch::zeros_like(scales));
      const auto rows = x.reshape(row_view(x)) * inv.unsqueeze(1);
      return {rows.round().clamp(-127, 127).to(torch::kInt8).reshape(x.sizes()), scales.contiguous()};
    }
  }
  throw ProtocolError("cut: unknown value coding");
}

// The float32 values encode_values' tensors [at, ...] stand for (their shape checked).
torch::Tensor dequantize(const std::vector<torch::Tensor>& t, std::size_t at, CutValues v) {
  const auto& q = t[at];
  if (v != CutValues::kInt8) return q.to(torch::kFloat32).contiguous();
  return (q.to(torch::kFloat32).reshape(row_view(q)) * t[at + 1].unsqueeze(1)).reshape(q.sizes());
}

// The float32 values that `t` (tensors [at, at + 1 (+1 int8)]) stands for, of shape `shape`.
torch::Tensor decode_values(const std::vector<torch::Tensor>& t, std::size_t at, CutValues v,
                            const std::vector<std::int64_t>& shape, const Bound& bound, const char* what) {
  const auto& q = t[at];
  if (!q.defined() || q.scalar_type() != dtype_of(v) || q.sizes() != torch::IntArrayRef(shape))
    throw ProtocolError(std::string(what) + ": expected " + values_name(v) + " values of shape " +
                        torch::str(torch::IntArrayRef(shape)) + ", got " +
                        (q.defined() ? std::string(c10::toString(q.scalar_type())) + " " + torch::str(q.sizes()) : "none"));
  if (v == CutValues::kInt8) {
    const auto& s = t[at + 1];
    if (!s.defined() || s.scalar_type() != torch::kFloat32 || s.dim() != 1 || s.size(0) != shape[0])
      throw ProtocolError(std::string(what) + ": int8 values need float32 scales [" + std::to_string(shape[0]) + "]");
    wire::check_values(s, bound.max_abs, what, bound.name);
    if (s.numel() > 0 && s.min().item<float>() < 0) throw ProtocolError(std::string(what) + ": a negative int8 scale");
    if (q.numel() > 0 && q.min().item<std::int8_t>() < -127)
      throw ProtocolError(std::string(what) + ": an int8 value of -128 (the coding's range is -127..127)");
  }
  auto x = dequantize(t, at, v);
  wire::check_values(x, bound.max_abs, what, bound.name);
  return x;
}

std::size_t value_tensors(CutValues v) { return v == CutValues::kInt8 ? 2 : 1; }

// Each row's `k` columns: the top (k - random share) by magnitude, the rest drawn uniformly
// from the others; ascending.
torch::Tensor select_cols(const torch::Tensor& rows, std::int64_t k, double random) {
  const auto n = rows.size(1);
  const auto drawn = std::min<std::int64_t>(k, static_cast<std::int64_t>(std::llround(random * static_cast<double>(k))));
  torch::Tensor cols;
  if (k - drawn > 0) cols = std::get<1>(rows.abs().topk(k - drawn, 1, /*largest=*/true, /*sorted=*/false));
  if (drawn > 0) {
    auto keys = torch::rand({rows.size(0), n});
    if (cols.defined()) keys.scatter_(1, cols, -1.0);
    auto extra = std::get<1>(keys.topk(drawn, 1, true, false));
    cols = cols.defined() ? torch::cat({cols, extra}, 1) : extra;
  }
  return std::get<0>(cols.sort(1));
}

torch::Tensor flat_positions(const torch::Tensor& cols, std::int64_t n) {
  return (cols + torch::arange(cols.size(0), torch::kInt64).unsqueeze(1) * n).reshape({-1});
}

}  // namespace

torch::Tensor round_values(const torch::Tensor& x, CutValues v) {
  if (v == CutValues::kFp32) return x;
  return dequantize(encode_values(x, v), 0, v);
}

std::size_t activation_tensors(const wire::CutCoding& c) { return value_tensors(c.values) + (c.kept > 0 ? 1 : 0); }

Sent encode_activations(const torch::Tensor& z, const wire::CutCoding& c, double random) {
  Sent s;
  if (c.kept == 0) {
    s.tensors = encode_values(z, c.values);
    s.as_received = c.values == CutValues::kFp32 ? z : dequantize(s.tensors, 0, c.values);
    return s;
  }
  const auto rows = z.reshape(row_view(z));
  const auto n = rows.size(1);
  const auto k = std::min<std::int64_t>(c.kept, n);
  s.cols = select_cols(rows, k, random);
  const auto vals = rows.gather(1, s.cols);
  s.tensors = {kernels::encode_varint_indices(flat_positions(s.cols, n))};
  for (auto& t : encode_values(vals, c.values)) s.tensors.push_back(std::move(t));
  s.as_received = torch::zeros_like(rows).scatter_(1, s.cols, dequantize(s.tensors, 1, c.values)).reshape(z.sizes());
  return s;
}

Received decode_activations(const std::vector<torch::Tensor>& t, const wire::CutCoding& c,
                            const std::vector<std::int64_t>& cut_shape, std::int64_t max_batch, double max_abs) {
  const char* what = "cut activations";
  const Bound bound{max_abs, "the server's limits.max_abs_value"};
  if (t.size() < activation_tensors(c))
    throw ProtocolError("Activations: " + std::to_string(t.size()) + " tensors, the cut alone takes " +
                        std::to_string(activation_tensors(c)));
  std::int64_t n = 1;
  for (auto d : cut_shape) n *= d;
  const auto& lead = t[c.kept > 0 ? 1 : 0];  // the values: their first dimension is the batch
  const std::int64_t b = lead.defined() && lead.dim() >= 1 ? lead.size(0) : 0;
  if (b < 1 || b > max_batch)
    throw ProtocolError(std::string(what) + ": batch of " + std::to_string(b) + ", expected 1 <= B <= " +
                        std::to_string(max_batch));
  std::vector<std::int64_t> shape{b};
  Received r;
  if (c.kept == 0) {
    shape.insert(shape.end(), cut_shape.begin(), cut_shape.end());
    r.z = decode_values(t, 0, c.values, shape, bound, what);
    return r;
  }
  const std::int64_t k = c.kept;
  if (k > n) throw ProtocolError("cut: " + std::to_string(k) + " kept of " + std::to_string(n) + " per sample");
  auto vals = decode_values(t, 1, c.values, {b, k}, bound, what);
  const auto flat = kernels::decode_indices(t[0], kernels::IndexCoding::kDeltaVarint, b * k, b * n).to(torch::kInt64);
  const auto rows = torch::arange(b * k, torch::kInt64).div(k, "floor");
  if (!flat.div(n, "floor").equal(rows))
    throw ProtocolError(std::string(what) + ": each sample must send exactly " + std::to_string(k) +
                        " of its own activations");
  r.cols = (flat - rows * n).reshape({b, k});
  r.z = torch::zeros({b, n}).scatter_(1, r.cols, vals);
  shape.insert(shape.end(), cut_shape.begin(), cut_shape.end());
  r.z = r.z.reshape(shape);
  return r;
}

std::vector<torch::Tensor> encode_gradient(const torch::Tensor& dz, const torch::Tensor& cols,
                                           const wire::CutCoding& c) {
  if (c.kept == 0) return encode_values(dz, c.grad_values);
  return encode_values(dz.reshape(row_view(dz)).gather(1, cols), c.grad_values);
}

torch::Tensor decode_gradient(const std::vector<torch::Tensor>& t, const wire::CutCoding& c,
                              const torch::Tensor& cols, torch::IntArrayRef sizes, double max_abs) {
  const char* what = "server: CutGrad";
  const Bound bound{max_abs, "this client's bound on the server's gradients"};
  if (t.size() != value_tensors(c.grad_values))
    throw ProtocolError(std::string(what) + " with " + std::to_string(t.size()) + " tensors, expected " +
                        std::to_string(value_tensors(c.grad_values)));
  if (c.kept == 0) return decode_values(t, 0, c.grad_values, sizes.vec(), bound, what);
  const auto vals = decode_values(t, 0, c.grad_values, {cols.size(0), cols.size(1)}, bound, what);
  const auto n = c10::multiply_integers(sizes) / std::max<std::int64_t>(1, sizes[0]);
  return torch::zeros({sizes[0], n}).scatter_(1, cols, vals).reshape(sizes);
}

torch::Tensor straight_through(const torch::Tensor& z, const Sent& s) {
  if (!s.cols.defined()) return z + (s.as_received - z).detach();
  const auto rows = row_view(z);
  const auto mask = torch::zeros(rows).scatter_(1, s.cols, 1.0).reshape(z.sizes());
  const auto kept = z * mask;
  return kept + (s.as_received - kept).detach();
}

namespace {
// Identity forward; the gradient rounded as it would travel.
struct RoundGrad : torch::autograd::Function<RoundGrad> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, std::int64_t v) {
    ctx->saved_data["v"] = v;
    return x.view_as(x);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list g) {
    const auto v = static_cast<CutValues>(ctx->saved_data["v"].toInt());
    return {round_values(g[0], v), torch::Tensor()};
  }
};
}  // namespace

ThroughCut through_cut(const torch::Tensor& z, const wire::CutCoding& c, double random) {
  const auto s = encode_activations(z.detach(), c, random);
  // Rounded after straight_through's mask: int8's scale is then that of the kept entries,
  // as on the wire.
  const bool round = c.grad_values != CutValues::kFp32 && z.requires_grad();
  const auto nopeek = straight_through(z, s);
  if (!round) return {nopeek, nopeek};
  return {straight_through(RoundGrad::apply(z, static_cast<std::int64_t>(c.grad_values)), s), nopeek};
}

}  // namespace cutlayer::cut
