#!/bin/bash
# Replicated slices as an operator sees them (issue 13, "Operating it"):
#  - `shelf-cluster up --chassis 3 --replicas 2` spreads 6 nodes over three
#    chassis (failure domains c1..c3) and makes the default slice R=2, and
#    bad --chassis/--replicas are refused before anything starts;
#  - the broker refuses an R above the failure domains (distinct
#    site/chassis) of the nodes a selector matches, saying how many and
#    which R; --allow-same-domain accepts it;
#  - --min-write-replicas is in the slice's signed map (checked by the C
#    client and by the independent Python client), in `shelf slices`, and
#    kept across a broker restart (state/slices);
#  - `shelf status` shows R, W, the members by state and names the one that
#    is down, in text and in JSON; with no node reporting hint counters it
#    shows no hints column.
set -u
. "$(dirname "$0")/cluster_lib.sh"
cluster_test sl shelf-slices
fail() { echo "FAIL: $*"; "$C" status; tail -n 5 "$SHELF_CLUSTER_DIR/broker/log" 2>/dev/null; exit 1; }
B=${SHELF_BUILD:-$SRC/build}
[ -x "$B/shelf-broker" ] || { echo "skipped: shelf-broker is not built in $B"; exit 77; }
D=$SHELF_CLUSTER_DIR
t=$D/t

# ---- 1. the launcher's options ------------------------------------------------
bad() { # EXPECTED-TEXT up-options...
	local want=$1 out
	shift
	out=$("$C" up "$@" 2>&1) && fail "up $* was accepted"
	grep -q -- "$want" <<<"$out" || fail "up $*: $out"
}
bad "--chassis must be 1..6" --nodes 6 --chassis 7
bad "--chassis must be 1..6" --nodes 6 --chassis 0
bad "--replicas must be 1..5" --nodes 6 --replicas 6
bad "--replicas 3 needs at least 3 failure domains, but --chassis 2 gives 2" --nodes 6 --chassis 2 --replicas 3
[ -z "$(ip netns list | grep "^$SHELF_CLUSTER_NS-")" ] || fail "a refused up left namespaces"
echo "ok 1: bad --chassis / --replicas refused before anything starts"

mkdir -p "$t"
"$C" up --nodes 6 --chassis 3 --replicas 2 --drive-size 768M >"$t/up" || fail "up: $(cat "$t/up")"
grep -q "over 3 chassis, slice 'default' with 2 copies per object" "$t/up" || fail "up said: $(cat "$t/up")"
"$C" status >"$t/status"
for x in "n01 .*c1/1 " "n02 .*c1/2 " "n03 .*c2/1 " "n04 .*c2/2 " "n05 .*c3/1 " "n06 .*c3/2 "; do
	grep -q "^$x" "$t/status" || fail "shelf-cluster status: no '$x': $(cat "$t/status")"
done
grep -q "^chassis: 3; default slice: 2 copies per object" "$t/status" || fail "status footer"
# the broker sees the domains the nodes registered with
"$C" exec -- shelf nodes --json >"$t/nodes.json" || fail "shelf nodes"
python3 - "$t/nodes.json" <<'EOF' || fail "nodes' chassis: $(cat "$t/nodes.json")"
import collections, json, sys
n = json.load(open(sys.argv[1]))
c = collections.Counter(x["chassis"] for x in n)
assert c == {"c1": 2, "c2": 2, "c3": 2}, c
assert all(x["site"] == "sim-site" for x in n), n
EOF
"$C" exec -- shelf slice show default --json >"$t/default.json" || fail "slice show default"
python3 - "$t/default.json" <<'EOF' || fail "default slice: $(cat "$t/default.json")"
import json, sys
m = json.load(open(sys.argv[1]))
assert m["replicas"] == 2 and m["min_write_replicas"] == 2, m
assert len(m["members"]) == 6, m
assert {x["chassis"] for x in m["members"]} == {"c1", "c2", "c3"}, m
EOF
echo "ok 2: 6 nodes over chassis c1..c3 (2 slots each), default slice R=2 W=2 with all 6"

# ---- 2. the broker's policy ---------------------------------------------------------
admin() { "$C" exec -- shelf "$@"; }
out=$(admin slice create four --replicas 4 2>&1) && fail "R=4 over 3 chassis accepted"
grep -q "replicas 4 needs 4 failure domains (distinct site/chassis) but the 6 node(s) selector 'all' matches span 3" <<<"$out" ||
	fail "R=4 refusal: $out"
grep -q "sim-site/c1, sim-site/c2, sim-site/c3" <<<"$out" && grep -q -- "--allow-same-domain" <<<"$out" ||
	fail "R=4 refusal does not name the domains and the way out: $out"
out=$(admin slice create one --replicas 2 --members chassis=c2 2>&1) && fail "R=2 in one chassis accepted"
grep -q "span 1 (sim-site/c2)" <<<"$out" || fail "one-chassis refusal: $out"
admin slices | grep -q "^four \|^one " && fail "a refused slice exists"
admin slice create one --replicas 2 --members chassis=c2 --allow-same-domain >"$t/one" ||
	fail "--allow-same-domain refused"
grep -q "same domain allowed" "$t/one" || fail "create one: $(cat "$t/one")"
out=$(admin slice create w3 --replicas 2 --min-write-replicas 3 2>&1); rc=$?
[ $rc = 2 ] && grep -q -- "--min-write-replicas must be 1..2" <<<"$out" || fail "W > R: $rc $out"
admin slice create hot --replicas 3 --min-write-replicas 2 >"$t/hot" || fail "create hot R=3 W=2"
grep -q "replicas 3, min-write 2" "$t/hot" || fail "create hot: $(cat "$t/hot")"
admin slices >"$t/slices"
grep -q "^hot  *3  *2 " "$t/slices" && grep -q "^one  *2  *2 .*chassis=c2 (same domain allowed)" "$t/slices" &&
	grep -q "^default  *2  *2 " "$t/slices" || fail "shelf slices: $(cat "$t/slices")"
admin slice show hot | head -1 | grep -q "replicas 3 min-write 2" || fail "slice show hot"
echo "ok 3: R above the domains refused (count and R named), --allow-same-domain accepted, W in 1..R, shown"

# W is in the signed map: a client of slice hot verifies it (C: shelf status;
# Python: the independent implementation of PROTOCOL.md 6.4)
"$B/shelf-broker" client --dir "$D/broker" --name hotc --slices hot,default >/dev/null || fail "client for hot"
"$C" exec -- env SHELF_CLIENT="$D/broker/clients/hotc" shelf status --slice hot --json >"$t/hot.json"; rc=$?
[ $rc = 0 ] || fail "status of hot: exit $rc: $(cat "$t/hot.json")"
python3 - "$t/hot.json" <<'EOF' || fail "status --json of hot: $(cat "$t/hot.json")"
import json, sys
s = json.load(open(sys.argv[1]))
h = s["slices"][0]
assert h["name"] == "hot" and "error" not in h, h
assert h["replicas"] == 3 and h["min_write_replicas"] == 2 and h["allow_same_domain"] is False, h
assert h["domains"] == 3 and h["member_states"] == {"up": 6, "down": 0, "out": 0, "unknown": 0}, h
assert h["down"] == [] and "hints_waiting" not in h, h
assert all("hints_waiting" not in m for m in h["members"]), h
assert s["healthy"] is True and s["warnings"] == [], s
EOF
if /usr/bin/python3 -c 'import msgpack, nacl.bindings, zmq, sys; sys.exit(0 if zmq.has("curve") else 1)' 2>/dev/null; then
	"$C" exec -- /usr/bin/python3 - "$SRC/tests/integration/py" "$D/broker/clients/hotc" \
		"tcp://[fd00:5e1f:0:1::1]:7400" <<'EOF' || fail "the Python client refused hot's map"
import sys
sys.path.insert(0, sys.argv[1])
import shelf_client
c = shelf_client.Client.from_dir(sys.argv[2], sys.argv[3])
m = c.fetch_map("hot")  # verifies the broker's signature, W included
assert m["replicas"] == 3 and m["min_write_replicas"] == 2, m
m["min_write_replicas"] = 3
try:
    shelf_client.verify_map(m, c.broker_cert.sign)
    raise SystemExit("a map with another W verified")
except shelf_client.ShelfError:
    pass
d = c.fetch_map("default")  # W = R: not in the map, which signs as before
assert "min_write_replicas" not in d and d["replicas"] == 2, d
EOF
	echo "ok 4: W in hot's signed map: verified by the C client and the Python client; default's map has none"
else
	echo "ok 4: W in hot's signed map: verified by the C client (no python3-msgpack/nacl/zmq for the Python one)"
fi

# ---- 3. persisted: a broker restart keeps W and the same-domain flag ---------------
grep -q "^hot 3 .* all min_write=2$" "$D/broker/state/slices" || fail "state/slices: $(cat "$D/broker/state/slices")"
grep -q "^one 2 .* chassis=c2 same_domain$" "$D/broker/state/slices" || fail "state/slices: same_domain"
kill -KILL "$(cat "$D/broker/pid")"
"$C" up --nodes 6 >/dev/null || fail "broker restart"
for _ in $(seq 100); do admin slices >"$t/slices2" 2>/dev/null && grep -q "^hot " "$t/slices2" && break; sleep 0.1; done
grep -q "^hot  *3  *2 " "$t/slices2" && grep -q "^one .*(same domain allowed)" "$t/slices2" ||
	fail "after a broker restart: $(cat "$t/slices2")"
"$C" status | grep -q "^n03 .*c2/1 " || fail "the restart moved the nodes' chassis"
echo "ok 5: broker restarted: hot keeps W=2, one keeps same-domain, nodes keep their chassis"

# ---- 4. status with a node down ---------------------------------------------------
id3=$(python3 -c 'import json, sys
for x in json.load(open(sys.argv[1])):
    if x["chassis"] == "c2" and x["slot"] == "1": print(x["id"])' "$t/nodes.json")
[ ${#id3} = 64 ] || fail "no id for n03"
# a restarted broker lists every node down until its heartbeat: all 6 up first
for _ in $(seq 300); do
	[ "$(admin nodes 2>/dev/null | grep -cE "^[0-9a-f]{64} up")" = 6 ] && break
	sleep 0.1
done
[ "$(admin nodes | grep -cE "^[0-9a-f]{64} up")" = 6 ] || fail "not every node is up after the broker restart: $(admin nodes)"
"$C" kill 3 >/dev/null
for _ in $(seq 150); do
	admin nodes 2>/dev/null | grep -q "^$id3 down" && break
	sleep 0.1
done
admin nodes | grep -q "^$id3 down" || fail "the broker does not list n03 down"
"$C" exec -- shelf status --timeout 1000 >"$t/st.txt"; rc=$?
[ $rc = 4 ] || fail "status with n03 down: exit $rc: $(cat "$t/st.txt")"
grep -q "^slice default  epoch [0-9]*  replicas 2  encrypt no  members 6  min-write 2 " "$t/st.txt" &&
	grep -q "^  members: 5 up, 1 down (${id3:0:16}), 0 out; 3 failure domains$" "$t/st.txt" ||
	fail "status text: $(cat "$t/st.txt")"
grep -q "HINTS" "$t/st.txt" && fail "a hints column without hint counters"
"$C" exec -- shelf status --timeout 1000 --json >"$t/st.json"
python3 - "$t/st.json" "$id3" <<'EOF' || fail "status --json with n03 down: $(cat "$t/st.json")"
import json, sys
s, id3 = json.load(open(sys.argv[1])), sys.argv[2]
d = [x for x in s["slices"] if x["name"] == "default"][0]
assert d["replicas"] == 2 and d["min_write_replicas"] == 2, d
assert d["member_states"]["up"] == 5 and d["member_states"]["down"] == 1, d
assert d["down"] == [id3], d
assert [m["health"] for m in d["members"] if m["id"] == id3] == ["down"], d
assert s["healthy"] is False and any(id3[:16] in p for p in s["problems"]), s
EOF
echo "ok 6: status names the down member (text and JSON), exit 4, no hints column without counters"
"$C" start 3 >/dev/null || fail "start n03"
"$C" down --wipe >/dev/null || fail "down"
[ -z "$(ip netns list | grep "^$SHELF_CLUSTER_NS-")" ] || fail "namespaces left behind"
echo "all checks passed"
