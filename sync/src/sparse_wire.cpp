#include "cutlayer/sync/sparse_wire.h"

#include <string>

#include "cutlayer/error.h"
#include "cutlayer/kernels/sparse_codec.h"

namespace cutlayer::sync {

namespace {

kernels::PackOptions pack_options(bool fp16, bool varint) {
  kernels::PackOptions o;
  o.values = fp16 ? kernels::ValueType::kFloat16 : kernels::ValueType::kFloat32;
  o.index = varint ? kernels::IndexCoding::kDeltaVarint : kernels::IndexCoding::kRaw;
  return o;
}

wire::SparseLayout layout_of(const kernels::SparseTensor& s, const kernels::PackOptions& o) {
  wire::SparseLayout layout;
  layout.numel = static_cast<std::uint64_t>(s.numel);
  layout.dense = s.dense();
  layout.index_coding = static_cast<std::uint8_t>(kernels::packed_coding(s, o));
  return layout;
}

}  // namespace

Encoded encode(const kernels::SparseTensor& s, bool fp16, bool varint) {
  const auto o = pack_options(fp16, varint);
  Encoded e;
  e.tensors = kernels::pack(s, o);
  e.layout = layout_of(s, o);
  e.sent = kernels::as_unpacked(s, e.tensors);
  return e;
}

std::vector<torch::Tensor> to_tensors(const kernels::SparseTensor& s, bool fp16, bool varint,
                                      wire::SparseLayout& layout) {
  const auto o = pack_options(fp16, varint);
  layout = layout_of(s, o);
  return kernels::pack(s, o);
}

kernels::SparseTensor from_tensors(const wire::SparseLayout& layout,
                                   const std::vector<torch::Tensor>& tensors,
                                   std::int64_t expect_numel) {
  if (layout.numel != static_cast<std::uint64_t>(expect_numel))
    throw ProtocolError("sparse vector of " + std::to_string(layout.numel) +
                        " elements, expected " + std::to_string(expect_numel));
  if (layout.index_coding > static_cast<std::uint8_t>(kernels::IndexCoding::kDeltaVarint))
    throw ProtocolError("unknown index coding " + std::to_string(layout.index_coding));
  if (tensors.size() != (layout.dense ? 1u : 2u))
    throw ProtocolError(std::string("a ") + (layout.dense ? "dense" : "sparse") +
                        " vector travels as " + (layout.dense ? "[values]" : "[indices, values]") +
                        ", got " + std::to_string(tensors.size()) + " tensors");
  auto s = kernels::unpack(tensors, static_cast<kernels::IndexCoding>(layout.index_coding),
                           expect_numel, expect_numel);
  if (s.values.defined() && !torch::isfinite(s.values).all().item<bool>())
    throw ProtocolError("sparse vector with a NaN or infinite value");
  return s;
}

std::vector<torch::Tensor> leading(const std::vector<torch::Tensor>& tensors, std::size_t trailing, const char* what) {
  if (trailing > tensors.size())
    throw ProtocolError(std::string(what) + ": " + std::to_string(trailing) + " trailing tensors declared, " +
                        std::to_string(tensors.size()) + " in all");
  return {tensors.begin(), tensors.end() - static_cast<std::ptrdiff_t>(trailing)};
}

std::vector<torch::Tensor> after_sparse(const wire::SparseLayout& layout, const std::vector<torch::Tensor>& tensors,
                                        const char* what) {
  const std::size_t n = layout.dense ? 1 : 2;
  if (tensors.size() < n)
    throw ProtocolError(std::string(what) + ": " + std::to_string(tensors.size()) + " tensors, a " +
                        (layout.dense ? "dense" : "sparse") + " vector takes " + std::to_string(n));
  return {tensors.begin() + static_cast<std::ptrdiff_t>(n), tensors.end()};
}

std::size_t payload_bytes(const std::vector<torch::Tensor>& tensors) {
  std::size_t n = 0;
  for (auto& t : tensors) n += t.numel() * t.element_size();
  return n;
}

}  // namespace cutlayer::sync
