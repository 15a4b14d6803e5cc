// The snapshot a joiner starts from: the synced parameters and the optimizer's state
// behind them, as a wire::ModelSnapshot message.
#pragma once

#include <torch/optim/optimizer.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cutlayer/sync/flat_params.h"
#include "cutlayer/wire/message.h"
#include "cutlayer/wire/messages.h"

namespace cutlayer::sync {

// The aggregation's shared K-FAC state (wire::ModelSnapshot's kfac fields); sharing ""
// when the members keep their factors.
struct SnapshotKfac {
  std::string sharing, method;
  double damping = 0;
  wire::KfacContent content = wire::KfacContent::kNone;
  std::vector<torch::Tensor> tensors;
};

wire::Message make_snapshot(std::uint64_t round, std::uint32_t staleness, const FlatParams& p,
                            torch::optim::Optimizer& opt, const SnapshotKfac& kfac = {});
// Copies a snapshot into `p` and `opt` after checking names, shapes and dtypes; returns
// its round, and its K-FAC part in `kfac` (its tensors not checked: Kfac::install_* does).
// Throws ProtocolError when it does not fit this model.
std::uint64_t load_snapshot(const wire::Message& msg, FlatParams& p, torch::optim::Optimizer& opt,
                            SnapshotKfac* kfac = nullptr);

}  // namespace cutlayer::sync
