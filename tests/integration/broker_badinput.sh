#!/bin/bash
# Malformed and oversized messages against a real broker, while it serves
# real clients (tests/integration/py/broker_hostile.py in its own namespace):
#  1. garbage, truncated, trailing bytes, an array, a mistyped field, an
#     unknown type, major version 9, containers 21 deep, an unregistered
#     heartbeat, a 1 MiB frame of junk: each answered with the documented
#     error code and logged as event=refuse;
#  2. a three-frame message: dropped, and the broker logs the link refusal;
#  3. three 8 MiB frames: libzmq (ZMQ_MAXMSGSIZE = 1 MiB + 33) closes the
#     connection before allocating: the broker's peak RSS does not grow by
#     the frame size;
#  4. the broker keeps running: no client is marked down, and a new client's
#     introduction reaches every member afterwards.
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/broker_lib.sh
need_python_curve

"$B/shelf-broker" init --dir "$D/site" --site sim-site >/dev/null
TOKEN=$("$B/shelf-broker" token --dir "$D/site" --uses 10 --ttl 10m)
mkns b 1; mkns h 2
for i in 1 2 3 4; do mkns "c$i" $((i + 10)); done
start_broker
admin slice create hot --replicas 2 --members all --allow-same-domain
for i in 1 2 3; do start_node "c$i" --token "$TOKEN" --slot "$i"; done
same() { slice_agree hot "$1"; } # N: clients 1..N agree on slice hot, N up
wait_until 30 "same 3" || { echo "FAIL: 3 clients do not agree"; tail -20 "$D/broker.log"; exit 1; }
hwm() { sed -n 's/^VmHWM:[^0-9]*\([0-9]*\) kB/\1/p' "/proc/$1/status"; }
BP=$(pgrep -P "$BPID" -x shelf-broker || echo "$BPID") # the broker under `ip netns exec`
[ -r "/proc/$BP/status" ] || BP=$BPID
H0=$(hwm "$BP")
REF0=$(grep -c "event=refuse" "$D/broker.log" || true)

nsx h "$PY" tests/integration/py/broker_hostile.py bad "$BROKER_EP" "$D/site/broker.pub" \
	| tee "$D/hostile.out"
grep -q "^RESULT checks=ok" "$D/hostile.out" || { echo "FAIL: hostile client checks"; tail -20 "$D/broker.log"; exit 1; }
kill -0 "$BPID" || { echo "FAIL: the broker died"; tail "$D/broker.log"; exit 1; }
sleep 0.3
H1=$(hwm "$BP")
REF1=$(grep -c "event=refuse" "$D/broker.log")
echo "ok 1: $((REF1 - REF0)) refusals logged; broker peak RSS $H0 kB -> $H1 kB"
grep -q "event=refuse what=link malformed=1 " "$D/broker.log" || { echo "FAIL: the three-frame message was not logged"; grep "what=link" "$D/broker.log"; exit 1; }
echo "ok 2: $(grep -m1 'what=link' "$D/broker.log" | sed 's/.*event=/event=/')"
if [ $((H1 - H0)) -ge 4096 ]; then
	echo "FAIL: the broker's peak RSS grew by $((H1 - H0)) kB: an 8 MiB frame was allocated"
	exit 1
fi
echo "ok 3: 8 MiB frames cost the broker $((H1 - H0)) kB of peak RSS (cap 1 MiB at the ZeroMQ level)"
if grep -q "to=down" "$D/broker.log"; then echo "FAIL: a client was marked down"; exit 1; fi
start_node c4 --token "$TOKEN" --slot 4
wait_until 20 "same 4" || { echo "FAIL: no introduction after the junk"; exit 1; }
echo "ok 4: broker alive, no client marked down, client 4 introduced to every member"
