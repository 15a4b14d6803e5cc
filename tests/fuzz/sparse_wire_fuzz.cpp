// sparse_wire: the sparse codec's receiving side, sync::from_tensors (and under it
// kernels::unpack): a SparseLayout and the tensors a SparseGrad or Update carries, as a
// peer could make them after the wire codec (any dtype, any shape, any bytes).
//   input := u8 dense, u8 index_coding, u16 expect_numel, u8 numel_from_input,
//            [u64 layout.numel when numel_from_input is odd], u8 tensor_count (mod 4),
//            tensor{tensor_count}
//   tensor := as fuzz_common.h's read_tensor reads it (dtype, shape, bytes)
// Refusal is ProtocolError. An accepted vector is well formed (float32 finite values;
// indices of the right dtype, strictly ascending, in range) and survives every encoding
// (fp32/fp16 values x raw/varint indices) and decoding again, bit for bit as encode()
// says it travels (fp16 refused only for a value past float16's range).
#include <torch/torch.h>

#include "cutlayer/error.h"
#include "cutlayer/sync/sparse_wire.h"
#include "fuzz_common.h"

namespace cutlayer::fuzz::sparse_wire {
namespace {

constexpr std::int64_t kMaxElements = 1 << 16;

void check_well_formed(const kernels::SparseTensor& s, std::int64_t numel) {
  check(s.numel == numel, "numel differs from the expected one");
  check(s.values.defined() && s.values.dim() == 1 && s.values.scalar_type() == torch::kFloat32 &&
            s.values.is_contiguous(),
        "values are not a 1-D contiguous float32 tensor");
  check(torch::isfinite(s.values).all().item<bool>(), "a NaN or infinite value was accepted");
  if (s.dense()) {
    check(s.values.numel() == numel, "dense vector with a value count other than numel");
    return;
  }
  check(s.indices.dim() == 1 && s.indices.scalar_type() == kernels::index_dtype_for(numel),
        "indices are not 1-D of index_dtype_for(numel)");
  check(s.indices.numel() == s.values.numel(), "index and value counts differ");
  const auto idx = s.indices.to(torch::kInt64).contiguous();
  const auto* p = idx.data_ptr<std::int64_t>();
  std::int64_t prev = -1;
  for (std::int64_t j = 0; j < idx.numel(); ++j) {
    check(p[j] > prev && p[j] < numel, "index out of range or not strictly ascending");
    prev = p[j];
  }
  (void)s.to_dense();
}

bool same(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.defined() != b.defined()) return false;
  if (!a.defined()) return true;
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const auto ca = a.contiguous(), cb = b.contiguous();
  return ca.nbytes() == 0 || std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.nbytes()) == 0;
}

}  // namespace

int fuzz_one(const std::uint8_t* data, std::size_t size) {
  Input in(data, size);
  wire::SparseLayout layout;
  layout.dense = (in.take<std::uint8_t>() & 1) != 0;
  layout.index_coding = in.take<std::uint8_t>();
  const std::int64_t expect = in.take<std::uint16_t>();
  layout.numel = (in.take<std::uint8_t>() & 1) != 0 ? in.take<std::uint64_t>()
                                                    : static_cast<std::uint64_t>(expect);
  const int count = in.take<std::uint8_t>() % 4;
  std::vector<torch::Tensor> tensors;
  for (int i = 0; i < count; ++i) tensors.push_back(read_tensor(in, kMaxElements));

  kernels::SparseTensor s;
  try {
    s = sync::from_tensors(layout, tensors, expect);
  } catch (const ProtocolError&) {
    return 0;
  }
  check_well_formed(s, expect);
  check(layout.numel == static_cast<std::uint64_t>(expect), "accepted a layout with another numel");

  for (const bool fp16 : {false, true}) {
    for (const bool varint : {false, true}) {
      const auto e = sync::encode(s, fp16, varint);
      kernels::SparseTensor back;
      try {
        back = sync::from_tensors(e.layout, e.tensors, expect);
      } catch (const ProtocolError& err) {
        const bool beyond_fp16 = fp16 && s.values.numel() > 0 && s.values.abs().max().item<float>() > 65504.f;
        check(beyond_fp16, std::string("an accepted vector, encoded again, is refused: ") + err.what());
        continue;
      }
      check_well_formed(back, expect);
      check(same(back.values, e.sent.values) && same(back.indices, e.sent.indices),
            "decoded vector differs from what encode() says travels");
      if (!fp16) check(same(back.values, s.values), "fp32 values changed on the way");
    }
  }
  return 0;
}

}  // namespace cutlayer::fuzz::sparse_wire

CUTLAYER_FUZZ_ENTRY(sparse_wire)
