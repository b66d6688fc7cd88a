/*
 * shelf-bench array: replicated slices on a local cluster. The bench brings
 * up its own cluster with tools/shelf-cluster (its own namespace prefix and
 * directory; 6 nodes over 3 chassis by default), with the default slice at
 * R=2 and a slice `r1` at R=1 over the same members, and adds a client
 * namespace of its own, joined to the backplane bridge by a veth pair, so
 * that the client's interface counts exactly the bytes the client sends.
 * libshelf runs in-process in that namespace (setns), in a forked child;
 * the parent takes the cluster down and deletes the directory whatever the
 * child did (error, crash, signal).
 *
 * Figures (same keys and the same bytes on both slices, passes alternating
 * between them, medians):
 *   array_put_1m_r2               PUT MB/s on R=2 against R=1
 *   array_get_1m_r2               GET MB/s on R=2 against R=1
 *   array_failover_p99_ms         p99 of a fresh client's GET whose first
 *                                 replica was SIGKILLed just before, against
 *                                 the p99 of the same GETs before the kill
 *   array_client_uplink_bytes_r2  bytes the client's interface sent per PUT
 *                                 of N bytes on R=2, against N
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "overlay.h"
#include "shelf.h"

#define OBJ (1u << 20)
#define ROUNDS 5
#define GET_REPEAT 3 /* a GET pass reads every object this many times */
#define STREAMS_MAX 64
/* shelf-cluster's backplane: the broker's address and port, fixed there */
#define BP_PREFIX "fd00:5e1f:0:1"
#define BROKER "tcp://[" BP_PREFIX "::1]:7400"
#define CLIENT_ADDR BP_PREFIX "::c1:1" /* the bench client's own address */
#define SLICE_R2 "default"
#define SLICE_R1 "r1"

struct cfg {
	char dir[1024];         /* the bench's directory, removed at the end */
	char cdir[1040];        /* the cluster's --dir */
	char client[1080];      /* the client directory issued by the broker */
	char script[1100];      /* tools/shelf-cluster */
	char nsp[32];           /* SHELF_CLUSTER_NS */
	int nodes, chassis, objects, streams, samples;
	bool keep;              /* --keep: leave the directory (logs) after the cluster went down */
	uint64_t seed;
};

/* ---- processes ------------------------------------------------------------ */

/* Run argv (NULL-terminated), its output appended to log (NULL: inherited).
 * 0, or -ECHILD when it failed. */
static int run(const char *log, char *const argv[])
{
	pid_t pid = fork();
	int st;

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		if (log) {
			int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);

			if (fd >= 0) {
				dup2(fd, 1);
				dup2(fd, 2);
				close(fd);
			}
		}
		execvp(argv[0], argv);
		fprintf(stderr, "cannot run '%s': %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -ECHILD;
}

/* shelf-cluster CMD --dir DIR ARGS... */
static int cluster(const struct cfg *c, const char *log, const char *cmd, const char *a1,
		   const char *a2, const char *a3, const char *a4, const char *a5, const char *a6)
{
	char *argv[] = { (char *)c->script, (char *)cmd, "--dir", (char *)c->cdir, (char *)a1,
			 (char *)a2, (char *)a3, (char *)a4, (char *)a5, (char *)a6, NULL };

	return run(log, argv);
}

static void tail_log(const char *path)
{
	char cmd[PATH_MAX + 32];

	snprintf(cmd, sizeof(cmd), "tail -n 5 '%s' >&2", path);
	if (system(cmd) != 0)
		return;
}

/* ---- the cluster ---------------------------------------------------------- */

/*
 * A client namespace on the backplane: NSP-cl, its eth0 a veth pair whose
 * other end is a port of the backplane bridge. That end gets the highest
 * unicast address: a bridge takes the lowest address of its ports, and a
 * bridge whose address changed under running nodes loses their frames to
 * the broker (on its address) until their neighbour entries expire, so the
 * broker would mark every node down.
 */
static int client_ns_up(const struct cfg *c, const char *log)
{
	char cmd[4096];

	snprintf(cmd, sizeof(cmd),
		 "set -e; ip netns add %1$s-cl; "
		 "ip link add %1$sc address fe:ff:ff:ff:ff:fe type veth peer name eth0 netns %1$s-cl; "
		 "ip link set %1$sc netns %1$s-bp; "
		 "ip -n %1$s-bp link set %1$sc master br0 up; "
		 "ip -n %1$s-cl link set lo up; ip -n %1$s-cl link set eth0 up; "
		 "ip -n %1$s-cl addr add " CLIENT_ADDR "/64 dev eth0 nodad; "
		 "ip -n %1$s-cl -6 route add fd00::/8 dev eth0 "
		 ">>'%2$s' 2>&1",
		 c->nsp, log);
	return system(cmd) == 0 ? 0 : -ECHILD;
}

static void client_ns_down(const struct cfg *c)
{
	char ns[64];
	char *argv[] = { "ip", "netns", "del", ns, NULL };

	snprintf(ns, sizeof(ns), "%s-cl", c->nsp);
	run("/dev/null", argv);
}

/* Wait until every node logged its address in slice (20 s at most). */
static int wait_slice(const struct cfg *c, const char *slice)
{
	char needle[128], path[PATH_MAX + 16], line[512];

	snprintf(needle, sizeof(needle), "slice '%s': address ", slice);
	for (int t = 0; t < 200; t++) {
		int have = 0;

		for (int i = 1; i <= c->nodes; i++) {
			FILE *f;

			snprintf(path, sizeof(path), "%s/n%02d/log", c->cdir, i);
			f = fopen(path, "r");
			if (!f)
				continue;
			while (fgets(line, sizeof(line), f))
				if (strstr(line, needle)) {
					have++;
					break;
				}
			fclose(f);
		}
		if (have == c->nodes)
			return 0;
		usleep(100000);
	}
	return -ETIMEDOUT;
}

static int cluster_up(const struct cfg *c, const char *log)
{
	char n[16], ch[16], path[PATH_MAX + 32];
	int ret;

	snprintf(n, sizeof(n), "%d", c->nodes);
	snprintf(ch, sizeof(ch), "%d", c->chassis);
	fprintf(stderr, "array: %d nodes over %d chassis in %s (namespaces %s-*)\n", c->nodes,
		c->chassis, c->cdir, c->nsp);
	/* small drives: the bench writes a few hundred MiB over all of them */
	ret = run(log, (char *[]){ (char *)c->script, "up", "--dir", (char *)c->cdir, "--nodes", n,
				   "--chassis", ch, "--replicas", "2", "--drive-size", "2G", NULL });
	if (ret == 0)
		ret = run(log, (char *[]){ (char *)c->script, "exec", "--dir", (char *)c->cdir,
					   "--", "shelf", "slice", "create", SLICE_R1, "--replicas",
					   "1", "--members", "all", NULL });
	snprintf(path, sizeof(path), "%s/broker", c->cdir);
	if (ret == 0)
		ret = run(log, (char *[]){ (char *)c->script, "exec", "--dir", (char *)c->cdir,
					   "--", "shelf-broker", "client", "--dir", path, "--name",
					   "bench", "--slices", SLICE_R2 "," SLICE_R1, NULL });
	for (unsigned i = 0; i < 2 && ret == 0; i++) {
		const char *slice = i ? SLICE_R1 : SLICE_R2;

		if ((ret = wait_slice(c, slice)) < 0)
			fprintf(stderr, "array: not every node joined slice '%s' within 20 s\n", slice);
	}
	if (ret == 0)
		ret = client_ns_up(c, log);
	if (ret < 0) {
		fprintf(stderr, "array: cannot bring the cluster up; the end of %s:\n", log);
		tail_log(log);
	}
	return ret;
}

/* The node (1..N) whose log says it has addr in slice, or -ENOENT. */
static int node_of_addr(const struct cfg *c, const char *slice, const char *addr)
{
	char needle[256], path[PATH_MAX + 16], line[512];

	snprintf(needle, sizeof(needle), "slice '%s': address %s on ", slice, addr);
	for (int i = 1; i <= c->nodes; i++) {
		FILE *f;
		bool found = false;

		snprintf(path, sizeof(path), "%s/n%02d/log", c->cdir, i);
		f = fopen(path, "r");
		if (!f)
			continue;
		while (!found && fgets(line, sizeof(line), f))
			found = strstr(line, needle) != NULL;
		fclose(f);
		if (found)
			return i;
	}
	return -ENOENT;
}

/* ---- the workload --------------------------------------------------------- */

struct work {
	const struct cfg *c;
	uint8_t *data;          /* objects * OBJ bytes: object i at i * OBJ */
	struct shelf *cl[STREAMS_MAX];
};

struct pass {
	struct work *w;
	const char *slice;
	bool put;
	int stream;
	int fails;
	char err[SHELF_ERR_BYTES];
};

static void key_of(int i, char *k, size_t len)
{
	snprintf(k, len, "bench/%05d", i);
}

static void *pass_thread(void *arg)
{
	struct pass *p = arg;
	struct work *w = p->w;
	char key[32];

	for (int n = p->stream; n < w->c->objects * (p->put ? 1 : GET_REPEAT); n += w->c->streams) {
		int i = n % w->c->objects;
		const uint8_t *want = w->data + (size_t)i * OBJ;
		int ret;

		key_of(i, key, sizeof(key));
		if (p->put) {
			ret = shelf_put(w->cl[p->stream], p->slice, key, strlen(key), want, OBJ, p->err,
					sizeof(p->err));
		} else {
			void *got = NULL;
			size_t glen = 0;

			ret = shelf_get(w->cl[p->stream], p->slice, key, strlen(key), 0, UINT64_MAX,
					&got, &glen, NULL, p->err, sizeof(p->err));
			if (ret == 0 && (glen != OBJ || memcmp(got, want, OBJ) != 0)) {
				snprintf(p->err, sizeof(p->err), "get '%s': wrong bytes (%zu)", key, glen);
				ret = -EIO;
			}
			free(got);
		}
		if (ret < 0) {
			p->fails++;
			return NULL;
		}
	}
	return NULL;
}

/* One pass: every object put (or got and checked) on slice by the streams.
 * Returns MB/s, or -1 after printing what failed. */
static double pass_run(struct work *w, const char *slice, bool put)
{
	struct pass p[STREAMS_MAX];
	pthread_t th[STREAMS_MAX];
	double t0 = bench_now(), dt;
	int fails = 0;

	for (int i = 0; i < w->c->streams; i++) {
		p[i] = (struct pass){ .w = w, .slice = slice, .put = put, .stream = i };
		if (pthread_create(&th[i], NULL, pass_thread, &p[i]) != 0) {
			fprintf(stderr, "array: cannot start a thread\n");
			for (int j = 0; j < i; j++)
				pthread_join(th[j], NULL);
			return -1;
		}
	}
	for (int i = 0; i < w->c->streams; i++) {
		pthread_join(th[i], NULL);
		if (p[i].fails) {
			fprintf(stderr, "array: %s on slice '%s': %s\n", put ? "put" : "get", slice,
				p[i].err);
			fails++;
		}
	}
	dt = bench_now() - t0;
	return fails ? -1 : (double)w->c->objects * (put ? 1 : GET_REPEAT) * OBJ / dt / 1e6;
}

/* Bytes sent by eth0 of this thread's network namespace. */
static int64_t tx_bytes(void)
{
	char line[512];
	int64_t v = -1;
	FILE *f = fopen("/proc/thread-self/net/dev", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long rx, f1, f2, f3, f4, f5, f6, f7, tx;
		char *p = strstr(line, "eth0:");

		if (!p)
			continue;
		if (sscanf(p + 5, "%llu %llu %llu %llu %llu %llu %llu %llu %llu", &rx, &f1, &f2, &f3,
			   &f4, &f5, &f6, &f7, &tx) == 9)
			v = (int64_t)tx;
	}
	fclose(f);
	return v;
}

/*
 * A client of the bench's directory. With fetch, it fetches both slices'
 * maps from the broker now (so that no timed call does) and checks their R;
 * without, it contacts nothing until its first call, which then reads the
 * maps from the client directory's cache, as a fresh `shelf get` does (and
 * the broker, which limits the messages of one client key to 20 a second,
 * is not asked by a hundred clients at once).
 */
static int open_client(const struct cfg *c, struct shelf **out, bool fetch)
{
	static const char *const slices[2] = { SLICE_R1, SLICE_R2 };
	char err[SHELF_ERR_BYTES];
	int ret = shelf_open(out, c->client, BROKER, err, sizeof(err));

	if (ret == 0)
		shelf_set_timeout(*out, 20000);
	for (unsigned r = 1; ret == 0 && fetch && r <= 2; r++) {
		struct shelf_map_info info;
		struct shelf_member *m = NULL;

		ret = shelf_map(*out, slices[r - 1], &info, &m, err, sizeof(err));
		free(m);
		if (ret == 0 && info.replicas != r) {
			snprintf(err, sizeof(err), "slice '%s' has R=%u, not %u", slices[r - 1],
				 info.replicas, r);
			ret = -EINVAL;
		}
	}
	if (ret < 0) {
		fprintf(stderr, "array: client: %s\n", err);
		shelf_close(out);
	}
	return ret;
}

/* What a pass cost: CPU seconds of the nodes and of this client, and the
 * drive holding the cluster's directory (busy ms, MB written). */
struct usage {
	double node_cpu, self_cpu, disk_busy_ms, disk_mb;
};

static double proc_cpu(const char *pidtext)
{
	char path[64], buf[1024], *p;
	unsigned long long ut = 0, st = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%s/stat", pidtext);
	f = fopen(path, "r");
	if (!f)
		return 0;
	p = fgets(buf, sizeof(buf), f) ? strrchr(buf, ')') : NULL;
	fclose(f);
	/* after "pid (comm)": state is field 3, utime 14, stime 15 */
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
			 &st) != 2)
		return 0;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void usage_read(const struct cfg *c, struct usage *u)
{
	char path[PATH_MAX + 32], pid[32], line[512];
	struct stat sb;
	FILE *f;

	memset(u, 0, sizeof(*u));
	for (int i = 1; i <= c->nodes; i++) {
		snprintf(path, sizeof(path), "%s/n%02d/pid", c->cdir, i);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(pid, sizeof(pid), f)) {
			pid[strcspn(pid, "\n")] = 0;
			u->node_cpu += proc_cpu(pid);
		}
		fclose(f);
	}
	u->self_cpu = proc_cpu("self");
	f = stat(c->cdir, &sb) == 0 ? fopen("/proc/diskstats", "r") : NULL;
	while (f && fgets(line, sizeof(line), f)) {
		unsigned ma, mi;
		unsigned long long wsec, ticks;

		/* major minor name r rm rsec rms w wm wsec wms inflight io_ticks */
		if (sscanf(line, "%u %u %*s %*u %*u %*u %*u %*u %*u %llu %*u %*u %llu", &ma, &mi,
			   &wsec, &ticks) == 4 &&
		    ma == major(sb.st_dev) && mi == minor(sb.st_dev)) {
			u->disk_busy_ms = (double)ticks;
			u->disk_mb = (double)wsec * 512 / 1e6;
		}
	}
	if (f)
		fclose(f);
}

static void usage_note(const char *what, const struct usage *a, const struct usage *b,
		       double mbs, double mb)
{
	double wall = mb / mbs;

	fprintf(stderr,
		"array:   %s %.0f MB/s: nodes %.2f CPU-s (%.0f%% of 2 cores), client %.2f CPU-s, "
		"nodes+client %.1f CPU-ms/MB; the drive (all its writers) %.0f%% busy, %.0f MB written\n",
		what, mbs, b->node_cpu - a->node_cpu,
		100 * (b->node_cpu - a->node_cpu) / wall / 2, b->self_cpu - a->self_cpu,
		1e3 * (b->node_cpu - a->node_cpu + b->self_cpu - a->self_cpu) / mb,
		100 * (b->disk_busy_ms - a->disk_busy_ms) / 1e3 / wall, b->disk_mb - a->disk_mb);
}

/* One stream, one PUT at a time: the median latency on slice (ms). */
static double put_latency(struct work *w, const char *slice)
{
	double ms[16];
	char key[32], err[SHELF_ERR_BYTES];

	for (int i = 0; i < 16; i++) {
		double t0 = bench_now();

		key_of(i % w->c->objects, key, sizeof(key));
		if (shelf_put(w->cl[0], slice, key, strlen(key), w->data + (size_t)(i % w->c->objects) * OBJ,
			      OBJ, err, sizeof(err)) < 0) {
			fprintf(stderr, "array: %s\n", err);
			return -1;
		}
		ms[i] = (bench_now() - t0) * 1e3;
	}
	return bench_median(ms, 16);
}

/* The nodes' repl_* counters, summed over the slice's members. */
static void repl_note(struct work *w)
{
	struct shelf_map_info info;
	struct shelf_member *m = NULL;
	struct shelf_counter cn[SHELF_COUNTERS_MAX];
	char err[SHELF_ERR_BYTES], names[SHELF_COUNTERS_MAX][64];
	uint64_t sum[SHELF_COUNTERS_MAX] = { 0 };
	int nn = 0;

	if (shelf_map(w->cl[0], SLICE_R2, &info, &m, err, sizeof(err)) < 0)
		return;
	for (uint32_t i = 0; i < info.n_members; i++) {
		int n = shelf_node_stat(w->cl[0], SLICE_R2, m[i].addr, m[i].port, cn,
					SHELF_COUNTERS_MAX, err, sizeof(err));

		for (int k = 0; k < n; k++) {
			int j = 0;

			if (strncmp(cn[k].name, "repl_", 5) != 0)
				continue;
			while (j < nn && strcmp(names[j], cn[k].name) != 0)
				j++;
			if (j == nn) {
				memcpy(names[nn], cn[k].name, sizeof(names[0]) - 1);
				names[nn++][sizeof(names[0]) - 1] = 0;
			}
			sum[j] += cn[k].value;
		}
	}
	free(m);
	fprintf(stderr, "array: nodes' counters, summed:");
	for (int j = 0; j < nn; j++)
		fprintf(stderr, " %s=%" PRIu64, names[j], sum[j]);
	fprintf(stderr, "\n");
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double p99(double *v, int n)
{
	int k;

	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	k = (int)((double)n * 0.99 + 0.999999) - 1; /* nearest rank */
	return v[k < 0 ? 0 : k >= n ? n - 1 : k];
}

/* Timed GETs of keys (cycled), each by a fresh client of cl[] that has its
 * map but has talked to no node, and remembers no node as unreachable.
 * ms[] gets the latencies. 0, or -1 after printing what failed. */
static int fresh_gets(struct work *w, struct shelf **cl, const int *keys, int nkeys, double *ms,
		      const char *what)
{
	char path[PATH_MAX + 32], key[32], err[SHELF_ERR_BYTES];
	uint64_t fo = 0, unr = 0;

	snprintf(path, sizeof(path), "%s/cache/unreachable", w->c->client);
	for (int j = 0; j < w->c->samples; j++) {
		int i = keys[j % nkeys], ret;
		void *got = NULL;
		size_t glen = 0;
		double t0;

		/* another client's memory of a failed node is not this one's */
		unlink(path);
		key_of(i, key, sizeof(key));
		t0 = bench_now();
		ret = shelf_get(cl[j], SLICE_R2, key, strlen(key), 0, UINT64_MAX, &got, &glen, NULL,
				err, sizeof(err));
		ms[j] = (bench_now() - t0) * 1e3;
		if (ret == 0 && (glen != OBJ || memcmp(got, w->data + (size_t)i * OBJ, OBJ) != 0)) {
			snprintf(err, sizeof(err), "get '%s': wrong bytes", key);
			ret = -EIO;
		}
		free(got);
		{
			struct shelf_counters n;

			shelf_get_counters(cl[j], &n);
			fo += n.failovers;
			unr += n.unreachable;
		}
		shelf_close(&cl[j]);
		if (ret < 0) {
			fprintf(stderr, "array: GET %d of %d: %s\n", j + 1, w->c->samples, err);
			return -1;
		}
	}
	/* evidence that the first try went to the killed node (or, before, not) */
	fprintf(stderr, "array: %d fresh GETs %s: %" PRIu64 " fell over, %" PRIu64
		" nodes found unreachable\n", w->c->samples, what, fo, unr);
	return 0;
}

static int failover(struct work *w, double *p_fail, double *p_norm)
{
	const struct cfg *c = w->c;
	int *first = calloc((size_t)c->objects, sizeof(int)), *keys = NULL, count[256] = { 0 };
	struct shelf **cl = calloc((size_t)c->samples, sizeof(*cl));
	double *ms = calloc((size_t)c->samples, sizeof(double));
	char addr[64], key[32], err[SHELF_ERR_BYTES], name[16];
	int victim = 0, nkeys = 0, ret = -1;
	uint16_t port;

	if (!first || !cl || !ms)
		goto out;
	/* each key's first replica (placement order: the client knows no chassis) */
	for (int i = 0; i < c->objects; i++) {
		key_of(i, key, sizeof(key));
		if (shelf_locate(w->cl[0], SLICE_R2, key, strlen(key), addr, sizeof(addr), &port, err,
				 sizeof(err)) < 0) {
			fprintf(stderr, "array: %s\n", err);
			goto out;
		}
		first[i] = node_of_addr(c, SLICE_R2, addr);
		if (first[i] < 1 || first[i] > 255) {
			fprintf(stderr, "array: no node log names address %s\n", addr);
			goto out;
		}
		if (++count[first[i]] > count[victim])
			victim = first[i];
	}
	keys = calloc((size_t)count[victim], sizeof(int));
	if (!keys)
		goto out;
	for (int i = 0; i < c->objects; i++)
		if (first[i] == victim)
			keys[nkeys++] = i;
	snprintf(name, sizeof(name), "n%02d", victim);
	/* before the kill: the same GETs, each by a fresh client */
	for (int j = 0; j < c->samples; j++)
		if (open_client(c, &cl[j], false) < 0)
			goto out;
	if (fresh_gets(w, cl, keys, nkeys, ms, "before the kill") < 0)
		goto out;
	*p_norm = p99(ms, c->samples);
	for (int j = 0; j < c->samples; j++)
		if (open_client(c, &cl[j], false) < 0)
			goto out;
	fprintf(stderr, "array: SIGKILL %s, the first replica of %d of the %d keys\n", name, nkeys,
		c->objects);
	if (cluster(c, "/dev/null", "kill", name, NULL, NULL, NULL, NULL, NULL) < 0) {
		fprintf(stderr, "array: cannot kill %s\n", name);
		goto out;
	}
	if (fresh_gets(w, cl, keys, nkeys, ms, "after it") < 0)
		goto out;
	*p_fail = p99(ms, c->samples);
	ret = 0;
out:
	for (int j = 0; cl && j < c->samples; j++)
		shelf_close(&cl[j]);
	free(first);
	free(keys);
	free(cl);
	free(ms);
	return ret;
}

/* The measurements, in the client namespace. 0 or 1. */
static int work_run(const struct cfg *c)
{
	double put[2][ROUNDS], get[2][ROUNDS], up[ROUNDS], up1[ROUNDS], pf = 0, pn = 0;
	char path[PATH_MAX + 32], err[SHELF_ERR_BYTES];
	struct work w = { .c = c };
	uint64_t x = c->seed;
	int fd, ret = 1;

	snprintf(path, sizeof(path), "/run/netns/%s-cl", c->nsp);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || setns(fd, CLONE_NEWNET) < 0) {
		fprintf(stderr, "array: cannot enter namespace '%s': %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return 1;
	}
	close(fd);
	w.data = malloc((size_t)c->objects * OBJ);
	if (!w.data)
		return 1;
	/* xorshift64: incompressible, and the same bytes for the same seed */
	for (size_t i = 0; i < (size_t)c->objects * OBJ / 8; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(w.data + i * 8, &x, 8);
	}
	for (int i = 0; i < c->streams; i++)
		if (open_client(c, &w.cl[i], true) < 0)
			goto out;
	/* connections to every node on both slices before anything is timed */
	for (int i = 0; i < c->streams; i++)
		for (int k = 0; k < 2 * c->nodes; k++) {
			char key[32];

			snprintf(key, sizeof(key), "warm/%d/%d", i, k);
			if (shelf_put(w.cl[i], SLICE_R2, key, strlen(key), "w", 1, err, sizeof(err)) < 0 ||
			    shelf_put(w.cl[i], SLICE_R1, key, strlen(key), "w", 1, err, sizeof(err)) < 0) {
				fprintf(stderr, "array: warm-up: %s\n", err);
				goto out;
			}
		}
	/* PUT passes, R=1 and R=2 alternating which goes first */
	for (int r = 0; r < ROUNDS; r++)
		for (int k = 0; k < 2; k++) {
			int r2 = (r + k) % 2; /* 1: the R=2 slice */
			int64_t t0 = tx_bytes(), t1;
			struct usage u0, u1;

			usage_read(c, &u0);
			put[r2][r] = pass_run(&w, r2 ? SLICE_R2 : SLICE_R1, true);
			t1 = tx_bytes();
			usage_read(c, &u1);
			if (put[r2][r] < 0 || t0 < 0 || t1 < 0)
				goto out;
			(r2 ? up : up1)[r] = (double)(t1 - t0) / c->objects;
			usage_note(r2 ? "put R=2" : "put R=1", &u0, &u1, put[r2][r],
				   (double)c->objects * OBJ / 1e6);
		}
	for (int r = 0; r < ROUNDS; r++)
		for (int k = 0; k < 2; k++) {
			int r2 = (r + k) % 2;

			get[r2][r] = pass_run(&w, r2 ? SLICE_R2 : SLICE_R1, false);
			if (get[r2][r] < 0)
				goto out;
		}
	{
		double l1 = put_latency(&w, SLICE_R1), l2 = put_latency(&w, SLICE_R2);

		if (l1 < 0 || l2 < 0)
			goto out;
		fprintf(stderr, "array: one PUT at a time, median: R=1 %.1f ms, R=2 %.1f ms\n", l1, l2);
	}
	repl_note(&w);
	for (int r = 0; r < ROUNDS; r++)
		fprintf(stderr,
			"array: round %d: put R=1 %.0f MB/s, R=2 %.0f MB/s; get R=1 %.0f, R=2 %.0f MB/s; "
			"client sent %.0f B (R=1) / %.0f B (R=2) per 1 MiB PUT\n",
			r + 1, put[0][r], put[1][r], get[0][r], get[1][r], up1[r], up[r]);
	{
		/* the passes of one round ran next to each other: their ratio
		 * shows how much of a miss is the machine's load drifting */
		double pr[ROUNDS], gr[ROUNDS];

		for (int r = 0; r < ROUNDS; r++) {
			pr[r] = put[1][r] / put[0][r];
			gr[r] = get[1][r] / get[0][r];
		}
		fprintf(stderr, "array: R=2/R=1 within each round, median: put %.3f, get %.3f\n",
			bench_median(pr, ROUNDS), bench_median(gr, ROUNDS));
	}
	bench_line("array_put_1m_r2", bench_median(put[1], ROUNDS), bench_median(put[0], ROUNDS),
		   "MB/s", "same_run_r1");
	bench_line("array_get_1m_r2", bench_median(get[1], ROUNDS), bench_median(get[0], ROUNDS),
		   "MB/s", "same_run_r1");
	bench_line("array_client_uplink_bytes_r2", bench_median(up, ROUNDS), OBJ, "bytes",
		   "object_size");
	if (failover(&w, &pf, &pn) < 0)
		goto out;
	bench_line("array_failover_p99_ms", pf, pn, "ms", "normal_get_p99");
	ret = 0;
out:
	for (int i = 0; i < c->streams; i++)
		shelf_close(&w.cl[i]);
	free(w.data);
	return ret;
}

/* ---- the command ---------------------------------------------------------- */

static volatile sig_atomic_t child_pid;

static void on_signal(int sig)
{
	if (child_pid > 0)
		kill(child_pid, sig);
}

/* tools/shelf-cluster: --cluster, $SHELF_CLUSTER, next to the build
 * directory this program is in, or ./tools. */
static int find_script(struct cfg *c, const char *given, char *bin, size_t binlen)
{
	char exe[1024];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	const char *env = getenv("SHELF_CLUSTER");

	if (n <= 0)
		return -errno;
	exe[n] = 0;
	*strrchr(exe, '/') = 0;
	snprintf(bin, binlen, "%s", exe);
	if (given)
		snprintf(c->script, sizeof(c->script), "%s", given);
	else if (env && *env)
		snprintf(c->script, sizeof(c->script), "%s", env);
	else {
		snprintf(c->script, sizeof(c->script), "%s/../tools/shelf-cluster", exe);
		if (access(c->script, X_OK) != 0)
			snprintf(c->script, sizeof(c->script), "tools/shelf-cluster");
	}
	return access(c->script, X_OK) == 0 ? 0 : -ENOENT;
}

static int run_array(int argc, char **argv)
{
	struct cfg c = { .nodes = 6, .chassis = 3, .objects = 128, .streams = 4, .samples = 100 };
	const char *base = "build/bench", *script = NULL;
	char bin[1024], log[1100], need[1200];
	struct sigaction sa = { .sa_handler = on_signal }, oint, oterm;
	bool up = false;
	int opt, ret = 1, st = 0;
	pid_t pid;
	static const struct option lo[] = {
		{ "dir", 1, NULL, 'd' },     { "nodes", 1, NULL, 'n' },   { "chassis", 1, NULL, 'c' },
		{ "objects", 1, NULL, 'o' }, { "streams", 1, NULL, 's' }, { "samples", 1, NULL, 'k' },
		{ "cluster", 1, NULL, 'C' }, { "seed", 1, NULL, 'S' },   { "keep", 0, NULL, 'K' },
		{ "help", 0, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};

	c.seed = ovl_mono_ns() | 1;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "d:n:c:o:s:k:C:S:Kh", lo, NULL)) != -1) {
		switch (opt) {
		case 'd': base = optarg; break;
		case 'n': c.nodes = atoi(optarg); break;
		case 'c': c.chassis = atoi(optarg); break;
		case 'o': c.objects = atoi(optarg); break;
		case 's': c.streams = atoi(optarg); break;
		case 'k': c.samples = atoi(optarg); break;
		case 'C': script = optarg; break;
		case 'S': c.seed = strtoull(optarg, NULL, 0) | 1; break;
		case 'K': c.keep = true; break;
		default:
			printf("usage: shelf-bench array [--dir DIR] [--nodes 6] [--chassis 3] "
			       "[--objects 128] [--streams 4] [--samples 100] [--seed S] "
			       "[--cluster PATH] [--keep]\n"
			       "  a local cluster (tools/shelf-cluster, or --cluster / $SHELF_CLUSTER) "
			       "in DIR/array, removed after (--keep: only taken down, its logs kept);\n"
			       "  needs root\n");
			return opt == 'h' ? 0 : 2;
		}
	}
	if (c.nodes < 2 || c.nodes > 250 || c.chassis < 2 || c.chassis > c.nodes ||
	    c.objects < 1 || c.objects > 4096 || c.streams < 1 || c.streams > STREAMS_MAX ||
	    c.samples < 1 || c.samples > 10000) {
		fprintf(stderr, "shelf-bench array: --nodes 2..250, --chassis 2..nodes, --objects "
				"1..4096, --streams 1..%d, --samples 1..10000\n", STREAMS_MAX);
		return 2;
	}
	if (geteuid() != 0) {
		printf("shelf-bench array: skipped: needs root (it creates network namespaces "
		       "for a local cluster)\n");
		return 0;
	}
	if (find_script(&c, script, bin, sizeof(bin)) < 0) {
		fprintf(stderr, "shelf-bench array: cannot find tools/shelf-cluster (give --cluster "
				"PATH or set SHELF_CLUSTER)\n");
		return 1;
	}
	snprintf(need, sizeof(need), "%s/shelf-broker", bin);
	if (access(need, X_OK) != 0) {
		fprintf(stderr, "shelf-bench array: needs shelf-node, shelf-broker and shelf built "
				"next to it, in %s\n", bin);
		return 1;
	}
	mkdir(base, 0755);
	{
		char *abs = realpath(base, NULL);

		if (!abs || strlen(abs) > sizeof(c.dir) - 16) {
			fprintf(stderr, "shelf-bench array: cannot use '%s': %s\n", base,
				abs ? "the path is too long" : strerror(errno));
			free(abs);
			return 1;
		}
		snprintf(c.dir, sizeof(c.dir), "%s/array", abs);
		free(abs);
	}
	snprintf(c.cdir, sizeof(c.cdir), "%s/cluster", c.dir);
	snprintf(c.client, sizeof(c.client), "%s/broker/clients/bench", c.cdir);
	snprintf(c.nsp, sizeof(c.nsp), "sba%d", (int)getpid());
	snprintf(log, sizeof(log), "%s/setup.log", c.dir);
	setenv("SHELF_CLUSTER_NS", c.nsp, 1);
	setenv("SHELF_BUILD", bin, 1);
	if (run(NULL, (char *[]){ "rm", "-rf", c.dir, NULL }) < 0 || mkdir(c.dir, 0755) < 0) {
		fprintf(stderr, "shelf-bench array: cannot create %s\n", c.dir);
		return 1;
	}
	fprintf(stderr, "array: seed %" PRIu64 " (--seed replays the same bytes)\n", c.seed);
	sigaction(SIGINT, &sa, &oint);
	sigaction(SIGTERM, &sa, &oterm);
	up = true; /* from here on, whatever happens, the cluster goes down */
	if (cluster_up(&c, log) < 0)
		goto out;
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		goto out;
	if (pid == 0) {
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		_exit(work_run(&c));
	}
	child_pid = pid;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	child_pid = 0;
	if (WIFSIGNALED(st))
		fprintf(stderr, "shelf-bench array: the client died of signal %d\n", WTERMSIG(st));
	ret = WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
	if (ret) {
		for (int i = 1; i <= c.nodes; i++) {
			snprintf(need, sizeof(need), "%s/n%02d/log", c.cdir, i);
			fprintf(stderr, "--- n%02d\n", i);
			tail_log(need);
		}
	}
out:
	if (up) {
		client_ns_down(&c);
		if (cluster(&c, log, "down", c.keep ? NULL : "--wipe", NULL, NULL, NULL, NULL,
			    NULL) < 0)
			fprintf(stderr, "shelf-bench array: 'shelf-cluster down' failed; see %s\n", log);
		else if (c.keep)
			fprintf(stderr, "array: cluster down, its directory kept: %s\n", c.dir);
		else
			run(NULL, (char *[]){ "rm", "-rf", c.dir, NULL });
	}
	sigaction(SIGINT, &oint, NULL);
	sigaction(SIGTERM, &oterm, NULL);
	return ret;
}

static const struct bench_cmd array_cmd = {
	"array",
	"replicated slices on a local cluster in namespaces (needs root) [--dir DIR]",
	run_array, true,
};
BENCH_COMMAND(array_cmd)
