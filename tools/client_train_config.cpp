#include "client_train_config.h"

#include "cutlayer/client/client_config.h"
#include "cutlayer/error.h"

namespace cutlayer::tools {

ClientTrainConfig load_client_train_config(const std::string& path) {
  auto c = client::load_client_config(path);
  if (!c.has_train)
    throw ConfigError(path + ": no \"train\" object: these tools train the model it describes (see configs/client.json)");
  return {c.log_level, c.threads, c.train, c.nopeek, c.client_key, c.checkpoint};
}

}  // namespace cutlayer::tools
