/*
 * test_shelf_large: libshelf's manifest parser and keys (tools/lib/large.c). A valid
 * manifest parses; every kind of damage or crafting (bad magic, version,
 * flags, chunk size, counts that disagree with the size or the length,
 * enormous counts, overlapping or gapped chunks, a bad trailing crc) is
 * refused with -EBADMSG (-ENOMSG: not a manifest at all) and a reason, from
 * the bytes given, before anything is allocated (the parser allocates
 * nothing: entries point into the bytes). Chunk and intent keys have the
 * layout of docs/PROTOCOL.md, and the reserved prefix is recognised.
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

#include "tools/lib/shelf_int.h"

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
	memcpy(b, SH_MANIFEST_MAGIC, 16);
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
	struct sh_manifest m;
	char why[256] = "";
	int ret = sh_manifest_parse(b, len, &m, why, sizeof(why));

	if (ret != -EBADMSG)
		fail_msg("%s: parse gave %d, not -EBADMSG (%s)", what, ret, why);
	if (!strstr(why, want))
		fail_msg("%s: the reason '%s' does not say '%s'", what, why, want);
}

static void test_valid(void **state)
{
	struct sh_manifest m;
	char why[256];
	size_t len;
	uint8_t *b = build(100 * MIB + 1, 16 * MIB, &len);
	uint64_t off;
	uint32_t size, crc;

	(void)state;
	assert_int_equal(sh_manifest_parse(b, len, &m, why, sizeof(why)), 0);
	assert_int_equal(m.n, 7);
	assert_true(m.size == 100 * MIB + 1 && m.chunk_size == 16 * MIB && m.crc == 0x12345678);
	sh_manifest_entry(&m, 6, &off, &size, &crc);
	assert_true(off == 96 * MIB && size == 4 * MIB + 1 && crc == 6);
	assert_true(m.entries == b + 64); /* in place: nothing allocated */
	assert_true(sh_manifest_candidate(len));
	assert_int_equal(sh_manifest_head(b, 64, len, &m, why, sizeof(why)), 0);
	free(b);
	/* one chunk of 16 bytes (a small object that began with the magic) */
	b = build(16, MIB, &len);
	assert_int_equal(sh_manifest_parse(b, len, &m, why, sizeof(why)), 0);
	assert_int_equal(m.n, 1);
	free(b);
	/* exactly n chunks of the chunk size */
	b = build(32 * MIB, 16 * MIB, &len);
	assert_int_equal(sh_manifest_parse(b, len, &m, why, sizeof(why)), 0);
	assert_int_equal(m.n, 2);
	free(b);
}

static void test_candidate(void **state)
{
	(void)state;
	assert_false(sh_manifest_candidate(0));
	assert_false(sh_manifest_candidate(68));
	assert_true(sh_manifest_candidate(84));
	assert_false(sh_manifest_candidate(85));
	assert_true(sh_manifest_candidate(68 + 16 * 1000));
	assert_false(sh_manifest_candidate(68 + 16 * 1000 + 8));
}

static void test_not_manifest(void **state)
{
	struct sh_manifest m;
	char why[256];
	size_t len;
	uint8_t *b = build(20 * MIB, 16 * MIB, &len);

	(void)state;
	b[0] ^= 1;
	assert_int_equal(sh_manifest_parse(b, len, &m, why, sizeof(why)), -ENOMSG);
	assert_int_equal(sh_manifest_parse(b, 10, &m, why, sizeof(why)), -ENOMSG);
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
	struct sh_manifest m;
	char why[256];
	size_t len;
	uint8_t *b = build(20 * MIB, 16 * MIB, &len);

	(void)state;
	le32(b + 40, UINT32_MAX);
	le64(b + 24, UINT64_MAX);
	refused(b, len, "n = 2^32 - 1", "chunk count");
	le32(b + 40, SH_MANIFEST_CHUNKS_MAX);
	le64(b + 24, (uint64_t)SH_MANIFEST_CHUNKS_MAX * 16 * MIB);
	refused(b, len, "n = 2^24 in 100 bytes", "bytes long");
	assert_int_equal(sh_manifest_head(b, 64, len, &m, why, sizeof(why)), -EBADMSG);
	le32(b + 40, SH_MANIFEST_CHUNKS_MAX + 1);
	le64(b + 24, (uint64_t)(SH_MANIFEST_CHUNKS_MAX + 1) * 16 * MIB);
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

static void test_keys(void **state)
{
	uint8_t id[16], ck[SH_CHUNK_KEY_BYTES], ik[SH_INTENT_KEY_BYTES];

	(void)state;
	for (int i = 0; i < 16; i++)
		id[i] = (uint8_t)(i + 1);
	sh_chunk_key(ck, id, 0x01020304);
	for (int i = 0; i < 8; i++)
		assert_int_equal(ck[i], 0xfe);
	assert_int_equal(ck[8], 'C');
	assert_memory_equal(ck + 9, id, 16);
	assert_true(ck[25] == 1 && ck[26] == 2 && ck[27] == 3 && ck[28] == 4);
	sh_intent_key(ik, id);
	assert_int_equal(ik[8], 'G');
	assert_memory_equal(ik + 9, id, 16);
	assert_true(sh_key_reserved(ck, sizeof(ck)));
	assert_true(sh_key_reserved(ik, sizeof(ik)));
	assert_true(sh_key_reserved("\xfe\xfe\xfe\xfe\xfe\xfe\xfe\xfe", 8));
	assert_false(sh_key_reserved("\xfe\xfe\xfe\xfe\xfe\xfe\xfe", 7));
	assert_false(sh_key_reserved("\xfe\xfe\xfe\xfe\xfe\xfe\xfe\xff", 8));
	assert_false(sh_key_reserved("data/x", 6));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_candidate),
		cmocka_unit_test(test_not_manifest),
		cmocka_unit_test(test_head_fields),
		cmocka_unit_test(test_enormous),
		cmocka_unit_test(test_entries),
		cmocka_unit_test(test_keys),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
