# Helpers for tests that damage a replica's drive file (heal_bitrot.sh,
# heal_readrepair.sh), after cluster_lib.sh (sourced, not run: not
# executable). They use D (the cluster directory), SEED, sh (shelf in the
# cluster) and TO (its timeout options) of the test.

# value SIZE FILE: bytes from the seed
value() { python3 -c 'import random, sys
r = random.Random(int(sys.argv[1]) * 7919 + int(sys.argv[2]))
sys.stdout.buffer.write(bytes(r.getrandbits(8) for _ in range(int(sys.argv[2]))))' "$SEED" "$1" >"$2"; }

# holders VALUE: the nodes whose drive holds VALUE's middle bytes
# flip DRIVE VALUE: one byte in the middle of VALUE in DRIVE flipped
# (exactly one intact place holds it); prints the offset
# intact DRIVE VALUE: how many places of DRIVE hold VALUE's middle intact
drive_tool() {
	python3 - "$@" <<'EOF'
import os, sys
op, drive, vfile = sys.argv[1], sys.argv[2], sys.argv[3]
v = open(vfile, "rb").read()
m = len(v) // 2
needle = v[m - 32:m + 32]
def find(fd):
    hits, off, size, ch = [], 0, os.fstat(fd).st_size, 16 << 20
    while off < size:
        try:
            d = os.lseek(fd, off, os.SEEK_DATA)
        except OSError:
            break
        h = os.lseek(fd, d, os.SEEK_HOLE)
        pos = d
        while pos < h:
            buf = os.pread(fd, min(ch + len(needle) - 1, h - pos), pos)
            i = buf.find(needle)
            while 0 <= i < ch:
                hits.append(pos + i)
                i = buf.find(needle, i + 1)
            pos += ch
        off = h
    return hits
fd = os.open(drive, os.O_RDWR if op == "flip" else os.O_RDONLY)
hits = find(fd)
if op == "count":
    print(len(hits))
    sys.exit(0)
if len(hits) != 1:
    sys.exit("the value's middle bytes are at %d places in %s, not 1" % (len(hits), drive))
pos = hits[0] + 32
old = os.pread(fd, 1, pos)[0]
os.pwrite(fd, bytes([old ^ 0x5A]), pos)
os.fsync(fd)
print(pos)
EOF
}
# counter NODE NAME: NODE's counter in `shelf status --json` ("none" if unknown)
counter() {
	local addr
	addr=$(grep -F "slice 'default': address" "$D/$1/log" | tail -1 | sed 's/.* address \([0-9a-f:]*\) on .*/\1/')
	sh status --json "${TO[@]}" 2>/dev/null | python3 -c 'import json, sys
for s in json.load(sys.stdin)["slices"]:
    for m in s["members"]:
        if m["addr"] == sys.argv[1] and m.get("reachable"):
            print(m["counters"].get(sys.argv[2], "none"))
            sys.exit(0)
print("none")' "$addr" "$2"
}

