// cutlayer-client's configuration: what the JSON file may say, with defaults.
#pragma once

#include <cstdint>
#include <string>

#include "cutlayer/client/vertical_options.h"
#include "cutlayer/cut/options.h"
#include "cutlayer/privacy/nopeek.h"
#include "cutlayer/state/checkpoint.h"
#include "cutlayer/sync/options.h"
#include "cutlayer/train/train_options.h"

namespace cutlayer::config {
class Object;
}

namespace cutlayer::client {

struct ClientConfig {
  std::string log_level = "info";
  int threads = 1;  // LibTorch intra-op threads
  std::string name = "client";
  // transport
  std::string server_host = "127.0.0.1";
  std::uint16_t join_port = 7710;
  std::string server_public_key = "/etc/cutlayer/keys/server.pub";
  std::string client_key = "/etc/cutlayer/keys/client.key";
  int join_timeout_ms = 3000;
  int join_attempts = 5;
  std::int64_t max_message_mb = 1024;
  // training; absent: only the link self-check (--probes) can run
  bool has_train = false;
  train::TrainOptions train;
  privacy::PrivacyOptions nopeek;  // the "privacy" object
  sync::SyncOptions sync;       // the "sync" object: aggregation of the fronts across clients
  cut::CutOptions cut;          // the "cut" object: how activations and gradients cross the wire
  state::CheckpointOptions checkpoint;  // the "checkpoint" object; sealed with client_key
  // the "vertical" object: this client is one party of vertical split learning
  bool has_vertical = false;
  VerticalPartyOptions vertical;
};

// Reads and validates `path`; relative key paths resolve against the file's directory.
ClientConfig load_client_config(const std::string& path);

// The "privacy" object: NoPeek's weight, its warm-up and the cut's noise.
privacy::PrivacyOptions read_privacy_options(config::Object& privacy);

}  // namespace cutlayer::client
