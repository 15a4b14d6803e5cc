#!/usr/bin/env bash
# End to end: real cutlayer-server and cutlayer-client processes on loopback, fresh keys,
# ephemeral ports. The client sends probe tensors over the sealed channel and checks
# every echo bit for bit; an unlisted client is refused; the server stops on SIGTERM.
set -euo pipefail
bin=$1 configs=$2
work=$(mktemp -d)
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill -9 "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

"$bin/cutlayer-keygen" --out "$work/keys" --clients alice,bob >/dev/null
"$bin/cutlayer-keygen" --out "$work/stranger" --no-server --clients mallory >/dev/null
# Keys are never overwritten without --force, and secret files are private.
if "$bin/cutlayer-keygen" --out "$work/keys" --clients alice 2>/dev/null; then
  echo "keygen overwrote existing keys"; exit 1
fi
[ "$(stat -c %a "$work/keys/server.key")" = 600 ] || { echo "server.key is not mode 600"; exit 1; }
for b in cutlayer-server cutlayer-client cutlayer-keygen; do
  "$bin/$b" --help | grep -q -- --help || { echo "$b --help"; exit 1; }
done

"$bin/cutlayer-server" -c "$configs/server.json" --server-key "$work/keys/server.key" \
  --allow-list "$work/keys/allow-list.txt" --join-port 0 --data-port 0 \
  --ready-file "$work/ready.json" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 100); do [ -s "$work/ready.json" ] && break; sleep 0.1; done
[ -s "$work/ready.json" ] || { echo "server did not start"; cat "$work/server.log"; exit 1; }
port=$(sed -E 's/.*"join_port":([0-9]+).*/\1/' "$work/ready.json")

client() {
  "$bin/cutlayer-client" -c "$configs/client.json" --join-port "$port" \
    --server-public-key "$work/keys/server.pub" "$@"
}
out=$(client --client-key "$work/keys/alice.key" --probes 8 --probe-mb 4)
echo "$out"
grep -q '"bit_exact":true' <<<"$out"
grep -q '"probes":8' <<<"$out"
client --client-key "$work/keys/bob.key" --probes 3 --probe-mb 1 >/dev/null

# An unlisted key is refused at the front door with a message that says why.
if client --client-key "$work/stranger/mallory.key" --probes 1 2>"$work/mallory.err"; then
  echo "unlisted client was served"; exit 1
fi
grep -q "allow-list" "$work/mallory.err" || { cat "$work/mallory.err"; exit 1; }

kill -TERM "$server_pid"
for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$server_pid" 2>/dev/null; then echo "server ignored SIGTERM"; exit 1; fi
wait "$server_pid" || { echo "server exited non-zero"; cat "$work/server.log"; exit 1; }
server_pid=""
grep -q "probes served" "$work/server.log"
grep -q "11 probes served" "$work/server.log" || { cat "$work/server.log"; exit 1; }
echo "e2e probe self-check passed"
