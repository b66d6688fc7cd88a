"""ShardDataset: a slice's shards for PyTorch's DataLoader (torch optional).

Importing this module imports torch when it is installed (to subclass
torch.utils.data.IterableDataset); `import shelf` alone does not.
"""
import errno
import random
import re
import tarfile

from . import _lib
from ._errors import BadShard, Error

try:
    import torch.utils.data as _tud
except ImportError:  # torch is optional
    _tud = None

SAMPLE_BUFFER_BYTES = 8 << 20  # samples=True: a shard is read by ranges of this size


def get_worker_info():
    """(worker id, number of workers) of the DataLoader worker this runs
    in: torch.utils.data.get_worker_info() when torch is there, else (0, 1).
    Tests replace it to simulate workers."""
    if _tud is not None:
        w = _tud.get_worker_info()
        if w is not None:
            return w.id, w.num_workers
    return 0, 1


_Base = _tud.IterableDataset if _tud is not None else object

# WebDataset's layout: a member's sample key is its path up to the first dot
# of its last component; the rest is the extension ("a/b.seg.png": "a/b",
# "seg.png").
_SAMPLE_NAME = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")


def shard_order(keys, seed, epoch):
    """The shards of one epoch: keys sorted, then shuffled by (seed, epoch)
    (the same on every process and Python version)."""
    out = sorted(keys, key=lambda k: k.encode("utf-8") if isinstance(k, str) else k)
    random.Random("shelf-shards:%d:%d" % (seed, epoch)).shuffle(out)
    return out


def split(order, rank, world_size, worker, num_workers):
    """The part of order that (rank, worker) reads: every world_size-th
    shard from rank, then every num_workers-th of those from worker.
    Disjoint across ranks and workers, and together complete."""
    return order[rank::world_size][worker::num_workers]


class ShardDataset(_Base):
    """The objects under prefix, as shards for a DataLoader.

    Each epoch reads the keys under prefix (listed once, at construction),
    sorted and shuffled by (shuffle_seed, epoch), this rank's part (every
    world_size-th from rank), and of that, this DataLoader worker's part.
    Yields (key, bytes) per shard; with samples=True the shards are tar
    files in WebDataset's layout and it yields (sample key, {ext: bytes})
    per sample (consecutive members with the same name before the first
    dot). A shard that is not a readable tar raises BadShard naming it.
    set_epoch(e) before each epoch changes the order.

    tune_malloc (default True): iterating calls shelf.tune_malloc() in the
    process that iterates (a DataLoader worker), so that shard-sized
    buffers are reused rather than mapped and faulted in afresh each time.
    """

    def __init__(self, client, prefix, shuffle_seed=0, epoch=0, rank=0, world_size=1,
                 samples=False, sample_buffer=SAMPLE_BUFFER_BYTES, tune_malloc=True):
        if _tud is not None:
            super().__init__()
        if not (isinstance(world_size, int) and world_size >= 1):
            raise ValueError("world_size must be an int >= 1, not %r" % (world_size,))
        if not (isinstance(rank, int) and 0 <= rank < world_size):
            raise ValueError("rank must be 0..%d, not %r" % (world_size - 1, rank))
        self.client = client
        self.prefix = prefix
        self.shuffle_seed = int(shuffle_seed)
        self.epoch = int(epoch)
        self.rank = rank
        self.world_size = world_size
        self.samples = samples
        self.sample_buffer = sample_buffer
        self.tune_malloc = tune_malloc
        self.keys = list(client.list(prefix))

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def shards(self, worker=None, num_workers=None):
        """The shards this rank and worker read this epoch, in order (worker
        and num_workers default to the DataLoader's)."""
        if worker is None or num_workers is None:
            worker, num_workers = get_worker_info()
        return split(shard_order(self.keys, self.shuffle_seed, self.epoch), self.rank,
                     self.world_size, worker, num_workers)

    def __iter__(self):
        if self.tune_malloc:
            _lib.tune_malloc()
        for key in self.shards():
            if self.samples:
                yield from self._samples(key)
            else:
                yield key, self.client.get(key)

    def _samples(self, key):
        f = self.client.open(key, buffer_size=self.sample_buffer)
        try:
            yield from tar_samples(f, key)
        finally:
            f.close()


def _bad(key, why):
    return BadShard(errno.EBADMSG, "shard '%s': %s" % (key, why))


def tar_samples(f, key="?"):
    """(sample key, {ext: bytes}) for each sample of the tar read from file
    object f (WebDataset's layout); BadShard naming key when f is not a
    readable tar, or a sample has an extension twice."""
    cur, parts, n = None, {}, 0
    try:
        # "r:" (seekable) rather than a stream: tarfile ends quietly at a
        # truncated or invalid header, so the end is checked below
        tf = tarfile.open(fileobj=f, mode="r:")
    except (tarfile.TarError, EOFError) as e:
        raise _bad(key, "not a tar file (%s)" % e) from None
    try:
        while True:
            try:
                m = tf.next()
            except (tarfile.TarError, EOFError) as e:
                raise _bad(key, "damaged tar after %d members (%s)" % (n, e)) from None
            if m is None:
                # a whole tar ends with a zero block where the next header would be
                f.seek(tf.offset)
                end = f.read(tarfile.BLOCKSIZE)
                if len(end) < tarfile.BLOCKSIZE or end.count(0) != tarfile.BLOCKSIZE:
                    why = "truncated" if len(end) < tarfile.BLOCKSIZE else "not a tar header"
                    raise _bad(key, "damaged tar at offset %d after %d members (%s)" % (tf.offset, n, why))
                break
            n += 1
            if not m.isfile():
                continue
            g = _SAMPLE_NAME.match(m.name)
            skey, ext = (g.group(1), g.group(2)) if g else (m.name, "")
            try:
                data = tf.extractfile(m).read()
            except (tarfile.TarError, EOFError) as e:
                raise _bad(key, "member '%s': %s" % (m.name, e)) from None
            if len(data) != m.size:
                raise _bad(key, "member '%s' is truncated (%d of %d bytes)" % (m.name, len(data), m.size))
            if skey != cur:
                if cur is not None:
                    yield cur, parts
                cur, parts = skey, {}
            if ext in parts:
                raise _bad(key, "sample '%s' has '%s' twice" % (skey, ext))
            parts[ext] = data
            tf.members = []  # stream: keep no member list
    except Error as e:
        if isinstance(e, BadShard):
            raise
        raise type(e)(e.errno, "shard '%s': %s" % (key, e.message)) from None
    finally:
        tf.close()
    if cur is not None:
        yield cur, parts
