#!/bin/bash
# An independent client (pyzmq), written only from docs/PROTOCOL.md section 5,
# talks to an ovl_link server (tests/prog/link_echo) on loopback: the allowed
# key gets answers that name it, an unknown key, a wrong server key and the
# NULL mechanism get nothing through.
set -eu
B=${SHELF_BUILD:-build}
prog="$B/tests/prog/link_echo"
[ -x "$prog" ] || { echo "missing $prog: run make first"; exit 1; }

# pyenv and friends may shadow the Debian python that has python3-zmq
PY=""
for p in /usr/bin/python3 python3; do
	if command -v "$p" >/dev/null 2>&1 &&
		"$p" -c 'import sys, zmq; sys.exit(0 if zmq.has("curve") else 1)' 2>/dev/null; then
		PY=$p
		break
	fi
done
if [ -z "$PY" ]; then
	echo "skipped: needs pyzmq with CURVE (Debian package python3-zmq)"
	exit 77
fi

exec "$PY" - "$prog" <<'EOF'
import subprocess, sys
import zmq
from zmq.utils import z85

prog = sys.argv[1]
REFUSE_MS = 500


def fail(why):
    print("FAIL:", why)
    sys.exit(1)


def keypair():
    # ZeroMQ hands out Z85 text; the protocol's keys are the raw 32 bytes
    pub, sec = zmq.curve_keypair()
    return z85.decode(pub), z85.decode(sec)


good_pub, good_sec = keypair()
bad_pub, bad_sec = keypair()
srv = subprocess.Popen([prog, good_pub.hex(), "30"], stdout=subprocess.PIPE, text=True)
info = {}
while len(info) < 2:
    line = srv.stdout.readline()
    if not line:
        fail("link_echo exited before printing its endpoint")
    k, _, v = line.strip().partition("=")
    info[k] = v
endpoint, server_key = info["endpoint"], bytes.fromhex(info["server_key"])
print("server", endpoint, info["server_key"])

ctx = zmq.Context()


def client(pub, sec, skey, immediate=1):
    # section 5: a DEALER, CURVE client with raw 32-byte keys, one frame per message
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.IMMEDIATE, immediate)
    s.setsockopt(zmq.IPV6, 1)
    s.setsockopt(zmq.MAXMSGSIZE, (1 << 20) + 33)
    s.setsockopt(zmq.HEARTBEAT_IVL, 5000)
    s.setsockopt(zmq.HEARTBEAT_TIMEOUT, 15000)
    s.setsockopt(zmq.HEARTBEAT_TTL, 15000)
    s.setsockopt(zmq.HANDSHAKE_IVL, 5000)
    s.setsockopt(zmq.CURVE_SERVERKEY, skey)
    s.setsockopt(zmq.CURVE_PUBLICKEY, pub)
    s.setsockopt(zmq.CURVE_SECRETKEY, sec)
    s.connect(endpoint)
    return s


try:
    good = client(good_pub, good_sec, server_key)
    good.send(b"ping")
    if not good.poll(10000):
        fail("the allowed client got no answer")
    frames = good.recv_multipart()
    if frames != [good_pub.hex().encode() + b" ping"]:
        fail("unexpected answer %r" % frames)
    print("allowed key: answered, and the server saw our key")

    # messages queued before the handshake (IMMEDIATE=0) must still never arrive
    bad = client(bad_pub, bad_sec, server_key, immediate=0)
    bad.send(b"ping")
    if bad.poll(REFUSE_MS):
        fail("an unknown key got an answer")
    print("unknown key: nothing")

    impostor_pub, _ = keypair()
    wrong = client(good_pub, good_sec, impostor_pub, immediate=0)
    wrong.send(b"ping")
    if wrong.poll(REFUSE_MS):
        fail("a client with the wrong server key got an answer")
    print("wrong server key: nothing")

    plain = ctx.socket(zmq.DEALER)
    plain.setsockopt(zmq.LINGER, 0)
    plain.connect(endpoint)
    plain.send(b"ping")
    if plain.poll(REFUSE_MS):
        fail("a NULL-mechanism client got an answer")
    print("NULL mechanism: nothing")

    # quit is not answered: the server closes at once, and a reply racing a
    # close may be lost (PROTOCOL.md 5.5)
    good.send(b"quit")
    out, _ = srv.communicate(timeout=20)
finally:
    if srv.poll() is None:
        srv.kill()
    ctx.destroy(linger=0)

stats = dict(kv.split("=") for kv in out.split())
print("server stats", stats)
if int(stats["received"]) != 2:
    fail("the server received %s messages, expected 2 (ping, quit)" % stats["received"])
if int(stats["zap_denied"]) < 1:
    fail("ZAP denied nobody")
if srv.returncode != 0:
    fail("link_echo exited with %d" % srv.returncode)
print("ok")
EOF
