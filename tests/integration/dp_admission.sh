#!/bin/bash
# The data plane under hostile and slow clients, with shelf-node's default
# limits, on a one-node cluster (tests/integration/py/dp_admit.py does the
# protocol work):
# - the per-address cap at its boundary (64 silent connections held, the
#   65th ERROR busy), and ERROR timeout at the 5 s handshake deadline;
# - the unauthenticated cap at its boundary (384 held; one more closes the
#   oldest with ERROR busy);
# - 256, then 1,000, silent connections from one address and from 100
#   addresses: `shelf get` from another address is still served, within
#   FLOOD_GET_MS;
# - a response-type frame from a client closes the connection.
# (Slow and stalled PUTs: dp_slow_put.sh.)
set -u
. "$(dirname "$0")/cluster_lib.sh"
cluster_test adm shelf-adm
need_python_client
fail() { echo "FAIL: $*"; exit 1; }
FLOOD_GET_MS=2000

"$C" up --nodes 1 --drive-size 768M || fail "cluster up"
BP="$SHELF_CLUSTER_NS-bp"
T="$SRC/tests/integration/py/dp_admit.py"
w=$SHELF_CLUSTER_DIR/adm
mkdir -p "$w"
# source addresses on the backplane for the hostile connections (the
# legitimate client keeps the backplane's own address, ::1)
srcs=()
for i in $(seq 1 100); do
	a=fd00:5e1f:0:1::a:$(printf '%x' "$i")
	ip -n "$BP" addr add "$a/64" dev br0 nodad || fail "cannot add $a"
	srcs+=("$a")
done
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "ulimit -n: $(ulimit -n)"

py() { "$C" exec -- "$PY" "$T" "$@"; }

py peraddr "${srcs[0]}" || fail "per-address cap and handshake deadline"
sleep 1
py unauth "${srcs[@]:1:25}" || fail "unauthenticated cap"
sleep 6 # the held ones reach their handshake deadline and go

head -c 4096 /dev/urandom >"$w/obj"
"$C" exec -- shelf put adm/obj "$w/obj" || fail "put adm/obj"

# flood N ADDRS...: hold N silent connections, then time a `shelf get`
flood() {
	local n=$1 fifo=$w/fifo out=$w/flood.out t0 t1 ms
	shift
	rm -f "$fifo" "$out"
	mkfifo "$fifo"
	py flood "$n" "$@" <"$fifo" >"$out" 2>&1 &
	local fpid=$!
	exec 9>"$fifo"
	for _ in $(seq 100); do grep -q READY "$out" && break; sleep 0.1; done
	grep -q READY "$out" || { exec 9>&-; cat "$out"; fail "flood of $n did not start"; }
	t0=$(date +%s%N)
	"$C" exec -- shelf get adm/obj "$w/got" || { exec 9>&-; fail "shelf get under a flood of $n"; }
	t1=$(date +%s%N)
	ms=$(((t1 - t0) / 1000000))
	cmp -s "$w/obj" "$w/got" || fail "shelf get under a flood of $n: other bytes"
	sleep 0.5
	exec 9>&-
	wait "$fpid" || { cat "$out"; fail "flood of $n"; }
	grep -v READY "$out"
	[ "$ms" -le "$FLOOD_GET_MS" ] || fail "shelf get took $ms ms under a flood of $n (limit $FLOOD_GET_MS)"
	echo "flood of $n from $# address(es): shelf get served in $ms ms (limit $FLOOD_GET_MS): ok"
	sleep 6 # what is left goes at its handshake deadline
}
flood 256 "${srcs[0]}"
flood 256 "${srcs[@]}"
flood 1000 "${srcs[0]}"
flood 1000 "${srcs[@]}"

py response || fail "response-type frame"
grep -q "AddressSanitizer" "$SHELF_CLUSTER_DIR/n01/log" && fail "node log: sanitizer report"
echo "all checks passed"
