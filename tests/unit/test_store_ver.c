/*
 * Versioned records and tombstones in the store (format 4): the version
 * check, -EALREADY and what it reports, tombstones in stat_any, the
 * listing and tomb_drop, writes of one key in flight together, and that
 * versions and tombstones survive a crash, a checkpoint, compaction and
 * the upgrade of a format-3 drive.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node.h"
#include "store/record.h"
#include "overlay.h"

#define DISK_BYTES (24u << 20)
#define SEG_BYTES (1u << 20)

static struct node_store *open_opts(struct node_disk *d, bool format, size_t piece)
{
	struct node_store_opts o;
	struct node_store *s = NULL;
	char err[256];
	int ret;

	node_store_opts_init(&o);
	o.disk = d;
	o.format = format;
	o.segment_bytes = SEG_BYTES;
	o.write_buffers = 4;
	o.write_buffer_bytes = 64 << 10;
	if (piece)
		o.compact_piece_bytes = piece;
	ret = node_store_open(&s, &o, err, sizeof(err));
	if (ret < 0)
		fail_msg("open: %s", err);
	return s;
}

static struct node_store *open_on(struct node_disk *d, bool format)
{
	return open_opts(d, format, 0);
}

static struct node_disk *new_disk(uint64_t seed)
{
	struct node_disk *d = NULL;

	assert_int_equal(node_faultdisk_new(&d, DISK_BYTES, seed), 0);
	return d;
}

/* A crash: forget the store as power loss would, lose what was not flushed. */
static struct node_store *crash_reopen(struct node_store **s)
{
	struct node_disk *d = node_store_abandon(s);

	node_faultdisk_crash(node_faultdisk_of(d));
	return open_on(d, false);
}

static struct node_store_ver V(uint64_t hlc, uint64_t node)
{
	return (struct node_store_ver){ hlc, node };
}

static void assert_ver(const struct node_store_ver *got, uint64_t hlc, uint64_t node)
{
	if (got->hlc != hlc || got->node != node)
		fail_msg("version (%" PRIu64 ", %" PRIu64 "), expected (%" PRIu64 ", %" PRIu64 ")",
			 got->hlc, got->node, hlc, node);
}

static void check_value(struct node_store *s, const char *key, const char *want)
{
	void *got = NULL;
	size_t len = 0;

	assert_int_equal(node_store_get(s, key, strlen(key), &got, &len), 0);
	assert_int_equal(len, strlen(want));
	assert_memory_equal(got, want, len);
	free(got);
}

static void expect_absent(struct node_store *s, const char *key)
{
	struct node_store_objstat st;
	void *got = NULL;
	size_t len = 0;

	assert_int_equal(node_store_get(s, key, strlen(key), &got, &len), -ENOENT);
	assert_int_equal(node_store_stat(s, key, strlen(key), &st), -ENOENT);
}

/* The key's version as stat_any says (tomb: it must be a tombstone). */
static void expect_held(struct node_store *s, const char *key, bool tomb, uint64_t hlc,
		       uint64_t node)
{
	struct node_store_objstat st;

	memset(&st, 0xee, sizeof(st));
	assert_int_equal(node_store_stat_any(s, key, strlen(key), &st), 0);
	assert_int_equal(st.tomb, tomb);
	assert_ver(&st.ver, hlc, node);
	if (tomb)
		assert_int_equal(st.size, 0);
}

static int put_ver(struct node_store *s, const char *key, const char *val, uint64_t hlc,
		   uint64_t node, struct node_store_objstat *st)
{
	struct node_store_ver v = V(hlc, node);

	return node_store_put_ver(s, key, strlen(key), val, strlen(val), &v, st);
}

static int del_ver(struct node_store *s, const char *key, uint64_t hlc, uint64_t node,
		   struct node_store_objstat *st)
{
	struct node_store_ver v = V(hlc, node);

	return node_store_delete_ver(s, key, strlen(key), &v, st);
}

/* ---- the listing ---- */

struct listed {
	unsigned n;
	char key[32][32];
	struct node_store_ver ver[32];
	bool tomb[32];
};

static int collect_ver(void *arg, const void *key, size_t klen, const struct node_store_ver *ver,
		       bool tomb)
{
	struct listed *l = arg;

	assert_true(l->n < 32 && klen < 32);
	memcpy(l->key[l->n], key, klen);
	l->key[l->n][klen] = 0;
	l->ver[l->n] = *ver;
	l->tomb[l->n] = tomb;
	l->n++;
	return 0;
}

static int collect(void *arg, const void *key, size_t klen)
{
	return collect_ver(arg, key, klen, &(struct node_store_ver){ 0, 0 }, false);
}

/* ---- the version rule ---- */

static void test_versions_basic(void **state)
{
	struct node_store *s = open_on(new_disk(1), true);
	struct node_store_objstat st;
	struct node_store_stats ss;
	struct node_store_ver zero = V(0, 0), v7 = V(7, 1);
	struct listed l = { 0 };

	/* a first version is stored; its completion and stat say which */
	assert_int_equal(put_ver(s, "k", "one", 10, 5, &st), 0);
	assert_ver(&st.ver, 10, 5);
	assert_false(st.tomb);
	assert_int_equal(st.size, 3);
	check_value(s, "k", "one");
	assert_int_equal(node_store_stat(s, "k", 1, &st), 0);
	assert_ver(&st.ver, 10, 5);
	assert_int_equal(st.crc, ovl_crc32c(0, "one", 3));
	/* older (by hlc, and by node at the same hlc) and equal: refused,
	 * nothing written, st says what is held */
	memset(&st, 0, sizeof(st));
	assert_int_equal(put_ver(s, "k", "old", 9, 99, &st), -EALREADY);
	assert_ver(&st.ver, 10, 5);
	assert_false(st.tomb);
	assert_int_equal(put_ver(s, "k", "old", 10, 4, &st), -EALREADY);
	assert_int_equal(put_ver(s, "k", "same", 10, 5, &st), -EALREADY);
	assert_ver(&st.ver, 10, 5);
	check_value(s, "k", "one");
	/* newer: by node at the same hlc, then by hlc */
	assert_int_equal(put_ver(s, "k", "two", 10, 6, &st), 0);
	assert_int_equal(put_ver(s, "k", "three", 11, 0, &st), 0);
	check_value(s, "k", "three");
	/* a versioned delete leaves a tombstone: absent to get, stat and
	 * list, present to stat_any and the versioned listing */
	assert_int_equal(del_ver(s, "k", 20, 1, &st), 0);
	assert_true(st.tomb);
	assert_ver(&st.ver, 20, 1);
	expect_absent(s, "k");
	expect_held(s, "k", true, 20, 1);
	/* an older put after the delete does not bring it back */
	assert_int_equal(put_ver(s, "k", "zombie", 19, 9, &st), -EALREADY);
	assert_true(st.tomb);
	assert_ver(&st.ver, 20, 1);
	expect_absent(s, "k");
	/* an older or equal delete: refused too */
	assert_int_equal(del_ver(s, "k", 20, 1, &st), -EALREADY);
	assert_true(st.tomb);
	/* a plain delete of a tombstone: there is no object */
	assert_int_equal(node_store_delete(s, "k", 1), -ENOENT);
	/* a delete of a key never seen: a tombstone all the same */
	assert_int_equal(del_ver(s, "ghost", 5, 5, &st), 0);
	assert_int_equal(put_ver(s, "ghost", "late", 4, 4, &st), -EALREADY);
	expect_held(s, "ghost", true, 5, 5);
	/* plain writes are (0, 0): a plain put replaces a versioned object,
	 * and any version beats it */
	assert_int_equal(put_ver(s, "p", "v", 100, 1, &st), 0);
	assert_int_equal(node_store_put(s, "p", 1, "plain", 5), 0);
	expect_held(s, "p", false, 0, 0);
	assert_int_equal(node_store_stat(s, "p", 1, &st), 0);
	assert_ver(&st.ver, 0, 0);
	assert_int_equal(put_ver(s, "p", "v1", 1, 1, &st), 0);
	check_value(s, "p", "v1");
	assert_int_equal(node_store_put(s, "q", 1, "plain", 5), 0);
	assert_int_equal(put_ver(s, "q", "vq", 1, 0, &st), 0);
	/* a plain delete of a versioned object removes it, leaving nothing */
	assert_int_equal(node_store_delete(s, "q", 1), 0);
	assert_int_equal(node_store_stat_any(s, "q", 1, &st), -ENOENT);
	/* bad arguments */
	assert_int_equal(node_store_put_ver(s, "k", 1, "x", 1, &zero, &st), -EINVAL);
	assert_int_equal(node_store_put_ver(s, "k", 1, "x", 1, NULL, &st), -EINVAL);
	assert_int_equal(node_store_delete_ver(s, "k", 1, &zero, &st), -EINVAL);
	assert_int_equal(node_store_tomb_drop(s, "k", 1, &zero), -EINVAL);
	assert_int_equal(node_store_put_ver(s, "", 0, "x", 1, &v7, &st), -EINVAL);
	assert_int_equal(node_store_stat_any(s, "nothing", 7, &st), -ENOENT);
	/* the listings: tombstones hidden from the plain one */
	assert_int_equal(node_store_list(s, NULL, 0, NULL, 0, 100, collect, &l), 1);
	assert_string_equal(l.key[0], "p");
	memset(&l, 0, sizeof(l));
	assert_int_equal(node_store_list_ver(s, NULL, 0, NULL, 0, 100, collect_ver, &l), 3);
	assert_string_equal(l.key[0], "ghost");
	assert_true(l.tomb[0]);
	assert_ver(&l.ver[0], 5, 5);
	assert_string_equal(l.key[1], "k");
	assert_true(l.tomb[1]);
	assert_ver(&l.ver[1], 20, 1);
	assert_string_equal(l.key[2], "p");
	assert_false(l.tomb[2]);
	assert_ver(&l.ver[2], 1, 1);
	memset(&l, 0, sizeof(l));
	assert_int_equal(node_store_list_ver(s, "k", 1, NULL, 0, 100, collect_ver, &l), 1);
	memset(&l, 0, sizeof(l));
	assert_int_equal(node_store_list_ver(s, NULL, 0, "ghost", 5, 1, collect_ver, &l), 1);
	assert_string_equal(l.key[0], "k");
	node_store_stats(s, &ss);
	assert_int_equal(ss.objects, 1);
	assert_int_equal(ss.tombstones, 2);
	/* a newer put after a delete brings the key back */
	assert_int_equal(put_ver(s, "k", "back", 21, 0, &st), 0);
	check_value(s, "k", "back");
	node_store_stats(s, &ss);
	assert_int_equal(ss.objects, 2);
	assert_int_equal(ss.tombstones, 1);
	node_store_close(&s);
}

static void test_tomb_drop(void **state)
{
	struct node_store *s = open_on(new_disk(2), true);
	struct node_store_objstat st;
	struct node_store_ver v4 = V(4, 1), v5 = V(5, 1), v6 = V(6, 1), v8 = V(8, 1), v9 = V(9, 1);
	struct node_store_ver v10 = V(10, 1);
	struct node_store_stats ss;

	assert_int_equal(put_ver(s, "t", "x", 4, 1, &st), 0);
	/* not a tombstone: nothing to drop */
	assert_int_equal(node_store_tomb_drop(s, "t", 1, &v4), -ENOENT);
	assert_int_equal(del_ver(s, "t", 5, 1, &st), 0);
	/* another version: not dropped */
	assert_int_equal(node_store_tomb_drop(s, "t", 1, &v6), -ENOENT);
	assert_int_equal(node_store_tomb_drop(s, "nope", 4, &v5), -ENOENT);
	assert_int_equal(node_store_tomb_drop(s, "t", 1, &v5), 0);
	/* it goes when its record is durable */
	assert_int_equal(node_store_sync(s), 0);
	assert_int_equal(node_store_stat_any(s, "t", 1, &st), -ENOENT);
	node_store_stats(s, &ss);
	assert_int_equal(ss.tombstones, 0);
	assert_int_equal(ss.live_bytes, 0);
	/* forgotten: an older version is taken now (the caller's GC rule) */
	assert_int_equal(put_ver(s, "t", "older", 3, 1, &st), 0);
	check_value(s, "t", "older");
	/* a drop raced by a newer put: the put wins, nothing dropped */
	assert_int_equal(del_ver(s, "t", 8, 1, &st), 0);
	assert_int_equal(node_store_put_ver_async(s, "t", 1, "nine", 4, &v9, NULL, NULL), 0);
	assert_int_equal(node_store_tomb_drop(s, "t", 1, &v8), 0);
	assert_int_equal(node_store_sync(s), 0);
	check_value(s, "t", "nine");
	expect_held(s, "t", false, 9, 1);
	/* the drop survives a crash once durable */
	assert_int_equal(del_ver(s, "t", 10, 1, &st), 0);
	assert_int_equal(del_ver(s, "u", 10, 2, &st), 0);
	assert_int_equal(node_store_tomb_drop(s, "t", 1, &v10), 0);
	assert_int_equal(node_store_sync(s), 0);
	s = crash_reopen(&s);
	assert_int_equal(node_store_stat_any(s, "t", 1, &st), -ENOENT);
	expect_held(s, "u", true, 10, 2);
	node_store_close(&s);
}

/* ---- writes of one key in flight together ---- */

/* One write's completion. */
struct res {
	bool done;
	int res;
	struct node_store_objstat st;
};

static void res_cb(void *arg, int res, const struct node_store_objstat *st)
{
	struct res *r = arg;

	assert_false(r->done);
	r->done = true;
	r->res = res;
	if (st)
		r->st = *st;
}

static void wait_all(struct node_store *s, struct res *r, int n)
{
	for (int i = 0; i < n; i++)
		for (int j = 0; j < 100000 && !r[i].done; j++)
			assert_int_equal(node_store_poll(s, true), 0);
	for (int i = 0; i < n; i++)
		assert_true(r[i].done);
}

static void stream_all(struct node_store *s, struct node_store_stream *st, const uint8_t *p,
		       size_t len)
{
	for (size_t off = 0; off < len;) {
		ssize_t n = node_store_stream_write(st, p + off, len - off);

		assert_true(n >= 0);
		off += (size_t)n;
		if (!n)
			assert_int_equal(node_store_poll(s, true), 0);
	}
}

static void test_in_flight_order(void **state)
{
	struct node_store *s = open_on(new_disk(3), true);
	struct node_store_ver v3 = V(3, 0), v5 = V(5, 0), v6 = V(6, 0), v7 = V(7, 0);
	struct node_store_ver v20 = V(20, 0), v21 = V(21, 0), v22 = V(22, 0), zero = V(0, 0);
	struct node_store_stream *st = NULL;
	uint8_t *big = malloc(200000);
	struct res r[2];

	/* newer first, older queued behind it before either is durable: the
	 * older one is refused at its place in the log, never wins */
	memset(r, 0, sizeof(r));
	assert_int_equal(node_store_put_ver_async(s, "a", 1, "five", 4, &v5, res_cb, &r[0]), 0);
	assert_int_equal(node_store_put_ver_async(s, "a", 1, "three", 5, &v3, res_cb, &r[1]), 0);
	wait_all(s, r, 2);
	assert_int_equal(r[0].res, 0);
	assert_int_equal(r[1].res, -EALREADY);
	assert_ver(&r[1].st.ver, 5, 0);
	check_value(s, "a", "five");
	/* older first: both stored, the newer last */
	memset(r, 0, sizeof(r));
	assert_int_equal(node_store_put_ver_async(s, "b", 1, "three", 5, &v3, res_cb, &r[0]), 0);
	assert_int_equal(node_store_put_ver_async(s, "b", 1, "five", 4, &v5, res_cb, &r[1]), 0);
	wait_all(s, r, 2);
	assert_int_equal(r[0].res, 0);
	assert_int_equal(r[1].res, 0);
	check_value(s, "b", "five");
	/* a delete in flight, then an older put: the tombstone holds */
	memset(r, 0, sizeof(r));
	assert_int_equal(node_store_delete_ver_async(s, "b", 1, &v7, res_cb, &r[0]), 0);
	assert_int_equal(node_store_put_ver_async(s, "b", 1, "six", 3, &v6, res_cb, &r[1]), 0);
	wait_all(s, r, 2);
	assert_int_equal(r[0].res, 0);
	assert_true(r[0].st.tomb);
	assert_int_equal(r[1].res, -EALREADY);
	assert_true(r[1].st.tomb);
	assert_ver(&r[1].st.ver, 7, 0);
	expect_absent(s, "b");
	/* streamed puts are checked at finish, where their commit is ordered */
	for (size_t i = 0; i < 200000; i++)
		big[i] = (uint8_t)(i * 13);
	memset(r, 0, sizeof(r));
	assert_int_equal(node_store_stream_begin(s, "c", 1, 200000, NULL, NULL, &st), 0);
	stream_all(s, st, big, 200000);
	/* a newer put ordered before the finish: the stream loses */
	assert_int_equal(node_store_put_ver_async(s, "c", 1, "21", 2, &v21, res_cb, &r[0]), 0);
	assert_int_equal(node_store_stream_finish_ver(&st, ovl_crc32c(0, big, 200000), &v20, res_cb,
						      &r[1]), 0);
	assert_null(st);
	wait_all(s, r, 2);
	assert_int_equal(r[0].res, 0);
	assert_int_equal(r[1].res, -EALREADY);
	assert_ver(&r[1].st.ver, 21, 0);
	check_value(s, "c", "21");
	/* a newer stream wins, and keeps its version */
	memset(r, 0, sizeof(r));
	assert_int_equal(node_store_stream_begin(s, "c", 1, 200000, NULL, NULL, &st), 0);
	stream_all(s, st, big, 200000);
	assert_int_equal(node_store_stream_finish_ver(&st, ovl_crc32c(0, big, 200000), &v22, res_cb,
						      &r[0]), 0);
	wait_all(s, r, 1);
	assert_int_equal(r[0].res, 0);
	assert_ver(&r[0].st.ver, 22, 0);
	assert_int_equal(r[0].st.size, 200000);
	expect_held(s, "c", false, 22, 0);
	/* a version (0, 0) at finish is refused and nothing is stored */
	assert_int_equal(node_store_stream_begin(s, "d", 1, 1, NULL, NULL, &st), 0);
	assert_int_equal(node_store_stream_write(st, "x", 1), 1);
	assert_int_equal(node_store_stream_finish_ver(&st, ovl_crc32c(0, "x", 1), &zero, res_cb, &r[1]),
			 -EINVAL);
	assert_null(st);
	/* an unversioned stream still works as before */
	memset(r, 0, sizeof(r));
	assert_int_equal(node_store_stream_begin(s, "e", 1, 3, NULL, NULL, &st), 0);
	assert_int_equal(node_store_stream_write(st, "eee", 3), 3);
	assert_int_equal(node_store_stream_finish(&st, ovl_crc32c(0, "eee", 3), res_cb, &r[0]), 0);
	wait_all(s, r, 1);
	assert_int_equal(r[0].res, 0);
	s = crash_reopen(&s);
	expect_held(s, "c", false, 22, 0);
	{
		void *got = NULL;
		size_t len = 0;

		assert_int_equal(node_store_get(s, "c", 1, &got, &len), 0);
		assert_int_equal(len, 200000);
		assert_memory_equal(got, big, 200000);
		free(got);
	}
	check_value(s, "e", "eee");
	expect_held(s, "e", false, 0, 0);
	assert_int_equal(node_store_stat_any(s, "d", 1, &r[0].st), -ENOENT);
	expect_held(s, "a", false, 5, 0);
	expect_held(s, "b", true, 7, 0);
	free(big);
	node_store_close(&s);
}

/* ---- crash, checkpoint, compaction ---- */

#define NKEYS 60

/* What the store must hold, key by key. */
struct model {
	uint64_t hlc[NKEYS];    /* 0: never written */
	bool tomb[NKEYS];
	uint32_t crc[NKEYS];
};

static void key_of(char *b, int k)
{
	snprintf(b, 16, "key%03d", k);
}

static void check_model(struct node_store *s, const struct model *m)
{
	struct node_store_stats ss;
	uint64_t objects = 0, tombs = 0;

	for (int k = 0; k < NKEYS; k++) {
		char key[16];
		struct node_store_objstat st;
		int ret;

		key_of(key, k);
		ret = node_store_stat_any(s, key, strlen(key), &st);
		if (!m->hlc[k]) {
			assert_int_equal(ret, -ENOENT);
			continue;
		}
		if (ret != 0)
			fail_msg("%s: stat_any %d, expected version %" PRIu64, key, ret, m->hlc[k]);
		if (st.tomb != m->tomb[k] || st.ver.hlc != m->hlc[k] || st.ver.node != (uint64_t)k)
			fail_msg("%s: %s at %" PRIu64 ", expected %s at %" PRIu64, key,
				 st.tomb ? "tombstone" : "object", st.ver.hlc,
				 m->tomb[k] ? "tombstone" : "object", m->hlc[k]);
		if (m->tomb[k]) {
			tombs++;
			expect_absent(s, key);
		} else {
			objects++;
			assert_int_equal(st.crc, m->crc[k]);
		}
	}
	node_store_stats(s, &ss);
	assert_int_equal(ss.objects, objects);
	assert_int_equal(ss.tombstones, tombs);
}

/* A round of versioned writes: new versions, deletes, and older ones
 * that must be refused. */
static void churn(struct node_store *s, struct model *m, struct node_rng *rng, uint64_t *clock,
		  size_t vmax)
{
	uint8_t *val = malloc(vmax);

	for (int i = 0; i < 3 * NKEYS; i++) {
		int k = (int)(node_rng_next(rng) % NKEYS), ret;
		uint64_t r = node_rng_next(rng) % 10;
		struct node_store_ver v;
		struct node_store_objstat st;
		char key[16];

		key_of(key, k);
		if (r < 2 && m->hlc[k]) {
			/* older than what is held: refused */
			v = V(m->hlc[k] - node_rng_next(rng) % 2, (uint64_t)k);
			ret = r ? node_store_delete_ver(s, key, strlen(key), &v, &st)
				: node_store_put_ver(s, key, strlen(key), "old", 3, &v, &st);
			assert_int_equal(ret, -EALREADY);
			assert_int_equal(st.tomb, m->tomb[k]);
			assert_int_equal(st.ver.hlc, m->hlc[k]);
			continue;
		}
		v = V(++*clock, (uint64_t)k);
		if (r < 4) {
			assert_int_equal(node_store_delete_ver(s, key, strlen(key), &v, &st), 0);
			m->tomb[k] = true;
		} else {
			size_t n = (size_t)(node_rng_next(rng) % vmax);

			for (size_t j = 0; j < n; j++)
				val[j] = (uint8_t)(j * 7 + *clock);
			assert_int_equal(node_store_put_ver(s, key, strlen(key), val, n, &v, &st), 0);
			m->tomb[k] = false;
			m->crc[k] = ovl_crc32c(0, val, n);
		}
		m->hlc[k] = v.hlc;
	}
	free(val);
}

static void test_crash_and_checkpoint(void **state)
{
	struct node_store *s = open_on(new_disk(4), true);
	struct node_rng rng;
	struct model m = { 0 };
	uint64_t clock = 1000;

	node_rng_seed(&rng, 4);
	churn(s, &m, &rng, &clock, 3000);
	/* replay alone */
	s = crash_reopen(&s);
	check_model(s, &m);
	/* a checkpoint, then more after it: items and replay together */
	assert_int_equal(node_store_checkpoint(s), 0);
	churn(s, &m, &rng, &clock, 3000);
	s = crash_reopen(&s);
	check_model(s, &m);
	/* the older writes are still refused after the restart */
	churn(s, &m, &rng, &clock, 3000);
	check_model(s, &m);
	node_store_close(&s);
}

static void test_restart_from_checkpoint(void **state)
{
	struct node_disk *d = new_disk(5);
	struct node_store *s = open_on(d, true);
	struct node_store_stats ss;
	struct node_rng rng;
	struct model m = { 0 };
	uint64_t clock = 1;

	node_rng_seed(&rng, 5);
	churn(s, &m, &rng, &clock, 2000);
	assert_int_equal(node_store_checkpoint(s), 0);
	/* a checkpoint taken, nothing after it: the items alone */
	d = node_store_abandon(&s);
	node_faultdisk_crash(node_faultdisk_of(d));
	s = open_on(d, false);
	node_store_stats(s, &ss);
	assert_int_equal(ss.recovered_records, 0);
	check_model(s, &m);
	churn(s, &m, &rng, &clock, 2000);
	check_model(s, &m);
	d = node_store_abandon(&s);
	node_faultdisk_crash(node_faultdisk_of(d));
	s = open_on(d, false);
	check_model(s, &m);
	node_store_close(&s);
}

/* Compaction moves tombstones and versioned records (whole, and in pieces
 * through a streamed region), keeping their versions, through a crash. */
static void test_compaction_keeps_versions(void **state)
{
	struct node_disk *d = new_disk(6);
	struct node_store *s = open_opts(d, true, 64 << 10);
	struct node_store_objstat st;
	struct node_store_stats ss;
	uint64_t toff, tsize, boff, bsize, off, size;
	uint8_t *big = malloc(300000), *fillv = malloc(60000);
	struct node_store_ver vb = V(77, 3);
	void *got = NULL;
	size_t len = 0;
	int moved = 0;

	for (size_t i = 0; i < 300000; i++)
		big[i] = (uint8_t)(i * 31 + 1);
	memset(fillv, 0x5a, 60000);
	assert_int_equal(del_ver(s, "tomb", 50, 9, &st), 0);
	assert_int_equal(put_ver(s, "small", "versioned", 60, 9, &st), 0);
	assert_int_equal(node_store_put_ver(s, "big", 3, big, 300000, &vb, &st), 0);
	assert_int_equal(node_store_locate(s, "tomb", 4, &toff, &tsize), 0);
	assert_int_equal(node_store_locate(s, "big", 3, &boff, &bsize), 0);
	/* garbage around them, so that their segments are worth compacting */
	for (int round = 0; round < 40; round++)
		for (int i = 0; i < 8; i++) {
			char key[16];

			snprintf(key, sizeof(key), "junk%d", i);
			assert_int_equal(node_store_put(s, key, strlen(key), fillv, 60000), 0);
		}
	for (int i = 0; i < 8 && moved < 3; i++) {
		assert_true(node_store_compact(s) >= 0);
		assert_int_equal(node_store_locate(s, "tomb", 4, &off, &size), 0);
		moved = off != toff;
		assert_int_equal(node_store_locate(s, "big", 3, &off, &size), 0);
		moved += off != boff;
	}
	node_store_stats(s, &ss);
	assert_true(ss.relocations >= 2);
	assert_true(ss.relocations_streamed >= 1);
	assert_int_equal(moved, 2);
	expect_held(s, "tomb", true, 50, 9);
	expect_held(s, "small", false, 60, 9);
	expect_held(s, "big", false, 77, 3);
	assert_int_equal(node_store_get(s, "big", 3, &got, &len), 0);
	assert_int_equal(len, 300000);
	assert_memory_equal(got, big, 300000);
	free(got);
	assert_int_equal(put_ver(s, "tomb", "zombie", 49, 9, &st), -EALREADY);
	assert_int_equal(node_store_put_ver(s, "big", 3, "x", 1, &vb, &st), -EALREADY);
	/* and after a crash and a restart, from the moved records */
	s = crash_reopen(&s);
	expect_held(s, "tomb", true, 50, 9);
	expect_held(s, "big", false, 77, 3);
	assert_int_equal(put_ver(s, "tomb", "zombie", 49, 9, &st), -EALREADY);
	/* many compactions and checkpoints later: the tombstone is still there
	 * (its segment's reuse never dropped it) */
	for (int round = 0; round < 60; round++) {
		char key[16];

		snprintf(key, sizeof(key), "junk%d", round % 8);
		assert_int_equal(node_store_put(s, key, strlen(key), fillv, 60000), 0);
		if (round % 10 == 9) {
			assert_true(node_store_compact(s) >= 0);
			assert_int_equal(node_store_checkpoint(s), 0);
		}
	}
	s = crash_reopen(&s);
	expect_held(s, "tomb", true, 50, 9);
	expect_held(s, "small", false, 60, 9);
	check_value(s, "small", "versioned");
	node_store_close(&s);
	free(big);
	free(fillv);
}

/*
 * A tombstone whose TOMB record was damaged on the drive (one flipped byte,
 * found at replay through its hcrc, or bits in its header): it is still
 * known, key and version, and an older put is still refused.
 */
static void test_damaged_tombstone_record(void **state)
{
	struct node_disk *d = new_disk(8);
	struct node_store *s = open_on(d, true);
	struct node_store_objstat st;
	uint64_t off, size;

	assert_int_equal(put_ver(s, "obj", "v1", 10, 1, &st), 0);
	assert_int_equal(del_ver(s, "obj", 11, 1, &st), 0);
	assert_int_equal(put_ver(s, "after", "x", 12, 1, &st), 0);
	assert_int_equal(node_store_locate(s, "obj", 3, &off, &size), 0);
	d = node_store_abandon(&s);
	node_faultdisk_crash(node_faultdisk_of(d));
	/* a bit of its key: replay fixes the header through its hcrc */
	node_faultdisk_flip(node_faultdisk_of(d), off + REC_HDR_MAX_BYTES + 1, 3);
	s = open_on(d, false);
	expect_held(s, "obj", true, 11, 1);
	assert_int_equal(put_ver(s, "obj", "zombie", 10, 9, &st), -EALREADY);
	check_value(s, "after", "x");
	node_store_close(&s);
}

/* ---- format 3 drives ---- */

/*
 * A format-3 drive: what format 4 writes for unversioned puts and deletes
 * (small and chunked values, checkpoints) is byte for byte what format 3
 * wrote, so a drive written here that way, with its superblocks saying
 * version 3, is one. It opens, is upgraded in place, reads back, takes
 * versioned writes; a crash between the two superblock copies' upgrade is
 * repaired. A drive of a newer format is refused, naming its version.
 */
static void set_sb_version(struct node_disk *d, unsigned copies, uint32_t ver)
{
	uint8_t *blk = aligned_alloc(4096, 4096);

	for (unsigned i = 0; i < 2; i++) {
		if (!(copies & (1u << i)))
			continue;
		node_faultdisk_peek(node_faultdisk_of(d), 4096ull * i, blk, 4096);
		le_put32(blk + 8, ver);
		le_put32(blk + 124, ovl_crc32c(0, blk, 124));
		assert_int_equal(node_disk_sync_io(d, DISK_WRITE, blk, 4096, 4096ull * i), 0);
	}
	assert_int_equal(node_disk_sync_io(d, DISK_FLUSH, NULL, 0, 0), 0);
	free(blk);
}

static void test_upgrade_from_format_3(void **state)
{
	struct node_disk *d = new_disk(7);
	struct node_store *s = open_on(d, true);
	struct node_store_objstat st;
	struct node_store_stats ss;
	struct node_store_opts o;
	uint8_t sb[4096], *chunky = malloc(150000);
	char err[256];
	int ret;

	for (size_t i = 0; i < 150000; i++)
		chunky[i] = (uint8_t)(i ^ (i >> 8));
	assert_int_equal(node_store_put(s, "a", 1, "alpha", 5), 0);
	assert_int_equal(node_store_put(s, "chunky", 6, chunky, 150000), 0);
	assert_int_equal(node_store_put(s, "gone", 4, "x", 1), 0);
	assert_int_equal(node_store_checkpoint(s), 0);
	assert_int_equal(node_store_delete(s, "gone", 4), 0);
	assert_int_equal(node_store_put(s, "b", 1, "beta", 4), 0);
	/* nothing versioned on it: a format-3 drive */
	d = node_store_abandon(&s);
	node_faultdisk_crash(node_faultdisk_of(d));
	set_sb_version(d, 3, 3);
	s = open_on(d, false);
	node_store_stats(s, &ss);
	assert_int_equal(ss.upgraded_from, 3);
	for (unsigned i = 0; i < 2; i++) {
		node_faultdisk_peek(node_faultdisk_of(d), 4096ull * i, sb, sizeof(sb));
		assert_int_equal(le_get32(sb + 8), 4);
	}
	check_value(s, "a", "alpha");
	check_value(s, "b", "beta");
	expect_absent(s, "gone");
	{
		void *got = NULL;
		size_t len = 0;

		assert_int_equal(node_store_get(s, "chunky", 6, &got, &len), 0);
		assert_int_equal(len, 150000);
		assert_memory_equal(got, chunky, 150000);
		free(got);
	}
	/* its records read as version (0, 0): any version beats them */
	expect_held(s, "a", false, 0, 0);
	assert_int_equal(put_ver(s, "a", "versioned", 1, 1, &st), 0);
	assert_int_equal(del_ver(s, "b", 1, 1, &st), 0);
	/* an upgrade cut after copy 0: copy 1 still says 3; repaired */
	d = node_store_abandon(&s);
	node_faultdisk_crash(node_faultdisk_of(d));
	set_sb_version(d, 2, 3);
	s = open_on(d, false);
	node_store_stats(s, &ss);
	assert_true(ss.repaired_superblock);
	assert_int_equal(ss.upgraded_from, 0);
	check_value(s, "a", "versioned");
	expect_held(s, "b", true, 1, 1);
	/* a newer format: refused with its version named, nothing written */
	d = node_store_abandon(&s);
	set_sb_version(d, 3, 5);
	node_store_opts_init(&o);
	o.disk = d;
	ret = node_store_open(&s, &o, err, sizeof(err));
	assert_int_equal(ret, -EPROTONOSUPPORT);
	assert_non_null(strstr(err, "format version 5"));
	assert_non_null(strstr(err, "reads versions 1 to 4"));
	node_faultdisk_peek(node_faultdisk_of(d), 0, sb, sizeof(sb));
	assert_int_equal(le_get32(sb + 8), 5);
	node_disk_destroy(&d);
	free(chunky);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_versions_basic),
		cmocka_unit_test(test_tomb_drop),
		cmocka_unit_test(test_in_flight_order),
		cmocka_unit_test(test_crash_and_checkpoint),
		cmocka_unit_test(test_restart_from_checkpoint),
		cmocka_unit_test(test_compaction_keeps_versions),
		cmocka_unit_test(test_damaged_tombstone_record),
		cmocka_unit_test(test_upgrade_from_format_3),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
