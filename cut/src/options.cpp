#include "cutlayer/cut/options.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "cutlayer/config/reader.h"

namespace cutlayer::cut {

namespace {
const std::vector<std::string> kValueNames{"fp32", "bf16", "fp16", "int8"};
}

const char* values_name(wire::CutValues v) {
  const auto i = static_cast<std::size_t>(v);
  return i < kValueNames.size() ? kValueNames[i].c_str() : "?";
}

bool parse_values(const std::string& name, wire::CutValues& out) {
  const auto it = std::find(kValueNames.begin(), kValueNames.end(), name);
  if (it == kValueNames.end()) return false;
  out = static_cast<wire::CutValues>(it - kValueNames.begin());
  return true;
}

CutOptions read_cut_options(config::Object& c) {
  CutOptions o;
  std::string values = "fp32";
  c.get_choice("values", values, kValueNames);
  parse_values(values, o.values);
  std::string grad = values;
  c.get_choice("grad_values", grad, kValueNames);
  parse_values(grad, o.grad_values);
  c.get("topk", o.topk, 0.0, 1.0);
  c.get("random", o.random, 0.0, 1.0);
  if (o.random > 0 && o.topk <= 0)
    c.fail("random", "draws some of the kept activations at random, but topk is 0 (every activation is sent): "
                     "set topk to the fraction kept, e.g. 0.05, or remove random");
  c.finish();
  return o;
}

wire::CutCoding coding_for(const CutOptions& o, std::int64_t per_sample) {
  wire::CutCoding c;
  c.values = o.values;
  c.grad_values = o.grad_values;
  if (o.topk > 0 && o.topk < 1) {
    const auto k = static_cast<std::int64_t>(std::ceil(o.topk * static_cast<double>(per_sample)));
    c.kept = static_cast<std::uint32_t>(std::clamp<std::int64_t>(k, 1, per_sample));
  }
  return c;
}

std::string describe(const wire::CutCoding& c, std::int64_t per_sample) {
  auto s = fmt::format("{} up, {} down", values_name(c.values), values_name(c.grad_values));
  if (c.kept > 0) s += fmt::format(", top {} of {} per sample", c.kept, per_sample);
  return s;
}

std::string identity(const CutOptions& o) {
  return fmt::format("values={} grad_values={} topk={:.17g} random={:.17g}", values_name(o.values),
                     values_name(o.grad_values), o.topk, o.random);
}

}  // namespace cutlayer::cut
