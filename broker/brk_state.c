/*
 * brk_state: the files that hold what a broker core keeps across restarts
 * (slice definitions and epochs, uses of enrolment tokens, revocations), read
 * into and written from plain values (broker.h). The core never calls these
 * itself: brk_files hands them to it through the io seam.
 *
 * Every file is text, one entry a line, '#' starts a comment, and is
 * rewritten whole and crash-safely (ovl_file_write_atomic). The membership
 * has its own journal: brk_members.c.
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
				"selector [encrypt] [min_write=W] [same_domain] [chunk_size=B]\n");
	for (size_t i = 0; i < n; i++) {
		const struct brk_slice_def *d = &defs[i];
		char mw[32] = "", cs[32] = "";

		/* only below replicas: a default slice's line is as older brokers wrote it */
		if (d->min_write && d->min_write < d->replicas)
			snprintf(mw, sizeof(mw), " min_write=%u", d->min_write);
		if (d->chunk_size && d->chunk_size != OVL_MSG_CHUNK_SIZE_DEFAULT)
			snprintf(cs, sizeof(cs), " chunk_size=%u", d->chunk_size);
		ovl_hex_encode(d->owner, OVL_ID_BYTES, owner);
		len += (size_t)snprintf(text + len, cap - len, "%s %u %llu %s %s%s%s%s%s\n", d->name,
					d->replicas, (unsigned long long)d->epoch, owner,
					d->selector, d->encrypt ? " encrypt" : "", mw,
					d->allow_same_domain ? " same_domain" : "", cs);
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
	if (d->replicas < 1 || d->replicas > OVL_MSG_REPLICAS_MAX || d->min_write > d->replicas ||
	    ovl_msg_chunk_size_check(d->chunk_size, err, errlen) < 0)
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
		char owner[65], flag[4][24];
		unsigned long long epoch;
		struct brk_slice_def d;
		int nf;
		bool bad = false;

		lineno++;
		if (line[0] == '#' || line[0] == '\n')
			continue;
		memset(&d, 0, sizeof(d));
		/* words after the fifth are optional, in any order, each at most
		 * once: "encrypt", "min_write=W", "same_domain" (older files have
		 * none, or "encrypt") */
		nf = sscanf(line, "%63s %u %llu %64s %127s %23s %23s %23s %23s", d.name, &d.replicas,
			    &epoch, owner, d.selector, flag[0], flag[1], flag[2], flag[3]);
		for (int k = 0; k + 5 < nf; k++) {
			unsigned w;
			char end;

			if (strcmp(flag[k], "encrypt") == 0 && !d.encrypt)
				d.encrypt = true;
			else if (strcmp(flag[k], "same_domain") == 0 && !d.allow_same_domain)
				d.allow_same_domain = true;
			else if (sscanf(flag[k], "min_write=%u%c", &w, &end) == 1 && w >= 1 &&
				 !d.min_write && strspn(flag[k] + 10, "0123456789") ==
				 strlen(flag[k] + 10))
				d.min_write = w;
			else if (sscanf(flag[k], "chunk_size=%u%c", &w, &end) == 1 && w >= 1 &&
				 !d.chunk_size && strspn(flag[k] + 11, "0123456789") ==
				 strlen(flag[k] + 11))
				d.chunk_size = w;
			else
				bad = true;
		}
		if (nf < 5 || bad || ovl_hex_decode(owner, d.owner, OVL_ID_BYTES) < 0 ||
		    slice_def_check(&d, v, count, e2, sizeof(e2)) < 0) {
			snprintf(err, errlen, "'%s' line %u is not a valid slice definition", path,
				 lineno);
			rc = -EBADMSG;
			goto out;
		}
		d.epoch = epoch;
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
