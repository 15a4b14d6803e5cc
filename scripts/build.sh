#!/usr/bin/env bash
# Installs dependencies (when missing), configures and builds cutlayer into build/.
# Extra arguments go to CMake, e.g. scripts/build.sh -DCUTLAYER_BUILD_BENCH=OFF
set -euo pipefail
[[ "${1:-}" =~ ^(-h|--help)$ ]] && { sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$0"; exit 0; }
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >build-configure.log 2>&1 ||
  { cat build-configure.log; exit 1; }
rm -f build-configure.log
cmake --build build --parallel "$(nproc)"
