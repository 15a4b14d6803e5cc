#include "compress_common.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>

#include "cutlayer/error.h"

namespace cutlayer::kernels::detail {

void check_inputs(const torch::Tensor& grad, const torch::Tensor& residual, bool ef,
                  double density) {
  if (!grad.defined() || grad.dim() != 1 || grad.scalar_type() != torch::kFloat32 ||
      !grad.is_contiguous())
    throw InternalError("compress: the gradient must be a contiguous 1-D float32 tensor");
  if (!(density > 0.0 && density <= 1.0))
    throw Error("compress: density must be in (0, 1], got " + std::to_string(density));
  if (ef && (!residual.defined() || residual.sizes() != grad.sizes() ||
             residual.scalar_type() != torch::kFloat32 || !residual.is_contiguous() ||
             residual.device() != grad.device()))
    throw Error(
        "compress: the error-feedback residual must be a contiguous float32 tensor "
        "shaped like the gradient, on its device");
}

void refuse_non_finite(torch::Tensor& residual, bool ef) {
  if (ef) residual.zero_();
  throw Error(
      "compress: the gradient holds NaN or Inf (or values near 1e19 whose squares "
      "overflow); step refused (error-feedback residual reset). Lower the learning "
      "rate or clip gradients.");
}

Source make_source(const torch::Tensor& grad, torch::Tensor& residual, bool ef) {
  Source s;
  s.g = grad.data_ptr<float>();
  if (ef) {
    s.r = residual.data_ptr<float>();
    s.x = s.r;
  } else {
    s.x = s.g;
  }
  return s;
}

std::int64_t ChunkLists::size() const {
  std::int64_t total = 0;
  for (const auto& v : idx) total += static_cast<std::int64_t>(v.size());
  return total;
}

std::int64_t Candidates::count_above(float t) const {
  std::int64_t c = 0;
  for (const auto& v : lists.val)
    for (float x : v) c += std::fabs(x) > t;
  return c;
}

void ChunkLists::reset(std::int64_t chunks) {
  idx.resize(static_cast<std::size_t>(chunks));
  val.resize(static_cast<std::size_t>(chunks));
  for (auto& v : idx) v.clear();
  for (auto& v : val) v.clear();
}

void Candidates::select_above(float t, ChunkLists& out) const {
  out.reset(static_cast<std::int64_t>(lists.idx.size()));
  for (std::size_t c = 0; c < lists.idx.size(); ++c) {
    const auto& vi = lists.idx[c];
    const auto& vv = lists.val[c];
    for (std::size_t j = 0; j < vv.size(); ++j) {
      if (std::fabs(vv[j]) > t) {
        out.idx[c].push_back(vi[j]);
        out.val[c].push_back(vv[j]);
      }
    }
  }
}

float Candidates::kth_largest_abs(std::int64_t j) const {
  thread_local std::vector<float> a;  // kept: a fresh one would fault its pages in each call
  a.clear();
  a.reserve(static_cast<std::size_t>(lists.size()));
  for (const auto& v : lists.val)
    for (float x : v) a.push_back(std::fabs(x));
  std::nth_element(a.begin(), a.begin() + (j - 1), a.end(), std::greater<float>());
  return a[j - 1];
}

Moments scan(const Source& src, std::int64_t n, float bound, std::int64_t cap, Candidates& out,
             std::int64_t* above,
             const std::function<void(std::int64_t, std::int64_t, std::int64_t)>& per_chunk) {
  const std::int64_t chunks = chunk_count(n);
  out.bound = bound;
  out.complete = true;
  out.lists.reset(chunks);  // keeps the lists' room from the last pass
  CandidateBudget budget;
  budget.cap = cap;
  std::vector<Moments> parts(chunks);
  std::vector<std::int64_t> counts(chunks, 0);
  float* x = src.r != nullptr ? src.r : const_cast<float*>(src.x);  // read-only without g
  const float* g = src.r != nullptr ? src.g : nullptr;
  for_chunks(n, [&](std::int64_t c, std::int64_t b, std::int64_t e) {
    parts[c] = scan_above(x + b, g != nullptr ? g + b : nullptr, e - b, bound, b, budget,
                          out.lists.idx[c], out.lists.val[c], &counts[c]);
    if (per_chunk) per_chunk(c, b, e);
  });
  out.complete = !budget.exceeded.load();
  if (!out.complete) out.lists.reset(chunks);  // unusable (its room is kept)
  *above = 0;
  for (auto c : counts) *above += c;
  return combine(parts);
}

void ThresholdMemory::learn(double accepted, bool complete, std::int64_t count, std::int64_t k) {
  if (!(accepted > 0)) {
    *this = ThresholdMemory{};  // nothing to go on next time
    return;
  }
  if (threshold > 0) {  // this call was warm: tune the margin and follow the trend
    if (static_cast<float>(accepted) < bound()) {
      gap = std::min(0.6, gap * 2.0);  // the threshold fell under the margin: widen it
    } else if (!complete || count > 4 * k) {
      gap = std::max(0.02, gap * 0.7);  // far more candidates than needed: narrow it
    }
    // A steady drift (a residual still filling up) is followed; a jump is not a trend.
    const double step = std::log(accepted / threshold);
    trend = std::fabs(step) > 0.3 ? 0.0 : 0.75 * trend + 0.25 * step;
  }
  threshold = accepted;
}

ThresholdMemory& ThresholdMemories::recall(bool reuse, const void* where, std::int64_t numel,
                                           double density) {
  if (!reuse) {
    blank_ = ThresholdMemory{};
    return blank_;
  }
  constexpr std::size_t kMaxEntries = 4096;  // vectors (layers) one compressor serves
  if (entries_.size() >= kMaxEntries && entries_.find({where, numel, density}) == entries_.end())
    entries_.clear();
  return entries_[{where, numel, density}];
}

namespace {
struct SavedMemory {  // one entry, as saved: its place as a byte offset into the buffer
  std::int64_t offset, numel;
  double density, threshold, trend, factor, gap;
};
}  // namespace

std::string ThresholdMemories::save(const void* base, std::size_t bytes) const {
  std::string out;
  const auto b = reinterpret_cast<std::uintptr_t>(base);
  for (const auto& [key, m] : entries_) {
    const auto w = reinterpret_cast<std::uintptr_t>(key.where);
    if (w < b || w - b + static_cast<std::uintptr_t>(key.numel) * sizeof(float) > bytes) continue;  // another buffer
    const SavedMemory e{static_cast<std::int64_t>(w - b), key.numel, key.density, m.threshold, m.trend, m.factor, m.gap};
    out.append(reinterpret_cast<const char*>(&e), sizeof e);
  }
  return out;
}

void ThresholdMemories::restore(const void* base, std::size_t bytes, const std::string& saved) {
  constexpr std::size_t kMaxEntries = 4096;
  if (saved.size() % sizeof(SavedMemory) != 0 || saved.size() / sizeof(SavedMemory) > kMaxEntries)
    throw Error("a compressor memory of " + std::to_string(saved.size()) + " bytes is not this compressor's");
  std::unordered_map<Key, ThresholdMemory, Hash> entries;
  for (std::size_t at = 0; at < saved.size(); at += sizeof(SavedMemory)) {
    SavedMemory e;
    std::memcpy(&e, saved.data() + at, sizeof e);
    const bool finite = std::isfinite(e.threshold) && std::isfinite(e.trend) && std::isfinite(e.factor) &&
                        std::isfinite(e.gap);
    if (e.offset < 0 || e.numel <= 0 || static_cast<std::uint64_t>(e.numel) > bytes / sizeof(float) ||
        static_cast<std::uint64_t>(e.offset) > bytes - static_cast<std::uint64_t>(e.numel) * sizeof(float) ||
        !(e.density > 0 && e.density <= 1) || !finite)
      throw Error("a compressor memory entry does not fit a buffer of " + std::to_string(bytes) + " bytes");
    const auto* where = static_cast<const char*>(base) + e.offset;
    entries[{where, e.numel, e.density}] = ThresholdMemory{e.threshold, e.trend, e.factor, e.gap};
  }
  entries_.swap(entries);
}

SparseTensor empty_sparse(std::int64_t numel) {
  SparseTensor s;
  s.numel = numel;
  s.indices = torch::empty({0}, torch::TensorOptions().dtype(index_dtype_for(numel)));
  s.values = torch::empty({0}, torch::kFloat32);
  return s;
}

SparseTensor assemble(std::int64_t numel, const ChunkLists& sel) {
  const std::int64_t total = sel.size();
  SparseTensor out;
  out.numel = numel;
  out.indices = torch::empty({total}, torch::TensorOptions().dtype(index_dtype_for(numel)));
  out.values = torch::empty({total}, torch::kFloat32);
  float* pv = out.values.data_ptr<float>();
  std::int64_t at = 0;
  const bool narrow = out.indices.scalar_type() == torch::kInt32;
  for (std::size_t c = 0; c < sel.idx.size(); ++c) {
    const std::size_t m = sel.idx[c].size();
    if (narrow) {
      auto* pi = out.indices.data_ptr<std::int32_t>() + at;
      for (std::size_t j = 0; j < m; ++j) pi[j] = static_cast<std::int32_t>(sel.idx[c][j]);
    } else {
      std::memcpy(out.indices.data_ptr<std::int64_t>() + at, sel.idx[c].data(), m * 8);
    }
    std::memcpy(pv + at, sel.val[c].data(), m * 4);
    at += static_cast<std::int64_t>(m);
  }
  return out;
}

void zero_selected(float* r, const ChunkLists& sel) {
  for (const auto& v : sel.idx)
    for (auto i : v) r[i] = 0.f;
}

}  // namespace cutlayer::kernels::detail
