#include "cutlayer/server/server_config.h"

#include <fmt/format.h>

#include "cutlayer/config/reader.h"
#include "cutlayer/log.h"

namespace cutlayer::server {
namespace {

void read_vertical(config::Object& root, ServerConfig& c) {
  if (!c.has_train)
    root.fail("vertical", "vertical training needs a \"train\" object (the back's optimizer, schedule and seed): "
                          "add one");
  if (c.has_aggregation)
    root.fail("vertical", "a vertical server has no fronts to aggregate (each party's front is its own): remove "
                          "\"aggregation\"");
  if (c.train.u_shaped)
    root.fail("vertical", "vertical training is vanilla (party 0 sends the labels): set train.u_shaped false");
  if (c.train.optimizer == "kfac")
    root.fail("vertical", "vertical training does not take train.optimizer \"kfac\" yet: use \"sgd\" or \"adam\"");
  auto v = root.child("vertical");
  auto& o = c.vertical;
  v.get_int("parties", o.parties, 2, 7);
  std::string join = vertical::join_name(o.join);
  v.get_choice("join", join, {"concat", "sum"});
  o.join = vertical::join_mode(join, v.file());
  v.get("input_shape", o.input_shape);
  if (o.input_shape.size() != 3 && o.input_shape.size() != 1)
    v.fail("input_shape", "must be [C, H, W] (images) or [F] (a table's features)");
  for (const auto d : o.input_shape)
    if (d < 1 || d > (1 << 20)) v.fail("input_shape", "each size must be in [1, 2^20]");
  v.get("classes", o.classes, 2, 1 << 20);
  std::int64_t timeout_ms = o.step_timeout.count();
  v.get("step_timeout_ms", timeout_ms, 100, 24 * 3600 * 1000);
  o.step_timeout = std::chrono::milliseconds(timeout_ms);
  v.get_int("max_ids", o.max_ids, 1, 10'000'000);  // round 1: 32 B per ID, within one 1 GiB tensor
  v.finish();
  c.has_vertical = true;
}

void read_scale_out(config::Object& root, ServerConfig& c) {
  auto so = root.child("scale_out");
  auto& o = c.scale_out;
  so.get_int("world", o.world, 1, 1024);
  so.get("store", o.store);
  so.get("host", o.host);
  std::int64_t timeout_ms = o.timeout.count(), idle_ms = o.idle.count();
  so.get("timeout_ms", timeout_ms, 100, 3600 * 1000);
  so.get("idle_ms", idle_ms, 1, 60 * 1000);
  o.timeout = std::chrono::milliseconds(timeout_ms);
  o.idle = std::chrono::milliseconds(idle_ms);
  so.get_int("check_every", o.check_every, 0, 1 << 30);
  so.finish();
}

}  // namespace

ServerConfig load_server_config(const std::string& path) {
  auto doc = config::Document::load(path);
  auto root = doc->root();
  ServerConfig c;
  root.get_choice("log_level", c.log_level,
                  log::level_names());
  root.get_int("threads", c.threads, 1, 256);
  auto t = root.child("transport");
  t.get("bind_host", c.bind_host);
  t.get_int("join_port", c.join_port, 0, 65535);
  t.get_int("data_port", c.data_port, 0, 65535);
  t.get("server_key", c.server_key);
  t.get("allow_list", c.allow_list);
  t.get_int("session_timeout_ms", c.session_timeout_ms, 500, 3600 * 1000);
  t.get_int("heartbeat_ms", c.heartbeat_ms, 50, 60 * 1000);
  t.get("max_message_mb", c.max_message_mb, 1, 4096);
  t.finish();
  auto lim = root.child("limits");
  lim.get("max_abs_value", c.max_abs_value, 1.0, 1e30);
  lim.get_int("max_join_samples", c.limits.max_join_samples, 1, std::int64_t{1} << 32);
  lim.get_int("refusals_to_evict", c.limits.refusals_to_evict, 0, 1000000);
  std::int64_t window_ms = c.limits.refusal_window.count();
  lim.get("refusal_window_ms", window_ms, 1, std::int64_t{24} * 3600 * 1000);
  c.limits.refusal_window = std::chrono::milliseconds(window_ms);
  std::int64_t rejoin_ms = c.limits.rejoin_after_eviction.count();
  lim.get("rejoin_after_eviction_ms", rejoin_ms, 0, std::int64_t{24} * 3600 * 1000);
  c.limits.rejoin_after_eviction = std::chrono::milliseconds(rejoin_ms);
  lim.finish();
  c.trainer_limits.max_abs_value = c.max_abs_value;
  c.aggregation.max_abs_value = c.max_abs_value;
  if (root.has("train")) {
    auto tr = root.child("train");
    // The server's own fields in "train", read before the shared reader (which refuses
    // the fields nobody asked for).
    std::int64_t timeout_ms = c.trainer_limits.head_grad_timeout.count();
    tr.get("head_grad_timeout_ms", timeout_ms, 10, 3600 * 1000);
    c.trainer_limits.head_grad_timeout = std::chrono::milliseconds(timeout_ms);
    tr.get_int("max_deferred_per_session", c.trainer_limits.max_deferred_per_session, 1, 1000);
    std::int64_t deferred_mb = static_cast<std::int64_t>(c.trainer_limits.max_deferred_bytes >> 20);
    tr.get("max_deferred_mb", deferred_mb, 1, 1 << 20);
    c.trainer_limits.max_deferred_bytes = static_cast<std::size_t>(deferred_mb) << 20;
    tr.get("accumulate", c.rounds.accumulate, 1, 4096);
    std::int64_t wait_ms = c.rounds.wait.count();
    tr.get("round_wait_ms", wait_ms, 1, 3600 * 1000);
    c.rounds.wait = std::chrono::milliseconds(wait_ms);
    tr.get("round_start_clients", c.rounds.start_clients, 0, 100000);
    c.train = train::read_train_options(tr);
    if (c.rounds.accumulate > 1 && c.train.optimizer == "kfac")
      tr.fail("accumulate", "train.optimizer \"kfac\" steps with each batch's own factors: set accumulate 1 or "
                            "use \"sgd\" or \"adam\"");
    c.has_train = true;
  }
  if (root.has("aggregation")) {
    auto a = root.child("aggregation");
    if (!c.has_train)
      a.fail("staleness", "aggregation needs a \"train\" object (the front's model and optimizer); add one or remove \"aggregation\"");
    a.get_int("staleness", c.aggregation.staleness, 0, 1000);
    std::int64_t deadline_ms = c.aggregation.deadline.count();
    a.get("deadline_ms", deadline_ms, 10, 3600 * 1000);
    c.aggregation.deadline = std::chrono::milliseconds(deadline_ms);
    a.get("target_samples", c.aggregation.target_samples, 0, std::int64_t{1} << 32);
    std::string weight = "inv";
    a.get_choice("stale_weight", weight, {"inv_sqrt", "inv", "none"});
    c.aggregation.stale_weight = weight == "inv" ? StaleWeight::kInv
                                 : weight == "none" ? StaleWeight::kNone
                                                    : StaleWeight::kInvSqrt;
    a.get("clip", c.aggregation.clip, 0.0, 1e6);
    if (c.aggregation.clip > 0 && c.aggregation.clip < 1)
      a.fail("clip", "must be 0 (off) or at least 1 (a multiple of the median contribution norm), not " +
                         std::to_string(c.aggregation.clip));
    a.get_int("clip_window", c.aggregation.clip_window, 1, 100000);
    a.get_int("start_members", c.aggregation.start_members, 1, 100000);
    a.get_choice("kfac_factors", c.aggregation.kfac_factors, {"local", "average"});
    if (c.aggregation.kfac_factors == "average" && c.train.optimizer != "kfac")
      a.fail("kfac_factors", "\"average\" shares K-FAC factors, but train.optimizer is \"" + c.train.optimizer +
                                 "\": set it to \"kfac\" (its \"kfac\" object sets the shared factors' decay, "
                                 "cadence, damping and method) or use \"local\"");
    a.get_choice("kfac_decompositions", c.aggregation.kfac_decompositions, {"server", "members"});
    a.finish();
    c.has_aggregation = true;
  }
  if (root.has("vertical")) read_vertical(root, c);
  if (c.has_vertical && c.rounds.accumulate > 1)
    root.fail("train", "vertical training steps with each batch: remove train.accumulate");
  read_scale_out(root, c);  // checked by check_server_tier, once the command line's rank is known
  auto ck = root.child("checkpoint");
  c.checkpoint = state::read_checkpoint_options(ck);
  if (c.checkpoint.enabled() && !c.has_train)
    ck.fail("dir", "a probe-only server (no \"train\" object) has no state to checkpoint: remove \"checkpoint\"");
  if (c.checkpoint.enabled() && c.has_vertical)
    ck.fail("dir", "checkpoints of vertical training are not built yet: remove \"checkpoint\"");
  root.finish();
  if (!c.checkpoint.dir.empty()) c.checkpoint.dir = doc->resolve(c.checkpoint.dir);
  if (c.join_port != 0 && c.join_port == c.data_port)
    t.fail("data_port", "must differ from join_port (both are " + std::to_string(c.join_port) + ")");
  c.server_key = doc->resolve(c.server_key);
  c.allow_list = doc->resolve(c.allow_list);
  return c;
}


std::string tier_identity(const ServerConfig& c) {
  const auto& a = c.aggregation;
  std::string id = train::run_identity(c.train) + fmt::format(
      " accumulate={} round_wait_ms={} round_start_clients={} world={} check_every={} every_steps={}",
      c.rounds.accumulate, c.rounds.wait.count(), c.rounds.start_clients, c.scale_out.world,
      c.scale_out.check_every, c.checkpoint.every_steps);
  if (c.has_aggregation)
    id += fmt::format(" aggregation staleness={} deadline_ms={} target_samples={} stale_weight={} clip={} "
                      "clip_window={} start_members={} kfac_factors={}",
                      a.staleness, a.deadline.count(), a.target_samples, static_cast<int>(a.stale_weight), a.clip,
                      a.clip_window, a.start_members, a.kfac_factors);
  return id;
}

void check_server_tier(const ServerConfig& c, const std::string& path) {
  check_scale_out(c.scale_out, path);
  const auto& o = c.scale_out;
  const auto fail = [&](const std::string& field, const std::string& problem) {
    throw ConfigError(path + ": field `" + field + "` " + problem);
  };
  if (o.world == 1) return;
  if (!c.has_train) fail("scale_out.world", "a probe-only server (no \"train\" object) has no back to share: set 1");
  if (c.has_aggregation && c.aggregation.kfac_factors == "average")
    fail("aggregation.kfac_factors", "shared K-FAC factors are averaged on one server: use \"local\" with "
                                     "several ranks, or set scale_out.world 1");
  if (c.has_vertical) fail("scale_out.world", "vertical training runs on one server: set world 1");
  if (c.train.optimizer == "kfac")
    fail("scale_out.world", "train.optimizer \"kfac\" does not take rounds across ranks yet: use \"sgd\" or \"adam\", "
                     "or set world 1");
  if (c.train.u_shaped && o.timeout <= c.trainer_limits.head_grad_timeout + c.rounds.wait + o.idle)
    fail("scale_out.timeout_ms", "must exceed train.head_grad_timeout_ms + round_wait_ms + idle_ms (" +
                                     std::to_string((c.trainer_limits.head_grad_timeout + c.rounds.wait + o.idle)
                                                        .count()) +
                                     " ms): U-shaped, a rank's round waits for a client's HeadGrad that long");
  if (o.timeout <= c.rounds.wait + o.idle)
    fail("scale_out.timeout_ms", "must exceed train.round_wait_ms + idle_ms (" +
                              std::to_string((c.rounds.wait + o.idle).count()) +
                              " ms): a rank waits that long for the others' rounds");
}

}  // namespace cutlayer::server
