/*
 * The node's data plane end to end: a client thread speaks the wire protocol
 * (docs/PROTOCOL.md section 7) over a real TCP connection to node_dp, which
 * serves a real store on the same io_uring in the main thread.
 *
 * The client here is deliberately minimal and written against ovl_wire
 * alone, not the shared client (ovl_dpc): it checks the node, and through
 * it the shared client, independently of that client's code.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "node.h"
#include "probe.h"
#include "store/record.h"
#include "overlay.h"

struct pki {
	struct ovl_id *ca, *broker, *node, *client, *rogue_ca, *rogue_broker, *rogue;
	uint8_t broker_cert[OVL_CERT_MAX_BYTES], node_cert[OVL_CERT_MAX_BYTES];
	uint8_t client_cert[OVL_CERT_MAX_BYTES], rogue_broker_cert[OVL_CERT_MAX_BYTES];
	uint8_t rogue_cert[OVL_CERT_MAX_BYTES];
	int broker_len, node_len, client_len, rogue_broker_len, rogue_len;
	uint64_t now;
};

static int mkcert(const struct ovl_id *subj, enum ovl_role role, uint64_t serial,
		  const char *const *slices, const struct ovl_id *issuer, uint64_t now, uint8_t *out)
{
	struct ovl_cert c;
	char err[256];
	int n;

	ovl_cert_init(&c);
	ovl_cert_set_keys(&c, subj);
	c.serial = serial;
	c.role = role;
	c.not_before = now - 60;
	c.not_after = now + 3600;
	for (; slices && *slices; slices++)
		assert_int_equal(ovl_cert_add_slice(&c, *slices, err, sizeof(err)), 0);
	n = ovl_cert_sign(&c, issuer->sign_sk, out, OVL_CERT_MAX_BYTES, err, sizeof(err));
	if (n < 0)
		fail_msg("sign: %s", err);
	return n;
}

static void pki_make(struct pki *p)
{
	static const char *const node_slices[] = { "hot", "cold", "enc", NULL };
	static const char *const client_slices[] = { "hot", "enc", NULL };

	memset(p, 0, sizeof(*p));
	p->now = (uint64_t)time(NULL);
	ovl_id_generate(&p->ca);
	ovl_id_generate(&p->broker);
	ovl_id_generate(&p->node);
	ovl_id_generate(&p->client);
	ovl_id_generate(&p->rogue_ca);
	ovl_id_generate(&p->rogue_broker);
	ovl_id_generate(&p->rogue);
	p->broker_len = mkcert(p->broker, OVL_ROLE_BROKER, 1, NULL, p->ca, p->now, p->broker_cert);
	p->node_len = mkcert(p->node, OVL_ROLE_NODE, 2, node_slices, p->broker, p->now, p->node_cert);
	p->client_len = mkcert(p->client, OVL_ROLE_CLIENT, 3, client_slices, p->broker, p->now,
			       p->client_cert);
	p->rogue_broker_len = mkcert(p->rogue_broker, OVL_ROLE_BROKER, 1, NULL, p->rogue_ca, p->now,
				     p->rogue_broker_cert);
	p->rogue_len = mkcert(p->rogue, OVL_ROLE_CLIENT, 9, client_slices, p->rogue_broker, p->now,
			      p->rogue_cert);
}

static void pki_free(struct pki *p)
{
	ovl_id_destroy(&p->ca);
	ovl_id_destroy(&p->broker);
	ovl_id_destroy(&p->node);
	ovl_id_destroy(&p->client);
	ovl_id_destroy(&p->rogue_ca);
	ovl_id_destroy(&p->rogue_broker);
	ovl_id_destroy(&p->rogue);
}

/* ---- a minimal blocking client written against ovl_wire ---- */

struct cli {
	int fd;
	struct ovl_wire_session ses;
	uint32_t rid;
};

static int read_full(int fd, uint8_t *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = recv(fd, buf + got, n - got, 0);

		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

static int write_full(int fd, const uint8_t *buf, size_t n)
{
	while (n) {
		ssize_t r = send(fd, buf, n, MSG_NOSIGNAL);

		if (r <= 0)
			return -1;
		buf += r;
		n -= (size_t)r;
	}
	return 0;
}

/* Read one frame head (authed or not) into buf; returns its length. */
static int read_head(int fd, bool authed, uint8_t *buf, struct ovl_wire_hdr *h)
{
	size_t need = 0, have = OVL_WIRE_HDR_BYTES;
	char err[256];

	if (read_full(fd, buf, have) < 0)
		return -1;
	if (ovl_wire_head_need(buf, have, authed, h, &need, err, sizeof(err)) < 0)
		return -1;
	if (need && read_full(fd, buf + have, need) < 0)
		return -1;
	return (int)(have + need);
}

static int cli_connect(struct cli *c, const struct sockaddr_in6 *addr, const struct ovl_id *id,
		       const uint8_t *cert, size_t cert_len, struct ovl_peers *peers, uint64_t now,
		       uint32_t *status)
{
	struct ovl_wire_hs_cfg cfg = { 0 };
	struct ovl_wire_hs *hs = NULL;
	struct ovl_wire_hdr h;
	uint8_t buf[OVL_WIRE_HEAD_MAX_BYTES];
	char err[256];
	int n, ret = -1;

	memset(c, 0, sizeof(*c));
	c->fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (connect(c->fd, (const struct sockaddr *)addr, sizeof(*addr)) < 0)
		return -1;
	cfg.id = id;
	cfg.cert = cert;
	cfg.cert_len = cert_len;
	cfg.peers = peers;
	cfg.now = now;
	cfg.slice = "hot";
	if (ovl_wire_client_new(&hs, &cfg, err, sizeof(err)) < 0)
		return -1;
	n = ovl_wire_client_hello(hs, buf, sizeof(buf), err, sizeof(err));
	if (n < 0 || write_full(c->fd, buf, (size_t)n) < 0)
		goto out;
	n = read_head(c->fd, false, buf, &h);
	if (n < 0)
		goto out;
	ret = ovl_wire_client_finish(hs, buf, (size_t)n, status, err, sizeof(err));
	if (ret == 0)
		ret = ovl_wire_hs_session(hs, &c->ses);
out:
	ovl_wire_hs_destroy(&hs);
	return ret;
}

/* Send a request; read its response (and payload into *out, malloc'd). */
static int cli_call(struct cli *c, uint8_t type, const struct ovl_wire_req *q, const void *payload,
		    size_t plen, bool encrypt, struct ovl_wire_resp *r, uint8_t **out, size_t *outlen)
{
	struct ovl_wire_hdr h = { 0 }, rh;
	uint8_t meta[OVL_WIRE_META_MAX_BYTES], head[OVL_WIRE_HEAD_MAX_BYTES], *wire = NULL;
	const uint8_t *rmeta = NULL;
	uint64_t wlen = encrypt && plen ? ovl_wire_sealed_len(plen) : plen, plain;
	char err[256];
	int mlen, hl, n;

	struct ovl_wire_req typed = *q;

	typed.type = type;
	mlen = ovl_wire_req_encode(&typed, meta, sizeof(meta), err, sizeof(err));
	if (mlen < 0)
		fail_msg("encode: %s", err);
	h.type = type;
	h.flags = encrypt && plen ? OVL_WIRE_FLAG_ENCRYPTED : 0;
	h.payload_len = wlen;
	h.rid = ++c->rid;
	hl = ovl_wire_head_seal(&c->ses, &h, meta, (size_t)mlen, head, sizeof(head), err, sizeof(err));
	assert_true(hl > 0);
	wire = malloc(hl + wlen + 1);
	memcpy(wire, head, hl);
	if (h.flags) {
		uint8_t *dst = wire + hl;

		for (size_t off = 0, i = 0; off < plen; off += OVL_WIRE_CHUNK_BYTES, i++) {
			size_t k = plen - off < OVL_WIRE_CHUNK_BYTES ? plen - off : OVL_WIRE_CHUNK_BYTES;

			memcpy(dst, (const uint8_t *)payload + off, k);
			ovl_wire_chunk_seal(&c->ses, wire, (uint32_t)i, dst, k);
			dst += k + OVL_WIRE_TAG_BYTES;
		}
	} else if (plen) {
		memcpy(wire + hl, payload, plen);
	}
	n = write_full(c->fd, wire, hl + wlen);
	free(wire);
	if (n < 0)
		return -EPIPE;
	n = read_head(c->fd, true, head, &rh);
	if (n < 0)
		return -ECONNRESET;
	if (ovl_wire_head_open(&c->ses, head, (size_t)n, &rh, &rmeta, err, sizeof(err)) < 0)
		fail_msg("response head: %s", err);
	assert_int_equal(rh.rid, h.rid);
	if (ovl_wire_resp_decode(rh.type, rmeta, rh.meta_len, r, err, sizeof(err)) < 0)
		fail_msg("response meta: %s", err);
	if (out) {
		*out = malloc(rh.payload_len + 1);
		*outlen = rh.payload_len;
		if (rh.payload_len && read_full(c->fd, *out, rh.payload_len) < 0)
			return -ECONNRESET;
		if (rh.flags & OVL_WIRE_FLAG_ENCRYPTED) {
			uint8_t *src = *out, *dst = *out;

			assert_int_equal(ovl_wire_plain_len(rh.payload_len, &plain), 0);
			for (uint64_t off = 0, i = 0; off < plain; off += OVL_WIRE_CHUNK_BYTES, i++) {
				size_t k = plain - off < OVL_WIRE_CHUNK_BYTES ? plain - off : OVL_WIRE_CHUNK_BYTES;

				assert_int_equal(ovl_wire_chunk_open(&c->ses, head, (uint32_t)i, src, k), 0);
				memmove(dst, src, k);
				src += k + OVL_WIRE_TAG_BYTES;
				dst += k;
			}
			*outlen = plain;
		}
	} else {
		assert_int_equal(rh.payload_len, 0);
	}
	return 0;
}

static void req_init(struct ovl_wire_req *q, const char *slice, uint64_t epoch, const char *key)
{
	memset(q, 0, sizeof(*q));
	snprintf(q->slice, sizeof(q->slice), "%s", slice);
	q->epoch = epoch;
	q->key_len = (uint32_t)strlen(key);
	memcpy(q->key, key, q->key_len);
}

/* ---- the node side, driven in the main thread ---- */

struct fx {
	struct pki pki;
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
	atomic_int done;
	void (*client_fn)(struct fx *f);
};

static uint64_t now_s(void *arg)
{
	return (uint64_t)time(NULL);
}

static void tick_done(struct node_loop_ev *ev, int res, uint32_t flags)
{
	struct fx *f = (struct fx *)((char *)ev - offsetof(struct fx, tick_ev));

	f->tick_armed = false;
}

static void *client_thread(void *arg)
{
	struct fx *f = arg;

	f->client_fn(f);
	atomic_store(&f->done, 1);
	return NULL;
}

static void run_client(struct fx *f, void (*fn)(struct fx *f))
{
	pthread_t t;

	f->client_fn = fn;
	atomic_store(&f->done, 0);
	assert_int_equal(pthread_create(&t, NULL, client_thread, f), 0);
	while (!atomic_load(&f->done)) {
		if (!f->tick_armed) {
			struct io_uring_sqe *sqe = node_loop_sqe(f->loop, &f->tick_ev);

			f->tick_ev.fn = tick_done;
			f->tick_ts.tv_nsec = 20 * 1000000;
			io_uring_prep_timeout(sqe, &f->tick_ts, 0, 0);
			f->tick_armed = true;
		}
		node_loop_run(f->loop, true);
		{
			struct timespec ts;

			clock_gettime(CLOCK_MONOTONIC, &ts);
			node_dp_tick(f->dp, (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000);
		}
	}
	pthread_join(t, NULL);
}

/* The control plane's signed map, as node_dp sees it: bytes for "hot" only. */
static const char fake_map[] = "a signed map of slice hot";

static int fake_map_get(void *arg, const char *slice, uint8_t **buf, size_t *len)
{
	(void)arg;
	if (strcmp(slice, "hot") != 0)
		return -ENOENT;
	*buf = malloc(sizeof(fake_map));
	if (!*buf)
		return -ENOMEM;
	memcpy(*buf, fake_map, sizeof(fake_map));
	*len = sizeof(fake_map);
	return 0;
}

/* Limits a test sets (cmocka's prestate); 0 fields keep setup's. */
struct limits {
	unsigned max_conns, max_unauth, max_per_key, max_inflight;
	uint64_t put_budget, handshake_ms, progress_ms, progress_bytes;
};

/* Response limits for the next setup() (0: the node's defaults). */
static struct {
	uint64_t budget, share, send_timeout_ms;
	size_t piece;
} knobs;

static int setup(void **state)
{
	const struct limits *l = *state;
	struct fx *f = calloc(1, sizeof(*f));
	struct node_store_opts so;
	struct node_dp_opts o = { 0 };
	struct node_req_opts ro = { 0 };
	char err[256];

	pki_make(&f->pki);
	snprintf(f->dir, sizeof(f->dir), "/tmp/shelf-dp-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/drive", f->dir);
	assert_int_equal(node_loop_new(&f->loop, 256, err, sizeof(err)), 0);
	node_store_opts_init(&so);
	so.path = f->path;
	so.loop = f->loop;
	so.create_size = 128 << 20; /* small: the full-drive test fills it */
	so.format = true;
	so.segment_bytes = 16 << 20;
	if (node_store_open(&f->store, &so, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	/* the node trusts the site CA and knows its broker */
	f->kr = ovl_keyring_new();
	assert_int_equal(ovl_peers_new(&f->peers, f->pki.ca->sign_pk, f->kr), 0);
	assert_int_equal(ovl_peers_add_broker(f->peers, f->pki.broker_cert, f->pki.broker_len,
					      f->pki.now, err, sizeof(err)), 0);
	/* so does the client */
	f->ckr = ovl_keyring_new();
	assert_int_equal(ovl_peers_new(&f->cpeers, f->pki.ca->sign_pk, f->ckr), 0);
	assert_int_equal(ovl_peers_add_broker(f->cpeers, f->pki.broker_cert, f->pki.broker_len,
					      f->pki.now, err, sizeof(err)), 0);
	ro.loop = f->loop;
	ro.store = f->store;
	assert_int_equal(node_req_new(&f->req, &ro, err, sizeof(err)), 0);
	o.loop = f->loop;
	o.req = f->req;
	o.id = f->pki.node;
	o.cert = f->pki.node_cert;
	o.cert_len = (size_t)f->pki.node_len;
	o.peers = f->peers;
	o.now_s = now_s;
	o.max_conns = 16;
	o.max_inflight = 8;
	o.max_payload_bytes = 2 << 20; /* less than the 4 MiB objects: those stream */
	o.max_unauth = 8;
	o.max_unauth_per_addr = 8;
	o.handshake_timeout_ms = 5000;
	o.idle_timeout_ms = 5000;
	o.progress_interval_ms = 1500;
	o.progress_min_bytes = 1;
	if (l) {
		o.max_conns = l->max_conns ? l->max_conns : o.max_conns;
		o.max_unauth = l->max_unauth ? l->max_unauth : o.max_unauth;
		o.max_unauth_per_addr = o.max_unauth;
		o.max_conns_per_key = l->max_per_key;
		o.max_inflight = l->max_inflight ? l->max_inflight : o.max_inflight;
		o.max_payload_bytes = l->put_budget ? l->put_budget : o.max_payload_bytes;
		o.handshake_timeout_ms = l->handshake_ms ? l->handshake_ms : o.handshake_timeout_ms;
		o.progress_interval_ms = l->progress_ms ? l->progress_ms : o.progress_interval_ms;
		o.progress_min_bytes = l->progress_bytes ? l->progress_bytes : o.progress_min_bytes;
	}
	o.map_get = fake_map_get;
	o.resp_budget_bytes = knobs.budget;
	o.resp_conn_bytes = knobs.share;
	o.resp_piece_bytes = knobs.piece;
	o.send_timeout_ms = knobs.send_timeout_ms;
	if (node_dp_new(&f->dp, &o, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_int_equal(node_dp_slice_set(f->dp, "hot", 5, false), 0);
	assert_int_equal(node_dp_slice_set(f->dp, "cold", 1, false), 0);
	assert_int_equal(node_dp_slice_set(f->dp, "enc", 1, true), 0);
	f->addr.sin6_family = AF_INET6;
	f->addr.sin6_addr = in6addr_loopback;
	assert_int_equal(node_dp_listen(f->dp, &f->addr, err, sizeof(err)), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	/* the test owns the loop: stop the data plane, drain, then free */
	node_dp_stop(f->dp);
	while (node_loop_inflight(f->loop) || !node_store_idle(f->store))
		node_loop_run(f->loop, true);
	node_dp_destroy(&f->dp);
	assert_null(f->dp);
	node_req_destroy(&f->req);
	node_store_close(&f->store);
	node_loop_destroy(&f->loop);
	ovl_peers_destroy(&f->peers);
	ovl_peers_destroy(&f->cpeers);
	ovl_keyring_destroy(&f->kr);
	ovl_keyring_destroy(&f->ckr);
	pki_free(&f->pki);
	unlink(f->path);
	rmdir(f->dir);
	free(f);
	return 0;
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed + i * 31 + (i >> 7));
}

static void client_basic(struct fx *f)
{
	struct cli c;
	struct ovl_wire_req q;
	struct ovl_wire_resp r;
	uint8_t *got = NULL, *v = malloc(4 << 20);
	size_t glen;
	uint32_t st = 0;
	struct ovl_wire_bin *keys = NULL;
	uint32_t nkeys = 0;
	char err[256];

	assert_int_equal(cli_connect(&c, &f->addr, f->pki.client, f->pki.client_cert,
				     (size_t)f->pki.client_len, f->cpeers, f->pki.now, &st), 0);
	/* put, get, range get, stat */
	fill(v, 1000, 1);
	req_init(&q, "hot", 5, "obj/a");
	q.size = 1000;
	q.crc = ovl_crc32c(0, v, 1000);
	assert_int_equal(cli_call(&c, OVL_WIRE_T_PUT, &q, v, 1000, false, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_OK);
	req_init(&q, "hot", 5, "obj/a");
	assert_int_equal(cli_call(&c, OVL_WIRE_T_GET, &q, NULL, 0, false, &r, &got, &glen), 0);
	assert_int_equal(r.status, OVL_WIRE_OK);
	assert_int_equal(glen, 1000);
	assert_memory_equal(got, v, 1000);
	assert_int_equal(r.crc, ovl_crc32c(0, got, glen)); /* end to end */
	free(got);
	q.has_range = true;
	q.offset = 101;
	q.length = 57;
	assert_int_equal(cli_call(&c, OVL_WIRE_T_GET, &q, NULL, 0, false, &r, &got, &glen), 0);
	assert_int_equal(glen, 57);
	assert_memory_equal(got, v + 101, 57);
	free(got);
	req_init(&q, "hot", 5, "obj/a");
	assert_int_equal(cli_call(&c, OVL_WIRE_T_STAT, &q, NULL, 0, false, &r, NULL, NULL), 0);
	assert_int_equal(r.size, 1000);
	assert_int_equal(r.crc, ovl_crc32c(0, v, 1000));
	/* a 4 MiB object */
	fill(v, 4 << 20, 2);
	req_init(&q, "hot", 5, "obj/big");
	q.size = 4 << 20;
	q.crc = ovl_crc32c(0, v, 4 << 20);
	assert_int_equal(cli_call(&c, OVL_WIRE_T_PUT, &q, v, 4 << 20, false, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_OK);
	req_init(&q, "hot", 5, "obj/big");
	assert_int_equal(cli_call(&c, OVL_WIRE_T_GET, &q, NULL, 0, false, &r, &got, &glen), 0);
	assert_int_equal(glen, 4 << 20);
	assert_memory_equal(got, v, 4 << 20);
	free(got);
	/* list with a prefix */
	req_init(&q, "hot", 5, "obj/");
	q.limit = 10;
	assert_int_equal(cli_call(&c, OVL_WIRE_T_LIST, &q, NULL, 0, false, &r, &got, &glen), 0);
	assert_int_equal(r.count, 2);
	assert_false(r.more);
	assert_int_equal(ovl_wire_keys_decode(got, glen, &keys, &nkeys, err, sizeof(err)), 0);
	assert_int_equal(nkeys, 2);
	assert_memory_equal(keys[0].ptr, "obj/a", 5);
	free(keys);
	free(got);
	q.limit = 1;
	assert_int_equal(cli_call(&c, OVL_WIRE_T_LIST, &q, NULL, 0, false, &r, &got, &glen), 0);
	assert_int_equal(r.count, 1);
	assert_true(r.more);
	free(got);
	/* delete */
	req_init(&q, "hot", 5, "obj/a");
	assert_int_equal(cli_call(&c, OVL_WIRE_T_DELETE, &q, NULL, 0, false, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_OK);
	assert_int_equal(cli_call(&c, OVL_WIRE_T_GET, &q, NULL, 0, false, &r, &got, &glen), 0);
	assert_int_equal(r.status, OVL_WIRE_NOT_FOUND);
	free(got);
	/* node stat */
	req_init(&q, "hot", 5, "x");
	q.key_len = 0;
	assert_int_equal(cli_call(&c, OVL_WIRE_T_NODE_STAT, &q, NULL, 0, false, &r, NULL, NULL), 0);
	assert_true(r.ncounters >= 4);
	close(c.fd);
	free(v);
}

static void test_put_get_stat_list_delete(void **state)
{
	run_client(*state, client_basic);
}

/* ---- versions: STAT, GET and LIST answer them (issue 13, reads) ---- */

static void ver_cb(void *arg, int res, const struct node_store_objstat *st)
{
	int *left = arg;

	(void)st;
	assert_int_equal(res, 0);
	(*left)--;
}

static void client_versions(struct fx *f)
{
	struct cli c;
	struct ovl_wire_req q;
	struct ovl_wire_resp r;
	struct ovl_wire_vkey *vk = NULL;
	struct ovl_wire_bin *keys = NULL;
	uint8_t *got = NULL;
	size_t glen = 0;
	uint32_t st = 0, n = 0;
	char err[256];

	assert_int_equal(cli_connect(&c, &f->addr, f->pki.client, f->pki.client_cert,
				     (size_t)f->pki.client_len, f->cpeers, f->pki.now, &st), 0);
	/* an object at a version: STAT and GET name it */
	req_init(&q, "hot", 5, "v/obj");
	assert_int_equal(cli_call(&c, OVL_WIRE_T_STAT, &q, NULL, 0, false, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_OK);
	assert_true(r.has_ver);
	assert_int_equal(r.ver.hlc, 5ull << 16);
	assert_int_equal(r.ver.node, 9);
	assert_false(r.tomb);
	req_init(&q, "hot", 5, "v/obj");
	assert_int_equal(cli_call(&c, OVL_WIRE_T_GET, &q, NULL, 0, false, &r, &got, &glen), 0);
	assert_int_equal(r.status, OVL_WIRE_OK);
	assert_true(r.has_ver);
	assert_int_equal(r.ver.hlc, 5ull << 16);
	assert_int_equal(glen, 3);
	free(got);
	got = NULL;
	/* a tombstone: not-found, with its version and tomb */
	req_init(&q, "hot", 5, "v/gone");
	assert_int_equal(cli_call(&c, OVL_WIRE_T_STAT, &q, NULL, 0, false, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_NOT_FOUND);
	assert_true(r.tomb && r.has_ver);
	assert_int_equal(r.ver.hlc, 7ull << 16);
	assert_int_equal(r.ver.node, 9);
	req_init(&q, "hot", 5, "v/gone");
	assert_int_equal(cli_call(&c, OVL_WIRE_T_GET, &q, NULL, 0, false, &r, &got, &glen), 0);
	assert_int_equal(r.status, OVL_WIRE_NOT_FOUND);
	free(got);
	got = NULL;
	/* a key never written: not-found, no tombstone */
	req_init(&q, "hot", 5, "v/never");
	assert_int_equal(cli_call(&c, OVL_WIRE_T_STAT, &q, NULL, 0, false, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_NOT_FOUND);
	assert_false(r.tomb || r.has_ver);
	/* LIST with versions: both, the tombstone marked */
	req_init(&q, "hot", 5, "v/");
	q.vers = true;
	assert_int_equal(cli_call(&c, OVL_WIRE_T_LIST, &q, NULL, 0, false, &r, &got, &glen), 0);
	assert_int_equal(r.status, OVL_WIRE_OK);
	assert_true(r.vers);
	assert_int_equal(r.count, 2);
	assert_int_equal(ovl_wire_vkeys_decode(got, glen, &vk, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 2);
	assert_memory_equal(vk[0].ptr, "v/gone", 6);
	assert_true(vk[0].tomb);
	assert_int_equal(vk[0].ver.hlc, 7ull << 16);
	assert_memory_equal(vk[1].ptr, "v/obj", 5);
	assert_false(vk[1].tomb);
	assert_int_equal(vk[1].ver.node, 9);
	free(vk);
	free(got);
	got = NULL;
	/* plain LIST: the object only, the plain form */
	req_init(&q, "hot", 5, "v/");
	assert_int_equal(cli_call(&c, OVL_WIRE_T_LIST, &q, NULL, 0, false, &r, &got, &glen), 0);
	assert_false(r.vers);
	assert_int_equal(ovl_wire_keys_decode(got, glen, &keys, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 1);
	assert_memory_equal(keys[0].ptr, "v/obj", 5);
	free(keys);
	free(got);
	close(c.fd);
}

static void test_versions(void **state)
{
	struct fx *f = *state;
	struct node_store_ver v1 = { 5ull << 16, 9 }, v2 = { 7ull << 16, 9 };
	int left = 3;

	/* written on the loop, as the request layer will */
	assert_int_equal(node_store_put_ver_async(f->store, "v/obj", 5, "abc", 3, &v1, ver_cb,
						  &left), 0);
	assert_int_equal(node_store_put_ver_async(f->store, "v/gone", 6, "xyz", 3, &v1, ver_cb,
						  &left), 0);
	assert_int_equal(node_store_delete_ver_async(f->store, "v/gone", 6, &v2, ver_cb, &left), 0);
	while (left) {
		/* the loop wakes on the tick at least, as run_client() drives it */
		if (!f->tick_armed) {
			struct io_uring_sqe *sqe = node_loop_sqe(f->loop, &f->tick_ev);

			f->tick_ev.fn = tick_done;
			f->tick_ts.tv_nsec = 20 * 1000000;
			io_uring_prep_timeout(sqe, &f->tick_ts, 0, 0);
			f->tick_armed = true;
		}
		node_loop_run(f->loop, true);
	}
	run_client(f, client_versions);
}

static void client_refusals(struct fx *f)
{
	struct cli c;
	struct ovl_wire_req q;
	struct ovl_wire_resp r;
	uint8_t v[3000], *got = NULL;
	size_t glen;
	uint32_t st = 0;

	fill(v, sizeof(v), 3);
	assert_int_equal(cli_connect(&c, &f->addr, f->pki.client, f->pki.client_cert,
				     (size_t)f->pki.client_len, f->cpeers, f->pki.now, &st), 0);
	/* payload that does not match its checksum: refused, nothing stored */
	req_init(&q, "hot", 5, "bad");
	q.size = sizeof(v);
	q.crc = ovl_crc32c(0, v, sizeof(v)) ^ 1;
	assert_int_equal(cli_call(&c, OVL_WIRE_T_PUT, &q, v, sizeof(v), false, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_CHECKSUM_MISMATCH);
	assert_non_null(strstr(r.message, "nothing stored"));
	req_init(&q, "hot", 5, "bad");
	assert_int_equal(cli_call(&c, OVL_WIRE_T_STAT, &q, NULL, 0, false, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_NOT_FOUND);
	/* the same for a payload large enough to stream into the store */
	{
		size_t n = (1 << 20) + 12345;
		uint8_t *big = malloc(n), *bgot = NULL;
		size_t blen = 0;

		fill(big, n, 4);
		req_init(&q, "hot", 5, "bigbad");
		q.size = n;
		q.crc = ovl_crc32c(0, big, n) ^ 1;
		assert_int_equal(cli_call(&c, OVL_WIRE_T_PUT, &q, big, n, false, &r, NULL, NULL), 0);
		assert_int_equal(r.status, OVL_WIRE_CHECKSUM_MISMATCH);
		assert_non_null(strstr(r.message, "nothing stored"));
		req_init(&q, "hot", 5, "bigbad");
		assert_int_equal(cli_call(&c, OVL_WIRE_T_STAT, &q, NULL, 0, false, &r, NULL, NULL), 0);
		assert_int_equal(r.status, OVL_WIRE_NOT_FOUND);
		/* a streamed payload whose size disagrees with the request */
		req_init(&q, "hot", 5, "bigshort");
		q.size = n + 1;
		q.crc = ovl_crc32c(0, big, n);
		assert_int_equal(cli_call(&c, OVL_WIRE_T_PUT, &q, big, n, false, &r, NULL, NULL), 0);
		assert_int_equal(r.status, OVL_WIRE_BAD_REQUEST);
		/* streamed and encrypted: decrypted chunk by chunk into the store */
		req_init(&q, "enc", 1, "bigsecret");
		q.size = n;
		q.crc = ovl_crc32c(0, big, n);
		assert_int_equal(cli_call(&c, OVL_WIRE_T_PUT, &q, big, n, true, &r, NULL, NULL), 0);
		assert_int_equal(r.status, OVL_WIRE_OK);
		assert_int_equal(r.size, n);
		req_init(&q, "enc", 1, "bigsecret");
		assert_int_equal(cli_call(&c, OVL_WIRE_T_GET, &q, NULL, 0, false, &r, &bgot, &blen), 0);
		assert_int_equal(blen, n);
		assert_memory_equal(bgot, big, n);
		assert_int_equal(r.crc, ovl_crc32c(0, big, n));
		free(bgot);
		/* an encrypted range at an odd offset, sealed in place in the
		 * store's read buffer: two chunks and a short one */
		req_init(&q, "enc", 1, "bigsecret");
		q.has_range = true;
		q.offset = 70001;
		q.length = 2 * OVL_WIRE_CHUNK_BYTES + 999;
		bgot = NULL;
		assert_int_equal(cli_call(&c, OVL_WIRE_T_GET, &q, NULL, 0, false, &r, &bgot, &blen), 0);
		assert_int_equal(r.status, OVL_WIRE_OK);
		assert_int_equal(blen, q.length);
		assert_memory_equal(bgot, big + 70001, blen);
		free(bgot);
		/* a client that leaves half-way through a streamed PUT: nothing
		 * of it is ever visible */
		{
			struct cli c2;
			struct ovl_wire_hdr h = { 0 };
			uint8_t meta[512], head[OVL_WIRE_HEAD_MAX_BYTES];
			char err[256];
			int mlen, hl;

			assert_int_equal(cli_connect(&c2, &f->addr, f->pki.client, f->pki.client_cert,
						     (size_t)f->pki.client_len, f->cpeers, f->pki.now, &st), 0);
			req_init(&q, "hot", 5, "bighalf");
			q.type = OVL_WIRE_T_PUT;
			q.size = n;
			q.crc = ovl_crc32c(0, big, n);
			mlen = ovl_wire_req_encode(&q, meta, sizeof(meta), err, sizeof(err));
			h.type = OVL_WIRE_T_PUT;
			h.payload_len = n;
			h.rid = 1;
			hl = ovl_wire_head_seal(&c2.ses, &h, meta, (size_t)mlen, head, sizeof(head), err,
						sizeof(err));
			assert_int_equal(write_full(c2.fd, head, (size_t)hl), 0);
			assert_int_equal(write_full(c2.fd, big, n / 2), 0);
			close(c2.fd);
		}
		req_init(&q, "hot", 5, "bighalf");
		for (int i = 0; i < 20; i++) { /* the node notices the close */
			assert_int_equal(cli_call(&c, OVL_WIRE_T_STAT, &q, NULL, 0, false, &r, NULL, NULL), 0);
			assert_int_equal(r.status, OVL_WIRE_NOT_FOUND);
			usleep(10000);
		}
		free(big);
	}
	/* a stale epoch is answered with the node's */
	req_init(&q, "hot", 4, "k");
	assert_int_equal(cli_call(&c, OVL_WIRE_T_STAT, &q, NULL, 0, false, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_STALE_MAP);
	assert_int_equal(r.epoch, 5);
	/* a slice this client's certificate does not list, and one the node lacks */
	req_init(&q, "cold", 1, "k");
	assert_int_equal(cli_call(&c, OVL_WIRE_T_STAT, &q, NULL, 0, false, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_WRONG_SLICE);
	req_init(&q, "nope", 1, "k");
	assert_int_equal(cli_call(&c, OVL_WIRE_T_STAT, &q, NULL, 0, false, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_WRONG_SLICE);
	/* a slice that requires encryption: plaintext refused, encrypted works */
	req_init(&q, "enc", 1, "secret");
	q.size = sizeof(v);
	q.crc = ovl_crc32c(0, v, sizeof(v));
	assert_int_equal(cli_call(&c, OVL_WIRE_T_PUT, &q, v, sizeof(v), false, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_BAD_REQUEST);
	assert_non_null(strstr(r.message, "requires encrypted"));
	assert_int_equal(cli_call(&c, OVL_WIRE_T_PUT, &q, v, sizeof(v), true, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_OK);
	req_init(&q, "enc", 1, "secret");
	assert_int_equal(cli_call(&c, OVL_WIRE_T_GET, &q, NULL, 0, false, &r, &got, &glen), 0);
	assert_int_equal(glen, sizeof(v));
	assert_memory_equal(got, v, sizeof(v));
	free(got);
	/* the connection still works after every refusal */
	req_init(&q, "hot", 5, "after");
	q.size = 10;
	q.crc = ovl_crc32c(0, v, 10);
	assert_int_equal(cli_call(&c, OVL_WIRE_T_PUT, &q, v, 10, false, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_OK);
	close(c.fd);
}

static void test_refusals(void **state)
{
	run_client(*state, client_refusals);
}

/* A value damaged on the drive: GET answers checksum-mismatch (the store's
 * -EIO), never internal, and NODE_STAT counts it. */
static void client_damage(struct fx *f)
{
	struct cli c;
	struct ovl_wire_req q;
	struct ovl_wire_resp r;
	uint8_t v[8000], *got = NULL, *drive = malloc(32 << 20), *at;
	size_t glen;
	ssize_t n;
	uint32_t st = 0;
	uint64_t errors = UINT64_MAX;
	int fd;

	assert_non_null(drive);
	fill(v, sizeof(v), 9);
	assert_int_equal(cli_connect(&c, &f->addr, f->pki.client, f->pki.client_cert,
				     (size_t)f->pki.client_len, f->cpeers, f->pki.now, &st), 0);
	req_init(&q, "hot", 5, "dmg");
	q.size = sizeof(v);
	q.crc = ovl_crc32c(0, v, sizeof(v));
	assert_int_equal(cli_call(&c, OVL_WIRE_T_PUT, &q, v, sizeof(v), false, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_OK);
	/* find the value's bytes in the drive file and flip one in the middle */
	fd = open(f->path, O_RDWR);
	assert_true(fd >= 0);
	n = pread(fd, drive, 32 << 20, 0);
	assert_true(n > 0);
	at = memmem(drive, (size_t)n, v, 256);
	assert_non_null(at);
	at[4000] ^= 0x20;
	assert_int_equal(pwrite(fd, at + 4000, 1, (at + 4000) - drive), 1);
	close(fd);
	free(drive);
	req_init(&q, "hot", 5, "dmg");
	assert_int_equal(cli_call(&c, OVL_WIRE_T_GET, &q, NULL, 0, false, &r, &got, &glen), 0);
	assert_int_equal(r.status, OVL_WIRE_CHECKSUM_MISMATCH);
	free(got);
	got = NULL;
	req_init(&q, "hot", 5, "x");
	q.key_len = 0;
	assert_int_equal(cli_call(&c, OVL_WIRE_T_NODE_STAT, &q, NULL, 0, false, &r, NULL, NULL), 0);
	for (uint32_t i = 0; i < r.ncounters; i++)
		if (strcmp(r.counters[i].name, "checksum_errors") == 0)
			errors = r.counters[i].value;
	assert_true(errors >= 1 && errors != UINT64_MAX);
	close(c.fd);
}

static void test_damaged_value(void **state)
{
	run_client(*state, client_damage);
}

/* MAP (PROTOCOL.md 7.7): any epoch, the map the control plane holds. */
static void client_map(struct fx *f)
{
	struct cli c;
	struct ovl_wire_req q;
	struct ovl_wire_resp r;
	uint8_t *got = NULL;
	size_t glen = 0;
	uint32_t st = 0;

	assert_int_equal(cli_connect(&c, &f->addr, f->pki.client, f->pki.client_cert,
				     (size_t)f->pki.client_len, f->cpeers, f->pki.now, &st), 0);
	memset(&q, 0, sizeof(q));
	snprintf(q.slice, sizeof(q.slice), "hot");
	q.epoch = 0; /* a client without a map: never stale-map */
	assert_int_equal(cli_call(&c, OVL_WIRE_T_MAP, &q, NULL, 0, false, &r, &got, &glen), 0);
	assert_int_equal(r.status, OVL_WIRE_OK);
	assert_int_equal(r.epoch, 5);
	assert_int_equal(glen, sizeof(fake_map));
	assert_memory_equal(got, fake_map, glen);
	assert_true(r.has_crc);
	assert_int_equal(r.crc, ovl_crc32c(0, got, glen));
	free(got);
	got = NULL;
	/* a slice the node serves but holds no signed map of: not-found */
	snprintf(q.slice, sizeof(q.slice), "enc");
	assert_int_equal(cli_call(&c, OVL_WIRE_T_MAP, &q, NULL, 0, false, &r, &got, &glen), 0);
	assert_int_equal(r.status, OVL_WIRE_NOT_FOUND);
	assert_int_equal(glen, 0);
	free(got);
	got = NULL;
	/* a slice the client may not use: wrong-slice, nothing revealed */
	snprintf(q.slice, sizeof(q.slice), "cold");
	assert_int_equal(cli_call(&c, OVL_WIRE_T_MAP, &q, NULL, 0, false, &r, &got, &glen), 0);
	assert_int_equal(r.status, OVL_WIRE_WRONG_SLICE);
	assert_int_equal(glen, 0);
	free(got);
	close(c.fd);
}

static void test_map(void **state)
{
	run_client(*state, client_map);
}

static void client_hostile(struct fx *f)
{
	struct cli c;
	struct ovl_wire_req q;
	struct ovl_wire_hdr h = { 0 };
	uint8_t meta[256], head[OVL_WIRE_HEAD_MAX_BYTES], b;
	uint32_t st = 0;
	char err[256];
	int mlen, hl;

	/* a client whose certificate comes from another site's CA is refused */
	assert_true(cli_connect(&c, &f->addr, f->pki.rogue, f->pki.rogue_cert,
				(size_t)f->pki.rogue_len, f->cpeers, f->pki.now, &st) < 0);
	assert_int_equal(st, OVL_WIRE_AUTH_FAILED);
	close(c.fd);
	/* a tampered request head closes the connection without an answer */
	assert_int_equal(cli_connect(&c, &f->addr, f->pki.client, f->pki.client_cert,
				     (size_t)f->pki.client_len, f->cpeers, f->pki.now, &st), 0);
	req_init(&q, "hot", 5, "k");
	q.type = OVL_WIRE_T_STAT;
	mlen = ovl_wire_req_encode(&q, meta, sizeof(meta), err, sizeof(err));
	h.type = OVL_WIRE_T_STAT;
	h.rid = 1;
	hl = ovl_wire_head_seal(&c.ses, &h, meta, (size_t)mlen, head, sizeof(head), err, sizeof(err));
	head[OVL_WIRE_HDR_BYTES + 2] ^= 0x20; /* a bit of the meta */
	assert_int_equal(write_full(c.fd, head, (size_t)hl), 0);
	assert_true(recv(c.fd, &b, 1, 0) <= 0);
	close(c.fd);
	/* garbage instead of HELLO: an ERROR frame, then close */
	c.fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(connect(c.fd, (struct sockaddr *)&f->addr, sizeof(f->addr)), 0);
	memset(head, 'x', 64);
	assert_int_equal(write_full(c.fd, head, 64), 0);
	while (recv(c.fd, head, sizeof(head), 0) > 0)
		;
	close(c.fd);
}

static void client_full_drive(struct fx *f)
{
	struct cli c;
	struct ovl_wire_req q;
	struct ovl_wire_resp r;
	uint8_t *v = malloc(4 << 20), *got = NULL;
	size_t glen;
	uint32_t st = 0;
	int i, last = -1;

	fill(v, 4 << 20, 9);
	assert_int_equal(cli_connect(&c, &f->addr, f->pki.client, f->pki.client_cert,
				     (size_t)f->pki.client_len, f->cpeers, f->pki.now, &st), 0);
	/* fill the 128 MiB drive with 4 MiB objects until the node says no-space */
	for (i = 0; i < 64; i++) {
		char key[32];

		snprintf(key, sizeof(key), "fill/%02d", i);
		req_init(&q, "hot", 5, key);
		q.size = 4 << 20;
		q.crc = ovl_crc32c(0, v, 4 << 20);
		assert_int_equal(cli_call(&c, OVL_WIRE_T_PUT, &q, v, 4 << 20, false, &r, NULL, NULL), 0);
		if (r.status != OVL_WIRE_OK)
			break;
		last = i;
	}
	assert_int_equal(r.status, OVL_WIRE_NO_SPACE);
	assert_non_null(strstr(r.message, "full"));
	assert_true(last >= 10);
	/* reads still work, and the connection too */
	req_init(&q, "hot", 5, "fill/03");
	assert_int_equal(cli_call(&c, OVL_WIRE_T_GET, &q, NULL, 0, false, &r, &got, &glen), 0);
	assert_int_equal(r.status, OVL_WIRE_OK);
	assert_int_equal(glen, 4 << 20);
	assert_memory_equal(got, v, 4 << 20);
	free(got);
	close(c.fd);
	free(v);
}

static void test_full_drive(void **state)
{
	run_client(*state, client_full_drive);
}

static void client_oversized_head(struct fx *f)
{
	struct cli c;
	uint8_t hdr[OVL_WIRE_HDR_BYTES], b;
	uint32_t st = 0;

	assert_int_equal(cli_connect(&c, &f->addr, f->pki.client, f->pki.client_cert,
				     (size_t)f->pki.client_len, f->cpeers, f->pki.now, &st), 0);
	/* a header announcing a 1 MiB meta (the cap is 16 KiB): closed from the
	 * 32 header bytes alone, before anything is buffered or allocated */
	memset(hdr, 0, sizeof(hdr));
	memcpy(hdr, OVL_WIRE_MAGIC, 4);
	hdr[4] = OVL_WIRE_T_STAT;
	hdr[8] = 0x00; hdr[9] = 0x10; hdr[10] = 0x00; hdr[11] = 0x00; /* meta_len 1 MiB */
	assert_int_equal(write_full(c.fd, hdr, sizeof(hdr)), 0);
	assert_true(recv(c.fd, &b, 1, 0) <= 0);
	close(c.fd);
	/* a truncated frame then silence: the connection is dropped on the
	 * slow-peer timer, not held */
	assert_int_equal(cli_connect(&c, &f->addr, f->pki.client, f->pki.client_cert,
				     (size_t)f->pki.client_len, f->cpeers, f->pki.now, &st), 0);
	assert_int_equal(write_full(c.fd, hdr, 10), 0);
	assert_true(recv(c.fd, &b, 1, 0) <= 0);
	close(c.fd);
}

static void test_oversized_and_truncated(void **state)
{
	run_client(*state, client_oversized_head);
}

static void test_hostile_clients(void **state)
{
	struct fx *f = *state;
	struct node_dp_stats st;

	run_client(f, client_hostile);
	node_dp_stats(f->dp, &st);
	assert_true(st.handshake_failures >= 2);
	assert_true(st.auth_failures >= 1);
}

/* ---- admission, limits and timers ---- */

/* A sealed request frame (head and payload) as the client would send it. */
/* The sealed head of a request (the next rid) into out; its length. */
static size_t req_head(struct cli *c, uint8_t type, const struct ovl_wire_req *q, size_t plen,
		       uint8_t *out, size_t cap)
{
	struct ovl_wire_hdr h = { 0 };
	struct ovl_wire_req typed = *q;
	uint8_t meta[OVL_WIRE_META_MAX_BYTES];
	char err[256];
	int mlen, hl;

	typed.type = type;
	mlen = ovl_wire_req_encode(&typed, meta, sizeof(meta), err, sizeof(err));
	if (mlen < 0)
		fail_msg("encode: %s", err);
	h.type = type;
	h.payload_len = plen;
	h.rid = ++c->rid;
	hl = ovl_wire_head_seal(&c->ses, &h, meta, (size_t)mlen, out, cap, err, sizeof(err));
	assert_true(hl > 0);
	return (size_t)hl;
}

static size_t req_frame(struct cli *c, uint8_t type, const struct ovl_wire_req *q,
			const void *payload, size_t plen, uint8_t *out, size_t cap)
{
	size_t hl = req_head(c, type, q, plen, out, cap);

	assert_true(hl + plen <= cap);
	if (plen)
		memcpy(out + hl, payload, plen);
	return hl + plen;
}

/* Read the next answer, whichever it is: its rid, meta and (decrypted)
 * payload in *out (malloc'd). 0 or -ECONNRESET. */
static int cli_recv(struct cli *c, uint32_t *rid, struct ovl_wire_resp *r, uint8_t **out,
		    size_t *outlen)
{
	uint8_t head[OVL_WIRE_HEAD_MAX_BYTES];
	const uint8_t *rmeta = NULL;
	struct ovl_wire_hdr rh;
	uint64_t plain;
	char err[256];
	int n = read_head(c->fd, true, head, &rh);

	*out = NULL;
	*outlen = 0;
	if (n < 0)
		return -ECONNRESET;
	if (ovl_wire_head_open(&c->ses, head, (size_t)n, &rh, &rmeta, err, sizeof(err)) < 0)
		fail_msg("response head: %s", err);
	if (ovl_wire_resp_decode(rh.type, rmeta, rh.meta_len, r, err, sizeof(err)) < 0)
		fail_msg("response meta: %s", err);
	*rid = rh.rid;
	*out = malloc(rh.payload_len + 1);
	*outlen = rh.payload_len;
	if (rh.payload_len && read_full(c->fd, *out, rh.payload_len) < 0)
		return -ECONNRESET;
	if (rh.flags & OVL_WIRE_FLAG_ENCRYPTED) {
		uint8_t *src = *out, *dst = *out;

		assert_int_equal(ovl_wire_plain_len(rh.payload_len, &plain), 0);
		for (uint64_t off = 0, i = 0; off < plain; off += OVL_WIRE_CHUNK_BYTES, i++) {
			size_t k = plain - off < OVL_WIRE_CHUNK_BYTES ? plain - off : OVL_WIRE_CHUNK_BYTES;

			assert_int_equal(ovl_wire_chunk_open(&c->ses, head, (uint32_t)i, src, k), 0);
			memmove(dst, src, k);
			src += k + OVL_WIRE_TAG_BYTES;
			dst += k;
		}
		*outlen = plain;
	}
	return 0;
}

/* Read one response, its payload discarded; its rid and status. */
static int read_resp(struct cli *c, uint32_t *rid, struct ovl_wire_resp *r)
{
	uint8_t *payload = NULL;
	size_t len = 0;
	int ret = cli_recv(c, rid, r, &payload, &len);

	free(payload);
	return ret;
}

/* An unauthenticated ERROR frame: its code. */
static uint32_t read_error(int fd, char *text)
{
	uint8_t head[OVL_WIRE_HEAD_MAX_BYTES];
	struct ovl_wire_hdr h;
	uint32_t status = 0;
	char err[256];
	int n = read_head(fd, false, head, &h);

	assert_true(n > 0);
	assert_int_equal(h.type, OVL_WIRE_T_ERROR);
	assert_int_equal(ovl_wire_error_parse(head + OVL_WIRE_HDR_BYTES, h.meta_len, &status, text, err,
					      sizeof(err)), 0);
	return status;
}

static bool closed(int fd)
{
	uint8_t b;

	return recv(fd, &b, 1, 0) <= 0;
}

static int connect_as(struct fx *f, struct cli *c, bool node_key)
{
	uint32_t st = 0;

	return cli_connect(c, &f->addr, node_key ? f->pki.node : f->pki.client,
			   node_key ? f->pki.node_cert : f->pki.client_cert,
			   (size_t)(node_key ? f->pki.node_len : f->pki.client_len), f->cpeers, f->pki.now,
			   &st);
}

/* A response-type frame from a client (correctly MAC'd): the node closes
 * the connection without an answer. */
static void client_response_frame(struct fx *f)
{
	struct cli c;
	struct ovl_wire_hdr h = { 0 };
	struct ovl_wire_resp r = { .type = OVL_WIRE_T_STAT | OVL_WIRE_T_RESPONSE };
	uint8_t meta[512], head[OVL_WIRE_HEAD_MAX_BYTES];
	char err[256];
	int mlen, hl;

	assert_int_equal(connect_as(f, &c, false), 0);
	mlen = ovl_wire_resp_encode(&r, meta, sizeof(meta), err, sizeof(err));
	assert_true(mlen > 0);
	h.type = OVL_WIRE_T_STAT | OVL_WIRE_T_RESPONSE;
	h.rid = 1;
	hl = ovl_wire_head_seal(&c.ses, &h, meta, (size_t)mlen, head, sizeof(head), err, sizeof(err));
	assert_true(hl > 0);
	assert_int_equal(write_full(c.fd, head, (size_t)hl), 0);
	assert_true(closed(c.fd));
	close(c.fd);
}

static void test_response_frame_closes(void **state)
{
	struct fx *f = *state;
	struct node_dp_stats st;

	run_client(f, client_response_frame);
	node_dp_stats(f->dp, &st);
	assert_int_equal(st.response_frames, 1);
	assert_int_equal(st.requests, 0);
}

/* max_inflight 4: 4 GETs pipelined are all served; a 5th in the same
 * burst is answered busy, the others still served. */
static void client_inflight(struct fx *f)
{
	struct cli c;
	struct ovl_wire_req q;
	struct ovl_wire_resp r;
	uint8_t v[100], *wire = malloc(64 << 10);
	size_t n = 0;
	uint32_t rid, busy = 0, ok = 0;

	fill(v, sizeof(v), 7);
	assert_int_equal(connect_as(f, &c, false), 0);
	req_init(&q, "hot", 5, "inflight");
	q.size = sizeof(v);
	q.crc = ovl_crc32c(0, v, sizeof(v));
	assert_int_equal(cli_call(&c, OVL_WIRE_T_PUT, &q, v, sizeof(v), false, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_OK);
	for (int round = 4; round <= 5; round++) {
		n = 0;
		busy = ok = 0;
		req_init(&q, "hot", 5, "inflight");
		for (int i = 0; i < round; i++)
			n += req_frame(&c, OVL_WIRE_T_GET, &q, NULL, 0, wire + n, (64 << 10) - n);
		assert_int_equal(write_full(c.fd, wire, n), 0);
		for (int i = 0; i < round; i++) {
			assert_int_equal(read_resp(&c, &rid, &r), 0);
			if (r.status == OVL_WIRE_BUSY) {
				busy++;
				assert_non_null(strstr(r.message, "in flight"));
			} else {
				assert_int_equal(r.status, OVL_WIRE_OK);
				ok++;
			}
		}
		assert_int_equal(busy, round == 4 ? 0 : 1); /* at the limit all; one past: busy */
		assert_int_equal(ok, 4);
	}
	free(wire);
	close(c.fd);
}

static void test_inflight_limit(void **state)
{
	run_client(*state, client_inflight);
}

/* put_budget 100,000 bytes: a PUT of exactly that is stored; one byte more
 * is answered busy and nothing is stored. */
static void client_put_budget(struct fx *f)
{
	struct cli c;
	struct ovl_wire_req q;
	struct ovl_wire_resp r;
	uint8_t *v = malloc(100001);

	fill(v, 100001, 8);
	assert_int_equal(connect_as(f, &c, false), 0);
	req_init(&q, "hot", 5, "atbudget");
	q.size = 100000;
	q.crc = ovl_crc32c(0, v, 100000);
	assert_int_equal(cli_call(&c, OVL_WIRE_T_PUT, &q, v, 100000, false, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_OK);
	req_init(&q, "hot", 5, "overbudget");
	q.size = 100001;
	q.crc = ovl_crc32c(0, v, 100001);
	assert_int_equal(cli_call(&c, OVL_WIRE_T_PUT, &q, v, 100001, false, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_BUSY);
	req_init(&q, "hot", 5, "overbudget");
	assert_int_equal(cli_call(&c, OVL_WIRE_T_STAT, &q, NULL, 0, false, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_NOT_FOUND);
	free(v);
	close(c.fd);
}

static void test_put_budget_limit(void **state)
{
	run_client(*state, client_put_budget);
}

/* max_conns_per_key 2: a key's 2 connections are served; its third gets
 * busy to its first request and the close; another key is served. */
static void client_per_key(struct fx *f)
{
	struct cli c[4];
	struct ovl_wire_req q;
	struct ovl_wire_resp r;

	req_init(&q, "hot", 5, "nope");
	for (int i = 0; i < 4; i++)
		assert_int_equal(connect_as(f, &c[i], i == 3), 0);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(cli_call(&c[i], OVL_WIRE_T_STAT, &q, NULL, 0, false, &r, NULL, NULL), 0);
		assert_int_equal(r.status, OVL_WIRE_NOT_FOUND); /* served */
	}
	assert_int_equal(cli_call(&c[2], OVL_WIRE_T_STAT, &q, NULL, 0, false, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_BUSY);
	assert_non_null(strstr(r.message, "client key"));
	assert_true(closed(c[2].fd));
	assert_int_equal(cli_call(&c[3], OVL_WIRE_T_STAT, &q, NULL, 0, false, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_NOT_FOUND);
	/* one of the key's connections goes: the key may have another */
	close(c[0].fd);
	usleep(100000);
	assert_int_equal(connect_as(f, &c[0], false), 0);
	assert_int_equal(cli_call(&c[0], OVL_WIRE_T_STAT, &q, NULL, 0, false, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_NOT_FOUND);
	for (int i = 0; i < 4; i++)
		close(c[i].fd);
}

static void test_per_key_limit(void **state)
{
	run_client(*state, client_per_key);
}

/* max_conns 3, max_unauth 2, handshake 400 ms: a silent connection gets
 * ERROR timeout at the deadline; one with keys but no request is just
 * closed; with 2 authenticated and 1 silent, a new connection evicts the
 * silent one (ERROR busy); with 3 authenticated, a new one gets ERROR busy
 * at once. */
static void client_admission(struct fx *f)
{
	struct cli c[4];
	struct ovl_wire_req q;
	struct ovl_wire_resp r;
	char text[OVL_WIRE_TEXT_SIZE];
	struct timespec t0, t1;
	int s1, s2, s3;

	req_init(&q, "hot", 5, "nope");
	/* the handshake deadline, in HELLO and after it */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	s1 = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(connect(s1, (struct sockaddr *)&f->addr, sizeof(f->addr)), 0);
	assert_int_equal(connect_as(f, &c[0], false), 0);
	assert_int_equal(read_error(s1, text), OVL_WIRE_TIMEOUT);
	assert_non_null(strstr(text, "handshake"));
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_true((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 >= 400);
	assert_true(closed(s1));
	assert_true(closed(c[0].fd));
	close(s1);
	close(c[0].fd);
	/* two authenticated clients and one silent connection: full */
	for (int i = 0; i < 2; i++) {
		assert_int_equal(connect_as(f, &c[i], i == 1), 0);
		assert_int_equal(cli_call(&c[i], OVL_WIRE_T_STAT, &q, NULL, 0, false, &r, NULL, NULL), 0);
	}
	s2 = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(connect(s2, (struct sockaddr *)&f->addr, sizeof(f->addr)), 0);
	usleep(50000);
	/* a legitimate client: the silent one makes room and is told busy */
	assert_int_equal(connect_as(f, &c[2], false), 0);
	assert_int_equal(read_error(s2, text), OVL_WIRE_BUSY);
	assert_true(closed(s2));
	close(s2);
	assert_int_equal(cli_call(&c[2], OVL_WIRE_T_STAT, &q, NULL, 0, false, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_NOT_FOUND);
	/* three authenticated: the next connection gets ERROR busy at once */
	s3 = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(connect(s3, (struct sockaddr *)&f->addr, sizeof(f->addr)), 0);
	assert_int_equal(read_error(s3, text), OVL_WIRE_BUSY);
	assert_non_null(strstr(text, "too many connections"));
	assert_true(closed(s3));
	close(s3);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(cli_call(&c[i], OVL_WIRE_T_STAT, &q, NULL, 0, false, &r, NULL, NULL), 0);
		close(c[i].fd);
	}
}

static void test_admission(void **state)
{
	struct fx *f = *state;
	struct node_serve_stats st;

	run_client(f, client_admission);
	node_dp_serve_stats(f->dp, &st);
	assert_int_equal(st.timed_out_handshake, 2);
	assert_int_equal(st.evicted, 1);
	assert_int_equal(st.refused_busy, 1);
}

/* progress 300 ms / 8 KiB: a 600 KiB PUT (streamed) at ~40 KiB per 100 ms
 * completes over several intervals; one that stops half-way gets status
 * timeout and the close, and nothing is stored. */
static void client_progress(struct fx *f)
{
	struct cli c;
	struct ovl_wire_req q;
	struct ovl_wire_resp r;
	size_t n = 600 << 10, len, off;
	uint8_t *v = malloc(n), *wire = malloc(n + OVL_WIRE_HEAD_MAX_BYTES);
	uint32_t rid;
	struct timespec t0, t1;

	fill(v, n, 11);
	assert_int_equal(connect_as(f, &c, false), 0);
	for (int stall = 0; stall <= 1; stall++) {
		req_init(&q, "hot", 5, stall ? "stalled" : "steady");
		q.type = OVL_WIRE_T_PUT;
		q.size = n;
		q.crc = ovl_crc32c(0, v, n);
		len = req_frame(&c, OVL_WIRE_T_PUT, &q, v, n, wire, n + OVL_WIRE_HEAD_MAX_BYTES);
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (off = 0; off < (stall ? len / 2 : len); ) {
			size_t k = len - off < (40u << 10) ? len - off : (40u << 10);

			assert_int_equal(write_full(c.fd, wire + off, k), 0);
			off += k;
			usleep(100000);
		}
		assert_int_equal(read_resp(&c, &rid, &r), 0);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		assert_int_equal(rid, c.rid);
		if (!stall) {
			assert_int_equal(r.status, OVL_WIRE_OK);
			assert_true(t1.tv_sec - t0.tv_sec >= 1); /* several intervals */
			continue;
		}
		assert_int_equal(r.status, OVL_WIRE_TIMEOUT);
		assert_non_null(strstr(r.message, "nothing stored"));
		assert_true(closed(c.fd));
		close(c.fd);
	}
	assert_int_equal(connect_as(f, &c, false), 0);
	req_init(&q, "hot", 5, "stalled");
	assert_int_equal(cli_call(&c, OVL_WIRE_T_STAT, &q, NULL, 0, false, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_NOT_FOUND);
	req_init(&q, "hot", 5, "steady");
	assert_int_equal(cli_call(&c, OVL_WIRE_T_STAT, &q, NULL, 0, false, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_OK);
	assert_int_equal(r.size, n);
	close(c.fd);
	free(v);
	free(wire);
}

static void test_progress(void **state)
{
	struct fx *f = *state;
	struct node_dp_stats st;

	run_client(f, client_progress);
	node_dp_stats(f->dp, &st);
	assert_int_equal(st.timed_out, 1);
}

static const struct limits lim_inflight = { .max_inflight = 4 };
static const struct limits lim_budget = { .put_budget = 100000 };
static const struct limits lim_key = { .max_per_key = 2 };
static const struct limits lim_admit = { .max_conns = 3, .max_unauth = 2, .handshake_ms = 400 };
static const struct limits lim_progress = { .progress_ms = 300, .progress_bytes = 8 << 10,
					    .put_budget = 8 << 20 };

/* ---- pipelining: requests sent before their answers are read ---- */

/* Send one request without waiting; its rid. */
static uint32_t cli_send(struct cli *c, uint8_t type, const struct ovl_wire_req *q,
			 const void *payload, size_t plen)
{
	uint8_t head[OVL_WIRE_HEAD_MAX_BYTES];
	size_t hl = req_head(c, type, q, plen, head, sizeof(head));

	assert_int_equal(write_full(c->fd, head, hl), 0);
	if (plen)
		assert_int_equal(write_full(c->fd, payload, plen), 0);
	return c->rid;
}

/* Receive one answer: the index in rid[0..n) of the request it answers. */
static int recv_match(struct cli *c, const uint32_t *rid, int n, struct ovl_wire_resp *r,
		      uint8_t **got, size_t *glen)
{
	uint32_t id = 0;
	int k;

	assert_int_equal(cli_recv(c, &id, r, got, glen), 0);
	for (k = 0; k < n && rid[k] != id; k++)
		;
	assert_true(k < n);
	return k;
}


/* The node's own counter `name` (NODE-STAT), or UINT64_MAX. */
static uint64_t node_counter(struct cli *c, const char *name)
{
	struct ovl_wire_req q;
	struct ovl_wire_resp r;

	req_init(&q, "hot", 5, "x");
	q.key_len = 0;
	assert_int_equal(cli_call(c, OVL_WIRE_T_NODE_STAT, &q, NULL, 0, false, &r, NULL, NULL), 0);
	for (uint32_t i = 0; i < r.ncounters; i++)
		if (strcmp(r.counters[i].name, name) == 0)
			return r.counters[i].value;
	return UINT64_MAX;
}

/* Wait (up to 5 s) until the node holds no response bytes. */
static void wait_resp_drained(struct cli *c)
{
	uint64_t v = UINT64_MAX;

	for (int i = 0; i < 500 && (v = node_counter(c, "response_bytes_held")) != 0; i++)
		usleep(10000);
	assert_int_equal(v, 0);
}

static void connect_ok(struct fx *f, struct cli *c)
{
	uint32_t st = 0;

	assert_int_equal(cli_connect(c, &f->addr, f->pki.client, f->pki.client_cert,
				     (size_t)f->pki.client_len, f->cpeers, f->pki.now, &st), 0);
}

#define ORDER_REQS 8

/* Requests on one key, all sent before any answer is read, take effect in
 * the order sent: a GET sees the PUT before it (buffered or streamed), a
 * GET after a DELETE is not-found; unrelated requests are answered too. */
static void client_order(struct fx *f)
{
	size_t big = 300u << 10; /* streams into the store (over 128 KiB) */
	uint8_t *v1 = malloc(1000), *v2 = malloc(big), *v3 = malloc(5000);
	struct ovl_wire_req q;
	struct cli c;

	fill(v1, 1000, 11);
	fill(v2, big, 12);
	fill(v3, 5000, 13);
	connect_ok(f, &c);
	for (int round = 0; round < 20; round++) {
		uint32_t rid[ORDER_REQS];
		bool seen[ORDER_REQS] = { false };
		char key[32];
		int n = 0;

		snprintf(key, sizeof(key), "order/%d", round);
		req_init(&q, "hot", 5, key);
		q.size = 1000;
		q.crc = ovl_crc32c(0, v1, 1000);
		rid[n++] = cli_send(&c, OVL_WIRE_T_PUT, &q, v1, 1000);   /* 0 */
		req_init(&q, "hot", 5, key);
		rid[n++] = cli_send(&c, OVL_WIRE_T_GET, &q, NULL, 0);    /* 1: v1 */
		q.size = big;
		q.crc = ovl_crc32c(0, v2, big);
		rid[n++] = cli_send(&c, OVL_WIRE_T_PUT, &q, v2, big);    /* 2 */
		req_init(&q, "hot", 5, key);
		rid[n++] = cli_send(&c, OVL_WIRE_T_GET, &q, NULL, 0);    /* 3: v2 */
		rid[n++] = cli_send(&c, OVL_WIRE_T_STAT, &q, NULL, 0);   /* 4: v2's size */
		rid[n++] = cli_send(&c, OVL_WIRE_T_DELETE, &q, NULL, 0); /* 5 */
		rid[n++] = cli_send(&c, OVL_WIRE_T_GET, &q, NULL, 0);    /* 6: not-found */
		req_init(&q, "hot", 5, "order/other");
		q.size = 5000;
		q.crc = ovl_crc32c(0, v3, 5000);
		rid[n++] = cli_send(&c, OVL_WIRE_T_PUT, &q, v3, 5000);   /* 7: unrelated */
		for (int i = 0; i < n; i++) {
			struct ovl_wire_resp r;
			uint8_t *got = NULL;
			size_t glen = 0;
			int k = recv_match(&c, rid, n, &r, &got, &glen);

			assert_false(seen[k]);
			seen[k] = true;
			switch (k) {
			case 1:
				assert_int_equal(r.status, OVL_WIRE_OK);
				assert_int_equal(glen, 1000);
				assert_memory_equal(got, v1, 1000);
				break;
			case 3:
				assert_int_equal(r.status, OVL_WIRE_OK);
				assert_int_equal(glen, big);
				assert_memory_equal(got, v2, big);
				assert_int_equal(r.crc, ovl_crc32c(0, v2, big));
				break;
			case 4:
				assert_int_equal(r.status, OVL_WIRE_OK);
				assert_int_equal(r.size, big);
				break;
			case 6:
				assert_int_equal(r.status, OVL_WIRE_NOT_FOUND);
				assert_int_equal(glen, 0);
				break;
			default:
				assert_int_equal(r.status, OVL_WIRE_OK);
				break;
			}
			free(got);
		}
	}
	close(c.fd);
	free(v1);
	free(v2);
	free(v3);
}

static void test_order(void **state)
{
	run_client(*state, client_order);
}

#define TOGETHER_SMALL 12

/* Small GETs pipelined on one connection are read together (each answer
 * whole, in one frame), a GET answered in pieces reads alone between
 * them, and requests on the same key still take effect in the order sent:
 * every answer is right and whole, whatever order they come in. */
static void client_together(struct fx *f)
{
	size_t big = 4u << 20, small = 4096;
	uint8_t *vb = malloc(big), *vs[TOGETHER_SMALL], *vnew = malloc(small);
	struct ovl_wire_req q;
	struct ovl_wire_resp r;
	struct cli c;
	char key[32];
	uint32_t rid[64];
	int kind[64], which[64], n = 0;
	enum { K_SMALL, K_BIG, K_NEW, K_GONE, K_OTHER };

	connect_ok(f, &c);
	fill(vb, big, 41);
	fill(vnew, small, 42);
	req_init(&q, "hot", 5, "t/big");
	q.size = big;
	q.crc = ovl_crc32c(0, vb, big);
	assert_int_equal(cli_call(&c, OVL_WIRE_T_PUT, &q, vb, big, false, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_OK);
	for (int i = 0; i < TOGETHER_SMALL; i++) {
		vs[i] = malloc(small);
		fill(vs[i], small, 50 + i);
		snprintf(key, sizeof(key), "t/s%d", i);
		req_init(&q, "hot", 5, key);
		q.size = small;
		q.crc = ovl_crc32c(0, vs[i], small);
		assert_int_equal(cli_call(&c, OVL_WIRE_T_PUT, &q, vs[i], small, false, &r, NULL,
					  NULL), 0);
		assert_int_equal(r.status, OVL_WIRE_OK);
	}
	for (int round = 0; round < 2; round++) {
		n = 0;
		for (int i = 0; i < TOGETHER_SMALL; i++) {
			snprintf(key, sizeof(key), "t/s%d", i);
			req_init(&q, "hot", 5, key);
			which[n] = i;
			kind[n] = K_SMALL;
			rid[n++] = cli_send(&c, OVL_WIRE_T_GET, &q, NULL, 0);
			if (i == 5) { /* a GET in pieces among them */
				req_init(&q, "hot", 5, "t/big");
				kind[n] = K_BIG;
				rid[n++] = cli_send(&c, OVL_WIRE_T_GET, &q, NULL, 0);
			}
		}
		/* the first round: a PUT over s3 and a DELETE of s4 behind the
		 * GETs, then GETs of both: each after its write */
		if (round == 0) {
			req_init(&q, "hot", 5, "t/s3");
			q.size = small;
			q.crc = ovl_crc32c(0, vnew, small);
			kind[n] = K_OTHER;
			rid[n++] = cli_send(&c, OVL_WIRE_T_PUT, &q, vnew, small);
			req_init(&q, "hot", 5, "t/s4");
			kind[n] = K_OTHER;
			rid[n++] = cli_send(&c, OVL_WIRE_T_DELETE, &q, NULL, 0);
			req_init(&q, "hot", 5, "t/s3");
			kind[n] = K_NEW;
			rid[n++] = cli_send(&c, OVL_WIRE_T_GET, &q, NULL, 0);
			req_init(&q, "hot", 5, "t/s4");
			kind[n] = K_GONE;
			rid[n++] = cli_send(&c, OVL_WIRE_T_GET, &q, NULL, 0);
		}
		for (int i = 0; i < n; i++) {
			uint8_t *got = NULL;
			size_t glen = 0;
			int k = recv_match(&c, rid, n, &r, &got, &glen);

			rid[k] = UINT32_MAX; /* answered once */
			switch (kind[k]) {
			case K_SMALL: {
				/* round 1 reads s3's new bytes; s4 is gone */
				const uint8_t *want = round == 1 && which[k] == 3 ? vnew : vs[which[k]];

				if (round == 1 && which[k] == 4) {
					assert_int_equal(r.status, OVL_WIRE_NOT_FOUND);
					break;
				}
				assert_int_equal(r.status, OVL_WIRE_OK);
				assert_int_equal(glen, small);
				assert_memory_equal(got, want, small);
				break;
			}
			case K_BIG:
				assert_int_equal(r.status, OVL_WIRE_OK);
				assert_int_equal(glen, big);
				assert_memory_equal(got, vb, big);
				break;
			case K_NEW:
				assert_int_equal(r.status, OVL_WIRE_OK);
				assert_int_equal(glen, small);
				assert_memory_equal(got, vnew, small);
				break;
			case K_GONE:
				assert_int_equal(r.status, OVL_WIRE_NOT_FOUND);
				break;
			default:
				assert_int_equal(r.status, OVL_WIRE_OK);
				break;
			}
			free(got);
		}
	}
	wait_resp_drained(&c);
	close(c.fd);
	for (int i = 0; i < TOGETHER_SMALL; i++)
		free(vs[i]);
	free(vb);
	free(vnew);
}

static const struct limits lim_together = { .max_inflight = 32 };

static void test_gets_together(void **state)
{
	struct fx *f = *state;
	struct node_dp_stats st;

	run_client(f, client_together);
	node_dp_stats(f->dp, &st);
	/* the small GETs were read together (their reads in flight at once) */
	assert_true(st.gets_together_max >= 2);
	assert_true(st.gets_together_max <= 16);
	assert_int_equal(st.resp_bytes, 0);
}

#define PIECE_OBJ (4u << 20)

/* GETs answered in pieces much smaller than the object, plain and
 * encrypted, whole and ranged, several pipelined on one connection: the
 * bytes and crcs are right, and nothing stays held afterwards. */
static void client_pieces(struct fx *f)
{
	uint8_t *v = malloc(PIECE_OBJ), *w = malloc(PIECE_OBJ);
	struct ovl_wire_req q;
	struct ovl_wire_resp r;
	uint8_t *got = NULL;
	size_t glen = 0;
	uint32_t rid[4];
	struct cli c;

	fill(v, PIECE_OBJ, 21);
	fill(w, PIECE_OBJ, 22);
	connect_ok(f, &c);
	req_init(&q, "hot", 5, "p/v");
	q.size = PIECE_OBJ;
	q.crc = ovl_crc32c(0, v, PIECE_OBJ);
	assert_int_equal(cli_call(&c, OVL_WIRE_T_PUT, &q, v, PIECE_OBJ, false, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_OK);
	req_init(&q, "enc", 1, "p/w");
	q.size = PIECE_OBJ;
	q.crc = ovl_crc32c(0, w, PIECE_OBJ);
	assert_int_equal(cli_call(&c, OVL_WIRE_T_PUT, &q, w, PIECE_OBJ, true, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_OK);
	/* whole, plain and encrypted */
	req_init(&q, "hot", 5, "p/v");
	assert_int_equal(cli_call(&c, OVL_WIRE_T_GET, &q, NULL, 0, false, &r, &got, &glen), 0);
	assert_int_equal(r.status, OVL_WIRE_OK);
	assert_int_equal(glen, PIECE_OBJ);
	assert_memory_equal(got, v, PIECE_OBJ);
	assert_int_equal(r.crc, ovl_crc32c(0, v, PIECE_OBJ));
	free(got);
	req_init(&q, "enc", 1, "p/w");
	assert_int_equal(cli_call(&c, OVL_WIRE_T_GET, &q, NULL, 0, false, &r, &got, &glen), 0);
	assert_int_equal(r.status, OVL_WIRE_OK);
	assert_int_equal(glen, PIECE_OBJ);
	assert_memory_equal(got, w, PIECE_OBJ);
	free(got);
	/* a range over many pieces, not on a chunk, plain and encrypted */
	for (int e = 0; e < 2; e++) {
		req_init(&q, e ? "enc" : "hot", e ? 1 : 5, e ? "p/w" : "p/v");
		q.has_range = true;
		q.offset = 77777;
		q.length = 1234567;
		assert_int_equal(cli_call(&c, OVL_WIRE_T_GET, &q, NULL, 0, false, &r, &got, &glen), 0);
		assert_int_equal(r.status, OVL_WIRE_OK);
		assert_int_equal(r.size, PIECE_OBJ);
		assert_int_equal(r.offset, 77777);
		assert_int_equal(glen, 1234567);
		assert_memory_equal(got, (e ? w : v) + 77777, 1234567);
		assert_int_equal(r.crc, ovl_crc32c(0, got, glen));
		free(got);
	}
	/* four GETs pipelined, with a STAT between: all answered, whole */
	req_init(&q, "hot", 5, "p/v");
	rid[0] = cli_send(&c, OVL_WIRE_T_GET, &q, NULL, 0);
	rid[1] = cli_send(&c, OVL_WIRE_T_GET, &q, NULL, 0);
	rid[2] = cli_send(&c, OVL_WIRE_T_STAT, &q, NULL, 0);
	rid[3] = cli_send(&c, OVL_WIRE_T_GET, &q, NULL, 0);
	for (int i = 0; i < 4; i++) {
		uint32_t id = 0;

		assert_int_equal(cli_recv(&c, &id, &r, &got, &glen), 0);
		assert_int_equal(r.status, OVL_WIRE_OK);
		if (id == rid[2]) {
			assert_int_equal(r.size, PIECE_OBJ);
		} else {
			assert_true(id == rid[0] || id == rid[1] || id == rid[3]);
			assert_int_equal(glen, PIECE_OBJ);
			assert_memory_equal(got, v, PIECE_OBJ);
		}
		free(got);
	}
	wait_resp_drained(&c);
	assert_int_equal(node_counter(&c, "put_bytes_held"), 0);
	close(c.fd);
	free(v);
	free(w);
}

static int setup_pieces(void **state)
{
	knobs.piece = 64u << 10;
	knobs.share = 64u * 3 << 10;  /* a piece and its slack, and a bit */
	knobs.budget = 1u << 20;
	knobs.send_timeout_ms = 1000;
	return setup(state);
}

static int teardown_pieces(void **state)
{
	memset(&knobs, 0, sizeof(knobs));
	return teardown(state);
}

static void test_pieces(void **state)
{
	run_client(*state, client_pieces);
}

#define DEFER_KEYS 120

/* A GET answered in pieces, and behind it (pipelined) a LIST whose answer
 * (about 120 KB) must wait for the GET's payload: the deferred answer's
 * bytes do not hold back the GET's next pieces (they once did, and the
 * GET stalled for good: the deferred answer drains only at its end). */
static void client_deferred(struct fx *f)
{
	size_t big = 1u << 20;
	uint8_t *v = malloc(big), *got = NULL;
	char key[1100];
	struct ovl_wire_req q;
	struct ovl_wire_resp r;
	struct timeval tv = { .tv_sec = 10 };
	uint32_t rg, rl, id = 0;
	bool seen_get = false, seen_list = false;
	struct cli c;

	fill(v, big, 61);
	connect_ok(f, &c);
	setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	for (int i = 0; i < DEFER_KEYS; i++) {
		snprintf(key, sizeof(key), "d/%0990d", i);
		req_init(&q, "hot", 5, key);
		q.size = 0;
		q.crc = 0;
		assert_int_equal(cli_call(&c, OVL_WIRE_T_PUT, &q, NULL, 0, false, &r, NULL, NULL), 0);
		assert_int_equal(r.status, OVL_WIRE_OK);
	}
	req_init(&q, "hot", 5, "e/big");
	q.size = big;
	q.crc = ovl_crc32c(0, v, big);
	assert_int_equal(cli_call(&c, OVL_WIRE_T_PUT, &q, v, big, false, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_OK);
	req_init(&q, "hot", 5, "e/big");
	rg = cli_send(&c, OVL_WIRE_T_GET, &q, NULL, 0);
	req_init(&q, "hot", 5, "d/");
	rl = cli_send(&c, OVL_WIRE_T_LIST, &q, NULL, 0);
	for (int i = 0; i < 2; i++) {
		size_t glen = 0;

		assert_int_equal(cli_recv(&c, &id, &r, &got, &glen), 0);
		assert_int_equal(r.status, OVL_WIRE_OK);
		if (id == rg) {
			assert_int_equal(glen, big);
			assert_memory_equal(got, v, big);
			seen_get = true;
		} else {
			assert_int_equal(id, rl);
			assert_int_equal(r.count, DEFER_KEYS);
			assert_true(glen > 100000);
			seen_list = true;
		}
		free(got);
		got = NULL;
	}
	assert_true(seen_get && seen_list);
	wait_resp_drained(&c);
	close(c.fd);
	free(v);
}

static void test_deferred_behind_pieces(void **state)
{
	run_client(*state, client_deferred);
}

/* The data plane's bound on a read buffer: the record, or the chunks
 * asked, and block alignment (8 KiB) */
#define WHOLE_SHARE (512u << 10)
#define WHOLE_ALIGN (8u << 10)
#define WHOLE_PIECE (64u << 10)

#define WHOLE_PROBE 480000u /* as many chunks as the values at the limit */

static int whole_step;
static uint64_t whole_ext; /* record bytes beyond rec_size() (a version) */

/* The largest value of a 3-byte key whose record and alignment fit
 * WHOLE_SHARE exactly. */
static uint64_t whole_vmax(void)
{
	uint64_t vmax = 0;

	while (rec_size(3 + whole_ext, vmax + 1) + WHOLE_ALIGN <= WHOLE_SHARE)
		vmax++;
	assert_true(rec_size(3 + whole_ext, vmax) + WHOLE_ALIGN == WHOLE_SHARE);
	return vmax;
}

/* One step of test_whole_reads (whole_step): 0 stores a probe (which
 * tells the record's size) and a 4 MiB object; 1 stores the objects at
 * the limit and a byte past it, and GETs the one at it, 2 the other; 3 a range not on a
 * chunk that fits the share (its chunks, one more, and the alignment); 4
 * leaves a reader stalled with GETs of a 4 MiB object (answers read in
 * pieces). */
static void client_whole(struct fx *f)
{
	uint64_t vmax = whole_step ? whole_vmax() : 0, held;
	uint8_t *v = malloc(PIECE_OBJ), *got = NULL;
	struct ovl_wire_req q;
	struct ovl_wire_resp r;
	size_t glen = 0;
	struct cli c, s;
	int small = 4096;

	fill(v, PIECE_OBJ, 41);
	connect_ok(f, &c);
	switch (whole_step) {
	case 0:
	case 1:
		for (int i = 0; i < 2; i++) {
			uint64_t n = whole_step == 0 ? (i ? PIECE_OBJ : WHOLE_PROBE) : vmax + (uint64_t)i;

			req_init(&q, "hot", 5, whole_step == 0 ? (i ? "w/c" : "w/p") : i ? "w/b" : "w/a");
			q.size = n;
			q.crc = ovl_crc32c(0, v, n);
			assert_int_equal(cli_call(&c, OVL_WIRE_T_PUT, &q, v, n, false, &r, NULL, NULL), 0);
			assert_int_equal(r.status, OVL_WIRE_OK);
		}
		if (whole_step == 0)
			break;
		/* fall through */
	case 2: {
		uint64_t n = whole_step == 1 ? vmax : vmax + 1;

		wait_resp_drained(&c); /* the share is free */
		req_init(&q, "hot", 5, whole_step == 1 ? "w/a" : "w/b");
		assert_int_equal(cli_call(&c, OVL_WIRE_T_GET, &q, NULL, 0, false, &r, &got, &glen), 0);
		assert_int_equal(r.status, OVL_WIRE_OK);
		assert_int_equal(glen, n);
		assert_memory_equal(got, v, n);
		assert_int_equal(r.crc, ovl_crc32c(0, v, n));
		free(got);
		break;
	}
	case 3:
		wait_resp_drained(&c);
		req_init(&q, "hot", 5, "w/c");
		q.has_range = true;
		q.offset = 100000;
		q.length = 300000;
		assert_int_equal(cli_call(&c, OVL_WIRE_T_GET, &q, NULL, 0, false, &r, &got, &glen), 0);
		assert_int_equal(r.status, OVL_WIRE_OK);
		assert_int_equal(r.size, PIECE_OBJ);
		assert_int_equal(glen, 300000);
		assert_memory_equal(got, v + 100000, 300000);
		assert_int_equal(r.crc, ovl_crc32c(0, v + 100000, 300000));
		free(got);
		break;
	default:
		/* holds at most two pieces and their alignment, though its
		 * share would take seven */
		wait_resp_drained(&c);
		connect_ok(f, &s);
		setsockopt(s.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
		req_init(&q, "hot", 5, "w/c");
		for (int k = 0; k < 4; k++) /* more than the kernel's buffers take */
			cli_send(&s, OVL_WIRE_T_GET, &q, NULL, 0);
		usleep(300000);
		held = node_counter(&c, "response_bytes_held");
		assert_true(held > 0);
		assert_true(held <= 2 * (WHOLE_PIECE + WHOLE_ALIGN));
		close(s.fd);
		break;
	}
	wait_resp_drained(&c);
	close(c.fd);
	free(v);
}

static int setup_whole(void **state)
{
	knobs.piece = WHOLE_PIECE;
	knobs.share = WHOLE_SHARE;
	knobs.budget = 4u << 20;
	knobs.send_timeout_ms = 5000;
	return setup(state);
}

/* An answer whose read fits the connection's free share is one read (and
 * one send); one byte more and it is read in pieces. At the limit the
 * record and its alignment are the share exactly. */
static void test_whole_reads(void **state)
{
	struct fx *f = *state;
	struct node_dp_stats st;
	uint64_t before;

	for (whole_step = 0; whole_step <= 4; whole_step++) {
		node_dp_stats(f->dp, &st);
		before = st.resp_reads;
		run_client(f, client_whole);
		node_dp_stats(f->dp, &st);
		if (whole_step == 0) {
			uint64_t off = 0, rec = 0;

			/* what a record holds beyond rec_size() (a version) */
			assert_int_equal(node_store_locate(f->store, "w/p", 3, &off, &rec), 0);
			assert_true(rec >= rec_size(3, WHOLE_PROBE));
			whole_ext = rec - rec_size(3, WHOLE_PROBE);
			assert_int_equal(st.resp_reads, before);
		}
		if (whole_step == 1) {
			uint64_t off = 0, rec = 0;

			/* the records are at the limit, and a byte past it */
			assert_int_equal(node_store_locate(f->store, "w/a", 3, &off, &rec), 0);
			assert_int_equal(rec + WHOLE_ALIGN, WHOLE_SHARE);
			assert_int_equal(node_store_locate(f->store, "w/b", 3, &off, &rec), 0);
			assert_true(rec + WHOLE_ALIGN > WHOLE_SHARE);
		}
		else if (whole_step == 1 || whole_step == 3)
			assert_int_equal(st.resp_reads - before, 1);
		else if (whole_step == 2)
			assert_true(st.resp_reads - before >= 2);
	}
	assert_int_equal(st.resp_bytes, 0);
}

#define STALLED 12

/* client_stalled with the send timeout far away (30 s): the waiting GET
 * must get its memory by the node resetting a stalled reader early */
static bool stalled_pressure;

/* Connections that send GETs of a 4 MiB object and never read: the node
 * holds at most the budget (each connection at most its share), pauses
 * them, closes them after the send timeout and frees what they held; a GET
 * from another client that finds the budget full waits, and is answered. */
static void client_stalled(struct fx *f)
{
	uint8_t *v = malloc(PIECE_OBJ), *got = NULL;
	struct cli s[STALLED], c, d;
	struct ovl_wire_req q;
	struct ovl_wire_resp r;
	size_t glen = 0;
	uint64_t held;
	struct timespec t0, t1;

	fill(v, PIECE_OBJ, 31);
	connect_ok(f, &c);
	req_init(&q, "hot", 5, "s/v");
	q.size = PIECE_OBJ;
	q.crc = ovl_crc32c(0, v, PIECE_OBJ);
	assert_int_equal(cli_call(&c, OVL_WIRE_T_PUT, &q, v, PIECE_OBJ, false, &r, NULL, NULL), 0);
	assert_int_equal(r.status, OVL_WIRE_OK);
	for (int i = 0; i < STALLED; i++) {
		int small = 4096;
		struct timeval tv = { .tv_sec = 10 };

		connect_ok(f, &s[i]);
		/* a tiny window, never read: the node's sends stop at once */
		setsockopt(s[i].fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
		setsockopt(s[i].fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		req_init(&q, "hot", 5, "s/v");
		for (int k = 0; k < 4; k++) /* pipelined: the rest waits its turn */
			cli_send(&s[i], OVL_WIRE_T_GET, &q, NULL, 0);
	}
	usleep(300000);
	/* more requests now, when each holds its share: not read (paused) */
	for (int i = 0; i < STALLED; i++)
		cli_send(&s[i], OVL_WIRE_T_STAT, &q, NULL, 0);
	usleep(100000);
	held = node_counter(&c, "response_bytes_held");
	assert_true(held > 0);
	assert_true(held <= 1u << 20); /* the budget */
	/* the budget is taken: this GET waits for the stalled ones to go */
	connect_ok(f, &d);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	req_init(&q, "hot", 5, "s/v");
	assert_int_equal(cli_call(&d, OVL_WIRE_T_GET, &q, NULL, 0, false, &r, &got, &glen), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_int_equal(r.status, OVL_WIRE_OK);
	assert_int_equal(glen, PIECE_OBJ);
	assert_memory_equal(got, v, PIECE_OBJ);
	free(got);
	/* answered within the send timeout and a margin */
	assert_true((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 < 5000);
	/* each stalled connection was closed: what it gets ends well short of
	 * its four answers (under pressure only some were, and the rest are
	 * closed here) */
	for (int i = 0; i < STALLED && stalled_pressure; i++)
		close(s[i].fd);
	for (int i = 0; i < STALLED && !stalled_pressure; i++) {
		uint8_t buf[65536];
		size_t total = 0;
		ssize_t n;

		while ((n = recv(s[i].fd, buf, sizeof(buf), 0)) > 0)
			total += (size_t)n;
		assert_true(n == 0 || errno == ECONNRESET);
		assert_true(total < 4 * (size_t)PIECE_OBJ);
		close(s[i].fd);
	}
	wait_resp_drained(&c);
	close(c.fd);
	close(d.fd);
	free(v);
}

static void test_stalled_readers(void **state)
{
	struct fx *f = *state;
	struct node_serve_stats ss;
	struct node_dp_stats st;

	run_client(f, client_stalled);
	node_dp_serve_stats(f->dp, &ss);
	node_dp_stats(f->dp, &st);
	assert_true(ss.timed_out_send >= STALLED);
	assert_true(st.resp_waits > 0);
	assert_true(st.paused_for_responses > 0);
	assert_int_equal(st.resp_bytes, 0);
}

static int setup_pressure(void **state)
{
	stalled_pressure = true;
	knobs.piece = 64u << 10;
	knobs.share = 64u * 3 << 10;
	knobs.budget = 1u << 20;
	knobs.send_timeout_ms = 30000;
	return setup(state);
}

static int teardown_pressure(void **state)
{
	stalled_pressure = false;
	return teardown_pieces(state);
}

/* The same stalled readers with a 30 s send timeout: the GET that waits
 * for the budget is answered within seconds (client_stalled checks < 5 s),
 * because the node resets the reader stalled longest once the GET has
 * waited NODE_DP_PRESSURE_WAIT_MS, not after the send timeout. */
static void test_stalled_readers_pressure(void **state)
{
	struct fx *f = *state;
	struct node_serve_stats ss;
	struct node_dp_stats st;

	run_client(f, client_stalled);
	node_dp_serve_stats(f->dp, &ss);
	node_dp_stats(f->dp, &st);
	assert_true(st.reset_for_budget >= 1);
	assert_int_equal(ss.reset_stalled, st.reset_for_budget);
	assert_int_equal(ss.timed_out_send, 0);
	assert_int_equal(st.resp_bytes, 0);
}

int main(void)
{
	test_require_io_uring();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_put_get_stat_list_delete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_versions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damaged_value, setup, teardown),
		cmocka_unit_test_setup_teardown(test_map, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hostile_clients, setup, teardown),
		cmocka_unit_test_setup_teardown(test_full_drive, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oversized_and_truncated, setup, teardown),
		cmocka_unit_test_prestate_setup_teardown(test_gets_together, setup, teardown,
							 (void *)&lim_together),
		cmocka_unit_test_setup_teardown(test_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pieces, setup_pieces, teardown_pieces),
		cmocka_unit_test_setup_teardown(test_deferred_behind_pieces, setup_pieces,
						teardown_pieces),
		cmocka_unit_test_setup_teardown(test_whole_reads, setup_whole, teardown_pieces),
		cmocka_unit_test_setup_teardown(test_stalled_readers, setup_pieces, teardown_pieces),
		cmocka_unit_test_setup_teardown(test_stalled_readers_pressure, setup_pressure,
						teardown_pressure),
		cmocka_unit_test_setup_teardown(test_response_frame_closes, setup, teardown),
		cmocka_unit_test_prestate_setup_teardown(test_inflight_limit, setup, teardown,
							 (void *)&lim_inflight),
		cmocka_unit_test_prestate_setup_teardown(test_put_budget_limit, setup, teardown,
							 (void *)&lim_budget),
		cmocka_unit_test_prestate_setup_teardown(test_per_key_limit, setup, teardown,
							 (void *)&lim_key),
		cmocka_unit_test_prestate_setup_teardown(test_admission, setup, teardown,
							 (void *)&lim_admit),
		cmocka_unit_test_prestate_setup_teardown(test_progress, setup, teardown,
							 (void *)&lim_progress),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
