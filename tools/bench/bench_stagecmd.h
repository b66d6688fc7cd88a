/*
 * bench_stagecmd: `shelf-bench stage --shards` (bench_stagecmd.c), the
 * stage_shards_32m figure: `shelf stage` of shards against nginx + curl.
 */
#ifndef SHELF_BENCH_STAGECMD_H
#define SHELF_BENCH_STAGECMD_H

#include <stdbool.h>

/* Whether argv (of `shelf-bench stage`) asks for --shards. */
bool bench_stagecmd_wanted(int argc, char **argv);

/* Run it: the exit code (0 also when skipped: not root, no nginx or curl). */
int bench_stagecmd_run(int argc, char **argv);

#endif
