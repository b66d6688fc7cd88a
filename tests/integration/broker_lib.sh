# Helpers for the broker integration tests (sourced, not run: not executable).
# Each test gets namespaces named shb<pid>-*, a hub namespace with a bridge,
# and one veth per namespace with the ULA fd00:5e1f::<n>/64. trap cleans up.
B=${SHELF_BUILD:-$PWD/build}
[ -x "$B/shelf-broker" ] || { echo "skip: $B/shelf-broker is not built"; exit 77; }
[ "$(id -u)" = 0 ] || { echo "skip: needs root for network namespaces"; exit 77; }
ip netns add shbprobe$$ 2>/dev/null || { echo "skip: cannot create network namespaces"; exit 77; }
ip netns del shbprobe$$
P=shb$$
D=$(mktemp -d /tmp/shelf-broker-test.XXXXXX)
NSLIST=""
PIDS=""
cleanup() {
	set +e
	for p in $PIDS; do kill -CONT "$p" 2>/dev/null; kill "$p" 2>/dev/null; done
	sleep 0.3
	for p in $PIDS; do kill -9 "$p" 2>/dev/null; done
	wait 2>/dev/null
	for n in $NSLIST; do ip netns del "$n" 2>/dev/null; done
	ip netns del "$P-hub" 2>/dev/null
	[ -n "${KEEP:-}" ] || rm -rf "$D"
}
trap cleanup EXIT
ip netns add "$P-hub"
ip -n "$P-hub" link add br0 type bridge
ip -n "$P-hub" link set br0 up
ip -n "$P-hub" link set lo up

# mkns NAME N: namespace NAME with eth0 = fd00:5e1f::N/64 on the hub bridge
mkns() {
	local ns="$P-$1" n=$2
	ip netns add "$ns"
	NSLIST="$NSLIST $ns"
	ip link add "v$P$n" type veth peer name eth0 netns "$ns"
	ip link set "v$P$n" netns "$P-hub"
	ip -n "$P-hub" link set "v$P$n" master br0 up
	ip -n "$ns" link set lo up
	ip -n "$ns" link set eth0 up
	ip -n "$ns" addr add "fd00:5e1f::$n/64" dev eth0 nodad
}
# in NAME cmd...: run in namespace NAME
nsx() { local ns="$P-$1"; shift; ip netns exec "$ns" "$@"; }

BROKER_EP="tcp://[fd00:5e1f::1]:7400"
# start_broker [extra args]: broker in namespace "b"; its log in $D/broker.log
start_broker() {
	(exec ip netns exec "$P-b" "$B/shelf-broker" run --dir "$D/site" --listen "$BROKER_EP" "$@" \
		>>"$D/broker.log" 2>&1) &
	BPID=$!
	PIDS="$PIDS $BPID"
	for _ in $(seq 100); do
		grep -q "event=listen" "$D/broker.log" 2>/dev/null && [ "$(grep -c event=listen "$D/broker.log")" -ge "${LISTENS:-1}" ] && return 0
		sleep 0.05
	done
	echo "broker did not start"; cat "$D/broker.log"; exit 1
}
admin() { nsx b "$B/shelf" "$@" --broker "$BROKER_EP" --admin "$D/site"; }
# start_node NAME [args]: ctl_node in namespace NAME with state $D/NAME
start_node() {
	local name=$1; shift
	(exec ip netns exec "$P-$name" "$B/tests/prog/ctl_node" --state "$D/$name" \
		--ca "$D/site/ca.pub" --broker "$BROKER_EP,$D/site/broker.pub" "$@" \
		>/dev/null 2>>"$D/$name.log") &
	eval "PID_$name=$!"
	PIDS="$PIDS $!"
}
now_ms() { date +%s%3N; }
# wait_until SECONDS 'shell condition': polls every 100 ms; returns 1 on timeout
wait_until() {
	local end=$(( $(now_ms) + $1 * 1000 ))
	while [ "$(now_ms)" -lt "$end" ]; do
		eval "$2" && return 0
		sleep 0.1
	done
	return 1
}
status_line() { grep "^map $2 " "$D/$1/status" 2>/dev/null; }

# need_python_curve: PY = a python3 with zmq (CURVE), msgpack and nacl, or skip
need_python_curve() {
	PY=""
	for p in /usr/bin/python3 python3; do
		if command -v "$p" >/dev/null 2>&1 &&
			"$p" -c 'import sys, zmq, msgpack, nacl.signing; sys.exit(0 if zmq.has("curve") else 1)' 2>/dev/null; then
			PY=$p
			return 0
		fi
	done
	echo "skip: needs python3-zmq with CURVE, python3-msgpack and python3-nacl"
	exit 77
}

# slice_agree SLICE N: clients c1..cN hold SLICE with members=N up=N, one digest
slice_agree() {
	local d="" line i
	for i in $(seq 1 "$2"); do
		line=$(status_line "c$i" "$1") || return 1
		case "$line" in *" members=$2 up=$2 "*) ;; *) return 1 ;; esac
		[ -z "$d" ] && d=${line##*digest=}
		[ "${line##*digest=}" = "$d" ] || return 1
	done
}
