/*
 * ovl_dpc, the client side of the data plane, as an engine with no I/O: a
 * node played in memory with ovl_wire's server side answers it, so that
 * pipelining, answers out of order, payloads in pieces of any size and every
 * refusal are checked byte for byte. (tests/unit/test_peer.c runs it against
 * the real node; tests/unit/test_dp.c keeps a minimal client of its own.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "overlay.h"

#define WIRE_MAX (4u << 20)

struct fx {
	struct ovl_id *ca, *broker, *node, *client;
	uint8_t broker_cert[OVL_CERT_MAX_BYTES], node_cert[OVL_CERT_MAX_BYTES];
	uint8_t client_cert[OVL_CERT_MAX_BYTES];
	int broker_len, node_len, client_len;
	ovl_keyring_t *kr_s, *kr_c;
	struct ovl_peers *peers_s, *peers_c;
	uint64_t now;
	unsigned seed;
	/* the node's side */
	struct ovl_wire_hs *shs;
	struct ovl_wire_session ss;
	uint8_t *in;      /* what the client sent, not yet parsed */
	size_t in_len;
	struct ovl_dpc *c;
};

static int sign_cert(const struct ovl_id *subject, enum ovl_role role, uint64_t serial,
		     uint64_t now, const struct ovl_id *issuer, const char *slice, uint8_t *out)
{
	struct ovl_cert c;
	char err[256];
	int n;

	ovl_cert_init(&c);
	ovl_cert_set_keys(&c, subject);
	c.serial = serial;
	c.role = role;
	c.not_before = now - 60;
	c.not_after = now + 3600;
	if (slice)
		assert_int_equal(ovl_cert_add_slice(&c, slice, err, sizeof(err)), 0);
	n = ovl_cert_sign(&c, issuer->sign_sk, out, OVL_CERT_MAX_BYTES, err, sizeof(err));
	if (n < 0)
		fail_msg("sign: %s", err);
	return n;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	const char *env = getenv("SEED");
	char err[256];

	f->now = (uint64_t)time(NULL);
	f->seed = env ? (unsigned)strtoul(env, NULL, 0) : (unsigned)time(NULL);
	print_message("SEED=%u\n", f->seed);
	srand(f->seed);
	ovl_id_generate(&f->ca);
	ovl_id_generate(&f->broker);
	ovl_id_generate(&f->node);
	ovl_id_generate(&f->client);
	f->broker_len = sign_cert(f->broker, OVL_ROLE_BROKER, 1, f->now, f->ca, NULL, f->broker_cert);
	f->node_len = sign_cert(f->node, OVL_ROLE_NODE, 2, f->now, f->broker, "hot", f->node_cert);
	f->client_len = sign_cert(f->client, OVL_ROLE_CLIENT, 3, f->now, f->broker, "hot",
				  f->client_cert);
	f->kr_s = ovl_keyring_new();
	f->kr_c = ovl_keyring_new();
	assert_int_equal(ovl_peers_new(&f->peers_s, f->ca->sign_pk, f->kr_s), 0);
	assert_int_equal(ovl_peers_new(&f->peers_c, f->ca->sign_pk, f->kr_c), 0);
	if (ovl_peers_add_broker(f->peers_s, f->broker_cert, f->broker_len, f->now, err,
				 sizeof(err)) < 0 ||
	    ovl_peers_add_broker(f->peers_c, f->broker_cert, f->broker_len, f->now, err,
				 sizeof(err)) < 0)
		fail_msg("add broker: %s", err);
	f->in = malloc(WIRE_MAX);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	ovl_dpc_destroy(&f->c);
	ovl_wire_hs_destroy(&f->shs);
	ovl_wire_session_clear(&f->ss);
	ovl_peers_destroy(&f->peers_s);
	ovl_peers_destroy(&f->peers_c);
	ovl_keyring_destroy(&f->kr_s);
	ovl_keyring_destroy(&f->kr_c);
	ovl_id_destroy(&f->ca);
	ovl_id_destroy(&f->broker);
	ovl_id_destroy(&f->node);
	ovl_id_destroy(&f->client);
	free(f->in);
	free(f);
	return 0;
}

static void new_client(struct fx *f)
{
	struct ovl_dpc_cfg cfg = { 0 };
	char err[256];

	cfg.id = f->client;
	cfg.cert = f->client_cert;
	cfg.cert_len = (size_t)f->client_len;
	cfg.peers = f->peers_c;
	cfg.now = f->now;
	cfg.slice = "hot";
	cfg.name = "node test";
	f->in_len = 0;
	if (ovl_dpc_new(&f->c, &cfg, err, sizeof(err)) < 0)
		fail_msg("new: %s", err);
}

/* Move what the client has to send into f->in, in iovec batches of random
 * sizes, as a socket would take it. */
static void drain(struct fx *f)
{
	while (ovl_dpc_tx_pending(f->c)) {
		struct iovec iov[3];
		int n = ovl_dpc_tx_iov(f->c, iov, 1 + rand() % 3);
		size_t budget = 1 + (size_t)rand() % 200000, took = 0;

		assert_true(n > 0);
		for (int i = 0; i < n && budget; i++) {
			size_t k = iov[i].iov_len < budget ? iov[i].iov_len : budget;

			assert_true(f->in_len + k <= WIRE_MAX);
			memcpy(f->in + f->in_len, iov[i].iov_base, k);
			f->in_len += k;
			took += k;
			budget -= k;
		}
		ovl_dpc_tx_done(f->c, took);
	}
}

/* Give bytes to the client in random pieces, through its receive space or
 * through ovl_dpc_feed(). Returns the first error. */
static int give(struct fx *f, const uint8_t *p, size_t n)
{
	while (n) {
		uint8_t *buf = NULL;
		size_t room = ovl_dpc_rx_space(f->c, &buf), k = 1 + (size_t)rand() % 70000;
		int ret;

		if (k > n)
			k = n;
		if (rand() % 2) {
			ret = ovl_dpc_feed(f->c, p, k);
		} else {
			if (!room)
				return ovl_dpc_failed(f->c);
			if (k > room)
				k = room;
			memcpy(buf, p, k);
			ret = ovl_dpc_rx_done(f->c, k);
		}
		if (ret < 0)
			return ret;
		p += k;
		n -= k;
	}
	return 0;
}

static void consume(struct fx *f, size_t n)
{
	memmove(f->in, f->in + n, f->in_len - n);
	f->in_len -= n;
}

/* The node's side of the handshake; refuse with `status` when non-zero. */
static int serve_hello(struct fx *f, uint32_t status)
{
	struct ovl_wire_hs_cfg cfg = { 0 };
	struct ovl_wire_hdr h;
	uint8_t out[OVL_WIRE_HEAD_MAX_BYTES];
	size_t need = 0, outlen = 0;
	char err[256];
	int n;

	drain(f);
	assert_int_equal(ovl_wire_head_need(f->in, f->in_len, false, &h, &need, err, sizeof(err)), 0);
	assert_int_equal(need, 0);
	if (status) {
		n = ovl_wire_error_frame(status, "go away", out, sizeof(out));
		consume(f, ovl_wire_head_len(&h, false));
		return give(f, out, (size_t)n);
	}
	cfg.id = f->node;
	cfg.cert = f->node_cert;
	cfg.cert_len = (size_t)f->node_len;
	cfg.peers = f->peers_s;
	cfg.now = f->now;
	assert_int_equal(ovl_wire_server_new(&f->shs, &cfg, err, sizeof(err)), 0);
	assert_int_equal(ovl_wire_server_hello(f->shs, f->in, ovl_wire_head_len(&h, false), out,
					       sizeof(out), &outlen, err, sizeof(err)), 0);
	assert_int_equal(ovl_wire_hs_session(f->shs, &f->ss), 0);
	ovl_wire_hs_destroy(&f->shs);
	consume(f, ovl_wire_head_len(&h, false));
	return give(f, out, outlen);
}

/* The node reads one request (and its payload, opened into *pay). */
static void serve_read(struct fx *f, struct ovl_wire_hdr *h, struct ovl_wire_req *q,
		       uint8_t **pay, uint64_t *plen)
{
	const uint8_t *meta = NULL;
	size_t need = 0, hl;
	char err[256];

	drain(f);
	assert_int_equal(ovl_wire_head_need(f->in, f->in_len, true, h, &need, err, sizeof(err)), 0);
	assert_int_equal(need, 0);
	hl = ovl_wire_head_len(h, true);
	if (ovl_wire_head_open(&f->ss, f->in, hl, h, &meta, err, sizeof(err)) < 0)
		fail_msg("open: %s", err);
	assert_int_equal(ovl_wire_req_decode(h->type, meta, h->meta_len, q, err, sizeof(err)), 0);
	assert_true(f->in_len >= hl + h->payload_len);
	*pay = malloc(h->payload_len + 1);
	memcpy(*pay, f->in + hl, h->payload_len);
	assert_int_equal(ovl_wire_payload_open(&f->ss, f->in, *pay, h->payload_len, plen, NULL), 0);
	consume(f, hl + h->payload_len);
}

/* The node's answer to request rid of type, with a payload (sealed with enc). */
static size_t answer(struct fx *f, uint8_t type, uint32_t rid, uint32_t status,
		     const uint8_t *pay, uint64_t plen, bool enc, uint8_t *out)
{
	struct ovl_wire_resp r = { 0 };
	struct ovl_wire_hdr h = { 0 };
	uint8_t meta[OVL_WIRE_META_MAX_BYTES];
	char err[256];
	int mlen, hl;

	r.type = type | OVL_WIRE_T_RESPONSE;
	r.status = status;
	r.epoch = 5;
	r.size = plen;
	if (type == OVL_WIRE_T_GET) {
		r.has_crc = true;
		r.crc = ovl_crc32c(0, pay, plen);
	}
	mlen = ovl_wire_resp_encode(&r, meta, sizeof(meta), err, sizeof(err));
	if (mlen < 0)
		fail_msg("encode: %s", err);
	h.type = r.type;
	h.flags = enc && plen ? OVL_WIRE_FLAG_ENCRYPTED : 0;
	h.payload_len = h.flags ? ovl_wire_sealed_len(plen) : plen;
	h.rid = rid;
	hl = ovl_wire_head_seal(&f->ss, &h, meta, (size_t)mlen, out, OVL_WIRE_HEAD_MAX_BYTES, err,
				sizeof(err));
	assert_true(hl > 0);
	if (h.flags)
		assert_int_equal(ovl_wire_payload_seal(&f->ss, out, pay, plen, out + hl), 0);
	else if (plen)
		memcpy(out + hl, pay, plen);
	return (size_t)hl + h.payload_len;
}

static void req(struct ovl_dpc_call *c, uint8_t type, const char *key)
{
	ovl_dpc_call_init(c);
	c->req.type = type;
	snprintf(c->req.slice, sizeof(c->req.slice), "hot");
	c->req.epoch = 5;
	c->req.key_len = (uint32_t)strlen(key);
	memcpy(c->req.key, key, c->req.key_len);
}

struct seen {
	int n;
	struct ovl_dpc_call *order[8];
	uint64_t last_done, last_total;
	int progress_calls;
};

static void on_done(struct ovl_dpc_call *call, void *arg)
{
	struct seen *s = arg;

	assert_true(call->complete);
	s->order[s->n++] = call;
}

static void on_progress(void *arg, uint64_t done, uint64_t total)
{
	struct seen *s = arg;

	assert_true(done > s->last_done || s->progress_calls == 0);
	assert_true(done <= total);
	s->last_done = done;
	s->last_total = total;
	s->progress_calls++;
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed + i * 31 + (i >> 9));
}

/* Three requests started before the handshake, answered out of order:
 * an encrypted PUT (opened by the node), an encrypted GET and a STAT. */
static void test_pipelined_out_of_order(void **state)
{
	struct fx *f = *state;
	const size_t big = 3 * OVL_WIRE_CHUNK_BYTES + 777;
	uint8_t *obj = malloc(big), *pay[3] = { NULL }, *out = malloc(WIRE_MAX);
	struct ovl_dpc_call put, get, stat;
	struct ovl_wire_hdr h[3];
	struct ovl_wire_req q[3];
	uint64_t plen[3];
	struct seen s = { 0 }, ps = { 0 };
	char err[256];
	size_t n;

	fill(obj, big, 7);
	new_client(f);
	req(&put, OVL_WIRE_T_PUT, "a");
	put.payload = obj;
	put.payload_len = big;
	put.req.size = big;
	put.req.crc = ovl_crc32c(0, obj, big);
	put.encrypt = true;
	put.done = on_done;
	put.done_arg = &s;
	put.progress = on_progress;
	put.progress_arg = &ps;
	req(&get, OVL_WIRE_T_GET, "b");
	get.encrypt = true;
	get.done = on_done;
	get.done_arg = &s;
	req(&stat, OVL_WIRE_T_STAT, "c");
	stat.done = on_done;
	stat.done_arg = &s;
	assert_int_equal(ovl_dpc_call_start(f->c, &put, err, sizeof(err)), 0);
	assert_int_equal(ovl_dpc_call_start(f->c, &get, err, sizeof(err)), 0);
	assert_int_equal(ovl_dpc_call_start(f->c, &stat, err, sizeof(err)), 0);
	assert_int_equal(ovl_dpc_inflight(f->c), 3);
	assert_false(ovl_dpc_ready(f->c));
	assert_int_equal(serve_hello(f, 0), 0);
	assert_true(ovl_dpc_ready(f->c));
	assert_non_null(ovl_dpc_peer(f->c));
	for (int i = 0; i < 3; i++)
		serve_read(f, &h[i], &q[i], &pay[i], &plen[i]);
	/* sent in the order started, the PUT's payload sealed */
	assert_int_equal(h[0].type, OVL_WIRE_T_PUT);
	assert_true(h[0].flags & OVL_WIRE_FLAG_ENCRYPTED);
	assert_int_equal(plen[0], big);
	assert_memory_equal(pay[0], obj, big);
	assert_int_equal(ps.last_done, ovl_wire_sealed_len(big));
	assert_int_equal(ps.last_total, ovl_wire_sealed_len(big));
	assert_int_equal(h[1].type, OVL_WIRE_T_GET);
	assert_int_equal(h[2].type, OVL_WIRE_T_STAT);
	assert_true(h[0].rid != h[1].rid && h[1].rid != h[2].rid);
	/* answers: STAT, GET (its payload in pieces), PUT */
	n = answer(f, OVL_WIRE_T_STAT, h[2].rid, OVL_WIRE_NOT_FOUND, NULL, 0, false, out);
	assert_int_equal(give(f, out, n), 0);
	assert_int_equal(s.n, 1);
	assert_ptr_equal(s.order[0], &stat);
	assert_int_equal(stat.result, 0);
	assert_int_equal(ovl_dpc_call_errno(&stat), -ENOENT);
	n = answer(f, OVL_WIRE_T_GET, h[1].rid, OVL_WIRE_OK, obj, big, true, out);
	assert_int_equal(give(f, out, n), 0);
	assert_int_equal(s.n, 2);
	assert_int_equal(get.result, 0);
	assert_int_equal(get.body_len, big);
	assert_memory_equal(get.body, obj, big);
	n = answer(f, OVL_WIRE_T_PUT, h[0].rid, OVL_WIRE_OK, NULL, 0, false, out);
	assert_int_equal(give(f, out, n), 0);
	assert_int_equal(s.n, 3);
	assert_ptr_equal(s.order[2], &put);
	assert_int_equal(ovl_dpc_call_errno(&put), 0);
	assert_int_equal(ovl_dpc_inflight(f->c), 0);
	{
		uint8_t *b = ovl_dpc_call_take_body(&get);

		assert_memory_equal(b, obj, big);
		free(b);
	}
	/* a GET into the caller's buffer, plaintext, while ready */
	{
		uint8_t *rb = malloc(big);

		req(&get, OVL_WIRE_T_GET, "b");
		get.rbuf = rb;
		get.rcap = big;
		assert_int_equal(ovl_dpc_call_start(f->c, &get, err, sizeof(err)), 0);
		free(pay[1]);
		serve_read(f, &h[1], &q[1], &pay[1], &plen[1]);
		n = answer(f, OVL_WIRE_T_GET, h[1].rid, OVL_WIRE_OK, obj, big, false, out);
		assert_int_equal(give(f, out, n), 0);
		assert_true(get.complete);
		assert_ptr_equal(get.body, rb);
		assert_memory_equal(rb, obj, big);
		ovl_dpc_call_release(&get);
		free(rb);
	}
	ovl_dpc_call_release(&put);
	ovl_dpc_call_release(&get);
	ovl_dpc_call_release(&stat);
	for (int i = 0; i < 3; i++)
		free(pay[i]);
	free(obj);
	free(out);
}

enum bad { BAD_RID, BAD_CHUNK, BAD_PLAINTEXT, BAD_MAC };

static void bad_answer(struct fx *f, enum bad what, int code)
{
	uint8_t obj[5000], *pay = NULL, *out = malloc(WIRE_MAX);
	struct ovl_dpc_call get, other;
	struct ovl_wire_hdr h;
	struct ovl_wire_req q;
	struct seen s = { 0 };
	uint64_t plen;
	char err[256];
	size_t n;

	fill(obj, sizeof(obj), 3);
	new_client(f);
	assert_int_equal(serve_hello(f, 0), 0);
	req(&get, OVL_WIRE_T_GET, "k");
	get.encrypt = true;
	get.done = on_done;
	get.done_arg = &s;
	req(&other, OVL_WIRE_T_STAT, "k2");
	other.done = on_done;
	other.done_arg = &s;
	assert_int_equal(ovl_dpc_call_start(f->c, &get, err, sizeof(err)), 0);
	serve_read(f, &h, &q, &pay, &plen);
	assert_int_equal(ovl_dpc_call_start(f->c, &other, err, sizeof(err)), 0);
	n = answer(f, OVL_WIRE_T_GET, what == BAD_RID ? h.rid + 7 : h.rid, OVL_WIRE_OK, obj,
		   sizeof(obj), what != BAD_PLAINTEXT, out);
	if (what == BAD_CHUNK)
		out[n - 20] ^= 1;
	if (what == BAD_MAC)
		out[OVL_WIRE_HDR_BYTES + 2] ^= 1;
	assert_int_equal(give(f, out, n), code);
	assert_int_equal(ovl_dpc_failed(f->c), code);
	/* every call in flight completes with the failure, and nothing more is taken */
	assert_int_equal(s.n, 2);
	assert_int_equal(get.result, code);
	assert_int_equal(other.result, code);
	assert_non_null(strstr(get.err, "node test"));
	assert_int_equal(ovl_dpc_inflight(f->c), 0);
	assert_int_equal(ovl_dpc_tx_pending(f->c), 0);
	assert_int_equal(ovl_dpc_call_start(f->c, &other, err, sizeof(err)), code);
	{
		uint8_t *b = NULL;

		assert_int_equal(ovl_dpc_rx_space(f->c, &b), 0);
	}
	ovl_dpc_call_release(&get);
	ovl_dpc_call_release(&other);
	free(pay);
	free(out);
}

static void test_bad_answers(void **state)
{
	struct fx *f = *state;

	bad_answer(f, BAD_RID, -EBADMSG);
	ovl_dpc_destroy(&f->c);
	bad_answer(f, BAD_CHUNK, -EIO);
	ovl_dpc_destroy(&f->c);
	bad_answer(f, BAD_PLAINTEXT, -EPROTO);
	ovl_dpc_destroy(&f->c);
	bad_answer(f, BAD_MAC, -EBADMSG);
}

/* The node refuses the handshake: calls waiting for it fail with that. */
static void test_refused_and_destroyed(void **state)
{
	struct fx *f = *state;
	struct ovl_dpc_call a, b;
	struct seen s = { 0 };
	char err[256];

	new_client(f);
	req(&a, OVL_WIRE_T_STAT, "x");
	a.done = on_done;
	a.done_arg = &s;
	assert_int_equal(ovl_dpc_call_start(f->c, &a, err, sizeof(err)), 0);
	assert_int_equal(serve_hello(f, OVL_WIRE_BUSY), -ECONNREFUSED);
	assert_int_equal(ovl_dpc_refusal(f->c), OVL_WIRE_BUSY);
	assert_int_equal(a.result, -ECONNREFUSED);
	assert_non_null(strstr(ovl_dpc_error(f->c), "go away"));
	ovl_dpc_destroy(&f->c);

	/* a request that cannot be encoded is not started */
	new_client(f);
	req(&a, OVL_WIRE_T_STAT, "");
	assert_int_equal(ovl_dpc_call_start(f->c, &a, err, sizeof(err)), -EINVAL);
	assert_int_equal(ovl_dpc_inflight(f->c), 0);
	/* destroying the engine completes what is in flight */
	s.n = 0;
	req(&b, OVL_WIRE_T_STAT, "y");
	b.done = on_done;
	b.done_arg = &s;
	assert_int_equal(ovl_dpc_call_start(f->c, &b, err, sizeof(err)), 0);
	assert_int_equal(serve_hello(f, 0), 0);
	ovl_dpc_destroy(&f->c);
	assert_int_equal(s.n, 1);
	assert_int_equal(b.result, -ECONNABORTED);
	assert_null(f->c);
}

/* The engine fails while a driver's send still holds its bytes: the PUT
 * whose payload they are completes only when that send ends. */
static void test_failure_while_lent(void **state)
{
	struct fx *f = *state;
	uint8_t v[3000], *out = malloc(WIRE_MAX);
	struct ovl_dpc_call put, stat;
	struct iovec iov[4];
	struct seen s = { 0 };
	char err[256];
	size_t n;

	fill(v, sizeof(v), 4);
	new_client(f);
	assert_int_equal(serve_hello(f, 0), 0);
	req(&stat, OVL_WIRE_T_STAT, "s");
	stat.done = on_done;
	stat.done_arg = &s;
	assert_int_equal(ovl_dpc_call_start(f->c, &stat, err, sizeof(err)), 0);
	drain(f);
	req(&put, OVL_WIRE_T_PUT, "p");
	put.payload = v;
	put.payload_len = sizeof(v);
	put.req.size = sizeof(v);
	put.req.crc = ovl_crc32c(0, v, sizeof(v));
	put.done = on_done;
	put.done_arg = &s;
	assert_int_equal(ovl_dpc_call_start(f->c, &put, err, sizeof(err)), 0);
	assert_int_equal(ovl_dpc_tx_iov(f->c, iov, 4), 2); /* lent: head and payload */
	n = answer(f, OVL_WIRE_T_STAT, 99, OVL_WIRE_OK, NULL, 0, false, out);
	assert_int_equal(give(f, out, n), -EBADMSG);
	assert_int_equal(s.n, 1);
	assert_ptr_equal(s.order[0], &stat);
	assert_false(put.complete);
	assert_ptr_equal(iov[1].iov_base, v); /* still the caller's payload, still lent */
	assert_int_equal(ovl_dpc_tx_iov(f->c, iov, 4), 0);
	ovl_dpc_tx_done(f->c, 0);
	assert_int_equal(s.n, 2);
	assert_int_equal(put.result, -EBADMSG);
	ovl_dpc_call_release(&put);
	ovl_dpc_call_release(&stat);
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_pipelined_out_of_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_answers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refused_and_destroyed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failure_while_lent, setup, teardown),
	};

	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
