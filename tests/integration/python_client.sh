#!/bin/bash
# The Python package's Client (tools/python/shelf, ctypes over libshelf.so)
# against a 3-node cluster (tests/integration/py/pkg_client_test.py):
# put/get/get_range/stat of 0 B .. 5 MiB, errors (NotFound naming the key,
# bad keys), list past a page of 1000 and a non-UTF-8 key, delete, open()
# with random seeks and tarfile, get_batch with missing keys, stage (byte
# for byte, a rerun fetches nothing, damaged and missing files fetched
# again, unsafe keys refused), a stage SIGKILLed halfway and resumed, a
# read-only directory (EROFS) and a directory that runs out of space
# (ENOSPC: partial file removed, the next run resumes). SEED=n replays.
set -u
. "$(dirname "$0")/cluster_lib.sh"
. "$(dirname "$0")/python_lib.sh"
cluster_test pyc shelf-pyc
need_shelf_py
fail() { echo "FAIL: $*"; exit 1; }
B=${SHELF_BUILD:-$SRC/build}
[ -f "$SHELF_LIB" ] || { echo "skipped: $SHELF_LIB is not built"; exit 77; }
export SEED=${SEED:-$RANDOM}
echo "SEED=$SEED"

"$C" up --nodes 3 --replicas 1 --drive-size 768M >/dev/null || fail "cluster up"
w=$SHELF_CLUSTER_DIR/py
mkdir -p "$w"
T="$SRC/tests/integration/py/pkg_client_test.py"
py() { "$C" exec -- env "${PYENV[@]}" SEED="$SEED" "$PY" "$T" "$@"; }

py main "$w" || fail "client checks"

# a stage killed after 9 objects resumes without fetching them again
rm -rf "$w/dst"
py stage-kill "$w" 9
rc=$?
[ $rc = 137 ] || fail "stage-kill: exit $rc, not 137 (SIGKILL)"
py stage-resume "$w" 9 || fail "resume"

# a read-only directory; then one that runs out of space, and the next run
# once there is room (a mount namespace of its own: tmpfs, read-only bind)
mkdir -p "$w/ro" "$w/small"
"$C" exec -- unshare -m sh -c '
	mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" || { echo "no read-only bind mount"; exit 2; }
	shift; exec "$@"' sh "$w/ro" env "${PYENV[@]}" "$PY" "$T" readonly "$w/ro" || fail "read-only"
"$C" exec -- unshare -m sh -c '
	d=$1; shift
	mount -t tmpfs -o size=1m tmpfs "$d" || { echo "no tmpfs"; exit 2; }
	"$@" nospace "$d" || exit 1
	mount -o remount,size=16m "$d" && "$@" nospace-resume "$d"' sh "$w/small" \
	env "${PYENV[@]}" SEED="$SEED" "$PY" "$T" || fail "no space"
echo "all checks passed"
