/*
 * The request layer's private parts, shared by req.c (the plain path) and
 * req_repl.c (replicated writes). Not for other folders.
 */
#ifndef NODE_REQ_INT_H
#define NODE_REQ_INT_H

#include "req.h"
#include "req_bg.h"
#include "../repl/repl.h"

#define REQ_EVENTS_MAX 32
#define REQ_FAIL_LOG_KEYS 16

/* Pacing and progress of background work (req_pace.c). */
struct req_pace {
	struct req_bucket bucket;        /* over every background byte moved */
	uint64_t rate_limit;             /* bytes/s, 0: none */
	unsigned duty;                   /* percent of each second, 1..100 */
	struct req_rate_avg repair_avg;  /* repair hints' bytes delivered */
	unsigned fg;                     /* client requests in flight in this layer */
	uint64_t busy_since_ms;          /* fg at or above the threshold since (0: not) */
	unsigned inbound, inbound_max;   /* repair streams received now; the cap */
	uint64_t inbound_refused;
	uint64_t repair_objects_done, repair_bytes_done;
	int paused;                      /* 0, or NODE_REQ_PAUSED_* */
	uint8_t paused_target[OVL_ID_BYTES]; /* NODE_REQ_PAUSED_TARGET_FULL: that home */
	/* what library code may not log: events for the daemon's log */
	struct {
		int level;               /* NODE_REQ_EV_* */
		char text[OVL_WIRE_TEXT_SIZE];
	} ev[REQ_EVENTS_MAX];
	unsigned ev_head, ev_n;
	uint64_t ev_dropped;
	struct {
		uint8_t hash[16];        /* a repair key's hint hash */
		uint64_t ms;             /* its failure last logged (monotonic) */
	} faillog[REQ_FAIL_LOG_KEYS];
};

struct node_req {
	struct node_req_opts o;
	const char *msg;  /* the last failure: a literal or the store's message */
	char msgbuf[OVL_WIRE_TEXT_SIZE]; /* a failure message made here */
	unsigned live;    /* requests in flight, streams and kept buffers */
	bool dying;       /* destroyed: freed with the last of them */
	struct req_hints *hints; /* hints, hand-off, sync, tombstone GC (with repl) */
	struct req_rw *rws;      /* replicated writes in flight */
	struct req_heal *heal;   /* digests, anti-entropy passes, foreign copies (with repl) */
	struct req_pace pace;    /* background work: rate, duty, progress (req_pace.c) */
	struct req_scrub *scrub; /* scrub and repair of damaged copies (req_scrub.c) */
	struct req_gc *gc;       /* large objects' chunk GC (req_gc.c) */
};

/* One of rq->live ended: the layer goes with the last once destroyed. */
void req_rq_put(struct node_req *rq);

/* A replicated write (req_repl.c). */
struct req_rw;

/* Whether the write a goes through the replicated path. */
bool req_rw_wanted(struct node_req *rq, const struct node_req_args *a);

/* A whole PUT or a DELETE: as node_req_start(). */
int req_rw_start(struct node_req *rq, const struct node_req_args *a, node_req_done_fn done,
		 void *arg);

/* A streamed PUT: as node_req_stream_begin/write/crc/finish/abort. */
int req_rw_stream_begin(struct node_req *rq, const struct node_req_args *a,
			void (*ready)(void *arg), void *arg, struct req_rw **out);
ssize_t req_rw_stream_write(struct req_rw *rw, const void *buf, size_t len);
uint32_t req_rw_stream_crc(const struct req_rw *rw);
int req_rw_stream_finish(struct req_rw *rw, uint32_t crc, node_req_done_fn done, void *arg);
void req_rw_stream_abort(struct req_rw *rw);

/* Whether a replicated write of this key is in flight here. */
bool req_rw_key_busy(struct node_req *rq, const uint8_t *key, size_t klen);

/* ---- hints (req_hint.c) ---- */

struct req_hints;

/* A key under NODE_REQ_RESERVED: the node's own records. */
bool req_key_reserved(const uint8_t *key, size_t klen);

/* Set up rq->hints (loading the hints the store holds) and start the
 * sync. 0 or -ENOMEM; err may hold a warning (empty if none). */
int req_hints_new(struct node_req *rq, const struct node_req_opts *o, char *err, size_t errlen);
void req_hints_destroy(struct node_req *rq);
void req_hints_stop(struct node_req *rq);

typedef void (*req_hint_done_fn)(void *arg, int res);

/* 0 while another hint can be taken, -ENOSPC at hints_max. */
int req_hint_room(struct node_req *rq);

/* Write the hint record for a hinted copy: done(arg, res) runs from the
 * loop once it is durable (res 0) or failed. 0 or -errno (done never runs). */
int req_hint_put(struct node_req *rq, const uint8_t home[OVL_ID_BYTES], const char *slice,
		 const uint8_t *key, size_t klen, const struct ovl_wire_ver *ver, bool del,
		 req_hint_done_fn done, void *arg);

void req_hint_poke(struct node_req *rq, const uint8_t id[OVL_ID_BYTES]);
void req_hints_sync_start(struct node_req *rq);
bool req_hints_syncing(const struct node_req *rq);
void req_hints_connected(struct node_req *rq, bool connected);
void req_hints_tick(struct node_req *rq, uint64_t now_mono_ms);
unsigned req_hints_counters(const struct node_req *rq, struct ovl_wire_counter *c, unsigned max);
void req_hints_stats(const struct node_req *rq, struct node_req_hint_stats *st);

/* Repair hints ('R' object, 'T' tombstone): delivered by the same
 * hand-off as hints, with `repair` on the forward, but never counted in
 * hints_for_ (the target does not sync for them). size: the object's
 * bytes as far as known (repair_bytes_left; not kept across a restart).
 * As req_hint_put(). */
int req_hint_put_repair(struct node_req *rq, const uint8_t home[OVL_ID_BYTES], const char *slice,
			const uint8_t *key, size_t klen, const struct ovl_wire_ver *ver, bool del,
			uint64_t size, req_hint_done_fn done, void *arg);

/* Whether a hint of any kind for (home, slice, key) at version ver or
 * newer waits here (home NULL: for any home, any version). */
bool req_hint_waiting(const struct node_req *rq, const uint8_t *home, const char *slice,
		      const uint8_t *key, size_t klen, const struct ovl_wire_ver *ver);
/* Whether a hint for key waits here for a member that is not `out` (a
 * hint for an `out` member keeps the copy here, but the repair passes
 * move the key to its homes all the same). */
bool req_hint_waiting_live(const struct node_req *rq, const char *slice, const uint8_t *key,
			   size_t klen);

/* Hints held now (every kind) and the table's bound; repair hints of
 * the slice (NULL: every slice) waiting. */
void req_hints_fill(const struct node_req *rq, unsigned *n, unsigned *max);
/* Hint records being written now (not in the table yet). */
unsigned req_hints_putting(const struct node_req *rq);
/* Repair hints in the table. */
unsigned req_hints_repairs(const struct node_req *rq);
unsigned req_hints_repair_waiting(const struct node_req *rq, const char *slice);

/* ---- repair and anti-entropy (req_heal.c) ---- */

struct req_heal;

/* Set up rq->heal (the passes saved in the store resume). 0 or -ENOMEM. */
int req_heal_new(struct node_req *rq, const struct node_req_opts *o);
void req_heal_destroy(struct node_req *rq);
void req_heal_stop(struct node_req *rq);
void req_heal_tick(struct node_req *rq, uint64_t now_mono_ms);

/* DIGEST, HEAL (node_req_start()). */
int req_heal_start(struct node_req *rq, const struct node_req_args *a, node_req_done_fn done,
		   void *arg);

/* LIST with a bucket: whether key (in slice) is in `bucket` and both this
 * node and node `peer` are homes of it under this node's map. */
struct req_heal_filter;
int req_heal_filter_new(struct node_req *rq, const char *slice, const uint8_t *peer,
			struct req_heal_filter **out);
bool req_heal_filter_take(struct req_heal_filter *f, uint8_t bucket, const uint8_t *set,
			  const uint8_t *key, size_t klen);
void req_heal_filter_destroy(struct req_heal_filter **f);

/* A repair hint of slice for key was delivered to target (it holds that
 * version or a newer one, durably): a key the last pass counted degraded
 * for that copy stops counting. */
void req_heal_repair_delivered(struct node_req *rq, const char *slice, const uint8_t *key,
			       size_t klen, const uint8_t target[OVL_ID_BYTES]);

/* Repair copies the running pass counted from the map change (the keys
 * whose homes moved) and has not queued yet: objects and bytes. */
void req_heal_plan_left(const struct node_req *rq, uint64_t *objects, uint64_t *bytes);
/* When the next pass of slice is due (monotonic ms), 0 when none is
 * planned or the slice is not known yet. */
uint64_t req_heal_pass_due(const struct node_req *rq, const char *slice);
/* heal_objects_degraded summed over every slice this node heals. */
uint64_t req_heal_degraded(const struct node_req *rq);

/* The digest of one key: h(K) and bucket(K) (req.h, "Repair"). */
void req_heal_key_hash(const char *slice, const uint8_t *key, size_t klen,
		       const struct node_store_ver *ver, bool tomb, uint64_t *h, uint8_t *bucket);
/* ---- pacing of background work (req_pace.c) ---- */

/* Client requests in flight at or above this: no new background hand-off
 * (or scrub slice) starts. */
#define REQ_PACE_CLIENT_BUSY 16
/* Busy this long without a pause: one hand-off at a time may start anyway,
 * so that background work is slowed, never starved for good. */
#define REQ_PACE_STARVE_MS 30000
/* A home that answered no-space is tried again after this long. */
#define REQ_PACE_FULL_PROBE_MS 5000

void req_pace_init(struct node_req *rq, const struct node_req_opts *o);

/* An event for the daemon's log (printf-style, truncated). */
void req_event(struct node_req *rq, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Whether a new background hand-off (busy: how many already run) may
 * start now: client load under the threshold (or starved too long and
 * none running), the duty cycle open. */
bool req_pace_may_start(struct node_req *rq, unsigned running, uint64_t now_ms);

/* Bytes a background transfer may move now (0: wait for the next tick):
 * the duty cycle open, then the token bucket (at most one piece). */
uint64_t req_pace_take(struct node_req *rq, uint64_t want, uint64_t now_ms);

/* A hand-off of a repair hint delivered an object of `bytes`. */
void req_pace_repair_done(struct node_req *rq, uint64_t bytes, uint64_t now_ms);

/* Repair bytes moved (for the achieved rate). */
void req_pace_repair_bytes(struct node_req *rq, uint64_t bytes, uint64_t now_ms);

/* Whether key belongs to slice on this node (keys carry no slice): fleet
 * blocks (fe x8 'F') to the slice OVL_FLEET_SYSTEM_SLICE, every other key
 * to the node's other slices; every key to every slice on a node that is
 * no member of the system slice (req_heal.c). */
bool req_key_in_slice(struct node_req *rq, const char *slice, const void *key, size_t klen);

/* A repair copy started: the achieved rate counts from here. */
void req_pace_repair_begin(struct node_req *rq, uint64_t now_ms);

/* A home answered no-space (full) / took a hand-off again (ok). */
void req_pace_target_full(struct node_req *rq, const uint8_t id[OVL_ID_BYTES], bool full);

/* Once per tick: this drive's space (pause reason 1). */
void req_pace_tick(struct node_req *rq, uint64_t now_ms);

unsigned req_pace_counters(const struct node_req *rq, struct ovl_wire_counter *c, unsigned max);

/* Whether a hint type is a repair hint ('R' object, 'T' tombstone). */
bool hint_is_repair(uint8_t type);

/* Repair hints waiting here: objects, their bytes (as far as known), and
 * how many of them back off after a failure. */
void req_hints_repair_left(const struct node_req *rq, uint64_t *objects, uint64_t *bytes,
			   uint64_t *failed);

/* Move the paced hand-offs on (those waiting for tokens or the duty cycle). */
void req_hints_pace_pump(struct node_req *rq);

/* ---- scrub and repair of damaged copies (req_scrub.c) ---- */

struct req_scrub;

int req_scrub_new(struct node_req *rq, const struct node_req_opts *o);
void req_scrub_destroy(struct node_req *rq);
void req_scrub_tick(struct node_req *rq, uint64_t now_ms);
unsigned req_scrub_counters(const struct node_req *rq, struct ovl_wire_counter *c, unsigned max);

/* A read found the key damaged here (-EIO): fetch it again from another
 * home of a replicated slice (slice may be NULL or empty: found by scrub,
 * the slice is looked up). Queued; nothing runs inside this call. */
void req_damage_found(struct node_req *rq, const char *slice, const uint8_t *key, size_t klen);

/* ---- large objects' chunk GC (req_gc.c) ---- */

struct req_gc;

int req_gc_new(struct node_req *rq, const struct node_req_opts *o);
void req_gc_destroy(struct node_req *rq);
void req_gc_stop(struct node_req *rq);
void req_gc_tick(struct node_req *rq, uint64_t now_ms);
unsigned req_gc_counters(const struct node_req *rq, struct ovl_wire_counter *c, unsigned max);

/* A plain DELETE or LIST from a node (a->peer_id without ver/fwd): 0 when
 * it names a key (prefix) beginning with fe x8 and the node is a member of
 * the slice; -EACCES (rq->msg says why). */
int req_gc_peer_check(struct node_req *rq, const struct node_req_args *a);

#endif
