#!/bin/bash
# tools/shelf-cluster brings up a 24-node sim 1U in network namespaces and
# operates it: status, SIGKILL a node and start it again, cut and heal its
# link, and take everything down leaving no namespace behind.
set -u
. "$(dirname "$0")/cluster_lib.sh"
cluster_test t shelf-1u
fail() { echo "FAIL: $*"; "$C" status; exit 1; }

# one copy per object: a killed node's objects fail (below) until it returns
"$C" up --nodes 24 --replicas 1 || fail "up"
[ "$("$C" status | grep -c '^n[0-9].* running$')" = 24 ] || fail "not 24 running"
# the default: 3 chassis of 8 slots
"$C" status | grep -q "^n01 .*c1/1 " && "$C" status | grep -q "^n09 .*c2/1 " &&
	"$C" status | grep -q "^n24 .*c3/8 " || fail "nodes not spread over 3 chassis of 8"
if [ -x "${SHELF_BUILD:-build}/shelf-broker" ]; then
	"$C" status | grep -q "^broker: running" || fail "broker not running"
	# every node registered, got a certificate and joined the default slice
	for _ in $(seq 100); do
		[ "$(grep -l "slice 'default': address" "$SHELF_CLUSTER_DIR"/n*/log | wc -l)" = 24 ] && break
		sleep 0.1
	done
	[ "$(grep -l "slice 'default': address" "$SHELF_CLUSTER_DIR"/n*/log | wc -l)" = 24 ] ||
		fail "not every node installed its slice address"
	members=$("$C" exec -- shelf slice show default --admin "$SHELF_CLUSTER_DIR/broker" --json |
		grep -c '"id"')
	[ "$members" = 24 ] || fail "the default slice has $members members, not 24"
	# a node's slice address answers on its data-plane port from the backplane
	a=$(grep -o "address [0-9a-f:]*" "$SHELF_CLUSTER_DIR/n07/log" | head -1 | cut -d' ' -f2)
	"$C" exec -- bash -c "exec 3<>/dev/tcp/$a/7480" || fail "n07's data plane unreachable at $a"
	echo "broker: 24 nodes registered, in the default slice, reachable on their slice addresses"

	# objects through the CLI: put and read back byte for byte
	t=$SHELF_CLUSTER_DIR/t
	mkdir -p "$t"
	: >"$t/0"; printf x >"$t/1"
	head -c 4096 /dev/urandom >"$t/4k"; head -c 1048576 /dev/urandom >"$t/1m"
	head -c 67108864 /dev/urandom >"$t/64m"
	for f in 0 1 4k 1m 64m; do
		"$C" exec -- shelf put "ds/$f" "$t/$f" || fail "put ds/$f"
		"$C" exec -- shelf get "ds/$f" "$t/$f.back" || fail "get ds/$f"
		cmp -s "$t/$f" "$t/$f.back" || fail "ds/$f came back different"
	done
	"$C" exec -- shelf get ds/1m --range 1001-5000 >"$t/range" || fail "range get"
	cmp -s "$t/range" <(tail -c +1002 "$t/1m" | head -c 4000) || fail "range at an odd offset"
	[ "$("$C" exec -- shelf ls ds/ | tr '\n' ' ')" = "ds/0 ds/1 ds/1m ds/4k ds/64m " ] ||
		fail "ls ds/: $("$C" exec -- shelf ls ds/ | tr '\n' ' ')"
	[ "$("$C" exec -- shelf ls ds/ --limit 2 | wc -l)" = 2 ] || fail "ls --limit"
	# pagination: a page starts after the previous page's last key; pages of
	# two (SHELF_LS_PAGE) still list everything
	[ "$("$C" exec -- shelf ls ds/ --limit 2 --after ds/1 | tr '\n' ' ')" = "ds/1m ds/4k " ] ||
		fail "ls --after: $("$C" exec -- shelf ls ds/ --limit 2 --after ds/1 | tr '\n' ' ')"
	[ "$("$C" exec -- env SHELF_LS_PAGE=2 shelf ls ds/ | tr '\n' ' ')" = "ds/0 ds/1 ds/1m ds/4k ds/64m " ] ||
		fail "ls in pages of two"
	[ "$("$C" exec -- env SHELF_LS_PAGE=2 shelf ls ds/ --limit 3 | wc -l)" = 3 ] || fail "ls --limit 3 in pages of two"
	"$C" exec -- shelf ls ds/ --limit x >/dev/null 2>&1; [ $? = 2 ] || fail "ls --limit x: not a usage error"
	# keys that need escaping still give valid JSON
	"$C" exec -- shelf put 'js/q"u\o	t' "$t/0" || fail "put a key with a quote"
	"$C" exec -- shelf ls js/ --json | python3 -c 'import json, sys; assert json.load(sys.stdin) == [{"key": "js/q\"u\\o\tt"}]' ||
		fail "ls --json: $("$C" exec -- shelf ls js/ --json)"
	"$C" exec -- shelf get ds/none >/dev/null 2>&1; [ $? = 3 ] || fail "missing key: exit code"
	echo "objects of 0 B, 1 B, 4 KiB, 1 MiB, 64 MiB, a range, ls: ok"

	# a node killed: its objects fail with an error naming it, then come back
	node=$("$C" exec -- shelf stat ds/1m | awk '/^node/{print $2}')
	n=$(grep -l "address $node" "$SHELF_CLUSTER_DIR"/n*/log | head -1 | sed 's|.*/n0*\([0-9]*\)/log|\1|')
	"$C" kill "$n" >/dev/null
	out=$("$C" exec -- shelf get ds/1m --timeout 2000 2>&1 >/dev/null); rc=$?
	[ $rc = 1 ] && grep -q "node $node" <<<"$out" || fail "killed node: $rc $out"
	"$C" start "$n" >/dev/null
	for _ in $(seq 50); do "$C" exec -- shelf get ds/1m "$t/1m.again" 2>/dev/null && break; sleep 0.1; done
	cmp -s "$t/1m" "$t/1m.again" || fail "node restarted without its data"
	echo "node killed: clear error naming it; restarted: data back"

	# the broker killed: reads and writes of the slice go on
	kill -KILL "$(cat "$SHELF_CLUSTER_DIR/broker/pid")"
	for i in 1 2 3; do
		"$C" exec -- shelf put "nb/$i" "$t/4k" --timeout 2000 || fail "put with the broker dead"
		"$C" exec -- shelf get "nb/$i" "$t/nb" --timeout 2000 && cmp -s "$t/4k" "$t/nb" ||
			fail "get with the broker dead"
	done
	"$C" exec -- shelf get ds/64m "$t/64m.nb" --timeout 5000 && cmp -s "$t/64m" "$t/64m.nb" ||
		fail "64 MiB get with the broker dead"
	echo "broker dead: reads and writes go on"
fi
# every node has its address on the backplane, reachable from the backplane
for i in 1 12 24; do
	ip -n "$SHELF_CLUSTER_NS-n$(printf %02d $i)" -6 addr show dev eth0 | grep -q "fd00:5e1f:0:1::" ||
		fail "node $i has no backplane address"
done
"$C" exec -- ip -6 neigh >/dev/null || fail "exec"
"$C" kill 3 || fail "kill"
"$C" status | grep -q "^n03 .* stopped$" || fail "n03 not stopped after kill"
"$C" start 3 || fail "start"
for _ in $(seq 50); do
	tac "$SHELF_CLUSTER_DIR/n03/log" | sed '/^--- /q' | grep -q "ready:" && break
	sleep 0.1
done
tac "$SHELF_CLUSTER_DIR/n03/log" | sed '/^--- /q' | grep -q "ready:" || fail "n03 not ready after start"
grep -c "created and formatted" "$SHELF_CLUSTER_DIR/n03/log" | grep -qx 1 || fail "n03 re-formatted its drive"
"$C" cut 4 && "$C" status | grep -q "^n04 .* DOWN " || fail "cut"
"$C" heal 4 && "$C" status | grep -q "^n04 .* UP " || fail "heal"
"$C" down --wipe || fail "down"
[ -z "$(ip netns list | grep "^$SHELF_CLUSTER_NS-")" ] || fail "namespaces left behind"
echo "24-node 1U: up, kill/start, cut/heal, down: ok"
