/*
 * Sample control-plane messages, one or more per type, shared by the codec's
 * unit test and by tests/prog/msgtool (which tests/integration/codec_python.sh
 * checks against an independent Python definition of the same samples:
 * change both together).
 *
 * Byte strings follow one recipe so that Python can rebuild them:
 * sample_bytes(seed, n)[i] = (seed + 7 * i) & 0xff.
 */
#ifndef SHELF_TEST_MSG_SAMPLES_H
#define SHELF_TEST_MSG_SAMPLES_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ovl_msg.h"

/* Number of samples. */
int msg_sample_count(void);

/*
 * Build sample i (0 <= i < msg_sample_count()) into *m and return its name
 * ("register", "map_big", ...). Arrays are malloc'ed: ovl_msg_release(m).
 * Bins point into static storage owned by this file (valid until the next
 * call for the same sample). Returns NULL when i is out of range.
 */
const char *msg_sample_build(int i, struct ovl_msg *m);

/* Fill buf with the sample recipe. */
void msg_sample_bytes(uint8_t *buf, size_t n, unsigned seed);

/* Member i of a sample map (the recipe the Python test repeats). */
void msg_sample_member(struct ovl_msg_member *mb, unsigned i);

/*
 * Print m as sorted-order-independent "path=value" lines, driven by the
 * schema: t, v (major.minor), rid when set, then every field the encoder would
 * write (optional empty fields are left out). Strings print as they are,
 * with bytes outside 0x20..0x7e and backslash as \xHH; bins as lower-case hex;
 * enums by name; booleans as true/false; an empty required array as "[]".
 */
void msg_dump(const struct ovl_msg *m, FILE *f);

#endif
