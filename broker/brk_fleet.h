/*
 * brk_fleet.h: the director of fleet updates (brk_fleet.c), private to the
 * broker folder. The core (brk_core.c) owns one director, feeds it the
 * nodes' reports from their heartbeats, attaches its assignments to
 * heartbeat_ok and hands it the admin op `fleet`; the director reads the
 * core's registry through the brk_core_fleet_* views below.
 *
 * What it keeps under its directory (state_dir/fleet; none without one):
 *   releases/<version>-<board>.meta   the release metadata envelope (3.1)
 *   releases/<version>-<board>.cert   the release key's certificate
 *   releases/<version>-<board>.slice  the slice that holds its blocks (one line)
 *   rollout   the rollout (text, "shelf-rollout 1" first; atomic rewrite)
 *   seq       the highest assignment seq that may have been used (reserved in
 *             blocks of BRK_FLEET_SEQ_BLOCK: a restart continues above it)
 */
#ifndef BRK_FLEET_H
#define BRK_FLEET_H

#include "broker.h"
#include "ovl_fleet.h"

#define BRK_FLEET_SEQ_BLOCK 1024          /* seqs reserved per write of the seq file */
#define BRK_FLEET_STAGES_MAX 16
#define BRK_FLEET_RESTART_WINDOW_MS (180 * 1000ULL) /* a granted restart blocks its slices
						     * for at most (gate 120 s + 60 s) */
#define BRK_FLEET_REPORT_FRESH_MS 15000   /* a report older than this says nothing */
#define BRK_FLEET_BADLOG_MS 10000         /* bad reports are logged at most this often */
#define BRK_FLEET_REPLY_NODES_MAX 200     /* nodes listed in one status/versions reply */
#define BRK_FLEET_REPLY_FAILS_MAX 50      /* failures listed in one status reply */
#define BRK_FLEET_RELEASES_MAX 256

struct brk_fleet;

struct brk_fleet_cfg {
	const char *dir;         /* state_dir/fleet (created); NULL: nothing persisted */
	const char *slice;       /* default slice of the blocks ("system") */
	uint64_t soak_ms;        /* default soak of a stage */
	uint64_t valid_ms;       /* how long an assignment may be acted on */
	uint64_t restart_window_ms; /* 0: BRK_FLEET_RESTART_WINDOW_MS */
};

/* What the director sees of one node of the core's registry (borrowed). */
struct brk_fleet_node {
	const uint8_t *id;
	const char *board, *chassis;
	uint8_t state;           /* enum ovl_msg_state */
};

/* ---- views of the core (brk_core.c) ---- */
size_t brk_core_fleet_count(brk_t *b);
void brk_core_fleet_at(brk_t *b, size_t i, struct brk_fleet_node *o);
/* 0 with *o, or -ENOENT */
int brk_core_fleet_find(brk_t *b, const uint8_t id[OVL_ID_BYTES], struct brk_fleet_node *o);
/* Call fn for every member of every slice `id` is a member of, other than
 * id itself (a node in two shared slices comes twice); fn returns false to
 * stop. Returns false when fn stopped it. */
bool brk_core_fleet_peers(brk_t *b, const uint8_t id[OVL_ID_BYTES],
			  bool (*fn)(void *arg, const struct brk_fleet_node *peer), void *arg);
void brk_core_fleet_event(brk_t *b, enum brk_event ev, const char *line);
uint64_t brk_core_fleet_now_ms(brk_t *b);
uint64_t brk_core_fleet_unix_s(brk_t *b);

/* ---- the director ---- */

/*
 * Create the director of core b (borrowed; site gives the CA key and the
 * broker's signing key). Loads releases, the rollout and the seq counter
 * from cfg->dir. A rollout file that cannot be read is not fatal: the
 * rollout shows as halted with reason "state file unreadable: ..." and an
 * event says so. Returns 0, or -ENOMEM / -errno (the directory cannot be
 * created or the seq file is unreadable) with err.
 */
int brk_fleet_new(struct brk_fleet **out, brk_t *b, const struct brk_site *site,
		  const struct brk_fleet_cfg *cfg, char *err, size_t errlen);
void brk_fleet_destroy(struct brk_fleet **f);

/* A node's heartbeat carried report buf[0..len) (borrowed). A report that
 * does not decode is ignored (an event, at most one per BRK_FLEET_BADLOG_MS). */
void brk_fleet_report(struct brk_fleet *f, const uint8_t id[OVL_ID_BYTES], const uint8_t *buf,
		      size_t len);

/* The assignment to attach to node id's heartbeat_ok, when the node's last
 * report shows it has not acted on it: true with *buf (borrowed until the
 * next call into f) and *len. Re-signs an expired one with a new seq. */
bool brk_fleet_assignment(struct brk_fleet *f, const uint8_t id[OVL_ID_BYTES],
			  const uint8_t **buf, size_t *len);

/*
 * Admin op `fleet`: request req[0..len) (3.7). Returns 0 with *reply (malloc'd,
 * the caller frees it) holding {v, ok, error, ...}: a refused request is a
 * reply with ok false. Returns -EBADMSG with err when the request does not
 * decode (no reply), -ENOMEM.
 */
int brk_fleet_admin(struct brk_fleet *f, const uint8_t *req, size_t len, uint8_t **reply,
		    size_t *reply_len, char *err, size_t errlen);

/* Advance the rollout: call every BRK_TICK_MS or so. */
void brk_fleet_tick(struct brk_fleet *f);

#endif
