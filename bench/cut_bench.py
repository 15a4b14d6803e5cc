#!/usr/bin/python3
"""The compressed cut: accuracy against bytes per step, one split run per setting.

Each setting trains fmnist-cnn split on loopback with real processes and keys: 3 clients on
their thirds of Fashion-MNIST, EPOCHS (default 3) epochs each, cosine learning rate over
each party's steps (as `scripts/bench.sh e2e`'s convergence run), every client with the
same `cut` coding. One JSON line per setting:
  {"bench":"cut","values":"int8","grad_values":"int8","topk":0.05,"random":0,
   "bytes_per_step":..,"ratio_bytes":..,"test_acc":..,"acc_delta":..,"samples_per_s":..}
bytes_per_step: what one client's training steps moved both ways over the sealed channel
(frames, tags and meta included), per step; ratio_bytes against the fp32 cut's; test_acc
the clients' mean final test accuracy, acc_delta against the fp32 cut's in the same run
(points = 100 x). samples_per_s: the clients' training rate summed.
Then the leakage report (cutlayer-leakage: dCor, decoder SSIM) of client 0's front for the
fp32 cut and the two smallest settings within 1 point of it, through their cut.
Writes OUT/results.jsonl and OUT/cut.png (test accuracy against bytes per step).
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = ("fp32,bf16,fp16,int8,int8:0.1,int8:0.05,int8:0.02,int8:0.02:0.1,int8:0.01")


def parse(setting):  # VALUES[/GRAD_VALUES][:TOPK[:RANDOM]]
    parts = setting.split(":")
    values, _, grad = parts[0].partition("/")
    return {"values": values, "grad_values": grad or values, "topk": float(parts[1]) if len(parts) > 1 else 0.0,
            "random": float(parts[2]) if len(parts) > 2 else 0.0}


def flags(s):
    f = ["--cut-values", s["values"], "--cut-grad-values", s["grad_values"]]
    if s["topk"]:
        f += ["--cut-topk", str(s["topk"])]
    if s["random"]:
        f += ["--cut-random", str(s["random"])]
    return f


def train_bytes(metrics):
    """bytes up + down at the last progress line before the final evaluation, and its step."""
    last = None
    for line in open(metrics):
        r = json.loads(line)
        if "bytes_up" in r:
            last = r
    return last["bytes_up"] + last["bytes_down"], last["step"]


def run(a, s, index):
    tag = f"{index}-" + "-".join(str(v) for v in s.values())  # a setting may come twice (the spread)
    d = f"{a.work}/{tag}"
    os.makedirs(d, exist_ok=True)
    server, port = loopback.start_server(a.bin, f"{a.work}/keys", f"{a.work}/server.json", d, log_level="warn")
    procs = []
    for i in range(3):
        cmd = [f"{a.bin}/cutlayer-client", "-c", f"{a.work}/client.json", "--join-port", str(port),
               "--server-public-key", f"{a.work}/keys/server.pub", "--client-key", f"{a.work}/keys/c{i}.key",
               "--name", f"c{i}", "--shard", f"{i}/3", "--threads", "1", "--epochs", str(a.epochs),
               "--metrics", f"{d}/c{i}.jsonl", "--log-level", "info"] + flags(s)
        if a.steps:
            cmd += ["--steps", str(a.steps)]
        if i == 0:
            cmd += ["--save-front", f"{d}/front.pt"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(f"{d}/c{i}.log", "w"), text=True))
    outs = loopback.finish_clients(procs, server, d, tag)
    server.terminate()
    server.communicate()
    per_step = []
    for i in range(3):
        b, steps = train_bytes(f"{d}/c{i}.jsonl")
        per_step.append(b / steps)
    r = {"bench": "cut", **s, "bytes_per_step": round(sum(per_step) / 3),
         "test_acc": round(sum(o["test_acc"] for o in outs) / 3, 4),
         "samples_per_s": round(sum(o["samples_per_s"] for o in outs), 1), "front": f"{d}/front.pt"}
    return r


def leakage(a, r):
    d = os.path.dirname(r["front"])
    cmd = [f"{a.bin}/cutlayer-leakage", "-c", f"{a.work}/client.json", "--front", r["front"], "-o", f"{d}/leakage",
           "--threads", "2", "--epochs", str(a.decoder_epochs)] + flags(r)
    out = loopback.last_json(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return {"bench": "cut-leakage", "values": r["values"], "grad_values": r["grad_values"], "topk": r["topk"],
            "random": r["random"], "dcor": round(out["dcor"], 4), "dcor2_u": round(out["dcor2_u"], 4),
            "decoder_ssim": round(out["decoder"]["ssim"], 4), "decoder_psnr": round(out["decoder"]["psnr"], 3)}


def plot(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        label = r["values"] + (f"/{r['grad_values']}" if r["grad_values"] != r["values"] else "")
        if r["topk"]:
            label += f" top {r['topk']:g}" + (f" rand {r['random']:g}" if r["random"] else "")
        ax.scatter(r["bytes_per_step"] / 1e3, 100 * r["test_acc"])
        ax.annotate(label, (r["bytes_per_step"] / 1e3, 100 * r["test_acc"]), fontsize=7, xytext=(4, 2),
                    textcoords="offset points")
    base = next(r for r in results if r["ratio_bytes"] == 1)
    ax.axhline(100 * base["test_acc"] - 1, color="grey", lw=0.8, ls="--", label="fp32 - 1 point")
    ax.set_xscale("log")
    ax.set_xlabel("cut bytes per step, both ways (kB, log)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("fmnist-cnn split, 3 clients: accuracy against cut traffic")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=f"{ROOT}/build/bin")
    ap.add_argument("--configs", default=f"{ROOT}/configs")
    ap.add_argument("--out", default=f"{ROOT}/run/bench-cut")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=0, help="stop each client after this many steps (a quick look)")
    ap.add_argument("--settings", default=DEFAULT,
                    help="comma-separated VALUES[/GRAD_VALUES][:TOPK[:RANDOM]], the first the baseline (fp32); "
                         "a setting given twice shows the run-to-run spread")
    ap.add_argument("--decoder-epochs", type=int, default=4)
    ap.add_argument("--no-leakage", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    a.work = tempfile.mkdtemp(prefix="cut-bench-")
    subprocess.run([f"{a.bin}/cutlayer-keygen", "--out", f"{a.work}/keys", "--clients", "c0,c1,c2"], check=True,
                   capture_output=True)
    per_client = a.steps or math.ceil(60000 / 3 / 64) * a.epochs
    for name, steps in (("client", per_client), ("server", 3 * per_client)):
        cfg = json.load(open(f"{a.configs}/{name}.json"))
        cfg["train"].update({"lr_schedule": "cosine", "lr_total_steps": steps})
        if name == "client":
            cfg["train"]["eval_every"] = 0
        json.dump(cfg, open(f"{a.work}/{name}.json", "w"))
    results = []
    with open(f"{a.out}/results.jsonl", "w") as f:
        for index, setting in enumerate(a.settings.split(",")):
            r = run(a, parse(setting), index)
            base = results[0] if results else r
            r["ratio_bytes"] = round(r["bytes_per_step"] / base["bytes_per_step"], 5)
            r["acc_delta"] = round(100 * (r["test_acc"] - base["test_acc"]), 2)
            line = {k: v for k, v in r.items() if k != "front"}
            print(json.dumps(line), flush=True)
            f.write(json.dumps(line) + "\n")
            results.append(r)
        if not a.no_leakage:
            ok = sorted((r for r in results[1:] if r["acc_delta"] >= -1), key=lambda r: r["bytes_per_step"])
            for r in [results[0]] + ok[:2]:
                line = leakage(a, r)
                print(json.dumps(line), flush=True)
                f.write(json.dumps(line) + "\n")
    plot(results, f"{a.out}/cut.png")
    shutil.rmtree(a.work, ignore_errors=True)


if __name__ == "__main__":
    main()
