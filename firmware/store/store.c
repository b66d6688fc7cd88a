/*
 * The store engine. docs/FORMAT.md describes the layout; this comment the
 * moving parts. This file holds open and close, the write path (batching
 * and group commit), the loop glue and the public calls; checkpoints are
 * in store_ckpt.c, reads in store_read.c, streamed puts in store_stream.c,
 * the superblock and recovery in store_recover.c, and what they share in
 * store_int.h.
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

#include "overlay.h"
#include "store_int.h"

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

/* ---- small helpers ---- */

void store_set_err(struct node_store *s, const char *fmt, ...)
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

uint64_t store_now_ns(struct node_store *s)
{
	return s->clock.now_ns(s->clock.arg);
}

void *store_alloc_blocks(size_t len)
{
	void *p = NULL;

	if (posix_memalign(&p, DISK_BLOCK_BYTES, len ? align_up(len, DISK_BLOCK_BYTES) : DISK_BLOCK_BYTES))
		return NULL;
	return p;
}

void store_q_push(struct opq *q, struct op *op)
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

struct op *store_q_pop(struct opq *q)
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

void store_op_free(struct op *op)
{
	if (!op)
		return;
	free(op->key);
	free(op->rec.owned_val);
	free(op->rec.table);
	if (op->kind == OP_RELOC && op->rec.owned_val)
		store_space_mem(op->s, -(int64_t)op->u.reloc.held);
	if (op->kind == OP_DAMAGE) {
		/* never finished (abandoned): its reads go with it */
		for (struct op *w = op->u.damage.waiters, *n; w; w = n) {
			n = w->next;
			store_op_free(w);
		}
	}
	if (op->kind == OP_GET || op->kind == OP_STAT) {
		free(op->u.rd.table);
		store_rbuf_put(op->s, op->u.rd.buf, op->u.rd.buflen);
	}
	free(op);
}

struct op *store_op_new(struct node_store *s, enum op_kind kind, const void *key, size_t klen)
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

void store_go_read_only(struct node_store *s, const char *fmt, ...)
{
	va_list ap;

	if (s->read_only)
		return;
	s->read_only = true;
	va_start(ap, fmt);
	vsnprintf(s->ro_reason, sizeof(s->ro_reason), fmt, ap);
	va_end(ap);
	store_set_err(s, "store on '%s' is read-only: %s", s->disk->name, s->ro_reason);
}

/* ---- segments ---- */

void store_seg_live_add(struct node_store *s, uint64_t loc, int64_t sign)
{
	struct seg *g = &s->segs[seg_of(s, loc_off(loc))];
	uint64_t d = loc_size(loc);

	if (loc_is_damaged(loc))
		s->st.damaged_objects += sign > 0 ? 1 : s->st.damaged_objects ? (uint64_t)-1 : 0;
	if (sign > 0) {
		g->live += d;
		s->sp.live += d;
		return;
	}
	d = d <= g->live ? d : g->live;
	g->live -= d;
	s->sp.live -= d <= s->sp.live ? d : s->sp.live;
	g->skip = false; /* more of it died: worth another look */
	if (g->live == 0)
		s->sp.dirty = true;
}

/* Reusable: nothing live and nothing recovery might still replay. */
static bool seg_reclaimable(const struct node_store *s, uint32_t i)
{
	const struct seg *g = &s->segs[i];

	return g->state == SEG_USED && g->live == 0 && g->max_seq < s->ck.old_p0_seq && !g->streams;
}

void store_reclaim_segments(struct node_store *s)
{
	for (uint32_t i = 0; i < s->nsegs; i++) {
		if (seg_reclaimable(s, i)) {
			s->segs[i].state = SEG_FREE;
			s->segs[i].max_seq = 0;
			s->segs[i].waste = 0;
			s->segs[i].maxrec = 0;
			s->segs[i].skip = false;
			s->segs[i].data = false;
			s->nfree++;
		}
	}
}

static int64_t seg_take_free(struct node_store *s)
{
	for (uint32_t i = 0; i < s->nsegs; i++) {
		if (s->segs[i].state == SEG_FREE) {
			s->segs[i].state = SEG_HEAD;
			s->segs[i].live = 0;
			s->segs[i].waste = 0;
			s->segs[i].maxrec = 0;
			s->segs[i].skip = false;
			s->segs[i].data = false;
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
		b->born_ns = store_now_ns(s);
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
		store_go_read_only(s, "cannot queue write at %" PRIu64 ": %s", b->off, strerror(-ret));
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
		store_go_read_only(s, "write of %zu bytes at offset %" PRIu64 " failed: %s", io->len, io->off,
			     io->res < 0 ? strerror(-io->res) : "short write");
}

/* ---- the append pipeline ---- */

static void op_finish(struct node_store *s, struct op *op, int res);
static void run_done(struct node_store *s);
static int index_put(struct node_store *s, struct op *op, uint64_t loc, bool tomb);

static bool any_write_inflight(const struct node_store *s)
{
	for (unsigned i = 0; i < s->nbufs; i++)
		if (s->bufs[i].inflight)
			return true;
	return false;
}

/* Pad and submit the open buffer; the next record starts on a new block. */
void store_close_batch(struct node_store *s)
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
	case OP_DAMAGE: return op->u.damage.loc;
	default: return 0;
	}
}

/* Bytes of the version extension op's record carries. */
static size_t op_ext(const struct op *op)
{
	return ver_is_set(&op->ver) ? REC_EXT_BYTES : 0;
}

static void build_header(struct node_store *s, struct op *op, uint8_t type)
{
	struct rec_hdr h = { 0 };

	h.type = type;
	h.klen = (uint16_t)op->klen;
	h.vlen = (uint32_t)op->rec.vlen;
	h.flags = op->rec.vlen > REC_CHUNK_BYTES ? REC_FLAG_CHUNKED : 0;
	if (op_ext(op)) {
		h.flags |= REC_FLAG_VER;
		h.hlc = op->ver.hlc;
		h.node = op->ver.node;
	}
	if (op->kind == OP_RELOC && op->tomb)
		h.flags |= REC_FLAG_TOMB;
	if (s->fr.jump_pending) {
		/* the first record after a recovery: its seq jumped */
		h.flags |= REC_FLAG_JUMP;
		s->fr.jump_pending = false;
	}
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
	case OP_DAMAGE: return REC_DAMAGE;
	case OP_DROP: return REC_DROP;
	default: return 0;
	}
}

/*
 * Give op its place in the log. Returns 0, 1 when a NEXT record was queued
 * in front of it (call again later), 2 when it must wait for space
 * (store_space_hold()), or -errno to fail the op.
 */
static int place(struct node_store *s, struct op *op)
{
	uint32_t si = seg_of(s, s->head);
	uint64_t rsize = rec_size(op_ext(op) + op->klen, op->rec.vlen), span = rsize;
	/* a put or a streamed put's reservation: compaction's moves are not */
	bool put = op->kind == OP_PUT || (op->kind == OP_RESV && !op->u.resv.move);

	if (s->read_only)
		return -EROFS;
	if (op->kind == OP_RESV) /* the record, then the region from the next block */
		span = align_up(s->head + rsize, DISK_BLOCK_BYTES) - s->head + op->u.resv.region_len;
	if ((op->kind == OP_RESV ? DISK_BLOCK_BYTES + op->u.resv.region_len : rsize) >
	    s->seg_bytes - 2 * DISK_BLOCK_BYTES) {
		store_set_err(s, "record of %" PRIu64 " bytes does not fit in a %" PRIu64 "-byte segment",
			rsize, s->seg_bytes);
		return -E2BIG;
	}
	if (put) {
		/* puts leave the reserve alone, and wait while compaction
		 * can still free a segment (store_space.c) */
		int ret = store_space_admit(s, op, span, s->head + span > seg_limit(s, si));

		if (ret)
			return ret;
	}
	if (op->kind != OP_NEXT && s->head + span > seg_limit(s, si)) {
		struct op *nx = NULL;
		int64_t t;
		/* deletes may dig into the reserve but leave compaction and
		 * checkpoints room to free space */
		uint32_t floor = put ? store_space_reserve(s) : op->kind == OP_DEL || op->kind == OP_DROP ? 1 : 0;

		if (s->nfree <= floor) {
			store_set_err(s, "drive '%s' is full: %u of %u segments free, %u kept for compaction",
				s->disk->name, s->nfree, s->nsegs, store_space_reserve(s));
			return -ENOSPC;
		}
		t = seg_take_free(s);
		nx = store_op_new(s, OP_NEXT, NULL, 0);
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
	s->sp.placed += span;
	if (span > s->segs[si].maxrec)
		s->segs[si].maxrec = span;
	if (op->kind != OP_CKPT_PART && op->kind != OP_CKPT_END && op->kind != OP_NEXT)
		s->segs[si].data = true;
	if (span > s->sp.max_rec)
		s->sp.max_rec = span;
	s->segs[si].max_seq = op->rec.seq;
	op->rec.started = true;
	if (op->kind == OP_DAMAGE)
		s->fr.damage_pending++;
	if (op->kind == OP_RESV)
		store_stream_placed(s, op, si);
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
		{ op->rec.hdr, REC_HDR_BYTES + op_ext(op) }, { op->key, op->klen },
		{ op->rec.table, op->rec.tlen },
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

/* What a key holds, the writes already placed in the log included. */
struct key_state {
	bool known;     /* an object or a tombstone */
	bool tomb;
	bool damaged;   /* its newest version is damaged */
	struct node_store_ver ver;
};

static bool same_key(const struct op *op, const void *key, size_t klen)
{
	return op->klen == klen && memcmp(op->key, key, klen) == 0;
}

static void key_state(const struct node_store *s, const void *key, size_t klen,
		      struct key_state *ks)
{
	struct sidx_val v;

	*ks = (struct key_state){ 0 };
	if (sidx_find(s->ix, key, klen, &v)) {
		ks->known = true;
		ks->tomb = v.tomb;
		ks->damaged = loc_is_damaged(v.loc);
		ks->ver = (struct node_store_ver){ v.hlc, v.node };
	}
	/* placed and not yet applied: in log order, each passed its own check */
	for (const struct op *op = s->commitq.head; op; op = op->next) {
		if (!same_key(op, key, klen))
			continue;
		switch (op->kind) {
		case OP_PUT:
			*ks = (struct key_state){ .known = true, .ver = op->ver };
			break;
		case OP_COMMIT:
			if (!op->u.commit.from)
				*ks = (struct key_state){ .known = true, .ver = op->ver };
			break;
		case OP_DEL:
			*ks = (struct key_state){ .known = ver_is_set(&op->ver), .tomb = true, .ver = op->ver };
			break;
		case OP_DROP:
			*ks = (struct key_state){ 0 };
			break;
		default:
			break;
		}
	}
}

/*
 * The version check of a versioned write, made as it takes its place in
 * the log: 0 (place it), -EALREADY (the key holds that version or a newer
 * one; op->held says what), or for a DROP -ENOENT (the tombstone it names
 * is gone).
 */
static int ver_admit(struct node_store *s, struct op *op)
{
	struct key_state ks;
	int c;

	key_state(s, op->key, op->klen, &ks);
	if (op->kind == OP_DROP)
		return ks.known && ks.tomb && node_store_ver_cmp(&ks.ver, &op->ver) == 0 ? 0 : -ENOENT;
	if (!ks.known)
		return 0;
	c = node_store_ver_cmp(&op->ver, &ks.ver);
	/* a damaged newest version takes its own version again: a repair */
	if (c > 0 || (c == 0 && ks.damaged && !ks.tomb))
		return 0;
	op->held = (struct node_store_objstat){ .ver = ks.ver, .tomb = ks.tomb };
	return -EALREADY;
}

static bool ver_checked(const struct op *op)
{
	return op->kind == OP_DROP ||
	       (ver_is_set(&op->ver) && (op->kind == OP_PUT || op->kind == OP_DEL ||
					 (op->kind == OP_COMMIT && !op->u.commit.from)));
}

static void serialize(struct node_store *s)
{
	struct op *op;

	while ((op = s->appendq.head)) {
		if (op->kind == OP_COMMIT && op->u.commit.stream)
			return; /* its region is still being written */
		if (op->kind == OP_COMMIT && op->u.commit.err < 0) {
			store_q_pop(&s->appendq);
			op_finish(s, op, op->u.commit.err);
			continue;
		}
		if (!op->rec.started) {
			int ret;

			/* at most SEQ_AHEAD_MAX records beyond the durable
			 * frontier (what a recovery's jump must pass) */
			if (!store_seq_gate_open(s))
				return;
			/* (a move's commit is conditional, and compaction, which
			 * frees the space held puts wait for, waits for it) */
			if ((op->kind == OP_PUT || op->kind == OP_DEL || op->kind == OP_DROP ||
			     (op->kind == OP_COMMIT && !op->u.commit.from)) &&
			    store_space_key_held(s, op->key, op->klen)) {
				/* its key's earlier put waits for space: keep their order */
				store_space_hold(s, store_q_pop(&s->appendq));
				continue;
			}
			/* a versioned write is checked against everything
			 * ordered before it, here where its order is fixed */
			if (ver_checked(op) && (ret = ver_admit(s, op)) < 0) {
				store_q_pop(&s->appendq);
				op_finish(s, op, ret);
				continue;
			}
			ret = place(s, op);
			if (ret == 1)
				continue;
			if (ret == 2) {
				store_space_hold(s, store_q_pop(&s->appendq));
				continue;
			}
			if (ret < 0) {
				store_q_pop(&s->appendq);
				op_finish(s, op, ret);
				continue;
			}
		}
		if (!copy_op(s, op))
			return;
		store_q_pop(&s->appendq);
		if (op->kind == OP_RESV) {
			/* the region belongs to the stream: the log resumes after it */
			uint64_t end = s->head;

			store_close_batch(s);
			s->head = end;
		}
		if (op->kind == OP_NEXT) {
			/* the log jumps: what follows goes to another place */
			struct seg *g = &s->segs[seg_of(s, op->rec.pos)];

			g->state = SEG_USED;
			g->waste = seg_start(s, seg_of(s, op->rec.pos)) + s->seg_bytes -
				   (op->rec.pos + op->rec.rsize);
			s->sp.dirty = true;
			store_close_batch(s);
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
		if (op->kind == OP_RELOC && op->rec.owned_val)
			store_space_mem(s, -(int64_t)op->u.reloc.held);
		if (op->kind == OP_PUT || op->kind == OP_RELOC) {
			free(op->rec.owned_val);
			op->rec.owned_val = NULL;
			op->rec.val = NULL; /* the caller may reuse the value from here on */
		}
		free(op->rec.table);
		op->rec.table = NULL;
		op->rec.queued_ns = store_now_ns(s);
		store_q_push(&s->commitq, op);
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
		store_go_read_only(s, "fdatasync failed: %s", strerror(-io->res));
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
		uint64_t waited = store_now_ns(s) - s->commitq.head->rec.queued_ns;
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
		store_go_read_only(s, "cannot queue fdatasync: %s", strerror(-ret));
		return;
	}
	s->flush[i].busy = true;
	s->flush_inflight++;
	s->flush_issued = w;
}


/* Sequence number of the last operation of the durable prefix of commitq. */
static uint64_t durable_prefix_seq(const struct node_store *s)
{
	uint64_t d = 0;

	for (const struct op *op = s->commitq.head; op && op->rec.last_buf <= s->durable_buf_id;
	     op = op->next)
		d = op->rec.seq;
	return d;
}

/* A durable put, commit or versioned delete: the key now holds the record
 * at loc, with op's version. */
static int index_put(struct node_store *s, struct op *op, uint64_t loc, bool tomb)
{
	struct sidx_val v = { .loc = loc, .hlc = op->ver.hlc, .node = op->ver.node, .tomb = tomb }, old;
	int ret = sidx_put(s->ix, op->key, op->klen, &v, &old);

	if (ret < 0) {
		store_go_read_only(s, "out of memory for the index");
		return ret;
	}
	if (old.loc)
		store_seg_live_add(s, old.loc, -1);
	store_seg_live_add(s, loc, +1);
	return 0;
}

/* Apply durable operations to the index, in log order, and acknowledge
 * them once the flush frontier covering them is durable too. */
static void complete_durable(struct node_store *s)
{
	struct op *op;

	while ((op = s->commitq.head) && op->rec.last_buf <= s->durable_buf_id) {
		uint64_t loc = loc_make(op->rec.pos, op->rec.rsize), old = 0;
		int ret = 0;

		if (!store_frontier_covers(s, op->rec.seq,
					   op->rec.seq > s->fr.want ? durable_prefix_seq(s) : 0))
			break;

		store_q_pop(&s->commitq);
		s->seq_done = op->rec.seq;
		switch (op->kind) {
		case OP_PUT:
			ret = index_put(s, op, loc, false);
			if (ret == 0)
				s->st.puts++;
			break;
		case OP_DEL:
			if (ver_is_set(&op->ver)) {
				/* a versioned delete: the tombstone stays, live */
				ret = index_put(s, op, loc, true);
			} else if (sidx_del(s->ix, op->key, op->klen, &old) == 1) {
				store_seg_live_add(s, old, -1);
			}
			s->st.deletes++;
			break;
		case OP_DROP: {
			struct sidx_val v;

			if (sidx_find(s->ix, op->key, op->klen, &v) && v.tomb &&
			    v.hlc == op->ver.hlc && v.node == op->ver.node &&
			    sidx_del(s->ix, op->key, op->klen, &old) == 1)
				store_seg_live_add(s, old, -1);
			break;
		}
		case OP_RELOC:
			if (sidx_get(s->ix, op->key, op->klen, &old) == 1 && old == op->u.reloc.from) {
				sidx_set_loc(s->ix, op->key, op->klen, loc, &old);
				store_seg_live_add(s, old, -1);
				store_seg_live_add(s, loc, +1);
			}
			break;
		case OP_CKPT_END:
			store_ckpt_end_durable(s, op);
			break;
		case OP_COMMIT:
			if (op->u.commit.from) {
				/* a move: like a RELOC, only if the key still
				 * points at the record it copies */
				if (sidx_get(s->ix, op->key, op->klen, &old) == 1 &&
				    old == op->u.commit.from) {
					sidx_set_loc(s->ix, op->key, op->klen, op->u.commit.loc, &old);
					store_seg_live_add(s, old, -1);
					store_seg_live_add(s, op->u.commit.loc, +1);
				}
				break;
			}
			ret = index_put(s, op, op->u.commit.loc, false);
			if (ret == 0)
				s->st.puts++;
			break;
		case OP_DAMAGE:
			store_damage_apply(s, op);
			break;
		default:
			break;
		}
		op_finish(s, op, ret);
	}
	store_frontier_step(s);
}

void store_op_finish(struct node_store *s, struct op *op, int res)
{
	op_finish(s, op, res);
}

/* Fail everything queued after the store went read-only. */
static void fail_all(struct node_store *s)
{
	struct op *op;

	while ((op = store_q_pop(&s->sp.held)))
		op_finish(s, op, -EROFS);
	while ((op = store_q_pop(&s->commitq)))
		op_finish(s, op, -EROFS);
	run_done(s); /* answered already: the answers stand */
	while ((op = store_q_pop(&s->appendq))) {
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
		store_stream_resv_failed(s, op, res < 0 ? res : -EIO);
	if (op->kind == OP_DAMAGE) {
		/* not durable (read-only): marked in memory all the same */
		if (res < 0)
			store_damage_apply(s, op);
		store_read_damage_done(s, &op->u.damage.waiters);
	}
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
							  .seq = op->u.commit.seq, .ver = op->ver };
			op->cb(op->arg, res, &st);
			op->cb = NULL;
		}
	}
	if (op->cb && res == 0 && op->kind == OP_PUT) {
		/* what was made durable: size, checksum, sequence and version */
		st = (struct node_store_objstat){ .size = op->rec.vlen, .crc = le_get32(op->rec.hdr + 32),
						  .seq = op->rec.seq, .ver = op->ver };
		op->cb(op->arg, res, &st);
	} else if (op->cb && res == 0 && op->kind == OP_DEL && ver_is_set(&op->ver)) {
		st = (struct node_store_objstat){ .seq = op->rec.seq, .ver = op->ver, .tomb = true };
		op->cb(op->arg, res, &st);
	} else if (op->cb && (res == -EALREADY || op->kind == OP_STAT)) {
		op->cb(op->arg, res, &op->held);
	} else if (op->cb) {
		op->cb(op->arg, res, NULL);
	}
	store_op_free(op);
}

/* ---- the loop ---- */

/* Run the callbacks of what was answered without I/O. */
static void run_done(struct node_store *s)
{
	struct op *op;

	while ((op = store_q_pop(&s->doneq)))
		op_finish(s, op, 0);
}

unsigned node_store_pending(const struct node_store *s)
{
	return s->appendq.n + s->commitq.n + s->doneq.n + s->reads.inflight + s->streams.ios +
	       (s->ck.state != CK_IDLE ? 1 : 0) + s->sp.held.n + s->sp.reading + s->sp.mv.reading;
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
	now = store_now_ns(s);
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
	     store_now_ns(s) - s->cur->born_ns >= s->o.commit_window_us * 1000))
		store_close_batch(s);
}

/* The store's own ring (or direct I/O): submit, reap, acknowledge. */
static int poll_own(struct node_store *s, bool wait)
{
	int ret;

	run_done(s);
	for (int round = 0; round < 2; round++) {
		store_space_step(s);
		store_ckpt_step(s);
		serialize(s);
		store_streams_kick(s);
		maybe_close_batch(s);
		start_flush(s);
		ret = node_disk_reap(s->disk, wait && round == 0 && s->disk->inflight > 0);
		if (ret < 0) {
			store_go_read_only(s, "i/o completion failed: %s", strerror(-ret));
			return ret;
		}
		complete_durable(s);
		if (s->read_only)
			fail_all(s);
	}
	release_idle(s);
	store_streams_kick(s);
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

	if (store_space_busy(s))
		return 1; /* compaction's index walk goes on: wake at once */
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
	now = store_now_ns(s);
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
	run_done(s);
	complete_durable(s);
	if (s->read_only)
		fail_all(s);
	store_space_step(s);
	store_ckpt_step(s);
	serialize(s);
	store_streams_kick(s);
	maybe_close_batch(s);
	start_flush(s);
	if (s->read_only)
		fail_all(s);
	release_idle(s);
	store_streams_kick(s);
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
int store_blocking_begin(struct node_store *s)
{
	int ret;

	if (!s->loop || s->blocking++)
		return 0;
	ret = node_disk_direct(s->disk, true);
	if (ret < 0) {
		s->blocking--;
		store_set_err(s, "store on '%s' has i/o in flight on the node's loop: a blocking call waits until node_store_idle()",
			s->disk->name);
	}
	return ret;
}

void store_blocking_end(struct node_store *s)
{
	if (!s->loop || --s->blocking)
		return;
	/* nothing may stay queued for direct i/o */
	while (s->disk->inflight && node_disk_reap(s->disk, true) > 0)
		;
	node_disk_direct(s->disk, false);
}

/* ---- public write operations ---- */

int store_check_key(struct node_store *s, const void *key, size_t klen)
{
	if (!key || klen == 0 || klen > NODE_STORE_KEY_MAX) {
		store_set_err(s, "key of %zu bytes refused (1..%u bytes)", klen, NODE_STORE_KEY_MAX);
		return klen > NODE_STORE_KEY_MAX ? -E2BIG : -EINVAL;
	}
	return 0;
}

int node_store_ver_cmp(const struct node_store_ver *a, const struct node_store_ver *b)
{
	if (a->hlc != b->hlc)
		return a->hlc < b->hlc ? -1 : 1;
	if (a->node != b->node)
		return a->node < b->node ? -1 : 1;
	return 0;
}

bool node_store_ver_is_none(const struct node_store_ver *v)
{
	return !ver_is_set(v);
}

static int put_start(struct node_store *s, const void *key, size_t klen, const void *val,
		     size_t vlen, const struct node_store_ver *ver, node_store_cb cb, void *arg)
{
	struct op *op = NULL;
	int ret = store_check_key(s, key, klen);

	if (ret < 0)
		return ret;
	if (vlen > NODE_STORE_VALUE_MAX ||
	    rec_size((ver ? REC_EXT_BYTES : 0) + klen, vlen) > s->seg_bytes - 2 * DISK_BLOCK_BYTES) {
		store_set_err(s, "value of %zu bytes refused (at most %u bytes, and a record must fit in one %" PRIu64 "-byte segment)",
			vlen, NODE_STORE_VALUE_MAX, s->seg_bytes);
		return -E2BIG;
	}
	if (!val && vlen)
		return -EINVAL;
	if (s->read_only) {
		store_set_err(s, "store on '%s' is read-only: %s", s->disk->name, s->ro_reason);
		return -EROFS;
	}
	op = store_op_new(s, OP_PUT, key, klen);
	if (!op)
		return -ENOMEM;
	op->rec.val = vlen ? val : (const uint8_t *)"";
	op->rec.vlen = vlen;
	if (ver)
		op->ver = *ver;
	op->cb = cb;
	op->arg = arg;
	store_q_push(&s->appendq, op);
	return 0;
}

int node_store_put_async(struct node_store *s, const void *key, size_t klen, const void *val,
			 size_t vlen, node_store_cb cb, void *arg)
{
	return put_start(s, key, klen, val, vlen, NULL, cb, arg);
}

/* A version a caller gives: present and not (0, 0). */
static int check_ver(struct node_store *s, const struct node_store_ver *ver)
{
	if (!ver || !ver_is_set(ver)) {
		store_set_err(s, "version (0, 0) refused: a versioned write needs a version");
		return -EINVAL;
	}
	return 0;
}

int node_store_put_ver_async(struct node_store *s, const void *key, size_t klen,
			     const void *val, size_t vlen, const struct node_store_ver *ver,
			     node_store_cb cb, void *arg)
{
	int ret = check_ver(s, ver);

	return ret < 0 ? ret : put_start(s, key, klen, val, vlen, ver, cb, arg);
}

static bool key_pending(const struct node_store *s, const void *key, size_t klen)
{
	const struct opq *qs[3] = { &s->appendq, &s->commitq, &s->sp.held };

	for (int i = 0; i < 3; i++)
		for (const struct op *op = qs[i]->head; op; op = op->next)
			if ((op->kind == OP_PUT || op->kind == OP_COMMIT) && op->klen == klen &&
			    memcmp(op->key, key, klen) == 0)
				return true;
	return false;
}

static int delete_start(struct node_store *s, enum op_kind kind, const void *key, size_t klen,
			const struct node_store_ver *ver, node_store_cb cb, void *arg)
{
	struct op *op = NULL;
	struct sidx_val v;
	int ret = store_check_key(s, key, klen);

	if (ret < 0)
		return ret;
	if (s->read_only) {
		store_set_err(s, "store on '%s' is read-only: %s", s->disk->name, s->ro_reason);
		return -EROFS;
	}
	/* a plain delete needs an object (a tombstone is none); a versioned
	 * one leaves its tombstone whatever the key holds */
	if (!ver && (!sidx_find(s->ix, key, klen, &v) || v.tomb) && !key_pending(s, key, klen))
		return -ENOENT;
	op = store_op_new(s, kind, key, klen);
	if (!op)
		return -ENOMEM;
	op->rec.val = (const uint8_t *)"";
	if (ver)
		op->ver = *ver;
	op->cb = cb;
	op->arg = arg;
	store_q_push(&s->appendq, op);
	return 0;
}

int node_store_delete_async(struct node_store *s, const void *key, size_t klen,
			    node_store_cb cb, void *arg)
{
	return delete_start(s, OP_DEL, key, klen, NULL, cb, arg);
}

int node_store_delete_ver_async(struct node_store *s, const void *key, size_t klen,
				const struct node_store_ver *ver, node_store_cb cb, void *arg)
{
	int ret = check_ver(s, ver);

	return ret < 0 ? ret : delete_start(s, OP_DEL, key, klen, ver, cb, arg);
}

int node_store_tomb_drop(struct node_store *s, const void *key, size_t klen,
			 const struct node_store_ver *ver)
{
	struct key_state ks;
	int ret = check_ver(s, ver);

	if (ret < 0)
		return ret;
	ret = store_check_key(s, key, klen);
	if (ret < 0)
		return ret;
	if (s->read_only) {
		store_set_err(s, "store on '%s' is read-only: %s", s->disk->name, s->ro_reason);
		return -EROFS;
	}
	key_state(s, key, klen, &ks);
	if (!ks.known || !ks.tomb || node_store_ver_cmp(&ks.ver, ver) != 0)
		return -ENOENT;
	return delete_start(s, OP_DROP, key, klen, ver, NULL, NULL);
}

int node_store_stat_any_async(struct node_store *s, const void *key, size_t klen,
			      node_store_cb cb, void *arg)
{
	struct sidx_val v;
	struct op *op = NULL;
	int ret = store_check_key(s, key, klen);

	if (ret < 0)
		return ret;
	if (!sidx_find(s->ix, key, klen, &v))
		return -ENOENT;
	if (!v.tomb)
		return node_store_stat_async(s, key, klen, cb, arg);
	/* a tombstone: the index says all there is; answered from the
	 * store's work, like every completion */
	op = store_op_new(s, OP_STAT, NULL, 0);
	if (!op)
		return -ENOMEM;
	op->held = (struct node_store_objstat){ .ver = { v.hlc, v.node }, .tomb = true };
	op->cb = cb;
	op->arg = arg;
	store_q_push(&s->doneq, op);
	return 0;
}

/* ---- blocking wrappers ---- */


void store_waiter_cb(void *arg, int res, const struct node_store_objstat *st)
{
	struct store_waiter *w = arg;

	w->done = true;
	w->res = res;
	if (st)
		w->st = *st;
}

int store_wait_for(struct node_store *s, struct store_waiter *w)
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
		struct store_waiter w = { 0 };
		int ret = node_store_put_async(s, key, klen, val, vlen, store_waiter_cb, &w);

		if (ret < 0)
			return ret;
		ret = store_wait_for(s, &w);
		if (ret != -ENOSPC || attempt > 0 || maintain_space(s) <= 0)
			return ret;
	}
}

static int delete_blocking(struct node_store *s, const void *key, size_t klen)
{
	for (int attempt = 0;; attempt++) {
		struct store_waiter w = { 0 };
		int ret = node_store_delete_async(s, key, klen, store_waiter_cb, &w);

		if (ret < 0)
			return ret;
		ret = store_wait_for(s, &w);
		if (ret != -ENOSPC || attempt > 0 || maintain_space(s) <= 0)
			return ret;
	}
}

/* A versioned put (val set) or delete, blocking; st gets the answer. */
static int write_ver_blocking(struct node_store *s, const void *key, size_t klen, const void *val,
			      size_t vlen, bool put, const struct node_store_ver *ver,
			      struct node_store_objstat *st)
{
	for (int attempt = 0;; attempt++) {
		struct store_waiter w = { 0 };
		int ret = put ? node_store_put_ver_async(s, key, klen, val, vlen, ver, store_waiter_cb, &w)
			      : node_store_delete_ver_async(s, key, klen, ver, store_waiter_cb, &w);

		if (ret < 0)
			return ret;
		ret = store_wait_for(s, &w);
		if (st)
			*st = w.st;
		if (ret != -ENOSPC || attempt > 0 || maintain_space(s) <= 0)
			return ret;
	}
}

static int sync_blocking(struct node_store *s)
{
	while (!s->read_only && (s->appendq.head || s->commitq.head || s->sp.held.head ||
				 (s->cur && s->cur->fill) || store_streams_finishing(s))) {
		int ret = node_store_poll(s, true);

		if (ret < 0)
			return ret;
	}
	return s->read_only ? -EROFS : 0;
}

/* The walk of node_store_list() and node_store_list_ver(). */
static int list_walk(struct node_store *s, const void *prefix, size_t plen,
		     const void *start_after, size_t salen, unsigned limit, bool tombs,
		     node_store_list_cb cb, node_store_list_ver_cb vcb, void *arg)
{
	struct sidx_iter it;
	const uint8_t *k;
	size_t kl;
	struct sidx_val v;
	unsigned n = 0;

	if (plen > NODE_STORE_KEY_MAX || salen > NODE_STORE_KEY_MAX)
		return -E2BIG;
	/* start at the later of the prefix and start_after */
	if (start_after && salen &&
	    (!plen || memcmp(start_after, prefix, salen < plen ? salen : plen) >= 0))
		sidx_seek(s->ix, &it, start_after, salen, true);
	else
		sidx_seek(s->ix, &it, plen ? prefix : NULL, plen, false);
	while (n < limit && sidx_next_val(s->ix, &it, &k, &kl, &v)) {
		struct node_store_ver ver = { v.hlc, v.node };

		if (plen && (kl < plen || memcmp(k, prefix, plen) != 0)) {
			if (memcmp(k, prefix, kl < plen ? kl : plen) > 0)
				break; /* past every key with the prefix */
			continue;
		}
		if (v.tomb && !tombs)
			continue;
		n++;
		if (cb && cb(arg, k, kl))
			break;
		if (vcb && vcb(arg, k, kl, &ver, v.tomb))
			break;
	}
	return (int)n;
}

int node_store_list(struct node_store *s, const void *prefix, size_t plen,
		    const void *start_after, size_t salen, unsigned limit,
		    node_store_list_cb cb, void *arg)
{
	return list_walk(s, prefix, plen, start_after, salen, limit, false, cb, NULL, arg);
}

int node_store_list_ver(struct node_store *s, const void *prefix, size_t plen,
			const void *start_after, size_t salen, unsigned limit,
			node_store_list_ver_cb cb, void *arg)
{
	return list_walk(s, prefix, plen, start_after, salen, limit, true, NULL, cb, arg);
}

/* ---- compaction (store_space.c does the work) ---- */

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
		store_reclaim_segments(s);
		if (s->nfree > store_space_reserve(s))
			return 1;
		ret = node_store_checkpoint(s);
		if (ret < 0)
			return ret;
	}
	while ((ret = node_store_compact(s)) == 1 && s->nfree <= store_space_reserve(s))
		;
	if (ret < 0)
		return ret;
	return s->nfree > before ? 1 : 0;
}

/* ---- stats ---- */

void node_store_stats(const struct node_store *s, struct node_store_stats *st)
{
	uint64_t live = 0;

	*st = s->st;
	for (uint32_t i = 0; i < s->nsegs; i++)
		live += s->segs[i].live;
	st->objects = sidx_count(s->ix) - sidx_tombs(s->ix);
	st->tombstones = sidx_tombs(s->ix);
	st->live_bytes = live;
	st->capacity_bytes = (uint64_t)s->nsegs * s->seg_bytes;
	st->segments = s->nsegs;
	st->segments_free = s->nfree;
	st->segments_reserved = store_space_reserve(s);
	st->usable_bytes = store_space_usable(s);
	st->full = s->sp.full;
	st->nearly_full = s->sp.full || live * 10 > st->usable_bytes * 9;
	st->compaction_bytes = s->sp.mem;
	st->compaction_bytes_peak = s->sp.mem_peak;
	st->index_bytes = sidx_bytes(s->ix);
	st->index_bytes_per_object = sidx_count(s->ix) ? (double)st->index_bytes / sidx_count(s->ix) : 0;
	st->seq = s->seq;
	st->frontier_seq = s->fr.durable;
	st->read_only = s->read_only;
	snprintf(st->read_only_reason, sizeof(st->read_only_reason), "%s", s->ro_reason);
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
	o->compact_piece_bytes = 1u << 20;
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
	if (!s->o.compact_piece_bytes || s->o.compact_piece_bytes % REC_CHUNK_BYTES ||
	    s->o.compact_piece_bytes > NODE_STORE_VALUE_MAX) {
		snprintf(err, errlen, "compaction piece of %zu bytes refused: a multiple of 64 KiB up to 64 MiB",
			 s->o.compact_piece_bytes);
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
		ret = store_blocking_begin(s);
		if (ret < 0) {
			snprintf(err, errlen, "%s", s->err);
			goto out;
		}
	}
	s->ck.ptrbuf = store_alloc_blocks(DISK_BLOCK_BYTES);
	sb[0] = store_alloc_blocks(DISK_BLOCK_BYTES);
	sb[1] = store_alloc_blocks(DISK_BLOCK_BYTES);
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
		v[i] = store_sb_check(sb[i]);
	}
	if (opts->force_format || (v[0] == SBV_ZERO && v[1] == SBV_ZERO)) {
		if (!opts->format && !opts->force_format) {
			snprintf(err, errlen, "drive '%s' holds no shelf store; format it first (--format)",
				 s->disk->name);
			ret = -ENODEV;
			goto out;
		}
		ret = store_format(s, err, errlen);
		if (ret < 0)
			goto out;
		memset(sb[0], 0, DISK_BLOCK_BYTES);
		store_sb_pack(s, sb[0]);
		v[0] = SBV_OK;
		v[1] = SBV_OK;
		memcpy(sb[1], sb[0], DISK_BLOCK_BYTES);
	}
	if (v[0] != SBV_OK && v[1] != SBV_OK) {
		unsigned wi = v[0] == SBV_ZERO ? 1 : 0;
		enum sb_verdict w = v[wi];

		if (w == SBV_VERSION)
			snprintf(err, errlen,
				 "drive '%s' holds a shelf store of format version %u, which this build does not read (it reads versions %u to %u): refusing to open it, nothing was written; use a build that reads it",
				 s->disk->name, le_get32(sb[wi] + 8), SB_VERSION_MIN, SB_VERSION);
		else
			snprintf(err, errlen,
				 w == SBV_FOREIGN ? "drive '%s' holds something that is not a shelf store; refusing to overwrite it"
						  : "both superblock copies of '%s' are corrupt; refusing to touch the drive",
				 s->disk->name);
		ret = w == SBV_VERSION ? -EPROTONOSUPPORT : -EUCLEAN;
		goto out;
	}
	ret = store_sb_unpack(s, v[0] == SBV_OK ? sb[0] : sb[1], err, errlen);
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
	ret = store_recover(s, err, errlen);
	if (ret < 0)
		goto out;
	ret = store_space_init(s);
	if (ret < 0)
		goto out;
	if (s->ck.repair) {
		/* recovery could not use the newest checkpoint, or lost a
		 * pointer slot: take one now, so that one more damage does
		 * not leave the drive without a usable checkpoint. If it
		 * fails the store still works (the next one repairs). */
		if (node_store_checkpoint(s) == 0)
			s->st.checkpoint_repaired = true;
		s->ck.repair = false;
	}
	/* loading the index freed its read buffers: give the pages back, the
	 * node's memory budget counts resident bytes */
	malloc_trim(0);
	if (s->loop) {
		store_blocking_end(s);
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
	while ((op = store_q_pop(&s->commitq)))
		store_op_free(op);
	while ((op = store_q_pop(&s->appendq)))
		store_op_free(op);
	while ((op = store_q_pop(&s->sp.held)))
		store_op_free(op);
	while ((op = store_q_pop(&s->doneq)))
		store_op_free(op);
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
	s->sp.stopped = true; /* no new compaction while closing */
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
		/* replayed records too: else every later open replays them again */
		if ((s->ck.records_since > 0 || s->ck.replayed > 0) && !s->read_only)
			node_store_checkpoint(s);
		if (!s->read_only)
			store_frontier_write_sync(s); /* the counters, as they are now */
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
		store_stream_free(s->streams.list);
	store_space_release(s);
	for (unsigned i = 0; s->bufs && i < s->nbufs; i++)
		if (s->bufs[i].mem)
			munmap(s->bufs[i].mem, s->o.write_buffer_bytes);
	free(s->bufs);
	free(s->segs);
	free(s->ck.ptrbuf);
	free(s->fr.buf);
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

/* ---- the blocking calls' entry points (store_blocking_begin()) ---- */

int node_store_put(struct node_store *s, const void *key, size_t klen, const void *val,
		   size_t vlen)
{
	int ret;

	ret = store_blocking_begin(s);
	if (ret < 0)
		return ret;
	ret = put_blocking(s, key, klen, val, vlen);
	store_blocking_end(s);
	return ret;
}

int node_store_put_ver(struct node_store *s, const void *key, size_t klen, const void *val,
		       size_t vlen, const struct node_store_ver *ver, struct node_store_objstat *st)
{
	int ret = store_blocking_begin(s);

	if (ret < 0)
		return ret;
	ret = write_ver_blocking(s, key, klen, val, vlen, true, ver, st);
	store_blocking_end(s);
	return ret;
}

int node_store_delete_ver(struct node_store *s, const void *key, size_t klen,
			  const struct node_store_ver *ver, struct node_store_objstat *st)
{
	int ret = store_blocking_begin(s);

	if (ret < 0)
		return ret;
	ret = write_ver_blocking(s, key, klen, NULL, 0, false, ver, st);
	store_blocking_end(s);
	return ret;
}

int node_store_delete(struct node_store *s, const void *key, size_t klen)
{
	int ret;

	ret = store_blocking_begin(s);
	if (ret < 0)
		return ret;
	ret = delete_blocking(s, key, klen);
	store_blocking_end(s);
	return ret;
}

/* A blocking call that takes only the store, between begin and end. */
static int blocking_call(struct node_store *s, int (*fn)(struct node_store *s))
{
	int ret = store_blocking_begin(s);

	if (ret < 0)
		return ret;
	ret = fn(s);
	store_blocking_end(s);
	return ret;
}

int node_store_sync(struct node_store *s)
{
	return blocking_call(s, sync_blocking);
}

int node_store_compact(struct node_store *s)
{
	return blocking_call(s, store_space_compact_blocking);
}

int node_store_reclaim(struct node_store *s)
{
	return blocking_call(s, reclaim_blocking);
}
