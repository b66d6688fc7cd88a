"""Checks run by tests/integration/repl_wgc.sh inside the cluster's backplane.

argv: MODE CLUSTER_DIR [NODE]. Modes:
  gc             (nodes run with tombstone_gc_after=2s) a key of slice r2 is
                 put and deleted: both homes answer STAT with the tombstone,
                 then, within 15 s, both have dropped it (not-found without
                 a version), and an older write is then still refused on
                 neither (the key is unknown: nothing to bring back)
  wvictim        prints the node directory of a home of w/1 in slice w1
  w1 NODE        (NODE killed) a PUT on slice w1 (R=2, W=1, two members)
                 succeeds with one copy: held 1, homes 1
Exits 1 on the first failure.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shelf_client import Client, ShelfError, crc32c, place, PUT, STAT, DELETE

mode, cdir = sys.argv[1], sys.argv[2]
c = Client.from_dir(os.environ["SHELF_CLIENT"], os.environ["SHELF_BROKER"])


def fail(why):
    print("FAIL:", why)
    sys.exit(1)


def req(sl, member, typ, meta, payload=b""):
    for _ in range(20):
        try:
            with c.connect(sl, member) as cn:
                return cn.request(typ, meta, payload)
        except ShelfError as e:
            if e.status != 4:
                raise
            c.fetch_map(sl)
            time.sleep(0.05)
    fail("the map stays stale")


def stat_meta(sl, member, key):
    """the STAT answer's meta, whatever its status"""
    for _ in range(200):
        with c.connect(sl, member) as cn:
            rid = cn.send_request(STAT, {"slice": sl, "epoch": c.epoch(sl), "key": key}, b"", False)
            meta, _ = cn.read_response(STAT, rid)
        if meta["status"] == 10:
            time.sleep(0.1)  # the node takes its hints back after its start
            continue
        if meta["status"] != 4:
            return meta
        c.fetch_map(sl)
    fail("the map stays stale")


def node_dir_of(member):
    for n in sorted(os.listdir(cdir)):
        log = os.path.join(cdir, n, "log")
        if n.startswith("n") and os.path.exists(log) and \
                ("identity " + member["id"].hex()) in open(log, errors="replace").read():
            return n
    fail(f"no node directory for {member['id'].hex()[:8]}")


if mode == "gc":
    m = c.fetch_map("r2")
    k = b"g/1"
    h = place(m["members"], k, 2, True)
    d = os.urandom(5000)
    r, _ = req("r2", h[0], PUT, {"key": k, "size": len(d), "crc": crc32c(d)}, d)
    r, _ = req("r2", h[0], DELETE, {"key": k})
    if len(r.get("held") or []) != 2:
        fail(f"delete: held {r.get('held')}")
    ver = r["ver"]
    t0 = time.time()
    seen = set()
    for _ in range(300):
        left = []
        for x in h:
            meta = stat_meta("r2", x, k)
            if meta["status"] != 6:
                fail(f"STAT of the deleted key: status {meta['status']}")
            if meta.get("tomb"):
                if meta.get("ver") != ver:
                    fail(f"a tombstone at {meta.get('ver')}, the delete's is {ver}")
                seen.add(x["id"])
                left.append(x)
        if not left:
            break
        time.sleep(0.1)
    else:
        fail("a tombstone is still held 30 s after the delete (tombstone_gc_after 2s)")
    if len(seen) != 2:
        fail("the homes did not both answer with the tombstone before it was dropped")
    dt = time.time() - t0
    if dt < 1.5:
        fail(f"tombstones dropped after {dt:.1f} s, before tombstone_gc_after (2 s)")
    print(f"tombstone GC: both homes held the tombstone, and dropped it {dt:.1f} s after the delete",
          file=sys.stderr)

if mode == "wvictim":
    m = c.fetch_map("w1")
    if len(m["members"]) != 2:
        fail(f"slice w1 has {len(m['members'])} members")
    print(node_dir_of(place(m["members"], b"w/1", 2, True)[1]))

if mode == "w1":
    m = c.fetch_map("w1")
    for _ in range(100):
        m = c.fetch_map("w1")
        if sum(1 for x in m["members"] if x["state"] == "up") == 1:
            break
        time.sleep(0.1)
    live = [x for x in m["members"] if node_dir_of(x) != sys.argv[3]]
    k = b"w/1"
    d = os.urandom(3000)
    r, _ = req("w1", live[0], PUT, {"key": k, "size": len(d), "crc": crc32c(d)}, d)
    if r.get("held") != [live[0]["id"]] or r.get("homes") != 1:
        fail(f"W=1 with one of two homes dead: held {r.get('held')} homes {r.get('homes')}")
    print("W=1: a PUT with one of two homes dead succeeds with 1 copy (held 1, homes 1)",
          file=sys.stderr)
