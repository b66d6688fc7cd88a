"""The Python package's Client (tools/python/shelf) against a running cluster
($SHELF_CLIENT, $SHELF_BROKER, as `shelf-cluster exec` sets them).

    pkg_client_test.py main WORKDIR          every call, stage and its resume
    pkg_client_test.py stage-kill WORKDIR N  stage st/ into WORKDIR/dst, SIGKILL
                                             itself after N objects
    pkg_client_test.py readonly DIR          stage into a read-only DIR
    pkg_client_test.py nospace DIR           stage into a DIR too small
    pkg_client_test.py nospace-resume DIR    the same, once there is room
"""
import errno
import hashlib
import io
import os
import random
import signal
import sys
import tarfile

import shelf

MODE, W = sys.argv[1], sys.argv[2]
SEED = int(os.environ.get("SEED", random.randrange(1 << 30)))
rnd = random.Random(SEED)


def fail(msg):
    print("FAIL (SEED=%d): %s" % (SEED, msg))
    sys.exit(1)


def expect_err(cls, err, f, *a, **kw):
    try:
        f(*a, **kw)
    except cls as e:
        if e.errno != err:
            fail("%s%r: errno %d, not %d: %s" % (f.__name__, a, e.errno, err, e))
        return e
    fail("%s%r: no %s" % (f.__name__, a, cls.__name__))


def data_of(n, tag):
    return rnd.randbytes(n) if n < 4096 else hashlib.sha256(tag.encode()).digest() * (n // 32) + \
        rnd.randbytes(n % 32)


# stage's objects: st/ with a subdirectory, sizes 0 B .. 3 MiB
STAGE = {"st/%s" % n: data_of(sz, n) for n, sz in
         [("a.bin", 0), ("b.bin", 1), ("c.bin", 4095), ("d.bin", 100 << 10), ("e.bin", 3 << 20),
          ("sub/f.bin", 12345), ("sub/deeper/g.bin", 1 << 20)] +
         [("many/%02d" % i, 1000 + i) for i in range(20)]}


def tree(d):
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, d)] = fh.read()
    return out


def check_staged(d, what):
    got = tree(d)
    want = {k[len("st/"):]: v for k, v in STAGE.items()}
    if got != want:
        fail("%s: staged tree differs: extra %s, missing %s, differing %s" % (
            what, sorted(set(got) - set(want)), sorted(set(want) - set(got)),
            sorted(k for k in got if k in want and got[k] != want[k])))


c = shelf.Client(timeout_ms=20000)

if MODE == "main":
    print("SEED=%d" % SEED)
    # ---- put / get / stat / get_range --------------------------------------
    objs = {"py/empty": b"", "py/one": b"x", "py/100k": rnd.randbytes(100 << 10),
            "py/5m": rnd.randbytes((5 << 20) + 3)}
    for k, v in objs.items():
        c.put(k, v)
    c.put(b"py/from-bytearray", bytearray(b"abc"))
    c.put("py/from-memoryview", memoryview(b"0123456789")[2:7])
    objs["py/from-bytearray"], objs["py/from-memoryview"] = b"abc", b"23456"
    for k, v in objs.items():
        if c.get(k) != v:
            fail("get %s" % k)
        st = c.stat(k)
        if st.size != len(v) or st.crc != shelf.crc32c(v):
            fail("stat %s: %s (crc32c %08x)" % (k, st, shelf.crc32c(v)))
    big = objs["py/5m"]
    for off, n in [(0, 1), (1, 100), (4 << 20, 1 << 20), (len(big) - 5, 5), (len(big) - 5, 100),
                   (rnd.randrange(len(big)), rnd.randrange(1, 1 << 20))]:
        if c.get_range("py/5m", off, n) != big[off:off + n]:
            fail("get_range(%d, %d)" % (off, n))
    if c.get_range("py/5m", 123) != big[123:]:
        fail("get_range to the end")
    if c.get_range("py/5m", 7, 0) != b"":
        fail("get_range of 0 bytes")
    print("ok: put/get/stat of 0 B .. 5 MiB (str, bytes, bytearray, memoryview), get_range")

    # ---- errors ------------------------------------------------------------
    e = expect_err(shelf.NotFound, errno.ENOENT, c.get, "py/none")
    if "py/none" not in str(e) or not isinstance(e, FileNotFoundError):
        fail("NotFound does not name the key: %s" % e)
    expect_err(shelf.NotFound, errno.ENOENT, c.stat, "py/none")
    expect_err(shelf.Error, errno.EINVAL, c.get, "")
    expect_err(shelf.Error, errno.EINVAL, c.get, "k" * 1025)
    try:
        c.get(42)
        fail("a key of type int accepted")
    except TypeError:
        pass
    other = shelf.Client(timeout_ms=20000, slice="no-such-slice")
    e = expect_err(shelf.AccessDenied, errno.EACCES, other.get, "py/one")
    other.close()
    expect_err(shelf.Error, errno.EBADF, other.get, "py/one")
    print("ok: errors: NotFound naming the key, AccessDenied (%s), bad keys, a closed client" % e)

    # ---- list: paging past 1000, non-UTF-8 keys -----------------------------
    for i in range(1050):
        c.put("ls/%04d" % i, b"%d" % i)
    c.put(b"ls/\xff\xfe", b"raw")
    keys = list(c.list("ls/"))
    want = ["ls/%04d" % i for i in range(1050)] + [b"ls/\xff\xfe"]
    if keys != want:
        fail("list ls/: %d keys, first differences %s" % (len(keys),
             [(a, b) for a, b in zip(keys, want) if a != b][:3]))
    if list(c.list("ls/", after="ls/1047")) != ["ls/1048", "ls/1049", b"ls/\xff\xfe"]:
        fail("list after")
    if c.get(b"ls/\xff\xfe") != b"raw":
        fail("get of a non-UTF-8 key")
    if list(c.list("nothing-here/")) != []:
        fail("list of an empty prefix")
    print("ok: list of 1051 keys (pages of 1000), after=, a non-UTF-8 key as bytes")

    # ---- delete ------------------------------------------------------------
    c.delete("py/one")
    expect_err(shelf.NotFound, errno.ENOENT, c.get, "py/one")
    if "py/one" in list(c.list("py/")):
        fail("deleted key listed")
    print("ok: delete")

    # ---- open: seek and read by ranges -------------------------------------
    with c.open("py/5m", buffer_size=1 << 20) as f:
        if not (f.readable() and f.seekable()) or f.size != len(big):
            fail("open: readable/seekable/size")
        if f.read(10) != big[:10] or f.tell() != 10:
            fail("open: first read")
        for _ in range(200):
            off = rnd.randrange(len(big) + 10)
            n = rnd.choice([1, 7, 4096, (1 << 20) - 1, 1 << 20, 3 << 20])
            f.seek(off)
            if f.read(n) != big[off:off + n]:
                fail("open: read(%d) at %d" % (n, off))
        f.seek(-100, io.SEEK_END)
        if f.read() != big[-100:]:
            fail("open: SEEK_END")
        f.seek(0)
        if f.read() != big:
            fail("open: readall")
        if f.read(5) != b"" or f.seek(5, io.SEEK_CUR) != len(big) + 5:
            fail("open: at the end")
        b = bytearray(1000)
        f.seek(999)
        if f.readinto(b) != 1000 or bytes(b) != big[999:1999]:
            fail("open: readinto")
        try:
            f.seek(-1)
            fail("negative seek accepted")
        except OSError:
            pass
    expect_err(shelf.NotFound, errno.ENOENT, c.open, "py/none")
    # a tar read through open() (random access: tarfile seeks)
    tb = io.BytesIO()
    with tarfile.open(fileobj=tb, mode="w") as t:
        for i in range(5):
            ti = tarfile.TarInfo("m%d.bin" % i)
            blob = rnd.randbytes(300000 + i)
            ti.size = len(blob)
            t.addfile(ti, io.BytesIO(blob))
    c.put("py/t.tar", tb.getvalue())
    with c.open("py/t.tar", buffer_size=64 << 10) as f, tarfile.open(fileobj=f) as t:
        ref = tarfile.open(fileobj=io.BytesIO(tb.getvalue()))
        for m in ref.getmembers():
            if t.extractfile(m.name).read() != ref.extractfile(m).read():
                fail("tar member %s through open()" % m.name)
    # replaced while read: ESTALE, never a mix
    with c.open("py/100k", buffer_size=4096) as f:
        f.read(10)
        c.put("py/100k", b"shorter")
        f.seek(50000)
        expect_err(shelf.Error, errno.ESTALE, f.read, 10)
    print("ok: open(): 200 random seeks and reads, SEEK_END, readinto, tarfile, a replaced object (ESTALE)")

    # ---- get_batch ---------------------------------------------------------
    ks = ["ls/%04d" % i for i in rnd.sample(range(1050), 300)]
    missing = ["ls/missing-%d" % i for i in range(30)]
    req = ks + missing
    rnd.shuffle(req)
    res = list(c.get_batch(req))
    if [k for k, _ in res] != req:
        fail("get_batch: not in the requested order")
    for k, v in res:
        if k in missing:
            if not isinstance(v, shelf.NotFound) or k not in str(v):
                fail("get_batch: missing %s gave %r" % (k, v))
        elif v != b"%d" % int(k[3:]):
            fail("get_batch: %s gave %r" % (k, v))
    got = dict(c.get_batch(req, ordered=False))
    if set(got) != set(req):
        fail("get_batch(ordered=False): other keys")
    try:
        list(c.get_batch(ks[:3] + missing[:1], fail_missing=True))
        fail("get_batch(fail_missing=True) did not raise")
    except shelf.NotFound as e:
        if missing[0] not in str(e):
            fail("fail_missing: %s" % e)
    # through shelf_get_batch when the library has it (else the loop)
    if shelf._lib.get_batch_fn() is None:
        fail("libshelf.so has no shelf_get_batch: get_batch is the fallback loop")
    print("ok: get_batch of %d keys, %d missing named, in order; fail_missing raises" %
          (len(req), len(missing)))

    # ---- put_file (shelf_put_fd: streamed, any size) --------------------------
    for n in (0, 5000, 3 << 20):
        src = os.path.join(W, "pf-%d" % n)
        body = data_of(n, "pf%d" % n)
        with open(src, "wb") as fh:
            fh.write(body)
        c.put_file("pf/%d" % n, src)
        if c.get("pf/%d" % n) != body or c.stat("pf/%d" % n).size != n:
            fail("put_file of %d bytes: other bytes back" % n)
    expect_err(FileNotFoundError, errno.ENOENT, c.put_file, "pf/x", os.path.join(W, "no-such-file"))
    print("ok: put_file of 0 B, 5000 B, 3 MiB; a missing file is ENOENT")

    # ---- stage -------------------------------------------------------------
    for k, v in STAGE.items():
        c.put(k, v)
    dst = os.path.join(W, "dst")
    seen = []
    r = c.stage("st/", dst, progress=lambda d, t, b: seen.append((d, t)))
    if (r.objects, r.bytes, r.skipped) != (len(STAGE), sum(map(len, STAGE.values())), 0):
        fail("stage: %s" % (r,))
    if seen[-1] != (len(STAGE), len(STAGE)):
        fail("stage progress: %s" % seen[-3:])
    check_staged(dst, "stage")
    r = c.stage("st/", dst)
    if (r.objects, r.skipped) != (0, len(STAGE)):
        fail("stage again fetched: %s" % (r,))
    # a damaged local copy (same size) and a missing one are fetched again
    p = os.path.join(dst, "sub", "deeper", "g.bin")
    with open(p, "r+b") as fh:
        fh.seek(5000)
        x = fh.read(1)
        fh.seek(5000)
        fh.write(bytes([x[0] ^ 1]))
    os.unlink(os.path.join(dst, "many", "07"))
    r = c.stage("st/", dst)
    if (r.objects, r.skipped) != (2, len(STAGE) - 2):
        fail("stage after damage: %s" % (r,))
    check_staged(dst, "stage after damage")
    # a prefix that is not a folder: the part after its last '/' is kept
    r = c.stage("st/many/0", os.path.join(W, "part"))
    if sorted(os.listdir(os.path.join(W, "part"))) != ["%02d" % i for i in range(10)]:
        fail("stage of st/many/0: %s" % os.listdir(os.path.join(W, "part")))
    print("ok: stage of %d objects byte for byte; a rerun fetches nothing; a damaged and a "
          "missing file are fetched again; %s" % (len(STAGE), r))

    # keys that are not safe as paths are refused, the others staged
    for k in ["un/ok", "un/../escape", "un/a//b", "un/./dot", "un/trail/"]:
        c.put(k, b"v")
    try:
        c.stage("un/", os.path.join(W, "un"))
        fail("unsafe keys staged")
    except shelf.StageError as e:
        bad = sorted(k for k, _ in e.failed)
        if bad != sorted(["un/../escape", "un/a//b", "un/./dot", "un/trail/"]) or \
                e.result.objects != 1 or e.errno != errno.EINVAL:
            fail("unsafe keys: %s %s %s" % (bad, e.result, e))
        print("ok: unsafe keys refused: %s" % e)
    if os.path.exists(os.path.join(W, "escape")) or tree(os.path.join(W, "un")) != {"ok": b"v"}:
        fail("an unsafe key was written")
    expect_err(shelf.StageError, errno.ENOTDIR, c.stage, "st/", os.path.join(dst, "a.bin"))
    print("all checks passed")

elif MODE == "stage-kill":
    n = int(sys.argv[3])

    def prog(done, total, nbytes):
        if done == n:
            os.kill(os.getpid(), signal.SIGKILL)
    c.stage("st/", os.path.join(W, "dst"), progress=prog)
    fail("not killed")

elif MODE == "stage-resume":
    n = int(sys.argv[3])
    dst = os.path.join(W, "dst")
    r = c.stage("st/", dst)
    if r.skipped != n or r.objects != len(STAGE) - n:
        fail("resume after a kill at %d: %s" % (n, r))
    check_staged(dst, "resumed stage")
    if any(".shelf-part" in f for _, _, fs in os.walk(dst) for f in fs):
        fail("a partial file is left")
    print("ok: the stage killed after %d objects resumed: %s" % (n, r))

elif MODE == "readonly":
    e = expect_err(shelf.StageError, errno.EROFS, c.stage, "st/", W)
    if W not in str(e) or os.listdir(W):
        fail("read-only: %s, %s" % (e, os.listdir(W)))
    print("ok: a read-only directory: %s" % e)

elif MODE == "nospace":
    e = expect_err(shelf.StageError, errno.ENOSPC, c.stage, "st/", W)
    left = [f for _, _, fs in os.walk(W) for f in fs if ".shelf-part" in f]
    if left or "e.bin" not in str(e) or e.result.objects < 3:
        fail("no space: %s; partial files %s; %s" % (e, left, e.result))
    print("ok: no space: %s (%d objects staged before, partial file removed)" % (e, e.result.objects))

elif MODE == "nospace-resume":
    r = c.stage("st/", W)
    check_staged(W, "stage after no space")
    if r.skipped < 3:
        fail("no resume after no space: %s" % (r,))
    print("ok: staged once there is room: %s" % (r,))
else:
    fail("unknown mode %s" % MODE)
