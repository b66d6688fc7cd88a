/*
 * shelf-bench: benchmark programs. Each subcommand lives in its own file and
 * registers itself with BENCH_COMMAND(); main.c dispatches on the name and
 * runs every part registered under it (one command may span several files).
 *
 * Every figure is printed as exactly one line:
 *   BENCH <name> ours=<v> ref=<v> ratio=<ours/ref> unit=<unit> ref_tool=<tool>
 * with ref=- ratio=- ref_tool=- for figures that have no reference.
 */
#ifndef SHELF_BENCH_H
#define SHELF_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bench_cmd {
	const char *name;
	const char *usage;
	int (*run)(int argc, char **argv); /* argv[0] is the subcommand */
	bool in_all;                         /* part of `shelf-bench all` */
};

void bench_register(const struct bench_cmd *cmd);

#define BENCH_COMMAND(var)                                                     \
	static void var##_register(void) __attribute__((constructor));       \
	static void var##_register(void) { bench_register(&var); }

/* Print one BENCH line. ref <= 0 prints ref=- ratio=- (no reference). */
void bench_line(const char *name, double ours, double ref, const char *unit,
		const char *ref_tool);

/* Monotonic time in seconds. */
double bench_now(void);

/* Parse a size with K/M/G suffix or exit with a message naming `what`. */
uint64_t bench_size_arg(const char *what, const char *s);

/* Run a shell command, capture up to cap-1 bytes of stdout. 0 or -errno
 * (-ECHILD when the command exited non-zero). */
int bench_capture(const char *cmd, char *out, size_t cap);

/* Median of n doubles (sorts in place). */
double bench_median(double *v, int n);

#endif
