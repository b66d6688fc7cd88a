#!/bin/bash
# `shelf put -r DIR PREFIX` and `shelf stage PREFIX DIR` (issue 15) on a
# local cluster of NODES (default 24) nodes over 3 chassis, R=2, with a 1 MiB
# chunk size so that a few files are large objects while the bytes stay few:
#  - a dataset of FILES files of mixed sizes (0 B, a few bytes, up to
#    200 KiB, and some larger than the chunk size: 1 MiB - 1, 1 MiB,
#    1 MiB + 1, 3.5 MiB) in nested directories, plus a symbolic link and a
#    FIFO: put -r stores every regular file and notes the other two;
#  - a rerun of put -r skips everything (--json "stored": 0);
#  - stage gives a byte-identical copy (diff -r), no temporary files; its
#    --json names the bytes each node sent (their sum at least the bytes
#    staged, at least 4 nodes serving);
#  - a stage interrupted with SIGINT exits 130 with no partial file; the
#    rerun fetches only what was not finished ("skipped" + "fetched" =
#    FILES, "fetched" < FILES) and the copy is identical;
#  - a stage while a node is SIGKILLed completes from the replicas;
#  - a destination on a read-only mount: a clear error, nothing written;
#  - a destination that fills up (a 3 MiB tmpfs): a clear error (No space
#    left on device), no partial file; after it grows, the rerun resumes
#    (skips the files already there) and the copy is identical.
# SEED=n replays the dataset.
set -u
. "$(dirname "$0")/cluster_lib.sh"
cluster_test si shelf-stage
B=${SHELF_BUILD:-$SRC/build}
[ -x "$B/shelf-broker" ] || { echo "skipped: shelf-broker not built"; exit 77; }
D=$SHELF_CLUSTER_DIR
T=$D/t
mkdir -p "$T"
NODES=${NODES:-24}
FILES=${FILES:-400}
SEED=${SEED:-$RANDOM}
echo "seed $SEED (SEED=$SEED replays the dataset), $NODES nodes, $FILES files"
fail() {
	echo "FAIL: $*"
	for l in "$D"/n*/log; do echo "== $l"; tail -n 3 "$l"; done
	exit 1
}
x() { "$C" exec -- "$@"; }
now() { date +%s; }
jget() { sed -n "s/^  \"$1\": \\([^,]*\\),\\{0,1\\}\$/\\1/p" "$2"; }

t0=$(now)
"$C" up --nodes "$NODES" --chassis 3 --replicas 2 --drive-size 600M --chunk-size 1M \
	>"$D/up.log" 2>&1 || fail "up: $(tail -n 3 "$D/up.log")"
until x shelf put warm "$SRC/LICENSE" --timeout 10000 2>/dev/null; do
	[ $(($(now) - t0)) -lt 120 ] || fail "slice default takes no puts after 120 s"
	sleep 0.3
done
echo "cluster up in $(($(now) - t0)) s"

# ---- the dataset ----
S=$T/src
mkdir -p "$S"
RANDOM=$SEED
big=(1048575 1048576 1048577 3670016)
for i in $(seq 0 $((FILES - 1))); do
	d=$S/d$((i % 7))/e$((i % 3))
	[ $((i % 5)) = 0 ] && d=$S
	mkdir -p "$d"
	case $((i % 10)) in
	0) n=0 ;;
	1) n=$((RANDOM % 16)) ;;
	2) n=$((RANDOM * 6 + RANDOM % 7)) ;; # up to ~200 KiB
	*) n=$((RANDOM % 8192 + 1)) ;;
	esac
	[ $i -lt ${#big[@]} ] && n=${big[$i]}
	head -c "$n" /dev/urandom >"$d/f$i.bin"
done
[ "$(find "$S" -type f | wc -l)" = "$FILES" ] || fail "dataset: $(find "$S" -type f | wc -l) files"
X=$T/extra
mkdir -p "$X"
echo hello >"$X/real"
ln -s real "$X/link"
mkfifo "$X/fifo"

# ---- put -r, and its rerun ----
t1=$(now)
x shelf put -r "$S" ds/ --json --timeout 30000 >"$T/put.json" 2>"$T/put.err" ||
	fail "put -r: exit $?: $(tail -n 5 "$T/put.err")"
[ "$(jget stored "$T/put.json")" = "$FILES" ] && [ "$(jget failed "$T/put.json")" = 0 ] ||
	fail "put -r: $(cat "$T/put.json") $(tail -n 5 "$T/put.err")"
echo "ok: put -r of $FILES files ($(du -sh "$S" | cut -f1)) in $(($(now) - t1)) s"
x shelf stat ds/f0.bin | grep -q "1048575" || fail "stat of a large object: $(x shelf stat ds/f0.bin 2>&1)"
x shelf put -r "$S" ds/ --json >"$T/put2.json" 2>"$T/put2.err" || fail "put -r rerun: exit $?"
[ "$(jget stored "$T/put2.json")" = 0 ] && [ "$(jget skipped "$T/put2.json")" = "$FILES" ] ||
	fail "put -r rerun: $(cat "$T/put2.json")"
x shelf put -r "$X" extra/ --json >"$T/px.json" 2>"$T/px.err" || fail "put -r extra: exit $?"
grep -q "skipping '$X/link': a symbolic link" "$T/px.err" &&
	grep -q "skipping '$X/fifo': not a regular file" "$T/px.err" &&
	[ "$(jget not_regular "$T/px.json")" = 2 ] && [ "$(jget stored "$T/px.json")" = 1 ] ||
	fail "put -r of a link and a fifo: $(cat "$T/px.err" "$T/px.json")"
x shelf put -r "$T/nope" extra/ 2>"$T/err"
[ $? = 2 ] && grep -q "not a directory" "$T/err" || fail "put -r of no directory: $(cat "$T/err")"
echo "ok: put -r rerun skips all $FILES; a link and a fifo are skipped with a note"

# ---- stage ----
t1=$(now)
x shelf stage ds/ "$T/dst" --json >"$T/st.json" 2>"$T/st.err" ||
	fail "stage: exit $?: $(tail -n 5 "$T/st.err")"
diff -r "$S" "$T/dst" >/dev/null || fail "staged copy differs: $(diff -rq "$S" "$T/dst" | head -n 5)"
[ "$(jget fetched "$T/st.json")" = "$FILES" ] || fail "stage: $(cat "$T/st.json")"
[ -z "$(find "$T/dst" -name '*.shelf-part')" ] || fail "temporary files left"
grep -q '"gets": [0-9]' "$T/st.json" || fail "no per-node figures: $(cat "$T/st.json")"
# bytes per node: every staged byte came from some node (their sum is at
# least the bytes staged), and from many nodes at once
per=$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
b = [n["bytes"] for n in d["nodes"] if n["bytes"] is not None]
print(sum(b), sum(1 for v in b if v > 0), d["bytes"], d["node_bytes_total"])' "$T/st.json")
read -r bsum nserv bstaged btotal <<<"$per"
[ "$bsum" = "$btotal" ] && [ "$bsum" -ge "$bstaged" ] && [ "$nserv" -ge 4 ] ||
	fail "bytes per node: sum $bsum (total $btotal), $nserv nodes served, $bstaged staged: $(cat "$T/st.json")"
echo "ok: stage of $FILES objects, byte-identical, in $(($(now) - t1)) s ($(jget mib_per_s "$T/st.json") MiB/s); $nserv nodes served $bsum bytes for $bstaged staged"
x shelf stage ds/ "$T/dst" --json >"$T/st2.json" 2>/dev/null || fail "stage rerun: exit $?"
[ "$(jget fetched "$T/st2.json")" = 0 ] && [ "$(jget skipped "$T/st2.json")" = "$FILES" ] ||
	fail "stage rerun fetched: $(cat "$T/st2.json")"
echo "ok: a rerun of stage skips all $FILES"

# ---- SIGINT, and the rerun ----
# one object at a time, so that it is stopped midway
x shelf stage ds/ "$T/dint" --inflight 1 --workers 1 >/dev/null 2>"$T/int.err" &
pid=$!
t1=$(now)
while [ "$(find "$T/dint" -type f 2>/dev/null | wc -l)" -lt $((FILES / 4)) ]; do
	kill -0 $pid 2>/dev/null || break
	[ $(($(now) - t1)) -lt 60 ] || fail "stage --inflight 1 wrote nothing in 60 s"
	sleep 0.02
done
# the client, not the shelf-cluster wrapper: its descendant named shelf
desc() { local p; for p in $(pgrep -P "$1"); do echo "$p"; desc "$p"; done; }
for p in $(desc $pid); do
	[ "$(cat /proc/$p/comm 2>/dev/null)" = shelf ] && kill -INT "$p"
done
wait $pid
rc=$?
[ $rc = 130 ] || fail "stage after SIGINT: exit $rc (want 130): $(tail -n 3 "$T/int.err")"
grep -q "interrupted" "$T/int.err" || fail "no word of the interruption: $(cat "$T/int.err")"
[ -z "$(find "$T/dint" -name '*.shelf-part')" ] || fail "partial files left after SIGINT"
had=$(find "$T/dint" -type f | wc -l)
x shelf stage ds/ "$T/dint" --json >"$T/int2.json" 2>"$T/int2.err" ||
	fail "stage after SIGINT: exit $?: $(tail -n 3 "$T/int2.err")"
sk=$(jget skipped "$T/int2.json") fe=$(jget fetched "$T/int2.json")
[ "$sk" = "$had" ] && [ $((sk + fe)) = "$FILES" ] && [ "$fe" -lt "$FILES" ] ||
	fail "rerun after SIGINT: $had files were there, skipped $sk, fetched $fe"
diff -r "$S" "$T/dint" >/dev/null || fail "copy after SIGINT and rerun differs"
echo "ok: SIGINT after $had files: exit 130, no partial file; the rerun fetched only $fe"

# ---- a node killed: the replicas ----
"$C" kill 5 >/dev/null || fail "kill n05"
x shelf stage ds/ "$T/dkill" --json >"$T/k.json" 2>"$T/k.err" ||
	fail "stage with n05 killed: exit $?: $(tail -n 5 "$T/k.err")"
diff -r "$S" "$T/dkill" >/dev/null || fail "copy with a node killed differs"
"$C" start 5 >/dev/null || fail "start n05"
echo "ok: stage with a node SIGKILLed completes from the replicas"

# ---- destinations that cannot take it ----
mkdir -p "$T/ro"
x unshare -m bash -c "mount -t tmpfs -o ro tmpfs '$T/ro' && exec shelf stage ds/ '$T/ro/d'" \
	2>"$T/err"
rc=$?
[ $rc = 1 ] && grep -q "cannot create directory '$T/ro/d': Read-only file system" "$T/err" ||
	fail "read-only destination: exit $rc: $(cat "$T/err")"
mkdir -p "$T/full"
x unshare -m bash -c "
	mount -t tmpfs -o size=3m tmpfs '$T/full' || exit 9
	shelf stage ds/ '$T/full/d' 2>'$T/full.err'; echo \$? >'$T/full.rc'
	find '$T/full/d' -name '*.shelf-part' | wc -l >'$T/full.parts'
	find '$T/full/d' -type f | wc -l >'$T/full.had'
	mount -o remount,size=64m '$T/full' || exit 9
	shelf stage ds/ '$T/full/d' --json >'$T/full.json' 2>'$T/full2.err'; echo \$? >'$T/full2.rc'
	diff -r '$S' '$T/full/d' >/dev/null; echo \$? >'$T/full.diff'
"
[ "$(cat "$T/full.rc")" = 1 ] && grep -q "No space left on device" "$T/full.err" ||
	fail "full destination: exit $(cat "$T/full.rc"): $(cat "$T/full.err")"
[ "$(cat "$T/full.parts")" = 0 ] || fail "full destination: partial files left"
[ "$(cat "$T/full2.rc")" = 0 ] && [ "$(cat "$T/full.diff")" = 0 ] ||
	fail "after the destination grew: exit $(cat "$T/full2.rc"), diff $(cat "$T/full.diff"): $(tail -n 3 "$T/full2.err")"
[ "$(jget skipped "$T/full.json")" = "$(cat "$T/full.had")" ] ||
	fail "the rerun did not skip the $(cat "$T/full.had") files there: $(cat "$T/full.json")"
echo "ok: read-only and full destinations: clear errors, no partial files; the rerun resumes"
echo "all ok in $(($(now) - t0)) s"
