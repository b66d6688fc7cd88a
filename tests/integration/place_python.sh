#!/bin/bash
# Recomputes the placement known answers of docs/PROTOCOL.md section 8.1
# from the section's formula with independent code (Python hashlib, not
# libsodium), reading the members and the expected orders from the
# document itself; tests/unit/test_place.c checks the same table against
# ovl_place, so the document, the code and an outside client agree.
set -u
cd "$(dirname "$0")/../.."
PY=/usr/bin/python3
[ -x "$PY" ] || { echo "skipped: $PY is not installed"; exit 77; }
exec "$PY" - docs/PROTOCOL.md <<'PYEOF'
import hashlib, math, re, sys
doc = open(sys.argv[1], encoding='utf-8').read()
sec = doc[doc.index('### 8.1 Known answers'):]
members = []
for m in re.finditer(r'^\| (\d) \| (\w+) \| (\w+) \| (\w+) \| (\d+) \|$', sec, re.M):
    i = int(m.group(1))
    members.append(dict(id=bytes([0x10 + i]) * 32, site=m.group(2).encode(),
                        chassis=m.group(3).encode(), slot=m.group(4).encode(),
                        w=int(m.group(5)) << 40))
cases = [(bytes.fromhex(m.group(1)), [int(x) for x in m.group(2).split()])
         for m in re.finditer(r'^\| `([0-9a-f]+)`[^|]*\| ([\d ]+) \|$', sec, re.M)]
assert len(members) == 6 and len(cases) == 4, (len(members), len(cases))

def score(m, key):
    if m['w'] == 0:
        return None
    h = hashlib.blake2b(m['id'] + key, digest_size=8, key=b'shelf-place-v1').digest()
    u = ((int.from_bytes(h, 'big') >> 11) + 0.5) / 2**53
    return -m['w'] / math.log(u)

def place(mem, key, r):
    sc = [score(m, key) for m in mem]
    out = []
    while len(out) < r:
        best = None
        for i, m in enumerate(mem):
            if sc[i] is None or i in out:
                continue
            level = 3
            for j in out:
                c = mem[j]
                level = min(level, 3 if c['site'] != m['site'] else
                            2 if c['chassis'] != m['chassis'] else
                            1 if c['slot'] != m['slot'] else 0)
            k = (level, sc[i], [-b for b in m['id']])
            if best is None or k > best[0]:
                best = (k, i)
        if best is None:
            break
        out.append(best[1])
    return out

bad = 0
for key, want in cases:
    for r in (6, 3):
        got = place(members, key, r)
        if got != want[:r]:
            print(f'FAIL key {key.hex()} R={r}: computed {got}, the document says {want[:r]}')
            bad += 1
    # the map's member order does not matter
    rev = list(reversed(members))
    got = [5 - i for i in place(rev, key, 6)]
    if got != want:
        print(f'FAIL key {key.hex()}: reversed member order gives {got}')
        bad += 1
print('ok: %d placement vectors recomputed from docs/PROTOCOL.md 8.1' % len(cases) if not bad else '')
sys.exit(1 if bad else 0)
PYEOF
