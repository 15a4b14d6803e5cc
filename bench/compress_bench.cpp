// Compression kernels (Google Benchmark): gaussiank / topk / randomk with fused error
// feedback vs torch::topk plus the same error feedback in torch ops, beside a streaming
// copy measured in the same run; and the aggregator's sparse sum (dense accumulator vs
// merge). Prints Google Benchmark's table on stderr and, on stdout, one JSON line per
// compressor and size:
//   {"bench":"compress","algo":..,"numel":..,"density":..,"ms":..,
//    "speedup_vs_torch_topk":..,"fraction_of_stream":..,"selected":..,
//    "passes":..,"warm":..,"in_band":..}   (passes per call, shares of one-pass and in-band calls)
// fraction_of_stream = (bytes the operation must move at least: read gradient and
// residual, write residual = 12 B/element) / time, divided by the bytes/s (reads +
// writes) of a streaming copy of the same size.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <cstdio>
#include <iostream>
#include <map>
#include <random>
#include <string>

#include "cutlayer/kernels/compressor.h"
#include "cutlayer/kernels/sparse_sum.h"

using namespace cutlayer::kernels;

namespace {

const std::vector<std::int64_t> kSizes = {1000000, 10000000, 25000000};
const std::vector<double> kDensities = {0.01, 0.001};

// Four fresh gradients used in turn: each step compresses a new gradient into the
// error-feedback residual, as in training (one fixed gradient would starve the tails).
struct Data {
  std::vector<torch::Tensor> grads;
  torch::Tensor residual;
  std::size_t step = 0;
  const torch::Tensor& next() { return grads[step++ % grads.size()]; }
};
Data make_data(std::int64_t n) {
  torch::manual_seed(n);
  Data d;
  for (int i = 0; i < 4; ++i) d.grads.push_back(torch::randn({n}) * 0.01);
  d.residual = torch::zeros({n});
  return d;
}

void BM_Stream_Copy(benchmark::State& state) {
  const auto n = state.range(0);
  auto src = torch::randn({n}), dst = torch::empty({n});
  for (auto _ : state) {
    dst.copy_(src);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * 8);
}

void BM_Compress_TorchTopkEF(benchmark::State& state) {
  const auto n = state.range(0);
  const double density = state.range(1) / 1e6;
  auto d = make_data(n);
  const auto k = target_k(n, density);
  std::int64_t selected = 0;
  for (auto _ : state) {
    d.residual.add_(d.next());
    auto idx = std::get<1>(d.residual.abs().topk(k, 0, true, false));
    auto vals = d.residual.index_select(0, idx);
    d.residual.index_fill_(0, idx, 0.f);
    selected = vals.numel();
    benchmark::DoNotOptimize(vals.data_ptr());
  }
  state.counters["selected"] = static_cast<double>(selected);
  state.SetBytesProcessed(state.iterations() * n * 12);
}

void BM_Compress(benchmark::State& state, const std::string& algo) {
  const auto n = state.range(0);
  const double density = state.range(1) / 1e6;
  auto d = make_data(n);
  auto c = make_compressor(algo);
  const double k = static_cast<double>(target_k(n, density));
  std::int64_t selected = 0, calls = 0, passes = 0, warm = 0, in_band = 0;
  for (auto _ : state) {
    auto s = c->compress(d.next(), d.residual, density);
    selected = s.nnz();
    ++calls;
    passes += c->last_stats().passes;
    warm += c->last_stats().passes == 1;
    in_band += selected >= 2 * k / 3 && selected <= 4 * k / 3;
    benchmark::DoNotOptimize(s.values.data_ptr());
  }
  state.counters["selected"] = static_cast<double>(selected);
  // Per call, over the timed calls: mean passes, share of one-pass calls, share in band.
  state.counters["passes"] = static_cast<double>(passes) / std::max<std::int64_t>(calls, 1);
  state.counters["warm"] = static_cast<double>(warm) / std::max<std::int64_t>(calls, 1);
  state.counters["in_band"] = static_cast<double>(in_band) / std::max<std::int64_t>(calls, 1);
  state.SetBytesProcessed(state.iterations() * n * 12);
}

std::vector<SparseTensor> contributions(std::int64_t n, double density, int clients) {
  std::vector<SparseTensor> parts;
  for (int c = 0; c < clients; ++c) {
    auto g = torch::randn({n});
    auto r = torch::zeros({n});
    parts.push_back(make_compressor("topk")->compress(g, r, density));
  }
  return parts;
}

void BM_SparseSum_DenseAccumulator(benchmark::State& state) {
  const auto parts = contributions(state.range(0), state.range(1) / 1e6, static_cast<int>(state.range(2)));
  DenseAccumulator acc(state.range(0));
  for (auto _ : state) {
    for (const auto& p : parts) acc.add(p, 1.f / parts.size());
    auto s = acc.take();
    benchmark::DoNotOptimize(s.values.data_ptr());
  }
}

void BM_SparseSum_Merge(benchmark::State& state) {
  const auto parts = contributions(state.range(0), state.range(1) / 1e6, static_cast<int>(state.range(2)));
  const std::vector<float> w(parts.size(), 1.f / parts.size());
  for (auto _ : state) {
    auto s = merge_sum(parts, w);
    benchmark::DoNotOptimize(s.values.data_ptr());
  }
}

// Collects runs for the JSON lines.
class Collector : public benchmark::ConsoleReporter {
 public:
  struct Row {
    double seconds = 0;  // per iteration
    double selected = 0;
    double passes = -1, warm = -1, in_band = -1;  // -1: not measured (the baselines)
  };
  std::map<std::string, Row> rows;
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& r : runs) {
      Row row;
      row.seconds = r.GetAdjustedRealTime() / 1e9 *
                    (r.time_unit == benchmark::kMillisecond ? 1e6 : r.time_unit == benchmark::kMicrosecond ? 1e3 : 1);
      auto counter = [&](const char* name, double& into) {
        auto it = r.counters.find(name);
        if (it != r.counters.end()) into = it->second;
      };
      counter("selected", row.selected);
      counter("passes", row.passes);
      counter("warm", row.warm);
      counter("in_band", row.in_band);
      std::string name = r.benchmark_name();
      const auto cut = name.find("/min_time:");
      if (cut != std::string::npos) name.resize(cut);
      rows[name] = row;
    }
    ConsoleReporter::ReportRuns(runs);
  }
};

}  // namespace

int main(int argc, char** argv) {
  torch::set_num_threads(2);  // the same thread budget for every contender
  const std::vector<std::string> algos = {"gaussiank", "sampledk", "topk", "randomk"};
  for (auto n : kSizes) {
    benchmark::RegisterBenchmark("BM_Stream_Copy", BM_Stream_Copy)->Arg(n)->Unit(benchmark::kMillisecond);
    for (double d : kDensities) {
      const auto dd = static_cast<std::int64_t>(d * 1e6);
      benchmark::RegisterBenchmark("BM_Compress_TorchTopkEF", BM_Compress_TorchTopkEF)
          ->Args({n, dd})->Unit(benchmark::kMillisecond)->MinTime(0.5);
      for (const auto& a : algos)
        benchmark::RegisterBenchmark(("BM_Compress_" + a).c_str(), BM_Compress, a)
            ->Args({n, dd})->Unit(benchmark::kMillisecond)->MinTime(0.5);
    }
  }
  for (int clients : {3, 8})
    for (double d : kDensities) {
      const auto dd = static_cast<std::int64_t>(d * 1e6);
      benchmark::RegisterBenchmark("BM_SparseSum_DenseAccumulator", BM_SparseSum_DenseAccumulator)
          ->Args({10000000, dd, clients})->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark("BM_SparseSum_Merge", BM_SparseSum_Merge)
          ->Args({10000000, dd, clients})->Unit(benchmark::kMillisecond);
    }
  benchmark::Initialize(&argc, argv);
  Collector collector;
  collector.SetOutputStream(&std::cerr);  // the table on stderr, JSON lines on stdout
  collector.SetErrorStream(&std::cerr);
  benchmark::RunSpecifiedBenchmarks(&collector);

  auto find = [&](const std::string& name) -> const Collector::Row* {
    auto it = collector.rows.find(name);
    return it == collector.rows.end() ? nullptr : &it->second;
  };
  for (auto n : kSizes) {
    const auto* copy = find("BM_Stream_Copy/" + std::to_string(n));
    for (double d : kDensities) {
      const std::string args = "/" + std::to_string(n) + "/" + std::to_string(static_cast<std::int64_t>(d * 1e6));
      const auto* base = find("BM_Compress_TorchTopkEF" + args);
      std::vector<std::string> names = {"torch-topk"};
      names.insert(names.end(), algos.begin(), algos.end());
      for (const auto& a : names) {
        const auto* row = find((a == "torch-topk" ? std::string("BM_Compress_TorchTopkEF") : "BM_Compress_" + a) + args);
        if (!row || !base || !copy) continue;
        const double stream_bps = 8.0 * n / copy->seconds;
        const double op_bps = 12.0 * n / row->seconds;
        std::string extra;
        if (row->passes >= 0) {
          char buf[128];
          std::snprintf(buf, sizeof buf, ",\"passes\":%.2f,\"warm\":%.2f,\"in_band\":%.2f",
                        row->passes, row->warm, row->in_band);
          extra = buf;
        }
        std::printf(
            "{\"bench\":\"compress\",\"algo\":\"%s\",\"numel\":%lld,\"density\":%g,\"ms\":%.3f,"
            "\"speedup_vs_torch_topk\":%.2f,\"fraction_of_stream\":%.3f,\"selected\":%.0f%s}\n",
            a.c_str(), static_cast<long long>(n), d, row->seconds * 1e3,
            base->seconds / row->seconds, op_bps / stream_bps, row->selected, extra.c_str());
      }
    }
  }
  for (int clients : {3, 8})
    for (double d : kDensities) {
      const std::string args = "/10000000/" + std::to_string(static_cast<std::int64_t>(d * 1e6)) + "/" +
                               std::to_string(clients);
      const auto* acc = find("BM_SparseSum_DenseAccumulator" + args);
      const auto* merge = find("BM_SparseSum_Merge" + args);
      if (acc && merge)
        std::printf("{\"bench\":\"sparse_sum\",\"numel\":10000000,\"density\":%g,\"clients\":%d,"
                    "\"dense_accumulator_ms\":%.3f,\"merge_ms\":%.3f,\"merge_speedup\":%.2f}\n",
                    d, clients, acc->seconds * 1e3, merge->seconds * 1e3, acc->seconds / merge->seconds);
    }
  return 0;
}
