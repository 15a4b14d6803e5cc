// What the tools that train or evaluate outside the daemons (cutlayer-train,
// cutlayer-gradstudy, cutlayer-leakage) read from a client config file: the daemon's own
// file, of which they use the "train", "privacy" and "checkpoint" objects, log level,
// threads and the client's key (which seals cutlayer-train's checkpoints).
#pragma once

#include <string>

#include "cutlayer/cut/options.h"
#include "cutlayer/privacy/nopeek.h"
#include "cutlayer/state/checkpoint.h"
#include "cutlayer/train/train_options.h"

namespace cutlayer::tools {

struct ClientTrainConfig {
  std::string log_level = "info";
  int threads = 1;
  train::TrainOptions train;
  privacy::PrivacyOptions nopeek;
  std::string client_key;
  cut::CutOptions cut;  // the cut's compression, simulated (cut::through_cut)
  state::CheckpointOptions checkpoint;
  // The "vertical" object of a party's config (parties 0: none): cutlayer-train runs the
  // monolithic reference of its run, cutlayer-leakage measures this party's cut.
  struct Vertical {
    int party = 0, parties = 0;
    double keep = 0.8;
    std::string join = "concat";
  } vertical;
};
// Reads the file as cutlayer-client does, and requires its "train" object. Throws
// ConfigError naming the file, the field and the fix.
ClientTrainConfig load_client_train_config(const std::string& path);

}  // namespace cutlayer::tools
