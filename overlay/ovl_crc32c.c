#include "ovl_crc32c.h"

#include <pthread.h>
#include <stdbool.h>
#include <string.h>

/*
 * The accelerated path is compiled for its instruction set with a function
 * attribute, never with a global -m flag, and is called only when the CPU
 * says it has the instruction.
 */
#if defined(__x86_64__)
#include <nmmintrin.h>
#define HW_NAME "sse4.2"
#define HW_TARGET __attribute__((target("sse4.2")))
#elif defined(__aarch64__)
#include <arm_acle.h>
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7) /* the arm64 kernel's bit, asm/hwcap.h */
#endif
#define HW_NAME "armv8-crc"
#if defined(__clang__)
#define HW_TARGET __attribute__((target("crc")))
#else
#define HW_TARGET __attribute__((target("+crc")))
#endif
#endif

#define CRC32C_POLY_REFLECTED 0x82f63b78u

/* slicing-by-8: tab[k][b] is the register after byte b and k zero bytes */
static uint32_t crc_tab[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static bool crc_hw;

static void table_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ CRC32C_POLY_REFLECTED : c >> 1;
		crc_tab[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int k = 1; k < 8; k++)
			crc_tab[k][i] = crc_tab[0][crc_tab[k - 1][i] & 0xff] ^ (crc_tab[k - 1][i] >> 8);
}

static uint32_t load_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* raw register in, raw register out (no pre/post inversion) */
static uint32_t crc_sw(uint32_t c, const uint8_t *p, size_t len)
{
	while (len >= 8) {
		uint32_t lo = load_le32(p) ^ c, hi = load_le32(p + 4);

		c = crc_tab[7][lo & 0xff] ^ crc_tab[6][(lo >> 8) & 0xff] ^
		    crc_tab[5][(lo >> 16) & 0xff] ^ crc_tab[4][lo >> 24] ^
		    crc_tab[3][hi & 0xff] ^ crc_tab[2][(hi >> 8) & 0xff] ^
		    crc_tab[1][(hi >> 16) & 0xff] ^ crc_tab[0][hi >> 24];
		p += 8;
		len -= 8;
	}
	while (len--)
		c = crc_tab[0][(c ^ *p++) & 0xff] ^ (c >> 8);
	return c;
}

#ifdef HW_TARGET
/*
 * Multiplies a raw CRC register by x^(8*zeros) mod P: the value the register
 * would have after feeding `zeros` zero bytes. Precomputed for the two shift
 * lengths the interleaved loop needs, as 4x256 tables.
 */
#define HW_BLOCK 1024
static uint32_t shift_tab[2][4][256];

static uint32_t shift_bytes_slow(uint32_t c, size_t zeros)
{
	while (zeros--)
		c = crc_tab[0][c & 0xff] ^ (c >> 8);
	return c;
}

static void shift_init(void)
{
	static const size_t lens[2] = { HW_BLOCK, 2 * HW_BLOCK };

	for (int l = 0; l < 2; l++)
		for (int b = 0; b < 4; b++)
			for (uint32_t v = 0; v < 256; v++)
				shift_tab[l][b][v] = shift_bytes_slow(v << (8 * b), lens[l]);
}

/* l: 0 shifts over HW_BLOCK zero bytes, 1 over 2 * HW_BLOCK */
static uint32_t crc_shift(uint32_t crc, int l)
{
	return shift_tab[l][0][crc & 0xff] ^ shift_tab[l][1][(crc >> 8) & 0xff] ^
	       shift_tab[l][2][(crc >> 16) & 0xff] ^ shift_tab[l][3][crc >> 24];
}

#if defined(__x86_64__)
static inline HW_TARGET uint32_t hw_u8(uint32_t c, uint8_t v)
{
	return _mm_crc32_u8(c, v);
}

static inline HW_TARGET uint32_t hw_u64(uint32_t c, uint64_t v)
{
	return (uint32_t)_mm_crc32_u64(c, v);
}

static bool hw_detect(void)
{
	return __builtin_cpu_supports("sse4.2");
}
#else
static inline HW_TARGET uint32_t hw_u8(uint32_t c, uint8_t v)
{
	return __crc32cb(c, v);
}

static inline HW_TARGET uint32_t hw_u64(uint32_t c, uint64_t v)
{
	return __crc32cd(c, v);
}

static bool hw_detect(void)
{
	return (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0;
}
#endif

/* raw register in, raw register out; both instructions take little-endian
 * 64-bit words, which is what memcpy gives on these two targets */
static HW_TARGET uint32_t crc_hw_run(uint32_t c, const uint8_t *p, size_t len)
{
	while (len && ((uintptr_t)p & 7)) {
		c = hw_u8(c, *p++);
		len--;
	}
	/* Three independent streams hide the instruction's latency. */
	while (len >= 3 * HW_BLOCK) {
		uint32_t c1 = 0, c2 = 0;
		const uint8_t *p1 = p + HW_BLOCK, *p2 = p + 2 * HW_BLOCK;

		for (int i = 0; i < HW_BLOCK; i += 8) {
			uint64_t a, b, d;

			memcpy(&a, p + i, 8);
			memcpy(&b, p1 + i, 8);
			memcpy(&d, p2 + i, 8);
			c = hw_u64(c, a);
			c1 = hw_u64(c1, b);
			c2 = hw_u64(c2, d);
		}
		/* Linearity: fold the first stream over the 2 blocks after it,
		 * the second over the block after it, then xor. */
		c = crc_shift(c, 1) ^ crc_shift(c1, 0) ^ c2;
		p += 3 * HW_BLOCK;
		len -= 3 * HW_BLOCK;
	}
	while (len >= 8) {
		uint64_t v;

		memcpy(&v, p, 8);
		c = hw_u64(c, v);
		p += 8;
		len -= 8;
	}
	while (len--)
		c = hw_u8(c, *p++);
	return c;
}
#endif /* HW_TARGET */

static void crc_init(void)
{
	table_init();
#ifdef HW_TARGET
	crc_hw = hw_detect();
	if (crc_hw)
		shift_init();
#endif
}

uint32_t ovl_crc32c_portable(uint32_t crc, const void *buf, size_t len)
{
	pthread_once(&crc_once, crc_init);
	return ~crc_sw(~crc, buf, len);
}

uint32_t ovl_crc32c(uint32_t crc, const void *buf, size_t len)
{
	pthread_once(&crc_once, crc_init);
#ifdef HW_TARGET
	if (crc_hw)
		return ~crc_hw_run(~crc, buf, len);
#endif
	return ~crc_sw(~crc, buf, len);
}

const char *ovl_crc32c_impl(void)
{
	pthread_once(&crc_once, crc_init);
#ifdef HW_TARGET
	if (crc_hw)
		return HW_NAME;
#endif
	return "portable";
}
