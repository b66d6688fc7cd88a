/*
 * ovl_place: where an object lives. Weighted rendezvous hashing (highest
 * random weight) over a slice's members, so that clients and nodes compute
 * the same answer from the same map without asking anyone, and a change of
 * membership moves only the objects it must.
 *
 * Each member scores score = -weight / ln(u), where u in (0, 1) comes from
 * a keyed BLAKE2b of (member id, object key); the highest scores win. The
 * weight is the member's capacity. Replicas are spread across failure
 * domains: a member is skipped while another of a not-yet-used slot
 * (chassis, site) remains, so the first copies land on different sites,
 * then chassis, then slots, before any domain holds two.
 * Members whose state is not "up" can be excluded by the caller.
 * The answer does not depend on the order of m[]: equal scores (which
 * need equal weights and equal hashes) go to the lower node id.
 */
#ifndef OVL_PLACE_H
#define OVL_PLACE_H

#include <stddef.h>
#include <stdint.h>

#define OVL_PLACE_REPLICAS_MAX 16

struct ovl_place_member {
	uint8_t id[32];      /* node id (Ed25519 public key) */
	uint64_t weight;     /* capacity in bytes (0: never chosen) */
	const char *site, *chassis, *slot;
};

/*
 * Choose up to `replicas` members for key[0..klen), best first, writing
 * their indexes into out[]. Returns how many were chosen (fewer when fewer
 * members have a weight), -EINVAL or -ENOMEM. O(n x replicas^2).
 */
int ovl_place(const struct ovl_place_member *m, size_t n, const void *key, size_t klen,
	      unsigned replicas, unsigned *out);

/*
 * ovl_place() in parts, for a caller that places one key under several
 * weightings (a client's homes, then its substitutes over the live
 * members) or many keys over one map: the hashing is most of the cost.
 *
 * ovl_place_hash(): lnu[i] = -ln(u) of member i for the key (n doubles),
 * taken for the members whose m[i].weight is not 0 (0 for the others).
 * ovl_place_domains(): dom[0..3n), the members' site, chassis and slot as
 * small numbers; it depends on the members only, not the key.
 * ovl_place_pick(): ovl_place() from those, with weight[i] instead of
 * m[i].weight when weight is not NULL (a member whose hash was not taken
 * is never chosen); the same answer as ovl_place() with those weights.
 */
void ovl_place_hash(const struct ovl_place_member *m, size_t n, const void *key, size_t klen,
		    double *lnu);
void ovl_place_domains(const struct ovl_place_member *m, size_t n, unsigned *dom);
int ovl_place_pick(const struct ovl_place_member *m, size_t n, const uint64_t *weight,
		   const double *lnu, const unsigned *dom, unsigned replicas, unsigned *out);

#endif
