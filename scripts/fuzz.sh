#!/usr/bin/env bash
# Fuzzes the decoders with libFuzzer under ASan + UBSan: scripts/fuzz.sh [--seconds N] [TARGET]
# Installs clang when missing (scripts/install-deps.sh --fuzz), configures build-fuzz/ with
# clang and -DCUTLAYER_FUZZ=ON, builds the targets (tests/fuzz/<target>_fuzz.cpp), then runs
# each target, or only TARGET, for N seconds (default 600) one after the other, starting
# from its seed corpus (written by the real encoders, build-fuzz/seeds/<target>/) in build-fuzz/work/<target>/
# with its dictionary (tests/fuzz/<target>.dict) when there is one. libFuzzer stops at a
# crash (or an out-of-memory or a timeout: all count as crashes here); it is started again
# on the grown corpus until the time is spent, so one bug does not end the run. Prints a
# line per target: executions/s, total executions, crashes; exits non-zero when any
# target crashed. Targets: wire_decode sealed_open sparse_wire sync_messages
# config keys allow_list.
#   --seconds N   fuzzing time per target (default 600)
#   --list        print the targets and exit
#   --no-build    run what build-fuzz/ holds
# A crash's input is left in build-fuzz/work/<target>/artifacts/ (crash-*, oom-*, timeout-*;
# slow-unit-* only notes a slow input and does not fail the run)
# with libFuzzer's log beside it (fuzz.log). Reproduce with
# build-fuzz/fuzz/<target>_fuzz <input>; once it is fixed, copy the input to
# tests/fuzz/regressions/<target>/ so cutlayer_fuzz_regressions replays it in every test
# run. FUZZ_ARGS adds libFuzzer flags (e.g. FUZZ_ARGS=-max_len=65536). Run it at a low
# priority on a shared machine: nice -n 19 scripts/fuzz.sh.
set -euo pipefail
[[ "${1:-}" =~ ^(-h|--help)$ ]] && { sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$0"; exit 0; }
cd "$(dirname "$0")/.."

TARGETS=(wire_decode sealed_open sparse_wire cut_decode sync_messages config keys allow_list psi_rounds vertical_join)
seconds=600
build=1
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="${2:?--seconds needs a number}"; shift 2 ;;
    --seconds=*) seconds="${1#*=}"; shift ;;
    --list) printf '%s\n' "${TARGETS[@]}"; exit 0 ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
    -*) echo "fuzz: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *) only="$1"; shift ;;
  esac
done
[[ "$seconds" =~ ^[0-9]+$ ]] && [ "$seconds" -gt 0 ] || { echo "fuzz: --seconds takes a positive number" >&2; exit 2; }
if [ -n "$only" ]; then
  [[ " ${TARGETS[*]} " == *" $only "* ]] || { echo "fuzz: no target '$only' (targets: ${TARGETS[*]})" >&2; exit 2; }
  TARGETS=("$only")
fi

if [ "$build" -eq 1 ]; then
  bash scripts/install-deps.sh --fuzz
  # Tests, benchmarks and CUDA off: only the libraries the targets need are built.
  cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_COMPILER=clang++ -DCUTLAYER_FUZZ=ON -DCUTLAYER_BUILD_TESTS=OFF \
    -DCUTLAYER_BUILD_BENCH=OFF -DCUTLAYER_CUDA=OFF >build-fuzz-configure.log 2>&1 ||
    { cat build-fuzz-configure.log; exit 1; }
  rm -f build-fuzz-configure.log
  cmake --build build-fuzz --target cutlayer_fuzz --parallel "$(nproc)"
fi

# The sanitizers' runtime options. LibTorch, OpenSSL and libzmq are uninstrumented
# (Debian's): ASan still sees their allocations. Leak checking is off inside the fuzzer:
# LibTorch allocates per-thread and per-op state once and never frees it, which libFuzzer
# would report as a leak of the first input that touched it.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:symbolize=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:suppressions=$PWD/tests/fuzz/ubsan.supp:${UBSAN_OPTIONS:-}"
command -v llvm-symbolizer >/dev/null && export ASAN_SYMBOLIZER_PATH="$(command -v llvm-symbolizer)"

# Seeds: the real encoders' messages, keys and configs (tests/fuzz/corpus_gen.cpp), made
# fresh each run rather than kept in the repository.
rm -rf build-fuzz/seeds
build-fuzz/fuzz/cutlayer_fuzz_corpus build-fuzz/seeds >/dev/null

failed=0
summary=()
for t in "${TARGETS[@]}"; do
  bin="build-fuzz/fuzz/${t}_fuzz"
  [ -x "$bin" ] || { echo "fuzz: $bin is missing (build without --no-build)" >&2; exit 1; }
  work="build-fuzz/work/$t"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts" "$work/tmp"
  cp build-fuzz/seeds/"$t"/* "$work/corpus/"
  args=(-timeout=20 -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$work/artifacts/")
  [ -f "tests/fuzz/$t.dict" ] && args+=(-dict="tests/fuzz/$t.dict")
  echo "fuzz: $t for ${seconds} s (log: $work/fuzz.log)"
  # libFuzzer stops at its first crash: start it again on the grown corpus until the time is
  # spent (at most 20 crashes per target), adding up executions and crashes.
  start=$SECONDS execs=0 crashes=0 runs=0 fuzz_ms=0
  : >"$work/fuzz.log"
  while left=$((seconds - (SECONDS - start))); [ "$left" -gt 0 ] && [ "$crashes" -lt 20 ]; do
    runs=$((runs + 1))
    echo "---- run $runs (${left} s left)" >>"$work/fuzz.log"
    rc=0
    TMPDIR="$PWD/$work/tmp" "$bin" "${args[@]}" -max_total_time="$left" ${FUZZ_ARGS:-} \
      "$work/corpus" >"$work/run.log" 2>&1 || rc=$?
    cat "$work/run.log" >>"$work/fuzz.log"
    n=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$work/run.log" | tail -n 1)
    r=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+).*/\1/p' "$work/run.log" | tail -n 1)
    execs=$((execs + ${n:-0}))
    # Seconds spent fuzzing (LibTorch's start-up under ASan is not): executions / rate.
    [ "${r:-0}" -gt 0 ] && fuzz_ms=$((fuzz_ms + ${n:-0} * 1000 / r))
    if [ "$rc" -ne 0 ]; then
      crashes=$((crashes + 1))
      grep -qE '^stat::number_of_executed_units' "$work/run.log" ||
        { echo "fuzz: $t stopped without its final stats:" >&2; tail -n 30 "$work/run.log" >&2; break; }
    fi
  done
  rm -f "$work/run.log"
  elapsed=$((SECONDS - start))
  rate=$((execs * 1000 / (fuzz_ms > 0 ? fuzz_ms : 1)))
  # slow-unit-* are libFuzzer's note of its slowest input (over 10 s, wall clock: on a busy
  # machine a starved process writes them too), not failures; timeout-* is one (20 s).
  files=$(find "$work/artifacts" -type f ! -name 'slow-unit-*' | wc -l)
  corpus=$(find "$work/corpus" -type f | wc -l)
  line=$(printf '%-14s %5d s %7d exec/s %11d execs  crashes %d  (%d runs, %d inputs in artifacts/, corpus %d)' \
    "$t" "$elapsed" "$rate" "$execs" "$crashes" "$runs" "$files" "$corpus")
  echo "fuzz: $line"
  summary+=("$line")
  [ "$crashes" -eq 0 ] && [ "$files" -eq 0 ] || failed=1
done

echo "fuzz: summary (${seconds} s per target)"
printf '  %s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
  echo "fuzz: FAILED: inputs under build-fuzz/work/*/artifacts/ (see --help)" >&2
  exit 1
fi
