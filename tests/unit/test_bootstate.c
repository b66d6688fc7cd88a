/* The boot state: parse/format round trip, every malformed line kind, the
 * atomic save under the lock, mark_good, set_try, and the chooser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "node.h"

static const char GOOD[] =
	"shelf-boot 1\n"
	"primary b\n"
	"a.version 0.1.0\n"
	"a.attempts 3\n"
	"a.good 1\n"
	"b.version 0.2.0\n"
	"b.attempts 2\n"
	"b.good 0\n"
	"last b\n"
	"fallback slot a 0.1.0 is not good and has no attempts left\n";

static void test_round_trip(void **state)
{
	struct boot_state st, st2;
	char err[256], buf[BOOT_STATE_MAX_BYTES + 1];
	int n;

	assert_int_equal(boot_state_parse(&st, GOOD, strlen(GOOD), "t", err, sizeof(err)), 0);
	assert_int_equal(st.primary, 'b');
	assert_int_equal(st.last, 'b');
	assert_true(st.s[0].present && st.s[0].good && st.s[0].attempts == 3);
	assert_string_equal(st.s[0].version, "0.1.0");
	assert_true(st.s[1].present && !st.s[1].good && st.s[1].attempts == 2);
	assert_string_equal(st.s[1].version, "0.2.0");
	assert_string_equal(st.fallback, "slot a 0.1.0 is not good and has no attempts left");
	n = boot_state_format(&st, buf, sizeof(buf), err, sizeof(err));
	assert_int_equal(n, (int)strlen(GOOD));
	assert_memory_equal(buf, GOOD, strlen(GOOD));
	assert_int_equal(boot_state_parse(&st2, buf, (size_t)n, "t", err, sizeof(err)), 0);
	assert_memory_equal(&st, &st2, sizeof(st));
}

static void test_missing_slot(void **state)
{
	static const char only_a[] = "shelf-boot 1\nprimary a\na.version 0.1.0\na.attempts 3\na.good 1\nlast -\n";
	static const char only_b[] = "shelf-boot 1\nprimary b\nb.version 1.2.3\nb.attempts 0\nb.good 1\nlast b\n";
	struct boot_state st;
	char err[256], buf[BOOT_STATE_MAX_BYTES + 1];

	assert_int_equal(boot_state_parse(&st, only_a, strlen(only_a), "t", err, sizeof(err)), 0);
	assert_true(st.s[0].present);
	assert_false(st.s[1].present);
	assert_int_equal(st.last, 0);
	assert_int_equal(boot_state_format(&st, buf, sizeof(buf), err, sizeof(err)), (int)strlen(only_a));
	assert_string_equal(buf, only_a);
	assert_int_equal(boot_state_parse(&st, only_b, strlen(only_b), "t", err, sizeof(err)), 0);
	assert_false(st.s[0].present);
	assert_true(st.s[1].present && st.s[1].good);
}

struct bad {
	const char *text;
	const char *msg;   /* a part of the message */
};

static void test_malformed(void **state)
{
	static const struct bad bad[] = {
		{ "", "empty" },
		{ "shelf-boot 2\nprimary a\na.version 0.1.0\na.attempts 3\na.good 1\nlast a\n", "is not 1" },
		{ "shelf-boot one\nprimary a\n", "is not 1" },
		{ "shelf-bootx 1\nprimary a\n", "expected 'shelf-boot'" },
		{ "primary a\nshelf-boot 1\n", "expected 'shelf-boot'" },
		{ "shelf-boot 1\nprimary c\na.version 0.1.0\na.attempts 3\na.good 1\nlast a\n", "a or b" },
		{ "shelf-boot 1\nprimary b\na.version 0.1.0\na.attempts 3\na.good 1\nlast a\n", "primary slot b" },
		{ "shelf-boot 1\nprimary a\na.version 0.1\na.attempts 3\na.good 1\nlast a\n", "version" },
		{ "shelf-boot 1\nprimary a\na.version 0.01.0\na.attempts 3\na.good 1\nlast a\n", "version" },
		{ "shelf-boot 1\nprimary a\na.version 0.1.65536\na.attempts 3\na.good 1\nlast a\n", "version" },
		{ "shelf-boot 1\nprimary a\na.version 0.1.0x\na.attempts 3\na.good 1\nlast a\n", "version" },
		{ "shelf-boot 1\nprimary a\na.version 0.1.0\na.attempts -1\na.good 1\nlast a\n", "0..100" },
		{ "shelf-boot 1\nprimary a\na.version 0.1.0\na.attempts 101\na.good 1\nlast a\n", "0..100" },
		{ "shelf-boot 1\nprimary a\na.version 0.1.0\na.attempts 03\na.good 1\nlast a\n", "0..100" },
		{ "shelf-boot 1\nprimary a\na.version 0.1.0\na.attempts 99999999999\na.good 1\nlast a\n", "0..100" },
		{ "shelf-boot 1\nprimary a\na.version 0.1.0\na.attempts 3\na.good 2\nlast a\n", "0 or 1" },
		{ "shelf-boot 1\nprimary a\na.version 0.1.0\na.attempts 3\na.good yes\nlast a\n", "0 or 1" },
		{ "shelf-boot 1\nprimary a\na.version 0.1.0\na.good 1\na.attempts 3\nlast a\n", "expected 'a.attempts'" },
		{ "shelf-boot 1\nprimary a\na.version 0.1.0\na.attempts 3\na.good 1\nlast a\nfoo bar\n", "unknown" },
		{ "shelf-boot 1\nprimary a\na.version 0.1.0\na.attempts 3\na.good 1\ncolour red\nlast a\n", "unknown" },
		{ "shelf-boot 1\nprimary a\nb.version 0.1.0\nb.attempts 3\nb.good 1\na.version 0.1.0\na.attempts 3\na.good 1\nlast a\n", "unknown" },
		{ "shelf-boot 1\nprimary a\na.version 0.1.0\na.attempts 3\na.good 1\na.version 0.1.0\na.attempts 3\na.good 1\nlast a\n", "unknown" },
		{ "shelf-boot 1\nprimary a\na.version 0.1.0\na.attempts 3\na.good 1\n", "ends before 'last'" },
		{ "shelf-boot 1\nprimary a\na.version 0.1.0\na.attempts 3\n", "ends before 'a.good'" },
		{ "shelf-boot 1\nprimary a\na.version 0.1.0\na.attempts 3\na.good 1\nlast a", "no newline" },
		{ "shelf-boot 1\nprimary a\na.version 0.1.0\na.attempts 3\na.good 1\nlast b\n", "last slot b" },
		{ "shelf-boot 1\nprimary a\na.version 0.1.0\na.attempts 3\na.good 1\nlast x\n", "a, b or -" },
		{ "shelf-boot 1\nprimary a\nlast -\n", "names no slot" },
		{ "shelf-boot 1\nprimary a\na.version 0.1.0\na.attempts 3\na.good 1\nlast a\nfallback x\nfallback y\n", "after 'fallback'" },
		{ "shelf-boot 1\nprimary a\na.version 0.1.0\na.attempts 3\na.good 1\nlast a\nfallback\n", "key value" },
		{ "shelf-boot 1\nprimary a\na.version 0.1.0\na.attempts\t3\na.good 1\nlast a\n", "control byte" },
		{ "shelf-boot 1\r\nprimary a\n", "control byte" },
		{ "shelf-boot 1\nprimary  a\n", "a or b" },
		{ "shelf-boot 1\nprimary \n", "key value" },
		{ " 1\n", "key value" },
		{ "\n", "key value" },
	};
	struct boot_state st;
	char err[256];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		if (boot_state_parse(&st, bad[i].text, strlen(bad[i].text), "t", err, sizeof(err)) != -EINVAL)
			fail_msg("case %zu accepted: %s", i, bad[i].text);
		if (!strstr(err, bad[i].msg))
			fail_msg("case %zu: message '%s' lacks '%s'", i, err, bad[i].msg);
	}
	/* a NUL inside, an overlong file, an overlong fallback */
	{
		char buf[BOOT_STATE_MAX_BYTES + 64];

		memcpy(buf, "shelf-boot 1\nprimary a\n\0", 24);
		assert_int_equal(boot_state_parse(&st, buf, 24, "t", err, sizeof(err)), -EINVAL);
		memset(buf, 'x', sizeof(buf));
		assert_int_equal(boot_state_parse(&st, buf, sizeof(buf), "t", err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "more than"));
		snprintf(buf, sizeof(buf), "shelf-boot 1\nprimary a\na.version 0.1.0\na.attempts 3\na.good 1\nlast a\nfallback ");
		memset(buf + strlen(buf), 'r', 300);
		buf[strlen("shelf-boot 1\nprimary a\na.version 0.1.0\na.attempts 3\na.good 1\nlast a\nfallback ") + 300] = '\n';
		assert_int_equal(boot_state_parse(&st, buf, strlen("shelf-boot 1\nprimary a\na.version 0.1.0\na.attempts 3\na.good 1\nlast a\nfallback ") + 301,
						  "t", err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "longer than"));
	}
}

static void test_format_refuses(void **state)
{
	struct boot_state st;
	char err[256], buf[BOOT_STATE_MAX_BYTES + 1];

	memset(&st, 0, sizeof(st));
	st.primary = 'a';
	assert_int_equal(boot_state_format(&st, buf, sizeof(buf), err, sizeof(err)), -EINVAL);
	st.s[0].present = true;
	strcpy(st.s[0].version, "1.x.0");
	assert_int_equal(boot_state_format(&st, buf, sizeof(buf), err, sizeof(err)), -EINVAL);
	strcpy(st.s[0].version, "1.0.0");
	strcpy(st.fallback, "two\nlines");
	assert_int_equal(boot_state_format(&st, buf, sizeof(buf), err, sizeof(err)), -EINVAL);
	st.fallback[0] = '\0';
	assert_int_equal(boot_state_format(&st, buf, 10, err, sizeof(err)), -E2BIG);
	assert_true(boot_state_format(&st, buf, sizeof(buf), err, sizeof(err)) > 0);
}

static void test_versions(void **state)
{
	assert_true(boot_version_valid("0.0.0"));
	assert_true(boot_version_valid("65535.65535.65535"));
	assert_false(boot_version_valid("1.2"));
	assert_false(boot_version_valid("1.2.3.4"));
	assert_false(boot_version_valid("01.2.3"));
	assert_false(boot_version_valid("1.2.-3"));
	assert_false(boot_version_valid(""));
	assert_false(boot_version_valid(NULL));
	/* the same answers as ovl_fleet_version_parse() */
	{
		static const char *const v[] = { "0.0.0", "1.2.3", "65535.0.1", "65536.0.0", "1.2", "1.2.3.4",
			"01.2.3", "1.02.3", "1.2.03", "1..2", ".1.2", "1.2.", "a.b.c", "1.2.3 ", " 1.2.3",
			"+1.2.3", "-1.2.3", "1.2.3x", "99999999999.1.1", "0.0.00", "10.20.30", "" };

		for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
			uint64_t x;

			if (boot_version_valid(v[i]) != (ovl_fleet_version_parse(v[i], &x) == 0))
				fail_msg("'%s': boot_version_valid and ovl_fleet_version_parse disagree", v[i]);
		}
	}
}

static void make_dir(char *dir, size_t cap)
{
	snprintf(dir, cap, "/tmp/test_bootstate.XXXXXX");
	assert_non_null(mkdtemp(dir));
}

static void rm_dir(const char *dir)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

static void test_files(void **state)
{
	char dir[64], path[128], err[256];
	struct boot_state st, st2;
	FILE *f;

	make_dir(dir, sizeof(dir));
	assert_int_equal(boot_state_load(dir, &st, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "boot/state"));
	assert_int_equal(boot_state_parse(&st, GOOD, strlen(GOOD), "t", err, sizeof(err)), 0);
	assert_int_equal(boot_state_save(dir, &st), 0);
	assert_int_equal(boot_state_load(dir, &st2, err, sizeof(err)), 0);
	assert_memory_equal(&st, &st2, sizeof(st));
	/* the lock file exists beside it */
	snprintf(path, sizeof(path), "%s/boot/lock", dir);
	assert_int_equal(access(path, F_OK), 0);

	/* mark_good of b: good, attempts back to 3, the rest unchanged */
	assert_int_equal(boot_state_mark_good(dir, 'b'), 0);
	assert_int_equal(boot_state_load(dir, &st2, err, sizeof(err)), 0);
	assert_true(st2.s[1].good);
	assert_int_equal(st2.s[1].attempts, 3);
	assert_string_equal(st2.fallback, st.fallback);
	assert_int_equal(boot_state_mark_good(dir, 'c'), -EINVAL);

	/* set_try of a: version, not good, 3 attempts, primary, fallback cleared */
	assert_int_equal(boot_state_set_try(dir, 'a', "0.3.0"), 0);
	assert_int_equal(boot_state_load(dir, &st2, err, sizeof(err)), 0);
	assert_int_equal(st2.primary, 'a');
	assert_string_equal(st2.s[0].version, "0.3.0");
	assert_false(st2.s[0].good);
	assert_int_equal(st2.s[0].attempts, 3);
	assert_string_equal(st2.fallback, "");
	assert_int_equal(boot_state_set_try(dir, 'a', "0.3"), -EINVAL);

	/* a corrupt file: load refuses it, mark_good and set_try too, nothing changes */
	snprintf(path, sizeof(path), "%s/boot/state", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("shelf-boot 1\nprimary a\na.version 0.1.0\na.attempts 3\na.good 1\nlast a\nbogus 1\n", f);
	fclose(f);
	assert_int_equal(boot_state_load(dir, &st2, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "line 7"));
	assert_int_equal(boot_state_mark_good(dir, 'a'), -EINVAL);
	assert_int_equal(boot_state_set_try(dir, 'b', "0.2.0"), -EINVAL);

	/* mark_good of a slot the state does not name */
	{
		static const char only_a[] = "shelf-boot 1\nprimary a\na.version 0.1.0\na.attempts 3\na.good 1\nlast -\n";

		assert_int_equal(boot_state_parse(&st, only_a, strlen(only_a), "t", err, sizeof(err)), 0);
	}
	assert_int_equal(boot_state_save(dir, &st), 0);
	assert_int_equal(boot_state_mark_good(dir, 'b'), -ENOENT);
	rm_dir(dir);
}

static struct boot_state two(bool agood, unsigned aatt, bool bgood, unsigned batt, char primary)
{
	struct boot_state st;

	memset(&st, 0, sizeof(st));
	st.primary = primary;
	st.s[0] = (struct boot_slot){ true, "0.1.0", aatt, agood };
	st.s[1] = (struct boot_slot){ true, "0.2.0", batt, bgood };
	return st;
}

static void test_choose(void **state)
{
	const bool both[2] = { true, true }, only_a[2] = { true, false }, none[2] = { false, false };
	struct boot_state st;
	char slot = 0, why[256];

	/* a new slot b to try: b, attempts 3 -> 2 -> 1 -> 0, then fallback to a */
	st = two(true, 3, false, 3, 'b');
	for (unsigned left = 2;; left--) {
		assert_int_equal(boot_choose(&st, both, "exited with code 1", &slot, why, sizeof(why)), 0);
		assert_int_equal(slot, 'b');
		assert_string_equal(why, "");
		assert_int_equal(st.s[1].attempts, left);
		assert_int_equal(st.last, 'b');
		if (left == 0)
			break;
	}
	assert_int_equal(boot_choose(&st, both, "exited with code 1", &slot, why, sizeof(why)), 0);
	assert_int_equal(slot, 'a');
	assert_int_equal(st.primary, 'a');
	assert_int_equal(st.last, 'a');
	assert_int_equal(st.s[0].attempts, 3); /* a good slot's attempts stay */
	assert_string_equal(why, "slot b 0.2.0 is not good and has no attempts left (last: exited with code 1)");
	assert_string_equal(st.fallback, why);

	/* a good primary is always started, its attempts untouched even at 0 */
	st = two(true, 0, false, 0, 'a');
	assert_int_equal(boot_choose(&st, both, NULL, &slot, why, sizeof(why)), 0);
	assert_int_equal(slot, 'a');
	assert_int_equal(st.s[0].attempts, 0);
	assert_string_equal(st.fallback, "");

	/* a primary that is not runnable: the other slot */
	st = two(false, 3, true, 3, 'a');
	assert_int_equal(boot_choose(&st, (const bool[2]){ false, true }, NULL, &slot, why, sizeof(why)), 0);
	assert_int_equal(slot, 'b');
	assert_non_null(strstr(why, "no runnable bin/shelf-node"));

	/* the other slot not good but with attempts: tried, counted */
	st = two(false, 0, false, 2, 'a');
	assert_int_equal(boot_choose(&st, both, NULL, &slot, why, sizeof(why)), 0);
	assert_int_equal(slot, 'b');
	assert_int_equal(st.s[1].attempts, 1);

	/* nothing bootable */
	st = two(false, 0, false, 0, 'b');
	assert_int_equal(boot_choose(&st, both, NULL, &slot, why, sizeof(why)), -ENOENT);
	assert_non_null(strstr(why, "no bootable slot"));
	st = two(true, 3, true, 3, 'a');
	assert_int_equal(boot_choose(&st, none, NULL, &slot, why, sizeof(why)), -ENOENT);

	/* a missing slot b */
	st = two(true, 3, true, 3, 'a');
	st.s[1].present = false;
	assert_int_equal(boot_choose(&st, only_a, NULL, &slot, why, sizeof(why)), 0);
	assert_int_equal(slot, 'a');
	st.s[0].good = false;
	st.s[0].attempts = 0;
	assert_int_equal(boot_choose(&st, only_a, NULL, &slot, why, sizeof(why)), -ENOENT);
	assert_non_null(strstr(why, "slot b is not in the boot state"));
}

static void test_salvage(void **state)
{
	static const char t1[] = "shelf-boot 1\nprimary b\nb.good 1\nzzz\n";
	static const char t2[] = "garbage\n xa.good 1\n";
	const bool both[2] = { true, true }, only_b[2] = { false, true }, none[2] = { false, false };

	assert_int_equal(boot_state_salvage(t1, strlen(t1), both), 'b');
	assert_int_equal(boot_state_salvage(t1, strlen(t1), (const bool[2]){ true, false }), 'a');
	assert_int_equal(boot_state_salvage(t2, strlen(t2), both), 'a');
	assert_int_equal(boot_state_salvage(t2, strlen(t2), only_b), 'b');
	assert_int_equal(boot_state_salvage(t2, strlen(t2), none), 0);
	assert_int_equal(boot_state_salvage(GOOD, strlen(GOOD), both), 'a');
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_missing_slot),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_format_refuses),
		cmocka_unit_test(test_versions),
		cmocka_unit_test(test_files),
		cmocka_unit_test(test_choose),
		cmocka_unit_test(test_salvage),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
