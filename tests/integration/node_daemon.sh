#!/bin/bash
# shelf-node as a user runs it: first start on the sim board creates and
# formats its drive and identity; SIGTERM shuts it down cleanly; a restart
# keeps both; bad configuration is refused with the key named.
set -u
B=${SHELF_BUILD:-build}
N="$B/shelf-node"
dir=$(mktemp -d /tmp/shelf-node-XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; cat "$dir/log" 2>/dev/null; exit 1; }

start() {
	"$N" --board sim --state-dir "$dir/state" >"$dir/log" 2>&1 &
	pid=$!
	for _ in $(seq 50); do
		grep -q "ready:" "$dir/log" && return 0
		kill -0 "$pid" 2>/dev/null || fail "shelf-node exited during start-up"
		sleep 0.1
	done
	fail "shelf-node did not become ready in 5 s"
}
stop() {
	kill -TERM "$pid"
	wait "$pid"
	rc=$?
	pid=
	[ $rc -eq 0 ] || fail "exit status $rc after SIGTERM"
	grep -q "store closed cleanly" "$dir/log" || fail "no clean shutdown"
}

start
grep -q "created and formatted" "$dir/log" || fail "first start did not format the sim drive"
grep -q "identity .*, created" "$dir/log" || fail "first start did not create an identity"
[ "$(stat -c %a "$dir/state/id.key")" = 600 ] || fail "identity file is not mode 0600"
id1=$(grep -o "identity [0-9a-f]*" "$dir/log")
stop

start
grep -q "created" "$dir/log" && fail "restart re-created the drive or identity"
[ "$(grep -o "identity [0-9a-f]*" "$dir/log")" = "$id1" ] || fail "identity changed across restart"
stop
echo "start, stop, restart: ok"

# bad input: each refused with exit 2 and the key or board named
out=$("$N" --board sim --state-dir "$dir/state" --set bogus=1 2>&1); rc=$?
[ $rc -eq 2 ] && grep -q "unknown config key 'bogus'" <<<"$out" || fail "unknown key: $rc $out"
out=$("$N" --board sim --state-dir "$dir/state" --set data_port=70000 2>&1); rc=$?
[ $rc -eq 2 ] && grep -q "'data_port'" <<<"$out" || fail "bad value: $rc $out"
out=$("$N" --board nosuch --state-dir "$dir/state" 2>&1); rc=$?
[ $rc -eq 2 ] && grep -q "board 'nosuch' not found" <<<"$out" || fail "bad board: $rc $out"
out=$("$N" --state-dir "$dir/state" 2>&1); rc=$?
[ $rc -eq 2 ] && grep -q "board is required" <<<"$out" || fail "no board: $rc $out"
printf 'log_level = loud\n' >"$dir/bad.conf"
out=$("$N" --board sim --state-dir "$dir/state" --config "$dir/bad.conf" 2>&1); rc=$?
[ $rc -eq 2 ] && grep -q "log_level" <<<"$out" || fail "bad log level: $rc $out"
# a drive that holds something else is refused, not formatted
mkdir -p "$dir/other"
head -c 1M /dev/urandom >"$dir/other/drive.img"
truncate -s 2G "$dir/other/drive.img"
out=$("$N" --board sim --state-dir "$dir/other" --check 2>&1); rc=$?
[ $rc -eq 3 ] && grep -q "not a shelf store" <<<"$out" || fail "foreign drive: $rc $out"
echo "bad configuration and a foreign drive refused: ok"

# the data-plane limits: in --help with their defaults, and refused when
# they contradict each other (at the boundary: equal to max_conns is refused,
# one below is taken by --check)
help=$("$N" --help 2>&1)
for k in max_conns max_unauth_conns max_unauth_per_addr max_conns_per_key max_inflight \
	put_budget handshake_timeout idle_timeout progress_interval progress_bytes; do
	grep -q "^  $k " <<<"$help" || fail "--help does not list '$k'"
done
out=$("$N" --board sim --state-dir "$dir/state" --set max_conns=100 --set max_unauth_conns=100 --check 2>&1); rc=$?
[ $rc -eq 2 ] && grep -q "'max_unauth_conns'.*below" <<<"$out" || fail "max_unauth_conns = max_conns: $rc $out"
"$N" --board sim --state-dir "$dir/state" --set max_conns=100 --set max_unauth_conns=99 \
	--set max_unauth_per_addr=99 --check >/dev/null 2>&1 || fail "max_unauth_conns one below max_conns refused"
out=$("$N" --board sim --state-dir "$dir/state" --set max_unauth_per_addr=400 --check 2>&1); rc=$?
[ $rc -eq 2 ] && grep -q "'max_unauth_per_addr'" <<<"$out" || fail "max_unauth_per_addr > max_unauth_conns: $rc $out"
out=$("$N" --board sim --state-dir "$dir/state" --set progress_bytes=0 --check 2>&1); rc=$?
[ $rc -eq 2 ] && grep -q "'progress_bytes'" <<<"$out" || fail "progress_bytes=0: $rc $out"
echo "data-plane limits: listed in --help, contradictions refused by key: ok"
