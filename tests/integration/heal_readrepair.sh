#!/bin/bash
# Read repair triggered by a client's GET (issue 14, "Scrub and read
# repair"): a 3-node cluster over 3 chassis, R = 2, scrub never
# (scrub_interval 0), so that only a read can find the damage. Objects are
# put; for each, one byte in the middle of its value is flipped in the drive
# file of one of the two nodes that hold it, while the node runs. Then a
# client in that node's chassis (`shelf get --chassis`: replicas there are
# read first) gets the key:
#  - it returns the right bytes (the damaged replica answers a checksum
#    error, the client goes on to the other);
#  - the damaged node, told by its own read, fetches the copy from the other
#    replica and rewrites it (its log says so, scrub_repaired grows, no
#    scrub pass ran, no scrub line names the key); its drive holds the
#    value's bytes intact again;
#  - with the other replica SIGKILLed, the repaired node alone serves the
#    right bytes.
# SEED (printed) seeds the values and the choice of the damaged replica.
set -u
. "$(dirname "$0")/cluster_lib.sh"
cluster_test hr shelf-rrep
[ -x "${SHELF_BUILD:-$SRC/build}/shelf-broker" ] || { echo "skipped: shelf-broker not built"; exit 77; }
SEED=${SEED:-$RANDOM}
echo "seed $SEED (SEED=$SEED $0 reruns it)"
RANDOM=$SEED
D=$SHELF_CLUSTER_DIR
T=$D/t
mkdir -p "$T"
fail() {
	echo "FAIL: $* (seed $SEED)"
	"$C" status
	for l in "$D"/n*/log; do echo "== $l"; tail -n 15 "$l"; done
	exit 1
}
sh() { "$C" exec -- shelf "$@"; }
TO=(--timeout 30000)
now() { date +%s; }
. "$(dirname "$0")/heal_drive_lib.sh"

export SHELF_NODE_SET="scrub_interval=0"
"$C" up --nodes 3 --chassis 3 --replicas 2 --drive-size 1G >/dev/null || fail "up"
t0=$(now)
until [ "$(grep -l "slice 'default': address" "$D"/n*/log | wc -l)" = 3 ] &&
	sh put warm/0 "$SRC/LICENSE" --timeout 10000 2>/dev/null; do
	[ $(($(now) - t0)) -lt 60 ] || fail "the cluster takes no puts after 60 s"
	sleep 0.2
done
# chassis_of NODE: the chassis shelf-cluster gave it
chassis_of() { cut -d' ' -f1 "$D/$1/where"; }

sizes=(600000 5000)
declare -A victim other
i=0
for size in "${sizes[@]}"; do
	value "$size" "$T/v$i"
	sh put "rr/$i" "$T/v$i" "${TO[@]}" || fail "put rr/$i"
	i=$((i + 1))
done
i=0
for size in "${sizes[@]}"; do
	k=rr/$i
	h=()
	for n in n01 n02 n03; do
		[ "$(drive_tool count "$D/$n/drive.img" "$T/v$i")" -ge 1 ] && h+=("$n")
	done
	[ "${#h[@]}" = 2 ] || fail "$k is held by ${#h[@]} drives (${h[*]:-}), not 2"
	v=${h[$((RANDOM % 2))]}
	[ "$v" = "${h[0]}" ] && o=${h[1]} || o=${h[0]}
	[ "$(chassis_of "$v")" != "$(chassis_of "$o")" ] || fail "$v and $o share chassis $(chassis_of "$v")"
	victim[$k]=$v
	other[$k]=$o
	out=$(drive_tool flip "$D/$v/drive.img" "$T/v$i") || fail "flip $k on $v: $out"
	echo "$k ($size bytes): byte at $out flipped on $v ($(chassis_of "$v")); intact on $o"
	i=$((i + 1))
done

# one GET each, from the damaged node's chassis: the right bytes
i=0
for size in "${sizes[@]}"; do
	k=rr/$i
	v=${victim[$k]}
	sh get "$k" "$T/back" --chassis "$(chassis_of "$v")" "${TO[@]}" 2>"$T/get.err" ||
		fail "get $k: $(cat "$T/get.err")"
	cmp -s "$T/back" "$T/v$i" || fail "get $k returned wrong bytes"
	i=$((i + 1))
done

# the read found the damage, and the copy was rewritten from the other
# replica; no scrub had a part in it
t0=$(now)
i=0
for size in "${sizes[@]}"; do
	k=rr/$i
	v=${victim[$k]}
	until grep -q "repair: key '$k' (slice 'default'), damaged here, rewritten from node" "$D/$v/log"; do
		[ $(($(now) - t0)) -lt 60 ] || fail "$k on $v not repaired within 60 s of the GET"
		sleep 0.5
	done
	! grep -q "scrub: key '$k'" "$D/$v/log" || fail "$v: a scrub found $k (scrub_interval is 0)"
	[ "$(drive_tool count "$D/$v/drive.img" "$T/v$i")" -ge 1 ] ||
		fail "$v's drive holds no intact copy of $k after the repair"
	echo "$k: damaged copy on $v rewritten after the GET in $(($(now) - t0)) s"
	i=$((i + 1))
done
for v in $(printf '%s\n' "${victim[@]}" | sort -u); do
	r=$(counter "$v" scrub_repaired)
	p=$(counter "$v" scrub_passes)
	echo "$v: scrub_passes $p scrub_repaired $r"
	[[ "$r" =~ ^[0-9]+$ ]] && [ "$r" -ge 1 ] || fail "$v: scrub_repaired is $r"
	[ "$p" = 0 ] || fail "$v: scrub_passes is $p with scrub_interval 0"
done

# each repaired node alone serves the right bytes: the other replica killed
i=0
for size in "${sizes[@]}"; do
	k=rr/$i
	o=${other[$k]}
	"$C" kill "$o" >/dev/null || fail "kill $o"
	t0=$(now)
	until sh get "$k" "$T/back" --timeout 10000 2>"$T/get.err"; do
		[ $(($(now) - t0)) -lt 60 ] || fail "get $k with $o down: $(cat "$T/get.err")"
		sleep 0.5
	done
	cmp -s "$T/back" "$T/v$i" || fail "get $k from the repaired ${victim[$k]} returned wrong bytes"
	"$C" start "$o" >/dev/null || fail "start $o"
	t0=$(now)
	until [ "$(counter "$o" scrub_passes)" != none ]; do
		[ $(($(now) - t0)) -lt 60 ] || fail "$o does not answer after its restart"
		sleep 0.5
	done
	i=$((i + 1))
done
echo "all checks passed"
