/*
 * Garbage collection of large objects' chunks (req.h, "Chunk GC";
 * docs/PROTOCOL.md): the node's own intent keys (fe x8 'G' id) are listed
 * from the store, and an intent this node is the first live home of, once
 * older than chunk_gc_after, is settled: the object key it names is read
 * through its homes (in every slice of this node: keys carry no slice); a
 * manifest of the intent's id there means the chunks are live (only the
 * intent goes), anything else that every home agrees on means they are
 * not (every chunk of the id, listed on every member, is deleted through
 * its head, then the intent). Doubt (a home that does not answer, homes
 * that disagree, a damaged manifest of the same id, a member down or that
 * cannot list) never deletes a chunk: the intent waits for the next pass.
 *
 * One request in flight at a time, each started only when background work
 * may start (req_pace_may_start()), so that a pass goes at the pace of the
 * node's other background work and never competes with its clients.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "req_int.h"

#define GC_PAGE_KEYS 256      /* chunk keys listed at once from one member */
#define GC_CAND_MAX OVL_PLACE_REPLICAS_MAX
#define GC_REBALANCE_EXTRA 2  /* beyond the homes, as a client read asks */
#define GC_SLICES_MAX 16      /* slices of this node an intent is judged in */
#define GC_KEYS_PER_TICK 256  /* intent keys looked at per tick, at most */

enum gc_phase {
	GP_IDLE,        /* between passes */
	GP_NEXT,        /* the next intent key of the pass */
	GP_INTENT_READ, /* its value read locally */
	GP_K_READ,      /* the object key's first bytes, home by home */
	GP_LIST,        /* the chunks of the id, member by member */
	GP_DEL_CHUNK,   /* deleting the chunks of a page */
	GP_DEL_INTENT,  /* deleting the intent */
};

/* What one home said of the object key. */
enum gc_ans { ANS_LIVE, ANS_OTHER, ANS_NOTFOUND, ANS_DAMAGED, ANS_FAIL };

struct req_gc {
	struct node_req *rq;
	uint64_t after_ms, interval_ms;
	uint64_t next_ms;             /* monotonic: the next pass starts */
	enum gc_phase phase;
	bool waiting;                 /* a request is in flight: its callback moves on */
	bool in_run, dying, stopped;
	unsigned budget;              /* intent keys this tick may still look at */
	unsigned live;                /* callbacks pending */
	/* the pass: the last intent key looked at */
	uint8_t cur[OVL_LARGE_INTENT_KEY_BYTES];
	size_t cur_len;
	/* the intent in hand */
	uint8_t ikey[OVL_LARGE_INTENT_KEY_BYTES];
	uint8_t id[OVL_LARGE_ID_BYTES];
	struct node_store_ver iver;   /* the intent record's version ((0, 0): none) */
	/* keys carry no slice: the intent is judged in every slice this node
	 * is a member of (replicated ones first), the current one sl[si] */
	char sl[GC_SLICES_MAX][OVL_WIRE_NAME_SIZE];
	bool sl_ihome[GC_SLICES_MAX]; /* this node is a home of the intent key there */
	unsigned nsl, si;
	unsigned v_live, v_doubt, v_damaged; /* the slices' verdicts so far */
	bool bad;                     /* its value did not parse: it goes alone */
	uint8_t kkey[OVL_WIRE_KEY_MAX_BYTES]; /* the object key it names */
	size_t kklen;
	uint32_t count;
	/* the object key's candidates, in placement order (homes first) */
	uint8_t cand[GC_CAND_MAX][OVL_ID_BYTES];
	unsigned ncand, nhomes, nask, ci;
	unsigned n_live, n_other, n_nf, n_fail, n_damaged;
	/* the chunks: members to list, the page of keys in hand */
	uint8_t (*mem)[OVL_ID_BYTES];
	unsigned nmem, mi;
	uint8_t after[OVL_LARGE_CHUNK_KEY_BYTES];
	size_t after_len;
	uint8_t page[GC_PAGE_KEYS][OVL_LARGE_CHUNK_KEY_BYTES];
	unsigned npage, pi;
	bool more, del_failed;
	/* counters (NODE-STAT) */
	uint64_t checked, live_n, collected, chunks, bad_n, errors, deferred, passes;
	/* this pass's, for its log line */
	uint64_t p_checked, p_live, p_collected, p_chunks, p_bad, p_errors, p_deferred;
};

static void gc_run(struct req_gc *gc);
static void chunks_slice(struct req_gc *gc);

static void gc_ref(struct req_gc *gc)
{
	gc->live++;
	gc->rq->live++;
}

static void gc_unref(struct req_gc *gc)
{
	struct node_req *rq = gc->rq;

	if (--gc->live == 0 && gc->dying) {
		free(gc->mem);
		free(gc);
	}
	req_rq_put(rq);
}

int req_gc_new(struct node_req *rq, const struct node_req_opts *o)
{
	struct req_gc *gc = calloc(1, sizeof(*gc));

	if (!gc)
		return -ENOMEM;
	gc->rq = rq;
	gc->after_ms = o->chunk_gc_after_ms ? o->chunk_gc_after_ms
					    : NODE_REQ_CHUNK_GC_AFTER_MS_DEFAULT;
	gc->interval_ms = o->chunk_gc_interval_ms ? o->chunk_gc_interval_ms
						  : NODE_REQ_CHUNK_GC_INTERVAL_MS_DEFAULT;
	gc->next_ms = ovl_mono_ms() + req_jitter_ms(gc->interval_ms, (uint32_t)rand());
	rq->gc = gc;
	return 0;
}

void req_gc_stop(struct node_req *rq)
{
	if (rq->gc)
		rq->gc->stopped = true;
}

void req_gc_destroy(struct node_req *rq)
{
	struct req_gc *gc = rq->gc;

	if (!gc)
		return;
	rq->gc = NULL;
	gc->dying = true;
	gc->live++; /* held while it lets go */
	rq->live++;
	gc_unref(gc);
}

/* ---- placement ---- */

static bool is_self(const struct node_req *rq, const uint8_t *id)
{
	return memcmp(id, node_repl_self(rq->o.repl), OVL_ID_BYTES) == 0;
}

/* The placement order of key over m's members not `out` (at most max),
 * as client and node compute it: indexes into m->members. Its first R
 * are the homes. A count, or -errno. */
static int gc_place(const struct node_ctl_map *m, const void *key, size_t klen, unsigned *order,
		    unsigned max)
{
	return node_repl_place_order(m, key, klen, max, order);
}

static unsigned map_r(const struct node_ctl_map *m)
{
	unsigned r = m->replicas ? m->replicas : 1;

	return r > OVL_PLACE_REPLICAS_MAX ? OVL_PLACE_REPLICAS_MAX : r;
}

/* Whether member i answers as far as this node knows (itself always). */
static bool member_live(struct node_req *rq, const struct node_ctl_map *m, uint32_t i)
{
	if (is_self(rq, m->members[i].id))
		return true;
	return m->members[i].state == OVL_MSG_STATE_UP && !node_repl_unreachable(rq->o.repl, m, i);
}

/* The first live home of key in m (an index into m->members), or -1. */
static int first_live_home(struct node_req *rq, const struct node_ctl_map *m, const void *key,
			   size_t klen)
{
	unsigned order[OVL_PLACE_REPLICAS_MAX];
	unsigned r = map_r(m);
	int n = gc_place(m, key, klen, order, r);

	for (int h = 0; h < n; h++)
		if (member_live(rq, m, order[h]))
			return (int)order[h];
	return -1;
}

/* The slices this node is a member of, into gc->sl (replicated ones
 * first: their versioned deletes settle a key before a plain slice's
 * listing could show it), each with whether this node is a home of key
 * there. 0 when it is the first live home of key in at least one of
 * them; -ENOENT when in none (another node settles the intent); -E2BIG
 * with more slices than GC_SLICES_MAX (left alone: a slice not looked at
 * could hold the object). */
static int intent_slices(struct req_gc *gc, const uint8_t *key, size_t klen)
{
	struct node_req *rq = gc->rq;
	const struct node_ctl_map *m;
	bool first = false;

	gc->nsl = 0;
	for (int pass = 0; pass < 2; pass++) {
		for (unsigned i = 0; (m = node_repl_map_at(rq->o.repl, i)) != NULL; i++) {
			unsigned order[OVL_PLACE_REPLICAS_MAX];
			int n, head;

			if ((map_r(m) > 1) != (pass == 0) ||
			    node_repl_member_find(m->members, m->n_members,
						  node_repl_self(rq->o.repl)) < 0 ||
			    !req_key_in_slice(rq, m->name, key, klen))
				continue;
			if (gc->nsl == GC_SLICES_MAX)
				return -E2BIG;
			snprintf(gc->sl[gc->nsl], sizeof(gc->sl[0]), "%s", m->name);
			gc->sl_ihome[gc->nsl] = false;
			n = gc_place(m, key, klen, order, map_r(m));
			for (int h = 0; h < n; h++)
				if (is_self(rq, m->members[order[h]].id))
					gc->sl_ihome[gc->nsl] = true;
			head = first_live_home(rq, m, key, klen);
			if (head >= 0 && is_self(rq, m->members[head].id))
				first = true;
			gc->nsl++;
		}
	}
	return first ? 0 : -ENOENT;
}

/* Whether key is an object (not a tombstone) in this node's store. */
struct live_find {
	size_t klen;
	bool live;
};

static int live_cb(void *arg, const void *key, size_t klen, const struct node_store_ver *ver,
		   bool tomb)
{
	struct live_find *f = arg;

	(void)key;
	(void)ver;
	f->live = klen == f->klen && !tomb;
	return 1;
}

static bool local_live(struct req_gc *gc, const uint8_t *key, size_t klen)
{
	struct live_find f = { .klen = klen };

	/* the prefix walk from the key itself: the first entry is the key
	 * when it is held (a longer key with the same start comes after) */
	node_store_list_ver(gc->rq->o.store, key, klen, NULL, 0, 1, live_cb, &f);
	return f.live;
}

/* ---- small helpers ---- */

static void key_hex(const uint8_t *key, size_t klen, char *out, size_t cap)
{
	size_t n = klen;

	if (n * 2 + 4 > cap)
		n = (cap - 4) / 2;
	ovl_hex_encode(key, n, out);
	if (n < klen)
		strcat(out, "...");
}

/* Start a request of this layer on this node (GET, DELETE, LIST) on the
 * intent's slice: the callback moves the pass on. 0 or -errno (nothing
 * started; the pass is not waiting). */
static int local_start(struct req_gc *gc, struct node_req_args *a, node_req_done_fn done)
{
	int ret;

	a->slice = gc->sl[gc->si];
	gc->waiting = true;
	gc_ref(gc);
	ret = node_req_start(gc->rq, a, done, gc);
	if (ret < 0) {
		gc->waiting = false;
		gc->live--;
		gc->rq->live--;
	}
	return ret;
}

static int remote_start(struct req_gc *gc, const uint8_t *id, struct ovl_wire_req *q,
			node_repl_call_fn done)
{
	struct node_req *rq = gc->rq;
	const struct node_ctl_map *m = node_repl_map(rq->o.repl, gc->sl[gc->si]);
	char err[NODE_REPL_ERR_BYTES];
	int mi, ret;

	mi = m ? node_repl_member_find(m->members, m->n_members, id) : -1;
	if (mi < 0)
		return -ENXIO; /* no member now */
	gc->waiting = true;
	gc_ref(gc);
	ret = node_repl_call(rq->o.repl, m, (uint32_t)mi, q, done, gc, NULL, err, sizeof(err));
	if (ret < 0) {
		gc->waiting = false;
		gc->live--;
		gc->rq->live--;
	}
	return ret;
}

/* A callback's end: the pass moves on (or the module is gone). */
static void cb_end(struct req_gc *gc)
{
	gc->waiting = false;
	if (!gc->dying)
		gc_run(gc);
	gc_unref(gc);
}

/* ---- one intent ---- */

static void intent_done(struct req_gc *gc)
{
	gc->phase = GP_NEXT;
}

static void defer(struct req_gc *gc)
{
	gc->deferred++;
	gc->p_deferred++;
	intent_done(gc);
}

static void gc_error(struct req_gc *gc)
{
	gc->errors++;
	gc->p_errors++;
}

static void del_intent_cb(void *arg, const struct node_req_result *r, struct node_req_buf **buf)
{
	struct req_gc *gc = arg;
	char kh[64];

	(void)buf;
	if (!gc->dying) {
		if (r->res < 0) {
			key_hex(gc->ikey, sizeof(gc->ikey), kh, sizeof(kh));
			req_event(gc->rq, NODE_REQ_EV_WARN, "chunk gc: cannot delete intent %s: %s", kh,
				  r->msg ? r->msg : "failed");
			gc_error(gc);
			intent_done(gc);
		} else {
			gc->si++; /* the next slice it is homed here in */
		}
	}
	cb_end(gc);
}

/* The intent is deleted through every slice this node is a home of it in
 * (replicated ones first: a plain slice's delete then finds nothing). */
static bool del_intent(struct req_gc *gc)
{
	struct node_req_args a = { .type = NODE_REQ_DELETE, .key = gc->ikey,
				   .klen = sizeof(gc->ikey) };
	const struct node_ctl_map *m;
	int ret;

	while (gc->si < gc->nsl) {
		m = node_repl_map(gc->rq->o.repl, gc->sl[gc->si]);
		if (gc->sl_ihome[gc->si] && m &&
		    (map_r(m) > 1 || local_live(gc, gc->ikey, sizeof(gc->ikey))))
			break;
		gc->si++;
	}
	if (gc->si == gc->nsl) {
		if (gc->bad) {
			/* counted when found */
		} else if (gc->v_live) {
			gc->live_n++;
			gc->p_live++;
		} else {
			gc->collected++;
			gc->p_collected++;
		}
		intent_done(gc);
		return true;
	}
	if (!req_pace_may_start(gc->rq, 0, ovl_mono_ms()))
		return false;
	ret = local_start(gc, &a, del_intent_cb);
	if (ret < 0) {
		if (ret == -EBUSY)
			defer(gc);
		else
			gc_error(gc);
		intent_done(gc);
	}
	return true;
}

/* ---- deleting the chunks ---- */

static void del_chunk_cb_res(struct req_gc *gc, int res, const char *why)
{
	char kh[80];

	if (res == 0) {
		gc->chunks++;
		gc->p_chunks++;
	} else {
		key_hex(gc->page[gc->pi], OVL_LARGE_CHUNK_KEY_BYTES, kh, sizeof(kh));
		req_event(gc->rq, NODE_REQ_EV_WARN, "chunk gc: cannot delete chunk %s: %s", kh, why);
		gc->del_failed = true;
		gc_error(gc);
	}
	gc->pi++;
}

static void del_chunk_local_cb(void *arg, const struct node_req_result *r, struct node_req_buf **buf)
{
	struct req_gc *gc = arg;

	(void)buf;
	if (!gc->dying)
		del_chunk_cb_res(gc, r->res, r->msg ? r->msg : "failed");
	cb_end(gc);
}

static void del_chunk_remote_cb(void *arg, struct ovl_dpc_call *call)
{
	struct req_gc *gc = arg;

	if (!gc->dying) {
		int res = ovl_dpc_call_errno(call);

		del_chunk_cb_res(gc, res, call->result < 0 ? call->err : call->resp.message);
	}
	cb_end(gc);
}

static void intent_delete_start(struct req_gc *gc)
{
	gc->si = 0;
	gc->phase = GP_DEL_INTENT;
}

static bool del_chunk(struct req_gc *gc)
{
	struct node_req *rq = gc->rq;
	const struct node_ctl_map *m = node_repl_map(rq->o.repl, gc->sl[gc->si]);
	const uint8_t *key;
	uint8_t id[OVL_LARGE_ID_BYTES];
	int head, ret;

	if (gc->pi == gc->npage) {
		if (gc->more) {
			gc->phase = GP_LIST;
		} else {
			gc->mi++;
			gc->after_len = 0;
			if (gc->mi < gc->nmem)
				gc->phase = GP_LIST;
			else if (gc->del_failed)
				intent_done(gc); /* a chunk left: the intent stays for the next pass */
			else if (++gc->si < gc->nsl)
				chunks_slice(gc);
			else
				intent_delete_start(gc);
		}
		return true;
	}
	if (!req_pace_may_start(rq, 0, ovl_mono_ms()))
		return false;
	key = gc->page[gc->pi];
	if (!m || ovl_large_chunk_key_parse(key, OVL_LARGE_CHUNK_KEY_BYTES, id, NULL) < 0 ||
	    memcmp(id, gc->id, sizeof(id)) != 0) {
		gc->pi++;
		return true;
	}
	/* a replicated slice: the chunk's head, which writes the versioned
	 * tombstone on every home; a plain slice: the member that listed it
	 * (its home, or a node that kept a copy no client would ever read) */
	head = map_r(m) > 1 ? first_live_home(rq, m, key, OVL_LARGE_CHUNK_KEY_BYTES)
			    : node_repl_member_find(m->members, m->n_members, gc->mem[gc->mi]);
	if (head < 0) {
		del_chunk_cb_res(gc, -EHOSTUNREACH, "no live home");
		return true;
	}
	if (is_self(rq, m->members[head].id)) {
		struct node_req_args a = { .type = NODE_REQ_DELETE, .key = key,
					   .klen = OVL_LARGE_CHUNK_KEY_BYTES };

		ret = local_start(gc, &a, del_chunk_local_cb);
		if (ret < 0)
			del_chunk_cb_res(gc, ret, node_req_errmsg(rq));
	} else {
		struct ovl_wire_req *q = calloc(1, sizeof(*q));

		if (!q) {
			del_chunk_cb_res(gc, -ENOMEM, "out of memory");
			return true;
		}
		q->type = OVL_WIRE_T_DELETE;
		memcpy(q->key, key, OVL_LARGE_CHUNK_KEY_BYTES);
		q->key_len = OVL_LARGE_CHUNK_KEY_BYTES;
		ret = remote_start(gc, m->members[head].id, q, del_chunk_remote_cb);
		free(q);
		if (ret < 0)
			del_chunk_cb_res(gc, ret, "cannot reach its head");
	}
	return true;
}

/* ---- listing the chunks on every member ---- */

static void list_take(struct req_gc *gc, const struct ovl_wire_bin *keys, uint32_t n, bool more)
{
	gc->npage = 0;
	gc->pi = 0;
	for (uint32_t i = 0; i < n && gc->npage < GC_PAGE_KEYS; i++) {
		if (keys[i].len != OVL_LARGE_CHUNK_KEY_BYTES)
			continue; /* not a chunk key of this id: the prefix matched only */
		memcpy(gc->page[gc->npage++], keys[i].ptr, OVL_LARGE_CHUNK_KEY_BYTES);
	}
	gc->more = more && n > 0;
	if (n > 0) {
		gc->after_len = keys[n - 1].len <= sizeof(gc->after) ? keys[n - 1].len : 0;
		memcpy(gc->after, keys[n - 1].ptr, gc->after_len);
		if (!gc->after_len)
			gc->more = false; /* a key longer than a chunk key cannot carry on */
	}
	gc->phase = GP_DEL_CHUNK;
}

static void list_local_cb(void *arg, const struct node_req_result *r, struct node_req_buf **buf)
{
	struct req_gc *gc = arg;

	(void)buf;
	if (!gc->dying) {
		if (r->res < 0)
			defer(gc); /* busy (taking its hints back): the next pass */
		else
			list_take(gc, r->keys, r->nkeys, r->more);
	}
	cb_end(gc);
}

static void list_remote_cb(void *arg, struct ovl_dpc_call *call)
{
	struct req_gc *gc = arg;

	if (!gc->dying) {
		struct ovl_wire_bin *keys = NULL;
		uint32_t n = 0;
		char err[128];

		if (ovl_dpc_call_errno(call) < 0 ||
		    ovl_wire_keys_decode(call->body, (size_t)call->body_len, &keys, &n, err,
					 sizeof(err)) < 0)
			defer(gc);
		else
			list_take(gc, keys, n, call->resp.more);
		free(keys);
	}
	cb_end(gc);
}

static bool list_chunks(struct req_gc *gc)
{
	struct node_req *rq = gc->rq;
	uint8_t prefix[OVL_LARGE_CHUNK_PREFIX_BYTES];
	const uint8_t *id = gc->mem[gc->mi];
	int ret;

	if (!req_pace_may_start(rq, 0, ovl_mono_ms()))
		return false;
	ovl_large_chunk_prefix(prefix, gc->id);
	if (is_self(rq, id)) {
		struct node_req_args a = { .type = NODE_REQ_LIST, .key = prefix, .klen = sizeof(prefix),
					   .after = gc->after_len ? gc->after : NULL,
					   .after_len = gc->after_len, .limit = GC_PAGE_KEYS };

		ret = local_start(gc, &a, list_local_cb);
	} else {
		struct ovl_wire_req *q = calloc(1, sizeof(*q));

		if (!q) {
			defer(gc);
			return true;
		}
		q->type = OVL_WIRE_T_LIST;
		memcpy(q->key, prefix, sizeof(prefix));
		q->key_len = sizeof(prefix);
		memcpy(q->after, gc->after, gc->after_len);
		q->after_len = (uint32_t)gc->after_len;
		q->limit = GC_PAGE_KEYS;
		ret = remote_start(gc, id, q, list_remote_cb);
		free(q);
	}
	if (ret < 0)
		defer(gc);
	return true;
}

/* The members of slice sl[si] not `out` to list, all live (else the
 * intent waits: its chunks are deleted all or none per pass). */
static void chunks_slice(struct req_gc *gc)
{
	struct node_req *rq = gc->rq;
	const struct node_ctl_map *m = node_repl_map(rq->o.repl, gc->sl[gc->si]);

	free(gc->mem);
	gc->mem = NULL;
	gc->nmem = 0;
	if (!m) {
		defer(gc);
		return;
	}
	gc->mem = calloc(m->n_members ? m->n_members : 1, sizeof(*gc->mem));
	if (!gc->mem) {
		defer(gc);
		return;
	}
	for (uint32_t i = 0; i < m->n_members; i++) {
		if (m->members[i].state == OVL_MSG_STATE_OUT)
			continue;
		if (!member_live(rq, m, i)) {
			defer(gc);
			return;
		}
		memcpy(gc->mem[gc->nmem++], m->members[i].id, OVL_ID_BYTES);
	}
	gc->mi = 0;
	gc->after_len = 0;
	gc->npage = gc->pi = 0;
	gc->more = false;
	gc->phase = GP_LIST;
	if (!gc->nmem) {
		gc->npage = gc->pi = 0;
		gc->phase = GP_DEL_CHUNK; /* nothing to list: on to the next slice */
	}
}

/* Every member of every slice must be live before anything is deleted. */
static void chunks_start(struct req_gc *gc)
{
	struct node_req *rq = gc->rq;

	for (unsigned s = 0; s < gc->nsl; s++) {
		const struct node_ctl_map *m = node_repl_map(rq->o.repl, gc->sl[s]);

		if (!m) {
			defer(gc);
			return;
		}
		for (uint32_t i = 0; i < m->n_members; i++) {
			if (m->members[i].state != OVL_MSG_STATE_OUT && !member_live(rq, m, i)) {
				defer(gc);
				return;
			}
		}
	}
	gc->si = 0;
	gc->del_failed = false;
	chunks_slice(gc);
}

/* ---- reading the object key ---- */

static void k_answer(struct req_gc *gc, enum gc_ans a)
{
	switch (a) {
	case ANS_LIVE: gc->n_live++; break;
	case ANS_OTHER: gc->n_other++; break;
	case ANS_NOTFOUND: gc->n_nf++; break;
	case ANS_DAMAGED: gc->n_damaged++; break;
	case ANS_FAIL: gc->n_fail++; break;
	}
	gc->ci++;
	/* every home said plain not-found: the next members too (a
	 * rebalance may not have brought the key to its new homes yet) */
	if (gc->ci == gc->nhomes && gc->n_nf == gc->nhomes)
		gc->nask = gc->ncand;
}

/* What the first bytes of the object key (stored: its whole size) say. */
static enum gc_ans k_classify(struct req_gc *gc, const uint8_t *b, size_t len, uint64_t stored)
{
	struct ovl_large_head h;
	char why[160], kh[64];
	int ret = ovl_large_head_parse(b, len, stored, &h, why, sizeof(why));

	if (ret == -ENOMSG)
		return ANS_OTHER; /* a plain object: by the escape rule, never a manifest */
	if (ret == 0)
		return memcmp(h.id, gc->id, sizeof(h.id)) == 0 ? ANS_LIVE : ANS_OTHER;
	/* the magic, but a head that does not validate: another id's is not
	 * this one's; this id's (or one too short to tell) is doubt */
	if (len >= OVL_LARGE_MAN_HEAD_BYTES && memcmp(b + 48, gc->id, sizeof(gc->id)) != 0)
		return ANS_OTHER;
	key_hex(gc->kkey, gc->kklen, kh, sizeof(kh));
	req_event(gc->rq, NODE_REQ_EV_WARN,
		  "chunk gc: key %s (slice '%s') holds a damaged manifest of the intent's id (%s): its chunks are kept",
		  kh, gc->sl[gc->si], why);
	return ANS_DAMAGED;
}

static void k_local_cb(void *arg, const struct node_req_result *r, struct node_req_buf **buf)
{
	struct req_gc *gc = arg;

	(void)buf;
	if (!gc->dying) {
		if (r->res == -ENOENT)
			k_answer(gc, ANS_NOTFOUND);
		else if (r->res < 0)
			k_answer(gc, ANS_FAIL);
		else
			k_answer(gc, k_classify(gc, r->data, r->len, r->size));
	}
	cb_end(gc);
}

static void k_remote_cb(void *arg, struct ovl_dpc_call *call)
{
	struct req_gc *gc = arg;

	if (!gc->dying) {
		const struct ovl_wire_resp *rs = &call->resp;

		if (call->result < 0)
			k_answer(gc, ANS_FAIL);
		else if (rs->status == OVL_WIRE_NOT_FOUND)
			k_answer(gc, ANS_NOTFOUND);
		else if (rs->status != OVL_WIRE_OK || call->body_len > OVL_LARGE_MAN_HEAD_BYTES ||
			 (rs->has_crc && ovl_crc32c(0, call->body, (size_t)call->body_len) != rs->crc))
			k_answer(gc, ANS_FAIL);
		else
			k_answer(gc, k_classify(gc, call->body, (size_t)call->body_len, rs->size));
	}
	cb_end(gc);
}

/* All answers in: settle the intent. */
static void k_start(struct req_gc *gc);

/* Every answer of slice sl[si] in: its verdict; after the last slice,
 * settle the intent. Live in any slice: only the intent goes. */
static void k_decide(struct req_gc *gc)
{
	if (gc->n_damaged)
		gc->v_damaged++;
	else if (gc->n_live && (gc->n_other || gc->n_nf || gc->n_fail))
		gc->v_doubt++; /* homes disagree: anti-entropy first */
	else if (gc->n_live)
		gc->v_live++;
	else if (gc->n_fail || gc->n_other + gc->n_nf == 0)
		gc->v_doubt++; /* not every home answered: never delete on doubt */
	if (++gc->si < gc->nsl) {
		k_start(gc);
		return;
	}
	if (gc->v_damaged) {
		gc_error(gc);
		intent_done(gc);
	} else if (gc->v_live) {
		intent_delete_start(gc);
	} else if (gc->v_doubt) {
		defer(gc);
	} else {
		chunks_start(gc);
	}
}

static bool k_read(struct req_gc *gc)
{
	struct node_req *rq = gc->rq;
	const struct node_ctl_map *m;
	const uint8_t *id;
	int mi, ret;

	if (gc->ci >= gc->nask) {
		k_decide(gc);
		return true;
	}
	m = node_repl_map(rq->o.repl, gc->sl[gc->si]);
	id = gc->cand[gc->ci];
	mi = m ? node_repl_member_find(m->members, m->n_members, id) : -1;
	if (mi < 0 || !member_live(rq, m, (uint32_t)mi)) {
		/* a home down is no answer; a member past the homes that is
		 * down is passed over, as a client read does */
		if (gc->ci < gc->nhomes) {
			k_answer(gc, ANS_FAIL);
		} else {
			gc->ci++;
		}
		return true;
	}
	if (!req_pace_may_start(rq, 0, ovl_mono_ms()))
		return false;
	if (is_self(rq, id)) {
		struct node_req_args a = { .type = NODE_REQ_GET, .key = gc->kkey, .klen = gc->kklen,
					   .offset = 0, .length = OVL_LARGE_MAN_HEAD_BYTES };

		ret = local_start(gc, &a, k_local_cb);
	} else {
		struct ovl_wire_req *q = calloc(1, sizeof(*q));

		if (!q) {
			k_answer(gc, ANS_FAIL);
			return true;
		}
		q->type = OVL_WIRE_T_GET;
		memcpy(q->key, gc->kkey, gc->kklen);
		q->key_len = (uint32_t)gc->kklen;
		q->has_range = true;
		q->offset = 0;
		q->length = OVL_LARGE_MAN_HEAD_BYTES;
		ret = remote_start(gc, id, q, k_remote_cb);
		free(q);
		if (ret == -ENOENT)
			ret = -EIO;
	}
	if (ret == -ENOENT)
		k_answer(gc, ANS_NOTFOUND); /* refused at once: no such key here */
	else if (ret < 0)
		k_answer(gc, ANS_FAIL);
	return true;
}

static void k_start(struct req_gc *gc)
{
	const struct node_ctl_map *m = node_repl_map(gc->rq->o.repl, gc->sl[gc->si]);
	unsigned order[GC_CAND_MAX], r, want;
	int n;

	gc->ncand = gc->nhomes = gc->nask = gc->ci = 0;
	gc->n_live = gc->n_other = gc->n_nf = gc->n_fail = gc->n_damaged = 0;
	if (!m) {
		defer(gc);
		return;
	}
	r = map_r(m);
	want = 2 * r + GC_REBALANCE_EXTRA;
	if (want > GC_CAND_MAX)
		want = GC_CAND_MAX;
	n = gc_place(m, gc->kkey, gc->kklen, order, want);
	if (n <= 0) {
		defer(gc);
		return;
	}
	for (int i = 0; i < n; i++)
		memcpy(gc->cand[i], m->members[order[i]].id, OVL_ID_BYTES);
	gc->ncand = (unsigned)n;
	gc->nhomes = (unsigned)n < r ? (unsigned)n : r;
	gc->nask = gc->nhomes;
	gc->phase = GP_K_READ;
}

/* ---- the intent's value ---- */

static uint64_t now_unix_ms(struct req_gc *gc)
{
	return node_repl_now_ms(gc->rq->o.repl);
}

static void intent_read_cb(void *arg, const struct node_req_result *r, struct node_req_buf **buf)
{
	struct req_gc *gc = arg;

	(void)buf;
	if (gc->dying) {
		cb_end(gc);
		return;
	}
	if (r->res < 0) {
		if (r->res == -EBUSY)
			defer(gc);
		else if (r->res != -ENOENT)
			gc_error(gc);
		intent_done(gc); /* gone meanwhile, or unreadable here */
	} else {
		struct ovl_large_intent in;
		char why[128], kh[64];
		uint64_t stored = gc->iver.hlc >> NODE_REPL_HLC_COUNTER_BITS;

		if (r->len != r->size ||
		    ovl_large_intent_parse(r->data, r->len, &in, why, sizeof(why)) < 0) {
			if (r->len != r->size)
				snprintf(why, sizeof(why), "a read of %zu of %" PRIu64 " bytes", r->len,
					 r->size);
			key_hex(gc->ikey, sizeof(gc->ikey), kh, sizeof(kh));
			req_event(gc->rq, NODE_REQ_EV_WARN,
				  "chunk gc: intent %s (slice '%s') does not parse (%s): deleted", kh,
				  gc->sl[gc->si], why);
			gc->bad = true;
			gc->bad_n++;
			gc->p_bad++;
			intent_delete_start(gc);
		} else {
			/* the later of the node's and the writer's clock: a client
			 * clock running behind makes no intent look older */
			if (in.ms > stored)
				stored = in.ms;
			if (now_unix_ms(gc) < stored || now_unix_ms(gc) - stored < gc->after_ms) {
				intent_done(gc); /* not yet */
			} else {
				gc->checked++;
				gc->p_checked++;
				gc->count = in.count;
				memcpy(gc->kkey, in.key, in.klen);
				gc->kklen = in.klen;
				gc->si = 0;
				gc->v_live = gc->v_doubt = gc->v_damaged = 0;
				k_start(gc);
			}
		}
	}
	cb_end(gc);
}

struct next_find {
	uint8_t key[OVL_LARGE_INTENT_KEY_BYTES + 1];
	size_t klen;
	struct node_store_ver ver;
	bool tomb, found;
};

static int next_cb(void *arg, const void *key, size_t klen, const struct node_store_ver *ver,
		   bool tomb)
{
	struct next_find *f = arg;

	/* a longer key is no intent; keep only what the cursor needs */
	f->klen = klen < sizeof(f->key) ? klen : sizeof(f->key);
	memcpy(f->key, key, f->klen);
	f->ver = *ver;
	f->tomb = tomb;
	f->found = true;
	return 1;
}

static void pass_end(struct req_gc *gc)
{
	gc->passes++;
	gc->phase = GP_IDLE;
	gc->next_ms = ovl_mono_ms() + req_jitter_ms(gc->interval_ms, (uint32_t)rand());
	if (gc->p_checked || gc->p_bad || gc->p_errors || gc->p_deferred)
		req_event(gc->rq, gc->p_errors ? NODE_REQ_EV_WARN : NODE_REQ_EV_INFO,
			  "chunk gc: %" PRIu64 " intents checked: %" PRIu64 " live, %" PRIu64
			  " collected (%" PRIu64 " chunks deleted), %" PRIu64 " unparsable deleted, %"
			  PRIu64 " deferred, %" PRIu64 " errors",
			  gc->p_checked, gc->p_live, gc->p_collected, gc->p_chunks, gc->p_bad,
			  gc->p_deferred, gc->p_errors);
}

/* The next intent key after the cursor, and whether this node settles it. */
static bool next_intent(struct req_gc *gc)
{
	struct node_req *rq = gc->rq;
	uint8_t prefix[OVL_LARGE_PREFIX_BYTES + 1];
	struct next_find f = { 0 };

	if (gc->stopped) {
		pass_end(gc);
		return false;
	}
	if (!gc->budget || !req_pace_may_start(rq, 0, ovl_mono_ms()))
		return false; /* the next tick goes on */
	gc->budget--;
	memset(prefix, OVL_LARGE_PREFIX_BYTE, OVL_LARGE_PREFIX_BYTES);
	prefix[OVL_LARGE_PREFIX_BYTES] = OVL_LARGE_KIND_INTENT;
	/* only the intent keys: an index walk from the prefix, never a scan */
	node_store_list_ver(rq->o.store, prefix, sizeof(prefix), gc->cur_len ? gc->cur : NULL,
			    gc->cur_len, 1, next_cb, &f);
	if (!f.found) {
		pass_end(gc);
		return false;
	}
	if (f.klen > OVL_LARGE_INTENT_KEY_BYTES) {
		/* past every key that starts with these 25 bytes */
		memcpy(gc->cur, f.key, OVL_LARGE_INTENT_KEY_BYTES);
		gc->cur_len = OVL_LARGE_INTENT_KEY_BYTES;
		for (int i = OVL_LARGE_INTENT_KEY_BYTES - 1; i >= 0 && ++gc->cur[i] == 0; i--)
			;
		return true;
	}
	memcpy(gc->cur, f.key, f.klen);
	gc->cur_len = f.klen;
	if (f.tomb || ovl_large_intent_key_parse(f.key, f.klen, gc->id) < 0)
		return true;
	memcpy(gc->ikey, f.key, sizeof(gc->ikey));
	gc->iver = f.ver;
	gc->bad = false;
	if (intent_slices(gc, gc->ikey, sizeof(gc->ikey)) < 0)
		return true; /* another home settles it */
	gc->si = 0;
	if (f.ver.hlc) {
		uint64_t stored = f.ver.hlc >> NODE_REPL_HLC_COUNTER_BITS;

		if (now_unix_ms(gc) < stored || now_unix_ms(gc) - stored < gc->after_ms)
			return true; /* young by the node's own clock: no need to read it */
	}
	{
		/* one byte more than an intent can hold: a longer value is bad,
		 * and never read whole */
		struct node_req_args a = { .type = NODE_REQ_GET, .key = gc->ikey,
					   .klen = sizeof(gc->ikey),
					   .length = OVL_LARGE_INTENT_HEAD_BYTES + OVL_LARGE_INTENT_KEY_MAX + 1 };
		int ret;

		gc->phase = GP_INTENT_READ;
		ret = local_start(gc, &a, intent_read_cb);
		if (ret < 0) {
			if (ret == -EBUSY)
				defer(gc);
			else if (ret != -ENOENT)
				gc_error(gc);
			intent_done(gc);
		}
	}
	return true;
}

/* One step of the pass: true to take the next at once, false to wait
 * (for a callback, or the next tick). */
static bool gc_advance(struct req_gc *gc)
{
	switch (gc->phase) {
	case GP_IDLE:
		return false;
	case GP_NEXT:
		return next_intent(gc);
	case GP_INTENT_READ:
		return false; /* its callback moves on */
	case GP_K_READ:
		return k_read(gc);
	case GP_LIST:
		return list_chunks(gc);
	case GP_DEL_CHUNK:
		return del_chunk(gc);
	case GP_DEL_INTENT:
		return del_intent(gc);
	}
	return false;
}

static void gc_run(struct req_gc *gc)
{
	if (gc->in_run)
		return;
	gc->in_run = true;
	while (!gc->waiting && !gc->dying && gc_advance(gc))
		;
	gc->in_run = false;
}

void req_gc_tick(struct node_req *rq, uint64_t now_ms)
{
	struct req_gc *gc = rq->gc;

	if (!gc || gc->dying || !rq->o.repl)
		return;
	gc->budget = GC_KEYS_PER_TICK;
	if (gc->phase == GP_IDLE) {
		if (gc->stopped || now_ms < gc->next_ms)
			return;
		gc->phase = GP_NEXT;
		gc->cur_len = 0;
		gc->p_checked = gc->p_live = gc->p_collected = gc->p_chunks = 0;
		gc->p_bad = gc->p_errors = gc->p_deferred = 0;
	}
	gc_run(gc);
}

int req_gc_peer_check(struct node_req *rq, const struct node_req_args *a)
{
	const struct node_ctl_map *m = rq->o.repl ? node_repl_map(rq->o.repl, a->slice) : NULL;

	if (!ovl_large_key_reserved(a->key, a->klen)) {
		rq->msg = "a node may delete or list only keys that begin with fe x8";
		return -EACCES;
	}
	if (!m || node_repl_member_find(m->members, m->n_members, a->peer_id) < 0) {
		rq->msg = "the asking node is no member of the slice";
		return -EACCES;
	}
	return 0;
}

unsigned req_gc_counters(const struct node_req *rq, struct ovl_wire_counter *c, unsigned max)
{
	const struct req_gc *gc = rq->gc;
	unsigned n = 0;

	if (!gc || !rq->o.repl)
		return 0;
	{
		const struct {
			const char *name;
			uint64_t v;
		} t[] = {
			{ "gc_intents_checked", gc->checked },
			{ "gc_intents_live", gc->live_n },
			{ "gc_intents_collected", gc->collected },
			{ "gc_chunks_deleted", gc->chunks },
			{ "gc_intents_bad", gc->bad_n },
			{ "gc_intents_deferred", gc->deferred },
			{ "gc_errors", gc->errors },
			{ "gc_passes", gc->passes },
		};

		for (; n < max && n < sizeof(t) / sizeof(t[0]); n++) {
			snprintf(c[n].name, sizeof(c[n].name), "%s", t[n].name);
			c[n].value = t[n].v;
		}
	}
	return n;
}
