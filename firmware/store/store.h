/*
 * The store engine: an object store on one drive (block device or file),
 * log-structured, on io_uring. Format: docs/FORMAT.md.
 *
 * Keys are byte strings of 1..NODE_STORE_KEY_MAX bytes; values are
 * 0..NODE_STORE_VALUE_MAX bytes (and at most what fits in one segment).
 *
 * Durability: a put or delete completes (callback, or return of the
 * blocking call) only after its record is durable: written and covered by a
 * completed fdatasync (group commit: one flush covers every record written
 * before it). A failed write or flush puts the store into read-only state;
 * it never acknowledges a write it could not make durable.
 *
 * Threading: a store is used by one thread.
 *
 * Two ways to run, chosen at open:
 *  - Own ring (opts.loop NULL: tools, tests, benchmarks). The asynchronous
 *    calls queue work; node_store_poll() submits it, reaps the store's ring
 *    and runs callbacks. The blocking calls drive that ring themselves.
 *  - On a shared loop (opts.loop: the node's). The store never runs the
 *    loop. Its completions arrive through the loop's callbacks when the
 *    loop's owner runs node_loop_run(); its own work between completions
 *    (acknowledging what is durable, starting batches, flushes and
 *    checkpoints) runs from a before-sleep hook it registers at open, and
 *    an io_uring timeout wakes the loop when a batch or a flush waits for
 *    the commit window. The owner only runs the loop. The blocking calls
 *    work only while none of the store's I/O is in flight on the loop
 *    (node_store_idle() says so), and return -EBUSY otherwise: the store
 *    could not see that I/O complete without running the loop. They then
 *    do all of the store's I/O themselves, directly and synchronously on
 *    the calling thread, never through the loop; callbacks of asynchronous
 *    operations that complete meanwhile run inside them.
 *
 * Versions (docs/FORMAT.md §3, "Versions"): a versioned put or delete
 * carries a version (hlc, node), ordered by hlc then node; (0, 0) is "no
 * version", older than every real one, and is what unversioned records
 * (the plain calls, and every record written before format 4) hold. A
 * versioned write is stored only if its version is newer than what the
 * store holds for the key, object or tombstone, checked when the record
 * takes its place in the log (so of two writes of one key in flight, an
 * older one ordered after a newer one is refused, never wins); otherwise
 * it completes with -EALREADY and nothing is written. A versioned delete
 * leaves a tombstone (key, version) in the index, which checkpoints and
 * recovery keep and compaction moves, until node_store_tomb_drop(). The
 * plain calls keep their meaning: a plain put replaces whatever the key
 * holds (the object then has no version), a plain delete removes an object
 * and its version (and leaves no tombstone); a tombstone reads as absent
 * to both, to get, stat and list.
 *
 * Errors: 0 or -errno. -ENOENT no such key, -EINVAL bad argument,
 * -E2BIG key or value too large, -ENOSPC the drive is full (compaction can
 * free no segment, or live data would pass the usable capacity: see below),
 * -EROFS the store is read-only after an I/O failure, -EIO a checksum
 * mismatch or a read error (never wrong bytes). node_store_errmsg() gives
 * the reason of the last failure in words.
 */
#ifndef NODE_STORE_H
#define NODE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "disk.h"

#define NODE_STORE_KEY_MAX 1024u
#define NODE_STORE_VALUE_MAX (64u << 20)
#define NODE_STORE_SEGMENT_MIN (1u << 20)

struct node_store;

struct node_store_opts {
	const char *path;           /* the drive; ignored when `disk` is set */
	struct node_disk *disk;     /* a backend to use (tests); the store takes it */
	struct node_loop *loop;     /* share this io_uring (the node's) instead of owning one */
	uint64_t create_size;       /* create a missing drive file of this size */
	bool format;                /* format the drive if it holds no store */
	bool force_format;          /* format even over an existing store (tools only) */
	uint64_t segment_bytes;     /* for format: power of two, default 256 MiB */
	unsigned ring_depth;        /* io_uring entries, default 256 */
	unsigned write_buffers;     /* write buffers, default 16 */
	size_t write_buffer_bytes;  /* bytes each, default 256 KiB */
	uint64_t ckpt_records;      /* checkpoint after this many records, default 1,000,000 */
	uint64_t commit_window_us;  /* longest a record waits for its batch, default 2000 */
	size_t read_cache_bytes;    /* read buffers kept for reuse, default 8 MiB */
	size_t compact_piece_bytes; /* compaction moves a record larger than this in
				     * pieces of this size (default 1 MiB; a
				     * multiple of 64 KiB) */
	bool page_cache_reads;      /* gets and stats may be answered from the OS page
				     * cache (default true); a checksum failure there
				     * is read again from the drive before it counts */
	const struct node_clock *clock; /* default: system clock */
	uint64_t seed;              /* random source (drive uuid) */
};

/* Fill `o` with the defaults above. */
void node_store_opts_init(struct node_store_opts *o);

/*
 * Open the store on a drive: recover it (load the newest checkpoint, replay
 * the log tail, discard torn records), or format it when opts->format is set
 * and the drive holds no store. A drive that holds something else (another
 * format, version, or a corrupt superblock) is refused, never overwritten.
 * On error, err says why and names the drive.
 */
int node_store_open(struct node_store **out, const struct node_store_opts *opts,
		    char *err, size_t errlen);

/* Finish queued work, write a checkpoint (so the next open does not
 * scan), release everything and NULL *s. Accepts NULL. On a shared loop the
 * owner first runs the loop until node_store_idle() (the store cannot
 * finish I/O in flight on the loop without running it, and never does);
 * the rest is done with direct I/O. Taken read buffers are released before. */
void node_store_close(struct node_store **s);

/*
 * For tests: forget the store as a power loss would, with no further I/O
 * and no callbacks, and hand back its disk (for a faultdisk, crash it and
 * open a new store on it). NULLs *s.
 */
struct node_disk *node_store_abandon(struct node_store **s);

/* The reason for the most recent failure, in words. */
const char *node_store_errmsg(const struct node_store *s);

/* ---- asynchronous interface ---- */

/* A version: compare hlc, then node. (0, 0): none. */
struct node_store_ver {
	uint64_t hlc;   /* hybrid logical clock of the write's head */
	uint64_t node;  /* the head's node id, first 8 bytes big-endian */
};

/* <0, 0 or >0 as a is older than, equal to, or newer than b. */
int node_store_ver_cmp(const struct node_store_ver *a, const struct node_store_ver *b);

/* (0, 0): no version. */
bool node_store_ver_is_none(const struct node_store_ver *v);

struct node_store_objstat {
	uint64_t size;  /* value bytes (0 for a tombstone) */
	uint32_t crc;   /* crc32c of the whole value */
	uint64_t seq;   /* sequence number of the record */
	struct node_store_ver ver; /* its version ((0, 0): none) */
	bool tomb;      /* a tombstone (node_store_stat_any(), -EALREADY) */
};

/*
 * Completion of a put, delete, stat or streamed put: res is 0 or -errno; a
 * successful put or stat passes `st` (size, crc32c, sequence, version), a
 * successful versioned delete `st` with tomb set and its sequence and
 * version, others NULL. res -EALREADY (versioned writes): the store holds
 * that version or a newer one for the key and nothing was written; st
 * gives the version held and whether it is a tombstone (size, crc and seq
 * are 0: not read).
 */
typedef void (*node_store_cb)(void *arg, int res, const struct node_store_objstat *st);

/*
 * The bytes a get read, in the store's read buffer: `data`/`len` are the
 * value (or the range). The other members are the store's.
 */
struct node_store_rbuf {
	const void *data;
	size_t len;
	/* private */
	void *mem;              /* the aligned buffer data points into */
	size_t cap;             /* its size */
	struct node_store *s;   /* the store whose buffer cache it returns to */
};

/*
 * Completion of a get. On success *rb is the read buffer (st: size, crc32c
 * and sequence of the whole value); on failure *rb is NULL. The buffer is
 * the store's unless the callback takes it: it copies the pointer and sets
 * *rb = NULL; it then owns it and gives it back with
 * node_store_rbuf_release(), before node_store_close(). A buffer left in
 * *rb is released when the callback returns.
 */
typedef void (*node_store_get_cb)(void *arg, int res, struct node_store_rbuf **rb,
				  const struct node_store_objstat *st);

/* Give a taken read buffer back to its store. NULLs *rb; accepts NULL. */
void node_store_rbuf_release(struct node_store_rbuf **rb);

/* Queue a put. `val` must stay valid until the callback runs. */
int node_store_put_async(struct node_store *s, const void *key, size_t klen, const void *val,
			 size_t vlen, node_store_cb cb, void *arg);
int node_store_delete_async(struct node_store *s, const void *key, size_t klen,
			    node_store_cb cb, void *arg);
/* Read [off, off+len) of the value (len UINT64_MAX: to the end). */
int node_store_get_async(struct node_store *s, const void *key, size_t klen, uint64_t off,
			 uint64_t len, node_store_get_cb cb, void *arg);

/* Size, crc, sequence and version of a key; st is passed to cb.
 * -ENOENT (returned) for a key that is absent or a tombstone. */
int node_store_stat_async(struct node_store *s, const void *key, size_t klen, node_store_cb cb,
			  void *arg);

/*
 * Versioned put and delete: stored only if `ver` (not (0, 0): -EINVAL) is
 * newer than what the store holds for the key, object or tombstone,
 * decided when the record is ordered into the log. Else cb gets -EALREADY
 * and st says what is held (above). A key whose newest version is damaged
 * takes its own version again (a repair), never an older one. The delete
 * needs no object: it leaves a tombstone at `ver` either way; its st
 * (success) has tomb set. `val` must stay valid until the callback runs.
 */
int node_store_put_ver_async(struct node_store *s, const void *key, size_t klen,
			     const void *val, size_t vlen, const struct node_store_ver *ver,
			     node_store_cb cb, void *arg);
int node_store_delete_ver_async(struct node_store *s, const void *key, size_t klen,
				const struct node_store_ver *ver, node_store_cb cb, void *arg);

/*
 * Like node_store_stat_async(), and a tombstone answers too: res 0 with
 * st->tomb set, st->ver its version, st->size 0. -ENOENT (returned) only
 * when the store knows nothing of the key. cb runs from the store's work,
 * never inside this call.
 */
int node_store_stat_any_async(struct node_store *s, const void *key, size_t klen,
			      node_store_cb cb, void *arg);

/*
 * Tombstone GC: forget the key's tombstone if it is still exactly `ver`
 * (checked again when the record goes into the log, and when it is
 * durable). A DROP record is written; the tombstone leaves the index when
 * that is durable (normally within the commit window; node_store_sync()
 * waits for it), and its TOMB record is then garbage for compaction. A
 * crash before that leaves the tombstone (drop it again). Returns 0
 * (queued), -ENOENT (the key holds no tombstone of that version now),
 * -EINVAL, -EROFS. When to call it is the caller's business.
 */
int node_store_tomb_drop(struct node_store *s, const void *key, size_t klen,
			 const struct node_store_ver *ver);

/*
 * ---- streamed puts ----
 *
 * A put whose value arrives in pieces, with memory bounded by two write
 * buffers (write_buffer_bytes each) whatever its size:
 * node_store_stream_begin() with the key and the value's size, then
 * node_store_stream_write() for the bytes in order, then
 * node_store_stream_finish() with the whole value's crc32c. The object
 * becomes visible, and durable, only when finish's callback reports
 * success: a crash or an abort before that leaves the key as it was, and
 * the space for compaction. docs/FORMAT.md (RESV and COMMIT records).
 */
struct node_store_stream;

/* 0 or -errno (-E2BIG, -EROFS, -EINVAL). `ready(arg)` (may be NULL) is
 * called once when a write that accepted less than it was given can take
 * more (or has failed: the next write returns the error). */
int node_store_stream_begin(struct node_store *s, const void *key, size_t klen, uint64_t size,
			    void (*ready)(void *arg), void *arg, struct node_store_stream **out);

/* Copy up to len bytes of the value. Returns how many were taken (fewer
 * than len, maybe 0, while both buffers are on their way to the drive: wait
 * for `ready`), or -errno (-EINVAL beyond the declared size, -EROFS...). */
ssize_t node_store_stream_write(struct node_store_stream *st, const void *buf, size_t len);

/* Memory one stream holds, in bytes (for budgets). */
size_t node_store_stream_bytes(const struct node_store *s);

/* crc32c of the bytes written so far. */
uint32_t node_store_stream_crc(const struct node_store_stream *st);

/*
 * Every byte written: if the value's crc32c is `crc`, commit it; cb runs
 * when it is durable (with size, crc and sequence) or has failed. Returns 0,
 * or -errno with nothing stored and cb never called: -EBADMSG the crc does
 * not match, -EINVAL bytes are missing, or the stream's earlier error.
 * Consumes the stream and NULLs *st in every case.
 */
int node_store_stream_finish(struct node_store_stream **st, uint32_t crc, node_store_cb cb,
			     void *arg);

/* The same, for a versioned put (`ver` not (0, 0)): the version is checked
 * when the COMMIT is ordered into the log; an older or equal one completes
 * with -EALREADY (cb), the streamed bytes left as dead space. */
int node_store_stream_finish_ver(struct node_store_stream **st, uint32_t crc,
				 const struct node_store_ver *ver, node_store_cb cb, void *arg);

/* Give up (disconnect, bad payload): nothing becomes visible. NULLs *st;
 * accepts NULL. */
void node_store_stream_abort(struct node_store_stream **st);

/*
 * Own ring: submit queued work, reap the store's ring and run callbacks;
 * with wait, block until something completes. Shared loop: only the work
 * the before-sleep hook does (acknowledge, start batches and flushes, arm
 * the commit window's timer); never waits, never runs or reaps the loop,
 * so it never dispatches anyone's completion. Returns 0 or -errno.
 */
int node_store_poll(struct node_store *s, bool wait);

/* Operations queued or in flight. */
unsigned node_store_pending(const struct node_store *s);

/* Nothing queued and no I/O in flight: on a shared loop, the store may be
 * closed, and blocking calls may be made. */
bool node_store_idle(const struct node_store *s);

/* ---- blocking interface ----
 *
 * On a shared loop: only while node_store_idle() is true, else -EBUSY
 * (see the top of this file). */

int node_store_put(struct node_store *s, const void *key, size_t klen, const void *val,
		   size_t vlen);
/* Whole value into a malloc'd buffer *val (caller frees), *vlen its size. */
int node_store_get(struct node_store *s, const void *key, size_t klen, void **val,
		   size_t *vlen);
/* Up to `len` bytes from `off` into buf; *got receives the count. */
int node_store_get_range(struct node_store *s, const void *key, size_t klen, uint64_t off,
			 uint64_t len, void *buf, size_t *got);
int node_store_delete(struct node_store *s, const void *key, size_t klen);
int node_store_stat(struct node_store *s, const void *key, size_t klen,
		    struct node_store_objstat *st);
/* Versioned, blocking: 0, -EALREADY (st, if not NULL, says what is held),
 * or -errno. On success st (if not NULL) is what was stored. */
int node_store_put_ver(struct node_store *s, const void *key, size_t klen, const void *val,
		       size_t vlen, const struct node_store_ver *ver, struct node_store_objstat *st);
int node_store_delete_ver(struct node_store *s, const void *key, size_t klen,
			  const struct node_store_ver *ver, struct node_store_objstat *st);
int node_store_stat_any(struct node_store *s, const void *key, size_t klen,
			struct node_store_objstat *st);

/*
 * Where the newest record of a key is on the drive (for tests and repair
 * tools): its device offset and its size in bytes, padding included (a
 * tombstone's record too). 0, -ENOENT, or -EIO when the key's newest
 * version is damaged.
 */
int node_store_locate(struct node_store *s, const void *key, size_t klen, uint64_t *off,
		      uint64_t *size);

/*
 * Keys in byte order that start with `prefix` and sort after `start_after`
 * (NULL/0: from the start), at most `limit`. cb is called per key and may
 * stop the walk by returning non-zero. Returns the number of keys given.
 */
typedef int (*node_store_list_cb)(void *arg, const void *key, size_t klen);
int node_store_list(struct node_store *s, const void *prefix, size_t plen,
		    const void *start_after, size_t salen, unsigned limit,
		    node_store_list_cb cb, void *arg);

/* The same walk over objects and tombstones (node_store_list() hides
 * tombstones), each with its version ((0, 0): none) and tomb bit; `limit`
 * counts both. Returns the number of entries given. */
typedef int (*node_store_list_ver_cb)(void *arg, const void *key, size_t klen,
				      const struct node_store_ver *ver, bool tomb);
int node_store_list_ver(struct node_store *s, const void *prefix, size_t plen,
			const void *start_after, size_t salen, unsigned limit,
			node_store_list_ver_cb cb, void *arg);

/* Make everything written so far durable. */
int node_store_sync(struct node_store *s);

/* Write a checkpoint now (normally done every ckpt_records records). */
int node_store_checkpoint(struct node_store *s);

/*
 * Compaction runs by itself in the background (from node_store_poll() or,
 * on a shared loop, the store's before-sleep hook), in bounded steps: when
 * free segments run low it empties the eligible segment with the most
 * garbage, moving its live records through the log as RELOC records
 * (applied only if the key still points at the copy's source, so a put or
 * delete racing it always wins), and the segment is reused only once those
 * are durable and two checkpoints are past it. Checkpoints are also started
 * for space, so that segments emptied by overwrites and deletes come free
 * within about a second. A put that needs a new segment when only the
 * reserve is left waits while compaction can still free one, and fails
 * with -ENOSPC only when it cannot: then node_store_stats() says `full`
 * until deletes bring space back, and every put is refused meanwhile.
 * A put is also refused when live bytes would pass usable_bytes.
 */

/*
 * The most memory compaction holds at once, in bytes, whatever the record
 * sizes: records up to compact_piece_bytes are moved whole (two queued and
 * one being read at most), larger ones in pieces of compact_piece_bytes
 * through a streamed region (node_store_stream_bytes()); never both at
 * their peaks at once. About 4 MiB with the defaults.
 */
size_t node_store_compact_mem_max(const struct node_store *s);

/* Compact the eligible segment with the most garbage now. Returns 1 if one
 * was compacted, 0 if none was eligible, or -errno. */
int node_store_compact(struct node_store *s);

/* Make room after -ENOSPC: two checkpoints release old segments, then the
 * emptiest segments are compacted. 1 if space came free, 0 if not, -errno. */
int node_store_reclaim(struct node_store *s);

struct node_store_scrub_report {
	uint64_t records;   /* records verified in this call */
	uint64_t bytes;     /* bytes read */
	uint64_t errors;    /* checksum mismatches or read errors found */
	bool wrapped;       /* the walk reached the end and starts over next call */
};

/* Verify the next `budget_bytes` of live records (header and value
 * checksums), resuming where the last call stopped. */
int node_store_scrub(struct node_store *s, uint64_t budget_bytes,
		     struct node_store_scrub_report *r);

/* A key whose newest version scrub found damaged, or could not read (one
 * of r->errors): valid during the call only. */
typedef void (*node_store_scrub_damaged_fn)(void *arg, const void *key, size_t klen);

/* node_store_scrub() that names each key it counts in r->errors through
 * damaged(arg, ...) (may be NULL), called inside this call. */
int node_store_scrub_keys(struct node_store *s, uint64_t budget_bytes,
			  struct node_store_scrub_report *r, node_store_scrub_damaged_fn damaged,
			  void *arg);

struct node_store_stats {
	uint64_t objects;           /* keys holding an object (tombstones aside) */
	uint64_t tombstones;        /* versioned tombstones in the index */
	uint64_t live_bytes;        /* record bytes of live objects */
	uint64_t capacity_bytes;    /* bytes of all segments */
	uint64_t segments, segments_free, segments_reserved;
	uint64_t usable_bytes;      /* capacity less the compaction reserve: puts
				     * are refused once live bytes would pass it */
	bool full;                  /* puts are refused (-ENOSPC) until deletes or
				     * compaction bring space back */
	bool nearly_full;           /* full, or live bytes above 90% of usable_bytes */
	uint64_t relocations;       /* records moved by compaction */
	uint64_t relocations_streamed; /* of those: larger than compact_piece_bytes,
				     * moved in pieces through a RESV region */
	uint64_t compaction_bytes;  /* memory compaction holds now */
	uint64_t compaction_bytes_peak; /* the most it held at once since open; never
				     * above node_store_compact_mem_max() */
	uint64_t space_waits;       /* puts that waited for compaction to free a segment */
	uint64_t space_refusals;    /* puts refused with -ENOSPC */
	uint64_t index_bytes;       /* RAM held by the index, keys included */
	double index_bytes_per_object; /* per key, tombstones included */
	uint64_t puts, gets, deletes, flushes, batches;
	uint64_t checksum_errors;   /* damaged records found by reads, scrub and
				     * compaction, over the drive's life (kept in the
				     * flush frontier): each counts once, when found
				     * while it is its key's newest version; the key
				     * is then marked damaged, durably (a DAMAGE
				     * record) before the read answers -EIO */
	uint64_t damaged_reads;     /* since open: gets, stats and scrub reads
				     * answered -EIO because of damage (a record
				     * failing its checks, or a key marked damaged) */
	uint64_t read_errors;       /* since open: reads the drive itself failed (i/o
				     * error, short read): answered -EIO, nothing
				     * marked, the bytes may well be sound */
	uint64_t damaged_records;   /* log records recovery found damaged (not a torn
				     * tail), over the drive's life */
	uint64_t damaged_unknown;   /* of those found at this open: whose key could not
				     * be known (header destroyed) */
	uint64_t damaged_objects;   /* keys whose newest version is damaged: they answer
				     * -EIO until a put or delete replaces them */
	uint64_t frontier_seq;      /* flush frontier: every record up to it is durable */
	bool frontier_lost;         /* no valid frontier copy at open: a failed record
				     * after the checkpoint was taken for the log's end */
	uint64_t cache_rereads;     /* page-cache reads that failed a check and were
				     * read again from the drive */
	uint64_t checkpoints, compactions, recovered_records, discarded_tail_bytes;
	uint64_t seq;               /* last sequence number */
	uint64_t idle_releases;     /* times idle memory was given back (write and read buffers, heap) */
	bool read_only;             /* after an I/O failure */
	bool repaired_superblock;   /* a damaged superblock copy was rewritten at open */
	bool checkpoint_fallback;   /* the newest checkpoint was damaged: recovery
				     * started from the one before it */
	bool checkpoint_repaired;   /* open rewrote a damaged or stale checkpoint
				     * pointer copy, or took a checkpoint to replace
				     * a damaged one */
	uint32_t upgraded_from;     /* format version this open upgraded the drive
				     * from (0: none) */
	char read_only_reason[160];
};

void node_store_stats(const struct node_store *s, struct node_store_stats *st);

#endif
