/*
 * node_repl: replication on the node (docs/PROTOCOL.md 7.7, "Forwarded
 * writes"): where a key's replicas live, the version a write carries, and
 * the forwarding of a write to the next replica of its pipeline.
 *
 * The request layer (firmware/req) owns the store; node_repl owns the
 * connections to the other nodes. For a write on a slice of R > 1
 * replicas the request layer asks node_repl for the plan (who holds the
 * key, which of them are live, and what this node is to the key), stores
 * locally, and at the same time forwards the write with
 * node_repl_fwd_start() to the next node of the chain, which stores it and
 * forwards it on. A forwarded PUT's payload streams through as it arrives
 * (node_repl_fwd_write()), so the client's uplink carries one copy and a
 * node holds at most OVL_DPC_STREAM_QUEUE_BYTES of it per forward.
 *
 * Versions: (hlc, node), ordered by hlc then node (struct ovl_wire_ver).
 * hlc = (unix_ms << 16) | counter; the head of a write assigns it with
 * node_repl_ver_next(), never below anything it has seen
 * (node_repl_ver_seen()). A forwarded version whose physical part is more
 * than max_clock_skew_ms ahead of this node's clock is refused.
 *
 * Connections: one node_peer per (peer, slice), made on first use and
 * reused; one that failed is made anew on the next write. A forward whose
 * next hop shows no progress for forward_timeout_ms (nothing sent, nothing
 * answered) fails with -ETIMEDOUT and its connection is closed
 * (node_repl_tick()). Nothing here runs the loop or logs.
 *
 * Threading: the loop's thread only.
 */
#ifndef NODE_REPL_H
#define NODE_REPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../ctl/ctl.h"
#include "../loop/loop.h"
#include "../peer/peer.h"
#include "overlay.h"

#define NODE_REPL_FORWARD_TIMEOUT_MS_DEFAULT 2000
#define NODE_REPL_MAX_CLOCK_SKEW_MS_DEFAULT 60000
#define NODE_REPL_PEERS_MAX 128         /* connections kept to other nodes */
#define NODE_REPL_UNREACHABLE_MS 5000   /* a node that failed a forward is passed over this long */
#define NODE_REPL_HLC_COUNTER_BITS 16
#define NODE_REPL_ERR_BYTES 256

/* ---- versions (pure) ---- */

/* The next hlc a head assigns: max(now_ms << 16, last + 1, seen + 1). */
uint64_t node_repl_hlc_next(uint64_t last, uint64_t seen, uint64_t now_ms);

/* The version's node part for a node id: its first 8 bytes, big-endian. */
uint64_t node_repl_ver_node(const uint8_t id[OVL_ID_BYTES]);

/* Whether ver's physical time (hlc >> 16) is more than skew_ms ahead of
 * now_ms: such a version is refused. */
bool node_repl_ver_future(const struct ovl_wire_ver *ver, uint64_t now_ms, uint64_t skew_ms);

/* ---- placement (pure) ---- */

/* What this node is to a key, and where the write goes after it. */
struct node_repl_plan {
	unsigned replicas;            /* R (the map's, at most OVL_PLACE_REPLICAS_MAX) */
	unsigned nhomes;              /* homes chosen (fewer than R when the slice is small) */
	int self_home;                /* which home this node is (0..), or -1: none */
	bool self_member;             /* this node is a member of the slice */
	/* the nodes the write goes to after this one, in placement order:
	 * each home that is live, or for one that is not the next live
	 * member in placement order (distinct failure domains where the live
	 * members allow) holding a hint for it (has_home) */
	unsigned nchain;
	struct ovl_wire_hop chain[OVL_PLACE_REPLICAS_MAX];
	uint32_t chain_member[OVL_PLACE_REPLICAS_MAX]; /* their index in the map */
	unsigned missing;             /* homes for which no live member is left */
};

/*
 * The placement order of key over m's members not `out` (at most max, and
 * at most OVL_PLACE_REPLICAS_MAX), as clients and nodes compute it
 * (docs/PROTOCOL.md 8): indexes into m->members into order[]. Its first R
 * are the homes. A count, or -ENOMEM.
 */
int node_repl_place_order(const struct node_ctl_map *m, const void *key, size_t klen,
			  unsigned max, unsigned *order);

/*
 * The plan for key over map members m[0..n) with R replicas: placement
 * over every member not `out` (docs/PROTOCOL.md 8), homes the first R.
 * Live: state up and not avoid[i] (avoid may be NULL: members this node
 * found unreachable). Homes other than self go to the chain (self is
 * never in it); a home that is not live is replaced by a substitute.
 * 0, -EINVAL (R is 0 or n is 0), -ENOMEM.
 */
int node_repl_plan(const struct ovl_msg_member *m, uint32_t n, unsigned replicas,
		   const uint8_t self[OVL_ID_BYTES], const void *key, size_t klen,
		   const bool *avoid, struct node_repl_plan *out);

/* The index of the member with this id, or -1. */
int node_repl_member_find(const struct ovl_msg_member *m, uint32_t n,
			  const uint8_t id[OVL_ID_BYTES]);

/* ---- the replication module ---- */

struct node_repl;

struct node_repl_opts {
	struct node_loop *loop;
	const struct ovl_id *id;        /* this node (borrowed) */
	struct ovl_peers *peers;        /* judges the other nodes' certificates (borrowed) */
	/* the map held for a slice (borrowed until the next call into the
	 * control plane), or NULL */
	const struct node_ctl_map *(*map_find)(void *arg, const char *slice);
	/* the i-th map held (borrowed as map_find()), NULL past the last; may
	 * be NULL: no enumeration (node_repl_map_at() answers NULL) */
	const struct node_ctl_map *(*map_at)(void *arg, unsigned i);
	/* the node's certificate now (borrowed), or NULL */
	const uint8_t *(*cert_get)(void *arg, size_t *len);
	uint64_t (*now_s)(void *arg);   /* trusted unix seconds (certificates) */
	uint64_t (*now_ms)(void *arg);  /* the node's clock, unix ms (versions) */
	/* may be NULL: another node answered stale-map (its map of the slice
	 * is newer than this node's): ask the broker for the new one now */
	void (*map_stale)(void *arg, const char *slice);
	void *arg;
	uint64_t forward_timeout_ms;    /* 0: NODE_REPL_FORWARD_TIMEOUT_MS_DEFAULT */
	uint64_t max_clock_skew_ms;     /* 0: NODE_REPL_MAX_CLOCK_SKEW_MS_DEFAULT */
};

struct node_repl_stats {
	uint64_t forwards;            /* writes forwarded */
	uint64_t forward_failures;    /* of them, failed or refused by the next hop */
	uint64_t forward_timeouts;    /* of them, timed out */
	uint64_t connects;            /* connections made to other nodes */
	uint64_t refused;             /* forwarded writes refused here */
	uint64_t short_writes;        /* client writes failed: fewer copies than required */
	uint64_t superseded;          /* writes this node already held newer */
};

int node_repl_new(struct node_repl **out, const struct node_repl_opts *o, char *err,
		  size_t errlen);

/* Close every connection to other nodes (forwards in flight fail with
 * -ECONNABORTED; their done callbacks run here or from the loop), so that
 * the loop's owner can drain the loop. Accepts NULL. */
void node_repl_stop(struct node_repl *r);

/* Free, after node_repl_stop() and the loop's drain (stops first if it was
 * not called). After node_req_destroy(). NULLs *r; accepts NULL. */
void node_repl_destroy(struct node_repl **r);

/* Timers (forward_timeout): call every ~100 ms with a monotonic time. */
void node_repl_tick(struct node_repl *r, uint64_t now_mono_ms);

void node_repl_stats(const struct node_repl *r, struct node_repl_stats *st);
struct node_repl_stats *node_repl_stats_mut(struct node_repl *r);

/* The slice's map (borrowed, as map_find()), or NULL. */
const struct node_ctl_map *node_repl_map(struct node_repl *r, const char *slice);

/* The i-th slice map held (borrowed, as map_find()), or NULL past the last. */
const struct node_ctl_map *node_repl_map_at(struct node_repl *r, unsigned i);

/* This node's id (32 bytes). */
const uint8_t *node_repl_self(const struct node_repl *r);

/* The map's minimum of durable copies for a write (min_write_replicas,
 * default R), at most R. */
unsigned node_repl_min_write(const struct node_ctl_map *m);

/* Mark in avoid[0..m->n_members) the members this node found unreachable
 * (a forward to them failed to connect, broke or timed out) in the last
 * NODE_REPL_UNREACHABLE_MS: node_repl_plan() passes them over. */
void node_repl_avoid(struct node_repl *r, const struct node_ctl_map *m, bool *avoid);

/* A node a forward's answer showed missing further down the chain (the
 * hop before it could not store the write there): node_repl_avoid() passes
 * it over for NODE_REPL_UNREACHABLE_MS as well. At most
 * NODE_REPL_SUSPECTS_MAX are remembered (the one expiring first goes). */
#define NODE_REPL_SUSPECTS_MAX 16
void node_repl_suspect(struct node_repl *r, const uint8_t id[OVL_ID_BYTES]);

/* A node that just reached this one (it asked for its hints back): it is
 * reachable again, so forget that it was unreachable or suspect. Writes
 * then go to it rather than to a substitute that would hold yet another
 * hint for a node that has finished taking its hints back. */
void node_repl_heard(struct node_repl *r, const uint8_t id[OVL_ID_BYTES]);

/* A new version for a write this node heads. */
void node_repl_ver_next(struct node_repl *r, struct ovl_wire_ver *out);

/* A version seen (forwarded to this node, or held by its store): later
 * versions this node assigns are newer. */
void node_repl_ver_seen(struct node_repl *r, const struct ovl_wire_ver *ver);

/* The node's clock, unix ms. */
uint64_t node_repl_now_ms(struct node_repl *r);
uint64_t node_repl_max_skew_ms(const struct node_repl *r);

/* ---- forwarding one write ---- */

struct node_repl_fwd;

struct node_repl_fwd_args {
	uint8_t type;                 /* OVL_WIRE_T_PUT or OVL_WIRE_T_DELETE */
	const char *slice;
	const uint8_t *key;
	size_t klen;
	uint64_t size;                /* PUT: the value's bytes */
	uint32_t crc;                 /* PUT: its crc32c */
	const uint8_t *val;           /* PUT: the whole value (borrowed until done), or NULL:
				       * streamed with node_repl_fwd_write() */
	struct ovl_wire_ver ver;
	const struct ovl_wire_hop *chain; /* chain[0] is the next hop; the rest follow it */
	unsigned nchain;              /* 1..OVL_WIRE_CHAIN_MAX + 1 */
	bool repair;                  /* a repair copy (`repair` on the wire, PROTOCOL 7.13) */
};

/* What the next hop answered. Valid during the callback only. */
struct node_repl_fwd_result {
	int res;                      /* 0: it answered ok; -errno: failed, refused or timed out */
	const char *msg;              /* res < 0: why, naming the node */
	const uint8_t (*held)[OVL_ID_BYTES]; /* who holds it durably, as it says */
	unsigned nheld;
	unsigned homes;               /* of them, at their proper home */
	bool superseded;
	bool unreachable;             /* res < 0 because the next hop could not be reached,
				       * broke the connection or timed out (not a refusal) */
};

typedef void (*node_repl_fwd_done_fn)(void *arg, const struct node_repl_fwd_result *r);

/*
 * Forward a write to a->chain[0], naming chain[1..] as the rest of the
 * chain and chain[0]'s hint (has_home) as its own. 0: done(arg, ...) runs
 * once, from the loop (never inside this call); -errno: nothing started
 * (err says why). room(room_arg) (may be NULL) runs from the loop when a
 * streamed payload can take more.
 */
int node_repl_fwd_start(struct node_repl *r, const struct node_repl_fwd_args *a,
			node_repl_fwd_done_fn done, void *arg, void (*room)(void *arg),
			void *room_arg, struct node_repl_fwd **out, char *err, size_t errlen);

/* A streamed PUT: how many more bytes the forward takes now. */
uint64_t node_repl_fwd_room(const struct node_repl_fwd *f);

/* Write the payload's next bytes (at most node_repl_fwd_room()): how many
 * were taken, or -errno (the forward failed: done runs with it). */
ssize_t node_repl_fwd_write(struct node_repl_fwd *f, const void *buf, size_t len);

/* Give up: `done` never runs; a connection that carried part of a
 * streamed payload is closed (the next hop stores nothing). A forward
 * given the whole value borrows it until it completes, so only a streamed
 * one may be abandoned before `done`. NULLs *f; accepts NULL. */
void node_repl_fwd_abort(struct node_repl_fwd **f);

/* ---- other requests to another node ----
 *
 * A request without a payload (STAT, NODE-STAT...) to member mi of map m,
 * on the connection forwards use (made if needed). done(arg, call) runs
 * once from the loop with the completed call (call->result, call->resp;
 * valid during the callback only); a call that shows no answer within
 * forward_timeout_ms fails with -ETIMEDOUT and closes its connection.
 * 0, or -errno with err (done never runs).
 */
struct node_repl_call;
typedef void (*node_repl_call_fn)(void *arg, struct ovl_dpc_call *call);

int node_repl_call(struct node_repl *r, const struct node_ctl_map *m, uint32_t mi,
		   const struct ovl_wire_req *req, node_repl_call_fn done, void *arg,
		   struct node_repl_call **out, char *err, size_t errlen);

/* A call that may take long to answer (a DIGEST the peer computes over
 * several ticks): it fails with -ETIMEDOUT only after timeout_ms from now
 * instead of forward_timeout_ms. */
void node_repl_call_timeout(struct node_repl_call *c, uint64_t timeout_ms);

/* Whether member mi of map m was found unreachable in the last
 * NODE_REPL_UNREACHABLE_MS. */
bool node_repl_unreachable(struct node_repl *r, const struct node_ctl_map *m, uint32_t mi);

/* NODE-STAT counters of replication into c[0..max): how many. */
unsigned node_repl_counters(const struct node_repl *r, struct ovl_wire_counter *c, unsigned max);

#endif
