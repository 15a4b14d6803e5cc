// cutlayer-server: the operator's daemon. Holds the back of the model; clients join
// through the CURVE front door and talk over sealed channels.
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <fstream>
#include <iostream>
#include <unistd.h>

#include "cutlayer/error.h"
#include "cutlayer/log.h"
#include "cutlayer/model/model_spec.h"
#include "cutlayer/process_tuning.h"
#include "cutlayer/server/server_config.h"
#include "cutlayer/server/service.h"
#include "cutlayer/stop_signal.h"
#include "cutlayer/transport/server_transport.h"

using namespace cutlayer;

int main(int argc, char** argv) {
  prefer_passive_openmp(argv);
  tune_allocator();
  tune_threads();
  CLI::App app{"cutlayer-server: the split-learning server (back layers, aggregator)"};
  std::string config_path, log_level, bind_host, server_key, allow_list, ready_file;
  int join_port = -1, data_port = -1;
  app.add_option("-c,--config", config_path, "server JSON config (see configs/server.json)")
      ->required();
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error (overrides the config)");
  app.add_option("--bind", bind_host, "address to listen on (overrides transport.bind_host)");
  app.add_option("--join-port", join_port, "front-door port; 0 picks a free one")
      ->check(CLI::Range(0, 65535));
  app.add_option("--data-port", data_port, "sealed data port; 0 picks a free one")
      ->check(CLI::Range(0, 65535));
  app.add_option("--server-key", server_key, "server key pair file (overrides transport.server_key)");
  app.add_option("--allow-list", allow_list, "client allow-list (overrides transport.allow_list)");
  std::string metrics_path;
  int threads = 0;
  app.add_option("--threads", threads, "LibTorch intra-op threads (overrides the config)");
  app.add_option("--metrics", metrics_path, "JSON-lines metrics file (overrides train.metrics_file)");
  app.add_option("--ready-file", ready_file,
                 "write {\"join_port\":..,\"data_port\":..} here once listening");
  int staleness = -1;
  app.add_option("--staleness", staleness, "aggregation: the staleness bound s, 0 = synchronous (overrides aggregation.staleness)")
      ->check(CLI::Range(0, 1000));
  bool u_shaped = false;
  app.add_flag("--u-shaped", u_shaped, "U-shaped split learning: labels never leave the client (overrides train.u_shaped)");
  CLI11_PARSE(app, argc, argv);

  try {
    auto cfg = server::load_server_config(config_path);
    if (!log_level.empty()) cfg.log_level = log_level;
    if (!bind_host.empty()) cfg.bind_host = bind_host;
    if (join_port >= 0) cfg.join_port = static_cast<std::uint16_t>(join_port);
    if (data_port >= 0) cfg.data_port = static_cast<std::uint16_t>(data_port);
    if (!server_key.empty()) cfg.server_key = server_key;
    if (!allow_list.empty()) cfg.allow_list = allow_list;
    if (threads > 0) cfg.threads = threads;
    log::set_level(cfg.log_level);
    torch::set_num_threads(cfg.threads);
    auto log = log::get("server");

    transport::ServerTransportOptions topts;
    topts.bind_host = cfg.bind_host;
    topts.join_port = cfg.join_port;
    topts.data_port = cfg.data_port;
    topts.server_keys = transport::load_key_pair(cfg.server_key);
    topts.allow_list = transport::AllowList::load(cfg.allow_list);
    topts.session_timeout_ms = cfg.session_timeout_ms;
    topts.client_heartbeat_ms = cfg.heartbeat_ms;
    topts.limits.max_tensor_bytes = static_cast<std::size_t>(cfg.max_message_mb) * 1024 * 1024;
    topts.limits.max_message_bytes = topts.limits.max_tensor_bytes;

    install_stop_handlers();
    transport::ServerTransport transport(std::move(topts));
    if (!ready_file.empty()) {
      std::ofstream out(ready_file + ".tmp");
      out << "{\"join_port\":" << transport.join_port() << ",\"data_port\":" << transport.data_port()
          << ",\"pid\":" << ::getpid() << "}\n";
      out.close();
      std::rename((ready_file + ".tmp").c_str(), ready_file.c_str());
    }
    log->info("serving (threads={}); stop with SIGINT or SIGTERM", cfg.threads);
    std::unique_ptr<server::BackTrainer> trainer;
    std::unique_ptr<train::MetricsFile> metrics;
    if (cfg.has_train) {
      if (!metrics_path.empty()) cfg.train.metrics_file = metrics_path;
      if (u_shaped) cfg.train.u_shaped = true;
      trainer = std::make_unique<server::BackTrainer>(cfg.train, cfg.trainer_limits);
      metrics = std::make_unique<train::MetricsFile>(cfg.train.metrics_file);
      log->info("training the back of {} ({} mode: {}), cut layer {}, {} lr {}", cfg.train.model,
                cfg.train.u_shaped ? "U-shaped" : "vanilla",
                cfg.train.u_shaped ? "labels stay on the clients" : "labels come to the server",
                model::shape_string(trainer->cut_shape()), cfg.train.optimizer, cfg.train.lr);
    }
    std::unique_ptr<server::Aggregator> aggregator;
    if (cfg.has_aggregation) {
      if (staleness >= 0) cfg.aggregation.staleness = static_cast<std::uint32_t>(staleness);
      aggregator = std::make_unique<server::Aggregator>(cfg.train, cfg.aggregation);
      log->info("aggregating the clients' fronts ({} parameters): {}, deadline {} ms{}", aggregator->numel(),
                cfg.aggregation.staleness == 0 ? std::string("synchronous")
                                               : "staleness bound " + std::to_string(cfg.aggregation.staleness),
                cfg.aggregation.deadline.count(),
                cfg.aggregation.target_samples > 0
                    ? ", rounds close at " + std::to_string(cfg.aggregation.target_samples) + " examples"
                    : std::string());
      if (cfg.aggregation.clip > 0)
        log->info("clipping each contribution's norm to {:g} x the median of the last {}", cfg.aggregation.clip,
                  cfg.aggregation.clip_window);
    }
    server::Service service(transport, trainer.get(), metrics.get(), aggregator.get(), cfg.limits);
    service.run(stop_flag());
    std::cout << service.summary().json().str() << std::endl;
    const auto& s = transport.stats();
    log->info("stopping: {} sessions open, {} probes served, in {} msgs/{} B, out {} msgs/{} B, "
              "dropped {} (protocol {}, bad tag {}, replay {}, unknown session {}), ZAP rejected {}",
              transport.session_count(), service.probes_served(), s.messages_in, s.bytes_in,
              s.messages_out, s.bytes_out, s.dropped(), s.protocol_errors, s.bad_tag, s.replayed,
              s.unknown_session, transport.zap_rejected());
  } catch (const Error& e) {
    std::cerr << "cutlayer-server: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
