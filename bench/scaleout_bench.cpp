// The server tier's two costs per round (docs/scale-out.md), for its projection to R ranks:
//   allreduce: one float32 tensor summed over 2 ranks (two threads, each with its own
//              ProcessGroupGloo over loopback TCP, as two processes would), by size;
//   back:      the back's compute for one training batch (decode, forward, backward, the
//              gradient added to the round), and the step that follows the round's sum.
// One JSON object per line.
#include <CLI/CLI.hpp>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <thread>

#include "cutlayer/process_tuning.h"
#include "cutlayer/server/back_trainer.h"
#include "cutlayer/server/scale_out.h"

using namespace cutlayer;
using Clock = std::chrono::steady_clock;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

void allreduce_bench(const std::vector<std::int64_t>& sizes, int repeats) {
  const std::string store = "/tmp/cutlayer-bench-allreduce-" + std::to_string(::getpid());
  std::vector<std::vector<double>> ms(sizes.size());
  auto rank = [&](int r) {
    server::ScaleOutOptions o;
    o.rank = r;
    o.world = 2;
    o.store = "file:" + store;
    o.host = "127.0.0.1";
    server::RankGroup group(o);
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      auto t = torch::ones({sizes[i]}, torch::kFloat32);
      group.allreduce(t);  // warm-up
      for (int k = 0; k < repeats; ++k) {
        const auto t0 = Clock::now();
        group.allreduce(t);
        if (r == 0) ms[i].push_back(ms_since(t0));
      }
    }
  };
  std::thread other(rank, 1);
  rank(0);
  other.join();
  std::remove(store.c_str());
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const double m = median(ms[i]);
    const double bytes = 4.0 * static_cast<double>(sizes[i]);
    std::printf("{\"bench\":\"allreduce\",\"backend\":\"gloo\",\"ranks\":2,\"floats\":%lld,\"bytes\":%.0f,\"ms\":%.4f,"
                "\"gb_per_s\":%.4f}\n",
                static_cast<long long>(sizes[i]), bytes, m, bytes / (m * 1e-3) / 1e9);
  }
}

void back_bench(const std::string& model, int batch, int repeats) {
  train::TrainOptions o;
  o.model = model;
  server::BackTrainer trainer(o);
  trainer.enable_rounds({});
  const auto numel = trainer.round_gradient().numel();
  std::vector<std::int64_t> shape{batch};
  for (auto d : trainer.cut_shape()) shape.push_back(d);
  std::vector<double> batch_ms, step_ms;
  for (int k = 0; k < repeats + 2; ++k) {
    auto z = torch::randn(shape);
    auto y = torch::randint(0, trainer.classes(), {batch}, torch::kInt64);
    auto msg = wire::make_message(wire::Activations{static_cast<std::uint64_t>(k), true, true}, {z, y});
    const auto t0 = Clock::now();
    trainer.handle(1, std::move(msg));
    const double b = ms_since(t0);
    const auto t1 = Clock::now();
    trainer.finish_round(batch);
    const double s = ms_since(t1);
    if (k >= 2) batch_ms.push_back(b), step_ms.push_back(s);
  }
  std::printf("{\"bench\":\"back\",\"model\":\"%s\",\"batch\":%d,\"threads\":%d,\"back_params\":%lld,"
              "\"gradient_bytes\":%lld,\"batch_ms\":%.3f,\"step_ms\":%.3f}\n",
              model.c_str(), batch, torch::get_num_threads(), static_cast<long long>(numel),
              static_cast<long long>(4 * numel), median(batch_ms), median(step_ms));
}

}  // namespace

int main(int argc, char** argv) {
  // As cutlayer-server runs (one BLAS pool, passive OpenMP waits, the heap kept).
  prefer_passive_openmp(argv);
  tune_allocator();
  tune_threads();
  CLI::App app{"cutlayer-bench-scaleout: allreduce time by size over Gloo on loopback, and the back's compute "
               "per batch (JSON lines)"};
  std::vector<std::int64_t> sizes{256, 4096, 65536, 262144, 1048576, 4194304, 16777216};
  int repeats = 20, batch = 64, threads = 1;
  std::string model = "fmnist-cnn";
  app.add_option("--floats", sizes, "tensor sizes (float32 elements) to allreduce");
  app.add_option("--repeats", repeats, "timed repetitions per size / per batch (the median is reported)")
      ->check(CLI::Range(1, 100000));
  app.add_option("--model", model, "the back of this model (a built-in name)");
  app.add_option("--batch", batch, "training batch size")->check(CLI::Range(1, 4096));
  app.add_option("--threads", threads, "LibTorch threads for the back")->check(CLI::Range(1, 256));
  CLI11_PARSE(app, argc, argv);
  try {
    torch::set_num_threads(threads);
    back_bench(model, batch, repeats);
    allreduce_bench(sizes, repeats);
  } catch (const std::exception& e) {
    std::cerr << "cutlayer-bench-scaleout: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
