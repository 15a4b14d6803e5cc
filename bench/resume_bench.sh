#!/usr/bin/env bash
# bench/resume_bench.sh BIN CONFIGS: crash-resume figures, one JSON line per case.
#   train-vanilla, train-u-shaped, train-sigterm: cutlayer-train stopped at a random step
#     and resumed (tests/e2e/train_resume.sh, which asserts the bit identity);
#   split-1-vanilla, split-1-u-shaped, split-1-agg-none, split-1-agg-gaussiank: a 1-client
#     split run, server and client SIGKILLed together at a random step and both resumed
#     (tests/e2e/split_resume.sh, which asserts front and back bit-identical);
#   server-kill-3-clients-agg: three clients with aggregation, the server SIGKILLed halfway
#     and resumed (tests/e2e/server_resume.sh): steps redone and the accuracy delta against
#     the same run without the crash;
#   server-checkpoint: the server's checkpoint write time at fmnist sizes (back + replica +
#     optimizers, sealed, fsynced) from that run's log, and its share of the default
#     interval (checkpoint.every_seconds = 300) and of the run's own interval (30 steps).
set -euo pipefail
bin=$1 configs=$2
here=$(cd "$(dirname "$0")/.." && pwd)
keep=$(mktemp -d)
trap 'rm -rf "$keep"' EXIT
py=/usr/bin/python3
bash "$here/tests/e2e/train_resume.sh" "$bin" "$configs" >"$keep/train.txt"
bash "$here/tests/e2e/split_resume.sh" "$bin" "$configs" >"$keep/split.txt"
KEEP_WORK="$keep/server" bash "$here/tests/e2e/server_resume.sh" "$bin" "$configs" >"$keep/server.txt"
$py - "$keep" <<'PY'
import glob, json, re, sys
keep = sys.argv[1]
for line in open(f"{keep}/train.txt"):
    m = re.match(r"(\S+): stopped after step (\d+) of \d+, resumed from .* after (\d+) steps; (\d+) steps done", line)
    if m:
        print(json.dumps({"bench": "resume", "case": f"train-{m[1]}", "killed_at_step": int(m[2]),
                          "resumed_from": int(m[3]), "steps_redone": int(m[4]), "bit_identical": True}))
split = open(f"{keep}/split.txt").read()
for m in re.finditer(r"^(\S+): killed after step (\d+) of \d+; resumed from \S+: (\d+) back steps(.*)$", split, re.M):
    back = re.search(r"back to this client's checkpoint of step (\d+)", m[4])
    identical = f"{m[1]}: front and back bit-identical" in split
    print(json.dumps({"bench": "resume", "case": f"split-1-{m[1]}", "killed_at_step": int(m[2]),
                      "server_resumed_at": int(m[3]), "client_went_back": back is not None,
                      "bit_identical": identical}))
text = open(f"{keep}/server.txt").read()
m = re.search(r"(\d+) back steps, round (\d+); (\d+) steps done before the stop are redone", text)
a = re.search(r"final test accuracy: ([\d.]+) without the crash, ([\d.]+) with it", text)
print(json.dumps({"bench": "resume", "case": "server-kill-3-clients-agg", "resumed_at_back_step": int(m[1]),
                  "round": int(m[2]), "steps_redone": int(m[3]), "acc_whole": float(a[1]), "acc_crash": float(a[2]),
                  "acc_delta": round(float(a[2]) - float(a[1]), 4)}))
log = open(glob.glob(f"{keep}/server/*/after.log")[0] if glob.glob(f"{keep}/server/*/after.log") else
           glob.glob(f"{keep}/server/after.log")[0]).read()
c = re.search(r"checkpoints: (\d+) written \(([\d.]+) MB of state\), ([\d.]+) ms on average, ([\d.]+) ms at most", log)
out = glob.glob(f"{keep}/server/**/after.out", recursive=True)[0]
summary = json.loads(open(out).read().strip().splitlines()[-1])
written, ms = int(c[1]), float(c[3])
print(json.dumps({"bench": "resume", "case": "server-checkpoint", "state_mb": float(c[2]), "checkpoint_ms": ms,
                  "checkpoint_ms_max": float(c[4]), "share_of_interval": round(ms / 300000, 6),
                  "share_at_every_30_steps": round(written * ms / (summary["seconds"] * 1000), 4)}))
PY
