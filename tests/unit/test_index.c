/*
 * The store's in-memory index against a plain sorted array: random inserts,
 * updates, deletes, lookups, seeks and walks (with the index changing in the
 * middle of a walk), keys with long shared prefixes and keys of every length
 * up to SIDX_KEY_MAX. Prints its seed; SEED=n replays one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/index.h"

struct mkey {
	uint8_t *key;
	size_t klen;
	uint64_t loc;
};

struct model {
	struct mkey *v;
	size_t n, cap;
};

static uint64_t rng;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static int kcmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	return c ? c : alen < blen ? -1 : alen > blen;
}

/* First position whose key is >= key (after: > key). */
static size_t m_lower(const struct model *m, const uint8_t *key, size_t klen, bool after)
{
	size_t lo = 0, hi = m->n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = kcmp(m->v[mid].key, m->v[mid].klen, key, klen);

		if (c < 0 || (after && c == 0))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static bool m_find(const struct model *m, const uint8_t *key, size_t klen, size_t *pos)
{
	*pos = m_lower(m, key, klen, false);
	return *pos < m->n && kcmp(m->v[*pos].key, m->v[*pos].klen, key, klen) == 0;
}

static void m_set(struct model *m, const uint8_t *key, size_t klen, uint64_t loc)
{
	size_t p;

	if (m_find(m, key, klen, &p)) {
		m->v[p].loc = loc;
		return;
	}
	if (m->n == m->cap) {
		m->cap = m->cap ? m->cap * 2 : 64;
		m->v = realloc(m->v, m->cap * sizeof(*m->v));
		assert_non_null(m->v);
	}
	memmove(m->v + p + 1, m->v + p, (m->n - p) * sizeof(*m->v));
	m->v[p].key = malloc(klen);
	memcpy(m->v[p].key, key, klen);
	m->v[p].klen = klen;
	m->v[p].loc = loc;
	m->n++;
}

static bool m_del(struct model *m, const uint8_t *key, size_t klen, uint64_t *loc)
{
	size_t p;

	if (!m_find(m, key, klen, &p))
		return false;
	*loc = m->v[p].loc;
	free(m->v[p].key);
	memmove(m->v + p, m->v + p + 1, (m->n - p - 1) * sizeof(*m->v));
	m->n--;
	return true;
}

static void m_free(struct model *m)
{
	for (size_t i = 0; i < m->n; i++)
		free(m->v[i].key);
	free(m->v);
	memset(m, 0, sizeof(*m));
}

/* A key from a small alphabet with shared prefixes; sometimes long. */
static size_t gen_key(uint8_t *k)
{
	static const char *pre[] = { "", "a", "ab", "obj/0000000", "ds/shard-", "zz/" };
	const char *p = pre[rnd() % 6];
	size_t n = strlen(p), len;

	memcpy(k, p, n);
	switch (rnd() % 16) {
	case 0:
		len = SIDX_KEY_MAX - n - rnd() % 3; /* the longest keys */
		break;
	case 1:
		len = 100 + rnd() % 300;
		break;
	default:
		len = 1 + rnd() % 8;
	}
	for (size_t i = 0; i < len; i++)
		k[n + i] = (uint8_t)(rnd() % 4 == 0 ? rnd() : '0' + rnd() % 3);
	return n + len;
}

static uint64_t gen_loc(void)
{
	/* the store's shape (offset / 16 << 23 | size / 16) and odd ones */
	switch (rnd() % 4) {
	case 0:
		return rnd() | 1;
	case 1:
		return 1 + rnd() % 100;
	default:
		return ((1 + rnd() % (1u << 27)) << SIDX_LOC_SPLIT) | (1 + rnd() % 300);
	}
}

static void check_all(const struct sidx *ix, const struct model *m)
{
	struct sidx_iter it;
	const uint8_t *k;
	size_t kl, i = 0;
	uint64_t loc;

	assert_int_equal(sidx_count(ix), m->n);
	sidx_seek(ix, &it, NULL, 0, false);
	while (sidx_next(ix, &it, &k, &kl, &loc)) {
		assert_true(i < m->n);
		assert_int_equal(kl, m->v[i].klen);
		assert_memory_equal(k, m->v[i].key, kl);
		assert_int_equal(loc, m->v[i].loc);
		i++;
	}
	assert_int_equal(i, m->n);
	for (i = 0; i < m->n; i++) {
		assert_int_equal(sidx_get(ix, m->v[i].key, m->v[i].klen, &loc), 1);
		assert_int_equal(loc, m->v[i].loc);
	}
}

static uint64_t seed_from_env(void)
{
	const char *e = getenv("SEED");

	return e ? strtoull(e, NULL, 0) : (uint64_t)time(NULL) * 2654435761u ^ (uint64_t)clock();
}

static void test_random(void **state)
{
	static uint8_t key[SIDX_KEY_MAX];
	uint64_t seed = seed_from_env() | 1;
	struct sidx *ix = sidx_new();
	struct model m = { 0 };
	uint64_t key_bytes = 0;

	printf("test_index: SEED=%" PRIu64 "\n", seed);
	rng = seed;
	assert_non_null(ix);
	for (int round = 0; round < 40000; round++) {
		size_t klen = gen_key(key), p;
		uint64_t loc = gen_loc(), old = 7, mold = 0;
		unsigned op = (unsigned)(rnd() % 100);

		if (m.n > 3000 && op < 60)
			op += 40; /* keep it from growing without bound */
		if (m.n && op % 3 == 0) { /* an existing key */
			p = rnd() % m.n;
			memcpy(key, m.v[p].key, m.v[p].klen);
			klen = m.v[p].klen;
		}
		if (op < 60) {
			bool had = m_find(&m, key, klen, &p);

			mold = had ? m.v[p].loc : 0;
			assert_int_equal(sidx_set(ix, key, klen, loc, &old), 0);
			assert_int_equal(old, mold);
			if (!had)
				key_bytes += klen;
			m_set(&m, key, klen, loc);
		} else if (op < 90) {
			bool had = m_del(&m, key, klen, &mold);

			assert_int_equal(sidx_del(ix, key, klen, &old), had ? 1 : 0);
			if (had) {
				assert_int_equal(old, mold);
				key_bytes -= klen;
			}
		} else {
			bool had = m_find(&m, key, klen, &p);

			assert_int_equal(sidx_get(ix, key, klen, &old), had ? 1 : 0);
			if (had)
				assert_int_equal(old, m.v[p].loc);
		}
		if (round % 4000 == 0) {
			check_all(ix, &m);
			assert_int_equal(sidx_key_bytes(ix), key_bytes);
		}
	}
	check_all(ix, &m);
	/* then delete everything, in random order */
	while (m.n) {
		size_t p = rnd() % m.n, klen = m.v[p].klen;
		uint64_t old = 0, mold = 0;

		memcpy(key, m.v[p].key, klen);
		assert_true(m_del(&m, key, klen, &mold));
		assert_int_equal(sidx_del(ix, key, klen, &old), 1);
		assert_int_equal(old, mold);
		if (m.n % 500 == 0)
			check_all(ix, &m);
	}
	assert_int_equal(sidx_count(ix), 0);
	assert_int_equal(sidx_key_bytes(ix), 0);
	assert_true(sidx_bytes(ix) < 64 * 1024);
	m_free(&m);
	sidx_destroy(&ix);
	assert_null(ix);
}

/* Seeks (at and after, keys present and absent, past the end), and walks
 * that go on while the index changes under them. */
static void test_seek_and_walk(void **state)
{
	static uint8_t key[SIDX_KEY_MAX];
	uint64_t seed = seed_from_env() | 1;
	struct sidx *ix = sidx_new();
	struct model m = { 0 };

	rng = seed ^ 0x5eed;
	for (int i = 0; i < 3000; i++) {
		size_t klen = gen_key(key);
		uint64_t loc = gen_loc(), old;

		assert_int_equal(sidx_set(ix, key, klen, loc, &old), 0);
		m_set(&m, key, klen, loc);
	}
	for (int round = 0; round < 400; round++) {
		struct sidx_iter it;
		const uint8_t *k;
		size_t kl, klen = gen_key(key), p;
		uint64_t loc, old;
		bool after = rnd() % 2;

		if (rnd() % 2 && m.n) {
			p = rnd() % m.n;
			klen = m.v[p].klen;
			memcpy(key, m.v[p].key, klen);
		}
		p = m_lower(&m, key, klen, after);
		sidx_seek(ix, &it, key, klen, after);
		for (int step = 0; step < 40; step++) {
			if (!sidx_next(ix, &it, &k, &kl, &loc)) {
				assert_int_equal(p, m.n);
				break;
			}
			assert_true(p < m.n);
			assert_int_equal(kl, m.v[p].klen);
			assert_memory_equal(k, m.v[p].key, kl);
			assert_int_equal(loc, m.v[p].loc);
			if (step % 7 == 3) {
				/* change the index: a new key somewhere, one deleted */
				uint8_t nk[SIDX_KEY_MAX], last[SIDX_KEY_MAX];
				size_t nl = gen_key(nk), ll = kl;
				uint64_t nloc = gen_loc(), mold;

				memcpy(last, k, kl);
				assert_int_equal(sidx_set(ix, nk, nl, nloc, &old), 0);
				m_set(&m, nk, nl, nloc);
				if (m.n > 1) {
					size_t d = rnd() % m.n;

					memcpy(nk, m.v[d].key, m.v[d].klen);
					nl = m.v[d].klen;
					assert_true(m_del(&m, nk, nl, &mold));
					assert_int_equal(sidx_del(ix, nk, nl, &old), 1);
				}
				/* the walk resumes after the last key it gave */
				p = m_lower(&m, last, ll, true);
				continue;
			}
			p++;
		}
	}
	/* past every key */
	{
		struct sidx_iter it;
		const uint8_t *k;
		size_t kl;
		uint64_t loc;

		memset(key, 0xff, SIDX_KEY_MAX);
		sidx_seek(ix, &it, key, SIDX_KEY_MAX, false);
		assert_false(sidx_next(ix, &it, &k, &kl, &loc));
	}
	check_all(ix, &m);
	m_free(&m);
	sidx_destroy(&ix);
}

/* Keys loaded in order (a checkpoint), then a mixed workload on top. */
static void test_append_sorted(void **state)
{
	struct sidx *ix = sidx_new(), *ix2 = sidx_new();
	struct model m = { 0 };
	struct sidx_iter it;
	const uint8_t *k;
	size_t kl;
	uint64_t loc, old;
	char key[64];

	for (int i = 0; i < 20000; i++) {
		snprintf(key, sizeof(key), "obj/%012d", i * 2);
		assert_int_equal(sidx_append_sorted(ix, key, 16, (uint64_t)(i + 1) << 23 | 6), 0);
		m_set(&m, (uint8_t *)key, 16, (uint64_t)(i + 1) << 23 | 6);
	}
	/* not greater than the last key, or not a key at all */
	assert_int_equal(sidx_append_sorted(ix, key, 16, 1), -EINVAL);
	assert_int_equal(sidx_append_sorted(ix, "obj/", 4, 1), -EINVAL);
	assert_int_equal(sidx_append_sorted(ix, "zzz", 0, 1), -EINVAL);
	assert_int_equal(sidx_append_sorted(ix, "zzz", 3, 0), -EINVAL);
	check_all(ix, &m);
	/* 16-byte keys in order with small records: well under 16 B each */
	assert_true(sidx_bytes(ix) < 20000 * 16);
	for (int i = 0; i < 20000; i += 3) {
		snprintf(key, sizeof(key), "obj/%012d", i);
		assert_int_equal(sidx_set(ix, key, 16, 99, &old), 0);
		m_set(&m, (uint8_t *)key, 16, 99);
	}
	check_all(ix, &m);
	/* appends after other changes still see the true last key */
	assert_int_equal(sidx_append_sorted(ix, "obj/1", 5, 5), 0);
	m_set(&m, (uint8_t *)"obj/1", 5, 5);
	assert_int_equal(sidx_append_sorted(ix, "obj/0", 5, 5), -EINVAL);
	check_all(ix, &m);
	/* the walk reproduces what was loaded, into a second index */
	sidx_seek(ix, &it, NULL, 0, false);
	while (sidx_next(ix, &it, &k, &kl, &loc))
		assert_int_equal(sidx_append_sorted(ix2, k, kl, loc), 0);
	check_all(ix2, &m);
	sidx_shrink(ix2);
	check_all(ix2, &m);
	/* bad arguments */
	assert_int_equal(sidx_set(ix, "a", 0, 1, &old), -EINVAL);
	assert_int_equal(sidx_set(ix, "a", 1, 0, &old), -EINVAL);
	assert_int_equal(sidx_set(ix, key, SIDX_KEY_MAX + 1, 1, &old), -EINVAL);
	assert_int_equal(sidx_del(ix, "nope", 4, &old), 0);
	assert_int_equal(sidx_get(ix, "nope", 4, &old), 0);
	m_free(&m);
	sidx_destroy(&ix);
	sidx_destroy(&ix2);
}

static void test_empty(void **state)
{
	struct sidx *ix = sidx_new();
	struct sidx_iter it;
	const uint8_t *k;
	size_t kl;
	uint64_t loc, old;

	assert_int_equal(sidx_get(ix, "a", 1, &loc), 0);
	assert_int_equal(sidx_del(ix, "a", 1, &old), 0);
	sidx_seek(ix, &it, NULL, 0, false);
	assert_false(sidx_next(ix, &it, &k, &kl, &loc));
	/* a walk that found nothing sees what is added before it goes on */
	assert_int_equal(sidx_set(ix, "b", 1, 42, &old), 0);
	assert_true(sidx_next(ix, &it, &k, &kl, &loc));
	assert_int_equal(kl, 1);
	assert_int_equal(loc, 42);
	assert_false(sidx_next(ix, &it, &k, &kl, &loc));
	sidx_shrink(ix);
	sidx_destroy(&ix);
	sidx_destroy(&ix); /* NULL is accepted */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_random),
		cmocka_unit_test(test_seek_and_walk),
		cmocka_unit_test(test_append_sorted),
		cmocka_unit_test(test_empty),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
