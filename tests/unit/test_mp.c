/* The bounded msgpack walker: every hostile shape is refused before msgpack-c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "overlay.h"
#include "ovl_mp.h"

static int check(const void *buf, size_t len, size_t *used, char *err)
{
	return ovl_mp_check(buf, len, &ovl_mp_limits_default, used, err, 256);
}

static void test_valid_objects(void **state)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	size_t used = 0;
	char err[256];

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 3);
	msgpack_pack_str_with_body(&pk, "v", 1);
	msgpack_pack_uint64(&pk, 1ULL << 40);
	msgpack_pack_str_with_body(&pk, "keys", 4);
	msgpack_pack_array(&pk, 2);
	msgpack_pack_bin_with_body(&pk, "0123456789abcdef0123456789abcdef", 32);
	msgpack_pack_int8(&pk, -5);
	msgpack_pack_str_with_body(&pk, "empty", 5);
	msgpack_pack_array(&pk, 0);
	assert_int_equal(check(sb.data, sb.size, &used, err), 0);
	assert_int_equal(used, sb.size);
	/* trailing bytes are not part of the object */
	msgpack_pack_nil(&pk);
	assert_int_equal(check(sb.data, sb.size, &used, err), 0);
	assert_int_equal(used, sb.size - 1);
	/* every truncation is refused */
	for (size_t n = 0; n < sb.size - 1; n++)
		assert_int_equal(check(sb.data, n, &used, err), -EBADMSG);
	msgpack_sbuffer_destroy(&sb);
}

static void test_counts_larger_than_message(void **state)
{
	/* array32 of 4 billion elements in five bytes */
	const uint8_t arr[] = { 0xdd, 0xff, 0xff, 0xff, 0xff };
	const uint8_t map[] = { 0xdf, 0x00, 0x01, 0x00, 0x00, 0x01, 0x02 };
	const uint8_t fix[] = { 0x93, 0x01, 0x02 };
	char err[256];

	assert_int_equal(check(arr, sizeof(arr), NULL, err), -EBADMSG);
	assert_non_null(strstr(err, "announces 4294967295 elements"));
	assert_int_equal(check(map, sizeof(map), NULL, err), -EBADMSG);
	assert_int_equal(check(fix, sizeof(fix), NULL, err), -EBADMSG);
}

static void test_str32_4gib(void **state)
{
	const uint8_t s[] = { 0xdb, 0xff, 0xff, 0xff, 0xff, 'a' };
	const uint8_t b[] = { 0xc6, 0x00, 0x00, 0x10, 0x00, 'a' };
	char err[256];

	assert_int_equal(check(s, sizeof(s), NULL, err), -E2BIG);
	assert_non_null(strstr(err, "4294967295"));
	assert_int_equal(check(b, sizeof(b), NULL, err), -EBADMSG);
	assert_non_null(strstr(err, "exceeds the 0 bytes left") ? err : strstr(err, "exceeds"));
}

static void test_nesting_10000(void **state)
{
	size_t n = 10000;
	uint8_t *buf = malloc(n + 1);
	char err[256];

	memset(buf, 0x91, n); /* [[[[...]]]] */
	buf[n] = 0x01;
	assert_int_equal(check(buf, n + 1, NULL, err), -ELOOP);
	assert_non_null(strstr(err, "nesting deeper than 8"));
	/* exactly at the limit is fine */
	assert_int_equal(check(buf + n - 8, 9, NULL, err), 0);
	free(buf);
}

static void test_types_refused(void **state)
{
	const uint8_t ext[] = { 0xd4, 0x01, 0x02 };
	const uint8_t flt[] = { 0xca, 0, 0, 0, 0 };
	const uint8_t res[] = { 0xc1 };
	struct ovl_mp_limits l = ovl_mp_limits_default;
	char err[256];

	assert_int_equal(check(ext, sizeof(ext), NULL, err), -EBADMSG);
	assert_non_null(strstr(err, "ext"));
	assert_int_equal(check(flt, sizeof(flt), NULL, err), -EBADMSG);
	assert_int_equal(check(res, sizeof(res), NULL, err), -EBADMSG);
	assert_non_null(strstr(err, "0xc1"));
	l.allow_ext = l.allow_float = true;
	assert_int_equal(ovl_mp_check(ext, sizeof(ext), &l, NULL, err, sizeof(err)), 0);
	assert_int_equal(ovl_mp_check(flt, sizeof(flt), &l, NULL, err, sizeof(err)), 0);
	assert_int_equal(check(NULL, 0, NULL, err), -EBADMSG);
}

static void test_size_and_element_limits(void **state)
{
	struct ovl_mp_limits l = ovl_mp_limits_default;
	uint8_t buf[64];
	char err[256];

	memset(buf, 0x01, sizeof(buf));
	buf[0] = 0xdc; buf[1] = 0; buf[2] = 40; /* array16 of 40 fixints */
	l.max_elems = 10;
	assert_int_equal(ovl_mp_check(buf, 43, &l, NULL, err, sizeof(err)), -E2BIG);
	l = ovl_mp_limits_default;
	l.max_bytes = 20;
	assert_int_equal(ovl_mp_check(buf, 43, &l, NULL, err, sizeof(err)), -E2BIG);
	assert_non_null(strstr(err, "larger than 20"));
	l.max_bytes = 43;
	assert_int_equal(ovl_mp_check(buf, 43, &l, NULL, err, sizeof(err)), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_objects),
		cmocka_unit_test(test_counts_larger_than_message),
		cmocka_unit_test(test_str32_4gib),
		cmocka_unit_test(test_nesting_10000),
		cmocka_unit_test(test_types_refused),
		cmocka_unit_test(test_size_and_element_limits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
