#!/bin/bash
# Repair under a rate limit (issue 14, "Tests"): 12 nodes over 3 chassis,
# slice 'default' at R=2, grace 3 s, OBJECTS keys of 16 KiB. `shelf repair
# default --rate RATE` sets every member's repair rate limit; the GET p99
# of a client is measured (quiet); a node (from the seed) is SIGKILLed and
# goes `out`; while the survivors re-create its copies, the client's GET
# p99 is measured for 3 s (printed against the quiet one), then, with no
# client traffic (client traffic goes first, so a client's gets slow the
# repair down by design), each member's repair_bytes_done is read at the
# start and the end of a WINDOW s window: the rate of the members that had
# repair work left throughout, averaged, must not exceed RATE by more
# than 10 % and must reach at least 80 % of it (a window of 6 s holds about
# 24 objects per member: one object more or less is 4 %; below the limit,
# the members lose time between objects when 12 sanitized nodes share 2
# slow cores: 58933 B/s, 10 % under, was seen on CI's machine). Then the slice must reach full redundancy. LONG=1: more objects
# and a longer window.
# test-runner: alone
set -u
. "$(dirname "$0")/cluster_lib.sh"
. "$(dirname "$0")/heal_lib.sh"
heal_begin hq shelf-hrate
RATE=65536
if [ "${LONG:-0}" = 1 ]; then OBJECTS=8000 WINDOW=12; else OBJECTS=3000 WINDOW=6; fi
SIZE=16384

heal_up 12 3 3s default:2
hc default fill "$OBJECTS" hq/ "$SEED" --size "$SIZE" || fail "fill"
out=$(x shelf repair default --rate "$RATE" --no-wait) || { echo "$out"; fail "shelf repair --rate $RATE"; }
echo "every member's repair rate limit set to $RATE B/s"
quiet=$(hc default getlat "$OBJECTS" hq/ "$SEED" 3 --size "$SIZE") || fail "quiet gets: $quiet"
echo "quiet: $quiet"
v=$(printf 'n%02d' $((RANDOM % 12 + 1)))
"$C" kill "$v" >/dev/null || fail "kill $v"
wait_state "$v" out 30
for i in $(seq 100); do
	left=$(heal_field default repair_objects_left)
	[ "$left" = null ] && fail "no member reports repair_objects_left (the counters of issue 14 are missing from this firmware)"
	[ "$left" -gt 0 ] && break
	sleep 0.2
done
[ "$left" -gt 0 ] || fail "no repair work after $v went out"
echo "$v out, repair under way ($left objects left) at $((SECONDS - T0)) s"
busy=$(hc default getlat "$OBJECTS" hq/ "$SEED" 3 --size "$SIZE") || fail "gets during the repair: $busy"
hc default pernode repair_bytes_done >"$D/done0"
t0=$(date +%s.%N)
sleep "$WINDOW"
hc default pernode repair_bytes_done >"$D/done1"
t1=$(date +%s.%N)
hc default pernode repair_objects_left >"$D/left1"
res=$("$PY" - "$D/done0" "$D/done1" "$D/left1" "$t0" "$t1" "$RATE" <<'PYEOF'
import sys
rd = lambda p: dict(l.split() for l in open(p) if len(l.split()) == 2)
d0, d1, left = rd(sys.argv[1]), rd(sys.argv[2]), rd(sys.argv[3])
dt, rate = float(sys.argv[5]) - float(sys.argv[4]), int(sys.argv[6])
busy = [n for n in d1 if left.get(n, "0").isdigit() and int(left[n]) > 0
        and d0.get(n, "").isdigit() and d1[n].isdigit()]
if not busy:
    print("none"); sys.exit(0)
rates = {n: (int(d1[n]) - int(d0[n])) / dt for n in busy}
mean = sum(rates.values()) / len(rates)
print(f"{mean:.0f} {len(busy)} " + " ".join(f"{n}={r:.0f}" for n, r in sorted(rates.items())))
PYEOF
)
[ "$res" = none ] && fail "no member had repair work left throughout the $WINDOW s window (the repair was too quick to measure)"
mean=${res%% *}
echo "repair rate over $WINDOW s, members busy throughout: mean $mean B/s against the limit $RATE ($res)"
awk -v m="$mean" -v r="$RATE" 'BEGIN { exit !(m >= 0.8 * r && m <= 1.1 * r) }' ||
	fail "measured repair rate $mean B/s is not within 80 % .. 110 % of $RATE"
qp=$(sed -n 's/.*p99_ms \([0-9.]*\).*/\1/p' <<<"$quiet")
bp=$(sed -n 's/.*p99_ms \([0-9.]*\).*/\1/p' <<<"$busy")
echo "client GET p99: $bp ms during the repair against $qp ms quiet (ratio $(awk -v a="$bp" -v b="$qp" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'))"
wait_full default 120
echo "ok: repair at $mean B/s under a $RATE B/s limit, in $((SECONDS - T0)) s"
