#!/usr/bin/env bash
# On a GPU machine (PyTorch with CUDA, nvcc; no ZeroMQ/cereal/spdlog/GoogleTest needed):
# builds the kernels alone against that PyTorch's LibTorch, runs the kernels' tests (the
# gpu-labelled ones among them) and the GPU benchmark. Results go to $OUT (default
# ./gpu-out): gpu.txt, configure.log, build.log, gpu-tests.log, compress_gpu.jsonl,
# sanitizer.log.
# Before the device call, run scripts/gpu-prepare.sh here and carry ".gpu-deps": the
# lent machine has no GoogleTest, and without it no test builds there.
set -euo pipefail
[[ "${1:-}" =~ ^(-h|--help)$ ]] && { sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$0"; exit 0; }
cd "$(dirname "$0")/.."
out=${OUT:-gpu-out}
mkdir -p "$out"
py=$(command -v python3)
prefix=$("$py" -c 'import torch;print(torch.utils.cmake_prefix_path)')
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv >"$out/gpu.txt" 2>&1 || true
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
gtest=()
if [ -f .gpu-deps/googletest/CMakeLists.txt ]; then
  gtest=(-DCUTLAYER_GTEST_SOURCE="$PWD/.gpu-deps/googletest")
else
  echo "gpu-check: no .gpu-deps/googletest (run scripts/gpu-prepare.sh and carry .gpu-deps); tests may not build" >&2
fi
cmake -S . -B build-gpu "${generator[@]}" -DCUTLAYER_KERNELS_ONLY=ON -DCUTLAYER_CUDA=ON \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" -DCUTLAYER_BUILD_BENCH=ON "${gtest[@]}" \
  >"$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; exit 1; }
cmake --build build-gpu --parallel "$(nproc)" >"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
(cd build-gpu && ctest -V --timeout 300) >"$out/gpu-tests.log" 2>&1 || true
grep -E "Skipped|Failed|tests passed|measure" "$out/gpu-tests.log" | tail -20 || tail -5 "$out/gpu-tests.log"
if [ -x build-gpu/bin/cutlayer-bench-compress-gpu ]; then
  build-gpu/bin/cutlayer-bench-compress-gpu | tee "$out/compress_gpu.jsonl"
fi
# Last, so that the figures above come back even if time runs short: the raw kernels'
# tests under compute-sanitizer's memcheck (out-of-bounds and misaligned accesses).
if command -v compute-sanitizer >/dev/null && [ -x build-gpu/bin/cutlayer_gpu_tests ]; then
  timeout 180 compute-sanitizer --tool memcheck --error-exitcode 3 \
    build-gpu/bin/cutlayer_gpu_tests --gtest_filter='CudaGaussianK.*' >"$out/sanitizer.log" 2>&1 &&
    echo "gpu-check: memcheck clean" || echo "gpu-check: memcheck rc=$? (see sanitizer.log)"
  tail -3 "$out/sanitizer.log"
fi
