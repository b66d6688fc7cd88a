#!/bin/bash
# A broker and 24 clients (the real node_ctl client in tests/prog/ctl_node),
# each in its own network namespace on one bridge:
#  1. every client receives the same map of slice "hot";
#  2. a client that stops heartbeating (SIGSTOP) is marked down within the
#     5 s timeout, in every other client's map;
#  3. a 25th client's introduction reaches every member;
#  4. the broker is SIGKILLed and restarted with an EMPTY state directory:
#     registry and slice definition come back from the clients within two
#     heartbeat intervals, at a higher epoch.
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/broker_lib.sh
N=24

"$B/shelf-broker" init --dir "$D/site" --site sim-site >/dev/null
TOKEN=$("$B/shelf-broker" token --dir "$D/site" --uses 30 --ttl 10m)
mkns b 1
for i in $(seq 1 $((N + 1))); do mkns "c$i" $((i + 10)); done
start_broker
admin slice create hot --replicas 3 --members all --allow-same-domain
for i in $(seq 1 $N); do start_node "c$i" --token "$TOKEN" --slot "$i"; done

all_same() { # COUNT: every client 1..$1 holds members=COUNT up=UP with one digest
	local want=$1 up=$2 d="" line
	for i in $(seq 1 "$3"); do
		line=$(status_line "c$i" hot) || return 1
		case "$line" in *" members=$want up=$up "*) ;; *) return 1 ;; esac
		[ -z "$d" ] && d=${line##*digest=}
		[ "${line##*digest=}" = "$d" ] || return 1
	done
}
t0=$(now_ms)
wait_until 60 "all_same $N $N $N" || { echo "FAIL: clients do not agree on the map"; for i in $(seq 1 $N); do echo "c$i: $(status_line c$i hot)"; done; tail -20 "$D/broker.log"; exit 1; }
echo "ok 1: $N clients hold the same map of $N members ($(( $(now_ms) - t0 )) ms after start)"
status_line c1 hot

# 2. c$N stops heartbeating
kill -STOP "$(eval echo \$PID_c$N)"
t0=$(now_ms)
wait_until 9 "all_same $N $((N - 1)) $((N - 1))" || { echo "FAIL: c$N not marked down"; status_line c1 hot; exit 1; }
dt=$(( $(now_ms) - t0 ))
echo "ok 2: silent client marked down in every map after $dt ms (timeout 5000 ms)"
grep -q "event=state node=.* from=up to=down" "$D/broker.log"
kill -CONT "$(eval echo \$PID_c$N)"
wait_until 10 "all_same $N $N $N" || { echo "FAIL: c$N did not come back up"; exit 1; }

# 3. a new client joins; its introduction reaches every member
t0=$(now_ms)
start_node "c$((N + 1))" --token "$TOKEN" --slot $((N + 1))
wait_until 20 "all_same $((N + 1)) $((N + 1)) $((N + 1))" || { echo "FAIL: introduction did not reach every member"; exit 1; }
echo "ok 3: client $((N + 1)) introduced to all $N members in $(( $(now_ms) - t0 )) ms (process start included)"
E1=$(status_line c1 hot | sed 's/.*epoch=\([0-9]*\).*/\1/')

# 4. SIGKILL, empty state directory, restart
kill -9 "$BPID"
wait "$BPID" 2>/dev/null || true
rm -rf "$D/site/state"
LISTENS=2 start_broker
t0=$(now_ms)
recovered() {
	admin slices --json >"$D/slices.json" 2>/dev/null || return 1
	grep -q "\"name\": \"hot\", \"replicas\": 3, \"epoch\": [0-9]*, \"members\": $((N + 1))," "$D/slices.json" || return 1
	[ "$(admin nodes 2>/dev/null | grep -c ' up ')" -eq $((N + 1)) ]
}
wait_until 15 recovered || { echo "FAIL: broker did not recover"; cat "$D/slices.json"; tail -30 "$D/broker.log"; exit 1; }
dt=$(( $(now_ms) - t0 ))
E2=$(sed -n 's/.*"epoch": \([0-9]*\).*/\1/p' "$D/slices.json")
echo "ok 4: empty-disk broker rebuilt $((N + 1)) registrations and slice 'hot' in $dt ms; epoch $E1 -> $E2"
[ "$E2" -gt "$E1" ] || { echo "FAIL: recovered epoch $E2 is not above $E1"; exit 1; }
grep -q "event=slice_recover slice=hot" "$D/broker.log"
if [ "$dt" -gt 2000 ]; then
	echo "FAIL: recovery took $dt ms, more than two heartbeat intervals (2000 ms)"
	exit 1
fi
wait_until 10 "all_same $((N + 1)) $((N + 1)) $((N + 1))" || { echo "FAIL: clients disagree after recovery"; exit 1; }
echo "ok 5: all clients agree on the recovered map"
admin broker stats
