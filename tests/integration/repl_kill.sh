#!/bin/bash
# Replicated slices survive dead nodes (issue 13, "Tests"): 24 nodes over 3
# chassis, several clients running history_rw.py workloads (puts, overwrites,
# deletes, gets, 0 B to 8 MiB) through the `shelf` CLI while nodes are
# SIGKILLed and, a while later (OUT s, longer up to 2 OUT until a get returned
# bytes and a write was acknowledged during the outage), started again:
#   1. slice 'default', R=2: one node killed;
#   2. slice 'r3', R=3: two nodes killed at once;
#   3. slice 'default', R=2: a whole chassis (8 nodes) killed.
# Each case's history is checked whole: zero anomalies (every acknowledged
# write readable at its version or a newer one, no acknowledged delete back,
# nothing never written), every get succeeded, the outage included (no
# --during-fail-ok), and every write was acknowledged (--writes-ok: only one
# in flight at the moment of a kill may fail). The victims come from the
# seed it prints (SEED=N reruns them); LONG=1 runs longer outages; CASES
# (default "r2-one r3-two r2-chassis") runs only the cases it names.
set -u
. "$(dirname "$0")/cluster_lib.sh"
cluster_test rk shelf-rkill
[ -x "${SHELF_BUILD:-$SRC/build}/shelf-broker" ] || { echo "skipped: no broker build"; exit 77; }
seed_begin
D=$SHELF_CLUSTER_DIR
H=$SRC/tests/integration/py/history_rw.py
CL=$D/broker/clients/hist
WORKERS=3
if [ "${LONG:-0}" = 1 ]; then PRE=10 OUT=60 POST=20 KEYS=60; else PRE=3 OUT=8 POST=5 KEYS=30; fi
case_name=
fail() {
	echo "FAIL: $*"
	[ -n "$case_name" ] && show_history "$D/hist-$case_name" "$*"
	exit 1
}
# show_history HISTORY CHECK-OUTPUT: the events, and the whole history of
# (at most 4 of) the keys an anomaly names; why operations failed; the
# first anomalies
show_history() {
	local k
	echo "--- events:"
	grep " test " "$1"
	for k in $(grep "^anomaly: " <<<"$2" | grep -o "[a-z0-9-]*/[0-9]*" | sort -u | head -n 4); do
		echo "--- history of $k:"
		grep " $k " "$1" | sort -n | tail -n 40
	done
	echo "--- why operations failed:"
	tail -n 10 "$1.err" 2>/dev/null
	# last, where the runner's tail of the log shows them
	echo "--- anomalies (of $(grep -c "^anomaly: " <<<"$2")):"
	grep "^anomaly: " <<<"$2" | head -n 6
}
x() { "$C" exec -- env SHELF_CLIENT="$CL" "$@"; }

t0=$SECONDS
"$C" up --drive-size 768M >"$D/up.log" 2>&1 || fail "cluster up: $(tail -n 3 "$D/up.log")"
grep -q "24 nodes up .* over 3 chassis, slice 'default' with 2 copies" "$D/up.log" || fail "up: $(cat "$D/up.log")"
x shelf slice create r3 --replicas 3 --members all >/dev/null || fail "slice create r3"
x bash -c "shelf-broker client --dir $D/broker --name hist --slices default,r3 >/dev/null" ||
	fail "client for default and r3"
# every node has joined r3 (it has an address there)
for _ in $(seq 200); do
	[ "$(grep -l "slice 'r3': address" "$D"/n*/log | wc -l)" = 24 ] && break
	sleep 0.1
done
[ "$(grep -l "slice 'r3': address" "$D"/n*/log | wc -l)" = 24 ] || fail "not every node joined r3"
echo "24 nodes over 3 chassis up, slices default (R=2) and r3 (R=3), in $((SECONDS - t0)) s"

# the names of the nodes the broker sees up
up_count() { x shelf nodes --json 2>/dev/null | grep -c '"state": "up"'; }
wait_all_up() {
	for _ in $(seq 300); do
		[ "$(up_count)" = 24 ] && return 0
		sleep 0.1
	done
	fail "the restarted nodes are not up again: $(up_count) of 24"
}

# run_case NAME SLICE NODE...: the workload on SLICE; the nodes killed after
# PRE s, started OUT s later, the workload going on POST s more; then the check
run_case() {
	local name=$1 slice=$2 pids=() w n h out t1=$SECONDS
	shift 2
	case " ${CASES:-r2-one r3-two r2-chassis} " in *" $name "*) ;; *) return 0 ;; esac
	case_name=$name
	h=$D/hist-$name
	for w in $(seq "$WORKERS"); do
		x "$PY" "$H" work "$h" $((PRE + 3 * OUT + POST)) "$name/" "$SEED" --keys "$KEYS" \
			--client "w$w" --slice "$slice" --stop "$h.stop" &
		pids+=($!)
	done
	sleep "$PRE"
	# all at once: each event logged just before its SIGKILL, the kills in
	# parallel (a sanitized node takes a while to vanish)
	kills=()
	for n in "$@"; do
		{ "$PY" "$H" event "$h" kill "$n" && "$C" kill "$n" >/dev/null; } &
		kills+=($!)
	done
	for k in "${kills[@]}"; do wait "$k" || fail "kill"; done
	outage_wait "$h" "$OUT" $((2 * OUT))
	kills=()
	for n in "$@"; do
		{ "$C" start "$n" >/dev/null && "$PY" "$H" event "$h" start "$n"; } &
		kills+=($!)
	done
	for k in "${kills[@]}"; do wait "$k" || fail "start"; done
	sleep "$POST"
	touch "$h.stop"
	for w in "${pids[@]}"; do wait "$w" || fail "$name: a worker failed"; done
	# each case is checked whatever the one before found: a failure is
	# shown at once and the test fails at the end
	if out=$(x "$PY" "$H" check "$h" --slice "$slice" --writes-ok); then
		echo "$out" | sed "s/^/$name: /"
		# the outage saw reads and acknowledged writes
		if grep -q "^during the outages: [1-9][0-9]* gets ([1-9][0-9]* ok, [0-9]* not-found, 0 failed), [1-9][0-9]* writes ([1-9]" <<<"$out"; then
			echo "ok $name: killed $*, $((SECONDS - t1)) s"
		else
			echo "FAIL: $name: too few operations during the outage"
			failed="$failed $name"
		fi
	else
		echo "FAIL: $name (killed $*, $((SECONDS - t1)) s): $out"
		show_history "$h" "$out"
		failed="$failed $name"
	fi
	wait_all_up
	case_name=
}
failed=

PY=python3
node() { printf 'n%02d\n' "$1"; }
# 1. R=2, one node
run_case r2-one default "$(node $((RANDOM % 24 + 1)))"
# 2. R=3, any two nodes at once
a=$((RANDOM % 24 + 1))
b=$(((a + RANDOM % 23) % 24 + 1))
run_case r3-two r3 "$(node $a)" "$(node $b)"
# 3. R=2 over 3 chassis, a whole chassis (nodes 1-8, 9-16 or 17-24)
c=$((RANDOM % 3))
run_case r2-chassis default $(for i in $(seq 1 8); do node $((c * 8 + i)); done)
[ -z "$failed" ] || { echo "FAIL:$failed (seed $SEED), $((SECONDS - t0)) s"; exit 1; }
echo "all checks passed in $((SECONDS - t0)) s"
