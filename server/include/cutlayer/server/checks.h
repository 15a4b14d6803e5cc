// What the server accepts as a client's numbers, and what it answers when it refuses one.
//
// Every float a client sends (cut activations, head gradients, sparse gradient values)
// must be finite and within a bound, so that one client's tensor can neither put a NaN
// into a shared model nor overflow an optimizer's state (momentum sums gradients, Adam
// squares them). Values past the bound are refused, never clipped: a client that sends
// them is broken or hostile, and nothing of its message is applied.
#pragma once

#include <torch/types.h>

#include <cfloat>
#include <exception>
#include <string>

#include "cutlayer/wire/message.h"
#include "cutlayer/wire/values.h"

namespace cutlayer::server {

// The default bound on |value| for activations, head gradients and sparse gradient values
// (limits.max_abs_value). Far above what a normalized model produces (the clients' fp16
// wire path stops at 65504), far below float32's 3.4e38: a momentum buffer fed only such
// values stays below bound / (1 - momentum).
constexpr double kDefaultMaxAbsValue = 1e6;

// The bound on a back-model parameter's gradient before the optimizer steps: a step whose
// gradient is past it (or not finite) is refused. Not reached by a training run that has
// not diverged; low enough that Adam's squared gradient (1e36) and momentum's sum stay
// finite.
constexpr double kMaxParamGrad = 1e18;

using wire::check_values;  // wire/values.h
using wire::within_bound;


// The text of an Error answering `e`: the message of ProtocolError and other cutlayer
// errors, a LibTorch error's without its backtrace; control characters as spaces, at most
// kMaxErrorText characters.
constexpr std::size_t kMaxErrorText = 1000;
std::string error_text(const std::exception& e);
std::string clean_text(const std::string& text);

// The Error message the server sends a client whose message it refused.
wire::Message error_message(const std::string& text);

}  // namespace cutlayer::server
