#!/usr/bin/env bash
# Installs every package cutlayer needs to build, test and run, from Debian's archive.
# Idempotent: packages already present are skipped; `apt-get update` runs only when the
# package lists are missing or a package cannot be found. Run as root (or via sudo).
#   --fuzz: also clang, its libFuzzer and sanitizer runtimes and llvm-symbolizer, for
#           scripts/fuzz.sh (not part of the default set: nothing else needs them)
set -euo pipefail
[[ "${1:-}" =~ ^(-h|--help)$ ]] && { sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$0"; exit 0; }
FUZZ=0
for arg in "$@"; do
  case "$arg" in
    --fuzz) FUZZ=1 ;;
    *) echo "install-deps: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config git ca-certificates
  # LibTorch and a fast BLAS (the reference BLAS is ~55x slower for matmul)
  libtorch-dev libopenblas0-pthread
  # c10d's ProcessGroupGloo header (the server tier across processes: docs/scale-out.md)
  libgloo-dev
  # transport, crypto, serialization, logging, CLI
  libzmq3-dev cppzmq-dev libssl-dev libcereal-dev rapidjson-dev libspdlog-dev libfmt-dev libcli11-dev zlib1g-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  # data
  dataset-fashion-mnist
  # plots (PNG) from JSON-lines metrics; PyTorch (the same 1.13) to check exported models
  # and to write the examples' own TorchScript models; scikit-learn for its bundled tables
  python3 python3-matplotlib python3-torch python3-sklearn
)
if [ "$FUZZ" -eq 1 ]; then
  # clang, libclang_rt.fuzzer / asan / ubsan, llvm-symbolizer (readable stacks)
  PACKAGES+=(clang libclang-rt-dev llvm)
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root or install sudo" >&2; exit 1; }
  SUDO=sudo
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
lists=$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' 2>/dev/null | head -n 1)
if [ -z "$lists" ]; then
  $SUDO apt-get update -qq
fi
log=$(mktemp)
if ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
  # stale lists: refresh once and retry
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$log" 2>&1 ||
    { cat "$log"; rm -f "$log"; exit 1; }
fi
rm -f "$log"
echo "install-deps: done"
