#include "cutlayer/client/client_config.h"

#include "cutlayer/config/reader.h"
#include "cutlayer/log.h"

namespace cutlayer::client {

ClientConfig load_client_config(const std::string& path) {
  auto doc = config::Document::load(path);
  auto root = doc->root();
  ClientConfig c;
  root.get_choice("log_level", c.log_level,
                  log::level_names());
  root.get_int("threads", c.threads, 1, 256);
  root.get("name", c.name);
  auto t = root.child("transport");
  t.get("server_host", c.server_host);
  t.get_int("join_port", c.join_port, 1, 65535);
  t.get("server_public_key", c.server_public_key);
  t.get("client_key", c.client_key);
  t.get_int("join_timeout_ms", c.join_timeout_ms, 100, 600 * 1000);
  t.get_int("join_attempts", c.join_attempts, 1, 1000);
  t.get("max_message_mb", c.max_message_mb, 1, 4096);
  t.finish();
  auto privacy = root.child("privacy");
  c.nopeek = read_nopeek_options(privacy);
  if (root.has("train")) {
    auto tr = root.child("train");
    c.train = train::read_train_options(tr);
    c.has_train = true;
  }
  if (root.has("sync")) {
    auto sy = root.child("sync");
    c.sync = sync::read_sync_options(sy);
    if (c.sync.share_kfac_factors && c.train.optimizer != "kfac")
      sy.fail("share_kfac_factors", "shares K-FAC factors, but train.optimizer is \"" + c.train.optimizer +
                                        "\": set it to \"kfac\" or remove share_kfac_factors");
  }
  auto cut = root.child("cut");
  c.cut = cut::read_cut_options(cut);
  auto ck = root.child("checkpoint");
  c.checkpoint = state::read_checkpoint_options(ck);
  root.finish();
  if (!c.checkpoint.dir.empty()) c.checkpoint.dir = doc->resolve(c.checkpoint.dir);
  c.server_public_key = doc->resolve(c.server_public_key);
  c.client_key = doc->resolve(c.client_key);
  return c;
}

privacy::NoPeekOptions read_nopeek_options(config::Object& p) {
  privacy::NoPeekOptions o;
  p.get("alpha", o.alpha, 0.0, 1e6);
  p.get("noise_std", o.noise_std, 0.0, 1e3);
  p.get("alpha_warmup_steps", o.alpha_warmup_steps, 0, std::int64_t{1} << 40);
  p.finish();
  return o;
}

}  // namespace cutlayer::client
