#!/usr/bin/env bash
# Parity: one client, same seed — the split run's loss over the first 50 steps equals the
# monolithic reference's within 1e-4 relative, in vanilla and in U-shaped mode. In
# U-shaped mode the server must never have decoded a label.
source "$(dirname "$0")/lib.sh"
compare() {  # compare A B A.json B.json: per-step losses, the final evaluations
  /usr/bin/python3 - "$1" "$2" "$3" "$4" <<'PY'
import json, sys
ra = [json.loads(l) for l in open(sys.argv[1])]
rb = [json.loads(l) for l in open(sys.argv[2])]
a = [r for r in ra if "loss" in r]
b = [r for r in rb if "loss" in r]
assert len(a) == len(b) == 50, (len(a), len(b))
# Both files end with the final evaluation, the same as the run's summary on stdout.
for rows, summary in ((ra, sys.argv[3]), (rb, sys.argv[4])):
    last, s = rows[-1], json.load(open(summary))
    assert last.get("final") is True and last["step"] == 50, last
    assert abs(last["test_acc"] - s["test_acc"]) < 1e-9 and abs(last["test_loss"] - s["test_loss"]) < 1e-9, (last, s)
fa, fb = ra[-1]["test_acc"], rb[-1]["test_acc"]
print(f"final test accuracy: split {fa:.4f}, monolithic {fb:.4f}")
assert abs(fa - fb) <= 0.002, (fa, fb)
worst = max(abs(x["loss"] - y["loss"]) / abs(y["loss"]) for x, y in zip(a, b))
assert all(x["step"] == y["step"] for x, y in zip(a, b))
print(f"max relative loss difference over 50 steps: {worst:.3g}")
assert worst <= 1e-4, worst
PY
}
# vanilla-nopeek: the NoPeek term (alpha * dCor(x, z)) on the client matches the
# monolithic run with the same term.
for mode in vanilla u-shaped vanilla-nopeek; do
  flag=()
  [ "$mode" = u-shaped ] && flag=(--u-shaped)
  [ "$mode" = vanilla-nopeek ] && flag=(--alpha 0.5)
  server_flag=()
  [ "$mode" = u-shaped ] && server_flag=(--u-shaped)
  start_server "$mode" "${server_flag[@]}"
  client --client-key "$work/keys/alice.key" "${flag[@]}" --steps 50 --metrics-every-step \
    --metrics "$work/split-$mode.jsonl" >"$work/client-$mode.json" 2>"$work/client-$mode.log" ||
    { cat "$work/client-$mode.log"; exit 1; }
  "$bin/cutlayer-train" -c "$configs/client.json" "${flag[@]}" --steps 50 --metrics-every-step \
    --metrics "$work/mono-$mode.jsonl" >"$work/mono-$mode.json" 2>/dev/null
  stop_server
  echo -n "$mode: "
  compare "$work/split-$mode.jsonl" "$work/mono-$mode.jsonl" "$work/client-$mode.json" "$work/mono-$mode.json"
  if [ "$mode" = u-shaped ]; then
    grep -q '"labels_received":0,' "$work/$mode.out" || { echo "U-shaped server decoded labels:"; cat "$work/$mode.out"; exit 1; }
    grep -q '"steps":50,' "$work/$mode.out" || { cat "$work/$mode.out"; exit 1; }
  else
    grep -q '"labels_received":[1-9]' "$work/$mode.out" || { cat "$work/$mode.out"; exit 1; }
  fi
  if [ "$mode" = vanilla-nopeek ]; then  # the dCor term was really on: logged per step
    /usr/bin/python3 -c "import json,sys; d=[r['dcor'] for r in map(json.loads, open(sys.argv[1])) if 'loss' in r]; assert min(d) > 0.1, d[:5]" \
      "$work/split-$mode.jsonl" || { echo "no dCor term in the client's metrics"; exit 1; }
  fi
done
echo "parity passed"
