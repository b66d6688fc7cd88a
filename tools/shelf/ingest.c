/*
 * `shelf put -r DIR PREFIX`: a parallel recursive ingest. Every regular
 * file under DIR is stored at key PREFIX + its path relative to DIR ('/'
 * between components; PREFIX is used as given, so "ds/" gives "ds/a/b").
 *
 * Steps: walk DIR (symbolic links are not followed: they, and sockets,
 * devices and FIFOs, are skipped with a note; a directory or file that
 * cannot be read is named, counted, and makes the exit status 1), STAT
 * every key (shelf_stat_async, many in flight) and skip each file whose
 * object has the same size and crc32c (a rerun resumes), then store the
 * others: files up to the slice's chunk size read whole (at most --held-mib
 * MiB held at once) and sent with shelf_put_async, many in flight across
 * the nodes; larger files streamed with shelf_put_fd, --workers at a time,
 * each on a client of its own. A progress bar on a terminal (files, bytes,
 * rate, ETA), a summary at the end (stderr; --json: stdout).
 */
#include <dirent.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "overlay.h"
#include "json.h"
#include "text.h"
#include "xfer.h"

#define STAT_AHEAD 4
#define MANIFEST_MAGIC "\x89shelf-manifest\n" /* a file that begins so is streamed (escape rule) */
#define MANIFEST_MAGIC_BYTES 16

enum istate { I_FOUND, I_NEW, I_SKIPPED, I_DONE, I_FAILED };

struct ingest;

struct ifile {
	struct ingest *in;
	char *path;        /* DIR/REL */
	char *key;         /* PREFIX + REL */
	size_t klen;
	uint64_t size;
	enum istate state;
	bool stored;       /* an object with this key is there: compare the crc */
	uint64_t ssize;
	uint32_t scrc;
	uint8_t *buf;      /* a small file's bytes while its PUT is in flight */
};

struct ingest {
	const struct xopts *o;
	struct shelf *s;
	struct ifile *f;
	size_t n, cap;
	uint32_t chunk_size;
	size_t stat_next, stat_done;
	size_t *small, nsmall, small_next;
	size_t *large, nlarge, large_next;
	uint64_t held;
	pthread_mutex_t mu;
	/* counters (mu) */
	uint64_t stored, stored_bytes, skipped, skipped_bytes, failed, unreadable, special;
	uint64_t moved_bytes, todo_bytes, total_bytes;
	int fatal;
};

static void ifail(struct ingest *in, struct ifile *f, bool unreadable, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void ifail(struct ingest *in, struct ifile *f, bool unreadable, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&in->mu);
	if (f)
		f->state = I_FAILED;
	if (unreadable)
		in->unreadable++;
	else
		in->failed++;
	fputs("shelf put: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	pthread_mutex_unlock(&in->mu);
}

/* ---- the walk ---- */

static int add_file(struct ingest *in, const char *path, const char *rel, uint64_t size)
{
	struct ifile *f;
	size_t plen = strlen(in->o->args[1]), rlen = strlen(rel);

	if (plen + rlen > CLI_KEY_MAX_BYTES) {
		ifail(in, NULL, false, "'%s': its key would be %zu bytes long, at most %d", path,
		      plen + rlen, CLI_KEY_MAX_BYTES);
		return 0;
	}
	if (in->n == in->cap) {
		size_t nc = in->cap ? in->cap * 2 : 1024;
		struct ifile *nf = realloc(in->f, nc * sizeof(*nf));

		if (!nf)
			return -ENOMEM;
		in->f = nf;
		in->cap = nc;
	}
	f = &in->f[in->n];
	memset(f, 0, sizeof(*f));
	f->in = in;
	f->size = size;
	f->path = strdup(path);
	f->klen = plen + rlen;
	f->key = malloc(f->klen + 1);
	if (!f->path || !f->key) {
		free(f->path);
		free(f->key);
		return -ENOMEM;
	}
	memcpy(f->key, in->o->args[1], plen);
	memcpy(f->key + plen, rel, rlen + 1);
	in->n++;
	in->total_bytes += size;
	return 0;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Walk dir (path), rel its path under the root ("" at the root). */
static int walk(struct ingest *in, const char *path, const char *rel)
{
	DIR *d = opendir(path);
	struct dirent *e;
	char **names = NULL;
	size_t nn = 0, cap = 0;
	int ret = 0;

	if (!d) {
		ifail(in, NULL, true, "cannot read directory '%s': %s", path, strerror(errno));
		return 0;
	}
	while ((e = readdir(d))) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (nn == cap) {
			char **nw = realloc(names, (cap ? cap * 2 : 64) * sizeof(*nw));

			if (!nw) {
				ret = -ENOMEM;
				goto out;
			}
			names = nw;
			cap = cap ? cap * 2 : 64;
		}
		if (!(names[nn] = strdup(e->d_name))) {
			ret = -ENOMEM;
			goto out;
		}
		nn++;
	}
	qsort(names, nn, sizeof(*names), name_cmp);
	for (size_t i = 0; i < nn && ret == 0; i++) {
		char cpath[PATH_MAX], crel[PATH_MAX];
		struct stat st;

		if ((size_t)snprintf(cpath, sizeof(cpath), "%s/%s", path, names[i]) >= sizeof(cpath) ||
		    (size_t)snprintf(crel, sizeof(crel), "%s%s%s", rel, *rel ? "/" : "",
				     names[i]) >= sizeof(crel)) {
			ifail(in, NULL, true, "'%s/%s': path too long", path, names[i]);
			continue;
		}
		if (fstatat(dirfd(d), names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
			ifail(in, NULL, true, "cannot read '%s': %s", cpath, strerror(errno));
			continue;
		}
		if (S_ISDIR(st.st_mode)) {
			ret = walk(in, cpath, crel);
		} else if (S_ISREG(st.st_mode)) {
			ret = add_file(in, cpath, crel, (uint64_t)st.st_size);
		} else {
			fprintf(stderr, "shelf put: skipping '%s': %s\n", cpath,
				S_ISLNK(st.st_mode) ? "a symbolic link (not followed)"
						    : "not a regular file or a directory");
			in->special++;
		}
	}
out:
	for (size_t i = 0; i < nn; i++)
		free(names[i]);
	free(names);
	closedir(d);
	return ret;
}

/* ---- stat ---- */

static void stat_next(struct ingest *in);

static void stat_done(void *arg, int res, const struct shelf_op *op)
{
	struct ifile *f = arg;
	struct ingest *in = f->in;
	const struct shelf_objstat *os = shelf_op_stat(op);

	in->stat_done++;
	if (res == 0 && os) {
		f->stored = true;
		f->ssize = os->size;
		f->scrc = os->crc;
	} else if (res != -ENOENT) {
		ifail(in, f, false, "%s", shelf_op_error(op));
	}
	stat_next(in);
}

static void stat_next(struct ingest *in)
{
	size_t ahead = (size_t)in->o->inflight * STAT_AHEAD;

	while (in->stat_next < in->n && in->stat_next - in->stat_done < ahead) {
		struct ifile *f = &in->f[in->stat_next++];

		if (shelf_stat_async(in->s, in->o->slice, f->key, f->klen, stat_done, f) < 0) {
			in->stat_done++;
			ifail(in, f, false, "'%s': the key is refused (the reserved prefix fe x 8?)",
			      f->key);
		}
	}
}

/* ---- small files: read whole, shelf_put_async ---- */

static void small_next(struct ingest *in);

static void small_done(void *arg, int res, const struct shelf_op *op)
{
	struct ifile *f = arg;
	struct ingest *in = f->in;

	free(f->buf);
	f->buf = NULL;
	in->held -= f->size;
	if (res < 0) {
		ifail(in, f, false, "%s", shelf_op_error(op));
	} else {
		pthread_mutex_lock(&in->mu);
		f->state = I_DONE;
		in->stored++;
		in->stored_bytes += f->size;
		in->moved_bytes += f->size;
		pthread_mutex_unlock(&in->mu);
	}
	small_next(in);
}

/* Read the whole of a small file into a malloc'd buffer: 0, or -errno
 * (-EAGAIN: its size changed since the walk). */
static int read_whole(const struct ifile *f, uint8_t **out)
{
	uint8_t *buf = malloc(f->size ? f->size : 1);
	uint64_t got = 0;
	struct stat st;
	int fd = open(f->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW), ret = 0;

	if (fd < 0 || !buf) {
		ret = fd < 0 ? -errno : -ENOMEM;
		goto out;
	}
	while (got < f->size) {
		ssize_t r = read(fd, buf + got, f->size - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			ret = r < 0 ? -errno : -EAGAIN;
			goto out;
		}
		got += (uint64_t)r;
	}
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != f->size)
		ret = -EAGAIN;
out:
	if (fd >= 0)
		close(fd);
	if (ret < 0)
		free(buf);
	else
		*out = buf;
	return ret;
}

static void small_next(struct ingest *in)
{
	while (in->small_next < in->nsmall && !xfer_interrupted) {
		struct ifile *f = &in->f[in->small[in->small_next]];
		int ret;

		/* bounded memory: at least one file, else at most held_bytes */
		if (in->held && in->held + f->size > in->o->held_bytes)
			return;
		in->small_next++;
		ret = read_whole(f, &f->buf);
		if (ret < 0) {
			ifail(in, f, ret != -EAGAIN, "cannot read '%s': %s", f->path,
			      ret == -EAGAIN ? "it changed while it was read" : strerror(-ret));
			continue;
		}
		in->held += f->size;
		if (shelf_put_async(in->s, in->o->slice, f->key, f->klen, f->buf, f->size, small_done,
				    f) < 0) {
			in->held -= f->size;
			free(f->buf);
			f->buf = NULL;
			ifail(in, f, false, "'%s': the key is refused", f->key);
		}
	}
}

/* ---- large files: shelf_put_fd, one client per worker ---- */

struct worker {
	struct ingest *in;
	pthread_t th;
	bool started;
	uint64_t moved;     /* the current file's bytes sent */
};

static void put_progress(void *arg, uint64_t done, uint64_t total)
{
	struct worker *w = arg;

	(void)total;
	pthread_mutex_lock(&w->in->mu);
	if (done > w->moved) {
		w->in->moved_bytes += done - w->moved;
		w->moved = done;
	}
	pthread_mutex_unlock(&w->in->mu);
}

static void large_one(struct worker *w, struct shelf *s, struct ifile *f)
{
	struct ingest *in = w->in;
	char err[SHELF_ERR_BYTES];
	struct stat st;
	int fd = open(f->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW), ret;

	if (fd < 0) {
		ifail(in, f, true, "cannot read '%s': %s", f->path, strerror(errno));
		return;
	}
	w->moved = 0;
	ret = shelf_put_fd(s, in->o->slice, f->key, f->klen, fd, err, sizeof(err));
	if (ret == 0 && (fstat(fd, &st) < 0 || (uint64_t)st.st_size != f->size)) {
		snprintf(err, sizeof(err), "put '%s': '%s' changed while it was read", f->key, f->path);
		ret = -EAGAIN;
	}
	close(fd);
	pthread_mutex_lock(&in->mu);
	in->moved_bytes -= w->moved;
	if (ret == 0) {
		f->state = I_DONE;
		in->stored++;
		in->stored_bytes += f->size;
		in->moved_bytes += f->size;
	}
	pthread_mutex_unlock(&in->mu);
	if (ret < 0)
		ifail(in, f, false, "%s", err);
}

static void *large_worker(void *arg)
{
	struct worker *w = arg;
	struct ingest *in = w->in;
	struct shelf *s = NULL;

	if (xfer_open("put", in->o, &s) != 0) {
		pthread_mutex_lock(&in->mu);
		in->fatal = 1;
		pthread_mutex_unlock(&in->mu);
		return NULL;
	}
	shelf_set_progress(s, put_progress, w);
	for (;;) {
		struct ifile *f = NULL;

		pthread_mutex_lock(&in->mu);
		if (!in->fatal && !xfer_interrupted && in->large_next < in->nlarge)
			f = &in->f[in->large[in->large_next++]];
		pthread_mutex_unlock(&in->mu);
		if (!f)
			break;
		large_one(w, s, f);
	}
	shelf_close(&s);
	return NULL;
}

/* ---- the command ---- */

bool cli_put_is_recursive(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			return false;
		if (strcmp(argv[i], "-r") == 0 || strcmp(argv[i], "--recursive") == 0)
			return true;
	}
	return false;
}

/* Whether the file begins with the manifest magic (then it is streamed,
 * which stores it as a manifest as the escape rule asks). */
static bool begins_with_magic(const struct ifile *f)
{
	char head[MANIFEST_MAGIC_BYTES];
	int fd;
	bool yes = false;

	if (f->size < MANIFEST_MAGIC_BYTES)
		return false;
	fd = open(f->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return false;
	yes = read(fd, head, sizeof(head)) == (ssize_t)sizeof(head) &&
	      memcmp(head, MANIFEST_MAGIC, MANIFEST_MAGIC_BYTES) == 0;
	close(fd);
	return yes;
}

static void draw(struct ingest *in, struct xbar *bar, bool last)
{
	uint64_t moved, done;

	pthread_mutex_lock(&in->mu);
	moved = in->moved_bytes;
	done = in->stored;
	pthread_mutex_unlock(&in->mu);
	xbar_draw(bar, done, in->nsmall + in->nlarge, moved, in->todo_bytes, last);
}

int cmd_put_recursive(int argc, char **argv)
{
	struct xopts o;
	struct ingest in;
	struct xbar bar;
	struct shelf_map_info mi;
	struct shelf_member *mem = NULL;
	struct worker *wk = NULL;
	unsigned nw = 0;
	char err[SHELF_ERR_BYTES];
	struct stat st;
	double secs;
	int ret = xfer_parse(argc, argv, "put -r", "DIR PREFIX",
			     "  stores every regular file under DIR at PREFIX + its path under DIR\n",
			     &o);

	if (ret)
		return ret < 0 ? 0 : ret;
	memset(&in, 0, sizeof(in));
	pthread_mutex_init(&in.mu, NULL);
	in.o = &o;
	xbar_start(&bar, "put");
	xfer_signals();
	/* st is read only when stat() filled it */
	if (stat(o.args[0], &st) < 0) {
		fprintf(stderr, "shelf put: -r: not a directory: '%s': %s\n", o.args[0],
			strerror(errno));
		ret = 2;
		goto out;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "shelf put: -r: not a directory: '%s'\n", o.args[0]);
		ret = 2;
		goto out;
	}
	ret = 1;
	if (walk(&in, o.args[0], "") < 0) {
		fprintf(stderr, "shelf put: out of memory walking '%s'\n", o.args[0]);
		goto out;
	}
	ret = xfer_open("put", &o, &in.s);
	if (ret)
		goto out;
	ret = 1;
	if (shelf_map(in.s, o.slice, &mi, &mem, err, sizeof(err)) < 0) {
		fprintf(stderr, "shelf put: %s\n", err);
		goto out;
	}
	in.chunk_size = mi.chunk_size ? mi.chunk_size : SHELF_CHUNK_SIZE_DEFAULT;
	/* what is stored already */
	stat_next(&in);
	while (shelf_pending(in.s) && !xfer_interrupted) {
		shelf_run(in.s, 100);
		xbar_draw(&bar, 0, in.n, 0, 0, false);
	}
	/* a manifest's stat (asynchronous STATs give the stored manifest): the
	 * object's own size and crc, blocking */
	for (size_t i = 0; i < in.n && !xfer_interrupted; i++) {
		struct ifile *f = &in.f[i];
		struct shelf_objstat os;

		if (!f->stored || !xfer_maybe_manifest(f->ssize))
			continue;
		if (shelf_stat(in.s, o.slice, f->key, f->klen, &os, err, sizeof(err)) == 0) {
			f->ssize = os.size;
			f->scrc = os.crc;
		}
	}
	in.small = calloc(in.n + 1, sizeof(*in.small));
	in.large = calloc(in.n + 1, sizeof(*in.large));
	if (!in.small || !in.large)
		goto out;
	for (size_t i = 0; i < in.n && !xfer_interrupted; i++) {
		struct ifile *f = &in.f[i];
		uint64_t size;
		uint32_t crc;

		if (f->state == I_FAILED)
			continue;
		if (f->stored && f->ssize == f->size) {
			int r = xfer_file_crc(f->path, f->size, &size, &crc);

			if (r == 0 && crc == f->scrc) {
				f->state = I_SKIPPED;
				in.skipped++;
				in.skipped_bytes += size;
				continue;
			}
			if (r < 0 && r != -EAGAIN) {
				ifail(&in, f, true, "cannot read '%s': %s", f->path, strerror(-r));
				continue;
			}
		}
		f->state = I_NEW;
		in.todo_bytes += f->size;
		if (f->size > in.chunk_size || begins_with_magic(f))
			in.large[in.nlarge++] = i;
		else
			in.small[in.nsmall++] = i;
	}
	if (in.nlarge && !xfer_interrupted) {
		nw = o.workers < in.nlarge ? o.workers : (unsigned)in.nlarge;
		wk = calloc(nw, sizeof(*wk));
		if (!wk)
			goto out;
		for (unsigned i = 0; i < nw; i++) {
			wk[i].in = &in;
			wk[i].started = pthread_create(&wk[i].th, NULL, large_worker, &wk[i]) == 0;
		}
	}
	small_next(&in);
	while (shelf_pending(in.s) && !xfer_interrupted) {
		shelf_run(in.s, 100);
		draw(&in, &bar, false);
		small_next(&in);
	}
	for (unsigned i = 0; i < nw; i++) {
		while (wk[i].started && pthread_tryjoin_np(wk[i].th, NULL) == EBUSY) {
			draw(&in, &bar, false);
			usleep(50000);
		}
		wk[i].started = false;
	}
	draw(&in, &bar, true);
	secs = xbar_seconds(&bar);
	if (xfer_interrupted)
		fprintf(stderr, "shelf put: interrupted; a rerun resumes (objects stored are "
			"skipped)\n");
	if (in.fatal)
		fprintf(stderr, "shelf put: a client for large files could not be opened\n");
	fprintf(stderr, "shelf put: %zu files under '%s': %" PRIu64 " stored (%.1f MiB), %" PRIu64
		" already stored (%.1f MiB), %" PRIu64 " failed, %" PRIu64 " unreadable, %" PRIu64
		" skipped (not regular files); %.2f s, %.1f MiB/s\n", in.n, o.args[0], in.stored,
		in.stored_bytes / 1048576.0, in.skipped, in.skipped_bytes / 1048576.0, in.failed,
		in.unreadable, in.special, secs, secs > 0 ? in.stored_bytes / 1048576.0 / secs : 0.0);
	if (o.json) {
		printf("{\n  \"dir\": ");
		cli_json_str(stdout, o.args[0], strlen(o.args[0]));
		printf(",\n  \"prefix\": ");
		cli_json_str(stdout, o.args[1], strlen(o.args[1]));
		printf(",\n  \"files\": %zu,\n  \"stored\": %" PRIu64 ",\n  \"skipped\": %" PRIu64
		       ",\n  \"failed\": %" PRIu64 ",\n  \"unreadable\": %" PRIu64
		       ",\n  \"not_regular\": %" PRIu64 ",\n  \"bytes\": %" PRIu64
		       ",\n  \"skipped_bytes\": %" PRIu64 ",\n  \"seconds\": %.3f,\n"
		       "  \"mib_per_s\": %.1f,\n  \"interrupted\": %s\n}\n", in.n, in.stored,
		       in.skipped, in.failed, in.unreadable, in.special, in.stored_bytes,
		       in.skipped_bytes, secs, secs > 0 ? in.stored_bytes / 1048576.0 / secs : 0.0,
		       xfer_interrupted ? "true" : "false");
	}
	ret = xfer_interrupted ? 130 : in.failed || in.unreadable || in.fatal ? 1 : 0;
out:
	for (unsigned i = 0; i < nw; i++)
		if (wk[i].started)
			pthread_join(wk[i].th, NULL);
	free(wk);
	free(mem);
	shelf_close(&in.s);
	for (size_t i = 0; i < in.n; i++) {
		free(in.f[i].path);
		free(in.f[i].key);
		free(in.f[i].buf);
	}
	free(in.f);
	free(in.small);
	free(in.large);
	pthread_mutex_destroy(&in.mu);
	return ret;
}
