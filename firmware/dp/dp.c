#include "dp.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#define DP_ERR_BYTES 256
/* PUT payloads above this stream into the request layer as they arrive
 * (memory per connection: the stream's buffers, node_req_stream_bytes(),
 * and one sealed chunk); smaller ones are buffered whole. */
#define DP_STREAM_MIN_BYTES (128u << 10)
#define DP_SEALED_CHUNK_BYTES (OVL_WIRE_CHUNK_BYTES + OVL_WIRE_TAG_BYTES)
/* A piece's read buffer is the piece plus block alignment on both ends,
 * plus the rest of a chunk when the answer does not start on a chunk
 * (the store reads and verifies whole chunks). */
#define DP_PIECE_ALIGN_BYTES (8u << 10)
/* The store reads a record of at most this many bytes whole, whatever the
 * range asked (its SMALL_READ_BYTES): such a read holds the record. */
#define DP_STORE_WHOLE_READ_BYTES (256u << 10)
/* Reads of an answer too long for one read (pieces of resp_piece_bytes):
 * at most this many pieces' bytes held per connection, whatever its share,
 * so that a reader that stalls mid-answer holds little. */
#define DP_STREAM_PIECES 2u
/* GETs of one connection read at once, each answer read whole (one read,
 * sent as one frame): their reads reach the drive together. A GET whose
 * answer takes pieces reads alone. */
#define DP_GETS_AT_ONCE 16u

struct dp_slice {
	char name[OVL_WIRE_NAME_SIZE];
	uint64_t epoch;
	bool encrypt;
};

struct dp_conn;
struct dp_op;

struct node_dp {
	struct node_dp_opts o;
	uint8_t cert[OVL_CERT_MAX_BYTES]; /* our certificate (a copy: renewals replace it) */
	size_t cert_len;
	struct node_serve *srv;
	struct dp_slice slices[NODE_DP_SLICES_MAX];
	unsigned nslices;
	uint64_t payload_bytes; /* PUT payloads buffered now */
	uint64_t resp_bytes;    /* response bytes held now (reserved for reads, queued, deferred) */
	struct node_dp_stats st;
	struct dp_conn *ready;  /* connections to resume before the loop sleeps */
	struct dp_op *bwait_head, *bwait_tail; /* GETs waiting for the response budget, in order */
	unsigned nconns;        /* connection states alive (open, or held by requests) */
	bool stopped, dying;    /* node_dp_stop(); node_dp_destroy() with states alive */
};

enum { PH_HELLO, PH_OPEN };

/* A response that waits for a GET's payload to finish on the wire. */
struct dp_defer {
	struct dp_defer *next;
	struct ovl_wire_hdr h;
	uint8_t *payload;
	uint64_t plen;
	uint64_t held;    /* counted in resp_bytes */
	size_t mlen;
	uint8_t meta[];
};

/* One connection's protocol state; outlives the connection while requests
 * it started, or responses it queued, are in flight (refs). */
struct dp_conn {
	struct node_dp *dp;
	struct node_conn *c;        /* NULL once the connection is gone */
	unsigned refs;
	struct dp_conn *ready_next; /* on dp->ready (holding a ref) */
	bool on_ready;
	int phase;
	bool admitted;              /* node_conn_admit() took the client's key */
	struct ovl_wire_hs *hs;     /* only while HELLO is judged */
	struct ovl_wire_session ses;
	unsigned inflight;
	/* a PUT payload being received (or skipped after a refusal) */
	bool in_payload, skip;
	uint8_t hdr_bytes[OVL_WIRE_HDR_BYTES];
	struct ovl_wire_hdr hdr;
	struct ovl_wire_req req;
	uint8_t *pay;
	uint64_t pay_len, pay_got;
	uint32_t skip_status;
	char skip_msg[OVL_WIRE_TEXT_SIZE];
	/* a streamed PUT: the request layer's stream, the budget it holds, and
	 * for an encrypted payload the sealed chunk being gathered (`seal`), then
	 * its plaintext [plain_off, plain_end) until the stream has taken it */
	struct node_req_stream *stream;
	uint64_t stream_budget;
	uint8_t *seal;
	struct ovl_wire_opener opener; /* opens the sealed chunks into `seal` */
	size_t plain_off, plain_end;
	/* responses */
	uint64_t resp_bytes;         /* this connection's part of dp->resp_bytes */
	struct dp_op *ord_head, *ord_tail; /* requests not yet in effect, in the order sent */
	bool kicking, kick_again;    /* order_kick() running; run it once more */
	struct dp_op *gets;          /* GETs begun and not over (on op->gnext) */
	unsigned ngets;
	uint32_t pump_seq;           /* resp_release(): GETs pumped in this round */
	struct dp_op *streaming;     /* a GET whose payload is partly on the wire */
	struct dp_defer *defer_head, *defer_tail; /* responses waiting for it */
	uint64_t defer_bytes;        /* their part of resp_bytes */
	bool tx_paused;              /* not read: over its share of the response budget */
};

/* A request in flight; its completion answers it. */
struct dp_op {
	struct dp_conn *dc;
	uint8_t type;
	uint32_t rid;
	uint64_t epoch;
	bool encrypt;
	uint8_t *pay;       /* PUT: the value (freed when done) */
	uint64_t pay_bytes; /* counted against max_payload_bytes */
	struct node_req_stream *stream; /* a streamed PUT waiting for its turn to commit */
	struct ovl_wire_req q;          /* the request (its key, for ordering and a later start) */
	/* ordering: on dc's list until the request has taken effect */
	struct dp_op *oprev, *onext;
	bool in_order, waiting;
	/* a GET in pieces */
	struct node_req_get *g;
	struct dp_op *bnext;   /* on dp's budget wait list */
	bool on_bwait, reading, head_sent;
	struct dp_op *gnext;   /* on dc->gets */
	uint32_t pump_seq;     /* the dc->pump_seq it was last pumped in */
	bool whole;            /* its first read is the whole answer: other GETs may read beside it */
	bool alone;            /* it must read with no other GET of its connection */
	bool over;             /* answered or failed: its end (get_finish) is on its way */
	uint64_t reserved;     /* response budget reserved for the piece being read */
	uint64_t rd_off;       /* where the next read starts in the object */
	uint64_t rd_left;      /* answer bytes not read yet (before the first read: a bound) */
	uint64_t rec;          /* what one read can hold at most: the record's bytes */
	uint64_t bwait_ms;     /* when it started waiting for the budget */
	uint8_t hdr[OVL_WIRE_HDR_BYTES]; /* the response's sealed header (the chunks' aad) */
	uint32_t chunk;        /* index of the next payload chunk */
};

static void stream_drop(struct dp_conn *dc)
{
	node_req_stream_abort(&dc->stream);
	dc->dp->payload_bytes -= dc->stream_budget;
	dc->stream_budget = 0;
	free(dc->seal);
	dc->seal = NULL;
}

static void defer_drop(struct dp_conn *dc)
{
	struct dp_defer *d;

	while ((d = dc->defer_head)) {
		dc->defer_head = d->next;
		dc->dp->resp_bytes -= d->held;
		dc->resp_bytes -= d->held;
		dc->defer_bytes -= d->held;
		free(d->payload);
		free(d);
	}
	dc->defer_tail = NULL;
}

static void dc_unref(struct dp_conn *dc)
{
	struct node_dp *dp = NULL;

	if (--dc->refs)
		return;
	stream_drop(dc);
	defer_drop(dc);
	ovl_wire_hs_destroy(&dc->hs);
	ovl_wire_session_clear(&dc->ses);
	if (dc->pay) {
		dc->dp->payload_bytes -= dc->pay_len;
		free(dc->pay);
	}
	dp = dc->dp;
	free(dc);
	if (--dp->nconns == 0 && dp->dying)
		free(dp);
}

static const struct dp_slice *slice_find(const struct node_dp *dp, const char *name)
{
	for (unsigned i = 0; i < dp->nslices; i++)
		if (strcmp(dp->slices[i].name, name) == 0)
			return &dp->slices[i];
	return NULL;
}

static void free_cb(void *arg, int res)
{
	free(arg);
}

/* Note the connection for the before-sleep hook (which resumes it), never
 * from inside the completion that made room. */
static void dc_mark_ready(struct dp_conn *dc)
{
	struct node_dp *dp = dc->dp;

	if (dc->on_ready)
		return;
	dc->on_ready = true;
	dc->refs++;
	dc->ready_next = dp->ready;
	dp->ready = dc;
}

/* ---- the response budget ---- */

/* The budget a read of n bytes (a whole number of chunks) from off of op's
 * object holds: the store's read buffer, i.e. the chunks of the range (one
 * more when off is inside a chunk), or the whole record (a small one, or
 * the range covers it), and block alignment on both ends. */
static uint64_t read_hold(const struct dp_op *op, uint64_t off, uint64_t n)
{
	uint64_t h = n + (off % OVL_WIRE_CHUNK_BYTES ? OVL_WIRE_CHUNK_BYTES : 0);

	if (op->rec <= DP_STORE_WHOLE_READ_BYTES || h > op->rec)
		h = op->rec;
	return h + DP_PIECE_ALIGN_BYTES;
}

static uint64_t round_chunks(uint64_t n)
{
	uint64_t c = (n + OVL_WIRE_CHUNK_BYTES - 1) / OVL_WIRE_CHUNK_BYTES;

	return (c ? c : 1) * OVL_WIRE_CHUNK_BYTES;
}

/*
 * op's next read: the whole answer in one read when, at its first read,
 * its buffer fits what the connection's share has free (up to
 * NODE_DP_READ_MAX_BYTES), else pieces of resp_piece_bytes. *len: the
 * bytes to ask (whole chunks), *limit: what the connection may hold with
 * it (with a piece: DP_STREAM_PIECES pieces, or the read alone). Returns
 * the budget it reserves, never more than the share (a small record read
 * whole under a share below it: the read alone).
 */
static uint64_t read_plan(struct dp_op *op, size_t *len, uint64_t *limit, bool *is_whole)
{
	struct dp_conn *dc = op->dc;
	struct node_dp *dp = dc->dp;
	uint64_t share = dp->o.resp_conn_bytes, piece = dp->o.resp_piece_bytes;
	uint64_t free_b = share > dc->resp_bytes ? share - dc->resp_bytes : 0;
	uint64_t whole, n, need, stream;

	if (!op->g) {
		/* before the first read: bound it by the record (index only) */
		uint64_t rec = 0;

		op->rd_off = op->q.has_range ? op->q.offset : 0;
		op->rd_left = op->q.has_range ? op->q.length : UINT64_MAX;
		/* no such key, or damaged: the GET fails at its start, and its
		 * answer (a status) is small */
		op->rec = node_req_get_bound(dp->o.req, op->q.key, op->q.key_len, &rec) == 0 ? rec : 0;
		if (op->rd_left > op->rec)
			op->rd_left = op->rec;
	}
	whole = round_chunks(op->rd_left);
	*is_whole = !op->g && whole <= NODE_DP_READ_MAX_BYTES &&
		    read_hold(op, op->rd_off, whole) <= free_b;
	if (*is_whole) {
		n = whole;
		*limit = share;
	} else {
		n = whole < piece ? whole : piece;
		stream = DP_STREAM_PIECES * (piece + DP_PIECE_ALIGN_BYTES);
		*limit = stream < share ? stream : share;
	}
	need = read_hold(op, op->rd_off, n);
	if (need > share)
		need = share;
	if (*limit < need)
		*limit = need;
	*len = (size_t)n;
	return need;
}

/* The connection can take no more response bytes: do not read it. */
static bool dc_over_share(const struct dp_conn *dc)
{
	const struct node_dp *dp = dc->dp;

	return dc->resp_bytes + dp->o.resp_piece_bytes + DP_PIECE_ALIGN_BYTES > dp->o.resp_conn_bytes;
}

static bool get_pump(struct dp_op *op, bool from_wait);

static void bwait_remove(struct dp_op *op)
{
	struct node_dp *dp = op->dc->dp;
	struct dp_op **pp = &dp->bwait_head, *prev = NULL;

	if (!op->on_bwait)
		return;
	while (*pp && *pp != op) {
		prev = *pp;
		pp = &(*pp)->bnext;
	}
	if (*pp)
		*pp = op->bnext;
	if (dp->bwait_tail == op)
		dp->bwait_tail = prev;
	op->bnext = NULL;
	op->on_bwait = false;
}

/* GETs waiting for the node's budget go on, first come first served. */
static void bwait_pump(struct node_dp *dp)
{
	while (dp->bwait_head) {
		struct dp_op *op = dp->bwait_head;

		size_t len;
		uint64_t limit;
		bool whole;

		if (dp->resp_bytes + read_plan(op, &len, &limit, &whole) > dp->o.resp_budget_bytes)
			return;
		bwait_remove(op);
		/* op may be over (and freed) when this returns: only its answer */
		if (get_pump(op, true)) /* cannot happen: there was room; do not spin */
			return;
	}
}

static void resp_hold(struct dp_conn *dc, uint64_t n)
{
	dc->dp->resp_bytes += n;
	dc->resp_bytes += n;
}

/* Response bytes went: the connection's GET may read on, GETs waiting for
 * the node's budget may start, and a connection paused for its share may
 * be read again. */
static void resp_release(struct dp_conn *dc, uint64_t n)
{
	struct node_dp *dp = dc->dp;

	dp->resp_bytes -= n;
	dc->resp_bytes -= n;
	if (dc->c && dc->gets) {
		/* each GET once; the list is scanned again after each, since a
		 * get_pump() may end any of them (an answer that fails at once
		 * ends it, and bwait_pump() may start and end the others) */
		uint32_t seq = ++dc->pump_seq;
		struct dp_op *op;

		dc->refs++;
		while (dc->c) {
			for (op = dc->gets; op && op->pump_seq == seq; op = op->gnext)
				;
			if (!op)
				break;
			op->pump_seq = seq;
			get_pump(op, false);
		}
		dc_unref(dc);
	}
	bwait_pump(dp);
	if (dc->tx_paused && dc->c && !dc_over_share(dc))
		dc_mark_ready(dc);
}

/* A response on its way out: the sealed head (and a copied or sealed
 * payload) in `buf`, and for a GET's piece the read buffer holding it and
 * the tags of its chunks. */
struct dp_tx {
	struct dp_conn *dc;      /* holds a ref while held is counted */
	uint64_t held;
	struct node_req_buf *rb; /* the read buffer holding the payload, or NULL */
	uint8_t buf[];
};

static void tx_done(void *arg, int res)
{
	struct dp_tx *tx = arg;
	struct dp_conn *dc = tx->dc;

	node_req_buf_release(&tx->rb);
	if (dc) {
		resp_release(dc, tx->held);
		dc_unref(dc);
	}
	free(tx);
}

/* Seal and queue a response (payload encrypted when asked), the payload
 * copied after the head. */
static void respond_copy(struct dp_conn *dc, struct ovl_wire_hdr *h, const uint8_t *meta,
			 size_t mlen, const uint8_t *payload, uint64_t plen)
{
	size_t headcap = OVL_WIRE_HDR_BYTES + mlen + OVL_WIRE_MAC_BYTES;
	struct dp_tx *tx = NULL;
	char err[DP_ERR_BYTES];
	uint8_t *out;
	int hl;

	if (!dc->c)
		return;
	tx = malloc(sizeof(*tx) + headcap + h->payload_len);
	if (!tx) {
		node_conn_close(dc->c, false);
		return;
	}
	tx->rb = NULL;
	tx->dc = dc;
	tx->held = sizeof(*tx) + headcap + h->payload_len;
	dc->refs++;
	resp_hold(dc, tx->held);
	out = tx->buf;
	hl = ovl_wire_head_seal(&dc->ses, h, meta, mlen, out, headcap, err, sizeof(err));
	if (hl < 0) {
		tx_done(tx, 0);
		if (dc->c)
			node_conn_close(dc->c, false);
		return;
	}
	if (h->flags & OVL_WIRE_FLAG_ENCRYPTED) {
		ovl_wire_payload_seal(&dc->ses, out, payload, plen, out + hl);
	} else if (plen) {
		memcpy(out + hl, payload, plen);
	}
	if (node_conn_send(dc->c, out, (size_t)hl + h->payload_len, tx_done, tx) < 0)
		tx_done(tx, -EPIPE);
}

/* A response while a GET's payload is on the wire waits for its end (a
 * frame never goes out inside another's payload). */
static void respond_defer(struct dp_conn *dc, const struct ovl_wire_hdr *h, const uint8_t *meta,
			  size_t mlen, const uint8_t *payload, uint64_t plen)
{
	struct dp_defer *d = malloc(sizeof(*d) + mlen);

	if (!d || (plen && !(d->payload = malloc(plen)))) {
		free(d);
		node_conn_close(dc->c, false);
		return;
	}
	d->next = NULL;
	d->h = *h;
	d->mlen = mlen;
	memcpy(d->meta, meta, mlen);
	if (plen)
		memcpy(d->payload, payload, plen);
	else
		d->payload = NULL;
	d->plen = plen;
	d->held = sizeof(*d) + mlen + plen;
	resp_hold(dc, d->held);
	dc->defer_bytes += d->held;
	if (dc->defer_tail)
		dc->defer_tail->next = d;
	else
		dc->defer_head = d;
	dc->defer_tail = d;
}

/* The GET on the wire finished its payload: what waited goes out. */
static void defer_flush(struct dp_conn *dc)
{
	struct dp_defer *d;

	while (!dc->streaming && (d = dc->defer_head)) {
		dc->defer_head = d->next;
		if (!dc->defer_head)
			dc->defer_tail = NULL;
		/* counted again by the response's tx */
		dc->dp->resp_bytes -= d->held;
		dc->resp_bytes -= d->held;
		dc->defer_bytes -= d->held;
		respond_copy(dc, &d->h, d->meta, d->mlen, d->payload, d->plen);
		free(d->payload);
		free(d);
	}
}

/* Encode a response's meta into meta[OVL_WIRE_META_MAX_BYTES]; on our own
 * encoding bug, an internal error instead (payload dropped). The length. */
static int resp_meta(uint8_t type, struct ovl_wire_resp *r, uint8_t *meta, uint64_t *plen)
{
	char err[DP_ERR_BYTES];
	int mlen;

	r->type = type | OVL_WIRE_T_RESPONSE;
	mlen = ovl_wire_resp_encode(r, meta, OVL_WIRE_META_MAX_BYTES, err, sizeof(err));
	if (mlen < 0) {
		/* our own bug; tell the client rather than go silent */
		struct ovl_wire_resp e = { .type = r->type, .status = OVL_WIRE_INTERNAL, .epoch = r->epoch };

		snprintf(e.message, sizeof(e.message), "cannot encode response: %.200s", err);
		mlen = ovl_wire_resp_encode(&e, meta, OVL_WIRE_META_MAX_BYTES, err, sizeof(err));
		*plen = 0;
	}
	return mlen;
}

/* Seal and queue a response (payload encrypted when asked), or keep it
 * until the GET on the wire has finished. */
static void respond(struct dp_conn *dc, uint8_t type, uint32_t rid, struct ovl_wire_resp *r,
		    const uint8_t *payload, uint64_t plen, bool encrypt)
{
	struct ovl_wire_hdr h = { 0 };
	uint8_t meta[OVL_WIRE_META_MAX_BYTES];
	int mlen;

	if (!dc->c)
		return;
	mlen = resp_meta(type, r, meta, &plen);
	if (mlen < 0)
		return;
	h.type = type | OVL_WIRE_T_RESPONSE;
	h.flags = encrypt && plen ? OVL_WIRE_FLAG_ENCRYPTED : 0;
	h.payload_len = h.flags ? ovl_wire_sealed_len(plen) : plen;
	h.rid = rid;
	if (dc->streaming)
		respond_defer(dc, &h, meta, (size_t)mlen, payload, plen);
	else
		respond_copy(dc, &h, meta, (size_t)mlen, payload, plen);
}

static void respond_status(struct dp_conn *dc, uint8_t type, uint32_t rid, uint32_t status,
			   uint64_t epoch, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void respond_status(struct dp_conn *dc, uint8_t type, uint32_t rid, uint32_t status,
			   uint64_t epoch, const char *fmt, ...)
{
	struct ovl_wire_resp r = { .status = status, .epoch = epoch };
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r.message, sizeof(r.message), fmt, ap);
	va_end(ap);
	respond(dc, type, rid, &r, NULL, 0, false);
}

/* The status for a refusal of the request layer: its errno, with the
 * forwarding refusals (req.h, "Replicated writes") named as such. */
static uint32_t req_status(int err)
{
	if (err == -EACCES)
		return OVL_WIRE_AUTH_FAILED; /* a forward from no member of the slice */
	if (err == -EXDEV)
		return OVL_WIRE_WRONG_SLICE; /* a forward for a key not placed here */
	return ovl_wire_errno_to_status(err);
}

/* A forwarded write's version, `fwd` and sender, for the request layer. */
static void fwd_args(const struct dp_conn *dc, const struct ovl_wire_req *q,
		     struct node_req_args *a)
{
	a->ver = q->has_ver ? &q->ver : NULL;
	a->fwd = q->has_fwd ? &q->fwd : NULL;
	a->peer_id = q->has_fwd || q->has_ver ? dc->ses.peer.node_id : NULL;
	a->repair = q->repair;
}

/* The asking node's id for the requests only nodes make (DIGEST, LIST of
 * a bucket) and HEAL from a node; NULL for a client. */
static const uint8_t *node_peer_id(const struct dp_conn *dc)
{
	return dc->ses.peer.role == OVL_ROLE_NODE ? dc->ses.peer.node_id : NULL;
}

/* ---- requests and their order ---- */

static struct dp_op *op_new(struct dp_conn *dc, const struct ovl_wire_hdr *h, uint64_t epoch,
			    bool encrypt)
{
	struct dp_op *op = calloc(1, sizeof(*op));

	if (!op)
		return NULL;
	op->dc = dc;
	op->type = h->type;
	op->rid = h->rid;
	op->epoch = epoch;
	op->encrypt = encrypt;
	dc->refs++;
	dc->inflight++;
	return op;
}

static void op_done(struct dp_op *op)
{
	struct dp_conn *dc = op->dc;

	dc->inflight--;
	dc->dp->payload_bytes -= op->pay_bytes;
	node_req_stream_abort(&op->stream);
	free(op->pay);
	free(op);
	dc_unref(dc);
}

static bool is_write(const struct dp_op *op)
{
	return op->type == OVL_WIRE_T_PUT || op->type == OVL_WIRE_T_DELETE;
}

static bool same_key(const struct dp_op *a, const struct dp_op *b)
{
	return a->q.key_len == b->q.key_len && memcmp(a->q.key, b->q.key, a->q.key_len) == 0;
}

/* A LIST's prefix covers a write's key. */
static bool list_covers(const struct dp_op *list, const struct dp_op *w)
{
	return w->q.key_len >= list->q.key_len && memcmp(w->q.key, list->q.key, list->q.key_len) == 0;
}

/* Must `later` wait until `earlier` has taken effect? Requests on the same
 * key wait when either writes (and a LIST for writes under its prefix).
 * A GET waits for an earlier GET that has not begun (GETs begin in order),
 * or that reads in pieces (its payload occupies the wire); get_may_begin()
 * says the rest. */
static bool op_conflicts(const struct dp_op *earlier, const struct dp_op *later)
{
	if (earlier->type == OVL_WIRE_T_GET && later->type == OVL_WIRE_T_GET)
		return earlier->waiting || !earlier->whole;
	if (!is_write(earlier) && !is_write(later))
		return false;
	if (later->type == OVL_WIRE_T_LIST)
		return list_covers(later, earlier);
	if (earlier->type == OVL_WIRE_T_LIST)
		return list_covers(earlier, later);
	return same_key(earlier, later);
}

/* Whether a GET may begin beside the connection's other GETs: none is
 * reading, or fewer than DP_GETS_AT_ONCE are and its answer will be read
 * whole (a GET read in pieces reads alone). */
static bool get_may_begin(struct dp_op *op)
{
	struct dp_conn *dc = op->dc;
	size_t len;
	uint64_t limit;
	bool whole;

	if (dc->ngets == 0)
		return true;
	if (op->alone || dc->ngets >= DP_GETS_AT_ONCE)
		return false;
	read_plan(op, &len, &limit, &whole);
	return whole;
}

static bool op_may_start(struct dp_op *op)
{
	for (const struct dp_op *e = op->dc->ord_head; e && e != op; e = e->onext)
		if (op_conflicts(e, op))
			return false;
	return op->type != OVL_WIRE_T_GET || get_may_begin(op);
}

static void order_add(struct dp_op *op)
{
	struct dp_conn *dc = op->dc;

	op->oprev = dc->ord_tail;
	op->onext = NULL;
	if (dc->ord_tail)
		dc->ord_tail->onext = op;
	else
		dc->ord_head = op;
	dc->ord_tail = op;
	op->in_order = true;
}

static void op_begin(struct dp_op *op);

/* Start every waiting request that no earlier one holds back any more. */
static void order_kick(struct dp_conn *dc)
{
	if (dc->kicking) {
		dc->kick_again = true;
		return;
	}
	dc->kicking = true;
	do {
		dc->kick_again = false;
		for (struct dp_op *op = dc->ord_head; op; op = op->onext) {
			if (op->waiting && dc->c && op_may_start(op)) {
				op->waiting = false;
				op_begin(op); /* may finish op, and change the list */
				dc->kick_again = true;
				break;
			}
		}
	} while (dc->kick_again);
	dc->kicking = false;
}

/* The request has taken effect (or failed): later ones may go. */
static void op_effected(struct dp_op *op)
{
	struct dp_conn *dc = op->dc;

	if (!op->in_order)
		return;
	if (op->oprev)
		op->oprev->onext = op->onext;
	else
		dc->ord_head = op->onext;
	if (op->onext)
		op->onext->oprev = op->oprev;
	else
		dc->ord_tail = op->oprev;
	op->in_order = false;
	op->oprev = op->onext = NULL;
	order_kick(dc);
}

/* Answered (or dropped): out of the order, and freed. */
static void op_finish(struct dp_op *op)
{
	struct dp_conn *dc = op->dc;

	dc->refs++; /* op_effected may start others; dc stays */
	op_effected(op);
	op_done(op);
	dc_unref(dc);
}

/* Queue a request in the connection's order: started now, or when the
 * earlier requests it waits for have taken effect. */
static void op_submit(struct dp_op *op)
{
	order_add(op);
	if (op_may_start(op)) {
		op_begin(op);
		return;
	}
	op->waiting = true;
}

/* A LIST's keys: encoded as the payload, with their crc. */
static void list_respond(struct dp_op *op, const struct node_req_result *res)
{
	struct dp_conn *dc = op->dc;
	struct ovl_wire_resp r = { .epoch = op->epoch };
	uint8_t *payload = NULL;
	size_t cap = 16;
	int plen;

	for (uint32_t i = 0; i < res->nkeys; i++)
		cap += res->keys[i].len + 8 + (res->vkeys ? 24 : 0);
	payload = malloc(cap);
	if (!payload) {
		respond_status(dc, op->type, op->rid, OVL_WIRE_BUSY, op->epoch, "out of memory for a list");
		return;
	}
	r.more = res->more;
	r.by_set = res->by_set;
	r.count = res->nkeys;
	r.vers = res->vkeys != NULL;
	plen = res->vkeys ? ovl_wire_vkeys_encode(res->vkeys, res->nkeys, payload, cap)
			  : ovl_wire_keys_encode(res->keys, res->nkeys, payload, cap);
	if (plen < 0) {
		respond_status(dc, op->type, op->rid, OVL_WIRE_INTERNAL, op->epoch,
			       "cannot encode the key list");
		free(payload);
		return;
	}
	r.has_crc = true;
	r.crc = ovl_crc32c(0, payload, (size_t)plen);
	respond(dc, op->type, op->rid, &r, payload, (uint64_t)plen, op->encrypt);
	dc->dp->st.lists++;
	free(payload);
}

/* A request's completion (node_req_done_fn), all but GET: answer it. */
static void req_done(void *arg, const struct node_req_result *res, struct node_req_buf **rb)
{
	struct dp_op *op = arg;
	struct dp_conn *dc = op->dc;
	struct ovl_wire_resp r = { .epoch = op->epoch };

	if (res->res < 0) {
		r.status = req_status(res->res);
		snprintf(r.message, sizeof(r.message), "%s", res->msg);
		if (res->tomb && r.status == OVL_WIRE_NOT_FOUND) {
			r.has_ver = r.tomb = true;
			r.ver.hlc = res->ver.hlc;
			r.ver.node = res->ver.node;
		}
		respond(dc, op->type, op->rid, &r, NULL, 0, false);
		op_finish(op);
		return;
	}
	if (res->replicated) {
		/* who holds the write, and its version */
		r.has_ver = true;
		r.ver = res->ver;
		r.has_held = true;
		r.nheld = res->nheld < OVL_WIRE_HELD_MAX ? res->nheld : OVL_WIRE_HELD_MAX;
		memcpy(r.held, res->held, (size_t)r.nheld * OVL_WIRE_NODE_ID_BYTES);
		r.homes = res->homes < r.nheld ? res->homes : r.nheld;
		r.superseded = res->superseded;
	}
	switch (op->type) {
	case OVL_WIRE_T_PUT:
	case OVL_WIRE_T_STAT:
		r.size = res->size;
		r.has_crc = true;
		r.crc = res->crc;
		r.seq = res->seq;
		if (op->type == OVL_WIRE_T_STAT) { /* [0, 0]: written without a version */
			r.has_ver = true;
			r.ver = res->ver;
		}
		break;
	case OVL_WIRE_T_LIST:
		list_respond(op, res);
		op_finish(op);
		return;
	case OVL_WIRE_T_DIGEST:
		/* the digest pairs (PROTOCOL 7.13) */
		r.has_crc = true;
		r.crc = ovl_crc32c(0, res->data, res->len);
		respond(dc, op->type, op->rid, &r, res->data, res->len, op->encrypt);
		op_finish(op);
		return;
	case OVL_WIRE_T_HEAL:
		r.ncounters = res->ncounters < OVL_WIRE_COUNTERS_MAX ? res->ncounters
								     : OVL_WIRE_COUNTERS_MAX;
		memcpy(r.counters, res->counters, r.ncounters * sizeof(r.counters[0]));
		break;
	default:
		break;
	}
	respond(dc, op->type, op->rid, &r, NULL, 0, false);
	op_finish(op);
}

/* ---- a GET, answered in pieces as the connection drains ---- */

static void get_piece_done(void *arg, const struct node_req_result *res, struct node_req_buf **rb);

/* op off its connection's list of GETs begun (when it is on it). */
static void gets_remove(struct dp_op *op)
{
	struct dp_conn *dc = op->dc;

	for (struct dp_op **pp = &dc->gets; *pp; pp = &(*pp)->gnext) {
		if (*pp == op) {
			*pp = op->gnext;
			op->gnext = NULL;
			dc->ngets--;
			break;
		}
	}
}

/* The GET is over (answered, failed or dropped): the next may go. */
static void get_finish(struct dp_op *op)
{
	struct dp_conn *dc = op->dc;

	op->over = true; /* order_drop() leaves it to this call */
	bwait_remove(op);
	node_req_get_end(&op->g);
	if (op->reserved) {
		uint64_t n = op->reserved;

		op->reserved = 0;
		dc->dp->resp_bytes -= n;
		dc->resp_bytes -= n;
	}
	gets_remove(op);
	if (dc->streaming == op) {
		dc->streaming = NULL;
		defer_flush(dc);
	}
	bwait_pump(dc->dp);
	op_finish(op);
}

/* The GET's answer is on the wire but cannot be completed: the GET is
 * over, and the connection closes (after: a close may free the connection
 * state at once, and op with it). */
static void get_abort(struct dp_op *op)
{
	struct dp_conn *dc = op->dc;

	dc->refs++;
	get_finish(op);
	if (dc->c)
		node_conn_close(dc->c, false);
	dc_unref(dc);
}

/* A GET that began beside others but must read alone: it waits, as if
 * it had not begun, until the connection's other GETs are over. */
static void get_unbegin(struct dp_op *op)
{
	gets_remove(op);
	op->alone = true;
	op->waiting = true;
}

/* Read the GET's next piece (its first: start it) when the connection's
 * share and the node's budget have room for it; else it waits, for this
 * connection's sends or (in order) for the node's budget. Whether it went
 * on the budget's wait list (op may be freed when it did not). */
static bool get_pump(struct dp_op *op, bool from_wait)
{
	struct dp_conn *dc = op->dc;
	struct node_dp *dp = dc->dp;
	struct node_req_args a = { .type = NODE_REQ_GET };
	uint64_t need, limit;
	size_t len;
	bool whole;
	int ret;

	if (op->over || op->reading || op->on_bwait || !dc->c ||
	    (op->g && node_req_get_finished(op->g)))
		return false;
	need = read_plan(op, &len, &limit, &whole);
	if (!op->g && !whole && dc->ngets > 1) {
		/* it reads in pieces after all (the others' reads took the
		 * room): it begins again once it is the only one */
		get_unbegin(op);
		return false;
	}
	if (!op->g)
		op->whole = whole;
	/* answers deferred behind this GET's own payload (defer_bytes) drain
	 * only when it ends: they do not hold back its pieces */
	if (dc->resp_bytes - dc->defer_bytes + need > limit)
		return false; /* this connection's sends make room: resp_release() */
	if (dp->resp_bytes + need > dp->o.resp_budget_bytes || (dp->bwait_head && !from_wait)) {
		op->on_bwait = true;
		op->bwait_ms = ovl_mono_ms();
		if (dp->bwait_tail)
			dp->bwait_tail->bnext = op;
		else
			dp->bwait_head = op;
		dp->bwait_tail = op;
		dp->st.resp_waits++;
		return true;
	}
	op->reserved = need;
	resp_hold(dc, need);
	op->reading = true;
	dp->st.resp_reads++;
	{
		uint64_t n = 0;

		for (const struct dp_op *o = dc->gets; o; o = o->gnext)
			n += o->reading;
		if (n > dp->st.gets_together_max)
			dp->st.gets_together_max = n;
	}
	if (op->g) {
		ret = node_req_get_read(op->g, len);
	} else {
		a.slice = op->q.slice;
		a.key = op->q.key;
		a.klen = op->q.key_len;
		a.offset = op->q.has_range ? op->q.offset : 0;
		a.length = op->q.has_range ? op->q.length : UINT64_MAX;
		/* a node its certificate does not name the slice for (repair,
		 * an update's blocks): judged by the request layer */
		if (!ovl_wire_session_allows(&dc->ses, op->q.slice))
			a.peer_id = node_peer_id(dc);
		ret = node_req_get_start(dp->o.req, &a, len, get_piece_done, op, &op->g);
	}
	if (ret < 0) {
		/* over before answering: a send that fails at once releases
		 * bytes, and the pumps that follow must not start it again */
		op->reading = false;
		op->over = true;
		if (!op->head_sent) {
			respond_status(dc, op->type, op->rid, ovl_wire_errno_to_status(ret), op->epoch, "%s",
				       node_req_errmsg(dp->o.req));
			get_finish(op);
		} else {
			get_abort(op); /* the answer cannot be completed */
		}
	}
	return false;
}

/* The GET's answer meta (from its first piece's result) into meta; its
 * length or -EINVAL. */
static int get_meta(struct dp_op *op, const struct node_req_result *res, uint8_t *meta)
{
	struct ovl_wire_resp r = { .epoch = op->epoch };
	uint64_t plen = res->length;
	int mlen;

	r.size = res->size;
	r.offset = res->offset;
	r.has_crc = true;
	r.crc = res->crc;
	r.has_ver = true;
	r.ver.hlc = res->ver.hlc;
	r.ver.node = res->ver.node;
	mlen = resp_meta(op->type, &r, meta, &plen);
	return mlen < 0 || plen != res->length ? -EINVAL : mlen;
}

/* Queue one piece (after the answer's head, for the first): from the read
 * buffer *rb when it can be kept (sealed in place when encrypted, the tags
 * gathered from the tx), else copied. 0 or -errno (close). */
static int get_send_piece(struct dp_op *op, const struct node_req_result *res,
			  struct node_req_buf **rb)
{
	struct dp_conn *dc = op->dc;
	struct node_dp *dp = dc->dp;
	bool first = !op->head_sent, enc = op->encrypt && res->length;
	size_t len = res->len, nchunks = (len + OVL_WIRE_CHUNK_BYTES - 1) / OVL_WIRE_CHUNK_BYTES;
	size_t headcap = 0, tagcap = enc ? nchunks * OVL_WIRE_TAG_BYTES : 0;
	bool keep = rb && *rb;
	struct iovec iov[1 + 2 * (NODE_DP_READ_MAX_BYTES / OVL_WIRE_CHUNK_BYTES)];
	uint8_t meta[OVL_WIRE_META_MAX_BYTES], *p, *tags;
	struct dp_tx *tx = NULL;
	char err[DP_ERR_BYTES];
	uint64_t held;
	unsigned n = 0;
	int mlen = 0, hl;

	if (nchunks > NODE_DP_READ_MAX_BYTES / OVL_WIRE_CHUNK_BYTES)
		return -EINVAL;
	if (first) {
		mlen = get_meta(op, res, meta);
		if (mlen < 0)
			return mlen;
		headcap = OVL_WIRE_HDR_BYTES + (size_t)mlen + OVL_WIRE_MAC_BYTES;
	}
	tx = malloc(sizeof(*tx) + headcap + tagcap + (keep ? 0 : len));
	if (!tx)
		return -ENOMEM;
	tx->dc = dc;
	tx->rb = NULL;
	/* the read's reservation rides with its bytes until they are sent:
	 * all of it while the read buffer is kept (it bounds that buffer),
	 * else cut to the copy */
	held = keep ? op->reserved : sizeof(*tx) + headcap + tagcap + len;
	if (held > op->reserved)
		held = op->reserved;
	dp->resp_bytes -= op->reserved - held;
	dc->resp_bytes -= op->reserved - held;
	tx->held = held;
	op->reserved = 0;
	dc->refs++;
	if (first) {
		struct ovl_wire_hdr h = { 0 };

		h.type = op->type | OVL_WIRE_T_RESPONSE;
		h.flags = enc ? OVL_WIRE_FLAG_ENCRYPTED : 0;
		h.payload_len = enc ? ovl_wire_sealed_len(res->length) : res->length;
		h.rid = op->rid;
		hl = ovl_wire_head_seal(&dc->ses, &h, meta, (size_t)mlen, tx->buf, headcap, err,
					sizeof(err));
		if (hl < 0) {
			tx_done(tx, 0);
			return hl;
		}
		memcpy(op->hdr, tx->buf, OVL_WIRE_HDR_BYTES);
		op->head_sent = true;
		iov[n++] = (struct iovec){ .iov_base = tx->buf, .iov_len = (size_t)hl };
	}
	tags = tx->buf + headcap;
	if (keep) {
		tx->rb = *rb;
		*rb = NULL;
		p = (uint8_t *)res->data;
	} else {
		p = tags + tagcap;
		if (len)
			memcpy(p, res->data, len);
	}
	if (!enc && len) {
		iov[n++] = (struct iovec){ .iov_base = p, .iov_len = len };
	} else if (enc) {
		for (size_t off = 0, i = 0; off < len; off += OVL_WIRE_CHUNK_BYTES, i++) {
			size_t k = len - off < OVL_WIRE_CHUNK_BYTES ? len - off : OVL_WIRE_CHUNK_BYTES;
			uint8_t *tag = tags + i * OVL_WIRE_TAG_BYTES;

			ovl_wire_chunk_seal_detached(&dc->ses, op->hdr, op->chunk++, p + off, k, tag);
			iov[n++] = (struct iovec){ .iov_base = p + off, .iov_len = k };
			iov[n++] = (struct iovec){ .iov_base = tag, .iov_len = OVL_WIRE_TAG_BYTES };
		}
	}
	if (node_conn_sendv(dc->c, iov, n, tx_done, tx) < 0)
		tx_done(tx, -EPIPE);
	return 0;
}

/* A piece of a GET (node_req_done_fn): the first one answers (or the
 * GET's failure does); each goes out as it is read, and the next is read
 * when there is room for it. */
static void get_piece_done(void *arg, const struct node_req_result *res, struct node_req_buf **rb)
{
	struct dp_op *op = arg;
	struct dp_conn *dc = op->dc;
	struct ovl_wire_resp r = { .epoch = op->epoch };
	bool first = !op->head_sent;

	op->reading = false;
	if (!dc->c) {
		get_finish(op);
		return;
	}
	if (res->res < 0) {
		op->over = true; /* as in get_pump(): not started again while answered */
		if (first) {
			r.status = ovl_wire_errno_to_status(res->res);
			snprintf(r.message, sizeof(r.message), "%s", res->msg);
			respond(dc, op->type, op->rid, &r, NULL, 0, false);
			get_finish(op);
		} else {
			/* the head promised bytes that cannot come: end the connection */
			get_abort(op);
		}
		return;
	}
	if (first) {
		op->rd_off = res->offset;
		op->rd_left = res->length;
	}
	op->rd_off += res->len;
	op->rd_left -= res->len < op->rd_left ? res->len : op->rd_left;
	if (first && res->len < res->length)
		dc->streaming = op; /* more pieces follow: other answers wait */
	if (get_send_piece(op, res, rb) < 0) {
		get_abort(op);
		return;
	}
	dc->dp->st.get_bytes += res->len;
	if (node_req_get_finished(op->g)) {
		get_finish(op);
		return;
	}
	dc->refs++;
	get_pump(op, false);
	bwait_pump(dc->dp); /* the piece's reservation may have shrunk */
	dc_unref(dc);
}

/* Start a request that no earlier one holds back. */
static void op_begin(struct dp_op *op)
{
	struct dp_conn *dc = op->dc;
	struct node_dp *dp = dc->dp;
	struct node_req_args a = { .slice = op->q.slice, .key = op->q.key, .klen = op->q.key_len };
	int ret;

	switch (op->type) {
	case OVL_WIRE_T_GET:
		op->gnext = dc->gets;
		dc->gets = op;
		dc->ngets++;
		get_pump(op, false);
		return;
	case OVL_WIRE_T_PUT:
		if (op->stream) {
			ret = node_req_stream_finish(&op->stream, req_done, op);
			break;
		}
		a.type = NODE_REQ_PUT;
		a.val = op->pay;
		a.size = op->q.size;
		a.crc = op->q.crc;
		fwd_args(dc, &op->q, &a);
		ret = node_req_start(dp->o.req, &a, req_done, op);
		break;
	case OVL_WIRE_T_DELETE:
		a.type = NODE_REQ_DELETE;
		fwd_args(dc, &op->q, &a);
		/* a node's plain DELETE its certificate does not allow (the chunk
		 * GC's, of fe x8 keys): judged by the slice's membership */
		if (!a.peer_id && !ovl_wire_session_allows(&dc->ses, op->q.slice))
			a.peer_id = node_peer_id(dc);
		ret = node_req_start(dp->o.req, &a, req_done, op);
		break;
	case OVL_WIRE_T_STAT:
		a.type = NODE_REQ_STAT;
		ret = node_req_start(dp->o.req, &a, req_done, op);
		break;
	case OVL_WIRE_T_LIST:
		a.type = NODE_REQ_LIST;
		a.after = op->q.after_len ? op->q.after : NULL;
		a.after_len = op->q.after_len;
		a.limit = op->q.limit ? op->q.limit : OVL_WIRE_LIST_MAX;
		a.vers = op->q.vers;
		a.has_bucket = op->q.has_bucket;
		a.bucket = op->q.bucket;
		a.bucket_set = op->q.has_bucket_set ? op->q.bucket_set : NULL;
		/* a bucket's LIST, or one of fe x8 keys its certificate does not
		 * allow (chunk GC): the asking node, judged by membership */
		if (op->q.has_bucket || !ovl_wire_session_allows(&dc->ses, op->q.slice))
			a.peer_id = node_peer_id(dc);
		/* answered before this returns: op is not touched after */
		ret = node_req_start(dp->o.req, &a, req_done, op);
		break;
	case OVL_WIRE_T_DIGEST:
		a.type = NODE_REQ_DIGEST;
		a.buckets = op->q.buckets;
		a.peer_id = node_peer_id(dc);
		/* answered from the loop, maybe ticks later */
		ret = node_req_start(dp->o.req, &a, req_done, op);
		break;
	case OVL_WIRE_T_HEAL:
		a.type = NODE_REQ_HEAL;
		a.check_only = op->q.check_only;
		a.has_rate = op->q.has_rate;
		a.rate = op->q.rate;
		a.has_duty = op->q.has_duty;
		a.duty = op->q.duty;
		a.peer_id = node_peer_id(dc);
		/* answered before this returns */
		ret = node_req_start(dp->o.req, &a, req_done, op);
		break;
	default:
		ret = -EINVAL;
		break;
	}
	if (ret < 0) {
		respond_status(dc, op->type, op->rid, req_status(ret), op->epoch, "%s",
			       node_req_errmsg(dp->o.req));
		op_finish(op);
	}
}

/* The connection is gone: requests that never started are dropped (a PUT
 * that waited stores nothing); a GET stops at its next piece. */
static void order_drop(struct dp_conn *dc)
{
	struct dp_op *op = dc->ord_head, *next;

	dc->refs++;
	for (; op; op = next) {
		next = op->onext;
		if (op->waiting) {
			op->waiting = false;
			op_finish(op);
		} else if (op->type == OVL_WIRE_T_GET && !op->reading && !op->over) {
			/* a GET begun: stops here, or at its read's end (one that is
			 * over is being ended by whoever set it) */
			get_finish(op);
		}
	}
	dc_unref(dc);
}

/* NODE-STAT: the node's counters, as the request layer reports them, and
 * the session's: the memory its answers and PUT payloads hold now. */
static void do_node_stat(struct dp_conn *dc, const struct ovl_wire_hdr *h, const char *slice,
			 uint64_t epoch)
{
	struct ovl_wire_resp r = { .epoch = epoch };

	const struct {
		const char *name;
		uint64_t value;
	} own[] = {
		{ "response_bytes_held", dc->dp->resp_bytes }, /* GET pieces, queued answers */
		{ "put_bytes_held", dc->dp->payload_bytes },   /* buffered and streaming PUTs */
		{ "get_bytes", dc->dp->st.get_bytes },         /* GET answers' value bytes sent */
	};

	/* a node asking is one that wants its hints back: hand them off now */
	if (dc->ses.peer.role == OVL_ROLE_NODE)
		node_req_hint_poke(dc->dp->o.req, dc->ses.peer.node_id);
	/* the heal counters are the request's slice's */
	r.ncounters = node_req_counters(dc->dp->o.req, slice, r.counters, OVL_WIRE_COUNTERS_MAX);
	for (size_t i = 0; i < sizeof(own) / sizeof(own[0]) && r.ncounters < OVL_WIRE_COUNTERS_MAX; i++) {
		snprintf(r.counters[r.ncounters].name, sizeof(r.counters[0].name), "%s", own[i].name);
		r.counters[r.ncounters++].value = own[i].value;
	}
	respond(dc, h->type, h->rid, &r, NULL, 0, false);
}

/* MAP: the signed map the control plane holds, as it is (never encrypted:
 * the broker's signature protects it, and it is public to the slice). */
static void do_map(struct dp_conn *dc, const struct ovl_wire_hdr *h, const struct ovl_wire_req *q,
		   uint64_t epoch)
{
	struct node_dp *dp = dc->dp;
	struct ovl_wire_resp r = { .epoch = epoch };
	uint8_t *buf = NULL;
	size_t len = 0;
	int ret = dp->o.map_get ? dp->o.map_get(dp->o.map_arg, q->slice, &buf, &len) : -ENOENT;

	if (ret < 0) {
		respond_status(dc, h->type, h->rid, ret == -ENOENT ? OVL_WIRE_NOT_FOUND : OVL_WIRE_INTERNAL,
			       epoch, "%s", ret == -ENOENT ? "this node holds no signed map of the slice"
			       : "cannot encode the map");
		return;
	}
	r.has_crc = true;
	r.crc = ovl_crc32c(0, buf, len);
	respond(dc, h->type, h->rid, &r, buf, len, false);
	dp->st.maps++;
	free(buf);
}

/* A PUT's arguments for the request layer: the key, the declared size and
 * crc32c (the value, when buffered, is added by the caller). */
static struct node_req_args put_args(const struct dp_conn *dc)
{
	struct node_req_args a = { .type = NODE_REQ_PUT };

	a.slice = dc->req.slice;
	a.key = dc->req.key;
	a.klen = dc->req.key_len;
	a.size = dc->req.size;
	a.crc = dc->req.crc;
	fwd_args(dc, &dc->req, &a);
	return a;
}

/* A complete PUT payload: decrypt, check, hand it to the request layer. */
static void put_payload_done(struct dp_conn *dc)
{
	struct node_dp *dp = dc->dp;
	const struct dp_slice *sl = slice_find(dp, dc->req.slice);
	struct dp_op *op = NULL;
	uint64_t plain = dc->pay_len;

	dc->in_payload = false;
	if (dc->skip) {
		respond_status(dc, dc->hdr.type, dc->hdr.rid, dc->skip_status, sl ? sl->epoch : 0, "%s",
			       dc->skip_msg);
		return;
	}
	if (dc->stream) {
		uint32_t crc = node_req_stream_crc(dc->stream);

		if (crc != dc->req.crc) {
			dp->st.checksum_mismatch++;
			stream_drop(dc);
			respond_status(dc, dc->hdr.type, dc->hdr.rid, OVL_WIRE_CHECKSUM_MISMATCH, sl->epoch,
				       "payload crc32c %08x does not match the request's %08x; nothing stored",
				       crc, dc->req.crc);
			return;
		}
		op = op_new(dc, &dc->hdr, sl->epoch, false);
		if (!op) {
			stream_drop(dc);
			respond_status(dc, dc->hdr.type, dc->hdr.rid, OVL_WIRE_BUSY, sl->epoch, "out of memory");
			return;
		}
		/* the stream's buffers stay busy until the commit: so does the budget */
		op->pay_bytes = dc->stream_budget;
		dc->stream_budget = 0;
		free(dc->seal);
		dc->seal = NULL;
		op->stream = dc->stream;
		dc->stream = NULL;
		op->q = dc->req;
		dp->st.puts++;
		op_submit(op); /* commits when earlier requests on the key have taken effect */
		return;
	}
	if (dc->hdr.flags & OVL_WIRE_FLAG_ENCRYPTED) {
		uint32_t bad = 0;

		if (ovl_wire_payload_open(&dc->ses, dc->hdr_bytes, dc->pay, dc->pay_len, &plain,
					  &bad) < 0) {
			dp->st.auth_failures++;
			respond_status(dc, dc->hdr.type, dc->hdr.rid, OVL_WIRE_AUTH_FAILED, sl->epoch,
				       "payload chunk %" PRIu32 " failed authentication", bad);
			goto drop;
		}
	}
	if (plain != dc->req.size) {
		respond_status(dc, dc->hdr.type, dc->hdr.rid, OVL_WIRE_BAD_REQUEST, sl->epoch,
			       "payload has %" PRIu64 " bytes, the request says %" PRIu64, plain,
			       dc->req.size);
		goto drop;
	}
	if (ovl_crc32c(0, dc->pay, plain) != dc->req.crc) {
		dp->st.checksum_mismatch++;
		respond_status(dc, dc->hdr.type, dc->hdr.rid, OVL_WIRE_CHECKSUM_MISMATCH, sl->epoch,
			       "payload crc32c %08x does not match the request's %08x; nothing stored",
			       ovl_crc32c(0, dc->pay, plain), dc->req.crc);
		goto drop;
	}
	op = op_new(dc, &dc->hdr, sl->epoch, false);
	if (!op) {
		respond_status(dc, dc->hdr.type, dc->hdr.rid, OVL_WIRE_BUSY, sl->epoch, "out of memory");
		goto drop;
	}
	op->pay = dc->pay;
	op->pay_bytes = dc->pay_len;
	dc->pay = NULL;
	op->q = dc->req;
	op->q.size = plain;
	dp->st.puts++;
	op_submit(op);
	return;
drop:
	dp->payload_bytes -= dc->pay_len;
	free(dc->pay);
	dc->pay = NULL;
}

/* The stream failed: skip the rest of the payload, then answer. */
static void stream_fail(struct dp_conn *dc, uint32_t status, const char *msg)
{
	stream_drop(dc);
	dc->skip = true;
	dc->skip_status = status;
	snprintf(dc->skip_msg, sizeof(dc->skip_msg), "%s", msg);
}

/* Hand the decrypted chunk to the stream. false: it must wait (paused). */
static bool stream_plain(struct dp_conn *dc)
{
	while (dc->stream && dc->plain_off < dc->plain_end) {
		ssize_t w = node_req_stream_write(dc->stream, dc->seal + dc->plain_off,
						  dc->plain_end - dc->plain_off);

		if (w < 0) {
			stream_fail(dc, ovl_wire_errno_to_status((int)w), node_req_errmsg(dc->dp->o.req));
			return true;
		}
		if (w == 0)
			return false;
		dc->plain_off += (size_t)w;
	}
	return true;
}

/* Streamed payload bytes; returns how many were taken (the connection is
 * paused when the stream cannot take more). */
static size_t stream_bytes(struct dp_conn *dc, const uint8_t *buf, size_t n)
{
	size_t used = 0;

	if (!(dc->hdr.flags & OVL_WIRE_FLAG_ENCRYPTED)) {
		ssize_t w = node_req_stream_write(dc->stream, buf, n);

		if (w < 0) {
			stream_fail(dc, ovl_wire_errno_to_status((int)w), node_req_errmsg(dc->dp->o.req));
			return n;
		}
		if ((size_t)w < n)
			node_conn_pause(dc->c);
		return (size_t)w;
	}
	while (used < n && dc->stream) {
		size_t plain = 0;
		ssize_t t;

		if (!stream_plain(dc)) {
			node_conn_pause(dc->c);
			return used;
		}
		if (!dc->stream)
			break;
		t = ovl_wire_opener_feed(&dc->opener, dc->seal, buf + used, n - used, &plain);
		if (t < 0) {
			char msg[80];

			dc->dp->st.auth_failures++;
			snprintf(msg, sizeof(msg), "payload chunk %" PRIu32 " failed authentication",
				 dc->opener.idx);
			stream_fail(dc, OVL_WIRE_AUTH_FAILED, msg);
			break;
		}
		used += (size_t)t;
		if (!plain)
			break;
		dc->plain_off = 0;
		dc->plain_end = plain;
	}
	if (dc->stream && !stream_plain(dc))
		node_conn_pause(dc->c);
	return dc->stream ? used : n;
}

/* A streamed PUT is complete when every byte arrived and the stream took
 * every plaintext byte. */
static bool stream_complete(const struct dp_conn *dc)
{
	return dc->pay_got == dc->pay_len && (!dc->stream || dc->plain_off == dc->plain_end);
}

/* A paused stream can take more: go on with the connection's bytes (from
 * the before-sleep hook, not from inside the stream's completion). */
static void stream_resume(struct dp_conn *dc)
{
	if (!dc->c || !dc->in_payload)
		return;
	if (!stream_plain(dc))
		return; /* still full: `ready` comes again */
	if (stream_complete(dc)) {
		/* the last bytes arrived earlier: nothing more will call on_data */
		put_payload_done(dc);
		if (dc->c)
			node_conn_frame_done(dc->c);
	}
	if (dc->c)
		node_conn_resume(dc->c);
}

/* The stream's `ready` (from a completion on the loop): note the
 * connection, which the before-sleep hook resumes, so that the bytes it
 * holds never re-enter the stream from inside the stream's own completion. */
static void stream_ready(void *arg)
{
	dc_mark_ready(arg);
}

/* Before the loop sleeps: resume the streams that became ready, and the
 * connections whose answers drained below their share. */
static void dp_before_sleep(void *arg)
{
	struct node_dp *dp = arg;

	while (dp->ready) {
		struct dp_conn *dc = dp->ready;

		dp->ready = dc->ready_next;
		dc->ready_next = NULL;
		dc->on_ready = false;
		if (dc->tx_paused) {
			if (dc->c && !dc_over_share(dc)) {
				dc->tx_paused = false;
				node_conn_resume(dc->c);
			}
		} else {
			stream_resume(dc);
		}
		dc_unref(dc);
	}
}

/* Consume payload bytes of the current PUT. */
static ssize_t payload_bytes(struct dp_conn *dc, const uint8_t *buf, size_t len, bool *in_frame)
{
	uint64_t want = dc->pay_len - dc->pay_got;
	size_t n = len < want ? len : (size_t)want;

	if (dc->stream) {
		n = stream_bytes(dc, buf, n);
		dc->pay_got += n;
		*in_frame = !stream_complete(dc);
		if (!*in_frame)
			put_payload_done(dc);
		return (ssize_t)n;
	}
	if (!dc->skip)
		memcpy(dc->pay + dc->pay_got, buf, n);
	dc->pay_got += n;
	*in_frame = dc->pay_got < dc->pay_len;
	if (dc->pay_got == dc->pay_len)
		put_payload_done(dc);
	return (ssize_t)n;
}

/* Start streaming a large PUT into the request layer; on failure set dc->skip with
 * the refusal in *status and *msg. */
static void stream_begin(struct dp_conn *dc, const struct ovl_wire_hdr *h, uint32_t *status,
			 const char **msg)
{
	struct node_dp *dp = dc->dp;
	struct node_req_args a = put_args(dc);
	bool enc = h->flags & OVL_WIRE_FLAG_ENCRYPTED;
	uint64_t plain = h->payload_len, budget;
	int ret;

	if (enc && ovl_wire_plain_len(h->payload_len, &plain) < 0)
		plain = UINT64_MAX;
	if (plain != dc->req.size) {
		dc->skip = true;
		*status = OVL_WIRE_BAD_REQUEST;
		snprintf(dc->skip_msg, sizeof(dc->skip_msg),
			 "payload has %" PRIu64 " bytes, the request says %" PRIu64, plain, dc->req.size);
		*msg = NULL;
		return;
	}
	budget = node_req_stream_bytes(dp->o.req) + (enc ? DP_SEALED_CHUNK_BYTES : 0);
	if (dp->payload_bytes + budget > dp->o.max_payload_bytes) {
		dp->st.refused_busy++;
		dc->skip = true;
		*status = OVL_WIRE_BUSY;
		*msg = "node busy: too many bytes of payload in flight; retry";
		return;
	}
	if (enc) {
		dc->seal = malloc(DP_SEALED_CHUNK_BYTES);
		if (!dc->seal) {
			dc->skip = true;
			*status = OVL_WIRE_BUSY;
			*msg = "out of memory for the payload";
			return;
		}
		dc->plain_off = dc->plain_end = 0;
		if (ovl_wire_opener_init(&dc->opener, &dc->ses, dc->hdr_bytes) < 0) {
			free(dc->seal);
			dc->seal = NULL;
			dc->skip = true;
			*status = OVL_WIRE_BAD_REQUEST;
			*msg = "the encrypted payload's length is no run of chunks";
			return;
		}
	}
	a.size = plain;
	ret = node_req_stream_begin(dp->o.req, &a, stream_ready, dc, &dc->stream);
	if (ret < 0) {
		free(dc->seal);
		dc->seal = NULL;
		dc->skip = true;
		*status = req_status(ret);
		*msg = node_req_errmsg(dp->o.req);
		return;
	}
	dc->stream_budget = budget;
	dp->payload_bytes += budget;
}

/* Set up the reception of a PUT's payload, or its skipping after a refusal. */
static void payload_begin(struct dp_conn *dc, const struct ovl_wire_hdr *h, uint32_t status,
			  const char *msg)
{
	struct node_dp *dp = dc->dp;

	dc->in_payload = true;
	dc->pay_len = h->payload_len;
	dc->pay_got = 0;
	dc->skip = status != OVL_WIRE_OK;
	if (!dc->skip && dc->req.size > DP_STREAM_MIN_BYTES) {
		stream_begin(dc, h, &status, &msg); /* its own budget check */
	} else if (!dc->skip && dp->payload_bytes + h->payload_len > dp->o.max_payload_bytes) {
		dp->st.refused_busy++;
		dc->skip = true;
		status = OVL_WIRE_BUSY;
		msg = "node busy: too many bytes of payload in flight; retry";
	} else if (!dc->skip) {
		dc->pay = malloc(h->payload_len ? h->payload_len : 1);
		if (!dc->pay) {
			dc->skip = true;
			status = OVL_WIRE_BUSY;
			msg = "out of memory for the payload";
		} else {
			dp->payload_bytes += h->payload_len;
		}
	}
	dc->skip_status = status;
	if (msg)
		snprintf(dc->skip_msg, sizeof(dc->skip_msg), "%s", msg);
	if (h->payload_len == 0)
		put_payload_done(dc);
}

/* A request without a payload: to the request layer, in the connection's
 * order, whose completion answers it (NODE-STAT and MAP are answered here). */
static void dispatch(struct dp_conn *dc, const struct ovl_wire_hdr *h, const struct ovl_wire_req *q,
		     const struct dp_slice *sl)
{
	struct node_dp *dp = dc->dp;
	struct dp_op *op = NULL;

	switch (h->type) {
	case OVL_WIRE_T_NODE_STAT:
		do_node_stat(dc, h, q->slice, sl->epoch);
		return;
	case OVL_WIRE_T_MAP:
		do_map(dc, h, q, sl->epoch);
		return;
	case OVL_WIRE_T_GET:
		dp->st.gets++;
		break;
	case OVL_WIRE_T_DELETE:
		dp->st.deletes++;
		break;
	case OVL_WIRE_T_STAT:
		dp->st.stats++;
		break;
	case OVL_WIRE_T_LIST:
	case OVL_WIRE_T_DIGEST:
	case OVL_WIRE_T_HEAL:
		break;
	default:
		respond_status(dc, h->type, h->rid, OVL_WIRE_BAD_REQUEST, sl->epoch, "unknown request type");
		return;
	}
	op = op_new(dc, h, sl->epoch, sl->encrypt);
	if (!op) {
		respond_status(dc, h->type, h->rid, OVL_WIRE_BUSY, sl->epoch, "out of memory");
		return;
	}
	op->q = *q;
	op_submit(op);
}

static ssize_t hello(struct dp_conn *dc, const uint8_t *buf, size_t len, bool *in_frame)
{
	struct node_dp *dp = dc->dp;
	struct ovl_wire_hdr h;
	uint8_t *out = NULL;
	size_t need = 0, hl, outlen = 0;
	char err[DP_ERR_BYTES];
	int ret;

	ret = ovl_wire_head_need(buf, len, false, &h, &need, err, sizeof(err));
	if (ret == 0 && need) {
		*in_frame = true;
		return 0;
	}
	hl = ret == 0 ? ovl_wire_head_len(&h, false) : len;
	/* the handshake state (16 KiB and more) exists only while HELLO is
	 * judged, so that connections that send nothing hold little */
	{
		struct ovl_wire_hs_cfg cfg = { 0 };

		cfg.id = dp->o.id;
		cfg.cert = dp->cert;
		cfg.cert_len = dp->cert_len;
		cfg.peers = dp->o.peers;
		cfg.now = dp->o.now_s(dp->o.now_arg);
		if (ovl_wire_server_new(&dc->hs, &cfg, err, sizeof(err)) < 0)
			return -ENOMEM;
	}
	out = malloc(OVL_WIRE_HEAD_MAX_BYTES);
	if (!out)
		return -ENOMEM;
	ret = ovl_wire_server_hello(dc->hs, buf, ret == 0 ? hl : len, out, OVL_WIRE_HEAD_MAX_BYTES,
				    &outlen, err, sizeof(err));
	if (outlen && node_conn_send(dc->c, out, outlen, free_cb, out) == 0)
		out = NULL;
	free(out);
	if (ret < 0) {
		dp->st.handshake_failures++;
		ovl_wire_hs_destroy(&dc->hs);
		node_conn_close(dc->c, true); /* the ERROR frame goes out first */
		return (ssize_t)len;
	}
	ovl_wire_hs_session(dc->hs, &dc->ses);
	ovl_wire_hs_destroy(&dc->hs);
	dc->phase = PH_OPEN;
	dp->st.handshakes++;
	return (ssize_t)hl;
}

static ssize_t dp_data(void *arg, struct node_conn *c, const uint8_t *buf, size_t len,
		       bool *in_frame)
{
	struct dp_conn *dc = node_conn_data(c);
	struct node_dp *dp = dc->dp;
	struct ovl_wire_hdr h;
	struct ovl_wire_req *q = &dc->req;
	const struct dp_slice *sl;
	const uint8_t *meta = NULL;
	size_t need = 0, hl;
	char err[DP_ERR_BYTES];
	int ret;

	if (dc->phase == PH_HELLO)
		return hello(dc, buf, len, in_frame);
	if (dc->in_payload)
		return payload_bytes(dc, buf, len, in_frame);
	if (dc_over_share(dc)) {
		/* its answers are not being read: take no more requests until
		 * they drain (resp_release() resumes it) */
		dc->tx_paused = true;
		dp->st.paused_for_responses++;
		node_conn_pause(c);
		return 0;
	}
	ret = ovl_wire_head_need(buf, len, true, &h, &need, err, sizeof(err));
	if (ret < 0)
		return ret; /* malformed or oversized from the header alone: close */
	if (h.type & OVL_WIRE_T_RESPONSE) {
		/* a client sends requests only: a rule of section 7 broken, close */
		dp->st.response_frames++;
		return -EPROTO;
	}
	if (need) {
		*in_frame = true;
		return 0;
	}
	hl = ovl_wire_head_len(&h, true);
	ret = ovl_wire_head_open(&dc->ses, buf, hl, &h, &meta, err, sizeof(err));
	if (ret < 0) {
		dp->st.auth_failures++;
		return ret; /* forged, tampered or replayed: nothing to answer */
	}
	if (!dc->admitted) {
		/* the first MAC proved the client's key: it is authenticated now,
		 * unless its key already holds its share of the connections */
		if (node_conn_admit(c, dc->ses.peer.curve_pk) < 0) {
			dp->st.refused_key++;
			dp->st.refused_busy++;
			respond_status(dc, h.type, h.rid, OVL_WIRE_BUSY, 0,
				       "node busy: this client key holds %u connections already; retry",
				       dp->o.max_conns_per_key);
			node_conn_close(c, true);
			return (ssize_t)len;
		}
		dc->admitted = true;
	}
	memcpy(dc->hdr_bytes, buf, OVL_WIRE_HDR_BYTES);
	dc->hdr = h;
	dp->st.requests++;
	ret = ovl_wire_req_decode(h.type, meta, h.meta_len, q, err, sizeof(err));
	sl = ret == 0 ? slice_find(dp, q->slice) : NULL;
	if (ret < 0) {
		if (h.type == OVL_WIRE_T_PUT)
			payload_begin(dc, &h, OVL_WIRE_BAD_REQUEST, err);
		else
			respond_status(dc, h.type, h.rid, OVL_WIRE_BAD_REQUEST, 0, "%s", err);
		return (ssize_t)hl;
	}
	{
		uint32_t status = OVL_WIRE_OK;
		char msg[OVL_WIRE_TEXT_SIZE] = "";

		/* a node's certificate names no slices: its forwarded writes are
		 * judged by the slice's membership in the request layer */
		bool node_fwd = dc->ses.peer.role == OVL_ROLE_NODE &&
				(q->has_fwd || q->has_ver || h.type == OVL_WIRE_T_NODE_STAT ||
				 h.type == OVL_WIRE_T_STAT ||
				 h.type == OVL_WIRE_T_GET || /* repair: a damaged copy fetched again */
				 h.type == OVL_WIRE_T_DIGEST || h.type == OVL_WIRE_T_HEAL ||
				 (h.type == OVL_WIRE_T_LIST && q->has_bucket) ||
				 /* chunk GC: a member deletes and lists large
				  * objects' reserved keys (fe x8) only */
				 ((h.type == OVL_WIRE_T_DELETE || h.type == OVL_WIRE_T_LIST) &&
				  ovl_large_key_reserved(q->key, q->key_len)));
		/* digests and bucket listings are between the slice's nodes */
		bool node_only = h.type == OVL_WIRE_T_DIGEST ||
				 (h.type == OVL_WIRE_T_LIST && q->has_bucket);

		if (!sl || (!node_fwd && !ovl_wire_session_allows(&dc->ses, q->slice))) {
			dp->st.wrong_slice++;
			status = OVL_WIRE_WRONG_SLICE;
			snprintf(msg, sizeof(msg), "%s slice '%s'",
				 sl ? "this client may not use" : "this node does not serve", q->slice);
		} else if (q->epoch < sl->epoch && h.type != OVL_WIRE_T_MAP) {
			/* MAP is how a client with an old (or no) map gets the new one */
			dp->st.stale_map++;
			status = OVL_WIRE_STALE_MAP;
			snprintf(msg, sizeof(msg), "map epoch %" PRIu64 " is stale; the node has %" PRIu64,
				 q->epoch, sl->epoch);
		} else if (node_only && dc->ses.peer.role != OVL_ROLE_NODE) {
			status = OVL_WIRE_AUTH_FAILED;
			snprintf(msg, sizeof(msg), "%s is for node certificates only",
				 h.type == OVL_WIRE_T_DIGEST ? "DIGEST" : "a LIST of a bucket");
		} else if ((q->has_fwd || q->has_ver) && dc->ses.peer.role != OVL_ROLE_NODE) {
			/* only nodes forward writes (and carry versions) */
			dp->st.refused_forward++;
			status = OVL_WIRE_AUTH_FAILED;
			snprintf(msg, sizeof(msg), "a %s certificate cannot forward writes",
				 ovl_role_name(dc->ses.peer.role) ? ovl_role_name(dc->ses.peer.role) : "non-node");
		} else if (h.type == OVL_WIRE_T_PUT && sl->encrypt &&
			   !(h.flags & OVL_WIRE_FLAG_ENCRYPTED) && h.payload_len) {
			status = OVL_WIRE_BAD_REQUEST;
			snprintf(msg, sizeof(msg), "slice '%s' requires encrypted payloads", q->slice);
		} else if (dc->inflight >= dp->o.max_inflight) {
			dp->st.refused_busy++;
			status = OVL_WIRE_BUSY;
			snprintf(msg, sizeof(msg), "more than %u requests in flight on this connection",
				 dp->o.max_inflight);
		}
		if (h.type == OVL_WIRE_T_PUT) {
			payload_begin(dc, &h, status, msg);
			*in_frame = dc->in_payload;
			return (ssize_t)hl;
		}
		if (status != OVL_WIRE_OK) {
			respond_status(dc, h.type, h.rid, status, sl ? sl->epoch : 0, "%s", msg);
			return (ssize_t)hl;
		}
	}
	dispatch(dc, &h, q, sl);
	return (ssize_t)hl;
}

static int dp_open(void *arg, struct node_conn *c)
{
	struct node_dp *dp = arg;
	struct dp_conn *dc = calloc(1, sizeof(*dc));

	if (!dc)
		return -ENOMEM;
	dc->dp = dp;
	dc->c = c;
	dc->refs = 1;
	dp->nconns++;
	node_conn_set_data(c, dc);
	return 0;
}

static void dp_close(void *arg, struct node_conn *c, int reason)
{
	struct dp_conn *dc = node_conn_data(c);

	if (!dc)
		return;
	dc->c = NULL;
	stream_drop(dc); /* nothing of an unfinished PUT becomes visible */
	order_drop(dc);  /* nor of one that waited for its turn */
	defer_drop(dc);
	dc_unref(dc);
}

/* The server closes the connection (evicted, handshake deadline, stall):
 * tell the client why where the protocol has a way to. */
static void dp_expire(void *arg, struct node_conn *c, int why)
{
	struct node_dp *dp = arg;
	struct dp_conn *dc = node_conn_data(c);
	const struct dp_slice *sl = NULL;

	if (!dc)
		return;
	if (dc->phase == PH_HELLO) {
		/* no keys yet: an ERROR frame */
		uint32_t status = why == NODE_SERVE_EXPIRE_EVICTED ? OVL_WIRE_BUSY : OVL_WIRE_TIMEOUT;
		char msg[OVL_WIRE_TEXT_SIZE];
		uint8_t *buf = malloc(OVL_WIRE_HEAD_MAX_BYTES);
		int n;

		if (why == NODE_SERVE_EXPIRE_EVICTED)
			snprintf(msg, sizeof(msg), "node busy: too many connections that have not "
				 "authenticated; retry");
		else if (why == NODE_SERVE_EXPIRE_HANDSHAKE)
			snprintf(msg, sizeof(msg), "handshake not finished within %" PRIu64 " ms",
				 dp->o.handshake_timeout_ms);
		else
			snprintf(msg, sizeof(msg), "HELLO stalled: fewer than %" PRIu64 " bytes in %"
				 PRIu64 " ms", dp->o.progress_min_bytes, dp->o.progress_interval_ms);
		n = buf ? ovl_wire_error_frame(status, msg, buf, OVL_WIRE_HEAD_MAX_BYTES) : -ENOMEM;
		if (n > 0 && node_conn_send(c, buf, (size_t)n, free_cb, buf) == 0) {
			buf = NULL;
			if (status == OVL_WIRE_BUSY)
				dp->st.refused_busy++;
			else
				dp->st.timed_out++;
		}
		free(buf);
		return;
	}
	if (why == NODE_SERVE_EXPIRE_STALLED && dc->in_payload) {
		/* a PUT whose payload stalled: its answer, then the close (the
		 * close drops what arrived of it: nothing is stored) */
		sl = slice_find(dp, dc->req.slice);
		respond_status(dc, dc->hdr.type, dc->hdr.rid, OVL_WIRE_TIMEOUT, sl ? sl->epoch : 0,
			       "payload stalled: fewer than %" PRIu64 " bytes in %" PRIu64
			       " ms; nothing stored", dp->o.progress_min_bytes,
			       dp->o.progress_interval_ms);
		dp->st.timed_out++;
	}
	/* keys exist but no request to answer (a stalled head, or no first
	 * request by the handshake deadline): the close says it */
}

static const struct node_serve_proto dp_proto = { dp_open, dp_data, dp_expire, dp_close };

int node_dp_new(struct node_dp **out, const struct node_dp_opts *o, char *err, size_t errlen)
{
	struct node_dp *dp = NULL;
	struct node_serve_opts so = { 0 };
	uint8_t busy[NODE_SERVE_REFUSE_MSG_MAX];
	int ret;

	*out = NULL;
	if (!o->loop || !o->req || !o->id || !o->cert || !o->peers || !o->now_s ||
	    !o->max_inflight || !o->max_payload_bytes) {
		snprintf(err, errlen, "data plane: loop, request layer, identity, certificate, peers, clock and limits are required");
		return -EINVAL;
	}
	dp = calloc(1, sizeof(*dp));
	if (!dp)
		return -ENOMEM;
	dp->o = *o;
	if (!dp->o.resp_piece_bytes)
		dp->o.resp_piece_bytes = NODE_DP_PIECE_BYTES;
	if (!dp->o.resp_budget_bytes)
		dp->o.resp_budget_bytes = NODE_DP_RESP_BUDGET_BYTES;
	if (!dp->o.resp_conn_bytes)
		dp->o.resp_conn_bytes = NODE_DP_RESP_CONN_BYTES;
	if (!dp->o.send_timeout_ms)
		dp->o.send_timeout_ms = o->idle_timeout_ms;
	if (dp->o.resp_piece_bytes % OVL_WIRE_CHUNK_BYTES ||
	    dp->o.resp_piece_bytes > NODE_DP_PIECE_MAX_BYTES) {
		snprintf(err, errlen, "data plane: GET pieces of %zu bytes: a multiple of %u up to %u is required",
			 dp->o.resp_piece_bytes, OVL_WIRE_CHUNK_BYTES, NODE_DP_PIECE_MAX_BYTES);
		free(dp);
		return -EINVAL;
	}
	if (dp->o.resp_conn_bytes < dp->o.resp_piece_bytes + NODE_DP_PIECE_SLACK_BYTES ||
	    dp->o.resp_budget_bytes < dp->o.resp_conn_bytes) {
		snprintf(err, errlen, "data plane: a connection's share of responses (%" PRIu64
			 " bytes) must hold a piece of %zu bytes and %u more, and fit the node's budget (%" PRIu64 " bytes)",
			 dp->o.resp_conn_bytes, dp->o.resp_piece_bytes, NODE_DP_PIECE_SLACK_BYTES,
			 dp->o.resp_budget_bytes);
		free(dp);
		return -EINVAL;
	}
	if (node_dp_cert_set(dp, o->cert, o->cert_len) < 0) {
		snprintf(err, errlen, "data plane: certificate of %zu bytes is too large", o->cert_len);
		free(dp);
		return -E2BIG;
	}
	so.loop = o->loop;
	so.proto = &dp_proto;
	so.proto_arg = dp;
	so.max_conns = o->max_conns;
	so.max_unauth = o->max_unauth;
	so.max_unauth_per_addr = o->max_unauth_per_addr;
	so.max_per_id = o->max_conns_per_key;
	so.max_conn_buf_bytes = OVL_WIRE_HEAD_MAX_BYTES + NODE_SERVE_RECV_CHUNK_BYTES;
	so.handshake_timeout_ms = o->handshake_timeout_ms;
	so.idle_timeout_ms = o->idle_timeout_ms;
	so.progress_interval_ms = o->progress_interval_ms;
	so.progress_min_bytes = o->progress_min_bytes;
	so.send_timeout_ms = dp->o.send_timeout_ms;
	/* a connection refused at accept: ERROR busy, before any HELLO */
	ret = ovl_wire_error_frame(OVL_WIRE_BUSY, "node busy: too many connections; retry later",
				   busy, sizeof(busy));
	if (ret < 0) {
		snprintf(err, errlen, "data plane: cannot build the busy frame");
		free(dp);
		return ret;
	}
	so.refuse_msg = busy;
	so.refuse_msg_len = (size_t)ret;
	ret = node_serve_new(&dp->srv, &so, err, errlen);
	if (ret < 0) {
		free(dp);
		return ret;
	}
	ret = node_loop_before_sleep_add(o->loop, dp_before_sleep, dp);
	if (ret < 0) {
		snprintf(err, errlen, "data plane: cannot add a before-sleep hook to the loop: %s",
			 strerror(-ret));
		node_serve_destroy(&dp->srv);
		free(dp);
		return ret;
	}
	*out = dp;
	return 0;
}

int node_dp_cert_set(struct node_dp *dp, const uint8_t *cert, size_t len)
{
	if (len > sizeof(dp->cert))
		return -E2BIG;
	memcpy(dp->cert, cert, len);
	dp->cert_len = len;
	return 0;
}

int node_dp_slice_set(struct node_dp *dp, const char *name, uint64_t epoch, bool encrypt)
{
	struct dp_slice *sl = (struct dp_slice *)slice_find(dp, name);

	if (!name || !*name || strlen(name) >= OVL_WIRE_NAME_SIZE)
		return -EINVAL;
	if (!sl) {
		if (dp->nslices == NODE_DP_SLICES_MAX)
			return -ENOSPC;
		sl = &dp->slices[dp->nslices++];
		snprintf(sl->name, sizeof(sl->name), "%s", name);
	}
	sl->epoch = epoch;
	sl->encrypt = encrypt;
	return 0;
}

int node_dp_listen(struct node_dp *dp, struct sockaddr_in6 *addr, char *err, size_t errlen)
{
	return node_serve_listen(dp->srv, addr, err, errlen);
}

void node_dp_tick(struct node_dp *dp, uint64_t now_ms)
{
	node_serve_tick(dp->srv, now_ms);
	/* GETs wait for memory that peers who stopped reading hold: those
	 * peers go first, one a tick, before their send timeout (a peer that
	 * reads at all makes progress well within NODE_DP_PRESSURE_STALL_MS) */
	if (dp->bwait_head && now_ms >= dp->bwait_head->bwait_ms + NODE_DP_PRESSURE_WAIT_MS &&
	    node_serve_reset_stalled(dp->srv, now_ms, NODE_DP_PRESSURE_STALL_MS))
		dp->st.reset_for_budget++;
}

void node_dp_stats(const struct node_dp *dp, struct node_dp_stats *st)
{
	*st = dp->st;
	st->resp_bytes = dp->resp_bytes;
	st->put_bytes = dp->payload_bytes;
}

void node_dp_serve_stats(const struct node_dp *dp, struct node_serve_stats *st)
{
	node_serve_stats(dp->srv, st);
}

void node_dp_stop(struct node_dp *dp)
{
	if (!dp || dp->stopped)
		return;
	dp->stopped = true;
	node_serve_stop(dp->srv);
}

void node_dp_destroy(struct node_dp **dpp)
{
	struct node_dp *dp = dpp ? *dpp : NULL;

	if (!dp)
		return;
	*dpp = NULL;
	node_dp_stop(dp);
	node_serve_destroy(&dp->srv);
	node_loop_before_sleep_remove(dp->o.loop, dp_before_sleep, dp);
	while (dp->ready) {
		struct dp_conn *dc = dp->ready;

		dp->ready = dc->ready_next;
		dc->on_ready = false;
		dc_unref(dc);
	}
	if (dp->nconns) {
		/* requests or connections still in flight (the loop was not
		 * drained): the last of them frees dp */
		dp->dying = true;
		return;
	}
	free(dp);
}
