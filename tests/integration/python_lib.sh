# Helpers for the tests of the Python package tools/python/shelf (sourced,
# not run: not executable).

# need_shelf_py: PY=/usr/bin/python3 (skip without it), SHELF_PY (the
# package's directory, for PYTHONPATH), SHELF_LIB (the libshelf.so of
# SHELF_BUILD); when that library is built with AddressSanitizer (make
# test's build/san), Python must load libasan first: PYENV holds the
# environment to run Python with (env "${PYENV[@]}" "$PY" ...).
need_shelf_py() {
	PY=/usr/bin/python3
	[ -x "$PY" ] || { echo "skipped: $PY (Debian's python3) is not installed"; exit 77; }
	local src
	src=$(cd "${SHELF_SRC:-$(dirname "$0")/../..}" && pwd)
	export SHELF_PY="$src/tools/python"
	export SHELF_LIB="${SHELF_BUILD:-$src/build}/libshelf.so"
	PYENV=(PYTHONPATH="$SHELF_PY" SHELF_LIB="$SHELF_LIB" PYTHONDONTWRITEBYTECODE=1)
	[ -f "$SHELF_LIB" ] || return 0 # the package's own error says so
	if readelf -d "$SHELF_LIB" 2>/dev/null | grep -q 'NEEDED.*libasan'; then
		local asan
		asan=$(${CC:-cc} -print-file-name=libasan.so)
		[ -f "$asan" ] || { echo "skipped: $SHELF_LIB needs libasan, and $asan is not there"; exit 77; }
		# Python's own allocations are not ours to check for leaks
		PYENV+=(LD_PRELOAD="$asan" ASAN_OPTIONS="detect_leaks=0:abort_on_error=1")
	fi
}
