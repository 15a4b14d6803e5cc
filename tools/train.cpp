// cutlayer-train: the monolithic reference. Trains front + back (+ head) in one process
// with the same config, seed and data order as a split run: the yardstick for parity
// and for speed.
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <iostream>

#include "cutlayer/error.h"
#include "cutlayer/log.h"
#include "cutlayer/model/model_spec.h"
#include "cutlayer/privacy/dcor.h"
#include "cutlayer/process_tuning.h"
#include "cutlayer/report/json.h"
#include "cutlayer/stop_signal.h"
#include "cutlayer/train/loop.h"
#include "client_train_config.h"
#include "cutlayer/train/optimizer.h"

using namespace cutlayer;

namespace {

torch::Tensor forward_all(model::SplitModel& m, const torch::Tensor& x, const privacy::NoPeekOptions& p) {
  auto h = m.back->forward(privacy::cut_to_send(m.front->forward(x), p));
  return m.has_head() ? m.head->forward(h) : h;
}

// Test accuracy and mean loss over `d`.
std::pair<double, double> evaluate(model::SplitModel& m, const data::Dataset& d, const privacy::NoPeekOptions& p) {
  torch::NoGradGuard no_grad;
  m.front->eval();
  m.back->eval();
  if (m.has_head()) m.head->eval();
  std::int64_t correct = 0;
  double loss = 0;
  for (std::int64_t b = 0; b < d.size(); b += 1000) {
    const auto n = std::min<std::int64_t>(1000, d.size() - b);
    auto logits = forward_all(m, d.x.narrow(0, b, n), p);
    auto y = d.y.narrow(0, b, n);
    loss += torch::nn::functional::cross_entropy(logits, y).item<double>() * n;
    correct += train::count_correct(logits, y);
  }
  m.front->train();
  m.back->train();
  if (m.has_head()) m.head->train();
  return {static_cast<double>(correct) / std::max<std::int64_t>(d.size(), 1), loss / std::max<std::int64_t>(d.size(), 1)};
}

}  // namespace

int main(int argc, char** argv) {
  tune_allocator();
  tune_threads();
  CLI::App app{"cutlayer-train: the monolithic reference trainer (same config, seed, data order)"};
  std::string config_path, log_level, metrics;
  int threads = 0;
  std::int64_t steps = -1;
  bool every_step = false;
  app.add_option("-c,--config", config_path, "a client config (its \"train\" object is used)")->required();
  app.add_option("--threads", threads, "LibTorch threads (overrides the config)");
  app.add_option("--steps", steps, "stop after this many steps (overrides train.max_steps)");
  app.add_option("--metrics", metrics, "JSON-lines metrics file (overrides train.metrics_file)");
  app.add_flag("--metrics-every-step", every_step, "a metrics line per step (parity checks)");
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error");
  std::string save_front;
  app.add_option("--save-front", save_front, "save the trained front model here (for cutlayer-leakage)");
  double alpha = -1;
  app.add_option("--alpha", alpha, "NoPeek weight of dCor(x, z) (overrides privacy.alpha)")->check(CLI::Range(0.0, 1e6));
  std::int64_t alpha_warmup = -1;
  app.add_option("--alpha-warmup", alpha_warmup, "steps over which alpha ramps up from 0 (overrides privacy.alpha_warmup_steps)")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{1} << 40));
  double noise = -1;
  app.add_option("--noise", noise, "std of Gaussian noise on the cut activations (overrides privacy.noise_std)")
      ->check(CLI::Range(0.0, 1e3));
  int epochs = 0;
  app.add_option("--epochs", epochs, "epochs (overrides train.epochs)")->check(CLI::Range(1, 100000));
  bool u_shaped = false;
  app.add_flag("--u-shaped", u_shaped, "U-shaped split learning: labels never leave the client (overrides train.u_shaped)");
  CLI11_PARSE(app, argc, argv);
  try {
    auto cfg = tools::load_client_train_config(config_path);
    std::string level = cfg.log_level;
    int cfg_threads = cfg.threads;
    auto& opts = cfg.train;
    auto& nopeek = cfg.nopeek;
    if (!log_level.empty()) level = log_level;
    if (threads > 0) cfg_threads = threads;
    if (steps >= 0) opts.max_steps = steps;
    if (!metrics.empty()) opts.metrics_file = metrics;
    if (every_step) opts.metrics_every_step = true;
    if (u_shaped) opts.u_shaped = true;
    if (epochs > 0) opts.epochs = epochs;
    if (alpha >= 0) nopeek.alpha = alpha;
    if (noise >= 0) nopeek.noise_std = noise;
    if (alpha_warmup >= 0) nopeek.alpha_warmup_steps = alpha_warmup;
    log::set_level(level);
    torch::set_num_threads(cfg_threads);
    install_stop_handlers();
    auto log = log::get("train");

    const auto data = data::load_split(opts.data, opts.eval_samples, opts.seed);
    const auto spec = train::split_spec(opts);
    auto m = model::build_split(spec, opts.seed);
    std::vector<torch::Tensor> params = m.front->parameters();
    for (auto& p : m.back->parameters()) params.push_back(p);
    if (m.has_head()) for (auto& p : m.head->parameters()) params.push_back(p);
    auto opt = train::make_optimizer(params, opts);
    train::Batches batches(data.train, opts.batch_size, opts.epochs, opts.max_steps, opts.seed);
    train::MetricsFile metrics_file(opts.metrics_file);
    train::Progress progress("monolithic", batches.total_steps());
    log->info("monolithic {} ({}), {} training examples, {} steps, threads={}", opts.model,
              opts.u_shaped ? "U-shaped layout" : "vanilla layout", data.train.size(),
              batches.total_steps(), cfg_threads);

    train::Batch b;
    std::int64_t samples = 0, correct_window = 0, seen_window = 0;
    double loss_window = 0, last_loss = 0;
    while (!stop_flag() && batches.next(b)) {
      train::set_lr(*opt, train::lr_at(opts, b.step));
      auto z = m.front->forward(b.x);
      auto h = m.back->forward(privacy::cut_to_send(z, nopeek));
      auto logits = m.has_head() ? m.head->forward(h) : h;
      auto loss = torch::nn::functional::cross_entropy(logits, b.y);  // the task loss (logged)
      opt->zero_grad();
      const double alpha_now = privacy::alpha_at(nopeek, b.step);
      if (alpha_now > 0) (loss + alpha_now * privacy::dcor(b.x, z)).backward();
      else loss.backward();
      opt->step();
      last_loss = loss.item<double>();
      const auto n = b.x.size(0);
      samples += n;
      loss_window += last_loss * n;
      correct_window += train::count_correct(logits.detach(), b.y);
      seen_window += n;
      if (opts.metrics_every_step)
        metrics_file.write(
            report::Json().add("step", b.step).add_significant("loss", last_loss, 9));
      const bool last = b.step + 1 == batches.total_steps();
      if ((b.step + 1) % opts.log_every == 0 || last) {
        log->info("{}", progress.line(b.step + 1, loss_window / seen_window,
                                      static_cast<double>(correct_window) / seen_window, samples, 0, 0));
        if (!opts.metrics_every_step)
          metrics_file.write(report::Json()
                                 .add("step", b.step + 1)
                                 .add("loss", loss_window / seen_window, 6)
                                 .add("acc", static_cast<double>(correct_window) / seen_window, 4)
                                 .add("samples_per_s", samples / progress.seconds(), 1));
        loss_window = 0;
        correct_window = seen_window = 0;
      }
      if (opts.eval_every > 0 && (b.step + 1) % opts.eval_every == 0 && data.test.size() > 0) {
        const auto [acc, tl] = evaluate(m, data.test, nopeek);
        log->info("step {}: test accuracy {:.4f}, test loss {:.4f}", b.step + 1, acc, tl);
        metrics_file.write(
            report::Json().add("step", b.step + 1).add("test_acc", acc, 4).add("test_loss", tl, 4));
      }
    }
    if (!save_front.empty()) torch::save(m.front, save_front);
    const double seconds = progress.seconds();
    double test_acc = -1, test_loss = -1;
    if (data.test.size() > 0) {
      std::tie(test_acc, test_loss) = evaluate(m, data.test, nopeek);
      metrics_file.write(report::Json()
                             .add("step", samples > 0 ? b.step + 1 : 0)
                             .add("test_acc", test_acc, 4)
                             .add("test_loss", test_loss, 4)
                             .add("final", true));
    }
    report::Json summary;
    summary.add("tool", "cutlayer-train")
        .add("steps", b.step + 1)
        .add("samples", samples)
        .add("seconds", seconds, 3)
        .add("samples_per_s", samples / seconds, 1)
        .add("final_loss", last_loss, 6)
        .add("test_acc", test_acc, 4)
        .add("test_loss", test_loss, 4);
    std::cout << summary.str() << std::endl;
  } catch (const Error& e) {
    std::cerr << "cutlayer-train: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
