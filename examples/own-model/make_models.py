#!/usr/bin/python3
"""Writes the own-model examples' TorchScript files (and the tabular example's CSVs).

    /usr/bin/python3 examples/own-model/make_models.py [--out DIR] [--seed N]

Files (DIR defaults to this script's directory, where the example configs look for them):
  resnet_front.pt, resnet_back.pt        (a) a small residual CNN with BatchNorm for
                                             Fashion-MNIST, split after its first block
  tabular_front.pt, tabular_back.pt,     (b) an MLP for scikit-learn's bundled breast-cancer
  tabular_train.csv, tabular_test.csv        table (no download), standardized, 80/20 split
  ushaped_front.pt, ushaped_back.pt,     (c) a U-shaped CNN: the head (and the labels) stay
  ushaped_head.pt                            on the client
  fmnist_cnn_front.pt, fmnist_cnn_back.pt,   a scripted copy of cutlayer's fmnist-cnn preset
  fmnist_cnn_u_back.pt, fmnist_cnn_head.pt   with the preset's initial weights (parity checks)

Each module's forward takes one Tensor and returns one Tensor; cutlayer trains its
parameters and switches train()/eval(). A TorchScript file is code: cutlayer's binaries
run it, so give them only files you trust. Use Debian's python3-torch (1.13, the same as
cutlayer's LibTorch): a newer PyTorch writes files LibTorch 1.13 cannot read.
"""
import argparse
import csv
import os

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and a skip connection (a 1x1 projection when
    the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = nn.Sequential()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.skip(x))


def resnet(seed):
    """(a): stem + first block + pool on the client (cut [16, 14, 14]); the rest on the server."""
    torch.manual_seed(seed)
    front = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                          BasicBlock(16, 16), nn.MaxPool2d(2))
    back = nn.Sequential(BasicBlock(16, 32, 2), BasicBlock(32, 64, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(64, 10))
    return {"resnet_front": front, "resnet_back": back}


def ushaped(seed):
    """(c): client front conv + BN, server middle, client head (the logits)."""
    torch.manual_seed(seed)
    front = nn.Sequential(nn.Conv2d(1, 16, 5, padding=2), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2))
    back = nn.Sequential(nn.Conv2d(16, 32, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 5 * 5, 128),
                         nn.ReLU())
    head = nn.Sequential(nn.Linear(128, 10))
    return {"ushaped_front": front, "ushaped_back": back, "ushaped_head": head}


def tabular(seed):
    """(b): 30 features -> 64 on the client; 64 -> 32 -> 2 logits on the server."""
    torch.manual_seed(seed)
    front = nn.Sequential(nn.Linear(30, 64), nn.ReLU())
    back = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 2))
    return {"tabular_front": front, "tabular_back": back}


def fmnist_cnn(seed):
    """The preset's layers created in LibTorch's order after the same seed: the same weights."""
    torch.manual_seed(seed)
    conv1, conv2 = nn.Conv2d(1, 32, 5), nn.Conv2d(32, 64, 5)
    fc1, fc2 = nn.Linear(1024, 512), nn.Linear(512, 10)
    middle = [conv2, nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), fc1, nn.ReLU()]
    return {"fmnist_cnn_front": nn.Sequential(conv1, nn.ReLU(), nn.MaxPool2d(2)),
            "fmnist_cnn_back": nn.Sequential(*middle, fc2),
            "fmnist_cnn_u_back": nn.Sequential(*middle),
            "fmnist_cnn_head": nn.Sequential(fc2)}


def write_tables(out, seed):
    """Breast-cancer table, stratified 80/20, standardized with the training split's statistics."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
    x, y = load_breast_cancer(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
    mean, std = xtr.mean(axis=0), xtr.std(axis=0)
    for name, xs, ys in (("tabular_train.csv", xtr, ytr), ("tabular_test.csv", xte, yte)):
        path = os.path.join(out, name)
        with open(path, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow([f"f{i}" for i in range(x.shape[1])] + ["label"])
            for row, label in zip((xs - mean) / std, ys):
                w.writerow([f"{v:.9g}" for v in row] + [int(label)])
        majority = max(ys.mean(), 1 - ys.mean())  # labels are 0/1
        print(f"wrote {path} ({len(ys)} rows, majority-class baseline accuracy {majority:.3f})")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)), help="directory for the files")
    p.add_argument("--seed", type=int, default=1, help="initial weights (fmnist-cnn: the preset's train.seed)")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    modules = {}
    for make in (fmnist_cnn, resnet, ushaped, tabular):
        modules.update(make(a.seed))
    for name, m in modules.items():
        path = os.path.join(a.out, name + ".pt")
        torch.jit.save(torch.jit.script(m.train()), path)
        print(f"wrote {path} ({sum(t.numel() for t in m.parameters())} parameters)")
    write_tables(a.out, a.seed)


if __name__ == "__main__":
    main()
