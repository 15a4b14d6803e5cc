#include "cutlayer/kernels/sparse_sum.h"

#include <algorithm>
#include <cstring>
#include <queue>
#include <string>

#include "cutlayer/error.h"

namespace cutlayer::kernels {
namespace {

// Index accessor over int32/int64 index tensors.
struct Indices {
  const std::int32_t* i32 = nullptr;
  const std::int64_t* i64 = nullptr;
  explicit Indices(const torch::Tensor& t) {
    if (t.scalar_type() == torch::kInt32) i32 = t.data_ptr<std::int32_t>();
    else i64 = t.data_ptr<std::int64_t>();
  }
  std::int64_t operator[](std::int64_t j) const { return i32 ? i32[j] : i64[j]; }
};

}  // namespace

DenseAccumulator::DenseAccumulator(std::int64_t numel)
    : numel_(numel), acc_(static_cast<std::size_t>(numel), 0.f),
      touched_(static_cast<std::size_t>(numel), 0) {}

void DenseAccumulator::add(const SparseTensor& s, float w) {
  if (s.numel != numel_)
    throw InternalError("DenseAccumulator: contribution has " + std::to_string(s.numel) +
                " elements, the accumulator " + std::to_string(numel_));
  const auto values = s.values.to(torch::kFloat32).contiguous();
  const float* v = values.data_ptr<float>();
  if (s.dense()) {
    for (std::int64_t i = 0; i < numel_; ++i) {
      acc_[i] += w * v[i];
      if (!touched_[i]) {
        touched_[i] = 1;
        touched_list_.push_back(i);
      }
    }
    return;
  }
  const auto idx_t = s.indices.contiguous();
  const Indices idx(idx_t);
  const std::int64_t nnz = s.nnz();
  for (std::int64_t j = 0; j < nnz; ++j) {
    const std::int64_t i = idx[j];
    acc_[i] += w * v[j];
    if (!touched_[i]) {
      touched_[i] = 1;
      touched_list_.push_back(i);
    }
  }
}

SparseTensor DenseAccumulator::take() {
  std::sort(touched_list_.begin(), touched_list_.end());
  const auto m = static_cast<std::int64_t>(touched_list_.size());
  SparseTensor out;
  out.numel = numel_;
  out.indices = torch::empty({m}, torch::TensorOptions().dtype(index_dtype_for(numel_)));
  out.values = torch::empty({m}, torch::kFloat32);
  float* pv = out.values.data_ptr<float>();
  const bool narrow = out.indices.scalar_type() == torch::kInt32;
  for (std::int64_t j = 0; j < m; ++j) {
    const std::int64_t i = touched_list_[j];
    if (narrow) out.indices.data_ptr<std::int32_t>()[j] = static_cast<std::int32_t>(i);
    else out.indices.data_ptr<std::int64_t>()[j] = i;
    pv[j] = acc_[i];
    acc_[i] = 0.f;
    touched_[i] = 0;
  }
  touched_list_.clear();
  return out;
}

SparseTensor merge_sum(const std::vector<SparseTensor>& parts, const std::vector<float>& weights) {
  if (parts.size() != weights.size()) throw InternalError("merge_sum: one weight per contribution");
  if (parts.empty()) throw InternalError("merge_sum: nothing to sum");
  const std::int64_t numel = parts[0].numel;
  std::vector<torch::Tensor> idx_t, val_t;
  std::vector<Indices> idx;
  std::vector<const float*> val;
  std::int64_t upper = 0;
  for (const auto& p : parts) {
    if (p.numel != numel || p.dense()) throw InternalError("merge_sum: contributions must be sparse, same numel");
    idx_t.push_back(p.indices.contiguous());
    val_t.push_back(p.values.to(torch::kFloat32).contiguous());
    idx.emplace_back(idx_t.back());
    val.push_back(val_t.back().data_ptr<float>());
    upper += p.nnz();
  }
  std::vector<std::int64_t> out_i;
  std::vector<float> out_v;
  out_i.reserve(static_cast<std::size_t>(upper));
  out_v.reserve(static_cast<std::size_t>(upper));
  // Min-heap of (index, client): ties pop in client order, so sums add in client order.
  using Head = std::pair<std::int64_t, std::size_t>;
  std::priority_queue<Head, std::vector<Head>, std::greater<Head>> heap;
  std::vector<std::int64_t> pos(parts.size(), 0);
  for (std::size_t c = 0; c < parts.size(); ++c)
    if (parts[c].nnz() > 0) heap.emplace(idx[c][0], c);
  while (!heap.empty()) {
    const auto [i, c] = heap.top();
    heap.pop();
    const float x = weights[c] * val[c][pos[c]];
    if (!out_i.empty() && out_i.back() == i) out_v.back() += x;
    else {
      out_i.push_back(i);
      out_v.push_back(0.f + x);
    }
    if (++pos[c] < parts[c].nnz()) heap.emplace(idx[c][pos[c]], c);
  }
  SparseTensor out;
  out.numel = numel;
  const auto m = static_cast<std::int64_t>(out_i.size());
  out.indices = torch::from_blob(out_i.data(), {m}, torch::kInt64).to(index_dtype_for(numel));
  out.values = torch::from_blob(out_v.data(), {m}, torch::kFloat32).clone();
  return out;
}

}  // namespace cutlayer::kernels
