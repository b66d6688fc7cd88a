/*
 * Pacing of background work (hand-offs, repair, scrub): pure pieces with
 * no I/O, so that they can be tested alone. Private to firmware/req.
 *
 *   - a token bucket over the bytes background work moves (rate in
 *     bytes/s, 0: unlimited). It may go into debt by one piece: a piece is
 *     taken whole while any token is left, and the debt is paid back
 *     before the next, so that over any long stretch the bytes moved are
 *     rate x time (plus one piece);
 *   - a duty cycle: background work may start pieces only in the first
 *     duty % of each second (100: always);
 *   - the rate actually achieved, averaged over the last ~10 s;
 *   - the jitter of a schedule (±20 %).
 *
 * Times are monotonic milliseconds. Threading: the loop's thread only.
 * The update agent (firmware/update) paces its fetch with the bucket too.
 */
#ifndef NODE_REQ_BG_H
#define NODE_REQ_BG_H

#include <stdbool.h>
#include <stdint.h>

#define REQ_BG_RATE_MIN_BPS (64u << 10)  /* a limit below this is refused */
#define REQ_BG_PIECE_MIN_BYTES (16u << 10) /* a throttled piece is at least this */
#define REQ_BG_PIECE_MAX_BYTES (256u << 10) /* and at most this */
#define REQ_BG_BURST_MS 100              /* tokens kept at most: this much of the rate */
#define REQ_BG_AVG_SLOTS 10              /* seconds the achieved rate is averaged over */
#define REQ_BG_AVG_IDLE_MS 2000          /* nothing moved this long: the next bytes start a new window */
#define REQ_BG_AVG_MIN_SPAN_MS 250       /* a rate is taken over at least this long */

struct req_bucket {
	uint64_t rate;        /* bytes/s; 0: unlimited */
	int64_t mtok;         /* tokens in byte-milliseconds (bytes x 1000); may be negative */
	uint64_t last_ms;     /* last refill */
};

/* A bucket for rate bytes/s (0: unlimited), full to its burst at now. */
void req_bucket_init(struct req_bucket *b, uint64_t rate_bps, uint64_t now_ms);

/* Change the rate now (tokens kept, clipped to the new burst). */
void req_bucket_set_rate(struct req_bucket *b, uint64_t rate_bps, uint64_t now_ms);

/* The largest piece taken at once under this rate: a tenth of a second's
 * bytes, within [REQ_BG_PIECE_MIN_BYTES, REQ_BG_PIECE_MAX_BYTES]
 * (REQ_BG_PIECE_MAX_BYTES when unlimited). */
uint64_t req_bucket_piece(const struct req_bucket *b);

/* Take up to want bytes now: how many may be moved, at most
 * req_bucket_piece() (0: wait and ask again later, or want was 0). */
uint64_t req_bucket_take(struct req_bucket *b, uint64_t want, uint64_t now_ms);

/* Whether background work may start a piece now under duty percent
 * (1..100) of each second. */
bool req_duty_open(unsigned duty_pct, uint64_t now_ms);

struct req_rate_avg {
	uint64_t slot[REQ_BG_AVG_SLOTS]; /* bytes per second, by (second % slots) */
	uint64_t cur_s;                  /* the second slot[cur_s % slots] counts */
	uint64_t first_ms;               /* the window's start: req_rate_begin(), or its first bytes (0: none yet) */
	uint64_t last_ms;                /* the last bytes counted, or work begun */
};

/* Count bytes moved at now. */
void req_rate_add(struct req_rate_avg *a, uint64_t bytes, uint64_t now_ms);

/* Work that will move bytes started at now: a window that is idle starts
 * here (not at its first bytes), and an open one stays open. */
void req_rate_begin(struct req_rate_avg *a, uint64_t now_ms);

/* Bytes/s over the last ~10 s (over less while fewer have passed since the
 * window's first bytes, but at least REQ_BG_AVG_MIN_SPAN_MS; a window
 * starts again with the first bytes after REQ_BG_AVG_IDLE_MS without any,
 * so that a repair's rate is its own, not averaged with the quiet before
 * it); 0 when nothing moved in that window. */
uint64_t req_rate_bps(const struct req_rate_avg *a, uint64_t now_ms);

/* The ETA of left bytes at bps: seconds, to the nearest (at least 1 while
 * anything is left); 0 when nothing is left; UINT64_MAX while no rate is
 * known (bps 0). */
uint64_t req_eta_s(uint64_t left_bytes, uint64_t bps);

/* interval_ms with ±20 % jitter from a random value: [0.8, 1.2] x interval. */
uint64_t req_jitter_ms(uint64_t interval_ms, uint32_t rnd);

#endif
