#include "client_train_config.h"

#include "cutlayer/client/client_config.h"
#include "cutlayer/config/reader.h"
#include "cutlayer/log.h"

namespace cutlayer::tools {

ClientTrainConfig load_client_train_config(const std::string& path) {
  auto doc = config::Document::load(path);
  auto root = doc->root();
  ClientTrainConfig c;
  root.get_choice("log_level", c.log_level, log::level_names());
  root.get_int("threads", c.threads, 1, 256);
  root.ignore("name");
  root.ignore("transport");
  root.ignore("sync");
  auto privacy = root.child("privacy");
  c.nopeek = client::read_nopeek_options(privacy);
  auto tr = root.child("train");
  c.train = train::read_train_options(tr);
  root.finish();
  return c;
}

}  // namespace cutlayer::tools
