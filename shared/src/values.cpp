#include "cutlayer/wire/values.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

#include "cutlayer/error.h"

namespace cutlayer::wire {

bool within_bound(const torch::Tensor& t, double max_abs) {
  if (!t.defined() || t.scalar_type() != torch::kFloat32) return true;
  const auto c = t.contiguous();  // decoded tensors and gradients already are: no copy
  const float* p = c.data_ptr<float>();
  const std::int64_t n = c.numel();
  const float bound = static_cast<float>(std::min<double>(max_abs, FLT_MAX));
  constexpr std::int64_t kChunk = 4096;  // a branch-free inner loop, one test per chunk
  for (std::int64_t i = 0; i < n; i += kChunk) {
    const std::int64_t end = std::min(n, i + kChunk);
    bool ok = true;
    for (std::int64_t j = i; j < end; ++j) ok &= std::fabs(p[j]) <= bound;  // false for NaN
    if (!ok) return false;
  }
  return true;
}

void check_values(const torch::Tensor& t, double max_abs, const char* what, const char* bound_name) {
  if (within_bound(t, max_abs)) return;
  if (!within_bound(t)) throw ProtocolError(std::string(what) + " with a NaN or infinite value: refused, nothing applied");
  char bound[32];
  std::snprintf(bound, sizeof bound, "%g", max_abs);
  throw ProtocolError(std::string(what) + " with a value of magnitude above " + bound + " (" + bound_name +
                      "): refused, nothing applied");
}

}  // namespace cutlayer::wire
