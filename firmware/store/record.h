/*
 * The on-disk record codec (docs/FORMAT.md, "Records").
 *
 * A record is a 40-byte little-endian header, when flagged REC_FLAG_VER a
 * 16-byte version extension (format 4), the key, for values larger than
 * REC_CHUNK_BYTES a table of per-chunk crc32c, then the value, padded to
 * REC_ALIGN_BYTES. hcrc covers header bytes 0..35, the extension, the key
 * and the chunk table; vcrc covers the whole value. `prev` chains every record to the
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
/* The first record a store writes after a recovery: its seq is not the
 * previous record's plus one but jumps past every sequence number the
 * crashed life may have left on the drive (docs/FORMAT.md §4). */
#define REC_FLAG_JUMP 0x02u
/* Format 4: a 16-byte extension follows the header: u64 hlc, u64 node, the
 * record's version ((0,0): none). Covered by hcrc. */
#define REC_FLAG_VER 0x04u
/* Format 4, on a RELOC only: the record it copies is a tombstone (vlen 0). */
#define REC_FLAG_TOMB 0x08u
#define REC_EXT_BYTES 16u
#define REC_HDR_MAX_BYTES (REC_HDR_BYTES + REC_EXT_BYTES)

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
	REC_DROP = 10,     /* format 4: forget the key's tombstone if it is still this version */
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
	/* the version extension (REC_FLAG_VER): filled by rec_ext_get() */
	uint64_t hlc, node;
};

/* Bytes of the version extension a record with these flags carries. */
static inline size_t rec_ext_bytes(uint8_t flags)
{
	return flags & REC_FLAG_VER ? REC_EXT_BYTES : 0;
}

/* Offset of the key from the record's start. */
static inline size_t rec_key_off(const struct rec_hdr *h)
{
	return REC_HDR_BYTES + rec_ext_bytes(h->flags);
}

/* Bytes of the chunk table for a value of vlen bytes (0 when not chunked). */
size_t rec_table_bytes(uint64_t vlen);

/* Total record bytes, padding included, for a record without the version
 * extension (with it: rec_size(REC_EXT_BYTES + klen, vlen)). */
uint64_t rec_size(size_t klen, uint64_t vlen);

/* Total record bytes of the record h describes. */
static inline uint64_t rec_hsize(const struct rec_hdr *h)
{
	return rec_size(rec_ext_bytes(h->flags) + h->klen, h->vlen);
}

/* Serialise h into 40 bytes (hcrc is written as given), and with
 * REC_FLAG_VER its extension (hlc, node) into the 16 bytes after them. */
void rec_hdr_pack(const struct rec_hdr *h, uint8_t *out);

/* Parse 40 bytes; -EBADMSG if the magic, the type or the flags are wrong.
 * The extension is not read (hlc, node are 0): see rec_ext_get(). */
int rec_hdr_unpack(const uint8_t in[REC_HDR_BYTES], struct rec_hdr *h);

/* Fill h->hlc, h->node from the extension after the header at rec (only
 * when h->flags has REC_FLAG_VER; else 0). */
void rec_ext_get(const uint8_t *rec, struct rec_hdr *h);

/* hcrc over header bytes 0..35 (hcrc field excluded), the extension (when
 * hdr's flags say so, read from hdr + 40), the key and the table. */
uint32_t rec_hcrc(const uint8_t *hdr, const void *key, size_t klen, const void *table,
		  size_t tlen);

/* Fill table (rec_table_bytes(vlen) bytes) with per-chunk crcs and return
 * the crc32c of the whole value. table may be NULL when not chunked. */
uint32_t rec_value_crcs(const void *val, uint64_t vlen, uint8_t *table);

/*
 * Validate a complete record in memory at `rec` (at least rec_hsize bytes
 * readable): magic, type, hcrc and the value checksums. Returns 0 and fills
 * h (its extension too), or -EBADMSG (not a record), -EIO (checksum
 * mismatch).
 */
int rec_check(const uint8_t *rec, size_t avail, struct rec_hdr *h);

#endif
