#!/usr/bin/env bash
# The compressed cut with real processes: int8 activations, top 10% of each sample's (one in
# ten of them drawn at random), bf16 gradients. The split run is the monolithic reference
# run through the same cut (cutlayer-train --cut-*): the server learns from exactly what the
# client sent and the client from exactly what came back, so the per-step losses agree as
# they do for the float32 cut (vanilla with NoPeek on: its dCor is measured on what is
# sent, on both sides). And the bytes that crossed are what the coding says.
source "$(dirname "$0")/lib.sh"
cut=(--cut-values int8 --cut-grad-values bf16 --cut-topk 0.1 --cut-random 0.1)
for mode in vanilla u-shaped; do
  flag=(--alpha 0.5)
  server_flag=()
  [ "$mode" = u-shaped ] && flag=(--u-shaped) server_flag=(--u-shaped)
  start_server "$mode" "${server_flag[@]}"
  client --client-key "$work/keys/alice.key" "${flag[@]}" "${cut[@]}" --steps 40 --metrics-every-step \
    --metrics "$work/split-$mode.jsonl" >"$work/client-$mode.json" 2>"$work/client-$mode.log" ||
    { cat "$work/client-$mode.log"; exit 1; }
  grep -q "compressed cut: int8 up, bf16 down, top 461 of 4608 per sample" "$work/client-$mode.log" ||
    { echo "the client did not announce its cut"; cat "$work/client-$mode.log"; exit 1; }
  grep -q "cut int8 up, bf16 down, top 461 of 4608" "$work/$mode.log" ||
    { echo "the server did not log the client's cut"; cat "$work/$mode.log"; exit 1; }
  client --client-key "$work/keys/alice.key" "${flag[@]}" --steps 40 \
    >"$work/plain-$mode.json" 2>"$work/plain-$mode.log" || { cat "$work/plain-$mode.log"; exit 1; }
  stop_server
  "$bin/cutlayer-train" -c "$configs/client.json" "${flag[@]}" "${cut[@]}" --steps 40 --metrics-every-step \
    --metrics "$work/mono-$mode.jsonl" >"$work/mono-$mode.json" 2>/dev/null
  echo -n "$mode: "
  /usr/bin/python3 - "$work/split-$mode.jsonl" "$work/mono-$mode.jsonl" "$work/client-$mode.json" \
    "$work/plain-$mode.json" "$mode" <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
a = [r for r in a if "loss" in r and "test_acc" not in r]
b = [r for r in b if "loss" in r and "test_acc" not in r]
assert len(a) == len(b) == 40, (len(a), len(b))
worst = max(abs(x["loss"] - y["loss"]) / abs(y["loss"]) for x, y in zip(a, b))
print(f"max relative loss difference to the monolithic run through the same cut over 40 steps: {worst:.3g}", end="; ")
assert worst <= 1e-3, worst
assert a[-1]["loss"] < 0.8 * a[0]["loss"], (a[0], a[-1])  # it learns
c, p = json.load(open(sys.argv[3])), json.load(open(sys.argv[4]))
# Per step up: 64 x 461 int8 values + about a byte of index each + 64 scales, vs 64 x 4608
# float32 (both with the same frame overheads); down: 64 x 461 bf16 vs 64 x 4608 float32.
up, down = c["bytes_up"] / p["bytes_up"], c["bytes_down"] / p["bytes_down"]
print(f"bytes up {up:.4f}, down {down:.4f} of the float32 cut's")
if sys.argv[5] == "vanilla":
    assert 0.045 < up < 0.06 and 0.045 < down < 0.06, (up, down)
else:  # U-shaped: the head's round trip (h down, dL/dh up) is float32 in both runs
    assert 0.045 < up < 0.08 and down < 0.4, (up, down)
PY
done
echo "compressed cut passed"
