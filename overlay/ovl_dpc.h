/*
 * ovl_dpc: the client side of the data-plane protocol (docs/PROTOCOL.md
 * section 7), the one every client speaks: libshelf and the tools, and a
 * node talking to its peers.
 *
 * Two halves:
 *
 * - The engine (struct ovl_dpc): one connection's protocol state, with no
 *   I/O of its own (sans-I/O). It is fed the bytes that arrived and yields
 *   the bytes to send; it does the handshake, seals request heads and
 *   payloads, matches answers to requests by request id (any number of
 *   requests may be in flight: pipelining), opens response payloads and
 *   completes requests. Whoever owns the socket drives it: the blocking
 *   driver below, or the node's io_uring loop (firmware/peer/).
 *
 * - A blocking driver (struct ovl_dpc_conn): a TCP socket, a connect with a
 *   deadline (poll) and one request at a time, the handshake and each
 *   request bounded as a whole by the caller's timeout. For libshelf and the tools.
 *
 * Threading: an engine or a connection belongs to one thread at a time.
 * Errors: 0 or a negative errno; words in an err buffer. Nothing logs.
 */
#ifndef OVL_DPC_H
#define OVL_DPC_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "ovl_wire.h"

#define OVL_DPC_ERR_BYTES 256
#define OVL_DPC_NAME_BYTES 64
#define OVL_DPC_PROGRESS_STEP_BYTES (256u << 10) /* progress is reported per this many bytes */

struct ovl_dpc;
struct ovl_dpc_call;

/* A request completed (see struct ovl_dpc_call). The call is the caller's
 * again: it may be started anew or freed inside the callback. */
typedef void (*ovl_dpc_done_fn)(struct ovl_dpc_call *call, void *arg);

/* Payload bytes moved (sent for a request, received for a response) out of
 * total bytes on the wire; called at every OVL_DPC_PROGRESS_STEP_BYTES and
 * at the end. */
typedef void (*ovl_dpc_progress_fn)(void *arg, uint64_t done, uint64_t total);

/*
 * One request and, once it completes, its answer. The caller owns it (on
 * its stack, embedded or allocated); from ovl_dpc_call_start() until it
 * completes the engine borrows it, and it must neither move nor be freed.
 * Set the "in" fields, start it, and read the "out" fields after it
 * completed; then ovl_dpc_call_release() it (its body may be malloc'd).
 */
struct ovl_dpc_call {
	/* in */
	struct ovl_wire_req req;           /* type, slice, epoch, key...; encoded at start */
	const uint8_t *payload;            /* PUT: plaintext, borrowed until the call completes */
	uint64_t payload_len;
	bool encrypt;                      /* seal the payload, and demand a sealed response payload */
	uint8_t *rbuf;                     /* optional: where the response payload goes (borrowed) */
	size_t rcap;                       /* its size: at least the payload's wire length */
	ovl_dpc_done_fn done;              /* optional: called once when the call completes */
	void *done_arg;
	ovl_dpc_progress_fn progress;      /* optional */
	void *progress_arg;
	/* a streamed PUT: the payload is not given up front (payload unused,
	 * payload_len its plaintext bytes) but written with ovl_dpc_call_write()
	 * as it becomes known; room(room_arg) (optional) runs when the stream
	 * can take more after a write took fewer bytes than offered */
	bool stream;
	void (*room)(void *arg);
	void *room_arg;
	/* out, once complete */
	bool complete;
	int result;                        /* 0: resp is the node's answer; <0: no answer (err says why) */
	struct ovl_wire_resp resp;         /* resp.status is the node's verdict */
	uint8_t *body;                     /* response payload plaintext: in rbuf, or malloc'd */
	uint64_t body_len;
	char err[OVL_DPC_ERR_BYTES];
	/* the engine's */
	struct ovl_dpc_call *next;
	uint32_t rid;
	bool sent, answered, body_owned;
	uint8_t shdr[OVL_WIRE_HDR_BYTES];  /* stream: its sealed header (the chunks' aad) */
	uint64_t st_left;                  /* stream: plaintext bytes not yet written */
	uint32_t st_chunk;                 /* stream: index of the chunk being filled */
	void *st_seg;                      /* stream: that chunk (the engine's) */
};

/* Zero a call (every field), ready to fill its "in" fields. */
void ovl_dpc_call_init(struct ovl_dpc_call *call);

/* Free what a completed call holds (a malloc'd body) and zero its results.
 * Accepts a call never started. */
void ovl_dpc_call_release(struct ovl_dpc_call *call);

/* Hand the response payload over: a malloc'd buffer of call->body_len bytes
 * (plus one, so an empty body is not NULL) that the caller frees; copied
 * when it lives in rbuf. NULL on -ENOMEM. The call keeps no body. */
uint8_t *ovl_dpc_call_take_body(struct ovl_dpc_call *call);

/* What a completed call means as an errno: its result when it failed,
 * else ovl_wire_status_to_errno(resp.status) (0 for ok). */
int ovl_dpc_call_errno(const struct ovl_dpc_call *call);

/* ---- the engine ----------------------------------------------------------- */

struct ovl_dpc_cfg {
	const struct ovl_id *id;           /* our identity (borrowed for the engine's life) */
	const uint8_t *cert;               /* our certificate (borrowed) */
	size_t cert_len;
	struct ovl_peers *peers;           /* judges the node's certificate (borrowed) */
	ovl_wire_verify_fn verify;         /* or this, when set */
	void *verify_arg;
	uint64_t now;                      /* unix seconds for `peers` */
	const char *slice;                 /* optional: the slice to name in HELLO (copied) */
	const char *name;                  /* how errors name the peer ("node fd00::1"; copied) */
};

/*
 * A new engine: the HELLO is queued to send at once. 0, -ENOMEM, or the
 * handshake's -EINVAL (err says why).
 */
int ovl_dpc_new(struct ovl_dpc **out, const struct ovl_dpc_cfg *cfg, char *err, size_t errlen);

/*
 * Complete every call still in flight with -ECONNABORTED (their done
 * callbacks run, here), wipe the keys, free *c and NULL it. Accepts NULL.
 */
void ovl_dpc_destroy(struct ovl_dpc **c);

/* The handshake completed and the session is up. */
bool ovl_dpc_ready(const struct ovl_dpc *c);

/*
 * 0 while the connection is usable; after a failure, its negative errno
 * (the handshake's error, a bad frame, or the driver's ovl_dpc_abort()),
 * with words in ovl_dpc_error(). A failed engine takes no more bytes and
 * completes every call with the failure; close the connection.
 */
int ovl_dpc_failed(const struct ovl_dpc *c);
const char *ovl_dpc_error(const struct ovl_dpc *c);

/* The handshake's ERROR status when the node refused it (else 0). */
uint32_t ovl_dpc_refusal(const struct ovl_dpc *c);

/* The node's verified certificate, once ready (else NULL). Borrowed. */
const struct ovl_cert *ovl_dpc_peer(const struct ovl_dpc *c);

/*
 * Start a request. Before the handshake completes it waits, and is sealed
 * when the session is up; requests go out in the order they were started.
 * Returns 0 (the call is in flight and will complete exactly once, through
 * its done callback when set), -EINVAL (a request that cannot be encoded;
 * err says why; the call is not started), -ENOMEM, or the engine's failure
 * (the call is not started). Calls on one engine complete in the order the
 * node answers them, which need not be the order they were started.
 */
int ovl_dpc_call_start(struct ovl_dpc *c, struct ovl_dpc_call *call, char *err, size_t errlen);

/* Requests started and not yet complete. */
unsigned ovl_dpc_inflight(const struct ovl_dpc *c);

/*
 * ---- streamed PUTs ----
 *
 * A call started with call->stream set sends its head once its turn
 * comes (after the handshake and the calls started before it); its
 * payload follows as the caller writes it. Frames never interleave: calls
 * started while a stream is open wait until its last byte was written.
 * The engine holds at most OVL_DPC_STREAM_QUEUE_BYTES of a stream's bytes
 * not yet sent (copied, sealed chunk by chunk when call->encrypt), so a
 * writer is bounded in memory and paced by the connection.
 */
#define OVL_DPC_STREAM_QUEUE_BYTES (256u << 10)

/* How many bytes the stream of `call` can take now (0: not yet its turn,
 * its queue is full, or every byte was written; room() runs when that
 * changes). */
uint64_t ovl_dpc_call_room(const struct ovl_dpc *c, const struct ovl_dpc_call *call);

/* Copy up to len of the stream's next bytes into the engine: how many
 * were taken (at most ovl_dpc_call_room(); 0 when it is not the stream's
 * turn yet, or its every byte was written), or the engine's failure. */
ssize_t ovl_dpc_call_write(struct ovl_dpc *c, struct ovl_dpc_call *call, const void *buf,
			   size_t len);

/*
 * Bytes to send: fills iov[0..n) with the next pending bytes, in order, and
 * returns how many entries it filled (0: nothing to send, or failed). The
 * bytes are lent to the driver until it calls ovl_dpc_tx_done(): they stay
 * valid and unchanged, even if the engine fails meanwhile (then the calls
 * whose bytes they are complete only at ovl_dpc_tx_done()), and starting
 * more calls does not move them. Do not destroy the engine while they are
 * lent.
 */
int ovl_dpc_tx_iov(struct ovl_dpc *c, struct iovec *iov, int n);

/* Bytes waiting to be sent. */
uint64_t ovl_dpc_tx_pending(const struct ovl_dpc *c);

/* The send of what ovl_dpc_tx_iov() lent has ended, and the first n of the
 * pending bytes went out (n at most what is pending; 0 when the send
 * failed). A call whose answer had already arrived may complete here, and
 * after a failure, the calls whose bytes were lent. */
void ovl_dpc_tx_done(struct ovl_dpc *c, size_t n);

/*
 * Where to receive next, for a driver that receives in place: *buf and the
 * number of bytes (>= 1) it may hold; exactly what the current frame still
 * needs, so nothing of the next frame lands there. Then ovl_dpc_rx_done()
 * with what arrived. Returns 0 when the engine takes no bytes (failed).
 * Valid until the next call into the engine.
 */
size_t ovl_dpc_rx_space(struct ovl_dpc *c, uint8_t **buf);

/*
 * n bytes arrived at the space ovl_dpc_rx_space() gave. Runs the protocol:
 * may finish the handshake (then waiting calls are sealed and their bytes
 * become pending) and complete calls (their callbacks run here). Returns 0,
 * or the engine's failure (negative errno; see ovl_dpc_failed()).
 */
int ovl_dpc_rx_done(struct ovl_dpc *c, size_t n);

/* The same for bytes received elsewhere: takes all of in[0..len). */
int ovl_dpc_feed(struct ovl_dpc *c, const uint8_t *in, size_t len);

/*
 * The driver lost the connection (reset, timeout, closed): the engine
 * fails with code (a negative errno) and the text, and every call in
 * flight completes with them. Does nothing when it has failed already.
 */
void ovl_dpc_abort(struct ovl_dpc *c, int code, const char *text);

/* ---- the blocking driver ----------------------------------------------- */

struct ovl_dpc_conn;

/*
 * Connect over TCP to addr (IPv6 with port), waiting at most timeout_ms,
 * and make an engine for it (cfg as for ovl_dpc_new()). The handshake is
 * not run yet: ovl_dpc_conn_handshake(). Returns 0, the connect's error
 * (-ETIMEDOUT when it did not complete in time, -ECONNREFUSED, -ENETUNREACH
 * ...), -ENOMEM or ovl_dpc_new()'s error (err says why in each case).
 */
int ovl_dpc_conn_open(struct ovl_dpc_conn **out, const struct sockaddr_in6 *addr,
		      const struct ovl_dpc_cfg *cfg, int timeout_ms, char *err, size_t errlen);

/*
 * Run the handshake, all of it within timeout_ms. 0, or: -ETIMEDOUT (no
 * answer in time), -ECONNRESET (err: "connection closed by the node during
 * the handshake" when it closed it) and other socket errors, or the handshake's
 * own errors (-ECONNREFUSED: the node sent ERROR, see ovl_dpc_refusal();
 * -EBADE, -EPROTONOSUPPORT, -EBADMSG, the verifier's); err says why. After
 * an error, close the connection.
 */
int ovl_dpc_conn_handshake(struct ovl_dpc_conn *cn, int timeout_ms, char *err, size_t errlen);

/*
 * Start call and drive the connection until it completes, all of it (every
 * wait for the socket to take or give bytes) within timeout_ms. Returns 0 when the
 * call completed: call->result is 0 (call->resp is the node's answer) or
 * the protocol failure (-EBADMSG a bad response, -EPROTO a plaintext
 * payload where encryption is required, -EIO a payload chunk that failed
 * authentication; call->err says why); or, when the transport failed
 * before: -ETIMEDOUT, -ECONNRESET, -EPIPE..., and the call is complete with
 * that result. Start errors are ovl_dpc_call_start()'s. After any failure
 * the connection is unusable: close it.
 */
int ovl_dpc_conn_call(struct ovl_dpc_conn *cn, struct ovl_dpc_call *call, int timeout_ms);

/* The engine of the connection (borrowed). */
struct ovl_dpc *ovl_dpc_conn_engine(struct ovl_dpc_conn *cn);

/* Close the socket, destroy the engine, free *cn, NULL it. Accepts NULL. */
void ovl_dpc_conn_close(struct ovl_dpc_conn **cn);

#endif
