#!/usr/bin/env bash
# Crash-resume of a whole 1-client split run. The server and the client are SIGKILLed
# together at a random step and both restarted with --resume: the server comes back from
# its newest checkpoint, the client from its own, and at the join the client goes back to
# its checkpoint of the step the server holds. The run then ends with a front (client,
# model_sha256) and a back (server, back_sha256) bit-identical to the uninterrupted run with
# the same seed. Four cases: vanilla, U-shaped, and vanilla with aggregation (compressor
# none, and gaussiank with error feedback).
#   CASES="vanilla agg-gaussiank" limits the cases; SPLIT_RESUME_STEPS the steps per run.
source "$(dirname "$0")/lib.sh"
steps=${SPLIT_RESUME_STEPS:-150}
[ "$steps" -ge 80 ] || { echo "SPLIT_RESUME_STEPS must be at least 80 (a kill past the second checkpoint of 25)"; exit 2; }
every=25
cases=${CASES:-vanilla u-shaped agg-none agg-gaussiank}
# Checkpoints by step count only: a time-based one falls between the two parties' steps.
# A dead server is noticed after 3 s of silence.
edit_config "$configs/server.json" "$work/server.json" checkpoint.every_seconds=0 \
  transport.session_timeout_ms=3000 transport.heartbeat_ms=300
edit_config "$configs/server-aggregation.json" "$work/server-agg.json" checkpoint.every_seconds=0 \
  transport.session_timeout_ms=3000 transport.heartbeat_ms=300
edit_config "$configs/client.json" "$work/client.json" checkpoint.every_seconds=0 train.eval_samples=2000
edit_config "$configs/client-aggregation.json" "$work/client-agg.json" checkpoint.every_seconds=0 \
  train.eval_samples=2000

field() { sed -nE "s/.*\"$1\":\"([0-9a-f]+)\".*/\1/p" "$2" | tail -n 1; }
last_step() {  # the last step in a metrics file ("" before the first)
  [ -s "$1" ] || return 0
  tail -n 1 "$1" | sed -nE 's/.*"step":([0-9]+).*/\1/p'
}

# start_case CASE TAG [--resume]: one server and alice (the server on $server_join_port
# and $server_data_port when set); the caller awaits or kills them.
start_case() {
  local c=$1 tag=$2
  shift 2
  local sflag=() cflag=()
  server_config=$work/server.json client_config=$work/client.json
  case $c in
    u-shaped) sflag=(--u-shaped) cflag=(--u-shaped) ;;
    agg-none) server_config=$work/server-agg.json client_config=$work/client-agg.json cflag=(--compressor none) ;;
    agg-gaussiank) server_config=$work/server-agg.json client_config=$work/client-agg.json ;;
  esac
  start_server "$c$tag" "${sflag[@]}" --checkpoint-dir "$work/$c$tag-server.ckpt" --checkpoint-every $every "$@"
  spawn alice "-$c$tag" "${cflag[@]}" --steps "$steps" --metrics "$work/alice-$c$tag.jsonl" --metrics-every-step \
    --checkpoint-dir "$work/$c$tag-client.ckpt" --checkpoint-every $every "$@"
}

for c in $cases; do
  # Uninterrupted.
  start_case "$c" -whole
  await "-$c-whole" alice
  stop_server
  front=$(field model_sha256 "$work/alice-$c-whole.json")
  back=$(field back_sha256 "$work/$c-whole.out")
  [ -n "$front" ] && [ -n "$back" ] || { echo "$c: no hashes in the summaries"; exit 1; }

  # Killed at a random step past the first checkpoint, both at once, and resumed. In two
  # cases the server's newest checkpoint is then removed, as if it had died just before
  # writing it: the client, a checkpoint ahead, must go back to its own of the server's step.
  behind=false
  case $c in vanilla | agg-gaussiank) behind=true ;; esac
  first=$every
  $behind && first=$((2 * every))
  target=$((first + 1 + RANDOM % (steps - first - 10)))
  start_case "$c" -cut
  while kill -0 "$pid_alice" 2>/dev/null; do
    s=$(last_step "$work/alice-$c-cut.jsonl")
    [ -n "$s" ] && [ "$s" -ge "$target" ] && break
    sleep 0.02
  done
  kill9 "$pid_alice"
  kill -9 "$server_pid"
  wait "$pid_alice" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  stopped=$(last_step "$work/alice-$c-cut.jsonl")
  [ "$stopped" -lt $((steps - 1)) ] || { echo "$c: the run ended before it was killed"; exit 1; }
  # The resumed pair writes into the same checkpoint directories.
  mv "$work/$c-cut-server.ckpt" "$work/$c-again-server.ckpt"
  mv "$work/$c-cut-client.ckpt" "$work/$c-again-client.ckpt"
  cp "$work/alice-$c-cut.jsonl" "$work/alice-$c-again.jsonl"
  if $behind; then
    newest=$(ls "$work/$c-again-server.ckpt"/ckpt-*.cutlayer | sort | tail -n 1)
    rm "$newest"
  fi
  server_join_port=$port server_data_port=$data_port start_case "$c" -again --resume
  await "-$c-again" alice
  stop_server
  log=$(grep -ho 'resumed from [^;]*\|back to this client.s checkpoint of step [0-9]*' \
    "$work/$c-again.log" "$work/alice-$c-again.log" | tr '\n' ' ')
  echo "$c: killed after step $((stopped + 1)) of $steps; $log"
  grep -q "resumed from" "$work/$c-again.log" || { echo "$c: the server did not resume"; cat "$work/$c-again.log"; exit 1; }
  grep -q "resumed from" "$work/alice-$c-again.log" || { echo "$c: the client did not resume"; exit 1; }
  [ "$(field model_sha256 "$work/alice-$c-again.json")" = "$front" ] ||
    { echo "$c: the resumed front differs"; tail -n 30 "$work/alice-$c-again.log"; exit 1; }
  [ "$(field back_sha256 "$work/$c-again.out")" = "$back" ] ||
    { echo "$c: the resumed back differs"; tail -n 30 "$work/$c-again.log"; exit 1; }
  if $behind; then
    grep -q "back to this client's checkpoint of step" "$work/alice-$c-again.log" ||
      { echo "$c: the client did not go back to the server's step"; tail -n 30 "$work/alice-$c-again.log"; exit 1; }
  fi
  echo "$c: front and back bit-identical to the uninterrupted run"
  unset server_join_port server_data_port
done
