/*
 * node_gate: the health gate of a slot on trial (issue 16; docs/FORMAT.md
 * "Slots and the boot state").
 *
 * A node started by shelf-boot in a slot that the boot state does not yet
 * mark good must prove itself within update_gate_deadline, in this order:
 *   1. it registered with a broker;
 *   2. its store is open and a sample scrub (up to NODE_GATE_SCRUB_RECORDS
 *      records, or the whole store when it holds fewer) finds no damage;
 *   3. a data-plane self-check: a STAT of a probe key through its own data
 *      port, on one of its slice addresses, with its node certificate,
 *      gets an answer (any status, not-found included).
 * Then it marks its slot good (boot_state_mark_good()). On a miss the
 * caller exits 1 and shelf-boot counts a failed attempt.
 *
 * Driven by the node's loop: node_gate_step() from the node's tick. The
 * library never logs: what happened is in the message it fills.
 * Threading: the loop's thread only.
 */
#ifndef NODE_GATE_H
#define NODE_GATE_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "overlay.h"
#include "../loop/loop.h"
#include "../store/store.h"

#define NODE_GATE_SCRUB_RECORDS 64          /* records the sample scrub verifies */
#define NODE_GATE_SCRUB_STEP_BYTES (1u << 20) /* scrub bytes per step */
#define NODE_GATE_RETRY_MS 1000             /* between self-check attempts */
#define NODE_GATE_CALL_MS 5000              /* one self-check attempt at most */
#define NODE_GATE_DEADLINE_DEFAULT_MS 120000
#define NODE_GATE_MSG_BYTES 512

/* NODE_GATE_PASSED / PENDING from node_gate_step(); a failure is < 0 */
#define NODE_GATE_PENDING 0
#define NODE_GATE_PASSED 1

struct node_gate;

struct node_gate_opts {
	struct node_loop *loop;
	const char *boot_dir;       /* the boot state's directory (SHELF_BOOT_STATE), copied */
	char slot;                  /* the slot on trial, 'a' or 'b' */
	uint64_t deadline_ms;       /* from the start of node_gate_new() */
	uint16_t data_port;         /* this node's data-plane port */
};

/* What the node has at this step (all borrowed for the call only; the
 * gate copies what it keeps). */
struct node_gate_env {
	bool registered;                 /* a broker accepted its registration */
	struct node_store *store;        /* the open store */
	const struct ovl_id *id;         /* its identity */
	const uint8_t *cert;             /* its node certificate (NULL: none yet) */
	size_t cert_len;
	struct ovl_peers *peers;         /* trust, to verify its own data plane */
	uint64_t now_s;                  /* trusted unix seconds */
	const char *slice;               /* a slice it serves, with its address (NULL: none yet) */
	uint64_t epoch;                  /* that slice's map epoch */
	struct in6_addr addr;            /* its address in that slice, installed */
};

/*
 * Whether this process runs a slot on trial: SHELF_SLOT and
 * SHELF_BOOT_STATE are set and the boot state there says that slot is not
 * good. 1 (then *slot and boot_dir, of cap bytes, are set), 0 (not on
 * trial, or not under shelf-boot), or -errno when the boot state cannot be
 * read (err says why).
 */
int node_gate_needed(char *slot, char *boot_dir, size_t cap, char *err, size_t errlen);

/* A new gate; its deadline starts now. 0, -ENOMEM or -EINVAL (err). */
int node_gate_new(struct node_gate **out, const struct node_gate_opts *o, char *err, size_t errlen);

/*
 * One step, from the node's tick: NODE_GATE_PENDING, NODE_GATE_PASSED (the
 * slot is marked good; msg says what passed), or a negative errno: the gate
 * failed (-ETIMEDOUT the deadline, -EIO the scrub, or the mark's error),
 * msg says why. After PASSED or a failure, destroy it.
 */
int node_gate_step(struct node_gate *g, const struct node_gate_env *e, uint64_t now_ms,
		   char *msg, size_t msglen);

/* Close a self-check in flight and free *g; NULLs it. Accepts NULL. */
void node_gate_destroy(struct node_gate **g);

/*
 * The version this node runs: SHELF_SLOT_VERSION (set by shelf-boot) when
 * it is a valid version, else the build's. Borrowed, static.
 */
const char *node_running_version(void);

#endif
