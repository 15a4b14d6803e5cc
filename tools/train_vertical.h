// cutlayer-train --vertical K: the monolithic reference of vertical split learning. K
// parties' shares of the training set (each a random `keep` of the people, party k
// holding strip k of every image), aligned by the real private set intersection
// (vertical/psi.h, all parties in this process), then one model — a front per party's
// strip, one back over their joined features — trained in this process on the people all
// parties hold. The yardstick for the split version and for "how much does cutting the
// features cost" (docs/vertical.md).
#pragma once

#include "client_train_config.h"

namespace cutlayer::tools {

struct VerticalRun {
  int parties = 0;    // 0: not a vertical run
  double keep = 0.8;  // each party's share of the people
  std::string join = "concat";  // how the back joins the parties' cuts (vertical/parties.h)
};

// Trains and prints the JSON summary; returns the exit status.
int run_vertical(const ClientTrainConfig& cfg, const VerticalRun& v);

}  // namespace cutlayer::tools
