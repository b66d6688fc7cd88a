#!/bin/bash
# An independent Python data-plane client (tests/integration/py/shelf_client.py,
# written from docs/PROTOCOL.md alone) against a 3-node cluster: put/get/stat/
# list/delete objects of 0 B, 1 B, 100 KiB and 3 MiB, exchange objects with the
# C CLI both ways, and check that a tampered MAC makes the node close.
set -u
[ "$(id -u)" = 0 ] || { echo "skipped: needs root for network namespaces"; exit 77; }
command -v ip >/dev/null || { echo "skipped: needs iproute2"; exit 77; }
PY=/usr/bin/python3
"$PY" -c 'import msgpack, nacl.bindings, zmq, sys; sys.exit(0 if zmq.has("curve") else 1)' 2>/dev/null ||
	{ echo "skipped: $PY needs python3-msgpack, python3-nacl and python3-zmq (with CURVE)"; exit 77; }

SRC=$(cd "${SHELF_SRC:-$(dirname "$0")/../..}" && pwd)
export SHELF_CLUSTER_NS="py$$" SHELF_CLUSTER_DIR=$(mktemp -d /tmp/shelf-dppy-XXXXXX)
C="$SRC/tools/shelf-cluster"
trap '"$C" down --wipe >/dev/null 2>&1; rm -rf "$SHELF_CLUSTER_DIR"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$C" up --nodes 3 || fail "cluster up"
w=$SHELF_CLUSTER_DIR/py
mkdir -p "$w"
T="$SRC/tests/integration/py/dp_test.py"

"$C" exec -- "$PY" "$T" "$w" main || fail "python client checks"

"$C" exec -- shelf get py/for-cli "$w/for-cli.got" || fail "C CLI: get py/for-cli"
cmp -s "$w/for-cli.expect" "$w/for-cli.got" || fail "C CLI read py/for-cli differently"
echo "C CLI get py/for-cli (written by Python): byte for byte: ok"

head -c 123457 /dev/urandom >"$w/from-cli"
"$C" exec -- shelf put cli/obj "$w/from-cli" || fail "C CLI: put cli/obj"
"$C" exec -- "$PY" "$T" "$w" cli || fail "python get of a CLI object"
echo "all checks passed"
