/*
 * brk_fleet: the director of fleet updates (issue 16; fleet_design.md
 * section 6). It keeps the releases published to the site, the one
 * rollout, each node's last report and current assignment, and advances the
 * rollout stage by stage:
 *
 *  - a stage's nodes get action fetch at once (they fetch in parallel);
 *  - a node that reported `installed` is granted action restart only when
 *    every slice it is a member of has every member up with a fresh report
 *    of degraded 0, and no other member of those slices holds a grant that
 *    has not turned healthy (for at most the restart window);
 *  - a stage is done when all its nodes run the version; it then soaks, and
 *    the next stage starts;
 *  - a node reporting failed or rolled_back counts as a failure; past
 *    max_failed the rollout halts with the reason: nodes not granted get
 *    action stay, granted ones finish their step.
 *
 * Assignments are signed with the broker key, carry a seq from a counter
 * that only grows (reserved on disk in blocks) and are re-signed with a new
 * seq when they expire unacted. After a restart the director adopts what a
 * node's report shows it is doing, and resends what it has not acted on.
 */
#include "brk_fleet.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <msgpack.h>

enum ro_state { RO_NONE, RO_RUNNING, RO_HALTED, RO_DONE, RO_ABORTED };
static const char *const ro_names[] = { "none", "running", "halted", "done", "aborted" };

#define ACT_NONE 255
#define ACT_STAY 0
#define ACT_FETCH 1
#define ACT_RESTART 2

struct fnode {
	uint8_t id[OVL_ID_BYTES];
	bool have;                     /* a report was decoded */
	struct ovl_fleet_report rep;
	uint64_t rep_ms;
	uint8_t action;                /* the current assignment's action, ACT_NONE: none */
	uint64_t seq;                  /* its seq */
	uint64_t signed_ms;
	uint8_t *blob;                 /* the signed assignment (owned) */
	size_t blob_len;
	uint64_t first_seq;            /* first seq of this rollout it was sent (0: none) */
	bool granted;                  /* may restart now */
	uint64_t granted_ms;
	bool blocked;                  /* failed in this rollout: stays until resume */
	uint64_t failed_seq;           /* report seq whose failure was counted */
};

struct release {
	struct ovl_fleet_release r;
	uint8_t *meta, *cert;          /* owned */
	size_t meta_len, cert_len;
	char slice[OVL_MSG_NAME_SIZE];
};

struct failure {
	uint8_t id[OVL_ID_BYTES];
	uint8_t state;
	char reason[256];
};

struct rollout {
	enum ro_state state;
	bool unreadable;               /* the file could not be read: only start/abort */
	char version[OVL_FLEET_VERSION_BYTES];
	char board[OVL_FLEET_BOARD_BYTES]; /* "" = every board with the release */
	char stages[128];
	unsigned nstages;
	char stage_name[BRK_FLEET_STAGES_MAX][8];
	uint32_t cum[BRK_FLEET_STAGES_MAX]; /* targets included up to each stage */
	uint32_t max_failed;
	uint64_t soak_ms;
	unsigned stage;
	bool soaking;
	uint64_t soak_start_ms;
	uint64_t started_unix, started_ms;
	uint32_t failed_base;          /* failures before the last resume */
	char reason[384];
	uint8_t (*targets)[OVL_ID_BYTES]; /* in stage order (owned) */
	uint32_t n_targets;
	uint32_t chassis_n;            /* leading targets in the canary's chassis */
	struct failure *fails;         /* owned */
	uint32_t n_fails;
};

struct brk_fleet {
	brk_t *b;
	const struct brk_site *site;
	char dir[BRK_PATH_MAX + 16];
	char slice[OVL_MSG_NAME_SIZE];
	uint64_t soak_ms, valid_ms, window_ms;
	struct fnode **nodes;          /* owned records ... */
	size_t n_nodes;
	struct fnode **ht;             /* ... and their index by id (open addressing) */
	size_t ht_cap;
	struct release *rel;
	size_t n_rel;
	struct rollout ro;
	uint64_t seq, seq_reserved;
	uint64_t badlog_ms, bad_suppressed;
	uint64_t next_tick_ms;
	char line[768];
};

/* ---- small helpers ---------------------------------------------------------------- */

static void ev(struct brk_fleet *f, enum brk_event e, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void ev(struct brk_fleet *f, enum brk_event e, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(f->line, sizeof(f->line), fmt, ap);
	va_end(ap);
	brk_core_fleet_event(f->b, e, f->line);
}

static uint64_t now_ms(struct brk_fleet *f)
{
	return brk_core_fleet_now_ms(f->b);
}

static void fpr(const uint8_t id[OVL_ID_BYTES], char out[OVL_ID_FP_BYTES])
{
	ovl_nodeid_fingerprint(id, out);
}

/* Copy s into dst, keeping it one line of printable text. */
static void line_copy(char *dst, size_t cap, const char *s)
{
	size_t i = 0;

	for (; s && s[i] && i + 1 < cap; i++)
		dst[i] = (s[i] == '\n' || s[i] == '\r' || s[i] == '"') ? ' ' : s[i];
	dst[i] = '\0';
}

/* ---- node records ----------------------------------------------------------------- */

static size_t id_hash(const uint8_t *id)
{
	uint64_t h;

	memcpy(&h, id, sizeof(h));
	return (size_t)(h ^ (h >> 29));
}

static struct fnode *node_find(struct brk_fleet *f, const uint8_t *id)
{
	if (!f->ht_cap)
		return NULL;
	for (size_t i = id_hash(id) & (f->ht_cap - 1);; i = (i + 1) & (f->ht_cap - 1)) {
		if (!f->ht[i])
			return NULL;
		if (memcmp(f->ht[i]->id, id, OVL_ID_BYTES) == 0)
			return f->ht[i];
	}
}

static void ht_put(struct fnode **ht, size_t cap, struct fnode *n)
{
	size_t i = id_hash(n->id) & (cap - 1);

	while (ht[i])
		i = (i + 1) & (cap - 1);
	ht[i] = n;
}

static struct fnode *node_get(struct brk_fleet *f, const uint8_t *id)
{
	struct fnode *n = node_find(f, id), **v;

	if (n)
		return n;
	if (f->n_nodes >= BRK_NODES_MAX)
		return NULL;
	if ((f->n_nodes + 1) * 2 > f->ht_cap) {
		size_t cap = f->ht_cap ? f->ht_cap * 2 : 64;
		struct fnode **ht = calloc(cap, sizeof(*ht));

		if (!ht)
			return NULL;
		for (size_t i = 0; i < f->n_nodes; i++)
			ht_put(ht, cap, f->nodes[i]);
		free(f->ht);
		f->ht = ht;
		f->ht_cap = cap;
	}
	v = realloc(f->nodes, (f->n_nodes + 1) * sizeof(*v));
	if (!v)
		return NULL;
	f->nodes = v;
	n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	memcpy(n->id, id, OVL_ID_BYTES);
	n->action = ACT_NONE;
	f->nodes[f->n_nodes++] = n;
	ht_put(f->ht, f->ht_cap, n);
	return n;
}

static bool fresh(struct brk_fleet *f, const struct fnode *n)
{
	return n && n->have && now_ms(f) - n->rep_ms <= BRK_FLEET_REPORT_FRESH_MS;
}

/* The node runs the rollout's version (and its gate passed, as far as it says). */
static bool healthy(const struct brk_fleet *f, const struct fnode *n)
{
	return n && n->have && strcmp(n->rep.running, f->ro.version) == 0 &&
	       n->rep.state != OVL_FLEET_STATE_FAILED &&
	       n->rep.state != OVL_FLEET_STATE_ROLLED_BACK &&
	       n->rep.state != OVL_FLEET_STATE_RESTARTING;
}

/* ---- releases --------------------------------------------------------------------- */

static void release_free(struct release *r)
{
	ovl_fleet_release_free(&r->r);
	free(r->meta);
	free(r->cert);
	memset(r, 0, sizeof(*r));
}

static struct release *release_find(struct brk_fleet *f, const char *version, const char *board)
{
	for (size_t i = 0; i < f->n_rel; i++)
		if (strcmp(f->rel[i].r.version, version) == 0 &&
		    strcmp(f->rel[i].r.board, board) == 0)
			return &f->rel[i];
	return NULL;
}

static bool name_safe(const char *s)
{
	if (!*s || s[0] == '.')
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' || *s == '.'))
			return false;
	return true;
}

static int read_file(const char *path, size_t max, uint8_t **out, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	uint8_t *buf = NULL;
	long sz;
	int rc = 0;

	*out = NULL;
	*len = 0;
	if (!fp)
		return -errno;
	if (fseek(fp, 0, SEEK_END) < 0 || (sz = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) < 0) {
		rc = -EIO;
		goto out;
	}
	if ((size_t)sz > max) {
		rc = -E2BIG;
		goto out;
	}
	buf = malloc((size_t)sz + 1);
	if (!buf) {
		rc = -ENOMEM;
		goto out;
	}
	if (fread(buf, 1, (size_t)sz, fp) != (size_t)sz) {
		rc = -EIO;
		goto out;
	}
	buf[sz] = '\0';
	*out = buf;
	*len = (size_t)sz;
	buf = NULL;
out:
	free(buf);
	fclose(fp);
	return rc;
}

/* Verify meta+cert and keep them as a release (replacing one of the same
 * version and board). 0, or -errno with err. */
static int release_add(struct brk_fleet *f, const uint8_t *meta, size_t meta_len,
		       const uint8_t *cert, size_t cert_len, const char *slice, bool save,
		       bool *replaced, char *err, size_t errlen)
{
	struct ovl_trust trust;
	struct release nr, *old, *v;
	char path[BRK_PATH_MAX + 128];
	int rc;

	memset(&nr, 0, sizeof(nr));
	memset(&trust, 0, sizeof(trust));
	memcpy(trust.ca_pk, f->site->ca_pk, OVL_ID_BYTES);
	*replaced = false;
	rc = ovl_fleet_release_verify(&nr.r, meta, meta_len, cert, cert_len, &trust,
				      brk_core_fleet_unix_s(f->b), NULL, NULL, err, errlen);
	if (rc < 0)
		return rc;
	if (!name_safe(nr.r.board)) {
		snprintf(err, errlen, "board name '%s' is not [A-Za-z0-9_.-]", nr.r.board);
		rc = -EINVAL;
		goto out;
	}
	if (!slice[0] || strlen(slice) >= sizeof(nr.slice)) {
		snprintf(err, errlen, "bad slice name");
		rc = -EINVAL;
		goto out;
	}
	snprintf(nr.slice, sizeof(nr.slice), "%s", slice);
	nr.meta = malloc(meta_len);
	nr.cert = malloc(cert_len ? cert_len : 1);
	if (!nr.meta || !nr.cert) {
		rc = -ENOMEM;
		goto out;
	}
	memcpy(nr.meta, meta, meta_len);
	memcpy(nr.cert, cert, cert_len);
	nr.meta_len = meta_len;
	nr.cert_len = cert_len;
	if (save && f->dir[0]) {
		char line[OVL_MSG_NAME_SIZE + 2];

		snprintf(line, sizeof(line), "%s\n", slice);
		snprintf(path, sizeof(path), "%s/releases/%s-%s.cert", f->dir, nr.r.version,
			 nr.r.board);
		rc = ovl_file_write_atomic(path, cert, cert_len, 0644, err, errlen);
		snprintf(path, sizeof(path), "%s/releases/%s-%s.slice", f->dir, nr.r.version,
			 nr.r.board);
		if (rc == 0)
			rc = ovl_file_write_atomic(path, line, strlen(line), 0644, err, errlen);
		/* the metadata last: it is what loading looks for */
		snprintf(path, sizeof(path), "%s/releases/%s-%s.meta", f->dir, nr.r.version,
			 nr.r.board);
		if (rc == 0)
			rc = ovl_file_write_atomic(path, meta, meta_len, 0644, err, errlen);
		if (rc < 0)
			goto out;
	}
	old = release_find(f, nr.r.version, nr.r.board);
	if (old) {
		*replaced = memcmp(old->r.id, nr.r.id, 32) != 0;
		release_free(old);
		*old = nr;
		return 0;
	}
	if (f->n_rel >= BRK_FLEET_RELEASES_MAX) {
		snprintf(err, errlen, "too many releases (%d)", BRK_FLEET_RELEASES_MAX);
		rc = -ENOSPC;
		goto out;
	}
	v = realloc(f->rel, (f->n_rel + 1) * sizeof(*v));
	if (!v) {
		rc = -ENOMEM;
		goto out;
	}
	f->rel = v;
	f->rel[f->n_rel++] = nr;
	return 0;
out:
	release_free(&nr);
	return rc;
}

static void releases_load(struct brk_fleet *f)
{
	char path[BRK_PATH_MAX + 300], err[256];
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof(path), "%s/releases", f->dir);
	d = opendir(path);
	if (!d)
		return;
	while ((de = readdir(d)) != NULL) {
		size_t n = strlen(de->d_name);
		uint8_t *meta = NULL, *cert = NULL, *sl = NULL;
		size_t meta_len, cert_len, sl_len;
		char base[256], slice[OVL_MSG_NAME_SIZE];
		bool replaced;
		int rc;

		if (n < 6 || n >= sizeof(base) || strcmp(de->d_name + n - 5, ".meta") != 0)
			continue;
		memcpy(base, de->d_name, n - 5);
		base[n - 5] = '\0';
		snprintf(path, sizeof(path), "%s/releases/%s.meta", f->dir, base);
		rc = read_file(path, OVL_MSG_FLEET_MAX_BYTES, &meta, &meta_len);
		snprintf(path, sizeof(path), "%s/releases/%s.cert", f->dir, base);
		if (rc == 0)
			rc = read_file(path, OVL_CERT_MAX_BYTES, &cert, &cert_len);
		snprintf(path, sizeof(path), "%s/releases/%s.slice", f->dir, base);
		snprintf(slice, sizeof(slice), "%s", f->slice);
		if (rc == 0 && read_file(path, 256, &sl, &sl_len) == 0) {
			sl[strcspn((char *)sl, "\r\n")] = '\0';
			if (sl[0])
				snprintf(slice, sizeof(slice), "%s", (char *)sl);
		}
		if (rc < 0)
			snprintf(err, sizeof(err), "cannot read it: %s", strerror(-rc));
		else
			rc = release_add(f, meta, meta_len, cert, cert_len, slice, false, &replaced,
					 err, sizeof(err));
		if (rc < 0)
			ev(f, BRK_EV_ERROR, "event=fleet what=release file=%s/releases/%s "
			   "reason=\"not loaded: %s\"", f->dir, base, err);
		free(meta);
		free(cert);
		free(sl);
	}
	closedir(d);
}

/* ---- seq ---------------------------------------------------------------------------- */

static int seq_save(struct brk_fleet *f, uint64_t reserved, char *err, size_t errlen)
{
	char path[BRK_PATH_MAX + 32], buf[32];

	if (!f->dir[0]) {
		f->seq_reserved = reserved;
		return 0;
	}
	snprintf(path, sizeof(path), "%s/seq", f->dir);
	snprintf(buf, sizeof(buf), "%llu\n", (unsigned long long)reserved);
	if (ovl_file_write_atomic(path, buf, strlen(buf), 0644, err, errlen) < 0)
		return -EIO;
	f->seq_reserved = reserved;
	return 0;
}

/* The next seq, or 0 when it could not be reserved on disk. */
static uint64_t seq_next(struct brk_fleet *f)
{
	char err[256];

	if (f->seq + 1 > f->seq_reserved &&
	    seq_save(f, f->seq + BRK_FLEET_SEQ_BLOCK, err, sizeof(err)) < 0) {
		ev(f, BRK_EV_ERROR, "event=error what=fleet_seq reason=\"%s\"", err);
		return 0;
	}
	return ++f->seq;
}

/* ---- the rollout file --------------------------------------------------------------- */

static void rollout_clear(struct rollout *r)
{
	free(r->targets);
	free(r->fails);
	memset(r, 0, sizeof(*r));
}

static int rollout_save(struct brk_fleet *f)
{
	const struct rollout *r = &f->ro;
	char path[BRK_PATH_MAX + 32], err[256], hex[OVL_ID_HEX_BYTES];
	char *buf = NULL;
	size_t size = 0;
	FILE *m;
	int rc;

	if (!f->dir[0] || r->unreadable)
		return 0;
	m = open_memstream(&buf, &size);
	if (!m)
		return -ENOMEM;
	fprintf(m, "shelf-rollout 1\n");
	fprintf(m, "state %s\n", ro_names[r->state]);
	fprintf(m, "version %s\n", r->version);
	fprintf(m, "board %s\n", r->board[0] ? r->board : "-");
	fprintf(m, "stages %s\n", r->stages);
	fprintf(m, "max_failed %u\n", r->max_failed);
	fprintf(m, "soak_ms %llu\n", (unsigned long long)r->soak_ms);
	fprintf(m, "stage %u\n", r->stage);
	fprintf(m, "soaking %d\n", r->soaking ? 1 : 0);
	fprintf(m, "started %llu\n", (unsigned long long)r->started_unix);
	fprintf(m, "failed_base %u\n", r->failed_base);
	fprintf(m, "chassis_n %u\n", r->chassis_n);
	fprintf(m, "reason %s\n", r->reason[0] ? r->reason : "-");
	for (uint32_t i = 0; i < r->n_targets; i++) {
		ovl_nodeid_format(r->targets[i], hex);
		fprintf(m, "target %s\n", hex);
	}
	for (uint32_t i = 0; i < r->n_fails; i++) {
		ovl_nodeid_format(r->fails[i].id, hex);
		fprintf(m, "fail %s %u %s\n", hex, r->fails[i].state,
			r->fails[i].reason[0] ? r->fails[i].reason : "-");
	}
	fprintf(m, "end\n");
	if (fclose(m) != 0) {
		free(buf);
		return -ENOMEM;
	}
	snprintf(path, sizeof(path), "%s/rollout", f->dir);
	rc = ovl_file_write_atomic(path, buf, size, 0644, err, sizeof(err));
	if (rc < 0)
		ev(f, BRK_EV_ERROR, "event=error what=fleet_rollout reason=\"%s\"", err);
	free(buf);
	return rc;
}

static int stages_parse(const char *s, struct rollout *r, char *err, size_t errlen);
static void stages_count(struct rollout *r);

/* Parse the rollout file text into r. 0 or -EBADMSG with err (line named). */
static int rollout_parse(struct brk_fleet *f, char *text, struct rollout *r, char *err,
			 size_t errlen)
{
	unsigned lineno = 0;
	bool ended = false, have[12] = { false };
	char *save = NULL;
	int rc = 0;

	(void)f;
	memset(r, 0, sizeof(*r));
	for (char *ln = strtok_r(text, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
		char *sp = strchr(ln, ' ');
		const char *k = ln, *v = sp ? sp + 1 : "";
		char *end = NULL;
		unsigned long long u = 0;

		lineno++;
		if (ended)
			goto bad;
		if (sp)
			*sp = '\0';
		if (lineno == 1) {
			if (strcmp(k, "shelf-rollout") != 0 || strcmp(v, "1") != 0)
				goto bad;
			continue;
		}
		if (strcmp(k, "end") == 0) {
			ended = true;
			continue;
		}
		if (!strcmp(k, "max_failed") || !strcmp(k, "soak_ms") || !strcmp(k, "stage") ||
		    !strcmp(k, "soaking") || !strcmp(k, "started") || !strcmp(k, "failed_base") ||
		    !strcmp(k, "chassis_n")) {
			if (!*v || strspn(v, "0123456789") != strlen(v) || strlen(v) > 19)
				goto bad;
			u = strtoull(v, &end, 10);
		}
		if (!strcmp(k, "state")) {
			int st = -1;

			for (int i = 0; i < 5; i++)
				if (!strcmp(v, ro_names[i]))
					st = i;
			if (st < 0)
				goto bad;
			r->state = (enum ro_state)st;
			have[0] = true;
		} else if (!strcmp(k, "version")) {
			uint64_t vn;

			if (ovl_fleet_version_parse(v, &vn) < 0)
				goto bad;
			snprintf(r->version, sizeof(r->version), "%s", v);
			have[1] = true;
		} else if (!strcmp(k, "board")) {
			if (strcmp(v, "-") != 0 && (!name_safe(v) || strlen(v) >= sizeof(r->board)))
				goto bad;
			snprintf(r->board, sizeof(r->board), "%s", strcmp(v, "-") ? v : "");
			have[2] = true;
		} else if (!strcmp(k, "stages")) {
			if (stages_parse(v, r, err, errlen) < 0)
				goto bad;
			have[3] = true;
		} else if (!strcmp(k, "max_failed")) {
			if (u > UINT32_MAX)
				goto bad;
			r->max_failed = (uint32_t)u;
		} else if (!strcmp(k, "soak_ms")) {
			r->soak_ms = u;
		} else if (!strcmp(k, "stage")) {
			r->stage = (unsigned)u;
			have[4] = true;
		} else if (!strcmp(k, "soaking")) {
			r->soaking = u != 0;
		} else if (!strcmp(k, "started")) {
			r->started_unix = u;
		} else if (!strcmp(k, "failed_base")) {
			r->failed_base = (uint32_t)u;
		} else if (!strcmp(k, "chassis_n")) {
			r->chassis_n = (uint32_t)u;
		} else if (!strcmp(k, "reason")) {
			line_copy(r->reason, sizeof(r->reason), strcmp(v, "-") ? v : "");
		} else if (!strcmp(k, "target")) {
			uint8_t (*t)[OVL_ID_BYTES];

			if (r->n_targets >= BRK_NODES_MAX)
				goto bad;
			t = realloc(r->targets, (r->n_targets + 1) * sizeof(*t));
			if (!t) {
				rc = -ENOMEM;
				goto out;
			}
			r->targets = t;
			if (ovl_nodeid_parse(v, r->targets[r->n_targets]) < 0)
				goto bad;
			r->n_targets++;
		} else if (!strcmp(k, "fail")) {
			struct failure *fl;
			char idhex[80];
			unsigned st = 0;
			int used = 0;

			if (sscanf(v, "%79s %u %n", idhex, &st, &used) < 2 || st > 255 ||
			    r->n_fails >= BRK_NODES_MAX)
				goto bad;
			fl = realloc(r->fails, (r->n_fails + 1) * sizeof(*fl));
			if (!fl) {
				rc = -ENOMEM;
				goto out;
			}
			r->fails = fl;
			memset(&fl[r->n_fails], 0, sizeof(*fl));
			if (ovl_nodeid_parse(idhex, fl[r->n_fails].id) < 0)
				goto bad;
			fl[r->n_fails].state = (uint8_t)st;
			line_copy(fl[r->n_fails].reason, sizeof(fl[0].reason),
				  strcmp(v + used, "-") ? v + used : "");
			r->n_fails++;
		} else {
			goto bad;
		}
		continue;
bad:
		snprintf(err, errlen, "line %u is not valid", lineno);
		rc = -EBADMSG;
		goto out;
	}
	if (!ended || !have[0] || !have[1] || !have[2] || !have[3] || !have[4] ||
	    r->stage >= r->nstages || r->failed_base > r->n_fails) {
		snprintf(err, errlen, "incomplete (no end line, or a field missing)");
		rc = -EBADMSG;
		goto out;
	}
	stages_count(r);
out:
	if (rc < 0)
		rollout_clear(r);
	return rc;
}

static void rollout_load(struct brk_fleet *f)
{
	char path[BRK_PATH_MAX + 32], err[256] = "";
	uint8_t *buf = NULL;
	size_t len = 0;
	int rc;

	snprintf(path, sizeof(path), "%s/rollout", f->dir);
	rc = read_file(path, 64u << 20, &buf, &len);
	if (rc == -ENOENT)
		return;
	if (rc < 0)
		snprintf(err, sizeof(err), "%s", strerror(-rc));
	else if (memchr(buf, '\0', len))
		snprintf(err, sizeof(err), "it holds a NUL byte"), rc = -EBADMSG;
	else
		rc = rollout_parse(f, (char *)buf, &f->ro, err, sizeof(err));
	free(buf);
	if (rc < 0) {
		rollout_clear(&f->ro);
		f->ro.state = RO_HALTED;
		f->ro.unreadable = true;
		snprintf(f->ro.reason, sizeof(f->ro.reason), "state file unreadable: %.150s: %.200s", path,
			 err);
		ev(f, BRK_EV_ERROR, "event=fleet what=rollout reason=\"refused %s: %s; the rollout "
		   "shows as halted: start a new one or abort it\"", path, err);
		return;
	}
	f->ro.started_ms = now_ms(f);
	/* nodes that failed since the last resume stay where they are */
	for (uint32_t i = f->ro.failed_base; i < f->ro.n_fails; i++) {
		struct fnode *n = node_get(f, f->ro.fails[i].id);

		if (n)
			n->blocked = true;
	}
	if (f->ro.soaking)
		f->ro.soak_start_ms = now_ms(f); /* the soak starts again */
}

/* ---- stages ------------------------------------------------------------------------ */

static int stages_parse(const char *s, struct rollout *r, char *err, size_t errlen)
{
	char buf[128], *save = NULL;
	unsigned last_pct = 0;

	if (!s || strlen(s) >= sizeof(buf) || !*s) {
		snprintf(err, errlen, "stages: empty or too long");
		return -EINVAL;
	}
	snprintf(buf, sizeof(buf), "%s", s);
	r->nstages = 0;
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		size_t n = strlen(t);

		if (r->nstages >= BRK_FLEET_STAGES_MAX) {
			snprintf(err, errlen, "stages: at most %d", BRK_FLEET_STAGES_MAX);
			return -EINVAL;
		}
		if (!strcmp(t, "canary") || !strcmp(t, "chassis")) {
			if (last_pct) {
				snprintf(err, errlen, "stages: '%s' must come before the N%% stages", t);
				return -EINVAL;
			}
		} else {
			unsigned long p;

			if (n < 2 || n > 4 || t[n - 1] != '%' ||
			    strspn(t, "0123456789") != n - 1 || t[0] == '0') {
				snprintf(err, errlen, "stages: '%s' is not canary, chassis or N%% "
					 "(1..100)", t);
				return -EINVAL;
			}
			p = strtoul(t, NULL, 10);
			if (p < 1 || p > 100 || p <= last_pct) {
				snprintf(err, errlen, "stages: '%s' must be 1..100 and above the stage "
					 "before", t);
				return -EINVAL;
			}
			last_pct = (unsigned)p;
		}
		snprintf(r->stage_name[r->nstages++], sizeof(r->stage_name[0]), "%s", t);
	}
	if (!r->nstages || last_pct != 100) {
		snprintf(err, errlen, "stages: the last stage must be 100%%");
		return -EINVAL;
	}
	snprintf(r->stages, sizeof(r->stages), "%s", s);
	return 0;
}

/* How many of r->targets (canary first, then its chassis, then by chassis)
 * each stage includes. The chassis count is the number of leading targets
 * that share the canary's chassis: start orders them so. */
static void stages_count(struct rollout *r)
{
	uint32_t prev = 0;

	for (unsigned i = 0; i < r->nstages; i++) {
		uint32_t c = prev;
		const char *s = r->stage_name[i];

		if (!strcmp(s, "canary"))
			c = 1;
		else if (!strcmp(s, "chassis"))
			c = r->chassis_n ? r->chassis_n : 1;
		else
			c = (uint32_t)(((uint64_t)strtoul(s, NULL, 10) * r->n_targets + 99) / 100);
		if (c < prev)
			c = prev;
		if (c > r->n_targets)
			c = r->n_targets;
		r->cum[i] = c;
		prev = c;
	}
}

/* ---- assignments ------------------------------------------------------------------- */

/* The release a node of `board` gets in this rollout, or NULL. */
static struct release *rollout_release(struct brk_fleet *f, const char *board)
{
	if (f->ro.board[0] && strcmp(board, f->ro.board) != 0)
		return NULL;
	return release_find(f, f->ro.version, board);
}

static const char *node_board(struct brk_fleet *f, const struct fnode *n)
{
	struct brk_fleet_node v;

	if (n->have && n->rep.board[0])
		return n->rep.board;
	if (brk_core_fleet_find(f->b, n->id, &v) == 0 && v.board)
		return v.board;
	return "";
}

/* Sign `action` for node n (a new seq). 0 or -errno (an event says why). */
static int assign(struct brk_fleet *f, struct fnode *n, uint8_t action)
{
	struct ovl_fleet_assign a;
	struct release *rel = NULL;
	uint8_t *out = NULL;
	size_t outlen = 0;
	char err[256], nfp[OVL_ID_FP_BYTES];
	int rc;

	memset(&a, 0, sizeof(a));
	if (action != ACT_STAY) {
		rel = rollout_release(f, node_board(f, n));
		if (!rel)
			action = ACT_STAY;
	}
	a.seq = seq_next(f);
	if (!a.seq)
		return -EIO;
	memcpy(a.node, n->id, OVL_ID_BYTES);
	a.issued = brk_core_fleet_unix_s(f->b);
	a.valid = (uint32_t)((f->valid_ms + 999) / 1000);
	a.action = action;
	a.rate = 0;
	snprintf(a.slice, sizeof(a.slice), "%s", rel ? rel->slice : f->slice);
	if (rel) {
		a.release = rel->meta;
		a.release_len = rel->meta_len;
		a.cert = rel->cert;
		a.cert_len = rel->cert_len;
	}
	rc = ovl_fleet_assign_sign(&a, f->site->id->sign_sk, &out, &outlen, err, sizeof(err));
	if (rc < 0) {
		ev(f, BRK_EV_ERROR, "event=error what=fleet_assign reason=\"%s\"", err);
		return rc;
	}
	free(n->blob);
	n->blob = out;
	n->blob_len = outlen;
	n->action = action;
	n->seq = a.seq;
	n->signed_ms = now_ms(f);
	if (action != ACT_STAY && !n->first_seq)
		n->first_seq = a.seq;
	fpr(n->id, nfp);
	ev(f, BRK_EV_ADMIT, "event=fleet_assign node=%s seq=%llu action=%s version=%s", nfp,
	   (unsigned long long)a.seq,
	   action == ACT_FETCH ? "fetch" : action == ACT_RESTART ? "restart" : "stay",
	   rel ? rel->r.version : "-");
	return 0;
}

/* Make n's assignment `action` unless it already is (or its report shows it
 * is doing that already: adopted without a new signature). */
static void want(struct brk_fleet *f, struct fnode *n, uint8_t action)
{
	if (n->action == action)
		return;
	if (n->action == ACT_NONE && n->have && n->rep.seq &&
	    strcmp(n->rep.target, f->ro.version) == 0 &&
	    ((action == ACT_FETCH && (n->rep.state == OVL_FLEET_STATE_FETCHING ||
				      n->rep.state == OVL_FLEET_STATE_INSTALLED)) ||
	     (action == ACT_RESTART && n->rep.state == OVL_FLEET_STATE_RESTARTING))) {
		/* a restarted broker: the node acted on an assignment it sent before */
		n->action = action;
		n->seq = n->rep.seq;
		if (!n->first_seq)
			n->first_seq = n->rep.seq;
		return;
	}
	if (action == ACT_STAY && n->action == ACT_NONE)
		return; /* nothing was asked of it */
	assign(f, n, action);
}

bool brk_fleet_assignment(struct brk_fleet *f, const uint8_t id[OVL_ID_BYTES],
			  const uint8_t **buf, size_t *len)
{
	struct fnode *n = node_find(f, id);

	if (!n || !n->have || n->action == ACT_NONE || n->rep.seq >= n->seq)
		return false;
	if (!n->blob || now_ms(f) - n->signed_ms + 5000 > f->valid_ms) {
		/* expired (or adopted without bytes) and not acted on: a fresh one */
		if (assign(f, n, n->action) < 0)
			return false;
	}
	*buf = n->blob;
	*len = n->blob_len;
	return true;
}

/* ---- the rollout's progress ---------------------------------------------------------- */

struct peer_check {
	struct brk_fleet *f;
	struct fnode *self;
	const char *why;
};

static bool peer_ok(void *arg, const struct brk_fleet_node *p)
{
	struct peer_check *c = arg;
	struct fnode *pn = node_find(c->f, p->id);

	if (p->state != OVL_MSG_STATE_UP) {
		c->why = "a member of its slices is not up";
		return false;
	}
	if (!fresh(c->f, pn) || pn->rep.degraded) {
		c->why = "a member of its slices is not at full redundancy";
		return false;
	}
	if (pn != c->self && pn->granted &&
	    brk_core_fleet_now_ms(c->f->b) - pn->granted_ms < c->f->window_ms) {
		c->why = "another member of its slices is restarting";
		return false;
	}
	return true;
}

static bool restart_ok(struct brk_fleet *f, struct fnode *n)
{
	struct brk_fleet_node v;
	struct peer_check c = { f, n, NULL };

	if (brk_core_fleet_find(f->b, n->id, &v) < 0 || v.state != OVL_MSG_STATE_UP ||
	    !fresh(f, n) || n->rep.degraded)
		return false;
	return brk_core_fleet_peers(f->b, n->id, peer_ok, &c);
}

static void halt(struct brk_fleet *f, const char *reason)
{
	f->ro.state = RO_HALTED;
	f->ro.soaking = false;
	line_copy(f->ro.reason, sizeof(f->ro.reason), reason);
	ev(f, BRK_EV_REFUSE, "event=fleet_halt version=%s stage=%s reason=\"%s\"", f->ro.version,
	   f->ro.stage_name[f->ro.stage], f->ro.reason);
	rollout_save(f);
}

static void failure_add(struct brk_fleet *f, struct fnode *n)
{
	struct rollout *r = &f->ro;
	struct failure *fl;
	char nfp[OVL_ID_FP_BYTES], why[512];
	const char *sn = ovl_fleet_state_name(n->rep.state);

	n->failed_seq = n->rep.seq;
	n->blocked = true;
	n->granted = false;
	fl = realloc(r->fails, (r->n_fails + 1) * sizeof(*fl));
	if (fl) {
		r->fails = fl;
		memset(&fl[r->n_fails], 0, sizeof(*fl));
		memcpy(fl[r->n_fails].id, n->id, OVL_ID_BYTES);
		fl[r->n_fails].state = n->rep.state;
		line_copy(fl[r->n_fails].reason, sizeof(fl[0].reason), n->rep.reason);
		r->n_fails++;
	}
	fpr(n->id, nfp);
	snprintf(why, sizeof(why), "halted: node %s %s: %s", nfp,
		 n->rep.state == OVL_FLEET_STATE_ROLLED_BACK ? "rolled back" : sn ? sn : "failed",
		 n->rep.reason[0] ? n->rep.reason : "(no reason given)");
	ev(f, BRK_EV_REFUSE, "event=fleet_failure node=%s version=%s state=%s reason=\"%s\"", nfp,
	   r->version, sn ? sn : "?", n->rep.reason);
	if (r->n_fails - r->failed_base > r->max_failed)
		halt(f, why);
	else
		rollout_save(f);
}

static uint32_t included(const struct rollout *r)
{
	return r->nstages ? r->cum[r->stage] : 0;
}

static void reconcile(struct brk_fleet *f)
{
	struct rollout *r = &f->ro;
	uint64_t now = now_ms(f);
	uint32_t inc = included(r), healthy_n = 0;

	if (r->state == RO_RUNNING) {
		/* failures first: they may halt before anything else is granted */
		for (uint32_t i = 0; i < inc && r->state == RO_RUNNING; i++) {
			struct fnode *n = node_find(f, r->targets[i]);

			if (n && n->have && n->first_seq && n->rep.seq >= n->first_seq &&
			    n->rep.seq > n->failed_seq &&
			    (n->rep.state == OVL_FLEET_STATE_FAILED ||
			     n->rep.state == OVL_FLEET_STATE_ROLLED_BACK))
				failure_add(f, n);
		}
	}
	if (r->state == RO_RUNNING) {
		for (uint32_t i = 0; i < inc; i++) {
			struct fnode *n = node_get(f, r->targets[i]);

			if (!n)
				continue;
			if (healthy(f, n)) {
				n->granted = false;
				healthy_n++;
				continue;
			}
			if (n->blocked) {
				want(f, n, ACT_STAY);
				continue;
			}
			if (!n->granted && n->action == ACT_FETCH && n->have &&
			    n->rep.seq >= n->seq && n->rep.state == OVL_FLEET_STATE_INSTALLED &&
			    strcmp(n->rep.target, r->version) == 0 && restart_ok(f, n)) {
				n->granted = true;
				n->granted_ms = now;
			}
			want(f, n, n->granted ? ACT_RESTART : ACT_FETCH);
		}
		if (healthy_n == inc && inc > 0) {
			if (r->stage + 1 >= r->nstages) {
				r->state = RO_DONE;
				ev(f, BRK_EV_ADMIT, "event=fleet_done version=%s nodes=%u", r->version,
				   r->n_targets);
				rollout_save(f);
			} else if (!r->soaking) {
				r->soaking = true;
				r->soak_start_ms = now;
				rollout_save(f);
			} else if (now - r->soak_start_ms >= r->soak_ms) {
				r->soaking = false;
				r->stage++;
				/* a stage that adds no node is done at once */
				ev(f, BRK_EV_ADMIT, "event=fleet_stage version=%s stage=%s nodes=%u",
				   r->version, r->stage_name[r->stage], r->cum[r->stage]);
				rollout_save(f);
				reconcile(f); /* the new stage's nodes get their word now */
			}
		}
		return;
	}
	/* halted, done, aborted or none: nothing new starts */
	for (size_t i = 0; i < f->n_nodes; i++) {
		struct fnode *n = f->nodes[i];

		if (n->action == ACT_NONE || n->action == ACT_STAY)
			continue;
		if (r->state == RO_HALTED && n->granted && !n->blocked &&
		    now - n->granted_ms < f->window_ms && !healthy(f, n))
			continue; /* it finishes the step it is in */
		if (r->state == RO_DONE && healthy(f, n))
			continue;
		n->granted = false;
		want(f, n, ACT_STAY);
	}
}

void brk_fleet_tick(struct brk_fleet *f)
{
	uint64_t now = now_ms(f);

	if (now < f->next_tick_ms)
		return;
	f->next_tick_ms = now + 250;
	reconcile(f);
}

/* ---- reports ------------------------------------------------------------------------- */

void brk_fleet_report(struct brk_fleet *f, const uint8_t id[OVL_ID_BYTES], const uint8_t *buf,
		      size_t len)
{
	struct ovl_fleet_report rep;
	struct fnode *n;
	char err[256], nfp[OVL_ID_FP_BYTES];
	uint64_t now = now_ms(f);

	memset(&rep, 0, sizeof(rep));
	if (ovl_fleet_report_decode(&rep, buf, len, err, sizeof(err)) < 0) {
		if (!f->badlog_ms || now - f->badlog_ms >= BRK_FLEET_BADLOG_MS) {
			fpr(id, nfp);
			ev(f, BRK_EV_REFUSE, "event=refuse what=fleet_report node=%s suppressed=%llu "
			   "reason=\"%s: ignored\"", nfp, (unsigned long long)f->bad_suppressed, err);
			f->badlog_ms = now ? now : 1;
			f->bad_suppressed = 0;
		} else {
			f->bad_suppressed++;
		}
		return;
	}
	n = node_get(f, id);
	if (!n)
		return;
	n->rep = rep;
	n->have = true;
	n->rep_ms = now;
}

/* ---- admin: requests ----------------------------------------------------------------- */

/* A string field into out: 0, 1 absent, -EINVAL (not a string, too long). */
static int mstr(const msgpack_object *m, const char *key, char *out, size_t cap)
{
	const msgpack_object *o = ovl_fleet_doc_get(m, key);

	if (!o)
		return 1;
	if (o->type != MSGPACK_OBJECT_STR || o->via.str.size >= cap ||
	    memchr(o->via.str.ptr, '\0', o->via.str.size))
		return -EINVAL;
	memcpy(out, o->via.str.ptr, o->via.str.size);
	out[o->via.str.size] = '\0';
	return 0;
}

static int muint(const msgpack_object *m, const char *key, uint64_t *out)
{
	const msgpack_object *o = ovl_fleet_doc_get(m, key);

	if (!o)
		return 1;
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return -EINVAL;
	*out = o->via.u64;
	return 0;
}

static const msgpack_object *mbin(const msgpack_object *m, const char *key)
{
	const msgpack_object *o = ovl_fleet_doc_get(m, key);

	return o && o->type == MSGPACK_OBJECT_BIN ? o : NULL;
}

static void pk_str(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);

	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

static void pk_kstr(msgpack_packer *pk, const char *k, const char *v)
{
	pk_str(pk, k);
	pk_str(pk, v);
}

static void pk_ku(msgpack_packer *pk, const char *k, uint64_t v)
{
	pk_str(pk, k);
	msgpack_pack_uint64(pk, v);
}

static void pk_head(msgpack_packer *pk, size_t nfields, bool ok, const char *error)
{
	msgpack_pack_map(pk, nfields + 3);
	pk_ku(pk, "v", 1);
	pk_str(pk, "ok");
	if (ok)
		msgpack_pack_true(pk);
	else
		msgpack_pack_false(pk);
	pk_kstr(pk, "error", error);
}

struct tgt {
	uint8_t id[OVL_ID_BYTES];
	const char *chassis;
};

static int tgt_cmp(const void *a, const void *c)
{
	const struct tgt *x = a, *y = c;
	int d = strcmp(x->chassis, y->chassis);

	return d ? d : memcmp(x->id, y->id, OVL_ID_BYTES);
}

static int cmd_start(struct brk_fleet *f, const msgpack_object *req, char *err, size_t errlen)
{
	struct rollout nr;
	char version[OVL_FLEET_VERSION_BYTES] = "", board[OVL_FLEET_BOARD_BYTES] = "";
	char stages[128] = "canary,chassis,100%";
	uint64_t max_failed = 0, soak = f->soak_ms, vnum;
	struct tgt *t = NULL;
	size_t nt = 0, total = brk_core_fleet_count(f->b);
	uint32_t canary = 0;
	bool any = false;
	int rc = 0;

	memset(&nr, 0, sizeof(nr));
	if (mstr(req, "version", version, sizeof(version)) != 0 ||
	    ovl_fleet_version_parse(version, &vnum) < 0) {
		snprintf(err, errlen, "start: 'version' must be MAJOR.MINOR.PATCH");
		return -EINVAL;
	}
	if (mstr(req, "board", board, sizeof(board)) < 0 ||
	    mstr(req, "stages", stages, sizeof(stages)) < 0 ||
	    muint(req, "max_failed", &max_failed) < 0 || muint(req, "soak_ms", &soak) < 0 ||
	    max_failed > UINT32_MAX || soak > 30ULL * 24 * 3600 * 1000) {
		snprintf(err, errlen, "start: bad board, stages, max_failed or soak_ms");
		return -EINVAL;
	}
	if (!stages[0])
		snprintf(stages, sizeof(stages), "canary,chassis,100%%");
	if ((rc = stages_parse(stages, &nr, err, errlen)) < 0)
		return rc;
	if (f->ro.state == RO_RUNNING) {
		snprintf(err, errlen, "a rollout of %s is running (stage %s): halt or abort it "
			 "first", f->ro.version, f->ro.stage_name[f->ro.stage]);
		return -EBUSY;
	}
	for (size_t i = 0; i < f->n_rel; i++)
		if (!strcmp(f->rel[i].r.version, version) &&
		    (!board[0] || !strcmp(f->rel[i].r.board, board))) {
			if (f->rel[i].r.expires < brk_core_fleet_unix_s(f->b)) {
				snprintf(err, errlen, "release %s for board %s expired at %llu",
					 version, f->rel[i].r.board,
					 (unsigned long long)f->rel[i].r.expires);
				return -EKEYEXPIRED;
			}
			any = true;
		}
	if (!any) {
		snprintf(err, errlen, "no release %s%s%s was published", version,
			 board[0] ? " for board " : "", board);
		return -ENOENT;
	}
	snprintf(nr.version, sizeof(nr.version), "%s", version);
	snprintf(nr.board, sizeof(nr.board), "%s", board);
	nr.max_failed = (uint32_t)max_failed;
	nr.soak_ms = soak;
	t = calloc(total ? total : 1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	for (size_t i = 0; i < total; i++) {
		struct brk_fleet_node v;
		struct fnode *n;
		const char *nb;

		brk_core_fleet_at(f->b, i, &v);
		n = node_find(f, v.id);
		if (v.state != OVL_MSG_STATE_UP || !fresh(f, n))
			continue; /* only nodes up and reporting take part */
		nb = n->rep.board[0] ? n->rep.board : v.board ? v.board : "";
		if ((board[0] && strcmp(nb, board) != 0) || !release_find(f, version, nb) ||
		    strcmp(n->rep.running, version) == 0)
			continue;
		memcpy(t[nt].id, v.id, OVL_ID_BYTES);
		t[nt].chassis = v.chassis ? v.chassis : "";
		nt++;
	}
	if (!nt) {
		snprintf(err, errlen, "no node to update: no node up and reporting%s%s has a "
			 "release %s and runs another version", board[0] ? " of board " : "",
			 board, version);
		rc = -ENOENT;
		goto out;
	}
	/* the canary: the lowest id; then its chassis; then by chassis and id */
	for (size_t i = 1; i < nt; i++)
		if (memcmp(t[i].id, t[canary].id, OVL_ID_BYTES) < 0)
			canary = (uint32_t)i;
	{
		struct tgt c = t[canary];
		size_t k = 1;

		t[canary] = t[0];
		t[0] = c;
		for (size_t i = 1; i < nt; i++)
			if (!strcmp(t[i].chassis, c.chassis)) {
				struct tgt x = t[i];

				t[i] = t[k];
				t[k++] = x;
			}
		qsort(t + 1, k - 1, sizeof(*t), tgt_cmp);
		qsort(t + k, nt - k, sizeof(*t), tgt_cmp);
		nr.chassis_n = (uint32_t)k;
	}
	nr.targets = calloc(nt, sizeof(*nr.targets));
	if (!nr.targets) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < nt; i++)
		memcpy(nr.targets[i], t[i].id, OVL_ID_BYTES);
	nr.n_targets = (uint32_t)nt;
	stages_count(&nr);
	nr.state = RO_RUNNING;
	nr.started_unix = brk_core_fleet_unix_s(f->b);
	nr.started_ms = now_ms(f);
	/* a halted rollout is replaced: its nodes get the new one's word */
	rollout_clear(&f->ro);
	f->ro = nr;
	memset(&nr, 0, sizeof(nr));
	for (size_t i = 0; i < f->n_nodes; i++) {
		f->nodes[i]->first_seq = 0;
		f->nodes[i]->granted = false;
		f->nodes[i]->blocked = false;
		f->nodes[i]->failed_seq = 0;
	}
	rollout_save(f);
	ev(f, BRK_EV_ADMIT, "event=fleet_start version=%s board=%s stages=%s targets=%zu "
	   "max_failed=%u soak_ms=%llu", version, board[0] ? board : "*", stages, nt,
	   f->ro.max_failed, (unsigned long long)f->ro.soak_ms);
	reconcile(f);
out:
	rollout_clear(&nr);
	free(t);
	return rc;
}

/* ---- admin: documents ------------------------------------------------------------ */

enum { C_PENDING, C_FETCHING, C_INSTALLED, C_REBOOTING, C_HEALTHY, C_FAILED, C_ROLLED_BACK,
       C_COUNT };
static const char *const c_names[C_COUNT] = { "pending", "fetching", "installed", "rebooting",
					      "healthy", "failed", "rolled_back" };

/* A target's state in the rollout, as status shows it. */
static int node_class(struct brk_fleet *f, const struct fnode *n, bool inc)
{
	if (!n)
		return C_PENDING;
	if (n->have && healthy(f, n))
		return C_HEALTHY;
	/* a node that failed in this rollout shows as it failed until a
	 * resume, whatever it reports after it was told to stay (its old
	 * version, healthy again) */
	for (uint32_t i = n->blocked ? f->ro.n_fails : 0; i > f->ro.failed_base; i--)
		if (!memcmp(f->ro.fails[i - 1].id, n->id, OVL_ID_BYTES))
			return f->ro.fails[i - 1].state == OVL_FLEET_STATE_ROLLED_BACK ? C_ROLLED_BACK
										   : C_FAILED;
	if (!n->have)
		return C_PENDING;
	if (n->blocked || (n->first_seq && n->rep.seq >= n->first_seq)) {
		if (n->rep.state == OVL_FLEET_STATE_FAILED)
			return C_FAILED;
		if (n->rep.state == OVL_FLEET_STATE_ROLLED_BACK)
			return C_ROLLED_BACK;
	}
	if (!inc || !n->first_seq || n->rep.seq < n->first_seq)
		return C_PENDING;
	if (n->granted || n->rep.state == OVL_FLEET_STATE_RESTARTING)
		return C_REBOOTING;
	if (n->rep.state == OVL_FLEET_STATE_INSTALLED)
		return C_INSTALLED;
	if (n->rep.state == OVL_FLEET_STATE_FETCHING)
		return C_FETCHING;
	return C_PENDING;
}

static void status_doc(struct brk_fleet *f, msgpack_packer *pk)
{
	struct rollout *r = &f->ro;
	uint32_t counts[C_COUNT] = { 0 }, inc = included(r), nodes_n, fails_n;
	uint64_t now = now_ms(f), elapsed = now - r->started_ms;
	int64_t eta = -1;
	char hex[OVL_ID_HEX_BYTES];

	for (uint32_t i = 0; i < r->n_targets; i++)
		counts[node_class(f, node_find(f, r->targets[i]), i < inc)]++;
	if (r->state == RO_DONE) {
		eta = 0;
	} else if (r->state == RO_RUNNING && counts[C_HEALTHY] && elapsed) {
		uint64_t left = r->n_targets - counts[C_HEALTHY];
		uint64_t per = elapsed / counts[C_HEALTHY];
		unsigned soaks = r->nstages - 1 - r->stage;
		uint64_t soak_left = r->soaking && now - r->soak_start_ms < r->soak_ms
				     ? r->soak_ms - (now - r->soak_start_ms) : 0;

		eta = (int64_t)((left * per + soaks * r->soak_ms + soak_left) / 1000);
	}
	nodes_n = r->n_targets < BRK_FLEET_REPLY_NODES_MAX ? r->n_targets
							  : BRK_FLEET_REPLY_NODES_MAX;
	fails_n = r->n_fails < BRK_FLEET_REPLY_FAILS_MAX ? r->n_fails : BRK_FLEET_REPLY_FAILS_MAX;
	pk_head(pk, 17, true, "");
	pk_kstr(pk, "state", ro_names[r->state]);
	pk_kstr(pk, "version", r->version);
	pk_kstr(pk, "board", r->board);
	pk_kstr(pk, "stages", r->stages);
	pk_kstr(pk, "stage", r->nstages ? r->stage_name[r->stage] : "");
	pk_ku(pk, "stage_index", r->stage);
	pk_ku(pk, "max_failed", r->max_failed);
	pk_ku(pk, "soak_ms", r->soak_ms);
	pk_str(pk, "soaking");
	if (r->soaking)
		msgpack_pack_true(pk);
	else
		msgpack_pack_false(pk);
	pk_kstr(pk, "reason", r->reason);
	pk_ku(pk, "started", r->started_unix);
	pk_ku(pk, "targets", r->n_targets);
	pk_ku(pk, "included", inc);
	pk_str(pk, "counts");
	msgpack_pack_map(pk, C_COUNT);
	for (int i = 0; i < C_COUNT; i++)
		pk_ku(pk, c_names[i], counts[i]);
	pk_str(pk, "eta_s");
	msgpack_pack_int64(pk, eta);
	pk_str(pk, "failures");
	msgpack_pack_array(pk, fails_n);
	for (uint32_t i = r->n_fails - fails_n; i < r->n_fails; i++) {
		const char *sn = ovl_fleet_state_name(r->fails[i].state);

		ovl_nodeid_format(r->fails[i].id, hex);
		msgpack_pack_map(pk, 3);
		pk_kstr(pk, "node", hex);
		pk_kstr(pk, "state", sn ? sn : "?");
		pk_kstr(pk, "reason", r->fails[i].reason);
	}
	pk_str(pk, "nodes");
	msgpack_pack_array(pk, nodes_n);
	for (uint32_t i = 0; i < nodes_n; i++) {
		struct fnode *n = node_find(f, r->targets[i]);
		unsigned st = 0;

		while (st + 1 < r->nstages && i >= r->cum[st])
			st++;
		ovl_nodeid_format(r->targets[i], hex);
		msgpack_pack_map(pk, 6);
		pk_kstr(pk, "node", hex);
		pk_kstr(pk, "stage", r->stage_name[st]);
		pk_kstr(pk, "state", c_names[node_class(f, n, i < inc)]);
		pk_kstr(pk, "running", n && n->have ? n->rep.running : "");
		pk_ku(pk, "done", n && n->have ? n->rep.done : 0);
		pk_kstr(pk, "reason", n && n->have ? n->rep.reason : "");
	}
}

static void versions_doc(struct brk_fleet *f, msgpack_packer *pk)
{
	size_t total = brk_core_fleet_count(f->b);
	size_t nn = total < BRK_FLEET_REPLY_NODES_MAX ? total : BRK_FLEET_REPLY_NODES_MAX;
	char hex[OVL_ID_HEX_BYTES];

	pk_head(pk, 3, true, "");
	pk_ku(pk, "total", total);
	pk_str(pk, "nodes");
	msgpack_pack_array(pk, nn);
	for (size_t i = 0; i < nn; i++) {
		struct brk_fleet_node v;
		struct fnode *n;
		const char *sn;

		brk_core_fleet_at(f->b, i, &v);
		n = node_find(f, v.id);
		ovl_nodeid_format(v.id, hex);
		sn = n && n->have ? ovl_fleet_state_name(n->rep.state) : NULL;
		msgpack_pack_map(pk, 11);
		pk_kstr(pk, "node", hex);
		pk_kstr(pk, "chassis", v.chassis ? v.chassis : "");
		pk_kstr(pk, "board", n && n->have ? n->rep.board : v.board ? v.board : "");
		pk_kstr(pk, "link", ovl_msg_state_name(v.state));
		pk_kstr(pk, "running", n && n->have ? n->rep.running : "");
		pk_kstr(pk, "slot", n && n->have ? n->rep.slot : "");
		pk_kstr(pk, "other", n && n->have ? n->rep.other : "");
		pk_str(pk, "other_good");
		if (n && n->have && n->rep.other_good)
			msgpack_pack_true(pk);
		else
			msgpack_pack_false(pk);
		pk_kstr(pk, "state", sn ? sn : "");
		pk_kstr(pk, "target", n && n->have ? n->rep.target : "");
		pk_ku(pk, "degraded", n && n->have ? n->rep.degraded : 0);
	}
	pk_str(pk, "releases");
	msgpack_pack_array(pk, f->n_rel);
	for (size_t i = 0; i < f->n_rel; i++) {
		const struct release *r = &f->rel[i];

		ovl_hex_encode(r->r.id, 32, hex);
		msgpack_pack_map(pk, 6);
		pk_kstr(pk, "version", r->r.version);
		pk_kstr(pk, "board", r->r.board);
		pk_kstr(pk, "id", hex);
		pk_ku(pk, "size", r->r.size);
		pk_ku(pk, "expires", r->r.expires);
		pk_kstr(pk, "slice", r->slice);
	}
}

int brk_fleet_admin(struct brk_fleet *f, const uint8_t *req, size_t len, uint8_t **reply,
		    size_t *reply_len, char *err, size_t errlen)
{
	msgpack_unpacked up;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	const msgpack_object *o;
	char cmd[16] = "", e[512] = "";
	uint64_t v = 0;
	bool replaced = false;
	int rc = 0;

	*reply = NULL;
	*reply_len = 0;
	msgpack_unpacked_init(&up);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	if (!req || !len || ovl_mp_check(req, len, &ovl_mp_limits_default, NULL, err, errlen) < 0 ||
	    msgpack_unpack_next(&up, (const char *)req, len, NULL) != MSGPACK_UNPACK_SUCCESS ||
	    up.data.type != MSGPACK_OBJECT_MAP || muint(&up.data, "v", &v) != 0 || v != 1 ||
	    mstr(&up.data, "cmd", cmd, sizeof(cmd)) != 0) {
		if (!err[0] || !req || !len)
			snprintf(err, errlen, "fleet: the request is not a map {v:1, cmd, ...}");
		rc = -EBADMSG;
		goto out;
	}
	o = &up.data;
	if (!strcmp(cmd, "publish")) {
		const msgpack_object *m = mbin(o, "release"), *c = mbin(o, "cert");
		char slice[OVL_MSG_NAME_SIZE];

		snprintf(slice, sizeof(slice), "%s", f->slice);
		if (!m || !c || mstr(o, "slice", slice, sizeof(slice)) < 0) {
			snprintf(e, sizeof(e), "publish: needs 'release' and 'cert' (bin) and "
				 "'slice' (str)");
		} else if (f->ro.state == RO_RUNNING && !f->ro.unreadable) {
			struct ovl_fleet_release tmp;
			char e2[256];
			struct ovl_trust trust;

			memset(&trust, 0, sizeof(trust));
			memset(&tmp, 0, sizeof(tmp));
			memcpy(trust.ca_pk, f->site->ca_pk, OVL_ID_BYTES);
			if (ovl_fleet_release_verify(&tmp, (const uint8_t *)m->via.bin.ptr,
						     m->via.bin.size, (const uint8_t *)c->via.bin.ptr,
						     c->via.bin.size, &trust,
						     brk_core_fleet_unix_s(f->b), NULL, NULL, e2,
						     sizeof(e2)) == 0 &&
			    !strcmp(tmp.version, f->ro.version) &&
			    release_find(f, tmp.version, tmp.board) &&
			    memcmp(release_find(f, tmp.version, tmp.board)->r.id, tmp.id, 32))
				snprintf(e, sizeof(e), "publish: a rollout of %s is running: halt it "
					 "before replacing its release", tmp.version);
			ovl_fleet_release_free(&tmp);
		}
		if (!e[0] && release_add(f, (const uint8_t *)m->via.bin.ptr, m->via.bin.size,
					 (const uint8_t *)c->via.bin.ptr, c->via.bin.size, slice,
					 true, &replaced, e, sizeof(e)) == 0) {
			struct release *r = &f->rel[0];
			char hex[65];

			for (size_t i = 0; i < f->n_rel; i++)
				if (!memcmp(f->rel[i].meta, m->via.bin.ptr, m->via.bin.size) &&
				    f->rel[i].meta_len == m->via.bin.size)
					r = &f->rel[i];
			ovl_hex_encode(r->r.id, 32, hex);
			ev(f, BRK_EV_ADMIT, "event=fleet_publish version=%s board=%s id=%s size=%llu "
			   "slice=%s replaced=%d", r->r.version, r->r.board, hex,
			   (unsigned long long)r->r.size, r->slice, replaced);
			pk_head(&pk, 4, true, "");
			pk_kstr(&pk, "version", r->r.version);
			pk_kstr(&pk, "board", r->r.board);
			pk_kstr(&pk, "id", hex);
			pk_str(&pk, "replaced");
			if (replaced)
				msgpack_pack_true(&pk);
			else
				msgpack_pack_false(&pk);
			goto done;
		}
		if (e[0] && strncmp(e, "publish:", 8) != 0) {
			char e2[512];

			snprintf(e2, sizeof(e2), "publish refused: %s", e);
			snprintf(e, sizeof(e), "%s", e2);
		}
	} else if (!strcmp(cmd, "start")) {
		cmd_start(f, o, e, sizeof(e));
		if (!e[0]) {
			status_doc(f, &pk);
			goto done;
		}
	} else if (!strcmp(cmd, "status")) {
		reconcile(f);
		status_doc(f, &pk);
		goto done;
	} else if (!strcmp(cmd, "halt")) {
		if (f->ro.state != RO_RUNNING) {
			snprintf(e, sizeof(e), "no rollout is running (it is %s)", ro_names[f->ro.state]);
		} else {
			halt(f, "halted by the operator");
			reconcile(f);
			status_doc(f, &pk);
			goto done;
		}
	} else if (!strcmp(cmd, "resume")) {
		if (f->ro.state != RO_HALTED) {
			snprintf(e, sizeof(e), "no rollout is halted (it is %s)", ro_names[f->ro.state]);
		} else if (f->ro.unreadable) {
			snprintf(e, sizeof(e), "the rollout's state file was unreadable: start a new "
				 "rollout or abort");
		} else {
			f->ro.state = RO_RUNNING;
			f->ro.failed_base = f->ro.n_fails;
			f->ro.reason[0] = '\0';
			for (size_t i = 0; i < f->n_nodes; i++) {
				f->nodes[i]->blocked = false;
				if (f->nodes[i]->action == ACT_STAY)
					f->nodes[i]->action = ACT_NONE; /* re-sign below */
			}
			ev(f, BRK_EV_ADMIT, "event=fleet_resume version=%s stage=%s", f->ro.version,
			   f->ro.stage_name[f->ro.stage]);
			rollout_save(f);
			/* nodes told to stay get a fresh fetch (with the release as
			 * published now: a fixed image of the same version) */
			for (size_t i = 0; i < f->n_nodes; i++)
				if (f->nodes[i]->action == ACT_NONE && f->nodes[i]->blob) {
					free(f->nodes[i]->blob);
					f->nodes[i]->blob = NULL;
				}
			reconcile(f);
			status_doc(f, &pk);
			goto done;
		}
	} else if (!strcmp(cmd, "abort")) {
		if (f->ro.state == RO_NONE) {
			snprintf(e, sizeof(e), "there is no rollout");
		} else {
			bool unreadable = f->ro.unreadable;

			f->ro.unreadable = false;
			if (unreadable) {
				rollout_clear(&f->ro);
				f->ro.state = RO_ABORTED;
				snprintf(f->ro.reason, sizeof(f->ro.reason), "aborted by the operator");
			} else {
				f->ro.state = RO_ABORTED;
				f->ro.soaking = false;
				snprintf(f->ro.reason, sizeof(f->ro.reason), "aborted by the operator");
			}
			ev(f, BRK_EV_ADMIT, "event=fleet_abort version=%s", f->ro.version);
			rollout_save(f);
			reconcile(f);
			status_doc(f, &pk);
			goto done;
		}
	} else if (!strcmp(cmd, "versions")) {
		versions_doc(f, &pk);
		goto done;
	} else {
		snprintf(e, sizeof(e), "fleet: unknown cmd '%s' (publish, start, status, halt, "
			 "resume, abort, versions)", cmd);
	}
	if (!e[0])
		snprintf(e, sizeof(e), "refused");
	ev(f, BRK_EV_REFUSE, "event=refuse_admin op=fleet cmd=%s reason=\"%s\"", cmd, e);
	pk_head(&pk, 0, false, e);
done:
	if (sb.size > OVL_MSG_FLEET_MAX_BYTES) {
		snprintf(err, errlen, "fleet: the reply would exceed %d bytes", OVL_MSG_FLEET_MAX_BYTES);
		rc = -E2BIG;
		goto out;
	}
	*reply = (uint8_t *)sb.data;
	*reply_len = sb.size;
	sb.data = NULL;
	sb.size = 0;
out:
	msgpack_unpacked_destroy(&up);
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

/* ---- life ---------------------------------------------------------------------------- */

int brk_fleet_new(struct brk_fleet **out, brk_t *b, const struct brk_site *site,
		  const struct brk_fleet_cfg *cfg, char *err, size_t errlen)
{
	struct brk_fleet *f = calloc(1, sizeof(*f));
	char path[BRK_PATH_MAX + 32];
	uint8_t *buf = NULL;
	size_t len = 0;
	int rc = 0;

	if (!f)
		return -ENOMEM;
	f->b = b;
	f->site = site;
	snprintf(f->slice, sizeof(f->slice), "%s", cfg->slice && *cfg->slice ? cfg->slice : "system");
	f->soak_ms = cfg->soak_ms ? cfg->soak_ms : 60000;
	f->valid_ms = cfg->valid_ms ? cfg->valid_ms : 60000;
	f->window_ms = cfg->restart_window_ms ? cfg->restart_window_ms
					      : BRK_FLEET_RESTART_WINDOW_MS;
	if (cfg->dir && *cfg->dir) {
		snprintf(f->dir, sizeof(f->dir), "%s", cfg->dir);
		snprintf(path, sizeof(path), "%s/releases", f->dir);
		if ((mkdir(f->dir, 0755) < 0 && errno != EEXIST) ||
		    (mkdir(path, 0755) < 0 && errno != EEXIST)) {
			rc = -errno;
			snprintf(err, errlen, "cannot create '%s': %s", path, strerror(errno));
			goto out;
		}
		snprintf(path, sizeof(path), "%s/seq", f->dir);
		rc = read_file(path, 64, &buf, &len);
		if (rc == 0) {
			char *end = NULL;

			f->seq = strtoull((char *)buf, &end, 10);
			if (end == (char *)buf || (*end && *end != '\n')) {
				snprintf(err, errlen, "'%s' does not hold a number", path);
				rc = -EBADMSG;
				goto out;
			}
			f->seq_reserved = f->seq;
		} else if (rc != -ENOENT) {
			snprintf(err, errlen, "cannot read '%s': %s", path, strerror(-rc));
			goto out;
		}
		rc = 0;
		releases_load(f);
		rollout_load(f);
	}
out:
	free(buf);
	if (rc < 0)
		brk_fleet_destroy(&f);
	*out = f;
	return rc;
}

void brk_fleet_destroy(struct brk_fleet **fp)
{
	struct brk_fleet *f = fp ? *fp : NULL;

	if (!f)
		return;
	for (size_t i = 0; i < f->n_nodes; i++) {
		free(f->nodes[i]->blob);
		free(f->nodes[i]);
	}
	free(f->nodes);
	free(f->ht);
	for (size_t i = 0; i < f->n_rel; i++)
		release_free(&f->rel[i]);
	free(f->rel);
	rollout_clear(&f->ro);
	free(f);
	*fp = NULL;
}
