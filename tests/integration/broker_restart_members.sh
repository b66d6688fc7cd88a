#!/bin/bash
# A restart never shrinks a slice (docs/PROTOCOL.md 6.5), on an 8-node
# cluster of real processes while a client polls the slice's map and a
# workload puts and gets with every operation logged:
#  1. one node's link is cut, the broker is SIGKILLed and restarted: the cut
#     node stays in the map (down), never absent;
#  2. the link is healed, then three plain restarts (SIGKILL, start);
#  3. no map the poller ever saw lacks a member, epochs never go back, and
#     the history check finds every acknowledged write readable with its
#     bytes and no bytes that no put wrote.
set -u
. "$(dirname "$0")/cluster_lib.sh"
cluster_test r shelf-restart
need_python_client
[ -x "${SHELF_BUILD:-$SRC/build}/shelf-broker" ] || { echo "skipped: shelf-broker is not built"; exit 77; }
fail() { echo "FAIL: $*"; tail -n 20 "$SHELF_CLUSTER_DIR/broker/log"; exit 1; }
N=8
D=$SHELF_CLUSTER_DIR
PYD=$SRC/tests/integration/py

"$C" up --nodes $N --replicas 1 >/dev/null || fail "up"
members() { "$C" exec -- shelf slice show default --admin "$D/broker" --json 2>/dev/null | grep -c '"id"'; }
for _ in $(seq 100); do [ "$(members)" = $N ] && break; sleep 0.1; done
[ "$(members)" = $N ] || fail "the default slice has $(members) members, not $N"

"$C" exec -- "$PY" "$PYD/map_poll.py" "$D/broker/clients/demo" "tcp://[fd00:5e1f:0:1::1]:7400" \
	default "$D/maps" "$D/stop" &
POLL=$!
"$C" exec -- "$PY" "$PYD/history.py" work "$D/history" 40 k "${SEED:-$$}" &
WORK=$!
echo "seed ${SEED:-$$}"
restart_broker() {
	kill -KILL "$(cat "$D/broker/pid")"
	sleep "${1:-0}"
	"$C" up --nodes $N --replicas 1 >/dev/null || fail "broker restart"
}
sleep 3
"$C" cut 3 >/dev/null
sleep 6   # n03 is down in the map by now
restart_broker 0.5
sleep 6
"$C" heal 3 >/dev/null
for i in 1 2 3; do
	sleep 3
	restart_broker
done
wait "$WORK"
touch "$D/stop"
wait "$POLL"

# every map lists the same N members; epochs only go up
"$PY" - "$D/maps" $N <<'PY' || fail "a map lacked a member"
import sys
path, n = sys.argv[1], int(sys.argv[2])
maps = [l.split() for l in open(path) if l.split()[1] == "map"]
errs = sum(1 for l in open(path) if l.split()[1] == "err")
ids, last, bad = None, 0, 0
for t, _, epoch, count, up, down, out, left, idl in maps:
    if int(count) != n or (ids is not None and idl != ids):
        print(f"map at {t}: epoch {epoch} lists {count} members (up {up}, down {down})")
        bad += 1
    ids = ids or idl
    if int(epoch) < last:
        print(f"map at {t}: epoch {epoch} after epoch {last}")
        bad += 1
    last = max(last, int(epoch))
downs = sum(1 for m in maps if int(m[5]) > 0)
print(f"maps: {len(maps)} polled ({errs} while the broker was away), epochs up to {last}, "
      f"{downs} with members down, {bad} bad")
sys.exit(1 if bad or not maps or not downs else 0)
PY
grep -q "event=slice_restore slice=default" "$D/broker/log" || fail "no slice_restore in the broker log"
"$C" exec -- "$PY" "$PYD/history.py" check "$D/history" || fail "history check"
echo "ok: 4 broker restarts (one with a link cut): no map lacked a member; history clean"
