#!/bin/bash
# A broker that lost its state directory learns the members it lacks from
# the maps the nodes hold (map_report, docs/PROTOCOL.md 6.5), on a 5-node
# cluster of real processes while a workload puts and gets through it, every
# operation logged:
#  1. n05 is SIGKILLed for good (its drive died), the broker is SIGKILLed,
#     its state/ wiped and the broker started again;
#  2. within LEARN_S seconds of that start, every map the broker serves
#     lists all 5 members (n05 `down`), and keeps doing so;
#  3. the 4 live nodes hold the broker's epoch (asked over their data plane,
#     MAP), reported their maps, and log no refusal after that;
#  4. the history check finds every acknowledged write readable with its
#     bytes, and no bytes that no put wrote.
set -u
. "$(dirname "$0")/cluster_lib.sh"
cluster_test w shelf-rebuild
need_python_client
BIN=${SHELF_BUILD:-$SRC/build}
[ -x "$BIN/shelf-broker" ] || { echo "skipped: shelf-broker is not built"; exit 77; }
fail() { echo "FAIL: $*"; tail -n 20 "$SHELF_CLUSTER_DIR/broker/log"; exit 1; }
N=5
LEARN_S=${LEARN_S:-10}
D=$SHELF_CLUSTER_DIR
PYD=$SRC/tests/integration/py
EP="tcp://[fd00:5e1f:0:1::1]:7400"
BP="$SHELF_CLUSTER_NS-bp"
now_ms() { date +%s%3N; }

"$C" up --nodes $N >/dev/null || fail "up"
members() { "$C" exec -- shelf slice show default --admin "$D/broker" --json 2>/dev/null | grep -c '"id"'; }
for _ in $(seq 100); do [ "$(members)" = $N ] && break; sleep 0.1; done
[ "$(members)" = $N ] || fail "the default slice has $(members) members, not $N"

# n05's drive dies: it never registers again
"$C" kill 5 >/dev/null || fail "kill n05"
sleep 6 # the broker shows it down; every node holds that map

"$C" exec -- "$PY" "$PYD/history.py" work "$D/history" 24 r "${SEED:-$$}" &
WORK=$!
echo "seed ${SEED:-$$}"
sleep 3
for i in 1 2 3 4; do
	grep -c "without a record of removal" "$D/n0$i/log" >"$D/n0$i.refusals0" || true
done
kill -KILL "$(cat "$D/broker/pid")"
sleep 0.5
rm -rf "$D/broker/state"
T0=$(now_ms)
echo "--- up (state wiped) $(date -u +%FT%TZ)" >>"$D/broker/log"
ip netns exec "$BP" "$BIN/shelf-broker" run --dir "$D/broker" --listen "$EP" \
	>>"$D/broker/log" 2>&1 &
echo $! >"$D/broker/pid"
"$C" exec -- "$PY" "$PYD/map_poll.py" "$D/broker/clients/demo" "$EP" default "$D/maps" \
	"$D/stop" &
POLL=$!

# every live node holds the broker's map, which lists all N members
"$C" exec -- env PYD="$PYD" "$PY" - "$D/broker/clients/demo" "$EP" $N "$LEARN_S" "$T0" \
	>"$D/converge" 2>&1 <<'PY' || { cat "$D/converge"; fail "the nodes did not converge"; }
import ipaddress, os, sys, time
sys.path.insert(0, os.environ["PYD"])
import shelf_client as sc

d, ep, n, learn_s, t0 = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
deadline = t0 / 1000 + learn_s
last = ""
while time.time() < deadline:
    try:
        m = sc.Client.from_dir(d, ep).fetch_map("default")
        st = {sc.fingerprint(x["id"]): x["state"] for x in m["members"]}
        held = {}
        for x in m["members"]:
            if x["state"] != "up":
                continue
            a = str(ipaddress.IPv6Address(x["addr"]))
            # a fresh client: one keeps the newest map it has seen, not the node's
            held[a] = sc.Client.from_dir(d, ep).map_from_node("default", a, x["port"])["epoch"]
        last = f"broker epoch {m['epoch']}: {len(st)} members {sorted(st.values())}, nodes hold {held}"
        if (len(st) == n and list(st.values()).count("up") == n - 1 and
                list(st.values()).count("down") == 1 and
                all(e == m["epoch"] for e in held.values())):
            print(f"converged {int(time.time() * 1000) - t0} ms after the start: {last}")
            sys.exit(0)
    except (sc.ShelfError, OSError) as e:
        last = f"error: {e}"
    time.sleep(0.2)
print(f"not converged within {learn_s} s: {last}")
sys.exit(1)
PY
cat "$D/converge"
for i in 1 2 3 4; do
	grep -c "without a record of removal" "$D/n0$i/log" >"$D/n0$i.refusals1"
done
sleep 4 # heartbeats go on: nothing may be refused again
wait "$WORK"
touch "$D/stop"
wait "$POLL"

# from LEARN_S after the start on, every map lists all N members; epochs only go up
"$PY" - "$D/maps" $N "$T0" "$LEARN_S" <<'PY' || fail "a map served after the deadline lacked a member"
import sys
path, n, t0 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
after = t0 + int(sys.argv[4]) * 1000
maps = [l.split() for l in open(path) if l.split()[1] == "map"]
last, bad, late, first_full = 0, 0, 0, None
for t, _, epoch, count, up, down, out, left, idl in maps:
    if int(count) == n and first_full is None:
        first_full = int(t)
    if int(t) >= after:
        late += 1
        if int(count) != n or int(down) != 1:
            print(f"map at {t}: epoch {epoch} lists {count} members (up {up}, down {down})")
            bad += 1
    if int(epoch) < last:
        print(f"map at {t}: epoch {epoch} after epoch {last}")
        bad += 1
    last = max(last, int(epoch))
full = f"{first_full - t0} ms after the start" if first_full else "never"
print(f"maps: {len(maps)} polled, {late} after the deadline, the first with all {n} members "
      f"{full}, epochs up to {last}; {bad} bad")
sys.exit(1 if bad or not late else 0)
PY
grep -q "event=slice_recover slice=default" "$D/broker/log" || fail "no slice_recover in the broker log"
grep -q "event=slice_learn slice=default" "$D/broker/log" || fail "no slice_learn in the broker log"
reported=0
for i in 1 2 3 4; do
	r0=$(cat "$D/n0$i.refusals0") r1=$(cat "$D/n0$i.refusals1")
	r2=$(grep -c "without a record of removal" "$D/n0$i/log")
	echo "n0$i: $((r1 - r0)) map(s) refused while the broker relearned, $((r2 - r1)) after"
	[ "$r2" = "$r1" ] || fail "n0$i refused a map after the nodes converged: $(grep "without a record" "$D/n0$i/log" | tail -n 1)"
	grep -q "reported it to the broker" "$D/n0$i/log" && reported=$((reported + 1))
done
[ "$reported" -ge 1 ] || fail "no node reported its map to the broker"
"$C" exec -- "$PY" "$PYD/history.py" check "$D/history" || fail "history check"
echo "ok: state/ wiped with n05 dead: all $N members (n05 down) in every map within ${LEARN_S} s; history clean"
