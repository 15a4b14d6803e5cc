// The cut's codec: what the server decodes is what the client says it sent, bit for bit;
// each value coding stays within its rounding bound; top-k keeps each sample's largest
// activations (or some drawn at random) and the gradient comes back for those alone; every
// malformed tensor is refused before it is used.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "cutlayer/config/reader.h"
#include "cutlayer/cut/codec.h"
#include "cutlayer/cut/options.h"
#include "cutlayer/error.h"
#include "cutlayer/kernels/sparse_codec.h"

namespace cutlayer::cut {
namespace {

using wire::CutCoding;
using wire::CutValues;

const std::vector<std::int64_t> kShape{4, 3, 5};  // 60 activations per sample
constexpr std::int64_t kPerSample = 60;
constexpr double kMax = 1e6;

torch::Tensor batch(std::int64_t b = 8) {
  torch::manual_seed(7);
  return torch::randn({b, 4, 3, 5}) * 3;
}

CutCoding coding(CutValues up, CutValues down = CutValues::kFp32, std::uint32_t kept = 0) {
  CutCoding c;
  c.values = up;
  c.grad_values = down;
  c.kept = kept;
  return c;
}

bool same_bits(const torch::Tensor& a, const torch::Tensor& b) {
  return a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() &&
         std::memcmp(a.contiguous().data_ptr(), b.contiguous().data_ptr(), a.nbytes()) == 0;
}

TEST(CutCodec, Fp32TravelsAsOneUnchangedTensor) {
  const auto z = batch();
  const auto s = encode_activations(z, CutCoding{});
  ASSERT_EQ(s.tensors.size(), 1u);
  EXPECT_TRUE(same_bits(s.tensors[0], z));
  EXPECT_EQ(activation_tensors(CutCoding{}), 1u);
  const auto r = decode_activations(s.tensors, CutCoding{}, kShape, 64, kMax);
  EXPECT_TRUE(same_bits(r.z, z));
  EXPECT_FALSE(r.cols.defined());
  const auto dz = torch::randn_like(z);
  const auto g = encode_gradient(dz, r.cols, CutCoding{});
  EXPECT_TRUE(same_bits(decode_gradient(g, CutCoding{}, s.cols, z.sizes(), kMax), dz));
}

// Each coding: the server's decoding equals the client's as_received bit for bit, within
// the coding's bound of z, in the coding's dtype and bytes.
TEST(CutCodec, EachValueCodingDecodesToWhatTheClientSaysItSent) {
  const auto z = batch();
  struct Case {
    CutValues v;
    torch::ScalarType dtype;
    std::size_t tensors;
  };
  for (const auto& k : {Case{CutValues::kBf16, torch::kBFloat16, 1}, Case{CutValues::kFp16, torch::kFloat16, 1},
                        Case{CutValues::kInt8, torch::kInt8, 2}}) {
    SCOPED_TRACE(values_name(k.v));
    const auto c = coding(k.v, k.v);
    const auto s = encode_activations(z, c);
    ASSERT_EQ(s.tensors.size(), k.tensors);
    EXPECT_EQ(s.tensors[0].scalar_type(), k.dtype);
    const auto r = decode_activations(s.tensors, c, kShape, 64, kMax);
    EXPECT_TRUE(same_bits(r.z, s.as_received));
    const auto err = (r.z - z).abs();
    if (k.v == CutValues::kInt8) {
      // half a step of each sample's own scale (max |z| / 127)
      const auto half_step = z.reshape({8, -1}).abs().amax(1) / 254.0;
      EXPECT_TRUE((err.reshape({8, -1}) <= half_step.unsqueeze(1) * 1.0001).all().item<bool>());
    } else {
      const double rel = k.v == CutValues::kBf16 ? 1.0 / 256 : 1.0 / 2048;
      EXPECT_TRUE((err <= z.abs() * rel + 1e-7).all().item<bool>());  // + fp16 subnormals
    }
    EXPECT_TRUE(same_bits(round_values(z, k.v), s.as_received));
  }
}

TEST(CutCodec, TopKSendsEachSamplesLargestAndTheGradientComesBackForThoseAlone) {
  const auto z = batch();
  const auto c = coding(CutValues::kFp32, CutValues::kFp32, 6);
  const auto s = encode_activations(z, c);
  ASSERT_EQ(s.tensors.size(), 2u);
  EXPECT_EQ(s.tensors[0].scalar_type(), torch::kUInt8);  // varint indices
  EXPECT_EQ(s.tensors[1].sizes(), torch::IntArrayRef({8, 6}));
  const auto rows = z.reshape({8, -1});
  const auto threshold = std::get<0>(rows.abs().topk(6, 1)).select(1, 5);  // each row's 6th largest
  const auto sent = s.as_received.reshape({8, -1});
  EXPECT_EQ((sent != 0).sum().item<std::int64_t>(), 8 * 6);
  EXPECT_TRUE(((sent != 0) == (rows.abs() >= threshold.unsqueeze(1))).all().item<bool>());
  const auto r = decode_activations(s.tensors, c, kShape, 64, kMax);
  EXPECT_TRUE(same_bits(r.z, s.as_received));
  EXPECT_TRUE(r.cols.equal(s.cols));
  const auto dz = torch::randn_like(z);
  const auto g = encode_gradient(dz, r.cols, c);
  ASSERT_EQ(g.size(), 1u);
  EXPECT_EQ(g[0].sizes(), torch::IntArrayRef({8, 6}));  // the kept entries only
  const auto back = decode_gradient(g, c, s.cols, z.sizes(), kMax);
  const auto mask = (sent != 0).reshape(z.sizes());
  EXPECT_TRUE(back.masked_select(mask).equal(dz.masked_select(mask)));
  EXPECT_EQ(back.masked_select(~mask).abs().sum().item<float>(), 0.f);
}

TEST(CutCodec, RandomizedTopKDrawsItsShareOutsideTheTop) {
  const auto z = batch();
  const auto c = coding(CutValues::kFp16, CutValues::kFp16, 10);
  torch::manual_seed(3);
  const auto s = encode_activations(z, c, /*random=*/0.5);
  const auto rows = z.reshape({8, -1}).abs();
  const auto top5 = std::get<0>(rows.topk(5, 1)).select(1, 4).unsqueeze(1);
  const auto kept = rows.gather(1, s.cols);
  EXPECT_TRUE((s.cols.slice(1, 1) > s.cols.slice(1, 0, -1)).all().item<bool>());  // ascending, unique
  // Each row holds its top 5 and 5 others: below the top 5, and not all the next largest.
  EXPECT_TRUE(((kept >= top5).sum(1) == 5).all().item<bool>());
  const auto exact = encode_activations(z, c, 0);
  EXPECT_FALSE(exact.cols.equal(s.cols));
  const auto r = decode_activations(s.tensors, c, kShape, 64, kMax);
  EXPECT_TRUE(same_bits(r.z, s.as_received));
}

TEST(CutCodec, Int8TopKCarriesScalesAndBothWaysRound) {
  const auto z = batch();
  const auto c = coding(CutValues::kInt8, CutValues::kInt8, 12);
  const auto s = encode_activations(z, c);
  ASSERT_EQ(s.tensors.size(), 3u);
  EXPECT_EQ(activation_tensors(c), 3u);
  EXPECT_EQ(s.tensors[2].sizes(), torch::IntArrayRef({8}));
  const auto r = decode_activations(s.tensors, c, kShape, 64, kMax);
  EXPECT_TRUE(same_bits(r.z, s.as_received));
  const auto dz = torch::randn_like(z);
  const auto g = encode_gradient(dz, r.cols, c);
  ASSERT_EQ(g.size(), 2u);
  const auto back = decode_gradient(g, c, s.cols, z.sizes(), kMax);
  const auto kept = dz.reshape({8, -1}).gather(1, s.cols);
  const auto got = back.reshape({8, -1}).gather(1, s.cols);
  const auto half_step = kept.abs().amax(1, true) / 254.0;
  EXPECT_TRUE(((got - kept).abs() <= half_step * 1.0001).all().item<bool>());
}

// A sample whose values are all below float32's smallest normal times 127 travels as zeros
// (its scale's inverse would overflow), the others as usual.
TEST(CutCodec, Int8SamplesOfTinyValuesTravelAsZeros) {
  auto z = batch(3);
  z[1].fill_(1e-38f);
  z[1][0][0][0] = -1e-37f;
  const auto c = coding(CutValues::kInt8);
  const auto s = encode_activations(z, c);
  EXPECT_EQ(s.tensors[1][1].item<float>(), 0.f);
  EXPECT_EQ(s.tensors[0][1].abs().sum().item<std::int64_t>(), 0);
  const auto r = decode_activations(s.tensors, c, kShape, 64, kMax);
  EXPECT_TRUE(same_bits(r.z, s.as_received));
  EXPECT_EQ(r.z[1].abs().sum().item<float>(), 0.f);
  EXPECT_GT(r.z[0].abs().sum().item<float>(), 0.f);
}

// Top 10% of 4608 per sample at int8 ≈ 5% of the float32 bytes: a byte of value and one of
// index (gaps below 128) per kept entry, and a scale per sample.
TEST(CutCodec, CompressedCutsAreSmall) {
  torch::manual_seed(1);
  const auto z = torch::relu(torch::randn({64, 32, 12, 12}));
  const std::vector<std::int64_t> shape{32, 12, 12};
  const auto c = coding(CutValues::kInt8, CutValues::kInt8, 461);
  std::size_t bytes = 0;
  for (const auto& t : encode_activations(z, c).tensors) bytes += t.nbytes();
  EXPECT_EQ(bytes, 64u * 461 * 2 + 64 * 4);
  EXPECT_LT(bytes, z.nbytes() * 51 / 1000);
  std::size_t bf16 = 0;
  for (const auto& t : encode_activations(z, coding(CutValues::kBf16)).tensors) bf16 += t.nbytes();
  EXPECT_EQ(bf16, z.nbytes() / 2);
}

TEST(CutCodec, MalformedActivationsAreRefused) {
  const auto z = batch(4);
  const auto c = coding(CutValues::kInt8, CutValues::kInt8, 5);
  const auto good = encode_activations(z, c).tensors;
  ASSERT_NO_THROW(decode_activations(good, c, kShape, 64, kMax));
  auto refused = [&](std::vector<torch::Tensor> t, const std::string& why) {
    SCOPED_TRACE(why);
    EXPECT_THROW(decode_activations(t, c, kShape, 64, kMax), ProtocolError);
  };
  refused({good[0], good[1]}, "scales missing");
  refused({good[0], good[1].to(torch::kFloat32), good[2]}, "float values where int8 is agreed");
  refused({good[0], good[1].narrow(1, 0, 4), good[2]}, "fewer kept than agreed");
  refused({good[0], good[1], good[2].narrow(0, 0, 3)}, "a scale short");
  refused({good[0], good[1], torch::full({4}, std::nanf(""))}, "NaN scale");
  refused({good[0], good[1], -good[2]}, "negative scales");
  refused({good[0], good[1], torch::full({4}, 1e30f)}, "values past the bound");
  refused({good[0].narrow(0, 0, good[0].numel() - 1), good[1], good[2]}, "truncated indices");
  refused({torch::cat({good[0], torch::zeros({1}, torch::kUInt8)}), good[1], good[2]}, "trailing index bytes");
  // Sample 0 sends one of sample 1's activations (its 6th index past its range): all
  // positions are ascending and in the batch, but not in their own sample.
  auto flat = torch::arange(4 * 5, torch::kInt64).reshape({4, 5}) + torch::arange(4).unsqueeze(1) * kPerSample;
  flat.index_put_({0, 4}, kPerSample + 0);
  flat.index_put_({1, 0}, kPerSample + 1);
  flat.index_put_({1, 1}, kPerSample + 2);
  flat.index_put_({1, 2}, kPerSample + 3);
  flat.index_put_({1, 3}, kPerSample + 4);
  flat.index_put_({1, 4}, kPerSample + 5);
  refused({kernels::encode_varint_indices(flat.reshape({-1})), good[1], good[2]}, "an index in another sample");
  const auto empty = encode_activations(z.narrow(0, 0, 0), coding(CutValues::kBf16)).tensors;
  EXPECT_THROW(decode_activations(empty, coding(CutValues::kBf16), kShape, 64, kMax), ProtocolError);
  const auto big = encode_activations(batch(8), coding(CutValues::kBf16)).tensors;
  EXPECT_THROW(decode_activations(big, coding(CutValues::kBf16), kShape, 4, kMax), ProtocolError);
  const auto inf = encode_activations(z * std::numeric_limits<float>::infinity(), coding(CutValues::kBf16)).tensors;
  EXPECT_THROW(decode_activations(inf, coding(CutValues::kBf16), kShape, 64, kMax), ProtocolError);
  EXPECT_THROW(decode_activations(good, coding(CutValues::kInt8, CutValues::kInt8, 61), kShape, 64, kMax),
               ProtocolError);  // more kept than the cut has
  auto q = good[1].clone();
  q.index_put_({0, 0}, -128);
  refused({good[0], q, good[2]}, "an int8 value outside -127..127");
}

TEST(CutCodec, MalformedGradientsAreRefused) {
  const auto z = batch(4);
  const auto c = coding(CutValues::kFp32, CutValues::kBf16, 5);
  const auto s = encode_activations(z, c);
  const auto g = encode_gradient(torch::randn_like(z), s.cols, c);
  ASSERT_NO_THROW(decode_gradient(g, c, s.cols, z.sizes(), kMax));
  EXPECT_THROW(decode_gradient({g[0].to(torch::kFloat32)}, c, s.cols, z.sizes(), kMax), ProtocolError);
  EXPECT_THROW(decode_gradient({g[0], g[0]}, c, s.cols, z.sizes(), kMax), ProtocolError);
  EXPECT_THROW(decode_gradient({torch::zeros({4, 6}, torch::kBFloat16)}, c, s.cols, z.sizes(), kMax), ProtocolError);
  EXPECT_THROW(decode_gradient({torch::full({4, 5}, std::nanf(""), torch::kBFloat16)}, c, s.cols, z.sizes(), kMax),
               ProtocolError);
  // float32 (the plain cut): the old shape check
  EXPECT_THROW(decode_gradient({torch::zeros({4, 60})}, CutCoding{}, {}, z.sizes(), kMax), ProtocolError);
}

// NoPeek on what is sent: the value is what the server decodes, the gradient reaches the
// kept entries unchanged and no others.
TEST(CutCodec, StraightThroughPassesTheGradientToTheKeptEntriesOnly) {
  auto z = batch(4).requires_grad_(true);
  const auto c = coding(CutValues::kInt8, CutValues::kFp32, 7);
  const auto s = encode_activations(z.detach(), c);
  auto y = straight_through(z, s);
  EXPECT_TRUE(same_bits(y.detach(), s.as_received));
  const auto w = torch::randn_like(y);
  (y * w).sum().backward();
  const auto mask = torch::zeros({4, kPerSample}).scatter_(1, s.cols, 1.0).reshape(z.sizes());
  EXPECT_TRUE(z.grad().equal(w * mask));
}

// cutlayer-train's cut: the gradient comes back rounded as it would travel (int8: at most
// 255 levels per sample).
TEST(CutCodec, ThroughCutRoundsTheGradientAsItWouldTravel) {
  auto z = batch(4).requires_grad_(true);
  const auto c = coding(CutValues::kFp32, CutValues::kInt8);
  const auto t = through_cut(z, c);
  EXPECT_TRUE(same_bits(t.back.detach(), z.detach()));
  EXPECT_TRUE(same_bits(t.nopeek.detach(), z.detach()));
  const auto w = torch::randn_like(z);
  (t.back * w).sum().backward();
  EXPECT_TRUE(same_bits(z.grad(), round_values(w, CutValues::kInt8)));
  EXPECT_FALSE(z.grad().equal(w));
  z.grad().zero_();
  (t.nopeek * w).sum().backward();  // NoPeek's gradient stays on the client: not rounded
  EXPECT_TRUE(same_bits(z.grad(), w));
}

TEST(CutOptions, ConfigChoicesAndTheKeptCount) {
  auto read = [](const std::string& json) {
    auto doc = config::Document::parse(json, "client.json");
    auto root = doc->root();
    auto c = root.child("cut");
    return read_cut_options(c);
  };
  const auto o = read(R"({"cut": {"values": "int8", "topk": 0.05}})");
  EXPECT_EQ(o.values, CutValues::kInt8);
  EXPECT_EQ(o.grad_values, CutValues::kInt8);  // defaults to values
  EXPECT_TRUE(o.compressed());
  EXPECT_EQ(coding_for(o, 4608).kept, 231u);     // ceil(0.05 * 4608)
  EXPECT_EQ(coding_for(o, 10).kept, 1u);
  const auto p = read(R"({"cut": {"values": "bf16", "grad_values": "fp32"}})");
  EXPECT_EQ(p.grad_values, CutValues::kFp32);
  EXPECT_EQ(coding_for(p, 4608).kept, 0u);
  EXPECT_FALSE(read(R"({"cut": {}})").compressed());
  try {
    read(R"({"cut": {"values": "fp8"}})");
    FAIL() << "fp8 accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("cut.values"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("int8"), std::string::npos) << e.what();
  }
  EXPECT_THROW(read(R"({"cut": {"random": 0.1}})"), ConfigError);
  EXPECT_THROW(read(R"({"cut": {"topk": 1.5}})"), ConfigError);
  EXPECT_THROW(read(R"({"cut": {"topk": 0.1, "extra": 1}})"), ConfigError);
}

}  // namespace
}  // namespace cutlayer::cut
