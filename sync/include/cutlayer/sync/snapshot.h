// The snapshot a joiner starts from: the synced parameters and the optimizer's state
// behind them, as a wire::ModelSnapshot message.
#pragma once

#include <torch/optim/optimizer.h>

#include <cstdint>

#include "cutlayer/sync/flat_params.h"
#include "cutlayer/wire/message.h"

namespace cutlayer::sync {

wire::Message make_snapshot(std::uint64_t round, std::uint32_t staleness, const FlatParams& p,
                            torch::optim::Optimizer& opt);
// Copies a snapshot into `p` and `opt` after checking names, shapes and dtypes; returns
// its round. Throws ProtocolError when it does not fit this model.
std::uint64_t load_snapshot(const wire::Message& msg, FlatParams& p, torch::optim::Optimizer& opt);

}  // namespace cutlayer::sync
