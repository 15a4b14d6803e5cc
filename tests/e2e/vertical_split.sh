#!/usr/bin/env bash
# Vertical split learning with real processes: a server and two parties (cutlayer-client
# with a "vertical" object), each holding one strip of every Fashion-MNIST image for its own
# random 80% of the people, real CURVE keys and sealed channels on loopback. The parties'
# private set intersection travels through the server; then every step the server joins
# both cuts, party 0 sends the labels, each party gets its share of the gradient back.
#  1. The split run is the monolithic reference (cutlayer-train --vertical 2): the same
#     people aligned, the same per-step losses, the same test accuracy; the bytes per step
#     are the two cuts and their gradients.
#  2. Four parties whose cuts the server sums: the reference with --vertical-join sum.
#     The leakage report measures party 1's cut (its saved front, its strip).
#  3. What goes wrong is said: a horizontal client, a party index taken twice, a party
#     that stalls past vertical.step_timeout_ms, a party that leaves (SIGTERM) — the others
#     stop with the reason. NoPeek on one party trains and reports its dCor.
source "$(dirname "$0")/lib.sh"
server_config=$work/server.json client_config=$work/party.json
names=(alice bob carol dave)
# 2,000 test samples (the evaluation is not what is tested here)
edit_config "$configs/client-vertical.json" "$work/party.json" 'train.eval_samples=2000'
edit_config "$configs/client.json" "$work/mono.json" 'train.eval_samples=2000'

# split TAG PARTIES STEPS [ARGS...]: a vertical run of PARTIES parties; metrics per step.
split() {
  local tag=$1 parties=$2 steps=$3 k
  shift 3
  start_server "server$tag"
  for ((k = 0; k < parties; k++)); do
    spawn "${names[$k]}" "$tag" --party "$k" --steps "$steps" --threads 1 --metrics-every-step \
      --metrics "$work/${names[$k]}$tag.jsonl" --save-front "$work/${names[$k]}$tag.pt" "$@"
  done
  await "$tag" "${names[@]:0:$parties}"
  stop_server
}
# reference TAG ARGS...: cutlayer-train's vertical reference, metrics per step.
reference() {
  local tag=$1
  shift
  "$bin/cutlayer-train" -c "$work/mono.json" --threads 1 --log-level warn --metrics-every-step \
    --metrics "$work/mono$tag.jsonl" "$@" >"$work/mono$tag.json" 2>"$work/mono$tag.log" ||
    { cat "$work/mono$tag.log"; exit 1; }
}
# same TAG PARTIES: the split run's summaries and per-step losses against the reference's.
same() {
  /usr/bin/python3 - "$work" "$1" "$2" <<'PY'
import json, sys
work, tag, parties = sys.argv[1], sys.argv[2], int(sys.argv[3])
names = ["alice", "bob", "carol", "dave"][:parties]
mono = json.loads(open(f"{work}/mono{tag}.json").read().splitlines()[-1])
runs = [json.loads(open(f"{work}/{n}{tag}.json").read().splitlines()[-1]) for n in names]
def losses(path):
    return [r["loss"] for r in map(json.loads, open(path)) if "loss" in r and "test_acc" not in r]
ref = losses(f"{work}/mono{tag}.jsonl")
for n, r in zip(names, runs):
    assert r["mode"] == "vertical" and r["parties"] == parties and r["aligned"] == mono["aligned"], (r, mono)
    assert r["steps"] == mono["steps"] and r["test_acc"] == runs[0]["test_acc"], (r, runs[0])
    assert abs(r["test_acc"] - mono["test_acc"]) <= 0.002, (r["test_acc"], mono["test_acc"])
got = losses(f"{work}/alice{tag}.jsonl")  # party 0: the server's loss of each step
assert len(got) == len(ref) == mono["steps"], (len(got), len(ref))
worst = max(abs(a - b) / abs(b) for a, b in zip(got, ref))
assert worst <= 1e-3, worst
assert got[-1] < 0.8 * got[0], (got[0], got[-1])  # it learns
print(f"{parties} parties: {mono['aligned']} people aligned, max relative loss difference to the reference over "
      f"{len(ref)} steps {worst:.3g}, test accuracy {runs[0]['test_acc']} (reference {mono['test_acc']}), "
      f"{runs[0]['bytes_per_step']:.0f} bytes per step at party 0")
PY
}

edit_config "$configs/server-vertical.json" "$server_config"
split a 2 60
reference a --vertical 2 --steps 60
same a 2
/usr/bin/python3 - "$work/alicea.json" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
# Per step: 64 x 1344 float32 up and down, plus the labels and frame overheads.
assert 64 * 1344 * 4 * 2 < r["bytes_per_step"] < 1.02 * 64 * 1344 * 4 * 2 + 2048, r["bytes_per_step"]
PY
grep -q "joined as party 1 of 2" "$work/servera.log" || { echo "the server did not log the parties"; exit 1; }
# The leakage report of party 1's cut: its saved front on its strip of each test image.
edit_config "$work/party.json" "$work/party1.json" 'vertical.party=1'
"$bin/cutlayer-leakage" -c "$work/party1.json" --front "$work/boba.pt" --eval 200 --aux 400 --epochs 1 \
  -o "$work/leakage" >"$work/leakage.json" 2>"$work/leakage.log" || { cat "$work/leakage.log"; exit 1; }
/usr/bin/python3 - "$work/leakage.json" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
assert r["model"] == "vertical party 1 of 2" and r["n"] == 200, r
assert r["perm_floor"] < r["dcor"] <= 1 and 0 < r["decoder"]["mse"], r
print(f"party 1's cut: dCor {r['dcor']:.3f} (floor {r['perm_floor']:.3f}), decoder SSIM {r['decoder']['ssim']:.3f}")
PY

edit_config "$configs/server-vertical.json" "$server_config" 'vertical.parties=4' 'vertical.join="sum"'
client_config=$work/party4.json
edit_config "$work/party.json" "$client_config" 'vertical.parties=4' 'vertical.join="sum"'
split b 4 20
reference b --vertical 4 --vertical-join sum --steps 20
same b 4

# What goes wrong is said.
client_config=$work/party.json
edit_config "$configs/server-vertical.json" "$server_config" 'vertical.step_timeout_ms=3000'
start_server c
# wait_log FILE TEXT: until FILE holds TEXT (at most 60 s).
wait_log() {
  for _ in $(seq 600); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "no '$2' in $1:"; cat "$1"; exit 1
}
# fails NAME TAG TEXT: the backgrounded client NAME exits non-zero and its log says TEXT.
fails() {
  local p
  eval "p=\$pid_$1"
  if wait "$p"; then echo "$1 did not stop"; exit 1; fi
  grep -q -- "$3" "$work/$1$2.log" || { echo "$1 does not say '$3':"; tail -5 "$work/$1$2.log"; exit 1; }
}
client_config=$configs/client.json spawn carol c --steps 5
fails carol c "this server trains vertical split learning among 2 parties"
spawn alice c --party 0 --steps 100000
wait_log "$work/c.log" "'alice' joined as party 0"
spawn dave c --party 0 --steps 5
fails dave c "party 0 has joined already (as 'alice')"
edit_config "$work/party.json" "$work/seed2.json" 'train.seed=2'
client_config=$work/seed2.json spawn carol c --party 1 --steps 5
fails carol c "is not party alice's (train.seed 1, batch_size 64"
spawn bob c --party 1 --steps 100000 --alpha 0.5
wait_log "$work/alicec.log" "step 100/"
kill -STOP "$pid_bob" "$(pgrep -P "$pid_bob")"  # bob stalls: no cut within 3 s
fails alice c "party 1 ('bob') sent no cut for step"
kill -CONT "$pid_bob" "$(pgrep -P "$pid_bob")"
fails bob c "vertical training needs all 2 parties"
spawn alice d --party 0 --steps 100000
spawn bob d --party 1 --steps 100000 --alpha 0.5 --metrics "$work/bob-nopeek.jsonl"
wait_log "$work/bobd.log" "step 100/"
signal TERM "$pid_bob"
wait "$pid_bob" || [ $? = 130 ] || { echo "bob did not stop cleanly"; tail -5 "$work/bobd.log"; exit 1; }
fails alice d "party 1 ('bob') left (left: interrupted)"
/usr/bin/python3 - "$work/bob-nopeek.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert rows and all(0 < r["dcor"] < 1 for r in rows if "dcor" in r), rows[:3]  # NoPeek's dCor at party 1
PY
stop_server
echo "refusals, a stalled party, a party that left, NoPeek at one party: as expected"
