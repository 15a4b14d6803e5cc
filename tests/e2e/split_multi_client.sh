#!/usr/bin/env bash
# A server and 3 clients as real processes on loopback reach >= 80% test accuracy on
# Fashion-MNIST in 300 steps each (at 150 steps the clients reached 0.84 typically, but one
# once ended at 0.78 on a loaded 2-core runner); a 4th client killed with SIGKILL mid-run
# does not stop the others; a client whose mode does not match is refused at Join with a
# clear error.
source "$(dirname "$0")/lib.sh"
start_server multi
# Wrong mode: refused at join, with the reason.
if client --client-key "$work/keys/dave.key" --u-shaped --steps 5 2>"$work/dave.err" >/dev/null; then
  echo "a mismatched client was served"; exit 1
fi
grep -q "server refused the join: this server runs vanilla" "$work/dave.err" || { cat "$work/dave.err"; exit 1; }

i=0
for name in alice bob carol; do
  client --client-key "$work/keys/$name.key" --name "$name" --shard "$i/3" \
    --steps 300 >"$work/$name.json" 2>"$work/$name.log" &
  i=$((i + 1))
  pids+=($!)
  eval "pid_$name=$!"
done
# dave joins and is killed mid-run.
client --client-key "$work/keys/dave.key" --name dave --steps 100000 >/dev/null 2>"$work/dave.log" &
dave=$!
pids+=("$dave")
for _ in $(seq 200); do grep -q "step 100/" "$work/dave.log" 2>/dev/null && break; sleep 0.1; done
kill9 "$dave"
for name in alice bob carol; do
  eval "p=\$pid_$name"
  wait "$p" || { echo "$name failed:"; tail -20 "$work/$name.log"; exit 1; }
done
stop_server
/usr/bin/python3 - "$work" <<'PY'
import json, sys
accs = []
for name in ["alice", "bob", "carol"]:
    r = json.loads(open(f"{sys.argv[1]}/{name}.json").read().strip().splitlines()[-1])
    print(name, "test accuracy", r["test_acc"], "steps", r["steps"])
    assert r["steps"] == 300, r
    accs.append(r["test_acc"])
assert min(accs) >= 0.80, accs
PY
echo "multi-client training passed"
