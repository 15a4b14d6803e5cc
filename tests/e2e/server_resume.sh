#!/usr/bin/env bash
# A server crash in the middle of a run with aggregation. Three clients train; the server is
# SIGKILLed once they are about halfway and restarted with --resume on the same ports. It
# comes back from its newest checkpoint (back model, optimizer, replica and round); every
# client re-joins, re-syncs its front through the snapshot and finishes; the three fronts
# end identical (hash), and the final test accuracy is within 0.5 points of the same run
# without the crash.
source "$(dirname "$0")/lib.sh"
py=/usr/bin/python3
steps=${SERVER_RESUME_STEPS:-150}
# A dead server is noticed after 3 s of silence (the session timeout it announced).
edit_config "$configs/server-aggregation.json" "$work/server.json" transport.session_timeout_ms=3000 \
  transport.heartbeat_ms=300 train.log_every=10 aggregation.deadline_ms=3000
server_config=$work/server.json client_config=$configs/client-aggregation.json

run_clients() {  # run_clients TAG: alice, bob and carol on a third of the data each
  local i=0 name
  for name in alice bob carol; do
    spawn "$name" "$1" --shard "$i/3" --steps "$steps" --metrics "$work/$name$1.jsonl" --metrics-every-step
    i=$((i + 1))
  done
}
summary() { tail -n 1 "$work/$1.json"; }

# Without the crash.
start_server whole
run_clients -whole
await -whole alice bob carol
stop_server

# With it.
ckpt=(--checkpoint-dir "$work/ckpt" --checkpoint-every 30)
start_server before "${ckpt[@]}"
run_clients -crash
for _ in $(seq 1200); do grep -q "\"step\":$((steps / 2))," "$work/alice-crash.jsonl" 2>/dev/null && break; sleep 0.1; done
kill -9 "$server_pid"
wait "$server_pid" 2>/dev/null || true
ls "$work/ckpt"/ckpt-*.cutlayer >/dev/null || { echo "no checkpoint was written before the crash"; exit 1; }
server_join_port=$port server_data_port=$data_port start_server after "${ckpt[@]}" --resume
await -crash alice bob carol
stop_server
grep -o 'resumed from .*redone' "$work/after.log" || { echo "the server did not resume:"; cat "$work/after.log"; exit 1; }

$py - "$work" <<'PY'
import json, sys
w = sys.argv[1]
last = lambda f: json.loads(open(f"{w}/{f}.json").read().strip().splitlines()[-1])
whole = {n: last(f"{n}-whole") for n in ("alice", "bob", "carol")}
crash = {n: last(f"{n}-crash") for n in ("alice", "bob", "carol")}
hashes = {n: s["sync"]["front_hash"] for n, s in crash.items()}
assert len(set(hashes.values())) == 1, f"fronts differ after the crash: {hashes}"
acc_whole = sum(s["test_acc"] for s in whole.values()) / 3
acc_crash = sum(s["test_acc"] for s in crash.values()) / 3
print(f"final test accuracy: {acc_whole:.4f} without the crash, {acc_crash:.4f} with it "
      f"(delta {100 * (acc_crash - acc_whole):+.2f} points); fronts identical: {hashes['alice']}")
assert abs(acc_crash - acc_whole) <= 0.005, (acc_whole, acc_crash)
PY
