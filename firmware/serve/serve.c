#include "serve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "overlay.h"

#define CONN_SEND_IOV_MAX 16 /* pieces gathered into one sendmsg */

struct send_item {
	unsigned n, i;
	void (*done)(void *arg, int res);
	void *arg;
	struct send_item *next;
	struct iovec iov[]; /* iov[i..n) is what is left to send */
};

struct node_conn {
	struct node_serve *s;
	int fd;
	struct sockaddr_in6 peer;
	uint8_t *rbuf;             /* unconsumed bytes at the front */
	size_t rlen, rcap;
	struct node_loop_ev recv_ev, send_ev;
	bool recv_armed, send_armed;
	bool recv_ring;            /* the armed recv selects a ring buffer */
	bool feeding;              /* inside on_data */
	bool closing, graceful, shut;
	unsigned holds;            /* callbacks running: not freed under them */
	int close_reason;
	bool in_frame;
	uint64_t last_rx_ms;
	uint64_t last_tx_ms;       /* the send queue last made progress (or became busy) */
	size_t tx_progress;        /* bytes sent since then */
	/* admission: node_conn_admit() ran (authed); else on the server's list
	 * of unauthenticated connections, oldest first */
	bool authed, on_ua;
	uint8_t id[NODE_SERVE_ID_BYTES];
	uint64_t accepted_ms;
	struct node_conn *ua_prev, *ua_next;
	/* the progress window: bytes received since win_start_ms */
	uint64_t win_start_ms, win_bytes;
	bool expired;              /* on_expire ran: the graceful close is bounded */
	uint64_t close_ms;
	struct send_item *sq_head, *sq_tail;
	/* what the armed send sends: the queue's first CONN_SEND_IOV_MAX pieces */
	struct iovec siov[CONN_SEND_IOV_MAX];
	struct msghdr smsg;
	bool paused;               /* the protocol asked to stop receiving */
	void *data;
	struct node_conn *prev, *next;
};

struct listener {
	int fd;
	struct node_loop_ev ev;
	bool armed;
	struct node_serve *s;
};

struct node_serve {
	struct node_serve_opts o;
	struct listener ls[NODE_SERVE_LISTEN_MAX];
	unsigned nls;
	struct node_conn *conns;
	struct node_conn *ua_head, *ua_tail; /* unauthenticated, oldest first */
	unsigned live;             /* open and not closing */
	uint8_t refuse_msg[NODE_SERVE_REFUSE_MSG_MAX];
	size_t refuse_len;
	struct node_serve_stats st;
	bool stopping;             /* node_serve_stop(): no new connections */
	bool destroyed;            /* node_serve_destroy() while busy: the last completion frees */
	/* the provided-buffer ring (br NULL: not in use) */
	struct io_uring_buf_ring *br;
	size_t br_map_bytes;
	uint8_t *bufs;             /* nbufs buffers of buf_bytes */
	size_t bufs_map_bytes;
	unsigned nbufs;
	size_t buf_bytes;
	int bgid;
	unsigned ring_armed;       /* recvs that may pick a ring buffer */
	bool ring_dirty;           /* buffers hold pages since the last give-back */
	uint64_t ring_used_ms;
};

/* buffers unused this long while no recv can pick one: pages go back */
#define SERVE_RING_IDLE_MS 1000

static uint64_t now_ms(void)
{
	return ovl_mono_ms();
}

#define CONTAINER(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

static void conn_recv_done(struct node_loop_ev *ev, int res, uint32_t flags);
static void conn_send_done(struct node_loop_ev *ev, int res, uint32_t flags);
static void conn_maybe_free(struct node_conn *c);
static void serve_maybe_free(struct node_serve *s);

/* Off the list of unauthenticated connections (admitted or closing). */
static void ua_unlink(struct node_conn *c)
{
	struct node_serve *s = c->s;

	if (!c->on_ua)
		return;
	if (c->ua_prev)
		c->ua_prev->ua_next = c->ua_next;
	else
		s->ua_head = c->ua_next;
	if (c->ua_next)
		c->ua_next->ua_prev = c->ua_prev;
	else
		s->ua_tail = c->ua_prev;
	c->ua_prev = c->ua_next = NULL;
	c->on_ua = false;
	s->st.unauth--;
}

static void conn_begin_close(struct node_conn *c, int reason, bool graceful)
{
	if (c->closing && !(c->graceful && !graceful))
		return;
	if (!c->closing) {
		c->close_reason = reason;
		ua_unlink(c);
		c->s->live--;
	}
	c->closing = true;
	c->graceful = graceful && c->sq_head;
	if (!c->graceful && !c->shut) {
		/* wakes the armed recv (and send) with an error or end of file */
		shutdown(c->fd, SHUT_RDWR);
		c->shut = true;
	}
	conn_maybe_free(c);
}

/* Free once no request refers to the connection any more. */
static void conn_maybe_free(struct node_conn *c)
{
	struct node_serve *s = c->s;
	struct send_item *it;

	if (!c->closing || c->graceful || c->recv_armed || c->send_armed || c->holds)
		return;
	while ((it = c->sq_head)) {
		c->sq_head = it->next;
		if (it->done)
			it->done(it->arg, -EPIPE);
		free(it);
	}
	if (s->o.proto->on_close)
		s->o.proto->on_close(s->o.proto_arg, c, c->close_reason);
	close(c->fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->st.conn_buf_bytes -= c->rcap;
	free(c->rbuf);
	free(c);
	s->st.closed++;
	s->st.open--;
	serve_maybe_free(s);
}

/* The connection's own buffer holds at least `need` bytes (never more
 * than the cap allows). 0 or -ENOMEM. */
static int conn_rbuf_alloc(struct node_conn *c, size_t need)
{
	struct node_serve *s = c->s;
	size_t cap = NODE_SERVE_RECV_CHUNK_BYTES < s->o.max_conn_buf_bytes
			     ? NODE_SERVE_RECV_CHUNK_BYTES : s->o.max_conn_buf_bytes;

	if (c->rbuf)
		return 0;
	if (cap < need)
		cap = need;
	c->rbuf = malloc(cap);
	if (!c->rbuf)
		return -ENOMEM;
	c->rcap = cap;
	s->st.conn_buf_bytes += cap;
	return 0;
}

/* An empty own buffer goes back while the ring can take the next bytes. */
static void conn_rbuf_release(struct node_conn *c)
{
	if (c->rlen || !c->rbuf || !c->s->br)
		return;
	c->s->st.conn_buf_bytes -= c->rcap;
	free(c->rbuf);
	c->rbuf = NULL;
	c->rcap = 0;
}

/* Give ring buffer `bid` back to the kernel. */
static void ring_recycle(struct node_serve *s, unsigned bid)
{
	io_uring_buf_ring_add(s->br, s->bufs + (size_t)bid * s->buf_bytes, (unsigned)s->buf_bytes,
			      (unsigned short)bid, io_uring_buf_ring_mask(s->nbufs), 0);
	io_uring_buf_ring_advance(s->br, 1);
}

/* Receive: into a ring buffer when nothing is buffered (and `own` is not
 * asked for), else into the connection's own buffer after what it holds. */
static void conn_arm_recv_how(struct node_conn *c, bool own)
{
	struct node_serve *s = c->s;
	struct io_uring_sqe *sqe;
	bool ring = s->br && !own && c->rlen == 0;

	if (c->recv_armed || c->closing)
		return;
	if (!ring && conn_rbuf_alloc(c, 0) < 0) {
		conn_begin_close(c, -ENOMEM, false);
		return;
	}
	sqe = node_loop_sqe(s->o.loop, &c->recv_ev);
	if (!sqe) {
		conn_begin_close(c, -EBUSY, false);
		return;
	}
	if (ring) {
		io_uring_prep_recv(sqe, c->fd, NULL, (unsigned)s->buf_bytes, 0);
		sqe->flags |= IOSQE_BUFFER_SELECT;
		sqe->buf_group = (unsigned short)s->bgid;
		s->ring_armed++;
	} else {
		io_uring_prep_recv(sqe, c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
	}
	c->recv_ring = ring;
	c->recv_armed = true;
}

static void conn_arm_recv(struct node_conn *c)
{
	conn_arm_recv_how(c, false);
}

static void conn_arm_send(struct node_conn *c)
{
	struct io_uring_sqe *sqe;
	unsigned n = 0;

	if (c->send_armed || !c->sq_head || c->shut)
		return;
	/* everything queued goes out in one sendmsg: replies to pipelined
	 * requests share a system call, a header travels with its payload */
	for (struct send_item *it = c->sq_head; it && n < CONN_SEND_IOV_MAX; it = it->next)
		for (unsigned i = it->i; i < it->n && n < CONN_SEND_IOV_MAX; i++)
			c->siov[n++] = it->iov[i];
	sqe = node_loop_sqe(c->s->o.loop, &c->send_ev);
	if (!sqe) {
		conn_begin_close(c, -EBUSY, false);
		return;
	}
	if (n == 1) {
		io_uring_prep_send(sqe, c->fd, c->siov[0].iov_base, c->siov[0].iov_len, MSG_NOSIGNAL);
	} else {
		memset(&c->smsg, 0, sizeof(c->smsg));
		c->smsg.msg_iov = c->siov;
		c->smsg.msg_iovlen = n;
		io_uring_prep_sendmsg(sqe, c->fd, &c->smsg, MSG_NOSIGNAL);
	}
	c->send_armed = true;
}

/* Hand `len` bytes to the protocol until it stops consuming them, pauses
 * or the connection closes; how many it consumed. The caller holds c. */
static size_t conn_feed(struct node_conn *c, const uint8_t *buf, size_t len, uint64_t now)
{
	struct node_serve *s = c->s;
	size_t off = 0;

	c->feeding = true;
	while (off < len && !c->paused && !c->closing) {
		bool was = c->in_frame, in_frame = false;
		ssize_t used = s->o.proto->on_data(s->o.proto_arg, c, buf + off, len - off, &in_frame);

		if (used < 0) {
			conn_begin_close(c, (int)used, true);
			break;
		}
		if ((size_t)used > len - off)
			used = (ssize_t)(len - off);
		off += (size_t)used;
		c->in_frame = in_frame || off < len;
		/* a frame starts: its first progress window starts with it */
		if (c->in_frame && !was) {
			c->win_start_ms = now;
			c->win_bytes = len - off + (size_t)used;
		}
		if (used == 0)
			break;
	}
	c->feeding = false;
	return off;
}

/* After the protocol had its bytes: free, wait (paused) or receive more
 * (growing the own buffer when a frame needs more than it holds). */
static void conn_next(struct node_conn *c)
{
	struct node_serve *s = c->s;

	if (c->closing) {
		conn_maybe_free(c);
		return;
	}
	if (c->paused)
		return;
	conn_rbuf_release(c);
	if (c->rbuf && c->rlen == c->rcap) {
		/* the protocol needs more than is buffered: grow, up to the cap */
		size_t cap = c->rcap * 2 > s->o.max_conn_buf_bytes ? s->o.max_conn_buf_bytes : c->rcap * 2;
		uint8_t *n;

		if (cap <= c->rcap) {
			s->st.overflowed++;
			conn_begin_close(c, -EMSGSIZE, false);
			return;
		}
		n = realloc(c->rbuf, cap);
		if (!n) {
			conn_begin_close(c, -ENOMEM, false);
			return;
		}
		s->st.conn_buf_bytes += cap - c->rcap;
		c->rbuf = n;
		c->rcap = cap;
	}
	conn_arm_recv(c);
}

/* Hand the own buffer's bytes to the protocol, then go on. */
static void conn_process(struct node_conn *c, uint64_t now)
{
	size_t used;

	c->holds++;
	used = c->rlen ? conn_feed(c, c->rbuf, c->rlen, now) : 0;
	if (used) {
		memmove(c->rbuf, c->rbuf + used, c->rlen - used);
		c->rlen -= used;
	}
	c->holds--;
	conn_next(c);
}

/* Bytes that arrived in a ring buffer: the protocol reads them in place;
 * what it leaves (a partial frame, or bytes it paused before) is copied
 * into the connection's own buffer, and the ring buffer goes back. */
static void conn_ring_data(struct node_conn *c, unsigned bid, size_t len, uint64_t now)
{
	struct node_serve *s = c->s;
	const uint8_t *buf = s->bufs + (size_t)bid * s->buf_bytes;
	size_t used, left;

	c->holds++;
	if (c->rlen) {
		/* bytes are already waiting (not armed that way; be safe): append */
		if (c->rcap - c->rlen < len) {
			size_t cap = c->rlen + len;
			uint8_t *n;

			if (cap > s->o.max_conn_buf_bytes) {
				s->st.overflowed++;
				conn_begin_close(c, -EMSGSIZE, false);
				goto out;
			}
			n = realloc(c->rbuf, cap);
			if (!n) {
				conn_begin_close(c, -ENOMEM, false);
				goto out;
			}
			s->st.conn_buf_bytes += cap - c->rcap;
			c->rbuf = n;
			c->rcap = cap;
		}
		memcpy(c->rbuf + c->rlen, buf, len);
		c->rlen += len;
		ring_recycle(s, bid);
		c->holds--;
		conn_process(c, now);
		return;
	}
	used = conn_feed(c, buf, len, now);
	left = len - used;
	if (left && !c->closing) {
		/* fits: a ring buffer is never larger than the cap */
		if (conn_rbuf_alloc(c, left) < 0) {
			conn_begin_close(c, -ENOMEM, false);
			goto out;
		}
		memcpy(c->rbuf, buf + used, left);
		c->rlen = left;
	}
out:
	ring_recycle(s, bid);
	c->holds--;
	conn_next(c);
}

static void conn_recv_done(struct node_loop_ev *ev, int res, uint32_t flags)
{
	struct node_conn *c = CONTAINER(ev, struct node_conn, recv_ev);
	uint64_t now = now_ms();
	struct node_serve *s = c->s;
	bool ring = c->recv_ring;
	bool has_buf = ring && (flags & IORING_CQE_F_BUFFER);
	unsigned bid = has_buf ? flags >> IORING_CQE_BUFFER_SHIFT : 0;

	c->recv_armed = false;
	c->recv_ring = false;
	if (ring)
		s->ring_armed--;
	if (has_buf && (bid >= s->nbufs || res <= 0 || (size_t)res > s->buf_bytes)) {
		if (bid < s->nbufs)
			ring_recycle(s, bid);
		if (res > 0)
			res = -EIO; /* not a buffer of ours: cannot happen */
		has_buf = false;
	}
	if (c->closing) {
		if (has_buf)
			ring_recycle(s, bid);
		conn_maybe_free(c);
		return;
	}
	if (ring && res == -ENOBUFS) {
		/* every ring buffer is in use: this once, into an own buffer */
		s->st.recv_nobufs++;
		if (!c->paused)
			conn_arm_recv_how(c, true);
		return;
	}
	if (res <= 0) {
		conn_begin_close(c, res == 0 ? 0 : res, false);
		return;
	}
	c->last_rx_ms = now;
	/* the minimum progress made: the next interval starts now, so a stall
	 * is cut one interval after the last progress, not up to two */
	c->win_bytes += (uint64_t)res;
	if (c->win_bytes >= s->o.progress_min_bytes) {
		c->win_start_ms = now;
		c->win_bytes = 0;
	}
	if (has_buf) {
		s->st.recv_ring++;
		s->ring_dirty = true;
		s->ring_used_ms = now;
		conn_ring_data(c, bid, (size_t)res, now);
		return;
	}
	if (ring) {
		conn_begin_close(c, -EIO, false); /* data without a buffer: cannot happen */
		return;
	}
	s->st.recv_own++;
	c->rlen += (size_t)res;
	conn_process(c, now);
}

static void conn_send_done(struct node_loop_ev *ev, int res, uint32_t flags)
{
	struct node_conn *c = CONTAINER(ev, struct node_conn, send_ev);
	size_t left = res > 0 ? (size_t)res : 0;

	c->send_armed = false;
	if (c->closing && !c->graceful) {
		/* woken by the shutdown: the connection goes now (a paused one has
		 * no receive armed whose completion would free it) */
		conn_maybe_free(c);
		return;
	}
	if (res <= 0 || !c->sq_head) {
		conn_begin_close(c, res < 0 ? res : -EPIPE, false);
		return;
	}
	c->tx_progress += left;
	c->holds++;
	while (c->sq_head) {
		struct send_item *it = c->sq_head;

		while (left && it->i < it->n) {
			struct iovec *v = &it->iov[it->i];
			size_t k = left < v->iov_len ? left : v->iov_len;

			v->iov_base = (uint8_t *)v->iov_base + k;
			v->iov_len -= k;
			left -= k;
			if (v->iov_len == 0)
				it->i++;
		}
		if (it->i < it->n)
			break;
		c->sq_head = it->next;
		if (!c->sq_head)
			c->sq_tail = NULL;
		c->tx_progress = NODE_SERVE_SEND_PROGRESS_BYTES; /* a reply went out */
		if (it->done)
			it->done(it->arg, 0);
		free(it);
	}
	/* progress: a reply finished, or NODE_SERVE_SEND_PROGRESS_BYTES went
	 * out (a peer that takes a few bytes now and then does not count) */
	if (c->tx_progress >= NODE_SERVE_SEND_PROGRESS_BYTES) {
		c->last_tx_ms = now_ms();
		c->tx_progress = 0;
	}
	c->holds--;
	if (c->sq_head) {
		conn_arm_send(c);
		return;
	}
	if (c->closing && c->graceful) {
		c->graceful = false;
		shutdown(c->fd, SHUT_RDWR);
		c->shut = true;
	}
	conn_maybe_free(c);
}

int node_conn_sendv(struct node_conn *c, const struct iovec *iov, unsigned n,
		    void (*done)(void *arg, int res), void *arg)
{
	struct send_item *it;

	if (n > NODE_CONN_IOV_MAX)
		return -EINVAL;
	if (c->closing && !c->graceful)
		return -EPIPE;
	it = calloc(1, sizeof(*it) + n * sizeof(it->iov[0]));
	if (!it)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++)
		if (iov[i].iov_len)
			it->iov[it->n++] = iov[i];
	it->done = done;
	it->arg = arg;
	if (!c->sq_head) {
		c->last_tx_ms = now_ms(); /* the send timer runs from here */
		c->tx_progress = 0;
	}
	if (c->sq_tail)
		c->sq_tail->next = it;
	else
		c->sq_head = it;
	c->sq_tail = it;
	if (it->n == 0 && it == c->sq_head) {
		/* nothing to send and nothing before it: done at once */
		c->sq_head = c->sq_tail = NULL;
		if (done)
			done(arg, 0);
		free(it);
		return 0;
	}
	conn_arm_send(c);
	return 0;
}

int node_conn_send(struct node_conn *c, const void *buf, size_t len,
		   void (*done)(void *arg, int res), void *arg)
{
	struct iovec v = { .iov_base = (void *)buf, .iov_len = len };

	return node_conn_sendv(c, &v, 1, done, arg);
}

void node_conn_pause(struct node_conn *c)
{
	c->paused = true;
}

void node_conn_frame_done(struct node_conn *c)
{
	c->in_frame = c->rlen > 0;
	c->last_rx_ms = now_ms();
	c->win_start_ms = c->last_rx_ms;
	c->win_bytes = c->rlen;
}

int node_conn_admit(struct node_conn *c, const uint8_t id[NODE_SERVE_ID_BYTES])
{
	struct node_serve *s = c->s;
	unsigned n = 0;

	if (c->authed)
		return 0;
	if (s->o.max_per_id) {
		for (struct node_conn *o = s->conns; o; o = o->next)
			if (o->authed && !o->closing && memcmp(o->id, id, NODE_SERVE_ID_BYTES) == 0)
				n++;
		if (n >= s->o.max_per_id) {
			s->st.refused_id++;
			return -EBUSY;
		}
	}
	memcpy(c->id, id, NODE_SERVE_ID_BYTES);
	c->authed = true;
	ua_unlink(c);
	return 0;
}

/* The server closes c for a reason the peer should hear of: the protocol
 * may queue a last message, which goes out first (NODE_SERVE_LINGER_MS at
 * most). */
static void conn_expire(struct node_conn *c, int why, int reason)
{
	struct node_serve *s = c->s;

	c->holds++;
	if (s->o.proto->on_expire)
		s->o.proto->on_expire(s->o.proto_arg, c, why);
	c->holds--;
	c->expired = true;
	c->close_ms = now_ms();
	conn_begin_close(c, reason, true);
}

/* Refuse a connection that was never opened: the protocol's refusal (a
 * fresh socket's buffer always takes it), then the close. */
static void refuse_fd(struct node_serve *s, int fd)
{
	uint8_t junk[1024];

	s->st.refused_busy++;
	if (s->refuse_len)
		(void)send(fd, s->refuse_msg, s->refuse_len, MSG_DONTWAIT | MSG_NOSIGNAL);
	/* what the peer sent already is read, so that the close is a FIN, not
	 * a reset that may discard the refusal before the peer reads it */
	for (int i = 0; i < 16 && recv(fd, junk, sizeof(junk), MSG_DONTWAIT) > 0; i++)
		;
	close(fd);
}

/* Unauthenticated connections from the same address as `peer`. */
static unsigned ua_from(const struct node_serve *s, const struct sockaddr_in6 *peer)
{
	unsigned n = 0;

	for (const struct node_conn *c = s->ua_head; c; c = c->ua_next)
		if (memcmp(&c->peer.sin6_addr, &peer->sin6_addr, sizeof(peer->sin6_addr)) == 0)
			n++;
	return n;
}

void node_conn_resume(struct node_conn *c)
{
	if (!c->paused)
		return;
	c->paused = false;
	/* inside on_data the feeding loop goes on by itself */
	if (c->closing || c->recv_armed || c->feeding)
		return;
	conn_process(c, now_ms());
}

void node_conn_close(struct node_conn *c, bool graceful)
{
	conn_begin_close(c, 0, graceful);
}

void node_conn_set_data(struct node_conn *c, void *data)
{
	c->data = data;
}

void *node_conn_data(const struct node_conn *c)
{
	return c->data;
}

const struct sockaddr_in6 *node_conn_peer(const struct node_conn *c)
{
	return &c->peer;
}

static void accept_done(struct node_loop_ev *ev, int res, uint32_t flags)
{
	struct listener *l = CONTAINER(ev, struct listener, ev);
	struct node_serve *s = l->s;
	struct node_conn *c = NULL;
	struct sockaddr_in6 peer;
	socklen_t len;

	if (!(flags & IORING_CQE_F_MORE)) {
		l->armed = false;
		if (!s->stopping && !s->destroyed && res != -ECANCELED) {
			/* the multishot ended: on an error (EMFILE), or with a
			 * connection when the completion queue overflowed (a burst of
			 * accepts): re-arm, or the listener goes deaf */
			struct io_uring_sqe *sqe = node_loop_sqe(s->o.loop, &l->ev);

			if (sqe) {
				io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL, SOCK_CLOEXEC);
				l->armed = true;
			}
		}
	}
	if (res < 0) {
		serve_maybe_free(s);
		return;
	}
	len = sizeof(peer);
	memset(&peer, 0, sizeof(peer));
	getpeername(res, (struct sockaddr *)&peer, &len);
	/* closing connections linger NODE_SERVE_LINGER_MS at most; beyond
	 * twice the table, refuse rather than let them pile up */
	if (s->stopping || s->st.open >= 2 * s->o.max_conns) {
		refuse_fd(s, res);
		serve_maybe_free(s);
		return;
	}
	if (ua_from(s, &peer) >= s->o.max_unauth_per_addr) {
		s->st.refused_addr++;
		refuse_fd(s, res);
		return;
	}
	if (s->live >= s->o.max_conns || s->st.unauth >= s->o.max_unauth) {
		if (!s->ua_head) {
			/* every slot holds an authenticated client */
			refuse_fd(s, res);
			return;
		}
		s->st.evicted++;
		conn_expire(s->ua_head, NODE_SERVE_EXPIRE_EVICTED, -EBUSY);
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		refuse_fd(s, res);
		return;
	}
	c->s = s;
	c->fd = res;
	c->recv_ev.fn = conn_recv_done;
	c->send_ev.fn = conn_send_done;
	c->last_rx_ms = c->accepted_ms = c->win_start_ms = now_ms();
	c->peer = peer;
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	c->ua_prev = s->ua_tail;
	if (s->ua_tail)
		s->ua_tail->ua_next = c;
	else
		s->ua_head = c;
	s->ua_tail = c;
	c->on_ua = true;
	s->st.unauth++;
	s->live++;
	s->st.open++;
	s->st.accepted++;
	if (s->o.proto->on_open && s->o.proto->on_open(s->o.proto_arg, c) != 0) {
		conn_begin_close(c, -EPERM, false);
		return;
	}
	conn_arm_recv(c);
}

#define SERVE_BGID_TRIES 64 /* buffer group ids tried on a shared loop */

/* Set up the shared ring of receive buffers; where the kernel cannot (too
 * old, or no memory for it) connections use buffers of their own. */
static void ring_setup(struct node_serve *s)
{
	struct io_uring *ring = node_loop_ring(s->o.loop);
	size_t map = (size_t)s->nbufs * sizeof(struct io_uring_buf);
	long page = sysconf(_SC_PAGESIZE);
	void *mem;
	int ret = -EEXIST;

	if (page <= 0)
		page = 4096;
	map = (map + (size_t)page - 1) / (size_t)page * (size_t)page;
	mem = mmap(NULL, map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return;
	s->bufs_map_bytes = (size_t)s->nbufs * s->buf_bytes;
	s->bufs = mmap(NULL, s->bufs_map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	if (s->bufs == MAP_FAILED) {
		s->bufs = NULL;
		munmap(mem, map);
		return;
	}
	/* another server on the same loop may hold a group id already */
	for (int id = 0; id < SERVE_BGID_TRIES && ret == -EEXIST; id++) {
		struct io_uring_buf_reg reg;

		memset(&reg, 0, sizeof(reg));
		reg.ring_addr = (uintptr_t)mem;
		reg.ring_entries = s->nbufs;
		reg.bgid = (unsigned short)id;
		ret = io_uring_register_buf_ring(ring, &reg, 0);
		if (ret == 0)
			s->bgid = id;
	}
	if (ret < 0) {
		munmap(s->bufs, s->bufs_map_bytes);
		s->bufs = NULL;
		munmap(mem, map);
		return;
	}
	s->br = mem;
	s->br_map_bytes = map;
	io_uring_buf_ring_init(s->br);
	for (unsigned i = 0; i < s->nbufs; i++)
		io_uring_buf_ring_add(s->br, s->bufs + (size_t)i * s->buf_bytes, (unsigned)s->buf_bytes,
				      (unsigned short)i, io_uring_buf_ring_mask(s->nbufs), (int)i);
	io_uring_buf_ring_advance(s->br, (int)s->nbufs);
	s->st.ring_bufs = s->nbufs;
}

int node_serve_new(struct node_serve **out, const struct node_serve_opts *o, char *err,
		   size_t errlen)
{
	struct node_serve *s = NULL;
	unsigned nbufs = o->recv_bufs ? o->recv_bufs : NODE_SERVE_RECV_BUFS;
	size_t bsize = o->recv_buf_bytes ? o->recv_buf_bytes : NODE_SERVE_RECV_CHUNK_BYTES;

	*out = NULL;
	if (!o->loop || !o->proto || !o->proto->on_data || !o->max_conns ||
	    o->max_conn_buf_bytes < 64 || !o->idle_timeout_ms || !o->handshake_timeout_ms ||
	    !o->progress_interval_ms || !o->progress_min_bytes) {
		snprintf(err, errlen, "serve: loop, protocol, connection limit, buffer cap, timeouts "
			 "and minimum progress are required");
		return -EINVAL;
	}
	if (!o->max_unauth || o->max_unauth > o->max_conns || !o->max_unauth_per_addr ||
	    o->max_unauth_per_addr > o->max_unauth) {
		snprintf(err, errlen, "serve: %u unauthenticated connections (%u per address) with "
			 "%u connections: 1 <= per address <= unauthenticated <= connections is "
			 "required", o->max_unauth, o->max_unauth_per_addr, o->max_conns);
		return -EINVAL;
	}
	if (o->refuse_msg_len > NODE_SERVE_REFUSE_MSG_MAX || (o->refuse_msg_len && !o->refuse_msg)) {
		snprintf(err, errlen, "serve: a refusal message of %zu bytes (at most %u)",
			 o->refuse_msg_len, NODE_SERVE_REFUSE_MSG_MAX);
		return -EINVAL;
	}
	if (nbufs > NODE_SERVE_RECV_BUFS_MAX || (nbufs & (nbufs - 1))) {
		snprintf(err, errlen, "serve: %u receive buffers: a power of two up to %u is required",
			 nbufs, NODE_SERVE_RECV_BUFS_MAX);
		return -EINVAL;
	}
	if (bsize < 64 || bsize > NODE_SERVE_RECV_BUF_BYTES_MAX) {
		snprintf(err, errlen, "serve: receive buffers of %zu bytes: 64 to %u are allowed", bsize,
			 NODE_SERVE_RECV_BUF_BYTES_MAX);
		return -EINVAL;
	}
	if ((uint64_t)nbufs * bsize > NODE_SERVE_RECV_RING_BYTES_MAX) {
		snprintf(err, errlen, "serve: %u receive buffers of %zu bytes exceed %u bytes", nbufs,
			 bsize, NODE_SERVE_RECV_RING_BYTES_MAX);
		return -EINVAL;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->o = *o;
	s->o.refuse_msg = NULL;
	if (o->refuse_msg_len)
		memcpy(s->refuse_msg, o->refuse_msg, o->refuse_msg_len);
	s->refuse_len = o->refuse_msg_len;
	if (!s->o.send_timeout_ms)
		s->o.send_timeout_ms = o->idle_timeout_ms;
	/* what arrives in one buffer and is left over must fit the cap */
	s->nbufs = nbufs;
	s->buf_bytes = bsize < o->max_conn_buf_bytes ? bsize : o->max_conn_buf_bytes;
	ring_setup(s);
	*out = s;
	return 0;
}

int node_serve_listen(struct node_serve *s, struct sockaddr_in6 *addr, char *err, size_t errlen)
{
	struct listener *l;
	struct io_uring_sqe *sqe;
	socklen_t len = sizeof(*addr);
	char text[INET6_ADDRSTRLEN] = "?";
	int fd, one = 1, ret;

	if (s->nls == NODE_SERVE_LISTEN_MAX) {
		snprintf(err, errlen, "serve: already listening on %d addresses", NODE_SERVE_LISTEN_MAX);
		return -ENOSPC;
	}
	inet_ntop(AF_INET6, &addr->sin6_addr, text, sizeof(text));
	fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot create a socket: %s", strerror(errno));
		return ret;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)addr, sizeof(*addr)) < 0 || listen(fd, 1024) < 0 ||
	    getsockname(fd, (struct sockaddr *)addr, &len) < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot listen on [%s]:%u: %s", text, ntohs(addr->sin6_port),
			 strerror(errno));
		close(fd);
		return ret;
	}
	l = &s->ls[s->nls];
	l->fd = fd;
	l->s = s;
	l->ev.fn = accept_done;
	sqe = node_loop_sqe(s->o.loop, &l->ev);
	if (!sqe) {
		close(fd);
		snprintf(err, errlen, "cannot queue accept on [%s]:%u", text, ntohs(addr->sin6_port));
		return -EBUSY;
	}
	io_uring_prep_multishot_accept(sqe, fd, NULL, NULL, SOCK_CLOEXEC);
	l->armed = true;
	s->nls++;
	return 0;
}

/* The peer stopped reading: what it held goes with it, the kernel's send
 * buffer too (a reset, not a FIN that would wait behind the bytes it does
 * not read). */
static void conn_reset(struct node_conn *c)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	conn_begin_close(c, -ETIMEDOUT, false);
}

int node_serve_reset_stalled(struct node_serve *s, uint64_t now, uint64_t min_stall_ms)
{
	struct node_conn *c, *worst = NULL;

	for (c = s->conns; c; c = c->next) {
		if (c->closing || !c->sq_head || now - c->last_tx_ms < min_stall_ms)
			continue;
		if (!worst || c->last_tx_ms < worst->last_tx_ms)
			worst = c;
	}
	if (!worst)
		return 0;
	s->st.reset_stalled++;
	conn_reset(worst);
	return 1;
}

void node_serve_tick(struct node_serve *s, uint64_t now)
{
	struct node_conn *c = s->conns, *next;

	if (s->ring_dirty && !s->ring_armed && now - s->ring_used_ms > SERVE_RING_IDLE_MS) {
		/* nothing can write into the buffers now: give their pages back
		 * (the kernel faults fresh ones in when they are used again) */
		if (madvise(s->bufs, s->bufs_map_bytes, MADV_DONTNEED) == 0)
			s->ring_dirty = false;
	}

	for (; c; c = next) {
		next = c->next;
		if (c->closing) {
			/* a last message that does not leave in time is dropped */
			if (c->expired && c->graceful && now - c->close_ms > NODE_SERVE_LINGER_MS)
				conn_begin_close(c, c->close_reason, false);
			continue;
		}
		if (c->sq_head && now - c->last_tx_ms > s->o.send_timeout_ms) {
			s->st.timed_out_send++;
			conn_reset(c);
			continue;
		}
		if (!c->authed && now - c->accepted_ms > s->o.handshake_timeout_ms) {
			s->st.timed_out_handshake++;
			conn_expire(c, NODE_SERVE_EXPIRE_HANDSHAKE, -ETIMEDOUT);
			continue;
		}
		if (!c->in_frame || c->paused) {
			/* no frame, or the node's own wait (for PUT budget, or for its
			 * answers to drain: the send timeout watches those): no
			 * window runs */
			c->win_start_ms = now;
			c->win_bytes = 0;
		} else if (now - c->win_start_ms >= s->o.progress_interval_ms) {
			if (c->win_bytes < s->o.progress_min_bytes) {
				s->st.timed_out_slow++;
				conn_expire(c, NODE_SERVE_EXPIRE_STALLED, -ETIMEDOUT);
				continue;
			}
			c->win_start_ms = now;
			c->win_bytes = 0;
		}
		if (!c->in_frame && !c->sq_head && now - c->last_rx_ms > s->o.idle_timeout_ms) {
			s->st.timed_out_idle++;
			conn_begin_close(c, -ETIMEDOUT, false);
		}
	}
}

void node_serve_stats(const struct node_serve *s, struct node_serve_stats *st)
{
	*st = s->st;
}

void node_serve_stop(struct node_serve *s)
{
	if (s->stopping)
		return;
	s->stopping = true;
	for (unsigned i = 0; i < s->nls; i++) {
		struct io_uring_sqe *sqe = s->ls[i].armed ? node_loop_sqe(s->o.loop, NULL) : NULL;

		if (sqe) {
			io_uring_prep_cancel(sqe, &s->ls[i].ev, 0);
			io_uring_sqe_set_data(sqe, NULL);
		}
	}
	for (struct node_conn *c = s->conns, *n; c; c = n) {
		n = c->next;
		conn_begin_close(c, -ESHUTDOWN, false);
	}
}

/* Accepts or connections still wait for a completion. */
static bool serve_busy(const struct node_serve *s)
{
	bool busy = s->conns != NULL;

	for (unsigned i = 0; i < s->nls; i++)
		busy |= s->ls[i].armed;
	return busy;
}

static void serve_free(struct node_serve *s)
{
	for (unsigned i = 0; i < s->nls; i++)
		close(s->ls[i].fd);
	if (s->br) {
		io_uring_unregister_buf_ring(node_loop_ring(s->o.loop), s->bgid);
		munmap(s->br, s->br_map_bytes);
		munmap(s->bufs, s->bufs_map_bytes);
	}
	free(s);
}

/* After a completion: a destroyed server goes with its last one. */
static void serve_maybe_free(struct node_serve *s)
{
	if (s->destroyed && !serve_busy(s))
		serve_free(s);
}

void node_serve_destroy(struct node_serve **sp)
{
	struct node_serve *s = sp ? *sp : NULL;

	if (!s)
		return;
	*sp = NULL;
	node_serve_stop(s);
	if (serve_busy(s)) {
		/* the owner did not drain the loop: the cancelled accepts and the
		 * woken receives and sends still complete into s */
		s->destroyed = true;
		return;
	}
	serve_free(s);
}
