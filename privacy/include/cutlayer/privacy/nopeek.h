// NoPeek (Vepakomma et al. 2020): the client adds alpha * dCor(x, z) to its loss, so that
// its cut-layer activations z reveal less of the raw input x; optionally Gaussian noise on
// what leaves the client. The dCor itself is in dcor.h.
#pragma once

#include <torch/types.h>

#include <cstdint>

namespace cutlayer::privacy {

// The client config's "privacy" object (read by the client's config loader).
struct NoPeekOptions {
  double alpha = 0.0;  // 0 disables NoPeek
  // Gaussian noise of this standard deviation added to the cut activations before they
  // leave the client (training and evaluation alike); 0: none.
  double noise_std = 0.0;
  // alpha ramps linearly from 0 over this many steps (0: full alpha from the start), so
  // that the front learns the task before it is pushed away from the input.
  std::int64_t alpha_warmup_steps = 0;
};

// The NoPeek weight at `step` (0-based).
double alpha_at(const NoPeekOptions& o, std::int64_t step);

// What leaves the client for activations z: z itself, or z plus the configured noise.
// The noise is a constant of the graph: dL/d(sent) is dL/dz.
torch::Tensor cut_to_send(const torch::Tensor& z, const NoPeekOptions& o);

}  // namespace cutlayer::privacy
