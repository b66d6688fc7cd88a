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

#endif
