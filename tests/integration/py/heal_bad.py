"""Hostile and broken repair copies (issue 14, "Bad input"), for
heal_badinput.sh (run inside the cluster's backplane, as `shelf-cluster
exec` runs it: SHELF_CLIENT names a client of SLICE, SHELF_BROKER the
broker). A repair copy is a forwarded PUT or DELETE (`fwd`, `ver`) with
`repair` true, sent here with the identity and certificate of the key's
other home (a node certificate), as that node's repair would send it.

  heal_bad.py CLUSTER_DIR SLICE refuse KEY
      KEY is stored (through the client path) at version v on its first
      home T. Offers T, as the other home: (1) a repair copy newer than v
      whose crc does not match its bytes, (2) a repair copy older than v
      with a right crc, (3) a repair delete older than v. Each must be
      refused (or answered as superseded), and T must still hold KEY's
      bytes at v after each.
  heal_bad.py CLUSTER_DIR SLICE cut KEY SIZE
      offers T a repair copy of SIZE bytes newer than v and closes the
      connection after half of its payload: T must still hold the old
      bytes at v (nothing half-written is visible, a second later and
      after), and no busy inbound stream stays behind: the same copy sent
      again whole is accepted, and T then holds the new bytes at the new
      version.
Exit 1 on the first failure.
"""
import hashlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shelf_client import (Client, ShelfError, crc32c, place, load_key_file, header, H, PUT, GET,
                          STAT, DELETE)
import msgpack


def fail(why):
    print("FAIL:", why, flush=True)
    sys.exit(1)


def client():
    return Client.from_dir(os.environ["SHELF_CLIENT"], os.environ["SHELF_BROKER"])


def node_dir_of(cdir, member):
    for n in sorted(os.listdir(cdir)):
        log = os.path.join(cdir, n, "log")
        if n.startswith("n") and os.path.exists(log) and \
                ("identity " + member["id"].hex()) in open(log, errors="replace").read():
            return n
    fail(f"no node directory for {member['id'].hex()[:8]}")


def no_slice(hm):
    hm.pop("slice", None)  # a node's certificate lists no slices: HELLO names none
    return hm


def as_node(c, cdir, member):
    """A client that presents member's node identity and certificate."""
    nd = os.path.join(cdir, node_dir_of(cdir, member))
    nc = client()
    nc.ident = load_key_file(os.path.join(nd, "id.key"))
    nc.cert_raw = open(os.path.join(nd, "cert"), "rb").read()
    nc.maps = c.maps
    return nc


def read(c, sl, member, key):
    """(bytes or None, version or None) as member holds key."""
    with c.connect(sl, member) as cn:
        full = {"slice": sl, "epoch": c.epoch(sl), "key": key}
        rid = cn.send_request(GET, full)
        m, p = cn.read_response(GET, rid)
    v = m.get("ver")
    v = tuple(v) if isinstance(v, list) else None
    if m["status"] == 0:
        return p, v
    if m["status"] == 6:
        return None, v
    fail(f"GET {key!r} on its home: status {m['status']}: {m.get('message')}")


def offer(nc, sl, member, typ, meta, payload=b""):
    """(status, message, meta) of a repair copy offered to member."""
    with nc.connect(sl, member, hello_meta=no_slice) as cn:
        full = {"slice": sl, "epoch": nc.epoch(sl)}
        full.update(meta)
        rid = cn.send_request(typ, full, payload)
        m, _ = cn.read_response(typ, rid)
    return m["status"], m.get("message"), m


def setup(c, cdir, sl, key):
    m = c.fetch_map(sl)
    r = m["replicas"]
    if r < 2:
        fail(f"slice {sl} has R={r}: a repair copy needs another home")
    homes = place(m["members"], key, r, True)
    target, peer = homes[0], homes[1]
    b0, v0 = read(c, sl, target, key)
    if b0 is None or v0 is None:
        fail(f"{key!r} is not held (with a version) by its first home")
    return target, peer, b0, v0, as_node(c, cdir, peer)


def same(c, sl, target, key, b0, v0, after):
    b, v = read(c, sl, target, key)
    if b != b0 or v != v0:
        fail(f"after {after}: the home holds {'nothing' if b is None else len(b)} "
             f"{'' if b is None else 'bytes'} at {v}, not the {len(b0)} bytes at {v0}: overwritten")


def fwd(ver, data=None, crc=None, key=b""):
    meta = {"key": key, "ver": list(ver), "fwd": {"chain": [], "home": None}, "repair": True}
    if data is not None:
        meta.update(size=len(data), crc=crc32c(data) if crc is None else crc)
    return meta


def refuse(c, cdir, sl, key):
    target, peer, b0, v0, nc = setup(c, cdir, sl, key)
    node8 = int.from_bytes(peer["id"][:8], "big")
    now = max(int(time.time() * 1000) << 16, v0[0] + (1 << 16))
    # (1) newer, but its crc does not match its bytes
    d1 = b"a repair copy whose crc lies " + os.urandom(3000)
    st, msg, _ = offer(nc, sl, target, PUT, fwd((now, node8), d1, crc32c(d1) ^ 0x5a5a5a5a, key), d1)
    if st == 0:
        fail("a repair copy with a bad checksum was accepted")
    same(c, sl, target, key, b0, v0, "a repair copy with a bad checksum")
    print(f"a repair copy with a bad checksum: refused ({st}: {msg}); nothing overwritten")
    # (2) older than what the home holds, right crc
    d2 = b"an older repair copy " + os.urandom(3000)
    old = (v0[0] - (1000 << 16), v0[1])
    st, msg, m2 = offer(nc, sl, target, PUT, fwd(old, d2, None, key), d2)
    if st == 0 and not m2.get("superseded"):
        fail("an older repair copy was accepted and not answered as superseded")
    same(c, sl, target, key, b0, v0, "an older repair copy")
    print(f"a repair copy older than the home's: {'superseded' if st == 0 else f'refused ({st}: {msg})'}; "
          f"nothing overwritten")
    # (3) an older repair delete
    st, msg, m3 = offer(nc, sl, target, DELETE, fwd(old, None, None, key))
    if st == 0 and not m3.get("superseded"):
        fail("an older repair delete was accepted and not answered as superseded")
    same(c, sl, target, key, b0, v0, "an older repair delete")
    print(f"a repair delete older than the home's object: "
          f"{'superseded' if st == 0 else f'refused ({st}: {msg})'}; the object stays")
    return 0


def cut(c, cdir, sl, key, size):
    target, peer, b0, v0, nc = setup(c, cdir, sl, key)
    node8 = int.from_bytes(peer["id"][:8], "big")
    ver = (max(int(time.time() * 1000) << 16, v0[0] + (1 << 16)), node8)
    d = hashlib.sha256(b"cut").digest() * (size // 32) + b"\0" * (size % 32)
    meta = {"slice": sl, "epoch": nc.epoch(sl)}
    meta.update(fwd(ver, d, None, key))
    cn = nc.connect(sl, target, hello_meta=no_slice)
    # the head announces the whole payload; half of it follows, then the
    # connection goes away (the sending node died)
    cn.rid = 1
    mb = msgpack.packb(meta, use_bin_type=True)
    h = header(PUT, len(mb), len(d), cn.tx_seq, cn.rid, 0)
    cn.sock.sendall(h + mb + H(cn.mac_c2s, 16, h + mb))
    cn.sock.sendall(d[:size // 2])
    time.sleep(0.3)
    cn.close()
    same(c, sl, target, key, b0, v0, "a repair stream cut off halfway (at once)")
    time.sleep(1.0)
    same(c, sl, target, key, b0, v0, "a repair stream cut off halfway (a second later)")
    print(f"a repair stream of {size} B cut off after {size // 2} B: the home still holds the old "
          f"bytes at the old version")
    # the retry: whole; an inbound slot the cut stream held must be free again
    for attempt in range(20):
        st, msg, _ = offer(nc, sl, target, PUT, fwd(ver, d, None, key), d)
        if st != 10:  # busy: the cut stream's slot is being released
            break
        time.sleep(0.5)
    if st != 0:
        fail(f"the retried repair copy: status {st}: {msg}")
    b, v = read(c, sl, target, key)
    if b != d or v != ver:
        fail(f"after the retry the home holds {None if b is None else len(b)} B at {v}, "
             f"not the {size} B at {ver}")
    print(f"the retry completed: the home holds the {size} B at the new version")
    return 0


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    cdir, sl, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    c = client()
    c.fetch_map(sl)
    if mode == "refuse":
        return refuse(c, cdir, sl, sys.argv[4].encode())
    if mode == "cut":
        return cut(c, cdir, sl, sys.argv[4].encode(), int(sys.argv[5]))
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main())
