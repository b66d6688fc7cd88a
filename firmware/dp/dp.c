#include "dp.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#define DP_ERR_BYTES 256
/* PUT payloads above this stream into the store as they arrive (memory per
 * connection: the store's two stream buffers and one sealed chunk); smaller
 * ones are buffered whole and stored in one record with others. */
#define DP_STREAM_MIN_BYTES (128u << 10)
#define DP_SEALED_CHUNK_BYTES (OVL_WIRE_CHUNK_BYTES + OVL_WIRE_TAG_BYTES)

struct dp_slice {
	char name[OVL_WIRE_NAME_SIZE];
	uint64_t epoch;
	bool encrypt;
};

struct node_dp {
	struct node_dp_opts o;
	uint8_t cert[OVL_CERT_MAX_BYTES]; /* our certificate (a copy: renewals replace it) */
	size_t cert_len;
	struct node_serve *srv;
	struct dp_slice slices[NODE_DP_SLICES_MAX];
	unsigned nslices;
	uint64_t payload_bytes; /* PUT payloads buffered now */
	struct node_dp_stats st;
};

enum { PH_HELLO, PH_OPEN };

/* One connection's protocol state; outlives the connection while store
 * operations it started are in flight (refs). */
struct dp_conn {
	struct node_dp *dp;
	struct node_conn *c;        /* NULL once the connection is gone */
	unsigned refs;
	int phase;
	struct ovl_wire_hs *hs;
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
	/* a streamed PUT: the store's stream, the budget it holds, and for an
	 * encrypted payload the sealed chunk being gathered (`seal`), then its
	 * plaintext [plain_off, plain_end) until the store has taken it */
	struct node_store_stream *stream;
	uint64_t stream_budget;
	uint8_t *seal;
	size_t seal_fill, seal_need, plain_off, plain_end;
	uint32_t chunk_no;
	uint64_t plain_left;        /* plaintext bytes still to come */
};

/* A store operation in flight for a request. */
struct dp_op {
	struct dp_conn *dc;
	uint8_t type;
	uint32_t rid;
	uint64_t epoch;
	bool encrypt;
	uint8_t *pay;       /* PUT: the value (freed when done) */
	uint64_t pay_bytes; /* counted against max_payload_bytes */
	uint64_t size, offset;
	uint32_t crc;
};

static void stream_drop(struct dp_conn *dc)
{
	node_store_stream_abort(&dc->stream);
	dc->dp->payload_bytes -= dc->stream_budget;
	dc->stream_budget = 0;
	free(dc->seal);
	dc->seal = NULL;
}

static void dc_unref(struct dp_conn *dc)
{
	if (--dc->refs)
		return;
	stream_drop(dc);
	ovl_wire_hs_destroy(&dc->hs);
	ovl_wire_session_clear(&dc->ses);
	if (dc->pay) {
		dc->dp->payload_bytes -= dc->pay_len;
		free(dc->pay);
	}
	free(dc);
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
 * payload) in `buf`, or a payload sent from a store read buffer. */
struct dp_tx {
	struct node_dp *dp;
	struct node_store_rbuf *rb; /* store read buffer holding the payload, or NULL */
	uint8_t buf[];
};

static void tx_done(void *arg, int res)
{
	struct dp_tx *tx = arg;

	node_store_rbuf_release(&tx->rb);
	free(tx);
}

/*
 * An encrypted payload from a store read buffer: each chunk is sealed in
 * place, and the chunks go out with their tags between them (gathered from
 * the tx) without copying the payload into a new sealed buffer. Falls back to
 * the copying path when the buffer cannot be kept. Returns nothing; the
 * response is queued or the connection closed.
 */
static void respond_copy(struct dp_conn *dc, struct ovl_wire_hdr *h, const uint8_t *meta,
			 size_t mlen, const uint8_t *payload, uint64_t plen);

static void respond_sealed(struct dp_conn *dc, struct ovl_wire_hdr *h, const uint8_t *meta,
			   size_t mlen, const uint8_t *payload, uint64_t plen,
			   struct node_store_rbuf **rb)
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
	tx->dp = dc->dp;
	tx->rb = *rb; /* kept until the send completes */
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
	for (uint64_t off = 0, i = 0; off < plen; off += OVL_WIRE_CHUNK_BYTES, i++) {
		size_t k = plen - off < OVL_WIRE_CHUNK_BYTES ? (size_t)(plen - off) : OVL_WIRE_CHUNK_BYTES;
		uint8_t *tag = tags + i * OVL_WIRE_TAG_BYTES;

		ovl_wire_chunk_seal_detached(&dc->ses, tx->buf, (uint32_t)i, p + off, k, tag);
		iov[n++] = (struct iovec){ .iov_base = p + off, .iov_len = k };
		iov[n++] = (struct iovec){ .iov_base = tag, .iov_len = OVL_WIRE_TAG_BYTES };
	}
	if (node_conn_sendv(dc->c, iov, n, tx_done, tx) < 0)
		tx_done(tx, -EPIPE);
	free(iov);
}

/*
 * Seal and queue a response (payload encrypted when asked). With from_store
 * (inside a store get callback), a plaintext payload is sent straight from
 * the store's read buffer, which is kept until the send completes.
 */
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
	tx->dp = dc->dp;
	tx->rb = NULL;
	out = tx->buf;
	hl = ovl_wire_head_seal(&dc->ses, h, meta, mlen, out, headcap, err, sizeof(err));
	if (hl < 0) {
		free(tx);
		node_conn_close(dc->c, false);
		return;
	}
	if (h->flags & OVL_WIRE_FLAG_ENCRYPTED) {
		uint8_t *dst = out + hl;

		for (uint64_t off = 0, i = 0; off < plen; off += OVL_WIRE_CHUNK_BYTES, i++) {
			size_t n = plen - off < OVL_WIRE_CHUNK_BYTES ? (size_t)(plen - off) : OVL_WIRE_CHUNK_BYTES;

			memcpy(dst, payload + off, n);
			ovl_wire_chunk_seal(&dc->ses, out, (uint32_t)i, dst, n);
			dst += n + OVL_WIRE_TAG_BYTES;
		}
	} else if (plen) {
		memcpy(out + hl, payload, plen);
	}
	if (node_conn_send(dc->c, out, (size_t)hl + h->payload_len, tx_done, tx) < 0)
		free(tx);
}

/*
 * Seal and queue a response (payload encrypted when asked). With rb (the
 * store read buffer `payload` points into), the payload is sent straight
 * from it: the response takes the buffer (*rb = NULL) and keeps it until the
 * send completes, sending it as it is, or sealed in place when encrypted.
 */
static void respond_x(struct dp_conn *dc, uint8_t type, uint32_t rid, struct ovl_wire_resp *r,
		      const uint8_t *payload, uint64_t plen, bool encrypt, struct node_store_rbuf **rb)
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
	if (!rb || !*rb || !plen) {
		respond_copy(dc, &h, meta, (size_t)mlen, payload, plen);
		return;
	}
	if (h.flags) {
		respond_sealed(dc, &h, meta, (size_t)mlen, payload, plen, rb);
		return;
	}
	headcap = OVL_WIRE_HDR_BYTES + (size_t)mlen + OVL_WIRE_MAC_BYTES;
	tx = malloc(sizeof(*tx) + headcap);
	if (tx) {
		tx->rb = *rb; /* kept until the send completes */
		*rb = NULL;
	}
	if (!tx) {
		/* the buffer could not be kept: copy after all */
		free(tx);
		respond_copy(dc, &h, meta, (size_t)mlen, payload, plen);
		return;
	}
	tx->dp = dc->dp;
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

static uint32_t status_of(int err)
{
	switch (err) {
	case -ENOENT: return OVL_WIRE_NOT_FOUND;
	case -ENOSPC: return OVL_WIRE_NO_SPACE;
	case -EROFS: return OVL_WIRE_READ_ONLY;
	case -E2BIG: return OVL_WIRE_TOO_LARGE;
	case -EINVAL: return OVL_WIRE_BAD_REQUEST;
	case -EBUSY: return OVL_WIRE_BUSY;
	default: return OVL_WIRE_INTERNAL;
	}
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

static void store_done(void *arg, int res, const struct node_store_objstat *st)
{
	struct dp_op *op = arg;
	struct dp_conn *dc = op->dc;
	struct ovl_wire_resp r = { .epoch = op->epoch };

	if (res < 0) {
		r.status = status_of(res);
		snprintf(r.message, sizeof(r.message), "%s",
			 res == -ENOENT ? "no such key" : node_store_errmsg(dc->dp->o.store));
		respond(dc, op->type, op->rid, &r, NULL, 0, false);
		op_done(op);
		return;
	}
	switch (op->type) {
	case OVL_WIRE_T_PUT:
		r.size = op->size;
		r.has_crc = true;
		r.crc = op->crc;
		r.seq = st ? st->seq : 0;
		break;
	case OVL_WIRE_T_STAT:
		r.size = st->size;
		r.has_crc = true;
		r.crc = st->crc;
		r.seq = st->seq;
		break;
	default:
		break;
	}
	respond(dc, op->type, op->rid, &r, NULL, 0, false);
	op_done(op);
}

/* A GET's answer: the payload goes out from the store's read buffer,
 * which the response keeps until it is sent. */
static void store_get_done(void *arg, int res, struct node_store_rbuf **rb,
			   const struct node_store_objstat *st)
{
	struct dp_op *op = arg;
	struct ovl_wire_resp r = { .epoch = op->epoch };
	const void *data = NULL;
	size_t len = 0;

	if (res < 0) {
		store_done(arg, res, st);
		return;
	}
	data = (*rb)->data;
	len = (*rb)->len;
	/* the bytes were verified against the drive's checksums; this crc
	 * lets the client verify them end to end */
	r.size = st ? st->size : len;
	r.offset = op->offset;
	r.has_crc = true;
	/* a whole value was just verified against its stored crc32c:
	 * that is the crc; a range needs its own */
	r.crc = st && op->offset == 0 && len == st->size ? st->crc : ovl_crc32c(0, data, len);
	respond_x(op->dc, op->type, op->rid, &r, data, len, op->encrypt, rb);
	op_done(op);
}

struct list_ctx {
	struct ovl_wire_bin *keys;
	uint8_t *arena;
	size_t used, cap;
	uint32_t n, max;
};

static int list_cb(void *arg, const void *key, size_t klen)
{
	struct list_ctx *l = arg;

	if (l->n == l->max || l->used + klen > l->cap)
		return 1;
	memcpy(l->arena + l->used, key, klen);
	l->keys[l->n].ptr = l->arena + l->used;
	l->keys[l->n].len = (uint32_t)klen;
	l->used += klen;
	l->n++;
	return 0;
}

static void do_list(struct dp_conn *dc, const struct ovl_wire_hdr *h, const struct ovl_wire_req *q,
		    uint64_t epoch, bool encrypt)
{
	struct list_ctx l = { 0 };
	struct ovl_wire_resp r = { .epoch = epoch };
	uint8_t *payload = NULL;
	int plen, n;

	l.max = q->limit ? q->limit : OVL_WIRE_LIST_MAX;
	/* one more than asked, to tell the client whether more follow */
	l.keys = calloc(l.max + 1, sizeof(*l.keys));
	l.cap = (size_t)(l.max + 1) * 64 < (4u << 20) ? (size_t)(l.max + 1) * 64 : (4u << 20);
	l.arena = malloc(l.cap);
	payload = malloc(l.cap + (size_t)(l.max + 1) * 8 + 16);
	if (!l.keys || !l.arena || !payload) {
		respond_status(dc, h->type, h->rid, OVL_WIRE_BUSY, epoch, "out of memory for a list");
		goto out;
	}
	l.max++;
	n = node_store_list(dc->dp->o.store, q->key, q->key_len, q->after_len ? q->after : NULL,
			    q->after_len, l.max, list_cb, &l);
	if (n < 0) {
		respond_status(dc, h->type, h->rid, status_of(n), epoch, "list failed");
		goto out;
	}
	l.max--;
	r.more = l.n > l.max;
	if (r.more)
		l.n = l.max;
	r.count = l.n;
	plen = ovl_wire_keys_encode(l.keys, l.n, payload, l.cap + (size_t)(l.max + 1) * 8 + 16);
	if (plen < 0) {
		respond_status(dc, h->type, h->rid, OVL_WIRE_INTERNAL, epoch, "cannot encode the key list");
		goto out;
	}
	r.has_crc = true;
	r.crc = ovl_crc32c(0, payload, (size_t)plen);
	respond(dc, h->type, h->rid, &r, payload, (uint64_t)plen, encrypt);
	dc->dp->st.lists++;
out:
	free(l.keys);
	free(l.arena);
	free(payload);
}

static void do_node_stat(struct dp_conn *dc, const struct ovl_wire_hdr *h, uint64_t epoch)
{
	struct node_store_stats st;
	struct ovl_wire_resp r = { .epoch = epoch };
	const struct { const char *name; uint64_t v; } c[] = {
		{ "objects", 0 }, { "live_bytes", 0 }, { "capacity_bytes", 0 }, { "segments_free", 0 },
		{ "read_only", 0 }, { "checksum_errors", 0 }, { "puts", 0 }, { "gets", 0 },
		{ "cache_rereads", 0 }, { "full", 0 }, { "nearly_full", 0 }, { "usable_bytes", 0 },
		{ "segments_reserved", 0 },
	};

	node_store_stats(dc->dp->o.store, &st);
	r.ncounters = sizeof(c) / sizeof(c[0]);
	for (uint32_t i = 0; i < r.ncounters; i++)
		snprintf(r.counters[i].name, sizeof(r.counters[i].name), "%s", c[i].name);
	r.counters[0].value = st.objects;
	r.counters[1].value = st.live_bytes;
	r.counters[2].value = st.capacity_bytes;
	r.counters[3].value = st.segments_free;
	r.counters[4].value = st.read_only;
	r.counters[5].value = st.checksum_errors;
	r.counters[6].value = st.puts;
	r.counters[7].value = st.gets;
	r.counters[8].value = st.cache_rereads;
	r.counters[9].value = st.full;          /* puts are refused */
	r.counters[10].value = st.nearly_full;  /* live above 90% of usable_bytes */
	r.counters[11].value = st.usable_bytes; /* capacity less the compaction reserve */
	r.counters[12].value = st.segments_reserved;
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

/* A complete PUT payload: decrypt, check, store. */
/* A PUT was handed to the store (ret 0: its callback answers) or refused. */
static void put_queued(struct dp_conn *dc, struct dp_op *op, int ret, uint64_t epoch)
{
	if (ret < 0) {
		respond_status(dc, dc->hdr.type, dc->hdr.rid, status_of(ret), epoch, "%s",
			       node_store_errmsg(dc->dp->o.store));
		op_done(op);
		return;
	}
	dc->dp->st.puts++;
}

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
		uint32_t crc = node_store_stream_crc(dc->stream);

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
		/* the store's buffers stay busy until the commit: so does the budget */
		op->pay_bytes = dc->stream_budget;
		dc->stream_budget = 0;
		op->size = dc->req.size;
		op->crc = dc->req.crc;
		free(dc->seal);
		dc->seal = NULL;
		put_queued(dc, op, node_store_stream_finish(&dc->stream, dc->req.crc, store_done, op),
			   sl->epoch);
		return;
	}
	if (dc->hdr.flags & OVL_WIRE_FLAG_ENCRYPTED) {
		uint8_t *src = dc->pay, *dst = dc->pay;

		ovl_wire_plain_len(dc->pay_len, &plain);
		for (uint64_t off = 0, i = 0; off < plain; off += OVL_WIRE_CHUNK_BYTES, i++) {
			size_t n = plain - off < OVL_WIRE_CHUNK_BYTES ? (size_t)(plain - off) : OVL_WIRE_CHUNK_BYTES;

			if (ovl_wire_chunk_open(&dc->ses, dc->hdr_bytes, (uint32_t)i, src, n) < 0) {
				dp->st.auth_failures++;
				respond_status(dc, dc->hdr.type, dc->hdr.rid, OVL_WIRE_AUTH_FAILED,
					       sl->epoch, "payload chunk %" PRIu64 " failed authentication", i);
				goto drop;
			}
			memmove(dst, src, n);
			src += n + OVL_WIRE_TAG_BYTES;
			dst += n;
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
	op->size = plain;
	op->crc = dc->req.crc;
	dc->pay = NULL;
	put_queued(dc, op,
		   node_store_put_async(dp->o.store, dc->req.key, dc->req.key_len, op->pay, plain,
					store_done, op),
		   sl->epoch);
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

/* Hand the decrypted chunk to the store. false: it must wait (paused). */
static bool stream_plain(struct dp_conn *dc)
{
	while (dc->stream && dc->plain_off < dc->plain_end) {
		ssize_t w = node_store_stream_write(dc->stream, dc->seal + dc->plain_off,
						    dc->plain_end - dc->plain_off);

		if (w < 0) {
			stream_fail(dc, status_of((int)w), node_store_errmsg(dc->dp->o.store));
			return true;
		}
		if (w == 0)
			return false;
		dc->plain_off += (size_t)w;
	}
	return true;
}

/* Streamed payload bytes; returns how many were taken (the connection is
 * paused when the store cannot take more). */
static size_t stream_bytes(struct dp_conn *dc, const uint8_t *buf, size_t n)
{
	size_t used = 0;

	if (!(dc->hdr.flags & OVL_WIRE_FLAG_ENCRYPTED)) {
		ssize_t w = node_store_stream_write(dc->stream, buf, n);

		if (w < 0) {
			stream_fail(dc, status_of((int)w), node_store_errmsg(dc->dp->o.store));
			return n;
		}
		if ((size_t)w < n)
			node_conn_pause(dc->c);
		return (size_t)w;
	}
	while (used < n && dc->stream) {
		size_t k;

		if (!stream_plain(dc)) {
			node_conn_pause(dc->c);
			return used;
		}
		if (!dc->stream)
			break;
		k = dc->seal_need - dc->seal_fill;
		if (k > n - used)
			k = n - used;
		memcpy(dc->seal + dc->seal_fill, buf + used, k);
		dc->seal_fill += k;
		used += k;
		if (dc->seal_fill < dc->seal_need)
			break;
		if (ovl_wire_chunk_open(&dc->ses, dc->hdr_bytes, dc->chunk_no, dc->seal,
					dc->seal_need - OVL_WIRE_TAG_BYTES) < 0) {
			char msg[80];

			dc->dp->st.auth_failures++;
			snprintf(msg, sizeof(msg), "payload chunk %" PRIu32 " failed authentication",
				 dc->chunk_no);
			stream_fail(dc, OVL_WIRE_AUTH_FAILED, msg);
			break;
		}
		dc->plain_off = 0;
		dc->plain_end = dc->seal_need - OVL_WIRE_TAG_BYTES;
		dc->plain_left -= dc->plain_end;
		dc->chunk_no++;
		dc->seal_fill = 0;
		dc->seal_need = (size_t)(dc->plain_left < OVL_WIRE_CHUNK_BYTES ? dc->plain_left
										: OVL_WIRE_CHUNK_BYTES) +
				OVL_WIRE_TAG_BYTES;
	}
	if (dc->stream && !stream_plain(dc))
		node_conn_pause(dc->c);
	return dc->stream ? used : n;
}

/* A streamed PUT is complete when every byte arrived and the store took
 * every plaintext byte. */
static bool stream_complete(const struct dp_conn *dc)
{
	return dc->pay_got == dc->pay_len && (!dc->stream || dc->plain_off == dc->plain_end);
}

/* The store can take more of a paused stream. */
static void stream_ready(void *arg)
{
	struct dp_conn *dc = arg;

	if (!dc->c || !dc->in_payload)
		return;
	if (!stream_plain(dc))
		return; /* still full: the store calls again */
	if (stream_complete(dc)) {
		/* the last bytes arrived earlier: nothing more will call on_data */
		put_payload_done(dc);
		if (dc->c)
			node_conn_frame_done(dc->c);
	}
	if (dc->c)
		node_conn_resume(dc->c);
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

/* Start streaming a large PUT into the store; on failure set dc->skip with
 * the refusal in *status and *msg. */
static void stream_begin(struct dp_conn *dc, const struct ovl_wire_hdr *h, uint32_t *status,
			 const char **msg)
{
	struct node_dp *dp = dc->dp;
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
	budget = node_store_stream_bytes(dp->o.store) + (enc ? DP_SEALED_CHUNK_BYTES : 0);
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
		dc->plain_left = plain;
		dc->seal_fill = dc->plain_off = dc->plain_end = 0;
		dc->seal_need = (size_t)(plain < OVL_WIRE_CHUNK_BYTES ? plain : OVL_WIRE_CHUNK_BYTES) +
				OVL_WIRE_TAG_BYTES;
		dc->chunk_no = 0;
	}
	ret = node_store_stream_begin(dp->o.store, dc->req.key, dc->req.key_len, plain, stream_ready,
				      dc, &dc->stream);
	if (ret < 0) {
		free(dc->seal);
		dc->seal = NULL;
		dc->skip = true;
		*status = status_of(ret);
		*msg = node_store_errmsg(dp->o.store);
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

static void dispatch(struct dp_conn *dc, const struct ovl_wire_hdr *h, const struct ovl_wire_req *q,
		     const struct dp_slice *sl)
{
	struct node_dp *dp = dc->dp;
	struct dp_op *op = NULL;
	int ret = 0;

	switch (h->type) {
	case OVL_WIRE_T_LIST:
		do_list(dc, h, q, sl->epoch, sl->encrypt);
		return;
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
		op->offset = q->has_range ? q->offset : 0;
		ret = node_store_get_async(dp->o.store, q->key, q->key_len, op->offset,
					   q->has_range ? q->length : UINT64_MAX, store_get_done, op);
		dp->st.gets++;
		break;
	case OVL_WIRE_T_DELETE:
		ret = node_store_delete_async(dp->o.store, q->key, q->key_len, store_done, op);
		dp->st.deletes++;
		break;
	case OVL_WIRE_T_STAT:
		ret = node_store_stat_async(dp->o.store, q->key, q->key_len, store_done, op);
		dp->st.stats++;
		break;
	default:
		ret = -EINVAL;
		break;
	}
	if (ret < 0) {
		respond_status(dc, h->type, h->rid, status_of(ret), sl->epoch, "%s",
			       ret == -ENOENT ? "no such key" : node_store_errmsg(dp->o.store));
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
	struct ovl_wire_hs_cfg cfg = { 0 };
	char err[DP_ERR_BYTES];

	if (!dc)
		return -ENOMEM;
	dc->dp = dp;
	dc->c = c;
	dc->refs = 1;
	cfg.id = dp->o.id;
	cfg.cert = dp->cert;
	cfg.cert_len = dp->cert_len;
	cfg.peers = dp->o.peers;
	cfg.now = dp->o.now_s(dp->o.now_arg);
	if (ovl_wire_server_new(&dc->hs, &cfg, err, sizeof(err)) < 0) {
		free(dc);
		return -ENOMEM;
	}
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

static const struct node_serve_proto dp_proto = { dp_open, dp_data, dp_close };

int node_dp_new(struct node_dp **out, const struct node_dp_opts *o, char *err, size_t errlen)
{
	struct node_dp *dp = NULL;
	struct node_serve_opts so = { 0 };
	int ret;

	*out = NULL;
	if (!o->loop || !o->store || !o->id || !o->cert || !o->peers || !o->now_s ||
	    !o->max_inflight || !o->max_payload_bytes) {
		snprintf(err, errlen, "data plane: loop, store, identity, certificate, peers, clock and limits are required");
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
	so.max_conn_buf_bytes = OVL_WIRE_HEAD_MAX_BYTES + NODE_SERVE_RECV_CHUNK_BYTES;
	so.idle_timeout_ms = o->idle_timeout_ms;
	so.frame_timeout_ms = o->frame_timeout_ms;
	ret = node_serve_new(&dp->srv, &so, err, errlen);
	if (ret < 0) {
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

void node_dp_destroy(struct node_dp **dpp)
{
	struct node_dp *dp = dpp ? *dpp : NULL;

	if (!dp)
		return;
	node_serve_destroy(&dp->srv);
	/* store callbacks still in flight hold their connection state: let
	 * the store finish them (their answers go nowhere). The store works
	 * from the loop's hooks and never runs the loop, so the loop runs here,
	 * at destroy, as node_serve_destroy() runs it */
	while (node_store_pending(dp->o.store) && node_loop_run(dp->o.loop, true) >= 0)
		;
	free(dp);
	*dpp = NULL;
}
