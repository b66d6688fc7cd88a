#!/bin/bash
# Media damage in the replayed region, on the real daemon: a 3-node sim
# cluster (tools/shelf-cluster), objects put through the `shelf` CLI with a
# history of every acknowledged put (key -> sha256), the node holding a
# chosen object SIGKILLed right after the puts (checkpoint_records keeps its
# default of 1,000,000, so those records are after the last checkpoint and
# are replayed), one byte in the middle of the object's value flipped in the
# node's drive file, and the node started again. Then:
#  - its log says records were replayed (as many as were put after the
#    damaged one, at least) and reports the damaged object;
#  - the damaged key answers checksum-mismatch (exit 1, never not-found and
#    never any bytes), every other acknowledged object reads back exactly;
#  - `shelf status` shows the node's checksum_errors grown;
#  - after a clean restart (SIGTERM: synced and checkpointed, so nothing is
#    replayed) the same, the counter kept; new puts on the node work.
# Cases:
#  A: a small object with later objects after it on the same node
#  B: a damaged overwrite: the key's older version must never come back
#  C: a 4 MiB object (a multi-chunk record) with later objects after it
# At the end the whole history: every undamaged key reads its last
# acknowledged bytes, every damaged one checksum-mismatch, and `shelf ls`
# lists those keys and nothing else; a damaged key put again is whole.
set -u
. "$(dirname "$0")/cluster_lib.sh"
cluster_test nd shelf-ndmg
[ -x "${SHELF_BUILD:-$SRC/build}/shelf-broker" ] || { echo "skipped: shelf-broker not built"; exit 77; }
D=$SHELF_CLUSTER_DIR
T=$D/t
mkdir -p "$T/v"
fail() {
	echo "FAIL: $*"
	"$C" status
	for l in "$D"/n*/log; do echo "== $l"; tail -n 12 "$l"; done
	exit 1
}
sh() { "$C" exec -- shelf "$@"; }
# data operations wait long: CI runs sanitizer builds side by side on 2 cores
TO=(--timeout 30000)
now() { date +%s; }

"$C" up --nodes 3 --replicas 1 --drive-size 1G >/dev/null || fail "up"
t0=$(now)
until [ "$(grep -l "slice 'default': address" "$D"/n*/log | wc -l)" = 3 ] &&
	sh put warm/0 "$SRC/LICENSE" --timeout 10000 2>/dev/null; do
	[ $(($(now) - t0)) -lt 60 ] || fail "the cluster takes no puts after 60 s"
	sleep 0.2
done
sh rm warm/0 || fail "rm warm/0"

# ---- the history: every acknowledged put ----
declare -A last   # key -> value file of its last acknowledged put
declare -A damaged # key -> 1 while its newest version is damaged
nvals=0
: >"$T/history"
# put_obj KEY SIZE: a fresh random value; recorded once acknowledged
put_obj() {
	local f=$T/v/$nvals
	nvals=$((nvals + 1))
	head -c "$2" /dev/urandom >"$f"
	sh put "$1" "$f" "${TO[@]}" 2>"$T/put.err" || fail "put $1 ($2 bytes): $(cat "$T/put.err")"
	last[$1]=$f
	unset "damaged[$1]"
	echo "$1 $(sha256sum <"$f" | cut -d' ' -f1)" >>"$T/history"
}
# node_of KEY: the node (n01..) holding KEY, from `shelf stat`
node_of() {
	local addr
	addr=$(sh stat "$1" "${TO[@]}" | awk '$1 == "node" { print $2 }')
	[ -n "$addr" ] || return 1
	basename "$(dirname "$(grep -lF "slice 'default': address $addr on" "$D"/n*/log | head -1)")"
}
# the node's log since its latest start
section() { tac "$D/$1/log" | sed '/^--- /q' | tac; }
# checksum_errors of node $1 in `shelf status --json`
csum_errors() {
	local addr
	addr=$(grep -F "slice 'default': address" "$D/$1/log" | tail -1 | sed 's/.* address \([0-9a-f:]*\) on .*/\1/')
	sh status --json "${TO[@]}" 2>/dev/null | python3 -c 'import json, sys
addr = sys.argv[1]
for s in json.load(sys.stdin)["slices"]:
    for m in s["members"]:
        if m["addr"] == addr and m.get("reachable"):
            print(m["counters"]["checksum_errors"])
            sys.exit(0)
print("none")' "$addr"
}
# csum_errors_now NODE: the same, polled while the node is not answering
csum_errors_now() {
	local t0 c; t0=$(now)
	while c=$(csum_errors "$1"); ! [[ "$c" =~ ^[0-9]+$ ]]; do
		[ $(($(now) - t0)) -lt 60 ] || break
		sleep 0.5
	done
	echo "$c"
}
# wait_serving NODE KEY: the restarted node is ready and serves KEY (whole)
wait_serving() {
	local t0 pid; t0=$(now)
	until section "$1" | grep -q "ready:" &&
		sh get "$2" "$T/probe" --timeout 10000 2>/dev/null && cmp -s "$T/probe" "${last[$2]}"; do
		pid=$(cat "$D/$1/pid")
		[ -d "/proc/$pid" ] || fail "$1 exited after its start: $(section "$1" | tail -n 3)"
		[ $(($(now) - t0)) -lt 90 ] || fail "$1 does not serve $2 90 s after its start"
		sleep 0.2
	done
}
# flip DRIVE VALUE: one byte in the middle of VALUE's only copy in DRIVE
# flipped (found by its bytes, reading only the drive file's data extents);
# prints "offset old new"
flip() {
	python3 - "$1" "$2" <<'EOF'
import os, sys
drive, vfile = sys.argv[1], sys.argv[2]
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
fd = os.open(drive, os.O_RDWR)
hits = find(fd)
if len(hits) != 1:
    sys.exit("the value's middle bytes are at %d places in %s, not 1: %s" % (len(hits), drive, hits[:4]))
pos = hits[0] + 32
old = os.pread(fd, 1, pos)[0]
new = old ^ 0x5A
os.pwrite(fd, bytes([new]), pos)
os.fsync(fd)
os.close(fd)
fd = os.open(drive, os.O_RDONLY)
if os.pread(fd, 1, pos)[0] != new or find(fd):
    sys.exit("the flip at %d did not land" % pos)
print(pos, old, new)
EOF
}
# check_damaged KEY: checksum-mismatch, exit 1, and no bytes at all (so never
# an older version); the CLI's answer in $T/dmg.err
check_damaged() {
	local rc
	rm -f "$T/dmg.out"
	sh get "$1" "$T/dmg.out" "${TO[@]}" 2>"$T/dmg.err"; rc=$?
	[ $rc = 1 ] && grep -q "checksum-mismatch" "$T/dmg.err" ||
		fail "get $1 (damaged): exit $rc: $(cat "$T/dmg.err")"
	[ -s "$T/dmg.out" ] && fail "get $1 (damaged) wrote $(stat -c %s "$T/dmg.out") bytes"
	[ "$(sh get "$1" - "${TO[@]}" 2>/dev/null | wc -c)" = 0 ] || fail "get $1 - (damaged) printed bytes"
	sh stat "$1" "${TO[@]}" >/dev/null 2>"$T/dmg.serr"; rc=$?
	[ $rc = 1 ] && grep -q "checksum-mismatch" "$T/dmg.serr" ||
		fail "stat $1 (damaged): exit $rc: $(cat "$T/dmg.serr")"
}
# check_all LABEL [PREFIX]: every key in the history (starting with PREFIX)
# reads as its last acknowledged put (all of them in one `shelf get
# --batch`), or answers checksum-mismatch while damaged (each alone)
check_all() {
	local k rc
	: >"$T/list"
	for k in "${!last[@]}"; do
		[[ "$k" == "${2:-}"* ]] || continue
		if [ -n "${damaged[$k]:-}" ]; then
			check_damaged "$k"
			continue
		fi
		echo "$k" >>"$T/list"
	done
	[ -s "$T/list" ] || return 0
	rm -rf "$T/bback"
	sh get --batch "$T/list" --out "$T/bback" "${TO[@]}" 2>"$T/get.err"; rc=$?
	[ $rc = 0 ] || fail "$1: get --batch of $(wc -l <"$T/list") keys: exit $rc: $(tail -n 3 "$T/get.err")"
	while read -r k; do
		cmp -s "$T/bback/$k" "${last[$k]}" || fail "$1: $k is not its last acknowledged version"
	done <"$T/list"
}

# run_case NAME SIZE [ow]: puts, SIGKILL, one byte flipped, two restarts
run_case() {
	local name=$1 size=$2 ow=${3:-} key node later=0 total=0 i=0 k c0 c1 c2 out rep pid rc
	key=$name/target
	if [ -n "$ow" ]; then
		key=$name/ow
		put_obj "$key" "$size"
		node=$(node_of "$key") || fail "$name: no node for $key"
		# objects between the two versions, some on the same node
		while [ "$later" -lt 2 ] || [ "$total" -lt 8 ]; do
			k=$name/mid$i; i=$((i + 1))
			put_obj "$k" $((1000 + RANDOM % 20000)); total=$((total + 1))
			[ "$(node_of "$k")" = "$node" ] && later=$((later + 1))
			[ "$total" -lt 60 ] || fail "$name: 60 keys and none on $node"
		done
		put_obj "$key" "$size"
	else
		put_obj "$name/before0" 3000
		put_obj "$name/before1" 5000
		put_obj "$key" "$size"
		node=$(node_of "$key") || fail "$name: no node for $key"
	fi
	# later objects, at least 3 of them on the same node, 20 or more in all
	later=0 total=$((total + 3)); i=0
	local probe=""
	while [ "$later" -lt 3 ] || [ "$total" -lt 20 ]; do
		k=$name/after$i; i=$((i + 1))
		put_obj "$k" $((1000 + RANDOM % 20000)); total=$((total + 1))
		[ "$(node_of "$k")" = "$node" ] && later=$((later + 1)) && probe=${probe:-$k}
		[ "$total" -lt 80 ] || fail "$name: 80 keys and only $later after $key on $node"
	done
	c0=$(csum_errors_now "$node")
	[[ "$c0" =~ ^[0-9]+$ ]] || fail "$name: no checksum_errors for $node in shelf status: $c0"
	# SIGKILL right after the puts: they are all in the replayed region
	"$C" kill "$node" >/dev/null || fail "$name: kill $node"
	out=$(flip "$D/$node/drive.img" "${last[$key]}") || fail "$name: $out"
	echo "$name: $key ($size bytes) on $node, $later later objects on that node; byte at $out (offset old new) flipped"

	# ---- restart 1: replays the region with the damage in it ----
	"$C" start "$node" >/dev/null || fail "$name: start $node"
	wait_serving "$node" "$probe"
	damaged[$key]=1
	rep=$(section "$node" | grep -o "[0-9]* records replayed" | cut -d' ' -f1)
	[ -n "$rep" ] && [ "$rep" -ge "$later" ] ||
		fail "$name: $node replayed '${rep:-nothing}' records, not the $later put after the damaged one"
	section "$node" | grep -q "warn: .* [1-9][0-9]* objects are damaged" ||
		fail "$name: $node's log does not report the damage"
	echo "$name: restart 1: $(section "$node" | grep -o "[0-9]* records replayed"); $(section "$node" | grep -o "[0-9]* objects are damaged")"
	check_damaged "$key"
	echo "$name: get $key: exit 1: $(cat "$T/dmg.err")"
	check_all "$name restart 1"
	c1=$(csum_errors_now "$node")
	[[ "$c1" =~ ^[0-9]+$ ]] && [ "$c1" -gt "$c0" ] ||
		fail "$name: checksum_errors of $node was $c0 before, $c1 after the damage"
	sh status "${TO[@]}" >"$T/status" 2>&1; rc=$?
	[ $rc = 4 ] && grep -q "checksum-errors" "$T/status" || fail "$name: shelf status exit $rc: $(cat "$T/status")"
	echo "$name: shelf status: exit 4, $node checksum-errors, checksum_errors $c0 -> $c1"

	# ---- restart 2: clean (SIGTERM: synced, checkpointed) ----
	pid=$(cat "$D/$node/pid")
	kill -TERM "$pid"
	t0=$(now)
	while [ -d "/proc/$pid" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]; do
		[ $(($(now) - t0)) -lt 60 ] || fail "$name: $node did not stop within 60 s of SIGTERM"
		sleep 0.1
	done
	"$C" start "$node" >/dev/null || fail "$name: start $node again"
	wait_serving "$node" "$probe"
	# the clean stop took a checkpoint: nothing to replay, the damaged key
	# carried through it
	rep=$(section "$node" | grep -o "[0-9]* records replayed" | cut -d' ' -f1)
	[ "$rep" = 0 ] || fail "$name: after a clean stop $node replayed '${rep:-nothing}' records, not 0"
	section "$node" | grep -q "warn: .* [1-9][0-9]* objects are damaged" ||
		fail "$name: after a clean restart $node's log no longer reports the damaged object"
	check_damaged "$key"
	check_all "$name restart 2" "$name/"
	c2=$(csum_errors_now "$node")
	[[ "$c2" =~ ^[0-9]+$ ]] && [ "$c2" -ge "$c1" ] ||
		fail "$name: checksum_errors of $node was $c1, $c2 after a clean restart"
	echo "$name: clean restart: $(section "$node" | grep -o "[0-9]* records replayed"); still checksum-mismatch, checksum_errors $c2"

	# ---- new puts, one at least on the damaged node ----
	i=0
	while :; do
		k=$name/new$i; i=$((i + 1))
		put_obj "$k" $((1000 + RANDOM % 20000))
		sh get "$k" "$T/back" "${TO[@]}" && cmp -s "$T/back" "${last[$k]}" || fail "$name: new $k does not read back"
		[ "$(node_of "$k")" = "$node" ] && break
		[ $i -lt 40 ] || fail "$name: 40 new keys and none on $node"
	done
	echo "$name: new puts after the damage read back ($i, the last on $node)"
}

run_case A 7000
run_case B 9000 ow
run_case C 4194304

# ---- the whole history: each key's last acknowledged sha256 ----
declare -A want
while read -r k h; do want[$k]=$h; done <"$T/history"
[ ${#want[@]} = ${#last[@]} ] || fail "history: ${#want[@]} keys, the model ${#last[@]}"
: >"$T/hlist"
for k in "${!want[@]}"; do
	if [ -n "${damaged[$k]:-}" ]; then
		check_damaged "$k"
		continue
	fi
	echo "$k" >>"$T/hlist"
done
rm -rf "$T/hback"
sh get --batch "$T/hlist" --out "$T/hback" "${TO[@]}" 2>"$T/get.err" ||
	fail "history: get --batch: $(tail -n 3 "$T/get.err")"
while read -r k; do
	h=$(sha256sum <"$T/hback/$k" | cut -d' ' -f1)
	[ "$h" = "${want[$k]}" ] || fail "history: $k reads $h, its last acknowledged put was ${want[$k]}"
done <"$T/hlist"
sh ls "${TO[@]}" >"$T/ls" || fail "ls"
printf '%s\n' "${!last[@]}" | LC_ALL=C sort >"$T/want"
LC_ALL=C sort "$T/ls" | cmp -s - "$T/want" || fail "ls lists other keys: $(diff "$T/want" <(LC_ALL=C sort "$T/ls") | head)"
echo "history: $(wc -l <"$T/history") acknowledged puts of ${#last[@]} keys; ${#damaged[@]} damaged answer checksum-mismatch, all others their last bytes; ls lists exactly them"
# a damaged key put again is whole
rewritten=("${!damaged[@]}")
for k in "${rewritten[@]}"; do put_obj "$k" 2000; done
for k in "${rewritten[@]}"; do
	sh get "$k" "$T/back" "${TO[@]}" && cmp -s "$T/back" "${last[$k]}" || fail "$k put again does not read back"
done
echo "damaged keys put again read back; ok"
