#!/bin/bash
# A substitute's hints table filled (issue 14, "hints_max"; issue 13,
# hinted hand-off): 4 nodes over 2 chassis, slice 'default' at R=2, every
# node started with hints_max=16. V (from the seed) is SIGKILLed and stays
# `down` (the grace period is the default 10 min); then NKEYS keys that
# have V among their homes are put one after another, each with bytes of
# its own, every answer logged:
#   - while V is down, each write needs a hint on a substitute; once the
#     substitutes' tables are full, writes are refused (exit 1, `busy`),
#     never acknowledged without their hint: at most 16 per substitute
#     are acknowledged, and at least one write is refused;
#   - every node's hints stay within hints_max (its hints_waiting counter);
#   - V starts again and takes its hints back: every acknowledged key then
#     reads back with its exact bytes, and both homes (V too) hold them; a refused key
#     reads back as not-found or its own bytes (a write may land on the
#     live home before the substitute refuses; it was never acknowledged),
#     never other bytes;
#   - with the tables drained, writes to V's keys are acknowledged again.
# Prints its seed (SEED=N reruns it).
set -u
. "$(dirname "$0")/cluster_lib.sh"
repl_begin hf shelf-hfill
HMAX=16 NKEYS=50 # 50 > 3 substitutes x 16: some write must be refused
fail() {
	echo "FAIL: $* (seed $SEED)"
	for n in n01 n02 n03 n04; do grep -i "hint" "$D/$n/log" 2>/dev/null | tail -n 3 | sed "s/^/$n: /"; done
	exit 1
}
x() { "$C" exec -- "$@"; }
t0=$SECONDS

SHELF_NODE_SET="hints_max=$HMAX" "$C" up --nodes 4 --chassis 2 --replicas 2 --drive-size 640M >"$D/up.log" 2>&1 ||
	fail "cluster up: $(tail -n 3 "$D/up.log")"
x "$PY" "$RC" "$D" default wait-up 4 || fail "not 4 members up"
# max_hints: the most hints_waiting any node reports (shelf status --json)
max_hints() {
	x shelf status --json 2>/dev/null | "$PY" -c '
import json, sys
vals = []
def walk(o):
    if isinstance(o, dict):
        c = o.get("counters")
        if isinstance(c, dict) and "hints_waiting" in c:
            vals.append(int(c["hints_waiting"]))
        o = list(o.values())
    if isinstance(o, list):
        for v in o:
            walk(v)
walk(json.load(sys.stdin))
print(max(vals) if vals else "none")'
}

v=n0$((RANDOM % 4 + 1))
keys=$(x "$PY" "$RC" "$D" default keys-on "$v" "$NKEYS" hf/) || fail "keys on $v"
"$C" kill "$v" >/dev/null || fail "kill $v"
mkdir -p "$D/obj"
acked=() refused=()
for k in $keys; do
	f=$D/obj/${k//\//_}
	head -c $((RANDOM % 4096 + 1)) /dev/urandom >"$f"
	if x shelf put "$k" "$f" --timeout 4000 2>"$D/put.err"; then
		acked+=("$k")
	else
		grep -qi "busy\|hint" "$D/put.err" || fail "put $k refused for another reason: $(cat "$D/put.err")"
		refused+=("$k")
	fi
done
echo "$v down: ${#acked[@]} of $NKEYS writes acknowledged, ${#refused[@]} refused ($(head -c 200 "$D/put.err"))"
[ ${#refused[@]} -ge 1 ] || fail "no write was refused: the substitutes took more than $HMAX hints each"
[ ${#acked[@]} -le $((3 * HMAX)) ] || fail "${#acked[@]} writes acknowledged: more than 3 substitutes x hints_max $HMAX"
[ ${#acked[@]} -ge 1 ] || fail "no write was acknowledged with $v down"
mh=$(max_hints)
[ "$mh" != none ] && [ "$mh" -le $HMAX ] || fail "a node holds $mh hints, hints_max is $HMAX"
echo "the most hints any node holds: $mh (hints_max $HMAX)"
"$C" start "$v" >/dev/null || fail "start $v"
x "$PY" "$RC" "$D" default wait-serving || fail "the slice did not serve reads after $v came back"
for k in "${acked[@]}"; do
	f=$D/obj/${k//\//_}
	x shelf get "$k" "$D/back" 2>"$D/get.err" || fail "acknowledged $k: $(cat "$D/get.err")"
	cmp -s "$f" "$D/back" || fail "acknowledged $k read back other bytes"
done
# the first few read directly from every member, V included: both homes
# hold the acknowledged bytes, no member other bytes
for k in "${acked[@]:0:4}"; do
	f=$D/obj/${k//\//_}
	sha=$(sha256sum <"$f" | cut -d' ' -f1)
	out=$(x "$PY" "$RC" "$D" default replicas "$k" "$sha") || fail "acknowledged $k, read directly: $out"
	[ "$(grep -c " home $sha" <<<"$out")" = 2 ] || fail "acknowledged $k: not on both homes: $out"
done
nf=0
for k in "${refused[@]}"; do
	f=$D/obj/${k//\//_}
	x shelf get "$k" "$D/back" 2>"$D/get.err"
	case $? in
	3) nf=$((nf + 1)) ;;
	0) cmp -s "$f" "$D/back" || fail "refused $k read back bytes never written to it" ;;
	*) fail "refused $k: $(cat "$D/get.err")" ;;
	esac
done
echo "$v back: every acknowledged key reads its bytes (and every home holds them); of the refused, $nf not-found, $((${#refused[@]} - nf)) with their own bytes"
more=$(x "$PY" "$RC" "$D" default keys-on "$v" 8 hf2/) || fail "keys on $v"
head -c 1000 /dev/urandom >"$D/obj/more"
for k in $more; do
	x shelf put "$k" "$D/obj/more" 2>"$D/put.err" ||
		fail "put $k with every node up after the hand-off: $(cat "$D/put.err")"
done
echo "ok: the hints tables drained, writes acknowledged again, in $((SECONDS - t0)) s"
