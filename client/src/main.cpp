// cutlayer-client: the data owner's daemon. Trains its front (and head) with the server
// (split learning); `predict` sends a file of inputs through the deployed split model; with
// --probes it runs the link self-check: probe tensors over the sealed channel, every echo
// checked bit for bit, throughput reported.
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <iostream>

#include "cutlayer/cut/flags.h"
#include "cutlayer/cli.h"
#include "cutlayer/client/client_config.h"
#include "cutlayer/client/split_client.h"
#include "cutlayer/client/vertical_party.h"
#include "cutlayer/kernels/compressor.h"
#include "cutlayer/error.h"
#include "cutlayer/log.h"
#include "cutlayer/process_tuning.h"
#include "cutlayer/stop_signal.h"
#include "cutlayer/transport/client_transport.h"

using namespace cutlayer;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kWindow = 4;  // probes in flight

// Sends `count` probes of `mb` MiB and checks each echo; returns false on a mismatch.
bool run_probe(transport::ClientTransport& link, int count, double mb) {
  auto log = log::get("client");
  const auto numel = static_cast<std::int64_t>(mb * 1024 * 1024 / 4);
  std::vector<torch::Tensor> sent(count);
  int next = 0, done = 0;
  const auto t0 = Clock::now();
  auto last_progress = t0;
  while (done < count && !stop_flag()) {
    while (next < count && next - done < kWindow) {
      sent[next] = torch::randn({numel});
      link.send(wire::make_message(wire::Probe{static_cast<std::uint64_t>(next)}, {sent[next]}));
      ++next;
    }
    auto reply = link.recv(std::chrono::seconds(10));
    if (!reply) throw IoError("no probe reply within 10 s");
    if (reply->type == wire::MsgType::kError)
      throw ProtocolError("server: " + log::peer_text(wire::meta_as<wire::ErrorMsg>(*reply).message, 1024));
    const auto r = wire::meta_as<wire::ProbeReply>(*reply);
    if (r.id >= static_cast<std::uint64_t>(count) || reply->tensors.size() != 1 ||
        !torch::equal(reply->tensors[0], sent[r.id])) {
      log->error("probe {} came back different", r.id);
      return false;
    }
    sent[r.id] = torch::Tensor();
    ++done;
    const auto now = Clock::now();
    if (now - last_progress > std::chrono::seconds(1) || done == count) {
      const double s = std::chrono::duration<double>(now - t0).count();
      const double rate = done / s;
      log->info("probe {}/{}  {:.1f} probes/s  {:.2f} GB/s both ways  ETA {:.1f} s", done, count,
                rate, 2.0 * done * numel * 4 / s / 1e9, (count - done) / std::max(rate, 1e-9));
      last_progress = now;
    }
  }
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("{\"check\":\"probe\",\"probes\":%d,\"mib\":%.1f,\"bit_exact\":true,\"seconds\":%.3f,"
              "\"gbps_both_ways\":%.3f}\n",
              done, mb, s, 2.0 * done * numel * 4 / s / 1e9);
  return done == count;
}

struct Flags {
  std::string config_path, log_level, server_host, server_pub, client_key, metrics_path, name, shard, save_front,
      compressor, export_path, predict_input, predict_output;
  CLI::App* predict = nullptr;
  int join_port = -1, probes = 0, threads = 0, epochs = 0, party = -1;
  std::int64_t steps = -1, eval_every = -1, alpha_warmup = -1;
  double probe_mb = 8, alpha = -1, noise = -1, density = 0;
  bool every_step = false, u_shaped = false;
  cli::CheckpointFlags checkpoint;
  cut::CutFlags cut;
};

void add_flags(CLI::App& app, Flags& f) {
  app.add_option("-c,--config", f.config_path, "client JSON config (see configs/client.json)")->required();
  app.add_option("--log-level", f.log_level, "trace|debug|info|warn|error (overrides the config)");
  app.add_option("--server-host", f.server_host, "server address (overrides transport.server_host)");
  app.add_option("--join-port", f.join_port, "server's front-door port")->check(CLI::Range(1, 65535));
  app.add_option("--server-public-key", f.server_pub, "server.pub file (pins the server's key)");
  app.add_option("--client-key", f.client_key, "this client's key pair file");
  app.add_option("--probes", f.probes, "run the link self-check with this many probe tensors instead of training")
      ->check(CLI::Range(1, 1000000));
  app.add_option("--name", f.name, "this client's name in logs (overrides the config)");
  app.add_option("--threads", f.threads, "LibTorch threads (overrides the config)");
  app.add_option("--steps", f.steps, "stop after this many steps (overrides train.max_steps)");
  app.add_option("--metrics", f.metrics_path, "JSON-lines metrics file (overrides train.metrics_file)");
  app.add_flag("--metrics-every-step", f.every_step, "a metrics line per step (parity checks)");
  app.add_option("--probe-mb", f.probe_mb, "link self-check: MiB per probe tensor")->check(CLI::Range(0.001, 1024.0));
  app.add_option("--shard", f.shard, "I/N: train on shard I of N (overrides train.client_index and train.clients)");
  app.add_option("--eval-every", f.eval_every, "steps between test evaluations (overrides train.eval_every)");
  app.add_option("--save-front", f.save_front, "save the trained front model here (for cutlayer-leakage)");
  app.add_option("--alpha", f.alpha, "NoPeek weight of dCor(x, z) in the front's loss (overrides privacy.alpha)")
      ->check(CLI::Range(0.0, 1e6));
  app.add_option("--alpha-warmup", f.alpha_warmup, "steps over which alpha ramps up from 0 (overrides privacy.alpha_warmup_steps)")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{1} << 40));
  app.add_option("--noise", f.noise, "std of Gaussian noise on the cut activations sent (overrides privacy.noise_std)")
      ->check(CLI::Range(0.0, 1e3));
  app.add_option("--epochs", f.epochs, "epochs (overrides train.epochs)")->check(CLI::Range(1, 100000));
  app.add_option("--compressor", f.compressor,
                 "sync the front through the server's aggregation with this compressor: none|topk|gaussiank|sampledk|randomk "
                 "(overrides sync.compressor and turns sync on)");
  app.add_option("--density", f.density, "sync: fraction of the gradient sent per step (overrides sync.density)")
      ->check(CLI::Range(1e-6, 1.0));
  app.add_flag("--u-shaped", f.u_shaped, "U-shaped split learning: labels never leave the client (overrides train.u_shaped)");
  app.add_option("--party", f.party, "vertical split learning: this party's index (overrides vertical.party)")
      ->check(CLI::Range(0, 6));
  f.checkpoint.add(app, "steps");
  f.cut.add(app);
  app.add_option("--export", f.export_path,
                 "after training, write the front (U-shaped: and head) as TorchScript here (Python: torch.jit.load; "
                 "cutlayer-export joins it with the server's back), and beside it PATH.check, a parity reference");
  f.predict = app.add_subcommand("predict", "predictions for a file of inputs through the deployed split model: the "
                                            "front of this client's newest checkpoint, the server's back (no training, "
                                            "no labels sent)");
  f.predict->add_option("--input", f.predict_input, "inputs: an IDX image file (gzipped or not) or a .csv")->required();
  f.predict->add_option("--out", f.predict_output, "predictions CSV: index, class, p0..pK-1")->required();
  f.predict->fallthrough();  // the options above work after `predict` too
}

// "I/N" into the train object's data fields.
void apply_shard(const std::string& shard, client::ClientConfig& cfg) {
  const auto slash = shard.find('/');
  int i = -1, n = 0;
  try {
    i = std::stoi(shard.substr(0, slash));
    n = std::stoi(shard.substr(slash + 1));
  } catch (const std::exception&) {
  }
  if (slash == std::string::npos || n < 1 || i < 0 || i >= n)
    throw ConfigError("--shard must be I/N with 0 <= I < N, got '" + shard + "'");
  cfg.train.data.client_index = i;
  cfg.train.data.clients = n;
}

// The config file with the flags laid over it.
client::ClientConfig load_config(const Flags& f) {
  auto cfg = client::load_client_config(f.config_path);
  if (!f.log_level.empty()) cfg.log_level = f.log_level;
  if (!f.server_host.empty()) cfg.server_host = f.server_host;
  if (f.join_port > 0) cfg.join_port = static_cast<std::uint16_t>(f.join_port);
  if (!f.server_pub.empty()) cfg.server_public_key = f.server_pub;
  if (!f.client_key.empty()) cfg.client_key = f.client_key;
  if (!f.name.empty()) cfg.name = f.name;
  if (f.threads > 0) cfg.threads = f.threads;
  if (f.steps >= 0) cfg.train.max_steps = f.steps;
  if (!f.metrics_path.empty()) cfg.train.metrics_file = f.metrics_path;
  if (f.every_step) cfg.train.metrics_every_step = true;
  if (f.u_shaped) cfg.train.u_shaped = true;
  if (f.epochs > 0) cfg.train.epochs = f.epochs;
  if (f.eval_every >= 0) cfg.train.eval_every = f.eval_every;
  if (!f.compressor.empty()) {
    (void)kernels::make_compressor(f.compressor);  // ConfigError for an unknown name
    cfg.sync.compressor = f.compressor;
    cfg.sync.enabled = true;
  }
  if (f.density > 0) cfg.sync.density = f.density;
  if (!f.shard.empty()) apply_shard(f.shard, cfg);
  if (f.alpha >= 0) cfg.nopeek.alpha = f.alpha;
  if (f.noise >= 0) cfg.nopeek.noise_std = f.noise;
  if (f.alpha_warmup >= 0) cfg.nopeek.alpha_warmup_steps = f.alpha_warmup;
  if (f.probes == 0 && !cfg.has_train)
    throw ConfigError(f.config_path + ": no `train` object, so there is nothing to train; add one "
                      "(see configs/client.json) or run the link self-check with --probes N");
  f.checkpoint.apply(cfg.checkpoint, f.config_path);
  privacy::refuse_unsaved_state(cfg.nopeek, cfg.checkpoint.enabled(), f.config_path);
  f.cut.apply(cfg.cut);
  if (f.party >= 0) {
    if (!cfg.has_vertical)
      throw ConfigError("--party: " + f.config_path + " has no \"vertical\" object (see configs/client-vertical.json)");
    if (f.party >= cfg.vertical.parties)
      throw ConfigError(fmt::format("--party {}: {} has vertical.parties {}; parties are numbered from 0", f.party,
                                    f.config_path, cfg.vertical.parties));
    cfg.vertical.party = f.party;
  }
  return cfg;
}

transport::ClientTransportOptions transport_options(const client::ClientConfig& cfg) {
  transport::ClientTransportOptions t;
  t.server_host = cfg.server_host;
  t.join_port = cfg.join_port;
  t.server_public_key = transport::load_public_key(cfg.server_public_key);
  t.client_keys = transport::load_key_pair(cfg.client_key);
  t.join_timeout = std::chrono::milliseconds(cfg.join_timeout_ms);
  t.join_attempts = cfg.join_attempts;
  t.limits.max_tensor_bytes = static_cast<std::size_t>(cfg.max_message_mb) * 1024 * 1024;
  t.limits.max_message_bytes = t.limits.max_tensor_bytes;
  return t;
}

// A party of vertical split learning (the config's "vertical" object).
int run_vertical(const client::ClientConfig& cfg, const Flags& flags, transport::ClientTransport& link) {
  if (flags.predict->parsed() || !flags.export_path.empty())
    throw ConfigError(flags.config_path + ": a vertical party does not take predict or --export yet");
  client::VerticalParty::Options o;
  o.name = cfg.name;
  o.train = cfg.train;
  o.nopeek = cfg.nopeek;
  o.vertical = cfg.vertical;
  o.save_front = flags.save_front;
  client::VerticalParty party(link, o);
  std::cout << party.run(stop_flag()) << std::endl;
  return stop_flag() ? 130 : 0;
}

int run(const Flags& flags) {
  const auto cfg = load_config(flags);
  log::set_level(cfg.log_level);
  torch::set_num_threads(cfg.threads);
  install_stop_handlers();
  transport::ClientTransport link(transport_options(cfg));
  if (flags.probes > 0) {
    wire::Join join;
    join.client_name = cfg.name;
    link.join(join);
    const bool ok = run_probe(link, flags.probes, flags.probe_mb);
    link.leave(stop_flag() ? "interrupted" : "self-check done");
    return ok ? 0 : 1;
  }
  if (cfg.has_vertical) return run_vertical(cfg, flags, link);
  client::SplitClientOptions so;
  so.name = cfg.name;
  so.train = cfg.train;
  so.nopeek = cfg.nopeek;
  so.cut = cfg.cut;
  so.sync = cfg.sync;
  so.save_front = flags.save_front;
  so.checkpoint = cfg.checkpoint;
  so.checkpoint_key = cfg.client_key;
  so.export_path = flags.export_path;
  client::SplitClient trainer(link, so);
  if (flags.predict->parsed()) {
    std::cout << trainer.predict(flags.predict_input, flags.predict_output, stop_flag()) << std::endl;
    return stop_flag() ? 130 : 0;
  }
  std::cout << trainer.run(stop_flag()) << std::endl;
  return stop_flag() ? 130 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  prefer_passive_openmp(argv);
  tune_allocator();
  tune_threads();
  CLI::App app{"cutlayer-client: the data owner's daemon (front layers, private data)"};
  Flags flags;
  add_flags(app, flags);
  CLI11_PARSE(app, argc, argv);
  return cli::guarded_main("cutlayer-client", [&] { return run(flags); });
}
