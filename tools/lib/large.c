/*
 * libshelf's large objects (shelf.h, "Large objects and streaming";
 * docs/PROTOCOL.md, "Large objects"): chunk and intent keys, the manifest,
 * the escape rule, and the PUT and GET of any size from a source to a sink,
 * built on the one-object calls of shelf.c (sh_obj_*).
 *
 * Chunks move through chunk_put() and chunk_get(), one request each: the
 * unit the parallel engine runs several of at a time once it exists. The
 * loops below fill and drain a window of chunks; without that engine the
 * window is one chunk, so memory is one chunk's buffer whatever
 * shelf_set_inflight() says.
 */
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shelf_int.h"

/* ---- encoding ------------------------------------------------------------- */

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const uint8_t *p)
{
	return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

static bool is_magic(const void *buf, size_t len)
{
	return len >= SH_MANIFEST_MAGIC_BYTES &&
	       memcmp(buf, SH_MANIFEST_MAGIC, SH_MANIFEST_MAGIC_BYTES) == 0;
}

static uint64_t unix_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

bool sh_key_reserved(const void *key, size_t klen)
{
	const uint8_t *k = key;

	if (klen < SH_RESERVED_PREFIX_BYTES)
		return false;
	for (size_t i = 0; i < SH_RESERVED_PREFIX_BYTES; i++)
		if (k[i] != SH_RESERVED_BYTE)
			return false;
	return true;
}

void sh_chunk_key(uint8_t out[SH_CHUNK_KEY_BYTES], const uint8_t id[SH_LARGE_ID_BYTES],
		  uint32_t index)
{
	memset(out, SH_RESERVED_BYTE, SH_RESERVED_PREFIX_BYTES);
	out[SH_RESERVED_PREFIX_BYTES] = SH_CHUNK_TAG;
	memcpy(out + SH_RESERVED_PREFIX_BYTES + 1, id, SH_LARGE_ID_BYTES);
	for (int i = 0; i < 4; i++)
		out[SH_CHUNK_KEY_BYTES - 4 + i] = (uint8_t)(index >> (24 - 8 * i));
}

void sh_intent_key(uint8_t out[SH_INTENT_KEY_BYTES], const uint8_t id[SH_LARGE_ID_BYTES])
{
	memset(out, SH_RESERVED_BYTE, SH_RESERVED_PREFIX_BYTES);
	out[SH_RESERVED_PREFIX_BYTES] = SH_INTENT_TAG;
	memcpy(out + SH_RESERVED_PREFIX_BYTES + 1, id, SH_LARGE_ID_BYTES);
}

/* A new write's id: unix ms (big-endian), then 8 random bytes. */
static void new_id(uint8_t id[SH_LARGE_ID_BYTES])
{
	uint64_t ms = unix_ms();

	for (int i = 0; i < 8; i++)
		id[i] = (uint8_t)(ms >> (56 - 8 * i));
	randombytes_buf(id + 8, SH_LARGE_ID_BYTES - 8);
}

static void hex(const uint8_t *b, size_t n, char *out)
{
	static const char d[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = d[b[i] >> 4];
		out[2 * i + 1] = d[b[i] & 15];
	}
	out[2 * n] = '\0';
}

/* ---- the manifest ----------------------------------------------------------- */

static uint64_t manifest_bytes(uint64_t n)
{
	return SH_MANIFEST_HEAD_BYTES + SH_MANIFEST_ENTRY_BYTES * n + SH_MANIFEST_TAIL_BYTES;
}

bool sh_manifest_candidate(uint64_t stored)
{
	return stored >= manifest_bytes(1) &&
	       (stored - manifest_bytes(0)) % SH_MANIFEST_ENTRY_BYTES == 0;
}

int sh_manifest_head(const uint8_t *buf, size_t len, uint64_t stored, struct sh_manifest *m,
		     char *why, size_t whylen)
{
	uint32_t version, flags;
	uint64_t want;

	memset(m, 0, sizeof(*m));
	if (!is_magic(buf, len))
		return -ENOMSG;
	if (len < SH_MANIFEST_HEAD_BYTES)
		return sh_fail(why, whylen, -EBADMSG, "%zu bytes, shorter than the %u-byte head", len,
			       SH_MANIFEST_HEAD_BYTES);
	version = get_le32(buf + 16);
	flags = get_le32(buf + 20);
	m->size = get_le64(buf + 24);
	m->chunk_size = get_le64(buf + 32);
	m->n = get_le32(buf + 40);
	m->crc = get_le32(buf + 44);
	memcpy(m->id, buf + 48, SH_LARGE_ID_BYTES);
	if (version != SH_MANIFEST_VERSION)
		return sh_fail(why, whylen, -EBADMSG, "version %u (this client reads %u)", version,
			       SH_MANIFEST_VERSION);
	if (flags)
		return sh_fail(why, whylen, -EBADMSG, "flags %#x (none are defined)", flags);
	if (m->chunk_size < OVL_MSG_CHUNK_SIZE_MIN || m->chunk_size > OVL_MSG_CHUNK_SIZE_MAX ||
	    m->chunk_size % OVL_MSG_CHUNK_SIZE_ALIGN)
		return sh_fail(why, whylen, -EBADMSG, "chunk size %llu is not 1 MiB..64 MiB in "
			       "multiples of 64 KiB", (unsigned long long)m->chunk_size);
	if (m->n < 1 || m->n > SH_MANIFEST_CHUNKS_MAX)
		return sh_fail(why, whylen, -EBADMSG, "chunk count %u is not 1..%u", m->n,
			       SH_MANIFEST_CHUNKS_MAX);
	want = m->size / m->chunk_size + (m->size % m->chunk_size != 0);
	if (want != m->n)
		return sh_fail(why, whylen, -EBADMSG, "%u chunks for %llu bytes in chunks of %llu "
			       "(that takes %llu)", m->n, (unsigned long long)m->size,
			       (unsigned long long)m->chunk_size, (unsigned long long)want);
	if (stored != manifest_bytes(m->n))
		return sh_fail(why, whylen, -EBADMSG, "%llu bytes long, but %u chunks take %llu",
			       (unsigned long long)stored, m->n,
			       (unsigned long long)manifest_bytes(m->n));
	return 0;
}

int sh_manifest_parse(const uint8_t *buf, size_t len, struct sh_manifest *m, char *why,
		      size_t whylen)
{
	uint64_t sum = 0;
	size_t body;
	int ret = sh_manifest_head(buf, len, len, m, why, whylen);

	if (ret < 0)
		return ret;
	body = len - SH_MANIFEST_TAIL_BYTES;
	if (ovl_crc32c(0, buf, body) != get_le32(buf + body))
		return sh_fail(why, whylen, -EBADMSG, "checksum mismatch (crc32c %08x, stored %08x)",
			       ovl_crc32c(0, buf, body), get_le32(buf + body));
	m->entries = buf + SH_MANIFEST_HEAD_BYTES;
	for (uint32_t i = 0; i < m->n; i++) {
		uint64_t off;
		uint32_t size, crc;

		sh_manifest_entry(m, i, &off, &size, &crc);
		if (off != sum)
			return sh_fail(why, whylen, -EBADMSG, "chunk %u starts at %llu, not %llu "
				       "(chunks must follow each other)", i,
				       (unsigned long long)off, (unsigned long long)sum);
		if (i + 1 < m->n ? size != m->chunk_size : size < 1 || size > m->chunk_size)
			return sh_fail(why, whylen, -EBADMSG, "chunk %u holds %u bytes (chunk size "
				       "%llu)", i, size, (unsigned long long)m->chunk_size);
		sum += size;
	}
	if (sum != m->size)
		return sh_fail(why, whylen, -EBADMSG, "chunks hold %llu bytes, the object %llu",
			       (unsigned long long)sum, (unsigned long long)m->size);
	return 0;
}

void sh_manifest_entry(const struct sh_manifest *m, uint32_t i, uint64_t *off, uint32_t *size,
		       uint32_t *crc)
{
	const uint8_t *e = m->entries + (size_t)i * SH_MANIFEST_ENTRY_BYTES;

	*off = get_le64(e);
	*size = get_le32(e + 8);
	*crc = get_le32(e + 12);
}

/* ---- helpers ------------------------------------------------------------------ */

/* The key as errors show it: its first 64 bytes, "..." when longer. */
static void key_show(const void *key, size_t klen, char out[80])
{
	snprintf(out, 80, "%.*s%s", (int)(klen < 64 ? klen : 64), (const char *)key,
		 klen > 64 ? "..." : "");
}

static int key_check(const char *what, const char *slice, const void *key, size_t klen,
		     const char *kshow, char *err, size_t errlen)
{
	if (!slice || !*slice)
		return sh_fail(err, errlen, -EINVAL, "%s '%s': no slice named", what, kshow);
	if (klen == 0 || klen > OVL_WIRE_KEY_MAX_BYTES)
		return sh_fail(err, errlen, -EINVAL,
			       "%s '%s': a key is 1 to %u bytes long, and this one is %zu bytes",
			       what, kshow, OVL_WIRE_KEY_MAX_BYTES, klen);
	if (sh_key_reserved(key, klen))
		return sh_fail(err, errlen, -EINVAL, "%s '%s': key begins with the reserved prefix "
			       "fe×8 (libshelf's own chunks and intents)", what, kshow);
	return 0;
}

/* What follows "what 'KEY': " in an error of sh_obj_* on a reserved key
 * (whose text stops at the key's first zero byte or quote). */
static const char *inner(const char *e)
{
	const char *p = strstr(e, "': ");

	return p ? p + 3 : e;
}

/* The progress of one chunk's request, as the whole transfer's. */
struct prog {
	shelf_progress_cb cb;
	void *arg;
	uint64_t base;   /* bytes before this chunk */
	uint64_t total;  /* SHELF_SIZE_UNKNOWN: not known */
};

static void prog_chunk(void *arg, uint64_t done, uint64_t total)
{
	struct prog *p = arg;
	uint64_t at = p->base + done;

	(void)total;
	p->cb(p->arg, at, p->total == SHELF_SIZE_UNKNOWN || p->total < at ? at : p->total);
}

/* Route s's progress through p while a large transfer runs; prog_end()
 * puts it back. */
static void prog_begin(struct shelf *s, struct prog *p, uint64_t total)
{
	memset(p, 0, sizeof(*p));
	p->cb = s->progress;
	p->arg = s->progress_arg;
	p->total = total;
	if (p->cb) {
		s->progress = prog_chunk;
		s->progress_arg = p;
	}
}

static void prog_end(struct shelf *s, struct prog *p)
{
	if (p->cb) {
		s->progress = p->cb;
		s->progress_arg = p->arg;
	}
}

/* The id and chunk count of the manifest key holds now, if it holds one:
 * 1 (found), 0 (none, or it could not be told), or -ENOMEM. */
static int old_manifest(struct shelf *s, const char *slice, const void *key, size_t klen,
			uint8_t id[SH_LARGE_ID_BYTES], uint32_t *n)
{
	struct sh_objinfo info;
	struct sh_manifest m;
	uint8_t *head = NULL;
	size_t hlen = 0;
	char e2[SHELF_ERR_BYTES], why[160];
	int ret = sh_obj_stat(s, slice, key, klen, &info, e2, sizeof(e2));

	if (ret < 0)
		return ret == -ENOMEM ? ret : 0; /* nothing there, or the write will say */
	if (!sh_manifest_candidate(info.size))
		return 0;
	ret = sh_obj_get(s, slice, key, klen, 0, SH_MANIFEST_HEAD_BYTES, &head, &hlen, &info, e2,
			 sizeof(e2));
	if (ret == 0 && sh_manifest_head(head, hlen, info.size, &m, why, sizeof(why)) == 0) {
		memcpy(id, m.id, SH_LARGE_ID_BYTES);
		*n = m.n;
		ret = 1;
	}
	free(head);
	return ret == -ENOMEM ? ret : ret == 1;
}

/* Write intent(id): chunks of id may be collected unless key's manifest
 * names id (docs/PROTOCOL.md, "Intents"). */
static int intent_put(struct shelf *s, const char *slice, const uint8_t id[SH_LARGE_ID_BYTES],
		      uint32_t count, const void *key, size_t klen, char *err, size_t errlen)
{
	uint8_t ik[SH_INTENT_KEY_BYTES], *v = malloc(SH_INTENT_HEAD_BYTES + klen);
	char e2[SHELF_ERR_BYTES], h[2 * SH_LARGE_ID_BYTES + 1];
	int ret;

	if (!v)
		return -ENOMEM;
	memcpy(v, SH_INTENT_MAGIC, 4);
	put_le32(v + 4, count);
	put_le64(v + 8, unix_ms());
	memcpy(v + SH_INTENT_HEAD_BYTES, key, klen);
	sh_intent_key(ik, id);
	ret = sh_obj_put(s, slice, ik, sizeof(ik), v, SH_INTENT_HEAD_BYTES + klen, e2, sizeof(e2));
	free(v);
	if (ret < 0) {
		hex(id, SH_LARGE_ID_BYTES, h);
		sh_fail(err, errlen, ret, "intent of write %s: %s", h, inner(e2));
	}
	return ret;
}

/* ---- chunks: the unit several of which will be in flight --------------------- */

static void chunk_name(char *out, size_t len, uint32_t i, uint32_t n,
		       const uint8_t id[SH_LARGE_ID_BYTES])
{
	uint8_t ck[SH_CHUNK_KEY_BYTES];
	char h[2 * SH_CHUNK_KEY_BYTES + 1];

	sh_chunk_key(ck, id, i);
	hex(ck, sizeof(ck), h);
	if (n == SH_INTENT_COUNT_UNKNOWN)
		snprintf(out, len, "chunk %u (key %s)", i, h);
	else
		snprintf(out, len, "chunk %u of %u (key %s)", i, n, h);
}

/* PUT chunk i of write id. */
static int chunk_put(struct shelf *s, const char *slice, const uint8_t id[SH_LARGE_ID_BYTES],
		     uint32_t i, uint32_t n, const void *data, size_t len, char *err,
		     size_t errlen)
{
	uint8_t ck[SH_CHUNK_KEY_BYTES];
	char e2[SHELF_ERR_BYTES], name[128];
	int ret;

	sh_chunk_key(ck, id, i);
	ret = sh_obj_put(s, slice, ck, sizeof(ck), data, len, e2, sizeof(e2));
	if (ret < 0) {
		chunk_name(name, sizeof(name), i, n, id);
		sh_fail(err, errlen, ret, "%s: %s", name, inner(e2));
	}
	return ret;
}

/* GET chunk i of manifest m, checked against its entry: *data malloc'd
 * (the caller frees). -ENOENT (not found), -EIO (damaged), or the read's
 * error, each naming the chunk. */
static int chunk_get(struct shelf *s, const char *slice, const struct sh_manifest *m, uint32_t i,
		     uint8_t **data, char *err, size_t errlen)
{
	uint8_t ck[SH_CHUNK_KEY_BYTES];
	char e2[SHELF_ERR_BYTES], name[128];
	uint64_t off;
	uint32_t size, crc, got;
	size_t dlen = 0;
	int ret;

	*data = NULL;
	sh_manifest_entry(m, i, &off, &size, &crc);
	sh_chunk_key(ck, m->id, i);
	chunk_name(name, sizeof(name), i, m->n, m->id);
	ret = sh_obj_get(s, slice, ck, sizeof(ck), 0, UINT64_MAX, data, &dlen, NULL, e2, sizeof(e2));
	if (ret == -ENOENT)
		return sh_fail(err, errlen, ret, "%s: not found", name);
	if (ret < 0)
		return sh_fail(err, errlen, ret, "%s: %s", name, inner(e2));
	if (dlen != size || (got = ovl_crc32c(0, *data, dlen)) != crc) {
		ret = dlen != size ? sh_fail(err, errlen, -EIO, "%s: damaged: %zu bytes, the manifest "
					     "says %u", name, dlen, size)
				   : sh_fail(err, errlen, -EIO, "%s: damaged: crc32c %08x, the "
					     "manifest says %08x", name, got, crc);
		free(*data);
		*data = NULL;
	}
	return ret;
}

/* ---- sources ------------------------------------------------------------------ */

struct src {
	const uint8_t *mem;  /* a whole-buffer put: its bytes (chunks point into it) */
	shelf_read_fn rd;
	void *arg;
	uint64_t size;       /* SHELF_SIZE_UNKNOWN: to the end */
	uint64_t pos;        /* bytes given */
	int peek;            /* a byte read ahead to learn whether the end came, or -1 */
	bool eof;
};

/*
 * The next up to want bytes (fewer only at the end): *p points at them,
 * in buf (which holds want bytes) or in the caller's memory. The count, or
 * -errno from the callback (-EIO for a callback that gave more than asked).
 */
static ssize_t src_next(struct src *sr, uint8_t *buf, size_t want, const uint8_t **p)
{
	size_t got = 0;

	if (sr->size != SHELF_SIZE_UNKNOWN && want > sr->size - sr->pos)
		want = (size_t)(sr->size - sr->pos);
	if (sr->mem) {
		*p = sr->mem + sr->pos;
		sr->pos += want;
		return (ssize_t)want;
	}
	*p = buf;
	if (want && sr->peek >= 0) {
		buf[got++] = (uint8_t)sr->peek;
		sr->peek = -1;
	}
	while (got < want && !sr->eof) {
		ssize_t r = sr->rd(sr->arg, buf + got, want - got);

		if (r < 0)
			return r;
		if ((size_t)r > want - got)
			return -EIO;
		if (r == 0)
			sr->eof = true;
		got += (size_t)r;
	}
	sr->pos += got;
	return (ssize_t)got;
}

/* 1 when the source has nothing more, 0 when it has, or -errno. */
static int src_at_end(struct src *sr)
{
	uint8_t b;
	ssize_t r;

	if (sr->size != SHELF_SIZE_UNKNOWN || sr->mem)
		return sr->pos >= sr->size;
	if (sr->peek >= 0)
		return 0;
	while (!sr->eof) {
		r = sr->rd(sr->arg, &b, 1);
		if (r < 0)
			return (int)r;
		if (r == 0)
			sr->eof = true;
		else {
			sr->peek = b;
			return 0;
		}
	}
	return 1;
}

/* ---- PUT ------------------------------------------------------------------------ */

/* An object stored as one plain value: the old manifest's chunks (if key
 * held one) are named in an intent first. */
static int small_put(struct shelf *s, const char *slice, const void *key, size_t klen,
		     const char *kshow, const void *data, size_t len, char *err, size_t errlen)
{
	uint8_t old[SH_LARGE_ID_BYTES];
	uint32_t n = 0;
	char e2[SHELF_ERR_BYTES];
	int ret = old_manifest(s, slice, key, klen, old, &n);

	if (ret == 1)
		ret = intent_put(s, slice, old, n, key, klen, e2, sizeof(e2));
	if (ret < 0)
		return ret == -ENOMEM ? ret : sh_fail(err, errlen, ret, "put '%s': %s", kshow, e2);
	return sh_obj_put(s, slice, key, klen, data, len, err, errlen);
}

/* The chunks, then the manifest (shelf.h; docs/PROTOCOL.md "Writes"). The
 * first chunk's bytes may be read already (first, nfirst). */
static int large_put(struct shelf *s, const char *slice, const void *key, size_t klen,
		     const char *kshow, uint64_t cs, struct src *sr, uint8_t *buf,
		     const uint8_t *first, size_t nfirst, char *err, size_t errlen)
{
	uint8_t old[SH_LARGE_ID_BYTES], id[SH_LARGE_ID_BYTES], *man = NULL;
	uint64_t n_known = SH_INTENT_COUNT_UNKNOWN, total = 0, intent_ms;
	uint64_t max_n = (OVL_WIRE_OBJECT_MAX_BYTES - manifest_bytes(0)) / SH_MANIFEST_ENTRY_BYTES;
	uint32_t n_old = 0, whole = 0, i = 0;
	size_t cap = 0;
	char e2[SHELF_ERR_BYTES];
	struct prog pg;
	int ret;

	if (max_n > SH_MANIFEST_CHUNKS_MAX)
		max_n = SH_MANIFEST_CHUNKS_MAX;
	if (sr->size != SHELF_SIZE_UNKNOWN) {
		n_known = sr->size / cs + (sr->size % cs != 0);
		if (n_known > max_n)
			return sh_fail(err, errlen, -EFBIG, "put '%s': %llu bytes is more than one "
				       "manifest can list at chunk size %llu (at most %llu bytes)",
				       kshow, (unsigned long long)sr->size, (unsigned long long)cs,
				       (unsigned long long)(max_n * cs));
	}
	prog_begin(s, &pg, sr->size);
	ret = old_manifest(s, slice, key, klen, old, &n_old);
	if (ret == 1)
		ret = intent_put(s, slice, old, n_old, key, klen, e2, sizeof(e2));
	new_id(id);
	if (ret >= 0)
		ret = intent_put(s, slice, id, (uint32_t)n_known, key, klen, e2, sizeof(e2));
	intent_ms = ovl_mono_ms();
	if (ret < 0)
		goto fail;
	cap = n_known != SH_INTENT_COUNT_UNKNOWN ? (size_t)n_known : 64;
	man = malloc(manifest_bytes(cap));
	if (!man) {
		ret = -ENOMEM;
		goto out;
	}
	/* a window of chunks: fill one, send it, next (the parallel engine
	 * will keep up to s->inflight of them going) */
	for (;;) {
		const uint8_t *p = NULL;
		ssize_t len;

		if (sr->size != SHELF_SIZE_UNKNOWN && total == sr->size)
			break;
		if (i == 0 && first) {
			p = first;
			len = (ssize_t)nfirst;
		} else {
			len = src_next(sr, buf, (size_t)cs, &p);
		}
		if (len < 0) {
			ret = (int)len;
			snprintf(e2, sizeof(e2), "reading the source: %s", strerror(-ret));
			goto fail;
		}
		if (len == 0 && sr->size == SHELF_SIZE_UNKNOWN)
			break;
		if (sr->size != SHELF_SIZE_UNKNOWN &&
		    (uint64_t)len < (sr->size - total < cs ? sr->size - total : cs)) {
			ret = -EIO;
			snprintf(e2, sizeof(e2), "the source ended after %llu of %llu bytes",
				 (unsigned long long)(total + (uint64_t)len),
				 (unsigned long long)sr->size);
			goto fail;
		}
		if (i >= max_n) {
			ret = -EFBIG;
			snprintf(e2, sizeof(e2), "more than one manifest can list at chunk size %llu "
				 "(at most %llu bytes)", (unsigned long long)cs,
				 (unsigned long long)(max_n * cs));
			goto fail;
		}
		if (i == cap) {
			uint8_t *g = realloc(man, manifest_bytes((uint64_t)cap * 2));

			if (!g) {
				ret = -ENOMEM;
				goto out;
			}
			man = g;
			cap *= 2;
		}
		{
			uint8_t *e = man + SH_MANIFEST_HEAD_BYTES + (size_t)i * SH_MANIFEST_ENTRY_BYTES;

			put_le64(e, total);
			put_le32(e + 8, (uint32_t)len);
			put_le32(e + 12, ovl_crc32c(0, p, (size_t)len));
		}
		whole = ovl_crc32c(whole, p, (size_t)len);
		pg.base = total;
		ret = chunk_put(s, slice, id, i, (uint32_t)n_known, p, (size_t)len, e2, sizeof(e2));
		if (ret < 0)
			goto fail;
		total += (uint64_t)len;
		i++;
		if (sr->size == SHELF_SIZE_UNKNOWN && (uint64_t)len < cs)
			break; /* src_next gives less only at the end */
		if (ovl_mono_ms() - intent_ms >= SH_INTENT_REFRESH_MS) {
			/* a long PUT: its intent must look young to the collectors */
			ret = intent_put(s, slice, id, (uint32_t)n_known, key, klen, e2, sizeof(e2));
			if (ret < 0)
				goto fail;
			intent_ms = ovl_mono_ms();
		}
	}
	memcpy(man, SH_MANIFEST_MAGIC, SH_MANIFEST_MAGIC_BYTES);
	put_le32(man + 16, SH_MANIFEST_VERSION);
	put_le32(man + 20, 0);
	put_le64(man + 24, total);
	put_le64(man + 32, cs);
	put_le32(man + 40, i);
	put_le32(man + 44, whole);
	memcpy(man + 48, id, SH_LARGE_ID_BYTES);
	put_le32(man + manifest_bytes(i) - SH_MANIFEST_TAIL_BYTES,
		 ovl_crc32c(0, man, manifest_bytes(i) - SH_MANIFEST_TAIL_BYTES));
	prog_end(s, &pg);
	/* the object appears now, whole */
	ret = sh_obj_put(s, slice, key, klen, man, manifest_bytes(i), e2, sizeof(e2));
	if (ret < 0)
		sh_fail(err, errlen, ret, "put '%s': manifest: %s", kshow, inner(e2));
	goto out;
fail:
	if (ret != -ENOMEM)
		sh_fail(err, errlen, ret, "put '%s': %s", kshow, e2);
out:
	prog_end(s, &pg);
	free(man);
	return ret;
}

int sh_large_put(struct shelf *s, const char *slice, const void *key, size_t klen,
		 const void *data, uint64_t size, shelf_read_fn rd, void *arg, char *err,
		 size_t errlen)
{
	struct src sr = { .mem = data, .rd = rd, .arg = arg, .size = size, .peek = -1 };
	struct sh_map *m = NULL;
	uint8_t *buf = NULL;
	const uint8_t *p = NULL;
	char kshow[80];
	uint64_t cs;
	size_t want;
	ssize_t got = 0;
	int ret;

	key_show(key, klen, kshow);
	ret = key_check("put", slice, key, klen, kshow, err, errlen);
	if (ret < 0)
		return ret;
	sh_op_begin(s);
	ret = sh_map_get(s, slice, &m, err, errlen);
	if (ret < 0)
		return ret;
	cs = ovl_msg_map_chunk_size(&m->msg.u.map);
	if (data) {
		if (size <= cs && !is_magic(data, (size_t)size))
			return small_put(s, slice, key, klen, kshow, data, (size_t)size, err, errlen);
		return large_put(s, slice, key, klen, kshow, cs, &sr, NULL, NULL, 0, err, errlen);
	}
	/* a stream: its first chunk's worth tells a small object from a large one */
	want = (size_t)(size != SHELF_SIZE_UNKNOWN && size < cs ? size : cs);
	buf = malloc(want ? want : 1);
	if (!buf)
		return -ENOMEM;
	got = src_next(&sr, buf, want, &p);
	ret = got < 0 ? (int)got : src_at_end(&sr);
	if (ret < 0) {
		sh_fail(err, errlen, ret, "put '%s': reading the source: %s", kshow, strerror(-ret));
		goto out;
	}
	if (size != SHELF_SIZE_UNKNOWN && (size_t)got < want) {
		ret = sh_fail(err, errlen, -EIO, "put '%s': the source ended after %zd of %llu bytes",
			      kshow, got, (unsigned long long)size);
		goto out;
	}
	if (ret == 1 && !is_magic(p, (size_t)got))
		ret = small_put(s, slice, key, klen, kshow, p, (size_t)got, err, errlen);
	else
		ret = large_put(s, slice, key, klen, kshow, cs, &sr, buf, p, (size_t)got, err,
				errlen);
out:
	free(buf);
	return ret;
}

/* ---- GET ------------------------------------------------------------------------ */

/* Where a GET's bytes go: a callback, or one buffer for the whole range. */
struct sink {
	shelf_write_fn wr;
	void *arg;
	uint8_t *buf;     /* whole-buffer mode: malloc'd, the range's size */
	size_t len;       /* bytes in buf */
};

static int sink_put(struct sink *k, const uint8_t *p, size_t len)
{
	if (k->wr)
		return len ? k->wr(k->arg, p, len) : 0;
	memcpy(k->buf + k->len, p, len);
	k->len += len;
	return 0;
}

/* A plain object's bytes (data, consumed) to the sink. */
static int sink_take(struct sink *k, uint8_t **data, size_t len)
{
	int ret = 0;

	if (k->wr) {
		ret = len ? k->wr(k->arg, *data, len) : 0;
		free(*data);
	} else {
		k->buf = *data;
		k->len = len;
	}
	*data = NULL;
	return ret;
}

static bool same_version(const struct sh_objinfo *a, const struct sh_objinfo *b)
{
	if (a->size != b->size)
		return false;
	if (!a->has_ver || !b->has_ver)
		return true; /* a node that predates versions: the size must do */
	return a->ver.hlc == b->ver.hlc && a->ver.node == b->ver.node;
}

/* [off, off+len) of the object manifest m describes, chunk by chunk, each
 * checked before any of its bytes reach the sink. */
static int read_chunks(struct shelf *s, const char *slice, const char *kshow,
		       const struct sh_manifest *m, uint64_t off, uint64_t len, struct sink *k,
		       char *err, size_t errlen)
{
	uint64_t end, first, fetch_total = 0, fetched = 0;
	uint32_t whole = 0;
	bool full;
	char e2[SHELF_ERR_BYTES];
	struct prog pg;
	int ret = 0;

	if (off > m->size)
		off = m->size;
	end = len == UINT64_MAX || len > m->size - off ? m->size : off + len;
	full = off == 0 && end == m->size;
	if (!k->wr) {
		if (end - off > SIZE_MAX - 1)
			return sh_fail(err, errlen, -EFBIG, "get '%s': %llu bytes do not fit in memory: "
				       "read it to a file", kshow, (unsigned long long)(end - off));
		k->buf = malloc(end - off ? (size_t)(end - off) : 1);
		if (!k->buf)
			return sh_fail(err, errlen, -ENOMEM, "get '%s': no memory for %llu bytes", kshow,
				       (unsigned long long)(end - off));
		k->len = 0;
	}
	first = off / m->chunk_size;
	if (end > off) {
		/* the chunks' bytes fetched: whole chunks, the last one maybe short */
		uint64_t last_end = ((end - 1) / m->chunk_size + 1) * m->chunk_size;

		fetch_total = (last_end < m->size ? last_end : m->size) - first * m->chunk_size;
	}
	prog_begin(s, &pg, fetch_total);
	/* a window of chunks: fetch one, check it, give it, next (the parallel
	 * engine will keep up to s->inflight fetches going) */
	for (uint64_t i = first; i < m->n && ret == 0; i++) {
		uint64_t coff, from, to;
		uint32_t csize, ccrc;
		uint8_t *data = NULL;

		sh_manifest_entry(m, (uint32_t)i, &coff, &csize, &ccrc);
		if (coff >= end)
			break;
		pg.base = fetched;
		ret = chunk_get(s, slice, m, (uint32_t)i, &data, e2, sizeof(e2));
		if (ret < 0) {
			sh_fail(err, errlen, ret, "get '%s': %s", kshow, e2);
			break;
		}
		fetched += csize;
		if (full)
			whole = ovl_crc32c(whole, data, csize);
		from = off > coff ? off - coff : 0;
		to = end < coff + csize ? end - coff : csize;
		ret = sink_put(k, data + from, (size_t)(to - from));
		free(data);
		if (ret < 0)
			sh_fail(err, errlen, ret, "get '%s': writing: %s", kshow, strerror(-ret));
	}
	prog_end(s, &pg);
	if (ret == 0 && full && whole != m->crc)
		ret = sh_fail(err, errlen, -EIO, "get '%s': the chunks' bytes have crc32c %08x, the "
			      "manifest says %08x", kshow, whole, m->crc);
	return ret;
}

/* The GET behind shelf_get (whole, wlen) and shelf_get_stream (wr). */
int sh_large_get(struct shelf *s, const char *slice, const void *key, size_t klen, uint64_t off,
		 uint64_t len, shelf_write_fn wr, void *arg, void **whole, size_t *wlen,
		 uint64_t *total, char *err, size_t errlen)
{
	struct sink k = { .wr = wr, .arg = arg };
	char kshow[80], why[256];
	bool done = false;
	int ret;

	if (whole) {
		*whole = NULL;
		*wlen = 0;
	}
	key_show(key, klen, kshow);
	ret = key_check("get", slice, key, klen, kshow, err, errlen);
	if (ret < 0)
		return ret;
	/* the object may change between requests: each answer is checked to
	 * be of the version the first one had, else it is read again */
	for (int attempt = 0; attempt < 3; attempt++) {
		struct sh_objinfo info, info2;
		struct sh_manifest m;
		uint8_t *data = NULL, *head = NULL;
		size_t dlen = 0, hlen = 0;
		bool man;

		/* nodes refuse offsets and lengths past the largest stored object;
		 * a plain object has no byte past it anyway */
		ret = sh_obj_get(s, slice, key, klen,
				 off < OVL_WIRE_OBJECT_MAX_BYTES ? off : OVL_WIRE_OBJECT_MAX_BYTES,
				 len < OVL_WIRE_OBJECT_MAX_BYTES || len == UINT64_MAX
					 ? len : OVL_WIRE_OBJECT_MAX_BYTES, &data,
				 &dlen, &info, err, errlen);
		if (ret < 0)
			return ret;
		if (total)
			*total = info.size;
		if (!sh_manifest_candidate(info.size)) {
			man = false;
		} else if (off == 0 && dlen >= SH_MANIFEST_MAGIC_BYTES) {
			man = is_magic(data, dlen);
		} else {
			ret = sh_obj_get(s, slice, key, klen, 0, SH_MANIFEST_MAGIC_BYTES, &head, &hlen,
					 &info2, err, errlen);
			man = ret == 0 && is_magic(head, hlen);
			free(head);
			if (ret < 0 || !same_version(&info, &info2)) {
				free(data);
				if (ret < 0 && ret != -ENOENT)
					return ret;
				continue;
			}
		}
		done = true;
		if (!man) {
			ret = sink_take(&k, &data, dlen);
			if (ret < 0)
				sh_fail(err, errlen, ret, "get '%s': writing: %s", kshow, strerror(-ret));
			break;
		}
		if (!(off == 0 && dlen == info.size)) {
			/* the whole manifest: whatever version it is now is whole */
			free(data);
			data = NULL;
			ret = sh_obj_get(s, slice, key, klen, 0, UINT64_MAX, &data, &dlen, &info2, err,
					 errlen);
			if (ret < 0)
				return ret;
			if (!is_magic(data, dlen)) {
				free(data);
				done = false;
				continue; /* replaced by a small object meanwhile: read it */
			}
		}
		ret = sh_manifest_parse(data, dlen, &m, why, sizeof(why));
		if (ret < 0) {
			sh_fail(err, errlen, -EBADMSG, "get '%s': damaged manifest: %s", kshow, why);
			free(data);
			return -EBADMSG;
		}
		if (total)
			*total = m.size;
		ret = read_chunks(s, slice, kshow, &m, off, len, &k, err, errlen);
		free(data);
		break;
	}
	if (!done)
		ret = sh_fail(err, errlen, -EAGAIN, "get '%s': the object changed under every one of "
			      "3 reads; try again", kshow);
	if (ret == 0 && whole) {
		*whole = k.buf ? k.buf : malloc(1);
		*wlen = k.len;
		k.buf = NULL;
		if (!*whole)
			ret = -ENOMEM;
	}
	free(k.buf);
	return ret;
}

int sh_large_stat(struct shelf *s, const char *slice, const void *key, size_t klen,
		  struct shelf_objstat *st, char *err, size_t errlen)
{
	char kshow[80], why[256];
	int ret;

	key_show(key, klen, kshow);
	ret = key_check("stat", slice, key, klen, kshow, err, errlen);
	for (int attempt = 0; ret == 0 && attempt < 3; attempt++) {
		struct sh_objinfo info, info2;
		struct sh_manifest m;
		uint8_t *head = NULL;
		size_t hlen = 0;

		ret = sh_obj_stat(s, slice, key, klen, &info, err, errlen);
		if (ret < 0)
			break;
		st->size = info.size;
		st->crc = info.crc;
		st->seq = info.seq;
		st->ver.hlc = info.ver.hlc;
		st->ver.node = info.ver.node;
		if (!sh_manifest_candidate(info.size))
			break;
		ret = sh_obj_get(s, slice, key, klen, 0, SH_MANIFEST_HEAD_BYTES, &head, &hlen, &info2,
				 err, errlen);
		if (ret == 0 && !same_version(&info, &info2)) {
			free(head);
			continue; /* replaced meanwhile */
		}
		if (ret == 0) {
			ret = sh_manifest_head(head, hlen, info2.size, &m, why, sizeof(why));
			if (ret == 0) {
				st->size = m.size;
				st->crc = m.crc;
			} else if (ret == -ENOMSG) {
				ret = 0;
			} else {
				sh_fail(err, errlen, ret, "stat '%s': damaged manifest: %s", kshow, why);
			}
		}
		free(head);
		if (ret != -ENOENT)
			break;
		ret = 0; /* deleted between the two: stat again */
	}
	return ret;
}

int sh_large_delete(struct shelf *s, const char *slice, const void *key, size_t klen, char *err,
		    size_t errlen)
{
	uint8_t old[SH_LARGE_ID_BYTES];
	uint32_t n = 0;
	char kshow[80], e2[SHELF_ERR_BYTES];
	int ret;

	key_show(key, klen, kshow);
	ret = key_check("rm", slice, key, klen, kshow, err, errlen);
	if (ret < 0)
		return ret;
	/* its chunks outlive it by the collectors' delay: a reader that
	 * started on it can finish */
	ret = old_manifest(s, slice, key, klen, old, &n);
	if (ret == 1)
		ret = intent_put(s, slice, old, n, key, klen, e2, sizeof(e2));
	if (ret < 0)
		return ret == -ENOMEM ? ret : sh_fail(err, errlen, ret, "rm '%s': %s", kshow, e2);
	return sh_obj_delete(s, slice, key, klen, err, errlen);
}
