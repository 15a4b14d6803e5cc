#include "cutlayer/vertical/parties.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "cutlayer/error.h"
#include "cutlayer/model/model_spec.h"

namespace cutlayer::vertical {

Columns columns_of(std::int64_t width, int parties, int k) {
  if (parties < 1 || k < 0 || k >= parties || width < parties)
    throw ConfigError(fmt::format("vertical: party {} of {} over {} columns: need 0 <= party < parties <= columns", k,
                                  parties, width));
  return {width * k / parties, width * (k + 1) / parties};
}

torch::Tensor strip(const torch::Tensor& x, int parties, int k) {
  const auto dim = x.dim() == 4 ? 3 : 1;
  if (x.dim() != 4 && x.dim() != 2)
    throw ConfigError(fmt::format("vertical: samples must be images (N x C x H x W) or table rows (N x F), not {}-D",
                                  x.dim()));
  const auto c = columns_of(x.size(dim), parties, k);
  return x.narrow(dim, c.begin, c.size());
}

Holding holding(std::int64_t rows, int k, double keep, std::uint64_t seed, const std::string& prefix) {
  if (!(keep > 0 && keep <= 1)) throw ConfigError(fmt::format("vertical: keep {} is not in (0, 1]", keep));
  std::vector<std::int64_t> all(static_cast<std::size_t>(rows));
  std::iota(all.begin(), all.end(), std::int64_t{0});
  std::mt19937_64 g(seed * 1000003 + static_cast<std::uint64_t>(k) + 1);
  std::shuffle(all.begin(), all.end(), g);
  all.resize(static_cast<std::size_t>(std::llround(keep * static_cast<double>(rows))));
  std::sort(all.begin(), all.end());
  Holding h;
  h.rows = std::move(all);
  for (const auto r : h.rows) h.ids.push_back(prefix + std::to_string(r));
  return h;
}

torch::Tensor VerticalModel::forward(const torch::Tensor& x) {
  const int k = static_cast<int>(fronts.size());
  std::vector<torch::Tensor> features;
  for (int i = 0; i < k; ++i) features.push_back(fronts[static_cast<std::size_t>(i)]->forward(strip(x, k, i)));
  return back->forward(join_cuts(features, join));
}

JoinMode join_mode(const std::string& name, const std::string& where) {
  if (name == "concat") return JoinMode::kConcat;
  if (name == "sum") return JoinMode::kSum;
  throw ConfigError(where + ": the parties' cuts are joined by \"concat\" or \"sum\", not '" + name + "'");
}

const char* join_name(JoinMode m) { return m == JoinMode::kSum ? "sum" : "concat"; }

torch::Tensor join_cuts(const std::vector<torch::Tensor>& cuts, JoinMode mode) {
  if (mode == JoinMode::kConcat) return torch::cat(cuts, 1);
  auto sum = cuts.at(0);
  for (std::size_t k = 1; k < cuts.size(); ++k) sum = sum + cuts[k];
  return sum;
}

torch::Tensor cut_grad_of(const torch::Tensor& joined_grad, const std::vector<std::int64_t>& widths, int k,
                          JoinMode mode) {
  if (mode == JoinMode::kSum) return joined_grad;
  std::int64_t begin = 0;
  for (int i = 0; i < k; ++i) begin += widths.at(static_cast<std::size_t>(i));
  return joined_grad.narrow(1, begin, widths.at(static_cast<std::size_t>(k))).contiguous();
}

std::vector<torch::Tensor> VerticalModel::parameters() const {
  std::vector<torch::Tensor> out;
  for (const auto& f : fronts)
    for (auto& p : f->parameters()) out.push_back(p);
  for (auto& p : back->parameters()) out.push_back(p);
  return out;
}

std::int64_t VerticalModel::joined_width() const {
  if (join == JoinMode::kSum) return widths.at(0);
  return std::accumulate(widths.begin(), widths.end(), std::int64_t{0});
}

void VerticalModel::train(bool on) {
  for (auto& f : fronts) f->train(on);
  back->train(on);
}

VerticalModel build_vertical(const std::vector<std::int64_t>& input_shape, int parties, std::int64_t classes,
                             std::uint64_t seed, JoinMode join) {
  const bool image = input_shape.size() == 3;
  if (!image && input_shape.size() != 1)
    throw ConfigError("vertical: input_shape must be [C, H, W] (images) or [F] (a table's features)");
  torch::manual_seed(seed);
  VerticalModel m;
  m.join = join;
  for (int k = 0; k < parties; ++k) {
    const auto cols = columns_of(input_shape.back(), parties, k);
    auto shape = input_shape;
    shape.back() = cols.size();
    std::string spec;
    if (image) {
      if (cols.size() < 4)
        throw ConfigError(fmt::format("vertical: {} parties leave party {} {} image columns; a strip needs at least 4",
                                      parties, k, cols.size()));
      spec = fmt::format("conv2d({},32,5,1,2) relu maxpool(2) conv2d(32,64,5,1,2) relu maxpool(2) flatten",
                         input_shape[0]);
    } else {
      spec = fmt::format("linear({},64) relu", cols.size());
    }
    m.fronts.push_back(model::build(spec));
    m.widths.push_back(c10::multiply_integers(model::output_shape(m.fronts.back(), shape)));
  }
  for (const auto w : m.widths)
    if (join == JoinMode::kSum && w != m.widths[0])
      throw ConfigError(fmt::format("vertical: \"sum\" joins cuts of one width, but party 0's has {} features and "
                                    "another's {}; join them by \"concat\" or take a number of parties that "
                                    "divides the columns evenly", m.widths[0], w));
  m.back = model::build(fmt::format("linear({},512) relu linear(512,{})", m.joined_width(), classes));
  return m;
}

}  // namespace cutlayer::vertical
