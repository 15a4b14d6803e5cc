#!/usr/bin/python3
"""Vertical split learning: what cutting the features among parties costs, and the ID alignment.

Runs, in this order, each a JSON line:
  {"bench":"vertical","parties":K,"keep":..,"aligned":..,"test_acc":..,"reference_acc":..,
   "monolithic_acc":..,"acc_delta":..,"psi_ids":..,"psi_s":..,"bytes_per_step":..,
   "samples_per_s":..,"reference_samples_per_s":..,"split_psi_s":..}
for K in --parties (default 2 4). "test_acc": the split version, real processes on loopback
(cutlayer-server with a "vertical" object and K cutlayer-client parties, real keys): each
party a strip of every image and a random --keep share of the people, aligned by the private
set intersection through the server ("split_psi_s": its time at party 0), one front per
party, the server's back over their joined cuts; "bytes_per_step": what crossed party 0's
channel per training step, both ways. "reference_acc": cutlayer-train --vertical K, the
same model trained in one process (the split run computes the same steps); "monolithic_acc"
("acc_delta" = test_acc - it): the same network on whole images (--vertical 1) and all
people; "fmnist_cnn_acc": the fmnist-cnn preset on whole images. EPOCHS epochs with a cosine
learning rate over each run's own steps. "psi_ids", "psi_s": cutlayer-bench-psi, 2 parties
of --psi-ids IDs each, 50% shared, in one process (also printed as its own line first).
--no-split: the references only (minutes less).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback  # noqa: E402


def config(a, steps_per_epoch, src):
    cfg = json.load(open(src))
    cfg["train"].update(epochs=a.epochs, lr_schedule="cosine", lr_total_steps=a.epochs * steps_per_epoch,
                        log_every=500)
    return cfg


def train(a, work, tag, steps_per_epoch, args):
    cfg = config(a, steps_per_epoch, f"{a.configs}/client.json")
    cfg["threads"] = a.threads
    path = f"{work}/{tag}.json"
    json.dump(cfg, open(path, "w"))
    out = subprocess.run([f"{a.bin}/cutlayer-train", "-c", path, "--log-level", "warn", *args],
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    return loopback.last_json(out)


def split(a, work, k, steps_per_epoch):
    """Server + k parties on loopback; party 0's summary and the server's."""
    d = f"{work}/split{k}"
    os.makedirs(d)
    names = [f"p{i}" for i in range(k)]
    subprocess.run([f"{a.bin}/cutlayer-keygen", "--out", f"{d}/keys", "--clients", ",".join(names)], check=True,
                   stdout=subprocess.DEVNULL)
    server_cfg = config(a, steps_per_epoch, f"{a.configs}/server-vertical.json")
    server_cfg["vertical"]["parties"] = k
    server_cfg["threads"] = a.threads
    party_cfg = config(a, steps_per_epoch, f"{a.configs}/client-vertical.json")
    party_cfg["vertical"].update(parties=k, keep=a.keep)
    json.dump(server_cfg, open(f"{d}/server.json", "w"))
    json.dump(party_cfg, open(f"{d}/party.json", "w"))
    server, port = loopback.start_server(a.bin, f"{d}/keys", f"{d}/server.json", d, log_level="warn")
    procs = [subprocess.Popen([f"{a.bin}/cutlayer-client", "-c", f"{d}/party.json", "--party", str(i), "--name", n,
                               "--join-port", str(port), "--server-public-key", f"{d}/keys/server.pub",
                               "--client-key", f"{d}/keys/{n}.key", "--log-level", "warn"],
                              stdout=subprocess.PIPE, stderr=open(f"{d}/c{i}.log", "w"), text=True)
             for i, n in enumerate(names)]
    outs = loopback.finish_clients(procs, server, d, f"the {k}-party split run")
    server.terminate()
    server.communicate()
    return outs[0]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default="build/bin")
    p.add_argument("--configs", default="configs")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--parties", type=int, nargs="+", default=[2, 4])
    p.add_argument("--keep", type=float, default=0.8, help="each party's share of the people")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--psi-ids", type=int, default=100000)
    p.add_argument("--no-split", action="store_true", help="the in-process references only")
    a = p.parse_args()
    psi = loopback.last_json(subprocess.run([f"{a.bin}/cutlayer-bench-psi", "--ids", str(a.psi_ids)],
                                            stdout=subprocess.PIPE, text=True, check=True).stdout)
    print(json.dumps(psi), flush=True)
    people, batch = 60000, 64
    with tempfile.TemporaryDirectory() as work:
        whole = train(a, work, "whole", -(-people // batch), ["--vertical", "1", "--vertical-keep", "1"])
        cnn = train(a, work, "fmnist-cnn", -(-people // batch), [])
        for k in a.parties:
            aligned = round(people * a.keep ** k)  # what the run will align, near enough for the schedule
            r = train(a, work, f"k{k}", -(-aligned // batch), ["--vertical", str(k), "--vertical-keep", str(a.keep)])
            line = {"bench": "vertical", "parties": k, "keep": a.keep, "epochs": a.epochs, "aligned": r["aligned"],
                    "test_acc": r["test_acc"], "reference_acc": r["test_acc"], "monolithic_acc": whole["test_acc"],
                    "fmnist_cnn_acc": cnn["test_acc"], "psi_ids": a.psi_ids, "psi_s": psi["psi_s"],
                    "reference_samples_per_s": r["samples_per_s"], "reference_psi_s": r["psi_s"]}
            if not a.no_split:
                s = split(a, work, k, -(-aligned // batch))  # the reference's schedule
                assert s["aligned"] == r["aligned"], (s, r)
                line.update(test_acc=s["test_acc"], bytes_per_step=s["bytes_per_step"],
                            samples_per_s=s["samples_per_s"], split_psi_s=s["psi_s"])
            line["acc_delta"] = round(line["test_acc"] - whole["test_acc"], 4)
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
