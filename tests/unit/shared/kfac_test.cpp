#include "cutlayer/train/kfac.h"

#include <gtest/gtest.h>

#include "cutlayer/config/reader.h"
#include "cutlayer/error.h"
#include "cutlayer/model/model_spec.h"
#include "cutlayer/state/checkpoint.h"
#include "cutlayer/train/train_options.h"

namespace cutlayer::train {
namespace {

using torch::indexing::Slice;

// Σ_rows r rᵀ / rows, by loops in double: the reference the factors are checked against.
torch::Tensor second_moment(const std::vector<std::vector<double>>& rows) {
  const auto n = static_cast<std::int64_t>(rows.at(0).size());
  auto m = torch::zeros({n, n}, torch::kFloat64);
  auto acc = m.accessor<double, 2>();
  for (const auto& r : rows)
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t j = 0; j < n; ++j) acc[i][j] += r[i] * r[j];
  return m / static_cast<double>(rows.size());
}

std::vector<double> row_of(const torch::Tensor& t) {
  auto c = t.to(torch::kFloat64).contiguous();
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

// Conv2d's patches by loops: for each sample and output position, C·kh·kw input values
// (zero outside the image), then a 1 for the bias, all divided by T.
torch::Tensor conv_a_reference(const torch::Tensor& x, int k, int stride, int pad, int dil) {
  const auto n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const auto oh = (h + 2 * pad - dil * (k - 1) - 1) / stride + 1, ow = (w + 2 * pad - dil * (k - 1) - 1) / stride + 1;
  const double t = static_cast<double>(oh * ow);
  auto xa = x.to(torch::kFloat64).contiguous();
  auto acc = xa.accessor<double, 4>();
  std::vector<std::vector<double>> rows;
  for (std::int64_t s = 0; s < n; ++s)
    for (std::int64_t i = 0; i < oh; ++i)
      for (std::int64_t j = 0; j < ow; ++j) {
        std::vector<double> r;
        for (std::int64_t ch = 0; ch < c; ++ch)
          for (int a = 0; a < k; ++a)
            for (int b = 0; b < k; ++b) {
              const auto y = i * stride - pad + a * dil, z = j * stride - pad + b * dil;
              r.push_back(y >= 0 && y < h && z >= 0 && z < w ? acc[s][ch][y][z] / t : 0.0);
            }
        r.push_back(1.0 / t);
        rows.push_back(r);
      }
  return second_moment(rows);
}

torch::Tensor conv_g_reference(const torch::Tensor& g) {
  const double t = static_cast<double>(g.size(2) * g.size(3));
  std::vector<std::vector<double>> rows;
  for (std::int64_t s = 0; s < g.size(0); ++s)
    for (std::int64_t i = 0; i < g.size(2); ++i)
      for (std::int64_t j = 0; j < g.size(3); ++j) {
        auto r = row_of(g.index({s, Slice(), i, j}));
        for (auto& v : r) v /= t;
        rows.push_back(r);
      }
  return second_moment(rows);
}

TEST(Kfac, LinearFactorsMatchADoublePrecisionReference) {
  torch::manual_seed(3);
  auto x = torch::randn({7, 5}, torch::kFloat64);
  std::vector<std::vector<double>> rows;
  for (int i = 0; i < 7; ++i) {
    auto r = row_of(x[i]);
    r.push_back(1.0);
    rows.push_back(r);
  }
  EXPECT_TRUE(torch::allclose(linear_a_factor(x, true), second_moment(rows), 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(linear_a_factor(x, false), second_moment(rows).index({Slice(0, 5), Slice(0, 5)}),
                              1e-12, 1e-12));
  auto g = torch::randn({7, 3}, torch::kFloat64);
  std::vector<std::vector<double>> grows;
  for (int i = 0; i < 7; ++i) grows.push_back(row_of(g[i]));
  EXPECT_TRUE(torch::allclose(linear_g_factor(g), second_moment(grows), 1e-12, 1e-12));
}

TEST(Kfac, ConvFactorsMatchADoublePrecisionReferenceWithStridePaddingAndDilation) {
  torch::manual_seed(4);
  auto x = torch::randn({2, 3, 7, 6}, torch::kFloat64);
  for (auto [k, stride, pad, dil] : {std::array<int, 4>{3, 1, 0, 1}, {3, 2, 1, 1}, {2, 1, 2, 2}}) {
    const ConvGeometry geo{{k, k}, {stride, stride}, {pad, pad}, {dil, dil}};
    const auto a = conv_a_factor(x, geo, true);
    const auto ref = conv_a_reference(x, k, stride, pad, dil);
    EXPECT_TRUE(torch::allclose(a, ref, 1e-12, 1e-12)) << "k " << k << " stride " << stride << " pad " << pad;
    const auto n = ref.size(0) - 1;  // without the bias column
    EXPECT_TRUE(torch::allclose(conv_a_factor(x, geo, false), ref.index({Slice(0, n), Slice(0, n)}), 1e-12, 1e-12));
  }
  auto g = torch::randn({2, 4, 3, 5}, torch::kFloat64);
  EXPECT_TRUE(torch::allclose(conv_g_factor(g), conv_g_reference(g), 1e-12, 1e-12));
}

// A random symmetric positive semi-definite matrix.
torch::Tensor spd(std::int64_t n) {
  auto m = torch::randn({n, n + 2}, torch::kFloat64);
  return m.matmul(m.t()) / static_cast<double>(n);
}

TEST(Kfac, EigenPreconditioningEqualsTheDenseKroneckerSolve) {
  torch::manual_seed(5);
  const double damping = 0.003;
  auto a = spd(4), g = spd(3), grad = torch::randn({3, 4}, torch::kFloat64);
  auto [da, qa] = torch::linalg::eigh(a, "L");
  auto [dg, qg] = torch::linalg::eigh(g, "L");
  const auto pg = eigen_precondition(grad, qa, qg, damped_inverse_eigenvalues(dg, da, damping));
  // G ∇̃ A + λ∇̃ = ∇W, i.e. (G ⊗ A + λI) vec(∇̃) = vec(∇W) for row-major vec (A symmetric).
  const auto dense = torch::kron(g, a) + damping * torch::eye(12, torch::kFloat64);
  const auto solved = torch::linalg::solve(dense, grad.reshape({12, 1}), true).reshape({3, 4});
  EXPECT_TRUE(torch::allclose(pg, solved, 1e-9, 1e-10)) << pg << solved;
}

TEST(Kfac, DampedInverseSolvesTheDampedFactor) {
  torch::manual_seed(15);
  auto a = spd(6);
  EXPECT_TRUE(torch::allclose(damped_inverse(a, 0.01).matmul(a + 0.01 * torch::eye(6, torch::kFloat64)),
                              torch::eye(6, torch::kFloat64), 1e-9, 1e-9));
  // Indefinite (rounding, in a real run): its negative eigenvalues count as 0.
  EXPECT_TRUE(torch::allclose(damped_inverse(-2 * torch::eye(3, torch::kFloat64), 0.5),
                              2 * torch::eye(3, torch::kFloat64), 1e-12, 1e-12));
}

TEST(Kfac, KlClipScale) {
  EXPECT_DOUBLE_EQ(kl_clip_scale(0.0, 0.001), 1.0);
  EXPECT_DOUBLE_EQ(kl_clip_scale(0.0005, 0.001), 1.0);  // below κ: untouched
  EXPECT_DOUBLE_EQ(kl_clip_scale(0.004, 0.001), 0.5);
  EXPECT_DOUBLE_EQ(kl_clip_scale(-0.004, 0.001), 0.5);  // |vg|
}

TEST(Kfac, FactorsAveragedOverEqualMembersEqualTheConcatenatedBatch) {
  torch::manual_seed(6);
  std::vector<torch::Tensor> xs, gs;
  for (int m = 0; m < 3; ++m) {
    xs.push_back(torch::randn({4, 2, 6, 6}, torch::kFloat64));
    gs.push_back(torch::randn({4, 3, 4, 4}, torch::kFloat64));
  }
  const ConvGeometry geo{{3, 3}, {1, 1}, {0, 0}, {1, 1}};
  auto a_mean = (conv_a_factor(xs[0], geo, true) + conv_a_factor(xs[1], geo, true) + conv_a_factor(xs[2], geo, true)) / 3;
  auto g_mean = (conv_g_factor(gs[0]) + conv_g_factor(gs[1]) + conv_g_factor(gs[2])) / 3;
  EXPECT_TRUE(torch::allclose(a_mean, conv_a_factor(torch::cat(xs), geo, true), 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(g_mean, conv_g_factor(torch::cat(gs)), 1e-12, 1e-12));
}

KfacOptions every_step(double decay = 0.0, double kl_clip = 1e9, const char* method = "eigen") {
  KfacOptions o;
  o.method = method;
  o.damping = 0.001;
  o.factor_decay = decay;
  o.kl_clip = kl_clip;
  o.factor_every = 1;
  o.inverse_every = 1;
  return o;
}

// One training step through `k`: forward, loss, backward, precondition.
void train_step(Kfac& k, torch::nn::Sequential& net, const torch::Tensor& x, const torch::Tensor& y, double lr) {
  for (auto& p : net->parameters())
    if (p.grad().defined()) p.grad().zero_();
  torch::nn::functional::cross_entropy(k.forward(net, x), y).backward();
  k.step(lr);
}

TEST(Kfac, CapturesTheLayersInputsAndOutputGradientsInATrainingStep) {
  torch::manual_seed(7);
  auto net = model::build("conv2d(1,3,3,2,1) relu flatten linear(48,4)");
  Kfac k({net}, {"net"}, every_step(), "test");
  ASSERT_EQ(k.covered(), (std::vector<std::string>{"net.0", "net.3"}));
  auto x = torch::randn({5, 1, 8, 8});
  auto y = torch::randint(0, 4, {5});
  // The reference: the same layers run by hand, the conv's output gradient kept.
  auto conv_out = net[0]->as<torch::nn::Conv2d>()->forward(x);
  conv_out.retain_grad();
  auto hidden = torch::relu(conv_out).flatten(1);
  auto lin_out = net[3]->as<torch::nn::Linear>()->forward(hidden);
  lin_out.retain_grad();
  torch::nn::functional::cross_entropy(lin_out, y).backward();
  const ConvGeometry geo{{3, 3}, {2, 2}, {1, 1}, {1, 1}};
  train_step(k, net, x, y, 0.1);
  const auto f = k.factors(0), l = k.factors(1);
  EXPECT_TRUE(torch::allclose(f.a, conv_a_factor(x, geo, true), 1e-5, 1e-7));
  EXPECT_TRUE(torch::allclose(f.g, conv_g_factor(conv_out.grad()), 1e-5, 1e-9));
  EXPECT_TRUE(torch::allclose(l.a, linear_a_factor(hidden.detach(), true), 1e-5, 1e-7));
  EXPECT_TRUE(torch::allclose(l.g, linear_g_factor(lin_out.grad()), 1e-5, 1e-9));
}

TEST(Kfac, StepReplacesTheGradientsWithTheClippedPreconditionedOnes) {
  torch::manual_seed(8);
  auto make = [] {
    torch::manual_seed(9);
    return model::build("linear(6,5) tanh linear(5,3)");
  };
  auto x = torch::randn({16, 6});
  auto y = torch::randint(0, 3, {16});
  auto plain = make(), loose = make(), tight = make();
  Kfac kl({loose}, {"n"}, every_step(0.5, 1e9), "test"), kt({tight}, {"n"}, every_step(0.5, 1e-6), "test");
  for (auto& p : plain->parameters())
    if (p.grad().defined()) p.grad().zero_();
  torch::nn::functional::cross_entropy(plain->forward(x), y).backward();
  train_step(kl, loose, x, y, 0.1);
  train_step(kt, tight, x, y, 0.1);
  EXPECT_DOUBLE_EQ(kl.last_clip_scale(), 1.0);
  ASSERT_LT(kt.last_clip_scale(), 1.0);
  // By hand for the last layer: factors from the identity with decay 0.5, then eigen.
  auto w = plain[2]->as<torch::nn::Linear>();
  auto grad = torch::cat({w->weight.grad(), w->bias.grad().reshape({-1, 1})}, 1).to(torch::kFloat64);
  const auto f = kl.factors(1);
  auto [da, qa] = torch::linalg::eigh(f.a.to(torch::kFloat64), "L");
  auto [dg, qg] = torch::linalg::eigh(f.g.to(torch::kFloat64), "L");
  auto expect = eigen_precondition(grad, qa, qg, damped_inverse_eigenvalues(dg, da, 0.001));
  auto got_w = loose[2]->as<torch::nn::Linear>()->weight.grad().to(torch::kFloat64);
  EXPECT_TRUE(torch::allclose(got_w, expect.index({Slice(), Slice(0, 5)}), 1e-3, 1e-6));
  EXPECT_FALSE(torch::allclose(got_w, grad.index({Slice(), Slice(0, 5)}), 1e-2, 1e-4));  // it did change
  // The tight clip scales every preconditioned gradient by the same factor.
  for (std::size_t i = 0; i < loose->parameters().size(); ++i)
    EXPECT_TRUE(torch::allclose(tight->parameters()[i].grad(), loose->parameters()[i].grad() * kt.last_clip_scale(),
                                1e-4, 1e-9));
}

// The inverse method: (G+λI)⁻¹ ∇W (A+λI)⁻¹, whether a Linear layer's product is taken
// through its factors (batch smaller than the layer) or densely (a layer used twice).
TEST(Kfac, InverseMethodMatchesTheDenseProductOnBothPaths) {
  for (const bool twice : {false, true}) {
    torch::manual_seed(16);
    auto net = model::build("linear(40,30)");
    auto ref = model::build("linear(40,30)");
    for (std::size_t i = 0; i < net->parameters().size(); ++i) ref->parameters()[i].data().copy_(net->parameters()[i]);
    Kfac k({net}, {"n"}, every_step(0.5, 1e9, "inverse"), "test");
    auto x = torch::randn({4, 40});
    auto y = torch::randint(0, 30, {4});
    auto loss = torch::nn::functional::cross_entropy(k.forward(net, x), y);
    if (twice) loss = loss + torch::nn::functional::cross_entropy(net->forward(x * 2), y);  // no record of it
    loss.backward();
    auto ref_loss = torch::nn::functional::cross_entropy(ref->forward(x), y);
    if (twice) ref_loss = ref_loss + torch::nn::functional::cross_entropy(ref->forward(x * 2), y);
    ref_loss.backward();
    k.step(0.1);
    auto lin = ref[0]->as<torch::nn::Linear>();
    auto grad = torch::cat({lin->weight.grad(), lin->bias.grad().reshape({-1, 1})}, 1).to(torch::kFloat64);
    const auto f = k.factors(0);
    auto expect = damped_inverse(f.g.to(torch::kFloat64), 0.001).matmul(grad).matmul(
        damped_inverse(f.a.to(torch::kFloat64), 0.001));
    auto got = net[0]->as<torch::nn::Linear>();
    EXPECT_TRUE(torch::allclose(got->weight.grad().to(torch::kFloat64), expect.index({Slice(), Slice(0, 40)}), 1e-3,
                                1e-5 * expect.abs().max().item<double>()))
        << (twice ? "dense" : "factored");
    EXPECT_TRUE(torch::allclose(got->bias.grad().to(torch::kFloat64), expect.index({Slice(), 40}), 1e-3,
                                1e-5 * expect.abs().max().item<double>()));
  }
}

TEST(Kfac, LayersItDoesNotCoverKeepTheirGradients) {
  torch::manual_seed(10);
  auto net = model::build("linear(4,6) batchnorm1d(6) relu linear(6,2)");
  auto ref = model::build("linear(4,6) batchnorm1d(6) relu linear(6,2)");
  for (std::size_t i = 0; i < net->parameters().size(); ++i) ref->parameters()[i].data().copy_(net->parameters()[i]);
  Kfac k({net}, {"net"}, every_step(), "test");
  EXPECT_EQ(k.covered(), (std::vector<std::string>{"net.0", "net.3"}));
  auto x = torch::randn({8, 4});
  auto y = torch::randint(0, 2, {8});
  torch::nn::functional::cross_entropy(ref->forward(x), y).backward();
  train_step(k, net, x, y, 0.1);
  const auto bn = net[1]->as<torch::nn::BatchNorm1d>(), bn_ref = ref[1]->as<torch::nn::BatchNorm1d>();
  EXPECT_TRUE(torch::equal(bn->weight.grad(), bn_ref->weight.grad()));
  EXPECT_TRUE(torch::equal(bn->bias.grad(), bn_ref->bias.grad()));
}

TEST(Kfac, FactorsUpdateOnlyEveryFactorEverySteps) {
  torch::manual_seed(11);
  auto net = model::build("linear(3,2)");
  KfacOptions o = every_step(0.5);
  o.factor_every = 2;
  o.inverse_every = 4;
  Kfac k({net}, {"net"}, o, "test");
  auto x = torch::randn({4, 3});
  auto y = torch::randint(0, 2, {4});
  train_step(k, net, x, y, 0.1);  // step 0: factors, eigen
  const auto a0 = k.factors(0).a.clone();
  train_step(k, net, torch::randn({4, 3}), y, 0.1);  // step 1: neither
  EXPECT_TRUE(torch::equal(k.factors(0).a, a0));
  train_step(k, net, torch::randn({4, 3}), y, 0.1);  // step 2: factors
  EXPECT_FALSE(torch::equal(k.factors(0).a, a0));
  EXPECT_EQ(k.steps(), 3);
}

TEST(Kfac, ASharingPartyHandsOutItsBatchFactorsAndPreconditionsWithWhatItReceives) {
  auto make = [] {
    torch::manual_seed(21);
    return model::build("linear(4,3) tanh linear(3,2)");
  };
  auto net = make(), peer = make();
  for (const char* method : {"inverse", "eigen"}) {
    KfacOptions o = every_step(0.5, 1e9, method);
    Kfac member({net}, {"net"}, o, "member"), source({peer}, {"net"}, o, "source");
    member.share(true);
    auto x = torch::randn({6, 4});
    auto y = torch::randint(0, 2, {6});
    train_step(member, net, x, y, 0.1);
    // Its own batch's factors are handed out, not folded in; nothing to precondition with yet.
    auto batch = member.take_batch_factors();
    ASSERT_EQ(batch.size(), 4u);
    EXPECT_TRUE(torch::allclose(batch[0], linear_a_factor(x, true), 1e-5, 1e-7));
    EXPECT_FALSE(member.factors(0).a.defined());
    EXPECT_EQ(member.hash(), "none");
    EXPECT_TRUE(member.take_batch_factors().empty());
    // The aggregation's running factors: a fold from the identity, as a factor step would.
    EXPECT_EQ(source.fold(batch), 1);
    EXPECT_TRUE(torch::allclose(source.factors(0).a, 0.5 * torch::eye(5) + 0.5 * batch[0]));
    source.decompose_now();
    // Decomposed by the member from the factors, or by the source: the same preconditioner.
    member.install_factors(source.factor_tensors());
    EXPECT_EQ(member.hash(), source.hash()) << method;
    Kfac other({net}, {"net"}, o, "other");
    other.share(true);
    other.install_decompositions(source.decomposition_tensors());
    EXPECT_EQ(other.hash(), source.hash()) << method;
    // ... and the next step is preconditioned with it: ∇̃ = (G+λI)⁻¹ ∇W (A+λI)⁻¹ for the inverse method.
    for (auto& p : net->parameters()) p.grad().zero_();
    torch::nn::functional::cross_entropy(net->forward(x), y).backward();
    auto lin = net[2]->as<torch::nn::Linear>();
    auto grad = torch::cat({lin->weight.grad(), lin->bias.grad().reshape({-1, 1})}, 1).clone();
    for (auto& p : net->parameters()) p.grad().zero_();
    train_step(member, net, x, y, 0.1);
    if (std::string(method) == "inverse") {
      const auto f = source.factors(1);
      auto expect = damped_inverse(f.g, o.damping).matmul(grad).matmul(damped_inverse(f.a, o.damping));
      EXPECT_TRUE(torch::allclose(lin->weight.grad(), expect.narrow(1, 0, 3), 1e-4, 1e-6));
    }
  }
}

TEST(Kfac, ReceivedFactorsAndDecompositionsAreCheckedBeforeUse) {
  torch::manual_seed(22);
  auto net = model::build("linear(4,3)");
  Kfac k({net}, {"net"}, every_step(0.5, 1e9, "inverse"), "member");
  k.share(true);
  const std::vector<torch::Tensor> good{torch::eye(5), torch::eye(3)};
  EXPECT_NO_THROW(k.check_factors(good, "factors"));
  EXPECT_THROW(k.install_factors({torch::eye(5)}), ProtocolError);                   // a layer short
  EXPECT_THROW(k.install_factors({torch::eye(4), torch::eye(3)}), ProtocolError);    // shape
  EXPECT_THROW(k.install_factors({torch::eye(5, torch::kFloat64), torch::eye(3)}), ProtocolError);  // dtype
  auto nan = torch::eye(5);
  nan[0][0] = std::nanf("");
  EXPECT_THROW(k.install_factors({nan, torch::eye(3)}), ProtocolError);
  auto skew = torch::eye(5);
  skew[0][1] = 0.5;
  EXPECT_THROW(k.install_factors({skew, torch::eye(3)}), ProtocolError);  // not symmetric
  EXPECT_THROW(k.install_factors({-torch::eye(5), torch::eye(3)}), ProtocolError);  // negative variance
  EXPECT_THROW(k.fold({skew, torch::eye(3)}), ProtocolError);
  EXPECT_THROW(k.install_decompositions({torch::eye(5), torch::eye(3), torch::eye(3)}), ProtocolError);
  // As they travel: upper triangles of the layers' lengths (5·6/2 and 3·4/2).
  auto sym = linear_a_factor(torch::randn({7, 4}), true);
  const auto packed = Kfac::pack({sym, torch::eye(3)});
  ASSERT_EQ(packed[0].numel(), 15);
  EXPECT_TRUE(torch::equal(k.unpack(packed, "factors")[0], sym));
  EXPECT_THROW(k.unpack({packed[0], torch::ones({5})}, "factors"), ProtocolError);
  EXPECT_THROW(k.unpack({sym, torch::eye(3)}, "factors"), ProtocolError);  // whole matrices
  EXPECT_EQ(k.hash(), "none");  // nothing refused was kept
  EXPECT_EQ(k.steps(), 0);
  k.install_factors(good);
  EXPECT_NE(k.hash(), "none");
}

TEST(Kfac, SavedStateResumesIdenticallyAndAMisshapenOneIsRefused) {
  auto make = [](const char* spec) {
    torch::manual_seed(12);
    return model::build(spec);
  };
  auto a = make("linear(4,3) relu linear(3,2)"), b = make("linear(4,3) relu linear(3,2)");
  for (const char* method : {"eigen", "inverse"}) {
  KfacOptions o = every_step(0.9, 1e9, method);
  o.inverse_every = 2;
  Kfac ka({a}, {"n"}, o, "test"), kb({b}, {"n"}, o, "test");
  torch::manual_seed(13);
  auto x = torch::randn({8, 4});
  auto y = torch::randint(0, 2, {8});
  for (int i = 0; i < 3; ++i) train_step(ka, a, x * (i + 1), y, 0.1);
  for (std::size_t i = 0; i < a->parameters().size(); ++i) b->parameters()[i].data().copy_(a->parameters()[i]);
  torch::serialize::OutputArchive out;
  ka.save(out, "kfac");
  std::stringstream bytes;
  out.save_to(bytes);
  torch::serialize::InputArchive in;
  in.load_from(bytes);
  kb.load(in, "kfac");
  EXPECT_EQ(kb.steps(), 3);
  train_step(ka, a, x, y, 0.1);
  train_step(kb, b, x, y, 0.1);
  for (std::size_t i = 0; i < a->parameters().size(); ++i)
    EXPECT_TRUE(torch::equal(a->parameters()[i].grad(), b->parameters()[i].grad()));

  auto other = make("linear(4,5) relu linear(5,2)");
  Kfac ko({other}, {"n"}, o, "test");
  EXPECT_THROW(ko.load(in, "kfac"), state::CheckpointRefused);
  EXPECT_EQ(ko.steps(), 0);
  EXPECT_FALSE(ko.factors(0).a.defined());
  EXPECT_THROW(ko.load(in, "nothing"), state::CheckpointRefused);
  }
}

TEST(Kfac, InactiveWithoutParts) {
  auto net = model::build("linear(3,2)");
  Kfac k({}, {}, KfacOptions{}, "test");
  EXPECT_FALSE(k.active());
  auto x = torch::randn({2, 3});
  EXPECT_TRUE(torch::equal(k.forward(net, x), net->forward(x)));
}

std::string config_error(const std::string& text) {
  auto doc = config::Document::parse(text, "client.json");
  auto root = doc->root();
  try {
    read_train_options(root);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(Kfac, ConfigReadsItsObjectAndNamesWhatIsWrong) {
  auto doc = config::Document::parse(
      R"({"optimizer": "kfac", "kfac": {"damping": 0.003, "factor_every": 1, "inverse_every": 10, "method": "inverse"}})",
      "c.json");
  auto root = doc->root();
  const auto o = read_train_options(root);
  EXPECT_EQ(o.optimizer, "kfac");
  EXPECT_DOUBLE_EQ(o.kfac.damping, 0.003);
  EXPECT_EQ(o.kfac.inverse_every, 10);
  EXPECT_DOUBLE_EQ(o.kfac.kl_clip, 0.001);  // default
  EXPECT_EQ(o.kfac.method, "inverse");
  EXPECT_NE(run_identity(o).find("damping=0.003"), std::string::npos);
  auto e = config_error(R"({"optimizer": "sgd", "kfac": {}})");
  EXPECT_NE(e.find("`kfac`"), std::string::npos) << e;
  e = config_error(R"({"optimizer": "kfac", "kfac": {"factor_every": 10, "inverse_every": 15}})");
  EXPECT_NE(e.find("`kfac.inverse_every`"), std::string::npos) << e;
  e = config_error(R"({"optimizer": "kfac", "kfac": {"dampening": 0.1}})");
  EXPECT_NE(e.find("`kfac.dampening`"), std::string::npos) << e;
}

}  // namespace
}  // namespace cutlayer::train
