/* The store engine on the fault-injecting disk: API, recovery, bad input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "node.h"
#include "store/record.h"
#include "probe.h"
#include "overlay.h"

#define DISK_BYTES (24u << 20)
#define SEG_BYTES (1u << 20)

static struct node_store *open_on(struct node_disk *d, bool format)
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
	ret = node_store_open(&s, &o, err, sizeof(err));
	if (ret < 0)
		fail_msg("open: %s", err);
	return s;
}

static struct node_disk *new_disk(uint64_t seed)
{
	struct node_disk *d = NULL;

	assert_int_equal(node_faultdisk_new(&d, DISK_BYTES, seed), 0);
	return d;
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 9));
}

static void check_value(struct node_store *s, const char *key, const void *want, size_t n)
{
	void *got = NULL;
	size_t len = 0;

	assert_int_equal(node_store_get(s, key, strlen(key), &got, &len), 0);
	assert_int_equal(len, n);
	if (n)
		assert_memory_equal(got, want, n);
	free(got);
}

static void test_put_get_delete(void **state)
{
	struct node_store *s = open_on(new_disk(1), true);
	uint8_t v[5000];
	void *got = NULL;
	size_t len;
	struct node_store_objstat st;

	fill(v, sizeof(v), 1);
	assert_int_equal(node_store_put(s, "a", 1, v, sizeof(v)), 0);
	assert_int_equal(node_store_put(s, "empty", 5, NULL, 0), 0);
	check_value(s, "a", v, sizeof(v));
	check_value(s, "empty", NULL, 0);
	assert_int_equal(node_store_stat(s, "a", 1, &st), 0);
	assert_int_equal(st.size, sizeof(v));
	assert_int_equal(st.crc, ovl_crc32c(0, v, sizeof(v)));
	/* overwrite */
	fill(v, 100, 2);
	assert_int_equal(node_store_put(s, "a", 1, v, 100), 0);
	check_value(s, "a", v, 100);
	/* delete */
	assert_int_equal(node_store_delete(s, "a", 1), 0);
	assert_int_equal(node_store_get(s, "a", 1, &got, &len), -ENOENT);
	assert_int_equal(node_store_delete(s, "a", 1), -ENOENT);
	assert_int_equal(node_store_stat(s, "nope", 4, &st), -ENOENT);
	node_store_close(&s);
	assert_null(s);
}

static void test_bad_arguments(void **state)
{
	struct node_store *s = open_on(new_disk(2), true);
	char key[NODE_STORE_KEY_MAX + 1];
	uint8_t *big = malloc(SEG_BYTES);

	memset(key, 'k', sizeof(key));
	assert_int_equal(node_store_put(s, key, sizeof(key), "x", 1), -E2BIG);
	assert_non_null(strstr(node_store_errmsg(s), "key of 1025 bytes"));
	assert_int_equal(node_store_put(s, key, 0, "x", 1), -EINVAL);
	assert_int_equal(node_store_put(s, key, NODE_STORE_KEY_MAX, "x", 1), 0);
	/* a value that cannot fit one segment is refused, not split */
	assert_int_equal(node_store_put(s, "big", 3, big, SEG_BYTES), -E2BIG);
	assert_non_null(strstr(node_store_errmsg(s), "segment"));
	assert_int_equal(node_store_put(s, "big", 3, big, (size_t)NODE_STORE_VALUE_MAX + 1), -E2BIG);
	free(big);
	node_store_close(&s);
}

static void test_range_reads(void **state)
{
	struct node_store *s = open_on(new_disk(3), true);
	size_t n = 700000; /* several 64 KiB chunks */
	uint8_t *v = malloc(n), *buf = malloc(n);
	size_t got;
	const uint64_t cases[][2] = { { 0, 1 }, { 1, 65535 }, { 65535, 2 }, { 65536, 65536 },
				      { 123457, 300001 }, { n - 1, 10 }, { n, 5 }, { 0, n } };

	fill(v, n, 3);
	assert_int_equal(node_store_put(s, "r", 1, v, n), 0);
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t off = cases[i][0], len = cases[i][1];
		uint64_t want = off >= n ? 0 : (len > n - off ? n - off : len);

		assert_int_equal(node_store_get_range(s, "r", 1, off, len, buf, &got), 0);
		assert_int_equal(got, want);
		if (want)
			assert_memory_equal(buf, v + off, want);
	}
	free(v);
	free(buf);
	node_store_close(&s);
}

static int collect(void *arg, const void *key, size_t klen)
{
	char *out = arg;

	strncat(out, key, klen);
	strcat(out, ",");
	return 0;
}

static void test_list(void **state)
{
	struct node_store *s = open_on(new_disk(4), true);
	const char *keys[] = { "b/2", "a/1", "b/1", "c", "b/10", "b", "a/2" };
	char out[256] = "";

	for (unsigned i = 0; i < 7; i++)
		assert_int_equal(node_store_put(s, keys[i], strlen(keys[i]), "v", 1), 0);
	assert_int_equal(node_store_list(s, NULL, 0, NULL, 0, 100, collect, out), 7);
	assert_string_equal(out, "a/1,a/2,b,b/1,b/10,b/2,c,");
	out[0] = 0;
	assert_int_equal(node_store_list(s, "b/", 2, NULL, 0, 100, collect, out), 3);
	assert_string_equal(out, "b/1,b/10,b/2,");
	out[0] = 0;
	assert_int_equal(node_store_list(s, "b/", 2, "b/1", 3, 1, collect, out), 1);
	assert_string_equal(out, "b/10,");
	out[0] = 0;
	assert_int_equal(node_store_delete(s, "b/10", 4), 0);
	assert_int_equal(node_store_list(s, "b", 1, "b/1", 3, 10, collect, out), 1);
	assert_string_equal(out, "b/2,");
	out[0] = 0;
	assert_int_equal(node_store_list(s, "zz", 2, NULL, 0, 10, collect, out), 0);
	node_store_close(&s);
}

static void test_reopen_clean_and_many_keys(void **state)
{
	struct node_disk *d = new_disk(5);
	struct node_store *s = open_on(d, true);
	struct node_store_stats st;
	char key[32];
	uint8_t v[64];

	for (int i = 0; i < 20000; i++) {
		snprintf(key, sizeof(key), "key-%06d", i);
		fill(v, sizeof(v), i);
		assert_int_equal(node_store_put_async(s, key, strlen(key), NULL, 0, NULL, NULL), 0);
		if (i % 64 == 63)
			assert_int_equal(node_store_sync(s), 0);
	}
	assert_int_equal(node_store_sync(s), 0);
	for (int i = 0; i < 20000; i += 3) {
		snprintf(key, sizeof(key), "key-%06d", i);
		assert_int_equal(node_store_delete(s, key, strlen(key)), 0);
	}
	node_store_stats(s, &st);
	assert_int_equal(st.objects, 20000 - 6667);
	/* a clean close checkpoints; reopen must not need to replay */
	d = node_store_abandon(&s); /* keep the disk: reopen through a clean path */
	/* abandoning is a power loss: background work the store still had on
	 * the disk (a frontier write, a compaction read) never completes */
	node_faultdisk_crash(node_faultdisk_of(d));
	s = open_on(d, false);
	node_store_close(&s);
	/* the abandon above skipped the checkpoint: that reopen replayed.
	 * 5,000 blocking puts take a block each: on a drive with room to
	 * spare, so that no background compaction writes after the
	 * checkpoint */
	assert_int_equal(node_faultdisk_new(&d, 3 * DISK_BYTES, 6), 0);
	s = open_on(d, true);
	for (int i = 0; i < 5000; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		assert_int_equal(node_store_put(s, key, strlen(key), key, strlen(key)), 0);
	}
	assert_int_equal(node_store_checkpoint(s), 0);
	d = node_store_abandon(&s);
	s = open_on(d, false);
	node_store_stats(s, &st);
	assert_int_equal(st.objects, 5000);
	assert_int_equal(st.recovered_records, 0); /* nothing after the checkpoint */
	for (int i = 0; i < 5000; i += 97) {
		snprintf(key, sizeof(key), "k%d", i);
		check_value(s, key, key, strlen(key));
	}
	node_store_close(&s);
}

/* Stream `n` bytes of v into key in pieces of `piece`, polling whenever the
 * store cannot take more; finish with `crc`. Returns finish's result or
 * the callback's. */
struct sdone {
	bool done;
	int res;
	struct node_store_objstat st;
};

static void sdone_cb(void *arg, int res, const struct node_store_objstat *st)
{
	struct sdone *d = arg;

	d->done = true;
	d->res = res;
	if (st)
		d->st = *st;
}

static int stream_put(struct node_store *s, const char *key, const uint8_t *v, size_t n,
		      size_t piece, uint32_t crc, struct sdone *d)
{
	struct node_store_stream *st = NULL;
	size_t off = 0;
	int ret = node_store_stream_begin(s, key, strlen(key), n, NULL, NULL, &st);

	if (ret < 0)
		return ret;
	while (off < n) {
		size_t k = n - off < piece ? n - off : piece;
		ssize_t w = node_store_stream_write(st, v + off, k);

		if (w < 0) {
			node_store_stream_abort(&st);
			return (int)w;
		}
		off += (size_t)w;
		if ((size_t)w < k)
			assert_int_equal(node_store_poll(s, true), 0);
	}
	memset(d, 0, sizeof(*d));
	ret = node_store_stream_finish(&st, crc, sdone_cb, d);
	assert_null(st);
	if (ret < 0)
		return ret;
	while (!d->done)
		assert_int_equal(node_store_poll(s, true), 0);
	return d->res;
}

static void test_streamed_puts(void **state)
{
	struct node_disk *d = new_disk(11);
	struct node_store *s = open_on(d, true);
	static const size_t sizes[] = { 0, 1, 4000, 4096, 65536, 65537, 200000, 300 << 10, 700 << 10 };
	size_t big = 700 << 10;
	uint8_t *v = malloc(big);
	struct node_store_stream *st = NULL, *st2 = NULL;
	struct node_store_objstat os;
	struct node_store_stats ss;
	struct sdone dn;
	char key[32];
	uint8_t x[100];

	for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		snprintf(key, sizeof(key), "s%u", i);
		fill(v, sizes[i], i);
		/* a small put between them: the log goes on around the regions */
		assert_int_equal(node_store_put(s, "small", 5, key, strlen(key)), 0);
		assert_int_equal(stream_put(s, key, v, sizes[i], 1000 + i * 7777,
					    ovl_crc32c(0, v, sizes[i]), &dn), 0);
		assert_int_equal(dn.st.size, sizes[i]);
		assert_int_equal(dn.st.crc, ovl_crc32c(0, v, sizes[i]));
		check_value(s, key, v, sizes[i]);
		assert_int_equal(node_store_stat(s, key, strlen(key), &os), 0);
		assert_int_equal(os.size, sizes[i]);
		assert_int_equal(os.seq, dn.st.seq);
	}
	/* a range of a streamed large value, across chunks */
	{
		uint8_t r[70000];
		size_t got = 0;

		fill(v, 700 << 10, 8);
		assert_int_equal(node_store_get_range(s, "s8", 2, 60001, sizeof(r), r, &got), 0);
		assert_int_equal(got, sizeof(r));
		assert_memory_equal(r, v + 60001, sizeof(r));
	}
	/* a wrong checksum stores nothing; the old value stays */
	fill(v, 200000, 99);
	assert_int_equal(stream_put(s, "s6", v, 200000, 5000, 0x12345678, &dn), -EBADMSG);
	fill(v, 200000, 6);
	check_value(s, "s6", v, 200000);
	/* too many bytes, too few bytes, too large */
	assert_int_equal(node_store_stream_begin(s, "t", 1, 10, NULL, NULL, &st), 0);
	assert_int_equal(node_store_stream_write(st, x, 11), -EINVAL);
	assert_int_equal(node_store_stream_write(st, x, 5), 5);
	assert_int_equal(node_store_stream_finish(&st, ovl_crc32c(0, x, 5), sdone_cb, &dn), -EINVAL);
	assert_null(st);
	assert_int_equal(node_store_stream_begin(s, "t", 1, SEG_BYTES, NULL, NULL, &st), -E2BIG);
	assert_int_equal(node_store_stream_begin(s, "", 0, 10, NULL, NULL, &st), -EINVAL);
	/* an abort, placed or not, leaves nothing */
	assert_int_equal(node_store_stream_begin(s, "ab1", 3, 300000, NULL, NULL, &st), 0);
	assert_int_equal(node_store_stream_begin(s, "ab2", 3, 300000, NULL, NULL, &st2), 0);
	node_store_stream_abort(&st2); /* before placement */
	assert_int_equal(node_store_sync(s), 0);
	assert_true(node_store_stream_write(st, v, 100000) > 0);
	assert_int_equal(node_store_sync(s), 0);
	node_store_stream_abort(&st); /* with writes done */
	node_store_stream_abort(&st);  /* NULL: nothing */
	assert_int_equal(node_store_sync(s), 0);
	assert_int_equal(node_store_stat(s, "ab1", 3, &os), -ENOENT);
	assert_int_equal(node_store_stat(s, "ab2", 3, &os), -ENOENT);
	/* an open stream across a checkpoint, finished after it */
	fill(v, 300000, 42);
	assert_int_equal(node_store_stream_begin(s, "ck", 2, 300000, NULL, NULL, &st), 0);
	assert_int_equal(node_store_sync(s), 0);
	assert_int_equal(node_store_checkpoint(s), 0);
	for (size_t off = 0; off < 300000;) {
		ssize_t w = node_store_stream_write(st, v + off, 300000 - off);

		assert_true(w >= 0);
		off += (size_t)w;
		if (off < 300000)
			assert_int_equal(node_store_poll(s, true), 0);
	}
	memset(&dn, 0, sizeof(dn));
	assert_int_equal(node_store_stream_finish(&st, ovl_crc32c(0, v, 300000), sdone_cb, &dn), 0);
	assert_int_equal(node_store_sync(s), 0);
	assert_true(dn.done);
	assert_int_equal(dn.res, 0);
	/* replay finds the commits (after the checkpoint) and the checkpoint
	 * the older ones */
	d = node_store_abandon(&s);
	s = open_on(d, false);
	for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		snprintf(key, sizeof(key), "s%u", i);
		fill(v, sizes[i], i);
		check_value(s, key, v, sizes[i]);
	}
	fill(v, 300000, 42);
	check_value(s, "ck", v, 300000);
	assert_int_equal(node_store_stat(s, "ab1", 3, &os), -ENOENT);
	/* compaction moves streamed records like any other */
	for (int round = 0; round < 3; round++) {
		for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
			snprintf(key, sizeof(key), "s%u", i);
			fill(v, sizes[i], i + 100 * round);
			assert_int_equal(stream_put(s, key, v, sizes[i], 65536,
						    ovl_crc32c(0, v, sizes[i]), &dn), 0);
		}
		assert_int_equal(node_store_checkpoint(s), 0);
		assert_int_equal(node_store_checkpoint(s), 0);
		while (node_store_compact(s) == 1)
			;
	}
	node_store_stats(s, &ss);
	assert_true(ss.compactions > 0);
	for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		snprintf(key, sizeof(key), "s%u", i);
		fill(v, sizes[i], i + 200);
		check_value(s, key, v, sizes[i]);
	}
	node_store_close(&s);
	free(v);
}

static void test_full_drive(void **state)
{
	struct node_store *s = open_on(new_disk(7), true);
	uint8_t *v = malloc(100000);
	char key[32];
	int ret = 0, n = 0;
	struct node_store_stats st;

	fill(v, 100000, 7);
	for (n = 0; n < 1000; n++) {
		snprintf(key, sizeof(key), "f%04d", n);
		ret = node_store_put(s, key, strlen(key), v, 100000);
		if (ret < 0)
			break;
	}
	assert_int_equal(ret, -ENOSPC);
	assert_non_null(strstr(node_store_errmsg(s), "is full"));
	assert_true(n > 100);
	/* reads and deletes still work */
	check_value(s, "f0000", v, 100000);
	for (int i = 0; i < n; i += 2) {
		snprintf(key, sizeof(key), "f%04d", i);
		assert_int_equal(node_store_delete(s, key, strlen(key)), 0);
	}
	node_store_stats(s, &st);
	assert_false(st.read_only);
	/* space comes back: the put path checkpoints and compacts */
	int m;

	for (m = 0; m < 1000; m++) {
		snprintf(key, sizeof(key), "g%04d", m);
		ret = node_store_put(s, key, strlen(key), v, 100000);
		if (ret < 0)
			break;
	}
	assert_int_equal(ret, -ENOSPC);
	assert_true(m >= n / 2 - 25);
	check_value(s, "g0000", v, 100000);
	for (int i = 1; i < n; i += 2) {
		snprintf(key, sizeof(key), "f%04d", i);
		check_value(s, key, v, 100000);
	}
	node_store_stats(s, &st);
	assert_true(st.compactions > 0);
	free(v);
	node_store_close(&s);
}

static void test_write_error_goes_read_only(void **state)
{
	struct node_disk *d = new_disk(8);
	struct node_store *s = open_on(d, true);
	struct node_store_stats st;

	assert_int_equal(node_store_put(s, "ok", 2, "1", 1), 0);
	node_faultdisk_fail(node_faultdisk_of(d), DISK_FLUSH, 0, 1, -EIO);
	assert_int_equal(node_store_put(s, "lost", 4, "2", 1), -EROFS);
	node_store_stats(s, &st);
	assert_true(st.read_only);
	assert_non_null(strstr(st.read_only_reason, "fdatasync failed"));
	assert_int_equal(node_store_put(s, "more", 4, "3", 1), -EROFS);
	check_value(s, "ok", "1", 1);
	d = node_store_abandon(&s);
	/* after a restart the unacknowledged put may or may not exist; the
	 * acknowledged one must */
	s = open_on(d, false);
	check_value(s, "ok", "1", 1);
	node_store_close(&s);

	d = new_disk(9);
	s = open_on(d, true);
	node_faultdisk_fail(node_faultdisk_of(d), DISK_WRITE, 0, 1, -EIO);
	assert_int_equal(node_store_put(s, "w", 1, "x", 1), -EROFS);
	node_store_close(&s);
}

/* The drive offset of the put record of `key` (its header starts "SR"). */
static uint64_t find_record(struct node_faultdisk *f, const char *key)
{
	uint8_t probe[64];

	for (uint64_t o = 1 << 20; o < DISK_BYTES; o += 16) {
		node_faultdisk_peek(f, o, probe, sizeof(probe));
		if (memcmp(probe + 40, key, strlen(key)) == 0 && probe[0] == 'S' && probe[1] == 'R')
			return o;
	}
	fail_msg("no record of '%s' on the image", key);
	return 0;
}

static void test_bit_flips_detected(void **state)
{
	struct node_disk *d = new_disk(10);
	struct node_faultdisk *f = node_faultdisk_of(d);
	struct node_store *s = open_on(d, true);
	struct node_store_scrub_report r;
	struct node_store_stats st;
	uint8_t v[3000], probe[64];
	void *got = NULL;
	size_t len;
	uint64_t off = 0;

	fill(v, sizeof(v), 10);
	assert_int_equal(node_store_put(s, "victim", 6, v, sizeof(v)), 0);
	assert_int_equal(node_store_put(s, "header", 6, v, sizeof(v)), 0);
	assert_int_equal(node_store_put(s, "fine", 4, v, sizeof(v)), 0);
	/* find the records on the image and flip a value bit and a header bit */
	off = find_record(f, "victim");
	node_faultdisk_flip(f, off + 40 + 6 + 1000, 3);
	for (uint64_t o = off; o < off + 8192; o += 16) {
		node_faultdisk_peek(f, o, probe, sizeof(probe));
		if (memcmp(probe + 40, "header", 6) == 0 && probe[0] == 'S') {
			node_faultdisk_flip(f, o + 9, 0); /* vlen */
			break;
		}
	}
	assert_int_equal(node_store_get(s, "victim", 6, &got, &len), -EIO);
	assert_int_equal(node_store_get(s, "header", 6, &got, &len), -EIO);
	check_value(s, "fine", v, sizeof(v));
	assert_int_equal(node_store_scrub(s, UINT64_MAX, &r), 0);
	assert_int_equal(r.records, 3);
	assert_int_equal(r.errors, 2);
	assert_true(r.wrapped);
	node_store_stats(s, &st);
	/* two damaged records, each counted once when first found; the scrub
	 * met their keys already marked: refused reads, not new damage */
	assert_int_equal(st.checksum_errors, 2);
	assert_int_equal(st.damaged_objects, 2);
	assert_int_equal(st.damaged_reads, 4);
	assert_int_equal(node_store_get(s, "victim", 6, &got, &len), -EIO);
	node_store_stats(s, &st);
	assert_int_equal(st.checksum_errors, 2);
	assert_int_equal(st.damaged_reads, 5);
	assert_int_equal(st.read_errors, 0);
	node_store_close(&s);
}

/*
 * Damage a read finds is recorded before the read answers: a DAMAGE record
 * marks the key and the count goes into the flush frontier, so a power loss
 * right after the answer keeps both. Three cases: the damaged record before
 * the checkpoint (only the DAMAGE record tells recovery), in the replayed
 * region (recovery finds it too: still counted once), and damage that went
 * away by the restart (a transient fault: the key stays marked, by
 * design). A put clears the mark; the count stays.
 */
static void read_damage_case(int variant)
{
	struct node_disk *d = new_disk(40 + (uint64_t)variant);
	struct node_faultdisk *f = node_faultdisk_of(d);
	struct node_store *s = open_on(d, true);
	struct node_store_stats st;
	struct node_store_objstat os;
	uint8_t v[3000], w[5000];
	uint64_t off, voff, size;
	void *got = NULL;
	size_t len;

	fill(v, sizeof(v), 41);
	fill(w, sizeof(w), 42);
	assert_int_equal(node_store_put(s, "before", 6, v, sizeof(v)), 0);
	assert_int_equal(node_store_put(s, "victim", 6, w, sizeof(w)), 0);
	assert_int_equal(node_store_put(s, "after", 5, v, sizeof(v)), 0);
	if (variant != 1)
		assert_int_equal(node_store_checkpoint(s), 0); /* the victim is before P0 */
	assert_int_equal(node_store_locate(s, "victim", 6, &off, &size), 0);
	voff = off + 40 + 6 + 2500;
	node_faultdisk_flip(f, voff, 5);
	assert_int_equal(node_store_get(s, "victim", 6, &got, &len), -EIO);
	assert_non_null(strstr(node_store_errmsg(s), "checksum mismatch"));
	assert_int_equal(node_store_stat(s, "victim", 6, &os), -EIO);
	node_store_stats(s, &st);
	assert_int_equal(st.checksum_errors, 1);
	assert_int_equal(st.damaged_objects, 1);
	assert_int_equal(st.damaged_reads, 2);
	/* power loss right after the answer: nothing more reaches the drive */
	d = node_store_abandon(&s);
	node_faultdisk_crash(f);
	if (variant == 2)
		node_faultdisk_flip(f, voff, 5); /* the damage is gone */
	s = open_on(d, false);
	node_store_stats(s, &st);
	assert_int_equal(st.checksum_errors + st.damaged_records, 1);
	assert_int_equal(st.damaged_objects, 1);
	assert_int_equal(node_store_get(s, "victim", 6, &got, &len), -EIO);
	assert_int_equal(node_store_locate(s, "victim", 6, &off, &size), -EIO);
	check_value(s, "before", v, sizeof(v));
	check_value(s, "after", v, sizeof(v));
	/* re-reading counts nothing new, and a checkpoint carries it all */
	assert_int_equal(node_store_checkpoint(s), 0);
	d = node_store_abandon(&s);
	node_faultdisk_crash(f);
	s = open_on(d, false);
	assert_int_equal(node_store_get(s, "victim", 6, &got, &len), -EIO);
	node_store_stats(s, &st);
	assert_int_equal(st.checksum_errors + st.damaged_records, 1);
	assert_int_equal(st.damaged_objects, 1);
	assert_int_equal(st.damaged_reads, 1);
	/* a put replaces the damaged version; the count stays */
	assert_int_equal(node_store_put(s, "victim", 6, v, sizeof(v)), 0);
	check_value(s, "victim", v, sizeof(v));
	d = node_store_abandon(&s);
	node_faultdisk_crash(f);
	s = open_on(d, false);
	check_value(s, "victim", v, sizeof(v));
	node_store_stats(s, &st);
	assert_int_equal(st.checksum_errors + st.damaged_records, 1);
	assert_int_equal(st.damaged_objects, 0);
	node_store_close(&s);
}

static void test_read_damage_survives_crash(void **state)
{
	for (int variant = 0; variant < 3; variant++)
		read_damage_case(variant);
}

/* Reads through the page cache that come back stale are read again from the
 * drive: the caller gets the right bytes, and no checksum error is counted. */
static void test_stale_page_cache(void **state)
{
	struct node_disk *d = new_disk(12);
	struct node_faultdisk *f = node_faultdisk_of(d);
	struct node_store *s = open_on(d, true);
	struct node_store_stats st;
	size_t n = 700000, got;
	uint8_t *v = malloc(n), *buf = malloc(n), small[3000];

	fill(v, n, 12);
	fill(small, sizeof(small), 13);
	assert_int_equal(node_store_put(s, "big", 3, v, n), 0);
	assert_int_equal(node_store_put(s, "small", 5, small, sizeof(small)), 0);
	/* a whole small value */
	node_faultdisk_stale_cache(f, 1);
	check_value(s, "small", small, sizeof(small));
	node_store_stats(s, &st);
	assert_int_equal(st.cache_rereads, 1);
	/* a range of a large value: the header read and the chunk read both
	 * come back stale */
	node_faultdisk_stale_cache(f, 2);
	assert_int_equal(node_store_get_range(s, "big", 3, 123457, 300001, buf, &got), 0);
	assert_int_equal(got, 300001);
	assert_memory_equal(buf, v + 123457, got);
	node_store_stats(s, &st);
	assert_int_equal(st.cache_rereads, 3);
	assert_int_equal(st.checksum_errors, 0);
	/* damage on the drive itself is still an error after the re-read */
	{
		uint64_t off = find_record(f, "small");
		void *g = NULL;
		size_t len;

		node_faultdisk_flip(f, off + 40 + 5 + 100, 1);
		node_faultdisk_stale_cache(f, 1);
		assert_int_equal(node_store_get(s, "small", 5, &g, &len), -EIO);
		node_store_stats(s, &st);
		assert_int_equal(st.cache_rereads, 4);
		assert_int_equal(st.checksum_errors, 1);
	}
	d = node_store_abandon(&s);
	/* with page-cache reads off, every read is direct: nothing to re-read */
	{
		struct node_store_opts o;
		char err[256];

		node_faultdisk_reseed(f, 13);
		node_store_opts_init(&o);
		o.disk = d;
		o.page_cache_reads = false;
		assert_int_equal(node_store_open(&s, &o, err, sizeof(err)), 0);
		node_faultdisk_stale_cache(f, 1);
		assert_int_equal(node_store_get_range(s, "big", 3, 0, n, buf, &got), 0);
		assert_int_equal(got, n);
		assert_memory_equal(buf, v, n);
		node_store_stats(s, &st);
		assert_int_equal(st.cache_rereads, 0);
		node_store_close(&s);
	}
	free(v);
	free(buf);
}

/* On a real drive file: values appended into a block that was already read
 * through the page cache are seen (direct writes drop the cached pages). */
static void test_page_cache_coherent(void **state)
{
	char path[] = "/tmp/shelf-test-pcache-XXXXXX", err[256];
	struct node_store_opts o;
	struct node_store *s = NULL;
	struct node_store_stats st;
	uint8_t v[100];
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	close(fd);
	unlink(path);
	node_store_opts_init(&o);
	o.path = path;
	o.create_size = 64u << 20;
	o.format = true;
	o.segment_bytes = SEG_BYTES;
	if (node_store_open(&s, &o, err, sizeof(err)) < 0) {
		unlink(path);
		skip(); /* no O_DIRECT on this file system */
	}
	for (int i = 0; i < 200; i++) {
		char key[16];

		snprintf(key, sizeof(key), "k%d", i);
		fill(v, sizeof(v), (unsigned)i);
		assert_int_equal(node_store_put(s, key, strlen(key), v, sizeof(v)), 0);
		/* every earlier value, read while its block is being appended to */
		for (int j = i; j >= 0 && j > i - 8; j--) {
			snprintf(key, sizeof(key), "k%d", j);
			fill(v, sizeof(v), (unsigned)j);
			check_value(s, key, v, sizeof(v));
		}
	}
	node_store_stats(s, &st);
	assert_int_equal(st.checksum_errors, 0);
	assert_int_equal(st.cache_rereads, 0); /* no stale page was ever read */
	assert_true(st.gets >= 200);
	node_store_close(&s);
	unlink(path);
}

/*
 * Compaction of 64 MiB records, on a real drive file: each is moved in
 * pieces (compact_piece_bytes) through a streamed region, so the memory
 * compaction holds stays under node_store_compact_mem_max() (a few MiB)
 * while it moves 256 MiB; every record reads back exactly, before and
 * after a restart.
 */
static void test_compact_large_records(void **state)
{
	char path[] = "/tmp/shelf-test-bigcompact-XXXXXX", err[256];
	const size_t big = NODE_STORE_VALUE_MAX;
	const char *keep[4] = { "A", "B", "C", "D" }, *drop[3] = { "X1", "X2", "X3" };
	struct node_store_opts o;
	struct node_store *s = NULL;
	struct node_store_stats st;
	struct node_store_objstat os;
	uint32_t crc[4];
	uint8_t *v = malloc(big);
	uint64_t off, size, before[4];
	void *got = NULL;
	size_t len;
	int fd = mkstemp(path);

	assert_non_null(v);
	assert_true(fd >= 0);
	close(fd);
	unlink(path);
	node_store_opts_init(&o);
	o.path = path;
	o.create_size = (1u << 20) + 5 * (512ull << 20);
	o.format = true;
	o.segment_bytes = 512u << 20;
	if (node_store_open(&s, &o, err, sizeof(err)) < 0) {
		unlink(path);
		free(v);
		print_message("skipped: %s\n", err);
		skip(); /* no io_uring or no O_DIRECT here */
	}
	/* A X1 B X2 C X3 D in the first segment, then the X's deleted */
	for (int i = 0; i < 7; i++) {
		const char *k = i % 2 ? drop[i / 2] : keep[i / 2];

		fill(v, big, 100 + (unsigned)i);
		if (i % 2 == 0)
			crc[i / 2] = ovl_crc32c(0, v, big);
		assert_int_equal(node_store_put(s, k, strlen(k), v, big), 0);
	}
	for (int i = 0; i < 3; i++)
		assert_int_equal(node_store_delete(s, drop[i], strlen(drop[i])), 0);
	/* one more does not fit: the log moves on to segment 1 */
	fill(v, big, 107);
	assert_int_equal(node_store_put(s, "E", 1, v, big), 0);
	assert_int_equal(node_store_locate(s, "E", 1, &off, &size), 0);
	assert_true(off >= (1u << 20) + (512u << 20));
	for (int i = 0; i < 4; i++) {
		assert_int_equal(node_store_locate(s, keep[i], 1, &before[i], &size), 0);
		assert_true(before[i] < (1u << 20) + (512u << 20)); /* all in segment 0 */
	}
	assert_int_equal(node_store_checkpoint(s), 0);
	assert_int_equal(node_store_checkpoint(s), 0);
	node_store_stats(s, &st);
	assert_int_equal(st.compaction_bytes_peak, 0);
	assert_int_equal(node_store_compact(s), 1);
	node_store_stats(s, &st);
	print_message("compaction moved %" PRIu64 " records of 64 MiB holding at most %" PRIu64 " bytes (bound %zu)\n",
		      st.relocations_streamed, st.compaction_bytes_peak, node_store_compact_mem_max(s));
	assert_int_equal(st.relocations_streamed, 4);
	assert_int_equal(st.relocations, 4);
	assert_int_equal(st.compaction_bytes, 0);
	assert_true(st.compaction_bytes_peak > 0);
	assert_true(st.compaction_bytes_peak <= node_store_compact_mem_max(s));
	assert_true(node_store_compact_mem_max(s) <= (5u << 20));
	for (int i = 0; i < 4; i++) {
		assert_int_equal(node_store_locate(s, keep[i], 1, &off, &size), 0);
		assert_true(off != before[i]); /* moved */
		assert_int_equal(node_store_stat(s, keep[i], 1, &os), 0);
		assert_int_equal(os.size, big);
		assert_int_equal(os.crc, crc[i]);
	}
	fill(v, big, 102);
	assert_int_equal(node_store_get(s, "B", 1, &got, &len), 0);
	assert_int_equal(len, big);
	assert_memory_equal(got, v, big);
	free(got);
	node_store_close(&s);
	o.format = false;
	assert_int_equal(node_store_open(&s, &o, err, sizeof(err)), 0);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(node_store_locate(s, keep[i], 1, &off, &size), 0);
		assert_true(off != before[i]);
		assert_int_equal(node_store_get(s, keep[i], 1, &got, &len), 0);
		assert_int_equal(len, big);
		assert_int_equal(ovl_crc32c(0, got, len), crc[i]);
		free(got);
	}
	for (int i = 0; i < 3; i++)
		assert_int_equal(node_store_get(s, drop[i], strlen(drop[i]), &got, &len), -ENOENT);
	node_store_close(&s);
	unlink(path);
	free(v);
}

static int write_image(struct node_disk *d, const char *path)
{
	uint8_t *buf = malloc(DISK_BYTES);
	FILE *f = fopen(path, "w");

	node_faultdisk_peek(node_faultdisk_of(d), 0, buf, DISK_BYTES);
	fwrite(buf, 1, DISK_BYTES, f);
	fclose(f);
	free(buf);
	return 0;
}

/* A clean close after a recovery checkpoints, even with no new writes: the
 * next open replays nothing (it replayed the same records at every start). */
static void test_close_after_recovery_checkpoints(void **state)
{
	char path[] = "/tmp/shelf-test-rclose-XXXXXX", err[256], key[16];
	struct node_disk *d = new_disk(21);
	struct node_store *s = open_on(d, true);
	struct node_store_opts o;
	struct node_store_stats st;
	uint8_t v[300];
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	close(fd);
	for (int i = 0; i < 40; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		fill(v, sizeof(v), (unsigned)i);
		assert_int_equal(node_store_put(s, key, strlen(key), v, sizeof(v)), 0);
	}
	d = node_store_abandon(&s);
	node_faultdisk_crash(node_faultdisk_of(d));
	write_image(d, path);
	node_disk_destroy(&d);
	for (int pass = 0; pass < 3; pass++) {
		node_store_opts_init(&o);
		o.path = path;
		o.segment_bytes = SEG_BYTES;
		if (node_store_open(&s, &o, err, sizeof(err)) < 0) {
			unlink(path);
			if (pass == 0)
				skip(); /* no O_DIRECT on this file system */
			fail_msg("reopen %d: %s", pass, err);
		}
		node_store_stats(s, &st);
		assert_int_equal(st.objects, 40);
		/* the first open replays the 40 puts; the clean close before
		 * each later one checkpointed them */
		assert_int_equal(st.recovered_records, pass == 0 ? 40 : 0);
		for (int i = 0; i < 40; i += 7) {
			snprintf(key, sizeof(key), "k%d", i);
			fill(v, sizeof(v), (unsigned)i);
			check_value(s, key, v, sizeof(v));
		}
		node_store_close(&s);
	}
	unlink(path);
}

static int try_open_file(const char *path, bool format, char *err)
{
	struct node_store_opts o;
	struct node_store *s = NULL;
	int ret;

	node_store_opts_init(&o);
	o.path = path;
	o.format = format;
	o.segment_bytes = SEG_BYTES;
	ret = node_store_open(&s, &o, err, 256);
	node_store_close(&s);
	return ret;
}

static void test_bad_drives(void **state)
{
	char dir[] = "/tmp/shelf-store-XXXXXX", path[512], err[256], why[160];
	struct node_disk *d = NULL;
	struct node_store *s = NULL;
	int fd;
	uint8_t junk[4096];

	if (!test_have_io_uring(why, sizeof(why))) {
		print_message("%s\n", why); /* the drive opens with the io_uring backend */
		skip();
	}
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/drive", dir);
	/* missing file, no create: clear error */
	assert_int_equal(try_open_file(path, true, err), -ENOENT);
	assert_non_null(strstr(err, "cannot open drive"));
	/* empty file */
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	close(fd);
	assert_int_equal(try_open_file(path, true, err), -ENOSPC);
	assert_non_null(strstr(err, "too small"));
	/* too small for four segments */
	assert_int_equal(truncate(path, 2 << 20), 0);
	assert_int_equal(try_open_file(path, true, err), -ENOSPC);
	/* unformatted without --format */
	assert_int_equal(truncate(path, DISK_BYTES), 0);
	assert_int_equal(try_open_file(path, false, err), -ENODEV);
	assert_non_null(strstr(err, "format it first"));
	/* another format: refused, not overwritten */
	memset(junk, 0, sizeof(junk));
	memcpy(junk, "XFSB", 4);
	fd = open(path, O_WRONLY);
	assert_int_equal(pwrite(fd, junk, sizeof(junk), 0), sizeof(junk));
	close(fd);
	assert_int_equal(try_open_file(path, true, err), -EUCLEAN);
	assert_non_null(strstr(err, "not a shelf store"));
	fd = open(path, O_RDONLY);
	assert_int_equal(pread(fd, junk, 4, 0), 4);
	close(fd);
	assert_memory_equal(junk, "XFSB", 4);

	/* a real store image, then damage */
	d = new_disk(11);
	s = open_on(d, true);
	assert_int_equal(node_store_put(s, "k", 1, "v", 1), 0);
	node_store_close(&s);
	d = new_disk(11);
	s = open_on(d, true);
	assert_int_equal(node_store_put(s, "k", 1, "v", 1), 0);
	d = node_store_abandon(&s);
	write_image(d, path);
	node_disk_destroy(&d);
	assert_int_equal(try_open_file(path, false, err), 0);
	/* corrupt superblock copy 0: repaired from copy 1 */
	fd = open(path, O_WRONLY);
	assert_int_equal(pwrite(fd, "garbage!", 8, 40), 8);
	close(fd);
	{
		struct node_store_opts o;
		struct node_store_stats st;

		node_store_opts_init(&o);
		o.path = path;
		assert_int_equal(node_store_open(&s, &o, err, sizeof(err)), 0);
		node_store_stats(s, &st);
		assert_true(st.repaired_superblock);
		node_store_close(&s);
		assert_int_equal(node_store_open(&s, &o, err, sizeof(err)), 0);
		node_store_stats(s, &st);
		assert_false(st.repaired_superblock);
		node_store_close(&s);
	}
	/* both copies corrupt: refused */
	fd = open(path, O_WRONLY);
	assert_int_equal(pwrite(fd, "garbage!", 8, 40), 8);
	assert_int_equal(pwrite(fd, "garbage!", 8, 4096 + 40), 8);
	close(fd);
	assert_int_equal(try_open_file(path, true, err), -EUCLEAN);
	assert_non_null(strstr(err, "both superblock copies"));
	/* another version */
	fd = open(path, O_WRONLY);
	memset(junk, 0, sizeof(junk));
	memcpy(junk, "SHELFST9", 8);
	junk[8] = 9;
	{
		uint32_t c = ovl_crc32c(0, junk, 124);

		memcpy(junk + 124, &c, 4);
	}
	assert_int_equal(pwrite(fd, junk, 4096, 0), 4096);
	assert_int_equal(pwrite(fd, junk, 4096, 4096), 4096);
	close(fd);
	assert_int_equal(try_open_file(path, true, err), -EPROTONOSUPPORT);
	assert_non_null(strstr(err, "format version"));
	unlink(path);
	rmdir(dir);
}

/* ---- stale records of a discarded tail; checkpoint damage; upgrade ---- */

/* The crashed life's records were never acknowledged: forget the flush
 * frontier that covered them (as if the crash came before it was
 * written). */
static void forget_frontier(struct node_faultdisk *f)
{
	node_faultdisk_zero(f, 16384, 8192);
}

static void expect_absent(struct node_store *s, const char *key)
{
	void *got = NULL;
	size_t len = 0;
	int ret = node_store_get(s, key, strlen(key), &got, &len);

	free(got);
	if (ret != -ENOENT)
		fail_msg("'%s' answers %d (%zu bytes): it was never acknowledged", key, ret, len);
}

/*
 * A torn tail is discarded, the new life reuses its space, then damage
 * destroys the new life's first records: the search for the next record
 * (resync) must not land on a record left from the discarded tail. Before
 * sequence numbers jumped at every recovery, the stale record had the
 * very sequence number the log expected there and was replayed: an
 * object never acknowledged appeared.
 */
static void test_stale_tail_after_resync(void **state)
{
	struct node_disk *d = new_disk(61);
	struct node_faultdisk *f = node_faultdisk_of(d);
	struct node_store *s = open_on(d, true);
	struct node_store_stats st;
	uint8_t a[300], t[9000];
	uint64_t toff, tsize, coff, csize, voff, vsize;
	void *got = NULL;
	size_t len;

	fill(a, sizeof(a), 1);
	fill(t, sizeof(t), 2);
	assert_int_equal(node_store_put(s, "a", 1, a, sizeof(a)), 0);
	assert_int_equal(node_store_put(s, "b", 1, a, sizeof(a)), 0);
	/* one batch: t spans three blocks, v lies after it in the third */
	assert_int_equal(node_store_put_async(s, "t", 1, t, sizeof(t), NULL, NULL), 0);
	assert_int_equal(node_store_put_async(s, "v", 1, "STALE", 5, NULL, NULL), 0);
	assert_int_equal(node_store_sync(s), 0);
	assert_int_equal(node_store_locate(s, "t", 1, &toff, &tsize), 0);
	assert_int_equal(node_store_locate(s, "v", 1, &voff, &vsize), 0);
	assert_true(toff % 4096 == 0 && voff / 4096 > toff / 4096);
	/* the crash: t torn (a value byte), neither acknowledged */
	d = node_store_abandon(&s);
	node_faultdisk_crash(f);
	forget_frontier(f);
	node_faultdisk_flip(f, toff + 41 + 5000, 2);
	s = open_on(d, false);
	expect_absent(s, "t");
	expect_absent(s, "v");
	check_value(s, "b", a, sizeof(a));
	/* the new life: c and d in one batch, in t's first block */
	assert_int_equal(node_store_put_async(s, "c", 1, "C", 1, NULL, NULL), 0);
	assert_int_equal(node_store_put_async(s, "d", 1, "D", 1, NULL, NULL), 0);
	assert_int_equal(node_store_sync(s), 0);
	assert_int_equal(node_store_locate(s, "c", 1, &coff, &csize), 0);
	assert_int_equal(coff, toff);
	d = node_store_abandon(&s);
	node_faultdisk_crash(f);
	/* the medium loses that block: c's and d's headers are destroyed */
	node_faultdisk_zero(f, coff, 4096);
	s = open_on(d, false);
	expect_absent(s, "v");
	expect_absent(s, "t");
	check_value(s, "a", a, sizeof(a));
	check_value(s, "b", a, sizeof(a));
	/* c and d: lost with their headers (FORMAT.md §4, "Limits") */
	for (const char *k = "c"; *k <= 'd'; k = *k == 'c' ? "d" : "e") {
		int ret = node_store_get(s, k, 1, &got, &len);

		free(got);
		got = NULL;
		assert_true(ret == -ENOENT || ret == -EIO);
	}
	node_store_stats(s, &st);
	assert_true(st.damaged_records >= 1);
	/* and the store goes on */
	assert_int_equal(node_store_put(s, "e", 1, a, sizeof(a)), 0);
	d = node_store_abandon(&s);
	node_faultdisk_crash(f);
	s = open_on(d, false);
	check_value(s, "e", a, sizeof(a));
	check_value(s, "a", a, sizeof(a));
	expect_absent(s, "v");
	node_store_close(&s);
}

/*
 * The same from the other side: the torn record is mid-block (its header
 * whole, its value torn), right after a kept record of its batch; the new
 * life's first record, at the next block, is destroyed. The torn record
 * has the expected place, chain and sequence number, but was never
 * acknowledged: it must not be taken for a damaged durable record (that
 * marked an acknowledged key damaged, or brought back an older version).
 */
static void test_stale_torn_record_mid_block(void **state)
{
	struct node_disk *d = new_disk(62);
	struct node_faultdisk *f = node_faultdisk_of(d);
	struct node_store *s = open_on(d, true);
	uint8_t k1[200], k2[2500];
	uint64_t toff, tsize, coff, csize;

	fill(k1, sizeof(k1), 3);
	fill(k2, sizeof(k2), 4);
	assert_int_equal(node_store_put(s, "k", 1, k1, sizeof(k1)), 0);
	/* one batch: b (kept), then k's overwrite, torn */
	assert_int_equal(node_store_put_async(s, "b", 1, "B", 1, NULL, NULL), 0);
	assert_int_equal(node_store_put_async(s, "k", 1, k2, sizeof(k2), NULL, NULL), 0);
	assert_int_equal(node_store_sync(s), 0);
	assert_int_equal(node_store_locate(s, "k", 1, &toff, &tsize), 0);
	assert_true(toff % 4096 != 0);
	d = node_store_abandon(&s);
	node_faultdisk_crash(f);
	forget_frontier(f);
	node_faultdisk_flip(f, toff + 41 + 2000, 6);
	s = open_on(d, false);
	check_value(s, "k", k1, sizeof(k1));
	check_value(s, "b", "B", 1);
	assert_int_equal(node_store_put(s, "c", 1, "C", 1), 0);
	assert_int_equal(node_store_locate(s, "c", 1, &coff, &csize), 0);
	assert_int_equal(coff, (toff + 4095) / 4096 * 4096);
	d = node_store_abandon(&s);
	node_faultdisk_crash(f);
	node_faultdisk_zero(f, coff, 4096);
	s = open_on(d, false);
	/* k holds its acknowledged version: neither damaged nor the torn one */
	check_value(s, "k", k1, sizeof(k1));
	check_value(s, "b", "B", 1);
	node_store_close(&s);
}

/* A pointer block's END record offset (bytes 36..43), and its generation. */
static uint64_t ptr_end(struct node_faultdisk *f, unsigned block, uint64_t *gen)
{
	uint8_t p[64];
	uint64_t e = 0, g = 0;

	node_faultdisk_peek(f, 4096 * (uint64_t)block, p, sizeof(p));
	for (int i = 7; i >= 0; i--) {
		e = e << 8 | p[36 + i];
		g = g << 8 | p[8 + i];
	}
	if (gen)
		*gen = memcmp(p, "SHELFCP1", 8) == 0 ? g : 0;
	return e;
}

static struct node_store *ckpt_store(struct node_disk *d, uint8_t *v, size_t n, unsigned *newest)
{
	struct node_store *s = open_on(d, true);
	uint64_t g2, g3;
	char key[16];

	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < 20; i++) {
			snprintf(key, sizeof(key), "k%d", i);
			fill(v, n, (unsigned)(i + 100 * round));
			assert_int_equal(node_store_put(s, key, strlen(key), v, n), 0);
		}
		assert_int_equal(node_store_checkpoint(s), 0);
	}
	ptr_end(node_faultdisk_of(d), 2, &g2);
	ptr_end(node_faultdisk_of(d), 3, &g3);
	*newest = g3 > g2 ? 3 : 2;
	return s;
}

static void check_round(struct node_store *s, uint8_t *v, size_t n, unsigned round)
{
	char key[16];

	for (int i = 0; i < 20; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		fill(v, n, (unsigned)(i + 100 * (int)round));
		check_value(s, key, v, n);
	}
}

/*
 * Checkpoint damage: the newest checkpoint's END record damaged, then,
 * after a restart, the other checkpoint's pointer slot and its mirror
 * destroyed (seed 3845 of test_crash, with LONG=1, found this: recovery
 * fell back to the older checkpoint and left the damaged one in place,
 * so the second damage left none). A slot with a damaged byte is read
 * from its mirror. Both truly destroyed: refused, with what to do.
 */
static void test_checkpoint_damage(void **state)
{
	struct node_disk *d = new_disk(63);
	struct node_faultdisk *f = node_faultdisk_of(d);
	struct node_store_stats st;
	struct node_store_opts o;
	struct node_store *s = NULL;
	uint8_t v[700];
	unsigned newest, older, nn, no;
	uint64_t g[2];
	char err[512];

	/* 1: newest END damaged; open falls back and replaces it */
	s = ckpt_store(d, v, sizeof(v), &newest);
	older = newest == 2 ? 3 : 2;
	d = node_store_abandon(&s);
	node_faultdisk_crash(f);
	node_faultdisk_flip(f, ptr_end(f, newest, NULL) + 20, 1);
	s = open_on(d, false);
	node_store_stats(s, &st);
	assert_true(st.checkpoint_fallback);
	assert_true(st.checkpoint_repaired);
	check_round(s, v, sizeof(v), 1);
	d = node_store_abandon(&s);
	node_faultdisk_crash(f);
	/* the checkpoint open took is in the damaged one's slot: destroying
	 * the other slot (and its mirror) leaves it */
	node_faultdisk_zero(f, 4096 * (uint64_t)older, 4096);
	node_faultdisk_zero(f, 4096 * (uint64_t)(older + 4), 4096);
	s = open_on(d, false);
	node_store_stats(s, &st);
	assert_false(st.checkpoint_fallback);
	assert_true(st.checkpoint_repaired);
	check_round(s, v, sizeof(v), 1);
	node_store_close(&s);

	/* 2: a flipped byte in the newest slot, and the older checkpoint's END
	 * damaged at the same time: the mirror still names the newest */
	d = new_disk(64);
	f = node_faultdisk_of(d);
	s = ckpt_store(d, v, sizeof(v), &newest);
	older = newest == 2 ? 3 : 2;
	d = node_store_abandon(&s);
	node_faultdisk_crash(f);
	node_faultdisk_flip(f, 4096 * (uint64_t)newest + 17, 4);
	node_faultdisk_flip(f, ptr_end(f, older, NULL) + 20, 1);
	s = open_on(d, false);
	node_store_stats(s, &st);
	assert_false(st.checkpoint_fallback);
	assert_true(st.checkpoint_repaired); /* the slot, from its mirror */
	check_round(s, v, sizeof(v), 1);
	/* the older checkpoint's damaged END was seen at open, and replaced:
	 * damage to the newest one now still leaves one */
	d = node_store_abandon(&s);
	node_faultdisk_crash(f);
	ptr_end(f, 2, &g[0]);
	ptr_end(f, 3, &g[1]);
	node_faultdisk_flip(f, ptr_end(f, g[1] > g[0] ? 3 : 2, NULL) + 20, 1);
	s = open_on(d, false);
	node_store_stats(s, &st);
	assert_true(st.checkpoint_fallback);
	check_round(s, v, sizeof(v), 1);
	node_store_close(&s);

	/* 3: both destroyed (the newest's END, the older's slot and mirror):
	 * refused, nothing written, and the message says what to do */
	d = new_disk(65);
	f = node_faultdisk_of(d);
	s = ckpt_store(d, v, sizeof(v), &newest);
	older = newest == 2 ? 3 : 2;
	d = node_store_abandon(&s);
	node_faultdisk_crash(f);
	node_faultdisk_flip(f, ptr_end(f, newest, NULL) + 20, 1);
	node_faultdisk_zero(f, 4096 * (uint64_t)older, 4096);
	node_faultdisk_zero(f, 4096 * (uint64_t)(older + 4), 4096);
	nn = (unsigned)node_faultdisk_writes(f);
	node_store_opts_init(&o);
	o.disk = d;
	o.segment_bytes = SEG_BYTES;
	assert_int_equal(node_store_open(&s, &o, err, sizeof(err)), -EUCLEAN);
	assert_null(s);
	no = (unsigned)node_faultdisk_writes(f);
	assert_int_equal(no, nn);
	assert_non_null(strstr(err, "no usable checkpoint"));
	assert_non_null(strstr(err, "pointer damaged"));
	assert_non_null(strstr(err, "fails its checksums"));
	assert_non_null(strstr(err, "nothing was written"));
	assert_non_null(strstr(err, "--format"));
	node_disk_destroy(&d);
}

/* A record of a version 2 drive: header, key, value, padding. */
static size_t v2_record(uint8_t *out, uint8_t type, const char *key, const void *val, size_t vlen,
			uint32_t prev, uint64_t seq, uint32_t *hcrc)
{
	struct rec_hdr h = { 0 };
	size_t klen = strlen(key), n = rec_size(klen, vlen);

	memset(out, 0, n);
	h.type = type;
	h.klen = (uint16_t)klen;
	h.vlen = (uint32_t)vlen;
	h.prev = prev;
	h.seq = seq;
	h.vcrc = ovl_crc32c(0, val, vlen);
	rec_hdr_pack(&h, out);
	h.hcrc = rec_hcrc(out, key, klen, NULL, 0);
	rec_hdr_pack(&h, out);
	memcpy(out + REC_HDR_BYTES, key, klen);
	memcpy(out + REC_HDR_BYTES + klen, val, vlen);
	*hcrc = h.hcrc;
	return n;
}

/*
 * A version 2 drive (written here byte by byte as a version 2 build wrote
 * it: sequence numbers from 1, no jumps, no pointer mirrors) opens, reads
 * back, and is upgraded to version 3; a crash in the middle of the
 * upgrade (copy 0 rewritten, copy 1 not) is repaired.
 */
static void test_upgrade_from_version_2(void **state)
{
	struct node_disk *d = new_disk(66);
	struct node_faultdisk *f = node_faultdisk_of(d);
	struct node_store_stats st;
	struct node_store *s = NULL;
	uint8_t *b = aligned_alloc(4096, 4 * 4096), uuid[16], sb[4096], *blk = aligned_alloc(4096, 4096);
	uint32_t prev, h1;
	size_t at = 0;

	for (int i = 0; i < 16; i++)
		uuid[i] = (uint8_t)(i * 37 + 5);
	/* superblock, version 2 */
	memset(sb, 0, sizeof(sb));
	memcpy(sb, "SHELFST1", 8);
	le_put32(sb + 8, 2);
	memcpy(sb + 16, uuid, 16);
	le_put64(sb + 32, SEG_BYTES);
	le_put32(sb + 40, (DISK_BYTES - (1u << 20)) / SEG_BYTES);
	le_put64(sb + 44, 1u << 20);
	le_put64(sb + 52, DISK_BYTES);
	le_put64(sb + 60, 1700000000);
	le_put32(sb + 124, ovl_crc32c(0, sb, 124));
	memcpy(blk, sb, 4096);
	assert_int_equal(node_disk_sync_io(d, DISK_WRITE, blk, 4096, 0), 0);
	assert_int_equal(node_disk_sync_io(d, DISK_WRITE, blk, 4096, 4096), 0);
	/* both pointer slots: generation 1, the log from the start */
	prev = ovl_crc32c(0, uuid, 16);
	memset(blk, 0, 4096);
	memcpy(blk, "SHELFCP1", 8);
	le_put64(blk + 8, 1);
	le_put64(blk + 16, 1u << 20);
	le_put64(blk + 24, 1);
	le_put32(blk + 32, prev);
	le_put32(blk + 60, ovl_crc32c(0, blk, 60));
	assert_int_equal(node_disk_sync_io(d, DISK_WRITE, blk, 4096, 8192), 0);
	assert_int_equal(node_disk_sync_io(d, DISK_WRITE, blk, 4096, 12288), 0);
	/* three records, one batch: x1, x2, then x1 deleted */
	memset(b, 0, 4 * 4096);
	at += v2_record(b + at, REC_PUT, "x1", "one", 3, prev, 1, &h1);
	prev = h1;
	at += v2_record(b + at, REC_PUT, "x2", "two", 3, prev, 2, &h1);
	prev = h1;
	at += v2_record(b + at, REC_TOMB, "x1", "", 0, prev, 3, &h1);
	assert_int_equal(node_disk_sync_io(d, DISK_WRITE, b, 4096, 1u << 20), 0);
	/* the flush frontier: D = 3, both copies */
	memset(blk, 0, 4096);
	memcpy(blk, "SHELFFR1", 8);
	le_put64(blk + 8, 3);
	le_put32(blk + 60, ovl_crc32c(0, blk, 60));
	assert_int_equal(node_disk_sync_io(d, DISK_WRITE, blk, 4096, 16384), 0);
	assert_int_equal(node_disk_sync_io(d, DISK_WRITE, blk, 4096, 20480), 0);
	assert_int_equal(node_disk_sync_io(d, DISK_FLUSH, NULL, 0, 0), 0);

	s = open_on(d, false);
	node_store_stats(s, &st);
	assert_int_equal(st.upgraded_from, 2);
	assert_int_equal(st.objects, 1);
	check_value(s, "x2", "two", 3);
	expect_absent(s, "x1");
	for (unsigned i = 0; i < 2; i++) {
		node_faultdisk_peek(f, 4096 * (uint64_t)i, sb, sizeof(sb));
		assert_int_equal(le_get32(sb + 8), 4);
		node_faultdisk_peek(f, 4096 * (uint64_t)(6 + i), sb, 64);
		assert_memory_equal(sb, "SHELFCP1", 8); /* the mirrors, from the slots */
	}
	assert_int_equal(node_store_put(s, "x3", 2, "three", 5), 0);
	d = node_store_abandon(&s);
	node_faultdisk_crash(f);
	/* an upgrade cut after copy 0: copy 1 still says 2 */
	node_faultdisk_peek(f, 4096, sb, sizeof(sb));
	le_put32(sb + 8, 2);
	le_put32(sb + 124, ovl_crc32c(0, sb, 124));
	memcpy(blk, sb, 4096);
	assert_int_equal(node_disk_sync_io(d, DISK_WRITE, blk, 4096, 4096), 0);
	assert_int_equal(node_disk_sync_io(d, DISK_FLUSH, NULL, 0, 0), 0);
	s = open_on(d, false);
	node_store_stats(s, &st);
	assert_true(st.repaired_superblock);
	assert_int_equal(st.upgraded_from, 0);
	check_value(s, "x2", "two", 3);
	check_value(s, "x3", "three", 5);
	node_faultdisk_peek(f, 4096, sb, sizeof(sb));
	assert_int_equal(le_get32(sb + 8), 4);
	node_store_close(&s);
	free(b);
	free(blk);
}


/* A fake monotonic clock the test moves by hand. */
static uint64_t fake_ns = 1000000000ull;
static uint64_t fake_now(void *arg) { return fake_ns; }
static uint64_t fake_wall(void *arg) { return 1700000000u; }

/* After a second of idleness the store gives its buffers back, and then
 * works as before: what it wrote before is read back, and new writes (into
 * buffers whose pages were dropped) are durable and correct. */
static void test_idle_release(void **state)
{
	struct node_clock clk = { fake_now, fake_wall, NULL };
	struct node_store_opts o;
	struct node_store_stats st;
	struct node_store *s = NULL;
	struct node_disk *d = new_disk(11);
	static uint8_t v[200000];
	char key[32], err[256];

	node_store_opts_init(&o);
	o.disk = d;
	o.format = true;
	o.segment_bytes = SEG_BYTES;
	o.write_buffers = 4;
	o.write_buffer_bytes = 64 << 10;
	o.clock = &clk;
	assert_int_equal(node_store_open(&s, &o, err, sizeof(err)), 0);
	for (int i = 0; i < 20; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		fill(v, sizeof(v), (unsigned)i);
		assert_int_equal(node_store_put(s, key, strlen(key), v, sizeof(v) - (size_t)i * 999), 0);
	}
	check_value(s, "k3", (fill(v, sizeof(v), 3), v), sizeof(v) - 3 * 999);
	/* not before a second has passed */
	assert_int_equal(node_store_poll(s, false), 0);
	fake_ns += 500000000ull;
	assert_int_equal(node_store_poll(s, false), 0);
	node_store_stats(s, &st);
	assert_int_equal(st.idle_releases, 0);
	fake_ns += 600000000ull;
	assert_int_equal(node_store_poll(s, false), 0);
	assert_int_equal(node_store_poll(s, false), 0);
	node_store_stats(s, &st);
	assert_int_equal(st.idle_releases, 1);
	/* the buffers work again, and work resets the idle time */
	for (int i = 20; i < 40; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		fill(v, sizeof(v), (unsigned)i);
		assert_int_equal(node_store_put(s, key, strlen(key), v, sizeof(v) - (size_t)i * 999), 0);
	}
	fake_ns += 500000000ull; /* idle again since the last put completed */
	assert_int_equal(node_store_poll(s, false), 0);
	node_store_stats(s, &st);
	assert_int_equal(st.idle_releases, 1);
	fake_ns += 600000000ull;
	assert_int_equal(node_store_poll(s, false), 0);
	node_store_stats(s, &st);
	assert_int_equal(st.idle_releases, 2);
	for (int i = 0; i < 40; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		fill(v, sizeof(v), (unsigned)i);
		check_value(s, key, v, sizeof(v) - (size_t)i * 999);
	}
	/* and all of it was durable: it survives a power loss */
	d = node_store_abandon(&s);
	s = open_on(d, false);
	for (int i = 0; i < 40; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		fill(v, sizeof(v), (unsigned)i);
		check_value(s, key, v, sizeof(v) - (size_t)i * 999);
	}
	node_store_close(&s);
}


/* ---- space under overwrite churn, on a shared loop the test owns ---- */

#define CHURN_VAL (8u << 20)
#define CHURN_SEG (64ull << 20)
#define CHURN_DRIVE (1024ull << 20)
#define CHURN_SLOTS 4
#define CHURN_KEYS_MAX 200

struct churn {
	struct node_loop *l;
	struct node_store *s;
	uint8_t *base;                  /* the pattern every value starts from */
	uint8_t *buf[CHURN_SLOTS];      /* values in flight */
	uint32_t ver[CHURN_KEYS_MAX];   /* newest acknowledged version (0: none) */
	bool deleted[CHURN_KEYS_MAX];
	int calls, res;                 /* of the last operation waited for */
};

struct churn_op {
	struct churn *c;
	bool done;
	int res;
	struct node_store_rbuf *rb;
};

static void churn_stamp(uint8_t *v, const uint8_t *base, unsigned key, uint32_t ver)
{
	memcpy(v, base, CHURN_VAL);
	for (size_t off = 0; off < CHURN_VAL; off += 1u << 20) {
		memcpy(v + off, &key, sizeof(key));
		memcpy(v + off + 4, &ver, sizeof(ver));
	}
}

static void churn_done(void *arg, int res, const struct node_store_objstat *st)
{
	struct churn_op *o = arg;

	(void)st;
	o->done = true;
	o->res = res;
}

static void churn_get_done(void *arg, int res, struct node_store_rbuf **rb,
			   const struct node_store_objstat *st)
{
	struct churn_op *o = arg;

	churn_done(arg, res, st);
	o->rb = *rb;
	*rb = NULL;
}

static void churn_wait(struct churn *c, struct churn_op *ops, int n)
{
	for (int i = 0; i < n; i++)
		while (!ops[i].done)
			assert_true(node_loop_run(c->l, true) >= 0);
}

/* Put version `ver` of keys[0..n) at once, one per slot; results in ops. */
static void churn_puts(struct churn *c, const unsigned *keys, const uint32_t *vers, int n,
		       struct churn_op *ops)
{
	char key[16];

	for (int i = 0; i < n; i++) {
		ops[i] = (struct churn_op){ .c = c };
		snprintf(key, sizeof(key), "c%03u", keys[i]);
		churn_stamp(c->buf[i], c->base, keys[i], vers[i]);
		assert_int_equal(node_store_put_async(c->s, key, strlen(key), c->buf[i], CHURN_VAL,
						      churn_done, &ops[i]), 0);
	}
	churn_wait(c, ops, n);
	for (int i = 0; i < n; i++)
		if (ops[i].res == 0) {
			c->ver[keys[i]] = vers[i];
			c->deleted[keys[i]] = false;
		}
}

/* Every key reads back as its newest version, or not-found once deleted. */
static void churn_check(struct churn *c, unsigned nkeys)
{
	char key[16];
	int ret;

	for (unsigned k = 0; k < nkeys; k++) {
		struct churn_op o = { .c = c };

		if (!c->ver[k] && !c->deleted[k])
			continue;
		snprintf(key, sizeof(key), "c%03u", k);
		ret = node_store_get_async(c->s, key, strlen(key), 0, UINT64_MAX, churn_get_done, &o);
		if (ret < 0) /* answered at once */
			o = (struct churn_op){ .done = true, .res = ret };
		churn_wait(c, &o, 1);
		if (c->deleted[k]) {
			assert_int_equal(o.res, -ENOENT);
			continue;
		}
		assert_int_equal(o.res, 0);
		assert_int_equal(o.rb->len, CHURN_VAL);
		churn_stamp(c->buf[0], c->base, k, c->ver[k]);
		if (memcmp(o.rb->data, c->buf[0], CHURN_VAL) != 0) {
			uint32_t got;

			memcpy(&got, (const uint8_t *)o.rb->data + 4, sizeof(got));
			fail_msg("key %u: version %u came back, %u is the newest", k, got, c->ver[k]);
		}
		node_store_rbuf_release(&o.rb);
	}
}

static void churn_open(struct churn *c, const char *path, bool format)
{
	struct node_store_opts o;
	char err[256];

	node_store_opts_init(&o);
	o.path = path;
	o.loop = c->l;
	o.create_size = CHURN_DRIVE;
	o.format = format;
	o.segment_bytes = CHURN_SEG;
	if (node_store_open(&c->s, &o, err, sizeof(err)) < 0)
		fail_msg("%s", err);
}

static void churn_close(struct churn *c)
{
	while (!node_store_idle(c->s))
		assert_true(node_loop_run(c->l, true) >= 0);
	node_store_close(&c->s);
}

/*
 * Four writers overwrite four keys with 8 MiB values, far more than the
 * drive holds: compaction keeps up, no put fails. Then the live set grows
 * under the same churn until the first no-space, which comes only near the
 * usable capacity, with the store saying `full`. Deletes give the space
 * back within a bounded time; no old version ever comes back, before or
 * after a reopen.
 */
static void test_churn_on_shared_loop(void **state)
{
	char dir[] = "/dev/shm/shelf-churn-XXXXXX", path[300], err[256];
	static struct churn c;
	struct churn_op ops[CHURN_SLOTS];
	struct node_store_stats st;
	unsigned keys[CHURN_SLOTS], nkeys = CHURN_SLOTS;
	uint32_t vers[CHURN_SLOTS], ver = 0;
	uint64_t live_at_enospc = 0, per_seg, t0;
	double packed;
	int puts = 0;

	(void)state;
	if (!test_have_io_uring(err, sizeof(err))) {
		print_message("%s\n", err); /* the shared loop is an io_uring */
		skip();
	}
	memset(&c, 0, sizeof(c));
	if (!mkdtemp(dir)) {
		memcpy(dir, "/tmp/", 5); /* no /dev/shm: the same on /tmp */
		memmove(dir + 5, "shelf-churn-XXXXXX", sizeof("shelf-churn-XXXXXX"));
		assert_non_null(mkdtemp(dir));
	}
	snprintf(path, sizeof(path), "%s/drive", dir);
	assert_int_equal(node_loop_new(&c.l, 256, err, sizeof(err)), 0);
	c.base = malloc(CHURN_VAL);
	assert_non_null(c.base);
	fill(c.base, CHURN_VAL, 99);
	for (int i = 0; i < CHURN_SLOTS; i++) {
		c.buf[i] = malloc(CHURN_VAL);
		assert_non_null(c.buf[i]);
	}
	churn_open(&c, path, true);

	/* overwrite churn: 160 puts of 8 MiB, 1.25 GiB through a 1 GiB drive */
	for (int round = 0; round < 40; round++) {
		ver++;
		for (int i = 0; i < CHURN_SLOTS; i++) {
			keys[i] = (unsigned)i;
			vers[i] = ver;
		}
		churn_puts(&c, keys, vers, CHURN_SLOTS, ops);
		for (int i = 0; i < CHURN_SLOTS; i++)
			if (ops[i].res != 0)
				fail_msg("round %d: put of 8 MiB failed: %s (%s)", round, strerror(-ops[i].res),
					 node_store_errmsg(c.s));
	}
	node_store_stats(c.s, &st);
	assert_false(st.full);
	assert_false(st.nearly_full);
	assert_true(st.checkpoints > 0);
	churn_check(&c, nkeys);

	/*
	 * The live set grows under churn (two new keys and two overwrites
	 * each round) until the first no-space. The usable capacity holds
	 * whole records only: a segment holds per_seg of them.
	 */
	per_seg = (CHURN_SEG - 2 * DISK_BLOCK_BYTES) / (CHURN_VAL + DISK_BLOCK_BYTES);
	for (int round = 0; nkeys + 2 <= CHURN_KEYS_MAX; round++) {
		bool refused = false;

		ver++;
		keys[0] = nkeys++;
		keys[1] = nkeys++;
		keys[2] = (unsigned)(round * 7) % (nkeys - 2);
		keys[3] = (unsigned)(round * 13 + 5) % (nkeys - 2);
		if (keys[3] == keys[2])
			keys[3] = (keys[3] + 1) % (nkeys - 2);
		for (int i = 0; i < CHURN_SLOTS; i++)
			vers[i] = ver;
		node_store_stats(c.s, &st);
		live_at_enospc = st.live_bytes;
		churn_puts(&c, keys, vers, CHURN_SLOTS, ops);
		puts += CHURN_SLOTS;
		for (int i = 0; i < CHURN_SLOTS; i++) {
			if (ops[i].res == 0)
				continue;
			assert_int_equal(ops[i].res, -ENOSPC);
			assert_non_null(strstr(node_store_errmsg(c.s), "is full"));
			refused = true;
		}
		if (refused)
			break;
	}
	node_store_stats(c.s, &st);
	packed = (double)live_at_enospc / ((double)st.usable_bytes * per_seg *
					   (CHURN_VAL + DISK_BLOCK_BYTES) / CHURN_SEG);
	print_message("churn: first no-space at %.1f MiB live of %.1f MiB usable (%.0f%% of what "
		      "whole records can fill), %" PRIu64 " relocations, %" PRIu64 " compactions\n",
		      live_at_enospc / 1048576.0, st.usable_bytes / 1048576.0, 100 * packed,
		      st.relocations, st.compactions);
	assert_true(nkeys + 2 <= CHURN_KEYS_MAX); /* it did fill */
	assert_true(packed >= 0.85);
	/* full exactly while puts are refused */
	assert_true(st.full);
	assert_true(st.nearly_full);
	ver++;
	keys[0] = 0;
	vers[0] = ver;
	churn_puts(&c, keys, vers, 1, ops);
	assert_int_equal(ops[0].res, -ENOSPC);

	/* deletes: the space is usable again within a few seconds */
	for (unsigned k = 0; k < nkeys; k += 2) {
		char key[16];
		struct churn_op o = { .c = &c };

		if (!c.ver[k])
			continue;
		snprintf(key, sizeof(key), "c%03u", k);
		assert_int_equal(node_store_delete_async(c.s, key, strlen(key), churn_done, &o), 0);
		churn_wait(&c, &o, 1);
		assert_int_equal(o.res, 0);
		c.deleted[k] = true;
		c.ver[k] = 0;
	}
	node_store_stats(c.s, &st);
	assert_false(st.full);
	t0 = ovl_mono_ms();
	for (unsigned n = 0; n < 8; n++) {
		ver++;
		keys[0] = n * 2;
		vers[0] = ver;
		churn_puts(&c, keys, vers, 1, ops);
		if (ops[0].res != 0)
			fail_msg("put after deletes: %s (%s)", strerror(-ops[0].res), node_store_errmsg(c.s));
	}
	print_message("churn: 8 puts of 8 MiB after the deletes took %" PRIu64 " ms\n",
		      ovl_mono_ms() - t0);
	assert_true(ovl_mono_ms() - t0 < 5000);
	node_store_stats(c.s, &st);
	assert_false(st.full);

	/* no old version anywhere, now and after a reopen */
	churn_check(&c, nkeys);
	churn_close(&c);
	churn_open(&c, path, false);
	churn_check(&c, nkeys);
	churn_close(&c);

	for (int i = 0; i < CHURN_SLOTS; i++)
		free(c.buf[i]);
	free(c.base);
	node_loop_destroy(&c.l);
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_put_get_delete),
		cmocka_unit_test(test_bad_arguments),
		cmocka_unit_test(test_range_reads),
		cmocka_unit_test(test_list),
		cmocka_unit_test(test_reopen_clean_and_many_keys),
		cmocka_unit_test(test_streamed_puts),
		cmocka_unit_test(test_full_drive),
		cmocka_unit_test(test_write_error_goes_read_only),
		cmocka_unit_test(test_bit_flips_detected),
		cmocka_unit_test(test_read_damage_survives_crash),
		cmocka_unit_test(test_compact_large_records),
		cmocka_unit_test(test_stale_page_cache),
		cmocka_unit_test(test_page_cache_coherent),
		cmocka_unit_test(test_bad_drives),
		cmocka_unit_test(test_stale_tail_after_resync),
		cmocka_unit_test(test_stale_torn_record_mid_block),
		cmocka_unit_test(test_checkpoint_damage),
		cmocka_unit_test(test_upgrade_from_version_2),
		cmocka_unit_test(test_close_after_recovery_checkpoints),
		cmocka_unit_test(test_idle_release),
		cmocka_unit_test(test_churn_on_shared_loop),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
