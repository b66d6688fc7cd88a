"""Histories with overwrites and deletes, from several clients at once
(Jepsen-style), for the tests of replicated slices.

  history_rw.py work HISTORY SECONDS PREFIX SEED [--keys N] [--max-bytes B]
                [--client NAME] [--slice NAME] [--stop FILE]
      puts (new keys and overwrites), deletes and gets through the `shelf`
      CLI for SECONDS (or until FILE exists, if sooner), over N keys
      (default 40) named PREFIX<i>. Sizes go
      from 0 B to B (default 8 MiB), mostly small. Every put writes bytes
      no other put wrote (a random tag is part of them), so the bytes a get
      returns name the write they came from. Every operation is logged to
      HISTORY as it starts and as it ends, one line each:
        <t_us> <client> start <op> <key> <sha256|->
        <t_us> <client> <ok|fail|unknown|notfound> <op> <key> <sha256|->
      Several `work` processes may share HISTORY (lines are appended whole)
      and keys (give each its own --client name). Why each failed or
      unknown operation failed (the CLI's stderr) goes to HISTORY.err.
  history_rw.py event HISTORY WHAT NAME
      logs an event of the test itself (WHAT: kill, start, cut, heal) at
      this moment, as an operation that starts and ends at once:
        <t_us> test start <WHAT> <NAME> -   and   <t_us> test ok <WHAT> <NAME> -
  history_rw.py outage HISTORY
      the operations that started after the last kill or cut event and have
      ended, one line: `gets_ok N writes_ok M` (gets that returned bytes,
      acknowledged puts and deletes): so that a test keeps its outage on
      until the workload has really run through it.
  history_rw.py check HISTORY [--slice NAME] [--during-fail-ok] [--writes-ok]
      reads every key once more and checks the whole history:
        - a get never returns bytes that no put of that key wrote;
        - a get, and the final read, return a write (a put's bytes, or
          not-found for a delete or for a key never written) that no
          acknowledged write followed: the write began before the read
          ended (a write concurrent with the read may be seen), and no
          acknowledged put or delete of the key started after that write
          ended and ended before the read began. So an acknowledged write is
          readable, or a newer one; an acknowledged delete never comes back;
          an overwritten value never comes back;
        - unless --during-fail-ok, a get that fails (neither bytes nor
          not-found) is an anomaly: every read must succeed, outages
          included;
        - with --writes-ok, a put or delete that was not acknowledged is an
          anomaly, unless a kill or cut event fell while it was in flight
          (the node it was talking to may have been the one killed): writes
          must keep succeeding through an outage.
      Prints the counts (and those of the operations that ran wholly while a
      node was down: between its kill or cut event and its start or heal)
      and each anomaly (the first 30); exit 1 on any.

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


SLICE = None  # --slice: else the CLI's default ($SHELF_SLICE, else 'default')


def shelf(*args):
    sl = ["--slice", SLICE] if SLICE else []
    return subprocess.run(["shelf", *args, "--timeout", TIMEOUT_MS, *sl], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=60)


class Log:
    def __init__(self, path, client):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.efd = os.open(path + ".err", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.client = client

    def __call__(self, *words):
        line = " ".join(str(w) for w in (now_us(), self.client) + words) + "\n"
        os.write(self.fd, line.encode())  # one write: whole lines even when shared

    def why(self, op, key, r):
        """The CLI's stderr for an operation that did not succeed."""
        text = r if isinstance(r, str) else r.stderr.decode(errors="replace").strip()
        line = f"{now_us()} {self.client} {op} {key} rc={getattr(r, 'returncode', '-')}: {text}"
        os.write(self.efd, (line.replace("\n", " | ") + "\n").encode())


def get(key, tmp, log=None):
    """('ok', sha) | ('notfound', '-') | ('fail', '-')"""
    out = os.path.join(tmp, "get")
    try:
        os.unlink(out)
    except FileNotFoundError:
        pass
    try:
        r = shelf("get", key, out)
    except subprocess.TimeoutExpired:
        if log:
            log.why("get", key, "no answer in 60 s")
        return "fail", "-"
    if r.returncode == 0:
        with open(out, "rb") as g:
            return "ok", hashlib.sha256(g.read()).hexdigest()
    if r.returncode != 3 and log:
        log.why("get", key, r)
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


def work(path, seconds, prefix, seed, nkeys, max_bytes, client, stop=None):
    rnd = random.Random(f"{seed}-{client}")
    tmp = tempfile.mkdtemp()
    log = Log(path, client)
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end and not (stop and os.path.exists(stop)):
        key = f"{prefix}{rnd.randrange(nkeys):04d}"
        p = rnd.random()
        if p < 0.45:
            log("start", "get", key, "-")
            st, sha = get(key, tmp, log)
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
                if r.returncode:
                    log.why("put", key, r)
            except subprocess.TimeoutExpired:
                log("unknown", "put", key, sha)
                log.why("put", key, "no answer in 60 s")
        else:
            log("start", "rm", key, "-")
            try:
                r = shelf("rm", key)
                # deleting a key that is not there is a delete too
                st = "ok" if r.returncode in (0, 3) else "unknown"
                log(st, "rm", key, "-")
                if st != "ok":
                    log.why("rm", key, r)
            except subprocess.TimeoutExpired:
                log("unknown", "rm", key, "-")
                log.why("rm", key, "no answer in 60 s")
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


def possible(read_start, read_end, value, writes):
    """Could a read that ran from read_start to read_end return `value` ('-'
    for absent)? It could if some write that produces it (or no write, for
    absent) began before the read ended and was not followed by an
    acknowledged write that ended before the read began."""
    acked = [w for w in writes if w["status"] == "ok"]
    cands = [w for w in writes if w["status"] in ("ok", "unknown")
             and w["start"] < read_end and
             ((w["op"] == "put" and w["sha"] == value) or (w["op"] == "rm" and value == "-"))]
    if value == "-":
        cands.append({"end": float("-inf")})  # the key as it was before any write
    for c in cands:
        if not any(a["start"] > c["end"] and a["end"] < read_start for a in acked):
            return True
    return False


def check(path, during_fail_ok, writes_ok):
    ops = parse(path)
    writes, gets, events = {}, [], []
    for o in ops:
        if o["op"] in ("put", "rm"):
            writes.setdefault(o["key"], []).append(o)
        elif o["op"] == "get":
            gets.append(o)
        else:
            events.append(o)
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
        elif not possible(g["start"], g["end"], value, ws):
            what = "not-found" if value == "-" else f"bytes {value[:16]}"
            anomalies.append(f"get {g['key']} at {g['start']}: {what}, which an acknowledged "
                             "later write had replaced")
    if writes_ok:
        outages = [e["start"] for e in events if e["op"] in ("kill", "cut")]
        for ws in writes.values():
            for w in ws:
                if w["status"] != "ok" and not any(w["start"] <= t <= w["end"] for t in outages):
                    anomalies.append(f"{w['op']} {w['key']} by {w['client']} at {w['start']}: "
                                     f"{w['status']}, not acknowledged")
    tmp = tempfile.mkdtemp()
    for key in sorted(writes):
        t = now_us()
        st, sha = get(key, tmp)
        if st == "fail":
            anomalies.append(f"final get {key}: failed")
            continue
        value = sha if st == "ok" else "-"
        if st == "ok" and not any(w["op"] == "put" and w["sha"] == value for w in writes[key]):
            anomalies.append(f"final get {key}: bytes no put wrote ({value[:16]})")
        elif not possible(t, now_us(), value, writes[key]):
            what = "not-found" if value == "-" else f"bytes {value[:16]}"
            anomalies.append(f"final get {key}: {what}, which an acknowledged later write "
                             "had replaced")
    n = lambda op, st=None: sum(1 for o in ops if o["op"] == op and (st is None or o["status"] == st))
    print(f"history: {n('put')} puts ({n('put', 'ok')} acknowledged, {n('put', 'unknown')} "
          f"unknown), {n('rm')} deletes ({n('rm', 'ok')} acknowledged), {n('get')} gets "
          f"({n('get', 'ok')} ok, {n('get', 'notfound')} not-found, {n('get', 'fail')} failed), "
          f"{len(writes)} keys, {len(events)} events, {len(anomalies)} anomalies")
    # the operations that ran wholly while some node was down (between a kill
    # or cut and the start or heal of that node)
    down = []
    for e in events:
        if e["op"] in ("kill", "cut"):
            back = [x["start"] for x in events if x["op"] in ("start", "heal")
                    and x["key"] == e["key"] and x["start"] > e["start"]]
            down.append((e["start"], min(back) if back else float("inf")))
    inside = [o for o in ops if o["op"] in ("put", "rm", "get") and
              any(a <= o["start"] and o["end"] <= b for a, b in down)]
    if down:
        m = lambda op, st=None: sum(1 for o in inside if o["op"] in op and
                                    (st is None or o["status"] == st))
        print(f"during the outages: {m(('get',))} gets ({m(('get',), 'ok')} ok, "
              f"{m(('get',), 'notfound')} not-found, {m(('get',), 'fail')} failed), "
              f"{m(('put', 'rm'))} writes ({m(('put', 'rm'), 'ok')} acknowledged)")
    for a in anomalies[:30]:
        print("anomaly:", a)
    return 1 if anomalies else 0


def main(argv):
    global SLICE
    if len(argv) >= 6 and argv[1] == "work":
        opts = {"--keys": "40", "--max-bytes": str(8 << 20), "--client": f"c{os.getpid()}",
                "--slice": None, "--stop": None}
        rest = argv[6:]
        while rest:
            if rest[0] not in opts or len(rest) < 2:
                sys.exit(__doc__)
            opts[rest[0]] = rest[1]
            rest = rest[2:]
        if opts["--client"] == "test" or not opts["--client"].isprintable() or \
                len(opts["--client"].split()) != 1:
            sys.exit("--client: one word, not 'test' (the test's own events)")
        SLICE = opts["--slice"]
        work(argv[2], float(argv[3]), argv[4], argv[5], int(opts["--keys"]),
             int(opts["--max-bytes"]), opts["--client"], opts["--stop"])
        return 0
    if len(argv) == 5 and argv[1] == "event" and argv[3] in ("kill", "start", "cut", "heal"):
        Log(argv[2], "test")("start", argv[3], argv[4], "-")
        Log(argv[2], "test")("ok", argv[3], argv[4], "-")
        return 0
    if len(argv) == 3 and argv[1] == "outage":
        since, started, gets, writes = None, {}, 0, 0
        with open(argv[2]) as f:
            lines = [ln.split() for ln in f if len(ln.split()) == 6]
        for t, client, what, op, key, _ in lines:
            if client == "test" and what == "start" and op in ("kill", "cut"):
                since = int(t)
        for t, client, what, op, key, sha in lines:
            if since is None or client == "test":
                continue
            if what == "start":
                started[(client, op, key)] = int(t)
            elif started.pop((client, op, key), 0) >= since and what == "ok":
                if op == "get" and sha != "-":
                    gets += 1
                elif op in ("put", "rm"):
                    writes += 1
        print(f"gets_ok {gets} writes_ok {writes}")
        return 0
    if len(argv) >= 3 and argv[1] == "check":
        flags, rest = set(), argv[3:]
        while rest:
            if rest[0] == "--slice" and len(rest) >= 2:
                SLICE = rest[1]
                rest = rest[2:]
            elif rest[0] in ("--during-fail-ok", "--writes-ok"):
                flags.add(rest[0])
                rest = rest[1:]
            else:
                sys.exit(__doc__)
        return check(argv[2], "--during-fail-ok" in flags, "--writes-ok" in flags)
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
