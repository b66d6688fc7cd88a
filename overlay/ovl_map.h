/*
 * ovl_map: the rule by which one slice map may replace another
 * (docs/PROTOCOL.md 6.5, "Succession"), shared by nodes (firmware/ctl) and
 * clients (tools/lib), so that both accept and refuse the same maps.
 *
 * A map `next` may replace the map `held` of the same slice when:
 *   1. next->epoch > held->epoch (never the same epoch twice, never back);
 *   2. every member of held is in next (in any state: up, down, out), or
 *      next carries a `left` record for it whose epoch is above
 *      held->epoch (removed after what held shows) and at most next->epoch.
 * Members may be added and their fields (state, certificate, capacity, ...)
 * may change freely. A delta is checked the same way against the map it
 * applies to (ovl_map_delta_check()).
 *
 * Pure functions: no allocation, no logging, no state.
 */
#ifndef OVL_MAP_H
#define OVL_MAP_H

#include <stddef.h>

#include "ovl_msg.h"

/*
 * May `next` replace `held` (both of one slice)? 0 yes; otherwise err says
 * why, naming the slice, both epochs and (for a dropped member) the
 * fingerprints of up to 4 members dropped without a record and their count:
 *   -EINVAL  the slices differ
 *   -ESTALE  next->epoch is not above held->epoch
 *   -EPERM   next drops a member of held without a record of its removal
 * held == NULL (no map held yet) accepts any next.
 */
int ovl_map_succession_check(const struct ovl_msg_map *held, const struct ovl_msg_map *next,
			     char *err, size_t errlen);

/*
 * May delta d apply to `held`? The same rule for the map the delta leads
 * to: d->base_epoch must be held->epoch (-ESTALE otherwise), and every
 * member of held that d removes needs a record in d->left with an epoch in
 * (base_epoch, epoch] (-EPERM otherwise, err as above).
 */
int ovl_map_delta_check(const struct ovl_msg_map *held, const struct ovl_msg_map_delta *d,
			char *err, size_t errlen);

#endif
