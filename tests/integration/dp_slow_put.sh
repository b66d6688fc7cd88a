#!/bin/bash
# Progress-based timeouts with shelf-node's defaults (progress_interval 10s,
# progress_bytes 16K) on a one-node cluster (tests/integration/py/dp_admit.py
# does the protocol work):
# - a PUT that stalls half-way gets status timeout within the progress
#   interval, then the close, and nothing is stored;
# - a 64 MiB PUT at a steady 200 KiB/s completes (about 5.5 minutes; the old
#   rule, a whole frame within 30 s of its first byte, cut it after 30 s).
set -u
. "$(dirname "$0")/cluster_lib.sh"
cluster_test slow shelf-slow
need_python_client
fail() { echo "FAIL: $*"; exit 1; }
PACED_BYTES=${PACED_BYTES:-$((64 << 20))}
PACED_RATE=$((200 << 10))
T="$SRC/tests/integration/py/dp_admit.py"

"$C" up --nodes 1 --drive-size 768M || fail "cluster up"
"$C" exec -- "$PY" "$T" stall || fail "stalled PUT"
"$C" exec -- "$PY" "$T" paced "$PACED_BYTES" "$PACED_RATE" || fail "paced PUT"
grep -q "AddressSanitizer" "$SHELF_CLUSTER_DIR/n01/log" && fail "node log: sanitizer report"
echo "all checks passed"
