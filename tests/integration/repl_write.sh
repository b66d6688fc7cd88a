#!/bin/bash
# Replicated writes on a slice of R = 2 over a 4-node cluster: objects of
# 0 B to 9 MiB written through the head, the second home and a node that is
# no home are on both homes byte for byte (read from each node directly,
# with the same version); overwrites and deletes follow; forwarded writes
# that break a rule are refused with nothing stored. With a home SIGKILLed,
# writes succeed through a substitute and say one copy is at its home.
set -u
. "$(dirname "$0")/cluster_lib.sh"
cluster_test rw shelf-repl
need_python_client
fail() { echo "FAIL: $*"; for n in n01 n02 n03 n04; do tail -n 5 "$SHELF_CLUSTER_DIR/$n/log"; done; exit 1; }

[ -x "${SHELF_BUILD:-build}/shelf-broker" ] || { echo "skipped: no broker build"; exit 77; }
"$C" up --nodes 4 >/dev/null || fail "cluster up"
B="$SHELF_CLUSTER_DIR/broker"
"$C" exec -- shelf slice create r2 --replicas 2 --members all >/dev/null || fail "slice create r2"
"$C" exec -- bash -c "shelf-broker client --dir $B --name r2c --slices default,r2 >/dev/null" ||
	fail "client for r2"
for _ in $(seq 100); do
	[ "$(grep -l "slice 'r2': address" "$SHELF_CLUSTER_DIR"/n*/log | wc -l)" = 4 ] && break
	sleep 0.1
done
[ "$(grep -l "slice 'r2': address" "$SHELF_CLUSTER_DIR"/n*/log | wc -l)" = 4 ] ||
	fail "not every node joined r2"
"$C" exec -- env SHELF_CLIENT="$B/clients/r2c" "$PY" "$SRC/tests/integration/py/repl_test.py" \
	main "$SHELF_CLUSTER_DIR" || fail "replicated writes"
# SIGKILL the second home of a key: writes go on with a substitute
v=$("$C" exec -- env SHELF_CLIENT="$B/clients/r2c" "$PY" "$SRC/tests/integration/py/repl_test.py" \
	victim "$SHELF_CLUSTER_DIR") || fail "victim: $v"
"$C" kill "$v" >/dev/null || fail "kill $v"
"$C" exec -- env SHELF_CLIENT="$B/clients/r2c" "$PY" "$SRC/tests/integration/py/repl_test.py" \
	killed "$SHELF_CLUSTER_DIR" "$v" || fail "writes with $v killed"
echo "all checks passed"
