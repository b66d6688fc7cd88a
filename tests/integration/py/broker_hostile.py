#!/usr/bin/env python3
"""Hostile clients against a real shelf-broker (tests/integration/broker_*.sh).

  broker_hostile.py bad ENDPOINT BROKER_PUB_FILE
      malformed, truncated, mistyped, wrong-version, multi-part and oversized
      messages; every answerable one must be answered with the documented
      error code, and the broker must still answer afterwards.
  broker_hostile.py flood ENDPOINT BROKER_PUB_FILE SECONDS
      one CURVE key sends `register` as fast as it can for SECONDS; the
      broker must answer the excess with error 8 ("rate limited ...") about
      once a second and drop the rest.

Prints one `ok ...` line per check and a final `RESULT key=value ...` line;
exits 1 on the first failed check.
"""
import sys
import time

import msgpack
import nacl.signing
import zmq
from zmq.utils import z85

V = [1, 0]


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def dealer(ctx, endpoint, server_pub):
    pub, sec = zmq.curve_keypair()
    s = ctx.socket(zmq.DEALER)
    s.curve_serverkey = server_pub
    s.curve_publickey = pub
    s.curve_secretkey = sec
    s.linger = 0
    s.rcvtimeo = 5000
    s.sndhwm = 100000
    s.ipv6 = True
    s.connect(endpoint)
    return s, pub


def z85_to_raw(k):
    return z85.decode(k)


def register_msg(curve_pub_z85):
    """A well-formed register with a valid proof of possession, no token."""
    sk = nacl.signing.SigningKey.generate()
    node_id = bytes(sk.verify_key)
    curve = z85_to_raw(curve_pub_z85)
    sig = sk.sign(b"shelf-register-v1\0" + node_id + curve).signature
    return msgpack.packb({
        "v": V, "t": "register", "rid": 7,
        "node_id": node_id,
        "curve_key": curve,
        "sig": sig,
        "board": "hostile", "version": "0", "capacity": 1,
        "domain": {"site": "sim-site", "chassis": "x", "slot": "0"},
        "port": 7100,
    }, use_bin_type=True)


def expect_error(s, payload, code, words, what, multipart=False):
    if multipart:
        s.send_multipart(payload)
    else:
        s.send(payload)
    try:
        reply = msgpack.unpackb(s.recv(), raw=False)
    except zmq.Again:
        fail("%s: no answer within 5 s" % what)
    if reply.get("t") != "error" or reply.get("code") != code:
        fail("%s: expected error %d, got %r" % (what, code, reply))
    msg = reply.get("message", "")
    for w in words:
        if w not in msg:
            fail("%s: error message %r lacks %r" % (what, msg, w))
    print("ok %s: error %d \"%s\"" % (what, code, msg), flush=True)


def expect_silence(s, payload, what, seconds=1.0):
    s.send_multipart(payload)
    s.rcvtimeo = int(seconds * 1000)
    try:
        reply = s.recv()
        fail("%s: expected no answer, got %r" % (what, reply[:80]))
    except zmq.Again:
        pass
    finally:
        s.rcvtimeo = 5000
    print("ok %s: dropped without an answer" % what, flush=True)


def bad(endpoint, pubfile):
    server_pub = open(pubfile, "rb").read().strip()
    ctx = zmq.Context()
    s, pub = dealer(ctx, endpoint, server_pub)
    good = register_msg(pub)
    expect_error(s, b"\xc1\x00garbage", 1, [], "garbage bytes")
    expect_error(s, good[: len(good) // 2], 1, [], "truncated register")
    expect_error(s, good + b"\x00", 1, [], "trailing byte after the map")
    expect_error(s, msgpack.packb([1, 2, 3]), 1, [], "an array, not a map")
    expect_error(s, msgpack.packb({"v": V, "t": "register", "node_id": "text, not bin"}), 1,
                 ["node_id"], "wrong type for node_id")
    expect_error(s, msgpack.packb({"v": V, "t": "explode"}), 1, [], "unknown message type")
    expect_error(s, msgpack.packb({"v": [9, 0], "t": "heartbeat"}), 2, [], "major version 9")
    deep = 1
    for _ in range(20):
        deep = [deep]
    expect_error(s, msgpack.packb({"v": V, "t": "register", "x": deep}), 1, [],
                 "containers nested 21 deep")
    expect_error(s, msgpack.packb({"v": V, "t": "heartbeat", "node_id": b"\0" * 32, "seq": 1},
                                  use_bin_type=True), 4, ["not registered"],
                 "heartbeat from an unknown key")
    expect_error(s, good, 3, ["unknown node"], "register without token")
    expect_silence(s, [b"part one", b"part two", b"part three"], "three-frame message")
    # one byte under the cap goes through libzmq and is refused by the decoder
    near = msgpack.packb({"v": V, "t": "register", "pad": b"\0" * 65536}, use_bin_type=True)
    expect_error(s, near * 15 + b"\0" * (1048576 - 15 * len(near)), 1, [],
                 "a 1 MiB frame of junk")
    # over the cap: libzmq closes the connection while decoding the frame
    # header; nothing is allocated and nothing can be answered
    big = b"\0" * (8 << 20)
    for _ in range(3):
        s.send(big)
    s.rcvtimeo = 1500
    try:
        reply = s.recv()
        fail("8 MiB frame: expected no answer, got %r" % reply[:80])
    except zmq.Again:
        pass
    s.close()
    print("ok three 8 MiB frames: connection closed by the broker, no answer", flush=True)
    # the broker still serves: a new connection gets its answer
    s, pub = dealer(ctx, endpoint, server_pub)
    expect_error(s, register_msg(pub), 3, ["unknown node"], "after the junk, a new client")
    s.close()
    ctx.term()
    print("RESULT checks=ok", flush=True)


def flood(endpoint, pubfile, seconds):
    server_pub = open(pubfile, "rb").read().strip()
    ctx = zmq.Context()
    s, pub = dealer(ctx, endpoint, server_pub)
    msg = register_msg(pub)
    # first make sure the connection is up (the handshake takes a moment)
    s.send(msg)
    try:
        s.recv()
    except zmq.Again:
        fail("flood: the broker does not answer at all")
    sent, denied, limited, other = 0, 0, 0, 0
    limited_at = []
    poller = zmq.Poller()
    poller.register(s, zmq.POLLIN)
    start = time.monotonic()
    end = start + seconds
    while time.monotonic() < end:
        for _ in range(200):
            try:
                s.send(msg, zmq.NOBLOCK)
                sent += 1
            except zmq.Again:
                break
        while poller.poll(0):
            r = msgpack.unpackb(s.recv(), raw=False)
            if r.get("t") == "error" and r.get("code") == 8 and \
                    r.get("message", "").startswith("rate limited"):
                limited += 1
                limited_at.append(time.monotonic() - start)
            elif r.get("t") == "error" and r.get("code") == 3:
                denied += 1
            else:
                other += 1
    # collect the answers still in flight (the broker may still be working
    # through its queue: the bucket keeps refilling meanwhile)
    s.rcvtimeo = 500
    last = time.monotonic()
    while True:
        try:
            r = msgpack.unpackb(s.recv(), raw=False)
        except zmq.Again:
            break
        last = time.monotonic()
        if r.get("code") == 8:
            limited += 1
            limited_at.append(time.monotonic() - start)
        elif r.get("code") == 3:
            denied += 1
        else:
            other += 1
    s.close()
    ctx.term()
    rate = sent / seconds
    elapsed = max(last, end) - start
    print("RESULT sent=%d rate_per_s=%.0f denied=%d rate_limited_answers=%d other=%d "
          "seconds=%.1f" % (sent, rate, denied, limited, other, elapsed), flush=True)
    if other:
        fail("flood: %d unexpected answers" % other)
    # the bucket (burst 60, 20/s) admits at most 60 + 20 * seconds requests
    if denied > 60 + 20 * (elapsed + 1) + 1:
        fail("flood: %d requests were handled, more than the bucket allows" % denied)
    if sent < 10 * (60 + 20 * seconds):
        fail("flood: only %d sent; not a flood, the test proves nothing" % sent)
    if limited < seconds - 1 or limited > elapsed + 2:
        fail("flood: %d rate-limit answers in %d s: expected about one a second" %
             (limited, seconds))
    print("ok flood: %d of %d requests handled, %d 'rate limited' answers (one a second), "
          "the rest dropped" % (denied, sent, limited), flush=True)


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "bad":
        bad(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 5 and sys.argv[1] == "flood":
        flood(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        print(__doc__)
        sys.exit(2)
