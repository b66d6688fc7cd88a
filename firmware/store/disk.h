/*
 * The store's I/O backend seam. Every disk operation of the store goes
 * through struct node_disk: an asynchronous queue of reads, writes and
 * flushes whose completions are delivered by node_disk_reap().
 *
 * Two implementations:
 *  - node_disk_uring_open(): production, io_uring on an O_DIRECT fd;
 *  - node_faultdisk_new():   tests, an in-memory drive with a volatile write
 *    cache that can crash (dropping and tearing unflushed writes), fail with
 *    EIO or ENOSPC on command, and flip bits.
 *
 * The clock and the random source are seams too (struct node_clock,
 * struct node_rng), so a seeded test replays exactly.
 */
#ifndef NODE_STORE_DISK_H
#define NODE_STORE_DISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../loop/loop.h"

#define DISK_BLOCK_BYTES 4096u   /* alignment of every offset, length and buffer */
#define DISK_SECTOR_BYTES 512u   /* granularity at which a write may tear */

enum node_disk_op {
	DISK_READ,
	DISK_WRITE,
	DISK_FLUSH, /* makes every write completed before it durable */
};

struct node_disk_io {
	enum node_disk_op op;
	void *buf;         /* DISK_BLOCK_BYTES aligned */
	size_t len;        /* multiple of DISK_BLOCK_BYTES */
	uint64_t off;      /* multiple of DISK_BLOCK_BYTES */
	bool cached;       /* a read that may come from the OS page cache (it
			    * can be stale if a write raced it: a reader
			    * that finds a bad checksum reads again without) */
	int res;           /* on completion: bytes transferred or -errno */
	void (*done)(struct node_disk_io *io);
	void *arg;         /* the submitter's */
	struct node_loop_ev ev;   /* backend use: completion on a shared loop */
	struct node_disk *disk;   /* backend use */
	struct node_disk_io *next; /* backend use: queued for direct I/O */
};

struct node_disk;

struct node_disk_ops {
	/* Queue `io`. Returns 0 or -errno (then `done` is never called). */
	int (*submit)(struct node_disk *d, struct node_disk_io *io);
	/* Push queued work to the device and deliver completions by calling
	 * io->done. With wait, block until at least one completes (if any is
	 * in flight). Returns completions delivered or -errno. */
	int (*reap)(struct node_disk *d, bool wait);
	void (*destroy)(struct node_disk *d);
	/* Backends on a shared loop only (NULL elsewhere): see
	 * node_disk_direct(). */
	int (*direct)(struct node_disk *d, bool on);
};

struct node_disk {
	const struct node_disk_ops *ops;
	uint64_t size;     /* bytes, a multiple of DISK_BLOCK_BYTES */
	unsigned inflight; /* submitted, not yet completed */
	char name[256];    /* for messages */
};

static inline int node_disk_submit(struct node_disk *d, struct node_disk_io *io)
{
	int ret = d->ops->submit(d, io);

	if (ret == 0)
		d->inflight++;
	return ret;
}

int node_disk_reap(struct node_disk *d, bool wait);
void node_disk_destroy(struct node_disk **d);

/*
 * A backend on a shared loop completes requests through the loop: the
 * loop's owner dispatches them, and node_disk_reap() delivers nothing.
 * With direct on, new requests never touch the loop: node_disk_reap() does
 * them, synchronously, on the calling thread, and delivers them (the
 * store's blocking calls). Turning it on fails with -EBUSY while requests
 * are in flight through the loop; turn it off only when nothing is queued.
 * 0 on a backend that owns its ring (its reap is always its own).
 */
int node_disk_direct(struct node_disk *d, bool on);

/* Run one operation to completion (for start-up and tools). */
int node_disk_sync_io(struct node_disk *d, enum node_disk_op op, void *buf, size_t len,
		      uint64_t off);

/*
 * Open `path` (block device or regular file) with O_DIRECT on a new
 * io_uring of `depth` entries, and a second, read-only descriptor without
 * O_DIRECT (readahead off) for reads marked `cached`. With create_size > 0 a missing file is
 * created sparse with that size. Errors name the path.
 */
int node_disk_uring_open(struct node_disk **out, const char *path, unsigned depth,
			 uint64_t create_size, char *err, size_t errlen);

/*
 * The same on a shared node_loop (borrowed; it must outlive the disk): the
 * store's I/O completes on the loop's ring next to the network's, delivered
 * when the loop's owner runs the loop; node_disk_reap() never runs the loop
 * (it only does direct requests, node_disk_direct()). No registered file:
 * the ring is shared, so the file table stays the caller's. Destroy it only
 * when nothing is in flight through the loop.
 */
int node_disk_loop_open(struct node_disk **out, struct node_loop *loop, const char *path,
			uint64_t create_size, char *err, size_t errlen);

/* ---- the fault-injecting test disk ---- */

struct node_faultdisk;

/* An in-memory drive of `size` bytes; `seed` drives every random choice. */
int node_faultdisk_new(struct node_disk **out, uint64_t size, uint64_t seed);

/* The faultdisk behind a node_disk created by node_faultdisk_new(). */
struct node_faultdisk *node_faultdisk_of(struct node_disk *d);

/*
 * Simulate a power loss: every write not covered by a completed flush is
 * dropped or kept at random, the last kept one is torn at a random sector
 * boundary, and in-flight requests are abandoned (their `done` is never
 * called). The disk then behaves as freshly powered on.
 */
void node_faultdisk_crash(struct node_faultdisk *f);

/* Start a new seeded run on the same disk: forget cached writes, queued
 * requests and injected faults, keep the contents (a used drive). */
void node_faultdisk_reseed(struct node_faultdisk *f, uint64_t seed);

/* Make the next `count` operations of kind `op` (after `skip` more succeed)
 * fail with `err` (-EIO, -ENOSPC). count < 0: fail forever. */
void node_faultdisk_fail(struct node_faultdisk *f, enum node_disk_op op, int skip, int count,
			 int err);

/* Flip one bit of the durable and current image at byte `off`. */
void node_faultdisk_flip(struct node_faultdisk *f, uint64_t off, unsigned bit);

/* Zero len bytes of the durable and current image at `off` (a block the
 * medium lost). */
void node_faultdisk_zero(struct node_faultdisk *f, uint64_t off, size_t len);

/* Make the next `count` reads marked `cached` return zeros, as pages cached
 * before the blocks were written would; reads without the mark are
 * unaffected. */
void node_faultdisk_stale_cache(struct node_faultdisk *f, int count);

/* Counters, for tests. */
uint64_t node_faultdisk_writes(struct node_faultdisk *f);
uint64_t node_faultdisk_flushes(struct node_faultdisk *f);

/* Copy the image (what a read would see) into buf. */
void node_faultdisk_peek(struct node_faultdisk *f, uint64_t off, void *buf, size_t len);

/* ---- clock and random seams ---- */

struct node_clock {
	uint64_t (*now_ns)(void *arg); /* monotonic nanoseconds */
	uint64_t (*wall_s)(void *arg); /* unix seconds */
	void *arg;
};

extern const struct node_clock node_clock_system;

struct node_rng {
	uint64_t s[2]; /* xorshift128+ */
};

void node_rng_seed(struct node_rng *r, uint64_t seed);
uint64_t node_rng_next(struct node_rng *r);
/* Uniform in [0, n). */
uint64_t node_rng_below(struct node_rng *r, uint64_t n);

#endif
