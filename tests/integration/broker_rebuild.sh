#!/bin/bash
# A broker that lost its state directory learns the members it lacks from
# the maps the nodes hold (map_report, docs/PROTOCOL.md 6.5), on a 5-node
# cluster of real processes while a workload puts and gets through it, every
# operation logged:
#  1. n05 is SIGKILLed for good (its drive died); the broker is SIGKILLed,
#     its state/ wiped and the broker started again;
#  2. within LEARN_S seconds (default 10) of that start every live node holds
#     the broker's epoch (asked over its data plane, MAP), and the broker's
#     map lists all 5 members, n05 `down`; every map the broker serves from
#     then on does too (a poller checks them, signatures included);
#  3. at least one node reported its map; no node refuses a map after that;
#  4. the history check finds every acknowledged write readable with its
#     bytes, and no bytes that no put wrote.
set -u
. "$(dirname "$0")/cluster_lib.sh"
cluster_test w shelf-rebuild
need_python_client
BIN=${SHELF_BUILD:-$SRC/build}
[ -x "$BIN/shelf-broker" ] || { echo "skipped: shelf-broker is not built"; exit 77; }
N=5
LEARN_S=${LEARN_S:-10}
D=$SHELF_CLUSTER_DIR
PYD=$SRC/tests/integration/py
EP="tcp://[fd00:5e1f:0:1::1]:7400"
BP="$SHELF_CLUSTER_NS-bp"
REFUSAL="without a record of removal"
POLL= WORK=
stop_bg() {
	touch "$D/stop"
	for p in $POLL $WORK; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	POLL= WORK=
}
trap 'stop_bg; "$C" down --wipe >/dev/null 2>&1; rm -rf "$SHELF_CLUSTER_DIR"' EXIT
fail() {
	echo "FAIL: $*"
	tail -n 25 "$D/broker/log"
	for i in 1 2 3 4; do grep "control plane" "$D/n0$i/log" | tail -n 3; done
	exit 1
}
now_ms() { date +%s%3N; }
refusals() { grep -c "$REFUSAL" "$D/n0$1/log"; }

"$C" up --nodes $N --replicas 1 >/dev/null || fail "up"
members() { "$C" exec -- shelf slice show default --admin "$D/broker" --json 2>/dev/null | grep -c '"id"'; }
# up to 60 s: on a loaded machine a node can take tens of seconds to
# register (what is tested here is the broker's rebuild, not join speed)
t0=$SECONDS
until [ "$(members)" = $N ] || [ $((SECONDS - t0)) -ge 60 ]; do sleep 0.2; done
[ "$(members)" = $N ] || fail "the default slice has $(members) members, not $N"
# the poller and the checker have clients of their own: each key has its own
# rate limit, and the workload's CLI uses the demo client
for c in poll check; do
	"$BIN/shelf-broker" client --dir "$D/broker" --name $c --slices default >/dev/null ||
		fail "cannot issue client $c"
done

# n05's drive dies: it never registers again
"$C" kill 5 >/dev/null || fail "kill n05"
sleep 6 # the broker shows it down; every node holds that map

echo "seed ${SEED:-$$}"
"$C" exec -- "$PY" "$PYD/history.py" work "$D/history" 25 r "${SEED:-$$}" &
WORK=$!
sleep 3
kill -KILL "$(cat "$D/broker/pid")"
sleep 0.5
rm -rf "$D/broker/state"
T0=$(now_ms)
echo "--- up with state/ wiped $(date -u +%FT%TZ)" >>"$D/broker/log"
ip netns exec "$BP" "$BIN/shelf-broker" run --dir "$D/broker" --listen "$EP" \
	>>"$D/broker/log" 2>&1 &
echo $! >"$D/broker/pid"
"$C" exec -- "$PY" "$PYD/map_poll.py" "$D/broker/clients/poll" "$EP" default "$D/maps" \
	"$D/stop" &
POLL=$!

# every live node holds the broker's map, which lists all N members, n05 down
"$C" exec -- env PYD="$PYD" "$PY" - "$D/broker/clients/check" "$EP" $N "$LEARN_S" "$T0" \
	>"$D/converge" 2>&1 <<'PY' || { cat "$D/converge"; fail "the nodes did not converge"; }
import ipaddress, os, sys, time
sys.path.insert(0, os.environ["PYD"])
import shelf_client as sc
import zmq

d, ep, n, learn_s, t0 = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
deadline = t0 / 1000 + learn_s
last = ""
while time.time() < deadline:
    try:
        m = sc.Client.from_dir(d, ep).fetch_map("default")
        states = [x["state"] for x in m["members"]]
        held = {}
        for x in m["members"]:
            if x["state"] == "up":
                a = str(ipaddress.IPv6Address(x["addr"]))
                # a fresh client each time: a client keeps the newest map it saw
                held[a] = sc.Client.from_dir(d, ep).map_from_node("default", a, x["port"])["epoch"]
        last = (f"broker epoch {m['epoch']}: {len(states)} members, {states.count('up')} up, "
                f"{states.count('down')} down; the nodes hold epochs {sorted(held.values())}")
        if (len(states) == n and states.count("up") == n - 1 and states.count("down") == 1 and
                len(held) == n - 1 and all(e == m["epoch"] for e in held.values())):
            print(f"converged {int(time.time() * 1000) - t0} ms after the broker started: {last}")
            sys.exit(0)
    except (sc.ShelfError, OSError, zmq.ZMQError) as e:
        last = f"error: {e}"
    time.sleep(0.2)
print(f"not converged within {learn_s} s: {last}")
sys.exit(1)
PY
cat "$D/converge"
for i in 1 2 3 4; do refusals $i >"$D/n0$i.refusals"; done
wait "$WORK" # the workload goes on through and after the restart
WORK=
sleep 2 # more heartbeats and maps: nothing may be refused again
stop_bg

# from LEARN_S after the start on, every map lists all N members, one down;
# epochs only go up
"$PY" - "$D/maps" $N "$T0" "$LEARN_S" <<'PY' || fail "a map served after the deadline lacked a member"
import sys
path, n, t0, learn_s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
maps = [l.split() for l in open(path) if l.split()[1] == "map"]
last, bad, late, first_full = 0, 0, 0, None
for t, _, epoch, count, up, down, out, left, idl in maps:
    if int(count) == n and first_full is None:
        first_full = int(t) - t0
    if int(t) >= t0 + learn_s * 1000:
        late += 1
        if int(count) != n or int(down) != 1:
            print(f"map at {t}: epoch {epoch} lists {count} members (up {up}, down {down})")
            bad += 1
    if int(epoch) < last:
        print(f"map at {t}: epoch {epoch} after epoch {last}")
        bad += 1
    last = max(last, int(epoch))
print(f"maps: {len(maps)} polled, {late} after the deadline; the first listing all {n} members "
      f"{first_full} ms after the start; epochs up to {last}; {bad} bad")
sys.exit(1 if bad or not late else 0)
PY
grep -q "event=slice_recover slice=default" "$D/broker/log" || fail "no slice_recover in the broker log"
# the first report may also add live members that had not registered again
# yet (added=2 or more); n05 is never added any other way
grep "event=slice_learn slice=default" "$D/broker/log" | grep -qE "added=[1-9]" ||
	fail "the broker did not learn n05 from a node's map"
reported=0
for i in 1 2 3 4; do
	r1=$(cat "$D/n0$i.refusals") r2=$(refusals $i)
	[ "$r2" = "$r1" ] || fail "n0$i refused a map after the nodes converged: $(grep "$REFUSAL" "$D/n0$i/log" | tail -n 1)"
	grep -q "reported it to the broker" "$D/n0$i/log" && reported=$((reported + 1))
done
echo "$reported of 4 live nodes refused the relearning broker's first maps and reported theirs; none refused one after"
[ "$reported" -ge 1 ] || fail "no node reported its map to the broker"
"$C" exec -- "$PY" "$PYD/history.py" check "$D/history" || fail "history check"
echo "ok: state/ wiped with n05 dead: every node holds a map of all $N members (n05 down) within ${LEARN_S} s; history clean"
