#include "train_vertical.h"

#include <torch/torch.h>

#include <chrono>
#include <iostream>

#include "cutlayer/error.h"
#include "cutlayer/log.h"
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
  else if (cfg.nopeek.alpha > 0 || cfg.nopeek.noise_std > 0) what = "NoPeek or noise (privacy.alpha, privacy.noise_std)";
  else if (cfg.cut.compressed()) what = "a compressed cut (cut, --cut-*)";
  else if (cfg.checkpoint.enabled()) what = "checkpoints (checkpoint.dir, --checkpoint-dir)";
  else if (cfg.train.optimizer == "kfac") what = "K-FAC (train.optimizer)";
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

std::pair<double, double> evaluate(vertical::VerticalModel& m, const data::Dataset& d) {
  torch::NoGradGuard no_grad;
  m.train(false);
  std::int64_t correct = 0;
  double loss = 0;
  for (std::int64_t b = 0; b < d.size(); b += 1000) {
    const auto n = std::min<std::int64_t>(1000, d.size() - b);
    const auto logits = m.forward(d.x.narrow(0, b, n));
    const auto y = d.y.narrow(0, b, n);
    loss += torch::nn::functional::cross_entropy(logits, y).item<double>() * n;
    correct += train::count_correct(logits, y);
  }
  m.train(true);
  const auto n = std::max<std::int64_t>(d.size(), 1);
  return {static_cast<double>(correct) / n, loss / n};
}

}  // namespace

int run_vertical(const ClientTrainConfig& cfg, const VerticalRun& v) {
  refuse_unsupported(cfg);
  auto log = log::get("train");
  const auto& o = cfg.train;
  const auto data = data::load_split(o.data, o.eval_samples, o.seed);
  double psi_s = 0;
  const auto rows = aligned_rows(data.train.size(), v, o.seed, psi_s);
  const auto train_set = data.train.subset(rows);
  log->info("vertical: {} parties, each holding {:.0f}% of {} people; {} held by all (private set intersection "
            "{:.2f} s)",
            v.parties, 100 * v.keep, data.train.size(), rows.size(), psi_s);
  const auto shape = train_set.x.sizes().slice(1).vec();
  const auto classes = std::max(data.train.y.max().item<std::int64_t>(), data.test.y.max().item<std::int64_t>()) + 1;
  auto m = vertical::build_vertical(shape, v.parties, classes, o.seed);
  auto opt = train::make_optimizer(m.parameters(), o);
  train::Batches batches(train_set, o.batch_size, o.epochs, o.max_steps, o.seed);
  train::Progress progress("vertical", batches.total_steps());
  train::MetricsFile metrics(o.metrics_file);
  train::Batch b;
  std::int64_t samples = 0, correct = 0, seen = 0;
  double last_loss = 0, window_loss = 0;
  while (!stop_flag() && batches.next(b)) {
    train::set_lr(*opt, train::lr_at(o, b.step));
    const auto logits = m.forward(b.x);
    auto loss = torch::nn::functional::cross_entropy(logits, b.y);
    opt->zero_grad();
    loss.backward();
    opt->step();
    last_loss = loss.item<double>();
    samples += b.x.size(0);
    window_loss += last_loss * b.x.size(0);
    seen += b.x.size(0);
    correct += train::count_correct(logits.detach(), b.y);
    if ((b.step + 1) % o.log_every == 0 || b.step + 1 == batches.total_steps()) {
      const double acc = static_cast<double>(correct) / seen;
      log->info("{}", progress.line(b.step + 1, window_loss / seen, acc, samples, 0, 0));
      metrics.write(report::Json().add("step", b.step + 1).add("loss", window_loss / seen, 6).add("acc", acc, 4));
      window_loss = 0, correct = 0, seen = 0;
    }
    if (o.eval_every > 0 && (b.step + 1) % o.eval_every == 0) {
      const auto [acc, tl] = evaluate(m, data.test);
      log->info("step {}: test accuracy {:.4f}, test loss {:.4f}", b.step + 1, acc, tl);
      metrics.write(report::Json().add("step", b.step + 1).add("test_acc", acc, 4).add("test_loss", tl, 4));
    }
  }
  const double seconds = progress.seconds();
  double test_acc = -1, test_loss = -1;
  if (!stop_flag()) std::tie(test_acc, test_loss) = evaluate(m, data.test);  // every party holds every test person
  report::Json summary;
  summary.add("tool", "cutlayer-train")
      .add("mode", "vertical")
      .add("parties", v.parties)
      .add("keep", v.keep, 3)
      .add("people", data.train.size())
      .add("aligned", static_cast<std::int64_t>(rows.size()))
      .add("psi_s", psi_s, 3)
      .add("steps", b.step + 1)
      .add("samples", samples)
      .add("seconds", seconds, 3)
      .add("samples_per_s", samples / std::max(seconds, 1e-9), 1)
      .add("final_loss", last_loss, 6)
      .add("test_acc", test_acc, 4)
      .add("test_loss", test_loss, 4);
  std::cout << summary.str() << std::endl;
  return 0;
}

}  // namespace cutlayer::tools
