#include "repl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- versions ---- */

uint64_t node_repl_hlc_next(uint64_t last, uint64_t seen, uint64_t now_ms)
{
	uint64_t phys = now_ms << NODE_REPL_HLC_COUNTER_BITS, next = phys;

	if (last + 1 > next)
		next = last + 1;
	if (seen + 1 > next)
		next = seen + 1;
	return next;
}

uint64_t node_repl_ver_node(const uint8_t id[OVL_ID_BYTES])
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | id[i];
	return v;
}

bool node_repl_ver_future(const struct ovl_wire_ver *ver, uint64_t now_ms, uint64_t skew_ms)
{
	return (ver->hlc >> NODE_REPL_HLC_COUNTER_BITS) > now_ms + skew_ms;
}

/* ---- placement ---- */

int node_repl_member_find(const struct ovl_msg_member *m, uint32_t n,
			  const uint8_t id[OVL_ID_BYTES])
{
	for (uint32_t i = 0; i < n; i++)
		if (memcmp(m[i].id, id, OVL_ID_BYTES) == 0)
			return (int)i;
	return -1;
}

/* How far apart two members' failure domains are: 3 other site, 2 other
 * chassis, 1 other slot, 0 the same slot (docs/PROTOCOL.md 8). */
static int domain_level(const struct ovl_msg_member *a, const struct ovl_msg_member *b)
{
	if (strcmp(a->domain.site, b->domain.site) != 0)
		return 3;
	if (strcmp(a->domain.chassis, b->domain.chassis) != 0)
		return 2;
	return strcmp(a->domain.slot, b->domain.slot) != 0 ? 1 : 0;
}

int node_repl_plan(const struct ovl_msg_member *m, uint32_t n, unsigned replicas,
		   const uint8_t self[OVL_ID_BYTES], const void *key, size_t klen,
		   const bool *avoid, struct node_repl_plan *out)
{
	struct ovl_place_member *pm = NULL;
	unsigned *order = NULL, used[OVL_PLACE_REPLICAS_MAX], nused = 0;
	bool *taken = NULL;
	int norder, ret = 0;

	memset(out, 0, sizeof(*out));
	out->self_home = -1;
	if (!replicas || !n)
		return -EINVAL;
	if (replicas > OVL_PLACE_REPLICAS_MAX)
		replicas = OVL_PLACE_REPLICAS_MAX;
	out->replicas = replicas;
	out->self_member = node_repl_member_find(m, n, self) >= 0;
	pm = calloc(n, sizeof(*pm));
	order = calloc(n, sizeof(*order));
	taken = calloc(n, sizeof(*taken));
	if (!pm || !order || !taken) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < n; i++) {
		memcpy(pm[i].id, m[i].id, OVL_ID_BYTES);
		/* out members hold nothing: weight 0 leaves them out */
		pm[i].weight = m[i].state == OVL_MSG_STATE_OUT ? 0 : m[i].capacity;
		pm[i].site = m[i].domain.site;
		pm[i].chassis = m[i].domain.chassis;
		pm[i].slot = m[i].domain.slot;
	}
	/* the placement order, as far as ovl_place goes (16: every home and
	 * substitute a write can use): its first R are the homes (the choice
	 * is greedy, so a longer answer starts with the shorter one) */
	norder = ovl_place(pm, n, key, klen, n < OVL_PLACE_REPLICAS_MAX ? n : OVL_PLACE_REPLICAS_MAX,
			   order);
	if (norder < 0) {
		ret = norder;
		goto out;
	}
	out->nhomes = (unsigned)norder < replicas ? (unsigned)norder : replicas;
	/* live homes first: they hold their own copy; self is live to itself */
	for (unsigned h = 0; h < out->nhomes; h++) {
		unsigned i = order[h];

		taken[i] = true;
		if (memcmp(m[i].id, self, OVL_ID_BYTES) == 0) {
			out->self_home = (int)h;
			used[nused++] = i;
		} else if (m[i].state == OVL_MSG_STATE_UP && !(avoid && avoid[i])) {
			used[nused++] = i;
		}
	}
	for (unsigned h = 0; h < out->nhomes; h++) {
		unsigned i = order[h];
		struct ovl_wire_hop *hop = &out->chain[out->nchain];
		int best = -1, best_level = -1;

		if ((int)h == out->self_home)
			continue;
		if (m[i].state == OVL_MSG_STATE_UP && !(avoid && avoid[i])) {
			memcpy(hop->id, m[i].id, OVL_ID_BYTES);
			hop->has_home = false;
			out->chain_member[out->nchain++] = i;
			continue;
		}
		/* a substitute: the next live member in placement order, the
		 * one farthest from the copies placed so far */
		for (unsigned k = out->nhomes; k < (unsigned)norder; k++) {
			unsigned j = order[k];
			int level = 3;

			if (taken[j] || m[j].state != OVL_MSG_STATE_UP || (avoid && avoid[j]) ||
			    memcmp(m[j].id, self, OVL_ID_BYTES) == 0)
				continue;
			for (unsigned u = 0; u < nused; u++) {
				int l = domain_level(&m[j], &m[used[u]]);

				if (l < level)
					level = l;
			}
			if (level > best_level) {
				best_level = level;
				best = (int)j;
			}
		}
		if (best < 0) {
			out->missing++;
			continue;
		}
		taken[best] = true;
		used[nused++] = (unsigned)best;
		memcpy(hop->id, m[best].id, OVL_ID_BYTES);
		hop->has_home = true;
		memcpy(hop->home, m[i].id, OVL_ID_BYTES);
		out->chain_member[out->nchain++] = (uint32_t)best;
	}
out:
	free(pm);
	free(order);
	free(taken);
	return ret;
}

/* ---- the module ---- */

/* A connection to another node for one slice. */
struct repl_peer {
	uint8_t id[OVL_ID_BYTES];
	char slice[OVL_WIRE_NAME_SIZE];
	struct node_peer *p;           /* NULL: none now (made on the next use) */
	uint8_t cert[OVL_CERT_MAX_BYTES]; /* our certificate, as its handshake borrows it */
	size_t cert_len;
	uint64_t down_until;           /* monotonic ms: unreachable until then */
};

struct node_repl_call {
	struct node_repl *r;
	struct node_repl_call *prev, *next;
	struct repl_peer *rp;
	struct node_peer *p;
	struct ovl_dpc_call call;
	node_repl_call_fn done;
	void *arg;
	uint64_t deadline_ms;
	bool timed_out;
};

struct node_repl {
	struct node_repl_opts o;
	struct node_repl_call *calls;  /* other requests in flight (for the timeouts) */
	struct repl_peer *peers[NODE_REPL_PEERS_MAX];
	unsigned npeers;
	struct node_repl_fwd *fwds;    /* forwards in flight (for the timeouts) */
	uint64_t last_hlc, seen_hlc;
	struct node_repl_stats st;
	/* nodes a forward's answer showed missing further down a chain
	 * (node_repl_suspect()): passed over like unreachable peers */
	struct {
		uint8_t id[OVL_ID_BYTES];
		uint64_t until;        /* monotonic ms */
	} suspects[NODE_REPL_SUSPECTS_MAX];
};

struct node_repl_fwd {
	struct node_repl *r;
	struct node_repl_fwd *prev, *next;
	struct repl_peer *rp;
	struct node_peer *p;           /* the connection it runs on */
	struct ovl_dpc_call call;
	node_repl_fwd_done_fn done;
	void *arg;
	void (*room)(void *arg);
	void *room_arg;
	uint64_t last_ms, timeout_ms;  /* progress; how long without it is too long */
	bool streamed, timed_out, aborted;
	uint64_t written;              /* a streamed payload's bytes written so far */
	char name[80];
};

static uint64_t mono_ms(void)
{
	return ovl_mono_ms();
}

int node_repl_new(struct node_repl **out, const struct node_repl_opts *o, char *err,
		  size_t errlen)
{
	struct node_repl *r = NULL;

	*out = NULL;
	if (!o->loop || !o->id || !o->peers || !o->map_find || !o->cert_get || !o->now_s) {
		snprintf(err, errlen, "replication: loop, identity, peers, map, certificate and clock are required");
		return -EINVAL;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		snprintf(err, errlen, "replication: out of memory");
		return -ENOMEM;
	}
	r->o = *o;
	if (!r->o.forward_timeout_ms)
		r->o.forward_timeout_ms = NODE_REPL_FORWARD_TIMEOUT_MS_DEFAULT;
	if (!r->o.max_clock_skew_ms)
		r->o.max_clock_skew_ms = NODE_REPL_MAX_CLOCK_SKEW_MS_DEFAULT;
	*out = r;
	return 0;
}

void node_repl_stop(struct node_repl *r)
{
	if (!r)
		return;
	/* the forwards in flight complete (with -ECONNABORTED) as their
	 * connections close */
	for (unsigned i = 0; i < r->npeers; i++)
		node_peer_destroy(&r->peers[i]->p);
}

void node_repl_destroy(struct node_repl **rp)
{
	struct node_repl *r = rp ? *rp : NULL;

	if (!r)
		return;
	*rp = NULL;
	node_repl_stop(r);
	for (unsigned i = 0; i < r->npeers; i++)
		free(r->peers[i]);
	free(r);
}

static void fwd_unlink(struct node_repl_fwd *f)
{
	if (f->prev)
		f->prev->next = f->next;
	else if (f->r->fwds == f)
		f->r->fwds = f->next;
	if (f->next)
		f->next->prev = f->prev;
	f->prev = f->next = NULL;
}

/* Close a peer's connection (its forwards complete with its failure). */
static void peer_drop(struct repl_peer *rp)
{
	node_peer_destroy(&rp->p);
}

void node_repl_tick(struct node_repl *r, uint64_t now)
{
	struct node_repl_fwd *f;
	struct node_repl_call *c;

again_calls:
	for (c = r->calls; c; c = c->next) {
		if (now < c->deadline_ms || !c->p || c->rp->p != c->p || c->timed_out)
			continue;
		c->timed_out = true;
		r->st.forward_timeouts++;
		peer_drop(c->rp);
		goto again_calls;
	}

	/* one expired forward closes its connection, which completes (and
	 * unlinks) every forward on it: start over after each */
again:
	for (f = r->fwds; f; f = f->next) {
		if (now < f->last_ms + f->timeout_ms || !f->p || f->rp->p != f->p)
			continue;
		f->timed_out = true;
		r->st.forward_timeouts++;
		peer_drop(f->rp);
		goto again;
	}
}

void node_repl_stats(const struct node_repl *r, struct node_repl_stats *st)
{
	*st = r->st;
}

struct node_repl_stats *node_repl_stats_mut(struct node_repl *r)
{
	return &r->st;
}

const struct node_ctl_map *node_repl_map(struct node_repl *r, const char *slice)
{
	return r->o.map_find(r->o.arg, slice);
}

const struct node_ctl_map *node_repl_map_at(struct node_repl *r, unsigned i)
{
	return r->o.map_at ? r->o.map_at(r->o.arg, i) : NULL;
}

const uint8_t *node_repl_self(const struct node_repl *r)
{
	return r->o.id->sign_pk;
}

unsigned node_repl_min_write(const struct node_ctl_map *m)
{
	unsigned r = m->replicas ? m->replicas : 1;

	if (m->min_write_replicas && m->min_write_replicas < r)
		return m->min_write_replicas;
	return r;
}

uint64_t node_repl_now_ms(struct node_repl *r)
{
	struct timespec ts;

	if (r->o.now_ms)
		return r->o.now_ms(r->o.arg);
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t node_repl_max_skew_ms(const struct node_repl *r)
{
	return r->o.max_clock_skew_ms;
}

void node_repl_avoid(struct node_repl *r, const struct node_ctl_map *m, bool *avoid)
{
	uint64_t now = mono_ms();

	for (unsigned i = 0; i < r->npeers; i++) {
		const struct repl_peer *rp = r->peers[i];
		int mi;

		if (rp->down_until <= now || strcmp(rp->slice, m->name) != 0)
			continue;
		mi = node_repl_member_find(m->members, m->n_members, rp->id);
		if (mi >= 0)
			avoid[mi] = true;
	}
	for (unsigned i = 0; i < NODE_REPL_SUSPECTS_MAX; i++) {
		int mi;

		if (r->suspects[i].until <= now)
			continue;
		mi = node_repl_member_find(m->members, m->n_members, r->suspects[i].id);
		if (mi >= 0)
			avoid[mi] = true;
	}
}

void node_repl_suspect(struct node_repl *r, const uint8_t id[OVL_ID_BYTES])
{
	uint64_t now = mono_ms();
	unsigned pick = 0;

	for (unsigned i = 0; i < NODE_REPL_SUSPECTS_MAX; i++) {
		if (memcmp(r->suspects[i].id, id, OVL_ID_BYTES) == 0) {
			pick = i;
			break;
		}
		/* else the slot that expires first (a free one has until 0) */
		if (r->suspects[i].until < r->suspects[pick].until)
			pick = i;
	}
	memcpy(r->suspects[pick].id, id, OVL_ID_BYTES);
	r->suspects[pick].until = now + NODE_REPL_UNREACHABLE_MS;
}

void node_repl_heard(struct node_repl *r, const uint8_t id[OVL_ID_BYTES])
{
	for (unsigned i = 0; i < NODE_REPL_SUSPECTS_MAX; i++)
		if (memcmp(r->suspects[i].id, id, OVL_ID_BYTES) == 0)
			r->suspects[i].until = 0;
	for (unsigned i = 0; i < r->npeers; i++)
		if (memcmp(r->peers[i]->id, id, OVL_ID_BYTES) == 0)
			r->peers[i]->down_until = 0;
}

void node_repl_ver_next(struct node_repl *r, struct ovl_wire_ver *out)
{
	r->last_hlc = node_repl_hlc_next(r->last_hlc, r->seen_hlc, node_repl_now_ms(r));
	out->hlc = r->last_hlc;
	out->node = node_repl_ver_node(r->o.id->sign_pk);
}

void node_repl_ver_seen(struct node_repl *r, const struct ovl_wire_ver *ver)
{
	/* a version from beyond the allowed skew never drags the clock along */
	if (node_repl_ver_future(ver, node_repl_now_ms(r), r->o.max_clock_skew_ms))
		return;
	if (ver->hlc > r->seen_hlc)
		r->seen_hlc = ver->hlc;
}

/* ---- connections ---- */

/* The connection to member `mi` of map m for its slice: kept, or made. */
static int peer_get(struct node_repl *r, const struct node_ctl_map *m, uint32_t mi,
		    struct repl_peer **out, char *err, size_t errlen)
{
	const struct ovl_msg_member *mb = &m->members[mi];
	struct repl_peer *rp = NULL;
	struct node_peer_opts po;
	const uint8_t *cert;
	char name[OVL_ID_FP_BYTES];
	size_t clen = 0;
	int ret;

	for (unsigned i = 0; i < r->npeers; i++) {
		struct repl_peer *c = r->peers[i];

		if (memcmp(c->id, mb->id, OVL_ID_BYTES) == 0 && strcmp(c->slice, m->name) == 0) {
			rp = c;
			break;
		}
	}
	if (rp && rp->p && !node_peer_failed(rp->p)) {
		*out = rp;
		return 0;
	}
	if (rp)
		peer_drop(rp);
	cert = r->o.cert_get(r->o.arg, &clen);
	if (!cert || !clen || clen > OVL_CERT_MAX_BYTES) {
		snprintf(err, errlen, "this node holds no certificate to forward with");
		return -EAGAIN;
	}
	if (!rp) {
		if (r->npeers == NODE_REPL_PEERS_MAX) {
			/* reuse an idle entry */
			for (unsigned i = 0; i < r->npeers && !rp; i++)
				if (!r->peers[i]->p || !node_peer_inflight(r->peers[i]->p))
					rp = r->peers[i];
			if (!rp) {
				snprintf(err, errlen, "more than %d connections to other nodes in use",
					 NODE_REPL_PEERS_MAX);
				return -EBUSY;
			}
			peer_drop(rp);
			rp->down_until = 0; /* another node's entry now */
		} else {
			rp = calloc(1, sizeof(*rp));
			if (!rp) {
				snprintf(err, errlen, "out of memory");
				return -ENOMEM;
			}
			r->peers[r->npeers++] = rp;
		}
		memcpy(rp->id, mb->id, OVL_ID_BYTES);
		snprintf(rp->slice, sizeof(rp->slice), "%s", m->name);
	}
	memcpy(rp->cert, cert, clen);
	rp->cert_len = clen;
	memset(&po, 0, sizeof(po));
	po.loop = r->o.loop;
	po.addr.sin6_family = AF_INET6;
	memcpy(&po.addr.sin6_addr, mb->addr, sizeof(po.addr.sin6_addr));
	po.addr.sin6_port = htons(mb->port);
	ovl_nodeid_fingerprint(mb->id, name);
	po.dpc.id = r->o.id;
	po.dpc.cert = rp->cert;
	po.dpc.cert_len = rp->cert_len;
	po.dpc.peers = r->o.peers;
	po.dpc.now = r->o.now_s(r->o.arg);
	/* a node's certificate lists no slices: HELLO names none, and each
	 * forwarded write is judged by the slice's membership */
	po.dpc.slice = NULL;
	{
		char nm[OVL_DPC_NAME_BYTES];

		snprintf(nm, sizeof(nm), "node %s", name);
		po.dpc.name = nm;
		ret = node_peer_new(&rp->p, &po, err, errlen);
	}
	if (ret < 0)
		return ret;
	r->st.connects++;
	*out = rp;
	return 0;
}

/* ---- forwarding ---- */

static void fwd_free(struct node_repl_fwd *f)
{
	fwd_unlink(f);
	ovl_dpc_call_release(&f->call);
	free(f);
}

/* The next hop answered, or the connection failed. */
static void call_done(struct ovl_dpc_call *call, void *arg)
{
	struct node_repl_fwd *f = arg;
	struct node_repl_fwd_result res = { 0 };
	char msg[OVL_WIRE_TEXT_SIZE + 128];
	int e = ovl_dpc_call_errno(call);

	if (f->aborted) {
		fwd_free(f);
		return;
	}
	if (f->timed_out) {
		e = -ETIMEDOUT;
		snprintf(msg, sizeof(msg), "%s did not answer within %" PRIu64 " ms", f->name,
			 f->timeout_ms);
	} else if (call->result < 0) {
		snprintf(msg, sizeof(msg), "%s: %s", f->name, call->err);
	} else if (call->resp.status != OVL_WIRE_OK) {
		if (call->resp.status == OVL_WIRE_STALE_MAP && f->r->o.map_stale)
			f->r->o.map_stale(f->r->o.arg, f->rp->slice);
		snprintf(msg, sizeof(msg), "%s answered %s: %s", f->name,
			 ovl_wire_status_name(call->resp.status) ? ovl_wire_status_name(call->resp.status)
								  : "an unknown status",
			 call->resp.message);
	} else {
		msg[0] = 0;
	}
	res.res = e;
	res.msg = msg;
	res.unreachable = f->timed_out || call->result < 0;
	f->rp->down_until = res.unreachable ? mono_ms() + NODE_REPL_UNREACHABLE_MS : 0;
	if (e == 0) {
		res.held = (const uint8_t(*)[OVL_ID_BYTES])call->resp.held;
		res.nheld = call->resp.has_held ? call->resp.nheld : 0;
		res.homes = call->resp.has_held ? call->resp.homes : 0;
		res.superseded = call->resp.superseded;
		if (!call->resp.has_held) {
			/* an answer that names no holder proves nothing */
			res.res = -EPROTO;
			snprintf(msg, sizeof(msg), "%s answered a forwarded write without 'held'", f->name);
		}
	}
	if (res.res < 0)
		f->r->st.forward_failures++;
	fwd_unlink(f);
	f->done(f->arg, &res);
	fwd_free(f);
}

static void call_room(void *arg)
{
	struct node_repl_fwd *f = arg;

	f->last_ms = mono_ms();
	if (f->room)
		f->room(f->room_arg);
}

static void call_progress(void *arg, uint64_t done, uint64_t total)
{
	struct node_repl_fwd *f = arg;

	f->last_ms = mono_ms();
}

int node_repl_fwd_start(struct node_repl *r, const struct node_repl_fwd_args *a,
			node_repl_fwd_done_fn done, void *arg, void (*room)(void *arg),
			void *room_arg, struct node_repl_fwd **out, char *err, size_t errlen)
{
	const struct node_ctl_map *m = node_repl_map(r, a->slice);
	struct node_repl_fwd *f = NULL;
	struct ovl_wire_req *q;
	char fp[OVL_ID_FP_BYTES];
	int mi, ret;

	*out = NULL;
	if (!a->nchain || a->nchain > OVL_WIRE_CHAIN_MAX + 1 || a->klen == 0 ||
	    a->klen > OVL_WIRE_KEY_MAX_BYTES ||
	    (a->type != OVL_WIRE_T_PUT && a->type != OVL_WIRE_T_DELETE)) {
		snprintf(err, errlen, "a forward of %u hops cannot be made", a->nchain);
		return -EINVAL;
	}
	ovl_nodeid_fingerprint(a->chain[0].id, fp);
	mi = m ? node_repl_member_find(m->members, m->n_members, a->chain[0].id) : -1;
	if (mi < 0) {
		snprintf(err, errlen, "node %s is not a member of slice '%s'", fp, a->slice);
		return -EINVAL;
	}
	f = calloc(1, sizeof(*f));
	if (!f) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	f->r = r;
	f->done = done;
	f->arg = arg;
	f->room = room;
	f->room_arg = room_arg;
	snprintf(f->name, sizeof(f->name), "node %s", fp);
	/* the hops after the next one wait for theirs in turn */
	f->timeout_ms = r->o.forward_timeout_ms * a->nchain;
	ret = peer_get(r, m, (uint32_t)mi, &f->rp, err, errlen);
	if (ret < 0) {
		free(f);
		return ret;
	}
	ovl_dpc_call_init(&f->call);
	q = &f->call.req;
	q->type = a->type;
	snprintf(q->slice, sizeof(q->slice), "%s", a->slice);
	q->epoch = m->epoch;
	memcpy(q->key, a->key, a->klen);
	q->key_len = (uint32_t)a->klen;
	q->has_ver = true;
	q->ver = a->ver;
	q->has_fwd = true;
	q->repair = a->repair;
	q->fwd.has_home = a->chain[0].has_home;
	memcpy(q->fwd.home, a->chain[0].home, OVL_ID_BYTES);
	q->fwd.nchain = a->nchain - 1;
	for (unsigned i = 1; i < a->nchain; i++)
		q->fwd.chain[i - 1] = a->chain[i];
	if (a->type == OVL_WIRE_T_PUT) {
		q->size = a->size;
		q->crc = a->crc;
		f->call.payload = a->val;
		f->call.payload_len = a->size;
		f->call.stream = !a->val;
		f->streamed = !a->val && a->size;
		f->call.encrypt = m->encrypt;
	}
	f->call.done = call_done;
	f->call.done_arg = f;
	f->call.room = call_room;
	f->call.room_arg = f;
	f->call.progress = call_progress;
	f->call.progress_arg = f;
	f->p = f->rp->p;
	f->last_ms = mono_ms();
	ret = node_peer_call(f->p, &f->call, err, errlen);
	if (ret < 0) {
		free(f);
		return ret;
	}
	f->next = r->fwds;
	if (r->fwds)
		r->fwds->prev = f;
	r->fwds = f;
	r->st.forwards++;
	*out = f;
	return 0;
}

uint64_t node_repl_fwd_room(const struct node_repl_fwd *f)
{
	if (!f->streamed || f->rp->p != f->p)
		return 0;
	return node_peer_room(f->p, &f->call);
}

ssize_t node_repl_fwd_write(struct node_repl_fwd *f, const void *buf, size_t len)
{
	ssize_t n;

	if (f->rp->p != f->p)
		return -ECONNABORTED;
	n = node_peer_write(f->p, &f->call, buf, len);
	if (n > 0) {
		f->written += (uint64_t)n;
		f->last_ms = mono_ms();
	}
	return n;
}

void node_repl_fwd_abort(struct node_repl_fwd **fp)
{
	struct node_repl_fwd *f = fp ? *fp : NULL;

	if (!f)
		return;
	*fp = NULL;
	f->aborted = true;
	fwd_unlink(f);
	/* a frame cut short cannot be taken back but by closing: the next
	 * hop then stores nothing of it (a payload given whole has gone or
	 * goes out whole: its answer is dropped when it comes) */
	if (f->rp->p == f->p && f->streamed && f->written < f->call.payload_len)
		peer_drop(f->rp); /* completes the call: freed in call_done */
}

/* ---- other requests ---- */

static void rcall_done(struct ovl_dpc_call *call, void *arg)
{
	struct node_repl_call *c = arg;
	struct node_repl *r = c->r;

	if (c->prev)
		c->prev->next = c->next;
	else if (r->calls == c)
		r->calls = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (c->timed_out && call->result >= 0) {
		call->result = -ETIMEDOUT;
	} else if (c->timed_out) {
		call->result = -ETIMEDOUT;
		snprintf(call->err, sizeof(call->err), "no answer within %" PRIu64 " ms",
			 r->o.forward_timeout_ms);
	}
	if (call->result < 0)
		c->rp->down_until = mono_ms() + NODE_REPL_UNREACHABLE_MS;
	else if (call->resp.status == OVL_WIRE_STALE_MAP && r->o.map_stale)
		r->o.map_stale(r->o.arg, c->rp->slice);
	c->done(c->arg, call);
	ovl_dpc_call_release(&c->call);
	free(c);
}

int node_repl_call(struct node_repl *r, const struct node_ctl_map *m, uint32_t mi,
		   const struct ovl_wire_req *req, node_repl_call_fn done, void *arg,
		   struct node_repl_call **out, char *err, size_t errlen)
{
	struct node_repl_call *c = NULL;
	int ret;

	if (out)
		*out = NULL;
	if (mi >= m->n_members || req->type == OVL_WIRE_T_PUT) {
		snprintf(err, errlen, "no such member, or a request with a payload");
		return -EINVAL;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	c->r = r;
	c->done = done;
	c->arg = arg;
	ret = peer_get(r, m, mi, &c->rp, err, errlen);
	if (ret < 0) {
		free(c);
		return ret;
	}
	ovl_dpc_call_init(&c->call);
	c->call.req = *req;
	snprintf(c->call.req.slice, sizeof(c->call.req.slice), "%s", m->name);
	c->call.req.epoch = m->epoch;
	c->call.done = rcall_done;
	c->call.done_arg = c;
	c->p = c->rp->p;
	c->deadline_ms = mono_ms() + r->o.forward_timeout_ms;
	ret = node_peer_call(c->p, &c->call, err, errlen);
	if (ret < 0) {
		free(c);
		return ret;
	}
	c->next = r->calls;
	if (r->calls)
		r->calls->prev = c;
	r->calls = c;
	if (out)
		*out = c;
	return 0;
}

void node_repl_call_timeout(struct node_repl_call *c, uint64_t timeout_ms)
{
	c->deadline_ms = mono_ms() + timeout_ms;
}

bool node_repl_unreachable(struct node_repl *r, const struct node_ctl_map *m, uint32_t mi)
{
	uint64_t now = mono_ms();

	if (mi >= m->n_members)
		return true;
	for (unsigned i = 0; i < r->npeers; i++) {
		const struct repl_peer *rp = r->peers[i];

		if (memcmp(rp->id, m->members[mi].id, OVL_ID_BYTES) == 0 &&
		    strcmp(rp->slice, m->name) == 0)
			return rp->down_until > now;
	}
	return false;
}

unsigned node_repl_counters(const struct node_repl *r, struct ovl_wire_counter *c, unsigned max)
{
	const struct {
		const char *name;
		uint64_t v;
	} t[] = {
		{ "repl_forwards", r->st.forwards },
		{ "repl_forward_failures", r->st.forward_failures },
		{ "repl_forward_timeouts", r->st.forward_timeouts },
		{ "repl_connects", r->st.connects },
		{ "repl_refused", r->st.refused },
		{ "repl_short_writes", r->st.short_writes },
		{ "repl_superseded", r->st.superseded },
	};
	unsigned n = 0;

	for (; n < max && n < sizeof(t) / sizeof(t[0]); n++) {
		snprintf(c[n].name, sizeof(c[n].name), "%s", t[n].name);
		c[n].value = t[n].v;
	}
	return n;
}

int node_repl_place_order(const struct node_ctl_map *m, const void *key, size_t klen,
			  unsigned max, unsigned *order)
{
	struct ovl_place_member *pm;
	int n;

	if (!m->n_members)
		return 0;
	if (max > OVL_PLACE_REPLICAS_MAX)
		max = OVL_PLACE_REPLICAS_MAX;
	pm = calloc(m->n_members, sizeof(*pm));
	if (!pm)
		return -ENOMEM;
	for (uint32_t i = 0; i < m->n_members; i++) {
		memcpy(pm[i].id, m->members[i].id, OVL_ID_BYTES);
		pm[i].weight = m->members[i].state == OVL_MSG_STATE_OUT ? 0 : m->members[i].capacity;
		pm[i].site = m->members[i].domain.site;
		pm[i].chassis = m->members[i].domain.chassis;
		pm[i].slot = m->members[i].domain.slot;
	}
	n = ovl_place(pm, m->n_members, key, klen, max, order);
	free(pm);
	return n;
}
