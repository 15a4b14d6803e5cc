#!/usr/bin/env bash
# The server tier on c10d (docs/scale-out.md), real processes on loopback:
# 1. two ranks, four U-shaped clients (two on each rank's door): the back's replicas are
#    identical at every round (hash-checked after every step, and the final hashes agree);
#    SIGTERM to one rank stops both cleanly after the same round.
# 2. two ranks with one client each train exactly as one server taking the same two
#    batches per step (train.accumulate 2): every step's loss within 1e-5.
# 3. aggregation across the ranks: four clients' fronts identical at every round.
# 4. a rank killed with SIGKILL ends the other with a clear error; restarting both with
#    --resume continues from the newest checkpoint step both hold (rank 1's newest is
#    removed first), and the clients re-join and finish.
# 5. a rank that stalls (SIGSTOP) ends the other after scale_out.timeout_ms.
source "$(dirname "$0")/lib.sh"
py=/usr/bin/python3
steps=${SCALE_OUT_STEPS:-40}
free_port() { $py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Clients notice a dead server after 3 s. A round waits up to 4 s for a rank's clients; a
# rank stalled past 10 s ends the others (a dead one at once: its connections close).
edit_config "$configs/server.json" "$work/server.json" threads=1 transport.session_timeout_ms=3000 \
  transport.heartbeat_ms=300 train.log_every=10 train.round_wait_ms=4000 \
  scale_out.timeout_ms=10000 scale_out.idle_ms=10 scale_out.check_every=1
server_config=$work/server.json

# start_ranks TAG WORLD [ARGS...]: ranks 0..WORLD-1 with one store; their ports in
# rank_port_I / rank_data_I (reused when set: a restart), pids in rank_pid_I.
start_ranks() {
  local tag=$1 world=$2 r
  shift 2
  store=127.0.0.1:$(free_port)
  for r in $(seq 0 $((world - 1))); do
    rm -f "$work/$tag-$r.ready"
    eval "jp=\${rank_port_$r:-0} dp=\${rank_data_$r:-0}"
    "$bin/cutlayer-server" -c "$server_config" --server-key "$work/keys/server.key" \
      --allow-list "$work/keys/allow-list.txt" --join-port "$jp" --data-port "$dp" \
      --ready-file "$work/$tag-$r.ready" --rank "$r" --world "$world" --store "$store" "$@" \
      >"$work/$tag-$r.out" 2>"$work/$tag-$r.log" &
    pids+=($!)
    eval "rank_pid_$r=$!"
  done
  for r in $(seq 0 $((world - 1))); do
    for _ in $(seq 300); do [ -s "$work/$tag-$r.ready" ] && break; sleep 0.1; done
    [ -s "$work/$tag-$r.ready" ] || { echo "rank $r did not start"; cat "$work/$tag-$r.log"; exit 1; }
    eval "rank_port_$r=$(sed -E 's/.*"join_port":([0-9]+).*/\1/' "$work/$tag-$r.ready")"
    eval "rank_data_$r=$(sed -E 's/.*"data_port":([0-9]+).*/\1/' "$work/$tag-$r.ready")"
  done
}
# on_rank R NAME TAG ARGS...: spawn NAME against rank R's door.
on_rank() {
  local r=$1
  shift
  eval "port=\$rank_port_$r"
  spawn "$@"
}
# wait_rank R: rank R must exit 0 within 15 s.
wait_rank() {
  local p
  eval "p=\$rank_pid_$1"
  for _ in $(seq 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$p" 2>/dev/null && { echo "rank $1 did not stop"; exit 1; }
  wait "$p" || { echo "rank $1 exited non-zero:"; tail -5 "$work/"*"-$1.log"; exit 1; }
}
forget_ports() { unset rank_port_0 rank_data_0 rank_port_1 rank_data_1; }
# rank0_fails TAG TEXT WHAT SECONDS: after rank 1 WHAT (died, stalled), rank 0 must exit
# non-zero within SECONDS with TEXT in its log; prints how long it took.
rank0_fails() {
  local start
  start=$(date +%s.%N)
  for _ in $(seq $(($4 * 10))); do kill -0 "$rank_pid_0" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$rank_pid_0" 2>/dev/null && { echo "rank 0 hangs after rank 1 $3"; exit 1; }
  if wait "$rank_pid_0"; then echo "rank 0 exited 0 after rank 1 $3"; exit 1; fi
  grep -q "$2" "$work/$1-0.log" || { tail "$work/$1-0.log"; exit 1; }
  $py -c "import sys; print(f'rank 0 stopped {float(sys.argv[2]) - float(sys.argv[1]):.1f} s after rank 1 $3')" \
    "$start" "$(date +%s.%N)"
}

# 1. Two ranks, four clients, U-shaped (labels stay with the clients; a rank joins a round
#    only between a batch's HeadGrad and the next forward).
edit_config "$work/server.json" "$work/server-u.json" train.u_shaped=true
server_config=$work/server-u.json start_ranks four 2
on_rank 0 alice -four --shard 0/4 --steps "$steps" --u-shaped
on_rank 0 bob -four --shard 1/4 --steps "$steps" --u-shaped
on_rank 1 carol -four --shard 2/4 --steps "$steps" --u-shaped
on_rank 1 dave -four --shard 3/4 --steps "$steps" --u-shaped
await -four alice bob carol dave
kill -TERM "$rank_pid_1"  # one rank told to stop: both stop after the same round
wait_rank 1
wait_rank 0
$py - "$work" "$steps" <<'PY'
import json, sys
w, steps = sys.argv[1], int(sys.argv[2])
s = [json.loads(open(f"{w}/four-{r}.out").read().strip().splitlines()[-1]) for r in (0, 1)]
for r in s:
    print(f"rank {r['rounds']['rank']}: {r['steps']} steps, {r['samples']} examples, "
          f"{r['rounds']['hash_checks']} hash checks, back {r['back_sha256'][:16]}")
assert s[0]["back_sha256"] == s[1]["back_sha256"], "the replicas differ"
assert s[0]["steps"] == s[1]["steps"] and s[0]["steps"] >= 2 * steps, [r["steps"] for r in s]
for r in s:
    # One at the start (both begin from the same back), then one after every step.
    assert r["rounds"]["hash_checks"] == r["rounds"]["steps"] + 1 and r["rounds"]["steps"] == r["steps"], r["rounds"]
assert s[0]["samples"] + s[1]["samples"] == 4 * 64 * steps, [r["samples"] for r in s]
assert s[0]["labels_received"] == s[1]["labels_received"] == 0
PY
for name in alice bob carol dave; do
  $py -c 'import json,sys; r=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); assert r["steps"]==int(sys.argv[2]), r' \
    "$work/$name-four.json" "$steps"
done

# 2. Parity: two ranks with a client each == one server accumulating their two batches.
# Rounds start once every rank has its client (and, on one server, both clients).
forget_ports
edit_config "$work/server.json" "$work/server-pair.json" train.round_start_clients=1
server_config=$work/server-pair.json start_ranks pair 2
on_rank 0 alice -pair --shard 0/2 --steps "$steps" --metrics "$work/alice-pair.jsonl" --metrics-every-step
on_rank 1 bob -pair --shard 1/2 --steps "$steps" --metrics "$work/bob-pair.jsonl" --metrics-every-step
await -pair alice bob
kill -TERM "$rank_pid_0"
wait_rank 0
wait_rank 1
edit_config "$work/server.json" "$work/server-acc.json" scale_out=DELETE train.accumulate=2 train.round_start_clients=2
server_config=$work/server-acc.json start_server acc
spawn alice -acc --shard 0/2 --steps "$steps" --metrics "$work/alice-acc.jsonl" --metrics-every-step
spawn bob -acc --shard 1/2 --steps "$steps" --metrics "$work/bob-acc.jsonl" --metrics-every-step
await -acc alice bob
stop_server
$py - "$work" "$steps" <<'PY'
import json, sys
w, steps = sys.argv[1], int(sys.argv[2])
def losses(f):
    return {r["step"]: r["loss"] for r in map(json.loads, open(f"{w}/{f}.jsonl")) if "loss" in r and "step" in r}
worst = 0.0
for n in ("alice", "bob"):
    a, b = losses(f"{n}-pair"), losses(f"{n}-acc")
    assert len(a) == len(b) == steps, (n, len(a), len(b))
    worst = max(worst, max(abs(a[k] - b[k]) for k in a))
print(f"2 ranks x 1 client vs 1 server accumulating 2 batches: {2 * steps} losses, largest difference {worst:.2e}")
assert worst <= 1e-5, worst
PY

# 3. Aggregation across the ranks: four clients (two per rank) sync their fronts through
#    rounds that close on both ranks together; every front reported at a round is the same.
forget_ports
edit_config "$configs/server-aggregation.json" "$work/server-agg.json" threads=1 transport.session_timeout_ms=3000 \
  transport.heartbeat_ms=300 train.log_every=10 train.round_wait_ms=4000 scale_out.timeout_ms=10000 \
  scale_out.idle_ms=10 scale_out.check_every=1 aggregation.start_members=4
server_config=$work/server-agg.json start_ranks agg 2
i=0
for name in alice bob carol dave; do
  client_config=$configs/client-aggregation.json on_rank $((i / 2)) "$name" -agg --shard "$i/4" --steps "$steps" \
    --metrics "$work/$name-agg.jsonl" --metrics-every-step
  i=$((i + 1))
done
await -agg alice bob carol dave
kill -TERM "$rank_pid_1"
wait_rank 1
wait_rank 0
$py - "$work" "$steps" <<'PY'
import json, sys
w, steps = sys.argv[1], int(sys.argv[2])
by_round = {}
for name in ["alice", "bob", "carol", "dave"]:
    for r in map(json.loads, open(f"{w}/{name}-agg.jsonl")):
        if "front_hash" in r:
            by_round.setdefault(r["round"], {}).setdefault(r["front_hash"], []).append(name)
split = {k: v for k, v in by_round.items() if len(v) > 1}
assert not split, f"fronts differ: {split}"
both = [k for k, v in by_round.items() if {"alice", "bob"} & set(sum(v.values(), [])) and
        {"carol", "dave"} & set(sum(v.values(), []))]
s = [json.loads(open(f"{w}/agg-{r}.out").read().strip().splitlines()[-1]) for r in (0, 1)]
assert s[0]["back_sha256"] == s[1]["back_sha256"], "the back replicas differ"
a = [r["aggregation"] for r in s]
print(f"aggregation across 2 ranks: {len(by_round)} rounds seen, {len(both)} by clients of both ranks, fronts "
      f"identical; rounds closed {a[0]['rounds']} / {a[1]['rounds']}, hash checks {s[0]['rounds']['hash_checks']}")
assert a[0]["rounds"] == a[1]["rounds"] >= steps, a
assert len(both) >= steps // 2, len(both)
PY

# 4. A rank dies; the other stops; both restart from their checkpoints.
forget_ports
ckpt=(--checkpoint-dir "$work/ckpt" --checkpoint-every 10)
start_ranks crash 2 "${ckpt[@]}"
long=$((steps * 3))
on_rank 0 alice -crash --shard 0/2 --steps "$long"
on_rank 1 bob -crash --shard 1/2 --steps "$long"
for _ in $(seq 600); do [ "$(ls "$work/ckpt/rank-1" 2>/dev/null | grep -c '^ckpt-')" -ge 2 ] && break; sleep 0.1; done
kill -9 "$rank_pid_1"
rank0_fails crash "a collective with the other ranks failed" died 20
# As if rank 1 died writing its newest checkpoint: the ranks agree on the newest step both
# hold, and rank 0 loads that one instead of its own newest.
newest=$(ls "$work/ckpt/rank-1" | grep '^ckpt-' | sort | tail -n 1)
rm "$work/ckpt/rank-1/$newest"
start_ranks resumed 2 "${ckpt[@]}" --resume
grep -q "resumed from .* instead" "$work/resumed-0.log" || { echo "rank 0 kept its newer checkpoint"; cat "$work/resumed-0.log"; exit 1; }
await -crash alice bob
kill -TERM "$rank_pid_0"
wait_rank 0
wait_rank 1
for r in 0 1; do grep -o 'resumed from .*redone' "$work/resumed-$r.log" || { cat "$work/resumed-$r.log"; exit 1; }; done
$py - "$work" <<'PY'
import json, sys
w = sys.argv[1]
s = [json.loads(open(f"{w}/resumed-{r}.out").read().strip().splitlines()[-1]) for r in (0, 1)]
assert s[0]["back_sha256"] == s[1]["back_sha256"], "the replicas differ after the restart"
print(f"restarted from checkpoints: both ranks at {s[0]['steps']} steps, replicas identical")
PY
# 5. A rank that stalls (SIGSTOP: alive, silent) ends the other within its timeout (3 s).
forget_ports
edit_config "$work/server.json" "$work/server-stall.json" train.round_wait_ms=1000 scale_out.timeout_ms=3000
server_config=$work/server-stall.json start_ranks stall 2
kill -STOP "$rank_pid_1"
rank0_fails stall "stalled past 3000 ms" stalled 30
kill -9 "$rank_pid_1"
echo "scale-out passed"
