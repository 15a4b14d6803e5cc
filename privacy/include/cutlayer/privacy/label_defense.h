// Label defence for U-shaped split learning. The client computes the loss on its head, so
// the server never receives labels; it receives dL/dh, and that gives the labels away
// (Li et al. 2021: one known example per class labels every batch by cosine similarity).
// The defence perturbs what goes back to the server, not what the client's head learns
// from: each example's gradient at the logits, g_i = (softmax(l_i) - onehot(y_i)) / batch,
// gets Gaussian noise of standard deviation sigma * max(|g_i|, m), m the batch's median
// norm, in the logits' sum-zero subspace (the space the rows of g live in, so that no
// projection can filter the noise out); the head's backward then maps it to h. Every
// example's direction is buried under noise at least sigma times its size, and the
// confident examples (tiny gradients) under noise of the batch's typical size. The noise
// is zero-mean, so the server's layers still learn from the batch, and it scales with the
// batch: it shrinks as training converges. Optionally (clip) rows are first clipped to m.
// A multi-class analogue of Marvell's optimised noise (Li et al.): with symmetric classes the
// directions that tell classes apart span the whole sum-zero subspace, and isotropic noise
// there covers all of them.
#pragma once

#include <torch/types.h>

#include <string>
#include <vector>

namespace cutlayer::privacy {

// The client config's "privacy.label_defense" object.
struct LabelDefenseOptions {
  std::string kind = "none";  // "none" or "noise"
  double sigma = 0.0;         // noise std, in units of max(the example's gradient norm, the batch's median)
  bool clip = false;          // clip every example's gradient to the batch's median norm first
  bool active() const { return kind != "none"; }
};

// The label defence's kinds, for config validation and --help.
const std::vector<std::string>& label_defense_kinds();

// What leaves the client for dL/dlogits `g` (one row per example): g itself when the
// defence is off; otherwise the rows plus noise as described above. Draws from
// LibTorch's global generator.
torch::Tensor defend_logit_grad(const torch::Tensor& g, const LabelDefenseOptions& o);

// The head's half of a U-shaped step: `logits` = head(h), `loss` their loss, h a leaf that
// requires grad. The head's parameters receive the true gradient (the defence does not
// slow the head); returns the gradient for h that the server receives.
torch::Tensor head_backward(const torch::Tensor& h, const torch::Tensor& logits, const torch::Tensor& loss,
                            const LabelDefenseOptions& o);

}  // namespace cutlayer::privacy
