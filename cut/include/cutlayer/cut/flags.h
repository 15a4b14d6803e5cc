// The command-line flags that override a config's "cut" object (cutlayer-client,
// cutlayer-train, cutlayer-leakage). Header-only: the binaries that use it link CLI11.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "cutlayer/cut/options.h"
#include "cutlayer/error.h"

namespace cutlayer::cut {

struct CutFlags {
  std::string values, grad_values;
  double topk = -1, random = -1;

  void add(CLI::App& app) {
    const std::vector<std::string> names{"fp32", "bf16", "fp16", "int8"};
    app.add_option("--cut-values", values, "how cut activations travel, and their gradients unless --cut-grad-values "
                                           "(overrides cut.values)")
        ->check(CLI::IsMember(names));
    app.add_option("--cut-grad-values", grad_values, "how the cut's gradients travel (overrides cut.grad_values)")
        ->check(CLI::IsMember(names));
    app.add_option("--cut-topk", topk, "fraction of each sample's activations sent, 0: all (overrides cut.topk)")
        ->check(CLI::Range(0.0, 1.0));
    app.add_option("--cut-random", random, "fraction of the kept slots drawn at random (overrides cut.random)")
        ->check(CLI::Range(0.0, 1.0));
  }
  void apply(CutOptions& o) const {
    if (!values.empty()) {
      parse_values(values, o.values);
      if (grad_values.empty()) o.grad_values = o.values;
    }
    if (!grad_values.empty()) parse_values(grad_values, o.grad_values);
    if (topk >= 0) o.topk = topk;
    if (random >= 0) o.random = random;
    if (o.random > 0 && o.topk <= 0)
      throw ConfigError("--cut-random " + std::to_string(o.random) + " needs a top-k cut: give --cut-topk too");
  }
};

}  // namespace cutlayer::cut
