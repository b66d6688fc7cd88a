#!/bin/bash
# Revocations survive broker restarts, also with an EMPTY state directory:
#  1. clients a, b and r join slice "hot"; the operator revokes r and a node
#     id that never registered: the list reaches version 2 (a gets version 1
#     with the delta that removes r; the stranger's revocation sends no
#     delta), and the site directory's `revoked` file holds both ids and r's
#     serial;
#  2. the broker is SIGKILLed and restarted: a and b come back and receive
#     list version 2; r (still running, still presenting its token and
#     certificate) is refused with error 6 "node is revoked";
#  3. SIGKILL again, the state directory is deleted, and r is restarted with
#     a fresh enrolment token: the broker rebuilds the registry and slice from
#     the clients' handed-back certificates and definitions, but r stays
#     refused and is in no map; revoking b then gives list version 3, never
#     a lower one, and a receives it.
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/broker_lib.sh

"$B/shelf-broker" init --dir "$D/site" --site sim-site >/dev/null
TOKEN=$("$B/shelf-broker" token --dir "$D/site" --uses 5 --ttl 10m)
mkns b 1; mkns a 11; mkns nb 12; mkns r 13
start_broker
admin slice create hot --replicas 2 --members all --allow-same-domain
start_node a --token "$TOKEN" --slot 1
start_node nb --token "$TOKEN" --slot 2
start_node r --token "$TOKEN" --slot 3
members() { # NODE COUNT: NODE holds "hot" with COUNT members, all up
	case "$(status_line "$1" hot)" in *" members=$2 up=$2 "*) return 0 ;; esac
	return 1
}
wait_until 30 "members a 3 && members nb 3 && members r 3" || { echo "FAIL: no map of 3"; exit 1; }
RID=$(sed -n 's/^id=//p' "$D/r/status")
BID=$(sed -n 's/^id=//p' "$D/nb/status")
STRANGER=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
admin node revoke "$RID"
admin node revoke "$STRANGER" | grep -q "version 2" || { echo "FAIL: second revocation is not version 2"; exit 1; }
wait_until 10 "members a 2 && grep -q '^crl=1' $D/a/status" || { echo "FAIL: a did not get the list"; cat "$D/a/status"; exit 1; }
grep -q "^crl_version 2$" "$D/site/revoked" && grep -q "^node $RID [0-9a-f]\{64\}$" "$D/site/revoked" &&
	grep -q "^node $STRANGER -$" "$D/site/revoked" && grep -q "^serial [0-9]" "$D/site/revoked" ||
	{ echo "FAIL: $D/site/revoked"; cat "$D/site/revoked"; exit 1; }
echo "ok 1: r and a stranger revoked (list version 2); r left a's map with list version 1; $D/site/revoked:"
sed 's/^/    /' "$D/site/revoked"

kill -9 "$BPID"; wait "$BPID" 2>/dev/null || true
: >"$D/broker.log"
start_broker
wait_until 15 "admin nodes 2>/dev/null | grep -c ' up ' | grep -qx 2" || { echo "FAIL: a and b not back"; admin nodes; exit 1; }
wait_until 10 "grep -q 'code=6 reason=\"[a-z ]*revoked\"' $D/broker.log" || { echo "FAIL: r not refused after the restart"; tail "$D/broker.log"; exit 1; }
admin nodes | grep -q "^$RID" && { echo "FAIL: r is registered again"; exit 1; }
sleep 1
grep -q '^registered=0' "$D/r/status" || { echo "FAIL: r thinks it is registered"; cat "$D/r/status"; exit 1; }
wait_until 5 "members a 2 && grep -q '^crl=2' $D/a/status" || { echo "FAIL: a's map changed or no list version 2"; cat "$D/a/status"; exit 1; }
echo "ok 2: after SIGKILL and restart r is refused ($(grep -m1 'code=6' "$D/broker.log" | sed 's/.*reason=/reason=/')); a and b are back with list version 2"

kill -9 "$BPID"; wait "$BPID" 2>/dev/null || true
rm -rf "$D/site/state"
kill "$PID_r"; wait "$PID_r" 2>/dev/null || true
TOKEN2=$("$B/shelf-broker" token --dir "$D/site" --uses 1 --ttl 10m)
: >"$D/broker.log"
start_broker
start_node r --token "$TOKEN2" --slot 3
wait_until 15 "admin slices 2>/dev/null | grep -q hot && admin nodes 2>/dev/null | grep -c ' up ' | grep -qx 2" || { echo "FAIL: empty-disk broker did not recover"; tail "$D/broker.log"; exit 1; }
wait_until 10 "grep -q 'code=6 reason=\"[a-z ]*revoked\"' $D/broker.log" || { echo "FAIL: r not refused by the empty-disk broker"; tail "$D/broker.log"; exit 1; }
grep -q "event=slice_recover slice=hot" "$D/broker.log"
sleep 1
grep -q '^registered=0' "$D/r/status" && members a 2 && members nb 2 || { echo "FAIL: r is back in the slice"; cat "$D/a/status" "$D/r/status"; exit 1; }
echo "ok 3: empty state directory: slice recovered from the clients, r (fresh token) still refused"
admin node revoke "$BID" | grep -q "version 3" || { echo "FAIL: the next revocation is not version 3"; exit 1; }
wait_until 10 "grep -q '^crl=3' $D/a/status && members a 1" || { echo "FAIL: a did not get version 3"; cat "$D/a/status"; exit 1; }
echo "ok 4: revoking b after the empty-disk restart gives list version 3 (never backwards); a has it"
