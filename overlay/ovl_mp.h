/*
 * ovl_mp: the bounded msgpack walker.
 *
 * Everything shelf decodes from a disk or a network passes through
 * ovl_mp_check() before msgpack-c sees a byte. msgpack-c's decoder allocates
 * from the counts in a header before any element arrives, so a five-byte
 * array32 header can ask for gigabytes; the walker refuses that first.
 *
 * It walks one msgpack object without recursion and without allocating, and
 * refuses when:
 *  - the input ends inside the object (truncated);
 *  - a container is nested deeper than max_depth;
 *  - a container announces more elements than the bytes left could hold
 *    (every element takes at least one byte, every map entry two);
 *  - the total element count exceeds max_elems, or a str/bin/ext length
 *    exceeds max_str or the bytes left;
 *  - a type the limits forbid appears (ext, float), or the reserved 0xc1.
 */
#ifndef OVL_MP_H
#define OVL_MP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OVL_MP_DEPTH_MAX 64 /* hard ceiling for max_depth */

struct ovl_mp_limits {
	unsigned max_depth;  /* containers inside containers, 1..OVL_MP_DEPTH_MAX */
	size_t max_bytes;    /* largest encoded object accepted */
	uint32_t max_elems;  /* total scalars and containers in the object */
	uint32_t max_str;    /* largest str, bin or ext payload, bytes */
	bool allow_ext;      /* ext types (fixext and ext 8/16/32) */
	bool allow_float;    /* float 32/64 */
};

/* Limits suited to control-plane messages: depth 8, 1 MiB, 64k elements. */
extern const struct ovl_mp_limits ovl_mp_limits_default;

/*
 * Check that buf[0..len) starts with one well-formed msgpack object within
 * `lim`. On success returns 0 and stores the object's encoded size in
 * *consumed (may be NULL). On failure returns -EBADMSG (malformed or
 * truncated), -E2BIG (over a size or count limit) or -ELOOP (too deep) and
 * describes the problem and its byte offset in err.
 */
int ovl_mp_check(const void *buf, size_t len, const struct ovl_mp_limits *lim,
		 size_t *consumed, char *err, size_t errlen);

/*
 * Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF,
 * and no NUL (so decoded strings are safe as C strings). Every string a
 * shelf codec accepts passes this.
 */
bool ovl_mp_utf8_valid(const uint8_t *s, size_t n);

#endif
