/*
 * ovl_large: the large-object formats, the one code libshelf and the nodes
 * share. Keys, intents and manifests encode and decode; every damaged field
 * of a manifest head, a manifest whose chunk list overlaps, leaves a gap or
 * claims 2^24 chunks in a few bytes is refused, with the reason readers
 * show, before anything is sized by it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
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
	assert_true(ovl_large_key_reserved("\xfe\xfe\xfe\xfe\xfe\xfe\xfe\xfe", 8));
	assert_false(ovl_large_key_reserved("\xfe\xfe\xfe\xfe\xfe\xfe\xfe", 7));
	assert_false(ovl_large_key_reserved("\xfe\xfe\xfe\xfe\xfe\xfe\xfe\xff", 8));
	assert_false(ovl_large_key_reserved("data/x", 6));
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

/* A manifest of 3 chunks of 1 MiB for 2.5 MiB. */
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

/*
 * Manifests built byte by byte here (not by the encoder): a valid one
 * parses; every kind of damage or crafting (bad magic, version, flags,
 * chunk size, counts that disagree with the size or the length, enormous
 * counts, overlapping or gapped chunks, a bad trailing crc) is refused
 * with -EBADMSG (-ENOMSG: not a manifest at all) and the reason readers
 * show after "damaged manifest: ", before anything is sized by it.
 */
#define MIB (1ull << 20)

static void le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static size_t mbytes(uint32_t n)
{
	return 64 + 16 * (size_t)n + 4;
}

static void seal(uint8_t *b, uint32_t n)
{
	le32(b + 64 + 16 * (size_t)n, ovl_crc32c(0, b, 64 + 16 * (size_t)n));
}

/* A valid manifest of size bytes in chunks of cs: malloc'd, *len. */
static uint8_t *build(uint64_t size, uint64_t cs, size_t *len)
{
	uint32_t n = (uint32_t)(size / cs + (size % cs != 0));
	uint8_t *b = calloc(1, mbytes(n));

	assert_non_null(b);
	memcpy(b, ovl_large_magic, 16);
	le32(b + 16, 1);
	le64(b + 24, size);
	le64(b + 32, cs);
	le32(b + 40, n);
	le32(b + 44, 0x12345678);
	memset(b + 48, 0xab, 16);
	for (uint32_t i = 0; i < n; i++) {
		uint8_t *e = b + 64 + 16 * (size_t)i;

		le64(e, i * cs);
		le32(e + 8, (uint32_t)(i + 1 < n ? cs : size - i * cs));
		le32(e + 12, i);
	}
	seal(b, n);
	*len = mbytes(n);
	return b;
}

static void refused(const uint8_t *b, size_t len, const char *what, const char *want)
{
	struct ovl_large_head m;
	char why[256] = "";
	int ret = ovl_large_manifest_check(b, len, &m, why, sizeof(why));

	if (ret != -EBADMSG)
		fail_msg("%s: parse gave %d, not -EBADMSG (%s)", what, ret, why);
	if (!strstr(why, want))
		fail_msg("%s: the reason '%s' does not say '%s'", what, why, want);
}

static void test_parse_valid(void **state)
{
	struct ovl_large_head m;
	char why[256];
	size_t len;
	uint8_t *b = build(100 * MIB + 1, 16 * MIB, &len);
	struct ovl_large_entry e;

	(void)state;
	assert_int_equal(ovl_large_manifest_check(b, len, &m, why, sizeof(why)), 0);
	assert_int_equal(m.n, 7);
	assert_true(m.size == 100 * MIB + 1 && m.chunk_size == 16 * MIB && m.crc == 0x12345678);
	ovl_large_manifest_entry(b, 6, &e);
	assert_true(e.offset == 96 * MIB && e.size == 4 * MIB + 1 && e.crc == 6);
	assert_true(ovl_large_size_may_be_manifest(len));
	assert_int_equal(ovl_large_head_parse(b, 64, len, &m, why, sizeof(why)), 0);
	free(b);
	/* one chunk of 16 bytes (a small object that began with the magic) */
	b = build(16, MIB, &len);
	assert_int_equal(ovl_large_manifest_check(b, len, &m, why, sizeof(why)), 0);
	assert_int_equal(m.n, 1);
	free(b);
	/* exactly n chunks of the chunk size */
	b = build(32 * MIB, 16 * MIB, &len);
	assert_int_equal(ovl_large_manifest_check(b, len, &m, why, sizeof(why)), 0);
	assert_int_equal(m.n, 2);
	free(b);
}

static void test_candidate(void **state)
{
	(void)state;
	assert_false(ovl_large_size_may_be_manifest(0));
	assert_false(ovl_large_size_may_be_manifest(68));
	assert_true(ovl_large_size_may_be_manifest(84));
	assert_false(ovl_large_size_may_be_manifest(85));
	assert_true(ovl_large_size_may_be_manifest(68 + 16 * 1000));
	assert_false(ovl_large_size_may_be_manifest(68 + 16 * 1000 + 8));
}

static void test_not_manifest(void **state)
{
	struct ovl_large_head m;
	char why[256];
	size_t len;
	uint8_t *b = build(20 * MIB, 16 * MIB, &len);

	(void)state;
	b[0] ^= 1;
	assert_int_equal(ovl_large_manifest_check(b, len, &m, why, sizeof(why)), -ENOMSG);
	assert_int_equal(ovl_large_manifest_check(b, 10, &m, why, sizeof(why)), -ENOMSG);
	b[0] ^= 1;
	/* the magic alone, cut short */
	refused(b, 40, "shorter than the head", "shorter");
	free(b);
}

static void test_head_fields(void **state)
{
	size_t len;
	uint8_t *b = build(40 * MIB, 16 * MIB, &len);

	(void)state;
	le32(b + 16, 2), seal(b, 3);
	refused(b, len, "version 2", "version 2");
	le32(b + 16, 1), le32(b + 20, 4), seal(b, 3);
	refused(b, len, "flags", "flags");
	le32(b + 20, 0), le64(b + 32, 16 * MIB + 1), seal(b, 3);
	refused(b, len, "odd chunk size", "chunk size");
	le64(b + 32, 128 * MIB), seal(b, 3);
	refused(b, len, "chunk size above 64 MiB", "chunk size");
	le64(b + 32, 0), seal(b, 3);
	refused(b, len, "chunk size 0", "chunk size");
	le64(b + 32, 16 * MIB), le32(b + 40, 0), seal(b, 3);
	refused(b, len, "n = 0", "chunk count 0");
	le32(b + 40, 4), seal(b, 3);
	refused(b, len, "n above ceil(size / chunk size)", "chunks for");
	le32(b + 40, 3), le64(b + 24, 0), seal(b, 3);
	refused(b, len, "size 0", "chunks for");
	le64(b + 24, 40 * MIB), seal(b, 3);
	refused(b, len - 16, "a length short of 68 + 16n", "bytes long");
	free(b);
}

/* Counts that would make a reader allocate or loop without end: refused
 * from the 64-byte head and the length alone. */
static void test_enormous(void **state)
{
	struct ovl_large_head m;
	char why[256];
	size_t len;
	uint8_t *b = build(20 * MIB, 16 * MIB, &len);

	(void)state;
	le32(b + 40, UINT32_MAX);
	le64(b + 24, UINT64_MAX);
	refused(b, len, "n = 2^32 - 1", "chunk count");
	le32(b + 40, OVL_LARGE_CHUNKS_MAX);
	le64(b + 24, (uint64_t)OVL_LARGE_CHUNKS_MAX * 16 * MIB);
	refused(b, len, "n = 2^24 in 100 bytes", "bytes long");
	assert_int_equal(ovl_large_head_parse(b, 64, len, &m, why, sizeof(why)), -EBADMSG);
	le32(b + 40, OVL_LARGE_CHUNKS_MAX + 1);
	le64(b + 24, (uint64_t)(OVL_LARGE_CHUNKS_MAX + 1) * 16 * MIB);
	refused(b, len, "n = 2^24 + 1", "chunk count");
	free(b);
}

static void test_entries(void **state)
{
	size_t len;
	uint8_t *b = build(40 * MIB, 16 * MIB, &len);

	(void)state;
	/* a bad trailing crc */
	b[len - 1] ^= 0x40;
	refused(b, len, "trailing crc", "checksum mismatch");
	seal(b, 3);
	/* chunk 1 overlapping chunk 0 */
	le64(b + 64 + 16, 0), seal(b, 3);
	refused(b, len, "overlap", "chunk 1 starts at 0");
	/* a gap */
	le64(b + 64 + 16, 17 * MIB), seal(b, 3);
	refused(b, len, "gap", "chunk 1 starts at");
	le64(b + 64 + 16, 16 * MIB);
	/* a middle chunk short of the chunk size */
	le32(b + 64 + 16 + 8, 1), seal(b, 3);
	refused(b, len, "short middle chunk", "chunk 1 holds 1 bytes");
	le32(b + 64 + 16 + 8, 16 * MIB);
	/* the last chunk larger than the chunk size, or empty */
	le32(b + 64 + 32 + 8, 16 * MIB + 1), seal(b, 3);
	refused(b, len, "last chunk too large", "chunk 2 holds");
	le32(b + 64 + 32 + 8, 0), seal(b, 3);
	refused(b, len, "empty last chunk", "chunk 2 holds 0");
	/* sizes that do not sum to the object's */
	le32(b + 64 + 32 + 8, 8 * MIB - 1), seal(b, 3);
	refused(b, len, "sum", "chunks hold");
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keys),
		cmocka_unit_test(test_intent),
		cmocka_unit_test(test_manifest),
		cmocka_unit_test(test_parse_valid),
		cmocka_unit_test(test_candidate),
		cmocka_unit_test(test_not_manifest),
		cmocka_unit_test(test_head_fields),
		cmocka_unit_test(test_enormous),
		cmocka_unit_test(test_entries),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
