#!/usr/bin/env bash
# The test command: set-up, build, then every test (unit, e2e; gpu tests skip without a
# GPU). Ends with CTest's summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
cd build
ctest --output-on-failure --parallel 2 --timeout 600 "$@"
