#!/bin/bash
# A short cut moves nothing but hints (issue 14, "Tests"): 12 nodes over 3
# chassis, slice 'default' at R=2, grace 20 s, OBJECTS keys of 4 KiB
# written first. A node (from the seed) has its link cut for CUT s (less
# than the grace period: it is only `down`) while a history_rw.py workload
# writes other keys; then the link comes back. Checked: the node never
# became `out`; once its hints are delivered the holdings of the first
# keys are exactly those before the cut (no copy moved, none created or
# dropped), repair_objects_done summed over the members did not grow (no
# repair copy was sent), `shelf repair default --check-only` finds no
# difference between replicas (ae_diffs_last 0 on every member once its
# pass has ended), and the history has zero anomalies (every acknowledged
# write reads back, no delete comes back, every get succeeded).
set -u
. "$(dirname "$0")/cluster_lib.sh"
. "$(dirname "$0")/heal_lib.sh"
heal_begin hc shelf-hcut
if [ "${LONG:-0}" = 1 ]; then OBJECTS=3000 CUT=12; else OBJECTS=600 CUT=6; fi

# wait_hints WHEN: every member's hints delivered (within 60 s)
wait_hints() {
	local hw i
	for i in $(seq 120); do
		hw=$(hc default counters hints_waiting | awk '{ print $2 }')
		[ "$hw" = 0 ] || [ "$hw" = - ] && return 0
		sleep 0.5
	done
	fail "hints still waiting $1 after 60 s: $hw"
}

heal_up 12 3 20s default:2
hc default fill "$OBJECTS" hc/ "$SEED" --size 4096 || fail "fill"
# the copies before the cut are those at the homes: on a loaded machine a
# home can be slow or miss its heartbeats during the fill, and its copies
# reach it later (as hints or repair copies: they move then, not by the
# cut). Wait until every key is at exactly its homes.
wait_hints "after the fill"
x "$PY" "$RC" "$D" default wait-serving || fail "nodes still busy after the fill"
for i in $(seq 60); do
	hc default holdings hc/ "$D/before.json" >/dev/null || fail "holdings before"
	out=$(hc default at-home "$D/before.json" "$OBJECTS" hc/) && break
	[ $i -lt 60 ] || { echo "$out"; fail "the fill's keys not at exactly their homes within 60 s"; }
	sleep 1
done
done0=$(heal_field default repair_objects_done)
[ "$done0" = null ] && fail "no member reports repair_objects_done (the counters of issue 14 are missing from this firmware)"
v=$(printf 'n%02d' $((RANDOM % 12 + 1)))
h=$D/hist
pids=()
for w in 1 2 3; do
	x "$PY" "$H" work "$h" $((CUT + 4)) "hw/" "$SEED" --keys 20 --max-bytes 262144 --client "w$w" \
		--slice default &
	pids+=($!)
done
sleep 1
x "$PY" "$H" event "$h" cut "$v"
"$C" cut "$v" >/dev/null || fail "cut $v"
echo "cut $v's link at $((SECONDS - T0)) s for $CUT s"
sleep "$CUT"
[ "$(node_state "$v")" = out ] && fail "$v became out within $CUT s (grace 20 s)"
"$C" heal "$v" >/dev/null || fail "heal $v"
x "$PY" "$H" event "$h" heal "$v"
echo "link of $v back at $((SECONDS - T0)) s (it was $(node_state "$v"))"
for w in "${pids[@]}"; do wait "$w" || fail "a worker failed"; done
wait_hints "after the cut"
x "$PY" "$RC" "$D" default wait-serving || fail "nodes still busy"
hc default holdings hc/ "$D/after.json" >/dev/null || fail "holdings after"
"$PY" - "$D/before.json" "$D/after.json" <<'PYEOF' || fail "the first keys' copies changed"
import json, sys
b, a = (json.load(open(p))["nodes"] for p in sys.argv[1:3])
diff = []
for n in sorted(set(b) | set(a)):
    kb, ka = b.get(n, {}), a.get(n, {})
    for k in sorted(set(kb) | set(ka)):
        if kb.get(k) != ka.get(k):
            diff.append(f"{n} {k}: {kb.get(k)} -> {ka.get(k)}")
for d in diff[:20]:
    print("moved:", d)
print(f"{sum(len(v) for v in b.values())} copies before the cut, {len(diff)} changed after it")
sys.exit(1 if diff else 0)
PYEOF
done1=$(heal_field default repair_objects_done)
[ "$done1" = "$done0" ] || fail "repair copies were sent: repair_objects_done $done0 -> $done1"
echo "repair_objects_done stayed $done1: only hints moved"
out=$(x shelf repair default --check-only --json) || { echo "$out"; fail "shelf repair --check-only"; }
diffs=$("$PY" -c 'import json, sys; print(json.load(sys.stdin)["totals"]["ae_diffs_last"])' <<<"$out")
[ "$diffs" = 0 ] || { echo "$out"; fail "anti-entropy found $diffs differences after the cut"; }
echo "shelf repair default --check-only: 0 differences"
# reads only: a write in flight to or through the cut node may time out
# (unknown), which the checker allows; what was acknowledged must read back
out=$(x "$PY" "$H" check "$h" --slice default) || { echo "$out"; fail "history anomalies"; }
echo "$out"
echo "ok: $v cut for $CUT s: only its hints moved, no difference found, in $((SECONDS - T0)) s"
