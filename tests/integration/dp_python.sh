#!/bin/bash
# An independent Python data-plane client (tests/integration/py/shelf_client.py,
# written from docs/PROTOCOL.md alone) against a 3-node cluster: put/get/stat/
# list/delete objects of 0 B, 1 B, 100 KiB and 3 MiB, exchange objects with the
# C CLI both ways, and check that a tampered MAC makes the node close.
set -u
. "$(dirname "$0")/cluster_lib.sh"
cluster_test py shelf-dppy
need_python_client
fail() { echo "FAIL: $*"; exit 1; }

"$C" up --nodes 3 --drive-size 12Q 2>"$SHELF_CLUSTER_DIR/up.err" && fail "up took --drive-size 12Q"
grep -q "is not a size" "$SHELF_CLUSTER_DIR/up.err" || fail "bad --drive-size: $(cat "$SHELF_CLUSTER_DIR/up.err")"
"$C" up --nodes 3 --replicas 1 --drive-size 768M || fail "cluster up"
for n in n01 n02 n03; do
	sz=$(stat -c %s "$SHELF_CLUSTER_DIR/$n/drive.img")
	[ "$sz" = $((768 << 20)) ] || fail "$n: --drive-size 768M made a drive of $sz bytes"
done
w=$SHELF_CLUSTER_DIR/py
mkdir -p "$w"
T="$SRC/tests/integration/py/dp_test.py"

"$C" exec -- "$PY" "$T" "$w" main || fail "python client checks"

"$C" exec -- shelf get py/for-cli "$w/for-cli.got" || fail "C CLI: get py/for-cli"
cmp -s "$w/for-cli.expect" "$w/for-cli.got" || fail "C CLI read py/for-cli differently"
echo "C CLI get py/for-cli (written by Python): byte for byte: ok"

head -c 123457 /dev/urandom >"$w/from-cli"
"$C" exec -- shelf put cli/obj "$w/from-cli" || fail "C CLI: put cli/obj"
"$C" exec -- "$PY" "$T" "$w" cli || fail "python get of a CLI object"
echo "all checks passed"
