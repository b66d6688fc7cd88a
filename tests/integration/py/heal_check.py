"""Checks of self-healing slices (issue 14), for the heal_*.sh tests (run
inside the cluster's backplane, as `shelf-cluster exec` runs it:
SHELF_CLIENT names a client of SLICE, SHELF_BROKER the broker).

  heal_check.py CLUSTER_DIR SLICE fill N PREFIX SEED [--size B] [--threads T]
      puts N keys PREFIX<i> (B bytes each, default 4096, bytes derived from
      SEED and the key) through their heads, T (default 4) at a time; the
      bytes of key i are data(SEED, i, B). Exit 1 on a failed put.
  heal_check.py CLUSTER_DIR SLICE verify N PREFIX SEED [--size B] [--deleted FILE]
      reads every key back (through the head, then the other homes) and
      compares the bytes; keys listed in FILE (one a line) must be not-found.
  heal_check.py CLUSTER_DIR SLICE holdings PREFIX OUT
      LIST (versioned, tombstones included) on every member that is not
      `out`: writes OUT, a JSON object {node dir: {key: [hlc, node, tomb]}}.
  heal_check.py CLUSTER_DIR SLICE moved BEFORE AFTER NEW TOL
      BEFORE and AFTER are holdings (objects, not tombstones) taken before
      and after nodes NEW (comma-separated node dirs) joined. Prints the
      fraction of copies that moved (a copy on a node that did not hold it
      before) against the ideal NEW/members, checks that only objects
      whose homes changed moved, that every object is at exactly its R
      homes after, and that the copies per node are within TOL (a
      fraction, e.g. 0.35) of the mean. Exit 1 if not.
  heal_check.py CLUSTER_DIR SLICE at-home HOLDINGS N PREFIX
      HOLDINGS (as written by holdings) holds each of the N keys
      PREFIX<i> (an object, not a tombstone) at exactly its R homes in the
      map now and nowhere else. Exit 1 (naming the first keys) if not.
  heal_check.py CLUSTER_DIR SLICE pernode NAME
      `<node dir> <value|->` of counter NAME for every member not `out`
      (`<node dir> down` when it does not answer).
  heal_check.py CLUSTER_DIR SLICE getlat N PREFIX SEED SECONDS [--size B]
      GETs of random keys PREFIX<0..N-1> for SECONDS, one at a time, each
      checked against its bytes; prints `gets K p50_ms X p99_ms Y`.
  heal_check.py CLUSTER_DIR SLICE counters NAME...
      the sums of the named NODE_STAT counters over the members that are
      not `out`, one `NAME VALUE` line each (`NAME -` when none reports it).
"""
import hashlib
import json
import os
import sys
import threading
import time

import msgpack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shelf_client import Client, ShelfError, crc32c, place, PUT, GET, STAT, LIST, NODE_STAT


def fail(why):
    print("FAIL:", why, flush=True)
    sys.exit(1)


def client():
    return Client.from_dir(os.environ["SHELF_CLIENT"], os.environ["SHELF_BROKER"])


def node_dirs(cdir):
    """member id (bytes) -> node directory name, from each node's log."""
    out = {}
    for n in sorted(os.listdir(cdir)):
        log = os.path.join(cdir, n, "log")
        if not (n.startswith("n") and os.path.exists(log)):
            continue
        with open(log, errors="replace") as f:
            for line in f:
                i = line.find("identity ")
                if i >= 0:
                    w = line[i + 9:].split()
                    if w and len(w[0]) == 64:
                        out[bytes.fromhex(w[0])] = n
                        break
    return out


def data(seed, i, size):
    out, n = b"", 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{i}:{n}".encode()).digest()
        n += 1
    return out[:size]


def opts(argv, defaults):
    o = dict(defaults)
    i = 0
    rest = []
    while i < len(argv):
        if argv[i].startswith("--") and argv[i] in o:
            o[argv[i]] = argv[i + 1]
            i += 2
        else:
            rest.append(argv[i])
            i += 1
    return o, rest


def request(c, sl, mb, typ, meta, payload=b""):
    """One request on a fresh connection; a stale map is fetched again."""
    for _ in range(20):
        try:
            with c.connect(sl, mb, timeout=10.0) as cn:
                full = {"slice": sl, "epoch": c.epoch(sl)}
                full.update(meta)
                rid = cn.send_request(typ, full, payload)
                m, p = cn.read_response(typ, rid)
                if m["status"] == 4:
                    c.fetch_map(sl)
                    time.sleep(0.05)
                    continue
                return m, p
        except ShelfError as e:
            if e.status != 4:
                raise
            c.fetch_map(sl)
            time.sleep(0.05)
    fail("the map stays stale")


def fill(c, sl, n, prefix, seed, size, threads):
    errors = []
    nxt = [0]
    lock = threading.Lock()

    def worker():
        cl = client()
        cl.maps = dict(c.maps)
        conns = {}  # head id -> an open connection (one handshake per head)
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= n or errors:
                break
            k = f"{prefix}{i}".encode()
            d = data(seed, i, size)
            for attempt in range(5):
                head = cl.primary(sl, k, True)
                try:
                    cn = conns.get(head["id"])
                    if cn is None:
                        cn = conns[head["id"]] = cl.connect(sl, head)
                    cn.request(PUT, {"key": k, "size": len(d), "crc": crc32c(d)}, d)
                    break
                except (OSError, ShelfError) as e:
                    x = conns.pop(head["id"], None)
                    if x:
                        x.close()
                    if attempt == 4:
                        errors.append(f"put {k!r}: {e}")
                    time.sleep(0.2)
                    cl.fetch_map(sl)
        for cn in conns.values():
            cn.close()

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        fail(errors[0])
    print(f"put {n} keys {prefix}0..{n - 1} of {size} B in {time.monotonic() - t0:.1f} s", flush=True)


def verify(c, sl, n, prefix, seed, size, deleted):
    m = c.fetch_map(sl)
    bad = []
    for i in range(n):
        k = f"{prefix}{i}".encode()
        want = None if k.decode() in deleted else data(seed, i, size)
        got, why = "error", ""
        for mb in place(m["members"], k, m["replicas"], False) or []:
            try:
                r, p = request(c, sl, mb, GET, {"key": k})
            except (OSError, ShelfError) as e:
                why = str(e)
                continue
            if r["status"] == 0:
                got = p
                break
            if r["status"] == 6:
                got = None
                if want is None:
                    break
                continue  # another home may hold it
            why = f"status {r['status']}: {r.get('message')}"
        if got == "error":
            bad.append(f"{k.decode()}: no home answered ({why})")
        elif got != want:
            bad.append(f"{k.decode()}: " + ("not found" if got is None else
                                             "deleted key came back" if want is None else
                                             "wrong bytes"))
    if bad:
        for b in bad[:20]:
            print("bad:", b)
        fail(f"{len(bad)} of {n} keys read wrong")
    print(f"all {n} keys read back right ({len(deleted)} of them deleted: not found)", flush=True)


def holdings(c, cdir, sl, prefix, out):
    m = c.fetch_map(sl)
    names = node_dirs(cdir)
    res = {}
    for mb in m["members"]:
        if mb["state"] == "out":
            continue
        name = names.get(mb["id"], mb["id"].hex()[:8])
        keys, after = {}, None
        while True:
            meta = {"vers": True, "limit": 10000}
            if prefix:
                meta["prefix"] = prefix.encode()
            if after is not None:
                meta["after"] = after
            try:
                r, p = request(c, sl, mb, LIST, meta)
            except (OSError, ShelfError) as e:
                fail(f"list on {name}: {e}")
            if r["status"] != 0:
                fail(f"list on {name}: status {r['status']}: {r.get('message')}")
            got = msgpack.unpackb(p, raw=False) if p else []
            for e in got:
                if isinstance(e, list):
                    keys[e[0].decode(errors="replace")] = [e[1], e[2], bool(e[3])]
                else:
                    keys[e.decode(errors="replace")] = [0, 0, False]
            if not r.get("more") or not got:
                break
            after = got[-1][0] if isinstance(got[-1], list) else got[-1]
        res[name] = keys
    with open(out, "w") as f:
        json.dump({"epoch": m["epoch"], "nodes": res}, f)
    print(f"holdings of {len(res)} members, {sum(len(v) for v in res.values())} entries -> {out}")


def moved(c, cdir, sl, before, after, new, tol):
    b = json.load(open(before))["nodes"]
    a = json.load(open(after))["nodes"]
    m = c.fetch_map(sl)
    names = node_dirs(cdir)
    r = m["replicas"]
    members = [x for x in m["members"] if x["state"] != "out"]
    old_members = [x for x in members if names.get(x["id"]) not in new]
    objs = lambda h: {(n, k) for n, ks in h.items() for k, v in ks.items() if not v[2]}
    bo, ao = objs(b), objs(a)
    keys = sorted({k for _, k in bo})
    moved_copies = ao - bo
    total = len(bo)
    frac = len(moved_copies) / total if total else 0.0
    ideal = len(new) / len(members)
    bad = []
    for k in keys:
        kb = k.encode()
        h_old = {names.get(x["id"]) for x in place(old_members, kb, r, True)}
        h_new = {names.get(x["id"]) for x in place(members, kb, r, True)}
        holders = {n for n, kk in ao if kk == k}
        if holders != h_new:
            bad.append(f"{k}: held by {sorted(holders)}, homes {sorted(h_new)}")
        elif h_old == h_new and any(kk == k for _, kk in moved_copies):
            bad.append(f"{k}: its homes did not change but a copy moved")
    load = {n: sum(1 for (nn, _) in ao if nn == n) for n in (names.get(x["id"]) for x in members)}
    mean = sum(load.values()) / len(load)
    lo, hi = min(load.values()), max(load.values())
    print(f"objects {len(keys)}, copies {total}; copies moved {len(moved_copies)}: fraction "
          f"{frac:.4f} against the ideal {len(new)}/{len(members)} = {ideal:.4f} "
          f"(ratio {frac / ideal:.3f})", flush=True)
    print(f"copies per node after: mean {mean:.1f}, min {lo} ({lo / mean:.2f} of it), max {hi} "
          f"({hi / mean:.2f}); tolerance {tol:.2f}", flush=True)
    print("load: " + " ".join(f"{n}={load[n]}" for n in sorted(load)))
    if bad:
        for x in bad[:20]:
            print("bad:", x)
        fail(f"{len(bad)} objects not exactly at their homes, or moved without cause")
    if hi > mean * (1 + tol) or lo < mean * (1 - tol):
        fail(f"load not even within {tol:.2f} of the mean")
    return 0


def at_home(c, cdir, sl, hold, n, prefix):
    h = json.load(open(hold))["nodes"]
    m = c.fetch_map(sl)
    names = node_dirs(cdir)
    members = [x for x in m["members"] if x["state"] != "out"]
    bad = []
    for i in range(n):
        k = f"{prefix}{i}"
        homes = {names.get(x["id"]) for x in place(members, k.encode(), m["replicas"], True)}
        holders = {nd for nd, ks in h.items() if k in ks and not ks[k][2]}
        if holders != homes:
            bad.append(f"{k}: held by {sorted(holders)}, homes {sorted(homes)}")
    for b in bad[:10]:
        print("not at home:", b)
    if bad:
        fail(f"{len(bad)} of {n} keys not at exactly their homes")
    print(f"all {n} keys {prefix}0..{n - 1} at exactly their {m['replicas']} homes", flush=True)
    return 0


def counters(c, sl, names_):
    m = c.fetch_map(sl)
    sums = {n: None for n in names_}
    for mb in m["members"]:
        if mb["state"] == "out":
            continue
        try:
            r, _ = request(c, sl, mb, NODE_STAT, {})
        except (OSError, ShelfError):
            continue
        cs = r.get("counters") or {}
        for n in names_:
            if n in cs:
                sums[n] = (sums[n] or 0) + cs[n]
    for n in names_:
        print(n, "-" if sums[n] is None else sums[n])


def pernode(c, cdir, sl, name):
    m = c.fetch_map(sl)
    names = node_dirs(cdir)
    for mb in m["members"]:
        if mb["state"] == "out":
            continue
        n = names.get(mb["id"], mb["id"].hex()[:8])
        try:
            r, _ = request(c, sl, mb, NODE_STAT, {})
        except (OSError, ShelfError):
            print(n, "down")
            continue
        v = (r.get("counters") or {}).get(name)
        print(n, "-" if v is None else v)


def getlat(c, sl, n, prefix, seed, seconds, size):
    import random
    rnd = random.Random(f"getlat-{seed}")
    ms = []
    t_end = time.monotonic() + seconds
    conns = {}
    while time.monotonic() < t_end:
        i = rnd.randrange(n)
        k = f"{prefix}{i}".encode()
        t0 = time.monotonic()
        got, why = None, ""
        # the homes in order, as a client reads: a new home that has no
        # copy yet answers not-found, and the next one is asked
        for attempt in range(3):
            m = c.map(sl)
            for mb in place(m["members"], k, m["replicas"], False):
                try:
                    cn = conns.get(mb["id"])
                    if cn is None:
                        cn = conns[mb["id"]] = c.connect(sl, mb)
                    _, got = cn.request(GET, {"key": k})
                    break
                except (OSError, ShelfError) as e:
                    why = str(e)
                    if isinstance(e, ShelfError) and e.status == 6:
                        continue
                    x = conns.pop(mb["id"], None)
                    if x:
                        x.close()
            if got is not None:
                break
            c.fetch_map(sl)
        if got is None:
            fail(f"get {k!r}: {why}")
        ms.append((time.monotonic() - t0) * 1e3)
        if got != data(seed, i, size):
            fail(f"get {k!r}: wrong bytes")
    for cn in conns.values():
        cn.close()
    ms.sort()
    p = lambda q: ms[max(0, min(len(ms) - 1, int(len(ms) * q + 0.999999) - 1))]
    print(f"gets {len(ms)} p50_ms {p(0.5):.2f} p99_ms {p(0.99):.2f}", flush=True)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    cdir, sl, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    c = client()
    c.fetch_map(sl)
    o, rest = opts(sys.argv[4:], {"--size": "4096", "--threads": "4", "--deleted": ""})
    if mode == "fill":
        return fill(c, sl, int(rest[0]), rest[1], rest[2], int(o["--size"]), int(o["--threads"]))
    if mode == "verify":
        deleted = set()
        if o["--deleted"]:
            deleted = {x.strip() for x in open(o["--deleted"]) if x.strip()}
        return verify(c, sl, int(rest[0]), rest[1], rest[2], int(o["--size"]), deleted)
    if mode == "holdings":
        return holdings(c, cdir, sl, rest[0], rest[1])
    if mode == "moved":
        return moved(c, cdir, sl, rest[0], rest[1], set(rest[2].split(",")), float(rest[3]))
    if mode == "at-home":
        return at_home(c, cdir, sl, rest[0], int(rest[1]), rest[2])
    if mode == "getlat":
        return getlat(c, sl, int(rest[0]), rest[1], rest[2], float(rest[3]), int(o["--size"]))
    if mode == "pernode":
        return pernode(c, cdir, sl, rest[0])
    if mode == "counters":
        return counters(c, sl, rest)
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main())
