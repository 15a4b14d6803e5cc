// GPU compression benchmark (CUDA LibTorch builds): gaussiank + error feedback on the
// device vs torch::topk + the same error feedback (and vs torch.topk alone), and a
// device-to-device copy as the streaming ceiling, all in one run. Timed with CUDA events after a warm-up, median of
// repeats; four gradients rotate through the residual. One JSON line per size:
//   {"bench":"compress_gpu","algo":..,"numel":..,"density":..,"ms":..,
//    "speedup_vs_torch_topk":..,"fraction_of_stream":..,"selected":..}
#include <ATen/cuda/CUDAContext.h>
#include <cuda_runtime.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "cutlayer/kernels/compressor.h"
#include "cutlayer/kernels/cuda.h"
#include "compress_common.h"     // kernels/src: candidate_cap, for --breakdown
#include "cuda/gaussiank_cuda.h"  // kernels/src: the raw entry points, for --breakdown

using namespace cutlayer::kernels;

namespace {

double median_ms(const std::function<void()>& fn, int warmup = 3, int repeats = 21) {
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  std::vector<double> t;
  auto stream = at::cuda::getCurrentCUDAStream().stream();
  for (int i = 0; i < repeats; ++i) {
    cudaEventRecord(a, stream);
    fn();
    cudaEventRecord(b, stream);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

constexpr const char* kUsage =
    "cutlayer-bench-compress-gpu: gaussiank + error feedback on the GPU vs torch::topk + the\n"
    "same error feedback and vs torch.topk alone, with a device-to-device copy as the streaming\n"
    "ceiling, all in one run (CUDA events, median of 21 after a warm-up). Sizes 1M, 10M, 25M\n"
    "fp32 at density 0.01 and 0.001.\n"
    "Usage: cutlayer-bench-compress-gpu [--help] [--breakdown]\n"
    "  --breakdown: where a warm call's time goes at 25M / 0.001 (two JSON lines,\n"
    "  compress_gpu_graphs and compress_gpu_breakdown), instead of the sizes.\n"
    "One JSON line per algorithm, size and density on stdout:\n"
    "  {\"bench\":\"compress_gpu\",\"algo\":..,\"numel\":..,\"density\":..,\"ms\":..,\n"
    "   \"speedup_vs_torch_topk\":..,\"speedup_vs_topk_alone\":..,\"fraction_of_stream\":..,\n"
    "   \"selected\":..,\"passes\":..,\"warm\":..,\"in_band\":..}\n"
    "Without a CUDA device (or with a CPU-only LibTorch) it says so and measures nothing.\n";

// The breakdown's warm call on a side stream, by the host's clock: launched one by one,
// and with the selection (or the whole call) replayed as a CUDA graph captured once. One
// JSON line, compress_gpu_graphs.
void graph_breakdown(std::int64_t n, std::int64_t k, std::int64_t cap,
                     const cuda::ThresholdBins& bins, float* rp, float* g, float* neg,
                     cuda::FirstPassSummary* dsum, unsigned int* cand_idx, float* cand_val,
                     unsigned int* out_idx, float* out_val, void* scratch,
                     std::size_t scratch_bytes) {
  cudaStream_t cs;
  cudaStreamCreateWithFlags(&cs, cudaStreamNonBlocking);
  cuda::FirstPassSummary hs;
  std::size_t step = 0;
  auto gp = [&] { return step++ % 2 ? neg : g; };
  auto select = [&] {
    cuda::warm_select(dsum, bins, k, cap, cand_idx, cand_val, n, rp, rp, out_idx, out_val,
                      scratch, scratch_bytes, cs);
  };
  auto host_ms = [](const std::function<void()>& fn) {
    std::vector<double> t;
    for (int i = 0; i < 24; ++i) {
      const auto a = std::chrono::steady_clock::now();
      fn();
      t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  };
  std::vector<double> enqueue;
  const double side_ms = host_ms([&] {
    cuda::queue_first_pass(rp, gp(), n, &bins, cand_idx, cand_val, cap, dsum, cs);
    const auto a = std::chrono::steady_clock::now();
    select();
    enqueue.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - a).count());
    cuda::read_summary(dsum, &hs, cs);
  });
  std::sort(enqueue.begin(), enqueue.end());
  auto capture = [&](const std::function<void()>& fn) {
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    cudaStreamBeginCapture(cs, cudaStreamCaptureModeThreadLocal);
    fn();
    if (cudaStreamEndCapture(cs, &graph) != cudaSuccess ||
        cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) {
      std::fprintf(stderr, "breakdown: graph capture failed: %s\n", cudaGetErrorString(cudaGetLastError()));
      exec = nullptr;
    }
    if (graph != nullptr) cudaGraphDestroy(graph);
    return exec;
  };
  double graph_select_ms = -1, graph_all_ms = -1;
  unsigned graph_usable = 0, graph_all_usable = 0;
  cudaGraphExec_t select_graph = capture(select);
  if (select_graph != nullptr) {
    graph_select_ms = host_ms([&] {
      cuda::queue_first_pass(rp, gp(), n, &bins, cand_idx, cand_val, cap, dsum, cs);
      cudaGraphLaunch(select_graph, cs);
      cuda::read_summary(dsum, &hs, cs);
    });
    graph_usable = hs.usable;
    cudaGraphExecDestroy(select_graph);
  }
  cudaGraphExec_t all[2];
  for (int i = 0; i < 2; ++i) {
    float* gi = i ? neg : g;
    all[i] = capture([&] {
      cuda::queue_first_pass(rp, gi, n, &bins, cand_idx, cand_val, cap, dsum, cs);
      select();
    });
  }
  if (all[0] != nullptr && all[1] != nullptr) {
    graph_all_ms = host_ms([&] {
      cudaGraphLaunch(all[step++ % 2], cs);
      cuda::read_summary(dsum, &hs, cs);
    });
    graph_all_usable = hs.usable;
  }
  for (auto* exec : all)
    if (exec != nullptr) cudaGraphExecDestroy(exec);
  cudaStreamDestroy(cs);
  std::printf("{\"bench\":\"compress_gpu_graphs\",\"side_stream_ms\":%.4f,\"select_enqueue_us\":%.1f,"
              "\"graph_select_ms\":%.4f,\"graph_select_usable\":%u,\"graph_all_ms\":%.4f,"
              "\"graph_all_usable\":%u}\n",
              side_ms, enqueue[enqueue.size() / 2], graph_select_ms, graph_usable, graph_all_ms,
              graph_all_usable);
}

// Where a warm gaussiank call's time goes at 25M / 0.001: the raw device work in steps
// (the wait alone, the first pass without and with bins, the pass plus the on-device
// selection; graph_breakdown for the same replayed as CUDA graphs) beside the whole call
// and the streaming floors. The gradient alternates sign so that r += g keeps the residual's
// scale (and the bins' candidates) steady.
void breakdown() {
  const std::int64_t n = 25000000;
  const double density = 0.001;
  const auto dev = torch::TensorOptions().device(torch::kCUDA);
  const std::int64_t k = target_k(n, density);
  auto g = torch::randn({n}, dev) * 0.01, neg = -g;
  auto r = torch::zeros({n}, dev), src = torch::randn({n}, dev), dst = torch::empty({n}, dev);
  auto c = make_compressor("gaussiank");
  std::size_t step = 0;
  for (int i = 0; i < 8; ++i) c->compress(step++ % 2 ? neg : g, r, density);
  const double t = c->last_stats().threshold;
  auto stream = at::cuda::getCurrentCUDAStream().stream();
  const std::int64_t cap = cutlayer::kernels::detail::candidate_cap(k), room = cuda::warm_room(k);
  const std::size_t scratch_bytes = cuda::warm_select_scratch_bytes(n);
  auto work = torch::empty({static_cast<std::int64_t>(sizeof(cuda::FirstPassSummary)) + 16 * cap +
                                16 * room + static_cast<std::int64_t>(scratch_bytes) + 4096},
                           dev.dtype(torch::kUInt8));
  char* base = static_cast<char*>(work.data_ptr());
  auto* dsum = reinterpret_cast<cuda::FirstPassSummary*>(base);
  static_assert(sizeof(cuda::FirstPassSummary) <= 2048, "the summary's slot below");
  char* p = base + 2048;
  auto take = [&](std::int64_t bytes) { char* q = p; p += (bytes + 255) / 256 * 256; return q; };
  auto* cand_idx = reinterpret_cast<unsigned int*>(take(4 * cap));
  auto* cand_val = reinterpret_cast<float*>(take(4 * cap));
  auto* out_idx = reinterpret_cast<unsigned int*>(take(4 * room));
  auto* out_val = reinterpret_cast<float*>(take(4 * room));
  void* scratch = take(static_cast<std::int64_t>(scratch_bytes));
  const auto bins = cutlayer::kernels::detail::make_threshold_bins(static_cast<float>(0.9 * t));
  cuda::FirstPassSummary hs;
  float* rp = r.data_ptr<float>();
  auto gp = [&] { return (step++ % 2 ? neg : g).data_ptr<float>(); };
  const double wait_ms = median_ms([&] { cuda::read_summary(dsum, &hs, stream); });
  const double copy_ms = median_ms([&] { dst.copy_(src); });
  const double add_ms = median_ms([&] { r.add_(step++ % 2 ? neg : g); });
  const double plain_ms = median_ms([&] {
    cuda::first_pass(rp, gp(), n, nullptr, nullptr, nullptr, 0, dsum, &hs, stream);
  });
  const double binned_ms = median_ms([&] {
    cuda::first_pass(rp, gp(), n, &bins, cand_idx, cand_val, cap, dsum, &hs, stream);
  });
  const double select_ms = median_ms([&] {
    cuda::queue_first_pass(rp, gp(), n, &bins, cand_idx, cand_val, cap, dsum, stream);
    cuda::warm_select(dsum, bins, k, cap, cand_idx, cand_val, n, rp, rp, out_idx, out_val,
                      scratch, scratch_bytes, stream);
    cuda::read_summary(dsum, &hs, stream);
  });
  const unsigned usable = hs.usable;
  graph_breakdown(n, k, cap, bins, rp, g.data_ptr<float>(), neg.data_ptr<float>(), dsum, cand_idx,
                  cand_val, out_idx, out_val, scratch, scratch_bytes);
  const double call_ms = median_ms([&] { c->compress(step++ % 2 ? neg : g, r, density); });
  std::printf("{\"bench\":\"compress_gpu_breakdown\",\"numel\":%lld,\"density\":%g,"
              "\"wait_ms\":%.4f,\"copy_ms\":%.4f,\"ef_add_ms\":%.4f,\"first_pass_ms\":%.4f,"
              "\"binned_pass_ms\":%.4f,\"pass_and_select_ms\":%.4f,\"select_usable\":%u,"
              "\"call_ms\":%.4f,\"call_passes\":%d,\"above\":%llu}\n",
              static_cast<long long>(n), density, wait_ms, copy_ms, add_ms, plain_ms, binned_ms,
              select_ms, usable, call_ms, c->last_stats().passes,
              static_cast<unsigned long long>(hs.above));
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (std::strcmp(argv[i], "--breakdown") == 0) {
      if (!cuda_available()) return 0;
      breakdown();
      return 0;
    }
    std::fprintf(stderr,
                 "cutlayer-bench-compress-gpu: unknown argument '%s' (see --help)\n",
                 argv[i]);
    return 2;
  }
  if (!cuda_available()) {
    std::fprintf(stderr, "no CUDA device or no CUDA LibTorch: nothing to measure\n");
    return 0;
  }
  const auto dev = torch::TensorOptions().device(torch::kCUDA);
  for (std::int64_t n : {1000000LL, 10000000LL, 25000000LL}) {
    std::vector<torch::Tensor> grads;
    for (int i = 0; i < 4; ++i) grads.push_back(torch::randn({n}, dev) * 0.01);
    auto src = torch::randn({n}, dev), dst = torch::empty({n}, dev);
    const double copy_ms = median_ms([&] { dst.copy_(src); });
    const double stream_bps = 8.0 * n / (copy_ms / 1e3);
    for (double density : {0.01, 0.001}) {
      const auto k = target_k(n, density);
      auto residual = torch::zeros({n}, dev);
      std::size_t step = 0;
      std::int64_t selected = 0;
      const double topk_ms = median_ms([&] {
        residual.add_(grads[step++ % 4]);
        auto idx = std::get<1>(residual.abs().topk(k, 0, true, false));
        auto vals = residual.index_select(0, idx);
        residual.index_fill_(0, idx, 0.f);
        selected = vals.numel();
      });
      // torch.topk alone (by magnitude, on the same residual), without the error feedback
      // around it: the stricter reading of the baseline.
      const double alone_ms = median_ms([&] {
        auto idx = std::get<1>(residual.abs().topk(k, 0, true, false));
        selected = idx.numel();
      });
      std::printf("{\"bench\":\"compress_gpu\",\"algo\":\"torch-topk\",\"numel\":%lld,\"density\":%g,"
                  "\"ms\":%.3f,\"speedup_vs_torch_topk\":1.00,\"fraction_of_stream\":%.3f,\"selected\":%lld,"
                  "\"topk_alone_ms\":%.3f}\n",
                  static_cast<long long>(n), density, topk_ms, 12.0 * n / (topk_ms / 1e3) / stream_bps,
                  static_cast<long long>(selected), alone_ms);
      // gaussiank-cold: every call stands alone (no threshold reuse): count passes and a
      // compaction pass, the paper's form; gaussiank: the warm one-pass path.
      for (const std::string label : {"gaussiank", "gaussiank-cold", "topk"}) {
        CompressorOptions opts;
        opts.reuse_threshold = label != "gaussiank-cold";
        auto c = make_compressor(label == "topk" ? "topk" : "gaussiank", opts);
        const char* name = label.c_str();
        residual.zero_();
        step = 0;
        int calls = 0, passes = 0, one_pass = 0, in_band = 0;
        const double ms = median_ms([&] {
          auto s = c->compress(grads[step++ % 4], residual, density);
          selected = s.nnz();
          ++calls;
          passes += c->last_stats().passes;
          one_pass += c->last_stats().passes == 1;
          in_band += 3 * selected >= 2 * k && 3 * selected <= 4 * k;
        });
        std::printf("{\"bench\":\"compress_gpu\",\"algo\":\"%s\",\"numel\":%lld,\"density\":%g,\"ms\":%.3f,"
                    "\"speedup_vs_torch_topk\":%.2f,\"speedup_vs_topk_alone\":%.2f,"
                    "\"fraction_of_stream\":%.3f,\"selected\":%lld,"
                    "\"passes\":%.2f,\"warm\":%.2f,\"in_band\":%.2f}\n",
                    name, static_cast<long long>(n), density, ms, topk_ms / ms, alone_ms / ms,
                    12.0 * n / (ms / 1e3) / stream_bps, static_cast<long long>(selected),
                    static_cast<double>(passes) / calls, static_cast<double>(one_pass) / calls,
                    static_cast<double>(in_band) / calls);
      }
    }
  }
  return 0;
}
