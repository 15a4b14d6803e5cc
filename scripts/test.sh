#!/usr/bin/env bash
# The test command: set-up, build, then every test (unit, e2e; gpu tests skip without a
# GPU). Ends with CTest's summary line. Extra arguments go to CTest, e.g.
# scripts/test.sh -L unit (the unit tests only) or -R Sparse (by name).
set -euo pipefail
[[ "${1:-}" =~ ^(-h|--help)$ ]] && { sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$0"; exit 0; }
cd "$(dirname "$0")/.."
bash scripts/build.sh
cd build
ctest --output-on-failure --parallel 2 --timeout 600 "$@"
