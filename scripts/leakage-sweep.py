#!/usr/bin/python3
"""NoPeek trade-off sweep: train at several settings, attack each, report the curve.

For each setting (alpha = NoPeek weight of dCor(x, z); noise = std of Gaussian noise on the
cut activations the client sends) this trains fmnist-cnn with cutlayer-train (the same math
as a split run), saves the front, runs cutlayer-leakage on it (dCor, bias-corrected dCor^2,
permutation floor on 2,000 held-out test images; a decoder attack trained on the next
5,000) and prints one JSON line:
  {"bench":"leakage","alpha":..,"noise_std":..,"test_acc":..,"dcor":..,"dcor2_u":..,
   "perm_floor":..,"ssim":..,"psnr":..}
Training uses a cosine learning rate over the run. Writes OUT/sweep.jsonl, OUT/sweep.md (with each setting's change against alpha = 0, no
noise) and OUT/tradeoff.png. --short: 300 steps, alpha 0, 1, 3 (scripts/bench.sh leakage).
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def last_json(text):
    return json.loads(text.strip().splitlines()[-1])


def one(a, alpha, noise, out, warmup=0):
    tag = f"a{alpha}-n{noise}" + (f"-w{warmup}" if warmup else "")
    d = os.path.join(out, tag)
    os.makedirs(d, exist_ok=True)
    train = [f"{a.bin}/cutlayer-train", "-c", a.config, "--log-level", "warn", "--threads", str(a.threads),
             "--alpha", str(alpha), "--noise", str(noise), "--alpha-warmup", str(warmup),
             "--save-front", f"{d}/front.pt"]
    train += ["--steps", str(a.steps)] if a.steps else ["--epochs", str(a.epochs)]
    t = last_json(subprocess.run(train, check=True, capture_output=True, text=True).stdout)
    leak = [f"{a.bin}/cutlayer-leakage", "-c", a.config, "--front", f"{d}/front.pt", "-o", d,
            "--threads", str(a.threads), "--noise", str(noise), "--epochs", str(a.decoder_epochs)]
    r = last_json(subprocess.run(leak, check=True, capture_output=True, text=True).stdout)
    return {"bench": "leakage", "alpha": alpha, "noise_std": noise, "alpha_warmup_steps": warmup, "steps": t["steps"],
            "test_acc": t["test_acc"], "dcor": round(r["dcor"], 4), "dcor2_u": round(r["dcor2_u"], 4),
            "perm_floor": round(r["perm_floor"], 4), "ssim": round(r["decoder"]["ssim"], 4),
            "psnr": round(r["decoder"]["psnr"], 3), "mse": round(r["decoder"]["mse"], 5),
            "mean_image_ssim": round(r["mean_image_baseline"]["ssim"], 4),
            "train_samples_per_s": t["samples_per_s"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=f"{ROOT}/build/bin")
    ap.add_argument("--config", default=f"{ROOT}/configs/client.json")
    ap.add_argument("--out", default=f"{ROOT}/run/leakage-sweep")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--steps", type=int, default=0, help="train this many steps instead of --epochs")
    ap.add_argument("--decoder-epochs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--alphas", default="0,0.1,0.3,1,3")
    ap.add_argument("--noises", default="0", help="noise stds, each combined with every alpha")
    ap.add_argument("--extra", default="", help="extra alpha:noise[:warmup steps] settings, e.g. 1:0.5,3:1,2:0:300")
    ap.add_argument("--short", action="store_true")
    a = ap.parse_args()
    if a.short:
        a.steps, a.alphas, a.decoder_epochs = 300, "0,1,3", 4
    settings = [(float(al), float(n), 0) for n in a.noises.split(",") for al in a.alphas.split(",")]
    for e in a.extra.split(","):
        if e:
            v = e.split(":")
            settings.append((float(v[0]), float(v[1]), int(v[2]) if len(v) > 2 else 0))
    os.makedirs(a.out, exist_ok=True)
    # A cosine learning rate over the run's steps, so every setting ends settled and
    # accuracies compare to within noise.
    cfg = json.load(open(a.config))
    steps = a.steps or a.epochs * -(-60000 // cfg["train"].get("batch_size", 64))
    cfg["train"].update(lr_schedule="cosine", lr_total_steps=steps)
    a.config = f"{a.out}/client.json"
    json.dump(cfg, open(a.config, "w"), indent=1)
    results = []
    with open(f"{a.out}/sweep.jsonl", "w") as f:
        for alpha, noise, warmup in settings:
            r = one(a, alpha, noise, a.out, warmup)
            results.append(r)
            print(json.dumps(r), flush=True)
            f.write(json.dumps(r) + "\n")
    report(results, a.out)


def report(results, out):
    base = next((r for r in results if r["alpha"] == 0 and r["noise_std"] == 0), None)
    rows = ["| alpha | warm-up steps | noise | test acc | Δ acc (pts) | dCor | floor | dCor² (bias-corr.) | Δ dCor² | decoder SSIM "
            "| Δ SSIM | PSNR dB |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if base:
            da = f"{100 * (r['test_acc'] - base['test_acc']):+.2f}"
            dd = f"{100 * (r['dcor2_u'] / base['dcor2_u'] - 1):+.0f}%"
            ds = f"{100 * (r['ssim'] / base['ssim'] - 1):+.0f}%"
        else:
            da = dd = ds = "–"
        rows.append(f"| {r['alpha']} | {r.get('alpha_warmup_steps', 0)} | {r['noise_std']} | {r['test_acc']:.4f} | {da} | {r['dcor']:.3f} | "
                    f"{r['perm_floor']:.3f} | {r['dcor2_u']:.3f} | {dd} | {r['ssim']:.3f} | {ds} | {r['psnr']:.2f} |")
    open(f"{out}/sweep.md", "w").write("\n".join(rows) + "\n")
    print("\n".join(rows), file=sys.stderr)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, name in ((axes[0], "dcor2_u", "bias-corrected dCor²(x, z)"), (axes[1], "ssim", "decoder attack SSIM")):
        groups = sorted({(r["noise_std"], r.get("alpha_warmup_steps", 0) > 0) for r in results})
        for noise, warm in groups:
            rs = sorted((r for r in results
                         if r["noise_std"] == noise and (r.get("alpha_warmup_steps", 0) > 0) == warm),
                        key=lambda r: r["alpha"])
            label = (f"noise {noise}" if noise else "NoPeek only") + (", α warm-up" if warm else "")
            ax.plot([r[key] for r in rs], [r["test_acc"] for r in rs], marker="o", ls="--" if warm else "-",
                    label=label)
            for r in rs:
                ax.annotate(f"α={r['alpha']:g}", (r[key], r["test_acc"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        ax.set_xlabel(name + " (lower: less leakage)")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("fmnist-cnn: privacy vs accuracy")
    fig.tight_layout()
    fig.savefig(f"{out}/tradeoff.png", dpi=120)


if __name__ == "__main__":
    main()
