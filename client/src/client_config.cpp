#include "cutlayer/client/client_config.h"

#include "cutlayer/config/reader.h"
#include "cutlayer/log.h"

namespace cutlayer::client {
namespace {

// The "vertical" object, once the rest is read: what a vertical party does not take is
// refused by name.
void read_vertical(config::Object& root, ClientConfig& c) {
  if (!c.has_train) root.fail("vertical", "a vertical party trains: add a \"train\" object (data, batch_size, seed, ...)");
  auto v = root.child("vertical");
  auto& o = c.vertical;
  v.get_int("parties", o.parties, 2, 7);
  v.get_int("party", o.party, 0, o.parties - 1);
  v.get("keep", o.keep, 0.01, 1.0);
  v.get("id_prefix", o.id_prefix);
  v.get_choice("join", o.join, {"concat", "sum"});
  std::int64_t start_ms = o.start_timeout.count();
  v.get("start_timeout_ms", start_ms, 1000, std::int64_t{24} * 3600 * 1000);
  o.start_timeout = std::chrono::milliseconds(start_ms);
  std::string what;
  if (c.sync.enabled) what = "\"sync\" (each party's front is its own)";
  else if (c.cut.compressed()) what = "a compressed \"cut\"";
  else if (c.checkpoint.enabled()) what = "\"checkpoint\"";
  else if (c.train.u_shaped) what = "train.u_shaped (party 0 sends the labels)";
  else if (c.train.optimizer == "kfac") what = "train.optimizer \"kfac\"";
  else if (c.train.data.clients > 1) what = "train.clients (each party's people come from vertical.keep)";
  else if (c.nopeek.cut_norm || c.nopeek.adversary.active())
    what = "privacy.cut_norm or privacy.adversary (its front is built by the vertical model)";
  if (!what.empty()) root.fail("vertical", "a vertical party does not take " + what + " yet: remove it");
  v.finish();
  c.has_vertical = true;
}

}  // namespace

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
  c.nopeek = read_privacy_options(privacy);
  if (root.has("train")) {
    auto tr = root.child("train");
    c.train = train::read_train_options(tr);
    c.train.cut_norm = c.nopeek.cut_norm;
    c.has_train = true;
    if (c.train.cut_norm && !c.train.front_file.empty())
      privacy.fail("cut_norm", "appends a layer to a front from a layer spec, but train.model is a TorchScript "
                               "front: end that front with a layer norm without affine weights, or remove cut_norm");
    if (c.nopeek.label_defense.active() && !c.train.u_shaped)
      privacy.fail("label_defense", "protects the labels of U-shaped training, but train.u_shaped is false (the "
                                    "labels go to the server): set train.u_shaped to true or remove label_defense");
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
  if (root.has("vertical")) read_vertical(root, c);
  root.finish();
  if (!c.checkpoint.dir.empty()) c.checkpoint.dir = doc->resolve(c.checkpoint.dir);
  c.server_public_key = doc->resolve(c.server_public_key);
  c.client_key = doc->resolve(c.client_key);
  return c;
}

privacy::PrivacyOptions read_privacy_options(config::Object& p) {
  privacy::PrivacyOptions o;
  p.get("alpha", o.alpha, 0.0, 1e6);
  p.get("noise_std", o.noise_std, 0.0, 1e3);
  p.get("alpha_warmup_steps", o.alpha_warmup_steps, 0, std::int64_t{1} << 40);
  p.get("cut_norm", o.cut_norm);
  auto a = p.child("adversary");  // absent: the defaults (off)
  a.get("weight", o.adversary.weight, 0.0, 1e6);
  a.get("lr", o.adversary.lr, 1e-9, 10.0);
  a.finish();
  auto l = p.child("label_defense");
  auto& d = o.label_defense;
  l.get_choice("kind", d.kind, privacy::label_defense_kinds());
  l.get("sigma", d.sigma, 0.0, 1e3);
  l.get("clip", d.clip);
  if (d.kind == "none" && d.sigma > 0) l.fail("sigma", "is set but kind is \"none\": set kind to \"noise\"");
  if (d.kind == "noise" && d.sigma == 0 && !d.clip)
    l.fail("sigma", "is 0 and clip is false, so kind \"noise\" would change nothing: set sigma (e.g. 0.2)");
  l.finish();
  p.finish();
  return o;
}

}  // namespace cutlayer::client
