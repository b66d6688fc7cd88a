"""Client: a slice's objects through libshelf (ctypes)."""
import collections
import ctypes
import errno
import io
import itertools
import os
import threading
import time

from . import _errors, _lib
from ._errors import Error, StageError

LIST_PAGE = 1000  # keys asked per LIST call
OPEN_BUFFER_BYTES = 4 << 20  # open(): bytes read ahead per range GET
RANGE_MAX_BYTES = 64 << 20  # open(): one range GET asks for at most this
STAGE_READ_BYTES = 16 << 20  # stage(): crc of a file already there, read in pieces
KEY_MAX_BYTES = 1024
BATCH_WINDOW = 4096  # get_batch(): keys per shelf_get_batch() call (SHELF_BATCH_WINDOW)
LOCAL_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)

Stat = collections.namedtuple("Stat", "size crc seq hlc node")
Stat.__doc__ = """An object's size, crc32c, the node's sequence number and
its version (hlc, node)."""

StageResult = collections.namedtuple(
    "StageResult", "objects bytes skipped skipped_bytes seconds")
StageResult.__doc__ = """What stage() did: objects and bytes fetched,
objects (and their bytes) already there and skipped, seconds taken."""


def _key(key):
    """A key as bytes: str is UTF-8; bytes-like as is."""
    if isinstance(key, str):
        b = key.encode("utf-8")
    elif isinstance(key, (bytes, bytearray, memoryview)):
        b = bytes(key)
    else:
        raise TypeError("a key is str or bytes, not %s" % type(key).__name__)
    if not 1 <= len(b) <= KEY_MAX_BYTES:
        raise Error(errno.EINVAL, "key of %d bytes: keys are 1..%d bytes" % (len(b), KEY_MAX_BYTES))
    return b


def _key_out(b):
    """A key given back: str when it is UTF-8, else bytes."""
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b


def _show(key):
    return key.decode("utf-8", "backslashreplace") if isinstance(key, bytes) else str(key)


class Client:
    """A client of one slice.

    client_dir: the identity from `shelf-broker client` (default
    $SHELF_CLIENT). broker: tcp://[ADDR]:PORT (default $SHELF_BROKER, else
    tcp://[::1]:7400); "" or "none": no broker (maps from the cache and the
    nodes). nodes: addresses asked for the map when no broker answers.
    timeout_ms: each call's timeout (libshelf's default: 5000).

    One Client may be shared by threads (calls are serialised) and survives
    fork() and pickling: a child process (a DataLoader worker) opens its own
    connections on its first call.
    """

    def __init__(self, client_dir=None, broker=None, slice="default", timeout_ms=None,
                 nodes=(), chassis=None, connect_timeout_ms=None):
        if client_dir is None:
            client_dir = os.environ.get("SHELF_CLIENT")
            if not client_dir:
                raise Error(errno.EINVAL, "no client directory: pass client_dir or set $SHELF_CLIENT")
        if broker is None:
            broker = os.environ.get("SHELF_BROKER") or "tcp://[::1]:7400"
        if broker == "none":
            broker = ""
        self._conf = dict(client_dir=os.fspath(client_dir), broker=broker, slice=slice,
                          timeout_ms=timeout_ms, nodes=tuple(nodes), chassis=chassis,
                          connect_timeout_ms=connect_timeout_ms)
        self.slice = slice
        self._h = None
        self._pid = None
        self._lock = threading.Lock()
        self._open()

    # ---- the handle ---------------------------------------------------------
    def _open(self):
        lib = _lib.load()
        c = self._conf
        err = ctypes.create_string_buffer(_lib.ERR_BYTES)
        h = ctypes.c_void_p()
        r = lib.shelf_open(ctypes.byref(h), c["client_dir"].encode(), c["broker"].encode(),
                           err, _lib.ERR_BYTES)
        if r < 0:
            raise _errors.from_errno(r, err.value.decode("utf-8", "replace"))
        try:
            if c["timeout_ms"] is not None:
                lib.shelf_set_timeout(h, int(c["timeout_ms"]))
            if c["connect_timeout_ms"] is not None:
                lib.shelf_set_connect_timeout(h, int(c["connect_timeout_ms"]))
            for n in c["nodes"]:
                self._check(lib.shelf_add_node(h, n.encode(), err, _lib.ERR_BYTES), err)
            if c["chassis"]:
                self._check(lib.shelf_set_chassis(h, c["chassis"].encode(), err, _lib.ERR_BYTES), err)
        except BaseException:
            lib.shelf_close(ctypes.byref(h))
            raise
        self._lib, self._h, self._pid = lib, h, os.getpid()

    def _handle(self):
        """The handle of this process: a forked child drops the parent's
        (its sockets belong to the parent; it is never closed here) and
        opens its own."""
        if self._h is None or self._pid != os.getpid():
            self._h = None
            self._open()
        return self._h

    def __getstate__(self):
        return {"_conf": self._conf, "slice": self.slice}

    def __setstate__(self, st):
        self.__dict__.update(st)
        self._h, self._pid, self._lock = None, None, threading.Lock()

    def close(self):
        """Close the connections. The Client is unusable afterwards."""
        with self._lock:
            if self._h is not None and self._pid == os.getpid():
                self._lib.shelf_close(ctypes.byref(self._h))
            self._h = None
            self._pid = -1  # a closed client never reopens
            self._conf = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            if getattr(self, "_h", None) is not None and self._pid == os.getpid():
                self._lib.shelf_close(ctypes.byref(self._h))
                self._h = None
        except Exception:
            pass

    def _call(self, name, *args):
        """Calls lib.name(handle, slice, *args, err, errlen); raises on < 0."""
        err = ctypes.create_string_buffer(_lib.ERR_BYTES)
        if self._conf is None:
            raise Error(errno.EBADF, "the client is closed")
        with self._lock:
            h = self._handle()
            r = getattr(self._lib, name)(h, self.slice.encode(), *args, err, _lib.ERR_BYTES)
        return self._check(r, err)

    def _call_rc(self, name, *args):
        """As _call, but returns (r, the error text) instead of raising."""
        err = ctypes.create_string_buffer(_lib.ERR_BYTES)
        if self._conf is None:
            raise Error(errno.EBADF, "the client is closed")
        with self._lock:
            h = self._handle()
            r = getattr(self._lib, name)(h, self.slice.encode(), *args, err, _lib.ERR_BYTES)
        return r, err.value.decode("utf-8", "replace")

    @staticmethod
    def _check(r, err):
        if r < 0:
            raise _errors.from_errno(r, err.value.decode("utf-8", "replace"))
        return r

    # ---- objects ------------------------------------------------------------
    def put(self, key, data):
        """Store data (bytes-like) at key, replacing what is there."""
        k = _key(key)
        if isinstance(data, bytes):
            buf, n = data, len(data)
        else:
            mv = memoryview(data).cast("B")
            n = mv.nbytes
            if mv.readonly or n == 0:
                buf = mv.tobytes()
            else:
                buf = ctypes.addressof(ctypes.c_char.from_buffer(mv))
        self._call("shelf_put", k, len(k), buf, n)

    def put_file(self, key, path):
        """Store the file at path (any size: streamed with shelf_put_fd, in
        chunks across the nodes, memory bounded by the chunks in flight)."""
        k = _key(key)
        fn = _lib.put_fd_fn()
        fd = os.open(os.fspath(path), os.O_RDONLY | os.O_CLOEXEC)
        try:
            if fn is None:  # a library that predates streaming
                with os.fdopen(os.dup(fd), "rb") as f:
                    self._call("shelf_put", k, len(k), f.read(), os.fstat(fd).st_size)
                return
            self._call("shelf_put_fd", k, len(k), fd)
        finally:
            os.close(fd)

    def _get(self, k, off, length):
        """(bytes, the object's total size)."""
        data, dlen, total = ctypes.c_void_p(), ctypes.c_size_t(), ctypes.c_uint64()
        self._call("shelf_get", k, len(k), off, length, ctypes.byref(data), ctypes.byref(dlen),
                   ctypes.byref(total))
        try:
            out = ctypes.string_at(data, dlen.value) if dlen.value else b""
        finally:
            if data.value:
                _lib.free(data)
        return out, total.value

    def get(self, key):
        """The object's bytes. NotFound when there is none."""
        return self._get(_key(key), 0, _lib.UINT64_MAX)[0]

    def get_range(self, key, offset, length=None):
        """Bytes [offset, offset+length) of the object (length None: to the
        end); fewer when the object ends first."""
        if offset < 0 or (length is not None and length < 0):
            raise Error(errno.EINVAL, "get_range: offset and length must be >= 0")
        if length == 0:
            return b""
        return self._get(_key(key), offset, _lib.UINT64_MAX if length is None else length)[0]

    def stat(self, key):
        """Stat(size, crc, seq, hlc, node) of the object."""
        k = _key(key)
        st = _lib.ObjStat()
        self._call("shelf_stat", k, len(k), ctypes.byref(st))
        return Stat(st.size, st.crc, st.seq, st.ver.hlc, st.ver.node)

    def delete(self, key):
        """Delete the object. NotFound when there is none."""
        k = _key(key)
        self._call("shelf_delete", k, len(k))

    def list(self, prefix="", after=None):
        """The keys that start with prefix (sorted, each once), after `after`
        when given: str when a key is UTF-8, else bytes. Fetched a page at a
        time as the iterator is consumed."""
        p = _key(prefix) if prefix else b""
        last = _key(after) if after else b""
        while True:
            page = []

            def cb(arg, kp, klen):
                page.append(ctypes.string_at(kp, klen))
                return 0

            self._call("shelf_list", p, len(p), last, len(last), LIST_PAGE, _lib.LIST_CB(cb), None)
            if not page:
                return
            for k in page:
                yield _key_out(k)
            last = page[-1]

    def get_batch(self, keys, ordered=True, fail_missing=False):
        """(key, bytes) for each key, in the order given (ordered=False: as
        they come). A key that cannot be read gives (key, the Error) instead
        (NotFound when it is missing), without failing the others; with
        fail_missing, the batch stops at the first key that cannot be read
        and raises its Error (the keys given before it were yielded).

        One shelf_get_batch() call per BATCH_WINDOW keys: the keys grouped
        per node, many in flight on one connection per node; the bytes of
        one window are held until they are yielded."""
        fn = _lib.get_batch_fn()
        if fn is None:  # a library that predates shelf_get_batch
            yield from self._get_batch_loop(keys, fail_missing)
            return
        flags = (0 if ordered else _lib.BATCH_UNORDERED) | \
            (_lib.BATCH_FAIL_MISSING if fail_missing else 0)
        it = iter(keys)
        while True:
            win = list(itertools.islice(it, BATCH_WINDOW))
            if not win:
                return
            out, bufs, idx, exc = [], [], [], []
            for i, key in enumerate(win):
                try:
                    bufs.append(ctypes.create_string_buffer(_key(key), len(_key(key))))
                    idx.append(i)
                except (Error, TypeError) as e:
                    if fail_missing:
                        raise
                    out.append((i, e if isinstance(e, Error) else Error(errno.EINVAL, str(e))))
            items = (_lib.BatchItem * max(1, len(bufs)))()
            for j, b in enumerate(bufs):
                items[j].key = ctypes.addressof(b)
                items[j].klen = len(b)

            def cb(arg, j, res, data, length, why):
                try:
                    if res == 0:
                        v = ctypes.string_at(data, length) if length else b""
                    else:
                        v = _errors.from_errno(res, why.decode("utf-8", "replace") if why else
                                               "get '%s': %s" % (_show(win[idx[j]]),
                                                                 os.strerror(-res)))
                    out.append((idx[j], v))
                    return 0
                except BaseException as e:  # never through C: stop the batch, raise it here
                    exc.append(e)
                    return 1

            r, err = self._call_rc("shelf_get_batch", items, len(bufs), flags, _lib.BATCH_CB(cb),
                                   None)
            if exc:
                raise exc[0]
            if ordered:
                out.sort(key=lambda t: t[0])
            for i, v in out:
                if fail_missing and isinstance(v, Error):
                    raise v
                yield win[i], v
            if r < 0:
                raise _errors.from_errno(r, err)

    def _get_batch_loop(self, keys, fail_missing):
        for key in keys:
            try:
                yield key, self.get(key)
            except _errors.NotFound as e:
                if fail_missing:
                    raise
                yield key, e
            except Error as e:
                yield key, e

    def open(self, key, buffer_size=OPEN_BUFFER_BYTES):
        """A readable, seekable file (io.RawIOBase) over the object, read by
        ranges of buffer_size bytes. NotFound at once when there is none."""
        return ObjectReader(self, key, buffer_size)

    # ---- stage --------------------------------------------------------------
    def stage(self, prefix, directory, progress=None):
        """Copy every object under prefix into directory; returns a StageResult.

        A key's file is its path after the prefix's last '/' (prefix
        "ds/train-" puts "ds/train-0001.tar" at DIR/train-0001.tar; "a/b"
        keys make subdirectories). Each file is written to a temporary name
        (.NAME.shelf-part), fsync'd, its crc32c checked against the
        object's, then renamed; a file already there with the object's size
        and crc32c is skipped (a rerun resumes). progress(done, total,
        bytes) is called after each object.

        Raises StageError at the end when some objects could not be copied
        (.failed lists them: keys unsafe as paths, read errors, checksum
        mismatches), and at once (after removing the partial file) when the
        directory cannot be written (EACCES, EROFS, ENOSPC, EDQUOT)."""
        t0 = time.monotonic()
        root = os.fsencode(os.fspath(directory))
        if os.path.exists(root) and not os.path.isdir(root):
            raise StageError(errno.ENOTDIR, "stage: '%s' is not a directory" % os.fsdecode(root))
        try:
            os.makedirs(root, exist_ok=True)
        except OSError as e:
            raise StageError(e.errno, "stage: cannot create '%s': %s" % (os.fsdecode(root), e.strerror))
        pb = _key(prefix) if prefix else b""
        cut = pb.rfind(b"/") + 1
        keys = [_key(k) for k in self.list(prefix)]
        done = nbytes = skipped = skipped_bytes = 0
        failed = []
        dirs = set()

        def result():
            return StageResult(done, nbytes, skipped, skipped_bytes, time.monotonic() - t0)

        for i, k in enumerate(keys):
            rel = k[cut:]
            parts = rel.split(b"/")
            if not rel or any(x in (b"", b".", b"..") for x in parts) or b"\0" in rel:
                failed.append((_key_out(k), Error(errno.EINVAL, "stage: key '%s' is not a safe "
                                                  "relative path" % _show(k))))
                continue
            dest = os.path.join(root, *parts)
            try:
                got = self._stage_one(k, dest, dirs)
            except OSError as e:
                if isinstance(e, Error) and not isinstance(e, StageError):
                    failed.append((_key_out(k), e))
                    continue
                if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT):
                    raise StageError(e.errno, "stage: cannot write '%s': %s" %
                                     (os.fsdecode(dest), e.strerror), failed, result())
                failed.append((_key_out(k), Error(e.errno or errno.EIO, "stage: '%s': %s" %
                                                  (os.fsdecode(dest), e.strerror or e))))
                continue
            if got is None:
                skipped += 1
                skipped_bytes += os.path.getsize(dest)
            else:
                done += 1
                nbytes += got
            if progress:
                progress(i + 1, len(keys), nbytes)
        for d in dirs:
            _fsync_dir(d)
        if failed:
            raise StageError(failed[0][1].errno, "stage: %d of %d objects not copied (first: %s)" %
                             (len(failed), len(keys), failed[0][1].message), failed, result())
        return result()

    def _stage_one(self, k, dest, dirs):
        """Copies one object to dest: its size, or None when dest was there
        already with the same size and crc32c. Streams the object into the
        temporary file with shelf_get_fd (any size, bounded memory), then
        checks the file's size and crc32c against the object's."""
        st = self.stat(k)
        if _same_file(dest, st):
            return None
        parent = os.path.dirname(dest)
        os.makedirs(parent, exist_ok=True)
        if _lib.get_fd_fn() is None:  # a library that predates streaming
            return self._stage_one_whole(k, dest, dirs, st)
        tmp = os.path.join(parent, b"." + os.path.basename(dest) + b".shelf-part")
        fd = -1
        try:
            for attempt in range(2):
                if fd >= 0:
                    os.close(fd)
                fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
                total = ctypes.c_uint64()
                r, err = self._call_rc("shelf_get_fd", k, len(k), 0, _lib.UINT64_MAX, fd,
                                       ctypes.byref(total))
                if r < 0 and -r in LOCAL_WRITE_ERRNOS:
                    raise OSError(-r, os.strerror(-r), dest)
                if r < 0:
                    raise _errors.from_errno(r, err)
                size, crc = _fd_crc(fd)
                if (size, crc) == (st.size, st.crc):
                    break
                # overwritten since the stat? look again, once
                st2 = self.stat(k)
                if attempt == 1 or (st2.size, st2.crc) == (st.size, st.crc):
                    raise Error(errno.EIO, "stage: '%s': %d bytes read with crc32c %08x, the "
                                "object has %d bytes, crc32c %08x" % (_show(k), size, crc,
                                                                       st2.size, st2.crc))
                st = st2
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.rename(tmp, dest)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        dirs.add(parent)
        return st.size

    def _stage_one_whole(self, k, dest, dirs, st):
        """_stage_one through one whole-object GET (libraries without
        shelf_get_fd)."""
        parent = os.path.dirname(dest)
        for attempt in range(2):
            data, total = self._get(k, 0, _lib.UINT64_MAX)
            if len(data) == st.size and _lib.crc32c(data) == st.crc:
                break
            # overwritten since the stat? look again, once
            st2 = self.stat(k)
            if attempt == 1 or (st2.size, st2.crc) == (st.size, st.crc):
                raise Error(errno.EIO, "stage: '%s': %d bytes read with crc32c %08x, the object "
                            "has %d bytes, crc32c %08x" % (_show(k), len(data), _lib.crc32c(data),
                                                            st2.size, st2.crc))
            st = st2
        tmp = os.path.join(parent, b"." + os.path.basename(dest) + b".shelf-part")
        fd = -1
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            mv = memoryview(data)
            while mv:
                n = os.write(fd, mv)
                mv = mv[n:]
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.rename(tmp, dest)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        dirs.add(parent)
        return len(data)


def _same_file(path, st):
    """path is a regular file with st's size and crc32c."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        s = os.fstat(fd)
        if not (s.st_mode & 0o170000 == 0o100000 and s.st_size == st.size):
            return False
        crc = 0
        while True:
            b = os.read(fd, STAGE_READ_BYTES)
            if not b:
                break
            crc = _lib.crc32c(b, crc)
        return crc == st.crc
    finally:
        os.close(fd)


def _fd_crc(fd):
    """(size, crc32c) of the file open at fd, read from its start."""
    crc = size = 0
    os.lseek(fd, 0, os.SEEK_SET)
    while True:
        b = os.read(fd, STAGE_READ_BYTES)
        if not b:
            return size, crc
        size += len(b)
        crc = _lib.crc32c(b, crc)


def _fsync_dir(d):
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ObjectReader(io.RawIOBase):
    """An object read by ranges (Client.open()): readable and seekable.

    Reads smaller than the buffer are served from one range GET of
    buffer_size bytes; larger ones are read directly. The size is the
    object's at open(); a GET that finds another size raises Error(ESTALE)
    (the object was replaced while it was read)."""

    def __init__(self, client, key, buffer_size=OPEN_BUFFER_BYTES):
        super().__init__()
        if buffer_size < 1:
            raise ValueError("buffer_size must be >= 1")
        self._c = client
        self._k = _key(key)
        self.name = key
        self.size = client.stat(self._k).size
        self._bufsize = buffer_size
        self._pos = 0
        self._buf = b""
        self._boff = 0  # the object offset of _buf[0]

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        self._checkClosed()
        return self._pos

    def seek(self, offset, whence=io.SEEK_SET):
        self._checkClosed()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError("whence must be 0, 1 or 2")
        if pos < 0:
            raise OSError(errno.EINVAL, "negative seek position %d" % pos)
        self._pos = pos
        return pos

    def _range(self, off, n):
        data, total = self._c._get(self._k, off, n)
        if total != self.size:
            raise Error(errno.ESTALE, "'%s' changed while it was read (%d bytes at open, now %d)"
                        % (_show(self._k), self.size, total))
        return data

    def readinto(self, b):
        """Fills b whole unless the object ends first (never a short read
        in the middle: tarfile and friends take one as the end)."""
        self._checkClosed()
        mv = memoryview(b).cast("B")
        want = min(len(mv), max(0, self.size - self._pos))
        got = 0
        while got < want:
            n = self._read_some(mv[got:want])
            if n == 0:
                break
            got += n
        return got

    def _read_some(self, mv):
        want = len(mv)
        i = self._pos - self._boff
        if not (0 <= i < len(self._buf)):
            if want >= self._bufsize:
                data = self._range(self._pos, min(want, RANGE_MAX_BYTES))
                mv[:len(data)] = data
                self._pos += len(data)
                return len(data)
            self._buf = self._range(self._pos, self._bufsize)
            self._boff, i = self._pos, 0
            if not self._buf:
                return 0
        n = min(want, len(self._buf) - i)
        mv[:n] = self._buf[i:i + n]
        self._pos += n
        return n

    def readall(self):
        self._checkClosed()
        parts = []
        while True:
            b = self.read(max(self._bufsize, self.size - self._pos))
            if not b:
                return b"".join(parts)
            parts.append(b)

    def close(self):
        self._buf = b""
        super().close()
