#!/bin/bash
# Hinted hand-off through the CLI, with whole histories (issue 13, "Tests";
# needs the node's hints: durable hints, hand-off, the sync of a returning
# node). 6 nodes over 3 chassis, slice 'default' with R=2:
#  1. a delete made while a replica is down does not come back: keys that
#     have node V among their homes are written, V is SIGKILLed, every key
#     is deleted (acknowledged), V starts again with its old copies on its
#     drive; from the moment it starts, `shelf get` of every key answers
#     not-found, again and again, and V read directly answers busy (while it
#     takes its hints back) or not-found, never an old copy; V ends its
#     sync within 30 s of its start; afterwards no node holds any of the
#     keys.
#  2. `shelf-cluster cut N` during a history_rw.py workload of 3 clients,
#     the broker SIGKILLed and started again in the middle of the cut,
#     `heal N` OUT s later (longer, up to 2 OUT, until a get returned bytes
#     and a write was acknowledged during the cut), the workload going on: the history has zero
#     anomalies and every get succeeded (the cut included); then, within
#     60 s, `shelf stat` of every written key shows its R copies at their
#     homes and none elsewhere (every hint delivered, the substitutes'
#     copies dropped), one version on every home for each key that only
#     acknowledged writes wrote.
# Prints its seed (SEED=N reruns it); LONG=1 runs a longer cut.
set -u
. "$(dirname "$0")/cluster_lib.sh"
repl_begin rh shelf-rhand
H=$SRC/tests/integration/py/history_rw.py
if [ "${LONG:-0}" = 1 ]; then PRE=5 OUT=40 POST=15 NDEL=60; else PRE=3 OUT=10 POST=5 NDEL=16; fi
fail() { echo "FAIL: $*"; exit 1; }
x() { "$C" exec -- "$@"; }
t0=$SECONDS

"$C" up --nodes 6 --chassis 3 --replicas 2 --drive-size 768M >"$D/up.log" 2>&1 ||
	fail "cluster up: $(tail -n 3 "$D/up.log")"
x "$PY" "$RC" "$D" default wait-up 6 || fail "not 6 members up"

# ---- 1. a delete made while a replica is down ----
v=n0$((RANDOM % 6 + 1))
keys=$(x "$PY" "$RC" "$D" default keys-on "$v" "$NDEL" del/) || fail "keys on $v"
for k in $keys; do
	head -c $((RANDOM * 8)) /dev/urandom >"$D/obj"
	x shelf put "$k" "$D/obj" 2>/dev/null || fail "put $k with every node up"
done
"$C" kill "$v" >/dev/null || fail "kill $v"
for k in $keys; do
	x shelf rm "$k" 2>"$D/rm.err" || fail "rm $k with $v down: $(cat "$D/rm.err")"
done
"$C" start "$v" >/dev/null || fail "start $v"
t1=$SECONDS
gets=0 direct=0
while [ $((SECONDS - t1)) -lt 6 ]; do
	for k in $keys; do
		x shelf get "$k" "$D/back" 2>"$D/get.err"
		rc=$?
		[ $rc = 3 ] || fail "get $k after $v came back: exit $rc, $(cat "$D/get.err") (a deleted key came back)"
		gets=$((gets + 1))
	done
	# every node, V included, directly: busy or not-found, never the old copy
	k=$(tr ' ' '\n' <<<"$keys" | sed -n "$((direct % NDEL + 1))p")
	out=$(x "$PY" "$RC" "$D" default replicas "$k" absent) ||
		fail "$k after $v came back, read directly: $out"
	direct=$((direct + 1))
done
# then V ends its sync: busy for at most hint_sync_timeout (10 s) from the
# moment it reaches its broker, longer only while a member still hands it
# hints; 30 s from its start is the bound on a loaded machine
for k in $keys; do
	while :; do
		out=$(x "$PY" "$RC" "$D" default replicas "$k" absent) || fail "$k, read directly: $out"
		grep -q "^$v .* busy" <<<"$out" || break
		[ $((SECONDS - t1)) -lt 30 ] ||
			fail "$v still busy 30 s after its start: $out; its log: $(grep -i "hint\|sync" "$D/$v/log" | tail -n 8)"
		sleep 0.5
	done
done
echo "$v not busy for any key, checked until $((SECONDS - t1)) s after its start"
echo "ok 1: $NDEL keys on $v deleted while it was down; from its restart $gets gets answered not-found, $direct direct reads of every node found no copy, nor any read after"

# ---- 2. a node cut off during writes, then healed ----
h=$D/hist-cut
n=n0$((RANDOM % 6 + 1))
pids=()
for w in 1 2 3; do
	x "$PY" "$H" work "$h" $((PRE + 3 * OUT + POST)) cut/ "$SEED" --keys 30 --client "w$w" \
		--stop "$h.stop" &
	pids+=($!)
done
sleep "$PRE"
"$PY" "$H" event "$h" cut "$n"
"$C" cut "$n" >/dev/null || fail "cut $n"
# the broker SIGKILLed and started again in the middle of the cut: its map
# keeps the cut node (down), and the nodes and clients carry on through it
sleep $((OUT / 2))
kill -KILL "$(cat "$D/broker/pid")" || fail "kill the broker"
sleep 0.5
"$C" up --nodes 6 --chassis 3 --replicas 2 --drive-size 768M >>"$D/up.log" 2>&1 ||
	fail "broker restart: $(tail -n 3 "$D/up.log")"
outage_wait "$h" $((OUT - OUT / 2)) $((2 * OUT))
"$C" heal "$n" >/dev/null || fail "heal $n"
"$PY" "$H" event "$h" heal "$n"
sleep "$POST"
touch "$h.stop"
for p in "${pids[@]}"; do wait "$p" || fail "a worker failed"; done
out=$(x "$PY" "$H" check "$h") || { tail -n 10 "$h.err"; fail "cut $n: $out"; }
echo "$out"
if [ -s "$h.err" ]; then
	echo "operations that failed (writes may, while the cut node's peers wait for it):"
	sed 's/^/    /' "$h.err" | cut -c1-300 | head -n 5
fi
grep -q "^during the outages: [1-9][0-9]* gets ([1-9][0-9]* ok, [0-9]* not-found, 0 failed), [1-9][0-9]* writes ([1-9]" <<<"$out" ||
	fail "too few operations while $n was cut off"
x "$PY" "$RC" "$D" default at-home "$h" 60 || fail "after $n was healed"
echo "ok 2: $n cut off for $OUT s during writes, the broker restarted meanwhile, healed: zero anomalies, every replica at its home"
echo "all checks passed in $((SECONDS - t0)) s"
