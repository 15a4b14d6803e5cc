#!/usr/bin/env bash
# Whole-system benchmark of split training on loopback; one JSON object per line.
#  1. 1 client over the sealed channel vs the monolithic cutlayer-train, same thread
#     budget (THREADS, default 2), same steps, in the same run: ratio_to_monolithic; once
#     per cut coding in CUTS (default "fp32 bf16", --cut-values), each against its own
#     monolithic run (the reference is float32 throughout).
#  2. total samples/s with 2, 4 and 8 clients (each on its shard, STEPS steps each).
#  3. convergence: 3 clients, EPOCHS (default 3) epochs each -> test accuracy.
#  4. "model":"torchscript": the scripted copy of fmnist-cnn (examples/own-model) vs the
#     C++ preset, same initial weights, 1 client split and monolithic, REPEATS (default 3)
#     alternating pairs: step time ratio (median). SKIP_TO_TORCHSCRIPT=1 runs only this.
set -euo pipefail
bin=${1:-build/bin} configs=${2:-configs}
threads=${THREADS:-2} steps=${STEPS:-300} epochs=${EPOCHS:-3}
work=$(mktemp -d)
trap 'kill -9 $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
"$bin/cutlayer-keygen" --out "$work/keys" --clients c0,c1,c2,c3,c4,c5,c6,c7 >/dev/null

start_server_with() {  # start_server_with CONFIG ARGS...
  local cfg=$1
  shift
  rm -f "$work/ready"
  "$bin/cutlayer-server" -c "$cfg" --server-key "$work/keys/server.key" \
    --allow-list "$work/keys/allow-list.txt" --join-port 0 --data-port 0 --log-level warn \
    --ready-file "$work/ready" "$@" >/dev/null 2>"$work/server.log" &
  server=$!
  for _ in $(seq 100); do [ -s "$work/ready" ] && break; sleep 0.1; done
  port=$(sed -E 's/.*"join_port":([0-9]+).*/\1/' "$work/ready")
}
start_server() { start_server_with "$configs/server.json" "$@"; }
stop_server() { kill -TERM "$server"; wait "$server"; }
field() { /usr/bin/python3 -c "import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])['$1'])"; }
client() {  # client INDEX SHARD ARGS...
  local i=$1 shard=$2
  shift 2
  "$bin/cutlayer-client" -c "$configs/client.json" --log-level warn --join-port "$port" \
    --server-public-key "$work/keys/server.pub" --client-key "$work/keys/c$i.key" --name "c$i" \
    --shard "$shard" "$@"
}

torchscript_bench() {
  local models=$work/models
  /usr/bin/python3 "$(dirname "$0")/../examples/own-model/make_models.py" --out "$models" >/dev/null
  /usr/bin/python3 - "$configs" "$models" <<'PY'
import json, sys
configs, models = sys.argv[1:]
for side in ("client", "server"):
    c = json.load(open(f"{configs}/{side}.json"))
    c["train"]["model"] = {"name": "fmnist-cnn-scripted", "front": "fmnist_cnn_front.pt",
                           "back": "fmnist_cnn_back.pt", "input_shape": [1, 28, 28]}
    json.dump(c, open(f"{models}/{side}.json", "w"))
PY
  for r in $(seq "${REPEATS:-3}"); do
    for kind in preset torchscript; do
      local cc=$configs/client.json sc=$configs/server.json
      [ "$kind" = torchscript ] && cc=$models/client.json sc=$models/server.json
      start_server_with "$sc" --threads "$threads"
      split=$("$bin/cutlayer-client" -c "$cc" --log-level warn --join-port "$port" --server-public-key "$work/keys/server.pub"         --client-key "$work/keys/c0.key" --name c0 --threads "$threads" --steps "$steps" | field samples_per_s)
      stop_server
      mono=$("$bin/cutlayer-train" -c "$cc" --log-level warn --threads "$threads" --steps "$steps" | field samples_per_s)
      echo "$r $kind $split $mono" >>"$work/ts"
    done
  done
  /usr/bin/python3 - "$work/ts" "$threads" "$steps" <<'PY'
import json, statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def ms(kind, col):  # step time (batch 64) in ms, per repeat
    return [64000 / float(r[col]) for r in rows if r[1] == kind]
for col, what in ((2, "split"), (3, "monolithic")):
    p, t = ms("preset", col), ms("torchscript", col)
    ratios = [b / a for a, b in zip(p, t)]
    print(json.dumps({"bench": "e2e", "model": "torchscript", "run": what, "threads": int(sys.argv[2]),
                      "steps": int(sys.argv[3]), "preset_step_ms": round(statistics.median(p), 3),
                      "torchscript_step_ms": round(statistics.median(t), 3),
                      "ratio_to_preset": round(statistics.median(ratios), 3),
                      "ratios": [round(x, 3) for x in ratios]}))
PY
}
if [ "${SKIP_TO_TORCHSCRIPT:-0}" = 1 ]; then torchscript_bench; exit 0; fi

# 1. one client vs monolithic (eval excluded: rates are over training steps only). The
#    client and the server each get THREADS threads: they take turns, never run together.
for cut in ${CUTS:-fp32 bf16}; do
  start_server --threads "$threads"
  split=$(client 0 0/1 --threads "${CLIENT_THREADS:-$threads}" --steps "$steps" --cut-values "$cut" | field samples_per_s)
  stop_server
  mono=$("$bin/cutlayer-train" -c "$configs/client.json" --log-level warn --threads "$threads" \
    --steps "$steps" | field samples_per_s)
  /usr/bin/python3 -c "print('{\"bench\":\"e2e\",\"clients\":1,\"cut\":\"$cut\",\"threads\":$threads,\"steps\":$steps,\"samples_per_s\":%.1f,\"monolithic_samples_per_s\":%.1f,\"ratio_to_monolithic\":%.3f}' % ($split, $mono, $split / $mono))"
done

# 2. many clients at once, each on its shard
for n in 2 4 8; do
  start_server
  pids=()
  for i in $(seq 0 $((n - 1))); do
    client "$i" "$i/$n" --threads 1 --steps $((steps / 2)) >"$work/out$i" &
    pids+=($!)
  done
  wait "${pids[@]}"
  stop_server
  /usr/bin/python3 - "$work" "$n" <<'PY'
import json, sys
work, n = sys.argv[1], int(sys.argv[2])
rs = [json.loads(open(f"{work}/out{i}").read().strip().splitlines()[-1]) for i in range(n)]
samples = sum(r["samples"] for r in rs)
seconds = max(r["seconds"] for r in rs)
print(json.dumps({"bench": "e2e", "clients": n, "samples_per_s": round(samples / seconds, 1),
                  "per_client_samples_per_s": round(samples / seconds / n, 1)}))
PY
done

# 3. convergence: 3 clients, $epochs epochs each on their thirds, cosine learning rate
#    over each party's steps (a client: its own; the server: all clients').
/usr/bin/python3 - "$configs" "$work" "$epochs" <<'PY'
import json, math, sys
configs, work, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = json.load(open(f"{configs}/client.json"))
per_client = math.ceil(60000 / 3 / c["train"]["batch_size"]) * epochs
for name, steps in (("client", per_client), ("server", 3 * per_client)):
    cfg = json.load(open(f"{configs}/{name}.json"))
    cfg["train"].update({"lr_schedule": "cosine", "lr_total_steps": steps})
    json.dump(cfg, open(f"{work}/{name}.json", "w"))
PY
configs=$work
start_server
pids=()
for i in 0 1 2; do
  client "$i" "$i/3" --threads 1 --epochs "$epochs" >"$work/conv$i" 2>/dev/null &
  pids+=($!)
done
wait "${pids[@]}"
stop_server
/usr/bin/python3 - "$work" "$epochs" <<'PY'
import json, sys
work, epochs = sys.argv[1], int(sys.argv[2])
rs = [json.loads(open(f"{work}/conv{i}").read().strip().splitlines()[-1]) for i in range(3)]
print(json.dumps({"bench": "convergence", "clients": 3, "epochs": epochs,
                  "test_acc": [r["test_acc"] for r in rs], "min_test_acc": min(r["test_acc"] for r in rs),
                  "seconds": round(max(r["seconds"] for r in rs), 1)}))
PY

# 4. the scripted fmnist-cnn against the preset
torchscript_bench
