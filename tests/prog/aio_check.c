/*
 * aio_check: drives libshelf's asynchronous API and shelf_get_batch()
 * against a real cluster (tests/integration/aio_batch.sh), and checks
 * every byte. Client from $SHELF_CLIENT, broker from $SHELF_BROKER.
 *
 *   aio_check fill SLICE PREFIX N      put PREFIX/0..N-1 with shelf_put_async
 *   aio_check ops SLICE PREFIX         get (whole, range), stat, delete async
 *   aio_check batch SLICE PREFIX N [--unordered] [--kill-after K CMD]
 *       get_batch of N present keys with every 5th a missing one among
 *       them (PREFIX/0.., PREFIX/missing-..): each present value right, in
 *       the requested order (unless --unordered: then each exactly once),
 *       every missing key named with -ENOENT; CMD (a shell command) runs
 *       once K items were given (a node killed mid-batch)
 *
 * Values: value(i) is (i * 7919) % 8193 bytes, byte j = (i * 31 + j * 7)
 * & 0xff, starting with the key. Exit 0 when every check passed, 1 else
 * (the first failures are printed).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shelf.h"

static int failures;

#define CHECK(cond, ...)                                                        \
	do {                                                                    \
		if (!(cond)) {                                                  \
			if (failures++ < 20) {                                  \
				fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
				fprintf(stderr, __VA_ARGS__);                   \
				fputc('\n', stderr);                            \
			}                                                       \
		}                                                               \
	} while (0)

static size_t value_len(size_t i)
{
	return (i * 7919) % 8193;
}

static void value_fill(size_t i, const char *key, uint8_t *out, size_t len)
{
	size_t kl = strlen(key);

	for (size_t j = 0; j < len; j++)
		out[j] = (uint8_t)((i * 31 + j * 7) & 0xff);
	memcpy(out, key, kl < len ? kl : len);
}

static bool value_ok(size_t i, const char *key, const void *data, size_t len)
{
	uint8_t *want;
	bool ok;

	if (len != value_len(i))
		return false;
	want = malloc(len + 1);
	if (!want)
		return false;
	value_fill(i, key, want, len);
	ok = memcmp(want, data, len) == 0;
	free(want);
	return ok;
}

static struct shelf *open_client(void)
{
	const char *dir = getenv("SHELF_CLIENT"), *broker = getenv("SHELF_BROKER");
	char err[SHELF_ERR_BYTES];
	struct shelf *s = NULL;

	if (!dir || shelf_open(&s, dir, broker, err, sizeof(err)) < 0) {
		fprintf(stderr, "aio_check: cannot open the client: %s\n", dir ? err : "no $SHELF_CLIENT");
		exit(1);
	}
	shelf_set_timeout(s, 20000);
	return s;
}

/* ---- fill ---- */

struct put_ctx {
	size_t ok, failed;
};

static void put_done(void *arg, int res, const struct shelf_op *op)
{
	struct put_ctx *c = arg;

	if (res == 0)
		c->ok++;
	else {
		c->failed++;
		CHECK(0, "put: %s", shelf_op_error(op));
	}
}

static int cmd_fill(struct shelf *s, const char *slice, const char *prefix, size_t n)
{
	struct put_ctx c = { 0 };
	char key[128];
	uint8_t **vals = calloc(n, sizeof(*vals));
	int ret;

	for (size_t i = 0; vals && i < n; i++) {
		snprintf(key, sizeof(key), "%s/%zu", prefix, i);
		vals[i] = malloc(value_len(i) + 1);
		if (!vals[i])
			return 1;
		value_fill(i, key, vals[i], value_len(i));
		ret = shelf_put_async(s, slice, key, strlen(key), vals[i], value_len(i), put_done, &c);
		CHECK(ret == 0, "put_async %s: %d", key, ret);
	}
	CHECK(shelf_pending(s) == n, "pending %u, want %zu", shelf_pending(s), n);
	ret = shelf_run(s, -1);
	CHECK(ret == 0, "shelf_run: %d", ret);
	CHECK(c.ok == n, "%zu of %zu puts succeeded", c.ok, n);
	CHECK(shelf_pending(s) == 0, "pending %u after run", shelf_pending(s));
	for (size_t i = 0; vals && i < n; i++)
		free(vals[i]);
	free(vals);
	printf("filled %zu\n", c.ok);
	return failures ? 1 : 0;
}

/* ---- ops ---- */

struct one {
	int res;
	bool called;
	void *data;
	size_t len;
	uint64_t total;
	struct shelf_objstat st;
	bool has_st;
	char why[SHELF_ERR_BYTES];
};

static void one_done(void *arg, int res, const struct shelf_op *op)
{
	struct one *o = arg;
	const struct shelf_objstat *st = shelf_op_stat(op);

	o->called = true;
	o->res = res;
	o->total = shelf_op_total(op);
	if (st) {
		o->st = *st;
		o->has_st = true;
	}
	if (res == 0 && shelf_op_data(op, NULL))
		o->data = shelf_op_take(op, &o->len);
	CHECK(shelf_op_data(op, NULL) == NULL, "data after take");
	snprintf(o->why, sizeof(o->why), "%s", shelf_op_error(op));
}

static int cmd_ops(struct shelf *s, const char *slice, const char *prefix)
{
	char key[128], err[SHELF_ERR_BYTES];
	struct one g = { 0 }, r = { 0 }, st = { 0 }, d = { 0 }, g2 = { 0 }, bad = { 0 };
	uint8_t want[8192];
	size_t i = 3, len = value_len(3);
	int ret;

	snprintf(key, sizeof(key), "%s/%zu", prefix, i);
	value_fill(i, key, want, len);
	CHECK(shelf_get_async(s, slice, key, strlen(key), 0, UINT64_MAX, one_done, &g) == 0, "get");
	CHECK(shelf_get_async(s, slice, key, strlen(key), 100, 50, one_done, &r) == 0, "range");
	CHECK(shelf_stat_async(s, slice, key, strlen(key), one_done, &st) == 0, "stat");
	/* refused at once, no callback */
	CHECK(shelf_get_async(s, slice, "", 0, 0, UINT64_MAX, one_done, &bad) == -EINVAL, "empty key");
	CHECK(shelf_get_async(s, slice, "\xfe\xfe\xfe\xfe\xfe\xfe\xfe\xfe" "x", 9, 0, UINT64_MAX,
			      one_done, &bad) == -EINVAL, "reserved key");
	ret = shelf_run(s, -1);
	CHECK(ret == 0, "run: %d", ret);
	CHECK(!bad.called, "a refused start called back");
	CHECK(g.res == 0 && g.len == len && memcmp(g.data, want, len) == 0, "get %s: %d %s", key,
	      g.res, g.why);
	CHECK(g.total == len, "get total %llu", (unsigned long long)g.total);
	CHECK(r.res == 0 && r.len == 50 && memcmp(r.data, want + 100, 50) == 0 && r.total == len,
	      "range: %d len %zu", r.res, r.len);
	CHECK(st.res == 0 && st.has_st && st.st.size == len && st.total == len, "stat: %d %s", st.res,
	      st.why);
	/* delete, then a get says not found, naming the key */
	snprintf(key, sizeof(key), "%s/ops-victim", prefix);
	CHECK(shelf_put(s, slice, key, strlen(key), "x", 1, err, sizeof(err)) == 0, "put: %s", err);
	CHECK(shelf_delete_async(s, slice, key, strlen(key), one_done, &d) == 0, "delete");
	CHECK(shelf_run(s, 30000) == 0, "run");
	CHECK(d.res == 0, "delete: %d %s", d.res, d.why);
	CHECK(shelf_get_async(s, slice, key, strlen(key), 0, UINT64_MAX, one_done, &g2) == 0, "get");
	CHECK(shelf_run(s, 30000) == 0, "run");
	CHECK(g2.res == -ENOENT && strstr(g2.why, key), "get deleted: %d '%s'", g2.res, g2.why);
	free(g.data);
	free(r.data);
	printf("ops ok\n");
	return failures ? 1 : 0;
}

/* ---- batch ---- */

struct bctx {
	char **keys;
	long *idx;              /* value index, -1: a missing key */
	size_t n, given, next, present, missing;
	bool unordered;
	unsigned char *seen;
	size_t kill_after;
	const char *kill_cmd;
	bool killed;
};

static int batch_cb(void *arg, size_t index, int res, const void *data, size_t len,
		    const char *why)
{
	struct bctx *b = arg;

	CHECK(index < b->n, "index %zu out of range", index);
	if (index >= b->n)
		return 1;
	if (!b->unordered)
		CHECK(index == b->next, "item %zu given when %zu was due", index, b->next);
	CHECK(!b->seen[index], "item %zu given twice", index);
	b->seen[index] = 1;
	b->next = index + 1;
	if (b->idx[index] < 0) {
		CHECK(res == -ENOENT, "missing %s: res %d", b->keys[index], res);
		CHECK(why && strstr(why, b->keys[index]), "missing %s not named: '%s'", b->keys[index],
		      why ? why : "(null)");
		CHECK(data == NULL, "missing %s has data", b->keys[index]);
		b->missing++;
	} else {
		CHECK(res == 0, "get %s: %d %s", b->keys[index], res, why ? why : "");
		CHECK(res != 0 || value_ok((size_t)b->idx[index], b->keys[index], data, len),
		      "wrong bytes for %s (%zu bytes)", b->keys[index], len);
		b->present++;
	}
	b->given++;
	if (b->kill_cmd && !b->killed && b->given == b->kill_after) {
		b->killed = true;
		fprintf(stderr, "aio_check: %zu given, running: %s\n", b->given, b->kill_cmd);
		CHECK(system(b->kill_cmd) == 0, "kill command failed");
	}
	return 0;
}

static int cmd_batch(struct shelf *s, const char *slice, const char *prefix, size_t n, int argc,
		     char **argv)
{
	struct bctx b = { 0 };
	struct shelf_batch_item *items;
	size_t total = n + n / 4, p = 0, m = 0;
	char err[SHELF_ERR_BYTES];
	int ret;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--unordered") == 0)
			b.unordered = true;
		else if (strcmp(argv[i], "--kill-after") == 0 && i + 2 < argc) {
			b.kill_after = strtoul(argv[i + 1], NULL, 10);
			b.kill_cmd = argv[i + 2];
			i += 2;
		}
	}
	b.n = total;
	b.keys = calloc(total, sizeof(*b.keys));
	b.idx = calloc(total, sizeof(*b.idx));
	b.seen = calloc(total, 1);
	items = calloc(total, sizeof(*items));
	if (!b.keys || !b.idx || !b.seen || !items)
		return 1;
	/* every 5th item a key that was never written, the present ones in a
	 * shuffled order (a stride coprime with n) */
	for (size_t i = 0; i < total; i++) {
		char key[128];

		if (i % 5 == 4 || p == n) {
			snprintf(key, sizeof(key), "%s/missing-%zu", prefix, m++);
			b.idx[i] = -1;
		} else {
			size_t v = (p++ * 7) % n;

			snprintf(key, sizeof(key), "%s/%zu", prefix, v);
			b.idx[i] = (long)v;
		}
		b.keys[i] = strdup(key);
		items[i].key = b.keys[i];
		items[i].klen = strlen(key);
	}
	ret = shelf_get_batch(s, slice, items, total, b.unordered ? SHELF_BATCH_UNORDERED : 0,
			      batch_cb, &b, err, sizeof(err));
	CHECK(ret == (int)m, "get_batch returned %d (%s), want %zu missing", ret,
	      ret < 0 ? err : "", m);
	CHECK(b.given == total, "%zu of %zu items given", b.given, total);
	CHECK(b.missing == m, "%zu missing named, want %zu", b.missing, m);
	CHECK(!b.kill_cmd || b.killed, "the kill command never ran");
	if (b.kill_cmd) {
		struct shelf_counters c;

		/* the keys of the killed node were read from their other replica */
		shelf_get_counters(s, &c);
		CHECK(c.failovers > 0 && c.unreachable > 0, "after a kill: %llu failovers, %llu unreachable",
		      (unsigned long long)c.failovers, (unsigned long long)c.unreachable);
		printf("after the kill: %llu failovers, %llu nodes unreachable\n",
		       (unsigned long long)c.failovers, (unsigned long long)c.unreachable);
	}
	/* --fail-missing: stops at the first missing item (item 4), naming it */
	if (!b.kill_cmd) {
		struct bctx f = b;

		memset(b.seen, 0, total);
		f.seen = b.seen;
		f.given = f.next = f.present = f.missing = 0;
		ret = shelf_get_batch(s, slice, items, total,
				      SHELF_BATCH_FAIL_MISSING | (b.unordered ? SHELF_BATCH_UNORDERED : 0),
				      batch_cb, &f, err, sizeof(err));
		CHECK(ret == -ENOENT && strstr(err, "missing-"), "fail-missing: %d '%s'", ret, err);
		CHECK(f.missing == 1, "fail-missing gave %zu missing items", f.missing);
	}
	printf("batch: %zu items, %zu present right, %zu missing named\n", b.given, b.present,
	       b.missing);
	for (size_t i = 0; i < total; i++)
		free(b.keys[i]);
	free(b.keys);
	free(b.idx);
	free(b.seen);
	free(items);
	return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct shelf *s;
	int ret = 2;

	if (argc < 4) {
		fprintf(stderr, "usage: aio_check fill|ops|batch SLICE PREFIX [N] [options]\n");
		return 2;
	}
	s = open_client();
	if (strcmp(argv[1], "fill") == 0 && argc >= 5)
		ret = cmd_fill(s, argv[2], argv[3], strtoul(argv[4], NULL, 10));
	else if (strcmp(argv[1], "ops") == 0)
		ret = cmd_ops(s, argv[2], argv[3]);
	else if (strcmp(argv[1], "batch") == 0 && argc >= 5)
		ret = cmd_batch(s, argv[2], argv[3], strtoul(argv[4], NULL, 10), argc - 5, argv + 5);
	shelf_close(&s);
	if (failures)
		fprintf(stderr, "aio_check: %d checks failed\n", failures);
	return ret;
}
