/*
 * ovl_large: the byte formats of large objects (see ovl_large.h).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ovl_crc32c.h"
#include "ovl_large.h"

const uint8_t ovl_large_magic[OVL_LARGE_MAGIC_BYTES] = {
	0x89, 's', 'h', 'e', 'l', 'f', '-', 'm', 'a', 'n', 'i', 'f', 'e', 's', 't', '\n',
};

static const uint8_t intent_magic[4] = { 'S', 'G', 'I', '1' };

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

static int bad(char *why, size_t whylen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int bad(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	if (why && whylen) {
		va_start(ap, fmt);
		vsnprintf(why, whylen, fmt, ap);
		va_end(ap);
	}
	return -EBADMSG;
}

bool ovl_large_key_reserved(const void *key, size_t klen)
{
	const uint8_t *k = key;

	if (klen < OVL_LARGE_PREFIX_BYTES)
		return false;
	for (size_t i = 0; i < OVL_LARGE_PREFIX_BYTES; i++)
		if (k[i] != OVL_LARGE_PREFIX_BYTE)
			return false;
	return true;
}

static void key_head(uint8_t *out, uint8_t kind, const uint8_t id[OVL_LARGE_ID_BYTES])
{
	memset(out, OVL_LARGE_PREFIX_BYTE, OVL_LARGE_PREFIX_BYTES);
	out[OVL_LARGE_PREFIX_BYTES] = kind;
	memcpy(out + OVL_LARGE_PREFIX_BYTES + 1, id, OVL_LARGE_ID_BYTES);
}

void ovl_large_chunk_key(uint8_t out[OVL_LARGE_CHUNK_KEY_BYTES], const uint8_t id[OVL_LARGE_ID_BYTES],
			 uint32_t index)
{
	key_head(out, OVL_LARGE_KIND_CHUNK, id);
	out[25] = (uint8_t)(index >> 24);
	out[26] = (uint8_t)(index >> 16);
	out[27] = (uint8_t)(index >> 8);
	out[28] = (uint8_t)index;
}

void ovl_large_intent_key(uint8_t out[OVL_LARGE_INTENT_KEY_BYTES],
			  const uint8_t id[OVL_LARGE_ID_BYTES])
{
	key_head(out, OVL_LARGE_KIND_INTENT, id);
}

void ovl_large_chunk_prefix(uint8_t out[OVL_LARGE_CHUNK_PREFIX_BYTES],
			    const uint8_t id[OVL_LARGE_ID_BYTES])
{
	key_head(out, OVL_LARGE_KIND_CHUNK, id);
}

int ovl_large_chunk_key_parse(const void *key, size_t klen, uint8_t id[OVL_LARGE_ID_BYTES],
			      uint32_t *index)
{
	const uint8_t *k = key;

	if (klen != OVL_LARGE_CHUNK_KEY_BYTES || !ovl_large_key_reserved(key, klen) ||
	    k[OVL_LARGE_PREFIX_BYTES] != OVL_LARGE_KIND_CHUNK)
		return -EINVAL;
	if (id)
		memcpy(id, k + OVL_LARGE_PREFIX_BYTES + 1, OVL_LARGE_ID_BYTES);
	if (index)
		*index = (uint32_t)k[25] << 24 | (uint32_t)k[26] << 16 | (uint32_t)k[27] << 8 | k[28];
	return 0;
}

int ovl_large_intent_key_parse(const void *key, size_t klen, uint8_t id[OVL_LARGE_ID_BYTES])
{
	const uint8_t *k = key;

	if (klen != OVL_LARGE_INTENT_KEY_BYTES || !ovl_large_key_reserved(key, klen) ||
	    k[OVL_LARGE_PREFIX_BYTES] != OVL_LARGE_KIND_INTENT)
		return -EINVAL;
	if (id)
		memcpy(id, k + OVL_LARGE_PREFIX_BYTES + 1, OVL_LARGE_ID_BYTES);
	return 0;
}

uint64_t ovl_large_id_ms(const uint8_t id[OVL_LARGE_ID_BYTES])
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | id[i];
	return v;
}

/* ---- the manifest ---- */

bool ovl_large_is_manifest(const void *buf, size_t len)
{
	return len >= OVL_LARGE_MAGIC_BYTES && memcmp(buf, ovl_large_magic, OVL_LARGE_MAGIC_BYTES) == 0;
}

uint64_t ovl_large_manifest_bytes(uint32_t n)
{
	return OVL_LARGE_MAN_HEAD_BYTES + 4 + (uint64_t)OVL_LARGE_MAN_ENTRY_BYTES * n;
}

bool ovl_large_size_may_be_manifest(uint64_t s)
{
	return s >= OVL_LARGE_MAN_MIN_BYTES && (s - OVL_LARGE_MAN_HEAD_BYTES - 4) % 16 == 0;
}

static bool chunk_size_ok(uint64_t cs)
{
	return cs >= OVL_LARGE_CHUNK_MIN_BYTES && cs <= OVL_LARGE_CHUNK_MAX_BYTES &&
	       cs % OVL_LARGE_CHUNK_ALIGN_BYTES == 0;
}

int ovl_large_head_parse(const void *buf, size_t len, uint64_t stored, struct ovl_large_head *h,
			 char *why, size_t whylen)
{
	const uint8_t *b = buf;
	uint32_t version, flags;
	uint64_t want;

	memset(h, 0, sizeof(*h));
	if (!ovl_large_is_manifest(buf, len)) {
		if (why && whylen)
			snprintf(why, whylen, "no manifest magic");
		return -ENOMSG;
	}
	if (len < OVL_LARGE_MAN_HEAD_BYTES)
		return bad(why, whylen, "%zu bytes, shorter than the 64-byte head", len);
	version = get32(b + 16);
	flags = get32(b + 20);
	h->size = get64(b + 24);
	h->chunk_size = get64(b + 32);
	h->n = get32(b + 40);
	h->crc = get32(b + 44);
	memcpy(h->id, b + 48, OVL_LARGE_ID_BYTES);
	if (version != OVL_LARGE_MAN_VERSION)
		return bad(why, whylen, "version %u (this reader knows %u)", version,
			   OVL_LARGE_MAN_VERSION);
	if (flags)
		return bad(why, whylen, "flags %#x (none are defined)", flags);
	if (!chunk_size_ok(h->chunk_size))
		return bad(why, whylen,
			   "chunk size %llu is not 1 MiB..64 MiB in multiples of 64 KiB",
			   (unsigned long long)h->chunk_size);
	if (h->n < 1 || h->n > OVL_LARGE_CHUNKS_MAX)
		return bad(why, whylen, "chunk count %u is not 1..%u", h->n, OVL_LARGE_CHUNKS_MAX);
	want = h->size ? (h->size - 1) / h->chunk_size + 1 : 0;
	if (want != h->n)
		return bad(why, whylen, "%u chunks for %llu bytes in chunks of %llu (that takes %llu)",
			   h->n,
			   (unsigned long long)h->size, (unsigned long long)h->chunk_size,
			   (unsigned long long)want);
	if (stored != UINT64_MAX && stored != ovl_large_manifest_bytes(h->n))
		return bad(why, whylen, "%llu bytes long, but %u chunks take %llu",
			   (unsigned long long)stored, h->n,
			   (unsigned long long)ovl_large_manifest_bytes(h->n));
	return 0;
}

int ovl_large_manifest_check(const void *buf, size_t len, struct ovl_large_head *h, char *why,
			     size_t whylen)
{
	struct ovl_large_head hh;
	const uint8_t *b = buf;
	uint64_t off = 0;
	size_t body;
	int ret;

	if (!h)
		h = &hh;
	ret = ovl_large_head_parse(buf, len, len, h, why, whylen);
	if (ret < 0)
		return ret;
	body = (size_t)ovl_large_manifest_bytes(h->n) - 4;
	if (ovl_crc32c(0, b, body) != get32(b + body))
		return bad(why, whylen, "checksum mismatch (crc32c %08x, stored %08x)",
			   ovl_crc32c(0, b, body), get32(b + body));
	for (uint32_t i = 0; i < h->n; i++) {
		struct ovl_large_entry e;

		ovl_large_manifest_entry(buf, i, &e);
		if (e.offset != off)
			return bad(why, whylen, "chunk %u starts at %llu, not %llu (chunks must follow "
				   "each other)", i, (unsigned long long)e.offset,
				   (unsigned long long)off);
		if (i + 1 < h->n ? e.size != h->chunk_size : e.size < 1 || e.size > h->chunk_size)
			return bad(why, whylen, "chunk %u holds %u bytes (chunk size %llu)", i, e.size,
				   (unsigned long long)h->chunk_size);
		off += e.size;
	}
	if (off != h->size)
		return bad(why, whylen, "chunks hold %llu bytes, the object %llu",
			   (unsigned long long)off, (unsigned long long)h->size);
	return 0;
}

void ovl_large_manifest_entry(const void *buf, uint32_t i, struct ovl_large_entry *e)
{
	const uint8_t *p = (const uint8_t *)buf + OVL_LARGE_MAN_HEAD_BYTES +
			   (size_t)i * OVL_LARGE_MAN_ENTRY_BYTES;

	e->offset = get64(p);
	e->size = get32(p + 8);
	e->crc = get32(p + 12);
}

int64_t ovl_large_manifest_encode(struct ovl_large_head *h, const uint32_t *crcs, uint8_t *out,
				  size_t cap)
{
	uint64_t n, len;
	uint8_t *p;

	if (!chunk_size_ok(h->chunk_size) || h->size == 0)
		return -EINVAL;
	n = (h->size - 1) / h->chunk_size + 1;
	if (n > OVL_LARGE_CHUNKS_MAX)
		return -EINVAL;
	h->n = (uint32_t)n;
	len = ovl_large_manifest_bytes(h->n);
	if (len > cap)
		return -ENOSPC;
	memcpy(out, ovl_large_magic, OVL_LARGE_MAGIC_BYTES);
	put32(out + 16, OVL_LARGE_MAN_VERSION);
	put32(out + 20, 0);
	put64(out + 24, h->size);
	put64(out + 32, h->chunk_size);
	put32(out + 40, h->n);
	put32(out + 44, h->crc);
	memcpy(out + 48, h->id, OVL_LARGE_ID_BYTES);
	p = out + OVL_LARGE_MAN_HEAD_BYTES;
	for (uint32_t i = 0; i < h->n; i++, p += OVL_LARGE_MAN_ENTRY_BYTES) {
		uint64_t off = (uint64_t)i * h->chunk_size;

		put64(p, off);
		put32(p + 8, (uint32_t)(i + 1 < h->n ? h->chunk_size : h->size - off));
		put32(p + 12, crcs[i]);
	}
	put32(p, ovl_crc32c(0, out, (size_t)len - 4));
	return (int64_t)len;
}

/* ---- the intent ---- */

int ovl_large_intent_parse(const void *buf, size_t len, struct ovl_large_intent *in, char *why,
			   size_t whylen)
{
	const uint8_t *b = buf;

	memset(in, 0, sizeof(*in));
	if (len < OVL_LARGE_INTENT_HEAD_BYTES)
		return bad(why, whylen, "%zu bytes, shorter than an intent's head (16)", len);
	if (memcmp(b, intent_magic, sizeof(intent_magic)) != 0)
		return bad(why, whylen, "no intent magic (SGI1)");
	if (len == OVL_LARGE_INTENT_HEAD_BYTES)
		return bad(why, whylen, "no object key");
	if (len - OVL_LARGE_INTENT_HEAD_BYTES > OVL_LARGE_INTENT_KEY_MAX)
		return bad(why, whylen, "an object key of %zu bytes (at most 1024)",
			   len - OVL_LARGE_INTENT_HEAD_BYTES);
	in->count = get32(b + 4);
	in->ms = get64(b + 8);
	in->key = b + OVL_LARGE_INTENT_HEAD_BYTES;
	in->klen = len - OVL_LARGE_INTENT_HEAD_BYTES;
	return 0;
}

int ovl_large_intent_encode(const struct ovl_large_intent *in, uint8_t *out, size_t cap)
{
	if (in->klen == 0 || in->klen > OVL_LARGE_INTENT_KEY_MAX)
		return -EINVAL;
	if (cap < OVL_LARGE_INTENT_HEAD_BYTES + in->klen)
		return -ENOSPC;
	memcpy(out, intent_magic, sizeof(intent_magic));
	put32(out + 4, in->count);
	put64(out + 8, in->ms);
	memcpy(out + OVL_LARGE_INTENT_HEAD_BYTES, in->key, in->klen);
	return (int)(OVL_LARGE_INTENT_HEAD_BYTES + in->klen);
}
