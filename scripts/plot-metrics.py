#!/usr/bin/python3
"""Plots training curves from cutlayer JSON-lines metrics files into one PNG.

Each file becomes one line per panel (loss, accuracy, test accuracy where present, the
final evaluation included), labelled by its file name. A line that is not JSON (a run
still writing) is skipped with a warning. Uses Debian's python3-matplotlib (headless Agg
backend).
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_rows(path):
    """The file's JSON objects; a line that is not one (a run still writing its last line,
    say) is skipped with a warning."""
    rows = []
    try:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    print(f"plot-metrics: {path}:{number}: skipped, not JSON ({e.msg})", file=sys.stderr)
                    continue
                if isinstance(row, dict) and isinstance(row.get("step"), (int, float)):
                    rows.append(row)
    except OSError as e:
        sys.exit(f"plot-metrics: cannot read {path}: {e.strerror}")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="the PNG to write")
    parser.add_argument("metrics", nargs="+", help="JSON-lines metrics files (--metrics of the daemons)")
    args = parser.parse_args()
    out, files = args.out, args.metrics
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for path in files:
        rows = read_rows(path)
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
