#include "cutlayer/privacy/label_defense.h"

#include <torch/torch.h>

#include <cmath>

#include "cutlayer/error.h"

namespace cutlayer::privacy {

const std::vector<std::string>& label_defense_kinds() {
  static const std::vector<std::string> k{"none", "noise"};
  return k;
}

torch::Tensor defend_logit_grad(const torch::Tensor& g, const LabelDefenseOptions& o) {
  if (!o.active()) return g;
  if (o.kind != "noise") throw ConfigError("privacy.label_defense.kind: unknown kind '" + o.kind + "'");
  if (g.dim() != 2 || g.size(0) == 0) throw Error("label defence: expects one row of logit gradients per example");
  const auto norms = g.norm(2, 1, /*keepdim=*/true);
  // The median over the rows that carry anything: a confident example's softmax can round
  // to exactly one-hot, and a batch mostly of those must not send the rest unprotected.
  const auto live = norms.masked_select(norms > 0);
  if (live.numel() == 0) return g;  // every row zero: nothing to hide
  const auto m = live.median().item<double>();
  if (!std::isfinite(m)) throw Error("label defence: the logits' gradient is not finite");
  auto out = g;
  if (o.clip) out = g * (m / norms.clamp_min(m));  // rows above the median scaled down to it
  // Every example's noise is at least sigma times its own (clipped) norm: no example's
  // direction stands out of its noise by more than 1 / sigma.
  const auto scale = out.norm(2, 1, /*keepdim=*/true).clamp_min(m) * o.sigma;
  auto noise = torch::randn_like(g) * scale;
  return out + (noise - noise.mean(1, /*keepdim=*/true));  // the rows' sum-zero subspace
}

torch::Tensor head_backward(const torch::Tensor& h, const torch::Tensor& logits, const torch::Tensor& loss,
                            const LabelDefenseOptions& o) {
  if (!o.active()) {
    loss.backward();
    return h.grad();
  }
  const auto dlogits = torch::autograd::grad({loss}, {logits}, {}, /*retain_graph=*/true)[0];
  const auto sent = defend_logit_grad(dlogits, o);
  auto dh = torch::autograd::grad({logits}, {h}, {sent}, /*retain_graph=*/true)[0];
  // Last, so that hooks keeping the head's output gradient (K-FAC's) keep the true one.
  logits.backward(dlogits);
  return dh;
}

}  // namespace cutlayer::privacy
