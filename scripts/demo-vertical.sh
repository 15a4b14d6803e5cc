#!/usr/bin/env bash
# MODE=vertical of scripts/demo.sh: vertical split learning on loopback. PARTIES parties
# (cutlayer-client with configs/client-vertical.json, --party k) hold different features of
# the same people: party k a strip of every Fashion-MNIST image (TABLE=1: a group of the
# columns of scikit-learn's breast-cancer table), each for its own random share of the
# people, named by IDs. Their private set intersection (relayed, unread, by the server)
# finds the people all of them hold; then each step every party sends its cut, party 0 with
# the labels, and the server (configs/server-vertical.json) trains the back on the joined
# cuts. Prints each party's summary and the server's, then stops everything cleanly.
# Options: PARTIES=2 (2..7; 4 or 7 for images, at most 7) EPOCHS=1 TABLE=0|1
# Run by scripts/demo.sh after the build (bin=build/bin).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/bin run=run/demo parties=${PARTIES:-2} table=${TABLE:-0}
names=(alice bob carol dave erin frank grace)
[[ "$parties" =~ ^[2-7]$ ]] || { echo "PARTIES must be 2 to 7" >&2; exit 2; }
rm -rf "$run" && mkdir -p "$run"
clients=$(IFS=,; echo "${names[*]:0:$parties}")
"$bin/cutlayer-keygen" --out "$run/keys" --clients "$clients" >/dev/null
echo "== keys: $run/keys (server + $clients)"

# The configs for this run: PARTIES, and with TABLE=1 the table (30 features, 2 classes).
edits=("vertical.parties=$parties")
server_edits=("vertical.parties=$parties")
epochs=${EPOCHS:-1}
if [ "$table" = 1 ]; then
  /usr/bin/python3 examples/own-model/make_models.py --out "$run/table" >/dev/null
  edits+=('train.dataset="csv"' "train.train_csv=\"$PWD/$run/table/tabular_train.csv\""
    "train.test_csv=\"$PWD/$run/table/tabular_test.csv\"" 'train.label_column="label"' 'train.data_dir=DELETE'
    'train.normalization={"scale":1,"mean":0,"std":1}' 'train.batch_size=32' 'train.log_every=20' 'vertical.keep=0.9')
  server_edits+=('vertical.input_shape=[30]' 'vertical.classes=2')
  epochs=${EPOCHS:-30}
fi
# edit SRC DST EDIT...: a copy of a JSON config with edits "a.b=<json>" ("a.b=DELETE" removes it).
edit() {
  /usr/bin/python3 - "$@" <<'PY'
import json, sys
src, dst, *edits = sys.argv[1:]
c = json.load(open(src))
for e in edits:
    path, value = e.split("=", 1)
    *parents, leaf = path.split(".")
    node = c
    for p in parents:
        node = node.setdefault(p, {})
    if value == "DELETE": node.pop(leaf, None)
    else: node[leaf] = json.loads(value)
json.dump(c, open(dst, "w"), indent=1)
PY
}
edit configs/client-vertical.json "$run/party.json" "${edits[@]}"
edit configs/server-vertical.json "$run/server-config.json" "${server_edits[@]}"

"$bin/cutlayer-server" -c "$run/server-config.json" --server-key "$run/keys/server.key" \
  --allow-list "$run/keys/allow-list.txt" --join-port 0 --data-port 0 \
  --ready-file "$run/ready.json" --metrics "$run/server-metrics.jsonl" \
  >"$run/server.json" 2>"$run/server.log" &
server=$!
trap 'kill -9 $server $(jobs -p) 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$run/ready.json" ] && break; sleep 0.1; done
port=$(sed -E 's/.*"join_port":([0-9]+).*/\1/' "$run/ready.json")
echo "== cutlayer-server (vertical, $parties parties) listening on 127.0.0.1:$port; log: $run/server.log"

pids=()
for ((k = 0; k < parties; k++)); do
  name=${names[$k]}
  "$bin/cutlayer-client" -c "$run/party.json" --party "$k" --epochs "$epochs" --name "$name" \
    --join-port "$port" --server-public-key "$run/keys/server.pub" --client-key "$run/keys/$name.key" \
    --metrics "$run/$name-metrics.jsonl" \
    >"$run/$name.json" 2> >(tee "$run/$name.log" | grep --line-buffered -E "intersection:|step [0-9]*00/|test accuracy" >&2) &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || { echo "a party failed; see $run/*.log"; exit 1; }; done
kill -TERM "$server"
wait "$server"
trap - EXIT
echo "== results"
/usr/bin/python3 - "$run" "${names[@]:0:$parties}" <<'PY'
import json, sys
run, names = sys.argv[1], sys.argv[2:]
for n in names:
    r = json.loads(open(f"{run}/{n}.json").read().strip().splitlines()[-1])
    print(f"party {r['party']} {n:6s} holds {r['held']} people, {r['aligned']} held by all (PSI {r['psi_s']:.1f} s); "
          f"test accuracy {r['test_acc']:.4f}  {r['steps']} steps  {r['samples_per_s']:.0f} samples/s  "
          f"{r['bytes_per_step'] / 1e3:.0f} kB per step")
s = json.loads(open(f"{run}/server.json").read().strip().splitlines()[-1])
print(f"server  {s['steps']} back-model steps on the joined cuts, {s['samples']} samples, "
      f"dropped messages: {s['dropped']}")
PY
echo "== server stopped cleanly"
