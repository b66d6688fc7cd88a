#!/bin/bash
# A staged rollout (issue 16, "Tests"): a local cluster of FLEET_NODES nodes
# (default 8 over 2 chassis: 24 nodes do not fit CI's time on a shared
# 2-core machine; FLEET_NODES=24 FLEET_CHASSIS=3 runs the issue's size),
# slices default and system with R=2. An image of a new version is built,
# published and rolled out with stages canary,chassis,100% and a short
# soak, while 3 clients read and write the default slice (history logged).
# Checked:
#   - the canary alone goes first; no node outside the canary's chassis
#     fetches before the chassis stage soaked;
#   - at most one node of the slices restarts at a time (the director's
#     rule: every node is in slice system), seen in the rollout status;
#   - every node ends on the new version in slot b (`shelf fleet versions
#     --json`), the rollout is done;
#   - the history check: every read of every acknowledged write succeeded
#     throughout, zero anomalies;
#   - distribution: the publishing client sent about one copy of the payload
#     (its bytes written <= payload + 10 %), and the broker read far less
#     than one copy during publish and rollout (/proc/PID/io rchar): the
#     image came in once and did not pass through the broker.
set -u
. "$(dirname "$0")/cluster_lib.sh"
. "$(dirname "$0")/fleet_lib.sh"
fleet_begin flr shelf-flroll
N=${FLEET_NODES:-8}
CH=${FLEET_CHASSIS:-2}
fleet_up "$N" "$CH"
V0=$(build_version)
V1=7.$((RANDOM % 100)).$((RANDOM % 100))
echo "nodes run $V0; rolling out $V1"
fleet_image "$V1" "$IMG/new.img"
BPID=$(cat "$D/broker/pid")
r0=$(io_of "$BPID" rchar)

# the workload: 3 clients over the whole rollout, in rounds of 15 s until told to stop
h=$D/history
: >"$h"
STOP=$D/stop
for w in 1 2 3; do
	( while [ ! -e "$STOP" ]; do
		x "$PY" "$H" work "$h" 15 "fr/" "$SEED$w$SECONDS" --keys 20 --max-bytes 262144 \
			--client "w$w" --slice default 2>>"$D/work.err" || echo "worker $w: exit $?" >>"$D/work.err"
	  done ) &
done
sleep 5

pub=$(x shelf fleet publish "$IMG/new.img" --json) || fail "publish: $pub"
size=$(echo "$pub" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["size"])')
sent=$(echo "$pub" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["bytes_written"])')
echo "published $V1: $size payload bytes; the client wrote $sent bytes"
[ "$sent" -ge "$size" ] || fail "the client wrote $sent bytes, less than the payload ($size)"
[ "$sent" -le $((size + size / 10 + 65536)) ] ||
	fail "the client wrote $sent bytes for a $size byte payload: more than one copy"

out=$(x shelf fleet rollout start "$V1" --stages canary,chassis,100% --soak 3s) || fail "start: $out"
echo "$out"
# watch it: the canary alone first; then its chassis; one restart at a time
canary= maxreb=0 t=$SECONDS
while :; do
	st=$(x shelf fleet rollout status --json 2>/dev/null) || true
	read -r state stage inc reb fetchers canary_now < <(echo "$st" | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
nodes = d["nodes"]
fetching = sum(1 for n in nodes if n["state"] != "pending")
print(d["state"], d["stage"], d["included"], d["counts"]["rebooting"], fetching, nodes[0]["node"][:16] if nodes else "-")' 2>/dev/null || echo "error - 0 0 0 -")
	[ -z "$canary" ] && [ "$canary_now" != "-" ] && canary=$canary_now
	[ "$reb" -gt "$maxreb" ] && maxreb=$reb
	[ "$reb" -le 1 ] || fail "$reb nodes restarting at once (stage $stage)"
	if [ "$stage" = canary ]; then
		[ "$inc" = 1 ] || fail "the canary stage includes $inc nodes"
		[ "$fetchers" -le 1 ] || fail "$fetchers nodes active during the canary stage"
	fi
	case $state in
	done) break ;;
	halted|aborted) fail "rollout $state: $(status_field reason)" ;;
	esac
	[ $((SECONDS - t)) -lt 900 ] || fail "rollout not done after 900 s (stage $stage)"
	sleep 1
done
echo "rollout done in $((SECONDS - t)) s (canary $canary, at most $maxreb restarting at once)"
r1=$(io_of "$BPID" rchar)
touch "$STOP"
wait
echo "the broker read $((r1 - r0)) bytes during publish and rollout (payload $size)"
[ $((r1 - r0)) -lt $((size / 2)) ] || fail "the broker read $((r1 - r0)) bytes: image bytes went through it"

all_on "$V1" b "$N" || fail "not every node on $V1 in slot b"
echo "every node runs $V1 in slot b"
# the old version stays in the other slot, good
[ "$(versions_field other | sort -u)" = "$V0" ] || fail "other slots: $(versions_field other | sort -u | tr '\n' ' ')"

out=$(x "$PY" "$H" check "$h" --slice default) || { echo "$out"; head -n 20 "$h.err" 2>/dev/null; fail "history anomalies"; }
echo "$out"
echo "all checks passed in $((SECONDS - T0)) s"
