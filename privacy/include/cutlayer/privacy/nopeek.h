// The client's privacy options, and NoPeek (Vepakomma et al. 2020): the client adds
// alpha * dCor(x, z) to its loss, so that its cut-layer activations z reveal less of the raw
// input x; optionally Gaussian noise on what leaves the client. The dCor itself is in
// dcor.h, the U-shaped label defence in label_defense.h, the decoder adversary in
// adversary.h.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <string>

#include "cutlayer/privacy/label_defense.h"

namespace cutlayer::privacy {

// A decoder-aware term: the client trains a local decoder to rebuild x from z, and the
// front is penalised for the decoder's success.
struct AdversaryOptions {
  double weight = 0.0;  // 0: off; the front's loss gains -weight * min(1, MSE(decoder(z), x) / Var(x))
  double lr = 1e-3;     // the local decoder's Adam learning rate
  bool active() const { return weight > 0; }
};

// The client config's "privacy" object (read by the client's config loader).
struct PrivacyOptions {
  double alpha = 0.0;  // 0 disables NoPeek
  // Gaussian noise of this standard deviation added to the cut activations before they
  // leave the client (training and evaluation alike); 0: none.
  double noise_std = 0.0;
  // alpha ramps linearly from 0 over this many steps (0: full alpha from the start), so
  // that the front learns the task before it is pushed away from the input.
  std::int64_t alpha_warmup_steps = 0;
  // Normalise each sample's cut activations (zero mean, unit variance, no affine scale)
  // as the front's last layer, so that the front cannot out-scale the noise. Copied into
  // train::TrainOptions::cut_norm, which builds the layer.
  bool cut_norm = false;
  AdversaryOptions adversary;
  LabelDefenseOptions label_defense;  // U-shaped training only
};

// The options as a checkpoint's run identity states them (a resume must use the same).
std::string identity(const PrivacyOptions& o);

// Throws ConfigError when `checkpoints` are on with options whose state a checkpoint does
// not keep (the decoder adversary's decoder): a resumed run would not match.
void refuse_unsaved_state(const PrivacyOptions& o, bool checkpoints, const std::string& where);

// The NoPeek weight at `step` (0-based).
double alpha_at(const PrivacyOptions& o, std::int64_t step);

// What leaves the client for activations z: z itself, or z plus the configured noise.
// The noise is a constant of the graph: dL/d(sent) is dL/dz.
torch::Tensor cut_to_send(const torch::Tensor& z, const PrivacyOptions& o);

}  // namespace cutlayer::privacy
