/* Pacing of background work (firmware/req/req_bg.c, req_pace.c) and the
 * scrub schedule (req_scrub.c): the token bucket and duty cycle alone,
 * over simulated time; the inbound cap, the run-time settings and scrub
 * through a request layer over a real store on a loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "node.h"
#include "overlay.h"
#include "probe.h"
#include "req/req_bg.h"

/* ---- the token bucket ---- */

/* Take pieces as fast as allowed for secs seconds of simulated time in
 * steps of step_ms: the bytes moved. */
static uint64_t drain(struct req_bucket *b, uint64_t t0, uint64_t secs, uint64_t step_ms,
		      unsigned duty)
{
	uint64_t moved = 0;

	for (uint64_t t = t0; t < t0 + secs * 1000; t += step_ms) {
		uint64_t got;

		if (!req_duty_open(duty, t))
			continue;
		while ((got = req_bucket_take(b, 1 << 20, t)) > 0)
			moved += got;
	}
	return moved;
}

static void test_bucket_rate(void **state)
{
	static const uint64_t rates[] = { 64 << 10, 1 << 20, 10 << 20, 200 << 20 };

	(void)state;
	for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++) {
		struct req_bucket b;
		uint64_t moved, want = rates[i] * 20;

		req_bucket_init(&b, rates[i], 5000);
		moved = drain(&b, 5000, 20, 10, 100);
		/* 20 s at the rate, plus at most the burst and one piece */
		assert_true(moved >= want);
		assert_true(moved <= want + rates[i] / 10 + 2 * req_bucket_piece(&b));
		assert_true((double)moved < (double)want * 1.05);
	}
}

static void test_bucket_pieces(void **state)
{
	struct req_bucket b;

	(void)state;
	req_bucket_init(&b, 0, 0);
	assert_int_equal(req_bucket_take(&b, 10 << 20, 0), REQ_BG_PIECE_MAX_BYTES); /* unlimited */
	assert_int_equal(req_bucket_take(&b, 100, 0), 100);
	assert_int_equal(req_bucket_take(&b, 0, 0), 0);
	req_bucket_init(&b, 64 << 10, 0);
	assert_int_equal(req_bucket_piece(&b), REQ_BG_PIECE_MIN_BYTES); /* 6.4K -> 16K */
	assert_int_equal(req_bucket_take(&b, 1 << 20, 0), REQ_BG_PIECE_MIN_BYTES);
	assert_int_equal(req_bucket_take(&b, 1 << 20, 0), 0); /* empty */
	/* 100 ms later 6.4K are back: a whole piece is taken, into debt */
	assert_int_equal(req_bucket_take(&b, 1 << 20, 100), REQ_BG_PIECE_MIN_BYTES);
	/* nothing until the debt (9.6K at 64K/s: 150 ms) is paid back */
	assert_int_equal(req_bucket_take(&b, 1 << 20, 200), 0);
	assert_int_equal(req_bucket_take(&b, 1 << 20, 240), 0);
	assert_true(req_bucket_take(&b, 1 << 20, 260) > 0);
	req_bucket_init(&b, 1 << 20, 0);
	assert_int_equal(req_bucket_piece(&b), (1 << 20) / 10);
	/* a new rate at run time: a long idle time gives no more than the burst */
	req_bucket_set_rate(&b, 100 << 20, 1000);
	assert_int_equal(req_bucket_piece(&b), REQ_BG_PIECE_MAX_BYTES);
	assert_true(drain(&b, 100000, 1, 1, 100) <= (uint64_t)(100 << 20) * 11 / 10 + (10 << 20));
	/* and back to unlimited */
	req_bucket_set_rate(&b, 0, 200000);
	assert_int_equal(req_bucket_take(&b, 1 << 20, 200000), REQ_BG_PIECE_MAX_BYTES);
}

static void test_duty_cycle(void **state)
{
	static const unsigned duties[] = { 1, 10, 30, 50, 99, 100 };

	(void)state;
	for (size_t i = 0; i < sizeof(duties) / sizeof(duties[0]); i++) {
		unsigned open = 0;

		for (uint64_t t = 123000; t < 133000; t++)
			open += req_duty_open(duties[i], t);
		assert_int_equal(open, duties[i] * 100); /* of 10,000 ms */
	}
	/* the duty cycle under a rate: the rate still holds as a ceiling,
	 * and the duty alone bounds an unlimited bucket's time */
	{
		struct req_bucket b;
		uint64_t moved;

		req_bucket_init(&b, 1 << 20, 0);
		moved = drain(&b, 0, 20, 10, 50);
		assert_true(moved <= (uint64_t)20 * (1 << 20) + (1 << 20) / 10 + 2 * req_bucket_piece(&b));
		req_bucket_init(&b, 0, 0);
		/* steps of 10 ms, one piece per step when open: half the steps */
		{
			uint64_t steps = 0;

			for (uint64_t t = 0; t < 10000; t += 10)
				steps += req_duty_open(50, t) && req_bucket_take(&b, 1, t) == 1;
			assert_int_equal(steps, 500);
		}
	}
}

static void test_rate_avg_eta(void **state)
{
	struct req_rate_avg a;
	uint64_t t, bps;

	(void)state;
	memset(&a, 0, sizeof(a));
	assert_int_equal(req_rate_bps(&a, 1000), 0);
	/* 1 MB every 100 ms for 20 s: 10 MB/s */
	for (t = 50000; t < 70000; t += 100)
		req_rate_add(&a, 1000000, t);
	bps = req_rate_bps(&a, t);
	assert_true(bps > 9500000 && bps < 10500000);
	/* halve it: within ~10 s the average follows */
	for (; t < 82000; t += 100)
		req_rate_add(&a, 500000, t);
	bps = req_rate_bps(&a, t);
	assert_true(bps > 4700000 && bps < 5300000);
	/* nothing for 11 s: no rate */
	assert_int_equal(req_rate_bps(&a, t + 11000), 0);
	/* the first quarter second alone is not taken for a rate of its own */
	memset(&a, 0, sizeof(a));
	req_rate_add(&a, 1000, 7000);
	assert_int_equal(req_rate_bps(&a, 7010), 4000);
	/* a burst after a quiet spell is its own window: 2 MB/s for 1.5 s
	 * after 10 MB/s and 5 s of nothing reads 2 MB/s, not an average */
	memset(&a, 0, sizeof(a));
	for (t = 10000; t < 20000; t += 100)
		req_rate_add(&a, 1000000, t);
	for (t = 25000; t <= 26500; t += 100)
		req_rate_add(&a, 200000, t);
	bps = req_rate_bps(&a, t);
	assert_true(bps > 1900000 && bps < 2300000);
	/* ETA */
	assert_int_equal(req_eta_s(0, 0), 0);
	assert_int_equal(req_eta_s(0, 100), 0);
	assert_int_equal(req_eta_s(100, 0), UINT64_MAX);
	assert_int_equal(req_eta_s(100000000, 10000000), 10);
	assert_int_equal(req_eta_s(100000001, 10000000), 10);
	assert_int_equal(req_eta_s(105000000, 10000000), 11);
	assert_int_equal(req_eta_s(1, 10000000), 1);
}

static void test_jitter(void **state)
{
	uint64_t lo = UINT64_MAX, hi = 0;

	(void)state;
	for (uint32_t r = 0; r < 5000; r++) {
		uint64_t j = req_jitter_ms(86400000, r * 2654435761u);

		assert_true(j >= 86400000ull * 8 / 10 && j <= 86400000ull * 12 / 10);
		lo = j < lo ? j : lo;
		hi = j > hi ? j : hi;
	}
	/* the whole ±20 % is used */
	assert_true(lo < 86400000ull * 81 / 100);
	assert_true(hi > 86400000ull * 119 / 100);
	assert_int_equal(req_jitter_ms(1000, 0), 800);
	assert_int_equal(req_jitter_ms(1000, 400), 1200);
}

/* ---- through the request layer ---- */

struct fx {
	char dir[64], path[128];
	struct node_loop *loop;
	struct node_store *store;
	struct node_req *rq;
};

static int setup_opts(void **state, const struct node_req_opts *base)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct node_store_opts so;
	struct node_req_opts ro = *base;
	char err[256];

	snprintf(f->dir, sizeof(f->dir), "/tmp/shelf-pace-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/drive", f->dir);
	assert_int_equal(node_loop_new(&f->loop, 256, err, sizeof(err)), 0);
	node_store_opts_init(&so);
	so.path = f->path;
	so.loop = f->loop;
	so.create_size = 64 << 20;
	so.format = true;
	so.segment_bytes = 8 << 20;
	if (node_store_open(&f->store, &so, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	ro.loop = f->loop;
	ro.store = f->store;
	assert_int_equal(node_req_new(&f->rq, &ro, err, sizeof(err)), 0);
	*state = f;
	return 0;
}

static int setup(void **state)
{
	struct node_req_opts ro = { 0 };

	return setup_opts(state, &ro);
}

static int setup_scrub(void **state)
{
	struct node_req_opts ro = { 0 };

	ro.scrub_interval_ms = 1000;
	ro.scrub_budget = 64 << 10;
	return setup_opts(state, &ro);
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[128];

	while (node_loop_inflight(f->loop) || !node_store_idle(f->store))
		node_loop_run(f->loop, true);
	node_req_destroy(&f->rq);
	node_store_close(&f->store);
	node_loop_destroy(&f->loop);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static uint64_t counter(struct fx *f, const char *name, bool *found)
{
	struct ovl_wire_counter c[OVL_WIRE_COUNTERS_MAX];
	unsigned n = node_req_counters(f->rq, NULL, c, OVL_WIRE_COUNTERS_MAX);

	if (found)
		*found = false;
	for (unsigned i = 0; i < n; i++)
		if (strcmp(c[i].name, name) == 0) {
			if (found)
				*found = true;
			return c[i].value;
		}
	if (!found)
		fail_msg("no counter '%s'", name);
	return 0;
}

static void test_inbound_cap_and_settings(void **state)
{
	struct fx *f = *state;
	char text[OVL_WIRE_TEXT_SIZE];
	int level;

	/* the cap: 4 at once by default; one more is refused until one ends */
	for (int i = 0; i < NODE_REQ_REPAIR_INBOUND_MAX_DEFAULT; i++)
		assert_true(node_req_repair_admit(f->rq));
	assert_int_equal(counter(f, "repair_inbound", NULL), 4);
	assert_false(node_req_repair_admit(f->rq));
	assert_false(node_req_repair_admit(f->rq));
	node_req_repair_release(f->rq);
	assert_int_equal(counter(f, "repair_inbound", NULL), 3);
	assert_true(node_req_repair_admit(f->rq));
	for (int i = 0; i < 4; i++)
		node_req_repair_release(f->rq);
	node_req_repair_release(f->rq); /* one too many: no underflow */
	assert_int_equal(counter(f, "repair_inbound", NULL), 0);

	/* run-time settings: refused out of range, nothing changed */
	assert_int_equal(counter(f, "repair_rate_limit", NULL), NODE_REQ_REPAIR_RATE_DEFAULT);
	assert_int_equal(counter(f, "repair_duty", NULL), 100);
	assert_int_equal(node_req_repair_set(f->rq, 1000, -1), -EINVAL);
	assert_non_null(strstr(node_req_errmsg(f->rq), "at least"));
	assert_int_equal(node_req_repair_set(f->rq, -1, 0), -EINVAL);
	assert_int_equal(node_req_repair_set(f->rq, -1, 101), -EINVAL);
	assert_int_equal(node_req_repair_set(f->rq, -2, -1), -EINVAL);
	assert_int_equal(counter(f, "repair_rate_limit", NULL), NODE_REQ_REPAIR_RATE_DEFAULT);
	assert_int_equal(counter(f, "repair_duty", NULL), 100);
	assert_int_equal(node_req_repair_set(f->rq, 5 << 20, 25), 0);
	assert_int_equal(counter(f, "repair_rate_limit", NULL), 5 << 20);
	assert_int_equal(counter(f, "repair_duty", NULL), 25);
	assert_int_equal(node_req_repair_set(f->rq, -1, -1), 0); /* both unchanged */
	assert_int_equal(counter(f, "repair_rate_limit", NULL), 5 << 20);
	assert_int_equal(node_req_repair_set(f->rq, 0, -1), 0);   /* unlimited */
	assert_int_equal(counter(f, "repair_rate_limit", NULL), 0);
	/* each change goes to the daemon's log */
	assert_true(node_req_event_next(f->rq, &level, text, sizeof(text)));
	assert_int_equal(level, NODE_REQ_EV_INFO);
	assert_non_null(strstr(text, "rate limit now 5242880"));
	assert_true(node_req_event_next(f->rq, &level, text, sizeof(text)));
	assert_non_null(strstr(text, "duty cycle now 25"));
	assert_true(node_req_event_next(f->rq, &level, text, sizeof(text)));
	assert_non_null(strstr(text, "unlimited"));
	assert_false(node_req_event_next(f->rq, &level, text, sizeof(text)));
	/* progress counters exist from the start */
	assert_int_equal(counter(f, "repair_objects_left", NULL), 0);
	assert_int_equal(counter(f, "repair_eta_s", NULL), 0);
	assert_int_equal(counter(f, "repair_paused", NULL), 0);
}

/* PUT through the request layer and wait. */
static void on_put(void *arg, const struct node_req_result *r, struct node_req_buf **buf)
{
	int *res = arg;

	(void)buf;
	*res = r->res;
}

static void put(struct fx *f, const char *key, const uint8_t *val, size_t len)
{
	struct node_req_args a = { .type = NODE_REQ_PUT, .slice = "s" };
	int res = 1;

	a.key = (const uint8_t *)key;
	a.klen = strlen(key);
	a.val = val;
	a.size = len;
	a.crc = ovl_crc32c(0, val, len);
	assert_int_equal(node_req_start(f->rq, &a, on_put, &res), 0);
	for (int i = 0; i < 100000 && res == 1; i++)
		node_loop_run(f->loop, true);
	assert_int_equal(res, 0);
}

static void idle(struct fx *f)
{
	while (node_loop_inflight(f->loop) || !node_store_idle(f->store))
		node_loop_run(f->loop, true);
}

/* Tick from t for ms of simulated time (100 ms steps), the loop drained
 * before each tick: the ticks at which scrub_passes grew. */
static unsigned tick_for(struct fx *f, uint64_t *t, uint64_t ms, uint64_t *when, unsigned max)
{
	unsigned n = 0;
	uint64_t end = *t + ms, passes = counter(f, "scrub_passes", NULL);

	for (; *t < end; *t += 100) {
		uint64_t p;

		idle(f);
		node_req_tick(f->rq, *t);
		p = counter(f, "scrub_passes", NULL);
		if (p != passes && n < max)
			when[n++] = *t;
		passes = p;
	}
	return n;
}

static void test_scrub_schedule(void **state)
{
	struct fx *f = *state;
	uint8_t val[20000];
	uint64_t t = ovl_mono_ms(), when[16], off = 0, size = 0;
	unsigned n;
	char text[OVL_WIRE_TEXT_SIZE];
	int level, fd;
	bool seen = false;

	for (size_t i = 0; i < sizeof(val); i++)
		val[i] = (uint8_t)(i * 13 + 5);
	for (int i = 0; i < 40; i++) {
		char key[16];

		snprintf(key, sizeof(key), "k%02d", i);
		put(f, key, val, sizeof(val));
	}
	assert_int_equal(node_store_sync(f->store), 0);
	/* 800 KB at 64 KiB a tick: a pass takes ~13 ticks; the first starts
	 * within one interval, the next 0.8..1.2 intervals after the last
	 * start */
	n = tick_for(f, &t, 10000, when, 16);
	assert_true(n >= 6 && n <= 12);
	for (unsigned i = 1; i < n; i++) {
		assert_true(when[i] - when[i - 1] >= 800);
		assert_true(when[i] - when[i - 1] <= 1200 + 100 + 2000); /* a pass takes ~1.3 s at most */
	}
	assert_true(counter(f, "scrub_last_unix", NULL) + 5 >= (uint64_t)time(NULL));
	assert_int_equal(counter(f, "scrub_damaged", NULL), 0);
	assert_int_equal(counter(f, "scrub_repaired", NULL), 0);
	/* without replication no heal_objects_lost: nothing could come back */
	(void)counter(f, "scrub_passes", NULL);
	counter(f, "heal_objects_lost", &seen);
	assert_false(seen);

	/* not while a client request is in flight, nor while the store works */
	{
		struct node_req_args a = { .type = NODE_REQ_STAT, .slice = "s" };
		int res = 1;
		uint64_t p = counter(f, "scrub_passes", NULL);

		a.key = (const uint8_t *)"k01";
		a.klen = 3;
		assert_int_equal(node_req_start(f->rq, &a, on_put, &res), 0);
		for (int i = 0; i < 40; i++, t += 100)
			node_req_tick(f->rq, t); /* the STAT is not done: the loop did not run */
		assert_int_equal(counter(f, "scrub_passes", NULL), p);
		for (int i = 0; i < 100000 && res == 1; i++)
			node_loop_run(f->loop, true);
	}

	/* a byte flipped under one object: the next pass finds it, names it */
	assert_int_equal(node_store_locate(f->store, "k07", 3, &off, &size), 0);
	fd = open(f->path, O_RDWR);
	assert_true(fd >= 0);
	{
		uint8_t b;

		assert_int_equal(pread(fd, &b, 1, (off_t)(off + size / 2)), 1);
		b ^= 0x10;
		assert_int_equal(pwrite(fd, &b, 1, (off_t)(off + size / 2)), 1);
	}
	close(fd);
	while (node_req_event_next(f->rq, &level, text, sizeof(text)))
		;
	n = tick_for(f, &t, 3000, when, 16);
	assert_true(n >= 1);
	/* once per pass that got past k07: the last pass counted may have
	 * started near the end and not reached it yet, and the pass that was
	 * running when the byte flipped (not in when[]) may have reached it */
	{
		uint64_t d = counter(f, "scrub_damaged", NULL);

		assert_true(d >= 1 && d <= (uint64_t)n + 1 && d + 1 >= n);
	}
	assert_true(node_req_event_next(f->rq, &level, text, sizeof(text)));
	assert_int_equal(level, NODE_REQ_EV_WARN);
	assert_non_null(strstr(text, "scrub: key 'k07' is damaged"));
}

int main(void)
{
	test_require_io_uring();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bucket_rate),
		cmocka_unit_test(test_bucket_pieces),
		cmocka_unit_test(test_duty_cycle),
		cmocka_unit_test(test_rate_avg_eta),
		cmocka_unit_test(test_jitter),
		cmocka_unit_test_setup_teardown(test_inbound_cap_and_settings, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scrub_schedule, setup_scrub, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
