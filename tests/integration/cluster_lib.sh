# Helpers for the tests that run a cluster with tools/shelf-cluster (sourced,
# not run: not executable).

# cluster_test NS PREFIX: skip without root or iproute2; then SRC (the source
# tree), C (shelf-cluster), namespaces named NS<pid>* and a fresh
# SHELF_CLUSTER_DIR under /tmp, all taken down and removed on exit.
cluster_test() {
	[ "$(id -u)" = 0 ] || { echo "skipped: needs root for network namespaces"; exit 77; }
	command -v ip >/dev/null || { echo "skipped: needs iproute2"; exit 77; }
	SRC=$(cd "${SHELF_SRC:-$(dirname "$0")/../..}" && pwd)
	export SHELF_CLUSTER_NS="$1$$" SHELF_CLUSTER_DIR=$(mktemp -d "/tmp/$2-XXXXXX")
	C="$SRC/tools/shelf-cluster"
	# KEEP=1: the nodes' and the broker's logs are kept in DIR.logs
	trap 'keep_logs; "$C" down --wipe >/dev/null 2>&1; rm -rf "$SHELF_CLUSTER_DIR"' EXIT
}
keep_logs() {
	[ "${KEEP:-0}" = 1 ] || return 0
	local f k=$SHELF_CLUSTER_DIR.logs
	for f in "$SHELF_CLUSTER_DIR"/*/log; do
		[ -f "$f" ] || continue
		mkdir -p "$k/$(basename "$(dirname "$f")")" && cp "$f" "$k/$(basename "$(dirname "$f")")/"
	done
	echo "logs kept in $k" >&2
}

# need_python_client: PY=/usr/bin/python3 with msgpack, nacl and zmq (with
# CURVE), as the independent clients need; else skip.
need_python_client() {
	PY=/usr/bin/python3
	"$PY" -c 'import msgpack, nacl.bindings, zmq, sys; sys.exit(0 if zmq.has("curve") else 1)' 2>/dev/null ||
		{ echo "skipped: $PY needs python3-msgpack, python3-nacl and python3-zmq (with CURVE)"; exit 77; }
}

# seed_begin: SEED (from the environment, else random), printed with the
# command that reruns it, and RANDOM seeded with it
seed_begin() {
	SEED=${SEED:-$(od -An -N3 -tu4 /dev/urandom | tr -d ' ')}
	echo "seed $SEED (SEED=$SEED $0 reruns it)"
	RANDOM=$SEED
}

# repl_begin NS PREFIX: the start of a replicated-slice test: cluster_test
# NS PREFIX, the Python client and a broker build (else skip), seed_begin;
# then D (the cluster's directory) and RC (repl_check.py)
repl_begin() {
	cluster_test "$1" "$2"
	need_python_client
	[ -x "${SHELF_BUILD:-$SRC/build}/shelf-broker" ] || { echo "skipped: no broker build"; exit 77; }
	seed_begin
	D=$SHELF_CLUSTER_DIR
	RC=$SRC/tests/integration/py/repl_check.py
}

# outage_wait HISTORY MIN MAX: an outage that began with the last kill or
# cut event in HISTORY (tests/integration/py/history_rw.py) goes on MIN s,
# then until the workload ran at least one get that returned bytes and one
# acknowledged write through it (a loaded machine runs few operations while
# writes wait on the missing node), MAX s in all at the most
outage_wait() {
	local t0=$SECONDS
	sleep "$2"
	until "$PY" "$SRC/tests/integration/py/history_rw.py" outage "$1" |
		grep -q "^gets_ok [1-9][0-9]* writes_ok [1-9]"; do
		[ $((SECONDS - t0)) -lt "$3" ] || return 0
		sleep 1
	done
}
