/*
 * fleet.c: the one libshelf call `shelf fleet publish` needs: store a block
 * of a fleet image under its reserved key (fe x8 'F' release-id index;
 * overlay/ovl_fleet.h, fleet_design.md 3.4) as one plain object. The public
 * put refuses the reserved prefix, as it should for user keys.
 */
#include "shelf_int.h"

#include <errno.h>

#include "ovl_fleet.h"

SHELF_API int shelf_fleet_block_put(struct shelf *s, const char *slice, const uint8_t id[32],
				    uint32_t i, const void *data, size_t len, char *err,
				    size_t errlen)
{
	uint8_t key[OVL_FLEET_BLOCK_KEY_BYTES];

	if (!s || !slice || !id || (!data && len) || len > OVL_FLEET_BLOCK_MAX_BYTES)
		return sh_fail(err, errlen, -EINVAL, "fleet block put: bad argument");
	ovl_fleet_block_key(key, id, i);
	sh_op_begin(s);
	return sh_obj_put(s, slice, key, sizeof(key), data ? data : "", len, err, errlen);
}
