#!/bin/bash
# Clients that stop reading (docs/PROTOCOL.md 7.10): one node of the sim
# board; 4 pipelined GETs of a 32 MiB object on one connection and 16
# connections each with a GET of a 64 MiB object, none of them read. The
# node's RSS stays within the board's memory_budget, another client's 4 KiB
# GETs are answered within 1 s meanwhile, and after the send timeout (the
# default, 30 s) the node resets the stalled connections and frees what they
# held (tests/integration/py/dp_hostile_get.py).
set -u
. "$(dirname "$0")/cluster_lib.sh"
cluster_test hg shelf-hostile
need_python_client
fail() { echo "FAIL: $*"; exit 1; }

# RSS means what it says only without sanitizers (ASan's shadow and
# quarantine are memory the board never has): use the plain build when the
# runner has one ($BUILDS_O, `make`'s build/); else the sanitized node, with
# its quarantine off, and the check is on the growth (see the .py)
asan() { nm -D "$1" 2>/dev/null | grep -q __asan_init || ldd "$1" 2>/dev/null | grep -q libasan; }
node_bin=${SHELF_BUILD:-$SRC/build}
if asan "$node_bin/shelf-node"; then
	for b in "${BUILDS_O:-}" "$SRC/build"; do
		if [ -n "$b" ] && [ -x "$b/shelf-node" ] && [ -x "$b/shelf" ] && ! asan "$b/shelf-node"; then
			export SHELF_BUILD=$b
			break
		fi
	done
fi
sanitized=0
if asan "${SHELF_BUILD:-$SRC/build}/shelf-node"; then
	sanitized=1
	export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=0
fi
echo "node: ${SHELF_BUILD:-$SRC/build}/shelf-node (sanitized: $sanitized)"

# one GET of one whole 32 or 64 MiB object is what is tested: a chunk size
# of 64 MiB keeps them whole (the default, 16 MiB, would store them as chunks)
"$C" up --nodes 1 --drive-size 768M --chunk-size 64M || fail "cluster up"
w=$SHELF_CLUSTER_DIR/w
mkdir -p "$w"
head -c $((32 << 20)) /dev/urandom >"$w/32m"
head -c $((64 << 20)) /dev/urandom >"$w/64m"
head -c 4096 /dev/urandom >"$w/small"
for o in 32m 64m small; do
	"$C" exec -- shelf put "h/$o" "$w/$o" || fail "put h/$o"
done
rm -f "$w/32m" "$w/64m"
budget=$(awk -F' *= *' '$1 == "memory_budget" { print $2 }' "$SRC/boards/sim/board.conf")
case $budget in
*M) budget=$((${budget%M} << 20)) ;;
*K) budget=$((${budget%K} << 10)) ;;
esac
pid=$(cat "$SHELF_CLUSTER_DIR/n01/pid")
"$C" exec -- "$PY" "$SRC/tests/integration/py/dp_hostile_get.py" "$pid" "$budget" 30 "$sanitized" ||
	fail "stalled clients (node log: $(tail -n 3 "$SHELF_CLUSTER_DIR/n01/log"))"
echo "all checks passed"
