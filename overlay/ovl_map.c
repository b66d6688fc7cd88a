/*
 * ovl_map: map succession. See ovl_map.h.
 */
#include "ovl_map.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "ovl_id.h"

#define DROPPED_NAMED_MAX 4 /* fingerprints named in an error */

static bool listed(const struct ovl_msg_member *m, uint32_t n, const uint8_t *id)
{
	for (uint32_t i = 0; i < n; i++)
		if (memcmp(m[i].id, id, OVL_MSG_ID_BYTES) == 0)
			return true;
	return false;
}

static bool recorded(const struct ovl_msg_left *l, uint32_t n, const uint8_t *id,
		     uint64_t after, uint64_t upto)
{
	for (uint32_t i = 0; i < n; i++)
		if (memcmp(l[i].id, id, OVL_MSG_ID_BYTES) == 0 && l[i].epoch > after &&
		    l[i].epoch <= upto)
			return true;
	return false;
}

/* Append ", <fp>" for a dropped member to names (up to DROPPED_NAMED_MAX). */
static void name_dropped(char *names, size_t cap, unsigned count, const uint8_t *id)
{
	char fp[OVL_ID_FP_BYTES];
	size_t len = strlen(names);

	if (count > DROPPED_NAMED_MAX)
		return;
	ovl_nodeid_fingerprint(id, fp);
	snprintf(names + len, cap - len, "%s%s", len ? ", " : "", fp);
}

static int dropped_error(const char *what, const char *slice, uint64_t held_epoch,
			 uint64_t next_epoch, unsigned count, const char *names, char *err,
			 size_t errlen)
{
	snprintf(err, errlen, "%s of slice '%s' epoch %llu drops %u member%s of the map held "
		 "(epoch %llu) without a record of removal: %s%s", what, slice,
		 (unsigned long long)next_epoch, count, count == 1 ? "" : "s",
		 (unsigned long long)held_epoch, names, count > DROPPED_NAMED_MAX ? ", ..." : "");
	return -EPERM;
}

int ovl_map_succession_check(const struct ovl_msg_map *held, const struct ovl_msg_map *next,
			     char *err, size_t errlen)
{
	char names[DROPPED_NAMED_MAX * (OVL_ID_FP_BYTES + 2) + 1] = "";
	unsigned dropped = 0;

	if (!held)
		return 0;
	if (strcmp(held->slice, next->slice) != 0) {
		snprintf(err, errlen, "map of slice '%s' cannot replace a map of slice '%s'",
			 next->slice, held->slice);
		return -EINVAL;
	}
	if (next->epoch <= held->epoch) {
		snprintf(err, errlen, "map of slice '%s' epoch %llu is not newer than the map held "
			 "(epoch %llu)", next->slice, (unsigned long long)next->epoch,
			 (unsigned long long)held->epoch);
		return -ESTALE;
	}
	for (uint32_t i = 0; i < held->n_members; i++) {
		const uint8_t *id = held->members[i].id;

		if (listed(next->members, next->n_members, id) ||
		    recorded(next->left, next->n_left, id, held->epoch, next->epoch))
			continue;
		name_dropped(names, sizeof(names), ++dropped, id);
	}
	if (dropped)
		return dropped_error("map", next->slice, held->epoch, next->epoch, dropped, names,
				     err, errlen);
	return 0;
}

int ovl_map_delta_check(const struct ovl_msg_map *held, const struct ovl_msg_map_delta *d,
			char *err, size_t errlen)
{
	char names[DROPPED_NAMED_MAX * (OVL_ID_FP_BYTES + 2) + 1] = "";
	unsigned dropped = 0;

	if (strcmp(held->slice, d->slice) != 0) {
		snprintf(err, errlen, "delta of slice '%s' cannot apply to a map of slice '%s'",
			 d->slice, held->slice);
		return -EINVAL;
	}
	if (d->base_epoch != held->epoch || d->epoch <= d->base_epoch) {
		snprintf(err, errlen, "delta of slice '%s' from epoch %llu to %llu does not apply "
			 "to the map held (epoch %llu)", d->slice,
			 (unsigned long long)d->base_epoch, (unsigned long long)d->epoch,
			 (unsigned long long)held->epoch);
		return -ESTALE;
	}
	for (uint32_t r = 0; r < d->n_removed; r++) {
		const uint8_t *id = d->removed[r];

		if (!listed(held->members, held->n_members, id) ||
		    listed(d->members, d->n_members, id) ||
		    recorded(d->left, d->n_left, id, d->base_epoch, d->epoch))
			continue;
		name_dropped(names, sizeof(names), ++dropped, id);
	}
	if (dropped)
		return dropped_error("delta", d->slice, held->epoch, d->epoch, dropped, names, err,
				     errlen);
	return 0;
}
