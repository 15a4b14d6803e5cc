#!/usr/bin/env bash
# Where a split step's time goes (docs/split-training.md, "Where the time goes"): one client
# and the server on loopback, THREADS (default 2) LibTorch threads each, STEPS (default 400)
# fmnist-cnn steps, both processes under `perf record`; then the monolithic reference the
# same way. Prints one JSON line per process: wall ms per step, and CPU ms per step by
# category (compute: LibTorch/OpenMP/BLAS; seal_open: OpenSSL; copies: libc memcpy/memset;
# malloc: libc allocation; loader: dynamic symbol lookups (start-up);
# zmq: libzmq; kernel: system calls and loopback TCP; other), plus idle = the two cores'
# wall time not used by either process. Extra args go to the client (e.g. --cut-values bf16).
# Needs perf (Debian linux-perf) allowed to profile its own processes (perf_event_paranoid <= 2).
set -euo pipefail
bin=${BIN:-build/bin} configs=${CONFIGS:-configs}
threads=${THREADS:-2} steps=${STEPS:-400} freq=${FREQ:-2999}
work=$(mktemp -d)
trap 'kill -9 $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] && cp -r "$work" "$KEEP"; rm -rf "$work"' EXIT
export OMP_WAIT_POLICY=PASSIVE  # as the daemons set it (no re-exec under perf)
"$bin/cutlayer-keygen" --out "$work/keys" --clients c0 >/dev/null
/usr/bin/python3 - "$configs/client.json" "$work/client.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["train"]["eval_samples"] = 64  # the final evaluation stays out of the profile
json.dump(c, open(sys.argv[2], "w"))
PY
perf record -q -F "$freq" -o "$work/server.data" -- "$bin/cutlayer-server" -c "$configs/server.json" \
  --server-key "$work/keys/server.key" --allow-list "$work/keys/allow-list.txt" --join-port 0 --data-port 0 \
  --threads "$threads" --log-level warn --ready-file "$work/ready" >/dev/null 2>"$work/server.log" &
server=$!
for _ in $(seq 200); do [ -s "$work/ready" ] && break; sleep 0.05; done
port=$(sed -E 's/.*"join_port":([0-9]+).*/\1/' "$work/ready")
start=$(date +%s.%N)
perf record -q -F "$freq" -o "$work/client.data" -- "$bin/cutlayer-client" -c "$work/client.json" \
  --log-level warn --join-port "$port" --server-public-key "$work/keys/server.pub" --client-key "$work/keys/c0.key" \
  --name c0 --threads "$threads" --steps "$steps" "$@" >"$work/client.json.out" 2>"$work/client.log"
end=$(date +%s.%N)
kill -INT "$server"
wait "$server" || true
perf record -q -F "$freq" -o "$work/mono.data" -- "$bin/cutlayer-train" -c "$work/client.json" --log-level warn \
  --threads "$threads" --steps "$steps" >"$work/mono.out" 2>/dev/null
for p in client server mono; do
  perf report -i "$work/$p.data" --stdio --no-children --sort dso,sym -g none --percent-limit 0 2>/dev/null \
    >"$work/$p.txt" || true
  perf report -i "$work/$p.data" --stdio --header-only 2>/dev/null | grep -E "sample_freq|sample duration" >"$work/$p.hdr" || true
done
/usr/bin/python3 - "$work" "$steps" "$freq" "$start" "$end" <<'PY'
import json, re, sys
work, steps, freq, start, end = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
def categories(path):
    cats = {}
    total = 0
    for line in open(path):
        m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)", line)
        if not m:
            continue
        pct, dso, kind, sym = float(m[1]), m[2], m[3], m[4]
        if kind == "k" or "kernel" in dso:
            c = "kernel"
        elif "libcrypto" in dso:
            c = "seal_open"
        elif "libzmq" in dso:
            c = "zmq"
        elif "libc" in dso and re.search(r"mem(cpy|move|set)", sym):
            c = "copies"
        elif "libc" in dso and re.search(r"malloc|free|alloc", sym):
            c = "malloc"
        elif "ld-linux" in dso:
            c = "loader"
        elif re.search(r"torch|gomp|blas|c10|mkl|dnnl|pthreadpool|libm", dso):
            c = "compute"
        else:
            c = "other"
        cats[c] = cats.get(c, 0) + pct
        total += pct
    return {k: v / max(total, 1e-9) for k, v in cats.items()}
def cpu_seconds(path):  # the cpu-clock event counts nanoseconds of CPU time
    for line in open(path):
        m = re.match(r"# Event count \(approx.\): (\d+)", line)
        if m:
            return int(m[1]) / 1e9
    return 0.0
out = {}
for p in ("client", "server", "mono"):
    cpu_s = cpu_seconds(f"{work}/{p}.txt")
    cats = categories(f"{work}/{p}.txt")
    out[p] = (cpu_s, cats)
summary = json.loads(open(f"{work}/client.json.out").read().strip().splitlines()[-1])
mono = json.loads(open(f"{work}/mono.out").read().strip().splitlines()[-1])
wall = 64000 / summary["samples_per_s"]
for p in ("client", "server", "mono"):
    cpu_s, cats = out[p]
    line = {"bench": "profile", "process": p, "cpu_ms_per_step": round(1000 * cpu_s / steps, 3)}
    line.update({f"{k}_ms": round(1000 * cpu_s * v / steps, 3) for k, v in sorted(cats.items())})
    print(json.dumps(line))
busy = 1000 * (out["client"][0] + out["server"][0]) / steps
print(json.dumps({"bench": "profile", "split_step_ms": round(wall, 3),
                  "mono_step_ms": round(64000 / mono["samples_per_s"], 3),
                  "ratio_to_monolithic": round(mono["samples_per_s"] and summary["samples_per_s"] / mono["samples_per_s"], 3),
                  "cpu_ms_per_step_both": round(busy, 3), "idle_core_ms_per_step": round(2 * wall - busy, 3)}))
PY
