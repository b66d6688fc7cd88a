# Helpers for the heal_*.sh tests of self-healing slices (issue 14), after
# cluster_lib.sh (sourced, not run: not executable).
#
# heal_begin NS PREFIX: cluster_test, the seed (SEED=N replays it; printed),
# D (the cluster directory), PY, HC (py/heal_check.py), RC
# (py/repl_check.py), H (py/history_rw.py); CL is the client directory made
# by heal_up.
heal_begin() {
	cluster_test "$1" "$2"
	[ -x "${SHELF_BUILD:-$SRC/build}/shelf-broker" ] || { echo "skipped: no broker build"; exit 77; }
	need_python_client
	seed_begin
	D=$SHELF_CLUSTER_DIR
	HC=$SRC/tests/integration/py/heal_check.py
	RC=$SRC/tests/integration/py/repl_check.py
	H=$SRC/tests/integration/py/history_rw.py
	CL=$D/broker/clients/heal
	T0=$SECONDS
}

# HEAL_KEEP=1: leave the cluster up after a failure, to look at it
keep_on_fail() {
	if [ "${HEAL_KEEP:-0}" = 1 ]; then
		trap - EXIT
		echo "cluster left up: SHELF_CLUSTER_NS=$SHELF_CLUSTER_NS SHELF_CLUSTER_DIR=$D"
	fi
}

fail() {
	echo "FAIL: $* (seed $SEED, $((SECONDS - T0)) s)"
	# what the slices looked like: redundancy, repair, hints
	if [ -d "$D/broker" ]; then
		echo "--- shelf status:"
		x shelf status 2>&1 | grep -v "^  [0-9a-f]\{16\}  up .* ok$" | head -n 40
	fi
	keep_on_fail
	exit 1
}

x() { "$C" exec -- env SHELF_CLIENT="$CL" "$@"; }
hc() { x "$PY" "$HC" "$D" "$@"; }

# heal_up NODES CHASSIS GRACE SLICE:R...: the cluster (R of the default
# slice from the first SLICE:R), the other slices, client `heal` for all.
# HEAL_DRIVE: the drives' size (768M); HEAL_CHUNK_SIZE: every slice's chunk
# size (the broker's default, 16M, when unset).
heal_up() {
	local n=$1 ch=$2 grace=$3 s sl r first=1 names=
	shift 3
	for s in "$@"; do
		sl=${s%%:*} r=${s#*:}
		if [ $first = 1 ]; then
			[ "$sl" = default ] || fail "heal_up: the first slice must be default"
			"$C" up --nodes "$n" --chassis "$ch" --replicas "$r" --grace "$grace" \
				--drive-size "${HEAL_DRIVE:-768M}" ${HEAL_CHUNK_SIZE:+--chunk-size "$HEAL_CHUNK_SIZE"} >"$D/up.log" 2>&1 || fail "cluster up: $(tail -n 3 "$D/up.log")"
			first=0
		else
			"$C" exec -- shelf slice create "$sl" --replicas "$r" --members all \
				${HEAL_CHUNK_SIZE:+--chunk-size "$HEAL_CHUNK_SIZE"} >/dev/null ||
				fail "slice create $sl"
		fi
		names=$names${names:+,}$sl
	done
	"$C" exec -- shelf-broker client --dir "$D/broker" --name heal --slices "$names" >/dev/null ||
		fail "client for $names"
	for s in "$@"; do
		sl=${s%%:*}
		wait_joined "$sl" "$n"
	done
	echo "$n nodes over $ch chassis up (grace $grace), slices $*, in $((SECONDS - T0)) s"
}

# wait_joined SLICE N: N nodes logged an address in SLICE
# (60 s: on a loaded machine a node just started can take half a minute to
# register; how fast nodes join is not what these tests are about)
wait_joined() {
	for _ in $(seq 600); do
		[ "$(grep -l "slice '$1': address" "$D"/n*/log 2>/dev/null | wc -l)" -ge "$2" ] && return 0
		sleep 0.1
	done
	fail "not $2 nodes joined slice $1"
}

# heal_field SLICE FIELD: the slice's heal figure FIELD from
# `shelf status --json` (the sum over its members), "null" when no member
# reports it, "error" when status answered nothing readable 5 times
heal_field() {
	local v i
	# `shelf status` that could not answer (a loaded machine): asked again
	for i in 1 2 3 4 5; do
		v=$(heal_field1 "$@")
		[ "$v" != error ] && break
		sleep 0.3
	done
	echo "$v"
}
heal_field1() {
	x shelf status --json --slice "$1" 2>/dev/null | "$PY" -c '
import json, sys
try:
    d = json.load(sys.stdin)
    v = d["slices"][0].get("heal", {}).get(sys.argv[1])
except (ValueError, KeyError, IndexError):
    v = "error"
print("null" if v is None else v)' "$2"
}

# node_state NODE: up, down or out, as the broker says
node_state() {
	local id
	id=$(grep -o "identity [0-9a-f]\{64\}" "$D/$1/log" | head -n 1 | cut -d' ' -f2)
	x shelf nodes --json 2>/dev/null | "$PY" -c '
import json, sys
for n in json.load(sys.stdin):
    if n.get("id") == sys.argv[1]:
        print(n.get("state")); break
else:
    print("unknown")' "$id"
}

# wait_state NODE STATE SECONDS
wait_state() {
	local i
	for i in $(seq $(($3 * 5))); do
		[ "$(node_state "$1")" = "$2" ] && return 0
		sleep 0.2
	done
	fail "$1 is not $2 after $3 s (it is $(node_state "$1"))"
}

# lost_watch SLICE FILE: in the background, heal_objects_lost of SLICE every
# second into FILE (one value a line) until lost_watch_stop
lost_watch() {
	( while :; do heal_field "$1" objects_lost >>"$2"; sleep 1; done ) &
	LOST_PID=$!
}
lost_watch_stop() {
	[ -n "${LOST_PID:-}" ] && kill "$LOST_PID" 2>/dev/null && wait "$LOST_PID" 2>/dev/null
	LOST_PID=
	true
}
# lost_check FILE: every value read was 0 (and some value was read; a
# status that answered nothing readable is no value, and is counted)
lost_check() {
	local e
	grep -q '^0$' "$1" || fail "no heal_objects_lost read during the test"
	if grep -v '^error$' "$1" | grep -qv '^0$'; then
		grep -q null "$1" && fail "no member reports heal_objects_lost (the heal counters of issue 14 are missing from this firmware)"
		fail "heal_objects_lost was not 0 throughout: $(sort "$1" | uniq -c | tr '\n' ' ')"
	fi
	e=$(grep -c '^error$' "$1")
	echo "heal_objects_lost was 0 in each of $(grep -c '^0$' "$1") readings ($e times status was not readable)"
}

# wait_full SLICE SECONDS: until the slice is back at full redundancy:
# heal_objects_degraded 0 and repair_objects_left (and _planned) 0 summed
# over its members, twice in a row; prints how long it took
# (a reading that is not a number, as when `shelf status` could not ask
# every member on a loaded machine, neither counts nor breaks the two)
wait_full() {
	local t=$SECONDS deg left plan ok=0 full seen=
	while :; do
		deg=$(heal_field "$1" objects_degraded)
		left=$(heal_field "$1" repair_objects_left)
		# copies a pass counted from a map change and has not queued yet
		plan=$(heal_field "$1" repair_objects_planned)
		[ "$deg" = null ] &&
			fail "no member of $1 reports heal_objects_degraded (the heal counters of issue 14 are missing from this firmware)"
		[ "$left" = null ] && left=0
		[ "$plan" = null ] && plan=0
		seen="$seen $((SECONDS - t)):$deg/$left/$plan"
		if [[ "$deg$left$plan" =~ ^[0-9]+$ ]]; then
			if [ "$deg" = 0 ] && [ "$left" = 0 ] && [ "$plan" = 0 ]; then
				ok=$((ok + 1))
				[ $ok -ge 2 ] && break
			else
				ok=0
			fi
		fi
		[ $((SECONDS - t)) -lt "$2" ] || {
			echo "readings (s:degraded/left/planned):$(tail -c 1500 <<<"$seen")"
			fail "slice $1 not back at full redundancy after $2 s: degraded $deg, repair left $left, planned $plan"
		}
		sleep 0.5
	done
	full=$(heal_field "$1" objects_full)
	echo "slice $1 at full redundancy after $((SECONDS - t)) s (objects full $full, degraded 0)"
	echo "  readings (s:degraded/left/planned):$(tail -c 600 <<<"$seen")"
}

# at_home SLICE HISTORY SECONDS: every key of the history at its R homes
at_home() {
	x "$PY" "$RC" "$D" "$1" at-home "$2" "$3" ${4:-} || fail "slice $1: keys not at their homes"
}

# dir_of_id HEX64: the node directory whose log names that identity
id_of() { grep -o "identity [0-9a-f]\{64\}" "$D/$1/log" | head -n 1 | cut -d' ' -f2; }
