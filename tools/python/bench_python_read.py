#!/usr/bin/python3
"""python_read_32m: shards read through shelf.ShardDataset, against the C client.

    sudo tools/shelf-cluster exec -- env PYTHONPATH=tools/python \\
        /usr/bin/python3 tools/python/bench_python_read.py [--shards 16] [--mib 32]

Puts --shards objects of --mib MiB under --prefix (kept with --keep, and
reused when they are there with the right sizes), then, --rounds times,
reads them all through ShardDataset in this process (ours: (key, bytes) per
shard, one Client) and with one `shelf get KEY /dev/null` per shard (ref:
the C client), and prints the best of each as

    BENCH python_read_32m ours=MiB/s ref=MiB/s ratio=ours/ref unit=MiB/s ref_tool=shelf-get

Client and broker: $SHELF_CLIENT and $SHELF_BROKER (shelf-cluster exec
sets both); the C client: --shelf, else `shelf` on PATH. Use an optimised
build (build/, not build/san): SHELF_LIB and PATH choose it.
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time

try:
    import shelf
except ImportError:  # run from the source tree without PYTHONPATH
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import shelf


def shard_bytes(i, n):
    block = hashlib.sha512(b"shelf-bench-%d" % i).digest() * 2048  # 128 KiB
    return (block * (n // len(block) + 1))[:n]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--mib", type=int, default=32)
    ap.add_argument("--prefix", default="bench/python-read/")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shelf", default=None, help="the C client (default: shelf on PATH)")
    ap.add_argument("--keep", action="store_true", help="leave the shards in the slice")
    a = ap.parse_args()
    cli = a.shelf or shutil.which("shelf")
    if not cli:
        print("bench_python_read: no `shelf` on PATH (give --shelf)", file=sys.stderr)
        return 2
    size = a.mib << 20
    c = shelf.Client(timeout_ms=60000)
    keys = ["%s%04d" % (a.prefix, i) for i in range(a.shards)]
    try:
        for i, k in enumerate(keys):
            try:
                if c.stat(k).size == size:
                    continue
            except shelf.NotFound:
                pass
            c.put(k, shard_bytes(i, size))
        total_mib = a.shards * a.mib
        ds = shelf.ShardDataset(c, a.prefix)
        if sorted(ds.keys) != keys:
            print("bench_python_read: %r holds other keys than the bench's" % a.prefix, file=sys.stderr)
            return 1
        ours = ref = 0.0
        for r in range(a.rounds + 1):  # round 0 warms caches and connections
            t0 = time.monotonic()
            n = 0
            for k, v in ds:
                n += len(v)
            dt_ours = time.monotonic() - t0
            if n != a.shards * size:
                print("bench_python_read: read %d bytes, not %d" % (n, a.shards * size), file=sys.stderr)
                return 1
            t0 = time.monotonic()
            for k in keys:
                subprocess.run([cli, "get", k, "/dev/null"], check=True)
            dt_ref = time.monotonic() - t0
            if r:
                ours = max(ours, total_mib / dt_ours)
                ref = max(ref, total_mib / dt_ref)
            print("round %d: ShardDataset %.1f MiB/s, shelf get %.1f MiB/s"
                  % (r, total_mib / dt_ours, total_mib / dt_ref), file=sys.stderr)
        print("BENCH python_read_%dm ours=%.6g ref=%.6g ratio=%.3f unit=MiB/s ref_tool=shelf-get"
              % (a.mib, ours, ref, ours / ref))
        return 0
    finally:
        if not a.keep:
            for k in keys:
                try:
                    c.delete(k)
                except shelf.NotFound:
                    pass
        c.close()


if __name__ == "__main__":
    sys.exit(main())
