#include "train_vertical.h"

#include "train_report.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <chrono>
#include <iostream>

#include "cutlayer/crypto/crypto.h"
#include "cutlayer/error.h"
#include "cutlayer/log.h"
#include "cutlayer/state/archive.h"
#include "cutlayer/report/json.h"
#include "cutlayer/stop_signal.h"
#include "cutlayer/train/loop.h"
#include "cutlayer/train/optimizer.h"
#include "cutlayer/vertical/parties.h"
#include "cutlayer/vertical/psi.h"

namespace cutlayer::tools {
namespace {

void refuse_unsupported(const ClientTrainConfig& cfg) {
  std::string what;
  if (cfg.train.u_shaped) what = "U-shaped training (--u-shaped, train.u_shaped)";
  else if (cfg.nopeek.alpha > 0 || cfg.nopeek.noise_std > 0 || cfg.nopeek.cut_norm || cfg.nopeek.adversary.active())
    what = "NoPeek, noise or the cut's defences (privacy.alpha, noise_std, cut_norm, adversary)";
  else if (cfg.cut.compressed()) what = "a compressed cut (cut, --cut-*)";
  else if (cfg.checkpoint.enabled()) what = "checkpoints (checkpoint.dir, --checkpoint-dir)";
  else if (cfg.train.optimizer == "kfac") what = "K-FAC (train.optimizer)";
  else if (cfg.train.data.clients > 1) what = "shards (train.clients): its people are the whole training set";
  else if (cfg.train.model != "fmnist-cnn" || !cfg.train.front.empty() || !cfg.train.front_file.empty())
    what = "a model (train.model): it builds its own (docs/vertical.md)";
  if (!what.empty()) throw ConfigError("--vertical does not take " + what + " yet: leave it out of this run");
}

// The training set's rows all parties hold, in the shared order, by PSI over their IDs.
std::vector<std::int64_t> aligned_rows(std::int64_t rows, const VerticalRun& v, std::uint64_t seed, double& psi_s) {
  std::vector<vertical::Holding> held;
  std::vector<std::unique_ptr<vertical::PsiParty>> parties;
  std::vector<vertical::PsiParty*> ptrs;
  const auto t0 = std::chrono::steady_clock::now();
  for (int k = 0; k < v.parties; ++k) {
    held.push_back(vertical::holding(rows, k, v.keep, seed, "person-"));
    parties.push_back(std::make_unique<vertical::PsiParty>(held.back().ids));
    ptrs.push_back(parties.back().get());
  }
  const auto common = vertical::align(ptrs);
  psi_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (const auto& c : common)
    if (c.size() != common[0].size()) throw InternalError("run_vertical: parties disagree on the aligned count");
  std::vector<std::int64_t> out;
  for (std::size_t j = 0; j < common[0].size(); ++j) {
    const auto row = held[0].rows[common[0][j]];
    for (int k = 1; k < v.parties; ++k)  // the same person at the same place for every party
      if (held[static_cast<std::size_t>(k)].rows[common[static_cast<std::size_t>(k)][j]] != row)
        throw InternalError("run_vertical: parties disagree on the aligned order");
    out.push_back(row);
  }
  return out;
}

// Test accuracy and loss over `d`; -1 for both when there is no test set.
std::pair<double, double> evaluate(vertical::VerticalModel& m, const data::Dataset& d) {
  m.train(false);
  const auto r = accuracy_and_loss(d, [&](const torch::Tensor& x) { return m.forward(x); });
  m.train(true);
  return r;
}

std::int64_t classes_of(const data::Split& d) {
  auto n = d.train.y.max().item<std::int64_t>();
  if (d.test.size() > 0) n = std::max(n, d.test.y.max().item<std::int64_t>());
  return n + 1;
}

vertical::VerticalModel build_model(const std::vector<std::int64_t>& shape, const VerticalRun& v, std::int64_t classes,
                                    std::uint64_t seed) {
  try {
    return vertical::build_vertical(shape, v.parties, classes, seed, vertical::join_mode(v.join, "--vertical-join"));
  } catch (const ConfigError& e) {
    throw ConfigError(std::string("--vertical ") + std::to_string(v.parties) + ": " + e.what() +
                      "; choose fewer parties");
  }
}

struct Outcome {
  std::int64_t steps = 0, samples = 0;
  double last_loss = 0;
  double test_acc = -1, test_loss = -1;  // after the last step (every party holds every test person)
};

// The loop: progress lines and metrics as cutlayer-train's own.
Outcome train_loop(const ClientTrainConfig& cfg, vertical::VerticalModel& m, torch::optim::Optimizer& opt,
                   const data::Dataset& train_set, const data::Dataset& test_set) {
  const auto& o = cfg.train;
  auto log = log::get("train");
  train::Batches batches(train_set, o.batch_size, o.epochs, o.max_steps, o.seed);
  train::Progress progress("vertical", batches.total_steps());
  train::MetricsFile metrics(o.metrics_file);
  train::Batch b;
  Outcome out;
  Window w;
  while (!stop_flag() && batches.next(b)) {
    train::set_lr(opt, train::lr_at(o, b.step));
    const auto logits = m.forward(b.x);
    auto loss = torch::nn::functional::cross_entropy(logits, b.y);
    opt.zero_grad();
    loss.backward();
    opt.step();
    out.steps = b.step + 1;
    out.samples += b.x.size(0);
    out.last_loss = loss.item<double>();
    w.add(out.last_loss, b.x.size(0), train::count_correct(logits.detach(), b.y));
    if (o.metrics_every_step)
      metrics.write(report::Json().add("step", b.step).add_significant("loss", out.last_loss, 9));
    if (out.steps % o.log_every == 0 || out.steps == batches.total_steps())
      report_window(w, out.steps, out.samples, progress, metrics, o.metrics_every_step);
    if (o.eval_every > 0 && out.steps % o.eval_every == 0 && test_set.size() > 0) {
      const auto [acc, tl] = evaluate(m, test_set);
      log->info("step {}: test accuracy {:.4f}, test loss {:.4f}", out.steps, acc, tl);
      metrics.write(report::Json().add("step", out.steps).add("test_acc", acc, 4).add("test_loss", tl, 4));
    }
  }
  if (stop_flag() && out.steps < batches.total_steps()) log->info("stopped after {} steps", out.steps);
  if (!stop_flag() && test_set.size() > 0) {
    std::tie(out.test_acc, out.test_loss) = evaluate(m, test_set);
    metrics.write(report::Json().add("step", out.steps).add("test_acc", out.test_acc, 4)
                      .add("test_loss", out.test_loss, 4).add("final", true));
  }
  return out;
}

}  // namespace

int run_vertical(const ClientTrainConfig& cfg, const VerticalRun& v) {
  refuse_unsupported(cfg);
  auto log = log::get("train");
  const auto& o = cfg.train;
  const auto data = data::load_split(o.data, o.eval_samples, o.seed);
  double psi_s = 0;
  const auto rows = aligned_rows(data.train.size(), v, o.seed, psi_s);
  log->info("vertical: {} parties, each holding {:.0f}% of {} people; {} held by all (private set intersection "
            "{:.2f} s)",
            v.parties, 100 * v.keep, data.train.size(), rows.size(), psi_s);
  if (rows.empty())
    throw ConfigError(fmt::format("--vertical {} --vertical-keep {}: no person is held by all parties (about "
                                  "keep^parties x {} expected); keep more people or take fewer parties",
                                  v.parties, v.keep, data.train.size()));
  const auto train_set = data.train.subset(rows);
  auto m = build_model(train_set.x.sizes().slice(1).vec(), v, classes_of(data), o.seed);
  auto opt = train::make_optimizer(m.parameters(), o);
  const auto t0 = std::chrono::steady_clock::now();
  const Outcome out = train_loop(cfg, m, *opt, train_set, data.test);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<const torch::nn::Module*> parts;
  for (const auto& f : m.fronts) parts.push_back(f.ptr().get());
  parts.push_back(m.back.ptr().get());
  const auto hash = state::values_hash(parts);
  report::Json summary;
  summary.add("tool", "cutlayer-train")
      .add("mode", "vertical")
      .add("parties", v.parties)
      .add("keep", v.keep, 3)
      .add("join", v.join)
      .add("people", data.train.size())
      .add("aligned", static_cast<std::int64_t>(rows.size()))
      .add("psi_s", psi_s, 3)
      .add("steps", out.steps)
      .add("samples", out.samples)
      .add("seconds", seconds, 3)
      .add("samples_per_s", out.samples / std::max(seconds, 1e-9), 1)
      .add("final_loss", out.last_loss, 6)
      .add("test_acc", out.test_acc, 4)
      .add("test_loss", out.test_loss, 4)
      .add("model_sha256", crypto::to_hex(hash.data(), hash.size()));
  std::cout << summary.str() << std::endl;
  return 0;
}

}  // namespace cutlayer::tools
