/*
 * The on-disk record codec (docs/FORMAT.md, "Records").
 *
 * A record is a 40-byte little-endian header, the key, for values larger
 * than REC_CHUNK_BYTES a table of per-chunk crc32c, then the value, padded
 * to REC_ALIGN_BYTES. hcrc covers header bytes 0..35, the key and the chunk
 * table; vcrc covers the whole value. `prev` chains every record to the
 * hcrc of the record before it in the log, so stale bytes from an earlier
 * life of a segment never pass for a continuation of the log.
 */
#ifndef NODE_STORE_RECORD_H
#define NODE_STORE_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REC_MAGIC 0x5253u /* "SR" little-endian */
#define REC_HDR_BYTES 40u
#define REC_ALIGN_BYTES 16u
#define REC_CHUNK_BYTES (64u << 10)
#define REC_FLAG_CHUNKED 0x01u

enum rec_type {
	REC_PUT = 1,       /* key -> value */
	REC_TOMB = 2,      /* key deleted */
	REC_RELOC = 3,     /* a live PUT copied by compaction; aux = source loc */
	REC_NEXT = 4,      /* the log continues at segment `aux`, offset 0 */
	REC_CKPT_PART = 5, /* part of a checkpoint; payload = items */
	REC_CKPT_END = 6,  /* end of a checkpoint; payload = part list */
	REC_RESV = 7,      /* aux bytes reserved for a streamed put from the next block */
	REC_COMMIT = 8,    /* a streamed put or move is complete; aux = loc of its record */
	REC_DAMAGE = 9,    /* a read found the key's record at aux damaged */
};

/* Little-endian field access, for everything the store puts on disk. */
static inline void le_put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void le_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void le_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t le_get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t le_get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t le_get64(const uint8_t *p)
{
	return le_get32(p) | (uint64_t)le_get32(p + 4) << 32;
}

struct rec_hdr {
	uint8_t type;
	uint8_t flags;
	uint16_t klen;
	uint32_t vlen;
	uint32_t prev;
	uint64_t seq;
	uint64_t aux;
	uint32_t vcrc;
	uint32_t hcrc;
};

/* Bytes of the chunk table for a value of vlen bytes (0 when not chunked). */
size_t rec_table_bytes(uint64_t vlen);

/* Total record bytes, padding included. */
uint64_t rec_size(size_t klen, uint64_t vlen);

/* Serialise h into 40 bytes (hcrc is written as given). */
void rec_hdr_pack(const struct rec_hdr *h, uint8_t out[REC_HDR_BYTES]);

/* Parse 40 bytes; -EBADMSG if the magic or the type is wrong. */
int rec_hdr_unpack(const uint8_t in[REC_HDR_BYTES], struct rec_hdr *h);

/* hcrc over header bytes 0..35 (hcrc field excluded), key and table. */
uint32_t rec_hcrc(const uint8_t hdr[REC_HDR_BYTES], const void *key, size_t klen,
		  const void *table, size_t tlen);

/* Fill table (rec_table_bytes(vlen) bytes) with per-chunk crcs and return
 * the crc32c of the whole value. table may be NULL when not chunked. */
uint32_t rec_value_crcs(const void *val, uint64_t vlen, uint8_t *table);

/*
 * Validate a complete record in memory at `rec` (at least rec_size bytes
 * readable): magic, type, hcrc and the value checksums. Returns 0 and fills
 * h, or -EBADMSG (not a record), -EIO (checksum mismatch).
 */
int rec_check(const uint8_t *rec, size_t avail, struct rec_hdr *h);

#endif
