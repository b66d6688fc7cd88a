/*
 * The store's in-memory index: key -> location, in key order.
 *
 * Layout, chosen for bytes per object (docs/FORMAT.md, "Index"):
 *  - an arena of 1 MiB chunks holding entries [u64 loc][u16 klen][key];
 *  - `main`, a sorted array of u32 references into the arena;
 *  - `delta`, a small sorted array (at most SIDX_DELTA_MAX references) that
 *    takes new keys and is merged into `main` when full.
 * So an object costs 4 (main) + 10 (loc, klen) + its key bytes. Lookups are
 * binary searches. Deleted keys in `main` keep their entry with loc 0 until
 * the next merge, which also compacts the arena when it is mostly garbage.
 *
 * loc is opaque to the index except that 0 means "absent".
 */
#ifndef NODE_STORE_INDEX_H
#define NODE_STORE_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SIDX_DELTA_MAX 4096u
#define SIDX_CHUNK_BYTES (1u << 20)

struct sidx;

struct sidx *sidx_new(void);
void sidx_destroy(struct sidx **ix);

/* 1 and *loc if present, 0 if not. */
int sidx_get(const struct sidx *ix, const void *key, size_t klen, uint64_t *loc);

/* Insert or replace. *old receives the previous loc (0 if none). 0 or -ENOMEM. */
int sidx_set(struct sidx *ix, const void *key, size_t klen, uint64_t loc, uint64_t *old);

/* Remove. Returns 1 and *old if it was present, 0 if not. */
int sidx_del(struct sidx *ix, const void *key, size_t klen, uint64_t *old);

/* Append a key greater than every key present (checkpoint load). */
int sidx_append_sorted(struct sidx *ix, const void *key, size_t klen, uint64_t loc);

uint64_t sidx_count(const struct sidx *ix);
/* Sum of the live keys' lengths. */
uint64_t sidx_key_bytes(const struct sidx *ix);
/* Bytes of memory held (arena chunks and arrays). */
size_t sidx_bytes(const struct sidx *ix);

/* Iteration in key order. An iterator is invalidated by any change. */
struct sidx_iter {
	uint32_t im, id; /* positions in main and delta */
};

/* Position at the first key >= key (after: > key). key NULL: the start. */
void sidx_seek(const struct sidx *ix, struct sidx_iter *it, const void *key, size_t klen,
	       bool after);
/* The next live entry, or false at the end. */
bool sidx_next(const struct sidx *ix, struct sidx_iter *it, const uint8_t **key,
	       size_t *klen, uint64_t *loc);

#endif
