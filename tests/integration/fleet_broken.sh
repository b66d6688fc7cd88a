#!/bin/bash
# A broken image halts at the canary (issue 16, "Tests"): on 4 nodes over 2
# chassis, an image whose bin/shelf-node exits 1 at once is published and
# rolled out (canary,chassis,100%). Checked:
#   - the canary installs it, restarts into it, and shelf-boot falls back to
#     slot a by itself once its attempts run out; the node reports
#     rolled_back with the reason;
#   - the rollout halts at the canary stage with that reason (`rollout
#     status` exits 4 and names the node and why), and a failure is listed;
#   - no other node installs it: no slot b, no b lines in their boot state,
#     and nobody but the canary was ever included;
#   - a fixed image of the same version is published and `resume` completes
#     the rollout: every node on the version in slot b.
set -u
. "$(dirname "$0")/cluster_lib.sh"
. "$(dirname "$0")/fleet_lib.sh"
fleet_begin flb shelf-flbrk
fleet_up 4 2
V1=3.$((RANDOM % 100)).1
printf '#!/bin/sh\necho "broken image: shelf-node refuses to start" >&2\nexit 1\n' >"$IMG/broken-node"
fleet_image "$V1" "$IMG/broken.img" --node-bin "$IMG/broken-node"
fleet_image "$V1" "$IMG/fixed.img"
out=$(x shelf fleet publish "$IMG/broken.img") || fail "publish: $out"
out=$(x shelf fleet rollout start "$V1" --soak 2s) || fail "start: $out"
echo "$out"
t=$SECONDS
while :; do
	st=$(status_field state)
	[ "$st" = halted ] && break
	[ "$st" = running ] || fail "rollout is $st, not running or halted"
	[ "$(status_field included)" = 1 ] || fail "the rollout went past the canary: $(status_field included) nodes included"
	[ $((SECONDS - t)) -lt 240 ] || fail "the rollout did not halt within 240 s"
	sleep 1
done
echo "halted after $((SECONDS - t)) s"
reason=$(status_field reason)
echo "reason: $reason"
case $reason in *"rolled back"*) ;; *) fail "the reason does not say the node rolled back: $reason" ;; esac
[ "$(status_field stage)" = canary ] || fail "halted at stage $(status_field stage), not canary"
[ "$(status_field counts.rolled_back)" = 1 ] || fail "rolled_back count $(status_field counts.rolled_back)"
x shelf fleet rollout status >"$D/status.txt"
rc=$?
[ $rc = 4 ] || fail "rollout status of a halted rollout exited $rc, not 4"
grep -q "^failures" "$D/status.txt" || fail "no failures listed: $(cat "$D/status.txt")"
# which node was the canary: the one whose boot state fell back
canary=
for n in "$D"/n??; do
	grep -q "^fallback" "$n/boot/state" && canary=$(basename "$n")
done
[ -n "$canary" ] || fail "no node's boot state records a fallback"
echo "canary $canary fell back: $(sed -n 's/^fallback //p' "$D/$canary/boot/state")"
grep -q "^primary a" "$D/$canary/boot/state" || fail "$canary's primary is not slot a"
grep -q "shelf-node refuses to start\|exited\|exit" "$D/$canary/log" || true
others=()
for n in "$D"/n??; do
	[ "$(basename "$n")" = "$canary" ] || others+=("$(basename "$n")")
done
sleep 5 # nothing moves while halted
slot_b_absent "${others[@]}"
[ "$(status_field included)" = 1 ] || fail "$(status_field included) nodes included after the halt"
echo "no other node installed it (${others[*]})"
# every node, the canary included, still runs the old version in slot a
[ "$(versions_field slot | sort -u)" = a ] || fail "slots: $(versions_field slot | tr '\n' ' ')"

out=$(x shelf fleet publish "$IMG/fixed.img") || fail "publish fixed: $out"
echo "$out" | head -n 1
out=$(x shelf fleet rollout resume) || fail "resume: $out"
wait_rollout done 300
all_on "$V1" b 4 || fail "not every node on $V1 in slot b after resume"
echo "resume completed: every node on $V1 in slot b"
echo "all checks passed in $((SECONDS - T0)) s"
