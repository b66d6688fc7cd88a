#!/bin/bash
# Two brokers of one site that do NOT list each other (an operator error:
# peers/ removed) both own a slice "dup" (in their state files before they
# start, as if the operator had created it on each), so both issue epochs.
# The clients must still agree (docs/PROTOCOL.md 6.6): every client follows
# the broker with the lower Ed25519 key and ignores the other's maps. To
# show the rule and not an accident of timing, the lower-key broker starts
# first; the clients follow it, then the higher-key broker starts and claims
# the slice too: no client switches. A fifth client then joins, and all hold
# the same map from the same owner.
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/broker_lib.sh
PY=""
for p in /usr/bin/python3 python3; do
	if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import msgpack' 2>/dev/null; then PY=$p; break; fi
done
[ -n "$PY" ] || { echo "skip: needs python3-msgpack"; exit 77; }

"$B/shelf-broker" init --dir "$D/x" --site sim-site >"$D/init-x.out"
"$B/shelf-broker" add-broker --dir "$D/y" --from "$D/x" >"$D/init-y.out"
rm -rf "$D/x/peers" "$D/y/peers"
key() { "$PY" -c 'import sys, msgpack; print(msgpack.unpackb(msgpack.unpackb(open(sys.argv[1], "rb").read())[0])["sign"].hex())' "$1"; }
fpr() { sed -n 's/^broker id: *fingerprint //p' "$D/init-$1.out"; }
if [[ "$(key "$D/x/broker.cert")" < "$(key "$D/y/broker.cert")" ]]; then LO=x HI=y; else LO=y HI=x; fi
FP_LO=$(fpr $LO); FP_HI=$(fpr $HI)
TOKEN=$("$B/shelf-broker" token --dir "$D/$LO" --uses 10 --ttl 10m)
EP_LO="tcp://[fd00:5e1f::1]:7400"
EP_HI="tcp://[fd00:5e1f::2]:7400"
mkns lo 1; mkns hi 2
for i in $(seq 1 5); do mkns "c$i" $((i + 10)); done
run_broker() { # NS DIR EP: with slice "dup" created on it before any client can tell it otherwise
	mkdir -p "$D/$2/state"
	printf 'dup 2 1 %s all\n' "$(key "$D/$2/broker.cert")" >"$D/$2/state/slices"
	(exec ip netns exec "$P-$1" "$B/shelf-broker" run --dir "$D/$2" --listen "$3" \
		>>"$D/broker-$2.log" 2>&1) &
	PIDS="$PIDS $!"
	wait_until 5 "grep -q event=listen $D/broker-$2.log" || { echo "broker $2 did not start"; exit 1; }
}
start_two() { # NAME SLOT
	(exec ip netns exec "$P-$1" "$B/tests/prog/ctl_node" --state "$D/$1" --ca "$D/x/ca.pub" \
		--broker "$EP_LO,$D/$LO/broker.pub" --broker "$EP_HI,$D/$HI/broker.pub" \
		--token "$TOKEN" --slot "$2" >/dev/null 2>>"$D/$1.log") &
	PIDS="$PIDS $!"
}
agree() { # COUNT LAST BROKERS: clients 1..LAST with brokers=BROKERS, owner FP_LO, one digest
	local d="" line
	for i in $(seq 1 "$2"); do
		grep -q "^brokers=$3$" "$D/c$i/status" 2>/dev/null || return 1
		line=$(status_line "c$i" dup) || return 1
		case "$line" in *" members=$1 up=$1 "*" owner=$FP_LO "*) ;; *) return 1 ;; esac
		[ -z "$d" ] && d=${line##*digest=}
		[ "${line##*digest=}" = "$d" ] || return 1
	done
}
run_broker lo "$LO" "$EP_LO"
for i in $(seq 1 4); do start_two "c$i" "$i"; done
wait_until 30 "agree 4 4 10" || { echo "FAIL: clients do not follow the first broker"; for i in $(seq 4); do cat "$D/c$i/status"; done; exit 1; }
echo "ok 1: 4 clients follow the lower-key broker $FP_LO: $(status_line c1 dup)"
run_broker hi "$HI" "$EP_HI"
wait_until 30 "agree 4 4 11" || { echo "FAIL: clients disagree once $FP_HI claims 'dup' too"; for i in $(seq 4); do cat "$D/c$i/status"; done; exit 1; }
grep -q "event=join slice=dup" "$D/broker-$HI.log" || { echo "FAIL: $FP_HI did not claim the slice; the test proves nothing"; exit 1; }
sleep 2
agree 4 4 11 || { echo "FAIL: a client switched owner"; for i in $(seq 4); do status_line c$i dup; done; exit 1; }
echo "ok 2: $FP_HI admitted them too and claims 'dup' ($(grep -c 'event=join slice=dup' "$D/broker-$HI.log") joins); no client switched: $(status_line c1 dup)"
start_two c5 5
wait_until 20 "agree 5 5 11" || { echo "FAIL: c5 not in the followed map"; for i in $(seq 5); do status_line c$i dup; done; exit 1; }
echo "ok 3: c5 joined; all 5 clients hold one map of 'dup' from $FP_LO: $(status_line c5 dup)"
