/*
 * The store engine. docs/FORMAT.md describes the layout; this comment the
 * moving parts.
 *
 * Write path: operations queue on `appendq` in arrival order. serialize()
 * gives each its place in the log (the `head`), its sequence number and its
 * link in the crc chain, then copies header, key, chunk table and value into
 * aligned write buffers, which are submitted as they fill. A batch is closed
 * (padded to a 4 KiB boundary and submitted) when no write is in flight or
 * the commit window has passed, so no block holding acknowledged data is
 * ever written twice. One fdatasync covers every buffer completed before it;
 * when it completes, every operation whose last byte is in a covered buffer
 * is applied to the index and acknowledged, in log order.
 *
 * Read path: the index gives a record's place and size; the record (or, for
 * a range of a large value, its header and the needed chunks) is read and
 * every checksum verified before a byte is returned.
 *
 * Checkpoints, recovery and compaction follow the rules in docs/FORMAT.md:
 * a segment is reused only when nothing in it is live and everything in it
 * is older than the older of the two checkpoints recovery may start from.
 */
#include "store.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <liburing.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "index.h"
#include "overlay.h"
#include "record.h"

#define SB_MAGIC "SHELFST1"
#define SB_VERSION 1u
#define SB_COPY_OFF(i) ((uint64_t)(i) * DISK_BLOCK_BYTES)       /* blocks 0 and 1 */
#define PTR_SLOT_OFF(i) ((uint64_t)(2 + (i)) * DISK_BLOCK_BYTES) /* blocks 2 and 3 */
#define PTR_MAGIC "SHELFCP1"
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

enum op_kind { OP_PUT, OP_DEL, OP_RELOC, OP_NEXT, OP_CKPT_PART, OP_CKPT_END, OP_GET, OP_STAT,
	       OP_RESV, OP_COMMIT };

/* A record on its way into the log (every kind but OP_GET and OP_STAT). */
struct op_rec {
	const uint8_t *val;     /* the record's value: borrowed (put) or owned_val */
	uint64_t vlen;
	uint8_t *owned_val;
	bool started;           /* placed: pos, seq and hdr are set */
	uint8_t hdr[REC_HDR_BYTES];
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
	union {
		struct {
			uint64_t from;      /* the loc it moves; applied only if still current */
		} reloc;                    /* OP_RELOC */
		struct {
			uint32_t seg;       /* the segment the log continues in */
		} next;                     /* OP_NEXT */
		struct {
			uint64_t p0_seq;    /* the checkpoint's first sequence number */
		} ckpt;                     /* OP_CKPT_PART, OP_CKPT_END */
		struct {
			struct node_store_stream *stream; /* until placed */
			uint64_t region_len; /* bytes reserved after the record */
		} resv;                     /* OP_RESV */
		struct {
			/* its stream until every write of the region has
			 * completed (serialize waits for it) */
			struct node_store_stream *stream;
			uint64_t loc;       /* the streamed record, once written */
			uint64_t seq;       /* the streamed record's sequence number */
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
	uint8_t state;
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

/* The commit window's wake-up on a shared loop: an io_uring timeout, so
 * that the loop does not sleep past a batch or flush that waits for the
 * window. Allocated apart: at close an armed one is cancelled and frees
 * itself when the loop delivers its last completion. */
struct store_timer {
	struct node_loop_ev ev;
	struct __kernel_timespec ts;
	struct node_store *s;  /* NULL once the store has closed */
	bool armed;
};

/* Checkpoints (store_ckpt.c): the one being written, and the two that
 * recovery may start from. */
struct store_ckpt {
	int state;              /* CK_* */
	uint64_t gen;           /* generation of the newest pointer written */
	uint64_t new_p0_seq, old_p0_seq; /* first sequence numbers of the two */
	uint64_t records_since; /* records placed since the last one began */
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
	struct seg *segs;
	uint32_t nfree;
	/* log */
	uint64_t head;        /* device offset of the next record */
	uint32_t chain;       /* hcrc of the last record placed */
	uint64_t seq;         /* last sequence number placed */
	uint64_t seq_done;    /* last sequence number applied */
	struct sidx *ix;
	struct opq appendq, commitq;
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
	struct store_reads reads;
	struct store_streams streams;
	/* idle: since when (0: busy), and whether memory was given back */
	uint64_t idle_since_ns;
	bool released;
	struct node_store_stats st;
};

enum { CK_IDLE, CK_WAIT, CK_PARTS, CK_END, CK_PTR_WRITE, CK_PTR_FLUSH };

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
	struct op *commit;      /* queued at finish, released when the region is written */
	void (*ready)(void *arg);
	void *ready_arg;
	bool want_ready;
	struct node_store_stream *next;
};

static void stream_placed(struct node_store *s, struct op *op, uint32_t si);
static void stream_resv_failed(struct node_store *s, struct op *op, int res);
static void stream_advance(struct node_store_stream *st);
static void streams_kick(struct node_store *s);

/* ---- small helpers ---- */

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }
static uint64_t align_down(uint64_t v, uint64_t a) { return v & ~(a - 1); }

static uint64_t loc_make(uint64_t off, uint64_t size)
{
	return (off >> 4) << LOC_LEN_BITS | size >> 4;
}
static uint64_t loc_off(uint64_t loc) { return (loc >> LOC_LEN_BITS) << 4; }
static uint64_t loc_size(uint64_t loc) { return (loc & ((1u << LOC_LEN_BITS) - 1)) << 4; }

static uint32_t seg_of(const struct node_store *s, uint64_t off)
{
	return (uint32_t)((off - s->data_start) / s->seg_bytes);
}
static uint64_t seg_start(const struct node_store *s, uint32_t i)
{
	return s->data_start + (uint64_t)i * s->seg_bytes;
}
/* Records end at or before this; the last block is kept for a NEXT record. */
static uint64_t seg_limit(const struct node_store *s, uint32_t i)
{
	return seg_start(s, i) + s->seg_bytes - DISK_BLOCK_BYTES;
}

static void set_err(struct node_store *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void set_err(struct node_store *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->err, sizeof(s->err), fmt, ap);
	va_end(ap);
}

const char *node_store_errmsg(const struct node_store *s)
{
	return s->err;
}

static uint64_t now_ns(struct node_store *s)
{
	return s->clock.now_ns(s->clock.arg);
}

static void *aligned_alloc_blocks(size_t len)
{
	void *p = NULL;

	if (posix_memalign(&p, DISK_BLOCK_BYTES, len ? align_up(len, DISK_BLOCK_BYTES) : DISK_BLOCK_BYTES))
		return NULL;
	return p;
}

static void q_push(struct opq *q, struct op *op)
{
	op->next = NULL;
	if (q->tail)
		q->tail->next = op;
	else
		q->head = op;
	q->tail = op;
	q->n++;
}

static void q_push_front(struct opq *q, struct op *op)
{
	op->next = q->head;
	q->head = op;
	if (!q->tail)
		q->tail = op;
	q->n++;
}

static struct op *q_pop(struct opq *q)
{
	struct op *op = q->head;

	if (!op)
		return NULL;
	q->head = op->next;
	if (!q->head)
		q->tail = NULL;
	q->n--;
	op->next = NULL;
	return op;
}

static void *rbuf_get(struct node_store *s, size_t need, size_t *cap)
{
	int best = -1;

	for (unsigned i = 0; i < s->reads.ncache; i++)
		if (s->reads.cache[i].cap >= need && s->reads.cache[i].cap <= 2 * need + DISK_BLOCK_BYTES &&
		    (best < 0 || s->reads.cache[i].cap < s->reads.cache[best].cap))
			best = (int)i;
	if (best >= 0) {
		void *m = s->reads.cache[best].mem;

		*cap = s->reads.cache[best].cap;
		s->reads.cache_bytes -= *cap;
		s->reads.cache[best] = s->reads.cache[--s->reads.ncache];
		return m;
	}
	*cap = align_up(need, DISK_BLOCK_BYTES);
	return aligned_alloc_blocks(*cap);
}

static void rbuf_put(struct node_store *s, void *mem, size_t cap)
{
	if (!mem)
		return;
	if (s->reads.cache_bytes + cap > s->o.read_cache_bytes) {
		free(mem);
		return;
	}
	if (s->reads.ncache == s->reads.capcache) {
		unsigned c = s->reads.capcache ? s->reads.capcache * 2 : 16;
		void *n = realloc(s->reads.cache, c * sizeof(*s->reads.cache));

		if (!n) {
			free(mem);
			return;
		}
		s->reads.cache = n;
		s->reads.capcache = c;
	}
	s->reads.cache[s->reads.ncache].mem = mem;
	s->reads.cache[s->reads.ncache].cap = cap;
	s->reads.ncache++;
	s->reads.cache_bytes += cap;
}

static void op_free(struct op *op)
{
	if (!op)
		return;
	free(op->key);
	free(op->rec.owned_val);
	free(op->rec.table);
	if (op->kind == OP_GET || op->kind == OP_STAT) {
		free(op->u.rd.table);
		rbuf_put(op->s, op->u.rd.buf, op->u.rd.buflen);
	}
	free(op);
}

static struct op *op_new(struct node_store *s, enum op_kind kind, const void *key, size_t klen)
{
	struct op *op = calloc(1, sizeof(*op));

	if (!op)
		return NULL;
	op->kind = kind;
	op->s = s;
	if (klen) {
		op->key = malloc(klen);
		if (!op->key) {
			free(op);
			return NULL;
		}
		memcpy(op->key, key, klen);
		op->klen = klen;
	}
	return op;
}

static void go_read_only(struct node_store *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void go_read_only(struct node_store *s, const char *fmt, ...)
{
	va_list ap;

	if (s->read_only)
		return;
	s->read_only = true;
	va_start(ap, fmt);
	vsnprintf(s->ro_reason, sizeof(s->ro_reason), fmt, ap);
	va_end(ap);
	set_err(s, "store on '%s' is read-only: %s", s->disk->name, s->ro_reason);
}

/* ---- segments ---- */

static void seg_live_add(struct node_store *s, uint64_t loc, int64_t sign)
{
	struct seg *g = &s->segs[seg_of(s, loc_off(loc))];

	if (sign > 0)
		g->live += loc_size(loc);
	else
		g->live -= loc_size(loc) <= g->live ? loc_size(loc) : g->live;
}

/* Reusable: nothing live and nothing recovery might still replay. */
static bool seg_reclaimable(const struct node_store *s, uint32_t i)
{
	const struct seg *g = &s->segs[i];

	return g->state == SEG_USED && g->live == 0 && g->max_seq < s->ck.old_p0_seq && !g->streams;
}

static void reclaim_segments(struct node_store *s)
{
	for (uint32_t i = 0; i < s->nsegs; i++) {
		if (seg_reclaimable(s, i)) {
			s->segs[i].state = SEG_FREE;
			s->segs[i].max_seq = 0;
			s->nfree++;
		}
	}
}

/* Segments kept free so compaction and checkpoints can always proceed. */
static uint32_t reserve_segments(const struct node_store *s)
{
	uint64_t ckpt = sidx_count(s->ix) * (16 + 24) + (uint64_t)s->nsegs * 14 + CKPT_PART_BYTES;

	return 2 + (uint32_t)((ckpt + s->seg_bytes - 1) / s->seg_bytes);
}

static int64_t seg_take_free(struct node_store *s)
{
	for (uint32_t i = 0; i < s->nsegs; i++) {
		if (s->segs[i].state == SEG_FREE) {
			s->segs[i].state = SEG_HEAD;
			s->segs[i].live = 0;
			s->nfree--;
			return i;
		}
	}
	return -1;
}

/* ---- write buffers ---- */

static void wbuf_done(struct node_disk_io *io);

static struct wbuf *wbuf_acquire(struct node_store *s, uint64_t off)
{
	for (unsigned i = 0; i < s->nbufs; i++) {
		struct wbuf *b = &s->bufs[i];

		if (b->busy)
			continue;
		b->busy = true;
		b->inflight = false;
		b->off = off;
		b->fill = 0;
		/* streaming writes then fall on buffer-size boundaries, which
		 * drives handle measurably better than merely 4 KiB-aligned ones */
		b->limit = s->o.write_buffer_bytes - off % s->o.write_buffer_bytes;
		b->id = ++s->next_buf_id;
		b->born_ns = now_ns(s);
		return b;
	}
	return NULL;
}

static int wbuf_submit(struct node_store *s, struct wbuf *b)
{
	size_t len = align_up(b->fill, DISK_BLOCK_BYTES);
	int ret;

	memset(b->mem + b->fill, 0, len - b->fill);
	b->io = (struct node_disk_io){
		.op = DISK_WRITE, .buf = b->mem, .len = len, .off = b->off, .done = wbuf_done, .arg = b,
	};
	b->inflight = true;
	ret = node_disk_submit(s->disk, &b->io);
	if (ret < 0) {
		b->inflight = false;
		b->busy = false;
		go_read_only(s, "cannot queue write at %" PRIu64 ": %s", b->off, strerror(-ret));
	}
	s->st.batches++;
	return ret;
}

/* Highest buffer id such that every buffer up to it has been written. */
static uint64_t written_upto(const struct node_store *s)
{
	uint64_t min_busy = s->next_buf_id + 1;

	for (unsigned i = 0; i < s->nbufs; i++)
		if (s->bufs[i].busy && s->bufs[i].id < min_busy)
			min_busy = s->bufs[i].id;
	return min_busy - 1;
}

static void wbuf_done(struct node_disk_io *io)
{
	struct wbuf *b = io->arg;
	struct node_store *s = b->s;

	b->inflight = false;
	b->busy = false;
	if (io->res < 0 || (size_t)io->res != io->len)
		go_read_only(s, "write of %zu bytes at offset %" PRIu64 " failed: %s", io->len, io->off,
			     io->res < 0 ? strerror(-io->res) : "short write");
}

/* ---- the append pipeline ---- */

static void op_finish(struct node_store *s, struct op *op, int res);

static bool any_write_inflight(const struct node_store *s)
{
	for (unsigned i = 0; i < s->nbufs; i++)
		if (s->bufs[i].inflight)
			return true;
	return false;
}

/* Pad and submit the open buffer; the next record starts on a new block. */
static void close_batch(struct node_store *s)
{
	struct wbuf *b = s->cur;

	if (!b)
		return;
	s->cur = NULL;
	if (b->fill == 0) {
		b->busy = false;
		return;
	}
	s->head = align_up(b->off + b->fill, DISK_BLOCK_BYTES);
	wbuf_submit(s, b);
}

/* The header's aux field: what the kind's record carries there. */
static uint64_t rec_aux(const struct op *op)
{
	switch (op->kind) {
	case OP_RELOC: return op->u.reloc.from;
	case OP_NEXT: return op->u.next.seg;
	case OP_CKPT_PART:
	case OP_CKPT_END: return op->u.ckpt.p0_seq;
	case OP_RESV: return op->u.resv.region_len;
	case OP_COMMIT: return op->u.commit.loc;
	default: return 0;
	}
}

static void build_header(struct node_store *s, struct op *op, uint8_t type)
{
	struct rec_hdr h = { 0 };

	h.type = type;
	h.klen = (uint16_t)op->klen;
	h.vlen = (uint32_t)op->rec.vlen;
	h.flags = op->rec.vlen > REC_CHUNK_BYTES ? REC_FLAG_CHUNKED : 0;
	h.prev = s->chain;
	h.seq = op->rec.seq;
	h.aux = rec_aux(op);
	h.vcrc = rec_value_crcs(op->rec.val, op->rec.vlen, op->rec.table);
	rec_hdr_pack(&h, op->rec.hdr);
	h.hcrc = rec_hcrc(op->rec.hdr, op->key, op->klen, op->rec.table, op->rec.tlen);
	rec_hdr_pack(&h, op->rec.hdr);
	s->chain = h.hcrc;
}

static uint8_t rec_type_of(enum op_kind k)
{
	switch (k) {
	case OP_PUT: return REC_PUT;
	case OP_DEL: return REC_TOMB;
	case OP_RELOC: return REC_RELOC;
	case OP_NEXT: return REC_NEXT;
	case OP_CKPT_PART: return REC_CKPT_PART;
	case OP_CKPT_END: return REC_CKPT_END;
	case OP_RESV: return REC_RESV;
	case OP_COMMIT: return REC_COMMIT;
	default: return 0;
	}
}

/*
 * Give op its place in the log. Returns 0, 1 when a NEXT record was queued
 * in front of it (call again later), or -errno to fail the op.
 */
static int place(struct node_store *s, struct op *op)
{
	uint32_t si = seg_of(s, s->head);
	uint64_t rsize = rec_size(op->klen, op->rec.vlen), span = rsize;

	if (s->read_only)
		return -EROFS;
	if (op->kind == OP_RESV) /* the record, then the region from the next block */
		span = align_up(s->head + rsize, DISK_BLOCK_BYTES) - s->head + op->u.resv.region_len;
	if ((op->kind == OP_RESV ? DISK_BLOCK_BYTES + op->u.resv.region_len : rsize) >
	    s->seg_bytes - 2 * DISK_BLOCK_BYTES) {
		set_err(s, "record of %" PRIu64 " bytes does not fit in a %" PRIu64 "-byte segment",
			rsize, s->seg_bytes);
		return -E2BIG;
	}
	if (op->kind != OP_NEXT && s->head + span > seg_limit(s, si)) {
		struct op *nx = NULL;
		int64_t t;
		/* puts leave the reserve alone; deletes may dig into it but
		 * leave compaction and checkpoints room to free space */
		uint32_t floor = op->kind == OP_PUT || op->kind == OP_RESV ? reserve_segments(s)
				 : op->kind == OP_DEL ? 1 : 0;

		if (s->nfree <= floor) {
			set_err(s, "drive '%s' is full: %u of %u segments free, %u kept for compaction",
				s->disk->name, s->nfree, s->nsegs, reserve_segments(s));
			return -ENOSPC;
		}
		t = seg_take_free(s);
		nx = op_new(s, OP_NEXT, NULL, 0);
		if (!nx) {
			s->segs[t].state = SEG_FREE;
			s->nfree++;
			return -ENOMEM;
		}
		nx->u.next.seg = (uint32_t)t;
		q_push_front(&s->appendq, nx);
		return 1;
	}
	op->rec.tlen = rec_table_bytes(op->rec.vlen);
	if (op->rec.tlen) {
		op->rec.table = malloc(op->rec.tlen);
		if (!op->rec.table)
			return -ENOMEM;
	}
	op->rec.seq = ++s->seq;
	op->rec.pos = s->head;
	op->rec.rsize = rsize;
	build_header(s, op, rec_type_of(op->kind));
	s->head += span;
	s->segs[si].max_seq = op->rec.seq;
	op->rec.started = true;
	if (op->kind == OP_RESV)
		stream_placed(s, op, si);
	if (op->kind == OP_COMMIT) {
		/* replay from any checkpoint that sees this record reads the
		 * streamed record: keep its segment as long */
		struct seg *g = &s->segs[seg_of(s, loc_off(op->u.commit.loc))];

		g->max_seq = g->max_seq > op->rec.seq ? g->max_seq : op->rec.seq;
	}
	s->ck.records_since++;
	return 0;
}

/* Copy piece [from, from+n) of the serialized record into dst. */
static void record_bytes(const struct op *op, uint64_t from, uint8_t *dst, size_t n)
{
	const struct {
		const uint8_t *p;
		uint64_t len;
	} pieces[4] = {
		{ op->rec.hdr, REC_HDR_BYTES }, { op->key, op->klen }, { op->rec.table, op->rec.tlen },
		{ op->rec.val, op->rec.vlen },
	};
	uint64_t base = 0;

	for (int i = 0; i < 4 && n; i++) {
		uint64_t end = base + pieces[i].len;

		if (from < end) {
			size_t take = (size_t)(end - from < n ? end - from : n);

			memcpy(dst, pieces[i].p + (from - base), take);
			dst += take;
			from += take;
			n -= take;
		}
		base = end;
	}
	if (n)
		memset(dst, 0, n); /* alignment padding */
}

/* Copy as much of op as buffers allow. Returns true when fully copied. */
static bool copy_op(struct node_store *s, struct op *op)
{
	while (op->rec.copied < op->rec.rsize) {
		size_t n;

		if (!s->cur) {
			s->cur = wbuf_acquire(s, op->rec.pos + op->rec.copied);
			if (!s->cur)
				return false;
		}
		n = s->cur->limit - s->cur->fill;
		if (n > op->rec.rsize - op->rec.copied)
			n = (size_t)(op->rec.rsize - op->rec.copied);
		record_bytes(op, op->rec.copied, s->cur->mem + s->cur->fill, n);
		s->cur->fill += n;
		op->rec.copied += n;
		op->rec.last_buf = s->cur->id;
		if (s->cur->fill == s->cur->limit) {
			struct wbuf *b = s->cur;

			s->cur = NULL;
			wbuf_submit(s, b);
		}
	}
	return true;
}

static void serialize(struct node_store *s)
{
	struct op *op;

	while ((op = s->appendq.head)) {
		if (op->kind == OP_COMMIT && op->u.commit.stream)
			return; /* its region is still being written */
		if (op->kind == OP_COMMIT && op->u.commit.err < 0) {
			q_pop(&s->appendq);
			op_finish(s, op, op->u.commit.err);
			continue;
		}
		if (!op->rec.started) {
			int ret = place(s, op);

			if (ret == 1)
				continue;
			if (ret < 0) {
				q_pop(&s->appendq);
				op_finish(s, op, ret);
				continue;
			}
		}
		if (!copy_op(s, op))
			return;
		q_pop(&s->appendq);
		if (op->kind == OP_RESV) {
			/* the region belongs to the stream: the log resumes after it */
			uint64_t end = s->head;

			close_batch(s);
			s->head = end;
		}
		if (op->kind == OP_NEXT) {
			/* the log jumps: what follows goes to another place */
			s->segs[seg_of(s, op->rec.pos)].state = SEG_USED;
			close_batch(s);
			s->head = seg_start(s, op->u.next.seg);
			s->segs[op->u.next.seg].max_seq = op->rec.seq;
		}
		if (op->kind == OP_CKPT_PART || op->kind == OP_CKPT_END) {
			if (s->ck.part_pending == op)
				s->ck.part_pending = NULL;
			if (op->kind == OP_CKPT_PART) {
				s->ck.parts[s->ck.nparts].off = op->rec.pos;
				s->ck.parts[s->ck.nparts].size = (uint32_t)op->rec.rsize;
				s->ck.nparts++;
			}
			free(op->rec.owned_val); /* payload copied; only the place matters now */
			op->rec.owned_val = NULL;
			op->rec.val = NULL;
		}
		if (op->kind == OP_PUT || op->kind == OP_RELOC) {
			free(op->rec.owned_val);
			op->rec.owned_val = NULL;
			op->rec.val = NULL; /* the caller may reuse the value from here on */
		}
		free(op->rec.table);
		op->rec.table = NULL;
		op->rec.queued_ns = now_ns(s);
		q_push(&s->commitq, op);
	}
}

static void flush_done(struct node_disk_io *io)
{
	struct node_store *s = io->arg;
	unsigned i;

	for (i = 0; i < STORE_FLUSHES_MAX && &s->flush[i].io != io; i++)
		;
	s->flush[i].busy = false;
	s->flush_inflight--;
	s->st.flushes++;
	if (io->res < 0) {
		go_read_only(s, "fdatasync failed: %s", strerror(-io->res));
		return;
	}
	/* everything up to its target is durable, whichever flush ends first */
	if (s->flush[i].target > s->durable_buf_id)
		s->durable_buf_id = s->flush[i].target;
}

static bool any_write_inflight(const struct node_store *s);

static void start_flush(struct node_store *s)
{
	uint64_t w;
	unsigned i;
	int ret;

	if (s->flush_inflight == STORE_FLUSHES_MAX || s->read_only || !s->commitq.head)
		return;
	w = written_upto(s);
	/* nothing new to cover, or the oldest waiting record is not written */
	if (w <= s->durable_buf_id || w <= s->flush_issued || s->commitq.head->rec.last_buf > w)
		return;
	/*
	 * While writes are still streaming, one flush per batch: wait until
	 * half the buffer pool has been written or the oldest waiting record
	 * has waited the commit window. An idle device flushes at once.
	 */
	if (any_write_inflight(s)) {
		uint64_t waited = now_ns(s) - s->commitq.head->rec.queued_ns;
		uint64_t batch = (uint64_t)s->nbufs * s->o.write_buffer_bytes / 2;

		if ((w - s->durable_buf_id) * s->o.write_buffer_bytes < batch &&
		    waited < s->o.commit_window_us * 1000)
			return;
	}
	for (i = 0; s->flush[i].busy; i++)
		;
	s->flush[i].target = w;
	s->flush[i].io = (struct node_disk_io){ .op = DISK_FLUSH, .done = flush_done, .arg = s };
	ret = node_disk_submit(s->disk, &s->flush[i].io);
	if (ret < 0) {
		go_read_only(s, "cannot queue fdatasync: %s", strerror(-ret));
		return;
	}
	s->flush[i].busy = true;
	s->flush_inflight++;
	s->flush_issued = w;
}

static void ck_end_durable(struct node_store *s, struct op *op);

/* Apply durable operations to the index, in log order, and acknowledge. */
static void complete_durable(struct node_store *s)
{
	struct op *op;

	while ((op = s->commitq.head) && op->rec.last_buf <= s->durable_buf_id) {
		uint64_t loc = loc_make(op->rec.pos, op->rec.rsize), old = 0;
		int ret = 0;

		q_pop(&s->commitq);
		s->seq_done = op->rec.seq;
		switch (op->kind) {
		case OP_PUT:
			ret = sidx_set(s->ix, op->key, op->klen, loc, &old);
			if (ret == 0) {
				if (old)
					seg_live_add(s, old, -1);
				seg_live_add(s, loc, +1);
				s->st.puts++;
			} else {
				go_read_only(s, "out of memory for the index");
			}
			break;
		case OP_DEL:
			if (sidx_del(s->ix, op->key, op->klen, &old) == 1)
				seg_live_add(s, old, -1);
			s->st.deletes++;
			break;
		case OP_RELOC:
			if (sidx_get(s->ix, op->key, op->klen, &old) == 1 && old == op->u.reloc.from) {
				sidx_set(s->ix, op->key, op->klen, loc, &old);
				seg_live_add(s, old, -1);
				seg_live_add(s, loc, +1);
			}
			break;
		case OP_CKPT_END:
			ck_end_durable(s, op);
			break;
		case OP_COMMIT:
			ret = sidx_set(s->ix, op->key, op->klen, op->u.commit.loc, &old);
			if (ret == 0) {
				if (old)
					seg_live_add(s, old, -1);
				seg_live_add(s, op->u.commit.loc, +1);
				s->st.puts++;
			} else {
				go_read_only(s, "out of memory for the index");
			}
			break;
		default:
			break;
		}
		op_finish(s, op, ret);
	}
}

/* Fail everything queued after the store went read-only. */
static void fail_all(struct node_store *s)
{
	struct op *op;

	while ((op = q_pop(&s->commitq)))
		op_finish(s, op, -EROFS);
	while ((op = q_pop(&s->appendq))) {
		if (op == s->ck.part_pending)
			s->ck.part_pending = NULL;
		op_finish(s, op, -EROFS);
	}
	if (s->cur) {
		s->cur->busy = false;
		s->cur = NULL;
	}
}

static void op_finish(struct node_store *s, struct op *op, int res)
{
	struct node_store_objstat st;

	if (res < 0 && (op->kind == OP_CKPT_PART || op->kind == OP_CKPT_END))
		s->ck.err = res;
	if (op->kind == OP_RESV && op->u.resv.stream)
		stream_resv_failed(s, op, res < 0 ? res : -EIO);
	if (op->kind == OP_COMMIT && op->u.commit.stream) {
		/* failed before its region was written (read-only): the stream
		 * keeps its pin and learns of it */
		struct node_store_stream *stream = op->u.commit.stream;

		stream->commit = NULL;
		stream->err = res < 0 ? res : -EIO;
		stream->kick = true;
		op->u.commit.stream = NULL;
	} else if (op->kind == OP_COMMIT && op->u.commit.err == 0) {
		/* the stream's segment pin ends with its commit, either way */
		s->segs[seg_of(s, loc_off(op->u.commit.loc))].streams--;
		if (op->cb && res == 0) {
			st = (struct node_store_objstat){ .size = le_get64(op->rec.owned_val + 8),
							  .crc = le_get32(op->rec.owned_val + 4),
							  .seq = op->u.commit.seq };
			op->cb(op->arg, res, &st);
			op->cb = NULL;
		}
	}
	if (op->cb && res == 0 && op->kind == OP_PUT) {
		/* what was made durable: size, checksum and sequence */
		st = (struct node_store_objstat){ .size = op->rec.vlen, .crc = le_get32(op->rec.hdr + 32),
						  .seq = op->rec.seq };
		op->cb(op->arg, res, &st);
	} else if (op->cb) {
		op->cb(op->arg, res, NULL);
	}
	op_free(op);
}

/* ---- checkpoints ---- */

static int ck_part_add_items(struct node_store *s, uint8_t *buf, size_t cap, size_t *used)
{
	size_t n = 0;

	while (s->ck.seg_cursor < s->nsegs && n + 14 <= cap) {
		const struct seg *g = &s->segs[s->ck.seg_cursor];

		buf[n] = CK_ITEM_SEG;
		le_put32(buf + n + 1, s->ck.seg_cursor);
		buf[n + 5] = g->state == SEG_FREE ? SEG_FREE : SEG_USED;
		le_put64(buf + n + 6, g->max_seq);
		n += 14;
		s->ck.seg_cursor++;
		s->ck.items++;
	}
	if (s->ck.seg_cursor == s->nsegs && !s->ck.keys_done) {
		struct sidx_iter it;
		const uint8_t *k;
		size_t kl;
		uint64_t loc;

		sidx_seek(s->ix, &it, s->ck.keys_started ? s->ck.key : NULL, s->ck.klen, true);
		while (n + 11 + NODE_STORE_KEY_MAX <= cap) {
			if (!sidx_next(s->ix, &it, &k, &kl, &loc)) {
				s->ck.keys_done = true;
				break;
			}
			buf[n] = CK_ITEM_KEY;
			buf[n + 1] = kl & 0xff;
			buf[n + 2] = kl >> 8;
			memcpy(buf + n + 3, k, kl);
			le_put64(buf + n + 3 + kl, loc);
			n += 11 + kl;
			s->ck.items++;
			memcpy(s->ck.key, k, kl);
			s->ck.klen = kl;
			s->ck.keys_started = true;
		}
	}
	*used = n;
	return 0;
}

static int ck_start(struct node_store *s)
{
	if (s->ck.state != CK_IDLE)
		return -EBUSY;
	if (s->read_only)
		return -EROFS;
	/* only at a record boundary: the batch must close cleanly */
	if (s->appendq.head && s->appendq.head->rec.started)
		return -EAGAIN;
	close_batch(s);
	s->ck.p0_off = s->head;
	s->ck.p0_seq = s->seq + 1;
	s->ck.p0_prev = s->chain;
	s->ck.seg_cursor = 0;
	s->ck.keys_started = s->ck.keys_done = false;
	s->ck.klen = 0;
	s->ck.nparts = 0;
	s->ck.items = 0;
	s->ck.err = 0;
	s->ck.records_since = 0;
	s->ck.state = CK_WAIT;
	return 0;
}

static void ck_ptr_done(struct node_disk_io *io);

/* Fill one checkpoint pointer block (docs/FORMAT.md, section 6). */
static void ptr_pack(uint8_t *p, uint64_t gen, uint64_t p0_off, uint64_t p0_seq, uint32_t p0_prev,
		     uint64_t end_off, uint64_t end_size, uint32_t end_hcrc)
{
	memset(p, 0, DISK_BLOCK_BYTES);
	memcpy(p, PTR_MAGIC, 8);
	le_put64(p + 8, gen);
	le_put64(p + 16, p0_off);
	le_put64(p + 24, p0_seq);
	le_put32(p + 32, p0_prev);
	le_put64(p + 36, end_off);
	le_put64(p + 44, end_size);
	le_put32(p + 52, end_hcrc);
	le_put32(p + 60, ovl_crc32c(0, p, 60));
}

static void ck_end_durable(struct node_store *s, struct op *op)
{
	int ret;

	/* Point recovery at this checkpoint: write the other slot, then flush. */
	ptr_pack(s->ck.ptrbuf, s->ck.gen + 1, s->ck.p0_off, s->ck.p0_seq, s->ck.p0_prev, op->rec.pos,
		 op->rec.rsize, le_get32(op->rec.hdr + 36));
	s->ck.io = (struct node_disk_io){
		.op = DISK_WRITE, .buf = s->ck.ptrbuf, .len = DISK_BLOCK_BYTES,
		.off = PTR_SLOT_OFF((s->ck.gen + 1) % 2), .done = ck_ptr_done, .arg = s,
	};
	ret = node_disk_submit(s->disk, &s->ck.io);
	if (ret < 0) {
		go_read_only(s, "cannot write checkpoint pointer: %s", strerror(-ret));
		s->ck.state = CK_IDLE;
		return;
	}
	s->ck.state = CK_PTR_WRITE;
}

static void ck_ptr_done(struct node_disk_io *io)
{
	struct node_store *s = io->arg;
	int ret;

	if (io->res < 0) {
		go_read_only(s, "checkpoint pointer %s failed: %s",
			     s->ck.state == CK_PTR_WRITE ? "write" : "flush", strerror(-io->res));
		s->ck.state = CK_IDLE;
		return;
	}
	if (s->ck.state == CK_PTR_WRITE) {
		s->ck.io = (struct node_disk_io){ .op = DISK_FLUSH, .done = ck_ptr_done, .arg = s };
		ret = node_disk_submit(s->disk, &s->ck.io);
		if (ret < 0) {
			go_read_only(s, "cannot flush checkpoint pointer: %s", strerror(-ret));
			s->ck.state = CK_IDLE;
			return;
		}
		s->ck.state = CK_PTR_FLUSH;
		return;
	}
	s->ck.gen++;
	s->ck.old_p0_seq = s->ck.new_p0_seq;
	s->ck.new_p0_seq = s->ck.p0_seq;
	s->ck.state = CK_IDLE;
	s->st.checkpoints++;
	reclaim_segments(s);
}

/* Advance the checkpoint a step; never blocks. */
static void ck_step(struct node_store *s)
{
	struct op *op = NULL;

	if (s->ck.err && s->ck.state != CK_IDLE && s->ck.state < CK_PTR_WRITE) {
		s->ck.state = CK_IDLE;
		return;
	}
	switch (s->ck.state) {
	case CK_IDLE:
		if (s->o.ckpt_records && s->ck.records_since >= s->o.ckpt_records)
			ck_start(s);
		return;
	case CK_WAIT:
		/* everything before P0 must be applied before the snapshot */
		if (s->seq_done + 1 < s->ck.p0_seq)
			return;
		s->ck.state = CK_PARTS;
		/* fallthrough */
	case CK_PARTS: {
		size_t used = 0;

		if (s->ck.part_pending)
			return;
		if (s->ck.seg_cursor < s->nsegs || !s->ck.keys_done) {
			/* room for what is left, at most one part */
			uint64_t left = (uint64_t)(s->nsegs - s->ck.seg_cursor) * 14 +
					sidx_count(s->ix) * 11 + sidx_key_bytes(s->ix) + 11 + NODE_STORE_KEY_MAX;
			size_t cap = left < CKPT_PART_BYTES ? (size_t)left : CKPT_PART_BYTES;

			op = op_new(s, OP_CKPT_PART, NULL, 0);
			if (op)
				op->rec.owned_val = malloc(cap);
			if (!op || !op->rec.owned_val) {
				op_free(op);
				s->ck.err = -ENOMEM;
				s->ck.state = CK_IDLE;
				return;
			}
			if (s->ck.nparts == s->ck.capparts) {
				uint32_t ncap = s->ck.capparts ? s->ck.capparts * 2 : 16;
				void *np = realloc(s->ck.parts, ncap * sizeof(*s->ck.parts));

				if (!np) {
					op_free(op);
					s->ck.err = -ENOMEM;
					s->ck.state = CK_IDLE;
					return;
				}
				s->ck.parts = np;
				s->ck.capparts = ncap;
			}
			ck_part_add_items(s, op->rec.owned_val, cap, &used);
			op->rec.val = op->rec.owned_val;
			op->rec.vlen = used;
			op->u.ckpt.p0_seq = s->ck.p0_seq;
			s->ck.part_pending = op;
			q_push(&s->appendq, op);
			return;
		}
		/* every part placed: the END record lists them */
		op = op_new(s, OP_CKPT_END, NULL, 0);
		if (op)
			op->rec.owned_val = malloc(32 + (size_t)s->ck.nparts * 12);
		if (!op || !op->rec.owned_val) {
			op_free(op);
			s->ck.err = -ENOMEM;
			s->ck.state = CK_IDLE;
			return;
		}
		le_put64(op->rec.owned_val, s->ck.p0_off);
		le_put64(op->rec.owned_val + 8, s->ck.p0_seq);
		le_put32(op->rec.owned_val + 16, s->ck.p0_prev);
		le_put32(op->rec.owned_val + 20, s->ck.nparts);
		le_put64(op->rec.owned_val + 24, s->ck.items);
		for (uint32_t i = 0; i < s->ck.nparts; i++) {
			le_put64(op->rec.owned_val + 32 + 12 * i, s->ck.parts[i].off);
			le_put32(op->rec.owned_val + 40 + 12 * i, s->ck.parts[i].size);
		}
		op->rec.val = op->rec.owned_val;
		op->rec.vlen = 32 + (size_t)s->ck.nparts * 12;
		op->u.ckpt.p0_seq = s->ck.p0_seq;
		q_push(&s->appendq, op);
		s->ck.state = CK_END;
		return;
	}
	default:
		return;
	}
}

/* ---- the loop ---- */

unsigned node_store_pending(const struct node_store *s)
{
	return s->appendq.n + s->commitq.n + s->reads.inflight + s->streams.ios +
	       (s->ck.state != CK_IDLE ? 1 : 0);
}

/*
 * Once the store has been idle for IDLE_RELEASE_NS, give back what only
 * work in flight needs: the write buffers' pages (they fault back in, zeroed,
 * when written), the cached read buffers, the index's spare capacity, and
 * the heap's free pages. Puts and gets pay nothing for this while busy.
 */
static void release_idle(struct node_store *s)
{
	uint64_t now;

	if (node_store_pending(s) || s->disk->inflight || s->cur || s->flush_inflight) {
		s->idle_since_ns = 0;
		s->released = false;
		return;
	}
	if (s->released)
		return;
	now = now_ns(s);
	if (!s->idle_since_ns) {
		s->idle_since_ns = now;
		return;
	}
	if (now - s->idle_since_ns < IDLE_RELEASE_NS)
		return;
	for (unsigned i = 0; i < s->nbufs; i++)
		if (!s->bufs[i].busy)
			madvise(s->bufs[i].mem, s->o.write_buffer_bytes, MADV_DONTNEED);
	while (s->reads.ncache)
		free(s->reads.cache[--s->reads.ncache].mem);
	s->reads.cache_bytes = 0;
	sidx_shrink(s->ix);
	malloc_trim(0);
	s->released = true;
	s->st.idle_releases++;
}

/* Close the open batch when the record at its end is whole and either no
 * write is in flight or the commit window has passed. */
static void maybe_close_batch(struct node_store *s)
{
	if (s->cur && s->cur->fill && !(s->appendq.head && s->appendq.head->rec.started) &&
	    (!any_write_inflight(s) ||
	     now_ns(s) - s->cur->born_ns >= s->o.commit_window_us * 1000))
		close_batch(s);
}

/* The store's own ring (or direct I/O): submit, reap, acknowledge. */
static int poll_own(struct node_store *s, bool wait)
{
	int ret;

	for (int round = 0; round < 2; round++) {
		ck_step(s);
		serialize(s);
		streams_kick(s);
		maybe_close_batch(s);
		start_flush(s);
		ret = node_disk_reap(s->disk, wait && round == 0 && s->disk->inflight > 0);
		if (ret < 0) {
			go_read_only(s, "i/o completion failed: %s", strerror(-ret));
			return ret;
		}
		complete_durable(s);
		if (s->read_only)
			fail_all(s);
	}
	release_idle(s);
	streams_kick(s);
	return 0;
}

static void timer_done(struct node_loop_ev *ev, int res, uint32_t flags)
{
	struct store_timer *t = (struct store_timer *)ev;

	t->armed = false;
	if (!t->s)
		free(t);
}

/*
 * The earliest time (store clock) at which work waiting for the commit
 * window may go: the open batch's close, or the flush that waits for the
 * oldest record while writes are still streaming. 0: none waits.
 */
static uint64_t window_deadline(const struct node_store *s)
{
	uint64_t w = s->o.commit_window_us * 1000, d = 0;

	if (!any_write_inflight(s))
		return 0; /* the next completion, or nothing, wakes the loop */
	if (s->cur && s->cur->fill)
		d = s->cur->born_ns + w;
	if (s->commitq.head && s->flush_inflight < STORE_FLUSHES_MAX && !s->read_only) {
		/* a flush that start_flush() holds back for the window */
		uint64_t wu = written_upto(s), f = s->commitq.head->rec.queued_ns + w;

		if (wu > s->durable_buf_id && wu > s->flush_issued &&
		    s->commitq.head->rec.last_buf <= wu && (!d || f < d))
			d = f;
	}
	return d;
}

/* On a shared loop: make sure the loop wakes by the commit window. */
static void timer_arm(struct node_store *s)
{
	struct store_timer *t = s->timer;
	struct io_uring_sqe *sqe = NULL;
	uint64_t d = window_deadline(s), now, left;

	if (!d || t->armed)
		return;
	now = now_ns(s);
	left = d > now ? d - now : 1000;
	t->ts.tv_sec = (long long)(left / 1000000000u);
	t->ts.tv_nsec = (long long)(left % 1000000000u);
	sqe = node_loop_sqe(s->loop, &t->ev);
	if (!sqe)
		return; /* the next completion wakes the loop instead */
	io_uring_prep_timeout(sqe, &t->ts, 0, 0);
	t->armed = true;
}

/*
 * The store's work between completions, on a shared loop: acknowledge what
 * became durable, start batches, checkpoints and flushes, and arm the
 * commit window's timer. Never waits and never runs the loop.
 */
static void store_work(struct node_store *s)
{
	complete_durable(s);
	if (s->read_only)
		fail_all(s);
	ck_step(s);
	serialize(s);
	streams_kick(s);
	maybe_close_batch(s);
	start_flush(s);
	if (s->read_only)
		fail_all(s);
	release_idle(s);
	streams_kick(s);
	timer_arm(s);
}

/* The before-sleep hook the store registers on a shared loop. */
static void store_hook(void *arg)
{
	struct node_store *s = arg;

	if (!s->blocking)
		store_work(s);
}

int node_store_poll(struct node_store *s, bool wait)
{
	if (s->loop && !s->blocking) {
		store_work(s);
		return 0;
	}
	return poll_own(s, wait);
}

bool node_store_idle(const struct node_store *s)
{
	return !node_store_pending(s) && !s->disk->inflight;
}

/*
 * A blocking call begins: on a shared loop its I/O, and everything else the
 * store does meanwhile, is direct (done by this thread, never through the
 * loop), which needs nothing of the store in flight on the loop. -EBUSY
 * when something is. Calls nest.
 */
static int blocking_begin(struct node_store *s)
{
	int ret;

	if (!s->loop || s->blocking++)
		return 0;
	ret = node_disk_direct(s->disk, true);
	if (ret < 0) {
		s->blocking--;
		set_err(s, "store on '%s' has i/o in flight on the node's loop: a blocking call waits until node_store_idle()",
			s->disk->name);
	}
	return ret;
}

static void blocking_end(struct node_store *s)
{
	if (!s->loop || --s->blocking)
		return;
	/* nothing may stay queued for direct i/o */
	while (s->disk->inflight && node_disk_reap(s->disk, true) > 0)
		;
	node_disk_direct(s->disk, false);
}

/* ---- public write operations ---- */

static int check_key(struct node_store *s, const void *key, size_t klen)
{
	if (!key || klen == 0 || klen > NODE_STORE_KEY_MAX) {
		set_err(s, "key of %zu bytes refused (1..%u bytes)", klen, NODE_STORE_KEY_MAX);
		return klen > NODE_STORE_KEY_MAX ? -E2BIG : -EINVAL;
	}
	return 0;
}

int node_store_put_async(struct node_store *s, const void *key, size_t klen, const void *val,
			 size_t vlen, node_store_cb cb, void *arg)
{
	struct op *op = NULL;
	int ret = check_key(s, key, klen);

	if (ret < 0)
		return ret;
	if (vlen > NODE_STORE_VALUE_MAX ||
	    rec_size(klen, vlen) > s->seg_bytes - 2 * DISK_BLOCK_BYTES) {
		set_err(s, "value of %zu bytes refused (at most %u bytes, and a record must fit in one %" PRIu64 "-byte segment)",
			vlen, NODE_STORE_VALUE_MAX, s->seg_bytes);
		return -E2BIG;
	}
	if (!val && vlen)
		return -EINVAL;
	if (s->read_only) {
		set_err(s, "store on '%s' is read-only: %s", s->disk->name, s->ro_reason);
		return -EROFS;
	}
	op = op_new(s, OP_PUT, key, klen);
	if (!op)
		return -ENOMEM;
	op->rec.val = vlen ? val : (const uint8_t *)"";
	op->rec.vlen = vlen;
	op->cb = cb;
	op->arg = arg;
	q_push(&s->appendq, op);
	return 0;
}

static bool key_pending(const struct node_store *s, const void *key, size_t klen)
{
	const struct opq *qs[2] = { &s->appendq, &s->commitq };

	for (int i = 0; i < 2; i++)
		for (const struct op *op = qs[i]->head; op; op = op->next)
			if ((op->kind == OP_PUT || op->kind == OP_COMMIT) && op->klen == klen &&
			    memcmp(op->key, key, klen) == 0)
				return true;
	return false;
}

int node_store_delete_async(struct node_store *s, const void *key, size_t klen,
			    node_store_cb cb, void *arg)
{
	struct op *op = NULL;
	uint64_t loc;
	int ret = check_key(s, key, klen);

	if (ret < 0)
		return ret;
	if (s->read_only) {
		set_err(s, "store on '%s' is read-only: %s", s->disk->name, s->ro_reason);
		return -EROFS;
	}
	if (sidx_get(s->ix, key, klen, &loc) == 0 && !key_pending(s, key, klen))
		return -ENOENT;
	op = op_new(s, OP_DEL, key, klen);
	if (!op)
		return -ENOMEM;
	op->cb = cb;
	op->arg = arg;
	q_push(&s->appendq, op);
	return 0;
}

/* ---- reads ---- */

static void read_done(struct node_disk_io *io);

static int read_submit(struct node_store *s, struct op *op, uint64_t from, uint64_t to)
{
	uint64_t a = align_down(from, DISK_BLOCK_BYTES), b = align_up(to, DISK_BLOCK_BYTES);
	int ret;

	if (b - a > op->u.rd.buflen) {
		rbuf_put(s, op->u.rd.buf, op->u.rd.buflen);
		op->u.rd.buflen = 0;
		op->u.rd.buf = rbuf_get(s, b - a, &op->u.rd.buflen);
		if (!op->u.rd.buf) {
			op->u.rd.buflen = 0;
			return -ENOMEM;
		}
	}
	op->u.rd.base = a;
	op->u.rd.io = (struct node_disk_io){
		.op = DISK_READ, .buf = op->u.rd.buf, .len = b - a, .off = a, .done = read_done, .arg = op,
		.cached = s->o.page_cache_reads,
	};
	ret = node_disk_submit(s->disk, &op->u.rd.io);
	if (ret == 0)
		s->reads.inflight++;
	return ret;
}

static void read_finish(struct node_store *s, struct op *op, int res, const void *data,
			size_t len, const struct node_store_objstat *st)
{
	struct node_store_rbuf *rb = NULL;

	if (res == -EIO)
		s->st.checksum_errors++;
	if (op->kind == OP_STAT) {
		if (op->cb)
			op->cb(op->arg, res, st);
		op_free(op);
		return;
	}
	if (res == 0 && op->get_cb) {
		/* the buffer goes to the callback with the bytes in it */
		rb = malloc(sizeof(*rb));
		if (!rb) {
			res = -ENOMEM;
			st = NULL;
		} else {
			*rb = (struct node_store_rbuf){ .data = data, .len = len, .mem = op->u.rd.buf,
							.cap = op->u.rd.buflen, .s = s };
			op->u.rd.buf = NULL;
			op->u.rd.buflen = 0;
		}
	}
	if (op->get_cb)
		op->get_cb(op->arg, res, &rb, st);
	node_store_rbuf_release(&rb); /* the callback did not keep it */
	op_free(op);
}

void node_store_rbuf_release(struct node_store_rbuf **rbp)
{
	struct node_store_rbuf *rb = rbp ? *rbp : NULL;

	if (!rb)
		return;
	rbuf_put(rb->s, rb->mem, rb->cap);
	free(rb);
	*rbp = NULL;
}

/* Check the header, key and chunk table at rec (avail bytes). */
static int read_check_head(struct node_store *s, struct op *op, const uint8_t *rec, size_t avail,
			   struct rec_hdr *h)
{
	size_t tlen;

	if (rec_hdr_unpack(rec, h) < 0 || (h->type != REC_PUT && h->type != REC_RELOC))
		return -EIO;
	tlen = rec_table_bytes(h->vlen);
	if (REC_HDR_BYTES + h->klen + tlen > avail || rec_size(h->klen, h->vlen) != loc_size(op->u.rd.loc))
		return -EIO;
	if (rec_hcrc(rec, rec + REC_HDR_BYTES, h->klen, rec + REC_HDR_BYTES + h->klen, tlen) != h->hcrc)
		return -EIO;
	if (h->klen != op->klen || memcmp(rec + REC_HDR_BYTES, op->key, op->klen) != 0)
		return -EIO;
	return 0;
}

/*
 * A read that came through the page cache and failed a check: the page may
 * be stale (a direct write raced the read that filled it), so read the same
 * blocks again from the drive before calling it an error. true: re-read.
 */
static bool read_again_direct(struct node_store *s, struct op *op)
{
	if (!op->u.rd.io.cached)
		return false;
	op->u.rd.io.cached = false;
	op->u.rd.io.res = 0;
	if (node_disk_submit(s->disk, &op->u.rd.io) < 0)
		return false;
	s->reads.inflight++;
	s->st.cache_rereads++;
	return true;
}

static void read_done(struct node_disk_io *io)
{
	struct op *op = io->arg;
	struct node_store *s = op->s;
	uint64_t rec_off = loc_off(op->u.rd.loc);
	const uint8_t *rec = op->u.rd.buf + (rec_off - op->u.rd.base);
	size_t avail = op->u.rd.base + io->len - rec_off;
	struct node_store_objstat st;
	struct rec_hdr h;
	const uint8_t *table, *val;
	uint64_t end, c0, c1;
	int ret;

	s->reads.inflight--;
	if (io->res < 0 || (size_t)io->res != io->len) {
		if (read_again_direct(s, op))
			return;
		set_err(s, "read of %zu bytes at %" PRIu64 " on '%s' failed: %s", io->len, io->off,
			s->disk->name, io->res < 0 ? strerror(-io->res) : "short read");
		read_finish(s, op, -EIO, NULL, 0, NULL);
		return;
	}
	if (op->u.rd.stage == READ_CHUNKS) {
		/* a range of a large value: verify each chunk read */
		ret = 0;
		c0 = op->u.rd.off / REC_CHUNK_BYTES;
		c1 = (op->u.rd.off + op->u.rd.len + REC_CHUNK_BYTES - 1) / REC_CHUNK_BYTES;
		/* aux = device offset of the value's first byte */
		for (uint64_t c = c0; c < c1 && ret == 0; c++) {
			uint64_t n = op->u.rd.vlen - c * REC_CHUNK_BYTES;
			const uint8_t *chunk = op->u.rd.buf + (op->u.rd.val_off + c * REC_CHUNK_BYTES - op->u.rd.base);

			if (n > REC_CHUNK_BYTES)
				n = REC_CHUNK_BYTES;
			if (ovl_crc32c(0, chunk, n) != le_get32(op->u.rd.table + 4 * c))
				ret = -EIO;
		}
		if (ret < 0) {
			if (read_again_direct(s, op))
				return;
			set_err(s, "checksum mismatch in a chunk of '%.*s' on '%s'", (int)op->klen,
				(const char *)op->key, s->disk->name);
			read_finish(s, op, ret, NULL, 0, NULL);
			return;
		}
		read_finish(s, op, 0, op->u.rd.buf + (op->u.rd.val_off + op->u.rd.off - op->u.rd.base), op->u.rd.len, NULL);
		return;
	}
	ret = read_check_head(s, op, rec, avail, &h);
	if (ret < 0) {
		if (read_again_direct(s, op))
			return;
		set_err(s, "record of '%.*s' at %" PRIu64 " on '%s' failed its header checksum",
			(int)op->klen, (const char *)op->key, rec_off, s->disk->name);
		read_finish(s, op, ret, NULL, 0, NULL);
		return;
	}
	table = rec + REC_HDR_BYTES + h.klen;
	val = table + rec_table_bytes(h.vlen);
	st = (struct node_store_objstat){ .size = h.vlen, .crc = h.vcrc, .seq = h.seq };
	if (op->kind == OP_STAT) {
		read_finish(s, op, 0, NULL, 0, &st);
		return;
	}
	if (op->u.rd.off > h.vlen)
		op->u.rd.off = h.vlen;
	end = op->u.rd.len > h.vlen - op->u.rd.off ? h.vlen : op->u.rd.off + op->u.rd.len;
	op->u.rd.len = end - op->u.rd.off;
	if (op->u.rd.stage == READ_WHOLE) {
		/* the whole record is here: verify the whole value */
		if (ovl_crc32c(0, val, h.vlen) != h.vcrc) {
			if (read_again_direct(s, op))
				return;
			set_err(s, "checksum mismatch in '%.*s' on '%s'", (int)op->klen,
				(const char *)op->key, s->disk->name);
			read_finish(s, op, -EIO, NULL, 0, NULL);
			return;
		}
		s->st.gets++;
		read_finish(s, op, 0, val + op->u.rd.off, op->u.rd.len, &st);
		return;
	}
	/* stage 1: header and table of a large value; fetch the chunks */
	op->u.rd.vlen = h.vlen;
	op->u.rd.tlen = rec_table_bytes(h.vlen);
	op->u.rd.table = malloc(op->u.rd.tlen ? op->u.rd.tlen : 1);
	if (!op->u.rd.table) {
		read_finish(s, op, -ENOMEM, NULL, 0, NULL);
		return;
	}
	memcpy(op->u.rd.table, table, op->u.rd.tlen);
	if (op->u.rd.len == 0 || op->u.rd.tlen == 0) {
		s->st.gets++;
		read_finish(s, op, 0, val + op->u.rd.off, 0, &st);
		return;
	}
	op->u.rd.val_off = rec_off + REC_HDR_BYTES + h.klen + op->u.rd.tlen;
	c0 = op->u.rd.off / REC_CHUNK_BYTES;
	c1 = (op->u.rd.off + op->u.rd.len + REC_CHUNK_BYTES - 1) / REC_CHUNK_BYTES;
	end = c1 * REC_CHUNK_BYTES < h.vlen ? c1 * REC_CHUNK_BYTES : h.vlen;
	op->u.rd.stage = READ_CHUNKS;
	s->st.gets++;
	ret = read_submit(s, op, op->u.rd.val_off + c0 * REC_CHUNK_BYTES, op->u.rd.val_off + end);
	if (ret < 0)
		read_finish(s, op, ret, NULL, 0, NULL);
}

static int get_start(struct node_store *s, enum op_kind kind, const void *key, size_t klen,
		     uint64_t off, uint64_t len, node_store_cb cb, node_store_get_cb get_cb, void *arg)
{
	struct op *op = NULL;
	uint64_t loc, from, to, rsize;
	int ret = check_key(s, key, klen);

	if (ret < 0)
		return ret;
	if (sidx_get(s->ix, key, klen, &loc) == 0)
		return -ENOENT;
	op = op_new(s, kind, key, klen);
	if (!op)
		return -ENOMEM;
	op->u.rd.loc = loc;
	op->u.rd.off = off;
	op->u.rd.len = len;
	op->cb = cb;
	op->get_cb = get_cb;
	op->arg = arg;
	from = loc_off(loc);
	rsize = loc_size(loc);
	/* small records and whole values: one read; else header first */
	if (rsize <= SMALL_READ_BYTES || (kind == OP_GET && off == 0 && len >= rsize)) {
		to = from + rsize;
		op->u.rd.stage = READ_WHOLE;
	} else {
		uint64_t tmax = rec_table_bytes(rsize);

		to = from + REC_HDR_BYTES + klen + tmax;
		if (to > from + rsize)
			to = from + rsize;
		op->u.rd.stage = READ_HEAD;
	}
	ret = read_submit(s, op, from, to);
	if (ret < 0)
		op_free(op);
	return ret;
}

int node_store_get_async(struct node_store *s, const void *key, size_t klen, uint64_t off,
			 uint64_t len, node_store_get_cb cb, void *arg)
{
	return get_start(s, OP_GET, key, klen, off, len, NULL, cb, arg);
}

int node_store_stat_async(struct node_store *s, const void *key, size_t klen, node_store_cb cb,
			  void *arg)
{
	return get_start(s, OP_STAT, key, klen, 0, 0, cb, NULL, arg);
}

/* ---- blocking wrappers ---- */

struct waiter {
	bool done;
	int res;
	void *buf;       /* get: destination (malloc'd when want_alloc) */
	size_t cap, got;
	bool want_alloc;
	struct node_store_objstat st;
};

static void waiter_cb(void *arg, int res, const struct node_store_objstat *st)
{
	struct waiter *w = arg;

	w->done = true;
	w->res = res;
	if (st)
		w->st = *st;
}

static void waiter_get_cb(void *arg, int res, struct node_store_rbuf **rb,
			  const struct node_store_objstat *st)
{
	struct waiter *w = arg;
	const void *data = *rb ? (*rb)->data : NULL;
	size_t len = *rb ? (*rb)->len : 0;

	waiter_cb(arg, res, st);
	if (res < 0 || !data)
		return;
	if (w->want_alloc) {
		w->buf = malloc(len ? len : 1);
		if (!w->buf) {
			w->res = -ENOMEM;
			return;
		}
		w->cap = len;
	}
	w->got = len < w->cap ? len : w->cap;
	if (w->got)
		memcpy(w->buf, data, w->got);
}

static int wait_for(struct node_store *s, struct waiter *w)
{
	while (!w->done) {
		int ret = node_store_poll(s, true);

		if (ret < 0 && !w->done)
			return ret;
	}
	return w->res;
}

static int maintain_space(struct node_store *s);

static int put_blocking(struct node_store *s, const void *key, size_t klen, const void *val,
		   size_t vlen)
{
	for (int attempt = 0;; attempt++) {
		struct waiter w = { 0 };
		int ret = node_store_put_async(s, key, klen, val, vlen, waiter_cb, &w);

		if (ret < 0)
			return ret;
		ret = wait_for(s, &w);
		if (ret != -ENOSPC || attempt > 0 || maintain_space(s) <= 0)
			return ret;
	}
}

static int delete_blocking(struct node_store *s, const void *key, size_t klen)
{
	for (int attempt = 0;; attempt++) {
		struct waiter w = { 0 };
		int ret = node_store_delete_async(s, key, klen, waiter_cb, &w);

		if (ret < 0)
			return ret;
		ret = wait_for(s, &w);
		if (ret != -ENOSPC || attempt > 0 || maintain_space(s) <= 0)
			return ret;
	}
}

static int get_blocking(struct node_store *s, const void *key, size_t klen, void **val,
		   size_t *vlen)
{
	struct waiter w = { .want_alloc = true };
	int ret = get_start(s, OP_GET, key, klen, 0, UINT64_MAX, NULL, waiter_get_cb, &w);

	*val = NULL;
	*vlen = 0;
	if (ret < 0)
		return ret;
	ret = wait_for(s, &w);
	if (ret < 0) {
		free(w.buf);
		return ret;
	}
	*val = w.buf;
	*vlen = w.got;
	return 0;
}

static int get_range_blocking(struct node_store *s, const void *key, size_t klen, uint64_t off,
			 uint64_t len, void *buf, size_t *got)
{
	struct waiter w = { .buf = buf, .cap = len };
	int ret = get_start(s, OP_GET, key, klen, off, len, NULL, waiter_get_cb, &w);

	*got = 0;
	if (ret < 0)
		return ret;
	ret = wait_for(s, &w);
	*got = w.got;
	return ret;
}

static int stat_blocking(struct node_store *s, const void *key, size_t klen,
		    struct node_store_objstat *st)
{
	struct waiter w = { 0 };
	int ret = get_start(s, OP_STAT, key, klen, 0, 0, waiter_cb, NULL, &w);

	if (ret < 0)
		return ret;
	ret = wait_for(s, &w);
	if (ret == 0)
		*st = w.st;
	return ret;
}

/* A finished stream whose commit is not queued yet. */
static bool streams_finishing(const struct node_store *s)
{
	for (const struct node_store_stream *st = s->streams.list; st; st = st->next)
		if (st->finishing && !st->committed && !st->err)
			return true;
	return false;
}

static int sync_blocking(struct node_store *s)
{
	while (!s->read_only && (s->appendq.head || s->commitq.head || (s->cur && s->cur->fill) ||
				 streams_finishing(s))) {
		int ret = node_store_poll(s, true);

		if (ret < 0)
			return ret;
	}
	return s->read_only ? -EROFS : 0;
}

static int checkpoint_blocking(struct node_store *s)
{
	int ret;

	while ((ret = ck_start(s)) == -EAGAIN || ret == -EBUSY) {
		ret = node_store_poll(s, true);
		if (ret < 0)
			return ret;
	}
	if (ret < 0)
		return ret;
	while (s->ck.state != CK_IDLE) {
		ret = node_store_poll(s, true);
		if (ret < 0)
			return ret;
	}
	if (s->ck.err)
		return s->ck.err;
	return s->read_only ? -EROFS : 0;
}

int node_store_list(struct node_store *s, const void *prefix, size_t plen,
		    const void *start_after, size_t salen, unsigned limit,
		    node_store_list_cb cb, void *arg)
{
	struct sidx_iter it;
	const uint8_t *k;
	size_t kl;
	uint64_t loc;
	unsigned n = 0;

	if (plen > NODE_STORE_KEY_MAX || salen > NODE_STORE_KEY_MAX)
		return -E2BIG;
	/* start at the later of the prefix and start_after */
	if (start_after && salen &&
	    (!plen || memcmp(start_after, prefix, salen < plen ? salen : plen) >= 0))
		sidx_seek(s->ix, &it, start_after, salen, true);
	else
		sidx_seek(s->ix, &it, plen ? prefix : NULL, plen, false);
	while (n < limit && sidx_next(s->ix, &it, &k, &kl, &loc)) {
		if (plen && (kl < plen || memcmp(k, prefix, plen) != 0)) {
			if (memcmp(k, prefix, kl < plen ? kl : plen) > 0)
				break; /* past every key with the prefix */
			continue;
		}
		n++;
		if (cb && cb(arg, k, kl))
			break;
	}
	return (int)n;
}

/* ---- streamed puts ---- */

static void stream_free(struct node_store_stream *st)
{
	struct node_store *s = st->s;

	for (struct node_store_stream **pp = &s->streams.list; *pp; pp = &(*pp)->next) {
		if (*pp == st) {
			*pp = st->next;
			break;
		}
	}
	/* back to the buffer cache: a fresh 256 KiB buffer per stream costs
	 * page faults on every PUT */
	for (int i = 0; i < 2; i++)
		rbuf_put(s, st->b[i].mem, st->b[i].mem_cap);
	free(st->head);
	free(st->table);
	free(st->key);
	free(st);
}

/* Free a stream its owner let go of, once nothing refers to it; a finished
 * one that failed gets its callback first. */
static void stream_maybe_free(struct node_store_stream *st)
{
	struct node_store *s = st->s;

	if (!st->released || st->ios || st->resv || (!st->committed && !st->err))
		return;
	if (st->pinned) {
		s->segs[st->seg].streams--;
		st->pinned = false;
	}
	if (st->commit) {
		/* the queued commit fails with the stream */
		st->commit->u.commit.stream = NULL;
		st->commit->u.commit.err = st->err;
		st->commit = NULL;
	}
	stream_free(st);
}

static void stream_wdone(struct node_disk_io *io);

static int stream_submit(struct node_store_stream *st, struct node_disk_io *io, void *buf,
			 size_t len, uint64_t roff)
{
	struct node_store *s = st->s;
	int ret;

	*io = (struct node_disk_io){ .op = DISK_WRITE, .buf = buf, .len = len,
				     .off = st->region_off + roff, .done = stream_wdone, .arg = st };
	ret = node_disk_submit(s->disk, io);
	if (ret < 0) {
		go_read_only(s, "cannot queue write at %" PRIu64 ": %s", io->off, strerror(-ret));
		st->err = -EROFS;
		return ret;
	}
	st->ios++;
	s->streams.ios++;
	return 0;
}

/* The record's first blocks: header, key, chunk table, first value bytes. */
static void stream_build_head(struct node_store_stream *st)
{
	struct rec_hdr h = { 0 };

	h.type = REC_PUT;
	h.klen = (uint16_t)st->klen;
	h.vlen = (uint32_t)st->vlen;
	h.flags = st->vlen > REC_CHUNK_BYTES ? REC_FLAG_CHUNKED : 0;
	h.prev = st->prev; /* never a link of the log: the RESV's hcrc */
	h.seq = st->seq;
	h.vcrc = st->crc;
	memcpy(st->head + REC_HDR_BYTES, st->key, st->klen);
	if (st->tlen)
		memcpy(st->head + REC_HDR_BYTES + st->klen, st->table, st->tlen);
	rec_hdr_pack(&h, st->head);
	h.hcrc = rec_hcrc(st->head, st->key, st->klen, st->table, st->tlen);
	rec_hdr_pack(&h, st->head);
	st->hcrc = h.hcrc;
}

/* Every byte of the region is written: let the queued commit go. */
static void stream_commit(struct node_store_stream *st)
{
	struct op *op = st->commit;

	if (!op) /* it failed meanwhile (read-only) */
		return;
	le_put32(op->rec.owned_val, st->hcrc);
	le_put32(op->rec.owned_val + 4, st->crc);
	le_put64(op->rec.owned_val + 8, st->vlen);
	op->rec.val = op->rec.owned_val;
	op->rec.vlen = 16;
	op->u.commit.loc = loc_make(st->region_off, st->rsize);
	op->u.commit.seq = st->seq;
	op->u.commit.stream = NULL;
	st->commit = NULL;
	st->committed = true;
	st->pinned = false; /* the commit holds the segment now */
}

/* Submit what can be written; at the end, the head; then the commit. */
static void stream_advance(struct node_store_stream *st)
{
	if (!st->err && st->placed) {
		for (int i = 0; i < 2; i++) {
			struct sbuf *b = &st->b[i];

			if (b->state == SB_FULL &&
			    stream_submit(st, &b->io, b->mem, b->cap, b->roff) == 0)
				b->state = SB_IO;
		}
		/* the checksums are known at finish: the head goes out with the
		 * last value blocks, not after them */
		if (st->finishing && !st->head_io && st->b[0].state != SB_FULL &&
		    st->b[1].state != SB_FULL) {
			stream_build_head(st);
			if (stream_submit(st, &st->head_io_req, st->head, st->head_len, 0) == 0)
				st->head_io = true;
		}
	}
	stream_maybe_free(st);
}

static void stream_wdone(struct node_disk_io *io)
{
	struct node_store_stream *st = io->arg;
	struct node_store *s = st->s;
	bool head = io == &st->head_io_req;

	st->ios--;
	s->streams.ios--;
	if (io->res < 0 || (size_t)io->res != io->len) {
		go_read_only(s, "write of %zu bytes at offset %" PRIu64 " failed: %s", io->len, io->off,
			     io->res < 0 ? strerror(-io->res) : "short write");
		st->err = -EROFS;
	}
	if (!head)
		((struct sbuf *)((char *)io - offsetof(struct sbuf, io)))->state = SB_FREE;
	else
		st->head_done = true;
	if (st->head_done && !st->ios && !st->err)
		/* every byte of the region is written: the commit may follow */
		stream_commit(st);
	if (st->released) {
		stream_advance(st);
		return;
	}
	stream_advance(st);
	if (st->want_ready && st->ready) {
		st->want_ready = false;
		st->ready(st->ready_arg); /* last: it may end the stream */
	}
}

/* After serialize: start the writes of newly placed streams, and tell
 * waiting owners about failures. */
static void streams_kick(struct node_store *s)
{
	for (struct node_store_stream *st = s->streams.list, *next; st; st = next) {
		next = st->next;
		if (!st->kick)
			continue;
		st->kick = false;
		stream_advance(st);
		if (!st->released && st->want_ready && st->ready) {
			st->want_ready = false;
			st->ready(st->ready_arg);
		}
	}
}

static void stream_placed(struct node_store *s, struct op *op, uint32_t si)
{
	struct node_store_stream *st = op->u.resv.stream;

	op->u.resv.stream = NULL;
	st->resv = NULL;
	st->placed = true;
	st->region_off = align_up(op->rec.pos + op->rec.rsize, DISK_BLOCK_BYTES);
	st->seq = op->rec.seq;
	st->prev = s->chain; /* the RESV's hcrc */
	st->seg = si;
	s->segs[si].streams++;
	st->pinned = true;
	st->kick = true;
}

static void stream_resv_failed(struct node_store *s, struct op *op, int res)
{
	struct node_store_stream *st = op->u.resv.stream;

	op->u.resv.stream = NULL;
	st->resv = NULL;
	st->err = res;
	st->kick = true;
}

int node_store_stream_begin(struct node_store *s, const void *key, size_t klen, uint64_t size,
			    void (*ready)(void *arg), void *arg, struct node_store_stream **out)
{
	struct node_store_stream *st = NULL;
	struct op *op = NULL;
	uint64_t rsize;
	int ret = check_key(s, key, klen);

	*out = NULL;
	if (ret < 0)
		return ret;
	rsize = rec_size(klen, size);
	if (size > NODE_STORE_VALUE_MAX ||
	    DISK_BLOCK_BYTES + align_up(rsize, DISK_BLOCK_BYTES) > s->seg_bytes - 2 * DISK_BLOCK_BYTES) {
		set_err(s, "value of %" PRIu64 " bytes refused (at most %u bytes, and a record must fit in one %" PRIu64 "-byte segment)",
			size, NODE_STORE_VALUE_MAX, s->seg_bytes);
		return -E2BIG;
	}
	if (s->read_only) {
		set_err(s, "store on '%s' is read-only: %s", s->disk->name, s->ro_reason);
		return -EROFS;
	}
	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->s = s;
	st->klen = klen;
	st->vlen = size;
	st->rsize = rsize;
	st->region_len = align_up(rsize, DISK_BLOCK_BYTES);
	st->tlen = rec_table_bytes(size);
	st->hlen = REC_HDR_BYTES + klen + st->tlen;
	st->head_len = (size_t)align_up(st->hlen, DISK_BLOCK_BYTES);
	st->next_roff = st->head_len;
	st->ready = ready;
	st->ready_arg = arg;
	st->key = malloc(klen);
	st->table = calloc(1, st->tlen ? st->tlen : 1);
	st->head = aligned_alloc_blocks(st->head_len);
	if (!st->key || !st->table || !st->head) {
		ret = -ENOMEM;
		goto fail;
	}
	memcpy(st->key, key, klen);
	memset(st->head, 0, st->head_len);
	for (int i = 0; i < 2 && st->region_len > st->head_len; i++) {
		st->b[i].mem = rbuf_get(s, s->o.write_buffer_bytes, &st->b[i].mem_cap);
		if (!st->b[i].mem) {
			ret = -ENOMEM;
			goto fail;
		}
		st->b[i].state = SB_FREE;
	}
	op = op_new(s, OP_RESV, NULL, 0);
	if (!op) {
		ret = -ENOMEM;
		goto fail;
	}
	op->rec.val = (const uint8_t *)"";
	op->u.resv.region_len = st->region_len;
	op->u.resv.stream = st;
	st->resv = op;
	q_push(&s->appendq, op);
	st->next = s->streams.list;
	s->streams.list = st;
	*out = st;
	return 0;
fail:
	stream_free(st);
	return ret;
}

/* Running checksums: the whole value's and each 64 KiB chunk's. */
static void stream_crc(struct node_store_stream *st, const uint8_t *p, size_t n)
{
	uint64_t v = st->got;

	st->crc = ovl_crc32c(st->crc, p, n);
	while (st->tlen && n) {
		size_t take = REC_CHUNK_BYTES - (size_t)(v % REC_CHUNK_BYTES);

		if (take > n)
			take = n;
		st->ccrc = ovl_crc32c(st->ccrc, p, take);
		v += take;
		p += take;
		n -= take;
		if (v % REC_CHUNK_BYTES == 0 || v == st->vlen) {
			le_put32(st->table + 4 * ((v - 1) / REC_CHUNK_BYTES), st->ccrc);
			st->ccrc = 0;
		}
	}
}

ssize_t node_store_stream_write(struct node_store_stream *st, const void *buf, size_t len)
{
	struct node_store *s = st->s;
	const uint8_t *p = buf;
	size_t done = 0;

	if (st->err)
		return st->err;
	if (st->finishing || st->released || len > st->vlen - st->got) {
		set_err(s, "stream of '%.*s': %zu bytes more than the %" PRIu64 " declared", (int)st->klen,
			(const char *)st->key, len, st->vlen);
		return -EINVAL;
	}
	while (done < len) {
		uint64_t roff = st->hlen + st->got; /* where the next byte goes in the region */
		size_t n = len - done;
		struct sbuf *b = NULL;

		if (roff < st->head_len) {
			if (n > st->head_len - roff)
				n = (size_t)(st->head_len - roff);
			memcpy(st->head + roff, p + done, n);
		} else {
			b = &st->b[st->cur];
			if (b->state == SB_FREE) {
				b->roff = st->next_roff;
				b->cap = (size_t)(st->region_len - b->roff < s->o.write_buffer_bytes
							  ? st->region_len - b->roff : s->o.write_buffer_bytes);
				b->fill = 0;
				b->state = SB_FILL;
				st->next_roff += b->cap;
			}
			if (b->state != SB_FILL) {
				st->want_ready = true; /* both buffers on their way to the disk */
				break;
			}
			if (n > b->cap - b->fill)
				n = b->cap - b->fill;
			memcpy(b->mem + b->fill, p + done, n);
			b->fill += n;
		}
		stream_crc(st, p + done, n);
		st->got += n;
		done += n;
		if (b && st->got == st->vlen) {
			/* the record's padding to its block */
			memset(b->mem + b->fill, 0, b->cap - b->fill);
			b->fill = b->cap;
		}
		if (b && b->fill == b->cap) {
			b->state = SB_FULL;
			st->cur ^= 1;
		}
	}
	stream_advance(st);
	return (ssize_t)done;
}

size_t node_store_stream_bytes(const struct node_store *s)
{
	return 2 * s->o.write_buffer_bytes + 3 * DISK_BLOCK_BYTES + sizeof(struct node_store_stream);
}

uint32_t node_store_stream_crc(const struct node_store_stream *st)
{
	return st->crc;
}

int node_store_stream_finish(struct node_store_stream **stp, uint32_t crc, node_store_cb cb,
			     void *arg)
{
	struct node_store_stream *st = *stp;
	struct node_store *s = st->s;
	struct op *op = NULL;
	int ret = st->err;

	if (ret == 0 && st->got != st->vlen) {
		set_err(s, "stream of '%.*s' ended after %" PRIu64 " of %" PRIu64 " bytes", (int)st->klen,
			(const char *)st->key, st->got, st->vlen);
		ret = -EINVAL;
	}
	if (ret == 0 && st->crc != crc) {
		set_err(s, "value of '%.*s' has crc32c %08x, not %08x; nothing stored", (int)st->klen,
			(const char *)st->key, st->crc, crc);
		ret = -EBADMSG;
	}
	if (ret < 0) {
		node_store_stream_abort(stp);
		return ret;
	}
	/* the commit takes its place in the log's order now, and waits there
	 * for the region's writes: later operations apply after it */
	op = op_new(s, OP_COMMIT, st->key, st->klen);
	if (op)
		op->rec.owned_val = malloc(16);
	if (!op || !op->rec.owned_val) {
		op_free(op);
		node_store_stream_abort(stp);
		return -ENOMEM;
	}
	op->rec.val = op->rec.owned_val;
	op->rec.vlen = 16;
	op->cb = cb;
	op->arg = arg;
	op->u.commit.stream = st;
	st->commit = op;
	q_push(&s->appendq, op);
	st->finishing = true;
	st->released = true;
	*stp = NULL;
	stream_advance(st);
	return 0;
}

void node_store_stream_abort(struct node_store_stream **stp)
{
	struct node_store_stream *st = stp ? *stp : NULL;

	if (!st)
		return;
	*stp = NULL;
	st->released = true;
	st->finishing = false;
	if (!st->err)
		st->err = -ECANCELED;
	if (st->resv && !st->resv->rec.started) {
		/* never placed: take the reservation back */
		struct opq *q = &st->s->appendq;
		struct op *prev = NULL;

		for (struct op *op = q->head; op; prev = op, op = op->next) {
			if (op != st->resv)
				continue;
			if (prev)
				prev->next = op->next;
			else
				q->head = op->next;
			if (q->tail == op)
				q->tail = prev;
			q->n--;
			op_free(op);
			break;
		}
		st->resv = NULL;
	}
	stream_maybe_free(st);
}

/* ---- compaction ---- */

static int relocate_one(struct node_store *s, const uint8_t *key, size_t klen, uint64_t loc)
{
	struct op *op = op_new(s, OP_RELOC, key, klen);
	uint64_t from = loc_off(loc), size = loc_size(loc);
	uint64_t a = align_down(from, DISK_BLOCK_BYTES), b = align_up(from + size, DISK_BLOCK_BYTES);
	uint8_t *buf = NULL;
	struct rec_hdr h;
	int ret;

	if (!op)
		return -ENOMEM;
	buf = aligned_alloc_blocks(b - a);
	if (!buf) {
		op_free(op);
		return -ENOMEM;
	}
	ret = node_disk_sync_io(s->disk, DISK_READ, buf, b - a, a);
	if (ret == 0)
		ret = rec_check(buf + (from - a), size, &h);
	if (ret == 0 && (h.klen != klen || memcmp(buf + (from - a) + REC_HDR_BYTES, key, klen)))
		ret = -EIO;
	if (ret < 0) {
		/* leave a damaged record where it is: scrub reports it */
		s->st.checksum_errors += ret == -EIO;
		free(buf);
		op_free(op);
		return ret == -EIO ? 0 : ret;
	}
	op->rec.vlen = h.vlen;
	op->rec.owned_val = malloc(h.vlen ? h.vlen : 1);
	if (!op->rec.owned_val) {
		free(buf);
		op_free(op);
		return -ENOMEM;
	}
	memcpy(op->rec.owned_val, buf + (from - a) + REC_HDR_BYTES + klen + rec_table_bytes(h.vlen), h.vlen);
	op->rec.val = op->rec.owned_val;
	op->u.reloc.from = loc;
	free(buf);
	q_push(&s->appendq, op);
	return 0;
}

static int compact_blocking(struct node_store *s)
{
	int64_t victim = -1;
	uint64_t best = UINT64_MAX;
	struct sidx_iter it;
	const uint8_t *k;
	size_t kl;
	uint64_t loc, queued = 0;
	uint8_t *last = NULL;
	size_t lastlen = 0;
	int ret = 0;

	if (s->read_only)
		return -EROFS;
	reclaim_segments(s);
	for (uint32_t i = 0; i < s->nsegs; i++) {
		const struct seg *g = &s->segs[i];

		if (g->state != SEG_USED || g->max_seq >= s->ck.old_p0_seq || g->streams)
			continue;
		if (g->live < best && g->live < s->seg_bytes * 3 / 4) {
			best = g->live;
			victim = i;
		}
	}
	if (victim < 0)
		return 0;
	last = malloc(NODE_STORE_KEY_MAX);
	if (!last)
		return -ENOMEM;
	/* Walk the index in bounded rounds; resume after the last key seen. */
	for (bool more = true; more;) {
		sidx_seek(s->ix, &it, lastlen ? last : NULL, lastlen, true);
		more = false;
		while (sidx_next(s->ix, &it, &k, &kl, &loc)) {
			memcpy(last, k, kl);
			lastlen = kl;
			if (seg_of(s, loc_off(loc)) != (uint32_t)victim)
				continue;
			ret = relocate_one(s, k, kl, loc);
			if (ret < 0)
				goto out;
			queued += loc_size(loc);
			if (queued >= 4 * s->o.write_buffer_bytes) {
				queued = 0;
				more = true;
				break; /* the index may change while we flush */
			}
		}
		ret = node_store_sync(s);
		if (ret < 0)
			goto out;
	}
	s->st.compactions++;
	reclaim_segments(s);
	ret = 1;
out:
	free(last);
	return ret;
}

/* Try to make room after -ENOSPC: checkpoints release old segments, then
 * compaction empties the emptiest. Returns 1 if a segment came free. */
static int reclaim_blocking(struct node_store *s)
{
	return maintain_space(s);
}

static int maintain_space(struct node_store *s)
{
	uint32_t before = s->nfree;
	int ret;

	for (int i = 0; i < 2; i++) {
		reclaim_segments(s);
		if (s->nfree > reserve_segments(s))
			return 1;
		ret = node_store_checkpoint(s);
		if (ret < 0)
			return ret;
	}
	while ((ret = node_store_compact(s)) == 1 && s->nfree <= reserve_segments(s))
		;
	if (ret < 0)
		return ret;
	return s->nfree > before ? 1 : 0;
}

/* ---- scrub ---- */

static int scrub_blocking(struct node_store *s, uint64_t budget_bytes,
		     struct node_store_scrub_report *r)
{
	struct sidx_iter it;
	const uint8_t *k;
	size_t kl;
	uint64_t loc;
	int ret = 0;

	memset(r, 0, sizeof(*r));
	if (!s->reads.scrub_key) {
		s->reads.scrub_key = malloc(NODE_STORE_KEY_MAX);
		if (!s->reads.scrub_key)
			return -ENOMEM;
	}
	while (r->bytes < budget_bytes) {
		struct waiter w = { 0 };
		uint8_t key[NODE_STORE_KEY_MAX];

		sidx_seek(s->ix, &it, s->reads.scrub_started ? s->reads.scrub_key : NULL, s->reads.scrub_klen, true);
		if (!sidx_next(s->ix, &it, &k, &kl, &loc)) {
			s->reads.scrub_started = false;
			r->wrapped = true;
			break;
		}
		memcpy(key, k, kl);
		memcpy(s->reads.scrub_key, k, kl);
		s->reads.scrub_klen = kl;
		s->reads.scrub_started = true;
		w.cap = 0;
		ret = get_start(s, OP_GET, key, kl, 0, UINT64_MAX, NULL, waiter_get_cb, &w);
		if (ret == 0)
			ret = wait_for(s, &w);
		r->records++;
		r->bytes += loc_size(loc);
		if (ret == -EIO)
			r->errors++;
		else if (ret < 0 && ret != -ENOENT)
			return ret;
	}
	return 0;
}

/* ---- stats ---- */

void node_store_stats(const struct node_store *s, struct node_store_stats *st)
{
	uint64_t live = 0;

	*st = s->st;
	for (uint32_t i = 0; i < s->nsegs; i++)
		live += s->segs[i].live;
	st->objects = sidx_count(s->ix);
	st->live_bytes = live;
	st->capacity_bytes = (uint64_t)s->nsegs * s->seg_bytes;
	st->segments = s->nsegs;
	st->segments_free = s->nfree;
	st->segments_reserved = reserve_segments(s);
	st->index_bytes = sidx_bytes(s->ix);
	st->index_bytes_per_object = st->objects ? (double)st->index_bytes / st->objects : 0;
	st->seq = s->seq;
	st->read_only = s->read_only;
	snprintf(st->read_only_reason, sizeof(st->read_only_reason), "%s", s->ro_reason);
}

/* ---- superblock, format, recovery ---- */

static void sb_pack(const struct node_store *s, uint8_t *b)
{
	memset(b, 0, DISK_BLOCK_BYTES);
	memcpy(b, SB_MAGIC, 8);
	le_put32(b + 8, SB_VERSION);
	le_put32(b + 12, 0);
	memcpy(b + 16, s->uuid, 16);
	le_put64(b + 32, s->seg_bytes);
	le_put32(b + 40, s->nsegs);
	le_put64(b + 44, s->data_start);
	le_put64(b + 52, s->disk->size);
	le_put64(b + 60, s->created_at);
	le_put32(b + 124, ovl_crc32c(0, b, 124));
}

enum sb_verdict { SBV_OK, SBV_ZERO, SBV_FOREIGN, SBV_CORRUPT, SBV_VERSION };

static enum sb_verdict sb_check(const uint8_t *b)
{
	bool zero = true;

	for (unsigned i = 0; i < DISK_BLOCK_BYTES && zero; i++)
		zero = b[i] == 0;
	if (zero)
		return SBV_ZERO;
	if (memcmp(b, SB_MAGIC, 6) != 0)
		return SBV_FOREIGN;
	if (le_get32(b + 124) != ovl_crc32c(0, b, 124))
		return SBV_CORRUPT;
	if (memcmp(b, SB_MAGIC, 8) != 0 || le_get32(b + 8) != SB_VERSION)
		return SBV_VERSION;
	return SBV_OK;
}

static int sb_unpack(struct node_store *s, const uint8_t *b, char *err, size_t errlen)
{
	memcpy(s->uuid, b + 16, 16);
	s->seg_bytes = le_get64(b + 32);
	s->nsegs = le_get32(b + 40);
	s->data_start = le_get64(b + 44);
	s->created_at = le_get64(b + 60);
	if (s->seg_bytes < NODE_STORE_SEGMENT_MIN || (s->seg_bytes & (s->seg_bytes - 1)) ||
	    s->data_start < 4 * DISK_BLOCK_BYTES || s->data_start % DISK_BLOCK_BYTES || s->nsegs < 4) {
		snprintf(err, errlen, "superblock of '%s' has impossible geometry", s->disk->name);
		return -EUCLEAN;
	}
	if (s->data_start + (uint64_t)s->nsegs * s->seg_bytes > s->disk->size) {
		snprintf(err, errlen,
			 "drive '%s' is smaller (%" PRIu64 " bytes) than the store on it (%" PRIu64 " bytes): truncated?",
			 s->disk->name, s->disk->size, s->data_start + (uint64_t)s->nsegs * s->seg_bytes);
		return -EUCLEAN;
	}
	return 0;
}

static int write_ptr_slot(struct node_store *s, unsigned slot, uint64_t gen, uint64_t p0_off,
			  uint64_t p0_seq, uint32_t p0_prev)
{
	ptr_pack(s->ck.ptrbuf, gen, p0_off, p0_seq, p0_prev, 0, 0, 0);
	return node_disk_sync_io(s->disk, DISK_WRITE, s->ck.ptrbuf, DISK_BLOCK_BYTES,
				 PTR_SLOT_OFF(slot));
}

static int format(struct node_store *s, char *err, size_t errlen)
{
	uint8_t *b = s->ck.ptrbuf;
	struct node_rng rng;
	uint64_t r;
	int ret;

	s->seg_bytes = s->o.segment_bytes;
	s->data_start = DATA_START_BYTES;
	if (s->disk->size < s->data_start + 4 * s->seg_bytes) {
		snprintf(err, errlen,
			 "drive '%s' is too small (%" PRIu64 " bytes): a store needs at least %" PRIu64 " bytes with %" PRIu64 "-byte segments",
			 s->disk->name, s->disk->size, s->data_start + 4 * s->seg_bytes, s->seg_bytes);
		return -ENOSPC;
	}
	s->nsegs = (uint32_t)((s->disk->size - s->data_start) / s->seg_bytes);
	node_rng_seed(&rng, s->o.seed ^ now_ns(s));
	for (int i = 0; i < 16; i += 8) {
		r = node_rng_next(&rng);
		memcpy(s->uuid + i, &r, 8);
	}
	s->created_at = s->clock.wall_s(s->clock.arg);
	/* erase both pointer slots first, so a half-done format never looks valid */
	memset(b, 0, DISK_BLOCK_BYTES);
	for (unsigned i = 0; i < 2; i++) {
		ret = node_disk_sync_io(s->disk, DISK_WRITE, b, DISK_BLOCK_BYTES, PTR_SLOT_OFF(i));
		if (ret < 0)
			goto io_err;
	}
	/* the chain starts from the drive uuid: stale records never link */
	ret = write_ptr_slot(s, 1, 1, s->data_start, 1, ovl_crc32c(0, s->uuid, 16));
	if (ret < 0)
		goto io_err;
	ret = node_disk_sync_io(s->disk, DISK_FLUSH, NULL, 0, 0);
	if (ret < 0)
		goto io_err;
	for (unsigned i = 0; i < 2; i++) {
		sb_pack(s, b);
		ret = node_disk_sync_io(s->disk, DISK_WRITE, b, DISK_BLOCK_BYTES, SB_COPY_OFF(i));
		if (ret < 0)
			goto io_err;
	}
	ret = node_disk_sync_io(s->disk, DISK_FLUSH, NULL, 0, 0);
	if (ret < 0)
		goto io_err;
	return 0;
io_err:
	snprintf(err, errlen, "cannot format drive '%s': %s", s->disk->name, strerror(-ret));
	return ret;
}

struct ptr_slot {
	bool valid;
	uint64_t gen, p0_off, p0_seq, end_off, end_size;
	uint32_t p0_prev, end_hcrc;
};

static void ptr_parse(const uint8_t *p, struct ptr_slot *ps)
{
	memset(ps, 0, sizeof(*ps));
	if (memcmp(p, PTR_MAGIC, 8) != 0 || le_get32(p + 60) != ovl_crc32c(0, p, 60))
		return;
	ps->gen = le_get64(p + 8);
	ps->p0_off = le_get64(p + 16);
	ps->p0_seq = le_get64(p + 24);
	ps->p0_prev = le_get32(p + 32);
	ps->end_off = le_get64(p + 36);
	ps->end_size = le_get64(p + 44);
	ps->end_hcrc = le_get32(p + 52);
	ps->valid = ps->gen > 0;
}

/* Read a whole record at off (size bytes) into a fresh buffer; verify it. */
static int read_record(struct node_store *s, uint64_t off, uint64_t size, uint8_t **bufp,
		       const uint8_t **rec, struct rec_hdr *h)
{
	uint64_t a = align_down(off, DISK_BLOCK_BYTES), b = align_up(off + size, DISK_BLOCK_BYTES);
	uint8_t *buf = NULL;
	int ret;

	*bufp = NULL;
	if (off < s->data_start || b > s->disk->size || size < REC_HDR_BYTES)
		return -EBADMSG;
	buf = aligned_alloc_blocks(b - a);
	if (!buf)
		return -ENOMEM;
	ret = node_disk_sync_io(s->disk, DISK_READ, buf, b - a, a);
	if (ret == 0)
		ret = rec_check(buf + (off - a), size, h);
	if (ret < 0) {
		free(buf);
		return ret;
	}
	*bufp = buf;
	*rec = buf + (off - a);
	return 0;
}

static int load_part_items(struct node_store *s, const uint8_t *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		if (p[i] == CK_ITEM_SEG && i + 14 <= n) {
			uint32_t si = le_get32(p + i + 1);

			if (si >= s->nsegs || p[i + 5] > SEG_USED)
				return -EBADMSG;
			s->segs[si].state = p[i + 5];
			s->segs[si].max_seq = le_get64(p + i + 6);
			i += 14;
		} else if (p[i] == CK_ITEM_KEY && i + 3 <= n) {
			size_t kl = p[i + 1] | (size_t)p[i + 2] << 8;
			uint64_t loc;

			if (kl == 0 || kl > NODE_STORE_KEY_MAX || i + 11 + kl > n)
				return -EBADMSG;
			loc = le_get64(p + i + 3 + kl);
			if (loc_off(loc) < s->data_start || loc_off(loc) + loc_size(loc) > s->disk->size)
				return -EBADMSG;
			if (sidx_append_sorted(s->ix, p + i + 3, kl, loc) < 0)
				return -EBADMSG;
			i += 11 + kl;
		} else {
			return -EBADMSG;
		}
	}
	return 0;
}

static int load_checkpoint(struct node_store *s, const struct ptr_slot *ps)
{
	uint8_t *buf = NULL, *pbuf = NULL;
	const uint8_t *rec = NULL, *pl = NULL, *prec = NULL;
	struct rec_hdr h, ph;
	uint32_t nparts;
	int ret = 0;

	for (uint32_t i = 0; i < s->nsegs; i++)
		s->segs[i] = (struct seg){ 0 };
	sidx_destroy(&s->ix);
	s->ix = sidx_new();
	if (!s->ix)
		return -ENOMEM;
	if (ps->end_off == 0) /* a fresh store: empty */
		return 0;
	ret = read_record(s, ps->end_off, ps->end_size, &buf, &rec, &h);
	if (ret < 0)
		goto out;
	pl = rec + REC_HDR_BYTES + h.klen + rec_table_bytes(h.vlen);
	if (h.type != REC_CKPT_END || h.hcrc != ps->end_hcrc || h.vlen < 32) {
		ret = -EBADMSG;
		goto out;
	}
	nparts = le_get32(pl + 20);
	if (le_get64(pl) != ps->p0_off || le_get64(pl + 8) != ps->p0_seq ||
	    32 + (uint64_t)nparts * 12 != h.vlen) {
		ret = -EBADMSG;
		goto out;
	}
	for (uint32_t i = 0; i < nparts; i++) {
		ret = read_record(s, le_get64(pl + 32 + 12 * i), le_get32(pl + 40 + 12 * i), &pbuf,
				  &prec, &ph);
		if (ret == 0 && (ph.type != REC_CKPT_PART || ph.aux != ps->p0_seq))
			ret = -EBADMSG;
		if (ret == 0)
			ret = load_part_items(s, prec + REC_HDR_BYTES + rec_table_bytes(ph.vlen), ph.vlen);
		free(pbuf);
		pbuf = NULL;
		if (ret < 0)
			goto out;
	}
	if (sidx_count(s->ix) + s->nsegs != le_get64(pl + 24))
		ret = -EBADMSG;
out:
	free(buf);
	return ret;
}

/* Window reader for replay. */
struct store_recovery {
	uint8_t *buf;
	uint64_t base;
	size_t len, cap;
};

static const uint8_t *win_get(struct node_store *s, struct store_recovery *w, uint64_t off, size_t len)
{
	uint64_t a, b;

	if (w->len && off >= w->base && off + len <= w->base + w->len)
		return w->buf + (off - w->base);
	a = align_down(off, DISK_BLOCK_BYTES);
	b = align_up(off + len, DISK_BLOCK_BYTES);
	if (b - a < REPLAY_WINDOW_BYTES)
		b = a + (REPLAY_WINDOW_BYTES < s->seg_bytes / 4 ? REPLAY_WINDOW_BYTES : s->seg_bytes / 4);
	if (b < align_up(off + len, DISK_BLOCK_BYTES))
		b = align_up(off + len, DISK_BLOCK_BYTES);
	if (b > s->disk->size)
		b = s->disk->size;
	if (off + len > b)
		return NULL;
	if (b - a > w->cap) {
		free(w->buf);
		w->buf = aligned_alloc_blocks(b - a);
		w->cap = w->buf ? b - a : 0;
		if (!w->buf)
			return NULL;
	}
	w->len = 0;
	if (node_disk_sync_io(s->disk, DISK_READ, w->buf, b - a, a) < 0)
		return NULL;
	w->base = a;
	w->len = b - a;
	return w->buf + (off - a);
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/*
 * A COMMIT met during replay: apply it only if the streamed record it names
 * is whole (every checksum) and is the one it committed (its hcrc). A commit
 * that made it to the drive without its region was never acknowledged (the
 * region's writes had completed before the commit was written, and an
 * acknowledgement needs a flush after that).
 */
static int replay_commit(struct node_store *s, const uint8_t *rec, const struct rec_hdr *h)
{
	const uint8_t *key = rec + REC_HDR_BYTES, *val = key + h->klen;
	uint64_t loc = h->aux, off = loc_off(loc), size = loc_size(loc), old;
	uint8_t *buf = NULL;
	const uint8_t *inner = NULL;
	struct rec_hdr ih;
	int ret;

	if (h->klen == 0 || h->klen > NODE_STORE_KEY_MAX || h->vlen != 16 ||
	    off < s->data_start || off + size > s->data_start + (uint64_t)s->nsegs * s->seg_bytes) {
		s->st.discarded_tail_bytes++;
		return 0;
	}
	ret = read_record(s, off, size, &buf, &inner, &ih);
	if (ret == -ENOMEM)
		return ret;
	if (ret == 0 && ih.type == REC_PUT && ih.klen == h->klen &&
	    memcmp(inner + REC_HDR_BYTES, key, h->klen) == 0 && ih.hcrc == le_get32(val) &&
	    rec_size(ih.klen, ih.vlen) == size) {
		ret = sidx_set(s->ix, key, h->klen, loc, &old);
	} else {
		s->st.discarded_tail_bytes++;
		ret = 0;
	}
	free(buf);
	return ret;
}

/* Replay the log from the checkpoint's P0; stop at the first record that
 * is missing, torn or not linked to the one before. */
static int replay(struct node_store *s, const struct ptr_slot *ps)
{
	struct store_recovery w = { 0 };
	uint64_t pos = ps->p0_off, seq = ps->p0_seq, last_end = ps->p0_off, old;
	uint32_t prev = ps->p0_prev, si = seg_of(s, pos);
	int ret = 0;

	s->segs[si].state = SEG_HEAD;
	for (;;) {
		const uint8_t *p;
		struct rec_hdr h;
		uint64_t rsize, loc;

		si = seg_of(s, pos);
		if (pos + REC_HDR_BYTES > seg_start(s, si) + s->seg_bytes)
			break;
		p = win_get(s, &w, pos, REC_HDR_BYTES);
		if (!p)
			break;
		rsize = 0;
		if (rec_hdr_unpack(p, &h) == 0 && h.prev == prev && h.seq == seq) {
			rsize = rec_size(h.klen, h.vlen);
			if (pos + rsize > seg_start(s, si) + s->seg_bytes)
				rsize = 0;
			else if (!(p = win_get(s, &w, pos, rsize)) || rec_check(p, rsize, &h) < 0)
				rsize = 0;
		}
		if (rsize == 0) {
			/*
			 * Not the next record. Mid-block, the rest of the block
			 * is batch padding, or the torn tail of a batch that was
			 * never acknowledged; a later life of the log continues
			 * at the next block, and the chain proves it. On a block
			 * boundary, the log ends here.
			 */
			if (pos % DISK_BLOCK_BYTES) {
				if (!all_zero(p, REC_HDR_BYTES))
					s->st.discarded_tail_bytes += align_up(pos, DISK_BLOCK_BYTES) - pos;
				pos = align_up(pos, DISK_BLOCK_BYTES);
				continue;
			}
			break;
		}
		loc = loc_make(pos, rsize);
		switch (h.type) {
		case REC_PUT:
			if (h.klen == 0 || h.klen > NODE_STORE_KEY_MAX)
				goto bad;
			if (sidx_set(s->ix, p + REC_HDR_BYTES, h.klen, loc, &old) < 0) {
				ret = -ENOMEM;
				goto out;
			}
			break;
		case REC_RELOC:
			if (sidx_get(s->ix, p + REC_HDR_BYTES, h.klen, &old) == 1 && old == h.aux)
				sidx_set(s->ix, p + REC_HDR_BYTES, h.klen, loc, &old);
			break;
		case REC_TOMB:
			sidx_del(s->ix, p + REC_HDR_BYTES, h.klen, &old);
			break;
		case REC_COMMIT:
			ret = replay_commit(s, p, &h);
			if (ret < 0)
				goto out;
			break;
		default:
			break;
		}
		s->segs[si].max_seq = h.seq;
		if (s->segs[si].state == SEG_FREE)
			s->segs[si].state = SEG_HEAD;
		prev = h.hcrc;
		seq++;
		if (h.type != REC_CKPT_PART && h.type != REC_CKPT_END)
			s->st.recovered_records++;
		last_end = pos + rsize;
		if (h.type == REC_RESV) {
			/* a streamed put's region follows: the log resumes after it */
			uint64_t end = align_up(last_end, DISK_BLOCK_BYTES) + h.aux;

			if (h.aux % DISK_BLOCK_BYTES || end > seg_limit(s, si))
				goto bad;
			pos = last_end = end;
			continue;
		}
		if (h.type == REC_NEXT) {
			if (h.aux >= s->nsegs)
				goto bad;
			s->segs[si].state = SEG_USED;
			pos = last_end = seg_start(s, (uint32_t)h.aux);
			s->segs[h.aux].state = SEG_HEAD;
			continue;
		}
		pos = last_end;
	}
	goto done;
bad:
	/* a record that passed its checksums but makes no sense: stop here */
	s->st.discarded_tail_bytes += 1;
done:
	s->head = align_up(last_end, DISK_BLOCK_BYTES);
	s->chain = prev;
	s->seq = seq - 1;
	s->seq_done = s->seq;
	/* exactly one head: the segment the log ends in */
	for (uint32_t i = 0; i < s->nsegs; i++)
		if (s->segs[i].state == SEG_HEAD && i != seg_of(s, s->head))
			s->segs[i].state = SEG_USED;
	s->segs[seg_of(s, s->head)].state = SEG_HEAD;
out:
	free(w.buf);
	return ret;
}

static void rebuild_accounting(struct node_store *s)
{
	struct sidx_iter it;
	const uint8_t *k;
	size_t kl;
	uint64_t loc;

	for (uint32_t i = 0; i < s->nsegs; i++)
		s->segs[i].live = 0;
	sidx_seek(s->ix, &it, NULL, 0, false);
	while (sidx_next(s->ix, &it, &k, &kl, &loc))
		seg_live_add(s, loc, +1);
	s->nfree = 0;
	for (uint32_t i = 0; i < s->nsegs; i++)
		s->nfree += s->segs[i].state == SEG_FREE;
	reclaim_segments(s);
}

static int recover(struct node_store *s, char *err, size_t errlen)
{
	struct ptr_slot slots[2], *order[2];
	uint8_t *b = s->ck.ptrbuf;
	int ret = -EUCLEAN, tried = 0;

	for (unsigned i = 0; i < 2; i++) {
		ret = node_disk_sync_io(s->disk, DISK_READ, b, DISK_BLOCK_BYTES, PTR_SLOT_OFF(i));
		if (ret < 0) {
			snprintf(err, errlen, "cannot read checkpoint pointer of '%s': %s",
				 s->disk->name, strerror(-ret));
			return ret;
		}
		ptr_parse(b, &slots[i]);
	}
	order[0] = slots[0].gen >= slots[1].gen ? &slots[0] : &slots[1];
	order[1] = order[0] == &slots[0] ? &slots[1] : &slots[0];
	for (unsigned i = 0; i < 2; i++) {
		const struct ptr_slot *ps = order[i];

		if (!ps->valid || ps->p0_off < s->data_start ||
		    ps->p0_off >= s->data_start + (uint64_t)s->nsegs * s->seg_bytes)
			continue;
		tried++;
		ret = load_checkpoint(s, ps);
		if (ret == -ENOMEM)
			break;
		if (ret < 0)
			continue;
		ret = replay(s, ps);
		if (ret < 0)
			break;
		s->ck.gen = ps->gen;
		s->ck.new_p0_seq = ps->p0_seq;
		/* the other slot, if valid and older, is the fallback */
		s->ck.old_p0_seq = order[1 - i]->valid && order[1 - i]->gen < ps->gen
					   ? order[1 - i]->p0_seq : ps->p0_seq;
		if (i == 1)
			s->ck.old_p0_seq = ps->p0_seq;
		rebuild_accounting(s);
		return 0;
	}
	if (ret == -ENOMEM) {
		snprintf(err, errlen, "out of memory while loading the index of '%s'", s->disk->name);
		return ret;
	}
	snprintf(err, errlen,
		 tried ? "both checkpoints of '%s' are damaged; refusing to guess (the data is still on the drive)"
		       : "no valid checkpoint pointer on '%s'; refusing to guess",
		 s->disk->name);
	return -EUCLEAN;
}

void node_store_opts_init(struct node_store_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->segment_bytes = 256u << 20;
	o->ring_depth = 256;
	o->write_buffers = 16;
	o->write_buffer_bytes = 256u << 10;
	o->ckpt_records = 1000000;
	o->commit_window_us = 2000;
	o->read_cache_bytes = 8u << 20;
	o->page_cache_reads = true;
}

int node_store_open(struct node_store **out, const struct node_store_opts *opts, char *err,
		    size_t errlen)
{
	struct node_store *s = NULL;
	uint8_t *sb[2] = { NULL, NULL };
	enum sb_verdict v[2];
	int ret = 0;

	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->o = *opts;
	s->clock = opts->clock ? *opts->clock : node_clock_system;
	if (!s->o.write_buffers || s->o.write_buffer_bytes < DISK_BLOCK_BYTES ||
	    s->o.write_buffer_bytes % DISK_BLOCK_BYTES) {
		snprintf(err, errlen, "write buffers must be at least one and a multiple of 4 KiB");
		ret = -EINVAL;
		goto out;
	}
	if (opts->format && (opts->segment_bytes < NODE_STORE_SEGMENT_MIN ||
			     (opts->segment_bytes & (opts->segment_bytes - 1)))) {
		snprintf(err, errlen, "segment size %" PRIu64 " refused: a power of two of at least 1 MiB",
			 opts->segment_bytes);
		ret = -EINVAL;
		goto out;
	}
	if (opts->disk) {
		s->disk = opts->disk;
	} else if (opts->loop) {
		ret = node_disk_loop_open(&s->disk, opts->loop, opts->path, opts->create_size, err,
					  errlen);
		if (ret < 0)
			goto out;
	} else {
		ret = node_disk_uring_open(&s->disk, opts->path, opts->ring_depth, opts->create_size,
					   err, errlen);
		if (ret < 0)
			goto out;
	}
	if (opts->loop) {
		/* until it is open, the store's i/o is direct: it never runs
		 * the loop, and nothing of it is in flight there yet */
		s->loop = opts->loop;
		s->timer = calloc(1, sizeof(*s->timer));
		if (!s->timer) {
			ret = -ENOMEM;
			goto out;
		}
		s->timer->ev.fn = timer_done;
		s->timer->s = s;
		ret = blocking_begin(s);
		if (ret < 0) {
			snprintf(err, errlen, "%s", s->err);
			goto out;
		}
	}
	s->ck.ptrbuf = aligned_alloc_blocks(DISK_BLOCK_BYTES);
	sb[0] = aligned_alloc_blocks(DISK_BLOCK_BYTES);
	sb[1] = aligned_alloc_blocks(DISK_BLOCK_BYTES);
	s->bufs = calloc(s->o.write_buffers, sizeof(*s->bufs));
	s->ck.key = malloc(NODE_STORE_KEY_MAX);
	s->ix = sidx_new();
	if (!s->ck.ptrbuf || !sb[0] || !sb[1] || !s->bufs || !s->ck.key || !s->ix) {
		ret = -ENOMEM;
		goto out;
	}
	s->nbufs = s->o.write_buffers;
	for (unsigned i = 0; i < s->nbufs; i++) {
		/* mapped on their own, so their pages can go back to the
		 * kernel while the store is idle (release_idle()) */
		s->bufs[i].mem = mmap(NULL, s->o.write_buffer_bytes, PROT_READ | PROT_WRITE,
				      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		s->bufs[i].s = s;
		if (s->bufs[i].mem == MAP_FAILED) {
			s->bufs[i].mem = NULL;
			ret = -ENOMEM;
			goto out;
		}
	}
	if (s->disk->size < 4 * DISK_BLOCK_BYTES) {
		snprintf(err, errlen, "drive '%s' is too small (%" PRIu64 " bytes) to hold a store",
			 s->disk->name, s->disk->size);
		ret = -ENOSPC;
		goto out;
	}
	for (unsigned i = 0; i < 2; i++) {
		ret = node_disk_sync_io(s->disk, DISK_READ, sb[i], DISK_BLOCK_BYTES, SB_COPY_OFF(i));
		if (ret < 0) {
			snprintf(err, errlen, "cannot read superblock of '%s': %s", s->disk->name,
				 strerror(-ret));
			goto out;
		}
		v[i] = sb_check(sb[i]);
	}
	if (opts->force_format || (v[0] == SBV_ZERO && v[1] == SBV_ZERO)) {
		if (!opts->format && !opts->force_format) {
			snprintf(err, errlen, "drive '%s' holds no shelf store; format it first (--format)",
				 s->disk->name);
			ret = -ENODEV;
			goto out;
		}
		ret = format(s, err, errlen);
		if (ret < 0)
			goto out;
		memset(sb[0], 0, DISK_BLOCK_BYTES);
		sb_pack(s, sb[0]);
		v[0] = SBV_OK;
		v[1] = SBV_OK;
		memcpy(sb[1], sb[0], DISK_BLOCK_BYTES);
	}
	if (v[0] != SBV_OK && v[1] != SBV_OK) {
		enum sb_verdict w = v[0] == SBV_ZERO ? v[1] : v[0];

		snprintf(err, errlen,
			 w == SBV_FOREIGN ? "drive '%s' holds something that is not a shelf store; refusing to overwrite it"
			 : w == SBV_VERSION ? "drive '%s' holds a shelf store of a format version this build does not read (it reads version 1)"
					   : "both superblock copies of '%s' are corrupt; refusing to touch the drive",
			 s->disk->name);
		ret = w == SBV_VERSION ? -EPROTONOSUPPORT : -EUCLEAN;
		goto out;
	}
	ret = sb_unpack(s, v[0] == SBV_OK ? sb[0] : sb[1], err, errlen);
	if (ret < 0)
		goto out;
	if (v[0] != SBV_OK || v[1] != SBV_OK ||
	    memcmp(sb[0], sb[1], DISK_BLOCK_BYTES) != 0) {
		/* one copy is damaged or stale: repair it from the good one */
		unsigned bad = v[0] == SBV_OK ? 1 : 0;

		if (v[bad] == SBV_FOREIGN || v[bad] == SBV_VERSION) {
			snprintf(err, errlen,
				 "superblock copies of '%s' disagree about what the drive holds; refusing to touch it",
				 s->disk->name);
			ret = -EUCLEAN;
			goto out;
		}
		if (v[0] == SBV_OK && v[1] == SBV_OK)
			bad = 1;
		memcpy(sb[bad], sb[1 - bad], DISK_BLOCK_BYTES);
		ret = node_disk_sync_io(s->disk, DISK_WRITE, sb[bad], DISK_BLOCK_BYTES, SB_COPY_OFF(bad));
		if (ret == 0)
			ret = node_disk_sync_io(s->disk, DISK_FLUSH, NULL, 0, 0);
		if (ret < 0) {
			snprintf(err, errlen, "cannot repair superblock copy %u of '%s': %s", bad,
				 s->disk->name, strerror(-ret));
			goto out;
		}
		s->st.repaired_superblock = true;
	}
	s->segs = calloc(s->nsegs, sizeof(*s->segs));
	if (!s->segs) {
		ret = -ENOMEM;
		goto out;
	}
	ret = recover(s, err, errlen);
	if (ret < 0)
		goto out;
	/* loading the index freed its read buffers: give the pages back, the
	 * node's memory budget counts resident bytes */
	malloc_trim(0);
	if (s->loop) {
		blocking_end(s);
		ret = node_loop_before_sleep_add(s->loop, store_hook, s);
		if (ret < 0) {
			snprintf(err, errlen, "cannot register the store of '%s' on the loop: %s",
				 s->disk->name, strerror(-ret));
			goto out;
		}
		s->hooked = true;
	}
	*out = s;
	s = NULL;
out:
	free(sb[0]);
	free(sb[1]);
	if (s) {
		if (opts->disk)
			s->disk = NULL; /* on failure the caller keeps its disk */
		node_store_close(&s);
	}
	return ret;
}

struct node_disk *node_store_abandon(struct node_store **sp)
{
	struct node_store *s = sp ? *sp : NULL;
	struct node_disk *d = NULL;
	struct op *op;

	if (!s)
		return NULL;
	d = s->disk;
	s->disk = NULL;
	while ((op = q_pop(&s->commitq)))
		op_free(op);
	while ((op = q_pop(&s->appendq)))
		op_free(op);
	node_store_close(sp);
	return d;
}

void node_store_close(struct node_store **sp)
{
	struct node_store *s = sp ? *sp : NULL;

	if (!s)
		return;
	if (s->hooked)
		node_loop_before_sleep_remove(s->loop, store_hook, s);
	s->hooked = false;
	if (s->disk && s->loop && !s->blocking) {
		/* the owner has drained the store's i/o on the loop
		 * (node_store_idle()): what is left is done directly */
		int ret = node_disk_direct(s->disk, true);

		assert(ret == 0);
		(void)ret;
		s->blocking = 1;
	}
	if (s->disk && s->segs && !s->read_only) {
		node_store_sync(s);
		if (s->ck.records_since > 0 && !s->read_only)
			node_store_checkpoint(s);
	}
	if (s->disk) {
		while (s->disk->inflight && node_disk_reap(s->disk, true) > 0)
			;
		fail_all(s);
		if (s->loop)
			node_disk_direct(s->disk, false);
		node_disk_destroy(&s->disk);
	}
	if (s->timer && s->timer->armed) {
		/* it frees itself when the loop delivers its cancellation */
		struct io_uring_sqe *sqe = node_loop_sqe(s->loop, NULL);

		s->timer->s = NULL;
		if (sqe) {
			io_uring_prep_timeout_remove(sqe, (uint64_t)(uintptr_t)&s->timer->ev, 0);
			io_uring_sqe_set_data(sqe, NULL);
		}
	} else {
		free(s->timer);
	}
	while (s->streams.list)
		stream_free(s->streams.list);
	for (unsigned i = 0; s->bufs && i < s->nbufs; i++)
		if (s->bufs[i].mem)
			munmap(s->bufs[i].mem, s->o.write_buffer_bytes);
	free(s->bufs);
	free(s->segs);
	free(s->ck.ptrbuf);
	free(s->ck.key);
	free(s->ck.parts);
	free(s->reads.scrub_key);
	while (s->reads.ncache)
		free(s->reads.cache[--s->reads.ncache].mem);
	free(s->reads.cache);
	sidx_destroy(&s->ix);
	free(s);
	*sp = NULL;
}

/* ---- the blocking calls' entry points (blocking_begin()) ---- */

int node_store_put(struct node_store *s, const void *key, size_t klen, const void *val,
		   size_t vlen)
{
	int ret;

	ret = blocking_begin(s);
	if (ret < 0)
		return ret;
	ret = put_blocking(s, key, klen, val, vlen);
	blocking_end(s);
	return ret;
}

int node_store_delete(struct node_store *s, const void *key, size_t klen)
{
	int ret;

	ret = blocking_begin(s);
	if (ret < 0)
		return ret;
	ret = delete_blocking(s, key, klen);
	blocking_end(s);
	return ret;
}

int node_store_get(struct node_store *s, const void *key, size_t klen, void **val,
		   size_t *vlen)
{
	int ret;

	*val = NULL;
	*vlen = 0;
	ret = blocking_begin(s);
	if (ret < 0)
		return ret;
	ret = get_blocking(s, key, klen, val, vlen);
	blocking_end(s);
	return ret;
}

int node_store_get_range(struct node_store *s, const void *key, size_t klen, uint64_t off,
			 uint64_t len, void *buf, size_t *got)
{
	int ret;

	*got = 0;
	ret = blocking_begin(s);
	if (ret < 0)
		return ret;
	ret = get_range_blocking(s, key, klen, off, len, buf, got);
	blocking_end(s);
	return ret;
}

int node_store_stat(struct node_store *s, const void *key, size_t klen,
		    struct node_store_objstat *st)
{
	int ret;

	ret = blocking_begin(s);
	if (ret < 0)
		return ret;
	ret = stat_blocking(s, key, klen, st);
	blocking_end(s);
	return ret;
}

int node_store_sync(struct node_store *s)
{
	int ret;

	ret = blocking_begin(s);
	if (ret < 0)
		return ret;
	ret = sync_blocking(s);
	blocking_end(s);
	return ret;
}

int node_store_checkpoint(struct node_store *s)
{
	int ret;

	ret = blocking_begin(s);
	if (ret < 0)
		return ret;
	ret = checkpoint_blocking(s);
	blocking_end(s);
	return ret;
}

int node_store_compact(struct node_store *s)
{
	int ret;

	ret = blocking_begin(s);
	if (ret < 0)
		return ret;
	ret = compact_blocking(s);
	blocking_end(s);
	return ret;
}

int node_store_reclaim(struct node_store *s)
{
	int ret;

	ret = blocking_begin(s);
	if (ret < 0)
		return ret;
	ret = reclaim_blocking(s);
	blocking_end(s);
	return ret;
}

int node_store_scrub(struct node_store *s, uint64_t budget_bytes,
		     struct node_store_scrub_report *r)
{
	int ret;

	ret = blocking_begin(s);
	if (ret < 0)
		return ret;
	ret = scrub_blocking(s, budget_bytes, r);
	blocking_end(s);
	return ret;
}
