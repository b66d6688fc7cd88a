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
T0=$SECONDS
step() { echo "$((SECONDS - T0)) s: $*"; }
restart_broker() {
	kill -KILL "$(cat "$D/broker/pid")"
	sleep "${1:-0}"
	timeout 120 "$C" up --nodes $N --replicas 1 >"$D/up.log" 2>&1 ||
		fail "broker restart: $(tail -n 3 "$D/up.log")"
	step "broker started again"
}
# wait_for PID SECONDS WHAT: PID ends within SECONDS (else what runs is shown)
wait_for() {
	local t=$SECONDS
	while kill -0 "$1" 2>/dev/null; do
		[ $((SECONDS - t)) -lt "$2" ] || {
			ps -eo pid,ppid,etimes,args --forest | grep -E "shelf|python" | grep -v grep | tail -n 20
			fail "$3 still running after $2 s"
		}
		sleep 0.5
	done
	wait "$1"
}
sleep 3
"$C" cut 3 >/dev/null
step "n03 cut"
sleep 6   # n03 is down in the map by now
restart_broker 0.5
sleep 6
"$C" heal 3 >/dev/null
step "n03 healed"
for i in 1 2 3; do
	sleep 3
	restart_broker
done
# the workload runs 40 s; an operation that hangs is cut at 30 s
wait_for "$WORK" 90 "the workload (history.py work)"
touch "$D/stop"
wait_for "$POLL" 30 "the map poller"
step "workload and poller done"

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
timeout 180 "$C" exec -- "$PY" "$PYD/history.py" check "$D/history" || fail "history check (exit $?)"
echo "ok: 4 broker restarts (one with a link cut): no map lacked a member; history clean"
