#include "record.h"

#include <errno.h>
#include <string.h>

#include "overlay.h"

size_t rec_table_bytes(uint64_t vlen)
{
	if (vlen <= REC_CHUNK_BYTES)
		return 0;
	return (size_t)((vlen + REC_CHUNK_BYTES - 1) / REC_CHUNK_BYTES) * 4;
}

uint64_t rec_size(size_t klen, uint64_t vlen)
{
	uint64_t n = REC_HDR_BYTES + klen + rec_table_bytes(vlen) + vlen;

	return (n + REC_ALIGN_BYTES - 1) & ~(uint64_t)(REC_ALIGN_BYTES - 1);
}

void rec_hdr_pack(const struct rec_hdr *h, uint8_t *out)
{
	le_put16(out, REC_MAGIC);
	out[2] = h->type;
	out[3] = h->flags;
	le_put16(out + 4, h->klen);
	le_put16(out + 6, 0);
	le_put32(out + 8, h->vlen);
	le_put32(out + 12, h->prev);
	le_put64(out + 16, h->seq);
	le_put64(out + 24, h->aux);
	le_put32(out + 32, h->vcrc);
	le_put32(out + 36, h->hcrc);
	if (h->flags & REC_FLAG_VER) {
		le_put64(out + REC_HDR_BYTES, h->hlc);
		le_put64(out + REC_HDR_BYTES + 8, h->node);
	}
}

void rec_ext_get(const uint8_t *rec, struct rec_hdr *h)
{
	h->hlc = h->node = 0;
	if (h->flags & REC_FLAG_VER) {
		h->hlc = le_get64(rec + REC_HDR_BYTES);
		h->node = le_get64(rec + REC_HDR_BYTES + 8);
	}
}

int rec_hdr_unpack(const uint8_t in[REC_HDR_BYTES], struct rec_hdr *h)
{
	if (le_get16(in) != REC_MAGIC || le_get16(in + 6) != 0)
		return -EBADMSG;
	h->type = in[2];
	h->flags = in[3];
	h->klen = le_get16(in + 4);
	h->vlen = le_get32(in + 8);
	h->prev = le_get32(in + 12);
	h->seq = le_get64(in + 16);
	h->aux = le_get64(in + 24);
	h->vcrc = le_get32(in + 32);
	h->hcrc = le_get32(in + 36);
	h->hlc = h->node = 0;
	if (h->type < REC_PUT || h->type > REC_DROP ||
	    (h->flags & ~(REC_FLAG_CHUNKED | REC_FLAG_JUMP | REC_FLAG_VER | REC_FLAG_TOMB)))
		return -EBADMSG;
	/* a tombstone's copy is a RELOC of nothing, and says whose version */
	if ((h->flags & REC_FLAG_TOMB) && (h->type != REC_RELOC || h->vlen || !(h->flags & REC_FLAG_VER)))
		return -EBADMSG;
	if (!!(h->flags & REC_FLAG_CHUNKED) != (h->vlen > REC_CHUNK_BYTES))
		return -EBADMSG;
	return 0;
}

uint32_t rec_hcrc(const uint8_t *hdr, const void *key, size_t klen, const void *table,
		  size_t tlen)
{
	uint32_t c = ovl_crc32c(0, hdr, REC_HDR_BYTES - 4);

	if (hdr[3] & REC_FLAG_VER)
		c = ovl_crc32c(c, hdr + REC_HDR_BYTES, REC_EXT_BYTES);

	c = ovl_crc32c(c, key, klen);
	if (tlen)
		c = ovl_crc32c(c, table, tlen);
	return c;
}

uint32_t rec_value_crcs(const void *val, uint64_t vlen, uint8_t *table)
{
	const uint8_t *v = val;

	if (vlen > REC_CHUNK_BYTES && table) {
		for (uint64_t off = 0, i = 0; off < vlen; off += REC_CHUNK_BYTES, i++) {
			uint64_t n = vlen - off < REC_CHUNK_BYTES ? vlen - off : REC_CHUNK_BYTES;

			le_put32(table + 4 * i, ovl_crc32c(0, v + off, n));
		}
	}
	return ovl_crc32c(0, val, vlen);
}

int rec_check(const uint8_t *rec, size_t avail, struct rec_hdr *h)
{
	size_t tlen;
	const uint8_t *key, *table, *val;

	if (avail < REC_HDR_BYTES || rec_hdr_unpack(rec, h) < 0)
		return -EBADMSG;
	tlen = rec_table_bytes(h->vlen);
	if (rec_hsize(h) > avail)
		return -EBADMSG;
	rec_ext_get(rec, h);
	key = rec + rec_key_off(h);
	table = key + h->klen;
	val = table + tlen;
	if (rec_hcrc(rec, key, h->klen, table, tlen) != h->hcrc)
		return -EIO;
	if (ovl_crc32c(0, val, h->vlen) != h->vcrc)
		return -EIO;
	return 0;
}
