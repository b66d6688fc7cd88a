/*
 * shelf put / get / rm / ls / stat: objects, through libshelf.
 *
 * Common options: --slice NAME (default $SHELF_SLICE, else "default"),
 * --client DIR (default $SHELF_CLIENT: made by `shelf-broker client`),
 * --broker ENDPOINT (default $SHELF_BROKER, else tcp://[::1]:7400; "none":
 * no broker), --node ADDR (repeatable; default $SHELF_NODES, comma-separated:
 * nodes asked for the slice map when no broker answers), --timeout MS,
 * --connect-timeout MS (one replica's connect and handshake, when another
 * could answer), --chassis [SITE/]CHASSIS (default $SHELF_CHASSIS: replicas
 * there are read first), --json on listings.
 * Exit codes: 0 ok, 1 failed, 2 usage, 3 not found, 5 partial (ls: R or
 * more nodes did not answer, so keys held only there may be missing; each
 * node that did not answer is named on stderr).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "batch.h"
#include "data.h"
#include "json.h"
#include "overlay.h"
#include "shelf.h"
#include "text.h"
#include "xfer.h"

#define EXIT_PARTIAL 5
#define LS_MISSING_MAX 64 /* missing nodes ls remembers, to name each once */
#define LS_PAGE 1000u /* keys asked of the nodes per page */

struct dopts {
	const char *slice, *client, *broker, *range, *after, *chassis;
	int connect_timeout_ms;
	const char *nodes[SHELF_NODES_MAX];
	int nnodes;
	unsigned limit;
	int timeout_ms;
	bool json;
	const char *args[3];
	int nargs;
};

static int dusage(const char *cmd, const char *args, int code)
{
	fprintf(code ? stderr : stdout,
		"usage: shelf %s %s [--slice NAME] [--client DIR] [--broker ENDPOINT] [--timeout MS]%s\n"
		"  --slice NAME       slice (default $SHELF_SLICE, else 'default')\n"
		"  --client DIR       client identity from `shelf-broker client` (default $SHELF_CLIENT)\n"
		"  --broker ENDPOINT  broker (default $SHELF_BROKER, else tcp://[::1]:7400; 'none': no broker)\n"
		"  --node ADDR        a node to ask for the slice map when no broker answers: an IPv6\n"
		"                     address (port 7480) or [ADDR]:PORT; repeat it, or set\n"
		"                     $SHELF_NODES (comma-separated)\n"
		"  --connect-timeout MS  time one replica gets to connect when another could\n"
		"                     answer (default 1000)\n"
		"  --chassis C        this client's chassis ([SITE/]CHASSIS, default $SHELF_CHASSIS):\n"
		"                     replicas there are read first\n",
		cmd, args,
		strcmp(cmd, "ls") == 0 ? " [--limit N] [--after KEY] [--json]\n"
		"  --limit N          at most N keys (default: all, fetched a page at a time)\n"
		"  --after KEY        start after KEY (the last key of the previous page)"
		: strcmp(cmd, "get") == 0 ? " [--range START-END|START-]\n"
		"  --range R          bytes START..END (inclusive) or START- (to the end):\n"
		"                     decimal digits only, START <= END; any size (large\n"
		"                     objects are read chunk by chunk)"
		: strcmp(cmd, "stat") == 0 ? " [--json]" : "");
	return code;
}

static int dparse(int argc, char **argv, const char *cmd, const char *args, int min, int max,
		  struct dopts *o)
{
	static const struct option lo[] = {
		{ "slice", 1, NULL, 's' }, { "client", 1, NULL, 'c' }, { "broker", 1, NULL, 'b' },
		{ "timeout", 1, NULL, 't' }, { "range", 1, NULL, 'r' }, { "limit", 1, NULL, 'l' },
		{ "json", 0, NULL, 'j' }, { "help", 0, NULL, 'h' }, { "after", 1, NULL, 'a' },
		{ "node", 1, NULL, 'n' }, { "connect-timeout", 1, NULL, 'C' },
		{ "chassis", 1, NULL, 'H' },
		{ NULL, 0, NULL, 0 },
	};
	unsigned long v;
	char *end;
	int c;

	memset(o, 0, sizeof(*o));
	o->slice = cli_env("SHELF_SLICE", "default");
	o->client = cli_env("SHELF_CLIENT", NULL);
	o->broker = cli_env("SHELF_BROKER", CLI_BROKER_DEFAULT);
	o->chassis = cli_env("SHELF_CHASSIS", NULL);
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 's': o->slice = optarg; break;
		case 'c': o->client = optarg; break;
		case 'b': o->broker = optarg; break;
		case 't':
			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno || end == optarg || *end || v < 1 || v > 3600000) {
				fprintf(stderr, "shelf %s: --timeout '%s' is not 1..3600000 (ms)\n", cmd, optarg);
				return 2;
			}
			o->timeout_ms = (int)v;
			break;
		case 'C':
			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno || end == optarg || *end || v < 1 || v > 3600000) {
				fprintf(stderr, "shelf %s: --connect-timeout '%s' is not 1..3600000 (ms)\n",
					cmd, optarg);
				return 2;
			}
			o->connect_timeout_ms = (int)v;
			break;
		case 'H': o->chassis = optarg; break;
		case 'r': o->range = optarg; break;
		case 'l':
			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno || end == optarg || *end || v < 1 || v > UINT32_MAX) {
				fprintf(stderr, "shelf %s: --limit '%s' is not a count of keys (1..%u)\n", cmd,
					optarg, UINT32_MAX);
				return 2;
			}
			o->limit = (unsigned)v;
			break;
		case 'a':
			if (strlen(optarg) > 1024) {
				fprintf(stderr, "shelf %s: --after: keys are at most 1024 bytes\n", cmd);
				return 2;
			}
			o->after = optarg;
			break;
		case 'j': o->json = true; break;
		case 'n':
			if (o->nnodes == SHELF_NODES_MAX) {
				fprintf(stderr, "shelf %s: at most %d --node\n", cmd, SHELF_NODES_MAX);
				return 2;
			}
			o->nodes[o->nnodes++] = optarg;
			break;
		case 'h': return dusage(cmd, args, 0) - 1;
		default: return dusage(cmd, args, 2);
		}
	}
	for (; optind < argc; optind++) {
		if (o->nargs == max)
			return dusage(cmd, args, 2);
		o->args[o->nargs++] = argv[optind];
	}
	if (o->nargs < min)
		return dusage(cmd, args, 2);
	if (!o->client) {
		fprintf(stderr, "shelf %s: no client identity: use --client DIR or SHELF_CLIENT "
			"(made by `shelf-broker client`)\n", cmd);
		return 2;
	}
	return 0;
}

/* Node addresses from --node, else from $SHELF_NODES (comma-separated). */
static int add_nodes(const char *cmd, const struct dopts *o, struct shelf *s)
{
	const char *env = getenv("SHELF_NODES");
	char err[256], *copy = NULL, *save = NULL;
	int ret = 0;

	for (int i = 0; i < o->nnodes && ret == 0; i++)
		ret = shelf_add_node(s, o->nodes[i], err, sizeof(err));
	if (o->nnodes == 0 && env && *env) {
		copy = strdup(env);
		if (!copy)
			return 1;
		for (char *t = strtok_r(copy, ", ", &save); t && ret == 0; t = strtok_r(NULL, ", ", &save))
			ret = shelf_add_node(s, t, err, sizeof(err));
		free(copy);
	}
	if (ret < 0) {
		fprintf(stderr, "shelf %s: %s\n", cmd, err);
		return 2;
	}
	return 0;
}

/* libshelf's warnings (a refused map...) go to stderr, named by the command. */
static void warn_cb(void *arg, const char *text)
{
	fprintf(stderr, "shelf %s: warning: %s\n", (const char *)arg, text);
}

int shelf_cli_open(const char *cmd, const char *client, const char *broker,
		   const char *const *nodes, int nnodes, int timeout_ms, struct shelf **s)
{
	struct dopts o = { .client = client, .broker = broker, .nnodes = nnodes,
			   .timeout_ms = timeout_ms };
	char err[SHELF_ERR_BYTES];
	int rc;

	for (int i = 0; i < nnodes && i < SHELF_NODES_MAX; i++)
		o.nodes[i] = nodes[i];
	if (shelf_open(s, o.client, strcmp(o.broker, "none") == 0 ? NULL : o.broker, err,
		       sizeof(err)) < 0) {
		fprintf(stderr, "shelf %s: %s\n", cmd, err);
		return 1;
	}
	shelf_set_warn(*s, warn_cb, (void *)cmd);
	if ((rc = add_nodes(cmd, &o, *s)) != 0) {
		shelf_close(s);
		return rc;
	}
	if (o.timeout_ms)
		shelf_set_timeout(*s, o.timeout_ms);
	return 0;
}

static int open_client(const char *cmd, const struct dopts *o, struct shelf **s)
{
	char err[256];
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
	return 0;
}

static int exit_code(int ret)
{
	return ret == -ENOENT ? 3 : ret < 0 ? 1 : 0;
}

static double mono(void);

/*
 * A progress bar on stderr, when it is a terminal, for transfers that take
 * longer than a second: drawn from the first second on, at most ten times a
 * second, and finished with a summary line.
 */
struct bar {
	const char *what;
	double started, drawn;
	bool shown;
};

static void bar_draw(struct bar *b, uint64_t done, uint64_t total, bool last)
{
	double now = mono(), dt = now - b->started;
	char line[256];

	if (dt < 1.0 || (!last && now - b->drawn < 0.1))
		return;
	b->drawn = now;
	b->shown = true;
	cli_bar_text(line, sizeof(line), b->what, 0, 0, done, total, dt);
	fprintf(stderr, "\r%s\033[K", line);
	if (last)
		fputc('\n', stderr);
}

static void bar_cb(void *arg, uint64_t done, uint64_t total)
{
	bar_draw(arg, done, total, false);
}

/* Start a bar for `what` if stderr is a terminal. */
static void bar_start(struct bar *b, struct shelf *s, const char *what)
{
	b->what = what;
	b->started = mono();
	b->drawn = 0;
	b->shown = false;
	if (isatty(2))
		shelf_set_progress(s, bar_cb, b);
}

/* Finish the bar: a last line if it was shown (or the transfer took > 1 s). */
static void bar_end(struct bar *b, struct shelf *s, uint64_t bytes, bool ok)
{
	if (!s || !isatty(2))
		return;
	shelf_set_progress(s, NULL, NULL);
	if (ok)
		bar_draw(b, bytes, bytes, true);
	else if (b->shown)
		fputc('\n', stderr);
}

static double mono(void)
{
	return ovl_mono_ns() / 1e9;
}

/*
 * The input as an fd: a regular file, a pipe, or stdin ("-"). Anything
 * else (a directory, a device...) is refused with -EISDIR or -EINVAL and
 * nothing is read.
 */
static int open_input(const char *path, int *fd)
{
	bool std = strcmp(path, "-") == 0;
	struct stat st;

	if (std ? fstat(0, &st) < 0 : stat(path, &st) < 0)
		return -errno;
	if (S_ISDIR(st.st_mode))
		return -EISDIR;
	if (!std && !S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode))
		return -EINVAL;
	*fd = std ? 0 : open(path, O_RDONLY | O_CLOEXEC);
	return *fd < 0 ? -errno : 0;
}

/* A write held away from some of its homes: say so (the substitutes keep
 * hints and hand the copies over when the homes are back). */
static void write_warn(const char *cmd, struct shelf *s, const char *key)
{
	struct shelf_write_info wi;

	if (shelf_last_write(s, &wi) < 0 || !wi.has_held || wi.homes >= wi.replicas)
		return;
	fprintf(stderr, "shelf %s: warning: '%s' is held by %u node%s, %u of them at %s home "
		"(R=%u): the others keep hints until their home is back\n", cmd, key, wi.held,
		wi.held == 1 ? "" : "s", wi.homes, wi.homes == 1 ? "its" : "their", wi.replicas);
}

int cmd_put(int argc, char **argv)
{
	struct dopts o;
	struct shelf *s = NULL;
	struct stat st;
	uint64_t len = 0;
	char err[SHELF_ERR_BYTES];
	double t0 = mono();
	int fd = -1;
	int ret;

	if (cli_put_is_recursive(argc, argv))
		return cmd_put_recursive(argc, argv);
	ret = dparse(argc, argv, "put", "KEY [FILE|-]", 1, 2, &o);
	if (ret)
		return ret < 0 ? 0 : ret;
	ret = open_input(o.nargs > 1 ? o.args[1] : "-", &fd);
	if (ret < 0) {
		const char *in = o.nargs > 1 ? o.args[1] : "-";

		if (ret == -EISDIR || ret == -EINVAL) {
			fprintf(stderr, "shelf put: '%s' is %s: the input must be a regular file, a "
				"pipe or stdin ('-')\n", in,
				ret == -EISDIR ? "a directory" : "not a regular file or a pipe");
			return 2;
		}
		fprintf(stderr, "shelf put: cannot read '%s': %s\n", in, strerror(-ret));
		return 1;
	}
	if ((ret = open_client("put", &o, &s)) == 0) {
		struct bar b;

		bar_start(&b, s, "put");
		b.started = t0;
		/* streamed: a file of any size, in chunks (shelf_put_fd) */
		ret = shelf_put_fd(s, o.slice, o.args[0], strlen(o.args[0]), fd, err, sizeof(err));
		if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
			len = (uint64_t)st.st_size;
		bar_end(&b, s, len, ret == 0);
		if (ret < 0)
			fprintf(stderr, "shelf %s\n", err);
		else
			write_warn("put", s, o.args[0]);
		ret = exit_code(ret);
	}
	shelf_close(&s);
	if (fd > 0)
		close(fd);
	return ret;
}

/* Counts the bytes a GET gives, for the bar's last line. */
struct get_out {
	int fd;
	uint64_t bytes;
};

static int get_write(void *arg, const void *buf, size_t len)
{
	struct get_out *g = arg;
	const uint8_t *p = buf;

	while (len) {
		ssize_t w = write(g->fd, p, len);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		p += w;
		len -= (size_t)w;
		g->bytes += (uint64_t)w;
	}
	return 0;
}

int cmd_get(int argc, char **argv)
{
	struct dopts o;
	struct shelf *s = NULL;
	uint64_t off = 0, len = UINT64_MAX;
	char err[SHELF_ERR_BYTES];
	double t0 = mono();
	struct bar pb;
	struct get_out g = { 1, 0 };
	const char *path = NULL;
	struct stat st;
	int ret;

	if (cli_get_is_batch(argc, argv))
		return cmd_get_batch(argc, argv);
	ret = dparse(argc, argv, "get", "KEY [FILE|-]", 1, 2, &o);
	if (ret)
		return ret < 0 ? 0 : ret;
	if (o.range && cli_range_parse(o.range, &off, &len, err, sizeof(err)) < 0) {
		fprintf(stderr, "shelf get: %s\n", err);
		return 2;
	}
	if ((ret = open_client("get", &o, &s)))
		return ret;
	if (o.nargs > 1 && strcmp(o.args[1], "-")) {
		path = o.args[1];
		g.fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (g.fd < 0) {
			fprintf(stderr, "shelf get: cannot write '%s': %s\n", path, strerror(errno));
			ret = 1;
			goto out;
		}
	}
	bar_start(&pb, s, "get");
	pb.started = t0;
	/* streamed: an object of any size, chunk by chunk, each checked */
	ret = shelf_get_stream(s, o.slice, o.args[0], strlen(o.args[0]), off, len, get_write, &g,
			       NULL, err, sizeof(err));
	bar_end(&pb, s, g.bytes, ret == 0);
	if (ret == 0 && path && fsync(g.fd) < 0 && errno != EINVAL) {
		snprintf(err, sizeof(err), "get: cannot write '%s': %s", path, strerror(errno));
		ret = -EIO;
	}
	if (ret < 0) {
		fprintf(stderr, "shelf %s\n", err);
		/* never leave a part of the object looking like the whole; only
		 * a regular file (never /dev/null, a pipe or a device) */
		if (path && g.fd >= 0 && fstat(g.fd, &st) == 0 && S_ISREG(st.st_mode))
			unlink(path);
		ret = exit_code(ret);
		goto out;
	}
	ret = 0;
out:
	if (path && g.fd >= 0)
		close(g.fd);
	shelf_close(&s);
	return ret;
}

int cmd_rm(int argc, char **argv)
{
	struct dopts o;
	struct shelf *s = NULL;
	char err[SHELF_ERR_BYTES];
	int ret = dparse(argc, argv, "rm", "KEY", 1, 1, &o);

	if (ret)
		return ret < 0 ? 0 : ret;
	if ((ret = open_client("rm", &o, &s)))
		return ret;
	ret = shelf_delete(s, o.slice, o.args[0], strlen(o.args[0]), err, sizeof(err));
	if (ret < 0)
		fprintf(stderr, "shelf %s\n", err);
	else
		write_warn("rm", s, o.args[0]);
	shelf_close(&s);
	return exit_code(ret);
}

/* A version as people read it: "MS.COUNTER/NODE" (the hlc's milliseconds
 * and counter, the node in hex), "-" for none. */
static void ver_text(bool has, const struct shelf_version *v, char out[64])
{
	if (!has || (v->hlc == 0 && v->node == 0))
		snprintf(out, 64, "-");
	else
		snprintf(out, 64, "%" PRIu64 ".%u/%016" PRIx64, v->hlc >> 16,
			 (unsigned)(v->hlc & 0xffff), v->node);
}

static int ver_cmp(const struct shelf_version *a, const struct shelf_version *b)
{
	if (a->hlc != b->hlc)
		return a->hlc < b->hlc ? -1 : 1;
	return a->node < b->node ? -1 : a->node > b->node;
}

static void json_ver(bool has, const struct shelf_version *v)
{
	if (!has)
		printf("null");
	else
		printf("{\"hlc\": %" PRIu64 ", \"node\": \"%016" PRIx64 "\"}", v->hlc, v->node);
}

/*
 * stat KEY: every replica (the R homes and any other member that holds a
 * copy, a tombstone or a damaged copy, or does not answer), one line each,
 * and the object as its newest copy describes it. Exit 0 when a replica
 * holds it (newer than any tombstone), 3 when none does, 1 when none
 * could say (damaged, unreachable).
 */
int cmd_stat(int argc, char **argv)
{
	struct dopts o;
	struct shelf *s = NULL;
	struct shelf_replica *rp = NULL;
	const struct shelf_replica *best = NULL, *tomb = NULL;
	char err[SHELF_ERR_BYTES], vt[64];
	unsigned n = 0, definite = 0;
	struct shelf_objstat ost = { 0 };
	bool large = false;
	uint64_t stored = 0;
	int ret = dparse(argc, argv, "stat", "KEY", 1, 1, &o);

	if (ret)
		return ret < 0 ? 0 : ret;
	if ((ret = open_client("stat", &o, &s)))
		return ret;
	ret = shelf_stat_replicas(s, o.slice, o.args[0], strlen(o.args[0]), &rp, &n, err,
				  sizeof(err));
	if (ret < 0) {
		fprintf(stderr, "shelf %s\n", err);
		shelf_close(&s);
		return exit_code(ret);
	}
	for (unsigned i = 0; i < n; i++) {
		const struct shelf_replica *r = &rp[i];
		bool holds = strcmp(r->state, "home") == 0 || strcmp(r->state, "hinted") == 0;

		if (holds && (!best || ver_cmp(&r->ver, &best->ver) > 0))
			best = r;
		if (strcmp(r->state, "deleted") == 0 && (!tomb || ver_cmp(&r->ver, &tomb->ver) > 0))
			tomb = r;
		definite += holds || strcmp(r->state, "deleted") == 0 ||
			    strcmp(r->state, "missing") == 0;
	}
	if (best && tomb && ver_cmp(&best->ver, &tomb->ver) <= 0)
		best = NULL; /* deleted after the newest copy was written */
	if (best) {
		int sr = shelf_stat(s, o.slice, o.args[0], strlen(o.args[0]), &ost, err, sizeof(err));

		if (sr == 0 && (ost.size != best->size || ost.crc != best->crc)) {
			/* a large object: the replicas hold its manifest */
			large = true;
			stored = best->size;
		} else if (sr == -EBADMSG) {
			fprintf(stderr, "shelf %s\n", err);
			free(rp);
			shelf_close(&s);
			return 1;
		}
	}
	if (o.json) {
		printf("{");
		cli_json_key(stdout, o.args[0], strlen(o.args[0]));
		if (best) {
			printf(", \"size\": %" PRIu64 ", \"crc32c\": \"%08x\", \"seq\": %" PRIu64
			       ", \"version\": ", large ? ost.size : best->size,
			       large ? ost.crc : best->crc, best->seq);
			json_ver(best->has_ver, &best->ver);
			printf(", \"node\": \"%s\"", best->addr);
			if (large)
				printf(", \"manifest_size\": %" PRIu64, stored);
		}
		printf(", \"replicas\": [");
		for (unsigned i = 0; i < n; i++) {
			printf("%s{\"node\": \"%s\", \"port\": %u, \"id\": \"", i ? ", " : "",
			       rp[i].addr, rp[i].port);
			for (int k = 0; k < 32; k++)
				printf("%02x", rp[i].id[k]);
			printf("\", \"home\": %s, \"state\": \"%s\", \"version\": ",
			       rp[i].home ? "true" : "false", rp[i].state);
			json_ver(rp[i].has_ver, &rp[i].ver);
			if (rp[i].why[0]) {
				printf(", \"why\": ");
				cli_json_str(stdout, rp[i].why, strlen(rp[i].why));
			}
			printf("}");
		}
		printf("]}\n");
	} else {
		printf("key      ");
		cli_key_quote(stdout, o.args[0], strlen(o.args[0]));
		putchar('\n');
		if (best) {
			ver_text(best->has_ver, &best->ver, vt);
			printf("size     %" PRIu64 "\ncrc32c   %08x\nseq      %" PRIu64
			       "\nversion  %s\nnode     %s port %u\n", large ? ost.size : best->size,
			       large ? ost.crc : best->crc, best->seq, vt, best->addr, best->port);
			if (large)
				printf("chunked  yes (a manifest of %" PRIu64 " bytes; the replicas "
				       "below hold it)\n", stored);
		}
		for (unsigned i = 0; i < n; i++) {
			char id[17];

			for (int k = 0; k < 8; k++)
				snprintf(id + 2 * k, 3, "%02x", rp[i].id[k]);
			ver_text(rp[i].has_ver, &rp[i].ver, vt);
			printf("replica  %s port %u id %s version %s %s%s%s\n", rp[i].addr, rp[i].port,
			       id, vt, rp[i].state, rp[i].why[0] ? ": " : "", rp[i].why);
		}
	}
	if (!best && definite) {
		fprintf(stderr, "shelf stat '%s': not found on any replica\n", o.args[0]);
		ret = -ENOENT;
	} else if (!best) {
		/* name what the first replica that could not say said */
		const struct shelf_replica *bad = n ? &rp[0] : NULL;

		for (unsigned i = 0; i < n; i++)
			if (strcmp(rp[i].state, "damaged") == 0) {
				bad = &rp[i];
				break;
			}
		if (bad && strcmp(bad->state, "damaged") == 0)
			fprintf(stderr, "shelf stat '%s': node %s: checksum-mismatch: the replica is "
				"damaged\n", o.args[0], bad->addr);
		else
			fprintf(stderr, "shelf stat '%s': no replica answered%s%s\n", o.args[0],
				bad ? ": " : "", bad ? bad->why : "");
		ret = -EIO;
	}
	free(rp);
	shelf_close(&s);
	return exit_code(ret);
}

struct ls_ctx {
	bool json;
	char missing[LS_MISSING_MAX][64]; /* nodes that did not answer, named at the end */
	char why[LS_MISSING_MAX][256];
	unsigned nmissing;
	uint64_t n;
	uint8_t last[1024]; /* the last key given: where the next page starts */
	size_t last_len;
};

static int ls_cb(void *arg, const void *key, size_t klen)
{
	struct ls_ctx *l = arg;

	if (l->json) {
		printf("%s{", l->n ? ", " : "");
		cli_json_key(stdout, key, klen);
		printf("}");
	} else {
		cli_key_quote(stdout, key, klen);
		putchar('\n');
	}
	l->n++;
	l->last_len = klen < sizeof(l->last) ? klen : sizeof(l->last);
	memcpy(l->last, key, l->last_len);
	return 0;
}

/* A node that did not answer: remembered once, named at the end. */
static void ls_missing(void *arg, const char *node, const char *why)
{
	struct ls_ctx *l = arg;

	for (unsigned i = 0; i < l->nmissing; i++)
		if (strcmp(l->missing[i], node) == 0)
			return;
	if (l->nmissing < LS_MISSING_MAX) {
		snprintf(l->missing[l->nmissing], sizeof(l->missing[0]), "%s", node);
		snprintf(l->why[l->nmissing++], sizeof(l->why[0]), "%s", why);
	}
}

int cmd_ls(int argc, char **argv)
{
	struct dopts o;
	struct shelf *s = NULL;
	struct ls_ctx l = { 0 };
	char err[SHELF_ERR_BYTES];
	const char *prefix;
	unsigned page;
	int ret = dparse(argc, argv, "ls", "[PREFIX]", 0, 1, &o);

	if (ret)
		return ret < 0 ? 0 : ret;
	prefix = o.nargs ? o.args[0] : "";
	if ((ret = open_client("ls", &o, &s)))
		return ret;
	l.json = o.json;
	if (l.json)
		printf("[");
	if (o.after) {
		l.last_len = strlen(o.after) < sizeof(l.last) ? strlen(o.after) : sizeof(l.last);
		memcpy(l.last, o.after, l.last_len);
	}
	/* page through the slice a page at a time, up to --limit (default: all);
	 * SHELF_LS_PAGE sets a smaller page (the tests use it) */
	page = (unsigned)strtoul(cli_env("SHELF_LS_PAGE", "0"), NULL, 10);
	if (page < 1 || page > LS_PAGE)
		page = LS_PAGE;
	for (;;) {
		uint64_t want = o.limit ? o.limit - l.n : page;
		uint64_t before = l.n;

		if (want == 0)
			break;
		ret = shelf_list_partial(s, o.slice, prefix, strlen(prefix), l.last_len ? l.last : NULL,
					 l.last_len, want < page ? (unsigned)want : page, ls_cb, &l,
					 ls_missing, &l, err, sizeof(err));
		if (ret < 0 || l.n - before < (want < page ? want : page))
			break;
	}
	if (l.json)
		printf("]\n");
	if (ret < 0)
		fprintf(stderr, "shelf %s\n", err);
	if (ret >= 0 && l.nmissing) {
		/* every key has R copies on R nodes: fewer than R silent nodes
		 * leave each key a replica that answered */
		struct shelf_map_info info = { .replicas = 1 };
		struct shelf_member *mem = NULL;
		bool whole;

		if (shelf_map(s, o.slice, &info, &mem, err, sizeof(err)) < 0)
			info.replicas = 1;
		free(mem);
		whole = l.nmissing < (info.replicas ? info.replicas : 1);
		for (unsigned i = 0; i < l.nmissing; i++)
			fprintf(stderr, "shelf ls: node %s did not answer; its keys are %s (%s)\n",
				l.missing[i], whole ? "listed from their other replicas" : "not listed",
				l.why[i]);
		if (!whole) {
			fprintf(stderr, "shelf ls: partial answer: %u node%s did not answer\n",
				l.nmissing, l.nmissing == 1 ? "" : "s");
			shelf_close(&s);
			return EXIT_PARTIAL;
		}
	}
	shelf_close(&s);
	return exit_code(ret < 0 ? ret : 0);
}
