// What cutlayer-train's loops share (the monolithic one in train.cpp, the vertical one in
// train_vertical.cpp): the window of steps between progress lines, the progress line
// with its metrics line, and test accuracy and loss over a dataset.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <utility>

#include "cutlayer/data/dataset.h"
#include "cutlayer/log.h"
#include "cutlayer/report/json.h"
#include "cutlayer/train/loop.h"

namespace cutlayer::tools {

// Loss and accuracy over the steps since the last progress line.
struct Window {
  std::int64_t correct = 0, seen = 0;
  double loss = 0;
  void add(double l, std::int64_t n, std::int64_t c) {
    loss += l * n;
    correct += c;
    seen += n;
  }
  double mean_loss() const { return loss / seen; }
  double acc() const { return static_cast<double>(correct) / seen; }
};

// The progress line after `steps` steps and, unless every step has its own line, the
// window's metrics line; the window starts again.
inline void report_window(Window& w, std::int64_t steps, std::int64_t samples, const train::Progress& progress,
                          train::MetricsFile& metrics, bool every_step) {
  log::get("train")->info("{}", progress.line(steps, w.mean_loss(), w.acc(), samples, 0, 0));
  if (!every_step)
    metrics.write(report::Json()
                      .add("step", steps)
                      .add("loss", w.mean_loss(), 6)
                      .add("acc", w.acc(), 4)
                      .add("samples_per_s", samples / progress.seconds(), 1));
  w = Window{};
}

// Test accuracy and mean loss of `forward` (inputs -> logits) over `d`, in batches of
// 1,000 without gradients; {-1, -1} when `d` is empty.
template <class Forward>
std::pair<double, double> accuracy_and_loss(const data::Dataset& d, Forward&& forward) {
  if (d.size() == 0) return {-1, -1};
  torch::NoGradGuard no_grad;
  std::int64_t correct = 0;
  double loss = 0;
  for (std::int64_t b = 0; b < d.size(); b += 1000) {
    const auto n = std::min<std::int64_t>(1000, d.size() - b);
    const torch::Tensor logits = forward(d.x.narrow(0, b, n));
    const auto y = d.y.narrow(0, b, n);
    loss += torch::nn::functional::cross_entropy(logits, y).item<double>() * n;
    correct += train::count_correct(logits, y);
  }
  return {static_cast<double>(correct) / d.size(), loss / d.size()};
}

}  // namespace cutlayer::tools
