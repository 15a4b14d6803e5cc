#!/usr/bin/python3
"""Image grid of a cutlayer-leakage run: originals (top) and the decoder's reconstructions
(bottom) for the first 16 evaluation examples. usage: scripts/plot-leakage.py DIR"""
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

d = sys.argv[1] if len(sys.argv) > 1 else sys.exit(__doc__)
x, r = np.load(f"{d}/x.npy"), np.load(f"{d}/recon.npy")
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
