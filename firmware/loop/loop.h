/*
 * node_loop: the node's one io_uring, shared by the disk and the network.
 *
 * Whoever submits work embeds a struct node_loop_ev and passes it with the
 * submission; when the completion arrives, node_loop_run() calls its `fn`.
 * So the store's reads, writes and flushes and the data plane's accepts,
 * receives and sends complete on one ring, reaped by one submit-and-wait per
 * loop iteration.
 *
 * Ring set-up flags are chosen at run time: SINGLE_ISSUER and DEFER_TASKRUN
 * where the kernel has them (fewer wake-ups, completions run only when we
 * ask), else COOP_TASKRUN, else none. node_loop_features() says which.
 *
 * Threading: one thread owns a loop (SINGLE_ISSUER requires it).
 */
#ifndef NODE_LOOP_H
#define NODE_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct io_uring;
struct io_uring_sqe;
struct node_loop;

/* Embedded in whatever a submission belongs to. `res` is cqe->res, `flags`
 * cqe->flags (IORING_CQE_F_MORE for multishot requests, buffer ids...). */
struct node_loop_ev {
	void (*fn)(struct node_loop_ev *ev, int res, uint32_t flags);
};

struct node_loop_features {
	unsigned entries;    /* submission queue entries */
	bool single_issuer;  /* IORING_SETUP_SINGLE_ISSUER */
	bool defer_taskrun;  /* IORING_SETUP_DEFER_TASKRUN */
	bool coop_taskrun;   /* IORING_SETUP_COOP_TASKRUN */
};

/* A ring of `entries` (rounded up by the kernel). 0 or -errno, with err. */
int node_loop_new(struct node_loop **out, unsigned entries, char *err, size_t errlen);

/* Wait for outstanding completions (at most a few seconds), free, NULL *l. */
void node_loop_destroy(struct node_loop **l);

/*
 * A submission queue entry whose completion will call ev->fn: its user_data
 * is set, and liburing's io_uring_prep_*() helpers leave user_data alone. A
 * multishot request counts as in flight until its last completion (one
 * without IORING_CQE_F_MORE). When
 * the queue is full, queued entries are submitted first. NULL only if the
 * kernel refuses even that (then ev->fn is never called).
 */
struct io_uring_sqe *node_loop_sqe(struct node_loop *l, struct node_loop_ev *ev);

/*
 * Submit what is queued and dispatch every completion that is ready; with
 * wait, first block until at least one arrives (if anything is in flight).
 * Returns the number of completions dispatched, or -errno.
 */
int node_loop_run(struct node_loop *l, bool wait);

/* Submissions whose final completion has not been dispatched yet. */
unsigned node_loop_inflight(const struct node_loop *l);

/* What the ring was set up with. */
const struct node_loop_features *node_loop_features(const struct node_loop *l);

/* The ring itself, for registering buffers or files. */
struct io_uring *node_loop_ring(struct node_loop *l);

#endif
