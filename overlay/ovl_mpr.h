/*
 * ovl_mpr: the msgpack reader behind the control-plane codec (ovl_msg) and
 * the data-plane codec (ovl_wire). Private to overlay/.
 *
 * It reads msgpack that ovl_mp_check() has already accepted, one header at a
 * time, without allocating; it still checks every bound, so a bug elsewhere
 * cannot turn into an out-of-bounds read.
 */
#ifndef OVL_MPR_H
#define OVL_MPR_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

enum ovl_mpr_kind {
	OVL_MPR_NIL, OVL_MPR_BOOL, OVL_MPR_UINT, OVL_MPR_NEG, OVL_MPR_FLOAT, OVL_MPR_STR,
	OVL_MPR_BIN, OVL_MPR_EXT, OVL_MPR_ARRAY, OVL_MPR_MAP
};

struct ovl_mpr_val {
	enum ovl_mpr_kind kind;
	uint64_t n;         /* UINT value, BOOL, STR/BIN/EXT length, ARRAY/MAP count; NEG: 0 */
	const uint8_t *ptr; /* STR/BIN/EXT: the payload; ARRAY/MAP: the first element */
};

struct ovl_mpr {
	const uint8_t *p, *end; /* the next header; the end of the input */
};

/* Reads one header (and the payload of a str/bin/ext/scalar). 0 or -EBADMSG. */
int ovl_mpr_next_slow(struct ovl_mpr *r, struct ovl_mpr_val *v);

/* ovl_mpr_next_slow() with the one-byte headers most keys and values use inline. */
static inline int ovl_mpr_next(struct ovl_mpr *r, struct ovl_mpr_val *v)
{
	const uint8_t *p = r->p;
	uint8_t b;

	if (p >= r->end)
		return -EBADMSG;
	b = *p;
	if (b <= 0x7f) {
		v->kind = OVL_MPR_UINT;
		v->n = b;
		v->ptr = p + 1;
		r->p = p + 1;
		return 0;
	}
	if ((b & 0xe0) == 0xa0) {
		size_t n = b & 0x1f;

		if (n >= (size_t)(r->end - p))
			return -EBADMSG;
		v->kind = OVL_MPR_STR;
		v->n = n;
		v->ptr = p + 1;
		r->p = p + 1 + n;
		return 0;
	}
	if ((b & 0xe0) == 0x80) {
		v->kind = b < 0x90 ? OVL_MPR_MAP : OVL_MPR_ARRAY;
		v->n = b & 0x0f;
		v->ptr = p + 1;
		r->p = p + 1;
		return 0;
	}
	return ovl_mpr_next_slow(r, v);
}

/* Skips n whole objects. 0 or -EBADMSG. */
int ovl_mpr_skip(struct ovl_mpr *r, uint64_t n);

#endif
