/*
 * Checkpoints (docs/FORMAT.md, section 6): the index and the segment table
 * written into the log as PART records and an END record that lists them,
 * then a pointer slot naming the END, written and flushed. A step at a time
 * from the store's work (store_ckpt_step()), never blocking the write path.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "overlay.h"
#include "store_int.h"

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
		struct sidx_val v;

		sidx_seek(s->ix, &it, s->ck.keys_started ? s->ck.key : NULL, s->ck.klen, true);
		while (n + CK_VKEY_BYTES + NODE_STORE_KEY_MAX <= cap) {
			bool ver;

			if (!sidx_next_val(s->ix, &it, &k, &kl, &v)) {
				s->ck.keys_done = true;
				break;
			}
			/* an unversioned key is written as format 3 wrote it */
			ver = v.hlc || v.node || v.tomb;
			buf[n] = ver ? CK_ITEM_VKEY : CK_ITEM_KEY;
			buf[n + 1] = kl & 0xff;
			buf[n + 2] = kl >> 8;
			memcpy(buf + n + 3, k, kl);
			le_put64(buf + n + 3 + kl, v.loc);
			if (ver) {
				le_put64(buf + n + 11 + kl, v.hlc);
				le_put64(buf + n + 19 + kl, v.node);
				buf[n + 27 + kl] = v.tomb ? 1 : 0;
			}
			n += (ver ? CK_VKEY_BYTES : CK_KEY_BYTES) + kl;
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
	store_close_batch(s);
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
	s->ck.replayed = 0;
	s->ck.state = CK_WAIT;
	return 0;
}

int store_ckpt_begin(struct node_store *s)
{
	return ck_start(s);
}

static void ck_ptr_done(struct node_disk_io *io);

/* Fill one checkpoint pointer block (docs/FORMAT.md, section 6). */
void store_ptr_pack(uint8_t *p, uint64_t gen, uint64_t p0_off, uint64_t p0_seq, uint32_t p0_prev,
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

void store_ckpt_end_durable(struct node_store *s, struct op *op)
{
	int ret;

	/* Point recovery at this checkpoint: write the other slot, then flush. */
	store_ptr_pack(s->ck.ptrbuf, s->ck.gen + 1, s->ck.p0_off, s->ck.p0_seq, s->ck.p0_prev, op->rec.pos,
		 op->rec.rsize, le_get32(op->rec.hdr + 36));
	s->ck.io = (struct node_disk_io){
		.op = DISK_WRITE, .buf = s->ck.ptrbuf, .len = DISK_BLOCK_BYTES,
		.off = PTR_SLOT_OFF((s->ck.gen + 1) % 2), .done = ck_ptr_done, .arg = s,
	};
	ret = node_disk_submit(s->disk, &s->ck.io);
	if (ret < 0) {
		store_go_read_only(s, "cannot write checkpoint pointer: %s", strerror(-ret));
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
		store_go_read_only(s, "checkpoint pointer %s failed: %s",
			     s->ck.state == CK_PTR_FLUSH ? "flush" : "write", strerror(-io->res));
		s->ck.state = CK_IDLE;
		return;
	}
	if (s->ck.state == CK_PTR_WRITE) {
		/* the slot's mirror (FORMAT.md §6): the same block */
		s->ck.io = (struct node_disk_io){
			.op = DISK_WRITE, .buf = s->ck.ptrbuf, .len = DISK_BLOCK_BYTES,
			.off = PTR_MIRROR_OFF((s->ck.gen + 1) % 2), .done = ck_ptr_done, .arg = s,
		};
		ret = node_disk_submit(s->disk, &s->ck.io);
		if (ret < 0) {
			store_go_read_only(s, "cannot write checkpoint pointer: %s", strerror(-ret));
			s->ck.state = CK_IDLE;
			return;
		}
		s->ck.state = CK_PTR_MIRROR;
		return;
	}
	if (s->ck.state == CK_PTR_MIRROR) {
		s->ck.io = (struct node_disk_io){ .op = DISK_FLUSH, .done = ck_ptr_done, .arg = s };
		ret = node_disk_submit(s->disk, &s->ck.io);
		if (ret < 0) {
			store_go_read_only(s, "cannot flush checkpoint pointer: %s", strerror(-ret));
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
	store_frontier_jumps_prune(s);
	store_reclaim_segments(s);
}

/* Advance the checkpoint a step; never blocks. */
void store_ckpt_step(struct node_store *s)
{
	struct op *op = NULL;

	if (s->ck.err && s->ck.state != CK_IDLE && s->ck.state < CK_PTR_WRITE) {
		s->ck.state = CK_IDLE;
		return;
	}
	switch (s->ck.state) {
	case CK_IDLE:
		/* every ckpt_records records; and while the jump list is more
		 * than half full (a run of crashes), until it empties */
		if ((s->o.ckpt_records && s->ck.records_since >= s->o.ckpt_records) ||
		    s->fr.njumps > FR_JUMPS_MAX / 2)
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
					sidx_count(s->ix) * CK_KEY_BYTES + sidx_key_bytes(s->ix) +
					sidx_versioned(s->ix) * (CK_VKEY_BYTES - CK_KEY_BYTES) +
					CK_VKEY_BYTES + NODE_STORE_KEY_MAX;
			size_t cap = left < CKPT_PART_BYTES ? (size_t)left : CKPT_PART_BYTES;

			op = store_op_new(s, OP_CKPT_PART, NULL, 0);
			if (op)
				op->rec.owned_val = malloc(cap);
			if (!op || !op->rec.owned_val) {
				store_op_free(op);
				s->ck.err = -ENOMEM;
				s->ck.state = CK_IDLE;
				return;
			}
			if (s->ck.nparts == s->ck.capparts) {
				uint32_t ncap = s->ck.capparts ? s->ck.capparts * 2 : 16;
				void *np = realloc(s->ck.parts, ncap * sizeof(*s->ck.parts));

				if (!np) {
					store_op_free(op);
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
			store_q_push(&s->appendq, op);
			return;
		}
		/* every part placed: the END record lists them */
		op = store_op_new(s, OP_CKPT_END, NULL, 0);
		if (op)
			op->rec.owned_val = malloc(32 + (size_t)s->ck.nparts * 12);
		if (!op || !op->rec.owned_val) {
			store_op_free(op);
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
		store_q_push(&s->appendq, op);
		s->ck.state = CK_END;
		return;
	}
	default:
		return;
	}
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

int node_store_checkpoint(struct node_store *s)
{
	int ret;

	ret = store_blocking_begin(s);
	if (ret < 0)
		return ret;
	ret = checkpoint_blocking(s);
	store_blocking_end(s);
	return ret;
}

/* ---- the flush frontier (FORMAT.md §4) ---- */

/* crc of bytes 0..59, the n void commits and the j jumps (with j = 0, the
 * crc of a version 2 frontier) */
static uint32_t fr_crc(const uint8_t *b, uint32_t n, uint32_t j)
{
	uint32_t c = ovl_crc32c(ovl_crc32c(0, b, 60), b + 64, (size_t)n * 8);

	return ovl_crc32c(c, b + FR_JUMPS_OFF, (size_t)j * 16);
}

/*
 * The damaged records reads found, as of the frontier `d`: those whose
 * DAMAGE record is applied, and those durable at or below d and not yet
 * applied (they are applied once this frontier is durable). So the count
 * covers exactly the DAMAGE records up to d, and recovery counts the ones
 * after it (FORMAT.md §4).
 */
static uint64_t cksum_errors_upto(const struct node_store *s, uint64_t d)
{
	uint64_t n = s->st.checksum_errors;

	if (!s->fr.damage_pending)
		return n;
	for (const struct op *op = s->commitq.head; op; op = op->next)
		if (op->kind == OP_DAMAGE && op->rec.seq <= d)
			n++;
	return n;
}

static void fr_pack(struct node_store *s, uint8_t *b, uint64_t d)
{
	unsigned n = 0;

	/* void commits no checkpoint's replay reaches any more are forgotten */
	for (unsigned i = 0; i < s->fr.nvoids; i++)
		if (s->fr.voids[i] >= s->ck.old_p0_seq)
			s->fr.voids[n++] = s->fr.voids[i];
	s->fr.nvoids = n;
	store_frontier_jumps_prune(s);
	memset(b, 0, FR_BYTES);
	memcpy(b, FR_MAGIC, 8);
	le_put64(b + 8, d);
	le_put64(b + 16, s->st.damaged_records);
	le_put64(b + 24, s->fr.damage_seq);
	le_put64(b + 32, cksum_errors_upto(s, d));
	le_put32(b + 40, n);
	le_put32(b + 44, s->fr.njumps);
	for (unsigned i = 0; i < n; i++)
		le_put64(b + 64 + 8 * i, s->fr.voids[i]);
	for (unsigned i = 0; i < s->fr.njumps; i++) {
		le_put64(b + FR_JUMPS_OFF + 16 * i, s->fr.jumps[i].from);
		le_put64(b + FR_JUMPS_OFF + 16 * i + 8, s->fr.jumps[i].to);
	}
	le_put32(b + 60, fr_crc(b, n, s->fr.njumps));
	memcpy(b + DISK_BLOCK_BYTES, b, DISK_BLOCK_BYTES);
}

bool store_frontier_parse(struct node_store *s, const uint8_t *b, uint64_t *d, uint64_t *damaged,
			  uint64_t *damage_seq, uint64_t *cksum_errors)
{
	uint32_t n = le_get32(b + 40), j = le_get32(b + 44);

	if (memcmp(b, FR_MAGIC, 8) != 0 || n > FR_VOIDS_MAX || j > FR_JUMPS_MAX ||
	    le_get32(b + 60) != fr_crc(b, n, j))
		return false;
	*d = le_get64(b + 8);
	*damaged = le_get64(b + 16);
	*damage_seq = le_get64(b + 24);
	*cksum_errors = le_get64(b + 32);
	s->fr.nvoids = n;
	for (uint32_t i = 0; i < n; i++)
		s->fr.voids[i] = le_get64(b + 64 + 8 * i);
	s->fr.njumps = 0;
	for (uint32_t i = 0; i < j; i++) {
		uint64_t from = le_get64(b + FR_JUMPS_OFF + 16 * i), to = le_get64(b + FR_JUMPS_OFF + 16 * i + 8);

		if (from < to) /* (a valid crc over nonsense: ignored) */
			s->fr.jumps[s->fr.njumps++] = (struct fr_jump){ from, to };
	}
	return true;
}

void store_frontier_jump_add(struct node_store *s, uint64_t from, uint64_t to)
{
	for (unsigned i = 0; i < s->fr.njumps; i++) {
		if (s->fr.jumps[i].from == from) {
			s->fr.jumps[i].to = to;
			return;
		}
	}
	if (s->fr.njumps == FR_JUMPS_MAX) /* the oldest goes (FORMAT.md §4, "Limits") */
		memmove(s->fr.jumps, s->fr.jumps + 1, (FR_JUMPS_MAX - 1) * sizeof(s->fr.jumps[0]));
	else
		s->fr.njumps++;
	s->fr.jumps[s->fr.njumps - 1] = (struct fr_jump){ from, to };
}

uint64_t store_frontier_jump_to(const struct node_store *s, uint64_t seq)
{
	for (unsigned i = 0; i < s->fr.njumps; i++)
		if (s->fr.jumps[i].from == seq)
			return s->fr.jumps[i].to;
	return seq;
}

bool store_frontier_in_gap(const struct node_store *s, uint64_t seq)
{
	for (unsigned i = 0; i < s->fr.njumps; i++)
		if (seq >= s->fr.jumps[i].from && seq < s->fr.jumps[i].to)
			return true;
	return false;
}

void store_frontier_jumps_prune(struct node_store *s)
{
	unsigned n = 0;

	/* a replay from P0 at or past `to` never meets the jump */
	for (unsigned i = 0; i < s->fr.njumps; i++)
		if (s->fr.jumps[i].to > s->ck.old_p0_seq)
			s->fr.jumps[n++] = s->fr.jumps[i];
	s->fr.njumps = n;
}

bool store_seq_gate_open(const struct node_store *s)
{
	uint64_t base = s->fr.durable > s->fr.jump_base ? s->fr.durable : s->fr.jump_base;

	return !s->fr.buf || s->seq < base + SEQ_AHEAD_MAX;
}

void store_frontier_void_add(struct node_store *s, uint64_t seq)
{
	if (store_frontier_is_void(s, seq))
		return;
	if (s->fr.nvoids == FR_VOIDS_MAX) /* the oldest goes */
		memmove(s->fr.voids, s->fr.voids + 1, (FR_VOIDS_MAX - 1) * sizeof(s->fr.voids[0]));
	else
		s->fr.nvoids++;
	s->fr.voids[s->fr.nvoids - 1] = seq;
}

bool store_frontier_is_void(const struct node_store *s, uint64_t seq)
{
	for (unsigned i = 0; i < s->fr.nvoids; i++)
		if (s->fr.voids[i] == seq)
			return true;
	return false;
}

bool store_frontier_covers(struct node_store *s, uint64_t seq, uint64_t durable)
{
	if (!s->fr.buf || seq <= s->fr.durable)
		return true;
	if (durable > s->fr.want)
		s->fr.want = durable;
	return false;
}

static void fr_done(struct node_disk_io *io)
{
	struct node_store *s = io->arg;
	int ret;

	if (io->res < 0 || (s->fr.state == FR_WRITE && (size_t)io->res != io->len)) {
		store_go_read_only(s, "flush frontier %s failed: %s",
				   s->fr.state == FR_WRITE ? "write" : "flush",
				   io->res < 0 ? strerror(-io->res) : "short write");
		s->fr.state = FR_IDLE;
		return;
	}
	if (s->fr.state == FR_WRITE) {
		s->fr.io = (struct node_disk_io){ .op = DISK_FLUSH, .done = fr_done, .arg = s };
		ret = node_disk_submit(s->disk, &s->fr.io);
		if (ret < 0) {
			store_go_read_only(s, "cannot flush the flush frontier: %s", strerror(-ret));
			s->fr.state = FR_IDLE;
			return;
		}
		s->fr.state = FR_FLUSH;
		return;
	}
	s->fr.durable = s->fr.writing;
	s->fr.state = FR_IDLE;
}

void store_frontier_step(struct node_store *s)
{
	int ret;

	if (!s->fr.buf || s->fr.state != FR_IDLE || s->fr.want <= s->fr.durable || s->read_only)
		return;
	s->fr.writing = s->fr.want;
	fr_pack(s, s->fr.buf, s->fr.writing);
	s->fr.io = (struct node_disk_io){
		.op = DISK_WRITE, .buf = s->fr.buf, .len = FR_BYTES, .off = FR_SLOT_OFF,
		.done = fr_done, .arg = s,
	};
	ret = node_disk_submit(s->disk, &s->fr.io);
	if (ret < 0) {
		store_go_read_only(s, "cannot write the flush frontier: %s", strerror(-ret));
		return;
	}
	s->fr.state = FR_WRITE;
}

int store_frontier_write_sync(struct node_store *s)
{
	int ret;

	if (!s->fr.buf)
		return 0;
	fr_pack(s, s->fr.buf, s->fr.durable);
	ret = node_disk_sync_io(s->disk, DISK_WRITE, s->fr.buf, FR_BYTES, FR_SLOT_OFF);
	if (ret == 0)
		ret = node_disk_sync_io(s->disk, DISK_FLUSH, NULL, 0, 0);
	return ret;
}
