/*
 * node_serve: the data plane's TCP server on the node's io_uring.
 *
 * It owns listening sockets and connections and enforces the limits every
 * node needs whatever it speaks:
 *
 * - Admission. At most max_conns connections. A connection is
 *   unauthenticated from its accept until the protocol vouches for it with
 *   node_conn_admit(); at most max_unauth of those, and at most
 *   max_unauth_per_addr from one source address (all 128 bits of it). A
 *   new connection from an address already at its cap is refused. When the
 *   table is full, or max_unauth is reached, the oldest unauthenticated
 *   connection is closed to make room for the new one; only when every slot
 *   holds an authenticated connection is the new one refused. A refused
 *   connection is sent opts.refuse_msg (the protocol's "busy") and closed.
 *   node_conn_admit() refuses an identity that already holds max_per_id
 *   authenticated connections.
 * - Timers. handshake_timeout_ms from accept to node_conn_admit(); an idle
 *   timeout (nothing received, no frame in progress and nothing queued to
 *   send for idle_timeout_ms); a send timeout (queued replies that make no
 *   progress for send_timeout_ms: a peer that stopped reading; the
 *   connection is reset and everything queued freed); and a progress
 *   timeout: while a frame is in progress (and the protocol has not paused
 *   the connection), at least progress_min_bytes must arrive within
 *   progress_interval_ms of the frame's start, and again within
 *   progress_interval_ms of each time they did. So a slow but steady
 *   transfer of any length completes, and one that stalls is cut
 *   progress_interval_ms after its last progress (plus the tick).
 *
 * Before the server closes a connection for a protocol-visible reason (an
 * eviction, the handshake deadline, a stall) it calls proto->on_expire,
 * which may queue a last message (node_conn_send); the close is then
 * graceful but bounded by NODE_SERVE_LINGER_MS. Other refusals and timeouts
 * close at once and free the connection's buffer.
 *
 * Connections receive into one ring of buffers shared by the server (an
 * io_uring provided-buffer ring) whenever they hold no unconsumed bytes;
 * the protocol reads the bytes in place and only a leftover partial frame
 * is copied into the connection's own buffer, which is freed once it is
 * empty again. So an idle connection holds no receive memory.
 *
 * What the bytes mean is the protocol's business (struct node_serve_proto):
 * the server hands it each connection's received bytes and the protocol
 * says how many it consumed and whether a frame is in progress. Replies are
 * queued with node_conn_send() and go out in order.
 *
 * Everything runs on the caller's node_loop, on the thread that owns it;
 * the server never runs the loop itself.
 */
#ifndef NODE_SERVE_H
#define NODE_SERVE_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../loop/loop.h"

#define NODE_SERVE_LISTEN_MAX 8       /* listening sockets (slice addresses) */
#define NODE_SERVE_RECV_CHUNK_BYTES 16384
#define NODE_CONN_IOV_MAX 4096        /* pieces of one node_conn_sendv() */
#define NODE_SERVE_ID_BYTES 32        /* an identity for node_conn_admit() */
#define NODE_SERVE_LINGER_MS 2000     /* a graceful close after on_expire, at most */
#define NODE_SERVE_REFUSE_MSG_MAX 512 /* opts.refuse_msg, bytes */
#define NODE_SERVE_SEND_PROGRESS_BYTES (64u << 10) /* restarts the send timer */

struct iovec;
struct node_serve;
struct node_conn;

struct node_serve_proto {
	/* A connection was accepted; return non-zero to refuse it. */
	int (*on_open)(void *arg, struct node_conn *c);
	/*
	 * Bytes received (len > 0), starting with whatever on_data left
	 * unconsumed last time. Return how many were consumed (0..len), or
	 * -errno to close the connection. *in_frame: true while a frame has
	 * started but not completed (the progress timer runs).
	 */
	ssize_t (*on_data)(void *arg, struct node_conn *c, const uint8_t *buf, size_t len,
			   bool *in_frame);
	/*
	 * The server is about to close the connection (reason
	 * NODE_SERVE_EXPIRE_*); the protocol may queue a last message with
	 * node_conn_send(), which goes out before the close. May be NULL.
	 */
	void (*on_expire)(void *arg, struct node_conn *c, int reason);
	/* The connection is gone (peer closed, error, timeout or refusal). */
	void (*on_close)(void *arg, struct node_conn *c, int reason);
};

/* Why on_expire runs. */
enum {
	NODE_SERVE_EXPIRE_EVICTED = 1, /* the oldest unauthenticated, closed for a newer one */
	NODE_SERVE_EXPIRE_HANDSHAKE,   /* not admitted within handshake_timeout_ms */
	NODE_SERVE_EXPIRE_STALLED,     /* a frame made less than the minimum progress */
};

struct node_serve_opts {
	struct node_loop *loop;
	const struct node_serve_proto *proto;
	void *proto_arg;
	unsigned max_conns;          /* connections open (see admission above) */
	unsigned max_unauth;         /* unauthenticated ones, 1..max_conns-1 */
	unsigned max_unauth_per_addr; /* unauthenticated ones from one address, 1..max_unauth */
	unsigned max_per_id;         /* authenticated ones of one identity; 0: no cap */
	size_t max_conn_buf_bytes;   /* unconsumed bytes a connection may hold */
	uint64_t handshake_timeout_ms; /* from accept to node_conn_admit() */
	uint64_t idle_timeout_ms;    /* no frame in progress and nothing received */
	uint64_t progress_interval_ms; /* a frame in progress must receive ... */
	uint64_t progress_min_bytes;   /* ... at least this many bytes every interval */
	/* queued sends that make no progress this long close the connection
	 * (a peer that stops reading) with a reset; 0: idle_timeout_ms.
	 * Progress is a reply sent to its end, or NODE_SERVE_SEND_PROGRESS_BYTES
	 * sent: a peer that takes a few bytes now and then is cut too */
	uint64_t send_timeout_ms;
	/* sent to a connection refused at accept (copied; at most
	 * NODE_SERVE_REFUSE_MSG_MAX bytes; may be empty) */
	const uint8_t *refuse_msg;
	size_t refuse_msg_len;
	/*
	 * Receive buffers shared by every connection (an io_uring provided
	 * buffer ring): recv_bufs buffers (a power of two, at most
	 * NODE_SERVE_RECV_BUFS_MAX; 0 picks NODE_SERVE_RECV_BUFS) of
	 * recv_buf_bytes each (0 picks NODE_SERVE_RECV_CHUNK_BYTES; at least
	 * 64, at most NODE_SERVE_RECV_BUF_BYTES_MAX; never more than
	 * max_conn_buf_bytes; all of them at most NODE_SERVE_RECV_RING_BYTES_MAX). A connection with nothing buffered receives into
	 * the ring, so an idle one holds no receive memory; only the unconsumed
	 * tail of what arrived (a partial frame) is copied into a buffer of its
	 * own. Where the kernel lacks buffer rings, or the ring is empty,
	 * connections receive into buffers of their own.
	 */
	unsigned recv_bufs;
	size_t recv_buf_bytes;
};

#define NODE_SERVE_RECV_BUFS 64
#define NODE_SERVE_RECV_BUFS_MAX 32768
#define NODE_SERVE_RECV_BUF_BYTES_MAX (1u << 20)
#define NODE_SERVE_RECV_RING_BYTES_MAX (256u << 20)

struct node_serve_stats {
	uint64_t accepted, refused_busy, closed, timed_out_idle, timed_out_slow, overflowed;
	uint64_t refused_addr;        /* of refused_busy: the source address was at its cap */
	uint64_t evicted;             /* unauthenticated, closed to make room */
	uint64_t timed_out_handshake; /* not admitted in time */
	uint64_t refused_id;          /* node_conn_admit() refusals: identity at its cap */
	uint64_t timed_out_send;  /* closed: queued sends made no progress for send_timeout_ms */
	uint64_t reset_stalled;   /* closed early by node_serve_reset_stalled() */
	unsigned open;
	unsigned unauth;              /* open and not yet admitted (closing ones excluded) */
	unsigned ring_bufs;       /* buffers in the shared ring; 0: not in use */
	uint64_t recv_ring;       /* receives that landed in a ring buffer */
	uint64_t recv_own;        /* receives into a connection's own buffer */
	uint64_t recv_nobufs;     /* the ring was empty: received into an own buffer */
	size_t conn_buf_bytes;    /* bytes allocated for connections' own buffers now */
};

/* 0 or -errno with err. */
int node_serve_new(struct node_serve **out, const struct node_serve_opts *o, char *err,
		   size_t errlen);

/* Listen on addr (port 0 picks one; the chosen port is written back). */
int node_serve_listen(struct node_serve *s, struct sockaddr_in6 *addr, char *err, size_t errlen);

/* Close every timed-out connection; call it periodically (every ~100 ms). */
void node_serve_tick(struct node_serve *s, uint64_t now_ms);

/*
 * Shutting down is two steps around the loop owner's drain, since only the
 * owner runs the loop. node_serve_stop() stops accepting and closes every
 * connection: the cancellations and the shutdowns are queued on the loop,
 * and on_close runs for each connection as its receive and send complete.
 * The owner then runs the loop until node_loop_inflight() is 0 (or a
 * deadline passes) and calls node_serve_destroy(), which frees and NULLs
 * *s (stopping first if needed; accepts NULL). If completions are still
 * outstanding then, the server stays until the last of them (which the
 * loop's later runs or node_loop_destroy() deliver) and frees itself.
 */
void node_serve_stop(struct node_serve *s);
void node_serve_destroy(struct node_serve **s);

void node_serve_stats(const struct node_serve *s, struct node_serve_stats *st);

/*
 * Memory pressure: reset the connection whose queued sends have made no
 * progress for the longest time, if that is at least min_stall_ms (a peer
 * that stopped reading), before its send timeout, freeing what it holds.
 * The protocol calls it when others wait for memory such peers hold.
 * Returns 1 when one was reset, 0 when none qualifies.
 */
int node_serve_reset_stalled(struct node_serve *s, uint64_t now, uint64_t min_stall_ms);

/*
 * Queue `len` bytes of `buf` (borrowed until `done` runs; done may be NULL)
 * for the connection, after what is already queued. 0 or -errno (-EPIPE when
 * the connection is closing).
 */
int node_conn_send(struct node_conn *c, const void *buf, size_t len,
		   void (*done)(void *arg, int res), void *arg);

/*
 * The same for up to NODE_CONN_IOV_MAX pieces sent as one reply (a header
 * and a payload that lives elsewhere, without copying them together). The
 * iovec array is copied; the bytes are borrowed until `done` runs. Queued
 * replies leave in one sendmsg where they can.
 */
int node_conn_sendv(struct node_conn *c, const struct iovec *iov, unsigned n,
		    void (*done)(void *arg, int res), void *arg);

/*
 * Flow control: after node_conn_pause() (typically from on_data, when the
 * protocol cannot take more bytes yet) nothing more is handed to on_data and
 * nothing more is received; node_conn_resume() hands over what is buffered
 * and receives again. The progress timer does not run meanwhile (the
 * wait is the node's, not the peer's; while sends are queued the send
 * timeout watches the peer); the handshake deadline does.
 */
void node_conn_pause(struct node_conn *c);
void node_conn_resume(struct node_conn *c);

/* The frame in progress ended outside on_data (a paused payload finished
 * later): the progress timer stops, the idle timer starts now. */
void node_conn_frame_done(struct node_conn *c);

/*
 * The protocol vouches for the connection's peer as `id` (e.g. the client
 * key its first authenticated frame proved). 0: the connection counts as
 * authenticated from now on (no handshake deadline, never evicted);
 * -EBUSY: `id` already holds max_per_id authenticated connections (the
 * connection stays unauthenticated; the protocol answers and closes it).
 * Admitting an admitted connection again returns 0 and changes nothing.
 */
int node_conn_admit(struct node_conn *c, const uint8_t id[NODE_SERVE_ID_BYTES]);

/* Close after the queued sends (graceful) or at once. */
void node_conn_close(struct node_conn *c, bool graceful);

/* Per-connection slot for the protocol's state. */
void node_conn_set_data(struct node_conn *c, void *data);
void *node_conn_data(const struct node_conn *c);

/* The peer's address. */
const struct sockaddr_in6 *node_conn_peer(const struct node_conn *c);

#endif
