/* One io_uring for disk and network: the store and a TCP accept/recv
 * complete on the same ring, dispatched by node_loop_run(). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "node.h"
#include "probe.h"

struct net_ev {
	struct node_loop_ev ev;
	int res, count;
	bool more;
};

static void net_done(struct node_loop_ev *ev, int res, uint32_t flags)
{
	struct net_ev *n = (struct net_ev *)ev;

	n->res = res;
	n->count++;
	n->more = flags & IORING_CQE_F_MORE;
}

static int listen_any(uint16_t *port)
{
	struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(fd, 16), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	*port = ntohs(a.sin6_port);
	return fd;
}

static int connect_to(uint16_t port)
{
	struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT,
				  .sin6_port = htons(port) };
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

static void test_features(void **state)
{
	struct node_loop *l = NULL;
	char err[256];

	assert_int_equal(node_loop_new(&l, 64, err, sizeof(err)), 0);
	print_message("ring: %u entries, single_issuer=%d defer_taskrun=%d coop_taskrun=%d\n",
		      node_loop_features(l)->entries, node_loop_features(l)->single_issuer,
		      node_loop_features(l)->defer_taskrun, node_loop_features(l)->coop_taskrun);
	assert_true(node_loop_features(l)->entries >= 64);
	assert_int_equal(node_loop_run(l, true), 0); /* nothing in flight: no hang */
	node_loop_destroy(&l);
	assert_null(l);
}

struct hook_rec {
	int calls;
	struct node_loop *loop;
	struct net_ev nop;  /* queued by the hook on its first call */
};

static void hook_fn(void *arg)
{
	struct hook_rec *h = arg;

	if (h->calls++ == 0)
		io_uring_prep_nop(node_loop_sqe(h->loop, &h->nop.ev));
}

/* Before-sleep hooks run at the start of every node_loop_run(), in the
 * order they were added; what they queue goes out in the same submission;
 * removed hooks no longer run; the table is bounded. */
static void test_before_sleep_hooks(void **state)
{
	struct node_loop *l = NULL;
	struct hook_rec a = { 0 }, b = { 0 };
	char err[256];

	assert_int_equal(node_loop_new(&l, 8, err, sizeof(err)), 0);
	a.loop = b.loop = l;
	a.nop.ev.fn = b.nop.ev.fn = net_done;
	assert_int_equal(node_loop_before_sleep_add(l, hook_fn, &a), 0);
	assert_int_equal(node_loop_before_sleep_add(l, hook_fn, &b), 0);
	/* the nops the hooks queue are submitted and reaped by this very call */
	assert_int_equal(node_loop_run(l, true), 2);
	assert_int_equal(a.calls, 1);
	assert_int_equal(b.calls, 1);
	assert_int_equal(a.nop.count, 1);
	assert_int_equal(b.nop.count, 1);
	node_loop_before_sleep_remove(l, hook_fn, &a);
	assert_int_equal(node_loop_run(l, false), 0);
	assert_int_equal(a.calls, 1);
	assert_int_equal(b.calls, 2);
	node_loop_before_sleep_remove(l, hook_fn, &b);
	for (int i = 0; i < NODE_LOOP_HOOKS_MAX; i++)
		assert_int_equal(node_loop_before_sleep_add(l, hook_fn, &a), 0);
	assert_int_equal(node_loop_before_sleep_add(l, hook_fn, &a), -ENOSPC);
	for (int i = 0; i < NODE_LOOP_HOOKS_MAX; i++)
		node_loop_before_sleep_remove(l, hook_fn, &a);
	node_loop_destroy(&l);
	assert_null(l);
}

static void test_disk_and_network_on_one_ring(void **state)
{
	char dir[] = "/tmp/shelf-loop-XXXXXX", path[300], err[256];
	struct node_loop *l = NULL;
	struct node_store *s = NULL;
	struct node_store_opts o;
	struct net_ev acc = { .ev.fn = net_done }, rcv = { .ev.fn = net_done };
	struct io_uring_sqe *sqe;
	uint16_t port;
	int lfd, cfd, sfd;
	char buf[16] = "";
	void *val = NULL;
	size_t vlen = 0;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/drive", dir);
	assert_int_equal(node_loop_new(&l, 128, err, sizeof(err)), 0);
	node_store_opts_init(&o);
	o.path = path;
	o.loop = l;
	o.create_size = 64 << 20;
	o.format = true;
	o.segment_bytes = 4 << 20;
	if (node_store_open(&s, &o, err, sizeof(err)) < 0)
		fail_msg("%s", err);

	/* a multishot accept on the same ring as the store */
	lfd = listen_any(&port);
	sqe = node_loop_sqe(l, &acc.ev);
	assert_non_null(sqe);
	io_uring_prep_multishot_accept(sqe, lfd, NULL, NULL, 0);
	cfd = connect_to(port);

	/* the store's put does its i/o directly (it never runs the loop);
	 * the owner's run completes the accept */
	assert_int_equal(node_store_put(s, "k", 1, "value", 5), 0);
	while (acc.count == 0)
		assert_true(node_loop_run(l, true) >= 0);
	assert_true(acc.res >= 0);
	assert_true(acc.more); /* still armed for the next connection */
	sfd = acc.res;

	/* a receive on the accepted socket, then a get, interleaved */
	sqe = node_loop_sqe(l, &rcv.ev);
	io_uring_prep_recv(sqe, sfd, buf, sizeof(buf) - 1, 0);
	assert_int_equal(write(cfd, "ping", 4), 4);
	assert_int_equal(node_store_get(s, "k", 1, &val, &vlen), 0);
	assert_int_equal(vlen, 5);
	assert_memory_equal(val, "value", 5);
	free(val);
	while (rcv.count == 0)
		assert_true(node_loop_run(l, true) >= 0);
	assert_int_equal(rcv.res, 4);
	assert_string_equal(buf, "ping");

	/* a second connection reuses the multishot accept */
	close(connect_to(port));
	while (acc.count < 2)
		assert_true(node_loop_run(l, true) >= 0);
	assert_true(acc.res >= 0);
	close(acc.res);

	/* reopen through the loop: the data is there */
	node_store_close(&s);
	assert_int_equal(node_store_open(&s, &o, err, sizeof(err)), 0);
	assert_int_equal(node_store_get(s, "k", 1, &val, &vlen), 0);
	free(val);
	node_store_close(&s);

	/* cancel the multishot accept so the loop drains */
	sqe = node_loop_sqe(l, NULL);
	io_uring_prep_cancel(sqe, &acc.ev, 0);
	io_uring_sqe_set_data(sqe, NULL);
	while (acc.more)
		assert_true(node_loop_run(l, true) >= 0);
	close(sfd);
	close(cfd);
	close(lfd);
	node_loop_destroy(&l);
	unlink(path);
	rmdir(dir);
}

/* ---- the store on a shared loop: only the owner runs it ---- */

struct done_rec {
	int calls, res;
	struct node_store_rbuf *rb; /* a get's buffer, taken */
	struct node_store_objstat st;
};

static void put_done(void *arg, int res, const struct node_store_objstat *st)
{
	struct done_rec *d = arg;

	d->calls++;
	d->res = res;
	if (st)
		d->st = *st;
}

static void get_done(void *arg, int res, struct node_store_rbuf **rb,
		     const struct node_store_objstat *st)
{
	struct done_rec *d = arg;

	put_done(arg, res, st);
	d->rb = *rb; /* taken: ours until released */
	*rb = NULL;
}

static void run_until(struct node_loop *l, const int *calls)
{
	for (int i = 0; i < 100000 && !*calls; i++)
		assert_true(node_loop_run(l, true) >= 0);
	assert_true(*calls > 0);
}

/* A nop of "another module" that has completed in the kernel, so its
 * completion waits for whoever dispatches the loop next. */
static void other_nop(struct node_loop *l, struct net_ev *nop)
{
	nop->ev.fn = net_done;
	nop->count = 0;
	io_uring_prep_nop(node_loop_sqe(l, &nop->ev));
	assert_true(io_uring_submit(node_loop_ring(l)) >= 0);
}

/* Asynchronous operations complete with only the owner running the loop;
 * no store call (poll, blocking calls) dispatches another module's
 * completion; blocking calls wait until the store is idle on the loop. */
static void test_store_never_runs_the_loop(void **state)
{
	char dir[] = "/tmp/shelf-loop-XXXXXX", path[300], err[256];
	struct node_loop *l = NULL;
	struct node_store *s = NULL;
	struct node_store_opts o;
	struct done_rec p = { 0 }, g = { 0 }, st = { 0 }, del = { 0 };
	struct net_ev nop = { 0 };
	void *val = NULL;
	size_t vlen = 0;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/drive", dir);
	assert_int_equal(node_loop_new(&l, 128, err, sizeof(err)), 0);
	node_store_opts_init(&o);
	o.path = path;
	o.loop = l;
	o.create_size = 64 << 20;
	o.format = true;
	o.segment_bytes = 4 << 20;
	if (node_store_open(&s, &o, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_true(node_store_idle(s));

	other_nop(l, &nop);
	assert_int_equal(node_store_put_async(s, "k", 1, "value", 5, put_done, &p), 0);
	/* the store's poll does its own work only: the put's write is queued
	 * on the loop, nothing is dispatched, nothing waits */
	for (int i = 0; i < 3; i++) {
		assert_int_equal(node_store_poll(s, false), 0);
		assert_int_equal(node_store_poll(s, true), 0);
	}
	assert_int_equal(nop.count, 0);
	assert_int_equal(p.calls, 0);
	assert_false(node_store_idle(s));
	/* a blocking call cannot wait for i/o on the loop without running it */
	assert_int_equal(node_store_put(s, "x", 1, "y", 1), -EBUSY);
	assert_int_equal(nop.count, 0);
	/* the owner runs the loop: the put completes, the nop goes to its owner */
	run_until(l, &p.calls);
	assert_int_equal(p.res, 0);
	assert_int_equal(p.st.size, 5);
	assert_int_equal(nop.count, 1);

	/* a get hands its buffer over; stat and delete complete the same way */
	assert_int_equal(node_store_get_async(s, "k", 1, 0, UINT64_MAX, get_done, &g), 0);
	run_until(l, &g.calls);
	assert_int_equal(g.res, 0);
	assert_non_null(g.rb);
	assert_int_equal(g.rb->len, 5);
	assert_memory_equal(g.rb->data, "value", 5);
	node_store_rbuf_release(&g.rb);
	assert_null(g.rb);
	node_store_rbuf_release(&g.rb); /* NULL is fine */
	assert_int_equal(node_store_stat_async(s, "k", 1, put_done, &st), 0);
	run_until(l, &st.calls);
	assert_int_equal(st.res, 0);
	assert_int_equal(st.st.size, 5);
	assert_int_equal(st.st.seq, p.st.seq);

	/* idle on the loop: blocking calls do their own i/o, directly, and
	 * still dispatch nobody's completion */
	while (!node_store_idle(s))
		assert_true(node_loop_run(l, true) >= 0);
	other_nop(l, &nop);
	assert_int_equal(node_store_put(s, "b", 1, "blocking", 8), 0);
	assert_int_equal(node_store_get(s, "b", 1, &val, &vlen), 0);
	assert_int_equal(vlen, 8);
	free(val);
	assert_int_equal(node_store_sync(s), 0);
	assert_int_equal(node_store_checkpoint(s), 0);
	assert_int_equal(nop.count, 0);
	assert_true(node_loop_run(l, false) >= 1);
	assert_int_equal(nop.count, 1);

	assert_int_equal(node_store_delete_async(s, "k", 1, put_done, &del), 0);
	run_until(l, &del.calls);
	assert_int_equal(del.res, 0);
	while (!node_store_idle(s))
		assert_true(node_loop_run(l, true) >= 0);
	node_store_close(&s);
	assert_int_equal(node_store_open(&s, &o, err, sizeof(err)), 0);
	assert_int_equal(node_store_get(s, "k", 1, &val, &vlen), -ENOENT);
	assert_int_equal(node_store_get(s, "b", 1, &val, &vlen), 0);
	free(val);
	node_store_close(&s);
	node_loop_destroy(&l);
	unlink(path);
	rmdir(dir);
}

/*
 * A drive on the loop whose writes take SLOW_WRITE_MS (an io_uring timeout
 * before each), so that a batch has to wait for the commit window while a
 * write is in flight. Reads and flushes complete at once (a nop). Direct
 * requests are done at reap, as the production backend does them.
 */
#define SLOW_WRITE_MS 300

struct slow_req {
	struct node_loop_ev ev;
	struct __kernel_timespec ts;
	struct node_disk_io *io;
	struct slowdisk *sd;
};

struct slowdisk {
	struct node_disk d;
	struct node_loop *loop;
	uint8_t *img;
	bool direct;
	struct node_disk_io *dq, *dq_tail;
	unsigned writes, max_writes; /* writes in flight, and the most at once */
};

static void slow_do(struct slowdisk *sd, struct node_disk_io *io)
{
	if (io->op == DISK_READ)
		memcpy(io->buf, sd->img + io->off, io->len);
	else if (io->op == DISK_WRITE)
		memcpy(sd->img + io->off, io->buf, io->len);
	io->res = io->op == DISK_FLUSH ? 0 : (int)io->len;
	sd->d.inflight--;
	io->done(io);
}

static void slow_complete(struct node_loop_ev *ev, int res, uint32_t flags)
{
	struct slow_req *r = (struct slow_req *)ev;
	struct slowdisk *sd = r->sd;
	struct node_disk_io *io = r->io;

	free(r);
	if (io->op == DISK_WRITE)
		sd->writes--;
	slow_do(sd, io);
}

static int slow_submit(struct node_disk *d, struct node_disk_io *io)
{
	struct slowdisk *sd = (struct slowdisk *)d;
	struct slow_req *r = NULL;
	struct io_uring_sqe *sqe = NULL;

	if (sd->direct) {
		io->next = NULL;
		if (sd->dq_tail)
			sd->dq_tail->next = io;
		else
			sd->dq = io;
		sd->dq_tail = io;
		return 0;
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->ev.fn = slow_complete;
	r->io = io;
	r->sd = sd;
	sqe = node_loop_sqe(sd->loop, &r->ev);
	if (!sqe) {
		free(r);
		return -EBUSY;
	}
	if (io->op == DISK_WRITE) {
		r->ts.tv_nsec = SLOW_WRITE_MS * 1000000ll;
		io_uring_prep_timeout(sqe, &r->ts, 0, 0);
		if (++sd->writes > sd->max_writes)
			sd->max_writes = sd->writes;
	} else {
		io_uring_prep_nop(sqe);
	}
	return 0;
}

static int slow_reap(struct node_disk *d, bool wait)
{
	struct slowdisk *sd = (struct slowdisk *)d;
	struct node_disk_io *io;
	int n = 0;

	while ((io = sd->dq)) {
		sd->dq = io->next;
		if (!sd->dq)
			sd->dq_tail = NULL;
		slow_do(sd, io);
		n++;
	}
	return n;
}

static int slow_direct(struct node_disk *d, bool on)
{
	struct slowdisk *sd = (struct slowdisk *)d;

	if (on && !sd->direct && d->inflight)
		return -EBUSY;
	sd->direct = on;
	return 0;
}

static void slow_destroy(struct node_disk *d)
{
	struct slowdisk *sd = (struct slowdisk *)d;

	free(sd->img);
	free(sd);
}

static const struct node_disk_ops slow_ops = { slow_submit, slow_reap, slow_destroy, slow_direct };

/* A put whose batch waits for the commit window completes with only the
 * owner running the loop: the store's timer wakes the loop at the window,
 * and the batch goes out while the earlier write is still in flight (not
 * when it completes, which is all the loop would otherwise wake for). */
static void test_store_commit_window_on_loop(void **state)
{
	struct node_loop *l = NULL;
	struct node_store *s = NULL;
	struct slowdisk *sd = calloc(1, sizeof(*sd));
	struct node_store_opts o;
	struct done_rec a = { 0 }, b = { 0 }, g = { 0 };
	char err[256];
	int n;

	assert_non_null(sd);
	assert_int_equal(node_loop_new(&l, 64, err, sizeof(err)), 0);
	sd->d.ops = &slow_ops;
	sd->d.size = 16 << 20;
	snprintf(sd->d.name, sizeof(sd->d.name), "slowdisk");
	sd->loop = l;
	sd->img = calloc(1, sd->d.size);
	assert_non_null(sd->img);
	node_store_opts_init(&o);
	o.disk = &sd->d;
	o.loop = l;
	o.format = true;
	o.segment_bytes = 1 << 20;
	o.commit_window_us = 5000;
	if (node_store_open(&s, &o, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_int_equal(sd->max_writes, 0); /* open did its i/o directly */

	/* the first put's batch goes out at once: nothing else is in flight */
	assert_int_equal(node_store_put_async(s, "a", 1, "first", 5, put_done, &a), 0);
	assert_true(node_loop_run(l, false) >= 0);
	assert_int_equal(sd->writes, 1);
	/* the second waits for the window while the first write is slow */
	assert_int_equal(node_store_put_async(s, "b", 1, "second", 6, put_done, &b), 0);
	n = node_loop_run(l, true); /* the hook batches b, the timer wakes us */
	assert_true(n >= 1);
	assert_int_equal(sd->writes, 1);
	assert_int_equal(a.calls + b.calls, 0);
	assert_true(node_loop_run(l, false) >= 0); /* the hook: the window has passed */
	assert_int_equal(sd->max_writes, 2);
	assert_int_equal(a.calls + b.calls, 0);
	run_until(l, &a.calls);
	run_until(l, &b.calls);
	assert_int_equal(a.res, 0);
	assert_int_equal(b.res, 0);
	assert_true(b.st.seq > a.st.seq);

	assert_int_equal(node_store_get_async(s, "b", 1, 0, UINT64_MAX, get_done, &g), 0);
	run_until(l, &g.calls);
	assert_int_equal(g.res, 0);
	assert_memory_equal(g.rb->data, "second", 6);
	node_store_rbuf_release(&g.rb);
	while (!node_store_idle(s))
		assert_true(node_loop_run(l, true) >= 0);
	node_store_close(&s); /* the store takes the disk */
	node_loop_destroy(&l);
}

int main(void)
{
	test_require_io_uring();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_features),
		cmocka_unit_test(test_disk_and_network_on_one_ring),
		cmocka_unit_test(test_before_sleep_hooks),
		cmocka_unit_test(test_store_never_runs_the_loop),
		cmocka_unit_test(test_store_commit_window_on_loop),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
