#!/bin/bash
# Large objects (issue 15, "Large objects" and "Tests") on a 4-node cluster
# (2 chassis, R=2, chunk size 16 MiB), through `shelf put KEY FILE` and
# `shelf get KEY FILE` (streamed):
# - objects of 0 B, 16 MiB - 1, 16 MiB, 16 MiB + 1, 100 MiB and 1 GiB put
#   from a file and read back byte for byte, with range reads across chunk
#   boundaries; stat gives the object's size, ls lists the key once and no
#   chunk; the client's peak RSS (/usr/bin/time -v) during the 1 GiB PUT
#   and GET stays under RSS_BOUND_MIB;
# - the same (16 MiB + 1, 100 MiB) on an encrypted slice with a 1 MiB chunk
#   size (the slice setting: refused when bad, signed into the map);
# - an overwrite of a large object while other clients read it: each read
#   gives the old bytes or the new ones, never a mix;
# - a PUT SIGKILLed halfway leaves no visible object, and its intent names
#   its chunks for the collectors;
# - bad input: a manifest naming a missing chunk, a chunk with wrong bytes
#   (written through the protocol), and crafted manifests (overlapping
#   chunks, an enormous count, a bad crc): clear errors naming the chunk or
#   the damage, exit 1, never bytes, and no partial file left behind;
# - the asynchronous calls on large objects (large_tool): shelf_get_async
#   of a 2-chunk object whole and across its boundary, of a range of a
#   100 MiB one, of a plain object whose size a manifest could have; the
#   whole 100 MiB one refused (-EFBIG naming shelf_get_fd); shelf_get_batch
#   of large, plain, missing and too-large keys;
# - 8 chunks in flight (shelf_set_inflight, through large_tool): 400 MiB
#   byte for byte, the client's peak RSS under 8 chunks + INFLIGHT_BASE_MIB
#   (well below the object's size: memory is bounded by the window);
# - a node SIGKILLed during a slow large GET on the R=2 slice: the GET
#   completes from the replicas, byte for byte.
# Temporary files live in /dev/shm when it has room (sparse-free and fast),
# else in the cluster's directory; both are removed on exit.
set -u
. "$(dirname "$0")/cluster_lib.sh"
cluster_test lg shelf-large
fail() { echo "FAIL: $*"; exit 1; }
B=$SHELF_CLUSTER_DIR/broker
BIN=${SHELF_BUILD:-$SRC/build}
[ -x "$BIN/shelf-broker" ] || { echo "skipped: no broker build"; exit 77; }
LT=$BIN/tests/prog/large_tool
MIB=$((1 << 20))
# the san build's RSS includes ASan's shadow and allocator; the chunks in
# flight are 16 MiB each
RSS_BOUND_MIB=${RSS_BOUND_MIB:-192}
if [ "$(df --output=avail -k /dev/shm 2>/dev/null | tail -1)" -gt $((3 << 20)) ] 2>/dev/null; then
	T=$(mktemp -d /dev/shm/shelf-large-XXXXXX)
else
	T=$SHELF_CLUSTER_DIR/t; mkdir -p "$T"
fi
trap '"$C" down --wipe >/dev/null 2>&1; rm -rf "$SHELF_CLUSTER_DIR" "$T"' EXIT
x() { "$C" exec -- "$@"; }
sh() { x shelf "$@" --timeout 60000; }
tool() { x "$LT" "$SHELF_CLIENT" "tcp://[fd00:5e1f:0:1::1]:7400" default "$@"; }

"$C" up --nodes 4 --chassis 2 --replicas 2 --drive-size 4G >"$T/up.log" 2>&1 ||
	fail "cluster up: $(tail -n 3 "$T/up.log")"
for _ in $(seq 100); do
	[ "$(grep -l "slice 'default': address" "$SHELF_CLUSTER_DIR"/n*/log | wc -l)" = 4 ] && break
	sleep 0.1
done

# ---- the slice setting -------------------------------------------------------
for bad in 1000 512K 65M 1048577 17M+1; do
	out=$(x shelf slice create bad --replicas 1 --chunk-size "$bad" 2>&1) &&
		fail "--chunk-size $bad accepted"
	grep -q -- "--chunk-size.*1M..64M" <<<"$out" || fail "--chunk-size $bad: $out"
done
x shelf slice create enc --replicas 1 --encrypt --chunk-size 1M | grep -q "chunk size 1048576" ||
	fail "slice create --chunk-size 1M"
grep -q "^enc 1 .* encrypt.* chunk_size=1048576$" "$B/state/slices" ||
	fail "state/slices: $(cat "$B/state/slices")"
x shelf slices --json | grep -q '"name": "enc".*"chunk_size": 1048576' || fail "slices --json"
x shelf slices --json | grep -q '"name": "default".*"chunk_size": 16777216' ||
	fail "slices --json (default)"
"$BIN/shelf-broker" client --dir "$B" --name t --slices default,enc >/dev/null ||
	fail "issue client t"
export SHELF_CLIENT=$B/clients/t
for _ in $(seq 100); do
	[ "$(grep -l "slice 'enc': address" "$SHELF_CLUSTER_DIR"/n*/log | wc -l)" = 4 ] && break
	sleep 0.1
done
echo "chunk_size: bad values refused, 1M on an encrypted slice persisted and listed"

# ---- sizes, byte for byte, with ranges across chunk boundaries ----------------
mk() { head -c "$2" /dev/urandom >"$T/$1"; }
# check KEY FILE [SLICE]: get whole, stat size, ranges across boundaries
check() {
	local k=$1 f=$2 sl=${3:-default} size cs=$((16 * MIB)) r a b
	[ "$sl" = enc ] && cs=$MIB
	size=$(stat -c %s "$f")
	sh get "$k" "$T/back" --slice "$sl" || fail "get $k ($sl)"
	cmp -s "$f" "$T/back" || fail "$k ($sl) came back different"
	rm -f "$T/back"
	sh stat "$k" --slice "$sl" --json | grep -q "\"size\": $size," ||
		fail "stat $k: $(sh stat "$k" --slice "$sl" --json)"
	[ "$size" -gt 2 ] || return 0
	for r in "$((cs - 7))-$((cs + 8))" "1-$((size - 2))" "$((size - 3))-" \
		 "$((cs - 1))-$((cs - 1))" "$((cs * 3 - 5))-$((cs * 5 + 6))"; do
		a=${r%-*}; b=${r#*-}
		[ "$a" -lt "$size" ] || continue
		[ -n "$b" ] && [ "$b" -ge "$size" ] && b=$((size - 1))
		[ -z "$b" ] && b=$((size - 1))
		sh get "$k" --range "$a-$b" --slice "$sl" >"$T/range" || fail "get $k --range $a-$b"
		cmp -s "$T/range" <(tail -c +$((a + 1)) "$f" | head -c $((b - a + 1))) ||
			fail "$k ($sl) --range $a-$b differs"
	done
	rm -f "$T/range"
}
for spec in 0:0 m1:$((16 * MIB - 1)) eq:$((16 * MIB)) p1:$((16 * MIB + 1)) h:$((100 * MIB)); do
	n=${spec%%:*}; s=${spec#*:}
	mk "$n" "$s"
	sh put "big/$n" "$T/$n" || fail "put big/$n ($s bytes)"
	check "big/$n" "$T/$n"
	echo "$s bytes: put, get, stat and ranges: ok"
done
[ "$(sh ls big/ | tr '\n' ' ')" = "big/0 big/eq big/h big/m1 big/p1 " ] ||
	fail "ls big/: $(sh ls big/ | tr '\n' ' ')"
[ "$(sh ls | grep -c .)" = 5 ] || fail "ls shows more than the 5 keys: $(sh ls | head)"
tool manifest big/h | grep -q "^id [0-9a-f]* n 7 size $((100 * MIB)) chunk_size $((16 * MIB))$" ||
	fail "big/h's manifest: $(tool manifest big/h | head -1)"
tool manifest big/eq >/dev/null 2>&1 && fail "16 MiB exactly was stored as a manifest"
sh stat big/h | grep -q "^chunked  yes" || fail "stat does not say big/h is chunked"
echo "ls lists each key once, no chunk; 16 MiB is one object, 100 MiB 7 chunks"

# ---- the asynchronous calls on large objects ----------------------------------
part() { tail -c +$(($2 + 1)) "$1" | head -c "$3"; }
tool async-get big/p1 0 - "$T/a" | grep -q "^total $((16 * MIB + 1))$" || fail "async-get big/p1"
cmp -s "$T/a" "$T/p1" || fail "async-get of a 2-chunk object gave other bytes"
tool async-get big/p1 $((16 * MIB - 7)) 16 "$T/a" >/dev/null || fail "async-get big/p1 range"
cmp -s "$T/a" <(part "$T/p1" $((16 * MIB - 7)) 16) || fail "async range across the boundary"
tool async-get big/h $((60 * MIB + 3)) $((8 * MIB)) "$T/a" | grep -q "^total $((100 * MIB))$" ||
	fail "async-get big/h range"
cmp -s "$T/a" <(part "$T/h" $((60 * MIB + 3)) $((8 * MIB))) || fail "async range of 100 MiB"
head -c 84 /dev/urandom >"$T/p84"
sh put small/84 "$T/p84" || fail "put small/84"
tool async-get small/84 10 20 "$T/a" | grep -q "^total 84$" || fail "async-get small/84 range"
cmp -s "$T/a" <(part "$T/p84" 10 20) || fail "async range of a plain 84-byte object"
out=$(tool async-get big/h 0 - "$T/a" 2>&1) && fail "an async GET of 100 MiB was given"
grep -q "big/h': 104857600 bytes, more than the 64 MiB .*shelf_get_fd()" <<<"$out" ||
	fail "async-get of 100 MiB: $out"
mkdir -p "$T/bt"
out=$(tool batch-get "$T/bt" big/p1 big/eq big/none big/h) || fail "batch-get: $out"
cmp -s "$T/bt/0" "$T/p1" && cmp -s "$T/bt/1" "$T/eq" || fail "batch-get gave other bytes"
grep -q "^2 -2 " <<<"$out" && grep -q "^3 -27 get 'big/h': .*shelf_get_fd()" <<<"$out" ||
	fail "batch-get: missing and too-large items: $out"
rm -rf "$T/bt" "$T/a" "$T/p84"
echo "async GET and get_batch of large objects: whole, ranges across chunks, -EFBIG over 64 MiB"

# the encrypted slice, 1 MiB chunks
for n in p1 h; do
	sh put "enc/$n" "$T/$n" --slice enc || fail "put enc/$n"
	check "enc/$n" "$T/$n" enc
done
x "$LT" "$SHELF_CLIENT" "tcp://[fd00:5e1f:0:1::1]:7400" enc manifest enc/h | grep -q " n 100 size " ||
	fail "enc/h is not 100 chunks of 1 MiB"
echo "encrypted slice, chunk size 1 MiB: 16 MiB + 1 and 100 MiB byte for byte, with ranges"

# ---- 1 GiB, with the client's peak RSS ---------------------------------------
mk g $((1024 * MIB))
rss() { sed -n 's/.*Maximum resident set size (kbytes): //p' "$1"; }
ASAN_OPTIONS=${ASAN_OPTIONS:-}:quarantine_size_mb=8:malloc_context_size=2 \
	x /usr/bin/time -v -o "$T/put.time" shelf put big/g "$T/g" --timeout 60000 ||
	fail "put of 1 GiB: $(tail -3 "$T/put.time")"
ASAN_OPTIONS=${ASAN_OPTIONS:-}:quarantine_size_mb=8:malloc_context_size=2 \
	x /usr/bin/time -v -o "$T/get.time" shelf get big/g "$T/g.back" --timeout 60000 ||
	fail "get of 1 GiB: $(tail -3 "$T/get.time")"
cmp -s "$T/g" "$T/g.back" || fail "1 GiB came back different"
rm -f "$T/g.back"
pr=$(rss "$T/put.time"); gr=$(rss "$T/get.time")
echo "1 GiB: client peak RSS put $((pr / 1024)) MiB, get $((gr / 1024)) MiB (bound $RSS_BOUND_MIB MiB)"
[ "$pr" -lt $((RSS_BOUND_MIB * 1024)) ] && [ "$gr" -lt $((RSS_BOUND_MIB * 1024)) ] ||
	fail "client RSS above $RSS_BOUND_MIB MiB"
check big/g "$T/g" >/dev/null
echo "1 GiB: byte for byte, with ranges"
rm -f "$T/g"
sh rm big/g || fail "rm big/g"
sh get big/g "$T/x" 2>/dev/null; [ $? = 3 ] || fail "big/g still readable after rm"
[ ! -e "$T/x" ] || fail "a failed get left a file"
tool intents | grep -q "key=big/g$" || fail "rm of a large object wrote no intent"

# ---- an overwrite while others read: old or new, never a mix -----------------
mk v1 $((40 * MIB)); mk v2 $((40 * MIB))
sh put ow/x "$T/v1" || fail "put ow/x v1"
for r in 1 2 3; do
	(
		for i in $(seq 6); do
			sh get ow/x "$T/r$r.$i" 2>"$T/r$r.$i.err" || echo "read failed: $(cat "$T/r$r.$i.err")"
		done
	) >"$T/reader$r.log" &
done
for v in v2 v1 v2; do sh put ow/x "$T/$v" || fail "overwrite ow/x with $v"; done
wait
reads=0
for f in "$T"/r[123].[0-9]; do
	[ -s "$f" ] || continue
	cmp -s "$f" "$T/v1" || cmp -s "$f" "$T/v2" || fail "a read during overwrites gave a mix ($f)"
	reads=$((reads + 1))
done
grep -h "read failed" "$T"/reader*.log && fail "a read failed during the overwrites"
[ $reads -ge 12 ] || fail "only $reads reads completed"
rm -f "$T"/r[123].*
echo "overwrites under $reads concurrent reads: each read old or new, never a mix"

# ---- a PUT killed halfway ----------------------------------------------------
mk k $((600 * MIB))
before=$(tool intents | grep -c "key=kill/x$")
x bash -c "shelf put kill/x '$T/k' --timeout 60000 & p=\$!; echo \$p >'$T/put.pid'; wait \$p" &
wp=$!
for _ in $(seq 400); do
	[ "$(tool intents 2>/dev/null | grep -c "key=kill/x$")" -gt "$before" ] && break
	sleep 0.05
done
sleep 0.5
kill -KILL "$(cat "$T/put.pid")" 2>/dev/null || fail "the PUT had finished before it was killed"
wait $wp
sh get kill/x "$T/x" 2>/dev/null; [ $? = 3 ] || fail "a killed PUT left a visible object"
sh stat kill/x >/dev/null 2>&1; [ $? = 3 ] || fail "stat sees the killed PUT's object"
sh ls kill/ | grep -q . && fail "ls sees the killed PUT's object"
tool intents | grep -q "count=38 key=kill/x$" ||
	fail "no intent names the killed PUT's 38 chunks: $(tool intents)"
rm -f "$T/k"
echo "a PUT SIGKILLed halfway: nothing visible; its intent names its chunks"

# ---- bad input -----------------------------------------------------------------
# a chunk missing
sh put bad/miss "$T/h" || fail "put bad/miss"
ck=$(tool manifest bad/miss | awk '$1 == "chunk" && $2 == 3 {print $3}')
tool raw-rm "hex:$ck" || fail "raw-rm of chunk 3"
out=$(sh get bad/miss "$T/x" 2>&1); rc=$?
[ $rc = 3 ] && grep -q "bad/miss': chunk 3 of 7 (key $ck): not found" <<<"$out" ||
	fail "missing chunk: exit $rc: $out"
[ ! -e "$T/x" ] || fail "a get of a missing chunk left a partial file"
out=$(sh get bad/miss --range $((16 * MIB))-$((16 * MIB + 9)) | od -An -tx1 | tr -d ' \n')
[ "$out" = "$(tail -c +$((16 * MIB + 1)) "$T/h" | head -c 10 | od -An -tx1 | tr -d ' \n')" ] ||
	fail "a range read of the chunks that are there"
# a chunk with other bytes, written through the protocol
sh put bad/wrong "$T/h" || fail "put bad/wrong"
ck=$(tool manifest bad/wrong | awk '$1 == "chunk" && $2 == 5 {print $3}')
head -c $((16 * MIB)) /dev/urandom >"$T/junk"
tool raw-put "hex:$ck" "$T/junk" || fail "raw-put of chunk 5"
out=$(sh get bad/wrong "$T/x" 2>&1); rc=$?
[ $rc = 1 ] && grep -q "bad/wrong': chunk 5 of 7 (key $ck): damaged: crc32c" <<<"$out" ||
	fail "wrong chunk: exit $rc: $out"
[ ! -e "$T/x" ] || fail "a get of a damaged chunk left a partial file"
out=$(sh get bad/wrong --range $((80 * MIB))-$((80 * MIB + 1)) 2>&1) &&
	fail "a range inside the damaged chunk was given"
grep -q "chunk 5 of 7" <<<"$out" || fail "range in the damaged chunk: $out"
# crafted manifests, written as plain objects (no client writes these)
tool manifest bad/wrong | head -1 >/dev/null
x python3 - "$T" <<'EOF' || fail "crafting manifests"
import struct, sys, zlib
T = sys.argv[1]
def crc32c(b):
    c = 0xffffffff
    for x in b:
        c ^= x
        for _ in range(8):
            c = (c >> 1) ^ (0x82f63b78 & -(c & 1))
    return c ^ 0xffffffff
MAG = b"\x89shelf-manifest\n"
def man(size, cs, n, entries, fix=True):
    h = MAG + struct.pack("<IIQQII", 1, 0, size, cs, n, 0) + b"\x11" * 16
    body = h + b"".join(struct.pack("<QII", o, s, 0) for o, s in entries)
    return body + struct.pack("<I", crc32c(body) if fix else 0)
M = 1 << 20
open(T + "/overlap", "wb").write(man(40 * M, 16 * M, 3, [(0, 16 * M), (0, 16 * M), (32 * M, 8 * M)]))
# n = 2^24 in a manifest of 3 entries: a reader that trusted n would allocate 256 MiB
open(T + "/enormous", "wb").write(man((1 << 24) * 16 * M, 16 * M, 1 << 24, [(0, 16 * M)] * 3))
open(T + "/badcrc", "wb").write(man(40 * M, 16 * M, 3, [(0, 16 * M), (16 * M, 16 * M), (32 * M, 8 * M)], False))
EOF
for c in overlap:"chunk 1 starts at 0" enormous:"bytes long, but 16777216 chunks" badcrc:"checksum mismatch"; do
	n=${c%%:*}; want=${c#*:}
	tool raw-put "bad/$n" "$T/$n" || fail "raw-put bad/$n"
	for op in get stat; do
		if [ $op = get ]; then out=$(sh get "bad/$n" "$T/x" 2>&1); rc=$?
		else out=$(sh stat "bad/$n" 2>&1); rc=$?; fi
		[ $op = stat ] && [ $n != enormous ] && continue # stat reads the head only
		[ $rc = 1 ] && grep -q "bad/$n': damaged manifest: .*$want" <<<"$out" ||
			fail "crafted manifest $n, $op: exit $rc: $out"
	done
	[ ! -e "$T/x" ] || fail "a get of crafted manifest $n left a file"
done
# a caller may not use the reserved prefix
out=$(sh put "$(printf '\xfe\xfe\xfe\xfe\xfe\xfe\xfe\xfeCx')" "$T/0" 2>&1) && fail "a reserved key was accepted"
grep -q "reserved prefix" <<<"$out" || fail "reserved key: $out"
echo "bad input: missing and damaged chunks named, crafted manifests refused, reserved keys refused"

# ---- several chunks in flight: bytes and memory ----------------------------------
INFLIGHT_BASE_MIB=${INFLIGHT_BASE_MIB:-96}
mk w $((400 * MIB))
ASAN_OPTIONS=${ASAN_OPTIONS:-}:quarantine_size_mb=8:malloc_context_size=2 \
	x /usr/bin/time -v -o "$T/wput.time" "$LT" "$SHELF_CLIENT" "tcp://[fd00:5e1f:0:1::1]:7400" \
	default put-fd fl/w "$T/w" 8 || fail "put-fd with 8 in flight: $(tail -3 "$T/wput.time")"
ASAN_OPTIONS=${ASAN_OPTIONS:-}:quarantine_size_mb=8:malloc_context_size=2 \
	x /usr/bin/time -v -o "$T/wget.time" "$LT" "$SHELF_CLIENT" "tcp://[fd00:5e1f:0:1::1]:7400" \
	default get-fd fl/w "$T/w.back" 8 || fail "get-fd with 8 in flight: $(tail -3 "$T/wget.time")"
cmp -s "$T/w" "$T/w.back" || fail "400 MiB with 8 in flight came back different"
rm -f "$T/w.back"
pr=$(rss "$T/wput.time"); gr=$(rss "$T/wget.time"); bound=$((8 * 16 + INFLIGHT_BASE_MIB))
echo "400 MiB, 8 chunks in flight: byte for byte; client peak RSS put $((pr / 1024)) MiB, get $((gr / 1024)) MiB (bound $bound MiB)"
[ "$pr" -lt $((bound * 1024)) ] && [ "$gr" -lt $((bound * 1024)) ] ||
	fail "client RSS above $bound MiB with 8 chunks in flight"

# ---- a node killed during a large GET (R=2): completed from the replicas -------
# the GET's writer sleeps 150 ms per chunk (25 chunks: about 4 s), and a
# node is killed 1 s in
x "$LT" "$SHELF_CLIENT" "tcp://[fd00:5e1f:0:1::1]:7400" default get-fd fl/w "$T/w.kill" 4 150 \
	2>"$T/kill.err" &
gp=$!
sleep 1
kill -0 $gp 2>/dev/null || fail "the slow GET ended before the kill: $(cat "$T/kill.err")"
"$C" kill 2 >/dev/null || fail "shelf-cluster kill 2"
wait $gp || fail "the GET failed when a node was killed: $(cat "$T/kill.err")"
cmp -s "$T/w" "$T/w.kill" || fail "the GET across a node's death gave other bytes"
rm -f "$T/w" "$T/w.kill"
echo "a node SIGKILLed during a 400 MiB GET (R=2): completed from the replicas, byte for byte"

for n in "$SHELF_CLUSTER_DIR"/n0*/log; do
	grep -q "AddressSanitizer\|runtime error" "$n" && fail "sanitizer report in $n"
done
echo "all checks passed"
