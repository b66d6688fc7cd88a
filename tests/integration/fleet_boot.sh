#!/bin/bash
# shelf-boot, the A/B boot chooser, and the health gate (issue 16), with
# real processes:
#  1. usage errors; a first start seeds slot a from the build (the real
#     shelf-node, byte for byte, its VERSION and board profiles) and marks it good;
#  2. a slot b whose shelf-node exits 1 is tried 3 times, then shelf-boot
#     falls back to a and writes `fallback` with the reason; the node gets
#     SHELF_SLOT, SHELF_SLOT_VERSION, SHELF_BOARDS, SHELF_BOOT_STATE and its
#     arguments;
#  3. a slot b that hangs (and ignores SIGTERM) is stopped at --deadline
#     (SIGTERM, then SIGKILL) and shelf-boot falls back;
#  4. exit 75 restarts at once into the new primary;
#  5. SIGKILL of shelf-boot while it rewrites the state, again and again,
#     never leaves a state it refuses; SIGKILL during the first seeding
#     never boots a half-copied slot;
#  6. a corrupt state is refused with a message (kept as state.bad) and the
#     good slot boots;
#  7. SIGTERM to shelf-boot stops the node and shelf-boot cleanly;
#  8. on a 4-node local cluster: a real shelf-node in a slot on trial passes
#     its health gate (registered, sample scrub, data-plane self-check) and
#     marks the slot good; a real one that cannot register fails its gate 3
#     times and its node falls back to slot a, which serves the data again.
set -u
SRC=$(cd "${SHELF_SRC:-$(dirname "$0")/../..}" && pwd)
B=${SHELF_BUILD:-$SRC/build}
SB=$B/shelf-boot
[ -x "$SB" ] || { echo "skipped: shelf-boot is not built in $B"; exit 77; }
T=$(mktemp -d /tmp/fleet-boot-XXXXXX)
bgpid=
cleanup() {
	[ -n "$bgpid" ] && kill -KILL "$bgpid" 2>/dev/null
	[ -n "${C:-}" ] && "$C" down --wipe >/dev/null 2>&1
	rm -rf "$T"
	[ -n "${SHELF_CLUSTER_DIR:-}" ] && rm -rf "$SHELF_CLUSTER_DIR"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$T"/*/log; do [ -f "$f" ] && { echo "== $f"; tail -n 15 "$f"; }; done; exit 1; }

# slot D X VERSION BODY: a complete slot X in D whose shelf-node is a script
# that records its environment in D/runs and then runs BODY
slot() {
	local d=$1 x=$2 v=$3 body=$4
	mkdir -p "$d/slots/$x.new/bin" "$d/slots/$x.new/boards/sim"
	echo "$v" >"$d/slots/$x.new/VERSION"
	cat >"$d/slots/$x.new/bin/shelf-node" <<EOF
#!/bin/bash
echo "slot=\$SHELF_SLOT v=\$SHELF_SLOT_VERSION boards=\$SHELF_BOARDS st=\$SHELF_BOOT_STATE args=\$* t=\$(date +%s.%N)" >>"\$SHELF_BOOT_STATE/runs"
$body
EOF
	chmod +x "$d/slots/$x.new/bin/shelf-node"
	mv "$d/slots/$x.new" "$d/slots/$x"
}
# state D TEXT: the boot state, written the way the library does (rename)
state() { mkdir -p "$1/boot"; printf '%b' "$2" >"$1/boot/state.tmp" && mv "$1/boot/state.tmp" "$1/boot/state"; }
AB_TRY='shelf-boot 1\nprimary b\na.version 0.1.0\na.attempts 3\na.good 1\nb.version 0.2.0\nb.attempts %s\nb.good 0\nlast a\n'
count() { grep -c "^slot=$2 " "$1/runs" 2>/dev/null || echo 0; }
field() { awk -v k="$2" '$1 == k { $1 = ""; sub(/^ /, ""); print }' "$1/boot/state"; }

# ---- 1. usage; the first start seeds slot a from the build ----------------------
"$SB" >/dev/null 2>&1; [ $? = 2 ] || fail "no --state-dir: not exit 2"
"$SB" --state-dir "$T/u" --deadline 5x -- x >/dev/null 2>&1; [ $? = 2 ] || fail "bad --deadline: not exit 2"
"$SB" --state-dir "$T/u" -- --help >"$T/u.out" 2>&1; [ $? = 1 ] || fail "no state, no slot, no seed: not exit 1"
grep -q "give --seed DIR" "$T/u.out" || fail "no seed: $(cat "$T/u.out")"
d=$T/seed
"$SB" --state-dir "$d" --seed "$B" --seed-boards "$SRC/boards" -- --help >"$d.out" 2>&1 ||
	fail "first start with the real shelf-node --help: $(tail -n 3 "$d.out")"
grep -q "first start: slot a seeded from '$B'" "$d.out" || fail "no seeding message: $(cat "$d.out")"
grep -q "update_gate_deadline" "$d.out" || fail "the seeded shelf-node did not run (--help)"
cmp -s "$B/shelf-node" "$d/slots/a/bin/shelf-node" || fail "slot a's shelf-node differs from the build's"
cmp -s "$SRC/boards/sim/board.conf" "$d/slots/a/boards/sim/board.conf" || fail "slot a's board profile"
grep -Eq '^[0-9]+\.[0-9]+\.[0-9]+$' "$d/slots/a/VERSION" || fail "slot a's VERSION: $(cat "$d/slots/a/VERSION")"
[ "$(field "$d" a.good)" = 1 ] && [ "$(field "$d" primary)" = a ] &&
	[ "$(field "$d" a.version)" = "$(cat "$d/slots/a/VERSION")" ] || fail "state after seeding: $(cat "$d/boot/state")"
[ ! -e "$d/slots/b" ] && [ ! -e "$d/slots/a.new" ] || fail "seeding left more than slot a"
echo "ok 1: usage errors (exit 2), no seed (exit 1), first start seeds slot a from the build, good"

# ---- 2. a slot b that fails: 3 attempts, then slot a with the reason -----------
d=$T/fail; mkdir -p "$d"
slot "$d" a 0.1.0 'exit 0'
slot "$d" b 0.2.0 'exit 1'
state "$d" "$(printf "$AB_TRY" 3)\n"
timeout 60 "$SB" --state-dir "$d" -- --board sim --x "two words" >"$d/log" 2>&1; rc=$?
[ $rc = 0 ] || fail "shelf-boot exit $rc"
[ "$(count "$d" b)" = 3 ] && [ "$(count "$d" a)" = 1 ] || fail "runs: $(cat "$d/runs")"
[ "$(tail -n 1 "$d/runs" | cut -d' ' -f1)" = slot=a ] || fail "slot a did not run last: $(cat "$d/runs")"
grep -q "^slot=b v=0.2.0 boards=$d/slots/b/boards st=$d args=--board sim --x two words " "$d/runs" ||
	fail "slot b's environment/arguments: $(head -n 1 "$d/runs")"
[ "$(field "$d" primary)" = a ] && [ "$(field "$d" b.attempts)" = 0 ] && [ "$(field "$d" b.good)" = 0 ] &&
	[ "$(field "$d" last)" = a ] || fail "state: $(cat "$d/boot/state")"
want="slot b 0.2.0 is not good and has no attempts left (last: exited with code 1)"
[ "$(field "$d" fallback)" = "$want" ] || fail "fallback: '$(field "$d" fallback)'"
grep -q "falling back to slot a: $want" "$d/log" || fail "no fallback in the log: $(cat "$d/log")"
grep -q "starting again in 1000 ms" "$d/log" || fail "no retry after 1 s"
echo "ok 2: slot b exiting 1: 3 attempts, fallback to a with '$want'"

# ---- 3. a slot b that hangs: stopped at --deadline ------------------------------
d=$T/hang; mkdir -p "$d"
slot "$d" a 0.1.0 'exit 0'
slot "$d" b 0.2.0 "trap '' TERM; while :; do sleep 0.1; done"
state "$d" "$(printf "$AB_TRY" 1)\n"
t0=$SECONDS
timeout 60 "$SB" --state-dir "$d" --deadline 2s -- >"$d/log" 2>&1; rc=$?
[ $rc = 0 ] || fail "shelf-boot exit $rc"
[ "$(count "$d" b)" = 1 ] && [ "$(count "$d" a)" = 1 ] || fail "runs: $(cat "$d/runs")"
grep -q "slot b not marked good within 2000 ms: stopping it (SIGTERM)" "$d/log" || fail "no deadline stop: $(cat "$d/log")"
grep -q "still running 5000 ms after SIGTERM: SIGKILL" "$d/log" || fail "no SIGKILL after SIGTERM was ignored"
case "$(field "$d" fallback)" in
*"(last: not marked good within the deadline of 2000 ms)") ;;
*) fail "fallback: $(field "$d" fallback)" ;;
esac
[ $((SECONDS - t0)) -lt 30 ] || fail "took $((SECONDS - t0)) s"
echo "ok 3: a hanging slot b is stopped at --deadline (SIGTERM, SIGKILL 5 s later), fallback to a"

# ---- 4. exit 75: restart at once into the new primary ---------------------------
d=$T/restart; mkdir -p "$d"
# slot a, good, acts as the node agent: marks b to be tried, asks for a restart
slot "$d" a 0.1.0 "[ -f \"\$SHELF_BOOT_STATE/done\" ] && exit 0
touch \"\$SHELF_BOOT_STATE/done\"
printf 'shelf-boot 1\\nprimary b\\na.version 0.1.0\\na.attempts 3\\na.good 1\\nb.version 0.2.0\\nb.attempts 3\\nb.good 0\\nlast a\\n' >\"\$SHELF_BOOT_STATE/boot/s.tmp\"
mv \"\$SHELF_BOOT_STATE/boot/s.tmp\" \"\$SHELF_BOOT_STATE/boot/state\"
exit 75"
slot "$d" b 0.2.0 'exit 0'
state "$d" 'shelf-boot 1\nprimary a\na.version 0.1.0\na.attempts 3\na.good 1\nlast -\n'
timeout 30 "$SB" --state-dir "$d" -- >"$d/log" 2>&1 || fail "shelf-boot exit $?"
[ "$(cut -d' ' -f1 "$d/runs" | tr '\n' ' ')" = "slot=a slot=b " ] || fail "runs: $(cat "$d/runs")"
grep -q "asked for a restart (exit 75)" "$d/log" || fail "no restart message: $(cat "$d/log")"
grep -q "starting again in" "$d/log" && fail "exit 75 waited like a failure"
gap=$(awk '{ sub(/.*t=/, ""); t[NR] = $1 } END { printf "%d", (t[2] - t[1]) * 1000 }' "$d/runs")
[ "$gap" -lt 900 ] || fail "restart after exit 75 took $gap ms"
[ "$(field "$d" b.attempts)" = 2 ] && [ "$(field "$d" last)" = b ] || fail "state: $(cat "$d/boot/state")"
echo "ok 4: exit 75 restarts at once ($gap ms) into the new primary b, its attempt counted"

# ---- 5. SIGKILL during state writes and during seeding --------------------------
d=$T/kill; mkdir -p "$d"
slot "$d" a 0.1.0 'exit 75'     # a restart loop: a state write per start
slot "$d" b 0.2.0 'exit 75'
seed=${SEED:-$RANDOM}
echo "seed $seed (SEED=$seed replays it)"
RANDOM=$seed
for i in $(seq 30); do
	state "$d" "$(printf "$AB_TRY" 100)\n"
	"$SB" --state-dir "$d" -- >>"$d/log" 2>&1 &
	bgpid=$!
	sleep "0.$((RANDOM % 200 + 20))"
	kill -KILL "$bgpid"; wait "$bgpid" 2>/dev/null; bgpid=
	# what is there now must be a state shelf-boot accepts
	cp "$d/boot/state" "$T/kill.state"
	mkdir -p "$T/kchk$i/boot"
	slot "$T/kchk$i" a 0.1.0 'exit 0'
	slot "$T/kchk$i" b 0.2.0 'exit 0'
	cp "$T/kill.state" "$T/kchk$i/boot/state"
	timeout 30 "$SB" --state-dir "$T/kchk$i" -- >"$T/kchk.log" 2>&1
	grep -q "refusing" "$T/kchk.log" && fail "after SIGKILL $i the state was refused: $(cat "$T/kill.state")"
	rm -rf "$T/kchk$i"
done
n=$(grep -c "starting slot" "$d/log")
[ "$n" -ge 30 ] || fail "only $n starts in 30 runs: the kills did not hit state writes"
# SIGKILL while slot a is being seeded (a 64 MiB shelf-node, so that the
# copy takes a while): a state never names a half-copied slot, and the next
# start seeds it again, complete
d=$T/seedkill
mkdir -p "$T/bigseed/bin"
{ printf '#!/bin/sh\nexit 0\n'; head -c $((64 << 20)) /dev/zero | tr '\0' '#'; } >"$T/bigseed/bin/shelf-node"
chmod +x "$T/bigseed/bin/shelf-node"
for i in $(seq 6); do
	"$SB" --state-dir "$d" --seed "$T/bigseed" --seed-boards "$SRC/boards" -- >/dev/null 2>&1 &
	bgpid=$!
	sleep "0.$((RANDOM % 30 + 1))"
	kill -KILL "$bgpid" 2>/dev/null; wait "$bgpid" 2>/dev/null; bgpid=
	if [ -f "$d/boot/state" ]; then
		cmp -s "$T/bigseed/bin/shelf-node" "$d/slots/a/bin/shelf-node" || fail "a state names a half-copied slot a"
	fi
done
"$SB" --state-dir "$d" --seed "$T/bigseed" --seed-boards "$SRC/boards" -- >"$d.out" 2>&1 || fail "start after seeding kills: $(tail -n 3 "$d.out")"
cmp -s "$T/bigseed/bin/shelf-node" "$d/slots/a/bin/shelf-node" || fail "slot a incomplete after the kills"
[ ! -e "$d/slots/a.new" ] || fail "a.new left behind"
echo "ok 5: 30 SIGKILLs during state writes ($n starts) left a state that is accepted; kills during seeding never boot a half-copied slot"

# ---- 6. a corrupt state: refused, the good slot boots ------------------------------
d=$T/corrupt; mkdir -p "$d"
slot "$d" a 0.1.0 'exit 0'
slot "$d" b 0.2.0 'exit 0'
state "$d" 'shelf-boot 1\nprimary b\nb.version 0.2.0\nb.attempts 3\nb.good 0\nlast b\ncolour blue\n'
timeout 30 "$SB" --state-dir "$d" -- >"$d/log" 2>&1 || fail "shelf-boot exit $?"
grep -q "refusing the boot state: boot state '$d/boot/state' line 7: unknown or misplaced key 'colour'" "$d/log" ||
	fail "no refusal message: $(cat "$d/log")"
[ -f "$d/boot/state.bad" ] || fail "the refused state was not kept"
[ "$(cut -d' ' -f1 "$d/runs")" = slot=a ] || fail "runs: $(cat "$d/runs")"
[ "$(field "$d" primary)" = a ] && [ "$(field "$d" a.good)" = 0 ] && [ -z "$(field "$d" b.version)" ] ||
	fail "new state: $(cat "$d/boot/state")"
case "$(field "$d" fallback)" in "boot state refused (boot state '$d/boot/state' line 7"*) ;; *) fail "fallback: $(field "$d" fallback)" ;; esac
# the same with a line that marks b good: b is the slot to trust
rm -f "$d/runs"
state "$d" 'shelf-boot 1\nprimary b\nb.version 0.2.0\nb.attempts x\nb.good 1\nlast b\n'
timeout 30 "$SB" --state-dir "$d" -- >"$d/log" 2>&1 || fail "shelf-boot exit $?"
grep -q "line 4: bad value 'x' for 'b.attempts'" "$d/log" || fail "no refusal: $(cat "$d/log")"
[ "$(cut -d' ' -f1 "$d/runs")" = slot=b ] && [ "$(field "$d" b.good)" = 1 ] || fail "runs: $(cat "$d/runs"); $(cat "$d/boot/state")"
# an empty file and binary junk
for junk in '' '\x00\x01\xff\xfe'; do
	rm -f "$d/runs"
	state "$d" "$junk"
	timeout 30 "$SB" --state-dir "$d" -- >"$d/log" 2>&1 || fail "shelf-boot exit $? on junk"
	grep -q "refusing the boot state" "$d/log" && [ "$(cut -d' ' -f1 "$d/runs")" = slot=a ] || fail "junk: $(cat "$d/log")"
done
echo "ok 6: a corrupt state is refused with the line and the reason, kept as state.bad, and a runnable slot boots"

# ---- 7. SIGTERM stops the node and shelf-boot ------------------------------------
d=$T/term; mkdir -p "$d"
slot "$d" a 0.1.0 "trap 'echo got-term >>\"\$SHELF_BOOT_STATE/runs\"; exit 0' TERM; while :; do sleep 0.1; done"
state "$d" 'shelf-boot 1\nprimary a\na.version 0.1.0\na.attempts 3\na.good 1\nlast a\n'
"$SB" --state-dir "$d" --node-pid-file "$d/node.pid" -- >"$d/log" 2>&1 &
bgpid=$!
for _ in $(seq 100); do [ -s "$d/runs" ] && [ -s "$d/node.pid" ] && break; sleep 0.05; done
npid=$(cat "$d/node.pid")
kill -0 "$npid" 2>/dev/null || fail "node pid file"
kill -TERM "$bgpid"
timeout 10 tail --pid="$bgpid" -f /dev/null || fail "shelf-boot still running 10 s after SIGTERM"
wait "$bgpid"; rc=$?; bgpid=
[ $rc = 0 ] || fail "shelf-boot exit $rc after SIGTERM"
grep -q got-term "$d/runs" || fail "the node did not get SIGTERM"
! kill -0 "$npid" 2>/dev/null || fail "the node still runs"
echo "ok 7: SIGTERM to shelf-boot is passed on; both exit 0"

# ---- 8. the real node's health gate on a local cluster ---------------------------
if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null || [ ! -x "$B/shelf-broker" ]; then
	echo "ok 8: skipped (needs root, iproute2 and shelf-broker for the cluster part)"
	exit 0
fi
. "$SRC/tests/integration/cluster_lib.sh"
trap cleanup EXIT
cluster_test fb fleet-boot
trap cleanup EXIT
D=$SHELF_CLUSTER_DIR
export SHELF_CLUSTER_SYSTEM_SLICE=system # the check below wants the system slice (shelf-cluster makes it only when asked)
"$C" up --nodes 4 --drive-size 768M >"$T/up" 2>&1 || fail "up: $(cat "$T/up")"
n1=$D/n01
[ -f "$n1/boot.pid" ] && [ "$(field "$n1" a.good)" = 1 ] || fail "n01 did not start through shelf-boot: $(cat "$n1/boot/state")"
[ "$(cat "/proc/$(cat "$n1/pid")/comm")" = shelf-node ] || fail "nXX/pid is not the node's"
rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$(cat "$n1/boot.pid")/status")
echo "shelf-boot rss: $rss KiB"
[ "$rss" -lt 8192 ] || fail "shelf-boot uses $rss KiB"
# objects, so that the sample scrub has records to verify
for i in $(seq 40); do
	echo "object $i" >"$T/o"
	ok=0
	for _ in $(seq 50); do "$C" exec -- shelf put "fb/$i" "$T/o" >"$T/put" 2>&1 && { ok=1; break; }; sleep 0.2; done
	[ $ok = 1 ] || fail "put fb/$i: $(cat "$T/put")"
done
"$C" exec -- shelf slice show system --json >"$T/sys.json" 2>&1 || fail "no system slice: $(cat "$T/sys.json")"
grep -q '"replicas": 2' "$T/sys.json" || fail "system slice: $(cat "$T/sys.json")"
# slot b: the same build as version 0.2.0, installed the way the agent does
# (b.new renamed, then marked to be tried)
install_b() { # WRAPPER-OR-EMPTY
	rm -rf "$n1/slots/b" "$n1/slots/b.new"
	cp -a "$n1/slots/a" "$n1/slots/b.new"
	rm -f "$n1/slots/b.new/SEEDED"
	echo 0.2.0 >"$n1/slots/b.new/VERSION"
	if [ -n "$1" ]; then
		mv "$n1/slots/b.new/bin/shelf-node" "$n1/slots/b.new/bin/shelf-node.real"
		printf '#!/bin/sh\n%s\n' "$1" >"$n1/slots/b.new/bin/shelf-node"
		chmod +x "$n1/slots/b.new/bin/shelf-node"
	fi
	mv "$n1/slots/b.new" "$n1/slots/b"
	state "$n1" "$(printf "$AB_TRY" 3)\n"
}
install_b ""
echo "--- trial" >>"$n1/log"
"$C" kill 1 >/dev/null || fail "kill 1"
"$C" start 1 >/dev/null || fail "start 1"
for _ in $(seq 600); do [ "$(field "$n1" b.good)" = 1 ] && break; sleep 0.1; done
[ "$(field "$n1" b.good)" = 1 ] || fail "slot b not marked good: $(cat "$n1/boot/state"); $(tail -n 8 "$n1/log")"
passed=$(grep -o "health gate passed.*" "$n1/log" | tail -n 1)
[[ "$passed" == *"slot b, version 0.2.0: registered, sample scrub of "*" record(s) clean, self-check STAT on ["*"]:7480 answered "* ]] ||
	fail "gate message: $passed"
[ "$(field "$n1" primary)" = b ] && [ "$(field "$n1" b.attempts)" = 3 ] || fail "state: $(cat "$n1/boot/state")"
for _ in $(seq 50); do grep -q "slot b (version 0.2.0) marked good by its health gate" "$n1/log" && break; sleep 0.1; done
grep -q "slot b (version 0.2.0) marked good by its health gate" "$n1/log" || fail "shelf-boot did not see the mark"
echo "ok 8a: a real shelf-node on trial in slot b: $passed"
# a slot b whose node cannot register: its gate fails, 3 times, then slot a
install_b 'exec "$(dirname "$0")/shelf-node.real" "$@" --set "brokers=tcp://[fd00:5e1f:0:1::1]:1" --set update_gate_deadline=2s'
"$C" kill 1 >/dev/null || fail "kill 1"
"$C" start 1 >/dev/null || fail "start 1"
# ready again in slot a: a "ready:" after the last "falling back" line
for _ in $(seq 900); do
	[ "$(field "$n1" primary)" = a ] && tac "$n1/log" | sed '/falling back to slot a/q' | grep -q "ready:" &&
		grep -q "falling back to slot a" "$n1/log" && break
	sleep 0.1
done
[ "$(field "$n1" primary)" = a ] || fail "no fallback to a: $(cat "$n1/boot/state"); $(tail -n 8 "$n1/log")"
[ "$(grep -c "health gate failed: not passed within 2000 ms (not registered with a broker)" "$n1/log")" = 3 ] ||
	fail "gate failures: $(grep "health gate" "$n1/log")"
[ "$(field "$n1" fallback)" = "slot b 0.2.0 is not good and has no attempts left (last: exited with code 1)" ] ||
	fail "fallback: $(field "$n1" fallback)"
# slot a serves again: every object reads back
for i in $(seq 40); do
	"$C" exec -- shelf get "fb/$i" "$T/g" >/dev/null 2>&1 || fail "get fb/$i after the fallback"
	[ "$(cat "$T/g")" = "object $i" ] || fail "fb/$i reads '$(cat "$T/g")'"
done
echo "ok 8b: a real node whose gate fails (cannot register) falls back to slot a after 3 attempts; all 40 objects read back"
"$C" down >/dev/null || fail "down"
! running_any=$(pgrep -f "state-dir $D/n0" ) || fail "processes left after down: $running_any"
echo "all checks passed"
