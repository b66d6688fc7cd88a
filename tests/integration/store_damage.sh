#!/bin/bash
# Media damage in the replayed region, on real processes: a writer process
# puts objects (each acknowledged, with where its record lies on the drive),
# is SIGKILLed, one byte of one object's value is flipped in the drive file,
# and the store is recovered by a new process. Every other acknowledged
# object reads back exactly, the damaged one answers -EIO (checksum
# mismatch): never not-found, never an older version; the same after new
# puts, and after a clean restart. The damage counters persist.
#   A: a damaged object with later objects after it
#   B: a damaged overwrite (the previous version must not come back)
set -u
B=${SHELF_BUILD:-build}
W="$B/tests/prog/store_writer"
[ -x "$W" ] || { echo "store_writer not built"; exit 1; }
dir=$(mktemp -d /tmp/shelf-damage-XXXXXX)
wpid=
cleanup() { [ -n "$wpid" ] && kill -KILL "$wpid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

N=20
# run_case NAME DAMAGED_KEY [OWKEY]: write, kill, flip, recover twice
run_case() {
	local name=$1 dkey=$2 ow=${3:-} drive="$dir/$1.img" log="$dir/$1.log"
	local want=$N line off klen len size pos old new out
	[ -n "$ow" ] && want=$((N + 2))
	: >"$log"
	"$W" puts "$drive" "$name" "$N" $ow >"$log" 2>"$dir/$name.err" &
	wpid=$!
	for _ in $(seq 100); do
		[ "$(wc -l <"$log")" -ge "$want" ] && break
		kill -0 "$wpid" 2>/dev/null || { cat "$dir/$name.err"; fail "$name: writer died"; }
		sleep 0.1
	done
	[ "$(wc -l <"$log")" -ge "$want" ] || fail "$name: writer did not acknowledge $want puts in 10 s"
	kill -KILL "$wpid"
	wait "$wpid" 2>/dev/null
	wpid=
	# the newest record of the damaged key: flip one byte in the middle of its value
	line=$(grep "^$dkey " "$log" | tail -1)
	[ -n "$line" ] || fail "$name: $dkey not in the log"
	read -r _ len _ off size <<<"$line"
	klen=${#dkey}
	pos=$((off + 40 + klen + len / 2))
	old=$(od -An -tu1 -j "$pos" -N1 "$drive" | tr -d ' ')
	new=$(((old + 0x5a) % 256))
	printf "$(printf '\\%03o' "$new")" | dd of="$drive" bs=1 seek="$pos" conv=notrunc status=none
	[ "$(od -An -tu1 -j "$pos" -N1 "$drive" | tr -d ' ')" = "$new" ] || fail "$name: flip did not land"
	echo "$name: $dkey (record at $off, $size bytes) byte $pos flipped $old -> $new"
	# first restart: replays the region with the damage in it
	out=$("$W" check "$drive" "$log" "$dkey" 2>&1) || fail "$name: after the restart: $out"
	echo "$name: restart 1: $out"
	grep -q "records replayed" <<<"$out" && ! grep -q " 0 records replayed" <<<"$out" ||
		fail "$name: nothing was replayed, the damage was not in the replayed region"
	grep -q "damaged_records 1 damaged_objects 1" <<<"$out" || fail "$name: damage not counted: $out"
	# second restart (after a clean close and checkpoint): still damaged, counters kept
	out=$("$W" check "$drive" "$log" "$dkey" 2>&1) || fail "$name: after the second restart: $out"
	echo "$name: restart 2: $out"
	grep -q "damaged_records 1 damaged_objects 1" <<<"$out" || fail "$name: damage forgotten: $out"
	rm -f "$drive"
}

# A: the 4th of 20 objects damaged; the 16 after it must all read back
run_case A A-3
# B: "ow" put, then overwritten after 10 objects; the overwrite is damaged
run_case B ow ow
echo "damaged object and damaged overwrite in the replayed region: ok"
