// cutlayer-server: the operator's daemon. Holds the back of the model; clients join
// through the CURVE front door and talk over sealed channels.
#include <CLI/CLI.hpp>
#include <torch/torch.h>
#include <unistd.h>

#include <fstream>
#include <iostream>

#include "cutlayer/cli.h"
#include "cutlayer/error.h"
#include "cutlayer/log.h"
#include "cutlayer/model/model_spec.h"
#include "cutlayer/model/script_export.h"
#include "cutlayer/process_tuning.h"
#include "cutlayer/server/checkpoints.h"
#include "cutlayer/server/server_config.h"
#include "cutlayer/server/service.h"
#include "cutlayer/server/tier.h"
#include "cutlayer/stop_signal.h"
#include "cutlayer/transport/server_transport.h"

using namespace cutlayer;

namespace {

struct Flags {
  std::string config_path, log_level, bind_host, server_key, allow_list, ready_file, metrics_path, export_path;
  int join_port = -1, data_port = -1, threads = 0, staleness = -1, rank = -1, world = 0;
  std::string store;
  bool u_shaped = false;
  cli::CheckpointFlags checkpoint;
};

void add_flags(CLI::App& app, Flags& f) {
  app.add_option("-c,--config", f.config_path, "server JSON config (see configs/server.json)")->required();
  app.add_option("--log-level", f.log_level, "trace|debug|info|warn|error (overrides the config)");
  app.add_option("--bind", f.bind_host, "address to listen on (overrides transport.bind_host)");
  app.add_option("--join-port", f.join_port, "front-door port; 0 picks a free one")->check(CLI::Range(0, 65535));
  app.add_option("--data-port", f.data_port, "sealed data port; 0 picks a free one")->check(CLI::Range(0, 65535));
  app.add_option("--server-key", f.server_key, "server key pair file (overrides transport.server_key)");
  app.add_option("--allow-list", f.allow_list, "client allow-list (overrides transport.allow_list)");
  app.add_option("--threads", f.threads, "LibTorch intra-op threads (overrides the config)");
  app.add_option("--metrics", f.metrics_path, "JSON-lines metrics file (overrides train.metrics_file)");
  app.add_option("--ready-file", f.ready_file, "write {\"join_port\":..,\"data_port\":..} here once listening");
  app.add_option("--staleness", f.staleness, "aggregation: the staleness bound s, 0 = synchronous (overrides aggregation.staleness)")
      ->check(CLI::Range(0, 1000));
  app.add_flag("--u-shaped", f.u_shaped, "U-shaped split learning: labels never leave the client (overrides train.u_shaped)");
  app.add_option("--rank", f.rank, "this server's rank in a server tier of several (docs/scale-out.md); 0 hosts "
                                  "the store")->check(CLI::Range(0, 1023));
  app.add_option("--world", f.world, "how many server ranks train the back together (overrides scale_out.world)")
      ->check(CLI::Range(1, 1024));
  app.add_option("--store", f.store, "where the ranks meet: HOST:PORT (rank 0 hosts a TCPStore) or file:PATH "
                                     "(overrides scale_out.store)");
  f.checkpoint.add(app, "back steps");
  app.add_option("--export", f.export_path,
                 "at shutdown, write the back as TorchScript here (Python: torch.jit.load; cutlayer-export joins it "
                 "with a client's front), and beside it PATH.check, a parity reference");
}

server::ServerConfig load_config(const Flags& f) {
  auto cfg = server::load_server_config(f.config_path);
  if (!f.log_level.empty()) cfg.log_level = f.log_level;
  if (!f.bind_host.empty()) cfg.bind_host = f.bind_host;
  if (f.join_port >= 0) cfg.join_port = static_cast<std::uint16_t>(f.join_port);
  if (f.data_port >= 0) cfg.data_port = static_cast<std::uint16_t>(f.data_port);
  if (!f.server_key.empty()) cfg.server_key = f.server_key;
  if (!f.allow_list.empty()) cfg.allow_list = f.allow_list;
  if (f.threads > 0) cfg.threads = f.threads;
  if (!f.metrics_path.empty()) cfg.train.metrics_file = f.metrics_path;
  if (f.u_shaped) cfg.train.u_shaped = true;
  if (f.staleness >= 0) cfg.aggregation.staleness = static_cast<std::uint32_t>(f.staleness);
  f.checkpoint.apply(cfg.checkpoint, f.config_path);
  if (f.world > 0) cfg.scale_out.world = f.world;
  if (!f.store.empty()) cfg.scale_out.store = f.store;
  if (f.rank < 0 && cfg.scale_out.world > 1)
    throw ConfigError(f.config_path + ": a server tier of " + std::to_string(cfg.scale_out.world) +
                      " ranks: give this one its --rank (0 hosts the store)");
  cfg.scale_out.rank = std::max(f.rank, 0);
  server::check_server_tier(cfg, f.config_path);
  // Each rank keeps its own checkpoints (the same state, written at the same step).
  if (cfg.scale_out.world > 1 && cfg.checkpoint.enabled())
    cfg.checkpoint.dir += "/rank-" + std::to_string(cfg.scale_out.rank);
  if (cfg.checkpoint.enabled() && !cfg.has_train)
    throw ConfigError(f.config_path + ": checkpoints need a \"train\" object (a probe-only server has no state)");
  return cfg;
}

transport::ServerTransportOptions transport_options(const server::ServerConfig& cfg) {
  transport::ServerTransportOptions t;
  t.bind_host = cfg.bind_host;
  t.join_port = cfg.join_port;
  t.data_port = cfg.data_port;
  t.server_keys = transport::load_key_pair(cfg.server_key);
  t.allow_list = transport::AllowList::load(cfg.allow_list);
  t.session_timeout_ms = cfg.session_timeout_ms;
  t.client_heartbeat_ms = cfg.heartbeat_ms;
  t.limits.max_tensor_bytes = static_cast<std::size_t>(cfg.max_message_mb) * 1024 * 1024;
  t.limits.max_message_bytes = t.limits.max_tensor_bytes;
  return t;
}

void write_ready_file(const std::string& path, const transport::ServerTransport& t) {
  if (path.empty()) return;
  std::ofstream out(path + ".tmp");
  out << "{\"join_port\":" << t.join_port() << ",\"data_port\":" << t.data_port() << ",\"pid\":" << ::getpid() << "}\n";
  out.close();
  std::rename((path + ".tmp").c_str(), path.c_str());
}

void announce(const server::ServerConfig& cfg, const server::BackTrainer* trainer, const server::Aggregator* agg) {
  auto log = log::get("server");
  if (cfg.has_vertical)
    log->info("training the back of vertical split learning: {} parties, their cuts joined by {} ({} features), "
              "labels from party 0; {} lr {}",
              cfg.vertical.parties, vertical::join_name(cfg.vertical.join), model::shape_string(trainer->cut_shape()),
              cfg.train.optimizer, cfg.train.lr);
  else if (trainer)
    log->info("training the back of {} ({} mode: {}), cut layer {}, {} lr {}", cfg.train.model,
              cfg.train.u_shaped ? "U-shaped" : "vanilla",
              cfg.train.u_shaped ? "labels stay on the clients" : "labels come to the server",
              model::shape_string(trainer->cut_shape()), cfg.train.optimizer, cfg.train.lr);
  if (!agg) return;
  const auto& a = cfg.aggregation;
  log->info("aggregating the clients' fronts ({} parameters): {}, deadline {} ms{}", agg->numel(),
            a.staleness == 0 ? std::string("synchronous") : "staleness bound " + std::to_string(a.staleness),
            a.deadline.count(),
            a.target_samples > 0 ? ", rounds close at " + std::to_string(a.target_samples) + " examples" : std::string());
  if (a.clip > 0) log->info("clipping each contribution's norm to {:g} x the median of the last {}", a.clip, a.clip_window);
}

// The back as TorchScript, and its parity reference on fixed pseudo-random cuts.
void export_back(const server::BackTrainer& trainer, const std::string& path) {
  torch::NoGradGuard no_grad;
  auto back = trainer.back_model();
  model::save_script(model::to_script(back, "cutlayer_back"), path);
  const auto z = model::reference_inputs(100, trainer.cut_shape());
  back->eval();
  model::save_reference(path + ".check", {{"x", z}, {"out", back->forward(z)}});
  back->train();
  log::get("server")->info("back exported to {} (TorchScript; parity reference {}.check)", path, path);
}

void log_transport_summary(const transport::ServerTransport& transport, const server::Service& service) {
  const auto& s = transport.stats();
  log::get("server")->info(
      "stopping: {} sessions open, {} probes served, in {} msgs/{} B, out {} msgs/{} B, "
      "dropped {} (protocol {}, bad tag {}, replay {}, unknown session {}), ZAP rejected {}",
      transport.session_count(), service.probes_served(), s.messages_in, s.bytes_in, s.messages_out, s.bytes_out,
      s.dropped(), s.protocol_errors, s.bad_tag, s.replayed, s.unknown_session, transport.zap_rejected());
}

int run(const Flags& flags) {
  auto cfg = load_config(flags);
  log::set_level(cfg.log_level);
  torch::set_num_threads(cfg.threads);
  std::unique_ptr<server::BackTrainer> trainer;
  std::unique_ptr<server::Aggregator> aggregator;
  std::unique_ptr<server::VerticalJoin> vertical;
  if (cfg.has_vertical) {
    const auto vm = server::vertical_model(cfg.vertical, cfg.train.seed);
    trainer = std::make_unique<server::BackTrainer>(cfg.train, vm.back, std::vector<std::int64_t>{vm.joined_width()},
                                                    cfg.trainer_limits);
    vertical = std::make_unique<server::VerticalJoin>(*trainer, cfg.vertical, vm.widths);
  } else if (cfg.has_train) {
    trainer = std::make_unique<server::BackTrainer>(cfg.train, cfg.trainer_limits);
  }
  if (cfg.has_aggregation) aggregator = std::make_unique<server::Aggregator>(cfg.train, cfg.aggregation);
  // The state comes back before the doors open: no client sees a fresh model first.
  std::unique_ptr<server::ServerCheckpoints> checkpoints;
  bool resumed = false;
  if (cfg.checkpoint.enabled()) {
    checkpoints = std::make_unique<server::ServerCheckpoints>(cfg.checkpoint, cfg.server_key, *trainer, aggregator.get());
    if (cfg.checkpoint.resume) resumed = checkpoints->resume();
  }
  auto tier = server::start_rounds(cfg, trainer.get(), aggregator.get(), checkpoints.get(), resumed);
  std::unique_ptr<train::MetricsFile> metrics;
  if (trainer) metrics = std::make_unique<train::MetricsFile>(cfg.train.metrics_file, /*append=*/resumed);

  install_stop_handlers();
  transport::ServerTransport transport(transport_options(cfg));
  write_ready_file(flags.ready_file, transport);
  log::get("server")->info("serving (threads={}); stop with SIGINT or SIGTERM", cfg.threads);
  announce(cfg, trainer.get(), aggregator.get());
  server::Service service(transport, trainer.get(), metrics.get(), aggregator.get(), cfg.limits);
  service.set_checkpoints(checkpoints.get());
  service.set_vertical(vertical.get());
  service.set_rounds(tier.rounds.get());
  service.run(stop_flag());
  if (checkpoints) {
    checkpoints->write();  // what is trained since the last one is kept
    log::get("server")->info("checkpoints: {} written ({:.1f} MB of state), {:.1f} ms on average, {:.1f} ms at most",
                             checkpoints->written(), checkpoints->last_bytes() / 1e6, checkpoints->mean_write_ms(),
                             checkpoints->max_write_ms());
  }
  if (trainer && !flags.export_path.empty()) {
    try {
      export_back(*trainer, flags.export_path);
    } catch (const std::exception& e) {  // the state is in the checkpoint; the summary still comes
      log::get("server")->error("the export to {} failed: {}", flags.export_path, e.what());
    }
  }
  std::cout << service.summary().json().str() << std::endl;
  log_transport_summary(transport, service);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  prefer_passive_openmp(argv);
  tune_allocator();
  tune_threads();
  CLI::App app{"cutlayer-server: the split-learning server (back layers, aggregator)"};
  Flags flags;
  add_flags(app, flags);
  CLI11_PARSE(app, argc, argv);
  return cli::guarded_main("cutlayer-server", [&] { return run(flags); });
}
