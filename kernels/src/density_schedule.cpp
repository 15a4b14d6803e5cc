#include "cutlayer/kernels/density_schedule.h"

#include <sstream>

#include "cutlayer/error.h"

namespace cutlayer::kernels {
namespace {
void check(double d, const std::string& where) {
  if (!(d > 0.0 && d <= 1.0))
    throw ConfigError("density schedule: " + where + " must be in (0, 1], got " + std::to_string(d));
}
}  // namespace

DensitySchedule::DensitySchedule(double density) : by_epoch_{density} { check(density, "density"); }

DensitySchedule::DensitySchedule(std::vector<double> by_epoch) : by_epoch_(std::move(by_epoch)) {
  if (by_epoch_.empty()) throw ConfigError("density schedule: needs at least one value");
  for (std::size_t i = 0; i < by_epoch_.size(); ++i)
    check(by_epoch_[i], "entry " + std::to_string(i + 1));
}

DensitySchedule DensitySchedule::parse(const std::string& text) {
  std::vector<double> values;
  std::stringstream ss(text);
  std::string item;
  int n = 0;
  while (std::getline(ss, item, ',')) {
    ++n;
    std::size_t used = 0;
    double v = 0;
    try {
      v = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || item.find_first_not_of(" \t", used) != std::string::npos)
      throw ConfigError("density schedule: entry " + std::to_string(n) + " ('" + item +
                        "') is not a number; write e.g. 0.25,0.0625,0.0156,0.004,0.001");
    values.push_back(v);
  }
  return DensitySchedule(std::move(values));
}

DensitySchedule DensitySchedule::warmup(double final_density) {
  std::vector<double> v;
  for (double d : {0.25, 0.0625, 0.015625, 0.00390625})
    if (d > final_density) v.push_back(d);
  v.push_back(final_density);
  return DensitySchedule(std::move(v));
}

double DensitySchedule::at_epoch(int epoch) const {
  if (epoch < 0) epoch = 0;
  return by_epoch_[std::min<std::size_t>(static_cast<std::size_t>(epoch), by_epoch_.size() - 1)];
}

}  // namespace cutlayer::kernels
