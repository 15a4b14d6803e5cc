"""Checks cutlayer's TorchScript exports with PyTorch itself (Debian's python3-torch).

  export_check.py part FILE...           each FILE against FILE.check: forward(x) == out (and,
                                         for a client part with a head, head_forward(h) == head_out)
  export_check.py model MODEL IDX CSV    the joined model on the images of IDX (normalized as
                                         cutlayer does) against the predictions cutlayer-client
                                         wrote to CSV through the split model: same class, every
                                         probability within 1e-5
Every comparison: max |difference| <= 1e-5.
"""
import csv
import gzip
import struct
import sys

import torch

TOL = 1e-5
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST's, as data::Normalization


def close(name, got, want):
    d = (got - want).abs().max().item()
    print(f"{name}: {tuple(got.shape)}, max |difference| {d:.3g}")
    assert got.shape == want.shape and d <= TOL, f"{name}: {d} > {TOL}"


def check_part(path):
    m = torch.jit.load(path)
    ref = torch.load(path + ".check")
    with torch.no_grad():
        close(path, m(ref["x"]), ref["out"])
        if "h" in ref:
            close(path + " head", m.head_forward(ref["h"]), ref["head_out"])


def load_idx(path):
    raw = (gzip.open if path.endswith(".gz") else open)(path, "rb").read()
    magic, n, h, w = struct.unpack(">IIII", raw[:16])
    assert magic == 0x803
    x = torch.frombuffer(bytearray(raw[16:16 + n * h * w]), dtype=torch.uint8).reshape(n, 1, h, w)
    return (x.float() / 255.0 - MEAN) / STD


def check_model(path, idx, predictions):
    m = torch.jit.load(path)
    x = load_idx(idx)
    with torch.no_grad():
        p = torch.softmax(m(x), 1)
    rows = list(csv.DictReader(open(predictions)))
    assert len(rows) == x.shape[0], (len(rows), x.shape)
    want = torch.tensor([[float(r[f"p{c}"]) for c in range(p.shape[1])] for r in rows])
    classes = torch.tensor([int(r["class"]) for r in rows])
    assert [int(r["index"]) for r in rows] == list(range(len(rows)))
    close(f"{path} vs the split model's predictions", p, want)
    assert torch.equal(p.argmax(1), classes), "classes differ"
    print(f"{path}: the same class for all {len(rows)} examples")


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "part":
        for f in args:
            check_part(f)
    elif mode == "model":
        check_model(*args)
    else:
        sys.exit(__doc__)
