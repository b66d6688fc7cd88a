#!/bin/bash
# Cross-checks the control-plane codec (overlay/ovl_msg) against an
# independent msgpack implementation, python3-msgpack, in both directions:
#  1. C encodes every sample (tests/prog/msgtool encode); Python decodes each
#     and compares it field by field with its own definition of the sample.
#  2. Python encodes the same samples, plus variants (a newer minor version
#     with unknown fields at every level, keys in another order, UTF-8 text),
#     and C decodes them (msgtool decode) into the expected fields; and a few
#     bad messages Python builds are refused with their exact error text.
# The sample definitions here mirror tests/unit/msg_samples.c: change both.
set -u
cd "$(dirname "$0")/../.."
PY=/usr/bin/python3
B=${SHELF_BUILD:-$PWD/build}
TOOL="$B/tests/prog/msgtool"

if [ ! -x "$PY" ] || ! "$PY" -c 'import msgpack' 2>/dev/null; then
	echo "skipped: $PY with the msgpack module (Debian python3-msgpack) is not installed"
	exit 77
fi
if [ ! -x "$TOOL" ]; then
	echo "missing $TOOL: build it with make first"
	exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/c" "$tmp/py"
"$TOOL" encode "$tmp/c" || { echo "msgtool encode failed"; exit 1; }

exec "$PY" - "$TOOL" "$tmp" <<'EOF'
import os, subprocess, sys
import msgpack

tool, tmp = sys.argv[1], sys.argv[2]
failures = 0

def fail(what):
    global failures
    failures += 1
    print("FAIL", what)

def B(seed, n):
    return bytes(((seed + 7 * i) & 0xff) for i in range(n))

STATES = ["up", "down", "out"]

def member(i):
    return {"id": B(10 + i, 32), "curve_key": B(50 + i, 32), "addr": B(90 + i, 16),
            "port": 7100 + i % 1000,
            "domain": {"site": "lab-1", "chassis": "c%02d" % (i // 24), "slot": str(i % 24)},
            "capacity": 4000787030016 + i, "state": STATES[i % 3]}

def env(t, rid=0, **fields):
    d = {"v": [1, 0], "t": t}
    if rid:
        d["rid"] = rid
    d.update(fields)
    return d

def node(k):
    n = {"id": B(10 + k, 32), "board": "sim", "version": "shelf 0.1.%d" % k,
         "domain": {"site": "lab-1", "chassis": "c00", "slot": str(k)},
         "capacity": 1 << 40}
    if k:
        n["used"] = k * 1000000
    n["state"] = STATES[k % 3]
    if k:
        n["seen_ms"] = 250 * k
    return n

reg_min = dict(node_id=B(1, 32), curve_key=B(2, 32), board="sim", version="shelf 0.1.0",
               capacity=4000787030016, domain={"site": "lab-1", "chassis": "c07", "slot": "12"},
               port=7100)
SAMPLES = {
    "register": env("register", 42, **reg_min, token="enrol-3f9a1c",
                    slices=[{"name": "alpha", "epoch": 7}, {"name": "beta", "epoch": 0}]),
    "register_min": env("register", **reg_min),
    "register_ok": env("register_ok", 42, ts=B(3, 64), cert=B(4, 300), heartbeat_ms=1000,
                       slices=[{"name": "alpha", "epoch": 8}]),
    "heartbeat": env("heartbeat", node_id=B(1, 32), seq=123456, used=1234567890),
    "heartbeat_ok": env("heartbeat_ok", ts=B(5, 64), seq=123456,
                        slices=[{"name": "alpha", "epoch": 9}, {"name": "beta", "epoch": 2}]),
    "map_get": env("map_get", 43, slice="alpha", epoch=7),
    "map": env("map", 43, ts=B(6, 64), slice="alpha", epoch=9, replicas=3,
               members=[member(i) for i in range(5)]),
    "map_def": env("map", ts=B(6, 64), slice="alpha", epoch=9, replicas=3,
                   members=[member(i) for i in range(2)], sig=B(14, 64),
                   left=[{"id": B(15, 32), "epoch": 8, "reason": "revoked"}],
                   selector="board=sim", owner=B(16, 32)),
    "map_big": env("map", 43, ts=B(6, 64), slice="alpha", epoch=9, replicas=3,
                   members=[member(i) for i in range(1000)]),
    "map_delta": env("map_delta", ts=B(7, 64), slice="alpha", base_epoch=9, epoch=10,
                     members=[member(5)], removed=[B(11, 32)]),
    "cert_renew": env("cert_renew", node_id=B(1, 32), cert=B(4, 300)),
    "cert": env("cert", ts=B(8, 64), cert=B(9, 4096)),
    "error": env("error", 44, code=4, message="unknown slice 'gamma'", ts=B(12, 64)),
    "admin": env("admin", 45, op="create_slice", slice="gamma", replicas=2),
    "admin_ok": env("admin_ok", 45, ts=B(13, 64), op="list_nodes",
                    nodes=[node(k) for k in range(3)],
                    slices=[{"name": "alpha", "epoch": 9, "replicas": 3, "members": 24},
                            {"name": "beta", "epoch": 10, "replicas": 2, "members": 25}],
                    stats=[{"name": "nodes", "value": 3}, {"name": "slices", "value": 2}],
                    epoch=11),
    "map_report": env("map_report", slice="alpha", epoch=9, replicas=3,
                      members=[member(i) for i in range(3)], encrypt=True, sig=B(14, 64),
                      left=[{"id": B(15, 32), "epoch": 8, "reason": "expired"}]),
}

def no_dups(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate keys %r" % keys)
    return dict(pairs)

def first_diff(got, want, path):
    """Where two decoded values first differ, for a short failure message."""
    if isinstance(got, dict) and isinstance(want, dict):
        for k in list(want) + [k for k in got if k not in want]:
            if k not in got:
                return "%s.%s missing" % (path, k)
            if k not in want:
                return "%s.%s unexpected" % (path, k)
            if got[k] != want[k]:
                return first_diff(got[k], want[k], "%s.%s" % (path, k))
    if isinstance(got, list) and isinstance(want, list):
        if len(got) != len(want):
            return "%s has %d elements, expected %d" % (path, len(got), len(want))
        for i, (g, w) in enumerate(zip(got, want)):
            if g != w:
                return first_diff(g, w, "%s[%d]" % (path, i))
    return "%s: C wrote %.80r, expected %.80r" % (path, got, want)

def unpack(data):
    return msgpack.unpackb(data, raw=False, strict_map_key=True, object_pairs_hook=no_dups)

# ---- 1. C encodes, Python decodes ------------------------------------------
names = subprocess.run([tool, "list"], check=True, capture_output=True, text=True).stdout.split()
if sorted(names) != sorted(SAMPLES):
    fail("sample lists differ: C %s, Python %s" % (sorted(names), sorted(SAMPLES)))
types_seen = set()
for name in names:
    data = open(os.path.join(tmp, "c", name + ".mp"), "rb").read()
    try:
        got = unpack(data)
    except Exception as e:
        fail("%s: python cannot decode C's bytes: %s" % (name, e))
        continue
    want = SAMPLES.get(name)
    if got != want:
        fail("%s: %s" % (name, first_diff(got, want, "")))
        continue
    if list(got)[:2] != ["v", "t"]:
        fail("%s: keys do not start with v, t: %r" % (name, list(got)))
    if msgpack.packb(want, use_bin_type=True) != data:
        fail("%s: C's bytes differ from Python's canonical encoding" % name)
    types_seen.add(got["t"])
print("python decoded %d C messages (%d types)" % (len(names), len(types_seen)))
if len(types_seen) != 13:
    fail("expected 13 message types, saw %d" % len(types_seen))

# ---- 2. Python encodes, C decodes -------------------------------------------
def esc(s):
    out = []
    for b in s.encode("utf-8"):
        out.append("\\x%02x" % b if b < 0x20 or b > 0x7e or b == 0x5c else chr(b))
    return "".join(out)

def render(v, path, lines):
    if isinstance(v, dict):
        for k, x in v.items():
            if k.startswith("x_"):
                continue  # unknown to this protocol version
            render(x, path + "." + k if path else k, lines)
    elif isinstance(v, list):
        if not v:
            lines.append(path + "=[]")
        for i, x in enumerate(v):
            render(x, "%s[%d]" % (path, i), lines)
    elif isinstance(v, bool):
        lines.append("%s=%s" % (path, "true" if v else "false"))
    elif isinstance(v, int):
        lines.append("%s=%d" % (path, v))
    elif isinstance(v, bytes):
        lines.append("%s=%s" % (path, v.hex()))
    elif isinstance(v, str):
        lines.append("%s=%s" % (path, esc(v)))
    else:
        raise TypeError(path)

def expected_lines(msg):
    lines = []
    for k, x in msg.items():
        if k == "v":
            lines.append("v=%d.%d" % tuple(x))
        elif not k.startswith("x_"):
            render(x, k, lines)
    return sorted(lines)

def c_decode(name, data):
    path = os.path.join(tmp, "py", name + ".mp")
    with open(path, "wb") as f:
        f.write(data)
    r = subprocess.run([tool, "decode", path], capture_output=True, text=True)
    return r.returncode, r.stdout

def check_ok(name, msg, data=None):
    if data is None:
        data = msgpack.packb(msg, use_bin_type=True)
    rc, out = c_decode(name, data)
    if rc != 0:
        fail("%s: C refused Python's message: %s" % (name, out.strip()))
        return
    got, want = sorted(out.splitlines()), expected_lines(msg)
    if got != want:
        for line in sorted(set(got) ^ set(want)):
            fail("%s: %s %s" % (name, "C only:" if line in got else "missing:", line))

def check_err(name, data, text):
    rc, out = c_decode(name, data)
    if rc != 1 or out.strip() != text:
        fail("%s: expected %r, C said %r (exit %d)" % (name, text, out.strip(), rc))

for name, msg in SAMPLES.items():
    check_ok(name, msg)

def future(msg, minor):
    """The message as a newer minor version would send it: unknown keys everywhere."""
    def add(d, depth):
        d = {k: (add(v, depth + 1) if isinstance(v, dict)
                 else [add(x, depth + 1) if isinstance(x, dict) else x for x in v]
                 if isinstance(v, list) else v) for k, v in d.items()}
        d["x_new_%d" % depth] = {"nested": [1, "two", b"\x03", None, True, {"deep": [[]]}]}
        d["x_count"] = 2 ** 64 - 1
        return d
    m = add(msg, 0)
    m["v"] = [1, minor]
    return m

for name in ("register", "map", "map_delta", "admin_ok", "error", "map_report"):
    check_ok(name + "_minor", future(SAMPLES[name], 9))

# keys in another order: the type and version come last
for name in ("heartbeat", "map"):
    msg = dict(SAMPLES[name])
    v, t = msg.pop("v"), msg.pop("t")
    msg["t"], msg["v"] = t, v
    check_ok(name + "_reordered", msg)

# UTF-8 text, an unknown state (decodes as "unknown"), the largest ids
msg = env("error", code=9, message="disk f\u00fcll \u2013 \u65e5\u672c")
check_ok("error_utf8", msg)
msg = dict(SAMPLES["map"])
msg["members"] = [dict(member(0), state="draining")]
rc, out = c_decode("map_state", msgpack.packb(msg, use_bin_type=True))
if rc != 0 or "members[0].state=unknown" not in out.splitlines():
    fail("map_state: an unknown state should decode as 'unknown': %s" % out)
check_ok("rid_max", env("map_get", 2 ** 64 - 1, slice="s", epoch=2 ** 64 - 1))

# refused, with the exact text
m = dict(SAMPLES["register"]); m["v"] = [2, 0]
check_err("major2", msgpack.packb(m, use_bin_type=True),
          "error EPROTONOSUPPORT register: protocol major version 2 is not supported (this build speaks 1)")
m = dict(SAMPLES["register"]); del m["port"]
check_err("missing", msgpack.packb(m, use_bin_type=True),
          "error EBADMSG register: required field 'port' is missing")
m = dict(SAMPLES["register"]); m["slices"] = {"alpha": 7}
check_err("wrongtype", msgpack.packb(m, use_bin_type=True),
          "error EBADMSG register: field 'slices' is not an array")
m = dict(SAMPLES["register"]); m["node_id"] = m["node_id"].hex()
check_err("strkey", msgpack.packb(m, use_bin_type=True),
          "error EBADMSG register: field 'node_id' is not a bin")
m = dict(SAMPLES["cert"]); m["cert"] = B(9, 4097)
check_err("bigcert", msgpack.packb(m, use_bin_type=True),
          "error EBADMSG cert: field 'cert' is longer than 4096 bytes")
m = dict(SAMPLES["heartbeat"]); m["used"] = 1.5
check_err("float", msgpack.packb(m, use_bin_type=True),
          "error EBADMSG heartbeat: float at byte %d is not allowed"
          % (len(msgpack.packb(m, use_bin_type=True)) - 9))
m = dict(SAMPLES["heartbeat"]); m["t"] = "teleport"
check_err("unknowntype", msgpack.packb(m, use_bin_type=True),
          "error ENOMSG message: unknown message type 'teleport'")
# duplicate keys: Python dicts can't hold them, so pack the pairs by hand
pk = msgpack.Packer(use_bin_type=True)
pairs = list(SAMPLES["heartbeat"].items()) + [("seq", 1)]
data = pk.pack_map_header(len(pairs)) + b"".join(pk.pack(k) + pk.pack(v) for k, v in pairs)
check_err("dupkey", data, "error EBADMSG heartbeat: duplicate key 'seq'")

if failures:
    print("%d failures" % failures)
    sys.exit(1)
print("python and C agree on every message")
EOF
