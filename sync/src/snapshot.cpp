#include "cutlayer/sync/snapshot.h"

#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>

#include <cmath>
#include <memory>
#include <string>

#include "cutlayer/error.h"
#include "cutlayer/wire/messages.h"

namespace cutlayer::sync {

namespace {

std::string state_key(const torch::Tensor& p) {
  return c10::guts::to_string(p.unsafeGetTensorImpl());
}

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
                            torch::optim::Optimizer& opt, const SnapshotKfac& kfac) {
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
  s.kfac_sharing = kfac.sharing;
  s.kfac_method = kfac.method;
  s.kfac_damping = kfac.damping;
  s.kfac = kfac.content;
  for (auto& x : kfac.tensors) tensors.push_back(x.detach());
  return wire::make_message(s, std::move(tensors));
}

std::uint64_t load_snapshot(const wire::Message& msg, FlatParams& p, torch::optim::Optimizer& opt,
                            SnapshotKfac* kfac) {
  const auto s = wire::meta_as<wire::ModelSnapshot>(msg);
  if (s.names != p.names())
    throw ProtocolError(
        "model snapshot of other parameters than this client's front (is the model the same?)");
  const auto kind = optimizer_kind(opt);
  if (s.optimizer != kind)
    throw ProtocolError("model snapshot for optimizer '" + s.optimizer + "', this client uses '" +
                        kind + "'");
  const std::uint32_t expect_state = kind == "sgd" ? 1 : 3;
  if (s.state_per_param != 0 && s.state_per_param != expect_state)
    throw ProtocolError("model snapshot with " + std::to_string(s.state_per_param) +
                        " state tensors per parameter; " + kind + " keeps " +
                        std::to_string(expect_state));
  const auto n = p.params().size();
  const auto model_tensors = n * (1 + s.state_per_param);
  // K-FAC tensors follow only when the snapshot says what they are.
  if (msg.tensors.size() < model_tensors ||
      (s.kfac == wire::KfacContent::kNone && msg.tensors.size() != model_tensors))
    throw ProtocolError("model snapshot with " + std::to_string(msg.tensors.size()) +
                        " tensors, expected " + std::to_string(model_tensors) +
                        (s.kfac == wire::KfacContent::kNone ? "" : " and K-FAC's"));
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
  if (!std::isfinite(s.momentum) || s.momentum < 0 || s.momentum >= 1 ||
      !std::isfinite(s.weight_decay) || s.weight_decay < 0)
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
  if (kfac) {
    kfac->sharing = s.kfac_sharing;
    kfac->method = s.kfac_method;
    kfac->damping = s.kfac_damping;
    kfac->content = s.kfac;
    kfac->tensors.assign(msg.tensors.begin() + static_cast<std::ptrdiff_t>(model_tensors), msg.tensors.end());
  }
  return s.round;
}

}  // namespace cutlayer::sync
