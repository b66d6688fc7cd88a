/*
 * shelf-bench store: the store engine against fio on the same drive file,
 * in the same run. fio uses ioengine=io_uring and direct=1, as the store.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"
#include "node.h"
#include "overlay.h"

#define BIG_BYTES (1u << 20)
#define SMALL_BYTES 4096u

struct bench_ctx {
	const char *drive;
	uint64_t size;
	uint64_t index_objects;
	uint64_t recover_records;
};

/* ---- fio ---- */

static double json_number(const char *json, const char *section, const char *field)
{
	char pat[64];
	const char *p = strstr(json, section);

	if (!p)
		return -1;
	snprintf(pat, sizeof(pat), "\"%s\" :", field);
	p = strstr(p, pat);
	return p ? strtod(p + strlen(pat), NULL) : -1;
}

/* Run fio; returns bytes/s (or IOPS when want_iops) of `rw` ("read"/"write"). */
static double fio(const struct bench_ctx *c, const char *name, const char *args, const char *rw,
		  bool want_iops)
{
	char cmd[1024];
	static char out[1 << 16];
	double v;

	snprintf(cmd, sizeof(cmd),
		 "fio --name=%s --filename=%s --ioengine=io_uring --direct=1 --size=%" PRIu64
		 " --output-format=json --group_reporting %s 2>/dev/null",
		 name, c->drive, c->size, args);
	if (bench_capture(cmd, out, sizeof(out)) < 0) {
		fprintf(stderr, "shelf-bench: fio failed: %s\n", cmd);
		return -1;
	}
	v = json_number(out, rw[0] == 'r' ? "\"read\" :" : "\"write\" :", want_iops ? "iops" : "bw_bytes");
	if (v <= 0)
		fprintf(stderr, "shelf-bench: no figure from fio for %s\n", name);
	return v;
}

/* ---- our side ---- */

struct driver {
	struct node_store *s;
	uint64_t issued, done, total, errors;
	unsigned inflight, depth;
	size_t vlen;
	uint8_t *val;
	uint64_t *order;    /* for gets: key numbers in the order to read */
	bool get;
	const char *prefix;
};

static void drv_cb(void *arg, int res, const struct node_store_objstat *st)
{
	struct driver *d = arg;

	d->inflight--;
	d->done++;
	if (res < 0)
		d->errors++;
}

static void drv_get_cb(void *arg, int res, struct node_store_rbuf **rb,
		       const struct node_store_objstat *st)
{
	struct driver *d = arg;

	d->inflight--;
	d->done++;
	if (res < 0 || (*rb)->len != d->vlen)
		d->errors++;
}

static int drive_ops(struct driver *d)
{
	while (d->done < d->total) {
		while (d->inflight < d->depth && d->issued < d->total) {
			char key[48];
			uint64_t n = d->order ? d->order[d->issued] : d->issued;
			int ret;

			snprintf(key, sizeof(key), "%s%012" PRIu64, d->prefix, n);
			ret = d->get ? node_store_get_async(d->s, key, strlen(key), 0, UINT64_MAX, drv_get_cb, d)
				     : node_store_put_async(d->s, key, strlen(key), d->val, d->vlen, drv_cb, d);
			if (ret < 0) {
				fprintf(stderr, "shelf-bench: %s '%s': %s\n", d->get ? "get" : "put", key,
					node_store_errmsg(d->s));
				return ret;
			}
			d->issued++;
			d->inflight++;
		}
		if (node_store_poll(d->s, true) < 0)
			return -EIO;
	}
	if (d->errors) {
		fprintf(stderr, "shelf-bench: %" PRIu64 " operations failed: %s\n", d->errors,
			node_store_errmsg(d->s));
		return -EIO;
	}
	return 0;
}

static int store_open(struct node_store **s, const char *drive, bool format, uint64_t ckpt_records,
		      unsigned wbufs, size_t wbuf_bytes)
{
	struct node_store_opts o;
	char err[256];
	int ret;

	node_store_opts_init(&o);
	o.path = drive;
	o.force_format = format;
	o.format = format;
	o.segment_bytes = 64u << 20;
	o.write_buffers = wbufs;
	o.write_buffer_bytes = wbuf_bytes;
	o.read_cache_bytes = 64u << 20; /* 32 reads of 1 MiB in flight */
	/* the engine against the drive: fio reads with O_DIRECT, so do we
	 * (the node's GETs go through the page cache; shelf-bench serve
	 * measures those against nginx) */
	o.page_cache_reads = false;
	if (ckpt_records)
		o.ckpt_records = ckpt_records;
	ret = node_store_open(s, &o, err, sizeof(err));
	if (ret < 0)
		fprintf(stderr, "shelf-bench: %s\n", err);
	return ret;
}

static double timed(struct driver *d)
{
	double t0 = bench_now();

	if (drive_ops(d) < 0)
		return -1;
	if (!d->get && node_store_sync(d->s) < 0)
		return -1;
	return bench_now() - t0;
}

#define BENCH_REPS 3

/* One round of ours: format, put n objects of vlen, then read them back
 * (in key order, or `reads` random ones). Fills MB/s or IOPS. */
static int ours_round(const struct bench_ctx *c, size_t vlen, uint64_t n, unsigned depth,
		      unsigned rdepth, uint64_t reads, double *put_rate, double *get_rate)
{
	struct node_store *s = NULL;
	struct driver d;
	uint8_t *val = malloc(vlen);
	double t;
	int ret = -1;

	if (!val)
		return -1;
	for (size_t i = 0; i < vlen; i++)
		val[i] = (uint8_t)(i * 2654435761u >> 13);
	if (store_open(&s, c->drive, true, 0, 32, 1u << 20) < 0)
		goto out;
	memset(&d, 0, sizeof(d));
	d.s = s;
	d.depth = depth;
	d.vlen = vlen;
	d.val = val;
	d.total = n;
	d.prefix = "obj/";
	t = timed(&d);
	if (t < 0)
		goto out;
	*put_rate = n * (double)vlen / t / 1e6;
	memset(&d, 0, sizeof(d));
	d.s = s;
	d.get = true;
	d.depth = rdepth;
	d.vlen = vlen;
	d.total = reads ? reads : n;
	d.prefix = "obj/";
	if (reads) {
		struct node_rng r;

		d.order = malloc(reads * sizeof(*d.order));
		if (!d.order)
			goto out;
		node_rng_seed(&r, 42);
		for (uint64_t i = 0; i < reads; i++)
			d.order[i] = node_rng_below(&r, n);
	}
	t = timed(&d);
	free(d.order);
	if (t < 0)
		goto out;
	*get_rate = reads ? reads / t : n * (double)vlen / t / 1e6;
	ret = 0;
out:
	node_store_close(&s);
	free(val);
	return ret;
}

static int bench_big_and_small(const struct bench_ctx *c)
{
	uint64_t nbig = c->size / 4 / BIG_BYTES, nsmall = c->size / 16 / SMALL_BYTES;
	double ow[BENCH_REPS], or_[BENCH_REPS], rw[BENCH_REPS], rr[BENCH_REPS];
	double sw[BENCH_REPS], sr[BENCH_REPS], fw[BENCH_REPS], fr[BENCH_REPS], rd[BENCH_REPS];
	char args[256];

	/*
	 * Alternate fio and ours, several times, on the same file; medians.
	 * Durable 1 MiB puts run 64 deep: each waits for the flush that covers
	 * it, so 64 puts keep about 32 writes at the drive, as fio's iodepth.
	 * Reads run at fio's depth.
	 */
	for (int i = 0; i < BENCH_REPS; i++) {
		snprintf(args, sizeof(args), "--rw=write --bs=1M --iodepth=32 --end_fsync=1 --io_size=%" PRIu64,
			 nbig * BIG_BYTES);
		rw[i] = fio(c, "seqwrite1m", args, "write", false);
		snprintf(args, sizeof(args), "--rw=read --bs=1M --iodepth=32 --io_size=%" PRIu64, nbig * BIG_BYTES);
		rr[i] = fio(c, "seqread1m", args, "read", false);
		/* fio made as durable as a store must be: a flush every 16 MiB */
		snprintf(args, sizeof(args), "--rw=write --bs=1M --iodepth=32 --fdatasync=16 --io_size=%" PRIu64,
			 nbig * BIG_BYTES);
		rd[i] = fio(c, "seqwrite1m-durable", args, "write", false);
		if (ours_round(c, BIG_BYTES, nbig, 64, 32, 0, &ow[i], &or_[i]) < 0)
			return -1;
	}
	bench_line("store_put_1m", bench_median(ow, BENCH_REPS), bench_median(rw, BENCH_REPS) / 1e6,
		   "MB/s", "fio-seqwrite-bs1M-qd32-end_fsync");
	bench_line("store_put_1m_vs_durable_fio", bench_median(ow, BENCH_REPS),
		   bench_median(rd, BENCH_REPS) / 1e6, "MB/s", "fio-seqwrite-bs1M-qd32-fdatasync16");
	bench_line("store_seq_read_1m", bench_median(or_, BENCH_REPS),
		   bench_median(rr, BENCH_REPS) / 1e6, "MB/s", "fio-seqread-bs1M-qd32");
	for (int i = 0; i < BENCH_REPS; i++) {
		snprintf(args, sizeof(args),
			 "--rw=write --bs=4k --iodepth=64 --fdatasync=64 --io_size=%" PRIu64, nsmall * SMALL_BYTES);
		fw[i] = fio(c, "seqwrite4k", args, "write", false);
		fr[i] = fio(c, "randread4k", "--rw=randread --bs=4k --iodepth=64 --runtime=4 --time_based",
			    "read", true);
		if (ours_round(c, SMALL_BYTES, nsmall, 64, 64, 200000, &sw[i], &sr[i]) < 0)
			return -1;
	}
	bench_line("store_put_4k", bench_median(sw, BENCH_REPS), bench_median(fw, BENCH_REPS) / 1e6,
		   "MB/s", "fio-seqwrite-bs4k-qd64-fdatasync64");
	bench_line("store_rand_get_4k", bench_median(sr, BENCH_REPS), bench_median(fr, BENCH_REPS),
		   "IOPS", "fio-randread-bs4k-qd64");
	return 0;
}

static int bench_index(const struct bench_ctx *c)
{
	struct node_store *s = NULL;
	struct driver d;
	struct node_store_stats st;
	uint8_t val[16];
	double t0, t, ref;
	int ret = -1;

	memset(val, 7, sizeof(val));
	memset(&d, 0, sizeof(d));
	if (store_open(&s, c->drive, true, c->index_objects * 4, 16, 256u << 10) < 0)
		return -1;
	d.s = s;
	d.depth = 1024;
	d.vlen = sizeof(val);
	d.val = val;
	d.total = c->index_objects;
	d.prefix = "obj/"; /* 16-byte keys */
	if (timed(&d) < 0)
		goto out;
	node_store_stats(s, &st);
	bench_line("store_index_bytes_per_object", st.index_bytes_per_object, 0, "bytes", "-");
	fprintf(stderr, "  (%" PRIu64 " objects, 16-byte keys and values; index %.1f MiB; 16 bytes of each are the key)\n",
		st.objects, st.index_bytes / 1048576.0);

	/* clean restart: close writes a checkpoint; open loads it */
	node_store_close(&s);
	t0 = bench_now();
	if (store_open(&s, c->drive, false, c->index_objects * 4, 16, 256u << 10) < 0)
		goto out;
	t = bench_now() - t0;
	node_store_stats(s, &st);
	if (st.objects != c->index_objects) {
		fprintf(stderr, "shelf-bench: restart found %" PRIu64 " objects, not %" PRIu64 "\n",
			st.objects, c->index_objects);
		goto out;
	}
	bench_line("store_restart_ms", t * 1000, 0, "ms", "-");

	/* crash recovery with the last checkpoint recover_records behind */
	if (node_store_checkpoint(s) < 0)
		goto out;
	memset(&d, 0, sizeof(d));
	d.s = s;
	d.depth = 1024;
	d.vlen = sizeof(val);
	d.val = val;
	d.total = c->recover_records;
	d.prefix = "new/";
	if (timed(&d) < 0)
		goto out;
	{
		struct node_disk *disk = node_store_abandon(&s); /* a crash: no checkpoint */

		node_disk_destroy(&disk);
	}
	t0 = bench_now();
	if (store_open(&s, c->drive, false, 0, 16, 256u << 10) < 0)
		goto out;
	t = bench_now() - t0;
	node_store_stats(s, &st);
	if (st.recovered_records < c->recover_records) {
		fprintf(stderr, "shelf-bench: recovery replayed %" PRIu64 " records, expected %" PRIu64 "\n",
			st.recovered_records, c->recover_records);
		goto out;
	}
	bench_line("store_recover_ms", t * 1000, 0, "ms", "-");
	fprintf(stderr, "  (%" PRIu64 " records replayed after the checkpoint)\n", st.recovered_records);
	ref = t;

	/* the same recovery with damaged records in the replayed region: one
	 * flipped value byte in every 1000th record written after the
	 * checkpoint (opening wrote no checkpoint, so the region is the same) */
	{
		uint64_t offs[128], n = 0, before = st.damaged_records;
		struct node_disk *disk;
		int fd;

		for (uint64_t i = 0; i < c->recover_records && n < 128; i += 1000) {
			char key[48];
			uint64_t off, size;

			snprintf(key, sizeof(key), "new/%012" PRIu64, i);
			if (node_store_locate(s, key, strlen(key), &off, &size) == 0)
				offs[n++] = off + size - 16 - 1; /* a value byte */
		}
		disk = node_store_abandon(&s);
		node_disk_destroy(&disk);
		fd = open(c->drive, O_RDWR);
		for (uint64_t i = 0; fd >= 0 && i < n; i++) {
			uint8_t b;

			if (pread(fd, &b, 1, (off_t)offs[i]) == 1) {
				b ^= 0x40;
				if (pwrite(fd, &b, 1, (off_t)offs[i]) != 1)
					break;
			}
		}
		if (fd >= 0) {
			fsync(fd);
			close(fd);
		}
		t0 = bench_now();
		if (store_open(&s, c->drive, false, 0, 16, 256u << 10) < 0)
			goto out;
		t = bench_now() - t0;
		node_store_stats(s, &st);
		if (st.damaged_objects < n) {
			fprintf(stderr, "shelf-bench: recovery found %" PRIu64 " damaged objects, expected %" PRIu64 " (%" PRIu64 " records newly counted)\n",
				st.damaged_objects, n, st.damaged_records - before);
			goto out;
		}
		bench_line("store_recover_damaged_ms", t * 1000, ref * 1000, "ms", "store_recover_ms");
		fprintf(stderr, "  (%" PRIu64 " damaged records among %" PRIu64 " replayed; target ratio <= 1.5)\n",
			n, st.recovered_records);
	}
	ret = 0;
out:
	node_store_close(&s);
	return ret;
}

/*
 * Space under churn: 8 MiB puts, four in flight, half of them overwriting
 * a random existing key and half adding one, on a drive of its own
 * (SPACE_DRIVE_BYTES, 128 MiB segments), until the first no-space.
 * store_live_fraction_at_enospc is the live bytes then over the capacity
 * (every segment's bytes).
 */
#define SPACE_DRIVE_BYTES (8ull << 30)
#define SPACE_VAL_BYTES (8u << 20)
#define SPACE_SLOTS 4

struct space_put {
	bool done;
	int res;
};

static void space_put_done(void *arg, int res, const struct node_store_objstat *st)
{
	struct space_put *p = arg;

	(void)st;
	p->done = true;
	p->res = res;
}

static int bench_space(const char *dir_path)
{
	char path[600];
	struct node_store *s = NULL;
	struct node_store_opts o;
	struct node_store_stats st;
	struct space_put p[SPACE_SLOTS];
	uint8_t *val = NULL;
	char err[256], key[32];
	uint64_t nkeys = 0, rng = 0x9e3779b97f4a7c15ull, live = 0, puts = 0;
	int ret = -1, fd;
	double t0;

	snprintf(path, sizeof(path), "%s/store-space.img", dir_path);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || ftruncate(fd, (off_t)SPACE_DRIVE_BYTES) < 0) {
		fprintf(stderr, "shelf-bench: cannot create drive '%s': %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	val = malloc(SPACE_VAL_BYTES);
	if (!val)
		goto out;
	memset(val, 0x5a, SPACE_VAL_BYTES);
	node_store_opts_init(&o);
	o.path = path;
	o.format = o.force_format = true;
	o.segment_bytes = 128u << 20;
	o.page_cache_reads = false;
	if (node_store_open(&s, &o, err, sizeof(err)) < 0) {
		fprintf(stderr, "shelf-bench: %s\n", err);
		goto out;
	}
	t0 = bench_now();
	for (bool refused = false; !refused;) {
		node_store_stats(s, &st);
		live = st.live_bytes;
		for (int i = 0; i < SPACE_SLOTS; i++) {
			uint64_t k;

			rng ^= rng << 13;
			rng ^= rng >> 7;
			rng ^= rng << 17;
			k = nkeys && (rng & 1) ? (rng >> 1) % nkeys : nkeys++;
			snprintf(key, sizeof(key), "space/%08" PRIu64, k);
			p[i] = (struct space_put){ 0 };
			if (node_store_put_async(s, key, strlen(key), val, SPACE_VAL_BYTES, space_put_done,
						 &p[i]) < 0)
				goto out;
		}
		for (int i = 0; i < SPACE_SLOTS; i++) {
			while (!p[i].done)
				if (node_store_poll(s, true) < 0)
					goto out;
			if (p[i].res == -ENOSPC)
				refused = true;
			else if (p[i].res < 0) {
				fprintf(stderr, "shelf-bench: put failed: %s\n", node_store_errmsg(s));
				goto out;
			}
			puts++;
		}
	}
	node_store_stats(s, &st);
	bench_line("store_live_fraction_at_enospc", (double)live / st.capacity_bytes, 0, "fraction", "-");
	fprintf(stderr, "  (%" PRIu64 " puts of 8 MiB in %.1f s, half overwrites; first no-space at %" PRIu64
		" MiB live of %" PRIu64 " MiB capacity, %" PRIu64 " MiB usable; %" PRIu64 " relocations: %s)\n",
		puts, bench_now() - t0, live >> 20, st.capacity_bytes >> 20, st.usable_bytes >> 20,
		st.relocations, node_store_errmsg(s));
	ret = 0;
out:
	node_store_close(&s);
	free(val);
	unlink(path);
	return ret;
}

static int run_store(int argc, char **argv)
{
	struct bench_ctx c = { .size = 2ull << 30, .index_objects = 1000000, .recover_records = 100000 };
	char path[512] = "";
	const char *dir = NULL;
	int opt, ret;
	static const struct option lo[] = {
		{ "drive", required_argument, NULL, 'd' }, { "size", required_argument, NULL, 's' },
		{ "dir", required_argument, NULL, 'D' },   { "objects", required_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },        { NULL, 0, NULL, 0 },
	};

	optind = 1;
	while ((opt = getopt_long(argc, argv, "d:s:D:n:h", lo, NULL)) != -1) {
		switch (opt) {
		case 'd': snprintf(path, sizeof(path), "%s", optarg); break;
		case 's': c.size = bench_size_arg("--size", optarg); break;
		case 'D': dir = optarg; break;
		case 'n': c.index_objects = bench_size_arg("--objects", optarg); break;
		case 'h':
			printf("usage: shelf-bench store [--drive PATH] [--size BYTES] [--objects N]\n"
			       "  PATH is created (sparse) if missing and overwritten; default DIR/store-bench.img\n");
			return 0;
		default:
			return 2;
		}
	}
	if (!*path) {
		if (dir)
			mkdir(dir, 0755);
		snprintf(path, sizeof(path), "%s/store-bench.img", dir ? dir : ".");
	}
	if (c.size < (512ull << 20)) {
		fprintf(stderr, "shelf-bench: --size must be at least 512M\n");
		return 2;
	}
	c.drive = path;
	{
		int fd = open(path, O_RDWR | O_CREAT, 0600);

		if (fd < 0 || ftruncate(fd, (off_t)c.size) < 0) {
			fprintf(stderr, "shelf-bench: cannot create drive '%s': %s\n", path, strerror(errno));
			if (fd >= 0)
				close(fd);
			return 1;
		}
		close(fd);
	}
	fprintf(stderr, "store bench on '%s' (%" PRIu64 " MiB)\n", path, c.size >> 20);
	ret = bench_big_and_small(&c);
	if (ret == 0)
		ret = bench_index(&c);
	if (ret == 0)
		ret = bench_space(dir ? dir : ".");
	return ret;
}

static const struct bench_cmd store_cmd = {
	"store", "store engine vs fio on the same drive file [--drive PATH --size BYTES]",
	run_store, true,
};
BENCH_COMMAND(store_cmd)
