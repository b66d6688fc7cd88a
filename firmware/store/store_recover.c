/*
 * The superblock, format, and recovery at open: load the newest usable
 * checkpoint, replay the log from its P0 to the first record that is
 * missing, torn or not linked, and rebuild the segments' accounting.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "overlay.h"
#include "store_int.h"

/* ---- superblock, format, recovery ---- */

void store_sb_pack(const struct node_store *s, uint8_t *b)
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


enum sb_verdict store_sb_check(const uint8_t *b)
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
	if (memcmp(b, SB_MAGIC, 8) != 0 || le_get32(b + 8) < SB_VERSION_MIN ||
	    le_get32(b + 8) > SB_VERSION)
		return SBV_VERSION;
	return SBV_OK;
}

int store_sb_unpack(struct node_store *s, const uint8_t *b, char *err, size_t errlen)
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
	store_ptr_pack(s->ck.ptrbuf, gen, p0_off, p0_seq, p0_prev, 0, 0, 0);
	return node_disk_sync_io(s->disk, DISK_WRITE, s->ck.ptrbuf, DISK_BLOCK_BYTES,
				 PTR_SLOT_OFF(slot));
}

int store_format(struct node_store *s, char *err, size_t errlen)
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
	node_rng_seed(&rng, s->o.seed ^ store_now_ns(s));
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
	/* no flush frontier yet: one left by an earlier store would claim
	 * records of this one durable */
	for (unsigned i = 0; i < FR_BYTES / DISK_BLOCK_BYTES; i++) {
		ret = node_disk_sync_io(s->disk, DISK_WRITE, b, DISK_BLOCK_BYTES,
					FR_SLOT_OFF + (uint64_t)i * DISK_BLOCK_BYTES);
		if (ret < 0)
			goto io_err;
	}
	/* the chain starts from the drive uuid: stale records never link */
	/* both slots: one damaged pointer still leaves the other */
	for (unsigned i = 0; i < 2; i++) {
		ret = write_ptr_slot(s, i, 1, s->data_start, 1, ovl_crc32c(0, s->uuid, 16));
		if (ret < 0)
			goto io_err;
	}
	ret = node_disk_sync_io(s->disk, DISK_FLUSH, NULL, 0, 0);
	if (ret < 0)
		goto io_err;
	for (unsigned i = 0; i < 2; i++) {
		store_sb_pack(s, b);
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
	buf = store_alloc_blocks(b - a);
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

/* Window reader for replay: one large read serves many records. */
struct replay_win {
	uint8_t *buf;
	uint64_t base;
	size_t len, cap;
};

static const uint8_t *win_get(struct node_store *s, struct replay_win *w, uint64_t off, size_t len)
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
		w->buf = store_alloc_blocks(b - a);
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

/* Recovery's view of damage: the frontier below which a failed record is
 * damage, and what was found. */
struct replay_dmg {
	uint64_t limit;         /* records up to this seq were durable (FORMAT.md §4) */
};

/* A damaged record whose key is known: its newest version is lost. */
static int mark_damaged(struct node_store *s, const uint8_t *key, size_t klen, uint64_t off)
{
	uint64_t old;

	if (klen == 0 || klen > NODE_STORE_KEY_MAX)
		return 0;
	return sidx_set(s->ix, key, klen, loc_damaged(off), &old) < 0 ? -ENOMEM : 0;
}

static void count_damage(struct node_store *s, uint64_t seq, bool unknown)
{
	if (seq > s->fr.damage_seq) {
		s->st.damaged_records++;
		s->fr.damage_seq = seq;
	}
	if (unknown)
		s->st.damaged_unknown++;
}

/*
 * A COMMIT met during replay: apply it only if the streamed record it names
 * is whole (every checksum) and is the one it committed (its hcrc). A commit
 * that made it to the drive without its region was never acknowledged (the
 * region's writes had completed before the commit was written, and an
 * acknowledgement needs a flush after that): it is skipped, and
 * remembered as void in the frontier. Below the flush frontier (and not
 * void) its region was durable: it is damaged, and so is the key.
 */
static int replay_commit(struct node_store *s, const uint8_t *rec, const struct rec_hdr *h,
			 uint64_t pos, const struct replay_dmg *dm)
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
	/* the streamed record's segment is kept as long as this commit may be
	 * replayed (FORMAT.md §7), after a restart too */
	if (s->segs[seg_of(s, off)].max_seq < h->seq)
		s->segs[seg_of(s, off)].max_seq = h->seq;
	ret = read_record(s, off, size, &buf, &inner, &ih);
	if (ret == -ENOMEM)
		return ret;
	if (ret == 0 && ih.type == REC_PUT && ih.klen == h->klen &&
	    memcmp(inner + REC_HDR_BYTES, key, h->klen) == 0 && ih.hcrc == le_get32(val) &&
	    rec_size(ih.klen, ih.vlen) == size) {
		ret = sidx_set(s->ix, key, h->klen, loc, &old);
	} else if (h->seq <= dm->limit && !store_frontier_is_void(s, h->seq)) {
		count_damage(s, h->seq, false);
		ret = mark_damaged(s, key, h->klen, pos);
	} else {
		/* never acknowledged: remembered, so that it never later
		 * passes for a durable commit whose region is damaged */
		s->st.discarded_tail_bytes++;
		store_frontier_void_add(s, h->seq);
		ret = 0;
	}
	free(buf);
	return ret;
}

/* A header at p that is the record `seq` would be (magic, type, seq, hcrc,
 * inside its segment); its value is not checked. prev is checked when
 * want_prev. */
static bool header_ok(struct node_store *s, struct replay_win *w, uint64_t pos, uint64_t seq_lo,
		      uint64_t seq_hi, bool want_prev, uint32_t prev, struct rec_hdr *h,
		      const uint8_t **recp)
{
	const uint8_t *p = win_get(s, w, pos, REC_HDR_BYTES);
	uint64_t send = seg_start(s, seg_of(s, pos)) + s->seg_bytes, hl;

	if (!p || rec_hdr_unpack(p, h) < 0 || h->seq < seq_lo || h->seq > seq_hi ||
	    (want_prev && h->prev != prev) || h->klen > NODE_STORE_KEY_MAX)
		return false;
	hl = REC_HDR_BYTES + h->klen + rec_table_bytes(h->vlen);
	if (pos + rec_size(h->klen, h->vlen) > send || !(p = win_get(s, w, pos, hl)))
		return false;
	if (rec_hcrc(p, p + REC_HDR_BYTES, h->klen, p + REC_HDR_BYTES + h->klen,
		     rec_table_bytes(h->vlen)) != h->hcrc)
		return false;
	*recp = p;
	return true;
}

/*
 * A header that fails only by one damaged byte: the record's place in the
 * chain (seq and prev are known) and its hcrc let recovery find the byte,
 * so the key of a record with one flipped header byte is still known.
 * On success the corrected header, key and table are in *fixed (malloc'd).
 */
static bool header_fix(struct node_store *s, struct replay_win *w, uint64_t pos, uint64_t seq,
		       uint32_t prev, struct rec_hdr *h, uint8_t **fixed)
{
	uint64_t send = seg_start(s, seg_of(s, pos)) + s->seg_bytes;
	size_t cap = REC_HDR_BYTES + NODE_STORE_KEY_MAX + rec_table_bytes(NODE_STORE_VALUE_MAX);
	const uint8_t *p;
	uint8_t *b = NULL;
	bool ok = false;

	if (pos + cap > send)
		cap = (size_t)(send - pos);
	if (cap < REC_HDR_BYTES || !(p = win_get(s, w, pos, cap)) || !(b = malloc(cap)))
		return false;
	memcpy(b, p, cap);
	for (size_t i = 0; i < cap && !ok; i++) {
		uint8_t orig = b[i];
		struct rec_hdr g;

		/* past the header, only when the header itself is sound */
		if (i == REC_HDR_BYTES && (rec_hdr_unpack(b, &g) < 0 || g.seq != seq || g.prev != prev))
			break;
		for (unsigned v = 1; v < 256 && !ok; v++) {
			size_t tl, hl;

			b[i] = orig ^ (uint8_t)v;
			if (rec_hdr_unpack(b, &g) == 0 && g.seq == seq && g.prev == prev &&
			    g.klen <= NODE_STORE_KEY_MAX) {
				tl = rec_table_bytes(g.vlen);
				hl = REC_HDR_BYTES + g.klen + tl;
				ok = i < hl && hl <= cap && pos + rec_size(g.klen, g.vlen) <= send &&
				     rec_hcrc(b, b + REC_HDR_BYTES, g.klen, b + REC_HDR_BYTES + g.klen, tl) == g.hcrc;
				if (ok)
					*h = g;
			}
			if (i >= REC_HDR_BYTES && !ok)
				continue;
		}
		if (!ok)
			b[i] = orig;
	}
	if (!ok) {
		free(b);
		return false;
	}
	*fixed = b;
	return true;
}

/*
 * After a record whose header is destroyed: find the next record of the
 * log, the first header with a sequence number in (seq, limit] further in
 * the segment, or at offset 0 of a segment (the destroyed record was a
 * NEXT). Returns its position, or 0.
 */
static uint64_t resync(struct node_store *s, struct replay_win *w, uint64_t from, uint64_t seq,
		       uint64_t limit)
{
	uint64_t send = seg_start(s, seg_of(s, from)) + s->seg_bytes, best = 0, bseq = UINT64_MAX;
	struct rec_hdr h;
	const uint8_t *p;

	for (uint64_t pos = align_up(from + 1, REC_ALIGN_BYTES); pos + REC_HDR_BYTES <= send;
	     pos += REC_ALIGN_BYTES) {
		p = win_get(s, w, pos, REC_HDR_BYTES);
		if (!p)
			break;
		if (le_get16(p) != REC_MAGIC)
			continue;
		if (header_ok(s, w, pos, seq + 1, limit, false, 0, &h, &p))
			return pos;
	}
	for (uint32_t i = 0; i < s->nsegs; i++) {
		uint64_t pos = seg_start(s, i);

		if (header_ok(s, w, pos, seq + 1, limit, false, 0, &h, &p) && h.seq < bseq) {
			bseq = h.seq;
			best = pos;
		}
	}
	return best;
}

/*
 * Replay the log from the checkpoint's P0 (FORMAT.md §4). A record that
 * fails its checks ends the log when it is after the flush frontier (a torn
 * tail); at or below the frontier it is damage: its key (when the header
 * says it) is marked damaged, and replay goes on after it.
 */
static int replay(struct node_store *s, const struct ptr_slot *ps)
{
	struct replay_win w = { 0 };
	struct replay_dmg dm = { 0 };
	uint64_t pos = ps->p0_off, seq = ps->p0_seq, last_end = ps->p0_off, old, fpos = 0;
	uint64_t nckpt = 0; /* checkpoint records after P0 */
	uint32_t prev = ps->p0_prev, si = seg_of(s, pos);
	uint8_t *fixed = NULL;
	int ret = 0;

	dm.limit = s->fr.loaded > ps->p0_seq - 1 ? s->fr.loaded : ps->p0_seq - 1;
	s->segs[si].state = SEG_HEAD;
	for (;;) {
		const uint8_t *p;
		struct rec_hdr h;
		uint64_t rsize, loc;
		bool hok;

		free(fixed);
		fixed = NULL;
		si = seg_of(s, pos);
		p = NULL;
		rsize = 0;
		if (pos + REC_HDR_BYTES <= seg_start(s, si) + s->seg_bytes)
			p = win_get(s, &w, pos, REC_HDR_BYTES);
		if (p && rec_hdr_unpack(p, &h) == 0 && h.prev == prev && h.seq == seq) {
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
			 * boundary, the log ends here -- unless the record
			 * expected is at or below the flush frontier: then it
			 * was durable, and what is there is damage.
			 */
			if (p && pos % DISK_BLOCK_BYTES && !fpos) {
				if (!all_zero(p, REC_HDR_BYTES))
					s->st.discarded_tail_bytes += align_up(pos, DISK_BLOCK_BYTES) - pos;
				fpos = pos;
				pos = align_up(pos, DISK_BLOCK_BYTES);
				continue;
			}
			if (seq > dm.limit)
				break;
			/* damage: is its header whole (mid-block, or at the block
			 * after batch padding)? */
			/* the block boundary first: a failed record mid-block
			 * before it may be the torn tail an earlier recovery
			 * ended the log at (the log went on at the boundary) */
			hok = false;
			if (header_ok(s, &w, pos, seq, seq, true, prev, &h, &p)) {
				hok = true;
			} else if (fpos && header_ok(s, &w, fpos, seq, seq, true, prev, &h, &p)) {
				pos = fpos;
				hok = true;
			} else if (header_fix(s, &w, pos, seq, prev, &h, &fixed)) {
				hok = true;
			} else if (fpos && header_fix(s, &w, fpos, seq, prev, &h, &fixed)) {
				pos = fpos;
				hok = true;
			} else if (fpos) {
				pos = fpos;
			}
			if (fixed)
				p = fixed;
			fpos = 0;
			if (hok) {
				rsize = rec_size(h.klen, h.vlen);
				count_damage(s, seq, false);
				if (h.type == REC_PUT || h.type == REC_TOMB || h.type == REC_COMMIT)
					ret = mark_damaged(s, p + REC_HDR_BYTES, h.klen, pos);
				if (ret < 0)
					goto out;
				/* follow it as if whole: its size and links are sound */
				if (h.type != REC_RESV && h.type != REC_NEXT)
					h.type = REC_CKPT_PART; /* nothing more to apply */
				loc = 0;
			} else {
				uint64_t at = resync(s, &w, pos, seq, dm.limit);
				const uint8_t *q;
				struct rec_hdr nh;

				if (!at) {
					count_damage(s, seq, true);
					break; /* nothing durable found after it */
				}
				(void)header_ok(s, &w, at, seq + 1, dm.limit, false, 0, &nh, &q);
				for (uint64_t q2 = seq; q2 < nh.seq; q2++)
					count_damage(s, q2, true);
				if (seg_of(s, at) != si) {
					s->segs[si].state = SEG_USED;
					s->segs[seg_of(s, at)].state = SEG_HEAD;
				}
				pos = last_end = at;
				prev = nh.prev;
				seq = nh.seq;
				continue;
			}
		} else {
			fpos = 0;
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
				ret = replay_commit(s, p, &h, pos, &dm);
				if (ret < 0)
					goto out;
				break;
			default:
				break;
			}
		}
		s->segs[si].max_seq = h.seq;
		if (s->segs[si].state == SEG_FREE)
			s->segs[si].state = SEG_HEAD;
		prev = h.hcrc;
		seq++;
		if (h.type != REC_CKPT_PART && h.type != REC_CKPT_END)
			s->st.recovered_records++;
		else
			nckpt++;
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
	/* every record after P0 but checkpoint records, damaged ones too */
	s->ck.replayed = seq - ps->p0_seq >= nckpt ? seq - ps->p0_seq - nckpt : 0;
	/* exactly one head: the segment the log ends in */
	for (uint32_t i = 0; i < s->nsegs; i++)
		if (s->segs[i].state == SEG_HEAD && i != seg_of(s, s->head))
			s->segs[i].state = SEG_USED;
	s->segs[seg_of(s, s->head)].state = SEG_HEAD;
out:
	free(fixed);
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
	s->st.damaged_objects = 0;
	sidx_seek(s->ix, &it, NULL, 0, false);
	while (sidx_next(s->ix, &it, &k, &kl, &loc))
		store_seg_live_add(s, loc, +1);
	s->nfree = 0;
	for (uint32_t i = 0; i < s->nsegs; i++)
		s->nfree += s->segs[i].state == SEG_FREE;
	store_reclaim_segments(s);
}

/* Read the flush frontier's two copies: the newest valid one counts. */
static int load_frontier(struct node_store *s, char *err, size_t errlen)
{
	bool any = false, zero = true;
	int ret;

	if (!s->fr.buf)
		s->fr.buf = store_alloc_blocks(FR_BYTES);
	if (!s->fr.buf) {
		snprintf(err, errlen, "out of memory opening '%s'", s->disk->name);
		return -ENOMEM;
	}
	ret = node_disk_sync_io(s->disk, DISK_READ, s->fr.buf, FR_BYTES, FR_SLOT_OFF);
	if (ret < 0) {
		snprintf(err, errlen, "cannot read the flush frontier of '%s': %s", s->disk->name,
			 strerror(-ret));
		return ret;
	}
	for (unsigned i = 0; i < 2; i++) {
		const uint8_t *c = s->fr.buf + i * DISK_BLOCK_BYTES;
		uint64_t d, dmg, dseq, ck;

		zero = zero && all_zero(c, DISK_BLOCK_BYTES);
		if ((any && le_get64(c + 8) <= s->fr.loaded) ||
		    !store_frontier_parse(s, c, &d, &dmg, &dseq, &ck))
			continue;
		any = true;
		s->fr.loaded = d;
		s->st.damaged_records = dmg;
		s->fr.damage_seq = dseq;
		s->st.checksum_errors = ck;
	}
	s->st.frontier_lost = !any && !zero;
	return 0;
}

/* After replay: make what recovery kept durable, and record the frontier
 * and the counters. */
static int settle_frontier(struct node_store *s, char *err, size_t errlen)
{
	int ret = node_disk_sync_io(s->disk, DISK_FLUSH, NULL, 0, 0);

	s->fr.durable = s->seq > s->fr.loaded ? s->seq : s->fr.loaded;
	s->fr.want = s->fr.durable;
	if (ret == 0)
		ret = store_frontier_write_sync(s);
	if (ret < 0)
		snprintf(err, errlen, "cannot write the flush frontier of '%s': %s", s->disk->name,
			 strerror(-ret));
	return ret;
}

int store_recover(struct node_store *s, char *err, size_t errlen)
{
	struct ptr_slot slots[2], *order[2];
	uint8_t *b = s->ck.ptrbuf;
	int ret = -EUCLEAN, tried = 0;

	ret = load_frontier(s, err, errlen);
	if (ret < 0)
		return ret;
	ret = -EUCLEAN;

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
		return settle_frontier(s, err, errlen);
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
