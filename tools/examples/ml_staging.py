#!/usr/bin/python3
"""ML data staging with shelf: tar shards in, PyTorch's DataLoader out.

    make && sudo tools/shelf-cluster up --nodes 3
    sudo tools/shelf-cluster exec -- env PYTHONPATH=tools/python \\
        /usr/bin/python3 tools/examples/ml_staging.py

What it does, as a training job would:
  1. generates a dataset of tar shards in WebDataset's layout (each sample
     is NAME.cls, a label, and NAME.bin, its bytes) in a work directory;
  2. ingests the shards into the slice through the Python client
     (shelf.Client.put; `shelf put` of each file does the same);
  3. reads every sample back through shelf.ShardDataset(samples=True) with
     the real torch.utils.data.DataLoader(num_workers=3), for 2 epochs
     (set_epoch: another shard order each epoch), and checks that every
     sample comes exactly once per epoch with its bytes;
  4. with --stage DIR, copies the shards to a local directory with
     Client.stage (resumable, every checksum verified) and checks them;
  5. deletes the shards unless --keep.

Client directory and broker: --client/--broker, else $SHELF_CLIENT and
$SHELF_BROKER (shelf-cluster exec sets both). Needs Debian's python3-torch
(exit 77 without it). Exit 0: every check passed; 1: a check failed.
"""
import argparse
import hashlib
import io
import os
import random
import shutil
import sys
import tarfile
import tempfile
import time

try:
    import shelf
except ImportError:  # run from the source tree without PYTHONPATH
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    import shelf


def make_shards(workdir, shards, per_shard, max_bytes, seed):
    """Writes the tars; returns ({sample: {ext: sha256}}, total sample bytes)."""
    rnd = random.Random(seed)
    expect, total = {}, 0
    for s in range(shards):
        path = os.path.join(workdir, "train-%06d.tar" % s)
        with tarfile.open(path, "w") as t:
            for j in range(per_shard):
                name = "s%06d/%06d" % (s, j)
                parts = {"cls": b"%d" % rnd.randrange(1000),
                         "bin": rnd.randbytes(rnd.randrange(1, max_bytes + 1))}
                for ext, data in parts.items():
                    ti = tarfile.TarInfo("%s.%s" % (name, ext))
                    ti.size = len(data)
                    ti.mtime = 1700000000
                    t.addfile(ti, io.BytesIO(data))
                    total += len(data)
                expect[name] = {e: hashlib.sha256(d).hexdigest() for e, d in parts.items()}
    return expect, total


def digest_sample(item):
    """Runs in the DataLoader worker: only hashes go back to the parent."""
    key, parts = item
    return key, {e: hashlib.sha256(d).hexdigest() for e, d in parts.items()}, \
        sum(len(d) for d in parts.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--client", default=None, help="client directory (default $SHELF_CLIENT)")
    ap.add_argument("--broker", default=None, help="broker (default $SHELF_BROKER)")
    ap.add_argument("--slice", default="default")
    ap.add_argument("--prefix", default="examples/ml/train-", help="key prefix of the shards")
    ap.add_argument("--shards", type=int, default=12)
    ap.add_argument("--samples-per-shard", type=int, default=40)
    ap.add_argument("--max-sample-bytes", type=int, default=64 << 10)
    ap.add_argument("--workers", type=int, default=3, help="DataLoader workers")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", default=None, help="where the shards are generated (default: a temp dir)")
    ap.add_argument("--stage", default=None, metavar="DIR", help="also stage the shards into DIR")
    ap.add_argument("--keep", action="store_true", help="keep the shards in the slice")
    a = ap.parse_args()
    try:
        import torch.utils.data as tud
    except ImportError:
        print("ml_staging: needs torch (Debian: apt install python3-torch)", file=sys.stderr)
        return 77

    c = shelf.Client(a.client, broker=a.broker, slice=a.slice, timeout_ms=30000)
    workdir = a.workdir or tempfile.mkdtemp(prefix="shelf-ml-")
    os.makedirs(workdir, exist_ok=True)
    try:
        # 1. the dataset
        expect, total = make_shards(workdir, a.shards, a.samples_per_shard, a.max_sample_bytes, a.seed)
        files = sorted(f for f in os.listdir(workdir) if f.endswith(".tar"))
        print("generated %d shards, %d samples, %d sample bytes in %s"
              % (len(files), len(expect), total, workdir))

        # 2. ingest
        t0 = time.monotonic()
        nbytes = 0
        for f in files:
            with open(os.path.join(workdir, f), "rb") as fh:
                data = fh.read()
            c.put(a.prefix + f[len("train-"):], data)
            nbytes += len(data)
        dt = time.monotonic() - t0
        print("ingested %d shards, %d bytes in %.2f s (%.1f MiB/s)"
              % (len(files), nbytes, dt, nbytes / (1 << 20) / max(dt, 1e-9)))

        # 3. every sample through DataLoader(num_workers=3), each epoch
        ok = True
        ds = shelf.ShardDataset(c, a.prefix, shuffle_seed=a.seed, samples=True)
        if len(ds.keys) != len(files):
            print("FAIL: %d shards listed under %r, %d ingested" % (len(ds.keys), a.prefix, len(files)))
            return 1
        orders = []
        for epoch in range(a.epochs):
            ds.set_epoch(epoch)
            dl = tud.DataLoader(_Digest(ds), batch_size=None, num_workers=a.workers)
            t0 = time.monotonic()
            seen, got_bytes, order = {}, 0, []
            for key, digests, n in dl:
                if key in seen:
                    print("FAIL: epoch %d: sample %s twice" % (epoch, key))
                    ok = False
                seen[key] = digests
                got_bytes += n
                order.append(key)
            dt = time.monotonic() - t0
            missing = set(expect) - set(seen)
            wrong = [k for k in seen if k in expect and seen[k] != expect[k]]
            extra = set(seen) - set(expect)
            if missing or wrong or extra or got_bytes != total:
                print("FAIL: epoch %d: %d missing, %d with other bytes, %d unexpected, %d of %d bytes"
                      % (epoch, len(missing), len(wrong), len(extra), got_bytes, total))
                ok = False
            orders.append(order)
            print("epoch %d: DataLoader(num_workers=%d) read %d samples, %d bytes, each once and "
                  "byte for byte, in %.2f s (%.1f MiB/s)" % (epoch, a.workers, len(seen), got_bytes,
                                                             dt, got_bytes / (1 << 20) / max(dt, 1e-9)))
        if a.epochs > 1 and orders[0] == orders[1]:
            print("FAIL: epochs 0 and 1 read the samples in the same order")
            ok = False

        # 4. stage
        if a.stage:
            r = c.stage(a.prefix, a.stage)
            for f in files:
                with open(os.path.join(workdir, f), "rb") as x, \
                        open(os.path.join(a.stage, f), "rb") as y:
                    if x.read() != y.read():
                        print("FAIL: staged %s differs" % f)
                        ok = False
            print("staged into %s: %d fetched, %d already there, %d bytes, %.2f s"
                  % (a.stage, r.objects, r.skipped, r.bytes, r.seconds))
        return 0 if ok else 1
    finally:
        if not a.keep:
            for k in list(c.list(a.prefix)):
                c.delete(k)
        if not a.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        c.close()


try:
    import torch.utils.data as _tud

    class _Digest(_tud.IterableDataset):
        """ShardDataset's samples, hashed in the DataLoader worker."""

        def __init__(self, ds):
            super().__init__()
            self.ds = ds

        def __iter__(self):
            return map(digest_sample, iter(self.ds))
except ImportError:
    _Digest = None

if __name__ == "__main__":
    sys.exit(main())
