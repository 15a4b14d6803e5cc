// A vertical party's options (the client config's "vertical" object; vertical_party.h).
#pragma once

#include <chrono>
#include <string>

namespace cutlayer::client {

// The client config's "vertical" object.
struct VerticalPartyOptions {
  int party = 0, parties = 2;
  // Demo data: this party holds a seeded random `keep` of the training set's rows (its
  // own draw, from train.seed and its index), with IDs `id_prefix` + the row number.
  double keep = 0.8;
  std::string id_prefix = "person-";
  std::string join = "concat";  // must be the server's vertical.join (the front's cut follows it)
  std::chrono::milliseconds start_timeout{600000};  // waiting for the other parties to join
};

}  // namespace cutlayer::client
