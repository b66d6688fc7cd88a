/* Peer links: CURVE servers behind a deny-by-default ZAP handler, on loopback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>
#include <zmq.h>

#include "overlay.h"

#define T_NOW 1700000000ull  /* the fake clock's start, unix seconds */
#define T_REFUSE_MS 400      /* how long a refused peer is given to get anything through */
#define T_READY_MS 5000      /* how long a good handshake may take under ASan */
#define T_IO_MS 5000         /* how long a message between good peers may take */
#define T_SERIAL_A 1
#define T_BUF_BYTES (256 * 1024)

struct keypair {
	uint8_t pk[OVL_KEY_BYTES];
	uint8_t sk[OVL_KEY_BYTES];
};

struct fx {
	void *ctx;
	ovl_keyring_t *kr;
	ovl_zap_t *zap;
	ovl_link_server_t *srv;
	char ep[OVL_LINK_ENDPOINT_MAX_CHARS];
	struct keypair server, a, b;
	_Atomic uint64_t now;
	struct ovl_link_opts opts;
	uint8_t *buf;
	/* everything a test opens, so that a failed test still closes it all
	 * (zmq_ctx_term waits for every socket) */
	ovl_link_client_t *clients[16];
	ovl_link_server_t *servers[4];
	void *raw[4];
};

static uint64_t fake_clock(void *arg)
{
	struct fx *f = arg;

	return atomic_load(&f->now);
}

static void keypair(struct keypair *kp)
{
	crypto_box_keypair(kp->pk, kp->sk);
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static ovl_link_server_t *server(struct fx *f, const char *endpoint,
				 const struct ovl_link_opts *opts, char *ep, size_t eplen)
{
	struct ovl_link_server_cfg cfg = {
		.endpoint = endpoint,
		.domain = OVL_LINK_DOMAIN_PEER,
		.secret_key = f->server.sk,
		.opts = opts,
	};
	ovl_link_server_t *srv = NULL;
	char err[256] = "";
	int rc = ovl_link_server_new(&srv, f->zap, &cfg, err, sizeof(err));

	if (rc < 0)
		fail_msg("%s", err);
	for (size_t i = 0; i < sizeof(f->servers) / sizeof(f->servers[0]); i++) {
		if (!f->servers[i]) {
			f->servers[i] = srv;
			break;
		}
	}
	assert_int_equal(ovl_link_server_endpoint(srv, ep, eplen), 0);
	return srv;
}

static ovl_link_client_t *client_opts(struct fx *f, const uint8_t *sk, const uint8_t *server_pk,
				      const struct ovl_link_opts *opts)
{
	struct ovl_link_client_cfg cfg = {
		.endpoint = f->ep,
		.server_key = server_pk,
		.secret_key = sk,
		.opts = opts,
	};
	ovl_link_client_t *cl = NULL;
	char err[256] = "";
	int rc = ovl_link_client_new(&cl, f->ctx, &cfg, err, sizeof(err));

	if (rc < 0)
		fail_msg("%s", err);
	for (size_t i = 0; i < sizeof(f->clients) / sizeof(f->clients[0]); i++) {
		if (!f->clients[i]) {
			f->clients[i] = cl;
			return cl;
		}
	}
	fail_msg("too many clients in one test");
	return NULL;
}

/* Destroy a client made by client() and forget it. */
static void drop(struct fx *f, ovl_link_client_t **clp)
{
	for (size_t i = 0; i < sizeof(f->clients) / sizeof(f->clients[0]); i++) {
		if (f->clients[i] == *clp)
			f->clients[i] = NULL;
	}
	ovl_link_client_destroy(clp);
	assert_null(*clp);
}

/* A plain zmq socket (linger 0) that teardown closes. */
static void *raw_socket(struct fx *f, int type)
{
	void *sock = zmq_socket(f->ctx, type);
	int linger = 0;

	assert_non_null(sock);
	zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof(linger));
	for (size_t i = 0; i < sizeof(f->raw) / sizeof(f->raw[0]); i++) {
		if (!f->raw[i]) {
			f->raw[i] = sock;
			return sock;
		}
	}
	fail_msg("too many raw sockets in one test");
	return NULL;
}

/* Destroy a server made by server() and forget it. */
static void drop_server(struct fx *f, ovl_link_server_t **srvp)
{
	for (size_t i = 0; i < sizeof(f->servers) / sizeof(f->servers[0]); i++) {
		if (f->servers[i] == *srvp)
			f->servers[i] = NULL;
	}
	ovl_link_server_destroy(srvp);
}

static ovl_link_client_t *client(struct fx *f, const uint8_t *sk, const uint8_t *server_pk)
{
	return client_opts(f, sk, server_pk, &f->opts);
}

static void ready(ovl_link_client_t *cl)
{
	char err[256] = "";
	int rc = ovl_link_client_wait_ready(cl, T_READY_MS, err, sizeof(err));

	if (rc != 0)
		fail_msg("client not ready: %s", err);
}

/* One request from `cl`, checked at the server, and one answer back. */
static void roundtrip(struct fx *f, ovl_link_server_t *srv, ovl_link_client_t *cl,
		      const uint8_t *expect_key, const char *msg)
{
	struct ovl_link_peer from;
	char reply[64];
	int n;

	assert_int_equal(ovl_link_client_send(cl, msg, strlen(msg), T_IO_MS), 0);
	n = ovl_link_server_recv(srv, &from, f->buf, T_BUF_BYTES, T_IO_MS);
	assert_int_equal(n, (int)strlen(msg));
	assert_memory_equal(f->buf, msg, strlen(msg));
	assert_memory_equal(from.key, expect_key, OVL_KEY_BYTES);
	snprintf(reply, sizeof(reply), "re:%s", msg);
	assert_int_equal(ovl_link_server_send(srv, &from, reply, strlen(reply), T_IO_MS), 0);
	n = ovl_link_client_recv(cl, f->buf, T_BUF_BYTES, T_IO_MS);
	assert_int_equal(n, (int)strlen(reply));
	assert_memory_equal(f->buf, reply, strlen(reply));
}

/* Waits up to 6 x T_READY_MS until the ZAP handler's counter at `offset`
 * reaches `target` (a refusal is counted a little after the client gives up,
 * and a reconnecting client's next attempt can be seconds away under load,
 * and many more under qemu-user emulation;
 * the counter only grows, so a long deadline costs nothing when it passes). */
static void zap_wait_count(struct fx *f, size_t offset, uint64_t target)
{
	int64_t deadline = mono_ms() + 6 * T_READY_MS;
	struct ovl_zap_stats zs;
	uint64_t v = 0;

	while (mono_ms() < deadline) {
		struct timespec ts = { 0, 5 * 1000000L };

		ovl_zap_stats_get(f->zap, &zs);
		memcpy(&v, (const char *)&zs + offset, sizeof(v));
		if (v >= target)
			return;
		nanosleep(&ts, NULL);
	}
	fail_msg("ZAP counter at offset %zu stayed at %llu, expected %llu", offset,
		 (unsigned long long)v, (unsigned long long)target);
}

/* The server gets nothing within T_REFUSE_MS. */
static void server_hears_nothing(struct fx *f, ovl_link_server_t *srv)
{
	struct ovl_link_peer from;

	assert_int_equal(ovl_link_server_recv(srv, &from, f->buf, T_BUF_BYTES, T_REFUSE_MS),
			 -ETIMEDOUT);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[256] = "";

	assert_non_null(f);
	assert_true(sodium_init() >= 0);
	if (!zmq_has("curve")) {
		print_message("libzmq has no CURVE\n");
		return -1;
	}
	f->buf = malloc(T_BUF_BYTES);
	atomic_store(&f->now, T_NOW);
	f->opts = ovl_link_opts_default;
	f->opts.linger_ms = 0;
	keypair(&f->server);
	keypair(&f->a);
	keypair(&f->b);
	f->ctx = zmq_ctx_new();
	f->kr = ovl_keyring_new();
	assert_non_null(f->ctx);
	assert_non_null(f->kr);
	if (ovl_zap_new(&f->zap, f->ctx, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	ovl_zap_clock_set(f->zap, fake_clock, f);
	assert_int_equal(ovl_zap_domain_set(f->zap, OVL_LINK_DOMAIN_PEER, f->kr), 0);
	assert_int_equal(ovl_keyring_add(f->kr, f->a.pk, T_NOW + 3600, T_SERIAL_A), 0);
	f->srv = server(f, "tcp://127.0.0.1:*", &f->opts, f->ep, sizeof(f->ep));
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	for (size_t i = 0; i < sizeof(f->clients) / sizeof(f->clients[0]); i++)
		ovl_link_client_destroy(&f->clients[i]);
	for (size_t i = 0; i < sizeof(f->servers) / sizeof(f->servers[0]); i++)
		ovl_link_server_destroy(&f->servers[i]);
	f->srv = NULL;
	for (size_t i = 0; i < sizeof(f->raw) / sizeof(f->raw[0]); i++) {
		if (f->raw[i])
			zmq_close(f->raw[i]);
	}
	ovl_zap_destroy(&f->zap);
	ovl_keyring_destroy(&f->kr);
	assert_null(f->zap);
	zmq_ctx_term(f->ctx);
	free(f->buf);
	free(f);
	return 0;
}

/* ---- keyring (no network) ---------------------------------------------- */

struct hook_state {
	uint8_t revoked[OVL_KEY_BYTES]; /* a one-key revocation list */
	uint8_t enrol[OVL_KEY_BYTES];   /* a key admitted though not in the ring */
	int calls;
};

static int hook(void *arg, const uint8_t key[OVL_KEY_BYTES], const struct ovl_keyring_entry *e,
		uint64_t now, int verdict)
{
	struct hook_state *h = arg;

	h->calls++;
	if (memcmp(key, h->revoked, OVL_KEY_BYTES) == 0)
		return -EKEYREVOKED;
	if (!e && memcmp(key, h->enrol, OVL_KEY_BYTES) == 0)
		return 0;
	return verdict;
}

static void test_keyring(void **state)
{
	ovl_keyring_t *kr = ovl_keyring_new();
	struct ovl_keyring_entry e;
	struct hook_state h = { .calls = 0 };
	uint8_t k[5][OVL_KEY_BYTES];

	for (int i = 0; i < 5; i++)
		randombytes_buf(k[i], OVL_KEY_BYTES);
	assert_int_equal(ovl_keyring_check(kr, k[0], 100), -ENOENT);
	assert_int_equal(ovl_keyring_add(kr, k[0], 200, 7), 0);
	assert_int_equal(ovl_keyring_add(kr, k[1], 300, 7), 0);
	assert_int_equal(ovl_keyring_add(kr, k[2], OVL_KEYRING_NO_EXPIRY, 8), 0);
	assert_int_equal(ovl_keyring_count(kr), 3);
	/* not_after is inclusive */
	assert_int_equal(ovl_keyring_check(kr, k[0], 200), 0);
	assert_int_equal(ovl_keyring_check(kr, k[0], 201), -EKEYEXPIRED);
	assert_int_equal(ovl_keyring_check(kr, k[2], UINT64_MAX), 0);
	/* renewal replaces expiry and serial */
	assert_int_equal(ovl_keyring_add(kr, k[0], 500, 9), 0);
	assert_int_equal(ovl_keyring_count(kr), 3);
	assert_int_equal(ovl_keyring_lookup(kr, k[0], &e), 0);
	assert_int_equal(e.not_after, 500);
	assert_int_equal(e.serial, 9);
	assert_int_equal(ovl_keyring_check(kr, k[0], 201), 0);
	/* revoking serial 7 now removes only k[1] */
	assert_int_equal(ovl_keyring_revoke_tag(kr, 7), 1);
	assert_int_equal(ovl_keyring_check(kr, k[1], 100), -ENOENT);
	assert_int_equal(ovl_keyring_revoke_tag(kr, 7), 0);
	assert_int_equal(ovl_keyring_remove(kr, k[2]), 0);
	assert_int_equal(ovl_keyring_remove(kr, k[2]), -ENOENT);
	assert_int_equal(ovl_keyring_lookup(kr, k[2], &e), -ENOENT);
	/* expire */
	assert_int_equal(ovl_keyring_add(kr, k[3], 50, 1), 0);
	assert_int_equal(ovl_keyring_expire(kr, 100), 1);
	assert_int_equal(ovl_keyring_count(kr), 1);
	/* the hook vetoes and admits */
	memcpy(h.revoked, k[0], OVL_KEY_BYTES);
	memcpy(h.enrol, k[4], OVL_KEY_BYTES);
	ovl_keyring_hook_set(kr, hook, &h);
	assert_int_equal(ovl_keyring_check(kr, k[0], 100), -EKEYREVOKED);
	assert_int_equal(ovl_keyring_check(kr, k[4], 100), 0);
	assert_int_equal(ovl_keyring_check(kr, k[3], 100), -ENOENT);
	assert_int_equal(h.calls, 3);
	ovl_keyring_hook_set(kr, NULL, NULL);
	assert_int_equal(ovl_keyring_check(kr, k[0], 100), 0);
	assert_int_equal(ovl_keyring_check(kr, k[4], 100), -ENOENT);
	/* many keys stay sorted and findable */
	for (int i = 0; i < 2000; i++) {
		uint8_t key[OVL_KEY_BYTES];

		memset(key, 0, sizeof(key));
		key[0] = (uint8_t)(i * 37);
		key[1] = (uint8_t)(i >> 3);
		key[31] = (uint8_t)i;
		assert_int_equal(ovl_keyring_add(kr, key, 1000, 100 + (uint64_t)i % 2), 0);
	}
	assert_int_equal(ovl_keyring_count(kr), 2001);
	assert_int_equal(ovl_keyring_revoke_tag(kr, 101), 1000);
	assert_int_equal(ovl_keyring_check(kr, k[0], 100), 0);
	ovl_keyring_destroy(&kr);
	assert_null(kr);
	ovl_keyring_destroy(&kr);
}

static void test_opts_check(void **state)
{
	struct ovl_link_opts o = ovl_link_opts_default;
	char err[256];

	assert_int_equal(ovl_link_opts_check(&o, err, sizeof(err)), 0);
	o.linger_ms = -1;
	assert_int_equal(ovl_link_opts_check(&o, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "'linger_ms'"));
	o = ovl_link_opts_default;
	o.rcvhwm_msgs = 0;
	assert_int_equal(ovl_link_opts_check(&o, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "'rcvhwm_msgs'"));
	o = ovl_link_opts_default;
	o.max_msg_bytes = 0;
	assert_int_equal(ovl_link_opts_check(&o, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "'max_msg_bytes'"));
	o = ovl_link_opts_default;
	o.max_recv_bytes = o.max_msg_bytes + 1; /* receives more than it may send: no */
	assert_int_equal(ovl_link_opts_check(&o, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "'max_recv_bytes'"));
	o.max_recv_bytes = 4096;
	assert_int_equal(ovl_link_opts_check(&o, err, sizeof(err)), 0);
	o = ovl_link_opts_default;
	o.heartbeat_timeout_ms = o.heartbeat_ivl_ms - 1;
	assert_int_equal(ovl_link_opts_check(&o, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "'heartbeat_timeout_ms'"));
	/* heartbeats off is allowed (and then the timeout is not compared) */
	o = ovl_link_opts_default;
	o.heartbeat_ivl_ms = 0;
	o.heartbeat_ttl_ms = 0;
	assert_int_equal(ovl_link_opts_check(&o, err, sizeof(err)), 0);
	o.heartbeat_ivl_ms = 50;
	assert_int_equal(ovl_link_opts_check(&o, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "'heartbeat_ivl_ms' = 50 is out of range 0 (off) or 100..600000"));
}

/* ---- links --------------------------------------------------------------- */

static void test_allowed_roundtrip(void **state)
{
	struct fx *f = *state;
	ovl_link_client_t *cl = client(f, f->a.sk, f->server.pk);
	struct ovl_link_server_stats ss;
	struct ovl_zap_stats zs;
	char msg[32];

	ready(cl);
	for (int i = 0; i < 10; i++) {
		snprintf(msg, sizeof(msg), "hello %d", i);
		roundtrip(f, f->srv, cl, f->a.pk, msg);
	}
	/* an empty payload is a message too */
	{
		struct ovl_link_peer from;

		assert_int_equal(ovl_link_client_send(cl, "", 0, T_IO_MS), 0);
		assert_int_equal(ovl_link_server_recv(f->srv, &from, f->buf, T_BUF_BYTES, T_IO_MS), 0);
		assert_memory_equal(from.key, f->a.pk, OVL_KEY_BYTES);
	}
	ovl_link_server_stats_get(f->srv, &ss);
	assert_int_equal(ss.received, 11);
	assert_int_equal(ss.sent, 10);
	assert_int_equal(ss.dropped_unauthorised, 0);
	ovl_zap_stats_get(f->zap, &zs);
	assert_int_equal(zs.allowed, 1);
	drop(f, &cl);
}

static void test_ipv6_loopback(void **state)
{
	struct fx *f = *state;
	struct ovl_link_server_cfg cfg = {
		.endpoint = "tcp://[::1]:*",
		.domain = OVL_LINK_DOMAIN_PEER,
		.secret_key = f->server.sk,
		.opts = &f->opts,
	};
	ovl_link_server_t *srv6 = NULL;
	ovl_link_client_t *cl = NULL;
	char err[256] = "";
	int rc = ovl_link_server_new(&srv6, f->zap, &cfg, err, sizeof(err));

	if (rc == -EADDRNOTAVAIL || rc == -EAFNOSUPPORT) {
		print_message("no IPv6 loopback here: %s\n", err);
		skip();
	}
	if (rc < 0)
		fail_msg("%s", err);
	f->servers[1] = srv6;
	assert_int_equal(ovl_link_server_endpoint(srv6, f->ep, sizeof(f->ep)), 0);
	assert_non_null(strstr(f->ep, "tcp://[::1]:"));
	cl = client(f, f->a.sk, f->server.pk);
	ready(cl);
	roundtrip(f, srv6, cl, f->a.pk, "over ipv6");
	drop(f, &cl);
	drop_server(f, &srv6);
}

static void test_unknown_key_refused(void **state)
{
	struct fx *f = *state;
	ovl_link_client_t *cl = NULL;
	struct ovl_zap_stats before, after;
	struct ovl_link_server_stats ss;
	void *raw = NULL;
	char err[256] = "";
	int imm = 0;

	/* counted before the client exists: its handshake starts at once, on
	 * libzmq's I/O thread, and may be refused before this line runs */
	ovl_zap_stats_get(f->zap, &before);
	cl = client(f, f->b.sk, f->server.pk);
	assert_int_equal(ovl_link_client_wait_ready(cl, T_READY_MS, err, sizeof(err)), -EACCES);
	assert_non_null(strstr(err, "refused our key"));
	assert_int_equal(ovl_link_client_send(cl, "let me in", 9, T_REFUSE_MS), -ETIMEDOUT);
	assert_int_equal(ovl_link_client_recv(cl, f->buf, T_BUF_BYTES, T_REFUSE_MS), -ETIMEDOUT);

	/* a raw CURVE client that queues before the handshake gets nothing through either */
	raw = raw_socket(f, ZMQ_DEALER);
	zmq_setsockopt(raw, ZMQ_IMMEDIATE, &imm, sizeof(imm));
	zmq_setsockopt(raw, ZMQ_CURVE_SERVERKEY, f->server.pk, OVL_KEY_BYTES);
	zmq_setsockopt(raw, ZMQ_CURVE_PUBLICKEY, f->b.pk, OVL_KEY_BYTES);
	zmq_setsockopt(raw, ZMQ_CURVE_SECRETKEY, f->b.sk, OVL_KEY_BYTES);
	assert_int_equal(zmq_connect(raw, f->ep), 0);
	assert_int_equal(zmq_send(raw, "queued", 6, 0), 6);
	server_hears_nothing(f, f->srv);

	zap_wait_count(f, offsetof(struct ovl_zap_stats, denied), before.denied + 2);
	ovl_zap_stats_get(f->zap, &after);
	assert_int_equal(after.allowed, before.allowed);
	ovl_link_server_stats_get(f->srv, &ss);
	assert_int_equal(ss.received, 0);
	drop(f, &cl);
}

static void test_wrong_server_key(void **state)
{
	struct fx *f = *state;
	struct keypair impostor;
	ovl_link_client_t *cl = NULL;
	struct ovl_zap_stats before, after;
	char err[256] = "";
	int rc;

	keypair(&impostor);
	ovl_zap_stats_get(f->zap, &before);
	/* an allowed client that expects another server's key */
	cl = client(f, f->a.sk, impostor.pk);
	rc = ovl_link_client_wait_ready(cl, 2000, err, sizeof(err));
	assert_int_equal(rc, -ECONNRESET);
	assert_int_equal(ovl_link_client_send(cl, "hello?", 6, T_REFUSE_MS), -ETIMEDOUT);
	server_hears_nothing(f, f->srv);
	/* the server never got far enough to ask ZAP: the HELLO did not decrypt */
	ovl_zap_stats_get(f->zap, &after);
	assert_int_equal(after.requests, before.requests);
	drop(f, &cl);
}

static void test_remove_and_revoke(void **state)
{
	struct fx *f = *state;
	ovl_link_client_t *old = client(f, f->a.sk, f->server.pk);
	ovl_link_client_t *cl = NULL;
	struct ovl_link_server_stats ss;
	char err[256] = "";

	ready(old);
	roundtrip(f, f->srv, old, f->a.pk, "before");
	assert_int_equal(ovl_keyring_remove(f->kr, f->a.pk), 0);

	/* a new connection of the removed key is refused */
	cl = client(f, f->a.sk, f->server.pk);
	assert_int_equal(ovl_link_client_wait_ready(cl, T_READY_MS, err, sizeof(err)), -EACCES);
	assert_int_equal(ovl_link_client_send(cl, "again", 5, T_REFUSE_MS), -ETIMEDOUT);
	drop(f, &cl);

	/* the old connection stays open (libzmq cannot close one ROUTER peer),
	 * but what it says is dropped */
	assert_int_equal(ovl_link_client_send(old, "after", 5, T_IO_MS), 0);
	server_hears_nothing(f, f->srv);
	ovl_link_server_stats_get(f->srv, &ss);
	assert_int_equal(ss.dropped_unauthorised, 1);
	drop(f, &old);

	/* revoke by certificate serial: both keys it vouched for go */
	assert_int_equal(ovl_keyring_add(f->kr, f->a.pk, T_NOW + 60, 42), 0);
	assert_int_equal(ovl_keyring_add(f->kr, f->b.pk, T_NOW + 60, 42), 0);
	cl = client(f, f->b.sk, f->server.pk);
	ready(cl);
	roundtrip(f, f->srv, cl, f->b.pk, "serial 42");
	drop(f, &cl);
	assert_int_equal(ovl_keyring_revoke_tag(f->kr, 42), 2);
	cl = client(f, f->b.sk, f->server.pk);
	assert_int_equal(ovl_link_client_wait_ready(cl, T_READY_MS, err, sizeof(err)), -EACCES);
	drop(f, &cl);
	cl = client(f, f->a.sk, f->server.pk);
	assert_int_equal(ovl_link_client_wait_ready(cl, T_READY_MS, err, sizeof(err)), -EACCES);
	server_hears_nothing(f, f->srv);
	drop(f, &cl);
}

static int veto_b(void *arg, const uint8_t key[OVL_KEY_BYTES], const struct ovl_keyring_entry *e,
		  uint64_t now, int verdict)
{
	struct fx *f = arg;

	return memcmp(key, f->b.pk, OVL_KEY_BYTES) == 0 ? -EKEYREVOKED : verdict;
}

static void test_hook_revocation_list(void **state)
{
	struct fx *f = *state;
	ovl_link_client_t *cl = NULL;
	char err[256] = "";

	assert_int_equal(ovl_keyring_add(f->kr, f->b.pk, T_NOW + 60, 5), 0);
	ovl_keyring_hook_set(f->kr, veto_b, f);
	cl = client(f, f->b.sk, f->server.pk);
	assert_int_equal(ovl_link_client_wait_ready(cl, T_READY_MS, err, sizeof(err)), -EACCES);
	drop(f, &cl);
	cl = client(f, f->a.sk, f->server.pk);
	ready(cl);
	roundtrip(f, f->srv, cl, f->a.pk, "not on the list");
	drop(f, &cl);
	ovl_keyring_hook_set(f->kr, NULL, NULL);
}

static void test_expired_key_refused(void **state)
{
	struct fx *f = *state;
	struct keypair c, d;
	ovl_link_client_t *cl = NULL, *old = NULL;
	char err[256] = "";

	keypair(&c);
	keypair(&d);
	/* expired before it ever connects */
	assert_int_equal(ovl_keyring_add(f->kr, c.pk, T_NOW - 1, 3), 0);
	cl = client(f, c.sk, f->server.pk);
	assert_int_equal(ovl_link_client_wait_ready(cl, T_READY_MS, err, sizeof(err)), -EACCES);
	server_hears_nothing(f, f->srv);
	drop(f, &cl);

	/* valid for ten more seconds, then the clock moves on */
	assert_int_equal(ovl_keyring_add(f->kr, d.pk, T_NOW + 10, 4), 0);
	old = client(f, d.sk, f->server.pk);
	ready(old);
	roundtrip(f, f->srv, old, d.pk, "still valid");
	atomic_store(&f->now, T_NOW + 11);
	cl = client(f, d.sk, f->server.pk);
	assert_int_equal(ovl_link_client_wait_ready(cl, T_READY_MS, err, sizeof(err)), -EACCES);
	drop(f, &cl);
	assert_int_equal(ovl_link_client_send(old, "expired", 7, T_IO_MS), 0);
	server_hears_nothing(f, f->srv);
	/* a renewed certificate brings it back */
	assert_int_equal(ovl_keyring_add(f->kr, d.pk, T_NOW + 3600, 5), 0);
	roundtrip(f, f->srv, old, d.pk, "renewed");
	drop(f, &old);
}

static void test_oversize_dropped(void **state)
{
	struct fx *f = *state;
	struct ovl_link_opts small = f->opts, big = f->opts;
	ovl_link_server_t *srv = NULL;
	ovl_link_client_t *hog = NULL, *good = NULL;
	struct ovl_link_server_stats ss;
	struct ovl_link_peer from;
	char ep[OVL_LINK_ENDPOINT_MAX_CHARS];

	small.max_msg_bytes = 1024;
	big.max_msg_bytes = 1 << 20;
	srv = server(f, "tcp://127.0.0.1:*", &small, ep, sizeof(ep));
	memcpy(f->ep, ep, sizeof(ep));

	/* our own helpers refuse to send what the other side would drop */
	good = client_opts(f, f->a.sk, f->server.pk, &small);
	assert_int_equal(ovl_link_client_send(good, f->buf, 1025, T_IO_MS), -EMSGSIZE);
	ready(good);

	/* exactly the limit passes: the CURVE overhead is accounted for */
	memset(f->buf, 'x', 1024);
	assert_int_equal(ovl_link_client_send(good, f->buf, 1024, T_IO_MS), 0);
	assert_int_equal(ovl_link_server_recv(srv, &from, f->buf, T_BUF_BYTES, T_IO_MS), 1024);

	/* a client with a larger limit sends one byte more: libzmq closes its connection */
	hog = client_opts(f, f->a.sk, f->server.pk, &big);
	ready(hog);
	memset(f->buf, 'x', 65536);
	assert_int_equal(ovl_link_client_send(hog, f->buf, 1025, T_IO_MS), 0);
	server_hears_nothing(f, srv);
	assert_int_equal(ovl_link_client_send(hog, f->buf, 65536, T_IO_MS), 0);
	server_hears_nothing(f, srv);
	/* the hog reconnects by itself and may talk sense again */
	assert_int_equal(ovl_link_client_send(hog, "sorry", 5, T_IO_MS), 0);
	assert_int_equal(ovl_link_server_recv(srv, &from, f->buf, T_BUF_BYTES, T_IO_MS), 5);
	assert_memory_equal(f->buf, "sorry", 5);

	/* and the server keeps serving the others */
	roundtrip(f, srv, good, f->a.pk, "still here");
	assert_int_equal(ovl_link_server_send(srv, &(struct ovl_link_peer){ .rid_len = 1 }, f->buf,
					      1025, T_IO_MS), -EMSGSIZE);

	/* a payload larger than the caller's buffer is dropped, and the sender named */
	assert_int_equal(ovl_link_client_send(good, f->buf, 1000, T_IO_MS), 0);
	assert_int_equal(ovl_link_server_recv(srv, &from, f->buf, 100, T_IO_MS), -EMSGSIZE);
	assert_memory_equal(from.key, f->a.pk, OVL_KEY_BYTES);
	ovl_link_server_stats_get(srv, &ss);
	assert_int_equal(ss.dropped_too_big, 1);
	roundtrip(f, srv, good, f->a.pk, "after the big one");

	drop(f, &hog);
	drop(f, &good);
	drop_server(f, &srv);
}

static void test_timeouts(void **state)
{
	struct fx *f = *state;
	ovl_link_client_t *cl = client(f, f->a.sk, f->server.pk);
	struct ovl_link_peer from, nobody = { .rid = { 0, 1, 2, 3, 4 }, .rid_len = 5 };
	int64_t t0;
	long dt;

	ready(cl);
	t0 = mono_ms();
	assert_int_equal(ovl_link_server_recv(f->srv, &from, f->buf, T_BUF_BYTES, 200), -ETIMEDOUT);
	dt = (long)(mono_ms() - t0);
	assert_true(dt >= 190 && dt < 2000);
	t0 = mono_ms();
	assert_int_equal(ovl_link_client_recv(cl, f->buf, T_BUF_BYTES, 200), -ETIMEDOUT);
	dt = (long)(mono_ms() - t0);
	assert_true(dt >= 190 && dt < 2000);
	assert_int_equal(ovl_link_server_recv(f->srv, &from, f->buf, T_BUF_BYTES, 0), -ETIMEDOUT);
	assert_int_equal(ovl_link_client_recv(cl, f->buf, T_BUF_BYTES, 0), -ETIMEDOUT);
	assert_int_equal(ovl_link_client_recv(cl, f->buf, T_BUF_BYTES, -1), -EINVAL);
	assert_int_equal(ovl_link_server_recv(f->srv, &from, f->buf, T_BUF_BYTES, -1), -EINVAL);
	/* a connection that does not exist */
	assert_int_equal(ovl_link_server_send(f->srv, &nobody, "x", 1, 200), -EHOSTUNREACH);
	drop(f, &cl);
}

/* Sends one raw ZAP request and returns the status frame ("200"/"400"). */
static void zap_ask(void *ctx, const char *domain, const char *mechanism, const uint8_t *cred,
		    size_t credlen, char status[4], char user_id[OVL_ZAP_USER_ID_CHARS + 1])
{
	void *req = zmq_socket(ctx, ZMQ_REQ);
	const char *frames[] = { "1.0", "7", domain, "127.0.0.1", "", mechanism };
	int more = 1, nf = 0, linger = 0, to = 5000;

	zmq_setsockopt(req, ZMQ_LINGER, &linger, sizeof(linger));
	zmq_setsockopt(req, ZMQ_RCVTIMEO, &to, sizeof(to));
	assert_int_equal(zmq_connect(req, OVL_ZAP_ENDPOINT), 0);
	for (int i = 0; i < 6; i++)
		assert_true(zmq_send(req, frames[i], strlen(frames[i]),
				     i < 5 || cred ? ZMQ_SNDMORE : 0) >= 0);
	if (cred)
		assert_true(zmq_send(req, cred, credlen, 0) >= 0);
	status[0] = user_id[0] = '\0';
	while (more) {
		char part[128];
		int n = zmq_recv(req, part, sizeof(part) - 1, 0);
		size_t len = sizeof(more);

		assert_true(n >= 0);
		part[n < (int)sizeof(part) ? n : (int)sizeof(part) - 1] = '\0';
		if (nf == 1)
			assert_string_equal(part, "7"); /* request id echoed */
		if (nf == 2)
			snprintf(status, 4, "%.3s", part);
		if (nf == 4)
			snprintf(user_id, OVL_ZAP_USER_ID_CHARS + 1, "%.64s", part);
		zmq_getsockopt(req, ZMQ_RCVMORE, &more, &len);
		nf++;
	}
	assert_int_equal(nf, 6);
	zmq_close(req);
}

static void test_null_mechanism_refused(void **state)
{
	struct fx *f = *state;
	struct ovl_zap_stats before, after;
	char status[4], uid[OVL_ZAP_USER_ID_CHARS + 1], hex[OVL_ZAP_USER_ID_CHARS + 1];
	void *plain = NULL, *nullsrv = NULL;
	int to = T_REFUSE_MS;
	char ep[OVL_LINK_ENDPOINT_MAX_CHARS], buf[16];
	size_t eplen = sizeof(ep);

	/* a plain client against our CURVE server: the mechanisms do not match */
	plain = raw_socket(f, ZMQ_DEALER);
	assert_int_equal(zmq_connect(plain, f->ep), 0);
	assert_int_equal(zmq_send(plain, "plain", 5, 0), 5);
	server_hears_nothing(f, f->srv);

	/* a NULL-mechanism server in the same context, with a ZAP domain: ZAP says no */
	ovl_zap_stats_get(f->zap, &before);
	nullsrv = raw_socket(f, ZMQ_ROUTER);
	zmq_setsockopt(nullsrv, ZMQ_RCVTIMEO, &to, sizeof(to));
	zmq_setsockopt(nullsrv, ZMQ_ZAP_DOMAIN, OVL_LINK_DOMAIN_PEER, strlen(OVL_LINK_DOMAIN_PEER));
	assert_int_equal(zmq_bind(nullsrv, "tcp://127.0.0.1:*"), 0);
	zmq_getsockopt(nullsrv, ZMQ_LAST_ENDPOINT, ep, &eplen);
	zmq_disconnect(plain, f->ep);
	assert_int_equal(zmq_connect(plain, ep), 0);
	assert_int_equal(zmq_recv(nullsrv, buf, sizeof(buf), 0), -1);
	zap_wait_count(f, offsetof(struct ovl_zap_stats, denied_mechanism),
		       before.denied_mechanism + 1);

	/* the handler itself, request by request */
	zap_ask(f->ctx, OVL_LINK_DOMAIN_PEER, "NULL", NULL, 0, status, uid);
	assert_string_equal(status, "400");
	assert_string_equal(uid, "");
	zap_ask(f->ctx, OVL_LINK_DOMAIN_PEER, "PLAIN", (const uint8_t *)"admin", 5, status, uid);
	assert_string_equal(status, "400");
	zap_ask(f->ctx, OVL_LINK_DOMAIN_PEER, "GSSAPI", (const uint8_t *)"x", 1, status, uid);
	assert_string_equal(status, "400");
	zap_ask(f->ctx, OVL_LINK_DOMAIN_ADMIN, "CURVE", f->a.pk, OVL_KEY_BYTES, status, uid);
	assert_string_equal(status, "400"); /* allowed key, but in a domain nobody registered */
	zap_ask(f->ctx, "", "CURVE", f->a.pk, OVL_KEY_BYTES, status, uid);
	assert_string_equal(status, "400");
	zap_ask(f->ctx, OVL_LINK_DOMAIN_PEER, "CURVE", f->b.pk, OVL_KEY_BYTES, status, uid);
	assert_string_equal(status, "400");
	zap_ask(f->ctx, OVL_LINK_DOMAIN_PEER, "CURVE", f->a.pk, 31, status, uid);
	assert_string_equal(status, "400");
	zap_ask(f->ctx, OVL_LINK_DOMAIN_PEER, "CURVE", f->a.pk, OVL_KEY_BYTES, status, uid);
	assert_string_equal(status, "200");
	for (int i = 0; i < OVL_KEY_BYTES; i++)
		snprintf(hex + 2 * i, 3, "%02x", f->a.pk[i]);
	assert_string_equal(uid, hex);
	ovl_zap_stats_get(f->zap, &after);
	assert_true(after.denied_domain >= before.denied_domain + 2);
	assert_true(after.malformed >= before.malformed + 1);
}

static void test_server_without_zap_refused(void **state)
{
	struct fx *f = *state;
	struct ovl_link_server_cfg cfg = {
		.endpoint = "tcp://127.0.0.1:*",
		.domain = OVL_LINK_DOMAIN_PEER,
		.secret_key = f->server.sk,
	};
	ovl_link_server_t *srv = NULL;
	ovl_zap_t *zap2 = NULL;
	void *ctx2 = NULL;
	char err[256] = "";

	assert_int_equal(ovl_link_server_new(&srv, NULL, &cfg, err, sizeof(err)), -EPERM);
	assert_null(srv);
	assert_string_equal(err, "cannot bind 'tcp://127.0.0.1:*': no ZAP handler in this context; "
				 "refusing to accept unauthenticated clients");

	/* one handler per context */
	assert_int_equal(ovl_zap_new(&zap2, f->ctx, err, sizeof(err)), -EADDRINUSE);
	assert_null(zap2);

	/* a domain without a keyring would refuse everyone: say so at once */
	cfg.domain = OVL_LINK_DOMAIN_ADMIN;
	assert_int_equal(ovl_link_server_new(&srv, f->zap, &cfg, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "'shelf.admin' has no keyring"));
	cfg.domain = OVL_LINK_DOMAIN_PEER;

	/* a handler whose context is shutting down is no handler */
	ctx2 = zmq_ctx_new();
	assert_int_equal(ovl_zap_new(&zap2, ctx2, err, sizeof(err)), 0);
	assert_int_equal(ovl_zap_domain_set(zap2, OVL_LINK_DOMAIN_PEER, f->kr), 0);
	assert_true(ovl_zap_running(zap2));
	zmq_ctx_shutdown(ctx2);
	for (int i = 0; i < 200 && ovl_zap_running(zap2); i++) {
		struct timespec ts = { 0, 10 * 1000000L };

		nanosleep(&ts, NULL);
	}
	assert_false(ovl_zap_running(zap2));
	assert_int_equal(ovl_link_server_new(&srv, zap2, &cfg, err, sizeof(err)), -EPERM);
	assert_non_null(strstr(err, "no ZAP handler in this context"));
	ovl_zap_destroy(&zap2);
	zmq_ctx_term(ctx2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keyring),
		cmocka_unit_test(test_opts_check),
		cmocka_unit_test_setup_teardown(test_allowed_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ipv6_loopback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_key_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_server_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remove_and_revoke, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hook_revocation_list, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expired_key_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oversize_dropped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeouts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_null_mechanism_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_server_without_zap_refused, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
