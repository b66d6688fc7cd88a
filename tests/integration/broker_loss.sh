#!/bin/bash
# Peers without the broker, and revocation reaching peers:
#  1. clients a, b and r join slice "hot"; a installs its slice address
#     (ovl_nl) and serves CURVE on it, admitting exactly the members whose
#     certificates verify offline; b and r ping a on its slice address;
#  2. the operator revokes r: a receives the new revocation list with the
#     next delta and refuses r's next connection, while b still gets in;
#  3. the broker is SIGKILLed; b is restarted (a new process with only its
#     cached map and certificates, no broker reachable) and still verifies
#     a's certificate and talks to a over a real CURVE connection.
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/broker_lib.sh

"$B/shelf-broker" init --dir "$D/site" --site sim-site >/dev/null
TOKEN=$("$B/shelf-broker" token --dir "$D/site" --uses 5)
mkns b 1; mkns a 11; mkns nb 12; mkns r 13
start_broker
admin slice create hot --replicas 2 --members all --allow-same-domain
start_node a --token "$TOKEN" --slot 1 --peer-serve hot --ifname eth0 --port 7100
wait_until 20 "grep -qs ^id= $D/a/status" || { echo "FAIL: a has no status"; exit 1; }
AID=$(sed -n 's/^id=//p' "$D/a/status")
start_node nb --token "$TOKEN" --slot 2 --peer-connect "hot:$AID" --ifname eth0
start_node r --token "$TOKEN" --slot 3 --peer-connect "hot:$AID" --ifname eth0
wait_until 30 "grep -qs '^peer=ok' $D/nb/status && grep -qs '^peer=ok' $D/r/status" || {
	echo "FAIL: peers cannot reach a"; cat "$D/nb/status" "$D/r/status" "$D/a.log"; exit 1; }
echo "ok 1: b and r talk to a on its slice address: $(grep ^peer= "$D/nb/status")"

RID=$(sed -n 's/^id=//p' "$D/r/status")
t0=$(now_ms)
admin node revoke "$RID"
wait_until 10 "grep -q '^peer=refused' $D/r/status" || { echo "FAIL: a still admits r"; cat "$D/r/status" "$D/a/status"; exit 1; }
echo "ok 2: a refuses the revoked r $(( $(now_ms) - t0 )) ms after the revocation: $(grep ^peer= "$D/r/status")"
grep -q "crl=1" "$D/a/status"
grep -q "event=refuse .*code=6" "$D/broker.log" || grep -q "event=revoke" "$D/broker.log"
sleep 1.2
grep -q '^peer=ok' "$D/nb/status" || { echo "FAIL: b lost access"; exit 1; }

kill -9 "$BPID"
kill "$PID_nb"
wait "$PID_nb" 2>/dev/null || true
rm -f "$D/nb/status"
start_node nb --peer-connect "hot:$AID" --ifname eth0
sleep 1
wait_until 20 "grep -qs '^peer=ok' $D/nb/status" || { echo "FAIL: without the broker, b cannot reach a"; cat "$D/nb/status"; exit 1; }
grep -q '^registered=0' "$D/nb/status" || { echo "FAIL: b says it is registered with a dead broker"; exit 1; }
echo "ok 3: broker dead; restarted b verified a from its cache and talked to it: $(grep ^peer= "$D/nb/status")"
