"""ShardDataset (tools/python/shelf/dataset.py) without a cluster: an
in-memory client stands in for shelf.Client.

    pkg_dataset_test.py notorch   torch made unimportable; DataLoader
                                  workers simulated (get_worker_info replaced)
    pkg_dataset_test.py torch     the real torch.utils.data.DataLoader,
                                  num_workers=3, for each of 2 ranks

Checks: over 2 ranks x 3 workers every shard is read exactly once per
epoch; the same (seed, epoch) gives the same order (also in another
process with another hash seed); another epoch gives another order;
samples=True reads WebDataset-layout tars; bad tars raise BadShard naming
the shard.
"""
import collections
import io
import os
import subprocess
import sys
import tarfile

MODE = sys.argv[1]
if MODE == "notorch":
    sys.modules["torch"] = None  # `import torch` raises ImportError
sys.path.insert(0, os.environ["SHELF_PY"])
import shelf  # noqa: E402
import shelf.dataset as sd  # noqa: E402

N_SHARDS = 23  # not a multiple of 6: parts of unequal size
RANKS, WORKERS = 2, 3


class MemClient:
    """The calls ShardDataset makes, over a dict."""

    def __init__(self, objs):
        self.objs = objs

    def list(self, prefix=""):
        return iter(sorted(k for k in self.objs if k.startswith(prefix)))

    def get(self, key):
        if key not in self.objs:
            raise shelf.NotFound(2, "'%s': not found" % key)
        return self.objs[key]

    def open(self, key, buffer_size=0):
        return io.BytesIO(self.get(key))


def make_tar(samples):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w") as t:
        for name, data in samples:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return b.getvalue()


def shard_bytes(i):
    return ("shard %d " % i).encode() * (i + 1)


objs = {"ds/s%03d" % i: shard_bytes(i) for i in range(N_SHARDS)}
objs["other/x"] = b"not under the prefix"
client = MemClient(objs)
want = sorted(k for k in objs if k.startswith("ds/"))


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def read_all_simulated(epoch, seed=7):
    """{(rank, worker): [keys in the order yielded]} with get_worker_info
    replaced, as each DataLoader worker would see it."""
    out = {}
    saved = sd.get_worker_info
    try:
        for r in range(RANKS):
            ds = shelf.ShardDataset(client, "ds/", shuffle_seed=seed, epoch=epoch, rank=r,
                                    world_size=RANKS)
            for w in range(WORKERS):
                sd.get_worker_info = lambda w=w: (w, WORKERS)
                got = list(ds)
                for k, v in got:
                    if v != objs[k]:
                        fail("rank %d worker %d: wrong bytes for %s" % (r, w, k))
                out[(r, w)] = [k for k, _ in got]
    finally:
        sd.get_worker_info = saved
    return out


def check_once(parts, what):
    c = collections.Counter(k for ks in parts.values() for k in ks)
    if sorted(c) != want or set(c.values()) != {1}:
        fail("%s: not every shard exactly once: %s" % (what, dict(c)))
    sizes = sorted(len(v) for v in parts.values())
    if sizes[-1] - sizes[0] > 1:
        fail("%s: uneven split %s" % (what, sizes))


def flat(parts):
    return [k for key in sorted(parts) for k in parts[key]]


# ---- order and split, simulated workers ------------------------------------
e0 = read_all_simulated(0)
check_once(e0, "epoch 0")
if read_all_simulated(0) != e0:
    fail("the same seed and epoch gave another order")
e1 = read_all_simulated(1)
check_once(e1, "epoch 1")
if flat(e1) == flat(e0):
    fail("epoch 1 has epoch 0's order")
if flat(read_all_simulated(0, seed=8)) == flat(e0):
    fail("seed 8 has seed 7's order")
print("ok: %d shards over %d ranks x %d workers, each exactly once; epoch 1 and seed 8 reorder"
      % (N_SHARDS, RANKS, WORKERS))

# the order does not depend on the process or its hash seed
code = ("import sys; sys.path.insert(0, %r); from shelf.dataset import shard_order; "
        "print(shard_order(['ds/s%%03d' %% i for i in range(%d)], 7, 0))" % (os.environ["SHELF_PY"], N_SHARDS))
orders = set()
for hs in ("1", "2"):
    env = dict(os.environ, PYTHONHASHSEED=hs)
    orders.add(subprocess.run([sys.executable, "-c", code], env=env, check=True,
                              capture_output=True, text=True).stdout)
if len(orders) != 1 or orders.pop().strip() != str(sd.shard_order(want, 7, 0)):
    fail("shard_order differs between processes")
print("ok: the same order in other processes (PYTHONHASHSEED 1 and 2)")

# bad arguments
for kw in ({"rank": 2, "world_size": 2}, {"rank": -1}, {"world_size": 0}):
    try:
        shelf.ShardDataset(client, "ds/", **kw)
        fail("accepted %s" % kw)
    except ValueError:
        pass

# ---- samples=True: WebDataset tars -----------------------------------------
tars = {}
expect = {}
for s in range(4):
    members = []
    for j in range(5):
        name = "shard%d/sample%02d" % (s, j)
        cls = ("%d" % (s * 10 + j)).encode()
        img = os.urandom(100 + 37 * j)
        members += [(name + ".cls", cls), (name + ".img.bin", img)]
        expect[name] = {"cls": cls, "img.bin": img}
    tars["tar/%d.tar" % s] = make_tar(members)
tclient = MemClient(tars)
got = {}
saved = sd.get_worker_info
try:
    for r in range(RANKS):
        ds = shelf.ShardDataset(tclient, "tar/", rank=r, world_size=RANKS, samples=True)
        for w in range(WORKERS):
            sd.get_worker_info = lambda w=w: (w, WORKERS)
            for k, v in ds:
                if k in got:
                    fail("sample %s twice" % k)
                got[k] = v
finally:
    sd.get_worker_info = saved
if got != expect:
    fail("samples differ: %d got, %d expected" % (len(got), len(expect)))
print("ok: samples=True: %d samples of 4 tar shards, each once, bytes equal" % len(got))

good = tars["tar/0.tar"]
bad = {
    "bad/garbage": os.urandom(4096),
    "bad/truncated": good[:len(good) // 2 + 100],
    "bad/twice": make_tar([("a.cls", b"1"), ("a.cls", b"2")]),
    # cut right after a member: no end-of-archive block
    "bad/cut": make_tar([("a.cls", b"1" * 512), ("b.cls", b"2")])[:1024],
    "bad/empty": b"",
}
for k, v in bad.items():
    ds = shelf.ShardDataset(MemClient({k: v}), "bad/", samples=True)
    try:
        list(ds)
        fail("%s: no error" % k)
    except shelf.BadShard as e:
        if "'%s'" % k not in str(e) or e.errno != 74:
            fail("%s: error does not name the shard: %s" % (k, e))
        print("ok: %s: %s" % (k, e))

# ---- the real DataLoader ---------------------------------------------------
if MODE == "torch":
    import torch
    import torch.utils.data as tud
    ds = shelf.ShardDataset(client, "ds/", shuffle_seed=3)
    if not isinstance(ds, tud.IterableDataset):
        fail("not an IterableDataset with torch installed")
    for epoch in (0, 1):
        parts = {}
        for r in range(RANKS):
            ds = shelf.ShardDataset(client, "ds/", shuffle_seed=3, rank=r, world_size=RANKS)
            ds.set_epoch(epoch)
            dl = tud.DataLoader(ds, batch_size=None, num_workers=WORKERS)
            keys = []
            for k, v in dl:
                if bytes(v) != objs[k]:
                    fail("DataLoader: wrong bytes for %s" % k)
                keys.append(k)
            parts[r] = keys
        check_once(parts, "DataLoader epoch %d" % epoch)
        # each worker's part, in the DataLoader's round-robin over workers
        ws = [ds.shards(w, WORKERS) for w in range(WORKERS)]
        if sorted(parts[RANKS - 1]) != sorted(k for p in ws for k in p):
            fail("DataLoader rank %d read other shards than its workers' parts" % (RANKS - 1))
        print("ok: DataLoader(num_workers=%d) epoch %d, %d ranks: every shard exactly once"
              % (WORKERS, epoch, RANKS))
    print("ok: torch %s" % torch.__version__)
else:
    if "torch" in sys.modules and sys.modules["torch"] is not None:
        fail("torch was imported")
    if sd._tud is not None or shelf.ShardDataset.__mro__[1] is not object:
        fail("ShardDataset is not a plain iterable without torch")
    print("ok: works without torch (a plain iterable)")
print("all checks passed (%s)" % MODE)
