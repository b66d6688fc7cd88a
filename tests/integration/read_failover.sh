#!/bin/bash
# Reads across replicas on a real 4-node sim cluster (tools/shelf-cluster), a
# slice with replicas 2, through the `shelf` CLI:
#  - a key whose first home is SIGKILLed is read from the second home, in
#    less than the connect timeout (a refused connection costs nothing);
#  - a first home whose link is cut costs one connect timeout, and the next
#    get (a new process) is fast: the client remembers the node;
#  - a first home that answers not-found is passed over for the second;
#  - put falls over to the next live member when the head is down;
#  - `shelf stat` lists each replica with its state, `shelf ls` each key
#    once.
# The nodes replicate writes; the test still makes k1's second copy the way
# a client sees a failing head: by putting it while its first home is down.
set -u
. "$(dirname "$0")/cluster_lib.sh"
cluster_test rf shelf-rf
B=${SHELF_BUILD:-$SRC/build}
[ -x "$B/shelf-broker" ] || { echo "skipped: shelf-broker not built"; exit 77; }
D=$SHELF_CLUSTER_DIR
T=$D/t
mkdir -p "$T"
fail() {
	echo "FAIL: $*"
	"$C" status
	for l in "$D"/n*/log; do echo "== $l"; tail -n 8 "$l"; done
	exit 1
}
now() { date +%s; }
ms_now() { echo $(($(date +%s%N) / 1000000)); }
CT=1000 # the connect timeout (the default)

"$C" up --nodes 4 --drive-size 600M >/dev/null || fail "up"
t0=$(now)
until [ "$(grep -l "slice 'default': address" "$D"/n*/log | wc -l)" = 4 ]; do
	[ $(($(now) - t0)) -lt 60 ] || fail "the nodes did not join the default slice in 60 s"
	sleep 0.2
done
"$C" exec -- shelf slice create r2 --replicas 2 --members all >/dev/null || fail "slice create r2"
"$B/shelf-broker" client --dir "$D/broker" --name r2c --slices r2 >/dev/null 2>&1 ||
	fail "cannot issue a client for r2"
t0=$(now)
until [ "$(grep -l "slice 'r2': address" "$D"/n*/log | wc -l)" = 4 ]; do
	[ $(($(now) - t0)) -lt 60 ] || fail "the nodes did not join slice r2 in 60 s"
	sleep 0.2
done
sh() { SHELF_CLIENT=$D/broker/clients/r2c "$C" exec -- shelf "$@" --slice r2; }
t0=$(now)
until sh put warm "$SRC/LICENSE" --timeout 10000 2>/dev/null; do
	[ $(($(now) - t0)) -lt 60 ] || fail "slice r2 takes no puts after 60 s"
	sleep 0.2
done

# node_at ADDR: the node number whose r2 address it is
node_at() {
	local f
	f=$(grep -lF "slice 'r2': address $1 on" "$D"/n*/log | head -1)
	[ -n "$f" ] || return 1
	basename "$(dirname "$f")" | sed 's/^n0*//'
}
# homes KEY: "ADDR1 ADDR2", the key's homes in placement order (stat lists them first)
homes() { sh stat "$1" --timeout 10000 2>/dev/null | awk '$1 == "replica" { print $2 }' | head -2 | tr '\n' ' '; }
# state KEY ADDR: that replica's state in `shelf stat`
state() { sh stat "$1" --timeout 10000 2>/dev/null | awk -v a="$2" '$1 == "replica" && $2 == a { print $9 }' | cut -d: -f1; }
# restart N: start node N and wait until it answers in r2 again
restart() {
	local t0; t0=$(now)
	"$C" start "$1" >/dev/null || fail "start n$1"
	until sh stat warm --timeout 5000 >"$T/warm" 2>/dev/null && ! grep -qE "unreachable|busy" "$T/warm"; do
		[ $(($(now) - t0)) -lt 90 ] || fail "n$1 does not answer 90 s after its start"
		sleep 0.3
	done
}
# two_copies KEY FILE: KEY on both of its homes (put; first home killed; put
# again, to the second; first home back)
two_copies() {
	local h n1
	sh put "$1" "$2" --timeout 10000 || fail "put $1"
	read -r -a h <<<"$(homes "$1")"
	[ ${#h[@]} = 2 ] || fail "$1 has not two homes: ${h[*]}"
	n1=$(node_at "${h[0]}") || fail "no node has address ${h[0]}"
	"$C" kill "$n1" >/dev/null || fail "kill n$n1"
	sh put "$1" "$2" --timeout 10000 2>"$T/put.err" ||
		fail "put $1 with its head n$n1 down did not fall over: $(cat "$T/put.err")"
	[ "$(state "$1" "${h[1]}")" = home ] || fail "$1 is not on its second home ${h[1]}"
	restart "$n1"
	[ "$(state "$1" "${h[0]}")" = home ] || fail "$1 is not on its first home ${h[0]} any more"
	H1=${h[0]} H2=${h[1]} N1=$n1
	N2=$(node_at "$H2")
}

head -c 1048576 /dev/urandom >"$T/1m"
two_copies k1 "$T/1m"
echo "k1 on both homes: n$N1 ($H1) and n$N2 ($H2); put fell over from the down head"
sh stat k1 >"$T/stat" || fail "stat k1"
[ "$(grep -c '^replica.* home$' "$T/stat")" = 2 ] || fail "stat k1 does not show two homes: $(cat "$T/stat")"
sh stat k1 --json | python3 -c 'import json, sys
d = json.load(sys.stdin)
r = d["replicas"]
assert d["size"] == 1048576, d
assert [x["state"] for x in r if x["home"]] == ["home", "home"], r
assert all(len(x["id"]) == 64 for x in r), r' || fail "stat --json: $(sh stat k1 --json)"

# ---- the first home SIGKILLed: read from the second, fast ----
"$C" kill "$N1" >/dev/null || fail "kill n$N1"
t0=$(ms_now)
sh get k1 "$T/k1.a" --timeout 10000 2>"$T/get.err" || fail "get k1 with n$N1 killed: $(cat "$T/get.err")"
ms=$(($(ms_now) - t0))
cmp -s "$T/1m" "$T/k1.a" || fail "k1 came back different from n$N2"
[ $ms -lt $((CT + 2000)) ] || fail "get k1 with its first home killed took $ms ms"
echo "first home SIGKILLed: k1 read from the second home in $ms ms (connection refused)"
[ "$(state k1 "$H1")" = unreachable ] || fail "stat does not show n$N1 unreachable"
restart "$N1"

# ---- the first home's link cut: one connect timeout, then remembered ----
rm -f "$D/broker/clients/r2c/cache/unreachable"
"$C" cut "$N1" >/dev/null || fail "cut n$N1"
t0=$(ms_now)
sh get k1 "$T/k1.b" --timeout 10000 2>"$T/get.err" || fail "get k1 with n$N1 cut: $(cat "$T/get.err")"
ms1=$(($(ms_now) - t0))
cmp -s "$T/1m" "$T/k1.b" || fail "k1 came back different with n$N1 cut"
[ $ms1 -ge $CT ] || fail "get k1 with the first home cut took only $ms1 ms: was n$N1 asked?"
[ $ms1 -lt $((CT + 2000)) ] || fail "get k1 with the first home cut took $ms1 ms (connect timeout $CT)"
grep -q "$H1" "$D/broker/clients/r2c/cache/unreachable" || fail "n$N1 is not remembered as unreachable"
t0=$(ms_now)
sh get k1 "$T/k1.c" --timeout 10000 2>"$T/get.err" || fail "second get k1 with n$N1 cut: $(cat "$T/get.err")"
ms2=$(($(ms_now) - t0))
cmp -s "$T/1m" "$T/k1.c" || fail "k1 came back different on the second get"
[ $ms2 -lt $((CT / 2 + 300)) ] || fail "the second get took $ms2 ms: the cut node was asked again"
# a shorter connect timeout bounds the first cost the same way
rm -f "$D/broker/clients/r2c/cache/unreachable"
t0=$(ms_now)
sh get k1 "$T/k1.d" --timeout 10000 --connect-timeout 300 2>/dev/null || fail "get k1 --connect-timeout 300"
ms3=$(($(ms_now) - t0))
[ $ms3 -ge 300 ] && [ $ms3 -lt 2000 ] || fail "get with --connect-timeout 300 took $ms3 ms"
echo "first home cut: $ms1 ms (connect timeout $CT ms), next get $ms2 ms (remembered); --connect-timeout 300: $ms3 ms"
echo "BENCH read_failover_cut_ms=$ms1 read_failover_remembered_ms=$ms2"
"$C" heal "$N1" >/dev/null || fail "heal n$N1"
rm -f "$D/broker/clients/r2c/cache/unreachable"

# ---- not-found on the first home: the second answers ----
head -c 4096 /dev/urandom >"$T/4k"
sh put k3 "$T/4k" --timeout 10000 || fail "put k3"
read -r -a h <<<"$(homes k3)"
n1=$(node_at "${h[0]}")
# k3 is deleted (a tombstone on both homes), then put again while its first
# home is down: the first home answers not-found (the tombstone, older than
# the new put), and the reader must go on and take the newer copy. The
# substitute that holds the new put's hint for the first home is killed
# before that home returns, so the hint is not handed over (it would make
# the first home hold the new put too).
sh rm k3 --timeout 10000 || fail "rm k3"
"$C" kill "$n1" >/dev/null || fail "kill n$n1"
sh put k3 "$T/4k" --timeout 10000 || fail "put k3 to the second home"
# (a node that found itself without a broker for a moment answers busy
# while it asks its peers for hints, for about a round: ask again)
for _ in 1 2 3 4 5 6 7 8 9 10; do
	sub=$(sh stat k3 --timeout 10000 2>/dev/null | awk '$1 == "replica" && $9 ~ /^hinted/ { print $2 }' | head -1)
	[ -n "$sub" ] && break
	sleep 0.3
done
ns=$(node_at "$sub") || fail "no substitute holds k3's hint: $(sh stat k3 --timeout 10000 2>&1)"
"$C" kill "$ns" >/dev/null || fail "kill the substitute n$ns"
"$C" start "$n1" >/dev/null || fail "start n$n1"
t0=$(now)
until st=$(state k3 "${h[0]}") && [ -n "$st" ] && [ "$st" != busy ] && [ "$st" != unreachable ]; do
	[ $(($(now) - t0)) -lt 90 ] || fail "n$n1 does not answer 90 s after its start ($st)"
	sleep 0.3
done
[ "$st" = missing ] || [ "$st" = deleted ] || fail "k3 is still on its first home ($st)"
sh get k3 "$T/k3" --timeout 10000 2>"$T/get.err" || fail "get k3 (not on its first home): $(cat "$T/get.err")"
cmp -s "$T/4k" "$T/k3" || fail "k3 came back different"
echo "not-found on the first home: read from the second"
sh get none --timeout 10000 >/dev/null 2>&1; [ $? = 3 ] || fail "a key on no replica: not exit 3"

# ---- ls: each key once ----
[ "$(sh ls k --timeout 10000 | tr '\n' ' ')" = "k1 k3 " ] || fail "ls k: $(sh ls k --timeout 10000 | tr '\n' ' ')"
echo "ls: each key once across replicas"
echo "reads across replicas: ok"
