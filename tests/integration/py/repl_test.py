"""Checks run by tests/integration/repl_write.sh inside the cluster's backplane:
replicated writes on slice r2 (R = 2).

argv: MODE CLUSTER_DIR. Modes: main (writes through the head, the second
home and a relay, read back from each replica directly; deletes; the
refusals of forwarded writes); victim (prints the node directory of the
second home of key r/k/0, for the script to kill); killed NAME (with that
node killed: writes whose homes include it succeed with a substitute, and
the answer counts one copy at its home). Exits 1 on the first failure.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shelf_client import (Client, ShelfError, crc32c, place, load_key_file, PUT, GET, STAT,
                          DELETE)

mode, cdir = sys.argv[1], sys.argv[2]
SL = "r2"


def fail(why):
    print("FAIL:", why)
    sys.exit(1)


def client(d):
    return Client.from_dir(d, os.environ["SHELF_BROKER"])


c = client(os.environ["SHELF_CLIENT"])
for _ in range(100):
    m = c.fetch_map(SL)
    if sum(1 for x in m["members"] if x["state"] == "up") == 4:
        break
    time.sleep(0.1)
else:
    fail(f"slice {SL} has not 4 members up")
members = m["members"]
ids = {x["id"]: x for x in members}
if m["replicas"] != 2:
    fail(f"slice {SL} has replicas {m['replicas']}")


def homes(key):
    return place(members, key, 2, True)


def put_via(member, key, data):
    with c.connect(SL, member) as cn:
        r, _ = cn.request(PUT, {"key": key, "size": len(data), "crc": crc32c(data)}, data)
    return r


def get_from(member, key):
    with c.connect(SL, member) as cn:
        try:
            r, payload = cn.request(GET, {"key": key})
        except ShelfError as e:
            if e.status == 6:
                return None, None
            raise
    if crc32c(payload) != r["crc"]:
        fail(f"{key!r} from a replica: crc mismatch")
    return payload, r


def check_copies(key, data, r, how):
    h = homes(key)
    held = r.get("held")
    if not held or sorted(held) != sorted(x["id"] for x in h):
        fail(f"{key!r} ({how}): held {[x.hex()[:8] for x in held or []]}, homes "
             f"{[x['id'].hex()[:8] for x in h]}")
    if r.get("homes") != 2:
        fail(f"{key!r} ({how}): homes {r.get('homes')}")
    if not r.get("ver") or r["ver"][0] < (int(time.time() * 1000) - 600000) << 16:
        fail(f"{key!r} ({how}): version {r.get('ver')}")
    for x in members:
        back, gr = get_from(x, key)
        if x in h:
            if back != data:
                fail(f"{key!r} ({how}): replica {x['id'].hex()[:8]} has "
                     f"{None if back is None else len(back)} bytes, not the {len(data)} put")
            with c.connect(SL, x) as cn:
                st, _ = cn.request(STAT, {"key": key})
            if st.get("ver") != r["ver"]:
                fail(f"{key!r} ({how}): replica {x['id'].hex()[:8]} version {st.get('ver')} != {r['ver']}")
        elif back is not None:
            fail(f"{key!r} ({how}): node {x['id'].hex()[:8]}, no home, holds a copy")


if mode == "main":
    objs = {b"r/0": b"", b"r/1": b"\x5a", b"r/100k": os.urandom(100 * 1024),
            b"r/3m": os.urandom(3 << 20), b"r/9m": os.urandom(9 << 20)}
    for k, d in objs.items():
        h = homes(k)
        check_copies(k, d, put_via(h[0], k, d), "through the head")
    print(f"{len(objs)} objects of 0 B to 9 MiB through the head: both homes hold them byte for byte")
    for i, d in enumerate([os.urandom(5000), os.urandom(2 << 20)]):
        k = b"r/second/%d" % i
        check_copies(k, d, put_via(homes(k)[1], k, d), "through the second home")
        k = b"r/relay/%d" % i
        other = [x for x in members if x not in homes(k)][0]
        check_copies(k, d, put_via(other, k, d), "relayed by a node that is no home")
    print("writes through the second home, and relayed by a node that is no home: both homes hold them")
    # overwrite, then delete: every replica follows
    k = b"r/100k"
    d2 = os.urandom(70000)
    check_copies(k, d2, put_via(homes(k)[1], k, d2), "overwrite")
    with c.connect(SL, homes(k)[0]) as cn:
        r, _ = cn.request(DELETE, {"key": k})
    if sorted(r.get("held") or []) != sorted(x["id"] for x in homes(k)):
        fail(f"delete: held {r.get('held')}")
    for x in members:
        if get_from(x, k)[0] is not None:
            fail(f"{k!r}: still on {x['id'].hex()[:8]} after the delete")
    print("overwrite and delete reach both homes")

    # ---- refusals: nothing stored in each case ----
    k = b"r/refused"
    d = b"refused bytes"
    h = homes(k)
    other = [x for x in members if x not in h]
    now_hlc = int(time.time() * 1000) << 16
    fwd_meta = {"key": k, "size": len(d), "crc": crc32c(d), "ver": [now_hlc, 7],
                "fwd": {"chain": [], "home": None}}

    def no_slice(hm):
        hm.pop("slice", None)  # a node's certificate lists no slices: HELLO names none
        return hm

    def expect(cl, member, meta, status, words, what, epoch=None):
        kw = {"hello_meta": no_slice} if cl is not c else {}
        with cl.connect(SL, member, **kw) as cn:
            try:
                cn.request(PUT, meta, d, epoch=epoch)
            except ShelfError as e:
                if e.status != status or words not in str(e):
                    fail(f"{what}: {e} (status {e.status})")
                return
        fail(f"{what}: accepted")

    expect(c, h[0], fwd_meta, 2, "cannot forward", "a forward from a client certificate")
    # a node's own identity and certificate, as another node presents them
    nd = os.path.join(cdir, "n01")
    nc = client(os.environ["SHELF_CLIENT"])
    nc.ident = load_key_file(os.path.join(nd, "id.key"))
    nc.cert_raw = open(os.path.join(nd, "cert"), "rb").read()
    nc.maps = c.maps
    expect(nc, other[0], fwd_meta, 5, "does not give this node", "a forward for a key not placed there")
    fut = dict(fwd_meta, ver=[(int(time.time() * 1000) + 3600 * 1000) << 16, 7])
    expect(nc, h[0], fut, 1, "from the future", "a version from the future")
    stranger = bytes(32)
    hint = dict(fwd_meta, fwd={"chain": [], "home": stranger})
    expect(nc, other[0], hint, 1, "not a member", "a hint for a node that is not a member")
    expect(nc, h[0], fwd_meta, 4, "stale", "a forward with a stale epoch", epoch=m["epoch"] - 1)
    for x in members:
        if get_from(x, k)[0] is not None:
            fail(f"a refused forward stored {k!r} on {x['id'].hex()[:8]}")
    # a chain that names a node that is not a member
    bad_chain = dict(fwd_meta, fwd={"chain": [[stranger, None]], "home": None})
    expect(nc, h[0], bad_chain, 1, "member", "a chain naming a node that is not a member")
    for x in members:
        if get_from(x, k)[0] is not None:
            fail(f"a forward with a non-member in its chain stored {k!r} on {x['id'].hex()[:8]}")

    # the same refusals for a forwarded DELETE, newer than the object it
    # would delete: the object stays on both homes
    def expect_del(cl, member, meta, status, words, what, epoch=None):
        kw = {"hello_meta": no_slice} if cl is not c else {}
        with cl.connect(SL, member, **kw) as cn:
            try:
                cn.request(DELETE, meta, epoch=epoch)
            except ShelfError as e:
                if e.status != status or words not in str(e):
                    fail(f"{what} (delete): {e} (status {e.status})")
                return
        fail(f"{what} (delete): accepted")

    k = b"r/refused-del"
    d = os.urandom(3000)
    h = homes(k)
    other = [x for x in members if x not in h]
    check_copies(k, d, put_via(h[0], k, d), "before the refused deletes")
    soon = (int(time.time() * 1000) + 1000) << 16
    del_meta = {"key": k, "ver": [soon, 7], "fwd": {"chain": [], "home": None}}
    expect_del(c, h[0], del_meta, 2, "cannot forward", "a forward from a client certificate")
    expect_del(nc, other[0], del_meta, 5, "does not give this node", "a forward for a key not placed there")
    expect_del(nc, h[1], dict(del_meta, ver=fut["ver"]), 1, "from the future", "a version from the future")
    expect_del(nc, other[0], dict(del_meta, fwd={"chain": [], "home": stranger}), 1, "not a member",
               "a hint for a node that is not a member")
    expect_del(nc, h[0], del_meta, 4, "stale", "a forward with a stale epoch", epoch=m["epoch"] - 1)
    for x in h:
        if get_from(x, k)[0] != d:
            fail(f"a refused forwarded delete removed {k!r} from {x['id'].hex()[:8]}")
    for x in other:
        if get_from(x, k)[0] is not None:
            fail(f"a refused forwarded delete left {k!r} on {x['id'].hex()[:8]}")
    print("refused, nothing deleted: the same forwarded DELETEs; refused, nothing stored: a chain "
          "naming a non-member")

    # versions: an older write arriving later is acknowledged as superseded
    # and not stored; a delete is a tombstone an older write cannot undo
    k = b"r/ver"
    d = os.urandom(3000)
    r = put_via(homes(k)[0], k, d)
    old = [r["ver"][0] - 1, r["ver"][1]]
    stale = {"key": k, "size": 5, "crc": crc32c(b"older"), "ver": old,
             "fwd": {"chain": [], "home": None}}
    with nc.connect(SL, homes(k)[1], hello_meta=no_slice) as cn:
        rr, _ = cn.request(PUT, stale, b"older")
    if not rr.get("superseded") or rr.get("held") != [homes(k)[1]["id"]]:
        fail(f"an older forwarded write: {rr}")
    if get_from(homes(k)[1], k)[0] != d:
        fail("an older forwarded write replaced the newer copy")
    with c.connect(SL, homes(k)[1]) as cn:
        dr, _ = cn.request(DELETE, {"key": k})
    for x in homes(k):
        with nc.connect(SL, x, hello_meta=no_slice) as cn:
            rr, _ = cn.request(PUT, dict(stale, ver=r["ver"]), b"older")
        if not rr.get("superseded") or get_from(x, k)[0] is not None:
            fail(f"a write older than the delete came back on {x['id'].hex()[:8]}: {rr}")
    print("an older write is acknowledged as superseded and not stored; a delete is not undone by one")
    print("refused, nothing stored: a forward from a client certificate, for a key not placed "
          "on the node, from the future, with a hint for a non-member, with a stale epoch")

def node_dir_of(member):
    for n in sorted(os.listdir(cdir)):
        log = os.path.join(cdir, n, "log")
        if n.startswith("n") and os.path.exists(log) and \
                ("identity " + member["id"].hex()) in open(log, errors="replace").read():
            return n
    fail(f"no node directory for {member['id'].hex()[:8]}")


if mode == "victim":
    print(node_dir_of(homes(b"r/k/0")[1]))

if mode == "killed":
    dead = [x for x in members if node_dir_of(x) == sys.argv[3]][0]
    n_sub = 0
    for i in range(12):
        k = b"r/k/%d" % i
        d = os.urandom(1000 + i * 20000)
        h = homes(k)
        head = h[0] if h[0] is not dead else h[1]
        r = put_via(head, k, d)
        held = r.get("held") or []
        if len(held) != 2 or dead["id"] in held:
            fail(f"{k!r} with a home dead: held {[x.hex()[:8] for x in held]}")
        if dead in h:
            n_sub += 1
            if r.get("homes") != 1:
                fail(f"{k!r}: homes {r.get('homes')} with one home dead")
        for x in members:
            if x is dead:
                continue
            back, _ = get_from(x, k)
            if (x["id"] in held) != (back == d):
                fail(f"{k!r}: node {x['id'].hex()[:8]} holds {back is not None}, held says "
                     f"{x['id'] in held}")
    if not n_sub:
        fail("no key had the dead node as a home")
    print(f"one node SIGKILLed: 12 writes succeed, {n_sub} of them with a substitute holding the "
          "dead home's copy (homes 1), each copy where `held` says")
