#!/bin/bash
# Fleet update images as an operator makes them (issue 16): `shelf-broker
# init` and `release-key`, `shelf image build` of a small payload, and
# `shelf image show --verify` accepting it and refusing, with exit 1 and a
# message that says why, a copy with one flipped payload byte, one with a
# flipped metadata byte, one signed by a key another CA certified, a node's
# key used as a release key, another board, expired metadata (an explicit
# past date, and --expires 1s after 2 s), a lower version, and a truncated
# image. release-key refuses an existing name, a bad name and a missing
# ca.key. No daemons: the files only.
set -u
B=${SHELF_BUILD:-$(cd "$(dirname "$0")/../.." && pwd)/build}
[ -x "$B/shelf" ] && [ -x "$B/shelf-broker" ] || { echo "skipped: shelf and shelf-broker are not built in $B"; exit 77; }
T=$(mktemp -d /tmp/fleet_image.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
SEED=${SEED:-$RANDOM}
echo "SEED=$SEED"
RANDOM=$SEED

"$B/shelf-broker" init --dir "$T/site" --site s1 >/dev/null || fail "init"
"$B/shelf-broker" init --dir "$T/other" --site s2 >/dev/null || fail "init of another site"
out=$("$B/shelf-broker" release-key --dir "$T/site" --name dev) || fail "release-key: $out"
grep -q "release/dev.key" <<<"$out" || fail "release-key says where the key went: $out"
[ "$(stat -c %a "$T/site/release/dev.key")" = 600 ] || fail "the release key is not 0600"
[ -s "$T/site/release/dev.cert" ] || fail "no release certificate"
"$B/shelf-broker" release-key --dir "$T/other" --name dev >/dev/null || fail "release-key of the other site"

# release-key refusals
sum=$(sha256sum "$T/site/release/dev.key" "$T/site/release/dev.cert")
out=$("$B/shelf-broker" release-key --dir "$T/site" --name dev 2>&1); rc=$?
[ $rc = 1 ] && grep -q "already exists" <<<"$out" || fail "an existing name: exit $rc: $out"
[ "$(sha256sum "$T/site/release/dev.key" "$T/site/release/dev.cert")" = "$sum" ] || fail "an existing key was replaced"
out=$("$B/shelf-broker" release-key --dir "$T/site" --name 'no/slash' 2>&1); rc=$?
[ $rc = 1 ] && grep -q "invalid release key name" <<<"$out" || fail "a bad name: exit $rc: $out"
mkdir "$T/noca" && cp "$T/site/ca.pub" "$T/noca/"
out=$("$B/shelf-broker" release-key --dir "$T/noca" --name dev 2>&1); rc=$?
[ $rc = 1 ] && grep -q "ca.key' does not exist" <<<"$out" || fail "no ca.key: exit $rc: $out"
[ ! -e "$T/noca/release/dev.key" ] || fail "a key was written without a CA"
out=$("$B/shelf-broker" release-key --dir "$T/site" --name x --ttl 3q 2>&1); rc=$?
[ $rc = 2 ] || fail "a bad --ttl: exit $rc: $out"
echo "release-key: issued 0600 key and certificate; refuses an existing name, a bad name, no ca.key: ok"

# a payload of 2.5 MiB (3 blocks of 1 MiB, the last short), like the sim payload
mkdir -p "$T/p/bin" "$T/p/boards/sim"
echo 0.2.0 >"$T/p/VERSION"
head -c 2621440 /dev/urandom >"$T/p/bin/shelf-node"
echo "# board" >"$T/p/boards/sim/board.conf"
tar --format=ustar -cf "$T/payload.tar" -C "$T/p" VERSION bin boards || fail "tar"
K=(--key "$T/site/release/dev.key" --cert "$T/site/release/dev.cert")
build() { "$B/shelf" image build --board sim "$@" "$T/payload.tar"; }
show() { "$B/shelf" image show "$@"; }
out=$(build --version 0.2.0 "${K[@]}" --out "$T/good.img") || fail "build: $out"
grep -q "3 blocks of 1048576" <<<"$out" || fail "build summary: $out"
[ ! -e "$T/good.img.tmp.$$" ] && ! ls "$T"/good.img.tmp.* >/dev/null 2>&1 || fail "build left a temporary file"
size=$(stat -c %s "$T/payload.tar")
out=$(show "$T/good.img") || fail "show: $out"
for want in "version      0.2.0" "board        sim" "size         $size" "blocks       3" \
	"block size   1048576" "rollback     no" "min from     0.0.0" \
	"sha256       $(sha256sum "$T/payload.tar" | cut -d' ' -f1)"; do
	grep -qF "$want" <<<"$out" || fail "show lacks '$want': $out"
done
out=$(show "$T/good.img" --verify --ca "$T/site/ca.pub" --board sim --running 0.1.0) ||
	fail "a good image is refused: $out"
grep -q "verify       ok" <<<"$out" || fail "verify says ok: $out"
# the payload is the tar, byte for byte, at the end of the image
tail -c "$size" "$T/good.img" | cmp - "$T/payload.tar" || fail "the payload is not the tar"
echo "build and show --verify of a good image: ok"

# refuse: exit 1, and stderr says why
refuse() { # name expected-words show-args...
	local name=$1 want=$2 out rc; shift 2
	out=$(show "$@" 2>&1 >/dev/null); rc=$?
	[ $rc = 1 ] || fail "$name: exit $rc, expected 1: $out"
	grep -q "$want" <<<"$out" || fail "$name: the message does not say '$want': $out"
	echo "refused $name: $out"
}
V=(--verify --ca "$T/site/ca.pub")
head_len=$(( $(stat -c %s "$T/good.img") - size ))

cp "$T/good.img" "$T/flip.img"
at=$(( head_len + RANDOM * 32768 % size + RANDOM % 32768 )); at=$(( at < head_len + size ? at : head_len + size - 1 ))
b=$(od -An -tu1 -j "$at" -N1 "$T/flip.img" | tr -d ' ')
printf "$(printf '\\%03o' $(( b ^ 0x10 )))" | dd of="$T/flip.img" bs=1 seek="$at" conv=notrunc 2>/dev/null
cmp -s "$T/flip.img" "$T/good.img" && fail "the flip did not change the file"
refuse "one flipped payload byte (offset $at)" "does not verify" "$T/flip.img" "${V[@]}"

cp "$T/good.img" "$T/flipm.img"
printf 'Z' | dd of="$T/flipm.img" bs=1 seek=60 conv=notrunc 2>/dev/null
refuse "one flipped metadata byte" "signature does not verify\|release metadata" "$T/flipm.img" "${V[@]}"

build --version 0.2.0 --key "$T/other/release/dev.key" --cert "$T/other/release/dev.cert" \
	--out "$T/rogue.img" >/dev/null || fail "build with the other site's key"
refuse "a key the CA did not certify" "not certified by this site's CA" "$T/rogue.img" "${V[@]}"

# a node's key is not a release key: build refuses its certificate outright
"$B/shelf-broker" client --dir "$T/site" --name c1 --slices default >/dev/null || fail "client"
out=$(build --version 0.2.0 --key "$T/site/clients/c1/id.key" --cert "$T/site/clients/c1/client.cert" \
	--out "$T/client.img" 2>&1); rc=$?
[ $rc = 1 ] && grep -q "not a release key" <<<"$out" || fail "build with a client key: exit $rc: $out"
[ ! -e "$T/client.img" ] || fail "an image was written with a client key"

refuse "another board" "image for board 'sim', this is 'rpi4'" "$T/good.img" "${V[@]}" --board rpi4

build --version 0.2.0 "${K[@]}" --expires @1000000000 --out "$T/past.img" >/dev/null || fail "build expired"
refuse "expired metadata (a past date)" "expired at 2001-09-09" "$T/past.img" "${V[@]}"
build --version 0.2.0 "${K[@]}" --expires 1s --out "$T/short.img" >/dev/null || fail "build --expires 1s"
sleep 2.1
refuse "expired metadata (--expires 1s, 2 s later)" "expired at" "$T/short.img" "${V[@]}"

refuse "a lower version" "lower than the running 0.3.0" "$T/good.img" "${V[@]}" --running 0.3.0
build --version 0.2.0 "${K[@]}" --rollback --out "$T/rb.img" >/dev/null || fail "build --rollback"
show "$T/rb.img" "${V[@]}" --running 0.3.0 >/dev/null || fail "a signed rollback is refused"
build --version 0.3.0 "${K[@]}" --min-from 0.2.0 --out "$T/min.img" >/dev/null || fail "build --min-from"
refuse "below min_from" "upgrades only from 0.2.0" "$T/min.img" "${V[@]}" --running 0.1.0

head -c $(( head_len + size / 2 )) "$T/good.img" >"$T/short2.img"
refuse "a truncated image" "ends after" "$T/short2.img" "${V[@]}"
head -c 20 "$T/good.img" >"$T/head.img"
refuse "a truncated head" "truncated" "$T/head.img"
refuse "not an image" "not a shelf image" "$T/payload.tar"
cp "$T/good.img" "$T/long.img"; printf x >>"$T/long.img"
refuse "bytes after the payload" "follow the payload" "$T/long.img" "${V[@]}"

cp "$T/payload.tar" "$T/same.tar"
out=$(build --version 0.2.0 "${K[@]}" --out "$T/payload.tar" 2>&1); rc=$?
[ $rc = 1 ] && grep -q "is the payload itself" <<<"$out" || fail "--out the payload: exit $rc: $out"
cmp -s "$T/payload.tar" "$T/same.tar" || fail "the payload was overwritten"
out=$("$B/shelf" image build --board sim --version 0.2.0 "${K[@]}" --out "$T/e.img" /dev/null 2>&1); rc=$?
[ $rc = 1 ] && grep -q "not a regular file" <<<"$out" || fail "a device payload: exit $rc: $out"

# usage
show "$T/good.img" --verify >/dev/null 2>&1; [ $? = 2 ] || fail "--verify without --ca is not a usage error"
build --version 1.2 "${K[@]}" --out "$T/x.img" >/dev/null 2>&1; [ $? = 2 ] || fail "a bad --version is not a usage error"
[ ! -e "$T/x.img" ] || fail "an image was written for a bad version"
echo "fleet_image: ok"
