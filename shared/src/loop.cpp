#include "cutlayer/train/loop.h"

#include <fmt/format.h>

#include "cutlayer/error.h"
#include "cutlayer/report/json.h"

namespace cutlayer::train {

Batches::Batches(const data::Dataset& d, int batch_size, int epochs, std::int64_t max_steps,
                 std::uint64_t seed)
    : data_(d), batch_size_(batch_size), epochs_(epochs), seed_(seed) {
  per_epoch_ = (d.size() + batch_size - 1) / batch_size;
  total_ = per_epoch_ * epochs;
  if (max_steps > 0) total_ = std::min(total_, max_steps);
  if (d.size() == 0) throw ConfigError("the training shard is empty: nothing to train on");
}

bool Batches::next(Batch& b) {
  if (step_ >= total_) return false;
  const int epoch = static_cast<int>(step_ / per_epoch_);
  if (epoch != epoch_) {
    epoch_ = epoch;
    order_ = data::epoch_order(data_.size(), seed_, epoch);
  }
  const std::int64_t in_epoch = step_ % per_epoch_;
  const std::int64_t begin = in_epoch * batch_size_;
  const std::int64_t end = std::min<std::int64_t>(begin + batch_size_, data_.size());
  auto idx = torch::from_blob(order_.data() + begin, {end - begin}, torch::kInt64);
  b.x = data_.x.index_select(0, idx);
  b.y = data_.y.index_select(0, idx);
  b.epoch = epoch;
  b.step = step_++;
  return true;
}

void Batches::seek(std::int64_t steps_done) {
  if (steps_done < 0 || steps_done > total_)
    throw ConfigError("cannot continue after step " + std::to_string(steps_done) + ": this run has " +
                      std::to_string(total_) + " steps (raise train.epochs or --steps)");
  step_ = steps_done;
}

MetricsFile::MetricsFile(const std::string& path, bool append) {
  if (path.empty()) return;
  out_ = std::make_unique<std::ofstream>(path, std::ios::out | (append ? std::ios::app : std::ios::trunc));
  if (!*out_) throw IoError("cannot write the metrics file '" + path + "'");
}

void MetricsFile::write(const std::string& json_object) {
  if (!out_) return;
  *out_ << json_object << '\n';
  out_->flush();
}

void MetricsFile::write(const report::Json& object) {
  if (out_) write(object.str());
}

Progress::Progress(std::string who, std::int64_t total_steps, std::int64_t first_step)
    : who_(std::move(who)), total_(total_steps), first_(first_step), start_(std::chrono::steady_clock::now()) {}

double Progress::seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

std::string Progress::line(std::int64_t step, double loss, double acc, std::int64_t samples,
                           std::uint64_t up, std::uint64_t down) const {
  const double s = std::max(seconds(), 1e-9);
  const double steps_per_s = (step - first_) / s;
  const double eta = steps_per_s > 0 ? (total_ - step) / steps_per_s : 0;
  const int m = static_cast<int>(eta) / 60, sec = static_cast<int>(eta) % 60;
  return fmt::format("{} step {}/{}  loss {:.4f}  acc {:.3f}  {:.0f} samples/s  ETA {}m{:02d}s  up {:.1f} MB  down {:.1f} MB",
                     who_, step, total_, loss, acc, samples / s, m, sec, up / 1e6, down / 1e6);
}

std::string Progress::rate_eta(std::int64_t done) const {
  const double per_s = (done - first_) / std::max(seconds(), 1e-9);
  const double eta = per_s > 0 ? (total_ - done) / per_s : 0;
  return fmt::format("{:.0f} per s  ETA {}m{:02d}s", per_s, static_cast<int>(eta) / 60, static_cast<int>(eta) % 60);
}

std::int64_t count_correct(const torch::Tensor& logits, const torch::Tensor& y) {
  return logits.argmax(1).eq(y).sum().item<std::int64_t>();
}

}  // namespace cutlayer::train
