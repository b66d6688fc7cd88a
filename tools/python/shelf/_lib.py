"""Loading libshelf.so and binding its calls (ctypes, standard library only).

Where the library is looked for, first found wins:
  1. $SHELF_LIB: the path of libshelf.so, or a directory holding it;
  2. the build tree of the source tree this package sits in
     (tools/python/shelf -> ../../../build/libshelf.so);
  3. the dynamic loader's search path (an installed libshelf.so).

Calls that newer libshelf versions add are bound lazily (optional()), so an
older library still imports: only the call that needs them fails.
"""
import ctypes
import os
import threading

from . import _errors

_here = os.path.dirname(os.path.abspath(__file__))
SOURCE_BUILD_LIB = os.path.normpath(os.path.join(_here, "..", "..", "..", "build", "libshelf.so"))

ERR_BYTES = 1024  # SHELF_ERR_BYTES
UINT64_MAX = (1 << 64) - 1

c_char_pp = ctypes.POINTER(ctypes.c_char_p)


class Version(ctypes.Structure):
    _fields_ = [("hlc", ctypes.c_uint64), ("node", ctypes.c_uint64)]


class ObjStat(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint64), ("crc", ctypes.c_uint32),
                ("seq", ctypes.c_uint64), ("ver", Version)]


LIST_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


class BatchItem(ctypes.Structure):
    """struct shelf_batch_item: a key borrowed for the call."""
    _fields_ = [("key", ctypes.c_void_p), ("klen", ctypes.c_size_t)]


# shelf_batch_fn(arg, index, res, data, len, why): non-zero stops the batch
BATCH_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p)
BATCH_UNORDERED = 1     # SHELF_BATCH_UNORDERED
BATCH_FAIL_MISSING = 2  # SHELF_BATCH_FAIL_MISSING


def get_batch_fn():
    """shelf_get_batch, or None when the library predates it."""
    sz, vp, cp = ctypes.c_size_t, ctypes.c_void_p, ctypes.c_char_p
    return optional("shelf_get_batch", ctypes.c_int,
                    [vp, cp, ctypes.POINTER(BatchItem), sz, ctypes.c_uint, BATCH_CB, vp, cp, sz])


def get_fd_fn():
    """shelf_get_fd, or None when the library predates it."""
    sz, vp, cp, u64 = ctypes.c_size_t, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint64
    return optional("shelf_get_fd", ctypes.c_int,
                    [vp, cp, vp, sz, u64, u64, ctypes.c_int, ctypes.POINTER(u64), cp, sz])


def put_fd_fn():
    """shelf_put_fd, or None when the library predates it."""
    sz, vp, cp = ctypes.c_size_t, ctypes.c_void_p, ctypes.c_char_p
    return optional("shelf_put_fd", ctypes.c_int, [vp, cp, vp, sz, ctypes.c_int, cp, sz])

_lock = threading.Lock()
_lib = None
_path = None


def _candidates():
    env = os.environ.get("SHELF_LIB")
    if env:
        yield ("$SHELF_LIB", os.path.join(env, "libshelf.so") if os.path.isdir(env) else env)
        return  # an explicit choice is never replaced by another library
    yield ("the source tree's build", SOURCE_BUILD_LIB)
    yield ("the loader's path", "libshelf.so")


def _asan_hint(text):
    if "ASan runtime" in text or "__asan" in text:
        return ("; this libshelf.so is built with AddressSanitizer: run Python with "
                "LD_PRELOAD=$(gcc -print-file-name=libasan.so) and "
                "ASAN_OPTIONS=detect_leaks=0")
    return ""


def _bind(lib):
    sz, vp, cp, i = ctypes.c_size_t, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    u64 = ctypes.c_uint64
    sig = {
        "shelf_open": (i, [ctypes.POINTER(vp), cp, cp, cp, sz]),
        "shelf_close": (None, [ctypes.POINTER(vp)]),
        "shelf_add_node": (i, [vp, cp, cp, sz]),
        "shelf_set_timeout": (None, [vp, i]),
        "shelf_set_connect_timeout": (None, [vp, i]),
        "shelf_set_chassis": (i, [vp, cp, cp, sz]),
        "shelf_put": (i, [vp, cp, vp, sz, vp, sz, cp, sz]),
        "shelf_get": (i, [vp, cp, vp, sz, u64, u64, ctypes.POINTER(vp), ctypes.POINTER(sz),
                          ctypes.POINTER(u64), cp, sz]),
        "shelf_delete": (i, [vp, cp, vp, sz, cp, sz]),
        "shelf_stat": (i, [vp, cp, vp, sz, ctypes.POINTER(ObjStat), cp, sz]),
        "shelf_list": (i, [vp, cp, vp, sz, vp, sz, ctypes.c_uint, LIST_CB, vp, cp, sz]),
    }
    for name, (res, args) in sig.items():
        f = getattr(lib, name)  # these predate the package: missing means a broken library
        f.restype, f.argtypes = res, args
    # added with the package; an older library still works without them
    for name, (res, args) in {
        "shelf_crc32c": (ctypes.c_uint32, [ctypes.c_uint32, vp, sz]),
        "shelf_free": (None, [vp]),
    }.items():
        f = getattr(lib, name, None)
        if f is not None:
            f.restype, f.argtypes = res, args


def load():
    """The loaded library (loaded once). Raises LibraryNotFound."""
    global _lib, _path
    with _lock:
        if _lib is not None:
            return _lib
        tried = []
        for where, path in _candidates():
            if os.sep in path and not os.path.exists(path):
                tried.append("%s (%s): no such file" % (path, where))
                continue
            try:
                lib = ctypes.CDLL(path)
            except OSError as e:
                tried.append("%s (%s): %s%s" % (path, where, e, _asan_hint(str(e))))
                continue
            try:
                _bind(lib)
            except AttributeError as e:
                tried.append("%s (%s): not a usable libshelf: %s" % (path, where, e))
                continue
            _lib, _path = lib, path
            return lib
        raise _errors.LibraryNotFound(
            "libshelf.so not found or not loadable (build it with `make`, or set SHELF_LIB "
            "to its path); tried: " + "; ".join(tried))


def path():
    """The path the library was loaded from (None before load())."""
    return _path


def optional(name, restype, argtypes):
    """A call of a newer libshelf, or None when the loaded library lacks it."""
    f = getattr(load(), name, None)
    if f is not None:
        f.restype, f.argtypes = restype, argtypes
    return f


# The C library's free(), for buffers libshelf malloc'd, when the library
# predates shelf_free: the process's own free (the same allocator).
_libc_free = None


def free(ptr):
    global _libc_free
    lib = load()
    f = getattr(lib, "shelf_free", None)
    if f is None:
        if _libc_free is None:
            _libc_free = ctypes.CDLL(None).free
            _libc_free.restype, _libc_free.argtypes = None, [ctypes.c_void_p]
        f = _libc_free
    f(ptr)


# CRC-32C: libshelf's (hardware) when it has shelf_crc32c, else a table here.
_crc_table = None


def _crc32c_py(crc, data):
    global _crc_table
    if _crc_table is None:
        t = []
        for n in range(256):
            c = n
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            t.append(c)
        _crc_table = t
    t = _crc_table
    c = crc ^ 0xFFFFFFFF
    for b in bytes(data):
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def crc32c(data, crc=0):
    """CRC-32C of a bytes-like object, continuing from crc (0 to start)."""
    f = getattr(load(), "shelf_crc32c", None)
    if f is None:
        return _crc32c_py(crc, data)
    mv = memoryview(data).cast("B")
    if mv.readonly:
        # bytes: pass the object itself (no copy); other read-only buffers are copied
        buf = data if isinstance(data, bytes) else mv.tobytes()
        return f(crc, ctypes.c_char_p(buf), len(buf))
    n = mv.nbytes
    if n == 0:
        return f(crc, None, 0)
    return f(crc, ctypes.addressof(ctypes.c_char.from_buffer(mv)), n)


# glibc's mallopt() parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MALLOC_MMAP_THRESHOLD_BYTES = (64 << 20) + (1 << 20)  # every GET's buffer comes from the heap
MALLOC_TRIM_THRESHOLD_BYTES = 256 << 20  # free heap kept for the next buffers
_tuned_pid = None


def tune_malloc(mmap_threshold=MALLOC_MMAP_THRESHOLD_BYTES, trim_threshold=MALLOC_TRIM_THRESHOLD_BYTES):
    """Makes glibc serve buffers up to mmap_threshold from its heap and keep
    up to trim_threshold bytes of it free, process-wide, instead of mapping
    each large buffer afresh (page faults on every byte: reading 32 MiB
    objects went from about 75 to 47 ms each). Once per process; False when
    the C library has no mallopt() (not glibc) or refused."""
    global _tuned_pid
    if _tuned_pid == os.getpid():
        return True
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.restype, mallopt.argtypes = ctypes.c_int, [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1 and \
        mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1
    if ok:
        _tuned_pid = os.getpid()
    return ok
