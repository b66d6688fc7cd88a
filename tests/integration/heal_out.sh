#!/bin/bash
# A slice returns to full redundancy on its own (issue 14, "Tests"): 24
# nodes over 3 chassis, slice 'default' at R=2, the broker's grace period
# 3 s. Three clients run history_rw.py workloads (puts, overwrites,
# deletes, gets) through the `shelf` CLI; one node (from the seed) is
# SIGKILLed and never started again. After the grace period the broker
# marks it `out`, and with no operator step the survivors re-create its
# copies: the members' heal_objects_degraded and repair_objects_left sum
# to 0, and every key of the history is at its R homes under the new map
# (repl_check.py at-home), one version on every home for the keys written
# only by acknowledged writes. heal_objects_lost, read every second, is 0
# throughout, and the history check finds zero anomalies (every get
# succeeded, every write acknowledged). LONG=1: a longer workload and
# more keys.
set -u
. "$(dirname "$0")/cluster_lib.sh"
. "$(dirname "$0")/heal_lib.sh"
heal_begin ho shelf-hout
if [ "${LONG:-0}" = 1 ]; then PRE=10 OUT=40 KEYS=80; else PRE=4 OUT=14 KEYS=30; fi
WORKERS=3
trap 'lost_watch_stop; "$C" down --wipe >/dev/null 2>&1; rm -rf "$SHELF_CLUSTER_DIR"' EXIT

heal_up 24 3 3s default:2
h=$D/hist
victim=$(printf 'n%02d' $((RANDOM % 24 + 1)))
lost_watch default "$D/lost"
pids=()
for w in $(seq "$WORKERS"); do
	x "$PY" "$H" work "$h" $((PRE + OUT)) "ho/" "$SEED" --keys "$KEYS" --max-bytes 262144 \
		--client "w$w" --slice default &
	pids+=($!)
done
sleep "$PRE"
x "$PY" "$H" event "$h" kill "$victim"
"$C" kill "$victim" >/dev/null || fail "kill $victim"
echo "killed $victim at $((SECONDS - T0)) s; the workload goes on"
wait_state "$victim" out 30
echo "$victim is out at $((SECONDS - T0)) s"
for w in "${pids[@]}"; do wait "$w" || fail "a worker failed"; done
echo "workload over at $((SECONDS - T0)) s"
wait_full default 60
at_home default "$h" 60 --hinted-away-ok
lost_watch_stop
lost_check "$D/lost"
out=$(x "$PY" "$H" check "$h" --slice default --writes-ok) || {
	echo "$out"
	fail "history anomalies"
}
echo "$out"
echo "ok: $victim lost, slice default back at full redundancy with no operator step, in $((SECONDS - T0)) s"
