/*
 * brk_rate: a token bucket per key, so that one client flooding the broker
 * cannot starve the others. Keys are hashed (SipHash with a random key, so
 * a client cannot aim at another's bucket) onto a fixed number of buckets:
 * memory is bounded whatever the number of keys; two keys that share a
 * bucket share its rate, which costs a little fairness, never safety.
 */
#include "broker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

struct bucket {
	uint64_t last_ms;  /* last refill */
	uint32_t milli;    /* tokens held, in thousandths */
	uint32_t told_ms;  /* low 32 bits of the last time a refusal was answered */
	bool told;
};

struct brk_rate {
	unsigned per_s, burst, n;
	uint8_t sipkey[crypto_shorthash_KEYBYTES];
	struct bucket *b;
};

int brk_rate_new(struct brk_rate **out, unsigned per_s, unsigned burst, unsigned buckets)
{
	struct brk_rate *r = NULL;

	if (!per_s || !burst || !buckets || burst > 4000000)
		return -EINVAL;
	if (sodium_init() < 0)
		return -EIO;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->b = calloc(buckets, sizeof(*r->b));
	if (!r->b) {
		free(r);
		return -ENOMEM;
	}
	r->per_s = per_s;
	r->burst = burst;
	r->n = buckets;
	randombytes_buf(r->sipkey, sizeof(r->sipkey));
	for (unsigned i = 0; i < buckets; i++)
		r->b[i].milli = burst * 1000u;
	*out = r;
	return 0;
}

void brk_rate_destroy(struct brk_rate **r)
{
	if (!r || !*r)
		return;
	free((*r)->b);
	free(*r);
	*r = NULL;
}

bool brk_rate_take(struct brk_rate *r, const uint8_t key[OVL_KEY_BYTES], uint64_t now_ms)
{
	return brk_rate_check(r, key, now_ms) == BRK_RATE_OK;
}

enum brk_rate_verdict brk_rate_check(struct brk_rate *r, const uint8_t key[OVL_KEY_BYTES],
				     uint64_t now_ms)
{
	uint8_t h[crypto_shorthash_BYTES];
	uint64_t idx, add;
	struct bucket *b;

	crypto_shorthash(h, key, OVL_KEY_BYTES, r->sipkey);
	memcpy(&idx, h, sizeof(idx));
	b = &r->b[idx % r->n];
	if (now_ms > b->last_ms) {
		add = (now_ms - b->last_ms) * r->per_s; /* thousandths of a token */
		if (add > r->burst * 1000ull - b->milli)
			b->milli = r->burst * 1000u;
		else
			b->milli += (uint32_t)add;
		b->last_ms = now_ms;
	}
	if (b->milli < 1000) {
		/* one answer per bucket and BRK_RATE_TELL_MS, however fast the flood */
		if (!b->told || (uint32_t)now_ms - b->told_ms >= BRK_RATE_TELL_MS) {
			b->told = true;
			b->told_ms = (uint32_t)now_ms;
			return BRK_RATE_REFUSE;
		}
		return BRK_RATE_DROP;
	}
	b->milli -= 1000;
	return BRK_RATE_OK;
}
