/*
 * node_repl's pure parts: the hybrid logical clock, the version checks,
 * and the placement plan (homes, substitutes in distinct failure domains,
 * what this node is to a key).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "node.h"
#include "overlay.h"

static void test_hlc(void **state)
{
	/* the clock leads when it is ahead */
	assert_int_equal(node_repl_hlc_next(0, 0, 1000), 1000ull << 16);
	/* within one millisecond: the counter */
	assert_int_equal(node_repl_hlc_next(1000ull << 16, 0, 1000), (1000ull << 16) + 1);
	/* a clock that went back never makes an older version */
	assert_int_equal(node_repl_hlc_next((2000ull << 16) + 5, 0, 1000), (2000ull << 16) + 6);
	/* a newer version seen from another node: above it */
	assert_int_equal(node_repl_hlc_next(0, (3000ull << 16) + 9, 1000), (3000ull << 16) + 10);
}

static void test_ver_checks(void **state)
{
	uint8_t id[32];
	struct ovl_wire_ver v = { .hlc = 70000ull << 16, .node = 1 };

	for (int i = 0; i < 32; i++)
		id[i] = (uint8_t)(i + 1);
	assert_int_equal(node_repl_ver_node(id), 0x0102030405060708ull);
	assert_false(node_repl_ver_future(&v, 10000, 60000));  /* exactly the skew */
	assert_true(node_repl_ver_future(&v, 9999, 60000));    /* one ms beyond */
	assert_false(node_repl_ver_future(&v, 80000, 60000));  /* the past is fine */
}

/* Six members over two chassis, as a 1U of two boxes. */
static void members(struct ovl_msg_member *m, unsigned n)
{
	memset(m, 0, n * sizeof(*m));
	for (unsigned i = 0; i < n; i++) {
		memset(m[i].id, 0x10 + (int)i, 32);
		m[i].capacity = 1ull << 40;
		m[i].state = OVL_MSG_STATE_UP;
		snprintf(m[i].domain.site, sizeof(m[i].domain.site), "s");
		snprintf(m[i].domain.chassis, sizeof(m[i].domain.chassis), "c%u", i % 2);
		snprintf(m[i].domain.slot, sizeof(m[i].domain.slot), "%u", i);
	}
}

static int idx_of(const struct ovl_msg_member *m, unsigned n, const uint8_t *id)
{
	return node_repl_member_find(m, n, id);
}

/* More members than ovl_place ranks at once (24 > OVL_PLACE_REPLICAS_MAX):
 * every node still gets a plan, with its homes first in placement order. */
static void test_plan_many_members(void **state)
{
	struct ovl_msg_member m[24];
	struct ovl_place_member pm[24];
	unsigned order[2];
	struct node_repl_plan p;
	const char *key = "a/b";

	(void)state;
	members(m, 24);
	for (unsigned i = 0; i < 24; i++) {
		memcpy(pm[i].id, m[i].id, 32);
		pm[i].weight = m[i].capacity;
		pm[i].site = m[i].domain.site;
		pm[i].chassis = m[i].domain.chassis;
		pm[i].slot = m[i].domain.slot;
	}
	assert_int_equal(ovl_place(pm, 24, key, strlen(key), 2, order), 2);
	for (unsigned self = 0; self < 24; self++) {
		assert_int_equal(node_repl_plan(m, 24, 2, m[self].id, key, strlen(key), NULL, &p), 0);
		if (self == order[0] || self == order[1]) {
			assert_int_equal(p.nchain, 1);
			assert_memory_equal(p.chain[0].id, m[order[self == order[0] ? 1 : 0]].id, 32);
		} else {
			assert_int_equal(p.self_home, -1);
			assert_int_equal(p.nchain, 2);
			assert_memory_equal(p.chain[0].id, m[order[0]].id, 32);
			assert_memory_equal(p.chain[1].id, m[order[1]].id, 32);
		}
	}
}

/* W: the map's min_write_replicas when set (at most R), else R. */
static void test_min_write(void **state)
{
	struct node_ctl_map m;

	(void)state;
	memset(&m, 0, sizeof(m));
	m.replicas = 3;
	assert_int_equal(node_repl_min_write(&m), 3);
	m.min_write_replicas = 1;
	assert_int_equal(node_repl_min_write(&m), 1);
	m.min_write_replicas = 2;
	assert_int_equal(node_repl_min_write(&m), 2);
	m.min_write_replicas = 5; /* never above R */
	assert_int_equal(node_repl_min_write(&m), 3);
	m.replicas = 0;
	m.min_write_replicas = 0;
	assert_int_equal(node_repl_min_write(&m), 1);
}

static void test_plan(void **state)
{
	struct ovl_msg_member m[6];
	struct node_repl_plan p, q;
	unsigned order[6];
	struct ovl_place_member pm[6];
	const char *key = "photo.jpg";
	int home0, home1, self_other;

	members(m, 6);
	for (unsigned i = 0; i < 6; i++) {
		memcpy(pm[i].id, m[i].id, 32);
		pm[i].weight = m[i].capacity;
		pm[i].site = m[i].domain.site;
		pm[i].chassis = m[i].domain.chassis;
		pm[i].slot = m[i].domain.slot;
	}
	assert_int_equal(ovl_place(pm, 6, key, strlen(key), 6, order), 6);
	home0 = (int)order[0];
	home1 = (int)order[1];
	/* the homes are in different chassis */
	assert_string_not_equal(m[home0].domain.chassis, m[home1].domain.chassis);

	/* the first home heads: the chain is the second */
	assert_int_equal(node_repl_plan(m, 6, 2, m[home0].id, key, strlen(key), NULL, &p), 0);
	assert_int_equal(p.self_home, 0);
	assert_true(p.self_member);
	assert_int_equal(p.nchain, 1);
	assert_memory_equal(p.chain[0].id, m[home1].id, 32);
	assert_false(p.chain[0].has_home);
	assert_int_equal(p.missing, 0);

	/* the second home heads: the chain is the first */
	assert_int_equal(node_repl_plan(m, 6, 2, m[home1].id, key, strlen(key), NULL, &p), 0);
	assert_int_equal(p.self_home, 1);
	assert_int_equal(p.nchain, 1);
	assert_memory_equal(p.chain[0].id, m[home0].id, 32);

	/* a node that is no home relays to both */
	self_other = (int)order[5];
	assert_int_equal(node_repl_plan(m, 6, 2, m[self_other].id, key, strlen(key), NULL, &p), 0);
	assert_int_equal(p.self_home, -1);
	assert_int_equal(p.nchain, 2);
	assert_memory_equal(p.chain[0].id, m[home0].id, 32);
	assert_memory_equal(p.chain[1].id, m[home1].id, 32);

	/* the second home down: a substitute stands in, in the other chassis
	 * than the head, with a hint naming the home */
	m[home1].state = OVL_MSG_STATE_DOWN;
	assert_int_equal(node_repl_plan(m, 6, 2, m[home0].id, key, strlen(key), NULL, &p), 0);
	assert_int_equal(p.nchain, 1);
	assert_true(p.chain[0].has_home);
	assert_memory_equal(p.chain[0].home, m[home1].id, 32);
	assert_string_not_equal(m[idx_of(m, 6, p.chain[0].id)].domain.chassis,
				m[home0].domain.chassis);
	/* the same when this node found it unreachable (the map says up) */
	m[home1].state = OVL_MSG_STATE_UP;
	{
		bool avoid[6] = { false };

		avoid[home1] = true;
		assert_int_equal(node_repl_plan(m, 6, 2, m[home0].id, key, strlen(key), avoid, &q), 0);
		assert_memory_equal(&q.chain[0], &p.chain[0], sizeof(q.chain[0]));
	}

	/* an out member holds nothing: the homes are chosen without it */
	m[home0].state = OVL_MSG_STATE_OUT;
	assert_int_equal(node_repl_plan(m, 6, 2, m[home1].id, key, strlen(key), NULL, &p), 0);
	assert_int_equal(p.self_home, 0);
	assert_int_equal(p.nchain, 1);
	assert_memory_not_equal(p.chain[0].id, m[home0].id, 32);
	assert_false(p.chain[0].has_home);

	/* every other member down: no substitute, the home is missing */
	members(m, 6);
	for (unsigned i = 0; i < 6; i++)
		if ((int)i != home0)
			m[i].state = OVL_MSG_STATE_DOWN;
	assert_int_equal(node_repl_plan(m, 6, 3, m[home0].id, key, strlen(key), NULL, &p), 0);
	assert_int_equal(p.nchain, 0);
	assert_int_equal(p.missing, 2);

	/* bad arguments */
	assert_int_equal(node_repl_plan(m, 6, 0, m[home0].id, key, strlen(key), NULL, &p), -EINVAL);
	assert_int_equal(node_repl_plan(m, 0, 2, m[home0].id, key, strlen(key), NULL, &p), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hlc),
		cmocka_unit_test(test_ver_checks),
		cmocka_unit_test(test_plan),
		cmocka_unit_test(test_plan_many_members),
		cmocka_unit_test(test_min_write),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
