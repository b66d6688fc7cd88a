"""Checks run by tests/integration/repl_hints.sh inside the cluster's backplane:
hints and hinted hand-off on slice r2 (R = 2).

argv: MODE CLUSTER_DIR [NODE]. State between modes is kept in
CLUSTER_DIR/hints.json. Modes:
  prep           writes keys with every node up; prints the node directory
                 of the victim (a home of key h/del)
  down NODE      (NODE killed) overwrites and deletes keys NODE is a home
                 of: every write succeeds with a substitute; the live
                 nodes' NODE-STAT count the hints (hints_waiting,
                 hints_for_<NODE>); prints the node directory of a
                 substitute that holds hints
  same NODE      the hints counted before are all still there (after the
                 substitute's SIGKILL and restart)
  back NODE      (NODE restarted) reads NODE directly many times while it
                 syncs: busy or the newest bytes, never the old ones, and
                 never the deleted key; then waits until no node holds a
                 hint; NODE holds every key at its version, the deleted one
                 not at all, and no substitute keeps a copy
Exits 1 on the first failure. SEED (env) seeds the data.
"""
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shelf_client import Client, ShelfError, crc32c, place, PUT, GET, STAT, DELETE, NODE_STAT

mode, cdir = sys.argv[1], sys.argv[2]
SL = "r2"
STATE = os.path.join(cdir, "hints.json")
seed = int(os.environ.get("SEED", "1"))
rnd = random.Random(seed * 7919 + hash(mode) % 1000)


def fail(why):
    print("FAIL:", why)
    sys.exit(1)


c = Client.from_dir(os.environ["SHELF_CLIENT"], os.environ["SHELF_BROKER"])
m = c.fetch_map(SL)
members = m["members"]
if m["replicas"] != 2:
    fail(f"slice {SL} has replicas {m['replicas']}")


def homes(key):
    return place(members, key, 2, True)


def node_dir_of(member):
    for n in sorted(os.listdir(cdir)):
        log = os.path.join(cdir, n, "log")
        if n.startswith("n") and os.path.exists(log) and \
                ("identity " + member["id"].hex()) in open(log, errors="replace").read():
            return n
    fail(f"no node directory for {member['id'].hex()[:8]}")


def member_of(name):
    return [x for x in members if node_dir_of(x) == name][0]


def req(member, typ, meta, payload=b""):
    """a request to member; a stale map is fetched anew and the request made again"""
    for _ in range(20):
        try:
            with c.connect(SL, member) as cn:
                return cn.request(typ, meta, payload)
        except ShelfError as e:
            if e.status != 4:
                raise
            c.fetch_map(SL)
            time.sleep(0.05)
    fail("the map stays stale")


def put_via(member, key, data):
    r, _ = req(member, PUT, {"key": key, "size": len(data), "crc": crc32c(data)}, data)
    return r


def get_from(member, key):
    """(bytes or None for not-found, reply); raises ShelfError on others"""
    try:
        r, payload = req(member, GET, {"key": key})
    except ShelfError as e:
        if e.status == 6:
            return None, None
        raise
    return payload, r


def counters(member):
    r, _ = req(member, NODE_STAT, {})
    return r["counters"]


def hints_of(member, target=None):
    cs = counters(member)
    if target is None:
        return cs.get("hints_waiting", 0)
    return cs.get("hints_for_" + target["id"].hex()[:16], 0)


def wait_up(n, secs=30):
    global m, members
    for _ in range(secs * 10):
        m = c.fetch_map(SL)
        members = m["members"]
        if sum(1 for x in members if x["state"] == "up") >= n:
            return
        time.sleep(0.1)
    fail(f"fewer than {n} members up")


def save(st):
    json.dump(st, open(STATE, "w"))


def load():
    return json.load(open(STATE))


KEYS = [b"h/%d" % i for i in range(16)]

def delivered(st):
    # every hint delivered
    for _ in range(300):
        left = {node_dir_of(x): hints_of(x) for x in members}
        if not any(left.values()):
            break
        time.sleep(0.1)
    else:
        fail(f"hints still waiting after 30 s: {left}")
    # a node back from a cut answers reads busy until its sync is done
    # (it asks a member it cannot reach yet again, up to hint_sync_timeout)
    for x in members:
        for _ in range(200):
            try:
                req(x, STAT, {"key": b"sync-probe"})
                break
            except ShelfError as e:
                if e.status == 6:
                    break
                if e.status != 10:
                    raise
                time.sleep(0.1)
        else:
            fail(f"{node_dir_of(x)} still answers busy 20 s after its hints were delivered")
    for kh, e in st["data"].items():
        k = bytes.fromhex(kh)
        h = homes(k)
        for x in members:
            d, r = get_from(x, k)
            if x in h:
                if e.get("deleted"):
                    if d is not None:
                        fail(f"{k!r}: deleted, still on home {node_dir_of(x)}")
                elif d is None or crc32c(d) != e["crc"]:
                    fail(f"{k!r}: home {node_dir_of(x)} does not hold the newest bytes")
                elif req(x, STAT, {"key": k})[0].get("ver") != e["ver"]:
                    fail(f"{k!r}: home {node_dir_of(x)} holds version {req(x, STAT, {'key': k})[0].get('ver')}, not {e['ver']}")
            elif d is not None:
                fail(f"{k!r}: {node_dir_of(x)}, no home, still holds a copy after the hand-off")
    print("hints delivered: hints_waiting 0 on every node, the returning node holds every key "
          "at its version and not the deleted one, no substitute keeps a copy", file=sys.stderr)


if mode == "prep":
    wait_up(len(members))
    st = {"data": {}}
    for k in KEYS + [b"h/del"]:
        d = rnd.randbytes(rnd.choice([0, 1, 700, 70000, 300000]))
        r = put_via(homes(k)[0], k, d)
        if len(r.get("held") or []) != 2:
            fail(f"{k!r}: held {r.get('held')}")
        st["data"][k.hex()] = {"crc": crc32c(d), "len": len(d), "ver": r["ver"]}
    victim = homes(b"h/del")[1]
    st["victim"] = victim["id"].hex()
    save(st)
    print(node_dir_of(victim))

if mode == "down":
    st = load()
    dead = member_of(sys.argv[3])
    live = [x for x in members if x is not dead]
    mine = [k for k in KEYS if dead in homes(k)]
    if not mine:
        fail("the victim is no home of any key")
    n = 0
    for k in mine:
        d = rnd.randbytes(rnd.choice([0, 5, 1000, 200000]))
        head = [x for x in homes(k) if x is not dead][0]
        r = put_via(head, k, d)
        held = r.get("held") or []
        if len(held) != 2 or dead["id"] in held or r.get("homes") != 1:
            fail(f"{k!r} with its home dead: held {[x.hex()[:8] for x in held]} homes {r.get('homes')}")
        st["data"][k.hex()] = {"crc": crc32c(d), "len": len(d), "ver": r["ver"],
                               "subst": [x.hex() for x in held if x != head["id"]]}
        n += 1
    k = b"h/del"
    head = [x for x in homes(k) if x is not dead][0]
    with c.connect(SL, head) as cn:
        r, _ = cn.request(DELETE, {"key": k})
    held = r.get("held") or []
    if len(held) != 2 or r.get("homes") != 1:
        fail(f"delete with a home dead: held {[x.hex()[:8] for x in held]} homes {r.get('homes')}")
    st["data"][k.hex()] = {"deleted": True, "ver": r["ver"],
                           "subst": [x.hex() for x in held if x != head["id"]]}
    n += 1
    total = sum(hints_of(x) for x in live)
    for_dead = {node_dir_of(x): hints_of(x, dead) for x in live}
    if total < n or sum(for_dead.values()) < n:
        fail(f"{n} hinted writes, but hints_waiting {total}, hints_for the victim {for_dead}")
    st["hints"] = for_dead
    save(st)
    print(f"victim down: {n} writes ({len(mine)} puts, 1 delete) held by a substitute each; "
          f"hints for the victim: {for_dead}", file=sys.stderr)
    print(max(for_dead, key=lambda x: for_dead[x]))

if mode == "same":
    st = load()
    dead = member_of(sys.argv[3])
    wait_up(len(members) - 1)
    for name, want in st["hints"].items():
        got = None
        for _ in range(100):
            try:
                got = hints_of(member_of(name), dead)
                break
            except (ShelfError, OSError):
                time.sleep(0.1)
        if got != want:
            fail(f"node {name}: {got} hints for the victim after its restart, {want} before")
    print("a substitute SIGKILLed and restarted holds every hint it held")

if mode == "back":
    st = load()
    back = member_of(sys.argv[3])
    # reads from the returning node directly, while it syncs
    deadline = time.time() + 15
    busy = reads = 0
    while time.time() < deadline:
        for kh, e in st["data"].items():
            k = bytes.fromhex(kh)
            if back not in homes(k):
                continue
            try:
                d, _ = get_from(back, k)
            except ShelfError as ex:
                if ex.status == 10:
                    busy += 1
                    continue
                raise
            except OSError:
                continue  # not listening yet
            reads += 1
            if e.get("deleted"):
                if d is not None:
                    fail(f"{k!r}: deleted while the node was down, and it served {len(d)} bytes")
            elif d is None or crc32c(d) != e["crc"] or len(d) != e["len"]:
                fail(f"{k!r}: the returning node served "
                     f"{'not-found' if d is None else f'{len(d)} other bytes'}")
        if reads > 200:
            break
    if reads == 0:
        fail("the returning node never answered a read")
    print(f"the returning node: {reads} reads, {busy} answered busy while it synced; "
          "never an old copy or a deleted key", file=sys.stderr)
    delivered(st)

if mode == "cutw":
    # NODE is cut off: writes of keys it is a home of go to substitutes
    cut = member_of(sys.argv[3])
    st = {"data": {}}
    n = 0
    for i in range(12):
        k = b"c/%d" % i
        d = rnd.randbytes(rnd.choice([1, 900, 40000]))
        for attempt in range(5):
            head = [x for x in homes(k) if x is not cut][0]
            try:
                r = put_via(head, k, d)
                break
            except ShelfError as e:
                if e.status != 10 or attempt == 4:
                    fail(f"{k!r} with {sys.argv[3]} cut: {e}")
                # busy: the broker's new map (the cut node down) may not
                # have reached the head yet; it asks for it when a peer
                # answers stale-map
                time.sleep(0.1 * (attempt + 1))
        held = r.get("held") or []
        if len(held) != 2 or cut["id"] in held:
            fail(f"{k!r} with {sys.argv[3]} cut: held {[x.hex()[:8] for x in held]}")
        st["data"][k.hex()] = {"crc": crc32c(d), "len": len(d), "ver": r["ver"]}
        n += cut in homes(k)
    if not n:
        fail("the cut node is no home of any key written")
    save(st)
    print(f"{sys.argv[3]} cut: 12 writes succeed, {n} of them with a substitute for it",
          file=sys.stderr)

if mode == "healed":
    st = load()
    wait_up(len(members))
    delivered(st)
