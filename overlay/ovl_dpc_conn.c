/* The blocking driver of ovl_dpc (see ovl_dpc.h): one TCP socket, one
 * request at a time, the handshake and each request bounded as a whole by
 * the caller's timeout. */
#include "ovl_dpc.h"
#include "ovl_util.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define TX_IOV_MAX 64

struct ovl_dpc_conn {
	int fd;
	int timeout_ms;           /* what SO_RCVTIMEO and SO_SNDTIMEO are set to */
	uint64_t deadline_ms;     /* the handshake's or the call's end (ovl_mono_ms) */
	bool eof;                 /* the node closed the connection */
	struct ovl_dpc *c;
};

/* Every blocking send and receive waits at most timeout_ms. */
static void set_timeout(struct ovl_dpc_conn *cn, int timeout_ms)
{
	struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };

	if (cn->timeout_ms == timeout_ms)
		return;
	setsockopt(cn->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(cn->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	cn->timeout_ms = timeout_ms;
}

/* The next send or receive waits at most until the deadline: 0, or
 * -ETIMEDOUT when it has passed. */
static int arm(struct ovl_dpc_conn *cn)
{
	uint64_t now = ovl_mono_ms();

	if (now >= cn->deadline_ms)
		return -ETIMEDOUT;
	set_timeout(cn, cn->deadline_ms - now > INT32_MAX ? INT32_MAX : (int)(cn->deadline_ms - now));
	return 0;
}

static int tcp_connect(const struct sockaddr_in6 *sa, int timeout_ms)
{
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), one = 1;
	int soerr = 0, ret;
	socklen_t sl = sizeof(soerr);
	struct pollfd p;

	if (fd < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0 && errno != EINPROGRESS) {
		ret = -errno;
		close(fd);
		return ret;
	}
	p = (struct pollfd){ fd, POLLOUT, 0 };
	if (poll(&p, 1, timeout_ms) <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 ||
	    soerr) {
		close(fd);
		return soerr ? -soerr : -ETIMEDOUT;
	}
	fcntl(fd, F_SETFL, 0);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

int ovl_dpc_conn_open(struct ovl_dpc_conn **out, const struct sockaddr_in6 *addr,
		      const struct ovl_dpc_cfg *cfg, int timeout_ms, char *err, size_t errlen)
{
	struct ovl_dpc_conn *cn = calloc(1, sizeof(*cn));
	int ret;

	*out = NULL;
	if (!cn)
		return -ENOMEM;
	cn->fd = -1;
	ret = ovl_dpc_new(&cn->c, cfg, err, errlen);
	if (ret < 0)
		goto out;
	cn->fd = tcp_connect(addr, timeout_ms);
	if (cn->fd < 0) {
		ret = cn->fd;
		cn->fd = -1;
		snprintf(err, errlen, "%s", ret == -ETIMEDOUT ? "did not answer in time" : strerror(-ret));
		goto out;
	}
	set_timeout(cn, timeout_ms);
	*out = cn;
	cn = NULL;
out:
	ovl_dpc_conn_close(&cn);
	return ret;
}

/* A socket error as the caller sees it: a receive or send timeout is -ETIMEDOUT. */
static int sock_err(int e)
{
	return e == EAGAIN || e == EWOULDBLOCK ? -ETIMEDOUT : -e;
}

/* Send everything pending. */
static int flush(struct ovl_dpc_conn *cn)
{
	while (ovl_dpc_tx_pending(cn->c)) {
		struct iovec iov[TX_IOV_MAX];
		struct msghdr mh = { 0 };
		ssize_t r;
		int ret = arm(cn);

		if (ret < 0)
			return ret;
		mh.msg_iov = iov;
		mh.msg_iovlen = (size_t)ovl_dpc_tx_iov(cn->c, iov, TX_IOV_MAX);
		r = sendmsg(cn->fd, &mh, MSG_NOSIGNAL);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			ret = r == 0 ? -ECONNRESET : sock_err(errno);
			ovl_dpc_tx_done(cn->c, 0);
			return ret;
		}
		ovl_dpc_tx_done(cn->c, (size_t)r);
	}
	return 0;
}

/* Receive into the engine until done(arg) or the engine fails. */
static int pump(struct ovl_dpc_conn *cn, bool (*done)(const void *arg), const void *arg)
{
	while (!done(arg) && !ovl_dpc_failed(cn->c)) {
		uint8_t *buf = NULL;
		size_t room = ovl_dpc_rx_space(cn->c, &buf);
		ssize_t r;
		int ret = arm(cn);

		if (ret < 0)
			return ret;
		r = recv(cn->fd, buf, room, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0)
			cn->eof = true;
		if (r <= 0)
			return r == 0 ? -ECONNRESET : sock_err(errno);
		ovl_dpc_rx_done(cn->c, (size_t)r);
	}
	return 0;
}

static bool hs_done(const void *arg)
{
	return ovl_dpc_ready(arg);
}

static bool call_done(const void *arg)
{
	return ((const struct ovl_dpc_call *)arg)->complete;
}

int ovl_dpc_conn_handshake(struct ovl_dpc_conn *cn, int timeout_ms, char *err, size_t errlen)
{
	const char *why;
	int ret;

	cn->deadline_ms = ovl_mono_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
	ret = flush(cn);
	if (ret == 0)
		ret = pump(cn, hs_done, cn->c);
	if (ret < 0) {
		why = cn->eof ? "connection closed by the node during the handshake"
		    : ret == -ETIMEDOUT ? "no answer in time" : strerror(-ret);
		ovl_dpc_abort(cn->c, ret, why);
		snprintf(err, errlen, "%s", why);
		return ret;
	}
	if (ovl_dpc_failed(cn->c)) {
		snprintf(err, errlen, "%s", ovl_dpc_error(cn->c));
		return ovl_dpc_failed(cn->c);
	}
	return 0;
}

int ovl_dpc_conn_call(struct ovl_dpc_conn *cn, struct ovl_dpc_call *call, int timeout_ms)
{
	int ret = ovl_dpc_call_start(cn->c, call, call->err, sizeof(call->err));

	if (ret < 0)
		return ret;
	cn->deadline_ms = ovl_mono_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
	ret = flush(cn);
	if (ret == 0)
		ret = pump(cn, call_done, call);
	if (ret < 0)
		ovl_dpc_abort(cn->c, ret, cn->eof ? "connection closed by the node"
				  : ret == -ETIMEDOUT ? "no answer in time" : strerror(-ret));
	return ret;
}

struct ovl_dpc *ovl_dpc_conn_engine(struct ovl_dpc_conn *cn)
{
	return cn->c;
}

void ovl_dpc_conn_close(struct ovl_dpc_conn **cnp)
{
	struct ovl_dpc_conn *cn = cnp ? *cnp : NULL;

	if (!cn)
		return;
	ovl_dpc_destroy(&cn->c);
	if (cn->fd >= 0)
		close(cn->fd);
	free(cn);
	*cnp = NULL;
}
