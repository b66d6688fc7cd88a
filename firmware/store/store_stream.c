/*
 * Streamed puts (node_store_stream_*): a RESV record reserves the region,
 * the value is written into it as it arrives, and a COMMIT record makes it
 * visible once every byte is written (struct node_store_stream in
 * store_int.h says how).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "overlay.h"
#include "store_int.h"

/* A finished stream whose commit is not queued yet. */
bool store_streams_finishing(const struct node_store *s)
{
	for (const struct node_store_stream *st = s->streams.list; st; st = st->next)
		if (st->finishing && !st->committed && !st->err)
			return true;
	return false;
}

/* ---- streamed puts ---- */

void store_stream_free(struct node_store_stream *st)
{
	struct node_store *s = st->s;

	for (struct node_store_stream **pp = &s->streams.list; *pp; pp = &(*pp)->next) {
		if (*pp == st) {
			*pp = st->next;
			break;
		}
	}
	/* back to the buffer cache: a fresh 256 KiB buffer per stream costs
	 * page faults on every PUT */
	for (int i = 0; i < 2; i++)
		store_rbuf_put(s, st->b[i].mem, st->b[i].mem_cap);
	free(st->head);
	free(st->table);
	free(st->key);
	free(st);
}

/* Free a stream its owner let go of, once nothing refers to it; a finished
 * one that failed gets its callback first. */
static void stream_maybe_free(struct node_store_stream *st)
{
	struct node_store *s = st->s;

	if (!st->released || st->ios || st->resv || (!st->committed && !st->err))
		return;
	if (st->pinned) {
		s->segs[st->seg].streams--;
		st->pinned = false;
	}
	if (st->commit) {
		/* the queued commit fails with the stream */
		st->commit->u.commit.stream = NULL;
		st->commit->u.commit.err = st->err;
		st->commit = NULL;
	}
	store_stream_free(st);
}

static void stream_wdone(struct node_disk_io *io);

static int stream_submit(struct node_store_stream *st, struct node_disk_io *io, void *buf,
			 size_t len, uint64_t roff)
{
	struct node_store *s = st->s;
	int ret;

	*io = (struct node_disk_io){ .op = DISK_WRITE, .buf = buf, .len = len,
				     .off = st->region_off + roff, .done = stream_wdone, .arg = st };
	ret = node_disk_submit(s->disk, io);
	if (ret < 0) {
		store_go_read_only(s, "cannot queue write at %" PRIu64 ": %s", io->off, strerror(-ret));
		st->err = -EROFS;
		return ret;
	}
	st->ios++;
	s->streams.ios++;
	return 0;
}

/* The record's first blocks: header, key, chunk table, first value bytes. */
static void stream_build_head(struct node_store_stream *st)
{
	struct rec_hdr h = { 0 };

	/* a move's copy is a RELOC naming its source, like one in the log */
	h.type = st->move_from ? REC_RELOC : REC_PUT;
	h.aux = st->move_from;
	h.klen = (uint16_t)st->klen;
	h.vlen = (uint32_t)st->vlen;
	h.flags = st->vlen > REC_CHUNK_BYTES ? REC_FLAG_CHUNKED : 0;
	/* every streamed record has the version extension: the version is
	 * known only at finish, when the region's layout is long fixed */
	h.flags |= REC_FLAG_VER;
	h.hlc = st->ver.hlc;
	h.node = st->ver.node;
	h.prev = st->prev; /* never a link of the log: the RESV's hcrc */
	h.seq = st->seq;
	h.vcrc = st->crc;
	memcpy(st->head + REC_HDR_MAX_BYTES, st->key, st->klen);
	if (st->tlen)
		memcpy(st->head + REC_HDR_MAX_BYTES + st->klen, st->table, st->tlen);
	rec_hdr_pack(&h, st->head);
	h.hcrc = rec_hcrc(st->head, st->key, st->klen, st->table, st->tlen);
	rec_hdr_pack(&h, st->head);
	st->hcrc = h.hcrc;
}

/* Every byte of the region is written: let the queued commit go. */
static void stream_commit(struct node_store_stream *st)
{
	struct op *op = st->commit;

	if (!op) /* it failed meanwhile (read-only) */
		return;
	le_put32(op->rec.owned_val, st->hcrc);
	le_put32(op->rec.owned_val + 4, st->crc);
	le_put64(op->rec.owned_val + 8, st->vlen);
	op->rec.vlen = 16;
	if (st->move_from) {
		/* a move's commit says so, and names the source */
		le_put64(op->rec.owned_val + 16, st->move_from);
		op->rec.vlen = 24;
	}
	op->rec.val = op->rec.owned_val;
	op->u.commit.loc = loc_make(st->region_off, st->rsize);
	op->u.commit.from = st->move_from;
	op->u.commit.seq = st->seq;
	op->u.commit.stream = NULL;
	st->commit = NULL;
	st->committed = true;
	st->pinned = false; /* the commit holds the segment now */
}

/* Submit what can be written; at the end, the head; then the commit. */
static void stream_advance(struct node_store_stream *st)
{
	if (!st->err && st->placed) {
		for (int i = 0; i < 2; i++) {
			struct sbuf *b = &st->b[i];

			if (b->state == SB_FULL &&
			    stream_submit(st, &b->io, b->mem, b->cap, b->roff) == 0)
				b->state = SB_IO;
		}
		/* the checksums are known at finish: the head goes out with the
		 * last value blocks, not after them */
		if (st->finishing && !st->head_io && st->b[0].state != SB_FULL &&
		    st->b[1].state != SB_FULL) {
			stream_build_head(st);
			if (stream_submit(st, &st->head_io_req, st->head, st->head_len, 0) == 0)
				st->head_io = true;
		}
	}
	stream_maybe_free(st);
}

static void stream_wdone(struct node_disk_io *io)
{
	struct node_store_stream *st = io->arg;
	struct node_store *s = st->s;
	bool head = io == &st->head_io_req;

	st->ios--;
	s->streams.ios--;
	if (io->res < 0 || (size_t)io->res != io->len) {
		store_go_read_only(s, "write of %zu bytes at offset %" PRIu64 " failed: %s", io->len, io->off,
			     io->res < 0 ? strerror(-io->res) : "short write");
		st->err = -EROFS;
	}
	if (!head)
		((struct sbuf *)((char *)io - offsetof(struct sbuf, io)))->state = SB_FREE;
	else
		st->head_done = true;
	if (st->head_done && !st->ios && !st->err)
		/* every byte of the region is written: the commit may follow */
		stream_commit(st);
	if (st->released) {
		stream_advance(st);
		return;
	}
	stream_advance(st);
	if (st->want_ready && st->ready) {
		st->want_ready = false;
		st->ready(st->ready_arg); /* last: it may end the stream */
	}
}

/* After serialize: start the writes of newly placed streams, and tell
 * waiting owners about failures. */
void store_streams_kick(struct node_store *s)
{
	for (struct node_store_stream *st = s->streams.list, *next; st; st = next) {
		next = st->next;
		if (!st->kick)
			continue;
		st->kick = false;
		stream_advance(st);
		if (!st->released && st->want_ready && st->ready) {
			st->want_ready = false;
			st->ready(st->ready_arg);
		}
	}
}

void store_stream_placed(struct node_store *s, struct op *op, uint32_t si)
{
	struct node_store_stream *st = op->u.resv.stream;

	op->u.resv.stream = NULL;
	st->resv = NULL;
	st->placed = true;
	st->region_off = align_up(op->rec.pos + op->rec.rsize, DISK_BLOCK_BYTES);
	st->seq = op->rec.seq;
	st->prev = s->chain; /* the RESV's hcrc */
	st->seg = si;
	s->segs[si].streams++;
	st->pinned = true;
	st->kick = true;
}

void store_stream_resv_failed(struct node_store *s, struct op *op, int res)
{
	struct node_store_stream *st = op->u.resv.stream;

	op->u.resv.stream = NULL;
	st->resv = NULL;
	st->err = res;
	st->kick = true;
}

static int stream_begin(struct node_store *s, const void *key, size_t klen, uint64_t size,
			uint64_t move_from, const struct node_store_ver *ver,
			void (*ready)(void *arg), void *arg, struct node_store_stream **out)
{
	struct node_store_stream *st = NULL;
	struct op *op = NULL;
	uint64_t rsize;
	int ret = store_check_key(s, key, klen);

	*out = NULL;
	if (ret < 0)
		return ret;
	rsize = rec_size(REC_EXT_BYTES + klen, size);
	if (size > NODE_STORE_VALUE_MAX ||
	    DISK_BLOCK_BYTES + align_up(rsize, DISK_BLOCK_BYTES) > s->seg_bytes - 2 * DISK_BLOCK_BYTES) {
		store_set_err(s, "value of %" PRIu64 " bytes refused (at most %u bytes, and a record must fit in one %" PRIu64 "-byte segment)",
			size, NODE_STORE_VALUE_MAX, s->seg_bytes);
		return -E2BIG;
	}
	if (s->read_only) {
		store_set_err(s, "store on '%s' is read-only: %s", s->disk->name, s->ro_reason);
		return -EROFS;
	}
	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->s = s;
	st->move_from = move_from;
	if (ver)
		st->ver = *ver;
	st->klen = klen;
	st->vlen = size;
	st->rsize = rsize;
	st->region_len = align_up(rsize, DISK_BLOCK_BYTES);
	st->tlen = rec_table_bytes(size);
	st->hlen = REC_HDR_MAX_BYTES + klen + st->tlen;
	st->head_len = (size_t)align_up(st->hlen, DISK_BLOCK_BYTES);
	st->next_roff = st->head_len;
	st->ready = ready;
	st->ready_arg = arg;
	st->key = malloc(klen);
	st->table = calloc(1, st->tlen ? st->tlen : 1);
	st->head = store_alloc_blocks(st->head_len);
	if (!st->key || !st->table || !st->head) {
		ret = -ENOMEM;
		goto fail;
	}
	memcpy(st->key, key, klen);
	memset(st->head, 0, st->head_len);
	for (int i = 0; i < 2 && st->region_len > st->head_len; i++) {
		st->b[i].mem = store_rbuf_get(s, s->o.write_buffer_bytes, &st->b[i].mem_cap);
		if (!st->b[i].mem) {
			ret = -ENOMEM;
			goto fail;
		}
		st->b[i].state = SB_FREE;
	}
	op = store_op_new(s, OP_RESV, NULL, 0);
	if (!op) {
		ret = -ENOMEM;
		goto fail;
	}
	op->rec.val = (const uint8_t *)"";
	op->u.resv.region_len = st->region_len;
	op->u.resv.stream = st;
	op->u.resv.move = move_from != 0;
	st->resv = op;
	store_q_push(&s->appendq, op);
	st->next = s->streams.list;
	s->streams.list = st;
	*out = st;
	return 0;
fail:
	store_stream_free(st);
	return ret;
}

int node_store_stream_begin(struct node_store *s, const void *key, size_t klen, uint64_t size,
			    void (*ready)(void *arg), void *arg, struct node_store_stream **out)
{
	return stream_begin(s, key, klen, size, 0, NULL, ready, arg, out);
}

int store_stream_begin_move(struct node_store *s, const void *key, size_t klen, uint64_t size,
			    uint64_t from, const struct node_store_ver *ver,
			    void (*ready)(void *arg), void *arg, struct node_store_stream **out)
{
	return stream_begin(s, key, klen, size, from, ver, ready, arg, out);
}

/* Running checksums: the whole value's and each 64 KiB chunk's. */
static void stream_crc(struct node_store_stream *st, const uint8_t *p, size_t n)
{
	uint64_t v = st->got;

	st->crc = ovl_crc32c(st->crc, p, n);
	while (st->tlen && n) {
		size_t take = REC_CHUNK_BYTES - (size_t)(v % REC_CHUNK_BYTES);

		if (take > n)
			take = n;
		st->ccrc = ovl_crc32c(st->ccrc, p, take);
		v += take;
		p += take;
		n -= take;
		if (v % REC_CHUNK_BYTES == 0 || v == st->vlen) {
			le_put32(st->table + 4 * ((v - 1) / REC_CHUNK_BYTES), st->ccrc);
			st->ccrc = 0;
		}
	}
}

ssize_t node_store_stream_write(struct node_store_stream *st, const void *buf, size_t len)
{
	struct node_store *s = st->s;
	const uint8_t *p = buf;
	size_t done = 0;

	if (st->err)
		return st->err;
	if (st->finishing || st->released || len > st->vlen - st->got) {
		store_set_err(s, "stream of '%.*s': %zu bytes more than the %" PRIu64 " declared", (int)st->klen,
			(const char *)st->key, len, st->vlen);
		return -EINVAL;
	}
	while (done < len) {
		uint64_t roff = st->hlen + st->got; /* where the next byte goes in the region */
		size_t n = len - done;
		struct sbuf *b = NULL;

		if (roff < st->head_len) {
			if (n > st->head_len - roff)
				n = (size_t)(st->head_len - roff);
			memcpy(st->head + roff, p + done, n);
		} else {
			b = &st->b[st->cur];
			if (b->state == SB_FREE) {
				b->roff = st->next_roff;
				b->cap = (size_t)(st->region_len - b->roff < s->o.write_buffer_bytes
							  ? st->region_len - b->roff : s->o.write_buffer_bytes);
				b->fill = 0;
				b->state = SB_FILL;
				st->next_roff += b->cap;
			}
			if (b->state != SB_FILL) {
				st->want_ready = true; /* both buffers on their way to the disk */
				break;
			}
			if (n > b->cap - b->fill)
				n = b->cap - b->fill;
			memcpy(b->mem + b->fill, p + done, n);
			b->fill += n;
		}
		stream_crc(st, p + done, n);
		st->got += n;
		done += n;
		if (b && st->got == st->vlen) {
			/* the record's padding to its block */
			memset(b->mem + b->fill, 0, b->cap - b->fill);
			b->fill = b->cap;
		}
		if (b && b->fill == b->cap) {
			b->state = SB_FULL;
			st->cur ^= 1;
		}
	}
	stream_advance(st);
	return (ssize_t)done;
}

size_t node_store_stream_bytes(const struct node_store *s)
{
	return 2 * s->o.write_buffer_bytes + 3 * DISK_BLOCK_BYTES + sizeof(struct node_store_stream);
}

uint32_t node_store_stream_crc(const struct node_store_stream *st)
{
	return st->crc;
}

static int stream_finish(struct node_store_stream **stp, uint32_t crc,
			 const struct node_store_ver *ver, node_store_cb cb, void *arg)
{
	struct node_store_stream *st = *stp;
	struct node_store *s = st->s;
	struct op *op = NULL;
	int ret = st->err;

	if (ret == 0 && st->got != st->vlen) {
		store_set_err(s, "stream of '%.*s' ended after %" PRIu64 " of %" PRIu64 " bytes", (int)st->klen,
			(const char *)st->key, st->got, st->vlen);
		ret = -EINVAL;
	}
	if (ret == 0 && st->crc != crc) {
		store_set_err(s, "value of '%.*s' has crc32c %08x, not %08x; nothing stored", (int)st->klen,
			(const char *)st->key, st->crc, crc);
		ret = -EBADMSG;
	}
	if (ret < 0) {
		node_store_stream_abort(stp);
		return ret;
	}
	/* the commit takes its place in the log's order now, and waits there
	 * for the region's writes: later operations apply after it */
	op = store_op_new(s, OP_COMMIT, st->key, st->klen);
	if (op)
		op->rec.owned_val = malloc(24);
	if (!op || !op->rec.owned_val) {
		store_op_free(op);
		node_store_stream_abort(stp);
		return -ENOMEM;
	}
	op->rec.val = op->rec.owned_val;
	op->rec.vlen = st->move_from ? 24 : 16;
	if (ver) {
		/* the record and its COMMIT carry it; the check is made when
		 * the COMMIT takes its place in the log */
		st->ver = *ver;
		op->ver = *ver;
	}
	op->cb = cb;
	op->arg = arg;
	op->u.commit.stream = st;
	st->commit = op;
	store_q_push(&s->appendq, op);
	st->finishing = true;
	st->released = true;
	*stp = NULL;
	stream_advance(st);
	return 0;
}

int node_store_stream_finish(struct node_store_stream **stp, uint32_t crc, node_store_cb cb,
			     void *arg)
{
	return stream_finish(stp, crc, NULL, cb, arg);
}

int node_store_stream_finish_ver(struct node_store_stream **stp, uint32_t crc,
				 const struct node_store_ver *ver, node_store_cb cb, void *arg)
{
	if (!ver || !ver_is_set(ver) || (*stp)->move_from) {
		store_set_err((*stp)->s, "version (0, 0) refused: a versioned write needs a version");
		node_store_stream_abort(stp);
		return -EINVAL;
	}
	return stream_finish(stp, crc, ver, cb, arg);
}

void node_store_stream_abort(struct node_store_stream **stp)
{
	struct node_store_stream *st = stp ? *stp : NULL;

	if (!st)
		return;
	*stp = NULL;
	st->released = true;
	st->finishing = false;
	if (!st->err)
		st->err = -ECANCELED;
	if (st->resv && !st->resv->rec.started) {
		/* never placed (maybe waiting for space): take the reservation back */
		struct opq *q = &st->s->appendq;
		struct op *prev = NULL;

		if (store_space_unhold(st->s, st->resv)) {
			store_op_free(st->resv);
			q = NULL;
		}
		for (struct op *op = q ? q->head : NULL; op; prev = op, op = op->next) {
			if (op != st->resv)
				continue;
			if (prev)
				prev->next = op->next;
			else
				q->head = op->next;
			if (q->tail == op)
				q->tail = prev;
			q->n--;
			store_op_free(op);
			break;
		}
		st->resv = NULL;
	}
	stream_maybe_free(st);
}
