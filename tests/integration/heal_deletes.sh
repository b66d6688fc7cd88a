#!/bin/bash
# Deletes stay deleted when an `out` node comes back (issue 14, "Tests";
# minio #3768): 12 nodes over 3 chassis, slice 'default' at R=2, grace 3
# s, OBJECTS keys of 4 KiB. A node V (from the seed) is SIGKILLed; once it
# is `out` and the slice is back at full redundancy, half of the keys V
# held are deleted. V is started again: it
# registers as new and is a home again, with its stale copies on its
# drive. Once the slice is at full redundancy again: no member holds an
# object of a deleted key (V's copies were superseded by the newer
# tombstones, never the reverse), every deleted key reads not-found
# (`shelf get` exits 3), and every other key reads its bytes.
set -u
. "$(dirname "$0")/cluster_lib.sh"
. "$(dirname "$0")/heal_lib.sh"
heal_begin hd shelf-hdel
if [ "${LONG:-0}" = 1 ]; then OBJECTS=2000; else OBJECTS=400; fi

heal_up 12 3 3s default:2
hc default fill "$OBJECTS" hd/ "$SEED" --size 4096 || fail "fill"
v=$(printf 'n%02d' $((RANDOM % 12 + 1)))
hc default holdings hd/ "$D/before.json" >/dev/null || fail "holdings"
# half of the keys V holds, to delete while it is out
"$PY" -c '
import json, sys
h = json.load(open(sys.argv[1]))["nodes"][sys.argv[2]]
ks = sorted(h, key=lambda k: int(k.split("/")[1]))
print("\n".join(ks[::2]))' "$D/before.json" "$v" >"$D/deleted"
[ -s "$D/deleted" ] || fail "$v holds no key"
"$C" kill "$v" >/dev/null || fail "kill $v"
echo "killed $v (it holds $(($(wc -l <"$D/deleted") * 2)) keys or so) at $((SECONDS - T0)) s"
wait_state "$v" out 30
wait_full default 60
n=0
while read -r k; do
	x shelf rm "$k" >/dev/null 2>>"$D/rm.err" || fail "rm $k: $(tail -n 1 "$D/rm.err")"
	n=$((n + 1))
done <"$D/deleted"
echo "$v out; deleted $n of its keys at $((SECONDS - T0)) s"
"$C" start "$v" >/dev/null || fail "start $v"
wait_state "$v" up 30
x "$PY" "$RC" "$D" default wait-up 12 || fail "not 12 members up"
echo "$v back (registered as new) at $((SECONDS - T0)) s"
wait_full default 60
for i in $(seq 60); do
	hc default holdings hd/ "$D/after.json" >/dev/null || fail "holdings after"
	back=$("$PY" -c '
import json, sys
h = json.load(open(sys.argv[1]))["nodes"]
dl = {l.strip() for l in open(sys.argv[2]) if l.strip()}
print(" ".join(sorted(f"{n}:{k}" for n, ks in h.items() for k, v in ks.items() if k in dl and not v[2])))' \
		"$D/after.json" "$D/deleted")
	[ -z "$back" ] && break
	sleep 1
done
[ -z "$back" ] || fail "deleted keys still held as objects 60 s after $v came back: $(echo $back | cut -c1-300)"
echo "no member holds an object of a deleted key"
while read -r k; do
	x shelf get "$k" /dev/null 2>/dev/null
	rc=$?
	[ $rc = 3 ] || fail "get $k (deleted) exited $rc, not 3 (not found)"
done < <(head -n 40 "$D/deleted")
hc default verify "$OBJECTS" hd/ "$SEED" --size 4096 --deleted "$D/deleted" || fail "verify"
echo "ok: $n keys deleted while $v was out stay deleted after it came back, in $((SECONDS - T0)) s"
