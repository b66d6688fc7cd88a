"""Node-side chunk GC of large objects (issue 15), for large_gc.sh, run
inside the cluster's backplane (SHELF_CLIENT, SHELF_BROKER). Chunks,
intents and manifests are written with raw PUTs, built byte for byte as
docs/FORMAT.md (and /work/large_design.md sections 1, 2, 4) say; the nodes
run with chunk_gc_after=6s and chunk_gc_interval=1s.

  large_gc.py CLUSTER_DIR main SLICE_R2 SLICE_R1
      on SLICE_R2 (R=2):
      (a) an intent whose key holds a manifest with its id: after the delay
          the intent is gone and every chunk stays;
      (b) an intent whose key is missing (a killed PUT): chunks and intent
          are still there 2 s after they were written, and gone (every
          chunk a tombstone on both homes) after the delay;
      (c) an overwrite: intent(O) for the old id, intent(N) for the new, the
          key holding N's manifest: O's chunks go, N's stay, both intents go;
      (d) intents whose values do not parse (wrong magic, short, a key of
          1025 bytes): deleted, and gc_intents_bad counts them;
      (g) a damaged manifest of the intent's id at the key: nothing is
          deleted, gc_errors counts it;
      and (b) again on SLICE_R1 (R=1, the plain path).
      Prints the ids of (b) to a file for the anti-entropy check.
  large_gc.py CLUSTER_DIR gone SLICE IDFILE
      every chunk of each id in IDFILE (count 3) is not-found on every
      member (no copy came back), a tombstone on both homes.
  large_gc.py CLUSTER_DIR e-setup SLICE STATEFILE
      (e): a key K, and an intent with chunks whose K is missing, such that
      the intent's first home and the chunks' homes avoid K's two homes...
      where possible; prints the node directories of K's homes (to kill).
  large_gc.py CLUSTER_DIR e-check SLICE STATEFILE
      (K's homes killed) after 4 s + 4 intervals the intent is still held by
      its first home and no chunk held by a live member was deleted; the
      node's gc_intents_deferred grew.
  large_gc.py CLUSTER_DIR auth SLICE OTHER
      a node's certificate (not a client's) on SLICE, where it is a member:
      a plain DELETE and a LIST of fe x8 keys are served, a DELETE or LIST
      of any other key is refused (wrong-slice); on OTHER, a slice it is no
      member of, a DELETE of an fe x8 key is refused (auth-failed) and the
      key stays.
  large_gc.py CLUSTER_DIR e-after SLICE STATEFILE
      (K's homes back) the intent and its chunks are collected.
Exit 1 on the first failure.
"""
import json
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shelf_client import Client, ShelfError, crc32c, place, PUT, GET, STAT, DELETE, LIST, NODE_STAT

GC_AFTER = 6.0
PREFIX = b"\xfe" * 8
MAGIC = b"\x89shelf-manifest\n"
CHUNK_SIZE = 1 << 20


def fail(why):
    print("FAIL:", why, flush=True)
    sys.exit(1)


cdir = sys.argv[1]
c = Client.from_dir(os.environ["SHELF_CLIENT"], os.environ["SHELF_BROKER"])


def req(sl, mb, typ, meta, payload=b""):
    """(meta, payload) of one request to member mb; a stale map is fetched again."""
    for _ in range(40):
        try:
            with c.connect(sl, mb, timeout=10.0) as cn:
                full = {"slice": sl, "epoch": c.epoch(sl)}
                full.update(meta)
                rid = cn.send_request(typ, full, payload)
                m, p = cn.read_response(typ, rid)
        except ShelfError as e:
            if e.status != 4:
                raise
            m = {"status": 4}
        except OSError:  # a node slow to answer on a loaded machine: again
            time.sleep(0.5)
            continue
        if m["status"] == 4:
            c.fetch_map(sl)
            time.sleep(0.05)
            continue
        if m["status"] == 10:  # busy (taking its hints back): again
            time.sleep(0.1)
            continue
        return m, p
    fail("the map stays stale, or the node busy")


def members(sl, up_only=True):
    m = c.fetch_map(sl)
    return [mb for mb in m["members"] if mb["state"] != "out" and (not up_only or mb["state"] == "up")]


def homes(sl, key):
    m = c.fetch_map(sl)
    return place(m["members"], key, m.get("replicas", 1) or 1, True)


def put(sl, key, data):
    """A client's PUT to the key's first home (it replicates)."""
    for _ in range(40):
        try:
            return c.put(key, data, sl)
        except ShelfError as e:
            if e.status not in (4, 10):
                raise
            c.fetch_map(sl)
            time.sleep(0.1)
        except OSError:  # a node slow to answer on a loaded machine: again
            time.sleep(0.5)
    fail(f"put {key!r}: busy")


def new_id(tag):
    ms = int(time.time() * 1000)
    return struct.pack(">Q", ms) + os.urandom(7) + bytes([tag])


def chunk_key(i, n):
    return PREFIX + b"C" + i + struct.pack(">I", n)


def intent_key(i):
    return PREFIX + b"G" + i


def intent_value(key, count, ms=None):
    ms = int(time.time() * 1000) if ms is None else ms
    return b"SGI1" + struct.pack("<IQ", count, ms) + key


def manifest(i, size, crc, chunk_crcs, chunk_size=CHUNK_SIZE):
    n = (size + chunk_size - 1) // chunk_size
    assert n == len(chunk_crcs)
    b = MAGIC + struct.pack("<IIQQII", 1, 0, size, chunk_size, n, crc) + i
    for k in range(n):
        off = k * chunk_size
        b += struct.pack("<QII", off, min(chunk_size, size - off), chunk_crcs[k])
    return b + struct.pack("<I", crc32c(b))


def large(sl, key, size, tag, with_manifest=True, count=None, i=None):
    """Write a large object as libshelf does: intent, chunks, manifest."""
    i = new_id(tag) if i is None else i
    n = (size + CHUNK_SIZE - 1) // CHUNK_SIZE
    put(sl, intent_key(i), intent_value(key, n if count is None else count))
    whole, crcs = b"", []
    for k in range(n):
        d = bytes([(tag + k) & 0xff]) * min(CHUNK_SIZE, size - k * CHUNK_SIZE)
        put(sl, chunk_key(i, k), d)
        crcs.append(crc32c(d))
        whole += d
    if with_manifest:
        put(sl, key, manifest(i, size, crc32c(whole), crcs))
    return i, n


def state(sl, key):
    """Per home of key: 'obj', 'tomb' or 'none' (STAT on each)."""
    out = []
    for mb in homes(sl, key):
        m, _ = req(sl, mb, STAT, {"key": key})
        if m["status"] == 0:
            out.append("obj")
        elif m["status"] == 6:
            out.append("tomb" if m.get("tomb") else "none")
        else:
            fail(f"STAT {key!r}: status {m['status']}: {m.get('message')}")
    return out


def held(sl, key):
    return "obj" in state(sl, key)


def all_held(sl, keys):
    return all(held(sl, k) for k in keys)


def none_held(sl, keys):
    return not any(held(sl, k) for k in keys)


def counters(sl, names_):
    sums = {n: 0 for n in names_}
    for mb in members(sl):
        m, _ = req(sl, mb, NODE_STAT, {})
        cs = m.get("counters") or {}
        for n in names_:
            if n not in cs:
                fail(f"NODE_STAT has no {n}")
            sums[n] += cs[n]
    return sums


def wait_until(what, fn, seconds):
    t = time.monotonic()
    while time.monotonic() - t < seconds:
        if fn():
            return time.monotonic() - t
        time.sleep(0.25)
    fail(f"{what}: not within {seconds} s")


def chunks(i, n):
    return [chunk_key(i, k) for k in range(n)]


def main(sl2, sl1):
    GC = ["gc_intents_checked", "gc_intents_live", "gc_intents_collected", "gc_chunks_deleted",
          "gc_intents_bad", "gc_errors", "gc_intents_deferred"]
    c0 = counters(sl2, GC)
    t0 = time.monotonic()
    # (b) a killed PUT: chunks and intent, no manifest; still there 2 s later
    kb = b"lg/b"
    tb = time.monotonic()
    ib, nb_ = large(sl2, kb, (5 << 20) // 2, 0x20, with_manifest=False)
    kp = b"lg/p"
    ip, np_ = large(sl1, kp, (5 << 20) // 2, 0x70, with_manifest=False)
    time.sleep(max(0.0, 2.0 - (time.monotonic() - tb)))
    if time.monotonic() - tb < GC_AFTER - 1.0:
        for k in chunks(ib, nb_) + [intent_key(ib)]:
            if not held(sl2, k):
                fail(f"(b) {k.hex()} gone {time.monotonic() - tb:.1f} s after it was written")
        for k in chunks(ip, np_) + [intent_key(ip)]:
            if not held(sl1, k):
                fail(f"(b, R=1) {k.hex()} gone {time.monotonic() - tb:.1f} s after it was written")
        print(f"(b) nothing collected {time.monotonic() - tb:.1f} s after the writes", flush=True)
    else:
        print(f"(b) the writes took {time.monotonic() - tb:.1f} s: the not-before check is skipped",
              flush=True)
    # (a) live
    ka = b"lg/a"
    ia, na = large(sl2, ka, (5 << 20) // 2, 0x10)
    # (c) an overwrite: O then N over the same key
    kc = b"lg/c"
    io, no = large(sl2, kc, 2 << 20, 0x30)
    put(sl2, intent_key(io), intent_value(kc, no))  # step 1 of the overwrite: intent(O)
    inn, nn = large(sl2, kc, (3 << 20) + 17, 0x40)
    # (d) intents that do not parse
    bad = [intent_key(new_id(0x50)), intent_key(new_id(0x51)), intent_key(new_id(0x52))]
    put(sl2, bad[0], b"XGI1" + struct.pack("<IQ", 1, int(time.time() * 1000)) + b"lg/x")
    put(sl2, bad[1], b"SGI1\x01\x00")
    put(sl2, bad[2], intent_value(b"k" * 1025, 1))
    # (g) a damaged manifest of the intent's id: the chunks must stay
    kg = b"lg/g"
    ig, ng = large(sl2, kg, (5 << 20) // 2, 0x60, with_manifest=False)
    dm = bytearray(manifest(ig, (5 << 20) // 2, 0, [0] * ng))
    dm[20] = 1  # flags 1: refused
    put(sl2, kg, bytes(dm))
    print(f"written in {time.monotonic() - t0:.1f} s", flush=True)

    s = wait_until("(b) chunks and intent collected",
                   lambda: none_held(sl2, chunks(ib, nb_) + [intent_key(ib)]), 60)
    print(f"(b) collected {s:.1f} s later", flush=True)
    for k in chunks(ib, nb_):
        st = state(sl2, k)
        if st != ["tomb", "tomb"]:
            fail(f"(b) chunk {k.hex()} on its homes: {st}, not a tombstone on both")
    wait_until("(b, R=1) chunks and intent collected",
               lambda: none_held(sl1, chunks(ip, np_) + [intent_key(ip)]), 60)
    print("(b, R=1) collected", flush=True)
    wait_until("(a) intent gone", lambda: not held(sl2, intent_key(ia)), 60)
    if not all_held(sl2, chunks(ia, na)) or not held(sl2, ka):
        fail("(a) a live object's chunks or manifest were deleted")
    print("(a) the intent went, the chunks stay", flush=True)
    wait_until("(c) the old chunks collected", lambda: none_held(sl2, chunks(io, no)), 60)
    wait_until("(c) both intents gone",
               lambda: not held(sl2, intent_key(io)) and not held(sl2, intent_key(inn)), 60)
    if not all_held(sl2, chunks(inn, nn)):
        fail("(c) the new object's chunks were deleted")
    got = c.get(kc, sl2)
    if got[:16] != MAGIC or got[48:64] != inn:
        fail("(c) the key no longer holds the new manifest")
    print("(c) the old chunks went, the new stay", flush=True)
    wait_until("(d) unparsable intents deleted", lambda: none_held(sl2, bad), 60)
    print("(d) unparsable intents deleted", flush=True)
    # (g): by now every other intent was settled; the damaged one is not
    time.sleep(2)
    if not all_held(sl2, chunks(ig, ng)) or not held(sl2, intent_key(ig)):
        fail("(g) chunks or intent of a damaged manifest of the same id were deleted")
    print("(g) a damaged manifest of the intent's id keeps its chunks and intent", flush=True)
    c1 = counters(sl2, GC)
    d = {k: c1[k] - c0[k] for k in GC}
    print("counters:", json.dumps(d), flush=True)
    if d["gc_intents_bad"] < 3:
        fail(f"gc_intents_bad {d['gc_intents_bad']}, not 3")
    if d["gc_intents_live"] < 2:   # (a) and N of (c)
        fail(f"gc_intents_live {d['gc_intents_live']}, not 2")
    if d["gc_intents_collected"] < 2:   # (b) and O of (c)
        fail(f"gc_intents_collected {d['gc_intents_collected']}, not 2")
    if d["gc_chunks_deleted"] < nb_ + no:
        fail(f"gc_chunks_deleted {d['gc_chunks_deleted']}, fewer than {nb_ + no}")
    if d["gc_errors"] < 1:
        fail("gc_errors did not count the damaged manifest")
    with open(os.path.join(cdir, "gc_ids.json"), "w") as f:
        json.dump([ib.hex(), io.hex()], f)
    # the slice's anti-entropy then runs (large_gc.sh), and `gone` checks


def gone(sl, idfile):
    ids = [bytes.fromhex(x) for x in json.load(open(idfile))]
    for i in ids:
        for k in chunks(i, 2):
            st = state(sl, k)
            if "obj" in st:
                fail(f"chunk {k.hex()} came back after anti-entropy: {st}")
        for mb in members(sl):
            m, p = req(sl, mb, LIST, {"prefix": PREFIX + b"C" + i})
            if m["status"] != 0 or p not in (b"", b"\x90"):
                fail(f"a member lists chunks of {i.hex()} after anti-entropy: status {m['status']}")
    print("no deleted chunk came back after anti-entropy", flush=True)


def e_setup(sl, sf):
    m = c.fetch_map(sl)
    names = {}
    for n in sorted(os.listdir(cdir)):
        log = os.path.join(cdir, n, "log")
        if n.startswith("n") and os.path.exists(log):
            txt = open(log, errors="replace").read()
            for mb in m["members"]:
                if ("identity " + mb["id"].hex()) in txt:
                    names[mb["id"]] = n
    for t in range(1000):
        k = f"lg/e{t}".encode()
        kh = {mb["id"] for mb in homes(sl, k)}
        i = new_id(0x80)
        ih = homes(sl, intent_key(i))
        if ih[0]["id"] in kh:
            continue
        i, n = large(sl, k, 2 << 20, 0x80, with_manifest=False, i=i)
        json.dump({"key": k.hex(), "id": i.hex(), "n": n,
                   "owner": names[homes(sl, intent_key(i))[0]["id"]]}, open(sf, "w"))
        print(" ".join(names[x] for x in kh))
        return
    fail("no key found whose homes avoid the intent's first home")


def e_check(sl, sf):
    s = json.load(open(sf))
    i = bytes.fromhex(s["id"])
    time.sleep(GC_AFTER + 4)
    up = {mb["id"] for mb in members(sl)}
    owner = homes(sl, intent_key(i))[0]
    if owner["id"] not in up:
        fail("the intent's first home is down")
    m, _ = req(sl, owner, STAT, {"key": intent_key(i)})
    if m["status"] != 0:
        fail(f"(e) the intent was deleted while its object's homes were down: {m.get('message')}")
    for k in chunks(i, s["n"]):
        for mb in homes(sl, k):
            if mb["id"] not in up:
                continue
            m, _ = req(sl, mb, STAT, {"key": k})
            if m["status"] != 0:
                fail(f"(e) chunk {k.hex()} deleted while its object's homes were down")
    m, _ = req(sl, owner, NODE_STAT, {})
    if not (m.get("counters") or {}).get("gc_intents_deferred"):
        fail("(e) gc_intents_deferred is 0 on the intent's node")
    print("(e) nothing deleted while the object's homes were down", flush=True)


def e_after(sl, sf):
    s = json.load(open(sf))
    i = bytes.fromhex(s["id"])
    wait_until("(e) collected once the homes are back",
               lambda: none_held(sl, chunks(i, s["n"]) + [intent_key(i)]), 60)
    print("(e) collected once the object's homes were back", flush=True)


def as_node(mb):
    """A client that presents member mb's node identity and certificate."""
    from shelf_client import load_key_file
    for n in sorted(os.listdir(cdir)):
        log = os.path.join(cdir, n, "log")
        if n.startswith("n") and os.path.exists(log) and \
                ("identity " + mb["id"].hex()) in open(log, errors="replace").read():
            nc = Client.from_dir(os.environ["SHELF_CLIENT"], os.environ["SHELF_BROKER"])
            nc.ident = load_key_file(os.path.join(cdir, n, "id.key"))
            nc.cert_raw = open(os.path.join(cdir, n, "cert"), "rb").read()
            nc.maps = c.maps
            return nc
    fail(f"no node directory for {mb['id'].hex()[:8]}")


def node_req(nc, sl, target, typ, meta):
    def no_slice(hm):
        hm.pop("slice", None)  # a node's certificate lists no slices: HELLO names none
        return hm
    with nc.connect(sl, target, hello_meta=no_slice) as cn:
        full = {"slice": sl, "epoch": c.epoch(sl)}
        full.update(meta)
        rid = cn.send_request(typ, full)
        m, p = cn.read_response(typ, rid)
    return m["status"], m.get("message"), p


def auth(sl, other):
    ms = members(sl)
    om = c.fetch_map(other)
    oids = {mb["id"] for mb in om["members"]}
    outsider = next((mb for mb in ms if mb["id"] not in oids), None)
    if outsider is None:
        fail(f"every member of {sl} is a member of {other}")
    nc = as_node(outsider)
    # on its own slice: fe x8 keys only
    k = chunk_key(new_id(0x90), 0)
    put(sl, k, b"x" * 100)
    h = homes(sl, k)[0]
    st, msg, _ = node_req(nc, sl, h, DELETE, {"key": k})
    if st != 0:
        fail(f"a member's node certificate may not DELETE an fe x8 key: {st} {msg}")
    if held(sl, k):
        fail("the DELETE of a member's node certificate left the key")
    st, msg, _ = node_req(nc, sl, h, LIST, {"prefix": PREFIX + b"C"})
    if st != 0:
        fail(f"a member's node certificate may not LIST fe x8 keys: {st} {msg}")
    put(sl, b"lg/plain", b"y" * 10)
    h = homes(sl, b"lg/plain")[0]
    st, msg, _ = node_req(nc, sl, h, DELETE, {"key": b"lg/plain"})
    if st == 0 or not held(sl, b"lg/plain"):
        fail("a node certificate deleted a client's key")
    st, msg, _ = node_req(nc, sl, h, LIST, {"prefix": b"lg/"})
    if st == 0:
        fail("a node certificate listed a client's keys")
    # on a slice it is no member of
    k = chunk_key(new_id(0x91), 0)
    put(other, k, b"z" * 10)
    h = homes(other, k)[0]
    st, msg, _ = node_req(nc, other, h, DELETE, {"key": k})
    if st != 2 or not held(other, k):
        fail(f"a non-member's node certificate: DELETE answered {st} ({msg}), not auth-failed")
    print(f"node certificates: fe x8 keys only, members only ({msg})", flush=True)


mode = sys.argv[2]
if mode == "main":
    main(sys.argv[3], sys.argv[4])
elif mode == "gone":
    gone(sys.argv[3], sys.argv[4])
elif mode == "e-setup":
    e_setup(sys.argv[3], sys.argv[4])
elif mode == "e-check":
    e_check(sys.argv[3], sys.argv[4])
elif mode == "auth":
    auth(sys.argv[3], sys.argv[4])
elif mode == "e-after":
    e_after(sys.argv[3], sys.argv[4])
else:
    fail(f"unknown mode {mode}")
