/*
 * bench_large: the large-object figures of `shelf-bench stage`
 * (large_get_1g, large_put_1g, client_rss_mib_1g; see bench_large.c).
 */
#ifndef SHELF_BENCH_LARGE_H
#define SHELF_BENCH_LARGE_H

#include <stdint.h>

#include "bench_cluster.h"

/* On cl (up; in the parent): create slice r1 (R=1) and client "large",
 * write a source of `bytes` in cl->dir/large, PUT and GET it (inflight
 * chunks at once; 0: libshelf's default) from a child
 * in the backplane, run nginx+curl and fio for the references, print the
 * three BENCH lines and remove cl->dir/large. 0, or 1 with a message. */
int bench_large_run(const struct bench_cluster *cl, uint64_t bytes, unsigned inflight);

#endif
