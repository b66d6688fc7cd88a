#!/bin/bash
# A replica SIGKILLed in the middle of a pipelined 64 MiB PUT (issue 13,
# "Tests"): on 6 nodes over 3 chassis, R=2 (min_write_replicas 2), `shelf
# put` of 64 MiB goes to the key's head, which streams it on to the second
# home; the second home is SIGKILLed while the bytes flow. The client must
# get an error or a success through a substitute, never an acknowledgement
# with fewer durable copies than the slice requires: after the killed node
# is started again, every node is read directly (repl_check.py), and an
# acknowledged put must be held byte for byte by at least 2 nodes, while no
# node holds other bytes (a torn copy) under the key. Each trial kills at a
# point of the transfer taken from the seed it prints (SEED=N reruns it);
# LONG=1 runs more trials.
set -u
. "$(dirname "$0")/cluster_lib.sh"
repl_begin rm shelf-rmid
TRIALS=3
[ "${LONG:-0}" = 1 ] && TRIALS=10
W=2
fail() { echo "FAIL: $*"; exit 1; }
x() { "$C" exec -- "$@"; }
ms() { date +%s%3N; }
# ready: "ready:" logged since the node's latest start marker
wait_ready() {
	for _ in $(seq 300); do
		tac "$D/$1/log" | sed '/^--- /q' | grep -q "ready:" && return 0
		sleep 0.1
	done
	fail "$1 not ready after its restart"
}

t0=$SECONDS
# --chunk-size 64M: the 64 MiB object stays one object, pipelined whole
# (large objects in chunks are tests/integration/large_objects.sh's)
"$C" up --nodes 6 --chassis 3 --replicas 2 --drive-size 1G --chunk-size 64M >"$D/up.log" 2>&1 ||
	fail "cluster up: $(tail -n 3 "$D/up.log")"
x "$PY" "$RC" "$D" default wait-up 6 || fail "not 6 members up"
f=$D/big
head -c 64M /dev/urandom >"$f"
t1=$(ms)
x shelf put mid/calibrate "$f" || fail "a 64 MiB put with every node up"
T=$(($(ms) - t1))
echo "a 64 MiB put with every node up: $T ms"

trial=0 attempt=0 mid=0
while [ $trial -lt $TRIALS ]; do
	attempt=$((attempt + 1))
	[ $attempt -le $((TRIALS * 3)) ] || fail "only $mid of $TRIALS kills fell in the middle of a put"
	key=mid/$attempt
	head -c 64M /dev/urandom >"$f"
	sha=$(sha256sum "$f" | cut -d' ' -f1)
	read -r head second < <(x "$PY" "$RC" "$D" default homes "$key") || fail "homes of $key"
	# somewhere in the transfer: 10% to 80% of the time a whole put took
	delay=$((T * (10 + RANDOM % 71) / 100))
	t1=$(ms)
	x shelf put "$key" "$f" >"$D/put.out" 2>"$D/put.err" &
	pid=$!
	sleep "$(awk -v d="$delay" 'BEGIN { printf "%.3f", d / 1000 }')"
	if ! kill -0 $pid 2>/dev/null; then
		wait $pid
		echo "attempt $attempt: the put ended before the kill ($delay ms); again"
		T=$((T * 3 / 4))
		continue
	fi
	"$C" kill "$second" >/dev/null || fail "kill $second"
	at=$(($(ms) - t1))
	wait $pid
	rc=$?
	took=$(($(ms) - t1))
	trial=$((trial + 1))
	mid=$((mid + 1))
	"$C" start "$second" >/dev/null || fail "start $second"
	wait_ready "$second"
	x "$PY" "$RC" "$D" default wait-up 6 || fail "$second is not up again"
	x "$PY" "$RC" "$D" default wait-serving || fail "a node stays busy"
	out=$(x "$PY" "$RC" "$D" default replicas "$key" "$sha") ||
		fail "$key: $(cat "$D/put.err"); $out"
	holders=$(awk '/^holders / { print $2 }' <<<"$out")
	if [ $rc = 0 ]; then
		[ "$holders" -ge $W ] ||
			fail "$key: acknowledged, but only $holders node(s) hold its bytes (of $W required):
$out
put said: $(cat "$D/put.err")"
		how="acknowledged, held byte for byte by $holders nodes"
		grep -q "held by" "$D/put.err" && how="$how (a substitute: $(grep -o 'held by.*' "$D/put.err"))"
	else
		how="refused: $(tr '\n' ' ' <"$D/put.err" | cut -c1-200); $holders node(s) hold the bytes"
	fi
	echo "trial $trial: $second (second home of $key, head $head) SIGKILLed $at ms into the put; after $took ms $how"
	echo "$out" | sed 's/^/    /'
done
echo "all checks passed in $((SECONDS - t0)) s"
