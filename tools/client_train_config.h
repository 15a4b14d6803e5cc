// What the tools that train or evaluate outside the daemons (cutlayer-train,
// cutlayer-gradstudy, cutlayer-leakage) read from a client config file: its "train" and
// "privacy" objects, log level and threads; "name", "transport" and "sync" are accepted
// unread, so the daemon's own file works as it is.
#pragma once

#include <string>

#include "cutlayer/privacy/nopeek.h"
#include "cutlayer/train/train_options.h"

namespace cutlayer::tools {

struct ClientTrainConfig {
  std::string log_level = "info";
  int threads = 1;
  train::TrainOptions train;
  privacy::NoPeekOptions nopeek;
};
// Throws ConfigError naming the file, the field and the fix.
ClientTrainConfig load_client_train_config(const std::string& path);

}  // namespace cutlayer::tools
