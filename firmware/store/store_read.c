/*
 * Reads: the index gives a record's place and size; the record (or, for a
 * range of a large value, its header and the needed chunks) is read and
 * every checksum verified before a byte is returned. The read buffer goes
 * to the get's callback (struct node_store_rbuf) and comes back to a cache
 * of buffers for reuse. Scrub walks the index reading every record.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "overlay.h"
#include "store_int.h"

void *store_rbuf_get(struct node_store *s, size_t need, size_t *cap)
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
	return store_alloc_blocks(*cap);
}

void store_rbuf_put(struct node_store *s, void *mem, size_t cap)
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

/* ---- reads ---- */

static void read_done(struct node_disk_io *io);
static void read_finish(struct node_store *s, struct op *op, int res, const void *data,
			size_t len, const struct node_store_objstat *st);

/* ---- damage found by reads ---- */

/* A DAMAGE record of (key, loc) already on its way into the log. */
static struct op *damage_pending(struct node_store *s, const uint8_t *key, size_t klen, uint64_t loc)
{
	const struct opq *qs[2] = { &s->appendq, &s->commitq };

	for (int i = 0; i < 2; i++)
		for (struct op *op = qs[i]->head; op; op = op->next)
			if (op->kind == OP_DAMAGE && op->u.damage.loc == loc && op->klen == klen &&
			    memcmp(op->key, key, klen) == 0)
				return op;
	return NULL;
}

void store_damage_apply(struct node_store *s, struct op *op)
{
	uint64_t cur = 0, old = 0;

	if (op->rec.started && s->fr.damage_pending)
		s->fr.damage_pending--;
	s->st.checksum_errors++;
	if (sidx_get(s->ix, op->key, op->klen, &cur) != 1 || cur != op->u.damage.loc)
		return; /* replaced meanwhile: the damaged version is gone anyway */
	/* its version stays: the damaged record was that version */
	if (sidx_set_loc(s->ix, op->key, op->klen, loc_damaged(loc_off(cur)), &old) < 0) {
		store_go_read_only(s, "out of memory for the index");
		return;
	}
	store_seg_live_add(s, cur, -1);
	store_seg_live_add(s, loc_damaged(loc_off(cur)), +1);
}

int store_damage_found(struct node_store *s, const uint8_t *key, size_t klen, uint64_t loc,
		       struct op *waiter, node_store_cb cb, void *arg)
{
	struct op *d = NULL;
	uint64_t cur = 0;

	if (sidx_get(s->ix, key, klen, &cur) != 1 || cur != loc)
		return 1; /* no longer the key's newest version (or already marked) */
	d = damage_pending(s, key, klen, loc);
	if (d && cb)
		return 1; /* the caller needs its own callback: nothing more to do */
	if (!d) {
		d = store_op_new(s, OP_DAMAGE, key, klen);
		if (!d)
			return -ENOMEM;
		d->rec.val = (const uint8_t *)"";
		d->u.damage.loc = loc;
		d->cb = cb;
		d->arg = arg;
		if (s->read_only) {
			/* nothing can be written: marked in memory only */
			store_damage_apply(s, d);
			store_op_free(d);
			return 1;
		}
		store_q_push(&s->appendq, d);
	}
	if (waiter) {
		waiter->next = d->u.damage.waiters;
		d->u.damage.waiters = waiter;
	}
	return 0;
}

void store_read_damage_done(struct node_store *s, struct op **waiters)
{
	struct op *w = *waiters;

	*waiters = NULL;
	while (w) {
		struct op *n = w->next;

		w->next = NULL;
		store_set_err(s, "checksum mismatch: the record of '%.*s' at offset %" PRIu64 " on '%s' is damaged (recorded)",
			      (int)w->klen, (const char *)w->key, loc_off(w->u.rd.loc), s->disk->name);
		read_finish(s, w, -EIO, NULL, 0, NULL);
		w = n;
	}
}

/*
 * A read whose bytes came from the drive itself and failed their checks:
 * the record is damaged. The first read to find it writes a DAMAGE record
 * (FORMAT.md §4) that marks the key damaged; this read and any other that
 * finds the same record meanwhile answer -EIO once it is durable, so the
 * damage a read reported survives a crash. Its read buffer goes back now.
 */
static void read_damaged(struct node_store *s, struct op *op)
{
	s->st.damaged_reads++;
	store_rbuf_put(s, op->u.rd.buf, op->u.rd.buflen);
	op->u.rd.buf = NULL;
	op->u.rd.buflen = 0;
	if (store_damage_found(s, op->key, op->klen, op->u.rd.loc, op, NULL, NULL) != 0)
		read_finish(s, op, -EIO, NULL, 0, NULL);
}

static int read_submit(struct node_store *s, struct op *op, uint64_t from, uint64_t to)
{
	uint64_t a = align_down(from, DISK_BLOCK_BYTES), b = align_up(to, DISK_BLOCK_BYTES);
	int ret;

	if (b - a > op->u.rd.buflen) {
		store_rbuf_put(s, op->u.rd.buf, op->u.rd.buflen);
		op->u.rd.buflen = 0;
		op->u.rd.buf = store_rbuf_get(s, b - a, &op->u.rd.buflen);
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

	if (op->kind == OP_STAT) {
		if (op->cb)
			op->cb(op->arg, res, st);
		store_op_free(op);
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
	store_op_free(op);
}

void node_store_rbuf_release(struct node_store_rbuf **rbp)
{
	struct node_store_rbuf *rb = rbp ? *rbp : NULL;

	if (!rb)
		return;
	store_rbuf_put(rb->s, rb->mem, rb->cap);
	free(rb);
	*rbp = NULL;
}

/* Check the header, key and chunk table at rec (avail bytes). */
static int read_check_head(struct node_store *s, struct op *op, const uint8_t *rec, size_t avail,
			   struct rec_hdr *h)
{
	size_t tlen;

	if (rec_hdr_unpack(rec, h) < 0 || (h->type != REC_PUT && h->type != REC_RELOC) ||
	    (h->flags & REC_FLAG_TOMB))
		return -EIO;
	tlen = rec_table_bytes(h->vlen);
	if (rec_key_off(h) + h->klen + tlen > avail || rec_hsize(h) != loc_size(op->u.rd.loc))
		return -EIO;
	if (rec_hcrc(rec, rec + rec_key_off(h), h->klen, rec + rec_key_off(h) + h->klen, tlen) != h->hcrc)
		return -EIO;
	if (h->klen != op->klen || memcmp(rec + rec_key_off(h), op->key, op->klen) != 0)
		return -EIO;
	rec_ext_get(rec, h);
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
		store_set_err(s, "read of %zu bytes at %" PRIu64 " on '%s' failed: %s", io->len, io->off,
			s->disk->name, io->res < 0 ? strerror(-io->res) : "short read");
		s->st.read_errors++;
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
			store_set_err(s, "checksum mismatch in a chunk of '%.*s' on '%s'", (int)op->klen,
				(const char *)op->key, s->disk->name);
			read_damaged(s, op);
			return;
		}
		read_finish(s, op, 0, op->u.rd.buf + (op->u.rd.val_off + op->u.rd.off - op->u.rd.base),
			    op->u.rd.len, &op->u.rd.st);
		return;
	}
	ret = read_check_head(s, op, rec, avail, &h);
	if (ret < 0) {
		if (read_again_direct(s, op))
			return;
		store_set_err(s, "record of '%.*s' at %" PRIu64 " on '%s' failed its header checksum",
			(int)op->klen, (const char *)op->key, rec_off, s->disk->name);
		read_damaged(s, op);
		return;
	}
	table = rec + rec_key_off(&h) + h.klen;
	val = table + rec_table_bytes(h.vlen);
	st = (struct node_store_objstat){ .size = h.vlen, .crc = h.vcrc, .seq = h.seq,
					  .ver = { h.hlc, h.node } };
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
			store_set_err(s, "checksum mismatch in '%.*s' on '%s'", (int)op->klen,
				(const char *)op->key, s->disk->name);
			read_damaged(s, op);
			return;
		}
		s->st.gets++;
		read_finish(s, op, 0, val + op->u.rd.off, op->u.rd.len, &st);
		return;
	}
	/* stage 1: header and table of a large value; fetch the chunks */
	op->u.rd.vlen = h.vlen;
	op->u.rd.st = st;
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
	op->u.rd.val_off = rec_off + rec_key_off(&h) + h.klen + op->u.rd.tlen;
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
	struct sidx_val v;
	int ret = store_check_key(s, key, klen);

	if (ret < 0)
		return ret;
	if (!sidx_find(s->ix, key, klen, &v) || v.tomb)
		return -ENOENT; /* a tombstone reads as absent */
	loc = v.loc;
	if (loc_is_damaged(loc)) {
		store_set_err(s, "checksum mismatch: the newest version of this key is damaged on '%s' (its record at offset %" PRIu64 " failed its checks)",
			      s->disk->name, loc_off(loc));
		s->st.damaged_reads++;
		return -EIO;
	}
	op = store_op_new(s, kind, key, klen);
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

		to = from + REC_HDR_MAX_BYTES + klen + tmax;
		if (to > from + rsize)
			to = from + rsize;
		op->u.rd.stage = READ_HEAD;
	}
	ret = read_submit(s, op, from, to);
	if (ret < 0)
		store_op_free(op);
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

static void waiter_get_cb(void *arg, int res, struct node_store_rbuf **rb,
			  const struct node_store_objstat *st)
{
	struct store_waiter *w = arg;
	const void *data = *rb ? (*rb)->data : NULL;
	size_t len = *rb ? (*rb)->len : 0;

	store_waiter_cb(arg, res, st);
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

static int get_blocking(struct node_store *s, const void *key, size_t klen, void **val,
		   size_t *vlen)
{
	struct store_waiter w = { .want_alloc = true };
	int ret = get_start(s, OP_GET, key, klen, 0, UINT64_MAX, NULL, waiter_get_cb, &w);

	*val = NULL;
	*vlen = 0;
	if (ret < 0)
		return ret;
	ret = store_wait_for(s, &w);
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
	struct store_waiter w = { .buf = buf, .cap = len };
	int ret = get_start(s, OP_GET, key, klen, off, len, NULL, waiter_get_cb, &w);

	*got = 0;
	if (ret < 0)
		return ret;
	ret = store_wait_for(s, &w);
	*got = w.got;
	return ret;
}

static int stat_blocking(struct node_store *s, const void *key, size_t klen,
		    struct node_store_objstat *st)
{
	struct store_waiter w = { 0 };
	int ret = get_start(s, OP_STAT, key, klen, 0, 0, store_waiter_cb, NULL, &w);

	if (ret < 0)
		return ret;
	ret = store_wait_for(s, &w);
	if (ret == 0)
		*st = w.st;
	return ret;
}

int node_store_locate(struct node_store *s, const void *key, size_t klen, uint64_t *off,
		      uint64_t *size)
{
	uint64_t loc;

	if (sidx_get(s->ix, key, klen, &loc) == 0)
		return -ENOENT;
	*off = loc_off(loc);
	*size = loc_size(loc);
	return loc_is_damaged(loc) ? -EIO : 0;
}

/* ---- scrub ---- */

static int scrub_blocking(struct node_store *s, uint64_t budget_bytes,
			  struct node_store_scrub_report *r, node_store_scrub_damaged_fn damaged,
			  void *arg)
{
	struct sidx_iter it;
	const uint8_t *k;
	size_t kl;
	struct sidx_val v;
	int ret = 0;

	memset(r, 0, sizeof(*r));
	if (!s->reads.scrub_key) {
		s->reads.scrub_key = malloc(NODE_STORE_KEY_MAX);
		if (!s->reads.scrub_key)
			return -ENOMEM;
	}
	while (r->bytes < budget_bytes) {
		struct store_waiter w = { 0 };
		uint8_t key[NODE_STORE_KEY_MAX];

		sidx_seek(s->ix, &it, s->reads.scrub_started ? s->reads.scrub_key : NULL, s->reads.scrub_klen, true);
		if (!sidx_next_val(s->ix, &it, &k, &kl, &v)) {
			s->reads.scrub_started = false;
			r->wrapped = true;
			break;
		}
		memcpy(key, k, kl);
		memcpy(s->reads.scrub_key, k, kl);
		s->reads.scrub_klen = kl;
		s->reads.scrub_started = true;
		if (v.tomb)
			continue; /* no value to verify; compaction rewrites it from the index */
		w.cap = 0;
		ret = get_start(s, OP_GET, key, kl, 0, UINT64_MAX, NULL, waiter_get_cb, &w);
		if (ret == 0)
			ret = store_wait_for(s, &w);
		r->records++;
		r->bytes += loc_size(v.loc);
		if (ret == -EIO) {
			r->errors++;
			if (damaged)
				damaged(arg, key, kl);
		} else if (ret < 0 && ret != -ENOENT)
			return ret;
	}
	return 0;
}

int node_store_get(struct node_store *s, const void *key, size_t klen, void **val,
		   size_t *vlen)
{
	int ret;

	*val = NULL;
	*vlen = 0;
	ret = store_blocking_begin(s);
	if (ret < 0)
		return ret;
	ret = get_blocking(s, key, klen, val, vlen);
	store_blocking_end(s);
	return ret;
}

int node_store_get_range(struct node_store *s, const void *key, size_t klen, uint64_t off,
			 uint64_t len, void *buf, size_t *got)
{
	int ret;

	*got = 0;
	ret = store_blocking_begin(s);
	if (ret < 0)
		return ret;
	ret = get_range_blocking(s, key, klen, off, len, buf, got);
	store_blocking_end(s);
	return ret;
}

int node_store_stat(struct node_store *s, const void *key, size_t klen,
		    struct node_store_objstat *st)
{
	int ret;

	ret = store_blocking_begin(s);
	if (ret < 0)
		return ret;
	ret = stat_blocking(s, key, klen, st);
	store_blocking_end(s);
	return ret;
}

int node_store_stat_any(struct node_store *s, const void *key, size_t klen,
			struct node_store_objstat *st)
{
	struct store_waiter w = { 0 };
	int ret = store_blocking_begin(s);

	if (ret < 0)
		return ret;
	ret = node_store_stat_any_async(s, key, klen, store_waiter_cb, &w);
	if (ret == 0)
		ret = store_wait_for(s, &w);
	if (ret == 0)
		*st = w.st;
	store_blocking_end(s);
	return ret;
}

int node_store_scrub(struct node_store *s, uint64_t budget_bytes,
		     struct node_store_scrub_report *r)
{
	return node_store_scrub_keys(s, budget_bytes, r, NULL, NULL);
}

int node_store_scrub_keys(struct node_store *s, uint64_t budget_bytes,
			  struct node_store_scrub_report *r, node_store_scrub_damaged_fn damaged,
			  void *arg)
{
	int ret;

	ret = store_blocking_begin(s);
	if (ret < 0)
		return ret;
	ret = scrub_blocking(s, budget_bytes, r, damaged, arg);
	store_blocking_end(s);
	return ret;
}
