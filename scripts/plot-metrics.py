#!/usr/bin/python3
"""Plots training curves from cutlayer JSON-lines metrics files into one PNG.

usage: scripts/plot-metrics.py OUT.png METRICS.jsonl [METRICS.jsonl ...]
Each file becomes one line per panel (loss, accuracy, test accuracy where present),
labelled by its file name. Uses Debian's python3-matplotlib (headless Agg backend).
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, files = sys.argv[1], sys.argv[2:]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for path in files:
        rows = [json.loads(line) for line in open(path) if line.strip()]
        label = os.path.basename(path).replace("-metrics.jsonl", "").replace(".jsonl", "")
        train = [r for r in rows if "loss" in r]
        test = [r for r in rows if "test_acc" in r]
        if train:
            axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], label=label)
            if "acc" in train[0]:
                axes[1].plot([r["step"] for r in train], [r["acc"] for r in train], label=label)
        if test:
            axes[2].plot([r["step"] for r in test], [r["test_acc"] for r in test], marker="o", label=label)
    for ax, title in zip(axes, ["training loss", "training accuracy", "test accuracy"]):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
