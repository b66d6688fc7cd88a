# Helpers for the fleet_*.sh tests of fleet updates (issue 16), after
# cluster_lib.sh (sourced, not run: not executable).
#
# fleet_begin NS PREFIX: cluster_test, the seed (SEED=N replays it), D (the
# cluster directory), B (the build), PY, H (py/history_rw.py), CL (the demo
# client: slices default and system), REL (the release key dev.key; its
# cert beside it), IMG (a directory for images).
fleet_begin() {
	cluster_test "$1" "$2"
	export SHELF_CLUSTER_SYSTEM_SLICE=system # fleet images live in the system slice
	B=${SHELF_BUILD:-$SRC/build}
	[ -x "$B/shelf-broker" ] && [ -x "$B/shelf-boot" ] || { echo "skipped: no broker or shelf-boot build"; exit 77; }
	grep -q "shelf-boot" "$C" || { echo "skipped: tools/shelf-cluster does not start nodes through shelf-boot"; exit 77; }
	"$B/shelf" fleet --help >/dev/null 2>&1 || { echo "skipped: shelf has no 'fleet' command"; exit 77; }
	command -v tar >/dev/null || { echo "skipped: needs tar"; exit 77; }
	need_python_client
	seed_begin
	D=$SHELF_CLUSTER_DIR
	H=$SRC/tests/integration/py/history_rw.py
	CL=$D/broker/clients/demo
	REL=$D/broker/release/dev.key
	IMG=$D/images
	mkdir -p "$IMG"
	T0=$SECONDS
}

fail() {
	echo "FAIL: $* (seed ${SEED:-}, $((SECONDS - T0)) s)"
	if [ -d "$D/broker" ]; then
		echo "--- rollout status:"
		x shelf fleet rollout status 2>&1 | head -n 40
		echo "--- versions:"
		x shelf fleet versions 2>&1 | head -n 30
		echo "--- broker (fleet):"
		grep -E "fleet" "$D/broker/log" 2>/dev/null | tail -n 15
		for n in "$D"/n??; do
			echo "--- $(basename "$n"): $(tr '\n' ' ' <"$n/boot/state" 2>/dev/null)"
			grep -E "update|shelf-boot|health gate" "$n/log" 2>/dev/null | tail -n 5
		done
	fi
	# background work of the test (FLEET_PIDS) stops with it
	[ -n "${STOP:-}" ] && touch "$STOP" 2>/dev/null
	[ -n "${FLEET_PIDS:-}" ] && kill $FLEET_PIDS 2>/dev/null
	# FLEET_KEEP=1: leave the cluster up to look at it
	if [ "${FLEET_KEEP:-0}" = 1 ]; then
		trap - EXIT
		echo "left up: SHELF_CLUSTER_NS=$SHELF_CLUSTER_NS SHELF_CLUSTER_DIR=$D"
	fi
	exit 1
}

x() { "$C" exec -- env SHELF_CLIENT="$CL" "$@"; }

# fleet_up NODES CHASSIS: the cluster (default and system slices, R=2), every
# node joined to both and reporting to the director
fleet_up() {
	FLEET_NODES_UP=$1 FLEET_CHASSIS_UP=$2
	"$C" up --nodes "$1" --chassis "$2" --replicas 2 --grace 10m --drive-size "${FLEET_DRIVE:-640M}" \
		>"$D/up.log" 2>&1 || fail "cluster up: $(tail -n 3 "$D/up.log")"
	[ -f "$REL" ] || fail "the cluster made no release key ($REL)"
	for sl in default system; do
		# (120 s: under ASan on a loaded 2-core machine a node can take a minute to register)
		for _ in $(seq 1200); do
			[ "$(grep -l "slice '$sl': address" "$D"/n*/log 2>/dev/null | wc -l)" -ge "$1" ] && break
			sleep 0.1
		done
		[ "$(grep -l "slice '$sl': address" "$D"/n*/log 2>/dev/null | wc -l)" -ge "$1" ] ||
			fail "not $1 nodes joined slice $sl"
	done
	# every node's report reached the director (versions lists its running version)
	for _ in $(seq 300); do
		[ "$(versions_field running | grep -c .)" -ge "$1" ] && break
		sleep 0.2
	done
	[ "$(versions_field running | grep -c .)" -ge "$1" ] || fail "not $1 nodes report a version"
	echo "$1 nodes over $2 chassis up, in $((SECONDS - T0)) s"
}

# fleet_broker_start: start the broker again (after a SIGKILL) with the
# cluster's settings; its state (the rollout, releases, seq) is kept
fleet_broker_start() {
	"$C" up --nodes "$FLEET_NODES_UP" --chassis "$FLEET_CHASSIS_UP" --replicas 2 --grace 10m \
		--drive-size "${FLEET_DRIVE:-640M}" >>"$D/up.log" 2>&1 ||
		fail "broker start: $(tail -n 3 "$D/up.log")"
}

# build_version: the version the build's nodes run (slot a)
build_version() { sed -n "s/^a.version //p" "$D/n01/boot/state"; }

# fleet_image VERSION OUT [--node-bin FILE] [--board B] [--pad MIB] [image build options...]:
# a sim image of the build's shelf-node (or FILE) and boards/ (with --pad, a
# file of MIB random MiB in boards/, to make the image larger)
fleet_image() {
	local v=$1 out=$2 bin=$B/shelf-node board=sim pad=0 p
	shift 2
	while [ $# -gt 0 ]; do
		case $1 in
		--node-bin) bin=$2; shift 2 ;;
		--board) board=$2; shift 2 ;;
		--pad) pad=$2; shift 2 ;;
		*) break ;;
		esac
	done
	p=$(mktemp -d "$IMG/payload-XXXXXX")
	mkdir -p "$p/bin"
	printf '%s\n' "$v" >"$p/VERSION"
	cp "$bin" "$p/bin/shelf-node"
	chmod 0755 "$p/bin/shelf-node"
	cp -R "$SRC/boards" "$p/boards"
	[ "$pad" = 0 ] || head -c $((pad << 20)) /dev/urandom >"$p/boards/fleet-pad.bin"
	tar --format=ustar --owner=0 --group=0 --numeric-owner -cf "$p.tar" -C "$p" VERSION bin boards ||
		fail "tar of the payload"
	"$B/shelf" image build --version "$v" --board "$board" --key "$REL" --cert "${REL%.key}.cert" \
		"$@" --out "$out" "$p.tar" >/dev/null || fail "image build $v"
	rm -rf "$p" "$p.tar"
}

# versions_field FIELD: that field of every node in `shelf fleet versions --json`, one a line
versions_field() {
	x shelf fleet versions --json 2>/dev/null | "$PY" -c '
import json, sys
try:
    for n in json.load(sys.stdin)["nodes"]:
        print(n.get(sys.argv[1], ""))
except (ValueError, KeyError):
    pass' "$1"
}

# status_field FIELD: a field of `shelf fleet rollout status --json`
# (counts.X for a count)
status_field() {
	x shelf fleet rollout status --json 2>/dev/null | "$PY" -c '
import json, sys
try:
    d = json.load(sys.stdin)
    for k in sys.argv[1].split("."):
        d = d[k]
    print(d)
except (ValueError, KeyError, TypeError):
    print("error")' "$1"
}

# wait_rollout STATE SECONDS: until the rollout is in STATE (fails early when
# it reaches halted/done/aborted other than STATE)
wait_rollout() {
	local st t=$SECONDS
	while :; do
		st=$(status_field state)
		[ "$st" = "$1" ] && return 0
		case $st in halted|done|aborted) fail "rollout is $st, not $1: $(status_field reason)" ;; esac
		[ $((SECONDS - t)) -lt "$2" ] || fail "rollout not $1 after $2 s (it is $st, stage $(status_field stage))"
		sleep 1
	done
}

# all_on VERSION SLOT N: every one of N nodes runs VERSION in slot SLOT (versions --json)
all_on() {
	x shelf fleet versions --json 2>/dev/null | "$PY" -c '
import json, sys
v, slot, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
nodes = json.load(sys.stdin)["nodes"]
bad = [(x["node"][:16], x["running"], x["slot"]) for x in nodes if x["running"] != v or x["slot"] != slot]
if len(nodes) != n or bad:
    print("nodes %d (want %d), not on %s in slot %s: %s" % (len(nodes), n, v, slot, bad))
    sys.exit(1)' "$1" "$2" "$3"
}

# slot_b_absent NODE...: no node named has a slot b, and its boot state names none
slot_b_absent() {
	local n
	for n in "$@"; do
		[ -e "$D/$n/slots/b" ] && fail "$n has a slot b"
		grep -q "^b\." "$D/$n/boot/state" 2>/dev/null && fail "$n's boot state names slot b"
	done
	true
}

# br_tx: bytes the backplane namespace (broker and clients: the outside of
# the site) sent to the nodes over the bridge (frames nodes send each other
# are forwarded by the bridge and not counted)
br_tx() { x cat /sys/class/net/br0/statistics/tx_bytes; }

# broker_rx: bytes of the messages the broker received (shelf broker stats)
broker_rx() {
	x shelf broker stats --json 2>/dev/null | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
items = d.items() if isinstance(d, dict) else ((s["name"], s["value"]) for s in d)
for k, v in items:
    if k == "bytes_received":
        print(v)' 
}

# objects_sum: the objects every node's store holds, summed (shelf status --json)
objects_sum() {
	x shelf status --json 2>/dev/null | "$PY" -c '
import json, sys
seen, total = set(), 0
def walk(o):
    global total
    if isinstance(o, dict):
        c = o.get("counters")
        if isinstance(c, dict) and "objects" in c and o.get("id") not in seen:
            seen.add(o.get("id"))
            total += int(c["objects"])
        for v in o.values():
            walk(v)
    elif isinstance(o, list):
        for v in o:
            walk(v)
walk(json.load(sys.stdin))
print(total if seen else "none")'
}
