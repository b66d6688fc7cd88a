/*
 * The store's in-memory index: key -> location, in key order.
 *
 * Layout, chosen for bytes per object (docs/FORMAT.md, "Index"): a sorted
 * directory of blocks; each block is one malloc'd run of at most about
 * SIDX_BLOCK_BYTES holding entries in key order, each entry
 *
 *   varint shared, varint (suffix_len << 2 | flags), suffix,
 *   varint loc_hi, varint loc_lo, [version]
 *
 * where `shared` is the number of leading bytes the key has in common with
 * the previous key of the same block (0 for a block's first entry, which
 * therefore holds its key whole), and loc_hi/loc_lo are loc >> SIDX_LOC_SPLIT
 * and the low SIDX_LOC_SPLIT bits (the store keeps a record's size there, so
 * a small record's location takes a few bytes instead of eight). Varints
 * are LEB128: 7 bits a byte, low bits first. flags: bit 0 a version
 * follows, bit 1 the entry is a tombstone (always with a version). The
 * version is the hlc as 8 bytes little-endian, then varint r: r > 0 is
 * entry r-1 of the index's table of node values (a cluster has few heads),
 * r = 0 is followed by the node value as 8 bytes little-endian (the table
 * is full: SIDX_NODES_MAX). An entry without a version costs nothing more
 * than before.
 *
 * Lookups binary-search the directory on each block's first key and then
 * scan one block. Inserts, updates and deletes splice one block; a block that
 * grows past SIDX_BLOCK_BYTES is split, one that shrinks below a quarter of
 * it is merged with its successor when they fit together. Nothing is kept
 * per object outside the blocks, and nothing for deleted keys.
 *
 * loc is opaque to the index except that 0 means "absent".
 */
#ifndef NODE_STORE_INDEX_H
#define NODE_STORE_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SIDX_KEY_MAX 1024u      /* longest key, bytes */
#define SIDX_BLOCK_BYTES 512u   /* a block is split when its entries outgrow this */
#define SIDX_LOC_SPLIT 23       /* loc's low bits are stored as their own varint */
#define SIDX_NODES_MAX 4096u    /* distinct node values kept in the table */

struct sidx;

/* What the index holds for a key. */
struct sidx_val {
	uint64_t loc;           /* the record (never 0) */
	uint64_t hlc, node;     /* its version; (0, 0): none */
	bool tomb;              /* a tombstone: the key is deleted at that version */
};

struct sidx *sidx_new(void);
void sidx_destroy(struct sidx **ix);

/* 1 and *loc if present (a tombstone too), 0 if not. */
int sidx_get(const struct sidx *ix, const void *key, size_t klen, uint64_t *loc);

/* 1 and *v if present (a tombstone too), 0 if not. */
int sidx_find(const struct sidx *ix, const void *key, size_t klen, struct sidx_val *v);

/* Insert or replace with an unversioned object at loc (loc must not be
 * 0). *old receives the previous loc (0 if none). 0, -ENOMEM, or -EINVAL
 * for an empty key or one longer than SIDX_KEY_MAX. */
int sidx_set(struct sidx *ix, const void *key, size_t klen, uint64_t loc, uint64_t *old);

/* Insert or replace with *v (v->loc not 0; a tombstone needs a version).
 * *old (may be NULL) receives the previous value (loc 0 if none). 0,
 * -ENOMEM, -EINVAL. */
int sidx_put(struct sidx *ix, const void *key, size_t klen, const struct sidx_val *v,
	     struct sidx_val *old);

/* Change only the location of a present key (its version and tombstone bit
 * stay). 0, -ENOENT (absent), -ENOMEM, -EINVAL. *old: the previous loc. */
int sidx_set_loc(struct sidx *ix, const void *key, size_t klen, uint64_t loc, uint64_t *old);

/* Remove. Returns 1 and *old if it was present, 0 if not. */
int sidx_del(struct sidx *ix, const void *key, size_t klen, uint64_t *old);

/* Append a key greater than every key present (checkpoint load): 0,
 * -ENOMEM, or -EINVAL when it is not greater or not a valid key. */
int sidx_append_sorted(struct sidx *ix, const void *key, size_t klen, uint64_t loc);
int sidx_append_sorted_val(struct sidx *ix, const void *key, size_t klen,
			   const struct sidx_val *v);

/* Keys present, tombstones included. */
uint64_t sidx_count(const struct sidx *ix);
/* Of those, tombstones. */
uint64_t sidx_tombs(const struct sidx *ix);
/* Of those, entries with a version (tombstones included). */
uint64_t sidx_versioned(const struct sidx *ix);
/* Sum of the live keys' lengths. */
uint64_t sidx_key_bytes(const struct sidx *ix);
/* Bytes of memory held (blocks, directory and the index itself). */
size_t sidx_bytes(const struct sidx *ix);

/* Give back slack: the directory's spare capacity. For idle moments. */
void sidx_shrink(struct sidx *ix);

/*
 * Iteration in key order. The iterator holds the current key (the pointer
 * sidx_next hands out points into it and is valid until the next call). A
 * change to the index between calls is noticed: the walk then continues
 * after the last key it returned.
 */
struct sidx_iter {
	uint64_t gen;           /* the index's change count when positioned */
	uint32_t blk, off;      /* the next entry to decode: block and offset */
	uint8_t mode;           /* where to resume: start, at key, or after key */
	uint16_t klen;
	uint8_t key[SIDX_KEY_MAX]; /* the seek key, then the last key returned */
};

/* Position at the first key >= key (after: > key). key NULL: the start. */
void sidx_seek(const struct sidx *ix, struct sidx_iter *it, const void *key, size_t klen,
	       bool after);
/* The next entry (tombstones too), or false at the end. */
bool sidx_next(const struct sidx *ix, struct sidx_iter *it, const uint8_t **key,
	       size_t *klen, uint64_t *loc);
/* The same, with the entry's whole value. */
bool sidx_next_val(const struct sidx *ix, struct sidx_iter *it, const uint8_t **key,
		   size_t *klen, struct sidx_val *v);

#endif
