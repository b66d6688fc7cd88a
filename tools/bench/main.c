/* shelf-bench: runs the benchmark named on the command line. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "bench.h"
#include "overlay.h"

#define BENCH_CMDS_MAX 16

static const struct bench_cmd *cmds[BENCH_CMDS_MAX];
static int ncmds;

void bench_register(const struct bench_cmd *cmd)
{
	if (ncmds < BENCH_CMDS_MAX)
		cmds[ncmds++] = cmd;
}

void bench_line(const char *name, double ours, double ref, const char *unit,
		const char *ref_tool)
{
	if (ref > 0)
		printf("BENCH %s ours=%.6g ref=%.6g ratio=%.3f unit=%s ref_tool=%s\n", name, ours,
		       ref, ours / ref, unit, ref_tool);
	else
		printf("BENCH %s ours=%.6g ref=- ratio=- unit=%s ref_tool=-\n", name, ours, unit);
	fflush(stdout);
}

double bench_now(void)
{
	return (double)ovl_mono_ns() / 1e9;
}

uint64_t bench_size_arg(const char *what, const char *s)
{
	uint64_t v = 0;

	if (ovl_parse_size(s, &v) < 0 || v == 0) {
		fprintf(stderr, "shelf-bench: %s '%s' is not a size (use K, M, G suffixes)\n", what, s);
		exit(2);
	}
	return v;
}

int bench_capture(const char *cmd, char *out, size_t cap)
{
	FILE *p = popen(cmd, "r");
	size_t n = 0;
	int st;

	if (!p)
		return -errno;
	while (n + 1 < cap) {
		size_t r = fread(out + n, 1, cap - 1 - n, p);

		if (r == 0)
			break;
		n += r;
	}
	out[n] = '\0';
	st = pclose(p);
	if (st == -1)
		return -errno;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -ECHILD;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

double bench_median(double *v, int n)
{
	if (n <= 0)
		return 0;
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: shelf-bench <command> [options]\n\ncommands:\n");
	for (int i = 0; i < ncmds; i++)
		fprintf(f, "  %-10s %s\n", cmds[i]->name, cmds[i]->usage);
	/* commands registered in parts are listed once per part */
	fprintf(f, "  %-10s run every benchmark with default options [--dir DIR]\n", "all");
}

int main(int argc, char **argv)
{
	int failed = 0, found = 0;

	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (strcmp(argv[1], "all") == 0) {
		for (int i = 0; i < ncmds; i++) {
			char *args[4] = { (char *)cmds[i]->name, NULL, NULL, NULL };
			int n = 1;

			if (!cmds[i]->in_all)
				continue;
			if (argc >= 4 && strcmp(argv[2], "--dir") == 0) {
				args[n++] = "--dir";
				args[n++] = argv[3];
			}
			if (cmds[i]->run(n, args) != 0) {
				fprintf(stderr, "shelf-bench: '%s' failed\n", cmds[i]->name);
				failed++;
			}
		}
		return failed ? 1 : 0;
	}
	/* Several files may register parts of one command: run each. */
	for (int i = 0; i < ncmds; i++) {
		if (strcmp(argv[1], cmds[i]->name) != 0)
			continue;
		found++;
		if (cmds[i]->run(argc - 1, argv + 1) != 0)
			failed++;
	}
	if (!found) {
		fprintf(stderr, "shelf-bench: unknown command '%s'\n", argv[1]);
		usage(stderr);
		return 2;
	}
	return failed ? 1 : 0;
}
