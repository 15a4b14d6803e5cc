#!/usr/bin/python3
"""Vertical split learning: what cutting the features among parties costs, and the ID alignment.

Runs, in this order, each a JSON line:
  {"bench":"vertical","parties":K,"keep":..,"aligned":..,"test_acc":..,"monolithic_acc":..,
   "acc_delta":..,"psi_s":..,"samples_per_s":..}
for K in --parties (default 2 4): cutlayer-train --vertical K (each party a strip of every
image and a random --keep share of the people, aligned by private set intersection, one front
per party and one back, trained in one process: the monolithic reference of the split
version), against "monolithic_acc": the same network on whole images (--vertical 1) and all
people, and "fmnist_cnn_acc": the fmnist-cnn preset on whole images (cutlayer-train); EPOCHS
epochs with a cosine learning rate over each run's own steps. Then the PSI line of
cutlayer-bench-psi (2 parties, --psi-ids each, 50% shared):
  {"bench":"psi","parties":2,"psi_ids":..,"psi_s":..,...}
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback  # noqa: E402


def train(a, work, tag, steps_per_epoch, args):
    cfg = json.load(open(f"{a.configs}/client.json"))
    cfg["train"].update(epochs=a.epochs, lr_schedule="cosine", lr_total_steps=a.epochs * steps_per_epoch,
                        log_every=500)
    cfg["threads"] = a.threads
    path = f"{work}/{tag}.json"
    json.dump(cfg, open(path, "w"))
    out = subprocess.run([f"{a.bin}/cutlayer-train", "-c", path, "--log-level", "warn", *args],
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    return loopback.last_json(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default="build/bin")
    p.add_argument("--configs", default="configs")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--parties", type=int, nargs="+", default=[2, 4])
    p.add_argument("--keep", type=float, default=0.8, help="each party's share of the people")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--psi-ids", type=int, default=100000)
    a = p.parse_args()
    people, batch = 60000, 64
    with tempfile.TemporaryDirectory() as work:
        whole = train(a, work, "whole", -(-people // batch), ["--vertical", "1", "--vertical-keep", "1"])
        cnn = train(a, work, "fmnist-cnn", -(-people // batch), [])
        for k in a.parties:
            aligned = round(people * a.keep ** k)  # what the run will align, near enough for the schedule
            r = train(a, work, f"k{k}", -(-aligned // batch), ["--vertical", str(k), "--vertical-keep", str(a.keep)])
            print(json.dumps({
                "bench": "vertical", "parties": k, "keep": a.keep, "epochs": a.epochs, "aligned": r["aligned"],
                "test_acc": r["test_acc"], "monolithic_acc": whole["test_acc"],
                "acc_delta": round(r["test_acc"] - whole["test_acc"], 4), "fmnist_cnn_acc": cnn["test_acc"],
                "psi_s": r["psi_s"], "samples_per_s": r["samples_per_s"]}), flush=True)
    psi = subprocess.run([f"{a.bin}/cutlayer-bench-psi", "--ids", str(a.psi_ids)], stdout=subprocess.PIPE,
                         text=True, check=True).stdout
    print(psi.strip(), flush=True)


if __name__ == "__main__":
    main()
