/*
 * libshelf's asynchronous engine (tools/shelf.h, "Many operations in
 * flight"): GET, STAT, PUT and DELETE started with shelf_*_async() and
 * driven by shelf_run() from the caller's one thread.
 *
 * Each node gets one nonblocking TCP connection with an ovl_dpc engine
 * (the sans-I/O client of the data plane), on which every request to that
 * node is pipelined; poll() waits for all of them. An operation is a small
 * state machine that asks one node at a time, in the order and with the
 * rules of the blocking calls (the sh_rd_* rules and sh_order of
 * replica.c): fail-over to the next replica, tombstones, busy answered by
 * asking again after a pause, stale-map by a fresh map. Engines complete
 * calls inside their receive and send paths; a completion is only queued
 * there (fin list) and handled by the run loop, so nothing re-enters an
 * engine and the caller's callbacks never run inside one.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "shelf_int.h"

#define AIO_TX_IOV 64
#define AIO_RX_BYTES (256u << 10)      /* one recv() of small frames at once */
#define AIO_RX_DIRECT_BYTES (64u << 10) /* a frame needing this much is received in place */
#define AIO_RX_ROUNDS 16               /* recv()s per connection per wake-up (fairness) */

enum op_kind { OPK_GET, OPK_STAT, OPK_PUT, OPK_DEL };
enum op_state { OPS_QUEUED, OPS_STEP, OPS_CALL, OPS_PAUSED, OPS_DONE };

/* One node's connection. */
struct sh_aconn {
	struct sh_aconn *next;
	uint8_t addr[16];
	uint16_t port;
	char text[INET6_ADDRSTRLEN];
	int fd;
	struct ovl_dpc *dpc;
	bool connected;          /* the TCP connect completed */
	uint64_t hs_deadline;    /* connect + handshake end by then (ovl_mono_ms) */
	uint64_t last_rx;        /* bytes last arrived (ovl_mono_ms) */
	int budget_ms;           /* what hs_deadline allowed */
};

struct shelf_op {
	struct shelf_op *prev, *next;  /* the queue or the active list */
	struct shelf_op *fnext;        /* the fin list (a call completed) */
	struct shelf *s;
	enum op_kind kind;
	enum op_state state;
	uint8_t type;                  /* OVL_WIRE_T_* */
	const char *what;              /* "get", "stat", "put", "rm" */
	char slice[OVL_WIRE_NAME_SIZE];
	uint8_t *key;                  /* malloc'd copy */
	size_t klen;
	char kshow[SH_KSHOW_BYTES];
	bool has_range;
	uint64_t off, len;
	const uint8_t *data;           /* PUT: borrowed until done */
	size_t dlen;
	uint32_t crc;
	shelf_done_fn done;
	void *arg;
	uint64_t deadline;             /* ovl_mono_ms: set when it leaves the queue */
	uint64_t wake;                 /* OPS_PAUSED: until then */
	/* the pass: candidates of one map */
	struct sh_cand *cands;
	unsigned ncand, nhomes, ci;
	uint64_t epoch;
	bool encrypt;
	unsigned replicas;
	bool fresh;                    /* the next pass fetches the map */
	struct sh_order pre;           /* the first pass's order, worked out by the caller (pre.idx NULL: none) */
	uint64_t pre_epoch;            /* over the map of this epoch */
	struct sh_rd_pass *rp;         /* reads */
	unsigned stale_retries, busy_retries, attempt;
	bool lost_retried, stale_retried, first_pass;
	/* a GET's object held while the tombstones of nf[] are probed */
	bool probing;
	unsigned probe_k;
	struct ovl_wire_resp *keep;
	uint8_t *keep_body;
	size_t keep_len;
	/* the call in flight */
	struct ovl_dpc_call *call;
	struct sh_aconn *conn;
	uint64_t call_start;
	bool probe_call;
	/* results */
	int res;
	uint8_t *body;                 /* GET: malloc'd, the op's until taken */
	size_t blen;
	uint64_t total;
	struct shelf_objstat st;
	char e2[768];                  /* writes: the last failure's words */
	char err[SHELF_ERR_BYTES];
	bool internal;                 /* libshelf's own (a chunk): reserved keys allowed,
					* a manifest's bytes given as they are */
	struct lg *lg;                 /* parked: a GET of a large object, reading its chunks */
};

/* A caller's GET whose object is a manifest (or may be one): parked off
 * the active list while its children (a GET of the whole stored object,
 * then the chunks of the range) run as ordinary internal operations. */
struct lg {
	struct shelf_op *op;           /* the parked GET */
	uint8_t *man;                  /* the manifest's bytes (malloc'd) */
	size_t mlen;
	struct ovl_large_head h;
	uint64_t off, end;             /* the range of the object */
	uint8_t *buf;                  /* end - off bytes */
	struct lg_child *kids;         /* one per chunk of the range */
	unsigned pending;              /* children not complete */
	int res;                       /* the first failure (lowest chunk), or 0 */
	uint32_t res_chunk;
	uint64_t seq, hlc, node;       /* the manifest's version */
};

struct lg_child {
	struct lg *lg;
	uint32_t i;
};

struct sh_aio {
	struct shelf_op *qhead, *qtail;  /* queued (FIFO) */
	struct shelf_op *active;         /* started */
	struct shelf_op *fin_head, *fin_tail;
	unsigned nactive, nqueued, max;
	struct shelf_op *parked;         /* GETs of large objects waiting on their chunks */
	unsigned nparked;
	uint64_t ndone;                  /* operations completed (sh_aio_run_one) */
	struct sh_aconn *conns;
	struct pollfd *pfd;
	struct sh_aconn **pconn;
	unsigned pcap;
	uint8_t *rx;                     /* AIO_RX_BYTES */
	bool running;
};

static int aio_get(struct shelf *s, struct sh_aio **out)
{
	if (!s->aio) {
		s->aio = calloc(1, sizeof(*s->aio));
		if (!s->aio)
			return -ENOMEM;
		s->aio->max = SHELF_MAX_INFLIGHT_DEFAULT;
	}
	*out = s->aio;
	return 0;
}

/* ---- lists ----------------------------------------------------------------- */

static void dl_remove(struct shelf_op **head, struct shelf_op *op)
{
	if (op->prev)
		op->prev->next = op->next;
	else
		*head = op->next;
	if (op->next)
		op->next->prev = op->prev;
	op->prev = op->next = NULL;
}

static void dl_push(struct shelf_op **head, struct shelf_op *op)
{
	op->prev = NULL;
	op->next = *head;
	if (*head)
		(*head)->prev = op;
	*head = op;
}

/* ---- connections --------------------------------------------------------- */

static void conn_free(struct sh_aconn *c)
{
	ovl_dpc_destroy(&c->dpc);
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}

/* A failed engine has completed every call: its connection goes. */
static void conns_reap(struct sh_aio *a)
{
	struct sh_aconn **pp = &a->conns;

	while (*pp) {
		struct sh_aconn *c = *pp;

		if (ovl_dpc_failed(c->dpc)) {
			*pp = c->next;
			conn_free(c);
			continue;
		}
		pp = &c->next;
	}
}

/* The connection to addr:port, opened (nonblocking) when there is none:
 * 0, or -EHOSTUNREACH / -ENOMEM with err saying why. */
static int conn_for(struct shelf *s, struct sh_aio *a, const struct sh_cand *cd, const char *slice,
		    struct sh_aconn **out, char *err, size_t errlen)
{
	struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_port = htons(cd->port) };
	struct ovl_dpc_cfg cfg = { 0 };
	char name[INET6_ADDRSTRLEN + 8], e2[OVL_DPC_ERR_BYTES] = "";
	struct sh_aconn *c;
	int one = 1, ret;

	for (c = a->conns; c; c = c->next)
		if (c->port == cd->port && memcmp(c->addr, cd->addr, 16) == 0 &&
		    !ovl_dpc_failed(c->dpc)) {
			*out = c;
			return 0;
		}
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->fd = -1;
	memcpy(c->addr, cd->addr, 16);
	c->port = cd->port;
	snprintf(c->text, sizeof(c->text), "%s", cd->text);
	snprintf(name, sizeof(name), "node %s", cd->text);
	cfg.id = s->id;
	cfg.cert = s->cert;
	cfg.cert_len = s->cert_len;
	cfg.peers = s->peers;
	cfg.now = (uint64_t)time(NULL);
	cfg.slice = slice;
	cfg.name = name;
	ret = ovl_dpc_new(&c->dpc, &cfg, e2, sizeof(e2));
	if (ret < 0) {
		free(c);
		return ret == -ENOMEM ? ret : sh_fail(err, errlen, ret, "node %s: %s", cd->text, e2);
	}
	c->fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	memcpy(&sa.sin6_addr, cd->addr, 16);
	if (c->fd < 0 || (connect(c->fd, (const struct sockaddr *)&sa, sizeof(sa)) < 0 &&
			  errno != EINPROGRESS)) {
		ret = -errno;
		conn_free(c);
		return sh_fail(err, errlen, -EHOSTUNREACH, "node %s port %u: %s", cd->text, cd->port,
			       strerror(-ret));
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* a node that does not take the connection and shake hands within the
	 * connect timeout is passed over for the next replica */
	c->budget_ms = s->connect_timeout_ms < s->timeout_ms ? s->connect_timeout_ms : s->timeout_ms;
	c->hs_deadline = ovl_mono_ms() + (uint64_t)c->budget_ms;
	c->last_rx = ovl_mono_ms();
	c->next = a->conns;
	a->conns = c;
	*out = c;
	return 0;
}

/* The transport failed: every call on c completes with -EHOSTUNREACH. */
static void conn_lost(struct sh_aconn *c, const char *fmt, const char *why)
{
	char text[300];

	snprintf(text, sizeof(text), fmt, c->text, why);
	ovl_dpc_abort(c->dpc, -EHOSTUNREACH, text);
}

static void conn_send(struct sh_aconn *c)
{
	while (!ovl_dpc_failed(c->dpc) && ovl_dpc_tx_pending(c->dpc)) {
		struct iovec iov[AIO_TX_IOV];
		struct msghdr mh = { 0 };
		ssize_t r;

		mh.msg_iov = iov;
		mh.msg_iovlen = (size_t)ovl_dpc_tx_iov(c->dpc, iov, AIO_TX_IOV);
		if (!mh.msg_iovlen)
			return;
		r = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (r < 0 && errno == EINTR) {
			ovl_dpc_tx_done(c->dpc, 0);
			continue;
		}
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			ovl_dpc_tx_done(c->dpc, 0);
			return;
		}
		if (r <= 0) {
			int e = r < 0 ? errno : ECONNRESET;

			ovl_dpc_tx_done(c->dpc, 0);
			conn_lost(c, "node %s: %s", strerror(e));
			return;
		}
		ovl_dpc_tx_done(c->dpc, (size_t)r);
	}
}

static void conn_recv(struct sh_aio *a, struct sh_aconn *c)
{
	for (int round = 0; round < AIO_RX_ROUNDS && !ovl_dpc_failed(c->dpc); round++) {
		uint8_t *buf = NULL;
		size_t room = ovl_dpc_rx_space(c->dpc, &buf);
		bool direct = room >= AIO_RX_DIRECT_BYTES;
		ssize_t r;

		if (!room)
			return;
		if (!direct) {
			buf = a->rx;
			room = AIO_RX_BYTES;
		}
		r = recv(c->fd, buf, room, MSG_DONTWAIT);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (r <= 0) {
			conn_lost(c, "node %s: %s", r == 0 ? "connection closed by the node"
						       : strerror(errno));
			return;
		}
		c->last_rx = ovl_mono_ms();
		if (direct)
			ovl_dpc_rx_done(c->dpc, (size_t)r);
		else
			ovl_dpc_feed(c->dpc, buf, (size_t)r);
		if ((size_t)r < room)
			return;
	}
}

/* A nonblocking connect ended (POLLOUT before it was connected). */
static void conn_connected(struct sh_aconn *c)
{
	int soerr = 0;
	socklen_t sl = sizeof(soerr);

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
		soerr = errno;
	if (soerr) {
		char port[64];

		snprintf(port, sizeof(port), "port %u: %s", c->port, strerror(soerr));
		conn_lost(c, "node %s %s", port);
		return;
	}
	c->connected = true;
}

/* ---- operations ------------------------------------------------------------ */

static void op_free(struct shelf_op *op)
{
	if (!op)
		return;
	if (op->call) {
		ovl_dpc_call_release(op->call);
		free(op->call);
	}
	free(op->cands);
	sh_order_release(&op->pre);
	free(op->rp);
	free(op->keep);
	free(op->keep_body);
	free(op->body);
	free(op->key);
	if (op->lg) {
		free(op->lg->man);
		free(op->lg->buf);
		free(op->lg->kids);
		free(op->lg);
	}
	free(op);
}

static void fin_push(struct sh_aio *a, struct shelf_op *op)
{
	op->fnext = NULL;
	if (a->fin_tail)
		a->fin_tail->fnext = op;
	else
		a->fin_head = op;
	a->fin_tail = op;
}

/* The engine completed op's call (inside the engine: only queue it). A
 * call whose op gave up on it (the op's time ran out) is freed here. */
static void call_done(struct ovl_dpc_call *call, void *arg)
{
	struct shelf_op *op = arg;

	if (!op) {
		ovl_dpc_call_release(call);
		free(call);
		return;
	}
	fin_push(op->s->aio, op);
}

static bool op_expired(const struct shelf_op *op)
{
	return ovl_mono_ms() >= op->deadline;
}

static int op_left_ms(const struct shelf_op *op)
{
	uint64_t now = ovl_mono_ms();

	return now >= op->deadline ? 1 : (int)(op->deadline - now);
}

/* The operation ends with res (err holds the words when res < 0): the
 * caller's callback runs, then the op is freed. */
static void op_finish(struct shelf_op *op, int res)
{
	struct sh_aio *a = op->s->aio;

	op->res = res;
	op->state = OPS_DONE;
	if (op->lg) {
		dl_remove(&a->parked, op);
		a->nparked--;
	} else {
		dl_remove(&a->active, op);
		a->nactive--;
	}
	a->ndone++;
	if (op->done)
		op->done(op->arg, res, op);
	op_free(op);
}

static void op_fail(struct shelf_op *op, int code, const char *fmt, const char *text)
{
	char w[900];

	snprintf(w, sizeof(w), fmt, text);
	snprintf(op->err, sizeof(op->err), "%s '%s': %s", op->what, op->kshow, w);
	op_finish(op, code);
}

/* Candidates of a new pass: the key's order over map m (reads with the
 * chassis preference; writes on R > 1: placement order; R = 1: the one
 * primary). 0 or -errno with text. */
static int op_pass(struct shelf_op *op, char *e2, size_t e2len)
{
	struct shelf *s = op->s;
	struct sh_map *m = NULL;
	struct sh_order o = { 0 };
	bool *dead = NULL, reads = op->kind == OPK_GET || op->kind == OPK_STAT;
	int ret;

	uint64_t saved = s->deadline_ms;

	free(op->cands);
	op->cands = NULL;
	op->ncand = op->ci = 0;
	/* a map fetch (blocking) gets what is left of this op's time */
	s->deadline_ms = op->deadline;
	ret = op->fresh ? sh_map_fetch(s, op->slice, &m, e2, e2len)
			: sh_map_get(s, op->slice, &m, e2, e2len);
	s->deadline_ms = saved;
	s->has_hint = false;
	if (ret < 0)
		return ret;
	op->epoch = m->msg.u.map.epoch;
	op->encrypt = m->msg.u.map.encrypt;
	op->replicas = m->msg.u.map.replicas;
	if (!reads && op->replicas <= 1) {
		const struct ovl_msg_member *mb = NULL;

		ret = sh_map_locate(m, op->key, op->klen, &mb, e2, e2len);
		if (ret < 0)
			return ret;
		op->cands = calloc(1, sizeof(*op->cands));
		if (!op->cands)
			return -ENOMEM;
		sh_cand_set(&op->cands[0], mb, true);
		op->ncand = op->nhomes = 1;
		/* a primary that is down: the map may be newer at the broker */
		if (mb->state == OVL_MSG_STATE_DOWN && op->attempt == 0)
			op->ncand = 0;
		return 0;
	}
	if (op->pre.idx && reads && op->pre_epoch == m->msg.u.map.epoch) {
		/* the caller's order, over this same map (once: a later pass
		 * works it out again) */
		o = op->pre;
		memset(&op->pre, 0, sizeof(op->pre));
		ret = 0;
	} else {
		sh_order_release(&op->pre);
		dead = sh_dead_members(s, &m->msg.u.map);
		if (!dead)
			return -ENOMEM;
		ret = sh_order_build(&m->msg.u.map, op->key, op->klen, dead, reads,
				     reads ? s->site : NULL, reads ? s->chassis : NULL, &o);
		free(dead);
	}
	if (ret == -EHOSTUNREACH)
		snprintf(e2, e2len, "slice '%s' has no member to hold objects", op->slice);
	if (ret < 0)
		return ret;
	op->cands = calloc(o.n ? o.n : 1, sizeof(*op->cands));
	if (!op->cands) {
		sh_order_release(&o);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < o.n; i++)
		sh_cand_set(&op->cands[i], &m->msg.u.map.members[o.idx[i]], o.home[i]);
	op->ncand = o.n;
	op->nhomes = o.nhomes;
	sh_order_release(&o);
	return 0;
}

/* Send the op's request (type, to candidate pos) on that node's connection. */
static int op_call(struct shelf_op *op, unsigned pos, uint8_t type, char *e2, size_t e2len)
{
	struct sh_aio *a = op->s->aio;
	const struct sh_cand *cd = &op->cands[pos];
	struct ovl_dpc_call *call = op->call;
	struct ovl_wire_req *q;
	int ret;

	if (!call) {
		call = op->call = malloc(sizeof(*call));
		if (!call)
			return -ENOMEM;
	} else {
		ovl_dpc_call_release(call);
	}
	ovl_dpc_call_init(call);
	ret = conn_for(op->s, a, cd, op->slice, &op->conn, e2, e2len);
	if (ret < 0)
		return ret;
	q = &call->req;
	q->type = type;
	snprintf(q->slice, sizeof(q->slice), "%s", op->slice);
	q->epoch = op->epoch;
	memcpy(q->key, op->key, op->klen);
	q->key_len = (uint32_t)op->klen;
	if (type == OVL_WIRE_T_GET && op->has_range) {
		q->has_range = true;
		q->offset = op->off;
		q->length = op->len == UINT64_MAX ? OVL_WIRE_OBJECT_MAX_BYTES : op->len;
	}
	if (type == OVL_WIRE_T_PUT) {
		q->size = op->dlen;
		q->crc = op->crc;
		call->payload = op->data;
		call->payload_len = op->dlen;
	}
	/* a STAT probe goes in the clear, as the blocking read's does */
	call->encrypt = op->encrypt && !op->probe_call;
	call->done = call_done;
	call->done_arg = op;
	ret = ovl_dpc_call_start(op->conn->dpc, call, e2, e2len);
	if (ret < 0)
		return ret == -EINVAL || ret == -ENOMEM ? ret : -EHOSTUNREACH;
	op->call_start = ovl_mono_ms();
	op->state = OPS_CALL;
	/* sent by the run loop once every op of this round has started: the
	 * requests to one node go out together, in one sendmsg() */
	return 0;
}

/* What a completed call means: 0 (call->resp is the node's answer) or
 * -errno with e2 saying why (-EHOSTUNREACH: no answer). */
static int call_result(const struct ovl_dpc_call *call, char *e2, size_t e2len)
{
	if (call->result == 0)
		return 0;
	snprintf(e2, e2len, "%s", call->err);
	if (call->result == -ECONNREFUSED)
		return -EACCES; /* the node refused the handshake */
	if (call->result == -ECONNABORTED || call->result == -ETIMEDOUT ||
	    call->result == -ECONNRESET || call->result == -EPIPE)
		return -EHOSTUNREACH;
	return call->result;
}

static void read_step(struct shelf_op *op);
static void write_step(struct shelf_op *op);

/* A new pass of a read (first: the operation's). */
static void read_pass(struct shelf_op *op)
{
	char e2[768];
	int ret;

	sh_rd_pass_begin(op->rp, op->first_pass);
	op->first_pass = false;
	ret = op_pass(op, e2, sizeof(e2));
	if (ret == -ENOMEM) {
		op_fail(op, ret, "%s", "out of memory");
		return;
	}
	if (ret < 0) {
		sh_rd_note(&op->rp->fail, SH_RK_MAP, ret, e2);
		op->ncand = 0;
	}
	read_step(op);
}

/* ---- a caller's GET of a large object ------------------------------------ */

/* The parked GET ends: its bytes (lg->buf) or lg->res with op->err. */
static void large_end(struct lg *lg)
{
	struct shelf_op *op = lg->op;
	int res = lg->res;

	if (res == 0 && lg->off == 0 && lg->end == lg->h.size &&
	    ovl_crc32c(0, lg->buf, (size_t)lg->h.size) != lg->h.crc) {
		snprintf(op->err, sizeof(op->err), "get '%s': the chunks' bytes have crc32c %08x, "
			 "the manifest says %08x", op->kshow,
			 ovl_crc32c(0, lg->buf, (size_t)lg->h.size), lg->h.crc);
		res = -EIO;
	}
	if (res == 0) {
		free(op->body);
		op->body = lg->buf;
		op->blen = (size_t)(lg->end - lg->off);
		lg->buf = NULL;
		op->total = lg->h.size;
		op->st.size = lg->h.size;
		op->st.crc = lg->h.crc;
		op->st.seq = lg->seq;
		op->st.ver.hlc = lg->hlc;
		op->st.ver.node = lg->node;
	} else {
		free(op->body);
		op->body = NULL;
		op->blen = 0;
	}
	op_finish(op, res);
}

/* One chunk of a parked GET completed. */
static void large_chunk_done(void *arg, int res, const struct shelf_op *cop)
{
	struct lg_child *k = arg;
	struct lg *lg = k->lg;
	struct shelf_op *op = lg->op;
	char e[800];
	size_t len = 0;
	const uint8_t *data = shelf_op_data(cop, &len);

	if (res == 0)
		res = sh_chunk_check(lg->man, &lg->h, k->i, len, ovl_crc32c(0, data, len), e,
				     sizeof(e));
	else
		sh_chunk_fail(&lg->h, k->i, res, shelf_op_error(cop), e, sizeof(e));
	if (res < 0 && (lg->res == 0 || k->i < lg->res_chunk)) {
		lg->res = res;
		lg->res_chunk = k->i;
		snprintf(op->err, sizeof(op->err), "get '%s': %s", op->kshow, e);
	}
	if (res == 0) {
		struct ovl_large_entry en;
		uint64_t from, to;

		ovl_large_manifest_entry(lg->man, k->i, &en);
		from = lg->off > en.offset ? lg->off - en.offset : 0;
		to = lg->end < en.offset + en.size ? lg->end - en.offset : en.size;
		memcpy(lg->buf + (en.offset + from - lg->off), data + from, (size_t)(to - from));
	}
	if (--lg->pending == 0)
		large_end(lg);
}

/* The parked GET holds its object's stored bytes in op->body: a plain
 * object (its range is given) or a manifest (its chunks are read). */
static void large_stored(struct shelf_op *op)
{
	struct lg *lg = op->lg;
	uint64_t size = op->blen, first, last;
	char why[256];
	int ret;

	if (!ovl_large_is_manifest(op->body, op->blen)) {
		/* a plain object of a size a manifest could have */
		uint64_t off = op->off < size ? op->off : size;
		uint64_t end = op->len == UINT64_MAX || op->len > size - off ? size : off + op->len;

		memmove(op->body, op->body + off, (size_t)(end - off));
		op->blen = (size_t)(end - off);
		op->total = size;
		op_finish(op, 0);
		return;
	}
	lg->man = op->body;
	lg->mlen = op->blen;
	op->body = NULL;
	op->blen = 0;
	ret = ovl_large_manifest_check(lg->man, lg->mlen, &lg->h, why, sizeof(why));
	if (ret < 0) {
		snprintf(op->err, sizeof(op->err), "get '%s': damaged manifest: %s", op->kshow, why);
		op_finish(op, -EBADMSG);
		return;
	}
	lg->off = op->off < lg->h.size ? op->off : lg->h.size;
	lg->end = op->len == UINT64_MAX || op->len > lg->h.size - lg->off ? lg->h.size
									   : lg->off + op->len;
	if (lg->end - lg->off > OVL_WIRE_OBJECT_MAX_BYTES) {
		snprintf(op->err, sizeof(op->err), "get '%s': %llu bytes, more than the 64 MiB an "
			 "asynchronous GET holds: read it with shelf_get_fd() or shelf_get_stream()",
			 op->kshow, (unsigned long long)(lg->end - lg->off));
		op_finish(op, -EFBIG);
		return;
	}
	lg->buf = malloc(lg->end > lg->off ? (size_t)(lg->end - lg->off) : 1);
	if (!lg->buf) {
		op_fail(op, -ENOMEM, "%s", "out of memory");
		return;
	}
	if (lg->end == lg->off) {
		large_end(lg);
		return;
	}
	first = lg->off / lg->h.chunk_size;
	last = (lg->end - 1) / lg->h.chunk_size;
	lg->kids = calloc((size_t)(last - first + 1), sizeof(*lg->kids));
	if (!lg->kids) {
		op_fail(op, -ENOMEM, "%s", "out of memory");
		return;
	}
	/* every child is queued before any can complete (they complete
	 * inside a later turn of the loop) */
	lg->pending = (unsigned)(last - first + 1);
	for (uint64_t i = first; i <= last; i++) {
		struct lg_child *k = &lg->kids[i - first];
		uint8_t ck[OVL_LARGE_CHUNK_KEY_BYTES];

		k->lg = lg;
		k->i = (uint32_t)i;
		ovl_large_chunk_key(ck, lg->h.id, k->i);
		ret = sh_aio_get_chunk(op->s, op->slice, ck, sizeof(ck), 0, UINT64_MAX, large_chunk_done,
				       k);
		if (ret < 0) {
			/* the ones queued complete; this one and the rest fail here */
			lg->res = lg->res ? lg->res : ret;
			lg->res_chunk = lg->res_chunk ? lg->res_chunk : k->i;
			snprintf(op->err, sizeof(op->err), "get '%s': out of memory", op->kshow);
			lg->pending -= (unsigned)(last - i + 1);
			if (lg->pending == 0)
				large_end(lg);
			return;
		}
	}
}

/* The whole stored object of a parked ranged GET arrived. */
static void large_whole_done(void *arg, int res, const struct shelf_op *cop)
{
	struct shelf_op *op = arg;
	size_t len = 0;

	if (res < 0) {
		snprintf(op->err, sizeof(op->err), "%s", shelf_op_error(cop));
		op_finish(op, res);
		return;
	}
	free(op->body);
	op->body = shelf_op_take(cop, &len);
	op->blen = len;
	op->lg->seq = cop->st.seq;
	op->lg->hlc = cop->st.ver.hlc;
	op->lg->node = cop->st.ver.node;
	large_stored(op);
}

/* A caller's GET found an object whose stored size a manifest can have
 * and either its bytes begin with the magic (a whole GET) or it is a range
 * (then the whole stored object is read first to know). The op leaves the
 * active list (its slot goes to its children) until its chunks are read. */
static void large_found(struct shelf_op *op, const struct ovl_wire_resp *r)
{
	struct sh_aio *a = op->s->aio;
	int ret;

	op->lg = calloc(1, sizeof(*op->lg));
	if (!op->lg) {
		op_fail(op, -ENOMEM, "%s", "out of memory");
		return;
	}
	op->lg->op = op;
	op->lg->seq = r->seq;
	op->lg->hlc = r->has_ver ? r->ver.hlc : 0;
	op->lg->node = r->has_ver ? r->ver.node : 0;
	dl_remove(&a->active, op);
	a->nactive--;
	dl_push(&a->parked, op);
	a->nparked++;
	op->state = OPS_STEP;
	if (!op->has_range) {
		op->off = 0;
		op->len = UINT64_MAX;
		large_stored(op);
		return;
	}
	ret = sh_aio_get_chunk(op->s, op->slice, op->key, op->klen, 0, UINT64_MAX,
			       large_whole_done, op);
	if (ret < 0)
		op_fail(op, ret, "%s", "out of memory");
}

/* The read found its object in op->keep / keep_body. */
static void read_found(struct shelf_op *op)
{
	const struct ovl_wire_resp *r = op->keep;

	if (op->ci > 0)
		op->s->counters.failovers++;
	if (op->kind == OPK_GET) {
		op->body = op->keep_body ? op->keep_body : malloc(1);
		op->keep_body = NULL;
		op->blen = op->keep_len;
		op->total = r->size;
		if (!op->body) {
			op_fail(op, -ENOMEM, "%s", "out of memory");
			return;
		}
		if (!op->internal && ovl_large_size_may_be_manifest(r->size) &&
		    (op->has_range || ovl_large_is_manifest(op->body, op->blen))) {
			large_found(op, r);
			return;
		}
	}
	op->st.size = r->size;
	op->st.crc = r->crc;
	op->st.seq = r->seq;
	op->st.ver.hlc = r->has_ver ? r->ver.hlc : 0;
	op->st.ver.node = r->has_ver ? r->ver.node : 0;
	if (op->kind == OPK_STAT)
		op->total = r->size;
	op_finish(op, 0);
}

static void read_step(struct shelf_op *op)
{
	struct sh_rd_pass *p = op->rp;
	char e2[768];
	int ret;

	for (;;) {
		if (op->probing) {
			/* the members that answered a plain not-found: their tombstones */
			while (op->probe_k < p->nnf && !op_expired(op)) {
				unsigned pos = p->nf[op->probe_k++];

				op->probe_call = true;
				if (op_call(op, pos, OVL_WIRE_T_STAT, e2, sizeof(e2)) == 0)
					return;
			}
			op->probe_call = false;
			op->probing = false;
			p->nnf = 0;
			if (sh_rd_accept(op->s, p, op->cands[op->ci].home, op->keep)) {
				read_found(op);
				return;
			}
			free(op->keep_body);
			op->keep_body = NULL;
			op->ci++;
			continue;
		}
		if (op->ci >= op->ncand || sh_rd_pass_done(p, op->cands[op->ci].home, op->nhomes))
			break;
		if (op_expired(op) && p->tried) {
			sh_rd_note(&p->fail, SH_RK_UNREACHABLE, -EHOSTUNREACH, "the time is up");
			break;
		}
		p->tried++;
		ret = op_call(op, op->ci, op->type, e2, sizeof(e2));
		if (ret == 0)
			return;
		if (ret == -ENOMEM) {
			op_fail(op, ret, "%s", "out of memory");
			return;
		}
		sh_rd_lost(op->s, p, op->what, op->kshow, &op->cands[op->ci], ret, e2);
		op->ci++;
	}
	/* the pass is over without the object */
	if (p->saw_busy && op->busy_retries < SHELF_WRITE_BUSY_RETRIES &&
	    op_left_ms(op) > sh_busy_pause_ms(op->busy_retries) + 100) {
		op->wake = ovl_mono_ms() + (uint64_t)sh_busy_pause_ms(op->busy_retries);
		op->busy_retries++;
		op->state = OPS_PAUSED;
		return;
	}
	op->res = sh_rd_fail_end(p, op->what, op->kshow, op->err, sizeof(op->err));
	op_finish(op, op->res);
}

/* op's read call completed. */
static void read_answer(struct shelf_op *op)
{
	struct ovl_dpc_call *call = op->call;
	struct sh_rd_pass *p = op->rp;
	const struct sh_cand *cd;
	enum sh_rd_verdict vd;
	char e2[768];
	int ret = call_result(call, e2, sizeof(e2));

	op->state = OPS_STEP;
	if (op->probe_call) {
		if (ret == 0)
			sh_tombs_probe_answer(p, &call->resp);
		read_step(op);
		return;
	}
	cd = &op->cands[op->ci];
	if (ret == -ENOMEM) {
		op_fail(op, ret, "%s", "out of memory");
		return;
	}
	if (ret < 0) {
		sh_rd_lost(op->s, p, op->what, op->kshow, cd, ret, e2);
		op->ci++;
		read_step(op);
		return;
	}
	vd = sh_rd_answer(op->s, p, op->what, op->kshow, cd, op->ci, op->type, &call->resp,
			  call->body, (size_t)call->body_len,
			  op->stale_retries < SH_STALE_RETRIES && !op_expired(op));
	if (vd == SH_RD_STALE) {
		op->stale_retries++;
		op->fresh = true;
		read_pass(op);
		return;
	}
	if (vd == SH_RD_NEXT) {
		op->ci++;
		read_step(op);
		return;
	}
	/* the object: keep it while tombstones are probed */
	if (!op->keep && !(op->keep = malloc(sizeof(*op->keep)))) {
		op_fail(op, -ENOMEM, "%s", "out of memory");
		return;
	}
	*op->keep = call->resp;
	free(op->keep_body);
	op->keep_body = NULL;
	op->keep_len = (size_t)call->body_len;
	if (op->kind == OPK_GET && call->body &&
	    !(op->keep_body = ovl_dpc_call_take_body(call))) {
		op_fail(op, -ENOMEM, "%s", "out of memory");
		return;
	}
	op->probing = op->kind == OPK_GET && p->nnf > 0;
	op->probe_k = 0;
	if (op->probing) {
		read_step(op);
		return;
	}
	if (sh_rd_accept(op->s, p, cd->home, op->keep)) {
		read_found(op);
		return;
	}
	op->ci++;
	read_step(op);
}

/* ---- writes: as write_path (R > 1) and keyed (R = 1) in shelf.c --------- */

static void write_pass(struct shelf_op *op)
{
	int ret = op_pass(op, op->e2, sizeof(op->e2));

	if (ret < 0) {
		snprintf(op->err, sizeof(op->err), "%s '%s': %s", op->what, op->kshow, op->e2);
		op_finish(op, ret);
		return;
	}
	write_step(op);
}

static void write_step(struct shelf_op *op)
{
	int ret;

	if (op->replicas <= 1 && op->ncand == 0) {
		/* R = 1, the primary is down in the map: a fresh map, once */
		op->lost_retried = true;
		op->attempt++;
		op->fresh = true;
		write_pass(op);
		return;
	}
	for (;;) {
		if (op->ci >= op->ncand || (op_expired(op) && op->ci)) {
			op_fail(op, -EHOSTUNREACH, "%s", op->e2);
			return;
		}
		ret = op_call(op, op->ci, op->type, op->e2, sizeof(op->e2));
		if (ret == 0)
			return;
		if (ret == -EHOSTUNREACH && op->replicas <= 1 && !op->lost_retried &&
		    !op_expired(op) && op->attempt < 2) {
			/* keyed(): the node is gone, a fresh map once */
			op->lost_retried = true;
			op->attempt++;
			op->fresh = true;
			write_pass(op);
			return;
		}
		if (ret != -EHOSTUNREACH || op->replicas <= 1) {
			op_fail(op, ret, "%s", op->e2);
			return;
		}
		sh_node_lost(op->s, &op->cands[op->ci]);
		op->ci++;
	}
}

static void write_done(struct shelf_op *op, const struct ovl_wire_resp *r)
{
	struct shelf_write_info *wi = &op->s->last_write.info;

	memset(wi, 0, sizeof(*wi));
	op->s->last_write.valid = true;
	wi->replicas = op->replicas ? op->replicas : 1;
	wi->has_held = r->has_held;
	wi->held = r->nheld;
	wi->homes = r->homes;
	wi->superseded = r->superseded;
	wi->has_ver = r->has_ver;
	wi->ver.hlc = r->ver.hlc;
	wi->ver.node = r->ver.node;
	snprintf(wi->node, sizeof(wi->node), "%s", op->cands[op->ci].text);
	op_finish(op, 0);
}

static void write_answer(struct shelf_op *op)
{
	struct ovl_dpc_call *call = op->call;
	const struct ovl_wire_resp *r = &call->resp;
	const struct sh_cand *cd = &op->cands[op->ci];
	int ret = call_result(call, op->e2, sizeof(op->e2));

	op->state = OPS_STEP;
	if (op->replicas <= 1) {
		/* keyed(): a retry with a fresh map for a node gone, one for stale-map */
		if (ret == 0 && r->status == OVL_WIRE_OK) {
			write_done(op, r);
			return;
		}
		if (ret == 0) {
			ret = ovl_wire_status_to_errno(r->status);
			sh_status_text(op->e2, sizeof(op->e2), cd->text, r);
		}
		if (ret < 0 && ret != -EHOSTUNREACH && r->status == OVL_WIRE_STALE_MAP &&
		    !op->stale_retried && !op_expired(op) && op->attempt < 2) {
			op->stale_retried = true;
			memcpy(&op->s->hint.addr, cd->addr, 16);
			op->s->hint.port = cd->port;
			op->s->has_hint = true;
		} else if (ret == -EHOSTUNREACH && !op->lost_retried && !op_expired(op) &&
			   op->attempt < 2) {
			op->lost_retried = true;
		} else {
			op_fail(op, ret, "%s", op->e2);
			return;
		}
		op->attempt++;
		op->fresh = true;
		write_pass(op);
		return;
	}
	if (ret == -EHOSTUNREACH) {
		sh_node_lost(op->s, cd);
		op->ci++;
		write_step(op);
		return;
	}
	if (ret < 0) {
		op_fail(op, ret, "%s", op->e2);
		return;
	}
	sh_unreach_clear(op->s, cd->addr, cd->port);
	if (op->ci > 0)
		op->s->counters.failovers++;
	if (r->status == OVL_WIRE_OK) {
		write_done(op, r);
		return;
	}
	ret = ovl_wire_status_to_errno(r->status);
	sh_status_text(op->e2, sizeof(op->e2), cd->text, r);
	if (r->status == OVL_WIRE_BUSY)
		op->s->counters.busy++;
	if (r->status == OVL_WIRE_STALE_MAP && op->stale_retries < SH_STALE_RETRIES &&
	    !op_expired(op)) {
		op->stale_retries++;
		op->fresh = true;
		memcpy(&op->s->hint.addr, cd->addr, 16);
		op->s->hint.port = cd->port;
		op->s->has_hint = true;
		write_pass(op);
		return;
	}
	if (r->status == OVL_WIRE_BUSY && op->busy_retries < SHELF_WRITE_BUSY_RETRIES &&
	    op_left_ms(op) > sh_busy_pause_ms(op->busy_retries) + 100) {
		op->wake = ovl_mono_ms() + (uint64_t)sh_busy_pause_ms(op->busy_retries);
		op->busy_retries++;
		op->fresh = true;
		op->state = OPS_PAUSED;
		return;
	}
	op_fail(op, ret, "%s", op->e2);
}

/* A paused op's time came: a new pass (busy: with a fresh map for writes). */
static void op_wake(struct shelf_op *op)
{
	op->state = OPS_STEP;
	if (op->kind == OPK_GET || op->kind == OPK_STAT)
		read_pass(op);
	else
		write_pass(op);
}

/* A queued op starts: its time starts now. */
static void op_activate(struct sh_aio *a, struct shelf_op *op)
{
	dl_push(&a->active, op);
	a->nactive++;
	op->state = OPS_STEP;
	op->deadline = ovl_mono_ms() + (uint64_t)op->s->timeout_ms;
	op->first_pass = true;
	if (op->kind == OPK_GET || op->kind == OPK_STAT)
		read_pass(op);
	else
		write_pass(op);
}

/* The op's time is up while its call is in flight. A node that sent
 * nothing since the call started is taken as gone (its connection fails,
 * every call on it goes to the next replica, as a blocking call's
 * timeout does); otherwise the op gives up on the call alone. */
static void op_timeout(struct shelf_op *op)
{
	struct sh_aconn *c = op->conn;
	char text[300];

	if (!c->connected || !ovl_dpc_ready(c->dpc) || c->last_rx < op->call_start) {
		snprintf(text, sizeof(text), "node %s did not answer within %d ms", c->text,
			 op->s->timeout_ms);
		ovl_dpc_abort(c->dpc, -EHOSTUNREACH, text);
		return;
	}
	/* the call stays the engine's until it completes (call_done frees it) */
	op->call->done_arg = NULL;
	op->call = NULL;
	op->state = OPS_STEP;
	snprintf(text, sizeof(text), "node %s did not answer within %d ms", c->text,
		 op->s->timeout_ms);
	if (op->kind == OPK_GET || op->kind == OPK_STAT) {
		if (!op->probe_call)
			sh_rd_note(&op->rp->fail, SH_RK_UNREACHABLE, -EHOSTUNREACH, text);
		op->probing = false;
		op->ci = op->ncand;
		read_step(op);
		return;
	}
	op_fail(op, -EHOSTUNREACH, "%s", text);
}

/* ---- starting ------------------------------------------------------------- */

static int op_new(struct shelf *s, enum op_kind kind, const char *slice, const void *key,
		  size_t klen, bool internal, shelf_done_fn done, void *arg, struct shelf_op **out)
{
	static const char *const what[] = { "get", "stat", "put", "rm" };
	static const uint8_t type[] = { OVL_WIRE_T_GET, OVL_WIRE_T_STAT, OVL_WIRE_T_PUT,
					OVL_WIRE_T_DELETE };
	struct sh_aio *a = NULL;
	struct shelf_op *op;
	char kshow[SH_KSHOW_BYTES], e[256];

	if (!s || !key || !done)
		return -EINVAL;
	sh_key_show(key, klen, kshow);
	if (sh_key_check(what[kind], slice, kshow, klen, e, sizeof(e)) < 0 ||
	    strlen(slice) >= OVL_WIRE_NAME_SIZE || (!internal && ovl_large_key_reserved(key, klen)))
		return -EINVAL;
	if (aio_get(s, &a) < 0)
		return -ENOMEM;
	op = calloc(1, sizeof(*op));
	if (!op)
		return -ENOMEM;
	op->key = malloc(klen);
	op->rp = kind == OPK_GET || kind == OPK_STAT ? calloc(1, sizeof(*op->rp)) : NULL;
	if (!op->key || ((kind == OPK_GET || kind == OPK_STAT) && !op->rp)) {
		op_free(op);
		return -ENOMEM;
	}
	memcpy(op->key, key, klen);
	op->klen = klen;
	memcpy(op->kshow, kshow, sizeof(kshow));
	op->s = s;
	op->kind = kind;
	op->type = type[kind];
	op->what = what[kind];
	snprintf(op->slice, sizeof(op->slice), "%s", slice);
	op->done = done;
	op->arg = arg;
	op->internal = internal;
	snprintf(op->e2, sizeof(op->e2), "no node answered");
	*out = op;
	return 0;
}

static void op_queue(struct shelf *s, struct shelf_op *op)
{
	struct sh_aio *a = s->aio;

	op->state = OPS_QUEUED;
	op->prev = a->qtail;
	op->next = NULL;
	if (a->qtail)
		a->qtail->next = op;
	else
		a->qhead = op;
	a->qtail = op;
	a->nqueued++;
}

SHELF_API int shelf_get_async(struct shelf *s, const char *slice, const void *key, size_t klen,
			      uint64_t off, uint64_t len, shelf_done_fn done, void *arg)
{
	struct shelf_op *op = NULL;
	int ret = op_new(s, OPK_GET, slice, key, klen, false, done, arg, &op);

	if (ret < 0)
		return ret;
	if (off || len != UINT64_MAX) {
		op->has_range = true;
		op->off = off;
		op->len = len;
	}
	op_queue(s, op);
	return 0;
}

SHELF_API int shelf_stat_async(struct shelf *s, const char *slice, const void *key, size_t klen,
			       shelf_done_fn done, void *arg)
{
	struct shelf_op *op = NULL;
	int ret = op_new(s, OPK_STAT, slice, key, klen, false, done, arg, &op);

	if (ret == 0)
		op_queue(s, op);
	return ret;
}

SHELF_API int shelf_put_async(struct shelf *s, const char *slice, const void *key, size_t klen,
			      const void *data, size_t len, shelf_done_fn done, void *arg)
{
	struct shelf_op *op = NULL;
	int ret;

	if (len > OVL_WIRE_OBJECT_MAX_BYTES || (!data && len))
		return -EINVAL;
	ret = op_new(s, OPK_PUT, slice, key, klen, false, done, arg, &op);
	if (ret < 0)
		return ret;
	op->data = data;
	op->dlen = len;
	op->crc = ovl_crc32c(0, data, len);
	op_queue(s, op);
	return 0;
}

SHELF_API int shelf_delete_async(struct shelf *s, const char *slice, const void *key, size_t klen,
				 shelf_done_fn done, void *arg)
{
	struct shelf_op *op = NULL;
	int ret = op_new(s, OPK_DEL, slice, key, klen, false, done, arg, &op);

	if (ret == 0)
		op_queue(s, op);
	return ret;
}

SHELF_API void shelf_set_max_inflight(struct shelf *s, unsigned n)
{
	struct sh_aio *a = NULL;

	if (aio_get(s, &a) < 0)
		return;
	a->max = n < 1 ? SHELF_MAX_INFLIGHT_DEFAULT : n > SHELF_MAX_INFLIGHT_MAX
						      ? SHELF_MAX_INFLIGHT_MAX : n;
}

SHELF_API unsigned shelf_pending(const struct shelf *s)
{
	return s->aio ? s->aio->nactive + s->aio->nqueued + s->aio->nparked : 0;
}

/* ---- the loop -------------------------------------------------------------- */

/* Start queued ops while fewer than max are active, and handle every
 * completed call; until neither has work. */
static void aio_churn(struct sh_aio *a)
{
	for (;;) {
		bool did = false;

		while (a->qhead && a->nactive < a->max) {
			struct shelf_op *op = a->qhead;

			a->qhead = op->next;
			if (a->qhead)
				a->qhead->prev = NULL;
			else
				a->qtail = NULL;
			a->nqueued--;
			op->prev = op->next = NULL;
			op_activate(a, op);
			did = true;
		}
		while (a->fin_head) {
			struct shelf_op *op = a->fin_head;

			a->fin_head = op->fnext;
			if (!a->fin_head)
				a->fin_tail = NULL;
			op->fnext = NULL;
			if (op->kind == OPK_GET || op->kind == OPK_STAT)
				read_answer(op);
			else
				write_answer(op);
			did = true;
		}
		if (!did)
			return;
	}
}

/* The earliest time something is due: a handshake's end, an op's deadline
 * or wake-up. */
static uint64_t aio_next_due(const struct sh_aio *a)
{
	uint64_t due = UINT64_MAX;

	for (const struct sh_aconn *c = a->conns; c; c = c->next)
		if (!ovl_dpc_ready(c->dpc) && c->hs_deadline < due)
			due = c->hs_deadline;
	for (const struct shelf_op *op = a->active; op; op = op->next) {
		if (op->state == OPS_CALL && op->deadline < due)
			due = op->deadline;
		if (op->state == OPS_PAUSED && op->wake < due)
			due = op->wake;
	}
	return due;
}

static void aio_timers(struct sh_aio *a)
{
	uint64_t now = ovl_mono_ms();

	for (struct sh_aconn *c = a->conns; c; c = c->next) {
		char w[64];

		if (ovl_dpc_ready(c->dpc) || ovl_dpc_failed(c->dpc) || now < c->hs_deadline)
			continue;
		snprintf(w, sizeof(w), "%d ms", c->budget_ms);
		conn_lost(c, c->connected ? "node %s did not answer within %s"
					  : "node %s: did not accept a connection within %s", w);
	}
	/* one due op at a time: handling it may finish (free) it */
	for (;;) {
		struct shelf_op *op;

		for (op = a->active; op; op = op->next)
			if ((op->state == OPS_CALL && now >= op->deadline && op->call &&
			     !op->call->complete) ||
			    (op->state == OPS_PAUSED && now >= op->wake))
				break;
		if (!op)
			return;
		if (op->state == OPS_CALL)
			op_timeout(op);
		else
			op_wake(op);
	}
}

static int aio_poll(struct sh_aio *a, int wait_ms)
{
	unsigned n = 0;
	int ret;

	for (struct sh_aconn *c = a->conns; c; c = c->next)
		n++;
	if (n > a->pcap) {
		struct pollfd *p = realloc(a->pfd, n * sizeof(*p));
		struct sh_aconn **pc = p ? realloc(a->pconn, n * sizeof(*pc)) : NULL;

		if (p)
			a->pfd = p;
		if (!pc)
			return -ENOMEM;
		a->pconn = pc;
		a->pcap = n;
	}
	n = 0;
	for (struct sh_aconn *c = a->conns; c; c = c->next) {
		short ev = POLLIN;

		if (ovl_dpc_failed(c->dpc))
			continue;
		if (!c->connected || ovl_dpc_tx_pending(c->dpc))
			ev |= POLLOUT;
		if (!c->connected)
			ev = POLLOUT;
		a->pfd[n] = (struct pollfd){ c->fd, ev, 0 };
		a->pconn[n++] = c;
	}
	ret = poll(a->pfd, n, wait_ms);
	if (ret < 0)
		return errno == EINTR ? 0 : -errno;
	for (unsigned i = 0; i < n; i++) {
		struct sh_aconn *c = a->pconn[i];
		short re = a->pfd[i].revents;

		if (!re)
			continue;
		if (!c->connected) {
			conn_connected(c);
			if (!c->connected)
				continue;
		}
		if (re & (POLLIN | POLLERR | POLLHUP))
			conn_recv(a, c);
		if (!ovl_dpc_failed(c->dpc) && ovl_dpc_tx_pending(c->dpc))
			conn_send(c);
	}
	return 0;
}

/* shelf_run(), or (once) until at least one operation completed. */
static int aio_run(struct shelf *s, int timeout_ms, bool once)
{
	struct sh_aio *a = NULL;
	uint64_t end = timeout_ms >= 0 ? ovl_mono_ms() + (uint64_t)timeout_ms : UINT64_MAX;
	uint64_t ndone;
	int ret = 0;

	if (aio_get(s, &a) < 0)
		return -ENOMEM;
	ndone = a->ndone;
	if (a->running)
		return -EBUSY;
	if (!a->rx && !(a->rx = malloc(AIO_RX_BYTES)))
		return -ENOMEM;
	a->running = true;
	for (;;) {
		uint64_t now, due;
		int wait;

		aio_churn(a);
		/* the sends the churn queued on ready connections */
		for (struct sh_aconn *c = a->conns; c; c = c->next)
			if (c->connected && !ovl_dpc_failed(c->dpc) && ovl_dpc_tx_pending(c->dpc))
				conn_send(c);
		aio_churn(a);
		conns_reap(a);
		if (!a->nactive && !a->nqueued && !a->nparked)
			break;
		if (once && a->ndone != ndone)
			break;
		now = ovl_mono_ms();
		if (now >= end) {
			ret = -ETIMEDOUT;
			break;
		}
		due = aio_next_due(a);
		if (end < due)
			due = end;
		wait = due == UINT64_MAX ? -1 : due <= now ? 0 : due - now > INT32_MAX
								? INT32_MAX : (int)(due - now);
		ret = aio_poll(a, wait);
		if (ret < 0)
			break;
		aio_churn(a);
		aio_timers(a);
	}
	a->running = false;
	return ret;
}

SHELF_API int shelf_run(struct shelf *s, int timeout_ms)
{
	return aio_run(s, timeout_ms, false);
}

int sh_aio_run_one(struct shelf *s)
{
	return aio_run(s, -1, true);
}

bool sh_aio_running(const struct shelf *s)
{
	return s->aio && s->aio->running;
}

int sh_aio_get_ordered(struct shelf *s, const char *slice, const void *key, size_t klen,
		       struct sh_order *o, uint64_t epoch, shelf_done_fn done, void *arg)
{
	struct shelf_op *op = NULL;
	int ret = op_new(s, OPK_GET, slice, key, klen, false, done, arg, &op);

	if (ret < 0)
		return ret;
	if (o && o->idx) {
		op->pre = *o;
		op->pre_epoch = epoch;
		memset(o, 0, sizeof(*o));
	}
	op_queue(s, op);
	return 0;
}

int sh_aio_get_chunk(struct shelf *s, const char *slice, const void *key, size_t klen,
		     uint64_t off, uint64_t len, shelf_done_fn done, void *arg)
{
	struct shelf_op *op = NULL;
	int ret = op_new(s, OPK_GET, slice, key, klen, true, done, arg, &op);

	if (ret < 0)
		return ret;
	if (off || len != UINT64_MAX) {
		op->has_range = true;
		op->off = off;
		op->len = len;
	}
	op_queue(s, op);
	return 0;
}

int sh_aio_put_chunk(struct shelf *s, const char *slice, const void *key, size_t klen,
		     const void *data, size_t len, shelf_done_fn done, void *arg)
{
	struct shelf_op *op = NULL;
	int ret;

	if (len > OVL_WIRE_OBJECT_MAX_BYTES)
		return -EINVAL;
	ret = op_new(s, OPK_PUT, slice, key, klen, true, done, arg, &op);
	if (ret < 0)
		return ret;
	op->data = data;
	op->dlen = len;
	op->crc = ovl_crc32c(0, data, len);
	op_queue(s, op);
	return 0;
}

void sh_aio_destroy(struct shelf *s)
{
	struct sh_aio *a = s->aio;

	if (!a)
		return;
	/* calls still in flight complete into the fin list as the engines go */
	while (a->conns) {
		struct sh_aconn *c = a->conns;

		a->conns = c->next;
		ovl_dpc_abort(c->dpc, -ECONNABORTED, "the client closed");
		conn_free(c);
	}
	while (a->active) {
		struct shelf_op *op = a->active;

		a->active = op->next;
		op_free(op);
	}
	while (a->qhead) {
		struct shelf_op *op = a->qhead;

		a->qhead = op->next;
		op_free(op);
	}
	while (a->parked) {
		struct shelf_op *op = a->parked;

		a->parked = op->next;
		op_free(op);
	}
	free(a->pfd);
	free(a->pconn);
	free(a->rx);
	free(a);
	s->aio = NULL;
}

void sh_aio_cancel_queued(struct shelf *s, shelf_done_fn done)
{
	struct sh_aio *a = s->aio;
	struct shelf_op *op, *next;

	if (!a)
		return;
	for (op = a->qhead; op; op = next) {
		next = op->next;
		if (op->done != done)
			continue;
		if (op->prev)
			op->prev->next = op->next;
		else
			a->qhead = op->next;
		if (op->next)
			op->next->prev = op->prev;
		else
			a->qtail = op->prev;
		a->nqueued--;
		op_free(op);
	}
}

/* ---- what a callback reads ------------------------------------------------ */

SHELF_API const void *shelf_op_key(const struct shelf_op *op, size_t *klen)
{
	if (klen)
		*klen = op->klen;
	return op->key;
}

SHELF_API const void *shelf_op_data(const struct shelf_op *op, size_t *len)
{
	if (len)
		*len = op->body ? op->blen : 0;
	return op->body;
}

SHELF_API void *shelf_op_take(const struct shelf_op *op, size_t *len)
{
	/* the op is the library's and is freed when the callback returns: the
	 * body changes hands here (hence the cast) */
	struct shelf_op *w = (struct shelf_op *)op;
	void *b = w->body;

	if (len)
		*len = b ? w->blen : 0;
	w->body = NULL;
	w->blen = 0;
	return b;
}

SHELF_API uint64_t shelf_op_total(const struct shelf_op *op)
{
	return op->total;
}

SHELF_API const struct shelf_objstat *shelf_op_stat(const struct shelf_op *op)
{
	return op->res == 0 && (op->kind == OPK_GET || op->kind == OPK_STAT) ? &op->st : NULL;
}

SHELF_API const char *shelf_op_error(const struct shelf_op *op)
{
	return op->res < 0 ? op->err : "";
}
