#include "peer.h"

#include <errno.h>
#include <liburing.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PEER_OF(ev, member) \
	((struct node_peer *)((char *)(ev) - offsetof(struct node_peer, member)))

struct node_peer {
	struct node_loop *loop;
	struct sockaddr_in6 addr;     /* the connect's address: read by the kernel until it completes */
	int fd;
	struct ovl_dpc *c;
	struct node_loop_ev conn_ev, send_ev, recv_ev;
	bool conn_armed, send_armed, recv_armed;
	bool connected, shut, dying;
	unsigned depth;               /* handlers running: the memory stays */
	struct iovec iov[NODE_PEER_IOV_MAX];
	struct msghdr msg;
	uint8_t *rbuf;                /* NODE_PEER_RECV_BYTES */
};

static void kick(struct node_peer *p);

/* The last submission was reaped and nobody holds p: give it back. */
static void maybe_free(struct node_peer *p)
{
	if (!p->dying || p->conn_armed || p->send_armed || p->recv_armed || p->depth)
		return;
	ovl_dpc_destroy(&p->c);
	if (p->fd >= 0)
		close(p->fd);
	free(p->rbuf);
	free(p);
}

/* No more bytes either way: the armed submissions complete soon. */
static void shut(struct node_peer *p)
{
	if (p->shut)
		return;
	p->shut = true;
	shutdown(p->fd, SHUT_RDWR);
	if (p->conn_armed) {
		struct io_uring_sqe *sqe = node_loop_sqe(p->loop, NULL);

		if (sqe) {
			io_uring_prep_cancel(sqe, &p->conn_ev, 0);
			io_uring_sqe_set_data(sqe, NULL);
		}
	}
}

static void on_connect(struct node_loop_ev *ev, int res, uint32_t flags)
{
	struct node_peer *p = PEER_OF(ev, conn_ev);
	char text[96];

	p->conn_armed = false;
	p->depth++;
	if (!p->dying && res < 0) {
		snprintf(text, sizeof(text), "cannot connect: %s", strerror(-res));
		ovl_dpc_abort(p->c, res, text);
	} else if (!p->dying) {
		p->connected = true;
	}
	p->depth--;
	if (p->dying)
		maybe_free(p);
	else
		kick(p);
}

static void on_send(struct node_loop_ev *ev, int res, uint32_t flags)
{
	struct node_peer *p = PEER_OF(ev, send_ev);

	p->send_armed = false;
	p->depth++;
	/* the lent bytes are the engine's again, whatever happened */
	ovl_dpc_tx_done(p->c, res > 0 ? (size_t)res : 0);
	if (res <= 0 && !p->dying)
		ovl_dpc_abort(p->c, res < 0 ? res : -EPIPE, res < 0 ? strerror(-res) : "send failed");
	p->depth--;
	if (p->dying)
		maybe_free(p);
	else
		kick(p);
}

static void on_recv(struct node_loop_ev *ev, int res, uint32_t flags)
{
	struct node_peer *p = PEER_OF(ev, recv_ev);

	p->recv_armed = false;
	p->depth++;
	if (!p->dying) {
		if (res > 0)
			ovl_dpc_feed(p->c, p->rbuf, (size_t)res); /* done callbacks run here */
		else
			ovl_dpc_abort(p->c, res < 0 ? res : -ECONNRESET,
				      res < 0 ? strerror(-res) : "the node closed the connection");
	}
	p->depth--;
	if (p->dying)
		maybe_free(p);
	else
		kick(p);
}

/* Arm what the connection needs: a send of what is pending, a receive. */
static void kick(struct node_peer *p)
{
	struct io_uring_sqe *sqe;

	if (p->dying || p->depth)
		return;
	if (ovl_dpc_failed(p->c)) {
		shut(p);
		return;
	}
	if (!p->connected)
		return;
	if (!p->send_armed && ovl_dpc_tx_pending(p->c)) {
		int n = ovl_dpc_tx_iov(p->c, p->iov, NODE_PEER_IOV_MAX);

		sqe = node_loop_sqe(p->loop, &p->send_ev);
		if (!sqe) {
			ovl_dpc_tx_done(p->c, 0);
			ovl_dpc_abort(p->c, -EBUSY, "no submission queue entry");
			shut(p);
			return;
		}
		memset(&p->msg, 0, sizeof(p->msg));
		p->msg.msg_iov = p->iov;
		p->msg.msg_iovlen = (size_t)n;
		io_uring_prep_sendmsg(sqe, p->fd, &p->msg, MSG_NOSIGNAL);
		p->send_armed = true;
	}
	if (!p->recv_armed) {
		sqe = node_loop_sqe(p->loop, &p->recv_ev);
		if (!sqe) {
			ovl_dpc_abort(p->c, -EBUSY, "no submission queue entry");
			shut(p);
			return;
		}
		io_uring_prep_recv(sqe, p->fd, p->rbuf, NODE_PEER_RECV_BYTES, 0);
		p->recv_armed = true;
	}
}

int node_peer_new(struct node_peer **out, const struct node_peer_opts *o, char *err,
		  size_t errlen)
{
	struct node_peer *p = calloc(1, sizeof(*p));
	struct io_uring_sqe *sqe;
	int one = 1, ret;

	*out = NULL;
	if (!p)
		return -ENOMEM;
	p->fd = -1;
	p->loop = o->loop;
	p->addr = o->addr;
	p->conn_ev.fn = on_connect;
	p->send_ev.fn = on_send;
	p->recv_ev.fn = on_recv;
	p->rbuf = malloc(NODE_PEER_RECV_BYTES);
	if (!p->rbuf) {
		ret = -ENOMEM;
		goto out;
	}
	ret = ovl_dpc_new(&p->c, &o->dpc, err, errlen);
	if (ret < 0)
		goto out;
	p->fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (p->fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot make a socket: %s", strerror(-ret));
		goto out;
	}
	setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	sqe = node_loop_sqe(p->loop, &p->conn_ev);
	if (!sqe) {
		ret = -EBUSY;
		snprintf(err, errlen, "no submission queue entry for the connect");
		goto out;
	}
	io_uring_prep_connect(sqe, p->fd, (const struct sockaddr *)&p->addr, sizeof(p->addr));
	p->conn_armed = true;
	*out = p;
	p = NULL;
out:
	if (p) {
		p->dying = true;
		maybe_free(p);
	}
	return ret;
}

int node_peer_call(struct node_peer *p, struct ovl_dpc_call *call, char *err, size_t errlen)
{
	int ret = ovl_dpc_call_start(p->c, call, err, errlen);

	if (ret == 0)
		kick(p);
	return ret;
}

uint64_t node_peer_room(const struct node_peer *p, const struct ovl_dpc_call *call)
{
	return p->dying ? 0 : ovl_dpc_call_room(p->c, call);
}

ssize_t node_peer_write(struct node_peer *p, struct ovl_dpc_call *call, const void *buf, size_t len)
{
	ssize_t n;

	if (p->dying)
		return -ECONNABORTED;
	n = ovl_dpc_call_write(p->c, call, buf, len);
	if (n > 0)
		kick(p);
	return n;
}

bool node_peer_ready(const struct node_peer *p)
{
	return ovl_dpc_ready(p->c);
}

int node_peer_failed(const struct node_peer *p)
{
	return ovl_dpc_failed(p->c);
}

const char *node_peer_error(const struct node_peer *p)
{
	return ovl_dpc_error(p->c);
}

unsigned node_peer_inflight(const struct node_peer *p)
{
	return ovl_dpc_inflight(p->c);
}

void node_peer_destroy(struct node_peer **pp)
{
	struct node_peer *p = pp ? *pp : NULL;

	if (!p || p->dying)
		return;
	*pp = NULL;
	p->dying = true;
	/* a send in flight may still read the payloads: their calls complete
	 * when it ends (on_send); the others now */
	ovl_dpc_abort(p->c, -ECONNABORTED, "connection closed");
	if (p->fd >= 0)
		shut(p);
	maybe_free(p);
}
