#include "req_int.h"
#include "ovl_fleet.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* LIST: keys are gathered into one arena of about this many bytes per key
 * asked for, and never more than REQ_LIST_ARENA_MAX_BYTES */
#define REQ_LIST_KEY_BYTES 64u
#define REQ_LIST_ARENA_MAX_BYTES (4u << 20)

/* A GET's read buffer, handed to the caller with its bytes. */
struct node_req_buf {
	struct node_store_rbuf *srb; /* the store's read buffer (NULL: none) */
};

/* One request in flight in the store. A GET's op holds the buffer handle:
 * when the caller keeps the buffer, the op lives until it is released. */
struct req_op {
	struct node_req *rq;
	enum node_req_type type;
	node_req_done_fn done;
	void *arg;
	uint64_t size, offset;
	uint32_t crc;
	struct node_req_buf buf;
};

/* A GET in pieces. Phases: FIRST reads the first piece (which tells the
 * object's size and version); CRC reads a long range once to compute its
 * crc32c; SEND reads the pieces that are delivered. */
enum { GET_FIRST, GET_CRC, GET_SEND };

#define REQ_GET_RESTARTS 4 /* a range replaced while its crc is computed: start again */

struct node_req_get {
	struct node_req *rq;
	node_req_done_fn done;
	void *arg;
	uint8_t key[NODE_STORE_KEY_MAX];
	size_t klen;
	uint64_t req_off, req_len; /* as asked */
	size_t piece;              /* the first read's (and the CRC pass's) bytes */
	size_t rd;                 /* the read in flight asked for this many */
	int phase;
	unsigned restarts;
	uint64_t size, seq;        /* the version being answered */
	struct node_store_ver ver; /* its version */
	uint64_t start, end;       /* the answer: [start, end) of the object */
	uint64_t pos;              /* next byte to read (CRC and SEND) */
	uint32_t crc;              /* of the answer (CRC: so far) */
	bool reading, ended;
	char slice[OVL_WIRE_NAME_SIZE]; /* for a read repair */
};

struct node_req_stream {
	struct node_req *rq;
	struct req_rw *rw;            /* a replicated write (then st is unused) */
	struct node_store_stream *st;
	uint64_t size;
	uint32_t crc;
};

static int req_check(struct node_req *rq, const struct node_req_args *a);

void req_rq_put(struct node_req *rq)
{
	if (--rq->live == 0 && rq->dying)
		free(rq);
}

int node_req_new(struct node_req **out, const struct node_req_opts *o, char *err, size_t errlen)
{
	struct node_req *rq = NULL;

	*out = NULL;
	if (!o->loop || !o->store) {
		snprintf(err, errlen, "request layer: loop and store are required");
		return -EINVAL;
	}
	rq = calloc(1, sizeof(*rq));
	if (!rq) {
		snprintf(err, errlen, "request layer: out of memory");
		return -ENOMEM;
	}
	rq->o = *o;
	req_pace_init(rq, o);
	if (req_scrub_new(rq, o) < 0) {
		free(rq);
		snprintf(err, errlen, "request layer: out of memory for scrub");
		return -ENOMEM;
	}
	if (o->repl) {
		char w[256] = "";

		if (req_hints_new(rq, o, w, sizeof(w)) < 0) {
			req_scrub_destroy(rq);
			free(rq);
			snprintf(err, errlen, "request layer: out of memory for hints");
			return -ENOMEM;
		}
		if (w[0]) {
			snprintf(rq->msgbuf, sizeof(rq->msgbuf), "%s", w);
			rq->msg = rq->msgbuf;
		}
		if (req_heal_new(rq, o) < 0 || req_gc_new(rq, o) < 0) {
			rq->live++;
			req_heal_destroy(rq);
			req_hints_destroy(rq);
			req_scrub_destroy(rq);
			rq->dying = true;
			req_rq_put(rq);
			snprintf(err, errlen, "request layer: out of memory for repair");
			return -ENOMEM;
		}
	}
	*out = rq;
	return 0;
}

void node_req_destroy(struct node_req **rqp)
{
	struct node_req *rq = rqp ? *rqp : NULL;

	if (!rq)
		return;
	*rqp = NULL;
	rq->live++; /* held while the hints let go */
	req_gc_destroy(rq);
	req_heal_destroy(rq);
	req_hints_destroy(rq);
	req_scrub_destroy(rq);
	rq->dying = true;
	req_rq_put(rq); /* freed now, or with the last request in flight */
}

const char *node_req_errmsg(const struct node_req *rq)
{
	return rq->msg ? rq->msg : "";
}

static const char *fail_msg(struct node_req *rq, int res)
{
	return res == -ENOENT ? "no such key" : node_store_errmsg(rq->o.store);
}

static struct req_op *op_new(struct node_req *rq, enum node_req_type type, node_req_done_fn done,
			     void *arg)
{
	struct req_op *op = calloc(1, sizeof(*op));

	if (!op)
		return NULL;
	op->rq = rq;
	op->type = type;
	op->done = done;
	op->arg = arg;
	rq->live++;
	return op;
}

static void op_free(struct req_op *op)
{
	struct node_req *rq = op->rq;

	node_store_rbuf_release(&op->buf.srb);
	free(op);
	req_rq_put(rq);
}

void node_req_buf_release(struct node_req_buf **bp)
{
	struct node_req_buf *b = bp ? *bp : NULL;

	if (!b)
		return;
	*bp = NULL;
	op_free((struct req_op *)((char *)b - offsetof(struct req_op, buf)));
}

/* The store finished a request: map its result, hand it on. */
static void store_done(void *arg, int res, const struct node_store_objstat *st)
{
	struct req_op *op = arg;
	struct node_req_result r = { .type = op->type, .res = res };

	if (res < 0) {
		r.msg = fail_msg(op->rq, res);
	} else if (op->type == NODE_REQ_PUT) {
		r.size = op->size;
		r.crc = op->crc;
		r.seq = st ? st->seq : 0;
	} else if (op->type == NODE_REQ_STAT && st->tomb) {
		/* a tombstone: not-found, with the version a reader compares */
		r.res = -ENOENT;
		r.msg = "no such key (deleted)";
		r.tomb = true;
		r.ver.hlc = st->ver.hlc;
		r.ver.node = st->ver.node;
	} else if (op->type == NODE_REQ_STAT) {
		r.size = st->size;
		r.crc = st->crc;
		r.seq = st->seq;
		r.ver.hlc = st->ver.hlc; /* (0, 0): written without a version */
		r.ver.node = st->ver.node;
	}
	op->done(op->arg, &r, NULL);
	op_free(op);
}

/* A GET's bytes, in the store's read buffer: taken from the store, then
 * offered to the caller with the result. */
static void get_done(void *arg, int res, struct node_store_rbuf **srb,
		     const struct node_store_objstat *st)
{
	struct req_op *op = arg;
	struct node_req_result r = { .type = op->type, .res = res };
	struct node_req_buf *b = NULL;
	bool offered;

	if (res < 0) {
		r.msg = fail_msg(op->rq, res);
		op->done(op->arg, &r, NULL);
		op_free(op);
		return;
	}
	if (srb && *srb) {
		op->buf.srb = *srb;
		*srb = NULL;
		r.data = op->buf.srb->data;
		r.len = op->buf.srb->len;
		b = &op->buf;
	}
	/* the bytes were verified against the drive's checksums; the crc lets
	 * the client verify them end to end: a whole value was just verified
	 * against its stored crc32c, a range needs its own */
	r.size = st ? st->size : r.len;
	r.offset = op->offset;
	r.crc = st && op->offset == 0 && r.len == st->size ? st->crc : ovl_crc32c(0, r.data, r.len);
	offered = b != NULL;
	op->done(op->arg, &r, &b);
	/* taken: the op lives until node_req_buf_release(), which the taker
	 * may have called already (op is not touched again) */
	if (offered && !b)
		return;
	op_free(op);
}

/* ---- a GET in pieces ---- */

static void piece_done(void *arg, int res, struct node_store_rbuf **srb,
		       const struct node_store_objstat *st);

static void get_free(struct node_req_get *g)
{
	struct node_req *rq = g->rq;

	rq->pace.fg--;
	free(g);
	req_rq_put(rq);
}

/* Read [off, off + len) of the key: its completion is piece_done(). */
static int get_read(struct node_req_get *g, uint64_t off, uint64_t len)
{
	struct node_req *rq = g->rq;
	struct req_op *op = op_new(rq, NODE_REQ_GET, NULL, g);
	int ret;

	if (!op) {
		rq->msg = "out of memory";
		return -EBUSY;
	}
	op->offset = off;
	g->rd = len;
	ret = node_store_get_async(rq->o.store, g->key, g->klen, off, len, piece_done, op);
	if (ret < 0) {
		rq->msg = fail_msg(rq, ret);
		op_free(op);
		return ret;
	}
	g->reading = true;
	return 0;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/* Report a failure (or a piece, with op's buffer offered) to the caller. */
static void get_deliver(struct node_req_get *g, struct req_op *op, int res, const char *msg,
			const void *data, size_t len)
{
	struct node_req_result r = { .type = NODE_REQ_GET, .res = res, .msg = msg };
	struct node_req_buf *b = op && op->buf.srb ? &op->buf : NULL;
	bool offered = b != NULL;

	if (res == 0) {
		r.size = g->size;
		r.offset = g->start;
		r.length = g->end - g->start;
		r.crc = g->crc;
		r.ver.hlc = g->ver.hlc;
		r.ver.node = g->ver.node;
		r.data = data;
		r.len = len;
		g->pos += len;
	}
	g->done(g->arg, &r, res == 0 ? &b : NULL);
	if (op && !(offered && !b))
		op_free(op);
}

static void get_fail(struct node_req_get *g, struct req_op *op, int res, const char *msg)
{
	node_store_rbuf_release(&op->buf.srb);
	get_deliver(g, op, res, msg, NULL, 0);
}

/* Start over (the object changed while a range's crc was computed, and
 * nothing was delivered yet): the GET then answers the new version. */
static void get_restart(struct node_req_get *g)
{
	int ret;

	g->phase = GET_FIRST;
	ret = get_read(g, g->req_off, min_u64(g->piece, g->req_len));
	if (ret < 0)
		get_deliver(g, NULL, ret, node_req_errmsg(g->rq), NULL, 0);
}

/* The next read of the CRC pass, or the first delivered piece after it. */
static void get_crc_next(struct node_req_get *g, struct req_op *op)
{
	int ret;

	op_free(op);
	if (g->pos >= g->end) {
		g->phase = GET_SEND;
		g->pos = g->start;
	}
	ret = get_read(g, g->pos, min_u64(g->piece, g->end - g->pos));
	if (ret == -ENOENT && g->restarts++ < REQ_GET_RESTARTS) {
		get_restart(g); /* deleted meanwhile: answer that */
		return;
	}
	if (ret < 0)
		get_deliver(g, NULL, ret == -ENOENT ? -EBUSY : ret, node_req_errmsg(g->rq), NULL, 0);
}

static void piece_done(void *arg, int res, struct node_store_rbuf **srb,
		       const struct node_store_objstat *st)
{
	struct req_op *op = arg;
	struct node_req_get *g = op->arg;
	const uint8_t *data = NULL;
	size_t len = 0;

	g->reading = false;
	if (srb && *srb) {
		op->buf.srb = *srb;
		*srb = NULL;
		data = op->buf.srb->data;
		len = op->buf.srb->len;
	}
	if (g->ended) {
		op_free(op);
		get_free(g);
		return;
	}
	if (res == 0 && !st)
		res = -EIO; /* the store always reports the version; be safe */
	if (g->phase != GET_FIRST && (res == -ENOENT || (res == 0 && st->seq != g->seq))) {
		/* replaced or deleted since the first piece */
		if (g->phase == GET_CRC && g->restarts++ < REQ_GET_RESTARTS) {
			op_free(op);
			get_restart(g);
			return;
		}
		get_fail(g, op, g->phase == GET_CRC ? -EBUSY : -EAGAIN,
			 "the object was replaced while it was read");
		return;
	}
	if (res < 0) {
		if (res == -EIO)
			req_damage_found(g->rq, g->slice, g->key, g->klen);
		get_fail(g, op, res, fail_msg(g->rq, res));
		return;
	}
	if (len != min_u64(g->rd, (g->phase == GET_FIRST ? UINT64_MAX : g->end - g->pos)) &&
	    g->phase != GET_FIRST) {
		get_fail(g, op, -EIO, "a piece came back short");
		return;
	}
	switch (g->phase) {
	case GET_FIRST:
		g->size = st->size;
		g->seq = st->seq;
		g->ver = st->ver;
		g->start = min_u64(g->req_off, st->size);
		g->end = g->start + min_u64(g->req_len, st->size - g->start);
		g->pos = g->start;
		if (g->start == 0 && g->end == st->size) {
			g->crc = st->crc; /* verified against it as it is read */
		} else if (g->end - g->start <= len) {
			g->crc = ovl_crc32c(0, data, len);
		} else {
			/* the range's crc must lead the answer: read it once for it */
			g->phase = GET_CRC;
			g->crc = ovl_crc32c(0, data, len);
			g->pos += len;
			node_store_rbuf_release(&op->buf.srb);
			get_crc_next(g, op);
			return;
		}
		g->phase = GET_SEND;
		get_deliver(g, op, 0, NULL, data, len);
		return;
	case GET_CRC:
		g->crc = ovl_crc32c(g->crc, data, len);
		g->pos += len;
		node_store_rbuf_release(&op->buf.srb);
		get_crc_next(g, op);
		return;
	default:
		get_deliver(g, op, 0, NULL, data, len);
		return;
	}
}

int node_req_get_start(struct node_req *rq, const struct node_req_args *a, size_t piece_bytes,
		       node_req_done_fn done, void *arg, struct node_req_get **out)
{
	struct node_req_get *g = NULL;
	int ret;

	*out = NULL;
	if (a->type != NODE_REQ_GET || !a->key || a->klen == 0 || a->klen > NODE_STORE_KEY_MAX ||
	    piece_bytes < OVL_WIRE_CHUNK_BYTES || piece_bytes % OVL_WIRE_CHUNK_BYTES) {
		rq->msg = "a GET in pieces needs a key and whole chunks per piece";
		return -EINVAL;
	}
	ret = req_check(rq, a);
	if (ret < 0)
		return ret;
	g = calloc(1, sizeof(*g));
	if (!g) {
		rq->msg = "out of memory";
		return -EBUSY;
	}
	g->rq = rq;
	g->done = done;
	g->arg = arg;
	memcpy(g->key, a->key, a->klen);
	g->klen = a->klen;
	g->req_off = a->offset;
	g->req_len = a->length;
	g->piece = piece_bytes;
	g->phase = GET_FIRST;
	snprintf(g->slice, sizeof(g->slice), "%s", a->slice ? a->slice : "");
	rq->live++;
	rq->pace.fg++;
	ret = get_read(g, g->req_off, min_u64(g->piece, g->req_len));
	if (ret < 0) {
		get_free(g);
		return ret;
	}
	*out = g;
	return 0;
}

int node_req_get_next(struct node_req_get *g)
{
	return node_req_get_read(g, g->piece);
}

int node_req_get_read(struct node_req_get *g, size_t bytes)
{
	int ret;

	if (g->reading || g->ended || g->phase != GET_SEND || g->pos >= g->end ||
	    bytes < OVL_WIRE_CHUNK_BYTES || bytes % OVL_WIRE_CHUNK_BYTES) {
		g->rq->msg = "no piece to read now";
		return -EINVAL;
	}
	ret = get_read(g, g->pos, min_u64(bytes, g->end - g->pos));
	if (ret == -ENOENT) {
		g->rq->msg = "the object was deleted while it was read";
		return -EAGAIN;
	}
	return ret;
}

int node_req_get_bound(struct node_req *rq, const void *key, size_t klen, uint64_t *bytes)
{
	uint64_t off = 0;
	int ret = node_store_locate(rq->o.store, key, klen, &off, bytes);

	if (ret < 0)
		rq->msg = ret == -ENOENT ? "no such key" : "the key's newest version is damaged";
	return ret;
}

bool node_req_get_finished(const struct node_req_get *g)
{
	return g->phase == GET_SEND && g->pos >= g->end;
}

void node_req_get_end(struct node_req_get **gp)
{
	struct node_req_get *g = gp ? *gp : NULL;

	if (!g)
		return;
	*gp = NULL;
	g->ended = true;
	if (!g->reading)
		get_free(g);
}

struct list_ctx {
	struct ovl_wire_bin *keys;
	struct ovl_wire_vkey *vkeys;   /* with vers: entries instead of keys */
	uint8_t *arena;
	size_t used, cap;
	uint32_t n, max;
	struct req_heal_filter *filter; /* LIST with a bucket: only its shared keys */
	uint8_t bucket;
	const uint8_t *set;             /* ... or the buckets of this set */
};

static int list_cb(void *arg, const void *key, size_t klen);

static int list_ver_cb(void *arg, const void *key, size_t klen, const struct node_store_ver *ver,
		       bool tomb)
{
	struct list_ctx *l = arg;
	uint32_t i = l->n;
	int ret;

	if (l->filter && !req_key_reserved(key, klen) &&
	    !req_heal_filter_take(l->filter, l->bucket, l->set, key, klen))
		return 0;
	ret = list_cb(arg, key, klen);

	if (ret == 0) {
		l->vkeys[i].ptr = l->keys[i].ptr;
		l->vkeys[i].len = l->keys[i].len;
		l->vkeys[i].ver.hlc = ver->hlc;
		l->vkeys[i].ver.node = ver->node;
		l->vkeys[i].tomb = tomb;
	}
	return ret;
}

static int list_cb(void *arg, const void *key, size_t klen)
{
	struct list_ctx *l = arg;

	if (req_key_reserved(key, klen))
		return 1; /* the node's own records: every key after is one */
	if (l->n == l->max || l->used + klen > l->cap)
		return 1;
	memcpy(l->arena + l->used, key, klen);
	l->keys[l->n].ptr = l->arena + l->used;
	l->keys[l->n].len = (uint32_t)klen;
	l->used += klen;
	l->n++;
	return 0;
}

/* LIST: the store answers from memory, so `done` runs before this returns. */
static int req_list(struct node_req *rq, const struct node_req_args *a, node_req_done_fn done,
		    void *arg)
{
	struct node_req_result r = { .type = NODE_REQ_LIST };
	struct list_ctx l = { 0 };
	uint64_t cap = ((uint64_t)a->limit + 1) * REQ_LIST_KEY_BYTES;
	int n, ret = 0;

	if (a->limit == 0) {
		rq->msg = "a list of no keys";
		return -EINVAL;
	}
	if (a->has_bucket) {
		/* a node's LIST of one digest bucket (req.h, "Repair") */
		if (!a->peer_id || !a->vers) {
			rq->msg = "a LIST of a bucket is for member nodes, with versions";
			return a->peer_id ? -EINVAL : -EACCES;
		}
		ret = req_heal_filter_new(rq, a->slice, a->peer_id, &l.filter);
		if (ret < 0) {
			rq->msg = ret == -EACCES ? "the asking node is no member of the slice"
				  : ret == -EXDEV ? "this node holds no map of the slice"
				  : "out of memory for a list";
			return ret == -ENOMEM ? -EBUSY : ret;
		}
		l.bucket = a->bucket;
		l.set = a->bucket_set;
	}
	l.max = a->limit;
	/* one more than asked, to tell the caller whether more follow */
	l.keys = calloc((size_t)l.max + 1, sizeof(*l.keys));
	l.cap = cap < REQ_LIST_ARENA_MAX_BYTES ? (size_t)cap : REQ_LIST_ARENA_MAX_BYTES;
	l.arena = malloc(l.cap);
	if (a->vers)
		l.vkeys = calloc((size_t)l.max + 1, sizeof(*l.vkeys));
	if (!l.keys || !l.arena || (a->vers && !l.vkeys)) {
		rq->msg = "out of memory for a list";
		ret = -EBUSY;
		goto out;
	}
	l.max++;
	/* with a bucket, the walk passes over the keys of other buckets:
	 * it stops when the answer is full or at the node's own records */
	n = a->vers ? node_store_list_ver(rq->o.store, a->key, a->klen, a->after, a->after_len,
					  l.filter ? UINT32_MAX : l.max, list_ver_cb, &l)
		    : node_store_list(rq->o.store, a->key, a->klen, a->after, a->after_len, l.max,
				      list_cb, &l);
	if (n < 0) {
		rq->msg = "list failed";
		ret = n;
		goto out;
	}
	l.max--;
	r.more = l.n > l.max;
	r.by_set = l.set != NULL;
	if (r.more)
		l.n = l.max;
	r.keys = l.keys;
	r.vkeys = l.vkeys;
	r.nkeys = l.n;
	done(arg, &r, NULL);
out:
	req_heal_filter_destroy(&l.filter);
	free(l.vkeys);
	free(l.keys);
	free(l.arena);
	return ret;
}

/* Refused before anything: a reserved key; a read of a replicated slice
 * while this node takes back its hints. */
static int req_check(struct node_req *rq, const struct node_req_args *a)
{
	if (a->type != NODE_REQ_LIST && a->key && req_key_reserved(a->key, a->klen)) {
		rq->msg = "keys that start with 8 bytes 0xff are reserved for the node";
		return -EINVAL;
	}
	/* a node's plain GET of an update's block (fe x8 'F'): a member of
	 * the slice only; its other GETs are repair's, as before */
	if (a->peer_id && !a->ver && !a->fwd && a->type == NODE_REQ_GET && a->key &&
	    ovl_fleet_is_block_key(a->key, a->klen)) {
		const struct node_ctl_map *m = rq->o.repl ? node_repl_map(rq->o.repl, a->slice) : NULL;

		if (!m || node_repl_member_find(m->members, m->n_members, a->peer_id) < 0) {
			rq->msg = "the asking node is no member of the slice";
			return -EACCES;
		}
	}
	/* a node's plain DELETE or LIST: its chunk GC, on fe x8 keys only */
	if (a->peer_id && !a->ver && !a->fwd &&
	    (a->type == NODE_REQ_DELETE || (a->type == NODE_REQ_LIST && !a->has_bucket))) {
		int ret = req_gc_peer_check(rq, a);

		if (ret < 0)
			return ret;
	}
	if ((a->type == NODE_REQ_GET || a->type == NODE_REQ_STAT || a->type == NODE_REQ_LIST) &&
	    req_hints_syncing(rq)) {
		const struct node_ctl_map *m = node_repl_map(rq->o.repl, a->slice);

		if (m && m->replicas > 1) {
			rq->msg = "this node is taking back the writes it missed (hinted hand-off) before it serves reads; read another replica";
			return -EBUSY;
		}
	}
	return 0;
}

/* A client request in flight (client first, req_pace.c), and a read that
 * found the key damaged starts its repair. */
struct req_fg {
	struct node_req *rq;
	node_req_done_fn done;
	void *arg;
	enum node_req_type type;
	char slice[OVL_WIRE_NAME_SIZE];
	size_t klen;
	uint8_t key[];
};

static void fg_done(void *arg, const struct node_req_result *r, struct node_req_buf **buf)
{
	struct req_fg *f = arg;
	struct node_req *rq = f->rq;

	if (r->res == -EIO && (f->type == NODE_REQ_GET || f->type == NODE_REQ_STAT))
		req_damage_found(rq, f->slice, f->key, f->klen);
	f->done(f->arg, r, buf);
	rq->pace.fg--;
	free(f);
	req_rq_put(rq);
}

static int req_start(struct node_req *rq, const struct node_req_args *a, node_req_done_fn done,
		     void *arg);

int node_req_start(struct node_req *rq, const struct node_req_args *a, node_req_done_fn done,
		   void *arg)
{
	bool reads = a->type == NODE_REQ_GET || a->type == NODE_REQ_STAT;
	struct req_fg *f = NULL;
	int ret;

	if (a->type == NODE_REQ_LIST)
		return req_start(rq, a, done, arg); /* answered before it returns */
	f = calloc(1, sizeof(*f) + (reads ? a->klen : 0));
	if (!f) {
		rq->msg = "out of memory";
		return -EBUSY;
	}
	f->rq = rq;
	f->done = done;
	f->arg = arg;
	f->type = a->type;
	if (reads && a->key) {
		snprintf(f->slice, sizeof(f->slice), "%s", a->slice ? a->slice : "");
		memcpy(f->key, a->key, a->klen);
		f->klen = a->klen;
	}
	rq->live++;
	rq->pace.fg++;
	ret = req_start(rq, a, fg_done, f);
	if (ret < 0) {
		rq->pace.fg--;
		free(f);
		req_rq_put(rq);
	}
	return ret;
}

static int req_start(struct node_req *rq, const struct node_req_args *a, node_req_done_fn done,
		     void *arg)
{
	struct req_op *op = NULL;
	int ret;

	ret = req_check(rq, a);
	if (ret < 0)
		return ret;
	if (a->type == NODE_REQ_LIST)
		return req_list(rq, a, done, arg);
	if (a->type == NODE_REQ_DIGEST || a->type == NODE_REQ_HEAL)
		return req_heal_start(rq, a, done, arg);
	if ((a->type == NODE_REQ_PUT || a->type == NODE_REQ_DELETE) && req_rw_wanted(rq, a))
		return req_rw_start(rq, a, done, arg);
	op = op_new(rq, a->type, done, arg);
	if (!op) {
		rq->msg = "out of memory";
		return -EBUSY;
	}
	switch (a->type) {
	case NODE_REQ_PUT:
		op->size = a->size;
		op->crc = a->crc;
		ret = node_store_put_async(rq->o.store, a->key, a->klen, a->val, (size_t)a->size,
					   store_done, op);
		if (ret < 0)
			rq->msg = node_store_errmsg(rq->o.store);
		break;
	case NODE_REQ_GET:
		op->offset = a->offset;
		ret = node_store_get_async(rq->o.store, a->key, a->klen, a->offset, a->length,
					   get_done, op);
		if (ret < 0)
			rq->msg = fail_msg(rq, ret);
		break;
	case NODE_REQ_DELETE:
		ret = node_store_delete_async(rq->o.store, a->key, a->klen, store_done, op);
		if (ret < 0)
			rq->msg = fail_msg(rq, ret);
		break;
	case NODE_REQ_STAT:
		/* a tombstone answers too: store_done() makes it a not-found */
		ret = node_store_stat_any_async(rq->o.store, a->key, a->klen, store_done, op);
		if (ret < 0)
			rq->msg = fail_msg(rq, ret);
		break;
	default:
		rq->msg = "unknown request type";
		ret = -EINVAL;
		break;
	}
	if (ret < 0)
		op_free(op);
	return ret;
}

size_t node_req_stream_bytes(const struct node_req *rq)
{
	return node_store_stream_bytes(rq->o.store);
}

int node_req_stream_begin(struct node_req *rq, const struct node_req_args *a,
			  void (*ready)(void *arg), void *arg, struct node_req_stream **out)
{
	struct node_req_stream *st = NULL;
	int ret;

	*out = NULL;
	if (a->type != NODE_REQ_PUT) {
		rq->msg = "only a PUT streams";
		return -EINVAL;
	}
	ret = req_check(rq, a);
	if (ret < 0)
		return ret;
	st = calloc(1, sizeof(*st));
	if (!st) {
		rq->msg = "out of memory";
		return -EBUSY;
	}
	st->rq = rq;
	st->size = a->size;
	st->crc = a->crc;
	if (req_rw_wanted(rq, a)) {
		ret = req_rw_stream_begin(rq, a, ready, arg, &st->rw);
		if (ret < 0) {
			free(st);
			return ret;
		}
		rq->live++;
		rq->pace.fg++;
		*out = st;
		return 0;
	}
	ret = node_store_stream_begin(rq->o.store, a->key, a->klen, a->size, ready, arg, &st->st);
	if (ret < 0) {
		rq->msg = node_store_errmsg(rq->o.store);
		free(st);
		return ret;
	}
	rq->live++;
	rq->pace.fg++;
	*out = st;
	return 0;
}

ssize_t node_req_stream_write(struct node_req_stream *st, const void *buf, size_t len)
{
	ssize_t w;

	if (st->rw)
		return req_rw_stream_write(st->rw, buf, len);
	w = node_store_stream_write(st->st, buf, len);

	if (w < 0)
		st->rq->msg = node_store_errmsg(st->rq->o.store);
	return w;
}

uint32_t node_req_stream_crc(const struct node_req_stream *st)
{
	if (st->rw)
		return req_rw_stream_crc(st->rw);
	return node_store_stream_crc(st->st);
}

static void stream_free(struct node_req_stream **stp)
{
	struct node_req_stream *st = *stp;

	*stp = NULL;
	if (st->rw)
		req_rw_stream_abort(st->rw);
	node_store_stream_abort(&st->st);
	st->rq->pace.fg--;
	req_rq_put(st->rq);
	free(st);
}

int node_req_stream_finish(struct node_req_stream **stp, node_req_done_fn done, void *arg)
{
	struct node_req_stream *st = *stp;
	struct node_req *rq = st->rq;
	struct req_op *op = NULL;
	int ret;

	if (st->rw) {
		struct req_rw *rw = st->rw;

		st->rw = NULL; /* the write is rw's now: finish consumes it */
		ret = req_rw_stream_finish(rw, st->crc, done, arg);
		stream_free(stp);
		return ret;
	}
	op = op_new(rq, NODE_REQ_PUT, done, arg);
	if (!op) {
		rq->msg = "out of memory";
		stream_free(stp);
		return -EBUSY;
	}
	op->size = st->size;
	op->crc = st->crc;
	ret = node_store_stream_finish(&st->st, st->crc, store_done, op);
	if (ret < 0) {
		rq->msg = node_store_errmsg(rq->o.store);
		op_free(op);
	}
	stream_free(stp);
	return ret;
}

void node_req_stream_abort(struct node_req_stream **stp)
{
	if (stp && *stp)
		stream_free(stp);
}

static unsigned store_counters(const struct node_req *rq, struct ovl_wire_counter *c, unsigned max)
{
	static const char *const names[] = {
		"objects", "live_bytes", "capacity_bytes", "segments_free", "read_only",
		"checksum_errors", "puts", "gets", "cache_rereads", "full", "nearly_full",
		"usable_bytes", "segments_reserved",
	};
	struct node_store_stats st;
	unsigned n = 0;

	node_store_stats(rq->o.store, &st);
	{
		const uint64_t val[] = {
			st.objects, st.live_bytes, st.capacity_bytes, st.segments_free, st.read_only,
			/* damage found by recovery counts too: both persist across restarts */
			st.checksum_errors + st.damaged_records, st.puts, st.gets, st.cache_rereads,
			st.full,              /* puts are refused */
			st.nearly_full,       /* live above 90% of usable_bytes */
			st.usable_bytes,      /* capacity less the compaction reserve */
			st.segments_reserved,
		};

		for (; n < max && n < sizeof(names) / sizeof(names[0]); n++) {
			snprintf(c[n].name, sizeof(c[n].name), "%s", names[n]);
			c[n].value = val[n];
		}
	}
	return n;
}

unsigned node_req_counters(const struct node_req *rq, const char *slice,
			   struct ovl_wire_counter *c, unsigned max)
{
	unsigned n = store_counters(rq, c, max);

	/* the store's first, then replication's, then the hints' */
	if (rq->o.repl && n < max)
		n += node_repl_counters(rq->o.repl, c + n, max - n);
	if (n < max)
		n += req_hints_counters(rq, c + n, max - n);
	if (n < max)
		n += node_req_heal_counters(rq, slice, c + n, max - n);
	/* background work after the hints (their hints_for_ counters matter
	 * to a node that syncs) */
	if (n < max)
		n += req_pace_counters(rq, c + n, max - n);
	if (n < max)
		n += req_scrub_counters(rq, c + n, max - n);
	if (n < max)
		n += req_gc_counters(rq, c + n, max - n);
	if (n < max && rq->o.counters)
		n += rq->o.counters(rq->o.counters_arg, c + n, max - n);
	return n;
}

uint64_t node_req_degraded(const struct node_req *rq)
{
	uint64_t left = 0, bytes = 0, failed = 0;

	req_hints_repair_left(rq, &left, &bytes, &failed);
	return left + req_heal_degraded(rq);
}

void node_req_tick(struct node_req *rq, uint64_t now_mono_ms)
{
	req_pace_tick(rq, now_mono_ms);
	req_hints_tick(rq, now_mono_ms);
	req_heal_tick(rq, now_mono_ms);
	req_hints_pace_pump(rq);
	req_scrub_tick(rq, now_mono_ms);
	req_gc_tick(rq, now_mono_ms);
}

void node_req_stop(struct node_req *rq)
{
	req_hints_stop(rq);
	req_heal_stop(rq);
	req_gc_stop(rq);
}

void node_req_hint_sync(struct node_req *rq)
{
	req_hints_sync_start(rq);
}

void node_req_connected(struct node_req *rq, bool connected)
{
	req_hints_connected(rq, connected);
}

bool node_req_syncing(const struct node_req *rq)
{
	return req_hints_syncing(rq);
}

void node_req_hint_poke(struct node_req *rq, const uint8_t id[OVL_ID_BYTES])
{
	req_hint_poke(rq, id);
}

void node_req_hint_stats(const struct node_req *rq, struct node_req_hint_stats *st)
{
	req_hints_stats(rq, st);
}
