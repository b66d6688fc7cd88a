#!/bin/bash
# One key floods a real broker with `register` as fast as it can
# (tests/integration/py/broker_hostile.py flood) while real clients work:
#  1. the flooder gets error 8 "rate limited: ..." about once a second and
#     at most burst + rate x seconds of its requests are handled; the rest
#     are dropped without an answer;
#  2. meanwhile three new clients register, receive the map and are
#     introduced to every member, and no existing client misses its
#     heartbeats (none is marked down);
#  3. the broker's `stats` count the dropped messages.
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/broker_lib.sh
need_python_curve
SECS=10

"$B/shelf-broker" init --dir "$D/site" --site sim-site >/dev/null
TOKEN=$("$B/shelf-broker" token --dir "$D/site" --uses 10 --ttl 10m)
mkns b 1; mkns f 2
for i in $(seq 1 6); do mkns "c$i" $((i + 10)); done
start_broker
admin slice create hot --replicas 2 --members all --allow-same-domain
for i in 1 2 3; do start_node "c$i" --token "$TOKEN" --slot "$i"; done
same() { slice_agree hot "$1"; } # N: clients 1..N agree on slice hot, N up
wait_until 30 "same 3" || { echo "FAIL: 3 clients do not agree"; exit 1; }

(nsx f "$PY" tests/integration/py/broker_hostile.py flood "$BROKER_EP" "$D/site/broker.pub" "$SECS" \
	>"$D/flood.out" 2>&1; echo "rc=$?" >>"$D/flood.out") &
FPID=$!
PIDS="$PIDS $FPID"
wait_until 5 "grep -q 'reason=\"rate limited' $D/broker.log" || { echo "FAIL: the flood is not rate-limited"; cat "$D/flood.out"; exit 1; }
t0=$(now_ms)
for i in 4 5 6; do start_node "c$i" --token "$TOKEN" --slot "$i"; done
wait_until 20 "same 6" || { echo "FAIL: new clients not introduced during the flood"; for i in $(seq 6); do echo "c$i $(status_line c$i hot)"; done; exit 1; }
dt=$(( $(now_ms) - t0 ))
flooding=1
grep -q "^rc=" "$D/flood.out" && flooding=0
echo "ok 2: 3 clients started, registered and introduced to all 6 members in $dt ms during the flood (still flooding: $flooding)"
[ "$flooding" = 1 ] || { echo "FAIL: the flood ended before the clients were introduced; the test proves nothing"; exit 1; }
wait "$FPID" || true
cat "$D/flood.out"
grep -q "^rc=0" "$D/flood.out" || { echo "FAIL: flood checks"; exit 1; }
echo "ok 1: $(grep '^RESULT' "$D/flood.out")"
if grep -q "to=down" "$D/broker.log"; then echo "FAIL: a client missed heartbeats during the flood"; grep "to=down" "$D/broker.log"; exit 1; fi
admin broker stats >"$D/stats"
RL=$(awk '$1 == "rate_limited" { print $2 }' "$D/stats")
[ "${RL:-0}" -gt 1000 ] || { echo "FAIL: stats rate_limited=$RL"; cat "$D/stats"; exit 1; }
echo "ok 3: no client marked down; broker stats rate_limited=$RL"
