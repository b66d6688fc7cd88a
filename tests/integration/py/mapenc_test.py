"""Checks run by tests/integration/mapenc.sh inside the cluster's backplane,
with the independent client of shelf_client.py (written from PROTOCOL.md):
per-slice encryption (6.4, 7.6, 7.7) and maps from nodes (MAP, 7.7).

argv: work directory, mode. Prints what it checked; exits 1 on a mismatch.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shelf_client import Client, ShelfError, crc32c, place, PUT, GET

work, mode = sys.argv[1], sys.argv[2]


def fail(why):
    print("FAIL:", why)
    sys.exit(1)


c = Client.from_dir(os.environ["SHELF_CLIENT"], os.environ.get("SHELF_BROKER", ""))

if mode == "enc":
    m = c.fetch_map("enc")
    if m.get("encrypt") is not True:
        fail(f"map of slice enc does not say encrypt: {m.get('encrypt')!r}")
    if c.fetch_map("default").get("encrypt"):
        fail("map of slice default says encrypt")
    print(f"maps: enc epoch {m['epoch']} encrypt true, signature verifies; default: not encrypted")
    data = os.urandom(150000)
    member = place(m["members"], b"py/plain", for_write=True)[0]
    with c.connect("enc", member) as conn:
        try:
            conn.request(PUT, {"key": b"py/plain", "size": len(data), "crc": crc32c(data)}, data)
            fail("plaintext PUT on slice enc was accepted")
        except ShelfError as e:
            if e.status != 1 or "requires encrypted payloads" not in str(e):
                fail(f"plaintext PUT on enc: {e}")
            print(f"plaintext PUT on enc refused: {e}")
    c.put(b"py/enc", data, slice_name="enc")  # the map says encrypt: sent as chunks
    member = place(m["members"], b"py/enc")[0]
    with c.connect("enc", member) as conn:
        rid = conn.send_request(GET, {"slice": "enc", "epoch": m["epoch"], "key": b"py/enc"})
        r, payload = conn.read_response(GET, rid)
        if not conn.last_flags & 1:
            fail("GET on slice enc came back without the encrypted flag")
        if payload != data or crc32c(payload) != r["crc"]:
            fail("GET on slice enc: different bytes")
    print("PUT encrypted (3 chunks), GET answered encrypted (flag bit 0) and decrypts: ok")
    open(os.path.join(work, "py-enc.expect"), "wb").write(data)

elif mode == "cli-enc":
    want = open(os.path.join(work, "cli-enc"), "rb").read()
    if c.get(b"cli/cli-enc", slice_name="enc") != want:
        fail("Python read cli/cli-enc (put by the C CLI) differently")
    print("Python GET of cli/cli-enc (C CLI PUT, encrypted): ok")

elif mode == "node-map":
    addr, want_epoch = sys.argv[3], int(sys.argv[4])
    m = c.map_from_node("default", addr)
    if m["epoch"] != want_epoch:
        fail(f"node {addr} gave epoch {m['epoch']}, the broker {want_epoch}")
    print(f"MAP from node {addr}: slice default epoch {m['epoch']}, broker signature verifies")
    # a signature that does not match is refused
    m2 = dict(m)
    m2["epoch"] += 1
    try:
        c.accept_map("default", m2)
        fail("a map with a changed epoch was accepted")
    except ShelfError as e:
        print(f"map with its epoch changed: refused ({e})")
