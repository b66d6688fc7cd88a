#!/bin/bash
# The node-side chunk GC of large objects (issue 15): 4 nodes over 2
# chassis running with chunk_gc_after=6s and chunk_gc_interval=1s, slice
# 'default' at R=2 and 'p1' at R=1. Chunks, intents and manifests are
# written with raw PUTs as docs/FORMAT.md describes them
# (py/large_gc.py):
#   (a) an intent whose key holds a manifest of its id: the intent goes,
#       the chunks stay;
#   (b) a killed PUT (no manifest), on both slices: chunks and intent still
#       there 2 s after, gone after the delay (tombstones on both homes);
#   (c) an overwrite: the old id's chunks go, the new id's stay;
#   (d) intents that do not parse: deleted, counted (gc_intents_bad);
#   (g) a damaged manifest of the intent's id: nothing deleted (gc_errors);
#   (f) then an anti-entropy pass of 'default' (`shelf repair`): no deleted
#       chunk comes back;
#   node certificates may DELETE and LIST fe x8 keys only, and only on a
#       slice they are members of (slice 'c1': the nodes of chassis c1);
#   (e) an intent whose key's two homes are SIGKILLed: nothing is deleted
#       while they are down (gc_intents_deferred), and everything is
#       collected once they are back.
set -u
. "$(dirname "$0")/cluster_lib.sh"
. "$(dirname "$0")/heal_lib.sh"
heal_begin lg shelf-lgc
export SHELF_NODE_SET="chunk_gc_after=6s chunk_gc_interval=1s"
HEAL_DRIVE=640M heal_up 4 2 60s default:2 p1:1
G=$SRC/tests/integration/py/large_gc.py
g() { x "$PY" "$G" "$D" "$@"; }

x shelf slice create c1 --replicas 1 --members chassis=c1 >/dev/null || fail "slice create c1"
"$C" exec -- shelf-broker client --dir "$D/broker" --name gc2 --slices default,p1,c1 >/dev/null ||
	fail "client gc2"
wait_joined c1 2
CL=$D/broker/clients/gc2
g auth default c1 || fail "node certificates on fe x8 keys"
g main default p1 || fail "chunk gc (a)-(d), (g)"
out=$(x shelf repair default 2>&1) || { echo "$out"; fail "shelf repair default"; }
g gone default "$D/gc_ids.json" || fail "(f) deleted chunks came back"
grep -h "chunk gc:" "$D"/n*/log | head -n 5

victims=$(g e-setup default "$D/e.json") || { echo "$victims"; fail "(e) setup"; }
for v in $victims; do "$C" kill "$v" >/dev/null || fail "kill $v"; done
echo "(e) killed $victims, the homes of the object key"
g e-check default "$D/e.json" || fail "(e) deleted while the key's homes were down"
for v in $victims; do "$C" start "$v" >/dev/null || fail "start $v"; done
for v in $victims; do wait_state "$v" up 30; done
g e-after default "$D/e.json" || fail "(e) not collected after the homes came back"
echo "ok: chunk gc in $((SECONDS - T0)) s"
