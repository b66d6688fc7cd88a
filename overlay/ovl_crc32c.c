#include "ovl_crc32c.h"

#include <stdbool.h>
#include <string.h>
#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#define CRC32C_POLY_REFLECTED 0x82f63b78u

static uint32_t crc_table[256];
static bool crc_table_ready;
static int crc_hw = -1; /* -1 unknown, 0 no, 1 SSE4.2 */

static void table_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ CRC32C_POLY_REFLECTED : c >> 1;
		crc_table[i] = c;
	}
	crc_table_ready = true;
}

static uint32_t crc_sw(uint32_t c, const uint8_t *p, size_t len)
{
	if (!crc_table_ready)
		table_init();
	while (len--)
		c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
	return c;
}

/*
 * Multiplies a raw CRC register by x^(8*zeros) mod P: the value the register
 * would have after feeding `zeros` zero bytes. Precomputed for the two shift
 * lengths the interleaved loop needs, as 4x256 tables built on first use.
 */
static uint32_t shift_tab[2][4][256];
static bool shift_ready;

static uint32_t gf2_shift_bytes_slow(uint32_t c, size_t zeros)
{
	if (!crc_table_ready)
		table_init();
	while (zeros--)
		c = crc_table[c & 0xff] ^ (c >> 8);
	return c;
}

static void shift_init(void)
{
	static const size_t lens[2] = { 1024, 2048 };

	for (int l = 0; l < 2; l++)
		for (int b = 0; b < 4; b++)
			for (uint32_t v = 0; v < 256; v++)
				shift_tab[l][b][v] = gf2_shift_bytes_slow(v << (8 * b), lens[l]);
	shift_ready = true;
}

static uint32_t crc_shift(uint32_t crc, size_t zeros)
{
	int l = zeros == 2048;

	if (zeros != 1024 && zeros != 2048)
		return gf2_shift_bytes_slow(crc, zeros);
	if (!shift_ready)
		shift_init();
	return shift_tab[l][0][crc & 0xff] ^ shift_tab[l][1][(crc >> 8) & 0xff] ^
	       shift_tab[l][2][(crc >> 16) & 0xff] ^ shift_tab[l][3][crc >> 24];
}

#if defined(__x86_64__)
static uint32_t crc_hw_run(uint32_t c, const uint8_t *p, size_t len)
{
	uint64_t c64 = c;

	while (len && ((uintptr_t)p & 7)) {
		c64 = _mm_crc32_u8((uint32_t)c64, *p++);
		len--;
	}
	/* Three independent streams hide the instruction's 3-cycle latency. */
	while (len >= 3 * 1024) {
		uint64_t c1 = 0, c2 = 0;
		const uint8_t *p1 = p + 1024, *p2 = p + 2048;

		for (int i = 0; i < 1024; i += 8) {
			uint64_t a, b, d;

			memcpy(&a, p + i, 8);
			memcpy(&b, p1 + i, 8);
			memcpy(&d, p2 + i, 8);
			c64 = _mm_crc32_u64(c64, a);
			c1 = _mm_crc32_u64(c1, b);
			c2 = _mm_crc32_u64(c2, d);
		}
		/* Linearity: fold the first stream over the 2048 bytes after
		 * it, the second over the 1024 after it, then xor. */
		c64 = crc_shift((uint32_t)c64, 2048) ^ crc_shift((uint32_t)c1, 1024) ^ (uint32_t)c2;
		p += 3 * 1024;
		len -= 3 * 1024;
	}
	while (len >= 8) {
		uint64_t v;

		memcpy(&v, p, 8);
		c64 = _mm_crc32_u64(c64, v);
		p += 8;
		len -= 8;
	}
	while (len--)
		c64 = _mm_crc32_u8((uint32_t)c64, *p++);
	return (uint32_t)c64;
}
#endif

uint32_t ovl_crc32c(uint32_t crc, const void *buf, size_t len)
{
	uint32_t c = ~crc;

#if defined(__x86_64__)
	if (crc_hw < 0)
		crc_hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
	if (crc_hw)
		return ~crc_hw_run(c, buf, len);
#endif
	return ~crc_sw(c, buf, len);
}
