"""What the Python benchmarks share: a server and clients on loopback, real processes and keys.

    import loopback                      # bench/ on sys.path
    server, port = loopback.start_server(bin_dir, keys_dir, config, run_dir, extra_args)
    outs = loopback.finish_clients(procs, server, run_dir, tag)
    loopback.edit_config(src, dst, {"train.lr": 0.1, ...})
"""
import json
import os
import subprocess
import sys
import time


def last_json(text):
    """The last line of a binary's stdout: its JSON summary."""
    return json.loads(text.strip().splitlines()[-1])


def edit_config(src, dst, edits):
    """Writes the JSON config src to dst with edits {"dotted.path": value} applied (objects on
    the path are created). Returns dst."""
    c = json.load(open(src))
    for path, value in edits.items():
        *parents, leaf = path.split(".")
        node = c
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = value
    json.dump(c, open(dst, "w"), indent=1)
    return dst


def start_server(bin_dir, keys, config, d, args=(), log_level="info"):
    """cutlayer-server on ephemeral ports, its stdout piped, its log in d/server.log.
    Returns (process, join port) once its ready file is written; exits with the log if not."""
    ready = f"{d}/ready"
    server = subprocess.Popen(
        [f"{bin_dir}/cutlayer-server", "-c", config, "--server-key", f"{keys}/server.key",
         "--allow-list", f"{keys}/allow-list.txt", "--join-port", "0", "--data-port", "0",
         "--ready-file", ready, "--log-level", log_level, *args],
        stdout=subprocess.PIPE, stderr=open(f"{d}/server.log", "w"), text=True)
    for _ in range(400):
        if os.path.exists(ready) and os.path.getsize(ready) > 0:
            return server, json.load(open(ready))["join_port"]
        time.sleep(0.05)
    server.kill()
    sys.exit(f"the server did not start:\n{open(f'{d}/server.log').read()[-3000:]}")


def finish_clients(procs, server, d, tag):
    """Waits for client processes i (log in d/c{i}.log) and returns their summaries; a client
    that fails kills the server and exits with its log."""
    outs = []
    for i, p in enumerate(procs):
        out, _ = p.communicate()
        if p.returncode != 0:
            server.kill()
            sys.exit(f"client {i} of {tag} failed:\n" + open(f"{d}/c{i}.log").read()[-3000:])
        outs.append(last_json(out))
    return outs
