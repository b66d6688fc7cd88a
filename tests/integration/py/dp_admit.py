"""Checks run by tests/integration/dp_admission.sh in the cluster's backplane,
against a one-node cluster with shelf-node's default limits (max_conns 512,
max_unauth_conns 384, max_unauth_per_addr 64, handshake_timeout 5s,
progress_interval 10s, progress_bytes 16K).

argv: MODE [args]. Modes:
  peraddr SRC            64 silent connections from SRC stay; a 65th gets
                         ERROR busy at once; at the handshake deadline the 64
                         get ERROR timeout
  unauth SRC...          384 silent connections spread over the SRCs (64 each)
                         all stay; one more (from the last SRC) makes the
                         node close the oldest with ERROR busy
  flood N SRC...         N silent connections spread over the SRCs; keeps them
                         open until stdin closes; prints how many the node
                         answered and how
  paced SIZE RATE        a PUT of SIZE bytes sent at RATE bytes/s in 100 ms
                         steps completes (and reads back with the same crc)
  stall                  a PUT that stops half-way gets status timeout within
                         the progress interval and the close; nothing stored
  response               a MAC'd response-type frame makes the node close the
                         connection without an answer
"""
import os
import resource
import select
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shelf_client import (Client, ShelfError, crc32c, H, HDR, header, ERROR, PUT, STAT,
                          STATUS)
import msgpack

HANDSHAKE_S, PROGRESS_S = 5, 10
PER_ADDR, UNAUTH = 64, 384


def _gf2_times(mat, vec):
    s, i = 0, 0
    while vec:
        if vec & 1:
            s ^= mat[i]
        vec >>= 1
        i += 1
    return s


def _gf2_square(mat):
    return [_gf2_times(mat, mat[n]) for n in range(32)]


def crc32c_combine(crc1, crc2, len2):
    """The CRC-32C of A + B from crc1 = crc32c(A), crc2 = crc32c(B) and
    len(B): len2 zero bytes applied to crc1 (the operator of 2^k zero bytes
    squared from that of one zero bit, as zlib's crc32_combine does), then
    crc2 added."""
    op = [0x82F63B78] + [1 << n for n in range(31)]  # one zero bit
    for _ in range(3):
        op = _gf2_square(op)  # 2, 4, 8 bits: one zero byte
    while len2:
        if len2 & 1:
            crc1 = _gf2_times(op, crc1)
        op = _gf2_square(op)
        len2 >>= 1
    return crc1 ^ crc2


assert crc32c_combine(crc32c(b"1234"), crc32c(b"56789"), 5) == crc32c(b"123456789")


def fail(why):
    print("FAIL:", why)
    sys.exit(1)


def client():
    c = Client.from_dir(os.environ["SHELF_CLIENT"], os.environ["SHELF_BROKER"])
    for _ in range(100):
        m = c.fetch_map("default")
        if m["members"] and m["members"][0]["state"] == "up":
            return c, m["members"][0]
        time.sleep(0.1)
    fail("the node is not up")


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < n:
        print(f"skipped: needs {n} file descriptors (ulimit -n), has {soft}")
        sys.exit(77)


def silent(member, src):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.connect((socket.inet_ntop(socket.AF_INET6, member["addr"]), member["port"]))
    return s


def read_error(s, timeout):
    """An ERROR frame's code; None if nothing came within timeout; -1 on a
    close without one."""
    s.settimeout(timeout)
    buf = b""
    try:
        while len(buf) < 32:
            b = s.recv(32 - len(buf))
            if not b:
                return -1
            buf += b
        magic, typ, flags, res, mlen, plen, seq, rid = HDR.unpack(buf)
        if magic != b"SHD1" or typ != ERROR:
            fail(f"expected an ERROR frame, got type {typ:#x}")
        meta = b""
        while len(meta) < mlen:
            b = s.recv(mlen - len(meta))
            if not b:
                return -1
            meta += b
        return msgpack.unpackb(meta, raw=False)["code"]
    except socket.timeout:
        return None
    except ConnectionResetError:
        return -1


def is_closed(s, timeout):
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


def put_head(conn, key, size, crc):
    """A PUT head announcing `size` payload bytes; the caller sends them."""
    conn.rid += 1
    m = msgpack.packb({"slice": "default", "epoch": c.epoch("default"), "key": key,
                       "size": size, "crc": crc}, use_bin_type=True)
    h = header(PUT, len(m), size, conn.tx_seq, conn.rid)
    conn.tx_seq += 1
    conn.sock.sendall(h + m + H(conn.mac_c2s, 16, h + m))
    return conn.rid


def quiet(socks, seconds):
    """None of socks hears anything for `seconds`."""
    r, _, _ = select.select(socks, [], [], seconds)
    return not r


mode = sys.argv[1]
c, member = client()

if mode == "peraddr":
    src = sys.argv[2]
    socks = [silent(member, src) for _ in range(PER_ADDR)]
    t0 = time.monotonic()
    extra = silent(member, src)
    code = read_error(extra, 2)
    if code != 10:
        fail(f"connection {PER_ADDR + 1} from {src}: expected ERROR busy (10), got {code}")
    if not is_closed(extra, 2):
        fail("the refused connection stayed open")
    print(f"{PER_ADDR} silent connections from {src} held; number {PER_ADDR + 1}: ERROR busy, "
          f"closed: ok")
    if not quiet(socks, HANDSHAKE_S - 1.5 - (time.monotonic() - t0)):
        fail(f"the {PER_ADDR} connections heard something before the handshake deadline")
    codes = [read_error(s, HANDSHAKE_S + 2) for s in socks]
    took = time.monotonic() - t0
    if codes != [11] * PER_ADDR:
        fail(f"at the handshake deadline: codes {codes}")
    if not (HANDSHAKE_S - 1 <= took <= HANDSHAKE_S + 2):
        fail(f"ERROR timeout after {took:.1f} s, the deadline is {HANDSHAKE_S} s")
    print(f"handshake deadline: all {PER_ADDR} got ERROR timeout after {took:.1f} s: ok")

elif mode == "unauth":
    srcs = sys.argv[2:]
    raise_nofile(UNAUTH + 256)
    socks = []
    for i in range(UNAUTH):
        socks.append(silent(member, srcs[i // PER_ADDR]))
    time.sleep(0.5)
    if not quiet(socks, 0.5):
        fail(f"{UNAUTH} silent connections (the cap): one was closed")
    print(f"{UNAUTH} silent connections from {UNAUTH // PER_ADDR} addresses held: ok")
    one = silent(member, srcs[-1])
    code = read_error(socks[0], 3)
    if code != 10:
        fail(f"one more: the oldest should get ERROR busy (10), got {code}")
    if not quiet(socks[1:] + [one], 0.5):
        fail("one more: another connection than the oldest heard something")
    print("one more: the oldest unauthenticated connection got ERROR busy, the others stay: ok")

elif mode == "flood":
    n, srcs = int(sys.argv[2]), sys.argv[3:]
    raise_nofile(n + 256)
    t0 = time.monotonic()
    socks = []
    for i in range(n):
        socks.append(silent(member, srcs[i % len(srcs)]))
    print(f"flood: {n} silent connections from {len(srcs)} address(es) in "
          f"{time.monotonic() - t0:.2f} s", flush=True)
    # tell the shell we are ready, then hold them until it closes our stdin
    print("READY", flush=True)
    sys.stdin.read()
    busy = timeout = closed = held = 0
    for s in socks:
        code = read_error(s, 0.001)
        if code == 10:
            busy += 1
        elif code == 11:
            timeout += 1
        elif code == -1:
            closed += 1
        else:
            held += 1
    print(f"flood: {busy} got ERROR busy, {timeout} ERROR timeout, {closed} a bare close, "
          f"{held} still silent")
    if closed:
        fail(f"{closed} connections closed without the ERROR frame")

elif mode == "paced":
    size, rate = int(sys.argv[2]), int(sys.argv[3])
    block = bytes((i * 131 + (i >> 12)) & 0xFF for i in range(1 << 20))
    data = block * (size >> 20)
    tail = bytes(size - len(data))
    data += tail
    # the CRC of the repeated block, combined (a pure-Python loop over
    # 64 MiB took over 10 minutes of a loaded CI machine)
    bc, crc = crc32c(block), 0
    for _ in range(size >> 20):
        crc = crc32c_combine(crc, bc, len(block))
    crc = crc32c_combine(crc, crc32c(tail), len(tail))
    key = b"paced/put"
    with c.connect("default", member, timeout=60) as conn:
        rid = put_head(conn, key, size, crc)
        step = rate // 10
        t0 = time.monotonic()
        mv = memoryview(data)
        for off in range(0, size, step):
            conn.sock.sendall(mv[off:off + step])
            due = t0 + (off + step) / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        meta, _ = conn.read_response(PUT, rid)
        took = time.monotonic() - t0
    if meta["status"] != 0:
        fail(f"paced PUT: {STATUS.get(meta['status'])}: {meta['message']}")
    st = c.stat(key)
    if st["size"] != size or st["crc"] != crc:
        fail(f"paced PUT stored size {st['size']} crc {st['crc']}")
    print(f"PUT of {size} bytes at {rate / 1024:.0f} KiB/s: completed in {took:.0f} s "
          f"({size / took / 1024:.0f} KiB/s), stored with its crc: ok")

elif mode == "stall":
    size = 4 << 20
    data = os.urandom(size)
    key = b"stalled/put"
    with c.connect("default", member, timeout=60) as conn:
        rid = put_head(conn, key, size, crc32c(data))
        conn.sock.sendall(data[:size // 2])
        t0 = time.monotonic()
        meta, _ = conn.read_response(PUT, rid)
        took = time.monotonic() - t0
        if meta["status"] != 11:
            fail(f"stalled PUT: expected timeout (11), got {meta['status']}: {meta['message']}")
        if took > PROGRESS_S + 2:
            fail(f"stalled PUT answered after {took:.1f} s; progress interval {PROGRESS_S} s")
        if not is_closed(conn.sock, 3):
            fail("stalled PUT: the connection stayed open after the timeout")
    try:
        c.stat(key)
        fail("the stalled PUT's key exists")
    except ShelfError as e:
        if e.status != 6:
            raise
    print(f"stalled PUT: status timeout after {took:.1f} s ('{meta['message']}'), closed, "
          f"nothing stored: ok")

elif mode == "response":
    with c.connect("default", member) as conn:
        m = msgpack.packb({"status": 0, "message": "", "epoch": 1}, use_bin_type=True)
        h = header(STAT | 0x80, len(m), 0, conn.tx_seq, 1)
        conn.sock.sendall(h + m + H(conn.mac_c2s, 16, h + m))
        if not is_closed(conn.sock, 5):
            fail("a response-type frame from the client: the connection stayed open")
    print("a response-type frame from the client: closed without an answer: ok")

else:
    fail(f"unknown mode {mode}")
