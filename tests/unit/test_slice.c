/*
 * Slice ids, prefixes and node addresses: known answers, verification,
 * name validation, collision counters and the text forms.
 *
 * The known answers were computed by an independent implementation of
 * docs/PROTOCOL.md section 3 (Python hashlib.blake2b), not by this code.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "overlay.h"
#include "ovl_slice.h"

/* RFC 8032 section 7.1, TEST 1 and TEST 2 public keys. */
static const uint8_t key1[OVL_SLICE_PUBKEY_BYTES] = {
	0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a,
	0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a,
};
static const uint8_t key2[OVL_SLICE_PUBKEY_BYTES] = {
	0x3d, 0x40, 0x17, 0xc3, 0xe8, 0x43, 0x89, 0x5a, 0x92, 0xb7, 0x0a, 0xa7, 0x4d, 0x1b, 0x7e, 0xbc,
	0x9c, 0x98, 0x2c, 0xcf, 0x2e, 0xc4, 0x96, 0x8c, 0xc0, 0xcd, 0x55, 0xf1, 0x2a, 0xf4, 0x66, 0x0c,
};

static void init_ok(struct ovl_slice *s, const char *site, const char *name)
{
	char err[256] = "";

	assert_int_equal(ovl_slice_init(s, site, name, err, sizeof(err)), 0);
}

static void assert_prefix(const struct ovl_slice *s, const char *want)
{
	char buf[OVL_SLICE_PREFIX_STRLEN];
	int n = ovl_slice_prefix_format(&s->prefix, OVL_SLICE_PREFIX_BITS, buf, sizeof(buf));

	assert_int_equal(n, (int)strlen(want));
	assert_string_equal(buf, want);
}

static void assert_addr(const struct ovl_slice *s, const uint8_t *key, uint8_t c, const char *want)
{
	char buf[OVL_SLICE_ADDR_STRLEN];
	struct in6_addr a;

	assert_int_equal(ovl_slice_addr(s, key, c, &a), 0);
	assert_int_equal(ovl_slice_addr_format(&a, buf, sizeof(buf)), (int)strlen(want));
	assert_string_equal(buf, want);
}

static void test_known_answers(void **state)
{
	struct ovl_slice s;
	char hex[OVL_SLICE_ID_HEXLEN];

	init_ok(&s, "sim-site", "hot");
	assert_string_equal(s.site, "sim-site");
	assert_string_equal(s.name, "hot");
	assert_int_equal(ovl_slice_id_format(&s, hex, sizeof(hex)), 64);
	assert_string_equal(hex, "0c330b5409327d9d66ce273fefc378b33ee623dc671a657ff9b878c8dd891d21");
	assert_prefix(&s, "fd0c:330b:5409:327d::/64");
	assert_addr(&s, key1, 0, "fd0c:330b:5409:327d:6702:146d:4e02:eb30");
	assert_addr(&s, key1, 1, "fd0c:330b:5409:327d:c042:4a4e:850f:9dd9");
	assert_addr(&s, key1, 2, "fd0c:330b:5409:327d:1523:be50:b676:644b");
	assert_addr(&s, key2, 0, "fd0c:330b:5409:327d:ab9b:7ca1:45bb:3fe3");

	/* the length prefixes keep ("ab","c") and ("a","bc") apart */
	init_ok(&s, "ab", "c");
	assert_prefix(&s, "fd17:de50:f9a7:d644::/64");
	assert_addr(&s, key1, 0, "fd17:de50:f9a7:d644:8e62:9efb:4346:6503");
	init_ok(&s, "a", "bc");
	assert_prefix(&s, "fdc9:33a8:491a:99c3::/64");
	assert_addr(&s, key2, 2, "fdc9:33a8:491a:99c3:d134:f03a:b5aa:139d");
}

static void test_iid_hash_is_the_address(void **state)
{
	struct ovl_slice s;
	struct in6_addr a;
	uint8_t iid[OVL_SLICE_IID_BYTES];
	const uint8_t want[OVL_SLICE_IID_BYTES] = { 0x67, 0x02, 0x14, 0x6d, 0x4e, 0x02, 0xeb, 0x30 };

	init_ok(&s, "sim-site", "hot");
	ovl_slice_iid_hash(&s, key1, 0, 0, iid);
	assert_memory_equal(iid, want, sizeof(want));
	assert_false(ovl_slice_iid_is_reserved(iid));
	assert_int_equal(ovl_slice_addr(&s, key1, 0, &a), 0);
	assert_memory_equal(a.s6_addr, s.prefix.s6_addr, 8);
	assert_memory_equal(a.s6_addr + 8, iid, 8);
	/* the retry byte is part of the hash: r = 1 is a different id */
	ovl_slice_iid_hash(&s, key1, 0, 1, iid);
	assert_memory_not_equal(iid, want, sizeof(want));
	/* the prefix is the RFC 4193 shape: fd, then 7 bytes of the id, then zeros */
	assert_int_equal(s.prefix.s6_addr[0], 0xfd);
	assert_memory_equal(s.prefix.s6_addr + 1, s.id, 7);
	for (int i = 8; i < 16; i++)
		assert_int_equal(s.prefix.s6_addr[i], 0);
}

static void test_reserved_iids(void **state)
{
	static const struct {
		uint8_t iid[8];
		bool reserved;
	} cases[] = {
		{ { 0, 0, 0, 0, 0, 0, 0, 0 }, true },
		{ { 0, 0, 0, 0, 0, 0, 0, 1 }, false },
		{ { 0x02, 0x00, 0x5e, 0xff, 0xfd, 0xff, 0xff, 0xff }, false },
		{ { 0x02, 0x00, 0x5e, 0xff, 0xfe, 0x00, 0x00, 0x00 }, true },
		{ { 0x02, 0x00, 0x5e, 0xff, 0xfe, 0x00, 0x52, 0x13 }, true },
		{ { 0x02, 0x00, 0x5e, 0xff, 0xfe, 0xff, 0xff, 0xff }, true },
		{ { 0x02, 0x00, 0x5e, 0xff, 0xff, 0x00, 0x00, 0x00 }, false },
		{ { 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f }, false },
		{ { 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x80 }, true },
		{ { 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe }, true },
		{ { 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff }, true },
		{ { 0xfe, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00 }, true },
		{ { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff }, true },
		{ { 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xff }, false },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_int_equal(ovl_slice_iid_is_reserved(cases[i].iid), cases[i].reserved);
}

static void test_verify(void **state)
{
	struct ovl_slice s, other;
	struct in6_addr a, b;
	uint8_t flipped[OVL_SLICE_PUBKEY_BYTES];

	init_ok(&s, "sim-site", "hot");
	init_ok(&other, "sim-site", "cold");
	assert_int_equal(ovl_slice_addr(&s, key1, 0, &a), 0);
	assert_int_equal(ovl_slice_addr_verify(&s, key1, &a, OVL_SLICE_COUNTER_MAX_DEFAULT), 0);
	assert_int_equal(ovl_slice_addr_verify(&s, key1, &a, 0), 0);

	/* a different key, or the right key with one bit flipped */
	assert_int_equal(ovl_slice_addr_verify(&s, key2, &a, 255), -EKEYREJECTED);
	memcpy(flipped, key1, sizeof(flipped));
	flipped[31] ^= 0x01;
	assert_int_equal(ovl_slice_addr_verify(&s, flipped, &a, 255), -EKEYREJECTED);

	/* tampered interface id; tampered prefix */
	b = a;
	b.s6_addr[15] ^= 0x01;
	assert_int_equal(ovl_slice_addr_verify(&s, key1, &b, 255), -EKEYREJECTED);
	b = a;
	b.s6_addr[3] ^= 0x80;
	assert_int_equal(ovl_slice_addr_verify(&s, key1, &b, 255), -EADDRNOTAVAIL);

	/* the same key's address in another slice of the same site */
	assert_int_equal(ovl_slice_addr_verify(&other, key1, &a, 255), -EADDRNOTAVAIL);
	/* ...and the interface id alone does not carry over to that slice */
	assert_int_equal(ovl_slice_addr(&other, key1, 0, &b), 0);
	assert_memory_not_equal(a.s6_addr + 8, b.s6_addr + 8, 8);
	memcpy(b.s6_addr + 8, a.s6_addr + 8, 8);
	assert_int_equal(ovl_slice_addr_verify(&other, key1, &b, 255), -EKEYREJECTED);
}

static void test_counters(void **state)
{
	struct ovl_slice s;
	struct in6_addr a[4];

	init_ok(&s, "sim-site", "hot");
	for (uint8_t c = 0; c < 4; c++)
		assert_int_equal(ovl_slice_addr(&s, key1, c, &a[c]), 0);
	for (int i = 0; i < 4; i++)
		for (int j = i + 1; j < 4; j++)
			assert_memory_not_equal(&a[i], &a[j], sizeof(a[i]));
	/* verify returns the counter, and only within max_counter */
	assert_int_equal(ovl_slice_addr_verify(&s, key1, &a[1], 2), 1);
	assert_int_equal(ovl_slice_addr_verify(&s, key1, &a[2], 2), 2);
	assert_int_equal(ovl_slice_addr_verify(&s, key1, &a[3], 3), 3);
	assert_int_equal(ovl_slice_addr_verify(&s, key1, &a[1], 0), -EKEYREJECTED);
	assert_int_equal(ovl_slice_addr_verify(&s, key1, &a[3], OVL_SLICE_COUNTER_MAX_DEFAULT),
			 -EKEYREJECTED);
}

static void test_collisions(void **state)
{
	struct ovl_slice s;
	struct in6_addr mine[3], theirs, got;
	struct in6_addr taken[4];

	init_ok(&s, "sim-site", "hot");
	for (uint8_t c = 0; c < 3; c++)
		assert_int_equal(ovl_slice_addr(&s, key1, c, &mine[c]), 0);
	assert_int_equal(ovl_slice_addr(&s, key2, 0, &theirs), 0);

	/* an empty slice, and one whose members don't collide: counter 0 */
	assert_int_equal(ovl_slice_addr_assign(&s, key1, NULL, 0, 2, &got), 0);
	assert_memory_equal(&got, &mine[0], sizeof(got));
	assert_false(ovl_slice_addr_collides(&mine[0], NULL, 0));
	taken[0] = theirs;
	assert_false(ovl_slice_addr_collides(&mine[0], taken, 1));
	assert_int_equal(ovl_slice_addr_assign(&s, key1, taken, 1, 2, &got), 0);

	/* force a collision: another member already holds key1's counter-0 address */
	taken[1] = mine[0];
	assert_true(ovl_slice_addr_collides(&mine[0], taken, 2));
	assert_int_equal(ovl_slice_addr_assign(&s, key1, taken, 2, 2, &got), 1);
	assert_memory_equal(&got, &mine[1], sizeof(got));
	assert_int_equal(ovl_slice_addr_verify(&s, key1, &got, 2), 1);

	/* counters 0 and 1 taken: 2 */
	taken[2] = mine[1];
	assert_int_equal(ovl_slice_addr_assign(&s, key1, taken, 3, 2, &got), 2);
	assert_memory_equal(&got, &mine[2], sizeof(got));

	/* every allowed counter taken: the broker refuses the node */
	taken[3] = mine[2];
	assert_int_equal(ovl_slice_addr_assign(&s, key1, taken, 4, 2, &got), -EADDRINUSE);
	assert_int_equal(ovl_slice_addr_assign(&s, key1, taken, 2, 0, &got), -EADDRINUSE);
	/* a gap is filled first */
	taken[1] = mine[1];
	assert_int_equal(ovl_slice_addr_assign(&s, key1, taken, 2, 2, &got), 0);
}

static void test_names(void **state)
{
	struct ovl_slice s;
	char err[256];
	char long64[65];

	memset(long64, 'a', 64);
	long64[64] = '\0';
	err[0] = '\0';
	assert_int_equal(ovl_slice_init(&s, "sim-site", "Hot", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "invalid slice name 'Hot': character 'H' at offset 0 is not one "
			    "of a-z 0-9 - _ .");
	assert_int_equal(ovl_slice_init(&s, "", "hot", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "invalid site id '': it is empty");
	assert_int_equal(ovl_slice_init(&s, NULL, "hot", err, sizeof(err)), -EINVAL);
	assert_int_equal(ovl_slice_init(&s, "sim-site", "-hot", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "invalid slice name '-hot': it must start with a-z or 0-9, not '-'");
	assert_int_equal(ovl_slice_init(&s, "sim site", "hot", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "invalid site id 'sim site': character ' ' at offset 3 is not one "
			    "of a-z 0-9 - _ .");
	assert_int_equal(ovl_slice_init(&s, "sim-site", "h\xc3\xb6t", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "invalid slice name 'h\\xc3\\xb6t': character 0xc3 at offset 1 "
			    "is not one of a-z 0-9 - _ .");
	assert_int_equal(ovl_slice_init(&s, "sim-site", "a/b", err, sizeof(err)), -EINVAL);
	assert_int_equal(ovl_slice_init(&s, long64, "hot", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "longer than 63 bytes"));
	/* on error the slice is zeroed */
	for (size_t i = 0; i < sizeof(s.id); i++)
		assert_int_equal(s.id[i], 0);

	/* the edges that are allowed */
	long64[63] = '\0';
	init_ok(&s, long64, "0");
	init_ok(&s, "edge-7.example_a", "a.b-c_d9");
	assert_int_equal(ovl_slice_name_check("x", "slice name", err, sizeof(err)), 0);
	/* a NULL error buffer is allowed */
	assert_int_equal(ovl_slice_name_check("X", "slice name", NULL, 0), -EINVAL);
}

static void test_text_forms(void **state)
{
	struct in6_addr a, p;
	unsigned plen = 0;
	char buf[OVL_SLICE_PREFIX_STRLEN];
	char err[256];

	assert_int_equal(ovl_slice_addr_parse("FD0C:330B:5409:327D:6702:146D:4E02:EB30", &a, err,
					      sizeof(err)), 0);
	assert_int_equal(ovl_slice_addr_format(&a, buf, sizeof(buf)), 39);
	assert_string_equal(buf, "fd0c:330b:5409:327d:6702:146d:4e02:eb30");
	assert_int_equal(ovl_slice_addr_format(&a, buf, 39), -ENOSPC);
	assert_string_equal(buf, "");
	assert_int_equal(ovl_slice_addr_parse("fd00::1::2", &a, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "invalid IPv6 address 'fd00::1::2'");
	assert_int_equal(ovl_slice_addr_parse("10.0.0.1", &a, err, sizeof(err)), -EINVAL);

	assert_int_equal(ovl_slice_prefix_parse("fd12:3456:0:1::/64", &p, &plen, err, sizeof(err)), 0);
	assert_int_equal(plen, 64);
	assert_int_equal(ovl_slice_prefix_format(&p, plen, buf, sizeof(buf)), 18);
	assert_string_equal(buf, "fd12:3456:0:1::/64");
	assert_int_equal(ovl_slice_prefix_parse("::/0", &p, &plen, err, sizeof(err)), 0);
	assert_int_equal(plen, 0);
	assert_int_equal(ovl_slice_prefix_parse("fd12::1/128", &p, &plen, err, sizeof(err)), 0);
	assert_int_equal(plen, 128);
	assert_int_equal(ovl_slice_prefix_parse("fd12::1/64", &p, &plen, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "invalid IPv6 prefix 'fd12::1/64': bits set beyond /64");
	assert_int_equal(ovl_slice_prefix_parse("fd12::", &p, &plen, err, sizeof(err)), -EINVAL);
	assert_int_equal(ovl_slice_prefix_parse("fd12::/129", &p, &plen, err, sizeof(err)), -EINVAL);
	assert_int_equal(ovl_slice_prefix_parse("fd12::/064", &p, &plen, err, sizeof(err)), -EINVAL);
	assert_int_equal(ovl_slice_prefix_parse("fd12::/6x", &p, &plen, err, sizeof(err)), -EINVAL);
	assert_int_equal(ovl_slice_prefix_parse("fd12::/", &p, &plen, err, sizeof(err)), -EINVAL);
	assert_int_equal(ovl_slice_prefix_parse("/64", &p, &plen, err, sizeof(err)), -EINVAL);
	assert_int_equal(ovl_slice_prefix_parse("fd12::/-1", &p, &plen, err, sizeof(err)), -EINVAL);
	assert_int_equal(ovl_slice_prefix_format(&p, 129, buf, sizeof(buf)), -EINVAL);
	assert_int_equal(ovl_slice_prefix_format(&p, 0, buf, 4), -ENOSPC);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_known_answers),
		cmocka_unit_test(test_iid_hash_is_the_address),
		cmocka_unit_test(test_reserved_iids),
		cmocka_unit_test(test_verify),
		cmocka_unit_test(test_counters),
		cmocka_unit_test(test_collisions),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_text_forms),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
