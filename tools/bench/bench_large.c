/*
 * shelf-bench stage, its large-object part (issue 15), on the cluster of
 * bench_stage.c:
 *
 *   large_put_1g       MiB/s of shelf_put_fd() of one 1 GiB file on an R=1
 *                      slice, against fio writing the same bytes durably
 *                      (--rw=write --bs=1m --end_fsync=1 --direct=0) into
 *                      the directory that holds the drives (same filesystem)
 *   large_get_1g       MiB/s of shelf_get_fd() of that object to a file,
 *                      against nginx (on loopback, a config in the bench
 *                      directory) serving the same file and curl fetching
 *                      it to a file
 *   client_rss_mib_1g  the client process's peak RSS (VmHWM of a forked
 *                      child that does only the PUT and the GET), against
 *                      the 64 MiB budget of the issue
 *
 * Each figure is wall-clock time of the whole transfer (process start-up
 * included for fio and curl, which favours them slightly). The GET's file
 * is checked against the source (crc32c) after the timing. Every file is
 * in the bench directory, removed with it.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "bench_cluster.h"
#include "bench_large.h"
#include "overlay.h"
#include "shelf.h"

#define LARGE_MIB 1024.0
#define LARGE_RSS_BUDGET_MIB 64.0
#define LARGE_BUF_BYTES (1u << 20)

struct large_run {
	const struct bench_cluster *cl;
	uint64_t bytes;
	unsigned inflight;              /* shelf_set_inflight(); 0: the library's default */
	char src[1300], out[1300], res[1300];
	uint32_t crc;
};

/* crc32c of a file's bytes, or -errno. */
static int file_crc(const char *path, uint32_t *crc)
{
	uint8_t *b = malloc(LARGE_BUF_BYTES);
	int fd = open(path, O_RDONLY | O_CLOEXEC), ret = 0;
	ssize_t n;

	*crc = 0;
	if (fd < 0 || !b) {
		ret = fd < 0 ? -errno : -ENOMEM;
		goto out;
	}
	while ((n = read(fd, b, LARGE_BUF_BYTES)) > 0)
		*crc = ovl_crc32c(*crc, b, (size_t)n);
	if (n < 0)
		ret = -errno;
out:
	if (fd >= 0)
		close(fd);
	free(b);
	return ret;
}

/* The source: bytes of a fixed pseudo-random sequence (incompressible). */
static int make_source(const char *path, uint64_t bytes)
{
	uint64_t x = 0x9e3779b97f4a7c15ull;
	uint64_t *b = malloc(LARGE_BUF_BYTES);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644), ret = 0;

	if (fd < 0 || !b) {
		ret = fd < 0 ? -errno : -ENOMEM;
		goto out;
	}
	for (uint64_t done = 0; done < bytes; done += LARGE_BUF_BYTES) {
		for (size_t i = 0; i < LARGE_BUF_BYTES / 8; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			b[i] = x;
		}
		if (write(fd, b, LARGE_BUF_BYTES) != (ssize_t)LARGE_BUF_BYTES) {
			ret = -EIO;
			goto out;
		}
	}
out:
	if (fd >= 0)
		close(fd);
	free(b);
	return ret;
}

/* The child: PUT and GET, then its peak RSS; the figures into r->res. */
static int large_child(void *arg)
{
	struct large_run *r = arg;
	struct shelf *s = NULL;
	char err[SHELF_ERR_BYTES], client[1200];
	double t0, put_s, get_s;
	long hwm_kib = -1;
	int fd = -1, ret = 1;
	uint32_t crc = 0;
	FILE *f;

	if (bench_cluster_enter(r->cl) < 0)
		return 1;
	snprintf(client, sizeof(client), "%s/broker/clients/large", r->cl->cdir);
	if (shelf_open(&s, client, BENCH_CLUSTER_BROKER, err, sizeof(err)) < 0) {
		fprintf(stderr, "large: client: %s\n", err);
		return 1;
	}
	shelf_set_timeout(s, 60000);
	if (r->inflight)
		shelf_set_inflight(s, r->inflight);
	fd = open(r->src, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "large: cannot open '%s': %s\n", r->src, strerror(errno));
		goto out;
	}
	t0 = bench_now();
	if (shelf_put_fd(s, "r1", "bench/g1", 8, fd, err, sizeof(err)) < 0) {
		fprintf(stderr, "large: shelf_put_fd: %s\n", err);
		goto out;
	}
	put_s = bench_now() - t0;
	close(fd);
	fd = open(r->out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "large: cannot create '%s': %s\n", r->out, strerror(errno));
		goto out;
	}
	t0 = bench_now();
	if (shelf_get_fd(s, "r1", "bench/g1", 8, 0, UINT64_MAX, fd, NULL, err, sizeof(err)) < 0) {
		fprintf(stderr, "large: shelf_get_fd: %s\n", err);
		goto out;
	}
	get_s = bench_now() - t0;
	/* the peak of this process, which did nothing but these two */
	f = fopen("/proc/self/status", "r");
	if (f) {
		char line[256];

		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "VmHWM: %ld kB", &hwm_kib) == 1)
				break;
		fclose(f);
	}
	if (file_crc(r->out, &crc) < 0 || crc != r->crc) {
		fprintf(stderr, "large: the GET's file differs from the source\n");
		goto out;
	}
	f = fopen(r->res, "w");
	if (!f)
		goto out;
	fprintf(f, "%f %f %ld\n", put_s, get_s, hwm_kib);
	fclose(f);
	ret = 0;
out:
	if (fd >= 0)
		close(fd);
	shelf_close(&s);
	return ret;
}

/* A free TCP port on 127.0.0.1, or -errno. */
static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -EIO;

	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &al) == 0)
		port = ntohs(a.sin_port);
	close(fd);
	return port;
}

static int sh(const char *cmd)
{
	int st = system(cmd);

	return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -ECHILD;
}

/* nginx serving dir/www/g1 on loopback, fetched with curl: MiB/s or < 0. */
static double ref_get(const char *dir, uint64_t bytes, uint32_t want)
{
	char conf[1200], cmd[8192], got[1200];
	double t0, secs = -1;
	uint32_t crc = 0;
	int port = free_port();
	FILE *f;

	if (port < 0)
		return -1;
	snprintf(conf, sizeof(conf), "%s/nginx.conf", dir);
	f = fopen(conf, "w");
	if (!f)
		return -1;
	fprintf(f, "worker_processes 1;\npid %s/nginx.pid;\nerror_log %s/nginx.err;\n"
		"events { worker_connections 64; }\n"
		"http {\n access_log off;\n sendfile on;\n tcp_nopush on;\n"
		" client_body_temp_path %s/tmp;\n proxy_temp_path %s/tmp;\n"
		" fastcgi_temp_path %s/tmp;\n"
		" server { listen 127.0.0.1:%d; root %s/www; }\n}\n",
		dir, dir, dir, dir, dir, port, dir);
	fclose(f);
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s/tmp' && nginx -e '%s/nginx.err' -p '%s' -c '%s'",
		 dir, dir, dir, conf);
	if (sh(cmd) < 0) {
		fprintf(stderr, "large: nginx did not start; see %s/nginx.err\n", dir);
		return -1;
	}
	snprintf(got, sizeof(got), "%s/curl.out", dir);
	snprintf(cmd, sizeof(cmd), "curl -sSf --retry 5 --retry-connrefused --retry-delay 0 -o '%s' "
		 "http://127.0.0.1:%d/g1", got, port);
	t0 = bench_now();
	if (sh(cmd) == 0)
		secs = bench_now() - t0;
	snprintf(cmd, sizeof(cmd), "kill $(cat '%s/nginx.pid') 2>/dev/null", dir);
	sh(cmd);
	if (secs < 0 || file_crc(got, &crc) < 0 || crc != want) {
		fprintf(stderr, "large: curl from nginx failed or gave other bytes\n");
		unlink(got);
		return -1;
	}
	unlink(got);
	return (double)bytes / (1 << 20) / secs;
}

/* fio writing the same bytes durably into wdir: MiB/s or < 0. */
static double ref_put(const char *wdir, uint64_t bytes)
{
	char cmd[2000], file[1200];
	double t0, secs;

	snprintf(file, sizeof(file), "%s/fio.dat", wdir);
	snprintf(cmd, sizeof(cmd), "fio --name=large_put --filename='%s' --rw=write --bs=1m "
		 "--size=%llu --end_fsync=1 --direct=0 --ioengine=psync --output=/dev/null",
		 file, (unsigned long long)bytes);
	t0 = bench_now();
	if (sh(cmd) < 0) {
		fprintf(stderr, "large: fio failed\n");
		unlink(file);
		return -1;
	}
	secs = bench_now() - t0;
	unlink(file);
	return (double)bytes / (1 << 20) / secs;
}

int bench_large_run(const struct bench_cluster *cl, uint64_t bytes, unsigned inflight)
{
	struct large_run r = { .cl = cl, .bytes = bytes, .inflight = inflight };
	char dir[1100], www[1200], cmd[3000];
	double put_s = 0, get_s = 0, mib = (double)bytes / (1 << 20), ref_g, ref_p;
	long hwm = -1;
	int ret;
	FILE *f;

	/* an R=1 slice and a client for it */
	if (bench_cluster_exec(cl, (char *[]){ "shelf", "slice", "create", "r1", "--replicas", "1",
					       NULL }) < 0) {
		fprintf(stderr, "large: cannot create slice r1; see %s\n", cl->log);
		return 1;
	}
	snprintf(cmd, sizeof(cmd), "%s/broker", cl->cdir);
	if (bench_cluster_exec(cl, (char *[]){ "shelf-broker", "client", "--dir", cmd, "--name",
					       "large", "--slices", "default,r1", NULL }) < 0) {
		fprintf(stderr, "large: cannot issue client 'large'; see %s\n", cl->log);
		return 1;
	}
	snprintf(dir, sizeof(dir), "%s/large", cl->dir);
	snprintf(www, sizeof(www), "%s/www", dir);
	if (mkdir(dir, 0755) < 0 || mkdir(www, 0755) < 0) {
		fprintf(stderr, "large: cannot make '%s': %s\n", www, strerror(errno));
		return 1;
	}
	snprintf(r.src, sizeof(r.src), "%s/g1", www);
	snprintf(r.out, sizeof(r.out), "%s/g1.got", dir);
	snprintf(r.res, sizeof(r.res), "%s/result", dir);
	if (make_source(r.src, bytes) < 0 || file_crc(r.src, &r.crc) < 0) {
		fprintf(stderr, "large: cannot write the %.0f MiB source in %s\n", mib, www);
		return 1;
	}
	/* the slice's map reaches every node */
	sleep(2);
	ret = bench_cluster_child(large_child, &r);
	unlink(r.out);
	f = ret == 0 ? fopen(r.res, "r") : NULL;
	if (!f || fscanf(f, "%lf %lf %ld", &put_s, &get_s, &hwm) != 3 || put_s <= 0 || get_s <= 0) {
		if (f)
			fclose(f);
		fprintf(stderr, "large: the transfers failed\n");
		return 1;
	}
	fclose(f);
	ref_g = ref_get(dir, bytes, r.crc);
	ref_p = ref_put(cl->cdir, bytes);
	fprintf(stderr, "large: %.0f MiB, %s chunks in flight: shelf_put_fd %.2f s, shelf_get_fd "
		"%.2f s, client peak RSS %ld KiB\n", mib, inflight ? "--large-inflight" : "the default number of (up to 4, 48 MiB)",
		put_s, get_s, hwm);
	bench_line("large_get_1g", mib / get_s, ref_g, "MiB/s", "nginx+curl");
	bench_line("large_put_1g", mib / put_s, ref_p, "MiB/s", "fio");
	bench_line("client_rss_mib_1g", (double)hwm / 1024, LARGE_RSS_BUDGET_MIB, "MiB", "budget");
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	sh(cmd);
	return ref_g > 0 && ref_p > 0 ? 0 : 1;
}
