/*
 * crc32c: known answers on every path, and the accelerated path (SSE4.2 or
 * ARMv8 CRC, whichever this CPU has) agrees with the portable one on random
 * lengths, alignments and starting values.
 *
 * The random cases print their seed; CRC_SEED=<n> replays one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "overlay.h"

typedef uint32_t (*crc_fn)(uint32_t, const void *, size_t);

static const struct {
	const char *name;
	crc_fn fn;
} paths[] = {
	{ "dispatched", ovl_crc32c },
	{ "portable", ovl_crc32c_portable },
};

static uint64_t rng_state;

static uint64_t rng(void)
{
	/* xorshift64*: enough for test data, and replayable from the seed */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

static void test_known_answers(void **state)
{
	/* RFC 3720 B.4 */
	static const uint8_t pdu[48] = {
		0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
		0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
		0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	};
	uint8_t zeros[32] = { 0 }, ones[32], inc[32], dec[32];

	memset(ones, 0xff, sizeof(ones));
	for (int i = 0; i < 32; i++) {
		inc[i] = (uint8_t)i;
		dec[i] = (uint8_t)(31 - i);
	}
	print_message("ovl_crc32c uses the %s path\n", ovl_crc32c_impl());
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		crc_fn f = paths[i].fn;

		print_message("known answers: %s\n", paths[i].name);
		assert_int_equal(f(0, "123456789", 9), 0xe3069283);
		assert_int_equal(f(0, zeros, 32), 0x8a9136aa);
		assert_int_equal(f(0, ones, 32), 0x62a8ab43);
		assert_int_equal(f(0, inc, 32), 0x46dd794e);
		assert_int_equal(f(0, dec, 32), 0x113fdb5c);
		assert_int_equal(f(0, pdu, 48), 0xd9963a56);
		assert_int_equal(f(0, "", 0), 0);
		assert_int_equal(f(0x12345678, "", 0), 0x12345678);
		/* extending a result is the crc of the concatenation */
		assert_int_equal(f(f(0, "1234", 4), "56789", 5), 0xe3069283);
	}
}

static void test_paths_agree(void **state)
{
	/* long enough for the interleaved 3 x 1 KiB blocks, several times */
	enum { MAX = 64 * 1024 + 64 };
	uint8_t *buf = NULL;
	const char *env = getenv("CRC_SEED");
	uint64_t seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) ^ (uint64_t)clock();

	if (!seed)
		seed = 1;
	print_message("seed %" PRIu64 " (replay: CRC_SEED=%" PRIu64 "), accelerated path: %s\n",
		      seed, seed, ovl_crc32c_impl());
	rng_state = seed;
	buf = malloc(MAX);
	assert_non_null(buf);
	for (size_t i = 0; i < MAX; i += 8) {
		uint64_t v = rng();

		memcpy(buf + i, &v, 8 < MAX - i ? 8 : MAX - i);
	}
	for (int round = 0; round < 2000; round++) {
		size_t off = rng() % 64, len;
		uint32_t init = (uint32_t)rng();

		/* mostly short, sometimes across the block boundaries */
		switch (rng() % 4) {
		case 0: len = rng() % 64; break;
		case 1: len = rng() % 4096; break;
		case 2: len = 3 * 1024 * (1 + rng() % 4) + rng() % 16 - 8; break;
		default: len = rng() % (MAX - 64); break;
		}
		if (round % 8 == 0)
			init = 0;
		if (ovl_crc32c(init, buf + off, len) != ovl_crc32c_portable(init, buf + off, len))
			fail_msg("paths differ: off %zu len %zu init 0x%08" PRIx32 " (seed %" PRIu64 ")",
				 off, len, init, seed);
	}
	/* a split anywhere gives the same result as one call, on each path */
	for (int round = 0; round < 200; round++) {
		size_t len = rng() % (MAX - 64), cut = len ? rng() % len : 0;

		for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
			crc_fn f = paths[i].fn;

			if (f(f(0, buf, cut), buf + cut, len - cut) != f(0, buf, len))
				fail_msg("%s: split at %zu of %zu differs (seed %" PRIu64 ")",
					 paths[i].name, cut, len, seed);
		}
	}
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_known_answers),
		cmocka_unit_test(test_paths_agree),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
