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
# final fronts are compared where SGD has settled, not at a random point of its noise; and
# rounds wait for all three clients (start_members), so that no client trains alone while
# the others join, before and after the restart.
edit_config "$configs/server-aggregation.json" "$work/server.json" transport.session_timeout_ms=3000 \
  transport.heartbeat_ms=300 train.log_every=10 aggregation.deadline_ms=3000 aggregation.start_members=3 \
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
# No step completes without the server: the lines so far are all from before the crash.
for name in alice bob carol; do wc -l <"$work/$name-crash.jsonl" >"$work/$name.cut"; done
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
# Before the crash and after the restart (where every client is back at the server's
# round), every front reported at a round must be the same front.
by_round = {}
for n in ("alice", "bob", "carol"):
    rows = [json.loads(l) for l in open(f"{w}/{n}-crash.jsonl")]
    cut = int(open(f"{w}/{n}.cut").read())
    for part, segment in (("before", rows[:cut]), ("after", rows[cut:])):
        for r in segment:
            if "front_hash" in r:
                by_round.setdefault((part, r["round"]), {}).setdefault(r["front_hash"], []).append(n)
split = {k: v for k, v in by_round.items() if len(v) > 1}
assert not split, f"fronts differ: {split}"
shared = [k for k, v in by_round.items() if k[0] == "after" and sum(len(n) for n in v.values()) > 1]
assert len(shared) >= 30, f"only {len(shared)} rounds seen by more than one client after the restart"
acc_whole = sum(s["test_acc"] for s in whole.values()) / 3
acc_crash = sum(s["test_acc"] for s in crash.values()) / 3
print(f"final test accuracy: {acc_whole:.4f} without the crash, {acc_crash:.4f} with it "
      f"(delta {100 * (acc_crash - acc_whole):+.2f} points); fronts identical at all {len(shared)} shared rounds "
      "after the restart")
assert abs(acc_crash - acc_whole) <= 0.005, (acc_whole, acc_crash)
PY

# U-shaped, one client, no aggregation: the server is killed while the client trains and
# resumed; a step cut between its two round trips is taken again from the first, and the
# client finishes.
edit_config "$configs/server.json" "$work/server-u.json" transport.session_timeout_ms=3000 transport.heartbeat_ms=300
server_config=$work/server-u.json client_config=$configs/client.json
ckpt_u=(--checkpoint-dir "$work/ckpt-u" --checkpoint-every 20)
start_server u-before --u-shaped "${ckpt_u[@]}"
spawn alice -u --u-shaped --steps 120 --metrics "$work/alice-u.jsonl" --metrics-every-step
for _ in $(seq 1200); do grep -q '"step":60,' "$work/alice-u.jsonl" 2>/dev/null && break; sleep 0.1; done
kill -9 "$server_pid"
wait "$server_pid" 2>/dev/null || true
server_join_port=$port server_data_port=$data_port start_server u-after --u-shaped "${ckpt_u[@]}" --resume
await -u alice
stop_server
grep -q "resumed from" "$work/u-after.log" || { echo "U-shaped: the server did not resume"; cat "$work/u-after.log"; exit 1; }
grep -q '"labels_received":0,' "$work/u-after.out" || { echo "U-shaped server decoded labels"; exit 1; }
echo "U-shaped: $(grep -o 'resumed from .*redone' "$work/u-after.log"); alice finished: $(tail -n 1 "$work/alice-u.json" | grep -o '"steps":[0-9]*,"samples"' | cut -d, -f1)"
