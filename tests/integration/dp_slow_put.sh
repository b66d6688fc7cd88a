#!/bin/bash
# Progress-based timeouts with shelf-node's defaults (progress_interval 10s,
# progress_bytes 16K) on a one-node cluster (tests/integration/py/dp_admit.py
# does the protocol work):
# - a PUT that stalls half-way gets status timeout within the progress
#   interval, then the close, and nothing is stored;
# - a 12 MiB PUT at a steady 200 KiB/s completes (about a minute; the old
#   rule, a whole frame within 30 s of its first byte, cut it after 30 s).
#   LONG=1: 64 MiB, the largest frame (about 5.5 minutes).
set -u
. "$(dirname "$0")/cluster_lib.sh"
cluster_test slow shelf-slow
need_python_client
fail() { echo "FAIL: $*"; exit 1; }
if [ "${LONG:-0}" = 1 ]; then PACED=$((64 << 20)); else PACED=$((12 << 20)); fi
PACED_BYTES=${PACED_BYTES:-$PACED}
PACED_RATE=$((200 << 10))
T="$SRC/tests/integration/py/dp_admit.py"

"$C" up --nodes 1 --drive-size 768M || fail "cluster up"
"$C" exec -- "$PY" "$T" stall || fail "stalled PUT"
"$C" exec -- "$PY" "$T" paced "$PACED_BYTES" "$PACED_RATE" || fail "paced PUT"
grep -q "AddressSanitizer" "$SHELF_CLUSTER_DIR/n01/log" && fail "node log: sanitizer report"
echo "all checks passed"
