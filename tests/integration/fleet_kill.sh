#!/bin/bash
# A node killed in the middle of fetching, and in the middle of installing
# (issue 16, "Tests"), during a real rollout through the director: 3 nodes
# over 2 chassis, fetches paced (update_rate 8M, one block at a time) and a
# 40 MiB image, stages canary,100%.
#   - the canary is SIGKILLed (shelf-boot and node: a dead board) once it
#     verified some blocks but not all; restarted, it resumes (the blocks
#     verified before the kill count as verified) on the director's word
#     alone;
#   - it is SIGKILLed again while tar extracts into slots/b.new (a tar that
#     stops half-way); its boot state never names slot b then, and it boots
#     slot a; restarted with the real tar, it installs a complete slot b;
#   - the broker is SIGKILLed while the canary fetches once more: the
#     canary finishes its fetch and install from its peers but does not
#     restart, and no other node fetches, until the broker is back;
#   - the rollout then completes: every node on the version in slot b, and
#     no node's slot b is the half-written one.
set -u
. "$(dirname "$0")/cluster_lib.sh"
. "$(dirname "$0")/fleet_lib.sh"
fleet_begin flk shelf-flkill
export SHELF_NODE_SET="update_rate=8M update_inflight=1"
fleet_up 3 2
V1=6.$((RANDOM % 100)).3
fleet_image "$V1" "$IMG/new.img" --pad 40
x shelf fleet publish "$IMG/new.img" >/dev/null || fail "publish"
x shelf fleet rollout start "$V1" --stages canary,100% --soak 1s >/dev/null || fail "start"

since_restart() { tac "$D/$1/log" | sed '/^--- restart/q' | grep -q -- "$2"; }
wait_since() {
	for _ in $(seq $(($3 * 10))); do since_restart "$1" "$2" && return 0; sleep 0.1; done
	fail "$1 did not log '$2' within $3 s of its restart"
}
# marked NODE: blocks marked verified in its update/image.blocks
marked() {
	"$PY" -c '
import sys
try:
    d = open(sys.argv[1], "rb").read()[40:]
except OSError:
    d = b""
print(sum(bin(b).count("1") for b in d))' "$D/$1/update/image.blocks"
}

# the canary: the node that starts fetching
canary=
for _ in $(seq 600); do
	for n in n01 n02 n03; do
		[ "$(marked $n)" -ge 1 ] && canary=$n && break 2
	done
	sleep 0.05
done
[ -n "$canary" ] || fail "no node started fetching"
m=$(marked "$canary")
others=()
for n in n01 n02 n03; do [ $n = "$canary" ] || others+=($n); done
slot_b_absent "${others[@]}"
"$C" kill "$canary" >/dev/null || fail "kill $canary mid-fetch"
[ "$m" -ge 1 ] || fail "no partial fetch to interrupt"
echo "$canary (the canary) SIGKILLed mid-fetch with $m blocks verified"
[ -e "$D/$canary/slots/b" ] && fail "$canary has a slot b after a kill mid-fetch"
grep -q "^b\." "$D/$canary/boot/state" && fail "$canary's boot state names slot b after a kill mid-fetch"

# restart it with a tar that stops half-way: it resumes the fetch, then
# the install hangs in slots/b.new
mkdir -p "$D/slowbin"
cat >"$D/slowbin/tar" <<EOF2
#!/bin/bash
echo \$\$ >"$D/slowtar.pid"
for a in "\$@"; do [ "\$prev" = -C ] && dir=\$a; prev=\$a; done
mkdir -p "\$dir/bin" && echo partial >"\$dir/bin/shelf-node" && chmod +x "\$dir/bin/shelf-node"
sleep 120
EOF2
chmod +x "$D/slowbin/tar"
echo "--- restart" >>"$D/$canary/log"
PATH="$D/slowbin:$PATH" "$C" start "$canary" >/dev/null || fail "start $canary"
wait_since "$canary" "blocks already verified" 90
resumed=$(tac "$D/$canary/log" | sed '/^--- restart/q' | grep -o "update: [0-9]* of [0-9]* blocks already verified" |
	head -n 1 | cut -d' ' -f2)
[ -n "$resumed" ] && [ "$resumed" -ge "$m" ] ||
	fail "$canary did not resume: ${resumed:-no} blocks already verified after the restart ($m before the kill)"
echo "$canary resumed with $resumed blocks already verified"
for _ in $(seq 1200); do [ -f "$D/slowtar.pid" ] && [ -e "$D/$canary/slots/b.new/bin/shelf-node" ] && break; sleep 0.1; done
[ -e "$D/$canary/slots/b.new/bin/shelf-node" ] || fail "the install did not start on $canary"
"$C" kill "$canary" >/dev/null || fail "kill $canary mid-install"
kill -KILL "$(cat "$D/slowtar.pid")" 2>/dev/null
echo "$canary SIGKILLed mid-install"
grep -q "^b\." "$D/$canary/boot/state" && fail "slot b named in $canary's boot state mid-install"
slot_b_absent "${others[@]}"
echo "--- restart" >>"$D/$canary/log"
"$C" start "$canary" >/dev/null || fail "start $canary"
wait_since "$canary" "update: running version [0-9.]* in slot a" 60
echo "$canary booted slot a after the kill mid-install"

# the broker SIGKILLed mid-rollout: the canary finishes the step it is in
# (its fetch and install, from its peers), but nothing new starts: it does
# not restart into slot b, and no other node fetches; the broker started
# again (its rollout persisted), the rollout goes on from where it was
for _ in $(seq 300); do since_restart "$canary" "update: fetching release" && break; sleep 0.1; done
kill -KILL "$(cat "$D/broker/pid")" || fail "kill the broker"
# (a restart granted just before the kill is the step it is in)
granted=$(grep -c "^state restarting" "$D/$canary/update/state" 2>/dev/null)
npid=$(cat "$D/$canary/pid" 2>/dev/null)
echo "broker SIGKILLed once $canary took up its fetch again"
for _ in $(seq 600); do [ -d "$D/$canary/slots/b" ] && break; sleep 0.1; done
[ -d "$D/$canary/slots/b" ] || fail "$canary did not finish its install while the broker was down: $(tail -n 3 "$D/$canary/log")"
sleep 3
# (installed, slot b is marked to be tried next, but the node goes on)
[ "$granted" = 0 ] && { [ "$(cat "$D/$canary/pid" 2>/dev/null)" != "$npid" ] || since_restart "$canary" "running version $V1"; } &&
	fail "$canary restarted into slot b with no broker to say so"
slot_b_absent "${others[@]}"
for n in "${others[@]}"; do
	grep -q "^target $V1" "$D/$n/update/state" 2>/dev/null && fail "$n took an assignment for $V1 while the broker was down"
done
[ "$granted" = 0 ] || echo "($canary had been granted its restart before the broker's kill)"
echo "while the broker was down: $canary installed slot b and did not restart; no other node fetched"
fleet_broker_start

wait_rollout done 400
all_on "$V1" b 3 || fail "not every node on $V1 in slot b"
for n in n01 n02 n03; do
	[ "$(head -c 7 "$D/$n/slots/b/bin/shelf-node")" != partial ] || fail "$n's slot b is the half-written one"
	cmp -s "$D/$n/slots/b/bin/shelf-node" "$B/shelf-node" || fail "$n's slot b shelf-node differs from the image's"
done
echo "the rollout completed: every node on $V1 in a complete slot b"
echo "all checks passed in $((SECONDS - T0)) s"
