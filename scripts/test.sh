#!/usr/bin/env bash
# The test command: set-up, build, then every test (unit, e2e; gpu tests skip without a
# GPU). Ends with CTest's summary line. Extra arguments go to CTest, e.g.
# scripts/test.sh -L unit (the unit tests only) or -R Sparse (by name).
#
# scripts/test.sh --sanitize [CTest arguments]: the same tests (unit and e2e) built with
# GCC's AddressSanitizer + UndefinedBehaviorSanitizer in build-sanitize/ (the benchmarks
# and the CUDA kernels are left out). A sanitizer report fails the test that triggered it.
# LibTorch, OpenSSL and libzmq come from Debian uninstrumented: ASan still sees every
# allocation they make (it replaces malloc), so an overflow in cutlayer's code over a
# LibTorch buffer is caught, but not one inside LibTorch itself. Leak checking stays on;
# LeakSanitizer's suppressions (written to build-sanitize/lsan.supp) only drop what
# LibTorch, OpenBLAS and libgomp allocate once per process and never free (their thread
# pools and registries): these are not leaks of cutlayer's. The build takes about
# two hours of CPU and the tests several times their usual time, which would push CI past
# its ~20 minutes, so it is not part of .ci/run: run it by hand before a release or after
# touching a decoder (scripts/fuzz.sh fuzzes the decoders themselves).
set -euo pipefail
[[ "${1:-}" =~ ^(-h|--help)$ ]] && { sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$0"; exit 0; }
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--sanitize" ]]; then
  shift
  bash scripts/install-deps.sh
  flags="-fsanitize=address,undefined -fno-omit-frame-pointer"
  cmake -S . -B build-sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCUTLAYER_BUILD_BENCH=OFF -DCUTLAYER_CUDA=OFF \
    -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" \
    -DCMAKE_SHARED_LINKER_FLAGS="$flags" >build-sanitize-configure.log 2>&1 ||
    { cat build-sanitize-configure.log; exit 1; }
  rm -f build-sanitize-configure.log
  cmake --build build-sanitize --parallel "$(nproc)"
  cat >build-sanitize/lsan.supp <<'EOF'
# One-time allocations of uninstrumented libraries (see scripts/test.sh --help).
leak:libtorch_cpu.so
leak:libc10.so
leak:libgomp.so
leak:libopenblas
EOF
  # halt_on_error: a UBSan finding ends the process (and fails its test) instead of
  # scrolling by. detect_stack_use_after_return stays off: LibTorch's autograd threads
  # keep pointers into stacks that the fake-stack allocator would flag.
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1:check_initialization_order=1:${ASAN_OPTIONS:-}"
  export LSAN_OPTIONS="suppressions=$PWD/build-sanitize/lsan.supp:print_suppressions=0:${LSAN_OPTIONS:-}"
  export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:${UBSAN_OPTIONS:-}"
  cd build-sanitize
  # Everything is several times slower under ASan: a longer per-test limit.
  exec ctest --output-on-failure --parallel 2 --timeout 1800 "$@"
fi

bash scripts/build.sh
cd build
ctest --output-on-failure --parallel 2 --timeout 600 "$@"
