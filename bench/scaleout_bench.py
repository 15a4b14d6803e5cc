#!/usr/bin/python3
"""Scale-out benchmark: the server tier with R ranks on this machine, 8 clients.

For each R in --ranks (default 1 2, and 4 when the machine has 8 cores or more), R
cutlayer-server ranks (R = 1: the plain single server) serve CLIENTS clients (client i on
rank i mod R), each for STEPS steps with one LibTorch thread; every rank has one thread.
Prints one JSON line per R:
  {"bench":"scaleout","ranks":R,"clients":8,"samples_per_s":..,"allreduce_ms":..,
   "back_ms":..,"replicas_identical":true,"cores":N}
samples_per_s: the ranks' summed rate over the middle of the run (their metrics lines,
the first and last fifth left out); allreduce_ms: per step, the gradient's allreduce;
collectives_ms: per step, all of the round's collectives from the header on, waiting for
the other ranks included; back_ms: per step, each rank's time in its clients' batches and
the optimizer (mean over ranks). Then the speed-ups against R = 1, and
(with --micro) the allreduce-by-size and back-compute lines of cutlayer-bench-scaleout
and the projection to R = 1..64 ranks that docs/scale-out.md explains.
On a machine with fewer cores than ranks x (1 + clients per rank) the ranks and clients
share cores, and the figure says how the tier behaves there, not how it scales.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default="build/bin")
    p.add_argument("--configs", default="configs")
    p.add_argument("--ranks", type=int, nargs="+", default=None)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--steps", type=int, default=60, help="steps per client")
    p.add_argument("--micro", action="store_true", help="also the allreduce/back micro-benchmark and the projection")
    p.add_argument("--keep", help="copy the work directory (logs, metrics) here")
    return p.parse_args()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_ready(path, proc, seconds=60):
    end = time.time() + seconds
    while time.time() < end:
        if os.path.exists(path) and os.path.getsize(path) > 0:
            return json.load(open(path))
        if proc.poll() is not None:
            raise SystemExit(f"a rank exited before it was ready (code {proc.returncode})")
        time.sleep(0.05)
    raise SystemExit(f"no {path} within {seconds} s")


def steady_rate(metrics):
    rows = [json.loads(l) for l in open(metrics) if '"samples_per_s"' in l]
    cut = len(rows) // 5
    mid = rows[cut:len(rows) - cut] or rows
    return sum(r["samples_per_s"] for r in mid) / len(mid) if mid else 0.0


def run(a, work, ranks):
    server_cfg = loopback.edit_config(f"{a.configs}/server.json", f"{work}/server-{ranks}.json", {
        "threads": 1, "log_level": "warn", "train.log_every": 10, "transport.session_timeout_ms": 10000,
        "scale_out.timeout_ms": 30000, "scale_out.check_every": 50})
    client_cfg = loopback.edit_config(f"{a.configs}/client.json", f"{work}/client.json", {
        "threads": 1, "log_level": "warn", "train.eval_samples": 64})
    store = f"127.0.0.1:{free_port()}"
    procs, outs = [], []
    for r in range(ranks):
        ready = f"{work}/r{ranks}-{r}.ready"
        cmd = [f"{a.bin}/cutlayer-server", "-c", server_cfg, "--server-key", f"{work}/keys/server.key",
               "--allow-list", f"{work}/keys/allow-list.txt", "--join-port", "0", "--data-port", "0",
               "--ready-file", ready, "--metrics", f"{work}/r{ranks}-{r}.jsonl"]
        if ranks > 1:
            cmd += ["--rank", str(r), "--world", str(ranks), "--store", store]
        out = open(f"{work}/r{ranks}-{r}.out", "w")
        procs.append(subprocess.Popen(cmd, stdout=out, stderr=open(f"{work}/r{ranks}-{r}.log", "w")))
        outs.append(out)
    ports = [wait_ready(f"{work}/r{ranks}-{r}.ready", procs[r])["join_port"] for r in range(ranks)]
    clients = []
    for i in range(a.clients):
        cmd = [f"{a.bin}/cutlayer-client", "-c", client_cfg, "--join-port", str(ports[i % ranks]),
               "--server-public-key", f"{work}/keys/server.pub", "--client-key", f"{work}/keys/c{i}.key",
               "--name", f"c{i}", "--shard", f"{i}/{a.clients}", "--steps", str(a.steps)]
        clients.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(f"{work}/c{i}-r{ranks}.log", "w")))
    for c in clients:
        if c.wait() != 0:
            raise SystemExit(f"a client failed with R={ranks} (see --keep)")
    procs[0].terminate()  # one rank told: all stop after the same round
    for p in procs:
        if p.wait(timeout=60) != 0:
            raise SystemExit(f"a rank exited non-zero with R={ranks}")
    summaries = [json.loads(open(f"{work}/r{ranks}-{r}.out").read().strip().splitlines()[-1]) for r in range(ranks)]
    allreduce = [s["rounds"]["gradient_allreduce_ms_per_step"] for s in summaries if "rounds" in s]
    collectives = [s["rounds"]["allreduce_ms_per_step"] for s in summaries if "rounds" in s]
    return {"bench": "scaleout", "ranks": ranks, "clients": a.clients,
            "samples_per_s": round(sum(steady_rate(f"{work}/r{ranks}-{r}.jsonl") for r in range(ranks)), 1),
            "allreduce_ms": round(sum(allreduce) / len(allreduce), 3) if allreduce else 0.0,
            "collectives_ms": round(sum(collectives) / len(collectives), 3) if collectives else 0.0,
            "back_ms": round(sum(s["busy_ms_per_step"] for s in summaries) / ranks, 3),
            "replicas_identical": len({s["back_sha256"] for s in summaries}) == 1,
            "cores": os.cpu_count()}


def project(micro, max_ranks=64):
    """Per step on R ranks, each on its own cores with a batch always waiting:
    back + step + ring allreduce of the gradient and of the header; rate R x batch / that."""
    back = next(m for m in micro if m["bench"] == "back")
    ar = sorted((m for m in micro if m["bench"] == "allreduce"), key=lambda m: m["bytes"])
    alpha = min(m["ms"] for m in ar[:3]) / 2  # a 2-rank ring: 2 latency-bound steps for a small tensor
    beta = ar[-1]["bytes"] / (ar[-1]["ms"] - 2 * alpha)  # bytes per ms: 2 x (R-1)/R x S = S at R = 2
    size = back["gradient_bytes"]
    base = back["batch_ms"] + back["step_ms"]
    rows = []
    for r in (1, 2, 4, 8, 16, 32, 64):
        if r > max_ranks:
            break
        ring = 0.0 if r == 1 else 2 * (r - 1) * alpha * 2 + 2 * (r - 1) / r * size / beta  # header + gradient
        t = base + ring
        rows.append({"bench": "scaleout_projection", "ranks": r, "step_ms": round(t, 3),
                     "allreduce_ms": round(ring, 3), "samples_per_s": round(r * back["batch"] / t * 1e3, 1),
                     "speedup": round(r * base / t, 2), "alpha_ms": round(alpha, 4),
                     "gb_per_s": round(beta / 1e6, 3), "gradient_bytes": size})
    return rows


def main():
    a = parse_args()
    ranks = a.ranks or ([1, 2, 4] if (os.cpu_count() or 1) >= 8 else [1, 2])
    work = tempfile.mkdtemp(prefix="cutlayer-scaleout-")
    try:
        names = ",".join(f"c{i}" for i in range(a.clients))
        subprocess.run([f"{a.bin}/cutlayer-keygen", "--out", f"{work}/keys", "--clients", names], check=True,
                       stdout=subprocess.DEVNULL)
        results = []
        for r in ranks:
            res = run(a, work, r)
            print(json.dumps(res), flush=True)
            results.append(res)
        base = results[0]["samples_per_s"] if results[0]["ranks"] == 1 else None
        if base:
            for res in results[1:]:
                print(json.dumps({"bench": "scaleout_speedup", "ranks": res["ranks"],
                                  "over_one_rank": round(res["samples_per_s"] / base, 3), "cores": os.cpu_count()}))
        if a.micro:
            out = subprocess.run([f"{a.bin}/cutlayer-bench-scaleout"], check=True, capture_output=True, text=True)
            micro = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
            for m in micro + project(micro):
                print(json.dumps(m), flush=True)
    finally:
        if a.keep:
            shutil.copytree(work, a.keep, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
