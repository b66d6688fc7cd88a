/*
 * node_update: the node's update agent (fleet updates, issue 16; design
 * section 5). It runs on the node's loop thread, driven by the control
 * plane's heartbeats and the node's tick; it never logs (what happened is
 * read with node_update_event_next()) and never runs the loop.
 *
 * What it does:
 *   - takes the director's assignment (overlay/ovl_fleet.h, 3.5) from
 *     every HEARTBEAT-OK that carries one, or from the file
 *     D/update/assign.inject (read and removed; the same broker-signed
 *     envelope, verified the same way: a local way to hand one over);
 *     verifies the broker's signature (the key of the broker that sent it,
 *     or for the file one the node registered with), the node, the time
 *     window and the seq, then the release (3.1): the release key's
 *     certificate against the site CA, this node's board, expiry, and the
 *     version rules against the running version. A refusal: state failed,
 *     the error as the reason, nothing fetched or installed;
 *   - action fetch: fetches the release's blocks (keys fe x8 'F' id index,
 *     3.4) from their homes in the assignment's slice with ranged GETs
 *     through the node's peer connections (node_repl_call), in placement
 *     order with failover to the next home, at most `inflight` blocks at
 *     once, each one piece at a time (at most REQ_BG_PIECE_MAX_BYTES in
 *     memory per block), paced by a token bucket of min(update_rate, the
 *     assignment's rate). A block's pieces go to D/update/image.part at
 *     their offset; a block whose SHA-256 is not the release's counts in
 *     update_blocks_bad and is fetched again from another home (it is
 *     never marked, used or installed); a verified one is fsync'd and
 *     then marked in D/update/image.blocks (fsync'd), so a SIGKILL at any
 *     point resumes with the blocks marked. Errors retry with backoff;
 *     a block that no home serves verified bytes for, or no home answers
 *     for UPDATE_ROUNDS_MAX rounds: state failed;
 *   - when every block is marked: the SHA-256 of the whole payload
 *     (UPDATE_HASH_STEP_BYTES per tick), extraction of the ustar payload
 *     with `tar -x --no-same-owner` into D/slots/X.new (X: the slot not
 *     running), which must hold VERSION (the release's) and an executable
 *     bin/shelf-node; every file and directory fsync'd; slot X dropped from
 *     the boot state if it named it, the old D/slots/X removed, X.new
 *     renamed to X, then boot_state_set_try(X): state installed. A kill at
 *     any point leaves no slot X named in the boot state or a complete one;
 *   - action restart (state installed with that release): state
 *     restarting; once a heartbeat carried that report and was answered
 *     (or UPDATE_RESTART_WAIT_MS passed), node_update_exit_wanted() is
 *     true: the node shuts down cleanly and exits 75 for shelf-boot;
 *   - action stay: stops a fetch (what was fetched stays for a later
 *     fetch of the same release); an installed slot not yet restarted
 *     into stops being primary in the boot state;
 *   - after a restart: the new slot running the target is restarting
 *     until its health gate marks it good, then healthy; a node that
 *     finds `fallback` in the boot state while it does not run its target
 *     is rolled_back with that reason.
 * Files under D (the boot state's directory: $SHELF_BOOT_STATE, else the
 * node's state directory): update/state (text: seq, state, target,
 * reason, broker key), update/assign (the envelope acted on),
 * update/image.part, update/image.blocks (release id + bitmap),
 * update/tar.log, slots/X.new during an install.
 *
 * Threading: the loop's thread only.
 */
#ifndef NODE_UPDATE_H
#define NODE_UPDATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../repl/repl.h"
#include "overlay.h"
#include "ovl_fleet.h"

#define NODE_UPDATE_RATE_DEFAULT (32ull << 20) /* update_rate, bytes/s */
#define NODE_UPDATE_INFLIGHT_DEFAULT 4         /* update_inflight */
#define NODE_UPDATE_INFLIGHT_MAX 64
#define NODE_UPDATE_EXIT_RESTART 75            /* EX_TEMPFAIL: shelf-boot starts the new slot */
#define UPDATE_ROUNDS_MAX 8                    /* rounds over a block's homes before failing */
#define UPDATE_BACKOFF_MIN_MS 500              /* first wait after a round failed */
#define UPDATE_BACKOFF_MAX_MS 30000
#define UPDATE_HASH_STEP_BYTES (8u << 20)      /* whole-payload hash per tick */
#define UPDATE_EXTRACT_TIMEOUT_MS 300000       /* tar must finish within this */
#define UPDATE_RESTART_WAIT_MS 10000           /* restarting: longest wait for the report to go */
#define UPDATE_INJECT_CHECK_MS 1000            /* how often update/assign.inject is looked for */
#define UPDATE_NOMAP_MS 60000                  /* a fetch waits this long for the slice's map */

struct node_update;

struct node_update_opts {
	const char *dir;               /* D (copied) */
	const char *board;             /* this node's board name (copied) */
	const uint8_t *node_id;        /* 32 bytes (copied) */
	uint8_t ca_pk[OVL_ID_BYTES];   /* the site CA key */
	char slot;                     /* the running slot 'a'/'b'; 0: not started by shelf-boot */
	const char *running;           /* the running version (copied) */
	uint64_t rate;                 /* update_rate, bytes/s; 0: unlimited */
	unsigned inflight;             /* update_inflight, 1..NODE_UPDATE_INFLIGHT_MAX */
	/* trusted unix seconds; 0 while the node has no trusted time (not
	 * registered): nothing is verified or resumed until it has */
	uint64_t (*now_s)(void *arg);
	/* the revocation list held, or NULL (may be NULL) */
	const struct ovl_crl *(*crl)(void *arg);
	/* objects of this node's slices below full redundancy as it knows
	 * (heal_objects_degraded + repair_objects_left); may be NULL */
	uint64_t (*degraded)(void *arg);
	/* the key of registered broker i, or NULL past the last (for
	 * update/assign.inject); may be NULL */
	const uint8_t *(*broker_key)(void *arg, unsigned i);
	void *arg;
};

/*
 * Create the agent: loads D/update/state and the boot state (rolled back?
 * healthy?), removes a D/slots/X.new left by a kill, and plans to resume a
 * fetch that was under way. 0, or -errno with err (a bad option, D/update
 * cannot be created).
 */
int node_update_new(struct node_update **out, const struct node_update_opts *o, char *err,
		    size_t errlen);

/* The peer connections to fetch with (borrowed; the data plane is up).
 * NULL: none (fetching waits). */
void node_update_repl_set(struct node_update *u, struct node_repl *repl);

/* Abandon fetches (calls still in flight complete into nothing), kill a
 * running tar, free, NULL *u. After node_repl_stop(). Accepts NULL. */
void node_update_destroy(struct node_update **u);

/* A HEARTBEAT-OK arrived from the broker whose key is broker_pk, with its
 * fleet document buf[0..len) (len 0: none). */
void node_update_heartbeat_ok(struct node_update *u, const uint8_t *buf, size_t len,
			      const uint8_t broker_pk[OVL_ID_BYTES]);

/* The report (3.6) for the next heartbeat into buf[0..cap): its length,
 * or -E2BIG / -EINVAL. */
int node_update_report(struct node_update *u, uint8_t *buf, size_t cap);

/* Timers and work: fetch pieces, hash, extraction, the boot state. Call
 * every tick (~100 ms). */
void node_update_tick(struct node_update *u, uint64_t now_mono_ms);

/* After the event loop ran: a piece that arrived asks for the next one
 * now rather than at the next tick (the bucket still paces). Cheap when
 * nothing arrived; never called from inside a completion. */
void node_update_poll(struct node_update *u, uint64_t now_mono_ms);

/* The node should shut down cleanly now and exit NODE_UPDATE_EXIT_RESTART. */
bool node_update_exit_wanted(const struct node_update *u);

/* NODE-STAT counters into c[0..max): update_state, update_seq,
 * update_bytes_fetched, update_blocks_verified, update_blocks_bad,
 * update_bytes_done, update_bytes_total. How many. */
unsigned node_update_counters(const struct node_update *u, struct ovl_wire_counter *c,
			      unsigned max);

/* The report as it stands (for tests and the daemon). */
void node_update_report_get(struct node_update *u, struct ovl_fleet_report *r);

#define NODE_UPDATE_EV_INFO 1
#define NODE_UPDATE_EV_WARN 2
#define NODE_UPDATE_EV_ERROR 3

/* The next thing to log: true with its level and text, false when none. */
bool node_update_event_next(struct node_update *u, int *level, char *text, size_t len);

#endif
