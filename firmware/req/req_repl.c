/*
 * Replicated writes (req.h, "Replicated writes"): the local copy through
 * the store and the forward to the next node through node_repl, joined
 * into one answer.
 */
#include "req_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* forwards once more around failed nodes, per write: R=3 with two homes
 * dead needs two (one per node found missing) */
#define RW_RETRIES_MAX 2
#define RW_MSG_BYTES OVL_WIRE_TEXT_SIZE

struct req_rw {
	struct node_req *rq;
	struct req_rw *prev, *next;  /* rq->rws */
	/* a substitute's hint */
	bool hint;                   /* this node stands in for hint_home */
	uint8_t hint_home[OVL_ID_BYTES];
	bool hint_pending;
	int hint_res;
	enum node_req_type type;
	node_req_done_fn done;
	void *arg;
	bool head;                   /* a client's write, headed (or relayed) here */
	bool local;                  /* a copy is stored here */
	bool local_home;             /* ... at its proper home (not a hint) */
	unsigned want;               /* head: copies required for an ok */
	unsigned replicas;           /* R */
	struct ovl_wire_ver ver;
	uint8_t key[NODE_STORE_KEY_MAX];
	size_t klen;
	char slice[OVL_WIRE_NAME_SIZE];
	const uint8_t *val;          /* a whole PUT's value (borrowed until done) */
	unsigned retries;            /* the head forwarded again, around nodes that failed */
	struct ovl_wire_hop sent[OVL_PLACE_REPLICAS_MAX]; /* the chain of the last forward */
	unsigned nsent;
	uint64_t size;
	uint32_t crc;
	/* a streamed PUT */
	struct node_store_stream *st;
	uint32_t crc_run;            /* of the bytes taken, when none are stored here */
	uint64_t fwd_written;        /* payload bytes handed to the forward */
	void (*ready)(void *arg);    /* the stream's writer may go on */
	void *ready_arg;
	/* the forward to the next node */
	struct node_repl_fwd *fwd;
	bool fwd_pending;            /* started and not answered */
	bool fwd_tried;              /* a forward was due */
	int fwd_res;
	uint8_t fheld[OVL_WIRE_HELD_MAX][OVL_ID_BYTES];
	unsigned fnheld, fhomes;
	char fwd_msg[RW_MSG_BYTES];
	/* the local copy */
	bool local_pending;
	int local_res;
	bool local_superseded;
	uint64_t seq;
	char local_msg[RW_MSG_BYTES];
	bool finishing;              /* every part started: answer when they complete */
	bool repair_admitted;        /* an inbound repair copy: counted in repair_inbound */
	/* the answer */
	uint8_t held[OVL_WIRE_HELD_MAX][OVL_ID_BYTES];
};

static struct node_repl_stats *stats(struct req_rw *rw)
{
	return node_repl_stats_mut(rw->rq->o.repl);
}

bool req_rw_wanted(struct node_req *rq, const struct node_req_args *a)
{
	const struct node_ctl_map *m;

	if (!rq->o.repl)
		return false;
	if (a->fwd || a->ver)
		return true; /* a forwarded write is judged there, whatever the map */
	m = node_repl_map(rq->o.repl, a->slice);
	return m && m->replicas > 1;
}

static int refuse(struct node_req *rq, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int refuse(struct node_req *rq, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(rq->msgbuf, sizeof(rq->msgbuf), fmt, ap);
	va_end(ap);
	rq->msg = rq->msgbuf;
	return err;
}

bool req_rw_key_busy(struct node_req *rq, const uint8_t *key, size_t klen)
{
	for (struct req_rw *rw = rq->rws; rw; rw = rw->next)
		if (rw->klen == klen && memcmp(rw->key, key, klen) == 0)
			return true;
	return false;
}

static void rw_free(struct req_rw *rw)
{
	struct node_req *rq = rw->rq;

	if (rw->prev)
		rw->prev->next = rw->next;
	else if (rq->rws == rw)
		rq->rws = rw->next;
	if (rw->next)
		rw->next->prev = rw->prev;

	node_store_stream_abort(&rw->st);
	if (rw->repair_admitted)
		node_req_repair_release(rq);
	free(rw);
	req_rq_put(rq);
}

static void fp(const uint8_t id[OVL_ID_BYTES], char out[OVL_ID_FP_BYTES])
{
	ovl_nodeid_fingerprint(id, out);
}

/* Both parts completed: answer. */
static void rw_answer(struct req_rw *rw)
{
	struct node_req_result r = { .type = rw->type, .replicated = true };
	const uint8_t *self = node_repl_self(rw->rq->o.repl);
	char msg[RW_MSG_BYTES * 2];
	unsigned n = 0;

	if (!rw->finishing || rw->local_pending || rw->fwd_pending || rw->hint_pending)
		return;
	r.ver = rw->ver;
	r.size = rw->size;
	r.crc = rw->crc;
	r.seq = rw->seq;
	if (rw->local && rw->local_res < 0) {
		/* this node's copy failed: the write did not happen here */
		r.res = rw->local_res;
		r.msg = rw->local_msg;
		goto out;
	}
	if (rw->hint && rw->hint_res < 0) {
		/* a hinted copy without its hint would never reach its home */
		r.res = rw->hint_res == -ENOSPC ? -EBUSY : rw->hint_res;
		snprintf(msg, sizeof(msg), "the hint for this copy could not be written: %s",
			 rw->hint_res == -ENOSPC ? "too many hints waiting" : node_store_errmsg(rw->rq->o.store));
		r.msg = msg;
		goto out;
	}
	if (rw->local) {
		memcpy(rw->held[n++], self, OVL_ID_BYTES);
		r.homes += rw->local_home ? 1 : 0;
		r.superseded = rw->local_superseded;
	}
	if (rw->fwd_tried && rw->fwd_res == 0) {
		for (unsigned i = 0; i < rw->fnheld && n < OVL_WIRE_HELD_MAX; i++) {
			bool dup = false;

			for (unsigned j = 0; j < n; j++)
				dup |= memcmp(rw->held[j], rw->fheld[i], OVL_ID_BYTES) == 0;
			if (!dup)
				memcpy(rw->held[n++], rw->fheld[i], OVL_ID_BYTES);
		}
		r.homes += rw->fhomes < n ? rw->fhomes : n;
	}
	if (r.homes > n)
		r.homes = n;
	r.held = (const uint8_t(*)[OVL_ID_BYTES])rw->held;
	r.nheld = n;
	if (rw->head && n < rw->want) {
		/* never an ok for fewer durable copies than the slice requires */
		stats(rw)->short_writes++;
		snprintf(msg, sizeof(msg), "only %u of %u copies are durable (%u required)%s%.300s; retry",
			 n, rw->replicas, rw->want, rw->fwd_msg[0] ? ": " : "", rw->fwd_msg);
		r.res = -EBUSY;
		r.msg = msg;
	}
out:
	rw->done(rw->arg, &r, NULL);
	rw_free(rw);
}

static void rw_forward_again(struct req_rw *rw);

static void fwd_done(void *arg, const struct node_repl_fwd_result *fr)
{
	struct req_rw *rw = arg;

	rw->fwd = NULL;
	rw->fwd_pending = false;
	/* a whole value or a DELETE can go again; a stream only while none of
	 * its bytes went (they wait for the next node's session) */
	if (fr->res < 0 && fr->unreachable && rw->head && rw->retries < RW_RETRIES_MAX &&
	    ((rw->finishing && (rw->val || rw->type == NODE_REQ_DELETE)) ||
	     (!rw->finishing && !rw->val && rw->fwd_written == 0))) {
		/* the next node is gone: once more, a substitute standing in */
		snprintf(rw->fwd_msg, sizeof(rw->fwd_msg), "%s", fr->msg ? fr->msg : "forward failed");
		rw->retries++;
		rw_forward_again(rw);
		if (rw->fwd_pending)
			return;
		rw->fwd_res = fr->res;
		if (!rw->finishing && rw->ready)
			rw->ready(rw->ready_arg); /* no forward to wait for any more */
		rw_answer(rw);
		return;
	}
	if (fr->res == 0 && rw->head && (rw->local ? 1u : 0u) + fr->nheld < rw->want) {
		/* the next node answered, but a node after it does not hold the
		 * write (it died or failed further down the chain): pass it over
		 * from now on, whether or not this write can go again (a stream
		 * cannot: the client's next attempt then goes around it) */
		unsigned missing = 0;

		for (unsigned i = 0; i < rw->nsent; i++) {
			bool in = false;

			for (unsigned j = 0; j < fr->nheld; j++)
				in |= memcmp(fr->held[j], rw->sent[i].id, OVL_ID_BYTES) == 0;
			if (!in) {
				node_repl_suspect(rw->rq->o.repl, rw->sent[i].id);
				missing++;
			}
		}
		/* a whole value or a DELETE goes once more, with a substitute
		 * for each node missing from `held` */
		if (missing && rw->retries < RW_RETRIES_MAX && rw->finishing &&
		    (rw->val || rw->type == NODE_REQ_DELETE)) {
			snprintf(rw->fwd_msg, sizeof(rw->fwd_msg),
				 "%u node(s) further down the chain did not store it", missing);
			rw->retries++;
			rw_forward_again(rw);
			if (rw->fwd_pending)
				return;
		} else if (missing) {
			snprintf(rw->fwd_msg, sizeof(rw->fwd_msg),
				 "%u node(s) further down the chain did not store it; they are passed over from now on",
				 missing);
		}
	}
	rw->fwd_res = fr->res;
	if (fr->res < 0) {
		snprintf(rw->fwd_msg, sizeof(rw->fwd_msg), "%s", fr->msg ? fr->msg : "forward failed");
	} else {
		rw->fnheld = fr->nheld < OVL_WIRE_HELD_MAX ? fr->nheld : OVL_WIRE_HELD_MAX;
		memcpy(rw->fheld, fr->held, (size_t)rw->fnheld * OVL_ID_BYTES);
		rw->fhomes = fr->homes;
	}
	if (!rw->finishing && rw->ready)
		rw->ready(rw->ready_arg); /* a writer waiting for the forward's room goes on */
	rw_answer(rw);
}

static void local_done(void *arg, int res, const struct node_store_objstat *st)
{
	struct req_rw *rw = arg;

	rw->local_pending = false;
	if (res == -EALREADY) {
		/* the store holds this version or a newer one: held, nothing written */
		rw->local_superseded = true;
		stats(rw)->superseded++;
		if (st) {
			/* what it holds is newer: later versions from here go above it */
			struct ovl_wire_ver v = { st->ver.hlc, st->ver.node };

			node_repl_ver_seen(rw->rq->o.repl, &v);
		}
		res = 0;
	}
	if (res == -ENOENT && rw->type == NODE_REQ_DELETE)
		res = 0; /* nothing to delete: the key is as the delete leaves it */
	rw->local_res = res;
	if (res < 0)
		snprintf(rw->local_msg, sizeof(rw->local_msg), "%s",
			 res == -ENOENT ? "no such key" : node_store_errmsg(rw->rq->o.store));
	else if (st)
		rw->seq = st->seq;
	rw_answer(rw);
}

/*
 * Judge the write and set rw up: version, what is stored here, and the
 * chain after this node (into chain[], *nchain). 0 or -errno (rq->msg).
 */
static int rw_plan(struct req_rw *rw, const struct node_req_args *a, struct ovl_wire_hop *chain,
		   unsigned *nchain)
{
	struct node_req *rq = rw->rq;
	struct node_repl *repl = rq->o.repl;
	const struct node_ctl_map *m = node_repl_map(repl, a->slice);
	const uint8_t *self = node_repl_self(repl);
	struct node_repl_plan plan;
	char f1[OVL_ID_FP_BYTES];
	int ret;

	*nchain = 0;
	if (!m) {
		stats(rw)->refused += a->fwd ? 1 : 0;
		return refuse(rq, -EXDEV, "this node holds no map of slice '%s'", a->slice);
	}
	rw->replicas = m->replicas ? m->replicas : 1;
	{
		/* a client's write passes over the nodes found unreachable */
		bool *avoid = a->fwd ? NULL : calloc(m->n_members ? m->n_members : 1, sizeof(*avoid));

		if (avoid)
			node_repl_avoid(repl, m, avoid);
		ret = node_repl_plan(m->members, m->n_members, rw->replicas, self, a->key, a->klen,
				     avoid, &plan);
		free(avoid);
	}
	if (ret < 0)
		return refuse(rq, ret == -ENOMEM ? -EBUSY : ret, "cannot place the key in slice '%s'",
			      a->slice);
	if (!a->fwd) {
		/* a client's write: this node heads it */
		unsigned live = (plan.self_home >= 0 ? 1u : 0u) + plan.nchain;

		rw->head = true;
		rw->want = node_repl_min_write(m);
		if (rw->want > plan.nhomes)
			rw->want = plan.nhomes ? plan.nhomes : 1;
		if (live < rw->want)
			return refuse(rq, -EBUSY,
				      "slice '%s': only %u live members for %u replicas, %u required (min_write_replicas); retry",
				      a->slice, live, rw->replicas, rw->want);
		if (plan.nchain > OVL_WIRE_CHAIN_MAX + 1)
			return refuse(rq, -EINVAL, "slice '%s': %u replicas are more than forwarding carries",
				      a->slice, rw->replicas);
		rw->local = plan.self_home >= 0;
		rw->local_home = rw->local;
		memcpy(chain, plan.chain, plan.nchain * sizeof(*chain));
		*nchain = plan.nchain;
		node_repl_ver_next(repl, &rw->ver);
		return 0;
	}
	/* forwarded by another node: refused unless it is all in order */
	if (!a->ver || !a->peer_id) {
		stats(rw)->refused++;
		return refuse(rq, -EINVAL, "a forwarded write needs 'ver' and 'fwd'");
	}
	if (node_repl_member_find(m->members, m->n_members, a->peer_id) < 0) {
		fp(a->peer_id, f1);
		stats(rw)->refused++;
		return refuse(rq, -EACCES, "node %s is not a member of slice '%s': it may not forward",
			      f1, a->slice);
	}
	if (node_repl_ver_future(a->ver, node_repl_now_ms(repl), node_repl_max_skew_ms(repl))) {
		stats(rw)->refused++;
		return refuse(rq, -EINVAL,
			      "version from the future: %" PRIu64 " ms ahead of this node's clock (more than max_clock_skew_ms %" PRIu64 ")",
			      (a->ver->hlc >> NODE_REPL_HLC_COUNTER_BITS) - node_repl_now_ms(repl),
			      node_repl_max_skew_ms(repl));
	}
	if (a->fwd->has_home) {
		if (node_repl_member_find(m->members, m->n_members, a->fwd->home) < 0) {
			fp(a->fwd->home, f1);
			stats(rw)->refused++;
			return refuse(rq, -EINVAL, "a hint for node %s, which is not a member of slice '%s'",
				      f1, a->slice);
		}
	} else if (plan.self_home < 0) {
		stats(rw)->refused++;
		return refuse(rq, -EXDEV,
			      "placement (map epoch %" PRIu64 ") does not give this node the key, and the write names no home it stands in for",
			      m->epoch);
	}
	for (unsigned i = 0; i < a->fwd->nchain; i++) {
		if (node_repl_member_find(m->members, m->n_members, a->fwd->chain[i].id) < 0 ||
		    (a->fwd->chain[i].has_home &&
		     node_repl_member_find(m->members, m->n_members, a->fwd->chain[i].home) < 0)) {
			stats(rw)->refused++;
			return refuse(rq, -EINVAL, "the chain of a forwarded write names a node that is not a member of slice '%s'",
				      a->slice);
		}
	}
	if (a->fwd->has_home && req_hint_room(rq) < 0) {
		stats(rw)->refused++;
		return refuse(rq, -EBUSY, "this node holds too many hints waiting for their homes; retry");
	}
	rw->ver = *a->ver;
	node_repl_ver_seen(repl, a->ver);
	rw->local = true;
	rw->local_home = !a->fwd->has_home;
	rw->hint = a->fwd->has_home;
	if (rw->hint)
		memcpy(rw->hint_home, a->fwd->home, OVL_ID_BYTES);
	memcpy(chain, a->fwd->chain, a->fwd->nchain * sizeof(*chain));
	*nchain = a->fwd->nchain;
	return 0;
}

/* A forwarded write marked `repair` (PROTOCOL 7.13) counts against
 * repair_inbound_max: 0 admitted (or no repair copy), -EBUSY not now. */
static int rw_admit(struct node_req *rq, const struct node_req_args *a)
{
	if (!a->repair || !a->ver || !a->fwd)
		return 0;
	if (!node_req_repair_admit(rq))
		return refuse(rq, -EBUSY, "this node takes no more repair copies now "
			      "(repair_inbound_max reached, or its drive is nearly full); retry");
	return 1;
}

static struct req_rw *rw_new(struct node_req *rq, const struct node_req_args *a)
{
	struct req_rw *rw = NULL;

	if (!a->key || a->klen == 0 || a->klen > NODE_STORE_KEY_MAX)
		return NULL;
	rw = calloc(1, sizeof(*rw));
	if (!rw)
		return NULL;
	rw->rq = rq;
	rw->type = a->type;
	memcpy(rw->key, a->key, a->klen);
	rw->klen = a->klen;
	snprintf(rw->slice, sizeof(rw->slice), "%s", a->slice ? a->slice : "");
	rw->size = a->size;
	rw->crc = a->crc;
	rw->next = rq->rws;
	if (rq->rws)
		rq->rws->prev = rw;
	rq->rws = rw;
	rq->live++;
	return rw;
}

/* Start the forward to chain[0] (val: the whole value, or NULL: streamed). */
static void rw_forward(struct req_rw *rw, const struct node_req_args *a,
		       const struct ovl_wire_hop *chain, unsigned nchain, const uint8_t *val,
		       void (*room)(void *), void *room_arg)
{
	struct node_repl_fwd_args fa = { 0 };
	int ret;

	if (!nchain)
		return;
	rw->fwd_tried = true;
	rw->nsent = nchain < OVL_PLACE_REPLICAS_MAX ? nchain : OVL_PLACE_REPLICAS_MAX;
	memcpy(rw->sent, chain, rw->nsent * sizeof(*chain));
	fa.type = a->type == NODE_REQ_PUT ? OVL_WIRE_T_PUT : OVL_WIRE_T_DELETE;
	fa.slice = a->slice;
	fa.key = a->key;
	fa.klen = a->klen;
	fa.size = a->size;
	fa.crc = a->crc;
	fa.val = val;
	fa.ver = rw->ver;
	fa.chain = chain;
	fa.nchain = nchain;
	ret = node_repl_fwd_start(rw->rq->o.repl, &fa, fwd_done, rw, room, room_arg, &rw->fwd,
				  rw->fwd_msg, sizeof(rw->fwd_msg));
	if (ret < 0) {
		rw->fwd_res = ret;
		stats(rw)->forward_failures++;
		return;
	}
	rw->fwd_pending = true;
}

/* The local copy, with the write's version: stored only if newer than
 * what the store holds (else -EALREADY: superseded, held). */
static struct node_store_ver store_ver(const struct req_rw *rw)
{
	struct node_store_ver v = { rw->ver.hlc, rw->ver.node };

	return v;
}

static int local_put(struct req_rw *rw, const uint8_t *val)
{
	struct node_store_ver v = store_ver(rw);

	return node_store_put_ver_async(rw->rq->o.store, rw->key, rw->klen, val, (size_t)rw->size,
					&v, local_done, rw);
}

static int local_delete(struct req_rw *rw)
{
	struct node_store_ver v = store_ver(rw);

	return node_store_delete_ver_async(rw->rq->o.store, rw->key, rw->klen, &v, local_done, rw);
}

static void hint_done(void *arg, int res)
{
	struct req_rw *rw = arg;

	rw->hint_pending = false;
	rw->hint_res = res;
	rw_answer(rw);
}

/* A substitute's hint record, written with its copy. */
static int local_hint(struct req_rw *rw)
{
	int ret;

	if (!rw->hint)
		return 0;
	ret = req_hint_put(rw->rq, rw->hint_home, rw->slice, rw->key, rw->klen, &rw->ver,
			   rw->type == NODE_REQ_DELETE, hint_done, rw);
	if (ret < 0)
		return ret;
	rw->hint_pending = true;
	return 0;
}

static int local_finish(struct req_rw *rw, uint32_t crc)
{
	struct node_store_ver v = store_ver(rw);

	return node_store_stream_finish_ver(&rw->st, crc, &v, local_done, rw);
}

/* Plan the client's write again (the node that failed now passed over)
 * and forward it to the new chain, with the same version: a node that
 * already holds it acknowledges it as held. */
static void rw_forward_again(struct req_rw *rw)
{
	struct node_req_args a = { .type = rw->type };
	struct ovl_wire_hop chain[OVL_PLACE_REPLICAS_MAX];
	struct ovl_wire_ver ver = rw->ver;
	unsigned nchain = 0;

	a.slice = rw->slice;
	a.key = rw->key;
	a.klen = rw->klen;
	a.size = rw->size;
	a.crc = rw->crc;
	if (rw_plan(rw, &a, chain, &nchain) < 0 || !nchain) {
		rw->ver = ver;
		return;
	}
	rw->ver = ver; /* the write keeps its version */
	rw_forward(rw, &a, chain, nchain, rw->type == NODE_REQ_PUT ? rw->val : NULL,
		   rw->val ? NULL : rw->ready, rw->ready_arg);
	if (!rw->finishing && rw->ready)
		rw->ready(rw->ready_arg); /* a stream's writer waits for the new forward's room */
}

int req_rw_start(struct node_req *rq, const struct node_req_args *a, node_req_done_fn done,
		 void *arg)
{
	struct ovl_wire_hop chain[OVL_PLACE_REPLICAS_MAX];
	struct req_rw *rw = NULL;
	unsigned nchain = 0;
	int ret, adm = rw_admit(rq, a);

	if (adm < 0)
		return adm;
	rw = rw_new(rq, a);
	if (!rw && adm)
		node_req_repair_release(rq);
	if (!rw)
		return refuse(rq, a->key && a->klen ? -EBUSY : -EINVAL,
			      a->key && a->klen ? "out of memory" : "a write needs a key");
	rw->repair_admitted = adm > 0;
	rw->done = done;
	rw->arg = arg;
	if (a->type == NODE_REQ_PUT)
		rw->val = a->val ? a->val : (const uint8_t *)"";
	ret = rw_plan(rw, a, chain, &nchain);
	if (ret < 0) {
		rw_free(rw);
		return ret;
	}
	if (rw->local) {
		if (a->type == NODE_REQ_PUT)
			ret = local_put(rw, a->val);
		else
			ret = local_delete(rw);
		if (ret < 0 && !(ret == -ENOENT && a->type == NODE_REQ_DELETE)) {
			rw_free(rw);
			return refuse(rq, ret, "%s", node_store_errmsg(rq->o.store));
		}
		rw->local_pending = ret == 0;
		ret = local_hint(rw);
		if (ret < 0) {
			/* the copy's callback comes; the answer says the hint failed */
			rw->hint_res = ret;
		}
	}
	/* the whole value is borrowed until `done`, which waits for the forward */
	rw_forward(rw, a, chain, nchain, a->type == NODE_REQ_PUT ? (a->val ? a->val : (const uint8_t *)"")
								 : NULL,
		   NULL, NULL);
	rw->finishing = true;
	if (!rw->local_pending && !rw->fwd_pending) {
		/* nothing went out: answer from the loop? done may run before
		 * node_req_start() returns (as LIST's does) */
		rw_answer(rw);
	}
	return 0;
}

/* ---- streamed ---- */

int req_rw_stream_begin(struct node_req *rq, const struct node_req_args *a,
			void (*ready)(void *arg), void *arg, struct req_rw **out)
{
	struct ovl_wire_hop chain[OVL_PLACE_REPLICAS_MAX];
	struct req_rw *rw = NULL;
	unsigned nchain = 0;
	int ret, adm = rw_admit(rq, a);

	*out = NULL;
	if (adm < 0)
		return adm;
	rw = rw_new(rq, a);
	if (!rw && adm)
		node_req_repair_release(rq);
	if (!rw)
		return refuse(rq, -EBUSY, "out of memory");
	rw->repair_admitted = adm > 0;
	ret = rw_plan(rw, a, chain, &nchain);
	if (ret < 0) {
		rw_free(rw);
		return ret;
	}
	if (rw->local) {
		ret = node_store_stream_begin(rq->o.store, a->key, a->klen, a->size, ready, arg, &rw->st);
		if (ret < 0) {
			rw_free(rw);
			return refuse(rq, ret, "%s", node_store_errmsg(rq->o.store));
		}
	}
	rw->ready = ready;
	rw->ready_arg = arg;
	rw_forward(rw, a, chain, nchain, NULL, ready, arg);
	if (!rw->local && !rw->fwd_pending) {
		ret = refuse(rq, rw->fwd_res < 0 ? -EBUSY : -EINVAL, "%s",
			     rw->fwd_msg[0] ? rw->fwd_msg : "no node to hold the write");
		rw_free(rw);
		return ret;
	}
	*out = rw;
	return 0;
}

ssize_t req_rw_stream_write(struct req_rw *rw, const void *buf, size_t len)
{
	size_t n = len;
	ssize_t k;

	if (rw->fwd) {
		uint64_t room = node_repl_fwd_room(rw->fwd);

		if (room < n)
			n = (size_t)room;
		if (!n)
			return 0; /* the forward's room() calls `ready` */
	}
	if (rw->st) {
		k = node_store_stream_write(rw->st, buf, n);
		if (k < 0) {
			rw->rq->msg = node_store_errmsg(rw->rq->o.store);
			return k;
		}
		n = (size_t)k;
	} else {
		rw->crc_run = ovl_crc32c(rw->crc_run, buf, n);
	}
	if (rw->fwd && n) {
		k = node_repl_fwd_write(rw->fwd, buf, n);
		if (k > 0)
			rw->fwd_written += (uint64_t)k;
		if (k != (ssize_t)n && rw->fwd) {
			/* the forward failed (its done may have run already) */
			node_repl_fwd_abort(&rw->fwd);
			rw->fwd_pending = false;
			rw->fwd_res = k < 0 ? (int)k : -EIO;
			snprintf(rw->fwd_msg, sizeof(rw->fwd_msg), "forwarding the payload failed");
			stats(rw)->forward_failures++;
		}
		if (!rw->st && !rw->fwd)
			return refuse(rw->rq, -EBUSY, "%s", rw->fwd_msg);
	}
	return (ssize_t)n;
}

uint32_t req_rw_stream_crc(const struct req_rw *rw)
{
	return rw->st ? node_store_stream_crc(rw->st) : rw->crc_run;
}

int req_rw_stream_finish(struct req_rw *rw, uint32_t crc, node_req_done_fn done, void *arg)
{
	struct node_req *rq = rw->rq;
	int ret;

	rw->done = done;
	rw->arg = arg;
	if (rw->st) {
		ret = local_finish(rw, crc);
		if (ret < 0) {
			refuse(rq, ret, "%s", node_store_errmsg(rq->o.store));
			node_repl_fwd_abort(&rw->fwd);
			rw_free(rw);
			return ret;
		}
		rw->local_pending = true;
		ret = local_hint(rw);
		if (ret < 0)
			rw->hint_res = ret;
	}
	rw->finishing = true;
	if (!rw->local_pending && !rw->fwd_pending) {
		rw_answer(rw);
	}
	return 0;
}

void req_rw_stream_abort(struct req_rw *rw)
{
	node_repl_fwd_abort(&rw->fwd);
	rw_free(rw);
}
