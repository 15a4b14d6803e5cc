// Cost of the NoPeek term: dCor(X, Z) forward + backward at the cut layer of fmnist-cnn
// (X: 64 x 784 images, Z: 64 x 4608 activations) beside one whole monolithic training
// step of the same batch, same threads, same run. One JSON line per batch size:
//   {"bench":"dcor","batch":64,"dcor_ms":..,"step_ms":..,"step_with_dcor_ms":..,"dcor_share_of_step":..}
// dcor_share_of_step = dCor forward+backward alone / the plain step (interleaved medians).
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

#include "cutlayer/model/model_spec.h"
#include "cutlayer/privacy/dcor.h"
#include "cutlayer/process_tuning.h"

using namespace cutlayer;
using Clock = std::chrono::steady_clock;

namespace {
double time_ms(const std::function<void()>& fn) {
  const auto t0 = Clock::now();
  fn();
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
// Medians of fns run in turn (A B C A B C ...), so that machine noise hits all alike.
std::vector<double> interleaved_ms(const std::vector<std::function<void()>>& fns, int reps = 61) {
  for (int i = 0; i < 5; ++i)
    for (auto& f : fns) f();
  std::vector<std::vector<double>> t(fns.size());
  for (int r = 0; r < reps; ++r)
    for (std::size_t k = 0; k < fns.size(); ++k) t[k].push_back(time_ms(fns[k]));
  std::vector<double> out;
  for (auto& v : t) out.push_back(median(v));
  return out;
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "cutlayer-bench-dcor: the NoPeek term's cost (dCor forward + backward at fmnist-cnn's cut)\n"
      "beside one monolithic training step of the same batch, interleaved in one run"};
  std::vector<std::int64_t> batches{32, 64, 128};
  int reps = 61;
  int threads = 2;
  app.add_option("--batch", batches, "batch sizes, e.g. --batch 32,64,128")
      ->delimiter(',')
      ->check(CLI::Range(std::int64_t{2}, std::int64_t{4096}));
  app.add_option("--reps", reps, "timed repeats per contender (the median is reported)")
      ->check(CLI::Range(1, 100000));
  app.add_option("--threads", threads, "intra-op threads for every contender")
      ->check(CLI::Range(1, 256));
  app.footer(
      "One JSON line per batch size on stdout:\n"
      "  {\"bench\":\"dcor\",\"batch\":..,\"dcor_ms\":..,\"step_ms\":..,\"step_with_dcor_ms\":..,"
      "\"dcor_share_of_step\":..}\n"
      "dcor_share_of_step = dCor forward+backward alone / the plain step (medians).");
  CLI11_PARSE(app, argc, argv);
  cutlayer::tune_threads();
  torch::set_num_threads(threads);
  for (std::int64_t batch : batches) {
    auto m = model::build_split(model::preset("fmnist-cnn", false), 1);
    std::vector<torch::Tensor> params = m.front->parameters();
    for (auto& p : m.back->parameters()) params.push_back(p);
    // lr 0: every step does the optimizer's arithmetic but the weights stay put, so the
    // timed model does not drift between the interleaved runs.
    torch::optim::SGD opt(params, torch::optim::SGDOptions(0.0).momentum(0.9));
    const auto x = torch::randn({batch, 1, 28, 28});
    const auto y = torch::randint(0, 10, {batch}, torch::kInt64);
    auto zd = m.front->forward(x).detach().requires_grad_(true);
    const auto t = interleaved_ms(
        {
            [&] {
              auto loss =
                  torch::nn::functional::cross_entropy(m.back->forward(m.front->forward(x)), y);
              opt.zero_grad();
              loss.backward();
              opt.step();
            },
            [&] {
              auto z = m.front->forward(x);
              auto loss = torch::nn::functional::cross_entropy(m.back->forward(z), y) +
                          0.5 * privacy::dcor(x, z);
              opt.zero_grad();
              loss.backward();
              opt.step();
            },
            [&] {
              auto d = privacy::dcor(x, zd);
              d.backward();
            },
        },
        reps);
    const double step = t[0], with_dcor = t[1], dcor_only = t[2];
    std::printf("{\"bench\":\"dcor\",\"batch\":%lld,\"dcor_ms\":%.3f,\"step_ms\":%.3f,\"step_with_dcor_ms\":%.3f,"
                "\"dcor_share_of_step\":%.3f}\n",
                static_cast<long long>(batch), dcor_only, step, with_dcor, dcor_only / step);
  }
  return 0;
}
