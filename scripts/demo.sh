#!/usr/bin/env bash
# The main job: set-up, build, fresh keys, then cutlayer-server and 3 cutlayer-client
# daemons on loopback training fmnist-cnn on Fashion-MNIST by split learning (each client
# holds a third of the training set; activations and gradients cross sealed channels);
# then test accuracy and throughput are printed and everything is stopped cleanly.
# By default the clients also keep one shared front: fmnist-deep-front (conv1, conv2 and
# fc1 on the clients, ~0.58M parameters), each step's front gradient gaussiank-sparsified
# to 1% with error feedback and aggregated by the server, synchronously.
# Options: EPOCHS=1 (per client) MODE=vanilla|u-shaped|vertical SYNC=1|0 (0: fmnist-cnn,
# each client's front its own; U-shaped runs use SYNC=0)
# MODE=vertical: vertical split learning, parties holding different features of the same
# people (scripts/demo-vertical.sh; PARTIES=2, TABLE=1 for a table instead of images)
# EXAMPLE=resnet|ushaped|tabular: a user's own TorchScript model instead (examples/own-model:
# make_models.py writes the files with Debian's python3-torch; the example's configs set
# the rest; EPOCHS then defaults to the example's own)
set -euo pipefail
[[ "${1:-}" =~ ^(-h|--help)$ ]] && { sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$0"; exit 0; }
cd "$(dirname "$0")/.."
bash scripts/build.sh
[ "${MODE:-}" = vertical ] && exec bash scripts/demo-vertical.sh
bin=build/bin run=run/demo mode=${MODE:-vanilla}
epochs=(--epochs "${EPOCHS:-1}")
sync=${SYNC:-1}
flag=()
[ "$mode" = u-shaped ] && flag=(--u-shaped) && sync=0
server_config=configs/server.json client_config=configs/client.json
if [ "$sync" = 1 ]; then
  server_config=configs/server-aggregation.json client_config=configs/client-aggregation.json
fi
if [ -n "${EXAMPLE:-}" ]; then
  case "$EXAMPLE" in resnet | ushaped | tabular) ;; *) echo "EXAMPLE must be resnet, ushaped or tabular" >&2; exit 2 ;; esac
  /usr/bin/python3 examples/own-model/make_models.py >/dev/null
  server_config=examples/own-model/$EXAMPLE-server.json client_config=examples/own-model/$EXAMPLE-client.json
  flag=() mode=$EXAMPLE sync=$([ "$EXAMPLE" = resnet ] && echo 1 || echo 0)
  if [ -z "${EPOCHS:-}" ]; then epochs=(); fi
  echo "== own model: $client_config, $server_config (TorchScript files in examples/own-model)"
fi
rm -rf "$run" && mkdir -p "$run"
"$bin/cutlayer-keygen" --out "$run/keys" --clients alice,bob,carol >/dev/null
echo "== keys: $run/keys (server + alice, bob, carol; allow-list.txt)"

"$bin/cutlayer-server" -c "$server_config" "${flag[@]}" --server-key "$run/keys/server.key" \
  --allow-list "$run/keys/allow-list.txt" --join-port 0 --data-port 0 \
  --ready-file "$run/ready.json" --metrics "$run/server-metrics.jsonl" \
  >"$run/server.json" 2>"$run/server.log" &
server=$!
trap 'kill -9 $server $(jobs -p) 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$run/ready.json" ] && break; sleep 0.1; done
port=$(sed -E 's/.*"join_port":([0-9]+).*/\1/' "$run/ready.json")
echo "== cutlayer-server ($mode$([ "$sync" = 1 ] && echo ", fronts aggregated")) listening on 127.0.0.1:$port; log: $run/server.log"

i=0
clients=()
for name in alice bob carol; do
  "$bin/cutlayer-client" -c "$client_config" "${flag[@]}" "${epochs[@]}" --name "$name" --shard "$i/3" \
    --join-port "$port" --server-public-key "$run/keys/server.pub" \
    --client-key "$run/keys/$name.key" --metrics "$run/$name-metrics.jsonl" \
    --eval-every 100 \
    >"$run/$name.json" 2> >(tee "$run/$name.log" | grep --line-buffered -E "step [0-9]*00/|final" >&2) &
  clients+=($!)
  i=$((i + 1))
done
for p in "${clients[@]}"; do wait "$p" || { echo "a client failed; see $run/*.log"; exit 1; }; done
kill -TERM "$server"
wait "$server"
trap - EXIT
echo "== results"
/usr/bin/python3 - "$run" <<'PY'
import json, sys
run = sys.argv[1]
total = 0
for name in ["alice", "bob", "carol"]:
    r = json.loads(open(f"{run}/{name}.json").read().strip().splitlines()[-1])
    total += r["samples"] / r["seconds"]
    print(f"{name:6s} test accuracy {r['test_acc']:.4f}  {r['steps']} steps  {r['samples_per_s']:.0f} samples/s  "
          f"up {r['bytes_up']/1e6:.0f} MB  down {r['bytes_down']/1e6:.0f} MB")
s = json.loads(open(f"{run}/server.json").read().strip().splitlines()[-1])
print(f"server  {s['steps']} back-model steps, {s['samples']} samples, labels received: {s['labels_received']} batches, "
      f"dropped messages: {s['dropped']}")
a = s.get("aggregation")
if a:
    ratios = [json.loads(open(f"{run}/{n}.json").read().strip().splitlines()[-1])["sync"]["bytes_ratio_to_dense"]
              for n in ["alice", "bob", "carol"]]
    print(f"fronts  {a['rounds']} aggregation rounds (synchronous, max staleness {a['max_staleness']}); "
          f"sync traffic {min(ratios):.3f}-{max(ratios):.3f} of dense per client per round")
print(f"total   {total:.0f} samples/s across 3 clients; metrics: {run}/*-metrics.jsonl")
PY
/usr/bin/python3 scripts/plot-metrics.py "$run/training.png" "$run"/{alice,bob,carol}-metrics.jsonl
echo "== server stopped cleanly"
