/*
 * libshelf's large objects (shelf.h, "Large objects and streaming";
 * docs/PROTOCOL.md, "Large objects"): chunk and intent keys, the manifest,
 * the escape rule, and the PUT and GET of any size from a source to a sink,
 * built on the one-object calls of shelf.c (sh_obj_*).
 *
 * The byte formats (keys, manifest, intent) are overlay/ovl_large's, shared
 * with the nodes' chunk collector. Chunks move in a window (struct mover):
 * up to shelf_set_inflight() of them at once through the asynchronous
 * engine (aio.c), each to its own key's nodes, from the caller's thread;
 * memory is that many chunk buffers whatever the object's size.
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

/* ---- keys and ids ----------------------------------------------------------- */

static uint64_t unix_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A new write's id: unix ms (big-endian), then 8 random bytes. */
static void new_id(uint8_t id[OVL_LARGE_ID_BYTES])
{
	uint64_t ms = unix_ms();

	for (int i = 0; i < 8; i++)
		id[i] = (uint8_t)(ms >> (56 - 8 * i));
	randombytes_buf(id + 8, OVL_LARGE_ID_BYTES - 8);
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
	if (ovl_large_key_reserved(key, klen))
		return sh_fail(err, errlen, -EINVAL, "%s '%s': key begins with the reserved prefix "
			       "fe×8 (libshelf's own chunks and intents)", what, kshow);
	return 0;
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
 * 1 (found), 0 (none, or it could not be told), or -ENOMEM. It gets at
 * most a fifth of the call's time: with replicas down, the read path may
 * ask many members, and the write itself must keep the time to go around
 * them (an old manifest not found leaves its chunks to no intent). */
static int old_manifest(struct shelf *s, const char *slice, const void *key, size_t klen,
			uint8_t id[OVL_LARGE_ID_BYTES], uint32_t *n)
{
	struct sh_objinfo info;
	struct ovl_large_head h;
	uint8_t *head = NULL;
	size_t hlen = 0;
	char e2[SHELF_ERR_BYTES], why[160];
	uint64_t end = s->deadline_ms, mine = ovl_mono_ms() + (uint64_t)sh_left_ms(s) / 5;
	int ret;

	if (mine < end)
		s->deadline_ms = mine;
	ret = sh_obj_stat(s, slice, key, klen, &info, e2, sizeof(e2));
	if (ret < 0 || !ovl_large_size_may_be_manifest(info.size)) {
		s->deadline_ms = end;
		return ret == -ENOMEM ? ret : 0; /* nothing there, or the write will say */
	}
	ret = sh_obj_get(s, slice, key, klen, 0, OVL_LARGE_MAN_HEAD_BYTES, &head, &hlen, &info, e2,
			 sizeof(e2));
	s->deadline_ms = end;
	if (ret == 0 && ovl_large_head_parse(head, hlen, info.size, &h, why, sizeof(why)) == 0) {
		memcpy(id, h.id, OVL_LARGE_ID_BYTES);
		*n = h.n;
		ret = 1;
	}
	free(head);
	return ret == -ENOMEM ? ret : ret == 1;
}

/* Write intent(id): chunks of id may be collected unless key's manifest
 * names id (docs/PROTOCOL.md, "Intents"). */
static int intent_put(struct shelf *s, const char *slice, const uint8_t id[OVL_LARGE_ID_BYTES],
		      uint32_t count, const void *key, size_t klen, char *err, size_t errlen)
{
	struct ovl_large_intent in = { .count = count, .ms = unix_ms(), .key = key, .klen = klen };
	uint8_t ik[OVL_LARGE_INTENT_KEY_BYTES], *v = malloc(OVL_LARGE_INTENT_HEAD_BYTES + klen);
	char e2[SHELF_ERR_BYTES], h[2 * OVL_LARGE_ID_BYTES + 1];
	int ret;

	if (!v)
		return -ENOMEM;
	ret = ovl_large_intent_encode(&in, v, OVL_LARGE_INTENT_HEAD_BYTES + klen);
	if (ret >= 0) {
		ovl_large_intent_key(ik, id);
		ret = sh_obj_put(s, slice, ik, sizeof(ik), v, (size_t)ret, e2, sizeof(e2));
	} else {
		snprintf(e2, sizeof(e2), "a key of %zu bytes", klen);
	}
	free(v);
	if (ret < 0) {
		hex(id, OVL_LARGE_ID_BYTES, h);
		sh_fail(err, errlen, ret, "intent of write %s: %s", h, sh_err_inner(e2));
	}
	return ret;
}

/* ---- chunks: several in flight ------------------------------------------------ */

const char *sh_err_inner(const char *e)
{
	const char *p = strstr(e, "': ");

	return p ? p + 3 : e;
}

void sh_chunk_name(char *out, size_t len, uint32_t i, uint32_t n,
		   const uint8_t id[OVL_LARGE_ID_BYTES])
{
	uint8_t ck[OVL_LARGE_CHUNK_KEY_BYTES];
	char h[2 * OVL_LARGE_CHUNK_KEY_BYTES + 1];

	ovl_large_chunk_key(ck, id, i);
	hex(ck, sizeof(ck), h);
	if (n == OVL_LARGE_COUNT_UNKNOWN)
		snprintf(out, len, "chunk %u (key %s)", i, h);
	else
		snprintf(out, len, "chunk %u of %u (key %s)", i, n, h);
}

void sh_chunk_fail(const struct ovl_large_head *h, uint32_t i, int res, const char *e, char *err,
		   size_t errlen)
{
	char name[128];

	sh_chunk_name(name, sizeof(name), i, h->n, h->id);
	if (res == -ENOENT)
		snprintf(err, errlen, "%s: not found", name);
	else
		snprintf(err, errlen, "%s: %.800s", name, sh_err_inner(e));
}

int sh_chunk_check(const void *man, const struct ovl_large_head *h, uint32_t i, size_t len,
		   uint32_t crc, char *err, size_t errlen)
{
	struct ovl_large_entry en;
	char name[128];

	ovl_large_manifest_entry(man, i, &en);
	sh_chunk_name(name, sizeof(name), i, h->n, h->id);
	if (len != en.size) {
		snprintf(err, errlen, "%s: damaged: %zu bytes, the manifest says %u", name, len,
			 en.size);
		return -EIO;
	}
	if (crc != en.crc) {
		snprintf(err, errlen, "%s: damaged: crc32c %08x, the manifest says %08x", name, crc,
			 en.crc);
		return -EIO;
	}
	return 0;
}

/*
 * A window of chunk transfers: up to s->inflight at once through the
 * asynchronous engine (aio.c), each to its own chunk key's nodes, all from
 * the caller's thread. Slot j carries chunks j, j + n, j + 2n, ...; a
 * chunk waits for its slot's previous one, so a GET gives chunks in order
 * holding at most n of them. A GET asks for each chunk in SH_CHUNK_PARTS
 * ranges at once (more requests in flight, to more of the nodes' drive
 * queue, for the same memory: the parts are the chunk's bytes, checked
 * together against its crc before any is given). Inside an engine
 * callback (the engine cannot run there) the window is one chunk and each
 * moves whole by the blocking call.
 */
#define SH_CHUNK_PARTS 4

struct part {
	struct slot *sl;
	unsigned k;
};

struct slot {
	bool busy;             /* its transfer is in flight (pending > 0) */
	unsigned pending;      /* requests in flight */
	int res;               /* the last transfer's result (the first failed part's) */
	uint32_t i;            /* the chunk */
	uint8_t *buf;          /* PUT: the stream's bytes (malloc'd, chunk size, reused) */
	bool borrowed;         /* buf is the caller's (not freed) */
	unsigned nparts;       /* GET: the chunk's parts */
	uint8_t *data[SH_CHUNK_PARTS]; /* GET: the parts' bytes (malloc'd), until given */
	size_t dlen[SH_CHUNK_PARTS];
	struct part parts[SH_CHUNK_PARTS];
	char err[SHELF_ERR_BYTES];
	struct mover *mv;
};

struct mover {
	struct shelf *s;
	const char *slice;
	struct slot *slots;
	unsigned n;
	bool sync;
	unsigned busy;
};

static int mover_init(struct mover *mv, struct shelf *s, const char *slice, uint32_t chunks,
		      uint64_t chunk_size)
{
	memset(mv, 0, sizeof(*mv));
	mv->s = s;
	mv->slice = slice;
	mv->sync = sh_aio_running(s);
	mv->n = mv->sync ? 1 : s->inflight;
	/* unless the caller chose it, the window holds at most
	 * SH_WINDOW_BYTES_DEFAULT of chunk buffers (3 of 16 MiB) */
	if (!s->inflight_set && chunk_size && mv->n > SH_WINDOW_BYTES_DEFAULT / chunk_size)
		mv->n = SH_WINDOW_BYTES_DEFAULT / chunk_size ? (unsigned)(SH_WINDOW_BYTES_DEFAULT /
									  chunk_size) : 1;
	if (mv->n > chunks && chunks)
		mv->n = chunks;
	mv->slots = calloc(mv->n, sizeof(*mv->slots));
	if (!mv->slots)
		return -ENOMEM;
	for (unsigned j = 0; j < mv->n; j++) {
		mv->slots[j].mv = mv;
		for (unsigned k = 0; k < SH_CHUNK_PARTS; k++)
			mv->slots[j].parts[k] = (struct part){ &mv->slots[j], k };
	}
	return 0;
}

/* One request of a slot completed (arg: its struct part). */
static void slot_done(void *arg, int res, const struct shelf_op *op)
{
	struct part *pt = arg;
	struct slot *sl = pt->sl;

	if (--sl->pending == 0) {
		sl->busy = false;
		sl->mv->busy--;
	}
	if (res < 0 && sl->res == 0) {
		sl->res = res;
		snprintf(sl->err, sizeof(sl->err), "%s", shelf_op_error(op));
	} else if (res == 0 && shelf_op_data(op, NULL)) {
		sl->data[pt->k] = shelf_op_take(op, &sl->dlen[pt->k]);
	}
}

static void slot_free_data(struct slot *sl)
{
	for (unsigned k = 0; k < SH_CHUNK_PARTS; k++) {
		free(sl->data[k]);
		sl->data[k] = NULL;
		sl->dlen[k] = 0;
	}
}

/* Run the engine until sl's transfer completed. 0 or -errno (the engine
 * failed: then every transfer of the window has been given up). */
static int slot_wait(struct slot *sl)
{
	int fails = 0;

	while (sl->busy) {
		int ret = sh_aio_run_one(sl->mv->s);

		if (ret < 0 && ++fails >= 3) {
			/* the engine cannot go on (out of memory): every operation
			 * is dropped, so no transfer points into our buffers */
			sh_aio_destroy(sl->mv->s);
			for (unsigned j = 0; j < sl->mv->n; j++) {
				if (sl->mv->slots[j].busy) {
					sl->mv->slots[j].busy = false;
					sl->mv->slots[j].pending = 0;
					sl->mv->slots[j].res = ret;
					snprintf(sl->mv->slots[j].err, sizeof(sl->mv->slots[j].err),
						 "%s", strerror(-ret));
				}
			}
			sl->mv->busy = 0;
			return ret;
		}
	}
	return 0;
}

/* Every transfer of the window completed (after an error: those in flight
 * must end before their buffers go). */
static void mover_drain(struct mover *mv)
{
	for (unsigned j = 0; j < mv->n; j++)
		slot_wait(&mv->slots[j]);
}

static void mover_release(struct mover *mv)
{
	mover_drain(mv);
	for (unsigned j = 0; mv->slots && j < mv->n; j++) {
		if (!mv->slots[j].borrowed)
			free(mv->slots[j].buf);
		slot_free_data(&mv->slots[j]);
	}
	free(mv->slots);
	mv->slots = NULL;
}

/* The words of sl's failed PUT: "chunk I of N (key HEX): WHY". */
static void slot_err(char *out, size_t len, const struct slot *sl, uint32_t n,
		     const uint8_t id[OVL_LARGE_ID_BYTES])
{
	char name[128];

	sh_chunk_name(name, sizeof(name), sl->i, n, id);
	snprintf(out, len, "%s: %.800s", name, sh_err_inner(sl->err));
}

/* Start the PUT of chunk i (data borrowed until it completes) in sl. */
static void slot_put(struct slot *sl, const uint8_t id[OVL_LARGE_ID_BYTES], uint32_t i,
		     const void *data, size_t len)
{
	struct mover *mv = sl->mv;
	uint8_t ck[OVL_LARGE_CHUNK_KEY_BYTES];
	int ret;

	ovl_large_chunk_key(ck, id, i);
	sl->i = i;
	sl->res = 0;
	sl->err[0] = '\0';
	if (mv->sync) {
		sl->res = sh_obj_put(mv->s, mv->slice, ck, sizeof(ck), data, len, sl->err,
				     sizeof(sl->err));
		return;
	}
	ret = sh_aio_put_chunk(mv->s, mv->slice, ck, sizeof(ck), data, len, slot_done,
			       &sl->parts[0]);
	if (ret < 0) {
		sl->res = ret;
		snprintf(sl->err, sizeof(sl->err), "%s", strerror(-ret));
		return;
	}
	sl->busy = true;
	sl->pending = 1;
	mv->busy++;
}

/* Start the GET of chunk i (size bytes) of id in sl: its parts at once. */
static void slot_get(struct slot *sl, const uint8_t id[OVL_LARGE_ID_BYTES], uint32_t i,
		     uint32_t size)
{
	struct mover *mv = sl->mv;
	uint8_t ck[OVL_LARGE_CHUNK_KEY_BYTES];
	uint32_t step;
	int ret;

	ovl_large_chunk_key(ck, id, i);
	sl->i = i;
	sl->res = 0;
	sl->err[0] = '\0';
	slot_free_data(sl);
	if (mv->sync) {
		sl->nparts = 1;
		sl->res = sh_obj_get(mv->s, mv->slice, ck, sizeof(ck), 0, UINT64_MAX, &sl->data[0],
				     &sl->dlen[0], NULL, sl->err, sizeof(sl->err));
		return;
	}
	/* parts of at least 256 KiB */
	sl->nparts = size / (256u << 10) < SH_CHUNK_PARTS ? size / (256u << 10) : SH_CHUNK_PARTS;
	if (sl->nparts < 1)
		sl->nparts = 1;
	step = size / sl->nparts + (size % sl->nparts != 0);
	for (unsigned k = 0; k < sl->nparts; k++) {
		uint64_t off = (uint64_t)k * step;
		/* the last part: to the end, so that a chunk longer than the
		 * manifest says shows in its length */
		uint64_t len = k + 1 == sl->nparts ? UINT64_MAX : step;

		ret = sh_aio_get_chunk(mv->s, mv->slice, ck, sizeof(ck), off, len, slot_done,
				       &sl->parts[k]);
		if (ret < 0) {
			sl->res = ret;
			snprintf(sl->err, sizeof(sl->err), "%s", strerror(-ret));
			break;
		}
		if (sl->pending++ == 0) {
			sl->busy = true;
			mv->busy++;
		}
	}
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
	uint8_t old[OVL_LARGE_ID_BYTES];
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
 * first chunk's bytes may be read already (first, nfirst, in buf, which
 * holds a chunk when the source is a stream of more than one). */
static int large_put(struct shelf *s, const char *slice, const void *key, size_t klen,
		     const char *kshow, uint64_t cs, struct src *sr, uint8_t *buf,
		     const uint8_t *first, size_t nfirst, char *err, size_t errlen)
{
	uint8_t old[OVL_LARGE_ID_BYTES], id[OVL_LARGE_ID_BYTES], *man = NULL;
	uint64_t n_known = OVL_LARGE_COUNT_UNKNOWN, total = 0, intent_ms, done = 0;
	uint64_t max_n = (OVL_WIRE_OBJECT_MAX_BYTES - ovl_large_manifest_bytes(0)) /
			 OVL_LARGE_MAN_ENTRY_BYTES;
	uint32_t n_old = 0, whole = 0, i = 0, *crcs = NULL;
	struct ovl_large_head h = { 0 };
	struct mover mv = { 0 };
	size_t cap = 0;
	int64_t mlen;
	char e2[SHELF_ERR_BYTES];
	struct prog pg;
	int ret;

	if (max_n > OVL_LARGE_CHUNKS_MAX)
		max_n = OVL_LARGE_CHUNKS_MAX;
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
	cap = n_known != OVL_LARGE_COUNT_UNKNOWN ? (size_t)n_known : 64;
	crcs = malloc(cap * sizeof(*crcs));
	ret = crcs ? mover_init(&mv, s, slice, (uint32_t)(n_known != OVL_LARGE_COUNT_UNKNOWN
							   ? n_known : 0), cs) : -ENOMEM;
	if (ret < 0)
		goto out;
	if (buf) {
		mv.slots[0].buf = buf;
		mv.slots[0].borrowed = true;
	}
	for (;;) {
		struct slot *sl = &mv.slots[i % mv.n];
		const uint8_t *p = NULL;
		ssize_t len;

		if (sr->size != SHELF_SIZE_UNKNOWN && total == sr->size)
			break;
		/* the slot's previous chunk must be stored before its buffer is reused */
		ret = slot_wait(sl);
		if (ret == 0 && sl->res < 0 && i >= mv.n)
			ret = sl->res;
		if (ret < 0) {
			slot_err(e2, sizeof(e2), sl, (uint32_t)n_known, id);
			goto fail;
		}
		if (i >= mv.n) {
			done += cs;
			if (pg.cb)
				pg.cb(pg.arg, done, sr->size == SHELF_SIZE_UNKNOWN ? total : sr->size);
		}
		if (i == 0 && first) {
			p = first;
			len = (ssize_t)nfirst;
		} else {
			if (!sr->mem && !sl->buf && !(sl->buf = malloc((size_t)cs))) {
				ret = -ENOMEM;
				goto out;
			}
			len = src_next(sr, sl->buf, (size_t)cs, &p);
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
			uint32_t *g = realloc(crcs, cap * 2 * sizeof(*crcs));

			if (!g) {
				ret = -ENOMEM;
				goto out;
			}
			crcs = g;
			cap *= 2;
		}
		crcs[i] = ovl_crc32c(0, p, (size_t)len);
		whole = ovl_crc32c(whole, p, (size_t)len);
		pg.base = total;
		slot_put(sl, id, i, p, (size_t)len);
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
	/* every chunk stored before the manifest names them */
	mover_drain(&mv);
	for (unsigned j = 0, bad = UINT32_MAX; j < mv.n; j++) {
		struct slot *sl = &mv.slots[j];

		if (sl->res < 0 && sl->i < bad) {
			bad = sl->i;
			ret = sl->res;
			slot_err(e2, sizeof(e2), sl, (uint32_t)n_known, id);
		}
	}
	if (ret < 0)
		goto fail;
	h.size = total;
	h.chunk_size = cs;
	h.crc = whole;
	memcpy(h.id, id, OVL_LARGE_ID_BYTES);
	man = malloc((size_t)ovl_large_manifest_bytes(i));
	if (!man) {
		ret = -ENOMEM;
		goto out;
	}
	mlen = ovl_large_manifest_encode(&h, crcs, man, (size_t)ovl_large_manifest_bytes(i));
	if (mlen < 0 || h.n != i) {
		ret = mlen < 0 ? (int)mlen : -EINVAL;
		snprintf(e2, sizeof(e2), "cannot encode a manifest of %u chunks", i);
		goto fail;
	}
	prog_end(s, &pg);
	/* the object appears now, whole */
	ret = sh_obj_put(s, slice, key, klen, man, (size_t)mlen, e2, sizeof(e2));
	if (ret < 0)
		sh_fail(err, errlen, ret, "put '%s': manifest: %s", kshow, sh_err_inner(e2));
	goto out;
fail:
	if (ret != -ENOMEM)
		sh_fail(err, errlen, ret, "put '%s': %s", kshow, e2);
out:
	mover_release(&mv);
	prog_end(s, &pg);
	free(crcs);
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
		if (size <= cs && !ovl_large_is_manifest(data, (size_t)size))
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
	if (ret == 1 && !ovl_large_is_manifest(p, (size_t)got))
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

/* [off, off+len) of the object manifest man (h, checked) describes, its
 * chunks fetched several at a time, each checked before any of its bytes
 * reach the sink, given in order. */
static int read_chunks(struct shelf *s, const char *slice, const char *kshow, const uint8_t *man,
		       const struct ovl_large_head *h, uint64_t off, uint64_t len, struct sink *k,
		       char *err, size_t errlen)
{
	uint64_t end, first, last, next, fetch_total = 0, fetched = 0;
	uint32_t whole = 0;
	bool full;
	char e2[SHELF_ERR_BYTES];
	struct mover mv = { 0 };
	struct prog pg;
	int ret = 0;

	if (off > h->size)
		off = h->size;
	end = len == UINT64_MAX || len > h->size - off ? h->size : off + len;
	full = off == 0 && end == h->size;
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
	if (end == off)
		return 0;
	first = off / h->chunk_size;
	last = (end - 1) / h->chunk_size;
	/* the chunks' bytes fetched: whole chunks, the last one maybe short */
	fetch_total = ((last + 1) * h->chunk_size < h->size ? (last + 1) * h->chunk_size : h->size) -
		      first * h->chunk_size;
	ret = mover_init(&mv, s, slice, (uint32_t)(last - first + 1), h->chunk_size);
	if (ret < 0)
		return ret;
	prog_begin(s, &pg, fetch_total);
	next = first;
	for (uint64_t i = first; i <= last && ret == 0; i++) {
		struct ovl_large_entry en;
		struct slot *sl;
		uint64_t from, to;

		/* keep the window full: chunks i .. i + n - 1 asked for */
		while (next <= last && next < i + mv.n) {
			pg.base = fetched;
			struct ovl_large_entry ne;

			ovl_large_manifest_entry(man, (uint32_t)next, &ne);
			slot_get(&mv.slots[next % mv.n], h->id, (uint32_t)next, ne.size);
			next++;
		}
		sl = &mv.slots[i % mv.n];
		ret = slot_wait(sl);
		if (ret == 0)
			ret = sl->res;
		if (ret < 0) {
			sh_chunk_fail(h, (uint32_t)i, ret, sl->err, e2, sizeof(e2));
			sh_fail(err, errlen, ret, "get '%s': %s", kshow, e2);
			break;
		}
		{
			uint32_t crc = 0;
			size_t got = 0;

			for (unsigned q = 0; q < sl->nparts; q++) {
				crc = ovl_crc32c(crc, sl->data[q], sl->dlen[q]);
				got += sl->dlen[q];
			}
			ret = sh_chunk_check(man, h, (uint32_t)i, got, crc, e2, sizeof(e2));
		}
		if (ret < 0) {
			sh_fail(err, errlen, ret, "get '%s': %s", kshow, e2);
			break;
		}
		ovl_large_manifest_entry(man, (uint32_t)i, &en);
		fetched += en.size;
		from = off > en.offset ? off - en.offset : 0;
		to = end < en.offset + en.size ? end - en.offset : en.size;
		/* the parts in order; [from, to) of the chunk to the sink */
		for (unsigned q = 0, at = 0; q < sl->nparts && ret == 0; q++) {
			uint64_t a = from > at ? from : at;
			uint64_t b = to < at + sl->dlen[q] ? to : at + sl->dlen[q];

			if (full)
				whole = ovl_crc32c(whole, sl->data[q], sl->dlen[q]);
			if (a < b)
				ret = sink_put(k, sl->data[q] + (a - at), (size_t)(b - a));
			at += (unsigned)sl->dlen[q];
		}
		slot_free_data(sl);
		if (ret < 0)
			sh_fail(err, errlen, ret, "get '%s': writing: %s", kshow, strerror(-ret));
		else if (pg.cb && !mv.sync)
			pg.cb(pg.arg, fetched, fetch_total);
	}
	mover_release(&mv);
	prog_end(s, &pg);
	if (ret == 0 && full && whole != h->crc)
		ret = sh_fail(err, errlen, -EIO, "get '%s': the chunks' bytes have crc32c %08x, the "
			      "manifest says %08x", kshow, whole, h->crc);
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
		struct ovl_large_head h;
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
		if (!ovl_large_size_may_be_manifest(info.size)) {
			man = false;
		} else if (off == 0 && dlen >= OVL_LARGE_MAGIC_BYTES) {
			man = ovl_large_is_manifest(data, dlen);
		} else {
			ret = sh_obj_get(s, slice, key, klen, 0, OVL_LARGE_MAGIC_BYTES, &head, &hlen,
					 &info2, err, errlen);
			man = ret == 0 && ovl_large_is_manifest(head, hlen);
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
			if (!ovl_large_is_manifest(data, dlen)) {
				free(data);
				done = false;
				continue; /* replaced by a small object meanwhile: read it */
			}
		}
		ret = ovl_large_manifest_check(data, dlen, &h, why, sizeof(why));
		if (ret < 0) {
			sh_fail(err, errlen, -EBADMSG, "get '%s': damaged manifest: %s", kshow, why);
			free(data);
			return -EBADMSG;
		}
		if (total)
			*total = h.size;
		ret = read_chunks(s, slice, kshow, data, &h, off, len, &k, err, errlen);
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
		struct ovl_large_head h;
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
		if (!ovl_large_size_may_be_manifest(info.size))
			break;
		ret = sh_obj_get(s, slice, key, klen, 0, OVL_LARGE_MAN_HEAD_BYTES, &head, &hlen,
				 &info2, err, errlen);
		if (ret == 0 && !same_version(&info, &info2)) {
			free(head);
			continue; /* replaced meanwhile */
		}
		if (ret == 0) {
			ret = ovl_large_head_parse(head, hlen, info2.size, &h, why, sizeof(why));
			if (ret == 0) {
				st->size = h.size;
				st->crc = h.crc;
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
	uint8_t old[OVL_LARGE_ID_BYTES];
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
