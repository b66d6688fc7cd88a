/*
 * brk_members: the membership of the slices on disk (broker.h gives the
 * format): a base snapshot (DIR/members) and an append-only journal of
 * changes (DIR/members.log), each record checked by its crc32c, each batch
 * closed by a commit record and made durable by one fdatasync.
 *
 * Loading reads the base into plain values (struct brk_membership) with an
 * index by node id (and one by member id per slice), so that replaying n
 * records costs O(n), then replays the journal in two passes: the first
 * checks every line (checksum, sequence) and finds where the last committed
 * batch ends, or the damage; the second applies the committed records.
 */
#include "broker.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MEMBERS_PATH_BYTES (BRK_PATH_MAX + 32)
#define MEMBERS_NAME "members"
#define MEMBERS_LOG_NAME "members.log"
#define MEMBERS_V1 "# shelf-broker members v1"
#define MEMBERS_V2 "# shelf-broker members v2"
#define CRC_CHARS 8                    /* the crc32c of a record, in hex */
#define LOG_READ_MAX_BYTES (1ull << 34) /* a journal larger than this is refused */

/* ---- text ------------------------------------------------------------------------- */

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

static void text_fmt(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_fmt(struct text *t, const char *fmt, ...)
{
	char line[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	text_add(t, line);
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

static const char *reason_word(enum ovl_msg_left_reason r)
{
	const char *w = ovl_msg_left_reason_name(r);

	return w ? w : "unknown";
}

/* "node ID CURVE PORT STATE CAPACITY SERIAL BOARD VERSION SITE CHASSIS SLOT GROUP CERT" */
static void text_node(struct text *t, const struct brk_node_rec *n)
{
	text_add(t, "node");
	text_hex(t, n->id, OVL_ID_BYTES);
	text_hex(t, n->curve_key, OVL_KEY_BYTES);
	text_fmt(t, " %u %s %llu %llu", n->port, state_word(n->state),
		 (unsigned long long)n->capacity, (unsigned long long)n->serial);
	text_str(t, n->board);
	text_str(t, n->version);
	text_str(t, n->domain.site);
	text_str(t, n->domain.chassis);
	text_str(t, n->domain.slot);
	text_str(t, n->group);
	text_hex(t, n->cert, n->cert_len);
}

/* The journal form of c, without sequence and newline. */
static void text_change(struct text *t, const struct brk_change *c)
{
	switch (c->op) {
	case BRK_CHANGE_NODE:
		text_node(t, &c->node);
		break;
	case BRK_CHANGE_STATE:
		text_add(t, "state");
		text_hex(t, c->node.id, OVL_ID_BYTES);
		text_fmt(t, " %s", state_word(c->node.state));
		break;
	case BRK_CHANGE_EPOCH:
		text_fmt(t, "epoch %s %llu", c->slice, (unsigned long long)c->epoch);
		break;
	case BRK_CHANGE_MEMBER:
		text_fmt(t, "member %s", c->slice);
		text_hex(t, c->member.id, OVL_ID_BYTES);
		text_hex(t, c->member.addr, OVL_MSG_ADDR_BYTES);
		break;
	case BRK_CHANGE_REMOVE:
		text_fmt(t, "remove %s", c->slice);
		text_hex(t, c->member.id, OVL_ID_BYTES);
		break;
	case BRK_CHANGE_LEFT:
		text_fmt(t, "left %s", c->slice);
		text_hex(t, c->left.id, OVL_ID_BYTES);
		text_fmt(t, " %llu %s", (unsigned long long)c->left.epoch, reason_word(c->left.reason));
		break;
	case BRK_CHANGE_DROP:
		text_fmt(t, "drop %s", c->slice);
		break;
	}
}

/* One journal line: "CRC SEQ " + what fmt_body adds + "\n". */
static void text_record_begin(struct text *t, uint64_t seq, size_t *start)
{
	*start = t->len;
	text_fmt(t, "%0*x %llu ", CRC_CHARS, 0u, (unsigned long long)seq);
}

static void text_record_end(struct text *t, size_t start)
{
	char crc[CRC_CHARS + 1];
	uint32_t c;

	if (!t->ok)
		return;
	c = ovl_crc32c(0, t->p + start + CRC_CHARS + 1, t->len - start - CRC_CHARS - 1);
	snprintf(crc, sizeof(crc), "%08x", c);
	memcpy(t->p + start, crc, CRC_CHARS);
	text_add(t, "\n");
}

/* The base of generation gen: header, generation, nodes, slices, end line. */
static void text_base(struct text *t, const struct brk_membership *m, uint64_t gen)
{
	text_add(t, MEMBERS_V2 "\n");
	text_fmt(t, "generation %llu\n", (unsigned long long)gen);
	for (size_t i = 0; i < m->n_nodes; i++) {
		text_node(t, &m->nodes[i]);
		text_add(t, "\n");
	}
	for (size_t i = 0; i < m->n_slices; i++) {
		const struct brk_slice_members *s = &m->slices[i];

		text_fmt(t, "slice %s %llu\n", s->name, (unsigned long long)s->epoch);
		for (size_t k = 0; k < s->n_members; k++) {
			text_add(t, "member");
			text_hex(t, s->members[k].id, OVL_ID_BYTES);
			text_hex(t, s->members[k].addr, OVL_MSG_ADDR_BYTES);
			text_add(t, "\n");
		}
		for (size_t k = 0; k < s->n_left; k++) {
			text_add(t, "left");
			text_hex(t, s->left[k].id, OVL_ID_BYTES);
			text_fmt(t, " %llu %s\n", (unsigned long long)s->left[k].epoch,
				 reason_word(s->left[k].reason));
		}
	}
	if (t->ok)
		text_fmt(t, "end %08x\n", ovl_crc32c(0, t->p, t->len));
}

/* ---- parsing ---------------------------------------------------------------------- */

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

static bool state_parse(const char *w, uint8_t *st)
{
	if (!w)
		return false;
	if (strcmp(w, "up") == 0)
		*st = OVL_MSG_STATE_UP;
	else if (strcmp(w, "down") == 0)
		*st = OVL_MSG_STATE_DOWN;
	else if (strcmp(w, "out") == 0)
		*st = OVL_MSG_STATE_OUT;
	else
		return false;
	return true;
}

static bool slice_word(const char *w, char *out)
{
	char e2[160];

	if (!w || ovl_slice_name_check(w, "slice name", e2, sizeof(e2)) < 0 ||
	    strlen(w) >= OVL_MSG_NAME_SIZE)
		return false;
	snprintf(out, OVL_MSG_NAME_SIZE, "%s", w);
	return true;
}

/* "ID EPOCH REASON" of a removal record (an unknown reason reads as unknown). */
static bool left_words(char **s, struct ovl_msg_left *l)
{
	const char *why = NULL;

	memset(l, 0, sizeof(*l));
	if (!hex_exact(word(s), l->id, OVL_ID_BYTES) || !u64_word(word(s), &l->epoch, UINT64_MAX) ||
	    !(why = word(s)) || word(s))
		return false;
	for (int r = OVL_MSG_LEFT_EXPIRED; r <= OVL_MSG_LEFT_DELETED; r++)
		if (strcmp(why, ovl_msg_left_reason_name((enum ovl_msg_left_reason)r)) == 0)
			l->reason = (enum ovl_msg_left_reason)r;
	return true;
}

/* The words of a node line after "node"; the certificate goes into cert (malloc'd). */
static int node_words(char *s, struct brk_node_rec *n, uint8_t **cert)
{
	char *w = NULL;
	uint64_t v = 0;
	size_t len;

	memset(n, 0, sizeof(*n));
	*cert = NULL;
	if (!hex_exact(word(&s), n->id, OVL_ID_BYTES) ||
	    !hex_exact(word(&s), n->curve_key, OVL_KEY_BYTES) ||
	    !u64_word(word(&s), &v, 65535) || v == 0)
		return -EBADMSG;
	n->port = (uint16_t)v;
	if (!state_parse(word(&s), &n->state) ||
	    !u64_word(word(&s), &n->capacity, UINT64_MAX) ||
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
	if (strcmp(w, "-") == 0)
		return 0;
	len = strlen(w) / 2;
	if (len == 0 || len > OVL_CERT_MAX_BYTES)
		return -EBADMSG;
	if (!(*cert = malloc(len)))
		return -ENOMEM;
	if (!hex_exact(w, *cert, len)) {
		free(*cert);
		*cert = NULL;
		return -EBADMSG;
	}
	n->cert = *cert;
	n->cert_len = len;
	return 0;
}

/*
 * A journal record "OP ARGS" into *c (a NODE's certificate malloc'd into
 * *cert, the caller frees it). 1 for "commit N" (*commit = N), 0 for a
 * change, -EBADMSG or -ENOMEM.
 */
static int change_parse(char *s, struct brk_change *c, uint8_t **cert, uint64_t *commit)
{
	const char *op = word(&s);

	memset(c, 0, sizeof(*c));
	*cert = NULL;
	if (!op)
		return -EBADMSG;
	if (strcmp(op, "commit") == 0)
		return u64_word(word(&s), commit, UINT64_MAX) && !word(&s) ? 1 : -EBADMSG;
	if (strcmp(op, "node") == 0) {
		c->op = BRK_CHANGE_NODE;
		return node_words(s, &c->node, cert);
	}
	if (strcmp(op, "state") == 0) {
		c->op = BRK_CHANGE_STATE;
		return hex_exact(word(&s), c->node.id, OVL_ID_BYTES) &&
		       state_parse(word(&s), &c->node.state) && !word(&s) ? 0 : -EBADMSG;
	}
	if (!slice_word(word(&s), c->slice))
		return -EBADMSG;
	if (strcmp(op, "epoch") == 0) {
		c->op = BRK_CHANGE_EPOCH;
		return u64_word(word(&s), &c->epoch, UINT64_MAX) && !word(&s) ? 0 : -EBADMSG;
	}
	if (strcmp(op, "member") == 0) {
		c->op = BRK_CHANGE_MEMBER;
		return hex_exact(word(&s), c->member.id, OVL_ID_BYTES) &&
		       hex_exact(word(&s), c->member.addr, OVL_MSG_ADDR_BYTES) && !word(&s) ?
			       0 : -EBADMSG;
	}
	if (strcmp(op, "remove") == 0) {
		c->op = BRK_CHANGE_REMOVE;
		return hex_exact(word(&s), c->member.id, OVL_ID_BYTES) && !word(&s) ? 0 : -EBADMSG;
	}
	if (strcmp(op, "left") == 0) {
		c->op = BRK_CHANGE_LEFT;
		return left_words(&s, &c->left) ? 0 : -EBADMSG;
	}
	if (strcmp(op, "drop") == 0) {
		c->op = BRK_CHANGE_DROP;
		return word(&s) ? -EBADMSG : 0;
	}
	return -EBADMSG;
}

/* ---- an index by id ----------------------------------------------------------------- */

/*
 * Open addressing over an array whose element i starts with its 32-byte id
 * at arr + i * stride; a slot holds i + 1 (0: empty). Linear probing with
 * backward-shift deletion, at most half full.
 */
struct idx {
	uint32_t *slot;
	size_t cap, n;
};

static size_t id_home(const uint8_t *id, size_t cap)
{
	uint64_t h;

	memcpy(&h, id, sizeof(h));
	h ^= h >> 31;
	h *= 0x9e3779b97f4a7c15ull;
	return (size_t)(h >> 17) & (cap - 1);
}

static const uint8_t *idx_key(const void *arr, size_t stride, uint32_t v)
{
	return (const uint8_t *)arr + (size_t)(v - 1) * stride;
}

/* The slot of id, or of the empty slot where it would go (*found false). */
static size_t idx_pos(const struct idx *x, const void *arr, size_t stride, const uint8_t *id,
		      bool *found)
{
	size_t mask = x->cap - 1, p = id_home(id, x->cap);

	while (x->slot[p]) {
		if (memcmp(idx_key(arr, stride, x->slot[p]), id, OVL_ID_BYTES) == 0) {
			*found = true;
			return p;
		}
		p = (p + 1) & mask;
	}
	*found = false;
	return p;
}

/* The element holding id, or -1. */
static long idx_find(const struct idx *x, const void *arr, size_t stride, const uint8_t *id)
{
	bool found = false;
	size_t p;

	if (!x->cap)
		return -1;
	p = idx_pos(x, arr, stride, id, &found);
	return found ? (long)x->slot[p] - 1 : -1;
}

/* Index element i (whose id is not indexed yet). 0 or -ENOMEM. */
static int idx_add(struct idx *x, const void *arr, size_t stride, size_t i)
{
	bool found = false;

	if ((x->n + 1) * 2 > x->cap) {
		size_t cap = x->cap ? x->cap * 2 : 16;
		uint32_t *g = calloc(cap, sizeof(*g)), *old = x->slot;
		size_t ocap = x->cap;

		if (!g)
			return -ENOMEM;
		x->slot = g;
		x->cap = cap;
		for (size_t k = 0; k < ocap; k++)
			if (old[k])
				x->slot[idx_pos(x, arr, stride, idx_key(arr, stride, old[k]), &found)] =
					old[k];
		free(old);
	}
	x->slot[idx_pos(x, arr, stride, idx_key(arr, stride, (uint32_t)i + 1), &found)] =
		(uint32_t)i + 1;
	x->n++;
	return 0;
}

/* Forget id (indexed). */
static void idx_del(struct idx *x, const void *arr, size_t stride, const uint8_t *id)
{
	bool found = false;
	size_t mask = x->cap - 1, i = idx_pos(x, arr, stride, id, &found), j = i;

	if (!found)
		return;
	for (;;) {
		size_t k;

		j = (j + 1) & mask;
		if (!x->slot[j])
			break;
		k = id_home(idx_key(arr, stride, x->slot[j]), x->cap);
		/* the entry at j stays when its home lies cyclically in (i, j] */
		if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
			continue;
		x->slot[i] = x->slot[j];
		i = j;
	}
	x->slot[i] = 0;
	x->n--;
}

/* id (indexed) is now element i. */
static void idx_set(struct idx *x, const void *arr, size_t stride, const uint8_t *id, size_t i)
{
	bool found = false;
	size_t p = idx_pos(x, arr, stride, id, &found);

	if (found)
		x->slot[p] = (uint32_t)i + 1;
}

/* ---- applying changes ------------------------------------------------------------------ */

/* The membership being built, with its indexes and capacities. */
struct mstate {
	struct brk_membership *m;
	struct idx nodes;               /* m->nodes by id */
	size_t cap_nodes, cap_slices;
	struct slice_aux {
		struct idx idx;         /* members by id */
		size_t cap_members;
	} *aux;                         /* parallel to m->slices */
	size_t last;                    /* the slice found last */
};

static void mstate_release(struct mstate *st)
{
	free(st->nodes.slot);
	for (size_t i = 0; st->aux && i < st->m->n_slices; i++)
		free(st->aux[i].idx.slot);
	free(st->aux);
	memset(st, 0, sizeof(*st));
}

/* Index an existing membership (its arrays may have any capacity: they are
 * taken as full). 0 or -ENOMEM, -EBADMSG (an id twice). */
static int mstate_init(struct mstate *st, struct brk_membership *m)
{
	memset(st, 0, sizeof(*st));
	st->m = m;
	st->cap_nodes = m->n_nodes;
	st->cap_slices = m->n_slices;
	if (m->n_slices && !(st->aux = calloc(m->n_slices, sizeof(*st->aux))))
		return -ENOMEM;
	for (size_t i = 0; i < m->n_nodes; i++) {
		if (idx_find(&st->nodes, m->nodes, sizeof(*m->nodes), m->nodes[i].id) >= 0)
			return -EBADMSG;
		if (idx_add(&st->nodes, m->nodes, sizeof(*m->nodes), i) < 0)
			return -ENOMEM;
	}
	for (size_t i = 0; i < m->n_slices; i++) {
		struct brk_slice_members *s = &m->slices[i];

		st->aux[i].cap_members = s->n_members;
		for (size_t k = 0; k < s->n_members; k++) {
			if (idx_find(&st->aux[i].idx, s->members, sizeof(*s->members),
				     s->members[k].id) >= 0)
				return -EBADMSG;
			if (idx_add(&st->aux[i].idx, s->members, sizeof(*s->members), k) < 0)
				return -ENOMEM;
		}
	}
	return 0;
}

/* Room for one more element of arr (count n, capacity *cap). 0 or -ENOMEM. */
static int room(void *arrp, size_t n, size_t *cap, size_t size)
{
	void **arr = arrp;
	size_t ncap;
	void *g = NULL;

	if (n < *cap)
		return 0;
	ncap = *cap ? *cap * 2 : 8;
	g = realloc(*arr, ncap * size);
	if (!g)
		return -ENOMEM;
	*arr = g;
	*cap = ncap;
	return 0;
}

static long slice_at(struct mstate *st, const char *name)
{
	struct brk_membership *m = st->m;

	if (st->last < m->n_slices && strcmp(m->slices[st->last].name, name) == 0)
		return (long)st->last;
	for (size_t i = 0; i < m->n_slices; i++)
		if (strcmp(m->slices[i].name, name) == 0) {
			st->last = i;
			return (long)i;
		}
	return -1;
}

/* The slice called name, created (empty, epoch 0) when missing; NULL when out of memory. */
static struct brk_slice_members *slice_get(struct mstate *st, const char *name)
{
	struct brk_membership *m = st->m;
	long i = slice_at(st, name);
	size_t cap = st->cap_slices;
	struct slice_aux *g = NULL;

	if (i >= 0)
		return &m->slices[i];
	if (room(&m->slices, m->n_slices, &st->cap_slices, sizeof(*m->slices)) < 0)
		return NULL;
	if (st->cap_slices != cap || !st->aux) {
		g = realloc(st->aux, st->cap_slices * sizeof(*g));
		if (!g)
			return NULL;
		st->aux = g;
	}
	memset(&m->slices[m->n_slices], 0, sizeof(*m->slices));
	memset(&st->aux[m->n_slices], 0, sizeof(*st->aux));
	snprintf(m->slices[m->n_slices].name, OVL_MSG_NAME_SIZE, "%s", name);
	st->last = m->n_slices;
	return &m->slices[m->n_slices++];
}

static void left_drop(struct brk_slice_members *s, const uint8_t *id)
{
	for (size_t i = 0; i < s->n_left; i++)
		if (memcmp(s->left[i].id, id, OVL_ID_BYTES) == 0) {
			memmove(&s->left[i], &s->left[i + 1], (s->n_left - i - 1) * sizeof(*s->left));
			s->n_left--;
			return;
		}
}

/* As the core's left_add: the member's older record goes, past BRK_LEFT_MAX the oldest. */
static int left_add(struct brk_slice_members *s, const struct ovl_msg_left *l)
{
	struct ovl_msg_left *g = NULL;

	left_drop(s, l->id);
	if (s->n_left >= BRK_LEFT_MAX) {
		memmove(&s->left[0], &s->left[1], (s->n_left - 1) * sizeof(*s->left));
		s->n_left--;
	}
	g = realloc(s->left, (s->n_left + 1) * sizeof(*g));
	if (!g)
		return -ENOMEM;
	s->left = g;
	g[s->n_left++] = *l;
	return 0;
}

static int apply_node(struct mstate *st, const struct brk_node_rec *r)
{
	struct brk_membership *m = st->m;
	long i = idx_find(&st->nodes, m->nodes, sizeof(*m->nodes), r->id);
	uint8_t *cert = NULL;

	if (r->cert_len) {
		if (r->cert_len > OVL_CERT_MAX_BYTES)
			return -EBADMSG;
		if (!(cert = malloc(r->cert_len)))
			return -ENOMEM;
		memcpy(cert, r->cert, r->cert_len);
	}
	if (i < 0) {
		if (room(&m->nodes, m->n_nodes, &st->cap_nodes, sizeof(*m->nodes)) < 0) {
			free(cert);
			return -ENOMEM;
		}
		i = (long)m->n_nodes;
		m->nodes[i].cert = NULL;
		m->nodes[i] = *r;
		m->nodes[i].cert = cert;
		if (idx_add(&st->nodes, m->nodes, sizeof(*m->nodes), (size_t)i) < 0) {
			free(cert);
			return -ENOMEM;
		}
		m->n_nodes++;
		return 0;
	}
	free((void *)m->nodes[i].cert);
	m->nodes[i] = *r;
	m->nodes[i].cert = cert;
	return 0;
}

static int apply_member(struct mstate *st, const char *name, const struct brk_member_rec *r)
{
	struct brk_membership *m = st->m;
	struct brk_slice_members *s = NULL;
	struct slice_aux *a = NULL;
	long k;

	if (idx_find(&st->nodes, m->nodes, sizeof(*m->nodes), r->id) < 0)
		return -EBADMSG;
	if (!(s = slice_get(st, name)))
		return -ENOMEM;
	a = &st->aux[s - m->slices];
	left_drop(s, r->id);
	k = idx_find(&a->idx, s->members, sizeof(*s->members), r->id);
	if (k >= 0) {
		s->members[k] = *r;
		return 0;
	}
	if (room(&s->members, s->n_members, &a->cap_members, sizeof(*s->members)) < 0)
		return -ENOMEM;
	s->members[s->n_members] = *r;
	if (idx_add(&a->idx, s->members, sizeof(*s->members), s->n_members) < 0)
		return -ENOMEM;
	s->n_members++;
	return 0;
}

static int apply_remove(struct mstate *st, const char *name, const uint8_t *id)
{
	long si = slice_at(st, name), k;
	struct brk_slice_members *s = NULL;
	struct slice_aux *a = NULL;

	if (si < 0)
		return -EBADMSG;
	s = &st->m->slices[si];
	a = &st->aux[si];
	k = idx_find(&a->idx, s->members, sizeof(*s->members), id);
	if (k < 0)
		return -EBADMSG;
	/* as the core does: the last member takes its place */
	idx_del(&a->idx, s->members, sizeof(*s->members), id);
	if ((size_t)k != s->n_members - 1) {
		s->members[k] = s->members[s->n_members - 1];
		idx_set(&a->idx, s->members, sizeof(*s->members), s->members[k].id, (size_t)k);
	}
	s->n_members--;
	return 0;
}

static void apply_drop(struct mstate *st, const char *name)
{
	struct brk_membership *m = st->m;
	long i = slice_at(st, name);

	if (i < 0)
		return;
	free(m->slices[i].members);
	free(m->slices[i].left);
	free(st->aux[i].idx.slot);
	memmove(&m->slices[i], &m->slices[i + 1], (m->n_slices - (size_t)i - 1) * sizeof(*m->slices));
	memmove(&st->aux[i], &st->aux[i + 1], (m->n_slices - (size_t)i - 1) * sizeof(*st->aux));
	m->n_slices--;
	st->last = 0;
}

static int mstate_apply(struct mstate *st, const struct brk_change *c)
{
	struct brk_membership *m = st->m;
	struct brk_slice_members *s = NULL;
	long i;

	switch (c->op) {
	case BRK_CHANGE_NODE:
		return apply_node(st, &c->node);
	case BRK_CHANGE_STATE:
		i = idx_find(&st->nodes, m->nodes, sizeof(*m->nodes), c->node.id);
		if (i < 0 || c->node.state < OVL_MSG_STATE_UP || c->node.state > OVL_MSG_STATE_OUT)
			return -EBADMSG;
		m->nodes[i].state = c->node.state;
		return 0;
	case BRK_CHANGE_EPOCH:
		if (!(s = slice_get(st, c->slice)))
			return -ENOMEM;
		s->epoch = c->epoch;
		return 0;
	case BRK_CHANGE_MEMBER:
		return apply_member(st, c->slice, &c->member);
	case BRK_CHANGE_REMOVE:
		return apply_remove(st, c->slice, c->member.id);
	case BRK_CHANGE_LEFT:
		if (!(s = slice_get(st, c->slice)))
			return -ENOMEM;
		return left_add(s, &c->left);
	case BRK_CHANGE_DROP:
		apply_drop(st, c->slice);
		return 0;
	}
	return -EBADMSG;
}

/* Leave out the nodes that are in no slice (they left their last one). */
static int mstate_prune(struct mstate *st)
{
	struct brk_membership *m = st->m;
	uint8_t *used = calloc(m->n_nodes + 1, 1);
	size_t k = 0;

	if (!used)
		return -ENOMEM;
	for (size_t i = 0; i < m->n_slices; i++)
		for (size_t j = 0; j < m->slices[i].n_members; j++) {
			long n = idx_find(&st->nodes, m->nodes, sizeof(*m->nodes),
					  m->slices[i].members[j].id);

			if (n >= 0)
				used[n] = 1;
		}
	for (size_t i = 0; i < m->n_nodes; i++) {
		if (!used[i]) {
			free((void *)m->nodes[i].cert);
			continue;
		}
		m->nodes[k++] = m->nodes[i];
	}
	m->n_nodes = k;
	free(used);
	/* the index is stale now: only release may follow */
	free(st->nodes.slot);
	memset(&st->nodes, 0, sizeof(st->nodes));
	return 0;
}

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

int brk_membership_apply(struct brk_membership *m, const struct brk_change *c)
{
	struct mstate st;
	int rc = mstate_init(&st, m);

	if (rc == 0)
		rc = mstate_apply(&st, c);
	mstate_release(&st);
	return rc;
}

/* ---- paths and reading ----------------------------------------------------------------- */

static int members_path(char *out, const char *dir, const char *name, char *err,
			size_t errlen)
{
	if (snprintf(out, MEMBERS_PATH_BYTES, "%s/%s", dir, name) >= MEMBERS_PATH_BYTES) {
		snprintf(err, errlen, "path '%s/%s' is too long", dir, name);
		return -ENAMETOOLONG;
	}
	return 0;
}

/* The whole file at path into *buf (malloc'd, NUL-terminated) and *len: 0, 1
 * when it does not exist, or -errno with err. */
static int read_all(const char *path, char **buf, size_t *len, char *err, size_t errlen)
{
	struct stat sb;
	size_t got = 0;
	char *p = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;

	*buf = NULL;
	*len = 0;
	if (fd < 0) {
		if (errno == ENOENT)
			return 1;
		rc = -errno;
		snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
		return rc;
	}
	if (fstat(fd, &sb) < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot stat '%s': %s", path, strerror(errno));
		goto out;
	}
	if ((unsigned long long)sb.st_size > LOG_READ_MAX_BYTES) {
		snprintf(err, errlen, "'%s' is %llu bytes: larger than a membership can be", path,
			 (unsigned long long)sb.st_size);
		rc = -EFBIG;
		goto out;
	}
	if (!(p = malloc((size_t)sb.st_size + 1))) {
		snprintf(err, errlen, "cannot load '%s': out of memory", path);
		rc = -ENOMEM;
		goto out;
	}
	while (got < (size_t)sb.st_size) {
		ssize_t n = read(fd, p + got, (size_t)sb.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			snprintf(err, errlen, "cannot read '%s': %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	p[got] = 0;
	*buf = p;
	*len = got;
	p = NULL;
out:
	free(p);
	close(fd);
	return rc;
}

/* Where the line at p (of the len bytes left) ends: its length without the
 * newline, *has_nl whether there is one. */
static size_t line_len(const char *p, size_t len, bool *has_nl)
{
	const char *nl = memchr(p, '\n', len);

	*has_nl = nl != NULL;
	return nl ? (size_t)(nl - p) : len;
}

/* ---- the base ------------------------------------------------------------------------- */

/* Load the base at path into st: 0 (gen set, *bytes its size; a missing
 * file is empty at generation 0), or -errno with err. */
static int base_read(const char *path, struct mstate *st, uint64_t *gen, uint64_t *bytes,
		     char *err, size_t errlen)
{
	struct brk_slice_members *cur = NULL;
	char *buf = NULL, *p = NULL, *line = NULL;
	size_t len = 0, left = 0;
	unsigned lineno = 0;
	bool v2 = false, ended = false, has_nl = false;
	const char *why = "is not a valid membership entry";
	uint32_t crc_run = 0, crc_before = 0; /* of the bytes before this line */
	int rc;

	*gen = 0;
	*bytes = 0;
	rc = read_all(path, &buf, &len, err, errlen);
	if (rc != 0)
		return rc < 0 ? rc : 0;
	*bytes = len;
	p = buf;
	left = len;
	v2 = len >= strlen(MEMBERS_V2) && memcmp(buf, MEMBERS_V2, strlen(MEMBERS_V2)) == 0;
	while (left > 0 && rc == 0) {
		size_t n = line_len(p, left, &has_nl);
		char *s = NULL, *w = NULL;

		lineno++;
		crc_before = crc_run;
		crc_run = ovl_crc32c(crc_run, p, n + has_nl);
		line = p;
		line[n] = 0; /* the newline, or the NUL after the buffer */
		p += n + has_nl;
		left -= n + has_nl;
		if (ended) {
			why = "follows the end line";
			rc = -EBADMSG;
			break;
		}
		if (line[0] == '#' || line[0] == 0)
			continue;
		s = line;
		w = word(&s);
		if (!w) {
			rc = -EBADMSG;
			continue;
		}
		if (v2 && lineno == 2) {
			if (!w || strcmp(w, "generation") != 0 || !u64_word(word(&s), gen, UINT64_MAX) ||
			    word(&s)) {
				why = "is not the generation line";
				rc = -EBADMSG;
			}
			continue;
		}
		if (v2 && strcmp(w, "end") == 0) {
			const char *h = word(&s);
			char want[CRC_CHARS + 1];

			snprintf(want, sizeof(want), "%08x", crc_before);
			if (!h || word(&s) || !has_nl) {
				rc = -EBADMSG;
				continue;
			}
			if (strcmp(h, want) != 0) {
				why = "(the end line): the checksum of the file does not match: it "
				      "is damaged";
				rc = -EBADMSG;
			}
			ended = true;
			continue;
		}
		if (strcmp(w, "node") == 0) {
			struct brk_node_rec r;
			uint8_t *cert = NULL;

			rc = node_words(s, &r, &cert);
			if (rc == 0 && idx_find(&st->nodes, st->m->nodes, sizeof(*st->m->nodes),
						r.id) >= 0)
				rc = -EBADMSG;
			if (rc == 0)
				rc = apply_node(st, &r);
			free(cert);
		} else if (strcmp(w, "slice") == 0) {
			char name[OVL_MSG_NAME_SIZE];
			uint64_t epoch = 0;

			if (!slice_word(word(&s), name) || !u64_word(word(&s), &epoch, UINT64_MAX) ||
			    word(&s) || slice_at(st, name) >= 0) {
				rc = -EBADMSG;
			} else if (!(cur = slice_get(st, name))) {
				rc = -ENOMEM;
			} else {
				cur->epoch = epoch;
			}
		} else if (strcmp(w, "member") == 0) {
			struct brk_member_rec r;

			if (!cur || !hex_exact(word(&s), r.id, OVL_ID_BYTES) ||
			    !hex_exact(word(&s), r.addr, OVL_MSG_ADDR_BYTES) || word(&s) ||
			    idx_find(&st->aux[cur - st->m->slices].idx, cur->members,
				     sizeof(*cur->members), r.id) >= 0)
				rc = -EBADMSG;
			else
				rc = apply_member(st, cur->name, &r);
		} else if (strcmp(w, "left") == 0) {
			struct ovl_msg_left l;

			rc = cur && left_words(&s, &l) ? left_add(cur, &l) : -EBADMSG;
		} else {
			rc = -EBADMSG;
		}
		/* slice_get may have moved the slices */
		if (cur && rc == 0)
			cur = &st->m->slices[st->last];
	}
	if (rc == 0 && v2 && !ended) {
		why = "ends without its end line: it is cut short";
		rc = -EBADMSG;
	}
	if (rc == -EBADMSG)
		snprintf(err, errlen, "'%s' line %u %s", path, lineno, why);
	else if (rc < 0)
		snprintf(err, errlen, "cannot load '%s': %s", path, strerror(-rc));
	free(buf);
	return rc;
}

/* ---- the journal ---------------------------------------------------------------------- */

/* What reading the journal found. */
struct jinfo {
	bool exists;                    /* a non-empty journal */
	bool stale;                     /* of an older generation than the base */
	uint64_t gen;                   /* its generation */
	uint64_t next_seq;              /* the sequence after the last committed record */
	uint64_t good_bytes;            /* where the last committed batch ends */
	uint64_t bytes;                 /* the file's size */
	unsigned dropped;               /* lines of a torn tail (not applied) */
};

/* Whether the n bytes at p are a record whose checksum holds: "CRC SEQ ..." */
static bool record_ok(const char *p, size_t n)
{
	char h[CRC_CHARS + 1];
	char *end = NULL;
	unsigned long crc;

	if (n < CRC_CHARS + 3 || p[CRC_CHARS] != ' ')
		return false;
	memcpy(h, p, CRC_CHARS);
	h[CRC_CHARS] = 0;
	for (int i = 0; i < CRC_CHARS; i++)
		if (!((h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f')))
			return false;
	crc = strtoul(h, &end, 16);
	return (uint32_t)crc == ovl_crc32c(0, p + CRC_CHARS + 1, n - CRC_CHARS - 1);
}

/*
 * Read the journal at path against a base of generation base_gen and apply
 * its committed records to st (when it is of that generation). 0 with *ji,
 * or -errno with err.
 */
static int journal_read(const char *path, uint64_t base_gen, struct mstate *st,
			struct jinfo *ji, char *err, size_t errlen)
{
	char *buf = NULL, *p = NULL;
	size_t len = 0, left = 0;
	unsigned lineno = 0, bad_line = 0, commit_line = 0;
	uint64_t seq = 0, in_batch = 0;
	bool has_nl = false;
	const char *why = NULL;
	int rc;

	memset(ji, 0, sizeof(*ji));
	rc = read_all(path, &buf, &len, err, errlen);
	if (rc != 0)
		return rc < 0 ? rc : 0;
	ji->bytes = len;
	if (len == 0)
		goto out;
	ji->exists = true;
	/* pass 1: checksums, sequence, commits; the first bad line and what follows it */
	for (p = buf, left = len; left > 0;) {
		size_t n = line_len(p, left, &has_nl);
		bool ok = has_nl && record_ok(p, n);

		lineno++;
		if (bad_line) {
			if (ok) {
				why = "fails its checksum, and valid records follow it: the journal "
				      "is damaged (not a torn tail)";
				lineno = bad_line;
				rc = -EBADMSG;
				goto out;
			}
		} else if (!ok) {
			bad_line = lineno;
		} else {
			char *s = p + CRC_CHARS + 1, *w = NULL, save = p[n];
			uint64_t got = 0, v = 0;

			p[n] = 0;
			w = word(&s);
			if (!u64_word(w, &got, UINT64_MAX) || got != seq) {
				p[n] = save;
				rc = -EBADMSG;
				snprintf(err, errlen, "'%s' line %u is record %llu where record %llu "
					 "was expected: the journal is damaged", path, lineno,
					 (unsigned long long)got, (unsigned long long)seq);
				goto out;
			}
			w = word(&s);
			if (seq == 0) {
				if (!w || strcmp(w, "journal") != 0 ||
				    !u64_word(word(&s), &ji->gen, UINT64_MAX) || word(&s)) {
					why = "is not the journal's first record";
					rc = -EBADMSG;
					goto out;
				}
				commit_line = lineno;
				ji->good_bytes = (size_t)(p - buf) + n + 1;
				ji->next_seq = 1;
				if (ji->gen != base_gen) {
					p[n] = save;
					break; /* stale or too new: the rest is not looked at */
				}
			} else if (w && strcmp(w, "commit") == 0) {
				if (!u64_word(word(&s), &v, UINT64_MAX) || v != in_batch) {
					why = "is a commit that does not match its batch: the journal "
					      "is damaged";
					rc = -EBADMSG;
					goto out;
				}
				in_batch = 0;
				commit_line = lineno;
				ji->good_bytes = (size_t)(p - buf) + n + 1;
				ji->next_seq = seq + 1;
			} else {
				in_batch++;
			}
			/* undo word()'s NULs: pass 2 parses the line again */
			for (char *q = p; q < p + n; q++)
				if (!*q)
					*q = ' ';
			p[n] = save;
			seq++;
		}
		p += n + has_nl;
		left -= n + has_nl;
	}
	if (!commit_line) {
		/* not even the first record: never a torn tail (written whole at once) */
		lineno = 1;
		why = "is not a valid journal record: the journal is damaged";
		rc = -EBADMSG;
		goto out;
	}
	ji->dropped = ji->gen == base_gen ? lineno - commit_line : 0;
	if (ji->gen > base_gen) {
		snprintf(err, errlen, "'%s' continues generation %llu of the membership, but the "
			 "base is of generation %llu: the base is older than its journal",
			 path, (unsigned long long)ji->gen, (unsigned long long)base_gen);
		rc = -EBADMSG;
		goto out;
	}
	if (ji->gen < base_gen) {
		ji->stale = true; /* a compaction put all of it into the base */
		goto out;
	}
	/* pass 2: apply the committed records */
	lineno = 0;
	for (p = buf, left = ji->good_bytes; left > 0;) {
		size_t n = line_len(p, left, &has_nl);
		struct brk_change c;
		uint8_t *cert = NULL;
		uint64_t commit = 0;
		char *s = p + CRC_CHARS + 1;

		lineno++;
		p[n] = 0;
		p += n + 1;
		left -= n + 1;
		if (lineno == 1)
			continue;
		word(&s); /* the sequence */
		rc = change_parse(s, &c, &cert, &commit);
		if (rc == 0)
			rc = mstate_apply(st, &c);
		free(cert);
		if (rc == 1) {
			rc = 0;
		} else if (rc == -EBADMSG) {
			why = "is not a valid membership change (or does not fit the membership)";
			goto out;
		} else if (rc < 0) {
			goto out;
		}
	}
out:
	if (rc == -EBADMSG && why)
		snprintf(err, errlen, "'%s' line %u %s", path, lineno, why);
	else if (rc < 0 && rc != -EBADMSG)
		snprintf(err, errlen, "cannot load '%s': %s", path, strerror(-rc));
	free(buf);
	return rc;
}

/* Base and journal of dir into *m: 0 with *gen, *ji and the base's size, or -errno. */
static int members_read(const char *dir, struct brk_membership *m, uint64_t *gen,
			uint64_t *base_bytes, struct jinfo *ji, char *err, size_t errlen)
{
	char base[MEMBERS_PATH_BYTES], log[MEMBERS_PATH_BYTES];
	struct mstate st;
	int rc;

	memset(m, 0, sizeof(*m));
	memset(&st, 0, sizeof(st));
	st.m = m;
	if ((rc = members_path(base, dir, MEMBERS_NAME, err, errlen)) < 0 ||
	    (rc = members_path(log, dir, MEMBERS_LOG_NAME, err, errlen)) < 0)
		return rc;
	rc = base_read(base, &st, gen, base_bytes, err, errlen);
	if (rc == 0)
		rc = journal_read(log, *gen, &st, ji, err, errlen);
	if (rc == 0 && (rc = mstate_prune(&st)) < 0)
		snprintf(err, errlen, "cannot load '%s': out of memory", base);
	mstate_release(&st);
	if (rc < 0)
		brk_membership_release(m);
	return rc;
}

int brk_state_members_load(const char *dir, struct brk_membership *m, char *err,
			   size_t errlen)
{
	struct jinfo ji;
	uint64_t gen = 0, bytes = 0;

	return members_read(dir, m, &gen, &bytes, &ji, err, errlen);
}

/* ---- the open journal ------------------------------------------------------------------- */

struct brk_members_log {
	char base[MEMBERS_PATH_BYTES], log[MEMBERS_PATH_BYTES];
	int fd;                         /* the journal, appending; -1: unusable until compacted */
	uint64_t gen;                   /* of the base, and of the journal when fd >= 0 */
	uint64_t seq;                   /* of the next record */
	uint64_t base_bytes, log_bytes;
	struct text t;                  /* what is being appended (kept for its capacity) */
};

/* A new journal of l->gen holding only its first record, open for appending. */
static int journal_start(struct brk_members_log *l, char *err, size_t errlen)
{
	struct text t = { NULL, 0, 0, true };
	size_t start = 0;
	int rc;

	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
	text_record_begin(&t, 0, &start);
	text_fmt(&t, "journal %llu", (unsigned long long)l->gen);
	text_record_end(&t, start);
	if (!t.ok) {
		free(t.p);
		snprintf(err, errlen, "cannot write '%s': out of memory", l->log);
		return -ENOMEM;
	}
	rc = ovl_file_write_atomic(l->log, t.p, t.len, 0600, err, errlen);
	if (rc == 0) {
		l->fd = open(l->log, O_WRONLY | O_APPEND | O_CLOEXEC);
		if (l->fd < 0) {
			rc = -errno;
			snprintf(err, errlen, "cannot open '%s': %s", l->log, strerror(errno));
		}
	}
	if (rc == 0) {
		l->seq = 1;
		l->log_bytes = t.len;
	}
	free(t.p);
	return rc;
}

void brk_members_log_close(struct brk_members_log **lp)
{
	struct brk_members_log *l = lp ? *lp : NULL;

	if (!l)
		return;
	if (l->fd >= 0)
		close(l->fd);
	free(l->t.p);
	free(l);
	*lp = NULL;
}

int brk_members_log_open(struct brk_members_log **out, const char *dir,
			 struct brk_membership *m, char *err, size_t errlen)
{
	struct brk_members_log *l = calloc(1, sizeof(*l));
	struct jinfo ji;
	int rc;

	*out = NULL;
	memset(m, 0, sizeof(*m));
	if (!l)
		return -ENOMEM;
	l->fd = -1;
	l->t.ok = true;
	if ((rc = members_path(l->base, dir, MEMBERS_NAME, err, errlen)) < 0 ||
	    (rc = members_path(l->log, dir, MEMBERS_LOG_NAME, err, errlen)) < 0)
		goto out;
	rc = members_read(dir, m, &l->gen, &l->base_bytes, &ji, err, errlen);
	if (rc < 0)
		goto out;
	if (!ji.exists || ji.stale) {
		rc = journal_start(l, err, errlen);
		goto out;
	}
	l->fd = open(l->log, O_WRONLY | O_APPEND | O_CLOEXEC);
	if (l->fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot open '%s': %s", l->log, strerror(errno));
		goto out;
	}
	/* a torn tail goes now, so that what is appended next follows a commit */
	if (ji.good_bytes < ji.bytes &&
	    (ftruncate(l->fd, (off_t)ji.good_bytes) < 0 || fdatasync(l->fd) < 0)) {
		rc = -errno;
		snprintf(err, errlen, "cannot cut the torn tail off '%s': %s", l->log,
			 strerror(errno));
		goto out;
	}
	l->seq = ji.next_seq;
	l->log_bytes = ji.good_bytes;
out:
	if (rc < 0) {
		brk_membership_release(m);
		brk_members_log_close(&l);
	}
	*out = l;
	return rc;
}

int brk_members_log_append(struct brk_members_log *l, const struct brk_change *c, size_t n,
			   char *err, size_t errlen)
{
	struct text *t = &l->t;
	size_t start = 0;
	int rc;

	if (l->fd < 0) {
		snprintf(err, errlen, "'%s' is unusable since a write to it failed: it waits for a "
			 "compaction", l->log);
		return -EIO;
	}
	t->len = 0;
	t->ok = true;
	for (size_t i = 0; i < n; i++) {
		text_record_begin(t, l->seq + i, &start);
		text_change(t, &c[i]);
		text_record_end(t, start);
	}
	text_record_begin(t, l->seq + n, &start);
	text_fmt(t, "commit %zu", n);
	text_record_end(t, start);
	if (!t->ok) {
		free(t->p);
		memset(t, 0, sizeof(*t));
		snprintf(err, errlen, "cannot append to '%s': out of memory", l->log);
		return -ENOMEM;
	}
	rc = ovl_file_write_full(l->fd, t->p, t->len);
	if (rc == 0 && fdatasync(l->fd) < 0)
		rc = -errno;
	if (rc < 0) {
		snprintf(err, errlen, "cannot append to '%s': %s", l->log, strerror(-rc));
		/* what went in must not be followed by the next batch */
		if (ftruncate(l->fd, (off_t)l->log_bytes) < 0 || fdatasync(l->fd) < 0) {
			close(l->fd);
			l->fd = -1;
		}
		return rc;
	}
	l->seq += n + 1;
	l->log_bytes += t->len;
	return l->log_bytes >= BRK_MEMBERS_LOG_MIN_BYTES &&
	       l->log_bytes >= BRK_MEMBERS_LOG_RATIO * l->base_bytes;
}

int brk_members_log_compact(struct brk_members_log *l, const struct brk_membership *m,
			    char *err, size_t errlen)
{
	struct text t = { NULL, 0, 0, true };
	int rc;

	text_base(&t, m, l->gen + 1);
	if (!t.ok) {
		free(t.p);
		snprintf(err, errlen, "cannot write '%s': out of memory", l->base);
		return -ENOMEM;
	}
	/* 1: the base of the next generation; a crash now leaves the journal of
	 * the old one, stale: its records are in the new base */
	rc = ovl_file_write_atomic(l->base, t.p, t.len, 0600, err, errlen);
	if (rc == 0) {
		l->gen++;
		l->base_bytes = t.len;
		/* 2: a journal of the new generation; until it exists, appending to the
		 * old one would be lost (it is stale), so l is unusable on error */
		rc = journal_start(l, err, errlen);
	}
	free(t.p);
	return rc;
}

void brk_members_log_sizes(const struct brk_members_log *l, uint64_t *base_bytes,
			   uint64_t *log_bytes, uint64_t *generation)
{
	if (base_bytes)
		*base_bytes = l->base_bytes;
	if (log_bytes)
		*log_bytes = l->log_bytes;
	if (generation)
		*generation = l->gen;
}

int brk_state_members_save(const char *dir, const struct brk_membership *m, char *err,
			   size_t errlen)
{
	struct brk_members_log *l = calloc(1, sizeof(*l));
	char base[MEMBERS_PATH_BYTES];
	struct mstate st;
	uint64_t gen = 0, bytes = 0;
	struct brk_membership old;
	int rc;

	if (!l)
		return -ENOMEM;
	l->fd = -1;
	memset(&old, 0, sizeof(old));
	memset(&st, 0, sizeof(st));
	st.m = &old;
	if ((rc = members_path(l->base, dir, MEMBERS_NAME, err, errlen)) < 0 ||
	    (rc = members_path(l->log, dir, MEMBERS_LOG_NAME, err, errlen)) < 0)
		goto out;
	/* only the generation of the base is needed: a damaged base is replaced */
	snprintf(base, sizeof(base), "%s", l->base);
	if (base_read(base, &st, &gen, &bytes, err, errlen) == 0)
		l->gen = gen;
	rc = brk_members_log_compact(l, m, err, errlen);
out:
	mstate_release(&st);
	brk_membership_release(&old);
	brk_members_log_close(&l);
	return rc;
}
