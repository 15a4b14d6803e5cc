#include "client_train_config.h"

#include "cutlayer/client/client_config.h"
#include "cutlayer/error.h"

namespace cutlayer::tools {

ClientTrainConfig load_client_train_config(const std::string& path) {
  auto c = client::load_client_config(path);
  if (!c.has_train)
    throw ConfigError(path + ": no \"train\" object: these tools train the model it describes (see configs/client.json)");
  ClientTrainConfig t;
  t.log_level = c.log_level;
  t.threads = c.threads;
  t.train = c.train;
  t.nopeek = c.nopeek;
  t.client_key = c.client_key;
  t.cut = c.cut;
  t.checkpoint = c.checkpoint;
  if (c.has_vertical)
    t.vertical = {c.vertical.party, c.vertical.parties, c.vertical.keep, c.vertical.join};
  return t;
}

}  // namespace cutlayer::tools
