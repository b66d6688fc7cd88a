"""An independent shelf client, written from docs/PROTOCOL.md alone.

Sections used: 1 (crc32c), 2 (key file, certificates, chain), 4 (map_get /
map), 5 (CURVE DEALER link to the broker), 6.4 (map signatures, slice
encryption), 7 (data plane, MAP from a node), 8 (placement).
Needs Debian's python3-msgpack, python3-zmq and python3-nacl.

    c = Client.from_dir(os.environ["SHELF_CLIENT"], os.environ["SHELF_BROKER"])
    c.put(b"key", b"data"); c.get(b"key")
"""
import hashlib
import hmac
import math
import os
import socket
import stat as statmod
import struct
import time

import msgpack
import zmq
from nacl import bindings as nb


class ShelfError(Exception):
    """A failure; `status` holds the 7.8 code when a node answered one."""

    def __init__(self, msg, status=None):
        super().__init__(msg)
        self.status = status


# ---- section 1: crc32c ------------------------------------------------------
def _crc_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_CRC_T = _crc_table()


def crc32c(data, crc=0):
    """CRC-32C; `crc` is a previous result, to continue over more bytes."""
    c = crc ^ 0xFFFFFFFF
    t = _CRC_T
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


# ---- section 2: identity and certificates -----------------------------------
def key_id(pk):
    return hashlib.blake2b(pk, digest_size=32).digest()[:8]


def fingerprint(pk):
    h = key_id(pk).hex()
    return ":".join(h[i:i + 4] for i in range(0, 16, 4))


class Identity:
    def __init__(self, seed, curve_sk, sign_pk, curve_pk):
        self.seed, self.curve_sk = seed, curve_sk
        self.sign_pk, self.curve_pk = sign_pk, curve_pk


def load_key_file(path):
    """2.1: 136 bytes, mode 0600, magic SHELFID, version 1, public keys match."""
    st = os.lstat(path)
    if not statmod.S_ISREG(st.st_mode):
        raise ShelfError(f"{path}: not a regular file")
    if st.st_mode & 0o077:
        raise ShelfError(f"{path}: group or other may access it: run chmod 600")
    b = open(path, "rb").read()
    if len(b) != 136:
        raise ShelfError(f"{path}: {len(b)} bytes, a key file has 136")
    if b[:7] != b"SHELFID":
        raise ShelfError(f"{path}: wrong magic")
    if b[7] != 1:
        raise ShelfError(f"{path}: key file version {b[7]} is not supported")
    seed, csk, spk, cpk = b[8:40], b[40:72], b[72:104], b[104:136]
    pk, _ = nb.crypto_sign_seed_keypair(seed)
    if pk != spk or nb.crypto_scalarmult_base(csk) != cpk:
        raise ShelfError(f"{path}: stored public keys do not match the secret keys (corrupt)")
    return Identity(seed, csk, spk, cpk)


CERT_FIELDS = ("v", "serial", "id", "curve", "sign", "slices", "groups", "site",
               "chassis", "slot", "role", "not_before", "not_after", "issuer")


class Cert:
    def __init__(self, raw, body_bytes, sig, f):
        self.raw, self.body_bytes, self.sig = raw, body_bytes, sig
        self.__dict__.update(f)


def decode_envelope(raw, limit):
    if len(raw) > limit:
        raise ShelfError(f"signed object of {len(raw)} bytes is over {limit}")
    try:
        env = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as e:
        raise ShelfError(f"signed object does not decode: {e}")
    if (not isinstance(env, list) or len(env) != 2 or not isinstance(env[0], bytes)
            or not isinstance(env[1], bytes) or len(env[1]) != 64):
        raise ShelfError("signed object is not [bin body, bin64 signature]")
    if msgpack.packb(env, use_bin_type=True) != raw:
        raise ShelfError("signed envelope is not canonical")
    return env[0], env[1]


def decode_cert(raw):
    body, sig = decode_envelope(raw, 4096)
    try:
        f = msgpack.unpackb(body, raw=False)
    except Exception as e:
        raise ShelfError(f"certificate body does not decode: {e}")
    if not isinstance(f, dict) or tuple(f.keys()) != CERT_FIELDS:
        raise ShelfError("certificate body has the wrong fields or order")
    if msgpack.packb(f, use_bin_type=True) != body:
        raise ShelfError("certificate body is not canonical")
    if f["v"] != 1:
        raise ShelfError(f"certificate version {f['v']} is not supported")
    for k, n in (("id", 32), ("curve", 32), ("sign", 32), ("issuer", 8)):
        if not isinstance(f[k], bytes) or len(f[k]) != n:
            raise ShelfError(f"certificate field {k} is not bin {n}")
    if f["id"] != f["sign"]:
        raise ShelfError("certificate id differs from sign")
    if not f["not_before"] <= f["not_after"]:
        raise ShelfError("certificate not_before > not_after")
    return Cert(raw, body, sig, f)


def verify_sig(domain, body, sig, pk):
    try:
        nb.crypto_sign_open(sig + domain + b"\0" + body, pk)
        return True
    except Exception:
        return False


def verify_cert(c, issuer_pk, roles, what, now):
    """2.3 steps 4-6 and the role rule of 2.5 (no revocation lists here)."""
    if c.issuer != key_id(issuer_pk):
        raise ShelfError(f"{what} certificate serial {c.serial} was issued by key "
                         f"{':'.join(c.issuer.hex()[i:i+4] for i in range(0, 16, 4))}, "
                         f"not by {fingerprint(issuer_pk)}")
    if not verify_sig(b"shelf-cert-v1", c.body_bytes, c.sig, issuer_pk):
        raise ShelfError(f"{what} certificate serial {c.serial}: bad signature")
    if not c.not_before <= now <= c.not_after:
        raise ShelfError(f"{what} certificate serial {c.serial} expired or not yet valid")
    if c.role not in roles:
        raise ShelfError(f"{what} certificate serial {c.serial} has role {c.role}")


def verify_chain(node_raw, broker_cert, ca_pk, now=None):
    """2.5: CA -> broker certificate -> node certificate."""
    now = int(time.time()) if now is None else now
    verify_cert(broker_cert, ca_pk, ("broker",), "broker", now)
    n = decode_cert(node_raw)
    verify_cert(n, broker_cert.sign, ("node", "client", "admin"), "node", now)
    return n


# ---- sections 4 and 5: map_get over a CURVE DEALER --------------------------
def z85_or_hex_key(text):
    text = text.strip()
    if len(text) == 40:
        from zmq.utils import z85
        return z85.decode(text.encode())
    if len(text) == 64:
        return bytes.fromhex(text)
    raise ShelfError(f"cannot parse key {text!r}")


def map_get(endpoint, broker_curve_pk, ident, slice_name, timeout_ms=5000):
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    try:
        for opt, val in ((zmq.LINGER, 1000), (zmq.IMMEDIATE, 1), (zmq.IPV6, 1),
                         (zmq.MAXMSGSIZE, (64 << 20) + 33), (zmq.HANDSHAKE_IVL, 5000),
                         (zmq.HEARTBEAT_IVL, 5000), (zmq.HEARTBEAT_TIMEOUT, 15000),
                         (zmq.HEARTBEAT_TTL, 15000), (zmq.SNDHWM, 1000),
                         (zmq.RCVHWM, 1000), (zmq.RECONNECT_IVL, 100),
                         (zmq.RECONNECT_IVL_MAX, 10000), (zmq.SNDTIMEO, timeout_ms)):
            s.setsockopt(opt, val)
        s.setsockopt(zmq.CURVE_SERVERKEY, broker_curve_pk)
        s.setsockopt(zmq.CURVE_PUBLICKEY, ident.curve_pk)
        s.setsockopt(zmq.CURVE_SECRETKEY, ident.curve_sk)
        s.connect(endpoint)
        rid = int.from_bytes(os.urandom(4), "big") | 1
        s.send(msgpack.packb({"v": [1, 0], "t": "map_get", "rid": rid,
                              "slice": slice_name}, use_bin_type=True))
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not s.poll(int(left * 1000)):
                raise ShelfError(f"map_get {slice_name}: no answer from {endpoint}")
            frames = s.recv_multipart()
            if len(frames) != 1:
                continue
            m = msgpack.unpackb(frames[0], raw=False)
            if not isinstance(m, dict) or m.get("rid") != rid:
                continue
            if m.get("v", [None])[0] != 1:
                raise ShelfError(f"map: protocol major version {m.get('v')} is not supported")
            if m.get("t") == "error":
                raise ShelfError(f"map_get {slice_name}: error {m.get('code')}: {m.get('message')}")
            if m.get("t") != "map":
                raise ShelfError(f"map_get: unexpected reply {m.get('t')}")
            return m
    finally:
        s.close()


# ---- section 8: placement ---------------------------------------------------
def place_scores(members, key):
    out = []
    for i, m in enumerate(members):
        w = m["capacity"]
        if w <= 0:
            continue
        h = hashlib.blake2b(m["id"] + key, digest_size=8, key=b"shelf-place-v1").digest()
        v = int.from_bytes(h, "big")
        u = ((v >> 11) + 0.5) / 2.0 ** 53
        out.append((-w / math.log(u), i))
    return out


def _distance(a, b):
    da, db = a.get("domain", {}), b.get("domain", {})
    if da.get("site") != db.get("site"):
        return 3
    if da.get("chassis") != db.get("chassis"):
        return 2
    if da.get("slot") != db.get("slot"):
        return 1
    return 0


def place(members, key, replicas=1, for_write=False):
    """Members (dicts of the map) chosen for `key`, primary first."""
    usable = [m for m in members
              if m.get("state") != "out" and (for_write or m.get("state") == "up")]
    scores = place_scores(usable, key)
    chosen = []
    for _ in range(min(replicas, len(scores))):
        best = None
        for sc, i in scores:
            if i in [c for c in chosen]:
                continue
            div = min((_distance(usable[i], usable[c]) for c in chosen), default=3)
            cand = (div, sc, -i)
            if best is None or cand > best[0]:
                best = (cand, i)
        chosen.append(best[1])
    return [usable[i] for i in chosen]


# ---- section 3: a member's address must belong to its key -----------------------
def _field(b):
    return bytes([len(b)]) + b


def slice_addr(site, name, pk, c):
    h = lambda m: hashlib.blake2b(m, digest_size=32).digest()
    sid = h(_field(b"shelf-slice-v1") + _field(site.encode()) + _field(name.encode()))
    for r in range(256):
        iid = h(_field(b"shelf-iid-v1") + _field(sid) + _field(pk)
                + _field(bytes([c])) + _field(bytes([r])))[:8]
        v = int.from_bytes(iid, "big")
        if not (v == 0 or 0x02005efffe000000 <= v <= 0x02005efffeffffff
                or v >= 0xfdffffffffffff80):
            return b"\xfd" + sid[:7] + iid
    return None


def addr_verify(site, name, pk, addr, cmax=2):
    return any(slice_addr(site, name, pk, c) == addr for c in range(cmax + 1))


# ---- section 7: data plane ---------------------------------------------------
HELLO, HELLO_OK, ERROR = 0x01, 0x02, 0x03
PUT, GET, DELETE, STAT, LIST, NODE_STAT, MAP = 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17
DIGEST, HEAL = 0x18, 0x19  # 7.13: node-to-node digest; start a repair pass
HDR = struct.Struct(">4sBBHIQQI")
MAX_META = 16384
MAX_OBJ = 64 << 20
CHUNK = 65536
STATUS = {0: "ok", 1: "bad-request", 2: "auth-failed", 3: "version", 4: "stale-map",
          5: "wrong-slice", 6: "not-found", 7: "no-space", 8: "too-large",
          9: "checksum-mismatch", 10: "busy", 11: "timeout", 12: "read-only",
          13: "internal"}


def H(key, n, m):
    return hashlib.blake2b(m, digest_size=n, key=key).digest()


def header(typ, meta_len, payload_len=0, seq=0, rid=0, flags=0):
    return HDR.pack(b"SHD1", typ, flags, 0, meta_len, payload_len, seq, rid)


def enc_len(n):
    return n + 16 * ((n + CHUNK - 1) // CHUNK)


class Conn:
    """One data-plane connection to one node (7.1)."""

    def __init__(self, client, member, slice_name, timeout=10.0, hello_meta=None):
        """hello_meta: replaces the HELLO meta (tests send bad ones)."""
        self.client, self.member, self.slice = client, member, slice_name
        self.hello_meta = hello_meta
        addr = socket.inet_ntop(socket.AF_INET6, member["addr"])
        self.sock = socket.create_connection((addr, member["port"]), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.tx_seq = self.rx_seq = 0
        self.rid = 0
        self._handshake()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def _recv(self, n):
        buf = bytearray()
        while len(buf) < n:
            b = self.sock.recv(min(n - len(buf), 1 << 20))
            if not b:
                raise ShelfError("connection closed by the node", status=-1)
            buf += b
        return bytes(buf)

    def _read_head(self, mac_key):
        h = self._recv(32)
        magic, typ, flags, res, mlen, plen, seq, rid = HDR.unpack(h)
        if magic != b"SHD1" or res != 0 or flags & ~1:
            raise ShelfError("bad frame header from node")
        if not 1 <= mlen <= MAX_META:
            raise ShelfError(f"meta_len {mlen} out of range")
        meta_b = self._recv(mlen)
        if mac_key is not None:
            mac = self._recv(16)
            if not hmac.compare_digest(mac, H(mac_key, 16, h + meta_b)):
                raise ShelfError("response MAC does not verify")
            if seq != self.rx_seq:
                raise ShelfError(f"response seq {seq}, expected {self.rx_seq}")
            self.rx_seq += 1
        meta = msgpack.unpackb(meta_b, raw=False)
        if not isinstance(meta, dict):
            raise ShelfError("meta is not a map")
        return h, typ, flags, plen, rid, meta

    def _handshake(self):
        c = self.client
        self.cn = os.urandom(32)
        hm = {"v": [1, 0], "cert": c.cert_raw, "nonce": self.cn}
        if self.slice is not None:
            hm["slice"] = self.slice
        if self.hello_meta is not None:
            hm = self.hello_meta(hm)
            self.cn = hm.get("nonce", self.cn)
        m = msgpack.packb(hm, use_bin_type=True)
        hello = header(HELLO, len(m)) + m
        self.sock.sendall(hello)
        h, typ, flags, plen, rid, meta = self._read_head(None)
        if typ == ERROR:
            raise ShelfError(f"node refused hello: {STATUS.get(meta.get('code'), meta.get('code'))}: "
                             f"{meta.get('message')}", status=meta.get("code"))
        if typ != HELLO_OK or plen != 0 or HDR.unpack(h)[6] != 0 or rid != 0:
            raise ShelfError(f"unexpected handshake frame type {typ:#x}")
        v = meta.get("v")
        if not isinstance(v, list) or len(v) != 2 or v[0] != 1:
            raise ShelfError(f"hello_ok: protocol version {v} is not supported")
        ncert_raw, sn, proof = meta.get("cert"), meta.get("nonce"), meta.get("proof")
        if not (isinstance(ncert_raw, bytes) and isinstance(sn, bytes) and len(sn) == 32
                and isinstance(proof, bytes) and len(proof) == 16):
            raise ShelfError("hello_ok: malformed meta")
        ncert = verify_chain(ncert_raw, c.broker_cert, c.ca_pk)
        if ncert.role != "node":
            raise ShelfError(f"peer certificate has role {ncert.role}, not node")
        if self.member.get("id") is not None and (ncert.id != self.member["id"]
                                                  or ncert.curve != self.member["curve_key"]):
            raise ShelfError("node certificate is not the slice map's member")
        self.node_cert = ncert
        rx, tx = nb.crypto_kx_client_session_keys(c.ident.curve_pk, c.ident.curve_sk, ncert.curve)
        d = lambda k, label: H(k, 32, b"shelf-wire-v1\0" + label + b"\0" + self.cn + sn)
        self.mac_c2s, self.aead_c2s = d(tx, b"c2s-mac"), d(tx, b"c2s-aead")
        self.mac_s2c, self.aead_s2c = d(rx, b"s2c-mac"), d(rx, b"s2c-aead")
        want = H(self.mac_s2c, 16, b"shelf-wire-v1\0proof\0" + hello + ncert_raw + sn)
        if not hmac.compare_digest(want, proof):
            raise ShelfError("hello_ok: proof does not verify")

    # -- requests
    def send_request(self, typ, meta, payload=b"", encrypt=False, tamper_mac=False,
                     tamper_chunk=None):
        self.rid = (self.rid + 1) & 0xFFFFFFFF or 1
        m = msgpack.packb(meta, use_bin_type=True)
        if len(m) > MAX_META:
            raise ShelfError("meta too large")
        plen = enc_len(len(payload)) if encrypt else len(payload)
        seq = self.tx_seq
        h = header(typ, len(m), plen, seq, self.rid, 1 if encrypt else 0)
        mac = H(self.mac_c2s, 16, h + m)
        if tamper_mac:
            mac = bytes([mac[0] ^ 1]) + mac[1:]
        self.tx_seq += 1
        self.sock.sendall(h + m + mac)
        if encrypt:
            for i in range(0, len(payload), CHUNK):
                nonce = b"\x01" + (i // CHUNK).to_bytes(3, "big") + h[20:28]
                ct = nb.crypto_aead_chacha20poly1305_ietf_encrypt(
                    payload[i:i + CHUNK], h, nonce, self.aead_c2s)
                if tamper_chunk == i // CHUNK:
                    ct = bytes([ct[0] ^ 1]) + ct[1:]
                self.sock.sendall(ct)
        elif payload:
            mv = memoryview(payload)
            for i in range(0, len(payload), 1 << 20):
                self.sock.sendall(mv[i:i + (1 << 20)])
        return self.rid

    def read_response(self, req_type, rid):
        h, typ, flags, plen, rrid, meta = self._read_head(self.mac_s2c)
        self.last_flags = flags
        if typ != req_type | 0x80:
            raise ShelfError(f"response type {typ:#x} to request {req_type:#x}")
        if rrid != rid:
            raise ShelfError(f"response rid {rrid}, expected {rid}")
        for k in ("status", "message", "epoch"):
            if k not in meta:
                raise ShelfError(f"response without {k}")
        if plen and typ not in (GET | 0x80, LIST | 0x80, MAP | 0x80, DIGEST | 0x80):
            raise ShelfError("payload on a response type without one")
        if plen > (MAX_OBJ + 16 * 1024 if flags & 1 else MAX_OBJ):
            raise ShelfError("payload too long")
        if flags & 1:
            if plen % (CHUNK + 16) not in (0,) and plen % (CHUNK + 16) <= 16:
                raise ShelfError("encrypted payload length is not a run of chunks")
            out, i, left = bytearray(), 0, plen
            while left:
                n = min(left, CHUNK + 16)
                ct = self._recv(n)
                nonce = b"\x02" + i.to_bytes(3, "big") + h[20:28]
                try:
                    out += nb.crypto_aead_chacha20poly1305_ietf_decrypt(ct, h, nonce, self.aead_s2c)
                except Exception:
                    self.close()
                    raise ShelfError(f"payload chunk {i} fails its tag")
                left -= n
                i += 1
            payload = bytes(out)
        else:
            payload = self._recv(plen) if plen else b""
        return meta, payload

    def request(self, typ, meta, payload=b"", encrypt=False, epoch=None):
        full = {"slice": self.slice,
                "epoch": self.client.epoch(self.slice) if epoch is None else epoch}
        full.update(meta)
        rid = self.send_request(typ, full, payload, encrypt)
        meta, payload = self.read_response(typ, rid)
        st = meta["status"]
        if st != 0:
            if payload:
                raise ShelfError("payload on a failed response")
            raise ShelfError(f"{STATUS.get(st, st)}: {meta.get('message')}", status=st)
        return meta, payload


# ---- section 6.4: map signatures ----------------------------------------------
def map_sig_input(m):
    """The bytes a broker signs for map m (a decoded `map` message)."""
    return b"shelf-map-v1\0" + map_sig_body(m)


def map_sig_body(m):
    mem = sorted(m["members"], key=lambda x: x["id"])
    arr = [m["slice"], m["epoch"], m["replicas"], bool(m.get("encrypt", False)),
           [[x["id"], x["curve_key"], x["addr"], x["port"], x["domain"]["site"],
             x["domain"]["chassis"], x["domain"]["slot"], x["capacity"],
             x["state"] if x["state"] in ("up", "down", "out") else "unknown",
             x.get("cert", b"")] for x in mem]]
    left = sorted(m.get("left") or [], key=lambda x: x["id"])
    w = m.get("min_write_replicas", 0)
    cs = m.get("chunk_size", 0)
    if left or w or cs:
        # removal records (1.3) are signed only when present (or W follows):
        # older maps sign as before
        arr.append([[x["id"], x["epoch"],
                     x["reason"] if x["reason"] in ("expired", "revoked", "deleted") else "unknown"]
                    for x in left])
    if w or cs:
        # min_write_replicas (1.5): a seventh element, only when the map carries it
        # (or a chunk_size follows it: then 0 when absent)
        arr.append(w)
    if cs:
        # chunk_size (1.6): an eighth element, only when the map carries it
        arr.append(cs)
    return msgpack.packb(arr, use_bin_type=True)


def verify_map(m, broker_sign_pk):
    sig = m.get("sig")
    if not isinstance(sig, bytes) or len(sig) != 64:
        raise ShelfError(f"map {m.get('slice')} epoch {m.get('epoch')}: not signed by a broker")
    if not verify_sig(b"shelf-map-v1", map_sig_body(m), sig, broker_sign_pk):
        raise ShelfError(f"map {m.get('slice')} epoch {m.get('epoch')}: signature does not verify")


class Client:
    def __init__(self, ident, cert_raw, broker_cert, ca_pk, broker_curve_pk, broker_endpoint):
        self.ident, self.cert_raw = ident, cert_raw
        self.broker_cert, self.ca_pk = broker_cert, ca_pk
        self.broker_curve_pk, self.broker_endpoint = broker_curve_pk, broker_endpoint
        self.maps = {}
        self.encrypt = False

    @classmethod
    def from_dir(cls, d, broker_endpoint):
        ident = load_key_file(os.path.join(d, "id.key"))
        cert_raw = open(os.path.join(d, "client.cert"), "rb").read()
        mine = decode_cert(cert_raw)
        if mine.sign != ident.sign_pk or mine.curve != ident.curve_pk:
            raise ShelfError("client.cert does not name id.key's keys")
        bc = decode_cert(open(os.path.join(d, "broker.cert"), "rb").read())
        ca_pk = bytes.fromhex(open(os.path.join(d, "ca.pub")).read().strip())
        verify_cert(bc, ca_pk, ("broker",), "broker", int(time.time()))
        verify_cert(mine, bc.sign, ("node", "client", "admin"), "client", int(time.time()))
        bpub = z85_or_hex_key(open(os.path.join(d, "broker.pub")).read())
        if bpub != bc.curve:
            raise ShelfError("broker.pub is not the broker certificate's curve key")
        c = cls(ident, cert_raw, bc, ca_pk, bpub, broker_endpoint)
        c.site = mine.site  # the site id of section 3 (the map carries none)
        return c

    def fetch_map(self, slice_name):
        m = map_get(self.broker_endpoint, self.broker_curve_pk, self.ident, slice_name)
        if m.get("ts"):
            # the broker's timestamp token (2.6): verify it with the broker's key
            body, sig = decode_envelope(m["ts"], 256)
            if not verify_sig(b"shelf-time-v1", body, sig, self.broker_cert.sign):
                raise ShelfError("map: ts does not verify under the broker key")
        return self.accept_map(slice_name, m)

    def accept_map(self, slice_name, m):
        """Check a map from any source (6.4, 3.5); keep it unless an older epoch."""
        if m.get("t") != "map" or m.get("slice") != slice_name:
            raise ShelfError(f"expected the map of slice {slice_name}")
        verify_map(m, self.broker_cert.sign)
        for mem in m["members"]:
            if not addr_verify(self.site, slice_name, mem["id"], mem["addr"]):
                raise ShelfError(f"map: member {mem['id'].hex()} address does not belong to its key")
        old = self.maps.get(slice_name)
        if old is None or old["epoch"] <= m["epoch"]:
            self.maps[slice_name] = m
        return self.maps[slice_name]

    def map_from_node(self, slice_name, addr, port=7480):
        """MAP (7.7) from the node at addr: the broker-signed map it holds."""
        with Conn(self, {"addr": socket.inet_pton(socket.AF_INET6, addr), "port": port},
                  slice_name) as c:
            r, payload = c.request(MAP, {}, epoch=0)
            if crc32c(payload) != r.get("crc"):
                raise ShelfError("map: payload crc mismatch")
            m = msgpack.unpackb(payload, raw=False)
            return self.accept_map(slice_name, m)

    def map(self, slice_name):
        return self.maps.get(slice_name) or self.fetch_map(slice_name)

    def epoch(self, slice_name):
        return self.map(slice_name)["epoch"]

    def primary(self, slice_name, key, for_write):
        m = self.map(slice_name)
        p = place(m["members"], key, m.get("replicas", 1) or 1, for_write)
        if not p:
            raise ShelfError(f"slice {slice_name}: no member to place {key!r} on")
        return p[0]

    def connect(self, slice_name, member, **kw):
        return Conn(self, member, slice_name, **kw)

    def _op(self, slice_name, key, for_write, fn):
        """Run fn(conn) on the primary; on stale-map fetch the map and retry once."""
        for attempt in range(2):
            member = self.primary(slice_name, key, for_write)
            with self.connect(slice_name, member) as c:
                try:
                    return fn(c)
                except ShelfError as e:
                    if e.status == 4 and attempt == 0:
                        self.fetch_map(slice_name)
                        continue
                    raise

    def put(self, key, data, slice_name="default"):
        meta = {"key": key, "size": len(data), "crc": crc32c(data)}

        enc = self.encrypt or bool(self.map(slice_name).get("encrypt"))

        def fn(c):
            r, _ = c.request(PUT, meta, data, enc)
            if r.get("size") != len(data) or r.get("crc") != meta["crc"]:
                raise ShelfError(f"put: node stored size {r.get('size')} crc {r.get('crc')}")
            return r
        return self._op(slice_name, key, True, fn)

    def get(self, key, slice_name="default", offset=None, length=None):
        meta = {"key": key}
        if offset is not None:
            meta.update(offset=offset, length=length)

        def fn(c):
            r, payload = c.request(GET, meta)
            if crc32c(payload) != r.get("crc"):
                raise ShelfError("get: payload crc32c does not match the response's crc")
            if offset is None and len(payload) != r.get("size"):
                raise ShelfError("get: payload length differs from size")
            return payload
        return self._op(slice_name, key, False, fn)

    def stat(self, key, slice_name="default"):
        return self._op(slice_name, key, False,
                        lambda c: c.request(STAT, {"key": key})[0])

    def delete(self, key, slice_name="default"):
        return self._op(slice_name, key, True,
                        lambda c: c.request(DELETE, {"key": key})[0])

    def list_node(self, member, slice_name="default", prefix=b"", limit=None):
        """LIST on one node, paging with `after`."""
        keys, after = [], None
        with self.connect(slice_name, member) as c:
            while True:
                meta = {}
                if prefix:
                    meta["prefix"] = prefix
                if after is not None:
                    meta["after"] = after
                if limit:
                    meta["limit"] = limit
                r, payload = c.request(LIST, meta)
                if crc32c(payload) != r.get("crc"):
                    raise ShelfError("list: payload crc mismatch")
                got = msgpack.unpackb(payload, raw=False) if payload else []
                if len(got) != r.get("count"):
                    raise ShelfError("list: count differs from the payload")
                keys += got
                if not r.get("more") or not got:
                    return keys
                after = got[-1]

    def list(self, slice_name="default", prefix=b""):
        m = self.map(slice_name)
        allk = set()
        for mem in m["members"]:
            if mem.get("state") == "up":
                allk.update(self.list_node(mem, slice_name, prefix))
        return sorted(allk)
