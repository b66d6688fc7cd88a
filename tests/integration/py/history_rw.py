"""Histories with overwrites and deletes, from several clients at once
(Jepsen-style), for the tests of replicated slices.

  history_rw.py work HISTORY SECONDS PREFIX SEED [--keys N] [--max-bytes B]
                [--client NAME]
      puts (new keys and overwrites), deletes and gets through the `shelf`
      CLI for SECONDS, over N keys (default 40) named PREFIX<i>. Sizes go
      from 0 B to B (default 8 MiB), mostly small. Every put writes bytes
      no other put wrote (a random tag is part of them), so the bytes a get
      returns name the write they came from. Every operation is logged to
      HISTORY as it starts and as it ends, one line each:
        <t_us> <client> start <op> <key> <sha256|->
        <t_us> <client> <ok|fail|unknown|notfound> <op> <key> <sha256|->
      Several `work` processes may share HISTORY (lines are appended whole)
      and keys (give each its own --client name).
  history_rw.py check HISTORY [--during-fail-ok]
      reads every key once more and checks the whole history:
        - a get never returns bytes that no put of that key wrote;
        - a get, and the final read, return a write (a put's bytes, or
          not-found for a delete or for a key never written) that no
          acknowledged write followed: no acknowledged put or delete of the
          key started after that write ended and ended before the read
          began. So an acknowledged write is readable, or a newer one; an
          acknowledged delete never comes back; an overwritten value never
          comes back;
        - unless --during-fail-ok, a get that fails (neither bytes nor
          not-found) is an anomaly: every read must succeed, outages
          included.
      Prints the counts and each anomaly (the first 30); exit 1 on any.

A write that failed or timed out is `unknown`: it may have landed, so it may
be read, but it never makes an older value impossible.
"""
import hashlib
import os
import random
import subprocess
import sys
import tempfile
import time

TIMEOUT_MS = "5000"


def now_us():
    return int(time.time() * 1_000_000)


def shelf(*args):
    return subprocess.run(["shelf", *args, "--timeout", TIMEOUT_MS], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=60)


class Log:
    def __init__(self, path, client):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.client = client

    def __call__(self, *words):
        line = " ".join(str(w) for w in (now_us(), self.client) + words) + "\n"
        os.write(self.fd, line.encode())  # one write: whole lines even when shared


def get(key, tmp):
    """('ok', sha) | ('notfound', '-') | ('fail', '-')"""
    out = os.path.join(tmp, "get")
    try:
        r = shelf("get", key, out)
    except subprocess.TimeoutExpired:
        return "fail", "-"
    if r.returncode == 0:
        with open(out, "rb") as g:
            return "ok", hashlib.sha256(g.read()).hexdigest()
    return ("notfound" if r.returncode == 3 else "fail"), "-"


def size_of(rnd, max_bytes):
    p = rnd.random()
    if p < 0.05:
        return 0
    if p < 0.55:
        return rnd.randint(1, 4096)
    if p < 0.85:
        return rnd.randint(4097, 256 << 10)
    if p < 0.97:
        return rnd.randint(256 << 10, min(2 << 20, max_bytes))
    return rnd.randint(min(2 << 20, max_bytes), max_bytes)


def work(path, seconds, prefix, seed, nkeys, max_bytes, client):
    rnd = random.Random(f"{seed}-{client}")
    tmp = tempfile.mkdtemp()
    log = Log(path, client)
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        key = f"{prefix}{rnd.randrange(nkeys):04d}"
        p = rnd.random()
        if p < 0.45:
            log("start", "get", key, "-")
            st, sha = get(key, tmp)
            log(st, "get", key, sha)
        elif p < 0.9:
            size = size_of(rnd, max_bytes)
            tag = f"{client}:{n}:{rnd.getrandbits(64)}:".encode()
            # too small for the tag: such bytes may repeat, and the checker
            # accepts any put that wrote them
            data = (tag + rnd.randbytes(size))[:size] if size >= len(tag) else rnd.randbytes(size)
            sha = hashlib.sha256(data).hexdigest()
            src = os.path.join(tmp, "put")
            with open(src, "wb") as g:
                g.write(data)
            log("start", "put", key, sha)
            try:
                r = shelf("put", key, src)
                log("ok" if r.returncode == 0 else "unknown", "put", key, sha)
            except subprocess.TimeoutExpired:
                log("unknown", "put", key, sha)
        else:
            log("start", "rm", key, "-")
            try:
                r = shelf("rm", key)
                # deleting a key that is not there is a delete too
                st = "ok" if r.returncode in (0, 3) else "unknown"
                log(st, "rm", key, "-")
            except subprocess.TimeoutExpired:
                log("unknown", "rm", key, "-")
        n += 1


def parse(path):
    """ops: list of dicts with client, op, key, sha, start, end, status."""
    open_ops, ops = {}, []
    with open(path) as f:
        for ln, line in enumerate(f, 1):
            w = line.split()
            if len(w) != 6:
                raise SystemExit(f"{path}:{ln}: malformed line {line!r}")
            t, client, st, op, key, sha = int(w[0]), w[1], w[2], w[3], w[4], w[5]
            if st == "start":
                open_ops[(client, op, key)] = {"client": client, "op": op, "key": key,
                                               "sha": sha, "start": t}
                continue
            o = open_ops.pop((client, op, key), None)
            if o is None:
                raise SystemExit(f"{path}:{ln}: an end with no start")
            o.update(end=t, status=st)
            if op == "get":
                o["sha"] = sha
            ops.append(o)
    for o in open_ops.values():  # a client killed mid-operation
        o.update(end=float("inf"), status="unknown")
        ops.append(o)
    return ops


def possible(read_start, value, writes):
    """Could a read that began at read_start return `value` ('-' for absent)?
    It could if some write that produces it (or no write, for absent) was
    not followed by an acknowledged write that ended before the read began."""
    acked = [w for w in writes if w["status"] == "ok"]
    cands = [w for w in writes if w["status"] in ("ok", "unknown")
             and w["start"] < read_start and
             ((w["op"] == "put" and w["sha"] == value) or (w["op"] == "rm" and value == "-"))]
    if value == "-":
        cands.append({"end": float("-inf")})  # the key as it was before any write
    for c in cands:
        if not any(a["start"] > c["end"] and a["end"] < read_start for a in acked):
            return True
    return False


def check(path, during_fail_ok):
    ops = parse(path)
    writes, gets = {}, []
    for o in ops:
        if o["op"] in ("put", "rm"):
            writes.setdefault(o["key"], []).append(o)
        else:
            gets.append(o)
    anomalies = []
    for g in gets:
        ws = writes.get(g["key"], [])
        if g["status"] == "fail":
            if not during_fail_ok:
                anomalies.append(f"get {g['key']} by {g['client']} at {g['start']}: failed")
            continue
        value = g["sha"] if g["status"] == "ok" else "-"
        if g["status"] == "ok" and not any(w["op"] == "put" and w["sha"] == value for w in ws):
            anomalies.append(f"get {g['key']} at {g['start']}: bytes no put wrote ({value[:16]})")
        elif not possible(g["start"], value, ws):
            what = "not-found" if value == "-" else f"bytes {value[:16]}"
            anomalies.append(f"get {g['key']} at {g['start']}: {what}, which an acknowledged "
                             "later write had replaced")
    tmp = tempfile.mkdtemp()
    t = now_us()
    for key in sorted(writes):
        st, sha = get(key, tmp)
        if st == "fail":
            anomalies.append(f"final get {key}: failed")
            continue
        value = sha if st == "ok" else "-"
        if st == "ok" and not any(w["op"] == "put" and w["sha"] == value for w in writes[key]):
            anomalies.append(f"final get {key}: bytes no put wrote ({value[:16]})")
        elif not possible(t, value, writes[key]):
            what = "not-found" if value == "-" else f"bytes {value[:16]}"
            anomalies.append(f"final get {key}: {what}, which an acknowledged later write "
                             "had replaced")
    n = lambda op, st=None: sum(1 for o in ops if o["op"] == op and (st is None or o["status"] == st))
    print(f"history: {n('put')} puts ({n('put', 'ok')} acknowledged, {n('put', 'unknown')} "
          f"unknown), {n('rm')} deletes ({n('rm', 'ok')} acknowledged), {n('get')} gets "
          f"({n('get', 'ok')} ok, {n('get', 'notfound')} not-found, {n('get', 'fail')} failed), "
          f"{len(writes)} keys, {len(anomalies)} anomalies")
    for a in anomalies[:30]:
        print("anomaly:", a)
    return 1 if anomalies else 0


def main(argv):
    if len(argv) >= 6 and argv[1] == "work":
        opts = {"--keys": "40", "--max-bytes": str(8 << 20), "--client": f"c{os.getpid()}"}
        rest = argv[6:]
        while rest:
            if rest[0] not in opts or len(rest) < 2:
                sys.exit(__doc__)
            opts[rest[0]] = rest[1]
            rest = rest[2:]
        work(argv[2], float(argv[3]), argv[4], argv[5], int(opts["--keys"]),
             int(opts["--max-bytes"]), opts["--client"])
        return 0
    if len(argv) in (3, 4) and argv[1] == "check":
        if len(argv) == 4 and argv[3] != "--during-fail-ok":
            sys.exit(__doc__)
        return check(argv[2], len(argv) == 4)
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
