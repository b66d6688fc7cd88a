#!/bin/bash
# Cross-checks the data-plane key schedule, proof, MAC and chunk encryption
# of overlay/ovl_wire.c against docs/PROTOCOL.md section 7, recomputed with
# independent code (Python hashlib and the cryptography package, not
# libsodium) from the frames tests/prog/wire_vectors produces.
set -u
cd "$(dirname "$0")/../.."
PY=/usr/bin/python3
B=${SHELF_BUILD:-$PWD/build}
if [ ! -x "$PY" ] || ! "$PY" -c 'import cryptography.hazmat.primitives.ciphers.aead' 2>/dev/null; then
	echo "skipped: $PY with the cryptography module (Debian python3-cryptography) is not installed"
	exit 77
fi
"$B/tests/prog/wire_vectors" | "$PY" -c "$(cat <<'PYEOF'
# Independent check of docs/PROTOCOL.md section 7 (hashlib + cryptography,
# not libsodium): recompute kx, keys, proof, MAC and the chunk.
import hashlib, sys
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
v = dict(l.strip().split('=') for l in sys.stdin)
b = {k: bytes.fromhex(x) for k, x in v.items()}
H = lambda key, n, m: hashlib.blake2b(m, digest_size=n, key=key).digest()
q = X25519PrivateKey.from_private_bytes(b['csk']).exchange(X25519PublicKey.from_public_bytes(b['spk']))
kk = hashlib.blake2b(q + b['cpk'] + b['spk'], digest_size=64).digest()
rx, tx = kk[:32], kk[32:]            # crypto_kx_client_session_keys
hello, ok = b['hello'], b['hellook']
def field(meta, name, n):            # the bin of length n after key `name` (test helper, not a parser)
    i = meta.index(bytes([0xa0 | len(name)]) + name.encode()) + 1 + len(name)
    if meta[i] == 0xc4: ln = meta[i+1]; return meta[i+2:i+2+ln]
    assert meta[i] == 0xc5; ln = int.from_bytes(meta[i+1:i+3], 'big'); return meta[i+3:i+3+ln]
cn = field(hello[32:], 'nonce', 32); sn = field(ok[32:], 'nonce', 32); scert = field(ok[32:], 'cert', 0)
proof = field(ok[32:], 'proof', 16)
der = lambda K, label: H(K, 32, b'shelf-wire-v1\0' + label + b'\0' + cn + sn)
mac_c2s, aead_c2s, mac_s2c = der(tx, b'c2s-mac'), der(tx, b'c2s-aead'), der(rx, b's2c-mac')
assert H(mac_s2c, 16, b'shelf-wire-v1\0proof\0' + hello + scert + sn) == proof, 'proof'
head = b['head']; ml = int.from_bytes(head[8:12], 'big')
assert H(mac_c2s, 16, head[:32 + ml]) == head[32 + ml:], 'mac'
seq = head[20:28]
nonce = bytes([1]) + (0).to_bytes(3, 'big') + seq
pt = ChaCha20Poly1305(aead_c2s).decrypt(nonce, b['payload'], head[:32])
assert pt == bytes(range(100)), 'aead'
print('section 7 cross-check: proof, MAC, AEAD chunk all match')
PYEOF
)"
