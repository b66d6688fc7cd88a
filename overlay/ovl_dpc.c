#include "ovl_dpc.h"

#include <errno.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bytes queued to send: a frame's head, then its payload (sealed here, or
 * the call's own plaintext, borrowed). */
struct txi {
	struct txi *next;
	struct ovl_dpc_call *call;  /* NULL for the HELLO */
	uint8_t *sealed;            /* owned: the sealed payload, or NULL */
	const uint8_t *payload;     /* what follows the head */
	uint64_t plen;
	uint64_t off;               /* bytes of head and payload sent */
	size_t fill;                /* a stream's chunk: plaintext bytes written into it */
	struct ovl_dpc_call *scall; /* a stream's chunk: its call (counted in st_queued while open) */
	size_t hlen;
	uint8_t head[];
};

struct ovl_dpc {
	struct ovl_wire_hs *hs;     /* until the handshake completes */
	struct ovl_wire_session ses;
	bool ready;
	int failed;
	uint32_t refusal;
	char err[OVL_DPC_ERR_BYTES];
	char name[OVL_DPC_NAME_BYTES];
	uint32_t rid;
	/* send side */
	struct txi *tx_head, *tx_tail;
	uint64_t tx_pending;
	bool tx_lent;               /* a driver may be reading what ovl_dpc_tx_iov() gave */
	/* started calls: waiting for the session (not sealed yet), then sealed */
	struct ovl_dpc_call *wait_head, *wait_tail;
	struct ovl_dpc_call *sent_head, *sent_tail;
	unsigned inflight;
	struct ovl_dpc_call *streaming; /* a stream whose head is out and payload not all written */
	uint64_t st_queued;         /* its chunks' bytes queued and not yet sent */
	/* receive side: a head, then the payload of the call it answers */
	uint8_t head[OVL_WIRE_HEAD_MAX_BYTES];
	size_t fill, need;          /* head bytes held; bytes the head has in all (32 until known) */
	struct ovl_dpc_call *rx_call;
	struct ovl_wire_opener op;
	uint8_t *body;              /* the payload as received, opened in place */
	bool body_owned;
	uint64_t wire_len, wire_got, fed, plain_got;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* ---- calls ------------------------------------------------------------------ */

void ovl_dpc_call_init(struct ovl_dpc_call *call)
{
	memset(call, 0, sizeof(*call));
}

void ovl_dpc_call_release(struct ovl_dpc_call *call)
{
	if (call->body_owned)
		free(call->body);
	call->body = NULL;
	call->body_owned = false;
	call->body_len = 0;
	call->complete = false;
	call->result = 0;
	call->err[0] = 0;
}

uint8_t *ovl_dpc_call_take_body(struct ovl_dpc_call *call)
{
	uint8_t *b = NULL;

	if (call->body_owned && call->body) {
		b = call->body;
	} else {
		b = malloc(call->body_len + 1);
		if (b && call->body_len)
			memcpy(b, call->body, call->body_len);
	}
	call->body = NULL;
	call->body_owned = false;
	return b;
}

int ovl_dpc_call_errno(const struct ovl_dpc_call *call)
{
	return call->result < 0 ? call->result : ovl_wire_status_to_errno(call->resp.status);
}

static void list_push(struct ovl_dpc_call **head, struct ovl_dpc_call **tail,
		      struct ovl_dpc_call *call)
{
	call->next = NULL;
	if (*tail)
		(*tail)->next = call;
	else
		*head = call;
	*tail = call;
}

static bool list_remove(struct ovl_dpc_call **head, struct ovl_dpc_call **tail,
			struct ovl_dpc_call *call)
{
	struct ovl_dpc_call *prev = NULL;

	for (struct ovl_dpc_call *p = *head; p; prev = p, p = p->next) {
		if (p != call)
			continue;
		if (prev)
			prev->next = p->next;
		else
			*head = p->next;
		if (*tail == p)
			*tail = prev;
		p->next = NULL;
		return true;
	}
	return false;
}

/* The call is the caller's again. */
static void complete(struct ovl_dpc *c, struct ovl_dpc_call *call, int result, const char *text)
{
	if (!list_remove(&c->sent_head, &c->sent_tail, call))
		list_remove(&c->wait_head, &c->wait_tail, call);
	c->inflight--;
	call->complete = true;
	call->result = result;
	if (result < 0)
		snprintf(call->err, sizeof(call->err), "%s", text);
	if (call->done)
		call->done(call, call->done_arg);
}

static void progress(const struct ovl_dpc_call *call, uint64_t before, uint64_t now,
		     uint64_t total)
{
	if (!call->progress || now == before)
		return;
	if (now / OVL_DPC_PROGRESS_STEP_BYTES != before / OVL_DPC_PROGRESS_STEP_BYTES ||
	    now == total)
		call->progress(call->progress_arg, now, total);
}

static int wait_flush(struct ovl_dpc *c);

/* ---- failure ---------------------------------------------------------------- */

/* Nothing more goes out: a borrowed payload is not touched again. */
static void tx_drop(struct ovl_dpc *c)
{
	while (c->tx_head) {
		struct txi *t = c->tx_head;

		c->tx_head = t->next;
		free(t->sealed);
		free(t);
	}
	c->tx_tail = NULL;
	c->tx_pending = 0;
}

static void rx_body_drop(struct ovl_dpc *c)
{
	if (c->body_owned)
		free(c->body);
	c->body = NULL;
	c->body_owned = false;
	c->rx_call = NULL;
}

static int fail(struct ovl_dpc *c, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct ovl_dpc *c, int code, const char *fmt, ...)
{
	va_list ap;

	if (c->failed)
		return c->failed;
	c->failed = code;
	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
	c->tx_pending = 0;
	if (c->streaming) {
		struct txi *seg = c->streaming->st_seg;

		if (seg)
			free(seg->sealed);
		free(seg);
		c->streaming->st_seg = NULL;
		c->streaming = NULL;
	}
	rx_body_drop(c);
	if (!c->tx_lent) {
		tx_drop(c);
	} else {
		/* a send may still read the queued bytes: the calls whose bytes
		 * they are complete when it ends (ovl_dpc_tx_done()) */
		struct ovl_dpc_call *next = NULL;

		for (struct ovl_dpc_call *call = c->sent_head; call; call = next) {
			next = call->next;
			if (call->sent)
				complete(c, call, code, c->err);
		}
	}
	if (!c->tx_lent)
		while (c->sent_head)
			complete(c, c->sent_head, code, c->err);
	while (c->wait_head)
		complete(c, c->wait_head, code, c->err);
	return code;
}

void ovl_dpc_abort(struct ovl_dpc *c, int code, const char *text)
{
	fail(c, code < 0 ? code : -ECONNABORTED, "%s", text ? text : "connection lost");
}

/* ---- the engine ---------------------------------------------------------------- */

static void tx_push(struct ovl_dpc *c, struct txi *t)
{
	t->next = NULL;
	if (c->tx_tail)
		c->tx_tail->next = t;
	else
		c->tx_head = t;
	c->tx_tail = t;
	c->tx_pending += t->hlen + t->plen;
}

int ovl_dpc_new(struct ovl_dpc **out, const struct ovl_dpc_cfg *cfg, char *err, size_t errlen)
{
	struct ovl_wire_hs_cfg hc = { 0 };
	struct ovl_dpc *c = NULL;
	struct txi *t = NULL;
	uint8_t hello[OVL_WIRE_HEAD_MAX_BYTES];
	int ret, n;

	*out = NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	snprintf(c->name, sizeof(c->name), "%s", cfg->name ? cfg->name : "node");
	c->need = OVL_WIRE_HDR_BYTES;
	hc.id = cfg->id;
	hc.cert = cfg->cert;
	hc.cert_len = cfg->cert_len;
	hc.peers = cfg->peers;
	hc.verify = cfg->verify;
	hc.verify_arg = cfg->verify_arg;
	hc.now = cfg->now;
	hc.slice = cfg->slice;
	ret = ovl_wire_client_new(&c->hs, &hc, err, errlen);
	if (ret < 0)
		goto out;
	n = ovl_wire_client_hello(c->hs, hello, sizeof(hello), err, errlen);
	if (n < 0) {
		ret = n;
		goto out;
	}
	t = malloc(sizeof(*t) + (size_t)n);
	if (!t) {
		ret = -ENOMEM;
		goto out;
	}
	memset(t, 0, sizeof(*t));
	t->hlen = (size_t)n;
	memcpy(t->head, hello, (size_t)n);
	tx_push(c, t);
	*out = c;
	c = NULL;
out:
	ovl_dpc_destroy(&c);
	return ret;
}

void ovl_dpc_destroy(struct ovl_dpc **cp)
{
	struct ovl_dpc *c = cp ? *cp : NULL;

	if (!c)
		return;
	c->tx_lent = false; /* the caller's promise: no send reads them any more */
	fail(c, -ECONNABORTED, "connection closed");
	tx_drop(c);
	while (c->sent_head)
		complete(c, c->sent_head, c->failed, c->err);
	ovl_wire_hs_destroy(&c->hs);
	ovl_wire_session_clear(&c->ses);
	sodium_memzero(c->head, sizeof(c->head));
	free(c);
	*cp = NULL;
}

bool ovl_dpc_ready(const struct ovl_dpc *c)
{
	return c->ready && !c->failed;
}

int ovl_dpc_failed(const struct ovl_dpc *c)
{
	return c->failed;
}

const char *ovl_dpc_error(const struct ovl_dpc *c)
{
	return c->err;
}

uint32_t ovl_dpc_refusal(const struct ovl_dpc *c)
{
	return c->refusal;
}

const struct ovl_cert *ovl_dpc_peer(const struct ovl_dpc *c)
{
	return c->ready ? &c->ses.peer : NULL;
}

unsigned ovl_dpc_inflight(const struct ovl_dpc *c)
{
	return c->inflight;
}

/* Encode the call's meta into meta[]; its length or -EINVAL. */
static int call_meta(const struct ovl_dpc_call *call, uint8_t *meta, size_t cap, char *err,
		     size_t errlen)
{
	int n = ovl_wire_req_encode(&call->req, meta, cap, err, errlen);

	return n < 0 ? -EINVAL : n;
}

/* Seal the call's head (and payload) and queue them. */
static int call_seal(struct ovl_dpc *c, struct ovl_dpc_call *call, char *err, size_t errlen)
{
	uint8_t meta[OVL_WIRE_META_MAX_BYTES];
	struct ovl_wire_hdr h = { 0 };
	uint8_t *sealed = NULL;
	struct txi *t = NULL;
	int mlen = call_meta(call, meta, sizeof(meta), err, errlen), hl;
	size_t cap;

	if (mlen < 0)
		return mlen;
	h.type = call->req.type;
	h.flags = call->encrypt && call->payload_len ? OVL_WIRE_FLAG_ENCRYPTED : 0;
	if (call->stream) {
		/* the payload follows as it is written, sealed chunk by chunk */
		h.payload_len = h.flags ? ovl_wire_sealed_len(call->payload_len) : call->payload_len;
		if (++c->rid == 0)
			c->rid = 1;
		h.rid = c->rid;
		cap = OVL_WIRE_HDR_BYTES + (size_t)mlen + OVL_WIRE_MAC_BYTES;
		t = malloc(sizeof(*t) + cap);
		if (!t)
			return -ENOMEM;
		memset(t, 0, sizeof(*t));
		hl = ovl_wire_head_seal(&c->ses, &h, meta, (size_t)mlen, t->head, cap, err, errlen);
		if (hl < 0) {
			free(t);
			return -EINVAL;
		}
		t->hlen = (size_t)hl;
		memcpy(call->shdr, t->head, OVL_WIRE_HDR_BYTES);
		call->rid = h.rid;
		call->st_left = call->payload_len;
		call->st_chunk = 0;
		call->st_seg = NULL;
		tx_push(c, t);
		list_push(&c->sent_head, &c->sent_tail, call);
		c->streaming = call;
		c->st_queued = 0;
		return 0;
	}
	h.payload_len = h.flags ? ovl_wire_sealed_len(call->payload_len) : call->payload_len;
	if (++c->rid == 0)
		c->rid = 1;
	h.rid = c->rid;
	cap = OVL_WIRE_HDR_BYTES + (size_t)mlen + OVL_WIRE_MAC_BYTES;
	t = malloc(sizeof(*t) + cap);
	if (h.flags)
		sealed = malloc(h.payload_len);
	if (!t || (h.flags && !sealed)) {
		free(t);
		free(sealed);
		return -ENOMEM;
	}
	memset(t, 0, sizeof(*t));
	/* from here the sequence number is spent: any failure breaks the session */
	hl = ovl_wire_head_seal(&c->ses, &h, meta, (size_t)mlen, t->head, cap, err, errlen);
	if (hl < 0 || (sealed && ovl_wire_payload_seal(&c->ses, t->head, call->payload,
						       call->payload_len, sealed) < 0)) {
		free(t);
		free(sealed);
		return -EINVAL;
	}
	t->call = call;
	t->hlen = (size_t)hl;
	t->sealed = sealed;
	t->payload = sealed ? sealed : call->payload;
	t->plen = h.payload_len;
	call->rid = h.rid;
	tx_push(c, t);
	list_push(&c->sent_head, &c->sent_tail, call);
	return 0;
}

int ovl_dpc_call_start(struct ovl_dpc *c, struct ovl_dpc_call *call, char *err, size_t errlen)
{
	uint8_t meta[OVL_WIRE_META_MAX_BYTES];
	int ret;

	call->complete = false;
	call->result = 0;
	call->err[0] = 0;
	call->body = NULL;
	call->body_len = 0;
	call->body_owned = false;
	call->sent = call->answered = false;
	call->next = NULL;
	call->st_seg = NULL;
	call->st_left = 0;
	if (call->stream && (call->req.type != OVL_WIRE_T_PUT || call->payload_len == 0))
		call->stream = false; /* nothing to stream: an ordinary call */
	if (call->stream)
		call->payload = NULL;
	if (c->failed) {
		set_err(err, errlen, "%s", c->err);
		return c->failed;
	}
	if (!c->ready || c->wait_head || c->streaming) {
		/* checked now, sealed when the session is up and no stream is
		 * open (in the order started) */
		ret = call_meta(call, meta, sizeof(meta), err, errlen);
		if (ret < 0)
			return ret;
		list_push(&c->wait_head, &c->wait_tail, call);
		c->inflight++;
		return 0;
	}
	ret = call_seal(c, call, err, errlen);
	if (ret < 0)
		return ret;
	c->inflight++;
	return 0;
}

int ovl_dpc_tx_iov(struct ovl_dpc *c, struct iovec *iov, int n)
{
	int k = 0;

	if (c->failed)
		return 0;

	for (const struct txi *t = c->tx_head; t && k < n; t = t->next) {
		if (t->off < t->hlen)
			iov[k++] = (struct iovec){ .iov_base = (void *)(t->head + t->off),
						   .iov_len = t->hlen - (size_t)t->off };
		if (k < n && t->plen) {
			uint64_t start = t->off > t->hlen ? t->off - t->hlen : 0;

			iov[k++] = (struct iovec){ .iov_base = (void *)(t->payload + start),
						   .iov_len = (size_t)(t->plen - start) };
		}
	}
	if (k)
		c->tx_lent = true;
	return k;
}

uint64_t ovl_dpc_tx_pending(const struct ovl_dpc *c)
{
	return c->tx_pending;
}

void ovl_dpc_tx_done(struct ovl_dpc *c, size_t n)
{
	uint64_t queued = c->st_queued;

	c->tx_lent = false;
	if (c->failed) {
		/* the send that may have read them has ended */
		tx_drop(c);
		while (c->sent_head)
			complete(c, c->sent_head, c->failed, c->err);
		return;
	}
	while (n && c->tx_head) {
		struct txi *t = c->tx_head;
		uint64_t rest = t->hlen + t->plen - t->off, take = n < rest ? n : rest;
		uint64_t before = t->off > t->hlen ? t->off - t->hlen : 0, now;
		struct ovl_dpc_call *call = t->call;

		t->off += take;
		c->tx_pending -= take;
		n -= (size_t)take;
		now = t->off > t->hlen ? t->off - t->hlen : 0;
		if (call)
			progress(call, before, now, t->plen);
		if (t->off < t->hlen + t->plen)
			break;
		c->tx_head = t->next;
		if (!c->tx_head)
			c->tx_tail = NULL;
		if (t->scall && t->scall == c->streaming)
			c->st_queued -= t->plen;
		free(t->sealed);
		free(t);
		if (call) {
			call->sent = true;
			if (call->answered)
				complete(c, call, 0, NULL);
		}
	}
	/* the stream's queue drained some: its writer may go on */
	if (c->streaming && c->st_queued < queued && c->streaming->room)
		c->streaming->room(c->streaming->room_arg);
}

uint64_t ovl_dpc_call_room(const struct ovl_dpc *c, const struct ovl_dpc_call *call)
{
	uint64_t room;

	if (c->failed || c->streaming != call || c->st_queued >= OVL_DPC_STREAM_QUEUE_BYTES)
		return 0;
	room = OVL_DPC_STREAM_QUEUE_BYTES - c->st_queued;
	return room < call->st_left ? room : call->st_left;
}

ssize_t ovl_dpc_call_write(struct ovl_dpc *c, struct ovl_dpc_call *call, const void *buf,
			   size_t len)
{
	const uint8_t *in = buf;
	uint64_t room;
	size_t used = 0;

	if (c->failed)
		return c->failed;
	if (c->streaming != call)
		return 0; /* not its turn yet (or every byte is written) */
	room = ovl_dpc_call_room(c, call);
	if (len > room)
		len = (size_t)room;
	while (used < len) {
		struct txi *t = call->st_seg;
		size_t k;

		if (!t) {
			t = calloc(1, sizeof(*t));
			if (t)
				t->sealed = malloc(OVL_WIRE_CHUNK_BYTES + OVL_WIRE_TAG_BYTES);
			if (!t || !t->sealed) {
				free(t);
				return used ? (ssize_t)used
					    : fail(c, -ENOMEM, "no memory for a streamed payload");
			}
			t->scall = call;
			t->payload = t->sealed;
			call->st_seg = t;
		}
		k = OVL_WIRE_CHUNK_BYTES - t->fill;
		if (k > len - used)
			k = len - used;
		memcpy(t->sealed + t->fill, in + used, k);
		t->fill += k;
		used += k;
		call->st_left -= k;
		if (t->fill < OVL_WIRE_CHUNK_BYTES && call->st_left)
			continue;
		/* a whole chunk (or the last): sealed and queued */
		t->plen = t->fill;
		if (call->encrypt) {
			if (ovl_wire_chunk_seal(&c->ses, call->shdr, call->st_chunk, t->sealed,
						t->fill) < 0) {
				free(t->sealed);
				free(t);
				call->st_seg = NULL;
				return fail(c, -EINVAL, "cannot seal chunk %u of a streamed payload",
					    call->st_chunk);
			}
			t->plen += OVL_WIRE_TAG_BYTES;
		}
		call->st_chunk++;
		call->st_seg = NULL;
		if (!call->st_left)
			t->call = call; /* its last bytes: sent when they are */
		tx_push(c, t);
		c->st_queued += t->plen;
		if (!call->st_left) {
			int ret;

			c->streaming = NULL;
			c->st_queued = 0;
			ret = wait_flush(c);
			if (ret < 0)
				return ret;
		}
	}
	return (ssize_t)used;
}

/* ---- receive ------------------------------------------------------------------ */

size_t ovl_dpc_rx_space(struct ovl_dpc *c, uint8_t **buf)
{
	if (c->failed)
		return 0;
	if (c->rx_call && c->body) {
		*buf = c->body + c->wire_got;
		return (size_t)(c->wire_len - c->wire_got);
	}
	*buf = c->head + c->fill;
	return c->need - c->fill;
}

/* Seal the calls that waited (for the session, or for a stream to end),
 * in order, until a stream opens. 0 or the engine's failure. */
static int wait_flush(struct ovl_dpc *c)
{
	char e[OVL_DPC_ERR_BYTES] = "";
	int ret;

	while (c->wait_head && !c->streaming && !c->failed) {
		struct ovl_dpc_call *call = c->wait_head;

		list_remove(&c->wait_head, &c->wait_tail, call);
		ret = call_seal(c, call, e, sizeof(e));
		if (ret == -EINVAL) {
			complete(c, call, ret, e); /* a request the session refuses to seal */
		} else if (ret < 0) {
			list_push(&c->wait_head, &c->wait_tail, call);
			return fail(c, ret, "%s", e[0] ? e : strerror(-ret));
		} else if (call->stream && call->room) {
			call->room(call->room_arg); /* its turn: bytes may come */
		}
	}
	return c->failed;
}

/* The handshake's answer is complete in c->head. */
static int hs_finish(struct ovl_dpc *c)
{
	char e[OVL_DPC_ERR_BYTES] = "";
	int ret = ovl_wire_client_finish(c->hs, c->head, c->fill, &c->refusal, e, sizeof(e));

	if (ret == 0)
		ret = ovl_wire_hs_session(c->hs, &c->ses);
	ovl_wire_hs_destroy(&c->hs);
	if (ret < 0)
		return fail(c, ret, "%s", e[0] ? e : strerror(-ret));
	c->ready = true;
	return wait_flush(c);
}

static void rx_complete(struct ovl_dpc *c)
{
	struct ovl_dpc_call *call = c->rx_call;

	call->body = c->body;
	call->body_owned = c->body_owned;
	call->body_len = c->plain_got;
	c->body = NULL;
	c->body_owned = false;
	c->rx_call = NULL;
	call->answered = true;
	if (call->sent)
		complete(c, call, 0, NULL);
}

/* A response head is complete in c->head. */
static int resp_head(struct ovl_dpc *c)
{
	struct ovl_wire_hdr h;
	const uint8_t *meta = NULL;
	struct ovl_dpc_call *call = NULL;
	char e[OVL_DPC_ERR_BYTES] = "";

	if (ovl_wire_head_open(&c->ses, c->head, c->fill, &h, &meta, e, sizeof(e)) < 0)
		return fail(c, -EBADMSG, "%s sent a bad response: %s", c->name, e);
	for (call = c->sent_head; call && call->rid != h.rid; call = call->next)
		;
	if (!call || call->answered)
		return fail(c, -EBADMSG, "%s sent a bad response: an answer to no request in flight",
			    c->name);
	if (h.type != (call->req.type | OVL_WIRE_T_RESPONSE))
		return fail(c, -EBADMSG, "%s sent a bad response: %s to a %s", c->name,
			    ovl_wire_type_name(h.type), ovl_wire_type_name(call->req.type));
	if (ovl_wire_resp_decode(h.type, meta, h.meta_len, &call->resp, e, sizeof(e)) < 0)
		return fail(c, -EBADMSG, "%s sent a bad response: %s", c->name, e);
	c->rx_call = call;
	c->wire_len = h.payload_len;
	c->wire_got = c->fed = c->plain_got = 0;
	if (!h.payload_len) {
		rx_complete(c);
		return 0;
	}
	/* an encrypted answer is always welcome (its tags prove it); a
	 * plaintext one on a slice that requires encryption is not */
	if (!(h.flags & OVL_WIRE_FLAG_ENCRYPTED) && call->encrypt)
		return fail(c, -EPROTO,
			    "%s sent a plaintext payload on a slice that requires encryption",
			    c->name);
	if (ovl_wire_opener_init(&c->op, &c->ses, c->head) < 0)
		return fail(c, -EBADMSG, "%s sent an invalid encrypted length", c->name);
	if (call->rbuf && call->rcap >= h.payload_len) {
		c->body = call->rbuf;
		c->body_owned = false;
	} else {
		c->body = malloc(h.payload_len);
		if (!c->body)
			return fail(c, -ENOMEM, "%s: no memory for a payload of %llu bytes", c->name,
				    (unsigned long long)h.payload_len);
		c->body_owned = true;
	}
	return 0;
}

/* n payload bytes arrived at body + wire_got: open what is complete, in place. */
static int rx_payload(struct ovl_dpc *c, size_t n)
{
	uint64_t before = c->wire_got;

	c->wire_got += n;
	while (c->fed < c->wire_got) {
		size_t plain = 0;
		ssize_t k = ovl_wire_opener_feed(&c->op, c->body + c->plain_got, c->body + c->fed,
						 (size_t)(c->wire_got - c->fed), &plain);

		if (k < 0)
			return fail(c, -EIO, "%s: payload chunk %u failed authentication", c->name,
				    c->op.idx);
		c->fed += (uint64_t)k;
		c->plain_got += plain;
	}
	progress(c->rx_call, before, c->wire_got, c->wire_len);
	if (c->wire_got == c->wire_len)
		rx_complete(c);
	return 0;
}

int ovl_dpc_rx_done(struct ovl_dpc *c, size_t n)
{
	struct ovl_wire_hdr h;
	char e[OVL_DPC_ERR_BYTES] = "";
	size_t need = 0;
	int ret;

	if (c->failed)
		return c->failed;
	if (!n)
		return 0;
	if (c->rx_call && c->body)
		return rx_payload(c, n);
	c->fill += n;
	if (c->fill < c->need)
		return 0;
	if (c->need == OVL_WIRE_HDR_BYTES) {
		ret = ovl_wire_head_need(c->head, c->fill, c->ready, &h, &need, e, sizeof(e));
		if (ret < 0)
			return fail(c, -EBADMSG, "%s sent a bad %s: %s", c->name,
				    c->ready ? "response" : "handshake answer", e);
		c->need = OVL_WIRE_HDR_BYTES + need;
		if (need)
			return 0;
	}
	ret = c->ready ? resp_head(c) : hs_finish(c);
	c->fill = 0;
	c->need = OVL_WIRE_HDR_BYTES;
	return ret < 0 ? ret : c->failed;
}

int ovl_dpc_feed(struct ovl_dpc *c, const uint8_t *in, size_t len)
{
	while (len) {
		uint8_t *buf = NULL;
		size_t room = ovl_dpc_rx_space(c, &buf), k = len < room ? len : room;
		int ret;

		if (!room)
			return c->failed ? c->failed : -EPROTO;
		memcpy(buf, in, k);
		ret = ovl_dpc_rx_done(c, k);
		if (ret < 0)
			return ret;
		in += k;
		len -= k;
	}
	return 0;
}
