#!/usr/bin/python3
"""PNG of a cutlayer-gradstudy run: reads PREFIX.csv and PREFIX-hist.csv, writes PREFIX.png.
Panels: kurtosis per step (3 = Gaussian), selected/k of the gaussiank threshold (raw and
with corrections; the band [2/3, 4/3] shaded), and histograms of x/sigma at a few steps
against the standard normal density."""
import argparse
import csv
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("prefix", help="the -o PREFIX given to cutlayer-gradstudy, e.g. run/study/fmnist")
prefix = parser.parse_args().prefix


def read_csv(path, columns):
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        sys.exit(f"plot-gradstudy: cannot read {path}: {e.strerror} (run cutlayer-gradstudy -o {prefix} first)")
    missing = [c for c in columns if rows and c not in rows[0]]
    if not rows or missing:
        sys.exit(f"plot-gradstudy: {path} has no rows or lacks the columns {missing}: not a cutlayer-gradstudy CSV")
    return rows


rows = read_csv(prefix + ".csv", ["view", "step", "kurtosis", "selected_over_k_raw", "selected_over_k"])
hist = read_csv(prefix + "-hist.csv", ["view", "step", "bin_center_sigma", "fraction"])
fig, ax = plt.subplots(1, 3, figsize=(16, 4.2))
for view in ["gradient", "gradient+residual"]:
    r = [x for x in rows if x["view"] == view]
    steps = [int(x["step"]) for x in r]
    ax[0].plot(steps, [float(x["kurtosis"]) for x in r], label=view)
    ax[1].plot(steps, [float(x["selected_over_k_raw"]) for x in r], label=f"{view}: raw threshold")
    ax[1].plot(steps, [float(x["selected_over_k"]) for x in r], label=f"{view}: with corrections")
ax[0].axhline(3, color="gray", ls="--", label="Gaussian (3)")
ax[0].set_yscale("log")
ax[0].set_title("kurtosis of the flat gradient")
ax[1].axhspan(2 / 3, 4 / 3, color="green", alpha=0.15, label="[2k/3, 4k/3]")
ax[1].set_yscale("log")
ax[1].set_title("gaussiank: selected / k")
steps = sorted({int(h["step"]) for h in hist})
for s in [steps[0], steps[len(steps) // 2], steps[-1]]:
    h = [x for x in hist if int(x["step"]) == s and x["view"] == "gradient"]
    ax[2].semilogy([float(x["bin_center_sigma"]) for x in h], [max(float(x["fraction"]), 1e-9) for x in h],
                   label=f"step {s}")
xs = [i / 10 for i in range(-80, 81)]
width = 16 / 81
ax[2].semilogy(xs, [width * math.exp(-x * x / 2) / math.sqrt(2 * math.pi) for x in xs], "k--", label="normal")
ax[2].set_ylim(1e-8, 1)
ax[2].set_title("histogram of g / sigma")
for a in ax:
    a.set_xlabel("step" if a is not ax[2] else "sigma")
    a.grid(alpha=0.3)
    a.legend(fontsize=7)
fig.tight_layout()
fig.savefig(prefix + ".png", dpi=100)
print(f"wrote {prefix}.png")
