#include "cutlayer/server/checks.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "cutlayer/error.h"
#include "cutlayer/wire/messages.h"

namespace cutlayer::server {

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

void check_values(const torch::Tensor& t, double max_abs, const char* what) {
  if (within_bound(t, max_abs)) return;
  if (!within_bound(t)) throw ProtocolError(std::string(what) + " with a NaN or infinite value: refused, nothing applied");
  char bound[32];
  std::snprintf(bound, sizeof bound, "%g", max_abs);
  throw ProtocolError(std::string(what) + " with a value of magnitude above " + bound +
                      " (the server's limits.max_abs_value): refused, nothing applied");
}

std::string clean_text(const std::string& text) {
  std::string out = text.substr(0, kMaxErrorText);
  for (auto& ch : out)
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) ch = ' ';
  if (text.size() > kMaxErrorText) out += "...";
  return out;
}

std::string error_text(const std::exception& e) {
  if (const auto* c10 = dynamic_cast<const c10::Error*>(&e))
    return clean_text(std::string("the server could not process this message: ") + c10->what_without_backtrace());
  if (dynamic_cast<const Error*>(&e)) return clean_text(e.what());
  return clean_text(std::string("the server could not process this message: ") + e.what());
}

wire::Message error_message(const std::string& text) {
  return wire::make_message(wire::ErrorMsg{static_cast<std::uint16_t>(wire::ErrorCode::kProtocol), text});
}

}  // namespace cutlayer::server
