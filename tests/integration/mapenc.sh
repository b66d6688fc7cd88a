#!/bin/bash
# Per-slice encryption end to end, maps from any node, and `shelf status`, on
# a 4-node cluster: `slice create --encrypt` is shown, persisted (broker
# restart) and carried in maps; nodes refuse plaintext PUTs there and answer
# encrypted (checked with the independent Python client); the C client
# encrypts; with the broker dead and an empty client cache, the client reads
# the signed map from a node (--node / SHELF_NODES) and reads and writes;
# `shelf status` reports health with the right exit codes.
set -u
. "$(dirname "$0")/cluster_lib.sh"
cluster_test me shelf-mapenc
need_python_client
B=$SHELF_CLUSTER_DIR/broker
fail() { echo "FAIL: $*"; exit 1; }
T="$SRC/tests/integration/py/mapenc_test.py"
w=$SHELF_CLUSTER_DIR/w
mkdir -p "$w"

"$C" up --nodes 4 --replicas 1 >/dev/null || fail "cluster up"
for _ in $(seq 100); do
	[ "$(grep -l "slice 'default': address" "$SHELF_CLUSTER_DIR"/n*/log | wc -l)" = 4 ] && break
	sleep 0.1
done

# ---- 1. per-slice encryption ----------------------------------------------
"$C" exec -- shelf slice create enc --replicas 1 --encrypt | grep -q "encrypted" ||
	fail "slice create --encrypt"
"$C" exec -- shelf slices | grep -q "^enc .* yes " || fail "slices does not show enc encrypted"
"$C" exec -- shelf slices | grep -q "^default .* no " || fail "slices: default shown encrypted"
"$C" exec -- shelf slices --json | grep -q '"name": "enc".*"encrypt": true' || fail "slices --json"
grep -q "^enc 1 [0-9]* [0-9a-f]* all encrypt$" "$B/state/slices" || fail "state/slices: $(cat "$B/state/slices")"
"$SHELF_BUILD/shelf-broker" client --dir "$B" --name t --slices default,enc >/dev/null ||
	fail "issue client t"
export SHELF_CLIENT=$B/clients/t
for _ in $(seq 100); do
	[ "$(grep -l "slice 'enc': address" "$SHELF_CLUSTER_DIR"/n*/log | wc -l)" = 4 ] && break
	sleep 0.1
done
"$C" exec -- shelf slice show enc --json | grep -q '"encrypt": true' || fail "slice show --json"
"$C" exec -- shelf slice show enc | grep -q "encrypt yes" || fail "slice show"
echo "slice create --encrypt: shown by slices and slice show, persisted in state/slices"

"$C" exec -- env SHELF_CLIENT="$SHELF_CLIENT" "$PY" "$T" "$w" enc || fail "python: encrypted slice"
"$C" exec -- shelf get py/enc "$w/py-enc.got" --slice enc || fail "C get of the Python object"
cmp -s "$w/py-enc.expect" "$w/py-enc.got" || fail "C read py/enc differently"
: >"$w/0"; head -c 1 /dev/urandom >"$w/1"; head -c 200000 /dev/urandom >"$w/cli-enc"
head -c 3000000 /dev/urandom >"$w/3m"
for f in 0 1 cli-enc 3m; do
	"$C" exec -- shelf put "cli/$f" "$w/$f" --slice enc || fail "C put cli/$f on enc"
	"$C" exec -- shelf get "cli/$f" "$w/$f.back" --slice enc || fail "C get cli/$f on enc"
	cmp -s "$w/$f" "$w/$f.back" || fail "cli/$f came back different on enc"
done
"$C" exec -- shelf get cli/3m --slice enc --range 70001-140000 >"$w/range" || fail "range on enc"
cmp -s "$w/range" <(tail -c +70002 "$w/3m" | head -c 70000) || fail "range on enc differs"
[ "$("$C" exec -- shelf ls cli/ --slice enc | wc -l)" = 4 ] || fail "ls on enc"
"$C" exec -- env SHELF_CLIENT="$SHELF_CLIENT" "$PY" "$T" "$w" cli-enc || fail "python get of C object"
echo "C client on enc: 0 B, 1 B, 200 KB, 3 MB, a range across chunks, ls: ok; Python reads them"

# ---- 2. maps from any node ------------------------------------------------
epoch=$("$C" exec -- shelf slice show default --json | grep -o '"epoch": [0-9]*' | head -1 | cut -d' ' -f2)
a1=$(grep -o "slice 'default': address [0-9a-f:]*" "$SHELF_CLUSTER_DIR/n01/log" | head -1 | awk '{print $4}')
a2=$(grep -o "slice 'default': address [0-9a-f:]*" "$SHELF_CLUSTER_DIR/n02/log" | head -1 | awk '{print $4}')
"$C" exec -- env SHELF_CLIENT="$SHELF_CLIENT" "$PY" "$T" "$w" node-map "$a1" "$epoch" ||
	fail "python: MAP from a node"
"$C" exec -- shelf put keep/1 "$w/cli-enc" || fail "put keep/1"
"$C" exec -- shelf put keep/e "$w/3m" --slice enc || fail "put keep/e"

# the client caches the map at epoch E; the slice moves on (n04 down, then up)
"$C" exec -- shelf get keep/1 "$w/k0" >/dev/null || fail "get keep/1"
cached_epoch() {
	"$PY" -c 'import msgpack,sys; print(msgpack.unpackb(open(sys.argv[1],"rb").read())["epoch"])' \
		"$SHELF_CLIENT/cache/default.map"
}
e0=$(cached_epoch)
"$C" kill 4 >/dev/null
for _ in $(seq 150); do
	"$C" exec -- shelf slice show default | grep -q " down " && break
	sleep 0.1
done
"$C" start 4 >/dev/null
for _ in $(seq 150); do
	"$C" exec -- shelf slice show default | grep -q " down " || break
	sleep 0.1
done
e2=$("$C" exec -- shelf slice show default --json | grep -o '"epoch": [0-9]*' | head -1 | cut -d' ' -f2)
[ "$e2" -ge $((e0 + 2)) ] || fail "the slice did not move on: epoch $e0 -> $e2"

# every node holds epoch e2 before the broker dies (its deltas are on their way)
for n in n01 n02 n03 n04; do
	a=$(grep -o "slice 'default': address [0-9a-f:]*" "$SHELF_CLUSTER_DIR/$n/log" | head -1 | awk '{print $4}')
	for _ in $(seq 50); do
		"$C" exec -- env SHELF_CLIENT="$SHELF_CLIENT" "$PY" "$T" "$w" node-map "$a" "$e2" \
			>/dev/null 2>&1 && break
		sleep 0.1
	done
done
# the broker dies; the enc slice's encryption holds on nodes restarted from their cache
kill -KILL "$(cat "$B/pid")"
# a client whose cached map is old gets stale-map and the newest map from the nodes
"$C" exec -- shelf get keep/1 "$w/k1" --timeout 1500 || fail "get with an old cached map, broker dead"
cmp -s "$w/cli-enc" "$w/k1" || fail "keep/1 differs"
[ "$(cached_epoch)" = "$e2" ] || fail "cache not moved from epoch $e0 to the nodes' $e2: $(cached_epoch)"
echo "old cached map (epoch $e0), broker dead: stale-map, newest map ($e2) from the nodes, cached"
"$C" kill 2 >/dev/null && "$C" start 2 >/dev/null || fail "restart n02"
for _ in $(seq 100); do
	tac "$SHELF_CLUSTER_DIR/n02/log" | sed '/^--- /q' | grep -q "ready:" && break
	sleep 0.1
done
rm -rf "$SHELF_CLIENT/cache"
out=$("$C" exec -- shelf get keep/1 "$w/k1" --timeout 1500 2>&1); rc=$?
[ $rc = 1 ] && grep -q -- "--node" <<<"$out" || fail "no broker, no cache, no node: $rc $out"
"$C" exec -- shelf get keep/1 "$w/k1" --timeout 1500 --node "$a1" || fail "get with --node"
cmp -s "$w/cli-enc" "$w/k1" || fail "keep/1 via a node's map differs"
[ -s "$SHELF_CLIENT/cache/default.map" ] || fail "the map from the node was not cached"
rm -rf "$SHELF_CLIENT/cache"
"$C" exec -- env SHELF_NODES="[$a2]:7480" shelf put nb/1 "$w/1" --timeout 1500 || fail "put with SHELF_NODES"
"$C" exec -- env SHELF_NODES="[$a2]:7480" shelf get nb/1 "$w/nb1" --timeout 1500 && cmp -s "$w/1" "$w/nb1" ||
	fail "get with SHELF_NODES"
rm -rf "$SHELF_CLIENT/cache"
"$C" exec -- shelf get keep/e "$w/ke" --slice enc --broker none --node "$a2" --timeout 1500 ||
	fail "get on enc from a node's map (n02 restarted without broker)"
cmp -s "$w/3m" "$w/ke" || fail "keep/e differs"

echo "broker dead, empty cache: map from a node (--node, SHELF_NODES), reads and writes: ok"

# ---- 3. shelf status -------------------------------------------------------
out=$("$C" exec -- shelf status --node "$a1" --timeout 1500 2>&1); rc=$?
[ $rc = 4 ] || fail "status with the broker dead: exit $rc: $out"
grep -q "NOT reachable" <<<"$out" && grep -q "slice enc" <<<"$out" || fail "status text: $out"
"$C" up --nodes 4 --replicas 1 >/dev/null || fail "broker restart"
for _ in $(seq 100); do
	"$C" exec -- shelf slices 2>/dev/null | grep -q "^enc .* yes " && break
	sleep 0.1
done
"$C" exec -- shelf slices | grep -q "^enc .* yes " || fail "restarted broker lost enc's encryption"
for _ in $(seq 100); do
	out=$("$C" exec -- shelf status --json 2>&1); rc=$?
	# healthy, and every node back with the restarted broker
	[ $rc = 0 ] && grep -q '"up": 4,' <<<"$out" && break
	sleep 0.2
done
[ $rc = 0 ] || fail "status of a healthy cluster: exit $rc: $out"
"$PY" - "$out" <<'PYEOF' || fail "status --json: $out"
import json, sys
s = json.loads(sys.argv[1])
assert s["broker"]["reachable"] and s["healthy"] and s["nodes"]["up"] == 4, s
names = {x["name"]: x for x in s["slices"]}
assert names["enc"]["encrypt"] is True and names["default"]["encrypt"] is False, names
for sl in s["slices"]:
    assert len(sl["members"]) == 4, sl
    for m in sl["members"]:
        assert m["health"] == "ok" and m["counters"]["capacity_bytes"] > 0, m
assert sum(m["counters"]["objects"] for m in names["enc"]["members"]) >= 6, names["enc"]
PYEOF
echo "status, healthy: exit 0, JSON: broker reachable, 4 up, slices with encrypt, NODE_STAT per node"
out=$("$C" exec -- env -u SHELF_CLIENT shelf status 2>&1) || fail "status without a client: $out"
grep -q "^slice enc  epoch [0-9]*  replicas 1  encrypt yes  members 4" <<<"$out" ||
	fail "status without a client does not list the broker's slices: $out"
"$C" kill 3 >/dev/null
out=$("$C" exec -- shelf status --timeout 1500 2>&1); rc=$?
[ $rc = 4 ] && grep -q "UNHEALTHY" <<<"$out" && grep -q "unreachable\|down" <<<"$out" ||
	fail "status with a node killed: exit $rc: $out"
echo "status with a node killed: exit 4, names it"
echo "all checks passed"
