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

	/* the store's put runs the loop: the accept completes on the way */
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

int main(void)
{
	test_require_io_uring();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_features),
		cmocka_unit_test(test_disk_and_network_on_one_ring),
		cmocka_unit_test(test_before_sleep_hooks),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
