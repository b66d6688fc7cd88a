#include "index.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define ENTRY_HDR_BYTES 10u /* u64 loc + u16 klen */
#define CHUNKS_MAX 4096u    /* u32 ref = chunk (12 bits) | offset (20 bits) */

struct sidx {
	uint8_t **chunks;
	uint32_t nchunks, capchunks;
	uint32_t tail;          /* bytes used in the last chunk */
	uint32_t *main;
	uint32_t nmain, capmain, main_dead;
	uint32_t delta[SIDX_DELTA_MAX];
	uint32_t ndelta;
	uint64_t count;         /* live keys */
	uint64_t key_bytes;     /* sum of the live keys' lengths */
	uint64_t garbage;       /* arena bytes of dead entries */
};

static uint8_t *entry(const struct sidx *ix, uint32_t ref)
{
	return ix->chunks[ref >> 20] + (ref & (SIDX_CHUNK_BYTES - 1));
}

static uint64_t entry_loc(const uint8_t *e)
{
	uint64_t v;

	memcpy(&v, e, 8);
	return v;
}

static void entry_set_loc(uint8_t *e, uint64_t loc)
{
	memcpy(e, &loc, 8);
}

static size_t entry_klen(const uint8_t *e)
{
	uint16_t v;

	memcpy(&v, e + 8, 2);
	return v;
}

static int keycmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c)
		return c;
	return alen < blen ? -1 : alen > blen;
}

static int cmp_ref(const struct sidx *ix, uint32_t ref, const void *key, size_t klen)
{
	const uint8_t *e = entry(ix, ref);

	return keycmp(e + ENTRY_HDR_BYTES, entry_klen(e), key, klen);
}

/* First position in arr[0..n) whose key is >= key (or > key). */
static uint32_t lower_bound(const struct sidx *ix, const uint32_t *arr, uint32_t n,
			    const void *key, size_t klen, bool after)
{
	uint32_t lo = 0, hi = n;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		int c = cmp_ref(ix, arr[mid], key, klen);

		if (c < 0 || (after && c == 0))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Position of key in arr, or -1. */
static int64_t find(const struct sidx *ix, const uint32_t *arr, uint32_t n, const void *key,
		    size_t klen)
{
	uint32_t i = lower_bound(ix, arr, n, key, klen, false);

	if (i < n && cmp_ref(ix, arr[i], key, klen) == 0)
		return i;
	return -1;
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
	for (uint32_t i = 0; i < ix->nchunks; i++)
		free(ix->chunks[i]);
	free(ix->chunks);
	free(ix->main);
	free(ix);
	*ixp = NULL;
}

/* Chunks grow from 64 KiB to SIDX_CHUNK_BYTES, so a small index stays small. */
static uint32_t chunk_bytes(uint32_t i)
{
	return i >= 4 ? SIDX_CHUNK_BYTES : (SIDX_CHUNK_BYTES >> 4) << i;
}

/* Allocate an entry in the arena; returns its ref or UINT32_MAX. */
static uint32_t arena_add(struct sidx *ix, const void *key, size_t klen, uint64_t loc)
{
	size_t need = ENTRY_HDR_BYTES + klen;
	uint16_t k16 = (uint16_t)klen;
	uint8_t *e;

	if (ix->nchunks == 0 || ix->tail + need > chunk_bytes(ix->nchunks - 1)) {
		if (ix->nchunks == CHUNKS_MAX)
			return UINT32_MAX;
		if (ix->nchunks == ix->capchunks) {
			uint32_t cap = ix->capchunks ? ix->capchunks * 2 : 16;
			void *c = realloc(ix->chunks, cap * sizeof(*ix->chunks));

			if (!c)
				return UINT32_MAX;
			ix->chunks = c;
			ix->capchunks = cap;
		}
		ix->chunks[ix->nchunks] = malloc(chunk_bytes(ix->nchunks));
		if (!ix->chunks[ix->nchunks])
			return UINT32_MAX;
		ix->nchunks++;
		ix->tail = 0;
	}
	e = ix->chunks[ix->nchunks - 1] + ix->tail;
	entry_set_loc(e, loc);
	memcpy(e + 8, &k16, 2);
	memcpy(e + ENTRY_HDR_BYTES, key, klen);
	ix->tail += (uint32_t)need;
	return (ix->nchunks - 1) << 20 | (ix->tail - (uint32_t)need);
}

/*
 * Merge delta into main, dropping dead entries; when the arena is mostly
 * garbage, copy the live entries into fresh chunks (in key order).
 */
static int merge(struct sidx *ix)
{
	uint32_t n = ix->nmain - ix->main_dead + ix->ndelta, i = 0, j = 0, k = 0;
	uint32_t *out = malloc((n ? n : 1) * sizeof(*out));
	bool repack = ix->garbage > SIDX_CHUNK_BYTES * 4 &&
		      ix->garbage * 2 > (uint64_t)ix->nchunks * SIDX_CHUNK_BYTES;

	if (!out)
		return -ENOMEM;
	while (i < ix->nmain || j < ix->ndelta) {
		uint32_t ref;

		if (j >= ix->ndelta ||
		    (i < ix->nmain && cmp_ref(ix, ix->main[i], entry(ix, ix->delta[j]) + ENTRY_HDR_BYTES,
					      entry_klen(entry(ix, ix->delta[j]))) < 0))
			ref = ix->main[i++];
		else
			ref = ix->delta[j++];
		if (entry_loc(entry(ix, ref)) != 0)
			out[k++] = ref;
	}
	free(ix->main);
	ix->main = out;
	ix->nmain = k;
	ix->capmain = n ? n : 1;
	ix->main_dead = 0;
	ix->ndelta = 0;
	if (repack) {
		struct sidx fresh = { 0 };

		for (i = 0; i < k; i++) {
			const uint8_t *e = entry(ix, out[i]);

			uint32_t ref = arena_add(&fresh, e + ENTRY_HDR_BYTES, entry_klen(e),
						 entry_loc(e));

			if (ref == UINT32_MAX) {
				for (uint32_t c = 0; c < fresh.nchunks; c++)
					free(fresh.chunks[c]);
				free(fresh.chunks);
				return 0; /* keep the old arena; nothing lost */
			}
			out[i] = ref;
		}
		for (uint32_t c = 0; c < ix->nchunks; c++)
			free(ix->chunks[c]);
		free(ix->chunks);
		ix->chunks = fresh.chunks;
		ix->nchunks = fresh.nchunks;
		ix->capchunks = fresh.capchunks;
		ix->tail = fresh.tail;
		ix->garbage = 0;
	}
	return 0;
}

int sidx_get(const struct sidx *ix, const void *key, size_t klen, uint64_t *loc)
{
	int64_t p = find(ix, ix->delta, ix->ndelta, key, klen);
	uint64_t l;

	if (p < 0)
		p = find(ix, ix->main, ix->nmain, key, klen), l = p < 0 ? 0 : entry_loc(entry(ix, ix->main[p]));
	else
		l = entry_loc(entry(ix, ix->delta[p]));
	if (!l)
		return 0;
	*loc = l;
	return 1;
}

int sidx_set(struct sidx *ix, const void *key, size_t klen, uint64_t loc, uint64_t *old)
{
	int64_t p;
	uint32_t ref, pos;
	uint8_t *e;

	*old = 0;
	p = find(ix, ix->delta, ix->ndelta, key, klen);
	e = p >= 0 ? entry(ix, ix->delta[p]) : NULL;
	if (!e) {
		p = find(ix, ix->main, ix->nmain, key, klen);
		e = p >= 0 ? entry(ix, ix->main[p]) : NULL;
		if (e && entry_loc(e) == 0) { /* revive a deleted entry */
			ix->main_dead--;
			ix->garbage -= ENTRY_HDR_BYTES + klen;
			ix->count++;
			ix->key_bytes += klen;
		}
	}
	if (e) {
		*old = entry_loc(e);
		entry_set_loc(e, loc);
		return 0;
	}
	if (ix->ndelta == SIDX_DELTA_MAX && merge(ix) < 0)
		return -ENOMEM;
	ref = arena_add(ix, key, klen, loc);
	if (ref == UINT32_MAX)
		return -ENOMEM;
	pos = lower_bound(ix, ix->delta, ix->ndelta, key, klen, false);
	memmove(ix->delta + pos + 1, ix->delta + pos, (ix->ndelta - pos) * sizeof(uint32_t));
	ix->delta[pos] = ref;
	ix->ndelta++;
	ix->count++;
	ix->key_bytes += klen;
	return 0;
}

int sidx_del(struct sidx *ix, const void *key, size_t klen, uint64_t *old)
{
	int64_t p = find(ix, ix->delta, ix->ndelta, key, klen);
	uint8_t *e;

	*old = 0;
	if (p >= 0) {
		e = entry(ix, ix->delta[p]);
		*old = entry_loc(e);
		memmove(ix->delta + p, ix->delta + p + 1, (ix->ndelta - p - 1) * sizeof(uint32_t));
		ix->ndelta--;
		ix->garbage += ENTRY_HDR_BYTES + klen;
		ix->count--;
		ix->key_bytes -= klen;
		return 1;
	}
	p = find(ix, ix->main, ix->nmain, key, klen);
	if (p < 0)
		return 0;
	e = entry(ix, ix->main[p]);
	if (entry_loc(e) == 0)
		return 0;
	*old = entry_loc(e);
	entry_set_loc(e, 0);
	ix->main_dead++;
	ix->garbage += ENTRY_HDR_BYTES + klen;
	ix->count--;
	ix->key_bytes -= klen;
	if (ix->main_dead > 1024 && ix->main_dead > ix->nmain / 4)
		merge(ix); /* failure only delays the cleanup */
	return 1;
}

int sidx_append_sorted(struct sidx *ix, const void *key, size_t klen, uint64_t loc)
{
	uint32_t ref;

	if (ix->ndelta && merge(ix) < 0)
		return -ENOMEM;
	if (ix->nmain && cmp_ref(ix, ix->main[ix->nmain - 1], key, klen) >= 0)
		return -EINVAL;
	if (ix->nmain == ix->capmain) {
		uint32_t cap = ix->capmain < 16 ? 16 : ix->capmain * 2;
		void *m = realloc(ix->main, cap * sizeof(uint32_t));

		if (!m)
			return -ENOMEM;
		ix->main = m;
		ix->capmain = cap;
	}
	ref = arena_add(ix, key, klen, loc);
	if (ref == UINT32_MAX)
		return -ENOMEM;
	ix->main[ix->nmain++] = ref;
	ix->count++;
	ix->key_bytes += klen;
	return 0;
}

uint64_t sidx_count(const struct sidx *ix)
{
	return ix->count;
}

uint64_t sidx_key_bytes(const struct sidx *ix)
{
	return ix->key_bytes;
}

size_t sidx_bytes(const struct sidx *ix)
{
	size_t arena = 0;

	for (uint32_t i = 0; i < ix->nchunks; i++)
		arena += chunk_bytes(i);
	return arena + (size_t)ix->capmain * sizeof(uint32_t) +
	       sizeof(*ix) + ix->capchunks * sizeof(void *);
}

void sidx_seek(const struct sidx *ix, struct sidx_iter *it, const void *key, size_t klen,
	       bool after)
{
	if (!key) {
		it->im = it->id = 0;
		return;
	}
	it->im = lower_bound(ix, ix->main, ix->nmain, key, klen, after);
	it->id = lower_bound(ix, ix->delta, ix->ndelta, key, klen, after);
}

bool sidx_next(const struct sidx *ix, struct sidx_iter *it, const uint8_t **key, size_t *klen,
	       uint64_t *loc)
{
	while (it->im < ix->nmain || it->id < ix->ndelta) {
		uint32_t ref;
		const uint8_t *e;

		if (it->id >= ix->ndelta)
			ref = ix->main[it->im++];
		else if (it->im >= ix->nmain)
			ref = ix->delta[it->id++];
		else {
			const uint8_t *d = entry(ix, ix->delta[it->id]);

			if (cmp_ref(ix, ix->main[it->im], d + ENTRY_HDR_BYTES, entry_klen(d)) < 0)
				ref = ix->main[it->im++];
			else
				ref = ix->delta[it->id++];
		}
		e = entry(ix, ref);
		if (entry_loc(e) == 0)
			continue;
		*key = e + ENTRY_HDR_BYTES;
		*klen = entry_klen(e);
		*loc = entry_loc(e);
		return true;
	}
	return false;
}
