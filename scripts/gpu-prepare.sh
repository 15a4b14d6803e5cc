#!/usr/bin/env bash
# Run here (a build machine with Debian's packages) before a GPU check: copies what the
# lent GPU machine lacks into .gpu-deps/ (git-ignored), which the device call carries:
#   GoogleTest's sources (Debian's googletest package, /usr/src/googletest), so that the
#   gpu-labelled tests build there (scripts/gpu-check.sh finds them).
# Then on the device: carry [".gpu-deps"], command "bash scripts/gpu-check.sh".
set -euo pipefail
[[ "${1:-}" =~ ^(-h|--help)$ ]] && { sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$0"; exit 0; }
cd "$(dirname "$0")/.."
if [ ! -f /usr/src/googletest/CMakeLists.txt ]; then
  bash scripts/install-deps.sh >/dev/null
  [ -f /usr/src/googletest/CMakeLists.txt ] || { echo "gpu-prepare: /usr/src/googletest missing (apt-get install googletest)" >&2; exit 1; }
fi
rm -rf .gpu-deps/googletest
mkdir -p .gpu-deps
cp -a /usr/src/googletest .gpu-deps/googletest
du -sh .gpu-deps | sed 's/^/gpu-prepare: /'
