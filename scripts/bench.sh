#!/usr/bin/env bash
# scripts/bench.sh NAME [ARGS...]: builds what NAME needs and runs it; prints one JSON
# object per result line. Names: transport, compress, e2e, cut, dcor, aggregation, leakage, resume, load, kfac, psi, vertical,
# scaleout (the server tier: bench/scaleout_bench.py --help)
# (load: 8 then 32 clients and a churn run, see bench/load_bench.py --help; --seconds 600
# for the 10-minute churn run; kfac: SGD and K-FAC side by side, bench/kfac_bench.py --help;
# cut: accuracy against bytes per step for compressed cuts, bench/cut_bench.py --help;
# psi: private set intersection of 100k x 100k sample IDs, --ids/--parties/--overlap;
# vertical: cutlayer-train --vertical K against whole images, and PSI, bench/vertical_bench.py --help)
set -euo pipefail
[[ "${1:-}" =~ ^(-h|--help)$ ]] && { sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$0"; exit 0; }
cd "$(dirname "$0")/.."
name=${1:-}
[ -n "$name" ] || { echo "usage: scripts/bench.sh NAME [ARGS...]  (NAME: transport|compress|e2e|cut|dcor|aggregation|leakage|resume|load|kfac|psi|vertical|scaleout; --help: more)" >&2; exit 2; }
shift
bash scripts/build.sh >&2
case "$name" in
  transport) exec build/bin/cutlayer-bench-transport "$@" ;;
  # Google Benchmark's table goes to stderr; the JSON lines to stdout.
  compress) exec build/bin/cutlayer-bench-compress --benchmark_color=false "$@" ;;
  e2e) exec bash bench/e2e_bench.sh build/bin configs "$@" ;;
  dcor) exec build/bin/cutlayer-bench-dcor "$@" ;;
  # A short version of scripts/aggregation-experiments.py (3 clients, 150 steps each).
  # A short sweep of the privacy defences (300 steps): NoPeek alpha 0, 1, 3, the cut normalised
  # with noise 1, and U-shaped rows with the label defence off and at sigma 0.5 (label_auc_*).
  leakage) exec /usr/bin/python3 scripts/leakage-sweep.py --short --out run/bench-leakage "$@" ;;
  aggregation) exec /usr/bin/python3 scripts/aggregation-experiments.py --short --out run/bench-aggregation "$@" ;;
  # Crash-resume: cutlayer-train bit identity, a server killed under 3 clients, checkpoint cost.
  resume) exec bash bench/resume_bench.sh build/bin configs "$@" ;;
  load) exec /usr/bin/python3 bench/load_bench.py --bin build/bin --configs configs "$@" ;;
  kfac) exec /usr/bin/python3 bench/kfac_bench.py --bin build/bin --configs configs "$@" ;;
  cut) exec /usr/bin/python3 bench/cut_bench.py --bin build/bin --configs configs "$@" ;;
  psi) exec build/bin/cutlayer-bench-psi "$@" ;;
  vertical) exec /usr/bin/python3 bench/vertical_bench.py --bin build/bin --configs configs "$@" ;;
  # The server tier: R = 1, 2 (4 with 8+ cores) ranks, 8 clients; allreduce by size, the
  # back's compute and the projection to 64 ranks (bench/scaleout_bench.py --help).
  scaleout) exec /usr/bin/python3 bench/scaleout_bench.py --bin build/bin --configs configs --micro "$@" ;;
  *) echo "unknown benchmark '$name' (known: transport, compress, e2e, cut, dcor, aggregation, leakage, resume, load, kfac, psi, vertical, scaleout)" >&2; exit 2 ;;
esac
