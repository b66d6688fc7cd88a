/*
 * xfer.h: what `shelf put -r` (ingest.c) and `shelf stage` (stage.c) share:
 * their options, opening clients (one per thread), the progress bar on a
 * terminal, SIGINT, and small file-system helpers.
 */
#ifndef SHELF_CLI_XFER_H
#define SHELF_CLI_XFER_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "shelf.h"

#define XFER_INFLIGHT_DEFAULT 64        /* small objects in flight (shelf_set_max_inflight) */
#define XFER_HELD_BYTES_DEFAULT (128u << 20) /* bytes of small objects held in memory at once */
#define XFER_LARGE_WORKERS_DEFAULT 2    /* large objects streamed at once (one client each) */
#define XFER_LARGE_WORKERS_MAX 16

struct xopts {
	const char *slice, *client, *broker, *chassis;
	const char *nodes[SHELF_NODES_MAX];
	int nnodes, timeout_ms, connect_timeout_ms;
	unsigned inflight;        /* small objects in flight */
	unsigned workers;         /* large objects at once */
	uint64_t held_bytes;      /* bytes of small objects in memory at most */
	bool json;
	bool recursive;           /* -r was given */
	const char *args[2];
	int nargs;
};

/*
 * Parse `shelf CMD ARGS...` (the common options of data.c, and --inflight,
 * --workers, --held-mib, --json) into o. Exactly two arguments (ARGS
 * names them in the usage). 0; -1 after --help (exit 0); 2 on a usage error
 * (printed). extra (may be NULL) is a line of help for the command.
 */
int xfer_parse(int argc, char **argv, const char *cmd, const char *args, const char *extra,
	       struct xopts *o);

/* Open a client with o's settings (timeout, connect timeout, chassis,
 * nodes); 0 or an exit code (printed). */
int xfer_open(const char *cmd, const struct xopts *o, struct shelf **s);

/* Set when SIGINT or SIGTERM arrived (after xfer_signals()). */
extern volatile sig_atomic_t xfer_interrupted;
/* Catch SIGINT and SIGTERM into xfer_interrupted (no SA_RESTART). */
void xfer_signals(void);

/* The progress bar: drawn on stderr when it is a terminal, from the first
 * second, at most ten times a second. */
struct xbar {
	const char *what;
	double started, drawn;
	bool tty, shown;
};
void xbar_start(struct xbar *b, const char *what);
void xbar_draw(struct xbar *b, uint64_t files_done, uint64_t files_total, uint64_t bytes_done,
	       uint64_t bytes_total, bool last);
/* Seconds since xbar_start. */
double xbar_seconds(const struct xbar *b);

/*
 * Whether a STAT through the asynchronous API (which does not read
 * manifests yet: it gives the stored object) may have met a large
 * object's manifest: a stored size of 68 + 16n bytes, n >= 1
 * (docs/PROTOCOL.md, "Large objects"). Then the blocking shelf_stat()
 * tells the object's own size and crc.
 */
bool xfer_maybe_manifest(uint64_t stored_size);

/* mkdir -p of the directories above path. 0 or -errno. */
int xfer_mkdirs(const char *path);
/* fsync the directory dir. 0 or -errno. */
int xfer_sync_dir(const char *dir);
/* crc32c and size of the regular file path: 0, -ENOENT (none), -EINVAL
 * (not a regular file) or -errno; stops early (-EAGAIN) when its size is
 * not want_size (UINT64_MAX: any) or xfer_interrupted. */
int xfer_file_crc(const char *path, uint64_t want_size, uint64_t *size, uint32_t *crc);

/* `shelf put -r DIR PREFIX` (ingest.c): the exit code. */
bool cli_put_is_recursive(int argc, char **argv);
int cmd_put_recursive(int argc, char **argv);
/* `shelf stage PREFIX DIR` (stage.c): the exit code. */
int cmd_stage(int argc, char **argv);

#endif
