#include "cutlayer/privacy/nopeek.h"

#include "cutlayer/error.h"

#include <fmt/format.h>
#include <torch/torch.h>

namespace cutlayer::privacy {

std::string identity(const PrivacyOptions& o) {
  auto s = fmt::format("alpha={:.17g} noise_std={:.17g} alpha_warmup_steps={}", o.alpha, o.noise_std,
                       o.alpha_warmup_steps);
  // cut_norm changes the front, which the checkpoint's fingerprint covers.
  if (o.adversary.active()) s += fmt::format(" adversary weight={:.17g} lr={:.17g}", o.adversary.weight, o.adversary.lr);
  const auto& d = o.label_defense;
  if (d.active()) s += fmt::format(" label_defense kind={} sigma={:.17g} clip={}", d.kind, d.sigma, d.clip);
  return s;
}

void refuse_unsaved_state(const PrivacyOptions& o, bool checkpoints, const std::string& where) {
  if (checkpoints && o.adversary.active())
    throw ConfigError(where + ": privacy.adversary's decoder is not saved in checkpoints yet, so a resumed run "
                              "would not match the one it resumes: remove privacy.adversary or the checkpoint options");
}

double alpha_at(const PrivacyOptions& o, std::int64_t step) {
  if (o.alpha_warmup_steps <= 0 || step >= o.alpha_warmup_steps) return o.alpha;
  return o.alpha * static_cast<double>(step) / static_cast<double>(o.alpha_warmup_steps);
}

torch::Tensor cut_to_send(const torch::Tensor& z, const PrivacyOptions& o) {
  if (o.noise_std <= 0) return z;
  return z + o.noise_std * torch::randn_like(z);
}

}  // namespace cutlayer::privacy
