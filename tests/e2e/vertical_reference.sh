#!/usr/bin/env bash
# cutlayer-train --vertical: the monolithic reference of vertical split learning. Two
# parties, each a strip of every image and a random 80% of the people: the private set
# intersection aligns about 64% of Fashion-MNIST's training set (each party's share drawn
# apart), 150 steps learn (test accuracy well above chance), the same run twice gives the
# same model; a small table split by columns trains; too few people in common, too narrow
# parts and what vertical runs do not take yet are refused by name.
source "$(dirname "$0")/lib.sh"
summary() { tail -n 1 "$1"; }
train() {  # train OUT ARGS...
  local out=$1
  shift
  "$bin/cutlayer-train" --threads 2 --log-level warn "$@" >"$work/$out.json" 2>"$work/$out.log" ||
    { cat "$work/$out.log"; exit 1; }
}
train a -c "$configs/client.json" --vertical 2 --steps 150
train b -c "$configs/client.json" --vertical 2 --steps 150
summary "$work/a.json"
/usr/bin/python3 - "$(summary "$work/a.json")" "$(summary "$work/b.json")" <<'PY'
import json, sys
r, again = (json.loads(a) for a in sys.argv[1:])
assert r["mode"] == "vertical" and r["parties"] == 2 and r["people"] == 60000, r
assert 0.62 * 60000 < r["aligned"] < 0.66 * 60000, f"aligned {r['aligned']} is not about 0.8 x 0.8 of 60,000"
assert r["steps"] == 150 and r["samples"] == 150 * 64, r
assert r["test_acc"] > 0.6, f"test accuracy {r['test_acc']} after 150 steps: not learning"
assert r["model_sha256"] == again["model_sha256"], "the same seed gave another model"
PY

# A table: 600 people, 8 feature columns among 4 parties (2 each), 2 classes, no test set.
/usr/bin/python3 - "$work/table.csv" <<'PY'
import random, sys
random.seed(3)
with open(sys.argv[1], "w") as f:
    f.write(",".join(f"f{i}" for i in range(8)) + ",label\n")
    for _ in range(600):
        x = [random.gauss(0, 1) for _ in range(8)]
        f.write(",".join(f"{v:.4f}" for v in x) + f",{int(x[0] + x[7] > 0)}\n")
PY
edit_config "$configs/client.json" "$work/table.json" 'train.dataset="csv"' "train.train_csv=\"$work/table.csv\"" \
  'train.data_dir=DELETE' 'train.normalization={"scale":1,"mean":0,"std":1}'
train t -c "$work/table.json" --vertical 4 --vertical-keep 0.9 --epochs 5
/usr/bin/python3 - "$(summary "$work/t.json")" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
assert r["parties"] == 4 and r["people"] == 600 and 0.5 * 600 < r["aligned"] < 0.8 * 600, r
assert r["test_acc"] == -1 and r["steps"] > 0 and r["final_loss"] < 0.69, r  # no test set; it learnt something
PY

refused() {  # refused WHAT GREP ARGS...: cutlayer-train ARGS fails, its message contains GREP
  local what=$1 want=$2
  shift 2
  if "$bin/cutlayer-train" --steps 5 "$@" >"$work/bad.out" 2>"$work/bad.log"; then
    echo "$what was accepted"; exit 1
  fi
  grep -q -- "$want" "$work/bad.log" || { echo "no clear refusal of $what:"; cat "$work/bad.log"; exit 1; }
}
refused "nobody in common" "no person is held by all parties" -c "$configs/client.json" --vertical 7 --vertical-keep 0.01
printf 'f0,f1,f2,label\n0.1,0.2,0.3,0\n0.4,0.5,0.6,1\n' >"$work/narrow.csv"
edit_config "$work/table.json" "$work/narrow.json" "train.train_csv=\"$work/narrow.csv\""
refused "parts of no column" "--vertical 4" -c "$work/narrow.json" --vertical 4 --vertical-keep 1
edit_config "$configs/client.json" "$work/kfac.json" 'train.optimizer="kfac"'
refused "K-FAC" "--vertical does not take" -c "$work/kfac.json" --vertical 2
for bad in "--u-shaped" "--alpha 0.5" "--noise 0.1" "--cut-values bf16" "--checkpoint-dir $work/ckpt" \
           "--export $work/m.pt" "--save-front $work/f.pt"; do
  # shellcheck disable=SC2086
  refused "--vertical 2 $bad" "--vertical does not take" -c "$configs/client.json" --vertical 2 $bad
done
echo "vertical reference: ok"
