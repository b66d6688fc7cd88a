/*
 * node_ctl: the node's control-plane client. See ctl.h.
 */
#include "ctl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>
#include <sodium.h>
#include <zmq.h>

#define CTL_REGISTER_DOMAIN "shelf-register-v1" /* as BRK_REGISTER_DOMAIN */
#define CTL_PATH_MAX 512
#define CTL_FILE_MAX (CTL_PATH_MAX + 96)

struct def {
	char name[OVL_MSG_NAME_SIZE];
	uint32_t replicas;
	char selector[OVL_MSG_SELECTOR_SIZE];
	uint8_t owner[OVL_ID_BYTES];
	bool encrypt;
	uint32_t min_write_replicas; /* 0: replicas */
	uint32_t chunk_size;         /* 0: the default */
};

struct bconn {
	ovl_link_client_t *link;
	bool registered;
	unsigned hb_outstanding;
	uint64_t hb_unsent_since_ms; /* first heartbeat that could not be sent; 0: none */
	uint64_t hb_seq;
	uint64_t next_reg_ms, next_hb_ms;
	uint32_t hb_ms;
	uint64_t heard_ms;           /* monotonic ms of its last REGISTER-OK or HEARTBEAT-OK */
	uint8_t sign_pk[OVL_ID_BYTES]; /* from its verified certificate; zero until then */
	bool have_key;
};

struct node_ctl {
	struct node_ctl_cfg cfg;
	char state_dir[CTL_PATH_MAX];
	struct bconn b[NODE_CTL_BROKERS_MAX];
	struct ovl_time *time;
	uint8_t *buf;
	uint8_t *cert;                   /* our certificate */
	size_t cert_len;
	uint64_t cert_nb, cert_na;       /* its validity */
	uint64_t next_renew_ms;
	uint64_t refresh_ms;             /* last node_ctl_refresh() that sent early */
	uint8_t *fleet;                  /* the report a heartbeat carries (OVL_MSG_FLEET_MAX_BYTES) */
	uint8_t *bcert[NODE_CTL_BROKERS_MAX]; /* broker certificates known (any broker) */
	size_t bcert_len[NODE_CTL_BROKERS_MAX];
	unsigned n_bcert;
	struct ovl_crl *crl;
	struct def defs[NODE_CTL_SLICES_MAX];
	unsigned n_defs;
	struct node_ctl_map maps[NODE_CTL_SLICES_MAX];
	unsigned n_maps;
	char event[512];
	msgpack_sbuffer sb;
};

static void note(node_ctl_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(node_ctl_t *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->event, sizeof(c->event), fmt, ap);
	va_end(ap);
}

uint64_t node_ctl_now(node_ctl_t *c)
{
	uint64_t now = 0;

	ovl_time_now(c->time, &now, NULL, NULL, 0);
	return now;
}

/* ---- files -------------------------------------------------------------------- */

/* Crash-safe replace; the node's state files are private to it. */
static int file_write(const char *path, const void *buf, size_t len)
{
	char err[256];
	int rc = ovl_file_write_atomic(path, buf, len, 0600, err, sizeof(err));

	if (rc < 0)
		ovl_warn("%s", err);
	return rc;
}

static int file_read(const char *path, uint8_t **out, size_t *len, size_t max)
{
	struct stat st;
	uint8_t *p = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || (size_t)st.st_size > max) {
		close(fd);
		return -E2BIG;
	}
	p = malloc((size_t)st.st_size + 1);
	if (!p) {
		close(fd);
		return -ENOMEM;
	}
	if (read(fd, p, (size_t)st.st_size) != st.st_size)
		rc = -EIO;
	close(fd);
	if (rc < 0) {
		free(p);
		return rc;
	}
	p[st.st_size] = 0;
	*out = p;
	*len = (size_t)st.st_size;
	return 0;
}

static void path_of(const node_ctl_t *c, char *out, size_t len, const char *name)
{
	if (snprintf(out, len, "%s/%s", c->state_dir, name) >= (int)len)
		out[0] = 0;
}

static void save_cert(node_ctl_t *c)
{
	char p[CTL_FILE_MAX];

	path_of(c, p, sizeof(p), "cert");
	if (file_write(p, c->cert, c->cert_len) < 0)
		note(c, "cannot cache certificate in '%s'", p);
}

static void save_brokers(node_ctl_t *c)
{
	uint8_t buf[NODE_CTL_BROKERS_MAX * (OVL_CERT_MAX_BYTES + 2)];
	size_t len = 0;
	char p[CTL_FILE_MAX];

	for (unsigned i = 0; i < c->n_bcert; i++) {
		buf[len++] = (uint8_t)(c->bcert_len[i] >> 8);
		buf[len++] = (uint8_t)c->bcert_len[i];
		memcpy(buf + len, c->bcert[i], c->bcert_len[i]);
		len += c->bcert_len[i];
	}
	path_of(c, p, sizeof(p), "brokers");
	file_write(p, buf, len);
}

static void save_crl(node_ctl_t *c)
{
	char p[CTL_FILE_MAX];
	size_t len = 0;
	const uint8_t *e = c->crl ? ovl_crl_encoded(c->crl, &len) : NULL;

	path_of(c, p, sizeof(p), "crl");
	if (e)
		file_write(p, e, len);
}

static void save_defs(node_ctl_t *c)
{
	char p[CTL_FILE_MAX], text[NODE_CTL_SLICES_MAX * 300], owner[65];
	size_t len = 0;

	for (unsigned i = 0; i < c->n_defs; i++) {
		const struct def *d = &c->defs[i];

		for (int k = 0; k < OVL_ID_BYTES; k++)
			sprintf(owner + 2 * k, "%02x", d->owner[k]);
		len += (size_t)snprintf(text + len, sizeof(text) - len, "%s %u %s %s%s", d->name,
					d->replicas, owner, d->selector[0] ? d->selector : "-",
					d->encrypt ? " encrypt" : "");
		if (d->min_write_replicas)
			len += (size_t)snprintf(text + len, sizeof(text) - len, " min_write=%u",
						d->min_write_replicas);
		if (d->chunk_size)
			len += (size_t)snprintf(text + len, sizeof(text) - len, " chunk_size=%u",
						d->chunk_size);
		len += (size_t)snprintf(text + len, sizeof(text) - len, "\n");
	}
	path_of(c, p, sizeof(p), "slices");
	file_write(p, text, len);
}

/* The map as the broker signed it (its members in any order). */
static void map_view(const struct node_ctl_map *m, struct ovl_msg *msg)
{
	ovl_msg_init(msg, OVL_MSG_MAP);
	snprintf(msg->u.map.slice, sizeof(msg->u.map.slice), "%s", m->name);
	msg->u.map.epoch = m->epoch;
	msg->u.map.replicas = m->replicas;
	msg->u.map.members = m->members;
	msg->u.map.n_members = m->n_members;
	msg->u.map.encrypt = m->encrypt;
	msg->u.map.min_write_replicas = m->min_write_replicas;
	msg->u.map.chunk_size = m->chunk_size;
	memcpy(msg->u.map.sig, m->sig, sizeof(msg->u.map.sig));
	msg->u.map.ts = (struct ovl_msg_bin){ m->ts, m->ts_len };
	msg->u.map.left = m->left;
	msg->u.map.n_left = m->n_left;
}

static void save_map(node_ctl_t *c, const struct node_ctl_map *m)
{
	struct ovl_msg msg;
	char p[CTL_FILE_MAX], name[OVL_MSG_NAME_SIZE + 8], err[256];

	map_view(m, &msg);
	msgpack_sbuffer_clear(&c->sb);
	if (ovl_msg_encode(&msg, &c->sb, err, sizeof(err)) < 0) {
		note(c, "cannot cache map '%s': %s", m->name, err);
		return;
	}
	snprintf(name, sizeof(name), "map-%s", m->name);
	path_of(c, p, sizeof(p), name);
	if (file_write(p, c->sb.data, c->sb.size) < 0)
		note(c, "cannot cache map in '%s'", p);
}

/* ---- maps ------------------------------------------------------------------------ */

static void map_clear(struct node_ctl_map *m)
{
	for (uint32_t i = 0; i < m->n_members; i++)
		free((void *)m->members[i].cert.ptr);
	free(m->members);
	free(m->left);
	memset(m, 0, sizeof(*m));
}

static struct node_ctl_map *map_find(node_ctl_t *c, const char *name)
{
	for (unsigned i = 0; i < c->n_maps; i++)
		if (strcmp(c->maps[i].name, name) == 0)
			return &c->maps[i];
	return NULL;
}

static int member_copy(struct ovl_msg_member *dst, const struct ovl_msg_member *src)
{
	uint8_t *cert = NULL;

	if (src->cert.len) {
		cert = malloc(src->cert.len);
		if (!cert)
			return -ENOMEM;
		memcpy(cert, src->cert.ptr, src->cert.len);
	}
	*dst = *src;
	dst->cert = (struct ovl_msg_bin){ cert, src->cert.len };
	return 0;
}

/* Check a member's address against its key (section 3.5). */
static bool member_addr_ok(node_ctl_t *c, const char *slice, const struct ovl_msg_member *mm)
{
	struct ovl_slice s;
	struct in6_addr a;
	char err[128];

	if (ovl_slice_init(&s, c->cfg.domain.site, slice, err, sizeof(err)) < 0)
		return false;
	memcpy(&a, mm->addr, sizeof(a));
	return ovl_slice_addr_verify(&s, mm->id, &a, OVL_SLICE_COUNTER_MAX_DEFAULT) >= 0;
}

/* Replace (or add) the map of mm->slice with mm. */
static int map_set(node_ctl_t *c, const struct ovl_msg_map *mm)
{
	const char *name = mm->slice;
	uint64_t epoch = mm->epoch;
	const struct ovl_msg_member *members = mm->members;
	uint32_t n = mm->n_members;
	struct node_ctl_map nm, *m = map_find(c, name);

	for (uint32_t i = 0; i < n; i++)
		if (!member_addr_ok(c, name, &members[i])) {
			note(c, "map '%s' epoch %llu refused: member %u has an address that is "
			     "not its own", name, (unsigned long long)epoch, i);
			return -EKEYREJECTED;
		}
	memset(&nm, 0, sizeof(nm));
	snprintf(nm.name, sizeof(nm.name), "%s", name);
	nm.epoch = epoch;
	nm.replicas = mm->replicas;
	nm.min_write_replicas = mm->min_write_replicas;
	nm.chunk_size = mm->chunk_size;
	nm.encrypt = mm->encrypt;
	memcpy(nm.sig, mm->sig, sizeof(nm.sig));
	if (mm->ts.len && mm->ts.len <= sizeof(nm.ts)) {
		memcpy(nm.ts, mm->ts.ptr, mm->ts.len);
		nm.ts_len = mm->ts.len;
	}
	if (n) {
		nm.members = calloc(n, sizeof(*nm.members));
		if (!nm.members)
			return -ENOMEM;
	}
	if (mm->n_left) {
		nm.left = malloc(mm->n_left * sizeof(*nm.left));
		if (!nm.left) {
			map_clear(&nm);
			return -ENOMEM;
		}
		memcpy(nm.left, mm->left, mm->n_left * sizeof(*nm.left));
		nm.n_left = mm->n_left;
	}
	for (uint32_t i = 0; i < n; i++) {
		if (member_copy(&nm.members[i], &members[i]) < 0) {
			map_clear(&nm);
			return -ENOMEM;
		}
		nm.n_members++;
	}
	if (!m) {
		if (c->n_maps >= NODE_CTL_SLICES_MAX) {
			map_clear(&nm);
			return -ENOSPC;
		}
		m = &c->maps[c->n_maps++];
	} else {
		map_clear(m);
	}
	*m = nm;
	save_map(c, m);
	return 1;
}

/* Forget the removal record of id (as the broker does when it rejoins). */
static void left_drop(struct node_ctl_map *m, const uint8_t *id)
{
	for (uint32_t i = 0; i < m->n_left; i++)
		if (memcmp(m->left[i].id, id, OVL_ID_BYTES) == 0) {
			m->left[i] = m->left[--m->n_left];
			return;
		}
}

static int send_msg(node_ctl_t *c, unsigned bi, const struct ovl_msg *m);

/*
 * Hand the map held of a slice, with the broker's signature, to broker bi
 * (map_report, docs/PROTOCOL.md 6.5): a broker that lost its state learns
 * from it the members it lacks. The report must fit the broker's 1 MiB
 * message limit (bytes and objects); it is checked with the decoder the
 * broker runs before it goes. 0, -ENOENT (no signature: nothing the broker
 * can trust), -E2BIG (too large to report), another -errno with err (it
 * does not encode), or the send's error.
 */
static int report_map(node_ctl_t *c, unsigned bi, const struct node_ctl_map *m, char *err,
		      size_t errlen)
{
	struct ovl_msg msg, check;
	int rc;

	if (ovl_mem_is_zero(m->sig, sizeof(m->sig)))
		return -ENOENT;
	map_view(m, &msg);
	msg.type = OVL_MSG_MAP_REPORT;
	msgpack_sbuffer_clear(&c->sb);
	rc = ovl_msg_encode(&msg, &c->sb, err, errlen);
	if (rc == 0) {
		rc = ovl_msg_decode(c->sb.data, c->sb.size, &check, err, errlen);
		ovl_msg_release(&check);
	}
	if (rc < 0)
		return rc;
	return ovl_link_client_send(c->b[bi].link, c->sb.data, c->sb.size, 0);
}

/*
 * The succession rule (ovl_map.h) refused a map or delta of m's slice at
 * `epoch` from broker bi: keep m, say so once per epoch (the broker's
 * heartbeats repeat it) and do not ask for that epoch again; report the
 * map held to that broker, once per refused epoch, so that it learns the
 * members it lacks and sends a map this node takes.
 */
static void succession_refused(node_ctl_t *c, unsigned bi, struct node_ctl_map *m,
			       uint64_t epoch, const char *why)
{
	char told[320] = "", err[256] = "";
	int rc = 0;

	if (m->refused_epoch != epoch) {
		rc = report_map(c, bi, m, err, sizeof(err));
		if (rc == 0)
			snprintf(told, sizeof(told), "; reported it to the broker");
		else if (rc == -E2BIG)
			snprintf(told, sizeof(told), "; it is too large to report to the broker (%s): "
				 "restore the broker's state directory", err);
		else if (rc == -ENOENT)
			snprintf(told, sizeof(told), "; it carries no broker signature to report");
		else
			snprintf(told, sizeof(told), "; cannot report it to the broker: %s",
				 err[0] ? err : strerror(-rc));
		ovl_warn("control plane: %s; keeping the map held (epoch %llu)%s", why,
			 (unsigned long long)m->epoch, told);
	}
	m->refused_epoch = epoch;
	note(c, "map '%s' epoch %llu refused: %s", m->name, (unsigned long long)epoch, why);
}

static int map_apply_delta(node_ctl_t *c, struct node_ctl_map *m,
			   const struct ovl_msg_map_delta *d)
{
	for (uint32_t i = 0; i < d->n_members; i++)
		if (!member_addr_ok(c, m->name, &d->members[i])) {
			note(c, "delta '%s' epoch %llu refused: a member's address is not its own",
			     m->name, (unsigned long long)d->epoch);
			return -EKEYREJECTED;
		}
	for (uint32_t k = 0; k < d->n_left; k++) {
		struct ovl_msg_left *g = NULL;

		left_drop(m, d->left[k].id);
		g = realloc(m->left, (m->n_left + 1) * sizeof(*g));
		if (!g)
			return -ENOMEM;
		m->left = g;
		m->left[m->n_left++] = d->left[k];
	}
	for (uint32_t k = 0; k < d->n_members; k++)
		left_drop(m, d->members[k].id); /* a member again */
	for (uint32_t r = 0; r < d->n_removed; r++)
		for (uint32_t i = 0; i < m->n_members; i++)
			if (memcmp(m->members[i].id, d->removed[r], OVL_ID_BYTES) == 0) {
				free((void *)m->members[i].cert.ptr);
				m->members[i] = m->members[--m->n_members];
				break;
			}
	for (uint32_t k = 0; k < d->n_members; k++) {
		struct ovl_msg_member cp;
		uint32_t i;

		if (member_copy(&cp, &d->members[k]) < 0)
			return -ENOMEM;
		for (i = 0; i < m->n_members; i++)
			if (memcmp(m->members[i].id, cp.id, OVL_ID_BYTES) == 0)
				break;
		if (i < m->n_members) {
			free((void *)m->members[i].cert.ptr);
			m->members[i] = cp;
			continue;
		}
		{
			struct ovl_msg_member *g = realloc(m->members,
							   (m->n_members + 1) * sizeof(*g));

			if (!g) {
				free((void *)cp.cert.ptr);
				return -ENOMEM;
			}
			m->members = g;
		}
		m->members[m->n_members++] = cp;
	}
	if (d->replicas)
		m->replicas = d->replicas;
	m->epoch = d->epoch;
	m->encrypt = d->encrypt;
	memcpy(m->sig, d->sig, sizeof(m->sig));
	if (d->ts.len && d->ts.len <= sizeof(m->ts)) {
		memcpy(m->ts, d->ts.ptr, d->ts.len);
		m->ts_len = d->ts.len;
	}
	save_map(c, m);
	return 1;
}


/* ---- cache loading ------------------------------------------------------------------ */

static int bcert_add(node_ctl_t *c, const uint8_t *buf, size_t len)
{
	uint8_t *cp = NULL;

	for (unsigned i = 0; i < c->n_bcert; i++)
		if (c->bcert_len[i] == len && memcmp(c->bcert[i], buf, len) == 0)
			return 0;
	cp = malloc(len);
	if (!cp)
		return -ENOMEM;
	memcpy(cp, buf, len);
	if (c->n_bcert == NODE_CTL_BROKERS_MAX) {
		free(c->bcert[0]);
		memmove(&c->bcert[0], &c->bcert[1], (NODE_CTL_BROKERS_MAX - 1) * sizeof(c->bcert[0]));
		memmove(&c->bcert_len[0], &c->bcert_len[1],
			(NODE_CTL_BROKERS_MAX - 1) * sizeof(c->bcert_len[0]));
		c->n_bcert--;
	}
	c->bcert[c->n_bcert] = cp;
	c->bcert_len[c->n_bcert++] = len;
	return 1;
}

static void crl_offer(node_ctl_t *c, const uint8_t *buf, size_t len)
{
	char err[256];

	if (!len)
		return;
	for (unsigned i = 0; i < c->n_bcert; i++) {
		struct ovl_cert bc;

		if (ovl_cert_decode(&bc, c->bcert[i], c->bcert_len[i], err, sizeof(err)) < 0)
			continue;
		if (c->crl && memcmp(ovl_crl_issuer_pk(c->crl), bc.sign_pk, OVL_ID_BYTES) != 0)
			continue;
		if (ovl_crl_update(&c->crl, buf, len, bc.sign_pk, err, sizeof(err)) == 0) {
			save_crl(c);
			return;
		}
	}
}

static void load_cache(node_ctl_t *c)
{
	char p[CTL_FILE_MAX], err[256];
	uint8_t *buf = NULL;
	size_t len = 0;
	DIR *d = NULL;
	struct dirent *e;

	path_of(c, p, sizeof(p), "brokers");
	if (file_read(p, &buf, &len, sizeof(c->bcert) * OVL_CERT_MAX_BYTES) == 0) {
		for (size_t off = 0; off + 2 <= len;) {
			size_t n = ((size_t)buf[off] << 8) | buf[off + 1];

			if (off + 2 + n > len || n > OVL_CERT_MAX_BYTES)
				break;
			bcert_add(c, buf + off + 2, n);
			off += 2 + n;
		}
		free(buf);
		buf = NULL;
	}
	path_of(c, p, sizeof(p), "cert");
	if (file_read(p, &buf, &len, OVL_CERT_MAX_BYTES) == 0) {
		struct ovl_cert nc;

		if (ovl_cert_decode(&nc, buf, len, err, sizeof(err)) == 0) {
			c->cert = buf;
			c->cert_len = len;
			c->cert_nb = nc.not_before;
			c->cert_na = nc.not_after;
			buf = NULL;
		}
		free(buf);
		buf = NULL;
	}
	path_of(c, p, sizeof(p), "crl");
	if (file_read(p, &buf, &len, OVL_CRL_MAX_BYTES) == 0) {
		crl_offer(c, buf, len);
		free(buf);
		buf = NULL;
	}
	path_of(c, p, sizeof(p), "slices");
	if (file_read(p, &buf, &len, 1 << 20) == 0) {
		char *save = NULL;

		for (char *l = strtok_r((char *)buf, "\n", &save); l && c->n_defs < NODE_CTL_SLICES_MAX;
		     l = strtok_r(NULL, "\n", &save)) {
			struct def *df = &c->defs[c->n_defs];
			char owner[65], sel[OVL_MSG_SELECTOR_SIZE], fa[24] = "", fb[24] = "", fc[24] = "";
			const char *fl[3] = { fa, fb, fc };
			unsigned w = 0;

			memset(df, 0, sizeof(*df));
			/* four words, then optional ones in any order: "encrypt",
			 * "min_write=W" (W below replicas), "chunk_size=B" */
			if (sscanf(l, "%63s %u %64s %127s %23s %23s %23s", df->name, &df->replicas,
				   owner, sel, fa, fb, fc) < 4)
				continue;
			for (int k = 0; k < 3; k++) {
				if (strcmp(fl[k], "encrypt") == 0)
					df->encrypt = true;
				else if (sscanf(fl[k], "min_write=%u", &w) == 1 && w >= 1 &&
					 w <= df->replicas)
					df->min_write_replicas = w;
				else if (sscanf(fl[k], "chunk_size=%u", &w) == 1 &&
					 ovl_msg_chunk_size_check(w, NULL, 0) == 0)
					df->chunk_size = w;
			}
			for (int k = 0; k < OVL_ID_BYTES; k++) {
				unsigned v = 0;

				sscanf(owner + 2 * k, "%2x", &v);
				df->owner[k] = (uint8_t)v;
			}
			if (strcmp(sel, "-") != 0)
				snprintf(df->selector, sizeof(df->selector), "%s", sel);
			c->n_defs++;
		}
		free(buf);
		buf = NULL;
	}
	d = opendir(c->state_dir);
	while (d && (e = readdir(d))) {
		struct ovl_msg m;

		if (strncmp(e->d_name, "map-", 4) != 0 || strstr(e->d_name, ".tmp"))
			continue;
		path_of(c, p, sizeof(p), e->d_name);
		if (file_read(p, &buf, &len, NODE_CTL_RECV_MAX_BYTES) < 0)
			continue;
		if (ovl_msg_decode(buf, len, &m, err, sizeof(err)) == 0) {
			if (m.type == OVL_MSG_MAP)
				map_set(c, &m.u.map);
			ovl_msg_release(&m);
		}
		free(buf);
		buf = NULL;
	}
	if (d)
		closedir(d);
}

/* ---- sending ------------------------------------------------------------------------ */

static int send_msg(node_ctl_t *c, unsigned bi, const struct ovl_msg *m)
{
	char err[256];
	int rc;

	msgpack_sbuffer_clear(&c->sb);
	rc = ovl_msg_encode(m, &c->sb, err, sizeof(err));
	if (rc < 0) {
		note(c, "cannot encode %s: %s", ovl_msg_type_name(m->type), err);
		return rc;
	}
	return ovl_link_client_send(c->b[bi].link, c->sb.data, c->sb.size, 0);
}

static int send_register(node_ctl_t *c, unsigned bi)
{
	struct ovl_msg m;
	struct ovl_msg_register *r = &m.u.reg;
	uint8_t pop[sizeof(CTL_REGISTER_DOMAIN) + 64];
	struct ovl_msg_slice refs[NODE_CTL_SLICES_MAX];

	ovl_msg_init(&m, OVL_MSG_REGISTER);
	memcpy(r->node_id, c->cfg.id->sign_pk, OVL_ID_BYTES);
	memcpy(r->curve_key, c->cfg.id->curve_pk, OVL_KEY_BYTES);
	snprintf(r->board, sizeof(r->board), "%s", c->cfg.board);
	snprintf(r->version, sizeof(r->version), "%s", NODE_CTL_VERSION);
	r->capacity = c->cfg.capacity;
	r->domain = c->cfg.domain;
	r->port = c->cfg.port;
	snprintf(r->token, sizeof(r->token), "%s", c->cfg.token);
	snprintf(r->group, sizeof(r->group), "%s", c->cfg.group);
	memcpy(pop, CTL_REGISTER_DOMAIN, sizeof(CTL_REGISTER_DOMAIN));
	memcpy(pop + sizeof(CTL_REGISTER_DOMAIN), r->node_id, 32);
	memcpy(pop + sizeof(CTL_REGISTER_DOMAIN) + 32, r->curve_key, 32);
	crypto_sign_detached(r->sig, NULL, pop, sizeof(pop), c->cfg.id->sign_sk);
	if (c->cert && node_ctl_now(c) < c->cert_na) {
		r->cert = (struct ovl_msg_bin){ c->cert, c->cert_len };
		/* the broker certificate that issued it: the one whose key id matches */
		for (unsigned i = 0; i < c->n_bcert; i++) {
			struct ovl_cert nc, bc;
			uint8_t kid[OVL_KEYID_BYTES];
			char err[128];

			if (ovl_cert_decode(&nc, c->cert, c->cert_len, err, sizeof(err)) < 0 ||
			    ovl_cert_decode(&bc, c->bcert[i], c->bcert_len[i], err, sizeof(err)) < 0)
				continue;
			ovl_keyid_compute(bc.sign_pk, kid);
			if (memcmp(kid, nc.issuer, sizeof(kid)) == 0)
				r->broker_cert = (struct ovl_msg_bin){ c->bcert[i], c->bcert_len[i] };
		}
	}
	for (unsigned i = 0; i < c->n_defs; i++) {
		const struct node_ctl_map *mp = map_find(c, c->defs[i].name);

		memset(&refs[i], 0, sizeof(refs[i]));
		snprintf(refs[i].name, sizeof(refs[i].name), "%s", c->defs[i].name);
		refs[i].epoch = mp ? mp->epoch : 0;
		refs[i].replicas = c->defs[i].replicas;
		refs[i].encrypt = c->defs[i].encrypt;
		refs[i].min_write_replicas = c->defs[i].min_write_replicas;
		refs[i].chunk_size = c->defs[i].chunk_size;
		snprintf(refs[i].selector, sizeof(refs[i].selector), "%s", c->defs[i].selector);
		memcpy(refs[i].owner, c->defs[i].owner, OVL_ID_BYTES);
	}
	r->slices = c->n_defs ? refs : NULL;
	r->n_slices = c->n_defs;
	return send_msg(c, bi, &m);
}

static void send_map_get(node_ctl_t *c, unsigned bi, const char *slice, uint64_t held)
{
	struct ovl_msg m;

	ovl_msg_init(&m, OVL_MSG_MAP_GET);
	snprintf(m.u.map_get.slice, sizeof(m.u.map_get.slice), "%s", slice);
	m.u.map_get.epoch = held;
	send_msg(c, bi, &m);
}

/* ---- receiving ---------------------------------------------------------------------- */

/* Verify a broker's timestamp and feed trusted time. False: drop the message. */
static bool ts_ok(node_ctl_t *c, unsigned bi, struct ovl_msg_bin ts)
{
	char err[256];

	if (!c->b[bi].have_key)
		return false;
	if (ovl_time_add_token(c->time, ts.ptr, ts.len, c->b[bi].sign_pk, NULL, 0, err,
			       sizeof(err)) < 0 && !strstr(err, "earlier")) {
		/* an older token than the one held is fine; a forged one is not */
		if (ovl_timestamp_verify(ts.ptr, ts.len, c->b[bi].sign_pk, NULL, 0,
					 &(uint64_t){ 0 }, err, sizeof(err)) < 0) {
			note(c, "broker %u: timestamp refused: %s", bi, err);
			return false;
		}
	}
	return true;
}

static const struct def *def_find(const node_ctl_t *c, const char *name)
{
	for (unsigned i = 0; i < c->n_defs; i++)
		if (strcmp(c->defs[i].name, name) == 0)
			return &c->defs[i];
	return NULL;
}

/*
 * Several brokers: only a slice's owner issues its epochs (docs/PROTOCOL.md
 * 6.6), so maps and deltas are taken from the owner alone. Before the
 * definition is known, any broker's map is taken.
 */
static bool from_owner(const node_ctl_t *c, unsigned bi, const char *slice)
{
	static const uint8_t zero[OVL_ID_BYTES];
	const struct def *d = def_find(c, slice);

	if (!d || memcmp(d->owner, zero, OVL_ID_BYTES) == 0)
		return true;
	return c->b[bi].have_key && memcmp(d->owner, c->b[bi].sign_pk, OVL_ID_BYTES) == 0;
}

/* Forget the map of a slice (its owner changed): the new owner's map replaces it. */
static void map_drop(node_ctl_t *c, const char *name)
{
	struct node_ctl_map *m = map_find(c, name);
	char p[CTL_FILE_MAX], file[OVL_MSG_NAME_SIZE + 8];

	if (!m)
		return;
	map_clear(m);
	*m = c->maps[--c->n_maps];
	memset(&c->maps[c->n_maps], 0, sizeof(c->maps[c->n_maps]));
	snprintf(file, sizeof(file), "map-%s", name);
	path_of(c, p, sizeof(p), file);
	unlink(p);
}

static void def_set(node_ctl_t *c, const struct ovl_msg_slice *s)
{
	static const uint8_t zero[OVL_ID_BYTES];
	struct def *d = NULL;

	for (unsigned i = 0; i < c->n_defs; i++)
		if (strcmp(c->defs[i].name, s->name) == 0)
			d = &c->defs[i];
	if (d && memcmp(d->owner, zero, OVL_ID_BYTES) != 0 &&
	    memcmp(s->owner, zero, OVL_ID_BYTES) != 0 &&
	    memcmp(d->owner, s->owner, OVL_ID_BYTES) != 0) {
		/* two brokers claim the slice (brokers that do not list each other as
		 * peers): every node keeps the lower key, so all follow the same one */
		char a[OVL_ID_FP_BYTES], b[OVL_ID_FP_BYTES];

		ovl_nodeid_fingerprint(d->owner, a);
		ovl_nodeid_fingerprint(s->owner, b);
		note(c, "slice '%s' claimed by brokers %s and %s: following %s", s->name, a, b,
		     memcmp(s->owner, d->owner, OVL_ID_BYTES) < 0 ? b : a);
		if (memcmp(s->owner, d->owner, OVL_ID_BYTES) > 0)
			return;
		map_drop(c, s->name);
	}
	if (!d) {
		if (c->n_defs >= NODE_CTL_SLICES_MAX)
			return;
		d = &c->defs[c->n_defs++];
	}
	memset(d, 0, sizeof(*d));
	snprintf(d->name, sizeof(d->name), "%s", s->name);
	d->replicas = s->replicas;
	d->encrypt = s->encrypt;
	d->min_write_replicas = s->min_write_replicas;
	d->chunk_size = s->chunk_size;
	snprintf(d->selector, sizeof(d->selector), "%s", s->selector);
	memcpy(d->owner, s->owner, OVL_ID_BYTES);
}

/*
 * A full map from the slice's owner carries its definition (1.4): a node
 * that joined the slice after it registered learns it here, and hands it
 * to a broker that lost its state in its next register (PROTOCOL.md 6.5).
 */
static void def_learn(node_ctl_t *c, unsigned bi, const struct ovl_msg_map *mp)
{
	const struct def *d = def_find(c, mp->slice);
	struct ovl_msg_slice ref;

	if (!mp->selector[0] || !c->b[bi].have_key ||
	    memcmp(mp->owner, c->b[bi].sign_pk, OVL_ID_BYTES) != 0)
		return;
	if (d && strcmp(d->selector, mp->selector) == 0 &&
	    memcmp(d->owner, mp->owner, OVL_ID_BYTES) == 0 && d->replicas == mp->replicas &&
	    d->encrypt == mp->encrypt && d->min_write_replicas == mp->min_write_replicas &&
	    d->chunk_size == mp->chunk_size)
		return;
	memset(&ref, 0, sizeof(ref));
	snprintf(ref.name, sizeof(ref.name), "%s", mp->slice);
	snprintf(ref.selector, sizeof(ref.selector), "%s", mp->selector);
	memcpy(ref.owner, mp->owner, OVL_ID_BYTES);
	ref.replicas = mp->replicas;
	ref.encrypt = mp->encrypt;
	ref.min_write_replicas = mp->min_write_replicas;
	ref.chunk_size = mp->chunk_size;
	def_set(c, &ref);
	save_defs(c);
}

static int on_register_ok(node_ctl_t *c, unsigned bi, const struct ovl_msg_register_ok *r)
{
	struct ovl_cert bc, nc;
	char err[256];
	uint64_t now = node_ctl_now(c);
	int rc;

	/* the broker certificate: checked against the CA at its own not_before
	 * first, so a board whose clock reads 1970 can bootstrap time from it */
	rc = ovl_cert_verify(&bc, r->broker_cert.ptr, r->broker_cert.len, c->cfg.ca_pk,
			     now, err, sizeof(err));
	if (rc == -EKEYEXPIRED && ovl_cert_decode(&bc, r->broker_cert.ptr, r->broker_cert.len, err,
						  sizeof(err)) == 0)
		rc = ovl_cert_verify(&bc, r->broker_cert.ptr, r->broker_cert.len, c->cfg.ca_pk,
				     bc.not_before, err, sizeof(err));
	if (rc < 0 || bc.role != OVL_ROLE_BROKER) {
		note(c, "broker %u: broker certificate refused: %s", bi,
		     rc < 0 ? err : "role is not broker");
		return 0;
	}
	memcpy(c->b[bi].sign_pk, bc.sign_pk, OVL_ID_BYTES);
	c->b[bi].have_key = true;
	if (!ts_ok(c, bi, r->ts))
		return 0;
	now = node_ctl_now(c);
	rc = ovl_cert_verify(&nc, r->cert.ptr, r->cert.len, bc.sign_pk, now, err, sizeof(err));
	if (rc < 0 || memcmp(nc.node_id, c->cfg.id->sign_pk, OVL_ID_BYTES) != 0 ||
	    memcmp(nc.curve_pk, c->cfg.id->curve_pk, OVL_ID_CURVE_BYTES) != 0) {
		note(c, "broker %u: our certificate refused: %s", bi, rc < 0 ? err : "wrong keys");
		return 0;
	}
	if (bcert_add(c, r->broker_cert.ptr, r->broker_cert.len) > 0)
		save_brokers(c);
	if (!c->cert || nc.not_after >= c->cert_na) {
		uint8_t *cp = malloc(r->cert.len);

		if (cp) {
			memcpy(cp, r->cert.ptr, r->cert.len);
			free(c->cert);
			c->cert = cp;
			c->cert_len = r->cert.len;
			c->cert_nb = nc.not_before;
			c->cert_na = nc.not_after;
			save_cert(c);
		}
	}
	crl_offer(c, r->crl.ptr, r->crl.len);
	for (uint32_t i = 0; i < r->n_slices; i++)
		if (r->slices[i].selector[0])
			def_set(c, &r->slices[i]);
	save_defs(c);
	c->b[bi].registered = true;
	c->b[bi].heard_ms = ovl_mono_ms();
	c->b[bi].hb_outstanding = 0;
	c->b[bi].hb_unsent_since_ms = 0;
	c->b[bi].hb_ms = r->heartbeat_ms;
	c->b[bi].next_hb_ms = ovl_mono_ms() + r->heartbeat_ms;
	note(c, "broker %u: registered, certificate serial %llu valid until %llu, %u slices", bi,
	     (unsigned long long)nc.serial, (unsigned long long)nc.not_after, r->n_slices);
	return 0;
}

static int handle(node_ctl_t *c, unsigned bi, const uint8_t *buf, size_t len)
{
	struct ovl_msg m;
	struct node_ctl_map *mp = NULL;
	char err[256];
	int changed = 0;

	if (ovl_msg_decode(buf, len, &m, err, sizeof(err)) < 0) {
		note(c, "broker %u: %s", bi, err);
		return 0;
	}
	switch (m.type) {
	case OVL_MSG_REGISTER_OK:
		on_register_ok(c, bi, &m.u.reg_ok);
		break;
	case OVL_MSG_HEARTBEAT_OK:
		if (!ts_ok(c, bi, m.u.hb_ok.ts))
			break;
		c->b[bi].hb_outstanding = 0;
		c->b[bi].heard_ms = ovl_mono_ms();
		if (c->cfg.fleet_ok && m.u.hb_ok.fleet.len <= OVL_MSG_FLEET_MAX_BYTES)
			c->cfg.fleet_ok(c->cfg.fleet_arg, m.u.hb_ok.fleet.ptr, m.u.hb_ok.fleet.len,
					c->b[bi].sign_pk);
		for (uint32_t i = 0; i < m.u.hb_ok.n_slices; i++) {
			if (!from_owner(c, bi, m.u.hb_ok.slices[i].name))
				continue;
			mp = map_find(c, m.u.hb_ok.slices[i].name);
			/* an epoch refused by the succession rule is not asked for again */
			if (!mp || (mp->epoch < m.u.hb_ok.slices[i].epoch &&
				    mp->refused_epoch != m.u.hb_ok.slices[i].epoch))
				send_map_get(c, bi, m.u.hb_ok.slices[i].name, mp ? mp->epoch : 0);
		}
		break;
	case OVL_MSG_MAP:
		if (!ts_ok(c, bi, m.u.map.ts))
			break;
		crl_offer(c, m.u.map.crl.ptr, m.u.map.crl.len);
		if (!from_owner(c, bi, m.u.map.slice)) {
			note(c, "broker %u: map of slice '%s' ignored: another broker owns it", bi,
			     m.u.map.slice);
			break;
		}
		def_learn(c, bi, &m.u.map);
		mp = map_find(c, m.u.map.slice);
		if (!mp) {
			changed = map_set(c, &m.u.map) > 0;
		} else if (m.u.map.epoch > mp->epoch) {
			struct ovl_msg held;

			map_view(mp, &held);
			if (ovl_map_succession_check(&held.u.map, &m.u.map, err, sizeof(err)) < 0)
				succession_refused(c, bi, mp, m.u.map.epoch, err);
			else
				changed = map_set(c, &m.u.map) > 0;
		}
		break;
	case OVL_MSG_MAP_DELTA:
		if (!ts_ok(c, bi, m.u.delta.ts))
			break;
		crl_offer(c, m.u.delta.crl.ptr, m.u.delta.crl.len);
		if (!from_owner(c, bi, m.u.delta.slice)) {
			note(c, "broker %u: delta of slice '%s' ignored: another broker owns it", bi,
			     m.u.delta.slice);
			break;
		}
		mp = map_find(c, m.u.delta.slice);
		if (mp && mp->epoch == m.u.delta.base_epoch) {
			struct ovl_msg v;

			map_view(mp, &v);
			if (ovl_map_delta_check(&v.u.map, &m.u.delta, err, sizeof(err)) < 0) {
				succession_refused(c, bi, mp, m.u.delta.epoch, err);
				break;
			}
			changed = map_apply_delta(c, mp, &m.u.delta) > 0;
			map_view(mp, &v);
			/* the broker signed the map after the delta: ours must be that map,
			 * or it is not what we would hand to clients */
			if (changed && !ovl_mem_is_zero(mp->sig, sizeof(mp->sig)) &&
			    ovl_msg_map_verify(&v.u.map, c->b[bi].sign_pk) < 0) {
				note(c, "delta '%s' epoch %llu: the map after it does not match the "
				     "broker's signature; asking for the full map", mp->name,
				     (unsigned long long)mp->epoch);
				memset(mp->sig, 0, sizeof(mp->sig));
				send_map_get(c, bi, mp->name, 0);
			}
		}
		else if (!mp || m.u.delta.epoch > mp->epoch)
			send_map_get(c, bi, m.u.delta.slice, mp ? mp->epoch : 0);
		break;
	case OVL_MSG_CERT: {
		struct ovl_cert nc;
		uint8_t *cp = NULL;

		if (!ts_ok(c, bi, m.u.cert.ts) ||
		    ovl_cert_verify(&nc, m.u.cert.cert.ptr, m.u.cert.cert.len, c->b[bi].sign_pk,
				    node_ctl_now(c), err, sizeof(err)) < 0 ||
		    memcmp(nc.node_id, c->cfg.id->sign_pk, OVL_ID_BYTES) != 0)
			break;
		cp = malloc(m.u.cert.cert.len);
		if (!cp)
			break;
		memcpy(cp, m.u.cert.cert.ptr, m.u.cert.cert.len);
		free(c->cert);
		c->cert = cp;
		c->cert_len = m.u.cert.cert.len;
		c->cert_nb = nc.not_before;
		c->cert_na = nc.not_after;
		save_cert(c);
		note(c, "broker %u: certificate renewed, serial %llu", bi,
		     (unsigned long long)nc.serial);
		break;
	}
	case OVL_MSG_ERROR:
		note(c, "broker %u: error %u: %s", bi, m.u.error.code, m.u.error.message);
		if (m.u.error.code == OVL_MSG_ERR_NOT_FOUND &&
		    strstr(m.u.error.message, "not registered")) {
			c->b[bi].registered = false;
			c->b[bi].next_reg_ms = 0;
		} else if (m.u.error.code == OVL_MSG_ERR_DENIED ||
			   m.u.error.code == OVL_MSG_ERR_REVOKED) {
			c->b[bi].registered = false;
			c->b[bi].next_reg_ms = ovl_mono_ms() + 2 * NODE_CTL_REGISTER_RETRY_MS;
		}
		break;
	default:
		note(c, "broker %u: unexpected %s", bi, ovl_msg_type_name(m.type));
	}
	ovl_msg_release(&m);
	return changed;
}

static void timers(node_ctl_t *c)
{
	uint64_t now = ovl_mono_ms();

	for (unsigned i = 0; i < c->cfg.n_brokers; i++) {
		struct bconn *b = &c->b[i];

		if (!b->registered && now >= b->next_reg_ms) {
			/* not connected yet: try again soon; sent: wait for the answer */
			b->next_reg_ms = now + (send_register(c, i) < 0 ? 100 : NODE_CTL_REGISTER_RETRY_MS);
		} else if (b->registered && now >= b->next_hb_ms) {
			struct ovl_msg m;

			uint32_t ivl = b->hb_ms ? b->hb_ms : OVL_MSG_HEARTBEAT_MS;

			if (b->hb_outstanding >= NODE_CTL_LOST_HEARTBEATS ||
			    (b->hb_unsent_since_ms &&
			     now - b->hb_unsent_since_ms >= (uint64_t)NODE_CTL_LOST_HEARTBEATS * ivl)) {
				note(c, "broker %u: %s; registering again", i,
				     b->hb_outstanding >= NODE_CTL_LOST_HEARTBEATS
					     ? "heartbeats unanswered" : "not connected");
				b->registered = false;
				b->hb_unsent_since_ms = 0;
				b->next_reg_ms = now;
				continue;
			}
			ovl_msg_init(&m, OVL_MSG_HEARTBEAT);
			memcpy(m.u.hb.node_id, c->cfg.id->sign_pk, OVL_ID_BYTES);
			m.u.hb.seq = ++b->hb_seq;
			if (c->cfg.fleet_report && c->fleet) {
				int n = c->cfg.fleet_report(c->cfg.fleet_arg, c->fleet,
							    OVL_MSG_FLEET_MAX_BYTES);

				if (n > 0)
					m.u.hb.fleet = (struct ovl_msg_bin){ c->fleet, (size_t)n };
			}
			if (send_msg(c, i, &m) < 0) {
				/* not connected (the broker restarting?): try again soon, so
				 * a broker that comes back hears from us, and re-admits us,
				 * within a reconnect interval rather than a heartbeat; after
				 * as long as LOST_HEARTBEATS would take, it counts as lost */
				if (!b->hb_unsent_since_ms)
					b->hb_unsent_since_ms = now;
				b->next_hb_ms = now + NODE_CTL_HB_RETRY_MS;
				continue;
			}
			b->hb_unsent_since_ms = 0;
			b->hb_outstanding++;
			b->next_hb_ms = now + ivl;
		}
	}
	if (c->cert && now >= c->next_renew_ms) {
		uint64_t t = node_ctl_now(c);

		if (t >= c->cert_nb + (c->cert_na - c->cert_nb) / 2) {
			for (unsigned i = 0; i < c->cfg.n_brokers; i++)
				if (c->b[i].registered) {
					struct ovl_msg m;

					ovl_msg_init(&m, OVL_MSG_CERT_RENEW);
					memcpy(m.u.cert_renew.node_id, c->cfg.id->sign_pk, OVL_ID_BYTES);
					m.u.cert_renew.cert = (struct ovl_msg_bin){ c->cert, c->cert_len };
					send_msg(c, i, &m);
					break;
				}
			c->next_renew_ms = now + NODE_CTL_RENEW_RETRY_MS;
		}
	}
}

int node_ctl_poll(node_ctl_t *c, int timeout_ms)
{
	zmq_pollitem_t items[NODE_CTL_BROKERS_MAX];
	uint64_t start = ovl_mono_ms();
	int changed = 0;

	timers(c);
	for (unsigned i = 0; i < c->cfg.n_brokers; i++)
		items[i] = (zmq_pollitem_t){ ovl_link_client_socket(c->b[i].link), 0, ZMQ_POLLIN, 0 };
	for (;;) {
		uint64_t now = ovl_mono_ms();
		int wait = now - start >= (uint64_t)timeout_ms ? 0 : timeout_ms - (int)(now - start);

		if (wait > 100)
			wait = 100; /* timers run at least every 100 ms */
		if (c->cfg.n_brokers == 0) {
			if (wait)
				usleep((useconds_t)wait * 1000);
		} else if (zmq_poll(items, (int)c->cfg.n_brokers, wait) < 0 && errno != EINTR) {
			return -errno;
		}
		for (unsigned i = 0; i < c->cfg.n_brokers; i++) {
			for (int k = 0; k < 64; k++) {
				int n = ovl_link_client_recv(c->b[i].link, c->buf, NODE_CTL_RECV_MAX_BYTES, 0);

				if (n < 0)
					break;
				changed += handle(c, i, c->buf, (size_t)n);
			}
		}
		timers(c);
		if (changed || ovl_mono_ms() - start >= (uint64_t)timeout_ms)
			break;
	}
	return changed;
}

/* ---- lifecycle and views ----------------------------------------------------------------- */

int node_ctl_new(node_ctl_t **out, void *zctx, const struct node_ctl_cfg *cfg, char *err,
		 size_t errlen)
{
	node_ctl_t *c = NULL;
	struct ovl_link_opts opts = ovl_link_opts_default;
	int rc = 0;

	if (!cfg->id || !cfg->state_dir || cfg->n_brokers > NODE_CTL_BROKERS_MAX) {
		snprintf(err, errlen, "node_ctl: identity, state directory and at most %d brokers "
			 "are required", NODE_CTL_BROKERS_MAX);
		return -EINVAL;
	}
	if (sodium_init() < 0) {
		snprintf(err, errlen, "cannot initialise libsodium");
		return -EIO;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->cfg = *cfg;
	snprintf(c->state_dir, sizeof(c->state_dir), "%s", cfg->state_dir);
	c->cfg.state_dir = c->state_dir;
	msgpack_sbuffer_init(&c->sb);
	c->buf = malloc(NODE_CTL_RECV_MAX_BYTES);
	if (cfg->fleet_report)
		c->fleet = malloc(OVL_MSG_FLEET_MAX_BYTES);
	c->time = ovl_time_new(ovl_time_build_time(), NULL);
	if (!c->buf || !c->time || (cfg->fleet_report && !c->fleet)) {
		rc = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if (mkdir(c->state_dir, 0700) < 0 && errno != EEXIST) {
		rc = -errno;
		snprintf(err, errlen, "cannot create state directory '%s': %s", c->state_dir,
			 strerror(errno));
		goto out;
	}
	load_cache(c);
	opts.max_msg_bytes = NODE_CTL_RECV_MAX_BYTES;
	/* a restarted broker is found within a quarter of a second */
	opts.reconnect_ivl_max_ms = NODE_CTL_RECONNECT_MAX_MS;
	/* our PINGs find a dead broker; no TTL, so the broker keeps no timer per
	 * node (it has our heartbeat messages, and TCP keepalive) */
	opts.heartbeat_ttl_ms = 0;
	for (unsigned i = 0; i < cfg->n_brokers; i++) {
		struct ovl_link_client_cfg lc = { cfg->brokers[i].endpoint, cfg->brokers[i].server_key,
						  cfg->id->curve_sk, &opts };

		rc = ovl_link_client_new(&c->b[i].link, zctx, &lc, err, errlen);
		if (rc < 0)
			goto out;
	}
out:
	if (rc < 0)
		node_ctl_destroy(&c);
	*out = c;
	return rc;
}

void node_ctl_destroy(node_ctl_t **cp)
{
	node_ctl_t *c = cp ? *cp : NULL;

	if (!c)
		return;
	for (unsigned i = 0; i < NODE_CTL_BROKERS_MAX; i++) {
		ovl_link_client_destroy(&c->b[i].link);
		free(c->bcert[i]);
	}
	for (unsigned i = 0; i < c->n_maps; i++)
		map_clear(&c->maps[i]);
	ovl_crl_destroy(&c->crl);
	ovl_time_destroy(&c->time);
	msgpack_sbuffer_destroy(&c->sb);
	free(c->cert);
	free(c->buf);
	free(c->fleet);
	free(c);
	*cp = NULL;
}

bool node_ctl_registered(const node_ctl_t *c)
{
	for (unsigned i = 0; i < c->cfg.n_brokers; i++)
		if (c->b[i].registered)
			return true;
	return false;
}

uint64_t node_ctl_quiet_ms(const node_ctl_t *c, uint64_t now_mono_ms)
{
	uint64_t last = 0;

	for (unsigned i = 0; i < c->cfg.n_brokers; i++)
		if (c->b[i].registered && c->b[i].heard_ms > last)
			last = c->b[i].heard_ms;
	if (!last)
		return UINT64_MAX;
	return now_mono_ms > last ? now_mono_ms - last : 0;
}

void node_ctl_refresh(node_ctl_t *c)
{
	uint64_t now = ovl_mono_ms();

	if (c->refresh_ms && now < c->refresh_ms + 200)
		return;
	c->refresh_ms = now;
	for (unsigned i = 0; i < c->cfg.n_brokers; i++)
		if (c->b[i].registered && c->b[i].next_hb_ms > now)
			c->b[i].next_hb_ms = now;
}

uint32_t node_ctl_heartbeat_ms(const node_ctl_t *c)
{
	uint32_t ms = 0;

	for (unsigned i = 0; i < c->cfg.n_brokers; i++)
		if (c->b[i].registered && c->b[i].hb_ms && (!ms || c->b[i].hb_ms < ms))
			ms = c->b[i].hb_ms;
	return ms ? ms : OVL_MSG_HEARTBEAT_MS;
}

bool node_ctl_broker_registered(const node_ctl_t *c, unsigned i)
{
	return i < c->cfg.n_brokers && c->b[i].registered;
}

const uint8_t *node_ctl_broker_key(const node_ctl_t *c, unsigned i)
{
	for (unsigned k = 0; k < c->cfg.n_brokers; k++)
		if (c->b[k].registered && c->b[k].have_key && i-- == 0)
			return c->b[k].sign_pk;
	return NULL;
}

const uint8_t *node_ctl_cert(const node_ctl_t *c, size_t *len)
{
	*len = c->cert_len;
	return c->cert;
}

int node_ctl_map_encode(node_ctl_t *c, const char *slice, uint8_t **buf, size_t *len)
{
	const struct node_ctl_map *m = map_find(c, slice);
	struct ovl_msg msg;
	char err[256];

	*buf = NULL;
	*len = 0;
	if (!m || ovl_mem_is_zero(m->sig, sizeof(m->sig)))
		return -ENOENT;
	map_view(m, &msg);
	msgpack_sbuffer_clear(&c->sb);
	if (ovl_msg_encode(&msg, &c->sb, err, sizeof(err)) < 0)
		return -EINVAL;
	*buf = malloc(c->sb.size);
	if (!*buf)
		return -ENOMEM;
	memcpy(*buf, c->sb.data, c->sb.size);
	*len = c->sb.size;
	return 0;
}

unsigned node_ctl_map_count(const node_ctl_t *c)
{
	return c->n_maps;
}

const struct node_ctl_map *node_ctl_map_at(const node_ctl_t *c, unsigned i)
{
	return i < c->n_maps ? &c->maps[i] : NULL;
}

const struct node_ctl_map *node_ctl_map_find(const node_ctl_t *c, const char *slice)
{
	return map_find((node_ctl_t *)c, slice);
}

const uint8_t *node_ctl_slice_owner(const node_ctl_t *c, const char *slice)
{
	static const uint8_t zero[OVL_ID_BYTES];
	const struct def *d = def_find(c, slice);

	return d && memcmp(d->owner, zero, OVL_ID_BYTES) != 0 ? d->owner : NULL;
}

const struct ovl_crl *node_ctl_crl(const node_ctl_t *c)
{
	return c->crl;
}

const char *node_ctl_last_event(const node_ctl_t *c)
{
	return c->event;
}

int node_ctl_member_verify(node_ctl_t *c, const struct node_ctl_map *m, uint32_t i,
			   struct ovl_cert *cert, char *err, size_t errlen)
{
	const struct ovl_msg_member *mm = NULL;
	const struct ovl_crl *crls[1] = { c->crl };
	struct ovl_trust trust = { { 0 }, c->crl ? crls : NULL, c->crl ? 1u : 0u };
	uint64_t now = node_ctl_now(c);
	int rc = -ENOENT;

	if (i >= m->n_members) {
		snprintf(err, errlen, "member %u does not exist", i);
		return -ENOENT;
	}
	mm = &m->members[i];
	if (!mm->cert.len) {
		snprintf(err, errlen, "member %u carries no certificate", i);
		return -ENOKEY;
	}
	memcpy(trust.ca_pk, c->cfg.ca_pk, OVL_ID_BYTES);
	snprintf(err, errlen, "no broker certificate held");
	for (unsigned k = 0; k < c->n_bcert; k++) {
		rc = ovl_cert_verify_chain(cert, NULL, mm->cert.ptr, mm->cert.len, c->bcert[k],
					   c->bcert_len[k], &trust, now, err, errlen);
		if (rc == 0 || rc == -EKEYREVOKED || rc == -EKEYEXPIRED)
			break;
	}
	if (rc < 0)
		return rc;
	if (memcmp(cert->node_id, mm->id, OVL_ID_BYTES) != 0 ||
	    memcmp(cert->curve_pk, mm->curve_key, OVL_ID_CURVE_BYTES) != 0) {
		snprintf(err, errlen, "member %u: certificate is for other keys", i);
		return -EKEYREJECTED;
	}
	if (!member_addr_ok(c, m->name, mm)) {
		snprintf(err, errlen, "member %u: address does not belong to its key", i);
		return -EKEYREJECTED;
	}
	return 0;
}

const uint8_t *node_ctl_broker_cert(const node_ctl_t *c, unsigned i, size_t *len)
{
	if (i >= c->n_bcert)
		return NULL;
	*len = c->bcert_len[i];
	return c->bcert[i];
}
