/*
 * libshelf: the shelf client library (libshelf.a, libshelf.so).
 *
 * A client holds an identity and a client certificate issued by the broker
 * (`shelf-broker client`, a directory with id.key, client.cert, ca.pub,
 * broker.cert and broker.pub). It reads a slice's map from the broker,
 * computes placement itself (docs/PROTOCOL.md section 8) and talks to the
 * nodes directly over the data plane (section 7), verifying each node's
 * certificate and every payload's crc32c end to end. A node that answers
 * stale-map makes the client fetch the map again and retry once.
 *
 * Every call returns 0 or a negative errno and writes what failed into
 * err, naming the key and the node (`get 'k': node fd12::7 did not answer
 * within 5 s`). -ENOENT: no such key; -EHOSTUNREACH: the node holding the
 * key is down or unreachable; -EACCES: refused; -EIO: checksum mismatch.
 *
 * A struct shelf is used by one thread at a time.
 */
#ifndef SHELF_H
#define SHELF_H

#include <stddef.h>
#include <stdint.h>

#define SHELF_TIMEOUT_MS_DEFAULT 5000

struct shelf;

struct shelf_objstat {
	uint64_t size;
	uint32_t crc;  /* crc32c of the whole object */
	uint64_t seq;  /* the node's sequence number of the object */
};

/*
 * Open a client from its directory, talking to broker `broker`
 * (tcp://[addr]:port). Nothing is contacted until the first call.
 */
int shelf_open(struct shelf **out, const char *client_dir, const char *broker, char *err,
	       size_t errlen);

/* Close connections, free, NULL *s. Accepts NULL. */
void shelf_close(struct shelf **s);

/* Per-operation timeout (default SHELF_TIMEOUT_MS_DEFAULT). */
void shelf_set_timeout(struct shelf *s, int timeout_ms);

/*
 * Progress of payload transfers: cb(arg, done, total) is called as a PUT's
 * payload is sent and a GET's payload is received, at most every 256 KiB
 * and once at the end (done == total). NULL cb: no calls (the default).
 */
typedef void (*shelf_progress_cb)(void *arg, uint64_t done, uint64_t total);
void shelf_set_progress(struct shelf *s, shelf_progress_cb cb, void *arg);

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

/* Where key lives: the node's address (text) and data port. */
int shelf_locate(struct shelf *s, const char *slice, const void *key, size_t klen, char *addr,
		 size_t addrlen, uint16_t *port, char *err, size_t errlen);

#endif
