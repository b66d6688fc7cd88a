#include "req_bg.h"

#include <string.h>

static int64_t burst_mtok(const struct req_bucket *b)
{
	int64_t burst = (int64_t)(b->rate * REQ_BG_BURST_MS / 1000);
	int64_t piece = (int64_t)req_bucket_piece(b);

	return (burst > piece ? burst : piece) * 1000;
}

static void refill(struct req_bucket *b, uint64_t now_ms)
{
	uint64_t dt;

	if (now_ms <= b->last_ms)
		return;
	dt = now_ms - b->last_ms;
	b->last_ms = now_ms;
	/* rate x dt byte-ms; capped so that a long pause cannot overflow */
	if (dt > 3600000)
		dt = 3600000;
	b->mtok += (int64_t)(b->rate * dt);
	if (b->mtok > burst_mtok(b))
		b->mtok = burst_mtok(b);
}

void req_bucket_init(struct req_bucket *b, uint64_t rate_bps, uint64_t now_ms)
{
	memset(b, 0, sizeof(*b));
	b->rate = rate_bps;
	b->last_ms = now_ms;
	b->mtok = burst_mtok(b);
}

void req_bucket_set_rate(struct req_bucket *b, uint64_t rate_bps, uint64_t now_ms)
{
	refill(b, now_ms);
	b->rate = rate_bps;
	if (b->mtok > burst_mtok(b))
		b->mtok = burst_mtok(b);
}

uint64_t req_bucket_piece(const struct req_bucket *b)
{
	uint64_t p = b->rate / 10;

	if (!b->rate || p > REQ_BG_PIECE_MAX_BYTES)
		return REQ_BG_PIECE_MAX_BYTES;
	return p < REQ_BG_PIECE_MIN_BYTES ? REQ_BG_PIECE_MIN_BYTES : p;
}

uint64_t req_bucket_take(struct req_bucket *b, uint64_t want, uint64_t now_ms)
{
	uint64_t piece = req_bucket_piece(b);

	if (want > piece)
		want = piece;
	if (!b->rate || !want)
		return want;
	refill(b, now_ms);
	if (b->mtok <= 0)
		return 0; /* the last piece's debt is not paid back yet */
	b->mtok -= (int64_t)want * 1000;
	return want;
}

bool req_duty_open(unsigned duty_pct, uint64_t now_ms)
{
	return duty_pct >= 100 || now_ms % 1000 < (uint64_t)duty_pct * 10;
}

static void rate_roll(struct req_rate_avg *a, uint64_t now_ms)
{
	uint64_t s = now_ms / 1000;

	if (s <= a->cur_s)
		return;
	if (s - a->cur_s >= REQ_BG_AVG_SLOTS) {
		memset(a->slot, 0, sizeof(a->slot));
	} else {
		for (uint64_t t = a->cur_s + 1; t <= s; t++)
			a->slot[t % REQ_BG_AVG_SLOTS] = 0;
	}
	a->cur_s = s;
}

void req_rate_begin(struct req_rate_avg *a, uint64_t now_ms)
{
	if (!a->first_ms || now_ms > a->last_ms + REQ_BG_AVG_IDLE_MS) {
		memset(a->slot, 0, sizeof(a->slot));
		a->cur_s = now_ms / 1000;
		a->first_ms = now_ms ? now_ms : 1;
	}
	if (now_ms > a->last_ms)
		a->last_ms = now_ms;
}

void req_rate_add(struct req_rate_avg *a, uint64_t bytes, uint64_t now_ms)
{
	req_rate_begin(a, now_ms);
	rate_roll(a, now_ms);
	a->slot[a->cur_s % REQ_BG_AVG_SLOTS] += bytes;
}

uint64_t req_rate_bps(const struct req_rate_avg *a, uint64_t now_ms)
{
	uint64_t sum = 0, span, now_s = now_ms / 1000;

	if (!a->first_ms)
		return 0;
	/* the seconds of the window that the slots still hold */
	for (uint64_t i = 0; i < REQ_BG_AVG_SLOTS && i <= now_s; i++) {
		uint64_t t = now_s - i;

		if (t <= a->cur_s && a->cur_s - t < REQ_BG_AVG_SLOTS)
			sum += a->slot[t % REQ_BG_AVG_SLOTS];
	}
	if (!sum)
		return 0;
	/* the window: the full seconds before this one, and this one so far */
	span = (REQ_BG_AVG_SLOTS - 1) * 1000 + now_ms % 1000;
	if (now_ms - a->first_ms < span)
		span = now_ms - a->first_ms;
	if (span < REQ_BG_AVG_MIN_SPAN_MS)
		span = REQ_BG_AVG_MIN_SPAN_MS; /* a first burst is not a rate of its own */
	return sum * 1000 / span;
}

uint64_t req_eta_s(uint64_t left_bytes, uint64_t bps)
{
	if (!left_bytes)
		return 0;
	if (!bps)
		return UINT64_MAX;
	/* to the nearest second (rounding up would add half a second on
	 * average: a short job's ETA would read long), at least 1 */
	return left_bytes < bps ? 1 : (left_bytes + bps / 2) / bps;
}

uint64_t req_jitter_ms(uint64_t interval_ms, uint32_t rnd)
{
	/* 800..1200 per mille */
	return interval_ms / 1000 * (800 + rnd % 401) + interval_ms % 1000 * (800 + rnd % 401) / 1000;
}
