#!/bin/bash
# tools/examples/ml_staging.py as a test, on a 3-node cluster (R=2): tar
# shards generated, ingested with the Python client, every sample read
# through shelf.ShardDataset with the real torch.utils.data.DataLoader
# (num_workers=3) for 2 epochs (each sample once, byte for byte, another
# order in epoch 1), then staged into a directory and compared.
# Skips only when Debian's python3-torch is not importable.
set -u
. "$(dirname "$0")/cluster_lib.sh"
. "$(dirname "$0")/python_lib.sh"
cluster_test pyx shelf-pyx
need_shelf_py
fail() { echo "FAIL: $*"; exit 1; }
"$PY" -c 'import torch' 2>/dev/null ||
	{ echo "skipped: $PY cannot import torch (Debian's python3-torch; make deps installs it)"; exit 77; }
[ -f "$SHELF_LIB" ] || { echo "skipped: $SHELF_LIB is not built"; exit 77; }

"$C" up --nodes 3 --replicas 2 --drive-size 768M >/dev/null || fail "cluster up"
w=$SHELF_CLUSTER_DIR/ml
"$C" exec -- env "${PYENV[@]}" "$PY" "$SRC/tools/examples/ml_staging.py" \
	--workdir "$w/gen" --stage "$w/staged" --shards 12 --samples-per-shard 40 ||
	fail "ml_staging.py"
echo "all checks passed"
