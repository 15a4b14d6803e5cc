#!/usr/bin/env bash
# K-FAC (optimizer "kfac") with real processes on loopback, factors every 5 steps and
# inverses every 10 so that short runs exercise both:
#  1. aggregation (fmnist-deep-front, 3 clients, gaussiank 0.01): each client preconditions
#     its own contribution, and the fronts stay identical at every round (the server's
#     replica too); every party logs the layers it preconditions;
#  2. crash-resume (tests/e2e/split_resume.sh on K-FAC configs: vanilla, U-shaped and
#     aggregation): the factors and inverses come back from the checkpoints, so the resumed
#     run ends bit-identical to the uninterrupted one.
source "$(dirname "$0")/lib.sh"
py=/usr/bin/python3
kfac='{"factor_every": 5, "inverse_every": 10}'
mkdir -p "$work/configs"
for c in server client server-aggregation client-aggregation; do
  edit_config "$configs/$c.json" "$work/configs/$c.json" train.optimizer='"kfac"' train.kfac="$kfac"
done

# --- 1: aggregation, 3 clients ----------------------------------------------------
server_config=$work/configs/server-aggregation.json client_config=$work/configs/client-aggregation.json
start_server s1 --metrics "$work/s1.jsonl"
i=0
for name in alice bob carol; do
  spawn "$name" "" --shard "$i/3" --steps 40 --metrics "$work/$name.jsonl" --metrics-every-step
  i=$((i + 1))
done
await "" alice bob carol
stop_server
grep -q "K-FAC preconditions 1 layer(s): back.0" "$work/s1.log" || { echo "the server's back is not preconditioned"; exit 1; }
for name in alice bob carol; do
  grep -q "K-FAC preconditions 3 layer(s): front.0, front.3, front.7" "$work/$name.log" ||
    { echo "$name's front is not preconditioned:"; grep kfac "$work/$name.log"; exit 1; }
done
$py - "$work" <<'PY'
import json, sys
w = sys.argv[1]
by_round = {}
for name in ["alice", "bob", "carol", "s1"]:
    for line in open(f"{w}/{name}.jsonl"):
        r = json.loads(line)
        if "front_hash" in r:
            by_round.setdefault(r["round"], set()).add(r["front_hash"])
split = {k: v for k, v in by_round.items() if len(v) > 1}
assert not split, f"fronts differ: {split}"
assert len(by_round) >= 35, len(by_round)
for name in ["alice", "bob", "carol"]:
    s = json.loads(open(f"{w}/{name}.json").read().strip().splitlines()[-1])
    assert s["steps"] == 40 and s["final_loss"] < 2.3, s
print("K-FAC with aggregation: fronts identical at all", len(by_round), "rounds")
PY

# --- 2: crash-resume ----------------------------------------------------------------
CASES="vanilla u-shaped agg-gaussiank" SPLIT_RESUME_STEPS=${SPLIT_RESUME_STEPS:-80} \
  bash "$(dirname "$0")/split_resume.sh" "$bin" "$work/configs"
echo "K-FAC: resumed runs bit-identical"
