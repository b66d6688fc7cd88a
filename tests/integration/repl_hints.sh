#!/bin/bash
# Hints and hinted hand-off on a slice of R = 2 over a 5-node cluster: a
# home is SIGKILLed; overwrites and a delete of its keys succeed through
# substitutes, which count hints for it; a substitute is SIGKILLed and
# restarted and still holds every hint; the home restarts with its old
# copies on its drive and, read directly while it takes its hints back,
# answers busy or the newest bytes, never an old copy nor the deleted key;
# then every hint is delivered, the home holds each key at its version,
# and no substitute keeps a copy. Then another node is cut off
# (shelf-cluster cut) during writes and healed: its hints are delivered
# too. SEED (printed) seeds the data.
set -u
. "$(dirname "$0")/cluster_lib.sh"
cluster_test rh shelf-hints
need_python_client
fail() { echo "FAIL: $*"; for n in n01 n02 n03 n04 n05; do tail -n 8 "$SHELF_CLUSTER_DIR/$n/log"; done; exit 1; }
SEED=${SEED:-$RANDOM}
echo "seed $SEED"

[ -x "${SHELF_BUILD:-build}/shelf-broker" ] || { echo "skipped: no broker build"; exit 77; }
"$C" up --nodes 5 >/dev/null || fail "cluster up"
B="$SHELF_CLUSTER_DIR/broker"
"$C" exec -- shelf slice create r2 --replicas 2 --members all --allow-same-domain >/dev/null ||
	fail "slice create r2"
"$C" exec -- bash -c "shelf-broker client --dir $B --name r2c --slices default,r2 >/dev/null" ||
	fail "client for r2"
for _ in $(seq 100); do
	[ "$(grep -l "slice 'r2': address" "$SHELF_CLUSTER_DIR"/n*/log | wc -l)" = 5 ] && break
	sleep 0.1
done
py() { "$C" exec -- env SEED="$SEED" SHELF_CLIENT="$B/clients/r2c" "$PY" \
	"$SRC/tests/integration/py/hints_test.py" "$@" "$SHELF_CLUSTER_DIR"; }
pyn() { local m=$1 n=$2; "$C" exec -- env SEED="$SEED" SHELF_CLIENT="$B/clients/r2c" "$PY" \
	"$SRC/tests/integration/py/hints_test.py" "$m" "$SHELF_CLUSTER_DIR" "$n"; }

v=$(py prep) || fail "prep: $v"
"$C" kill "$v" >/dev/null || fail "kill $v"
s=$(pyn down "$v") || fail "writes with $v down: $s"
echo "victim $v, substitute $s"
"$C" kill "$s" >/dev/null || fail "kill $s"
"$C" start "$s" >/dev/null || fail "start $s"
pyn same "$v" || fail "the substitute's hints after its restart"
"$C" start "$v" >/dev/null || fail "start $v"
pyn back "$v" || fail "hand-off to $v"
# a node cut off from the backplane during writes, then healed: its hints
# are delivered and every copy ends at its home
"$C" cut "$s" >/dev/null || fail "cut $s"
pyn cutw "$s" || fail "writes with $s cut"
sleep 3
"$C" heal "$s" >/dev/null || fail "heal $s"
pyn healed "$s" || fail "hand-off to $s after heal"
grep -q "hints: every member says it holds no hint" "$SHELF_CLUSTER_DIR/$v/log" ||
	grep -q "hints: taking back" "$SHELF_CLUSTER_DIR/$v/log" || fail "$v logged no sync"
echo "all checks passed"
