// cutlayer-gradstudy: the gradient-distribution study behind Gaussian-k (Shi et al. 2019,
// the paper's first step). Trains a model monolithically (same config as cutlayer-train)
// and, at every step, looks at the flat gradient of all parameters — with and without the
// error-feedback residual added — recording mean, standard deviation, kurtosis, a
// histogram of g/sigma, and how many elements the gaussiank threshold selects against k.
// Writes a CSV (one row per step and view) and a histogram CSV; scripts/plot-gradstudy.py
// turns them into a PNG.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include "cutlayer/process_tuning.h"

#include <cmath>
#include <fstream>
#include <iostream>

#include "cutlayer/error.h"
#include "cutlayer/kernels/compressor.h"
#include "cutlayer/log.h"
#include "cutlayer/model/model_spec.h"
#include "cutlayer/train/loop.h"
#include "client_train_config.h"
#include "cutlayer/train/optimizer.h"

using namespace cutlayer;

namespace {

constexpr int kBins = 81;           // histogram of x/sigma over [-8, 8]
constexpr double kRange = 8.0;

struct Moments {
  double mean, sd, kurtosis;
};

Moments moments(const torch::Tensor& x) {
  const auto d = x.to(torch::kFloat64);
  const double mean = d.mean().item<double>();
  const auto c = d - mean;
  const double var = c.pow(2).mean().item<double>();
  const double m4 = c.pow(4).mean().item<double>();
  return {mean, std::sqrt(var), var > 0 ? m4 / (var * var) : 0.0};  // Gaussian: 3
}

}  // namespace

int main(int argc, char** argv) {
  cutlayer::tune_threads();
  CLI::App app{"cutlayer-gradstudy: gradient distributions while training, and what gaussiank selects"};
  std::string config_path, out_prefix = "gradstudy";
  std::int64_t steps = 300;
  double density = 0.001;
  int threads = 2;
  app.add_option("-c,--config", config_path, "a client config (its \"train\" object)")->required();
  app.add_option("-o,--out", out_prefix, "output prefix: PREFIX.csv and PREFIX-hist.csv");
  app.add_option("--steps", steps, "training steps to study")->check(CLI::Range(1, 1000000));
  app.add_option("--density", density, "density for the selection counts")->check(CLI::Range(1e-6, 1.0));
  app.add_option("--threads", threads, "LibTorch threads");
  CLI11_PARSE(app, argc, argv);
  try {
    auto opts = tools::load_client_train_config(config_path).train;
    opts.max_steps = steps;
    torch::set_num_threads(threads);
    auto log = log::get("gradstudy");
    const auto data = data::load_split(opts.data, opts.eval_samples, opts.seed);
    auto m = model::build_split(train::split_spec(opts), opts.seed);
    model::require_back(m, "cutlayer-gradstudy");
    std::vector<torch::Tensor> params = m.front->parameters();
    for (auto& p : m.back->parameters()) params.push_back(p);
    if (m.has_head())
      for (auto& p : m.head->parameters()) params.push_back(p);
    auto opt = train::make_optimizer(params, opts);
    std::int64_t numel = 0;
    for (auto& p : params) numel += p.numel();
    auto residual = torch::zeros({numel});
    kernels::CompressorOptions probe_opts;
    probe_opts.error_feedback = false;  // counting only: nothing is modified
    probe_opts.reuse_threshold = false;  // the paper's threshold from this step's data alone
    auto gk = kernels::make_compressor("gaussiank", probe_opts);
    kernels::CompressorOptions raw = probe_opts;
    raw.max_corrections = 0;
    auto gk_raw = kernels::make_compressor("gaussiank", raw);
    auto ef = kernels::make_compressor("topk");  // keeps the residual as training with EF would

    std::ofstream csv(out_prefix + ".csv"), hist(out_prefix + "-hist.csv");
    if (!csv || !hist) throw IoError("cannot write " + out_prefix + ".csv");
    csv << "step,view,numel,loss,mean,std,kurtosis,k,gaussiank_selected_raw,gaussiank_selected,"
           "selected_over_k_raw,selected_over_k\n";
    hist << "step,view,bin_center_sigma,fraction\n";
    train::Batches batches(data.train, opts.batch_size, opts.epochs, opts.max_steps, opts.seed);
    train::Batch b;
    const auto k = kernels::target_k(numel, density);
    while (batches.next(b)) {
      auto h = m.back->forward(m.front->forward(b.x));
      auto logits = m.has_head() ? m.head->forward(h) : h;
      auto loss = torch::nn::functional::cross_entropy(logits, b.y);
      opt->zero_grad();
      loss.backward();
      std::vector<torch::Tensor> grads;
      for (auto& p : params) grads.push_back(p.grad().reshape({-1}));
      const auto g = torch::cat(grads);
      const auto compensated = residual + g;
      for (const auto& [view, x] : {std::pair<const char*, torch::Tensor>{"gradient", g},
                                    {"gradient+residual", compensated}}) {
        const auto mo = moments(x);
        torch::Tensor none;
        const auto raw_sel = gk_raw->compress(x.contiguous(), none, density).nnz();
        const auto sel = gk->compress(x.contiguous(), none, density).nnz();
        csv << fmt::format("{},{},{},{:.6f},{:.6g},{:.6g},{:.4f},{},{},{},{:.4f},{:.4f}\n", b.step, view, numel,
                           loss.item<double>(), mo.mean, mo.sd, mo.kurtosis, k, raw_sel, sel,
                           double(raw_sel) / k, double(sel) / k);
        if (b.step % 25 == 0 && mo.sd > 0) {
          const auto z = ((x.to(torch::kFloat64) - mo.mean) / mo.sd).clamp(-kRange, kRange);
          const auto counts = torch::histc(z, kBins, -kRange, kRange);
          for (int i = 0; i < kBins; ++i)
            hist << fmt::format("{},{},{:.3f},{:.6g}\n", b.step, view, -kRange + (i + 0.5) * 2 * kRange / kBins,
                                counts[i].item<double>() / numel);
        }
      }
      ef->compress(g.contiguous(), residual, density);  // residual after this step's send
      opt->step();
      if ((b.step + 1) % 50 == 0) log->info("step {}/{}  loss {:.4f}", b.step + 1, batches.total_steps(), loss.item<double>());
    }
    std::cout << "wrote " << out_prefix << ".csv and " << out_prefix << "-hist.csv" << std::endl;
  } catch (const Error& e) {
    std::cerr << "cutlayer-gradstudy: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
