"""Checks of replicated slices that read every replica directly, for the
repl_*.sh tests (run inside the cluster's backplane, as `shelf-cluster exec`
runs it: SHELF_CLIENT names a client of SLICE, SHELF_BROKER the broker).

  repl_check.py CLUSTER_DIR SLICE homes KEY
      the node directories (n01..) of KEY's homes, in placement order, one
      line (the first is the head of a write). KEY hex:HEX: the key's bytes
      in hex.
  repl_check.py CLUSTER_DIR SLICE replicas KEY [SHA256]
      reads KEY from every member of SLICE directly (GET and STAT, one
      connection each) and prints one line per member:
        <node dir> home|other <sha256|absent|tomb|down|error> <version|->
      With SHA256 (a hex digest, or 'absent'), exits 1 when a member that
      answers holds other bytes, and prints `holders N` (the members that
      hold exactly those bytes) last.
  repl_check.py CLUSTER_DIR SLICE converge ROUNDS SEED [--key KEY]
      WRITERS (4) clients, each with its own connection through its own node
      (every home of KEY, then other members), write KEY at the same moment,
      ROUNDS times: puts of 0 B to 2 MiB of bytes no other write has, and in
      some rounds a delete among them. After each round every home must
      hold the same version, the newest any write was acknowledged with,
      and that write's bytes (or not-found with that tombstone, for a
      delete); no other member holds a copy. Exit 1 on the first failure.
  repl_check.py CLUSTER_DIR SLICE wait-up N
      until the slice's map has N members up (30 s at most; exit 1 if not).
  repl_check.py CLUSTER_DIR SLICE wait-serving
      waits until no member up in the map answers reads busy (a node back
      from an outage takes back its hints first; 30 s at most per member).
  repl_check.py CLUSTER_DIR SLICE keys-on NODE N PREFIX
      N keys PREFIX<i> that have node directory NODE among their homes.
  repl_check.py CLUSTER_DIR SLICE at-home HISTORY SECONDS [--hinted-away-ok]
      for every key written in a history_rw.py HISTORY, `shelf stat KEY
      --json` until, within SECONDS: each of the key's R homes answers it
      holds it (state home), its tombstone (deleted) or nothing (missing),
      no other member holds a copy or a tombstone (every hint handed over,
      its copy dropped), and, for a key every write of which was
      acknowledged, all homes are in one state at one version. Prints how long that took; exit 1 with what is left if not.
      --hinted-away-ok: copies and tombstones elsewhere are allowed (a hint
      for a member that is `out` keeps its copy on the substitute, for the
      member's return, until tombstone_gc_after); the homes are checked as
      without it.
"""
import hashlib
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shelf_client import Client, ShelfError, crc32c, place, PUT, GET, STAT, DELETE

WRITERS = 4


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


def raw(cn, typ, meta, payload=b""):
    """One request; (status, meta, payload) whatever the status."""
    full = {"slice": cn.slice, "epoch": cn.client.epoch(cn.slice)}
    full.update(meta)
    rid = cn.send_request(typ, full, payload)
    m, p = cn.read_response(typ, rid)
    return m["status"], m, p


def ver_of(m):
    v = m.get("ver")
    return tuple(v) if isinstance(v, list) and len(v) == 2 else None


def read_member(c, sl, mb, key):
    """(what, version): what is a sha256 hex, 'absent', 'tomb', 'down' or
    'error: ...'; version a (hlc, node) tuple or None."""
    try:
        with c.connect(sl, mb, timeout=5.0) as cn:
            st, sm, _ = raw(cn, STAT, {"key": key})
            gs, gm, payload = raw(cn, GET, {"key": key})
    except (OSError, ShelfError) as e:
        return ("down" if isinstance(e, OSError) else f"error: {e}"), None
    if gs == 0:
        if st != 0 or ver_of(sm) != ver_of(gm):
            return f"error: STAT {st} {ver_of(sm)} but GET {ver_of(gm)}", None
        if gm.get("size") not in (None, len(payload)):
            return f"error: GET size {gm.get('size')}, {len(payload)} bytes came", None
        return hashlib.sha256(payload).hexdigest(), ver_of(gm)
    if gs == 6:  # not-found
        if st == 6 and sm.get("tomb"):
            return "tomb", ver_of(sm)
        return "absent", None
    if gs == 10:
        return "busy", None
    return f"error: GET status {gs}: {gm.get('message')}", None


def vshow(v):
    return "-" if v is None else f"{v[0] >> 16}.{v[0] & 0xffff}/{v[1]:016x}"


def the_map(c, sl):
    m = c.fetch_map(sl)
    return m, m["members"], m["replicas"]


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    cdir, sl, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    c = client()
    if mode == "wait-up":
        want = int(sys.argv[4])
        for _ in range(300):
            m = c.fetch_map(sl)
            if sum(1 for x in m["members"] if x["state"] == "up") >= want:
                return 0
            time.sleep(0.1)
        fail(f"slice {sl}: not {want} members up")
    m, members, r = the_map(c, sl)
    names = node_dirs(cdir)
    name = lambda mb: names.get(mb["id"], mb["id"].hex()[:8])
    if mode == "wait-serving":
        # a node that came back answers reads busy until it has taken back
        # its hints (up to its hint_sync_timeout): wait until none does
        for mb in members:
            if mb["state"] != "up":
                continue
            for _ in range(300):
                what, _v = read_member(c, sl, mb, b"wait-serving-probe")
                if what != "busy":
                    break
                time.sleep(0.1)
            else:
                # what the node said of its hint sync, for the failure's cause
                try:
                    with open(os.path.join(cdir, name(mb), "log"), errors="replace") as f:
                        said = [ln.rstrip() for ln in f if "hints" in ln or "broker" in ln]
                    print(f"{name(mb)}'s log, its last lines on hints and the broker:")
                    for ln in said[-15:]:
                        print("   ", ln[:300])
                except OSError as e:
                    print(f"no log of {name(mb)}: {e}")
                fail(f"{name(mb)} still answers busy after 30 s")
        return 0
    if mode == "homes":
        key = sys.argv[4].encode()
        if key.startswith(b"hex:"):
            key = bytes.fromhex(sys.argv[4][4:])
        print(" ".join(name(x) for x in place(members, key, r, True)))
        return 0
    if mode == "replicas":
        key = sys.argv[4].encode()
        want = sys.argv[5] if len(sys.argv) > 5 else None
        homes = place(members, key, r, True)
        holders, bad = 0, []
        for mb in members:
            what, v = read_member(c, sl, mb, key)
            print(f"{name(mb)} {'home' if mb in homes else 'other'} {what[:64]} {vshow(v)}")
            if want is None:
                continue
            if what == want:
                holders += 1
            elif what not in ("absent", "tomb", "down", "busy"):
                bad.append(f"{name(mb)}: {what}")
        if want is not None:
            print(f"holders {holders}")
            if bad:
                fail(f"members hold other bytes than {want[:16]}: {bad}")
        return 0
    if mode == "keys-on":
        node, n, prefix = sys.argv[4], int(sys.argv[5]), sys.argv[6]
        out, i = [], 0
        while len(out) < n and i < 100000:
            k = f"{prefix}{i}"
            if node in [name(x) for x in place(members, k.encode(), r, True)]:
                out.append(k)
            i += 1
        print(" ".join(out))
        return 0
    if mode == "at-home":
        return at_home(sys.argv[4], float(sys.argv[5]), r, sl,
                       len(sys.argv) > 6 and sys.argv[6] == "--hinted-away-ok")
    if mode == "converge":
        return converge(c, cdir, sl, m, members, r, name, int(sys.argv[4]), sys.argv[5],
                        sys.argv[7].encode() if len(sys.argv) > 7 and sys.argv[6] == "--key"
                        else b"cv/one")
    sys.exit(__doc__)


def at_home(hist, seconds, r, sl, hinted_away_ok=False):
    import json
    import subprocess
    import history_rw
    ops = history_rw.parse(hist)
    keys = sorted({o["key"] for o in ops if o["op"] in ("put", "rm")})
    clean = {k for k in keys if all(o["status"] == "ok" for o in ops
                                    if o["key"] == k and o["op"] in ("put", "rm"))}
    t0 = time.monotonic()
    left = list(keys)
    why = {}
    while left:
        still = []
        for k in left:
            p = subprocess.run(["shelf", "stat", k, "--json", "--slice", sl], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=60)
            try:
                st = json.loads(p.stdout)
            except ValueError:
                why[k] = f"stat rc {p.returncode}: {p.stderr.decode(errors='replace').strip()}"
                still.append(k)
                continue
            reps = st.get("replicas", [])
            homes = [x for x in reps if x["home"]]
            # --hinted-away-ok: copies away from the homes are allowed (a hint
            # for a member that is `out` keeps its copy until the member
            # returns or tombstone_gc_after passes)
            away = [x for x in reps if not x["home"] and x["state"] in ("home", "hinted", "deleted")
                    and not hinted_away_ok]
            bad = [f"{x['node']}: {x['state']}" for x in homes
                   if x["state"] not in ("home", "deleted", "missing")]
            vers = {x["state"] + " " + json.dumps(x["version"]) for x in homes}
            if len(homes) != r or bad or away or (k in clean and len(vers) != 1):
                why[k] = (f"{len(homes)} homes, {bad or ''} {['away ' + x['node'] + ': ' + x['state'] for x in away] or ''}"
                          f" versions {sorted(vers)}")
                still.append(k)
        left = still
        if left and time.monotonic() - t0 > seconds:
            for k in left[:20]:
                print(f"not at home: {k}: {why[k]}")
            fail(f"{len(left)} of {len(keys)} keys not at their homes after {seconds:.0f} s")
        if left:
            time.sleep(0.5)
    print(f"every replica of {len(keys)} keys at its home, no copy elsewhere"
          f"{' but copies kept for hints' if hinted_away_ok else ''} ({len(clean)} keys "
          f"written only by acknowledged writes: one version on every home), after "
          f"{time.monotonic() - t0:.1f} s", flush=True)
    return 0


def converge(c, cdir, sl, m, members, r, name, rounds, seed, key):
    if sum(1 for x in members if x["state"] == "up") != len(members):
        fail(f"slice {sl}: not every member is up")
    homes = place(members, key, r, True)
    others = [x for x in members if x not in homes]
    entries = (homes + others)[:WRITERS]
    print(f"slice {sl} (R={r}): key {key.decode()} on {' '.join(name(x) for x in homes)}; "
          f"writers through {' '.join(name(x) for x in entries)}", flush=True)
    rnd = random.Random(f"converge-{seed}-{sl}")
    start, done = threading.Barrier(WRITERS + 1), threading.Barrier(WRITERS + 1)
    plan = [None] * WRITERS   # per round: ('put', data, crc) | ('rm',)
    result = [None] * WRITERS  # (ok?, ver, sha|None, why)
    stop = []

    def writer(i):
        cl = client()
        cl.maps = dict(c.maps)
        cn = None
        while True:
            start.wait()
            if stop:
                return
            op = plan[i]
            try:
                if cn is None:
                    cn = cl.connect(sl, entries[i])
                if op[0] == "put":
                    st, rm, _ = raw(cn, PUT, {"key": key, "size": len(op[1]), "crc": op[2]}, op[1])
                    sha = hashlib.sha256(op[1]).hexdigest()
                else:
                    st, rm, _ = raw(cn, DELETE, {"key": key})
                    sha = None
                if st == 0:
                    result[i] = (True, ver_of(rm), sha, rm)
                else:
                    result[i] = (False, None, sha, f"status {st}: {rm.get('message')}")
            except (OSError, ShelfError) as e:
                result[i] = (False, None, None, str(e))
                if cn:
                    cn.close()
                cn = None
            done.wait()

    ts = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(WRITERS)]
    for t in ts:
        t.start()
    n_del = 0
    for rd in range(rounds):
        deleter = rnd.randrange(WRITERS) if rnd.random() < 0.25 else -1
        big = rnd.random() < 0.3
        for i in range(WRITERS):
            if i == deleter:
                plan[i] = ("rm",)
                continue
            size = rnd.randint(256 << 10, 2 << 20) if big else rnd.choice([0, 1, 100, 4096, 70000])
            tag = f"{seed}:{rd}:{i}:".encode()
            data = (tag + rnd.randbytes(max(0, size - len(tag))))[:size] if size else b""
            plan[i] = ("put", data, crc32c(data))
        n_del += deleter >= 0
        start.wait()
        done.wait()
        bad = [f"writer {i} through {name(entries[i])}: {result[i][3]}"
               for i in range(WRITERS) if not result[i][0]]
        if bad:
            fail(f"round {rd}: writes failed with every node up: {bad}")
        for i in range(WRITERS):
            meta = result[i][3]
            held = meta.get("held") or []
            if sorted(held) != sorted(x["id"] for x in homes) or meta.get("homes") != r:
                fail(f"round {rd}: writer {i}: held {[h.hex()[:8] for h in held]} "
                     f"homes {meta.get('homes')}, not the {r} homes")
            if result[i][1] is None:
                fail(f"round {rd}: writer {i}: the answer names no version")
        vers = [result[i][1] for i in range(WRITERS)]
        if len(set(vers)) != WRITERS:
            fail(f"round {rd}: two writes acknowledged with the same version: {vers}")
        newest = max(range(WRITERS), key=lambda i: result[i][1])
        want = result[newest][2] or "tomb"
        wver = result[newest][1]
        seen = []
        for mb in members:
            what, v = read_member(c, sl, mb, key)
            if mb in homes:
                seen.append(f"{name(mb)}={what[:12]}@{vshow(v)}")
                if what != want or v != wver:
                    fail(f"round {rd}: home {name(mb)} holds {what[:16]} at {vshow(v)}, not the "
                         f"newest acknowledged write ({want[:16]} at {vshow(wver)}; writers: "
                         f"{[(plan[i][0], vshow(result[i][1])) for i in range(WRITERS)]}); "
                         f"homes: {seen}")
            elif what not in ("absent",):
                fail(f"round {rd}: {name(mb)}, no home, holds {what[:16]} at {vshow(v)}")
    stop.append(1)
    start.wait()
    print(f"slice {sl}: {rounds} rounds of {WRITERS} concurrent writes to one key ({n_del} with a "
          f"delete): after each, every home held the newest acknowledged version and its bytes, "
          f"no other member a copy", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
