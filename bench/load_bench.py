#!/usr/bin/python3
"""Load benchmark: many clients against one server on loopback, aggregation on.

Runs, each printing one JSON line:
  1. BASE clients (default 8), STEPS steps each: the server's peak RSS ("rss_mb").
  2. CLIENTS clients (default 32), STEPS steps each: errors, rounds, rounds stuck past
     their deadline, peak RSS and its ratio to run 1.
  3. the same CLIENTS for SECONDS with churn: CHURN of them (default a quarter) are
     SIGKILLed at random times and re-join after a random pause; RSS sampled every
     second, its drift measured after a warm-up (the first quarter of the run).
Every client runs with one LibTorch thread and its own key. A round is "stuck" when the
server closes it more than SLACK_MS (1 s, the server's kOverdue) past its deadline, which
runs from the round's first contribution: the server's summary counts these ("overdue")
and the longest overrun ("max_overrun_ms"). The bench also times each round line of the
server's metrics file as it appears and counts gaps over deadline + SLACK_MS
("round_gaps_over_deadline", an upper bound: a gap also holds a client step).
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback  # noqa: E402

SLACK_MS = 1000


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default="build/bin")
    p.add_argument("--configs", default="configs")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--base", type=int, default=8, help="clients in the baseline run")
    p.add_argument("--churn", type=int, default=None, help="clients churned (default: a quarter)")
    p.add_argument("--steps", type=int, default=40, help="steps per client in runs 1 and 2")
    p.add_argument("--seconds", type=float, default=120, help="length of the churn run (600: the 10-minute run)")
    p.add_argument("--deadline-ms", type=int, default=3000, help="aggregation round deadline")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", help="copy the work directory (logs, metrics) here")
    p.add_argument("--log-level", default="warn", help="the server's and clients' log level (info: read with --keep)")
    p.add_argument("--only-churn", action="store_true", help="run 3 only")
    return p.parse_args()


def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Bench:
    def __init__(self, a):
        self.a = a
        self.work = tempfile.mkdtemp(prefix="cutlayer-load-")
        names = ",".join(f"c{i}" for i in range(a.clients))
        subprocess.run([f"{a.bin}/cutlayer-keygen", "--out", f"{self.work}/keys", "--clients", names],
                       check=True, stdout=subprocess.DEVNULL)
        self.server_config = self.edit(f"{a.configs}/server-aggregation.json", "server.json", {
            "train.model": "fmnist-cnn", "train.log_every": 1, "log_level": a.log_level,
            "aggregation.deadline_ms": a.deadline_ms, "transport.session_timeout_ms": 4000})
        self.client_config = self.edit(f"{a.configs}/client-aggregation.json", "client.json", {
            "train.model": "fmnist-cnn", "log_level": a.log_level, "threads": 1, "train.eval_samples": 64})

    def edit(self, src, name, edits):
        return loopback.edit_config(src, f"{self.work}/{name}", edits)

    # --- processes ------------------------------------------------------------------
    def start_server(self, tag):
        ready = f"{self.work}/{tag}.ready"
        self.metrics = f"{self.work}/{tag}.jsonl"
        self.server_out = f"{self.work}/{tag}.out"
        self.server = subprocess.Popen(
            [f"{self.a.bin}/cutlayer-server", "-c", self.server_config, "--server-key", f"{self.work}/keys/server.key",
             "--allow-list", f"{self.work}/keys/allow-list.txt", "--join-port", "0", "--data-port", "0",
             "--ready-file", ready, "--metrics", self.metrics, "--threads", "1"],
            stdout=open(self.server_out, "w"), stderr=open(f"{self.work}/{tag}.log", "w"))
        for _ in range(200):
            if os.path.exists(ready) and os.path.getsize(ready) > 0:
                break
            time.sleep(0.05)
        self.port = json.load(open(ready))["join_port"]
        self.round_times = []
        self.rss = []
        self.watching = True
        self.watcher = threading.Thread(target=self.watch, daemon=True)
        self.watcher.start()

    def watch(self):
        """Times each round line as it appears; samples the server's RSS every second."""
        seen, last_rss = 0, 0.0
        while self.watching:
            now = time.monotonic()
            try:
                with open(self.metrics) as f:
                    lines = f.read().splitlines()
            except OSError:
                lines = []
            for line in lines[seen:]:
                if '"round"' in line and '"front_hash"' in line:
                    self.round_times.append(now)
            seen = max(seen, len(lines))
            if now - last_rss >= 1.0:
                self.rss.append((now, rss_mb(self.server.pid)))
                last_rss = now
            time.sleep(0.05)

    def stop_server(self):
        self.watching = False
        self.watcher.join()
        self.server.send_signal(signal.SIGTERM)
        rc = self.server.wait(timeout=30)
        summary = json.loads(open(self.server_out).read().strip().splitlines()[-1])
        return rc, summary

    def client(self, i, n, tag, steps=None):
        args = [f"{self.a.bin}/cutlayer-client", "-c", self.client_config, "--join-port", str(self.port),
                "--server-public-key", f"{self.work}/keys/server.pub", "--client-key", f"{self.work}/keys/c{i}.key",
                "--name", f"c{i}", "--shard", f"{i}/{n}", "--threads", "1"]
        args += ["--steps", str(steps)] if steps else ["--epochs", "1000"]
        return subprocess.Popen(args, stdout=open(f"{self.work}/{tag}-c{i}.json", "a"),
                                stderr=open(f"{self.work}/{tag}-c{i}.log", "a"))

    def failed(self, name, rc, tag):
        """Says on stderr how a client ended (a SIGKILL the bench did not send: the OOM killer?)."""
        how = f"signal {-rc}" if rc < 0 else f"exit {rc}"
        print(f"load bench: {tag}: {name} failed ({how}); its log: {self.work}/{tag}-{name}.log",
              file=sys.stderr, flush=True)

    # --- figures --------------------------------------------------------------------
    def long_gaps(self):
        """Round lines further apart than deadline + SLACK_MS: an upper bound on stuck rounds,
        as a round's deadline runs from its first contribution, which comes a client step
        after the previous round closed."""
        limit = (self.a.deadline_ms + SLACK_MS) / 1000
        t = self.round_times
        return sum(1 for x, y in zip(t, t[1:]) if y - x > limit), max((y - x for x, y in zip(t, t[1:])), default=0)

    def line(self, run, n, churned, errors, summary, seconds, extra):
        agg = summary.get("aggregation", {})
        gaps, gap_max = self.long_gaps()
        # Stuck: closed more than SLACK_MS (the server's kOverdue) past its deadline, as the
        # server measures it from the round's first contribution.
        out = {"bench": "load", "run": run, "clients": n, "churned": churned, "errors": errors,
               "rounds": agg.get("rounds", 0), "rounds_stuck": agg.get("overdue", 0),
               "max_overrun_ms": agg.get("max_overrun_ms", 0), "round_gaps_over_deadline": gaps,
               "round_gap_max_s": round(gap_max, 2),
               "rss_mb_max": round(max((r for _, r in self.rss), default=0.0), 1),
               "samples_per_s": round(summary.get("samples", 0) / seconds, 1)}
        out.update(extra)
        print(json.dumps(out), flush=True)
        return out

    def steady(self, n, tag):
        self.start_server(tag)
        t0 = time.monotonic()
        procs = [self.client(i, n, tag, self.a.steps) for i in range(n)]
        codes = [p.wait() for p in procs]
        for i, rc in enumerate(codes):
            if rc != 0:
                self.failed(f"c{i}", rc, tag)
        errors = sum(1 for rc in codes if rc != 0)
        seconds = time.monotonic() - t0
        rc, summary = self.stop_server()
        return errors + (rc != 0), summary, seconds

    def wait_for_members(self, n, timeout=600):
        """Until a round closes with all n clients in it (start-up is slow on a busy machine)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                with open(self.metrics) as f:
                    if any(json.loads(l).get("members", 0) >= n for l in f if '"members"' in l):
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        raise SystemExit(f"load bench: the {n} clients were not all in a round after {timeout} s")

    def churn_run(self, n, churn):
        rng = random.Random(self.a.seed)
        self.start_server("churn")
        procs = {i: self.client(i, n, "churn") for i in range(n)}
        self.wait_for_members(n)  # the clock starts once every client is in the rounds
        t0 = time.monotonic()
        churned = set(rng.sample(range(n), churn))
        kills, errors, end = 0, 0, t0 + self.a.seconds
        next_kill = t0 + rng.uniform(2, 8)
        down = {}  # client -> when it re-joins
        while time.monotonic() < end:
            now = time.monotonic()
            for i, p in procs.items():
                if p is not None and p.poll() is not None:  # a client that ended on its own failed
                    self.failed(f"c{i}", p.returncode, "churn")
                    errors += 1
                    procs[i] = None
                    down[i] = now + 1
            if now >= next_kill:
                i = rng.choice(sorted(churned - set(down)) or [None])
                if i is not None and procs[i] is not None:
                    procs[i].kill()
                    procs[i].wait()
                    procs[i] = None
                    down[i] = now + rng.uniform(1, 6)
                    kills += 1
                next_kill = now + rng.uniform(2, 8)
            for i, when in list(down.items()):
                if now >= when:
                    procs[i] = self.client(i, n, "churn")
                    del down[i]
            time.sleep(0.1)
        for p in procs.values():
            if p is not None:
                p.send_signal(signal.SIGINT)
        for p in procs.values():
            # 130: left cleanly on SIGINT; -SIGINT: still starting, before its handler was set
            if p is not None and p.wait(timeout=60) not in (0, 130, -signal.SIGINT):
                self.failed("a client", p.returncode, "churn")
                errors += 1
        rc, summary = self.stop_server()
        warm = t0 + self.a.seconds / 4
        settled = [r for t, r in self.rss if t >= warm]
        mean = sum(settled) / max(len(settled), 1)
        drift = (max(settled) - min(settled)) / 2 / mean * 100 if settled else 0.0
        return errors + (rc != 0), summary, kills, settled, drift

    def run(self):
        a = self.a
        churn = a.churn if a.churn is not None else a.clients // 4
        if a.only_churn:
            return self.churn_line(churn)
        errors, summary, seconds = self.steady(a.base, "base")
        base = self.line("steady", a.base, 0, errors, summary, seconds, {})
        errors, summary, seconds = self.steady(a.clients, "steady")
        self.line("steady", a.clients, 0, errors, summary, seconds,
                  {"rss_mb_8_clients" if a.base == 8 else f"rss_mb_{a.base}_clients": base["rss_mb_max"],
                   "rss_ratio": round(max(r for _, r in self.rss) / base["rss_mb_max"], 3)})
        self.churn_line(churn)

    def churn_line(self, churn):
        a = self.a
        errors, summary, kills, settled, drift = self.churn_run(a.clients, churn)
        self.line("churn", a.clients, churn, errors, summary, a.seconds,
                  {"kills": kills, "seconds": a.seconds, "rss_mb_settled_min": round(min(settled, default=0), 1),
                   "rss_mb_settled_max": round(max(settled, default=0), 1), "rss_drift_pct": round(drift, 2)})

    def close(self):
        if self.a.keep:
            shutil.copytree(self.work, self.a.keep, dirs_exist_ok=True)
        shutil.rmtree(self.work, ignore_errors=True)


def main():
    b = Bench(parse_args())
    try:
        b.run()
    finally:
        b.close()


if __name__ == "__main__":
    sys.exit(main())
