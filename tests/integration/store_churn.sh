#!/bin/bash
# Space under overwrite churn, on a real shelf-node (a one-node sim cluster:
# 2 GiB drive, 128 MiB segments):
#  - four writers overwrite four keys with 8 MiB objects for 20 s (60 s with
#    LONG=1): no put fails, `shelf status` says ok, every key reads back as
#    its last acknowledged version;
#  - the live set then grows until the first no-space, which comes only near
#    the usable capacity (capacity less the compaction reserve); `shelf
#    status` shows nearly-full before it and full exactly while puts are
#    refused;
#  - deleting 71 objects gives their space back within seconds: at least 60
#    new 8 MiB objects fit again.
set -u
. "$(dirname "$0")/cluster_lib.sh"
cluster_test c shelf-churn
# the drive lives in memory when it can (2 GiB, written through)
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
	rmdir "$SHELF_CLUSTER_DIR"
	SHELF_CLUSTER_DIR=$(mktemp -d /dev/shm/shelf-churn-XXXXXX)
	export SHELF_CLUSTER_DIR
fi
[ -x "${SHELF_BUILD:-build}/shelf-broker" ] || { echo "skipped: shelf-broker not built"; exit 77; }
fail() { echo "FAIL: $*"; tail -n 20 "$SHELF_CLUSTER_DIR"/n01/log; exit 1; }
SECS=20
[ "${LONG:-0}" = 1 ] && SECS=60
t=$SHELF_CLUSTER_DIR/t
mkdir -p "$t"
: >"$t/empty" # put takes a regular file or a pipe, not a device

"$C" up --nodes 1 >/dev/null || fail "up"
for _ in $(seq 100); do
	"$C" exec -- shelf put probe "$t/empty" 2>/dev/null && break
	sleep 0.2
done
"$C" exec -- shelf put probe "$t/empty" || fail "the node does not take puts"

# the node's health and space counters, from `shelf status --json`
health() {
	"$C" exec -- shelf status --json 2>/dev/null |
		python3 -c 'import json, sys
def walk(x):
    if isinstance(x, dict):
        if "health" in x and "counters" in x:
            c = x["counters"]
            print(x["health"], c.get("live_bytes", 0), c.get("usable_bytes", 0), c.get("capacity_bytes", 0))
            sys.exit(0)
        x = list(x.values())
    if isinstance(x, list):
        for y in x:
            walk(y)
walk(json.load(sys.stdin))
print("none 0 0 0")'
}
h=$(health)
[ "${h%% *}" = ok ] || fail "fresh node: status says '$h'"

# ---- four writers, four keys, 8 MiB objects ----
for i in 0 1 2 3; do
	head -c 8388608 /dev/urandom >"$t/v$i.0"
	head -c 8388608 /dev/urandom >"$t/v$i.1"
done
end=$(($(date +%s) + SECS))
writer() {
	local i=$1 n=0 f
	while [ "$(date +%s)" -lt "$end" ]; do
		f=$t/v$i.$((n % 2))
		if "$C" exec -- shelf put "churn/k$i" "$f" 2>"$t/err$i"; then
			echo "$f" >"$t/last$i"
		else
			echo "writer $i, put $n: $(cat "$t/err$i")" >>"$t/fails"
		fi
		n=$((n + 1))
	done
	echo "$n" >"$t/count$i"
}
for i in 0 1 2 3; do writer $i & done
wait
total=0
for i in 0 1 2 3; do total=$((total + $(cat "$t/count$i"))); done
[ -s "$t/fails" ] && fail "puts failed under churn: $(head -5 "$t/fails")"
echo "churn: $total puts of 8 MiB in ${SECS} s on a 2 GiB drive, none failed"
for i in 0 1 2 3; do
	"$C" exec -- shelf get "churn/k$i" "$t/back" || fail "get churn/k$i"
	cmp -s "$t/back" "$(cat "$t/last$i")" || fail "churn/k$i is not its last acknowledged version"
done
h=$(health)
[ "${h%% *}" = ok ] || fail "after churn: status says '$h'"
echo "churn: every key reads back as its last version; status ok"

# ---- grow until no-space ----
n=0 nearly=0 close=0
while :; do
	if ! "$C" exec -- shelf put "fill/$n" "$t/v0.0" 2>"$t/err"; then
		grep -q "no-space\|full" "$t/err" || fail "fill/$n: $(cat "$t/err")"
		break
	fi
	n=$((n + 1))
	# every 8th put, then every put once live passes 80% of usable: the
	# nearly-full window (90% of usable to the first no-space) can be
	# narrower than 8 objects
	if [ $((n % 8)) = 0 ] || [ $close = 1 ]; then
		read -r hs live usable _ <<<"$(health)"
		[ "$hs" = nearly-full ] && nearly=1
		[ $((live * 10)) -ge $((usable * 8)) ] && close=1
	fi
	[ $n -lt 400 ] || fail "400 objects of 8 MiB fit on a 2 GiB drive?"
done
read -r hs live usable cap <<<"$(health)"
echo "fill: first no-space after $n objects: $((live >> 20)) MiB live, usable $((usable >> 20)) MiB, capacity $((cap >> 20)) MiB"
[ "$hs" = full ] || fail "puts are refused but status says '$hs'"
[ $nearly = 1 ] || fail "status never said nearly-full on the way"
# 128 MiB segments hold 15 objects of 8 MiB: at least 80% of what they can
[ $((live * 100)) -ge $((usable * 15 / 16 * 80)) ] ||
	fail "no-space with only $((live >> 20)) MiB live of $((usable >> 20)) MiB usable"
"$C" exec -- shelf put fill/again "$t/v1.0" 2>/dev/null && fail "a put succeeded while status says full"
[ "$(health | cut -d' ' -f1)" = full ] || fail "status not full while puts are refused"

# ---- deletes give the space back within seconds ----
for k in $(seq 0 70); do
	"$C" exec -- shelf rm "fill/$k" || fail "rm fill/$k"
done
t0=$(date +%s%N)
"$C" exec -- shelf put refill/0 "$t/v1.0" --timeout 10000 || fail "no put fits after 71 deletes"
ms=$((($(date +%s%N) - t0) / 1000000))
[ $ms -lt 5000 ] || fail "the first put after the deletes took $ms ms"
h=$(health)
[ "${h%% *}" != full ] || fail "status still full after the deletes"
m=1
while [ $m -lt 71 ] && "$C" exec -- shelf put "refill/$m" "$t/v1.0" 2>/dev/null; do m=$((m + 1)); done
[ $m -ge 60 ] || fail "after deleting 71 objects of 8 MiB only $m fit again"
echo "deletes: the first put after deleting 71 objects took $ms ms; $m objects of 8 MiB fit again"
for i in 0 1 2 3; do
	"$C" exec -- shelf get "churn/k$i" "$t/back" && cmp -s "$t/back" "$(cat "$t/last$i")" ||
		fail "churn/k$i changed"
done
"$C" exec -- shelf get fill/$((n - 1)) "$t/back" && cmp -s "$t/back" "$t/v0.0" || fail "fill/$((n - 1)) lost"
echo "ok"
