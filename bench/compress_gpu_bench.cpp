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
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "cutlayer/kernels/compressor.h"
#include "cutlayer/kernels/cuda.h"

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
    "Usage: cutlayer-bench-compress-gpu [--help]\n"
    "One JSON line per algorithm, size and density on stdout:\n"
    "  {\"bench\":\"compress_gpu\",\"algo\":..,\"numel\":..,\"density\":..,\"ms\":..,\n"
    "   \"speedup_vs_torch_topk\":..,\"speedup_vs_topk_alone\":..,\"fraction_of_stream\":..,\n"
    "   \"selected\":..,\"passes\":..,\"warm\":..,\"in_band\":..}\n"
    "Without a CUDA device (or with a CPU-only LibTorch) it says so and measures nothing.\n";

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::fputs(kUsage, stdout);
      return 0;
    }
    std::fprintf(stderr,
                 "cutlayer-bench-compress-gpu: unknown argument '%s' (it takes none; see --help)\n",
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
