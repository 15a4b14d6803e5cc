#!/usr/bin/env bash
# A server crash in the middle of a run with aggregation. Three clients train; the server is
# SIGKILLed once they are about halfway and restarted with --resume on the same ports. It
# comes back from its newest checkpoint (back model, optimizer, replica and round); every
# client re-joins, re-syncs its front through the snapshot and finishes; the three fronts
# end identical (hash), and the final test accuracy is within 0.5 points of the same run
# without the crash.
source "$(dirname "$0")/lib.sh"
py=/usr/bin/python3
steps=${SERVER_RESUME_STEPS:-300}
# A dead server is noticed after 3 s of silence (the session timeout it announced). The
# learning rate decays to 0 over the run (cosine over the back's 3 x steps), so that the
# final fronts are compared where SGD has settled, not at a random point of its noise.
edit_config "$configs/server-aggregation.json" "$work/server.json" transport.session_timeout_ms=3000 \
  transport.heartbeat_ms=300 train.log_every=10 aggregation.deadline_ms=3000 \
  train.lr_schedule='"cosine"' train.lr_total_steps=$((3 * steps))
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
# After the restart every client is back at the snapshot's round (its round drops); from
# there on, every front reported at a round must be the same front.
by_round = {}
for n in ("alice", "bob", "carol"):
    rows = [json.loads(l) for l in open(f"{w}/{n}-crash.jsonl") if '"front_hash"' in l]
    drops = [i for i in range(1, len(rows)) if rows[i]["round"] < rows[i - 1]["round"]]
    assert len(drops) == 1, f"{n}: expected one re-sync to an earlier round, found {len(drops)}"
    for r in rows[drops[0]:]:
        by_round.setdefault(r["round"], {}).setdefault(r["front_hash"], []).append(n)
split = {k: v for k, v in by_round.items() if len(v) > 1}
assert not split, f"fronts differ after the restart: {split}"
shared = [k for k, v in by_round.items() if sum(len(n) for n in v.values()) > 1]
assert len(shared) >= 30, f"only {len(shared)} rounds seen by more than one client after the restart"
acc_whole = sum(s["test_acc"] for s in whole.values()) / 3
acc_crash = sum(s["test_acc"] for s in crash.values()) / 3
print(f"final test accuracy: {acc_whole:.4f} without the crash, {acc_crash:.4f} with it "
      f"(delta {100 * (acc_crash - acc_whole):+.2f} points); fronts identical at all {len(shared)} shared rounds "
      "after the restart")
assert abs(acc_crash - acc_whole) <= 0.005, (acc_whole, acc_crash)
PY
