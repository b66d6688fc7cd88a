/*
 * store_writer: the process that the SIGKILL test kills.
 *
 *   store_writer write DRIVE TAG     put objects "TAG-<n>" (deterministic
 *                                    bytes) with 16 in flight; after each
 *                                    acknowledgement print "TAG-<n> <len>\n"
 *                                    on stdout, unbuffered, until killed
 *   store_writer verify DRIVE LOG    recover the store and check every key
 *                                    in LOG is present with its exact bytes;
 *                                    then delete them (keeps the drive from
 *                                    filling); exit 0 if nothing was lost
 *   store_writer puts DRIVE TAG N [OWKEY]
 *                                    put "TAG-<i>" for i < N one at a time,
 *                                    each acknowledged (with OWKEY: OWKEY
 *                                    first, and again, new bytes, after
 *                                    half of them); after each print
 *                                    "KEY LEN VARIANT OFF SIZE\n" (OFF and
 *                                    SIZE: where its record is on the drive,
 *                                    node_store_locate), then wait to be
 *                                    killed
 *   store_writer check DRIVE LOG DAMAGED
 *                                    recover: the newest version of every key
 *                                    in LOG (a "puts" log) reads back
 *                                    exactly, except DAMAGED, which must
 *                                    answer -EIO (never not-found, never an
 *                                    older version); again after 6 new puts;
 *                                    print the damage counters; exit 0 if so
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "node.h"

#define INFLIGHT 16
#define VALUE_MAX_BYTES 16384

static void gen(uint8_t *buf, size_t len, const char *key)
{
	uint32_t x = 2166136261u;

	for (const char *k = key; *k; k++)
		x = (x ^ (uint8_t)*k) * 16777619u;
	for (size_t i = 0; i < len; i++) {
		x = x * 1103515245u + 12345u;
		buf[i] = (uint8_t)(x >> 16);
	}
}

static size_t len_of(const char *key)
{
	uint32_t x = 0;

	for (const char *k = key; *k; k++)
		x = x * 31 + (uint8_t)*k;
	return x % 5 == 0 ? 0 : x % VALUE_MAX_BYTES;
}

static int open_store(struct node_store **s, const char *path)
{
	struct node_store_opts o;
	char err[256];
	int ret;

	node_store_opts_init(&o);
	o.path = path;
	o.create_size = 512ull << 20;
	o.format = true;
	o.segment_bytes = 8 << 20;
	o.ckpt_records = 5000;
	ret = node_store_open(s, &o, err, sizeof(err));
	if (ret < 0)
		fprintf(stderr, "store_writer: %s\n", err);
	return ret;
}

struct slot {
	bool busy;
	char key[48];
	uint8_t val[VALUE_MAX_BYTES];
	size_t len;
	int res;
	bool done;
};

static void put_cb(void *arg, int res, const struct node_store_objstat *st)
{
	struct slot *sl = arg;

	sl->res = res;
	sl->done = true;
}

static int do_write(const char *path, const char *tag)
{
	struct node_store *s = NULL;
	static struct slot slots[INFLIGHT];
	unsigned long n = 0;

	if (open_store(&s, path) < 0)
		return 1;
	for (;;) {
		for (int i = 0; i < INFLIGHT; i++) {
			struct slot *sl = &slots[i];

			if (sl->busy && sl->done) {
				if (sl->res == 0) {
					char line[80];
					int m = snprintf(line, sizeof(line), "%s %zu\n", sl->key, sl->len);

					if (write(1, line, m) != m)
						return 1;
				} else if (sl->res != -ENOSPC) {
					fprintf(stderr, "put %s: %s\n", sl->key, strerror(-sl->res));
					return 1;
				}
				sl->busy = false;
			}
			if (!sl->busy) {
				snprintf(sl->key, sizeof(sl->key), "%s-%lu", tag, n++);
				sl->len = len_of(sl->key);
				gen(sl->val, sl->len, sl->key);
				sl->done = false;
				if (node_store_put_async(s, sl->key, strlen(sl->key), sl->val, sl->len,
							 put_cb, sl) == 0)
					sl->busy = true;
			}
		}
		if (node_store_poll(s, true) < 0)
			return 1;
		for (int i = 0; i < INFLIGHT; i++)
			if (slots[i].busy && slots[i].done && slots[i].res == -ENOSPC) {
				node_store_sync(s);
				node_store_reclaim(s);
			}
	}
}

static int do_verify(const char *path, const char *log)
{
	struct node_store *s = NULL;
	FILE *f = fopen(log, "r");
	char key[64];
	size_t len;
	unsigned long checked = 0, lost = 0;
	uint8_t *want = malloc(VALUE_MAX_BYTES);
	struct node_store_stats st;

	if (!f || !want) {
		fprintf(stderr, "store_writer verify: %s: %s\n", f ? "out of memory" : log,
			strerror(errno));
		if (f)
			fclose(f);
		free(want);
		return 1;
	}
	if (open_store(&s, path) < 0) {
		fprintf(stderr, "store_writer verify: cannot open the store after the kill\n");
		fclose(f);
		free(want);
		return 1;
	}
	node_store_stats(s, &st);
	while (fscanf(f, "%63s %zu", key, &len) == 2) {
		void *got = NULL;
		size_t glen = 0;
		int ret = node_store_get(s, key, strlen(key), &got, &glen);

		gen(want, len, key);
		if (ret != 0 || glen != len || (len && memcmp(got, want, len) != 0)) {
			fprintf(stderr, "LOST %s: get returned %d, %zu bytes (want %zu)\n", key, ret, glen, len);
			lost++;
		}
		free(got);
		checked++;
	}
	fclose(f);
	printf("verified %lu acknowledged puts, %lu lost, %llu records replayed\n", checked, lost,
	       (unsigned long long)st.recovered_records);
	/* delete what was checked so the drive does not fill across rounds */
	f = fopen(log, "r");
	while (f && fscanf(f, "%63s %zu", key, &len) == 2) {
		node_store_delete_async(s, key, strlen(key), NULL, NULL);
		if (node_store_pending(s) >= 256)
			node_store_sync(s);
	}
	node_store_sync(s);
	if (f)
		fclose(f);
	free(want);
	node_store_close(&s);
	return lost ? 2 : 0;
}

/* ---- puts / check: the damage test (tests/integration/store_damage.sh) ---- */

#define DMG_KEYS_MAX 256

struct dmg_rec {
	char key[48];
	size_t len;
	unsigned variant;
};

static size_t dmg_len(const char *key, unsigned variant)
{
	return 100 + (len_of(key) + 977u * variant) % 8000;
}

static void dmg_gen(uint8_t *buf, size_t len, const char *key, unsigned variant)
{
	char seed[64];

	snprintf(seed, sizeof(seed), "%s#%u", key, variant);
	gen(buf, len, seed);
}

static int dmg_put(struct node_store *s, const char *key, unsigned variant, uint8_t *buf)
{
	size_t len = dmg_len(key, variant);
	uint64_t off = 0, size = 0;
	int ret;

	dmg_gen(buf, len, key, variant);
	ret = node_store_put(s, key, strlen(key), buf, len);
	if (ret == 0)
		ret = node_store_locate(s, key, strlen(key), &off, &size);
	if (ret < 0) {
		fprintf(stderr, "store_writer puts: %s: %s\n", key, strerror(-ret));
		return ret;
	}
	printf("%s %zu %u %llu %llu\n", key, len, variant, (unsigned long long)off,
	       (unsigned long long)size);
	fflush(stdout);
	return 0;
}

static int do_puts(const char *path, const char *tag, unsigned n, const char *owkey)
{
	struct node_store *s = NULL;
	static uint8_t buf[VALUE_MAX_BYTES];
	char key[48];

	if (open_store(&s, path) < 0)
		return 1;
	if (owkey && dmg_put(s, owkey, 1, buf) < 0)
		return 1;
	for (unsigned i = 0; i < n; i++) {
		if (owkey && i == n / 2 && dmg_put(s, owkey, 2, buf) < 0)
			return 1;
		snprintf(key, sizeof(key), "%s-%u", tag, i);
		if (dmg_put(s, key, 0, buf) < 0)
			return 1;
	}
	fprintf(stderr, "store_writer puts: all acknowledged, waiting to be killed\n");
	for (;;)
		pause();
}

/* The newest version of each key in a puts log: 0, or -1 (unreadable). */
static int dmg_read_log(const char *log, struct dmg_rec *r, unsigned *n)
{
	FILE *f = fopen(log, "r");
	char key[48];
	size_t len;
	unsigned variant;
	unsigned long long off, size;

	*n = 0;
	if (!f)
		return -1;
	while (fscanf(f, "%47s %zu %u %llu %llu", key, &len, &variant, &off, &size) == 5) {
		unsigned i;

		for (i = 0; i < *n && strcmp(r[i].key, key) != 0; i++)
			;
		if (i == *n) {
			if (*n == DMG_KEYS_MAX)
				break;
			(*n)++;
		}
		snprintf(r[i].key, sizeof(r[i].key), "%s", key);
		r[i].len = len;
		r[i].variant = variant;
	}
	fclose(f);
	return 0;
}

static unsigned dmg_verify(struct node_store *s, const struct dmg_rec *r, unsigned n,
			   const char *damaged, uint8_t *want)
{
	unsigned bad = 0;

	for (unsigned i = 0; i < n; i++) {
		void *got = NULL;
		size_t glen = 0;
		int ret = node_store_get(s, r[i].key, strlen(r[i].key), &got, &glen);

		if (strcmp(r[i].key, damaged) == 0) {
			if (ret != -EIO) {
				bool old = false;

				for (unsigned v = 0; ret == 0 && v < r[i].variant; v++) {
					size_t l = dmg_len(r[i].key, v);

					dmg_gen(want, l, r[i].key, v);
					old = old || (glen == l && memcmp(got, want, l) == 0);
				}
				fprintf(stderr, "DAMAGED %s: get returned %d (%s), want -EIO%s\n",
					r[i].key, ret, strerror(ret < 0 ? -ret : 0),
					old ? ": an OLDER VERSION came back" : "");
				bad++;
			}
		} else {
			dmg_gen(want, r[i].len, r[i].key, r[i].variant);
			if (ret != 0 || glen != r[i].len || memcmp(got, want, r[i].len) != 0) {
				fprintf(stderr, "LOST %s: get returned %d, %zu bytes (want %zu)\n",
					r[i].key, ret, glen, r[i].len);
				bad++;
			}
		}
		free(got);
	}
	return bad;
}

static int do_check(const char *path, const char *log, const char *damaged)
{
	static struct dmg_rec r[DMG_KEYS_MAX];
	static uint8_t want[VALUE_MAX_BYTES];
	struct node_store *s = NULL;
	struct node_store_stats st;
	unsigned n, bad;
	char key[48];

	if (dmg_read_log(log, r, &n) < 0 || n == 0) {
		fprintf(stderr, "store_writer check: cannot read %s\n", log);
		return 1;
	}
	if (open_store(&s, path) < 0)
		return 1;
	node_store_stats(s, &st);
	bad = dmg_verify(s, r, n, damaged, want);
	/* new puts after the damage must not disturb anything recovered */
	for (unsigned i = 0; i < 6; i++) {
		snprintf(key, sizeof(key), "after-%llu-%u", (unsigned long long)st.seq, i);
		dmg_gen(want, 4000, key, 0);
		if (node_store_put(s, key, strlen(key), want, 4000) < 0) {
			fprintf(stderr, "put %s after recovery: %s\n", key, node_store_errmsg(s));
			bad++;
		}
	}
	bad += dmg_verify(s, r, n, damaged, want);
	printf("%u keys checked, %u bad; %llu records replayed; damaged_records %llu "
	       "damaged_objects %llu checksum_errors %llu\n", n, bad,
	       (unsigned long long)st.recovered_records, (unsigned long long)st.damaged_records,
	       (unsigned long long)st.damaged_objects, (unsigned long long)st.checksum_errors);
	node_store_close(&s);
	return bad ? 2 : 0;
}

int main(int argc, char **argv)
{
	if ((argc == 5 || argc == 6) && strcmp(argv[1], "puts") == 0)
		return do_puts(argv[2], argv[3], (unsigned)strtoul(argv[4], NULL, 10),
			       argc == 6 ? argv[5] : NULL);
	if (argc == 5 && strcmp(argv[1], "check") == 0)
		return do_check(argv[2], argv[3], argv[4]);
	if (argc == 4 && strcmp(argv[1], "write") == 0)
		return do_write(argv[2], argv[3]);
	if (argc == 4 && strcmp(argv[1], "verify") == 0)
		return do_verify(argv[2], argv[3]);
	fprintf(stderr, "usage: store_writer write DRIVE TAG | verify DRIVE LOG | puts DRIVE TAG N [OWKEY] | check DRIVE LOG DAMAGED\n");
	return 2;
}
