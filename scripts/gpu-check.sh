#!/usr/bin/env bash
# On a GPU machine (PyTorch with CUDA, nvcc; no ZeroMQ/cereal/spdlog needed): builds the
# kernels alone against that PyTorch's LibTorch, runs the gpu-labelled tests and the GPU
# benchmark. Results go to $OUT (default ./gpu-out): gpu-tests.log, compress_gpu.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-out}
mkdir -p "$out"
py=$(command -v python3)
prefix=$("$py" -c 'import torch;print(torch.utils.cmake_prefix_path)')
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv >"$out/gpu.txt" 2>&1 || true
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S . -B build-gpu "${generator[@]}" -DCUTLAYER_KERNELS_ONLY=ON -DCUTLAYER_CUDA=ON \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" -DCUTLAYER_BUILD_BENCH=ON \
  >"$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; exit 1; }
cmake --build build-gpu --parallel "$(nproc)" >"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
(cd build-gpu && ctest -L gpu --output-on-failure) >"$out/gpu-tests.log" 2>&1 || true
tail -5 "$out/gpu-tests.log"
if [ -x build-gpu/bin/cutlayer-bench-compress-gpu ]; then
  build-gpu/bin/cutlayer-bench-compress-gpu | tee "$out/compress_gpu.jsonl"
fi
