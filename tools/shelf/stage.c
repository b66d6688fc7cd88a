/*
 * `shelf stage PREFIX DIR`: copy every object under PREFIX into DIR (local
 * NVMe, /dev/shm), for training jobs that read local files.
 *
 * Paths: a key's file is DIR/ + the key after PREFIX's last '/' (as the
 * Python package's Client.stage: PREFIX "ds/train-" puts "ds/train-0001"
 * at DIR/train-0001; '/' in the rest makes subdirectories). The rest must
 * be a safe relative path (cli_path_refusal(), the rule of `get --batch
 * --out`); a key that is not is named and counted as failed.
 *
 * Steps: list the keys, STAT each (shelf_stat_async, many in flight), skip
 * each whose file is there with the object's size and crc32c (a rerun
 * resumes), then fetch the others: objects up to the slice's chunk size
 * with shelf_get_async (many in flight across the nodes, at most
 * --held-mib MiB of them in memory), larger ones streamed with
 * shelf_get_stream, --workers at a time, each on a client of its own. Each
 * read goes through libshelf's read path: the key's replicas in its order
 * (the client's chassis first, then placement order, nodes remembered as
 * unreachable last) with fail-over, and every chunk and object checked
 * against its crc32c; stage also checks the bytes against the STAT's size
 * and crc32c. Each file is written to DIR/.../.NAME.shelf-part, fsync'd,
 * renamed, and its directory fsync'd.
 *
 * A destination that cannot be written (not writable, full) stops
 * everything at once with the error; the file being written is removed, so
 * a rerun resumes. SIGINT or SIGTERM: stop, remove the files being
 * written, exit 130. Exit 0 when every object is there, 1 when some failed.
 * --json: a summary on stdout (objects, fetched, skipped, failed, bytes,
 * seconds, mib_per_s, and per node the NODE_STAT `gets` and `get_bytes`
 * (the GET answers' bytes it sent) over the run).
 */
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

#define LIST_PAGE 1000u
#define STAT_AHEAD 4 /* stats started ahead of those completed, per op in flight */
#define EXIT_INTERRUPTED 130

enum sstate { S_LISTED, S_STATED, S_SKIPPED, S_DONE, S_FAILED, S_GONE };

struct stage;

struct sobj {
	struct stage *st;
	char *key;        /* NUL-terminated (keys listed here are text) */
	size_t klen;
	char *path;       /* DIR/REL */
	uint64_t size;
	uint32_t crc;
	enum sstate state;
	bool manifest;    /* stored as a manifest: streamed, never an async GET */
};

struct stage {
	const struct xopts *o;
	const char *dir;
	struct shelf *s;
	struct sobj *objs;
	size_t n, cap;
	uint32_t chunk_size;
	/* the stat pump */
	size_t stat_next, stat_done;
	/* small objects: indexes into objs */
	size_t *small, nsmall, small_next;
	uint64_t held;              /* bytes of small objects in flight */
	char lastdir[PATH_MAX];     /* the main thread's directory to fsync */
	/* large objects */
	size_t *large, nlarge, large_next;
	pthread_mutex_t mu;
	/* counters (mu) */
	uint64_t fetched, fetched_bytes, skipped, skipped_bytes, failed, gone, moved_bytes;
	uint64_t todo_bytes;
	int fatal;                  /* a destination error: stop */
	char fatal_why[PATH_MAX + 128];
};

static void note_fatal(struct stage *st, int err, const char *path)
{
	pthread_mutex_lock(&st->mu);
	if (!st->fatal) {
		st->fatal = err;
		snprintf(st->fatal_why, sizeof(st->fatal_why), "cannot write '%s': %s", path,
			 strerror(-err));
	}
	pthread_mutex_unlock(&st->mu);
}

static bool stopping(struct stage *st)
{
	bool stop;

	pthread_mutex_lock(&st->mu);
	stop = st->fatal || xfer_interrupted;
	pthread_mutex_unlock(&st->mu);
	return stop;
}

static void count_failed(struct stage *st, struct sobj *ob, const char *why)
{
	pthread_mutex_lock(&st->mu);
	ob->state = S_FAILED;
	st->failed++;
	fprintf(stderr, "shelf stage: %s\n", why);
	pthread_mutex_unlock(&st->mu);
}

/* Local write errors that end the whole run (the destination is unusable). */
static bool dest_fatal(int err)
{
	return err == -ENOSPC || err == -EDQUOT || err == -EROFS || err == -EACCES ||
	       err == -EPERM || err == -EIO || err == -ENOMEM;
}

/* The temporary name of path: .NAME.shelf-part beside it. */
static void tmp_of(const char *path, char *tmp, size_t len)
{
	const char *slash = strrchr(path, '/');

	snprintf(tmp, len, "%.*s/.%s.shelf-part", (int)(slash - path), path, slash + 1);
}

/* fsync the directory of path when it is not *last (then it becomes
 * *last); last "" at the end: fsync *last. */
static int sync_dirs(char *last, size_t llen, const char *path)
{
	char dir[PATH_MAX];
	const char *slash = path ? strrchr(path, '/') : NULL;
	int ret = 0;

	if (path)
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	else
		dir[0] = 0;
	if (strcmp(dir, last) == 0)
		return 0;
	if (*last)
		ret = xfer_sync_dir(last);
	snprintf(last, llen, "%s", dir);
	return ret;
}

/* Write a small object's bytes to its file: tmp, fsync, rename. */
static int write_small(struct sobj *ob, const void *data, size_t len)
{
	char tmp[PATH_MAX + 32];
	int fd, ret;

	tmp_of(ob->path, tmp, sizeof(tmp));
	ret = xfer_mkdirs(ob->path);
	if (ret < 0)
		return ret;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	ret = ovl_file_write_full(fd, data, len);
	if (ret == 0 && fsync(fd) < 0 && errno != EINVAL)
		ret = -errno;
	if (close(fd) < 0 && ret == 0)
		ret = -errno;
	if (ret == 0 && rename(tmp, ob->path) < 0)
		ret = -errno;
	if (ret < 0)
		unlink(tmp);
	return ret;
}

/* ---- list, stat ---- */

struct list_ctx {
	struct stage *st;
	const char *prefix;
	size_t cut;              /* bytes of the key dropped for its path */
	char last[CLI_KEY_MAX_BYTES + 1];
	size_t lastlen;
	int err;
	unsigned missing;        /* members that did not answer a page */
	char missing_first[64];
};

/* A member that did not answer LIST: its keys come from the replicas. */
static void list_missing(void *arg, const char *node, const char *why)
{
	struct list_ctx *l = arg;

	if (l->missing++ == 0) {
		snprintf(l->missing_first, sizeof(l->missing_first), "%s", node);
		fprintf(stderr, "shelf stage: warning: node %s did not answer the listing (%s): its "
			"keys are listed from their other replicas\n", node, why);
	}
}

static int list_cb(void *arg, const void *key, size_t klen)
{
	struct list_ctx *l = arg;
	struct stage *st = l->st;
	const char *no;
	char why[128];
	struct sobj *ob;
	char *k;

	memcpy(l->last, key, klen);
	l->lastlen = klen;
	k = malloc(klen + 1);
	if (!k) {
		l->err = -ENOMEM;
		return 1;
	}
	memcpy(k, key, klen);
	k[klen] = 0;
	if (strlen(k) != klen)
		no = "the key holds a NUL byte";
	else
		no = cli_path_refusal(k + l->cut, klen - l->cut, why, sizeof(why));
	if (no) {
		fprintf(stderr, "shelf stage: key '%s': not copied: %s\n", k, no);
		st->failed++;
		free(k);
		return 0;
	}
	if (st->n == st->cap) {
		size_t nc = st->cap ? st->cap * 2 : 1024;
		struct sobj *no2 = realloc(st->objs, nc * sizeof(*no2));

		if (!no2) {
			free(k);
			l->err = -ENOMEM;
			return 1;
		}
		st->objs = no2;
		st->cap = nc;
	}
	ob = &st->objs[st->n];
	memset(ob, 0, sizeof(*ob));
	ob->key = k;
	ob->klen = klen;
	if (asprintf(&ob->path, "%s/%s", st->dir, k + l->cut) < 0) {
		free(k);
		l->err = -ENOMEM;
		return 1;
	}
	st->n++;
	return 0;
}

static int list_all(struct stage *st, const char *prefix, unsigned replicas)
{
	struct list_ctx l = { .st = st, .prefix = prefix };
	const char *slash = strrchr(prefix, '/');
	char err[SHELF_ERR_BYTES];
	int got;

	l.cut = slash ? (size_t)(slash - prefix) + 1 : 0;
	do {
		unsigned before = l.missing;

		got = shelf_list_partial(st->s, st->o->slice, prefix, strlen(prefix), l.last,
					 l.lastlen, LIST_PAGE, list_cb, &l, list_missing, &l, err,
					 sizeof(err));
		/* nodes that did not answer this page (each page asks them all) */
		if (l.missing - before >= replicas && replicas) {
			fprintf(stderr, "shelf stage: %u nodes did not answer the listing, as many as "
				"the copies of each object (R=%u): keys held only there would be "
				"missed; not staging\n", l.missing - before, replicas);
			return -EHOSTUNREACH;
		}
		if (got < 0) {
			fprintf(stderr, "shelf stage: %s\n", err);
			return got;
		}
		if (l.err) {
			fprintf(stderr, "shelf stage: out of memory listing '%s'\n", prefix);
			return l.err;
		}
	} while (got == (int)LIST_PAGE);
	return 0;
}

static void stat_next(struct stage *st);

static void stat_done(void *arg, int res, const struct shelf_op *op)
{
	struct sobj *ob = arg;
	struct stage *st = ob->st;
	const struct shelf_objstat *os = shelf_op_stat(op);

	st->stat_done++;
	if (res == 0 && os) {
		ob->size = os->size;
		ob->crc = os->crc;
		ob->state = S_STATED;
	} else if (res == -ENOENT) {
		ob->state = S_GONE;
		st->gone++;
	} else {
		count_failed(st, ob, shelf_op_error(op));
	}
	stat_next(st);
}

static void stat_next(struct stage *st)
{
	size_t ahead = (size_t)st->o->inflight * STAT_AHEAD;

	while (st->stat_next < st->n && st->stat_next - st->stat_done < ahead && !xfer_interrupted) {
		struct sobj *ob = &st->objs[st->stat_next++];

		ob->st = st;
		if (shelf_stat_async(st->s, st->o->slice, ob->key, ob->klen, stat_done, ob) < 0) {
			st->stat_done++;
			count_failed(st, ob, "stat refused by the library");
		}
	}
}

/* ---- small objects: shelf_get_async ---- */

static void small_next(struct stage *st);

static void small_done(void *arg, int res, const struct shelf_op *op)
{
	struct sobj *ob = arg;
	struct stage *st = ob->st;
	size_t len = 0;
	const void *data = shelf_op_data(op, &len);
	char why[SHELF_ERR_BYTES + 256];
	int ret;

	st->held -= ob->size;
	if (stopping(st)) {
		ob->state = S_LISTED; /* not written: a rerun fetches it */
		goto next;
	}
	if (res == -ENOENT) {
		ob->state = S_GONE;
		st->gone++;
		fprintf(stderr, "shelf stage: '%s': deleted since it was listed\n", ob->key);
		goto next;
	}
	if (res < 0) {
		count_failed(st, ob, shelf_op_error(op));
		goto next;
	}
	if (len != ob->size || shelf_crc32c(0, data ? data : "", len) != ob->crc) {
		snprintf(why, sizeof(why), "'%s': %zu bytes read with crc32c %08x, the object had "
			 "%" PRIu64 " bytes, crc32c %08x (overwritten since it was listed?)", ob->key,
			 len, shelf_crc32c(0, data ? data : "", len), ob->size, ob->crc);
		count_failed(st, ob, why);
		goto next;
	}
	ret = write_small(ob, data ? data : "", len);
	if (ret < 0) {
		if (dest_fatal(ret)) {
			note_fatal(st, ret, ob->path);
			ob->state = S_LISTED;
		} else {
			snprintf(why, sizeof(why), "'%s': cannot write '%s': %s", ob->key, ob->path,
				 strerror(-ret));
			count_failed(st, ob, why);
		}
		goto next;
	}
	if (sync_dirs(st->lastdir, sizeof(st->lastdir), ob->path) < 0)
		note_fatal(st, -EIO, st->lastdir);
	ob->state = S_DONE;
	pthread_mutex_lock(&st->mu);
	st->fetched++;
	st->fetched_bytes += len;
	st->moved_bytes += len;
	pthread_mutex_unlock(&st->mu);
next:
	small_next(st);
}

static void small_next(struct stage *st)
{
	while (st->small_next < st->nsmall && !stopping(st)) {
		struct sobj *ob = &st->objs[st->small[st->small_next]];

		/* bounded memory: at least one object, else at most held_bytes */
		if (st->held && st->held + ob->size > st->o->held_bytes)
			return;
		st->small_next++;
		st->held += ob->size;
		if (shelf_get_async(st->s, st->o->slice, ob->key, ob->klen, 0, UINT64_MAX, small_done,
				    ob) < 0) {
			st->held -= ob->size;
			count_failed(st, ob, "get refused by the library");
		}
	}
}

/* ---- large objects: streamed, one client per worker ---- */

struct lwrite {
	struct stage *st;
	int fd;
	uint32_t crc;
	uint64_t got;
	int werr;       /* a local write failed */
};

static int large_write(void *arg, const void *buf, size_t len)
{
	struct lwrite *w = arg;
	int ret;

	if (stopping(w->st))
		return -ECANCELED;
	ret = ovl_file_write_full(w->fd, buf, len);
	if (ret < 0) {
		w->werr = ret;
		return ret;
	}
	w->crc = shelf_crc32c(w->crc, buf, len);
	w->got += len;
	pthread_mutex_lock(&w->st->mu);
	w->st->moved_bytes += len;
	pthread_mutex_unlock(&w->st->mu);
	return 0;
}

static void large_one(struct stage *st, struct shelf *s, struct sobj *ob, char *lastdir,
		      size_t llen)
{
	char tmp[PATH_MAX + 32], err[SHELF_ERR_BYTES], why[SHELF_ERR_BYTES + 256];
	struct lwrite w = { .st = st, .fd = -1 };
	uint64_t total = 0;
	int ret;

	tmp_of(ob->path, tmp, sizeof(tmp));
	ret = xfer_mkdirs(ob->path);
	if (ret == 0) {
		w.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (w.fd < 0)
			ret = -errno;
	}
	if (ret < 0) {
		w.werr = ret;
		goto out;
	}
	ret = shelf_get_stream(s, st->o->slice, ob->key, ob->klen, 0, UINT64_MAX, large_write, &w,
			       &total, err, sizeof(err));
	if (ret == 0 && (w.got != ob->size || w.crc != ob->crc)) {
		snprintf(err, sizeof(err), "'%s': %" PRIu64 " bytes read with crc32c %08x, the object "
			 "had %" PRIu64 " bytes, crc32c %08x (overwritten since it was listed?)",
			 ob->key, w.got, w.crc, ob->size, ob->crc);
		ret = -EIO;
	}
	if (ret == 0 && fsync(w.fd) < 0 && errno != EINVAL)
		w.werr = ret = -errno;
	if (close(w.fd) < 0 && ret == 0)
		w.werr = ret = -errno;
	w.fd = -1;
	if (ret == 0 && rename(tmp, ob->path) < 0)
		w.werr = ret = -errno;
out:
	if (w.fd >= 0)
		close(w.fd);
	if (ret == 0) {
		if (sync_dirs(lastdir, llen, ob->path) < 0)
			note_fatal(st, -EIO, lastdir);
		pthread_mutex_lock(&st->mu);
		ob->state = S_DONE;
		st->fetched++;
		st->fetched_bytes += w.got;
		pthread_mutex_unlock(&st->mu);
		return;
	}
	unlink(tmp);
	pthread_mutex_lock(&st->mu);
	st->moved_bytes -= w.got;
	pthread_mutex_unlock(&st->mu);
	if (w.werr < 0 && dest_fatal(w.werr)) {
		note_fatal(st, w.werr, ob->path);
	} else if (w.werr < 0) {
		snprintf(why, sizeof(why), "'%s': cannot write '%s': %s", ob->key, ob->path,
			 strerror(-w.werr));
		count_failed(st, ob, why);
	} else if (ret == -ENOENT && strstr(err, "chunk") == NULL) {
		pthread_mutex_lock(&st->mu);
		ob->state = S_GONE;
		st->gone++;
		pthread_mutex_unlock(&st->mu);
		fprintf(stderr, "shelf stage: '%s': deleted since it was listed\n", ob->key);
	} else if (!stopping(st)) {
		snprintf(why, sizeof(why), "%s", err);
		count_failed(st, ob, why);
	}
}

struct worker {
	struct stage *st;
	pthread_t th;
	bool started;
};

static void *large_worker(void *arg)
{
	struct worker *wk = arg;
	struct stage *st = wk->st;
	struct shelf *s = NULL;
	char lastdir[PATH_MAX] = "";

	if (xfer_open("stage", st->o, &s) != 0) {
		note_fatal(st, -EHOSTUNREACH, "(no client)");
		return NULL;
	}
	for (;;) {
		struct sobj *ob = NULL;

		pthread_mutex_lock(&st->mu);
		if (!st->fatal && !xfer_interrupted && st->large_next < st->nlarge)
			ob = &st->objs[st->large[st->large_next++]];
		pthread_mutex_unlock(&st->mu);
		if (!ob)
			break;
		large_one(st, s, ob, lastdir, sizeof(lastdir));
	}
	if (sync_dirs(lastdir, sizeof(lastdir), NULL) < 0)
		note_fatal(st, -EIO, "a directory");
	shelf_close(&s);
	return NULL;
}

/* ---- NODE_STAT gets per node ---- */

struct nodegets {
	char addr[46];
	uint16_t port;
	uint64_t before, after;         /* NODE_STAT gets */
	uint64_t bytes_before, bytes_after; /* NODE_STAT get_bytes */
	bool ok, has_bytes;
};

static int node_gets(struct shelf *s, const char *slice, struct nodegets *ng, bool after)
{
	struct shelf_counter c[SHELF_COUNTERS_MAX];
	char err[SHELF_ERR_BYTES];
	int n = shelf_node_stat(s, slice, ng->addr, ng->port, c, SHELF_COUNTERS_MAX, err,
				sizeof(err)), ret = -ENOENT;
	bool bytes = false;

	for (int i = 0; i < n; i++) {
		if (strcmp(c[i].name, "gets") == 0) {
			*(after ? &ng->after : &ng->before) = c[i].value;
			ret = 0;
		} else if (strcmp(c[i].name, "get_bytes") == 0) {
			*(after ? &ng->bytes_after : &ng->bytes_before) = c[i].value;
			bytes = true;
		}
	}
	/* a node without get_bytes (an older firmware): its bytes are unknown */
	ng->has_bytes = after ? ng->has_bytes && bytes : bytes;
	return ret;
}

/* ---- the command ---- */

static int dest_check(const char *dir)
{
	char probe[PATH_MAX + 64];
	int fd, ret;

	snprintf(probe, sizeof(probe), "%s/", dir);
	ret = xfer_mkdirs(probe);
	if (ret < 0) {
		fprintf(stderr, "shelf stage: cannot create directory '%s': %s\n", dir,
			strerror(-ret));
		return 1;
	}
	snprintf(probe, sizeof(probe), "%s/.shelf-probe.%ld", dir, (long)getpid());
	fd = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		fprintf(stderr, "shelf stage: cannot write to directory '%s': %s\n", dir,
			strerror(errno));
		return 1;
	}
	close(fd);
	unlink(probe);
	return 0;
}

int cmd_stage(int argc, char **argv)
{
	struct xopts o;
	struct stage st;
	struct xbar bar;
	struct shelf_map_info mi;
	struct shelf_member *mem = NULL;
	struct nodegets *ng = NULL;
	struct worker *wk = NULL;
	unsigned nw = 0;
	char err[SHELF_ERR_BYTES];
	double secs;
	uint64_t nodes_total = 0, nodes_bytes = 0;
	int ret = xfer_parse(argc, argv, "stage", "PREFIX DIR",
			     "  copies every object under PREFIX to DIR/ + the key after PREFIX's "
			     "last '/'\n", &o);

	if (ret)
		return ret < 0 ? 0 : ret;
	if (o.recursive) {
		fprintf(stderr, "shelf stage: -r is for `shelf put -r`; stage always copies the whole "
			"prefix\n");
		return 2;
	}
	memset(&st, 0, sizeof(st));
	pthread_mutex_init(&st.mu, NULL);
	st.o = &o;
	st.dir = o.args[1];
	xbar_start(&bar, "stage");
	xfer_signals();
	ret = dest_check(st.dir);
	if (ret)
		goto out;
	ret = xfer_open("stage", &o, &st.s);
	if (ret)
		goto out;
	ret = 1;
	if (shelf_map(st.s, o.slice, &mi, &mem, err, sizeof(err)) < 0) {
		fprintf(stderr, "shelf stage: %s\n", err);
		goto out;
	}
	st.chunk_size = mi.chunk_size ? mi.chunk_size : SHELF_CHUNK_SIZE_DEFAULT;
	if (list_all(&st, o.args[0], mi.replicas) < 0)
		goto out;
	/* every object's size and crc32c */
	stat_next(&st);
	while (shelf_pending(st.s) && !xfer_interrupted) {
		shelf_run(st.s, 100);
		xbar_draw(&bar, 0, st.n, 0, 0, false);
	}
	if (xfer_interrupted)
		goto stop;
	/* a manifest's stat (asynchronous STATs give the stored manifest): the
	 * object's own size and crc, blocking */
	for (size_t i = 0; i < st.n && !xfer_interrupted; i++) {
		struct sobj *ob = &st.objs[i];
		struct shelf_objstat os;

		if (ob->state != S_STATED || !xfer_maybe_manifest(ob->size))
			continue;
		ret = shelf_stat(st.s, o.slice, ob->key, ob->klen, &os, err, sizeof(err));
		if (ret == -ENOENT) {
			ob->state = S_GONE;
			st.gone++;
		} else if (ret < 0) {
			count_failed(&st, ob, err);
		} else if (os.size != ob->size || os.crc != ob->crc) {
			ob->manifest = true;
			ob->size = os.size;
			ob->crc = os.crc;
		}
	}
	ret = 1;
	/* what is there already, and what to fetch */
	st.small = calloc(st.n + 1, sizeof(*st.small));
	st.large = calloc(st.n + 1, sizeof(*st.large));
	if (!st.small || !st.large)
		goto out;
	for (size_t i = 0; i < st.n && !xfer_interrupted; i++) {
		struct sobj *ob = &st.objs[i];
		uint64_t size;
		uint32_t crc;

		if (ob->state != S_STATED)
			continue;
		if (xfer_file_crc(ob->path, ob->size, &size, &crc) == 0 && crc == ob->crc) {
			ob->state = S_SKIPPED;
			st.skipped++;
			st.skipped_bytes += size;
			continue;
		}
		st.todo_bytes += ob->size;
		if (ob->size > st.chunk_size || ob->manifest)
			st.large[st.nlarge++] = i;
		else
			st.small[st.nsmall++] = i;
	}
	if (xfer_interrupted)
		goto stop;
	if (o.json && mi.n_members) {
		ng = calloc(mi.n_members, sizeof(*ng));
		if (!ng)
			goto out;
		for (uint32_t i = 0; i < mi.n_members; i++) {
			snprintf(ng[i].addr, sizeof(ng[i].addr), "%s", mem[i].addr);
			ng[i].port = mem[i].port;
			if (strcmp(mem[i].state, "up") == 0)
				ng[i].ok = node_gets(st.s, o.slice, &ng[i], false) == 0;
		}
	}
	/* large objects on worker threads, small ones here */
	if (st.nlarge) {
		nw = o.workers < st.nlarge ? o.workers : (unsigned)st.nlarge;
		wk = calloc(nw, sizeof(*wk));
		if (!wk)
			goto out;
		for (unsigned i = 0; i < nw; i++) {
			wk[i].st = &st;
			wk[i].started = pthread_create(&wk[i].th, NULL, large_worker, &wk[i]) == 0;
			if (!wk[i].started)
				note_fatal(&st, -EAGAIN, "(a thread)");
		}
	}
	small_next(&st);
	while (shelf_pending(st.s) && !xfer_interrupted) {
		uint64_t moved, done;

		shelf_run(st.s, 100);
		pthread_mutex_lock(&st.mu);
		moved = st.moved_bytes;
		done = st.fetched;
		pthread_mutex_unlock(&st.mu);
		xbar_draw(&bar, done, st.nsmall + st.nlarge, moved, st.todo_bytes, false);
		small_next(&st);
	}
	for (unsigned i = 0; i < nw; i++) {
		while (wk[i].started && pthread_tryjoin_np(wk[i].th, NULL) == EBUSY) {
			uint64_t moved, done;

			pthread_mutex_lock(&st.mu);
			moved = st.moved_bytes;
			done = st.fetched;
			pthread_mutex_unlock(&st.mu);
			xbar_draw(&bar, done, st.nsmall + st.nlarge, moved, st.todo_bytes, false);
			usleep(50000);
		}
		wk[i].started = false;
	}
	if (sync_dirs(st.lastdir, sizeof(st.lastdir), NULL) < 0)
		note_fatal(&st, -EIO, "a directory");
	xbar_draw(&bar, st.fetched, st.nsmall + st.nlarge, st.moved_bytes, st.todo_bytes, true);
stop:
	secs = xbar_seconds(&bar);
	if (st.fatal)
		fprintf(stderr, "shelf stage: %s; stopped (partial files removed; a rerun resumes)\n",
			st.fatal_why);
	if (xfer_interrupted)
		fprintf(stderr, "shelf stage: interrupted; stopped (partial files removed; a rerun "
			"resumes)\n");
	for (uint32_t i = 0; ng && i < mi.n_members; i++) {
		/* a node that restarted meanwhile counts from 0 again: unknown */
		if (!ng[i].ok || node_gets(st.s, o.slice, &ng[i], true) < 0 ||
		    ng[i].after < ng[i].before) {
			ng[i].ok = false;
			continue;
		}
		if (ng[i].bytes_after < ng[i].bytes_before)
			ng[i].has_bytes = false;
		nodes_total += ng[i].after - ng[i].before;
		if (ng[i].has_bytes)
			nodes_bytes += ng[i].bytes_after - ng[i].bytes_before;
	}
	fprintf(stderr, "shelf stage: %zu objects under '%s': %" PRIu64 " fetched (%.1f MiB), %"
		PRIu64 " already there (%.1f MiB), %" PRIu64 " failed, %" PRIu64 " deleted meanwhile"
		"; %.2f s, %.1f MiB/s\n", st.n, o.args[0], st.fetched, st.fetched_bytes / 1048576.0,
		st.skipped, st.skipped_bytes / 1048576.0, st.failed, st.gone, secs,
		secs > 0 ? st.fetched_bytes / 1048576.0 / secs : 0.0);
	if (o.json) {
		printf("{\n  \"prefix\": ");
		cli_json_str(stdout, o.args[0], strlen(o.args[0]));
		printf(",\n  \"dir\": ");
		cli_json_str(stdout, st.dir, strlen(st.dir));
		printf(",\n  \"objects\": %zu,\n  \"fetched\": %" PRIu64 ",\n  \"skipped\": %" PRIu64
		       ",\n  \"failed\": %" PRIu64 ",\n  \"deleted\": %" PRIu64 ",\n  \"bytes\": %"
		       PRIu64 ",\n  \"skipped_bytes\": %" PRIu64 ",\n  \"seconds\": %.3f,\n"
		       "  \"mib_per_s\": %.1f,\n  \"interrupted\": %s,\n  \"error\": ", st.n,
		       st.fetched, st.skipped, st.failed, st.gone, st.fetched_bytes,
		       st.skipped_bytes, secs, secs > 0 ? st.fetched_bytes / 1048576.0 / secs : 0.0,
		       xfer_interrupted ? "true" : "false");
		if (st.fatal)
			cli_json_str(stdout, st.fatal_why, strlen(st.fatal_why));
		else
			printf("null");
		/* which node answered each read is not told by libshelf: each
		 * node's NODE_STAT `gets` and `get_bytes` over the run stand for
		 * it (other clients' reads, the nodes' own repair and update
		 * reads, chunks and STATs count too) */
		printf(",\n  \"node_gets_total\": %" PRIu64 ",\n  \"node_bytes_total\": %" PRIu64
		       ",\n  \"nodes\": [", nodes_total, nodes_bytes);
		for (uint32_t i = 0; ng && i < mi.n_members; i++) {
			printf("%s\n    { \"node\": \"%s\", \"state\": \"%s\", \"gets\": ", i ? "," : "",
			       ng[i].addr, mem[i].state);
			if (ng[i].ok)
				printf("%" PRIu64, ng[i].after - ng[i].before);
			else
				printf("null");
			if (ng[i].ok && ng[i].has_bytes)
				printf(", \"bytes\": %" PRIu64 " }", ng[i].bytes_after - ng[i].bytes_before);
			else
				printf(", \"bytes\": null }");
		}
		printf("%s]\n}\n", ng && mi.n_members ? "\n  " : "");
	}
	ret = xfer_interrupted ? EXIT_INTERRUPTED : st.fatal || st.failed ? 1 : 0;
out:
	for (unsigned i = 0; i < nw; i++)
		if (wk[i].started)
			pthread_join(wk[i].th, NULL);
	free(wk);
	free(ng);
	free(mem);
	shelf_close(&st.s);
	for (size_t i = 0; i < st.n; i++) {
		free(st.objs[i].key);
		free(st.objs[i].path);
	}
	free(st.objs);
	free(st.small);
	free(st.large);
	pthread_mutex_destroy(&st.mu);
	return ret;
}
