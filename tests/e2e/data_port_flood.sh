#!/usr/bin/env bash
# The data port admits only session holders (docs/security.md). While a real client
# trains, a peer with no session, speaking ZMTP 3.0 itself over raw TCP (a ZeroMQ library
# would keep an unfinished multipart message in its own pipe), sends:
#   - a 1 GiB unterminated multipart stream (64 KiB frames, MORE set, never a last frame),
#     with NULL and with PLAIN under made-up credentials, reconnecting whenever the server
#     hangs up;
#   - 1 GiB frame headers (a message frame after a NULL greeting, a PLAIN HELLO command),
#     each followed by as much of the frame as the server will take;
#   - 1,000 idle connections, held for the whole attack (>= 15 s; reopened as the
#     server's handshake timeout closes them).
# Asserted: the server's RSS (VmRSS) grows <= 50 MB over its level before the attack, the
# client finishes with its normal accuracy, the server still serves a second client
# afterwards (probes, bit exact), and the refusals are logged rate-limited.
# FLOOD_CONTROL=1: the same run without the attack (the server's RSS drift from training
# alone over the same window, to read the figure against).
source "$(dirname "$0")/lib.sh"
py=/usr/bin/python3
# As the systemd unit runs it (LimitNOFILE=4096): room for 1,000 idle connections. The
# attacker raises its own soft limit to its hard limit.
ulimit -n 4096 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# alice trains long enough that the whole attack falls within her training steps (the
# server's RSS steps up ~27 MB when the final evaluation starts: not the attack's doing),
# and evaluates on 2,000 test examples to keep the test short. Two epochs: one (938 steps)
# once ended 7.9 s into the attack on a loaded 2-core runner, short of the 8 s asserted.
client_config=$work/client.json
edit_config "$configs/client.json" "$client_config" train.eval_samples=2000 train.epochs=2
# Under AddressSanitizer (scripts/test.sh --sanitize) freed blocks wait in a quarantine of up
# to 256 MiB before they are reused, which RSS would count: the server gets a 16 MiB one, so
# the 50 MB bound still measures what it holds (use-after-free is still caught within it).
if ldd "$bin/cutlayer-server" | grep -q libasan; then
  export ASAN_OPTIONS="${ASAN_OPTIONS:-}:quarantine_size_mb=16"
fi
start_server flood
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status"; }

steps=1800  # one epoch is 938 steps
spawn alice "" --steps $steps
# The attack starts once alice trains; the baseline is the server's RSS at that point.
for _ in $(seq 600); do grep -q "step 100/" "$work/alice.log" 2>/dev/null && break; sleep 0.1; done
grep -q "step 100/" "$work/alice.log" || { echo "alice did not reach step 100"; tail -20 "$work/alice.log"; exit 1; }
base=0
for _ in $(seq 5); do r=$(rss_kb); [ "$r" -gt "$base" ] && base=$r; sleep 0.1; done

control=${FLOOD_CONTROL:-0}
$py - "$data_port" "$server_pid" "$work/attack.json" "$control" "$work/alice.log" "$steps" <<'PY'
import json, os, random, resource, socket, sys, threading, time

port, server_pid, out, control = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
alice_log, steps = sys.argv[5], int(sys.argv[6])
GiB = 1 << 30
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if hard == resource.RLIM_INFINITY or hard > 8192:
    hard = 8192
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, hard), hard))

# The server's RSS every 50 ms while alice trains. Her final evaluation steps the server's
# RSS up ~27 MB (not the attack's doing), so samples stop once her last step is logged, and
# the 0.3 s before that are dropped too: on a busy machine she can finish mid-attack.
samples = []
trained = {"at": None}
stop = threading.Event()
def sample():
    while not stop.is_set() and trained["at"] is None:
        try:
            for line in open(f"/proc/{server_pid}/status"):
                if line.startswith("VmRSS:"):
                    samples.append((time.time(), int(line.split()[1])))
        except OSError:
            pass
        if f"step {steps}/{steps}" in open(alice_log).read():
            trained["at"] = time.time()
        time.sleep(0.05)
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()

def greeting(mech):
    return b"\xff" + b"\0" * 8 + b"\x7f" + bytes([3, 0]) + mech.ljust(20, b"\0") + b"\0" + b"\0" * 31

def frame(body, more=False, command=False, size=None):
    n = len(body) if size is None else size
    flags = (1 if more else 0) | (4 if command else 0)
    if n > 255:
        return bytes([flags | 2]) + n.to_bytes(8, "big") + body
    return bytes([flags, n]) + body

def command(name, body):
    return frame(bytes([len(name)]) + name + body, command=True)

def prop(name, value):
    return bytes([len(name)]) + name + len(value).to_bytes(4, "big") + value

def connect():
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s

def null_open():
    return greeting(b"NULL") + command(b"READY", prop(b"Socket-Type", b"DEALER"))

def plain_open():
    user = "%016x" % random.getrandbits(64)
    password = "%032x" % random.getrandbits(128)
    return greeting(b"PLAIN") + command(b"HELLO", bytes([16]) + user.encode() + bytes([32]) + password.encode())

def push(s, data, limit):
    """Sends `data` repeatedly until `limit` bytes went or the server hung up."""
    sent = 0
    try:
        while sent < limit:
            sent += s.send(data)
    except OSError:
        pass
    return sent

stats = {"idle_opened": 0, "idle_reopened": 0, "stream_connections": 0, "stream_bytes": 0,
         "header_connections": 0, "header_bytes": 0, "connect_errors": 0}

# 1,000 idle connections, held (and reopened when the server closes them) to the end.
idle = []
for _ in range(0 if control else 1000):
    try:
        idle.append(connect())
        stats["idle_opened"] += 1
    except OSError:
        stats["connect_errors"] += 1
def tend_idle():
    for i, s in enumerate(idle):
        s.setblocking(False)
        try:
            if s.recv(4096) == b"":
                raise OSError("closed")
        except BlockingIOError:
            continue
        except OSError:
            pass
        else:
            continue  # the server's greeting: still open
        s.close()
        try:
            idle[i] = connect()
            stats["idle_reopened"] += 1
        except OSError:
            stats["connect_errors"] += 1

# The 1 GiB unterminated multipart stream, NULL and PLAIN alternately (and on for 8 s at
# least, so that it overlaps training).
chunk = frame(b"x" * 65536, more=True) * 16  # 1 MiB of 64 KiB frames, MORE set
start = time.time()
last_tend = start
n = 0
while not control and (stats["stream_bytes"] < GiB or time.time() - start < 8) and time.time() - start < 30:
    try:
        s = connect()
    except OSError:
        stats["connect_errors"] += 1
        continue
    stats["stream_connections"] += 1
    opening = null_open() if n % 2 == 0 else plain_open()
    n += 1
    try:
        s.sendall(opening)
    except OSError:
        s.close()
        continue
    stats["stream_bytes"] += push(s, chunk, GiB)
    s.close()
    if time.time() - last_tend > 1:
        tend_idle()
        last_tend = time.time()

# 1 GiB frame headers: a message frame after a NULL greeting, a PLAIN HELLO command.
filler = b"y" * (1 << 20)
for opening in (null_open() + frame(b"", more=True, size=GiB),
                greeting(b"PLAIN") + frame(b"", command=True, size=GiB)):
    for _ in range(0 if control else 8):
        try:
            s = connect()
            s.sendall(opening)
        except OSError:
            stats["connect_errors"] += 1
            continue
        stats["header_connections"] += 1
        stats["header_bytes"] += push(s, filler, GiB)
        s.close()
while time.time() - start < 15:  # the idle connections stay for 15 s in all
    tend_idle()
    time.sleep(0.5)
time.sleep(1)  # what the server still holds once the attack is over
stop.set()
sampler.join()
end = time.time()
stats["attack_s"] = round(end - start, 1)
stats["alice_still_training"] = trained["at"] is None
measured_to = end if trained["at"] is None else trained["at"] - 0.3
stats["measured_s"] = round(measured_to - start, 1)  # the attack while alice trained
stats["peak_rss_kb"] = max((kb for t, kb in samples if t <= measured_to), default=0)
for s in idle:
    s.close()
json.dump(stats, open(out, "w"))
print(json.dumps(stats))
PY

await "" alice
after=$(rss_kb)
# A second client is served after the attack.
client --client-key "$work/keys/bob.key" --name bob --probes 8 --probe-mb 4 >"$work/bob.json" 2>"$work/bob.log" ||
  { echo "bob failed:"; tail -20 "$work/bob.log"; exit 1; }
grep -q '"bit_exact":true' "$work/bob.json" || { cat "$work/bob.json"; exit 1; }
stop_server
refusals=$(grep -c "refused a connection" "$work/flood.log" || true)
$py - "$work" "$base" "$after" "$refusals" "$steps" <<'PY'
import json, os, sys
work, base, after, refusals, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
a = json.load(open(f"{work}/attack.json"))
grow_mb = (a["peak_rss_kb"] - base) * 1024 / 1e6
print(f"server RSS: {base / 1024:.1f} MiB before the attack, peak {a['peak_rss_kb'] / 1024:.1f} MiB "
      f"during it (+{grow_mb:.1f} MB), {after / 1024:.1f} MiB after alice finished")
print(f"attack: {a['stream_bytes'] / 2**30:.2f} GiB of unterminated multipart over "
      f"{a['stream_connections']} connections, {a['header_connections']} 1 GiB headers "
      f"({a['header_bytes'] / 2**20:.0f} MiB behind them), {a['idle_opened']} idle connections "
      f"({a['idle_reopened']} reopened), {a['attack_s']} s; {refusals} refusal log lines; "
      f"alice {'still training' if a['alice_still_training'] else 'had finished training'} at its end; "
      f"RSS measured over the first {a['measured_s']} s (while alice trained)")
if os.environ.get("FLOOD_CONTROL") == "1":
    print("control run: no attack")
else:
    assert a["idle_opened"] == 1000, a
    assert a["stream_bytes"] >= 2**30, a  # at least the GiB went out (the server hung up on each piece)
assert a["attack_s"] >= 15, a
# The stream phase alone lasts >= 8 s: RSS was measured over at least that much of it.
assert a["measured_s"] >= 8, f"alice finished training {a['measured_s']} s into the attack; RSS not measured long enough"
assert grow_mb <= 50, f"server RSS grew {grow_mb:.1f} MB"
assert refusals <= 8 + a["stream_connections"] // 1024 + 1, f"{refusals} refusal log lines"
r = json.loads(open(f"{work}/alice.json").read().strip().splitlines()[-1])
print("alice test accuracy", r["test_acc"], "steps", r["steps"])
assert r["steps"] == steps, r
assert r["test_acc"] >= 0.80, r
PY
echo "data-port flood passed"
