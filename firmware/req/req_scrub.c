/*
 * Scrub on a schedule, and repair of damaged copies (req.h, "Background
 * work").
 *
 * Scrub: a whole-drive pass every scrub_interval (±20 % jitter, start to
 * start), made of node_store_scrub_keys() calls of scrub_budget bytes,
 * one per tick, only while the store is idle (the call reads
 * synchronously), no client request is in flight and the duty cycle is
 * open. Each key it finds damaged is queued for repair.
 *
 * Repair of a damaged key (found by scrub, or by a client's GET or STAT
 * that answered -EIO): one at a time. The key's replicated slice (the one
 * the read named, else the first replicated slice whose placement makes
 * this node a home of it) gives the other homes, live ones first in
 * placement order, and the substitutes standing in for those that are
 * down. Each is asked in turn: STAT for its version, size and crc32c,
 * then GETs of at most 256 KiB (paced by the token bucket), each checked
 * against that version and its own crc, streamed into the store; the
 * commit (node_store_stream_finish_ver()) checks the whole crc and the
 * version: wrong bytes are never stored (-EBADMSG) and an older version
 * never replaces a newer one (-EALREADY: the next home is asked). A
 * tombstone is written as a versioned delete. When no home gives the key
 * back: if one could not be reached, the key is tried again later (back-
 * off 5 s doubling, at most REPAIR_ATTEMPTS times); else, or then, it
 * counts in heal_objects_lost.
 */
#include "req_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DMG_QUEUE_MAX 64             /* damaged keys waiting for repair */
#define REPAIR_ATTEMPTS 6
#define REPAIR_BACKOFF_MS 5000
#define REPAIR_PIECE_BYTES (256u << 10)

struct dmg {
	char slice[OVL_WIRE_NAME_SIZE]; /* "" : look it up */
	uint8_t key[NODE_STORE_KEY_MAX];
	size_t klen;
	unsigned attempts;
	uint64_t next_ms;
	bool from_scrub;
};

enum { FIX_IDLE, FIX_STAT, FIX_GET, FIX_WRITE, FIX_COMMIT, FIX_LOCAL };

struct fix {
	int phase;
	struct dmg d;
	char slice[OVL_WIRE_NAME_SIZE];
	uint8_t cand[OVL_PLACE_REPLICAS_MAX][OVL_ID_BYTES];
	unsigned ncand, ci;
	bool unreached;                 /* a home could not be asked, or was busy */
	struct ovl_wire_ver ver;        /* what the home holds */
	uint64_t size, off;
	uint32_t crc;
	struct node_store_stream *st;
	uint8_t *body;                  /* a piece not yet taken whole by the stream */
	uint64_t blen, bused;
	bool paced;                     /* waits for tokens (the tick asks again) */
	bool want_ready;                /* waits for the stream's ready */
	uint64_t gen;                   /* callbacks of an older attempt are ignored */
};

struct req_scrub {
	struct node_req *rq;
	uint64_t interval_ms, budget;
	bool running;
	uint64_t next_ms;               /* the next pass starts (monotonic) */
	uint64_t rnd;
	struct dmg *q;                  /* the queue (allocated on first use) */
	unsigned nq;
	struct fix fx;
	/* counters */
	uint64_t passes, last_unix, damaged, repaired, lost, dropped;
	bool dying;
	unsigned live;                  /* callbacks pending */
};

struct fix_call {
	struct req_scrub *sc;
	uint64_t gen;
	uint64_t off, len;              /* GET: the range asked */
};

static uint32_t rnd_next(struct req_scrub *sc)
{
	/* xorshift64*: jitter only, nothing secret */
	sc->rnd ^= sc->rnd >> 12;
	sc->rnd ^= sc->rnd << 25;
	sc->rnd ^= sc->rnd >> 27;
	return (uint32_t)((sc->rnd * 2685821657736338717ull) >> 32);
}

static void sc_ref(struct req_scrub *sc)
{
	sc->live++;
	sc->rq->live++;
}

static void sc_unref(struct req_scrub *sc)
{
	struct node_req *rq = sc->rq;

	if (--sc->live == 0 && sc->dying) {
		free(sc->q);
		free(sc);
	}
	req_rq_put(rq);
}

int req_scrub_new(struct node_req *rq, const struct node_req_opts *o)
{
	struct req_scrub *sc = calloc(1, sizeof(*sc));
	uint64_t now = ovl_mono_ms();

	if (!sc)
		return -ENOMEM;
	sc->rq = rq;
	sc->interval_ms = o->scrub_interval_ms ? o->scrub_interval_ms
					       : NODE_REQ_SCRUB_INTERVAL_MS_DEFAULT;
	sc->budget = o->scrub_budget ? o->scrub_budget : NODE_REQ_SCRUB_BUDGET_DEFAULT;
	sc->rnd = ovl_mono_ns() ^ (uint64_t)(uintptr_t)sc ^ 0x9e3779b97f4a7c15ull;
	if (!sc->rnd)
		sc->rnd = 1;
	/* the first pass after a random part of the interval: a node that
	 * restarts more often than its interval still scrubs */
	if (sc->interval_ms != UINT64_MAX)
		sc->next_ms = now + (sc->interval_ms > 1 ? rnd_next(sc) % sc->interval_ms : 0);
	rq->scrub = sc;
	return 0;
}

static void fix_reset(struct req_scrub *sc)
{
	struct fix *fx = &sc->fx;

	node_store_stream_abort(&fx->st);
	free(fx->body);
	fx->body = NULL;
	fx->blen = fx->bused = 0;
	fx->phase = FIX_IDLE;
	fx->paced = fx->want_ready = false;
	fx->gen++;
}

void req_scrub_destroy(struct node_req *rq)
{
	struct req_scrub *sc = rq->scrub;

	if (!sc)
		return;
	rq->scrub = NULL;
	fix_reset(sc);
	sc->dying = true;
	sc->live++; /* held while it lets go */
	rq->live++;
	sc_unref(sc);
}

/* ---- the queue ---- */

static void dmg_queue(struct req_scrub *sc, const char *slice, const uint8_t *key, size_t klen,
		      bool from_scrub)
{
	struct dmg *d;

	if (!klen || klen > NODE_STORE_KEY_MAX || req_key_reserved(key, klen))
		return;
	if (sc->fx.phase != FIX_IDLE && sc->fx.d.klen == klen && memcmp(sc->fx.d.key, key, klen) == 0)
		return; /* under repair now */
	for (unsigned i = 0; i < sc->nq; i++)
		if (sc->q[i].klen == klen && memcmp(sc->q[i].key, key, klen) == 0)
			return;
	if (!sc->q)
		sc->q = calloc(DMG_QUEUE_MAX, sizeof(*sc->q));
	if (!sc->q || sc->nq == DMG_QUEUE_MAX) {
		sc->dropped++; /* the next scrub pass finds it again */
		return;
	}
	d = &sc->q[sc->nq++];
	memset(d, 0, sizeof(*d));
	snprintf(d->slice, sizeof(d->slice), "%s", slice ? slice : "");
	memcpy(d->key, key, klen);
	d->klen = klen;
	d->from_scrub = from_scrub;
}

void req_damage_found(struct node_req *rq, const char *slice, const uint8_t *key, size_t klen)
{
	const struct node_ctl_map *m;

	if (!rq->scrub || rq->scrub->dying || !rq->o.repl)
		return;
	/* a read names its slice: only a replicated one has another copy */
	if (slice && slice[0] && (!(m = node_repl_map(rq->o.repl, slice)) || m->replicas < 2))
		return;
	dmg_queue(rq->scrub, slice, key, klen, false);
}

static void key_hex(const uint8_t *key, size_t klen, char *out /* 2*32+4 */)
{
	size_t n = klen < 32 ? klen : 32;
	bool text = true;

	for (size_t i = 0; i < n; i++)
		text &= key[i] >= 0x20 && key[i] < 0x7f && key[i] != '\'';
	if (text) {
		memcpy(out, key, n);
		out[n] = 0;
	} else {
		out[0] = '0';
		out[1] = 'x';
		ovl_hex_encode(key, n, out + 2);
	}
	if (klen > n)
		strcat(out, "...");
}

/* ---- repair of one key ---- */

static void fix_next_cand(struct req_scrub *sc);

/* The map of the key's replicated slice where this node is a home, and
 * the other homes (or their substitutes) into fx->cand. */
static const struct node_ctl_map *fix_plan(struct req_scrub *sc)
{
	struct node_req *rq = sc->rq;
	struct fix *fx = &sc->fx;
	struct node_repl *r = rq->o.repl;
	const struct node_ctl_map *m;

	for (unsigned i = 0; (m = fx->d.slice[0] ? (i ? NULL : node_repl_map(r, fx->d.slice))
					       : node_repl_map_at(r, i)) != NULL; i++) {
		struct node_repl_plan plan;
		bool *avoid;
		int ret;

		if (m->replicas < 2 || node_repl_member_find(m->members, m->n_members,
							     node_repl_self(r)) < 0 ||
		    !req_key_in_slice(rq, m->name, fx->d.key, fx->d.klen))
			continue;
		avoid = calloc(m->n_members ? m->n_members : 1, sizeof(*avoid));
		if (avoid)
			node_repl_avoid(r, m, avoid);
		ret = node_repl_plan(m->members, m->n_members, m->replicas, node_repl_self(r),
				     fx->d.key, fx->d.klen, avoid, &plan);
		free(avoid);
		if (ret < 0 || plan.self_home < 0)
			continue;
		fx->ncand = 0;
		for (unsigned k = 0; k < plan.nchain && fx->ncand < OVL_PLACE_REPLICAS_MAX; k++)
			memcpy(fx->cand[fx->ncand++], plan.chain[k].id, OVL_ID_BYTES);
		if (plan.missing)
			fx->unreached = true; /* a home with no live stand-in */
		snprintf(fx->slice, sizeof(fx->slice), "%s", m->name);
		return m;
	}
	return NULL;
}

static void fix_lost(struct req_scrub *sc, const char *why)
{
	struct fix *fx = &sc->fx;
	char kh[2 * 32 + 8];

	key_hex(fx->d.key, fx->d.klen, kh);
	sc->lost++;
	req_event(sc->rq, NODE_REQ_EV_ERROR, "repair: key '%s'%s%s%s is damaged here and %s: lost",
		  kh, fx->slice[0] ? " (slice '" : "", fx->slice, fx->slice[0] ? "')" : "", why);
	fix_reset(sc);
}

/* Every home asked, none gave it back. */
static void fix_local_cb(void *arg, int res, const struct node_store_objstat *st)
{
	struct fix_call *fc = arg;
	struct req_scrub *sc = fc->sc;
	struct fix *fx = &sc->fx;

	(void)st;
	if (sc->dying || fc->gen != fx->gen) {
		free(fc);
		sc_unref(sc);
		return;
	}
	free(fc);
	if (res != -EIO) {
		/* readable again (rewritten meanwhile) or gone: nothing to repair */
		fix_reset(sc);
	} else if (fx->unreached && fx->d.attempts + 1 < REPAIR_ATTEMPTS && sc->nq < DMG_QUEUE_MAX) {
		struct dmg *d = &sc->q[sc->nq++];
		char kh[2 * 32 + 8];

		*d = fx->d;
		d->attempts++;
		d->next_ms = ovl_mono_ms() + ((uint64_t)REPAIR_BACKOFF_MS << (d->attempts - 1));
		key_hex(d->key, d->klen, kh);
		req_event(sc->rq, NODE_REQ_EV_INFO,
			  "repair: key '%s' is damaged here and no home could give it back now; trying again in %" PRIu64 " s",
			  kh, (d->next_ms - ovl_mono_ms()) / 1000);
		fix_reset(sc);
	} else {
		fix_lost(sc, "no other home holds an intact copy of its version or a newer one");
	}
	sc_unref(sc);
}

static void fix_give_up(struct req_scrub *sc)
{
	struct fix *fx = &sc->fx;
	struct fix_call *fc = calloc(1, sizeof(*fc));
	int ret;

	if (!fc) {
		fix_reset(sc);
		return;
	}
	fc->sc = sc;
	fc->gen = fx->gen;
	fx->phase = FIX_LOCAL;
	ret = node_store_stat_any_async(sc->rq->o.store, fx->d.key, fx->d.klen, fix_local_cb, fc);
	if (ret < 0) {
		free(fc);
		if (ret == -EIO)
			fix_lost(sc, "no other home holds an intact copy");
		else
			fix_reset(sc);
		return;
	}
	sc_ref(sc);
}

/* This home could not give it: the next. */
static void fix_cand_failed(struct req_scrub *sc, bool unreached)
{
	struct fix *fx = &sc->fx;

	node_store_stream_abort(&fx->st);
	free(fx->body);
	fx->body = NULL;
	fx->blen = fx->bused = 0;
	fx->paced = fx->want_ready = false;
	fx->gen++;
	fx->unreached |= unreached;
	fx->ci++;
	fix_next_cand(sc);
}

static void fix_commit_cb(void *arg, int res, const struct node_store_objstat *st)
{
	struct fix_call *fc = arg;
	struct req_scrub *sc = fc->sc;
	struct fix *fx = &sc->fx;
	char kh[2 * 32 + 8], hex[2 * OVL_ID_BYTES + 1];

	if (sc->dying || fc->gen != fx->gen) {
		free(fc);
		sc_unref(sc);
		return;
	}
	free(fc);
	key_hex(fx->d.key, fx->d.klen, kh);
	ovl_hex_encode(fx->cand[fx->ci], 8, hex);
	if (res == 0) {
		sc->repaired++;
		req_event(sc->rq, NODE_REQ_EV_INFO,
			  "repair: key '%s' (slice '%s'), damaged here, rewritten from node %.16s at version %" PRIu64 ".%016" PRIx64,
			  kh, fx->slice, hex, fx->ver.hlc, fx->ver.node);
		fix_reset(sc);
	} else if (res == -EALREADY && st && !st->tomb &&
		   st->ver.hlc == fx->ver.hlc && st->ver.node == fx->ver.node) {
		/* that version is held intact here now (rewritten meanwhile) */
		fix_reset(sc);
	} else if (res == -EALREADY) {
		/* this node holds a newer version (damaged, or written since):
		 * that home's older one is no repair */
		fix_cand_failed(sc, false);
	} else {
		req_event(sc->rq, NODE_REQ_EV_WARN, "repair: key '%s' from node %.16s not stored: %s",
			  kh, hex, res == -EBADMSG ? "its bytes do not match their crc32c"
						   : strerror(-res));
		fix_cand_failed(sc, res != -EBADMSG);
	}
	sc_unref(sc);
}

static void fix_commit(struct req_scrub *sc)
{
	struct fix *fx = &sc->fx;
	struct fix_call *fc = calloc(1, sizeof(*fc));
	struct node_store_ver v = { fx->ver.hlc, fx->ver.node };
	int ret;

	if (!fc) {
		fix_cand_failed(sc, true);
		return;
	}
	fc->sc = sc;
	fc->gen = fx->gen;
	fx->phase = FIX_COMMIT;
	if (fx->st)
		ret = node_store_stream_finish_ver(&fx->st, fx->crc, &v, fix_commit_cb, fc);
	else if (fx->size == 0 && fx->crc == 0 && !fx->off)
		ret = node_store_put_ver_async(sc->rq->o.store, fx->d.key, fx->d.klen, "", 0, &v,
					       fix_commit_cb, fc);
	else
		ret = -EBADMSG;
	if (ret < 0) {
		char kh[2 * 32 + 8];

		free(fc);
		key_hex(fx->d.key, fx->d.klen, kh);
		if (ret == -EBADMSG)
			req_event(sc->rq, NODE_REQ_EV_WARN,
				  "repair: key '%s': the copy received does not match its crc32c: refused",
				  kh);
		fix_cand_failed(sc, ret != -EBADMSG);
		return;
	}
	sc_ref(sc);
}

static void fix_get(struct req_scrub *sc);

/* Hand the piece received to the stream, as much as it takes. */
static void fix_write(struct req_scrub *sc)
{
	struct fix *fx = &sc->fx;

	while (fx->bused < fx->blen) {
		ssize_t n = node_store_stream_write(fx->st, fx->body + fx->bused,
						    (size_t)(fx->blen - fx->bused));

		if (n < 0) {
			fix_cand_failed(sc, true);
			return;
		}
		if (n == 0) {
			fx->want_ready = true; /* fix_ready() comes back */
			return;
		}
		fx->bused += (uint64_t)n;
	}
	fx->off += fx->blen;
	free(fx->body);
	fx->body = NULL;
	fx->blen = fx->bused = 0;
	if (fx->off >= fx->size)
		fix_commit(sc);
	else
		fix_get(sc);
}

static void fix_ready(void *arg)
{
	struct req_scrub *sc = arg;

	if (sc->dying || !sc->fx.want_ready)
		return;
	sc->fx.want_ready = false;
	fix_write(sc);
}

static void fix_get_done(void *arg, struct ovl_dpc_call *call)
{
	struct fix_call *fc = arg;
	struct req_scrub *sc = fc->sc;
	struct fix *fx = &sc->fx;
	const struct ovl_wire_resp *rs = &call->resp;

	if (sc->dying || fc->gen != fx->gen) {
		free(fc);
		sc_unref(sc);
		return;
	}
	if (call->result < 0 || rs->status != OVL_WIRE_OK) {
		free(fc);
		fix_cand_failed(sc, true);
		sc_unref(sc);
		return;
	}
	/* the same version, the range asked, and its bytes as their crc says */
	if (!rs->has_ver || rs->ver.hlc != fx->ver.hlc || rs->ver.node != fx->ver.node ||
	    rs->size != fx->size || rs->offset != fc->off || call->body_len != fc->len ||
	    !rs->has_crc || ovl_crc32c(0, call->body, (size_t)call->body_len) != rs->crc) {
		free(fc);
		fix_cand_failed(sc, true); /* replaced meanwhile, or bad bytes: ask again later */
		sc_unref(sc);
		return;
	}
	free(fc);
	fx->body = ovl_dpc_call_take_body(call);
	if (!fx->body) {
		fix_cand_failed(sc, true);
		sc_unref(sc);
		return;
	}
	fx->blen = call->body_len;
	fx->bused = 0;
	fx->phase = FIX_WRITE;
	req_pace_repair_bytes(sc->rq, fx->blen, ovl_mono_ms());
	fix_write(sc);
	sc_unref(sc);
}

/* The member of the slice's map that is candidate ci, or -1. */
static int fix_member(struct req_scrub *sc, const struct node_ctl_map **mp)
{
	struct fix *fx = &sc->fx;
	const struct node_ctl_map *m = node_repl_map(sc->rq->o.repl, fx->slice);

	*mp = m;
	return m ? node_repl_member_find(m->members, m->n_members, fx->cand[fx->ci]) : -1;
}

/* Ask the home for the next piece (when the token bucket gives it). */
static void fix_get(struct req_scrub *sc)
{
	struct fix *fx = &sc->fx;
	const struct node_ctl_map *m = NULL;
	struct ovl_wire_req *q = NULL;
	struct fix_call *fc = NULL;
	char err[NODE_REPL_ERR_BYTES];
	uint64_t want = fx->size - fx->off, got;
	int mi;

	if (want > REPAIR_PIECE_BYTES)
		want = REPAIR_PIECE_BYTES;
	got = req_pace_take(sc->rq, want, ovl_mono_ms());
	fx->phase = FIX_GET;
	fx->paced = got == 0;
	if (!got)
		return; /* the tick comes back */
	mi = fix_member(sc, &m);
	q = calloc(1, sizeof(*q));
	fc = calloc(1, sizeof(*fc));
	if (mi < 0 || !q || !fc)
		goto fail;
	fc->sc = sc;
	fc->gen = fx->gen;
	fc->off = fx->off;
	fc->len = got;
	q->type = OVL_WIRE_T_GET;
	memcpy(q->key, fx->d.key, fx->d.klen);
	q->key_len = (uint32_t)fx->d.klen;
	q->has_range = true;
	q->offset = fx->off;
	q->length = got;
	if (node_repl_call(sc->rq->o.repl, m, (uint32_t)mi, q, fix_get_done, fc, NULL, err,
			   sizeof(err)) < 0)
		goto fail;
	free(q);
	sc_ref(sc);
	return;
fail:
	free(q);
	free(fc);
	fix_cand_failed(sc, true);
}

static void fix_stat_done(void *arg, struct ovl_dpc_call *call)
{
	struct fix_call *fc = arg;
	struct req_scrub *sc = fc->sc;
	struct fix *fx = &sc->fx;
	const struct ovl_wire_resp *rs = &call->resp;
	struct node_store_ver v;
	int ret;

	if (sc->dying || fc->gen != fx->gen) {
		free(fc);
		sc_unref(sc);
		return;
	}
	free(fc);
	if (call->result < 0 || (rs->status != OVL_WIRE_OK && rs->status != OVL_WIRE_NOT_FOUND)) {
		fix_cand_failed(sc, true); /* not reached, busy, damaged there too... */
		sc_unref(sc);
		return;
	}
	if (!rs->has_ver || (rs->ver.hlc == 0 && rs->ver.node == 0)) {
		fix_cand_failed(sc, false); /* holds nothing, or nothing versioned */
		sc_unref(sc);
		return;
	}
	fx->ver = rs->ver;
	v.hlc = rs->ver.hlc;
	v.node = rs->ver.node;
	if (rs->status == OVL_WIRE_NOT_FOUND) {
		struct fix_call *dc = rs->tomb ? calloc(1, sizeof(*dc)) : NULL;

		if (!dc) {
			fix_cand_failed(sc, !rs->tomb);
			sc_unref(sc);
			return;
		}
		/* a tombstone there: the key's newest state is its delete */
		dc->sc = sc;
		dc->gen = fx->gen;
		fx->phase = FIX_COMMIT;
		ret = node_store_delete_ver_async(sc->rq->o.store, fx->d.key, fx->d.klen, &v,
						  fix_commit_cb, dc);
		if (ret < 0) {
			free(dc);
			fix_cand_failed(sc, true);
		} else {
			sc_ref(sc);
		}
		sc_unref(sc);
		return;
	}
	if (!rs->has_crc || rs->size > NODE_STORE_VALUE_MAX) {
		fix_cand_failed(sc, false);
		sc_unref(sc);
		return;
	}
	fx->size = rs->size;
	fx->crc = rs->crc;
	fx->off = 0;
	if (fx->size == 0) {
		fix_commit(sc);
		sc_unref(sc);
		return;
	}
	ret = node_store_stream_begin(sc->rq->o.store, fx->d.key, fx->d.klen, fx->size, fix_ready, sc,
				      &fx->st);
	if (ret < 0) {
		fix_cand_failed(sc, true);
		sc_unref(sc);
		return;
	}
	fix_get(sc);
	sc_unref(sc);
}

/* Ask the next home for its version of the key. */
static void fix_next_cand(struct req_scrub *sc)
{
	struct fix *fx = &sc->fx;

	while (fx->ci < fx->ncand) {
		const struct node_ctl_map *m = NULL;
		struct ovl_wire_req *q = calloc(1, sizeof(*q));
		struct fix_call *fc = calloc(1, sizeof(*fc));
		char err[NODE_REPL_ERR_BYTES];
		int mi = fix_member(sc, &m);

		if (mi >= 0 && q && fc) {
			fc->sc = sc;
			fc->gen = fx->gen;
			q->type = OVL_WIRE_T_STAT;
			memcpy(q->key, fx->d.key, fx->d.klen);
			q->key_len = (uint32_t)fx->d.klen;
			if (node_repl_call(sc->rq->o.repl, m, (uint32_t)mi, q, fix_stat_done, fc, NULL,
					   err, sizeof(err)) == 0) {
				free(q);
				fx->phase = FIX_STAT;
				sc_ref(sc);
				return;
			}
		}
		free(q);
		free(fc);
		fx->unreached = true;
		fx->ci++;
	}
	fix_give_up(sc);
}

static void fix_start(struct req_scrub *sc, const struct dmg *d)
{
	struct fix *fx = &sc->fx;
	uint64_t gen = fx->gen;

	memset(fx, 0, sizeof(*fx));
	fx->gen = gen + 1;
	fx->d = *d;
	if (!fix_plan(sc)) {
		char kh[2 * 32 + 8];

		key_hex(d->key, d->klen, kh);
		sc->lost++;
		req_event(sc->rq, NODE_REQ_EV_ERROR,
			  "repair: key '%s' is damaged here and no replicated slice holds it elsewhere: lost",
			  kh);
		fix_reset(sc);
		return;
	}
	fx->phase = FIX_STAT;
	fix_next_cand(sc);
}

/* ---- scrub ---- */

static void scrub_damaged(void *arg, const void *key, size_t klen)
{
	struct req_scrub *sc = arg;
	char kh[2 * 32 + 8];

	sc->damaged++;
	key_hex(key, klen, kh);
	req_event(sc->rq, NODE_REQ_EV_WARN, "scrub: key '%s' is damaged on this drive%s", kh,
		  sc->rq->o.repl ? "; fetching it again from a replica" : "");
	if (sc->rq->o.repl)
		dmg_queue(sc, NULL, key, klen, true);
}

static void scrub_step(struct req_scrub *sc, uint64_t now)
{
	struct node_req *rq = sc->rq;
	struct node_store_scrub_report rep;
	int ret;

	if (sc->interval_ms == UINT64_MAX)
		return;
	if (!sc->running) {
		if (now < sc->next_ms)
			return;
		sc->running = true;
		sc->next_ms = now + req_jitter_ms(sc->interval_ms, rnd_next(sc));
	}
	/* the call reads synchronously: only while nothing else waits */
	if (rq->pace.fg || !req_duty_open(rq->pace.duty, now) || !node_store_idle(rq->o.store))
		return;
	ret = node_store_scrub_keys(rq->o.store, sc->budget, &rep, scrub_damaged, sc);
	if (ret < 0)
		return; /* busy now (or the drive failed: the store says so) */
	if (rep.wrapped) {
		sc->running = false;
		sc->passes++;
		sc->last_unix = rq->o.repl ? node_repl_now_ms(rq->o.repl) / 1000 : (uint64_t)time(NULL);
	}
}

void req_scrub_tick(struct node_req *rq, uint64_t now)
{
	struct req_scrub *sc = rq->scrub;
	struct fix *fx;

	if (!sc || sc->dying)
		return;
	fx = &sc->fx;
	scrub_step(sc, now);
	if (!rq->o.repl)
		return;
	if (fx->phase == FIX_GET && fx->paced) {
		fix_get(sc);
		return;
	}
	if (fx->phase != FIX_IDLE)
		return;
	for (unsigned i = 0; i < sc->nq; i++) {
		struct dmg d;

		if (sc->q[i].next_ms > now)
			continue;
		d = sc->q[i];
		sc->q[i] = sc->q[--sc->nq];
		fix_start(sc, &d);
		return;
	}
}

unsigned req_scrub_counters(const struct node_req *rq, struct ovl_wire_counter *c, unsigned max)
{
	const struct req_scrub *sc = rq->scrub;
	unsigned n = 0;

	if (!sc)
		return 0;
	{
		const struct {
			const char *name;
			uint64_t v;
		} t[] = {
			{ "scrub_passes", sc->passes },
			{ "scrub_last_unix", sc->last_unix },
			{ "scrub_damaged", sc->damaged },
			{ "scrub_repaired", sc->repaired },
			{ "heal_objects_lost", sc->lost },
		};

		/* heal_objects_lost only where copies could come back from */
		size_t nt = sizeof(t) / sizeof(t[0]) - (rq->o.repl ? 0 : 1);

		for (size_t i = 0; n < max && i < nt; i++, n++) {
			snprintf(c[n].name, sizeof(c[n].name), "%s", t[i].name);
			c[n].value = t[i].v;
		}
	}
	return n;
}
