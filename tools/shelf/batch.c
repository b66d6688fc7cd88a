/*
 * `shelf get --batch LISTFILE (--out DIR | --tar FILE)`: many objects in
 * one shelf_get_batch() call.
 *
 * LISTFILE holds one key per line (a trailing CR is dropped). Empty lines
 * are skipped; a key listed twice is fetched once (its first line counts,
 * and stderr says how many were); a line whose key is longer than 1024
 * bytes, holds a NUL byte, begins with the reserved prefix fe x 8, or is no
 * safe relative path (absolute, a '..' or '.' or empty component, a
 * component over 255 bytes) is refused before anything is fetched, naming
 * the line. The same path rules hold for --tar, so an archive unpacks
 * where --out would have written.
 *
 * --out DIR: each object into DIR/KEY ('/' in keys makes subdirectories),
 * written to a temporary name in the same directory (".KEY.shelf-tmp.PID")
 * and renamed when whole; a failed write removes the temporary file.
 * --tar FILE: one POSIX pax archive (ustar headers; a key longer than 100
 * bytes gets a pax extended header with its path), in the order of
 * LISTFILE; written to FILE.shelf-tmp.PID and renamed when complete
 * (FILE "-": stdout).
 *
 * A missing key is named on stderr and the others are fetched: exit 3 when
 * some were missing, 1 when some other failure happened, 0 when all were
 * there. --fail-missing stops at the first missing (or failed) key.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "overlay.h"
#include "shelf.h"
#include "batch.h"
#include "data.h"
#include "text.h"

#define KEY_MAX_BYTES CLI_KEY_MAX_BYTES
#define BAD_LINES_SHOWN 10
#define TAR_BLOCK 512
/* GETs in flight across the nodes: about 10 per node of a 24-node 1U, so
 * that each node reads several at once (1.5x the objects/s of 64) */
#define BATCH_INFLIGHT_DEFAULT 256

struct bopts {
	const char *slice, *client, *broker, *chassis, *list, *out, *tar;
	const char *nodes[SHELF_NODES_MAX];
	int nnodes, timeout_ms, connect_timeout_ms;
	unsigned inflight;
	bool fail_missing;
};

struct blist {
	char **keys;
	size_t n, cap;
	size_t dups;
};

struct brun {
	const struct bopts *o;
	char **keys;
	FILE *tar;
	uint64_t bytes, objects, missing, failed;
	int werr;              /* a local write failed: stop */
	char wwhy[PATH_MAX + 256];
};

static int busage(int code)
{
	fprintf(code ? stderr : stdout,
		"usage: shelf get --batch LISTFILE (--out DIR | --tar FILE|-) [--fail-missing]\n"
		"                 [--inflight N] [--slice NAME] [--client DIR] [--broker ENDPOINT]\n"
		"                 [--timeout MS] [--connect-timeout MS] [--node ADDR] [--chassis C]\n"
		"  LISTFILE           one key per line; empty lines skipped, duplicates fetched once\n"
		"  --out DIR          each object to DIR/KEY (written to a temporary name, renamed)\n"
		"  --tar FILE         one POSIX (pax) tar archive, in LISTFILE's order\n"
		"  --fail-missing     stop at the first missing key (else: name each, exit 3)\n"
		"  --inflight N       requests in flight across the nodes (default 256)\n");
	return code;
}

static int num_arg(const char *opt, const char *v, unsigned long max, unsigned long *out)
{
	char *end;

	errno = 0;
	*out = strtoul(v, &end, 10);
	if (errno || end == v || *end || *out < 1 || *out > max) {
		fprintf(stderr, "shelf get: %s '%s' is not 1..%lu\n", opt, v, max);
		return 2;
	}
	return 0;
}

static int bparse(int argc, char **argv, struct bopts *o)
{
	static const struct option lo[] = {
		{ "batch", 1, NULL, 'B' }, { "out", 1, NULL, 'o' }, { "tar", 1, NULL, 'T' },
		{ "fail-missing", 0, NULL, 'F' }, { "inflight", 1, NULL, 'i' },
		{ "slice", 1, NULL, 's' }, { "client", 1, NULL, 'c' }, { "broker", 1, NULL, 'b' },
		{ "timeout", 1, NULL, 't' }, { "connect-timeout", 1, NULL, 'C' },
		{ "node", 1, NULL, 'n' }, { "chassis", 1, NULL, 'H' }, { "help", 0, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	unsigned long v;
	int c;

	memset(o, 0, sizeof(*o));
	o->inflight = BATCH_INFLIGHT_DEFAULT;
	o->slice = cli_env("SHELF_SLICE", "default");
	o->client = cli_env("SHELF_CLIENT", NULL);
	o->broker = cli_env("SHELF_BROKER", CLI_BROKER_DEFAULT);
	o->chassis = cli_env("SHELF_CHASSIS", NULL);
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'B': o->list = optarg; break;
		case 'o': o->out = optarg; break;
		case 'T': o->tar = optarg; break;
		case 'F': o->fail_missing = true; break;
		case 'i':
			if (num_arg("--inflight", optarg, SHELF_MAX_INFLIGHT_MAX, &v))
				return 2;
			o->inflight = (unsigned)v;
			break;
		case 's': o->slice = optarg; break;
		case 'c': o->client = optarg; break;
		case 'b': o->broker = optarg; break;
		case 't':
			if (num_arg("--timeout", optarg, 3600000, &v))
				return 2;
			o->timeout_ms = (int)v;
			break;
		case 'C':
			if (num_arg("--connect-timeout", optarg, 3600000, &v))
				return 2;
			o->connect_timeout_ms = (int)v;
			break;
		case 'n':
			if (o->nnodes == SHELF_NODES_MAX) {
				fprintf(stderr, "shelf get: at most %d --node\n", SHELF_NODES_MAX);
				return 2;
			}
			o->nodes[o->nnodes++] = optarg;
			break;
		case 'H': o->chassis = optarg; break;
		case 'h': return busage(0) - 1;
		default: return busage(2);
		}
	}
	if (optind < argc) {
		fprintf(stderr, "shelf get: --batch takes no KEY ('%s')\n", argv[optind]);
		return busage(2);
	}
	if (!o->list || !!o->out == !!o->tar) {
		fprintf(stderr, "shelf get: --batch LISTFILE needs one of --out DIR and --tar FILE\n");
		return busage(2);
	}
	if (!o->client) {
		fprintf(stderr, "shelf get: no client identity: use --client DIR or SHELF_CLIENT "
			"(made by `shelf-broker client`)\n");
		return 2;
	}
	return 0;
}

/* ---- LISTFILE ---- */

/* A key and its place in LISTFILE. */
struct dent {
	const char *key;
	size_t line;
};

static int dent_cmp(const void *a, const void *b)
{
	const struct dent *x = a, *y = b;
	int c = strcmp(x->key, y->key);

	return c ? c : (x->line > y->line) - (x->line < y->line);
}

/* Read LISTFILE: the keys in order, each once. Exit code: 0, 1 (cannot
 * read), 2 (bad lines; each named). */
static int list_read(const char *path, struct blist *l)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	char *line = NULL, why[128];
	size_t cap = 0, lineno = 0, bad = 0, k = 0;
	ssize_t got;
	int ret = 0;

	if (!f) {
		fprintf(stderr, "shelf get: cannot read LISTFILE '%s': %s\n", path, strerror(errno));
		return 1;
	}
	while ((got = getline(&line, &cap, f)) >= 0) {
		size_t len = (size_t)got;
		const char *no;

		lineno++;
		if (len && line[len - 1] == '\n')
			line[--len] = 0;
		if (len && line[len - 1] == '\r')
			line[--len] = 0;
		if (len == 0)
			continue;
		no = cli_path_refusal(line, len, why, sizeof(why));
		if (no) {
			if (bad++ < BAD_LINES_SHOWN)
				fprintf(stderr, "shelf get: %s:%zu: %s\n", path, lineno, no);
			continue;
		}
		if (l->n == l->cap) {
			size_t nc = l->cap ? l->cap * 2 : 1024;
			char **nk = realloc(l->keys, nc * sizeof(*nk));

			if (!nk) {
				ret = 1;
				goto out;
			}
			l->keys = nk;
			l->cap = nc;
		}
		if (!(l->keys[l->n] = strdup(line))) {
			ret = 1;
			goto out;
		}
		l->n++;
	}
	if (ferror(f)) {
		fprintf(stderr, "shelf get: cannot read LISTFILE '%s': %s\n", path, strerror(errno));
		ret = 1;
		goto out;
	}
	if (bad) {
		if (bad > BAD_LINES_SHOWN)
			fprintf(stderr, "shelf get: %s: %zu more bad lines\n", path, bad - BAD_LINES_SHOWN);
		fprintf(stderr, "shelf get: %s: %zu bad lines, nothing fetched\n", path, bad);
		ret = 2;
		goto out;
	}
	/* duplicates: the first line of each key stays (sorted by key, then
	 * by line; every entry equal to the one before goes) */
	if (l->n) {
		struct dent *d = malloc(l->n * sizeof(*d));
		bool *drop = calloc(l->n, sizeof(*drop));

		if (!d || !drop) {
			free(d);
			free(drop);
			ret = 1;
			goto out;
		}
		for (size_t i = 0; i < l->n; i++)
			d[i] = (struct dent){ l->keys[i], i };
		qsort(d, l->n, sizeof(*d), dent_cmp);
		for (size_t i = 1; i < l->n; i++)
			if (strcmp(d[i].key, d[i - 1].key) == 0) {
				drop[d[i].line] = true;
				l->dups++;
			}
		for (size_t i = 0; i < l->n; i++) {
			if (drop[i])
				free(l->keys[i]);
			else
				l->keys[k++] = l->keys[i];
		}
		l->n = k;
		free(d);
		free(drop);
	}
	if (l->dups)
		fprintf(stderr, "shelf get: %s: %zu duplicate keys, each fetched once\n", path, l->dups);
out:
	if (ret == 1 && !ferror(f))
		fprintf(stderr, "shelf get: out of memory reading '%s'\n", path);
	free(line);
	if (f != stdin)
		fclose(f);
	return ret;
}

/* ---- --out DIR ---- */

/* mkdir -p of the directories of path (relative to dirfd's tree). */
static int mkdirs(const char *path)
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
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	return 0;
}

static int out_write(struct brun *r, const char *key, const void *data, size_t len)
{
	char path[PATH_MAX], tmp[PATH_MAX + 64];
	const char *slash;
	int fd = -1, ret;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", r->o->out, key) >= sizeof(path))
		return -ENAMETOOLONG;
	slash = strrchr(path, '/');
	snprintf(tmp, sizeof(tmp), "%.*s/.%s.shelf-tmp.%ld", (int)(slash - path), path, slash + 1,
		 (long)getpid());
	ret = mkdirs(path);
	if (ret < 0)
		goto out;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	ret = ovl_file_write_full(fd, data, len);
	if (ret == 0 && close(fd) < 0)
		ret = -errno;
	else if (ret < 0)
		close(fd);
	fd = -1;
	if (ret == 0 && rename(tmp, path) < 0)
		ret = -errno;
	if (ret < 0)
		unlink(tmp);
out:
	if (ret < 0)
		snprintf(r->wwhy, sizeof(r->wwhy), "cannot write '%s': %s", path, strerror(-ret));
	return ret;
}

/* ---- --tar FILE: POSIX pax (ustar headers) ---- */

static void octal(char *field, size_t width, uint64_t v)
{
	snprintf(field, width, "%0*llo", (int)width - 1, (unsigned long long)v);
}

static void tar_header(uint8_t h[TAR_BLOCK], const char *name, size_t nlen, char type,
		       uint64_t size, uint64_t mtime)
{
	unsigned sum = 0;

	memset(h, 0, TAR_BLOCK);
	memcpy(h, name, nlen < 100 ? nlen : 100);
	octal((char *)h + 100, 8, 0644);
	octal((char *)h + 108, 8, 0);
	octal((char *)h + 116, 8, 0);
	octal((char *)h + 124, 12, size);
	octal((char *)h + 136, 12, mtime);
	memset(h + 148, ' ', 8);
	h[156] = (uint8_t)type;
	memcpy(h + 257, "ustar", 6);
	memcpy(h + 263, "00", 2);
	for (int i = 0; i < TAR_BLOCK; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06o", sum);
	h[155] = ' ';
}

static int tar_put(FILE *f, const void *data, size_t len)
{
	static const uint8_t zero[TAR_BLOCK];
	size_t pad = (TAR_BLOCK - len % TAR_BLOCK) % TAR_BLOCK;

	if ((len && fwrite(data, 1, len, f) != len) || (pad && fwrite(zero, 1, pad, f) != pad))
		return -(errno ? errno : EIO);
	return 0;
}

static int tar_write(struct brun *r, const char *key, const void *data, size_t len)
{
	uint8_t h[TAR_BLOCK];
	size_t klen = strlen(key);
	uint64_t now = (uint64_t)time(NULL);
	int ret = 0;

	errno = 0;
	if (klen > 100) {
		/* "LEN path=KEY\n", LEN counting its own digits */
		char rec[KEY_MAX_BYTES + 32];
		size_t body = strlen(" path=\n") + klen, n = body + 1;

		while ((size_t)snprintf(NULL, 0, "%zu", n) + body != n)
			n++;
		snprintf(rec, sizeof(rec), "%zu path=%s\n", n, key);
		tar_header(h, "PaxHeader", strlen("PaxHeader"), 'x', n, now);
		ret = tar_put(r->tar, h, TAR_BLOCK);
		if (ret == 0)
			ret = tar_put(r->tar, rec, n);
	}
	if (ret == 0) {
		tar_header(h, key, klen, '0', len, now);
		ret = tar_put(r->tar, h, TAR_BLOCK);
	}
	if (ret == 0)
		ret = tar_put(r->tar, data, len);
	if (ret < 0)
		snprintf(r->wwhy, sizeof(r->wwhy), "cannot write '%s': %s", r->o->tar, strerror(-ret));
	return ret;
}

/* ---- the batch ---- */

static int item_cb(void *arg, size_t index, int res, const void *data, size_t len,
		   const char *why)
{
	struct brun *r = arg;
	const char *key = r->keys[index];

	if (res == -ENOENT) {
		r->missing++;
		fprintf(stderr, "shelf get: '%s': not found\n", key);
		return 0;
	}
	if (res < 0) {
		r->failed++;
		fprintf(stderr, "shelf %s\n", why);
		return 0;
	}
	r->werr = r->o->out ? out_write(r, key, data, len) : tar_write(r, key, data, len);
	if (r->werr < 0)
		return 1; /* stop: the destination fails */
	r->objects++;
	r->bytes += len;
	return 0;
}

/* The destination is usable before anything is fetched. */
static int dest_check(const struct bopts *o, char *tartmp, size_t tlen, FILE **tar)
{
	char probe[PATH_MAX + 64];
	struct stat st;
	int fd;

	if (o->tar) {
		if (strcmp(o->tar, "-") == 0) {
			*tar = stdout;
			return 0;
		}
		/* the archive replaces FILE by a rename: never a device, a pipe
		 * or a directory (/dev/null would be replaced by a file) */
		if (stat(o->tar, &st) == 0 && !S_ISREG(st.st_mode)) {
			fprintf(stderr, "shelf get: '%s' is not a regular file (use --tar - for "
				"standard output)\n", o->tar);
			return 1;
		}
		snprintf(tartmp, tlen, "%s.shelf-tmp.%ld", o->tar, (long)getpid());
		*tar = fopen(tartmp, "wb");
		if (!*tar) {
			fprintf(stderr, "shelf get: cannot write '%s': %s\n", tartmp, strerror(errno));
			return 1;
		}
		return 0;
	}
	if (mkdir(o->out, 0755) < 0 && errno != EEXIST) {
		fprintf(stderr, "shelf get: cannot create directory '%s': %s\n", o->out,
			strerror(errno));
		return 1;
	}
	snprintf(probe, sizeof(probe), "%s/.shelf-probe.%ld", o->out, (long)getpid());
	fd = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		fprintf(stderr, "shelf get: cannot write to directory '%s': %s\n", o->out,
			strerror(errno));
		return 1;
	}
	close(fd);
	unlink(probe);
	return 0;
}

bool cli_get_is_batch(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			return false;
		if (strcmp(argv[i], "--batch") == 0 || strncmp(argv[i], "--batch=", 8) == 0)
			return true;
	}
	return false;
}

int cmd_get_batch(int argc, char **argv)
{
	struct bopts o;
	struct blist l = { 0 };
	struct brun r = { 0 };
	struct shelf_batch_item *items = NULL;
	struct shelf *s = NULL;
	char err[SHELF_ERR_BYTES], tartmp[PATH_MAX + 64] = "";
	struct timespec t0, t1;
	int ret = bparse(argc, argv, &o), rc;

	if (ret)
		return ret < 0 ? 0 : ret;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	ret = list_read(o.list, &l);
	if (ret)
		goto out;
	ret = dest_check(&o, tartmp, sizeof(tartmp), &r.tar);
	if (ret)
		goto out;
	ret = shelf_cli_open("get", o.client, strcmp(o.broker, "none") == 0 ? "none" : o.broker,
			     o.nodes, o.nnodes, o.timeout_ms, &s);
	if (ret)
		goto out;
	if (o.connect_timeout_ms)
		shelf_set_connect_timeout(s, o.connect_timeout_ms);
	if (o.chassis && shelf_set_chassis(s, o.chassis, err, sizeof(err)) < 0) {
		fprintf(stderr, "shelf get: %s\n", err);
		ret = 2;
		goto out;
	}
	shelf_set_max_inflight(s, o.inflight);
	items = calloc(l.n ? l.n : 1, sizeof(*items));
	if (!items) {
		ret = 1;
		goto out;
	}
	for (size_t i = 0; i < l.n; i++)
		items[i] = (struct shelf_batch_item){ l.keys[i], strlen(l.keys[i]) };
	r.o = &o;
	r.keys = l.keys;
	/* a tar archive keeps LISTFILE's order; files are written as they come */
	rc = shelf_get_batch(s, o.slice, items, l.n,
			     (o.out ? SHELF_BATCH_UNORDERED : 0) |
				     (o.fail_missing ? SHELF_BATCH_FAIL_MISSING : 0),
			     item_cb, &r, err, sizeof(err));
	if (r.werr < 0) {
		fprintf(stderr, "shelf get: %s\n", r.wwhy);
		ret = 1;
	} else if (rc < 0 && rc != -ENOENT) {
		if (!o.fail_missing || rc == -ECANCELED || !r.failed)
			fprintf(stderr, "shelf get: %s\n", err);
		ret = 1;
	} else if (rc == -ENOENT) {
		ret = 3;
	} else {
		ret = r.failed ? 1 : r.missing ? 3 : 0;
	}
	if ((ret == 0 || (ret == 3 && rc >= 0)) && r.tar && r.tar != stdout) {
		/* two zero blocks end the archive; then it takes its name */
		static const uint8_t end[2 * TAR_BLOCK];

		errno = 0;
		if (fwrite(end, 1, sizeof(end), r.tar) != sizeof(end) || fflush(r.tar) != 0 ||
		    fsync(fileno(r.tar)) < 0 || fclose(r.tar) != 0 || rename(tartmp, o.tar) < 0) {
			fprintf(stderr, "shelf get: cannot write '%s': %s\n", o.tar,
				strerror(errno ? errno : EIO));
			unlink(tartmp);
			ret = 1;
		}
		r.tar = NULL;
	} else if (r.tar == stdout && ret != 1) {
		static const uint8_t end[2 * TAR_BLOCK];

		if (fwrite(end, 1, sizeof(end), stdout) != sizeof(end) || fflush(stdout) != 0)
			ret = 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	fprintf(stderr, "shelf get: %llu objects, %llu bytes in %.2f s%s%llu missing%s\n",
		(unsigned long long)r.objects, (unsigned long long)r.bytes,
		(double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
		", ", (unsigned long long)r.missing,
		o.tar && strcmp(o.tar, "-") && r.tar ? " (archive not written)" : "");
out:
	if (r.tar && r.tar != stdout) {
		fclose(r.tar);
		unlink(tartmp);
	}
	shelf_close(&s);
	free(items);
	for (size_t i = 0; i < l.n; i++)
		free(l.keys[i]);
	free(l.keys);
	return ret;
}
