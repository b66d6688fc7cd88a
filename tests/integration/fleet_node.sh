#!/bin/bash
# The node's update agent (issue 16, design section 5) on a local cluster
# of 4 nodes under shelf-boot, before the broker's director: an image's
# blocks are stored in slice 'system' with raw PUTs, and assignments signed
# with the broker's key (tests/prog/fleet_tool) are handed to one node at a
# time through its D/update/assign.inject (verified like one from a
# heartbeat):
#   (a) n01 fetches 0.2.0, verifies every block (update_blocks_verified),
#       installs slot b (boot state: b 0.2.0 to try, primary b);
#   (b) a restart assignment: n01 exits 75 and shelf-boot starts slot b,
#       which passes its health gate (b.good 1) and reports healthy;
#   (c) a block replaced in the array by wrong bytes: n02 counts it in
#       update_blocks_bad, fails with the reason, installs nothing;
#   (d) n03 SIGKILLed (node and shelf-boot) mid-fetch: it resumes, and
#       fetches fewer bytes after the restart than the payload holds;
#   (e) n04 SIGKILLed mid-install (while tar extracts into slots/b.new):
#       it boots slot a (b never named), then completes the install;
#   (f) a silent block server: the node that homes the most of 0.3.0's
#       blocks SIGSTOPped while n02 fetches it: each piece asked of it
#       times out, the block comes from its other home, and the fetch and
#       install complete while it is still stopped;
#   (g) a slow block server that still answers in time: the node that is
#       the first home of the most of 0.4.0's blocks (a 24 MiB payload),
#       its link shaped to 16 Mbit/s while n03 fetches 0.4.0: n03 measures
#       how fast each home serves and asks the faster one, so the slow node
#       serves less than half of what it is the first home of (before, a
#       node asked every block of its first home).
# (The rule that lets a node's certificate GET fe x8 'F' keys of slices it
# is a member of is tested in tests/unit/test_update.c.)
export SHELF_CLUSTER_SYSTEM_SLICE=system  # fleet images live in the system slice
set -u
. "$(dirname "$0")/cluster_lib.sh"
cluster_test fl shelf-fleet
B=${SHELF_BUILD:-$SRC/build}
[ -x "$B/shelf-broker" ] && [ -x "$B/shelf-boot" ] || { echo "skipped: no broker or shelf-boot build"; exit 77; }
grep -q "shelf-boot" "$C" || { echo "skipped: tools/shelf-cluster does not start nodes through shelf-boot yet"; exit 77; }
command -v tar >/dev/null || { echo "skipped: needs tar"; exit 77; }
D=$SHELF_CLUSTER_DIR
T0=$SECONDS
FT=$B/tests/prog/fleet_tool
LT=$B/tests/prog/large_tool
BROKER="tcp://[fd00:5e1f:0:1::1]:7400"

fail() {
	echo "FAIL: $* ($((SECONDS - T0)) s)"
	for n in n01 n02 n03 n04; do
		echo "--- $n: $(cat "$D/$n/boot/state" 2>/dev/null | tr '\n' ' ')"
		grep -E "update|shelf-boot|health gate" "$D/$n/log" 2>/dev/null | tail -n 12
	done
	# FLEET_KEEP=1: leave the cluster up to look at it
	[ "${FLEET_KEEP:-0}" = 1 ] && { trap - EXIT; echo "left up: SHELF_CLUSTER_NS=$SHELF_CLUSTER_NS SHELF_CLUSTER_DIR=$D"; }
	exit 1
}
x() { "$C" exec -- "$@"; }
id_of() { grep -o "identity [0-9a-f]\{64\}" "$D/$1/log" | head -n 1 | cut -d' ' -f2; }
# wait_log NODE TEXT SECONDS
wait_log() {
	for _ in $(seq $(($3 * 10))); do
		grep -q -- "$2" "$D/$1/log" 2>/dev/null && return 0
		sleep 0.1
	done
	fail "$1 did not log '$2' within $3 s"
}
# counter NODE NAME: the node's NODE-STAT counter (shelf status --json)
counter() {
	x env SHELF_CLIENT="$CL" shelf status --json --slice system 2>/dev/null | /usr/bin/python3 -c '
import json, sys
def walk(o):
    if isinstance(o, dict):
        if str(o.get("id", "")).startswith(sys.argv[1][:16]) and "counters" in o:
            return o["counters"].get(sys.argv[2], "none")
        o = list(o.values())
    if isinstance(o, list):
        for v in o:
            r = walk(v)
            if r is not None:
                return r
    return None
try:
    r = walk(json.load(sys.stdin))
except ValueError:
    r = None
print("none" if r is None else r)' "$(id_of "$1")" "$2"
}
# since_restart NODE TEXT: NODE logged TEXT after its last "--- restart" line
since_restart() { tac "$D/$1/log" | sed '/^--- restart/q' | grep -q -- "$2"; }
wait_since() {
	for _ in $(seq $(($3 * 10))); do since_restart "$1" "$2" && return 0; sleep 0.1; done
	fail "$1 did not log '$2' within $3 s of its restart"
}
# marked NODE: blocks marked verified in its update/image.blocks
marked() {
	/usr/bin/python3 -c '
import sys
try:
    d = open(sys.argv[1], "rb").read()[40:]
except OSError:
    d = b""
print(sum(bin(b).count("1") for b in d))' "$D/$1/update/image.blocks"
}
# assign NODE SEQ ACTION RATE [IMAGE]: hand NODE an assignment
assign() {
	local n=$1 f
	f=$D/assign.$n.$2
	"$FT" assign "$D/broker" "$(id_of "$n")" "$2" "$3" system "$4" "$f" ${5:+"$5"} ||
		fail "fleet_tool assign $*"
	mkdir -p "$D/$n/update"
	mv "$f" "$D/$n/update/assign.inject"
}
state_of() { cat "$D/$1/boot/state" 2>/dev/null; }

"$C" up --nodes 4 --drive-size 640M >"$D/up.log" 2>&1 || fail "cluster up: $(tail -n 3 "$D/up.log")"
"$C" exec -- shelf slice create system --replicas 2 --members all >/dev/null 2>&1 || true
x shelf-broker client --dir "$D/broker" --name fleet --slices system,default >/dev/null ||
	fail "client fleet"
CL=$D/broker/clients/fleet
for _ in $(seq 600); do
	[ "$(grep -l "slice 'system': address" "$D"/n*/log 2>/dev/null | wc -l)" -ge 4 ] && break
	sleep 0.1
done
[ "$(grep -l "slice 'system': address" "$D"/n*/log 2>/dev/null | wc -l)" -ge 4 ] ||
	fail "not every node joined slice 'system'"
echo "4 nodes up under shelf-boot in $((SECONDS - T0)) s"

# the images: 0.2.0 and 0.3.0 of this build, signed with the cluster's dev key
KEY=$D/broker/release/dev.key
[ -f "$KEY" ] || x shelf-broker release-key --dir "$D/broker" --name dev >/dev/null ||
	fail "release key"
mkimg() { # VERSION [EXTRA_MIB] -> $D/img-VERSION.img
	local p=$D/payload-$1 extra=()
	rm -rf "$p" && mkdir -p "$p/bin" || fail "payload dir"
	echo "$1" >"$p/VERSION"
	cp "$B/shelf-node" "$p/bin/shelf-node" && cp -R "$SRC/boards" "$p/boards" || fail "payload"
	if [ -n "${2:-}" ]; then
		head -c "$(($2 << 20))" /dev/urandom >"$p/data" || fail "payload data"
		extra=(data)
	fi
	tar --format=ustar --owner=0 --group=0 --numeric-owner -cf "$D/payload-$1.tar" -C "$p" VERSION bin boards "${extra[@]}" ||
		fail "tar"
	"$B/shelf" image build --version "$1" --board sim --key "$KEY" --cert "${KEY%.key}.cert" \
		--out "$D/img-$1.img" "$D/payload-$1.tar" >/dev/null || fail "shelf image build $1"
}
# rawput HEXKEY FILE: a plain object in 'system' (on a loaded machine a
# node may take long to accept its first connection: tried 3 times)
rawput() {
	for try in 1 2 3; do
		x "$LT" "$CL" "$BROKER" system raw-put "hex:$1" "$2" && return 0
		sleep 2
	done
	return 1
}
# publish VERSION: store its blocks in 'system'; NBLK, SIZE, KEYS
publish() {
	mkdir -p "$D/blk-$1"
	"$FT" blocks "$D/img-$1.img" "$D/blk-$1" >"$D/blk-$1.txt" || fail "fleet_tool blocks $1"
	read -r _ _ _ _ SIZE _ NBLK <"$D/blk-$1.txt"
	tail -n +2 "$D/blk-$1.txt" | while read -r i k; do
		rawput "$k" "$D/blk-$1/$i" || { echo "raw-put block $i failed"; exit 1; }
	done || fail "publish $1"
	echo "published $1: $SIZE bytes in $NBLK blocks"
}
mkimg 0.2.0
mkimg 0.3.0
publish 0.3.0
publish 0.2.0

# (a) fetch and install
assign n01 1 fetch 0 "$D/img-0.2.0.img"
wait_log n01 "update: release 0.2.0 installed in slot b" 60
s=$(state_of n01)
echo "$s" | grep -q "^b.version 0.2.0$" && echo "$s" | grep -q "^b.good 0$" &&
	echo "$s" | grep -q "^primary b$" || fail "(a) boot state after the install: $s"
[ -x "$D/n01/slots/b/bin/shelf-node" ] && [ "$(cat "$D/n01/slots/b/VERSION")" = 0.2.0 ] ||
	fail "(a) slot b is not complete"
[ ! -e "$D/n01/slots/b.new" ] || fail "(a) slots/b.new left"
v=$(counter n01 update_blocks_verified)
[ "$v" = "$NBLK" ] || fail "(a) update_blocks_verified is $v, not $NBLK"
echo "(a) n01 fetched and verified $v blocks, slot b installed"

# (b) restart into slot b
pid=$(cat "$D/n01/pid")
assign n01 2 restart 0 "$D/img-0.2.0.img"
wait_log n01 "shutting down to restart into the new slot (exit 75)" 30
for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "(b) n01 did not exit"
wait_log n01 "running version 0.2.0 in slot b" 60
wait_log n01 "update: release 0.2.0 runs in slot b and passed its health gate" 120
s=$(state_of n01)
echo "$s" | grep -q "^b.good 1$" && echo "$s" | grep -q "^last b$" || fail "(b) boot state: $s"
[ "$(counter n01 update_state)" = 4 ] || fail "(b) update_state is not healthy (4)"
echo "(b) n01 exited 75, shelf-boot started slot b, healthy"

# (c) a block replaced by wrong bytes (same length): refused, nothing installed
head -c "$(stat -c %s "$D/blk-0.3.0/1")" /dev/urandom >"$D/bad-block"
K1=$(sed -n 3p "$D/blk-0.3.0.txt" | cut -d' ' -f2)
rawput "$K1" "$D/bad-block" || fail "(c) raw-put bad block"
assign n02 1 fetch 0 "$D/img-0.3.0.img"
wait_log n02 "update: failed: block 1 of release 0.3.0 does not verify" 60
bad=$(counter n02 update_blocks_bad)
[ "$bad" != none ] && [ "$bad" -ge 1 ] || fail "(c) update_blocks_bad is $bad"
[ "$(counter n02 update_state)" = 5 ] || fail "(c) update_state is not failed (5)"
[ ! -e "$D/n02/slots/b" ] && [ ! -e "$D/n02/slots/b.new" ] && ! state_of n02 | grep -q "^b\." ||
	fail "(c) something was installed on n02"
echo "(c) n02 refused the bad block ($bad bad), nothing installed"

# (d) SIGKILL mid-fetch: resumes (one block at a time, the fetch paced to ~8 s)
"$C" kill 3 >/dev/null || fail "(d) kill n03"
echo "--- restart" >>"$D/n03/log"
SHELF_NODE_SET="update_inflight=1" "$C" start 3 >/dev/null || fail "(d) start n03"
wait_since n03 "ready:" 60
assign n03 1 fetch $((SIZE / 8 + 1)) "$D/img-0.2.0.img"
for _ in $(seq 300); do
	m=$(marked n03)
	[ "$m" -ge 1 ] && break
	sleep 0.05
done
[ "$m" -ge 1 ] && [ "$m" -lt "$NBLK" ] || fail "(d) no partial fetch to interrupt ($m of $NBLK)"
"$C" kill 3 >/dev/null || fail "(d) kill n03 mid-fetch"
echo "(d) n03 killed with $m of $NBLK blocks verified"
echo "--- restart" >>"$D/n03/log"
SHELF_NODE_SET="update_inflight=1" "$C" start 3 >/dev/null || fail "(d) start n03"
wait_since n03 "blocks already verified" 60
wait_since n03 "update: release 0.2.0 installed in slot b" 120
got=$(tac "$D/n03/log" | sed '/^--- restart/q' | grep -o "installed in slot b (marked to be tried; [0-9]* bytes fetched by this run" |
	grep -o "[0-9]* bytes" | cut -d' ' -f1)
[ -n "$got" ] && [ "$got" -lt "$SIZE" ] || fail "(d) fetched $got bytes after the restart (payload $SIZE)"
echo "(d) n03 resumed: $got of $SIZE bytes fetched after the restart"

# (e) SIGKILL mid-install: a tar that stops once it extracted half
mkdir -p "$D/slowbin"
cat >"$D/slowbin/tar" <<EOF
#!/bin/bash
echo \$\$ >"$D/slowtar.pid"
for a in "\$@"; do [ "\$prev" = -C ] && dir=\$a; prev=\$a; done
mkdir -p "\$dir/bin" && echo partial >"\$dir/bin/shelf-node" && chmod +x "\$dir/bin/shelf-node"
sleep 60
EOF
chmod +x "$D/slowbin/tar"
"$C" kill 4 >/dev/null || fail "(e) kill n04"
echo "--- restart" >>"$D/n04/log"
PATH="$D/slowbin:$PATH" "$C" start 4 >/dev/null || fail "(e) start n04 with a slow tar"
wait_since n04 "ready:" 60
assign n04 1 fetch 0 "$D/img-0.2.0.img"
for _ in $(seq 600); do [ -f "$D/slowtar.pid" ] && [ -e "$D/n04/slots/b.new/bin/shelf-node" ] && break; sleep 0.1; done
[ -e "$D/n04/slots/b.new/bin/shelf-node" ] || fail "(e) the install did not start"
"$C" kill 4 >/dev/null || fail "(e) kill n04 mid-install"
kill -KILL "$(cat "$D/slowtar.pid")" 2>/dev/null
state_of n04 | grep -q "^b\." && fail "(e) slot b named in the boot state mid-install"
echo "--- restart" >>"$D/n04/log"
"$C" start 4 >/dev/null || fail "(e) start n04"
wait_since n04 "update: running version" 60
since_restart n04 "update: running version [0-9.]* in slot a" || fail "(e) n04 did not boot slot a"
wait_since n04 "update: release 0.2.0 installed in slot b" 120
[ "$(cat "$D/n04/slots/b/bin/shelf-node" | head -c 7)" != partial ] && [ -x "$D/n04/slots/b/bin/shelf-node" ] ||
	fail "(e) slot b is the half-written one"
cmp -s "$D/n04/slots/b/bin/shelf-node" "$B/shelf-node" || fail "(e) slot b's shelf-node differs from the image's"
echo "(e) n04 killed mid-install booted slot a, then installed a complete slot b"

# (f) a silent block server: a home of some of 0.3.0's blocks SIGSTOPped
# (its connections stay open, it answers nothing) while n02 fetches 0.3.0;
# each piece asked of it times out (forward_timeout, 2 s), the block comes
# from its other home, and the silent node is passed over for 5 s after
# each timeout: the fetch completes, every block verified, while it is
# still stopped
rawput "$K1" "$D/blk-0.3.0/1" || fail "(f) raw-put block 1 back"
RC=$SRC/tests/integration/py/repl_check.py
/usr/bin/python3 -c 'import msgpack, nacl.bindings, zmq' 2>/dev/null || fail "(f) needs python3-msgpack, python3-nacl and python3-zmq"
silent= nsil=0
for s in n01 n03 n04; do
	c=0
	while read -r i k; do
		h=$(x env SHELF_CLIENT="$CL" /usr/bin/python3 "$RC" "$D" system homes "hex:$k") || fail "(f) homes of block $i"
		grep -qw "$s" <<<"$h" && c=$((c + 1))
	done < <(tail -n +2 "$D/blk-0.3.0.txt")
	[ $c -gt $nsil ] && silent=$s nsil=$c
done
[ -n "$silent" ] || fail "(f) no node but n02 homes a block of 0.3.0"
spid=$(cat "$D/$silent/pid")
kill -STOP "$spid" || fail "(f) SIGSTOP $silent"
t=$SECONDS
assign n02 2 fetch 0 "$D/img-0.3.0.img"
for _ in $(seq 1200); do grep -q "update: release 0.3.0 installed in slot b" "$D/n02/log" && break; sleep 0.1; done
grep -q "update: release 0.3.0 installed in slot b" "$D/n02/log" ||
	{ kill -CONT "$spid"; fail "(f) n02 did not install 0.3.0 within 120 s while $silent was silent"; }
dt=$((SECONDS - t))
kill -0 "$spid" && [ "$(ps -o stat= -p "$spid" | cut -c1)" = T ] || fail "(f) $silent was not stopped throughout"
kill -CONT "$spid"
echo "(f) $silent (home of $nsil of $NBLK blocks) silent: n02 fetched and installed 0.3.0 from the other homes in $dt s"

# (g) a slow block server that still answers: n03 (restarted with the
# default 4 blocks in flight) fetches 0.4.0 while the node that is the
# first home of the most of its blocks sends at 16 Mbit/s (a piece of
# 256 KiB in about 0.13 s: four asked at once are answered well within
# forward_timeout, so it is never passed over as silent). Asking each block
# of its first home, n03 would take those blocks' bytes from it; measuring
# each home's pieces, it takes them from the other homes after a piece or
# two. Its GET bytes (NODE-STAT get_bytes) tell.
mkimg 0.4.0 24
publish 0.4.0
slow= nslow=0
for s in n01 n02 n04; do
	c=0
	while read -r i k; do
		h=$(x env SHELF_CLIENT="$CL" /usr/bin/python3 "$RC" "$D" system homes "hex:$k") || fail "(g) homes of block $i"
		[ "${h%% *}" = "$s" ] && c=$((c + 1))
	done < <(tail -n +2 "$D/blk-0.4.0.txt")
	[ $c -gt $nslow ] && slow=$s nslow=$c
done
[ "$nslow" -ge 4 ] || fail "(g) no node but n03 is the first home of 4 or more of 0.4.0's $NBLK blocks"
"$C" kill 3 >/dev/null || fail "(g) kill n03"
echo "--- restart" >>"$D/n03/log"
"$C" start 3 >/dev/null || fail "(g) start n03"
wait_since n03 "ready:" 60
before=$(counter "$slow" get_bytes)
[ "$before" != none ] || fail "(g) no get_bytes counter of $slow"
ns="$SHELF_CLUSTER_NS-$slow"
ip netns exec "$ns" tc qdisc replace dev eth0 root tbf rate 16mbit burst 64kb latency 400ms ||
	fail "(g) tc on $slow"
t=$SECONDS
assign n03 2 fetch 0 "$D/img-0.4.0.img"
for _ in $(seq 1200); do grep -q "update: release 0.4.0 installed in slot" "$D/n03/log" && break; sleep 0.1; done
dt=$((SECONDS - t))
ip netns exec "$ns" tc qdisc del dev eth0 root 2>/dev/null
grep -q "update: release 0.4.0 installed in slot" "$D/n03/log" ||
	fail "(g) n03 did not install 0.4.0 within 120 s while $slow was slow"
after=$(counter "$slow" get_bytes)
[ "$after" != none ] || fail "(g) no get_bytes counter of $slow after"
blk=$(((SIZE + NBLK - 1) / NBLK))
served=$((after - before))
echo "(g) $slow (first home of $nslow of $NBLK blocks of $blk bytes) at 16 Mbit/s served $served bytes; n03 installed 0.4.0 in $dt s"
[ "$served" -lt $((nslow * blk / 2)) ] ||
	fail "(g) the slow node served $served bytes, not less than half of the $((nslow * blk)) of the blocks it is first home of"

echo "ok: fleet node agent in $((SECONDS - T0)) s"
