/*
 * shelf-bench stage: ML staging on a local cluster (issue 15). This file
 * holds its batched-read part:
 *
 *   batch_get_8k   objects/s reading N objects of 8 KiB (default 100,000)
 *                  with shelf_get_batch(), against objects/s reading them
 *                  one at a time with shelf_get() through the same library
 *                  (the same client, the same cluster, the same run)
 *
 * The cluster (bench_cluster.c): 24 nodes over 3 chassis, the default
 * slice at R=2. The objects are written with shelf_put_async (not timed
 * as a figure). Rounds alternate the two readers; each figure is the
 * median over the rounds. The batch reads every object each round and
 * checks every byte; the one-at-a-time reader reads --ref-objects of them
 * (default 5,000, spread over all) each round, since at its pace all
 * would take minutes, and its rate is those objects over its time.
 *
 * Cold by default: before each pass the page cache of every node's drive
 * file is dropped (POSIX_FADV_DONTNEED), so both readers read from the
 * drives, as a node does whose dataset is far larger than its memory (a
 * board has little; the 24 simulated nodes share the host's page cache,
 * which would otherwise hold every object after the first round).
 * --warm leaves the cache, and measures reads from memory.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench.h"
#include "bench_cluster.h"
#include "bench_large.h"
#include "bench_stagecmd.h"
#include "overlay.h"
#include "shelf.h"

#define OBJ_BYTES 8192
#define ROUNDS_MAX 15
/* PUTs in flight while the objects are written (not measured) */
#define INGEST_INFLIGHT 64

struct stage_cfg {
	struct bench_cluster cl;
	int objects, ref_objects, rounds;
	unsigned inflight;
	bool warm;     /* keep the drives' pages cached between passes */
};

/* Drop the page cache of every node's drive file (their reads go to the
 * drive again). How many files, or -1. */
static int drop_cached(const struct stage_cfg *c)
{
	char pat[1100];
	glob_t g;
	int n = 0;

	snprintf(pat, sizeof(pat), "%s/*/drive.img", c->cl.cdir);
	if (glob(pat, 0, NULL, &g) != 0)
		return -1;
	for (size_t i = 0; i < g.gl_pathc; i++) {
		int fd = open(g.gl_pathv[i], O_RDONLY | O_CLOEXEC);

		if (fd < 0)
			continue;
		if (fdatasync(fd) == 0 && posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0)
			n++;
		close(fd);
	}
	globfree(&g);
	return n;
}

static void key_of(int i, char *k, size_t len)
{
	snprintf(k, len, "stage8k/%07d", i);
}

/* Object i's bytes: xorshift64 seeded by i (incompressible). */
static void value_of(int i, uint8_t *out)
{
	uint64_t x = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);

	for (size_t j = 0; j < OBJ_BYTES; j += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(out + j, &x, 8);
	}
}

/* ---- the ingest: shelf_put_async, a buffer per operation in flight ---- */

struct ingest {
	struct shelf *s;
	int next, objects, done, failed;
	int *retry;             /* objects to write again (a busy answer after the retries) */
	int nretry, retried;
	char err[SHELF_ERR_BYTES];
};

#define INGEST_RETRIES_MAX 1000 /* objects written again, over the whole ingest */

struct ibuf {
	struct ingest *in;
	int i;                  /* the object it carries */
	uint8_t data[OBJ_BYTES];
};

static void put_next(struct ibuf *b);

static void put_done(void *arg, int res, const struct shelf_op *op)
{
	struct ibuf *b = arg;
	struct ingest *in = b->in;

	if (res == 0) {
		in->done++;
	} else if (in->retried < INGEST_RETRIES_MAX) {
		/* a loaded machine: a node may answer busy after the library's own
		 * retries; the object is written again later */
		in->retry[in->nretry++] = b->i;
		in->retried++;
	} else if (in->failed++ == 0) {
		snprintf(in->err, sizeof(in->err), "%s", shelf_op_error(op));
	}
	/* the op no longer reads the buffer: it carries the next object */
	put_next(b);
}

static void put_next(struct ibuf *b)
{
	struct ingest *in = b->in;
	char key[32];

	if (in->failed)
		return;
	if (in->next < in->objects)
		b->i = in->next++;
	else if (in->nretry)
		b->i = in->retry[--in->nretry];
	else
		return;
	key_of(b->i, key, sizeof(key));
	value_of(b->i, b->data);
	if (shelf_put_async(in->s, "default", key, strlen(key), b->data, OBJ_BYTES, put_done, b) < 0)
		in->failed++;
}

static int ingest(struct shelf *s, int objects, unsigned inflight)
{
	struct ingest in = { .s = s, .objects = objects };
	struct ibuf *bufs = calloc(inflight, sizeof(*bufs));
	double t0 = bench_now();
	int ret;

	in.retry = malloc(INGEST_RETRIES_MAX * sizeof(*in.retry));
	if (!bufs || !in.retry) {
		free(bufs);
		free(in.retry);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < inflight; i++) {
		bufs[i].in = &in;
		put_next(&bufs[i]);
	}
	ret = shelf_run(s, -1);
	/* objects given back after every buffer went idle */
	while (ret == 0 && !in.failed && in.nretry) {
		for (unsigned i = 0; i < inflight && in.nretry; i++)
			put_next(&bufs[i]);
		ret = shelf_run(s, -1);
	}
	free(bufs);
	free(in.retry);
	if (ret < 0 || in.failed || in.done != objects) {
		fprintf(stderr, "stage: ingest failed (%d of %d written): %s\n", in.done, objects,
			in.failed ? in.err : ret < 0 ? strerror(-ret) : "objects left");
		return -EIO;
	}
	fprintf(stderr, "stage: wrote %d objects of 8 KiB in %.1f s (%.0f objects/s; %d written "
		"again after a busy answer)\n", objects, bench_now() - t0,
		objects / (bench_now() - t0), in.retried);
	return 0;
}

/* ---- the readers ---- */

struct bread {
	int wrong, missing;
	uint8_t want[OBJ_BYTES];
	const struct shelf_batch_item *items;
	const int *idx;
};

static int batch_cb(void *arg, size_t index, int res, const void *data, size_t len,
		    const char *why)
{
	struct bread *b = arg;

	if (res < 0) {
		if (b->missing++ == 0)
			fprintf(stderr, "stage: batch: %s\n", why);
		return 0;
	}
	value_of(b->idx[index], b->want);
	if (len != OBJ_BYTES || memcmp(data, b->want, OBJ_BYTES) != 0)
		b->wrong++;
	return 0;
}

/* objects/s of one get_batch over every object, or < 0 */
static double batch_pass(struct shelf *s, const struct shelf_batch_item *items, const int *idx,
			 int n)
{
	struct bread b = { .items = items, .idx = idx };
	char err[SHELF_ERR_BYTES];
	double t0 = bench_now(), dt;
	int ret = shelf_get_batch(s, "default", items, (size_t)n, 0, batch_cb, &b, err,
				  sizeof(err));

	dt = bench_now() - t0;
	if (ret != 0 || b.wrong || b.missing) {
		fprintf(stderr, "stage: get_batch: %d (%s), %d wrong, %d missing\n", ret,
			ret < 0 ? err : "", b.wrong, b.missing);
		return -1;
	}
	return n / dt;
}

static const char *keys_show(const struct shelf_batch_item *it)
{
	return it->key;
}

/* objects/s of shelf_get one at a time over n of the objects, or < 0 */
static double single_pass(struct shelf *s, const struct shelf_batch_item *items, const int *idx,
			  int objects, int n)
{
	uint8_t want[OBJ_BYTES];
	char err[SHELF_ERR_BYTES];
	double t0 = bench_now();
	int step = objects / n ? objects / n : 1;

	for (int k = 0; k < n; k++) {
		int at = (k * step) % objects;
		void *data = NULL;
		size_t len = 0;
		int ret = shelf_get(s, "default", items[at].key, items[at].klen, 0, UINT64_MAX, &data,
				    &len, NULL, err, sizeof(err));

		value_of(idx[at], want);
		if (ret == 0 && (len != OBJ_BYTES || memcmp(data, want, OBJ_BYTES) != 0)) {
			ret = -EIO;
			snprintf(err, sizeof(err), "'%s': wrong bytes", keys_show(&items[at]));
		}
		free(data);
		if (ret < 0) {
			fprintf(stderr, "stage: shelf_get: %s\n", err);
			return -1;
		}
	}
	return n / (bench_now() - t0);
}

/* The machine's CPU seconds busy and in all so far (/proc/stat), to tell
 * whether a pass was bound by the CPU. */
static void cpu_read(double *busy, double *all)
{
	unsigned long long v[10] = { 0 };
	FILE *f = fopen("/proc/stat", "r");

	*busy = *all = 0;
	if (!f)
		return;
	if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
		   &v[4], &v[5], &v[6], &v[7]) == 8) {
		for (int i = 0; i < 8; i++)
			*all += (double)v[i];
		*busy = *all - (double)v[3] - (double)v[4];
	}
	fclose(f);
}

/* This process's CPU seconds so far. */
static double self_cpu(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
	       ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
}

static int cmp_int_rand(const void *a, const void *b)
{
	const int *x = a, *y = b;
	/* a fixed shuffle: keys hashed by a multiplicative hash */
	uint32_t hx = (uint32_t)*x * 2654435761u, hy = (uint32_t)*y * 2654435761u;

	return (hx > hy) - (hx < hy);
}

static int stage_child(void *arg)
{
	struct stage_cfg *c = arg;
	struct shelf *s = NULL;
	struct shelf_batch_item *items = NULL;
	char (*keys)[32] = NULL;
	int *idx = NULL, ret = 1;
	double ours[ROUNDS_MAX], ref[ROUNDS_MAX];
	char err[SHELF_ERR_BYTES];

	if (bench_cluster_enter(&c->cl) < 0)
		return 1;
	if (shelf_open(&s, c->cl.client, BENCH_CLUSTER_BROKER, err, sizeof(err)) < 0) {
		fprintf(stderr, "stage: client: %s\n", err);
		return 1;
	}
	shelf_set_timeout(s, 30000);
	shelf_set_max_inflight(s, INGEST_INFLIGHT);
	if (ingest(s, c->objects, INGEST_INFLIGHT) < 0)
		goto out;
	/* the batch's GETs in flight (the single GETs go one at a time) */
	shelf_set_max_inflight(s, c->inflight);
	keys = malloc((size_t)c->objects * sizeof(*keys));
	items = malloc((size_t)c->objects * sizeof(*items));
	idx = malloc((size_t)c->objects * sizeof(*idx));
	if (!keys || !items || !idx)
		goto out;
	/* the keys in a shuffled order (as a training epoch asks for samples) */
	for (int i = 0; i < c->objects; i++)
		idx[i] = i;
	qsort(idx, (size_t)c->objects, sizeof(*idx), cmp_int_rand);
	for (int i = 0; i < c->objects; i++) {
		key_of(idx[i], keys[i], sizeof(keys[i]));
		items[i] = (struct shelf_batch_item){ keys[i], strlen(keys[i]) };
	}
	for (int r = 0; r < c->rounds; r++) {
		double b0, a0, b1, a1, b2, a2, load_ours, load_ref, c0, c1, c2, us_ours, us_ref;

		/* each pass's share of the machine's CPU busy: near 100% means
		 * the nodes and the client together used every core */
		if (!c->warm && drop_cached(c) < c->cl.nodes) {
			fprintf(stderr, "stage: could not drop the drives' cached pages in %s\n",
				c->cl.cdir);
			goto out;
		}
		cpu_read(&b0, &a0);
		c0 = self_cpu();
		if (r % 2 == 0)
			ref[r] = single_pass(s, items, idx, c->objects, c->ref_objects);
		else
			ours[r] = batch_pass(s, items, idx, c->objects);
		if (!c->warm)
			drop_cached(c);
		cpu_read(&b1, &a1);
		c1 = self_cpu();
		if (r % 2 == 0)
			ours[r] = batch_pass(s, items, idx, c->objects);
		else
			ref[r] = single_pass(s, items, idx, c->objects, c->ref_objects);
		cpu_read(&b2, &a2);
		c2 = self_cpu();
		if (ours[r] < 0 || ref[r] < 0)
			goto out;
		us_ours = 1e6 * (r % 2 ? c1 - c0 : c2 - c1) / c->objects;
		us_ref = 1e6 * (r % 2 ? c2 - c1 : c1 - c0) / c->ref_objects;
		load_ours = r % 2 ? (b1 - b0) / (a1 - a0) : (b2 - b1) / (a2 - a1);
		load_ref = r % 2 ? (b2 - b1) / (a2 - a1) : (b1 - b0) / (a1 - a0);
		fprintf(stderr, "stage: round %d: get_batch %.0f objects/s (CPU %.0f%% busy, client "
			"%.0f us/object), one shelf_get at a time %.0f objects/s (CPU %.0f%% busy, "
			"client %.0f us/object): x%.1f (%s)\n", r + 1, ours[r], 100 * load_ours, us_ours,
			ref[r], 100 * load_ref, us_ref, ours[r] / ref[r],
			c->warm ? "warm: the drives' pages stay cached" : "cold: from the drives");
	}
	bench_line("batch_get_8k", bench_median(ours, c->rounds), bench_median(ref, c->rounds),
		   "obj/s", "shelf_get");
	ret = 0;
out:
	free(keys);
	free(items);
	free(idx);
	shelf_close(&s);
	return ret;
}

static int run_stage(int argc, char **argv)
{
	struct stage_cfg c = { .objects = 100000, .ref_objects = 5000, .rounds = 3, .inflight = 256 };
	const char *base = "build/bench", *script = NULL, *only = NULL;
	uint64_t large = 1ull << 30;
	unsigned large_inflight = 0;
	static const struct option lo[] = {
		{ "dir", 1, NULL, 'd' },      { "nodes", 1, NULL, 'n' },   { "chassis", 1, NULL, 'c' },
		{ "objects", 1, NULL, 'o' },  { "ref-objects", 1, NULL, 'r' },
		{ "rounds", 1, NULL, 'R' },   { "inflight", 1, NULL, 'i' },
		{ "cluster", 1, NULL, 'C' },  { "keep", 0, NULL, 'K' },    { "help", 0, NULL, 'h' },
		{ "large-size", 1, NULL, 'L' }, { "only", 1, NULL, 'O' },
		{ "large-inflight", 1, NULL, 'I' }, { "warm", 0, NULL, 'W' },
		{ NULL, 0, NULL, 0 }
	};
	int opt, ret;

	if (bench_stagecmd_wanted(argc, argv))
		return bench_stagecmd_run(argc, argv);
	c.cl.tag = "stage";
	c.cl.nodes = 24;
	c.cl.chassis = 3;
	c.cl.replicas = 2;
	c.cl.drive_size = "1G";
	optind = 1;
	while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (opt) {
		case 'd': base = optarg; break;
		case 'n': c.cl.nodes = atoi(optarg); break;
		case 'c': c.cl.chassis = atoi(optarg); break;
		case 'o': c.objects = atoi(optarg); break;
		case 'r': c.ref_objects = atoi(optarg); break;
		case 'R': c.rounds = atoi(optarg); break;
		case 'i': c.inflight = (unsigned)atoi(optarg); break;
		case 'C': script = optarg; break;
		case 'K': c.cl.keep = true; break;
		case 'L': large = bench_size_arg("--large-size", optarg); break;
		case 'O': only = optarg; break;
		case 'I': large_inflight = (unsigned)atoi(optarg); break;
		case 'W': c.warm = true; break;
		default:
			printf("usage: shelf-bench stage [--dir DIR] [--nodes 24] [--chassis 3] "
			       "[--objects 100000] [--ref-objects 5000] [--rounds 3] [--inflight 256] "
			       "[--cluster PATH] [--keep] [--large-size 1G] [--large-inflight N] "
			       "[--only large|batch] [--warm]\n"
			       "  a local cluster (tools/shelf-cluster) in DIR/stage, removed after; "
			       "needs root\n");
			return opt == 'h' ? 0 : 2;
		}
	}
	if (c.cl.nodes < 2 || c.cl.nodes > 99 || c.cl.chassis < 2 || c.cl.chassis > c.cl.nodes ||
	    c.objects < 1 || c.objects > 10000000 || c.ref_objects < 1 || c.rounds < 1 ||
	    c.rounds > ROUNDS_MAX || c.inflight < 1 || c.inflight > SHELF_MAX_INFLIGHT_MAX) {
		fprintf(stderr, "shelf-bench stage: --nodes 2..99, --chassis 2..nodes, --objects "
				"1..10000000, --rounds 1..%d, --inflight 1..%d\n", ROUNDS_MAX,
			SHELF_MAX_INFLIGHT_MAX);
		return 2;
	}
	if ((only && strcmp(only, "large") && strcmp(only, "batch")) || large < (1u << 20)) {
		fprintf(stderr, "shelf-bench stage: --only large or batch; --large-size 1M or more\n");
		return 2;
	}
	if (c.ref_objects > c.objects)
		c.ref_objects = c.objects;
	ret = bench_cluster_init(&c.cl, base, script);
	if (ret)
		return ret == 77 ? 0 : ret;
	ret = bench_cluster_up(&c.cl) < 0 ? 1 : 0;
	if (ret == 0 && (!only || !strcmp(only, "large")))
		ret = bench_large_run(&c.cl, large, large_inflight);
	if (ret == 0 && (!only || !strcmp(only, "batch")))
		ret = bench_cluster_child(stage_child, &c);
	bench_cluster_down(&c.cl);
	return ret;
}

static const struct bench_cmd stage_cmd = {
	"stage",
	"ML staging on a local cluster in namespaces (needs root) [--dir DIR] [--objects N]",
	run_stage, true,
};
BENCH_COMMAND(stage_cmd)
