// cutlayer-train: the monolithic reference. Trains front + back (+ head) in one process
// with the same config, seed and data order as a split run: the yardstick for parity
// and for speed. With checkpoint.dir (or --checkpoint-dir) it writes sealed checkpoints and
// resumes from the newest good one (--resume) to the same bits the uninterrupted run ends with.
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <iostream>
#include <optional>

#include "client_train_config.h"
#include "train_report.h"
#include "train_vertical.h"
#include "cutlayer/cli.h"
#include "cutlayer/crypto/crypto.h"
#include "cutlayer/cut/codec.h"
#include "cutlayer/cut/flags.h"
#include "cutlayer/error.h"
#include "cutlayer/log.h"
#include "cutlayer/model/model_spec.h"
#include "cutlayer/model/script_export.h"
#include "cutlayer/privacy/adversary.h"
#include "cutlayer/privacy/label_defense.h"
#include "cutlayer/process_tuning.h"
#include "cutlayer/report/json.h"
#include "cutlayer/state/archive.h"
#include "cutlayer/state/checkpoint.h"
#include "cutlayer/stop_signal.h"
#include "cutlayer/train/loop.h"
#include "cutlayer/train/optimizer.h"

using namespace cutlayer;

namespace {

struct Flags {
  std::string config_path, log_level, metrics, save_front, client_key, export_path;
  int threads = 0, epochs = 0;
  std::int64_t steps = -1, alpha_warmup = -1;
  double alpha = -1, noise = -1;
  bool every_step = false, u_shaped = false;
  cli::CheckpointFlags checkpoint;
  cut::CutFlags cut;
  tools::VerticalRun vertical;
};

void add_flags(CLI::App& app, Flags& f) {
  app.add_option("-c,--config", f.config_path, "a client config (its \"train\" object is used)")->required();
  app.add_option("--threads", f.threads, "LibTorch threads (overrides the config)");
  app.add_option("--steps", f.steps, "stop after this many steps (overrides train.max_steps)");
  app.add_option("--metrics", f.metrics, "JSON-lines metrics file (overrides train.metrics_file)");
  app.add_flag("--metrics-every-step", f.every_step, "a metrics line per step (parity checks)");
  app.add_option("--log-level", f.log_level, "trace|debug|info|warn|error");
  app.add_option("--save-front", f.save_front, "save the trained front model here (for cutlayer-leakage)");
  app.add_option("--export", f.export_path,
                 "write the trained model as TorchScript here (Python: torch.jit.load), and beside it PATH.check: "
                 "the first 100 test images and cutlayer's logits for them");
  app.add_option("--alpha", f.alpha, "NoPeek weight of dCor(x, z) (overrides privacy.alpha)")->check(CLI::Range(0.0, 1e6));
  app.add_option("--alpha-warmup", f.alpha_warmup, "steps over which alpha ramps up from 0 (overrides privacy.alpha_warmup_steps)")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{1} << 40));
  app.add_option("--noise", f.noise, "std of Gaussian noise on the cut activations (overrides privacy.noise_std)")
      ->check(CLI::Range(0.0, 1e3));
  app.add_option("--epochs", f.epochs, "epochs (overrides train.epochs)")->check(CLI::Range(1, 100000));
  app.add_flag("--u-shaped", f.u_shaped, "U-shaped split learning: labels never leave the client (overrides train.u_shaped)");
  f.checkpoint.add(app, "steps");
  f.cut.add(app);
  app.add_option("--client-key", f.client_key, "the key pair file that seals checkpoints (overrides transport.client_key)");
  // At most 7: Fashion-MNIST's 28 columns give each strip at least 4 (a table's width is
  // checked when the model is built).
  auto* vertical = app.add_option("--vertical", f.vertical.parties,
                                  "vertical split learning's reference: K parties, each a strip of every image (or a "
                                  "group of a table's columns), aligned by private set intersection (docs/vertical.md)")
                       ->check(CLI::Range(1, 7));
  app.add_option("--vertical-keep", f.vertical.keep, "with --vertical: each party's share of the people")
      ->check(CLI::Range(0.01, 1.0))
      ->needs(vertical);
  app.add_option("--vertical-join", f.vertical.join, "with --vertical: how the back joins the parties' cuts")
      ->check(CLI::IsMember({"concat", "sum"}))
      ->needs(vertical);
}

// The config file with the flags laid over it.
tools::ClientTrainConfig load_config(const Flags& f) {
  auto cfg = tools::load_client_train_config(f.config_path);
  auto& o = cfg.train;
  auto& p = cfg.nopeek;
  if (!f.log_level.empty()) cfg.log_level = f.log_level;
  if (f.threads > 0) cfg.threads = f.threads;
  if (f.steps >= 0) o.max_steps = f.steps;
  if (!f.metrics.empty()) o.metrics_file = f.metrics;
  if (f.every_step) o.metrics_every_step = true;
  if (f.u_shaped) o.u_shaped = true;
  if (f.epochs > 0) o.epochs = f.epochs;
  if (f.alpha >= 0) p.alpha = f.alpha;
  if (f.noise >= 0) p.noise_std = f.noise;
  if (f.alpha_warmup >= 0) p.alpha_warmup_steps = f.alpha_warmup;
  if (!f.client_key.empty()) cfg.client_key = f.client_key;
  f.checkpoint.apply(cfg.checkpoint, f.config_path);
  privacy::refuse_unsaved_state(cfg.nopeek, cfg.checkpoint.enabled(), f.config_path);
  f.cut.apply(cfg.cut);
  return cfg;
}

// The model, its optimizer and what a checkpoint of them must match.
struct Monolithic {
  model::SplitSpec spec;
  model::SplitModel m;
  std::unique_ptr<torch::optim::Optimizer> opt;
  std::unique_ptr<train::Kfac> kfac;  // inactive unless the optimizer is "kfac"

  explicit Monolithic(const train::TrainOptions& o) : spec(train::split_spec(o)), m(model::build_split(spec, o.seed)) {
    model::require_back(m, "cutlayer-train");
    std::vector<torch::Tensor> params = m.front->parameters();
    for (auto& p : m.back->parameters()) params.push_back(p);
    if (m.has_head()) for (auto& p : m.head->parameters()) params.push_back(p);
    opt = train::make_optimizer(params, o);
    kfac = train::make_kfac({m.front, m.back, m.head}, {"front", "back", "head"}, o, "monolithic");
  }
  std::vector<const torch::nn::Module*> parts() const {
    std::vector<const torch::nn::Module*> p{m.front.ptr().get(), m.back.ptr().get()};
    if (m.has_head()) p.push_back(m.head.ptr().get());
    return p;
  }
  torch::Tensor forward(const torch::Tensor& x, const privacy::PrivacyOptions& p, const cut::CutOptions& c = {}) {
    auto h = m.back->forward(across_cut(m.front->forward(x), p, c).back);
    return m.has_head() ? m.head->forward(h) : h;
  }
  // What the back gets of z in a split run: z with the cut's noise, as the cut's coding
  // sends it (and its gradient as the coding returns it); and what NoPeek measures.
  static cut::ThroughCut across_cut(const torch::Tensor& z, const privacy::PrivacyOptions& p,
                                    const cut::CutOptions& c) {
    const auto noisy = privacy::cut_to_send(z, p);
    if (!c.compressed()) return {noisy, z};
    return cut::through_cut(noisy, cut::coding_for(c, z.numel() / std::max<std::int64_t>(1, z.size(0))), c.random);
  }
  void train(bool on) {
    m.front->train(on);
    m.back->train(on);
    if (m.has_head()) m.head->train(on);
  }
  state::Identity identity(const tools::ClientTrainConfig& cfg) const {
    const std::string run = train::run_identity(cfg.train) + privacy::identity(cfg.nopeek) +
                            (cfg.cut.compressed() ? " cut " + cut::identity(cfg.cut) : "");
    return {"train", state::fingerprint(spec.front + "|" + spec.back + "|" + spec.head, parts()),
            crypto::sha256(run.data(), run.size())};
  }
  std::string snapshot(std::int64_t steps_done) const {
    state::OutputArchive a;
    state::save_part(a, "front", *m.front);
    state::save_part(a, "back", *m.back);
    if (m.has_head()) state::save_part(a, "head", *m.head);
    state::save_part(a, "optimizer", *opt);
    if (kfac->active()) kfac->save(a, "kfac");
    state::save_rng(a);
    state::save_int(a, "steps_done", steps_done);
    return state::to_bytes(a);
  }
  std::int64_t restore(const std::string& bytes) {
    state::InputArchive a;
    state::from_bytes(a, bytes);
    state::load_part(a, "front", *m.front);
    state::load_part(a, "back", *m.back);
    if (m.has_head()) state::load_part(a, "head", *m.head);
    state::load_part(a, "optimizer", *opt);
    if (kfac->active()) kfac->load(a, "kfac");
    state::load_rng(a);
    return state::load_int(a, "steps_done");
  }
};

// The trained model as one TorchScript file, and its parity reference (without the cut's
// noise: that is a guard on what leaves the client in training, not part of the model).
void export_model(Monolithic& net, const data::Dataset& test, const std::string& path) {
  const auto client = model::client_script(net.m.front, net.m.has_head() ? &net.m.head : nullptr);
  model::save_script(model::join_scripts(client, model::to_script(net.m.back, "cutlayer_back")), path);
  torch::NoGradGuard no_grad;
  net.train(false);
  const auto x = test.x.narrow(0, 0, std::min<std::int64_t>(100, test.size()));
  model::save_reference(path + ".check", {{"x", x}, {"out", net.forward(x, privacy::PrivacyOptions{})}});
  net.train(true);
  log::get("train")->info("model exported to {} (TorchScript; parity reference {}.check)", path, path);
}

// Test accuracy and mean loss over `d`.
std::pair<double, double> evaluate(Monolithic& net, const data::Dataset& d, const privacy::PrivacyOptions& p,
                                   const cut::CutOptions& c) {
  state::RngGuard rng;  // the cut's noise draws: training's numbers stay as they were
  net.train(false);
  const auto r = tools::accuracy_and_loss(d, [&](const torch::Tensor& x) { return net.forward(x, p, c); });
  net.train(true);
  return r;
}

// Checkpoints of the run, when configured: resume at start, write when due and at the end.
class Checkpoints {
 public:
  Checkpoints(const tools::ClientTrainConfig& cfg, Monolithic& net) : net_(net) {
    if (!cfg.checkpoint.enabled()) return;
    store_.emplace(cfg.checkpoint, state::CheckpointKey::from_key_file(cfg.client_key), net.identity(cfg));
  }
  // Steps already done: those of the newest good checkpoint under --resume, else 0.
  std::int64_t resume(bool wanted) {
    if (!store_ || !wanted) return 0;
    auto log = log::get("train");
    const std::int64_t reached = store_->noted_progress();
    std::int64_t steps = 0;
    auto found = store_->load_newest([&](const state::Opened& o) { steps = net_.restore(o.state); });
    if (!found) {
      log->info("no checkpoint in {} yet: starting from step 0", store_->options().dir);
      return 0;
    }
    log->info("resumed from {} after {} steps; {} steps done before the stop are redone", found->file, steps,
              reached > steps ? reached - steps : 0);
    return steps;
  }
  void after_step(std::int64_t steps_done, bool last) {
    if (!store_) return;
    store_->note_progress(steps_done);
    if (last || store_->due(steps_done)) write(steps_done);
  }
  void write(std::int64_t steps_done) {
    if (!store_) return;
    const auto path = store_->write(steps_done, net_.snapshot(steps_done));
    log::get("train")->debug("checkpoint {} ({:.1f} ms)", path, store_->last_write_ms());
  }

 private:
  Monolithic& net_;
  std::optional<state::CheckpointStore> store_;
};

struct Outcome {
  std::int64_t steps_done = 0, samples = 0;
  double last_loss = 0;
};

Outcome train_loop(const tools::ClientTrainConfig& cfg, Monolithic& net, const data::Split& data, Checkpoints& ckpt,
                   train::MetricsFile& metrics_file, std::int64_t start) {
  const auto& opts = cfg.train;
  const auto& nopeek = cfg.nopeek;
  auto log = log::get("train");
  train::Batches batches(data.train, opts.batch_size, opts.epochs, opts.max_steps, opts.seed);
  batches.seek(start);
  train::Progress progress("monolithic", batches.total_steps(), start);
  log->info("monolithic {} ({}), {} training examples, {} steps, threads={}", opts.model,
            opts.u_shaped ? "U-shaped layout" : "vanilla layout", data.train.size(), batches.total_steps(), cfg.threads);
  std::optional<privacy::DecoderAdversary> adversary;
  if (nopeek.adversary.active()) adversary.emplace(nopeek.adversary, opts.seed);
  train::Batch b;
  tools::Window w;
  Outcome out{start, 0, 0};
  double eval_seconds = 0;
  while (!stop_flag() && batches.next(b)) {
    train::set_lr(*net.opt, train::lr_at(opts, b.step));
    auto z = net.kfac->forward(net.m.front, b.x);
    const auto sent = Monolithic::across_cut(z, nopeek, cfg.cut);
    auto h = net.kfac->forward(net.m.back, sent.back);
    net.opt->zero_grad();
    const auto local = privacy::client_terms(nopeek, b.step, b.x, sent.nopeek, adversary ? &*adversary : nullptr);
    torch::Tensor logits, loss;  // the task loss (logged)
    if (net.m.has_head() && nopeek.label_defense.active()) {
      // U-shaped with a label defence: the back learns from what the client sends back.
      auto h_client = h.detach().requires_grad_(true);
      logits = net.kfac->forward(net.m.head, h_client);
      loss = torch::nn::functional::cross_entropy(logits, b.y);
      const auto dh = privacy::head_backward(h_client, logits, loss, nopeek.label_defense);
      if (local.defined()) torch::autograd::backward({h, local}, {dh, torch::Tensor()});
      else h.backward(dh);
    } else {
      logits = net.m.has_head() ? net.kfac->forward(net.m.head, h) : h;
      loss = torch::nn::functional::cross_entropy(logits, b.y);
      (local.defined() ? loss + local : loss).backward();
    }
    net.kfac->step(train::lr_at(opts, b.step));
    net.opt->step();
    out = {b.step + 1, out.samples + b.x.size(0), loss.item<double>()};
    w.add(out.last_loss, b.x.size(0), train::count_correct(logits.detach(), b.y));
    const bool last = b.step + 1 == batches.total_steps();
    ckpt.after_step(b.step + 1, last);
    if (opts.metrics_every_step)
      metrics_file.write(report::Json().add("step", b.step).add_significant("loss", out.last_loss, 9));
    if ((b.step + 1) % opts.log_every == 0 || last)
      tools::report_window(w, b.step + 1, out.samples, progress, metrics_file, opts.metrics_every_step);
    if (opts.eval_every > 0 && (b.step + 1) % opts.eval_every == 0 && data.test.size() > 0) {
      const double before = progress.seconds();
      const auto [acc, tl] = evaluate(net, data.test, nopeek, cfg.cut);
      log->info("step {}: test accuracy {:.4f}, test loss {:.4f}", b.step + 1, acc, tl);
      // train_seconds: the run's time so far less its evaluations (time to an accuracy)
      metrics_file.write(report::Json().add("step", b.step + 1).add("test_acc", acc, 4).add("test_loss", tl, 4)
                             .add("train_seconds", before - eval_seconds, 3));
      eval_seconds += progress.seconds() - before;
    }
  }
  if (stop_flag() && out.steps_done < batches.total_steps()) {
    ckpt.write(out.steps_done);  // SIGINT/SIGTERM: what is done is kept
    log->info("stopped after {} steps", out.steps_done);
  }
  return out;
}

int run(const Flags& flags) {
  const auto cfg = load_config(flags);
  log::set_level(cfg.log_level);
  torch::set_num_threads(cfg.threads);
  install_stop_handlers();
  auto vertical = flags.vertical;
  if (vertical.parties == 0 && cfg.vertical.parties > 0)  // a party's config: the reference of its run
    vertical = {cfg.vertical.parties, cfg.vertical.keep, cfg.vertical.join};
  if (vertical.parties > 0) {
    if (!flags.save_front.empty() || !flags.export_path.empty())
      throw ConfigError("--vertical does not take --save-front or --export yet: leave them out of this run");
    return tools::run_vertical(cfg, vertical);
  }
  const auto& opts = cfg.train;
  const auto data = data::load_split(opts.data, opts.eval_samples, opts.seed);
  Monolithic net(opts);
  Checkpoints ckpt(cfg, net);
  const auto start = ckpt.resume(cfg.checkpoint.resume);
  const auto t0 = std::chrono::steady_clock::now();
  // A resumed run goes on with the metrics file it started (the lines past the checkpoint,
  // which are redone, appear twice).
  train::MetricsFile metrics_file(opts.metrics_file, /*append=*/start > 0);
  const Outcome out = train_loop(cfg, net, data, ckpt, metrics_file, start);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!flags.save_front.empty()) torch::save(net.m.front, flags.save_front);
  if (!flags.export_path.empty() && !stop_flag()) export_model(net, data.test, flags.export_path);
  double test_acc = -1, test_loss = -1;
  if (data.test.size() > 0 && !stop_flag()) {
    std::tie(test_acc, test_loss) = evaluate(net, data.test, cfg.nopeek, cfg.cut);
    metrics_file.write(report::Json().add("step", out.steps_done).add("test_acc", test_acc, 4).add("test_loss", test_loss, 4).add("final", true));
  }
  const auto hash = state::values_hash(net.parts());
  report::Json summary;
  summary.add("tool", "cutlayer-train")
      .add("steps", out.steps_done)
      .add("resumed_from", start)
      .add("samples", out.samples)
      .add("seconds", seconds, 3)
      .add("samples_per_s", out.samples / std::max(seconds, 1e-9), 1)
      .add("final_loss", out.last_loss, 6)
      .add("test_acc", test_acc, 4)
      .add("test_loss", test_loss, 4)
      .add("model_sha256", crypto::to_hex(hash.data(), hash.size()));
  std::cout << summary.str() << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  tune_allocator();
  tune_threads();
  CLI::App app{"cutlayer-train: the monolithic reference trainer (same config, seed, data order)"};
  Flags flags;
  add_flags(app, flags);
  CLI11_PARSE(app, argc, argv);
  return cli::guarded_main("cutlayer-train", [&] { return run(flags); });
}
