"""Checks run by tests/integration/dp_python.sh inside the cluster's backplane.

argv: work directory shared with the shell script (for files the C CLI
reads and writes). Prints what it checked; exits 1 on the first mismatch.
"""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shelf_client import (Client, ShelfError, crc32c, place, PUT, GET, STAT)

work = sys.argv[1]
mode = sys.argv[2] if len(sys.argv) > 2 else "main"


def fail(why):
    print("FAIL:", why)
    sys.exit(1)


def client():
    c = Client.from_dir(os.environ["SHELF_CLIENT"], os.environ["SHELF_BROKER"])
    # a node may still be registering right after `up`: wait for 3 up members
    for _ in range(100):
        m = c.fetch_map("default")
        if sum(1 for x in m["members"] if x["state"] == "up") == 3:
            return c, m
        time.sleep(0.1)
    fail(f"slice default has not 3 members up: {[x['state'] for x in m['members']]}")


c, m = client()

if mode == "main":
    print(f"map: slice default epoch {m['epoch']}, {len(m['members'])} members, replicas {m['replicas']}")
    objs = {b"py/0": b"", b"py/1": b"\x5a", b"py/100k": os.urandom(100 * 1024),
            b"py/3m": os.urandom(3 << 20)}
    for k, d in objs.items():
        r = c.put(k, d)
        back = c.get(k)
        if back != d:
            fail(f"{k!r}: {len(d)} bytes put, {len(back)} different bytes back")
        st = c.stat(k)
        if st["size"] != len(d) or st["crc"] != crc32c(d):
            fail(f"{k!r}: stat says size {st['size']} crc {st['crc']:08x}")
        if r["seq"] != st["seq"]:
            print(f"NOTE (docs 7.7: STAT seq is 'as for PUT'): PUT answered seq {r['seq']}, "
                  f"STAT says {st['seq']}")
        node = place(m["members"], k)[0]["domain"]["slot"]
        print(f"put+get+stat {k.decode():8} {len(d):8} B crc {crc32c(d):08x} on slot {node}: ok")
    part = c.get(b"py/100k", offset=1001, length=4000)
    if part != objs[b"py/100k"][1001:5001]:
        fail("range get py/100k [1001, 5001)")
    print("range get [1001, 5001) of py/100k: ok")
    keys = c.list(prefix=b"py/")
    if keys != sorted(objs):
        fail(f"list py/: {keys}")
    print(f"list py/ over all nodes: {len(keys)} keys: ok")
    c.delete(b"py/1")
    try:
        c.get(b"py/1")
        fail("py/1 still readable after delete")
    except ShelfError as e:
        if e.status != 6:
            fail(f"get after delete: {e}")
    print("delete py/1, then get: not-found: ok")
    c.put(b"py/1", b"\x5a")

    # an object for the C CLI to read
    data = os.urandom(77777)
    c.put(b"py/for-cli", data)
    open(os.path.join(work, "for-cli.expect"), "wb").write(data)
    print("put py/for-cli (77777 B) for the C CLI")

    # tampered MAC: the node must close without answering
    member = place(m["members"], b"py/3m")[0]
    with c.connect("default", member) as conn:
        rid = conn.send_request(STAT, {"slice": "default", "epoch": m["epoch"], "key": b"py/3m"},
                                tamper_mac=True)
        conn.sock.settimeout(5)
        try:
            got = conn.sock.recv(1)
        except ConnectionResetError:
            got = b""
        except socket.timeout:
            fail("tampered MAC: node neither answered nor closed in 5 s")
        if got:
            fail("tampered MAC: the node answered instead of closing")
    print("request with a tampered MAC: node closed the connection without an answer: ok")

    # a good first request then a replayed seq: also closed
    with c.connect("default", member) as conn:
        conn.request(STAT, {"key": b"py/3m"})
        conn.tx_seq -= 1
        conn.send_request(STAT, {"slice": "default", "epoch": m["epoch"], "key": b"py/3m"})
        conn.sock.settimeout(5)
        try:
            got = conn.sock.recv(1)
        except ConnectionResetError:
            got = b""
        if got:
            fail("repeated seq: the node answered")
    print("request repeating seq 0: node closed the connection: ok")

    # a bad crc on PUT: checksum-mismatch, nothing stored
    with c.connect("default", place(m["members"], b"py/badcrc", for_write=True)[0]) as conn:
        try:
            conn.request(PUT, {"key": b"py/badcrc", "size": 3, "crc": crc32c(b"abc") ^ 1}, b"abc")
            fail("put with a wrong crc was accepted")
        except ShelfError as e:
            if e.status != 9:
                fail(f"put with a wrong crc: {e}")
        try:
            conn.request(STAT, {"key": b"py/badcrc"})
            fail("put with a wrong crc stored the object")
        except ShelfError as e:
            if e.status != 6:
                fail(f"stat after bad put: {e}")
    print("put with a wrong crc: checksum-mismatch, nothing stored, connection stays up: ok")

    # payload encryption (7.6): an encrypted PUT reads back; a changed chunk stores nothing
    data = os.urandom(200000)  # 4 chunks, the last one short
    em = place(m["members"], b"py/enc", for_write=True)[0]
    with c.connect("default", em) as conn:
        r, _ = conn.request(PUT, {"key": b"py/enc", "size": len(data), "crc": crc32c(data)},
                            data, encrypt=True)
        if r["size"] != len(data) or r["crc"] != crc32c(data):
            fail(f"encrypted put: {r}")
    if c.get(b"py/enc") != data:
        fail("encrypted put read back differently")
    print("encrypted PUT (4 AEAD chunks) then GET: ok")
    with c.connect("default", em) as conn:
        rid = conn.send_request(PUT, {"slice": "default", "epoch": m["epoch"], "key": b"py/enc2",
                                      "size": len(data), "crc": crc32c(data)},
                                data, encrypt=True, tamper_chunk=2)
        conn.sock.settimeout(5)
        try:
            r, _ = conn.read_response(PUT, rid)
            if r["status"] == 0:
                fail("encrypted put with a changed chunk was acknowledged")
            print(f"NOTE (docs 7.6 say the node closes): changed chunk answered with status "
                  f"{r['status']} '{r['message']}', connection left open")
        except ShelfError as e:
            if e.status != -1:
                fail(f"changed chunk: {e}")
            print("encrypted PUT with a changed chunk: node closed the connection")
    try:
        c.stat(b"py/enc2")
        fail("encrypted put with a changed chunk stored the object")
    except ShelfError as e:
        if e.status != 6:
            fail(f"stat py/enc2: {e}")
    print("encrypted PUT with a changed chunk: nothing stored: ok")

    # stale epoch: stale-map carrying the node's epoch
    with c.connect("default", member) as conn:
        if m["epoch"] > 0:
            rid = conn.send_request(STAT, {"slice": "default", "epoch": m["epoch"] - 1,
                                           "key": b"py/3m"})
            r, _ = conn.read_response(STAT, rid)
            if r["status"] != 4 or r["epoch"] != m["epoch"]:
                fail(f"older epoch: {r}")
            print(f"request with epoch {m['epoch'] - 1}: stale-map, node epoch {r['epoch']}: ok")

elif mode == "cli":
    data = open(os.path.join(work, "from-cli"), "rb").read()
    back = c.get(b"cli/obj")
    if back != data:
        fail(f"cli/obj: the C CLI put {len(data)} bytes, Python got {len(back)} different bytes")
    print(f"get cli/obj ({len(data)} B, written by the C CLI): ok")
