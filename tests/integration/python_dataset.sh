#!/bin/bash
# ShardDataset of the Python package (tools/python/shelf) without a cluster
# (tests/integration/py/pkg_dataset_test.py): 2 ranks x 3 DataLoader workers
# read every shard exactly once per epoch, the same order for the same
# (seed, epoch) and another for another epoch, tar samples in WebDataset's
# layout, bad tars named. Once with torch made unimportable (workers
# simulated), once with the real torch.utils.data.DataLoader(num_workers=3)
# when Debian's python3-torch is installed.
set -u
. "$(dirname "$0")/python_lib.sh"
need_shelf_py # (the library is not loaded here: an in-memory client)
T="$(dirname "$0")/py/pkg_dataset_test.py"
env PYTHONPATH="$SHELF_PY" PYTHONDONTWRITEBYTECODE=1 "$PY" "$T" notorch || { echo "FAIL: without torch"; exit 1; }
if "$PY" -c 'import torch' 2>/dev/null; then
	env PYTHONPATH="$SHELF_PY" PYTHONDONTWRITEBYTECODE=1 "$PY" "$T" torch || { echo "FAIL: with torch"; exit 1; }
else
	echo "torch is not importable by $PY (Debian's python3-torch): the DataLoader half did not run"
fi
echo "all checks passed"
