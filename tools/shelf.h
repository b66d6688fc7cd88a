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
 * A struct shelf is used by one thread at a time.
 */
#ifndef SHELF_H
#define SHELF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHELF_TIMEOUT_MS_DEFAULT 5000
#define SHELF_DATA_PORT_DEFAULT 7480 /* a node's data-plane port when none is given */
#define SHELF_NODES_MAX 32           /* node addresses given with shelf_add_node() */
#define SHELF_COUNTERS_MAX 64        /* NODE_STAT counters (OVL_WIRE_COUNTERS_MAX) */
#define SHELF_ERR_BYTES 1024         /* an err buffer of this size holds every message whole */

struct shelf;

struct shelf_objstat {
	uint64_t size;
	uint32_t crc;  /* crc32c of the whole object */
	uint64_t seq;  /* the node's sequence number of the object */
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

/* Bytes [off, off+len) of the object (len UINT64_MAX: to the end) into a
 * malloc'd *data (the caller frees); *total (may be NULL) is its size. */
int shelf_get(struct shelf *s, const char *slice, const void *key, size_t klen, uint64_t off,
	      uint64_t len, void **data, size_t *dlen, uint64_t *total, char *err, size_t errlen);

int shelf_delete(struct shelf *s, const char *slice, const void *key, size_t klen, char *err,
		 size_t errlen);

int shelf_stat(struct shelf *s, const char *slice, const void *key, size_t klen,
	       struct shelf_objstat *st, char *err, size_t errlen);

/*
 * Keys of the slice that start with prefix and sort after `after`, in key
 * order across every node, at most `limit` (0: 1000). cb returns non-zero
 * to stop. Returns the number of keys given, or -errno.
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

#endif
