#!/bin/bash
# Bitrot on a replicated slice (issue 14): a 3-node cluster, R = 2, scrub
# every 4 s (scrub_interval, ±20 %). Objects (one of several pieces of
# 256 KiB, one small) are put; for each, one byte in the middle of its value
# is flipped in the drive file of one of the two nodes that hold it, while
# the node runs. Then:
#  - reads (shelf get) keep returning the right bytes;
#  - that node's scrub finds the damage (its log names the key,
#    scrub_damaged grows) and the copy is rewritten from the other replica
#    (log line, scrub_repaired grows); its drive holds the value's bytes
#    intact again;
#  - with the other replica SIGKILLed, the repaired node alone serves the
#    right bytes.
# SEED (printed) seeds the values.
set -u
. "$(dirname "$0")/cluster_lib.sh"
cluster_test hb shelf-bitrot
[ -x "${SHELF_BUILD:-$SRC/build}/shelf-broker" ] || { echo "skipped: shelf-broker not built"; exit 77; }
SEED=${SEED:-$RANDOM}
echo "seed $SEED"
D=$SHELF_CLUSTER_DIR
T=$D/t
mkdir -p "$T"
fail() {
	echo "FAIL: $*"
	"$C" status
	for l in "$D"/n*/log; do echo "== $l"; tail -n 15 "$l"; done
	exit 1
}
sh() { "$C" exec -- shelf "$@"; }
TO=(--timeout 30000)
now() { date +%s; }

export SHELF_NODE_SET="scrub_interval=4s scrub_budget=1M"
"$C" up --nodes 3 --replicas 2 --drive-size 1G >/dev/null || fail "up"
t0=$(now)
until [ "$(grep -l "slice 'default': address" "$D"/n*/log | wc -l)" = 3 ] &&
	sh put warm/0 "$SRC/LICENSE" --timeout 10000 2>/dev/null; do
	[ $(($(now) - t0)) -lt 60 ] || fail "the cluster takes no puts after 60 s"
	sleep 0.2
done

. "$(dirname "$0")/heal_drive_lib.sh"

# ---- objects, and the damage ----
sizes=(700000 300000 5000)
declare -A victim other
i=0
for size in "${sizes[@]}"; do
	k=rot/$i
	value "$size" "$T/v$i"
	sh put "$k" "$T/v$i" "${TO[@]}" || fail "put $k"
	i=$((i + 1))
done
i=0
for size in "${sizes[@]}"; do
	k=rot/$i
	h=()
	for n in n01 n02 n03; do
		[ "$(drive_tool count "$D/$n/drive.img" "$T/v$i")" -ge 1 ] && h+=("$n")
	done
	[ "${#h[@]}" = 2 ] || fail "$k is held by ${#h[@]} drives (${h[*]:-}), not 2"
	v=${h[$((RANDOM % 2))]}
	[ "$v" = "${h[0]}" ] && o=${h[1]} || o=${h[0]}
	victim[$k]=$v
	other[$k]=$o
	out=$(drive_tool flip "$D/$v/drive.img" "$T/v$i") || fail "flip $k on $v: $out"
	echo "$k ($size bytes): byte at $out flipped on $v; intact on $o"
	i=$((i + 1))
done

# reads return the right bytes, whichever replica answers (rot/2 is left
# unread, for scrub to find)
for r in 1 2 3; do
	for i in 0 1; do
		sh get "rot/$i" "$T/back" "${TO[@]}" 2>"$T/get.err" || fail "get rot/$i: $(cat "$T/get.err")"
		cmp -s "$T/back" "$T/v$i" || fail "get rot/$i returned wrong bytes"
	done
done

# scrub finds each damaged copy, and it is rewritten from the other replica
t0=$(now)
i=0
for size in "${sizes[@]}"; do
	k=rot/$i
	v=${victim[$k]}
	until grep -q "repair: key '$k' (slice 'default'), damaged here, rewritten from node" "$D/$v/log"; do
		[ $(($(now) - t0)) -lt 90 ] || fail "$k on $v not repaired within 90 s"
		sleep 0.5
	done
	[ "$k" != rot/2 ] || grep -q "scrub: key '$k' is damaged on this drive" "$D/$v/log" ||
		fail "$v: scrub did not find $k"
	[ "$(drive_tool count "$D/$v/drive.img" "$T/v$i")" -ge 1 ] || fail "$v's drive holds no intact copy of $k after the repair"
	i=$((i + 1))
done
for v in $(printf '%s\n' "${victim[@]}" | sort -u); do
	d=$(counter "$v" scrub_damaged); r=$(counter "$v" scrub_repaired); p=$(counter "$v" scrub_passes)
	echo "$v: scrub_passes $p scrub_damaged $d scrub_repaired $r"
	[[ "$r" =~ ^[0-9]+$ ]] && [ "$r" -ge 1 ] || fail "$v: scrub_repaired is $r"
	if [ "$v" = "${victim[rot/2]}" ]; then
		[[ "$d" =~ ^[0-9]+$ ]] && [ "$d" -ge 1 ] || fail "$v: scrub_damaged is $d"
	fi
done

# each repaired node alone serves the right bytes: the other replica killed
i=0
for size in "${sizes[@]}"; do
	k=rot/$i
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
