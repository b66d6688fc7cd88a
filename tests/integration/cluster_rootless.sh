#!/bin/bash
# tools/shelf-cluster run by an ordinary user (here nobody, through setpriv):
# the cluster lives in a user namespace of its own, held open by a holder
# process. Up, put and get, SIGKILL and restart a node, down keeps the data,
# up again reads it back, down --wipe leaves no process, no namespace and no
# directory behind, and nothing of it is visible in the host's namespaces.
set -u
[ "$(id -u)" = 0 ] || { echo "needs root to become another user (setpriv)"; exit 77; }
command -v setpriv >/dev/null && command -v unshare >/dev/null && command -v nsenter >/dev/null ||
	{ echo "needs setpriv, unshare and nsenter (util-linux)"; exit 77; }
U=(setpriv --reuid=65534 --regid=65534 --clear-groups)
"${U[@]}" unshare --user --map-root-user true 2>/dev/null ||
	{ echo "unprivileged user namespaces are disabled here"; exit 77; }
B=$(readlink -f "${SHELF_BUILD:-build}")
"${U[@]}" test -x "$B/shelf-node" || { echo "nobody cannot run $B/shelf-node"; exit 77; }
[ -x "$B/shelf-broker" ] || { echo "shelf-broker is not built"; exit 77; }

home=$(mktemp -d /tmp/shelf-rootless-XXXXXX)
chown 65534:65534 "$home"
D=$home/1u
C=$(readlink -f "${SHELF_SRC:-.}/tools/shelf-cluster")
# a namespace prefix of its own: other tests (and other users) create and
# remove namespaces on this host meanwhile, so only ours are looked for
NS=rl$$
sc() { "${U[@]}" env HOME="$home" SHELF_BUILD="$B" SHELF_CLUSTER_NS="$NS" "$C" "$@"; }
host_ns() { ip netns list | grep "^$NS-"; }
cleanup() {
	sc down --dir "$D" --wipe >/dev/null 2>&1
	[ -f "$D/userns.pid" ] && kill -KILL "$(cat "$D/userns.pid")" 2>/dev/null
	pkill -KILL -u 65534 -f "$B/shelf-" 2>/dev/null
	rm -rf "$home"
}
trap cleanup EXIT
holder_alive() { local s; s=$(awk '{print $3}' "/proc/$holder/stat" 2>/dev/null); [ -n "$s" ] && [ "$s" != Z ]; }
fail() { echo "FAIL: $*"; sc status --dir "$D"; tail -n 5 "$D"/n01/log "$D"/broker/log 2>/dev/null; exit 1; }

[ -z "$(host_ns)" ] || { echo "namespaces $NS-* exist already"; exit 1; }
sc up --nodes 3 --dir "$D" || fail "up as nobody"
[ "$(stat -c %u "$D/n01/drive" 2>/dev/null || stat -c %u "$D/n01")" = 65534 ] || fail "files not owned by the user"
[ "$(sc status --dir "$D" | grep -c '^n[0-9].* running$')" = 3 ] || fail "not 3 nodes running"
sc status --dir "$D" | grep -q " $NS-n01 " || fail "the cluster's namespaces are not named $NS-*"
[ -z "$(host_ns)" ] || fail "the cluster's namespaces leaked into the host"
holder=$(cat "$D/userns.pid")
[ "$(readlink /proc/$holder/ns/net)" != "$(readlink /proc/self/ns/net)" ] || fail "holder not in its own netns"
[ "$(awk '/^Uid:/ {print $2}' /proc/$holder/status)" = 65534 ] || fail "holder is not the user"
for p in $(cat "$D"/n0*/pid "$D/broker/pid"); do
	[ "$(awk '/^Uid:/ {print $2}' /proc/$p/status)" = 65534 ] || fail "process $p is not the user's"
done

head -c 100000 /dev/urandom >"$home/obj"
chmod 644 "$home/obj"
sc exec --dir "$D" -- shelf put rl/obj "$home/obj" || fail "put"
sc exec --dir "$D" -- shelf get rl/obj - >"$home/back" || fail "get"
cmp -s "$home/obj" "$home/back" || fail "object read back differs"
echo "nobody: 3 nodes up in a user namespace, put and get byte for byte"

sc kill --dir "$D" 1 >/dev/null || fail "kill"
sc start --dir "$D" 1 >/dev/null || fail "start"
for _ in $(seq 100); do
	tac "$D/n01/log" | sed '/^--- /q' | grep -q "ready:" && break
	sleep 0.1
done
tac "$D/n01/log" | sed '/^--- /q' | grep -q "ready:" || fail "n01 not ready after restart"

sc down --dir "$D" >/dev/null || fail "down"
holder_alive && fail "holder still alive after down"
[ -d "$D/n01" ] || fail "down removed the data"
sc up --nodes 3 --dir "$D" >/dev/null || fail "second up"
ok=0
for _ in $(seq 50); do
	sc exec --dir "$D" -- shelf get rl/obj - >"$home/back2" 2>/dev/null && ok=1 && break
	sleep 0.2
done
[ $ok = 1 ] && cmp -s "$home/obj" "$home/back2" || fail "object lost across down and up"
echo "nobody: the object survived down and up"

holder=$(cat "$D/userns.pid")
sc down --dir "$D" --wipe >/dev/null || fail "down --wipe"
[ -e "$D" ] && fail "down --wipe left $D"
holder_alive && fail "holder alive after down --wipe"
pgrep -u 65534 -f "$B/shelf-" >/dev/null && fail "processes left after down --wipe"
[ -z "$(host_ns)" ] || fail "namespaces left in the host"
echo "nobody: down --wipe left nothing behind"
