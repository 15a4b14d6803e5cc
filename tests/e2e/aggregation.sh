#!/usr/bin/env bash
# Cross-client aggregation with real processes on loopback (fmnist-deep-front: the
# clients hold ~0.58M front parameters):
#  1. synchronous, gaussiank 0.01 with error feedback, 3 clients and a 4th joining late:
#     every client's front hash is equal at every round (and equal to the server's
#     replica), the joiner starts from a snapshot past round 0 and trains on;
#  2. compressor "none" with 1 client trains exactly as without aggregation;
#  3. bounded staleness s = 2: the server never sums a contribution more than 2 rounds
#     stale, and some are stale (the bound is exercised);
#  4. a client SIGKILLed mid-round: the round closes at its deadline, the others finish;
#  5. SIGINT reaches a client that is waiting for a round: it leaves cleanly at once.
source "$(dirname "$0")/lib.sh"
py=/usr/bin/python3
edit_config "$configs/server-aggregation.json" "$work/server-sync.json" train.log_every=10
edit_config "$configs/client-aggregation.json" "$work/client-sync.json"

# --- 1: synchronous, 3 clients + a late joiner -------------------------------------
server_config=$work/server-sync.json client_config=$work/client-sync.json
start_server s1 --metrics "$work/s1.jsonl"
i=0
for name in alice bob carol; do
  spawn "$name" "" --shard "$i/3" --steps 120 --metrics "$work/$name.jsonl" --metrics-every-step
  i=$((i + 1))
done
for _ in $(seq 300); do grep -q '"step":5,' "$work/alice.jsonl" 2>/dev/null && break; sleep 0.1; done
spawn dave "" --shard 0/3 --steps 30 --metrics "$work/dave.jsonl" --metrics-every-step
await "" alice bob carol dave
stop_server
$py - "$work" <<'PY'
import json, sys
w = sys.argv[1]
by_round = {}
for name in ["alice", "bob", "carol", "dave"]:
    for line in open(f"{w}/{name}.jsonl"):
        r = json.loads(line)
        if "front_hash" in r:
            by_round.setdefault(r["round"], {}).setdefault(r["front_hash"], []).append(name)
for line in open(f"{w}/s1.jsonl"):
    r = json.loads(line)
    if "front_hash" in r and r["round"] in by_round:
        by_round[r["round"]].setdefault(r["front_hash"], []).append("server")
shared = [k for k, v in by_round.items() if sum(len(n) for n in v.values()) > 1]
split = {k: v for k, v in by_round.items() if len(v) > 1}
assert not split, f"fronts differ: {split}"
assert len(shared) >= 50, len(shared)
dave = json.loads(open(f"{w}/dave.json").read().strip().splitlines()[-1])["sync"]
print("rounds compared", len(shared), "dave joined at round", dave["snapshot_round"], "and ran", dave["contributions"])
assert dave["snapshot_round"] > 0 and dave["contributions"] == 30 and dave["rejected"] == 0
dave_rounds = [k for k, v in by_round.items() if any("dave" in n for n in v.values())]
assert any(len(sum(by_round[k].values(), [])) > 1 for k in dave_rounds), "the joiner never shared a round"
for name in ["alice", "bob", "carol"]:
    s = json.loads(open(f"{w}/{name}.json").read().strip().splitlines()[-1])["sync"]
    assert s["bytes_ratio_to_dense"] < 0.05, s
print("synchronous aggregation: fronts identical at every round")
PY

# --- 2: compressor none, 1 client == no aggregation ---------------------------------
# A cosine learning rate, so the round's position in the schedule is checked as well.
cosine=(train.lr_schedule='"cosine"' train.lr_total_steps=40)
edit_config "$configs/server-aggregation.json" "$work/server-plain.json" aggregation=DELETE "${cosine[@]}"
edit_config "$configs/server-aggregation.json" "$work/server-none.json" "${cosine[@]}"
edit_config "$configs/client-aggregation.json" "$work/client-none.json" sync.compressor='"none"' "${cosine[@]}"
edit_config "$configs/client-aggregation.json" "$work/client-plain.json" sync=DELETE "${cosine[@]}"
server_config=$work/server-plain.json client_config=$work/client-plain.json
start_server s2a
client --client-key "$work/keys/alice.key" --steps 40 --metrics "$work/plain.jsonl" --metrics-every-step \
  >"$work/plain.json" 2>"$work/plain.log" || { tail "$work/plain.log"; exit 1; }
stop_server
server_config=$work/server-none.json client_config=$work/client-none.json
start_server s2b
client --client-key "$work/keys/alice.key" --steps 40 --metrics "$work/none.jsonl" --metrics-every-step \
  >"$work/none.json" 2>"$work/none.log" || { tail "$work/none.log"; exit 1; }
stop_server
$py - "$work" <<'PY'
import json, sys
w = sys.argv[1]
a = [json.loads(l)["loss"] for l in open(f"{w}/plain.jsonl") if '"loss"' in l]
b = [json.loads(l)["loss"] for l in open(f"{w}/none.jsonl") if '"loss"' in l]
assert len(a) == len(b) == 40, (len(a), len(b))
assert a == b, [(i, x, y) for i, (x, y) in enumerate(zip(a, b)) if x != y][:3]
ra = json.loads(open(f"{w}/plain.json").read().strip().splitlines()[-1])
rb = json.loads(open(f"{w}/none.json").read().strip().splitlines()[-1])
assert ra["test_acc"] == rb["test_acc"], (ra["test_acc"], rb["test_acc"])
print("compressor none, 1 client: 40 losses bit-identical to training without aggregation")
PY

# --- 3: bounded staleness -----------------------------------------------------------
server_config=$work/server-sync.json client_config=$work/client-sync.json
start_server s3 --staleness 2
spawn alice -s --shard 0/2 --steps 40
spawn bob -s --shard 1/2 --steps 40
await -s alice bob
stop_server
$py - "$work" <<'PY'
import json, sys
w = sys.argv[1]
a = json.loads(open(f"{w}/s3.out").read().strip().splitlines()[-1])["aggregation"]
print("staleness bound", a["staleness_bound"], "histogram", a["staleness_hist"], "max", a["max_staleness"])
assert a["staleness_bound"] == 2 and a["max_staleness"] <= 2, a
assert sum(a["staleness_hist"][1:]) > 0, "no contribution was ever stale: the bound was not exercised"
assert a["contributions"] + a["rejected"] == 80, a
PY

# --- 4: a client killed mid-round ---------------------------------------------------
edit_config "$work/server-sync.json" "$work/server-deadline.json" aggregation.deadline_ms=1500 transport.session_timeout_ms=4000
server_config=$work/server-deadline.json
start_server s4
spawn carol -k --shard 2/3 --steps 100000 --metrics "$work/carol-k.jsonl" --metrics-every-step
for _ in $(seq 300); do grep -q '"step":3,' "$work/carol-k.jsonl" 2>/dev/null && break; sleep 0.1; done
spawn alice -k --shard 0/3 --steps 60 --metrics "$work/alice-k.jsonl" --metrics-every-step
spawn bob -k --shard 1/3 --steps 60 --metrics "$work/bob-k.jsonl" --metrics-every-step
for _ in $(seq 300); do grep -q '"step":10,' "$work/alice-k.jsonl" 2>/dev/null && break; sleep 0.1; done
kill9 "$pid_carol"
wait "$pid_carol" 2>/dev/null || true
await -k alice bob
stop_server
$py - "$work" <<'PY'
import json, sys
w = sys.argv[1]
a = json.loads(open(f"{w}/s4.out").read().strip().splitlines()[-1])["aggregation"]
print("after the kill: rounds", a["rounds"], "closed by deadline", a["closed_deadline"])
assert a["closed_deadline"] >= 1, a
for name in ["alice", "bob"]:
    r = json.loads(open(f"{w}/{name}-k.json").read().strip().splitlines()[-1])
    assert r["steps"] == 60 and r["sync"]["updates"] >= 60, r
PY
grep -q "carol' gone" "$work/s4.log" || { echo "the killed client was never evicted"; exit 1; }

# --- 5: SIGINT while waiting for a round ---------------------------------------------
edit_config "$work/server-sync.json" "$work/server-slow.json" aggregation.deadline_ms=600000
server_config=$work/server-slow.json
start_server s5
spawn alice -i --shard 0/2 --steps 100000 --metrics "$work/alice-i.jsonl" --metrics-every-step
spawn bob -i --shard 1/2 --steps 100000 --metrics "$work/bob-i.jsonl" --metrics-every-step
# Both in the rounds first (a slow machine may start alice well after bob).
for name in bob alice; do
  for _ in $(seq 600); do grep -q '"step":2,' "$work/$name-i.jsonl" 2>/dev/null && break; sleep 0.1; done
  grep -q '"step":2,' "$work/$name-i.jsonl" || { echo "$name never trained"; tail "$work/$name-i.log"; exit 1; }
done
signal STOP "$pid_bob"  # bob hangs: alice's next round cannot close
# She is waiting once her steps stop: at most the round bob already joined can close.
steps=-1 still=0
for _ in $(seq 120); do
  n=$(wc -l <"$work/alice-i.jsonl")
  if [ "$n" = "$steps" ]; then still=$((still + 1)); else still=0 steps=$n; fi
  [ "$still" -ge 4 ] && break
  sleep 0.25
done
signal INT "$pid_alice"
for _ in $(seq 50); do kill -0 "$pid_alice" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid_alice" 2>/dev/null; then echo "alice ignored SIGINT while waiting for a round"; exit 1; fi
rc=0
wait "$pid_alice" || rc=$?
[ "$rc" = 130 ] || { echo "alice exited $rc after SIGINT"; tail "$work/alice-i.log"; exit 1; }
grep -q "interrupted while waiting for the server" "$work/alice-i.log" || { tail "$work/alice-i.log"; exit 1; }
signal CONT "$pid_bob"
kill9 "$pid_bob"
wait "$pid_bob" 2>/dev/null || true
stop_server
# The server saw her go by her Leave, even when a heartbeat echo raced her exit (a failed
# send ends a session only once what the peer sent before it has been read).
grep -q "alice' gone (left: interrupted" "$work/s5.log" || { tail "$work/s5.log"; exit 1; }
grep -q "'alice' left the aggregation" "$work/s5.log" || { echo "alice still holds the rounds"; exit 1; }
echo "aggregation passed"
