"""The package's exceptions: each carries the errno and libshelf's message."""
import errno as _errno


class Error(OSError):
    """A failed call. .errno: the errno libshelf returned (positive);
    .message: its text (naming the key and the node)."""

    def __init__(self, err, message):
        super().__init__(err, message)
        self.message = message

    def __str__(self):
        name = _errno.errorcode.get(self.errno, str(self.errno))
        return "%s [%s]" % (self.message, name)

    def __reduce__(self):  # survives pickling (DataLoader workers send it back)
        return (self.__class__, (self.errno, self.message))


class NotFound(Error, FileNotFoundError):
    """ENOENT: no such key."""


class AccessDenied(Error, PermissionError):
    """EACCES / EPERM: refused (the certificate may not do it)."""


class Unavailable(Error):
    """EHOSTUNREACH, ETIMEDOUT, ECONNREFUSED, EBUSY, EAGAIN: no node could
    answer in time; trying again later may work."""


class ChecksumError(Error):
    """EIO: a checksum did not match (the bytes are never returned)."""


class BadShard(Error):
    """EBADMSG: a shard is not a readable tar (ShardDataset(samples=True))."""


class LibraryNotFound(Error):
    """libshelf.so could not be found or loaded (raised by the first
    Client(), not by import)."""

    def __init__(self, message, err=_errno.ENOENT):
        super().__init__(err, message)

    def __reduce__(self):
        return (self.__class__, (self.message, self.errno))


class StageError(Error):
    """stage() could not copy some objects: .failed is a list of
    (key, Error), .result what was done (a StageResult)."""

    def __init__(self, err, message, failed=(), result=None):
        super().__init__(err, message)
        self.failed = list(failed)
        self.result = result

    def __reduce__(self):
        return (self.__class__, (self.errno, self.message, self.failed, self.result))


_BY_ERRNO = {
    _errno.ENOENT: NotFound,
    _errno.EACCES: AccessDenied,
    _errno.EPERM: AccessDenied,
    _errno.EHOSTUNREACH: Unavailable,
    _errno.ETIMEDOUT: Unavailable,
    _errno.ECONNREFUSED: Unavailable,
    _errno.EBUSY: Unavailable,
    _errno.EAGAIN: Unavailable,
    _errno.EIO: ChecksumError,
}


def from_errno(err, message):
    """The exception for a negative or positive errno and a message."""
    err = abs(err)
    if not message:
        message = _errno.errorcode.get(err, "error %d" % err)
    return _BY_ERRNO.get(err, Error)(err, message)
