/*
 * shelf-bench stage --shards: `shelf stage` of shards (issue 15).
 *
 *   stage_shards_32m  MiB/s of `shelf stage shards/ DST` (the command, wall
 *                     time, every checksum checked, each file fsync'd and
 *                     renamed) of GIB GiB stored as 32 MiB objects, against
 *                     MiB/s of the same files served by nginx on loopback
 *                     and fetched by 16 parallel curl processes into a
 *                     directory (the same run, the same destination
 *                     file system).
 *
 * The files are made once in DIR/stage-shards/src (random bytes), stored
 * with `shelf put -r` (not timed as a figure) on a local cluster
 * (bench_cluster.c: 24 nodes over 3 chassis, R=2, the default 16 MiB chunk
 * size, so each shard is a large object of two chunks). DST is in
 * /dev/shm when it has room for two copies (as a training job stages to
 * local memory or NVMe), else under DIR; it is emptied before each round.
 * Rounds alternate the two; each figure is the median.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "bench_cluster.h"
#include "bench_stagecmd.h"

#define SHARD_BYTES (32u << 20)
#define ROUNDS_MAX 9
#define CURL_PROCS 16

struct shards_cfg {
	struct bench_cluster cl;
	double gib;
	int rounds, nfiles;
	unsigned workers;
	char src[1100], dst[PATH_MAX], shelf[1100], cmdlog[1100];
	double ours[ROUNDS_MAX];
};

bool bench_stagecmd_wanted(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--shards") == 0)
			return true;
	return false;
}

/* Fill the shards with random bytes (xorshift64*: fast, incompressible). */
static int make_shards(struct shards_cfg *c)
{
	uint64_t *buf = malloc(SHARD_BYTES), x = 0x9e3779b97f4a7c15ull;
	char path[PATH_MAX];
	int ret = 0;

	if (!buf || mkdir(c->src, 0755) < 0) {
		fprintf(stderr, "stage: cannot create '%s': %s\n", c->src, strerror(errno));
		free(buf);
		return -EIO;
	}
	for (int i = 0; i < c->nfiles && ret == 0; i++) {
		int fd;

		for (size_t j = 0; j < SHARD_BYTES / 8; j++) {
			x ^= x >> 12;
			x ^= x << 25;
			x ^= x >> 27;
			buf[j] = x * 0x2545f4914f6cdd1dull;
		}
		snprintf(path, sizeof(path), "%s/shard-%05d.tar", c->src, i);
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0 || write(fd, buf, SHARD_BYTES) != (ssize_t)SHARD_BYTES) {
			fprintf(stderr, "stage: cannot write '%s': %s\n", path, strerror(errno));
			ret = -EIO;
		}
		if (fd >= 0)
			close(fd);
	}
	free(buf);
	return ret;
}

/* Run a shell command (its output to the command log); its exit code. */
static int sh(const struct shards_cfg *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int sh(const struct shards_cfg *c, const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;
	int n, st;

	va_start(ap, fmt);
	n = vsnprintf(cmd, sizeof(cmd) - 200, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(cmd) - 200)
		return -E2BIG;
	snprintf(cmd + n, sizeof(cmd) - (size_t)n, " >>'%s' 2>&1", c->cmdlog);
	st = system(cmd);
	return st < 0 ? -errno : WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void empty_dst(const struct shards_cfg *c)
{
	sh(c, "rm -rf '%s' && mkdir -p '%s'", c->dst, c->dst);
}

/* In the cluster's namespace: put -r (untimed), then the stage rounds. */
static int shards_child(void *arg)
{
	struct shards_cfg *c = arg;
	double bytes = (double)c->nfiles * SHARD_BYTES, t0;
	char env[4096];
	int rc;

	if (bench_cluster_enter(&c->cl) < 0)
		return 1;
	snprintf(env, sizeof(env), "SHELF_CLIENT='%s' SHELF_BROKER='%s'", c->cl.client,
		 BENCH_CLUSTER_BROKER);
	t0 = bench_now();
	rc = sh(c, "%s '%s' put -r '%s' shards/ --workers 4 --timeout 60000", env, c->shelf,
		c->src);
	if (rc) {
		fprintf(stderr, "stage: put -r of the shards failed (exit %d); see %s\n", rc,
			c->cmdlog);
		return 1;
	}
	fprintf(stderr, "stage: put -r of %d shards of 32 MiB: %.1f MiB/s\n", c->nfiles,
		bytes / 1048576.0 / (bench_now() - t0));
	for (int r = 0; r < c->rounds; r++) {
		empty_dst(c);
		t0 = bench_now();
		rc = sh(c, "%s '%s' stage shards/ '%s' --workers %u --timeout 60000", env, c->shelf,
			c->dst, c->workers);
		c->ours[r] = bytes / 1048576.0 / (bench_now() - t0);
		if (rc == 0)
			rc = sh(c, "[ \"$(ls '%s' | wc -l)\" = %d ] && cmp '%s/shard-00000.tar' "
				"'%s/shard-00000.tar'", c->dst, c->nfiles, c->src, c->dst);
		if (rc) {
			fprintf(stderr, "stage: shelf stage failed (exit %d); see %s\n", rc, c->cmdlog);
			return 1;
		}
	}
	empty_dst(c);
	return 0;
}

/* nginx serving src on [::1]:port, in the foreground of a child: its pid. */
static pid_t nginx_start(const struct shards_cfg *c, int port)
{
	char conf[1300], pfx[1200];
	FILE *f;
	pid_t pid;

	snprintf(pfx, sizeof(pfx), "%s/nginx", c->cl.dir);
	snprintf(conf, sizeof(conf), "%s/nginx.conf", pfx);
	mkdir(pfx, 0755);
	f = fopen(conf, "w");
	if (!f)
		return -errno;
	fprintf(f, "daemon off;\nworker_processes 2;\npid %s/nginx.pid;\nerror_log %s/error.log;\n"
		"events { worker_connections 256; }\n"
		"http {\n access_log off;\n sendfile on;\n tcp_nopush on;\n"
		" client_body_temp_path %s; proxy_temp_path %s; fastcgi_temp_path %s;\n"
		" uwsgi_temp_path %s; scgi_temp_path %s;\n"
		" server { listen [::1]:%d; root %s; }\n}\n", pfx, pfx, pfx, pfx, pfx, pfx, pfx,
		port, c->src);
	fclose(f);
	pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, 1);
		dup2(null, 2);
		execlp("nginx", "nginx", "-p", pfx, "-c", conf, "-e", "stderr", (char *)NULL);
		_exit(127);
	}
	return pid;
}

static double ref_round(const struct shards_cfg *c, int port)
{
	double t0, bytes = (double)c->nfiles * SHARD_BYTES;
	int rc;

	empty_dst(c);
	t0 = bench_now();
	rc = sh(c, "cd '%s' && ls | xargs -P %d -I{} curl -sf -o '%s/{}' 'http://[::1]:%d/{}'",
		c->src, CURL_PROCS, c->dst, port);
	if (rc == 0)
		rc = sh(c, "sync -f '%s/shard-00000.tar'", c->dst); /* durable, as stage's fsyncs */
	t0 = bench_now() - t0;
	if (rc == 0)
		rc = sh(c, "[ \"$(ls '%s' | wc -l)\" = %d ] && cmp '%s/shard-00000.tar' "
			"'%s/shard-00000.tar'", c->dst, c->nfiles, c->src, c->dst);
	if (rc) {
		fprintf(stderr, "stage: nginx + curl failed (exit %d); see %s\n", rc, c->cmdlog);
		return -1;
	}
	return bytes / 1048576.0 / t0;
}

static int usage(int code)
{
	printf("usage: shelf-bench stage --shards [--gib 2] [--rounds 3] [--workers 8] [--dir DIR]\n"
	       "       [--nodes 24] [--chassis 3] [--dst DIR] [--cluster PATH] [--keep]\n"
	       "  stage_shards_32m: `shelf stage` of GIB GiB of 32 MiB objects against nginx +\n"
	       "  %d curl processes; a local cluster in DIR/stage-shards (removed after), needs\n"
	       "  root, nginx and curl\n", CURL_PROCS);
	return code;
}

int bench_stagecmd_run(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "shards", 0, NULL, 'S' }, { "gib", 1, NULL, 'g' },   { "rounds", 1, NULL, 'R' },
		{ "workers", 1, NULL, 'w' }, { "dir", 1, NULL, 'd' },  { "nodes", 1, NULL, 'n' },
		{ "chassis", 1, NULL, 'c' }, { "dst", 1, NULL, 'D' },  { "cluster", 1, NULL, 'C' },
		{ "keep", 0, NULL, 'K' },   { "help", 0, NULL, 'h' }, { NULL, 0, NULL, 0 },
	};
	/* shared with the child that measures in the cluster's namespace */
	struct shards_cfg *c = mmap(NULL, sizeof(*c), PROT_READ | PROT_WRITE,
				    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	const char *base = "build/bench", *script = NULL, *dst = NULL;
	double ref[ROUNDS_MAX];
	struct statvfs vs;
	pid_t ng = -1;
	int opt, ret = 1, port = 20000 + getpid() % 20000;

	if (c == MAP_FAILED)
		return 1;
	c->gib = 2;
	c->rounds = 3;
	c->workers = 8;
	c->cl.tag = "stage-shards";
	c->cl.nodes = 24;
	c->cl.chassis = 3;
	c->cl.replicas = 2;
	c->cl.drive_size = "1G";
	optind = 1;
	while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (opt) {
		case 'S': break;
		case 'g': c->gib = atof(optarg); break;
		case 'R': c->rounds = atoi(optarg); break;
		case 'w': c->workers = (unsigned)atoi(optarg); break;
		case 'd': base = optarg; break;
		case 'n': c->cl.nodes = atoi(optarg); break;
		case 'c': c->cl.chassis = atoi(optarg); break;
		case 'D': dst = optarg; break;
		case 'C': script = optarg; break;
		case 'K': c->cl.keep = true; break;
		default:
			ret = usage(opt == 'h' ? 0 : 2);
			goto out;
		}
	}
	c->nfiles = (int)(c->gib * 32 + 0.5);
	if (c->nfiles < 1 || c->nfiles > 32 * 64 || c->rounds < 1 || c->rounds > ROUNDS_MAX ||
	    c->workers < 1 || c->workers > 16 || c->cl.nodes < 2 || c->cl.nodes > 99 ||
	    c->cl.chassis < 2 || c->cl.chassis > c->cl.nodes) {
		fprintf(stderr, "shelf-bench stage --shards: --gib 1/32..64, --rounds 1..%d, "
				"--workers 1..16, --nodes 2..99, --chassis 2..nodes\n", ROUNDS_MAX);
		ret = 2;
		goto out;
	}
	if (system("command -v nginx >/dev/null && command -v curl >/dev/null") != 0) {
		printf("stage --shards: skipped: needs nginx and curl\n");
		ret = 0;
		goto out;
	}
	ret = bench_cluster_init(&c->cl, base, script);
	if (ret) {
		ret = ret == 77 ? 0 : ret;
		goto out;
	}
	ret = 1;
	snprintf(c->src, sizeof(c->src), "%s/src", c->cl.dir);
	snprintf(c->cmdlog, sizeof(c->cmdlog), "%s/commands.log", c->cl.dir);
	snprintf(c->shelf, sizeof(c->shelf), "%s/shelf", c->cl.bin);
	if (dst)
		snprintf(c->dst, sizeof(c->dst), "%s/stage-shards-dst.%ld", dst, (long)getpid());
	else if (statvfs("/dev/shm", &vs) == 0 &&
		 (double)vs.f_bavail * vs.f_frsize > 2.5 * c->nfiles * (double)SHARD_BYTES)
		snprintf(c->dst, sizeof(c->dst), "/dev/shm/shelf-bench-stage.%ld", (long)getpid());
	else
		snprintf(c->dst, sizeof(c->dst), "%s/dst", c->cl.dir);
	fprintf(stderr, "stage: %d shards of 32 MiB (%.2f GiB) staged into %s\n", c->nfiles,
		c->nfiles / 32.0, c->dst);
	if (make_shards(c) < 0)
		goto down;
	/* the reference: nginx on loopback, 16 curl processes */
	ng = nginx_start(c, port);
	if (ng < 0)
		goto down;
	for (int i = 0; i < 100 && sh(c, "curl -sf -o /dev/null 'http://[::1]:%d/shard-00000.tar'",
				       port) != 0; i++)
		usleep(100000);
	for (int r = 0; r < c->rounds; r++)
		if ((ref[r] = ref_round(c, port)) < 0)
			goto down;
	kill(ng, SIGTERM);
	waitpid(ng, NULL, 0);
	ng = -1;
	if (bench_cluster_up(&c->cl) < 0 || bench_cluster_child(shards_child, c) != 0)
		goto down;
	for (int r = 0; r < c->rounds; r++)
		fprintf(stderr, "stage: round %d: shelf stage %.1f MiB/s, nginx + %d curl %.1f MiB/s\n",
			r + 1, c->ours[r], CURL_PROCS, ref[r]);
	bench_line("stage_shards_32m", bench_median(c->ours, c->rounds),
		   bench_median(ref, c->rounds), "MiB/s", "nginx+curl16");
	ret = 0;
down:
	if (ng > 0) {
		kill(ng, SIGTERM);
		waitpid(ng, NULL, 0);
	}
	sh(c, "rm -rf '%s'", c->dst);
	bench_cluster_down(&c->cl);
out:
	munmap(c, sizeof(*c));
	return ret;
}
