#!/bin/bash
# libshelf's asynchronous API and shelf_get_batch (issue 15) on a real
# 4-node sim cluster (tools/shelf-cluster), slice 'default' with R=2,
# through tests/prog/aio_check (which checks every byte):
#  - 10,000 objects put with shelf_put_async;
#  - get (whole, range), stat and delete asynchronously;
#  - get_batch of the 10,000 keys with 2,500 missing ones among them, in
#    the requested order and as they come: every present value right,
#    every missing key named with -ENOENT; --fail-missing stops at the first;
#  - a node SIGKILLed mid-batch: the batch completes from the replicas;
#  - `shelf get --batch`: LISTFILE with empty lines, duplicates, keys too
#    long and with the reserved prefix, --out DIR and --tar FILE, missing
#    keys named and exit 3, an unwritable --out directory.
set -u
. "$(dirname "$0")/cluster_lib.sh"
cluster_test ab shelf-aio
B=${SHELF_BUILD:-$SRC/build}
[ -x "$B/shelf-broker" ] || { echo "skipped: shelf-broker not built"; exit 77; }
P=$B/tests/prog/aio_check
[ -x "$P" ] || { echo "skipped: $P not built"; exit 77; }
D=$SHELF_CLUSTER_DIR
T=$D/t
mkdir -p "$T"
fail() {
	echo "FAIL: $*"
	"$C" status
	for l in "$D"/n*/log; do echo "== $l"; tail -n 5 "$l"; done
	exit 1
}
x() { "$C" exec -- "$@"; }
now() { date +%s; }

"$C" up --nodes 4 --drive-size 600M >"$D/up.log" 2>&1 || fail "up: $(tail -n 3 "$D/up.log")"
t0=$(now)
until x shelf put warm "$SRC/LICENSE" --timeout 10000 2>/dev/null; do
	[ $(($(now) - t0)) -lt 60 ] || fail "slice default takes no puts after 60 s"
	sleep 0.3
done

x "$P" fill default t 10000 || fail "fill"
x "$P" ops default t || fail "async ops"
x "$P" batch default t 10000 || fail "get_batch in order"
x "$P" batch default t 10000 --unordered || fail "get_batch unordered"
echo "ok: async put/get/stat/delete, get_batch of 12,500 keys (2,500 missing)"

# a node killed mid-batch (after 1,500 of 12,500 items, given as they come,
# so that most are asked after it): the rest from the replicas
x "$P" batch default t 10000 --unordered --kill-after 1500 "$C kill 2" ||
	fail "get_batch with a node killed"
"$C" start 2 >/dev/null || fail "start n2"
echo "ok: get_batch completes from the replicas with a node killed mid-batch"

# ---- shelf get --batch ----
head -c 5000 /dev/urandom >"$T/a"
head -c 0 /dev/urandom >"$T/empty"
head -c 70000 /dev/urandom >"$T/b"
long=cli/$(printf 'x%.0s' $(seq 150))
x shelf put cli/a "$T/a" >/dev/null || fail "put cli/a"
x shelf put cli/empty "$T/empty" >/dev/null || fail "put cli/empty"
x shelf put cli/sub/dir/b "$T/b" >/dev/null || fail "put cli/sub/dir/b"
x shelf put "$long" "$T/a" >/dev/null || fail "put the long key"
printf 'cli/a\n\ncli/sub/dir/b\ncli/a\r\n\ncli/empty\n%s\ncli/nope\n' "$long" >"$T/list"

# --out: every present object, byte for byte; the missing one named, exit 3
x shelf get --batch "$T/list" --out "$T/out" 2>"$T/err"
rc=$?
[ $rc = 3 ] || fail "get --batch --out: exit $rc (want 3): $(cat "$T/err")"
grep -q "'cli/nope': not found" "$T/err" || fail "missing key not named: $(cat "$T/err")"
grep -q "1 duplicate keys, each fetched once" "$T/err" || fail "duplicates not said: $(cat "$T/err")"
cmp "$T/a" "$T/out/cli/a" && cmp "$T/b" "$T/out/cli/sub/dir/b" && cmp "$T/empty" "$T/out/cli/empty" &&
	cmp "$T/a" "$T/out/$long" || fail "get --batch --out: wrong bytes"
[ -z "$(find "$T/out" -name '.*shelf-tmp*')" ] || fail "temporary files left in --out"
[ ! -e "$T/out/cli/nope" ] || fail "a file for the missing key"

# --tar: a pax archive in LISTFILE's order that tar unpacks to the same bytes
x shelf get --batch "$T/list" --tar "$T/x.tar" 2>"$T/err"
rc=$?
[ $rc = 3 ] || fail "get --batch --tar: exit $rc (want 3): $(cat "$T/err")"
[ "$(tar -tf "$T/x.tar" | tr '\n' ' ')" = "cli/a cli/sub/dir/b cli/empty $long " ] ||
	fail "tar members: $(tar -tf "$T/x.tar" | tr '\n' ' ')"
mkdir -p "$T/untar" && tar -xf "$T/x.tar" -C "$T/untar" || fail "tar -x"
cmp "$T/a" "$T/untar/cli/a" && cmp "$T/b" "$T/untar/cli/sub/dir/b" && cmp "$T/a" "$T/untar/$long" ||
	fail "get --batch --tar: wrong bytes"

# --fail-missing: stops at the missing key, exit 3, no archive
printf 'cli/nope\ncli/a\n' >"$T/list2"
x shelf get --batch "$T/list2" --tar "$T/y.tar" --fail-missing 2>"$T/err"
rc=$?
[ $rc = 3 ] && grep -q "cli/nope" "$T/err" || fail "--fail-missing: exit $rc: $(cat "$T/err")"
[ ! -e "$T/y.tar" ] && [ -z "$(ls "$T" | grep shelf-tmp)" ] || fail "--fail-missing left an archive"

# bad LISTFILEs: each bad line named, nothing fetched, exit 2
{
	echo cli/a
	head -c 1025 /dev/zero | tr '\0' k; echo
	printf '\xfe\xfe\xfe\xfe\xfe\xfe\xfe\xfeCabc\n'
	echo ../etc/passwd
	echo /abs
	echo 'a//b'
} >"$T/bad"
x shelf get --batch "$T/bad" --out "$T/out2" 2>"$T/err"
rc=$?
[ $rc = 2 ] || fail "bad LISTFILE: exit $rc (want 2): $(cat "$T/err")"
grep -q "bad:2: the key is 1025 bytes long, at most 1024" "$T/err" &&
	grep -q "bad:3: the key begins with the reserved prefix" "$T/err" &&
	grep -q "bad:4: the key has a '.' or '..' path component" "$T/err" &&
	grep -q "bad:5: the key is an absolute path" "$T/err" &&
	grep -q "bad:6: the key has an empty path component" "$T/err" ||
	fail "bad lines not named: $(cat "$T/err")"
[ ! -e "$T/out2/cli/a" ] || fail "a bad LISTFILE fetched something"
x shelf get --batch "$T/nolist" --out "$T/out2" 2>"$T/err"
[ $? = 1 ] && grep -q "cannot read LISTFILE" "$T/err" || fail "no LISTFILE: $(cat "$T/err")"
x shelf get --batch "$T/list" 2>"$T/err"
[ $? = 2 ] || fail "--batch without --out or --tar"

# an --out directory that cannot be written (a read-only mount): a clear
# error before anything is fetched
mkdir -p "$T/ro"
x unshare -m bash -c "mount -t tmpfs -o ro tmpfs '$T/ro' && exec shelf get --batch '$T/list' --out '$T/ro/d'" 2>"$T/err"
rc=$?
[ $rc = 1 ] && grep -q "cannot create directory '$T/ro/d': Read-only file system" "$T/err" ||
	fail "read-only --out: exit $rc: $(cat "$T/err")"
x unshare -m bash -c "mkdir -p '$T/ro2' && mount -t tmpfs tmpfs '$T/ro2' && mkdir '$T/ro2/d' && mount -o remount,ro '$T/ro2' && exec shelf get --batch '$T/list' --out '$T/ro2/d'" 2>"$T/err"
rc=$?
[ $rc = 1 ] && grep -q "cannot write to directory '$T/ro2/d': Read-only file system" "$T/err" ||
	fail "read-only --out dir: exit $rc: $(cat "$T/err")"
echo "ok: shelf get --batch (--out, --tar, --fail-missing, bad LISTFILEs, unwritable --out)"
