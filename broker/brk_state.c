/*
 * brk_state: the files that hold what a broker core keeps across restarts
 * (slice definitions and epochs, uses of enrolment tokens, revocations), read
 * into and written from plain values (broker.h). The core never calls these
 * itself: brk_files hands them to it through the io seam.
 *
 * Every file is text, one entry a line, '#' starts a comment, and is
 * rewritten whole and crash-safely (ovl_file_write_atomic).
 */
#include "broker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATE_PATH_BYTES (BRK_PATH_MAX + 16)

static int state_path(char *out, const char *dir, const char *name, char *err, size_t errlen)
{
	if (snprintf(out, STATE_PATH_BYTES, "%s/%s", dir, name) >= STATE_PATH_BYTES) {
		snprintf(err, errlen, "path '%s/%s' is too long", dir, name);
		return -ENAMETOOLONG;
	}
	return 0;
}

/* Open path for reading: 0 with *f, 1 when it does not exist, or -errno with err. */
static int state_open(FILE **f, const char *path, char *err, size_t errlen)
{
	int rc;

	*f = fopen(path, "r");
	if (*f)
		return 0;
	if (errno == ENOENT)
		return 1;
	rc = -errno;
	snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
	return rc;
}

/* ---- slices ------------------------------------------------------------------- */

int brk_state_slices_save(const char *dir, const struct brk_slice_def *defs, size_t n,
			  char *err, size_t errlen)
{
	char path[STATE_PATH_BYTES], owner[2 * OVL_ID_BYTES + 1], *text = NULL;
	size_t len = 0, cap = 256 + n * 400u;
	int rc;

	if ((rc = state_path(path, dir, "slices", err, errlen)) < 0)
		return rc;
	text = malloc(cap);
	if (!text) {
		snprintf(err, errlen, "cannot write '%s': out of memory", path);
		return -ENOMEM;
	}
	len += (size_t)snprintf(text, cap, "# shelf-broker slices v1: name replicas epoch owner "
				"selector [encrypt]\n");
	for (size_t i = 0; i < n; i++) {
		const struct brk_slice_def *d = &defs[i];

		ovl_hex_encode(d->owner, OVL_ID_BYTES, owner);
		len += (size_t)snprintf(text + len, cap - len, "%s %u %llu %s %s%s\n", d->name,
					d->replicas, (unsigned long long)d->epoch, owner,
					d->selector, d->encrypt ? " encrypt" : "");
	}
	rc = ovl_file_write_atomic(path, text, len, 0600, err, errlen);
	free(text);
	return rc;
}

/* What the core would refuse to create from d, as err; 0 when it is valid. */
static int slice_def_check(const struct brk_slice_def *d, const struct brk_slice_def *seen,
			   size_t n_seen, char *err, size_t errlen)
{
	if (ovl_slice_name_check(d->name, "slice name", err, errlen) < 0 ||
	    brk_selector_check(d->selector, err, errlen) < 0)
		return -EINVAL;
	if (d->replicas < 1 || d->replicas > OVL_MSG_REPLICAS_MAX)
		return -EINVAL;
	if (n_seen >= BRK_SLICES_MAX)
		return -ENOSPC;
	for (size_t i = 0; i < n_seen; i++)
		if (strcmp(seen[i].name, d->name) == 0)
			return -EEXIST;
	return 0;
}

int brk_state_slices_load(const char *dir, struct brk_slice_def **defs, size_t *n, char *err,
			  size_t errlen)
{
	char path[STATE_PATH_BYTES], line[512], e2[200];
	struct brk_slice_def *v = NULL;
	size_t count = 0, cap = 0;
	unsigned lineno = 0;
	FILE *f = NULL;
	int rc;

	*defs = NULL;
	*n = 0;
	if ((rc = state_path(path, dir, "slices", err, errlen)) < 0)
		return rc;
	if ((rc = state_open(&f, path, err, errlen)) != 0)
		return rc < 0 ? rc : 0;
	while (fgets(line, sizeof(line), f)) {
		char owner[65], flag[16] = "";
		unsigned long long epoch;
		struct brk_slice_def d;
		int nf;

		lineno++;
		if (line[0] == '#' || line[0] == '\n')
			continue;
		memset(&d, 0, sizeof(d));
		/* the sixth word, "encrypt", is optional: older files have five */
		nf = sscanf(line, "%63s %u %llu %64s %127s %15s", d.name, &d.replicas, &epoch, owner,
			    d.selector, flag);
		if (nf < 5 || (nf == 6 && strcmp(flag, "encrypt") != 0) ||
		    ovl_hex_decode(owner, d.owner, OVL_ID_BYTES) < 0 ||
		    slice_def_check(&d, v, count, e2, sizeof(e2)) < 0) {
			snprintf(err, errlen, "'%s' line %u is not a valid slice definition", path,
				 lineno);
			rc = -EBADMSG;
			goto out;
		}
		d.epoch = epoch;
		d.encrypt = nf == 6;
		if (count == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			struct brk_slice_def *g = realloc(v, ncap * sizeof(*g));

			if (!g) {
				snprintf(err, errlen, "cannot load '%s': out of memory", path);
				rc = -ENOMEM;
				goto out;
			}
			v = g;
			cap = ncap;
		}
		v[count++] = d;
	}
	*defs = v;
	*n = count;
	v = NULL;
out:
	fclose(f);
	free(v);
	return rc;
}

/* ---- uses of enrolment tokens ---------------------------------------------------- */

int brk_state_uses_save(const char *dir, const struct brk_token_use *uses, size_t n, char *err,
			size_t errlen)
{
	char path[STATE_PATH_BYTES], *text = NULL;
	size_t len = 0;
	int rc;

	if ((rc = state_path(path, dir, "tokens.used", err, errlen)) < 0)
		return rc;
	text = malloc(n * 80 + 1);
	if (!text) {
		snprintf(err, errlen, "cannot write '%s': out of memory", path);
		return -ENOMEM;
	}
	text[0] = 0;
	for (size_t i = 0; i < n; i++) {
		ovl_hex_encode(uses[i].hash, sizeof(uses[i].hash), text + len);
		len += 2 * sizeof(uses[i].hash);
		len += (size_t)sprintf(text + len, " %u\n", uses[i].count);
	}
	rc = ovl_file_write_atomic(path, text, len, 0600, err, errlen);
	free(text);
	return rc;
}

int brk_state_uses_load(const char *dir, struct brk_token_use **uses, size_t *n, char *err,
			size_t errlen)
{
	char path[STATE_PATH_BYTES], line[160];
	struct brk_token_use *v = NULL;
	size_t count = 0;
	FILE *f = NULL;
	int rc;

	*uses = NULL;
	*n = 0;
	if ((rc = state_path(path, dir, "tokens.used", err, errlen)) < 0)
		return rc;
	if ((rc = state_open(&f, path, err, errlen)) != 0)
		return rc < 0 ? rc : 0;
	while (fgets(line, sizeof(line), f)) {
		char hex[65];
		unsigned c;
		uint8_t h[32];
		struct brk_token_use *g = NULL;

		/* a line that does not parse is skipped: it can only cost a token a use */
		if (sscanf(line, "%64s %u", hex, &c) != 2 || ovl_hex_decode(hex, h, sizeof(h)) < 0)
			continue;
		g = realloc(v, (count + 1) * sizeof(*g));
		if (!g) {
			snprintf(err, errlen, "cannot load '%s': out of memory", path);
			rc = -ENOMEM;
			break;
		}
		v = g;
		memcpy(v[count].hash, h, sizeof(h));
		v[count++].count = c;
	}
	fclose(f);
	/* what was read before an error is still handed over */
	*uses = v;
	*n = count;
	return rc;
}

/* ---- revocations ------------------------------------------------------------------- */

static void revocations_release(struct brk_revocations *r)
{
	free(r->ids);
	free(r->keys);
	free(r->serials);
	memset(r, 0, sizeof(*r));
}

int brk_state_revoked_save(const char *dir, const struct brk_revocations *r, char *err,
			   size_t errlen)
{
	char path[STATE_PATH_BYTES], *text = NULL;
	size_t cap = 128 + r->n_ids * 140 + r->n_serials * 32, len = 0;
	int rc;

	if ((rc = state_path(path, dir, "revoked", err, errlen)) < 0)
		return rc;
	text = malloc(cap);
	if (!text) {
		snprintf(err, errlen, "cannot write '%s': out of memory", path);
		return -ENOMEM;
	}
	len += (size_t)snprintf(text, cap, "# shelf-broker revocations v1\ncrl_version %llu\n",
				(unsigned long long)r->crl_version);
	for (size_t i = 0; i < r->n_ids; i++) {
		char id[2 * OVL_ID_BYTES + 1], key[2 * OVL_KEY_BYTES + 1] = "-";

		ovl_hex_encode(r->ids[i], OVL_ID_BYTES, id);
		if (r->keys && !ovl_mem_is_zero(r->keys[i], OVL_KEY_BYTES))
			ovl_hex_encode(r->keys[i], OVL_KEY_BYTES, key);
		len += (size_t)snprintf(text + len, cap - len, "node %s %s\n", id, key);
	}
	for (size_t i = 0; i < r->n_serials; i++)
		len += (size_t)snprintf(text + len, cap - len, "serial %llu\n",
					(unsigned long long)r->serials[i]);
	rc = ovl_file_write_atomic(path, text, len, 0600, err, errlen);
	free(text);
	return rc;
}

int brk_state_revoked_load(const char *dir, struct brk_revocations *r, char *err,
			   size_t errlen)
{
	char path[STATE_PATH_BYTES], line[200];
	unsigned lineno = 0;
	FILE *f = NULL;
	int rc;

	memset(r, 0, sizeof(*r));
	if ((rc = state_path(path, dir, "revoked", err, errlen)) < 0)
		return rc;
	if ((rc = state_open(&f, path, err, errlen)) != 0)
		return rc < 0 ? rc : 0;
	while (rc == 0 && fgets(line, sizeof(line), f)) {
		char a[80], c[80];
		unsigned long long v;
		void *g = NULL;

		lineno++;
		if (line[0] == '#' || line[0] == '\n')
			continue;
		if (sscanf(line, "crl_version %llu", &v) == 1) {
			r->crl_version = v;
		} else if (sscanf(line, "node %79s %79s", a, c) == 2 && strlen(a) == 64 &&
			   (strcmp(c, "-") == 0 || strlen(c) == 64)) {
			g = realloc(r->ids, (r->n_ids + 1) * OVL_ID_BYTES);
			if (g)
				r->ids = g;
			g = g ? realloc(r->keys, (r->n_ids + 1) * OVL_KEY_BYTES) : NULL;
			if (!g) {
				rc = -ENOMEM;
				break;
			}
			r->keys = g;
			memset(r->keys[r->n_ids], 0, OVL_KEY_BYTES);
			if (ovl_hex_decode(a, r->ids[r->n_ids], OVL_ID_BYTES) < 0 ||
			    (c[0] != '-' && ovl_hex_decode(c, r->keys[r->n_ids], OVL_KEY_BYTES) < 0))
				rc = -EBADMSG;
			else
				r->n_ids++;
		} else if (sscanf(line, "serial %llu", &v) == 1) {
			g = realloc(r->serials, (r->n_serials + 1) * sizeof(uint64_t));
			if (!g) {
				rc = -ENOMEM;
				break;
			}
			r->serials = g;
			r->serials[r->n_serials++] = v;
		} else {
			rc = -EBADMSG;
		}
	}
	fclose(f);
	if (rc == -EBADMSG)
		snprintf(err, errlen, "'%s' line %u is not a valid revocation entry", path, lineno);
	else if (rc < 0)
		snprintf(err, errlen, "cannot load '%s': %s", path, strerror(-rc));
	if (rc < 0)
		revocations_release(r);
	return rc;
}

/* ---- membership ------------------------------------------------------------------- */

#define MEMBERS_HEADER "# shelf-broker members v1\n"

void brk_membership_release(struct brk_membership *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n_nodes; i++)
		free((void *)m->nodes[i].cert);
	for (size_t i = 0; i < m->n_slices; i++) {
		free(m->slices[i].members);
		free(m->slices[i].left);
	}
	free(m->nodes);
	free(m->slices);
	memset(m, 0, sizeof(*m));
}

/* A growing text buffer; on allocation failure it stays failed (ok false). */
struct text {
	char *p;
	size_t len, cap;
	bool ok;
};

static void text_reserve(struct text *t, size_t more)
{
	char *g = NULL;
	size_t cap = t->cap ? t->cap : 4096;

	if (!t->ok || t->len + more + 1 <= t->cap)
		return;
	while (cap < t->len + more + 1)
		cap *= 2;
	g = realloc(t->p, cap);
	if (!g) {
		t->ok = false;
		return;
	}
	t->p = g;
	t->cap = cap;
}

static void text_add(struct text *t, const char *s)
{
	size_t n = strlen(s);

	text_reserve(t, n);
	if (!t->ok)
		return;
	memcpy(t->p + t->len, s, n + 1);
	t->len += n;
}

/* " " and n bytes in hex, or " -" when n is 0. */
static void text_hex(struct text *t, const void *p, size_t n)
{
	text_reserve(t, 2 * n + 2);
	if (!t->ok)
		return;
	t->p[t->len++] = ' ';
	if (!n) {
		t->p[t->len++] = '-';
	} else {
		ovl_hex_encode(p, n, t->p + t->len);
		t->len += 2 * n;
	}
	t->p[t->len] = 0;
}

static void text_str(struct text *t, const char *s)
{
	text_hex(t, s, strlen(s));
}

static const char *state_word(uint8_t st)
{
	return st == OVL_MSG_STATE_UP ? "up" : st == OVL_MSG_STATE_OUT ? "out" : "down";
}

int brk_state_members_save(const char *dir, const struct brk_membership *m, char *err,
			   size_t errlen)
{
	char path[STATE_PATH_BYTES], line[256];
	struct text t = { NULL, 0, 0, true };
	int rc;

	if ((rc = state_path(path, dir, "members", err, errlen)) < 0)
		return rc;
	text_add(&t, MEMBERS_HEADER);
	for (size_t i = 0; i < m->n_nodes; i++) {
		const struct brk_node_rec *n = &m->nodes[i];

		text_add(&t, "node");
		text_hex(&t, n->id, OVL_ID_BYTES);
		text_hex(&t, n->curve_key, OVL_KEY_BYTES);
		snprintf(line, sizeof(line), " %u %s %llu %llu", n->port, state_word(n->state),
			 (unsigned long long)n->capacity, (unsigned long long)n->serial);
		text_add(&t, line);
		text_str(&t, n->board);
		text_str(&t, n->version);
		text_str(&t, n->domain.site);
		text_str(&t, n->domain.chassis);
		text_str(&t, n->domain.slot);
		text_str(&t, n->group);
		text_hex(&t, n->cert, n->cert_len);
		text_add(&t, "\n");
	}
	for (size_t i = 0; i < m->n_slices; i++) {
		const struct brk_slice_members *s = &m->slices[i];

		snprintf(line, sizeof(line), "slice %s %llu\n", s->name,
			 (unsigned long long)s->epoch);
		text_add(&t, line);
		for (size_t k = 0; k < s->n_members; k++) {
			text_add(&t, "member");
			text_hex(&t, s->members[k].id, OVL_ID_BYTES);
			text_hex(&t, s->members[k].addr, OVL_MSG_ADDR_BYTES);
			text_add(&t, "\n");
		}
		for (size_t k = 0; k < s->n_left; k++) {
			const char *why = ovl_msg_left_reason_name(s->left[k].reason);

			text_add(&t, "left");
			text_hex(&t, s->left[k].id, OVL_ID_BYTES);
			snprintf(line, sizeof(line), " %llu %s\n",
				 (unsigned long long)s->left[k].epoch, why ? why : "unknown");
			text_add(&t, line);
		}
	}
	if (!t.ok) {
		snprintf(err, errlen, "cannot write '%s': out of memory", path);
		free(t.p);
		return -ENOMEM;
	}
	rc = ovl_file_write_atomic(path, t.p, t.len, 0600, err, errlen);
	free(t.p);
	return rc;
}

/* The next space-separated word of *s (NUL-terminated in place), or NULL. */
static char *word(char **s)
{
	char *w = *s;

	while (*w == ' ')
		w++;
	if (!*w)
		return NULL;
	*s = w + strcspn(w, " ");
	if (**s)
		*(*s)++ = 0;
	return w;
}

/* Exactly n bytes of hex. */
static bool hex_exact(const char *w, void *out, size_t n)
{
	return w && strlen(w) == 2 * n && ovl_hex_decode(w, out, n) == 0;
}

/* A hex-encoded string ("-": empty) that fits cap with its NUL and holds no NUL. */
static bool hex_str(const char *w, char *out, size_t cap)
{
	size_t n = w ? strlen(w) : 0;

	if (w && strcmp(w, "-") == 0) {
		out[0] = 0;
		return true;
	}
	if (!w || !n || (n & 1) || n / 2 >= cap || ovl_hex_decode(w, out, n / 2) < 0)
		return false;
	out[n / 2] = 0;
	return strlen(out) == n / 2;
}

static bool u64_word(const char *w, uint64_t *v, uint64_t max)
{
	char *end = NULL;
	unsigned long long x;

	if (!w || *w < '0' || *w > '9')
		return false;
	errno = 0;
	x = strtoull(w, &end, 10);
	if (errno || *end || x > max)
		return false;
	*v = x;
	return true;
}

static int node_line(char *s, struct brk_node_rec *n)
{
	char *w = NULL;
	uint64_t v = 0;
	uint8_t *cert = NULL;
	size_t len;

	memset(n, 0, sizeof(*n));
	if (!hex_exact(word(&s), n->id, OVL_ID_BYTES) ||
	    !hex_exact(word(&s), n->curve_key, OVL_KEY_BYTES) ||
	    !u64_word(word(&s), &v, 65535) || v == 0)
		return -EBADMSG;
	n->port = (uint16_t)v;
	w = word(&s);
	if (!w)
		return -EBADMSG;
	if (strcmp(w, "up") == 0)
		n->state = OVL_MSG_STATE_UP;
	else if (strcmp(w, "down") == 0)
		n->state = OVL_MSG_STATE_DOWN;
	else if (strcmp(w, "out") == 0)
		n->state = OVL_MSG_STATE_OUT;
	else
		return -EBADMSG;
	if (!u64_word(word(&s), &n->capacity, UINT64_MAX) ||
	    !u64_word(word(&s), &n->serial, UINT64_MAX) ||
	    !hex_str(word(&s), n->board, sizeof(n->board)) ||
	    !hex_str(word(&s), n->version, sizeof(n->version)) ||
	    !hex_str(word(&s), n->domain.site, sizeof(n->domain.site)) ||
	    !hex_str(word(&s), n->domain.chassis, sizeof(n->domain.chassis)) ||
	    !hex_str(word(&s), n->domain.slot, sizeof(n->domain.slot)) ||
	    !hex_str(word(&s), n->group, sizeof(n->group)))
		return -EBADMSG;
	w = word(&s);
	if (!w || word(&s))
		return -EBADMSG;
	len = strlen(w) / 2;
	if (strcmp(w, "-") != 0) {
		if (len > OVL_CERT_MAX_BYTES || !(cert = malloc(len ? len : 1)))
			return len > OVL_CERT_MAX_BYTES ? -EBADMSG : -ENOMEM;
		if (!hex_exact(w, cert, len)) {
			free(cert);
			return -EBADMSG;
		}
		n->cert = cert;
		n->cert_len = len;
	}
	return 0;
}

/* Append one zeroed element of `size` to *arr (count *n); NULL when out of memory. */
static void *grow(void *arrp, size_t *n, size_t size)
{
	void **arr = arrp;
	uint8_t *g = realloc(*arr, (*n + 1) * size);

	if (!g)
		return NULL;
	*arr = g;
	memset(g + *n * size, 0, size);
	return g + (*n)++ * size;
}

static bool node_known(const struct brk_membership *m, const uint8_t *id)
{
	for (size_t i = 0; i < m->n_nodes; i++)
		if (memcmp(m->nodes[i].id, id, OVL_ID_BYTES) == 0)
			return true;
	return false;
}

static int members_line(char *line, struct brk_membership *m)
{
	char *s = line, *w = word(&s);
	struct brk_slice_members *sl = m->n_slices ? &m->slices[m->n_slices - 1] : NULL;

	if (strcmp(w, "node") == 0) {
		struct brk_node_rec n, *slot = NULL;
		int rc = node_line(s, &n);

		if (rc < 0)
			return rc;
		if (node_known(m, n.id) || !(slot = grow(&m->nodes, &m->n_nodes, sizeof(n)))) {
			free((void *)n.cert);
			return slot ? -EBADMSG : -ENOMEM;
		}
		*slot = n;
		return 0;
	}
	if (strcmp(w, "slice") == 0) {
		struct brk_slice_members *ns = NULL;
		const char *name = word(&s);
		uint64_t epoch = 0;
		char e2[160];

		if (!name || ovl_slice_name_check(name, "slice name", e2, sizeof(e2)) < 0 ||
		    !u64_word(word(&s), &epoch, UINT64_MAX) || word(&s))
			return -EBADMSG;
		if (!(ns = grow(&m->slices, &m->n_slices, sizeof(*ns))))
			return -ENOMEM;
		snprintf(ns->name, sizeof(ns->name), "%s", name);
		ns->epoch = epoch;
		return 0;
	}
	if (strcmp(w, "member") == 0) {
		struct brk_member_rec r, *slot = NULL;

		if (!sl || !hex_exact(word(&s), r.id, OVL_ID_BYTES) ||
		    !hex_exact(word(&s), r.addr, OVL_MSG_ADDR_BYTES) || word(&s) ||
		    !node_known(m, r.id))
			return -EBADMSG;
		if (!(slot = grow(&sl->members, &sl->n_members, sizeof(r))))
			return -ENOMEM;
		*slot = r;
		return 0;
	}
	if (strcmp(w, "left") == 0) {
		struct ovl_msg_left l, *slot = NULL;
		const char *why = NULL;

		memset(&l, 0, sizeof(l));
		if (!sl || !hex_exact(word(&s), l.id, OVL_ID_BYTES) ||
		    !u64_word(word(&s), &l.epoch, UINT64_MAX) || !(why = word(&s)) || word(&s))
			return -EBADMSG;
		for (int r = OVL_MSG_LEFT_EXPIRED; r <= OVL_MSG_LEFT_DELETED; r++)
			if (strcmp(why, ovl_msg_left_reason_name((enum ovl_msg_left_reason)r)) == 0)
				l.reason = (enum ovl_msg_left_reason)r;
		if (!(slot = grow(&sl->left, &sl->n_left, sizeof(l))))
			return -ENOMEM;
		*slot = l;
		return 0;
	}
	return -EBADMSG;
}

int brk_state_members_load(const char *dir, struct brk_membership *m, char *err,
			   size_t errlen)
{
	char path[STATE_PATH_BYTES], *line = NULL;
	size_t cap = 0;
	ssize_t got;
	unsigned lineno = 0;
	FILE *f = NULL;
	int rc;

	memset(m, 0, sizeof(*m));
	if ((rc = state_path(path, dir, "members", err, errlen)) < 0)
		return rc;
	if ((rc = state_open(&f, path, err, errlen)) != 0)
		return rc < 0 ? rc : 0;
	while (rc == 0 && (got = getline(&line, &cap, f)) >= 0) {
		lineno++;
		if (got && line[got - 1] == '\n')
			line[--got] = 0;
		if (line[0] == '#' || line[0] == 0)
			continue;
		rc = members_line(line, m);
	}
	if (rc == 0 && ferror(f))
		rc = -EIO;
	fclose(f);
	free(line);
	if (rc == -EBADMSG)
		snprintf(err, errlen, "'%s' line %u is not a valid membership entry", path, lineno);
	else if (rc < 0)
		snprintf(err, errlen, "cannot load '%s': %s", path, strerror(-rc));
	if (rc < 0)
		brk_membership_release(m);
	return rc;
}
