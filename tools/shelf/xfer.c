/* What `shelf put -r` and `shelf stage` share (xfer.h). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "overlay.h"
#include "data.h"
#include "text.h"
#include "xfer.h"

#define CRC_READ_BYTES (1u << 20)

volatile sig_atomic_t xfer_interrupted;

static int xusage(const char *cmd, const char *args, const char *extra, int code)
{
	fprintf(code ? stderr : stdout,
		"usage: shelf %s %s [--json] [--inflight N] [--workers N] [--held-mib N]\n"
		"       [--slice NAME] [--client DIR] [--broker ENDPOINT] [--node ADDR] [--timeout MS]\n"
		"       [--connect-timeout MS] [--chassis C]\n"
		"%s"
		"  --json             the summary as JSON on stdout\n"
		"  --inflight N       small objects in flight across the nodes (default %d)\n"
		"  --workers N        large objects (over the slice's chunk size) streamed at once,\n"
		"                     one client each (default %d, at most %d)\n"
		"  --held-mib N       MiB of small objects held in memory at once (default %u)\n"
		"  (the other options as for `shelf get`; see `shelf get --help`)\n",
		cmd, args, extra ? extra : "", XFER_INFLIGHT_DEFAULT, XFER_LARGE_WORKERS_DEFAULT,
		XFER_LARGE_WORKERS_MAX, XFER_HELD_BYTES_DEFAULT >> 20);
	return code;
}

static int num(const char *cmd, const char *opt, const char *v, unsigned long max,
	       unsigned long *out)
{
	char *end;

	errno = 0;
	*out = strtoul(v, &end, 10);
	if (errno || end == v || *end || *out < 1 || *out > max) {
		fprintf(stderr, "shelf %s: %s '%s' is not 1..%lu\n", cmd, opt, v, max);
		return 2;
	}
	return 0;
}

int xfer_parse(int argc, char **argv, const char *cmd, const char *args, const char *extra,
	       struct xopts *o)
{
	static const struct option lo[] = {
		{ "slice", 1, NULL, 's' }, { "client", 1, NULL, 'c' }, { "broker", 1, NULL, 'b' },
		{ "timeout", 1, NULL, 't' }, { "connect-timeout", 1, NULL, 'C' },
		{ "node", 1, NULL, 'n' }, { "chassis", 1, NULL, 'H' }, { "json", 0, NULL, 'j' },
		{ "inflight", 1, NULL, 'i' }, { "workers", 1, NULL, 'w' },
		{ "held-mib", 1, NULL, 'm' }, { "recursive", 0, NULL, 'r' }, { "help", 0, NULL, 'h' }, { NULL, 0, NULL, 0 },
	};
	unsigned long v;
	int c;

	memset(o, 0, sizeof(*o));
	o->slice = cli_env("SHELF_SLICE", "default");
	o->client = cli_env("SHELF_CLIENT", NULL);
	o->broker = cli_env("SHELF_BROKER", CLI_BROKER_DEFAULT);
	o->chassis = cli_env("SHELF_CHASSIS", NULL);
	o->inflight = XFER_INFLIGHT_DEFAULT;
	o->workers = XFER_LARGE_WORKERS_DEFAULT;
	o->held_bytes = XFER_HELD_BYTES_DEFAULT;
	optind = 1;
	while ((c = getopt_long(argc, argv, "hr", lo, NULL)) != -1) {
		switch (c) {
		case 's': o->slice = optarg; break;
		case 'c': o->client = optarg; break;
		case 'b': o->broker = optarg; break;
		case 't':
			if (num(cmd, "--timeout", optarg, 3600000, &v))
				return 2;
			o->timeout_ms = (int)v;
			break;
		case 'C':
			if (num(cmd, "--connect-timeout", optarg, 3600000, &v))
				return 2;
			o->connect_timeout_ms = (int)v;
			break;
		case 'n':
			if (o->nnodes == SHELF_NODES_MAX) {
				fprintf(stderr, "shelf %s: at most %d --node\n", cmd, SHELF_NODES_MAX);
				return 2;
			}
			o->nodes[o->nnodes++] = optarg;
			break;
		case 'H': o->chassis = optarg; break;
		case 'j': o->json = true; break;
		case 'r': o->recursive = true; break;
		case 'i':
			if (num(cmd, "--inflight", optarg, SHELF_MAX_INFLIGHT_MAX, &v))
				return 2;
			o->inflight = (unsigned)v;
			break;
		case 'w':
			if (num(cmd, "--workers", optarg, XFER_LARGE_WORKERS_MAX, &v))
				return 2;
			o->workers = (unsigned)v;
			break;
		case 'm':
			if (num(cmd, "--held-mib", optarg, 65536, &v))
				return 2;
			o->held_bytes = (uint64_t)v << 20;
			break;
		case 'h': return xusage(cmd, args, extra, 0) - 1;
		default: return xusage(cmd, args, extra, 2);
		}
	}
	for (; optind < argc; optind++) {
		if (o->nargs == 2)
			return xusage(cmd, args, extra, 2);
		o->args[o->nargs++] = argv[optind];
	}
	if (o->nargs < 2)
		return xusage(cmd, args, extra, 2);
	if (!o->client) {
		fprintf(stderr, "shelf %s: no client identity: use --client DIR or SHELF_CLIENT "
			"(made by `shelf-broker client`)\n", cmd);
		return 2;
	}
	return 0;
}

int xfer_open(const char *cmd, const struct xopts *o, struct shelf **s)
{
	char err[SHELF_ERR_BYTES];
	int rc = shelf_cli_open(cmd, o->client, o->broker, o->nodes, o->nnodes, o->timeout_ms, s);

	if (rc)
		return rc;
	if (o->connect_timeout_ms)
		shelf_set_connect_timeout(*s, o->connect_timeout_ms);
	if (o->chassis && shelf_set_chassis(*s, o->chassis, err, sizeof(err)) < 0) {
		fprintf(stderr, "shelf %s: %s\n", cmd, err);
		shelf_close(s);
		return 2;
	}
	shelf_set_max_inflight(*s, o->inflight);
	return 0;
}

static void on_signal(int sig)
{
	(void)sig;
	xfer_interrupted = 1;
}

void xfer_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

void xbar_start(struct xbar *b, const char *what)
{
	b->what = what;
	b->started = ovl_mono_ns() / 1e9;
	b->drawn = 0;
	b->tty = isatty(2);
	b->shown = false;
}

double xbar_seconds(const struct xbar *b)
{
	return ovl_mono_ns() / 1e9 - b->started;
}

void xbar_draw(struct xbar *b, uint64_t files_done, uint64_t files_total, uint64_t bytes_done,
	       uint64_t bytes_total, bool last)
{
	double now = ovl_mono_ns() / 1e9, dt = now - b->started;
	char line[256];

	if (!b->tty || (last && !b->shown) || dt < 1.0 || (!last && now - b->drawn < 0.1))
		return;
	b->drawn = now;
	b->shown = true;
	cli_bar_text(line, sizeof(line), b->what, files_done, files_total, bytes_done, bytes_total,
		     dt);
	fprintf(stderr, "\r%s\033[K%s", line, last ? "\n" : "");
}

bool xfer_maybe_manifest(uint64_t stored_size)
{
	return stored_size >= 84 && (stored_size - 68) % 16 == 0;
}

int xfer_mkdirs(const char *path)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);

	if (len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, 0755) < 0 && errno != EEXIST) {
			int e = errno;

			*p = '/';
			return -e;
		}
		*p = '/';
	}
	return 0;
}

int xfer_sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), ret = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0 && errno != EINVAL)
		ret = -errno;
	close(fd);
	return ret;
}

int xfer_file_crc(const char *path, uint64_t want_size, uint64_t *size, uint32_t *crc)
{
	uint8_t *buf = NULL;
	struct stat st;
	uint32_t c = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW), ret = 0;

	if (fd < 0)
		return errno == ELOOP ? -EINVAL : -errno;
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = -EINVAL;
		goto out;
	}
	*size = (uint64_t)st.st_size;
	if (want_size != UINT64_MAX && *size != want_size) {
		ret = -EAGAIN;
		goto out;
	}
	buf = malloc(CRC_READ_BYTES);
	if (!buf) {
		ret = -ENOMEM;
		goto out;
	}
	for (;;) {
		ssize_t n = read(fd, buf, CRC_READ_BYTES);

		if (n < 0 && errno == EINTR && !xfer_interrupted)
			continue;
		if (n < 0) {
			ret = -errno;
			goto out;
		}
		if (n == 0)
			break;
		if (xfer_interrupted) {
			ret = -EAGAIN;
			goto out;
		}
		c = shelf_crc32c(c, buf, (size_t)n);
	}
	*crc = c;
out:
	free(buf);
	close(fd);
	return ret;
}
