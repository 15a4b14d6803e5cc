// Density warm-up by epoch (DGC, GaussianK-SGD): dense-ish first, sparse later.
#pragma once

#include <string>
#include <vector>

namespace cutlayer::kernels {

class DensitySchedule {
 public:
  // A constant density.
  explicit DensitySchedule(double density = 0.01);
  // Density per epoch; the last value holds for all later epochs.
  explicit DensitySchedule(std::vector<double> by_epoch);
  // "0.25,0.0625,0.0156,0.004,0.001". Throws ConfigError naming the bad entry.
  static DensitySchedule parse(const std::string& text);
  // The classic warm-up ending at `final_density`: 0.25, 0.0625, 0.0156, 0.004, then final.
  static DensitySchedule warmup(double final_density);

  double at_epoch(int epoch) const;
  const std::vector<double>& values() const { return by_epoch_; }

 private:
  std::vector<double> by_epoch_;
};

}  // namespace cutlayer::kernels
