#include "index.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define ENTRY_MAX (2 + 2 + SIDX_KEY_MAX + 6 + 4 + 8 + 9) /* longest encoded entry */
#define F_VER 1u                                   /* entry flags (index.h) */
#define F_TOMB 2u
#define NHASH_SLOTS (2 * SIDX_NODES_MAX)            /* the node table's hash */
#define BLK_MIN (SIDX_BLOCK_BYTES / 4)             /* merge a block smaller than this */
#define LO_MASK ((UINT64_C(1) << SIDX_LOC_SPLIT) - 1)
#define MALLOC_HDR 8u                              /* glibc's per-chunk header */

enum { IT_START, IT_FROM, IT_AFTER };

struct blk {
	uint8_t *mem;           /* entries; the first holds its key whole */
	uint32_t len, cap;      /* bytes used, bytes allocated */
};

struct sidx {
	struct blk *dir;        /* in key order */
	uint32_t ndir, capdir;
	uint64_t count;         /* live keys, tombstones included */
	uint64_t tombs;         /* of those, tombstones */
	uint64_t versioned;     /* of those, entries with a version */
	uint64_t *nodes;        /* distinct node values of versions, in first-seen order */
	uint32_t nnodes, capnodes;
	uint16_t *nhash;        /* NHASH_SLOTS: 1 + index into nodes, 0 empty */
	uint64_t key_bytes;     /* sum of the live keys' lengths */
	uint64_t gen;           /* changes made, for iterators */
	size_t mem_bytes;       /* block bytes allocated, headers included */
	/* the last key of the last block, while tail_ok: appends need it */
	bool tail_ok;
	uint16_t tail_klen;
	uint8_t tail_key[SIDX_KEY_MAX];
};

/* One decoded entry. */
struct ent {
	uint32_t shared, slen, size; /* shared prefix, suffix bytes, encoded bytes */
	const uint8_t *suffix;
	struct sidx_val v;
};

/* Where a key falls in a block (see scan()). */
struct hit {
	uint32_t off, size;     /* the entry found and its encoded size; off = len if none */
	int cmp;                /* its key against the one searched for */
	struct sidx_val v;
	uint8_t *prev, *cur;    /* the key before it (prevlen 0: none) and its key */
	size_t prevlen, curlen;
};

static size_t put_var(uint8_t *p, uint64_t v)
{
	size_t n = 0;

	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

/* Blocks are written only by this file, so decoding trusts them. */
static const uint8_t *get_var(const uint8_t *p, uint64_t *v)
{
	uint64_t r = 0;
	unsigned sh = 0;

	while (*p & 0x80) {
		r |= (uint64_t)(*p++ & 0x7f) << sh;
		sh += 7;
	}
	*v = r | (uint64_t)*p++ << sh;
	return p;
}

static bool has_ver(const struct sidx_val *v)
{
	return v->hlc || v->node || v->tomb;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void dec(const struct sidx *ix, const uint8_t *p, struct ent *e)
{
	const uint8_t *q = p;
	uint64_t a, hi, lo, f;

	q = get_var(q, &a);
	e->shared = (uint32_t)a;
	q = get_var(q, &a);
	e->slen = (uint32_t)(a >> 2);
	f = a & 3;
	e->suffix = q;
	q += e->slen;
	q = get_var(q, &hi);
	q = get_var(q, &lo);
	e->v.loc = hi << SIDX_LOC_SPLIT | lo;
	e->v.hlc = e->v.node = 0;
	e->v.tomb = f & F_TOMB;
	if (f & F_VER) {
		e->v.hlc = get64(q);
		q = get_var(q + 8, &a);
		if (a) {
			e->v.node = ix->nodes[a - 1];
		} else {
			e->v.node = get64(q);
			q += 8;
		}
	}
	e->size = (uint32_t)(q - p);
}

static uint32_t nhash_slot(uint64_t node)
{
	return (uint32_t)((node * UINT64_C(0x9E3779B97F4A7C15)) >> 40) % NHASH_SLOTS;
}

/* The node table's reference for node (1 + its index), adding it when
 * there is room; 0 when it is not in the table (stored whole). */
static uint64_t node_ref(struct sidx *ix, uint64_t node)
{
	uint32_t i;

	if (!ix->nhash) {
		ix->nhash = calloc(NHASH_SLOTS, sizeof(*ix->nhash));
		if (!ix->nhash)
			return 0;
	}
	for (i = nhash_slot(node); ix->nhash[i]; i = (i + 1) % NHASH_SLOTS)
		if (ix->nodes[ix->nhash[i] - 1] == node)
			return ix->nhash[i];
	if (ix->nnodes == SIDX_NODES_MAX)
		return 0;
	if (ix->nnodes == ix->capnodes) {
		uint32_t cap = ix->capnodes ? ix->capnodes * 2 : 16;
		uint64_t *n = realloc(ix->nodes, cap * sizeof(*n));

		if (!n)
			return 0;
		ix->nodes = n;
		ix->capnodes = cap;
	}
	ix->nodes[ix->nnodes++] = node;
	ix->nhash[i] = (uint16_t)ix->nnodes;
	return ix->nnodes;
}

/* Encode key (after prev, which may be NULL) into p; returns its size. */
static size_t enc(struct sidx *ix, uint8_t *p, const uint8_t *prev, size_t plen,
		  const uint8_t *key, size_t klen, const struct sidx_val *v)
{
	size_t s = 0, n, m = plen < klen ? plen : klen;
	bool ver = has_ver(v);
	uint64_t r;

	while (prev && s < m && prev[s] == key[s])
		s++;
	n = put_var(p, s);
	n += put_var(p + n, (uint64_t)(klen - s) << 2 | (ver ? F_VER : 0) | (v->tomb ? F_TOMB : 0));
	memcpy(p + n, key + s, klen - s);
	n += klen - s;
	n += put_var(p + n, v->loc >> SIDX_LOC_SPLIT);
	n += put_var(p + n, v->loc & LO_MASK);
	if (ver) {
		put64(p + n, v->hlc);
		n += 8;
		r = node_ref(ix, v->node);
		n += put_var(p + n, r);
		if (!r) {
			put64(p + n, v->node);
			n += 8;
		}
	}
	return n;
}

static int keycmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c)
		return c;
	return alen < blen ? -1 : alen > blen;
}

static int cmp_first(const struct blk *b, const uint8_t *key, size_t klen)
{
	uint64_t slen;
	const uint8_t *p = get_var(b->mem + 1, &slen); /* mem[0]: shared, always 0 */

	return keycmp(p, slen >> 2, key, klen);
}

/* The block a key belongs in: the last whose first key is <= key, or 0. */
static uint32_t find_blk(const struct sidx *ix, const uint8_t *key, size_t klen)
{
	uint32_t lo = 0, hi = ix->ndir;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (cmp_first(&ix->dir[mid], key, klen) <= 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo ? lo - 1 : 0;
}

/*
 * Find the first entry of b whose key is >= key (after: > key). true and h
 * filled if there is one; false with h->off = b->len (and h->prev the
 * block's last key) if not. With kb, the keys of the entry and of the one
 * before it are rebuilt in kb[1] and kb[0] (h->cur, h->prev); without, h
 * holds only off, size, cmp and loc.
 *
 * Keys are not compared whole: m is the length of the prefix the previous
 * key shares with `key`, and since `shared` is always the longest common
 * prefix, an entry sharing more than m with the previous key is still below
 * `key`, one sharing less is above it, and only one sharing exactly m needs
 * its suffix compared.
 */
static bool scan(const struct sidx *ix, const struct blk *b, const uint8_t *key, size_t klen, bool after,
		 uint8_t kb[2][SIDX_KEY_MAX], struct hit *h)
{
	uint8_t *run = kb ? kb[1] : NULL;
	size_t m = 0, rlen = 0;
	uint32_t off = 0;
	struct ent e;

	while (off < b->len) {
		size_t newm = m;
		int c;

		dec(ix, b->mem + off, &e);
		if (e.shared > m) {
			c = -1;
		} else if (e.shared < m) {
			c = 1;
		} else {
			size_t n = klen - m < e.slen ? klen - m : e.slen, j = 0;

			while (j < n && e.suffix[j] == key[m + j])
				j++;
			if (j < n)
				c = e.suffix[j] < key[m + j] ? -1 : 1;
			else
				c = e.slen < klen - m ? -1 : e.slen > klen - m;
			newm = m + j;
		}
		if (c > 0 || (c == 0 && !after)) {
			*h = (struct hit){ .off = off, .size = e.size, .cmp = c, .v = e.v };
			if (run) {
				memcpy(kb[0], run, rlen);
				memcpy(run + e.shared, e.suffix, e.slen);
				h->prev = kb[0];
				h->prevlen = off ? rlen : 0;
				h->cur = run;
				h->curlen = e.shared + e.slen;
			}
			return true;
		}
		if (run) {
			memcpy(run + e.shared, e.suffix, e.slen);
			rlen = e.shared + e.slen;
		}
		m = newm;
		off += e.size;
	}
	*h = (struct hit){ .off = b->len, .cmp = 1, .prev = run, .prevlen = rlen,
			   .cur = kb ? kb[0] : NULL };
	return false;
}

/* Capacity for len bytes: whole 32-byte malloc chunks, the header included. */
static uint32_t cap_for(uint32_t len)
{
	return ((len + MALLOC_HDR + 31) & ~31u) - MALLOC_HDR;
}

/* Replace [off, off+oldn) of block b with the n bytes at p. 0 or -ENOMEM. */
static int splice(struct sidx *ix, struct blk *b, uint32_t off, uint32_t oldn, const uint8_t *p,
		  uint32_t n)
{
	uint32_t len = b->len - oldn + n, cap = cap_for(len);

	if (len > b->cap) {
		uint8_t *m = realloc(b->mem, cap);

		if (!m)
			return -ENOMEM;
		ix->mem_bytes += cap - b->cap;
		b->mem = m;
		b->cap = cap;
	}
	memmove(b->mem + off + n, b->mem + off + oldn, b->len - off - oldn);
	memcpy(b->mem + off, p, n);
	b->len = len;
	if (b->cap >= cap + 64) { /* give back what a shrunken block no longer needs */
		uint8_t *m = realloc(b->mem, cap);

		if (m) {
			ix->mem_bytes -= b->cap - cap;
			b->mem = m;
			b->cap = cap;
		}
	}
	return 0;
}

/* Insert an empty slot in the directory at pos. 0 or -ENOMEM. */
static int dir_insert(struct sidx *ix, uint32_t pos)
{
	if (ix->ndir == ix->capdir) {
		uint32_t cap = ix->capdir < 16 ? 16 : ix->capdir + ix->capdir / 2;
		void *d = realloc(ix->dir, (size_t)cap * sizeof(*ix->dir));

		if (!d)
			return -ENOMEM;
		ix->dir = d;
		ix->capdir = cap;
	}
	memmove(ix->dir + pos + 1, ix->dir + pos, (size_t)(ix->ndir - pos) * sizeof(*ix->dir));
	ix->dir[pos] = (struct blk){ NULL, 0, 0 };
	ix->ndir++;
	return 0;
}

static void dir_remove(struct sidx *ix, uint32_t pos)
{
	ix->mem_bytes -= ix->dir[pos].cap + MALLOC_HDR;
	free(ix->dir[pos].mem);
	memmove(ix->dir + pos, ix->dir + pos + 1, (size_t)(ix->ndir - pos - 1) * sizeof(*ix->dir));
	ix->ndir--;
}

/* A new block at directory position pos holding the n bytes at p. */
static int blk_new(struct sidx *ix, uint32_t pos, const uint8_t *p, uint32_t n)
{
	uint32_t cap = cap_for(n);
	uint8_t *m = malloc(cap);

	if (!m)
		return -ENOMEM;
	if (dir_insert(ix, pos) < 0) {
		free(m);
		return -ENOMEM;
	}
	memcpy(m, p, n);
	ix->dir[pos] = (struct blk){ m, n, cap };
	ix->mem_bytes += cap + MALLOC_HDR;
	return 0;
}

/* Split block i in two near its middle when it has outgrown its size.
 * A failed allocation leaves it whole (larger, still correct). */
static void maybe_split(struct sidx *ix, uint32_t i)
{
	struct blk *b = &ix->dir[i];
	uint8_t key[SIDX_KEY_MAX], first[ENTRY_MAX];
	uint32_t off = 0, n, rest;
	struct ent e;

	if (b->len <= SIDX_BLOCK_BYTES)
		return;
	/* walk to the first entry at or past the middle, keeping its key */
	for (;;) {
		dec(ix, b->mem + off, &e);
		memcpy(key + e.shared, e.suffix, e.slen);
		if (off && off + e.size / 2 >= b->len / 2)
			break;
		off += e.size;
		if (off >= b->len)
			return; /* a single entry: nothing to split */
	}
	n = (uint32_t)enc(ix, first, NULL, 0, key, e.shared + e.slen, &e.v);
	rest = b->len - off - e.size;
	{
		uint32_t cap = cap_for(n + rest);
		uint8_t *m = malloc(cap);

		if (!m)
			return;
		memcpy(m, first, n);
		memcpy(m + n, b->mem + off + e.size, rest);
		if (dir_insert(ix, i + 1) < 0) {
			free(m);
			return;
		}
		ix->dir[i + 1] = (struct blk){ m, n + rest, cap };
		ix->mem_bytes += cap + MALLOC_HDR;
	}
	b = &ix->dir[i];
	b->len = off;
	{
		uint32_t cap = cap_for(off);
		uint8_t *m = realloc(b->mem, cap);

		if (m) {
			ix->mem_bytes -= b->cap - cap;
			b->mem = m;
			b->cap = cap;
		}
	}
}

/* Merge block i+1 into block i when block i has become small and both fit
 * in one. A failed allocation leaves them apart. */
static void maybe_merge(struct sidx *ix, uint32_t i)
{
	struct blk *a = &ix->dir[i], *b;
	uint8_t key[SIDX_KEY_MAX], first[ENTRY_MAX], bkey[SIDX_KEY_MAX];
	size_t klen = 0;
	uint32_t off = 0, n;
	struct ent e, f;

	if (a->len >= BLK_MIN || i + 1 >= ix->ndir)
		return;
	b = &ix->dir[i + 1];
	if (a->len + b->len > SIDX_BLOCK_BYTES)
		return;
	while (off < a->len) {
		dec(ix, a->mem + off, &e);
		memcpy(key + e.shared, e.suffix, e.slen);
		klen = e.shared + e.slen;
		off += e.size;
	}
	dec(ix, b->mem, &f);
	memcpy(bkey, f.suffix, f.slen);
	n = (uint32_t)enc(ix, first, key, klen, bkey, f.slen, &f.v);
	/* room for both parts first, so nothing is half done on failure */
	if (a->len + n + b->len - f.size > a->cap) {
		uint32_t cap = cap_for(a->len + n + b->len - f.size);
		uint8_t *m = realloc(a->mem, cap);

		if (!m)
			return;
		ix->mem_bytes += cap - a->cap;
		a->mem = m;
		a->cap = cap;
	}
	memcpy(a->mem + a->len, first, n);
	memcpy(a->mem + a->len + n, b->mem + f.size, b->len - f.size);
	a->len += n + b->len - f.size;
	dir_remove(ix, i + 1);
}

struct sidx *sidx_new(void)
{
	return calloc(1, sizeof(struct sidx));
}

void sidx_destroy(struct sidx **ixp)
{
	struct sidx *ix = ixp ? *ixp : NULL;

	if (!ix)
		return;
	for (uint32_t i = 0; i < ix->ndir; i++)
		free(ix->dir[i].mem);
	free(ix->dir);
	free(ix->nodes);
	free(ix->nhash);
	free(ix);
	*ixp = NULL;
}

int sidx_find(const struct sidx *ix, const void *key, size_t klen, struct sidx_val *v)
{
	struct hit h;

	if (!ix->ndir || !klen || klen > SIDX_KEY_MAX ||
	    !scan(ix, &ix->dir[find_blk(ix, key, klen)], key, klen, false, NULL, &h) || h.cmp != 0)
		return 0;
	*v = h.v;
	return 1;
}

int sidx_get(const struct sidx *ix, const void *key, size_t klen, uint64_t *loc)
{
	struct sidx_val v;

	if (!sidx_find(ix, key, klen, &v))
		return 0;
	*loc = v.loc;
	return 1;
}

/* Insert or replace; with keep_loc_only, replace only the location of a
 * present key (-ENOENT when absent). */
static int put_val(struct sidx *ix, const void *key, size_t klen, const struct sidx_val *nv,
		   struct sidx_val *old, bool loc_only)
{
	uint8_t kb[2][SIDX_KEY_MAX], p[2 * ENTRY_MAX];
	const uint8_t *prev;
	struct sidx_val v = *nv;
	struct blk *b;
	struct hit h;
	uint32_t i, n;
	bool found;

	if (old)
		*old = (struct sidx_val){ 0 };
	if (!klen || klen > SIDX_KEY_MAX || !v.loc || (v.tomb && !v.hlc && !v.node))
		return -EINVAL;
	if (!ix->ndir) {
		if (loc_only)
			return -ENOENT;
		n = (uint32_t)enc(ix, p, NULL, 0, key, klen, &v);
		if (blk_new(ix, 0, p, n) < 0)
			return -ENOMEM;
		goto added;
	}
	i = find_blk(ix, key, klen);
	b = &ix->dir[i];
	found = scan(ix, b, key, klen, false, kb, &h);
	prev = h.prevlen ? h.prev : NULL;
	if (found && h.cmp == 0) {
		if (old)
			*old = h.v;
		if (loc_only) {
			v = h.v;
			v.loc = nv->loc;
		}
		n = (uint32_t)enc(ix, p, prev, h.prevlen, h.cur, h.curlen, &v);
		if (n == h.size)
			memcpy(b->mem + h.off, p, n);
		else if (splice(ix, b, h.off, h.size, p, n) < 0)
			return -ENOMEM;
		ix->tombs += (uint64_t)v.tomb - (uint64_t)h.v.tomb;
		ix->versioned += (uint64_t)has_ver(&v) - (uint64_t)has_ver(&h.v);
		ix->gen++;
		return 0;
	}
	if (loc_only)
		return -ENOENT;
	n = (uint32_t)enc(ix, p, prev, h.prevlen, key, klen, &v);
	if (!found && b->len + n > SIDX_BLOCK_BYTES) {
		/* past the end of a full block: start the next one (so keys
		 * added in order fill their blocks) */
		n = (uint32_t)enc(ix, p, NULL, 0, key, klen, &v);
		if (blk_new(ix, i + 1, p, n) < 0)
			return -ENOMEM;
		goto added;
	}
	if (found) /* the key that was first now follows the new one */
		n += (uint32_t)enc(ix, p + n, key, klen, h.cur, h.curlen, &h.v);
	if (splice(ix, b, h.off, found ? h.size : 0, p, n) < 0)
		return -ENOMEM;
	maybe_split(ix, i);
added:
	ix->count++;
	ix->tombs += v.tomb;
	ix->versioned += has_ver(&v);
	ix->key_bytes += klen;
	ix->gen++;
	ix->tail_ok = false;
	return 0;
}

int sidx_put(struct sidx *ix, const void *key, size_t klen, const struct sidx_val *v,
	     struct sidx_val *old)
{
	return put_val(ix, key, klen, v, old, false);
}

int sidx_set(struct sidx *ix, const void *key, size_t klen, uint64_t loc, uint64_t *old)
{
	struct sidx_val v = { .loc = loc }, o;
	int ret = put_val(ix, key, klen, &v, &o, false);

	*old = o.loc;
	return ret;
}

int sidx_set_loc(struct sidx *ix, const void *key, size_t klen, uint64_t loc, uint64_t *old)
{
	struct sidx_val v = { .loc = loc }, o;
	int ret = put_val(ix, key, klen, &v, &o, true);

	*old = o.loc;
	return ret;
}

int sidx_del(struct sidx *ix, const void *key, size_t klen, uint64_t *old)
{
	uint8_t kb[2][SIDX_KEY_MAX], p[ENTRY_MAX], next[SIDX_KEY_MAX];
	struct blk *b;
	struct hit h;
	uint32_t i, n = 0, gone;

	*old = 0;
	if (!ix->ndir || !klen || klen > SIDX_KEY_MAX)
		return 0;
	i = find_blk(ix, key, klen);
	b = &ix->dir[i];
	if (!scan(ix, b, key, klen, false, kb, &h) || h.cmp != 0)
		return 0;
	gone = h.size;
	if (h.off + h.size < b->len) { /* the next entry now follows the previous one */
		struct ent e;

		dec(ix, b->mem + h.off + h.size, &e);
		memcpy(next, h.cur, e.shared);
		memcpy(next + e.shared, e.suffix, e.slen);
		/* its node reference is already in the table: encodes as before */
		n = (uint32_t)enc(ix, p, h.prevlen ? h.prev : NULL, h.prevlen, next, e.shared + e.slen,
				  &e.v);
		gone += e.size;
	}
	/* n <= gone (the next key's suffix grows by at most the deleted
	 * entry's suffix, and its varints by less than the deleted entry's),
	 * and splice reallocates only to grow: this cannot fail */
	splice(ix, b, h.off, gone, p, n);
	*old = h.v.loc;
	ix->tombs -= h.v.tomb;
	ix->versioned -= has_ver(&h.v);
	if (!b->len)
		dir_remove(ix, i);
	else
		maybe_merge(ix, i);
	ix->count--;
	ix->key_bytes -= klen;
	ix->gen++;
	ix->tail_ok = false;
	return 1;
}

int sidx_append_sorted(struct sidx *ix, const void *key, size_t klen, uint64_t loc)
{
	struct sidx_val v = { .loc = loc };

	return sidx_append_sorted_val(ix, key, klen, &v);
}

int sidx_append_sorted_val(struct sidx *ix, const void *key, size_t klen,
			   const struct sidx_val *v)
{
	uint8_t p[ENTRY_MAX];
	uint32_t n;

	if (!klen || klen > SIDX_KEY_MAX || !v->loc || (v->tomb && !v->hlc && !v->node))
		return -EINVAL;
	if (ix->ndir && !ix->tail_ok) {
		const struct blk *b = &ix->dir[ix->ndir - 1];
		uint32_t off = 0;
		struct ent e;

		while (off < b->len) {
			dec(ix, b->mem + off, &e);
			memcpy(ix->tail_key + e.shared, e.suffix, e.slen);
			ix->tail_klen = (uint16_t)(e.shared + e.slen);
			off += e.size;
		}
		ix->tail_ok = true;
	}
	if (ix->ndir && keycmp(ix->tail_key, ix->tail_klen, key, klen) >= 0)
		return -EINVAL;
	if (ix->ndir) {
		struct blk *b = &ix->dir[ix->ndir - 1];

		n = (uint32_t)enc(ix, p, ix->tail_key, ix->tail_klen, key, klen, v);
		if (b->len + n <= SIDX_BLOCK_BYTES) {
			if (splice(ix, b, b->len, 0, p, n) < 0)
				return -ENOMEM;
			goto added;
		}
	}
	n = (uint32_t)enc(ix, p, NULL, 0, key, klen, v);
	if (blk_new(ix, ix->ndir, p, n) < 0)
		return -ENOMEM;
added:
	memcpy(ix->tail_key, key, klen);
	ix->tail_klen = (uint16_t)klen;
	ix->tail_ok = true;
	ix->count++;
	ix->tombs += v->tomb;
	ix->versioned += has_ver(v);
	ix->key_bytes += klen;
	ix->gen++;
	return 0;
}

uint64_t sidx_count(const struct sidx *ix)
{
	return ix->count;
}

uint64_t sidx_tombs(const struct sidx *ix)
{
	return ix->tombs;
}

uint64_t sidx_versioned(const struct sidx *ix)
{
	return ix->versioned;
}

uint64_t sidx_key_bytes(const struct sidx *ix)
{
	return ix->key_bytes;
}

size_t sidx_bytes(const struct sidx *ix)
{
	return sizeof(*ix) + MALLOC_HDR + ix->mem_bytes + (size_t)ix->capdir * sizeof(*ix->dir) +
	       (size_t)ix->capnodes * sizeof(*ix->nodes) +
	       (ix->nhash ? NHASH_SLOTS * sizeof(*ix->nhash) + MALLOC_HDR : 0);
}

void sidx_shrink(struct sidx *ix)
{
	uint32_t cap = ix->ndir + ix->ndir / 64;
	void *d;

	if (!ix->ndir || ix->capdir <= cap + 16)
		return;
	d = realloc(ix->dir, (size_t)cap * sizeof(*ix->dir));
	if (d) {
		ix->dir = d;
		ix->capdir = cap;
	}
}

void sidx_seek(const struct sidx *ix, struct sidx_iter *it, const void *key, size_t klen,
	       bool after)
{
	it->gen = UINT64_MAX; /* positioned by the first sidx_next */
	it->mode = key ? (after ? IT_AFTER : IT_FROM) : IT_START;
	/* no stored key is longer than SIDX_KEY_MAX: one that is longer sorts
	 * where its first SIDX_KEY_MAX bytes would if it came after them */
	if (key && klen > SIDX_KEY_MAX) {
		klen = SIDX_KEY_MAX;
		it->mode = IT_AFTER;
	}
	it->klen = (uint16_t)(key ? klen : 0);
	if (key)
		memcpy(it->key, key, klen);
	(void)ix;
}

bool sidx_next(const struct sidx *ix, struct sidx_iter *it, const uint8_t **key, size_t *klen,
	       uint64_t *loc)
{
	struct sidx_val v;

	if (!sidx_next_val(ix, it, key, klen, &v))
		return false;
	*loc = v.loc;
	return true;
}

bool sidx_next_val(const struct sidx *ix, struct sidx_iter *it, const uint8_t **key,
		   size_t *klen, struct sidx_val *v)
{
	struct ent e;

	if (it->gen != ix->gen) {
		/* (re)position: the first entry after where the walk stands */
		uint8_t kb[2][SIDX_KEY_MAX];
		struct hit h;
		uint32_t i;

		it->gen = ix->gen;
		if (!ix->ndir) {
			it->blk = 0;
			it->off = 0;
		} else if (it->mode == IT_START) {
			it->blk = 0;
			it->off = 0;
		} else {
			i = find_blk(ix, it->key, it->klen);
			if (scan(ix, &ix->dir[i], it->key, it->klen, it->mode == IT_AFTER, kb, &h)) {
				/* decode it below: its predecessor's key comes along */
				memcpy(it->key, h.prev, h.prevlen);
				it->blk = i;
				it->off = h.off;
			} else {
				it->blk = i + 1;
				it->off = 0;
			}
		}
	}
	if (it->blk < ix->ndir && it->off >= ix->dir[it->blk].len) {
		it->blk++;
		it->off = 0;
	}
	if (it->blk >= ix->ndir)
		return false;
	dec(ix, ix->dir[it->blk].mem + it->off, &e);
	memcpy(it->key + e.shared, e.suffix, e.slen);
	it->klen = (uint16_t)(e.shared + e.slen);
	it->off += e.size;
	it->mode = IT_AFTER;
	*key = it->key;
	*klen = it->klen;
	*v = e.v;
	return true;
}
