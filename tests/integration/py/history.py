"""Operation histories for randomized cluster tests (Jepsen-style).

  history.py work HISTORY SECONDS PREFIX [SEED]
      puts and gets through the `shelf` CLI for SECONDS; every operation is
      logged to HISTORY as it starts and as it ends:
        <t_ms> start <op> <key> <sha256|->
        <t_ms> <ok|fail|unknown|notfound> <op> <key> <sha256|->
      Each key is written once, so a value read identifies its write.
  history.py check HISTORY
      reads every key once more and checks the history: every acknowledged
      write is readable with its bytes, a read never returns bytes no put
      wrote, and an acknowledged key never answers not-found. Prints the
      counts and each anomaly; exit 1 on any.
"""
import hashlib
import os
import random
import subprocess
import sys
import tempfile
import time

TIMEOUT_MS = "3000"


def now_ms():
    return int(time.time() * 1000)


def shelf(*args):
    return subprocess.run(["shelf", *args, "--timeout", TIMEOUT_MS], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=30)


def log(f, *words):
    f.write(" ".join(str(w) for w in (now_ms(),) + words) + "\n")
    f.flush()


def get(key, tmp):
    """('ok', sha) | ('notfound', '-') | ('fail', '-')"""
    out = os.path.join(tmp, "get")
    r = shelf("get", key, out)
    if r.returncode == 0:
        with open(out, "rb") as g:
            return "ok", hashlib.sha256(g.read()).hexdigest()
    return ("notfound" if r.returncode == 3 else "fail"), "-"


def work(path, seconds, prefix, seed):
    rnd = random.Random(seed)
    tmp = tempfile.mkdtemp()
    written = []
    end = time.monotonic() + seconds
    i = 0
    with open(path, "a") as f:
        while time.monotonic() < end:
            if written and rnd.random() < 0.4:
                key = rnd.choice(written)
                log(f, "start", "get", key, "-")
                st, sha = get(key, tmp)
                log(f, st, "get", key, sha)
                continue
            key = f"{prefix}{i:05d}"
            i += 1
            data = rnd.randbytes(rnd.choice((1, 100, 4096, 65536)))
            sha = hashlib.sha256(data).hexdigest()
            src = os.path.join(tmp, "put")
            with open(src, "wb") as g:
                g.write(data)
            log(f, "start", "put", key, sha)
            try:
                r = shelf("put", key, src)
                # a put that failed may still have landed: unknown, never fail
                log(f, "ok" if r.returncode == 0 else "unknown", "put", key, sha)
            except subprocess.TimeoutExpired:
                log(f, "unknown", "put", key, sha)
            written.append(key)


def check(path):
    puts, acked, got, anomalies = {}, {}, [], []
    with open(path) as f:
        for line in f:
            t, st, op, key, sha = line.split()
            if op == "put" and st != "start":
                puts[key] = sha
                if st == "ok":
                    acked[key] = int(t)
            elif op == "get" and st != "start":
                got.append((int(t), st, key, sha))
    for t, st, key, sha in got:
        if st == "ok" and sha != puts.get(key):
            anomalies.append(f"get {key} at {t}: bytes no put wrote ({sha[:16]})")
        if st == "notfound" and key in acked and acked[key] < t:
            anomalies.append(f"get {key} at {t}: not-found after its put was acknowledged")
    tmp = tempfile.mkdtemp()
    final_bad = 0
    for key in sorted(puts):
        st, sha = get(key, tmp)
        if key in acked and (st != "ok" or sha != puts[key]):
            anomalies.append(f"final get {key}: {st} {sha[:16]}, acknowledged {puts[key][:16]}")
            final_bad += 1
        elif key not in acked and st == "ok" and sha != puts[key]:
            anomalies.append(f"final get {key}: bytes no put wrote")
    print(f"history: {len(puts)} puts ({len(acked)} acknowledged), {len(got)} gets "
          f"({sum(1 for g in got if g[1] == 'ok')} ok), {len(anomalies)} anomalies")
    for a in anomalies[:20]:
        print("anomaly:", a)
    return 1 if anomalies else 0


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "work":
        work(sys.argv[2], float(sys.argv[3]), sys.argv[4],
             int(sys.argv[5]) if len(sys.argv) > 5 else 1)
        sys.exit(0)
    if len(sys.argv) == 3 and sys.argv[1] == "check":
        sys.exit(check(sys.argv[2]))
    sys.exit(__doc__)
