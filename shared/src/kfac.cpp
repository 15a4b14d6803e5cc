#include "cutlayer/train/kfac.h"

#include <cmath>
#include <utility>

#include "cutlayer/crypto/crypto.h"
#include "cutlayer/error.h"
#include "cutlayer/log.h"
#include "cutlayer/state/checkpoint.h"

namespace cutlayer::train {

namespace {

namespace F = torch::nn::functional;

// aᵀa / rows, made exactly symmetric (kfac-pytorch's get_cov).
torch::Tensor covariance(const torch::Tensor& a) {
  auto c = a.t().matmul(a / static_cast<double>(a.size(0)));
  return (c + c.t()) / 2.0;
}

torch::Tensor append_ones(const torch::Tensor& a) {
  return torch::cat({a, torch::ones({a.size(0), 1}, a.options())}, 1);
}

std::vector<std::int64_t> to_vector(torch::ExpandingArray<2> a) { return {(*a)[0], (*a)[1]}; }

}  // namespace

torch::Tensor linear_a_factor(const torch::Tensor& x, bool bias) {
  auto a = x.reshape({-1, x.size(-1)});
  return covariance(bias ? append_ones(a) : a);
}

torch::Tensor linear_g_factor(const torch::Tensor& g) { return covariance(g.reshape({-1, g.size(-1)})); }

torch::Tensor conv_a_factor(const torch::Tensor& x, const ConvGeometry& c, bool bias) {
  // (N, C·kh·kw, T) → (N·T, C·kh·kw): one row per output position, columns in the order
  // of weight.view(out, -1).
  auto p = F::unfold(x, F::UnfoldFuncOptions(c.kernel).dilation(c.dilation).padding(c.padding).stride(c.stride));
  const auto positions = p.size(2);
  p = p.transpose(1, 2).reshape({-1, p.size(1)});
  if (bias) p = append_ones(p);
  return covariance(p / static_cast<double>(positions));
}

torch::Tensor conv_g_factor(const torch::Tensor& g) {
  const auto positions = g.size(2) * g.size(3);
  auto rows = g.permute({0, 2, 3, 1}).reshape({-1, g.size(1)});
  return covariance(rows / static_cast<double>(positions));
}

torch::Tensor eigen_precondition(const torch::Tensor& grad, const torch::Tensor& qa, const torch::Tensor& qg,
                                 const torch::Tensor& dgda_inv) {
  auto v = qg.t().matmul(grad).matmul(qa) * dgda_inv;
  return qg.matmul(v).matmul(qa.t());
}

torch::Tensor damped_inverse(const torch::Tensor& f, double damping) {
  auto damped = f + damping * torch::eye(f.size(0), f.options());
  auto [l, info] = torch::linalg_cholesky_ex(damped);
  if (info.item<int>() == 0) return torch::cholesky_inverse(l);
  // Rounding left it indefinite: through the eigenvalues, clamped at 0.
  auto [d, q] = torch::linalg::eigh((f + f.t()) / 2, "L");
  return q.matmul(torch::diag(1.0 / (d.clamp_min(0) + damping))).matmul(q.t());
}

torch::Tensor damped_inverse_eigenvalues(const torch::Tensor& dg, const torch::Tensor& da, double damping) {
  return 1.0 / (torch::outer(dg.clamp_min(0), da.clamp_min(0)) + damping);
}

double kl_clip_scale(double vg_sum, double kl_clip) {
  if (vg_sum == 0.0) return 1.0;
  return std::min(1.0, std::sqrt(kl_clip / std::abs(vg_sum)));
}

torch::Tensor pack_symmetric(const torch::Tensor& m) {
  const auto i = torch::triu_indices(m.size(0), m.size(1), 0, torch::kLong);
  return m.index({i[0], i[1]});
}

torch::Tensor unpack_symmetric(const torch::Tensor& packed, std::int64_t n) {
  const auto i = torch::triu_indices(n, n, 0, torch::kLong);
  auto m = torch::zeros({n, n}, packed.options());
  m.index_put_({i[0], i[1]}, packed);
  m.index_put_({i[1], i[0]}, packed);
  return m;
}

Kfac::Kfac(const std::vector<torch::nn::Sequential>& parts, const std::vector<std::string>& part_names,
           const KfacOptions& o, const std::string& who)
    : options_(o) {
  std::vector<std::string> skipped;
  for (std::size_t p = 0; p < parts.size(); ++p) {
    if (parts[p].is_empty()) continue;
    std::size_t i = 0;
    for (const auto& child : parts[p]->children()) {
      const auto name = part_names.at(p) + "." + std::to_string(i++);
      Layer l;
      l.name = name;
      l.module = child.get();
      if (auto* lin = dynamic_cast<const torch::nn::LinearImpl*>(child.get())) {
        l.weight = lin->weight;
        l.bias = lin->bias;
      } else if (auto* conv = dynamic_cast<const torch::nn::Conv2dImpl*>(child.get())) {
        const auto& co = conv->options;
        const auto* pad = c10::get_if<torch::ExpandingArray<2>>(&co.padding());
        if (!pad || co.groups() != 1 || !c10::get_if<torch::enumtype::kZeros>(&co.padding_mode())) {
          skipped.push_back(name + " (conv2d with groups, a padding mode or 'same'/'valid' padding)");
          continue;
        }
        l.conv = true;
        l.weight = conv->weight;
        l.bias = conv->bias;
        l.geometry = {to_vector(co.kernel_size()), to_vector(co.stride()), to_vector(*pad), to_vector(co.dilation())};
      } else {
        if (!child->parameters().empty()) skipped.push_back(name);
        continue;
      }
      layers_.push_back(std::move(l));
    }
  }
  if (parts.empty()) return;
  auto names = covered();
  log::get("kfac")->info("{}: K-FAC preconditions {} layer(s): {}{}{}", who, names.size(), fmt::join(names, ", "),
                         skipped.empty() ? "" : "; the base optimizer alone trains ",
                         fmt::join(skipped, ", "));
}

std::vector<std::string> Kfac::covered() const {
  std::vector<std::string> names;
  for (const auto& l : layers_) names.push_back(l.name);
  return names;
}

Kfac::Layer* Kfac::find(const torch::nn::Module* m) {
  for (auto& l : layers_)
    if (l.module == m) return &l;
  return nullptr;
}

torch::Tensor Kfac::forward(torch::nn::Sequential& part, torch::Tensor x) {
  const bool capture = active() && part->is_training() && torch::GradMode::is_enabled();
  if (!capture) return part->forward(x);
  for (auto& m : *part) {
    Layer* l = find(m.ptr().get());
    if (l) {
      l->input = x.detach();
      l->grad_output = torch::Tensor();
    }
    x = m.forward(x);
    if (l && x.requires_grad()) x.register_hook([l](const torch::Tensor& g) { l->grad_output = g.detach(); });
  }
  return x;
}

void Kfac::update_factors() {
  std::vector<torch::Tensor> batch;
  for (auto& l : layers_) {
    if (!l.input.defined() || !l.grad_output.defined()) {
      batch.clear();  // shared: all layers or none (members' means are of whole sets)
      if (sharing_) break;
      continue;
    }
    auto a = l.conv ? conv_a_factor(l.input, l.geometry, l.bias.defined()) : linear_a_factor(l.input, l.bias.defined());
    auto g = l.conv ? conv_g_factor(l.grad_output) : linear_g_factor(l.grad_output);
    if (!torch::isfinite(a).all().item<bool>() || !torch::isfinite(g).all().item<bool>()) {
      log::get("kfac")->warn("step {}: {}'s factors of this batch are not finite: kept the running ones", steps_,
                             l.name);
      batch.clear();
      if (sharing_) break;
      continue;
    }
    if (sharing_) {
      batch.push_back(a);
      batch.push_back(g);
    } else {
      fold_layer(l, a, g);
    }
  }
  if (sharing_) batch_ = std::move(batch);
}

void Kfac::fold_layer(Layer& l, const torch::Tensor& a, const torch::Tensor& g) {
  const double d = options_.factor_decay;
  if (!l.a.defined()) l.a = torch::eye(a.size(0), a.options());
  if (!l.g.defined()) l.g = torch::eye(g.size(0), g.options());
  l.a = d * l.a + (1 - d) * a;
  l.g = d * l.g + (1 - d) * g;
}

std::vector<torch::Tensor> Kfac::take_batch_factors() { return std::exchange(batch_, {}); }

std::int64_t Kfac::fold(const std::vector<torch::Tensor>& batch) {
  check_factors(batch, "batch factors");
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < layers_.size(); ++i) fold_layer(layers_[i], batch[2 * i], batch[2 * i + 1]);
  return ++steps_;
}

// A layer's factor sizes: its inputs (with the bias column) and outputs.
std::pair<std::int64_t, std::int64_t> Kfac::dims(const Layer& l) {
  return {l.weight.numel() / l.weight.size(0) + (l.bias.defined() ? 1 : 0), l.weight.size(0)};
}

std::vector<std::pair<std::int64_t, std::int64_t>> Kfac::factor_shapes() const {
  std::vector<std::pair<std::int64_t, std::int64_t>> s;
  for (const auto& l : layers_) {
    const auto [in, out] = dims(l);
    s.emplace_back(in, in);
    s.emplace_back(out, out);
  }
  return s;
}

std::vector<std::pair<std::int64_t, std::int64_t>> Kfac::decomposition_shapes() const {
  if (options_.method == "inverse") return factor_shapes();
  std::vector<std::pair<std::int64_t, std::int64_t>> s;
  for (const auto& l : layers_) {
    const auto [in, out] = dims(l);
    s.insert(s.end(), {{in, in}, {out, out}, {out, in}});
  }
  return s;
}

namespace {

void check_matrices(const std::vector<torch::Tensor>& t,
                    const std::vector<std::pair<std::int64_t, std::int64_t>>& shapes, const std::string& what) {
  if (t.size() != shapes.size())
    throw ProtocolError("K-FAC " + what + ": " + std::to_string(t.size()) + " tensors, this model's layers take " +
                        std::to_string(shapes.size()));
  for (std::size_t i = 0; i < t.size(); ++i) {
    const auto [rows, cols] = shapes[i];
    if (t[i].scalar_type() != torch::kFloat || t[i].dim() != 2 || t[i].size(0) != rows || t[i].size(1) != cols)
      throw ProtocolError("K-FAC " + what + ": tensor " + std::to_string(i) + " is not a float32 [" +
                          std::to_string(rows) + ", " + std::to_string(cols) + "] matrix");
    if (!torch::isfinite(t[i]).all().item<bool>())
      throw ProtocolError("K-FAC " + what + ": tensor " + std::to_string(i) + " holds NaN or infinite values");
  }
}

}  // namespace

void Kfac::check_factors(const std::vector<torch::Tensor>& t, const std::string& what) const {
  check_matrices(t, factor_shapes(), what);
  for (std::size_t i = 0; i < t.size(); ++i)  // a covariance: exactly symmetric as computed, E[a²] ≥ 0
    if (!torch::equal(t[i], t[i].t()) || (t[i].diagonal() < 0).any().item<bool>())
      throw ProtocolError("K-FAC " + what + ": tensor " + std::to_string(i) +
                          " is not a covariance (not symmetric, or a negative diagonal)");
}

std::vector<torch::Tensor> Kfac::pack(const std::vector<torch::Tensor>& factors) {
  std::vector<torch::Tensor> p;
  for (const auto& f : factors) p.push_back(pack_symmetric(f));
  return p;
}

std::vector<torch::Tensor> Kfac::unpack(const std::vector<torch::Tensor>& packed, const std::string& what) const {
  const auto shapes = factor_shapes();
  if (packed.size() != shapes.size())
    throw ProtocolError("K-FAC " + what + ": " + std::to_string(packed.size()) + " tensors, this model's layers take " +
                        std::to_string(shapes.size()));
  std::vector<torch::Tensor> m;
  for (std::size_t i = 0; i < packed.size(); ++i) {
    const auto n = shapes[i].first;
    if (packed[i].scalar_type() != torch::kFloat || packed[i].dim() != 1 || packed[i].numel() != n * (n + 1) / 2)
      throw ProtocolError("K-FAC " + what + ": tensor " + std::to_string(i) + " is not the " + std::to_string(n) +
                          "x" + std::to_string(n) + " upper triangle (" + std::to_string(n * (n + 1) / 2) +
                          " float32 values)");
    m.push_back(unpack_symmetric(packed[i], n));
  }
  return m;
}

std::vector<torch::Tensor> Kfac::factor_tensors() const {
  std::vector<torch::Tensor> t;
  for (const auto& l : layers_) {
    if (!l.a.defined() || !l.g.defined()) return {};
    t.push_back(l.a);
    t.push_back(l.g);
  }
  return t;
}

std::vector<torch::Tensor> Kfac::decomposition_tensors() const {
  std::vector<torch::Tensor> t;
  for (const auto& l : layers_) {
    const bool inv = options_.method == "inverse";
    if (inv ? !l.a_inv.defined() : !l.qa.defined()) return {};
    if (inv) t.insert(t.end(), {l.a_inv, l.g_inv});
    else t.insert(t.end(), {l.qa, l.qg, l.dgda_inv});
  }
  return t;
}

void Kfac::install_factors(const std::vector<torch::Tensor>& t) {
  check_factors(t, "factors");
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    layers_[i].a = t[2 * i].clone();
    layers_[i].g = t[2 * i + 1].clone();
  }
  torch::NoGradGuard no_grad;
  decompose();
}

void Kfac::check_decompositions(const std::vector<torch::Tensor>& t) const {
  check_matrices(t, decomposition_shapes(), "decompositions");
}

void Kfac::clear_shared() {
  for (auto& l : layers_) l.a = l.g = l.qa = l.qg = l.dgda_inv = l.a_inv = l.g_inv = torch::Tensor();
  batch_.clear();
}

void Kfac::install_decompositions(const std::vector<torch::Tensor>& t) {
  check_decompositions(t);
  const std::size_t per = options_.method == "inverse" ? 2 : 3;
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    auto& l = layers_[i];
    const auto* x = &t[per * i];
    if (per == 2) {
      l.a_inv = x[0].clone();
      l.g_inv = x[1].clone();
    } else {
      l.qa = x[0].clone();
      l.qg = x[1].clone();
      l.dgda_inv = x[2].clone();
    }
  }
}

std::string Kfac::hash(bool with_factors) const {
  std::vector<torch::Tensor> flat;
  for (auto& t : decomposition_tensors()) flat.push_back(t.reshape({-1}));
  if (with_factors) {
    for (auto& t : factor_tensors()) flat.push_back(t.reshape({-1}));
    flat.push_back(torch::tensor({static_cast<float>(steps_)}));
  }
  if (flat.empty()) return "none";
  auto cat = torch::cat(flat).contiguous();
  const auto d = crypto::sha256(cat.data_ptr(), static_cast<std::size_t>(cat.numel()) * sizeof(float));
  return crypto::to_hex(d.data(), 8);
}

void Kfac::decompose() {
  for (auto& l : layers_) {
    if (!l.a.defined() || !l.g.defined()) continue;
    try {  // LAPACK did not converge (the inverse method's eigenvalue fallback too): the previous ones stay
      if (options_.method == "inverse") {
        auto a_inv = damped_inverse(l.a, options_.damping), g_inv = damped_inverse(l.g, options_.damping);
        l.a_inv = a_inv;
        l.g_inv = g_inv;
        continue;
      }
      auto [da, qa] = torch::linalg::eigh(l.a, "L");
      auto [dg, qg] = torch::linalg::eigh(l.g, "L");
      l.qa = qa;
      l.qg = qg;
      l.dgda_inv = damped_inverse_eigenvalues(dg, da, options_.damping);
    } catch (const c10::Error& e) {
      log::get("kfac")->warn("step {}: {}'s decomposition failed ({}): kept the previous one", steps_, l.name,
                             e.what_without_backtrace());
    }
  }
}

torch::Tensor Kfac::grad_matrix(const Layer& l) const {
  auto w = l.weight.grad().reshape({l.weight.size(0), -1});
  if (!l.bias.defined() || !l.bias.grad().defined()) return w;
  return torch::cat({w, l.bias.grad().reshape({-1, 1})}, 1);
}

void Kfac::set_grad(Layer& l, const torch::Tensor& pg, double scale) {
  const auto in = l.weight.numel() / l.weight.size(0);
  l.weight.mutable_grad().copy_(pg.narrow(1, 0, in).reshape(l.weight.sizes()) * scale);
  if (pg.size(1) > in) l.bias.mutable_grad().copy_(pg.narrow(1, in, 1).reshape(l.bias.sizes()) * scale);
}

bool Kfac::ready(const Layer& l) const {
  return l.weight.grad().defined() && (options_.method == "inverse" ? l.a_inv.defined() : l.qa.defined());
}

torch::Tensor Kfac::precondition(const Layer& l, const torch::Tensor& grad) const {
  if (options_.method != "inverse") return eigen_precondition(grad, l.qa, l.qg, l.dgda_inv);
  const auto out = grad.size(0), in = grad.size(1);
  if (!l.conv && l.input.defined() && l.grad_output.defined()) {
    auto a = l.input.reshape({-1, l.input.size(-1)});
    auto g = l.grad_output.reshape({-1, out});
    const auto rows = a.size(0);
    if (in > a.size(1)) a = torch::cat({a, torch::ones({rows, 1}, a.options())}, 1);
    // Fewer multiply-adds (g G⁻¹, ã A⁻¹, their product against G⁻¹ ∇W A⁻¹), and this step's
    // gradient is gᵀã (checked along a fixed direction v)?
    if (a.size(1) == in && rows * (out * out + in * in + out * in) < out * in * (out + in)) {
      auto v = (torch::arange(in, grad.options()).remainder(7) + 1) / 7.0;
      auto direct = grad.matmul(v), factored = g.t().matmul(a.matmul(v));
      if ((direct - factored).norm().item<double>() <= 1e-4 * (direct.norm().item<double>() + 1e-30))
        return g.matmul(l.g_inv).t().matmul(a.matmul(l.a_inv));
    }
  }
  return l.g_inv.matmul(grad).matmul(l.a_inv);
}

void Kfac::step(double lr) {
  if (!active()) return;
  torch::NoGradGuard no_grad;
  if (steps_ % options_.factor_every == 0) update_factors();
  if (steps_ % options_.inverse_every == 0 && !sharing_) decompose();
  std::vector<std::pair<Layer*, torch::Tensor>> done;
  double vg = 0;
  for (auto& l : layers_) {
    if (!ready(l)) continue;
    auto grad = grad_matrix(l);
    const auto& a_side = options_.method == "inverse" ? l.a_inv : l.qa;  // (a sharing member may hold no A)
    if (grad.size(1) != a_side.size(0)) continue;  // a bias without a gradient this step
    auto pg = precondition(l, grad);
    vg += (pg * grad).sum().item<double>() * lr * lr;
    done.emplace_back(&l, std::move(pg));
  }
  if (!std::isfinite(vg)) {  // the base optimizer's own checks see the gradients as they came
    log::get("kfac")->warn("step {}: the preconditioned gradients are not finite: this step is not preconditioned",
                           steps_);
    done.clear();
  }
  last_scale_ = std::isfinite(vg) ? kl_clip_scale(vg, options_.kl_clip) : 1.0;
  if (steps_ % options_.inverse_every == 0)
    log::get("kfac")->debug("step {}: lr² ⟨∇̃, ∇⟩ = {:.4g}, KL clip scale {:.4g}", steps_, vg, last_scale_);
  for (auto& [l, pg] : done) set_grad(*l, pg, last_scale_);
  for (auto& l : layers_) l.input = l.grad_output = torch::Tensor();
  ++steps_;
}

namespace {

// A saved factor, eigendecomposition or inverse: empty (none yet) or rows × cols floats.
torch::Tensor read_matrix(torch::serialize::InputArchive& a, const std::string& key, std::int64_t rows,
                          std::int64_t cols) {
  torch::Tensor t;
  try {
    a.read(key, t);
  } catch (const c10::Error& e) {
    throw state::CheckpointRefused("its K-FAC entry '" + key + "' does not read: " + e.what_without_backtrace());
  }
  if (t.numel() == 0) return torch::Tensor();
  if (t.dim() != 2 || t.size(0) != rows || t.size(1) != cols || t.scalar_type() != torch::kFloat)
    throw state::CheckpointRefused("its K-FAC entry '" + key + "' has the shape " + c10::str(t.sizes()) +
                                   ", not [" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
  return t;
}

}  // namespace

std::vector<Kfac::Saved> Kfac::saved(Layer& l) {
  const auto [in, out] = dims(l);
  return {{"a", &l.a, in, in},       {"g", &l.g, out, out},         {"qa", &l.qa, in, in},
          {"qg", &l.qg, out, out},   {"dgda_inv", &l.dgda_inv, out, in}, {"a_inv", &l.a_inv, in, in},
          {"g_inv", &l.g_inv, out, out}};
}

void Kfac::save(torch::serialize::OutputArchive& a, const std::string& prefix) const {
  a.write(prefix + ".steps", c10::IValue(steps_));
  for (std::size_t i = 0; i < layers_.size(); ++i)
    for (const auto& e : saved(const_cast<Layer&>(layers_[i])))
      a.write(prefix + "." + std::to_string(i) + "." + e.name, e.tensor->defined() ? *e.tensor : torch::zeros({0}));
}

void Kfac::load(torch::serialize::InputArchive& a, const std::string& prefix) {
  c10::IValue steps;
  if (!a.try_read(prefix + ".steps", steps) || !steps.isInt() || steps.toInt() < 0)
    throw state::CheckpointRefused("it has no K-FAC state ('" + prefix + ".steps'): was it written by a run "
                                   "with another optimizer?");
  // Read everything first: a refused entry leaves this as it was. The layers stay where they
  // are (a pending backward's hooks point at them).
  std::vector<std::vector<torch::Tensor>> loaded(layers_.size());
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    for (const auto& e : saved(layers_[i]))
      loaded[i].push_back(read_matrix(a, prefix + "." + std::to_string(i) + "." + e.name, e.rows, e.cols));
    const auto& t = loaded[i];  // a, g, qa, qg, dgda_inv, a_inv, g_inv: each set whole or not at all
    if (t[0].defined() != t[1].defined() || t[2].defined() != t[3].defined() || t[2].defined() != t[4].defined() ||
        t[5].defined() != t[6].defined())
      throw state::CheckpointRefused("its K-FAC entries for layer " + layers_[i].name + " are incomplete");
  }
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    auto entries = saved(layers_[i]);
    for (std::size_t k = 0; k < entries.size(); ++k) *entries[k].tensor = loaded[i][k];
    layers_[i].input = layers_[i].grad_output = torch::Tensor();
  }
  steps_ = steps.toInt();
}

}  // namespace cutlayer::train
