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

#include "store_int.h"

#define SPACE_SCAN_NS 100000000ull      /* look at the segments at least this often */
#define SPACE_CKPT_GAP_NS 500000000ull  /* checkpoints for space, when not short of it */
#define SPACE_HOLD_MAX_NS 3000000000ull /* longest a put waits for a segment */
#define SPACE_SCAN_KEYS 16384u          /* index entries looked at per step */
#define SPACE_RELOCS_MAX 2u             /* RELOC records queued at once */

/* Segments kept free so compaction and checkpoints can always proceed. */
uint32_t store_space_reserve(const struct node_store *s)
{
	uint64_t ckpt = sidx_count(s->ix) * (16 + 24) + (uint64_t)s->nsegs * 14 + CKPT_PART_BYTES;

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
	/* a read abandoned with its disk (node_store_abandon()) never completes */
	free(sp->rbuf);
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

static void reloc_done(void *arg, int res, const struct node_store_objstat *st)
{
	struct node_store *s = arg;

	(void)res;
	(void)st;
	s->sp.relocs--;
}

static void read_done(struct node_disk_io *io)
{
	struct node_store *s = io->arg;
	struct store_space *sp = &s->sp;
	uint64_t from = loc_off(sp->rloc), size = loc_size(sp->rloc), cur = 0;
	uint64_t a = align_down(from, DISK_BLOCK_BYTES);
	uint8_t *rec = sp->rbuf + (from - a);
	struct op *op = NULL;
	struct rec_hdr h;
	int ret = io->res < 0 ? io->res : (size_t)io->res != io->len ? -EIO : 0;

	sp->reading = false;
	if (ret == 0)
		ret = rec_check(rec, size, &h);
	if (ret == 0 && (h.klen != sp->rklen || memcmp(rec + REC_HDR_BYTES, sp->rkey, sp->rklen)))
		ret = -EIO;
	if (ret < 0) {
		/* leave a record that fails its checks where it is: the segment
		 * is not reused, and scrub and reads report it */
		s->st.checksum_errors += ret == -EIO || ret == -EBADMSG;
		sp->victim_damaged = true;
		goto out;
	}
	/* overwritten or deleted meanwhile, or closing: nothing to move */
	if (sp->stopped || s->read_only || sidx_get(s->ix, sp->rkey, sp->rklen, &cur) != 1 ||
	    cur != sp->rloc)
		goto out;
	op = store_op_new(s, OP_RELOC, sp->rkey, sp->rklen);
	if (!op) {
		sp->victim_damaged = true; /* cannot empty it now */
		goto out;
	}
	/* the value stays in the read buffer, which the op now owns */
	op->rec.owned_val = sp->rbuf;
	op->rec.val = rec + REC_HDR_BYTES + sp->rklen + rec_table_bytes(h.vlen);
	op->rec.vlen = h.vlen;
	op->u.reloc.from = sp->rloc;
	op->cb = reloc_done;
	op->arg = s;
	sp->rbuf = NULL;
	sp->relocs++;
	s->st.relocations++;
	store_q_push(&s->appendq, op);
out:
	free(sp->rbuf);
	sp->rbuf = NULL;
}

static int start_read(struct node_store *s, const uint8_t *key, size_t klen, uint64_t loc)
{
	struct store_space *sp = &s->sp;
	uint64_t from = loc_off(loc), size = loc_size(loc);
	uint64_t a = align_down(from, DISK_BLOCK_BYTES), b = align_up(from + size, DISK_BLOCK_BYTES);
	int ret;

	sp->rbuf = store_alloc_blocks(b - a);
	if (!sp->rbuf)
		return -ENOMEM;
	memcpy(sp->rkey, key, klen);
	sp->rklen = klen;
	sp->rloc = loc;
	sp->io = (struct node_disk_io){
		.op = DISK_READ, .buf = sp->rbuf, .len = b - a, .off = a, .done = read_done, .arg = s,
	};
	ret = node_disk_submit(s->disk, &sp->io);
	if (ret < 0) {
		free(sp->rbuf);
		sp->rbuf = NULL;
		return ret;
	}
	sp->reading = true;
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
	uint64_t loc;
	unsigned n = 0;

	if (sp->victim < 0)
		return;
	if (!sp->scan_done && !sp->reading && sp->relocs < SPACE_RELOCS_MAX && !sp->stopped &&
	    !s->read_only) {
		sidx_seek(s->ix, &it, sp->cursor_set ? sp->cursor : NULL, sp->cursor_len, true);
		for (;;) {
			if (n++ == SPACE_SCAN_KEYS)
				break;
			if (!sidx_next(s->ix, &it, &k, &kl, &loc)) {
				sp->scan_done = true;
				break;
			}
			memcpy(sp->cursor, k, kl);
			sp->cursor_len = kl;
			sp->cursor_set = true;
			/* a damaged key's marker holds no bytes to move: it answers
			 * checksum-mismatch wherever its offset points */
			if (loc_is_damaged(loc) || seg_of(s, loc_off(loc)) != (uint32_t)sp->victim)
				continue;
			if (start_read(s, k, kl, loc) < 0)
				sp->victim_damaged = true; /* out of memory: try again later */
			break;
		}
	}
	if ((sp->scan_done || sp->stopped || s->read_only) && !sp->reading && !sp->relocs) {
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

	return sp->victim >= 0 && !sp->scan_done && !sp->reading && sp->relocs < SPACE_RELOCS_MAX &&
	       !sp->stopped && !s->read_only;
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
