/*
 * Hints, hinted hand-off, the sync of a returning node and tombstone GC
 * (req.h, "Hints"; docs/PROTOCOL.md 7.12).
 *
 * A hint is a record in the store under a reserved key (NODE_REQ_RESERVED,
 * which no client may write, read or list):
 *
 *   RESERVED(8) 'H' home(32) hlc(8, big-endian) node(8) type('P'|'D'|'R'|'T')
 *   hash(16) slen(1) slice(slen)          value: the object's key
 *
 * 'R' and 'T' are repair hints (an object, a tombstone) written by
 * anti-entropy (req_heal.c): handed off the same way, the forward marked
 * `repair`, but not counted in hints_for_ (their target does not sync).
 *
 * hash is BLAKE2b-128 of slice, a zero byte and the key: one record per
 * (home, slice, key, version). It is written with the hinted copy and the
 * write is acknowledged only when both are durable; it is deleted only
 * after the home acknowledged the hand-off. Every hint is also kept in
 * memory (at most hints_max), loaded from the store at start.
 */
#include "req_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define HINT_HASH_BYTES 16
#define HINT_KEY_FIXED (NODE_REQ_RESERVED_BYTES + 1 + OVL_ID_BYTES + 16 + 1 + HINT_HASH_BYTES + 1)
#define HINT_KEY_MAX (HINT_KEY_FIXED + OVL_WIRE_NAME_SIZE)
#define HINT_SLICES_MAX 64
#define HINT_HANDOFFS 4                 /* hand-offs in flight */
#define HINT_SCAN_PER_TICK 4096         /* hints looked at per scheduling pass */
#define HINT_BACKOFF_MIN_MS 200
#define HINT_BACKOFF_MAX_MS 10000
#define HINT_BUSY_MIN_MS 50             /* a home that answered busy: asked again this soon, */
#define HINT_BUSY_MAX_MS 1000           /* doubling while it stays busy, up to this */
#define HINT_POKE_MS 15000              /* a home that asked is tried this long, whatever the map says */
#define HINT_READ_PIECE (256u << 10)    /* a hand-off reads the object in pieces of this */
#define HINT_TARGETS_SENT 32            /* hints_for_ counters in a NODE-STAT */
#define SYNC_ROUND_MS 250
#define SYNC_ASK_MAX 256                /* members asked in one round */
#define SYNC_SLOW_MAX 16                /* members remembered as slow in one sync */
/* an up member not reached keeps a sync going this long: it may be the
 * one holding the hints, restarting or its link coming up; a dead one is
 * marked down by the broker after 5 s of silence and is not asked then */
#define SYNC_UNREACHED_WAIT_MS 6000
#define GC_SCAN_STEP 256                /* index entries looked at per GC step */

static const uint8_t reserved[NODE_REQ_RESERVED_BYTES] = { 0xff, 0xff, 0xff, 0xff,
							   0xff, 0xff, 0xff, 0xff };

struct hint {
	uint8_t home[OVL_ID_BYTES];
	struct ovl_wire_ver ver;
	uint8_t type;                   /* 'P' or 'D'; repair hints 'R' or 'T' */
	uint8_t hash[HINT_HASH_BYTES];
	uint8_t slice;                  /* index into slices[] */
	bool busy;                      /* in a hand-off */
	uint64_t size;                  /* a repair hint's object bytes, when known (0: not) */
};

struct hint_home {
	uint8_t id[OVL_ID_BYTES];
	unsigned count;
	unsigned nrepair;               /* of count, repair hints */
	uint64_t next_ms, backoff_ms;   /* monotonic: not tried before next_ms */
	uint64_t busy_ms;               /* the home answered busy: tried again after this */
	uint64_t poked_ms;              /* asked for its hints (monotonic), 0: never */
};

struct handoff {
	struct req_hints *hs;
	bool used;
	struct hint h;                  /* the hint it delivers */
	uint8_t key[NODE_STORE_KEY_MAX];
	size_t klen;
	struct node_store_objstat st;   /* what the store holds for the key */
	struct node_repl_fwd *fwd;
	uint64_t off;                   /* payload bytes handed to the forward */
	bool reading;
	bool end_pending;               /* the forward ended while a read was in flight */
	int end_res;
	bool paced;                     /* waits for tokens or the duty cycle (req_hints_pace_pump()) */
};

struct sync_ask {
	struct req_hints *hs;
	uint8_t id[OVL_ID_BYTES];
};

struct req_hints {
	struct node_req *rq;
	struct hint *v;
	unsigned n, cap, max;
	unsigned putting;               /* hint records being written (not in v yet) */
	unsigned nrepair;               /* of n, repair hints */
	char slices[HINT_SLICES_MAX][OVL_WIRE_NAME_SIZE];
	unsigned nslices;
	struct hint_home *homes;
	unsigned nhomes, homes_cap;
	unsigned cursor;
	struct handoff ho[HINT_HANDOFFS];
	/* stats */
	uint64_t handoffs, handoff_failures, handoff_busy, copies_dropped, sync_timeouts, tombs_dropped;
	/* the sync of a returning node */
	bool syncing;
	uint64_t sync_deadline, sync_next;
	uint64_t sync_since;            /* the sync started, or the broker was reached again */
	unsigned sync_outstanding;
	bool sync_more, sync_round;
	bool sync_known;                /* a replicated slice of this node's was seen */
	unsigned sync_answered, sync_unreached; /* this round's members: none for us / not reached */
	bool sync_held;                 /* this round, a member reported hints for this node */
	/* members that did not answer in time during this sync: passed over
	 * by the data plane afterwards, they are still asked again, not
	 * counted as not reached (the slow one may hold the hints) */
	uint8_t sync_slow[SYNC_SLOW_MAX][OVL_ID_BYTES];
	unsigned nsync_slow;
	bool connected;                 /* the control plane reaches a broker */
	uint64_t sync_timeout_ms;
	/* tombstone GC */
	uint64_t gc_after_ms, gc_next;
	uint8_t gc_cursor[NODE_STORE_KEY_MAX];
	size_t gc_cursor_len;
	bool gc_busy;
	uint8_t gc_key[NODE_STORE_KEY_MAX];
	size_t gc_klen;
	struct node_store_ver gc_ver;
	unsigned gc_outstanding;
	bool gc_ok;
	bool dying, stopped;
	unsigned live;                  /* callbacks pending (store, forwards, calls) */
	unsigned pace_rr;               /* req_hints_pace_pump()'s rotating start */
};

static void hs_unref(struct req_hints *hs);

static void ho_fwd_abort(struct handoff *ho)
{
	if (!ho->fwd)
		return;
	node_repl_fwd_abort(&ho->fwd); /* its done never runs: its reference goes here */
	hs_unref(ho->hs);
}

bool req_key_reserved(const uint8_t *key, size_t klen)
{
	return klen >= NODE_REQ_RESERVED_BYTES && memcmp(key, reserved, NODE_REQ_RESERVED_BYTES) == 0;
}

static uint64_t now_mono(void)
{
	return ovl_mono_ms();
}

static void hs_ref(struct req_hints *hs)
{
	hs->live++;
	hs->rq->live++;
}

static void hs_unref(struct req_hints *hs)
{
	struct node_req *rq = hs->rq;

	if (--hs->live == 0 && hs->dying) {
		free(hs->v);
		free(hs->homes);
		free(hs);
	}
	req_rq_put(rq);
}

/* ---- keys ---- */

static void hint_hash(const char *slice, const uint8_t *key, size_t klen,
		      uint8_t out[HINT_HASH_BYTES])
{
	crypto_generichash_state g;
	uint8_t zero = 0;

	crypto_generichash_init(&g, NULL, 0, HINT_HASH_BYTES);
	crypto_generichash_update(&g, (const uint8_t *)slice, strlen(slice));
	crypto_generichash_update(&g, &zero, 1);
	crypto_generichash_update(&g, key, klen);
	crypto_generichash_final(&g, out, HINT_HASH_BYTES);
}

static void be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static uint64_t rd64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static size_t hint_key(const struct req_hints *hs, const struct hint *h, uint8_t *out)
{
	const char *sl = hs->slices[h->slice];
	size_t sn = strlen(sl), n = 0;

	memcpy(out, reserved, NODE_REQ_RESERVED_BYTES);
	n += NODE_REQ_RESERVED_BYTES;
	out[n++] = 'H';
	memcpy(out + n, h->home, OVL_ID_BYTES);
	n += OVL_ID_BYTES;
	be64(out + n, h->ver.hlc);
	be64(out + n + 8, h->ver.node);
	n += 16;
	out[n++] = h->type;
	memcpy(out + n, h->hash, HINT_HASH_BYTES);
	n += HINT_HASH_BYTES;
	out[n++] = (uint8_t)sn;
	memcpy(out + n, sl, sn);
	return n + sn;
}

static int slice_idx(struct req_hints *hs, const char *slice)
{
	for (unsigned i = 0; i < hs->nslices; i++)
		if (strcmp(hs->slices[i], slice) == 0)
			return (int)i;
	if (hs->nslices == HINT_SLICES_MAX || strlen(slice) >= OVL_WIRE_NAME_SIZE)
		return -1;
	snprintf(hs->slices[hs->nslices], OVL_WIRE_NAME_SIZE, "%s", slice);
	return (int)hs->nslices++;
}

static bool hint_type_ok(uint8_t type)
{
	return type == 'P' || type == 'D' || hint_is_repair(type);
}

/* Parse a hint key: 0 or -EINVAL (not one). */
static int hint_parse(struct req_hints *hs, const uint8_t *k, size_t klen, struct hint *h)
{
	char sl[OVL_WIRE_NAME_SIZE];
	size_t n = NODE_REQ_RESERVED_BYTES + 1, sn;
	int si;

	if (klen < HINT_KEY_FIXED || !req_key_reserved(k, klen) || k[NODE_REQ_RESERVED_BYTES] != 'H')
		return -EINVAL;
	memset(h, 0, sizeof(*h));
	memcpy(h->home, k + n, OVL_ID_BYTES);
	n += OVL_ID_BYTES;
	h->ver.hlc = rd64(k + n);
	h->ver.node = rd64(k + n + 8);
	n += 16;
	h->type = k[n++];
	memcpy(h->hash, k + n, HINT_HASH_BYTES);
	n += HINT_HASH_BYTES;
	sn = k[n++];
	if (!hint_type_ok(h->type) || sn == 0 || sn >= OVL_WIRE_NAME_SIZE ||
	    n + sn != klen)
		return -EINVAL;
	memcpy(sl, k + n, sn);
	sl[sn] = 0;
	si = slice_idx(hs, sl);
	if (si < 0)
		return -EINVAL;
	h->slice = (uint8_t)si;
	return 0;
}

/* ---- the table ---- */

static struct hint_home *home_get(struct req_hints *hs, const uint8_t id[OVL_ID_BYTES], bool add)
{
	for (unsigned i = 0; i < hs->nhomes; i++)
		if (memcmp(hs->homes[i].id, id, OVL_ID_BYTES) == 0)
			return &hs->homes[i];
	if (!add)
		return NULL;
	if (hs->nhomes == hs->homes_cap) {
		unsigned cap = hs->homes_cap ? hs->homes_cap * 2 : 8;
		struct hint_home *g = realloc(hs->homes, cap * sizeof(*g));

		if (!g)
			return NULL;
		hs->homes = g;
		hs->homes_cap = cap;
	}
	memset(&hs->homes[hs->nhomes], 0, sizeof(hs->homes[0]));
	memcpy(hs->homes[hs->nhomes].id, id, OVL_ID_BYTES);
	return &hs->homes[hs->nhomes++];
}

/* Add a hint (dedupe: unless it is known to be new, as at load). */
static int table_add(struct req_hints *hs, const struct hint *h, bool dedupe)
{
	struct hint_home *hh;

	for (unsigned i = 0; dedupe && i < hs->n; i++)
		if (hs->v[i].slice == h->slice && hs->v[i].type == h->type &&
		    memcmp(hs->v[i].home, h->home, OVL_ID_BYTES) == 0 &&
		    memcmp(hs->v[i].hash, h->hash, HINT_HASH_BYTES) == 0 &&
		    ovl_wire_ver_cmp(&hs->v[i].ver, &h->ver) == 0)
			return 0; /* the same record again */
	if (hs->n == hs->cap) {
		unsigned cap = hs->cap ? hs->cap * 2 : 64;
		struct hint *g;

		if (cap > hs->max)
			cap = hs->max;
		if (cap <= hs->n)
			return -ENOSPC;
		g = realloc(hs->v, cap * sizeof(*g));
		if (!g)
			return -ENOMEM;
		hs->v = g;
		hs->cap = cap;
	}
	hh = home_get(hs, h->home, true);
	if (!hh)
		return -ENOMEM;
	hs->v[hs->n++] = *h;
	hh->count++;
	if (hint_is_repair(h->type)) {
		hh->nrepair++;
		hs->nrepair++;
	}
	return 0;
}

static void table_del(struct req_hints *hs, unsigned i)
{
	struct hint_home *hh = home_get(hs, hs->v[i].home, false);

	if (hh && hh->count)
		hh->count--;
	if (hint_is_repair(hs->v[i].type)) {
		if (hh && hh->nrepair)
			hh->nrepair--;
		if (hs->nrepair)
			hs->nrepair--;
	}
	if (hh && !hh->count && !hh->poked_ms) {
		*hh = hs->homes[--hs->nhomes];
	}
	hs->v[i] = hs->v[--hs->n];
}

/* ---- life ---- */

static void hint_store_del_cb(void *arg, int res, const struct node_store_objstat *st)
{
	struct req_hints *hs = arg;

	(void)res;
	(void)st;
	hs_unref(hs);
}

struct load_ctx {
	struct req_hints *hs;
	uint8_t after[NODE_STORE_KEY_MAX];
	size_t alen;
	int bad;
};

static int load_cb(void *arg, const void *key, size_t klen)
{
	struct load_ctx *c = arg;
	struct hint h;

	memcpy(c->after, key, klen);
	c->alen = klen;
	if (hint_parse(c->hs, key, klen, &h) < 0 || table_add(c->hs, &h, false) < 0)
		c->bad++;
	return 0;
}

int req_hints_new(struct node_req *rq, const struct node_req_opts *o, char *err, size_t errlen)
{
	struct req_hints *hs = calloc(1, sizeof(*hs));
	uint8_t prefix[NODE_REQ_RESERVED_BYTES + 1];
	struct load_ctx *c = calloc(1, sizeof(*c));

	if (!hs || !c) {
		free(hs);
		free(c);
		snprintf(err, errlen, "hints: out of memory");
		return -ENOMEM;
	}
	hs->rq = rq;
	hs->max = o->hints_max ? o->hints_max : NODE_REQ_HINTS_MAX_DEFAULT;
	hs->connected = true;
	hs->sync_timeout_ms = o->hint_sync_timeout_ms ? o->hint_sync_timeout_ms
						      : NODE_REQ_HINT_SYNC_TIMEOUT_MS_DEFAULT;
	hs->gc_after_ms = o->tombstone_gc_after_ms ? o->tombstone_gc_after_ms
						   : NODE_REQ_TOMBSTONE_GC_AFTER_MS_DEFAULT;
	for (unsigned i = 0; i < HINT_HANDOFFS; i++)
		hs->ho[i].hs = hs;
	rq->hints = hs;
	/* the hints the drive holds: from the index (memory), in pieces */
	memcpy(prefix, reserved, NODE_REQ_RESERVED_BYTES);
	prefix[NODE_REQ_RESERVED_BYTES] = 'H';
	c->hs = hs;
	for (;;) {
		int n = node_store_list(rq->o.store, prefix, sizeof(prefix), c->alen ? c->after : NULL,
					c->alen, 256, load_cb, c);

		if (n < 256)
			break;
	}
	if (c->bad)
		snprintf(err, errlen, "%d hint records could not be taken (unreadable, or more than hints_max %u)",
			 c->bad, hs->max);
	else if (errlen)
		err[0] = 0;
	free(c);
	/* a node that starts takes back its hints before it serves reads;
	 * one whose drive holds no object has nothing stale to serve */
	{
		struct node_store_stats st;

		node_store_stats(rq->o.store, &st);
		if (st.objects)
			req_hints_sync_start(rq);
	}
	return 0;
}

void req_hints_destroy(struct node_req *rq)
{
	struct req_hints *hs = rq->hints;

	if (!hs)
		return;
	rq->hints = NULL;
	hs->dying = true;
	hs->live++; /* held while the forwards are given up */
	rq->live++;
	for (unsigned i = 0; i < HINT_HANDOFFS; i++)
		ho_fwd_abort(&hs->ho[i]);
	hs_unref(hs);
}

void req_hints_stop(struct node_req *rq)
{
	if (rq->hints)
		rq->hints->stopped = true;
}

/* ---- writing a hint (the substitute) ---- */

int req_hint_room(struct node_req *rq)
{
	struct req_hints *hs = rq->hints;

	return !hs || hs->n < hs->max ? 0 : -ENOSPC;
}

struct hint_put {
	struct req_hints *hs;
	struct hint h;
	uint8_t key[NODE_STORE_KEY_MAX]; /* the value: the object's key */
	size_t klen;
	req_hint_done_fn done;
	void *arg;
};

static void hint_put_cb(void *arg, int res, const struct node_store_objstat *st)
{
	struct hint_put *hp = arg;
	struct req_hints *hs = hp->hs;

	(void)st;
	hs->putting--;
	if (res == 0 && !hs->dying)
		table_add(hs, &hp->h, true); /* if it fails, the record is found at the next start */
	hp->done(hp->arg, res);
	free(hp);
	hs_unref(hs);
}

static int hint_put_type(struct node_req *rq, const uint8_t home[OVL_ID_BYTES], const char *slice,
			 const uint8_t *key, size_t klen, const struct ovl_wire_ver *ver, uint8_t type,
			 uint64_t size, req_hint_done_fn done, void *arg)
{
	struct req_hints *hs = rq->hints;
	struct hint_put *hp;
	uint8_t hk[HINT_KEY_MAX];
	size_t hkl;
	int si, ret;

	if (!hs)
		return -EINVAL;
	if (hs->n + hs->putting >= hs->max)
		return -ENOSPC;
	si = slice_idx(hs, slice);
	if (si < 0)
		return -ENOSPC;
	hp = calloc(1, sizeof(*hp));
	if (!hp)
		return -ENOMEM;
	hp->hs = hs;
	memcpy(hp->h.home, home, OVL_ID_BYTES);
	hp->h.ver = *ver;
	hp->h.type = type;
	hp->h.size = size;
	hint_hash(slice, key, klen, hp->h.hash);
	hp->h.slice = (uint8_t)si;
	memcpy(hp->key, key, klen);
	hp->klen = klen;
	hp->done = done;
	hp->arg = arg;
	hkl = hint_key(hs, &hp->h, hk);
	ret = node_store_put_async(rq->o.store, hk, hkl, hp->key, hp->klen, hint_put_cb, hp);
	if (ret < 0) {
		free(hp);
		return ret;
	}
	hs->putting++;
	hs_ref(hs);
	return 0;
}

int req_hint_put(struct node_req *rq, const uint8_t home[OVL_ID_BYTES], const char *slice,
		 const uint8_t *key, size_t klen, const struct ovl_wire_ver *ver, bool del,
		 req_hint_done_fn done, void *arg)
{
	return hint_put_type(rq, home, slice, key, klen, ver, del ? 'D' : 'P', 0, done, arg);
}

int req_hint_put_repair(struct node_req *rq, const uint8_t home[OVL_ID_BYTES], const char *slice,
			const uint8_t *key, size_t klen, const struct ovl_wire_ver *ver, bool del,
			uint64_t size, req_hint_done_fn done, void *arg)
{
	return hint_put_type(rq, home, slice, key, klen, ver, del ? 'T' : 'R', size, done, arg);
}

/* ---- hand-off ---- */
/* ---- pacing and repair progress (req_pace.c) ---- */

#define HINT_FAIL_LOG_MS 60000          /* a repair key's failure is logged at most this often */

bool hint_is_repair(uint8_t type)
{
	return type == 'R' || type == 'T';
}

/* Whether a new hand-off may start now (client first, duty cycle). */
static bool ho_pace_may_start(struct req_hints *hs, uint64_t now)
{
	unsigned running = 0;

	for (unsigned k = 0; k < HINT_HANDOFFS; k++)
		running += hs->ho[k].used;
	return req_pace_may_start(hs->rq, running, now);
}

void req_hints_repair_left(const struct node_req *rq, uint64_t *objects, uint64_t *bytes,
			   uint64_t *failed)
{
	const struct req_hints *hs = rq->hints;

	*objects = *bytes = *failed = 0;
	if (!hs)
		return;
	for (unsigned i = 0; i < hs->n; i++) {
		const struct hint *h = &hs->v[i];

		if (!hint_is_repair(h->type))
			continue;
		(*objects)++;
		*bytes += h->size;
		for (unsigned k = 0; k < hs->nhomes; k++)
			if (memcmp(hs->homes[k].id, h->home, OVL_ID_BYTES) == 0 && hs->homes[k].backoff_ms)
				(*failed)++;
	}
}

/* A hand-off delivered: repair progress, and a home that was full takes
 * copies again. */
static void ho_pace_delivered(struct handoff *ho)
{
	struct req_hints *hs = ho->hs;

	if (hint_is_repair(ho->h.type))
		req_pace_repair_done(hs->rq, ho->st.tomb ? 0 : ho->st.size, now_mono());
	req_pace_target_full(hs->rq, ho->h.home, false);
}

/* A hand-off failed: a full home pauses its hand-offs (probed every few
 * seconds); a repair key's failure goes to the log, at most once a minute
 * per key. */
static void ho_pace_failed(struct handoff *ho, struct hint_home *hh, int res)
{
	struct req_hints *hs = ho->hs;
	struct req_pace *p = &hs->rq->pace;
	uint64_t now = now_mono();
	char hex[2 * OVL_ID_BYTES + 1], kh[2 * 32 + 1];
	unsigned slot = 0;

	if (res == -ENOSPC) {
		hh->next_ms = now + REQ_PACE_FULL_PROBE_MS;
		req_pace_target_full(hs->rq, ho->h.home, true);
	}
	if (!hint_is_repair(ho->h.type) || !ho->klen)
		return;
	for (unsigned i = 0; i < REQ_FAIL_LOG_KEYS; i++) {
		if (memcmp(p->faillog[i].hash, ho->h.hash, sizeof(p->faillog[i].hash)) == 0) {
			slot = i;
			break;
		}
		if (p->faillog[i].ms < p->faillog[slot].ms)
			slot = i;
	}
	if (p->faillog[slot].ms && now < p->faillog[slot].ms + HINT_FAIL_LOG_MS &&
	    memcmp(p->faillog[slot].hash, ho->h.hash, sizeof(p->faillog[slot].hash)) == 0)
		return;
	memcpy(p->faillog[slot].hash, ho->h.hash, sizeof(p->faillog[slot].hash));
	p->faillog[slot].ms = now;
	ovl_hex_encode(ho->h.home, 8, hex);
	ovl_hex_encode(ho->key, ho->klen < 32 ? ho->klen : 32, kh);
	req_event(hs->rq, NODE_REQ_EV_WARN,
		  "repair: copy of key %s%s (slice '%s') to node %.16s failed (%s); retrying in %" PRIu64 " ms",
		  kh, ho->klen > 32 ? "..." : "", hs->slices[ho->h.slice], hex, strerror(-res),
		  hh->next_ms > now ? hh->next_ms - now : 0);
}

static void ho_pump(struct handoff *ho);
static void hints_schedule(struct req_hints *hs);

void req_hints_pace_pump(struct node_req *rq)
{
	struct req_hints *hs = rq->hints;
	static const unsigned n = HINT_HANDOFFS;

	if (!hs || hs->dying)
		return;
	/* from a rotating start, so that no hand-off always comes last */
	hs->pace_rr = (hs->pace_rr + 1) % n;
	for (unsigned k = 0; k < n; k++) {
		struct handoff *ho = &hs->ho[(hs->pace_rr + k) % n];

		if (ho->used && ho->paced && ho->fwd && !ho->reading)
			ho_pump(ho);
	}
	hints_schedule(hs);
}

/* ---- hand-off ---- */

static void hints_schedule(struct req_hints *hs);

static bool key_has_rw(struct node_req *rq, const uint8_t *key, size_t klen)
{
	return req_rw_key_busy(rq, key, klen);
}

/* Forget the hints of (home, hash, slice) at version ver or older: from
 * memory now, from the store by a delete each. */
static void hints_drop(struct req_hints *hs, const struct hint *h, const struct ovl_wire_ver *ver)
{
	for (unsigned i = 0; i < hs->n;) {
		struct hint *x = &hs->v[i];
		uint8_t hk[HINT_KEY_MAX];
		size_t hkl;

		if (x->slice != h->slice || memcmp(x->home, h->home, OVL_ID_BYTES) != 0 ||
		    memcmp(x->hash, h->hash, HINT_HASH_BYTES) != 0 || ovl_wire_ver_cmp(&x->ver, ver) > 0) {
			i++;
			continue;
		}
		hkl = hint_key(hs, x, hk);
		if (node_store_delete_async(hs->rq->o.store, hk, hkl, hint_store_del_cb, hs) == 0)
			hs_ref(hs);
		table_del(hs, i);
	}
}

static bool hints_for_key(const struct req_hints *hs, const struct hint *h)
{
	for (unsigned i = 0; i < hs->n; i++)
		if (hs->v[i].slice == h->slice && memcmp(hs->v[i].hash, h->hash, HINT_HASH_BYTES) == 0)
			return true;
	return false;
}

static void ho_unbusy(struct handoff *ho)
{
	struct req_hints *hs = ho->hs;

	for (unsigned i = 0; i < hs->n; i++)
		if (hs->v[i].slice == ho->h.slice &&
		    memcmp(hs->v[i].home, ho->h.home, OVL_ID_BYTES) == 0 &&
		    memcmp(hs->v[i].hash, ho->h.hash, HINT_HASH_BYTES) == 0)
			hs->v[i].busy = false;
}

static void ho_end(struct handoff *ho, int res)
{
	struct req_hints *hs = ho->hs;
	struct hint_home *hh = home_get(hs, ho->h.home, false);

	ho_fwd_abort(ho);
	ho_unbusy(ho);
	if (hh && res == -EBUSY) {
		/* flow control, not a failure: a home takes repair_inbound_max
		 * copies at once, and every member that lost a replica sends
		 * to it. The failure backoff (200 ms doubling to 10 s) left
		 * homes idle for seconds while they had room: repair ran at a
		 * fraction of what the nodes could do. */
		hh->busy_ms = hh->busy_ms ? hh->busy_ms * 2 : HINT_BUSY_MIN_MS;
		if (hh->busy_ms > HINT_BUSY_MAX_MS)
			hh->busy_ms = HINT_BUSY_MAX_MS;
		hh->next_ms = now_mono() + hh->busy_ms;
		hs->handoff_busy++;
	} else if (hh && res < 0) {
		hh->backoff_ms = hh->backoff_ms ? hh->backoff_ms * 2 : HINT_BACKOFF_MIN_MS;
		if (hh->backoff_ms > HINT_BACKOFF_MAX_MS)
			hh->backoff_ms = HINT_BACKOFF_MAX_MS;
		hh->next_ms = now_mono() + hh->backoff_ms;
		hs->handoff_failures++;
		ho_pace_failed(ho, hh, res);
	} else if (hh) {
		hh->backoff_ms = 0;
		hh->busy_ms = 0;
		hh->next_ms = 0;
	}
	ho->used = false;
	if (!hs->dying && !hs->stopped)
		hints_schedule(hs);
}

/* A copy this node kept only for hints: dropped once every hint for it
 * was delivered, if the store still holds the version delivered and this
 * node is no home of the key. Not a delete: nothing is written that
 * another node could ever see (an unversioned local delete, or the
 * tombstone's drop). */
struct copy_drop {
	struct req_hints *hs;
	struct hint h;
	struct ovl_wire_ver ver;
	uint8_t key[NODE_STORE_KEY_MAX];
	size_t klen;
};

static void copy_drop_cb(void *arg, int res, const struct node_store_objstat *st)
{
	struct copy_drop *cd = arg;
	struct req_hints *hs = cd->hs;
	struct node_req *rq = hs->rq;
	struct ovl_wire_ver held = { st ? st->ver.hlc : 0, st ? st->ver.node : 0 };

	if (res == 0 && st && !hs->dying && ovl_wire_ver_cmp(&held, &cd->ver) == 0 &&
	    !hints_for_key(hs, &cd->h) && !key_has_rw(rq, cd->key, cd->klen)) {
		int ret;

		if (st->tomb)
			ret = node_store_tomb_drop(rq->o.store, cd->key, cd->klen, &st->ver);
		else if ((ret = node_store_delete_async(rq->o.store, cd->key, cd->klen,
							hint_store_del_cb, hs)) == 0)
			hs_ref(hs);
		if (ret == 0)
			hs->copies_dropped++;
	}
	free(cd);
	hs_unref(hs);
}

static void copy_drop(struct handoff *ho, const struct ovl_wire_ver *ver)
{
	struct req_hints *hs = ho->hs;
	struct node_req *rq = hs->rq;
	const struct node_ctl_map *m = node_repl_map(rq->o.repl, hs->slices[ho->h.slice]);
	struct node_repl_plan plan;
	struct copy_drop *cd;

	if (!m || hints_for_key(hs, &ho->h) || key_has_rw(rq, ho->key, ho->klen))
		return;
	if (node_repl_plan(m->members, m->n_members, m->replicas ? m->replicas : 1,
			   node_repl_self(rq->o.repl), ho->key, ho->klen, NULL, &plan) < 0 ||
	    plan.self_home >= 0)
		return;
	cd = calloc(1, sizeof(*cd));
	if (!cd)
		return;
	cd->hs = hs;
	cd->h = ho->h;
	cd->ver = *ver;
	memcpy(cd->key, ho->key, ho->klen);
	cd->klen = ho->klen;
	if (node_store_stat_any_async(rq->o.store, cd->key, cd->klen, copy_drop_cb, cd) < 0) {
		free(cd);
		return;
	}
	hs_ref(hs);
}

static void ho_fwd_done(void *arg, const struct node_repl_fwd_result *fr)
{
	struct handoff *ho = arg;
	struct req_hints *hs = ho->hs;
	struct ovl_wire_ver ver = { ho->st.ver.hlc, ho->st.ver.node };

	ho->fwd = NULL;
	if (hs->dying) {
		hs_unref(hs);
		return;
	}
	if (fr->res == 0) {
		/* the home holds it (or a newer one) durably */
		hs->handoffs++;
		ho_pace_delivered(ho);
		if (hint_is_repair(ho->h.type))
			req_heal_repair_delivered(hs->rq, hs->slices[ho->h.slice], ho->key, ho->klen,
						  ho->h.home);
		hints_drop(hs, &ho->h, &ver);
		copy_drop(ho, &ver);
	}
	if (ho->reading) {
		/* the slot is freed when the read comes back */
		ho->end_pending = true;
		ho->end_res = fr->res;
	} else {
		ho_end(ho, fr->res);
	}
	hs_unref(hs);
}

static void ho_room(void *arg)
{
	struct handoff *ho = arg;

	ho_pump(ho);
}

static void ho_read_cb(void *arg, int res, struct node_store_rbuf **rb,
		       const struct node_store_objstat *st)
{
	struct handoff *ho = arg;
	struct req_hints *hs = ho->hs;
	ssize_t k;

	ho->reading = false;
	if (hs->dying) {
		hs_unref(hs);
		return;
	}
	if (!ho->fwd) {
		if (ho->end_pending)
			ho_end(ho, ho->end_res);
		hs_unref(hs);
		return;
	}
	if (res < 0 || !st || st->seq != ho->st.seq || !*rb || (*rb)->len == 0) {
		/* replaced, deleted or unreadable: give up this round */
		ho_end(ho, res < 0 ? res : -EAGAIN);
		hs_unref(hs);
		return;
	}
	k = node_repl_fwd_write(ho->fwd, (*rb)->data, (*rb)->len);
	if (k != (ssize_t)(*rb)->len) {
		ho_end(ho, k < 0 ? (int)k : -EIO);
		hs_unref(hs);
		return;
	}
	ho->off += (uint64_t)k;
	hs_unref(hs);
	ho_pump(ho);
}

/* Read the next piece the forward has room for. */
/* A hint (not a repair copy) for a home that asked for its hints within
 * HINT_POKE_MS: a node back from a restart, syncing. */
static bool ho_home_waits(const struct handoff *ho)
{
	const struct hint_home *hh;

	if (hint_is_repair(ho->h.type))
		return false;
	hh = home_get(ho->hs, ho->h.home, false);
	return hh && hh->poked_ms && now_mono() < hh->poked_ms + HINT_POKE_MS;
}

static void ho_pump(struct handoff *ho)
{
	struct req_hints *hs = ho->hs;
	uint64_t room, want;

	if (!ho->fwd || ho->reading || ho->off >= ho->st.size)
		return;
	room = node_repl_fwd_room(ho->fwd);
	want = ho->st.size - ho->off;
	if (want > room)
		want = room;
	if (want > HINT_READ_PIECE)
		want = HINT_READ_PIECE;
	if (!want)
		return; /* ho_room() comes back */
	/* background bytes: the token bucket and the duty cycle; except a
	 * hinted write's copy for a home that is asking for its hints: it
	 * answers busy to its clients until it holds them */
	if (!ho_home_waits(ho)) {
		want = req_pace_take(hs->rq, want, now_mono());
		ho->paced = want == 0;
		if (!want)
			return; /* req_hints_pace_pump() comes back */
	} else {
		ho->paced = false;
	}
	if (node_store_get_async(hs->rq->o.store, ho->key, ho->klen, ho->off, want, ho_read_cb,
				 ho) < 0) {
		ho_end(ho, -EIO);
		return;
	}
	ho->reading = true;
	hs_ref(hs);
}

static void ho_stat_cb(void *arg, int res, const struct node_store_objstat *st)
{
	struct handoff *ho = arg;
	struct req_hints *hs = ho->hs;
	struct node_req *rq = hs->rq;
	struct node_repl_fwd_args fa = { 0 };
	struct ovl_wire_hop hop = { 0 };
	struct ovl_wire_ver held = { st ? st->ver.hlc : 0, st ? st->ver.node : 0 };
	char err[OVL_WIRE_TEXT_SIZE];
	int ret;

	if (hs->dying) {
		hs_unref(hs);
		return;
	}
	if (res == -ENOENT || (res == 0 && st && ovl_wire_ver_cmp(&held, &ho->h.ver) < 0)) {
		/* the hinted copy never became durable here (a crash between the
		 * two records): the write was not acknowledged; nothing to hand */
		hints_drop(hs, &ho->h, &ho->h.ver);
		ho_end(ho, 0);
		hs_unref(hs);
		return;
	}
	if (res < 0 || !st) {
		ho_end(ho, res < 0 ? res : -EIO);
		hs_unref(hs);
		return;
	}
	ho->st = *st;
	memcpy(hop.id, ho->h.home, OVL_ID_BYTES);
	fa.type = st->tomb ? OVL_WIRE_T_DELETE : OVL_WIRE_T_PUT;
	fa.slice = hs->slices[ho->h.slice];
	fa.key = ho->key;
	fa.klen = ho->klen;
	fa.size = st->tomb ? 0 : st->size;
	fa.crc = st->crc;
	fa.val = st->tomb || st->size ? NULL : (const uint8_t *)"";
	fa.ver = held;
	fa.repair = hint_is_repair(ho->h.type); /* the receiver counts it as a repair stream */
	fa.chain = &hop;
	fa.nchain = 1;
	if (st->tomb)
		ho->st.size = 0;
	ho->off = 0;
	ret = node_repl_fwd_start(rq->o.repl, &fa, ho_fwd_done, ho, ho_room, ho, &ho->fwd, err,
				  sizeof(err));
	if (ret < 0) {
		ho_end(ho, ret);
		hs_unref(hs);
		return;
	}
	hs_ref(hs); /* for the forward's done */
	ho_pump(ho);
	hs_unref(hs);
}

/* A repair hint whose target is no home of its key under this node's
 * map now. */
static bool repair_target_gone(const struct handoff *ho)
{
	struct req_hints *hs = ho->hs;
	const struct node_ctl_map *m = node_repl_map(hs->rq->o.repl, hs->slices[ho->h.slice]);
	struct node_repl_plan plan;

	if (!hint_is_repair(ho->h.type) || !m)
		return false;
	return node_repl_plan(m->members, m->n_members, m->replicas ? m->replicas : 1, ho->h.home,
			      ho->key, ho->klen, NULL, &plan) == 0 && plan.self_home < 0;
}

static void ho_key_cb(void *arg, int res, struct node_store_rbuf **rb,
		      const struct node_store_objstat *st)
{
	struct handoff *ho = arg;
	struct req_hints *hs = ho->hs;
	int ret;

	(void)st;
	if (hs->dying) {
		hs_unref(hs);
		return;
	}
	if (res < 0 || !*rb || (*rb)->len == 0 || (*rb)->len > NODE_STORE_KEY_MAX) {
		/* an unreadable hint: nothing can be delivered from it */
		if (res == -ENOENT || (res == 0 && *rb))
			hints_drop(hs, &ho->h, &ho->h.ver);
		ho_end(ho, res < 0 && res != -ENOENT ? res : 0);
		hs_unref(hs);
		return;
	}
	memcpy(ho->key, (*rb)->data, (*rb)->len);
	ho->klen = (*rb)->len;
	if (repair_target_gone(ho)) {
		/* the target is no home of the key any more (the map changed):
		 * it would refuse the copy for good; the next pass writes the
		 * repair hints the new map calls for */
		hints_drop(hs, &ho->h, &ho->h.ver);
		ho_end(ho, 0);
		hs_unref(hs);
		return;
	}
	ret = node_store_stat_any_async(hs->rq->o.store, ho->key, ho->klen, ho_stat_cb, ho);
	if (ret == -ENOENT) {
		ho_stat_cb(ho, -ENOENT, NULL);
		return; /* it unrefs */
	}
	if (ret < 0) {
		ho_end(ho, ret);
		hs_unref(hs);
		return;
	}
}

/* Whether hints for member home of slice may be handed off now. */
static bool home_ready(struct req_hints *hs, const struct hint *h, uint64_t now, bool *gone)
{
	struct node_req *rq = hs->rq;
	const struct node_ctl_map *m = node_repl_map(rq->o.repl, hs->slices[h->slice]);
	struct hint_home *hh = home_get(hs, h->home, false);
	int mi;

	*gone = false;
	if (!m)
		return false;
	mi = node_repl_member_find(m->members, m->n_members, h->home);
	if (mi < 0) {
		/* no longer a member: the hint cannot be delivered (the copy
		 * stays here) */
		*gone = true;
		return false;
	}
	if (m->members[mi].state == OVL_MSG_STATE_OUT) {
		/* `out`: the repair passes give the key's homes their copies
		 * (req_hint_waiting_live() does not hold them back); the hint
		 * stays, so that the node, if it comes back, takes it before it
		 * serves its old copy, for as long as tombstones are kept: a node
		 * away longer comes back past what any replica remembers */
		if ((h->ver.hlc >> NODE_REPL_HLC_COUNTER_BITS) + hs->gc_after_ms <
		    node_repl_now_ms(rq->o.repl))
			*gone = true;
		return false;
	}
	if (hh && now < hh->next_ms)
		return false;
	if (hh && hh->poked_ms && now < hh->poked_ms + HINT_POKE_MS)
		return true; /* it asked: it is up, whatever this node's map says */
	return m->members[mi].state == OVL_MSG_STATE_UP &&
	       !node_repl_unreachable(rq->o.repl, m, (uint32_t)mi);
}

static void ho_start(struct req_hints *hs, struct handoff *ho, unsigned i)
{
	uint8_t hk[HINT_KEY_MAX];
	size_t hkl;

	memset(ho, 0, sizeof(*ho));
	ho->hs = hs;
	ho->used = true;
	ho->h = hs->v[i];
	if (hint_is_repair(ho->h.type))
		req_pace_repair_begin(hs->rq, now_mono());
	for (unsigned j = 0; j < hs->n; j++)
		if (hs->v[j].slice == ho->h.slice &&
		    memcmp(hs->v[j].home, ho->h.home, OVL_ID_BYTES) == 0 &&
		    memcmp(hs->v[j].hash, ho->h.hash, HINT_HASH_BYTES) == 0)
			hs->v[j].busy = true;
	hkl = hint_key(hs, &ho->h, hk);
	if (node_store_get_async(hs->rq->o.store, hk, hkl, 0, UINT64_MAX, ho_key_cb, ho) < 0) {
		ho_unbusy(ho);
		ho->used = false;
		return;
	}
	hs_ref(hs);
}

static void hints_schedule(struct req_hints *hs)
{
	uint64_t now = now_mono();
	unsigned scanned = 0;

	if (!hs->rq->o.repl || hs->stopped)
		return;
	while (hs->n && scanned < HINT_SCAN_PER_TICK && scanned < hs->n) {
		struct handoff *ho = NULL;
		unsigned i;
		bool gone = false;

		for (unsigned k = 0; k < HINT_HANDOFFS && !ho; k++)
			if (!hs->ho[k].used)
				ho = &hs->ho[k];
		if (!ho || !ho_pace_may_start(hs, now))
			return;
		if (hs->cursor >= hs->n)
			hs->cursor = 0;
		i = hs->cursor++;
		scanned++;
		if (hs->v[i].busy)
			continue;
		if (!home_ready(hs, &hs->v[i], now, &gone)) {
			if (gone) {
				struct hint h = hs->v[i];

				hints_drop(hs, &h, &h.ver);
			}
			continue;
		}
		ho_start(hs, ho, i);
	}
}

void req_hint_poke(struct node_req *rq, const uint8_t id[OVL_ID_BYTES])
{
	struct req_hints *hs = rq->hints;
	struct hint_home *hh = hs ? home_get(hs, id, false) : NULL;

	if (rq->o.repl)
		node_repl_heard(rq->o.repl, id);
	if (!hh || !hh->count)
		return;
	hh->poked_ms = now_mono();
	hh->next_ms = 0;
	hh->backoff_ms = 0;
	hints_schedule(hs);
}

/* ---- the sync of a returning node ---- */

void req_hints_sync_start(struct node_req *rq)
{
	struct req_hints *hs = rq->hints;

	if (!hs || !rq->o.repl)
		return;
	hs->syncing = true;
	hs->sync_since = now_mono();
	hs->sync_deadline = hs->sync_since + hs->sync_timeout_ms;
	hs->sync_next = 0;
	hs->sync_known = false;
	hs->nsync_slow = 0;
}

static bool sync_is_slow(const struct req_hints *hs, const uint8_t *id)
{
	for (unsigned i = 0; i < hs->nsync_slow; i++)
		if (!memcmp(hs->sync_slow[i], id, OVL_ID_BYTES))
			return true;
	return false;
}

void req_hints_connected(struct node_req *rq, bool connected)
{
	struct req_hints *hs = rq->hints;

	if (!hs || hs->connected == connected)
		return;
	hs->connected = connected;
	/* hint_sync_timeout counts from the moment the node can reach its
	 * broker again: a node cut off must not give up while it still cannot
	 * reach the members that hold its hints */
	if (connected && hs->syncing) {
		hs->sync_since = now_mono();
		hs->sync_deadline = hs->sync_since + hs->sync_timeout_ms;
	}
}

bool req_hints_syncing(const struct node_req *rq)
{
	return rq->hints && rq->hints->syncing;
}

static void sync_ask_done(void *arg, struct ovl_dpc_call *call)
{
	struct sync_ask *sa = arg;
	struct req_hints *hs = sa->hs;
	char name[OVL_WIRE_NAME_SIZE], hex[2 * OVL_ID_BYTES + 1];

	ovl_hex_encode(node_repl_self(hs->rq->o.repl), 8, hex);
	snprintf(name, sizeof(name), "hints_for_%.16s", hex);
	if (call->result == 0 && call->resp.status == OVL_WIRE_OK) {
		bool some = false;

		for (uint32_t i = 0; i < call->resp.ncounters; i++)
			if (strcmp(call->resp.counters[i].name, name) == 0 &&
			    call->resp.counters[i].value)
				some = true;
		if (some)
			hs->sync_more = hs->sync_held = true;
		else
			hs->sync_answered++;
	} else if (call->result == 0 || call->result == -ETIMEDOUT) {
		/* it answered, but not with its counters (a stale map here, a
		 * busy node), or it did not answer in time: a member slow under
		 * load may be the one holding this node's hints, so it is asked
		 * again rather than counted out (a dead one is refused at once,
		 * or leaves the map; hint_sync_timeout bounds the wait) */
		hs->sync_more = true;
		if (call->result == -ETIMEDOUT && !sync_is_slow(hs, sa->id) &&
		    hs->nsync_slow < SYNC_SLOW_MAX)
			memcpy(hs->sync_slow[hs->nsync_slow++], sa->id, OVL_ID_BYTES);
	} else {
		/* not reached: this node may still be cut off (its links coming
		 * back), or the member is dead; see sync_round() */
		hs->sync_unreached++;
	}
	hs->sync_outstanding--;
	free(sa);
	hs_unref(hs);
}

static void sync_round(struct req_hints *hs, uint64_t now)
{
	struct node_req *rq = hs->rq;
	struct node_repl *r = rq->o.repl;
	const uint8_t *self = node_repl_self(r);
	uint8_t (*asked)[OVL_ID_BYTES] = NULL;
	unsigned nasked = 0;
	const struct node_ctl_map *m;

	if (hs->sync_round) {
		if (hs->sync_outstanding)
			return;
		hs->sync_round = false;
		/* done when no member reached holds a hint for this node and
		 * the members reached are at least as many as those not: a dead
		 * member cannot keep a slice's reads busy, while a node cut off
		 * from most of its peers (it reaches none of them) waits. A
		 * member up in the map but not reached counts out only once the
		 * sync has waited SYNC_UNREACHED_WAIT_MS for it: it may be the
		 * one that holds the hints, just restarted */
		if (!hs->sync_more && hs->sync_known && hs->sync_answered >= hs->sync_unreached &&
		    (hs->sync_answered || !hs->sync_unreached) &&
		    (!hs->sync_unreached || now >= hs->sync_since + SYNC_UNREACHED_WAIT_MS)) {
			hs->syncing = false;
			return;
		}
		/* a member still holds hints for this node: it hands them off
		 * (however long that takes, never a stale copy served meanwhile) */
		if (hs->sync_held && hs->sync_deadline < now + hs->sync_timeout_ms)
			hs->sync_deadline = now + hs->sync_timeout_ms;
		hs->sync_next = now + SYNC_ROUND_MS;
	}
	if (now < hs->sync_next)
		return;
	asked = calloc(SYNC_ASK_MAX, OVL_ID_BYTES);
	if (!asked)
		return;
	hs->sync_more = false;
	hs->sync_answered = hs->sync_unreached = 0;
	hs->sync_held = false;
	hs->sync_round = true;
	for (unsigned i = 0; (m = node_repl_map_at(r, i)) != NULL; i++) {
		if (m->replicas < 2 || node_repl_member_find(m->members, m->n_members, self) < 0)
			continue;
		hs->sync_known = true;
		for (uint32_t j = 0; j < m->n_members; j++) {
			struct ovl_wire_req q;
			struct sync_ask *sa;
			char err[256];
			bool dup = false;

			if (memcmp(m->members[j].id, self, OVL_ID_BYTES) == 0 ||
			    m->members[j].state != OVL_MSG_STATE_UP)
				continue;
			for (unsigned k = 0; k < nasked; k++)
				dup |= memcmp(asked[k], m->members[j].id, OVL_ID_BYTES) == 0;
			if (dup || nasked == SYNC_ASK_MAX)
				continue;
			memcpy(asked[nasked++], m->members[j].id, OVL_ID_BYTES);
			sa = calloc(1, sizeof(*sa));
			if (!sa)
				continue;
			sa->hs = hs;
			memcpy(sa->id, m->members[j].id, OVL_ID_BYTES);
			memset(&q, 0, sizeof(q));
			q.type = OVL_WIRE_T_NODE_STAT;
			if (node_repl_call(r, m, j, &q, sync_ask_done, sa, NULL, err, sizeof(err)) < 0) {
				/* not asked (a peer passed over for now, as unreachable):
				 * not reached, unless it was only slow */
				if (sync_is_slow(hs, m->members[j].id))
					hs->sync_more = true;
				else
					hs->sync_unreached++;
				free(sa);
				continue;
			}
			hs->sync_outstanding++;
			hs_ref(hs);
		}
	}
	free(asked);
}

/* ---- tombstone GC ---- */

struct gc_ask {
	struct req_hints *hs;
};

static void gc_ask_done(void *arg, struct ovl_dpc_call *call)
{
	struct gc_ask *ga = arg;
	struct req_hints *hs = ga->hs;
	struct ovl_wire_ver v = { hs->gc_ver.hlc, hs->gc_ver.node };
	bool ok = false;

	if (call->result == 0 && call->resp.status == OVL_WIRE_NOT_FOUND && !call->resp.has_ver) {
		/* it holds nothing of the key (it dropped the tombstone too):
		 * no older copy there could come back */
		ok = true;
	} else if (call->result == 0 && call->resp.has_ver) {
		int c = ovl_wire_ver_cmp(&call->resp.ver, &v);

		/* it holds the tombstone (or something newer) */
		if (call->resp.status == OVL_WIRE_NOT_FOUND && call->resp.tomb && c >= 0)
			ok = true;
		else if (call->resp.status == OVL_WIRE_OK && c > 0)
			ok = true;
	}
	if (!ok)
		hs->gc_ok = false;
	if (--hs->gc_outstanding == 0 && !hs->dying) {
		if (hs->gc_ok && node_store_tomb_drop(hs->rq->o.store, hs->gc_key, hs->gc_klen,
						      &hs->gc_ver) == 0)
			hs->tombs_dropped++;
		hs->gc_busy = false;
	}
	free(ga);
	hs_unref(hs);
}

/* Ask the key's other homes whether they hold its tombstone: true if
 * the questions went out (the answers drop it), false if it cannot be
 * judged now (a home down, or this node no home of it). */
static bool gc_judge(struct req_hints *hs)
{
	struct node_req *rq = hs->rq;
	struct node_repl *r = rq->o.repl;
	const uint8_t *self = node_repl_self(r);
	const struct node_ctl_map *m;

	for (unsigned i = 0; (m = node_repl_map_at(r, i)) != NULL; i++) {
		struct node_repl_plan plan;
		uint8_t hash[HINT_HASH_BYTES];
		bool hinted = false;

		if (m->replicas < 2 || node_repl_member_find(m->members, m->n_members, self) < 0 ||
		    !req_key_in_slice(rq, m->name, hs->gc_key, hs->gc_klen))
			continue;
		/* a hint still waiting for this key: not every home has it */
		hint_hash(m->name, hs->gc_key, hs->gc_klen, hash);
		for (unsigned k = 0; k < hs->n; k++)
			hinted |= memcmp(hs->v[k].hash, hash, HINT_HASH_BYTES) == 0;
		if (hinted)
			return false;
		if (node_repl_plan(m->members, m->n_members, m->replicas, self, hs->gc_key,
				   hs->gc_klen, NULL, &plan) < 0 || plan.self_home < 0)
			continue;
		if (plan.missing)
			return false;
		for (unsigned k = 0; k < plan.nchain; k++)
			if (plan.chain[k].has_home)
				return false; /* a home is down */
		hs->gc_ok = true;
		hs->gc_outstanding = 1; /* held while the questions go out */
		for (unsigned k = 0; k < plan.nchain; k++) {
			struct ovl_wire_req q;
			struct gc_ask *ga = calloc(1, sizeof(*ga));
			char err[256];

			if (!ga) {
				hs->gc_ok = false;
				break;
			}
			ga->hs = hs;
			memset(&q, 0, sizeof(q));
			q.type = OVL_WIRE_T_STAT;
			memcpy(q.key, hs->gc_key, hs->gc_klen);
			q.key_len = (uint32_t)hs->gc_klen;
			if (node_repl_call(r, m, plan.chain_member[k], &q, gc_ask_done, ga, NULL, err,
					   sizeof(err)) < 0) {
				free(ga);
				hs->gc_ok = false;
				break;
			}
			hs->gc_outstanding++;
			hs_ref(hs);
		}
		if (--hs->gc_outstanding == 0) {
			if (hs->gc_ok && node_store_tomb_drop(rq->o.store, hs->gc_key, hs->gc_klen,
							      &hs->gc_ver) == 0)
				hs->tombs_dropped++;
			return false;
		}
		return true;
	}
	return false;
}

struct gc_scan {
	struct req_hints *hs;
	uint64_t now_ms;
	unsigned seen;
	bool found, end;
};

static int gc_scan_cb(void *arg, const void *key, size_t klen, const struct node_store_ver *ver,
		      bool tomb)
{
	struct gc_scan *g = arg;
	struct req_hints *hs = g->hs;

	g->seen++;
	if (req_key_reserved(key, klen)) {
		g->end = true; /* every key after is reserved */
		return 1;
	}
	memcpy(hs->gc_cursor, key, klen);
	hs->gc_cursor_len = klen;
	if (!tomb || node_store_ver_is_none(ver) ||
	    (ver->hlc >> NODE_REPL_HLC_COUNTER_BITS) + hs->gc_after_ms > g->now_ms)
		return 0;
	memcpy(hs->gc_key, key, klen);
	hs->gc_klen = klen;
	hs->gc_ver = *ver;
	g->found = true;
	return 1;
}

static void gc_step(struct req_hints *hs, uint64_t now)
{
	struct node_req *rq = hs->rq;
	struct gc_scan g = { .hs = hs };
	int n;

	if (hs->gc_busy || now < hs->gc_next)
		return;
	g.now_ms = node_repl_now_ms(rq->o.repl);
	n = node_store_list_ver(rq->o.store, NULL, 0, hs->gc_cursor_len ? hs->gc_cursor : NULL,
				hs->gc_cursor_len, GC_SCAN_STEP, gc_scan_cb, &g);
	if (g.found) {
		hs->gc_busy = gc_judge(hs);
		return;
	}
	if (g.end || n < (int)GC_SCAN_STEP) {
		/* a whole pass: the next one after a while */
		uint64_t every = hs->gc_after_ms / 4;

		if (every < 1000)
			every = 1000;
		if (every > 60000)
			every = 60000;
		hs->gc_cursor_len = 0;
		hs->gc_next = now + every;
	}
}

/* ---- the tick ---- */

void req_hints_tick(struct node_req *rq, uint64_t now)
{
	struct req_hints *hs = rq->hints;

	if (!hs || !rq->o.repl)
		return;
	if (hs->syncing) {
		if (!hs->connected && hs->sync_deadline < now + hs->sync_timeout_ms)
			hs->sync_deadline = now + hs->sync_timeout_ms;
		if (now >= hs->sync_deadline) {
			hs->syncing = false;
			hs->sync_timeouts++;
		} else {
			sync_round(hs, now);
		}
	}
	for (unsigned i = 0; i < hs->nhomes;) {
		struct hint_home *hh = &hs->homes[i];

		if (hh->poked_ms && now >= hh->poked_ms + HINT_POKE_MS)
			hh->poked_ms = 0;
		if (!hh->count && !hh->poked_ms) {
			*hh = hs->homes[--hs->nhomes];
			continue;
		}
		i++;
	}
	hints_schedule(hs);
	if (!hs->syncing)
		gc_step(hs, now);
}

/* ---- counters ---- */

unsigned req_hints_counters(const struct node_req *rq, struct ovl_wire_counter *c, unsigned max)
{
	const struct req_hints *hs = rq->hints;
	unsigned n = 0, order[HINT_TARGETS_SENT], norder = 0;

	if (!hs)
		return 0;
	/* hints_waiting only when there are some, as the per-target
	 * counters: a node without hints reports none (shelf status then
	 * shows no hints column) */
	{
		const struct {
			const char *name;
			uint64_t v;
		} t[] = {
			{ "hints_waiting", hs->n - hs->nrepair },
			{ "hint_handoffs", hs->handoffs },
			{ "hint_sync", hs->syncing },
			{ "tombstones_dropped", hs->tombs_dropped },
		};

		for (size_t i = hs->n > hs->nrepair ? 0 : 1; n < max && i < sizeof(t) / sizeof(t[0]); i++, n++) {
			snprintf(c[n].name, sizeof(c[n].name), "%s", t[i].name);
			c[n].value = t[i].v;
		}
	}
	/* the targets with the most hints, largest first */
	while (norder < HINT_TARGETS_SENT) {
		int best = -1;

		for (unsigned i = 0; i < hs->nhomes; i++) {
			bool taken = false;

			if (hs->homes[i].count <= hs->homes[i].nrepair)
				continue; /* repair hints make no node sync */
			for (unsigned k = 0; k < norder; k++)
				taken |= order[k] == i;
			if (!taken && (best < 0 || hs->homes[i].count - hs->homes[i].nrepair >
						       hs->homes[best].count - hs->homes[best].nrepair))
				best = (int)i;
		}
		if (best < 0)
			break;
		order[norder++] = (unsigned)best;
	}
	for (unsigned k = 0; k < norder && n < max; k++, n++) {
		char hex[2 * OVL_ID_BYTES + 1];

		ovl_hex_encode(hs->homes[order[k]].id, 8, hex);
		snprintf(c[n].name, sizeof(c[n].name), "hints_for_%.16s", hex);
		c[n].value = hs->homes[order[k]].count - hs->homes[order[k]].nrepair;
	}
	return n;
}

void req_hints_stats(const struct node_req *rq, struct node_req_hint_stats *st)
{
	const struct req_hints *hs = rq->hints;

	memset(st, 0, sizeof(*st));
	if (!hs)
		return;
	st->waiting = hs->n - hs->nrepair;
	st->handoffs = hs->handoffs;
	st->handoff_failures = hs->handoff_failures;
	st->handoff_busy = hs->handoff_busy;
	st->copies_dropped = hs->copies_dropped;
	st->syncing = hs->syncing;
	st->sync_timeouts = hs->sync_timeouts;
	st->tombstones_dropped = hs->tombs_dropped;
}

/* ---- for anti-entropy (req_heal.c) ---- */

/* Whether a hint for key (of home at ver or newer, when home is given;
 * of a member not `out` in the current map, when live) waits here. */
static bool hint_waiting(const struct node_req *rq, const uint8_t *home, const char *slice,
			 const uint8_t *key, size_t klen, const struct ovl_wire_ver *ver, bool live)
{
	const struct req_hints *hs = rq->hints;
	const struct node_ctl_map *m = live && rq->o.repl ? node_repl_map(rq->o.repl, slice) : NULL;
	uint8_t hash[HINT_HASH_BYTES];
	int si = -1;

	if (!hs)
		return false;
	for (unsigned i = 0; i < hs->nslices; i++)
		if (strcmp(hs->slices[i], slice) == 0)
			si = (int)i;
	if (si < 0)
		return false;
	hint_hash(slice, key, klen, hash);
	for (unsigned i = 0; i < hs->n; i++) {
		const struct hint *x = &hs->v[i];

		if (x->slice != si || memcmp(x->hash, hash, HINT_HASH_BYTES) != 0)
			continue;
		if (live) {
			int mi = m ? node_repl_member_find(m->members, m->n_members, x->home) : -1;

			if (mi >= 0 && m->members[mi].state != OVL_MSG_STATE_OUT)
				return true;
		} else if (!home || (memcmp(x->home, home, OVL_ID_BYTES) == 0 &&
				     (!ver || ovl_wire_ver_cmp(&x->ver, ver) >= 0))) {
			return true;
		}
	}
	return false;
}

bool req_hint_waiting(const struct node_req *rq, const uint8_t *home, const char *slice,
		      const uint8_t *key, size_t klen, const struct ovl_wire_ver *ver)
{
	return hint_waiting(rq, home, slice, key, klen, ver, false);
}

bool req_hint_waiting_live(const struct node_req *rq, const char *slice, const uint8_t *key,
			   size_t klen)
{
	return hint_waiting(rq, NULL, slice, key, klen, NULL, true);
}

unsigned req_hints_putting(const struct node_req *rq)
{
	return rq->hints ? rq->hints->putting : 0;
}

unsigned req_hints_repairs(const struct node_req *rq)
{
	return rq->hints ? rq->hints->nrepair : 0;
}

void req_hints_fill(const struct node_req *rq, unsigned *n, unsigned *max)
{
	const struct req_hints *hs = rq->hints;

	*n = hs ? hs->n : 0;
	*max = hs ? hs->max : NODE_REQ_HINTS_MAX_DEFAULT;
}

unsigned req_hints_repair_waiting(const struct node_req *rq, const char *slice)
{
	const struct req_hints *hs = rq->hints;
	unsigned k = 0;

	if (!hs)
		return 0;
	for (unsigned i = 0; i < hs->n; i++)
		if (hint_is_repair(hs->v[i].type) &&
		    (!slice || strcmp(hs->slices[hs->v[i].slice], slice) == 0))
			k++;
	return k;
}
