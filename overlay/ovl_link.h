/*
 * ovl_link: control-plane links over ZeroMQ, always CURVE, always behind a
 * deny-by-default ZAP handler.
 *
 * A server is a ROUTER bound to one endpoint (tcp://[fd12::1]:7400); a client
 * is a DEALER connected to one server whose public key it knows. A message
 * is one payload frame: the client sends [payload], the server receives
 * [routing id, payload] and learns the authenticated Curve25519 key of the
 * sender from the ZAP User-Id, which ovl_zap sets to the key's hex. Handlers
 * identify peers by that key, never by routing id (routing ids are not
 * authenticated; they only address replies).
 *
 * A server cannot exist without a ZAP handler: ovl_link_server_new() takes
 * the handler and refuses unless it answers, in the server's context, and
 * denies what it must. Every received message is checked against the ZAP
 * handler's keyring again, so removing or revoking a key also silences
 * connections that key opened before (libzmq cannot close one peer of a
 * ROUTER; its messages are dropped instead).
 *
 * Every wait has a timeout in milliseconds (>= 0; 0 polls once): a timeout
 * returns -ETIMEDOUT and nothing ever blocks longer. Every socket carries
 * ZMQ_MAXMSGSIZE (a larger frame closes the connection), heartbeats, a
 * handshake timeout, a bounded linger and bounded queues (struct
 * ovl_link_opts). docs/PROTOCOL.md section 5 gives the same on the wire.
 *
 * Threading: a server or client object (and its socket) is used by one
 * thread at a time, like any zmq socket. Creating and destroying objects in
 * one context from several threads is fine. ovl_zap and ovl_keyring are
 * thread-safe.
 *
 * Keys are raw 32-byte Curve25519 keys (libsodium crypto_box keys; ZeroMQ's
 * Z85 text is only an encoding of the same bytes).
 */
#ifndef OVL_LINK_H
#define OVL_LINK_H

#include <stddef.h>
#include <stdint.h>

#include "ovl_keyring.h"
#include "ovl_zap.h"

/* Defaults of struct ovl_link_opts. */
#define OVL_LINK_MAX_MSG_BYTES (1 << 20)     /* largest payload: 1 MiB */
#define OVL_LINK_HEARTBEAT_IVL_MS 5000       /* ZMQ_HEARTBEAT_IVL: PING every 5 s */
#define OVL_LINK_HEARTBEAT_TIMEOUT_MS 15000  /* ZMQ_HEARTBEAT_TIMEOUT: no traffic for 15 s closes */
#define OVL_LINK_HEARTBEAT_TTL_MS 15000      /* ZMQ_HEARTBEAT_TTL: the peer's timeout for us */
#define OVL_LINK_KEEPALIVE_IDLE_S 60         /* heartbeats off: TCP keepalive after 60 s idle, */
#define OVL_LINK_KEEPALIVE_INTVL_S 10        /* probes 10 s apart, */
#define OVL_LINK_KEEPALIVE_CNT 6             /* 6 unanswered close the connection */
#define OVL_LINK_HANDSHAKE_IVL_MS 5000       /* ZMQ_HANDSHAKE_IVL: CURVE+ZAP must finish in 5 s */
#define OVL_LINK_LINGER_MS 1000              /* ZMQ_LINGER: unsent messages at close */
#define OVL_LINK_HWM_MSGS 1000               /* ZMQ_SNDHWM and ZMQ_RCVHWM, messages */
#define OVL_LINK_RECONNECT_IVL_MS 100        /* ZMQ_RECONNECT_IVL (clients) */
#define OVL_LINK_RECONNECT_IVL_MAX_MS 10000  /* ZMQ_RECONNECT_IVL_MAX: backoff ceiling */

/*
 * libzmq applies ZMQ_MAXMSGSIZE to frames on the wire. Under CURVE a payload
 * of n bytes travels as a MESSAGE command of n + 33 bytes ("\x07MESSAGE",
 * an 8-byte nonce, a 16-byte MAC, a flags byte), so the sockets get
 * max_msg_bytes + OVL_LINK_CURVE_OVERHEAD_BYTES and max_msg_bytes stays the
 * largest payload. Handshake commands are checked too (INITIATE is about
 * 300 bytes), hence the floor.
 */
#define OVL_LINK_CURVE_OVERHEAD_BYTES 33

/* Limits on struct ovl_link_opts (ovl_link_opts_check). */
#define OVL_LINK_MAX_MSG_BYTES_MIN 1024         /* room for the CURVE handshake */
#define OVL_LINK_MAX_MSG_BYTES_LIMIT (64 << 20) /* largest payload limit accepted */
#define OVL_LINK_LINGER_MAX_MS 60000            /* never an unbounded linger */
#define OVL_LINK_HWM_MAX_MSGS 1000000           /* never an unbounded queue */

/* How long ovl_link_server_new() waits for the ZAP handler to answer. */
#define OVL_LINK_ZAP_PROBE_MS 2000

/* ZAP domains of the three control-plane audiences (server side only). */
#define OVL_LINK_DOMAIN_NODE "shelf.node"   /* broker <- nodes */
#define OVL_LINK_DOMAIN_PEER "shelf.peer"   /* node <- nodes */
#define OVL_LINK_DOMAIN_ADMIN "shelf.admin" /* broker <- administrators */

#define OVL_LINK_RID_MAX_BYTES 255 /* a ZeroMQ routing id */
#define OVL_LINK_ENDPOINT_MAX_CHARS 256

struct ovl_link_opts {
	size_t max_msg_bytes;     /* largest payload, sent or received (ZMQ_MAXMSGSIZE
				     is this plus OVL_LINK_CURVE_OVERHEAD_BYTES) */
	/* ZMQ_HEARTBEAT_IVL. 0: no ZMTP heartbeats from this end, and TCP
	 * keepalive (OVL_LINK_KEEPALIVE_*) finds a dead peer instead. libzmq
	 * (4.3) keeps heartbeat timers per connection in one ordered map per I/O
	 * thread and cancels them by a linear scan, so with thousands of
	 * connections every handshake and PONG costs O(connections): a server
	 * holding that many (the broker) turns them off. */
	int heartbeat_ivl_ms;
	int heartbeat_timeout_ms; /* ZMQ_HEARTBEAT_TIMEOUT, >= heartbeat_ivl_ms (unused when it is 0) */
	int heartbeat_ttl_ms;     /* ZMQ_HEARTBEAT_TTL; 0: the peer keeps no timer for us */
	int handshake_ivl_ms;     /* ZMQ_HANDSHAKE_IVL */
	int linger_ms;            /* ZMQ_LINGER, 0..OVL_LINK_LINGER_MAX_MS */
	int sndhwm_msgs;          /* ZMQ_SNDHWM, 1..OVL_LINK_HWM_MAX_MSGS */
	int rcvhwm_msgs;          /* ZMQ_RCVHWM, 1..OVL_LINK_HWM_MAX_MSGS */
	int reconnect_ivl_ms;     /* ZMQ_RECONNECT_IVL (clients only) */
	int reconnect_ivl_max_ms; /* ZMQ_RECONNECT_IVL_MAX, >= reconnect_ivl_ms */
	size_t max_recv_bytes;    /* 0: as max_msg_bytes. Otherwise the largest payload
				     received (ZMQ_MAXMSGSIZE is this plus the overhead),
				     for a server that sends more than it accepts */
};

/* The OVL_LINK_* defaults above. */
extern const struct ovl_link_opts ovl_link_opts_default;

/* Returns 0, or -EINVAL naming the first field out of range in err. */
int ovl_link_opts_check(const struct ovl_link_opts *opts, char *err, size_t errlen);

/* Compute the Curve25519 public key of a secret key. Returns 0 or -EINVAL. */
int ovl_link_key_public(const uint8_t secret[OVL_KEY_BYTES], uint8_t public_key[OVL_KEY_BYTES]);

/* ------------------------------------------------------------------------ */

typedef struct ovl_link_server ovl_link_server_t;

struct ovl_link_server_cfg {
	const char *endpoint;             /* "tcp://[fd12::1]:7400"; port "*" picks one */
	const char *domain;               /* ZAP domain, registered with the handler */
	const uint8_t *secret_key;        /* OVL_KEY_BYTES: the server's long-term secret */
	const struct ovl_link_opts *opts; /* NULL: ovl_link_opts_default */
};

/* Who sent a message, and where a reply goes. */
struct ovl_link_peer {
	uint8_t key[OVL_KEY_BYTES];          /* the sender's authenticated public key */
	uint8_t rid[OVL_LINK_RID_MAX_BYTES]; /* the ROUTER's routing id of its connection */
	size_t rid_len;
};

struct ovl_link_server_stats {
	uint64_t received;             /* messages returned to the caller */
	uint64_t sent;                 /* messages queued for sending */
	uint64_t dropped_malformed;    /* not exactly [routing id, payload] */
	uint64_t dropped_unauthorised; /* no User-Id, or its key no longer allowed */
	uint64_t dropped_too_big;      /* payload larger than the caller's buffer */
};

/*
 * Create a CURVE server (ROUTER) in the context of `zap` and bind it. The
 * server consults `zap` for every handshake (through libzmq) and every
 * received message (itself); `zap` is borrowed and must outlive the server.
 *
 * Refuses with -EPERM ("cannot bind '<endpoint>': no ZAP handler in this
 * context; refusing to accept unauthenticated clients") when `zap` is NULL,
 * not running, or does not answer a probe request within
 * OVL_LINK_ZAP_PROBE_MS, or answers it with anything but a denial. Other
 * errors: -EINVAL (bad cfg or opts), -ENOENT (the domain has no keyring: no
 * client could ever connect), -ENOTSUP (no CURVE), bind errors.
 */
int ovl_link_server_new(ovl_link_server_t **srvp, ovl_zap_t *zap,
			const struct ovl_link_server_cfg *cfg, char *err, size_t errlen);

/* Close the socket (lingering at most opts.linger_ms), free, NULL *srvp. */
void ovl_link_server_destroy(ovl_link_server_t **srvp);

/* The bound endpoint with the real port, as ZMQ_LAST_ENDPOINT. Returns 0,
 * or -ENOBUFS when `len` is too short. */
int ovl_link_server_endpoint(ovl_link_server_t *srv, char *buf, size_t len);

/* The ROUTER socket (borrowed), for zmq_poll() in an event loop. Read it
 * only through ovl_link_server_recv() (timeout 0 after a poll). */
void *ovl_link_server_socket(ovl_link_server_t *srv);

/*
 * Receive one message within timeout_ms. Returns the payload length (>= 0)
 * with the payload in buf and the sender in *from; -ETIMEDOUT; -EMSGSIZE
 * when the payload was larger than buflen (the message is dropped, *from is
 * filled so the caller can answer); -ETERM when the context is terminated;
 * -EINVAL. Messages that are not [routing id, payload], carry no valid
 * User-Id, or come from a key the ZAP handler no longer allows are dropped
 * silently (see the stats) and the wait goes on.
 */
int ovl_link_server_recv(ovl_link_server_t *srv, struct ovl_link_peer *from, void *buf,
			 size_t buflen, int timeout_ms);

/*
 * Send `len` bytes to the connection `to` within timeout_ms. Returns 0;
 * -EHOSTUNREACH when that connection is gone; -ETIMEDOUT when its queue
 * stays full (a slow peer); -EMSGSIZE when len > opts.max_msg_bytes; -ETERM;
 * -EINVAL.
 */
int ovl_link_server_send(ovl_link_server_t *srv, const struct ovl_link_peer *to,
			 const void *buf, size_t len, int timeout_ms);

void ovl_link_server_stats_get(ovl_link_server_t *srv, struct ovl_link_server_stats *out);

/* ------------------------------------------------------------------------ */

typedef struct ovl_link_client ovl_link_client_t;

struct ovl_link_client_cfg {
	const char *endpoint;             /* the server's endpoint */
	const uint8_t *server_key;        /* OVL_KEY_BYTES: the server's public key */
	const uint8_t *secret_key;        /* OVL_KEY_BYTES: our long-term secret; the
					     public key is derived from it */
	const struct ovl_link_opts *opts; /* NULL: ovl_link_opts_default */
};

/*
 * Create a CURVE client (DEALER) in `zctx` (borrowed) and start connecting.
 * libzmq connects and reconnects in the background; messages are queued
 * only to a connection whose handshake has completed (ZMQ_IMMEDIATE), so a
 * refused client's sends time out instead of piling up. The price: when a
 * connection closes, libzmq may discard messages that had arrived on it but
 * were not read yet, so requests are retried on timeout. Returns 0, -EINVAL,
 * -ENOTSUP (no CURVE), or a connect error; err says why.
 */
int ovl_link_client_new(ovl_link_client_t **clp, void *zctx,
			const struct ovl_link_client_cfg *cfg, char *err, size_t errlen);

/* Close the socket (lingering at most opts.linger_ms), free, NULL *clp. */
void ovl_link_client_destroy(ovl_link_client_t **clp);

/*
 * Wait until a handshake with the server has succeeded (returns 0 at once if
 * the link is up). Otherwise: -EACCES as soon as the server refuses our key
 * (ZAP said 400), -EPROTO on a CURVE protocol error, and at the timeout
 * -ECONNRESET when the server kept closing the connection during the
 * handshake (typically: the wrong server key) or -ETIMEDOUT. err says which.
 */
int ovl_link_client_wait_ready(ovl_link_client_t *cl, int timeout_ms, char *err,
			       size_t errlen);

/* Send one message within timeout_ms. Returns 0, -ETIMEDOUT (no completed
 * handshake, or the queue stays full), -EMSGSIZE, -ETERM or -EINVAL. */
int ovl_link_client_send(ovl_link_client_t *cl, const void *buf, size_t len, int timeout_ms);

/* Receive one message within timeout_ms. Returns its length, -ETIMEDOUT,
 * -EMSGSIZE (larger than buflen: dropped), -ETERM or -EINVAL. Messages of
 * more than one frame are dropped and the wait goes on. */
int ovl_link_client_recv(ovl_link_client_t *cl, void *buf, size_t buflen, int timeout_ms);

/* The DEALER socket (borrowed), for zmq_poll() in an event loop. */
void *ovl_link_client_socket(ovl_link_client_t *cl);

#endif
