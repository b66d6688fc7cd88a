/*
 * The update agent's internals shared with its unit test (firmware/update):
 * the fetch pump's per-tick choice of what each slot does, kept pure so
 * that the test can drive it without a network.
 */
#ifndef NODE_UPDATE_INT_H
#define NODE_UPDATE_INT_H

#include <stdbool.h>
#include <stdint.h>

/* A block's fetch history (candidates are positions in its placement order). */
struct update_blk {
	uint32_t bad;       /* homes that served bytes that do not verify */
	uint32_t tried;     /* homes tried this round without an answer */
	unsigned rounds;    /* rounds over the homes that failed */
	uint64_t next_ms;   /* not before this (backoff) */
	bool busy;          /* a slot fetches it */
};

enum update_pump_act {
	UPDATE_PUMP_NONE,   /* nothing this tick (a call is out, or no block for it) */
	UPDATE_PUMP_ASK,    /* a busy slot asks for its block's next piece */
	UPDATE_PUMP_TAKE,   /* a free slot takes block take[si] and asks for its first piece */
};

/*
 * One tick of the fetch pump over slots 0..n-1: slot_busy[si] (it has a
 * block) and call_out[si] (a piece's GET is out) in; act[si] (enum
 * update_pump_act) and, for UPDATE_PUMP_TAKE, take[si] out. A free slot
 * takes the lowest block not marked in `bitmap` (bit i of byte i/8), not
 * busy and out of its backoff (next_ms <= now_ms), and that block's busy is
 * set. Every busy slot without a call out asks, whether or not a slot
 * before it found a block. Borrows everything.
 */
void update_pump_plan(unsigned n, const bool *slot_busy, const bool *call_out,
		      const uint8_t *bitmap, struct update_blk *blks, uint32_t nblocks,
		      uint64_t now_ms, uint8_t *act, uint32_t *take);

/*
 * What a fetch knows of how fast a home serves: the pieces it answered
 * (an average that follows the last ones) and the pieces asked of it now.
 * A measure older than UPDATE_HOME_TTL_MS is forgotten, so a home that was
 * slow is tried again later.
 */
#define UPDATE_HOME_TTL_MS 10000
#define UPDATE_HOME_SWITCH 4      /* a block mid-way moves to a home this many times faster */

struct update_home {
	uint8_t id[32];
	double rate;        /* bytes per ms (0: not measured) */
	uint64_t last_ms;   /* when it was last measured */
	unsigned inflight;  /* pieces asked of it, not answered yet */
};

/* A piece answered by h (ok: bytes that verify as far as known), `bytes`
 * in `ms`, or failed (ok false: timed out, refused, wrong bytes). */
void update_home_note(struct update_home *h, bool ok, uint64_t bytes, uint64_t ms,
		      uint64_t now_ms);

/*
 * The home position to fetch a block's next piece from, out of n homes in
 * placement order: h[p] (NULL: nothing known), eligible[p] (not bad, not
 * tried this round, live). cur: the position the block's bytes so far came
 * from (-1: a block not begun). A block begun stays with cur while it is
 * eligible, unless another eligible home is measured UPDATE_HOME_SWITCH
 * times faster (the caller then starts the block again there). A new block
 * goes to the eligible home with the most speed per piece in flight; a
 * home not measured counts as the fastest while nothing is asked of it
 * (so each is tried), and as the slowest while something is; ties go to
 * placement order. -1 when none is eligible.
 */
int update_home_pick(struct update_home *const *h, const bool *eligible, int n, int cur,
		     uint64_t now_ms);

#endif
