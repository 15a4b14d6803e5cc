// cutlayer-server's configuration: what the JSON file may say, with defaults.
#pragma once

#include <cstdint>
#include <string>

#include "cutlayer/server/aggregator.h"
#include "cutlayer/server/back_trainer.h"
#include "cutlayer/server/scale_out.h"
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
  // train.accumulate, train.round_wait_ms: the back steps once per round of batches
  RoundOptions rounds;
  // the "scale_out" object (world, store, host, timeout_ms, idle_ms, check_every; the rank
  // comes from --rank): a server tier of several ranks (docs/scale-out.md)
  ScaleOutOptions scale_out;
  // Whether the back steps in rounds (accumulate > 1, or several ranks).
  bool in_rounds() const { return has_train && (rounds.accumulate > 1 || scale_out.world > 1); }
};

// Reads and validates `path`; relative key paths resolve against the file's directory.
// Throws ConfigError naming file, field and fix; IoError when the file is missing.
ServerConfig load_server_config(const std::string& path);
// Throws ConfigError (naming `path` and the field) when the server tier (scale_out, with
// the command line's rank and world applied) cannot run this config.
void check_server_tier(const ServerConfig& c, const std::string& path);
// The settings every rank of a server tier must share (the training, the rounds, the
// aggregation, the checkpoint cadence): the ranks compare its hash before they start.
std::string tier_identity(const ServerConfig& c);

}  // namespace cutlayer::server
