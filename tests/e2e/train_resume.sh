#!/usr/bin/env bash
# Crash-resume of cutlayer-train. Killed at a random step and resumed with --resume, a run
# ends with a model bit-identical (model_sha256 over every parameter and buffer) to the
# uninterrupted run with the same seed, and writing checkpoints changes nothing (the same
# hash as a run without them). Three ways to stop:
#   vanilla:  SIGKILL; the newest checkpoint is then truncated, so the resume must refuse it,
#             set it aside and start from the one before;
#   u-shaped: SIGKILL;
#   sigterm:  SIGTERM, which writes a checkpoint at the step reached (nothing is redone).
source "$(dirname "$0")/lib.sh"
steps=${RESUME_STEPS:-200}
every=25

train() {  # train OUT_PREFIX ARGS...
  local out=$1
  shift
  "$bin/cutlayer-train" -c "$configs/client.json" --client-key "$work/keys/alice.key" --steps "$steps" \
    --metrics-every-step --metrics "$out.jsonl" "$@" >"$out.json" 2>"$out.log"
}
hash_of() { sed -E 's/.*"model_sha256":"([0-9a-f]+)".*/\1/' "$1"; }
last_step() {  # the last step in a metrics file ("" before the first)
  [ -s "$1" ] || return 0
  tail -n 1 "$1" | sed -nE 's/.*"step":([0-9]+).*/\1/p'
}

# The uninterrupted runs: without checkpoints (vanilla only) and with them, per layout.
train "$work/plain" || { cat "$work/plain.log"; exit 1; }
for layout in vanilla u-shaped; do
  flag=()
  [ "$layout" = u-shaped ] && flag=(--u-shaped)
  train "$work/$layout-whole" "${flag[@]}" --checkpoint-dir "$work/$layout-whole.ckpt" --checkpoint-every $every ||
    { cat "$work/$layout-whole.log"; exit 1; }
done
plain=$(hash_of "$work/plain.json") whole=$(hash_of "$work/vanilla-whole.json")
[ "$plain" = "$whole" ] || { echo "checkpointing changed the model: $plain vs $whole"; exit 1; }

for mode in vanilla u-shaped sigterm; do
  flag=()
  layout=vanilla
  [ "$mode" = u-shaped ] && flag=(--u-shaped) layout=u-shaped
  whole=$(hash_of "$work/$layout-whole.json")
  # Stop at a random step past the first checkpoint (vanilla: past the second, as its
  # newest is then truncated and the one before must be there).
  first=$every
  [ "$mode" = vanilla ] && first=$((2 * every))
  target=$((first + 1 + RANDOM % (steps - first - 10)))
  train "$work/$mode-cut" "${flag[@]}" --checkpoint-dir "$work/$mode.ckpt" --checkpoint-every $every &
  pid=$!
  pids+=("$pid")
  while kill -0 "$pid" 2>/dev/null; do
    s=$(last_step "$work/$mode-cut.jsonl")
    [ -n "$s" ] && [ "$s" -ge "$target" ] && break
    sleep 0.02
  done
  # $pid is the subshell running train(); signal/kill9 (lib.sh) reach cutlayer-train itself.
  if [ "$mode" = sigterm ]; then
    signal TERM "$pid"
    wait "$pid" || { echo "$mode: exit status $? after SIGTERM"; cat "$work/$mode-cut.log"; exit 1; }
  else
    kill9 "$pid"
    wait "$pid" 2>/dev/null || true
  fi
  stopped=$(last_step "$work/$mode-cut.jsonl")
  [ "$stopped" -lt $((steps - 1)) ] || { echo "$mode: the run ended before it was stopped"; exit 1; }
  if [ "$mode" = vanilla ]; then
    newest=$(ls "$work/$mode.ckpt"/ckpt-*.cutlayer | sort | tail -n 1)
    head -c 1000 "$newest" >"$newest.cut" && mv "$newest.cut" "$newest"
  fi
  train "$work/$mode-resumed" "${flag[@]}" --checkpoint-dir "$work/$mode.ckpt" --checkpoint-every $every --resume ||
    { cat "$work/$mode-resumed.log"; exit 1; }
  resumed=$(hash_of "$work/$mode-resumed.json")
  from=$(sed -E 's/.*"resumed_from":([0-9]+).*/\1/' "$work/$mode-resumed.json")
  line=$(grep -o 'resumed from .*redone' "$work/$mode-resumed.log") || { cat "$work/$mode-resumed.log"; exit 1; }
  echo "$mode: stopped after step $((stopped + 1)) of $steps, $line"
  [ "$resumed" = "$whole" ] || { echo "$mode: resumed model differs: $resumed vs $whole"; exit 1; }
  [ "$from" -gt 0 ] && [ "$from" -le $((stopped + 1)) ] || { echo "$mode: resumed from step $from"; exit 1; }
  if [ "$mode" = vanilla ]; then
    grep -q "refused: truncated" "$work/$mode-resumed.log" || { echo "the truncated checkpoint was not refused"; exit 1; }
    ls "$work/$mode.ckpt"/*.refused >/dev/null
    [ $((from % every)) -eq 0 ] || { echo "expected the checkpoint before the truncated one, got step $from"; exit 1; }
  fi
  if [ "$mode" = sigterm ]; then
    [ "$from" -eq $((stopped + 1)) ] || { echo "SIGTERM: checkpoint at $from, stopped after $((stopped + 1))"; exit 1; }
  fi
done
echo "train_resume: all resumed runs are bit-identical to the uninterrupted ones"
