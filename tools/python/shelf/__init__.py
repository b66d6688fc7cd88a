"""shelf: Python access to a shelf slice (ctypes over libshelf.so).

    import shelf
    c = shelf.Client("/path/to/client-dir", broker="tcp://[fd00::1]:7400")
    c.put("ds/a", b"bytes"); c.get("ds/a"); c.stat("ds/a").size
    for key in c.list("ds/"): ...
    with c.open("ds/shard-0000.tar") as f: f.seek(512); f.read(100)
    c.stage("ds/", "/dev/shm/ds")        # resumable, checksummed copy
    ds = shelf.ShardDataset(c, "ds/", shuffle_seed=1, epoch=0, samples=True)
    torch.utils.data.DataLoader(ds, num_workers=3)

Standard library only. libshelf.so is found through $SHELF_LIB, else the
build/ directory of the source tree this package sits in, else the
loader's path (see shelf._lib). torch is imported only when ShardDataset is
used, and only if installed.
"""
from ._errors import (AccessDenied, BadShard, ChecksumError, Error, LibraryNotFound,
                      NotFound, StageError, Unavailable)
from .client import Client, ObjectReader, Stat, StageResult

__all__ = ["Client", "ObjectReader", "Stat", "StageResult", "ShardDataset", "Error", "NotFound",
           "AccessDenied", "Unavailable", "ChecksumError", "BadShard", "StageError",
           "LibraryNotFound", "crc32c", "library_path", "tune_malloc"]


def __getattr__(name):
    # ShardDataset imports torch (when installed): only when asked for
    if name == "ShardDataset":
        from .dataset import ShardDataset
        return ShardDataset
    raise AttributeError("module 'shelf' has no attribute %r" % name)


def crc32c(data, crc=0):
    """CRC-32C (the checksum stat() gives) of a bytes-like object."""
    from . import _lib
    return _lib.crc32c(data, crc)


def tune_malloc(**kw):
    """glibc: serve GET-sized buffers from the heap and keep them for reuse
    (see shelf._lib.tune_malloc); ShardDataset calls it when iterating."""
    from . import _lib
    return _lib.tune_malloc(**kw)


def library_path():
    """The path of the libshelf.so in use (loading it if needed)."""
    from . import _lib
    _lib.load()
    return _lib.path()
