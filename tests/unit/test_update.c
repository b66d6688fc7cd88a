/* The update agent's decisions without a network (firmware/update): every
 * refusal of an assignment (signature, node, time, seq, board, expiry, a
 * lower version, a release key the CA did not certify, a slot-less node)
 * leaves state failed with its reason or changes nothing, and no fetch
 * starts; a good fetch assignment starts fetching and the report says so;
 * stay stops it; a restart is reported and then asks for the exit; a node
 * that finds `fallback` in the boot state is rolled back with its reason;
 * a new slot marked good is healthy; the fetch pump keeps asking for the
 * pieces of the last blocks when a slot before theirs has nothing left to take. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "node.h"
#include "update/update_int.h"

#define NOW 1800000000ull
#define SIZE (3u << 20)

struct fx {
	char dir[64];
	struct ovl_id *ca, *other_ca, *rel, *broker, *node;
	uint8_t cert[OVL_CERT_MAX_BYTES], bad_cert[OVL_CERT_MAX_BYTES];
	size_t cert_len, bad_cert_len;
	uint64_t now;
	struct node_update *u;
};

static uint64_t now_s(void *arg)
{
	struct fx *f = arg;

	return f->now;
}

static const uint8_t *broker_key(void *arg, unsigned i)
{
	struct fx *f = arg;

	return i == 0 ? f->broker->sign_pk : NULL;
}

static size_t release_cert(struct ovl_id *issuer, struct ovl_id *key, uint8_t *out)
{
	struct ovl_cert c;
	char err[256];
	int n;

	ovl_cert_init(&c);
	ovl_cert_set_keys(&c, key);
	c.serial = 7;
	c.role = OVL_ROLE_RELEASE;
	c.not_before = NOW - 3600;
	c.not_after = NOW + 86400;
	n = ovl_cert_sign(&c, issuer->sign_sk, out, OVL_CERT_MAX_BYTES, err, sizeof(err));
	assert_true(n > 0);
	return (size_t)n;
}

static void boot_write(struct fx *f, const char *text)
{
	char p[128];
	FILE *fp;

	snprintf(p, sizeof(p), "%s/boot", f->dir);
	mkdir(p, 0700);
	snprintf(p, sizeof(p), "%s/boot/state", f->dir);
	fp = fopen(p, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static void agent_new(struct fx *f, char slot, const char *running)
{
	struct node_update_opts o = { 0 };
	char err[256];

	o.dir = f->dir;
	o.board = "sim";
	o.node_id = f->node->sign_pk;
	memcpy(o.ca_pk, f->ca->sign_pk, OVL_ID_BYTES);
	o.slot = slot;
	o.running = running;
	o.rate = 0;
	o.inflight = 4;
	o.now_s = now_s;
	o.broker_key = broker_key;
	o.arg = f;
	node_update_destroy(&f->u);
	assert_int_equal(node_update_new(&f->u, &o, err, sizeof(err)), 0);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_update.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	assert_int_equal(ovl_id_generate(&f->ca), 0);
	assert_int_equal(ovl_id_generate(&f->other_ca), 0);
	assert_int_equal(ovl_id_generate(&f->rel), 0);
	assert_int_equal(ovl_id_generate(&f->broker), 0);
	assert_int_equal(ovl_id_generate(&f->node), 0);
	f->cert_len = release_cert(f->ca, f->rel, f->cert);
	f->bad_cert_len = release_cert(f->other_ca, f->rel, f->bad_cert);
	f->now = NOW;
	boot_write(f, "shelf-boot 1\nprimary a\na.version 0.1.0\na.attempts 3\na.good 1\nlast a\n");
	agent_new(f, 'a', "0.1.0");
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[128];

	node_update_destroy(&f->u);
	ovl_id_destroy(&f->ca);
	ovl_id_destroy(&f->other_ca);
	ovl_id_destroy(&f->rel);
	ovl_id_destroy(&f->broker);
	ovl_id_destroy(&f->node);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

/* A release's signed metadata: *meta malloc'd. */
static size_t release(struct fx *f, const char *version, const char *board, uint64_t expires,
		      bool rollback, uint8_t **meta)
{
	struct ovl_fleet_release r;
	uint8_t blocks[3][32];
	size_t len = 0;
	char err[256];

	memset(&r, 0, sizeof(r));
	snprintf(r.version, sizeof(r.version), "%s", version);
	snprintf(r.board, sizeof(r.board), "%s", board);
	snprintf(r.min_from, sizeof(r.min_from), "0.0.0");
	r.size = SIZE;
	r.block_size = 1u << 20;
	r.nblocks = 3;
	memset(blocks, 0x5a, sizeof(blocks));
	r.blocks = blocks;
	r.expires = expires;
	r.issued = NOW - 60;
	r.rollback = rollback;
	memset(r.sha256, 1, sizeof(r.sha256));
	assert_int_equal(ovl_fleet_release_sign(&r, f->rel->sign_sk, meta, &len, err, sizeof(err)), 0);
	return len;
}

struct asg {
	uint64_t seq, issued;
	uint8_t action;
	const char *version, *board;
	uint64_t expires;
	bool bad_cert, other_node, rollback;
	struct ovl_id *signer;
};

/* Hand the agent an assignment as a heartbeat would. */
static void deliver(struct fx *f, const struct asg *g)
{
	struct ovl_fleet_assign a;
	uint8_t *meta = NULL, *out = NULL;
	size_t outlen = 0;
	char err[256];

	memset(&a, 0, sizeof(a));
	memcpy(a.node, g->other_node ? f->broker->sign_pk : f->node->sign_pk, 32);
	a.seq = g->seq;
	a.issued = g->issued ? g->issued : f->now;
	a.valid = 60;
	a.action = g->action;
	snprintf(a.slice, sizeof(a.slice), "system");
	if (g->action != OVL_FLEET_ACTION_STAY) {
		a.release_len = release(f, g->version ? g->version : "0.2.0", g->board ? g->board : "sim",
					g->expires ? g->expires : NOW + 86400, g->rollback, &meta);
		a.release = meta;
		a.cert = g->bad_cert ? f->bad_cert : f->cert;
		a.cert_len = g->bad_cert ? f->bad_cert_len : f->cert_len;
	}
	assert_int_equal(ovl_fleet_assign_sign(&a, (g->signer ? g->signer : f->broker)->sign_sk, &out,
					       &outlen, err, sizeof(err)), 0);
	node_update_heartbeat_ok(f->u, out, outlen, f->broker->sign_pk);
	free(out);
	free(meta);
}

static void report(struct fx *f, struct ovl_fleet_report *r)
{
	uint8_t buf[4096];
	char err[256];
	int n = node_update_report(f->u, buf, sizeof(buf));

	assert_true(n > 0);
	assert_int_equal(ovl_fleet_report_decode(r, buf, (size_t)n, err, sizeof(err)), 0);
}

/* An event with this text was logged (the queue is emptied). */
static bool logged(struct fx *f, const char *text)
{
	char ev[512];
	int level;
	bool seen = false;

	while (node_update_event_next(f->u, &level, ev, sizeof(ev)))
		if (strstr(ev, text))
			seen = true;
	return seen;
}

static void expect_failed(struct fx *f, uint64_t seq, const char *why)
{
	struct ovl_fleet_report r;
	char p[128];

	report(f, &r);
	assert_int_equal(r.state, OVL_FLEET_STATE_FAILED);
	assert_int_equal(r.seq, seq);
	if (!strstr(r.reason, why))
		fail_msg("reason '%s' does not say '%s'", r.reason, why);
	assert_true(logged(f, why));
	snprintf(p, sizeof(p), "%s/update/image.part", f->dir);
	assert_int_equal(access(p, F_OK), -1); /* nothing fetched */
}

static void test_refusals(void **state)
{
	struct fx *f = *state;
	struct ovl_fleet_report r;

	/* not the broker's signature, another node: nothing changes */
	deliver(f, &(struct asg){ .seq = 1, .action = OVL_FLEET_ACTION_FETCH, .signer = f->rel });
	assert_true(logged(f, "refused"));
	report(f, &r);
	assert_int_equal(r.state, OVL_FLEET_STATE_IDLE);
	assert_int_equal(r.seq, 0);
	deliver(f, &(struct asg){ .seq = 1, .action = OVL_FLEET_ACTION_FETCH, .other_node = true });
	assert_true(logged(f, "it is for node"));
	report(f, &r);
	assert_int_equal(r.state, OVL_FLEET_STATE_IDLE);

	deliver(f, &(struct asg){ .seq = 2, .action = OVL_FLEET_ACTION_FETCH, .issued = NOW - 3600 });
	expect_failed(f, 2, "assignment 2");
	deliver(f, &(struct asg){ .seq = 3, .action = OVL_FLEET_ACTION_FETCH, .board = "rpi4" });
	expect_failed(f, 3, "board");
	deliver(f, &(struct asg){ .seq = 4, .action = OVL_FLEET_ACTION_FETCH, .expires = NOW - 10 });
	expect_failed(f, 4, "expired");
	deliver(f, &(struct asg){ .seq = 5, .action = OVL_FLEET_ACTION_FETCH, .version = "0.0.9" });
	expect_failed(f, 5, "lower");
	deliver(f, &(struct asg){ .seq = 6, .action = OVL_FLEET_ACTION_FETCH, .bad_cert = true });
	expect_failed(f, 6, "CA");
	/* a restart of something not installed */
	deliver(f, &(struct asg){ .seq = 7, .action = OVL_FLEET_ACTION_RESTART });
	expect_failed(f, 7, "not installed");
	assert_false(node_update_exit_wanted(f->u));
	/* an old seq is ignored */
	deliver(f, &(struct asg){ .seq = 7, .action = OVL_FLEET_ACTION_FETCH });
	report(f, &r);
	assert_int_equal(r.state, OVL_FLEET_STATE_FAILED);
	/* not started by shelf-boot: no slot to install into */
	agent_new(f, 0, "0.1.0");
	deliver(f, &(struct asg){ .seq = 8, .action = OVL_FLEET_ACTION_FETCH });
	expect_failed(f, 8, "shelf-boot");
	/* the state survives a restart */
	agent_new(f, 'a', "0.1.0");
	report(f, &r);
	assert_int_equal(r.state, OVL_FLEET_STATE_FAILED);
	assert_int_equal(r.seq, 8);
	/* a lower version signed as a rollback is taken */
	deliver(f, &(struct asg){ .seq = 9, .action = OVL_FLEET_ACTION_FETCH, .version = "0.0.9",
				  .rollback = true });
	report(f, &r);
	assert_int_equal(r.state, OVL_FLEET_STATE_FETCHING);
	assert_string_equal(r.target, "0.0.9");
}

static void test_fetch_stay(void **state)
{
	struct fx *f = *state;
	struct ovl_fleet_report r;
	struct ovl_wire_counter c[16];
	unsigned n;
	char p[128];
	struct stat st;

	deliver(f, &(struct asg){ .seq = 1, .action = OVL_FLEET_ACTION_FETCH });
	report(f, &r);
	assert_int_equal(r.state, OVL_FLEET_STATE_FETCHING);
	assert_string_equal(r.target, "0.2.0");
	assert_string_equal(r.running, "0.1.0");
	assert_string_equal(r.slot, "a");
	assert_string_equal(r.board, "sim");
	assert_int_equal(r.total, SIZE);
	assert_int_equal(r.done, 0);
	/* the image's files are there, sized, and no block is marked */
	snprintf(p, sizeof(p), "%s/update/image.part", f->dir);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_size, SIZE);
	n = node_update_counters(f->u, c, 16);
	assert_true(n >= 5);
	assert_string_equal(c[0].name, "update_state");
	assert_int_equal(c[0].value, OVL_FLEET_STATE_FETCHING);
	/* without peers nothing moves; a kill here resumes: the state says fetching */
	node_update_tick(f->u, 1000);
	agent_new(f, 'a', "0.1.0");
	report(f, &r);
	assert_int_equal(r.state, OVL_FLEET_STATE_FETCHING);
	assert_int_equal(r.seq, 1);
	node_update_tick(f->u, 1000); /* resumes: verifies the kept assignment again */
	assert_true(logged(f, "fetching release 0.2.0"));
	deliver(f, &(struct asg){ .seq = 2, .action = OVL_FLEET_ACTION_STAY });
	report(f, &r);
	assert_int_equal(r.state, OVL_FLEET_STATE_IDLE);
	assert_int_equal(r.seq, 2);
}

static void test_restart_exit(void **state)
{
	struct fx *f = *state;
	struct ovl_fleet_report r;
	char p[128];
	FILE *fp;

	/* as an install leaves it: slot b to try, update/state installed */
	boot_write(f, "shelf-boot 1\nprimary b\na.version 0.1.0\na.attempts 3\na.good 1\n"
		      "b.version 0.2.0\nb.attempts 3\nb.good 0\nlast a\n");
	snprintf(p, sizeof(p), "%s/update/state", f->dir);
	fp = fopen(p, "w");
	assert_non_null(fp);
	fputs("seq 1\nstate installed\ntarget 0.2.0\ntotal 3145728\nbroker -\nreason \n", fp);
	fclose(fp);
	agent_new(f, 'a', "0.1.0");
	report(f, &r);
	assert_int_equal(r.state, OVL_FLEET_STATE_INSTALLED);
	assert_string_equal(r.other, "0.2.0");
	assert_false(r.other_good);
	deliver(f, &(struct asg){ .seq = 2, .action = OVL_FLEET_ACTION_RESTART });
	assert_false(node_update_exit_wanted(f->u));
	report(f, &r); /* the heartbeat carries "restarting" */
	assert_int_equal(r.state, OVL_FLEET_STATE_RESTARTING);
	assert_false(node_update_exit_wanted(f->u));
	node_update_heartbeat_ok(f->u, NULL, 0, f->broker->sign_pk); /* and is answered */
	assert_true(node_update_exit_wanted(f->u));

	/* slot b starts: restarting until its gate marks it good, then healthy */
	agent_new(f, 'b', "0.2.0");
	report(f, &r);
	assert_int_equal(r.state, OVL_FLEET_STATE_RESTARTING);
	assert_false(node_update_exit_wanted(f->u));
	assert_int_equal(boot_state_mark_good(f->dir, 'b'), 0);
	node_update_tick(f->u, 5000);
	report(f, &r);
	assert_int_equal(r.state, OVL_FLEET_STATE_HEALTHY);
	assert_string_equal(r.running, "0.2.0");
	assert_string_equal(r.other, "0.1.0");
	assert_true(r.other_good);
}

static void test_rolled_back(void **state)
{
	struct fx *f = *state;
	struct ovl_fleet_report r;
	char p[128];
	FILE *fp;

	snprintf(p, sizeof(p), "%s/update/state", f->dir);
	fp = fopen(p, "w");
	assert_non_null(fp);
	fputs("seq 4\nstate restarting\ntarget 0.2.0\ntotal 3145728\nbroker -\nreason \n", fp);
	fclose(fp);
	boot_write(f, "shelf-boot 1\nprimary a\na.version 0.1.0\na.attempts 3\na.good 1\n"
		      "b.version 0.2.0\nb.attempts 0\nb.good 0\nlast a\n"
		      "fallback slot b (0.2.0) crashed 3 times\n");
	agent_new(f, 'a', "0.1.0");
	report(f, &r);
	assert_int_equal(r.state, OVL_FLEET_STATE_ROLLED_BACK);
	assert_int_equal(r.seq, 4);
	assert_non_null(strstr(r.reason, "crashed 3 times"));
	assert_true(logged(f, "rolled back"));
	/* until a new assignment */
	agent_new(f, 'a', "0.1.0");
	report(f, &r);
	assert_int_equal(r.state, OVL_FLEET_STATE_ROLLED_BACK);
	deliver(f, &(struct asg){ .seq = 5, .action = OVL_FLEET_ACTION_STAY });
	report(f, &r);
	assert_int_equal(r.state, OVL_FLEET_STATE_IDLE);
}

/* update/assign.inject: taken when a registered broker signed it, else refused */
static void test_inject(void **state)
{
	struct fx *f = *state;
	struct ovl_fleet_assign a;
	struct ovl_fleet_report r;
	uint8_t *out = NULL;
	size_t outlen = 0;
	char err[256], p[128];
	FILE *fp;

	memset(&a, 0, sizeof(a));
	memcpy(a.node, f->node->sign_pk, 32);
	a.seq = 3;
	a.issued = f->now;
	a.valid = 60;
	a.action = OVL_FLEET_ACTION_STAY;
	snprintf(a.slice, sizeof(a.slice), "system");
	assert_int_equal(ovl_fleet_assign_sign(&a, f->rel->sign_sk, &out, &outlen, err, sizeof(err)), 0);
	snprintf(p, sizeof(p), "%s/update/assign.inject", f->dir);
	fp = fopen(p, "w");
	assert_non_null(fp);
	assert_int_equal(fwrite(out, 1, outlen, fp), outlen);
	fclose(fp);
	free(out);
	node_update_tick(f->u, 10000);
	assert_true(logged(f, "refused"));
	assert_int_equal(access(p, F_OK), -1);
	report(f, &r);
	assert_int_equal(r.seq, 0);
	assert_int_equal(ovl_fleet_assign_sign(&a, f->broker->sign_sk, &out, &outlen, err, sizeof(err)), 0);
	fp = fopen(p, "w");
	assert_non_null(fp);
	assert_int_equal(fwrite(out, 1, outlen, fp), outlen);
	fclose(fp);
	free(out);
	node_update_tick(f->u, 20000);
	report(f, &r);
	assert_int_equal(r.seq, 3);
}

/*
 * The fetch pump near the end of a fetch: slot 0 has finished its block and
 * no block is left to take (all verified or being fetched), while slots 1
 * and 2 still have pieces of the last two blocks to ask for. They must ask:
 * the pump once stopped at the first free slot that found no block, so the
 * last blocks never completed (no error, the fetch hung).
 */
static void test_pump_last_blocks(void **state)
{
	struct update_blk blks[6];
	uint8_t bitmap[1] = { 0x0f }; /* blocks 0..3 verified */
	bool busy[4] = { false, true, true, false }, out[4] = { false, false, false, false };
	uint8_t act[4];
	uint32_t take[4];

	(void)state;
	memset(blks, 0, sizeof(blks));
	blks[4].busy = blks[5].busy = true; /* in slots 1 and 2 */
	update_pump_plan(4, busy, out, bitmap, blks, 6, 1000, act, take);
	assert_int_equal(act[0], UPDATE_PUMP_NONE);
	assert_int_equal(act[1], UPDATE_PUMP_ASK);
	assert_int_equal(act[2], UPDATE_PUMP_ASK);
	assert_int_equal(act[3], UPDATE_PUMP_NONE);

	/* a call out waits for its answer; a block in its backoff is not taken,
	 * and the slots after the free one still ask */
	out[1] = true;
	blks[5].busy = false;
	blks[5].next_ms = 1500;
	busy[2] = false;
	busy[3] = true;
	update_pump_plan(4, busy, out, bitmap, blks, 6, 1000, act, take);
	assert_int_equal(act[0], UPDATE_PUMP_NONE);
	assert_int_equal(act[1], UPDATE_PUMP_NONE);
	assert_int_equal(act[2], UPDATE_PUMP_NONE);
	assert_int_equal(act[3], UPDATE_PUMP_ASK);
	assert_false(blks[5].busy);

	/* its backoff over, the first free slot takes it, and only that one */
	update_pump_plan(4, busy, out, bitmap, blks, 6, 1500, act, take);
	assert_int_equal(act[0], UPDATE_PUMP_TAKE);
	assert_int_equal(take[0], 5);
	assert_true(blks[5].busy);
	assert_int_equal(act[2], UPDATE_PUMP_NONE);
	assert_int_equal(act[3], UPDATE_PUMP_ASK);

	/* at the start, free slots take the lowest blocks in order */
	memset(blks, 0, sizeof(blks));
	bitmap[0] = 0x01;
	memset(busy, 0, sizeof(busy));
	update_pump_plan(4, busy, out, bitmap, blks, 6, 0, act, take);
	for (unsigned si = 0; si < 4; si++) {
		assert_int_equal(act[si], UPDATE_PUMP_TAKE);
		assert_int_equal(take[si], si + 1);
	}
}

/* Which home a block's piece is asked of: each home tried once, then the
 * faster ones (per piece in flight); a begun block stays unless another
 * home is much faster; a failure or an old measure counts against or is
 * forgotten. */
static void test_home_pick(void **state)
{
	struct update_home a = { .id = { 1 } }, b = { .id = { 2 } }, c = { .id = { 3 } };
	struct update_home *h[3] = { &a, &b, &c };
	bool ok[3] = { true, true, true };
	uint64_t now = 100000;

	(void)state;
	/* nothing known: placement order; an untried home before one with a
	 * piece out */
	assert_int_equal(update_home_pick(h, ok, 3, -1, now), 0);
	a.inflight = 1;
	assert_int_equal(update_home_pick(h, ok, 3, -1, now), 1);
	b.inflight = 1;
	assert_int_equal(update_home_pick(h, ok, 3, -1, now), 2);
	c.inflight = 1;
	/* measured: 256 KiB in 20 ms (a), 2000 ms (b, slow), 25 ms (c) */
	update_home_note(&a, true, 256 << 10, 20, now);
	update_home_note(&b, true, 256 << 10, 2000, now);
	update_home_note(&c, true, 256 << 10, 25, now);
	a.inflight = b.inflight = c.inflight = 0;
	assert_int_equal(update_home_pick(h, ok, 3, -1, now), 0);
	/* a busier fast home shares with the other fast one, never the slow */
	a.inflight = 2;
	assert_int_equal(update_home_pick(h, ok, 3, -1, now), 2);
	c.inflight = 3;
	assert_int_equal(update_home_pick(h, ok, 3, -1, now), 0);
	/* ... unless it is the only one eligible */
	ok[0] = ok[2] = false;
	assert_int_equal(update_home_pick(h, ok, 3, -1, now), 1);
	ok[1] = false;
	assert_int_equal(update_home_pick(h, ok, 3, -1, now), -1);
	ok[0] = ok[1] = ok[2] = true;
	a.inflight = c.inflight = 0;
	/* a block begun on the slow home moves (100x faster elsewhere); one
	 * begun on c stays (a is not 4x faster); one whose home is no longer
	 * eligible is picked anew */
	assert_int_equal(update_home_pick(h, ok, 3, 1, now), 0);
	assert_int_equal(update_home_pick(h, ok, 3, 2, now), 2);
	ok[2] = false;
	assert_int_equal(update_home_pick(h, ok, 3, 2, now), 0);
	ok[2] = true;
	/* a failure makes a home slower than the others */
	update_home_note(&a, false, 0, 2000, now);
	update_home_note(&a, false, 0, 2000, now);
	update_home_note(&a, false, 0, 2000, now);
	assert_int_equal(update_home_pick(h, ok, 3, -1, now), 2);
	/* measures older than the TTL are forgotten: the slow home is tried
	 * again (first in placement order among the unmeasured) */
	update_home_note(&c, true, 256 << 10, 25, now + UPDATE_HOME_TTL_MS);
	assert_int_equal(update_home_pick(h, ok, 3, -1, now + UPDATE_HOME_TTL_MS + 1), 0);
	a.inflight = 1;
	assert_int_equal(update_home_pick(h, ok, 3, -1, now + UPDATE_HOME_TTL_MS + 1), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fetch_stay, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_exit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rolled_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_inject, setup, teardown),
		cmocka_unit_test(test_pump_last_blocks),
		cmocka_unit_test(test_home_pick),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
