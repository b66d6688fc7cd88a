/*
 * libshelf: the shelf client library (libshelf.a, libshelf.so).
 *
 * A client holds an identity and a client certificate issued by the broker
 * (`shelf-broker client`, a directory with id.key, client.cert, ca.pub,
 * broker.cert and broker.pub). It reads a slice's map from the broker,
 * computes placement itself (docs/PROTOCOL.md section 8) and talks to the
 * nodes directly over the data plane (section 7), verifying each node's
 * certificate and every payload's crc32c end to end. A node that answers
 * stale-map makes the client fetch the map again (from the broker, else
 * asking that node first) and retry once; the caller sees stale-map only
 * when the retry gets it too.
 *
 * Maps carry the broker's signature (section 6.4), checked against the
 * broker certificate of the client directory whatever their source: the
 * broker, the cache (client_dir/cache), or a node (data-plane MAP, 7.7).
 * When no broker answers (or none is given), the client asks the nodes given
 * with shelf_add_node() and the members of its cached map, and keeps the
 * newest valid map. On a slice whose map says `encrypt`, PUT payloads are
 * sent as AEAD chunks and GET and LIST payloads must come back encrypted
 * (section 7.6).
 *
 * Every call returns 0 or a negative errno and writes what failed into
 * err, naming the key and the node (`get 'k': node fd12::7 did not answer
 * within 5000 ms`; an err of SHELF_ERR_BYTES holds it whole). -ENOENT: no
 * such key; -EHOSTUNREACH: the node holding the key is down or unreachable; -EACCES: refused; -EIO: checksum mismatch.
 * A node's answer is named by its status (`node fd12::7: checksum-mismatch:
 * ...`).
 *
 * Replicas (a slice whose map says `replicas` R > 1, docs/PROTOCOL.md 8.2):
 * reads (get, stat) try the key's replicas in order: the R homes of
 * placement that are live (not `down` or `out` in the map, and not
 * remembered as unreachable), those in the client's chassis first when it
 * knows it (shelf_set_chassis()), then placement order; then the other
 * live members (a substitute may hold a hinted copy); last the homes and
 * members that are down or were unreachable. A read falls over to the next
 * on a refused connection, a node that does not answer within the connect
 * timeout, checksum-mismatch (the bytes are never returned; the warn
 * callback names the node and the counters count it), busy, and
 * not-found. A not-found that names a tombstone (the key was deleted at a
 * version) is remembered: an object found further on is returned only when
 * it is newer than every tombstone seen. Other members are asked only when
 * some home gave no answer. A node that refused or timed out is remembered
 * as unreachable for a while (shelf_set_unreachable_ms(); kept in
 * client_dir/cache/unreachable, so the next process knows too) and tried
 * last. put and rm go to the first live member in placement order (the
 * head, which forwards to the other replicas) and fall over to the next one
 * when it refuses or does not answer (only when R > 1); a head that answers
 * busy (say, fewer copies durable than the slice requires because the map
 * just changed) is asked again with a fresh map, at most
 * SHELF_WRITE_BUSY_RETRIES times, after 100, 200, 400 ms, while the timeout
 * allows. A read that found no copy while some replica answered busy (it
 * is taking its hints back) asks again the same way.
 *
 * A struct shelf is used by one thread at a time.
 */
#ifndef SHELF_H
#define SHELF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SHELF_TIMEOUT_MS_DEFAULT 5000
#define SHELF_WRITE_BUSY_RETRIES 3 /* a replicated write (or a read) answered busy is sent again */
#define SHELF_DATA_PORT_DEFAULT 7480 /* a node's data-plane port when none is given */
#define SHELF_NODES_MAX 32           /* node addresses given with shelf_add_node() */
#define SHELF_COUNTERS_MAX 128       /* NODE_STAT counters (OVL_WIRE_COUNTERS_MAX) */
#define SHELF_ERR_BYTES 1024         /* an err buffer of this size holds every message whole */
#define SHELF_CONNECT_TIMEOUT_MS_DEFAULT 1000 /* connect + handshake with one replica */
#define SHELF_UNREACHABLE_MS_DEFAULT 5000     /* how long a node that failed is tried last */

struct shelf;

/* An object's version (docs/PROTOCOL.md 7.7): ordered by hlc, then node;
 * {0, 0} for an object written without one. */
struct shelf_version {
	uint64_t hlc;   /* hybrid logical clock: (unix ms << 16) | counter */
	uint64_t node;  /* the first 8 bytes of the id of the node that assigned it */
};

struct shelf_objstat {
	uint64_t size;
	uint32_t crc;  /* crc32c of the whole object */
	uint64_t seq;  /* the node's sequence number of the object */
	struct shelf_version ver; /* the object's version */
};

/*
 * Open a client from its directory, talking to broker `broker`
 * (tcp://[addr]:port; NULL or "": no broker, maps come from the cache and
 * the nodes). Nothing is contacted until the first call.
 */
int shelf_open(struct shelf **out, const char *client_dir, const char *broker, char *err,
	       size_t errlen);

/*
 * Add a node to ask for slice maps when no broker answers: "ADDR" (IPv6,
 * port SHELF_DATA_PORT_DEFAULT) or "[ADDR]:PORT". 0, -EINVAL (not an
 * address), -ENOSPC (more than SHELF_NODES_MAX).
 */
int shelf_add_node(struct shelf *s, const char *node, char *err, size_t errlen);

/* Close connections, free, NULL *s. Accepts NULL. */
void shelf_close(struct shelf **s);

/*
 * The timeout of each call as a whole (default SHELF_TIMEOUT_MS_DEFAULT):
 * fetching the map, connecting, the handshake, the request and any retry
 * all end within it. When nodes can be asked for the map, the broker gets
 * at most half of it; shelf_list() gives each node an even share of what
 * is left.
 */
void shelf_set_timeout(struct shelf *s, int timeout_ms);

/*
 * The time one node gets to accept a connection and finish the handshake
 * when another replica could answer instead (default
 * SHELF_CONNECT_TIMEOUT_MS_DEFAULT; the last node tried gets whatever is
 * left of the call's timeout). ms <= 0: the default.
 */
void shelf_set_connect_timeout(struct shelf *s, int ms);

/*
 * How long a node that refused a connection or did not answer is tried
 * last (default SHELF_UNREACHABLE_MS_DEFAULT); 0: not remembered.
 */
void shelf_set_unreachable_ms(struct shelf *s, int ms);

/*
 * The client's failure domain: reads try the replicas in this chassis
 * first. "CHASSIS" or "SITE/CHASSIS" (then the site must match too); NULL
 * or "": unknown (placement order). 0 or -EINVAL (too long).
 */
int shelf_set_chassis(struct shelf *s, const char *where, char *err, size_t errlen);

/* What the client met on the way, since shelf_open(). */
struct shelf_counters {
	uint64_t failovers;        /* reads and writes answered by another node than the first tried */
	uint64_t unreachable;      /* nodes that refused a connection or did not answer */
	uint64_t checksum_errors;  /* replicas that answered checksum-mismatch, or sent bytes
				    * that failed their crc in transit (never returned) */
	uint64_t busy;             /* busy answers */
	uint64_t stale_skipped;    /* objects found older than a tombstone seen on another replica */
};
void shelf_get_counters(const struct shelf *s, struct shelf_counters *out);

/*
 * Fleet updates (`shelf fleet publish`): store block i of the release named
 * id (the SHA-256 of its metadata envelope) as one plain object under its
 * reserved key, fe x8 'F' id i (docs/PROTOCOL.md, fleet updates), in slice.
 * The caller has verified the block against the release metadata. 0 or
 * -errno with err, as shelf_put.
 */
int shelf_fleet_block_put(struct shelf *s, const char *slice, const uint8_t id[32], uint32_t i,
			  const void *data, size_t len, char *err, size_t errlen);

/*
 * Progress of payload transfers: cb(arg, done, total) is called as a PUT's
 * payload is sent and a GET's payload is received, at most every 256 KiB
 * and once at the end (done == total). NULL cb: no calls (the default).
 */
typedef void (*shelf_progress_cb)(void *arg, uint64_t done, uint64_t total);
void shelf_set_progress(struct shelf *s, shelf_progress_cb cb, void *arg);

/*
 * Warnings that are not a call's failure: cb(arg, text) is called, for
 * example, when a map is refused because it drops members of the map held
 * without a record of their removal (docs/PROTOCOL.md 6.5); the client then
 * keeps the map it holds. The text is valid during the call. NULL cb: no
 * calls (the default).
 */
typedef void (*shelf_warn_cb)(void *arg, const char *text);
void shelf_set_warn(struct shelf *s, shelf_warn_cb cb, void *arg);

int shelf_put(struct shelf *s, const char *slice, const void *key, size_t klen, const void *data,
	      size_t len, char *err, size_t errlen);

/* What the last successful put or rm was told (a node that predates
 * replication gives no `held`: has_held false). */
struct shelf_write_info {
	unsigned replicas;         /* R of the slice's map */
	bool has_held;
	unsigned held;             /* nodes that hold the write durably */
	unsigned homes;            /* of which at their proper home */
	bool superseded;           /* a newer version was there already */
	bool has_ver;
	struct shelf_version ver;  /* the write's version */
	char node[46];             /* the node that answered (the head) */
};
/* 0, or -ENOENT when no put or rm succeeded yet. */
int shelf_last_write(const struct shelf *s, struct shelf_write_info *out);

/* Bytes [off, off+len) of the object (len UINT64_MAX: to the end) into a
 * malloc'd *data (the caller frees); *total (may be NULL) is its size. */
int shelf_get(struct shelf *s, const char *slice, const void *key, size_t klen, uint64_t off,
	      uint64_t len, void **data, size_t *dlen, uint64_t *total, char *err, size_t errlen);

int shelf_delete(struct shelf *s, const char *slice, const void *key, size_t klen, char *err,
		 size_t errlen);

/*
 * Large objects and streaming (docs/PROTOCOL.md, "Large objects").
 *
 * An object larger than the slice's chunk size (its map's chunk_size,
 * default 16 MiB: shelf_map_info.chunk_size), or one whose bytes begin
 * with the manifest magic "\x89shelf-manifest\n", is stored as chunks (each
 * under its own key, placed like any key) and a manifest at its key,
 * written last: a reader sees the old object or the whole new one, never a
 * part. shelf_put, shelf_get, shelf_stat, shelf_delete and shelf_list work
 * on large objects as on small ones: get with a range crosses chunk
 * boundaries at any offset; stat gives the object's size and crc (seq and
 * ver: the manifest's); list gives the key once and never a chunk. Every
 * chunk read is checked against the manifest's crc (a mismatch is -EIO, a
 * chunk not found -ENOENT, both naming the chunk: `get 'K': chunk 7 of 64
 * (key fe..): not found`), and a whole read against the object's crc; a
 * damaged manifest is -EBADMSG (`get 'K': damaged manifest: WHY`), checked
 * before anything is allocated by what it says. Replaced and deleted
 * objects' chunks are left for the nodes to collect after a delay (the
 * writer leaves an intent key naming them), so a reader that started on
 * the old object can finish.
 *
 * Keys that begin with 8 bytes 0xfe are libshelf's own (chunks, intents):
 * put, get, stat, delete and the streaming calls refuse them (-EINVAL);
 * list skips them. shelf_locate and shelf_stat_replicas accept them (to
 * find a chunk's nodes).
 *
 * Each chunk's request gets the timeout of a call (shelf_set_timeout()) on
 * its own, so a transfer of any size can finish. The progress callback
 * counts the whole object's bytes. The whole-buffer calls keep the object
 * in the caller's memory; the streaming calls hold at most the chunks in
 * flight (shelf_set_inflight()), whatever the object's size, plus 16 bytes
 * per chunk for the manifest being written.
 */

/* Read callback: up to len bytes into buf; returns the bytes read, 0 at the
 * end, or -errno (the PUT fails with it). */
typedef ssize_t (*shelf_read_fn)(void *arg, void *buf, size_t len);
/* Write callback: the next len bytes of the object, in order; 0 or -errno
 * (the GET stops with it). */
typedef int (*shelf_write_fn)(void *arg, const void *buf, size_t len);

#define SHELF_SIZE_UNKNOWN UINT64_MAX
#define SHELF_CHUNK_SIZE_DEFAULT (16u << 20) /* a map without chunk_size */

/*
 * PUT from fd, from its current offset to its end (size: fstat when a
 * regular file, else read to EOF). A regular file that ends before its
 * fstat size is -EIO and stores nothing. 0 or -errno (as shelf_put; read
 * errors of fd are returned as they are, named in err).
 */
int shelf_put_fd(struct shelf *s, const char *slice, const void *key, size_t klen, int fd,
		 char *err, size_t errlen);
/*
 * PUT from a callback; size is the object's size, or SHELF_SIZE_UNKNOWN
 * (then the source is read to its end). With a known size, a source that
 * ends early is -EIO; bytes past size are not read. Nothing is visible
 * under key until the whole object is stored.
 */
int shelf_put_stream(struct shelf *s, const char *slice, const void *key, size_t klen,
		     uint64_t size, shelf_read_fn rd, void *arg, char *err, size_t errlen);
/*
 * GET of [off, off+len) (len UINT64_MAX: to the end; a range past the end
 * is cut at it) written to fd (write(), in order), or given to a callback;
 * *total (may be NULL) the object's size. Every byte given was checked
 * (each chunk against its crc before any of it is given); on an error the
 * bytes given before it are a correct prefix of the range.
 */
int shelf_get_fd(struct shelf *s, const char *slice, const void *key, size_t klen,
		 uint64_t off, uint64_t len, int fd, uint64_t *total, char *err, size_t errlen);
int shelf_get_stream(struct shelf *s, const char *slice, const void *key, size_t klen,
		     uint64_t off, uint64_t len, shelf_write_fn wr, void *arg, uint64_t *total,
		     char *err, size_t errlen);
/*
 * Chunks in flight for one large transfer (1..64; others are clamped).
 * Unset, it is 4, but at most 48 MiB of chunk buffers (3 chunks of the
 * default 16 MiB), so a client stays within 64 MiB. The chunks move through the asynchronous engine below (each
 * to its own key's nodes, pipelined on one connection per node, from the
 * caller's thread), so a streaming call holds at most this many chunk
 * buffers (the slice's chunk size each) whatever the object's size; a GET
 * still gives its bytes in order, each chunk checked against the manifest
 * before any of it is given. Writes: every chunk is stored before the
 * manifest (intents first, manifest last). Called from inside an
 * asynchronous callback (where the engine cannot run), a large transfer
 * moves one chunk at a time by the blocking calls. Operations of the
 * caller's own started with the asynchronous calls progress (and their
 * callbacks run) while a large transfer runs.
 */
void shelf_set_inflight(struct shelf *s, unsigned chunks);

/* STAT through the read path (the first replica that has it, as get). */
int shelf_stat(struct shelf *s, const char *slice, const void *key, size_t klen,
	       struct shelf_objstat *st, char *err, size_t errlen);

/*
 * Keys of the slice that start with prefix and sort after `after`, in key
 * order across every node, at most `limit` (0: 1000). Each key once, at its
 * newest version across the replicas; a key whose newest version is a
 * tombstone is not given. cb returns non-zero to stop. Returns the number
 * of keys given, or -errno.
 */
typedef int (*shelf_list_cb)(void *arg, const void *key, size_t klen);
int shelf_list(struct shelf *s, const char *slice, const void *prefix, size_t plen,
	       const void *after, size_t alen, unsigned limit, shelf_list_cb cb, void *arg,
	       char *err, size_t errlen);

/*
 * The same, but a member that does not answer (unreachable, or no answer
 * within the timeout) is skipped instead of failing the call:
 * missing(arg, node, why) names it (its address, text, and the reason; both
 * valid during the call), and the keys of the others are given. Without
 * missing (NULL) it is shelf_list().
 */
typedef void (*shelf_missing_cb)(void *arg, const char *node, const char *why);
int shelf_list_partial(struct shelf *s, const char *slice, const void *prefix, size_t plen,
		       const void *after, size_t alen, unsigned limit, shelf_list_cb cb, void *arg,
		       shelf_missing_cb missing, void *missing_arg, char *err, size_t errlen);

/* One replica's answer to STAT (shelf_stat_replicas()). */
struct shelf_replica {
	uint8_t id[32];         /* node id */
	char addr[46];          /* slice address, text */
	uint16_t port;
	bool home;              /* one of the key's R homes by placement */
	/*
	 * "home" (a home holds it), "hinted" (another member holds a copy),
	 * "missing" (a home answered not-found), "deleted" (the key is a
	 * tombstone there, at ver), "damaged" (checksum-mismatch),
	 * "unreachable", "busy", "error" (why says it). Static strings.
	 */
	const char *state;
	bool has_ver;           /* ver is given (a node that predates versions gives none) */
	struct shelf_version ver;
	uint64_t size, seq;     /* home, hinted: as STAT answers */
	uint32_t crc;
	char why[160];          /* unreachable, busy, error: the reason */
};

/*
 * STAT of key on every member that may hold it: the R homes (always listed,
 * in placement order) and every other member that is not `out` (listed
 * when it holds the key, a tombstone of it, a damaged copy, or did not
 * answer). *out is malloc'd (the caller frees), *n its entries. 0 or
 * -errno (no map, no member).
 */
int shelf_stat_replicas(struct shelf *s, const char *slice, const void *key, size_t klen,
			struct shelf_replica **out, unsigned *n, char *err, size_t errlen);

/* Where key lives: the node's address (text) and data port. */
int shelf_locate(struct shelf *s, const char *slice, const void *key, size_t klen, char *addr,
		 size_t addrlen, uint16_t *port, char *err, size_t errlen);

/* A slice map as the client holds it. */
struct shelf_member {
	uint8_t id[32];        /* node id */
	char addr[46];         /* slice address, text */
	uint16_t port;         /* data-plane port */
	const char *state;     /* "up", "down", "out" or "unknown" (static strings) */
	uint64_t capacity;     /* bytes */
	char site[64], chassis[64], slot[32];
};

struct shelf_map_info {
	uint64_t epoch;
	uint32_t replicas;
	bool encrypt;          /* payloads are encrypted on this slice */
	uint32_t n_members;
	char source[96];       /* "broker tcp://...", "node ADDR" or "cache" */
	uint32_t chunk_size;   /* bytes: objects larger are stored as chunks (SHELF_CHUNK_*) */
};

/*
 * Fetch the slice's map (broker, else nodes and cache, as for every call)
 * and describe it: *info and a malloc'd array *members of info->n_members
 * (the caller frees; may be NULL when there are none).
 */
int shelf_map(struct shelf *s, const char *slice, struct shelf_map_info *info,
	      struct shelf_member **members, char *err, size_t errlen);

/* One NODE_STAT counter (PROTOCOL.md 7.7). */
struct shelf_counter {
	char name[64];
	uint64_t value;
};

/*
 * NODE_STAT of the node at addr (text) and port, asked in `slice`: up to
 * cap counters into out. Returns their number or -errno.
 */
int shelf_node_stat(struct shelf *s, const char *slice, const char *addr, uint16_t port,
		    struct shelf_counter *out, unsigned cap, char *err, size_t errlen);

/* What HEAL asks of a node (docs/PROTOCOL.md 7.13). */
struct shelf_heal_opts {
	bool check_only;   /* compare with the other homes and count; repair nothing */
	bool has_rate;     /* set the node's repair rate limit to rate, now */
	uint64_t rate;     /* bytes/s; 0: unlimited */
	bool has_duty;     /* set the node's duty cycle for background work, now */
	unsigned duty;     /* percent, 1..100 */
};

/*
 * HEAL to the node at addr (text) and port, for `slice`: the node starts
 * an anti-entropy and repair pass of the slice now (o->check_only: it
 * compares and counts the differences, and creates no repair work), after
 * setting the rate and duty given. o may be NULL (a full pass, nothing
 * set). Up to cap of the heal counters it answers with (the names of
 * NODE_STAT's: heal_*, repair_*, ae_*) into out. Returns their number, or
 * -EINVAL (no slice, not an IPv6 address, duty not 1..100), -EACCES (the
 * certificate may not ask), -EPROTO (a node that predates HEAL), or the
 * errors of shelf_node_stat().
 */
int shelf_heal(struct shelf *s, const char *slice, const char *addr, uint16_t port,
	       const struct shelf_heal_opts *o, struct shelf_counter *out, unsigned cap, char *err,
	       size_t errlen);

/*
 * CRC-32C (Castagnoli) of buf, continuing from crc (0 to start): the
 * checksum shelf_stat() reports, for callers that check bytes they hold
 * (the Python package's stage). Hardware-accelerated where the CPU has it.
 */
uint32_t shelf_crc32c(uint32_t crc, const void *buf, size_t len);

/* free() a buffer libshelf malloc'd (shelf_get's *data, ...), for callers
 * that cannot reach the C library's free() themselves (ctypes). Accepts NULL. */
void shelf_free(void *p);

/*
 * ---- Many operations in flight, from one thread --------------------------
 *
 * shelf_get_async(), shelf_stat_async(), shelf_put_async() and
 * shelf_delete_async() queue an operation and return at once; shelf_run()
 * carries them out and calls each one's done callback when it completes.
 * Each node gets one nonblocking connection on which every request to it
 * is pipelined (sent without waiting for the answers before), and
 * shelf_run() waits on all of them with poll(), so many operations across
 * many nodes progress together from the caller's one thread.
 *
 * Each operation follows the rules of its blocking call (see "Replicas"
 * above): the same replica order, fail-over, tombstone rule, busy answers
 * asked again after 100, 200, 400 ms, stale-map answered with a fresh map,
 * remembered unreachable nodes and counters. Differences: the slice's map
 * is fetched (when needed) by a blocking fetch inside shelf_run(); a
 * node's connect and handshake get the connect timeout (shelf_set_connect_timeout())
 * even for the last replica; there is no progress callback.
 *
 * Time: an operation's timeout (shelf_set_timeout()) starts when it leaves
 * the queue (when it is among the max in flight), not when it is started.
 * When it runs out while a node has sent nothing since the operation's
 * request, that node is taken as gone (its connection closes, the other
 * operations on it go to their next replica, it is remembered as
 * unreachable), as with a blocking call; when the node is alive but slow
 * the operation alone gives up on it. Either way the operation then ends
 * with its most telling failure so far (as a blocking read's; a write's:
 * -EHOSTUNREACH).
 *
 * Ownership: the library owns every struct shelf_op; it is valid only
 * during its callback. A PUT's data is borrowed from shelf_put_async()
 * until its callback is called (the callback may reuse or free it), or
 * shelf_close(); keys and slice names are copied at the start.
 *
 * Threading: everything here runs on the thread that calls shelf_run(),
 * which must be the one thread using s. Callbacks run inside shelf_run()
 * (never inside the start calls). A callback may start more operations
 * (they run in the same shelf_run()), and may call the blocking calls (at
 * the cost of stalling every operation meanwhile); it must not call
 * shelf_run() (-EBUSY) nor shelf_close().
 *
 * Memory: at most max in flight operations hold a request and its answer
 * (shelf_set_max_inflight(), default SHELF_MAX_INFLIGHT_DEFAULT); those
 * started beyond wait in a queue that holds each one's key (about 2 KiB
 * with it), so a caller that starts millions should start them in steps
 * (shelf_get_batch() does).
 *
 * Objects are at most 64 MiB here (a whole object, or a range of one).
 * A GET of a large object (its key holds a manifest, see "Large objects")
 * reads its chunks: the parts of the range, all at once as operations of
 * their own (each with the read path's fail-over and its crc checked
 * against the manifest), assembled into the one buffer; so an object, or
 * a range, of up to 64 MiB works here whatever its chunks. A larger range
 * fails with -EFBIG ("get 'K': N bytes, more than the 64 MiB an
 * asynchronous GET holds: read it with shelf_get_fd() or
 * shelf_get_stream()"). A ranged GET of an object whose stored size a
 * manifest could have reads the whole stored object first, to tell.
 * STAT, PUT and DELETE work on the stored object as they are (a STAT
 * reports a manifest's own size; use shelf_stat() for large objects; a
 * PUT is at most 64 MiB and is stored plain: use shelf_put() or the
 * streaming calls for large ones).
 */
#define SHELF_MAX_INFLIGHT_DEFAULT 64
#define SHELF_MAX_INFLIGHT_MAX 4096

struct shelf_op;   /* one operation: the library's, valid during its callback */

/*
 * An operation completed: res is 0 or a negative errno as its blocking call
 * returns (-ENOENT not found, -EHOSTUNREACH no node answered in time, -EIO
 * every copy damaged, ...) with shelf_op_error() the words. Runs inside
 * shelf_run(). The op is freed when the callback returns.
 */
typedef void (*shelf_done_fn)(void *arg, int res, const struct shelf_op *op);

/*
 * Queue a GET of bytes [off, off+len) (len UINT64_MAX: to the end; off 0
 * and len UINT64_MAX: the whole object). The bytes arrive in a malloc'd
 * buffer that the callback reads with shelf_op_data() or keeps with
 * shelf_op_take(). Returns 0 (done will be called exactly once, inside a
 * later shelf_run()), or at once, without a callback: -EINVAL (no slice, a
 * slice name over 63 bytes, no callback, a key of 0 or more than 1024
 * bytes, or one that begins with the reserved prefix fe x 8), -ENOMEM.
 */
int shelf_get_async(struct shelf *s, const char *slice, const void *key, size_t klen,
		    uint64_t off, uint64_t len, shelf_done_fn done, void *arg);
/* Queue a STAT (as shelf_stat()): shelf_op_stat() in the callback. Returns as shelf_get_async(). */
int shelf_stat_async(struct shelf *s, const char *slice, const void *key, size_t klen,
		     shelf_done_fn done, void *arg);
/* Queue a PUT of data[0..len) (len at most 64 MiB, else -EINVAL): data is
 * borrowed until the callback is called. shelf_last_write() tells the last
 * write that completed. Returns as shelf_get_async(). */
int shelf_put_async(struct shelf *s, const char *slice, const void *key, size_t klen,
		    const void *data, size_t len, shelf_done_fn done, void *arg);
/* Queue a DELETE (as shelf_delete()). Returns as shelf_get_async(). */
int shelf_delete_async(struct shelf *s, const char *slice, const void *key, size_t klen,
		       shelf_done_fn done, void *arg);

/*
 * Run until every operation started (those the callbacks start included)
 * has completed: 0; or until timeout_ms passed (< 0: no limit): -ETIMEDOUT,
 * and the operations not complete stay for the next shelf_run(). -EBUSY
 * when called from a callback; -ENOMEM.
 */
int shelf_run(struct shelf *s, int timeout_ms);

/* At most n operations in flight (1..SHELF_MAX_INFLIGHT_MAX; 0: the
 * default); more wait in the queue, in the order they were started. */
void shelf_set_max_inflight(struct shelf *s, unsigned n);

/* Operations started and not yet complete (queued or in flight). */
unsigned shelf_pending(const struct shelf *s);

/* In a callback: the key (*klen its length; borrowed). */
const void *shelf_op_key(const struct shelf_op *op, size_t *klen);
/* A GET's bytes (*len; borrowed: valid during the callback), NULL when
 * none (a failed GET, another kind, or taken). */
const void *shelf_op_data(const struct shelf_op *op, size_t *len);
/* Take a GET's bytes: a malloc'd buffer (never NULL for a successful GET,
 * even of 0 bytes) that the caller frees; *len its length. Then
 * shelf_op_data() gives NULL. */
void *shelf_op_take(const struct shelf_op *op, size_t *len);
/* A GET's or STAT's whole object size (a GET of a range too). */
uint64_t shelf_op_total(const struct shelf_op *op);
/* A successful GET's or STAT's object (size, crc, seq, version); NULL else. */
const struct shelf_objstat *shelf_op_stat(const struct shelf_op *op);
/* Why it failed ("get 'KEY': node ...", as the blocking call's err); "" when it did not. */
const char *shelf_op_error(const struct shelf_op *op);

/*
 * ---- Batched reads: shelf_get_batch() ----------------------------------
 *
 * Whole objects of many keys in one call, through the asynchronous engine
 * above (at most max in flight, pipelined on one connection per node).
 * The keys are taken in windows of SHELF_BATCH_WINDOW; within a window
 * they are grouped by the node that will be asked first (the key's first
 * live home, as a read picks it) and each node's keys are sent in key
 * order, the nodes' requests interleaved so that every node works at once.
 * (Key order stands in for the order a node stores them in: the client
 * cannot learn where a key lies on a node's drive without asking.) A node
 * reads up to 16 small GETs of a connection at once, so a batch of small
 * objects goes faster with more in flight than the default 64: `shelf get
 * --batch` sets 256 (about 10 per node of a 24-node 1U).
 *
 * cb(arg, index, res, data, len, why) is called once per item: index is
 * the item's place in items; res 0 with data[0..len) (borrowed: valid
 * during the call), or a negative errno (-ENOENT: not found, -EINVAL: a
 * key the library refuses, see shelf_get_async(); others as shelf_get())
 * with why the words ("get 'KEY': ..."), data NULL. Items are given in
 * the order of items, or as they complete with SHELF_BATCH_UNORDERED. In
 * order, results that completed ahead of the next one to give wait in
 * memory: at most SHELF_BATCH_WINDOW of them (keys are asked only within
 * SHELF_BATCH_WINDOW of the next one to give), and no new key is asked
 * while they hold more than SHELF_BATCH_BUFFER_BYTES; so what waits is at
 * most that plus the objects of the keys already asked.
 *
 * Returns the number of items given with res < 0 (0: every one was there),
 * or a negative errno for the whole call: -EINVAL (no slice, or no cb),
 * -ENOMEM, -ECANCELED (cb returned non-zero: no more items are given),
 * or, with SHELF_BATCH_FAIL_MISSING, the res of the first item given
 * with res < 0 (nothing after it is given); err says why. Items given
 * before a failure stay given. Runs shelf_run(): other asynchronous
 * operations started before progress too (their callbacks run). Must not
 * be called from a callback.
 *
 * Large objects (staging shards): an item whose key holds a manifest is
 * read through its chunks as shelf_get_async() does (the chunks of every
 * such item in flight with the rest), so objects up to 64 MiB each, large
 * or not, come back whole and checked; a larger one is given with res
 * -EFBIG and why naming shelf_get_fd() (read those one at a time with the
 * streaming calls), and does not fail the batch unless
 * SHELF_BATCH_FAIL_MISSING. Memory is then up to max in flight objects of
 * up to 64 MiB, as for plain objects.
 */
#define SHELF_BATCH_UNORDERED 1u        /* give items as they complete */
#define SHELF_BATCH_FAIL_MISSING 2u     /* stop at the first item that fails */
#define SHELF_BATCH_WINDOW 4096
#define SHELF_BATCH_BUFFER_BYTES (256u << 20)

struct shelf_batch_item {
	const void *key;   /* borrowed for the call */
	size_t klen;
};
typedef int (*shelf_batch_fn)(void *arg, size_t index, int res, const void *data, size_t len,
			      const char *why);
int shelf_get_batch(struct shelf *s, const char *slice, const struct shelf_batch_item *items,
		    size_t n, unsigned flags, shelf_batch_fn cb, void *arg, char *err,
		    size_t errlen);

#endif
