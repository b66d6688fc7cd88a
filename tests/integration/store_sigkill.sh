#!/bin/bash
# A writer process doing durable puts is killed with SIGKILL at random
# moments; after each restart every acknowledged put (the writer logs each
# acknowledgement to a pipe) must be present and intact.
# 100 rounds by default, 1,000 with LONG=1. SEED=n replays the kill times.
set -u
B=${SHELF_BUILD:-build}
W="$B/tests/prog/store_writer"
[ -x "$W" ] || { echo "store_writer not built"; exit 1; }
ROUNDS=100
[ "${LONG:-0}" = 1 ] && ROUNDS=1000
SEED=${SEED:-$(date +%s)}
echo "seed $SEED (replay with SEED=$SEED), $ROUNDS rounds"
RANDOM=$SEED
dir=$(mktemp -d /tmp/shelf-sigkill-XXXXXX)
trap 'rm -rf "$dir"' EXIT
drive="$dir/drive.img"
total=0
for r in $(seq 1 "$ROUNDS"); do
	log="$dir/acks.$r"
	"$W" write "$drive" "r$r" >"$log" 2>"$dir/writer.err" &
	pid=$!
	# 20..220 ms, then SIGKILL at a random moment of the write stream
	sleep "0.$(printf '%03d' $((20 + RANDOM % 200)))"
	kill -KILL $pid 2>/dev/null
	wait $pid 2>/dev/null
	if ! out=$("$W" verify "$drive" "$log" 2>&1); then
		echo "round $r: FAILED"
		echo "$out"
		cat "$dir/writer.err"
		exit 1
	fi
	n=$(wc -l <"$log")
	total=$((total + n))
	[ $((r % 10)) = 0 ] && echo "round $r: $out"
done
echo "$ROUNDS SIGKILLs, $total acknowledged puts verified, 0 lost"
