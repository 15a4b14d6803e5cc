#include "cutlayer/kernels/sparse_codec.h"

#include <cstring>
#include <string>
#include <vector>

#include "cutlayer/error.h"

namespace cutlayer::kernels {

torch::Tensor encode_varint_indices(const torch::Tensor& indices) {
  const auto idx = indices.to(torch::kInt64).contiguous();
  const auto* pi = idx.data_ptr<std::int64_t>();
  std::vector<std::uint8_t> out;
  out.reserve(static_cast<std::size_t>(idx.numel()) * 2);
  std::int64_t prev = -1;
  for (std::int64_t j = 0; j < idx.numel(); ++j) {
    std::uint64_t gap = static_cast<std::uint64_t>(pi[j] - prev - 1);  // >= 0: ascending, unique
    prev = pi[j];
    do {
      std::uint8_t byte = gap & 0x7f;
      gap >>= 7;
      if (gap) byte |= 0x80;
      out.push_back(byte);
    } while (gap);
  }
  auto bytes = torch::empty({static_cast<std::int64_t>(out.size())}, torch::kUInt8);
  if (!out.empty()) std::memcpy(bytes.data_ptr(), out.data(), out.size());  // data() may be null
  return bytes;
}

std::vector<torch::Tensor> pack(const SparseTensor& s, const PackOptions& o) {
  auto values = o.values == ValueType::kFloat16 ? s.values.to(torch::kFloat16) : s.values;
  if (s.dense()) return {values};
  if (o.index == IndexCoding::kRaw) return {s.indices.to(index_dtype_for(s.numel)), values};
  return {encode_varint_indices(s.indices), values};
}

SparseTensor as_unpacked(const SparseTensor& s, const std::vector<torch::Tensor>& packed) {
  SparseTensor u;
  u.numel = s.numel;
  u.values = packed.back().to(torch::kFloat32).contiguous();  // as unpack() converts them
  if (!s.dense()) u.indices = s.indices.to(index_dtype_for(s.numel)).contiguous();
  return u;
}

torch::Tensor decode_indices(const torch::Tensor& indices, IndexCoding coding, std::int64_t nnz,
                             std::int64_t numel) {
  if (!indices.defined() || indices.dim() != 1)
    throw ProtocolError("sparse tensor: indices must be 1-D");
  if (nnz < 0 || nnz > numel) throw ProtocolError("sparse tensor: more values than elements");
  // Each index takes at least one byte of varint (one element of raw): checked before allocating.
  if (indices.numel() < nnz) throw ProtocolError("sparse tensor: fewer index elements (or varint bytes) than values");
  auto idx = torch::empty({nnz}, torch::kInt64);
  auto* out = idx.data_ptr<std::int64_t>();
  std::int64_t prev = -1;
  if (coding == IndexCoding::kRaw) {
    if (indices.scalar_type() != torch::kInt32 && indices.scalar_type() != torch::kInt64)
      throw ProtocolError("sparse tensor: raw indices must be int32 or int64");
    if (indices.numel() != nnz) throw ProtocolError("sparse tensor: index and value counts differ");
    const auto src = indices.to(torch::kInt64).contiguous();
    const auto* pi = src.data_ptr<std::int64_t>();
    for (std::int64_t j = 0; j < nnz; ++j) {
      if (pi[j] <= prev || pi[j] >= numel)
        throw ProtocolError("sparse tensor: index " + std::to_string(pi[j]) + " at position " +
                            std::to_string(j) + " is out of range or not ascending");
      out[j] = prev = pi[j];
    }
  } else if (coding == IndexCoding::kDeltaVarint) {
    if (indices.scalar_type() != torch::kUInt8)
      throw ProtocolError("sparse tensor: varint indices must be uint8 bytes");
    const auto bytes = indices.contiguous();
    const auto* b = bytes.data_ptr<std::uint8_t>();
    const std::int64_t nb = bytes.numel();
    std::int64_t at = 0;
    for (std::int64_t j = 0; j < nnz; ++j) {
      std::uint64_t gap = 0;
      int shift = 0;
      while (true) {
        if (at >= nb) throw ProtocolError("sparse tensor: varint indices truncated");
        const std::uint8_t byte = b[at++];
        if (shift > 56) throw ProtocolError("sparse tensor: varint longer than 64 bits");
        gap |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
        shift += 7;
        if (!(byte & 0x80)) break;
      }
      if (gap >= static_cast<std::uint64_t>(numel - prev - 1))
        throw ProtocolError("sparse tensor: index past the end at position " + std::to_string(j));
      out[j] = prev = prev + 1 + static_cast<std::int64_t>(gap);
    }
    if (at != nb) throw ProtocolError("sparse tensor: trailing bytes after the varint indices");
  } else {
    throw ProtocolError("sparse tensor: unknown index coding");
  }
  return idx.to(index_dtype_for(numel));
}

SparseTensor unpack(const std::vector<torch::Tensor>& packed, IndexCoding coding,
                    std::int64_t numel, std::int64_t max_numel) {
  if (numel < 0 || numel > max_numel)
    throw ProtocolError("sparse tensor: numel " + std::to_string(numel) + " outside [0, " +
                        std::to_string(max_numel) + "]");
  if (packed.size() != 1 && packed.size() != 2)
    throw ProtocolError("sparse tensor: " + std::to_string(packed.size()) +
                        " tensors, expected [indices, values] or [values]");
  const auto& values = packed.back();
  if (!values.defined() || values.dim() != 1 ||
      (values.scalar_type() != torch::kFloat32 && values.scalar_type() != torch::kFloat16))
    throw ProtocolError("sparse tensor: values must be 1-D float32 or float16");
  SparseTensor s;
  s.numel = numel;
  s.values = values.to(torch::kFloat32).contiguous();
  const std::int64_t nnz = s.values.numel();
  if (packed.size() == 1) {
    if (nnz != numel) throw ProtocolError("dense tensor: values count differs from numel");
    return s;
  }
  const auto& indices = packed.front();
  if (nnz > numel) throw ProtocolError("sparse tensor: more values than elements");
  s.indices = decode_indices(indices, coding, nnz, numel);
  return s;
}

}  // namespace cutlayer::kernels
