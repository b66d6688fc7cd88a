/*
 * shelf_get_batch() (tools/shelf.h): many GETs through the asynchronous
 * engine (aio.c), admitted in windows, each window grouped by the node
 * asked first and sent in key order per node, the nodes interleaved.
 *
 * Items live in a ring of SHELF_BATCH_WINDOW slots (item i in slot
 * i % SHELF_BATCH_WINDOW); an item is admitted only when its slot is free,
 * which bounds what an ordered batch holds while it waits for an earlier
 * item.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shelf_int.h"

#define W SHELF_BATCH_WINDOW

enum slot_state { SL_EMPTY, SL_PENDING, SL_DONE, SL_GIVEN };

struct batch;

struct slot {
	struct batch *b;
	size_t index;
	enum slot_state state;
	int res;
	uint8_t *data;         /* SL_DONE: malloc'd */
	size_t len;
	char *why;             /* SL_DONE with res < 0: malloc'd */
};

struct batch {
	struct shelf *s;
	const char *slice;
	const struct shelf_batch_item *items;
	size_t n;
	unsigned flags;
	shelf_batch_fn cb;
	void *arg;
	struct slot *ring;
	size_t low;            /* items below are given */
	size_t next_admit;     /* items below were started */
	size_t next_give;      /* ordered: the next item to give */
	size_t buffered;       /* bytes held in SL_DONE slots */
	size_t failed;         /* items given with res < 0 */
	bool stop;
	int stop_res;
	char *err;
	size_t errlen;
};

/* One key of a window, as it is sorted. */
struct wkey {
	unsigned node;         /* the member asked first (UINT32_MAX: none) */
	size_t index;
	struct sh_order o;     /* the read's order (o.idx NULL: none), handed to its op */
};

static void batch_admit(struct batch *b);
static void batch_done(void *arg, int res, const struct shelf_op *op);

static void slot_clear(struct slot *sl)
{
	free(sl->data);
	free(sl->why);
	sl->data = NULL;
	sl->why = NULL;
	sl->len = 0;
	sl->state = SL_EMPTY;
}

/* Give item sl->index to the caller. */
static void give(struct batch *b, struct slot *sl, int res, const void *data, size_t len,
		 const char *why)
{
	sl->state = SL_GIVEN;
	if (b->stop)
		return;
	if (res < 0)
		b->failed++;
	if (b->cb(b->arg, sl->index, res, res < 0 ? NULL : data, res < 0 ? 0 : len,
		  res < 0 ? why : NULL)) {
		b->stop = true;
		b->stop_res = sh_fail(b->err, b->errlen, -ECANCELED, "get-batch: stopped by the caller "
				      "at item %zu", sl->index);
	} else if (res < 0 && (b->flags & SHELF_BATCH_FAIL_MISSING)) {
		b->stop = true;
		b->stop_res = sh_fail(b->err, b->errlen, res, "%s", why);
	}
	if (b->stop)
		sh_aio_cancel_queued(b->s, batch_done);
}

/* Advance low past the given items (their slots become free). */
static void advance(struct batch *b)
{
	while (b->low < b->next_admit && b->ring[b->low % W].state == SL_GIVEN) {
		slot_clear(&b->ring[b->low % W]);
		b->low++;
	}
}

/* Ordered: give the items that are next and done. */
static void flush(struct batch *b)
{
	while (b->next_give < b->next_admit) {
		struct slot *sl = &b->ring[b->next_give % W];

		if (sl->state != SL_DONE)
			break;
		b->buffered -= sl->len;
		give(b, sl, sl->res, sl->data, sl->len, sl->why);
		b->next_give++;
	}
	advance(b);
}

/* An item's result: given now (unordered), or kept until its turn. */
static void item_result(struct batch *b, struct slot *sl, int res, uint8_t **data, size_t len,
			const char *why)
{
	if ((b->flags & SHELF_BATCH_UNORDERED) || b->stop) {
		give(b, sl, res, data ? *data : NULL, len, why);
		advance(b);
		return;
	}
	sl->state = SL_DONE;
	sl->res = res;
	if (res == 0 && data) {
		sl->data = *data;
		*data = NULL;
		sl->len = len;
		b->buffered += len;
	} else if (res < 0) {
		sl->why = strdup(why ? why : "");
	}
	flush(b);
}

static void batch_done(void *arg, int res, const struct shelf_op *op)
{
	struct slot *sl = arg;
	struct batch *b = sl->b;
	uint8_t *data = NULL;
	size_t len = 0;

	if (res == 0) {
		data = shelf_op_take(op, &len);
		if (!data)
			res = -ENOMEM;
	}
	item_result(b, sl, res, &data, len, res < 0 && res != -ENOMEM ? shelf_op_error(op)
								       : "out of memory");
	free(data);
	batch_admit(b);
}

static int wkey_cmp(const void *x, const void *y, void *arg)
{
	const struct wkey *p = x, *q = y;
	const struct shelf_batch_item *it = arg;
	size_t a = it[p->index].klen, bl = it[q->index].klen;
	int c;

	if (p->node != q->node)
		return p->node < q->node ? -1 : 1;
	c = memcmp(it[p->index].key, it[q->index].key, a < bl ? a : bl);
	if (c)
		return c;
	return a < bl ? -1 : a > bl ? 1 : (p->index > q->index) - (p->index < q->index);
}

/* Sort a window's keys by (node asked first, key). The node is the one a
 * read starts with (sh_order_build() over the map now, whose order the
 * key's op then uses: placement is worked out once); with no map, every
 * key is in one group. The map's epoch in *epoch. */
static void window_sort(struct batch *b, struct wkey *wk, size_t k, uint64_t *epoch)
{
	struct sh_map *m = NULL;
	bool *dead = NULL;
	char e[256];
	uint64_t saved = b->s->deadline_ms;

	sh_op_begin(b->s);
	if (sh_map_get(b->s, b->slice, &m, e, sizeof(e)) == 0)
		dead = sh_dead_members(b->s, &m->msg.u.map);
	b->s->deadline_ms = saved;
	*epoch = dead ? m->msg.u.map.epoch : 0;
	for (size_t i = 0; i < k; i++) {
		const struct shelf_batch_item *it = &b->items[wk[i].index];

		memset(&wk[i].o, 0, sizeof(wk[i].o));
		wk[i].node = UINT32_MAX;
		if (dead && it->klen >= 1 && it->klen <= OVL_WIRE_KEY_MAX_BYTES &&
		    sh_order_build(&m->msg.u.map, it->key, it->klen, dead, true, b->s->site,
				   b->s->chassis, &wk[i].o) == 0 && wk[i].o.n)
			wk[i].node = wk[i].o.idx[0];
	}
	free(dead);
	qsort_r(wk, k, sizeof(*wk), wkey_cmp, (void *)b->items);
}

/* Start the next keys while the ring has room: half a window at a time,
 * sorted and interleaved across the nodes. */
static void batch_admit(struct batch *b)
{
	struct wkey *wk = NULL, *order = NULL;
	size_t k, *start = NULL;
	unsigned groups = 0;
	uint64_t epoch = 0;

	if (b->stop || b->next_admit >= b->n || b->next_admit - b->low > W / 2 ||
	    b->buffered > SHELF_BATCH_BUFFER_BYTES)
		return;
	k = W - (b->next_admit - b->low);
	if (k > b->n - b->next_admit)
		k = b->n - b->next_admit;
	wk = malloc(k * sizeof(*wk));
	order = malloc(k * sizeof(*order));
	start = malloc((k + 1) * sizeof(*start));
	if (!wk || !order || !start) {
		/* no memory for the plan: one key at a time, in order */
		k = 1;
		free(wk);
		free(order);
		free(start);
		wk = order = NULL;
		start = NULL;
	}
	if (wk) {
		for (size_t i = 0; i < k; i++)
			wk[i].index = b->next_admit + i;
		window_sort(b, wk, k, &epoch);
		/* groups by node; then one key of each group in turn */
		for (size_t i = 0; i < k; i++)
			if (i == 0 || wk[i].node != wk[i - 1].node)
				start[groups++] = i;
		start[groups] = k;
		{
			size_t *pos = start, done = 0;
			size_t *cur = malloc(groups * sizeof(*cur));

			if (cur) {
				for (unsigned g = 0; g < groups; g++)
					cur[g] = pos[g];
				while (done < k)
					for (unsigned g = 0; g < groups; g++)
						if (cur[g] < pos[g + 1])
							order[done++] = wk[cur[g]++];
				free(cur);
			} else {
				memcpy(order, wk, k * sizeof(*wk));
			}
		}
	}
	for (size_t i = 0; i < k; i++) {
		size_t idx = order ? order[i].index : b->next_admit;
		struct slot *sl = &b->ring[idx % W];

		sl->b = b;
		sl->index = idx;
		sl->state = SL_PENDING;
	}
	b->next_admit += k;
	for (size_t i = 0; i < k; i++) {
		size_t idx = order ? order[i].index : b->next_admit - 1;
		const struct shelf_batch_item *it = &b->items[idx];
		struct slot *sl = &b->ring[idx % W];
		char why[SHELF_ERR_BYTES], kshow[SH_KSHOW_BYTES];
		int ret;

		if (b->stop) {
			/* stopped while admitting: the rest is never asked */
			sl->state = SL_GIVEN;
			continue;
		}
		ret = sh_aio_get_ordered(b->s, b->slice, it->key, it->klen, order ? &order[i].o : NULL,
					 epoch, batch_done, sl);
		if (ret == 0)
			continue;
		sh_key_show(it->key, it->klen, kshow);
		if (ret == -EINVAL && ovl_large_key_reserved(it->key, it->klen))
			snprintf(why, sizeof(why), "get '%s': key begins with the reserved prefix "
				 "fe x 8", kshow);
		else if (ret == -EINVAL)
			sh_key_check("get", b->slice, kshow, it->klen, why, sizeof(why));
		else
			snprintf(why, sizeof(why), "get '%s': %s", kshow, strerror(-ret));
		item_result(b, sl, ret, NULL, 0, why);
	}
	/* orders no op took (orders live in `order`; wk holds the same) */
	for (size_t i = 0; order && i < k; i++)
		sh_order_release(&order[i].o);
	free(wk);
	free(order);
	free(start);
	advance(b);
}

SHELF_API int shelf_get_batch(struct shelf *s, const char *slice,
			      const struct shelf_batch_item *items, size_t n, unsigned flags,
			      shelf_batch_fn cb, void *arg, char *err, size_t errlen)
{
	struct batch b = { 0 };
	int ret = 0;

	if (!slice || !*slice || !cb || (n && !items))
		return sh_fail(err, errlen, -EINVAL, "get-batch: a slice, items and a callback are needed");
	b.ring = calloc(W, sizeof(*b.ring));
	if (!b.ring)
		return -ENOMEM;
	b.s = s;
	b.slice = slice;
	b.items = items;
	b.n = n;
	b.flags = flags;
	b.cb = cb;
	b.arg = arg;
	b.err = err;
	b.errlen = errlen;
	while (!b.stop && b.low < n) {
		size_t low = b.low, admitted = b.next_admit;

		batch_admit(&b);
		ret = shelf_run(s, -1);
		if (ret < 0) {
			sh_fail(err, errlen, ret, "get-batch: %s", strerror(-ret));
			break;
		}
		if (b.low == low && b.next_admit == admitted) {
			/* every operation ended and nothing moved: cannot happen but
			 * for a lack of memory */
			ret = sh_fail(err, errlen, -ENOMEM, "get-batch: out of memory");
			break;
		}
	}
	/* a stop leaves operations in flight: let them end (their results are dropped) */
	if (b.stop && shelf_pending(s))
		shelf_run(s, -1);
	for (size_t i = 0; i < W; i++)
		slot_clear(&b.ring[i]);
	free(b.ring);
	if (ret < 0)
		return ret;
	if (b.stop)
		return b.stop_res;
	return b.failed > INT32_MAX ? INT32_MAX : (int)b.failed;
}
