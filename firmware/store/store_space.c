/*
 * Space (docs/FORMAT.md, section 7): reclaiming segments, compacting them
 * in the background, and admitting puts.
 *
 * Everything here runs from the store's own work (store_space_step(), from
 * node_store_poll() or the before-sleep hook on a shared loop), in bounded
 * steps, and never waits: a compaction walks the index a slice at a time,
 * reads one live record of its victim at a time through the store's disk
 * (asynchronously, like any read), and queues it as a RELOC record on the
 * ordinary write path. A RELOC is applied only if its key still points at
 * the record it copies, live and at replay, so a put or delete of the key
 * that races the copy always wins. The victim comes free through the usual
 * rule (nothing live in it, and both checkpoints recovery may start from
 * are newer than everything in it): it is picked only when the second half
 * already holds, and its live count reaches zero only once the copies are
 * durable.
 *
 * Segments that overwrites and deletes have emptied need two checkpoints
 * before reuse; space starts them (small: the index and the segment table)
 * when such segments exist, at most every SPACE_CKPT_GAP_NS or half a
 * segment of log unless free segments run low, then at once.
 *
 * A put that needs a new segment when only the reserve is left is held
 * (not failed) while compaction or a checkpoint can still free one, for at
 * most SPACE_HOLD_MAX_NS; later operations on its key wait behind it. When
 * nothing can free a segment, held puts fail with ENOSPC and the store is
 * `full`: every put is refused until free segments pass the reserve again or
 * deletes lower the live bytes.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "overlay.h"
#include "store_int.h"

#define SPACE_SCAN_NS 100000000ull      /* look at the segments at least this often */
#define SPACE_CKPT_GAP_NS 500000000ull  /* checkpoints for space, when not short of it */
#define SPACE_HOLD_MAX_NS 3000000000ull /* longest a put waits for a segment */
#define SPACE_SCAN_KEYS 16384u          /* index entries looked at per step */
#define SPACE_RELOCS_MAX 2u             /* RELOC records queued at once */

/* Segments kept free so compaction and checkpoints can always proceed. */
uint32_t store_space_reserve(const struct node_store *s)
{
	uint64_t ckpt = sidx_count(s->ix) * (16 + 24) +
			sidx_versioned(s->ix) * (CK_VKEY_BYTES - CK_KEY_BYTES) +
			(uint64_t)s->nsegs * 14 + CKPT_PART_BYTES;

	return 2 + (uint32_t)((ckpt + s->seg_bytes - 1) / s->seg_bytes);
}

uint64_t store_space_usable(const struct node_store *s)
{
	uint32_t r = store_space_reserve(s);

	return r < s->nsegs ? (uint64_t)(s->nsegs - r) * s->seg_bytes : 0;
}

/* Compaction starts when free segments fall to this. */
static uint32_t low_water(const struct node_store *s)
{
	uint32_t extra = s->nsegs / 8;

	return store_space_reserve(s) + (extra < 2 ? 2 : extra);
}

int store_space_init(struct node_store *s)
{
	struct store_space *sp = &s->sp;

	sp->victim = -1;
	sp->cursor = malloc(NODE_STORE_KEY_MAX);
	sp->rkey = malloc(NODE_STORE_KEY_MAX);
	if (!sp->cursor || !sp->rkey)
		return -ENOMEM;
	sp->live = 0;
	for (uint32_t i = 0; i < s->nsegs; i++)
		sp->live += s->segs[i].live;
	sp->dirty = true;
	return 0;
}

void store_space_release(struct node_store *s)
{
	struct store_space *sp = &s->sp;

	free(sp->cursor);
	free(sp->rkey);
	/* a read abandoned with its disk (node_store_abandon()) never completes;
	 * a move's stream is freed with the store's streams */
	free(sp->rbuf);
	free(sp->mv.buf);
	free(sp->mv.table);
	sp->mv.buf = sp->mv.table = NULL;
	sp->mv.st = NULL;
	sp->mv.active = sp->mv.reading = false;
	sp->cursor = sp->rkey = sp->rbuf = NULL;
	sp->reading = false;
}

/* What emptying segment g would win: its bytes that are neither live nor
 * the tail its last record left. */
static uint64_t seg_gain(const struct node_store *s, const struct seg *g)
{
	uint64_t used = g->live + g->waste;

	return used < s->seg_bytes ? s->seg_bytes - used : 0;
}

/* The least a compaction must win to be worth it: moving the live records
 * can leave up to one record's worth at the end of a segment, so it must
 * win more than that, and a little more, or it could go on forever. */
static uint64_t min_gain(const struct node_store *s, const struct seg *g)
{
	uint64_t big = g->maxrec;

	if (!big)
		big = s->sp.max_rec > s->seg_bytes / 16 ? s->sp.max_rec : s->seg_bytes / 16;
	return big + s->seg_bytes / 64;
}

static bool seg_compactable(const struct node_store *s, const struct seg *g)
{
	return g->state == SEG_USED && !g->streams && !g->skip && g->max_seq < s->ck.old_p0_seq;
}

/* The eligible segment with the most to win, or -1. */
static int64_t pick_victim(const struct node_store *s)
{
	int64_t v = -1;
	uint64_t best = 0;

	for (uint32_t i = 0; i < s->nsegs; i++) {
		const struct seg *g = &s->segs[i];
		uint64_t gain = seg_gain(s, g);

		if (seg_compactable(s, g) && gain >= min_gain(s, g) && gain > best) {
			best = gain;
			v = i;
		}
	}
	return v;
}

/* A checkpoint would make a segment reusable or compactable: one that is
 * newer than the older checkpoint and held objects that are all gone (or,
 * when short of space, is empty or worth compacting). Segments that only
 * ever held checkpoints wait until space is short, so that checkpoints do
 * not beget checkpoints. */
static bool ckpt_helps(const struct node_store *s, bool short_of_space)
{
	for (uint32_t i = 0; i < s->nsegs; i++) {
		const struct seg *g = &s->segs[i];

		if (g->state != SEG_USED || g->streams || g->max_seq < s->ck.old_p0_seq)
			continue;
		if (short_of_space ? g->live == 0 || seg_gain(s, g) >= min_gain(s, g)
				   : g->live == 0 && g->data)
			return true;
	}
	return false;
}

static void set_full(struct node_store *s)
{
	if (!s->sp.full) {
		s->sp.full = true;
		s->sp.full_live = s->sp.live;
	}
}

static int refuse(struct node_store *s, const char *why)
{
	set_full(s);
	s->st.space_refusals++;
	store_set_err(s, "drive '%s' is full: %s (%" PRIu64 " of %" PRIu64 " usable bytes live; %u of %u segments free, %u kept for compaction)",
		      s->disk->name, why, s->sp.live, store_space_usable(s), s->nfree, s->nsegs,
		      store_space_reserve(s));
	return -ENOSPC;
}

/* Something under way or startable may still free a segment. */
static bool can_progress(const struct node_store *s)
{
	if (s->sp.stopped || s->read_only)
		return false;
	return s->sp.victim >= 0 || s->ck.state != CK_IDLE || pick_victim(s) >= 0 ||
	       ckpt_helps(s, true);
}

int store_space_admit(struct node_store *s, struct op *op, uint64_t span, bool need_seg)
{
	if (s->sp.full)
		return refuse(s, "puts are refused until space comes back");
	if (s->sp.live + span > store_space_usable(s))
		return refuse(s, "live data would pass the usable capacity");
	if (!need_seg || s->nfree > store_space_reserve(s))
		return 0;
	store_reclaim_segments(s);
	if (s->nfree > store_space_reserve(s))
		return 0;
	if (op->rec.queued_ns && store_now_ns(s) - op->rec.queued_ns > SPACE_HOLD_MAX_NS)
		return refuse(s, "compaction did not free a segment in time");
	if (!can_progress(s))
		return refuse(s, "compaction can free no segment");
	return 2;
}

void store_space_hold(struct node_store *s, struct op *op)
{
	if (!op->rec.queued_ns) {
		op->rec.queued_ns = store_now_ns(s); /* when it began to wait */
		s->st.space_waits++;
	}
	store_q_push(&s->sp.held, op);
	s->sp.dirty = true;
}

bool store_space_key_held(const struct node_store *s, const void *key, size_t klen)
{
	for (const struct op *op = s->sp.held.head; op; op = op->next)
		if (op->klen == klen && klen && memcmp(op->key, key, klen) == 0)
			return true;
	return false;
}

bool store_space_unhold(struct node_store *s, struct op *op)
{
	struct opq *q = &s->sp.held;
	struct op *prev = NULL;

	for (struct op *o = q->head; o; prev = o, o = o->next) {
		if (o != op)
			continue;
		if (prev)
			prev->next = o->next;
		else
			q->head = o->next;
		if (q->tail == o)
			q->tail = prev;
		q->n--;
		o->next = NULL;
		return true;
	}
	return false;
}

/* Put the held ops back where the log goes on: first in the append queue,
 * after a record already partly copied. */
static void release_held(struct node_store *s)
{
	struct opq *h = &s->sp.held, *a = &s->appendq;
	struct op *after = a->head && a->head->rec.started ? a->head : NULL;

	if (!h->head)
		return;
	if (after) {
		h->tail->next = after->next;
		after->next = h->head;
		if (a->tail == after)
			a->tail = h->tail;
	} else {
		h->tail->next = a->head;
		a->head = h->head;
		if (!a->tail)
			a->tail = h->tail;
	}
	a->n += h->n;
	h->head = h->tail = NULL;
	h->n = 0;
}

static void fail_held(struct node_store *s, int res)
{
	struct op *op;

	if (!s->sp.held.head)
		return;
	if (res == -ENOSPC)
		refuse(s, s->sp.stopped ? "the store is closing" : "compaction can free no segment");
	while ((op = store_q_pop(&s->sp.held)))
		store_op_finish(s, op, res);
}

/* ---- compaction ---- */

void store_space_mem(struct node_store *s, int64_t delta)
{
	struct store_space *sp = &s->sp;

	sp->mem += (uint64_t)delta;
	if (sp->mem > sp->mem_peak)
		sp->mem_peak = sp->mem;
}

/* What one move's stream holds: two write buffers (a reused one may be up
 * to twice the size asked for), its head and chunk table, itself. */
static size_t stream_bytes(const struct node_store_stream *st)
{
	return st->b[0].mem_cap + st->b[1].mem_cap + st->head_len + st->tlen + st->klen +
	       sizeof(*st);
}

size_t node_store_compact_mem_max(const struct node_store *s)
{
	size_t piece = s->o.compact_piece_bytes + 2 * DISK_BLOCK_BYTES;
	size_t table = rec_table_bytes(NODE_STORE_VALUE_MAX);
	size_t stream = 2 * (2 * s->o.write_buffer_bytes + DISK_BLOCK_BYTES) +
			align_up(REC_HDR_MAX_BYTES + NODE_STORE_KEY_MAX + table, DISK_BLOCK_BYTES) +
			table + NODE_STORE_KEY_MAX + sizeof(struct node_store_stream);

	/* RELOCs queued (each owns its record, up to a piece), and one
	 * record being read, or one move: its piece, chunk table and stream */
	return SPACE_RELOCS_MAX * piece + piece + table + stream;
}

static void reloc_done(void *arg, int res, const struct node_store_objstat *st)
{
	struct node_store *s = arg;

	(void)res;
	(void)st;
	s->sp.relocs--;
}

static void rbuf_free(struct node_store *s)
{
	struct store_space *sp = &s->sp;

	if (!sp->rbuf)
		return;
	free(sp->rbuf);
	store_space_mem(s, -(int64_t)sp->rbuf_bytes);
	sp->rbuf = NULL;
	sp->rbuf_bytes = 0;
}

/*
 * The record rkey/rloc failed its checks when compaction read it: it is
 * damaged. It is marked so (a DAMAGE record, as a get would), which also
 * takes it out of the segment's live bytes; if that cannot be done now it
 * stays where it is, and the segment is not picked again for now.
 */
static void found_damage(struct node_store *s)
{
	struct store_space *sp = &s->sp;
	int ret = store_damage_found(s, sp->rkey, sp->rklen, sp->rloc, NULL, reloc_done, s);

	if (ret == 0)
		sp->relocs++; /* its completion is awaited like a RELOC's */
	else
		sp->victim_damaged = true;
}

/* Overwritten or deleted meanwhile, or closing: nothing to move. */
static bool move_moot(struct node_store *s)
{
	uint64_t cur = 0;

	return s->sp.stopped || s->read_only ||
	       sidx_get(s->ix, s->sp.rkey, s->sp.rklen, &cur) != 1 || cur != s->sp.rloc;
}

static void read_done(struct node_disk_io *io)
{
	struct node_store *s = io->arg;
	struct store_space *sp = &s->sp;
	uint64_t from = loc_off(sp->rloc), size = loc_size(sp->rloc);
	uint64_t a = align_down(from, DISK_BLOCK_BYTES);
	uint8_t *rec = sp->rbuf + (from - a);
	struct op *op = NULL;
	struct rec_hdr h;
	int ret = io->res < 0 ? io->res : (size_t)io->res != io->len ? -EIO : 0;

	sp->reading = false;
	if (ret < 0) {
		/* the drive failed the read: leave the record where it is */
		s->st.read_errors++;
		sp->victim_damaged = true;
		goto out;
	}
	ret = rec_check(rec, size, &h);
	if (ret == 0 && (h.klen != sp->rklen || memcmp(rec + rec_key_off(&h), sp->rkey, sp->rklen) ||
			 rec_hsize(&h) != size || (h.type != REC_PUT && h.type != REC_RELOC) ||
			 (h.flags & REC_FLAG_TOMB)))
		ret = -EIO;
	if (ret < 0) {
		if (!move_moot(s))
			found_damage(s);
		goto out;
	}
	if (move_moot(s))
		goto out;
	op = store_op_new(s, OP_RELOC, sp->rkey, sp->rklen);
	if (!op) {
		sp->victim_damaged = true; /* cannot empty it now */
		goto out;
	}
	/* the value stays in the read buffer, which the op now owns (and
	 * which stays counted as compaction's until it is copied) */
	op->rec.owned_val = sp->rbuf;
	op->u.reloc.held = sp->rbuf_bytes;
	op->rec.val = rec + rec_key_off(&h) + sp->rklen + rec_table_bytes(h.vlen);
	op->rec.vlen = h.vlen;
	op->ver = (struct node_store_ver){ h.hlc, h.node }; /* the copy keeps its version */
	op->u.reloc.from = sp->rloc;
	op->cb = reloc_done;
	op->arg = s;
	sp->rbuf = NULL;
	sp->rbuf_bytes = 0;
	sp->relocs++;
	s->st.relocations++;
	store_q_push(&s->appendq, op);
out:
	rbuf_free(s);
}

static int start_read(struct node_store *s, uint64_t loc)
{
	struct store_space *sp = &s->sp;
	uint64_t from = loc_off(loc), size = loc_size(loc);
	uint64_t a = align_down(from, DISK_BLOCK_BYTES), b = align_up(from + size, DISK_BLOCK_BYTES);
	int ret;

	sp->rbuf = store_alloc_blocks(b - a);
	if (!sp->rbuf)
		return -ENOMEM;
	sp->rbuf_bytes = b - a;
	store_space_mem(s, (int64_t)sp->rbuf_bytes);
	sp->io = (struct node_disk_io){
		.op = DISK_READ, .buf = sp->rbuf, .len = b - a, .off = a, .done = read_done, .arg = s,
	};
	ret = node_disk_submit(s->disk, &sp->io);
	if (ret < 0) {
		rbuf_free(s);
		return ret;
	}
	sp->reading = true;
	return 0;
}

/*
 * ---- moves: records larger than compact_piece_bytes ----
 *
 * Read the header, key and chunk table and verify them; open a stream that
 * copies the record (store_stream_begin_move(): a RESV region, a RELOC
 * record in it, and a COMMIT that applies only if the key still points at
 * the source); then read the value a piece at a time, verify each piece's
 * chunks, and write it into the stream. The copy becomes live only when its
 * COMMIT is durable, after every byte of the region; a crash or an abort
 * before that leaves the source live and the region dead space. Memory: one
 * piece, the chunk table and the stream's two buffers.
 */

/* Free the piece and the table; abort the stream unless it committed. */
static void move_free(struct node_store *s)
{
	struct store_move *mv = &s->sp.mv;

	if (mv->st) {
		node_store_stream_abort(&mv->st);
		store_space_mem(s, -(int64_t)mv->st_bytes);
		mv->st_bytes = 0;
	}
	if (mv->buf)
		store_space_mem(s, -(int64_t)mv->buf_bytes);
	if (mv->table)
		store_space_mem(s, -(int64_t)mv->tlen);
	free(mv->buf);
	free(mv->table);
	mv->buf = NULL;
	mv->table = NULL;
	mv->buf_bytes = mv->tlen = 0;
	mv->active = mv->committing;
	s->sp.dirty = true;
}

/* The move stops: damaged (the record failed a check), or given up. */
static void move_stop(struct node_store *s, bool damaged, bool keep)
{
	if (damaged && !move_moot(s))
		found_damage(s);
	else if (keep)
		s->sp.victim_damaged = true; /* it stays; not picked again for now */
	move_free(s);
}

/* The copy's COMMIT is durable (applied if the key still pointed at the
 * source), or failed: the stream is gone, the move is over. */
static void move_commit_done(void *arg, int res, const struct node_store_objstat *st)
{
	struct node_store *s = arg;
	struct store_move *mv = &s->sp.mv;

	(void)st;
	store_space_mem(s, -(int64_t)mv->st_bytes);
	mv->st_bytes = 0;
	mv->committing = mv->active = false;
	s->sp.dirty = true;
	if (res == 0) {
		s->st.relocations++;
		s->st.relocations_streamed++;
	}
}

static void move_read_done(struct node_disk_io *io);

static int move_read(struct node_store *s, uint64_t from, uint64_t to)
{
	struct store_move *mv = &s->sp.mv;
	uint64_t a = align_down(from, DISK_BLOCK_BYTES), b = align_up(to, DISK_BLOCK_BYTES);
	int ret;

	if (b - a > mv->buf_bytes)
		return -EIO; /* cannot happen: pieces fit the buffer */
	mv->skip = from - a;
	mv->io = (struct node_disk_io){
		.op = DISK_READ, .buf = mv->buf, .len = b - a, .off = a, .done = move_read_done, .arg = s,
	};
	ret = node_disk_submit(s->disk, &mv->io);
	if (ret == 0)
		mv->reading = true;
	return ret;
}

/* Read the next piece of the value, or finish when all of it is written. */
static void move_next(struct node_store *s)
{
	struct store_move *mv = &s->sp.mv;
	uint64_t base = mv->base + mv->len, n = mv->vlen - base;
	int ret;

	if (move_moot(s)) {
		move_stop(s, false, false);
		return;
	}
	if (base == mv->vlen) {
		/* the move stays active until its commit is done: one stream
		 * of compaction's at a time */
		ret = node_store_stream_finish(&mv->st, mv->vcrc, move_commit_done, s);
		mv->st = NULL;
		if (ret == 0) {
			mv->committing = true;
		} else {
			store_space_mem(s, -(int64_t)mv->st_bytes);
			mv->st_bytes = 0;
		}
		/* -EBADMSG: every chunk matched, the whole value did not */
		move_stop(s, ret == -EBADMSG, ret < 0);
		return;
	}
	if (n > s->o.compact_piece_bytes)
		n = s->o.compact_piece_bytes;
	mv->base = base;
	mv->len = n;
	mv->fed = 0;
	ret = move_read(s, mv->val_off + base, mv->val_off + base + n);
	if (ret < 0)
		move_stop(s, false, true);
}

/* Give the stream what it takes of the piece in hand. */
static void move_feed(struct node_store *s)
{
	struct store_move *mv = &s->sp.mv;

	if (!mv->active || mv->reading || mv->feeding || !mv->st)
		return;
	mv->feeding = true;
	while (mv->fed < mv->len) {
		ssize_t w = node_store_stream_write(mv->st, mv->buf + mv->skip + mv->fed,
						    (size_t)(mv->len - mv->fed));

		if (w < 0) {
			mv->feeding = false;
			move_stop(s, false, true);
			return;
		}
		if (w == 0)
			break; /* both buffers on their way: `ready` calls again */
		mv->fed += (uint64_t)w;
	}
	mv->feeding = false;
	if (mv->fed == mv->len)
		move_next(s);
}

static void move_ready(void *arg)
{
	move_feed(arg);
}

static void move_read_done(struct node_disk_io *io)
{
	struct node_store *s = io->arg;
	struct store_move *mv = &s->sp.mv;
	const uint8_t *p = mv->buf + mv->skip;
	uint64_t c0 = mv->base / REC_CHUNK_BYTES;

	mv->reading = false;
	if (io->res < 0 || (size_t)io->res != io->len) {
		s->st.read_errors++;
		move_stop(s, false, true);
		return;
	}
	if (!mv->st) {
		/* the head: header, key and chunk table */
		struct node_store_ver ver;
		struct rec_hdr h;
		size_t tlen;
		int ret;

		if (rec_hdr_unpack(p, &h) < 0 || (h.type != REC_PUT && h.type != REC_RELOC) ||
		    (h.flags & REC_FLAG_TOMB) ||
		    h.klen != s->sp.rklen || rec_hsize(&h) != loc_size(s->sp.rloc) ||
		    rec_key_off(&h) + h.klen + rec_table_bytes(h.vlen) > io->len - mv->skip ||
		    rec_hcrc(p, p + rec_key_off(&h), h.klen, p + rec_key_off(&h) + h.klen,
			     rec_table_bytes(h.vlen)) != h.hcrc ||
		    memcmp(p + rec_key_off(&h), s->sp.rkey, h.klen) != 0) {
			move_stop(s, true, true);
			return;
		}
		rec_ext_get(p, &h);
		if (move_moot(s)) {
			move_stop(s, false, false);
			return;
		}
		tlen = rec_table_bytes(h.vlen);
		mv->table = malloc(tlen ? tlen : 1);
		if (!mv->table) {
			move_stop(s, false, true);
			return;
		}
		mv->tlen = tlen;
		store_space_mem(s, (int64_t)tlen);
		memcpy(mv->table, p + rec_key_off(&h) + h.klen, tlen);
		mv->vlen = h.vlen;
		mv->vcrc = h.vcrc;
		mv->val_off = loc_off(s->sp.rloc) + rec_key_off(&h) + h.klen + tlen;
		ver = (struct node_store_ver){ h.hlc, h.node };
		ret = store_stream_begin_move(s, s->sp.rkey, s->sp.rklen, h.vlen, s->sp.rloc, &ver,
					      move_ready, s, &mv->st);
		if (ret < 0) {
			move_stop(s, false, true);
			return;
		}
		mv->st_bytes = stream_bytes(mv->st);
		store_space_mem(s, (int64_t)mv->st_bytes);
		mv->base = mv->len = 0;
		move_next(s);
		return;
	}
	/* a piece: every chunk in it (pieces are whole chunks, but the last) */
	for (uint64_t off = 0; off < mv->len; off += REC_CHUNK_BYTES) {
		uint64_t n = mv->len - off < REC_CHUNK_BYTES ? mv->len - off : REC_CHUNK_BYTES;
		uint64_t c = c0 + off / REC_CHUNK_BYTES;

		if (!mv->tlen || 4 * c + 4 > mv->tlen ||
		    ovl_crc32c(0, p + off, n) != le_get32(mv->table + 4 * c)) {
			move_stop(s, true, true);
			return;
		}
	}
	move_feed(s);
}

/* Start moving the record rkey/rloc in pieces: read its head first. */
static int move_start(struct node_store *s)
{
	struct store_move *mv = &s->sp.mv;
	uint64_t from = loc_off(s->sp.rloc), size = loc_size(s->sp.rloc);
	uint64_t hl = REC_HDR_MAX_BYTES + s->sp.rklen + rec_table_bytes(size);
	int ret;

	memset(mv, 0, sizeof(*mv));
	mv->buf_bytes = s->o.compact_piece_bytes + 2 * DISK_BLOCK_BYTES;
	if (align_up(hl, DISK_BLOCK_BYTES) + DISK_BLOCK_BYTES > mv->buf_bytes)
		mv->buf_bytes = align_up(hl, DISK_BLOCK_BYTES) + DISK_BLOCK_BYTES;
	mv->buf = store_alloc_blocks(mv->buf_bytes);
	if (!mv->buf)
		return -ENOMEM;
	store_space_mem(s, (int64_t)mv->buf_bytes);
	mv->active = true;
	if (hl > size)
		hl = size;
	ret = move_read(s, from, from + hl);
	if (ret < 0)
		move_free(s);
	return ret;
}

/*
 * A tombstone in the victim: its record holds nothing the index does not
 * (key, version), so it is written again from the index, without a read,
 * as a RELOC flagged as a tombstone's (applied, like every RELOC, only if
 * the key still points at the copy's source). 0, or -ENOMEM.
 */
static int tomb_reloc(struct node_store *s, const uint8_t *key, size_t klen,
		      const struct sidx_val *v)
{
	struct op *op = store_op_new(s, OP_RELOC, key, klen);

	if (!op)
		return -ENOMEM;
	op->rec.val = (const uint8_t *)"";
	op->rec.vlen = 0;
	op->ver = (struct node_store_ver){ v->hlc, v->node };
	op->tomb = true;
	op->u.reloc.from = v->loc;
	op->cb = reloc_done;
	op->arg = s;
	s->sp.relocs++;
	s->st.relocations++;
	store_q_push(&s->appendq, op);
	return 0;
}

static void start_victim(struct node_store *s, int64_t v)
{
	s->sp.victim = v;
	s->sp.cursor_set = false;
	s->sp.cursor_len = 0;
	s->sp.scan_done = false;
	s->sp.victim_damaged = false;
}

/* Walk the index a slice further; start the read of the next live record
 * of the victim. */
static void compact_advance(struct node_store *s)
{
	struct store_space *sp = &s->sp;
	struct sidx_iter it;
	const uint8_t *k;
	size_t kl;
	struct sidx_val v;
	uint64_t loc;
	unsigned n = 0;

	if (sp->victim < 0)
		return;
	if (sp->mv.active && !sp->mv.reading && !sp->mv.committing && (sp->stopped || s->read_only))
		move_stop(s, false, false);
	if (!sp->scan_done && !sp->reading && !sp->mv.active && sp->relocs < SPACE_RELOCS_MAX &&
	    !sp->stopped && !s->read_only) {
		sidx_seek(s->ix, &it, sp->cursor_set ? sp->cursor : NULL, sp->cursor_len, true);
		for (;;) {
			if (n++ == SPACE_SCAN_KEYS)
				break;
			if (!sidx_next_val(s->ix, &it, &k, &kl, &v)) {
				sp->scan_done = true;
				break;
			}
			loc = v.loc;
			memcpy(sp->cursor, k, kl);
			sp->cursor_len = kl;
			sp->cursor_set = true;
			/* a damaged key's marker holds no bytes to move: it answers
			 * checksum-mismatch wherever its offset points */
			if (loc_is_damaged(loc) || seg_of(s, loc_off(loc)) != (uint32_t)sp->victim)
				continue;
			if (v.tomb) {
				if (tomb_reloc(s, k, kl, &v) < 0) {
					sp->victim_damaged = true; /* out of memory: try again later */
					break;
				}
				if (sp->relocs >= SPACE_RELOCS_MAX)
					break;
				continue;
			}
			memcpy(sp->rkey, k, kl);
			sp->rklen = kl;
			sp->rloc = loc;
			/* a large record moves in pieces, one at a time, alone */
			if ((loc_size(loc) > s->o.compact_piece_bytes ? move_start(s) : start_read(s, loc)) < 0)
				sp->victim_damaged = true; /* out of memory: try again later */
			break;
		}
	}
	if ((sp->scan_done || sp->stopped || s->read_only) && !sp->reading && !sp->mv.active &&
	    !sp->relocs) {
		struct seg *g = &s->segs[sp->victim];

		if (g->live && sp->scan_done)
			g->skip = true; /* something stayed (damage): not again for now */
		if (sp->scan_done)
			s->st.compactions++;
		sp->victim = -1;
		sp->dirty = true;
		store_reclaim_segments(s);
	}
}

bool store_space_busy(const struct node_store *s)
{
	const struct store_space *sp = &s->sp;

	return sp->victim >= 0 && !sp->scan_done && !sp->reading && !sp->mv.active &&
	       sp->relocs < SPACE_RELOCS_MAX && !sp->stopped && !s->read_only;
}

static bool want_ckpt(struct node_store *s, uint64_t now, bool short_of_space)
{
	struct store_space *sp = &s->sp;

	if (s->ck.state != CK_IDLE || !ckpt_helps(s, short_of_space))
		return false;
	if (short_of_space)
		return true;
	return now - sp->ck_began_ns >= SPACE_CKPT_GAP_NS || sp->placed - sp->ck_placed >= s->seg_bytes / 2;
}

void store_space_step(struct node_store *s)
{
	struct store_space *sp = &s->sp;
	uint32_t reserve;
	uint64_t now;
	bool short_of_space;

	if (!sp->cursor)
		return; /* not open yet */
	if (s->read_only) {
		fail_held(s, -EROFS);
		return;
	}
	compact_advance(s);
	now = store_now_ns(s);
	reserve = store_space_reserve(s);
	if (sp->dirty || now >= sp->next_scan_ns || sp->held.head) {
		sp->dirty = false;
		sp->next_scan_ns = now + SPACE_SCAN_NS;
		store_reclaim_segments(s);
		short_of_space = s->nfree <= low_water(s) || sp->held.head;
		if (sp->victim < 0 && short_of_space && !sp->stopped) {
			int64_t v = pick_victim(s);

			if (v >= 0) {
				start_victim(s, v);
				compact_advance(s);
			}
		}
		if (!sp->stopped && want_ckpt(s, now, short_of_space) && store_ckpt_begin(s) == 0) {
			sp->ck_began_ns = now;
			sp->ck_placed = sp->placed;
		}
	}
	if (sp->full && (s->nfree > reserve || sp->live < sp->full_live))
		sp->full = false;
	if (!sp->held.head)
		return;
	if (s->nfree > reserve || (sp->held.head->kind != OP_PUT && sp->held.head->kind != OP_RESV)) {
		/* room, or the put they waited behind is gone: serialize()
		 * places them, or holds them again */
		release_held(s);
		return;
	}
	if (!can_progress(s)) {
		fail_held(s, -ENOSPC);
		return;
	}
	/* the oldest has waited too long: it fails, and what waits behind it
	 * on its key goes on (its ordering constraint is gone) */
	if (now - sp->held.head->rec.queued_ns > SPACE_HOLD_MAX_NS)
		release_held(s); /* place() refuses the ones that waited too long */
}

int store_space_compact_blocking(struct node_store *s)
{
	uint64_t before = s->st.compactions;
	int64_t v;

	if (s->read_only)
		return -EROFS;
	store_reclaim_segments(s);
	if (s->sp.victim < 0) {
		v = pick_victim(s);
		if (v < 0)
			return 0;
		start_victim(s, v);
	}
	while (s->sp.victim >= 0) {
		int ret = node_store_poll(s, true);

		if (ret < 0)
			return ret;
		if (s->read_only)
			return -EROFS;
	}
	return s->st.compactions > before ? 1 : 0;
}
