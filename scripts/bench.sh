#!/usr/bin/env bash
# scripts/bench.sh NAME [ARGS...]: builds what NAME needs and runs it; prints one JSON
# object per result line. Names: transport
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:-}
[ -n "$name" ] || { echo "usage: scripts/bench.sh NAME [ARGS...]  (NAME: transport)" >&2; exit 2; }
shift
bash scripts/build.sh >&2
case "$name" in
  transport) exec build/bin/cutlayer-bench-transport "$@" ;;
  *) echo "unknown benchmark '$name' (known: transport)" >&2; exit 2 ;;
esac
