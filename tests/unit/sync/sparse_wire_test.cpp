// Sparse vectors to message tensors and back: the bytes on the wire (pinned by digests
// taken before sync/ was split), encode()'s as-sent vector against what the receiver
// decodes, and malformed input.
#include "cutlayer/sync/sparse_wire.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "cutlayer/crypto/crypto.h"
#include "cutlayer/error.h"
#include "cutlayer/wire/message.h"
#include "cutlayer/wire/messages.h"

namespace cutlayer::sync {
namespace {

// The same on every platform (mt19937's outputs are fixed by the standard, the
// distributions are not): a sparse (nnz < numel) or dense (nnz == numel) vector whose
// values span fp16's range, subnormals included.
kernels::SparseTensor make_vector(std::uint32_t seed, std::int64_t numel, std::int64_t nnz) {
  std::mt19937 rng(seed);
  std::vector<float> values;
  for (std::int64_t j = 0; j < nnz; ++j) {
    const float v = static_cast<float>(static_cast<std::int64_t>(rng() % 200001) - 100000) / 3e4f;
    values.push_back(v * (j % 3 == 0 ? 1e-6f : j % 3 == 1 ? 1.f : 3000.f));
  }
  kernels::SparseTensor s;
  s.numel = numel;
  s.values = torch::tensor(values, torch::kFloat32);
  if (nnz == numel) return s;
  std::set<std::int64_t> picked;
  while (static_cast<std::int64_t>(picked.size()) < nnz) picked.insert(rng() % numel);
  s.indices = torch::tensor(std::vector<std::int64_t>(picked.begin(), picked.end()), torch::kInt64)
                  .to(kernels::index_dtype_for(numel));
  return s;
}

// What the codec turns into frames (its type, meta bytes and each tensor's dtype, shape
// and bytes), hashed. Protocol 4 appended SparseGrad.kfac_tensors to the meta (a uint32,
// 0 without K-FAC factors): it must be 0 here, and the bytes before it are protocol 3's,
// which the digests pin.
std::string wire_digest(const wire::Message& msg) {
  std::string bytes;
  auto put = [&](const void* p, std::size_t n) { bytes.append(static_cast<const char*>(p), n); };
  const auto type = static_cast<std::uint16_t>(msg.type);
  put(&type, sizeof type);
  constexpr std::size_t kKfacTensors = sizeof(std::uint32_t);
  EXPECT_GE(msg.meta.size(), kKfacTensors);
  const auto tail = msg.meta.substr(msg.meta.size() - kKfacTensors);
  EXPECT_EQ(tail, std::string(kKfacTensors, '\0')) << "SparseGrad.kfac_tensors is not the meta's last field, or not 0";
  put(msg.meta.data(), msg.meta.size() - kKfacTensors);
  for (const auto& t : msg.tensors) {
    const auto dtype = static_cast<std::int32_t>(t.scalar_type());
    put(&dtype, sizeof dtype);
    for (const auto d : t.sizes()) put(&d, sizeof d);
    const auto c = t.contiguous();
    put(c.data_ptr(), c.nbytes());
  }
  const auto d = crypto::sha256(bytes.data(), bytes.size());
  return crypto::to_hex(d.data(), 16);
}

struct Case {
  const char* name;
  std::int64_t numel, nnz;
  bool fp16, varint;
  const char* digest;  // of the SparseGrad's frames, before the split
};

const Case kCases[] = {
    {"sparse fp32 raw", 5000, 60, false, false, "e8af28c38edd3cd3aaca05653c90abd4"},
    {"sparse fp32 varint", 5000, 60, false, true, "0581ba4f6d718ee65f7a568236f92ef4"},
    {"sparse fp16 raw", 5000, 60, true, false, "6ee5455747f237a7673382d96a37acd2"},
    {"sparse fp16 varint", 5000, 60, true, true, "ef9ff38921fa89a7b910b169eb303ef6"},
    {"dense fp32 raw", 300, 300, false, false, "a8a8cfd5282db12f29d4fc3fe4cfa9b6"},
    {"dense fp32 varint", 300, 300, false, true, "6da04bc8add962ff15eac1f1adef4813"},
    {"dense fp16 raw", 300, 300, true, false, "83f9b27fb874ea90790a2eb6e97e6265"},
    {"dense fp16 varint", 300, 300, true, true, "0be4c4d8b31cdb08993b672837f8fa4f"},
    {"empty varint", 5000, 0, false, true, "7d444182925e86e13c50c1f291623b26"},
    {"int64 indices raw", 3000000000, 60, false, false, "6158121394177fa9abca3b8c74ea61ae"},
    {"int64 indices fp16 varint", 3000000000, 60, true, true, "248bbc54025a6fcd8cef207c40f38106"},
};

wire::Message sparse_grad(const std::vector<torch::Tensor>& tensors,
                          const wire::SparseLayout& layout) {
  wire::SparseGrad g;
  g.seq = 3;
  g.base = 2;
  g.samples = 64;
  g.layout = layout;
  return wire::make_message(g, tensors);
}

wire::Message sparse_grad(const kernels::SparseTensor& s, bool fp16, bool varint) {
  wire::SparseLayout layout;
  auto tensors = to_tensors(s, fp16, varint, layout);
  return sparse_grad(tensors, layout);
}

// Digests taken with sync/src/sync.cpp and kernels' PackedSparse (commit 6d3d2b1), before
// the split: to_tensors and encode still send those bytes.
TEST(SparseWire, BytesOnTheWireAreUnchanged) {
  std::uint32_t seed = 1;
  for (const auto& c : kCases) {
    const auto s = make_vector(seed++, c.numel, c.nnz);
    EXPECT_EQ(wire_digest(sparse_grad(s, c.fp16, c.varint)), c.digest) << c.name;
    const auto e = encode(s, c.fp16, c.varint);
    EXPECT_EQ(wire_digest(sparse_grad(e.tensors, e.layout)), c.digest) << c.name;
  }
}

void expect_bit_equal(const kernels::SparseTensor& a, const kernels::SparseTensor& b,
                      const char* what) {
  ASSERT_EQ(a.numel, b.numel) << what;
  ASSERT_EQ(a.dense(), b.dense()) << what;
  ASSERT_EQ(a.values.scalar_type(), b.values.scalar_type()) << what;
  EXPECT_TRUE(torch::equal(a.values, b.values)) << what;
  if (!a.dense()) {
    ASSERT_EQ(a.indices.scalar_type(), b.indices.scalar_type()) << what;
    EXPECT_TRUE(torch::equal(a.indices, b.indices)) << what;
  }
}

// encode().sent is what the receiver decodes: the layout after its trip through the
// message meta, the same tensors, from_tensors. fp16 rounds values and the difference is
// exactly what error feedback keeps.
TEST(SparseWire, EncodedSentIsWhatTheReceiverDecodes) {
  std::uint32_t seed = 100;
  for (const auto& c : kCases) {
    const auto s = make_vector(seed++, c.numel, c.nnz);
    const auto e = encode(s, c.fp16, c.varint);
    const auto msg = sparse_grad(e.tensors, e.layout);
    const auto layout = wire::meta_as<wire::SparseGrad>(msg).layout;
    const auto received = from_tensors(layout, msg.tensors, c.numel);
    expect_bit_equal(e.sent, received, c.name);
    EXPECT_EQ(e.sent.values.scalar_type(), torch::kFloat32) << c.name;
    if (c.fp16 && c.nnz > 0) {
      EXPECT_FALSE(torch::equal(e.sent.values, s.values)) << c.name << ": fp16 rounds";
      EXPECT_TRUE(torch::equal(e.sent.values, s.values.to(torch::kFloat16).to(torch::kFloat32)))
          << c.name;
    } else {
      EXPECT_TRUE(torch::equal(e.sent.values, s.values)) << c.name;
    }
  }
}

TEST(SparseWire, EncodeDescribesItsTensors) {
  const auto sparse = make_vector(7, 5000, 60), dense = make_vector(8, 300, 300);
  auto e = encode(sparse, false, true);
  EXPECT_EQ(e.layout.numel, 5000u);
  EXPECT_FALSE(e.layout.dense);
  EXPECT_EQ(e.layout.index_coding, 1);
  ASSERT_EQ(e.tensors.size(), 2u);
  EXPECT_EQ(e.tensors[0].scalar_type(), torch::kUInt8);
  e = encode(sparse, true, false);
  EXPECT_EQ(e.layout.index_coding, 0);
  EXPECT_EQ(e.tensors[0].scalar_type(), torch::kInt32);
  EXPECT_EQ(e.tensors[1].scalar_type(), torch::kFloat16);
  EXPECT_EQ(payload_bytes(e.tensors), 60u * 4 + 60u * 2);
  e = encode(dense, false, true);  // no indices, so no coding whatever was asked
  EXPECT_TRUE(e.layout.dense);
  EXPECT_EQ(e.layout.index_coding, 0);
  ASSERT_EQ(e.tensors.size(), 1u);
  EXPECT_EQ(payload_bytes(e.tensors), 300u * 4);
}

TEST(SparseWire, MalformedTensorsAreProtocolErrors) {
  const auto s = make_vector(9, 5000, 60);
  const auto e = encode(s, false, true);
  EXPECT_NO_THROW(from_tensors(e.layout, e.tensors, 5000));
  EXPECT_THROW(from_tensors(e.layout, e.tensors, 4999), ProtocolError);  // another model
  auto layout = e.layout;
  layout.index_coding = 2;  // unknown
  EXPECT_THROW(from_tensors(layout, e.tensors, 5000), ProtocolError);
  layout = e.layout;
  layout.dense = true;  // two tensors for a dense vector
  EXPECT_THROW(from_tensors(layout, e.tensors, 5000), ProtocolError);
  EXPECT_THROW(from_tensors(e.layout, {e.tensors[1]}, 5000), ProtocolError);  // values alone
  auto nan = e.tensors;
  nan[1] = nan[1].clone();
  nan[1][5] = std::nanf("");
  EXPECT_THROW(from_tensors(e.layout, nan, 5000), ProtocolError);
  // fp16 cannot hold 1e5: encode sends infinity, the receiver refuses it.
  auto big = s;
  big.values = big.values.clone();
  big.values[0] = 1e5f;
  const auto h = encode(big, true, true);
  EXPECT_TRUE(std::isinf(h.sent.values[0].item<float>()));
  EXPECT_THROW(from_tensors(h.layout, h.tensors, 5000), ProtocolError);
}

}  // namespace
}  // namespace cutlayer::sync
