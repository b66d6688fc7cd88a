#!/bin/bash
# The slice's min_write_replicas from the signed map, and tombstone GC, on
# a 4-node cluster over 2 chassis whose nodes run with
# tombstone_gc_after=2s: a deleted key's tombstone is held by both homes,
# then dropped by both once both hold it and 2 s passed; on slice w1 (R=2,
# W=1, the two nodes of chassis c1) with one of them SIGKILLed, a PUT
# succeeds with one copy (W comes from the map each node holds) and
# `shelf put` warns that fewer than R copies are held.
set -u
. "$(dirname "$0")/cluster_lib.sh"
cluster_test rg shelf-wgc
need_python_client
fail() { echo "FAIL: $*"; for n in n01 n02 n03 n04; do tail -n 8 "$SHELF_CLUSTER_DIR/$n/log"; done; exit 1; }

[ -x "${SHELF_BUILD:-build}/shelf-broker" ] || { echo "skipped: no broker build"; exit 77; }
export SHELF_NODE_SET="tombstone_gc_after=2s"
"$C" up --nodes 4 --chassis 2 >/dev/null || fail "cluster up"
B="$SHELF_CLUSTER_DIR/broker"
"$C" exec -- shelf slice create r2 --replicas 2 --members all >/dev/null || fail "slice create r2"
"$C" exec -- shelf slice create w1 --replicas 2 --min-write-replicas 1 --members chassis=c1 \
	--allow-same-domain >/dev/null || fail "slice create w1"
"$C" exec -- bash -c "shelf-broker client --dir $B --name wc --slices default,r2,w1 >/dev/null" ||
	fail "client"
for _ in $(seq 100); do
	[ "$(grep -l "slice 'r2': address" "$SHELF_CLUSTER_DIR"/n*/log | wc -l)" = 4 ] &&
		[ "$(grep -l "slice 'w1': address" "$SHELF_CLUSTER_DIR"/n*/log | wc -l)" = 2 ] && break
	sleep 0.1
done
py() { "$C" exec -- env SHELF_CLIENT="$B/clients/wc" "$PY" \
	"$SRC/tests/integration/py/wgc_test.py" "$1" "$SHELF_CLUSTER_DIR" "${@:2}"; }

# the nodes of w1 cache its definition with W
for _ in $(seq 50); do
	[ "$(grep -l '^w1 2 .* min_write=1' "$SHELF_CLUSTER_DIR"/n0*/slices 2>/dev/null | wc -l)" = 2 ] && break
	sleep 0.1
done
[ "$(grep -l '^w1 2 .* min_write=1' "$SHELF_CLUSTER_DIR"/n0*/slices 2>/dev/null | wc -l)" = 2 ] ||
	fail "w1's members do not cache W: $(cat "$SHELF_CLUSTER_DIR"/n0*/slices)"
py gc || fail "tombstone GC"
v=$(py wvictim) || fail "w1 victim: $v"
"$C" kill "$v" >/dev/null || fail "kill $v"
py w1 "$v" || fail "a W=1 write with a home down"
# the maps each node caches and hands out keep W: clients verify them
out=$("$C" exec -- bash -c "echo hello > /tmp/wgc.$$ && SHELF_CLIENT=$B/clients/wc shelf put w/2 /tmp/wgc.$$ --slice w1; rm -f /tmp/wgc.$$" 2>&1) ||
	fail "shelf put on w1 with a home down: $out"
echo "$out" | grep -q "warning" || fail "shelf put did not warn of a copy away from its home: $out"
echo "shelf put: $out"
echo "all checks passed"
