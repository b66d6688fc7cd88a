/*
 * node_dp: the node's data plane, the session layer. The wire protocol of
 * docs/PROTOCOL.md section 7 (ovl_wire) served over node_serve connections,
 * all on the node's one io_uring.
 *
 * Layers (firmware/req/req.h says more): node_serve carries bytes; node_dp
 * is the session: framing, the handshake, MACs, payload crypto, admission,
 * flow control, the memory budgets for what it holds, and the responses on
 * the wire; node_req says what each request means on this node and is the
 * only one that calls the store. node_dp never calls the store: PUT, GET,
 * DELETE, STAT and LIST go to node_req (a streamed PUT through a
 * node_req_stream), whose completions node_dp turns into responses;
 * NODE-STAT reads the node's counters through node_req too, and adds the
 * session's own (response_bytes_held, put_bytes_held); MAP reads the
 * control plane's map through the map_get hook.
 *
 * A connection starts with the handshake (the client's certificate is
 * judged by `peers`); then every request is authenticated, its slice must be
 * one this node serves and the client's certificate lists, its epoch is
 * compared with the node's (an older one gets stale-map and the node's
 * epoch), PUT payloads are checked against their crc32c before anything is
 * stored (payloads above 128 KiB stream into the request layer as they
 * arrive and become visible only once checked), and slices that require
 * encryption refuse plaintext payloads. Requests on the same key take
 * effect in the order the connection sent them (a GET after a PUT of the
 * key reads that PUT; a LIST waits for earlier writes under its prefix);
 * unrelated ones may complete, and be answered, out of order. GETs whose
 * answers are read whole (one read, one frame) are read up to 16 at once
 * on a connection, so that their reads reach the drive together; a GET
 * answered in pieces reads alone, since its payload holds the wire until
 * it ends, and answers that complete meanwhile wait for it. Refusals are responses
 * with a status code and a message; only a frame that fails authentication,
 * or a response-type frame from the client (a client sends requests only),
 * closes the connection. Admission and the timers are node_serve's (see
 * struct node_dp_opts); what the peer is told before such a close: while
 * in HELLO, an ERROR frame (busy when evicted, timeout at the handshake
 * deadline or a stall); a PUT whose payload stalls, its response with status
 * timeout; otherwise (keys exist but no request to answer) only the close.
 *
 * The loop: node_dp never runs it. It registers a before-sleep hook
 * (node_loop_before_sleep_add) that resumes connections paused on a full
 * stream once the stream can take more. Shutting down is two steps around
 * the owner's drain: node_dp_stop() stops accepting and closes every
 * connection (the closes and cancellations are queued on the loop); the
 * owner then runs the loop until node_loop_inflight() is 0 (or a deadline),
 * and node_dp_destroy() frees. What is still in flight at destroy (the
 * owner did not drain) keeps what it needs and the last of it frees the
 * rest; destroy before node_req_destroy() and node_store_close().
 */
#ifndef NODE_DP_H
#define NODE_DP_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../loop/loop.h"
#include "../req/req.h"
#include "../serve/serve.h"
#include "overlay.h"

#define NODE_DP_SLICES_MAX 16

/* shelf-node's default limits (its configuration table says what each
 * means); sized for the sim board's 32 MiB memory budget */
#define NODE_DP_MAX_CONNS_DEFAULT 512
#define NODE_DP_MAX_UNAUTH_DEFAULT 384
#define NODE_DP_MAX_UNAUTH_PER_ADDR_DEFAULT 64
#define NODE_DP_MAX_CONNS_PER_KEY_DEFAULT 64
#define NODE_DP_MAX_INFLIGHT_DEFAULT 32
#define NODE_DP_PUT_BUDGET_MIB_DEFAULT 8
#define NODE_DP_HANDSHAKE_TIMEOUT_S_DEFAULT 5
#define NODE_DP_IDLE_TIMEOUT_S_DEFAULT 60
#define NODE_DP_PROGRESS_INTERVAL_S_DEFAULT 10
#define NODE_DP_PROGRESS_KIB_DEFAULT 16
/* GET answers are read from the drive in pieces (defaults for the sim
 * board's 32 MiB memory budget; shelf-node's configuration sets them) */
#define NODE_DP_PIECE_BYTES (256u << 10)      /* one ranged read of the store */
#define NODE_DP_PIECE_MAX_BYTES (1u << 20)
/* an answer that fits the connection's free share is read whole, in one
 * read, up to this many bytes */
#define NODE_DP_READ_MAX_BYTES (4u << 20)
#define NODE_DP_RESP_BUDGET_BYTES (12u << 20) /* response bytes held, all connections */
/* A GET that waits this long for the budget makes the node reset the
 * connection whose answers have made no progress for the longest, at
 * least NODE_DP_PRESSURE_STALL_MS (one a tick), before its send timeout */
#define NODE_DP_PRESSURE_WAIT_MS 200
#define NODE_DP_PRESSURE_STALL_MS 2000
/* ... one connection: a 1 MiB answer read whole (its record and alignment) */
#define NODE_DP_RESP_CONN_BYTES (1152u << 10)
/* a piece's read buffer is at most the piece and this much (alignment) */
#define NODE_DP_PIECE_SLACK_BYTES (72u << 10)

struct node_dp;

struct node_dp_opts {
	struct node_loop *loop;
	struct node_req *req;           /* the request layer, on the same loop (borrowed) */
	const struct ovl_id *id;        /* the node's identity (borrowed) */
	const uint8_t *cert;            /* its certificate (copied) */
	size_t cert_len;
	struct ovl_peers *peers;        /* judges client certificates (borrowed) */
	uint64_t (*now_s)(void *arg);   /* trusted unix time for certificates */
	void *now_arg;
	/* admission (node_serve, serve.h): connections; of them not yet
	 * authenticated, in all and per source address; authenticated per
	 * client key (0: no cap). A connection is authenticated when its first
	 * request's MAC verifies (that proves the key); until then it is
	 * unauthenticated, must get there within handshake_timeout_ms, and may
	 * be closed (ERROR busy while in HELLO) to make room for a new one. */
	unsigned max_conns, max_unauth, max_unauth_per_addr, max_conns_per_key;
	unsigned max_inflight;          /* requests in flight per connection */
	/* PUT payload memory, all connections: small payloads buffered whole,
	 * node_req_stream_bytes() (plus a sealed chunk) per streamed one */
	uint64_t max_payload_bytes;
	uint64_t handshake_timeout_ms, idle_timeout_ms;
	/* a frame being received (a PUT payload included) must bring at least
	 * progress_min_bytes every progress_interval_ms, else ERROR timeout /
	 * status timeout and the close (nothing of a PUT is stored) */
	uint64_t progress_interval_ms, progress_min_bytes;
	/*
	 * Responses. A GET's answer is read as the connection drains: whole,
	 * in one read and one send, when its read buffer fits what the
	 * connection's share has free (up to NODE_DP_READ_MAX_BYTES), else in
	 * pieces of resp_piece_bytes (0: NODE_DP_PIECE_BYTES; a multiple of 64
	 * KiB, at most NODE_DP_PIECE_MAX_BYTES), two at most held per
	 * connection. Each read reserves what it can hold (the range asked,
	 * the record for a small object: sized from the index before the
	 * first read) and is made only when that fits both the node's
	 * resp_budget_bytes (0: NODE_DP_RESP_BUDGET_BYTES) of response bytes
	 * held and the connection's share, resp_conn_bytes (0:
	 * NODE_DP_RESP_CONN_BYTES; at least a piece and
	 * NODE_DP_PIECE_SLACK_BYTES, at most the budget). A
	 * GET without room waits (first come, first served), it is not failed;
	 * a connection without room for another piece is not read until its
	 * sends drain. A send that makes no progress for send_timeout_ms (0:
	 * idle_timeout_ms) closes the connection and frees what it held.
	 */
	uint64_t resp_budget_bytes, resp_conn_bytes;
	size_t resp_piece_bytes;
	uint64_t send_timeout_ms;
	/* MAP requests: the encoded, broker-signed `map` message the node holds
	 * for slice into a malloc'd *buf (the caller frees). 0, -ENOENT, -ENOMEM.
	 * NULL: MAP is answered not-found. */
	int (*map_get)(void *arg, const char *slice, uint8_t **buf, size_t *len);
	void *map_arg;
};

struct node_dp_stats {
	uint64_t handshakes, handshake_failures, requests, puts, gets, deletes, stats, lists, maps;
	uint64_t refused_busy, stale_map, wrong_slice, checksum_mismatch, auth_failures;
	uint64_t refused_key;     /* authenticated, but the key held max_conns_per_key */
	uint64_t refused_forward; /* a forwarded write (ver, fwd) from a certificate not a node's */
	uint64_t timed_out;       /* ERROR or status timeout sent before a close */
	uint64_t response_frames; /* a client sent a response-type frame: closed */
	uint64_t resp_waits;           /* GET pieces that waited for the node's response budget */
	uint64_t resp_reads;           /* reads of GET answers (a whole answer, or a piece) */
	uint64_t get_bytes;            /* value bytes of GET answers sent (to clients and nodes) */
	uint64_t reset_for_budget;     /* stalled readers reset early for waiting GETs */
	uint64_t gets_together_max;    /* the most GETs of one connection reading at once */
	uint64_t paused_for_responses; /* connections not read until their answers drained */
	uint64_t resp_bytes;           /* now: response bytes held (reserved, queued, waiting) */
	uint64_t put_bytes;            /* now: PUT payload bytes held (buffered, stream buffers) */
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

/* Stop: no more connections; close every open one (answers to requests in
 * flight are dropped). Queues the closes and cancellations on the loop and
 * returns; the loop's owner then drains the loop. Accepts NULL; once only. */
void node_dp_stop(struct node_dp *dp);

/* Free after the owner drained the loop (stops first if node_dp_stop() was
 * not called), NULL *dp. Accepts NULL. */
void node_dp_destroy(struct node_dp **dp);

#endif
