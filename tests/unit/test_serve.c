/*
 * node_serve: connection limits on a real io_uring and real sockets, with a
 * line protocol standing in for the data plane ("PING\n" -> "PONG\n";
 * "AUTH name\n" admits the connection as `name`, as the data plane does
 * once a client's first MAC verifies). Admission (caps on unauthenticated
 * connections in all and per address, eviction of the oldest, per-identity
 * caps, the refusal message), the handshake deadline, idle and progress
 * timeouts (a stall is cut, a slow but steady frame completes), buffer
 * caps, that a
 * dropped connection frees its buffer, and the shared ring of receive
 * buffers: idle connections hold none, frames split across receives and
 * buffers still parse, an empty ring falls back to own buffers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "node.h"
#include "probe.h"

struct fx {
	struct node_loop_ev tick_ev; /* first: the tick callback finds fx from it */
	struct __kernel_timespec tick_ts;
	bool tick_armed;
	struct node_loop *loop;
	struct node_serve *srv;
	struct sockaddr_in6 addr;
	int opened, closed, last_reason, expired;
};

static ssize_t line_data(void *arg, struct node_conn *c, const uint8_t *buf, size_t len,
			 bool *in_frame)
{
	const uint8_t *nl = memchr(buf, '\n', len);

	if (!nl) {
		*in_frame = true;
		return 0;
	}
	if (nl - buf == 4 && memcmp(buf, "PING", 4) == 0)
		node_conn_send(c, "PONG\n", 5, NULL, NULL);
	else if (nl - buf > 5 && memcmp(buf, "AUTH ", 5) == 0) {
		uint8_t id[NODE_SERVE_ID_BYTES] = { 0 };
		size_t n = (size_t)(nl - buf) - 5;

		memcpy(id, buf + 5, n < sizeof(id) ? n : sizeof(id));
		if (node_conn_admit(c, id) == 0)
			node_conn_send(c, "OK\n", 3, NULL, NULL);
		else
			node_conn_send(c, "BUSY\n", 5, NULL, NULL);
	}
	else if (nl - buf > 5 && memcmp(buf, "SLOW ", 5) == 0)
		node_conn_send(c, "DONE\n", 5, NULL, NULL); /* a long frame arrived whole */
	else if (nl - buf == 4 && memcmp(buf, "QUIT", 4) == 0) {
		node_conn_send(c, "BYE\n", 4, NULL, NULL);
		node_conn_close(c, true);
	} else
		node_conn_send(c, "ERR\n", 4, NULL, NULL);
	*in_frame = false;
	return nl - buf + 1;
}

static int line_open(void *arg, struct node_conn *c)
{
	((struct fx *)arg)->opened++;
	return 0;
}

static void line_close(void *arg, struct node_conn *c, int reason)
{
	struct fx *f = arg;

	f->closed++;
	f->last_reason = reason;
}

/* Last words before the server closes: why. */
static void line_expire(void *arg, struct node_conn *c, int why)
{
	static const char *const words[] = { "", "EXP evicted\n", "EXP handshake\n", "EXP stalled\n" };

	((struct fx *)arg)->expired++;
	node_conn_send(c, words[why], strlen(words[why]), NULL, NULL);
}

static const struct node_serve_proto line_proto = { line_open, line_data, line_expire, line_close };

static uint64_t ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void tick_done(struct node_loop_ev *ev, int res, uint32_t flags)
{
	((struct fx *)ev)->tick_armed = false;
}

/* Run the loop (and the timers) for up to `for_ms`, or until *until. */
static void pump(struct fx *f, uint64_t for_ms, const int *until, int want)
{
	uint64_t end = ms() + for_ms;

	while (ms() < end && !(until && *until >= want)) {
		if (!f->tick_armed) {
			/* a 10 ms timeout keeps the loop turning for the timers */
			struct io_uring_sqe *sqe = node_loop_sqe(f->loop, &f->tick_ev);

			f->tick_ev.fn = tick_done;
			f->tick_ts.tv_sec = 0;
			f->tick_ts.tv_nsec = 10 * 1000000;
			io_uring_prep_timeout(sqe, &f->tick_ts, 0, 0);
			f->tick_armed = true;
		}
		node_loop_run(f->loop, true);
		node_serve_tick(f->srv, ms());
	}
}

#define LINE_REFUSAL "BUSY refused\n"
#define PROGRESS_MIN_BYTES 8 /* per progress interval (`slow`) */

/* A server with the given options (loop, protocol and refusal are filled). */
static int fx_setup_opts(void **state, struct node_serve_opts *o)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[256];

	assert_int_equal(node_loop_new(&f->loop, 256, err, sizeof(err)), 0);
	o->loop = f->loop;
	o->proto = &line_proto;
	o->proto_arg = f;
	o->refuse_msg = (const uint8_t *)LINE_REFUSAL;
	o->refuse_msg_len = strlen(LINE_REFUSAL);
	if (node_serve_new(&f->srv, o, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	f->addr.sin6_family = AF_INET6;
	f->addr.sin6_addr = in6addr_loopback;
	if (node_serve_listen(f->srv, &f->addr, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	*state = f;
	return 0;
}

/* No admission caps below max_conns, no handshake deadline within a test. */
static int fx_setup_ring(void **state, unsigned max_conns, size_t cap, uint64_t idle,
			 uint64_t slow, unsigned nbufs, size_t buf_bytes)
{
	struct node_serve_opts o = { 0 };

	o.max_conns = o.max_unauth = o.max_unauth_per_addr = max_conns;
	o.max_conn_buf_bytes = cap;
	o.handshake_timeout_ms = 60000;
	o.idle_timeout_ms = idle;
	o.progress_interval_ms = slow;
	o.progress_min_bytes = PROGRESS_MIN_BYTES;
	o.recv_bufs = nbufs;
	o.recv_buf_bytes = buf_bytes;
	return fx_setup_opts(state, &o);
}

static int fx_setup(void **state, unsigned max_conns, size_t cap, uint64_t idle, uint64_t slow)
{
	return fx_setup_ring(state, max_conns, cap, idle, slow, 0, 0);
}

/* 64-byte ring buffers: frames straddle them */
static int setup_small_bufs(void **state)
{
	return fx_setup_ring(state, 4, 32 << 10, 2000, 2000, 4, 64);
}

/* one ring buffer for eight busy connections */
static int setup_one_buf(void **state)
{
	return fx_setup_ring(state, 8, 32 << 10, 2000, 2000, 1, 4096);
}

static int setup(void **state)
{
	return fx_setup(state, 4, 32 << 10, 400, 300);
}

static int teardown(void **state)
{
	struct fx *f = *state;

	/* the test owns the loop: stop the server, drain, then free */
	node_serve_stop(f->srv);
	while (node_loop_inflight(f->loop))
		node_loop_run(f->loop, true);
	node_serve_destroy(&f->srv);
	assert_null(f->srv);
	node_loop_destroy(&f->loop);
	free(f);
	return 0;
}

static int client(struct fx *f)
{
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_int_equal(connect(fd, (struct sockaddr *)&f->addr, sizeof(f->addr)), 0);
	return fd;
}

/* Read what the server sent within the pump window; -1 on EOF. */
static int client_read(struct fx *f, int fd, char *buf, size_t cap)
{
	size_t n = 0;

	for (int i = 0; i < 100; i++) {
		struct pollfd p = { fd, POLLIN, 0 };
		ssize_t r;

		pump(f, 10, NULL, 0);
		if (poll(&p, 1, 0) <= 0)
			continue;
		r = recv(fd, buf + n, cap - 1 - n, MSG_DONTWAIT);
		if (r == 0)
			return n ? (int)n : -1;
		if (r < 0)
			return -1;
		n += (size_t)r;
		buf[n] = '\0';
		if (buf[n - 1] == '\n')
			return (int)n;
	}
	return (int)n;
}

static void test_ping_pong_and_graceful_close(void **state)
{
	struct fx *f = *state;
	int a = client(f), b = client(f);
	char buf[64];

	assert_int_equal(write(a, "PI", 2), 2);
	pump(f, 20, NULL, 0);
	assert_int_equal(write(a, "NG\nPING\n", 8), 8);
	assert_int_equal(client_read(f, a, buf, sizeof(buf)), 10);
	assert_string_equal(buf, "PONG\nPONG\n");
	assert_int_equal(write(b, "HELLO\n", 6), 6);
	assert_int_equal(client_read(f, b, buf, sizeof(buf)), 4);
	assert_string_equal(buf, "ERR\n");
	assert_int_equal(write(b, "QUIT\n", 5), 5);
	assert_int_equal(client_read(f, b, buf, sizeof(buf)), 4);
	assert_string_equal(buf, "BYE\n");
	assert_int_equal(client_read(f, b, buf, sizeof(buf)), -1); /* then closed */
	assert_int_equal(f->opened, 2);
	close(a);
	close(b);
	pump(f, 50, &f->closed, 2);
	assert_int_equal(f->closed, 2);
}

static void test_too_many_connections(void **state)
{
	struct fx *f = *state;
	struct node_serve_stats st;
	int fds[6];
	char buf[16];

	/* four authenticated connections fill the table */
	for (int i = 0; i < 4; i++) {
		fds[i] = client(f);
		assert_int_equal(write(fds[i], "AUTH a\n", 7), 7);
		assert_int_equal(client_read(f, fds[i], buf, sizeof(buf)), 3);
	}
	for (int i = 4; i < 6; i++)
		fds[i] = client(f);
	pump(f, 100, NULL, 0);
	node_serve_stats(f->srv, &st);
	assert_int_equal(st.open, 4);
	assert_int_equal(st.refused_busy, 2);
	assert_int_equal(st.evicted, 0);
	/* the refused ones get the refusal, then see their connection closed;
	 * the others work */
	assert_int_equal(client_read(f, fds[5], buf, sizeof(buf)), (int)strlen(LINE_REFUSAL));
	assert_string_equal(buf, LINE_REFUSAL);
	assert_int_equal(client_read(f, fds[5], buf, sizeof(buf)), -1);
	assert_int_equal(write(fds[0], "PING\n", 5), 5);
	assert_int_equal(client_read(f, fds[0], buf, sizeof(buf)), 5);
	for (int i = 0; i < 6; i++)
		close(fds[i]);
}

static void test_slow_peer_dropped(void **state)
{
	struct fx *f = *state;
	struct node_serve_stats st;
	uint64_t t0 = ms();
	int fd = client(f);
	char buf[16];

	/* one byte every 50 ms: 6 bytes per 300 ms interval, below the minimum 8 */
	for (int i = 0; i < 20 && f->closed == 0; i++) {
		if (send(fd, "P", 1, MSG_NOSIGNAL) != 1)
			break;
		pump(f, 50, &f->closed, 1);
	}
	assert_int_equal(f->closed, 1);
	assert_int_equal(f->last_reason, -ETIMEDOUT);
	assert_true(ms() - t0 < 900);
	node_serve_stats(f->srv, &st);
	assert_int_equal(st.timed_out_slow, 1);
	assert_int_equal(st.open, 0); /* its buffer is gone with it */
	/* told why (the protocol's last words), then closed */
	assert_int_equal(client_read(f, fd, buf, sizeof(buf)), 12);
	assert_string_equal(buf, "EXP stalled\n");
	assert_int_equal(client_read(f, fd, buf, sizeof(buf)), -1);
	close(fd);
}

static void test_idle_peer_dropped(void **state)
{
	struct fx *f = *state;
	struct node_serve_stats st;
	int fd = client(f);

	pump(f, 1000, &f->closed, 1);
	assert_int_equal(f->closed, 1);
	node_serve_stats(f->srv, &st);
	assert_int_equal(st.timed_out_idle, 1);
	close(fd);
}

static void test_buffer_cap(void **state)
{
	struct fx *f = *state;
	struct node_serve_stats st;
	char *junk = malloc(100 << 10);
	int fd = client(f);
	ssize_t sent = 0;

	memset(junk, 'x', 100 << 10);
	/* 100 KiB without a newline against a 32 KiB cap */
	fcntl(fd, F_SETFL, O_NONBLOCK);
	for (int i = 0; i < 200 && f->closed == 0; i++) {
		ssize_t r = send(fd, junk + sent, (100 << 10) - sent, MSG_NOSIGNAL);

		if (r > 0)
			sent += r;
		pump(f, 5, &f->closed, 1);
	}
	assert_int_equal(f->closed, 1);
	assert_int_equal(f->last_reason, -EMSGSIZE);
	node_serve_stats(f->srv, &st);
	assert_int_equal(st.overflowed, 1);
	free(junk);
	close(fd);
}

/* Read exactly `want` bytes the server sends (pumping meanwhile). */
static void client_read_n(struct fx *f, int fd, char *buf, size_t want)
{
	size_t n = 0;

	for (int i = 0; i < 500 && n < want; i++) {
		struct pollfd p = { fd, POLLIN, 0 };
		ssize_t r;

		pump(f, 5, NULL, 0);
		if (poll(&p, 1, 0) <= 0)
			continue;
		r = recv(fd, buf + n, want - n, MSG_DONTWAIT);
		assert_true(r > 0);
		n += (size_t)r;
	}
	assert_int_equal(n, want);
}

static void expect_pongs(struct fx *f, int fd, unsigned count)
{
	char *buf = malloc(count * 5 + 1);

	client_read_n(f, fd, buf, count * 5);
	for (unsigned i = 0; i < count; i++)
		assert_memory_equal(buf + i * 5, "PONG\n", 5);
	free(buf);
}

static void need_ring(struct fx *f)
{
	struct node_serve_stats st;

	node_serve_stats(f->srv, &st);
	if (!st.ring_bufs)
		skip(); /* the kernel has no provided-buffer rings */
}

static void test_idle_conns_hold_no_buffer(void **state)
{
	struct fx *f = *state;
	struct node_serve_stats st;
	int fds[3];

	need_ring(f);
	for (int i = 0; i < 3; i++)
		fds[i] = client(f);
	pump(f, 100, &f->opened, 3);
	assert_int_equal(f->opened, 3);
	node_serve_stats(f->srv, &st);
	assert_int_equal(st.ring_bufs, NODE_SERVE_RECV_BUFS);
	assert_int_equal(st.conn_buf_bytes, 0); /* three idle connections, no memory */
	for (int i = 0; i < 3; i++) {
		assert_int_equal(write(fds[i], "PING\n", 5), 5);
		expect_pongs(f, fds[i], 1);
	}
	node_serve_stats(f->srv, &st);
	assert_int_equal(st.conn_buf_bytes, 0);
	assert_true(st.recv_ring >= 3);
	/* a partial frame is held in an own buffer until it completes */
	assert_int_equal(write(fds[0], "PI", 2), 2);
	pump(f, 30, NULL, 0);
	node_serve_stats(f->srv, &st);
	assert_true(st.conn_buf_bytes > 0);
	assert_true(st.conn_buf_bytes <= NODE_SERVE_RECV_CHUNK_BYTES);
	assert_int_equal(write(fds[0], "NG\n", 3), 3);
	expect_pongs(f, fds[0], 1);
	node_serve_stats(f->srv, &st);
	assert_int_equal(st.conn_buf_bytes, 0);
	for (int i = 0; i < 3; i++)
		close(fds[i]);
	pump(f, 100, &f->closed, 3);
	node_serve_stats(f->srv, &st);
	assert_int_equal(st.open, 0);
	assert_int_equal(st.conn_buf_bytes, 0);
}

static void test_split_and_batched_frames(void **state)
{
	struct fx *f = *state;
	struct node_serve_stats st;
	char many[300 * 5];
	int fd;

	need_ring(f);
	fd = client(f);
	/* one frame in many receives: a byte at a time */
	for (int k = 0; k < 3; k++) {
		for (int i = 0; i < 5; i++) {
			assert_int_equal(write(fd, "PING\n" + i, 1), 1);
			pump(f, 3, NULL, 0);
		}
		expect_pongs(f, fd, 1);
	}
	/* many frames in one send, across 64-byte ring buffers: frames
	 * straddle buffers, tails are kept and completed */
	for (int i = 0; i < 300; i++)
		memcpy(many + i * 5, "PING\n", 5);
	assert_int_equal(write(fd, many, sizeof(many)), (ssize_t)sizeof(many));
	expect_pongs(f, fd, 300);
	/* and a frame split over three sends, each of several frames */
	assert_int_equal(write(fd, "PING\nPING\nPI", 12), 12);
	pump(f, 10, NULL, 0);
	assert_int_equal(write(fd, "NG\nPING\nP", 9), 9);
	pump(f, 10, NULL, 0);
	assert_int_equal(write(fd, "ING\n", 4), 4);
	expect_pongs(f, fd, 4);
	node_serve_stats(f->srv, &st);
	assert_true(st.recv_ring > 0);
	assert_int_equal(st.conn_buf_bytes, 0);
	assert_int_equal(f->closed, 0);
	close(fd);
}

static void test_ring_exhausted(void **state)
{
	struct fx *f = *state;
	struct node_serve_stats st;
	char many[50 * 5];
	int fds[8];

	need_ring(f);
	for (int i = 0; i < 50; i++)
		memcpy(many + i * 5, "PING\n", 5);
	for (int i = 0; i < 8; i++)
		fds[i] = client(f);
	pump(f, 100, &f->opened, 8);
	assert_int_equal(f->opened, 8);
	/* everyone sends at once: more receives ready than the one buffer */
	for (int round = 0; round < 20; round++) {
		for (int i = 0; i < 8; i++)
			assert_int_equal(write(fds[i], many, sizeof(many)), (ssize_t)sizeof(many));
		for (int i = 0; i < 8; i++)
			expect_pongs(f, fds[i], 50);
		node_serve_stats(f->srv, &st);
		if (st.recv_nobufs && round >= 2)
			break;
	}
	node_serve_stats(f->srv, &st);
	assert_true(st.recv_nobufs > 0); /* the fallback ran */
	assert_true(st.recv_own > 0);
	assert_int_equal(st.conn_buf_bytes, 0);
	assert_int_equal(f->closed, 0);
	for (int i = 0; i < 8; i++)
		close(fds[i]);
	pump(f, 200, &f->closed, 8);
	node_serve_stats(f->srv, &st);
	assert_int_equal(st.open, 0);
}

static void test_ring_opts_checked(void **state)
{
	struct node_loop *loop = NULL;
	struct node_serve *srv = NULL;
	struct node_serve_opts o = { 0 };
	char err[256];

	assert_int_equal(node_loop_new(&loop, 64, err, sizeof(err)), 0);
	o.loop = loop;
	o.proto = &line_proto;
	o.max_conns = o.max_unauth = o.max_unauth_per_addr = 1;
	o.max_conn_buf_bytes = 4096;
	o.handshake_timeout_ms = o.idle_timeout_ms = o.progress_interval_ms = 1000;
	o.progress_min_bytes = 1;
	o.recv_bufs = 3;
	assert_int_equal(node_serve_new(&srv, &o, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "power of two"));
	o.recv_bufs = NODE_SERVE_RECV_BUFS_MAX * 2;
	assert_int_equal(node_serve_new(&srv, &o, err, sizeof(err)), -EINVAL);
	o.recv_bufs = 8;
	o.recv_buf_bytes = 10;
	assert_int_equal(node_serve_new(&srv, &o, err, sizeof(err)), -EINVAL);
	o.recv_buf_bytes = (size_t)NODE_SERVE_RECV_BUF_BYTES_MAX + 1;
	assert_int_equal(node_serve_new(&srv, &o, err, sizeof(err)), -EINVAL);
	o.recv_bufs = NODE_SERVE_RECV_BUFS_MAX;
	o.recv_buf_bytes = NODE_SERVE_RECV_BUF_BYTES_MAX;
	assert_int_equal(node_serve_new(&srv, &o, err, sizeof(err)), -EINVAL);
	o.recv_bufs = 8;
	assert_null(srv);
	/* two servers on one loop get their own buffer groups */
	{
		struct node_serve *b = NULL;
		struct node_serve_stats sa, sb;

		o.recv_buf_bytes = 0;
		assert_int_equal(node_serve_new(&srv, &o, err, sizeof(err)), 0);
		assert_int_equal(node_serve_new(&b, &o, err, sizeof(err)), 0);
		node_serve_stats(srv, &sa);
		node_serve_stats(b, &sb);
		assert_int_equal(sa.ring_bufs, sb.ring_bufs);
		node_serve_destroy(&b);
		node_serve_destroy(&srv);
	}
	node_loop_destroy(&loop);
}

/* ---- admission and progress ---- */

/* 6 connections, at most 4 unauthenticated, 2 per address (all of these
 * come from ::1), an identity at most 2 times, handshake within 300 ms */
static int setup_admit(void **state)
{
	struct node_serve_opts o = { 0 };

	o.max_conns = 6;
	o.max_unauth = 4;
	o.max_unauth_per_addr = 2;
	o.max_per_id = 2;
	o.max_conn_buf_bytes = 32 << 10;
	o.handshake_timeout_ms = 300;
	o.idle_timeout_ms = 5000;
	o.progress_interval_ms = 300;
	o.progress_min_bytes = PROGRESS_MIN_BYTES;
	return fx_setup_opts(state, &o);
}

static void auth(struct fx *f, int fd, const char *name, const char *want)
{
	char line[32], buf[16];

	snprintf(line, sizeof(line), "AUTH %s\n", name);
	assert_int_equal(write(fd, line, strlen(line)), (ssize_t)strlen(line));
	assert_true(client_read(f, fd, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, want);
}

/* At the per-address cap a connection is accepted; one more from the same
 * address gets the refusal and the close; authenticated ones do not count. */
static void test_unauth_per_addr(void **state)
{
	struct fx *f = *state;
	struct node_serve_stats st;
	char buf[32];
	int a = client(f), b = client(f), c, d;

	pump(f, 50, &f->opened, 2);
	assert_int_equal(f->opened, 2); /* at the cap: both in */
	c = client(f);
	assert_int_equal(client_read(f, c, buf, sizeof(buf)), (int)strlen(LINE_REFUSAL));
	assert_string_equal(buf, LINE_REFUSAL);
	assert_int_equal(client_read(f, c, buf, sizeof(buf)), -1);
	node_serve_stats(f->srv, &st);
	assert_int_equal(st.refused_addr, 1);
	assert_int_equal(st.refused_busy, 1);
	assert_int_equal(st.unauth, 2);
	assert_int_equal(st.evicted, 0);
	/* one of them authenticates: room for one more from the address */
	auth(f, a, "alice", "OK\n");
	d = client(f);
	pump(f, 50, &f->opened, 3);
	assert_int_equal(f->opened, 3);
	assert_int_equal(write(d, "PING\n", 5), 5);
	assert_int_equal(client_read(f, d, buf, sizeof(buf)), 5);
	node_serve_stats(f->srv, &st);
	assert_int_equal(st.unauth, 2);
	close(a);
	close(b);
	close(c);
	close(d);
}

/* An identity at its cap: one more admission is refused (the protocol
 * answers); another identity is admitted; a closed one frees its share. */
static void test_per_id_cap(void **state)
{
	struct fx *f = *state;
	struct node_serve_stats st;
	int a = client(f), b = client(f), c, d;

	auth(f, a, "alice", "OK\n");
	auth(f, b, "alice", "OK\n"); /* at the cap */
	c = client(f);
	auth(f, c, "alice", "BUSY\n"); /* one past */
	auth(f, c, "bob", "OK\n");
	node_serve_stats(f->srv, &st);
	assert_int_equal(st.refused_id, 1);
	close(a);
	pump(f, 100, &f->closed, 1);
	d = client(f);
	auth(f, d, "alice", "OK\n");
	close(b);
	close(c);
	close(d);
}

/* The table full: the oldest unauthenticated connection is told
 * (on_expire) and closed for the new one; a full table of authenticated
 * connections refuses the next one. */
static int setup_evict(void **state)
{
	struct node_serve_opts o = { 0 };

	o.max_conns = 4;
	o.max_unauth = 3; /* (all from ::1: the unauthenticated cap itself, with */
	o.max_unauth_per_addr = 3; /* many addresses, is tests/integration/dp_flood.sh's) */
	o.max_conn_buf_bytes = 32 << 10;
	o.handshake_timeout_ms = 60000;
	o.idle_timeout_ms = 60000;
	o.progress_interval_ms = 1000;
	o.progress_min_bytes = 1;
	return fx_setup_opts(state, &o);
}

static void test_oldest_unauth_evicted(void **state)
{
	struct fx *f = *state;
	struct node_serve_stats st;
	char buf[32];
	int fds[8], n = 0;

	/* two authenticated, two not: the table is full */
	fds[n++] = client(f);
	auth(f, fds[0], "a", "OK\n");
	fds[n++] = client(f);
	auth(f, fds[1], "b", "OK\n");
	fds[n++] = client(f);
	pump(f, 30, &f->opened, 3);
	fds[n++] = client(f);
	pump(f, 30, &f->opened, 4);
	assert_int_equal(f->opened, 4);
	/* a fifth: the oldest unauthenticated (fds[2]) makes room */
	fds[n++] = client(f);
	assert_int_equal(client_read(f, fds[2], buf, sizeof(buf)), 12);
	assert_string_equal(buf, "EXP evicted\n");
	assert_int_equal(client_read(f, fds[2], buf, sizeof(buf)), -1);
	pump(f, 30, &f->opened, 5);
	assert_int_equal(f->opened, 5);
	node_serve_stats(f->srv, &st);
	assert_int_equal(st.evicted, 1);
	assert_int_equal(st.refused_busy, 0);
	assert_int_equal(st.open, 4);
	assert_int_equal(st.unauth, 2);
	/* the newest works and may authenticate */
	auth(f, fds[4], "c", "OK\n");
	auth(f, fds[3], "d", "OK\n");
	/* four authenticated: a new connection is refused, nobody evicted */
	fds[n++] = client(f);
	assert_int_equal(client_read(f, fds[5], buf, sizeof(buf)), (int)strlen(LINE_REFUSAL));
	assert_string_equal(buf, LINE_REFUSAL);
	node_serve_stats(f->srv, &st);
	assert_int_equal(st.evicted, 1);
	assert_int_equal(st.refused_busy, 1);
	assert_int_equal(st.open, 4);
	for (int i = 0; i < n; i++)
		close(fds[i]);
}

/* Not admitted within the deadline: told, then closed; admitted: stays. */
static void test_handshake_deadline(void **state)
{
	struct fx *f = *state;
	struct node_serve_stats st;
	uint64_t t0 = ms();
	char buf[32];
	int a = client(f), b = client(f);

	auth(f, b, "bob", "OK\n");
	assert_int_equal(client_read(f, a, buf, sizeof(buf)), 14);
	assert_string_equal(buf, "EXP handshake\n");
	assert_int_equal(client_read(f, a, buf, sizeof(buf)), -1);
	assert_true(ms() - t0 >= 300);
	assert_true(ms() - t0 < 1500);
	node_serve_stats(f->srv, &st);
	assert_int_equal(st.timed_out_handshake, 1);
	pump(f, 400, NULL, 0);
	assert_int_equal(write(b, "PING\n", 5), 5);
	assert_int_equal(client_read(f, b, buf, sizeof(buf)), 5);
	close(a);
	close(b);
}

/* Progress: a frame trickling below the minimum is cut (told first); one
 * that goes on for many intervals at just above it completes. */
static void test_progress(void **state)
{
	struct fx *f = *state;
	struct node_serve_stats st;
	char buf[32];
	int a = client(f), b = client(f);
	uint64_t t0;

	auth(f, a, "a", "OK\n");
	auth(f, b, "b", "OK\n");
	/* b: "SLOW " then 2 bytes every 60 ms (10 per 300 ms, the minimum is
	 * 8) for 1.5 s, five intervals, then the newline */
	assert_int_equal(write(b, "SLOW ", 5), 5);
	t0 = ms();
	while (ms() - t0 < 1500) {
		assert_int_equal(write(b, "xx", 2), 2);
		pump(f, 60, NULL, 0);
	}
	assert_int_equal(write(b, "\n", 1), 1);
	assert_int_equal(client_read(f, b, buf, sizeof(buf)), 5);
	assert_string_equal(buf, "DONE\n");
	/* a: 1 byte every 60 ms (5 per 300 ms): cut within two intervals */
	assert_int_equal(write(a, "SLOW ", 5), 5);
	t0 = ms();
	while (f->expired == 0 && ms() - t0 < 2000) {
		if (send(a, "x", 1, MSG_NOSIGNAL) != 1)
			break;
		pump(f, 60, &f->expired, 1);
	}
	assert_int_equal(f->expired, 1);
	assert_true(ms() - t0 < 800);
	assert_int_equal(client_read(f, a, buf, sizeof(buf)), 12);
	assert_string_equal(buf, "EXP stalled\n");
	assert_int_equal(client_read(f, a, buf, sizeof(buf)), -1);
	node_serve_stats(f->srv, &st);
	assert_int_equal(st.timed_out_slow, 1);
	/* b still works */
	assert_int_equal(write(b, "PING\n", 5), 5);
	assert_int_equal(client_read(f, b, buf, sizeof(buf)), 5);
	close(a);
	close(b);
}

static void test_admission_opts_checked(void **state)
{
	struct node_loop *loop = NULL;
	struct node_serve *srv = NULL;
	struct node_serve_opts o = { 0 };
	char err[256];

	assert_int_equal(node_loop_new(&loop, 8, err, sizeof(err)), 0);
	o.loop = loop;
	o.proto = &line_proto;
	o.max_conns = 4;
	o.max_unauth = 5; /* above max_conns */
	o.max_unauth_per_addr = 1;
	o.max_conn_buf_bytes = 4096;
	o.handshake_timeout_ms = o.idle_timeout_ms = o.progress_interval_ms = 1000;
	o.progress_min_bytes = 1;
	assert_int_equal(node_serve_new(&srv, &o, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "unauthenticated"));
	o.max_unauth = 2;
	o.max_unauth_per_addr = 3; /* above max_unauth */
	assert_int_equal(node_serve_new(&srv, &o, err, sizeof(err)), -EINVAL);
	o.max_unauth_per_addr = 2;
	o.progress_min_bytes = 0;
	assert_int_equal(node_serve_new(&srv, &o, err, sizeof(err)), -EINVAL);
	o.progress_min_bytes = 1;
	o.refuse_msg_len = NODE_SERVE_REFUSE_MSG_MAX + 1;
	o.refuse_msg = (const uint8_t *)err;
	assert_int_equal(node_serve_new(&srv, &o, err, sizeof(err)), -EINVAL);
	o.refuse_msg_len = 0;
	assert_int_equal(node_serve_new(&srv, &o, err, sizeof(err)), 0);
	node_serve_destroy(&srv);
	node_loop_destroy(&loop);
}

int main(void)
{
	test_require_io_uring();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_ping_pong_and_graceful_close, setup, teardown),
		cmocka_unit_test_setup_teardown(test_too_many_connections, setup, teardown),
		cmocka_unit_test_setup_teardown(test_slow_peer_dropped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle_peer_dropped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_buffer_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle_conns_hold_no_buffer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_split_and_batched_frames, setup_small_bufs, teardown),
		cmocka_unit_test_setup_teardown(test_ring_exhausted, setup_one_buf, teardown),
		cmocka_unit_test(test_ring_opts_checked),
		cmocka_unit_test_setup_teardown(test_unauth_per_addr, setup_admit, teardown),
		cmocka_unit_test_setup_teardown(test_per_id_cap, setup_admit, teardown),
		cmocka_unit_test_setup_teardown(test_handshake_deadline, setup_admit, teardown),
		cmocka_unit_test_setup_teardown(test_progress, setup_admit, teardown),
		cmocka_unit_test_setup_teardown(test_oldest_unauth_evicted, setup_evict, teardown),
		cmocka_unit_test(test_admission_opts_checked),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
