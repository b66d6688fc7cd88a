/*
 * The request layer's private parts, shared by req.c (the plain path) and
 * req_repl.c (replicated writes). Not for other folders.
 */
#ifndef NODE_REQ_INT_H
#define NODE_REQ_INT_H

#include "req.h"
#include "../repl/repl.h"

struct node_req {
	struct node_req_opts o;
	const char *msg;  /* the last failure: a literal or the store's message */
	char msgbuf[OVL_WIRE_TEXT_SIZE]; /* a failure message made here */
	unsigned live;    /* requests in flight, streams and kept buffers */
	bool dying;       /* destroyed: freed with the last of them */
};

/* One of rq->live ended: the layer goes with the last once destroyed. */
void req_rq_put(struct node_req *rq);

/* A replicated write (req_repl.c). */
struct req_rw;

/* Whether the write a goes through the replicated path. */
bool req_rw_wanted(struct node_req *rq, const struct node_req_args *a);

/* A whole PUT or a DELETE: as node_req_start(). */
int req_rw_start(struct node_req *rq, const struct node_req_args *a, node_req_done_fn done,
		 void *arg);

/* A streamed PUT: as node_req_stream_begin/write/crc/finish/abort. */
int req_rw_stream_begin(struct node_req *rq, const struct node_req_args *a,
			void (*ready)(void *arg), void *arg, struct req_rw **out);
ssize_t req_rw_stream_write(struct req_rw *rw, const void *buf, size_t len);
uint32_t req_rw_stream_crc(const struct req_rw *rw);
int req_rw_stream_finish(struct req_rw *rw, uint32_t crc, node_req_done_fn done, void *arg);
void req_rw_stream_abort(struct req_rw *rw);

#endif
