#!/bin/bash
# Bad input to self-healing (issue 14, "Bad input"): 12 nodes over 3
# chassis (drives of 640M), slice 'default' at R=2 and slice 'r1' at R=1
# over the same nodes.
#   1. py/heal_bad.py refuse: a key's home is offered, with the other
#      home's node certificate, a repair copy whose crc does not match its
#      bytes, one older than what it holds, and an older repair delete:
#      each refused (or superseded), nothing overwritten;
#   2. py/heal_bad.py cut: a repair copy of 1 MiB cut off halfway (the
#      connection closed): nothing half-written is visible, and the copy
#      sent again whole completes;
#   3. a drive that fills during a rebalance: the members' repair rate is
#      held low (`shelf repair --rate 64K --duty 5`), a node joins (`add 1`), and while
#      the rebalance runs, slice r1 objects placed on the new node fill its
#      drive. Some member must report repair_paused (and its log says why);
#      once the r1 objects are deleted and the drive is no longer full, the
#      rebalance resumes and completes (every object at exactly its homes).
set -u
. "$(dirname "$0")/cluster_lib.sh"
. "$(dirname "$0")/heal_lib.sh"
heal_begin hb shelf-hbad
B=$SRC/tests/integration/py/heal_bad.py
OBJECTS=800
# 64 MiB chunks: the 48 MiB objects that fill n13's drive stay whole, on
# n13 (the default chunk size, 16 MiB, would spread them over the slice)
HEAL_DRIVE=640M HEAL_CHUNK_SIZE=64M heal_up 12 3 60s default:2 r1:1

# 1 and 2
head -c 5000 /dev/urandom >"$D/obj"
x shelf put hb/target "$D/obj" >/dev/null || fail "put hb/target"
x "$PY" "$B" "$D" default refuse hb/target || fail "refuse"
x shelf put hb/cut "$D/obj" >/dev/null || fail "put hb/cut"
x "$PY" "$B" "$D" default cut hb/cut 1048576 || fail "cut"

# 3
hc default fill "$OBJECTS" hb/ "$SEED" --size 16384 || fail "fill"
# slow (the lowest rate a node takes, 64K, and 5 % of each second) so that
# the rebalance is still running when n13's drive is full
out=$(x shelf repair default --rate 64K --duty 5 --no-wait) || { echo "$out"; fail "shelf repair --rate 64K --duty 5"; }
hc default holdings hb/ "$D/before.json" >/dev/null || fail "holdings before"
"$C" add 1 >/dev/null || fail "add 1"
wait_joined default 13
wait_joined r1 13
echo "n13 joined at $((SECONDS - T0)) s; filling its drive through slice r1"
keys=$(x "$PY" "$RC" "$D" r1 keys-on n13 12 hbfill/) || fail "keys on n13"
head -c 48M /dev/urandom >"$D/big"
filled=
for k in $keys; do
	if ! x shelf put --slice r1 "$k" "$D/big" >/dev/null 2>"$D/put.err"; then
		grep -qi "no-space\|full\|space" "$D/put.err" || fail "put $k: $(cat "$D/put.err")"
		filled=$k
		break
	fi
	echo "$k" >>"$D/fillkeys"
done
[ -n "$filled" ] || fail "n13's drive did not fill with $(wc -l <"$D/fillkeys") objects of 48 MiB"
echo "n13's drive is full after $(wc -l <"$D/fillkeys") objects of 48 MiB: $(head -c 200 "$D/put.err")"
for i in $(seq 150); do
	p=$(heal_field default repair_paused)
	[ "$p" = null ] && fail "no member reports repair_paused (the counters of issue 14 are missing from this firmware)"
	[ "$p" -gt 0 ] && break
	sleep 0.2
done
[ "$p" -gt 0 ] || fail "no member paused its repair within 30 s of n13's drive filling"
why=$(grep -ih "paus" "$D"/n*/log | tail -n 3)
[ -n "$why" ] || fail "repair paused, but no node log says why"
echo "repair paused on $p member(s); the logs say: $why"
hc default pernode repair_paused_reason | awk '$2 ~ /^[1-9]/ { print "  " $1 " repair_paused_reason " $2 }'
while read -r k; do x shelf rm --slice r1 "$k" >/dev/null || fail "rm $k"; done <"$D/fillkeys"
for i in $(seq 150); do
	[ "$(x "$PY" "$HC" "$D" r1 pernode full | awk '$1 == "n13" { print $2 }')" = 0 ] && break
	sleep 0.2
done
echo "r1 objects deleted: n13 no longer full at $((SECONDS - T0)) s"
out=$(x shelf repair default --rate 0 --duty 100 --no-wait) || { echo "$out"; fail "shelf repair --rate 0 --duty 100"; }
wait_full default 90
for i in $(seq 60); do
	p=$(heal_field default repair_paused)
	hc default holdings hb/ "$D/after.json" >/dev/null || fail "holdings after"
	out=$(hc default moved "$D/before.json" "$D/after.json" n13 0.6) && [ "$p" = 0 ] && break
	[ $i -lt 60 ] || { echo "$out"; fail "the rebalance did not resume and complete (repair_paused $p)"; }
	sleep 1.5
done
echo "$out" | head -n 1
hc default verify "$OBJECTS" hb/ "$SEED" --size 16384 || fail "verify"
echo "ok: bad repair copies refused, a cut stream left nothing and its retry completed, a full drive paused the rebalance and it resumed, in $((SECONDS - T0)) s"
