/*
 * bench_cluster: a local cluster for a benchmark, through tools/shelf-cluster
 * (its own namespace prefix and directory), taken down and deleted by the
 * caller whatever happened. Used by bench_stage.c (bench_array.c and
 * bench_heal.c keep their own set-up for now).
 *
 * A bench brings it up in the parent (bench_cluster_up), forks a child that
 * enters the backplane namespace (bench_cluster_enter) and runs libshelf
 * there, and always calls bench_cluster_down in the parent.
 */
#ifndef SHELF_BENCH_CLUSTER_H
#define SHELF_BENCH_CLUSTER_H

#include <limits.h>
#include <stdbool.h>

/* shelf-cluster's backplane: the broker's address and port, fixed there */
#define BENCH_CLUSTER_BROKER "tcp://[fd00:5e1f:0:1::1]:7400"

struct bench_cluster {
	/* in */
	const char *tag;          /* names the bench in messages and paths ("stage") */
	int nodes, chassis, replicas;
	const char *drive_size;   /* shelf-cluster --drive-size */
	bool keep;                /* leave the directory (logs) after the cluster went down */
	bool system_slice;        /* shelf-cluster up --system-slice (fleet images) */
	/* set by bench_cluster_init */
	char dir[1024];           /* BASE/TAG: removed at the end */
	char cdir[1040];          /* the cluster's --dir */
	char client[1080];        /* the client directory issued by the broker (name "bench") */
	char script[1100];        /* tools/shelf-cluster */
	char bin[1024];           /* where shelf-node and the others are */
	char nsp[32];             /* SHELF_CLUSTER_NS */
	char log[1100];           /* set-up output */
	bool up;
};

/*
 * Find tools/shelf-cluster (script, else $SHELF_CLUSTER, else next to this
 * program's build directory, else ./tools) and the binaries, make BASE/TAG
 * afresh. 0, or 1 with a message on stderr; 77 (and a message on stdout)
 * when not root.
 */
int bench_cluster_init(struct bench_cluster *c, const char *base, const char *script);

/* Bring it up: the default slice with c->replicas, a client "bench" for
 * it, every node joined. 0 or -errno (the log's end on stderr). */
int bench_cluster_up(struct bench_cluster *c);

/* In a child: enter the cluster's backplane namespace (where the broker
 * and the nodes are reachable). 0 or -errno. */
int bench_cluster_enter(const struct bench_cluster *c);

/* shelf-cluster exec -- ARGV... (at most 26 words; in the backplane, the
 * output appended to the set-up log). 0 or -errno (-ECHILD: it failed). */
int bench_cluster_exec(const struct bench_cluster *c, char *const argv[]);

/* shelf-cluster kill N (1..nodes). 0 or -errno. */
int bench_cluster_kill(const struct bench_cluster *c, int node);

/* Take it down (when up) and delete its directory (unless keep). */
void bench_cluster_down(struct bench_cluster *c);

/* Run fn(arg) in a forked child (SIGINT and SIGTERM passed on to it); its
 * exit code, 1 when it died. */
int bench_cluster_child(int (*fn)(void *arg), void *arg);

#endif
