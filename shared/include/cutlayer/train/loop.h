// Pieces every training loop shares: the batch order, progress lines with rate and ETA,
// and the JSON-lines metrics file.
#pragma once

#include <torch/types.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "cutlayer/data/dataset.h"

namespace cutlayer::report {
class Json;
}

namespace cutlayer::train {

struct Batch {
  torch::Tensor x, y;
  int epoch = 0;
  std::int64_t step = 0;  // 0-based, across epochs
};

// Epoch after epoch, each in its seeded order; the last batch of an epoch may be short.
class Batches {
 public:
  Batches(const data::Dataset& d, int batch_size, int epochs, std::int64_t max_steps, std::uint64_t seed);
  bool next(Batch& b);
  // Continues after `steps_done` steps (a resumed run): the next batch is the one the
  // uninterrupted run would take then.
  void seek(std::int64_t steps_done);
  std::int64_t total_steps() const { return total_; }
  std::int64_t per_epoch() const { return per_epoch_; }

 private:
  const data::Dataset& data_;
  int batch_size_, epochs_;
  std::uint64_t seed_;
  std::int64_t per_epoch_, total_, step_ = 0;
  int epoch_ = -1;
  std::vector<std::int64_t> order_;
};

class MetricsFile {
 public:
  // "" writes nothing; `append` goes on with an existing file (a resumed run).
  explicit MetricsFile(const std::string& path, bool append = false);
  void write(const std::string& json_object);
  void write(const report::Json& object);

 private:
  std::unique_ptr<std::ofstream> out_;
};

// "step 450/2812  loss 0.512  acc 0.812  1234 samples/s  ETA 1m52s  up 1.2 GB  down 1.2 GB"
class Progress {
 public:
  // `first_step`: where a resumed run starts (the rate counts the steps taken since).
  Progress(std::string who, std::int64_t total_steps, std::int64_t first_step = 0);
  std::string line(std::int64_t step, double loss, double acc, std::int64_t samples,
                   std::uint64_t bytes_up, std::uint64_t bytes_down) const;
  double seconds() const;
  // "1234 per s  ETA 0m12s" after `done` of the total (items of any kind).
  std::string rate_eta(std::int64_t done) const;

 private:
  std::string who_;
  std::int64_t total_, first_;
  std::chrono::steady_clock::time_point start_;
};

// Correct predictions in a batch of logits.
std::int64_t count_correct(const torch::Tensor& logits, const torch::Tensor& y);

}  // namespace cutlayer::train
