#include "loop.h"

#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOOP_DRAIN_ROUNDS 1000 /* destroy: at most this many waits for stragglers */

struct node_loop {
	struct io_uring ring;
	struct node_loop_features feat;
	unsigned inflight; /* submitted, final completion not yet seen */
	unsigned queued;   /* prepared, not yet submitted */
	struct {
		node_loop_hook_fn fn;
		void *arg;
	} hooks[NODE_LOOP_HOOKS_MAX]; /* run before every wait, in order */
	unsigned n_hooks;
};

int node_loop_before_sleep_add(struct node_loop *l, node_loop_hook_fn fn, void *arg)
{
	if (l->n_hooks == NODE_LOOP_HOOKS_MAX)
		return -ENOSPC;
	l->hooks[l->n_hooks].fn = fn;
	l->hooks[l->n_hooks].arg = arg;
	l->n_hooks++;
	return 0;
}

void node_loop_before_sleep_remove(struct node_loop *l, node_loop_hook_fn fn, void *arg)
{
	for (unsigned i = 0; i < l->n_hooks; i++) {
		if (l->hooks[i].fn != fn || l->hooks[i].arg != arg)
			continue;
		memmove(&l->hooks[i], &l->hooks[i + 1], (l->n_hooks - i - 1) * sizeof(l->hooks[0]));
		l->n_hooks--;
		return;
	}
}

static int ring_try(struct node_loop *l, unsigned entries, unsigned flags)
{
	struct io_uring_params p;

	memset(&p, 0, sizeof(p));
	p.flags = flags;
	return io_uring_queue_init_params(entries, &l->ring, &p);
}

int node_loop_new(struct node_loop **out, unsigned entries, char *err, size_t errlen)
{
	/* newest first: each older kernel refuses the flags it lacks */
	static const unsigned tries[] = {
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN,
		IORING_SETUP_COOP_TASKRUN,
		0,
	};
	struct node_loop *l = calloc(1, sizeof(*l));
	int ret = -EINVAL;

	*out = NULL;
	if (!l)
		return -ENOMEM;
	for (unsigned i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
		ret = ring_try(l, entries, tries[i]);
		if (ret == 0) {
			l->feat.single_issuer = tries[i] & IORING_SETUP_SINGLE_ISSUER;
			l->feat.defer_taskrun = tries[i] & IORING_SETUP_DEFER_TASKRUN;
			l->feat.coop_taskrun = tries[i] & IORING_SETUP_COOP_TASKRUN;
			break;
		}
		if (ret != -EINVAL)
			break;
	}
	if (ret < 0) {
		snprintf(err, errlen, "cannot set up an io_uring of %u entries: %s", entries,
			 strerror(-ret));
		free(l);
		return ret;
	}
	l->feat.entries = l->ring.sq.ring_entries;
	*out = l;
	return 0;
}

void node_loop_destroy(struct node_loop **lp)
{
	struct node_loop *l = lp ? *lp : NULL;

	if (!l)
		return;
	for (int i = 0; i < LOOP_DRAIN_ROUNDS && l->inflight; i++)
		if (node_loop_run(l, true) < 0)
			break;
	io_uring_queue_exit(&l->ring);
	free(l);
	*lp = NULL;
}

struct io_uring_sqe *node_loop_sqe(struct node_loop *l, struct node_loop_ev *ev)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);

	if (!sqe) {
		if (io_uring_submit(&l->ring) < 0)
			return NULL;
		l->queued = 0;
		sqe = io_uring_get_sqe(&l->ring);
		if (!sqe)
			return NULL;
	}
	io_uring_sqe_set_data(sqe, ev);
	l->queued++;
	l->inflight++;
	return sqe;
}

int node_loop_run(struct node_loop *l, bool wait)
{
	struct io_uring_cqe *cqe = NULL;
	int n = 0, ret;

	for (unsigned i = 0; i < l->n_hooks; i++)
		l->hooks[i].fn(l->hooks[i].arg);
	if (l->queued || (wait && l->inflight) || l->feat.defer_taskrun) {
		ret = io_uring_submit_and_wait(&l->ring, wait && l->inflight ? 1 : 0);
		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY && ret != -ETIME)
			return ret;
		if (ret >= 0)
			l->queued = 0;
	}
	while (io_uring_peek_cqe(&l->ring, &cqe) == 0) {
		struct node_loop_ev *ev = io_uring_cqe_get_data(cqe);
		int res = cqe->res;
		uint32_t flags = cqe->flags;

		io_uring_cqe_seen(&l->ring, cqe);
		if (!(flags & IORING_CQE_F_MORE))
			l->inflight--;
		n++;
		if (ev && ev->fn)
			ev->fn(ev, res, flags);
	}
	return n;
}

unsigned node_loop_inflight(const struct node_loop *l)
{
	return l->inflight;
}

const struct node_loop_features *node_loop_features(const struct node_loop *l)
{
	return &l->feat;
}

struct io_uring *node_loop_ring(struct node_loop *l)
{
	return &l->ring;
}
