#include "cutlayer/sync/sync.h"

#include <cmath>
#include <limits>

#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>

#include "cutlayer/config/reader.h"
#include "cutlayer/crypto/crypto.h"
#include "cutlayer/error.h"
#include "cutlayer/kernels/compressor.h"
#include "cutlayer/kernels/density_schedule.h"

namespace cutlayer::sync {

SyncOptions read_sync_options(config::Object& s) {
  SyncOptions o;
  o.enabled = true;  // the object is there; "enabled": false keeps it written but off
  s.get("enabled", o.enabled);
  s.get_choice("compressor", o.compressor, kernels::compressor_names());
  s.get("density", o.density, 1e-6, 1.0);
  s.get("density_schedule", o.density_schedule);
  if (!o.density_schedule.empty()) {
    try {
      (void)kernels::DensitySchedule::parse(o.density_schedule);
    } catch (const ConfigError& e) {
      s.fail("density_schedule", std::string(e.what()) + "; write densities in (0, 1] per epoch, e.g. \"0.25,0.0625,0.0156\"");
    }
  }
  s.get("error_feedback", o.error_feedback);
  s.get("per_layer", o.per_layer);
  std::string values = o.fp16_values ? "fp16" : "fp32";
  s.get_choice("values", values, {"fp32", "fp16"});
  o.fp16_values = values == "fp16";
  std::string indices = o.varint_indices ? "varint" : "raw";
  s.get_choice("indices", indices, {"varint", "raw"});
  o.varint_indices = indices == "varint";
  s.get_int("seed", o.seed, 0, std::numeric_limits<std::int64_t>::max());
  s.finish();
  return o;
}

FlatParams::FlatParams(std::vector<torch::Tensor> params, std::vector<std::string> names)
    : params_(std::move(params)), names_(std::move(names)) {
  for (auto& p : params_) {
    if (p.scalar_type() != torch::kFloat32 || !p.is_contiguous())
      throw Error("synced parameters must be contiguous float32");
    offsets_.push_back(numel_);
    numel_ += p.numel();
  }
}

std::vector<std::int64_t> FlatParams::layer_sizes() const {
  std::vector<std::int64_t> out;
  for (auto& p : params_) out.push_back(p.numel());
  return out;
}

void FlatParams::gather_grads(torch::Tensor& out) const {
  if (!out.defined() || out.numel() != numel_) out = torch::empty({numel_}, torch::kFloat32);
  for (std::size_t i = 0; i < params_.size(); ++i) {
    auto slice = out.narrow(0, offsets_[i], params_[i].numel());
    const auto& g = params_[i].grad();
    if (g.defined()) slice.copy_(g.reshape({-1}));
    else slice.zero_();
  }
}

void FlatParams::set_grads(const kernels::SparseTensor& update) {
  if (update.numel != numel_) throw ProtocolError("update of " + std::to_string(update.numel) +
                                                  " elements for a model of " + std::to_string(numel_));
  const auto dense = update.to_dense();
  for (std::size_t i = 0; i < params_.size(); ++i) {
    auto g = dense.narrow(0, offsets_[i], params_[i].numel()).view(params_[i].sizes());
    auto& grad = params_[i].mutable_grad();
    if (grad.defined()) grad.copy_(g);
    else grad = g.clone();
  }
}

std::string FlatParams::hash() const {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> flat;
  for (auto& p : params_) flat.push_back(p.detach().reshape({-1}));
  auto all = torch::cat(flat).contiguous();
  const auto d = crypto::sha256(all.data_ptr(), all.numel() * sizeof(float));
  return crypto::to_hex(d.data(), 8);
}

FlatParams flat_params(torch::nn::Sequential& front, torch::nn::Sequential* head) {
  std::vector<torch::Tensor> params;
  std::vector<std::string> names;
  for (auto& np : front->named_parameters()) {
    params.push_back(np.value());
    names.push_back("front." + np.key());
  }
  if (head && *head)
    for (auto& np : (*head)->named_parameters()) {
      params.push_back(np.value());
      names.push_back("head." + np.key());
    }
  return FlatParams(std::move(params), std::move(names));
}

std::vector<torch::Tensor> to_tensors(const kernels::SparseTensor& s, bool fp16, bool varint,
                                      wire::SparseLayout& layout) {
  kernels::PackOptions po;
  po.values = fp16 ? kernels::ValueType::kFloat16 : kernels::ValueType::kFloat32;
  po.index = varint ? kernels::IndexCoding::kDeltaVarint : kernels::IndexCoding::kRaw;
  auto packed = kernels::pack(s, po);
  layout.numel = static_cast<std::uint64_t>(s.numel);
  layout.dense = s.dense();
  layout.index_coding = static_cast<std::uint8_t>(packed.coding);
  if (s.dense()) return {packed.values};
  return {packed.indices, packed.values};
}

kernels::SparseTensor from_tensors(const wire::SparseLayout& layout,
                                   const std::vector<torch::Tensor>& tensors,
                                   std::int64_t expect_numel) {
  if (layout.numel != static_cast<std::uint64_t>(expect_numel))
    throw ProtocolError("sparse vector of " + std::to_string(layout.numel) + " elements, expected " +
                        std::to_string(expect_numel));
  if (layout.index_coding > static_cast<std::uint8_t>(kernels::IndexCoding::kDeltaVarint))
    throw ProtocolError("unknown index coding " + std::to_string(layout.index_coding));
  kernels::PackedSparse p;
  p.numel = expect_numel;
  p.coding = static_cast<kernels::IndexCoding>(layout.index_coding);
  if (tensors.size() != (layout.dense ? 1u : 2u))
    throw ProtocolError(std::string("a ") + (layout.dense ? "dense" : "sparse") + " vector travels as " +
                        (layout.dense ? "[values]" : "[indices, values]") + ", got " +
                        std::to_string(tensors.size()) + " tensors");
  if (!layout.dense) p.indices = tensors[0];
  p.values = tensors.back();
  auto s = kernels::unpack(p, expect_numel);
  if (s.values.defined() && !torch::isfinite(s.values).all().item<bool>())
    throw ProtocolError("sparse vector with a NaN or infinite value");
  return s;
}

std::size_t payload_bytes(const std::vector<torch::Tensor>& tensors) {
  std::size_t n = 0;
  for (auto& t : tensors) n += t.numel() * t.element_size();
  return n;
}

namespace {

std::string state_key(const torch::Tensor& p) { return c10::guts::to_string(p.unsafeGetTensorImpl()); }

// The per-parameter state tensors of SGD (momentum) or Adam (exp_avg, exp_avg_sq, step);
// empty before the optimizer's first step.
std::vector<torch::Tensor> state_of(torch::optim::Optimizer& opt, const torch::Tensor& p,
                                    std::string& kind) {
  auto it = opt.state().find(state_key(p));
  if (it == opt.state().end()) return {};
  if (auto* s = dynamic_cast<torch::optim::SGDParamState*>(it->second.get())) {
    kind = "sgd";
    if (!s->momentum_buffer().defined()) return {};
    return {s->momentum_buffer()};
  }
  if (auto* s = dynamic_cast<torch::optim::AdamParamState*>(it->second.get())) {
    kind = "adam";
    return {s->exp_avg(), s->exp_avg_sq(), torch::tensor({s->step()}, torch::kInt64)};
  }
  throw Error("model snapshot: optimizer state of an unsupported kind (sgd and adam are)");
}

std::string optimizer_kind(torch::optim::Optimizer& opt) {
  const auto& o = opt.param_groups().at(0).options();
  if (dynamic_cast<const torch::optim::SGDOptions*>(&o)) return "sgd";
  if (dynamic_cast<const torch::optim::AdamOptions*>(&o)) return "adam";
  throw Error("model snapshot: unsupported optimizer (sgd and adam are)");
}

}  // namespace

wire::Message make_snapshot(std::uint64_t round, std::uint32_t staleness, const FlatParams& p,
                            torch::optim::Optimizer& opt) {
  wire::ModelSnapshot s;
  s.round = round;
  s.names = p.names();
  s.optimizer = optimizer_kind(opt);
  s.staleness = staleness;
  const auto& go = opt.param_groups().at(0).options();
  if (auto* sgd = dynamic_cast<const torch::optim::SGDOptions*>(&go)) {
    s.momentum = sgd->momentum();
    s.weight_decay = sgd->weight_decay();
  } else if (auto* adam = dynamic_cast<const torch::optim::AdamOptions*>(&go)) {
    s.weight_decay = adam->weight_decay();
  }
  std::vector<torch::Tensor> tensors;
  for (auto& t : p.params()) tensors.push_back(t.detach());
  std::vector<torch::Tensor> state;
  for (auto& t : p.params()) {
    std::string kind;
    auto st = state_of(opt, t, kind);
    if (st.empty()) {
      state.clear();
      break;
    }
    s.state_per_param = static_cast<std::uint32_t>(st.size());
    for (auto& x : st) state.push_back(x.detach());
  }
  if (state.empty()) s.state_per_param = 0;
  for (auto& x : state) tensors.push_back(x);
  return wire::make_message(s, std::move(tensors));
}

std::uint64_t load_snapshot(const wire::Message& msg, FlatParams& p, torch::optim::Optimizer& opt) {
  const auto s = wire::meta_as<wire::ModelSnapshot>(msg);
  if (s.names != p.names())
    throw ProtocolError("model snapshot of other parameters than this client's front (is the model the same?)");
  const auto kind = optimizer_kind(opt);
  if (s.optimizer != kind)
    throw ProtocolError("model snapshot for optimizer '" + s.optimizer + "', this client uses '" + kind + "'");
  const std::uint32_t expect_state = kind == "sgd" ? 1 : 3;
  if (s.state_per_param != 0 && s.state_per_param != expect_state)
    throw ProtocolError("model snapshot with " + std::to_string(s.state_per_param) +
                        " state tensors per parameter; " + kind + " keeps " + std::to_string(expect_state));
  const auto n = p.params().size();
  if (msg.tensors.size() != n * (1 + s.state_per_param))
    throw ProtocolError("model snapshot with " + std::to_string(msg.tensors.size()) + " tensors, expected " +
                        std::to_string(n * (1 + s.state_per_param)));
  auto check = [&](const torch::Tensor& t, const torch::Tensor& like, const std::string& what) {
    if (t.scalar_type() != like.scalar_type() || t.sizes() != like.sizes())
      throw ProtocolError("model snapshot: " + what + " has the wrong shape or dtype");
    if (t.is_floating_point() && !torch::isfinite(t).all().item<bool>())
      throw ProtocolError("model snapshot: " + what + " holds NaN or infinite values");
  };
  for (std::size_t i = 0; i < n; ++i) check(msg.tensors[i], p.params()[i], s.names[i]);
  for (std::size_t i = 0; i < n && s.state_per_param; ++i) {
    const auto& t = p.params()[i];
    for (std::uint32_t j = 0; j < s.state_per_param; ++j) {
      const auto& x = msg.tensors[n + i * s.state_per_param + j];
      if (kind == "adam" && j == 2) {
        if (x.scalar_type() != torch::kInt64 || x.numel() != 1 || x.item<std::int64_t>() < 0)
          throw ProtocolError("model snapshot: Adam step of " + s.names[i] + " is malformed");
      } else {
        check(x, t, s.names[i] + "'s optimizer state");
      }
    }
  }
  if (!std::isfinite(s.momentum) || s.momentum < 0 || s.momentum >= 1 || !std::isfinite(s.weight_decay) ||
      s.weight_decay < 0)
    throw ProtocolError("model snapshot: momentum must be in [0, 1) and weight decay >= 0");
  for (auto& group : opt.param_groups()) {
    if (auto* sgd = dynamic_cast<torch::optim::SGDOptions*>(&group.options()))
      sgd->momentum(s.momentum).weight_decay(s.weight_decay);
    else if (auto* adam = dynamic_cast<torch::optim::AdamOptions*>(&group.options()))
      adam->weight_decay(s.weight_decay);
  }
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < n; ++i) p.params()[i].copy_(msg.tensors[i]);
  opt.state().clear();
  for (std::size_t i = 0; i < n && s.state_per_param; ++i) {
    const auto& t = p.params()[i];
    const auto* x = &msg.tensors[n + i * s.state_per_param];
    if (kind == "sgd") {
      auto st = std::make_unique<torch::optim::SGDParamState>();
      st->momentum_buffer(x[0].clone());
      opt.state()[state_key(t)] = std::move(st);
    } else {
      auto st = std::make_unique<torch::optim::AdamParamState>();
      st->exp_avg(x[0].clone());
      st->exp_avg_sq(x[1].clone());
      st->step(x[2].item<std::int64_t>());
      opt.state()[state_key(t)] = std::move(st);
    }
  }
  return s.round;
}

}  // namespace cutlayer::sync
