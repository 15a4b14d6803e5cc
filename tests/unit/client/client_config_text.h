// The client config loader through tests/unit/config_text.h: load a config from text, or
// check that it is refused naming the file, the field and the reason.
#pragma once

#include <string>

#include "../config_text.h"
#include "cutlayer/client/client_config.h"

namespace cutlayer::client::testing_client {

inline ClientConfig load_text(const std::string& text) {
  return testing_config::load_text(text, &load_client_config);
}

inline testing_config::Refusal refusal_of(const std::string& text) {
  return testing_config::refusal_of(text, &load_client_config);
}

inline void expect_refused(const std::string& text, const std::string& field, const std::string& reason) {
  testing_config::expect_refused(text, field, reason, &load_client_config);
}

}  // namespace cutlayer::client::testing_client
