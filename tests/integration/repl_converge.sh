#!/bin/bash
# Concurrent overwrites of one key converge (issue 13, "Tests"): on 6 nodes
# over 3 chassis, 4 clients, each through its own node (the key's homes,
# which head their writes and so race each other's versions, then nodes
# that are no home and relay), write one key at the same moment, round after
# round: puts of 0 B to 2 MiB, and a delete in some rounds. After every
# round each replica, read directly, holds the same version (the newest
# any write was acknowledged with) and its bytes, or that delete's
# tombstone; no other node holds a copy. Slice 'default' (R=2) and 'r3'
# (R=3). Prints its seed (SEED=N reruns it); LONG=1 runs 10 times the rounds.
set -u
. "$(dirname "$0")/cluster_lib.sh"
repl_begin rc shelf-rconv
ROUNDS=40
[ "${LONG:-0}" = 1 ] && ROUNDS=400
fail() { echo "FAIL: $*"; exit 1; }
x() { "$C" exec -- env SHELF_CLIENT="$D/broker/clients/conv" "$@"; }

t0=$SECONDS
"$C" up --nodes 6 --chassis 3 --replicas 2 --drive-size 768M >"$D/up.log" 2>&1 ||
	fail "cluster up: $(tail -n 3 "$D/up.log")"
x shelf slice create r3 --replicas 3 --members all >/dev/null || fail "slice create r3"
x bash -c "shelf-broker client --dir $D/broker --name conv --slices default,r3 >/dev/null" ||
	fail "client for default and r3"
for _ in $(seq 200); do
	[ "$(grep -l "slice 'r3': address" "$D"/n*/log | wc -l)" = 6 ] && break
	sleep 0.1
done
[ "$(grep -l "slice 'r3': address" "$D"/n*/log | wc -l)" = 6 ] || fail "not every node joined r3"
for sl in default r3; do
	x "$PY" "$RC" "$D" "$sl" wait-up 6 || fail "slice $sl: not 6 members up"
	t1=$SECONDS
	x "$PY" "$RC" "$D" "$sl" converge "$ROUNDS" "$SEED" --key "cv/$sl" || fail "slice $sl"
	echo "ok $sl: $((SECONDS - t1)) s"
done
echo "all checks passed in $((SECONDS - t0)) s"
