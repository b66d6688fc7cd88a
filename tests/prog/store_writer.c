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

int main(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "write") == 0)
		return do_write(argv[2], argv[3]);
	if (argc == 4 && strcmp(argv[1], "verify") == 0)
		return do_verify(argv[2], argv[3]);
	fprintf(stderr, "usage: store_writer write DRIVE TAG | verify DRIVE LOG\n");
	return 2;
}
