// Starting a server's rounds (docs/scale-out.md): with several ranks, meeting the others,
// agreeing on the checkpoint step to resume from, and checking that every rank runs the
// same config from the same model before any client is served.
#pragma once

#include <memory>

#include "cutlayer/server/aggregator.h"
#include "cutlayer/server/back_trainer.h"
#include "cutlayer/server/checkpoints.h"
#include "cutlayer/server/scale_out.h"
#include "cutlayer/server/server_config.h"

namespace cutlayer::server {

struct Tier {
  std::unique_ptr<RankGroup> group;      // null: one server
  std::unique_ptr<ServerRounds> rounds;  // null: the back steps with each batch
};

// The rounds `cfg` asks for (train.accumulate > 1 or scale_out.world > 1; none otherwise,
// or without a trainer). Throws ScaleOutError when the ranks do not meet, cannot agree on a
// checkpoint step, or differ in config or model.
Tier start_rounds(const ServerConfig& cfg, BackTrainer* trainer, Aggregator* aggregator,
                  ServerCheckpoints* checkpoints, bool resumed);

}  // namespace cutlayer::server
