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
 * Only the loop's owner (the node's main, or a test or bench standing in for
 * it) calls node_loop_run(). A module that has work to do between
 * completions (start a batch, arm a timer, re-arm a paused receive)
 * registers it with node_loop_before_sleep_add(); the loop runs it before
 * every wait, the way Redis runs aeSetBeforeSleepProc. No module runs the
 * loop from inside its own calls or callbacks.
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
 * Run the before-sleep hooks, submit what is queued and dispatch every
 * completion that is ready; with wait, first block until at least one
 * arrives (if anything is in flight). Only the loop's owner calls this.
 * Returns the number of completions dispatched, or -errno.
 */
int node_loop_run(struct node_loop *l, bool wait);

/* Work a module runs before the loop waits: fn(arg) is called at the start
 * of every node_loop_run(), before queued entries are submitted, so what it
 * queues goes out in the same submission. It may queue submissions; it must
 * not call node_loop_run(). */
typedef void (*node_loop_hook_fn)(void *arg);

#define NODE_LOOP_HOOKS_MAX 8

/* Register fn(arg) to run before every wait. 0, or -ENOSPC when
 * NODE_LOOP_HOOKS_MAX hooks are registered already. */
int node_loop_before_sleep_add(struct node_loop *l, node_loop_hook_fn fn, void *arg);

/* Remove the hook registered with the same fn and arg (nothing if none). */
void node_loop_before_sleep_remove(struct node_loop *l, node_loop_hook_fn fn, void *arg);

/* Submissions whose final completion has not been dispatched yet. */
unsigned node_loop_inflight(const struct node_loop *l);

/* What the ring was set up with. */
const struct node_loop_features *node_loop_features(const struct node_loop *l);

/* The ring itself, for registering buffers or files. */
struct io_uring *node_loop_ring(struct node_loop *l);

#endif
