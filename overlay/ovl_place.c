#include "ovl_place.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define PLACE_DOMAIN "shelf-place-v1"

/* A uniform number in (0, 1) from (member id, key). */
static double unit_hash(const uint8_t id[32], const void *key, size_t klen)
{
	crypto_generichash_state st;
	uint8_t out[8];
	uint64_t v = 0;

	crypto_generichash_init(&st, (const uint8_t *)PLACE_DOMAIN, sizeof(PLACE_DOMAIN) - 1,
				sizeof(out));
	crypto_generichash_update(&st, id, 32);
	crypto_generichash_update(&st, key, klen);
	crypto_generichash_final(&st, out, sizeof(out));
	for (int i = 0; i < 8; i++)
		v = v << 8 | out[i];
	/* 53 bits, shifted off zero: never 0, never 1 */
	return ((double)(v >> 11) + 0.5) / 9007199254740992.0;
}

static bool same(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

/* ids[i]: the same small number for members whose field is the same
 * string (NULL counts as ""), so the loop below compares numbers, not
 * strings: with R chosen out of n it compares n * R^2 domains. */
static void domain_ids(const struct ovl_place_member *m, size_t n, size_t field, unsigned *ids)
{
	unsigned next = 0;

	for (size_t i = 0; i < n; i++) {
		const char *v = *(const char *const *)((const char *)&m[i] + field);

		ids[i] = UINT32_MAX;
		for (size_t k = 0; k < i; k++) {
			const char *w = *(const char *const *)((const char *)&m[k] + field);

			if (same(v, w)) {
				ids[i] = ids[k];
				break;
			}
		}
		if (ids[i] == UINT32_MAX)
			ids[i] = next++;
	}
}

void ovl_place_hash(const struct ovl_place_member *m, size_t n, const void *key, size_t klen,
		    double *lnu)
{
	for (size_t i = 0; i < n; i++)
		lnu[i] = m[i].weight ? -log(unit_hash(m[i].id, key, klen)) : 0;
}

void ovl_place_domains(const struct ovl_place_member *m, size_t n, unsigned *dom)
{
	domain_ids(m, n, offsetof(struct ovl_place_member, site), dom);
	domain_ids(m, n, offsetof(struct ovl_place_member, chassis), dom + n);
	domain_ids(m, n, offsetof(struct ovl_place_member, slot), dom + 2 * n);
}

int ovl_place_pick(const struct ovl_place_member *m, size_t n, const uint64_t *weight,
		   const double *lnu, const unsigned *dom, unsigned replicas, unsigned *out)
{
	const unsigned *site = dom, *chassis = dom + n, *slot = dom + 2 * n;
	double *score;
	int8_t *level;
	unsigned chosen = 0;

	if (!m || !out || !lnu || !dom || replicas == 0 || replicas > OVL_PLACE_REPLICAS_MAX)
		return -EINVAL;
	score = malloc((n ? n : 1) * (sizeof(*score) + sizeof(*level)));
	if (!score)
		return -ENOMEM;
	level = (int8_t *)(score + (n ? n : 1));
	/* -w / ln(u), as w / -ln(u): the same double, bit for bit (a sign
	 * change is exact); a member with no weight, or one whose hash was
	 * not taken (lnu 0), is never chosen. level[i]: how different member
	 * i's domain is from every chosen one (3 new site, 2 new chassis, 1
	 * new slot, 0 none; -1 chosen), kept as members are chosen */
	for (size_t i = 0; i < n; i++) {
		uint64_t w = weight ? weight[i] : m[i].weight;

		score[i] = w && lnu[i] > 0 ? (double)w / lnu[i] : -1;
		level[i] = 3;
	}
	while (chosen < replicas) {
		int best = -1, best_level = -1;

		for (size_t i = 0; i < n; i++) {
			if (score[i] < 0 || level[i] < 0)
				continue;
			if (level[i] > best_level ||
			    (level[i] == best_level && (score[i] > score[best] ||
							(score[i] == score[best] &&
							 memcmp(m[i].id, m[best].id, 32) < 0)))) {
				best = (int)i;
				best_level = level[i];
			}
		}
		if (best < 0)
			break;
		out[chosen++] = (unsigned)best;
		level[best] = -1;
		for (size_t i = 0; i < n; i++) {
			unsigned c = (unsigned)best;
			int8_t l = site[c] != site[i] ? 3
				   : chassis[c] != chassis[i] ? 2
				   : slot[c] != slot[i] ? 1 : 0;

			if (level[i] > l)
				level[i] = l;
		}
	}
	free(score);
	return (int)chosen;
}

int ovl_place(const struct ovl_place_member *m, size_t n, const void *key, size_t klen,
	      unsigned replicas, unsigned *out)
{
	double *lnu;
	unsigned *dom;
	int ret;

	if (!m || !out || replicas == 0 || replicas > OVL_PLACE_REPLICAS_MAX)
		return -EINVAL;
	lnu = malloc((n ? n : 1) * sizeof(*lnu));
	dom = malloc((n ? n : 1) * 3 * sizeof(*dom));
	if (!lnu || !dom) {
		free(lnu);
		free(dom);
		return -ENOMEM;
	}
	ovl_place_hash(m, n, key, klen, lnu);
	ovl_place_domains(m, n, dom);
	ret = ovl_place_pick(m, n, NULL, lnu, dom, replicas, out);
	free(lnu);
	free(dom);
	return ret;
}
