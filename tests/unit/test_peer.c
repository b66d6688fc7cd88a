/*
 * node_peer end to end, in one thread: a node's data plane (node_dp on
 * node_serve, serving a real store) and a node_peer client connected to it
 * run on the SAME io_uring loop, which only the test runs. Every request
 * (PUT, GET, STAT, DELETE, plaintext and encrypted, a payload of several
 * MiB that streams through both sides, several requests in flight at once)
 * can only complete if neither side ever blocks the loop.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "node.h"
#include "probe.h"
#include "overlay.h"
#include "probe.h"

#define BIG_BYTES (6u << 20) /* above the data plane's payload budget: it streams */
#define RUN_MS 30000

struct fx {
	struct ovl_id *ca, *broker, *node, *client;
	uint8_t broker_cert[OVL_CERT_MAX_BYTES], node_cert[OVL_CERT_MAX_BYTES];
	uint8_t client_cert[OVL_CERT_MAX_BYTES];
	int broker_len, node_len, client_len;
	uint64_t now;
	char dir[64], path[128];
	struct node_loop *loop;
	struct node_store *store;
	struct node_req *req;
	ovl_keyring_t *kr, *ckr;
	struct ovl_peers *peers, *cpeers;
	struct node_dp *dp;
	struct sockaddr_in6 addr;
	struct node_loop_ev tick_ev;
	struct __kernel_timespec tick_ts;
	bool tick_armed;
	struct node_peer *peer;
	int done;          /* calls completed (done callbacks) */
};

static int mkcert(const struct ovl_id *subj, enum ovl_role role, uint64_t serial,
		  const struct ovl_id *issuer, uint64_t now, uint8_t *out)
{
	static const char *const slices[] = { "hot", "enc", NULL };
	struct ovl_cert c;
	char err[256];
	int n;

	ovl_cert_init(&c);
	ovl_cert_set_keys(&c, subj);
	c.serial = serial;
	c.role = role;
	c.not_before = now - 60;
	c.not_after = now + 3600;
	for (const char *const *s = slices; role != OVL_ROLE_BROKER && *s; s++)
		assert_int_equal(ovl_cert_add_slice(&c, *s, err, sizeof(err)), 0);
	n = ovl_cert_sign(&c, issuer->sign_sk, out, OVL_CERT_MAX_BYTES, err, sizeof(err));
	if (n < 0)
		fail_msg("sign: %s", err);
	return n;
}

static uint64_t now_s(void *arg)
{
	return (uint64_t)time(NULL);
}

static void tick_done(struct node_loop_ev *ev, int res, uint32_t flags)
{
	struct fx *f = (struct fx *)((char *)ev - offsetof(struct fx, tick_ev));

	f->tick_armed = false;
}

/* One turn of the loop, as the node's main runs it. */
static void turn(struct fx *f)
{
	if (!f->tick_armed) {
		struct io_uring_sqe *sqe = node_loop_sqe(f->loop, &f->tick_ev);

		f->tick_ev.fn = tick_done;
		f->tick_ts.tv_sec = 0;
		f->tick_ts.tv_nsec = 20 * 1000000;
		io_uring_prep_timeout(sqe, &f->tick_ts, 0, 0);
		f->tick_armed = true;
	}
	node_store_poll(f->store, false);
	node_loop_run(f->loop, true);
	node_dp_tick(f->dp, ovl_mono_ms());
}

/* Run the loop until `want` calls completed (fails the test after RUN_MS). */
static void run_until(struct fx *f, int want)
{
	uint64_t end = ovl_mono_ms() + RUN_MS;

	while (f->done < want) {
		if (ovl_mono_ms() > end)
			fail_msg("only %d of %d calls completed in %d ms", f->done, want, RUN_MS);
		turn(f);
	}
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct node_store_opts so;
	struct node_dp_opts o = { 0 };
	struct node_req_opts ro = { 0 };
	char err[256];

	f->now = (uint64_t)time(NULL);
	ovl_id_generate(&f->ca);
	ovl_id_generate(&f->broker);
	ovl_id_generate(&f->node);
	ovl_id_generate(&f->client);
	f->broker_len = mkcert(f->broker, OVL_ROLE_BROKER, 1, f->ca, f->now, f->broker_cert);
	f->node_len = mkcert(f->node, OVL_ROLE_NODE, 2, f->broker, f->now, f->node_cert);
	/* the forwarding node's certificate: a node's, as a peer presents it */
	f->client_len = mkcert(f->client, OVL_ROLE_NODE, 3, f->broker, f->now, f->client_cert);
	snprintf(f->dir, sizeof(f->dir), "/tmp/shelf-peer-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/drive", f->dir);
	if (node_loop_new(&f->loop, 256, err, sizeof(err)) < 0) {
		print_message("skipped: no io_uring here: %s\n", err);
		rmdir(f->dir);
		free(f);
		return -1;
	}
	node_store_opts_init(&so);
	so.path = f->path;
	so.loop = f->loop;
	so.create_size = 128 << 20;
	so.format = true;
	so.segment_bytes = 16 << 20;
	if (node_store_open(&f->store, &so, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	f->kr = ovl_keyring_new();
	assert_int_equal(ovl_peers_new(&f->peers, f->ca->sign_pk, f->kr), 0);
	assert_int_equal(ovl_peers_add_broker(f->peers, f->broker_cert, f->broker_len, f->now, err,
					      sizeof(err)), 0);
	f->ckr = ovl_keyring_new();
	assert_int_equal(ovl_peers_new(&f->cpeers, f->ca->sign_pk, f->ckr), 0);
	assert_int_equal(ovl_peers_add_broker(f->cpeers, f->broker_cert, f->broker_len, f->now,
					      err, sizeof(err)), 0);
	ro.loop = f->loop;
	ro.store = f->store;
	assert_int_equal(node_req_new(&f->req, &ro, err, sizeof(err)), 0);
	o.loop = f->loop;
	o.req = f->req;
	o.id = f->node;
	o.cert = f->node_cert;
	o.cert_len = (size_t)f->node_len;
	o.peers = f->peers;
	o.now_s = now_s;
	o.max_conns = 16;
	o.max_inflight = 8;
	o.max_payload_bytes = 2 << 20; /* less than BIG_BYTES: that one streams */
	o.max_unauth = 8;
	o.max_unauth_per_addr = 8;
	o.handshake_timeout_ms = 5000;
	o.idle_timeout_ms = 5000;
	o.progress_interval_ms = 5000;
	o.progress_min_bytes = 1;
	assert_int_equal(node_dp_new(&f->dp, &o, err, sizeof(err)), 0);
	assert_int_equal(node_dp_slice_set(f->dp, "hot", 5, false), 0);
	assert_int_equal(node_dp_slice_set(f->dp, "enc", 5, true), 0);
	f->addr.sin6_family = AF_INET6;
	f->addr.sin6_addr = in6addr_loopback;
	assert_int_equal(node_dp_listen(f->dp, &f->addr, err, sizeof(err)), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	node_peer_destroy(&f->peer);
	/* the test owns the loop: stop the data plane, drain, then free */
	node_dp_stop(f->dp);
	for (int i = 0; i < 50 && (node_loop_inflight(f->loop) || !node_store_idle(f->store)); i++)
		node_loop_run(f->loop, true);
	node_dp_destroy(&f->dp);
	node_req_destroy(&f->req);
	node_store_close(&f->store);
	node_loop_destroy(&f->loop);
	ovl_peers_destroy(&f->peers);
	ovl_peers_destroy(&f->cpeers);
	ovl_keyring_destroy(&f->kr);
	ovl_keyring_destroy(&f->ckr);
	ovl_id_destroy(&f->ca);
	ovl_id_destroy(&f->broker);
	ovl_id_destroy(&f->node);
	ovl_id_destroy(&f->client);
	unlink(f->path);
	rmdir(f->dir);
	free(f);
	return 0;
}

static void peer_open(struct fx *f, const char *slice)
{
	struct node_peer_opts o = { 0 };
	char err[256];

	o.loop = f->loop;
	o.addr = f->addr;
	o.dpc.id = f->client;
	o.dpc.cert = f->client_cert;
	o.dpc.cert_len = (size_t)f->client_len;
	o.dpc.peers = f->cpeers;
	o.dpc.now = f->now;
	o.dpc.slice = slice;
	o.dpc.name = "node ::1";
	if (node_peer_new(&f->peer, &o, err, sizeof(err)) < 0)
		fail_msg("peer: %s", err);
}

static void on_done(struct ovl_dpc_call *call, void *arg)
{
	struct fx *f = arg;

	f->done++;
}

static void call_init(struct fx *f, struct ovl_dpc_call *c, uint8_t type, const char *slice,
		      const char *key)
{
	ovl_dpc_call_init(c);
	c->req.type = type;
	snprintf(c->req.slice, sizeof(c->req.slice), "%s", slice);
	c->req.epoch = 5;
	c->req.key_len = (uint32_t)strlen(key);
	memcpy(c->req.key, key, c->req.key_len);
	c->encrypt = strcmp(slice, "enc") == 0;
	c->done = on_done;
	c->done_arg = f;
}

static void start(struct fx *f, struct ovl_dpc_call *c)
{
	char err[256];

	if (node_peer_call(f->peer, c, err, sizeof(err)) < 0)
		fail_msg("call: %s", err);
}

static void put_init(struct fx *f, struct ovl_dpc_call *c, const char *slice, const char *key,
		     const uint8_t *v, size_t n)
{
	call_init(f, c, OVL_WIRE_T_PUT, slice, key);
	c->payload = v;
	c->payload_len = n;
	c->req.size = n;
	c->req.crc = ovl_crc32c(0, v, n);
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed + i * 31 + (i >> 7));
}

static void expect_ok(const struct ovl_dpc_call *c)
{
	if (c->result < 0)
		fail_msg("call failed: %s", c->err);
	if (c->resp.status != OVL_WIRE_OK)
		fail_msg("status %s: %s", ovl_wire_status_name(c->resp.status), c->resp.message);
}

/* Each slice: PUTs (one that streams) and a STAT in flight at once, then
 * GETs of both back (pipelined), a range, a DELETE and a GET of what is
 * gone. */
static void round_trip(struct fx *f, const char *slice)
{
	uint8_t *big = malloc(BIG_BYTES), small[3000];
	struct ovl_dpc_call *c = calloc(6, sizeof(*c));
	int base;

	fill(big, BIG_BYTES, 5);
	fill(small, sizeof(small), 9);
	peer_open(f, slice);
	f->done = 0;
	/* started before the connection is even up: they wait for the session */
	put_init(f, &c[0], slice, "p/big", big, BIG_BYTES);
	put_init(f, &c[1], slice, "p/small", small, sizeof(small));
	call_init(f, &c[2], OVL_WIRE_T_STAT, slice, "p/none");
	for (int i = 0; i < 3; i++)
		start(f, &c[i]);
	assert_int_equal(node_peer_inflight(f->peer), 3);
	assert_false(node_peer_ready(f->peer));
	run_until(f, 3);
	assert_true(node_peer_ready(f->peer));
	expect_ok(&c[0]);
	expect_ok(&c[1]);
	assert_int_equal(c[2].result, 0);
	assert_int_equal(ovl_dpc_call_errno(&c[2]), -ENOENT);
	assert_int_equal(c[0].resp.size, BIG_BYTES);

	base = f->done;
	call_init(f, &c[3], OVL_WIRE_T_GET, slice, "p/big");
	call_init(f, &c[4], OVL_WIRE_T_GET, slice, "p/small");
	call_init(f, &c[5], OVL_WIRE_T_STAT, slice, "p/big");
	for (int i = 3; i < 6; i++)
		start(f, &c[i]);
	run_until(f, base + 3);
	for (int i = 3; i < 6; i++)
		expect_ok(&c[i]);
	assert_int_equal(c[3].body_len, BIG_BYTES);
	assert_memory_equal(c[3].body, big, BIG_BYTES);
	assert_int_equal(c[3].resp.crc, ovl_crc32c(0, c[3].body, c[3].body_len));
	assert_int_equal(c[4].body_len, sizeof(small));
	assert_memory_equal(c[4].body, small, sizeof(small));
	assert_int_equal(c[5].resp.size, BIG_BYTES);
	assert_int_equal(c[5].resp.crc, ovl_crc32c(0, big, BIG_BYTES));
	for (int i = 0; i < 6; i++)
		ovl_dpc_call_release(&c[i]);

	/* a range across chunks, then DELETE and a GET of what is gone */
	base = f->done;
	call_init(f, &c[0], OVL_WIRE_T_GET, slice, "p/big");
	c[0].req.has_range = true;
	c[0].req.offset = 70001;
	c[0].req.length = 200000;
	call_init(f, &c[1], OVL_WIRE_T_DELETE, slice, "p/big");
	call_init(f, &c[2], OVL_WIRE_T_GET, slice, "p/big");
	/* the node answers pipelined requests as they finish, in any order:
	 * what depends on an answer waits for it */
	for (int i = 0; i < 3; i++) {
		start(f, &c[i]);
		run_until(f, base + i + 1);
	}
	expect_ok(&c[0]);
	assert_int_equal(c[0].body_len, 200000);
	assert_memory_equal(c[0].body, big + 70001, 200000);
	expect_ok(&c[1]);
	assert_int_equal(c[2].result, 0);
	assert_int_equal(c[2].resp.status, OVL_WIRE_NOT_FOUND);
	for (int i = 0; i < 3; i++)
		ovl_dpc_call_release(&c[i]);
	node_peer_destroy(&f->peer);
	assert_null(f->peer);
	free(c);
	free(big);
}

static void test_plain(void **state)
{
	round_trip(*state, "hot");
}

static void test_encrypted(void **state)
{
	round_trip(*state, "enc");
}

/* Refusals reach the caller; a closed connection fails what is in flight. */
static void test_refusals_and_close(void **state)
{
	struct fx *f = *state;
	struct ovl_dpc_call c[3];
	uint8_t v[100];

	fill(v, sizeof(v), 1);
	peer_open(f, "enc");
	f->done = 0;
	/* plaintext payload on a slice that requires encryption */
	put_init(f, &c[0], "enc", "r/1", v, sizeof(v));
	c[0].encrypt = false;
	start(f, &c[0]);
	run_until(f, 1);
	assert_int_equal(c[0].result, 0);
	assert_int_equal(c[0].resp.status, OVL_WIRE_BAD_REQUEST);
	/* a slice the node does not serve */
	call_init(f, &c[1], OVL_WIRE_T_STAT, "cold", "r/1");
	start(f, &c[1]);
	run_until(f, 2);
	assert_int_equal(c[1].result, 0);
	assert_true(c[1].resp.status == OVL_WIRE_WRONG_SLICE);
	assert_int_equal(ovl_dpc_call_errno(&c[1]), -EACCES);
	/* closed with a request in flight: it completes, aborted */
	call_init(f, &c[2], OVL_WIRE_T_STAT, "enc", "r/1");
	start(f, &c[2]);
	node_peer_destroy(&f->peer);
	run_until(f, 3);
	assert_int_equal(c[2].result, -ECONNABORTED);
	for (int i = 0; i < 3; i++)
		ovl_dpc_call_release(&c[i]);
	/* nothing listens: the connect fails, and so does the call */
	{
		struct sockaddr_in6 keep = f->addr;

		f->addr.sin6_port = htons(1);
		peer_open(f, "enc");
		f->addr = keep;
		call_init(f, &c[0], OVL_WIRE_T_STAT, "enc", "r/1");
		start(f, &c[0]);
		run_until(f, 4);
		assert_int_equal(c[0].result, -ECONNREFUSED);
		assert_int_equal(node_peer_failed(f->peer), -ECONNREFUSED);
		assert_non_null(strstr(node_peer_error(f->peer), "connect"));
		ovl_dpc_call_release(&c[0]);
	}
}

/* A streamed PUT: the payload written in uneven pieces as the engine
 * makes room (never more than its queue), a call started meanwhile waits
 * for the stream's end, and both arrive whole, plaintext and encrypted. */
struct st_writer {
	struct fx *f;
	struct ovl_dpc_call *call;
	const uint8_t *src;
	size_t len, off;
	unsigned rooms;
};

static void st_room(void *arg)
{
	struct st_writer *w = arg;

	w->rooms++;
}

static void st_pump(struct st_writer *w)
{
	while (w->off < w->len) {
		size_t piece = 7777 + (w->off % 50000);
		uint64_t room = node_peer_room(w->f->peer, w->call);
		ssize_t n;

		assert_true(room <= OVL_DPC_STREAM_QUEUE_BYTES);
		if (piece > w->len - w->off)
			piece = w->len - w->off;
		n = node_peer_write(w->f->peer, w->call, w->src + w->off, piece);
		assert_true(n >= 0);
		assert_true((uint64_t)n <= room);
		if (n == 0)
			return;
		w->off += (size_t)n;
	}
}

static void stream_round(struct fx *f, const char *slice)
{
	size_t len = (3u << 20) + 12345;
	uint8_t *big = malloc(len), small[500];
	struct ovl_dpc_call c[4];
	struct st_writer w = { .f = f, .call = &c[0], .src = big, .len = len };
	uint64_t end = ovl_mono_ms() + RUN_MS;

	fill(big, len, 3);
	fill(small, sizeof(small), 4);
	peer_open(f, slice);
	f->done = 0;
	put_init(f, &c[0], slice, "s/big", big, len);
	c[0].payload = NULL;
	c[0].stream = true;
	c[0].room = st_room;
	c[0].room_arg = &w;
	start(f, &c[0]);
	/* not its turn before the session is up */
	assert_int_equal(node_peer_room(f->peer, &c[0]), 0);
	put_init(f, &c[1], slice, "s/small", small, sizeof(small));
	start(f, &c[1]);
	while (w.off < len) {
		if (ovl_mono_ms() > end)
			fail_msg("stream stuck at %zu of %zu bytes", w.off, len);
		st_pump(&w);
		turn(f);
	}
	assert_true(w.rooms > 1);
	run_until(f, 2);
	expect_ok(&c[0]);
	expect_ok(&c[1]);
	assert_int_equal(c[0].resp.size, len);
	call_init(f, &c[2], OVL_WIRE_T_GET, slice, "s/big");
	call_init(f, &c[3], OVL_WIRE_T_GET, slice, "s/small");
	start(f, &c[2]);
	start(f, &c[3]);
	run_until(f, 4);
	expect_ok(&c[2]);
	expect_ok(&c[3]);
	assert_int_equal(c[2].body_len, len);
	assert_memory_equal(c[2].body, big, len);
	assert_memory_equal(c[3].body, small, sizeof(small));
	for (int i = 0; i < 4; i++)
		ovl_dpc_call_release(&c[i]);
	node_peer_destroy(&f->peer);
	free(big);
}

static void test_stream_plain(void **state)
{
	stream_round(*state, "hot");
}

static void test_stream_encrypted(void **state)
{
	stream_round(*state, "enc");
}

/* A stream cut short: the connection closes and the node stores nothing. */
static void test_stream_abandoned(void **state)
{
	struct fx *f = *state;
	uint8_t buf[100000];
	struct ovl_dpc_call c[2];
	uint64_t end = ovl_mono_ms() + RUN_MS;

	fill(buf, sizeof(buf), 8);
	peer_open(f, "hot");
	f->done = 0;
	put_init(f, &c[0], "hot", "s/cut", buf, sizeof(buf));
	c[0].req.size = 1 << 20; /* more than will ever be written */
	c[0].payload = NULL;
	c[0].payload_len = 1 << 20;
	c[0].stream = true;
	start(f, &c[0]);
	while (node_peer_room(f->peer, &c[0]) == 0) {
		if (ovl_mono_ms() > end)
			fail_msg("no room for the stream");
		turn(f);
	}
	assert_int_equal(node_peer_write(f->peer, &c[0], buf, sizeof(buf)), (ssize_t)sizeof(buf));
	for (int i = 0; i < 10; i++)
		turn(f);
	node_peer_destroy(&f->peer);
	run_until(f, 1);
	assert_int_equal(c[0].result, -ECONNABORTED);
	ovl_dpc_call_release(&c[0]);
	peer_open(f, "hot");
	call_init(f, &c[1], OVL_WIRE_T_STAT, "hot", "s/cut");
	start(f, &c[1]);
	run_until(f, 2);
	assert_int_equal(ovl_dpc_call_errno(&c[1]), -ENOENT);
	ovl_dpc_call_release(&c[1]);
}

int main(void)
{
	test_require_io_uring();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_plain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_encrypted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stream_plain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stream_encrypted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stream_abandoned, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refusals_and_close, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
