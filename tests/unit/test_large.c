/*
 * ovl_large: the large-object formats. Keys, intents and manifests encode
 * and decode; every damaged field of a manifest head, a manifest whose
 * chunk list overlaps, leaves a gap or claims 2^24 chunks in a few bytes is
 * refused before anything is sized by it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "overlay.h"

static const uint8_t id1[16] = { 0, 0, 1, 0x8c, 0x2f, 0x11, 0x22, 0x33, 9, 8, 7, 6, 5, 4, 3, 2 };

static void test_keys(void **state)
{
	uint8_t k[29], id[16];
	uint32_t idx = 0;

	(void)state;
	ovl_large_chunk_key(k, id1, 0x01020304);
	for (int i = 0; i < 8; i++)
		assert_int_equal(k[i], 0xfe);
	assert_int_equal(k[8], 'C');
	assert_memory_equal(k + 9, id1, 16);
	assert_int_equal(k[25], 1);
	assert_int_equal(k[28], 4);
	assert_int_equal(ovl_large_chunk_key_parse(k, 29, id, &idx), 0);
	assert_int_equal(idx, 0x01020304);
	assert_memory_equal(id, id1, 16);
	assert_int_equal(ovl_large_chunk_key_parse(k, 28, id, &idx), -EINVAL);
	assert_int_equal(ovl_large_intent_key_parse(k, 25, id), -EINVAL); /* kind 'C' */
	ovl_large_intent_key(k, id1);
	assert_int_equal(k[8], 'G');
	assert_int_equal(ovl_large_intent_key_parse(k, 25, id), 0);
	assert_true(ovl_large_key_reserved(k, 25));
	k[3] = 0xff;
	assert_false(ovl_large_key_reserved(k, 25));
	assert_int_equal(ovl_large_intent_key_parse(k, 25, id), -EINVAL);
	assert_false(ovl_large_key_reserved(k, 7));
	assert_int_equal(ovl_large_id_ms(id1), 0x18c2f112233ull);
	ovl_large_chunk_prefix(k, id1);
	assert_int_equal(k[8], 'C');
}

static void test_intent(void **state)
{
	uint8_t buf[16 + 1025], key[1025];
	struct ovl_large_intent in = { .count = 7, .ms = 1234567890123ull, .key = key, .klen = 5 };
	struct ovl_large_intent out;
	char why[128];
	int n;

	(void)state;
	memset(key, 'k', sizeof(key));
	n = ovl_large_intent_encode(&in, buf, sizeof(buf));
	assert_int_equal(n, 21);
	assert_memory_equal(buf, "SGI1\x07\0\0\0", 8);
	assert_int_equal(ovl_large_intent_parse(buf, (size_t)n, &out, why, sizeof(why)), 0);
	assert_int_equal(out.count, 7);
	assert_int_equal(out.ms, 1234567890123ull);
	assert_int_equal(out.klen, 5);
	assert_ptr_equal(out.key, buf + 16);
	/* short, no key, wrong magic, a key too long */
	assert_int_equal(ovl_large_intent_parse(buf, 15, &out, why, sizeof(why)), -EBADMSG);
	assert_int_equal(ovl_large_intent_parse(buf, 16, &out, why, sizeof(why)), -EBADMSG);
	assert_non_null(strstr(why, "no object key"));
	buf[0] = 'X';
	assert_int_equal(ovl_large_intent_parse(buf, (size_t)n, &out, why, sizeof(why)), -EBADMSG);
	assert_non_null(strstr(why, "magic"));
	in.klen = 1024;
	n = ovl_large_intent_encode(&in, buf, sizeof(buf));
	assert_int_equal(n, 16 + 1024);
	assert_int_equal(ovl_large_intent_parse(buf, (size_t)n, &out, NULL, 0), 0);
	assert_int_equal(ovl_large_intent_parse(buf, (size_t)n + 1, &out, why, sizeof(why)), -EBADMSG);
	in.klen = 1025;
	assert_int_equal(ovl_large_intent_encode(&in, buf, sizeof(buf)), -EINVAL);
	in.klen = 0;
	assert_int_equal(ovl_large_intent_encode(&in, buf, sizeof(buf)), -EINVAL);
	in.klen = 10;
	assert_int_equal(ovl_large_intent_encode(&in, buf, 25), -ENOSPC);
	in.count = OVL_LARGE_COUNT_UNKNOWN;
	n = ovl_large_intent_encode(&in, buf, sizeof(buf));
	assert_int_equal(ovl_large_intent_parse(buf, (size_t)n, &out, NULL, 0), 0);
	assert_int_equal(out.count, 0xffffffffu);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

/* A manifest of 3 chunks of 1 MiB for 2.5 MiB, re-sealed after a change. */
static size_t make3(uint8_t *buf, size_t cap)
{
	struct ovl_large_head h = { .size = (5ull << 20) / 2, .chunk_size = 1 << 20, .crc = 0xabcd };
	uint32_t crcs[3] = { 1, 2, 3 };
	int64_t n;

	memcpy(h.id, id1, 16);
	n = ovl_large_manifest_encode(&h, crcs, buf, cap);
	assert_int_equal(n, 68 + 48);
	assert_int_equal(h.n, 3);
	return (size_t)n;
}

static void reseal(uint8_t *buf, size_t len)
{
	put32(buf + len - 4, ovl_crc32c(0, buf, len - 4));
}

static void test_manifest(void **state)
{
	uint8_t buf[256];
	struct ovl_large_head h;
	struct ovl_large_entry e;
	char why[160];
	size_t len;

	(void)state;
	len = make3(buf, sizeof(buf));
	assert_true(ovl_large_is_manifest(buf, len));
	assert_false(ovl_large_is_manifest(buf, 15));
	assert_true(ovl_large_size_may_be_manifest(len));
	assert_false(ovl_large_size_may_be_manifest(len + 1));
	assert_false(ovl_large_size_may_be_manifest(68));
	assert_int_equal(ovl_large_manifest_check(buf, len, &h, why, sizeof(why)), 0);
	assert_int_equal(h.n, 3);
	assert_int_equal(h.crc, 0xabcd);
	assert_memory_equal(h.id, id1, 16);
	ovl_large_manifest_entry(buf, 2, &e);
	assert_int_equal(e.offset, 2 << 20);
	assert_int_equal(e.size, 1 << 19);
	assert_int_equal(e.crc, 3);
	/* the head alone: 64 bytes and the stored size */
	assert_int_equal(ovl_large_head_parse(buf, 64, len, &h, why, sizeof(why)), 0);
	assert_int_equal(ovl_large_head_parse(buf, 64, UINT64_MAX, &h, why, sizeof(why)), 0);
	assert_int_equal(ovl_large_head_parse(buf, 64, len + 16, &h, why, sizeof(why)), -EBADMSG);
	assert_memory_equal(h.id, id1, 16); /* whose damaged manifest it is */
	assert_int_equal(ovl_large_head_parse(buf, 63, len, &h, why, sizeof(why)), -EBADMSG);
	/* not a manifest at all */
	assert_int_equal(ovl_large_head_parse("plain bytes of an object, long enough", 38, 38, &h, why,
					      sizeof(why)), -ENOMSG);
	assert_int_equal(ovl_large_manifest_check("x", 1, &h, why, sizeof(why)), -ENOMSG);
	/* the trailing crc */
	buf[70] ^= 1;
	assert_int_equal(ovl_large_manifest_check(buf, len, &h, why, sizeof(why)), -EBADMSG);
	assert_non_null(strstr(why, "checksum"));
	buf[70] ^= 1;
	/* each head field */
	{
		static const struct {
			size_t off;
			int width;
			uint64_t v;
		} f[] = {
			{ 16, 4, 2 },                 /* version */
			{ 20, 4, 1 },                 /* flags */
			{ 32, 8, (1 << 20) + 1 },     /* chunk size not a multiple of 64K */
			{ 32, 8, 128ull << 20 },      /* chunk size too large */
			{ 32, 8, 512 << 10 },         /* chunk size too small */
			{ 40, 4, 4 },                 /* n != ceil(size / chunk) */
			{ 40, 4, 0 },                 /* n = 0 */
			{ 40, 4, (1u << 24) + 1 },    /* n too large */
			{ 24, 8, 0 },                 /* size 0 */
		};

		for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
			uint8_t c[256];

			memcpy(c, buf, len);
			if (f[i].width == 4)
				put32(c + f[i].off, (uint32_t)f[i].v);
			else
				put64(c + f[i].off, f[i].v);
			reseal(c, len);
			assert_int_equal(ovl_large_manifest_check(c, len, &h, why, sizeof(why)), -EBADMSG);
		}
	}
	/* overlapping entries, a gap, a short last chunk that makes the sum wrong */
	{
		uint8_t c[256];

		memcpy(c, buf, len);
		put64(c + 64 + 16, (1 << 20) - 4096); /* chunk 1 overlaps chunk 0 */
		reseal(c, len);
		assert_int_equal(ovl_large_manifest_check(c, len, &h, why, sizeof(why)), -EBADMSG);
		assert_non_null(strstr(why, "chunk 1"));
		memcpy(c, buf, len);
		put32(c + 64 + 32 + 8, 1 << 20);      /* the last chunk claims a whole chunk */
		reseal(c, len);
		assert_int_equal(ovl_large_manifest_check(c, len, &h, why, sizeof(why)), -EBADMSG);
		memcpy(c, buf, len);
		put32(c + 64 + 8, 4096);              /* chunk 0 short */
		reseal(c, len);
		assert_int_equal(ovl_large_manifest_check(c, len, &h, why, sizeof(why)), -EBADMSG);
	}
	/* an enormous chunk list claimed in a short buffer: refused by length */
	{
		uint8_t c[256];

		memcpy(c, buf, len);
		put64(c + 24, (uint64_t)(1u << 24) << 20); /* 16 TiB in 1 MiB chunks: n = 2^24 */
		put32(c + 40, 1u << 24);
		reseal(c, len);
		assert_int_equal(ovl_large_manifest_check(c, len, &h, why, sizeof(why)), -EBADMSG);
		assert_non_null(strstr(why, "stored"));
	}
	/* encode refuses what it cannot express */
	{
		struct ovl_large_head b = { .size = 1, .chunk_size = 1000 };
		uint32_t crc = 0;

		assert_int_equal(ovl_large_manifest_encode(&b, &crc, buf, sizeof(buf)), -EINVAL);
		b.chunk_size = 1 << 20;
		b.size = 0;
		assert_int_equal(ovl_large_manifest_encode(&b, &crc, buf, sizeof(buf)), -EINVAL);
		b.size = 1;
		assert_int_equal(ovl_large_manifest_encode(&b, &crc, buf, 83), -ENOSPC);
		assert_int_equal(ovl_large_manifest_encode(&b, &crc, buf, 84), 84);
		assert_int_equal(ovl_large_manifest_check(buf, 84, NULL, why, sizeof(why)), 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keys),
		cmocka_unit_test(test_intent),
		cmocka_unit_test(test_manifest),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
