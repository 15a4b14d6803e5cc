#!/usr/bin/python3
"""Privacy trade-off sweep: train at several settings, attack each, report the curves.

Two holes, two kinds of rows:
- vanilla rows (the cut's leakage): train fmnist-cnn with cutlayer-train (the same math as
  a split run) at a setting of the client's privacy options, save the front, and run
  cutlayer-leakage on it (dCor, bias-corrected dCor^2, permutation floor on 2,000 held-out
  test images; a decoder attack trained on the next 5,000, on the defended activations);
- U-shaped rows (the labels): cutlayer-leakage --label-steps trains the U-shaped form with
  the label defence and attacks the gradients the server received (norm, cosine, lda,
  cluster; docs/privacy.md), and reports that run's test accuracy.

A setting is a comma-separated list of key=value:
  alpha=A        NoPeek weight                 noise=S      Gaussian noise on the cut
  warmup=N       alpha warm-up steps           cut_norm=1   normalise the cut (no affine)
  adversary=W    decoder adversary weight      label=S      U-shaped, label defence sigma S
  clip=1         (with label=) clip each example's gradient to the batch median first
Each prints one JSON line {"bench":"leakage","mode":"vanilla"|"u-shaped",...}. Training
uses a cosine learning rate over the run. Writes OUT/sweep.jsonl, OUT/sweep.md (each row's
change against the same mode without any defence) and OUT/tradeoff.png.
--short (scripts/bench.sh leakage): 300 steps; alpha 0, 1, 3, cut_norm with noise 1, and
U-shaped with label sigma 0 and 0.5.
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = {"alpha": float, "noise": float, "warmup": int, "cut_norm": int, "adversary": float, "label": float,
        "clip": int}


def last_json(text):
    return json.loads(text.strip().splitlines()[-1])


def parse_setting(spec):
    s = {}
    for kv in spec.split(","):
        if not kv:
            continue
        k, _, v = kv.partition("=")
        if k not in KEYS:
            sys.exit(f"leakage-sweep: unknown key '{k}' in setting '{spec}' (known: {', '.join(KEYS)})")
        s[k] = KEYS[k](v)
    return s


def tag_of(s):
    return "-".join(f"{k}{v:g}" for k, v in sorted(s.items())) or "base"


def config_for(a, s, d):
    """The sweep's config with this setting's privacy object (and U-shaped for label rows)."""
    cfg = json.load(open(a.config))
    p = {"alpha": s.get("alpha", 0.0), "noise_std": s.get("noise", 0.0), "alpha_warmup_steps": s.get("warmup", 0),
         "cut_norm": bool(s.get("cut_norm", 0))}
    if s.get("adversary", 0) > 0:
        p["adversary"] = {"weight": s["adversary"]}
    if "label" in s:
        cfg["train"]["u_shaped"] = True
        if s["label"] > 0:
            p["label_defense"] = {"kind": "noise", "sigma": s["label"], "clip": bool(s.get("clip", 0))}
    cfg["privacy"] = p
    path = f"{d}/client.json"
    json.dump(cfg, open(path, "w"), indent=1)
    return path


def run(cmd):
    return last_json(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def one(a, s):
    d = os.path.join(a.out, tag_of(s))
    os.makedirs(d, exist_ok=True)
    cfg = config_for(a, s, d)
    leak = [f"{a.bin}/cutlayer-leakage", "-c", cfg, "-o", d, "--threads", str(a.threads), "--epochs",
            str(a.decoder_epochs)]
    row = {"bench": "leakage", "mode": "u-shaped" if "label" in s else "vanilla", "alpha": s.get("alpha", 0.0),
           "noise_std": s.get("noise", 0.0), "alpha_warmup_steps": s.get("warmup", 0),
           "cut_norm": bool(s.get("cut_norm", 0)), "adversary": s.get("adversary", 0.0), "steps": a.steps}
    if "label" in s:
        r = run(leak + ["--label-steps", str(a.steps)])
        lab = r["label_leakage"]
        row.update(label_defense="noise" if s["label"] > 0 else "none", label_sigma=s["label"],
                   label_clip=bool(s.get("clip", 0)), test_acc=lab["test_acc"])
        for attack, key in (("cosine", "cos"), ("norm", "norm"), ("lda", "lda"), ("cluster", "cluster")):
            row[f"label_auc_{key}"] = round(lab[f"{attack}_auc_mean"], 4)
            row[f"label_auc_{key}_max"] = round(lab[f"{attack}_auc_max"], 4)
    else:
        train = [f"{a.bin}/cutlayer-train", "-c", cfg, "--log-level", "warn", "--threads", str(a.threads),
                 "--steps", str(a.steps), "--save-front", f"{d}/front.pt"]
        t = run(train)
        r = run(leak + ["--front", f"{d}/front.pt"])
        row.update(test_acc=t["test_acc"], train_samples_per_s=t["samples_per_s"])
    row.update(dcor=round(r["dcor"], 4), dcor2_u=round(r["dcor2_u"], 4), perm_floor=round(r["perm_floor"], 4),
               ssim=round(r["decoder"]["ssim"], 4), psnr=round(r["decoder"]["psnr"], 3),
               mse=round(r["decoder"]["mse"], 5), mean_image_ssim=round(r["mean_image_baseline"]["ssim"], 4))
    return row


def settings_from(a):
    out = [{"alpha": float(al), "noise": float(n)} for n in a.noises.split(",") for al in a.alphas.split(",") if al]
    for e in a.extra.split(","):  # the older alpha:noise[:warmup] form
        if e:
            v = e.split(":")
            out.append({"alpha": float(v[0]), "noise": float(v[1]), "warmup": int(v[2]) if len(v) > 2 else 0})
    out += [parse_setting(s) for s in a.set]
    out += [{"label": float(v)} for v in a.label_sigmas.split(",") if v]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=f"{ROOT}/build/bin")
    ap.add_argument("--config", default=f"{ROOT}/configs/client.json")
    ap.add_argument("--out", default=f"{ROOT}/run/leakage-sweep")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--steps", type=int, default=0, help="train this many steps instead of --epochs")
    ap.add_argument("--decoder-epochs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--alphas", default="0,0.1,0.3,1,3", help="NoPeek weights (vanilla rows); '' for none")
    ap.add_argument("--noises", default="0", help="noise stds, each combined with every alpha")
    ap.add_argument("--extra", default="", help="extra alpha:noise[:warmup steps] settings, e.g. 1:0.5,3:1,2:0:300")
    ap.add_argument("--set", action="append", default=[], help="a setting as key=value,... (see above); repeatable")
    ap.add_argument("--label-sigmas", default="", help="U-shaped rows: label defence sigmas, 0 = no defence")
    ap.add_argument("--short", action="store_true")
    a = ap.parse_args()
    if a.short:
        a.steps, a.alphas, a.decoder_epochs = 300, "0,1,3", 4
        a.set = a.set or ["cut_norm=1,noise=1"]
        a.label_sigmas = a.label_sigmas or "0,0.5"
    os.makedirs(a.out, exist_ok=True)
    # A cosine learning rate over the run's steps, so every setting ends settled and
    # accuracies compare to within noise.
    cfg = json.load(open(a.config))
    per_epoch = -(-60000 // cfg["train"].get("batch_size", 64))
    a.steps = a.steps or a.epochs * per_epoch
    cfg.pop("vertical", None)
    cfg["train"].update(lr_schedule="cosine", lr_total_steps=a.steps, epochs=-(-a.steps // per_epoch), max_steps=0)
    a.config = f"{a.out}/client.json"
    json.dump(cfg, open(a.config, "w"), indent=1)
    results = []
    with open(f"{a.out}/sweep.jsonl", "w") as f:
        for s in settings_from(a):
            r = one(a, s)
            results.append(r)
            print(json.dumps(r), flush=True)
            f.write(json.dumps(r) + "\n")
    report(results, a.out)


def is_base(r):
    return (r["alpha"] == 0 and r["noise_std"] == 0 and not r["cut_norm"] and r["adversary"] == 0
            and r.get("label_sigma", 0) == 0)


def setting_name(r):
    parts = [f"α={r['alpha']:g}" if r["alpha"] else "", f"noise {r['noise_std']:g}" if r["noise_std"] else "",
             f"warm-up {r['alpha_warmup_steps']}" if r["alpha_warmup_steps"] else "",
             "cut norm" if r["cut_norm"] else "", f"adversary {r['adversary']:g}" if r["adversary"] else "",
             f"label σ={r['label_sigma']:g}" + (" clip" if r.get("label_clip") else "") if r.get("label_sigma") else ""]
    return ", ".join(p for p in parts if p) or "no defence"


def report(results, out):
    rows = []
    for mode in ("vanilla", "u-shaped"):
        rs = [r for r in results if r["mode"] == mode]
        if not rs:
            continue
        base = next((r for r in rs if is_base(r)), None)
        label = mode == "u-shaped"
        head = "| setting | test acc | Δ acc (pts) | dCor² (bias-corr.) | Δ dCor² | decoder SSIM | Δ SSIM | PSNR dB |"
        if label:
            head += " cosine AUC (max) | norm AUC (max) | lda AUC (max) | cluster AUC (max) |"
        rows += [f"### {mode}", "", head, "|" + "---|" * (head.count("|") - 1)]
        for r in rs:
            da = dd = ds = "–"
            if base:
                da = f"{100 * (r['test_acc'] - base['test_acc']):+.2f}"
                dd = f"{100 * (r['dcor2_u'] / base['dcor2_u'] - 1):+.0f}%" if base["dcor2_u"] else "–"
                ds = f"{100 * (r['ssim'] / base['ssim'] - 1):+.0f}%" if base["ssim"] else "–"
            line = (f"| {setting_name(r)} | {r['test_acc']:.4f} | {da} | {r['dcor2_u']:.3f} | {dd} | {r['ssim']:.3f} "
                    f"| {ds} | {r['psnr']:.2f} |")
            if label:
                line += "".join(f" {r[f'label_auc_{k}']:.3f} ({r[f'label_auc_{k}_max']:.3f}) |"
                                for k in ("cos", "norm", "lda", "cluster"))
            rows.append(line)
        rows.append("")
    open(f"{out}/sweep.md", "w").write("\n".join(rows) + "\n")
    print("\n".join(rows), file=sys.stderr)
    plot(results, out)


def plot(results, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    van = [r for r in results if r["mode"] == "vanilla"]
    ush = sorted((r for r in results if r["mode"] == "u-shaped"), key=lambda r: r.get("label_sigma", 0))
    panels = [(van, "dcor2_u", "bias-corrected dCor²(x, z)"), (van, "ssim", "decoder attack SSIM")]
    if ush:
        panels.append((ush, None, "label attack AUC, mean over classes (U-shaped)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.4), squeeze=False)
    for ax, (rs, key, name) in zip(axes[0], panels):
        if key is None:
            for k, lab, mk in (("cos", "cosine (1 known example)", "o"), ("lda", "lda (half the labels known)", "s"),
                               ("cluster", "k-means (no labels)", "^"), ("norm", "norm", "x")):
                ax.plot([r[f"label_auc_{k}"] for r in rs], [r["test_acc"] for r in rs], marker=mk, label=lab)
            for r in rs:
                ax.annotate(f"σ={r.get('label_sigma', 0):g}", (r["label_auc_cos"], r["test_acc"]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
            ax.axvline(0.65, color="grey", ls=":", lw=1)
        else:
            for r in rs:
                ax.scatter(r[key], r["test_acc"], s=18)
                ax.annotate(setting_name(r), (r[key], r["test_acc"]), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")
        ax.set_xlabel(name + " (lower: less leakage)")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        if key is None:
            ax.legend(fontsize=7)
    fig.suptitle("fmnist-cnn: privacy vs accuracy")
    fig.tight_layout()
    fig.savefig(f"{out}/tradeoff.png", dpi=120)


if __name__ == "__main__":
    main()
