"""Clients that stop reading, run by tests/integration/dp_hostile_get.sh.

argv: NODE_PID BUDGET_BYTES SEND_TIMEOUT_S SANITIZED. The objects h/32m, h/64m and
h/small are on the one node already (put with the C CLI). Sends 4 pipelined
GETs of h/32m on one connection and one GET of h/64m on each of 16 more,
and never reads them. Meanwhile: the node's RSS (VmRSS sampled, and VmHWM)
stays within the board's memory budget, another client's GETs of h/small
are answered within LATENCY_S each, and NODE-STAT shows the bytes held.
Then the stalled connections are closed by the node after the send
timeout (they see a reset), and what they held is released.

A sanitized node (SANITIZED 1: ASan's shadow memory is RSS a board never
has) is held to its growth instead: at most the node's response budget
(12 MiB, the default) and ASan's overhead on it (x1.5), and 4 MiB more.
"""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shelf_client import Client, ShelfError, place, GET, NODE_STAT

LATENCY_S = 1.0   # the stated latency for a 4 KiB GET while the stalled clients hold
pid, budget, send_timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
sanitized = len(sys.argv) > 4 and sys.argv[4] == "1"
RESPONSE_BUDGET = 12 << 20  # shelf-node's response_budget default


def fail(why):
    print("FAIL:", why)
    sys.exit(1)


def status_kib(field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    fail(f"no {field} for pid {pid}")


c = Client.from_dir(os.environ["SHELF_CLIENT"], os.environ["SHELF_BROKER"])
m = c.fetch_map("default")
member = place(m["members"], b"h/32m")[0]
epoch = m["epoch"]


def counters():
    with c.connect("default", member) as conn:
        r, _ = conn.request(NODE_STAT, {})
        return r["counters"]


rss0 = status_kib("VmRSS")
print(f"node rss before: {rss0} KiB, budget {budget >> 10} KiB")
stalled = []
conn = c.connect("default", member)
for _ in range(4):
    conn.send_request(GET, {"slice": "default", "epoch": epoch, "key": b"h/32m"})
stalled.append(conn)
for _ in range(16):
    conn = c.connect("default", member)
    conn.send_request(GET, {"slice": "default", "epoch": epoch, "key": b"h/64m"})
    stalled.append(conn)
t_stalled = time.monotonic()

peak, worst, held_max = 0, 0.0, 0
until = time.monotonic() + 5.0
while time.monotonic() < until:
    peak = max(peak, status_kib("VmRSS"))
    t0 = time.monotonic()
    data = c.get(b"h/small")
    dt = time.monotonic() - t0
    worst = max(worst, dt)
    if len(data) != 4096:
        fail(f"h/small: {len(data)} bytes")
    held_max = max(held_max, counters().get("response_bytes_held", 0))
    time.sleep(0.1)
hwm = status_kib("VmHWM")
print(f"stalled clients hold: node rss peak {peak} KiB (VmHWM {hwm} KiB), "
      f"response_bytes_held up to {held_max} bytes")
print(f"GET h/small (4 KiB) meanwhile: worst {worst * 1000:.1f} ms (stated limit {LATENCY_S * 1000:.0f} ms)")
if sanitized:
    grow = (peak - rss0) * 1024
    print(f"sanitized node: rss grew {grow >> 10} KiB")
    if grow > RESPONSE_BUDGET * 3 // 2 + (4 << 20):
        fail(f"sanitized node's rss grew {grow >> 10} KiB while the stalled clients held")
else:
    if peak * 1024 > budget:
        fail(f"node rss {peak} KiB over the board's budget of {budget >> 10} KiB")
    if hwm * 1024 > budget:
        fail(f"node VmHWM {hwm} KiB over the board's budget of {budget >> 10} KiB")
if held_max > RESPONSE_BUDGET:
    fail(f"response_bytes_held {held_max} over the response budget")
if worst > LATENCY_S:
    fail(f"a 4 KiB GET took {worst:.3f} s while the stalled clients held")
if held_max == 0:
    fail("NODE-STAT response_bytes_held never showed the bytes held")

# the node closes them once their sends made no progress for send_timeout
while counters().get("response_bytes_held", 1) != 0:
    if time.monotonic() - t_stalled > send_timeout + 20:
        fail(f"response bytes still held {send_timeout + 20:.0f} s after the clients stopped reading")
    time.sleep(0.5)
freed = time.monotonic() - t_stalled
print(f"stalled connections' memory freed after {freed:.1f} s (send timeout {send_timeout:.0f} s)")
if freed < send_timeout - 1:
    fail(f"freed after {freed:.1f} s, before the send timeout")
for i, conn in enumerate(stalled):
    conn.sock.settimeout(10)
    got = 0
    try:
        while True:
            b = conn.sock.recv(1 << 20)
            if not b:
                break
            got += len(b)
    except ConnectionResetError:
        pass
    except socket.timeout:
        fail(f"stalled connection {i} still open after the send timeout")
    if got >= (4 * (32 << 20) if i == 0 else 64 << 20):
        fail(f"stalled connection {i} got every byte ({got})")
    conn.close()
print(f"all {len(stalled)} stalled connections were closed by the node (reset)")
if c.get(b"h/small") is None:
    fail("h/small after")
print(f"node rss after: {status_kib('VmRSS')} KiB")
