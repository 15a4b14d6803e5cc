// cutlayer-server's configuration: what the JSON file may say, with defaults.
#pragma once

#include <cstdint>
#include <string>

#include "cutlayer/server/aggregator.h"
#include "cutlayer/server/back_trainer.h"
#include "cutlayer/server/service.h"
#include "cutlayer/server/vertical_join.h"
#include "cutlayer/state/checkpoint.h"
#include "cutlayer/train/train_options.h"

namespace cutlayer::server {

struct ServerConfig {
  std::string log_level = "info";
  int threads = 1;  // LibTorch intra-op threads
  // transport
  std::string bind_host = "127.0.0.1";
  std::uint16_t join_port = 7710;  // CURVE front door
  std::uint16_t data_port = 7711;  // sealed data channel
  std::string server_key = "/etc/cutlayer/keys/server.key";
  std::string allow_list = "/etc/cutlayer/keys/allow-list.txt";
  int session_timeout_ms = 30000;
  int heartbeat_ms = 1000;
  std::int64_t max_message_mb = 1024;
  // training (the back model); absent: a probe-only server
  bool has_train = false;
  train::TrainOptions train;
  // train.head_grad_timeout_ms, train.max_deferred_per_session, train.max_deferred_mb;
  // max_abs_value from limits
  TrainerLimits trainer_limits;
  // cross-client aggregation of the clients' fronts; absent: each client's front is its own
  bool has_aggregation = false;
  AggregatorOptions aggregation;  // aggregation.clip, aggregation.clip_window; max_abs_value from limits
  // what one client may do: the "limits" object (limits.max_abs_value, max_join_samples,
  // refusals_to_evict, refusal_window_ms, rejoin_after_eviction_ms)
  ServiceLimits limits;
  double max_abs_value = kDefaultMaxAbsValue;
  // vertical split learning: the "vertical" object (parties hold different features of the
  // same people; docs/vertical.md); absent: horizontal clients
  bool has_vertical = false;
  VerticalOptions vertical;
  // the "checkpoint" object: sealed checkpoints of the back (and replica), under server_key
  state::CheckpointOptions checkpoint;
};

// Reads and validates `path`; relative key paths resolve against the file's directory.
// Throws ConfigError naming file, field and fix; IoError when the file is missing.
ServerConfig load_server_config(const std::string& path);

}  // namespace cutlayer::server
