#include "cutlayer/privacy/nopeek.h"

#include <torch/torch.h>

namespace cutlayer::privacy {

double alpha_at(const NoPeekOptions& o, std::int64_t step) {
  if (o.alpha_warmup_steps <= 0 || step >= o.alpha_warmup_steps) return o.alpha;
  return o.alpha * static_cast<double>(step) / static_cast<double>(o.alpha_warmup_steps);
}

torch::Tensor cut_to_send(const torch::Tensor& z, const NoPeekOptions& o) {
  if (o.noise_std <= 0) return z;
  return z + o.noise_std * torch::randn_like(z);
}

}  // namespace cutlayer::privacy
