#!/bin/bash
# The CLI on a real 3-node cluster: what it refuses (a directory as input,
# a --range outside its grammar), how it prints keys (ls quotes them as git
# quotes paths, --json gives key or key_hex), and how it behaves when the
# network does not: a cut link ends within --timeout, ls with a node
# unreachable lists the others and exits 5, and a stale cached map is
# replaced and the request retried without the user seeing stale-map, with
# the broker alive and with it dead.
set -u
. "$(dirname "$0")/cluster_lib.sh"
cluster_test ci shelf-cli
fail() { echo "FAIL: $*"; exit 1; }
[ -x "${SHELF_BUILD:-$SRC/build}/shelf-broker" ] || { echo "skipped: no shelf-broker built"; exit 77; }

"$C" up --nodes 3 --replicas 1 --drive-size 1G >/dev/null || fail "up"
t=$SHELF_CLUSTER_DIR/t
mkdir -p "$t"
sh() { "$C" exec -- shelf "$@"; }
for _ in $(seq 100); do
	[ "$(grep -l "slice 'default': address" "$SHELF_CLUSTER_DIR"/n*/log | wc -l)" = 3 ] &&
		sh put warm/0 "$SRC/LICENSE" --timeout 2000 2>/dev/null && break
	sleep 0.1
done
sh put warm/0 "$SRC/LICENSE" || fail "the cluster does not take puts"

# ---- input ----
printf 0123456789 >"$t/ten"
out=$(sh put dir/k "$t" 2>&1); rc=$?
[ $rc = 2 ] && grep -q "is a directory" <<<"$out" || fail "put of a directory: exit $rc: $out"
sh stat dir/k >/dev/null 2>&1; [ $? = 3 ] || fail "put of a directory stored something"
out=$(sh put dev/k /dev/zero 2>&1); rc=$?
[ $rc = 2 ] && grep -q "not a regular file or a pipe" <<<"$out" || fail "put of a device: exit $rc: $out"
sh put r/ten "$t/ten" || fail "put of a file"
"$C" exec -- bash -c 'printf abc | shelf put p/stdin -' || fail "put from a pipe on stdin"
"$C" exec -- bash -c 'shelf put p/fifo <(printf abcd)' || fail "put from a pipe given as a path"
[ "$(sh get p/fifo)" = abcd ] && [ "$(sh get p/stdin)" = abc ] || fail "piped objects read back wrong"
echo "input: a directory and a device refused (exit 2), files and pipes taken: ok"

# ---- --range ----
[ "$(sh get r/ten --range 2-5)" = 2345 ] || fail "--range 2-5"
[ "$(sh get r/ten --range 7-)" = 789 ] || fail "--range 7-"
for bad in 1-2-3 2-5xyz 5-2 -3 3 ' 1-2' +1-2 0x1-2 99999999999999999999-; do
	out=$(sh get r/ten --range "$bad" 2>&1); rc=$?
	[ $rc = 2 ] && grep -q -- "--range" <<<"$out" || fail "--range '$bad': exit $rc: $out"
done
# no 64 MiB limit since large objects: a range past the end is cut at it
[ "$(sh get r/ten --range 5-99999999)" = 56789 ] || fail "a range past the end"
out=$(sh get r/ten --range 0-9223372036854775808 2>&1); grep -q -- "--range.*at most" <<<"$out" ||
	fail "the offset beyond INT64_MAX error: $out"
echo "--range: START-END and START- only, everything else refused naming --range (exit 2): ok"

# ---- keys in ls and --json ----
sh put $'nl/a\nb' "$t/ten" && sh put $'nl/\xc3\xbf' "$t/ten" && sh put $'nl/\xff' "$t/ten" &&
	sh put 'nl/q"u' "$t/ten" || fail "put odd keys"
got=$(sh ls nl/) || fail "ls nl/"
want=$(printf '%s\n' '"nl/a\nb"' '"nl/q\"u"' $'nl/\xc3\xbf' '"nl/\377"')
[ "$got" = "$want" ] || fail "ls quoting: got [$got] want [$want]"
sh ls nl/ --json | python3 -c '
import json, sys
got = json.load(sys.stdin)
want = [{"key": "nl/a\nb"}, {"key": "nl/q\"u"}, {"key": "nl/\u00ff"}, {"key_hex": "6e6c2fff"}]
assert got == want, got' || fail "ls --json: $(sh ls nl/ --json)"
sh stat $'nl/\xff' --json | python3 -c '
import json, sys
assert json.load(sys.stdin)["key_hex"] == "6e6c2fff"' || fail "stat --json of a key that is not UTF-8"
echo "ls: keys with control bytes or invalid UTF-8 quoted, one line each; --json key or key_hex: ok"

# ---- error text ----
long=$(head -c 2000 /dev/zero | tr '\0' k)
out=$(sh put "$long" "$t/ten" 2>&1); rc=$?
[ $rc = 1 ] && grep -q "a key is 1 to 1024 bytes long, and this one is 2000 bytes$" <<<"$out" ||
	fail "the key-length error: exit $rc: $out"
node_of() { # key -> the number of the node holding it
	local a; a=$(sh stat "$1" | awk '/^node/{print $2}')
	grep -l "address $a" "$SHELF_CLUSTER_DIR"/n*/log | head -1 | sed 's|.*/n0*\([0-9]*\)/log|\1|'
}
# one byte of an object flipped on its node's drive: checksum-mismatch, by name
head -c 65536 /dev/urandom >"$t/rand"
sh put cs/obj "$t/rand" || fail "put cs/obj"
n=$(node_of cs/obj)
python3 - "$SHELF_CLUSTER_DIR/n0$n/drive.img" "$t/rand" <<'PY' || fail "cs/obj not found on its drive"
import mmap, sys
want = open(sys.argv[2], "rb").read()[:4096]
with open(sys.argv[1], "r+b") as f:
    m = mmap.mmap(f.fileno(), 0)
    at = m.find(want)
    if at < 0:
        sys.exit(1)
    m[at + 100] ^= 0xff
    m.flush()
PY
out=$(sh get cs/obj 2>&1 >/dev/null); rc=$?
[ $rc = 1 ] && grep -q "checksum-mismatch" <<<"$out" || fail "a damaged object: exit $rc: $out"
echo "errors: the key-length sentence whole, checksum-mismatch by its name: ok"

# ---- a stale cached map: retried transparently ----
# keep the client's map, make the epoch move on (a node killed turns down),
# put the old map back: the node answers stale-map, the client refetches
cache=$("$C" exec -- bash -c 'echo $SHELF_CLIENT')/cache/default.map
[ -f "$cache" ] || fail "no cached map at $cache"
cp "$cache" "$t/old.map"
epoch() { sh slice show default --admin "$SHELF_CLUSTER_DIR/broker" --json |
	python3 -c 'import json, sys; print(json.load(sys.stdin)["epoch"])'; }
e0=$(epoch) || fail "slice show"
nk=$(node_of r/ten)
victim=$(( nk % 3 + 1 ))
"$C" kill "$victim" >/dev/null
for _ in $(seq 100); do [ "$(epoch)" != "$e0" ] && break; sleep 0.1; done
[ "$(epoch)" != "$e0" ] || fail "the epoch did not move after a node was killed"
"$C" start "$victim" >/dev/null
for _ in $(seq 100); do [ "$(epoch)" != "$e0" ] && sh get r/ten >/dev/null 2>&1 && break; sleep 0.1; done
stale_get() { # what
	local what=$1 out rc
	cp "$t/old.map" "$cache"
	out=$(sh get r/ten --timeout 3000 2>&1 >"$t/got"); rc=$?
	[ $rc = 0 ] && [ "$(cat "$t/got")" = 0123456789 ] || fail "$what: get with a stale cached map: $rc $out"
	! grep -qi stale <<<"$out" || fail "$what: the user saw: $out"
	cmp -s "$t/old.map" "$cache" && fail "$what: the cached map was not replaced"
}
stale_get "broker alive"

# ---- a cut link: the whole operation within --timeout ----
"$C" cut "$nk" >/dev/null || fail "cut"
t0=$(date +%s%N)
out=$(sh get r/ten --timeout 1000 2>&1 >/dev/null); rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ $rc = 1 ] || fail "get from a cut node: exit $rc: $out"
[ $ms -lt 1500 ] || fail "get from a cut node took $ms ms with --timeout 1000: $out"
echo "cut link: get failed in $ms ms with --timeout 1000 ($out)"

# ---- ls with a node unreachable: partial, exit 5 ----
addr=$(grep -o "address [0-9a-f:]*" "$SHELF_CLUSTER_DIR/n0$nk/log" | head -1 | cut -d' ' -f2)
t0=$(date +%s%N)
sh ls --timeout 1500 >"$t/ls" 2>"$t/ls.err"; rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ $rc = 5 ] || fail "ls with a node cut: exit $rc: $(cat "$t/ls.err")"
grep -q "node $addr did not answer" "$t/ls.err" || fail "ls does not name $addr: $(cat "$t/ls.err")"
[ "$(grep -c "did not answer;" "$t/ls.err")" = 1 ] || fail "ls names more than the cut node: $(cat "$t/ls.err")"
n=$(wc -l <"$t/ls")
[ "$n" -ge 1 ] || fail "ls listed nothing of the nodes that answered"
[ $ms -lt 2500 ] || fail "ls took $ms ms with --timeout 1500"
grep -qx "r/ten" "$t/ls" && fail "ls listed r/ten, whose node is cut"
"$C" heal "$nk" >/dev/null
for _ in $(seq 100); do sh get r/ten --timeout 1000 >/dev/null 2>&1 && break; sleep 0.1; done
echo "ls with a node cut: $n keys of the others, the node named, exit 5 in $ms ms: ok"

kill -KILL "$(cat "$SHELF_CLUSTER_DIR/broker/pid")"
stale_get "broker dead"
echo "stale-map: the client fetched the new map and retried, broker alive and dead: ok"
