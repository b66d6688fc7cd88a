/* Placement: deterministic, weighted, minimal movement, domain spreading. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "overlay.h"

#define N 24
static struct ovl_place_member mem[N + 1];
static char slots[N + 1][8], chassis[N + 1][8];

static void make(unsigned n, unsigned per_chassis)
{
	for (unsigned i = 0; i < n; i++) {
		memset(mem[i].id, 0, 32);
		mem[i].id[0] = (uint8_t)i;
		mem[i].id[1] = 0xa5;
		mem[i].weight = 1ull << 40;
		snprintf(slots[i], sizeof(slots[i]), "%u", i);
		snprintf(chassis[i], sizeof(chassis[i]), "c%u", i / per_chassis);
		mem[i].site = "s";
		mem[i].chassis = chassis[i];
		mem[i].slot = slots[i];
	}
}

static void test_deterministic_and_distinct(void **state)
{
	unsigned a[3], b[3];

	make(N, 4);
	for (int k = 0; k < 1000; k++) {
		char key[16];

		snprintf(key, sizeof(key), "obj-%d", k);
		assert_int_equal(ovl_place(mem, N, key, strlen(key), 3, a), 3);
		assert_int_equal(ovl_place(mem, N, key, strlen(key), 3, b), 3);
		assert_memory_equal(a, b, sizeof(a));
		assert_true(a[0] != a[1] && a[1] != a[2] && a[0] != a[2]);
		/* 6 chassis of 4: three copies on three chassis */
		assert_true(strcmp(mem[a[0]].chassis, mem[a[1]].chassis) &&
			    strcmp(mem[a[1]].chassis, mem[a[2]].chassis) &&
			    strcmp(mem[a[0]].chassis, mem[a[2]].chassis));
	}
}

static void test_weights(void **state)
{
	unsigned count[N] = { 0 }, one;
	int keys = 48000;

	make(N, 1);
	mem[0].weight = 3ull << 40; /* three times the others */
	mem[1].weight = 0;          /* never */
	for (int k = 0; k < keys; k++) {
		char key[16];

		snprintf(key, sizeof(key), "k%d", k);
		assert_int_equal(ovl_place(mem, N, key, strlen(key), 1, &one), 1);
		count[one]++;
	}
	assert_int_equal(count[1], 0);
	/* expected shares: 3/25 for member 0, 1/25 for the others */
	assert_true(count[0] > keys * 3 / 25 * 0.9 && count[0] < keys * 3 / 25 * 1.1);
	for (int i = 2; i < N; i++)
		assert_true(count[i] > keys / 25 * 0.85 && count[i] < keys / 25 * 1.15);
}

static void test_minimal_movement(void **state)
{
	unsigned before, after;
	int moved = 0, keys = 20000;

	make(N + 1, 1);
	for (int k = 0; k < keys; k++) {
		char key[16];

		snprintf(key, sizeof(key), "m%d", k);
		ovl_place(mem, N, key, strlen(key), 1, &before);
		ovl_place(mem, N + 1, key, strlen(key), 1, &after);
		if (before != after) {
			assert_int_equal(after, N); /* only to the newcomer */
			moved++;
		}
	}
	/* about 1/25 of the keys move */
	assert_true(moved > keys / 25 * 0.8 && moved < keys / 25 * 1.2);
}

/*
 * The known-answer vectors of docs/PROTOCOL.md section 8.1 (also recomputed
 * from the document's formula by tests/integration/place_python.sh): six
 * members, id = 32 bytes of 0x10 + i, weight = TiB << 40, domains below.
 */
static void kat_members(struct ovl_place_member *m)
{
	static const struct {
		const char *site, *chassis, *slot;
		uint64_t tib;
	} spec[6] = {
		{ "east", "c1", "1", 4 }, { "east", "c1", "2", 4 }, { "east", "c2", "1", 8 },
		{ "west", "c1", "1", 4 }, { "west", "c1", "2", 0 }, { "west", "c2", "1", 2 },
	};

	for (unsigned i = 0; i < 6; i++) {
		memset(m[i].id, 0x10 + (int)i, 32);
		m[i].weight = spec[i].tib << 40;
		m[i].site = spec[i].site;
		m[i].chassis = spec[i].chassis;
		m[i].slot = spec[i].slot;
	}
}

static void test_known_answers(void **state)
{
	static const struct {
		const char *key;
		size_t klen;
		unsigned order[5]; /* all five members with a weight, R = 6 */
	} kat[] = {
		{ "a", 1, { 1, 3, 2, 5, 0 } },
		{ "photo.jpg", 9, { 0, 5, 2, 3, 1 } },
		{ "dataset/shard-00017.tar", 23, { 2, 3, 1, 5, 0 } },
		{ "\xff\x00k", 3, { 2, 3, 1, 5, 0 } },
	};
	struct ovl_place_member m[6];
	unsigned out[6];

	(void)state;
	kat_members(m);
	for (size_t k = 0; k < sizeof(kat) / sizeof(kat[0]); k++) {
		assert_int_equal(ovl_place(m, 6, kat[k].key, kat[k].klen, 6, out), 5);
		for (unsigned j = 0; j < 5; j++)
			assert_int_equal(out[j], kat[k].order[j]);
		/* R = 3 is the prefix of the same order */
		assert_int_equal(ovl_place(m, 6, kat[k].key, kat[k].klen, 3, out), 3);
		for (unsigned j = 0; j < 3; j++)
			assert_int_equal(out[j], kat[k].order[j]);
	}
}

/* The answer is a set of ids that does not depend on the map's member order. */
static void test_order_independent(void **state)
{
	struct ovl_place_member m[N], p[N];
	unsigned a[4], b[4], perm[N];

	(void)state;
	make(N, 3);
	memcpy(m, mem, sizeof(m));
	for (unsigned i = 0; i < N; i++)
		perm[i] = i;
	srand(7);
	for (int round = 0; round < 50; round++) {
		char key[24];

		for (unsigned i = N - 1; i > 0; i--) {
			unsigned j = (unsigned)rand() % (i + 1), t = perm[i];

			perm[i] = perm[j];
			perm[j] = t;
		}
		for (unsigned i = 0; i < N; i++)
			p[i] = m[perm[i]];
		snprintf(key, sizeof(key), "order-%d", round);
		assert_int_equal(ovl_place(m, N, key, strlen(key), 4, a), 4);
		assert_int_equal(ovl_place(p, N, key, strlen(key), 4, b), 4);
		for (unsigned j = 0; j < 4; j++)
			assert_memory_equal(m[a[j]].id, p[b[j]].id, 32);
	}
}

static void test_edges(void **state)
{
	unsigned out[16];

	make(2, 1);
	assert_int_equal(ovl_place(mem, 2, "x", 1, 3, out), 2); /* fewer members than copies */
	assert_int_equal(ovl_place(mem, 0, "x", 1, 1, out), 0);
	assert_int_equal(ovl_place(mem, 2, "x", 1, 0, out), -EINVAL);
	assert_int_equal(ovl_place(mem, 2, "x", 1, 17, out), -EINVAL);
}

/* ovl_place() in parts (one hashing, two weightings) answers as
 * ovl_place() does with each weighting. */
static void test_parts(void **state)
{
	struct ovl_place_member m[N];
	uint64_t w[N];
	double lnu[N];
	unsigned dom[3 * N], a[16], b[16];

	(void)state;
	make(N, 4);
	memcpy(m, mem, sizeof(m));
	m[5].weight = 0; /* out: no hash */
	m[7].weight = 3ull << 40;
	for (int k = 0; k < 500; k++) {
		char key[24];
		int na, nb;

		snprintf(key, sizeof(key), "parts-%d", k);
		ovl_place_hash(m, N, key, strlen(key), lnu);
		ovl_place_domains(m, N, dom);
		assert_true(lnu[5] == 0);
		/* the homes: the members' own weights */
		na = ovl_place(m, N, key, strlen(key), 2, a);
		nb = ovl_place_pick(m, N, NULL, lnu, dom, 2, b);
		assert_int_equal(na, 2);
		assert_int_equal(nb, na);
		assert_memory_equal(a, b, (size_t)na * sizeof(a[0]));
		/* the live members: some "dead" ones weigh 0 */
		for (unsigned i = 0; i < N; i++)
			w[i] = (i + (unsigned)k) % 5 == 0 ? 0 : m[i].weight;
		{
			struct ovl_place_member live[N];

			memcpy(live, m, sizeof(live));
			for (unsigned i = 0; i < N; i++)
				live[i].weight = w[i];
			na = ovl_place(live, N, key, strlen(key), 16, a);
		}
		nb = ovl_place_pick(m, N, w, lnu, dom, 16, b);
		assert_int_equal(nb, na);
		assert_memory_equal(a, b, (size_t)na * sizeof(a[0]));
	}
	assert_int_equal(ovl_place_pick(m, N, NULL, lnu, dom, 0, a), -EINVAL);
	assert_int_equal(ovl_place_pick(m, N, NULL, lnu, dom, 17, a), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_deterministic_and_distinct),
		cmocka_unit_test(test_weights),
		cmocka_unit_test(test_minimal_movement),
		cmocka_unit_test(test_edges),
		cmocka_unit_test(test_known_answers),
		cmocka_unit_test(test_order_independent),
		cmocka_unit_test(test_parts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
