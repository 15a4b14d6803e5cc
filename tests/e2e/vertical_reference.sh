#!/usr/bin/env bash
# cutlayer-train --vertical: the monolithic reference of vertical split learning. Two
# parties, each a strip of every image and a random 80% of the people: the private set
# intersection aligns about 64% of Fashion-MNIST's training set (each party's share drawn
# apart), 150 steps learn (test accuracy well above chance), and what vertical runs do not
# take yet is refused by name.
source "$(dirname "$0")/lib.sh"
out=$("$bin/cutlayer-train" -c "$configs/client.json" --vertical 2 --steps 150 --threads 2 --log-level warn)
echo "$out"
/usr/bin/python3 - "$out" <<'PY'
import json, sys
r = json.loads(sys.argv[1].strip().splitlines()[-1])
assert r["mode"] == "vertical" and r["parties"] == 2 and r["people"] == 60000, r
assert 0.62 * 60000 < r["aligned"] < 0.66 * 60000, f"aligned {r['aligned']} is not about 0.8 x 0.8 of 60,000"
assert r["steps"] == 150 and r["samples"] == 150 * 64, r
assert r["test_acc"] > 0.6, f"test accuracy {r['test_acc']} after 150 steps: not learning"
PY
for bad in "--u-shaped" "--alpha 0.5" "--cut-values bf16" "--export $work/m.pt"; do
  # shellcheck disable=SC2086
  if "$bin/cutlayer-train" -c "$configs/client.json" --vertical 2 --steps 5 $bad >"$work/bad.out" 2>"$work/bad.log"; then
    echo "--vertical with $bad was accepted"; exit 1
  fi
  grep -q -- "--vertical does not take" "$work/bad.log" || { echo "no clear refusal for $bad:"; cat "$work/bad.log"; exit 1; }
done
echo "vertical reference: ok"
