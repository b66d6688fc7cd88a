/*
 * brk_core: the broker's registry, slices, admission, certificates, maps,
 * deltas, liveness and admin requests. No I/O of its own (see broker.h):
 * messages, the clocks, the state files and the look-up of issued clients
 * all go through b->io, so tests drive it with a fake clock and capture what
 * it sends. What it persists is turned into plain values (struct
 * brk_slice_def, brk_token_use, brk_revocations) and handed to the seam.
 *
 * Memory: a node costs its struct (about 230 bytes), its certificate (about
 * 330 bytes), one pointer in each of two hash tables and one in the node
 * vector, and 24 bytes per slice it is in. Strings that repeat across nodes
 * (board, version, site, chassis, slot, group) are interned (hash-indexed).
 */
#include "broker.h"
#include "brk_fleet.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>
#include <sodium.h>

struct slice;

struct node {
	uint8_t id[OVL_ID_BYTES];
	struct brk_peer peer;           /* peer.key is the node's CURVE key */
	const char *board, *version, *site, *chassis, *slot, *group; /* interned */
	uint64_t capacity, used;
	uint64_t last_ms;               /* last message heard */
	uint64_t serial;                /* serial of the current certificate */
	uint8_t *cert;                  /* current certificate (owned) */
	uint16_t cert_len;
	uint16_t port;
	uint8_t state;                  /* enum ovl_msg_state */
	bool heard;                     /* a message came from it since this broker started */
	uint8_t nslices;
	struct slice **slices;          /* slices it is a member of (owned array) */
	uint32_t idx;                   /* position in b->nodes */
};

struct member {
	struct node *n;
	struct in6_addr addr;
	/* the epoch of the map this entry was taken from while its node has not
	 * been heard (a node's map_report, or state/members at start); 0: the
	 * broker's own knowledge. A newer reported map may update or remove it. */
	uint64_t learned;
};

struct slice {
	char name[OVL_MSG_NAME_SIZE];
	char selector[OVL_MSG_SELECTOR_SIZE];
	uint8_t owner[OVL_ID_BYTES];    /* Ed25519 key of the authoritative broker */
	unsigned replicas;
	unsigned min_write;             /* copies a write needs, 1..replicas (fixed at creation) */
	bool encrypt;                   /* payloads must be encrypted (fixed at creation) */
	bool allow_same_domain;         /* created with more replicas than failure domains */
	uint32_t chunk_size;            /* bytes (fixed at creation; OVL_MSG_CHUNK_SIZE_*) */
	uint64_t epoch;
	bool ours;                      /* owner is this broker: only then the epoch moves */
	struct ovl_slice os;
	struct member *m;
	uint32_t n, cap;
	struct ovl_msg_left *left;      /* records of members removed (oldest first) */
	uint32_t n_left;
	/* a node's map_report at or below this epoch teaches nothing: the
	 * membership loaded from state/members is as new (0: none was loaded) */
	uint64_t learn_lo;
};

struct ht {
	struct node **slot;
	size_t cap, count;
	size_t off;                     /* offset of the 32-byte key in struct node */
};

/* Encoded bytes held until the state they show is durable (brk_flush),
 * shared by every receiver of the same message (a delta goes to every
 * member: one copy, not one per member). */
struct held_buf {
	size_t refs, len;
	uint8_t data[];
};

/* A message held: its receiver and its bytes. */
struct held {
	struct brk_peer to;
	struct held_buf *buf;
};

struct token {
	uint8_t hash[32];
	unsigned uses;
	uint64_t expires;
};

struct brk {
	const struct brk_site *site;
	struct brk_params p;
	struct brk_io io;
	uint8_t sipkey[crypto_shorthash_KEYBYTES];
	struct node **nodes;
	size_t n_nodes, cap_nodes;
	struct ht by_id, by_curve;
	struct slice *slices[BRK_SLICES_MAX];
	unsigned n_slices;
	struct token *tokens;
	size_t n_tokens;
	struct brk_token_use *used;     /* uses of the tokens (persisted) */
	size_t n_used;
	uint8_t (*preauth)[OVL_ID_BYTES]; /* sorted */
	size_t n_preauth;
	struct brk_revocations rv;      /* revoked ids, their keys, serials (persisted) */
	uint8_t *crl;                   /* rv signed: the encoded list (owned) */
	size_t crl_len;
	char **strings;                 /* interned strings */
	size_t n_strings;
	char **str_slot;                /* their hash index (open addressing, power of 2) */
	size_t str_cap;
	uint8_t ts[OVL_TS_MAX_BYTES];   /* cached timestamp token of ts_sec */
	size_t ts_len;
	uint64_t ts_sec;
	msgpack_sbuffer sb;
	uint64_t sb_gen;                /* counts encodings into sb */
	bool dirty;                     /* slice definitions or epochs not yet in DIR/slices */
	bool defs_dirty;                /* definitions changed: DIR/slices before anything leaves */
	struct brk_change *changes;     /* membership changes not yet in the journal (a NODE's
					 * cert is a malloc'd copy) */
	size_t n_changes, cap_changes;
	bool compact;                   /* the whole membership must be saved (a compaction)
					 * before anything leaves: after a restore, or when a
					 * change could not be recorded or appended */
	bool compact_due;               /* the journal outgrew its base: compact after sending */
	uint64_t retry_ms;              /* a failed save is not tried again before this */
	struct held *held;              /* messages waiting for the next save */
	size_t n_held, cap_held, held_bytes;
	struct held_buf *held_last;     /* the buffer of the last message held ... */
	uint64_t held_last_gen;         /* ... and the encoding it holds */
	bool held_overflow;             /* some were dropped: reported once */
	bool used_dirty;                /* token uses not yet on disk */
	uint64_t flushed_ms;
	struct brk_stats st;
	char line[512];                 /* event line */
	struct brk_fleet *fleet;        /* the director of fleet updates (owned) */
};

/* ---- helpers ---------------------------------------------------------------- */

static void event(brk_t *b, enum brk_event ev, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void event(brk_t *b, enum brk_event ev, const char *fmt, ...)
{
	va_list ap;

	if (!b->io.event)
		return;
	va_start(ap, fmt);
	vsnprintf(b->line, sizeof(b->line), fmt, ap);
	va_end(ap);
	b->io.event(b->io.arg, ev, b->line);
}

static uint64_t now_ms(brk_t *b)
{
	return b->io.now_ms(b->io.arg);
}

static void fp(const uint8_t id[OVL_ID_BYTES], char out[OVL_ID_FP_BYTES])
{
	ovl_nodeid_fingerprint(id, out);
}

static uint64_t khash(brk_t *b, const uint8_t *key)
{
	uint8_t h[crypto_shorthash_BYTES];
	uint64_t v;

	crypto_shorthash(h, key, 32, b->sipkey);
	memcpy(&v, h, sizeof(v));
	return v;
}

static const uint8_t *ht_key(const struct ht *h, const struct node *n)
{
	return (const uint8_t *)n + h->off;
}

static struct node *ht_find(brk_t *b, struct ht *h, const uint8_t *key)
{
	if (!h->cap)
		return NULL;
	for (size_t i = khash(b, key) & (h->cap - 1);; i = (i + 1) & (h->cap - 1)) {
		struct node *n = h->slot[i];

		if (!n)
			return NULL;
		if (memcmp(ht_key(h, n), key, 32) == 0)
			return n;
	}
}

static int ht_insert(brk_t *b, struct ht *h, struct node *n);

static int ht_grow(brk_t *b, struct ht *h)
{
	struct ht nh = { NULL, h->cap ? h->cap * 2 : 64, 0, h->off };

	nh.slot = calloc(nh.cap, sizeof(*nh.slot));
	if (!nh.slot)
		return -ENOMEM;
	for (size_t i = 0; i < h->cap; i++)
		if (h->slot[i])
			ht_insert(b, &nh, h->slot[i]);
	free(h->slot);
	*h = nh;
	return 0;
}

static int ht_insert(brk_t *b, struct ht *h, struct node *n)
{
	size_t i;

	if ((h->count + 1) * 2 > h->cap) {
		int rc = ht_grow(b, h);

		if (rc < 0)
			return rc;
	}
	for (i = khash(b, ht_key(h, n)) & (h->cap - 1); h->slot[i]; i = (i + 1) & (h->cap - 1))
		;
	h->slot[i] = n;
	h->count++;
	return 0;
}

/* Linear probing with backward-shift deletion: no tombstones. */
static void ht_remove(brk_t *b, struct ht *h, const struct node *n)
{
	size_t mask = h->cap - 1, i, j;

	if (!h->cap)
		return;
	for (i = khash(b, ht_key(h, n)) & mask; h->slot[i] && h->slot[i] != n; i = (i + 1) & mask)
		;
	if (!h->slot[i])
		return;
	h->slot[i] = NULL;
	h->count--;
	for (j = (i + 1) & mask; h->slot[j]; j = (j + 1) & mask) {
		size_t home = khash(b, ht_key(h, h->slot[j])) & mask;

		/* move slot j back to i unless its home lies cyclically in (i, j] */
		if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
			h->slot[i] = h->slot[j];
			h->slot[j] = NULL;
			i = j;
		}
	}
}

static uint64_t shash(brk_t *b, const char *s)
{
	uint8_t h[crypto_shorthash_BYTES];
	uint64_t v;

	crypto_shorthash(h, (const uint8_t *)s, strlen(s), b->sipkey);
	memcpy(&v, h, sizeof(v));
	return v;
}

/* The slot of s in the string index: where it is, or the empty one where it
 * goes. The index is never full (load at most 1/2). */
static size_t str_slot(brk_t *b, const char *s)
{
	size_t mask = b->str_cap - 1, i;

	for (i = shash(b, s) & mask; b->str_slot[i]; i = (i + 1) & mask)
		if (strcmp(b->str_slot[i], s) == 0)
			break;
	return i;
}

/* One copy of each distinct board, version, site, chassis, slot and group
 * string, found by hash: a registration costs O(1) here whatever the
 * number of chassis. NULL when out of memory or past BRK_STRINGS_MAX. */
static const char *intern(brk_t *b, const char *s)
{
	char *c = NULL, **grown = NULL;
	size_t i;

	if (b->str_cap && b->str_slot[i = str_slot(b, s)])
		return b->str_slot[i];
	if (b->n_strings >= BRK_STRINGS_MAX)
		return NULL;
	if ((b->n_strings + 1) * 2 > b->str_cap) {
		size_t cap = b->str_cap ? b->str_cap * 2 : 64;
		char **old = b->str_slot;
		size_t ocap = b->str_cap;

		b->str_slot = calloc(cap, sizeof(*b->str_slot));
		if (!b->str_slot) {
			b->str_slot = old;
			return NULL;
		}
		b->str_cap = cap;
		for (size_t k = 0; k < ocap; k++)
			if (old[k])
				b->str_slot[str_slot(b, old[k])] = old[k];
		free(old);
	}
	if ((b->n_strings & (b->n_strings - 1)) == 0 || b->n_strings == 0) {
		grown = realloc(b->strings, (b->n_strings ? b->n_strings * 2 : 16) * sizeof(char *));
		if (!grown)
			return NULL;
		b->strings = grown;
	}
	c = strdup(s);
	if (!c)
		return NULL;
	b->strings[b->n_strings++] = c;
	b->str_slot[str_slot(b, c)] = c;
	return c;
}

/* ---- sending -------------------------------------------------------------------- */

static struct ovl_msg_bin ts_get(brk_t *b)
{
	uint64_t now = b->io.unix_s(b->io.arg);
	char err[128];

	if (now != b->ts_sec || !b->ts_len) {
		int n = ovl_timestamp_sign(now, NULL, 0, b->site->id->sign_sk, b->ts, sizeof(b->ts),
					   err, sizeof(err));

		b->ts_len = n > 0 ? (size_t)n : 0;
		b->ts_sec = now;
	}
	return (struct ovl_msg_bin){ b->ts, b->ts_len };
}

/* Encode m into b->sb; 0 or -errno (reported). */
static int encode(brk_t *b, const struct ovl_msg *m)
{
	char err[256];
	int rc;

	msgpack_sbuffer_clear(&b->sb);
	b->sb_gen++;
	rc = ovl_msg_encode(m, &b->sb, err, sizeof(err));
	if (rc < 0)
		event(b, BRK_EV_ERROR, "event=error what=encode type=%s reason=\"%s\"",
		      ovl_msg_type_name(m->type), err);
	return rc;
}

/* Whether the membership is saved through a journal (then messages wait for
 * it); a journal needs its compaction (members_save) too. */
static bool journaled(const brk_t *b)
{
	return b->io.members_append && b->io.members_save;
}

/* Whether a save is due before held messages may go. */
static bool persist_pending(const brk_t *b)
{
	return (journaled(b) && (b->n_changes || b->compact)) || b->defs_dirty;
}

/* Bytes a message held for `to` would add (its buffer is shared when b->sb was held last). */
static size_t hold_cost(const brk_t *b)
{
	bool shared = b->held_last && b->held_last_gen == b->sb_gen;

	return sizeof(struct held) + (shared ? 0 : sizeof(struct held_buf) + b->sb.size);
}

/* Keep b->sb for `to` until the next save; false when out of memory. */
static bool hold(brk_t *b, const struct brk_peer *to)
{
	struct held *h = NULL;
	struct held_buf *hb = NULL;
	size_t cost = hold_cost(b);

	if (b->n_held == b->cap_held) {
		size_t cap = b->cap_held ? b->cap_held * 2 : 64;

		h = realloc(b->held, cap * sizeof(*h));
		if (!h)
			return false;
		b->held = h;
		b->cap_held = cap;
	}
	if (b->held_last && b->held_last_gen == b->sb_gen) {
		hb = b->held_last;
	} else {
		hb = malloc(sizeof(*hb) + b->sb.size);
		if (!hb)
			return false;
		hb->refs = 0;
		hb->len = b->sb.size;
		memcpy(hb->data, b->sb.data, b->sb.size);
		b->held_last = hb;
		b->held_last_gen = b->sb_gen;
	}
	hb->refs++;
	b->held[b->n_held++] = (struct held){ *to, hb };
	b->held_bytes += cost;
	return true;
}

static int flush_held(brk_t *b);

/*
 * Send b->sb to `to`. While a change of membership or epoch is not durable
 * (or messages already wait), it waits for the next save, in order: a
 * restarted broker must never have served a state it does not remember.
 * When the held messages would pass BRK_OUTBOX_MAX_BYTES, the save is made
 * at once and they go (b->sb is untouched by that), so nothing is dropped
 * unless the save fails.
 */
static void send_buf(brk_t *b, const struct brk_peer *to)
{
	if (journaled(b) && (persist_pending(b) || b->n_held)) {
		if (b->held_bytes + hold_cost(b) > BRK_OUTBOX_MAX_BYTES)
			flush_held(b);
	}
	if (journaled(b) && (persist_pending(b) || b->n_held)) {
		if (b->held_bytes + hold_cost(b) <= BRK_OUTBOX_MAX_BYTES && hold(b, to))
			return;
		b->st.send_failures++;
		if (!b->held_overflow)
			event(b, BRK_EV_ERROR, "event=error what=hold reason=\"%zu messages (%zu "
			      "bytes) wait for the state to reach the disk: dropping\"", b->n_held,
			      b->held_bytes);
		b->held_overflow = true;
		return;
	}
	if (b->io.send(b->io.arg, to, b->sb.data, b->sb.size) < 0)
		b->st.send_failures++;
}

static void send_msg(brk_t *b, const struct brk_peer *to, const struct ovl_msg *m)
{
	if (encode(b, m) == 0)
		send_buf(b, to);
}

static void send_error(brk_t *b, const struct brk_peer *to, uint64_t rid, unsigned code,
		       const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void send_error(brk_t *b, const struct brk_peer *to, uint64_t rid, unsigned code,
		       const char *fmt, ...)
{
	struct ovl_msg m;
	va_list ap;

	ovl_msg_init(&m, OVL_MSG_ERROR);
	m.rid = rid;
	m.u.error.code = code;
	va_start(ap, fmt);
	vsnprintf(m.u.error.message, sizeof(m.u.error.message), fmt, ap);
	va_end(ap);
	m.u.error.ts = ts_get(b);
	send_msg(b, to, &m);
}

static void refuse(brk_t *b, const struct brk_peer *to, uint64_t rid, unsigned code,
		   const uint8_t *node_id, const char *reason)
{
	char kfp[OVL_ID_FP_BYTES], nfp[OVL_ID_FP_BYTES] = "-";

	b->st.refusals++;
	fp(to->key, kfp);
	if (node_id)
		fp(node_id, nfp);
	event(b, BRK_EV_REFUSE, "event=refuse key=%s node=%s code=%u reason=\"%s\"", kfp, nfp, code,
	      reason);
	send_error(b, to, rid, code, "%s", reason);
}

/* ---- slices ---------------------------------------------------------------------- */

int brk_selector_check(const char *sel, char *err, size_t errlen)
{
	static const char *const keys[] = { "board=", "group=", "chassis=", "site=" };
	const char *v = NULL;

	if (strcmp(sel, "all") == 0)
		return 0;
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (strncmp(sel, keys[i], strlen(keys[i])) == 0)
			v = sel + strlen(keys[i]);
	if (!v) {
		snprintf(err, errlen,
			 "invalid selector '%s': use all, board=X, group=X, chassis=X or site=X", sel);
		return -EINVAL;
	}
	if (!*v || strlen(v) > 63) {
		snprintf(err, errlen, "invalid selector '%s': the value must be 1..63 bytes", sel);
		return -EINVAL;
	}
	for (const char *c = v; *c; c++)
		if (*c <= ' ' || *c > '~') {
			snprintf(err, errlen, "invalid selector '%s': the value must be printable "
				 "ASCII without spaces", sel);
			return -EINVAL;
		}
	return 0;
}

static bool selector_match(const char *sel, const struct node *n)
{
	const char *v = strchr(sel, '=');

	if (strcmp(sel, "all") == 0)
		return true;
	if (!v)
		return false;
	v++;
	if (strncmp(sel, "board=", 6) == 0)
		return strcmp(n->board, v) == 0;
	if (strncmp(sel, "group=", 6) == 0)
		return n->group && strcmp(n->group, v) == 0;
	if (strncmp(sel, "chassis=", 8) == 0)
		return strcmp(n->chassis, v) == 0;
	if (strncmp(sel, "site=", 5) == 0)
		return strcmp(n->site, v) == 0;
	return false;
}

void brk_slice_owner(const struct brk_site *s, const char *name, uint8_t owner[OVL_ID_BYTES])
{
	uint64_t best = 0;

	memcpy(owner, s->id->sign_pk, OVL_ID_BYTES);
	for (unsigned i = 0; i <= s->n_peers; i++) {
		const uint8_t *k = i < s->n_peers ? s->peers[i] : s->id->sign_pk;
		crypto_generichash_state st;
		uint8_t h[8];
		uint64_t v;

		crypto_generichash_init(&st, NULL, 0, sizeof(h));
		crypto_generichash_update(&st, (const uint8_t *)name, strlen(name));
		crypto_generichash_update(&st, k, OVL_ID_BYTES);
		crypto_generichash_final(&st, h, sizeof(h));
		v = ((uint64_t)h[0] << 56) | ((uint64_t)h[1] << 48) | ((uint64_t)h[2] << 40) |
		    ((uint64_t)h[3] << 32) | ((uint64_t)h[4] << 24) | ((uint64_t)h[5] << 16) |
		    ((uint64_t)h[6] << 8) | h[7];
		if (i == 0 || v > best || (v == best && memcmp(k, owner, OVL_ID_BYTES) < 0)) {
			best = v;
			memcpy(owner, k, OVL_ID_BYTES);
		}
	}
}

static struct slice *slice_find(brk_t *b, const char *name)
{
	for (unsigned i = 0; i < b->n_slices; i++)
		if (strcmp(b->slices[i]->name, name) == 0)
			return b->slices[i];
	return NULL;
}

static int member_index(const struct slice *s, const struct node *n)
{
	for (uint32_t i = 0; i < s->n; i++)
		if (s->m[i].n == n)
			return (int)i;
	return -1;
}

/* Is n a member of s? O(slices of n), not O(members of s). */
static bool node_in(const struct node *n, const struct slice *s)
{
	for (unsigned k = 0; k < n->nslices; k++)
		if (n->slices[k] == s)
			return true;
	return false;
}

/* Copy an interned string into a fixed field (a map encodes one per member
 * and field: no printf machinery). */
static void field_copy(char *dst, size_t cap, const char *src)
{
	size_t len = strnlen(src, cap - 1);

	memcpy(dst, src, len);
	dst[len] = 0;
}

static void member_fill(struct ovl_msg_member *mm, const struct member *m)
{
	const struct node *n = m->n;

	memset(mm, 0, sizeof(*mm));
	memcpy(mm->id, n->id, OVL_ID_BYTES);
	memcpy(mm->curve_key, n->peer.key, OVL_KEY_BYTES);
	memcpy(mm->addr, &m->addr, OVL_MSG_ADDR_BYTES);
	mm->port = n->port;
	field_copy(mm->domain.site, sizeof(mm->domain.site), n->site);
	field_copy(mm->domain.chassis, sizeof(mm->domain.chassis), n->chassis);
	field_copy(mm->domain.slot, sizeof(mm->domain.slot), n->slot);
	mm->capacity = n->capacity;
	mm->state = n->state;
	mm->cert = (struct ovl_msg_bin){ n->cert, n->cert_len };
}

/* The members of s into mp (calloc'd array: the caller frees mp->members). */
static int map_fill(const struct slice *s, struct ovl_msg_map *mp)
{
	snprintf(mp->slice, sizeof(mp->slice), "%s", s->name);
	mp->epoch = s->epoch;
	mp->replicas = s->replicas;
	/* only below replicas: a map of the default policy is, and signs, as before */
	mp->min_write_replicas = s->min_write < s->replicas ? s->min_write : 0;
	mp->encrypt = s->encrypt;
	/* only when not the default: a default slice's map is, and signs, as before */
	mp->chunk_size = s->chunk_size != OVL_MSG_CHUNK_SIZE_DEFAULT ? s->chunk_size : 0;
	if (s->n) {
		mp->members = calloc(s->n, sizeof(*mp->members));
		if (!mp->members)
			return -ENOMEM;
	}
	for (uint32_t i = 0; i < s->n; i++)
		member_fill(&mp->members[i], &s->m[i]);
	mp->n_members = s->n;
	mp->left = s->left; /* borrowed */
	mp->n_left = s->n_left;
	return 0;
}

/* Sign the current state of s (PROTOCOL.md 6.4): nodes hand it to clients. */
static int slice_sign(brk_t *b, const struct slice *s, uint8_t sig[OVL_MSG_SIG_BYTES])
{
	struct ovl_msg_map mp;
	int rc;

	memset(&mp, 0, sizeof(mp));
	rc = map_fill(s, &mp);
	if (rc == 0)
		rc = ovl_msg_map_sign(&mp, b->site->id->sign_sk);
	if (rc == 0)
		memcpy(sig, mp.sig, OVL_MSG_SIG_BYTES);
	free(mp.members);
	return rc;
}

/* The full map of s into b->sb. */
static int encode_map(brk_t *b, const struct slice *s, uint64_t rid)
{
	struct ovl_msg m;
	int rc;

	ovl_msg_init(&m, OVL_MSG_MAP);
	m.rid = rid;
	m.u.map.ts = ts_get(b);
	m.u.map.crl = (struct ovl_msg_bin){ b->crl, b->crl_len };
	rc = map_fill(s, &m.u.map);
	/* the definition too (1.4): a node that joined after it registered keeps
	 * it, and hands it back to a broker that lost its state */
	snprintf(m.u.map.selector, sizeof(m.u.map.selector), "%s", s->selector);
	memcpy(m.u.map.owner, s->owner, OVL_ID_BYTES);
	if (rc == 0)
		rc = ovl_msg_map_sign(&m.u.map, b->site->id->sign_sk);
	if (rc == 0)
		rc = encode(b, &m);
	free(m.u.map.members);
	return rc;
}

static void send_map(brk_t *b, const struct slice *s, const struct brk_peer *to, uint64_t rid)
{
	if (encode_map(b, s, rid) < 0)
		return;
	b->st.maps_sent++;
	send_buf(b, to);
}

/* ---- the journal of membership changes ------------------------------------------- */

/* n as a plain record (its certificate borrowed). */
static void node_rec_fill(struct brk_node_rec *r, const struct node *n)
{
	memset(r, 0, sizeof(*r));
	memcpy(r->id, n->id, OVL_ID_BYTES);
	memcpy(r->curve_key, n->peer.key, OVL_KEY_BYTES);
	field_copy(r->board, sizeof(r->board), n->board);
	field_copy(r->version, sizeof(r->version), n->version);
	field_copy(r->group, sizeof(r->group), n->group ? n->group : "");
	field_copy(r->domain.site, sizeof(r->domain.site), n->site);
	field_copy(r->domain.chassis, sizeof(r->domain.chassis), n->chassis);
	field_copy(r->domain.slot, sizeof(r->domain.slot), n->slot);
	r->capacity = n->capacity;
	r->serial = n->serial;
	r->port = n->port;
	r->state = n->state;
	r->cert = n->cert;
	r->cert_len = n->cert_len;
}

static void changes_clear(brk_t *b)
{
	for (size_t i = 0; i < b->n_changes; i++)
		if (b->changes[i].op == BRK_CHANGE_NODE)
			free((void *)b->changes[i].node.cert);
	b->n_changes = 0;
}

/* A new change record of op for slice s (NULL: none), or NULL: then the
 * next save is a whole one (b->compact), which records it all the same. */
static struct brk_change *change_new(brk_t *b, enum brk_change_op op, const struct slice *s)
{
	struct brk_change *c = NULL;

	if (!journaled(b) || b->compact)
		return NULL;
	if (b->n_changes == b->cap_changes) {
		size_t cap = b->cap_changes ? b->cap_changes * 2 : 64;

		c = realloc(b->changes, cap * sizeof(*c));
		if (!c) {
			changes_clear(b);
			b->compact = true;
			return NULL;
		}
		b->changes = c;
		b->cap_changes = cap;
	}
	c = &b->changes[b->n_changes++];
	memset(c, 0, sizeof(*c));
	c->op = op;
	if (s)
		snprintf(c->slice, sizeof(c->slice), "%s", s->name);
	return c;
}

/* n (a member of some slice) as it is now, certificate included. */
static void log_node(brk_t *b, const struct node *n)
{
	struct brk_change *c = change_new(b, BRK_CHANGE_NODE, NULL);
	uint8_t *cert = NULL;

	if (!c)
		return;
	node_rec_fill(&c->node, n);
	c->node.cert = NULL;
	if (n->cert_len) {
		cert = malloc(n->cert_len);
		if (!cert) {
			b->n_changes--;
			changes_clear(b);
			b->compact = true;
			return;
		}
		memcpy(cert, n->cert, n->cert_len);
		c->node.cert = cert;
	}
}

static void log_state(brk_t *b, const struct node *n)
{
	struct brk_change *c = change_new(b, BRK_CHANGE_STATE, NULL);

	if (!c)
		return;
	memcpy(c->node.id, n->id, OVL_ID_BYTES);
	c->node.state = n->state;
}

static void log_epoch(brk_t *b, const struct slice *s)
{
	struct brk_change *c = change_new(b, BRK_CHANGE_EPOCH, s);

	if (c)
		c->epoch = s->epoch;
}

static void log_member(brk_t *b, const struct slice *s, const struct member *m)
{
	struct brk_change *c = change_new(b, BRK_CHANGE_MEMBER, s);

	if (!c)
		return;
	memcpy(c->member.id, m->n->id, OVL_ID_BYTES);
	memcpy(c->member.addr, &m->addr, OVL_MSG_ADDR_BYTES);
}

static void log_remove(brk_t *b, const struct slice *s, const uint8_t *id)
{
	struct brk_change *c = change_new(b, BRK_CHANGE_REMOVE, s);

	if (c)
		memcpy(c->member.id, id, OVL_ID_BYTES);
}

static void log_left(brk_t *b, const struct slice *s, const struct ovl_msg_left *l)
{
	struct brk_change *c = change_new(b, BRK_CHANGE_LEFT, s);

	if (c)
		c->left = *l;
}

static void log_drop(brk_t *b, const struct slice *s)
{
	change_new(b, BRK_CHANGE_DROP, s);
}

/* Forget the removal record of id in s (it is a member again). */
static void left_drop(struct slice *s, const uint8_t *id)
{
	for (uint32_t i = 0; i < s->n_left; i++)
		if (memcmp(s->left[i].id, id, OVL_ID_BYTES) == 0) {
			memmove(&s->left[i], &s->left[i + 1], (s->n_left - i - 1) * sizeof(*s->left));
			s->n_left--;
			return;
		}
}

/* Record that id left s at epoch, replacing an older record of it; past
 * BRK_LEFT_MAX the oldest goes. NULL when out of memory (the removal goes
 * ahead: a node that holds the member then refuses the map and says so). */
static const struct ovl_msg_left *left_add(struct slice *s, const uint8_t *id, uint64_t epoch,
					   enum ovl_msg_left_reason why)
{
	struct ovl_msg_left *g = NULL;

	left_drop(s, id);
	if (s->n_left >= BRK_LEFT_MAX) {
		memmove(&s->left[0], &s->left[1], (s->n_left - 1) * sizeof(*s->left));
		s->n_left--;
	}
	g = realloc(s->left, (s->n_left + 1) * sizeof(*g));
	if (!g)
		return NULL;
	s->left = g;
	memset(&g[s->n_left], 0, sizeof(*g));
	memcpy(g[s->n_left].id, id, OVL_ID_BYTES);
	g[s->n_left].epoch = epoch;
	g[s->n_left].reason = why;
	return &g[s->n_left++];
}

/* What one epoch changed in a slice: members added or changed (complete),
 * ids removed, and removal records (those of `removed`, and records learned
 * from a node's map). Arrays are borrowed. */
struct change {
	struct ovl_msg_member *members;
	uint32_t n_members;
	uint8_t (*removed)[OVL_MSG_ID_BYTES];
	uint32_t n_removed;
	struct ovl_msg_left *left;
	uint32_t n_left;
};

/*
 * Move s (already changed) from its epoch to `epoch` and tell every member
 * except `skip` what changed, plus the revocation list when with_crl. The
 * same bytes go to every member, so a delta costs O(1) per member whatever
 * the slice's size.
 */
static void slice_delta_to(brk_t *b, struct slice *s, uint64_t epoch, const struct change *c,
			   bool with_crl, const struct node *skip)
{
	struct ovl_msg m;

	ovl_msg_init(&m, OVL_MSG_MAP_DELTA);
	m.u.delta.ts = ts_get(b);
	snprintf(m.u.delta.slice, sizeof(m.u.delta.slice), "%s", s->name);
	m.u.delta.base_epoch = s->epoch;
	s->epoch = epoch;
	b->dirty = true;
	log_epoch(b, s); /* after the records of the change itself (the callers') */
	m.u.delta.epoch = s->epoch;
	m.u.delta.members = c->members;
	m.u.delta.n_members = c->n_members;
	m.u.delta.removed = c->removed;
	m.u.delta.n_removed = c->n_removed;
	m.u.delta.left = c->left;
	m.u.delta.n_left = c->n_left;
	if (with_crl)
		m.u.delta.crl = (struct ovl_msg_bin){ b->crl, b->crl_len };
	m.u.delta.encrypt = s->encrypt;
	if (slice_sign(b, s, m.u.delta.sig) < 0 || encode(b, &m) < 0)
		return;
	for (uint32_t i = 0; i < s->n; i++) {
		if (s->m[i].n == skip || s->m[i].n->state == OVL_MSG_STATE_OUT ||
		    !s->m[i].n->peer.rid_len)
			continue;
		b->st.deltas_sent++;
		b->st.delta_bytes += b->sb.size;
		send_buf(b, &s->m[i].n->peer);
	}
}

/* The next epoch of s, with `changed` (one member, complete) or `removed`
 * (one id, with its record `left`). */
static void slice_delta(brk_t *b, struct slice *s, const struct member *changed,
			const uint8_t *removed, const struct ovl_msg_left *left, bool with_crl,
			const struct node *skip)
{
	struct ovl_msg_member mm;
	uint8_t rm[1][OVL_MSG_ID_BYTES];
	struct ovl_msg_left rec;
	struct change c;

	memset(&c, 0, sizeof(c));
	if (changed) {
		member_fill(&mm, changed);
		c.members = &mm;
		c.n_members = 1;
	}
	if (removed) {
		memcpy(rm[0], removed, OVL_MSG_ID_BYTES);
		c.removed = rm;
		c.n_removed = 1;
	}
	if (left) {
		rec = *left;
		c.left = &rec;
		c.n_left = 1;
	}
	slice_delta_to(b, s, s->epoch + 1, &c, with_crl, skip);
}

/* Add n to s: assign its address, bump the epoch, delta to the others. */
/* Make n a member of s at addr (no epoch change, no delta). 0 or -ENOMEM, -E2BIG. */
static int member_push(struct slice *s, struct node *n, const struct in6_addr *addr)
{
	struct slice **ns = NULL;
	struct member *grown = NULL;

	if (n->nslices >= BRK_NODE_SLICES_MAX)
		return -E2BIG;
	if (s->n == s->cap) {
		uint32_t cap = s->cap ? s->cap * 2 : 8;

		grown = realloc(s->m, cap * sizeof(*s->m));
		if (!grown)
			return -ENOMEM;
		s->m = grown;
		s->cap = cap;
	}
	ns = realloc(n->slices, (n->nslices + 1u) * sizeof(*ns));
	if (!ns)
		return -ENOMEM;
	n->slices = ns;
	s->m[s->n].addr = *addr;
	s->m[s->n].n = n;
	s->m[s->n].learned = 0;
	s->n++;
	n->slices[n->nslices++] = s;
	return 0;
}

static int slice_join(brk_t *b, struct slice *s, struct node *n)
{
	struct in6_addr *taken = NULL, a;
	char nfp[OVL_ID_FP_BYTES], addr[OVL_SLICE_ADDR_STRLEN];
	int c, rc = 0;

	if (n->nslices >= BRK_NODE_SLICES_MAX)
		return -E2BIG;
	if (s->n) {
		taken = malloc(s->n * sizeof(*taken));
		if (!taken)
			return -ENOMEM;
		for (uint32_t i = 0; i < s->n; i++)
			taken[i] = s->m[i].addr;
	}
	c = ovl_slice_addr_assign(&s->os, n->id, taken, s->n, OVL_SLICE_COUNTER_MAX_DEFAULT, &a);
	if (c < 0) {
		rc = c;
		goto out;
	}
	if ((rc = member_push(s, n, &a)) < 0)
		goto out;
	b->st.introductions++;
	left_drop(s, n->id);
	if (n->nslices == 1)
		log_node(b, n); /* its first slice: the journal learns the node */
	log_member(b, s, &s->m[s->n - 1]);
	slice_delta(b, s, &s->m[s->n - 1], NULL, NULL, false, n);
	fp(n->id, nfp);
	ovl_slice_addr_format(&s->m[s->n - 1].addr, addr, sizeof(addr));
	event(b, BRK_EV_SLICE, "event=join slice=%s node=%s addr=%s counter=%d epoch=%llu members=%u",
	      s->name, nfp, addr, c, (unsigned long long)s->epoch, s->n);
out:
	free(taken);
	return rc;
}

/* Take n out of s's members (no epoch change, no record, no delta). */
static void member_remove(struct slice *s, struct node *n)
{
	int i = member_index(s, n);

	if (i < 0)
		return;
	s->m[i] = s->m[s->n - 1];
	s->n--;
	for (unsigned k = 0; k < n->nslices; k++)
		if (n->slices[k] == s) {
			n->slices[k] = n->slices[--n->nslices];
			break;
		}
}

/* Remove n from s (delta `removed` with its record to the rest). The
 * record carries the epoch of the removal and why (PROTOCOL.md 6.5). */
static void slice_leave(brk_t *b, struct slice *s, struct node *n, bool with_crl,
			enum ovl_msg_left_reason why)
{
	const struct ovl_msg_left *rec = NULL;

	if (member_index(s, n) < 0)
		return;
	rec = left_add(s, n->id, s->epoch + 1, why);
	if (rec)
		log_left(b, s, rec);
	log_remove(b, s, n->id);
	member_remove(s, n);
	slice_delta(b, s, NULL, n->id, rec, with_crl, NULL);
}

/* A member changed: its state only, or more (certificate, port...: `full`).
 * Delta to every member. */
static void node_changed(brk_t *b, struct node *n, bool full)
{
	if (n->nslices && full)
		log_node(b, n);
	else if (n->nslices)
		log_state(b, n);
	for (unsigned k = 0; k < n->nslices; k++) {
		struct slice *s = n->slices[k];
		int i = member_index(s, n);

		if (i >= 0 && s->ours)
			slice_delta(b, s, &s->m[i], NULL, NULL, false, NULL);
	}
}

static int slice_add(brk_t *b, const char *name, unsigned replicas, const char *selector,
		     const uint8_t *owner, uint64_t epoch, struct slice **out, char *err,
		     size_t errlen)
{
	struct slice *s = NULL;
	int rc;

	if (slice_find(b, name)) {
		snprintf(err, errlen, "slice '%s' already exists", name);
		return -EEXIST;
	}
	if (b->n_slices >= BRK_SLICES_MAX) {
		snprintf(err, errlen, "cannot create slice '%s': %d slices exist already", name,
			 BRK_SLICES_MAX);
		return -ENOSPC;
	}
	if (replicas < 1 || replicas > OVL_MSG_REPLICAS_MAX) {
		snprintf(err, errlen, "slice '%s': replicas %u is outside 1..%d", name, replicas,
			 OVL_MSG_REPLICAS_MAX);
		return -EINVAL;
	}
	if ((rc = brk_selector_check(selector, err, errlen)) < 0)
		return rc;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	rc = ovl_slice_init(&s->os, b->site->site, name, err, errlen);
	if (rc < 0) {
		free(s);
		return rc;
	}
	snprintf(s->name, sizeof(s->name), "%s", name);
	snprintf(s->selector, sizeof(s->selector), "%s", selector);
	memcpy(s->owner, owner, OVL_ID_BYTES);
	s->ours = memcmp(owner, b->site->id->sign_pk, OVL_ID_BYTES) == 0;
	s->replicas = replicas;
	s->min_write = replicas;
	s->chunk_size = OVL_MSG_CHUNK_SIZE_DEFAULT;
	s->epoch = epoch;
	b->slices[b->n_slices++] = s;
	b->dirty = true;
	b->defs_dirty = true;
	if (out)
		*out = s;
	return 0;
}

/* The membership of every slice as plain values (borrowing the core's
 * arrays and certificates); the caller frees ms->nodes, ms->slices and each
 * slice's members with membership_free. */
static void membership_free(struct brk_membership *ms)
{
	for (size_t i = 0; i < ms->n_slices; i++)
		free(ms->slices[i].members);
	free(ms->slices);
	free(ms->nodes);
	memset(ms, 0, sizeof(*ms));
}

static int membership_get(brk_t *b, struct brk_membership *ms)
{
	memset(ms, 0, sizeof(*ms));
	ms->slices = calloc(b->n_slices + 1u, sizeof(*ms->slices));
	ms->nodes = calloc(b->n_nodes + 1u, sizeof(*ms->nodes));
	if (!ms->slices || !ms->nodes)
		goto nomem;
	for (size_t i = 0; i < b->n_nodes; i++)
		if (b->nodes[i]->nslices)
			node_rec_fill(&ms->nodes[ms->n_nodes++], b->nodes[i]);
	for (unsigned i = 0; i < b->n_slices; i++) {
		const struct slice *s = b->slices[i];
		struct brk_slice_members *o = &ms->slices[i];

		snprintf(o->name, sizeof(o->name), "%s", s->name);
		o->epoch = s->epoch;
		o->left = s->left;
		o->n_left = s->n_left;
		if (s->n && !(o->members = calloc(s->n, sizeof(*o->members))))
			goto nomem;
		for (uint32_t k = 0; k < s->n; k++) {
			memcpy(o->members[k].id, s->m[k].n->id, OVL_ID_BYTES);
			memcpy(o->members[k].addr, &s->m[k].addr, OVL_MSG_ADDR_BYTES);
		}
		o->n_members = s->n;
		ms->n_slices++;
	}
	return 0;
nomem:
	membership_free(ms);
	return -ENOMEM;
}

/* The slice definitions and epochs into DIR/slices. A load takes the higher
 * epoch of this file and the membership's, so the epochs may lag here (they
 * are written every BRK_SLICE_FLUSH_MS), the definitions not. 0 or -errno
 * (reported). */
static int slices_save(brk_t *b)
{
	struct brk_slice_def *defs = NULL;
	char err[256];
	int rc;

	if (!b->io.slices_save) {
		b->dirty = b->defs_dirty = false;
		return 0;
	}
	defs = calloc(b->n_slices + 1u, sizeof(*defs));
	if (!defs) {
		event(b, BRK_EV_ERROR, "event=error what=persist reason=\"out of memory\"");
		return -ENOMEM;
	}
	for (unsigned i = 0; i < b->n_slices; i++) {
		const struct slice *s = b->slices[i];
		struct brk_slice_def *d = &defs[i];

		snprintf(d->name, sizeof(d->name), "%s", s->name);
		snprintf(d->selector, sizeof(d->selector), "%s", s->selector);
		memcpy(d->owner, s->owner, OVL_ID_BYTES);
		d->replicas = s->replicas;
		d->min_write = s->min_write;
		d->epoch = s->epoch;
		d->encrypt = s->encrypt;
		d->allow_same_domain = s->allow_same_domain;
		d->chunk_size = s->chunk_size;
	}
	rc = b->io.slices_save(b->io.files, defs, b->n_slices, err, sizeof(err));
	if (rc < 0)
		event(b, BRK_EV_ERROR, "event=error what=persist reason=\"%s\"", err);
	else
		b->dirty = b->defs_dirty = false;
	free(defs);
	return rc;
}

/* The whole membership through members_save: a compaction. It holds every
 * change recorded so far, which are dropped. 0 or -errno (reported). */
static int compact_now(brk_t *b)
{
	struct brk_membership ms;
	char err[256];
	int rc = 0;

	if (b->io.members_save) {
		rc = membership_get(b, &ms);
		if (rc < 0) {
			event(b, BRK_EV_ERROR, "event=error what=persist reason=\"out of memory\"");
			return rc;
		}
		rc = b->io.members_save(b->io.files, &ms, err, sizeof(err));
		membership_free(&ms);
		if (rc < 0) {
			event(b, BRK_EV_ERROR, "event=error what=persist reason=\"%s\"", err);
			return rc;
		}
	}
	changes_clear(b);
	b->compact = b->compact_due = false;
	if (b->dirty)
		slices_save(b); /* its epochs catch up (only a definition must not lag) */
	return 0;
}

/*
 * Make the membership durable: the changes recorded since the last save,
 * appended to the journal in one batch (one fdatasync), or the whole of it
 * when b->compact; then DIR/slices when a definition changed. The journal
 * goes first: a slice it lists without a definition is skipped on load,
 * while a definition without its journal would come back without members.
 * 0 or -errno (reported; after a failed append the next try saves whole).
 */
static int persist(brk_t *b)
{
	char err[256];
	int rc = 0;

	if (journaled(b) && b->compact) {
		rc = compact_now(b);
	} else if (journaled(b) && b->n_changes) {
		rc = b->io.members_append(b->io.files, b->changes, b->n_changes, err, sizeof(err));
		if (rc < 0) {
			event(b, BRK_EV_ERROR, "event=error what=persist reason=\"%s\"", err);
			changes_clear(b);
			b->compact = true;
		} else {
			changes_clear(b);
			b->compact_due |= rc == 1;
			rc = 0;
		}
	}
	if (rc == 0 && b->defs_dirty)
		rc = slices_save(b);
	return rc;
}

static int slices_load(brk_t *b, char *err, size_t errlen)
{
	struct brk_slice_def *defs = NULL;
	size_t n = 0;
	int rc;

	if (!b->io.slices_load)
		return 0;
	rc = b->io.slices_load(b->io.files, &defs, &n, err, errlen);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		const struct brk_slice_def *d = &defs[i];
		struct slice *ns = NULL;
		char e2[200];

		rc = slice_add(b, d->name, d->replicas, d->selector, d->owner, d->epoch, &ns, e2,
			       sizeof(e2));
		if (rc == 0 && d->min_write > d->replicas) {
			snprintf(e2, sizeof(e2), "min_write %u is above replicas %u", d->min_write,
				 d->replicas);
			rc = -EINVAL;
		}
		if (rc == 0)
			rc = ovl_msg_chunk_size_check(d->chunk_size, e2, sizeof(e2));
		if (rc < 0) {
			snprintf(err, errlen, "saved slice definition '%s' refused: %s", d->name, e2);
		} else {
			ns->encrypt = d->encrypt;
			ns->min_write = d->min_write ? d->min_write : d->replicas;
			ns->allow_same_domain = d->allow_same_domain;
			if (d->chunk_size)
				ns->chunk_size = d->chunk_size;
		}
	}
	free(defs);
	b->dirty = b->defs_dirty = false;
	return rc;
}

static int slice_define(brk_t *b, const char *name, const char *selector,
			const struct brk_slice_policy *p, bool check, char *err, size_t errlen);

int brk_slice_create(brk_t *b, const char *name, unsigned replicas, const char *selector,
		     char *err, size_t errlen)
{
	return brk_slice_define(b, name, replicas, selector, false, err, errlen);
}

int brk_slice_define(brk_t *b, const char *name, unsigned replicas, const char *selector,
		     bool encrypt, char *err, size_t errlen)
{
	struct brk_slice_policy p = { .replicas = replicas, .encrypt = encrypt };

	return slice_define(b, name, selector, &p, false, err, errlen);
}

/* Copy src into dst[0..cap) (NUL-terminated), cut at a character boundary. */
static void utf8_copy(char *dst, size_t cap, const char *src)
{
	size_t n = strnlen(src, cap - 1);

	/* back off to the start of a sequence when the next byte continues one */
	while (n > 0 && src[n] && ((unsigned char)src[n] & 0xc0) == 0x80)
		n--;
	memcpy(dst, src, n);
	dst[n] = 0;
}

/* Drop an incomplete UTF-8 sequence at the end of s (after a truncation). */
static void utf8_trim_tail(char *s)
{
	size_t n = strlen(s), k = n, need;
	unsigned char c;

	while (k > 0 && ((unsigned char)s[k - 1] & 0xc0) == 0x80)
		k--;
	if (k == 0)
		return;
	c = (unsigned char)s[k - 1];
	need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
	if (n - (k - 1) < need)
		s[k - 1] = 0;
}

#define DOMAINS_SHOWN 4 /* failure domains named in a refusal */

/*
 * The failure-domain check of brk_slice_define_policy: do the nodes that
 * `selector` matches now (not `out`) span at least `replicas` distinct
 * (site, chassis) pairs? Counting stops at `replicas`, so this is
 * O(nodes x replicas). 0, or -EINVAL with err saying how many domains
 * there are and which replicas was asked for.
 */
static int domains_check(brk_t *b, const char *name, const char *selector, unsigned replicas,
			 char *err, size_t errlen)
{
	const struct node *seen[BRK_REPLICAS_MAX];
	unsigned n_seen = 0;
	size_t matched = 0;
	char list[DOMAINS_SHOWN * 40 + 8] = "";

	if (replicas < 2)
		return 0;
	for (size_t i = 0; i < b->n_nodes && n_seen < replicas; i++) {
		const struct node *n = b->nodes[i];
		unsigned k;

		if (n->state == OVL_MSG_STATE_OUT || !selector_match(selector, n))
			continue;
		matched++;
		for (k = 0; k < n_seen; k++)
			if (strcmp(seen[k]->site, n->site) == 0 &&
			    strcmp(seen[k]->chassis, n->chassis) == 0)
				break;
		if (k == n_seen)
			seen[n_seen++] = n;
	}
	if (n_seen >= replicas)
		return 0;
	if (!matched) {
		snprintf(err, errlen, "slice '%s': replicas %u needs %u failure domains (distinct "
			 "site/chassis) but no registered node matches selector '%s' yet: create it "
			 "once its nodes have registered, or use --allow-same-domain", name, replicas,
			 replicas, selector);
		return -EINVAL;
	}
	/* named in order, whatever order the nodes registered in */
	for (unsigned k = 1; k < n_seen; k++)
		for (unsigned j = k; j > 0; j--) {
			const struct node *t = seen[j];
			int c = strcmp(seen[j - 1]->site, t->site);

			if (c < 0 || (c == 0 && strcmp(seen[j - 1]->chassis, t->chassis) <= 0))
				break;
			seen[j] = seen[j - 1];
			seen[j - 1] = t;
		}
	for (unsigned k = 0; k < n_seen && k < DOMAINS_SHOWN; k++) {
		char site[20], chassis[20];
		size_t len = strlen(list);

		utf8_copy(site, sizeof(site), seen[k]->site);
		utf8_copy(chassis, sizeof(chassis), seen[k]->chassis);
		snprintf(list + len, sizeof(list) - len, "%s%s/%s", k ? ", " : "", site, chassis);
	}
	snprintf(err, errlen, "slice '%s': replicas %u needs %u failure domains (distinct "
		 "site/chassis) but the %zu node(s) selector '%s' matches span %u (%s): add nodes "
		 "in other chassis, lower --replicas, or use --allow-same-domain", name, replicas,
		 replicas, matched, selector, n_seen, list);
	utf8_trim_tail(err);
	return -EINVAL;
}

int brk_slice_define_policy(brk_t *b, const char *name, const char *selector,
			    const struct brk_slice_policy *p, char *err, size_t errlen)
{
	return slice_define(b, name, selector, p, !p->allow_same_domain, err, errlen);
}

/* brk_slice_define_policy, with the failure-domain check only when `check`. */
static int slice_define(brk_t *b, const char *name, const char *selector,
			const struct brk_slice_policy *p, bool check, char *err, size_t errlen)
{
	struct slice *s = NULL;
	uint8_t owner[OVL_ID_BYTES];
	unsigned replicas = p->replicas, min_write = p->min_write ? p->min_write : p->replicas;
	bool encrypt = p->encrypt;
	int rc;

	if (!selector || !*selector)
		selector = "all";
	if (replicas < 1 || replicas > BRK_REPLICAS_MAX) {
		snprintf(err, errlen, "slice '%s': replicas %u is outside 1..%d", name, replicas,
			 BRK_REPLICAS_MAX);
		return -EINVAL;
	}
	if (min_write > replicas) {
		snprintf(err, errlen, "slice '%s': min_write_replicas %u is outside 1..%u (replicas)",
			 name, min_write, replicas);
		return -EINVAL;
	}
	if (p->chunk_size && ovl_msg_chunk_size_check(p->chunk_size, NULL, 0) < 0) {
		snprintf(err, errlen, "slice '%s': chunk_size %u is not %u..%u bytes (1 MiB..64 MiB) "
			 "in multiples of %u (64 KiB)", name, p->chunk_size, OVL_MSG_CHUNK_SIZE_MIN,
			 OVL_MSG_CHUNK_SIZE_MAX, OVL_MSG_CHUNK_SIZE_ALIGN);
		return -EINVAL;
	}
	brk_slice_owner(b->site, name, owner);
	if (memcmp(owner, b->site->id->sign_pk, OVL_ID_BYTES) != 0 && !slice_find(b, name)) {
		char ofp[OVL_ID_FP_BYTES];

		fp(owner, ofp);
		snprintf(err, errlen, "slice '%s' belongs to broker %s of this site (one owner per "
			 "slice, chosen by name among %u brokers): create it there", name, ofp,
			 b->site->n_peers + 1);
		return -EXDEV;
	}
	if (!slice_find(b, name) && (rc = brk_selector_check(selector, err, errlen)) < 0)
		return rc;
	if (!slice_find(b, name) && check &&
	    (rc = domains_check(b, name, selector, replicas, err, errlen)) < 0)
		return rc;
	rc = slice_add(b, name, replicas, selector, b->site->id->sign_pk, 1, &s, err, errlen);
	if (rc < 0)
		return rc;
	s->encrypt = encrypt;
	s->min_write = min_write;
	s->allow_same_domain = p->allow_same_domain;
	if (p->chunk_size)
		s->chunk_size = p->chunk_size;
	log_epoch(b, s);
	event(b, BRK_EV_SLICE, "event=slice_create slice=%s replicas=%u min_write=%u selector=%s "
	      "encrypt=%s same_domain=%s chunk_size=%u epoch=1", name, replicas, min_write, selector,
	      encrypt ? "yes" : "no", p->allow_same_domain ? "allowed" : "no", s->chunk_size);
	for (size_t i = 0; i < b->n_nodes; i++) {
		struct node *n = b->nodes[i];

		if (n->state == OVL_MSG_STATE_OUT || !selector_match(selector, n))
			continue;
		if (slice_join(b, s, n) == 0)
			send_map(b, s, &n->peer, 0);
	}
	brk_flush(b); /* a definition change reaches the disk at once */
	return 0;
}

static void slice_free(struct slice *s)
{
	free(s->left);
	free(s->m);
	free(s);
}

int brk_slice_delete(brk_t *b, const char *name, char *err, size_t errlen)
{
	for (unsigned i = 0; i < b->n_slices; i++) {
		struct slice *s = b->slices[i];

		if (strcmp(s->name, name) != 0)
			continue;
		while (s->n)
			slice_leave(b, s, s->m[s->n - 1].n, false, OVL_MSG_LEFT_DELETED);
		b->slices[i] = b->slices[--b->n_slices];
		event(b, BRK_EV_SLICE, "event=slice_delete slice=%s epoch=%llu", name,
		      (unsigned long long)s->epoch);
		log_drop(b, s);
		slice_free(s);
		b->dirty = b->defs_dirty = true;
		brk_flush(b); /* a definition change reaches the disk at once */
		return 0;
	}
	snprintf(err, errlen, "slice '%s' does not exist", name);
	return -ENOENT;
}

/* ---- registry --------------------------------------------------------------------- */

static void node_free(struct node *n)
{
	if (!n)
		return;
	free(n->cert);
	free(n->slices);
	free(n);
}

static void node_forget(brk_t *b, struct node *n, enum ovl_msg_left_reason why)
{
	while (n->nslices)
		slice_leave(b, n->slices[n->nslices - 1], n, false, why);
	ht_remove(b, &b->by_id, n);
	ht_remove(b, &b->by_curve, n);
	b->nodes[n->idx] = b->nodes[--b->n_nodes];
	b->nodes[n->idx]->idx = n->idx;
	node_free(n);
}

/* A new node in the registry with id and peer (its CURVE key); NULL when out
 * of memory. */
static struct node *node_add(brk_t *b, const uint8_t *id, const struct brk_peer *peer)
{
	struct node *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	memcpy(n->id, id, OVL_ID_BYTES);
	n->peer = *peer;
	if (b->n_nodes == b->cap_nodes) {
		size_t cap = b->cap_nodes ? b->cap_nodes * 2 : 64;
		struct node **g = realloc(b->nodes, cap * sizeof(*g));

		if (!g) {
			node_free(n);
			return NULL;
		}
		b->nodes = g;
		b->cap_nodes = cap;
	}
	if (ht_insert(b, &b->by_id, n) < 0 || ht_insert(b, &b->by_curve, n) < 0) {
		ht_remove(b, &b->by_id, n);
		node_free(n);
		return NULL;
	}
	n->idx = (uint32_t)b->n_nodes;
	b->nodes[b->n_nodes++] = n;
	return n;
}

static int issue_cert(brk_t *b, struct node *n, char *err, size_t errlen)
{
	uint8_t buf[OVL_CERT_MAX_BYTES], *copy = NULL;
	uint64_t now = b->io.unix_s(b->io.arg);
	struct ovl_cert c;
	int len;

	ovl_cert_init(&c);
	randombytes_buf(&c.serial, sizeof(c.serial));
	c.serial >>= 1;
	memcpy(c.node_id, n->id, OVL_ID_BYTES);
	memcpy(c.sign_pk, n->id, OVL_ID_BYTES);
	memcpy(c.curve_pk, n->peer.key, OVL_ID_CURVE_BYTES);
	if (n->group && ovl_cert_add_group(&c, n->group, err, errlen) < 0)
		return -EINVAL;
	snprintf(c.site, sizeof(c.site), "%s", n->site);
	snprintf(c.chassis, sizeof(c.chassis), "%s", n->chassis);
	snprintf(c.slot, sizeof(c.slot), "%s", n->slot);
	c.role = OVL_ROLE_NODE;
	c.not_before = now > 300 ? now - 300 : 0; /* tolerate clocks a little behind */
	c.not_after = now + b->p.cert_lifetime_s;
	len = ovl_cert_sign(&c, b->site->id->sign_sk, buf, sizeof(buf), err, errlen);
	if (len < 0)
		return len;
	copy = malloc((size_t)len);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, buf, (size_t)len);
	free(n->cert);
	n->cert = copy;
	n->cert_len = (uint16_t)len;
	n->serial = c.serial;
	return 0;
}

static bool id_in(const uint8_t (*set)[OVL_ID_BYTES], size_t n, const uint8_t *id)
{
	for (size_t i = 0; i < n; i++)
		if (memcmp(set[i], id, OVL_ID_BYTES) == 0)
			return true;
	return false;
}

static int cmp_id(const void *a, const void *c)
{
	return memcmp(a, c, OVL_ID_BYTES);
}

static bool preauthorised(brk_t *b, const uint8_t *id)
{
	return b->n_preauth && bsearch(id, b->preauth, b->n_preauth, OVL_ID_BYTES, cmp_id);
}

static struct brk_token_use *used_find(brk_t *b, const uint8_t hash[32])
{
	for (size_t i = 0; i < b->n_used; i++)
		if (memcmp(b->used[i].hash, hash, 32) == 0)
			return &b->used[i];
	return NULL;
}

static void used_save(brk_t *b)
{
	char err[256];

	if (!b->io.uses_save)
		return;
	if (b->io.uses_save(b->io.files, b->used, b->n_used, err, sizeof(err)) < 0)
		event(b, BRK_EV_ERROR, "event=error what=persist reason=\"%s\"", err);
	else
		b->used_dirty = false;
}

/* Check and consume an enrolment token. 0, or -EACCES with reason. */
static int token_consume(brk_t *b, const char *token, char *reason, size_t rlen)
{
	uint8_t hash[32];
	struct brk_token_use *u = NULL;
	uint64_t now = b->io.unix_s(b->io.arg);

	crypto_generichash(hash, sizeof(hash), (const uint8_t *)token, strlen(token), NULL, 0);
	for (size_t i = 0; i < b->n_tokens; i++) {
		struct token *t = &b->tokens[i];

		if (sodium_memcmp(t->hash, hash, 32) != 0)
			continue;
		if (now > t->expires) {
			snprintf(reason, rlen, "enrolment token has expired");
			return -EACCES;
		}
		u = used_find(b, hash);
		if (u && u->count >= t->uses) {
			snprintf(reason, rlen, "enrolment token has already been used");
			return -EACCES;
		}
		if (!u) {
			struct brk_token_use *g = realloc(b->used, (b->n_used + 1) * sizeof(*g));

			if (!g) {
				snprintf(reason, rlen, "out of memory");
				return -ENOMEM;
			}
			b->used = g;
			u = &b->used[b->n_used++];
			memcpy(u->hash, hash, 32);
			u->count = 0;
		}
		u->count++;
		/* the use that exhausts a token reaches the disk before the reply, so
		 * a spent token never comes back after a crash; other uses ride the
		 * next flush (within BRK_SLICE_FLUSH_MS): one fsync per registration
		 * would bound admission at a few hundred nodes a second */
		if (u->count >= t->uses)
			used_save(b);
		else
			b->used_dirty = true;
		return 0;
	}
	snprintf(reason, rlen, "enrolment token is not valid");
	return -EACCES;
}

static bool sig_ok(const struct ovl_msg_register *r)
{
	uint8_t msg[sizeof(BRK_REGISTER_DOMAIN) + 2 * 32];

	memcpy(msg, BRK_REGISTER_DOMAIN, sizeof(BRK_REGISTER_DOMAIN)); /* with its NUL */
	memcpy(msg + sizeof(BRK_REGISTER_DOMAIN), r->node_id, 32);
	memcpy(msg + sizeof(BRK_REGISTER_DOMAIN) + 32, r->curve_key, 32);
	return crypto_sign_verify_detached(r->sig, msg, sizeof(msg), r->node_id) == 0;
}

/* Admission by a certificate of this site. 0 or -EACCES with reason. */
static int cert_admits(brk_t *b, const struct ovl_msg_register *r, char *reason, size_t rlen)
{
	struct ovl_trust trust = { { 0 }, NULL, 0 };
	struct ovl_cert nc, bc;
	char e2[200];
	int rc;

	memcpy(trust.ca_pk, b->site->ca_pk, OVL_ID_BYTES);
	if (r->broker_cert.len)
		rc = ovl_cert_verify_chain(&nc, &bc, r->cert.ptr, r->cert.len, r->broker_cert.ptr,
					   r->broker_cert.len, &trust, b->io.unix_s(b->io.arg), e2,
					   sizeof(e2));
	else
		rc = ovl_cert_verify_chain(&nc, &bc, r->cert.ptr, r->cert.len, b->site->broker_cert,
					   b->site->broker_cert_len, &trust,
					   b->io.unix_s(b->io.arg), e2, sizeof(e2));
	if (rc < 0) {
		snprintf(reason, rlen, "certificate refused: %s", e2);
		return -EACCES;
	}
	if (memcmp(nc.node_id, r->node_id, OVL_ID_BYTES) != 0 ||
	    memcmp(nc.curve_pk, r->curve_key, OVL_ID_CURVE_BYTES) != 0) {
		snprintf(reason, rlen, "certificate refused: it was issued for other keys");
		return -EACCES;
	}
	if (nc.role != OVL_ROLE_NODE) {
		snprintf(reason, rlen, "certificate refused: role is not node");
		return -EACCES;
	}
	for (size_t i = 0; i < b->rv.n_serials; i++)
		if (b->rv.serials[i] == nc.serial &&
		    memcmp(bc.sign_pk, b->site->id->sign_pk, OVL_ID_BYTES) == 0) {
			snprintf(reason, rlen, "certificate serial %llu is revoked",
				 (unsigned long long)nc.serial);
			return -EACCES;
		}
	return 0;
}

static bool is_admin(brk_t *b, const uint8_t key[OVL_KEY_BYTES])
{
	for (unsigned i = 0; i < b->site->n_admins; i++)
		if (memcmp(b->site->admin_keys[i], key, OVL_KEY_BYTES) == 0)
			return true;
	return false;
}

/* Learn slice definitions and epochs that a registering node has cached. */
static void learn_slices(brk_t *b, const struct ovl_msg_register *r, const char *nfp)
{
	for (uint32_t i = 0; i < r->n_slices; i++) {
		const struct ovl_msg_slice *d = &r->slices[i];
		struct slice *s = slice_find(b, d->name);
		char e2[200];

		if (!s && d->selector[0] && d->replicas) {
			const uint8_t *owner = !ovl_mem_is_zero(d->owner, OVL_ID_BYTES) ?
						       d->owner : b->site->id->sign_pk;

			if (slice_add(b, d->name, d->replicas, d->selector, owner, d->epoch + 1, &s,
				      e2, sizeof(e2)) < 0) {
				event(b, BRK_EV_REFUSE, "event=refuse_slice node=%s slice=%s reason=\"%s\"",
				      nfp, d->name, e2);
				continue;
			}
			s->encrypt = d->encrypt;
			if (d->min_write_replicas && d->min_write_replicas <= s->replicas)
				s->min_write = d->min_write_replicas;
			if (d->chunk_size) /* checked by the codec */
				s->chunk_size = d->chunk_size;
			if (!s->ours)
				s->epoch = d->epoch;
			log_epoch(b, s);
			event(b, BRK_EV_SLICE,
			      "event=slice_recover slice=%s replicas=%u selector=%s epoch=%llu "
			      "owner=%s from=%s", s->name, s->replicas, s->selector,
			      (unsigned long long)s->epoch, s->ours ? "self" : "other", nfp);
			continue;
		}
		if (!s)
			continue;
		if (s->ours && d->epoch >= s->epoch) {
			/* never hand out an epoch a node already holds with other content */
			s->epoch = d->epoch + 1;
			b->dirty = true;
			log_epoch(b, s);
		} else if (!s->ours && d->epoch > s->epoch) {
			s->epoch = d->epoch;
			b->dirty = true;
			log_epoch(b, s);
		}
	}
}

static void fill_slice_ref(struct ovl_msg_slice *o, const struct slice *s)
{
	memset(o, 0, sizeof(*o));
	snprintf(o->name, sizeof(o->name), "%s", s->name);
	o->epoch = s->epoch;
	o->replicas = s->replicas;
	o->members = s->n;
	snprintf(o->selector, sizeof(o->selector), "%s", s->selector);
	memcpy(o->owner, s->owner, OVL_ID_BYTES);
	o->encrypt = s->encrypt;
	o->min_write_replicas = s->min_write;
	o->allow_same_domain = s->allow_same_domain;
	o->chunk_size = s->chunk_size != OVL_MSG_CHUNK_SIZE_DEFAULT ? s->chunk_size : 0;
}

static void handle_register(brk_t *b, const struct brk_peer *from, const struct ovl_msg *m)
{
	const struct ovl_msg_register *r = &m->u.reg;
	struct node *n = ht_find(b, &b->by_id, r->node_id), *byk = NULL;
	struct ovl_msg ok;
	const char *via = "known";
	char reason[256] = "", nfp[OVL_ID_FP_BYTES];
	const char *board, *version, *site, *chassis, *slot, *group = NULL;
	bool fresh = false;
	int rc;

	fp(r->node_id, nfp);
	if (memcmp(from->key, r->curve_key, OVL_KEY_BYTES) != 0) {
		refuse(b, from, m->rid, OVL_MSG_ERR_DENIED, r->node_id,
		       "register: curve_key is not the key of this connection");
		return;
	}
	if (!sig_ok(r)) {
		refuse(b, from, m->rid, OVL_MSG_ERR_DENIED, r->node_id,
		       "register: proof of possession of node_id failed (field 'sig')");
		return;
	}
	if (id_in(b->rv.ids, b->rv.n_ids, r->node_id)) {
		refuse(b, from, m->rid, OVL_MSG_ERR_REVOKED, r->node_id, "node is revoked");
		return;
	}
	if (n && memcmp(n->peer.key, r->curve_key, OVL_KEY_BYTES) != 0) {
		snprintf(reason, sizeof(reason),
			 "node id %s is already registered with another key", nfp);
		refuse(b, from, m->rid, OVL_MSG_ERR_DENIED, r->node_id, reason);
		return;
	}
	byk = ht_find(b, &b->by_curve, r->curve_key);
	if (byk && byk != n) {
		refuse(b, from, m->rid, OVL_MSG_ERR_DENIED, r->node_id,
		       "curve key is already registered for another node id");
		return;
	}
	if (from->rid_len == 0 || from->rid_len > BRK_RID_MAX_BYTES) {
		refuse(b, from, m->rid, OVL_MSG_ERR_BAD_REQUEST, r->node_id,
		       "routing id longer than 16 bytes: do not set ZMQ_ROUTING_ID");
		return;
	}
	if (!n && b->io.admission_refresh)
		/* a token or preauth minted a moment ago (a stat when unchanged) */
		b->io.admission_refresh(b->io.files, b);
	if (!n) {
		if (r->cert.len && cert_admits(b, r, reason, sizeof(reason)) == 0)
			via = "certificate";
		else if (preauthorised(b, r->node_id))
			via = "preauth";
		else if (r->token[0]) {
			char treason[128];

			if (token_consume(b, r->token, treason, sizeof(treason)) < 0) {
				refuse(b, from, m->rid, OVL_MSG_ERR_DENIED, r->node_id, treason);
				return;
			}
			via = "token";
		} else {
			if (!reason[0])
				snprintf(reason, sizeof(reason),
					 "unknown node %s: no enrolment token, not pre-authorised "
					 "and no valid certificate of this site", nfp);
			refuse(b, from, m->rid, OVL_MSG_ERR_DENIED, r->node_id, reason);
			return;
		}
		if (b->n_nodes >= b->p.max_nodes) {
			refuse(b, from, m->rid, OVL_MSG_ERR_BUSY, r->node_id,
			       "the registry is full");
			return;
		}
	}
	board = intern(b, r->board);
	version = intern(b, r->version);
	site = intern(b, r->domain.site);
	chassis = intern(b, r->domain.chassis);
	slot = intern(b, r->domain.slot);
	if (r->group[0])
		group = intern(b, r->group);
	if (!board || !version || !site || !chassis || !slot || (r->group[0] && !group)) {
		refuse(b, from, m->rid, OVL_MSG_ERR_BUSY, r->node_id,
		       "too many distinct board, version or domain names");
		return;
	}
	if (!n) {
		n = node_add(b, r->node_id, from);
		if (!n) {
			send_error(b, from, m->rid, OVL_MSG_ERR_INTERNAL, "out of memory");
			return;
		}
		fresh = true;
	}
	n->peer = *from;
	n->board = board;
	n->version = version;
	n->site = site;
	n->chassis = chassis;
	n->slot = slot;
	n->group = group;
	n->capacity = r->capacity;
	n->port = r->port;
	n->last_ms = now_ms(b);
	n->state = OVL_MSG_STATE_UP;
	n->heard = true;
	rc = issue_cert(b, n, reason, sizeof(reason));
	if (rc < 0) {
		if (fresh)
			node_forget(b, n, OVL_MSG_LEFT_EXPIRED); /* in no slice yet */
		refuse(b, from, m->rid, OVL_MSG_ERR_BAD_REQUEST, r->node_id, reason);
		return;
	}
	b->st.registrations++;
	learn_slices(b, r, nfp);
	event(b, BRK_EV_ADMIT,
	      "event=admit node=%s via=%s board=%s site=%s chassis=%s slot=%s serial=%llu%s",
	      nfp, via, n->board, n->site, n->chassis, n->slot, (unsigned long long)n->serial,
	      fresh ? "" : " again=1");
	/* join every slice it matches; an existing member gets its new cert to the others */
	node_changed(b, n, true);
	for (unsigned i = 0; i < b->n_slices; i++) {
		struct slice *s = b->slices[i];

		if (s->ours && !node_in(n, s) && selector_match(s->selector, n))
			slice_join(b, s, n);
	}
	ovl_msg_init(&ok, OVL_MSG_REGISTER_OK);
	ok.rid = m->rid;
	ok.u.reg_ok.ts = ts_get(b);
	ok.u.reg_ok.cert = (struct ovl_msg_bin){ n->cert, n->cert_len };
	ok.u.reg_ok.heartbeat_ms = (uint32_t)b->p.heartbeat_ms;
	ok.u.reg_ok.broker_cert = (struct ovl_msg_bin){ b->site->broker_cert,
							b->site->broker_cert_len };
	ok.u.reg_ok.crl = (struct ovl_msg_bin){ b->crl, b->crl_len };
	ok.u.reg_ok.slices = calloc(n->nslices + 1u, sizeof(*ok.u.reg_ok.slices));
	if (!ok.u.reg_ok.slices) {
		send_error(b, from, m->rid, OVL_MSG_ERR_INTERNAL, "out of memory");
		return;
	}
	for (unsigned k = 0; k < n->nslices; k++)
		fill_slice_ref(&ok.u.reg_ok.slices[k], n->slices[k]);
	ok.u.reg_ok.n_slices = n->nslices;
	send_msg(b, from, &ok);
	free(ok.u.reg_ok.slices);
	for (unsigned k = 0; k < n->nslices; k++)
		send_map(b, n->slices[k], from, 0);
}

static void heartbeat_reply(brk_t *b, const struct brk_peer *to, uint64_t rid, uint64_t seq,
			    struct node *n)
{
	struct ovl_msg ok;
	struct ovl_msg_slice refs[BRK_NODE_SLICES_MAX];

	ovl_msg_init(&ok, OVL_MSG_HEARTBEAT_OK);
	ok.rid = rid;
	ok.u.hb_ok.ts = ts_get(b);
	ok.u.hb_ok.seq = seq;
	for (unsigned k = 0; k < n->nslices; k++) {
		memset(&refs[k], 0, sizeof(refs[k]));
		snprintf(refs[k].name, sizeof(refs[k].name), "%s", n->slices[k]->name);
		refs[k].epoch = n->slices[k]->epoch;
	}
	ok.u.hb_ok.slices = n->nslices ? refs : NULL;
	ok.u.hb_ok.n_slices = n->nslices;
	if (b->fleet) {
		const uint8_t *fb = NULL;
		size_t fl = 0;

		if (brk_fleet_assignment(b->fleet, n->id, &fb, &fl))
			ok.u.hb_ok.fleet = (struct ovl_msg_bin){ fb, fl };
	}
	send_msg(b, to, &ok);
}

static void set_state(brk_t *b, struct node *n, enum ovl_msg_state st, uint64_t silent_ms)
{
	char nfp[OVL_ID_FP_BYTES];

	fp(n->id, nfp);
	event(b, BRK_EV_STATE, "event=state node=%s from=%s to=%s silent_ms=%llu", nfp,
	      ovl_msg_state_name(n->state), ovl_msg_state_name(st), (unsigned long long)silent_ms);
	n->state = st;
	node_changed(b, n, false);
}

static void handle_cert_renew(brk_t *b, struct node *n, const struct brk_peer *from,
			      const struct ovl_msg *m)
{
	struct ovl_msg ok;
	char reason[256];

	if (issue_cert(b, n, reason, sizeof(reason)) < 0) {
		send_error(b, from, m->rid, OVL_MSG_ERR_INTERNAL, "%s", reason);
		return;
	}
	node_changed(b, n, true);
	ovl_msg_init(&ok, OVL_MSG_CERT);
	ok.rid = m->rid;
	ok.u.cert.ts = ts_get(b);
	ok.u.cert.cert = (struct ovl_msg_bin){ n->cert, n->cert_len };
	send_msg(b, from, &ok);
}

/*
 * Revocations are saved through the seam at once, whole. brk_files keeps them
 * in <site_dir>/revoked (<state_dir> without a site directory): an operator's
 * decision like preauth, not soft state, so a broker restarted with an empty
 * state directory still refuses revoked nodes and never signs a list with a
 * lower version.
 */
static int revoked_save(brk_t *b, char *err, size_t errlen)
{
	if (!b->io.revoked_save)
		return 0;
	return b->io.revoked_save(b->io.files, &b->rv, err, errlen);
}

static void revocations_free(struct brk_revocations *r)
{
	free(r->ids);
	free(r->keys);
	free(r->serials);
	memset(r, 0, sizeof(*r));
}

static int revoked_load(brk_t *b, char *err, size_t errlen)
{
	struct brk_revocations r;
	int rc;

	if (!b->io.revoked_load)
		return 0;
	memset(&r, 0, sizeof(r));
	rc = b->io.revoked_load(b->io.files, &r, err, errlen);
	if (rc < 0)
		return rc;
	revocations_free(&b->rv);
	b->rv = r;
	if (b->rv.crl_version)
		/* the same version and serials: members holding it see nothing new */
		rc = ovl_crl_sign(b->rv.crl_version, b->rv.serials, b->rv.n_serials,
				  b->site->id->sign_sk, &b->crl, &b->crl_len, err, errlen);
	return rc;
}

int brk_revoke(brk_t *b, const uint8_t node_id[OVL_ID_BYTES], char *err, size_t errlen)
{
	struct node *n = ht_find(b, &b->by_id, node_id);
	uint8_t (*g)[OVL_ID_BYTES] = NULL;
	uint8_t (*gk)[OVL_KEY_BYTES] = NULL;
	uint64_t *gs = NULL;
	uint8_t *crl = NULL;
	size_t crl_len = 0;
	char nfp[OVL_ID_FP_BYTES];
	int rc;

	fp(node_id, nfp);
	if (id_in(b->rv.ids, b->rv.n_ids, node_id)) {
		snprintf(err, errlen, "node %s is already revoked", nfp);
		return -EALREADY;
	}
	g = realloc(b->rv.ids, (b->rv.n_ids + 1) * sizeof(*g));
	if (!g)
		return -ENOMEM;
	b->rv.ids = g;
	memcpy(b->rv.ids[b->rv.n_ids++], node_id, OVL_ID_BYTES);
	if (n) {
		gk = realloc(b->rv.keys, b->rv.n_ids * sizeof(*gk));
		gs = realloc(b->rv.serials, (b->rv.n_serials + 1) * sizeof(*gs));
		if (gk)
			b->rv.keys = gk;
		if (gs)
			b->rv.serials = gs;
		if (!gk || !gs)
			return -ENOMEM;
		memcpy(b->rv.keys[b->rv.n_ids - 1], n->peer.key, OVL_KEY_BYTES);
		b->rv.serials[b->rv.n_serials++] = n->serial;
	} else if (b->rv.keys) {
		gk = realloc(b->rv.keys, b->rv.n_ids * sizeof(*gk));
		if (!gk)
			return -ENOMEM;
		b->rv.keys = gk;
		memset(b->rv.keys[b->rv.n_ids - 1], 0, OVL_KEY_BYTES);
	} else {
		gk = calloc(b->rv.n_ids, sizeof(*gk));
		if (!gk)
			return -ENOMEM;
		b->rv.keys = gk;
	}
	rc = ovl_crl_sign(++b->rv.crl_version, b->rv.serials, b->rv.n_serials,
			  b->site->id->sign_sk, &crl, &crl_len, err, errlen);
	if (rc < 0)
		return rc;
	free(b->crl);
	b->crl = crl;
	b->crl_len = crl_len;
	event(b, BRK_EV_REVOKE, "event=revoke node=%s serial=%llu crl_version=%llu", nfp,
	      n ? (unsigned long long)n->serial : 0ULL, (unsigned long long)b->rv.crl_version);
	rc = revoked_save(b, err, errlen);
	if (rc < 0)
		event(b, BRK_EV_ERROR, "event=error what=persist reason=\"%s\"", err);
	if (n) {
		/* the members learn of it with this delta, which carries the new list */
		while (n->nslices)
			slice_leave(b, n->slices[n->nslices - 1], n, true, OVL_MSG_LEFT_REVOKED);
		node_forget(b, n, OVL_MSG_LEFT_REVOKED);
	}
	return rc; /* in force either way; an error says it would not survive a restart */
}

static void handle_admin(brk_t *b, const struct brk_peer *from, const struct ovl_msg *m)
{
	const struct ovl_msg_admin *a = &m->u.admin;
	struct ovl_msg ok;
	struct brk_stats st;
	struct ovl_msg_stat stats[20];
	char err[256] = "", afp[OVL_ID_FP_BYTES];
	struct slice *s = NULL;
	int rc = 0;

	fp(from->key, afp);
	ovl_msg_init(&ok, OVL_MSG_ADMIN_OK);
	ok.rid = m->rid;
	ok.u.admin_ok.op = a->op;
	switch (a->op) {
	case OVL_MSG_ADMIN_LIST_NODES:
		ok.u.admin_ok.nodes = calloc(b->n_nodes + 1, sizeof(*ok.u.admin_ok.nodes));
		if (!ok.u.admin_ok.nodes) {
			rc = -ENOMEM;
			break;
		}
		for (size_t i = 0; i < b->n_nodes && i < OVL_MSG_NODES_MAX; i++) {
			struct ovl_msg_node_info *o = &ok.u.admin_ok.nodes[i];
			const struct node *n = b->nodes[i];

			memcpy(o->id, n->id, OVL_ID_BYTES);
			snprintf(o->board, sizeof(o->board), "%s", n->board);
			snprintf(o->version, sizeof(o->version), "%s", n->version);
			snprintf(o->domain.site, sizeof(o->domain.site), "%s", n->site);
			snprintf(o->domain.chassis, sizeof(o->domain.chassis), "%s", n->chassis);
			snprintf(o->domain.slot, sizeof(o->domain.slot), "%s", n->slot);
			o->capacity = n->capacity;
			o->used = n->used;
			o->state = n->state;
			o->seen_ms = now_ms(b) - n->last_ms;
			ok.u.admin_ok.n_nodes++;
		}
		break;
	case OVL_MSG_ADMIN_LIST_SLICES:
		ok.u.admin_ok.slices = calloc(b->n_slices + 1, sizeof(*ok.u.admin_ok.slices));
		if (!ok.u.admin_ok.slices) {
			rc = -ENOMEM;
			break;
		}
		for (unsigned i = 0; i < b->n_slices; i++)
			fill_slice_ref(&ok.u.admin_ok.slices[i], b->slices[i]);
		ok.u.admin_ok.n_slices = b->n_slices;
		break;
	case OVL_MSG_ADMIN_SHOW_MAP:
		s = slice_find(b, a->slice);
		if (!s) {
			send_error(b, from, m->rid, OVL_MSG_ERR_NOT_FOUND,
				   "slice '%s' does not exist", a->slice);
			return;
		}
		send_map(b, s, from, m->rid);
		return;
	case OVL_MSG_ADMIN_CREATE_SLICE:
		{
			struct brk_slice_policy p = {
				.replicas = a->replicas, .min_write = a->min_write_replicas,
				.encrypt = a->encrypt, .allow_same_domain = a->allow_same_domain,
				.chunk_size = a->chunk_size,
			};

			rc = brk_slice_define_policy(b, a->slice, a->selector, &p, err, sizeof(err));
		}
		if (rc == 0)
			ok.u.admin_ok.epoch = slice_find(b, a->slice)->epoch;
		break;
	case OVL_MSG_ADMIN_DELETE_SLICE:
		rc = brk_slice_delete(b, a->slice, err, sizeof(err));
		break;
	case OVL_MSG_ADMIN_REVOKE_NODE:
		rc = brk_revoke(b, a->node_id, err, sizeof(err));
		ok.u.admin_ok.epoch = b->rv.crl_version;
		break;
	case OVL_MSG_ADMIN_STATS: {
		unsigned k = 0;

		brk_stats_get(b, &st);
#define STAT(nm, v) do { snprintf(stats[k].name, sizeof(stats[k].name), "%s", nm); \
			 stats[k++].value = (v); } while (0)
		STAT("nodes", st.nodes);
		STAT("nodes_up", st.up);
		STAT("nodes_down", st.down);
		STAT("nodes_out", st.out);
		STAT("slices", st.slices);
		STAT("registrations", st.registrations);
		STAT("refusals", st.refusals);
		STAT("introductions", st.introductions);
		STAT("deltas_sent", st.deltas_sent);
		STAT("delta_bytes", st.delta_bytes);
		STAT("maps_sent", st.maps_sent);
		STAT("send_failures", st.send_failures);
		STAT("rate_limited", st.rate_limited);
		STAT("bad_messages", st.bad_messages);
		STAT("memory_bytes", st.memory_bytes);
		STAT("bytes_received", st.rx_bytes);
#undef STAT
		ok.u.admin_ok.stats = stats;
		ok.u.admin_ok.n_stats = k;
		send_msg(b, from, &ok);
		return;
	}
	case OVL_MSG_ADMIN_FLEET: {
		uint8_t *doc = NULL;
		size_t doc_len = 0;

		rc = b->fleet ? brk_fleet_admin(b->fleet, a->fleet.ptr, a->fleet.len, &doc, &doc_len,
						err, sizeof(err))
			      : -EOPNOTSUPP;
		if (rc < 0)
			break;
		ok.u.admin_ok.fleet = (struct ovl_msg_bin){ doc, doc_len };
		send_msg(b, from, &ok);
		free(doc);
		return;
	}
	default:
		rc = -EINVAL;
		snprintf(err, sizeof(err), "unknown admin op");
	}
	if (rc < 0) {
		unsigned code = rc == -ENOENT ? OVL_MSG_ERR_NOT_FOUND :
				rc == -EEXIST ? OVL_MSG_ERR_EXISTS :
				rc == -ENOMEM ? OVL_MSG_ERR_INTERNAL : OVL_MSG_ERR_BAD_REQUEST;

		if (!err[0])
			snprintf(err, sizeof(err), "%s", strerror(-rc));
		event(b, BRK_EV_REFUSE, "event=refuse_admin admin=%s op=%s reason=\"%s\"", afp,
		      ovl_msg_admin_op_name(a->op), err);
		send_error(b, from, m->rid, code, "%s", err);
	} else {
		send_msg(b, from, &ok);
	}
	free(ok.u.admin_ok.nodes);
	free(ok.u.admin_ok.slices);
}

/* ---- what nodes hold: map_report (PROTOCOL.md 6.5) --------------------------------- */

static struct ovl_msg_left *left_find(struct slice *s, const uint8_t *id)
{
	for (uint32_t i = 0; i < s->n_left; i++)
		if (memcmp(s->left[i].id, id, OVL_ID_BYTES) == 0)
			return &s->left[i];
	return NULL;
}

static bool map_lists(const struct ovl_msg_map *r, const uint8_t *id)
{
	for (uint32_t i = 0; i < r->n_members; i++)
		if (memcmp(r->members[i].id, id, OVL_ID_BYTES) == 0)
			return true;
	return false;
}

/* Give n the certificate of mm when it differs (a copy); false when out of
 * memory (n keeps its own). */
static bool cert_take(struct node *n, const struct ovl_msg_member *mm)
{
	struct ovl_cert c;
	uint8_t *copy = NULL;
	char err[128];

	if (!mm->cert.len ||
	    (n->cert_len == mm->cert.len && memcmp(n->cert, mm->cert.ptr, mm->cert.len) == 0))
		return true;
	copy = malloc(mm->cert.len);
	if (!copy)
		return false;
	memcpy(copy, mm->cert.ptr, mm->cert.len);
	free(n->cert);
	n->cert = copy;
	n->cert_len = (uint16_t)mm->cert.len;
	if (ovl_cert_decode(&c, copy, mm->cert.len, err, sizeof(err)) == 0)
		n->serial = c.serial;
	return true;
}

/*
 * A node known only from a map this broker signed: back in the registry
 * with the keys, address fields, capacity and certificate the map gives,
 * `down` (`out` when the map says so) and silent from now on, as a node
 * restored from state/members is. Its board, version and group are unknown
 * until it registers. NULL with why when it cannot be.
 */
static struct node *node_learn(brk_t *b, const struct ovl_msg_member *mm, char *why,
			       size_t whylen)
{
	struct brk_peer p;
	struct node *n = NULL;

	if (b->n_nodes >= b->p.max_nodes) {
		snprintf(why, whylen, "the registry is full");
		return NULL;
	}
	if (ht_find(b, &b->by_curve, mm->curve_key)) {
		snprintf(why, whylen, "its curve key is registered for another node id");
		return NULL;
	}
	memset(&p, 0, sizeof(p));
	memcpy(p.key, mm->curve_key, OVL_KEY_BYTES); /* no route until it speaks */
	n = node_add(b, mm->id, &p);
	if (!n) {
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	n->board = intern(b, "");
	n->version = intern(b, "");
	n->site = intern(b, mm->domain.site);
	n->chassis = intern(b, mm->domain.chassis);
	n->slot = intern(b, mm->domain.slot);
	n->port = mm->port;
	n->capacity = mm->capacity;
	n->state = mm->state == OVL_MSG_STATE_OUT ? OVL_MSG_STATE_OUT : OVL_MSG_STATE_DOWN;
	n->last_ms = now_ms(b);
	if (!n->board || !n->version || !n->site || !n->chassis || !n->slot ||
	    !cert_take(n, mm)) {
		node_forget(b, n, OVL_MSG_LEFT_EXPIRED); /* in no slice yet */
		snprintf(why, whylen, "out of memory or too many distinct domain names");
		return NULL;
	}
	return n;
}

/*
 * A member entry of s that only a map told the broker about (its node has
 * not spoken since the broker started) takes what a newer map r says of
 * it: its state (`out` stays `out`; anything else is `down` until it
 * speaks), port, capacity and certificate. true when the node changed.
 */
static bool member_update(struct member *e, const struct ovl_msg_member *mm, uint64_t epoch)
{
	struct node *n = e->n;
	uint8_t st = mm->state == OVL_MSG_STATE_OUT ? OVL_MSG_STATE_OUT : OVL_MSG_STATE_DOWN;
	bool changed = n->state != st || n->port != mm->port || n->capacity != mm->capacity ||
		       (mm->cert.len && (n->cert_len != mm->cert.len ||
					 memcmp(n->cert, mm->cert.ptr, mm->cert.len) != 0));

	n->state = st;
	n->port = mm->port;
	n->capacity = mm->capacity;
	cert_take(n, mm);
	e->learned = epoch;
	return changed;
}

/*
 * A node reports the map of a slice it holds, signed by this broker, because
 * it refused this broker's map (PROTOCOL.md 6.5): a broker that lost its
 * state (or runs from an old copy of it) knows fewer members than the nodes
 * hold, and nodes never take a map that drops a member without a record.
 * The broker checks the signature (its own key: it owns the slice), that the
 * sender is a member of the map, and that the map is newer than what
 * state/members gave it; then it learns:
 *   - a member it lacks is added (`down`, or `out` when the map says so),
 *     unless it holds a record that the member left after that map; a
 *     member since revoked leaves again with a record;
 *   - a member only known from an older map (or from state/) takes the
 *     newer map's state; one the newer map records as removed leaves again;
 *   - the map's records of members it does not list are kept.
 * Members heard since the broker started are its own knowledge and are not
 * touched. The slice moves to an epoch above both its own and the map's,
 * with one delta to the members and the full map to the sender; like every
 * change it is saved before they leave.
 */
static void handle_map_report(brk_t *b, struct node *from_n, const struct brk_peer *from,
			      const struct ovl_msg *m)
{
	const struct ovl_msg_map *r = &m->u.report;
	struct slice *s = slice_find(b, r->slice);
	struct node **added = NULL, **updated = NULL;
	uint32_t n_added = 0, n_updated = 0, n_removed = 0, n_records = 0, skipped = 0;
	struct ovl_msg_member *mms = NULL;
	uint8_t (*rm)[OVL_MSG_ID_BYTES] = NULL;
	struct ovl_msg_left *recs = NULL;
	char reason[256], nfp[OVL_ID_FP_BYTES], xfp[OVL_ID_FP_BYTES], why[128];
	uint64_t epoch;
	struct change c;

	fp(from_n->id, nfp);
	if (!s || !s->ours) {
		snprintf(reason, sizeof(reason), "map_report: slice '%s' %s", r->slice,
			 s ? "is owned by another broker; this one does not change it"
			   : "does not exist on this broker");
		refuse(b, from, m->rid, OVL_MSG_ERR_NOT_FOUND, from_n->id, reason);
		return;
	}
	if (ovl_mem_is_zero(r->sig, sizeof(r->sig)) ||
	    ovl_msg_map_verify(r, b->site->id->sign_pk) < 0) {
		snprintf(reason, sizeof(reason), "map_report of slice '%s' epoch %llu: %s", r->slice,
			 (unsigned long long)r->epoch, ovl_mem_is_zero(r->sig, sizeof(r->sig)) ?
			 "the map is not signed" :
			 "the signature does not verify under this broker's key");
		refuse(b, from, m->rid, OVL_MSG_ERR_BAD_REQUEST, from_n->id, reason);
		return;
	}
	if (!map_lists(r, from_n->id)) {
		snprintf(reason, sizeof(reason), "map_report of slice '%s' epoch %llu: the "
			 "reporting node is not a member of it", r->slice,
			 (unsigned long long)r->epoch);
		refuse(b, from, m->rid, OVL_MSG_ERR_BAD_REQUEST, from_n->id, reason);
		return;
	}
	if (r->epoch <= s->learn_lo) {
		/* state/members is as new: nothing to learn; the current map answers */
		event(b, BRK_EV_SLICE, "event=slice_learn slice=%s from=%s reported=%llu "
		      "result=older-than-state epoch=%llu", s->name, nfp,
		      (unsigned long long)r->epoch, (unsigned long long)s->epoch);
		send_map(b, s, from, m->rid);
		return;
	}
	epoch = (r->epoch > s->epoch ? r->epoch : s->epoch) + 1;
	added = calloc(r->n_members + 1u, sizeof(*added));
	updated = calloc(r->n_members + 1u, sizeof(*updated));
	rm = calloc(r->n_left + 1u, sizeof(*rm));
	recs = calloc(r->n_left + r->n_members + 1u, sizeof(*recs));
	if (!added || !updated || !rm || !recs) {
		send_error(b, from, m->rid, OVL_MSG_ERR_INTERNAL, "out of memory");
		goto out;
	}
	for (uint32_t k = 0; k < r->n_members; k++) {
		const struct ovl_msg_member *mm = &r->members[k];
		struct node *x = ht_find(b, &b->by_id, mm->id);
		struct ovl_msg_left *g = NULL;
		int i = x && node_in(x, s) ? member_index(s, x) : -1;
		struct in6_addr a;
		bool taken = false;

		if (i >= 0) {
			if (!x->heard && s->m[i].learned && s->m[i].learned < r->epoch &&
			    member_update(&s->m[i], mm, r->epoch))
				updated[n_updated++] = x;
			continue;
		}
		g = left_find(s, mm->id);
		if (g && g->epoch > r->epoch)
			continue; /* it left after this map */
		fp(mm->id, xfp);
		if (id_in(b->rv.ids, b->rv.n_ids, mm->id)) {
			/* revoked since: it leaves again, with a record the nodes accept */
			if (!(g = (struct ovl_msg_left *)left_add(s, mm->id, epoch,
								   OVL_MSG_LEFT_REVOKED))) {
				skipped++;
				continue;
			}
			recs[n_records++] = *g;
			continue;
		}
		if (x && memcmp(x->peer.key, mm->curve_key, OVL_KEY_BYTES) != 0) {
			event(b, BRK_EV_ERROR, "event=error what=learn slice=%s node=%s reason=\"the "
			      "map gives it another curve key than the registry\"", s->name, xfp);
			skipped++;
			continue;
		}
		memcpy(&a, mm->addr, sizeof(a));
		for (uint32_t j = 0; j < s->n && !taken; j++)
			taken = memcmp(&s->m[j].addr, &a, sizeof(a)) == 0;
		if (taken) {
			event(b, BRK_EV_ERROR, "event=error what=learn slice=%s node=%s reason=\"its "
			      "address belongs to another member now\"", s->name, xfp);
			skipped++;
			continue;
		}
		if (!x && !(x = node_learn(b, mm, why, sizeof(why)))) {
			event(b, BRK_EV_ERROR, "event=error what=learn slice=%s node=%s reason=\"%s\"",
			      s->name, xfp, why);
			skipped++;
			continue;
		}
		if (member_push(s, x, &a) < 0) {
			event(b, BRK_EV_ERROR, "event=error what=learn slice=%s node=%s reason=\"out "
			      "of memory or in too many slices\"", s->name, xfp);
			skipped++;
			continue;
		}
		s->m[s->n - 1].learned = r->epoch;
		left_drop(s, mm->id);
		added[n_added++] = x;
	}
	for (uint32_t k = 0; k < r->n_left; k++) {
		const struct ovl_msg_left *l = &r->left[k];
		struct node *x = ht_find(b, &b->by_id, l->id);
		int i = x && node_in(x, s) ? member_index(s, x) : -1;
		const struct ovl_msg_left *g = NULL;

		if (i >= 0) {
			/* known only from an older map: it left after that one */
			if (x->heard || !s->m[i].learned || s->m[i].learned >= l->epoch ||
			    map_lists(r, l->id))
				continue;
			if (!(g = left_add(s, l->id, epoch, l->reason))) {
				skipped++;
				continue;
			}
			member_remove(s, x);
			memcpy(rm[n_removed++], l->id, OVL_MSG_ID_BYTES);
			recs[n_records++] = *g;
			continue;
		}
		g = left_find(s, l->id);
		if (g && g->epoch >= l->epoch)
			continue;
		if (!(g = left_add(s, l->id, l->epoch, l->reason))) {
			skipped++;
			continue;
		}
		recs[n_records++] = *g;
	}
	if (!n_added && !n_updated && !n_removed && !n_records && r->epoch < s->epoch) {
		event(b, BRK_EV_SLICE, "event=slice_learn slice=%s from=%s reported=%llu "
		      "result=nothing-new skipped=%u epoch=%llu", s->name, nfp,
		      (unsigned long long)r->epoch, skipped, (unsigned long long)s->epoch);
		send_map(b, s, from, m->rid);
		goto out;
	}
	/* one delta for it all: members added or changed (complete), removals
	 * with their records, and the records learned */
	mms = calloc(n_added + n_updated + 1u, sizeof(*mms));
	if (!mms) {
		send_error(b, from, m->rid, OVL_MSG_ERR_INTERNAL, "out of memory");
		goto out;
	}
	memset(&c, 0, sizeof(c));
	for (uint32_t k = 0; k < n_added + n_updated; k++) {
		struct node *x = k < n_added ? added[k] : updated[k - n_added];
		int i = member_index(s, x);

		if (i >= 0)
			member_fill(&mms[c.n_members++], &s->m[i]);
	}
	c.members = mms;
	c.removed = rm;
	c.n_removed = n_removed;
	c.left = recs;
	c.n_left = n_records;
	/* learning changes members, nodes and records together without
	 * journal records of its own: the next save is a whole one */
	changes_clear(b);
	b->compact = true;
	slice_delta_to(b, s, epoch, &c, false, from_n);
	event(b, BRK_EV_SLICE, "event=slice_learn slice=%s from=%s reported=%llu added=%u "
	      "updated=%u removed=%u records=%u skipped=%u epoch=%llu members=%u", s->name, nfp,
	      (unsigned long long)r->epoch, n_added, n_updated, n_removed, n_records, skipped,
	      (unsigned long long)s->epoch, s->n);
	send_map(b, s, from, m->rid);
	/* a node is one registry entry: its other slices learn of its new state too */
	for (uint32_t k = 0; k < n_updated; k++)
		for (unsigned j = 0; j < updated[k]->nslices; j++) {
			struct slice *o = updated[k]->slices[j];
			int i = member_index(o, updated[k]);

			if (o != s && o->ours && i >= 0)
				slice_delta(b, o, &o->m[i], NULL, NULL, false, NULL);
		}
out:
	free(mms);
	free(recs);
	free(rm);
	free(updated);
	free(added);
}

void brk_refuse_oversized(brk_t *b, const struct brk_peer *from, size_t limit)
{
	char reason[128];

	b->st.bad_messages++;
	snprintf(reason, sizeof(reason), "message larger than %zu bytes refused", limit);
	refuse(b, from, 0, OVL_MSG_ERR_BAD_REQUEST, NULL, reason);
}

void brk_refuse_rate(brk_t *b, const struct brk_peer *from, unsigned per_s, unsigned burst)
{
	char reason[160];

	snprintf(reason, sizeof(reason), "rate limited: more than %u messages a second (burst %u) "
		 "from this key; the excess is dropped", per_s, burst);
	refuse(b, from, 0, OVL_MSG_ERR_BUSY, NULL, reason);
}

void brk_handle(brk_t *b, const struct brk_peer *from, const void *buf, size_t len)
{
	struct ovl_msg m;
	struct node *n = NULL;
	char err[256];
	int rc;

	b->st.rx_bytes += len;
	for (size_t i = 0; b->rv.keys && i < b->rv.n_ids; i++)
		if (memcmp(b->rv.keys[i], from->key, OVL_KEY_BYTES) == 0) {
			refuse(b, from, 0, OVL_MSG_ERR_REVOKED, NULL, "this key is revoked");
			return;
		}
	rc = ovl_msg_decode(buf, len, &m, err, sizeof(err));
	if (rc < 0) {
		b->st.bad_messages++;
		refuse(b, from, 0, rc == -EPROTONOSUPPORT ? OVL_MSG_ERR_VERSION :
				   OVL_MSG_ERR_BAD_REQUEST, NULL, err);
		return;
	}
	if (m.type == OVL_MSG_REGISTER) {
		handle_register(b, from, &m);
		goto out;
	}
	if (m.type == OVL_MSG_ADMIN) {
		if (!is_admin(b, from->key))
			refuse(b, from, m.rid, OVL_MSG_ERR_DENIED, NULL,
			       "admin: this key holds no admin certificate");
		else
			handle_admin(b, from, &m);
		goto out;
	}
	n = ht_find(b, &b->by_curve, from->key);
	if (!n && m.type == OVL_MSG_MAP_GET && is_admin(b, from->key)) {
		struct slice *s = slice_find(b, m.u.map_get.slice);

		if (s)
			send_map(b, s, from, m.rid);
		else
			send_error(b, from, m.rid, OVL_MSG_ERR_NOT_FOUND, "slice '%s' does not exist",
				   m.u.map_get.slice);
		goto out;
	}
	if (!n && m.type == OVL_MSG_MAP_GET && b->io.client_slices) {
		/* a client the broker issued may read the maps of its slices */
		struct slice *s = slice_find(b, m.u.map_get.slice);
		int ok = b->io.client_slices(b->io.files, from->key, m.u.map_get.slice,
					     b->io.unix_s(b->io.arg));

		if (ok == 0 && s) {
			send_map(b, s, from, m.rid);
			goto out;
		}
		if (ok == -EACCES || (ok == 0 && !s)) {
			send_error(b, from, m.rid, ok ? OVL_MSG_ERR_DENIED : OVL_MSG_ERR_NOT_FOUND,
				   ok ? "this client's certificate does not list slice '%s'"
				      : "slice '%s' does not exist", m.u.map_get.slice);
			goto out;
		}
	}
	if (!n) {
		/* unknown keys may only register; a restarted broker lands here too */
		refuse(b, from, m.rid, OVL_MSG_ERR_NOT_FOUND, NULL,
		       "not registered: send register first");
		goto out;
	}
	n->peer = *from;
	n->last_ms = now_ms(b);
	n->heard = true;
	switch (m.type) {
	case OVL_MSG_HEARTBEAT:
		if (memcmp(m.u.hb.node_id, n->id, OVL_ID_BYTES) != 0) {
			refuse(b, from, m.rid, OVL_MSG_ERR_DENIED, m.u.hb.node_id,
			       "heartbeat: node_id is not the one registered with this key");
			break;
		}
		n->used = m.u.hb.used;
		if (n->state != OVL_MSG_STATE_UP)
			set_state(b, n, OVL_MSG_STATE_UP, 0);
		if (b->fleet && m.u.hb.fleet.len)
			brk_fleet_report(b->fleet, n->id, m.u.hb.fleet.ptr, m.u.hb.fleet.len);
		heartbeat_reply(b, from, m.rid, m.u.hb.seq, n);
		break;
	case OVL_MSG_MAP_GET: {
		struct slice *s = slice_find(b, m.u.map_get.slice);

		if (!s)
			send_error(b, from, m.rid, OVL_MSG_ERR_NOT_FOUND, "slice '%s' does not exist",
				   m.u.map_get.slice);
		else if (!s->ours)
			send_error(b, from, m.rid, OVL_MSG_ERR_NOT_FOUND,
				   "slice '%s' is owned by another broker; this one serves it "
				   "read-only and holds no map", s->name);
		else
			send_map(b, s, from, m.rid);
		break;
	}
	case OVL_MSG_CERT_RENEW:
		handle_cert_renew(b, n, from, &m);
		break;
	case OVL_MSG_MAP_REPORT:
		handle_map_report(b, n, from, &m);
		break;
	default:
		b->st.bad_messages++;
		refuse(b, from, m.rid, OVL_MSG_ERR_BAD_REQUEST, n->id,
		       "message type not accepted by a broker");
	}
out:
	ovl_msg_release(&m);
}

void brk_tick(brk_t *b)
{
	uint64_t now = now_ms(b);

	for (size_t i = 0; i < b->n_nodes;) {
		struct node *n = b->nodes[i];
		uint64_t silent = now > n->last_ms ? now - n->last_ms : 0;
		char nfp[OVL_ID_FP_BYTES];

		/* only a member that is out (the grace period) leaves its slices */
		if (silent > b->p.ttl_ms && n->state == OVL_MSG_STATE_OUT) {
			fp(n->id, nfp);
			event(b, BRK_EV_FORGET, "event=forget node=%s silent_ms=%llu", nfp,
			      (unsigned long long)silent);
			node_forget(b, n, OVL_MSG_LEFT_EXPIRED); /* moves the last node into slot i */
			continue;
		}
		if (n->state == OVL_MSG_STATE_UP && silent > b->p.down_ms)
			set_state(b, n, OVL_MSG_STATE_DOWN, silent);
		else if (n->state == OVL_MSG_STATE_DOWN && silent > b->p.grace_ms)
			set_state(b, n, OVL_MSG_STATE_OUT, silent);
		i++;
	}
	/* with a journal, the epochs are durable there: DIR/slices is written
	 * with definitions and compactions only, not from the loop every second */
	if (((b->dirty && !journaled(b)) || b->used_dirty) &&
	    now - b->flushed_ms >= BRK_SLICE_FLUSH_MS) {
		if (b->dirty && !journaled(b))
			slices_save(b);
		if (b->used_dirty)
			used_save(b);
		b->flushed_ms = now;
	}
	if (b->fleet)
		brk_fleet_tick(b->fleet);
	brk_flush(b);
}

bool brk_flush_pending(const brk_t *b)
{
	return persist_pending(b) || b->n_held;
}

static void held_release(struct held *h)
{
	if (h->buf && --h->buf->refs == 0)
		free(h->buf);
	h->buf = NULL;
}

/* Save what is pending, then send every held message in order. The number
 * sent, or -errno when the save failed (they stay held). */
static int flush_held(brk_t *b)
{
	uint64_t now = now_ms(b);
	size_t i;
	int rc;

	if (persist_pending(b)) {
		if (now < b->retry_ms)
			return -EAGAIN;
		if ((rc = persist(b)) < 0) {
			b->retry_ms = now + BRK_TICK_MS;
			return rc;
		}
	}
	for (i = 0; i < b->n_held; i++) {
		struct held *h = &b->held[i];

		if (b->io.send(b->io.arg, &h->to, h->buf->data, h->buf->len) < 0)
			b->st.send_failures++;
		held_release(h);
	}
	b->n_held = 0;
	b->held_bytes = 0;
	b->held_last = NULL;
	b->held_overflow = false;
	return (int)i;
}

int brk_flush(brk_t *b)
{
	int rc = flush_held(b);

	/* after the sends: nothing waits for a compaction (the journal already
	 * holds it all), and its cost falls between batches */
	if (rc >= 0 && b->compact_due && now_ms(b) >= b->retry_ms && compact_now(b) < 0)
		b->retry_ms = now_ms(b) + BRK_SLICE_FLUSH_MS;
	return rc;
}

/* ---- admission sources ----------------------------------------------------------- */

int brk_token_add(brk_t *b, const uint8_t hash[32], unsigned uses, uint64_t expires_unix)
{
	struct token *g = NULL;

	if (b->n_tokens >= BRK_TOKENS_MAX)
		return -ENOSPC;
	g = realloc(b->tokens, (b->n_tokens + 1) * sizeof(*g));
	if (!g)
		return -ENOMEM;
	b->tokens = g;
	memcpy(g[b->n_tokens].hash, hash, 32);
	g[b->n_tokens].uses = uses;
	g[b->n_tokens].expires = expires_unix;
	b->n_tokens++;
	return 0;
}

int brk_preauth_add(brk_t *b, const uint8_t node_id[OVL_ID_BYTES])
{
	uint8_t (*g)[OVL_ID_BYTES] = NULL;

	if (preauthorised(b, node_id))
		return 0;
	if (b->n_preauth >= BRK_PREAUTH_MAX)
		return -ENOSPC;
	g = realloc(b->preauth, (b->n_preauth + 1) * sizeof(*g));
	if (!g)
		return -ENOMEM;
	b->preauth = g;
	memcpy(g[b->n_preauth++], node_id, OVL_ID_BYTES);
	qsort(b->preauth, b->n_preauth, OVL_ID_BYTES, cmp_id);
	return 1;
}

void brk_token_clear(brk_t *b)
{
	b->n_tokens = 0;
}

static void used_load(brk_t *b)
{
	struct brk_token_use *uses = NULL;
	size_t n = 0;
	char err[256];

	if (!b->io.uses_load)
		return;
	/* a broker without them still runs: a token may be used again */
	if (b->io.uses_load(b->io.files, &uses, &n, err, sizeof(err)) < 0)
		event(b, BRK_EV_ERROR, "event=error what=load reason=\"%s\"", err);
	free(b->used);
	b->used = uses;
	b->n_used = n;
}

/* ---- restart ------------------------------------------------------------------------ */

/* A node of the saved membership back in the registry, `down` unless it was
 * `out`, as if heard from now (so `out` comes a grace period after the
 * restart at the earliest). NULL when it cannot be (reported). */
static struct node *node_restore(brk_t *b, const struct brk_node_rec *r)
{
	struct brk_peer p;
	struct node *n = NULL;
	char nfp[OVL_ID_FP_BYTES];
	uint8_t *cert = NULL;

	fp(r->id, nfp);
	if (ht_find(b, &b->by_id, r->id) || ht_find(b, &b->by_curve, r->curve_key) ||
	    id_in(b->rv.ids, b->rv.n_ids, r->id)) {
		event(b, BRK_EV_ERROR, "event=error what=restore node=%s reason=\"known twice or "
		      "revoked: not restored\"", nfp);
		return NULL;
	}
	memset(&p, 0, sizeof(p));
	memcpy(p.key, r->curve_key, OVL_KEY_BYTES); /* no route until it speaks */
	if (r->cert_len && !(cert = malloc(r->cert_len)))
		return NULL;
	if (cert)
		memcpy(cert, r->cert, r->cert_len);
	n = node_add(b, r->id, &p);
	if (!n) {
		free(cert);
		return NULL;
	}
	n->board = intern(b, r->board);
	n->version = intern(b, r->version);
	n->site = intern(b, r->domain.site);
	n->chassis = intern(b, r->domain.chassis);
	n->slot = intern(b, r->domain.slot);
	n->group = r->group[0] ? intern(b, r->group) : NULL;
	n->cert = cert;
	n->cert_len = (uint16_t)r->cert_len;
	n->serial = r->serial;
	n->port = r->port;
	n->capacity = r->capacity;
	n->state = r->state == OVL_MSG_STATE_OUT ? OVL_MSG_STATE_OUT : OVL_MSG_STATE_DOWN;
	n->last_ms = now_ms(b);
	if (!n->board || !n->version || !n->site || !n->chassis || !n->slot ||
	    (r->group[0] && !n->group)) {
		node_forget(b, n, OVL_MSG_LEFT_EXPIRED); /* in no slice yet */
		return NULL;
	}
	return n;
}

/*
 * Bring back the saved membership (PROTOCOL.md 6.5): every member is listed
 * again, `down` until it speaks (`out` stays `out`), with its removal
 * records, at an epoch above the saved one when a state changed. A slice
 * the definitions no longer hold is skipped.
 */
static int members_restore(brk_t *b, char *err, size_t errlen)
{
	struct brk_membership ms;
	uint8_t *saved_state = NULL; /* by node index: the state on disk, 0 when not restored */
	int rc;

	if (!b->io.members_load)
		return 0;
	rc = b->io.members_load(b->io.files, &ms, err, errlen);
	if (rc < 0)
		return rc;
	/* the registry is empty before a restore: every node in it comes from ms */
	saved_state = calloc(b->n_nodes + ms.n_nodes + 1, 1);
	if (!saved_state) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < ms.n_nodes; i++) {
		struct node *n = node_restore(b, &ms.nodes[i]);

		if (n)
			saved_state[n->idx] = ms.nodes[i].state;
	}
	for (size_t i = 0; i < ms.n_slices; i++) {
		const struct brk_slice_members *sm = &ms.slices[i];
		struct slice *s = slice_find(b, sm->name);
		bool changed = false;

		if (!s)
			continue;
		if (sm->epoch > s->epoch)
			s->epoch = sm->epoch;
		s->learn_lo = sm->epoch;
		for (size_t k = 0; k < sm->n_members; k++) {
			struct node *n = ht_find(b, &b->by_id, sm->members[k].id);
			struct in6_addr a;

			if (!n || !saved_state[n->idx] || node_in(n, s))
				continue;
			memcpy(&a, sm->members[k].addr, sizeof(a));
			if (member_push(s, n, &a) < 0) {
				rc = -ENOMEM;
				goto out;
			}
			/* what state/ says, until the node speaks or a newer map it held says more */
			s->m[s->n - 1].learned = sm->epoch;
			changed |= saved_state[n->idx] != n->state;
		}
		for (size_t k = 0; k < sm->n_left; k++) {
			struct node *ln = ht_find(b, &b->by_id, sm->left[k].id);

			if ((!ln || !node_in(ln, s)) &&
			    !left_add(s, sm->left[k].id, sm->left[k].epoch, sm->left[k].reason)) {
				rc = -ENOMEM;
				goto out;
			}
		}
		if (changed && s->ours) {
			/* members shown `down` now: a new state, so a new epoch */
			s->epoch++;
			b->dirty = true;
		}
		event(b, BRK_EV_SLICE, "event=slice_restore slice=%s epoch=%llu members=%u left=%u",
		      s->name, (unsigned long long)s->epoch, s->n, s->n_left);
	}
out:
	if (rc == -ENOMEM)
		snprintf(err, errlen, "cannot restore the membership: out of memory");
	free(saved_state);
	brk_membership_release(&ms);
	return rc;
}

/* ---- lifecycle ---------------------------------------------------------------------- */

int brk_new(brk_t **out, const struct brk_site *site, const struct brk_params *params,
	    const struct brk_io *io, char *err, size_t errlen)
{
	brk_t *b = NULL;
	int rc;

	if (sodium_init() < 0) {
		snprintf(err, errlen, "cannot initialise libsodium");
		return -EIO;
	}
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->site = site;
	b->p = *params;
	b->io = *io;
	if (!b->p.heartbeat_ms)
		b->p.heartbeat_ms = BRK_HEARTBEAT_MS;
	if (!b->p.down_ms)
		b->p.down_ms = BRK_DOWN_MS;
	if (!b->p.grace_ms)
		b->p.grace_ms = BRK_GRACE_MS;
	if (!b->p.ttl_ms)
		b->p.ttl_ms = BRK_TTL_MS;
	if (!b->p.cert_lifetime_s)
		b->p.cert_lifetime_s = BRK_CERT_LIFETIME_S;
	if (!b->p.max_nodes)
		b->p.max_nodes = BRK_NODES_MAX;
	randombytes_buf(b->sipkey, sizeof(b->sipkey));
	b->by_id.off = offsetof(struct node, id);
	b->by_curve.off = offsetof(struct node, peer.key);
	msgpack_sbuffer_init(&b->sb);
	b->flushed_ms = now_ms(b);
	rc = slices_load(b, err, errlen);
	if (rc == 0) {
		used_load(b);
		rc = revoked_load(b, err, errlen);
	}
	if (rc == 0)
		rc = members_restore(b, err, errlen);
	if (rc < 0) {
		/* nothing to save: it was not loaded */
		b->dirty = b->defs_dirty = b->used_dirty = false;
		brk_destroy(&b);
		return rc;
	}
	if (b->site && b->site->id) {
		struct brk_fleet_cfg fc = {
			.dir = b->p.fleet_dir, .slice = b->p.fleet_slice,
			.soak_ms = b->p.fleet_soak_ms, .valid_ms = b->p.fleet_assign_valid_ms,
		};

		rc = brk_fleet_new(&b->fleet, b, site, &fc, err, errlen);
		if (rc < 0) {
			b->dirty = b->defs_dirty = b->used_dirty = false;
			brk_destroy(&b);
			return rc;
		}
	}
	/* what was restored (members `down`, higher epochs) is saved whole before
	 * anything leaves; it also rewrites a base of an older format */
	b->compact = journaled(b) && (b->n_slices || b->n_nodes);
	*out = b;
	return 0;
}

void brk_destroy(brk_t **bp)
{
	brk_t *b = bp ? *bp : NULL;

	if (!b)
		return;
	if (persist_pending(b))
		persist(b);
	if (b->dirty)
		slices_save(b);
	if (b->used_dirty)
		used_save(b);
	brk_fleet_destroy(&b->fleet);
	/* what waited for a save is dropped: its receivers ask again */
	for (size_t i = 0; i < b->n_held; i++)
		held_release(&b->held[i]);
	free(b->held);
	changes_clear(b);
	free(b->changes);
	for (size_t i = 0; i < b->n_nodes; i++)
		node_free(b->nodes[i]);
	for (unsigned i = 0; i < b->n_slices; i++)
		slice_free(b->slices[i]);
	for (size_t i = 0; i < b->n_strings; i++)
		free(b->strings[i]);
	free(b->strings);
	free(b->str_slot);
	free(b->nodes);
	free(b->by_id.slot);
	free(b->by_curve.slot);
	free(b->tokens);
	free(b->used);
	free(b->preauth);
	revocations_free(&b->rv);
	free(b->crl);
	msgpack_sbuffer_destroy(&b->sb);
	free(b);
	*bp = NULL;
}

/* ---- views ------------------------------------------------------------------------- */

void brk_stats_get(brk_t *b, struct brk_stats *st)
{
	uint64_t mem = sizeof(*b) + (b->by_id.cap + b->by_curve.cap + b->cap_nodes + b->str_cap) *
				    sizeof(void *);

	*st = b->st;
	st->nodes = b->n_nodes;
	st->up = st->down = st->out = 0;
	for (size_t i = 0; i < b->n_nodes; i++) {
		const struct node *n = b->nodes[i];

		st->up += n->state == OVL_MSG_STATE_UP;
		st->down += n->state == OVL_MSG_STATE_DOWN;
		st->out += n->state == OVL_MSG_STATE_OUT;
		mem += sizeof(*n) + n->cert_len + n->nslices * sizeof(void *);
	}
	for (unsigned i = 0; i < b->n_slices; i++)
		mem += sizeof(struct slice) + b->slices[i]->cap * sizeof(struct member);
	st->slices = b->n_slices;
	st->memory_bytes = mem;
}

int brk_node_state(brk_t *b, const uint8_t node_id[OVL_ID_BYTES])
{
	struct node *n = ht_find(b, &b->by_id, node_id);

	return n ? (int)n->state : -ENOENT;
}

int brk_slice_info(brk_t *b, const char *name, uint64_t *epoch, uint32_t *members)
{
	struct slice *s = slice_find(b, name);

	if (!s)
		return -ENOENT;
	if (epoch)
		*epoch = s->epoch;
	if (members)
		*members = s->n;
	return 0;
}

void brk_count_rate_limited(brk_t *b)
{
	b->st.rate_limited++;
}

/* ---- views for the fleet director (brk_fleet.h) --------------------------------------- */

static void fleet_view(const struct node *n, struct brk_fleet_node *o)
{
	o->id = n->id;
	o->board = n->board;
	o->chassis = n->chassis;
	o->state = n->state;
}

size_t brk_core_fleet_count(brk_t *b)
{
	return b->n_nodes;
}

void brk_core_fleet_at(brk_t *b, size_t i, struct brk_fleet_node *o)
{
	fleet_view(b->nodes[i], o);
}

int brk_core_fleet_find(brk_t *b, const uint8_t id[OVL_ID_BYTES], struct brk_fleet_node *o)
{
	struct node *n = ht_find(b, &b->by_id, id);

	if (!n)
		return -ENOENT;
	fleet_view(n, o);
	return 0;
}

bool brk_core_fleet_peers(brk_t *b, const uint8_t id[OVL_ID_BYTES],
			  bool (*fn)(void *arg, const struct brk_fleet_node *peer), void *arg)
{
	struct node *n = ht_find(b, &b->by_id, id);

	for (unsigned k = 0; n && k < n->nslices; k++) {
		const struct slice *s = n->slices[k];

		for (uint32_t j = 0; j < s->n; j++) {
			struct brk_fleet_node v;

			if (s->m[j].n == n)
				continue;
			fleet_view(s->m[j].n, &v);
			if (!fn(arg, &v))
				return false;
		}
	}
	return true;
}

void brk_core_fleet_event(brk_t *b, enum brk_event ev, const char *line)
{
	if (b->io.event)
		b->io.event(b->io.arg, ev, line);
}

uint64_t brk_core_fleet_now_ms(brk_t *b)
{
	return now_ms(b);
}

uint64_t brk_core_fleet_unix_s(brk_t *b)
{
	return b->io.unix_s ? b->io.unix_s(b->io.arg) : 0;
}
