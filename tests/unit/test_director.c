/*
 * test_director: the broker's director of fleet updates (broker/brk_fleet.c)
 * driven through the core with a fake clock: publish (and its refusals),
 * the stages (canary, the canary's chassis, 100%), the soak, restarts
 * granted one at a time per slice and only at full redundancy, a failure
 * that halts the rollout with its reason, resume, abort, persistence across
 * a restart, a corrupt rollout file, and reports that do not decode.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <msgpack.h>
#include <sodium.h>

#include "broker.h"
#include "ovl_fleet.h"

#define NODES 6
#define MAX_OUT 8192

struct sent {
	uint8_t key[32];
	uint8_t *buf;
	size_t len;
};

struct node_sim {
	struct ovl_fleet_report rep;
	uint64_t hb_seq;
	uint8_t last_action;     /* of the newest assignment received, 255 none */
	uint64_t last_seq;
};

struct world {
	struct brk_site site;
	struct ovl_id *ca, *rel, *admin;
	uint8_t rel_cert[OVL_CERT_MAX_BYTES];
	size_t rel_cert_len;
	brk_t *b;
	struct brk_files *files;
	uint64_t now_ms, unix_s;
	struct sent out[MAX_OUT];
	unsigned n_out;
	struct ovl_id *nodes[NODES];
	struct node_sim sim[NODES];
	char dir[64], fleet_dir[128];
	char lastev[1024];
	unsigned bad_events;
	uint8_t *reply;          /* the last fleet reply's bytes: the unpacked document points in */
};

static int w_send(void *arg, const struct brk_peer *to, const void *buf, size_t len)
{
	struct world *w = arg;

	if (w->n_out >= MAX_OUT)
		return -ENOBUFS;
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
	struct world *w = arg;

	(void)ev;
	if (strstr(line, "what=fleet_report"))
		w->bad_events++;
	snprintf(w->lastev, sizeof(w->lastev), "%s", line);
}

static void clear_out(struct world *w)
{
	for (unsigned i = 0; i < w->n_out; i++)
		free(w->out[i].buf);
	w->n_out = 0;
}

static void new_core(struct world *w)
{
	struct brk_params p = { 0 };
	struct brk_io io = { .send = w_send, .now_ms = w_now, .unix_s = w_unix, .event = w_event,
			     .arg = w };
	char err[256] = "";
	int rc;

	brk_files_destroy(&w->files);
	assert_int_equal(brk_files_new(&w->files, NULL, NULL, w->dir, err, sizeof(err)), 0);
	brk_files_io(w->files, &io);
	p.fleet_dir = w->fleet_dir;
	p.fleet_soak_ms = 1000;
	p.fleet_assign_valid_ms = 60000;
	rc = brk_new(&w->b, &w->site, &p, &io, err, sizeof(err));
	if (rc < 0)
		print_message("brk_new: %s\n", err);
	assert_int_equal(rc, 0);
}

static void make_site(struct world *w)
{
	char err[256];
	struct ovl_cert c;
	int n;

	assert_int_equal(ovl_id_generate(&w->ca), 0);
	assert_int_equal(ovl_id_generate(&w->site.id), 0);
	assert_int_equal(ovl_id_generate(&w->rel), 0);
	assert_int_equal(ovl_id_generate(&w->admin), 0);
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
	memcpy(w->site.admin_keys[0], w->admin->curve_pk, 32);
	w->site.n_admins = 1;
	/* the release key, certified by the CA */
	ovl_cert_init(&c);
	ovl_cert_set_keys(&c, w->rel);
	c.serial = 2;
	c.role = OVL_ROLE_RELEASE;
	c.not_before = 1000;
	c.not_after = 4000000000ull;
	n = ovl_cert_sign(&c, w->ca->sign_sk, w->rel_cert, sizeof(w->rel_cert), err, sizeof(err));
	assert_true(n > 0);
	w->rel_cert_len = (size_t)n;
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
	snprintf(w->dir, sizeof(w->dir), "/tmp/test_director-XXXXXX");
	assert_non_null(mkdtemp(w->dir));
	snprintf(w->fleet_dir, sizeof(w->fleet_dir), "%s/fleet", w->dir);
	new_core(w);
	*state = w;
	return 0;
}

static int teardown(void **state)
{
	struct world *w = *state;
	char cmd[160];

	brk_destroy(&w->b);
	brk_files_destroy(&w->files);
	clear_out(w);
	for (int i = 0; i < NODES; i++)
		ovl_id_destroy(&w->nodes[i]);
	ovl_id_destroy(&w->ca);
	ovl_id_destroy(&w->rel);
	ovl_id_destroy(&w->admin);
	brk_site_release(&w->site);
	free(w->reply);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", w->dir);
	assert_int_equal(system(cmd), 0);
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
	brk_flush(w->b);
	msgpack_sbuffer_destroy(&sb);
}

/* Node i registers (pre-authorised) in chassis c1 (i < 3) or c2. */
static void register_node(struct world *w, int i)
{
	uint8_t pop[sizeof(BRK_REGISTER_DOMAIN) + 64];
	struct ovl_msg m;

	assert_true(brk_preauth_add(w->b, w->nodes[i]->sign_pk) >= 0);
	ovl_msg_init(&m, OVL_MSG_REGISTER);
	memcpy(m.u.reg.node_id, w->nodes[i]->sign_pk, 32);
	memcpy(m.u.reg.curve_key, w->nodes[i]->curve_pk, 32);
	snprintf(m.u.reg.board, sizeof(m.u.reg.board), "sim");
	snprintf(m.u.reg.version, sizeof(m.u.reg.version), "0.1.0");
	m.u.reg.capacity = 1 << 30;
	snprintf(m.u.reg.domain.site, 64, "sim-site");
	snprintf(m.u.reg.domain.chassis, 64, "%s", i < 3 ? "c1" : "c2");
	snprintf(m.u.reg.domain.slot, 32, "%d", i + 1);
	m.u.reg.port = 7100;
	memcpy(pop, BRK_REGISTER_DOMAIN, sizeof(BRK_REGISTER_DOMAIN));
	memcpy(pop + sizeof(BRK_REGISTER_DOMAIN), w->nodes[i]->sign_pk, 32);
	memcpy(pop + sizeof(BRK_REGISTER_DOMAIN) + 32, w->nodes[i]->curve_pk, 32);
	crypto_sign_detached(m.u.reg.sig, NULL, pop, sizeof(pop), w->nodes[i]->sign_sk);
	send_to_core(w, w->nodes[i], &m);
	memset(&w->sim[i], 0, sizeof(w->sim[i]));
	snprintf(w->sim[i].rep.running, sizeof(w->sim[i].rep.running), "0.1.0");
	snprintf(w->sim[i].rep.slot, sizeof(w->sim[i].rep.slot), "a");
	snprintf(w->sim[i].rep.board, sizeof(w->sim[i].rep.board), "sim");
	w->sim[i].last_action = 255;
}

/* Node i heartbeats with its report; an assignment in the answer is
 * verified and remembered (not acted on: the test moves the report). */
static void heartbeat(struct world *w, int i)
{
	struct ovl_msg m, r;
	uint8_t rep[1024];
	int n = ovl_fleet_report_encode(&w->sim[i].rep, rep, sizeof(rep));
	char err[256];

	assert_true(n > 0);
	clear_out(w);
	ovl_msg_init(&m, OVL_MSG_HEARTBEAT);
	memcpy(m.u.hb.node_id, w->nodes[i]->sign_pk, 32);
	m.u.hb.seq = ++w->sim[i].hb_seq;
	m.u.hb.fleet = (struct ovl_msg_bin){ rep, (size_t)n };
	send_to_core(w, w->nodes[i], &m);
	for (unsigned k = 0; k < w->n_out; k++) {
		if (memcmp(w->out[k].key, w->nodes[i]->curve_pk, 32) != 0 ||
		    ovl_msg_decode(w->out[k].buf, w->out[k].len, &r, err, sizeof(err)) < 0)
			continue;
		if (r.type == OVL_MSG_HEARTBEAT_OK && r.u.hb_ok.fleet.len) {
			struct ovl_fleet_assign a;

			assert_int_equal(ovl_fleet_assign_verify(&a, r.u.hb_ok.fleet.ptr,
								 r.u.hb_ok.fleet.len,
								 w->site.id->sign_pk, err,
								 sizeof(err)), 0);
			assert_memory_equal(a.node, w->nodes[i]->sign_pk, 32);
			/* the same one again until acted on, or a newer one */
			assert_true(a.seq >= w->sim[i].last_seq);
			assert_int_equal(ovl_fleet_assign_fresh(&a, w->unix_s, err, sizeof(err)), 0);
			w->sim[i].last_action = a.action;
			w->sim[i].last_seq = a.seq;
		}
		ovl_msg_release(&r);
	}
	clear_out(w);
}

static void all_heartbeat(struct world *w)
{
	for (int i = 0; i < NODES; i++)
		heartbeat(w, i);
	brk_tick(w->b);
}

/* Advance the clock by ms, in heartbeat steps. */
static void run_for(struct world *w, uint64_t ms)
{
	for (uint64_t t = 0; t < ms; t += 500) {
		w->now_ms += 500;
		all_heartbeat(w);
	}
}

/* The node acts on its assignment as an honest node would, one step. */
static void act(struct world *w, int i, const char *version)
{
	struct node_sim *s = &w->sim[i];

	if (s->last_seq <= s->rep.seq)
		return;
	s->rep.seq = s->last_seq;
	if (s->last_action == OVL_FLEET_ACTION_FETCH) {
		s->rep.state = OVL_FLEET_STATE_INSTALLED;
		snprintf(s->rep.target, sizeof(s->rep.target), "%s", version);
		snprintf(s->rep.other, sizeof(s->rep.other), "%s", version);
	} else if (s->last_action == OVL_FLEET_ACTION_RESTART) {
		s->rep.state = OVL_FLEET_STATE_HEALTHY;
		snprintf(s->rep.running, sizeof(s->rep.running), "%s", version);
		snprintf(s->rep.slot, sizeof(s->rep.slot), "b");
		snprintf(s->rep.other, sizeof(s->rep.other), "0.1.0");
		s->rep.other_good = true;
	} else if (s->last_action == OVL_FLEET_ACTION_STAY) {
		s->rep.state = OVL_FLEET_STATE_IDLE;
	}
}

/* Admin request: a fleet document built by fn, the reply document
 * decoded into *up (release it). */
static void admin_fleet(struct world *w, const msgpack_sbuffer *req, msgpack_unpacked *up)
{
	struct ovl_msg m, r;
	char err[256];

	clear_out(w);
	ovl_msg_init(&m, OVL_MSG_ADMIN);
	m.u.admin.op = OVL_MSG_ADMIN_FLEET;
	m.u.admin.fleet = (struct ovl_msg_bin){ (const uint8_t *)req->data, req->size };
	send_to_core(w, w->admin, &m);
	assert_true(w->n_out >= 1);
	assert_int_equal(ovl_msg_decode(w->out[w->n_out - 1].buf, w->out[w->n_out - 1].len, &r, err,
					sizeof(err)), 0);
	if (r.type != OVL_MSG_ADMIN_OK)
		fail_msg("admin fleet: %s", r.type == OVL_MSG_ERROR ? r.u.error.message : "?");
	free(w->reply);
	w->reply = malloc(r.u.admin_ok.fleet.len);
	assert_non_null(w->reply);
	memcpy(w->reply, r.u.admin_ok.fleet.ptr, r.u.admin_ok.fleet.len);
	msgpack_unpacked_init(up);
	assert_int_equal(msgpack_unpack_next(up, (const char *)w->reply, r.u.admin_ok.fleet.len,
					     NULL), MSGPACK_UNPACK_SUCCESS);
	ovl_msg_release(&r);
	clear_out(w);
}

static const msgpack_object *get(const msgpack_object *m, const char *k)
{
	for (uint32_t i = 0; m->type == MSGPACK_OBJECT_MAP && i < m->via.map.size; i++)
		if (m->via.map.ptr[i].key.via.str.size == strlen(k) &&
		    !memcmp(m->via.map.ptr[i].key.via.str.ptr, k, strlen(k)))
			return &m->via.map.ptr[i].val;
	return NULL;
}

static bool sget(const msgpack_object *m, const char *k, const char *want)
{
	const msgpack_object *o = get(m, k);

	return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(want) &&
	       !memcmp(o->via.str.ptr, want, strlen(want));
}

static bool scontains(const msgpack_object *m, const char *k, const char *want)
{
	const msgpack_object *o = get(m, k);
	char buf[1024];

	if (!o || o->type != MSGPACK_OBJECT_STR || o->via.str.size >= sizeof(buf))
		return false;
	memcpy(buf, o->via.str.ptr, o->via.str.size);
	buf[o->via.str.size] = 0;
	if (!strstr(buf, want))
		print_message("'%s' does not contain '%s'\n", buf, want);
	return strstr(buf, want) != NULL;
}

static uint64_t uget(const msgpack_object *m, const char *k)
{
	const msgpack_object *o = get(m, k);

	return o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? o->via.u64 : 999999;
}

static bool okget(const msgpack_object *m)
{
	const msgpack_object *o = get(m, "ok");

	return o && o->type == MSGPACK_OBJECT_BOOLEAN && o->via.boolean;
}

static void pk_str(msgpack_packer *pk, const char *s)
{
	msgpack_pack_str(pk, strlen(s));
	msgpack_pack_str_body(pk, s, strlen(s));
}

static void simple_req(struct world *w, const char *cmd, msgpack_unpacked *up)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2);
	pk_str(&pk, "v");
	msgpack_pack_uint64(&pk, 1);
	pk_str(&pk, "cmd");
	pk_str(&pk, cmd);
	admin_fleet(w, &sb, up);
	msgpack_sbuffer_destroy(&sb);
}

/* Sign a release of version for board (expires in `ttl` s) with key sk and
 * publish it; the reply in *up. */
static void publish(struct world *w, const char *version, const char *board, int64_t ttl,
		    const uint8_t *sk, const uint8_t *cert, size_t cert_len, bool flip,
		    msgpack_unpacked *up)
{
	struct ovl_fleet_release r;
	uint8_t blocks[2][32], *meta = NULL;
	size_t meta_len = 0;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	char err[256];

	memset(&r, 0, sizeof(r));
	snprintf(r.version, sizeof(r.version), "%s", version);
	snprintf(r.board, sizeof(r.board), "%s", board);
	snprintf(r.min_from, sizeof(r.min_from), "0.0.0");
	r.size = 3u << 20;
	r.block_size = 2u << 20;
	r.nblocks = 2;
	memset(blocks, 7, sizeof(blocks));
	r.blocks = blocks;
	r.issued = w->unix_s - 10;
	r.expires = (uint64_t)((int64_t)w->unix_s + ttl);
	assert_int_equal(ovl_fleet_release_sign(&r, sk, &meta, &meta_len, err, sizeof(err)), 0);
	if (flip)
		meta[meta_len / 2] ^= 1;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 5);
	pk_str(&pk, "v");
	msgpack_pack_uint64(&pk, 1);
	pk_str(&pk, "cmd");
	pk_str(&pk, "publish");
	pk_str(&pk, "release");
	msgpack_pack_bin(&pk, meta_len);
	msgpack_pack_bin_body(&pk, meta, meta_len);
	pk_str(&pk, "cert");
	msgpack_pack_bin(&pk, cert_len);
	msgpack_pack_bin_body(&pk, cert, cert_len);
	pk_str(&pk, "slice");
	pk_str(&pk, "system");
	admin_fleet(w, &sb, up);
	msgpack_sbuffer_destroy(&sb);
	free(meta);
}

static void publish_ok(struct world *w, const char *version)
{
	msgpack_unpacked up;

	publish(w, version, "sim", 3600, w->rel->sign_sk, w->rel_cert, w->rel_cert_len, false, &up);
	if (!okget(&up.data))
		scontains(&up.data, "error", "(none)");
	assert_true(okget(&up.data));
	msgpack_unpacked_destroy(&up);
}

static void start(struct world *w, const char *version, const char *stages, unsigned max_failed,
		  msgpack_unpacked *up)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 6);
	pk_str(&pk, "v");
	msgpack_pack_uint64(&pk, 1);
	pk_str(&pk, "cmd");
	pk_str(&pk, "start");
	pk_str(&pk, "version");
	pk_str(&pk, version);
	pk_str(&pk, "stages");
	pk_str(&pk, stages);
	pk_str(&pk, "max_failed");
	msgpack_pack_uint64(&pk, max_failed);
	pk_str(&pk, "soak_ms");
	msgpack_pack_uint64(&pk, 1000);
	admin_fleet(w, &sb, up);
	msgpack_sbuffer_destroy(&sb);
}

/* Every node registers in slice "system" (all) and reports 0.1.0. */
static void cluster(struct world *w)
{
	char err[256];

	assert_int_equal(brk_slice_create(w->b, "system", 2, "all", err, sizeof(err)), 0);
	for (int i = 0; i < NODES; i++)
		register_node(w, i);
	all_heartbeat(w);
}

static int canary_of(struct world *w)
{
	int c = 0;

	for (int i = 1; i < NODES; i++)
		if (memcmp(w->nodes[i]->sign_pk, w->nodes[c]->sign_pk, 32) < 0)
			c = i;
	return c;
}

static unsigned count_action(struct world *w, uint8_t action)
{
	unsigned n = 0;

	for (int i = 0; i < NODES; i++)
		n += w->sim[i].last_action == action;
	return n;
}

static unsigned count_running(struct world *w, const char *v)
{
	unsigned n = 0;

	for (int i = 0; i < NODES; i++)
		n += strcmp(w->sim[i].rep.running, v) == 0;
	return n;
}

static void test_publish_refusals(void **state)
{
	struct world *w = *state;
	msgpack_unpacked up;
	struct ovl_id *rogue = NULL;

	/* a flipped byte in the metadata */
	publish(w, "0.2.0", "sim", 3600, w->rel->sign_sk, w->rel_cert, w->rel_cert_len, true, &up);
	assert_false(okget(&up.data));
	assert_true(scontains(&up.data, "error", "publish refused"));
	msgpack_unpacked_destroy(&up);
	/* signed by a key the CA did not certify (presenting the real cert) */
	assert_int_equal(ovl_id_generate(&rogue), 0);
	publish(w, "0.2.0", "sim", 3600, rogue->sign_sk, w->rel_cert, w->rel_cert_len, false, &up);
	assert_false(okget(&up.data));
	msgpack_unpacked_destroy(&up);
	/* ... and with a certificate the CA never signed */
	{
		struct ovl_cert c;
		uint8_t cert[OVL_CERT_MAX_BYTES];
		char err[256];
		int n;

		ovl_cert_init(&c);
		ovl_cert_set_keys(&c, rogue);
		c.serial = 9;
		c.role = OVL_ROLE_RELEASE;
		c.not_before = 1000;
		c.not_after = 4000000000ull;
		n = ovl_cert_sign(&c, rogue->sign_sk, cert, sizeof(cert), err, sizeof(err));
		assert_true(n > 0);
		publish(w, "0.2.0", "sim", 3600, rogue->sign_sk, cert, (size_t)n, false, &up);
		assert_false(okget(&up.data));
		assert_true(scontains(&up.data, "error", "CA"));
		msgpack_unpacked_destroy(&up);
	}
	ovl_id_destroy(&rogue);
	/* expired */
	publish(w, "0.2.0", "sim", -10, w->rel->sign_sk, w->rel_cert, w->rel_cert_len, false, &up);
	assert_false(okget(&up.data));
	assert_true(scontains(&up.data, "error", "expired"));
	msgpack_unpacked_destroy(&up);
	/* nothing was kept: a start finds no release */
	cluster(w);
	start(w, "0.2.0", "canary,100%", 0, &up);
	assert_false(okget(&up.data));
	assert_true(scontains(&up.data, "error", "no release 0.2.0"));
	msgpack_unpacked_destroy(&up);
	/* a start for another board has no node to update */
	publish(w, "0.2.0", "other", 3600, w->rel->sign_sk, w->rel_cert, w->rel_cert_len, false,
		&up);
	assert_true(okget(&up.data));
	msgpack_unpacked_destroy(&up);
	start(w, "0.2.0", "canary,100%", 0, &up);
	assert_false(okget(&up.data));
	assert_true(scontains(&up.data, "error", "no node to update"));
	msgpack_unpacked_destroy(&up);
	assert_int_equal(count_action(w, 255), NODES);
	/* a bad request: an error, not a crash */
	{
		msgpack_sbuffer sb;
		struct ovl_msg m;

		msgpack_sbuffer_init(&sb);
		msgpack_sbuffer_write(&sb, "\xc1\x00", 2);
		ovl_msg_init(&m, OVL_MSG_ADMIN);
		m.u.admin.op = OVL_MSG_ADMIN_FLEET;
		m.u.admin.fleet = (struct ovl_msg_bin){ (const uint8_t *)sb.data, sb.size };
		clear_out(w);
		send_to_core(w, w->admin, &m);
		assert_true(w->n_out == 1);
		clear_out(w);
		/* and not from an admin key */
		send_to_core(w, w->nodes[0], &m);
		msgpack_sbuffer_destroy(&sb);
		clear_out(w);
	}
}

/* Drive the cluster until every node runs version or `max_ms` passed;
 * checks on the way that at most one node of the slice restarts at once. */
static void drive(struct world *w, const char *version, uint64_t max_ms)
{
	for (uint64_t t = 0; t < max_ms && count_running(w, version) < NODES; t += 500) {
		unsigned restarting = 0;

		for (int i = 0; i < NODES; i++) {
			act(w, i, version);
			restarting += w->sim[i].last_action == OVL_FLEET_ACTION_RESTART &&
				      strcmp(w->sim[i].rep.running, version) != 0;
		}
		assert_true(restarting <= 1);
		w->now_ms += 500;
		all_heartbeat(w);
	}
}

static void test_rollout(void **state)
{
	struct world *w = *state;
	msgpack_unpacked up;
	int canary;

	cluster(w);
	publish_ok(w, "0.2.0");
	start(w, "0.2.0", "canary,chassis,100%", 0, &up);
	assert_true(okget(&up.data));
	assert_int_equal(uget(&up.data, "targets"), NODES);
	msgpack_unpacked_destroy(&up);
	all_heartbeat(w);
	canary = canary_of(w);
	/* only the canary is told to fetch */
	assert_int_equal(count_action(w, OVL_FLEET_ACTION_FETCH), 1);
	assert_int_equal(w->sim[canary].last_action, OVL_FLEET_ACTION_FETCH);
	/* installed, but a member of its slice is degraded: no restart yet */
	w->sim[(canary + 1) % NODES].rep.degraded = 3;
	act(w, canary, "0.2.0");
	run_for(w, 2000);
	assert_int_equal(w->sim[canary].last_action, OVL_FLEET_ACTION_FETCH);
	w->sim[(canary + 1) % NODES].rep.degraded = 0;
	run_for(w, 1000);
	assert_int_equal(w->sim[canary].last_action, OVL_FLEET_ACTION_RESTART);
	act(w, canary, "0.2.0");
	run_for(w, 500);
	simple_req(w, "status", &up);
	assert_true(sget(&up.data, "stage", "canary"));
	assert_true(get(&up.data, "soaking")->via.boolean);
	assert_int_equal(uget(get(&up.data, "counts"), "healthy"), 1);
	msgpack_unpacked_destroy(&up);
	/* nobody else fetches while the canary soaks */
	assert_int_equal(count_action(w, OVL_FLEET_ACTION_FETCH), 0);
	run_for(w, 1500);
	/* the chassis stage: the canary's chassis mates */
	for (int i = 0; i < NODES; i++)
		if (i != canary)
			assert_int_equal(w->sim[i].last_action == OVL_FLEET_ACTION_FETCH,
					 (i < 3) == (canary < 3));
	drive(w, "0.2.0", 60000);
	assert_int_equal(count_running(w, "0.2.0"), NODES);
	run_for(w, 1000);
	simple_req(w, "status", &up);
	assert_true(sget(&up.data, "state", "done"));
	assert_int_equal(uget(get(&up.data, "counts"), "healthy"), NODES);
	assert_int_equal(get(&up.data, "nodes")->via.array.size, NODES);
	msgpack_unpacked_destroy(&up);
	simple_req(w, "versions", &up);
	assert_true(okget(&up.data));
	assert_int_equal(get(&up.data, "nodes")->via.array.size, NODES);
	for (int i = 0; i < NODES; i++) {
		const msgpack_object *n = &get(&up.data, "nodes")->via.array.ptr[i];

		assert_true(sget(n, "running", "0.2.0"));
		assert_true(sget(n, "slot", "b"));
	}
	msgpack_unpacked_destroy(&up);
}

static void test_halt_resume(void **state)
{
	struct world *w = *state;
	msgpack_unpacked up;
	int canary;

	cluster(w);
	publish_ok(w, "0.2.0");
	start(w, "0.2.0", "canary,100%", 0, &up);
	assert_true(okget(&up.data));
	msgpack_unpacked_destroy(&up);
	all_heartbeat(w);
	canary = canary_of(w);
	act(w, canary, "0.2.0");
	run_for(w, 1000);
	assert_int_equal(w->sim[canary].last_action, OVL_FLEET_ACTION_RESTART);
	/* the new slot fails its gate: the node comes back on 0.1.0, rolled back */
	w->sim[canary].rep.seq = w->sim[canary].last_seq;
	w->sim[canary].rep.state = OVL_FLEET_STATE_ROLLED_BACK;
	snprintf(w->sim[canary].rep.reason, sizeof(w->sim[canary].rep.reason),
		 "slot b failed its health gate: shelf-node exited 1");
	run_for(w, 1000);
	simple_req(w, "status", &up);
	assert_true(sget(&up.data, "state", "halted"));
	assert_true(scontains(&up.data, "reason", "rolled back: slot b failed its health gate"));
	assert_int_equal(get(&up.data, "failures")->via.array.size, 1);
	assert_int_equal(uget(get(&up.data, "counts"), "rolled_back"), 1);
	msgpack_unpacked_destroy(&up);
	/* nobody else was told to fetch; the canary is told to stay */
	for (int i = 0; i < NODES; i++)
		if (i != canary)
			assert_int_equal(w->sim[i].last_action, 255);
	assert_int_equal(w->sim[canary].last_action, OVL_FLEET_ACTION_STAY);
	run_for(w, 5000);
	assert_int_equal(count_action(w, OVL_FLEET_ACTION_FETCH), 0);
	/* the rollout survives a restart of the broker, halted */
	brk_destroy(&w->b);
	new_core(w);
	act(w, canary, "0.2.0"); /* the stay */
	for (int i = 0; i < NODES; i++) {
		struct node_sim keep = w->sim[i];

		register_node(w, i);
		w->sim[i] = keep; /* a node keeps its report and seq across the broker's restart */
	}
	all_heartbeat(w);
	simple_req(w, "status", &up);
	assert_true(sget(&up.data, "state", "halted"));
	assert_true(scontains(&up.data, "reason", "health gate"));
	/* the canary shows as rolled back, whatever it reports after the stay */
	assert_int_equal(uget(get(&up.data, "counts"), "rolled_back"), 1);
	assert_int_equal(uget(get(&up.data, "counts"), "pending"), NODES - 1);
	msgpack_unpacked_destroy(&up);
	/* a fixed image of the same version, then resume: it completes */
	publish_ok(w, "0.2.0");
	simple_req(w, "resume", &up);
	assert_true(okget(&up.data));
	msgpack_unpacked_destroy(&up);
	all_heartbeat(w);
	assert_int_equal(w->sim[canary].last_action, OVL_FLEET_ACTION_FETCH);
	drive(w, "0.2.0", 60000);
	assert_int_equal(count_running(w, "0.2.0"), NODES);
	run_for(w, 1000);
	simple_req(w, "status", &up);
	assert_true(sget(&up.data, "state", "done"));
	msgpack_unpacked_destroy(&up);
}

static void test_abort_and_replace(void **state)
{
	struct world *w = *state;
	msgpack_unpacked up;
	int canary;

	cluster(w);
	publish_ok(w, "0.2.0");
	publish_ok(w, "0.3.0");
	start(w, "0.2.0", "canary,50%,100%", 0, &up);
	assert_true(okget(&up.data));
	msgpack_unpacked_destroy(&up);
	/* a second start while one runs is refused */
	start(w, "0.3.0", "canary,100%", 0, &up);
	assert_false(okget(&up.data));
	assert_true(scontains(&up.data, "error", "is running"));
	msgpack_unpacked_destroy(&up);
	all_heartbeat(w);
	canary = canary_of(w);
	assert_int_equal(w->sim[canary].last_action, OVL_FLEET_ACTION_FETCH);
	simple_req(w, "abort", &up);
	assert_true(okget(&up.data));
	assert_true(sget(&up.data, "state", "aborted"));
	msgpack_unpacked_destroy(&up);
	all_heartbeat(w);
	assert_int_equal(w->sim[canary].last_action, OVL_FLEET_ACTION_STAY);
	act(w, canary, "0.2.0");
	/* halt with nothing running is refused */
	simple_req(w, "halt", &up);
	assert_false(okget(&up.data));
	msgpack_unpacked_destroy(&up);
	start(w, "0.3.0", "canary,100%", 0, &up);
	assert_true(okget(&up.data));
	msgpack_unpacked_destroy(&up);
	all_heartbeat(w);
	assert_int_equal(w->sim[canary].last_action, OVL_FLEET_ACTION_FETCH);
	drive(w, "0.3.0", 60000);
	assert_int_equal(count_running(w, "0.3.0"), NODES);
}

static void test_corrupt_state(void **state)
{
	struct world *w = *state;
	msgpack_unpacked up;
	char path[200];
	FILE *f;
	uint8_t junk[64];

	cluster(w);
	publish_ok(w, "0.2.0");
	start(w, "0.2.0", "canary,100%", 0, &up);
	assert_true(okget(&up.data));
	msgpack_unpacked_destroy(&up);
	/* reports that do not decode: ignored, logged at most once per 10 s */
	w->bad_events = 0;
	for (int k = 0; k < 20; k++) {
		struct ovl_msg m;

		randombytes_buf(junk, sizeof(junk));
		ovl_msg_init(&m, OVL_MSG_HEARTBEAT);
		memcpy(m.u.hb.node_id, w->nodes[0]->sign_pk, 32);
		m.u.hb.seq = ++w->sim[0].hb_seq;
		m.u.hb.fleet = (struct ovl_msg_bin){ junk, sizeof(junk) };
		send_to_core(w, w->nodes[0], &m);
		clear_out(w);
	}
	assert_int_equal(w->bad_events, 1);
	brk_destroy(&w->b);
	snprintf(path, sizeof(path), "%s/rollout", w->fleet_dir);
	f = fopen(path, "r+");
	assert_non_null(f);
	fseek(f, 20, SEEK_SET);
	fputs("\nbogus line\n", f);
	fclose(f);
	new_core(w);
	simple_req(w, "status", &up);
	assert_true(sget(&up.data, "state", "halted"));
	assert_true(scontains(&up.data, "reason", "state file unreadable"));
	msgpack_unpacked_destroy(&up);
	simple_req(w, "resume", &up);
	assert_false(okget(&up.data));
	msgpack_unpacked_destroy(&up);
	/* the release survived; a new start replaces the unreadable rollout */
	for (int i = 0; i < NODES; i++)
		register_node(w, i);
	all_heartbeat(w);
	start(w, "0.2.0", "canary,100%", 0, &up);
	assert_true(okget(&up.data));
	msgpack_unpacked_destroy(&up);
	brk_destroy(&w->b);
	new_core(w);
	simple_req(w, "status", &up);
	assert_true(sget(&up.data, "state", "running"));
	msgpack_unpacked_destroy(&up);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_publish_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rollout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_halt_resume, setup, teardown),
		cmocka_unit_test_setup_teardown(test_abort_and_replace, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_state, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
