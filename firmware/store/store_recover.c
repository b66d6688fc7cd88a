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
	s->sb_version = le_get32(b + 8);
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

/* Write pointer slot `slot` and its mirror. */
static int write_ptr_slot(struct node_store *s, unsigned slot, uint64_t gen, uint64_t p0_off,
			  uint64_t p0_seq, uint32_t p0_prev)
{
	int ret;

	store_ptr_pack(s->ck.ptrbuf, gen, p0_off, p0_seq, p0_prev, 0, 0, 0);
	ret = node_disk_sync_io(s->disk, DISK_WRITE, s->ck.ptrbuf, DISK_BLOCK_BYTES, PTR_SLOT_OFF(slot));
	if (ret == 0)
		ret = node_disk_sync_io(s->disk, DISK_WRITE, s->ck.ptrbuf, DISK_BLOCK_BYTES,
					PTR_MIRROR_OFF(slot));
	return ret;
}

int store_format(struct node_store *s, char *err, size_t errlen)
{
	uint8_t *b = s->ck.ptrbuf;
	struct node_rng rng;
	uint64_t r, first;
	int ret;

	s->seg_bytes = s->o.segment_bytes;
	s->data_start = DATA_START_BYTES;
	s->sb_version = SB_VERSION;
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
	/* the first sequence number: random in [2^62, 2^63), so that records
	 * an earlier store left on the drive never have one recovery looks
	 * for (FORMAT.md §3) */
	first = 1ull << 62 | node_rng_next(&rng) >> 2;
	s->created_at = s->clock.wall_s(s->clock.arg);
	/* erase the pointer slots and their mirrors first, so a half-done
	 * format never looks valid */
	memset(b, 0, DISK_BLOCK_BYTES);
	for (unsigned i = 0; i < 2; i++) {
		ret = node_disk_sync_io(s->disk, DISK_WRITE, b, DISK_BLOCK_BYTES, PTR_SLOT_OFF(i));
		if (ret == 0)
			ret = node_disk_sync_io(s->disk, DISK_WRITE, b, DISK_BLOCK_BYTES, PTR_MIRROR_OFF(i));
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
		ret = write_ptr_slot(s, i, 1, s->data_start, first, ovl_crc32c(0, s->uuid, 16));
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
			i += CK_KEY_BYTES + kl;
		} else if (p[i] == CK_ITEM_VKEY && i + 3 <= n) {
			/* format 4: a key with its version, or a tombstone */
			size_t kl = p[i + 1] | (size_t)p[i + 2] << 8;
			struct sidx_val v;

			if (kl == 0 || kl > NODE_STORE_KEY_MAX || i + CK_VKEY_BYTES + kl > n)
				return -EBADMSG;
			v.loc = le_get64(p + i + 3 + kl);
			v.hlc = le_get64(p + i + 11 + kl);
			v.node = le_get64(p + i + 19 + kl);
			if (p[i + 27 + kl] > 1 || loc_off(v.loc) < s->data_start ||
			    loc_off(v.loc) + loc_size(v.loc) > s->disk->size)
				return -EBADMSG;
			v.tomb = p[i + 27 + kl] == 1;
			/* a tombstone always has a version; a damaged mark is no tombstone */
			if ((v.tomb && ((!v.hlc && !v.node) || loc_is_damaged(v.loc))) ||
			    sidx_append_sorted_val(s->ix, p + i + 3, kl, &v) < 0)
				return -EBADMSG;
			i += CK_VKEY_BYTES + kl;
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
	/* damaged records this replay found, [from, to) on the drive: a
	 * record whose key is known (to = from + 1), or records skipped
	 * after a destroyed header; counted: how many of them it counted
	 * (a later DAMAGE record for one of them was counted by the read
	 * that wrote it, so the two are one) */
	struct dmg_range {
		uint64_t from, to;
		unsigned counted;
	} *found;
	unsigned nfound, capfound;
};

static void note_found(struct replay_dmg *dm, uint64_t from, uint64_t to, unsigned counted)
{
	if (dm->nfound == dm->capfound) {
		unsigned cap = dm->capfound ? dm->capfound * 2 : 16;
		void *n = realloc(dm->found, cap * sizeof(*dm->found));

		if (!n)
			return; /* only the counts' merge of a rare case is lost */
		dm->found = n;
		dm->capfound = cap;
	}
	dm->found[dm->nfound++] = (struct dmg_range){ from, to, counted };
}

static struct dmg_range *found_at(struct replay_dmg *dm, uint64_t off)
{
	for (unsigned i = 0; i < dm->nfound; i++)
		if (off >= dm->found[i].from && off < dm->found[i].to)
			return &dm->found[i];
	return NULL;
}

/*
 * A damaged record whose key is known: its newest version is lost. The
 * mark takes the version of the record (h: a put, tombstone or commit of
 * a put, whose header is whole), or keeps the key's (keep: a copy).
 */
static int mark_damaged(struct node_store *s, const uint8_t *key, size_t klen, uint64_t off,
			const struct rec_hdr *h, bool keep)
{
	struct sidx_val v = { .loc = loc_damaged(off) };
	uint64_t old;

	if (klen == 0 || klen > NODE_STORE_KEY_MAX)
		return 0;
	if (keep && sidx_set_loc(s->ix, key, klen, v.loc, &old) == 0)
		return 0;
	if (!keep && h) {
		v.hlc = h->hlc;
		v.node = h->node;
	}
	return sidx_put(s->ix, key, klen, &v, NULL) < 0 ? -ENOMEM : 0;
}

/*
 * A versioned record (PUT, TOMB, COMMIT of a put) met at replay: it applies
 * unless the key holds a newer version (the log never has an older one
 * after a newer one, but a checkpoint's items may be ahead of its P0:
 * FORMAT.md §4). An unversioned one always applies.
 */
static bool replay_applies(struct node_store *s, const uint8_t *key, size_t klen, uint64_t hlc,
			   uint64_t node)
{
	struct node_store_ver a = { hlc, node }, b;
	struct sidx_val cur;

	if (!ver_is_set(&a) || !sidx_find(s->ix, key, klen, &cur))
		return true;
	b = (struct node_store_ver){ cur.hlc, cur.node };
	return node_store_ver_cmp(&a, &b) >= 0;
}

/* Count a damaged record once over the drive's life. true if counted now. */
static bool count_damage(struct node_store *s, uint64_t seq, bool unknown)
{
	bool counted = false;

	if (seq > s->fr.damage_seq) {
		s->st.damaged_records++;
		s->fr.damage_seq = seq;
		counted = true;
	}
	if (unknown)
		s->st.damaged_unknown++;
	return counted;
}

/*
 * A DAMAGE record: a read found the key's record at `aux` damaged. Mark the
 * key damaged if it still points there, or if this replay found that
 * record damaged itself (when its header was destroyed, the key was left
 * at its previous version: the DAMAGE record knows better). Counted by the
 * frontier when it is at or below it, else here; a record this replay
 * counted too is counted once.
 */
static int replay_damage(struct node_store *s, const uint8_t *key, const struct rec_hdr *h,
			 struct replay_dmg *dm)
{
	uint64_t off = loc_off(h->aux), cur = 0, old;
	struct dmg_range *r = found_at(dm, off);
	bool have;

	if (h->seq > s->fr.loaded)
		s->st.checksum_errors++;
	if (h->klen == 0 || h->klen > NODE_STORE_KEY_MAX)
		return 0;
	have = sidx_get(s->ix, key, h->klen, &cur) == 1;
	if (r && r->counted) {
		r->counted--;
		s->st.damaged_records--;
		if (r->to > r->from + 1 && s->st.damaged_unknown)
			s->st.damaged_unknown--;
	}
	if (have) {
		struct sidx_val v;

		/* a tombstone of the key came after the damaged object: nothing
		 * of that object is the key's any more */
		if (sidx_find(s->ix, key, h->klen, &v) && v.tomb)
			return 0;
	}
	if ((have && cur == h->aux) || (r && !(have && loc_is_damaged(cur) && loc_off(cur) == off))) {
		/* the key's version stays with its mark */
		if (have)
			return sidx_set_loc(s->ix, key, h->klen, loc_damaged(off), &old) < 0 ? -ENOMEM : 0;
		return sidx_set(s->ix, key, h->klen, loc_damaged(off), &old) < 0 ? -ENOMEM : 0;
	}
	return 0;
}

/* A damaged tombstone record whose header is whole: a TOMB applies by the
 * version rule, a tombstone's RELOC if the key still points at its source. */
static int replay_tomb_damaged(struct node_store *s, const uint8_t *key, const struct rec_hdr *h,
			       uint64_t loc)
{
	struct sidx_val v = { .loc = loc, .hlc = h->hlc, .node = h->node, .tomb = true };
	uint64_t old;

	if (h->klen == 0 || h->klen > NODE_STORE_KEY_MAX)
		return 0;
	if (h->type == REC_TOMB)
		return replay_applies(s, key, h->klen, h->hlc, h->node) &&
		       sidx_put(s->ix, key, h->klen, &v, NULL) < 0 ? -ENOMEM : 0;
	if (sidx_get(s->ix, key, h->klen, &old) == 1 && old == h->aux)
		return sidx_set_loc(s->ix, key, h->klen, loc, &old) < 0 ? -ENOMEM : 0;
	return 0;
}

/*
 * Verify the record at off (size bytes) of key, a piece at a time (a
 * streamed record may be 64 MiB; recovery holds at most a piece of it):
 * its header, key and chunk table, then every chunk of its value, then
 * the whole value's crc. 0 and *h, -EIO (fails a check), -ENOMEM.
 */
static int verify_record(struct node_store *s, uint64_t off, uint64_t size, const uint8_t *key,
			 size_t klen, struct rec_hdr *h)
{
	size_t piece = s->o.compact_piece_bytes, tlen;
	uint64_t a, hl, vlen, voff;
	uint8_t *buf = NULL, *table = NULL;
	const uint8_t *p;
	uint32_t crc = 0;
	int ret = -EIO;

	if (size < REC_HDR_BYTES || off + size > s->disk->size)
		return -EIO;
	hl = REC_HDR_MAX_BYTES + klen + rec_table_bytes(size);
	if (hl > size)
		hl = size;
	buf = store_alloc_blocks(piece + 2 * DISK_BLOCK_BYTES > hl + 2 * DISK_BLOCK_BYTES
					 ? piece + 2 * DISK_BLOCK_BYTES : hl + 2 * DISK_BLOCK_BYTES);
	if (!buf)
		return -ENOMEM;
	a = align_down(off, DISK_BLOCK_BYTES);
	if (node_disk_sync_io(s->disk, DISK_READ, buf, align_up(off + hl, DISK_BLOCK_BYTES) - a, a) < 0)
		goto out;
	p = buf + (off - a);
	if (rec_hdr_unpack(p, h) < 0 || h->klen != klen || rec_hsize(h) != size)
		goto out;
	vlen = h->vlen;
	tlen = rec_table_bytes(vlen);
	if (rec_key_off(h) + klen + tlen > hl || memcmp(p + rec_key_off(h), key, klen) != 0 ||
	    rec_hcrc(p, p + rec_key_off(h), klen, p + rec_key_off(h) + klen, tlen) != h->hcrc)
		goto out;
	rec_ext_get(p, h);
	table = malloc(tlen ? tlen : 1);
	if (!table) {
		ret = -ENOMEM;
		goto out;
	}
	memcpy(table, p + rec_key_off(h) + klen, tlen);
	voff = off + rec_key_off(h) + klen + tlen;
	for (uint64_t base = 0; base < vlen; base += piece) {
		uint64_t n = vlen - base < piece ? vlen - base : piece;
		uint64_t ra = align_down(voff + base, DISK_BLOCK_BYTES);

		if (node_disk_sync_io(s->disk, DISK_READ, buf, align_up(voff + base + n, DISK_BLOCK_BYTES) - ra,
				      ra) < 0)
			goto out;
		p = buf + (voff + base - ra);
		for (uint64_t c = 0; tlen && c < n; c += REC_CHUNK_BYTES) {
			uint64_t cn = n - c < REC_CHUNK_BYTES ? n - c : REC_CHUNK_BYTES;

			if (ovl_crc32c(0, p + c, cn) != le_get32(table + 4 * ((base + c) / REC_CHUNK_BYTES)))
				goto out;
		}
		crc = ovl_crc32c(crc, p, n);
	}
	if (crc == h->vcrc)
		ret = 0;
out:
	free(table);
	free(buf);
	return ret;
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
			 uint64_t pos, struct replay_dmg *dm)
{
	const uint8_t *key = rec + rec_key_off(h), *val = key + h->klen;
	uint64_t loc = h->aux, off = loc_off(loc), size = loc_size(loc), old, from = 0;
	struct rec_hdr ih;
	bool move = h->vlen == 24, whole;
	int ret;

	if (h->klen == 0 || h->klen > NODE_STORE_KEY_MAX || (h->vlen != 16 && !move) ||
	    off < s->data_start || off + size > s->data_start + (uint64_t)s->nsegs * s->seg_bytes) {
		s->st.discarded_tail_bytes++;
		return 0;
	}
	if (move)
		from = le_get64(val + 16);
	/* the streamed record's segment is kept as long as this commit may be
	 * replayed (FORMAT.md §7), after a restart too */
	if (s->segs[seg_of(s, off)].max_seq < h->seq)
		s->segs[seg_of(s, off)].max_seq = h->seq;
	ret = verify_record(s, off, size, key, h->klen, &ih);
	if (ret == -ENOMEM)
		return ret;
	whole = ret == 0 && ih.type == (move ? REC_RELOC : REC_PUT) && (!move || ih.aux == from) &&
		ih.hcrc == le_get32(val);
	ret = 0;
	if (whole && !move) {
		struct sidx_val v = { .loc = loc, .hlc = h->hlc, .node = h->node };

		if (replay_applies(s, key, h->klen, h->hlc, h->node))
			ret = sidx_put(s->ix, key, h->klen, &v, NULL);
	} else if (whole) {
		/* a move: like a RELOC, only if the key still points at its source */
		if (sidx_get(s->ix, key, h->klen, &old) == 1 && old == from)
			ret = sidx_set_loc(s->ix, key, h->klen, loc, &old);
	} else if (h->seq <= dm->limit && !store_frontier_is_void(s, h->seq)) {
		bool counted = count_damage(s, h->seq, false);

		/* a damaged copy the key had moved to is its newest version:
		 * the source may be in a segment reused since, never trusted */
		if (!move || (sidx_get(s->ix, key, h->klen, &old) == 1 && old == from)) {
			note_found(dm, pos, pos + 1, counted);
			ret = mark_damaged(s, key, h->klen, pos, h, move);
		}
	} else {
		/* never acknowledged: remembered, so that it never later
		 * passes for a durable commit whose region is damaged */
		s->st.discarded_tail_bytes++;
		store_frontier_void_add(s, h->seq);
	}
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
	hl = rec_key_off(h) + h->klen + rec_table_bytes(h->vlen);
	if (pos + rec_hsize(h) > send || !(p = win_get(s, w, pos, hl)))
		return false;
	if (rec_hcrc(p, p + rec_key_off(h), h->klen, p + rec_key_off(h) + h->klen,
		     rec_table_bytes(h->vlen)) != h->hcrc)
		return false;
	rec_ext_get(p, h);
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
	size_t cap = REC_HDR_MAX_BYTES + NODE_STORE_KEY_MAX + rec_table_bytes(NODE_STORE_VALUE_MAX);
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
				hl = rec_key_off(&g) + g.klen + tl;
				ok = i < hl && hl <= cap && pos + rec_hsize(&g) <= send &&
				     rec_hcrc(b, b + rec_key_off(&g), g.klen, b + rec_key_off(&g) + g.klen, tl) == g.hcrc;
				if (ok) {
					rec_ext_get(b, &g);
					*h = g;
				}
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
 * NEXT). Never one in a jumped-over range: what has those is left from a
 * crashed life (FORMAT.md §4). Returns its position, or 0.
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
		if (header_ok(s, w, pos, seq + 1, limit, false, 0, &h, &p) &&
		    !store_frontier_in_gap(s, h.seq))
			return pos;
	}
	for (uint32_t i = 0; i < s->nsegs; i++) {
		uint64_t pos = seg_start(s, i);

		if (header_ok(s, w, pos, seq + 1, limit, false, 0, &h, &p) &&
		    !store_frontier_in_gap(s, h.seq) && h.seq < bseq) {
			bseq = h.seq;
			best = pos;
		}
	}
	return best;
}

/*
 * A durable record whose header is whole but which fails its checks: does
 * it make its key damaged? A PUT, TOMB or COMMIT of a put: yes. A RELOC,
 * or a COMMIT of a move, only if the key still points at the record it
 * copies (else it was moot): once applied, the copy was the key's newest
 * version and its source's segment may have been reused since. A move
 * COMMIT's own value is not trusted for that: the source is read from its
 * copy's header, and if that fails too the key is marked.
 */
static bool damaged_marks(struct node_store *s, const struct rec_hdr *h, const uint8_t *key)
{
	uint64_t cur = 0, from = h->aux;

	if (h->type == REC_PUT || h->type == REC_TOMB || (h->type == REC_COMMIT && h->vlen != 24))
		return true;
	if (h->type == REC_COMMIT) {
		uint64_t off = loc_off(h->aux), size = loc_size(h->aux);
		uint64_t a = align_down(off, DISK_BLOCK_BYTES);
		size_t hl = REC_HDR_MAX_BYTES + h->klen + rec_table_bytes(size);
		uint8_t *b = NULL;
		struct rec_hdr ih;
		bool known = false;

		if (off < s->data_start || off + hl > s->disk->size || size < hl)
			return true;
		b = store_alloc_blocks(align_up(off + hl, DISK_BLOCK_BYTES) - a);
		if (b && node_disk_sync_io(s->disk, DISK_READ, b, align_up(off + hl, DISK_BLOCK_BYTES) - a, a) == 0) {
			const uint8_t *p = b + (off - a);

			known = rec_hdr_unpack(p, &ih) == 0 && ih.type == REC_RELOC && ih.klen == h->klen &&
				rec_key_off(&ih) + ih.klen + rec_table_bytes(ih.vlen) <= hl &&
				rec_hcrc(p, p + rec_key_off(&ih), ih.klen, p + rec_key_off(&ih) + ih.klen,
					 rec_table_bytes(ih.vlen)) == ih.hcrc &&
				memcmp(p + rec_key_off(&ih), key, h->klen) == 0;
			from = ih.aux;
		}
		free(b);
		if (!known)
			return true;
	} else if (h->type != REC_RELOC) {
		return false;
	}
	return h->klen && h->klen <= NODE_STORE_KEY_MAX && sidx_get(s->ix, key, h->klen, &cur) == 1 &&
	       cur == from;
}

/*
 * The record at the place of `seq` in the chain: seq itself, or, where the
 * log jumps (the first record after a recovery), a record flagged
 * REC_FLAG_JUMP with the jump's target (any larger seq when the jump is
 * not listed: the frontier that listed it was lost).
 */
static bool seq_follows(const struct node_store *s, const struct rec_hdr *h, uint64_t seq)
{
	uint64_t to = store_frontier_jump_to(s, seq);

	if (to != seq)
		return h->seq == to && (h->flags & REC_FLAG_JUMP);
	return h->seq == seq || ((h->flags & REC_FLAG_JUMP) && h->seq > seq);
}

/* Sequence numbers of the log in [lo, hi): jumped-over ranges aside. */
static uint64_t seqs_between(const struct node_store *s, uint64_t lo, uint64_t hi)
{
	uint64_t n = hi > lo ? hi - lo : 0;

	for (unsigned i = 0; i < s->fr.njumps && n; i++) {
		uint64_t a = s->fr.jumps[i].from > lo ? s->fr.jumps[i].from : lo;
		uint64_t b = s->fr.jumps[i].to < hi ? s->fr.jumps[i].to : hi;

		if (a < b)
			n -= b - a < n ? b - a : n;
	}
	return n;
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
	uint64_t passed = 0; /* records after P0, damaged and skipped ones too */
	uint32_t prev = ps->p0_prev, si = seg_of(s, pos);
	uint8_t *fixed = NULL;
	int ret = 0;

	dm.limit = s->fr.loaded > ps->p0_seq - 1 ? s->fr.loaded : ps->p0_seq - 1;
	s->segs[si].state = SEG_HEAD;
	for (;;) {
		const uint8_t *p, *key;
		struct rec_hdr h;
		uint64_t rsize, loc, want;
		bool hok;

		free(fixed);
		fixed = NULL;
		si = seg_of(s, pos);
		p = NULL;
		rsize = 0;
		if (pos + REC_HDR_BYTES <= seg_start(s, si) + s->seg_bytes)
			p = win_get(s, &w, pos, REC_HDR_BYTES);
		if (p && rec_hdr_unpack(p, &h) == 0 && h.prev == prev && seq_follows(s, &h, seq)) {
			rsize = rec_hsize(&h);
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
			/* the record expected here carries `want` (a jump's
			 * target, when the log jumps here) */
			want = store_frontier_jump_to(s, seq);
			if (want > dm.limit)
				break;
			/* damage: is its header whole (mid-block, or at the block
			 * after batch padding)? */
			/* the block boundary first: a failed record mid-block
			 * before it may be the torn tail an earlier recovery
			 * ended the log at (the log went on at the boundary) */
			hok = false;
			if (header_ok(s, &w, pos, want, want, true, prev, &h, &p)) {
				hok = true;
			} else if (fpos && header_ok(s, &w, fpos, want, want, true, prev, &h, &p)) {
				pos = fpos;
				hok = true;
			} else if (header_fix(s, &w, pos, want, prev, &h, &fixed)) {
				hok = true;
			} else if (fpos && header_fix(s, &w, fpos, want, prev, &h, &fixed)) {
				pos = fpos;
				hok = true;
			} else if (fpos) {
				pos = fpos;
			}
			if (fixed)
				p = fixed;
			fpos = 0;
			if (hok) {
				bool counted;

				rsize = rec_hsize(&h);
				counted = count_damage(s, want, false);
				note_found(&dm, pos, pos + 1, counted);
				if (ver_is_set(&(struct node_store_ver){ h.hlc, h.node }) &&
				    (h.type == REC_TOMB || (h.type == REC_RELOC && (h.flags & REC_FLAG_TOMB)))) {
					/* a tombstone's record: its whole header (hcrc covers
					 * the version) says all a tombstone is, so it applies
					 * as one; compaction rewrites it from the index */
					ret = replay_tomb_damaged(s, p + rec_key_off(&h), &h, loc_make(pos, rsize));
				} else if (damaged_marks(s, &h, p + rec_key_off(&h))) {
					ret = mark_damaged(s, p + rec_key_off(&h), h.klen, pos, &h,
							   h.type == REC_RELOC || h.type == REC_COMMIT);
				}
				if (ret < 0)
					goto out;
				/* follow it as if whole: its size and links are sound */
				if (h.type != REC_RESV && h.type != REC_NEXT)
					h.type = REC_CKPT_PART; /* nothing more to apply */
				loc = 0;
			} else {
				uint64_t at = resync(s, &w, pos, want, dm.limit), lo, n;
				const uint8_t *q;
				struct rec_hdr nh;
				unsigned counted = 0;

				if (!at) {
					count_damage(s, want, true);
					passed++;
					break; /* nothing durable found after it */
				}
				(void)header_ok(s, &w, at, want + 1, dm.limit, false, 0, &nh, &q);
				/* the records skipped, each counted once over the
				 * drive's life (count_damage(), without a loop over
				 * what may be a wide range) */
				n = seqs_between(s, want, nh.seq);
				passed += n;
				s->st.damaged_unknown += n;
				lo = want > s->fr.damage_seq + 1 ? want : s->fr.damage_seq + 1;
				if (nh.seq > lo) {
					uint64_t c = seqs_between(s, lo, nh.seq);

					s->st.damaged_records += c;
					counted = c > UINT32_MAX ? UINT32_MAX : (unsigned)c;
					s->fr.damage_seq = nh.seq - 1;
				}
				/* what was skipped, when the log goes on in the same segment */
				note_found(&dm, pos, seg_of(s, at) == si ? at : seg_start(s, si) + s->seg_bytes,
					   counted);
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
			if (h.seq != seq)
				/* a jump the frontier did not list (it was lost):
				 * list it again, resync needs it */
				store_frontier_jump_add(s, seq, h.seq);
			loc = loc_make(pos, rsize);
			key = p + rec_key_off(&h);
			switch (h.type) {
			case REC_PUT:
			case REC_TOMB: {
				struct sidx_val v = { .loc = loc, .hlc = h.hlc, .node = h.node,
						      .tomb = h.type == REC_TOMB };

				if (h.klen == 0 || h.klen > NODE_STORE_KEY_MAX)
					goto bad;
				if (h.type == REC_TOMB && !ver_is_set(&(struct node_store_ver){ h.hlc, h.node })) {
					/* a plain delete: the key goes */
					sidx_del(s->ix, key, h.klen, &old);
					break;
				}
				if (replay_applies(s, key, h.klen, h.hlc, h.node) &&
				    sidx_put(s->ix, key, h.klen, &v, NULL) < 0) {
					ret = -ENOMEM;
					goto out;
				}
				break;
			}
			case REC_RELOC:
				/* the copy takes the place of its source; the key keeps
				 * its version (and tombstone bit) */
				if (sidx_get(s->ix, key, h.klen, &old) == 1 && old == h.aux &&
				    sidx_set_loc(s->ix, key, h.klen, loc, &old) < 0) {
					ret = -ENOMEM;
					goto out;
				}
				break;
			case REC_DROP: {
				struct sidx_val v;

				if (sidx_find(s->ix, key, h.klen, &v) && v.tomb && v.hlc == h.hlc &&
				    v.node == h.node)
					sidx_del(s->ix, key, h.klen, &old);
				break;
			}
			case REC_COMMIT:
				ret = replay_commit(s, p, &h, pos, &dm);
				if (ret < 0)
					goto out;
				break;
			case REC_DAMAGE:
				ret = replay_damage(s, key, &h, &dm);
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
		seq = h.seq + 1;
		passed++;
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
	s->ck.replayed = passed >= nckpt ? passed - nckpt : 0;
	/* exactly one head: the segment the log ends in */
	for (uint32_t i = 0; i < s->nsegs; i++)
		if (s->segs[i].state == SEG_HEAD && i != seg_of(s, s->head))
			s->segs[i].state = SEG_USED;
	s->segs[seg_of(s, s->head)].state = SEG_HEAD;
out:
	free(fixed);
	free(w.buf);
	free(dm.found);
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
	while (sidx_next(s->ix, &it, &k, &kl, &loc)) {
		store_seg_live_add(s, loc, +1);
		/* a record the index points at is never in a free segment (a
		 * move's source kept when its copy was damaged may be in one
		 * the checkpoint lists as free) */
		if (!loc_is_damaged(loc) && s->segs[seg_of(s, loc_off(loc))].state == SEG_FREE)
			s->segs[seg_of(s, loc_off(loc))].state = SEG_USED;
	}
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

/*
 * After replay: make what recovery kept durable, and record the frontier,
 * the counters and the jump (below), before anything new is written.
 */
static int settle_frontier(struct node_store *s, char *err, size_t errlen)
{
	int ret = node_disk_sync_io(s->disk, DISK_FLUSH, NULL, 0, 0);

	s->fr.want = s->fr.durable;
	if (ret == 0)
		ret = store_frontier_write_sync(s);
	if (ret < 0)
		snprintf(err, errlen, "cannot write the flush frontier of '%s': %s", s->disk->name,
			 strerror(-ret));
	return ret;
}

/*
 * The new life's sequence numbers (FORMAT.md §4): the crashed life may have
 * left records after the last one kept, with the sequence numbers the log
 * would now reuse. So the next record jumps past all of them: to SEQ_JUMP
 * beyond the last one kept, the frontier and every jump listed (a life
 * places at most SEQ_AHEAD_MAX records beyond its durable frontier), and
 * the jump is listed in the frontier written next, so that resync never
 * takes what is in between for the log.
 */
static void begin_life(struct node_store *s)
{
	uint64_t from = s->seq + 1, to = from;

	s->fr.durable = s->seq > s->fr.loaded ? s->seq : s->fr.loaded;
	if (s->fr.durable + 1 > to)
		to = s->fr.durable + 1;
	for (unsigned i = 0; i < s->fr.njumps; i++)
		if (s->fr.jumps[i].to > to)
			to = s->fr.jumps[i].to;
	to += SEQ_JUMP;
	store_frontier_jump_add(s, from, to);
	s->seq = to - 1;
	s->seq_done = s->seq;
	s->fr.jump_pending = true;
	s->fr.jump_base = to - 1;
}

/* Upgrade a version 1 or 2 drive to the version this build writes (its
 * log is read as it is; FORMAT.md §2): copy 0, flushed, then copy 1. */
static int upgrade_superblock(struct node_store *s, char *err, size_t errlen)
{
	uint8_t *b = s->ck.ptrbuf;
	int ret = 0;

	if (s->sb_version >= SB_VERSION)
		return 0;
	for (unsigned i = 0; i < 2 && ret == 0; i++) {
		ret = node_disk_sync_io(s->disk, DISK_READ, b, DISK_BLOCK_BYTES, SB_COPY_OFF(0));
		if (ret == 0 && store_sb_check(b) != SBV_OK)
			ret = node_disk_sync_io(s->disk, DISK_READ, b, DISK_BLOCK_BYTES, SB_COPY_OFF(1));
		if (ret == 0 && store_sb_check(b) != SBV_OK)
			ret = -EIO;
		if (ret < 0)
			break;
		le_put32(b + 8, SB_VERSION);
		le_put32(b + 124, ovl_crc32c(0, b, 124));
		ret = node_disk_sync_io(s->disk, DISK_WRITE, b, DISK_BLOCK_BYTES, SB_COPY_OFF(i));
		if (ret == 0)
			ret = node_disk_sync_io(s->disk, DISK_FLUSH, NULL, 0, 0);
	}
	if (ret < 0) {
		snprintf(err, errlen, "cannot upgrade the superblock of '%s' to format version %u: %s",
			 s->disk->name, SB_VERSION, strerror(-ret));
		return ret;
	}
	s->st.upgraded_from = s->sb_version;
	s->sb_version = SB_VERSION;
	return 0;
}

/* Of slot j and its mirror (j + 2): the valid one with the higher
 * generation (the slot when equal, or when neither is valid). */
static unsigned newer_of(const struct ptr_slot *c, unsigned j)
{
	if (!c[j + 2].valid)
		return j;
	if (!c[j].valid)
		return j + 2;
	return c[j].gen >= c[j + 2].gen ? j : j + 2;
}

/* The four pointer blocks: slot 0, slot 1, mirror of 0, mirror of 1. */
static uint64_t ptr_block_off(unsigned i)
{
	return i < 2 ? PTR_SLOT_OFF(i) : PTR_MIRROR_OFF(i - 2);
}

/*
 * Make each slot and its mirror hold the same pointer, the newer of the
 * two when both are valid (a checkpoint that ended between the writes of
 * the two, or a mirror a version 2 drive never had): a damaged or stale
 * copy never stays behind to be trusted later. Returns 0 or -errno.
 */
static int repair_pointers(struct node_store *s, const struct ptr_slot *c, uint8_t raw[4][64],
			   const bool *zero, unsigned chosen)
{
	uint8_t *b = s->ck.ptrbuf;
	bool wrote = false;
	int ret = 0;

	for (unsigned j = 0; j < 2 && ret == 0; j++) {
		/* the one recovery started from, else the newer */
		unsigned good = chosen % 2 == j ? chosen : newer_of(c, j);
		unsigned bad = good == j ? j + 2 : j;

		if (!c[good].valid || (c[bad].valid && memcmp(raw[bad], raw[good], 64) == 0))
			continue;
		memset(b, 0, DISK_BLOCK_BYTES);
		memcpy(b, raw[good], 64);
		ret = node_disk_sync_io(s->disk, DISK_WRITE, b, DISK_BLOCK_BYTES, ptr_block_off(bad));
		wrote = true;
		/* a mirror a version 2 drive never wrote is not damage */
		if (!(bad >= 2 && zero[bad]))
			s->st.checkpoint_repaired = true;
	}
	if (ret == 0 && wrote)
		ret = node_disk_sync_io(s->disk, DISK_FLUSH, NULL, 0, 0);
	return ret;
}

/* The END record a pointer names verifies (a cheap look at the fallback
 * checkpoint: its parts are read only when it is used). */
static bool end_ok(struct node_store *s, const struct ptr_slot *ps)
{
	uint8_t *buf = NULL;
	const uint8_t *rec;
	struct rec_hdr h;
	bool ok;

	if (ps->end_off == 0)
		return true;
	ok = read_record(s, ps->end_off, ps->end_size, &buf, &rec, &h) == 0 &&
	     h.type == REC_CKPT_END && h.hcrc == ps->end_hcrc;
	free(buf);
	return ok;
}

static const char *ckpt_why(int err)
{
	switch (err) {
	case -EIO: return "a record of it fails its checksums";
	case -EBADMSG: return "a record of it is not what the pointer names";
	default: return strerror(-err);
	}
}

int store_recover(struct node_store *s, char *err, size_t errlen)
{
	struct ptr_slot c[4];
	uint8_t raw[4][64];
	bool zero[4], tried[4] = { false };
	int why[4] = { 0 }, ret = -EUCLEAN, chosen = -1;
	uint8_t *b = s->ck.ptrbuf;

	ret = load_frontier(s, err, errlen);
	if (ret < 0)
		return ret;
	for (unsigned i = 0; i < 4; i++) {
		ret = node_disk_sync_io(s->disk, DISK_READ, b, DISK_BLOCK_BYTES, ptr_block_off(i));
		if (ret < 0) {
			snprintf(err, errlen, "cannot read checkpoint pointer of '%s': %s",
				 s->disk->name, strerror(-ret));
			return ret;
		}
		ptr_parse(b, &c[i]);
		memcpy(raw[i], b, 64);
		zero[i] = all_zero(b, DISK_BLOCK_BYTES);
		if (c[i].p0_off < s->data_start ||
		    c[i].p0_off >= s->data_start + (uint64_t)s->nsegs * s->seg_bytes)
			c[i].valid = false;
	}
	ret = -EUCLEAN;
	/*
	 * The newest valid pointer first, then older ones: any pointer still
	 * on the drive names a checkpoint whose replay the reclaim rule kept
	 * (FORMAT.md §6, §7). A copy equal to one tried is not tried again.
	 */
	for (;;) {
		int i = -1;

		for (unsigned k = 0; k < 4; k++) {
			bool dup = false;

			for (unsigned t = 0; t < 4; t++)
				dup = dup || (tried[t] && memcmp(raw[t], raw[k], 64) == 0);
			if (c[k].valid && !tried[k] && !dup && (i < 0 || c[k].gen > c[i].gen))
				i = (int)k;
		}
		if (i < 0)
			break;
		tried[i] = true;
		ret = load_checkpoint(s, &c[i]);
		why[i] = ret;
		if (ret == -ENOMEM)
			break;
		if (ret < 0)
			continue;
		ret = replay(s, &c[i]);
		if (ret < 0)
			break;
		chosen = i;
		break;
	}
	if (ret == -ENOMEM) {
		snprintf(err, errlen, "out of memory while loading the index of '%s'", s->disk->name);
		return ret;
	}
	if (chosen < 0 && ret < 0 && ret != -EIO && ret != -EBADMSG && ret != -EUCLEAN) {
		snprintf(err, errlen, "cannot recover '%s': %s", s->disk->name, strerror(-ret));
		return ret;
	}
	if (chosen < 0) {
		char part[2][112];

		for (unsigned j = 0; j < 2; j++) {
			unsigned k = newer_of(c, j);

			/* a copy not tried was equal to one that was */
			for (unsigned t = 0; t < 4 && !why[k]; t++)
				if (tried[t] && memcmp(raw[t], raw[k], 64) == 0)
					why[k] = why[t];
			if (!c[k].valid)
				snprintf(part[j], sizeof(part[j]), "slot %u: pointer damaged", j);
			else
				snprintf(part[j], sizeof(part[j]), "slot %u: checkpoint %" PRIu64 ", %s", j,
					 c[k].gen, ckpt_why(why[k] ? why[k] : -EBADMSG));
		}
		snprintf(err, errlen,
			 "no usable checkpoint on '%s' (%s; %s): refusing to guess, nothing was written. "
			 "Keep the drive as it is (copy it first), restore its objects from other copies, "
			 "or format it (--format) to use it again",
			 s->disk->name, part[0], part[1]);
		return -EUCLEAN;
	}
	s->ck.gen = c[chosen].gen;
	s->ck.new_p0_seq = c[chosen].p0_seq;
	/* the other slot's checkpoint, when older, is the fallback */
	{
		const struct ptr_slot *f = &c[newer_of(c, chosen % 2 ? 0 : 1)];

		s->ck.old_p0_seq = f->valid && f->gen < c[chosen].gen ? f->p0_seq : c[chosen].p0_seq;
		/* a newer one that failed, or a slot with no pointer left:
		 * open takes a checkpoint to have two again */
		for (unsigned k = 0; k < 4; k++)
			s->ck.repair = s->ck.repair || (c[k].valid && c[k].gen > c[chosen].gen);
		s->st.checkpoint_fallback = s->ck.repair;
		if (!f->valid || (f->gen < c[chosen].gen && !end_ok(s, f)))
			s->ck.repair = true;
	}
	rebuild_accounting(s);
	ret = upgrade_superblock(s, err, errlen);
	if (ret < 0)
		return ret;
	ret = repair_pointers(s, c, raw, zero, (unsigned)chosen);
	if (ret < 0) {
		snprintf(err, errlen, "cannot repair a checkpoint pointer of '%s': %s", s->disk->name,
			 strerror(-ret));
		return ret;
	}
	begin_life(s);
	return settle_frontier(s, err, errlen);
}
