/*
 * shelf-bench heal: self-healing slices on a local cluster (issue 14). The
 * bench brings up its own cluster with tools/shelf-cluster (its own
 * namespace prefix and directory; 24 nodes over 3 chassis by default, the
 * default slice at R=2, the broker's grace period 2 s), and runs libshelf
 * in-process in the backplane's namespace (setns), in a forked child; the
 * parent takes the cluster down and deletes the directory whatever the
 * child did.
 *
 * Steps and figures (counters are the members' NODE_STAT, summed):
 *   1. OBJECTS objects of SIZE bytes are written; every member is sent
 *      HEAL check_only twice (each time until every member's pass ended):
 *        array_antientropy_bytes_per_object   the sum of ae_bytes_last of
 *            the second pass over the copies written (OBJECTS * R): bytes a
 *            whole anti-entropy pass between replicas that agree costs per
 *            copy held, once the pairs are known in sync (the first pass
 *            after the writes, where every pair compares roots, is printed);
 *   2. quiet GET latencies (SAMPLES GETs, one at a time), for step 5;
 *   3. `shelf-cluster add 4`: when the slice is at full redundancy and every
 *      member holds only what placement gives it (objects = OBJECTS * R),
 *        array_rebalance_moved_fraction      repair_objects_done's growth
 *            (copies sent) over OBJECTS * R, against the ideal 4 / (N + 4);
 *   4. every member's repair rate set unlimited (HEAL rate 0), one node
 *      SIGKILLed; from the moment it is `out` until the slice is back at
 *      full redundancy:
 *        array_repair_mib_s                  repair_bytes_done's growth over
 *            that time, against `cp` of as many bytes between two files on
 *            the same disk (and an fsync of the copy);
 *        array_repair_eta_error              the ETA reported (as `shelf
 *            status` computes it: bytes left and planned over the sum of the
 *            members' repair_rate_bps) once 10 % of the bytes were done, against the
 *            time the repair actually took from then;
 *   5. the repair rate set back to what the members reported before step 4
 *      (repair_rate_limit: their default), another node killed, and GETs
 *      while the repair runs:
 *        array_client_p99_during_repair      their p99 against step 2's.
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
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "overlay.h"
#include "shelf.h"

#define HB_BP_PREFIX "fd00:5e1f:0:1"
#define HB_BROKER "tcp://[" HB_BP_PREFIX "::1]:7400"
#define HB_SLICE "default"
#define HB_ADD 4
#define HB_THREADS 4
#define HB_POLL_US 50000
#define HB_WAIT_S 300 /* the longest a step waits for the slice */

struct hcfg {
	char dir[1024], cdir[1040], client[1080], script[1100], nsp[32];
	int nodes, chassis, objects, samples;
	uint64_t size, seed;
	bool keep;
};

/* ---- processes ------------------------------------------------------------ */

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

static void tail_log(const char *path)
{
	char cmd[PATH_MAX + 32];

	snprintf(cmd, sizeof(cmd), "tail -n 5 '%s' >&2", path);
	if (system(cmd) != 0)
		return;
}

/* ---- the client side (in the backplane's namespace) ----------------------- */

struct hwork {
	const struct hcfg *c;
	struct shelf *s;
	char log[1100];
};

static void key_of(int i, char *k, size_t len)
{
	snprintf(k, len, "heal/%06d", i);
}

/* The bytes of object i: xorshift64 from the seed and i (incompressible). */
static void fill_obj(const struct hcfg *c, int i, uint8_t *buf)
{
	uint64_t x = c->seed ^ ((uint64_t)i * 0x9e3779b97f4a7c15ull) ^ 1;

	for (size_t k = 0; k + 8 <= c->size; k += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(buf + k, &x, 8);
	}
}

/* Counters summed over the members not `out` (and not `skip`, a node id
 * or NULL); mx[] the largest value per name. Returns the members that
 * answered, or -1. */
static int sums(struct hwork *w, const char *const *names, int n, uint64_t *sum, uint64_t *mx,
		const uint8_t *skip)
{
	struct shelf_map_info info;
	struct shelf_member *m = NULL;
	struct shelf_counter cn[SHELF_COUNTERS_MAX];
	char err[SHELF_ERR_BYTES];
	int answered = 0;

	for (int k = 0; k < n; k++)
		sum[k] = mx ? (mx[k] = 0) : 0;
	if (shelf_map(w->s, HB_SLICE, &info, &m, err, sizeof(err)) < 0) {
		fprintf(stderr, "heal: %s\n", err);
		return -1;
	}
	for (uint32_t i = 0; i < info.n_members; i++) {
		int got;

		if (strcmp(m[i].state, "out") == 0 || (skip && memcmp(m[i].id, skip, 32) == 0))
			continue;
		got = shelf_node_stat(w->s, HB_SLICE, m[i].addr, m[i].port, cn, SHELF_COUNTERS_MAX,
				      err, sizeof(err));
		if (got < 0)
			continue;
		answered++;
		for (int j = 0; j < got; j++)
			for (int k = 0; k < n; k++)
				if (strcmp(cn[j].name, names[k]) == 0) {
					sum[k] += cn[j].value;
					if (mx && cn[j].value > mx[k])
						mx[k] = cn[j].value;
				}
	}
	free(m);
	return answered;
}

/* HEAL to every member not out; 0 or -1 (printed). */
static int heal_all(struct hwork *w, const struct shelf_heal_opts *o)
{
	struct shelf_map_info info;
	struct shelf_member *m = NULL;
	struct shelf_counter cn[SHELF_COUNTERS_MAX];
	char err[SHELF_ERR_BYTES];
	int ret = 0;

	if (shelf_map(w->s, HB_SLICE, &info, &m, err, sizeof(err)) < 0) {
		fprintf(stderr, "heal: %s\n", err);
		return -1;
	}
	for (uint32_t i = 0; i < info.n_members && ret == 0; i++) {
		if (strcmp(m[i].state, "out") == 0)
			continue;
		if (shelf_heal(w->s, HB_SLICE, m[i].addr, m[i].port, o, cn, SHELF_COUNTERS_MAX, err,
			       sizeof(err)) < 0) {
			fprintf(stderr, "heal: %s\n", err);
			ret = -1;
		}
	}
	free(m);
	return ret;
}

/* The state of the member whose id is id ("" when not found). */
static const char *state_of(struct hwork *w, const uint8_t id[32])
{
	struct shelf_map_info info;
	struct shelf_member *m = NULL;
	char err[SHELF_ERR_BYTES];
	const char *st = "";

	/* the broker's newest map: a state change makes a new epoch */
	if (shelf_map(w->s, HB_SLICE, &info, &m, err, sizeof(err)) < 0)
		return st;
	for (uint32_t i = 0; i < info.n_members; i++)
		if (memcmp(m[i].id, id, 32) == 0)
			st = m[i].state;
	free(m);
	return st;
}

struct put_pass {
	struct hwork *w;
	int stream, fails;
	char err[SHELF_ERR_BYTES];
};

static void *put_thread(void *arg)
{
	struct put_pass *p = arg;
	const struct hcfg *c = p->w->c;
	uint8_t *buf = malloc(c->size);
	struct shelf *s = NULL;
	char key[32];

	if (!buf || shelf_open(&s, c->client, HB_BROKER, p->err, sizeof(p->err)) < 0) {
		p->fails++;
		free(buf);
		return NULL;
	}
	shelf_set_timeout(s, 30000);
	for (int i = p->stream; i < c->objects; i += HB_THREADS) {
		key_of(i, key, sizeof(key));
		fill_obj(c, i, buf);
		if (shelf_put(s, HB_SLICE, key, strlen(key), buf, c->size, p->err, sizeof(p->err)) < 0) {
			p->fails++;
			break;
		}
	}
	shelf_close(&s);
	free(buf);
	return NULL;
}

static int put_all(struct hwork *w)
{
	struct put_pass p[HB_THREADS];
	pthread_t th[HB_THREADS];
	int fails = 0, started = 0;
	double t0 = bench_now();

	for (int i = 0; i < HB_THREADS; i++) {
		p[i] = (struct put_pass){ .w = w, .stream = i };
		if (pthread_create(&th[i], NULL, put_thread, &p[i]) != 0)
			break;
		started++;
	}
	for (int i = 0; i < started; i++) {
		pthread_join(th[i], NULL);
		if (p[i].fails) {
			fprintf(stderr, "heal: put: %s\n", p[i].err);
			fails++;
		}
	}
	if (started < HB_THREADS || fails)
		return -1;
	fprintf(stderr, "heal: %d objects of %" PRIu64 " B written in %.1f s\n", w->c->objects,
		w->c->size, bench_now() - t0);
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double p99(double *v, int n)
{
	int k;

	if (n <= 0)
		return 0;
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	k = (int)((double)n * 0.99 + 0.999999) - 1;
	return v[k < 0 ? 0 : k >= n ? n - 1 : k];
}

/* One timed GET of a random object, checked. ms, or -1. */
static double one_get(struct hwork *w, uint64_t *rnd, uint8_t *want)
{
	char key[32], err[SHELF_ERR_BYTES];
	void *got = NULL;
	size_t glen = 0;
	double t0;
	int i, ret;

	*rnd ^= *rnd << 13;
	*rnd ^= *rnd >> 7;
	*rnd ^= *rnd << 17;
	i = (int)(*rnd % (uint64_t)w->c->objects);
	key_of(i, key, sizeof(key));
	t0 = bench_now();
	ret = shelf_get(w->s, HB_SLICE, key, strlen(key), 0, UINT64_MAX, &got, &glen, NULL, err,
			sizeof(err));
	t0 = (bench_now() - t0) * 1e3;
	fill_obj(w->c, i, want);
	if (ret == 0 && (glen != w->c->size || memcmp(got, want, glen) != 0)) {
		snprintf(err, sizeof(err), "get '%s': wrong bytes", key);
		ret = -EIO;
	}
	free(got);
	if (ret < 0) {
		fprintf(stderr, "heal: %s\n", err);
		return -1;
	}
	return t0;
}

/* Wait until degraded 0, repair left and planned 0 and the copies the members hold
 * (`objects`, which counts a node's own reserved records too) at most
 * max_copies and unchanged, three readings in a row. 0, or -1 after
 * HB_WAIT_S. */
static int wait_full(struct hwork *w, uint64_t max_copies, const uint8_t *skip)
{
	static const char *const nm[] = { "heal_objects_degraded", "repair_objects_left", "objects",
					  "heal_objects_lost", "repair_objects_planned" };
	uint64_t v[5] = { 0 }, last = UINT64_MAX;
	double until = bench_now() + HB_WAIT_S;
	int ok = 0;

	/* planned: copies a pass counted from the map change, not queued yet */
	while (bench_now() < until) {
		if (sums(w, nm, 5, v, NULL, skip) > 0 && v[0] == 0 && v[1] == 0 && v[4] == 0 &&
		    v[2] <= max_copies && v[2] == last)
			ok++;
		else
			ok = 0;
		last = v[2];
		if (ok >= 3)
			return 0;
		usleep(300000);
	}
	fprintf(stderr, "heal: not back at full redundancy after %d s: degraded %" PRIu64
		", repair left %" PRIu64 ", copies held %" PRIu64 " (want at most %" PRIu64
		"), lost %" PRIu64 "\n", HB_WAIT_S, v[0], v[1], v[2], max_copies, v[3]);
	return -1;
}

/* The copies the members not `out` hold now (`objects` summed), or 0. */
static uint64_t copies_now(struct hwork *w)
{
	static const char *const nm[] = { "objects" };
	uint64_t v = 0;

	return sums(w, nm, 1, &v, NULL, NULL) > 0 ? v : 0;
}

/* The member (index into a fresh map, and its id) with node directory
 * nXX, found by the address its log names. */
static int member_of_node(struct hwork *w, int node, uint8_t id[32])
{
	struct shelf_map_info info;
	struct shelf_member *m = NULL;
	char err[SHELF_ERR_BYTES], path[PATH_MAX + 16], line[512], needle[128];
	int found = -1;

	if (shelf_map(w->s, HB_SLICE, &info, &m, err, sizeof(err)) < 0)
		return -1;
	snprintf(path, sizeof(path), "%s/n%02d/log", w->c->cdir, node);
	for (uint32_t i = 0; i < info.n_members && found < 0; i++) {
		FILE *f = fopen(path, "r");

		if (!f)
			break;
		snprintf(needle, sizeof(needle), "slice '%s': address %s on ", HB_SLICE, m[i].addr);
		while (fgets(line, sizeof(line), f))
			if (strstr(line, needle)) {
				found = (int)i;
				memcpy(id, m[i].id, 32);
				break;
			}
		fclose(f);
	}
	free(m);
	return found;
}

static int cluster_cmd(struct hwork *w, const char *cmd, const char *arg)
{
	char *argv[] = { (char *)w->c->script, (char *)cmd, "--dir", (char *)w->c->cdir,
			 (char *)arg, NULL };

	return run(w->log, argv);
}

/* Kill node nXX and wait until the map says `out`; *t_out the moment. */
static int lose(struct hwork *w, int node, uint8_t id[32], double *t_out)
{
	char name[16];
	double until;

	if (member_of_node(w, node, id) < 0) {
		fprintf(stderr, "heal: node n%02d is no member\n", node);
		return -1;
	}
	snprintf(name, sizeof(name), "n%02d", node);
	if (cluster_cmd(w, "kill", name) < 0) {
		fprintf(stderr, "heal: cannot kill %s\n", name);
		return -1;
	}
	until = bench_now() + 60;
	while (strcmp(state_of(w, id), "out") != 0) {
		if (bench_now() > until) {
			fprintf(stderr, "heal: %s not out 60 s after its kill\n", name);
			return -1;
		}
		usleep(HB_POLL_US);
	}
	*t_out = bench_now();
	fprintf(stderr, "heal: %s killed and out\n", name);
	return 0;
}

/* cp of bytes between two files of the bench's directory (and an fsync of
 * the copy): MiB/s, or -1. */
static double cp_ref(const struct hcfg *c, uint64_t bytes)
{
	char a[1100], b[1100];
	uint8_t *buf = malloc(1 << 20);
	double t0, dt;
	int fd = -1;

	snprintf(a, sizeof(a), "%s/cp-src", c->dir);
	snprintf(b, sizeof(b), "%s/cp-dst", c->dir);
	fd = buf ? open(a, O_WRONLY | O_CREAT | O_TRUNC, 0644) : -1;
	if (fd < 0) {
		free(buf);
		return -1;
	}
	for (uint64_t done = 0; done < bytes; done += 1 << 20) {
		fill_obj(c, (int)(done >> 20), buf);
		if (write(fd, buf, 1 << 20) != 1 << 20) {
			close(fd);
			free(buf);
			return -1;
		}
	}
	fsync(fd);
	close(fd);
	free(buf);
	t0 = bench_now();
	if (run(NULL, (char *[]){ "cp", a, b, NULL }) < 0)
		return -1;
	fd = open(b, O_RDONLY);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	dt = bench_now() - t0;
	unlink(a);
	unlink(b);
	return (double)bytes / 1048576.0 / dt;
}

/* A check-only anti-entropy pass of every member: the bytes all of them
 * exchanged in it (ae_bytes_last summed). 0 or -1. */
static int ae_pass(struct hwork *w, uint64_t *bytes)
{
	static const char *const ae_nm[] = { "ae_passes", "ae_bytes_last" };
	struct shelf_heal_opts ho = { .check_only = true };
	uint64_t before[2], after[2];
	double until = bench_now() + HB_WAIT_S;
	int n;

	if (sums(w, ae_nm, 2, before, NULL, NULL) <= 0 || heal_all(w, &ho) < 0)
		return -1;
	/* every member's pass has ended: ae_passes grew by the members */
	do {
		usleep(200000);
		n = sums(w, ae_nm, 2, after, NULL, NULL);
	} while (n > 0 && after[0] < before[0] + (uint64_t)n && bench_now() < until);
	if (n <= 0 || after[0] < before[0] + (uint64_t)n) {
		fprintf(stderr, "heal: the anti-entropy passes did not end\n");
		return -1;
	}
	*bytes = after[1];
	return 0;
}

static int work_run(const struct hcfg *c)
{
	static const char *const rp_nm[] = { "repair_bytes_done", "repair_bytes_left",
					     "repair_eta_s", "heal_objects_degraded",
					     "repair_objects_done", "repair_rate_limit",
					     "repair_bytes_planned", "repair_rate_bps" };
	struct hwork w = { .c = c };
	char path[PATH_MAX + 32], err[SHELF_ERR_BYTES];
	uint64_t v[8], mx[8], copies = (uint64_t)c->objects * 2, rnd = c->seed | 1, rate_default;
	double *ms = calloc((size_t)c->samples + 1, sizeof(double)), p_quiet, t_out, t10 = 0,
	       eta10 = -1, t_end;
	uint8_t *want = malloc(c->size), victim[32];
	struct shelf_heal_opts ho = { 0 };
	int fd, ret = 1;

	snprintf(w.log, sizeof(w.log), "%s/steps.log", c->dir);
	snprintf(path, sizeof(path), "/run/netns/%s-bp", c->nsp);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || setns(fd, CLONE_NEWNET) < 0 || !ms || !want) {
		fprintf(stderr, "heal: cannot enter namespace '%s': %s\n", path, strerror(errno));
		goto out;
	}
	close(fd);
	if (shelf_open(&w.s, c->client, HB_BROKER, err, sizeof(err)) < 0) {
		fprintf(stderr, "heal: %s\n", err);
		goto out;
	}
	shelf_set_timeout(w.s, 20000);
	/* every put was acknowledged with its R copies durable */
	if (put_all(&w) < 0 || wait_full(&w, copies + (uint64_t)c->nodes, NULL) < 0)
		goto out;

	/* 1. anti-entropy between replicas that agree: a first pass after
	 * the writes (every pair's roots changed: each asks the other's), then
	 * a second (pairs known in sync since the first are not asked: the
	 * steady state, the figure); per copy of the objects written */
	{
		uint64_t first, second, held = copies;

		if (ae_pass(&w, &first) < 0 || ae_pass(&w, &second) < 0)
			goto out;
		fprintf(stderr, "heal: anti-entropy over %" PRIu64 " copies of %d objects: a first "
			"pass after the writes %" PRIu64 " bytes (%.1f per copy), the next %" PRIu64
			" bytes\n", held, c->objects, first, (double)first / (double)held, second);
		bench_line("array_antientropy_bytes_per_object", (double)second / (double)held, 0,
			   "bytes", "-");
	}

	/* 2. quiet GETs */
	for (int i = 0; i < c->samples; i++)
		if ((ms[i] = one_get(&w, &rnd, want)) < 0)
			goto out;
	p_quiet = p99(ms, c->samples);

	/* 3. four nodes join */
	{
		uint64_t d0[8], d1[8];
		char nadd[8];
		double t0 = bench_now();

		uint64_t base = copies_now(&w);

		if (sums(&w, rp_nm, 8, d0, NULL, NULL) <= 0 || !base)
			goto out;
		snprintf(nadd, sizeof(nadd), "%d", HB_ADD);
		if (cluster_cmd(&w, "add", nadd) < 0) {
			fprintf(stderr, "heal: shelf-cluster add %d failed\n", HB_ADD);
			tail_log(w.log);
			goto out;
		}
		/* the new members in the map, up */
		for (int t = 0;; t++) {
			struct shelf_map_info info;
			struct shelf_member *m = NULL;
			uint32_t up = 0;

			if (shelf_map(w.s, HB_SLICE, &info, &m, err, sizeof(err)) == 0)
				for (uint32_t i = 0; i < info.n_members; i++)
					up += strcmp(m[i].state, "up") == 0;
			free(m);
			if (up == (uint32_t)(c->nodes + HB_ADD))
				break;
			if (t > 600) {
				fprintf(stderr, "heal: the %d new nodes did not join\n", HB_ADD);
				goto out;
			}
			usleep(100000);
		}
		/* the rebalance has begun (copies sent), then it ends: the copies
		 * held back to what they were (each old copy dropped once its
		 * new home holds it), new nodes' own records allowed */
		for (int t = 0; t < 300; t++) {
			if (sums(&w, rp_nm, 8, d1, NULL, NULL) > 0 && d1[4] > d0[4])
				break;
			usleep(100000);
		}
		if (wait_full(&w, base + 2 * HB_ADD, NULL) < 0 ||
		    sums(&w, rp_nm, 8, d1, NULL, NULL) <= 0)
			goto out;
		fprintf(stderr, "heal: rebalance onto %d new nodes: %" PRIu64 " copies sent in %.1f s\n",
			HB_ADD, d1[4] - d0[4], bench_now() - t0);
		bench_line("array_rebalance_moved_fraction", (double)(d1[4] - d0[4]) / (double)copies,
			   (double)HB_ADD / (c->nodes + HB_ADD), "fraction",
			   "ideal_4_of_28");
		rate_default = d1[5] / (uint64_t)(c->nodes + HB_ADD); /* every member has the same */
	}

	/* 4. repair at full speed after one node's loss */
	{
		uint64_t b0, done = 0;
		double mib_s, ref;

		ho = (struct shelf_heal_opts){ .has_rate = true, .rate = 0 };
		if (heal_all(&w, &ho) < 0)
			goto out;
		if (member_of_node(&w, 2, victim) < 0 || sums(&w, rp_nm, 8, v, NULL, victim) <= 0)
			goto out;
		b0 = v[0];
		{
			/* what the victim holds: what its repair should send */
			static const char *const ob_nm[] = { "objects", "live_bytes" };
			uint64_t all[2], rest[2];

			if (sums(&w, ob_nm, 2, all, NULL, NULL) > 0 &&
			    sums(&w, ob_nm, 2, rest, NULL, victim) > 0)
				fprintf(stderr, "heal: n02 holds %" PRIu64 " objects, %.1f MiB\n",
					all[0] - rest[0], (double)(all[1] - rest[1]) / 1048576.0);
		}
		if (lose(&w, 2, victim, &t_out) < 0)
			goto out;
		for (double shown = bench_now();;) {
			if (sums(&w, rp_nm, 8, v, mx, victim) > 0) {
				done = v[0] > b0 ? v[0] - b0 : 0;
				if (getenv("SHELF_BENCH_TRACE"))
					fprintf(stderr, "heal: trace %.2f s: done %.1f MiB, left %.1f, "
						"planned %.1f, degraded %" PRIu64 "\n",
						bench_now() - t_out, (double)done / 1048576.0,
						(double)v[1] / 1048576.0, (double)v[6] / 1048576.0, v[3]);
				if (bench_now() - shown > 5) {
					fprintf(stderr, "heal: repair: %.1f MiB done, %.1f MiB left, "
						"degraded %" PRIu64 ", ETA %" PRIu64 " s\n",
						(double)done / 1048576.0, (double)v[1] / 1048576.0, v[3],
						mx[2]);
					shown = bench_now();
				}
				/* left: queued, and counted by the passes but not
				 * queued yet (the ETA holds both) */
				if (eta10 < 0 && done > 0 && done * 10 >= done + v[1] + v[6]) {
					/* as `shelf status` gives it: the work left over
					 * the sum of the rates (the largest member's own
					 * ETA while no member has a rate) */
					eta10 = v[7] ? (double)(v[1] + v[6]) / (double)v[7]
						     : (double)mx[2];
					t10 = bench_now();
				}
				if (v[1] == 0 && v[6] == 0 && v[3] == 0 && done > 0)
					break;
			}
			if (bench_now() - t_out > HB_WAIT_S) {
				fprintf(stderr, "heal: the repair did not end\n");
				goto out;
			}
			usleep(HB_POLL_US);
		}
		t_end = bench_now();
		/* a repair leaves no copy behind: only degraded and left count */
		if (wait_full(&w, UINT64_MAX, victim) < 0)
			goto out;
		mib_s = (double)done / 1048576.0 / (t_end - t_out);
		fprintf(stderr, "heal: %.1f MiB repaired in %.2f s\n", (double)done / 1048576.0,
			t_end - t_out);
		ref = cp_ref(c, done);
		bench_line("array_repair_mib_s", mib_s, ref, "MiB/s", "cp_same_disk");
		if (eta10 < 0)
			fprintf(stderr, "heal: no ETA seen at 10 %% done\n");
		bench_line("array_repair_eta_error", eta10 < 0 ? 0 : eta10, t_end - t10, "s",
			   "actual_remaining_s");
	}

	/* 5. GETs during a repair at the default rate */
	{
		int k = 0;
		double until;

		ho = (struct shelf_heal_opts){ .has_rate = true, .rate = rate_default };
		if (heal_all(&w, &ho) < 0)
			goto out;
		fprintf(stderr, "heal: repair rate back to %" PRIu64 " B/s\n", rate_default);
		if (lose(&w, 3, victim, &t_out) < 0)
			goto out;
		until = bench_now() + HB_WAIT_S;
		while (k < c->samples && bench_now() < until) {
			if (sums(&w, rp_nm, 8, v, NULL, victim) > 0 && v[1] == 0 && v[3] == 0 &&
			    bench_now() - t_out > 2)
				break; /* the repair is over */
			for (int j = 0; j < 10 && k < c->samples; j++)
				if ((ms[k++] = one_get(&w, &rnd, want)) < 0)
					goto out;
				else if (getenv("SHELF_BENCH_TRACE"))
					fprintf(stderr, "heal: trace get at %.3f s: %.2f ms\n",
						bench_now() - t_out, ms[k - 1]);
		}
		fprintf(stderr, "heal: %d GETs during the repair\n", k);
		bench_line("array_client_p99_during_repair", p99(ms, k), p_quiet, "ms",
			   "quiet_p99_same_run");
	}
	ret = 0;
out:
	shelf_close(&w.s);
	free(ms);
	free(want);
	return ret;
}

/* ---- the command ---------------------------------------------------------- */

static volatile sig_atomic_t child_pid;

static void on_signal(int sig)
{
	if (child_pid > 0)
		kill(child_pid, sig);
}

static int find_script(struct hcfg *c, const char *given, char *bin, size_t binlen)
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

static int run_heal(int argc, char **argv)
{
	struct hcfg c = { .nodes = 24, .chassis = 3, .objects = 768, .samples = 200,
			  .size = 1 << 20 };
	const char *base = "build/bench", *script = NULL;
	char bin[1024], log[1100], need[1200], n[16], ch[16];
	struct sigaction sa = { .sa_handler = on_signal }, oint, oterm;
	int opt, ret = 1, st = 0;
	bool up = false;
	pid_t pid;
	static const struct option lo[] = {
		{ "dir", 1, NULL, 'd' },     { "nodes", 1, NULL, 'n' },   { "chassis", 1, NULL, 'c' },
		{ "objects", 1, NULL, 'o' }, { "size", 1, NULL, 'z' },    { "samples", 1, NULL, 'k' },
		{ "cluster", 1, NULL, 'C' }, { "seed", 1, NULL, 'S' },    { "keep", 0, NULL, 'K' },
		{ "help", 0, NULL, 'h' },    { NULL, 0, NULL, 0 }
	};

	c.seed = ovl_mono_ns() | 1;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (opt) {
		case 'd': base = optarg; break;
		case 'n': c.nodes = atoi(optarg); break;
		case 'c': c.chassis = atoi(optarg); break;
		case 'o': c.objects = atoi(optarg); break;
		case 'z': c.size = bench_size_arg("--size", optarg); break;
		case 'k': c.samples = atoi(optarg); break;
		case 'C': script = optarg; break;
		case 'S': c.seed = strtoull(optarg, NULL, 0) | 1; break;
		case 'K': c.keep = true; break;
		default:
			printf("usage: shelf-bench heal [--dir DIR] [--nodes 24] [--chassis 3] "
			       "[--objects 768] [--size 1M] [--samples 200] [--seed S] "
			       "[--cluster PATH] [--keep]\n"
			       "  a local cluster (tools/shelf-cluster) in DIR/heal, removed after; "
			       "needs root\n");
			return opt == 'h' ? 0 : 2;
		}
	}
	if (c.nodes < 4 || c.nodes + HB_ADD > 250 || c.chassis < 2 || c.chassis > c.nodes ||
	    c.objects < 16 || c.objects > 100000 || c.samples < 10 || c.samples > 100000 ||
	    c.size < 8 || c.size > (64u << 20) || c.size % 8) {
		fprintf(stderr, "shelf-bench heal: --nodes 4..246, --chassis 2..nodes, --objects "
				"16..100000, --samples 10..100000, --size 8 B..64M (a multiple of 8)\n");
		return 2;
	}
	if (geteuid() != 0) {
		printf("shelf-bench heal: skipped: needs root (it creates network namespaces for "
		       "a local cluster)\n");
		return 0;
	}
	if (find_script(&c, script, bin, sizeof(bin)) < 0) {
		fprintf(stderr, "shelf-bench heal: cannot find tools/shelf-cluster (give --cluster "
				"PATH or set SHELF_CLUSTER)\n");
		return 1;
	}
	snprintf(need, sizeof(need), "%s/shelf-broker", bin);
	if (access(need, X_OK) != 0) {
		fprintf(stderr, "shelf-bench heal: needs shelf-node, shelf-broker and shelf built "
				"next to it, in %s\n", bin);
		return 1;
	}
	mkdir(base, 0755);
	{
		char *abs = realpath(base, NULL);

		if (!abs || strlen(abs) > sizeof(c.dir) - 16) {
			fprintf(stderr, "shelf-bench heal: cannot use '%s': %s\n", base,
				abs ? "the path is too long" : strerror(errno));
			free(abs);
			return 1;
		}
		snprintf(c.dir, sizeof(c.dir), "%s/heal", abs);
		free(abs);
	}
	snprintf(c.cdir, sizeof(c.cdir), "%s/cluster", c.dir);
	snprintf(c.client, sizeof(c.client), "%s/broker/clients/bench", c.cdir);
	snprintf(c.nsp, sizeof(c.nsp), "sbh%d", (int)getpid());
	snprintf(log, sizeof(log), "%s/setup.log", c.dir);
	setenv("SHELF_CLUSTER_NS", c.nsp, 1);
	setenv("SHELF_BUILD", bin, 1);
	if (run(NULL, (char *[]){ "rm", "-rf", c.dir, NULL }) < 0 || mkdir(c.dir, 0755) < 0) {
		fprintf(stderr, "shelf-bench heal: cannot create %s\n", c.dir);
		return 1;
	}
	fprintf(stderr, "heal: seed %" PRIu64 "; %d nodes over %d chassis in %s (namespaces %s-*)\n",
		c.seed, c.nodes, c.chassis, c.cdir, c.nsp);
	sigaction(SIGINT, &sa, &oint);
	sigaction(SIGTERM, &sa, &oterm);
	up = true;
	snprintf(n, sizeof(n), "%d", c.nodes);
	snprintf(ch, sizeof(ch), "%d", c.chassis);
	if (run(log, (char *[]){ c.script, "up", "--dir", c.cdir, "--nodes", n, "--chassis", ch,
				 "--replicas", "2", "--drive-size", "2G", "--grace", "2s",
				 NULL }) < 0) {
		fprintf(stderr, "heal: cannot bring the cluster up; the end of %s:\n", log);
		tail_log(log);
		goto out;
	}
	{
		char bdir[1100];

		snprintf(bdir, sizeof(bdir), "%s/broker", c.cdir);
		if (run(log, (char *[]){ c.script, "exec", "--dir", c.cdir, "--", "shelf-broker",
					 "client", "--dir", bdir, "--name", "bench", "--slices",
					 HB_SLICE, NULL }) < 0) {
			fprintf(stderr, "heal: cannot issue the bench client; the end of %s:\n", log);
			tail_log(log);
			goto out;
		}
	}
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
		fprintf(stderr, "shelf-bench heal: the client died of signal %d\n", WTERMSIG(st));
	ret = WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
out:
	if (up) {
		if (run(log, (char *[]){ c.script, "down", "--dir", c.cdir, c.keep ? NULL : "--wipe",
					 NULL }) < 0)
			fprintf(stderr, "shelf-bench heal: 'shelf-cluster down' failed; see %s\n", log);
		else if (c.keep)
			fprintf(stderr, "heal: cluster down, its directory kept: %s\n", c.dir);
		else
			run(NULL, (char *[]){ "rm", "-rf", c.dir, NULL });
	}
	sigaction(SIGINT, &oint, NULL);
	sigaction(SIGTERM, &oterm, NULL);
	return ret;
}

static const struct bench_cmd heal_cmd = {
	"heal",
	"self-healing slices on a local cluster: repair, rebalance, anti-entropy (needs root) "
	"[--dir DIR]",
	run_heal, true,
};
BENCH_COMMAND(heal_cmd)
