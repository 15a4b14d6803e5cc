#!/usr/bin/python3
"""K-FAC against SGD, side by side in one run, on loopback with real processes and keys.

Setups (each trained with SGD, then with K-FAC, same seed, data and schedule):
  fmnist-cnn         split, 1 client (the server preconditions its back, the client its front)
  fmnist-deep-front  3 clients, aggregation gaussiank 0.01 with error feedback (each client
                     preconditions its own contribution to the shared front); with --share,
                     also K-FAC with the factors averaged across the clients and decomposed
                     by the server once ("kfac-avg-server", the paper's COMM-OPT) or by every
                     client ("kfac-avg-members"), with their factor traffic and decomposition
                     time
The target is SGD's own test accuracy after 1 epoch. One JSON line per run:
  {"bench":"kfac","model":..,"optimizer":"kfac"|"sgd","steps_to_target":..,
   "seconds_to_target":..,"final_test_acc":..,"step_overhead":..,...}
seconds are training time (the runs' periodic evaluations left out); steps_to_target is
the first evaluation at or above the target (evaluations every --eval-every steps, on
the whole test set). step_overhead: K-FAC's training seconds per step over SGD's, - 1.
Writes OUT/results.jsonl and OUT/kfac.png (test accuracy against steps and seconds).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_config(src, dst, extra=None, **train):
    cfg = json.load(open(src))
    cfg["train"].update(train)
    for section, values in (extra or {}).items():
        cfg.setdefault(section, {}).update(values)
    json.dump(cfg, open(dst, "w"), indent=1)
    return dst


def train_options(a, optimizer, epochs, steps_per_epoch):
    o = {"optimizer": optimizer, "epochs": epochs, "lr": a.lr, "momentum": 0.9}
    if a.cosine:  # over the long runs' length: the 1-epoch target run takes its first third
        o.update(lr_schedule="cosine", lr_total_steps=a.epochs * steps_per_epoch)
    if optimizer == "kfac":
        o["kfac"] = {"damping": a.damping, "factor_every": a.factor_every, "inverse_every": a.inverse_every,
                     "kl_clip": a.kl_clip, "method": a.method}
    return o


def run(a, model, optimizer, clients, epochs, eval_every, share=None):
    label = optimizer if not share else f"kfac-avg-{share}"
    d = f"{a.work}/{model}-{label}-{epochs}"
    os.makedirs(d, exist_ok=True)
    agg = clients > 1
    per_epoch = -(-60000 // clients // 64)
    o = train_options(a, optimizer, epochs, per_epoch)
    server_o = dict(o)
    server_o.pop("epochs")
    if agg and a.cosine:  # the server's steps count every client's batches
        server_o["lr_total_steps"] = clients * a.epochs * per_epoch
    server_extra = {"aggregation": {"kfac_factors": "average", "kfac_decompositions": share}} if share else None
    client_extra = {"sync": {"share_kfac_factors": True}} if share else None
    scfg = write_config(f"{a.configs}/server{'-aggregation' if agg else ''}.json", f"{d}/server.json", server_extra,
                        **server_o)
    ccfg = write_config(f"{a.configs}/client{'-aggregation' if agg else ''}.json", f"{d}/client.json", client_extra,
                        eval_every=eval_every, **o)
    server, port = loopback.start_server(a.bin, f"{a.work}/keys", scfg, d)
    procs = []
    for i in range(clients):
        procs.append(subprocess.Popen(
            [f"{a.bin}/cutlayer-client", "-c", ccfg, "--join-port", str(port),
             "--server-public-key", f"{a.work}/keys/server.pub", "--client-key", f"{a.work}/keys/c{i}.key",
             "--name", f"c{i}", "--shard", f"{i}/{clients}", "--metrics", f"{d}/c{i}.jsonl", "--log-level", "info"],
            stdout=subprocess.PIPE, stderr=open(f"{d}/c{i}.log", "w"), text=True))
    outs = loopback.finish_clients(procs, server, d, f"{model}/{optimizer}")
    server.terminate()
    summary = loopback.last_json(server.communicate()[0])
    # The curve: step, mean test accuracy over the clients, training seconds (the slowest).
    evals = {}
    for i in range(clients):
        for line in open(f"{d}/c{i}.jsonl"):
            r = json.loads(line)
            if "train_seconds" in r:
                evals.setdefault(r["step"], []).append((r["test_acc"], r["train_seconds"]))
    curve = [(s, sum(x[0] for x in v) / len(v), max(x[1] for x in v)) for s, v in sorted(evals.items())
             if len(v) == clients]
    r = {"model": model, "optimizer": label, "clients": clients, "steps": outs[0]["steps"],
         "final_test_acc": round(sum(o["test_acc"] for o in outs) / clients, 4), "curve": curve,
         "kfac": o.get("kfac")}
    if share:
        r["shared"] = summary["aggregation"]["kfac"]
    return r


def to_target(r, target):
    for step, acc, seconds in r["curve"]:
        if acc >= target:
            return step, seconds
    return None, None


def per_step(r):
    step, _, seconds = r["curve"][-1]
    return seconds / step


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=f"{ROOT}/build/bin")
    ap.add_argument("--configs", default=f"{ROOT}/configs")
    ap.add_argument("--out", default=f"{ROOT}/run/bench-kfac")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--eval-every", type=int, default=0, help="steps between evaluations (default: 1/10 epoch)")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--cosine", action="store_true", help="a cosine schedule over the run (default: constant)")
    ap.add_argument("--damping", type=float, default=1.0)
    ap.add_argument("--kl-clip", type=float, default=0.001)
    ap.add_argument("--factor-every", type=int, default=10)
    ap.add_argument("--inverse-every", type=int, default=100)
    ap.add_argument("--method", choices=["eigen", "inverse"], default="inverse")
    ap.add_argument("--only", choices=["fmnist-cnn", "fmnist-deep-front"], help="one setup only")
    ap.add_argument("--share", action="store_true",
                    help="fmnist-deep-front: also K-FAC with averaged factors (decomposed by the server, by the members)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    a.work = tempfile.mkdtemp()
    setups = [("fmnist-cnn", 1), ("fmnist-deep-front", 3)]
    if a.only:
        setups = [s for s in setups if s[0] == a.only]
    results = []
    try:
        subprocess.run([f"{a.bin}/cutlayer-keygen", "--out", f"{a.work}/keys", "--clients", "c0,c1,c2"],
                       check=True, stdout=subprocess.DEVNULL)
        with open(f"{a.out}/results.jsonl", "w") as f:
            for model, clients in setups:
                per_epoch = -(-60000 // clients // 64)
                every = a.eval_every or max(1, per_epoch // 10)
                # The target: SGD's test accuracy after exactly 1 epoch (its own short run).
                target = run(a, model, "sgd", clients, epochs=1, eval_every=per_epoch)["final_test_acc"]
                sgd = run(a, model, "sgd", clients, a.epochs, every)
                kfac = run(a, model, "kfac", clients, a.epochs, every)
                shared = [run(a, model, "kfac", clients, a.epochs, every, share=m)
                          for m in (("server", "members") if a.share and clients > 1 else ())]
                for r in [sgd, kfac] + shared:
                    steps, seconds = to_target(r, target)
                    r.update(bench="kfac", target=target, steps_to_target=steps,
                             seconds_to_target=None if seconds is None else round(seconds, 2),
                             step_overhead=round(per_step(r) / per_step(sgd) - 1, 4),
                             seconds_per_step=round(per_step(r), 5))
                sgd_steps, sgd_s = to_target(sgd, target)
                for k in [kfac] + shared:
                    if k["steps_to_target"] and sgd_steps:  # a cosine schedule may keep SGD below it
                        k.update(steps_ratio=round(k["steps_to_target"] / sgd_steps, 3),
                                 seconds_ratio=round(k["seconds_to_target"] / sgd_s, 3))
                    k["acc_delta_final"] = round(k["final_test_acc"] - sgd["final_test_acc"], 4)
                for r in [sgd, kfac] + shared:
                    results.append(r)
                    keys = ["bench", "model", "optimizer", "clients", "steps_to_target", "seconds_to_target",
                            "final_test_acc", "step_overhead", "target", "steps", "seconds_per_step", "steps_ratio",
                            "seconds_ratio", "acc_delta_final", "kfac", "shared"]
                    print(json.dumps({k: r[k] for k in keys if k in r}), flush=True)
                    f.write(json.dumps(r) + "\n")
    finally:
        shutil.rmtree(a.work, ignore_errors=True)
    plot(results, a.out)


def plot(results, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("python3-matplotlib missing: no kfac.png", file=sys.stderr)
        return
    models = sorted({r["model"] for r in results})
    fig, axes = plt.subplots(len(models), 2, figsize=(12, 4.2 * len(models)), squeeze=False)
    for row, model in zip(axes, models):
        for r in (r for r in results if r["model"] == model):
            steps = [c[0] for c in r["curve"]]
            accs = [c[1] for c in r["curve"]]
            secs = [c[2] for c in r["curve"]]
            label = f"{r['optimizer']} (final {r['final_test_acc']:.4f})"
            row[0].plot(steps, accs, marker="o", ms=3, label=label)
            row[1].plot(secs, accs, marker="o", ms=3, label=label)
        target = next(r["target"] for r in results if r["model"] == model)
        for ax, xl in zip(row, ("training steps (per client)", "training seconds")):
            ax.axhline(target, color="grey", ls=":", lw=1, label=f"target: SGD's 1-epoch accuracy {target:.4f}")
            ax.set_xlabel(xl)
            ax.set_ylabel("test accuracy")
            ax.set_ylim(max(0.5, target - 0.15), min(1.0, target + 0.06))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            ax.set_title(model)
    fig.tight_layout()
    fig.savefig(f"{out}/kfac.png", dpi=110)


if __name__ == "__main__":
    main()
