// Attacks on the gradients a U-shaped server receives (dL/dh, one row per example): how
// well each one tells one class from the rest, as ROC AUC per class (0.5: nothing learnt).
//  norm:    score = ||g|| (Li et al. 2021's norm attack), or -||g|| for a class whose norms
//           run low on the labelled first half (below); AUC on the second half. Unoriented,
//           the mean over balanced classes would be 0.5 whatever leaks;
//  cosine:  the server knows one example of the class: score = cos(g, g_ref) (Li et al.);
//  lda:     the server knows the labels of the first half of the gradients: it projects all
//           of them onto their top principal components (as many as classes) and fits a
//           linear discriminant (class means, shared covariance) on that half; score = the
//           class's posterior, AUC on the other half. The strongest attack here: it learns
//           the class directions from many examples, so zero-mean noise averages out of them;
//  cluster: no labels at all: k-means (k = classes) on the same projection of the unit
//           gradients; score = -distance to the cluster that best matches the class (chosen
//           with the labels: an upper bound on what the clustering attacker achieves).
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace cutlayer::privacy {

struct AttackAuc {
  std::string attack;
  double mean = 0, max = 0, min = 1;  // over the classes that have at least 2 examples
  int classes = 0;
};

// All four attacks on `grads` (N x D) with labels `y` (N, int64). `seed` drives k-means'
// initialisation. Throws cutlayer::Error when no class has 2 examples and a rest.
std::vector<AttackAuc> attack_labels(const torch::Tensor& grads, const torch::Tensor& y, std::uint64_t seed);

}  // namespace cutlayer::privacy
