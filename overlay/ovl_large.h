/*
 * ovl_large: the byte formats of large objects (docs/FORMAT.md, "Large
 * objects"), pure and shared by the client (libshelf writes them) and the
 * node (its chunk garbage collection reads them). No I/O, no allocation.
 *
 * Reserved client keys begin with 8 bytes fe (OVL_LARGE_PREFIX):
 *   chunk   fe x8, 'C', id (16), chunk index (u32 big-endian)   29 bytes
 *   intent  fe x8, 'G', id (16)                                  25 bytes
 * id names one write of one large object: 8 bytes big-endian unix ms of
 * the writing client, then 8 random bytes.
 *
 * The manifest (little-endian), stored at the object's own key:
 *   0  16  magic "\x89shelf-manifest\n"
 *   16  4  format version (1)
 *   20  4  flags (0)
 *   24  8  object size
 *   32  8  chunk size: 1 MiB..64 MiB, a multiple of 64 KiB
 *   40  4  n = ceil(size / chunk size), 1..2^24
 *   44  4  crc32c of the whole object
 *   48 16  id
 *   64 16n per chunk: u64 offset, u32 size, u32 crc32c
 *   64+16n 4  crc32c of bytes [0, 64+16n)
 * so its length is exactly 68 + 16n.
 *
 * The intent (little-endian): "SGI1", u32 chunk count (0xffffffff: not
 * known), u64 unix ms when written (the writer's clock), then the object
 * key (1..1024 bytes).
 *
 * Errors: 0 or a negative errno; words in a `why` buffer (may be NULL).
 */
#ifndef OVL_LARGE_H
#define OVL_LARGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OVL_LARGE_PREFIX_BYTES 8
#define OVL_LARGE_PREFIX_BYTE 0xfe
#define OVL_LARGE_ID_BYTES 16
#define OVL_LARGE_KIND_CHUNK 'C'
#define OVL_LARGE_KIND_INTENT 'G'
#define OVL_LARGE_CHUNK_KEY_BYTES 29    /* prefix, 'C', id, index */
#define OVL_LARGE_INTENT_KEY_BYTES 25   /* prefix, 'G', id */
#define OVL_LARGE_CHUNK_PREFIX_BYTES 25 /* prefix, 'C', id: every chunk of one id */

#define OVL_LARGE_MAGIC_BYTES 16
#define OVL_LARGE_MAN_HEAD_BYTES 64     /* the fixed head, before the entries */
#define OVL_LARGE_MAN_ENTRY_BYTES 16
#define OVL_LARGE_MAN_MIN_BYTES 84      /* 68 + 16 x 1 */
#define OVL_LARGE_MAN_VERSION 1
#define OVL_LARGE_CHUNK_MIN_BYTES (1ull << 20)
#define OVL_LARGE_CHUNK_MAX_BYTES (64ull << 20)
#define OVL_LARGE_CHUNK_ALIGN_BYTES (64ull << 10)
#define OVL_LARGE_CHUNKS_MAX (1u << 24)

#define OVL_LARGE_INTENT_HEAD_BYTES 16  /* magic, count, ms; the key follows */
#define OVL_LARGE_INTENT_KEY_MAX 1024
#define OVL_LARGE_COUNT_UNKNOWN 0xffffffffu

extern const uint8_t ovl_large_magic[OVL_LARGE_MAGIC_BYTES];

/* Whether key begins with the reserved prefix fe x8. */
bool ovl_large_key_reserved(const void *key, size_t klen);

/* The chunk key of (id, index) into out[29]; the intent key of id into out[25];
 * the prefix every chunk key of id begins with into out[25]. */
void ovl_large_chunk_key(uint8_t out[OVL_LARGE_CHUNK_KEY_BYTES], const uint8_t id[OVL_LARGE_ID_BYTES],
			 uint32_t index);
void ovl_large_intent_key(uint8_t out[OVL_LARGE_INTENT_KEY_BYTES],
			  const uint8_t id[OVL_LARGE_ID_BYTES]);
void ovl_large_chunk_prefix(uint8_t out[OVL_LARGE_CHUNK_PREFIX_BYTES],
			    const uint8_t id[OVL_LARGE_ID_BYTES]);

/* A chunk key's id and index / an intent key's id: 0, or -EINVAL when key
 * is not one (wrong length, prefix or kind). id may be NULL. */
int ovl_large_chunk_key_parse(const void *key, size_t klen, uint8_t id[OVL_LARGE_ID_BYTES],
			      uint32_t *index);
int ovl_large_intent_key_parse(const void *key, size_t klen, uint8_t id[OVL_LARGE_ID_BYTES]);

/* The unix ms an id carries (its first 8 bytes, big-endian). */
uint64_t ovl_large_id_ms(const uint8_t id[OVL_LARGE_ID_BYTES]);

/* ---- the manifest ---- */

/* A manifest's head (its first 64 bytes). */
struct ovl_large_head {
	uint64_t size;                  /* the object's bytes */
	uint64_t chunk_size;            /* every chunk but the last holds exactly this */
	uint32_t n;                     /* chunks */
	uint32_t crc;                   /* crc32c of the whole object */
	uint8_t id[OVL_LARGE_ID_BYTES];
};

/* One chunk of a manifest. */
struct ovl_large_entry {
	uint64_t offset;
	uint32_t size;
	uint32_t crc;
};

/* Whether bytes that begin an object begin with the manifest magic (len:
 * how many of them there are; fewer than 16 never do). By the escape rule
 * such an object is always a manifest (valid or damaged). */
bool ovl_large_is_manifest(const void *buf, size_t len);

/* The length of a manifest of n chunks: 68 + 16n. */
uint64_t ovl_large_manifest_bytes(uint32_t n);

/* Whether a stored size s can be a manifest's: s >= 84 and (s - 68) % 16 == 0. */
bool ovl_large_size_may_be_manifest(uint64_t s);

/*
 * Check and decode a manifest's head from its first len bytes (at least
 * 64; more are not looked at). stored: the object's whole stored size as
 * the node reported it, or UINT64_MAX when not known; when known it must
 * be exactly 68 + 16n. Checks the magic, version 1, flags 0, the chunk
 * size (range, multiple of 64 KiB), n (1..2^24, = ceil(size / chunk size)).
 * Returns 0 with *h; -ENOMSG the bytes do not begin with the magic (no
 * manifest); -EBADMSG a damaged head (why says what), *h then still holds
 * the id when len >= 64 (to tell whose manifest is damaged).
 */
int ovl_large_head_parse(const void *buf, size_t len, uint64_t stored, struct ovl_large_head *h,
			 char *why, size_t whylen);

/*
 * Check a whole manifest (buf[0..len) is all of the stored object): the
 * head as above with stored = len, the trailing crc, then every entry
 * (offsets contiguous from 0, sizes the chunk size but the last, which is
 * 1..chunk size, their sum the size). Nothing is allocated: n is checked
 * against len before any entry is read. 0 with *h (may be NULL),
 * -ENOMSG (no magic), or -EBADMSG (why says what).
 */
int ovl_large_manifest_check(const void *buf, size_t len, struct ovl_large_head *h, char *why,
			     size_t whylen);

/* Entry i (< h->n) of a manifest that passed ovl_large_manifest_check(). */
void ovl_large_manifest_entry(const void *buf, uint32_t i, struct ovl_large_entry *e);

/*
 * Write the manifest of h (size, chunk_size, crc, id; n is computed and
 * set) with the chunks' crcs crcs[0..n) into out[0..cap). Returns its
 * length (68 + 16n), -EINVAL (a chunk size out of range, a size of 0 or
 * one needing more than 2^24 chunks) or -ENOSPC (cap too small).
 */
int64_t ovl_large_manifest_encode(struct ovl_large_head *h, const uint32_t *crcs, uint8_t *out,
				  size_t cap);

/* ---- the intent ---- */

struct ovl_large_intent {
	uint32_t count;                 /* chunks, or OVL_LARGE_COUNT_UNKNOWN */
	uint64_t ms;                    /* unix ms when written, the writer's clock */
	const uint8_t *key;             /* the object key (borrowed: points into the value) */
	size_t klen;                    /* 1..1024 */
};

/* Decode an intent's value (the key is everything after the 16-byte
 * head): 0 with *in (in->key points into buf), or -EBADMSG (shorter than
 * the head, wrong magic, no key, or a key over 1024 bytes; why says which). */
int ovl_large_intent_parse(const void *buf, size_t len, struct ovl_large_intent *in, char *why,
			   size_t whylen);

/* Encode an intent into out[0..cap): its length (16 + klen), -EINVAL (a key
 * of 0 or over 1024 bytes) or -ENOSPC. */
int ovl_large_intent_encode(const struct ovl_large_intent *in, uint8_t *out, size_t cap);

#endif
