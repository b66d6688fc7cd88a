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

int ovl_place(const struct ovl_place_member *m, size_t n, const void *key, size_t klen,
	      unsigned replicas, unsigned *out)
{
	double *score = NULL;
	unsigned *site = NULL, *chassis = NULL, *slot = NULL;
	unsigned chosen = 0;

	if (!m || !out || replicas == 0 || replicas > OVL_PLACE_REPLICAS_MAX)
		return -EINVAL;
	score = malloc((n ? n : 1) * sizeof(*score));
	site = malloc((n ? n : 1) * 3 * sizeof(*site));
	if (!score || !site) {
		free(score);
		free(site);
		return -ENOMEM;
	}
	chassis = site + (n ? n : 1);
	slot = chassis + (n ? n : 1);
	domain_ids(m, n, offsetof(struct ovl_place_member, site), site);
	domain_ids(m, n, offsetof(struct ovl_place_member, chassis), chassis);
	domain_ids(m, n, offsetof(struct ovl_place_member, slot), slot);
	for (size_t i = 0; i < n; i++)
		score[i] = m[i].weight ? -(double)m[i].weight / log(unit_hash(m[i].id, key, klen)) : -1;
	while (chosen < replicas) {
		int best = -1, best_level = -1;

		/* level: how different this member's domain is from every chosen
		 * one (3 new site, 2 new chassis, 1 new slot, 0 none) */
		for (size_t i = 0; i < n; i++) {
			int level = 3;
			bool taken = false;

			if (score[i] < 0)
				continue;
			for (unsigned j = 0; j < chosen; j++) {
				unsigned c = out[j];
				int l;

				if (c == i) {
					taken = true;
					break;
				}
				l = site[c] != site[i] ? 3
				    : chassis[c] != chassis[i] ? 2
				    : slot[c] != slot[i] ? 1 : 0;
				if (l < level)
					level = l;
			}
			if (taken)
				continue;
			if (level > best_level ||
			    (level == best_level && (score[i] > score[best] ||
						     (score[i] == score[best] &&
						      memcmp(m[i].id, m[best].id, 32) < 0)))) {
				best = (int)i;
				best_level = level;
			}
		}
		if (best < 0)
			break;
		out[chosen++] = (unsigned)best;
	}
	free(score);
	free(site);
	return (int)chosen;
}
