#include "cutlayer/server/server_config.h"

#include "cutlayer/config/reader.h"
#include "cutlayer/log.h"

namespace cutlayer::server {

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
  if (root.has("train")) {
    auto tr = root.child("train");
    c.train = train::read_train_options(tr);
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
    a.finish();
    c.has_aggregation = true;
  }
  root.finish();
  if (c.join_port != 0 && c.join_port == c.data_port)
    t.fail("data_port", "must differ from join_port (both are " + std::to_string(c.join_port) + ")");
  c.server_key = doc->resolve(c.server_key);
  c.allow_list = doc->resolve(c.allow_list);
  return c;
}

}  // namespace cutlayer::server
