// cut_decode: the compressed cut's receiving sides (cut/codec.h): the server's
// decode_activations and the client's decode_gradient, for any coding and the tensors a
// peer could send after the wire codec (any dtype, any shape, any bytes). The cut is 24
// per sample (one dimension: read_tensor's shapes reach the dense form), batches of at
// most 8.
//   input := u8 values (mod 4), u8 grad_values (mod 4), u8 kept (mod 26),
//            u8 tensor_count (mod 5), tensor{tensor_count},
//            u8 grad_tensor_count (mod 3), tensor{grad_tensor_count}
//   tensor := as fuzz_common.h's read_tensor reads it (dtype, shape, bytes)
// Refusal is ProtocolError. Accepted activations are float32 [B x 24], 1 <= B <= 8,
// finite and within the bound; with top-k, `cols` is [B x kept], each row strictly
// ascending in [0, 24), and z is zero outside it. A gradient encoded for them decodes
// again (the value coding's rounding of it, zero outside cols); a dense fp32/bf16/fp16
// cut encodes again to the same values. The gradient tensors of the input, decoded for
// the accepted cut's cols, are refused or a finite float32 tensor of z's shape.
#include <torch/torch.h>

#include "cutlayer/cut/codec.h"
#include "cutlayer/error.h"
#include "cutlayer/wire/values.h"
#include "fuzz_common.h"

namespace cutlayer::fuzz::cut_decode {
namespace {

const std::vector<std::int64_t> kShape{24};
constexpr std::int64_t kPerSample = 24;
constexpr std::int64_t kMaxBatch = 8;
constexpr double kBound = 1e6;

bool same(const torch::Tensor& a, const torch::Tensor& b) {
  return a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() &&
         std::memcmp(a.contiguous().data_ptr(), b.contiguous().data_ptr(), a.nbytes()) == 0;
}

void check_accepted(const cut::Received& r, const wire::CutCoding& c) {
  check(r.z.defined() && r.z.scalar_type() == torch::kFloat32 && r.z.dim() == 2, "z is not float32 [B x 24]");
  const auto b = r.z.size(0);
  check(b >= 1 && b <= kMaxBatch && r.z.sizes().slice(1) == torch::IntArrayRef(kShape), "z of the wrong shape");
  check(wire::within_bound(r.z.contiguous(), kBound), "a value past the bound was accepted");
  if (c.kept == 0) {
    check(!r.cols.defined(), "columns for a dense cut");
    return;
  }
  check(r.cols.defined() && r.cols.scalar_type() == torch::kInt64 && r.cols.sizes() == torch::IntArrayRef({b, c.kept}),
        "cols is not int64 [B x kept]");
  check((r.cols >= 0).all().item<bool>() && (r.cols < kPerSample).all().item<bool>(), "a column out of range");
  if (c.kept > 1)
    check((r.cols.slice(1, 1) > r.cols.slice(1, 0, -1)).all().item<bool>(), "columns not strictly ascending");
  const auto mask = torch::zeros({b, kPerSample}, torch::kBool).scatter_(1, r.cols, true);
  check((r.z.reshape({b, -1}).masked_select(~mask) == 0).all().item<bool>(), "z is not zero outside cols");
}

}  // namespace

int fuzz_one(const std::uint8_t* data, std::size_t size) {
  Input in(data, size);
  wire::CutCoding c;
  c.values = static_cast<wire::CutValues>(in.take<std::uint8_t>() % 4);
  c.grad_values = static_cast<wire::CutValues>(in.take<std::uint8_t>() % 4);
  c.kept = in.take<std::uint8_t>() % 26;  // 25: more than the cut has
  std::vector<torch::Tensor> tensors, grad;
  for (int i = in.take<std::uint8_t>() % 5; i > 0; --i) tensors.push_back(read_tensor(in, 1 << 12));
  for (int i = in.take<std::uint8_t>() % 3; i > 0; --i) grad.push_back(read_tensor(in, 1 << 12));

  cut::Received r;
  try {
    r = cut::decode_activations(tensors, c, kShape, kMaxBatch, kBound);
  } catch (const ProtocolError&) {
    return 0;
  }
  check(c.kept <= kPerSample, "a cut keeping more than it has was accepted");
  check_accepted(r, c);

  const auto dz = torch::linspace(-3, 3, r.z.numel()).reshape(r.z.sizes());
  const auto back = cut::decode_gradient(cut::encode_gradient(dz, r.cols, c), c, r.cols, r.z.sizes(), kBound);
  const auto kept_dz = c.kept ? dz.reshape({r.z.size(0), -1}).gather(1, r.cols) : dz;
  const auto want = c.kept ? torch::zeros({r.z.size(0), kPerSample})
                                 .scatter_(1, r.cols, cut::round_values(kept_dz, c.grad_values))
                                 .reshape(r.z.sizes())
                           : cut::round_values(dz, c.grad_values);
  check(same(back, want), "a gradient for the accepted cut does not decode to its rounding");
  if (c.kept == 0 && c.values != wire::CutValues::kInt8)
    check(same(cut::encode_activations(r.z, c).as_received, r.z), "a decoded dense cut changes when sent again");

  try {
    const auto g = cut::decode_gradient(grad, c, r.cols, r.z.sizes(), kBound);
    check(g.scalar_type() == torch::kFloat32 && g.sizes() == r.z.sizes() && wire::within_bound(g.contiguous(), kBound),
          "an accepted gradient is not finite float32 of z's shape");
  } catch (const ProtocolError&) {
  }
  return 0;
}

}  // namespace cutlayer::fuzz::cut_decode

CUTLAYER_FUZZ_ENTRY(cut_decode)
