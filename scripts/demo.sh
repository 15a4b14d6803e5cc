#!/usr/bin/env bash
# The main job: set-up, build, fresh keys, then a cutlayer-server and two cutlayer-client
# daemons on loopback exchanging sealed 8 MiB tensors (checked bit for bit), with
# throughput printed; everything is stopped cleanly at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
bin=build/bin run=run/demo
rm -rf "$run" && mkdir -p "$run"
"$bin/cutlayer-keygen" --out "$run/keys" --clients alice,bob >/dev/null
echo "== keys in $run/keys (server + alice, bob); allow-list: $run/keys/allow-list.txt"

"$bin/cutlayer-server" -c configs/server.json --server-key "$run/keys/server.key" \
  --allow-list "$run/keys/allow-list.txt" --join-port 0 --data-port 0 \
  --ready-file "$run/ready.json" 2>"$run/server.log" &
server=$!
trap 'kill -9 $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$run/ready.json" ] && break; sleep 0.1; done
port=$(sed -E 's/.*"join_port":([0-9]+).*/\1/' "$run/ready.json")
echo "== cutlayer-server listening: $(cat "$run/ready.json")"

for name in alice bob; do
  "$bin/cutlayer-client" -c configs/client.json --join-port "$port" \
    --server-public-key "$run/keys/server.pub" --client-key "$run/keys/$name.key" \
    --probes 64 --probe-mb 8 >"$run/$name.json" 2>"$run/$name.log" &
done
wait %2 %3 || { echo "a client failed:"; cat "$run"/*.log; exit 1; }
for name in alice bob; do echo "== $name: $(cat "$run/$name.json")"; done

kill -TERM "$server"
wait "$server"
trap - EXIT
echo "== server stopped cleanly: $(grep -o 'stopping: .*' "$run/server.log")"
