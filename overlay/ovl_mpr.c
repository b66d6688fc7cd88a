#include "ovl_mpr.h"

#include <string.h>

/* Big-endian unsigned integer of n = 1, 2, 4 or 8 bytes. */
static uint64_t be(const uint8_t *p, unsigned n)
{
	uint32_t x4;
	uint64_t x8;

	switch (n) {
	case 1:
		return p[0];
	case 2:
		return (uint64_t)p[0] << 8 | p[1];
	case 4:
		memcpy(&x4, p, 4);
		return __builtin_bswap32(x4);
	default:
		memcpy(&x8, p, 8);
		return __builtin_bswap64(x8);
	}
}

int ovl_mpr_next_slow(struct ovl_mpr *r, struct ovl_mpr_val *v)
{
	const uint8_t *p = r->p;
	size_t left = (size_t)(r->end - p), h = 1, payload = 0;
	unsigned nb = 0; /* width of the length/count/value after the type byte */
	uint8_t b;

	if (left == 0)
		return -EBADMSG;
	b = p[0];
	v->n = 0;
	if (b <= 0x7f) {
		v->kind = OVL_MPR_UINT;
		v->n = b;
	} else if (b >= 0xe0) {
		v->kind = OVL_MPR_NEG;
	} else if (b <= 0x8f) {
		v->kind = OVL_MPR_MAP;
		v->n = b & 0x0f;
	} else if (b <= 0x9f) {
		v->kind = OVL_MPR_ARRAY;
		v->n = b & 0x0f;
	} else if (b <= 0xbf) {
		v->kind = OVL_MPR_STR;
		v->n = payload = b & 0x1f;
	} else {
		switch (b) {
		case 0xc0: v->kind = OVL_MPR_NIL; break;
		case 0xc2: case 0xc3: v->kind = OVL_MPR_BOOL; v->n = b & 1; break;
		case 0xc4: case 0xc5: case 0xc6: v->kind = OVL_MPR_BIN; nb = 1u << (b - 0xc4); break;
		case 0xc7: case 0xc8: case 0xc9: v->kind = OVL_MPR_EXT; nb = 1u << (b - 0xc7); break;
		case 0xca: v->kind = OVL_MPR_FLOAT; h = 5; break;
		case 0xcb: v->kind = OVL_MPR_FLOAT; h = 9; break;
		case 0xcc: case 0xcd: case 0xce: case 0xcf:
			v->kind = OVL_MPR_UINT; nb = 1u << (b - 0xcc); break;
		case 0xd0: case 0xd1: case 0xd2: case 0xd3:
			v->kind = OVL_MPR_UINT; nb = 1u << (b - 0xd0); break; /* sign fixed below */
		case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
			v->kind = OVL_MPR_EXT; h = 2; v->n = payload = 1u << (b - 0xd4); break;
		case 0xd9: case 0xda: case 0xdb: v->kind = OVL_MPR_STR; nb = 1u << (b - 0xd9); break;
		case 0xdc: case 0xdd: v->kind = OVL_MPR_ARRAY; nb = 2u << (b - 0xdc); break;
		case 0xde: case 0xdf: v->kind = OVL_MPR_MAP; nb = 2u << (b - 0xde); break;
		default: return -EBADMSG; /* 0xc1 */
		}
		if (nb) {
			h = 1 + nb + (v->kind == OVL_MPR_EXT);
			if (left < h)
				return -EBADMSG;
			v->n = be(p + 1, nb);
			if (b >= 0xd0 && b <= 0xd3) {
				int64_t s = (int64_t)(v->n << (64 - 8 * nb)) >> (64 - 8 * nb);

				if (s < 0)
					v->kind = OVL_MPR_NEG;
				v->n = s < 0 ? 0 : (uint64_t)s;
			} else if (v->kind == OVL_MPR_STR || v->kind == OVL_MPR_BIN ||
				   v->kind == OVL_MPR_EXT) {
				payload = v->n;
			}
		}
	}
	if (left < h || payload > left - h)
		return -EBADMSG;
	v->ptr = p + h;
	r->p = p + h + payload;
	return 0;
}

int ovl_mpr_skip(struct ovl_mpr *r, uint64_t n)
{
	struct ovl_mpr_val v;

	while (n > 0) {
		if (ovl_mpr_next(r, &v) < 0)
			return -EBADMSG;
		n--;
		if (v.kind == OVL_MPR_ARRAY)
			n += v.n;
		else if (v.kind == OVL_MPR_MAP)
			n += 2 * v.n;
	}
	return 0;
}
