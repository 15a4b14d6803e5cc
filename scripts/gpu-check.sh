#!/usr/bin/env bash
# On a GPU machine (PyTorch with CUDA, nvcc; no ZeroMQ/cereal/spdlog/GoogleTest needed):
# builds the kernels alone against that PyTorch's LibTorch, runs the gpu tests, the GPU
# benchmark, the gpu tests under compute-sanitizer's memcheck, then the kernels' CPU tests.
# Each step's time limit comes out of GPU_CHECK_BUDGET seconds for the whole run (default
# 480; a step with too little left is skipped), and a failed step does not stop the next,
# so that one device call brings back everything it can. Exits non-zero when any step
# failed or was skipped. Results go to $OUT (default ./gpu-out): gpu.txt, configure.log,
# build.log, gpu-tests.log, compress_gpu.jsonl (JSON lines only), bench.err, sanitizer.log,
# cpu-tests.log.
# Before the device call, run scripts/gpu-prepare.sh here and carry ".gpu-deps": the
# lent machine has no GoogleTest, and without it no test builds there.
set -uo pipefail
[[ "${1:-}" =~ ^(-h|--help)$ ]] && { sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$0"; exit 0; }
cd "$(dirname "$0")/.."
out=${OUT:-gpu-out}
mkdir -p "$out"
start=$SECONDS
budget=${GPU_CHECK_BUDGET:-480}
fail=0
stamp() { echo "gpu-check: [$((SECONDS - start)) s] $*"; }
left() { echo $((budget - (SECONDS - start))); }
# limit CAP RESERVE: seconds for the next step, at most CAP, leaving RESERVE for the rest.
limit() { local l=$(($(left) - $2)); l=$((l < $1 ? l : $1)); echo $((l < 1 ? 1 : l)); }
# step NAME RC: records a failed step.
step() { stamp "$1 rc $2"; [ "$2" -eq 0 ] || fail=1; }
py=$(command -v python3)
prefix=$("$py" -c 'import torch;print(torch.utils.cmake_prefix_path)') || { echo "gpu-check: no python3 torch" >&2; exit 1; }
{
  nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,driver_version --format=csv
  "$py" -c 'import torch;print("torch", torch.__version__, "cuda", torch.version.cuda)'
  nvcc --version | tail -1
} >"$out/gpu.txt" 2>&1
cat "$out/gpu.txt"
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
  >"$out/configure.log" 2>&1 || { tail -40 "$out/configure.log"; exit 1; }
stamp configured
# Keep going past a failing target: whatever builds is still run below.
keep=(-- -k)
[ ${#generator[@]} -gt 0 ] && keep=(-- -k 0)
timeout "$(limit 300 60)" cmake --build build-gpu --parallel "$(nproc)" "${keep[@]}" >"$out/build.log" 2>&1
rc=$?
step build $rc
[ $rc -eq 0 ] || grep -E -B2 -A6 "error|Error" "$out/build.log" | head -120
if [ -x build-gpu/bin/cutlayer_gpu_tests ]; then
  timeout "$(limit 120 40)" build-gpu/bin/cutlayer_gpu_tests >"$out/gpu-tests.log" 2>&1
  step "gpu tests" $?
  grep -E "^\[  (FAILED|PASSED|SKIPPED)|Failure|measure|error" "$out/gpu-tests.log" | head -60
else
  step "gpu tests (not built)" 1
fi
if [ -x build-gpu/bin/cutlayer-bench-compress-gpu ]; then
  timeout "$(limit 150 30)" build-gpu/bin/cutlayer-bench-compress-gpu 2>"$out/bench.err" |
    tee "$out/compress_gpu.jsonl"
  step "gpu bench" "${PIPESTATUS[0]}"
  timeout "$(limit 60 20)" build-gpu/bin/cutlayer-bench-compress-gpu --breakdown 2>>"$out/bench.err" |
    tee -a "$out/compress_gpu.jsonl"
  step "gpu bench --breakdown" "${PIPESTATUS[0]}"
else
  step "gpu bench (not built)" 1
fi
# Then, while the budget lasts: the raw kernels and the compressor's CUDA path under
# memcheck (out-of-bounds and misaligned accesses), and the kernels' CPU tests.
if command -v compute-sanitizer >/dev/null && [ -x build-gpu/bin/cutlayer_gpu_tests ] &&
  [ "$(limit 600 60)" -gt 30 ]; then
  timeout "$(limit 600 60)" compute-sanitizer --tool memcheck --error-exitcode 3 \
    build-gpu/bin/cutlayer_gpu_tests >"$out/sanitizer.log" 2>&1
  step "memcheck (0: clean)" $?
  grep -E "ERROR SUMMARY|Invalid|^\[  (FAILED|PASSED)" "$out/sanitizer.log" | head -20
else
  step "memcheck skipped (no compute-sanitizer or no time)" 1
fi
# Last: the kernels' CPU tests on this machine's LibTorch (the same sources CI runs).
if [ "$(left)" -gt 20 ]; then
  (cd build-gpu && timeout "$(left)" ctest --parallel "$(nproc)" -LE gpu --timeout 100) >"$out/cpu-tests.log" 2>&1
  step "cpu tests" $?
  grep -E "tests passed|Failed|\*\*\*" "$out/cpu-tests.log" | head -20
else
  step "cpu tests skipped (no time left)" 1
fi
exit $fail
