// The client config's "cut" object: how this client's cut-layer activations travel up and
// their gradients down (docs/split-training.md, "Compressed cut").
//
//   "cut": {"values": "int8", "grad_values": "bf16", "topk": 0.05, "random": 0.1}
//
// values / grad_values: fp32 | bf16 | fp16 | int8 (per-sample scale); grad_values defaults
// to values. topk: the fraction of each sample's activations sent (0: all of them); the
// gradients come back for those only. random: the fraction of the kept slots given to
// entries drawn uniformly from the rest instead of the next largest (randomized top-k).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cutlayer/wire/messages.h"

namespace cutlayer::config {
class Object;
}

namespace cutlayer::cut {

struct CutOptions {
  wire::CutValues values = wire::CutValues::kFp32;
  wire::CutValues grad_values = wire::CutValues::kFp32;
  double topk = 0;
  double random = 0;
  // Whether anything is compressed (else the cut travels as one float32 tensor, as before).
  bool compressed() const {
    return values != wire::CutValues::kFp32 || grad_values != wire::CutValues::kFp32 || topk > 0;
  }
};

// Reads a "cut" object (ConfigError naming the field and the choices).
CutOptions read_cut_options(config::Object& cut);

// The wire coding for a cut of `per_sample` activations per sample: top-k keeps
// ceil(topk * per_sample) of them, at least 1.
wire::CutCoding coding_for(const CutOptions& o, std::int64_t per_sample);

const char* values_name(wire::CutValues v);
// "fp32" | "bf16" | "fp16" | "int8" → the enum; false for anything else.
bool parse_values(const std::string& name, wire::CutValues& out);
// One line for logs: "int8 up, bf16 down, top 230 of 4608 per sample".
std::string describe(const wire::CutCoding& c, std::int64_t per_sample);
// A stable text for run identities and reports: "values=int8 grad_values=bf16 topk=0.05 random=0.1".
std::string identity(const CutOptions& o);

}  // namespace cutlayer::cut
