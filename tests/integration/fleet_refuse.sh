#!/bin/bash
# Refusals (issue 16, "Tests"), each with a clear reason and nothing
# installed, on 3 nodes over 2 chassis:
#   - an image with one flipped byte in its payload, and one with a flipped
#     byte in its metadata: `shelf fleet publish` refuses before storing a
#     block (the objects the stores hold do not change) and the broker never
#     hears of it (a start finds no release);
#   - an image signed by a release key of another site's CA (not certified
#     by this site's CA): refused by publish;
#   - expired metadata: refused by publish;
#   - an image for another board: the broker keeps it, but a rollout finds
#     no node of that board to update (refused at start);
#   - a lower version than the nodes run: publish and start accept it (only
#     a node knows what it runs), the canary refuses it with the reason,
#     which `rollout status` shows, and the rollout halts;
# and after all of it no node has a slot b or names one in its boot state.
# (The broker's own checks of the same refusals, without the CLI's, are in
# tests/unit/test_director.c.)
set -u
. "$(dirname "$0")/cluster_lib.sh"
. "$(dirname "$0")/fleet_lib.sh"
fleet_begin flf shelf-flref
fleet_up 3 2
V0=$(build_version)
V1=4.$((RANDOM % 100)).2

# must_refuse WHAT TEXT CMD...: CMD exits 1 and says TEXT
must_refuse() {
	local what=$1 text=$2 out rc
	shift 2
	out=$("$@" 2>&1)
	rc=$?
	[ $rc = 1 ] || fail "$what: exit $rc, not 1: $out"
	echo "$out" | grep -qi -- "$text" || fail "$what: the message does not say '$text': $out"
	echo "refused ($what): $(echo "$out" | head -n 1)"
}

fleet_image "$V1" "$IMG/good.img"
obj0=$(objects_sum)
[ "$obj0" != none ] || fail "no node reports its object count"

# one flipped byte in the payload (the last block), then in the metadata
cp "$IMG/good.img" "$IMG/flip.img"
"$PY" - "$IMG/flip.img" <<'PYEOF'
import os, sys
p = sys.argv[1]
n = os.path.getsize(p)
with open(p, "r+b") as f:
    f.seek(n - 1000)
    b = f.read(1)
    f.seek(n - 1000)
    f.write(bytes([b[0] ^ 0x01]))
PYEOF
must_refuse "flipped payload byte" "does not verify" x shelf fleet publish "$IMG/flip.img"
cp "$IMG/good.img" "$IMG/flipmeta.img"
"$PY" - "$IMG/flipmeta.img" <<'PYEOF'
import sys
p = sys.argv[1]
with open(p, "r+b") as f:
    f.seek(60)
    b = f.read(1)
    f.seek(60)
    f.write(bytes([b[0] ^ 0x01]))
PYEOF
must_refuse "flipped metadata byte" "refused" x shelf fleet publish "$IMG/flipmeta.img"
sleep 2
[ "$(objects_sum)" = "$obj0" ] || fail "objects changed after refused publishes: $obj0 -> $(objects_sum)"
must_refuse "start of a release never published" "no release $V1" x shelf fleet rollout start "$V1"

# a release key certified by another site's CA
x shelf-broker init --dir "$D/other" --site other >/dev/null || fail "init of another site"
x shelf-broker release-key --dir "$D/other" --name rogue >/dev/null || fail "release-key of another site"
REL_SAVE=$REL
REL=$D/other/release/rogue.key
fleet_image "$V1" "$IMG/rogue.img"
REL=$REL_SAVE
must_refuse "uncertified release key" "CA" x shelf fleet publish "$IMG/rogue.img"

# expired metadata
fleet_image "$V1" "$IMG/expired.img" --expires 1s
sleep 2.5
must_refuse "expired metadata" "expired" x shelf fleet publish "$IMG/expired.img"
[ "$(objects_sum)" = "$obj0" ] || fail "objects changed after refused publishes: $obj0 -> $(objects_sum)"

# another board: kept by the broker, no node to update
fleet_image "$V1" "$IMG/other.img" --board otherboard
x shelf fleet publish "$IMG/other.img" >/dev/null || fail "publish of an image for another board"
must_refuse "another board" "no node to update" x shelf fleet rollout start "$V1"
must_refuse "another board, named" "no node to update" x shelf fleet rollout start "$V1" --board otherboard

# a lower version: only the node can tell; it refuses, the rollout halts
VL=0.0.1
[ "$V0" != "$VL" ] || fail "the build runs $VL"
fleet_image "$VL" "$IMG/lower.img"
x shelf fleet publish "$IMG/lower.img" >/dev/null || fail "publish of the lower version"
x shelf fleet rollout start "$VL" --soak 1s >/dev/null || fail "start of the lower version"
t=$SECONDS
while [ "$(status_field state)" != halted ]; do
	[ $((SECONDS - t)) -lt 120 ] || fail "the rollout of a lower version did not halt (it is $(status_field state))"
	sleep 1
done
reason=$(status_field reason)
echo "lower version halted: $reason"
case $reason in *"lower than the running"*) ;; *) fail "the reason does not name the lower version: $reason" ;; esac
[ "$(status_field counts.failed)" = 1 ] || fail "failed count $(status_field counts.failed)"
x shelf fleet rollout status | grep -q "lower than the running" || fail "rollout status does not show the node's reason"
x shelf fleet rollout abort >/dev/null || fail "abort"

slot_b_absent n01 n02 n03
[ "$(versions_field running | sort -u)" = "$V0" ] || fail "nodes run $(versions_field running | sort -u | tr '\n' ' '), not $V0"
echo "nothing installed: every node on $V0 in slot a"
echo "all checks passed in $((SECONDS - T0)) s"
