/*
 * test_broker: the broker core (admission, selectors, persistence, deltas,
 * liveness, revocation) driven through brk_handle() with a fake clock and
 * captured output, the files behind it (state, the index of issued
 * clients), and the rate limiter.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <msgpack.h>
#include <sodium.h>

#include "broker.h"

#define MAX_OUT 4096
#define NODES 12

struct sent {
	uint8_t key[32];
	uint8_t *buf;
	size_t len;
};

struct world {
	struct brk_site site;
	struct ovl_id *ca;
	brk_t *b;
	struct brk_files *files;        /* the state files behind b, when it has any */
	uint64_t now_ms, unix_s;
	struct sent out[MAX_OUT];
	unsigned n_out;
	struct ovl_id *nodes[NODES];
	char state_dir[64];
	char lastev[512];
	bool check_durable;             /* every map and delta sent is already on disk */
	unsigned durable_checked;
};

/* The epoch of slice `name` in the membership saved in dir (base and
 * journal), or 0. */
static uint64_t saved_epoch(const char *dir, const char *name)
{
	struct brk_membership m;
	char err[256];
	uint64_t e = 0;

	assert_int_equal(brk_state_members_load(dir, &m, err, sizeof(err)), 0);
	for (size_t i = 0; i < m.n_slices; i++)
		if (strcmp(m.slices[i].name, name) == 0)
			e = m.slices[i].epoch;
	brk_membership_release(&m);
	return e;
}

static void durable_check(struct world *w, const void *buf, size_t len)
{
	struct ovl_msg m;
	char err[256];

	if (ovl_msg_decode(buf, len, &m, err, sizeof(err)) < 0)
		return;
	if (m.type == OVL_MSG_MAP) {
		assert_true(saved_epoch(w->state_dir, m.u.map.slice) >= m.u.map.epoch);
		w->durable_checked++;
	} else if (m.type == OVL_MSG_MAP_DELTA) {
		assert_true(saved_epoch(w->state_dir, m.u.delta.slice) >= m.u.delta.epoch);
		w->durable_checked++;
	}
	ovl_msg_release(&m);
}

static int w_send(void *arg, const struct brk_peer *to, const void *buf, size_t len)
{
	struct world *w = arg;

	if (w->n_out >= MAX_OUT)
		return -ENOBUFS;
	if (w->check_durable)
		durable_check(w, buf, len);
	memcpy(w->out[w->n_out].key, to->key, 32);
	w->out[w->n_out].buf = malloc(len);
	memcpy(w->out[w->n_out].buf, buf, len);
	w->out[w->n_out++].len = len;
	return 0;
}

static uint64_t w_now(void *arg) { return ((struct world *)arg)->now_ms; }
static uint64_t w_unix(void *arg) { return ((struct world *)arg)->unix_s; }
static void w_event(void *arg, enum brk_event ev, const char *line)
{
	(void)ev;
	snprintf(((struct world *)arg)->lastev, 512, "%s", line);
}

static void clear_out(struct world *w)
{
	for (unsigned i = 0; i < w->n_out; i++)
		free(w->out[i].buf);
	w->n_out = 0;
}

static void make_site(struct world *w)
{
	char err[256];
	struct ovl_cert c;
	int n;

	assert_int_equal(ovl_id_generate(&w->ca), 0);
	assert_int_equal(ovl_id_generate(&w->site.id), 0);
	memcpy(w->site.ca_pk, w->ca->sign_pk, 32);
	ovl_cert_init(&c);
	ovl_cert_set_keys(&c, w->site.id);
	c.serial = 1;
	c.role = OVL_ROLE_BROKER;
	snprintf(c.site, sizeof(c.site), "sim-site");
	c.not_before = 1000;
	c.not_after = 4000000000ull;
	n = ovl_cert_sign(&c, w->ca->sign_sk, w->site.broker_cert, sizeof(w->site.broker_cert),
			  err, sizeof(err));
	assert_true(n > 0);
	w->site.broker_cert_len = (size_t)n;
	w->site.broker = c;
	snprintf(w->site.site, sizeof(w->site.site), "sim-site");
}

/* A core whose state lives in state_dir (NULL: nothing persisted), served
 * by a files object as in the daemon. 0 or brk_new's error. */
static int try_core(struct world *w, const char *state_dir, char *err, size_t errlen)
{
	struct brk_params p = { 0 };
	struct brk_io io = { .send = w_send, .now_ms = w_now, .unix_s = w_unix, .event = w_event,
			     .arg = w };

	brk_files_destroy(&w->files);
	if (state_dir) {
		assert_int_equal(brk_files_new(&w->files, NULL, NULL, state_dir, err, errlen), 0);
		brk_files_io(w->files, &io);
	}
	return brk_new(&w->b, &w->site, &p, &io, err, errlen);
}

static void new_core(struct world *w, const char *state_dir)
{
	char err[256] = "";
	int rc = try_core(w, state_dir, err, sizeof(err));

	if (rc < 0)
		print_message("brk_new: %s\n", err);
	assert_int_equal(rc, 0);
}

static int setup(void **state)
{
	struct world *w = calloc(1, sizeof(*w));

	assert_true(sodium_init() >= 0);
	w->now_ms = 1000000;
	w->unix_s = 1800000000;
	make_site(w);
	for (int i = 0; i < NODES; i++)
		assert_int_equal(ovl_id_generate(&w->nodes[i]), 0);
	new_core(w, NULL);
	*state = w;
	return 0;
}

static int teardown(void **state)
{
	struct world *w = *state;

	brk_destroy(&w->b);
	brk_files_destroy(&w->files);
	clear_out(w);
	for (int i = 0; i < NODES; i++)
		ovl_id_destroy(&w->nodes[i]);
	ovl_id_destroy(&w->ca);
	brk_site_release(&w->site);
	free(w);
	return 0;
}

static struct brk_peer peer_of(const struct ovl_id *id)
{
	struct brk_peer p;

	memset(&p, 0, sizeof(p));
	memcpy(p.key, id->curve_pk, 32);
	memcpy(p.rid, id->curve_pk, 5);
	p.rid_len = 5;
	return p;
}

static void send_to_core(struct world *w, const struct ovl_id *from, const struct ovl_msg *m)
{
	msgpack_sbuffer sb;
	struct brk_peer p = peer_of(from);
	char err[256];

	msgpack_sbuffer_init(&sb);
	assert_int_equal(ovl_msg_encode(m, &sb, err, sizeof(err)), 0);
	brk_handle(w->b, &p, sb.data, sb.size);
	brk_flush(w->b); /* as the server does after each batch */
	msgpack_sbuffer_destroy(&sb);
}

static void reg_msg(struct ovl_msg *m, const struct ovl_id *id, const char *token,
		    const char *board)
{
	uint8_t pop[sizeof(BRK_REGISTER_DOMAIN) + 64];

	ovl_msg_init(m, OVL_MSG_REGISTER);
	memcpy(m->u.reg.node_id, id->sign_pk, 32);
	memcpy(m->u.reg.curve_key, id->curve_pk, 32);
	snprintf(m->u.reg.board, sizeof(m->u.reg.board), "%s", board);
	snprintf(m->u.reg.version, sizeof(m->u.reg.version), "test");
	m->u.reg.capacity = 1 << 30;
	snprintf(m->u.reg.domain.site, 64, "sim-site");
	snprintf(m->u.reg.domain.chassis, 64, "c1");
	snprintf(m->u.reg.domain.slot, 32, "1");
	m->u.reg.port = 7100;
	if (token)
		snprintf(m->u.reg.token, sizeof(m->u.reg.token), "%s", token);
	memcpy(pop, BRK_REGISTER_DOMAIN, sizeof(BRK_REGISTER_DOMAIN));
	memcpy(pop + sizeof(BRK_REGISTER_DOMAIN), id->sign_pk, 32);
	memcpy(pop + sizeof(BRK_REGISTER_DOMAIN) + 32, id->curve_pk, 32);
	crypto_sign_detached(m->u.reg.sig, NULL, pop, sizeof(pop), id->sign_sk);
}

/* Node `n` registers holding a cached definition of one slice owned by the
 * site's broker (as a node does after the broker lost its state). */
static void reg_cached_slice(struct world *w, int n, const char *name, uint64_t epoch,
			     uint32_t replicas, const char *selector, bool encrypt)
{
	struct ovl_msg m;

	reg_msg(&m, w->nodes[n], NULL, "sim");
	m.u.reg.slices = calloc(1, sizeof(*m.u.reg.slices));
	assert_non_null(m.u.reg.slices);
	m.u.reg.n_slices = 1;
	snprintf(m.u.reg.slices[0].name, sizeof(m.u.reg.slices[0].name), "%s", name);
	m.u.reg.slices[0].epoch = epoch;
	m.u.reg.slices[0].replicas = replicas;
	m.u.reg.slices[0].encrypt = encrypt;
	snprintf(m.u.reg.slices[0].selector, sizeof(m.u.reg.slices[0].selector), "%s", selector);
	memcpy(m.u.reg.slices[0].owner, w->site.id->sign_pk, 32);
	send_to_core(w, w->nodes[n], &m);
	free(m.u.reg.slices);
}

/* Decode the last message sent to `to` (or NULL). The caller releases it. */
static int last_to(struct world *w, const struct ovl_id *to, struct ovl_msg *m)
{
	char err[256];

	for (int i = (int)w->n_out - 1; i >= 0; i--)
		if (memcmp(w->out[i].key, to->curve_pk, 32) == 0)
			return ovl_msg_decode(w->out[i].buf, w->out[i].len, m, err, sizeof(err));
	return -ENOENT;
}

/* The first message of `type` sent to `to`. */
static int first_to(struct world *w, const struct ovl_id *to, enum ovl_msg_type type,
		    struct ovl_msg *m)
{
	char err[256];

	for (unsigned i = 0; i < w->n_out; i++)
		if (memcmp(w->out[i].key, to->curve_pk, 32) == 0 &&
		    ovl_msg_decode(w->out[i].buf, w->out[i].len, m, err, sizeof(err)) == 0) {
			if (m->type == type)
				return 0;
			ovl_msg_release(m);
		}
	return -ENOENT;
}

static void expect_error(struct world *w, const struct ovl_id *to, unsigned code,
			 const char *text)
{
	struct ovl_msg m;

	assert_int_equal(last_to(w, to, &m), 0);
	assert_int_equal(m.type, OVL_MSG_ERROR);
	assert_int_equal(m.u.error.code, code);
	if (!strstr(m.u.error.message, text))
		fail_msg("error '%s' does not mention '%s'", m.u.error.message, text);
	assert_true(m.u.error.ts.len > 0);
	ovl_msg_release(&m);
}

static void expect_ok(struct world *w, const struct ovl_id *to)
{
	struct ovl_msg m;

	assert_int_equal(first_to(w, to, OVL_MSG_REGISTER_OK, &m), 0);
	assert_true(m.u.reg_ok.cert.len > 0);
	ovl_msg_release(&m);
}

static void add_token(struct world *w, const char *token, unsigned uses, uint64_t expires)
{
	uint8_t h[32];

	crypto_generichash(h, 32, (const uint8_t *)token, strlen(token), NULL, 0);
	assert_int_equal(brk_token_add(w->b, h, uses, expires), 0);
}

static void register_node(struct world *w, int i, const char *token)
{
	struct ovl_msg m;

	reg_msg(&m, w->nodes[i], token, "sim");
	send_to_core(w, w->nodes[i], &m);
}

static void test_admission(void **state)
{
	struct world *w = *state;
	struct ovl_msg m;

	/* unknown key, no token */
	register_node(w, 0, NULL);
	expect_error(w, w->nodes[0], OVL_MSG_ERR_DENIED, "no enrolment token");
	/* bad token */
	add_token(w, "shelf-tok-good", 1, w->unix_s + 60);
	register_node(w, 0, "shelf-tok-bad");
	expect_error(w, w->nodes[0], OVL_MSG_ERR_DENIED, "not valid");
	/* good token, then reused by another node */
	register_node(w, 0, "shelf-tok-good");
	expect_ok(w, w->nodes[0]);
	register_node(w, 1, "shelf-tok-good");
	expect_error(w, w->nodes[1], OVL_MSG_ERR_DENIED, "already been used");
	/* expired token */
	add_token(w, "shelf-tok-old", 5, w->unix_s - 1);
	register_node(w, 1, "shelf-tok-old");
	expect_error(w, w->nodes[1], OVL_MSG_ERR_DENIED, "expired");
	/* pre-authorised */
	assert_int_equal(brk_preauth_add(w->b, w->nodes[2]->sign_pk), 1);
	clear_out(w);
	register_node(w, 2, NULL);
	expect_ok(w, w->nodes[2]);
	/* same node id, another key: the attacker holds node 0's signing key
	 * copy but its own CURVE key */
	{
		struct ovl_id evil = *w->nodes[0];

		memcpy(evil.curve_pk, w->nodes[3]->curve_pk, 32);
		memcpy(evil.curve_sk, w->nodes[3]->curve_sk, 32);
		reg_msg(&m, &evil, NULL, "sim");
		send_to_core(w, &evil, &m);
		expect_error(w, &evil, OVL_MSG_ERR_DENIED, "already registered with another key");
	}
	/* proof of possession: a signature by another key */
	reg_msg(&m, w->nodes[4], NULL, "sim");
	memset(m.u.reg.sig, 0x5a, sizeof(m.u.reg.sig));
	assert_int_equal(brk_preauth_add(w->b, w->nodes[4]->sign_pk), 1);
	send_to_core(w, w->nodes[4], &m);
	expect_error(w, w->nodes[4], OVL_MSG_ERR_DENIED, "proof of possession");
	/* curve key in the message is not the connection's */
	reg_msg(&m, w->nodes[4], NULL, "sim");
	{
		struct brk_peer p = peer_of(w->nodes[5]);
		msgpack_sbuffer sb;
		char err[256];

		msgpack_sbuffer_init(&sb);
		ovl_msg_encode(&m, &sb, err, sizeof(err));
		brk_handle(w->b, &p, sb.data, sb.size);
		msgpack_sbuffer_destroy(&sb);
		expect_error(w, w->nodes[5], OVL_MSG_ERR_DENIED, "not the key of this connection");
	}
}

static void test_certificate_admission(void **state)
{
	struct world *w = *state;
	struct ovl_msg m, ok;
	uint8_t cert[OVL_CERT_MAX_BYTES], forged[OVL_CERT_MAX_BYTES];
	size_t cert_len;
	struct ovl_id *rogue = NULL;
	struct ovl_cert c;
	char err[256];
	int n;

	assert_int_equal(brk_preauth_add(w->b, w->nodes[0]->sign_pk), 1);
	register_node(w, 0, NULL);
	assert_int_equal(first_to(w, w->nodes[0], OVL_MSG_REGISTER_OK, &ok), 0);
	cert_len = ok.u.reg_ok.cert.len;
	memcpy(cert, ok.u.reg_ok.cert.ptr, cert_len);
	ovl_msg_release(&ok);
	/* a fresh broker (empty state) re-admits the node by its certificate */
	brk_destroy(&w->b);
	clear_out(w);
	new_core(w, NULL);
	reg_msg(&m, w->nodes[0], NULL, "sim");
	m.u.reg.cert = (struct ovl_msg_bin){ cert, cert_len };
	send_to_core(w, w->nodes[0], &m);
	expect_ok(w, w->nodes[0]);
	assert_non_null(strstr(w->lastev, "via=certificate"));
	/* forged: signed by a key that is not a broker of this site */
	assert_int_equal(ovl_id_generate(&rogue), 0);
	ovl_cert_init(&c);
	ovl_cert_set_keys(&c, w->nodes[1]);
	c.serial = 9;
	c.role = OVL_ROLE_NODE;
	c.not_before = 1000;
	c.not_after = 4000000000ull;
	n = ovl_cert_sign(&c, rogue->sign_sk, forged, sizeof(forged), err, sizeof(err));
	assert_true(n > 0);
	reg_msg(&m, w->nodes[1], NULL, "sim");
	m.u.reg.cert = (struct ovl_msg_bin){ forged, (size_t)n };
	send_to_core(w, w->nodes[1], &m);
	expect_error(w, w->nodes[1], OVL_MSG_ERR_DENIED, "certificate refused");
	/* a genuine certificate presented by another node */
	reg_msg(&m, w->nodes[2], NULL, "sim");
	m.u.reg.cert = (struct ovl_msg_bin){ cert, cert_len };
	send_to_core(w, w->nodes[2], &m);
	expect_error(w, w->nodes[2], OVL_MSG_ERR_DENIED, "other keys");
	ovl_id_destroy(&rogue);
}

static void test_malformed_and_unknown(void **state)
{
	struct world *w = *state;
	struct brk_peer p = peer_of(w->nodes[0]);
	struct ovl_msg m;
	uint8_t junk[64];
	struct brk_stats st;

	memset(junk, 0xc1, sizeof(junk));
	brk_handle(w->b, &p, junk, sizeof(junk));
	expect_error(w, w->nodes[0], OVL_MSG_ERR_BAD_REQUEST, "message");
	brk_handle(w->b, &p, "", 0);
	expect_error(w, w->nodes[0], OVL_MSG_ERR_BAD_REQUEST, "message");
	brk_refuse_oversized(w->b, &p, BRK_RECV_MAX_BYTES);
	expect_error(w, w->nodes[0], OVL_MSG_ERR_BAD_REQUEST, "larger than");
	/* unknown keys may only register */
	ovl_msg_init(&m, OVL_MSG_HEARTBEAT);
	memcpy(m.u.hb.node_id, w->nodes[0]->sign_pk, 32);
	m.u.hb.seq = 1;
	send_to_core(w, w->nodes[0], &m);
	expect_error(w, w->nodes[0], OVL_MSG_ERR_NOT_FOUND, "not registered");
	ovl_msg_init(&m, OVL_MSG_ADMIN);
	m.u.admin.op = OVL_MSG_ADMIN_LIST_NODES;
	send_to_core(w, w->nodes[0], &m);
	expect_error(w, w->nodes[0], OVL_MSG_ERR_DENIED, "no admin certificate");
	brk_stats_get(w->b, &st);
	assert_true(st.bad_messages >= 3);
	/* and the broker still serves others */
	assert_int_equal(brk_preauth_add(w->b, w->nodes[1]->sign_pk), 1);
	register_node(w, 1, NULL);
	expect_ok(w, w->nodes[1]);
}

static void test_selectors(void **state)
{
	struct world *w = *state;
	char err[256];
	struct ovl_msg m;
	uint32_t members = 0;

	assert_int_equal(brk_selector_check("all", err, sizeof(err)), 0);
	assert_int_equal(brk_selector_check("board=pi4", err, sizeof(err)), 0);
	assert_int_equal(brk_selector_check("chassis=c1", err, sizeof(err)), 0);
	assert_int_equal(brk_selector_check("rack=1", err, sizeof(err)), -EINVAL);
	assert_int_equal(brk_selector_check("board=", err, sizeof(err)), -EINVAL);
	assert_int_equal(brk_selector_check("board=a b", err, sizeof(err)), -EINVAL);
	assert_int_equal(brk_slice_create(w->b, "pis", 2, "board=pi4", err, sizeof(err)), 0);
	assert_int_equal(brk_slice_create(w->b, "pis", 2, "all", err, sizeof(err)), -EEXIST);
	assert_int_equal(brk_slice_create(w->b, "Bad", 2, "all", err, sizeof(err)), -EINVAL);
	assert_int_equal(brk_slice_create(w->b, "c1", 1, "chassis=c1", err, sizeof(err)), 0);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(brk_preauth_add(w->b, w->nodes[i]->sign_pk), 1);
		reg_msg(&m, w->nodes[i], NULL, i < 2 ? "pi4" : "x86");
		send_to_core(w, w->nodes[i], &m);
	}
	assert_int_equal(brk_slice_info(w->b, "pis", NULL, &members), 0);
	assert_int_equal(members, 2);
	assert_int_equal(brk_slice_info(w->b, "c1", NULL, &members), 0);
	assert_int_equal(members, 4);
	/* a slice created later picks up the nodes already registered */
	assert_int_equal(brk_slice_create(w->b, "x86", 1, "board=x86", err, sizeof(err)), 0);
	assert_int_equal(brk_slice_info(w->b, "x86", NULL, &members), 0);
	assert_int_equal(members, 2);
	assert_int_equal(brk_slice_delete(w->b, "x86", err, sizeof(err)), 0);
	assert_int_equal(brk_slice_info(w->b, "x86", NULL, NULL), -ENOENT);
}

static void test_delta_is_constant_per_member(void **state)
{
	struct world *w = *state;
	char err[256];
	struct ovl_msg m;
	size_t size = 0;
	unsigned deltas = 0;
	uint64_t epoch = 0;

	assert_int_equal(brk_slice_create(w->b, "hot", 2, "all", err, sizeof(err)), 0);
	for (int i = 0; i < NODES; i++)
		assert_int_equal(brk_preauth_add(w->b, w->nodes[i]->sign_pk), 1);
	for (int i = 0; i < NODES - 1; i++)
		register_node(w, i, NULL);
	clear_out(w);
	assert_int_equal(brk_slice_info(w->b, "hot", &epoch, NULL), 0);
	register_node(w, NODES - 1, NULL);
	for (unsigned i = 0; i < w->n_out; i++) {
		char e[256];

		assert_int_equal(ovl_msg_decode(w->out[i].buf, w->out[i].len, &m, e, sizeof(e)), 0);
		if (m.type == OVL_MSG_MAP_DELTA) {
			assert_int_equal(m.u.delta.n_members, 1);
			assert_memory_equal(m.u.delta.members[0].id, w->nodes[NODES - 1]->sign_pk, 32);
			assert_int_equal(m.u.delta.base_epoch, epoch);
			assert_int_equal(m.u.delta.epoch, epoch + 1);
			assert_true(memcmp(w->out[i].key, w->nodes[NODES - 1]->curve_pk, 32) != 0);
			if (size)
				assert_int_equal(size, w->out[i].len); /* the same bytes to everyone */
			size = w->out[i].len;
			deltas++;
		}
		ovl_msg_release(&m);
	}
	assert_int_equal(deltas, NODES - 1);
	/* the newcomer gets the whole map at the new epoch */
	assert_int_equal(first_to(w, w->nodes[NODES - 1], OVL_MSG_MAP, &m), 0);
	assert_int_equal(m.u.map.n_members, NODES);
	assert_int_equal(m.u.map.epoch, epoch + 1);
	for (uint32_t i = 0; i < m.u.map.n_members; i++)
		assert_true(m.u.map.members[i].cert.len > 0);
	ovl_msg_release(&m);
}

static void heartbeat(struct world *w, int i, uint64_t seq)
{
	struct ovl_msg m;

	ovl_msg_init(&m, OVL_MSG_HEARTBEAT);
	memcpy(m.u.hb.node_id, w->nodes[i]->sign_pk, 32);
	m.u.hb.seq = seq;
	send_to_core(w, w->nodes[i], &m);
}

static void test_liveness(void **state)
{
	struct world *w = *state;
	char err[256];
	struct ovl_msg m;

	assert_int_equal(brk_slice_create(w->b, "hot", 2, "all", err, sizeof(err)), 0);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(brk_preauth_add(w->b, w->nodes[i]->sign_pk), 1);
		register_node(w, i, NULL);
	}
	w->now_ms += BRK_DOWN_MS - 100;
	heartbeat(w, 0, 1);
	brk_tick(w->b);
	assert_int_equal(brk_node_state(w->b, w->nodes[1]->sign_pk), OVL_MSG_STATE_UP);
	w->now_ms += 200;
	clear_out(w);
	brk_tick(w->b);
	assert_int_equal(brk_node_state(w->b, w->nodes[1]->sign_pk), OVL_MSG_STATE_DOWN);
	assert_int_equal(brk_node_state(w->b, w->nodes[0]->sign_pk), OVL_MSG_STATE_UP);
	assert_int_equal(last_to(w, w->nodes[0], &m), 0); /* node 0 got the delta */
	assert_int_equal(m.type, OVL_MSG_MAP_DELTA);
	assert_int_equal(m.u.delta.members[0].state, OVL_MSG_STATE_DOWN);
	ovl_msg_release(&m);
	/* back */
	heartbeat(w, 1, 1);
	assert_int_equal(brk_node_state(w->b, w->nodes[1]->sign_pk), OVL_MSG_STATE_UP);
	assert_int_equal(last_to(w, w->nodes[1], &m), 0);
	assert_int_equal(m.type, OVL_MSG_HEARTBEAT_OK);
	assert_int_equal(m.u.hb_ok.n_slices, 1);
	ovl_msg_release(&m);
	/* grace, then out, then forgotten */
	w->now_ms += BRK_GRACE_MS + 1000;
	heartbeat(w, 0, 2);
	brk_tick(w->b);
	brk_tick(w->b);
	assert_int_equal(brk_node_state(w->b, w->nodes[1]->sign_pk), OVL_MSG_STATE_OUT);
	w->now_ms += BRK_TTL_MS;
	heartbeat(w, 0, 3);
	brk_tick(w->b);
	assert_int_equal(brk_node_state(w->b, w->nodes[1]->sign_pk), -ENOENT);
	assert_int_equal(brk_node_state(w->b, w->nodes[0]->sign_pk), OVL_MSG_STATE_UP);
}

static void test_persistence(void **state)
{
	struct world *w = *state;
	char err[256], path[128];
	uint64_t epoch = 0;
	uint32_t members = 0;

	snprintf(w->state_dir, sizeof(w->state_dir), "/tmp/test_broker.%d", (int)getpid());
	brk_destroy(&w->b);
	new_core(w, w->state_dir);
	assert_int_equal(brk_slice_create(w->b, "hot", 3, "board=sim", err, sizeof(err)), 0);
	assert_int_equal(brk_slice_create(w->b, "cold", 1, "all", err, sizeof(err)), 0);
	assert_int_equal(brk_preauth_add(w->b, w->nodes[0]->sign_pk), 1);
	register_node(w, 0, NULL);
	brk_destroy(&w->b); /* saves dirty epochs */
	new_core(w, w->state_dir);
	assert_int_equal(brk_slice_info(w->b, "hot", &epoch, &members), 0);
	/* members are kept (PROTOCOL.md 6.5): node 0 is listed, `down` until it
	 * speaks, and that change of state is a new epoch */
	assert_int_equal(epoch, 3);
	assert_int_equal(members, 1);
	assert_int_equal(brk_node_state(w->b, w->nodes[0]->sign_pk), OVL_MSG_STATE_DOWN);
	assert_int_equal(brk_slice_info(w->b, "cold", &epoch, NULL), 0);
	/* an empty state directory: definitions come back from a node's cache,
	 * at an epoch above the one the node reports */
	brk_destroy(&w->b);
	snprintf(path, sizeof(path), "%s/slices", w->state_dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/tokens.used", w->state_dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/members", w->state_dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/members.log", w->state_dir);
	unlink(path);
	new_core(w, w->state_dir);
	assert_int_equal(brk_slice_info(w->b, "hot", NULL, NULL), -ENOENT);
	assert_int_equal(brk_preauth_add(w->b, w->nodes[0]->sign_pk), 1);
	reg_cached_slice(w, 0, "hot", 41, 3, "board=sim", false);
	assert_int_equal(brk_slice_info(w->b, "hot", &epoch, &members), 0);
	assert_true(epoch > 41);
	assert_int_equal(members, 1);
	brk_destroy(&w->b);
	snprintf(path, sizeof(path), "rm -rf %s", w->state_dir);
	assert_int_equal(system(path), 0);
	new_core(w, NULL);
}

/* A map of `slice` as node `i` asks for it (the last map sent to it). */
static void node_map(struct world *w, int i, const char *slice, struct ovl_msg *m)
{
	struct ovl_msg g;

	clear_out(w);
	ovl_msg_init(&g, OVL_MSG_MAP_GET);
	snprintf(g.u.map_get.slice, sizeof(g.u.map_get.slice), "%s", slice);
	send_to_core(w, w->nodes[i], &g);
	assert_int_equal(last_to(w, w->nodes[i], m), 0);
	assert_int_equal(m->type, OVL_MSG_MAP);
}

static int map_state_of(const struct ovl_msg *m, const struct ovl_id *id)
{
	for (uint32_t i = 0; i < m->u.map.n_members; i++)
		if (memcmp(m->u.map.members[i].id, id->sign_pk, 32) == 0)
			return (int)m->u.map.members[i].state;
	return -ENOENT;
}

/* Node i registers (pre-authorised) in chassis `chassis` of sim-site. */
static void register_in(struct world *w, int i, const char *chassis)
{
	struct ovl_msg m;

	assert_true(brk_preauth_add(w->b, w->nodes[i]->sign_pk) >= 0);
	reg_msg(&m, w->nodes[i], NULL, "sim");
	snprintf(m.u.reg.domain.chassis, sizeof(m.u.reg.domain.chassis), "%s", chassis);
	send_to_core(w, w->nodes[i], &m);
}

/* An admin create_slice from admin identity `admin` (one of w->nodes, made
 * an admin key of the site); the reply decoded into *r (release it). */
static void admin_create(struct world *w, int admin, const char *name, unsigned replicas,
			 unsigned min_write, bool same_domain, struct ovl_msg *r)
{
	struct ovl_msg m;

	memcpy(w->site.admin_keys[0], w->nodes[admin]->curve_pk, 32);
	w->site.n_admins = 1;
	ovl_msg_init(&m, OVL_MSG_ADMIN);
	m.u.admin.op = OVL_MSG_ADMIN_CREATE_SLICE;
	snprintf(m.u.admin.slice, sizeof(m.u.admin.slice), "%s", name);
	m.u.admin.replicas = replicas;
	m.u.admin.min_write_replicas = min_write;
	m.u.admin.allow_same_domain = same_domain;
	snprintf(m.u.admin.selector, sizeof(m.u.admin.selector), "all");
	send_to_core(w, w->nodes[admin], &m);
	assert_int_equal(last_to(w, w->nodes[admin], r), 0);
}

/* The broker's admin list entry of slice `name` (into *out). */
static void admin_slice(struct world *w, int admin, const char *name, struct ovl_msg_slice *out)
{
	struct ovl_msg m, r;
	bool found = false;

	ovl_msg_init(&m, OVL_MSG_ADMIN);
	m.u.admin.op = OVL_MSG_ADMIN_LIST_SLICES;
	send_to_core(w, w->nodes[admin], &m);
	assert_int_equal(last_to(w, w->nodes[admin], &r), 0);
	assert_int_equal(r.type, OVL_MSG_ADMIN_OK);
	for (uint32_t i = 0; i < r.u.admin_ok.n_slices; i++)
		if (strcmp(r.u.admin_ok.slices[i].name, name) == 0) {
			*out = r.u.admin_ok.slices[i];
			found = true;
		}
	ovl_msg_release(&r);
	assert_true(found);
}

/*
 * The slice policy (PROTOCOL.md 6.4, 6.9): R above the failure domains
 * (distinct site/chassis) of the nodes the selector matches is refused
 * with a message that says how many and which R, unless
 * allow_same_domain; min_write_replicas is 1..R, persisted (an older state
 * file without it reads as W = R), in the signed map only when below R, and
 * in the admin list.
 */
static void test_slice_policy(void **state)
{
	struct world *w = *state;
	const int admin = NODES - 1;
	struct brk_slice_policy p = { .replicas = 2 };
	struct ovl_msg r, m;
	struct ovl_msg_slice def;
	char err[256], path[160], cmd[200];
	FILE *f;

	snprintf(w->state_dir, sizeof(w->state_dir), "/tmp/test_broker_pol.%d", (int)getpid());
	brk_destroy(&w->b);
	new_core(w, w->state_dir);
	/* no node registered yet: R >= 2 is refused, R = 1 is not */
	assert_int_equal(brk_slice_define_policy(w->b, "early", "all", &p, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "replicas 2 needs 2 failure domains"));
	assert_non_null(strstr(err, "no registered node matches selector 'all'"));
	assert_non_null(strstr(err, "--allow-same-domain"));
	p.replicas = 1;
	assert_int_equal(brk_slice_define_policy(w->b, "single", "all", &p, err, sizeof(err)), 0);
	/* three nodes in chassis c1, two in c2 */
	for (int i = 0; i < 3; i++)
		register_in(w, i, "c1");
	for (int i = 3; i < 5; i++)
		register_in(w, i, "c2");
	p.replicas = 3;
	assert_int_equal(brk_slice_define_policy(w->b, "three", "all", &p, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "replicas 3 needs 3 failure domains (distinct site/chassis)"));
	assert_non_null(strstr(err, "the 5 node(s) selector 'all' matches span 2"));
	assert_non_null(strstr(err, "sim-site/c1"));
	assert_non_null(strstr(err, "sim-site/c2"));
	assert_int_equal(brk_slice_info(w->b, "three", NULL, NULL), -ENOENT);
	/* a selector narrows the domains: one chassis */
	p.replicas = 2;
	assert_int_equal(brk_slice_define_policy(w->b, "narrow", "chassis=c2", &p, err,
						 sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "span 1 (sim-site/c2)"));
	/* through the admin request: the same refusal, as bad-request */
	admin_create(w, admin, "three", 3, 0, false, &r);
	assert_int_equal(r.type, OVL_MSG_ERROR);
	assert_int_equal(r.u.error.code, OVL_MSG_ERR_BAD_REQUEST);
	assert_non_null(strstr(r.u.error.message, "replicas 3 needs 3 failure domains"));
	assert_non_null(strstr(r.u.error.message, "span 2"));
	ovl_msg_release(&r);
	/* --allow-same-domain accepts it */
	admin_create(w, admin, "three", 3, 0, true, &r);
	assert_int_equal(r.type, OVL_MSG_ADMIN_OK);
	ovl_msg_release(&r);
	assert_int_equal(brk_slice_info(w->b, "three", NULL, NULL), 0);
	/* W out of range: refused by the encoder (W > R) and by the core */
	p = (struct brk_slice_policy){ .replicas = 2, .min_write = 3 };
	assert_int_equal(brk_slice_define_policy(w->b, "badw", "all", &p, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "min_write_replicas 3 is outside 1..2"));
	p = (struct brk_slice_policy){ .replicas = 6 };
	assert_int_equal(brk_slice_define_policy(w->b, "badr", "all", &p, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "replicas 6 is outside 1..5"));
	{
		struct ovl_msg bad;
		msgpack_sbuffer sb;

		ovl_msg_init(&bad, OVL_MSG_ADMIN);
		bad.u.admin.op = OVL_MSG_ADMIN_CREATE_SLICE;
		snprintf(bad.u.admin.slice, sizeof(bad.u.admin.slice), "badw");
		bad.u.admin.replicas = 2;
		bad.u.admin.min_write_replicas = 3;
		msgpack_sbuffer_init(&sb);
		assert_int_equal(ovl_msg_encode(&bad, &sb, err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "'min_write_replicas' (3) must be at most 'replicas' (2)"));
		msgpack_sbuffer_destroy(&sb);
	}
	/* R=2 over two chassis, W=1: accepted; the map carries W, signed */
	admin_create(w, admin, "hot", 2, 1, false, &r);
	assert_int_equal(r.type, OVL_MSG_ADMIN_OK);
	ovl_msg_release(&r);
	node_map(w, 0, "hot", &m);
	assert_int_equal(m.u.map.replicas, 2);
	assert_int_equal(m.u.map.min_write_replicas, 1);
	assert_int_equal(ovl_msg_map_min_write(&m.u.map), 1);
	assert_int_equal(m.u.map.n_members, 5);
	assert_int_equal(ovl_msg_map_verify(&m.u.map, w->site.id->sign_pk), 0);
	m.u.map.min_write_replicas = 2; /* covered by the signature */
	assert_int_equal(ovl_msg_map_verify(&m.u.map, w->site.id->sign_pk), -EKEYREJECTED);
	ovl_msg_release(&m);
	/* W = R: not in the map (it signs as before 1.5), W = R in force */
	admin_create(w, admin, "warm", 2, 2, false, &r);
	assert_int_equal(r.type, OVL_MSG_ADMIN_OK);
	ovl_msg_release(&r);
	node_map(w, 0, "warm", &m);
	assert_int_equal(m.u.map.min_write_replicas, 0);
	assert_int_equal(ovl_msg_map_min_write(&m.u.map), 2);
	assert_int_equal(ovl_msg_map_verify(&m.u.map, w->site.id->sign_pk), 0);
	ovl_msg_release(&m);
	/* the admin list: W and the same-domain flag */
	admin_slice(w, admin, "hot", &def);
	assert_int_equal(def.replicas, 2);
	assert_int_equal(def.min_write_replicas, 1);
	assert_false(def.allow_same_domain);
	admin_slice(w, admin, "three", &def);
	assert_int_equal(def.min_write_replicas, 3);
	assert_true(def.allow_same_domain);
	/* a node joining later is admitted whatever its chassis (no check then) */
	register_in(w, 5, "c1");
	{
		uint32_t members = 0;

		assert_int_equal(brk_slice_info(w->b, "hot", NULL, &members), 0);
		assert_int_equal(members, 6);
	}
	/* persisted: the words of DIR/slices, then a restarted broker keeps them */
	brk_destroy(&w->b);
	snprintf(path, sizeof(path), "%s/slices", w->state_dir);
	f = fopen(path, "r");
	assert_non_null(f);
	{
		char text[4096];
		size_t n = fread(text, 1, sizeof(text) - 1, f);

		text[n] = 0;
		assert_non_null(strstr(text, " all min_write=1\n"));
		assert_non_null(strstr(text, " all same_domain\n"));
		{
			/* W = R: the line as before 1.5 */
			char *line = strstr(text, "\nwarm 2 ");

			assert_non_null(line);
			*strchr(line + 1, '\n') = 0;
			assert_null(strstr(line, "min_write"));
			assert_null(strstr(line, "same_domain"));
		}
	}
	fclose(f);
	new_core(w, w->state_dir);
	admin_slice(w, admin, "hot", &def);
	assert_int_equal(def.min_write_replicas, 1);
	assert_false(def.allow_same_domain);
	admin_slice(w, admin, "three", &def);
	assert_true(def.allow_same_domain);
	admin_slice(w, admin, "warm", &def);
	assert_int_equal(def.min_write_replicas, 2);
	node_map(w, 0, "hot", &m);
	assert_int_equal(m.u.map.min_write_replicas, 1);
	assert_int_equal(ovl_msg_map_verify(&m.u.map, w->site.id->sign_pk), 0);
	ovl_msg_release(&m);
	/* an older state file (no optional words, or only encrypt) reads as W = R */
	brk_destroy(&w->b);
	f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "# shelf-broker slices v1: name replicas epoch owner selector [encrypt]\n");
	{
		char owner[65];

		ovl_hex_encode(w->site.id->sign_pk, 32, owner);
		fprintf(f, "old 3 7 %s all\nolde 2 4 %s all encrypt\n", owner, owner);
	}
	fclose(f);
	new_core(w, w->state_dir);
	admin_slice(w, admin, "old", &def);
	assert_int_equal(def.replicas, 3);
	assert_int_equal(def.min_write_replicas, 3);
	assert_false(def.allow_same_domain);
	admin_slice(w, admin, "olde", &def);
	assert_int_equal(def.min_write_replicas, 2);
	assert_true(def.encrypt);
	/* an empty state directory: W comes back from a node's cached definition */
	brk_destroy(&w->b);
	assert_int_equal(unlink(path), 0);
	new_core(w, w->state_dir);
	{
		struct ovl_msg rm;

		assert_int_equal(brk_preauth_add(w->b, w->nodes[6]->sign_pk), 1);
		reg_msg(&rm, w->nodes[6], NULL, "sim");
		rm.u.reg.slices = calloc(1, sizeof(*rm.u.reg.slices));
		assert_non_null(rm.u.reg.slices);
		rm.u.reg.n_slices = 1;
		snprintf(rm.u.reg.slices[0].name, OVL_MSG_NAME_SIZE, "cached");
		rm.u.reg.slices[0].epoch = 9;
		rm.u.reg.slices[0].replicas = 3;
		rm.u.reg.slices[0].min_write_replicas = 2;
		snprintf(rm.u.reg.slices[0].selector, OVL_MSG_SELECTOR_SIZE, "all");
		memcpy(rm.u.reg.slices[0].owner, w->site.id->sign_pk, 32);
		send_to_core(w, w->nodes[6], &rm);
		free(rm.u.reg.slices);
	}
	admin_slice(w, admin, "cached", &def);
	assert_int_equal(def.replicas, 3);
	assert_int_equal(def.min_write_replicas, 2);
	/* a damaged policy word is refused, never misread */
	brk_destroy(&w->b);
	{
		static const char *const bad[] = { "min_write=0", "min_write=4", "min_write=x",
						   "min_write=2 min_write=2", "min_write=-1",
						   "same_domain same_domain", "samedomain" };
		char owner[65];

		ovl_hex_encode(w->site.id->sign_pk, 32, owner);
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			f = fopen(path, "w");
			assert_non_null(f);
			fprintf(f, "old 3 7 %s all %s\n", owner, bad[i]);
			fclose(f);
			assert_int_equal(try_core(w, w->state_dir, err, sizeof(err)), -EBADMSG);
			assert_non_null(strstr(err, "is not a valid slice definition"));
		}
	}
	snprintf(cmd, sizeof(cmd), "rm -rf %s", w->state_dir);
	assert_int_equal(system(cmd), 0);
	new_core(w, NULL);
}

/*
 * A restart never shrinks a slice (PROTOCOL.md 6.5): the membership is on
 * disk before any map or delta that shows it leaves; a broker that crashed
 * lists every member again, `down` until it speaks, at a higher epoch; a
 * member leaves only by the `out` rule and expiry or a revocation, with a
 * record that nodes and clients check (ovl_map_succession_check).
 */
static void test_restart_keeps_members(void **state)
{
	struct world *w = *state;
	char err[512], cmd[256], crash[80];
	struct ovl_msg before, after, m;
	uint64_t epoch = 0, served = 0;
	uint32_t members = 0;

	snprintf(w->state_dir, sizeof(w->state_dir), "/tmp/test_broker_mb.%d", (int)getpid());
	snprintf(crash, sizeof(crash), "%s.crash", w->state_dir);
	brk_destroy(&w->b);
	new_core(w, w->state_dir);
	assert_int_equal(brk_slice_create(w->b, "hot", 2, "all", err, sizeof(err)), 0);
	w->check_durable = true;
	for (int i = 0; i < 5; i++) {
		assert_int_equal(brk_preauth_add(w->b, w->nodes[i]->sign_pk), 1);
		register_node(w, i, NULL);
	}
	assert_true(w->durable_checked >= 5);
	/* a state change is durable before its delta leaves, too */
	w->now_ms += BRK_DOWN_MS + 100;
	for (int i = 0; i < 4; i++)
		heartbeat(w, i, 1);
	brk_tick(w->b); /* node 4: down */
	assert_int_equal(brk_node_state(w->b, w->nodes[4]->sign_pk), OVL_MSG_STATE_DOWN);
	node_map(w, 0, "hot", &before);
	served = before.u.map.epoch;
	assert_int_equal(before.u.map.n_members, 5);
	/* the broker is killed: its state directory is what was on disk */
	snprintf(cmd, sizeof(cmd), "rm -rf %s && cp -a %s %s", crash, w->state_dir, crash);
	assert_int_equal(system(cmd), 0);
	w->check_durable = false;
	brk_destroy(&w->b);
	snprintf(cmd, sizeof(cmd), "rm -rf %s && mv %s %s", w->state_dir, crash, w->state_dir);
	assert_int_equal(system(cmd), 0);
	/* it died in the middle of an append: the journal ends in half a record */
	snprintf(cmd, sizeof(cmd), "printf '0badf00d 99 node 01' >> %s/members.log", w->state_dir);
	assert_int_equal(system(cmd), 0);
	new_core(w, w->state_dir);
	w->check_durable = true;
	assert_int_equal(brk_slice_info(w->b, "hot", &epoch, &members), 0);
	assert_int_equal(members, 5);
	assert_true(epoch > served); /* states changed: never an epoch served before */
	for (int i = 0; i < 5; i++)
		assert_int_equal(brk_node_state(w->b, w->nodes[i]->sign_pk), OVL_MSG_STATE_DOWN);
	/* node 0 speaks (a heartbeat: it is known): up again; the map lists all five */
	heartbeat(w, 0, 2);
	/* what was restored was saved whole before that: a base of the current
	 * format, and a journal of its generation */
	{
		char path[128], line[64] = "";
		FILE *fp = NULL;

		snprintf(path, sizeof(path), "%s/members", w->state_dir);
		fp = fopen(path, "r");
		assert_non_null(fp);
		assert_non_null(fgets(line, sizeof(line), fp));
		assert_string_equal(line, "# shelf-broker members v2\n");
		fclose(fp);
	}
	assert_int_equal(brk_node_state(w->b, w->nodes[0]->sign_pk), OVL_MSG_STATE_UP);
	node_map(w, 0, "hot", &after);
	assert_int_equal(after.u.map.n_members, 5);
	assert_int_equal(map_state_of(&after, w->nodes[0]), OVL_MSG_STATE_UP);
	assert_int_equal(map_state_of(&after, w->nodes[3]), OVL_MSG_STATE_DOWN);
	assert_int_equal(map_state_of(&after, w->nodes[4]), OVL_MSG_STATE_DOWN);
	assert_int_equal(ovl_msg_map_verify(&after.u.map, w->site.id->sign_pk), 0);
	assert_int_equal(ovl_map_succession_check(&before.u.map, &after.u.map, err, sizeof(err)),
			 0);
	ovl_msg_release(&after);
	/* node 1 registers again: known, up, still one member */
	register_node(w, 1, NULL);
	assert_int_equal(brk_slice_info(w->b, "hot", NULL, &members), 0);
	assert_int_equal(members, 5);
	/* grace: node 4 is out and still listed; then it expires, with a record */
	w->now_ms += BRK_GRACE_MS + 1000;
	for (int i = 0; i < 3; i++)
		heartbeat(w, i, 3);
	brk_tick(w->b);
	node_map(w, 0, "hot", &m);
	assert_int_equal(map_state_of(&m, w->nodes[4]), OVL_MSG_STATE_OUT);
	ovl_msg_release(&m);
	w->now_ms += BRK_TTL_MS;
	for (int i = 0; i < 3; i++)
		heartbeat(w, i, 4);
	clear_out(w);
	brk_tick(w->b);
	assert_int_equal(brk_node_state(w->b, w->nodes[4]->sign_pk), -ENOENT);
	node_map(w, 0, "hot", &after);
	assert_int_equal(map_state_of(&after, w->nodes[4]), -ENOENT);
	assert_true(after.u.map.n_left >= 1);
	assert_int_equal(ovl_map_succession_check(&before.u.map, &after.u.map, err, sizeof(err)),
			 0);
	/* without the record, the same map is refused, naming the member */
	{
		uint32_t nl = after.u.map.n_left;

		after.u.map.n_left = 0;
		assert_int_equal(ovl_map_succession_check(&before.u.map, &after.u.map, err,
							  sizeof(err)), -EPERM);
		after.u.map.n_left = nl;
	}
	ovl_msg_release(&after);
	/* a revocation leaves a record too, and records survive a restart */
	assert_int_equal(brk_revoke(w->b, w->nodes[2]->sign_pk, err, sizeof(err)), 0);
	brk_flush(w->b);
	w->check_durable = false;
	brk_destroy(&w->b);
	new_core(w, w->state_dir);
	node_map(w, 0, "hot", &after);
	assert_int_equal(map_state_of(&after, w->nodes[2]), -ENOENT);
	assert_int_equal(after.u.map.n_members, 2); /* 3 and 4 expired, 2 revoked */
	assert_int_equal(after.u.map.n_left, 3);
	assert_int_equal(ovl_map_succession_check(&before.u.map, &after.u.map, err, sizeof(err)),
			 0);
	for (uint32_t i = 0; i < after.u.map.n_left; i++)
		if (memcmp(after.u.map.left[i].id, w->nodes[2]->sign_pk, 32) == 0)
			assert_int_equal(after.u.map.left[i].reason, OVL_MSG_LEFT_REVOKED);
		else
			assert_int_equal(after.u.map.left[i].reason, OVL_MSG_LEFT_EXPIRED);
	ovl_msg_release(&after);
	ovl_msg_release(&before);
	/* a damaged membership file stops the broker with a clear error */
	brk_destroy(&w->b);
	snprintf(cmd, sizeof(cmd), "echo 'member zz' >> %s/members", w->state_dir);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(try_core(w, w->state_dir, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "members"));
	snprintf(cmd, sizeof(cmd), "rm -rf %s", w->state_dir);
	assert_int_equal(system(cmd), 0);
	new_core(w, NULL);
}

/* ---- map_report: a broker without state learns members from nodes' maps -------- */

/* A map kept beyond clear_out(): the decoded message borrows from buf. */
struct kept_map {
	uint8_t *buf;
	size_t len;
	struct ovl_msg m;
};

static void keep_release(struct kept_map *k)
{
	ovl_msg_release(&k->m);
	free(k->buf);
	memset(k, 0, sizeof(*k));
}

/* The last message of `type` sent to `to`, kept (or -ENOENT). */
static int keep_last(struct world *w, const struct ovl_id *to, enum ovl_msg_type type,
		     struct kept_map *k)
{
	char err[256];

	for (int i = (int)w->n_out - 1; i >= 0; i--) {
		struct ovl_msg m;

		if (memcmp(w->out[i].key, to->curve_pk, 32) != 0 ||
		    ovl_msg_decode(w->out[i].buf, w->out[i].len, &m, err, sizeof(err)) < 0)
			continue;
		ovl_msg_release(&m);
		if (m.type != OVL_MSG_NONE && (int)type != (int)m.type)
			continue;
		k->buf = malloc(w->out[i].len);
		assert_non_null(k->buf);
		memcpy(k->buf, w->out[i].buf, w->out[i].len);
		k->len = w->out[i].len;
		assert_int_equal(ovl_msg_decode(k->buf, k->len, &k->m, err, sizeof(err)), 0);
		if (k->m.type == type)
			return 0;
		keep_release(k);
	}
	return -ENOENT;
}

/* The map node i gets when it asks for it, kept. */
static void keep_map(struct world *w, int i, const char *slice, struct kept_map *k)
{
	struct ovl_msg g;

	clear_out(w);
	ovl_msg_init(&g, OVL_MSG_MAP_GET);
	snprintf(g.u.map_get.slice, sizeof(g.u.map_get.slice), "%s", slice);
	send_to_core(w, w->nodes[i], &g);
	assert_int_equal(keep_last(w, w->nodes[i], OVL_MSG_MAP, k), 0);
}

/* Node i reports map mp (its arrays borrowed) with request id 7. */
static void report_map(struct world *w, int i, const struct ovl_msg_map *mp)
{
	struct ovl_msg r;

	ovl_msg_init(&r, OVL_MSG_MAP_REPORT);
	r.rid = 7;
	r.u.report = *mp;
	r.u.report.ts = (struct ovl_msg_bin){ NULL, 0 };
	r.u.report.crl = (struct ovl_msg_bin){ NULL, 0 };
	clear_out(w);
	send_to_core(w, w->nodes[i], &r);
}

static bool id_listed(const uint8_t (*ids)[32], uint32_t n, const uint8_t *id)
{
	for (uint32_t i = 0; i < n; i++)
		if (memcmp(ids[i], id, 32) == 0)
			return true;
	return false;
}

/*
 * Node i holds map h and applies the last delta sent to it, as firmware/ctl
 * does: the delta passes the succession rule and the map after it is the
 * one the broker signed (so the node serves a signed map without asking).
 */
static void expect_delta_applies(struct world *w, int i, const struct ovl_msg_map *h)
{
	struct kept_map d;
	const struct ovl_msg_map_delta *dd = &d.m.u.delta;
	struct ovl_msg_map nm;
	char err[512];

	assert_int_equal(keep_last(w, w->nodes[i], OVL_MSG_MAP_DELTA, &d), 0);
	assert_int_equal(dd->base_epoch, h->epoch);
	if (ovl_map_delta_check(h, dd, err, sizeof(err)) < 0)
		fail_msg("delta refused: %s", err);
	nm = *h;
	nm.members = calloc(h->n_members + dd->n_members + 1, sizeof(*nm.members));
	nm.left = calloc(h->n_left + dd->n_left + 1, sizeof(*nm.left));
	assert_true(nm.members && nm.left);
	nm.n_members = nm.n_left = 0;
	for (uint32_t k = 0; k < h->n_members; k++) {
		bool replaced = id_listed(dd->removed, dd->n_removed, h->members[k].id);

		for (uint32_t j = 0; j < dd->n_members; j++)
			replaced |= memcmp(dd->members[j].id, h->members[k].id, 32) == 0;
		if (!replaced)
			nm.members[nm.n_members++] = h->members[k];
	}
	for (uint32_t j = 0; j < dd->n_members; j++)
		nm.members[nm.n_members++] = dd->members[j];
	for (uint32_t k = 0; k < h->n_left; k++) {
		bool replaced = false;

		for (uint32_t j = 0; j < dd->n_left; j++)
			replaced |= memcmp(dd->left[j].id, h->left[k].id, 32) == 0;
		for (uint32_t j = 0; j < dd->n_members; j++)
			replaced |= memcmp(dd->members[j].id, h->left[k].id, 32) == 0;
		if (!replaced)
			nm.left[nm.n_left++] = h->left[k];
	}
	for (uint32_t j = 0; j < dd->n_left; j++)
		nm.left[nm.n_left++] = dd->left[j];
	nm.epoch = dd->epoch;
	memcpy(nm.sig, dd->sig, sizeof(nm.sig));
	assert_int_equal(ovl_msg_map_verify(&nm, w->site.id->sign_pk), 0);
	free(nm.members);
	free(nm.left);
	keep_release(&d);
}

static int kept_state_of(const struct kept_map *k, const struct ovl_id *id)
{
	return map_state_of(&k->m, id);
}

static bool has_record(const struct ovl_msg_map *mp, const struct ovl_id *id,
		       enum ovl_msg_left_reason why)
{
	for (uint32_t i = 0; i < mp->n_left; i++)
		if (memcmp(mp->left[i].id, id->sign_pk, 32) == 0)
			return mp->left[i].reason == why;
	return false;
}

/*
 * A broker that lost its state directory (PROTOCOL.md 6.5, "A broker with
 * an empty state directory") learns the members it lacks from the signed
 * maps nodes report (map_report): a member that never comes back is listed
 * `down` (`out` stays `out`), removals and revocations are kept with
 * records, and the result passes the succession rule against every map
 * the nodes held. Forged, unsigned, tampered and foreign reports are
 * refused with a reason; a map older than state/ teaches nothing.
 */
static void test_map_report(void **state)
{
	struct world *w = *state;
	struct kept_map older, before, partial, n1, reply, copy;
	struct ovl_msg_map bad;
	char err[512], cmd[160];
	uint32_t members = 0;
	uint64_t epoch = 0;

	snprintf(w->state_dir, sizeof(w->state_dir), "/tmp/test_broker_rp.%d", (int)getpid());
	brk_destroy(&w->b);
	new_core(w, w->state_dir);
	assert_int_equal(brk_slice_create(w->b, "hot", 2, "all", err, sizeof(err)), 0);
	for (int i = 0; i < 6; i++) {
		assert_int_equal(brk_preauth_add(w->b, w->nodes[i]->sign_pk), 1);
		register_node(w, i, NULL);
	}
	/* node 5 goes silent: out (older shows it so), then forgotten with a record */
	w->now_ms += BRK_GRACE_MS + 1000;
	for (int i = 0; i < 5; i++)
		heartbeat(w, i, 1);
	brk_tick(w->b);
	brk_tick(w->b);
	keep_map(w, 0, "hot", &older);
	assert_int_equal(older.m.u.map.n_members, 6);
	assert_int_equal(kept_state_of(&older, w->nodes[5]), OVL_MSG_STATE_OUT);
	w->now_ms += BRK_TTL_MS;
	for (int i = 0; i < 5; i++)
		heartbeat(w, i, 2);
	brk_tick(w->b);
	/* node 4 goes silent: down, then out */
	w->now_ms += BRK_GRACE_MS + 1000;
	for (int i = 0; i < 4; i++)
		heartbeat(w, i, 3);
	brk_tick(w->b);
	brk_tick(w->b);
	keep_map(w, 0, "hot", &before);
	assert_int_equal(before.m.u.map.n_members, 5);
	assert_int_equal(kept_state_of(&before, w->nodes[4]), OVL_MSG_STATE_OUT);
	assert_true(has_record(&before.m.u.map, w->nodes[5], OVL_MSG_LEFT_EXPIRED));
	assert_true(before.m.u.map.epoch > older.m.u.map.epoch);

	/* the state directory is lost; node 3 was revoked meanwhile */
	brk_destroy(&w->b);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", w->state_dir);
	assert_int_equal(system(cmd), 0);
	new_core(w, w->state_dir);
	w->check_durable = true;
	for (int i = 0; i < 7; i++)
		assert_int_equal(brk_preauth_add(w->b, w->nodes[i]->sign_pk), 1);
	assert_int_equal(brk_revoke(w->b, w->nodes[3]->sign_pk, err, sizeof(err)), 0);
	clear_out(w);
	reg_cached_slice(w, 0, "hot", before.m.u.map.epoch, 2, "all", false);
	assert_int_equal(keep_last(w, w->nodes[0], OVL_MSG_MAP, &partial), 0);
	assert_int_equal(partial.m.u.map.n_members, 1);
	/* the node refuses it: that is what it reports upon */
	assert_int_equal(ovl_map_succession_check(&before.m.u.map, &partial.m.u.map, err,
						  sizeof(err)), -EPERM);
	keep_release(&partial);
	reg_cached_slice(w, 1, "hot", before.m.u.map.epoch, 2, "all", false);
	register_node(w, 6, NULL);
	keep_map(w, 1, "hot", &n1); /* node 1 holds the broker's map (a node that had none) */
	assert_int_equal(n1.m.u.map.n_members, 3);

	/* refused, with the reason, and nothing changes */
	bad = before.m.u.map;
	memset(bad.sig, 0, sizeof(bad.sig));
	report_map(w, 0, &bad);
	expect_error(w, w->nodes[0], OVL_MSG_ERR_BAD_REQUEST, "the map is not signed");
	assert_non_null(strstr(w->lastev, "event=refuse"));
	bad = before.m.u.map;
	assert_int_equal(ovl_msg_map_sign(&bad, w->ca->sign_sk), 0); /* not the broker's key */
	report_map(w, 0, &bad);
	expect_error(w, w->nodes[0], OVL_MSG_ERR_BAD_REQUEST, "does not verify");
	bad = before.m.u.map;
	bad.n_members--; /* a member dropped from a signed map */
	report_map(w, 0, &bad);
	expect_error(w, w->nodes[0], OVL_MSG_ERR_BAD_REQUEST, "does not verify");
	bad = before.m.u.map;
	bad.epoch += 1000; /* an epoch the broker never signed */
	report_map(w, 0, &bad);
	expect_error(w, w->nodes[0], OVL_MSG_ERR_BAD_REQUEST, "does not verify");
	report_map(w, 6, &before.m.u.map);
	expect_error(w, w->nodes[6], OVL_MSG_ERR_BAD_REQUEST, "not a member of it");
	bad = before.m.u.map;
	snprintf(bad.slice, sizeof(bad.slice), "cold");
	report_map(w, 0, &bad);
	expect_error(w, w->nodes[0], OVL_MSG_ERR_NOT_FOUND, "does not exist");
	assert_int_equal(brk_slice_info(w->b, "hot", NULL, &members), 0);
	assert_int_equal(members, 3);

	/* the older map first: node 5 comes back as it was (out), 2 and 4 down,
	 * 3 leaves again with a record (revoked) */
	report_map(w, 0, &older.m.u.map);
	assert_int_equal(keep_last(w, w->nodes[0], OVL_MSG_MAP, &reply), 0);
	assert_int_equal(reply.m.rid, 7);
	/* a map from the broker carries the definition, so members keep it (1.4) */
	assert_string_equal(reply.m.u.map.selector, "all");
	assert_memory_equal(reply.m.u.map.owner, w->site.id->sign_pk, 32);
	assert_int_equal(ovl_msg_map_verify(&reply.m.u.map, w->site.id->sign_pk), 0);
	assert_true(reply.m.u.map.epoch > before.m.u.map.epoch);
	assert_int_equal(reply.m.u.map.n_members, 6); /* 0, 1, 2, 4, 5 and 6 */
	assert_int_equal(kept_state_of(&reply, w->nodes[0]), OVL_MSG_STATE_UP);
	assert_int_equal(kept_state_of(&reply, w->nodes[2]), OVL_MSG_STATE_DOWN);
	assert_int_equal(kept_state_of(&reply, w->nodes[4]), OVL_MSG_STATE_DOWN);
	assert_int_equal(kept_state_of(&reply, w->nodes[5]), OVL_MSG_STATE_OUT);
	assert_int_equal(kept_state_of(&reply, w->nodes[3]), -ENOENT);
	assert_true(has_record(&reply.m.u.map, w->nodes[3], OVL_MSG_LEFT_REVOKED));
	assert_int_equal(ovl_map_succession_check(&older.m.u.map, &reply.m.u.map, err,
						  sizeof(err)), 0);
	assert_non_null(strstr(w->lastev, "event=slice_learn slice=hot"));
	expect_delta_applies(w, 1, &n1.m.u.map);
	keep_release(&reply);
	keep_release(&n1);

	/* then the newer one: 5 leaves again (its record), 4 is out as it was */
	keep_map(w, 1, "hot", &n1);
	report_map(w, 0, &before.m.u.map);
	assert_int_equal(keep_last(w, w->nodes[0], OVL_MSG_MAP, &reply), 0);
	assert_int_equal(reply.m.u.map.n_members, 5); /* 0, 1, 2, 4, 6 */
	assert_int_equal(kept_state_of(&reply, w->nodes[4]), OVL_MSG_STATE_OUT);
	assert_int_equal(kept_state_of(&reply, w->nodes[5]), -ENOENT);
	assert_true(has_record(&reply.m.u.map, w->nodes[5], OVL_MSG_LEFT_EXPIRED));
	assert_true(has_record(&reply.m.u.map, w->nodes[3], OVL_MSG_LEFT_REVOKED));
	if (ovl_map_succession_check(&before.m.u.map, &reply.m.u.map, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	if (ovl_map_succession_check(&older.m.u.map, &reply.m.u.map, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	expect_delta_applies(w, 1, &n1.m.u.map);
	keep_release(&n1);
	epoch = reply.m.u.map.epoch;

	/* the older map again teaches nothing: no member comes back, out stays out */
	report_map(w, 0, &older.m.u.map);
	assert_int_equal(keep_last(w, w->nodes[0], OVL_MSG_MAP, &copy), 0);
	assert_int_equal(copy.m.u.map.epoch, epoch);
	assert_int_equal(copy.m.u.map.n_members, 5);
	assert_int_equal(kept_state_of(&copy, w->nodes[4]), OVL_MSG_STATE_OUT);
	assert_non_null(strstr(w->lastev, "result=nothing-new"));
	keep_release(&copy);
	keep_release(&reply);

	/* node 2 speaks: up; the node it was learned from is the same node */
	register_node(w, 2, NULL);
	expect_ok(w, w->nodes[2]);
	assert_int_equal(brk_node_state(w->b, w->nodes[2]->sign_pk), OVL_MSG_STATE_UP);
	assert_int_equal(brk_slice_info(w->b, "hot", &epoch, &members), 0);
	assert_int_equal(members, 5);
	assert_true(w->durable_checked > 0);

	/* what was learned is on disk: a restart lists it; a map no newer than
	 * state/ teaches nothing */
	w->check_durable = false;
	brk_destroy(&w->b);
	new_core(w, w->state_dir);
	assert_int_equal(brk_slice_info(w->b, "hot", NULL, &members), 0);
	assert_int_equal(members, 5);
	assert_int_equal(brk_node_state(w->b, w->nodes[4]->sign_pk), OVL_MSG_STATE_OUT);
	assert_int_equal(brk_node_state(w->b, w->nodes[5]->sign_pk), -ENOENT);
	heartbeat(w, 0, 9);
	report_map(w, 0, &before.m.u.map);
	assert_non_null(strstr(w->lastev, "result=older-than-state"));
	assert_int_equal(keep_last(w, w->nodes[0], OVL_MSG_MAP, &copy), 0);
	assert_int_equal(copy.m.u.map.n_members, 5);
	keep_release(&copy);

	keep_release(&before);
	keep_release(&older);
	brk_destroy(&w->b);
	assert_int_equal(system(cmd), 0);
	new_core(w, NULL);
}

/* Token uses reach state/tokens.used: the use that exhausts a token at once
 * (a spent token never comes back after a crash), the others within a flush
 * interval (no fsync per registration). */
static uint64_t file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

static void test_token_use_persistence(void **state)
{
	struct world *w = *state;
	char path[128], cmd[160];
	FILE *f = NULL;
	unsigned count = 0;
	char hex[65];

	snprintf(w->state_dir, sizeof(w->state_dir), "/tmp/test_broker_tok.%d", (int)getpid());
	brk_destroy(&w->b);
	new_core(w, w->state_dir);
	snprintf(path, sizeof(path), "%s/tokens.used", w->state_dir);
	add_token(w, "shelf-tok-three", 3, w->unix_s + 60);
	add_token(w, "shelf-tok-one", 1, w->unix_s + 60);
	register_node(w, 0, "shelf-tok-three");
	expect_ok(w, w->nodes[0]);
	assert_int_equal(file_size(path), 0); /* not yet: rides the next flush */
	w->now_ms += BRK_SLICE_FLUSH_MS;
	brk_tick(w->b);
	f = fopen(path, "r");
	assert_non_null(f);
	assert_int_equal(fscanf(f, "%64s %u", hex, &count), 2);
	fclose(f);
	assert_int_equal(count, 1);
	/* a single-use token is on disk before the reply */
	clear_out(w);
	register_node(w, 1, "shelf-tok-one");
	expect_ok(w, w->nodes[1]);
	f = fopen(path, "r");
	assert_non_null(f);
	count = 0;
	while (fgets(cmd, sizeof(cmd), f))
		count++;
	fclose(f);
	assert_int_equal(count, 2);
	/* a restarted broker (same state directory) knows it is spent */
	brk_destroy(&w->b);
	new_core(w, w->state_dir);
	add_token(w, "shelf-tok-one", 1, w->unix_s + 60);
	register_node(w, 2, "shelf-tok-one");
	expect_error(w, w->nodes[2], OVL_MSG_ERR_DENIED, "already been used");
	brk_destroy(&w->b);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", w->state_dir);
	assert_int_equal(system(cmd), 0);
	new_core(w, NULL);
}

static void test_revocation(void **state)
{
	struct world *w = *state;
	char err[256];
	struct ovl_msg m;
	struct ovl_crl *crl = NULL;
	struct ovl_cert c;

	assert_int_equal(brk_slice_create(w->b, "hot", 2, "all", err, sizeof(err)), 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(brk_preauth_add(w->b, w->nodes[i]->sign_pk), 1);
		register_node(w, i, NULL);
	}
	assert_int_equal(first_to(w, w->nodes[2], OVL_MSG_REGISTER_OK, &m), 0);
	assert_int_equal(ovl_cert_decode(&c, m.u.reg_ok.cert.ptr, m.u.reg_ok.cert.len, err,
					 sizeof(err)), 0);
	ovl_msg_release(&m);
	clear_out(w);
	assert_int_equal(brk_revoke(w->b, w->nodes[2]->sign_pk, err, sizeof(err)), 0);
	/* the former peers get one delta: removed + the new list revoking its serial */
	assert_int_equal(last_to(w, w->nodes[0], &m), 0);
	assert_int_equal(m.type, OVL_MSG_MAP_DELTA);
	assert_int_equal(m.u.delta.n_removed, 1);
	assert_memory_equal(m.u.delta.removed[0], w->nodes[2]->sign_pk, 32);
	assert_int_equal(ovl_crl_decode(&crl, m.u.delta.crl.ptr, m.u.delta.crl.len,
					w->site.id->sign_pk, err, sizeof(err)), 0);
	assert_true(ovl_crl_is_revoked(crl, c.serial));
	ovl_crl_destroy(&crl);
	ovl_msg_release(&m);
	/* and its requests are refused */
	heartbeat(w, 2, 5);
	expect_error(w, w->nodes[2], OVL_MSG_ERR_REVOKED, "revoked");
	register_node(w, 2, NULL);
	expect_error(w, w->nodes[2], OVL_MSG_ERR_REVOKED, "revoked");
}

/* Revocations survive a restart; the list's version never goes backwards. */
static void test_revocation_persists(void **state)
{
	struct world *w = *state;
	char err[256], path[128];
	uint8_t stranger[32];
	struct ovl_msg m;
	struct ovl_crl *crl = NULL;

	snprintf(w->state_dir, sizeof(w->state_dir), "/tmp/test_broker_rv.%d", (int)getpid());
	brk_destroy(&w->b);
	new_core(w, w->state_dir);
	assert_int_equal(brk_slice_create(w->b, "hot", 2, "all", err, sizeof(err)), 0);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(brk_preauth_add(w->b, w->nodes[i]->sign_pk), 1);
		register_node(w, i, NULL);
	}
	assert_int_equal(brk_revoke(w->b, w->nodes[1]->sign_pk, err, sizeof(err)), 0);
	randombytes_buf(stranger, sizeof(stranger));
	assert_int_equal(brk_revoke(w->b, stranger, err, sizeof(err)), 0); /* never registered */
	brk_destroy(&w->b);
	new_core(w, w->state_dir);
	/* the revoked node is refused, by id, whatever admits it otherwise */
	assert_int_equal(brk_preauth_add(w->b, w->nodes[1]->sign_pk), 1);
	clear_out(w);
	register_node(w, 1, NULL);
	expect_error(w, w->nodes[1], OVL_MSG_ERR_REVOKED, "revoked");
	assert_int_equal(brk_revoke(w->b, stranger, err, sizeof(err)), -EALREADY);
	/* the others get the same list (version 2) when they come back */
	assert_int_equal(brk_preauth_add(w->b, w->nodes[0]->sign_pk), 1);
	clear_out(w);
	register_node(w, 0, NULL);
	assert_int_equal(first_to(w, w->nodes[0], OVL_MSG_REGISTER_OK, &m), 0);
	assert_int_equal(ovl_crl_decode(&crl, m.u.reg_ok.crl.ptr, m.u.reg_ok.crl.len,
					w->site.id->sign_pk, err, sizeof(err)), 0);
	assert_int_equal(ovl_crl_version(crl), 2);
	assert_int_equal(ovl_crl_count(crl), 1);
	ovl_crl_destroy(&crl);
	ovl_msg_release(&m);
	/* the next revocation continues at 3 */
	assert_int_equal(brk_revoke(w->b, w->nodes[0]->sign_pk, err, sizeof(err)), 0);
	brk_destroy(&w->b);
	/* a damaged file stops the broker with a clear error */
	snprintf(path, sizeof(path), "echo 'node zz' >> %s/revoked", w->state_dir);
	assert_int_equal(system(path), 0);
	assert_int_equal(try_core(w, w->state_dir, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "revoked"));
	snprintf(path, sizeof(path), "grep -q '^crl_version 3$' %s/revoked", w->state_dir);
	assert_int_equal(system(path), 0);
	snprintf(path, sizeof(path), "rm -rf %s", w->state_dir);
	assert_int_equal(system(path), 0);
	new_core(w, NULL);
}

/* Several brokers: one owner per slice name, the same on every broker. */
static void test_slice_owner(void **state)
{
	struct world *w = *state;
	struct brk_site other;
	uint8_t o1[32], o2[32];
	char err[256];
	unsigned mine = 0, theirs = 0;

	memset(&other, 0, sizeof(other));
	assert_int_equal(ovl_id_generate(&other.id), 0);
	memcpy(w->site.peers[0], other.id->sign_pk, 32);
	w->site.n_peers = 1;
	memcpy(other.peers[0], w->site.id->sign_pk, 32);
	other.n_peers = 1;
	for (int i = 0; i < 64; i++) {
		char name[16];

		snprintf(name, sizeof(name), "s%d", i);
		brk_slice_owner(&w->site, name, o1);
		brk_slice_owner(&other, name, o2);
		assert_memory_equal(o1, o2, 32); /* both brokers agree */
		if (memcmp(o1, w->site.id->sign_pk, 32) == 0) {
			mine++;
			assert_int_equal(brk_slice_create(w->b, name, 1, "all", err, sizeof(err)), 0);
		} else {
			theirs++;
			assert_int_equal(brk_slice_create(w->b, name, 1, "all", err, sizeof(err)),
					 -EXDEV);
			assert_non_null(strstr(err, "create it there"));
		}
	}
	assert_true(mine > 10 && theirs > 10);
	ovl_id_destroy(&other.id);
}

static void test_rate_verdicts(void **state)
{
	struct brk_rate *r = NULL;
	uint8_t a[32] = { 3 };
	unsigned refuse = 0, drop = 0;

	(void)state;
	assert_int_equal(brk_rate_new(&r, 1, 1, 16), 0);
	assert_int_equal(brk_rate_check(r, a, 10000), BRK_RATE_OK);
	for (int i = 0; i < 100; i++) {
		enum brk_rate_verdict v = brk_rate_check(r, a, 10000 + (uint64_t)i * 5);

		refuse += v == BRK_RATE_REFUSE;
		drop += v == BRK_RATE_DROP;
	}
	assert_int_equal(refuse, 1); /* one answer, the rest dropped */
	assert_int_equal(drop, 99);
	assert_int_equal(brk_rate_check(r, a, 10000 + BRK_RATE_TELL_MS + 1), BRK_RATE_OK);
	assert_int_equal(brk_rate_check(r, a, 10000 + BRK_RATE_TELL_MS + 2), BRK_RATE_REFUSE);
	brk_rate_destroy(&r);
}

static void test_rate_limiter(void **state)
{
	struct brk_rate *r = NULL;
	uint8_t a[32] = { 1 }, b[32] = { 2 };
	unsigned allowed = 0;

	(void)state;
	assert_int_equal(brk_rate_new(&r, 10, 20, 4096), 0);
	for (int i = 0; i < 1000; i++)
		allowed += brk_rate_take(r, a, 5000);
	assert_int_equal(allowed, 20); /* the burst, then nothing */
	assert_true(brk_rate_take(r, b, 5000)); /* another key is unaffected */
	assert_false(brk_rate_take(r, a, 5050));
	assert_true(brk_rate_take(r, a, 5100)); /* 10/s: one token per 100 ms */
	assert_false(brk_rate_take(r, a, 5100));
	brk_rate_destroy(&r);
	assert_null(r);
	assert_int_equal(brk_rate_new(&r, 0, 1, 1), -EINVAL);
}

static void test_site_files(void **state)
{
	char dir[64], out[2048], err[512], tok[128], cmd[128];
	struct brk_site s;

	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/test_broker_site.%d", (int)getpid());
	assert_int_equal(brk_site_init(dir, "lab-1", out, sizeof(out), err, sizeof(err)), 0);
	assert_non_null(strstr(out, "offline"));
	assert_int_equal(brk_site_init(dir, "lab-1", out, sizeof(out), err, sizeof(err)), -EEXIST);
	assert_int_equal(brk_site_load(&s, dir, err, sizeof(err)), 0);
	assert_string_equal(s.site, "lab-1");
	assert_int_equal(s.n_admins, 1);
	brk_site_release(&s);
	assert_int_equal(brk_token_mint(dir, 2, 60, tok, sizeof(tok), err, sizeof(err)), 0);
	assert_int_equal(strncmp(tok, BRK_TOKEN_PREFIX, strlen(BRK_TOKEN_PREFIX)), 0);
	assert_int_equal(brk_site_init(dir, "Bad Site", out, sizeof(out), err, sizeof(err)),
			 -EINVAL);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

/* Per-slice encryption: in maps and deltas, persisted, recovered from nodes;
 * every map state is signed by the broker, deltas with the map after them. */
static void test_slice_encryption_and_signatures(void **state)
{
	struct world *w = *state;
	char err[256], path[160];
	struct ovl_msg m, d;
	FILE *f;
	unsigned deltas = 0;

	snprintf(w->state_dir, sizeof(w->state_dir), "/tmp/test_broker_enc.%d", (int)getpid());
	brk_destroy(&w->b);
	new_core(w, w->state_dir);
	assert_int_equal(brk_slice_define(w->b, "sec", 1, "all", true, err, sizeof(err)), 0);
	assert_int_equal(brk_slice_create(w->b, "plain", 1, "all", err, sizeof(err)), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(brk_preauth_add(w->b, w->nodes[i]->sign_pk), 1);
	register_node(w, 0, NULL);
	register_node(w, 1, NULL);
	clear_out(w);
	register_node(w, 2, NULL);
	/* the newcomer's full maps: encrypt as defined, signed by the broker */
	assert_int_equal(first_to(w, w->nodes[2], OVL_MSG_MAP, &m), 0);
	assert_string_equal(m.u.map.slice, "sec");
	assert_true(m.u.map.encrypt);
	assert_int_equal(m.u.map.n_members, 3);
	assert_int_equal(ovl_msg_map_verify(&m.u.map, w->site.id->sign_pk), 0);
	assert_int_equal(ovl_msg_map_verify(&m.u.map, w->ca->sign_pk), -EKEYREJECTED);
	/* the others' deltas to the same epoch carry encrypt and the same signature
	 * (Ed25519 is deterministic: the same map state, the same bytes) */
	for (unsigned i = 0; i < w->n_out; i++) {
		char e[256];

		assert_int_equal(ovl_msg_decode(w->out[i].buf, w->out[i].len, &d, e, sizeof(e)), 0);
		if (d.type == OVL_MSG_MAP_DELTA && strcmp(d.u.delta.slice, "sec") == 0) {
			assert_true(d.u.delta.encrypt);
			assert_int_equal(d.u.delta.epoch, m.u.map.epoch);
			assert_memory_equal(d.u.delta.sig, m.u.map.sig, OVL_MSG_SIG_BYTES);
			deltas++;
		} else if (d.type == OVL_MSG_MAP_DELTA) {
			assert_false(d.u.delta.encrypt);
		}
		ovl_msg_release(&d);
	}
	assert_int_equal(deltas, 2);
	ovl_msg_release(&m);
	/* persisted with the definition; a restarted broker keeps it */
	brk_destroy(&w->b);
	snprintf(path, sizeof(path), "%s/slices", w->state_dir);
	f = fopen(path, "r");
	assert_non_null(f);
	{
		char text[2048];
		size_t n = fread(text, 1, sizeof(text) - 1, f);

		text[n] = 0;
		assert_non_null(strstr(text, " all encrypt\n"));
		assert_non_null(strstr(text, "\nplain 1 "));
		assert_null(strstr(text, "plain 1 5"));
	}
	fclose(f);
	new_core(w, w->state_dir);
	clear_out(w);
	assert_int_equal(brk_preauth_add(w->b, w->nodes[0]->sign_pk), 1);
	register_node(w, 0, NULL);
	assert_int_equal(first_to(w, w->nodes[0], OVL_MSG_MAP, &m), 0);
	assert_true(strcmp(m.u.map.slice, "sec") == 0 ? m.u.map.encrypt : !m.u.map.encrypt);
	ovl_msg_release(&m);
	brk_destroy(&w->b);
	/* an older file (five words a line) means "not encrypted"; a bad sixth word is refused */
	f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "old 1 7 ");
	for (int k = 0; k < 32; k++)
		fprintf(f, "%02x", w->site.id->sign_pk[k]);
	fprintf(f, " all\n");
	fclose(f);
	new_core(w, w->state_dir);
	clear_out(w);
	assert_int_equal(brk_preauth_add(w->b, w->nodes[0]->sign_pk), 1);
	register_node(w, 0, NULL);
	assert_int_equal(first_to(w, w->nodes[0], OVL_MSG_MAP, &m), 0);
	assert_string_equal(m.u.map.slice, "old");
	assert_false(m.u.map.encrypt);
	ovl_msg_release(&m);
	brk_destroy(&w->b);
	f = fopen(path, "a");
	fprintf(f, "odd 1 7 ");
	for (int k = 0; k < 32; k++)
		fprintf(f, "%02x", w->site.id->sign_pk[k]);
	fprintf(f, " all encrypted\n");
	fclose(f);
	assert_int_equal(try_core(w, w->state_dir, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "line 3 is not a valid slice definition"));
	/* recovered from a node's cached definition, encryption included */
	unlink(path);
	new_core(w, w->state_dir);
	clear_out(w);
	assert_int_equal(brk_preauth_add(w->b, w->nodes[1]->sign_pk), 1);
	reg_cached_slice(w, 1, "sec", 9, 1, "all", true);
	assert_int_equal(first_to(w, w->nodes[1], OVL_MSG_MAP, &m), 0);
	assert_true(m.u.map.encrypt);
	assert_true(m.u.map.epoch > 9);
	assert_int_equal(ovl_msg_map_verify(&m.u.map, w->site.id->sign_pk), 0);
	ovl_msg_release(&m);
	brk_destroy(&w->b);
	snprintf(path, sizeof(path), "rm -rf %s", w->state_dir);
	assert_int_equal(system(path), 0);
	new_core(w, NULL);
}

static void map_get(struct world *w, const struct ovl_id *from, const char *slice)
{
	struct ovl_msg m;

	ovl_msg_init(&m, OVL_MSG_MAP_GET);
	m.rid = 7;
	snprintf(m.u.map_get.slice, sizeof(m.u.map_get.slice), "%s", slice);
	clear_out(w);
	send_to_core(w, from, &m);
}

static void expect_map(struct world *w, const struct ovl_id *to, const char *slice)
{
	struct ovl_msg m;

	assert_int_equal(last_to(w, to, &m), 0);
	assert_int_equal(m.type, OVL_MSG_MAP);
	assert_string_equal(m.u.map.slice, slice);
	ovl_msg_release(&m);
}

static struct ovl_id *client_id(const char *dir, const char *name)
{
	char path[160], err[256];
	struct ovl_id *id = NULL;

	snprintf(path, sizeof(path), "%s/clients/%s/id.key", dir, name);
	assert_int_equal(ovl_id_load(&id, path, err, sizeof(err)), 0);
	return id;
}

/*
 * The files behind a core, as the daemon has them (brk_files over a site
 * directory): a client's MAP_GET asks the seam, which answers from an index
 * built once and rebuilt only when the files under clients/ change, and the
 * core's clock (not the machine's) decides whether a certificate is valid.
 */
static void test_client_index(void **state)
{
	struct world *w = *state;
	struct brk_params p = { 0 };
	struct brk_io io = { .send = w_send, .now_ms = w_now, .unix_s = w_unix, .event = w_event,
			     .arg = w };
	struct brk_files_stats st;
	struct brk_site site;
	struct ovl_id *c1 = NULL, *c2 = NULL;
	char dir[64], out[2048], err[512], tok[128];
	uint64_t t0 = (uint64_t)time(NULL);

	snprintf(dir, sizeof(dir), "/tmp/test_broker_cl.%d", (int)getpid());
	assert_int_equal(brk_site_init(dir, "sim-site", out, sizeof(out), err, sizeof(err)), 0);
	assert_int_equal(brk_client_issue(dir, "c1", "hot", 3600, out, sizeof(out), err,
					  sizeof(err)), 0);
	c1 = client_id(dir, "c1");
	assert_int_equal(brk_site_load(&site, dir, err, sizeof(err)), 0);
	brk_destroy(&w->b);
	assert_int_equal(brk_files_new(&w->files, &site, dir, NULL, err, sizeof(err)), 0);
	brk_files_io(w->files, &io);
	assert_non_null(io.client_slices);
	assert_int_equal(brk_new(&w->b, &site, &p, &io, err, sizeof(err)), 0);
	assert_int_equal(brk_slice_create(w->b, "hot", 1, "all", err, sizeof(err)), 0);
	assert_int_equal(brk_slice_create(w->b, "cold", 1, "all", err, sizeof(err)), 0);
	/* the core's clock: c1 is valid from t0 - 300 to t0 + 3600 */
	w->unix_s = t0;

	/* (a) one build of the index; MAP_GETs neither read nor verify again */
	for (int i = 0; i < 5; i++) {
		map_get(w, c1, "hot");
		expect_map(w, c1, "hot");
	}
	map_get(w, c1, "cold");
	expect_error(w, c1, OVL_MSG_ERR_DENIED, "does not list slice 'cold'");
	map_get(w, w->nodes[0], "hot"); /* not a client: a stat() shows nothing changed */
	expect_error(w, w->nodes[0], OVL_MSG_ERR_NOT_FOUND, "not registered");
	assert_int_equal(brk_files_reload(w->files, w->b), 0);
	brk_files_stats_get(w->files, &st);
	assert_int_equal(st.client_lookups, 7); /* every MAP_GET went through the seam */
	assert_int_equal(st.client_loads, 1);
	assert_int_equal(st.client_certs_checked, 1);
	assert_int_equal(st.clients, 1);

	/* (b) a client issued now is found at its first MAP_GET: clients/ changed */
	assert_int_equal(brk_client_issue(dir, "c2", "cold", 60, out, sizeof(out), err,
					  sizeof(err)), 0);
	c2 = client_id(dir, "c2");
	map_get(w, c2, "cold");
	expect_map(w, c2, "cold");
	brk_files_stats_get(w->files, &st);
	assert_int_equal(st.client_loads, 2);
	assert_int_equal(st.clients, 2);
	map_get(w, c2, "cold");
	expect_map(w, c2, "cold");
	brk_files_stats_get(w->files, &st);
	assert_int_equal(st.client_loads, 2);
	/* a client whose folder is removed is gone at the next reload */
	snprintf(out, sizeof(out), "rm -rf %s/clients/c1", dir);
	assert_int_equal(system(out), 0);
	assert_int_equal(brk_files_reload(w->files, w->b), 0);
	brk_files_stats_get(w->files, &st);
	assert_int_equal(st.client_loads, 3);
	assert_int_equal(st.clients, 1);
	map_get(w, c1, "hot");
	expect_error(w, c1, OVL_MSG_ERR_NOT_FOUND, "not registered");

	/* (c) the seam's clock decides: c2 (60 s from about t0) is refused an hour
	 * later and before it was issued, whatever time() says, and taken again
	 * within its life; none of it reads the files again */
	w->unix_s = t0 + 3600;
	map_get(w, c2, "cold");
	expect_error(w, c2, OVL_MSG_ERR_NOT_FOUND, "not registered");
	w->unix_s = t0 - 1000;
	map_get(w, c2, "cold");
	expect_error(w, c2, OVL_MSG_ERR_NOT_FOUND, "not registered");
	w->unix_s = t0 + 30;
	map_get(w, c2, "cold");
	expect_map(w, c2, "cold");
	brk_files_stats_get(w->files, &st);
	assert_int_equal(st.client_loads, 3);

	/* a token minted into the site directory admits at once (admission_refresh) */
	assert_int_equal(brk_token_mint(dir, 1, 600, tok, sizeof(tok), err, sizeof(err)), 0);
	clear_out(w);
	register_node(w, 0, tok); /* neither pre-authorised nor certified: the token */
	expect_ok(w, w->nodes[0]);

	brk_destroy(&w->b);
	brk_files_destroy(&w->files);
	assert_null(w->files);
	brk_site_release(&site);
	ovl_id_destroy(&c1);
	ovl_id_destroy(&c2);
	snprintf(out, sizeof(out), "rm -rf %s", dir);
	assert_int_equal(system(out), 0);
	new_core(w, NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_admission, setup, teardown),
		cmocka_unit_test_setup_teardown(test_certificate_admission, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_and_unknown, setup, teardown),
		cmocka_unit_test_setup_teardown(test_selectors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delta_is_constant_per_member, setup, teardown),
		cmocka_unit_test_setup_teardown(test_liveness, setup, teardown),
		cmocka_unit_test_setup_teardown(test_persistence, setup, teardown),
		cmocka_unit_test_setup_teardown(test_slice_policy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_keeps_members, setup, teardown),
		cmocka_unit_test_setup_teardown(test_map_report, setup, teardown),
		cmocka_unit_test_setup_teardown(test_token_use_persistence, setup, teardown),
		cmocka_unit_test_setup_teardown(test_revocation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_revocation_persists, setup, teardown),
		cmocka_unit_test_setup_teardown(test_slice_owner, setup, teardown),
		cmocka_unit_test(test_rate_verdicts),
		cmocka_unit_test_setup_teardown(test_slice_encryption_and_signatures, setup, teardown),
		cmocka_unit_test(test_rate_limiter),
		cmocka_unit_test(test_site_files),
		cmocka_unit_test_setup_teardown(test_client_index, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
