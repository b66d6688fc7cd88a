/*
 * node_dp: the node's data plane. The wire protocol of docs/PROTOCOL.md
 * section 7 (ovl_wire) served over node_serve connections from the node's
 * store, all on the node's one io_uring.
 *
 * A connection starts with the handshake (the client's certificate is
 * judged by `peers`); then every request is authenticated, its slice must be
 * one this node serves and the client's certificate lists, its epoch is
 * compared with the node's (an older one gets stale-map and the node's
 * epoch), PUT payloads are checked against their crc32c before anything is
 * stored (payloads above 128 KiB stream into the store as they arrive and
 * become visible only once checked), and slices that require encryption refuse plaintext payloads.
 * Refusals are responses with a status code and a message; only a frame
 * that fails authentication closes the connection.
 */
#ifndef NODE_DP_H
#define NODE_DP_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../loop/loop.h"
#include "../serve/serve.h"
#include "../store/store.h"
#include "overlay.h"

#define NODE_DP_SLICES_MAX 16

struct node_dp;

struct node_dp_opts {
	struct node_loop *loop;
	struct node_store *store;       /* on the same loop */
	const struct ovl_id *id;        /* the node's identity (borrowed) */
	const uint8_t *cert;            /* its certificate (copied) */
	size_t cert_len;
	struct ovl_peers *peers;        /* judges client certificates (borrowed) */
	uint64_t (*now_s)(void *arg);   /* trusted unix time for certificates */
	void *now_arg;
	unsigned max_conns;
	unsigned max_inflight;          /* requests in flight per connection */
	/* PUT payload memory, all connections: small payloads buffered whole,
	 * node_store_stream_bytes() (plus a sealed chunk) per streamed one */
	uint64_t max_payload_bytes;
	uint64_t idle_timeout_ms, frame_timeout_ms;
	/* MAP requests: the encoded, broker-signed `map` message the node holds
	 * for slice into a malloc'd *buf (the caller frees). 0, -ENOENT, -ENOMEM.
	 * NULL: MAP is answered not-found. */
	int (*map_get)(void *arg, const char *slice, uint8_t **buf, size_t *len);
	void *map_arg;
};

struct node_dp_stats {
	uint64_t handshakes, handshake_failures, requests, puts, gets, deletes, stats, lists, maps;
	uint64_t refused_busy, stale_map, wrong_slice, checksum_mismatch, auth_failures;
};

int node_dp_new(struct node_dp **out, const struct node_dp_opts *o, char *err, size_t errlen);

/* Replace the node's certificate (after a renewal) for new connections. */
int node_dp_cert_set(struct node_dp *dp, const uint8_t *cert, size_t len);

/* Serve (or update) a slice: its map epoch and whether payloads must be
 * encrypted. 0, -ENOSPC (too many slices), -EINVAL. */
int node_dp_slice_set(struct node_dp *dp, const char *name, uint64_t epoch, bool encrypt);

/* Listen on addr (port 0: any; written back). */
int node_dp_listen(struct node_dp *dp, struct sockaddr_in6 *addr, char *err, size_t errlen);

/* Timers: call every ~100 ms with a monotonic time in ms. */
void node_dp_tick(struct node_dp *dp, uint64_t now_ms);

void node_dp_stats(const struct node_dp *dp, struct node_dp_stats *st);
void node_dp_serve_stats(const struct node_dp *dp, struct node_serve_stats *st);

/* Close every connection (answers to requests in flight are dropped), free. */
void node_dp_destroy(struct node_dp **dp);

#endif
