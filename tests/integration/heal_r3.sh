#!/bin/bash
# R=3, two nodes lost one after the other (issue 14, "Tests"): 12 nodes over
# 3 chassis, slice 'default' at R=3, grace 3 s. A history_rw.py workload
# runs; node A (from the seed) is SIGKILLed and stays dead; once it is
# `out` the slice must come back to full redundancy on its own
# (heal_objects_degraded and repair_objects_left 0 summed, every key at its
# 3 homes). Then a second workload, and node B (another chassis' or the
# same: from the seed) is killed: full redundancy again. heal_objects_lost
# is 0 throughout and the whole history has zero anomalies. LONG=1: 24
# nodes and longer workloads.
set -u
. "$(dirname "$0")/cluster_lib.sh"
. "$(dirname "$0")/heal_lib.sh"
heal_begin h3 shelf-hr3
if [ "${LONG:-0}" = 1 ]; then N=24 PRE=8 RUN=30 KEYS=60; else N=12 PRE=3 RUN=10 KEYS=24; fi
trap 'lost_watch_stop; "$C" down --wipe >/dev/null 2>&1; rm -rf "$SHELF_CLUSTER_DIR"' EXIT

heal_up "$N" 3 3s default:3
h=$D/hist
a=$((RANDOM % N + 1))
b=$(((a + RANDOM % (N - 1)) % N + 1))
A=$(printf 'n%02d' $a) B=$(printf 'n%02d' $b)
lost_watch default "$D/lost"

# lose NODE ROUND: a workload of RUN s, NODE killed PRE s in, back to full
lose() {
	local pids=() w
	for w in 1 2 3; do
		x "$PY" "$H" work "$h" "$RUN" "h3/" "$SEED$2" --keys "$KEYS" --max-bytes 262144 \
			--client "r$2w$w" --slice default &
		pids+=($!)
	done
	sleep "$PRE"
	x "$PY" "$H" event "$h" kill "$1"
	"$C" kill "$1" >/dev/null || fail "kill $1"
	echo "round $2: killed $1 at $((SECONDS - T0)) s"
	wait_state "$1" out 30
	for w in "${pids[@]}"; do wait "$w" || fail "a worker failed"; done
	wait_full default 60
	at_home default "$h" 60 --hinted-away-ok
	echo "round $2: $1 lost, back at full redundancy (R=3) at $((SECONDS - T0)) s"
}
lose "$A" 1
lose "$B" 2
lost_watch_stop
lost_check "$D/lost"
out=$(x "$PY" "$H" check "$h" --slice default --writes-ok) || {
	echo "$out"
	fail "history anomalies"
}
echo "$out"
echo "ok: $A then $B lost, each time back at full redundancy, in $((SECONDS - T0)) s"
