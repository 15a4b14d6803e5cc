// Whether a peer's float32 tensor may be used: every element finite and within a bound. The
// server refuses activations, gradients and factors that are not (server/checks.h), and the
// cut's codec the values it decodes (cut/codec.h).
#pragma once

#include <torch/types.h>

#include <cfloat>

namespace cutlayer::wire {

// True when every element of the float32 tensor `t` is finite and |v| <= max_abs (NaN and
// Inf never are). A tensor of another dtype, or undefined, is not checked (true).
bool within_bound(const torch::Tensor& t, double max_abs = FLT_MAX);

// Throws ProtocolError naming `what` unless within_bound(t, max_abs): "... refused, nothing
// applied", naming the bound (by default the server's limits.max_abs_value).
void check_values(const torch::Tensor& t, double max_abs, const char* what,
                  const char* bound_name = "the server's limits.max_abs_value");

}  // namespace cutlayer::wire
