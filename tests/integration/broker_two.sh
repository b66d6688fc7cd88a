#!/bin/bash
# Two broker processes of one site (`shelf-broker add-broker`) and real
# clients registered with both (docs/PROTOCOL.md 6.6):
#  1. each slice has one owner, chosen by name: creating it on the other
#     broker is refused with the owner's fingerprint; we end up with slices
#     owned by each broker;
#  2. six clients (token minted on broker A only) register with both: B
#     admits them by the certificate A signed; every client holds one map per
#     slice, the same one as every other client;
#  3. broker A is SIGKILLed: the clients stay registered with B, keep A's
#     slice maps from their cache, and a seventh client (token of B) joins
#     B's slice and is introduced to every member;
#  4. A restarts: the seventh client is admitted by A through its
#     certificate and joins A's slice; all clients converge again;
#  5. throughout, status files are sampled every 200 ms: no (slice, epoch)
#     was ever seen with two different contents.
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/broker_lib.sh

"$B/shelf-broker" init --dir "$D/site" --site sim-site >/dev/null
"$B/shelf-broker" add-broker --dir "$D/siteB" --from "$D/site" >"$D/add.out"
grep -q "added to site 'sim-site'" "$D/add.out"
TOKEN=$("$B/shelf-broker" token --dir "$D/site" --uses 10 --ttl 10m)
TOKEN_B=$("$B/shelf-broker" token --dir "$D/siteB" --uses 1 --ttl 10m)
EP_A="tcp://[fd00:5e1f::1]:7400"
EP_B="tcp://[fd00:5e1f::2]:7400"
mkns b 1; mkns b2 2
for i in $(seq 1 7); do mkns "c$i" $((i + 10)); done
start_broker
start_broker_b() {
	local n; n=$(grep -c "event=listen" "$D/brokerB.log" 2>/dev/null || true)
	(exec ip netns exec "$P-b2" "$B/shelf-broker" run --dir "$D/siteB" --listen "$EP_B" \
		>>"$D/brokerB.log" 2>&1) &
	BPID_B=$!
	PIDS="$PIDS $BPID_B"
	wait_until 5 "[ \$(grep -c event=listen $D/brokerB.log) -gt ${n:-0} ]" || { echo "broker B did not start"; cat "$D/brokerB.log"; exit 1; }
}
start_broker_b
admin_a() { nsx b "$B/shelf" "$@" --broker "$EP_A" --admin "$D/site"; }
admin_b() { nsx b2 "$B/shelf" "$@" --broker "$EP_B" --admin "$D/siteB"; }

# 1. ownership by name
SA=""; SB=""
for i in $(seq 0 40); do
	name="s$i"
	if admin_a slice create "$name" --replicas 2 --members all --allow-same-domain >"$D/create.out" 2>&1; then
		admin_b slice create "$name" --replicas 2 --members all --allow-same-domain >"$D/create.out" 2>&1 &&
			{ echo "FAIL: both brokers created $name"; exit 1; }
		[ -z "$SA" ] && SA=$name
	else
		grep -q "belongs to broker" "$D/create.out" || { echo "FAIL: A refused $name oddly"; cat "$D/create.out"; exit 1; }
		admin_b slice create "$name" --replicas 2 --members all --allow-same-domain >/dev/null ||
			{ echo "FAIL: neither broker owns $name"; exit 1; }
		[ -z "$SB" ] && SB=$name
	fi
	[ -n "$SA" ] && [ -n "$SB" ] && break
done
[ -n "$SA" ] && [ -n "$SB" ] || { echo "FAIL: one broker owns every name"; exit 1; }
echo "ok 1: slice $SA owned by A, slice $SB owned by B; the other broker refuses each: $(head -c 160 "$D/create.out")"

start_two() { # NAME TOKEN SLOT
	(exec ip netns exec "$P-$1" "$B/tests/prog/ctl_node" --state "$D/$1" --ca "$D/site/ca.pub" \
		--broker "$EP_A,$D/site/broker.pub" --broker "$EP_B,$D/siteB/broker.pub" \
		--token "$2" --slot "$3" >/dev/null 2>>"$D/$1.log") &
	eval "PID_$1=$!"
	PIDS="$PIDS $!"
}
for i in $(seq 1 6); do start_two "c$i" "$TOKEN" "$i"; done

# every (slice, epoch) seen by any client, with its content digest
(while :; do
	for f in "$D"/c*/status; do grep -h "^map " "$f" 2>/dev/null | awk '{ print $2, $3, $NF }'; done
	sleep 0.2
done >>"$D/samples") &
PIDS="$PIDS $!"

agree() { # SLICE COUNT FIRST LAST [BROKERS]: clients FIRST..LAST agree on SLICE with COUNT up
	local d="" line
	for i in $(seq "$3" "$4"); do
		line=$(status_line "c$i" "$1") || return 1
		case "$line" in *" members=$2 up=$2 "*) ;; *) return 1 ;; esac
		[ -z "$d" ] && d=${line##*digest=}
		[ "${line##*digest=}" = "$d" ] || return 1
		[ -z "${5:-}" ] || grep -q "^brokers=$5$" "$D/c$i/status" || return 1
	done
}
wait_until 40 "agree $SA 6 1 6 11 && agree $SB 6 1 6 11" || {
	echo "FAIL: clients do not converge"; for i in $(seq 6); do cat "$D/c$i/status"; done
	tail -5 "$D/broker.log" "$D/brokerB.log"; exit 1; }
nc=$(grep -c "event=admit .*via=certificate" "$D/brokerB.log" || true)
na=$(grep -c "event=admit" "$D/brokerB.log" || true)
echo "ok 2: 6 clients registered with both brokers (B admitted $nc of $na by A's certificates) and hold one map per slice:"
status_line c1 "$SA"; status_line c1 "$SB"

# 3. A dies
kill -9 "$BPID"; wait "$BPID" 2>/dev/null || true
EA=$(status_line c1 "$SA" | sed 's/.*epoch=\([0-9]*\).*/\1/')
start_two c7 "$TOKEN_B" 7
t0=$(now_ms)
wait_until 20 "agree $SB 7 1 7" || { echo "FAIL: c7 not introduced through B with A dead"; for i in $(seq 7); do status_line c$i $SB; done; tail "$D/brokerB.log"; exit 1; }
dt=$(( $(now_ms) - t0 ))
wait_until 10 "agree $SA 6 1 6 01" || { echo "FAIL: clients did not keep A's map or lost B"; for i in $(seq 6); do cat "$D/c$i/status"; done; exit 1; }
if grep -q "to=down" "$D/brokerB.log"; then echo "FAIL: B marked a client down"; exit 1; fi
[ "$(status_line c1 "$SA" | sed 's/.*epoch=\([0-9]*\).*/\1/')" = "$EA" ] || { echo "FAIL: $SA changed without its owner"; exit 1; }
echo "ok 3: A dead: clients work with B (brokers=01), keep $SA at epoch $EA from cache; c7 introduced in $SB to all 7 in $dt ms"

# 4. A comes back with its state
LISTENS=2 start_broker
wait_until 30 "agree $SA 7 1 7 11 && agree $SB 7 1 7 11" || {
	echo "FAIL: no convergence after A returned"; for i in $(seq 7); do cat "$D/c$i/status"; done; exit 1; }
grep -q "event=admit .*via=certificate" "$D/broker.log" || { echo "FAIL: A did not admit c7 by certificate"; exit 1; }
echo "ok 4: A back: c7 admitted by B's certificate, all 7 clients agree on $SA and $SB"
status_line c7 "$SA"; status_line c7 "$SB"

# 5. no conflicting epochs, ever
sort -u "$D/samples" >"$D/samples.u"
awk '{ k = $1 " " $2; if (k in d && d[k] != $3) { print "conflict:", k, d[k], $3; bad = 1 } d[k] = $3 }
	END { exit bad }' "$D/samples.u" || { echo "FAIL: conflicting epochs observed"; exit 1; }
echo "ok 5: $(wc -l <"$D/samples") samples, $(wc -l <"$D/samples.u") distinct (slice, epoch, content): no epoch with two contents"
