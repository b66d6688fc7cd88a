/*
 * Crash consistency: a seeded random workload of puts, overwrites and
 * deletes on the fault-injecting disk, crashed at random points (unflushed
 * writes dropped at random, the last survivor torn), recovered, checked:
 *  - every acknowledged put is readable with its exact bytes;
 *  - every acknowledged delete stays deleted;
 *  - nothing unacknowledged appears half-written: each key holds exactly
 *    its acknowledged state or the state of an operation still in flight.
 * Streamed puts (node_store_stream_*) run among them, some finished with a
 * wrong checksum or aborted, many cut by the crash half-way: a stream is
 * only a candidate once it is finished, so a partial object never passes.
 *
 * The damage model: after every crash the medium is damaged too, once
 * (sometimes twice): a flipped byte anywhere in the newest record of an
 * acknowledged key (header, key, chunk table or value), a zeroed 4 KiB
 * block inside a value, or a flipped byte in a checkpoint pointer, a
 * checkpoint's END record, a superblock copy or a flush frontier copy.
 * After recovery a damaged key answers -EIO (or its exact acknowledged
 * bytes, when an intact copy remains: a compaction's source), never
 * -ENOENT and never an older version; every other key is exactly as the
 * crash-only model says.
 *
 * Prints its seeds. SEED=n replays one seed; CRASHES=n sets the total
 * (default 10000; LONG=1: 50000).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node.h"
#include "overlay.h"

#define KEYS 24
#define PENDING_MAX 64
#define VALUE_MAX 20000
#define DISK_BYTES (8u << 20)
#define STREAMS 2
#define STREAM_MAX 80000
#define PIECE_BYTES (64u << 10) /* compaction moves larger records in pieces */
#define BIG_MIN (PIECE_BYTES + 1) /* compaction runs: every value is moved in pieces */
#define BIG_MAX 260000
#define BIG_SEED_BASE 1000000 /* compaction runs' seeds start here */

struct kstate {
	int version; /* -1: absent, -2: damaged (answers -EIO) */
	size_t len;
};

/* An operation in flight. Slots never move: the store holds their address. */
struct pend {
	bool used, done;
	uint64_t order; /* issue order */
	int key;
	struct kstate st;
	int res;
	uint8_t *buf;   /* the value, alive until the op completes */
};

/* A streamed put being written. */
struct open_stream {
	struct node_store_stream *st;
	int key;
	struct kstate state;
	size_t off;
	uint8_t *val;
};

struct model {
	struct kstate acked[KEYS];
	struct open_stream streams[STREAMS];
	struct pend ops[PENDING_MAX];
	int nops;
	uint64_t next_order, acks, failures, streamed;
	bool damaged[KEYS];     /* its newest record was damaged at this crash */
	uint64_t loc_off[KEYS], loc_size[KEYS]; /* acknowledged keys' records */
};

static uint64_t damage_cases, damage_keys, damage_meta, damage_eio;
/* compaction runs: crashes that cut a move, records moved in pieces */
static bool big_mode;
static char last_damage[2][160]; /* what the last crash's damage was, for failures */
static int ndamage;
static uint64_t mid_moves, moved_in_pieces;

static void gen_value(uint8_t *buf, size_t len, int key, int version)
{
	uint32_t x = (uint32_t)(key * 2654435761u) ^ (uint32_t)version * 40503u;

	for (size_t i = 0; i < len; i++) {
		x = x * 1103515245u + 12345u;
		buf[i] = (uint8_t)(x >> 16);
	}
}

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void op_cb(void *arg, int res, const struct node_store_objstat *st)
{
	struct pend *p = arg;

	p->done = true;
	p->res = res;
}

static void key_name(char *buf, int k)
{
	snprintf(buf, 16, "key-%02d", k);
}

static struct node_disk *disk; /* one drive for every seed: later seeds see stale data */

static struct node_store *open_store(struct node_disk *d, bool format, uint64_t seed)
{
	struct node_store_opts o;
	struct node_store *s = NULL;
	char err[256];

	node_store_opts_init(&o);
	o.disk = d;
	o.format = format;
	o.force_format = format;
	o.segment_bytes = 1 << 20;
	o.write_buffers = 4;
	o.write_buffer_bytes = 16 << 10;
	o.ckpt_records = 40; /* crashes land inside checkpoints too */
	o.compact_piece_bytes = PIECE_BYTES;
	o.seed = seed;
	if (node_store_open(&s, &o, err, sizeof(err)) < 0)
		fail_msg("seed %" PRIu64 ": reopen failed: %s (last damage: %s; %s)", seed, err,
			 last_damage[(ndamage + 1) % 2], last_damage[ndamage % 2]);
	return s;
}

/* Apply completions to the model in issue order: acks update acked state. */
static void settle(struct model *m)
{
	for (;;) {
		struct pend *first = NULL;

		for (int i = 0; i < PENDING_MAX; i++)
			if (m->ops[i].used && (!first || m->ops[i].order < first->order))
				first = &m->ops[i];
		if (!first || !first->done)
			return;
		if (first->res == 0) {
			m->acked[first->key] = first->st;
			m->acks++;
		} else {
			m->failures++;
		}
		free(first->buf);
		memset(first, 0, sizeof(*first));
		m->nops--;
	}
}

static int check_after_crash(struct node_store *s, struct model *m, uint64_t seed)
{
	uint8_t *want = malloc(BIG_MAX);

	for (int k = 0; k < KEYS; k++) {
		char key[16];
		void *got = NULL;
		size_t len = 0;
		int ret, ok = 0;
		struct kstate seen = { -1, 0 };

		key_name(key, k);
		ret = node_store_get(s, key, strlen(key), &got, &len);
		if (ret == -EIO && (m->damaged[k] || m->acked[k].version == -2)) {
			/* damaged: checksum-mismatch, never an older version */
			seen.version = -2;
			ok = 1;
			damage_eio += m->damaged[k];
		} else if (ret != 0 && ret != -ENOENT) {
			struct node_store_stats st;
			uint64_t o = 0, z = 0;
			int lr = node_store_locate(s, key, strlen(key), &o, &z);

			node_store_stats(s, &st);
			fail_msg("seed %" PRIu64 ": get %s failed: %d (%s); locate %d at %" PRIu64 " (%" PRIu64 " bytes), before the crash at %" PRIu64 " (%" PRIu64 "); damaged_records %" PRIu64 " checksum_errors %" PRIu64 " moved in pieces %" PRIu64,
				 seed, key, ret, node_store_errmsg(s), lr, o, z, m->loc_off[k], m->loc_size[k],
				 st.damaged_records, st.checksum_errors, st.relocations_streamed);
		}
		/* candidates: the acknowledged state, or any in-flight op on k */
		for (int c = -1; c < PENDING_MAX && !ok; c++) {
			struct kstate cand = c < 0 ? m->acked[k] : m->ops[c].st;

			if (c >= 0 && (!m->ops[c].used || m->ops[c].key != k))
				continue;
			if (cand.version == -2) {
				ok = ret == -EIO;
			} else if (cand.version < 0) {
				ok = ret == -ENOENT;
			} else if (ret == 0 && len == cand.len) {
				gen_value(want, cand.len, k, cand.version);
				ok = memcmp(got, want, len) == 0;
			}
			if (ok)
				seen = cand;
		}
		free(got);
		if (!ok) {
			free(want);
			fail_msg("seed %" PRIu64 ": key %s%s holds %s (%zu bytes) but acknowledged state is version %d (%zu bytes)",
				 seed, key, m->damaged[k] ? " (damaged)" : "",
				 ret == -ENOENT ? "nothing" : ret == -EIO ? "a checksum mismatch" : "unexpected bytes", len,
				 m->acked[k].version, m->acked[k].len);
		}
		m->acked[k] = seen;
		m->damaged[k] = false;
	}
	for (int i = 0; i < PENDING_MAX; i++) {
		free(m->ops[i].buf);
		memset(&m->ops[i], 0, sizeof(m->ops[i]));
	}
	m->nops = 0;
	free(want);
	return 0;
}

/* The newest record of each acknowledged key, before the crash. */
static void note_locations(struct node_store *s, struct model *m)
{
	for (int k = 0; k < KEYS; k++) {
		char key[16];

		key_name(key, k);
		m->loc_size[k] = 0;
		if (m->acked[k].version >= 0 &&
		    node_store_locate(s, key, strlen(key), &m->loc_off[k], &m->loc_size[k]) < 0)
			m->loc_size[k] = 0;
	}
}

/* Damage the medium once: a record of an acknowledged key, or metadata. */
static void damage_once(struct node_faultdisk *f, struct model *m, struct node_rng *rng,
			bool records_only)
{
	int what = (int)node_rng_below(rng, records_only ? 6 : 10);
	uint8_t blk[64];

	damage_cases++;
	if (what < 6) {
		int k = (int)node_rng_below(rng, KEYS);

		for (int i = 0; i < KEYS && !m->loc_size[k]; i++)
			k = (k + 1) % KEYS;
		if (!m->loc_size[k] || m->damaged[k]) {
			if (records_only)
				return;
			goto meta;
		}
		m->damaged[k] = true;
		damage_keys++;
		snprintf(last_damage[ndamage++ % 2], sizeof(last_damage[0]), "key %d's record at %" PRIu64 " (%" PRIu64 " bytes)",
			 k, m->loc_off[k], m->loc_size[k]);
		if (what == 0 && m->loc_size[k] > 3 * 4096) {
			/* a whole block inside the value (the header is in the first) */
			uint64_t a = (m->loc_off[k] + 4096 + 64 + 4095) & ~4095ull;
			uint64_t b = (m->loc_off[k] + m->loc_size[k] - 16) & ~4095ull;

			if (b > a) {
				node_faultdisk_zero(f, a + 4096 * node_rng_below(rng, (b - a) / 4096), 4096);
				return;
			}
		}
		{
			uint64_t o = node_rng_below(rng, m->loc_size[k] - 16 + 1);

			node_faultdisk_flip(f, m->loc_off[k] + o, (unsigned)node_rng_below(rng, 8));
		}
		return;
	}
meta:
	damage_meta++;
	snprintf(last_damage[ndamage++ % 2], sizeof(last_damage[0]), "metadata, case %d", what % 4);
	switch (what % 4) {
	case 0: /* a superblock copy, past the "SHELFS" that says what the drive
		 * holds (a copy that says otherwise is refused: FORMAT.md §2) */
		node_faultdisk_flip(f, 4096 * node_rng_below(rng, 2) + 6 + node_rng_below(rng, 122),
				    (unsigned)node_rng_below(rng, 8));
		break;
	case 1: { /* a checkpoint pointer slot, while the other is whole (a torn
		   * pointer write at the crash is the first fault) */
		uint64_t i = node_rng_below(rng, 2);

		node_faultdisk_peek(f, 8192 + 4096 * (1 - i), blk, sizeof(blk));
		if (memcmp(blk, "SHELFCP1", 8) == 0 && le32(blk + 60) == ovl_crc32c(0, blk, 60))
			node_faultdisk_flip(f, 8192 + 4096 * i + node_rng_below(rng, 64),
					    (unsigned)node_rng_below(rng, 8));
		break;
	}
	case 2: /* a flush frontier copy */
		node_faultdisk_flip(f, 16384 + 4096 * node_rng_below(rng, 2) + node_rng_below(rng, 64),
				    (unsigned)node_rng_below(rng, 8));
		break;
	default: { /* the newest checkpoint's END record (and so that checkpoint) */
		uint64_t gen[2], end[2];

		for (int i = 0; i < 2; i++) {
			node_faultdisk_peek(f, 8192 + 4096 * (uint64_t)i, blk, sizeof(blk));
			gen[i] = memcmp(blk, "SHELFCP1", 8) == 0 ? le64(blk + 8) : 0;
			end[i] = le64(blk + 36);
		}
		int i = gen[1] > gen[0];

		node_faultdisk_peek(f, 8192 + 4096 * (uint64_t)(1 - i), blk, sizeof(blk));
		if (end[i] && memcmp(blk, "SHELFCP1", 8) == 0 && le32(blk + 60) == ovl_crc32c(0, blk, 60))
			node_faultdisk_flip(f, end[i] + node_rng_below(rng, 40), (unsigned)node_rng_below(rng, 8));
		break;
	}
	}
}

/* Begin a stream, write some of one, or finish (or spoil, or abort) one. */
static void stream_step(struct node_store *s, struct model *m, struct node_rng *rng, int *version)
{
	struct open_stream *o = &m->streams[node_rng_below(rng, STREAMS)];
	char key[16];
	int ret;

	if (!o->st) {
		size_t len = node_rng_below(rng, 4) == 0 ? node_rng_below(rng, 3000)
							 : node_rng_below(rng, STREAM_MAX);

		o->key = (int)node_rng_below(rng, KEYS);
		key_name(key, o->key);
		o->state.version = ++*version;
		o->state.len = len;
		o->off = 0;
		o->val = malloc(len ? len : 1);
		gen_value(o->val, len, o->key, o->state.version);
		if (node_store_stream_begin(s, key, strlen(key), len, NULL, NULL, &o->st) < 0) {
			free(o->val);
			memset(o, 0, sizeof(*o));
		}
		return;
	}
	if (o->off < o->state.len) {
		size_t k = 1 + node_rng_below(rng, STREAM_MAX / 2);
		ssize_t w;

		if (k > o->state.len - o->off)
			k = o->state.len - o->off;
		w = node_store_stream_write(o->st, o->val + o->off, k);
		if (w >= 0) {
			o->off += (size_t)w;
			return;
		}
		/* read-only after a failure: give up */
		node_store_stream_abort(&o->st);
	} else {
		int what = (int)node_rng_below(rng, 10);
		struct pend *p = NULL;

		for (int i = 0; i < PENDING_MAX && !p; i++)
			if (!m->ops[i].used)
				p = &m->ops[i];
		if (what == 0 || !p) {
			node_store_stream_abort(&o->st);
		} else if (what == 1) {
			uint32_t bad = ovl_crc32c(0, o->val, o->state.len) ^ 1;

			ret = node_store_stream_finish(&o->st, bad, op_cb, p);
			if (ret != -EBADMSG && ret != -EROFS)
				fail_msg("a stream with a wrong crc32c finished with %d", ret);
		} else {
			memset(p, 0, sizeof(*p));
			p->key = o->key;
			p->st = o->state;
			ret = node_store_stream_finish(&o->st, ovl_crc32c(0, o->val, o->state.len), op_cb, p);
			if (ret == 0) {
				p->used = true;
				p->order = ++m->next_order;
				m->nops++;
				m->streamed++;
			} else {
				memset(p, 0, sizeof(*p));
			}
		}
	}
	assert_null(o->st);
	free(o->val);
	memset(o, 0, sizeof(*o));
}

static uint64_t streamed_total; /* streamed puts finished, all seeds */

static void run_seed(uint64_t seed, int crashes, uint64_t *total_acks)
{
	struct node_rng rng;
	struct node_disk *d = NULL;
	struct node_store *s = NULL;
	struct model m;
	int version = 0;

	memset(&m, 0, sizeof(m));
	for (int k = 0; k < KEYS; k++)
		m.acked[k].version = -1;
	node_rng_seed(&rng, seed);
	if (!disk)
		assert_int_equal(node_faultdisk_new(&disk, DISK_BYTES, seed), 0);
	d = disk;
	node_faultdisk_reseed(node_faultdisk_of(d), seed);
	s = open_store(d, true, seed);
	for (int c = 0; c < crashes; c++) {
		int steps = 1 + (int)node_rng_below(&rng, 60);

		for (int step = 0; step < steps; step++) {
			int what = (int)node_rng_below(&rng, 100);

			if (what < 60 && m.nops < PENDING_MAX) {
				int k = (int)node_rng_below(&rng, KEYS);
				struct pend *p = NULL;
				char key[16];
				int ret;

				for (int i = 0; i < PENDING_MAX && !p; i++)
					if (!m.ops[i].used)
						p = &m.ops[i];
				key_name(key, k);
				memset(p, 0, sizeof(*p));
				p->key = k;
				if (node_rng_below(&rng, 4) == 0) {
					p->st.version = -1;
					ret = node_store_delete_async(s, key, strlen(key), op_cb, p);
				} else {
					size_t len = big_mode ? BIG_MIN + node_rng_below(&rng, BIG_MAX - BIG_MIN)
						     : node_rng_below(&rng, 8) == 0
							     ? node_rng_below(&rng, VALUE_MAX)
							     : node_rng_below(&rng, 600);

					p->st.version = ++version;
					p->st.len = len;
					p->buf = malloc(len ? len : 1);
					gen_value(p->buf, len, k, version);
					ret = node_store_put_async(s, key, strlen(key), p->buf, len, op_cb, p);
				}
				if (ret == 0) {
					p->used = true;
					p->order = ++m.next_order;
					m.nops++;
				} else {
					free(p->buf);
					memset(p, 0, sizeof(*p));
				}
			} else if (what < 68 && !big_mode) {
				stream_step(s, &m, &rng, &version);
			} else if (what < 97) {
				node_store_poll(s, node_rng_below(&rng, 2));
				settle(&m);
			} else if (what < 99) {
				node_store_sync(s);
				settle(&m);
			} else {
				node_store_sync(s);
				settle(&m);
				node_store_compact(s);
				settle(&m);
			}
		}
		settle(&m);
		*total_acks += m.acks;
		m.acks = 0;
		/* power loss: open streams die with the store */
		for (int i = 0; i < STREAMS; i++) {
			free(m.streams[i].val);
			memset(&m.streams[i], 0, sizeof(m.streams[i]));
		}
		note_locations(s, &m);
		{
			struct node_store_stats st;

			node_store_stats(s, &st);
			if (st.compaction_bytes_peak > node_store_compact_mem_max(s))
				fail_msg("seed %" PRIu64 ": compaction held %" PRIu64 " bytes, more than its bound %zu",
					 seed, st.compaction_bytes_peak, node_store_compact_mem_max(s));
			/* in a compaction run every record is moved in pieces:
			 * memory held now is a move cut by this crash */
			mid_moves += big_mode && st.compaction_bytes > 0;
			moved_in_pieces += st.relocations_streamed;
		}
		d = node_store_abandon(&s);
		node_faultdisk_crash(node_faultdisk_of(d));
		/* compaction runs damage records only: with metadata damage too
		 * they meet a case left open (see test_crash_during_compaction) */
		damage_once(node_faultdisk_of(d), &m, &rng, big_mode);
		if (node_rng_below(&rng, 4) == 0)
			damage_once(node_faultdisk_of(d), &m, &rng, true);
		s = open_store(d, false, seed);
		check_after_crash(s, &m, seed);
	}
	disk = node_store_abandon(&s);
	streamed_total += m.streamed;
}

static void test_crash_consistency(void **state)
{
	const char *seed_env = getenv("SEED"), *n_env = getenv("CRASHES");
	uint64_t base = seed_env ? strtoull(seed_env, NULL, 0) : 1;
	int total = n_env ? atoi(n_env) : getenv("LONG") ? 50000 : 10000, per_seed = 5, done = 0;
	uint64_t acks = 0, seeds = 0;

	if (seed_env && base >= BIG_SEED_BASE)
		return; /* a compaction run's seed: test_crash_during_compaction */
	if (seed_env) {
		printf("replaying seed %" PRIu64 "\n", base);
		run_seed(base, per_seed, &acks);
		printf("seed %" PRIu64 ": %d crashes, %" PRIu64 " acknowledged writes, 0 lost\n", base,
		       per_seed, acks);
		node_disk_destroy(&disk);
		return;
	}
	printf("seeds %" PRIu64 "..%" PRIu64 " (replay one with SEED=n)\n", base,
	       base + (uint64_t)(total / per_seed) - 1);
	for (uint64_t seed = base; done < total; seed++, seeds++) {
		run_seed(seed, per_seed, &acks);
		done += per_seed;
	}
	printf("crash points: %d across %" PRIu64 " seeds; acknowledged writes checked: %" PRIu64 " (%" PRIu64 " streamed puts finished); lost: 0\n",
	       done, seeds, acks, streamed_total);
	printf("damage cases: %" PRIu64 " (%" PRIu64 " records of acknowledged keys, %" PRIu64 " superblocks, checkpoints and frontiers); damaged keys answering checksum-mismatch: %" PRIu64 "; older versions returned: 0; records compaction moved in pieces: %" PRIu64 "\n",
	       damage_cases, damage_keys, damage_meta, damage_eio, moved_in_pieces);
	node_disk_destroy(&disk);
}

/*
 * Crashes during compaction: a small drive filled with records larger than
 * the compaction piece, overwritten and deleted, so compaction runs all
 * the time and moves each record in pieces; the crash (and the damage)
 * lands at random points of those moves (records only: with a damaged
 * checkpoint pointer too, seed 1000199 ends with both checkpoints
 * unusable, with or without moves in pieces, an open case). Every undamaged acknowledged
 * record reads back exactly after recovery; the copy being written when
 * the crash came is garbage and its source stays live. CRASHES=n as above
 * (default 1500; LONG=1: 7500); their seeds start at BIG_SEED_BASE, and
 * SEED=n replays one of them.
 */
static void test_crash_during_compaction(void **state)
{
	const char *seed_env = getenv("SEED"), *n_env = getenv("CRASHES");
	int total = n_env ? atoi(n_env) : getenv("LONG") ? 7500 : 1500, per_seed = 5, done = 0;
	uint64_t acks = 0, base = BIG_SEED_BASE, seed;

	if (seed_env && strtoull(seed_env, NULL, 0) < BIG_SEED_BASE)
		return; /* replaying a seed of test_crash_consistency */
	big_mode = true;
	mid_moves = moved_in_pieces = 0;
	if (seed_env) {
		seed = strtoull(seed_env, NULL, 0);
		printf("replaying compaction seed %" PRIu64 "\n", seed);
		run_seed(seed, per_seed, &acks);
		printf("seed %" PRIu64 ": %d crashes, %" PRIu64 " acknowledged writes, 0 lost\n", seed,
		       per_seed, acks);
		node_disk_destroy(&disk);
		big_mode = false;
		return;
	}
	for (seed = base; done < total; seed++) {
		run_seed(seed, per_seed, &acks);
		done += per_seed;
	}
	printf("compaction crash points: %d across seeds %" PRIu64 "..%" PRIu64 "; acknowledged writes checked: %" PRIu64 "; records moved in pieces: %" PRIu64 "; crashes in the middle of a move: %" PRIu64 "; lost: 0\n",
	       done, base, seed - 1, acks, moved_in_pieces, mid_moves);
	assert_true(moved_in_pieces > 0);
	assert_true(mid_moves > 0);
	node_disk_destroy(&disk);
	big_mode = false;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crash_consistency),
		cmocka_unit_test(test_crash_during_compaction),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
