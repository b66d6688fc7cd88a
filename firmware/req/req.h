/*
 * node_req: the request layer, what a request means on this node.
 *
 * A request passes through three layers, each in its own files:
 *   - the session (firmware/dp): framing, handshake, MACs, payload crypto,
 *     admission, flow control and the memory budgets for what it holds. It
 *     checks what the client sent (authentication, lengths, the payload's
 *     crc32c) and turns results into responses on the wire;
 *   - the request layer (this file): what PUT, GET, DELETE, STAT and LIST
 *     mean on this node. Today that is one call into the store and its
 *     result mapped into a struct node_req_result; forwarding to replicas,
 *     hints and versions come here next;
 *   - the store (firmware/store): one drive.
 * The session never calls the store; the request layer never sees a frame,
 * a key from a session or a status code on the wire.
 *
 * A request is a key (a prefix for LIST), maybe a payload, and an
 * asynchronous completion: node_req_start() takes the request and a `done`
 * callback. A PUT's payload is either given whole (`val`) or streamed
 * (node_req_stream_begin/write/finish/abort) as it arrives.
 *
 * Completions, and when they run:
 *   - A call that returns 0 has accepted the request: `done` runs exactly
 *     once, with the result. A call that returns -errno has not: `done`
 *     never runs, and node_req_errmsg() says why.
 *   - `done` runs from the node's loop (a store completion), or, for LIST,
 *     which the store answers from memory, before node_req_start() returns.
 *     A caller must be ready for both: it must not touch what `done` frees
 *     after a call that returned 0.
 *   - A stream's `ready` runs from the loop, never inside the call that
 *     made it wait (node_req_stream_write()).
 *   - Nothing here runs the loop. Only the loop's owner does
 *     (firmware/loop/loop.h).
 *
 * Ownership: everything passed in is borrowed; a PUT's `val` must stay
 * valid until `done` runs. A result (and every pointer in it) is valid only
 * during `done`, except a GET's bytes, which the callee may keep with the
 * buffer handle passed with them (node_req_buf).
 *
 * Errors (-errno): -ENOENT no such key, -EINVAL a bad argument, -E2BIG a
 * key or value too large, -ENOSPC the drive is full, -EROFS the store is
 * read-only after an I/O failure, -EIO a checksum mismatch or read error,
 * -EBUSY no memory for the request now (retry), -EBADMSG a streamed
 * value's crc32c does not match. Every failure sets node_req_errmsg().
 *
 * Threading: one thread, the loop's owner's.
 */
#ifndef NODE_REQ_H
#define NODE_REQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../loop/loop.h"
#include "../store/store.h"
#include "overlay.h"

struct node_req;
struct node_req_stream;
struct node_req_buf;

struct node_repl;

/* Keys that start with these 8 bytes (all 0xff) are the node's own
 * records (hints): no request may name one, and LIST never shows one.
 * Every other key sorts before them. */
#define NODE_REQ_RESERVED_BYTES 8
#define NODE_REQ_HINTS_MAX_DEFAULT 16384
#define NODE_REQ_HINT_SYNC_TIMEOUT_MS_DEFAULT 10000
#define NODE_REQ_TOMBSTONE_GC_AFTER_MS_DEFAULT (24ull * 3600 * 1000)
#define NODE_REQ_ANTIENTROPY_INTERVAL_MS_DEFAULT (3600ull * 1000)
/* background work (hand-offs, repair): 64 MiB/s is about half of a 1 GbE
 * link and a third of a disk's streaming rate, so a node's clients keep
 * the larger part of both while it repairs, and 24 nodes repairing in
 * parallel still move ~1.5 GiB/s */
#define NODE_REQ_REPAIR_RATE_DEFAULT (64ull << 20)
#define NODE_REQ_REPAIR_RATE_MIN (64u << 10)    /* a lower limit is refused (-EINVAL) */
#define NODE_REQ_REPAIR_DUTY_DEFAULT 100
#define NODE_REQ_REPAIR_INBOUND_MAX_DEFAULT 4
#define NODE_REQ_SCRUB_INTERVAL_MS_DEFAULT (24ull * 3600 * 1000)
#define NODE_REQ_SCRUB_BUDGET_DEFAULT (4u << 20)  /* bytes verified per tick (~100 ms) */
#define NODE_REQ_CHUNK_GC_AFTER_MS_DEFAULT (3600ull * 1000)
#define NODE_REQ_CHUNK_GC_INTERVAL_MS_DEFAULT (600ull * 1000)

struct node_req_opts {
	struct node_loop *loop;   /* the node's loop (borrowed) */
	struct node_store *store; /* on that loop (borrowed; outlives the layer) */
	/* replication (borrowed; NULL: none, every write stays on this node).
	 * With it, a PUT or DELETE on a slice whose map has R > 1 replicas, or
	 * one another node forwarded, goes through the replicated write path
	 * (see "Replicated writes" below); R = 1 slices keep the plain path. */
	struct node_repl *repl;
	/* with repl (0: the defaults above): hints kept at most; how long a
	 * node that starts waits for the hints addressed to it before it
	 * serves reads of replicated slices anyway; how old a tombstone is
	 * before it may be dropped (once every home holds it) */
	unsigned hints_max;
	uint64_t hint_sync_timeout_ms;
	uint64_t tombstone_gc_after_ms;
	/* with repl (0: the default above): anti-entropy passes of each
	 * replicated slice start this often, +-20 % jitter ("Repair") */
	uint64_t antientropy_interval_ms;
	/* background work ("Background work" below; 0: the defaults above):
	 * repair_rate in bytes/s (-1: unlimited), repair_duty in percent */
	int64_t repair_rate;
	unsigned repair_duty;
	unsigned repair_inbound_max;
	uint64_t scrub_interval_ms;   /* UINT64_MAX: no scrub */
	uint64_t scrub_budget;
	/* with repl ("Chunk GC"; 0: the defaults above): how old an intent
	 * is before it is settled, and how often a pass starts (+-20 %) */
	uint64_t chunk_gc_after_ms;
	uint64_t chunk_gc_interval_ms;
	/* optional: more counters for NODE-STAT (the update agent's), after
	 * the layer's own: how many it wrote into c[0..max) */
	unsigned (*counters)(void *arg, struct ovl_wire_counter *c, unsigned max);
	void *counters_arg;
};

enum node_req_type {
	NODE_REQ_PUT,
	NODE_REQ_GET,
	NODE_REQ_DELETE,
	NODE_REQ_STAT,
	NODE_REQ_LIST,
	NODE_REQ_DIGEST,  /* a node asks for the digest of the keys both hold ("Repair") */
	NODE_REQ_HEAL,    /* start an anti-entropy and repair pass of the slice now */
};

/* One request. Every pointer is borrowed for the call (a PUT's val until
 * `done` runs). */
struct node_req_args {
	enum node_req_type type;
	const char *slice;        /* the slice it is for (the session has admitted it) */
	const uint8_t *key;       /* LIST: the prefix (may be empty) */
	size_t klen;
	const uint8_t *val;       /* PUT: the whole value, checked by the session */
	uint64_t size;            /* PUT: the value's bytes (a stream's declared size) */
	uint32_t crc;             /* PUT: the value's crc32c */
	uint64_t offset, length;  /* GET: the range (length UINT64_MAX: to the end) */
	const uint8_t *after;     /* LIST: only keys after this one (NULL: from the start) */
	size_t after_len;
	uint32_t limit;           /* LIST: at most this many keys (at least 1) */
	/* PUT, DELETE forwarded by another node: its version, `fwd`, and the
	 * sender's node id (the session has checked that the sender holds a
	 * node certificate); all NULL for a client's write */
	const struct ovl_wire_ver *ver;
	const struct ovl_wire_fwd *fwd;
	const uint8_t *peer_id;
	bool vers;                /* LIST: every entry with its version, tombstones too (vkeys) */
	/* LIST from a node (peer_id): only keys of digest bucket `bucket` that
	 * both this node and the asker are homes of ("Repair") */
	bool has_bucket;
	uint8_t bucket;
	/* ... or of every bucket in this set (OVL_WIRE_DIGEST_BUCKETS bits,
	 * bit b of byte b / 8; `bucket` is in it): the answer says by_set */
	const uint8_t *bucket_set;
	uint32_t buckets;         /* DIGEST: 0 (the root) or OVL_WIRE_DIGEST_BUCKETS; peer_id asks */
	/* HEAL: compare and count only; the repair rate limit (bytes/s, 0:
	 * none) and duty cycle (percent) to set, when has_ */
	bool check_only;
	bool has_rate, has_duty;
	uint64_t rate;
	uint32_t duty;
	bool repair;              /* PUT, DELETE forwarded: a repair copy (7.13) */
};

/* What a request came to. Valid during `done` only. */
struct node_req_result {
	enum node_req_type type;
	int res;                  /* 0 or -errno */
	const char *msg;          /* res < 0: why, in words */
	uint64_t size;            /* PUT, STAT: the object's bytes; GET: the whole object's */
	uint32_t crc;             /* PUT, STAT: the object's crc32c; GET: the returned bytes' */
	uint64_t seq;             /* PUT, STAT: the store's sequence of the object */
	uint64_t offset;          /* GET: where the returned bytes start */
	uint64_t length;          /* GET in pieces: the answer's bytes, every piece together */
	const uint8_t *data;      /* GET: the bytes (inside the buffer handed with them) */
	size_t len;
	const struct ovl_wire_bin *keys; /* LIST: the keys, in byte order */
	const struct ovl_wire_vkey *vkeys; /* LIST with vers: the entries instead of keys */
	uint32_t nkeys;
	bool more;                /* LIST: more keys follow the last one */
	bool by_set;              /* LIST: of the bucket_set asked for */
	/* PUT, DELETE through the replicated write path (replicated true) */
	bool replicated;
	struct ovl_wire_ver ver;  /* the write's version; GET, STAT: the object's ((0, 0):
				   * none); STAT -ENOENT with tomb: the tombstone's */
	const uint8_t (*held)[OVL_ID_BYTES]; /* the nodes that hold it durably, this one first */
	unsigned nheld;
	unsigned homes;           /* of them, at their proper home */
	bool superseded;          /* this node held a newer version: nothing stored here */
	bool tomb;                /* STAT -ENOENT: the key is a tombstone at ver */
	/* HEAL: the slice's heal and anti-entropy counters now */
	const struct ovl_wire_counter *counters;
	unsigned ncounters;
};

/*
 * A completion. `buf` is non-NULL for a successful GET only; *buf is then
 * the buffer that holds r->data (or NULL when it cannot be kept: copy the
 * bytes during the call). The callee keeps it by taking *buf and setting
 * *buf = NULL; it is then the callee's until node_req_buf_release(), and
 * r->data stays valid (and writable: sealing in place is allowed) until
 * then. A buffer left in *buf is released when `done` returns.
 */
typedef void (*node_req_done_fn)(void *arg, const struct node_req_result *r,
				 struct node_req_buf **buf);

/* A request layer over opts->store. 0 or -errno with err. */
int node_req_new(struct node_req **out, const struct node_req_opts *o, char *err, size_t errlen);

/*
 * Free the layer and NULL *rq (accepts NULL). Call it after the loop's
 * owner has drained the loop: requests still in flight then, and buffers
 * still held, keep what they need; the layer is freed with the last of
 * them. Before node_store_close().
 */
void node_req_destroy(struct node_req **rq);

/* The reason for the most recent refusal or failure, in words. */
const char *node_req_errmsg(const struct node_req *rq);

/*
 * Start a request (PUT with the whole value, GET, DELETE, STAT or LIST).
 * 0: `done(arg, ...)` will run once (see the top of this file); -errno:
 * refused, `done` never runs.
 */
int node_req_start(struct node_req *rq, const struct node_req_args *a, node_req_done_fn done,
		   void *arg);

/*
 * ---- streamed PUT ----
 *
 * A PUT whose value arrives in pieces: begin with the key, size and
 * crc32c (a->type NODE_REQ_PUT, a->val unused), write the bytes in order,
 * then finish; or abort. The object becomes visible only when finish's
 * `done` reports success; an abort, or a crash before that, leaves the key
 * as it was.
 */

/* Memory one stream holds (for the session's budget), in bytes. */
size_t node_req_stream_bytes(const struct node_req *rq);

/* 0 and the stream in *out, or -errno. ready(arg) (may be NULL) runs once
 * after a write took fewer bytes than it was given, when more can be taken
 * (or the stream failed: the next write says so). */
int node_req_stream_begin(struct node_req *rq, const struct node_req_args *a,
			  void (*ready)(void *arg), void *arg, struct node_req_stream **out);

/* Take up to len bytes. How many were taken (fewer, maybe 0: wait for
 * `ready`), or -errno (the stream is failed; abort it). */
ssize_t node_req_stream_write(struct node_req_stream *st, const void *buf, size_t len);

/* crc32c of the bytes taken so far. */
uint32_t node_req_stream_crc(const struct node_req_stream *st);

/* Every byte written: commit. Consumes the stream (NULLs *st) in every
 * case. 0: `done` runs once, from the loop; -errno: nothing stored. */
int node_req_stream_finish(struct node_req_stream **st, node_req_done_fn done, void *arg);

/* Give up: nothing becomes visible. NULLs *st; accepts NULL. */
void node_req_stream_abort(struct node_req_stream **st);

/*
 * ---- a GET in pieces ----
 *
 * A GET's answer read from the drive in pieces of at most piece_bytes, so
 * that an object of any size is never held whole: the caller asks for the
 * next piece when it has room for it. Every piece comes from the same
 * version of the object (the store's sequence is checked on each read).
 *
 * node_req_get_start(): 0, and `done` runs once with the first piece, or
 * with the GET's failure (r->res: -ENOENT...); -errno: refused, `done`
 * never runs (-ENOENT: no such key, as node_req_start()). The first piece's result says what the whole answer is:
 * r->size (the whole object's bytes), r->offset (where the answer starts),
 * r->length (the answer's bytes: the range clipped to the object) and
 * r->crc (the crc32c of the whole answer: the stored crc for a whole
 * object; for a range longer than one piece the range is read once more,
 * piece by piece, to compute it before the first piece is delivered). Each
 * piece is r->data/r->len, with the buffer handle as for node_req_start();
 * pieces follow each other, and their lengths add up to r->length. A
 * caller may keep a piece's buffer while it asks for the next.
 *
 * piece_bytes: a multiple of OVL_WIRE_CHUNK_BYTES (so that every piece but
 * the last is a whole number of payload chunks), at least one chunk.
 */
struct node_req_get;

int node_req_get_start(struct node_req *rq, const struct node_req_args *a, size_t piece_bytes,
		       node_req_done_fn done, void *arg, struct node_req_get **out);

/* Read the next piece (only after `done` ran for the previous one, and
 * while the pieces so far are fewer than r->length bytes): 0, and `done`
 * runs once more with it, or with -EIO (a read or checksum failure) or
 * -EAGAIN (the object was replaced or deleted since the first piece: the
 * rest of this version is gone); -errno: refused, `done` never runs
 * (-EAGAIN there too when the key is gone). */
int node_req_get_next(struct node_req_get *g);

/* node_req_get_next() with this read's size: at most `bytes` (a multiple
 * of OVL_WIRE_CHUNK_BYTES, at least one chunk; the rest of the answer when
 * it is shorter), e.g. the whole rest in one read when the caller has room
 * for it. Returns as node_req_get_next(). */
int node_req_get_read(struct node_req_get *g, size_t bytes);

/*
 * Before a GET: an upper bound on the key's value size and on what one
 * read of it can hold, from the index, with no I/O: its newest record's
 * bytes on the drive (value, header, key and chunk table). 0; -ENOENT (no
 * such key) or -EIO (damaged): the GET would fail the same way.
 */
int node_req_get_bound(struct node_req *rq, const void *key, size_t klen, uint64_t *bytes);

/* Whether every piece of the answer has been delivered. */
bool node_req_get_finished(const struct node_req_get *g);

/* Finish with the GET (after its last piece, a failure, or to give up): a
 * read still in flight completes without calling `done`. Buffers kept
 * stay valid until released. NULLs *g; accepts NULL. */
void node_req_get_end(struct node_req_get **g);

/* ---- buffers handed over with a GET's bytes ---- */

/* Give a kept buffer back. NULLs *b; accepts NULL. */
void node_req_buf_release(struct node_req_buf **b);

/*
 * ---- replicated writes ----
 *
 * A client's PUT or DELETE on a slice of R > 1 replicas: this node plans
 * the key's placement over the map's members (node_repl_plan()). If it is
 * one of the key's R homes it heads the write: it assigns the version,
 * stores locally and at the same time forwards the write (a PUT's payload
 * streaming through as it arrives) to the other homes in placement order,
 * a live substitute standing in for a home that is down; if it is no home
 * it only forwards (it relays the write to the homes, storing nothing).
 * The answer's `held` lists every node that holds the write durably; it is
 * ok only when they are at least the slice's min_write_replicas (default
 * R), else -EBUSY ("only N of R copies are durable", retry) — never an ok
 * for fewer copies.
 *
 * A write another node forwarded (a->ver and a->fwd) is stored here and
 * forwarded on to fwd->chain; its answer is ok when it is stored here,
 * `held` naming this node and whoever after it holds it. Refused, nothing
 * stored: -EACCES the sender is no member of the slice; -EXDEV the key's
 * placement does not give this node and no `home` hint names another; or
 * no map is held for the slice; -EINVAL a hint for a node that is no
 * member, a chain naming one, or a version more than max_clock_skew_ms
 * ahead of this node's clock.
 *
 * Versions: a replica keeps the newest; an older one that arrives later
 * is acknowledged with `superseded` and counts as held. A DELETE is a
 * versioned tombstone through the same path.
 */

/*
 * ---- hints (with replication) ----
 *
 * A node that stores a write as a substitute (a forwarded write whose
 * `fwd` names a home) also writes a hint record: the write is acknowledged
 * only when the copy and the hint are both durable. The hint is kept in
 * the store under NODE_REQ_RESERVED (so it survives a crash) and in
 * memory; at most hints_max (a hinted write beyond that is refused, busy).
 *
 * Hand-off (node_req_tick()): when a hint's home is up in the map and not
 * found unreachable (or it asked, see node_req_hint_poke()), the node
 * pushes what it holds for the key (the hinted version or newer; a
 * tombstone as a versioned DELETE) to the home as a forwarded write with
 * an empty chain. On ok (superseded included) it forgets the hints of
 * that key for that home up to that version, and drops its own copy if it
 * is no home of the key, no hint for the key remains and the store still
 * holds the version delivered: an unversioned local delete (or the drop
 * of the tombstone), which leaves nothing any other node could see. A
 * failure backs off per home (200 ms doubling to 10 s). At most 4
 * hand-offs run at once.
 *
 * Sync: a node that starts (node_req_new()) or is told to
 * (node_req_hint_sync()) asks every live member of each replicated slice
 * it belongs to for NODE-STAT every 250 ms, until a round in which no
 * member reached reports a `hints_for_<its id>` counter and the members
 * reached are at least as many as those not (a dead member does not hold
 * the sync; a node cut off from its peers keeps syncing), or
 * hint_sync_timeout, counted while the node reaches its broker
 * (node_req_connected()) and no member reports hints for it (hand-offs
 * take as long as they take: no stale copy is served meanwhile). Until then GET, STAT and LIST on a replicated
 * slice answer -EBUSY (clients read another replica); writes are served.
 *
 * Tombstone GC: a tombstone older than tombstone_gc_after (by its
 * version's clock) is dropped (node_store_tomb_drop()) once every other
 * home of the key, asked with STAT, answers that it holds that tombstone
 * or something newer, no hint for the key waits here, and no home is
 * down. The index is walked in steps of 256 entries per tick.
 */

/* Housekeeping: hand-offs, the sync, tombstone GC. Call every ~100 ms. */
void node_req_tick(struct node_req *rq, uint64_t now_mono_ms);

/* Start no more hand-offs (before the loop is drained at shutdown). */
void node_req_stop(struct node_req *rq);

/* Take back the hints addressed to this node again, reads of replicated
 * slices busy until done (after the node was cut off for a while). */
void node_req_hint_sync(struct node_req *rq);

/* Whether the control plane reaches a broker (default: yes). While it
 * does not, hint_sync_timeout does not run: a node cut off from the
 * network syncs until it reaches its peers again. */
void node_req_connected(struct node_req *rq, bool connected);

/* Whether the sync runs (reads of replicated slices are busy). */
bool node_req_syncing(const struct node_req *rq);

/* Node `id` asked for this node's counters: if it has hints here, hand
 * them off now, whatever the map says of it. */
void node_req_hint_poke(struct node_req *rq, const uint8_t id[OVL_ID_BYTES]);

struct node_req_hint_stats {
	uint64_t waiting, handoffs, handoff_failures, handoff_busy, copies_dropped;
	bool syncing;
	uint64_t sync_timeouts, tombstones_dropped;
};

void node_req_hint_stats(const struct node_req *rq, struct node_req_hint_stats *st);

/*
 * ---- repair and anti-entropy (with replication; docs/PROTOCOL.md 7.13) ----
 *
 * Digest: h(K) = the first 8 bytes (big-endian) of BLAKE2b-256 of slice, a
 * zero byte, key, hlc (8, BE), node (8, BE), type ('P' object, 'D'
 * tombstone); bucket(K) = the first byte of BLAKE2b-128 of slice, a zero
 * byte, key. A DIGEST from node X (a->peer_id, a member) is computed over
 * every key (objects and tombstones, no reserved key) that both this node
 * and X are homes of under this node's map: per bucket (buckets = 256) or
 * for all of them (0), each a pair (count u64 BE, xor of h u64 BE). It is
 * computed by walking the index in steps from node_req_tick() (a few
 * thousand keys, at most ~10 ms per tick), so `done` runs from the loop,
 * maybe several ticks later, with the payload in r->data/r->len.
 *
 * A LIST with has_bucket (from a member node) gives only the keys of
 * that bucket shared with it, with versions and tombstones.
 *
 * Passes: each replicated slice is compared with every other member
 * that is up: roots, then buckets, then the differing buckets' keys (LIST
 * with bucket). For a key this node holds newer than member T, where it is
 * the pusher (the first `up` home of the key, in placement order, other
 * than T), it writes a repair hint ('R' object / 'T' tombstone, req_hint.c):
 * the hand-off delivers it as a forwarded write with `repair`. Then keys
 * this node holds but is no home of (foreign copies) are STATed at every
 * home: a repair hint for each home that lacks the version, and the local
 * copy is dropped (as the hand-off does) once every home holds it or newer.
 * A pass starts every antientropy_interval (+-20 %), at once when a map
 * change makes a member `out` or adds one, and on HEAL; after a pass that
 * found differences, another follows within seconds once this node's
 * repair hints for the slice are delivered. Its progress is kept in the
 * store under reserved key 0xff*8 'J' slice (FORMAT.md 7.2), rewritten at
 * most every second: a node that restarts resumes at its cursor when the
 * slice's membership is unchanged. A pass pauses at its cursor while the
 * hint table is more than 3/4 full.
 */

/* Heal counters of the slice (heal_*, ae_*) into c[0..max): how many. */
unsigned node_req_heal_counters(const struct node_req *rq, const char *slice,
				struct ovl_wire_counter *c, unsigned max);

/*
 * ---- background work: pacing, inbound repair, scrub ----
 *
 * Every background hand-off (hints and repair hints alike) moves its bytes
 * through one token bucket (repair_rate bytes/s, 0: unlimited) in pieces
 * of at most a tenth of a second's bytes (16..256 KiB), and only in the
 * first repair_duty % of each second; except the hints (not repair hints)
 * of a home that asked for them within 15 s (it answers busy until it
 * holds them): their bytes are not paced. Client first: while 16 or more
 * client requests are in flight in this layer (REQ_PACE_CLIENT_BUSY) no
 * new hand-off starts, except one at a time once the node has been that
 * busy for 30 s (slowed, never starved). Hand-offs under way keep going.
 *
 * Pause: while this drive is nearly full (node_store_stats() nearly_full)
 * inbound repair streams are refused and repair_paused is 1 (reason 1);
 * a home that answers no-space gets no hand-off for 5 s at a time, and
 * repair_paused is 2 (reason 2) until a hand-off to it succeeds again.
 *
 * Scrub: a whole-drive pass (node_store_scrub_keys()) every scrub_interval
 * ±20 %, in slices of scrub_budget bytes per tick, only while the store is
 * idle, no client request is in flight and the duty cycle is open. A key
 * found damaged (by scrub, or by a GET or STAT that answered -EIO) on a
 * replicated slice is fetched again from another home (STAT, then GETs of
 * at most 256 KiB, its version checked on each), streamed into the store
 * and committed at that version only if its crc32c matches the source's
 * (node_store_stream_finish_ver(): never wrong bytes, never an older
 * version over a newer one). A key no home can give back counts in
 * heal_objects_lost.
 */

/*
 * ---- chunk GC (with replication; large objects, docs/PROTOCOL.md) ----
 *
 * Every chunk_gc_interval (+-20 %) a pass walks this node's own intent
 * keys (fe x8 'G' id, 25 bytes: a prefix walk of the index, never a scan
 * of every key). Keys carry no slice, so an intent is judged in every
 * slice this node is a member of (at most 16; replicated slices first),
 * and settled by this node when it is the key's first live home in at
 * least one of them, once older than chunk_gc_after: age from the later
 * of its record's version (hlc >> 16, the head's clock) and the unix ms
 * in its value (the writer's clock). A value that does not parse (wrong
 * magic, short, no key, a key over 1024 bytes) is deleted (a warning,
 * gc_intents_bad). Else the object key K it names is read in each slice
 * (its first 64 bytes, with its stored size) from K's homes in placement
 * order, this node locally, and, when every home says plain not-found,
 * from the next R + 2 members as well (a rebalance under way). A slice's
 * verdict: live when every answer is a valid manifest head of the
 * intent's id; not live when every home answered and none holds one (not
 * found, a tombstone, a plain object, a manifest of another id, a damaged
 * one of another id); damaged when one holds a manifest of the intent's
 * id that does not validate; doubt otherwise (a home down or not
 * answering, answers that disagree). Then:
 *   - live in any slice: only the intent is deleted (gc_intents_live);
 *   - a damaged manifest of the id: nothing (gc_errors, a warning);
 *   - doubt anywhere: nothing this pass (gc_intents_deferred);
 *   - not live in every slice, and every member of every slice (not
 *     `out`) live: in each slice, every chunk of the id (fe x8 'C' id,
 *     listed with LIST on each member) is deleted through its head (this
 *     node, or a DELETE to the chunk's first live home over the peer
 *     client: a replicated, versioned delete) on a slice of R > 1, or on
 *     the member that listed it on a plain slice (its plain path), then
 *     the intent through each slice this node is a home of it in
 *     (gc_intents_collected, gc_chunks_deleted). A chunk that cannot be
 *     deleted (gc_errors) keeps the intent for a later pass.
 * One request at a time, each only when background work may start
 * (req_pace_may_start()). A pass that did anything logs one line.
 *
 * A plain DELETE, or a LIST without a bucket, from a node certificate
 * (a->peer_id without ver/fwd) is allowed only for a key (prefix) that
 * begins with fe x8 and from a member of the slice (-EACCES otherwise).
 */

/* Set the background rate (bytes/s; 0: unlimited; -1: unchanged) and duty
 * cycle (1..100 percent; -1: unchanged) now. 0, or -EINVAL (a rate below
 * NODE_REQ_REPAIR_RATE_MIN, a duty out of range: nothing changed). */
int node_req_repair_set(struct node_req *rq, int64_t rate_bps, int duty_pct);

/* An inbound repair stream (a forwarded write with the `repair` flag)
 * may be received: true, and the caller calls node_req_repair_release()
 * once it is answered; false: answer busy (repair_inbound_max reached, or
 * this drive nearly full). */
bool node_req_repair_admit(struct node_req *rq);
void node_req_repair_release(struct node_req *rq);

enum { NODE_REQ_PAUSED_NONE, NODE_REQ_PAUSED_DRIVE_FULL, NODE_REQ_PAUSED_TARGET_FULL };
enum { NODE_REQ_EV_DEBUG, NODE_REQ_EV_INFO, NODE_REQ_EV_WARN, NODE_REQ_EV_ERROR };

/* The next event for the node's log (the request layer never logs):
 * true, with its level and text copied into buf; false when none waits. */
bool node_req_event_next(struct node_req *rq, int *level, char *buf, size_t len);

/*
 * ---- node state ----
 *
 * The counters a NODE-STAT answers with (objects, bytes, capacity...), into
 * c[0..max): how many were written. slice (may be NULL): the request's
 * slice, whose heal counters are added.
 */
/* Objects of this node's replicated slices below full redundancy as far
 * as it knows: heal_objects_degraded of every slice plus
 * repair_objects_left (0: its slices are whole). */
uint64_t node_req_degraded(const struct node_req *rq);

unsigned node_req_counters(const struct node_req *rq, const char *slice,
			   struct ovl_wire_counter *c, unsigned max);

#endif
