/* Repair and anti-entropy on their own (firmware/req/req_heal.c, req.h
 * "Repair"): two nodes' request layers, each over its own store, with one
 * map of a replicated slice; the digests they answer each other, the LIST
 * of one bucket, and repair hint records across a restart. No network:
 * the requests go straight to node_req_start(), the test standing in for
 * the session and running the loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "node.h"
#include "overlay.h"
#include "probe.h"
#include "req/req_int.h"

#define RUN_ROUNDS_MAX 100000
#define NKEYS 600
#define SLICE "hot"

struct node {
	char path[160];
	struct ovl_id *id;
	struct node_store *store;
	struct node_repl *repl;
	struct node_req *rq;
};

struct fx {
	char dir[64];
	struct node_loop *loop;
	ovl_keyring_t *kr;
	struct ovl_peers *peers;
	struct ovl_id *third;
	struct ovl_msg_member mem[3];
	struct node_ctl_map map;
	struct node a, b;
};

static const struct node_ctl_map *map_find(void *arg, const char *slice)
{
	struct fx *f = arg;

	return strcmp(slice, SLICE) == 0 ? &f->map : NULL;
}

static const struct node_ctl_map *map_at(void *arg, unsigned i)
{
	struct fx *f = arg;

	return i == 0 ? &f->map : NULL;
}

static const uint8_t *cert_get(void *arg, size_t *len)
{
	(void)arg;
	*len = 0;
	return NULL;
}

static uint64_t now_s(void *arg)
{
	(void)arg;
	return 1700000000;
}

static uint64_t now_ms(void *arg)
{
	(void)arg;
	return 1700000000000ull;
}

static void store_open(struct fx *f, struct node *n, bool format)
{
	struct node_store_opts so;
	char err[256];

	node_store_opts_init(&so);
	so.path = n->path;
	so.loop = f->loop;
	so.create_size = 64 << 20;
	so.format = format;
	so.segment_bytes = 8 << 20;
	if (node_store_open(&n->store, &so, err, sizeof(err)) < 0)
		fail_msg("%s", err);
}

static void req_open(struct fx *f, struct node *n)
{
	struct node_req_opts ro = { 0 };
	char err[256];

	ro.loop = f->loop;
	ro.store = n->store;
	ro.repl = n->repl;
	if (node_req_new(&n->rq, &ro, err, sizeof(err)) < 0)
		fail_msg("%s", err);
}

static void node_up(struct fx *f, struct node *n, const char *name)
{
	struct node_repl_opts po = { 0 };
	char err[256];

	snprintf(n->path, sizeof(n->path), "%s/%s", f->dir, name);
	assert_int_equal(ovl_id_generate(&n->id), 0);
	store_open(f, n, true);
	po.loop = f->loop;
	po.id = n->id;
	po.peers = f->peers;
	po.map_find = map_find;
	po.map_at = map_at;
	po.cert_get = cert_get;
	po.now_s = now_s;
	po.now_ms = now_ms;
	po.arg = f;
	assert_int_equal(node_repl_new(&n->repl, &po, err, sizeof(err)), 0);
	req_open(f, n);
}

static void drain(struct fx *f, struct node *n)
{
	while (node_loop_inflight(f->loop) || !node_store_idle(n->store))
		node_loop_run(f->loop, true);
}

static void node_down(struct fx *f, struct node *n, bool all)
{
	drain(f, n);
	node_req_stop(n->rq);
	drain(f, n);
	node_req_destroy(&n->rq);
	node_store_close(&n->store);
	if (all) {
		node_repl_destroy(&n->repl);
		ovl_id_destroy(&n->id);
	}
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	uint8_t ca[OVL_ID_BYTES] = { 1 };
	char err[256];

	snprintf(f->dir, sizeof(f->dir), "/tmp/shelf-heal-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	assert_int_equal(node_loop_new(&f->loop, 256, err, sizeof(err)), 0);
	f->kr = ovl_keyring_new();
	assert_int_equal(ovl_peers_new(&f->peers, ca, f->kr), 0);
	node_up(f, &f->a, "a");
	node_up(f, &f->b, "b");
	assert_int_equal(ovl_id_generate(&f->third), 0);
	/* three members, R = 2: some keys are homed on a and b, others not */
	for (unsigned i = 0; i < 3; i++) {
		const struct ovl_id *id = i == 0 ? f->a.id : i == 1 ? f->b.id : f->third;

		memcpy(f->mem[i].id, id->sign_pk, OVL_ID_BYTES);
		f->mem[i].capacity = 1ull << 30;
		f->mem[i].state = OVL_MSG_STATE_UP;
		f->mem[i].port = 1;
		snprintf(f->mem[i].domain.site, sizeof(f->mem[i].domain.site), "s");
		snprintf(f->mem[i].domain.chassis, sizeof(f->mem[i].domain.chassis), "c%u", i);
		snprintf(f->mem[i].domain.slot, sizeof(f->mem[i].domain.slot), "%u", i);
	}
	snprintf(f->map.name, sizeof(f->map.name), SLICE);
	f->map.epoch = 5;
	f->map.replicas = 2;
	f->map.members = f->mem;
	f->map.n_members = 3;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[128];

	node_down(f, &f->a, true);
	node_down(f, &f->b, true);
	ovl_id_destroy(&f->third);
	ovl_peers_destroy(&f->peers);
	ovl_keyring_destroy(&f->kr);
	node_loop_destroy(&f->loop);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

struct answer {
	int calls;
	int res;
	uint8_t data[OVL_WIRE_DIGEST_BUCKETS * OVL_WIRE_DIGEST_PAIR_BYTES];
	size_t len;
	/* LIST */
	char keys[64][32];
	struct ovl_wire_ver vers[64];
	bool tombs[64];
	uint32_t nkeys;
	bool more, by_set;
};

static void on_answer(void *arg, const struct node_req_result *r, struct node_req_buf **buf)
{
	struct answer *a = arg;

	assert_null(buf);
	a->calls++;
	a->res = r->res;
	if (r->res == 0 && r->type == NODE_REQ_DIGEST) {
		assert_true(r->len <= sizeof(a->data));
		memcpy(a->data, r->data, r->len);
		a->len = r->len;
	}
	if (r->res == 0 && r->type == NODE_REQ_LIST) {
		a->nkeys = r->nkeys;
		a->more = r->more;
		a->by_set = r->by_set;
		for (uint32_t i = 0; i < r->nkeys && i < 64; i++) {
			snprintf(a->keys[i], sizeof(a->keys[i]), "%.*s", (int)r->vkeys[i].len,
				 (const char *)r->vkeys[i].ptr);
			a->vers[i] = r->vkeys[i].ver;
			a->tombs[i] = r->vkeys[i].tomb;
		}
	}
}

/* node n's digest for node `asker` (buckets 0 or 256) */
static void digest(struct fx *f, struct node *n, struct node *asker, uint32_t buckets,
		   struct answer *a)
{
	struct node_req_args q = { .type = NODE_REQ_DIGEST, .slice = SLICE };

	memset(a, 0, sizeof(*a));
	q.buckets = buckets;
	q.peer_id = asker->id->sign_pk;
	assert_int_equal(node_req_start(n->rq, &q, on_answer, a), 0);
	for (int i = 0; i < RUN_ROUNDS_MAX && !a->calls; i++) {
		req_heal_tick(n->rq, ovl_mono_ms());
		node_loop_run(f->loop, false);
	}
	assert_int_equal(a->calls, 1);
	assert_int_equal(a->res, 0);
	assert_int_equal(a->len, buckets ? buckets * 16u : 16u);
}

static uint64_t rd64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

/* Whether key is homed on both a and b under the map. */
static bool shared(struct fx *f, const char *key)
{
	struct node_repl_plan p;

	assert_int_equal(node_repl_plan(f->mem, 3, 2, f->a.id->sign_pk, key, strlen(key), NULL, &p), 0);
	if (p.self_home < 0)
		return false;
	for (unsigned i = 0; i < p.nchain; i++)
		if (memcmp(p.chain[i].id, f->b.id->sign_pk, OVL_ID_BYTES) == 0)
			return true;
	return false;
}

static void put_both(struct fx *f, const char *key, uint64_t hlc, bool tomb)
{
	struct node_store_ver v = { hlc, 42 };
	struct node *ns[2] = { &f->a, &f->b };

	for (int i = 0; i < 2; i++) {
		if (tomb)
			assert_int_equal(node_store_delete_ver(ns[i]->store, key, strlen(key), &v, NULL), 0);
		else
			assert_int_equal(node_store_put_ver(ns[i]->store, key, strlen(key), key,
							    strlen(key), &v, NULL), 0);
	}
}

/* Two stores that agree give equal digests (root and every bucket); one
 * key that differs makes exactly its bucket differ; a key not shared with
 * the asker changes nothing. */
static void test_digest(void **state)
{
	struct fx *f = *state;
	struct answer *da = calloc(1, sizeof(*da)), *db = calloc(1, sizeof(*db));
	char key[32], diffkey[32] = "", other[32] = "";
	unsigned nshared = 0, ndiff = 0;
	uint64_t rn;
	uint8_t bucket;

	for (unsigned i = 0; i < NKEYS; i++) {
		snprintf(key, sizeof(key), "key-%04u", i);
		put_both(f, key, 1000 + i, i % 10 == 3); /* tombstones count too */
		if (shared(f, key)) {
			nshared++;
			if (!diffkey[0] && i % 10 != 3)
				snprintf(diffkey, sizeof(diffkey), "%s", key);
		} else if (!other[0]) {
			snprintf(other, sizeof(other), "%s", key);
		}
	}
	assert_true(nshared > 0 && nshared < NKEYS && diffkey[0] && other[0]);
	/* the root: every shared key, and the same on both sides */
	digest(f, &f->a, &f->b, 0, da);
	digest(f, &f->b, &f->a, 0, db);
	rn = rd64(da->data);
	assert_int_equal(rn, nshared);
	assert_memory_equal(da->data, db->data, 16);
	digest(f, &f->a, &f->b, OVL_WIRE_DIGEST_BUCKETS, da);
	digest(f, &f->b, &f->a, OVL_WIRE_DIGEST_BUCKETS, db);
	assert_memory_equal(da->data, db->data, da->len);
	/* a key a holds and b does not share changes nothing */
	{
		struct node_store_ver v = { 99999, 7 };

		assert_int_equal(node_store_put_ver(f->a.store, other, strlen(other), "x", 1, &v, NULL), 0);
	}
	digest(f, &f->a, &f->b, OVL_WIRE_DIGEST_BUCKETS, da);
	assert_memory_equal(da->data, db->data, da->len);
	/* one shared key newer on b: exactly its bucket differs */
	{
		struct node_store_ver v = { 99999, 7 };

		assert_int_equal(node_store_put_ver(f->b.store, diffkey, strlen(diffkey), "y", 1, &v,
						    NULL), 0);
	}
	req_heal_key_hash(SLICE, (const uint8_t *)diffkey, strlen(diffkey), NULL, false, NULL, &bucket);
	digest(f, &f->b, &f->a, OVL_WIRE_DIGEST_BUCKETS, db);
	for (unsigned b = 0; b < OVL_WIRE_DIGEST_BUCKETS; b++)
		if (memcmp(da->data + 16 * b, db->data + 16 * b, 16) != 0) {
			ndiff++;
			assert_int_equal(b, bucket);
			/* the same count, another xor */
			assert_int_equal(rd64(da->data + 16 * b), rd64(db->data + 16 * b));
		}
	assert_int_equal(ndiff, 1);
	/* the roots differ too */
	digest(f, &f->a, &f->b, 0, da);
	digest(f, &f->b, &f->a, 0, db);
	assert_memory_not_equal(da->data, db->data, 16);
	/* a deleted key (a newer tombstone on b) is a difference as well */
	free(da);
	free(db);
}

/* A LIST of one bucket, from a member: only that bucket's keys shared
 * with the asker, with versions and tombstones; refused to a non-member
 * and without versions. */
static void test_list_bucket(void **state)
{
	struct fx *f = *state;
	struct answer *a = calloc(1, sizeof(*a));
	struct node_req_args q = { .type = NODE_REQ_LIST, .slice = SLICE };
	char key[32];
	unsigned want = 0;
	uint8_t bucket = 0;

	for (unsigned i = 0; i < NKEYS; i++) {
		snprintf(key, sizeof(key), "key-%04u", i);
		put_both(f, key, 1000 + i, i % 7 == 0);
	}
	/* the bucket of the first shared key */
	for (unsigned i = 0; i < NKEYS; i++) {
		snprintf(key, sizeof(key), "key-%04u", i);
		if (shared(f, key)) {
			req_heal_key_hash(SLICE, (const uint8_t *)key, strlen(key), NULL, false, NULL,
					  &bucket);
			break;
		}
	}
	for (unsigned i = 0; i < NKEYS; i++) {
		uint8_t b;

		snprintf(key, sizeof(key), "key-%04u", i);
		req_heal_key_hash(SLICE, (const uint8_t *)key, strlen(key), NULL, false, NULL, &b);
		want += b == bucket && shared(f, key);
	}
	assert_true(want >= 1 && want < 64);
	q.has_bucket = true;
	q.bucket = bucket;
	q.vers = true;
	q.limit = 1000;
	q.peer_id = f->b.id->sign_pk;
	assert_int_equal(node_req_start(f->a.rq, &q, on_answer, a), 0);
	assert_int_equal(a->calls, 1);
	assert_int_equal(a->res, 0);
	assert_int_equal(a->nkeys, want);
	assert_false(a->more);
	assert_false(a->by_set);
	for (uint32_t i = 0; i < a->nkeys; i++) {
		uint8_t b;
		unsigned k = (unsigned)atoi(a->keys[i] + 4);

		req_heal_key_hash(SLICE, (const uint8_t *)a->keys[i], strlen(a->keys[i]), NULL, false,
				  NULL, &b);
		assert_int_equal(b, bucket);
		assert_true(shared(f, a->keys[i]));
		assert_int_equal(a->vers[i].hlc, 1000 + k);
		assert_int_equal(a->tombs[i], k % 7 == 0);
	}
	/* paging: one at a time gives the same keys */
	if (want > 1) {
		q.limit = 1;
		memset(a, 0, sizeof(*a));
		assert_int_equal(node_req_start(f->a.rq, &q, on_answer, a), 0);
		assert_int_equal(a->nkeys, 1);
		assert_true(a->more);
	}
	/* a set of buckets: the bucket and the next two holding shared keys,
	 * every shared key of them in key order, by_set */
	{
		uint8_t set[OVL_WIRE_DIGEST_BUCKETS / 8] = { 0 };
		unsigned nb = 1, want_set = 0;

		set[bucket / 8] |= (uint8_t)(1u << (bucket % 8));
		for (unsigned i = 0; i < NKEYS && nb < 3; i++) {
			uint8_t b;

			snprintf(key, sizeof(key), "key-%04u", i);
			req_heal_key_hash(SLICE, (const uint8_t *)key, strlen(key), NULL, false, NULL, &b);
			if (shared(f, key) && !(set[b / 8] & (1u << (b % 8)))) {
				set[b / 8] |= (uint8_t)(1u << (b % 8));
				nb++;
			}
		}
		for (unsigned i = 0; i < NKEYS; i++) {
			uint8_t b;

			snprintf(key, sizeof(key), "key-%04u", i);
			req_heal_key_hash(SLICE, (const uint8_t *)key, strlen(key), NULL, false, NULL, &b);
			want_set += (set[b / 8] & (1u << (b % 8))) && shared(f, key);
		}
		assert_int_equal(nb, 3);
		assert_true(want_set > want && want_set < 64);
		q.limit = 1000;
		q.bucket_set = set;
		memset(a, 0, sizeof(*a));
		assert_int_equal(node_req_start(f->a.rq, &q, on_answer, a), 0);
		assert_int_equal(a->res, 0);
		assert_true(a->by_set);
		assert_int_equal(a->nkeys, want_set);
		for (uint32_t i = 0; i < a->nkeys; i++) {
			uint8_t b;

			req_heal_key_hash(SLICE, (const uint8_t *)a->keys[i], strlen(a->keys[i]), NULL,
					  false, NULL, &b);
			assert_true(set[b / 8] & (1u << (b % 8)));
			assert_true(shared(f, a->keys[i]));
			if (i)
				assert_true(strcmp(a->keys[i - 1], a->keys[i]) < 0);
		}
		q.bucket_set = NULL;
	}
	/* refusals: a node that is no member; no versions; a client */
	q.limit = 1000;
	q.peer_id = (const uint8_t *)"0123456789abcdef0123456789abcdef";
	assert_int_equal(node_req_start(f->a.rq, &q, on_answer, a), -EACCES);
	q.peer_id = f->b.id->sign_pk;
	q.vers = false;
	assert_int_equal(node_req_start(f->a.rq, &q, on_answer, a), -EINVAL);
	q.vers = true;
	q.peer_id = NULL;
	assert_int_equal(node_req_start(f->a.rq, &q, on_answer, a), -EACCES);
	free(a);
}

/* A node's plain GET of an update's block (fe x8 'F'): from a member of
 * the slice only; a node's other GETs (repair) as before; ff x8 keys are
 * refused to everyone. */
static void test_fleet_block_get(void **state)
{
	struct fx *f = *state;
	struct answer a = { 0 };
	uint8_t key[OVL_FLEET_BLOCK_KEY_BYTES], id[32] = { 7, 1, 2 };
	struct node_req_args q = { .type = NODE_REQ_GET, .slice = SLICE, .length = UINT64_MAX };
	struct node_req_get *g = NULL;

	ovl_fleet_block_key(key, id, 3);
	q.key = key;
	q.klen = sizeof(key);
	q.peer_id = (const uint8_t *)"0123456789abcdef0123456789abcdef";
	assert_int_equal(node_req_start(f->a.rq, &q, on_answer, &a), -EACCES);
	assert_non_null(strstr(node_req_errmsg(f->a.rq), "no member"));
	assert_int_equal(node_req_get_start(f->a.rq, &q, OVL_WIRE_CHUNK_BYTES, on_answer, &a, &g),
			 -EACCES);
	assert_null(g);
	assert_int_equal(a.calls, 0);
	/* a member: served (not found here: no such object) */
	q.peer_id = f->b.id->sign_pk;
	assert_int_equal(node_req_start(f->a.rq, &q, on_answer, &a), -ENOENT);
	/* another node's GET of another fe x8 key: as before (repair) */
	key[8] = 'C';
	q.peer_id = (const uint8_t *)"0123456789abcdef0123456789abcdef";
	assert_int_equal(node_req_start(f->a.rq, &q, on_answer, &a), -ENOENT);
	drain(f, &f->a);
	assert_int_equal(a.calls, 0);
	/* ff x8: the node's own */
	memset(key, 0xff, 8);
	q.peer_id = f->b.id->sign_pk;
	assert_int_equal(node_req_start(f->a.rq, &q, on_answer, &a), -EINVAL);
	q.peer_id = NULL;
	assert_int_equal(node_req_start(f->a.rq, &q, on_answer, &a), -EINVAL);
}

/* DIGEST refused to a client and to a non-member; HEAL answers with the
 * heal counters. */
static void test_digest_refusals_and_heal(void **state)
{
	struct fx *f = *state;
	struct answer a = { 0 };
	struct node_req_args q = { .type = NODE_REQ_DIGEST, .slice = SLICE };
	struct ovl_wire_counter c[OVL_WIRE_COUNTERS_MAX];
	unsigned n;
	bool seen = false;

	assert_int_equal(node_req_start(f->a.rq, &q, on_answer, &a), -EACCES);
	q.peer_id = (const uint8_t *)"0123456789abcdef0123456789abcdef";
	assert_int_equal(node_req_start(f->a.rq, &q, on_answer, &a), -EACCES);
	q.slice = "nope";
	q.peer_id = f->b.id->sign_pk;
	assert_int_equal(node_req_start(f->a.rq, &q, on_answer, &a), -EXDEV);
	assert_int_equal(a.calls, 0);
	memset(&q, 0, sizeof(q));
	q.type = NODE_REQ_HEAL;
	q.slice = SLICE;
	q.check_only = true;
	q.has_rate = true;
	q.rate = 12345; /* under the least limit: refused, nothing changed */
	assert_int_equal(node_req_start(f->a.rq, &q, on_answer, &a), -EINVAL);
	assert_int_equal(a.calls, 0);
	q.rate = 1 << 20;
	q.has_duty = true;
	q.duty = 40;
	assert_int_equal(node_req_start(f->a.rq, &q, on_answer, &a), 0);
	assert_int_equal(a.calls, 1);
	assert_int_equal(a.res, 0);
	assert_int_equal(f->a.rq->pace.rate_limit, 1 << 20);
	assert_int_equal(f->a.rq->pace.duty, 40);
	/* NODE-STAT of the slice shows the heal counters */
	n = node_req_counters(f->a.rq, SLICE, c, OVL_WIRE_COUNTERS_MAX);
	for (unsigned i = 0; i < n; i++)
		seen |= strcmp(c[i].name, "heal_objects_degraded") == 0;
	assert_true(seen);
	n = node_req_counters(f->a.rq, NULL, c, OVL_WIRE_COUNTERS_MAX);
	for (unsigned i = 0; i < n; i++) /* heal_objects_lost is the scrub's, node-wide */
		assert_true(strcmp(c[i].name, "heal_objects_full") != 0 && strncmp(c[i].name, "ae_", 3) != 0);
}

static void hint_done(void *arg, int res)
{
	int *r = arg;

	*r = res;
}

/* A hint record's type byte: after RESERVED(8) 'H' home(32) hlc(8) node(8). */
static int type_cb(void *arg, const void *key, size_t klen)
{
	const uint8_t *k = key;
	int *types = arg;

	assert_true(klen > 9 + 32 + 16);
	if (k[9 + 32 + 16] == 'R')
		*types |= 1;
	if (k[9 + 32 + 16] == 'T')
		*types |= 2;
	return 0;
}

/* Repair hints ('R' object, 'T' tombstone) are durable records: they
 * survive a restart, and never show as hints_for_ (no node syncs for
 * them). */
static void test_repair_hints_restart(void **state)
{
	struct fx *f = *state;
	struct ovl_wire_ver v = { 5000, 3 };
	struct ovl_wire_counter c[OVL_WIRE_COUNTERS_MAX];
	int r1 = 1, r2 = 1;
	unsigned n;

	assert_int_equal(node_store_put(f->a.store, "obj", 3, "v", 1), 0);
	assert_int_equal(req_hint_put_repair(f->a.rq, f->b.id->sign_pk, SLICE,
					     (const uint8_t *)"obj", 3, &v, false, 1, hint_done, &r1), 0);
	assert_int_equal(req_hint_put_repair(f->a.rq, f->b.id->sign_pk, SLICE,
					     (const uint8_t *)"gone", 4, &v, true, 0, hint_done, &r2), 0);
	for (int i = 0; i < RUN_ROUNDS_MAX && (r1 == 1 || r2 == 1); i++)
		node_loop_run(f->loop, true);
	assert_int_equal(r1, 0);
	assert_int_equal(r2, 0);
	assert_int_equal(req_hints_repair_waiting(f->a.rq, SLICE), 2);
	assert_true(req_hint_waiting(f->a.rq, f->b.id->sign_pk, SLICE, (const uint8_t *)"obj", 3, &v));
	n = node_req_counters(f->a.rq, NULL, c, OVL_WIRE_COUNTERS_MAX);
	for (unsigned i = 0; i < n; i++) {
		assert_null(strstr(c[i].name, "hints_for_"));
		assert_string_not_equal(c[i].name, "hints_waiting");
	}
	/* the records in the store: type 'R' and 'T' */
	{
		uint8_t prefix[9];
		int types = 0;

		memset(prefix, 0xff, 8);
		prefix[8] = 'H';
		node_store_list(f->a.store, prefix, sizeof(prefix), NULL, 0, 100, type_cb, &types);
		assert_int_equal(types, 3);
	}
	/* restart: the hints are read back */
	node_down(f, &f->a, false);
	store_open(f, &f->a, false);
	req_open(f, &f->a);
	assert_int_equal(req_hints_repair_waiting(f->a.rq, SLICE), 2);
	assert_int_equal(req_hints_repair_waiting(f->a.rq, "other"), 0);
	assert_true(req_hint_waiting(f->a.rq, f->b.id->sign_pk, SLICE, (const uint8_t *)"gone", 4, &v));
	n = node_req_counters(f->a.rq, NULL, c, OVL_WIRE_COUNTERS_MAX);
	for (unsigned i = 0; i < n; i++)
		assert_null(strstr(c[i].name, "hints_for_"));
}

/* The pass records a restart reads (docs/FORMAT.md 7.2), then the first
 * tick: when the next pass is due. Phase 0 (done) with the membership of
 * the map: an interval later; with flag bit 1 (work to look at again
 * soon), with another membership (members changed while the node was
 * down) or with phase 1 (killed during the walk): within the start
 * delay. */
static void test_pass_record_restart(void **state)
{
	struct fx *f = *state;
	uint8_t key[9 + sizeof(SLICE) - 1], val[1 + 1 + 1 + 8 + 32 + 32 + 2 + 2 + 8 * 7];
	uint8_t memb[crypto_generichash_BYTES] = { 0 };
	static const struct {
		uint8_t phase, flags;
		bool same_members, soon;
	} cases[] = {
		{ 0, 0, true, false },
		{ 0, 2, true, true },
		{ 0, 0, false, true },
		{ 1, 0, true, true },
	};

	for (unsigned i = 0; i < 3; i++) {
		uint8_t h[crypto_generichash_BYTES];

		crypto_generichash(h, sizeof(h), f->mem[i].id, OVL_ID_BYTES, NULL, 0);
		for (size_t k = 0; k < sizeof(h); k++)
			memb[k] ^= h[k];
	}
	memset(key, 0xff, 8);
	key[8] = 'J';
	memcpy(key + 9, SLICE, sizeof(SLICE) - 1);
	for (unsigned c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		uint64_t now, due;

		memset(val, 0, sizeof(val));
		val[0] = 1; /* version; no cursor, every counter 0 */
		val[1] = cases[c].phase;
		val[2] = cases[c].flags;
		if (cases[c].same_members)
			memcpy(val + 3 + 8, memb, sizeof(memb));
		else
			memset(val + 3 + 8, 0x5a, sizeof(memb));
		assert_int_equal(node_store_put(f->a.store, key, sizeof(key), val, sizeof(val)), 0);
		node_down(f, &f->a, false);
		store_open(f, &f->a, false);
		req_open(f, &f->a);
		now = ovl_mono_ms();
		req_heal_tick(f->a.rq, now);
		due = req_heal_pass_due(f->a.rq, SLICE);
		print_message("case %u: next pass in %lld ms\n", c, (long long)(due - now));
		assert_true(due >= now);
		if (cases[c].soon)
			assert_true(due - now <= 5000);
		else
			assert_true(due - now >= 10 * 60 * 1000);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_digest, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list_bucket, setup, teardown),
		cmocka_unit_test_setup_teardown(test_digest_refusals_and_heal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_repair_hints_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fleet_block_get, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pass_record_restart, setup, teardown),
	};

	test_require_io_uring(); /* the stores run on a loop (qemu-user has none) */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
