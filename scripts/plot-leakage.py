#!/usr/bin/python3
"""Image grid of a cutlayer-leakage run: originals (top) and the decoder's reconstructions
(bottom) for the first 16 evaluation examples, written to DIR/reconstructions.png."""
import argparse
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("dir", help="the -o DIR given to cutlayer-leakage (holds x.npy and recon.npy)")
d = parser.parse_args().dir
try:
    x, r = np.load(f"{d}/x.npy"), np.load(f"{d}/recon.npy")
except (OSError, ValueError) as e:
    sys.exit(f"plot-leakage: cannot load {d}/x.npy and {d}/recon.npy ({e}); run cutlayer-leakage -o {d} first")
if x.ndim != 4 or x.shape != r.shape:
    sys.exit(f"plot-leakage: {d}/x.npy {x.shape} and recon.npy {r.shape} are not matching N x C x H x W images")
n = min(16, len(x))
fig, ax = plt.subplots(2, n, figsize=(n * 0.9, 2.2))
for i in range(n):
    for row, img in ((0, x[i]), (1, r[i])):
        ax[row][i].imshow(img[0], cmap="gray", vmin=0, vmax=1)
        ax[row][i].axis("off")
ax[0][0].set_title("original", fontsize=7, loc="left")
ax[1][0].set_title("reconstruction", fontsize=7, loc="left")
fig.tight_layout()
fig.savefig(f"{d}/reconstructions.png", dpi=100)
print(f"wrote {d}/reconstructions.png")
