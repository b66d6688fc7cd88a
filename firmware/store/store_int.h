/*
 * The store engine's own header: what its files (store.c, store_ckpt.c,
 * store_read.c, store_stream.c, store_recover.c) share. Not for use
 * outside firmware/store/.
 */
#ifndef NODE_STORE_INT_H
#define NODE_STORE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "index.h"
#include "record.h"
#include "store.h"

#define SB_MAGIC "SHELFST1"
#define SB_VERSION 4u
#define SB_VERSION_MIN 1u  /* versions 1 to 3 are read, and upgraded to 4 at open (FORMAT.md §2) */
#define SB_COPY_OFF(i) ((uint64_t)(i) * DISK_BLOCK_BYTES)       /* blocks 0 and 1 */
#define PTR_SLOT_OFF(i) ((uint64_t)(2 + (i)) * DISK_BLOCK_BYTES) /* blocks 2 and 3 */
/* mirrors of the two slots, blocks 6 and 7 (format version 3) */
#define PTR_MIRROR_OFF(i) ((uint64_t)(6 + (i)) * DISK_BLOCK_BYTES)
#define PTR_MAGIC "SHELFCP1"
#define FR_MAGIC "SHELFFR1"
#define FR_SLOT_OFF (4u * DISK_BLOCK_BYTES) /* blocks 4 and 5: two identical copies */
#define FR_BYTES (2u * DISK_BLOCK_BYTES)
#define FR_VOIDS_MAX 256u
#define FR_JUMPS_MAX 64u
#define FR_JUMPS_OFF (64u + 8u * FR_VOIDS_MAX) /* jump list, after the largest void list */
/* A recovery's first record jumps this far past every sequence number the
 * crashed life may have placed; a life places at most SEQ_AHEAD_MAX
 * records beyond its durable frontier (FORMAT.md §4). */
#define SEQ_JUMP (1ull << 32)
#define SEQ_AHEAD_MAX (1ull << 24)
#define DAMAGED_LOC_SIZE 0 /* an index entry whose size part is 0: newest version damaged */
#define DATA_START_BYTES (1u << 20)
#define CKPT_PART_BYTES (1u << 20)
#define REPLAY_WINDOW_BYTES (1u << 20)
#define SMALL_READ_BYTES (256u << 10)
#define IDLE_RELEASE_NS 1000000000ull /* idle this long: give memory back */
#define STORE_FLUSHES_MAX 2           /* fdatasyncs in flight at once */
#define LOC_LEN_BITS 23
_Static_assert(LOC_LEN_BITS == SIDX_LOC_SPLIT, "the index stores a loc's size bits apart");
_Static_assert(NODE_STORE_KEY_MAX <= SIDX_KEY_MAX, "the index holds every key");
#define SEG_FREE 0
#define SEG_USED 1
#define SEG_HEAD 2
#define CK_ITEM_SEG 1
#define CK_ITEM_KEY 2
#define CK_ITEM_VKEY 3   /* format 4: a key with a version, or a tombstone */
#define CK_VKEY_BYTES 28u /* a CK_ITEM_VKEY item less its key */
#define CK_KEY_BYTES 11u  /* a CK_ITEM_KEY item less its key */

enum op_kind { OP_PUT, OP_DEL, OP_RELOC, OP_NEXT, OP_CKPT_PART, OP_CKPT_END, OP_GET, OP_STAT,
	       OP_RESV, OP_COMMIT, OP_DAMAGE, OP_DROP };

/* A record on its way into the log (every kind but OP_GET and OP_STAT). */
struct op_rec {
	const uint8_t *val;     /* the record's value: borrowed (put) or owned_val */
	uint64_t vlen;
	uint8_t *owned_val;
	bool started;           /* placed: pos, seq and hdr are set */
	uint8_t hdr[REC_HDR_MAX_BYTES]; /* header, and the version extension when flagged */
	uint8_t *table;         /* chunk crcs, while it is copied */
	size_t tlen;
	uint64_t pos;           /* device offset */
	uint64_t rsize;         /* record bytes */
	uint64_t copied;        /* bytes copied into write buffers */
	uint64_t seq;
	uint64_t last_buf;      /* id of the write buffer holding its last byte */
	uint64_t queued_ns;     /* when it entered the commit queue */
};

enum read_stage {
	READ_WHOLE,   /* the whole record in one read */
	READ_HEAD,    /* header and chunk table of a large value first */
	READ_CHUNKS,  /* then the chunks that cover the range */
};

/* A get or a stat. */
struct op_read {
	uint64_t loc;           /* the record, from the index */
	uint64_t off, len;      /* the range asked for (narrowed to the value) */
	enum read_stage stage;
	uint64_t vlen;          /* READ_CHUNKS: the value's size */
	struct node_store_objstat st; /* READ_CHUNKS: size, crc and sequence (from the header) */
	uint64_t val_off;       /* READ_CHUNKS: device offset of its first byte */
	uint8_t *table;         /* READ_CHUNKS: its chunk crcs */
	size_t tlen;
	uint8_t *buf;           /* the read buffer (from the buffer cache) */
	size_t buflen;
	uint64_t base;          /* device offset of buf[0] */
	struct node_disk_io io;
};

struct op {
	enum op_kind kind;
	struct node_store *s;
	uint8_t *key;           /* owned copy (kinds with a key) */
	size_t klen;
	node_store_cb cb;       /* every kind but OP_GET */
	node_store_get_cb get_cb; /* OP_GET */
	void *arg;
	struct op_rec rec;      /* kinds that write a record */
	/* the version the record carries ((0, 0): none; OP_PUT, OP_DEL,
	 * OP_COMMIT, OP_DROP, OP_RELOC); with `tomb`, a RELOC copies a tombstone */
	struct node_store_ver ver;
	bool tomb;
	/* -EALREADY: what the store held (versioned writes); OP_STAT answered
	 * from the index (a tombstone): its result */
	struct node_store_objstat held;
	union {
		struct {
			uint64_t from;      /* the loc it moves; applied only if still current */
			size_t held;        /* bytes of owned_val counted in sp.mem */
		} reloc;                    /* OP_RELOC */
		struct {
			uint64_t loc;       /* the record found damaged; marked only if still current */
			struct op *waiters; /* reads answered -EIO once it is durable (chained by next) */
		} damage;                   /* OP_DAMAGE */
		struct {
			uint32_t seg;       /* the segment the log continues in */
		} next;                     /* OP_NEXT */
		struct {
			uint64_t p0_seq;    /* the checkpoint's first sequence number */
		} ckpt;                     /* OP_CKPT_PART, OP_CKPT_END */
		struct {
			struct node_store_stream *stream; /* until placed */
			uint64_t region_len; /* bytes reserved after the record */
			bool move;          /* compaction's: not a put (no admission) */
		} resv;                     /* OP_RESV */
		struct {
			/* its stream until every write of the region has
			 * completed (serialize waits for it) */
			struct node_store_stream *stream;
			uint64_t loc;       /* the streamed record, once written */
			uint64_t seq;       /* the streamed record's sequence number */
			uint64_t from;      /* a move's: the record it copies (0: a put) */
			int err;            /* < 0: the stream failed; fail the commit */
		} commit;                   /* OP_COMMIT */
		struct op_read rd;          /* OP_GET, OP_STAT */
	} u;
	struct op *next;
};

struct wbuf {
	uint8_t *mem;
	uint64_t off;       /* device offset of mem[0] */
	size_t fill;
	size_t limit;       /* ends at a multiple of the buffer size on the device */
	uint64_t id;        /* acquisition order = submission order */
	uint64_t born_ns;
	bool busy, inflight;
	struct node_disk_io io;
	struct node_store *s;
};

struct seg {
	uint64_t live;      /* bytes of live PUT records */
	uint64_t max_seq;   /* newest record written into it */
	uint64_t waste;     /* bytes after its last record, left when the log moved on
			     * (0: not known, after a restart) */
	uint64_t maxrec;    /* largest record placed in it since open (0: not known) */
	uint8_t state;
	bool data;          /* objects were written into it (not only checkpoints) */
	bool skip;          /* a compaction left something in it (damage): not
			     * picked again until more of it dies */
	uint32_t streams;   /* streamed puts writing into it: not reclaimed */
};

struct opq {
	struct op *head, *tail;
	unsigned n;
};

struct ckpt_part {
	uint64_t off;
	uint32_t size;
};


/* Checkpoints (store_ckpt.c): the one being written, and the two that
 * recovery may start from. */
struct store_ckpt {
	int state;              /* CK_* */
	uint64_t gen;           /* generation of the newest pointer written */
	uint64_t new_p0_seq, old_p0_seq; /* first sequence numbers of the two */
	uint64_t records_since; /* records placed since the last one began */
	uint64_t replayed;      /* records recovery found after the checkpoint it
				 * started from (checkpoint records aside), until
				 * the next one begins: a clean close takes one */
	/* the one being written: where its replay starts (P0) */
	uint64_t p0_off, p0_seq;
	uint32_t p0_prev;
	uint32_t seg_cursor;    /* next segment to list */
	uint8_t *key;           /* last key listed (NODE_STORE_KEY_MAX bytes) */
	size_t klen;
	bool keys_started, keys_done;
	struct op *part_pending; /* the part queued and not yet placed */
	struct ckpt_part *parts; /* parts placed, for the END record */
	uint32_t nparts, capparts;
	uint64_t items;
	bool repair;            /* recovery could not use the newest checkpoint, or lost
				 * a slot: open takes a checkpoint before it returns */
	uint8_t *ptrbuf;        /* one aligned block: pointer slots, superblocks */
	struct node_disk_io io; /* the pointer's write, then flush */
	int err;
};

/* Reads (store_read.c): the read buffers kept for reuse (a fresh aligned
 * megabyte costs page faults and a TLB shootdown on every get), and the
 * scrub's place. */
struct store_reads {
	struct rbuf_free {
		void *mem;
		size_t cap;
	} *cache;
	unsigned ncache, capcache;
	size_t cache_bytes;
	unsigned inflight;      /* reads on the device */
	uint8_t *scrub_key;     /* the last key scrubbed */
	size_t scrub_klen;
	bool scrub_started;
};

/* Streamed puts (store_stream.c). */
struct store_streams {
	struct node_store_stream *list; /* open (or draining) */
	unsigned ios;           /* their writes in flight */
};

/*
 * The flush frontier (FORMAT.md §4): every record with seq <= D is durable.
 * Written to blocks 4 and 5 after a flush made new records durable, and
 * flushed; a record is acknowledged only once a frontier covering it is.
 * With it recovery tells a damaged record (seq <= D) from a torn tail.
 */
struct store_frontier {
	int state;              /* FR_IDLE, FR_WRITE, FR_FLUSH */
	uint64_t want;          /* highest durable seq waiting to be recorded */
	uint64_t writing;       /* D of the write or flush in flight */
	uint64_t durable;       /* D of the newest frontier made durable */
	uint64_t loaded;        /* D found at open (0: none) */
	uint64_t damage_seq;    /* newest damaged record already counted */
	unsigned damage_pending; /* DAMAGE records placed and not yet applied */
	uint8_t *buf;           /* FR_BYTES, aligned */
	struct node_disk_io io;
	/* COMMITs recovery found with their region missing above the
	 * frontier (never acknowledged): below it later, they are still void,
	 * not damage. Kept while a checkpoint's replay may meet them. */
	uint64_t voids[FR_VOIDS_MAX];
	unsigned nvoids;
	/* Jumps (FORMAT.md §4): at `from` the log went on at `to`; no record
	 * of the log has a seq in [from, to), and what the drive holds there
	 * is from a crashed life. Kept while a checkpoint's replay may pass
	 * `from`. */
	struct fr_jump {
		uint64_t from, to;
	} jumps[FR_JUMPS_MAX];
	unsigned njumps;
	bool jump_pending;      /* the next record placed carries REC_FLAG_JUMP */
	uint64_t jump_base;     /* seq before the jump's target (placement gate) */
};
enum { FR_IDLE, FR_WRITE, FR_FLUSH };

/*
 * Space (store_space.c): background compaction, reclaim, and the admission
 * of puts. A put that needs a new segment while only the reserve is left
 * waits in `held` while compaction can still free one, and fails with
 * ENOSPC (the store is then `full`) when it cannot.
 */
struct store_space {
	uint64_t live;          /* sum of the segments' live bytes */
	uint64_t placed;        /* log bytes placed since open */
	uint64_t max_rec;       /* largest record placed since open */
	struct opq held;        /* puts (and ops on their keys) waiting for a segment */
	bool full;              /* puts are refused until space comes back */
	uint64_t full_live;     /* live bytes when it became full */
	bool dirty;             /* something changed: look at the segments again */
	bool stopped;           /* closing: no new background work */
	uint64_t next_scan_ns;
	/* the checkpoints space asks for */
	uint64_t ck_placed, ck_began_ns;
	/* the compaction under way */
	int64_t victim;         /* segment being emptied, -1 none */
	uint8_t *cursor;        /* last key looked at (NODE_STORE_KEY_MAX bytes) */
	size_t cursor_len;
	bool cursor_set, scan_done;
	bool victim_damaged;    /* a record could not be moved: it stays */
	unsigned relocs;        /* RELOC records queued, not yet applied */
	bool reading;           /* a live record's read is in flight */
	struct node_disk_io io;
	uint8_t *rkey;          /* its key (NODE_STORE_KEY_MAX bytes) */
	size_t rklen;
	uint64_t rloc;          /* its location */
	uint8_t *rbuf;          /* the blocks it reads into */
	size_t rbuf_bytes;      /* their size (counted in mem) */
	/* a record larger than compact_piece_bytes, moved in pieces through a
	 * streamed region (store_space.c, "moves") */
	struct store_move {
		bool active;        /* rkey/rloc name the record moved */
		bool reading;       /* a read of it is in flight */
		bool feeding;       /* in feed(): a ready callback must not re-enter */
		bool committing;    /* finished: its COMMIT is on its way */
		struct node_store_stream *st; /* the copy, until finished */
		size_t st_bytes;    /* what the stream holds (counted in mem) */
		struct node_disk_io io;
		uint64_t vlen;      /* the value's bytes */
		uint64_t val_off;   /* device offset of its first byte */
		uint32_t vcrc;      /* its crc32c, from the verified header */
		uint8_t *table;     /* its chunk crcs (verified through hcrc) */
		size_t tlen;
		uint8_t *buf;       /* one piece, block-aligned */
		size_t buf_bytes;
		uint64_t base, len; /* value bytes [base, base+len) are in buf ... */
		uint64_t skip;      /* ... from buf[skip] */
		uint64_t fed;       /* of those, given to the stream */
	} mv;
	uint64_t mem, mem_peak; /* bytes compaction holds (stats) */
};

struct store_timer;

struct node_store {
	struct node_disk *disk;
	struct node_loop *loop; /* the shared loop (NULL: the store owns its ring) */
	unsigned blocking;      /* nesting of blocking calls: on a shared loop,
				 * their I/O is direct (node_disk_direct()) */
	struct store_timer *timer; /* shared loop only */
	bool hooked;            /* store_hook() is registered on the loop */
	struct node_store_opts o;
	struct node_clock clock;
	char err[256];
	/* superblock */
	uint8_t uuid[16];
	uint64_t seg_bytes, data_start, created_at;
	uint32_t nsegs;
	uint32_t sb_version;  /* as found at open (upgraded to SB_VERSION by recovery) */
	struct seg *segs;
	uint32_t nfree;
	/* log */
	uint64_t head;        /* device offset of the next record */
	uint32_t chain;       /* hcrc of the last record placed */
	uint64_t seq;         /* last sequence number placed */
	uint64_t seq_done;    /* last sequence number applied */
	struct sidx *ix;
	struct opq appendq, commitq;
	struct opq doneq;     /* answered without I/O: callbacks run from the store's work */
	/* buffers */
	struct wbuf *bufs;
	unsigned nbufs;
	struct wbuf *cur;
	uint64_t next_buf_id, durable_buf_id;
	/* flushes in flight, each covering the write buffers up to its target
	 * (those completed when it was issued); a second one may start while
	 * the first is on the device, so a record never waits for a whole
	 * flush that began before it was written plus its own */
	struct {
		struct node_disk_io io;
		uint64_t target;
		bool busy;
	} flush[STORE_FLUSHES_MAX];
	unsigned flush_inflight;
	uint64_t flush_issued;  /* highest target of any flush issued */
	/* state */
	bool read_only;
	char ro_reason[160];
	struct store_ckpt ck;
	struct store_frontier fr;
	struct store_reads reads;
	struct store_streams streams;
	struct store_space sp;
	/* idle: since when (0: busy), and whether memory was given back */
	uint64_t idle_since_ns;
	bool released;
	struct node_store_stats st;
};

enum { CK_IDLE, CK_WAIT, CK_PARTS, CK_END, CK_PTR_WRITE, CK_PTR_MIRROR, CK_PTR_FLUSH };

/*
 * A streamed put (node_store_stream_*). A RESV record reserves a region of
 * the log, from the block after it, for the whole record; the value goes
 * into the region through `b[]` as it arrives, block-aligned writes of the
 * store's write-buffer size. The region's first blocks (`head`: header,
 * key, chunk table and the value's first bytes) are written at finish,
 * once the checksums are known; when every write of the region has
 * completed, a COMMIT record goes through the log like any put and, once
 * durable, points the index at the streamed record. Until then nothing is
 * visible, and after an abort the region is dead space for compaction.
 */
struct sbuf {
	uint8_t *mem;
	size_t mem_cap;     /* bytes allocated (a reused buffer can be larger) */
	uint64_t roff;      /* region offset of mem[0] */
	size_t fill, cap;
	int state;          /* SB_FREE, SB_FILL, SB_FULL (waits for a place), SB_IO */
	struct node_disk_io io;
};
enum { SB_FREE, SB_FILL, SB_FULL, SB_IO };

struct node_store_stream {
	struct node_store *s;
	uint8_t *key;
	size_t klen;
	uint64_t vlen, got;     /* value bytes declared, received */
	uint32_t crc, ccrc;     /* running crc32c of the value, of its current 64 KiB chunk */
	uint8_t *table;         /* per-chunk crcs, as in every record */
	size_t tlen, hlen;      /* hlen: header + key + table bytes */
	uint64_t rsize, region_len;
	struct op *resv;        /* the RESV op until it is placed */
	bool placed, finishing, released, committed, head_io, head_done;
	bool pinned;            /* holds its segment's `streams` count */
	bool kick;              /* placed or failed: advance it from the poll loop */
	uint64_t region_off, seq, next_roff;
	uint32_t prev, seg, hcrc;
	uint8_t *head;          /* the region's first head_len bytes */
	size_t head_len;
	struct node_disk_io head_io_req;
	struct sbuf b[2];
	unsigned cur;           /* the buffer being filled */
	unsigned ios;           /* writes in flight */
	int err;
	uint32_t want_crc;
	uint64_t move_from;     /* compaction's copy of the record there (0: a put) */
	struct node_store_ver ver; /* what its record's extension says (every streamed
				 * record has one; set at finish for a put) */
	struct op *commit;      /* queued at finish, released when the region is written */
	void (*ready)(void *arg);
	void *ready_arg;
	bool want_ready;
	struct node_store_stream *next;
};

/* What a superblock copy holds (store_sb_check()). */
enum sb_verdict { SBV_OK, SBV_ZERO, SBV_FOREIGN, SBV_CORRUPT, SBV_VERSION };

/* A blocking call waiting for its operation (store_wait_for()). */
struct store_waiter {
	bool done;
	int res;
	void *buf;       /* get: destination (malloc'd when want_alloc) */
	size_t cap, got;
	bool want_alloc;
	struct node_store_objstat st;
};

/* ---- small helpers ---- */

static inline uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }
static inline uint64_t align_down(uint64_t v, uint64_t a) { return v & ~(a - 1); }

static inline bool ver_is_set(const struct node_store_ver *v) { return v->hlc || v->node; }

/* A record's place and size in one word, as the index keeps it. */
static inline uint64_t loc_make(uint64_t off, uint64_t size)
{
	return (off >> 4) << LOC_LEN_BITS | size >> 4;
}
static inline uint64_t loc_off(uint64_t loc) { return (loc >> LOC_LEN_BITS) << 4; }
static inline uint64_t loc_size(uint64_t loc) { return (loc & ((1u << LOC_LEN_BITS) - 1)) << 4; }
/* The index's mark for a key whose newest record failed its checks at
 * recovery: the record's offset, size 0 (no record is that small). */
static inline uint64_t loc_damaged(uint64_t off) { return loc_make(off, DAMAGED_LOC_SIZE); }
static inline bool loc_is_damaged(uint64_t loc) { return loc_size(loc) == 0; }

static inline uint32_t seg_of(const struct node_store *s, uint64_t off)
{
	return (uint32_t)((off - s->data_start) / s->seg_bytes);
}
static inline uint64_t seg_start(const struct node_store *s, uint32_t i)
{
	return s->data_start + (uint64_t)i * s->seg_bytes;
}
/* Records end at or before this; the last block is kept for a NEXT record. */
static inline uint64_t seg_limit(const struct node_store *s, uint32_t i)
{
	return seg_start(s, i) + s->seg_bytes - DISK_BLOCK_BYTES;
}

/* store.c: the write path, the loop, open and close */
void store_set_err(struct node_store *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
uint64_t store_now_ns(struct node_store *s);
void *store_alloc_blocks(size_t len);
void store_q_push(struct opq *q, struct op *op);
void store_op_free(struct op *op);
struct op *store_op_new(struct node_store *s, enum op_kind kind, const void *key, size_t klen);
/* Stop accepting writes after an I/O failure, saying why. */
void store_go_read_only(struct node_store *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void store_seg_live_add(struct node_store *s, uint64_t loc, int64_t sign);
void store_reclaim_segments(struct node_store *s);
void store_close_batch(struct node_store *s);
int store_blocking_begin(struct node_store *s);
void store_blocking_end(struct node_store *s);
int store_check_key(struct node_store *s, const void *key, size_t klen);
void store_waiter_cb(void *arg, int res, const struct node_store_objstat *st);
int store_wait_for(struct node_store *s, struct store_waiter *w);

/* store_ckpt.c: checkpoints */
void store_ptr_pack(uint8_t *p, uint64_t gen, uint64_t p0_off, uint64_t p0_seq, uint32_t p0_prev,
		     uint64_t end_off, uint64_t end_size, uint32_t end_hcrc);
void store_ckpt_end_durable(struct node_store *s, struct op *op);
void store_ckpt_step(struct node_store *s);
/* Begin a checkpoint now (0), or -EBUSY/-EAGAIN/-EROFS. */
int store_ckpt_begin(struct node_store *s);

/* store_space.c: compaction, reclaim and the admission of puts */
int store_space_init(struct node_store *s);
void store_space_release(struct node_store *s);
/* A put or RESV of `span` log bytes: 0 place it, 2 hold it (a segment may
 * come free), or -ENOSPC (err set). need_seg: it needs a new segment. */
int store_space_admit(struct node_store *s, struct op *op, uint64_t span, bool need_seg);
void store_space_hold(struct node_store *s, struct op *op);
/* An op of the same key as a held one must wait behind it. */
bool store_space_key_held(const struct node_store *s, const void *key, size_t klen);
/* Take a never-placed op out of the held queue. true if it was there. */
bool store_space_unhold(struct node_store *s, struct op *op);
/* Background work: reclaim, checkpoints for space, compaction steps. */
void store_space_step(struct node_store *s);
/* More CPU work waits (an index scan): the loop should not sleep. */
bool store_space_busy(const struct node_store *s);
/* Count bytes compaction allocates (+) or frees (-). */
void store_space_mem(struct node_store *s, int64_t delta);
uint32_t store_space_reserve(const struct node_store *s);
uint64_t store_space_usable(const struct node_store *s);
int store_space_compact_blocking(struct node_store *s);
/* the op queues (store.c) */
struct op *store_q_pop(struct opq *q);
void store_op_finish(struct node_store *s, struct op *op, int res);

/* store_ckpt.c: the flush frontier */
/* Records up to seq may be acknowledged (always true on a drive without a
 * frontier in use); otherwise ask for a frontier write covering `durable`. */
bool store_frontier_covers(struct node_store *s, uint64_t seq, uint64_t durable);
/* Advance the frontier's write and flush; called from the store's work. */
void store_frontier_step(struct node_store *s);
/* Write the frontier (and the persistent counters) now, synchronously. */
int store_frontier_write_sync(struct node_store *s);
/* Parse one copy: true and *d, counters, when it is valid. */
bool store_frontier_parse(struct node_store *s, const uint8_t *b, uint64_t *d, uint64_t *damaged,
			  uint64_t *damage_seq, uint64_t *cksum_errors);
/* Remember a void COMMIT (sequence number); true when seq is one. */
void store_frontier_void_add(struct node_store *s, uint64_t seq);
bool store_frontier_is_void(const struct node_store *s, uint64_t seq);
/* Record that the log jumps from `from` to `to` (an entry for `from`
 * already there is replaced); the oldest goes when the list is full. */
void store_frontier_jump_add(struct node_store *s, uint64_t from, uint64_t to);
/* The seq the record expected at `seq` carries: the jump's target when the
 * log jumps there, else seq. */
uint64_t store_frontier_jump_to(const struct node_store *s, uint64_t seq);
/* seq lies in a jumped-over range: no record of the log has it. */
bool store_frontier_in_gap(const struct node_store *s, uint64_t seq);
/* Forget jumps no checkpoint's replay can pass any more. */
void store_frontier_jumps_prune(struct node_store *s);
/* The next record may be placed (its seq is within SEQ_AHEAD_MAX of the
 * durable frontier). */
bool store_seq_gate_open(const struct node_store *s);

/* store_read.c: reads, read buffers and scrub */
void *store_rbuf_get(struct node_store *s, size_t need, size_t *cap);
void store_rbuf_put(struct node_store *s, void *mem, size_t cap);
/*
 * A read found the record at loc, key's newest version, damaged: queue a
 * DAMAGE record (unless one for it is on its way). `waiter`, a read op, is
 * answered -EIO when it is durable; cb (if set) runs then. Returns 0 when
 * queued (waiter and cb are taken), 1 when nothing was queued (the key
 * changed, the damage is already on its way and cb was asked, or the store
 * is read-only: then marked in memory only), or -ENOMEM.
 */
int store_damage_found(struct node_store *s, const uint8_t *key, size_t klen, uint64_t loc,
		       struct op *waiter, node_store_cb cb, void *arg);
/* A DAMAGE record is durable (or failed): count it, mark its key. */
void store_damage_apply(struct node_store *s, struct op *op);
/* Answer the reads that waited for a DAMAGE record: -EIO. */
void store_read_damage_done(struct node_store *s, struct op **waiters);

/* store_stream.c: streamed puts */
bool store_streams_finishing(const struct node_store *s);
void store_stream_free(struct node_store_stream *st);
void store_streams_kick(struct node_store *s);
void store_stream_placed(struct node_store *s, struct op *op, uint32_t si);
void store_stream_resv_failed(struct node_store *s, struct op *op, int res);
/* A stream that copies the record at `from` for compaction: its RESV is
 * not a put (no admission), its record is a RELOC, and its COMMIT applies
 * only if the key still points at `from` (FORMAT.md §3). */
int store_stream_begin_move(struct node_store *s, const void *key, size_t klen, uint64_t size,
			    uint64_t from, const struct node_store_ver *ver,
			    void (*ready)(void *arg), void *arg, struct node_store_stream **out);

/* store_recover.c: superblock, format and recovery */
void store_sb_pack(const struct node_store *s, uint8_t *b);
enum sb_verdict store_sb_check(const uint8_t *b);
int store_sb_unpack(struct node_store *s, const uint8_t *b, char *err, size_t errlen);
int store_format(struct node_store *s, char *err, size_t errlen);
int store_recover(struct node_store *s, char *err, size_t errlen);

#endif
