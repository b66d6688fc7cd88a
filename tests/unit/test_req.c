/* The request layer on its own: a store on a loop, requests through
 * node_req_* with their completions, the test as the loop's owner (it
 * alone runs the loop). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "node.h"
#include "overlay.h"
#include "probe.h"

#define RUN_ROUNDS_MAX 100000 /* loop turns before a test gives up waiting */

struct fx {
	char dir[64], path[128];
	struct node_loop *loop;
	struct node_store *store;
	struct node_req *rq;
};

/* What a completion saw (copied: the result is valid during the call). */
struct done {
	int calls;
	struct node_req_result r;
	char msg[256];
	uint8_t *data;            /* GET: a copy of the bytes */
	bool offered;             /* GET: a buffer was handed over */
	bool keep;                /* take the buffer (and release it later) */
	bool release_now;         /* take it and release it inside the completion */
	struct node_req_buf *kept;
	const uint8_t *kept_data; /* r.data, which stays valid in the kept buffer */
	char keys[16][32];        /* LIST */
};

static void on_done(void *arg, const struct node_req_result *r, struct node_req_buf **buf)
{
	struct done *d = arg;

	d->calls++;
	d->r = *r;
	d->r.msg = NULL;
	d->r.keys = NULL;
	snprintf(d->msg, sizeof(d->msg), "%s", r->res < 0 && r->msg ? r->msg : "");
	if (r->type == NODE_REQ_GET && r->res == 0) {
		assert_non_null(buf);
		d->offered = *buf != NULL;
		free(d->data);
		d->data = malloc(r->len ? r->len : 1);
		memcpy(d->data, r->data, r->len);
		if (d->keep && *buf) {
			d->kept = *buf;
			d->kept_data = r->data;
			*buf = NULL;
		}
		if (d->release_now && *buf) {
			struct node_req_buf *b = *buf;

			*buf = NULL;
			node_req_buf_release(&b); /* as a send that fails at once does */
			assert_null(b);
		}
	} else {
		assert_null(buf);
	}
	for (uint32_t i = 0; r->type == NODE_REQ_LIST && i < r->nkeys && i < 16; i++)
		snprintf(d->keys[i], sizeof(d->keys[i]), "%.*s", (int)r->keys[i].len,
			 (const char *)r->keys[i].ptr);
}

/* Run the loop, as its owner, until *calls reaches want. */
static void run_until(struct fx *f, const int *calls, int want)
{
	for (int i = 0; i < RUN_ROUNDS_MAX && *calls < want; i++)
		assert_true(node_loop_run(f->loop, true) >= 0);
	assert_int_equal(*calls, want);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct node_store_opts so;
	struct node_req_opts ro = { 0 };
	char err[256];

	snprintf(f->dir, sizeof(f->dir), "/tmp/shelf-req-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/drive", f->dir);
	assert_int_equal(node_loop_new(&f->loop, 256, err, sizeof(err)), 0);
	node_store_opts_init(&so);
	so.path = f->path;
	so.loop = f->loop;
	so.create_size = 128 << 20;
	so.format = true;
	so.segment_bytes = 16 << 20;
	if (node_store_open(&f->store, &so, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	ro.loop = f->loop;
	ro.store = f->store;
	assert_int_equal(node_req_new(&f->rq, &ro, err, sizeof(err)), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[128];

	/* drain as the owner, then free in order */
	while (node_loop_inflight(f->loop) || !node_store_idle(f->store))
		node_loop_run(f->loop, true);
	node_req_destroy(&f->rq);
	assert_null(f->rq);
	node_store_close(&f->store);
	node_loop_destroy(&f->loop);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static struct node_req_args args(enum node_req_type type, const char *key)
{
	struct node_req_args a = { .type = type, .slice = "hot" };

	a.key = (const uint8_t *)key;
	a.klen = strlen(key);
	a.length = UINT64_MAX;
	return a;
}

static void put(struct fx *f, const char *key, const void *val, size_t len)
{
	struct node_req_args a = args(NODE_REQ_PUT, key);
	struct done d = { 0 };

	a.val = val;
	a.size = len;
	a.crc = ovl_crc32c(0, val, len);
	assert_int_equal(node_req_start(f->rq, &a, on_done, &d), 0);
	assert_int_equal(d.calls, 0); /* from the loop, not from inside the call */
	run_until(f, &d.calls, 1);
	assert_int_equal(d.r.res, 0);
	assert_int_equal(d.r.size, len);
	assert_int_equal(d.r.crc, a.crc);
	assert_true(d.r.seq > 0);
}

static void test_put_get_stat_delete(void **state)
{
	struct fx *f = *state;
	uint8_t val[10000];
	struct node_req_args a;
	struct done d = { 0 };

	for (size_t i = 0; i < sizeof(val); i++)
		val[i] = (uint8_t)(i * 7 + 1);
	put(f, "alpha", val, sizeof(val));

	/* the whole value: its stored crc, the bytes, a buffer offered */
	a = args(NODE_REQ_GET, "alpha");
	assert_int_equal(node_req_start(f->rq, &a, on_done, &d), 0);
	run_until(f, &d.calls, 1);
	assert_int_equal(d.r.res, 0);
	assert_int_equal(d.r.size, sizeof(val));
	assert_int_equal(d.r.offset, 0);
	assert_int_equal(d.r.len, sizeof(val));
	assert_int_equal(d.r.crc, ovl_crc32c(0, val, sizeof(val)));
	assert_memory_equal(d.data, val, sizeof(val));
	assert_true(d.offered);
	free(d.data);

	/* a range: the crc of the bytes returned, the whole object's size */
	memset(&d, 0, sizeof(d));
	a = args(NODE_REQ_GET, "alpha");
	a.offset = 100;
	a.length = 50;
	assert_int_equal(node_req_start(f->rq, &a, on_done, &d), 0);
	run_until(f, &d.calls, 1);
	assert_int_equal(d.r.res, 0);
	assert_int_equal(d.r.size, sizeof(val));
	assert_int_equal(d.r.offset, 100);
	assert_int_equal(d.r.len, 50);
	assert_int_equal(d.r.crc, ovl_crc32c(0, val + 100, 50));
	assert_memory_equal(d.data, val + 100, 50);
	free(d.data);

	memset(&d, 0, sizeof(d));
	a = args(NODE_REQ_STAT, "alpha");
	assert_int_equal(node_req_start(f->rq, &a, on_done, &d), 0);
	run_until(f, &d.calls, 1);
	assert_int_equal(d.r.res, 0);
	assert_int_equal(d.r.size, sizeof(val));
	assert_int_equal(d.r.crc, ovl_crc32c(0, val, sizeof(val)));
	assert_true(d.r.seq > 0);

	memset(&d, 0, sizeof(d));
	a = args(NODE_REQ_DELETE, "alpha");
	assert_int_equal(node_req_start(f->rq, &a, on_done, &d), 0);
	run_until(f, &d.calls, 1);
	assert_int_equal(d.r.res, 0);

	/* gone: a GET and a STAT say so, in words */
	for (int t = 0; t < 2; t++) {
		int ret;

		memset(&d, 0, sizeof(d));
		a = args(t ? NODE_REQ_STAT : NODE_REQ_GET, "alpha");
		ret = node_req_start(f->rq, &a, on_done, &d);
		if (ret == 0) {
			run_until(f, &d.calls, 1);
			assert_int_equal(d.r.res, -ENOENT);
			assert_string_equal(d.msg, "no such key");
		} else {
			assert_int_equal(ret, -ENOENT);
			assert_string_equal(node_req_errmsg(f->rq), "no such key");
			assert_int_equal(d.calls, 0);
		}
	}
	free(d.data);
}

/* A kept read buffer holds the bytes after the completion returned, and
 * outlives node_req_destroy() until it is released. */
static void test_get_buffer_kept(void **state)
{
	struct fx *f = *state;
	char val[5000];
	struct node_req_args a = args(NODE_REQ_GET, "kept");
	struct done d = { .keep = true };

	memset(val, 'k', sizeof(val));
	put(f, "kept", val, sizeof(val));
	assert_int_equal(node_req_start(f->rq, &a, on_done, &d), 0);
	run_until(f, &d.calls, 1);
	assert_non_null(d.kept);
	assert_memory_equal(d.kept_data, val, sizeof(val));
	/* more requests meanwhile do not disturb it, nor one that takes its
	 * buffer and gives it back inside the completion */
	put(f, "other", "x", 1);
	assert_memory_equal(d.kept_data, val, sizeof(val));
	{
		struct done d2 = { .release_now = true };

		assert_int_equal(node_req_start(f->rq, &a, on_done, &d2), 0);
		run_until(f, &d2.calls, 1);
		assert_true(d2.offered);
		assert_memory_equal(d2.data, val, sizeof(val));
		free(d2.data);
	}
	assert_memory_equal(d.kept_data, val, sizeof(val));
	/* the layer goes first; the buffer keeps what it needs */
	node_req_destroy(&f->rq);
	assert_null(f->rq);
	assert_memory_equal(d.kept_data, val, sizeof(val));
	node_req_buf_release(&d.kept);
	assert_null(d.kept);
	node_req_buf_release(&d.kept); /* NULL: nothing */
	free(d.data);
}

static void test_list(void **state)
{
	struct fx *f = *state;
	struct node_req_args a;
	struct done d = { 0 };
	char key[16];

	for (int i = 0; i < 10; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		put(f, key, key, strlen(key));
	}
	put(f, "x", "x", 1);

	/* LIST is answered from memory: done runs before start returns */
	a = args(NODE_REQ_LIST, "k");
	a.limit = 4;
	assert_int_equal(node_req_start(f->rq, &a, on_done, &d), 0);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.r.res, 0);
	assert_int_equal(d.r.nkeys, 4);
	assert_true(d.r.more);
	assert_string_equal(d.keys[0], "k0");
	assert_string_equal(d.keys[3], "k3");

	memset(&d, 0, sizeof(d));
	a = args(NODE_REQ_LIST, "k");
	a.after = (const uint8_t *)"k3";
	a.after_len = 2;
	a.limit = 100;
	assert_int_equal(node_req_start(f->rq, &a, on_done, &d), 0);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.r.nkeys, 6);
	assert_false(d.r.more);
	assert_string_equal(d.keys[0], "k4");
	assert_string_equal(d.keys[5], "k9");

	/* an empty prefix lists everything */
	memset(&d, 0, sizeof(d));
	a = args(NODE_REQ_LIST, "");
	a.limit = 100;
	assert_int_equal(node_req_start(f->rq, &a, on_done, &d), 0);
	assert_int_equal(d.r.nkeys, 11);
	assert_string_equal(d.keys[10], "x");

	/* a list of no keys is refused, and done never runs */
	memset(&d, 0, sizeof(d));
	a.limit = 0;
	assert_int_equal(node_req_start(f->rq, &a, on_done, &d), -EINVAL);
	assert_int_equal(d.calls, 0);
	assert_true(strlen(node_req_errmsg(f->rq)) > 0);
}

struct ready {
	int calls;
};

static void on_ready(void *arg)
{
	((struct ready *)arg)->calls++;
}

/* Write all of buf into the stream, running the loop whenever it is full. */
static void stream_all(struct fx *f, struct node_req_stream *st, struct ready *rd,
		       const uint8_t *buf, size_t len, size_t piece)
{
	size_t off = 0;
	int waits = 0;

	while (off < len) {
		size_t n = len - off < piece ? len - off : piece;
		ssize_t w = node_req_stream_write(st, buf + off, n);
		int before = rd->calls;

		assert_true(w >= 0);
		off += (size_t)w;
		if ((size_t)w == n)
			continue;
		/* full: `ready` comes from the loop, never from the write */
		assert_int_equal(rd->calls, before);
		run_until(f, &rd->calls, before + 1);
		waits++;
	}
	assert_true(waits > 0); /* 3 MiB does not fit the stream's two buffers */
}

static void test_stream_put(void **state)
{
	struct fx *f = *state;
	size_t len = 3u << 20;
	uint8_t *val = malloc(len);
	struct node_req_args a = args(NODE_REQ_PUT, "big");
	struct node_req_stream *st = NULL;
	struct ready rd = { 0 };
	struct done d = { 0 };

	for (size_t i = 0; i < len; i++)
		val[i] = (uint8_t)(i ^ (i >> 9));
	a.size = len;
	a.crc = ovl_crc32c(0, val, len);
	assert_true(node_req_stream_bytes(f->rq) > 0);
	assert_int_equal(node_req_stream_begin(f->rq, &a, on_ready, &rd, &st), 0);
	assert_non_null(st);
	stream_all(f, st, &rd, val, len, 100000);
	assert_int_equal(node_req_stream_crc(st), a.crc);
	assert_int_equal(node_req_stream_finish(&st, on_done, &d), 0);
	assert_null(st);
	assert_int_equal(d.calls, 0);
	run_until(f, &d.calls, 1);
	assert_int_equal(d.r.res, 0);
	assert_int_equal(d.r.size, len);
	assert_int_equal(d.r.crc, a.crc);
	assert_true(d.r.seq > 0);

	/* it reads back whole */
	memset(&d, 0, sizeof(d));
	a = args(NODE_REQ_GET, "big");
	assert_int_equal(node_req_start(f->rq, &a, on_done, &d), 0);
	run_until(f, &d.calls, 1);
	assert_int_equal(d.r.res, 0);
	assert_int_equal(d.r.len, len);
	assert_memory_equal(d.data, val, len);
	free(d.data);
	free(val);
}

/* An aborted stream and one whose bytes do not match its crc leave the key
 * as it was. */
static void test_stream_abort_and_bad_crc(void **state)
{
	struct fx *f = *state;
	size_t len = 600000;
	uint8_t *val = calloc(1, len);
	struct node_req_args a = args(NODE_REQ_PUT, "s");
	struct node_req_stream *st = NULL;
	struct ready rd = { 0 };
	struct done d = { 0 };

	put(f, "s", "old", 3);
	a.size = len;
	a.crc = ovl_crc32c(0, val, len);
	assert_int_equal(node_req_stream_begin(f->rq, &a, on_ready, &rd, &st), 0);
	assert_true(node_req_stream_write(st, val, 1000) > 0);
	node_req_stream_abort(&st);
	assert_null(st);
	node_req_stream_abort(&st); /* NULL: nothing */

	a.crc ^= 1;
	assert_int_equal(node_req_stream_begin(f->rq, &a, on_ready, &rd, &st), 0);
	stream_all(f, st, &rd, val, len, 65536);
	assert_int_not_equal(node_req_stream_crc(st), a.crc);
	assert_int_equal(node_req_stream_finish(&st, on_done, &d), -EBADMSG);
	assert_null(st);
	assert_true(strlen(node_req_errmsg(f->rq)) > 0);
	/* done never runs for a refused finish */
	for (int i = 0; i < 10; i++)
		node_loop_run(f->loop, false);
	assert_int_equal(d.calls, 0);

	a = args(NODE_REQ_GET, "s");
	assert_int_equal(node_req_start(f->rq, &a, on_done, &d), 0);
	run_until(f, &d.calls, 1);
	assert_int_equal(d.r.res, 0);
	assert_int_equal(d.r.len, 3);
	assert_memory_equal(d.data, "old", 3);
	free(d.data);
	free(val);
}

/* Refusals: -errno at once, a reason in words, and done never runs. */
static void test_refusals(void **state)
{
	struct fx *f = *state;
	uint8_t key[NODE_STORE_KEY_MAX + 1];
	struct node_req_args a = args(NODE_REQ_GET, "x");
	struct node_req_stream *st = NULL;
	struct done d = { 0 };

	memset(key, 'k', sizeof(key));
	a.key = key;
	a.klen = sizeof(key);
	assert_int_equal(node_req_start(f->rq, &a, on_done, &d), -E2BIG);
	assert_true(strlen(node_req_errmsg(f->rq)) > 0);
	a.type = NODE_REQ_PUT;
	a.val = key;
	a.size = 1;
	assert_int_equal(node_req_start(f->rq, &a, on_done, &d), -E2BIG);
	assert_int_equal(node_req_stream_begin(f->rq, &a, NULL, NULL, &st), -E2BIG);
	assert_null(st);
	/* only a PUT streams */
	a = args(NODE_REQ_GET, "x");
	assert_int_equal(node_req_stream_begin(f->rq, &a, NULL, NULL, &st), -EINVAL);
	assert_null(st);
	for (int i = 0; i < 10; i++)
		node_loop_run(f->loop, false);
	assert_int_equal(d.calls, 0);
}

/* Keys under NODE_REQ_RESERVED (8 bytes 0xff: the node's hints) are never
 * named by a request, nor listed; a key of 7 bytes 0xff is an ordinary
 * key that sorts before them. */
static void test_reserved(void **state)
{
	struct fx *f = *state;
	static const char hk[] = "\xff\xff\xff\xff\xff\xff\xff\xffHint";
	static const char seven[] = "\xff\xff\xff\xff\xff\xff\xffz";
	const enum node_req_type types[] = { NODE_REQ_PUT, NODE_REQ_GET, NODE_REQ_STAT,
					     NODE_REQ_DELETE };
	struct node_req_args a;
	struct node_req_stream *st = NULL;
	struct node_req_get *g = NULL;
	struct done d = { 0 };

	/* a record the node wrote itself, as a hint is */
	assert_int_equal(node_store_put(f->store, hk, strlen(hk), "k", 1), 0);
	put(f, "a", "1", 1);
	put(f, seven, "2", 1);
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		a = args(types[i], hk);
		a.val = (const uint8_t *)"x";
		a.size = 1;
		a.crc = ovl_crc32c(0, "x", 1);
		assert_int_equal(node_req_start(f->rq, &a, on_done, &d), -EINVAL);
		assert_non_null(strstr(node_req_errmsg(f->rq), "reserved"));
	}
	a = args(NODE_REQ_PUT, hk);
	a.size = 1;
	assert_int_equal(node_req_stream_begin(f->rq, &a, NULL, NULL, &st), -EINVAL);
	assert_null(st);
	a = args(NODE_REQ_GET, hk);
	assert_int_equal(node_req_get_start(f->rq, &a, OVL_WIRE_CHUNK_BYTES, on_done, &d, &g),
			 -EINVAL);
	assert_null(g);
	for (int vers = 0; vers < 2; vers++) {
		memset(&d, 0, sizeof(d));
		a = args(NODE_REQ_LIST, "");
		a.limit = 10;
		a.vers = vers;
		assert_int_equal(node_req_start(f->rq, &a, on_done, &d), 0);
		assert_int_equal(d.calls, 1);
		assert_int_equal(d.r.nkeys, 2);
		assert_false(d.r.more);
		assert_string_equal(d.keys[0], "a");
		assert_string_equal(d.keys[1], seven);
		/* listing exactly up to the last ordinary key: nothing more */
		memset(&d, 0, sizeof(d));
		a.limit = 2;
		assert_int_equal(node_req_start(f->rq, &a, on_done, &d), 0);
		assert_int_equal(d.r.nkeys, 2);
		assert_false(d.r.more);
	}
	/* the record is still there, untouched */
	{
		void *v = NULL;
		size_t vl = 0;

		assert_int_equal(node_store_get(f->store, hk, strlen(hk), &v, &vl), 0);
		assert_int_equal(vl, 1);
		free(v);
	}
	assert_int_equal(d.calls, 1);
}

/* NODE-STAT's counters come from here. */
static void test_counters(void **state)
{
	struct fx *f = *state;
	struct ovl_wire_counter c[OVL_WIRE_COUNTERS_MAX];
	unsigned n;

	put(f, "a", "1", 1);
	put(f, "b", "2", 1);
	n = node_req_counters(f->rq, NULL, c, OVL_WIRE_COUNTERS_MAX);
	/* the store's 13, then background work's (14 repair_*, 4 scrub_*:
	 * repair_eta_s shows 0 with nothing left) */
	assert_int_equal(n, 13 + 14 + 4);
	assert_string_equal(c[13].name, "repair_objects_left");
	assert_int_equal(c[13].value, 0);
	assert_string_equal(c[20].name, "repair_rate_limit");
	assert_int_equal(c[20].value, NODE_REQ_REPAIR_RATE_DEFAULT);
	assert_string_equal(c[25].name, "repair_objects_planned");
	assert_int_equal(c[25].value, 0);
	assert_string_equal(c[27].name, "scrub_passes");
	assert_string_equal(c[9].name, "full");
	assert_int_equal(c[9].value, 0);
	assert_string_equal(c[11].name, "usable_bytes");
	assert_true(c[11].value > 0);
	assert_string_equal(c[0].name, "objects");
	assert_int_equal(c[0].value, 2);
	assert_string_equal(c[6].name, "puts");
	assert_int_equal(c[6].value, 2);
	assert_string_equal(c[8].name, "cache_rereads");
	/* a short array gets what fits */
	assert_int_equal(node_req_counters(f->rq, NULL, c, 3), 3);
}

/* ---- a GET in pieces ---- */

struct pieces {
	int calls;
	int res;
	struct node_req_result first;
	uint8_t *got;             /* the pieces, in order */
	size_t len;
	size_t max_piece;
	struct node_req_buf *kept[64]; /* every piece kept until the end */
	unsigned nkept;
};

static void on_piece(void *arg, const struct node_req_result *r, struct node_req_buf **buf)
{
	struct pieces *p = arg;

	if (p->calls++ == 0)
		p->first = *r;
	p->res = r->res;
	if (r->res < 0)
		return;
	assert_int_equal(r->length, p->first.length); /* every piece says the same */
	assert_int_equal(r->crc, p->first.crc);
	assert_true(p->len + r->len <= r->length);
	if (r->len)
		memcpy(p->got + p->len, r->data, r->len);
	p->len += r->len;
	if (r->len > p->max_piece)
		p->max_piece = r->len;
	/* kept while the next piece is read: each piece is its own buffer */
	if (*buf && p->nkept < 64) {
		p->kept[p->nkept++] = *buf;
		*buf = NULL;
	}
}

static void pieces_release(struct pieces *p)
{
	for (unsigned i = 0; i < p->nkept; i++)
		node_req_buf_release(&p->kept[i]);
	p->nkept = 0;
	free(p->got);
	p->got = NULL;
}

/* Read a whole answer in pieces of `piece` bytes; the GET handle stays for
 * the caller to end (NULL on a refusal). */
static int get_pieces(struct fx *f, const char *key, uint64_t off, uint64_t len, size_t piece,
		      struct pieces *p, struct node_req_get **g)
{
	struct node_req_args a = args(NODE_REQ_GET, key);
	int ret;

	a.offset = off;
	a.length = len;
	ret = node_req_get_start(f->rq, &a, piece, on_piece, p, g);
	if (ret < 0)
		return ret;
	assert_int_equal(p->calls, 0);
	run_until(f, &p->calls, 1);
	while (p->res == 0 && !node_req_get_finished(*g)) {
		int want = p->calls + 1;

		assert_int_equal(node_req_get_next(*g), 0);
		assert_int_equal(node_req_get_next(*g), -EINVAL); /* one read at a time */
		run_until(f, &p->calls, want);
	}
	return 0;
}

static void test_get_pieces(void **state)
{
	struct fx *f = *state;
	size_t n = (1u << 20) + 12345;
	uint8_t *val = malloc(n);
	struct pieces p = { 0 };
	struct node_req_get *g = NULL;
	struct node_req_args a = args(NODE_REQ_GET, "big");

	for (size_t i = 0; i < n; i++)
		val[i] = (uint8_t)(i * 7 + (i >> 11));
	put(f, "big", val, n);
	/* the whole object, in 64 KiB pieces: the stored crc, every byte */
	p.got = malloc(n);
	assert_int_equal(get_pieces(f, "big", 0, UINT64_MAX, 64 << 10, &p, &g), 0);
	assert_int_equal(p.res, 0);
	assert_int_equal(p.first.size, n);
	assert_int_equal(p.first.offset, 0);
	assert_int_equal(p.first.length, n);
	assert_int_equal(p.first.crc, ovl_crc32c(0, val, n));
	assert_int_equal(p.len, n);
	assert_int_equal(p.max_piece, 64 << 10);
	assert_memory_equal(p.got, val, n);
	assert_int_equal(p.calls, (int)((n + (64 << 10) - 1) / (64 << 10)));
	assert_int_equal(node_req_get_next(g), -EINVAL); /* nothing left */
	node_req_get_end(&g);
	assert_null(g);
	pieces_release(&p);
	/* a range longer than a piece, not on a chunk: its own crc, computed first */
	memset(&p, 0, sizeof(p));
	p.got = malloc(n);
	assert_int_equal(get_pieces(f, "big", 100001, 300000, 128 << 10, &p, &g), 0);
	assert_int_equal(p.res, 0);
	assert_int_equal(p.first.size, n); /* the whole object's size, not the range's */
	assert_int_equal(p.first.offset, 100001);
	assert_int_equal(p.first.length, 300000);
	assert_int_equal(p.first.crc, ovl_crc32c(0, val + 100001, 300000));
	assert_memory_equal(p.got, val + 100001, 300000);
	node_req_get_end(&g);
	pieces_release(&p);
	/* a range clipped at the end, and one past it (no bytes) */
	memset(&p, 0, sizeof(p));
	p.got = malloc(n);
	assert_int_equal(get_pieces(f, "big", n - 1000, 1 << 20, 64 << 10, &p, &g), 0);
	assert_int_equal(p.first.length, 1000);
	assert_memory_equal(p.got, val + n - 1000, 1000);
	node_req_get_end(&g);
	pieces_release(&p);
	memset(&p, 0, sizeof(p));
	assert_int_equal(get_pieces(f, "big", n + 5, 10, 64 << 10, &p, &g), 0);
	assert_int_equal(p.res, 0);
	assert_int_equal(p.first.length, 0);
	assert_int_equal(p.first.offset, n);
	assert_true(node_req_get_finished(g));
	node_req_get_end(&g);
	pieces_release(&p);
	/* no such key: the first `done` says so */
	memset(&p, 0, sizeof(p));
	assert_int_equal(get_pieces(f, "none", 0, UINT64_MAX, 64 << 10, &p, &g), -ENOENT);
	assert_int_equal(p.calls, 0);
	assert_null(g);
	/* refusals: pieces not a whole number of chunks */
	assert_int_equal(node_req_get_start(f->rq, &a, 1000, on_piece, &p, &g), -EINVAL);
	assert_null(g);
	/* ended with a read in flight: the read completes quietly */
	memset(&p, 0, sizeof(p));
	p.got = malloc(n);
	assert_int_equal(node_req_get_start(f->rq, &a, 64 << 10, on_piece, &p, &g), 0);
	node_req_get_end(&g);
	while (node_loop_inflight(f->loop))
		node_loop_run(f->loop, true);
	assert_int_equal(p.calls, 0);
	free(p.got);
	free(val);
}

/* The object replaced between pieces: the rest of the old version is not
 * mixed with the new one (-EAGAIN); replaced while a range's crc is being
 * computed (nothing delivered yet): the GET starts again on the new one. */
static void test_get_pieces_replaced(void **state)
{
	struct fx *f = *state;
	size_t n = 512u << 10;
	uint8_t *v1 = malloc(n), *v2 = malloc(n);
	struct pieces p = { 0 };
	struct node_req_get *g = NULL;
	struct node_req_args a = args(NODE_REQ_GET, "obj");

	memset(v1, 1, n);
	memset(v2, 2, n);
	put(f, "obj", v1, n);
	p.got = malloc(n);
	assert_int_equal(node_req_get_start(f->rq, &a, 64 << 10, on_piece, &p, &g), 0);
	run_until(f, &p.calls, 1);
	assert_int_equal(p.res, 0);
	assert_int_equal(p.first.crc, ovl_crc32c(0, v1, n));
	put(f, "obj", v2, n);
	assert_int_equal(node_req_get_next(g), 0);
	run_until(f, &p.calls, 2);
	assert_int_equal(p.res, -EAGAIN);
	assert_memory_equal(p.got, v1, p.len); /* what was delivered is all v1 */
	node_req_get_end(&g);
	pieces_release(&p);
	/* deleted between pieces: the same */
	memset(&p, 0, sizeof(p));
	p.got = malloc(n);
	assert_int_equal(node_req_get_start(f->rq, &a, 64 << 10, on_piece, &p, &g), 0);
	run_until(f, &p.calls, 1);
	{
		struct node_req_args d = args(NODE_REQ_DELETE, "obj");
		struct done dd = { 0 };

		assert_int_equal(node_req_start(f->rq, &d, on_done, &dd), 0);
		run_until(f, &dd.calls, 1);
		assert_int_equal(dd.r.res, 0);
	}
	assert_int_equal(node_req_get_next(g), -EAGAIN);
	assert_int_equal(p.calls, 1);
	node_req_get_end(&g);
	pieces_release(&p);
	free(p.got);
	free(v1);
	free(v2);
}

int main(void)
{
	test_require_io_uring();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_put_get_stat_delete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_get_buffer_kept, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stream_put, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stream_abort_and_bad_crc, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reserved, setup, teardown),
		cmocka_unit_test_setup_teardown(test_counters, setup, teardown),
		cmocka_unit_test_setup_teardown(test_get_pieces, setup, teardown),
		cmocka_unit_test_setup_teardown(test_get_pieces_replaced, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
