/*
 * faultdisk: an in-memory drive with a volatile write cache, for tests.
 *
 * `image` is what reads see. `durable` is what survives a power loss. A
 * write lands in `image` when it completes and is remembered in the cache
 * list until a flush completes. node_faultdisk_crash() rebuilds `image` from
 * `durable` plus a random subset of the cached writes, tearing the last
 * survivor at a sector boundary, exactly as a drive without power-loss
 * protection may.
 *
 * Queued requests complete in random order on reap(), like a real device.
 */
#include "disk.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cached_write {
	uint64_t off;
	size_t len;
	uint8_t *data;
};

struct node_faultdisk {
	struct node_disk d;
	uint8_t *image;
	uint8_t *durable;
	struct node_rng rng;
	struct node_disk_io **queue; /* submitted, not completed */
	unsigned nqueue, capqueue;
	struct cached_write *cache;
	unsigned ncache, capcache;
	struct {
		int skip, count, err;
	} fail[3];
	uint64_t writes, flushes;
	int stale;  /* cached reads still to return stale (zeroed) bytes */
};

struct node_faultdisk *node_faultdisk_of(struct node_disk *d)
{
	return (struct node_faultdisk *)d;
}

static int fd_submit(struct node_disk *d, struct node_disk_io *io)
{
	struct node_faultdisk *f = (struct node_faultdisk *)d;

	if (f->nqueue == f->capqueue) {
		unsigned cap = f->capqueue ? f->capqueue * 2 : 64;
		void *q = realloc(f->queue, cap * sizeof(*f->queue));

		if (!q)
			return -ENOMEM;
		f->queue = q;
		f->capqueue = cap;
	}
	f->queue[f->nqueue++] = io;
	return 0;
}

static int injected(struct node_faultdisk *f, enum node_disk_op op)
{
	if (f->fail[op].count == 0)
		return 0;
	if (f->fail[op].skip > 0) {
		f->fail[op].skip--;
		return 0;
	}
	if (f->fail[op].count > 0)
		f->fail[op].count--;
	return f->fail[op].err;
}

static void cache_free(struct node_faultdisk *f)
{
	for (unsigned i = 0; i < f->ncache; i++)
		free(f->cache[i].data);
	f->ncache = 0;
}

static int execute(struct node_faultdisk *f, struct node_disk_io *io)
{
	int err = injected(f, io->op);

	if (err)
		return err;
	if (io->op == DISK_FLUSH) {
		for (unsigned i = 0; i < f->ncache; i++)
			memcpy(f->durable + f->cache[i].off, f->cache[i].data, f->cache[i].len);
		cache_free(f);
		f->flushes++;
		return 0;
	}
	if (io->off % DISK_BLOCK_BYTES || io->len % DISK_BLOCK_BYTES ||
	    (uintptr_t)io->buf % DISK_BLOCK_BYTES)
		return -EINVAL; /* what O_DIRECT says about unaligned I/O */
	if (io->off >= f->d.size || io->len > f->d.size - io->off)
		return io->op == DISK_WRITE ? -ENOSPC : 0;
	if (io->op == DISK_READ) {
		memcpy(io->buf, f->image + io->off, io->len);
		if (io->cached && f->stale > 0) {
			/* what a page cached before the write would hold here */
			f->stale--;
			memset(io->buf, 0, io->len);
		}
		return (int)io->len;
	}
	if (f->ncache == f->capcache) {
		unsigned cap = f->capcache ? f->capcache * 2 : 64;
		void *c = realloc(f->cache, cap * sizeof(*f->cache));

		if (!c)
			return -ENOMEM;
		f->cache = c;
		f->capcache = cap;
	}
	f->cache[f->ncache].data = malloc(io->len);
	if (!f->cache[f->ncache].data)
		return -ENOMEM;
	memcpy(f->cache[f->ncache].data, io->buf, io->len);
	f->cache[f->ncache].off = io->off;
	f->cache[f->ncache].len = io->len;
	f->ncache++;
	memcpy(f->image + io->off, io->buf, io->len);
	f->writes++;
	return (int)io->len;
}

static int fd_reap(struct node_disk *d, bool wait)
{
	struct node_faultdisk *f = (struct node_faultdisk *)d;
	int n = 0;

	/* Complete everything queued now, in random order; completions may
	 * queue more, which the next reap handles. */
	for (unsigned batch = f->nqueue; batch > 0 && f->nqueue > 0; batch--) {
		unsigned i = (unsigned)node_rng_below(&f->rng, f->nqueue);
		struct node_disk_io *io = f->queue[i];

		/* A flush covers the writes completed before it runs, as
		 * fdatasync covers those completed before it was issued. */
		f->queue[i] = f->queue[--f->nqueue];
		io->res = execute(f, io);
		d->inflight--;
		n++;
		io->done(io);
	}
	return n;
}

static void fd_destroy(struct node_disk *d)
{
	struct node_faultdisk *f = (struct node_faultdisk *)d;

	cache_free(f);
	free(f->cache);
	free(f->queue);
	free(f->image);
	free(f->durable);
	free(f);
}

static const struct node_disk_ops fault_ops = { fd_submit, fd_reap, fd_destroy, NULL };

int node_faultdisk_new(struct node_disk **out, uint64_t size, uint64_t seed)
{
	struct node_faultdisk *f = calloc(1, sizeof(*f));

	*out = NULL;
	if (!f)
		return -ENOMEM;
	size &= ~(uint64_t)(DISK_BLOCK_BYTES - 1);
	f->image = calloc(1, size);
	f->durable = calloc(1, size);
	if (!f->image || !f->durable) {
		fd_destroy(&f->d);
		return -ENOMEM;
	}
	f->d.ops = &fault_ops;
	f->d.size = size;
	snprintf(f->d.name, sizeof(f->d.name), "faultdisk(seed %llu)", (unsigned long long)seed);
	node_rng_seed(&f->rng, seed);
	*out = &f->d;
	return 0;
}

void node_faultdisk_crash(struct node_faultdisk *f)
{
	int last = -1;
	bool *keep = calloc(f->ncache ? f->ncache : 1, sizeof(*keep));

	for (unsigned i = 0; keep && i < f->ncache; i++) {
		keep[i] = node_rng_below(&f->rng, 2);
		if (keep[i])
			last = (int)i;
	}
	/* only the cached regions can differ between image and durable */
	for (unsigned i = 0; i < f->ncache; i++)
		memcpy(f->image + f->cache[i].off, f->durable + f->cache[i].off, f->cache[i].len);
	for (int i = 0; keep && i <= last; i++) {
		struct cached_write *w = &f->cache[i];
		size_t n = w->len;

		if (!keep[i])
			continue;
		if (i == last) /* torn: only its first k sectors reached the media */
			n = node_rng_below(&f->rng, w->len / DISK_SECTOR_BYTES + 1) *
			    DISK_SECTOR_BYTES;
		memcpy(f->image + w->off, w->data, n);
	}
	free(keep);
	/* what reached the media is now all there is */
	for (unsigned i = 0; i < f->ncache; i++)
		memcpy(f->durable + f->cache[i].off, f->image + f->cache[i].off, f->cache[i].len);
	cache_free(f);
	f->nqueue = 0;
	f->d.inflight = 0;
	memset(f->fail, 0, sizeof(f->fail));
}

void node_faultdisk_reseed(struct node_faultdisk *f, uint64_t seed)
{
	node_rng_seed(&f->rng, seed);
	cache_free(f);
	/* the contents stay, as on a drive that is reused */
	f->nqueue = 0;
	f->d.inflight = 0;
	memset(f->fail, 0, sizeof(f->fail));
	snprintf(f->d.name, sizeof(f->d.name), "faultdisk(seed %llu)", (unsigned long long)seed);
}

void node_faultdisk_fail(struct node_faultdisk *f, enum node_disk_op op, int skip, int count,
			 int err)
{
	f->fail[op].skip = skip;
	f->fail[op].count = count;
	f->fail[op].err = err;
}

void node_faultdisk_flip(struct node_faultdisk *f, uint64_t off, unsigned bit)
{
	if (off >= f->d.size)
		return;
	f->image[off] ^= (uint8_t)(1u << (bit & 7));
	f->durable[off] ^= (uint8_t)(1u << (bit & 7));
}

void node_faultdisk_zero(struct node_faultdisk *f, uint64_t off, size_t len)
{
	if (off >= f->d.size || len > f->d.size - off)
		return;
	memset(f->image + off, 0, len);
	memset(f->durable + off, 0, len);
}

void node_faultdisk_stale_cache(struct node_faultdisk *f, int count)
{
	f->stale = count;
}

uint64_t node_faultdisk_writes(struct node_faultdisk *f)
{
	return f->writes;
}

uint64_t node_faultdisk_flushes(struct node_faultdisk *f)
{
	return f->flushes;
}

void node_faultdisk_peek(struct node_faultdisk *f, uint64_t off, void *buf, size_t len)
{
	if (off < f->d.size && len <= f->d.size - off)
		memcpy(buf, f->image + off, len);
}
