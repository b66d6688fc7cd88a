/* Configuration tables, board profiles, logging and crc32c. */
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

#include "overlay.h"

struct demo {
	char name[8];
	int64_t count;
	bool flag;
	uint64_t size;
	int64_t timeout;
};

static const struct ovl_conf_item demo_conf[] = {
	{ "name", OVL_CONF_STR, "abc", offsetof(struct demo, name), 8, 0, 0, "a name" },
	{ "count", OVL_CONF_INT, "3", offsetof(struct demo, count), 0, 1, 10, "a count" },
	{ "flag", OVL_CONF_BOOL, "no", offsetof(struct demo, flag), 0, 0, 0, "a flag" },
	{ "size", OVL_CONF_SIZE, "4K", offsetof(struct demo, size), 0, 0, 0, "a size" },
	{ "timeout", OVL_CONF_MS, "5s", offsetof(struct demo, timeout), 0, 0, 0, "a timeout" },
	OVL_CONF_END
};

static void test_defaults_and_set(void **state)
{
	struct demo d;
	char err[256];

	assert_int_equal(ovl_conf_defaults(demo_conf, &d, err, sizeof(err)), 0);
	assert_string_equal(d.name, "abc");
	assert_int_equal(d.count, 3);
	assert_false(d.flag);
	assert_int_equal(d.size, 4096);
	assert_int_equal(d.timeout, 5000);

	assert_int_equal(ovl_conf_set(demo_conf, &d, "size", "2G", err, sizeof(err)), 0);
	assert_int_equal(d.size, 2ULL << 30);
	assert_int_equal(ovl_conf_set_pair(demo_conf, &d, "timeout = 250ms", err, sizeof(err)), 0);
	assert_int_equal(d.timeout, 250);
	assert_int_equal(ovl_conf_set(demo_conf, &d, "flag", "on", err, sizeof(err)), 0);
	assert_true(d.flag);
}

static void test_bad_values_name_the_key(void **state)
{
	struct demo d;
	char err[256];

	ovl_conf_defaults(demo_conf, &d, err, sizeof(err));
	assert_int_equal(ovl_conf_set(demo_conf, &d, "nosuch", "1", err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "unknown config key 'nosuch'"));
	assert_int_equal(ovl_conf_set(demo_conf, &d, "count", "11", err, sizeof(err)), -ERANGE);
	assert_non_null(strstr(err, "'count'"));
	assert_int_equal(d.count, 3);
	assert_int_equal(ovl_conf_set(demo_conf, &d, "count", "3x", err, sizeof(err)), -EINVAL);
	assert_int_equal(ovl_conf_set(demo_conf, &d, "size", "12Q", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "'size'"));
	assert_int_equal(ovl_conf_set(demo_conf, &d, "size", "99999999999T", err, sizeof(err)), -ERANGE);
	assert_int_equal(ovl_conf_set(demo_conf, &d, "flag", "maybe", err, sizeof(err)), -EINVAL);
	assert_int_equal(ovl_conf_set(demo_conf, &d, "name", "toolongname", err, sizeof(err)), -ERANGE);
	assert_int_equal(ovl_conf_set(demo_conf, &d, "timeout", "5 parsecs", err, sizeof(err)), -EINVAL);
	assert_int_equal(ovl_conf_set_pair(demo_conf, &d, "novalue", err, sizeof(err)), -EINVAL);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void test_file(void **state)
{
	char dir[] = "/tmp/shelf-conf-XXXXXX", path[512], err[512];
	struct demo d;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/x.conf", dir);
	write_file(path, "# comment\n\n name = xy  # trailing\ncount=7\n");
	ovl_conf_defaults(demo_conf, &d, err, sizeof(err));
	assert_int_equal(ovl_conf_load_file(demo_conf, &d, path, err, sizeof(err)), 0);
	assert_string_equal(d.name, "xy");
	assert_int_equal(d.count, 7);

	write_file(path, "count = 2\nbogus = 1\n");
	assert_int_equal(ovl_conf_load_file(demo_conf, &d, path, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, ":2: unknown config key 'bogus'"));
	write_file(path, "just words\n");
	assert_int_equal(ovl_conf_load_file(demo_conf, &d, path, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, ":1: expected"));
	unlink(path);
	assert_int_equal(ovl_conf_load_file(demo_conf, &d, path, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "cannot open config"));
	rmdir(dir);
}

static void test_board(void **state)
{
	char dir[] = "/tmp/shelf-board-XXXXXX", path[512], err[512];
	struct ovl_board b;

	/* the shipped sim board, found from the source tree */
	assert_int_equal(ovl_board_load(&b, "sim", NULL, err, sizeof(err)), 0);
	assert_string_equal(b.name, "sim");
	assert_true(b.drive_is_file);
	assert_true(b.drive_size >= 4 * b.segment_size);

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/bad", dir);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/bad/board.conf", dir);
	write_file(path, "name = bad\ndrive = /dev/null\nring_depth = 1\n");
	assert_int_equal(ovl_board_load(&b, "bad", dir, err, sizeof(err)), -ERANGE);
	assert_non_null(strstr(err, "'ring_depth'"));
	write_file(path, "name = bad\ndrive = /dev/null\nsegment_size = 3M\n");
	assert_int_equal(ovl_board_load(&b, "bad", dir, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "segment_size"));
	write_file(path, "name = other\ndrive = x\n");
	assert_int_equal(ovl_board_load(&b, "bad", dir, err, sizeof(err)), -EINVAL);
	assert_int_equal(ovl_board_load(&b, "../etc", dir, err, sizeof(err)), -EINVAL);
	assert_int_equal(ovl_board_load(&b, "absent", dir, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "not found"));
	unlink(path);
	snprintf(path, sizeof(path), "%s/bad", dir);
	rmdir(path);
	rmdir(dir);
}

struct captured {
	int n;
	char last[256];
};

static void sink(void *arg, enum ovl_log_level level, const char *line)
{
	struct captured *c = arg;

	c->n++;
	snprintf(c->last, sizeof(c->last), "%s", line);
}

static int formatted;
static const char *count_format(void)
{
	formatted++;
	return "x";
}

static void test_log_levels(void **state)
{
	struct captured c = { 0 };

	ovl_log_set_sink(sink, &c);
	ovl_log_set_level(OVL_LOG_WARN);
	ovl_info("not shown %s", count_format());
	assert_int_equal(formatted, 0); /* arguments not evaluated below the level */
	ovl_warn("shown %d", 42);
	assert_int_equal(c.n, 1);
	assert_string_equal(c.last, "shown 42");
	ovl_log_set_sink(NULL, NULL);
	enum ovl_log_level l;
	assert_int_equal(ovl_log_level_parse("debug", &l), 0);
	assert_int_equal(l, OVL_LOG_DEBUG);
	assert_int_equal(ovl_log_level_parse("loud", &l), -EINVAL);
}

static void test_crc32c(void **state)
{
	/* RFC 3720 B.4 known answers */
	uint8_t zeros[32] = { 0 }, ones[32], inc[32];
	uint8_t *big;
	uint32_t a, b;

	memset(ones, 0xff, sizeof(ones));
	for (int i = 0; i < 32; i++)
		inc[i] = i;
	assert_int_equal(ovl_crc32c(0, zeros, 32), 0x8a9136aa);
	assert_int_equal(ovl_crc32c(0, ones, 32), 0x62a8ab43);
	assert_int_equal(ovl_crc32c(0, inc, 32), 0x46dd794e);
	assert_int_equal(ovl_crc32c(0, "123456789", 9), 0xe3069283);
	/* the interleaved path equals byte-by-byte extension at odd splits */
	big = malloc(100000);
	for (int i = 0; i < 100000; i++)
		big[i] = (uint8_t)(i * 7 + (i >> 8));
	a = ovl_crc32c(0, big, 100000);
	b = 0;
	for (int off = 0; off < 100000; off += 997) {
		int n = 100000 - off < 997 ? 100000 - off : 997;

		b = ovl_crc32c(b, big + off, n);
	}
	assert_int_equal(a, b);
	assert_int_equal(ovl_crc32c(ovl_crc32c(0, big + 1, 7000), big + 7001, 5000),
			 ovl_crc32c(0, big + 1, 12000));
	free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults_and_set),
		cmocka_unit_test(test_bad_values_name_the_key),
		cmocka_unit_test(test_file),
		cmocka_unit_test(test_board),
		cmocka_unit_test(test_log_levels),
		cmocka_unit_test(test_crc32c),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
