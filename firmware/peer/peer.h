/*
 * node_peer: a node's client connection to another node's data plane,
 * driven by the node's io_uring loop and never blocking it.
 *
 * The protocol is ovl_dpc's engine (overlay/ovl_dpc.h), the same one
 * libshelf speaks; node_peer only moves its bytes: an io_uring connect,
 * then one sendmsg and one recv in flight at a time, each completing on the
 * loop (struct node_loop_ev), the way node_serve moves a server
 * connection's bytes. Requests are struct ovl_dpc_call, any number in
 * flight (pipelined); each completes through its own done callback, called
 * from the loop (or from node_peer_destroy()).
 *
 * This is what the node uses to forward writes to its replicas. It has no
 * timers of its own: a caller that needs a deadline gives up on the
 * connection with node_peer_destroy().
 *
 * Threading: the loop's thread only. Only the loop's owner runs the loop.
 */
#ifndef NODE_PEER_H
#define NODE_PEER_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../loop/loop.h"
#include "overlay.h"

#define NODE_PEER_RECV_BYTES (64u << 10) /* receive buffer, per connection */
#define NODE_PEER_IOV_MAX 64             /* pieces of one sendmsg */

struct node_peer;

struct node_peer_opts {
	struct node_loop *loop;
	struct sockaddr_in6 addr;   /* the peer's data-plane address and port */
	struct ovl_dpc_cfg dpc;     /* identity, certificate, trust, slice, name (see ovl_dpc.h) */
};

/*
 * Start connecting to o->addr and the handshake (the HELLO goes out once
 * connected): returns at once, before any of it happened. Calls may be
 * started right away; they go out once the session is up. 0, -ENOMEM,
 * -EBUSY (no submission queue entry), a socket's error, or ovl_dpc_new()'s
 * (err says why).
 */
int node_peer_new(struct node_peer **out, const struct node_peer_opts *o, char *err,
		  size_t errlen);

/*
 * Start a request on the connection (see struct ovl_dpc_call: the call and
 * its payload are borrowed until it completes). Its done callback runs
 * from the loop when the answer arrived or the connection failed. 0, or
 * ovl_dpc_call_start()'s errors (the call is not started).
 */
int node_peer_call(struct node_peer *p, struct ovl_dpc_call *call, char *err, size_t errlen);

/* A streamed call (call->stream, see ovl_dpc.h): how many more bytes it
 * takes now, and write them (copied; sent as the connection drains). The
 * call's room() runs from the loop when more can be taken. */
uint64_t node_peer_room(const struct node_peer *p, const struct ovl_dpc_call *call);
ssize_t node_peer_write(struct node_peer *p, struct ovl_dpc_call *call, const void *buf, size_t len);

/* The session is up. */
bool node_peer_ready(const struct node_peer *p);

/* 0 while usable; else the connection's failure (negative errno), with
 * words in node_peer_error(). A failed peer is destroyed and made anew. */
int node_peer_failed(const struct node_peer *p);
const char *node_peer_error(const struct node_peer *p);

/* Requests started and not yet complete. */
unsigned node_peer_inflight(const struct node_peer *p);

/*
 * Close the connection: every call not yet complete completes with
 * -ECONNABORTED (here, or from the loop once a send the kernel still holds
 * has ended, since its payload may be read until then); NULLs *p at once.
 * The memory goes back once the loop has reaped the connection's last
 * submission. May be called from a call's done callback. Accepts NULL.
 */
void node_peer_destroy(struct node_peer **p);

#endif
