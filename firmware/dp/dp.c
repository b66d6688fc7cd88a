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

struct dp_slice {
	char name[OVL_WIRE_NAME_SIZE];
	uint64_t epoch;
	bool encrypt;
};

struct dp_conn;

struct node_dp {
	struct node_dp_opts o;
	uint8_t cert[OVL_CERT_MAX_BYTES]; /* our certificate (a copy: renewals replace it) */
	size_t cert_len;
	struct node_serve *srv;
	struct dp_slice slices[NODE_DP_SLICES_MAX];
	unsigned nslices;
	uint64_t payload_bytes; /* PUT payloads buffered now */
	struct node_dp_stats st;
	struct dp_conn *ready;  /* paused streams that can go on: resumed before the loop sleeps */
	unsigned nconns;        /* connection states alive (open, or held by requests) */
	bool stopped, dying;    /* node_dp_stop(); node_dp_destroy() with states alive */
};

enum { PH_HELLO, PH_OPEN };

/* One connection's protocol state; outlives the connection while requests
 * it started are in flight (refs). */
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
};

/* A request in flight in the request layer; its completion answers it. */
struct dp_op {
	struct dp_conn *dc;
	uint8_t type;
	uint32_t rid;
	uint64_t epoch;
	bool encrypt;
	uint8_t *pay;       /* PUT: the value (freed when done) */
	uint64_t pay_bytes; /* counted against max_payload_bytes */
};

static void stream_drop(struct dp_conn *dc)
{
	node_req_stream_abort(&dc->stream);
	dc->dp->payload_bytes -= dc->stream_budget;
	dc->stream_budget = 0;
	free(dc->seal);
	dc->seal = NULL;
}

static void dc_unref(struct dp_conn *dc)
{
	struct node_dp *dp = NULL;

	if (--dc->refs)
		return;
	stream_drop(dc);
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

/* A response on its way out: the sealed head (and a copied or sealed
 * payload) in `buf`, or a payload sent from a GET's read buffer. */
struct dp_tx {
	struct node_req_buf *rb; /* the read buffer holding the payload, or NULL */
	uint8_t buf[];
};

static void tx_done(void *arg, int res)
{
	struct dp_tx *tx = arg;

	node_req_buf_release(&tx->rb);
	free(tx);
}

/*
 * An encrypted payload from a GET's read buffer (*rb, kept when it can be):
 * each chunk is sealed in
 * place, and the chunks go out with their tags between them (gathered from
 * the tx) without copying the payload into a new sealed buffer. Falls back to
 * the copying path when the buffer cannot be kept. Returns nothing; the
 * response is queued or the connection closed.
 */
static void respond_copy(struct dp_conn *dc, struct ovl_wire_hdr *h, const uint8_t *meta,
			 size_t mlen, const uint8_t *payload, uint64_t plen);

static void respond_sealed(struct dp_conn *dc, struct ovl_wire_hdr *h, const uint8_t *meta,
			   size_t mlen, const uint8_t *payload, uint64_t plen,
			   struct node_req_buf **rb)
{
	size_t headcap = OVL_WIRE_HDR_BYTES + mlen + OVL_WIRE_MAC_BYTES;
	size_t nchunks = (size_t)((plen + OVL_WIRE_CHUNK_BYTES - 1) / OVL_WIRE_CHUNK_BYTES);
	struct dp_tx *tx = malloc(sizeof(*tx) + headcap + nchunks * OVL_WIRE_TAG_BYTES);
	struct iovec *iov = calloc(1 + 2 * nchunks, sizeof(*iov));
	uint8_t *tags, *p = (uint8_t *)payload;
	char err[DP_ERR_BYTES];
	unsigned n = 0;
	int hl;

	if (!tx || !iov || 1 + 2 * nchunks > NODE_CONN_IOV_MAX) {
		free(tx);
		free(iov);
		respond_copy(dc, h, meta, mlen, payload, plen);
		return;
	}
	if (!*rb) {
		free(tx);
		free(iov);
		respond_copy(dc, h, meta, mlen, payload, plen);
		return;
	}
	tx->rb = *rb;
	*rb = NULL;
	hl = ovl_wire_head_seal(&dc->ses, h, meta, mlen, tx->buf, headcap, err, sizeof(err));
	if (hl < 0) {
		tx_done(tx, 0);
		free(iov);
		node_conn_close(dc->c, false);
		return;
	}
	tags = tx->buf + hl;
	iov[n++] = (struct iovec){ .iov_base = tx->buf, .iov_len = (size_t)hl };
	ovl_wire_payload_seal_detached(&dc->ses, tx->buf, p, plen, tags);
	for (uint64_t off = 0, i = 0; off < plen; off += OVL_WIRE_CHUNK_BYTES, i++) {
		size_t k = plen - off < OVL_WIRE_CHUNK_BYTES ? (size_t)(plen - off) : OVL_WIRE_CHUNK_BYTES;

		iov[n++] = (struct iovec){ .iov_base = p + off, .iov_len = k };
		iov[n++] = (struct iovec){ .iov_base = tags + i * OVL_WIRE_TAG_BYTES,
					   .iov_len = OVL_WIRE_TAG_BYTES };
	}
	if (node_conn_sendv(dc->c, iov, n, tx_done, tx) < 0)
		tx_done(tx, -EPIPE);
	free(iov);
}

/* Seal and queue a response (payload encrypted when asked), the payload
 * copied after the head. */
static void respond_copy(struct dp_conn *dc, struct ovl_wire_hdr *h, const uint8_t *meta,
			 size_t mlen, const uint8_t *payload, uint64_t plen)
{
	size_t headcap = OVL_WIRE_HDR_BYTES + mlen + OVL_WIRE_MAC_BYTES;
	struct dp_tx *tx = malloc(sizeof(*tx) + headcap + h->payload_len);
	char err[DP_ERR_BYTES];
	uint8_t *out;
	int hl;

	if (!tx) {
		node_conn_close(dc->c, false);
		return;
	}
	tx->rb = NULL;
	out = tx->buf;
	hl = ovl_wire_head_seal(&dc->ses, h, meta, mlen, out, headcap, err, sizeof(err));
	if (hl < 0) {
		free(tx);
		node_conn_close(dc->c, false);
		return;
	}
	if (h->flags & OVL_WIRE_FLAG_ENCRYPTED) {
		ovl_wire_payload_seal(&dc->ses, out, payload, plen, out + hl);
	} else if (plen) {
		memcpy(out + hl, payload, plen);
	}
	if (node_conn_send(dc->c, out, (size_t)hl + h->payload_len, tx_done, tx) < 0)
		free(tx);
}

/*
 * Seal and queue a response (payload encrypted when asked). With rb (a
 * GET's completion: the payload lies in the read buffer *rb), the payload
 * is sent straight from that buffer, which is taken from *rb and kept until
 * the send completes: as it is, or sealed in place when encrypted.
 */
static void respond_x(struct dp_conn *dc, uint8_t type, uint32_t rid, struct ovl_wire_resp *r,
		      const uint8_t *payload, uint64_t plen, bool encrypt, struct node_req_buf **rb)
{
	struct ovl_wire_hdr h = { 0 };
	uint8_t meta[OVL_WIRE_META_MAX_BYTES];
	struct dp_tx *tx = NULL;
	struct iovec iov[2];
	char err[DP_ERR_BYTES];
	int mlen, hl;
	size_t headcap;

	if (!dc->c)
		return;
	r->type = type | OVL_WIRE_T_RESPONSE;
	mlen = ovl_wire_resp_encode(r, meta, sizeof(meta), err, sizeof(err));
	if (mlen < 0) {
		/* our own bug; tell the client rather than go silent */
		struct ovl_wire_resp e = { .type = r->type, .status = OVL_WIRE_INTERNAL, .epoch = r->epoch };

		snprintf(e.message, sizeof(e.message), "cannot encode response: %.200s", err);
		mlen = ovl_wire_resp_encode(&e, meta, sizeof(meta), err, sizeof(err));
		payload = NULL;
		plen = 0;
		if (mlen < 0)
			return;
	}
	h.type = type | OVL_WIRE_T_RESPONSE;
	h.flags = encrypt && plen ? OVL_WIRE_FLAG_ENCRYPTED : 0;
	h.payload_len = h.flags ? ovl_wire_sealed_len(plen) : plen;
	h.rid = rid;
	if (!rb || !plen) {
		respond_copy(dc, &h, meta, (size_t)mlen, payload, plen);
		return;
	}
	if (h.flags) {
		respond_sealed(dc, &h, meta, (size_t)mlen, payload, plen, rb);
		return;
	}
	headcap = OVL_WIRE_HDR_BYTES + (size_t)mlen + OVL_WIRE_MAC_BYTES;
	tx = malloc(sizeof(*tx) + headcap);
	if (!tx || !*rb) {
		/* the buffer could not be kept: copy after all */
		free(tx);
		respond_copy(dc, &h, meta, (size_t)mlen, payload, plen);
		return;
	}
	tx->rb = *rb;
	*rb = NULL;
	hl = ovl_wire_head_seal(&dc->ses, &h, meta, (size_t)mlen, tx->buf, headcap, err, sizeof(err));
	if (hl < 0) {
		tx_done(tx, 0);
		node_conn_close(dc->c, false);
		return;
	}
	/* no copy: the header, then the bytes where the disk put them */
	iov[0] = (struct iovec){ .iov_base = tx->buf, .iov_len = (size_t)hl };
	iov[1] = (struct iovec){ .iov_base = (void *)payload, .iov_len = (size_t)plen };
	if (node_conn_sendv(dc->c, iov, 2, tx_done, tx) < 0)
		tx_done(tx, -EPIPE);
}

static void respond(struct dp_conn *dc, uint8_t type, uint32_t rid, struct ovl_wire_resp *r,
		    const uint8_t *payload, uint64_t plen, bool encrypt)
{
	respond_x(dc, type, rid, r, payload, plen, encrypt, NULL);
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
	free(op->pay);
	free(op);
	dc_unref(dc);
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
		cap += res->keys[i].len + 8;
	payload = malloc(cap);
	if (!payload) {
		respond_status(dc, op->type, op->rid, OVL_WIRE_BUSY, op->epoch, "out of memory for a list");
		return;
	}
	r.more = res->more;
	r.count = res->nkeys;
	plen = ovl_wire_keys_encode(res->keys, res->nkeys, payload, cap);
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

/* A request's completion (node_req_done_fn): answer it. A GET's read
 * buffer is taken from *rb when the payload can be sent from it. */
static void req_done(void *arg, const struct node_req_result *res, struct node_req_buf **rb)
{
	struct dp_op *op = arg;
	struct dp_conn *dc = op->dc;
	struct ovl_wire_resp r = { .epoch = op->epoch };

	if (res->res < 0) {
		r.status = ovl_wire_errno_to_status(res->res);
		snprintf(r.message, sizeof(r.message), "%s", res->msg);
		respond(dc, op->type, op->rid, &r, NULL, 0, false);
		op_done(op);
		return;
	}
	switch (op->type) {
	case OVL_WIRE_T_PUT:
	case OVL_WIRE_T_STAT:
		r.size = res->size;
		r.has_crc = true;
		r.crc = res->crc;
		r.seq = res->seq;
		break;
	case OVL_WIRE_T_GET:
		r.size = res->size;
		r.offset = res->offset;
		r.has_crc = true;
		r.crc = res->crc;
		respond_x(dc, op->type, op->rid, &r, res->data, res->len, op->encrypt, rb);
		op_done(op);
		return;
	case OVL_WIRE_T_LIST:
		list_respond(op, res);
		op_done(op);
		return;
	default:
		break;
	}
	respond(dc, op->type, op->rid, &r, NULL, 0, false);
	op_done(op);
}

/* NODE-STAT: the node's counters, as the request layer reports them. */
static void do_node_stat(struct dp_conn *dc, const struct ovl_wire_hdr *h, uint64_t epoch)
{
	struct ovl_wire_resp r = { .epoch = epoch };

	r.ncounters = node_req_counters(dc->dp->o.req, r.counters, OVL_WIRE_COUNTERS_MAX);
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

/* A PUT was handed to the request layer (ret 0: its completion answers)
 * or refused. */
static void put_queued(struct dp_conn *dc, struct dp_op *op, int ret, uint64_t epoch)
{
	if (ret < 0) {
		respond_status(dc, dc->hdr.type, dc->hdr.rid, ovl_wire_errno_to_status(ret), epoch, "%s",
			       node_req_errmsg(dc->dp->o.req));
		op_done(op);
		return;
	}
	dc->dp->st.puts++;
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
	return a;
}

/* A complete PUT payload: decrypt, check, hand it to the request layer. */
static void put_payload_done(struct dp_conn *dc)
{
	struct node_dp *dp = dc->dp;
	const struct dp_slice *sl = slice_find(dp, dc->req.slice);
	struct node_req_args a = put_args(dc);
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
		put_queued(dc, op, node_req_stream_finish(&dc->stream, req_done, op), sl->epoch);
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
	a.val = op->pay;
	a.size = plain;
	put_queued(dc, op, node_req_start(dp->o.req, &a, req_done, op), sl->epoch);
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
	struct dp_conn *dc = arg;
	struct node_dp *dp = dc->dp;

	if (dc->on_ready)
		return;
	dc->on_ready = true;
	dc->refs++;
	dc->ready_next = dp->ready;
	dp->ready = dc;
}

/* Before the loop sleeps: resume the streams that became ready. */
static void dp_before_sleep(void *arg)
{
	struct node_dp *dp = arg;

	while (dp->ready) {
		struct dp_conn *dc = dp->ready;

		dp->ready = dc->ready_next;
		dc->ready_next = NULL;
		dc->on_ready = false;
		stream_resume(dc);
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
		*status = ovl_wire_errno_to_status(ret);
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

/* A request without a payload: to the request layer, whose completion
 * answers it (NODE-STAT and MAP are answered here). */
static void dispatch(struct dp_conn *dc, const struct ovl_wire_hdr *h, const struct ovl_wire_req *q,
		     const struct dp_slice *sl)
{
	struct node_dp *dp = dc->dp;
	struct node_req_args a = { .slice = q->slice, .key = q->key, .klen = q->key_len };
	struct dp_op *op = NULL;
	int ret = 0;

	switch (h->type) {
	case OVL_WIRE_T_NODE_STAT:
		do_node_stat(dc, h, sl->epoch);
		return;
	case OVL_WIRE_T_MAP:
		do_map(dc, h, q, sl->epoch);
		return;
	default:
		break;
	}
	op = op_new(dc, h, sl->epoch, sl->encrypt);
	if (!op) {
		respond_status(dc, h->type, h->rid, OVL_WIRE_BUSY, sl->epoch, "out of memory");
		return;
	}
	switch (h->type) {
	case OVL_WIRE_T_GET:
		a.type = NODE_REQ_GET;
		a.offset = q->has_range ? q->offset : 0;
		a.length = q->has_range ? q->length : UINT64_MAX;
		dp->st.gets++;
		break;
	case OVL_WIRE_T_DELETE:
		a.type = NODE_REQ_DELETE;
		dp->st.deletes++;
		break;
	case OVL_WIRE_T_STAT:
		a.type = NODE_REQ_STAT;
		dp->st.stats++;
		break;
	case OVL_WIRE_T_LIST:
		a.type = NODE_REQ_LIST;
		a.after = q->after_len ? q->after : NULL;
		a.after_len = q->after_len;
		a.limit = q->limit ? q->limit : OVL_WIRE_LIST_MAX;
		break;
	default:
		respond_status(dc, h->type, h->rid, OVL_WIRE_BAD_REQUEST, sl->epoch, "unknown request type");
		op_done(op);
		return;
	}
	/* on success the completion answers, maybe before this returns (LIST):
	 * op is not touched after */
	ret = node_req_start(dp->o.req, &a, req_done, op);
	if (ret < 0) {
		respond_status(dc, h->type, h->rid, ovl_wire_errno_to_status(ret), sl->epoch, "%s",
			       node_req_errmsg(dp->o.req));
		op_done(op);
	}
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

		if (!sl || !ovl_wire_session_allows(&dc->ses, q->slice)) {
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
}

void node_dp_stats(const struct node_dp *dp, struct node_dp_stats *st)
{
	*st = dp->st;
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
