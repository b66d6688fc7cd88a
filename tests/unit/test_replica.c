/*
 * libshelf's replicas (tools/lib/replica.c): the order in which a key's
 * members are tried, the tombstone rule, and the nodes remembered as
 * unreachable (in memory and in the client directory).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tools/lib/shelf_int.h"

#define NM 9

/* Nine members, three per chassis (c1, c2, c3) of site s1; member i has id
 * bytes 0x40 + i and the address fd00::(i + 1). */
static void map_init(struct ovl_msg_map *mp, struct ovl_msg_member *mb, unsigned replicas)
{
	memset(mp, 0, sizeof(*mp));
	memset(mb, 0, NM * sizeof(*mb));
	for (unsigned i = 0; i < NM; i++) {
		memset(mb[i].id, 0x40 + (int)i, sizeof(mb[i].id));
		mb[i].addr[0] = 0xfd;
		mb[i].addr[15] = (uint8_t)(i + 1);
		mb[i].port = 7480;
		snprintf(mb[i].domain.site, sizeof(mb[i].domain.site), "s1");
		snprintf(mb[i].domain.chassis, sizeof(mb[i].domain.chassis), "c%u", i / 3 + 1);
		snprintf(mb[i].domain.slot, sizeof(mb[i].domain.slot), "%u", i % 3);
		mb[i].capacity = 1ull << 40;
		mb[i].state = OVL_MSG_STATE_UP;
	}
	mp->members = mb;
	mp->n_members = NM;
	mp->replicas = replicas;
}

/* placement's answer, as every node computes it */
static int homes_of(const struct ovl_msg_map *mp, const char *key, unsigned r, unsigned *out)
{
	struct ovl_place_member pm[NM];

	for (unsigned i = 0; i < NM; i++) {
		memcpy(pm[i].id, mp->members[i].id, 32);
		pm[i].weight = mp->members[i].state == OVL_MSG_STATE_OUT ? 0 : mp->members[i].capacity;
		pm[i].site = mp->members[i].domain.site;
		pm[i].chassis = mp->members[i].domain.chassis;
		pm[i].slot = mp->members[i].domain.slot;
	}
	return ovl_place(pm, NM, key, strlen(key), r, out);
}

/* every member once, none out */
static void check_perm(const struct sh_order *o, const struct ovl_msg_map *mp)
{
	bool seen[NM] = { false };
	unsigned want = 0;

	for (unsigned i = 0; i < NM; i++)
		want += mp->members[i].state != OVL_MSG_STATE_OUT;
	assert_int_equal(o->n, want);
	for (unsigned i = 0; i < o->n; i++) {
		assert_true(o->idx[i] < NM);
		assert_false(seen[o->idx[i]]);
		assert_int_not_equal(mp->members[o->idx[i]].state, OVL_MSG_STATE_OUT);
		seen[o->idx[i]] = true;
	}
}

static void test_order_homes_first(void **state)
{
	struct ovl_msg_map mp;
	struct ovl_msg_member mb[NM];
	struct sh_order o;
	bool dead[NM] = { false };
	unsigned h[3];

	(void)state;
	map_init(&mp, mb, 3);
	assert_int_equal(homes_of(&mp, "photo.jpg", 3, h), 3);
	assert_int_equal(sh_order_build(&mp, "photo.jpg", 9, dead, true, NULL, NULL, &o), 0);
	check_perm(&o, &mp);
	assert_int_equal(o.nhomes, 3);
	assert_int_equal(o.nlive, NM);
	/* the homes in placement order, then the others, none of them homes */
	for (unsigned i = 0; i < 3; i++) {
		assert_int_equal(o.idx[i], h[i]);
		assert_true(o.home[i]);
	}
	for (unsigned i = 3; i < o.n; i++)
		assert_false(o.home[i]);
	/* three homes over three chassis: distinct failure domains */
	assert_string_not_equal(mb[h[0]].domain.chassis, mb[h[1]].domain.chassis);
	assert_string_not_equal(mb[h[1]].domain.chassis, mb[h[2]].domain.chassis);
	sh_order_release(&o);

	/* R = 1: one home, then every other live member */
	mp.replicas = 1;
	assert_int_equal(sh_order_build(&mp, "photo.jpg", 9, dead, true, NULL, NULL, &o), 0);
	check_perm(&o, &mp);
	assert_int_equal(o.nhomes, 1);
	assert_int_equal(o.idx[0], h[0]);
	sh_order_release(&o);
	/* R = 0 in an old map means 1; R over the limit is capped */
	mp.replicas = 0;
	assert_int_equal(sh_order_build(&mp, "photo.jpg", 9, dead, true, NULL, NULL, &o), 0);
	assert_int_equal(o.nhomes, 1);
	sh_order_release(&o);
	mp.replicas = 100;
	assert_int_equal(sh_order_build(&mp, "photo.jpg", 9, dead, true, NULL, NULL, &o), 0);
	assert_int_equal(o.nhomes, NM);
	check_perm(&o, &mp);
	sh_order_release(&o);
}

static void test_order_chassis_first(void **state)
{
	struct ovl_msg_map mp;
	struct ovl_msg_member mb[NM];
	struct sh_order o;
	bool dead[NM] = { false };
	unsigned h[3];
	char where[80];

	(void)state;
	map_init(&mp, mb, 3);
	assert_int_equal(homes_of(&mp, "dataset/shard-00017.tar", 3, h), 3);
	/* a client in the chassis of the third home reads it first, then the
	 * others in placement order */
	snprintf(where, sizeof(where), "%s", mb[h[2]].domain.chassis);
	assert_int_equal(sh_order_build(&mp, "dataset/shard-00017.tar", 23, dead, true, "s1", where,
					&o), 0);
	assert_int_equal(o.idx[0], h[2]);
	assert_int_equal(o.idx[1], h[0]);
	assert_int_equal(o.idx[2], h[1]);
	check_perm(&o, &mp);
	sh_order_release(&o);
	/* the site must match when given */
	assert_int_equal(sh_order_build(&mp, "dataset/shard-00017.tar", 23, dead, true, "s2", where,
					&o), 0);
	assert_int_equal(o.idx[0], h[0]);
	sh_order_release(&o);
	/* writes ignore the chassis: the head is the first home */
	assert_int_equal(sh_order_build(&mp, "dataset/shard-00017.tar", 23, dead, false, "s1",
					where, &o), 0);
	assert_int_equal(o.idx[0], h[0]);
	sh_order_release(&o);
	/* an unknown chassis changes nothing */
	assert_int_equal(sh_order_build(&mp, "dataset/shard-00017.tar", 23, dead, true, NULL, "c9",
					&o), 0);
	assert_int_equal(o.idx[0], h[0]);
	assert_int_equal(o.idx[1], h[1]);
	sh_order_release(&o);
}

static void test_order_dead_last(void **state)
{
	struct ovl_msg_map mp;
	struct ovl_msg_member mb[NM];
	struct sh_order o;
	bool dead[NM] = { false };
	unsigned h[2], live_h[2];

	(void)state;
	map_init(&mp, mb, 2);
	assert_int_equal(homes_of(&mp, "a", 2, h), 2);
	/* the first home is down: the second home leads, the substitute
	 * (placement over the live members) follows, the down home is last */
	dead[h[0]] = true;
	mb[h[0]].state = OVL_MSG_STATE_DOWN;
	assert_int_equal(sh_order_build(&mp, "a", 1, dead, true, NULL, NULL, &o), 0);
	check_perm(&o, &mp);
	assert_int_equal(o.nhomes, 2);
	assert_int_equal(o.nlive, NM - 1);
	assert_int_equal(o.idx[0], h[1]);
	assert_true(o.home[0]);
	assert_int_equal(o.idx[o.n - 1], h[0]);
	assert_true(o.home[o.n - 1]);
	mb[h[0]].capacity = 0; /* as the head sees it: the down home takes nothing */
	assert_int_equal(homes_of(&mp, "a", 2, live_h), 2);
	mb[h[0]].capacity = 1ull << 40;
	/* live placement: one of its two is the second home, the other the substitute */
	assert_true(live_h[0] == h[1] || live_h[1] == h[1]);
	assert_int_equal(o.idx[1], live_h[0] == h[1] ? live_h[1] : live_h[0]);
	assert_false(o.home[1]);
	sh_order_release(&o);

	/* an out member is never listed, and never a home */
	mb[h[0]].state = OVL_MSG_STATE_OUT;
	dead[h[0]] = false;
	assert_int_equal(sh_order_build(&mp, "a", 1, dead, true, NULL, NULL, &o), 0);
	check_perm(&o, &mp);
	for (unsigned i = 0; i < o.n; i++)
		assert_int_not_equal(o.idx[i], h[0]);
	sh_order_release(&o);

	/* a member remembered as unreachable (not down in the map) goes last
	 * too, after the down homes, before nothing */
	mb[h[0]].state = OVL_MSG_STATE_UP;
	dead[h[0]] = true; /* unreachable home */
	dead[(h[1] + 1) % NM == h[0] ? (h[1] + 2) % NM : (h[1] + 1) % NM] = true;
	assert_int_equal(sh_order_build(&mp, "a", 1, dead, true, NULL, NULL, &o), 0);
	check_perm(&o, &mp);
	assert_int_equal(o.nlive, NM - 2);
	assert_int_equal(o.idx[o.nlive], h[0]);
	for (unsigned i = o.nlive; i < o.n; i++)
		assert_true(dead[o.idx[i]]);
	for (unsigned i = 0; i < o.nlive; i++)
		assert_false(dead[o.idx[i]]);
	sh_order_release(&o);

	/* no member that can hold objects */
	for (unsigned i = 0; i < NM; i++)
		mb[i].state = OVL_MSG_STATE_OUT;
	assert_int_equal(sh_order_build(&mp, "a", 1, dead, true, NULL, NULL, &o), -EHOSTUNREACH);
}

static void test_tombstone_rule(void **state)
{
	struct sh_tombs t = { 0 };
	struct ovl_wire_ver none = { 0, 0 }, v1 = { 100 << 16, 7 }, v2 = { 100 << 16, 8 },
			    v3 = { (100 << 16) + 1, 1 }, v4 = { 200 << 16, 0 };

	(void)state;
	/* no tombstone seen: anything found is returned, unversioned too */
	assert_true(sh_tombs_allow(&t, &none));
	assert_true(sh_tombs_allow(&t, &v1));
	/* a tombstone at v2: only newer objects pass (hlc, then node) */
	sh_tombs_note(&t, &v2);
	assert_false(sh_tombs_allow(&t, &none));
	assert_false(sh_tombs_allow(&t, &v1));
	assert_false(sh_tombs_allow(&t, &v2)); /* the same version: the delete wins */
	assert_true(sh_tombs_allow(&t, &v3));
	/* an older tombstone seen later does not lower the bar */
	sh_tombs_note(&t, &v1);
	assert_false(sh_tombs_allow(&t, &v2));
	assert_true(sh_tombs_allow(&t, &v3));
	/* a newer one raises it */
	sh_tombs_note(&t, &v4);
	assert_false(sh_tombs_allow(&t, &v3));
	assert_int_equal(t.newest.hlc, v4.hlc);
}

struct ufx {
	struct shelf *s;
	char dir[64];
};

static int u_setup(void **state)
{
	struct ufx *f = calloc(1, sizeof(*f));

	snprintf(f->dir, sizeof(f->dir), "/tmp/test_replica-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	f->s = calloc(1, sizeof(*f->s));
	snprintf(f->s->dir, sizeof(f->s->dir), "%s", f->dir);
	f->s->unreach_ms = 5000;
	*state = f;
	return 0;
}

static int u_teardown(void **state)
{
	struct ufx *f = *state;
	char path[128];

	snprintf(path, sizeof(path), "%s/cache/unreachable", f->dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/cache", f->dir);
	rmdir(path);
	rmdir(f->dir);
	free(f->s);
	free(f);
	return 0;
}

static void write_file(const char *dir, const char *text)
{
	char path[128];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/cache", dir);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/cache/unreachable", dir);
	fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static void test_unreachable_memory(void **state)
{
	struct ufx *f = *state;
	uint8_t a[16] = { 0xfd, [15] = 1 }, b[16] = { 0xfd, [15] = 2 };
	struct shelf *s2 = calloc(1, sizeof(*s2));
	char text[256];
	uint64_t now = ovl_mono_ms();

	assert_false(sh_unreach_is(f->s, a, 7480));
	sh_unreach_mark(f->s, a, 7480);
	assert_true(sh_unreach_is(f->s, a, 7480));
	assert_false(sh_unreach_is(f->s, a, 7481)); /* another port: another node */
	assert_false(sh_unreach_is(f->s, b, 7480));
	/* another process (a new client on the same directory) knows it */
	snprintf(s2->dir, sizeof(s2->dir), "%s", f->dir);
	s2->unreach_ms = 5000;
	assert_true(sh_unreach_is(s2, a, 7480));
	/* an answer clears it, for the next process too */
	sh_unreach_clear(f->s, a, 7480);
	assert_false(sh_unreach_is(f->s, a, 7480));
	memset(s2, 0, sizeof(*s2));
	snprintf(s2->dir, sizeof(s2->dir), "%s", f->dir);
	s2->unreach_ms = 5000;
	assert_false(sh_unreach_is(s2, a, 7480));

	/* expired entries, entries further ahead than the memory lasts (the file
	 * of a boot before: the clock started again) and garbage are dropped */
	snprintf(text, sizeof(text),
		 "fd00::1 7480 %llu\nfd00::2 7480 %llu\nnot an address 1 1\nfd00::3 0 %llu\n"
		 "fd00::4 7480 %llu\n",
		 (unsigned long long)(now > 10 ? now - 10 : 0),
		 (unsigned long long)(now + 3600000), (unsigned long long)(now + 3000),
		 (unsigned long long)(now + 3000));
	write_file(f->dir, text);
	memset(s2, 0, sizeof(*s2));
	snprintf(s2->dir, sizeof(s2->dir), "%s", f->dir);
	s2->unreach_ms = 5000;
	b[15] = 4;
	assert_true(sh_unreach_is(s2, b, 7480));
	assert_int_equal(s2->nunreach, 1);
	b[15] = 1;
	assert_false(sh_unreach_is(s2, b, 7480));
	b[15] = 2;
	assert_false(sh_unreach_is(s2, b, 7480));

	/* memory off: nothing is remembered or read */
	memset(s2, 0, sizeof(*s2));
	snprintf(s2->dir, sizeof(s2->dir), "%s", f->dir);
	b[15] = 4;
	assert_false(sh_unreach_is(s2, b, 7480));
	sh_unreach_mark(s2, b, 9);
	assert_false(sh_unreach_is(s2, b, 9));

	/* a full table drops the entry that expires first */
	memset(s2, 0, sizeof(*s2));
	snprintf(s2->dir, sizeof(s2->dir), "%s", f->dir);
	s2->unreach_ms = 5000;
	for (unsigned i = 0; i < SH_UNREACH_MAX + 1; i++) {
		uint8_t c[16] = { 0xfd, [14] = (uint8_t)(i >> 8), [15] = (uint8_t)i };

		sh_unreach_mark(s2, c, 1000);
	}
	assert_int_equal(s2->nunreach, SH_UNREACH_MAX);
	{
		uint8_t last[16] = { 0xfd, [15] = SH_UNREACH_MAX };

		assert_true(sh_unreach_is(s2, last, 1000));
	}
	free(s2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_order_homes_first),
		cmocka_unit_test(test_order_chassis_first),
		cmocka_unit_test(test_order_dead_last),
		cmocka_unit_test(test_tombstone_rule),
		cmocka_unit_test_setup_teardown(test_unreachable_memory, u_setup, u_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
