#!/usr/bin/python3
"""Aggregation experiments on fmnist-deep-front (the clients hold ~0.58M parameters).

Each run: a cutlayer-server with aggregation and 3 cutlayer-clients on loopback, each on
its third of Fashion-MNIST. Runs:
  compressors: none (dense) and topk / gaussiank / randomk at density 0.01 and 0.001,
               synchronous, error feedback on;
  staleness:   gaussiank 0.01 at s = 0, 1, 4, 16, with momentum 0.9 (lr 0.05) and 0 (lr 0.1).
The server's train block is given a cosine learning rate over all of the run's steps.
Prints one JSON line per run:
  {"bench":"aggregation","compressor":..,"density":..,"staleness":..,"test_acc":..,
   "bytes_ratio_to_dense":..,...}
and writes OUT/results.jsonl, OUT/table.md and OUT/staleness.png (test accuracy vs
rounds). --short runs a quick subset (scripts/bench.sh aggregation).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import loopback  # noqa: E402  (bench/loopback.py: the server start and client wait the benches share)


def run(bin_dir, configs, work, compressor, density, staleness, epochs, steps, eval_every, clients=3,
        momentum=0.9, lr=0.05, stale_weight=None):
    tag = f"{compressor}-{density}-s{staleness}-m{momentum}-{stale_weight}"
    d = os.path.join(work, tag)
    os.makedirs(d, exist_ok=True)
    # The server's train block drives the back and (through the Updates) every front: a
    # cosine schedule over all of the back's steps, so that final accuracies are settled.
    per_client = steps if steps else epochs * -(-60000 // clients // 64)
    cfg = json.load(open(f"{configs}/server-aggregation.json"))
    cfg["train"].update(lr_schedule="cosine", lr_total_steps=clients * per_client, momentum=momentum, lr=lr)
    if stale_weight:
        cfg["aggregation"]["stale_weight"] = stale_weight
    stale_weight = cfg["aggregation"].get("stale_weight", "inv")
    json.dump(cfg, open(f"{d}/server.json", "w"))
    server, port = loopback.start_server(bin_dir, f"{work}/keys", f"{d}/server.json", d,
                                         ["--staleness", str(staleness), "--metrics", f"{d}/server.jsonl"],
                                         log_level="warn")
    procs = []
    t0 = time.time()
    for i in range(clients):
        args = [f"{bin_dir}/cutlayer-client", "-c", f"{configs}/client-aggregation.json",
                "--join-port", str(port), "--server-public-key", f"{work}/keys/server.pub",
                "--client-key", f"{work}/keys/c{i}.key", "--name", f"c{i}", "--shard", f"{i}/{clients}",
                "--compressor", compressor, "--density", str(density), "--epochs", str(epochs),
                "--eval-every", str(eval_every), "--metrics", f"{d}/c{i}.jsonl", "--log-level", "warn"]
        if steps:
            args += ["--steps", str(steps)]
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=open(f"{d}/c{i}.log", "w"), text=True))
    outs = loopback.finish_clients(procs, server, d, tag)
    seconds = time.time() - t0
    server.terminate()
    sout, _ = server.communicate()
    agg = loopback.last_json(sout)["aggregation"]
    syncs = [o["sync"] for o in outs]
    accs = [o["test_acc"] for o in outs]
    # Bytes of one training step without sync: cut activations up (B x 512 float32) plus
    # labels (B int64), cut gradients down (B x 512 float32).
    batch, cut = 64, 512
    step_bytes = batch * cut * 4 * 2 + batch * 8
    sync_per_round = sum((s["bytes_up"] / max(s["contributions"], 1) + s["bytes_down"] / max(s["updates"], 1))
                         for s in syncs) / len(syncs)
    curves = []
    for i in range(clients):
        for line in open(f"{d}/c{i}.jsonl"):
            r = json.loads(line)
            if "test_acc" in r and "round" in r:
                curves.append((r["round"], r["test_acc"]))
    return {
        "bench": "aggregation", "compressor": compressor, "density": density if compressor != "none" else 1.0,
        "staleness": staleness, "stale_weight": stale_weight, "momentum": momentum, "lr": lr, "error_feedback": True, "clients": clients, "epochs": epochs,
        "steps_per_client": outs[0]["steps"], "rounds": agg["rounds"],
        "test_acc": round(sum(accs) / len(accs), 4), "test_acc_min": min(accs), "test_acc_max": max(accs),
        "bytes_ratio_to_dense": round(sum(s["bytes_ratio_to_dense"] for s in syncs) / len(syncs), 5),
        "sync_bytes_per_round": round(sync_per_round),
        "sync_share_of_step_bytes": round(sync_per_round / (sync_per_round + step_bytes), 4),
        "density_up": round(sum(s["density_up"] for s in syncs) / len(syncs), 5),
        "density_down": round(sum(s["density_down"] for s in syncs) / len(syncs), 5),
        "max_staleness": agg["max_staleness"], "staleness_hist": agg["staleness_hist"], "rejected": agg["rejected"],
        "seconds": round(seconds, 1),
        "samples_per_s": round(sum(o["samples"] for o in outs) / seconds, 1),
        "curve": sorted(curves),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=f"{ROOT}/build/bin")
    ap.add_argument("--configs", default=f"{ROOT}/configs")
    ap.add_argument("--out", default=f"{ROOT}/run/aggregation")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--short", action="store_true", help="150 steps per client, a subset of the runs")
    ap.add_argument("--stale-weight", choices=["inv", "inv_sqrt", "none"], help="override aggregation.stale_weight")
    ap.add_argument("--only-staleness", action="store_true", help="run the staleness series only")
    a = ap.parse_args()
    if a.short:
        plan = [("none", 0.01, 0, 0.9), ("topk", 0.01, 0, 0.9), ("gaussiank", 0.01, 0, 0.9),
                ("randomk", 0.01, 0, 0.9), ("gaussiank", 0.001, 0, 0.9), ("gaussiank", 0.01, 4, 0.9)]
        steps, epochs, eval_every = 150, 1, 150
    else:
        plan = [("none", 0.01, 0, 0.9)]
        for density in (0.01, 0.001):
            for c in ("topk", "gaussiank", "randomk"):
                plan.append((c, density, 0, 0.9))
        # Staleness, with the default momentum and without (asynchrony acts as momentum).
        plan += [("gaussiank", 0.01, s, 0.9) for s in (1, 4, 16)]
        plan += [("gaussiank", 0.01, s, 0.0) for s in (0, 1, 4, 16)]
        steps, epochs, eval_every = 0, a.epochs, 100
        if a.only_staleness:
            plan = [p for p in plan if p[2] > 0 or p[3] == 0.0]
    os.makedirs(a.out, exist_ok=True)
    work = tempfile.mkdtemp()
    try:
        subprocess.run([f"{a.bin}/cutlayer-keygen", "--out", f"{work}/keys", "--clients", "c0,c1,c2"],
                       check=True, stdout=subprocess.DEVNULL)
        results = []
        with open(f"{a.out}/results.jsonl", "w") as f:
            for c, density, s, momentum in plan:
                r = run(a.bin, a.configs, work, c, density, s, epochs, steps, eval_every, momentum=momentum,
                        lr=0.05 if momentum else 0.1, stale_weight=a.stale_weight)
                results.append(r)
                line = {k: v for k, v in r.items() if k != "curve"}
                print(json.dumps(line), flush=True)
                f.write(json.dumps(r) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_report(results, a.out)


def write_report(results, out):
    dense = next((r for r in results if r["compressor"] == "none"), None)
    lines = ["| compressor | density | staleness | weight | momentum | test acc (mean, min–max) | Δ vs dense (pts) | sync bytes/round/client "
             "| ratio to dense | sync share of step bytes | rounds | samples/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        delta = f"{100 * (r['test_acc'] - dense['test_acc']):+.2f}" if dense else "–"
        lines.append(f"| {r['compressor']} | {r['density']} | {r['staleness']} | {r['stale_weight']} | {r['momentum']} | {r['test_acc']:.4f} "
                     f"({r['test_acc_min']:.4f}–{r['test_acc_max']:.4f}) | {delta} | {r['sync_bytes_per_round']:,} "
                     f"| {r['bytes_ratio_to_dense']:.4f} | {r['sync_share_of_step_bytes']:.3f} | {r['rounds']} "
                     f"| {r['samples_per_s']:.0f} |")
    open(f"{out}/table.md", "w").write("\n".join(lines) + "\n")
    print("\n".join(lines), file=sys.stderr)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("python3-matplotlib missing: no staleness.png", file=sys.stderr)
        return
    rows = [r for r in results if r["compressor"] == "gaussiank" and r["density"] == 0.01 and r["curve"]]
    momenta = sorted({r["momentum"] for r in rows}, reverse=True)
    if not momenta:
        return
    fig, axes = plt.subplots(1, len(momenta), figsize=(6.5 * len(momenta), 4.5), squeeze=False)
    for ax, m in zip(axes[0], momenta):
        for r in sorted((r for r in rows if r["momentum"] == m), key=lambda r: (r["stale_weight"], r["staleness"])):
            by_round = {}
            for rnd, acc in r["curve"]:
                by_round.setdefault(rnd // 50 * 50, []).append(acc)
            xs = sorted(by_round)
            weight = "" if r["staleness"] == 0 else f", {r['stale_weight']}"
            ax.plot(xs, [sum(by_round[x]) / len(by_round[x]) for x in xs], marker="o", ms=3,
                    ls="-" if r["stale_weight"] == "inv" or r["staleness"] == 0 else "--",
                    label=f"s = {r['staleness']}{weight} (final {r['test_acc']:.3f})")
        ax.set_xlabel("aggregation round")
        ax.set_ylabel("test accuracy (mean of 3 clients)")
        ax.set_title(f"momentum {m}")
        ax.set_ylim(0.5, 0.92)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("fmnist-deep-front, 3 clients, gaussiank 0.01 + error feedback: staleness bound s")
    fig.tight_layout()
    fig.savefig(f"{out}/staleness.png", dpi=120)


if __name__ == "__main__":
    main()
