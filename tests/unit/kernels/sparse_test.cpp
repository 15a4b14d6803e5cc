#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <random>

#include "cutlayer/error.h"
#include "cutlayer/kernels/compressor.h"
#include "cutlayer/kernels/density_schedule.h"
#include "cutlayer/kernels/sparse_codec.h"
#include "cutlayer/kernels/sparse_sum.h"

namespace cutlayer::kernels {
namespace {

SparseTensor random_sparse(std::mt19937& rng, std::int64_t numel, std::int64_t nnz) {
  std::set<std::int64_t> picked;
  std::uniform_int_distribution<std::int64_t> d(0, numel - 1);
  while (static_cast<std::int64_t>(picked.size()) < nnz) picked.insert(d(rng));
  std::vector<std::int64_t> idx(picked.begin(), picked.end());
  SparseTensor s;
  s.numel = numel;
  s.indices = torch::tensor(idx, torch::kInt64).to(index_dtype_for(numel));
  s.values = torch::randn({nnz});
  return s;
}

TEST(SparseCodec, RoundTripsAllCodings) {
  std::mt19937 rng(1);
  for (int round = 0; round < 50; ++round) {
    const std::int64_t numel = 1 + rng() % 200000;
    const std::int64_t nnz = rng() % std::min<std::int64_t>(numel, 3000);
    const auto s = random_sparse(rng, numel, nnz);
    for (auto coding : {IndexCoding::kRaw, IndexCoding::kDeltaVarint}) {
      const auto back = unpack(pack(s, {ValueType::kFloat32, coding}), coding, numel, numel);
      EXPECT_TRUE(torch::equal(back.indices.to(torch::kInt64), s.indices.to(torch::kInt64)));
      EXPECT_TRUE(torch::equal(back.values, s.values));
      const auto half = unpack(pack(s, {ValueType::kFloat16, coding}), coding, numel, numel);
      EXPECT_TRUE(torch::allclose(half.values, s.values, 1e-3, 1e-3));
    }
  }
}

TEST(SparseCodec, Int32BelowTwoToThe31AndVarintPays) {
  std::mt19937 rng(2);
  const auto s = random_sparse(rng, 1000000, 10000);  // density 0.01: gaps ~100
  const auto raw = pack(s)[0];                        // [indices, values]
  EXPECT_EQ(raw.scalar_type(), torch::kInt32);
  const auto varint = pack(s, {ValueType::kFloat32, IndexCoding::kDeltaVarint})[0];
  std::printf(
      "[ measure ] density 0.01 index bytes: raw %zu, delta-varint %zu (%.2f bytes/index)\n",
      static_cast<std::size_t>(raw.nbytes()), static_cast<std::size_t>(varint.nbytes()),
      double(varint.nbytes()) / 10000);
  EXPECT_LT(varint.nbytes(), raw.nbytes() / 2);
  EXPECT_EQ(index_dtype_for((std::int64_t{1} << 31) + 1), torch::kInt64);
}

TEST(SparseCodec, MalformedInputIsProtocolError) {
  std::mt19937 rng(3);
  const auto s = random_sparse(rng, 1000, 50);
  constexpr auto kRaw = IndexCoding::kRaw, kVarint = IndexCoding::kDeltaVarint;
  const auto p = pack(s);                                    // [indices, values]
  EXPECT_THROW(unpack(p, kRaw, 2000, 1000), ProtocolError);  // numel over the cap
  auto bad = p;
  bad[0] = p[0].clone();
  bad[0][3] = bad[0][2];  // not ascending
  EXPECT_THROW(unpack(bad, kRaw, 1000, 1000), ProtocolError);
  bad = p;
  bad[0] = p[0].clone();
  bad[0][49] = 1000;  // out of range
  EXPECT_THROW(unpack(bad, kRaw, 1000, 1000), ProtocolError);
  bad = p;
  bad[0] = p[0].to(torch::kFloat32);  // indices that are not integers
  EXPECT_THROW(unpack(bad, kRaw, 1000, 1000), ProtocolError);
  bad = p;
  bad[1] = p[1].narrow(0, 0, 49);  // counts differ
  EXPECT_THROW(unpack(bad, kRaw, 1000, 1000), ProtocolError);
  const auto v = pack(s, {ValueType::kFloat32, kVarint});
  bad = v;
  bad[0] = v[0].narrow(0, 0, v[0].numel() - 1);  // truncated varint
  EXPECT_THROW(unpack(bad, kVarint, 1000, 1000), ProtocolError);
  bad = v;
  bad[0] = torch::full({60}, 0xff, torch::kUInt8);  // endless varint
  EXPECT_THROW(unpack(bad, kVarint, 1000, 1000), ProtocolError);
  bad = v;
  bad[0] = torch::cat({v[0], torch::zeros({1}, torch::kUInt8)});  // trailing byte
  EXPECT_THROW(unpack(bad, kVarint, 1000, 1000), ProtocolError);
  EXPECT_THROW(unpack({}, kRaw, 1000, 1000), ProtocolError);                  // no tensors
  EXPECT_THROW(unpack({p[0], p[0], p[1]}, kRaw, 1000, 1000), ProtocolError);  // three
  EXPECT_THROW(unpack({p[1]}, kRaw, 1000, 1000), ProtocolError);  // dense, 50 of 1000 values
}

// What the receiver decodes, known to the sender without parsing its own bytes: values
// rounded as they travel, indices in the receiver's dtype. Bit for bit, dense and sparse.
TEST(SparseCodec, AsUnpackedEqualsUnpackBitForBit) {
  std::mt19937 rng(5);
  for (int round = 0; round < 20; ++round) {
    const std::int64_t numel = 1 + rng() % 20000;
    auto s = random_sparse(rng, numel, rng() % std::min<std::int64_t>(numel, 500));
    s.values = s.values * 1000;  // some past fp16's precision
    if (round % 4 == 0) s = SparseTensor{torch::Tensor(), torch::randn({numel}) * 1000, numel};
    if (round % 4 == 1) s.indices = s.indices.to(torch::kInt64);  // the receiver's are int32
    for (auto values : {ValueType::kFloat32, ValueType::kFloat16})
      for (auto index : {IndexCoding::kRaw, IndexCoding::kDeltaVarint}) {
        const PackOptions o{values, index};
        const auto packed = pack(s, o);
        const auto sent = as_unpacked(s, packed);
        const auto back = unpack(packed, packed_coding(s, o), numel, numel);
        ASSERT_EQ(sent.numel, back.numel);
        ASSERT_EQ(sent.dense(), back.dense());
        ASSERT_EQ(sent.values.scalar_type(), torch::kFloat32);
        EXPECT_TRUE(torch::equal(sent.values, back.values)) << "round " << round;
        if (!s.dense()) {
          ASSERT_EQ(sent.indices.scalar_type(), back.indices.scalar_type());
          EXPECT_TRUE(torch::equal(sent.indices, back.indices)) << "round " << round;
        }
        if (values == ValueType::kFloat16 && s.nnz() > 0) {
          EXPECT_FALSE(torch::equal(sent.values, s.values)) << "fp16 rounds some values";
        }
      }
  }
}

// Bytes off the network, corrupted at random (flipped bits, cut short, grown, the counts
// changed): unpack either refuses them with a ProtocolError or returns indices that are
// ascending and in range, one per value. Never anything else.
TEST(SparseCodec, CorruptedBytesAreRefusedOrValid) {
  std::mt19937 rng(11);
  int refused = 0, accepted = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    const std::int64_t numel = 1 + static_cast<std::int64_t>(rng() % 5000);
    const auto s = random_sparse(rng, numel, static_cast<std::int64_t>(rng() % (numel + 1) / 4));
    const bool varint = rng() % 2 == 0;
    const auto coding = varint ? IndexCoding::kDeltaVarint : IndexCoding::kRaw;
    auto p = pack(s, {ValueType::kFloat32, coding});  // [indices, values]
    auto bytes = p[0].view(torch::kUInt8).clone();
    switch (rng() % 4) {
      case 0: {  // flip a few bits
        auto* b = bytes.data_ptr<std::uint8_t>();
        for (int f = 0; f < 1 + static_cast<int>(rng() % 3) && bytes.numel() > 0; ++f)
          b[rng() % bytes.numel()] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
        break;
      }
      case 1:  // cut short
        bytes = bytes.narrow(
            0, 0, bytes.numel() > 0 ? static_cast<std::int64_t>(rng() % bytes.numel()) : 0);
        break;
      case 2:  // grown by random bytes
        bytes =
            torch::cat({bytes, torch::randint(0, 256, {1 + static_cast<std::int64_t>(rng() % 8)},
                                              torch::kUInt8)});
        break;
      default:  // a value more or fewer
        p[1] = torch::randn({std::max<std::int64_t>(0, p[1].numel() + (rng() % 2 ? 1 : -1))});
        break;
    }
    if (!varint) {
      const auto width = p[0].element_size();
      if (bytes.numel() % width != 0) bytes = bytes.narrow(0, 0, bytes.numel() / width * width);
      bytes = bytes.view(p[0].scalar_type());
    }
    p[0] = bytes;
    try {
      const auto u = unpack(p, coding, numel, numel);
      ++accepted;
      const auto idx = u.indices.to(torch::kInt64);
      ASSERT_EQ(idx.numel(), u.values.numel());
      const auto* pi = idx.data_ptr<std::int64_t>();
      for (std::int64_t j = 0; j < idx.numel(); ++j) {
        ASSERT_GE(pi[j], j > 0 ? pi[j - 1] + 1 : 0) << "trial " << trial;
        ASSERT_LT(pi[j], numel) << "trial " << trial;
      }
    } catch (const ProtocolError&) {
      ++refused;
    }
  }
  std::printf("[ measure ] corrupted sparse tensors: %d refused, %d accepted (and valid)\n",
              refused, accepted);
  EXPECT_GT(refused, 1000);
  EXPECT_GT(accepted, 100);  // a flipped bit can still spell valid indices
}

TEST(SparseSum, DenseAccumulatorAndMergeEqualTheDenseSum) {
  std::mt19937 rng(4);
  const std::int64_t numel = 100000;
  DenseAccumulator acc(numel);
  for (int round = 0; round < 5; ++round) {  // reused across rounds
    std::vector<SparseTensor> parts;
    std::vector<float> weights;
    auto dense_sum = torch::zeros({numel});
    const int clients = 2 + static_cast<int>(rng() % 6);
    for (int c = 0; c < clients; ++c) {
      parts.push_back(random_sparse(rng, numel, 500 + rng() % 2000));
      weights.push_back(static_cast<float>(1 + rng() % 64) / 64.f);
      dense_sum = dense_sum + parts.back().to_dense() * weights.back();
      acc.add(parts.back(), weights.back());
    }
    const auto a = acc.take();
    const auto m = merge_sum(parts, weights);
    EXPECT_TRUE(torch::equal(a.to_dense(), dense_sum)) << "round " << round;
    EXPECT_TRUE(torch::equal(m.to_dense(), dense_sum)) << "round " << round;
    EXPECT_TRUE(torch::equal(a.indices.to(torch::kInt64), m.indices.to(torch::kInt64)));
  }
}

TEST(DensitySchedule, WarmupAndParsing) {
  const auto s = DensitySchedule::warmup(0.001);
  EXPECT_DOUBLE_EQ(s.at_epoch(0), 0.25);
  EXPECT_DOUBLE_EQ(s.at_epoch(1), 0.0625);
  EXPECT_DOUBLE_EQ(s.at_epoch(4), 0.001);
  EXPECT_DOUBLE_EQ(s.at_epoch(40), 0.001);
  EXPECT_EQ(DensitySchedule::warmup(0.1).values(), (std::vector<double>{0.25, 0.1}));
  const auto p = DensitySchedule::parse("0.5, 0.1,0.01");
  EXPECT_DOUBLE_EQ(p.at_epoch(2), 0.01);
  EXPECT_THROW(DensitySchedule::parse("0.5,abc"), ConfigError);
  EXPECT_THROW(DensitySchedule::parse("0.5,1.5"), ConfigError);
  EXPECT_THROW(DensitySchedule(0.0), ConfigError);
}

}  // namespace
}  // namespace cutlayer::kernels
