# Shared by the e2e scripts: a temp dir, fresh keys, a server on ephemeral ports, cleanup.
set -euo pipefail
bin=$1 configs=$2
work=$(mktemp -d)
pids=()
# KEEP_WORK=DIR copies the work directory there on exit (to read logs of a failed run).
cleanup() { [ -n "${KEEP_WORK:-}" ] && cp -r "$work" "$KEEP_WORK";  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# start_server NAME [ARGS...]: starts cutlayer-server; sets $port, $data_port and $server_pid.
# On ephemeral ports, or on $server_join_port / $server_data_port when set (a restart).
start_server() {
  local name=$1
  shift
  rm -f "$work/$name.ready"
  "$bin/cutlayer-server" -c "${server_config:-$configs/server.json}" --server-key "$work/keys/server.key" \
    --allow-list "$work/keys/allow-list.txt" --join-port "${server_join_port:-0}" --data-port "${server_data_port:-0}" \
    --ready-file "$work/$name.ready" "$@" >"$work/$name.out" 2>"$work/$name.log" &
  server_pid=$!
  pids+=("$server_pid")
  for _ in $(seq 100); do [ -s "$work/$name.ready" ] && break; sleep 0.1; done
  [ -s "$work/$name.ready" ] || { echo "server did not start"; cat "$work/$name.log"; exit 1; }
  port=$(sed -E 's/.*"join_port":([0-9]+).*/\1/' "$work/$name.ready")
  data_port=$(sed -E 's/.*"data_port":([0-9]+).*/\1/' "$work/$name.ready")
}

# edit_config SRC DST EDIT...: a copy of a JSON config with edits "a.b=<json>" ("a.b=DELETE"
# removes the field).
edit_config() {
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
    if value == "DELETE":
        node.pop(leaf, None)
    else:
        node[leaf] = json.loads(value)
json.dump(c, open(dst, "w"), indent=1)
PY
}

# stop_server: SIGTERM, then it must exit 0 within 5 s.
stop_server() {
  kill -TERM "$server_pid"
  for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$server_pid" 2>/dev/null; then echo "server ignored SIGTERM"; exit 1; fi
  wait "$server_pid" || { echo "server exited non-zero"; exit 1; }
}

client() {
  "$bin/cutlayer-client" -c "${client_config:-$configs/client.json}" --join-port "$port" \
    --server-public-key "$work/keys/server.pub" "$@"
}

"$bin/cutlayer-keygen" --out "$work/keys" --clients alice,bob,carol,dave >/dev/null

# signal SIG PID: send SIG to the process a backgrounded `client` call runs.
signal() { pkill "-$1" -P "$2"; }

# kill9 PID: SIGKILL a backgrounded `client` call: the subshell and the process it runs.
kill9() {
  pkill -9 -P "$1" 2>/dev/null || true
  kill -9 "$1" 2>/dev/null || true
}

# spawn NAME TAG ARGS...: `client` in the background as NAME (its key, its name), output
# in $work/NAME$TAG.json and .log; its PID in $pid_NAME.
spawn() {
  local name=$1 tag=$2
  shift 2
  client --client-key "$work/keys/$name.key" --name "$name" "$@" >"$work/$name$tag.json" 2>"$work/$name$tag.log" &
  pids+=($!)
  eval "pid_$name=$!"
}

# await TAG NAME...: each spawned client must exit 0.
await() {
  local tag=$1 name p
  shift
  for name in "$@"; do
    eval "p=\$pid_$name"
    wait "$p" || { echo "$name failed:"; tail -20 "$work/$name$tag.log"; exit 1; }
  done
}
