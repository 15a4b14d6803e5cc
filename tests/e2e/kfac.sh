#!/usr/bin/env bash
# K-FAC (optimizer "kfac") with real processes on loopback, factors every 5 steps and
# inverses every 10 so that short runs exercise both:
#  1. aggregation (fmnist-deep-front, 3 clients, gaussiank 0.01): each client preconditions
#     its own contribution, and the fronts stay identical at every round (the server's
#     replica too); every party logs the layers it preconditions. Then with the factors
#     averaged (aggregation.kfac_factors "average", sync.share_kfac_factors), decomposed by
#     the server or by every member: the members' preconditioners are identical at every
#     round too, and both sides count the factors' traffic;
#  2. crash-resume (tests/e2e/split_resume.sh on K-FAC configs: vanilla, U-shaped and
#     aggregation, the last also with averaged factors): the factors and inverses come back
#     from the checkpoints (and the server's snapshot), so the resumed run ends
#     bit-identical to the uninterrupted one.
source "$(dirname "$0")/lib.sh"
py=/usr/bin/python3
kfac='{"factor_every": 5, "inverse_every": 10}'
mkdir -p "$work/configs"
for c in server client server-aggregation client-aggregation; do
  edit_config "$configs/$c.json" "$work/configs/$c.json" train.optimizer='"kfac"' train.kfac="$kfac"
done

# --- 1: aggregation, 3 clients, factors local / averaged (decomposed by the server or by
# every member) --------------------------------------------------------------------------
aggregate() {  # MODE: local | server | members
  local mode=$1 sc=$work/configs/server-aggregation.json cc=$work/configs/client-aggregation.json
  if [ "$mode" != local ]; then
    sc=$work/configs/server-$mode.json cc=$work/configs/client-share.json
    edit_config "$work/configs/server-aggregation.json" "$sc" aggregation.kfac_factors='"average"' \
      aggregation.kfac_decompositions="\"$mode\""
    edit_config "$work/configs/client-aggregation.json" "$cc" sync.share_kfac_factors=true
  fi
  server_config=$sc client_config=$cc
  start_server "s-$mode" --metrics "$work/s-$mode.jsonl"
  local i=0
  for name in alice bob carol; do
    spawn "$name" "-$mode" --shard "$i/3" --steps 40 --metrics "$work/$name-$mode.jsonl" --metrics-every-step
    i=$((i + 1))
  done
  await "-$mode" alice bob carol
  stop_server
  grep -q "K-FAC preconditions 1 layer(s): back.0" "$work/s-$mode.log" || { echo "the server's back is not preconditioned"; exit 1; }
  for name in alice bob carol; do
    grep -q "K-FAC preconditions 3 layer(s): front.0, front.3, front.7" "$work/$name-$mode.log" ||
      { echo "$name's front is not preconditioned:"; grep kfac "$work/$name-$mode.log"; exit 1; }
  done
  $py - "$work" "$mode" <<'PY2'
import json, sys
w, mode = sys.argv[1:]
fronts, kfacs = {}, {}
for name in ["alice", "bob", "carol", "s"]:
    for line in open(f"{w}/{name}-{mode}.jsonl"):
        r = json.loads(line)
        if "front_hash" in r:
            fronts.setdefault(r["round"], set()).add(r["front_hash"])
        if "kfac_hash" in r:
            kfacs.setdefault(r["round"], set()).add(r["kfac_hash"])
split = {k: v for k, v in fronts.items() if len(v) > 1}
assert not split, f"fronts differ: {split}"
assert len(fronts) >= 35, len(fronts)
for name in ["alice", "bob", "carol"]:
    s = json.loads(open(f"{w}/{name}-{mode}.json").read().strip().splitlines()[-1])
    assert s["steps"] == 40 and s["final_loss"] < 2.3, s
    if mode != "local":
        assert s["sync"]["kfac_bytes_up"] > 0 and s["sync"]["kfac_bytes_down"] > 0, s["sync"]
summary = [json.loads(l) for l in open(f"{w}/s-{mode}.out") if l.startswith('{"server":"summary"')][-1]
if mode == "local":
    assert not kfacs and "kfac" not in summary["aggregation"], (kfacs, summary)
    print("K-FAC with aggregation, factors local: fronts identical at all", len(fronts), "rounds")
    sys.exit(0)
k = summary["aggregation"]["kfac"]
# 40 steps each, factors every 5: 8 factor steps per member; shipped every 2nd factor round
assert k["decompositions"] == mode and k["factor_rounds"] >= 8 and k["shipped"] >= 4, k
assert (k["decompose_ms"] > 0) == (mode == "server"), k
differ = {r: v for r, v in kfacs.items() if len(v) > 1}
assert not differ, f"the shared preconditioner differs between members: {differ}"
held = [r for r, v in kfacs.items() if v != {"none"}]
assert len(held) >= 25, f"a shared preconditioner at only {len(held)} rounds"
print(f"K-FAC with aggregation, factors averaged, decomposed by the {mode}: fronts identical at all",
      len(fronts), f"rounds, the preconditioner identical at all {len(kfacs)} ({k})")
PY2
}
for mode in local server members; do aggregate "$mode"; done

# Consent: a client that does not share its factors cannot join an aggregation that averages
# them, and says why; a config that shares them without K-FAC is refused naming the field.
server_config=$work/configs/server-server.json client_config=$work/configs/client-aggregation.json
start_server s-consent
if client --client-key "$work/keys/alice.key" --name alice --steps 5 >"$work/consent.json" 2>"$work/consent.log"; then
  echo "a client that does not share its K-FAC factors joined an aggregation that averages them"; exit 1
fi
grep -q "sync.share_kfac_factors: the server's aggregation averages its members' K-FAC factors" "$work/consent.log" ||
  { echo "no clear refusal:"; tail -5 "$work/consent.log"; exit 1; }
stop_server
edit_config "$configs/client-aggregation.json" "$work/configs/client-share-sgd.json" sync.share_kfac_factors=true
if "$bin/cutlayer-client" -c "$work/configs/client-share-sgd.json" --steps 1 >/dev/null 2>"$work/share-sgd.log"; then
  echo "share_kfac_factors without K-FAC was accepted"; exit 1
fi
grep -q "sync.share_kfac_factors" "$work/share-sgd.log" || { echo "no field named:"; cat "$work/share-sgd.log"; exit 1; }
echo "K-FAC factor sharing needs the client's consent"

# --- 2: crash-resume ----------------------------------------------------------------
CASES="vanilla u-shaped agg-gaussiank" SPLIT_RESUME_STEPS=${SPLIT_RESUME_STEPS:-80} \
  bash "$(dirname "$0")/split_resume.sh" "$bin" "$work/configs"
# and with the factors averaged (decomposed by the server): the server's checkpoints hold the
# shared factors and what it last shipped, a re-joining client gets them in the snapshot.
mkdir -p "$work/configs-shared"
cp "$work/configs/server-server.json" "$work/configs-shared/server-aggregation.json"
cp "$work/configs/client-share.json" "$work/configs-shared/client-aggregation.json"
cp "$work/configs/server.json" "$work/configs/client.json" "$work/configs-shared/"
CASES="agg-gaussiank" SPLIT_RESUME_STEPS=${SPLIT_RESUME_STEPS:-80} \
  bash "$(dirname "$0")/split_resume.sh" "$bin" "$work/configs-shared"
echo "K-FAC: resumed runs bit-identical (factors local, and averaged)"
