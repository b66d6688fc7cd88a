/*
 * node_ctl: the node's control-plane client (docs/PROTOCOL.md section 6).
 *
 * It connects to every configured broker (each a CURVE DEALER), registers
 * with each (proving possession of its Ed25519 node id), heartbeats, applies
 * maps and deltas, renews its certificate at half-life and caches its
 * certificate, the broker certificates, the revocation list, its slice
 * definitions and every slice map in its state directory (crash-safe
 * writes). With no broker answering, it keeps serving what it cached: maps
 * and certificates stay readable, and members' certificates can still be
 * verified offline against the site CA (node_ctl_member_verify()).
 *
 * Several brokers are merged by epoch: a map replaces the one held only
 * when its epoch is higher, and a delta applies only to the map at its
 * base_epoch (otherwise the client asks that broker for the full map).
 * Neither may drop a member of the map held without a record of its
 * removal (ovl_map_succession_check(), docs/PROTOCOL.md 6.5): such a map
 * or delta is refused, the map held stays, and the refusal is logged
 * (ovl_warn, naming the slice, both epochs and the members dropped).
 *
 * Single-threaded: one thread calls node_ctl_poll() in a loop. The library
 * never logs; node_ctl_last_event() says what happened last, for the caller
 * to log.
 */
#ifndef NODE_CTL_H
#define NODE_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "overlay.h"

#define NODE_CTL_BROKERS_MAX 8
#define NODE_CTL_SLICES_MAX 64              /* slices cached */
#define NODE_CTL_RECV_MAX_BYTES (16u << 20) /* largest map accepted */
#define NODE_CTL_REGISTER_RETRY_MS 1000     /* between registration attempts */
#define NODE_CTL_LOST_HEARTBEATS 3          /* unanswered heartbeats: broker lost */
#define NODE_CTL_HB_RETRY_MS 100            /* a heartbeat that could not be sent */
#define NODE_CTL_RECONNECT_MAX_MS 250       /* longest wait between reconnect attempts */
#define NODE_CTL_RENEW_RETRY_MS 10000       /* between renewal requests */
#define NODE_CTL_VERSION "shelf 0.1.0"

struct node_ctl_broker {
	char endpoint[OVL_LINK_ENDPOINT_MAX_CHARS]; /* tcp://[addr]:port */
	uint8_t server_key[OVL_KEY_BYTES];          /* the broker's CURVE public key */
};

struct node_ctl_cfg {
	const struct ovl_id *id;        /* borrowed; must outlive the client */
	const char *state_dir;          /* cache directory (created if missing) */
	uint8_t ca_pk[OVL_ID_BYTES];    /* the site CA's Ed25519 key */
	struct node_ctl_broker brokers[NODE_CTL_BROKERS_MAX];
	unsigned n_brokers;             /* 0 is allowed: cache only */
	char board[OVL_MSG_BOARD_SIZE];
	char group[OVL_MSG_GROUP_SIZE]; /* optional */
	char token[OVL_MSG_TOKEN_SIZE]; /* optional enrolment token */
	struct ovl_msg_domain domain;
	uint64_t capacity;              /* bytes */
	uint16_t port;                  /* data-plane port */
	/* fleet updates (optional, may be NULL): fleet_report fills buf
	 * (cap bytes) with the report every heartbeat carries in its `fleet`
	 * bin and returns its length (<= 0: none); fleet_ok runs for every
	 * HEARTBEAT-OK with its `fleet` bin (len 0: none) and the key of the
	 * broker that sent it (checked against the CA at registration) */
	int (*fleet_report)(void *arg, uint8_t *buf, size_t cap);
	void (*fleet_ok)(void *arg, const uint8_t *buf, size_t len,
			 const uint8_t broker_pk[OVL_ID_BYTES]);
	void *fleet_arg;
};

/* One cached slice map. Members' cert bins point into memory the map owns. */
struct node_ctl_map {
	char name[OVL_MSG_NAME_SIZE];
	uint64_t epoch;
	uint32_t replicas;
	/* copies a write needs before it is acknowledged (signed with the map),
	 * 1..replicas; 0: replicas (the map did not carry it) */
	uint32_t min_write_replicas;
	uint32_t chunk_size;            /* signed with the map; 0: the default (absent) */
	struct ovl_msg_member *members;
	uint32_t n_members;
	bool encrypt;                   /* the slice requires payload encryption */
	uint8_t sig[OVL_MSG_SIG_BYTES]; /* broker signature of this state; all zero: none */
	uint8_t ts[OVL_TS_MAX_BYTES];   /* the broker timestamp that came with it */
	size_t ts_len;
	struct ovl_msg_left *left;      /* records of members removed (owned) */
	uint32_t n_left;
	uint64_t refused_epoch;         /* last epoch refused by the succession rule; 0: none */
};

typedef struct node_ctl node_ctl_t;

/*
 * Create the client, load whatever the state directory holds and start
 * connecting to the brokers (in zctx, borrowed). 0 or -errno with err.
 */
int node_ctl_new(node_ctl_t **out, void *zctx, const struct node_ctl_cfg *cfg, char *err,
		 size_t errlen);
void node_ctl_destroy(node_ctl_t **c);

/*
 * Wait up to timeout_ms for broker messages and run timers (register,
 * heartbeat, renewal). Returns the number of maps that changed (>= 0) or
 * -errno on a fatal error.
 */
int node_ctl_poll(node_ctl_t *c, int timeout_ms);

/* Registered with at least one broker right now. */
bool node_ctl_registered(const node_ctl_t *c);

/* How long since a broker this node is registered with last answered
 * (REGISTER-OK or HEARTBEAT-OK), in ms; UINT64_MAX when registered with
 * none. A heartbeat is answered within one interval, so more than about
 * 2 intervals means the node may be cut off, long before the
 * NODE_CTL_LOST_HEARTBEATS that end the registration. */
uint64_t node_ctl_quiet_ms(const node_ctl_t *c, uint64_t now_mono_ms);

/* Send the next heartbeat now (at most every 200 ms): its answer names
 * each slice's epoch, and a newer map is fetched at once. For a node that
 * heard from a peer that its map is stale. */
void node_ctl_refresh(node_ctl_t *c);

/* The shortest heartbeat interval of the brokers registered with (the
 * default when none). */
uint32_t node_ctl_heartbeat_ms(const node_ctl_t *c);
/* Registered with broker i. */
bool node_ctl_broker_registered(const node_ctl_t *c, unsigned i);
/* The Ed25519 key of the i-th broker this node is registered with (its
 * certificate verified against the CA), or NULL past the last. Borrowed. */
const uint8_t *node_ctl_broker_key(const node_ctl_t *c, unsigned i);
/* The current certificate (borrowed) or NULL. */
const uint8_t *node_ctl_cert(const node_ctl_t *c, size_t *len);
/* Cached maps: count and the i-th (borrowed, valid until the next poll). */
unsigned node_ctl_map_count(const node_ctl_t *c);
const struct node_ctl_map *node_ctl_map_at(const node_ctl_t *c, unsigned i);
const struct node_ctl_map *node_ctl_map_find(const node_ctl_t *c, const char *slice);
/* The Ed25519 key of the broker that owns `slice` (whose maps are taken), or
 * NULL when the slice's definition is not known. */
const uint8_t *node_ctl_slice_owner(const node_ctl_t *c, const char *slice);

/*
 * The map of slice as a `map` message carrying the broker's signature
 * (what a node answers a data-plane MAP with), into a malloc'd *buf (the
 * caller frees). 0, -ENOENT (no map, or one without a signature: a cache
 * from an older broker), -ENOMEM, -EINVAL.
 */
int node_ctl_map_encode(node_ctl_t *c, const char *slice, uint8_t **buf, size_t *len);

/* Broker certificate i of those held (from any broker), or NULL past the
 * last; borrowed, valid until the next poll. */
const uint8_t *node_ctl_broker_cert(const node_ctl_t *c, unsigned i, size_t *len);

/* The revocation list held (borrowed) or NULL, and its version (0 = none). */
const struct ovl_crl *node_ctl_crl(const node_ctl_t *c);
/* What happened last (refusal reasons, cache errors), for the daemon to log. */
const char *node_ctl_last_event(const node_ctl_t *c);
/* Trusted time (unix seconds), see ovl_time. */
uint64_t node_ctl_now(node_ctl_t *c);

/*
 * Verify member i of map m offline: its certificate chains to the site CA
 * through one of the broker certificates held, is valid now, is not on the
 * revocation list, names the member's id and CURVE key, and the member's
 * address belongs to its key in the slice. On success *cert holds the
 * decoded certificate. 0 or -errno with err.
 */
int node_ctl_member_verify(node_ctl_t *c, const struct node_ctl_map *m, uint32_t i,
			   struct ovl_cert *cert, char *err, size_t errlen);

#endif
