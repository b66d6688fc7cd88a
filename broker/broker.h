/*
 * broker.h: the public interface of libshelf-broker, for the shelf-broker
 * daemon, its tests and the benchmark. Other folders include only this file.
 *
 * The broker admits nodes, groups them into slices, signs short-lived node
 * certificates and sends slice maps and deltas (docs/PROTOCOL.md section 6).
 * It is split into:
 *   - the core (brk_t): registry, slices, admission, maps, deltas, liveness,
 *     admin requests. It does no I/O of its own: messages come in through
 *     brk_handle(), replies and deltas leave through the io seam, and time
 *     comes from the same seam, so tests drive it deterministically;
 *   - files (brk_site_*, brk_token_*, brk_preauth_*, brk_slices_*): the site
 *     directory written by `shelf-broker init` and the state directory;
 *   - the rate limiter (brk_rate_*), a token bucket per key;
 *   - the server (brk_server_*), the ZeroMQ loop around the core.
 *
 * Conventions as everywhere: 0 or -errno, a positive value is a count, error
 * text into the caller's buffer, no logging (the core reports events through
 * the io seam's `event` callback; the daemon logs them).
 */
#ifndef SHELF_BROKER_H
#define SHELF_BROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "overlay.h"

#define BRK_PORT_DEFAULT 7400
#define BRK_HEARTBEAT_MS 1000               /* nodes heartbeat this often */
#define BRK_DOWN_MS 5000                    /* silence before a node is `down` */
#define BRK_GRACE_MS (10 * 60 * 1000)       /* silence before a node is `out` */
#define BRK_TTL_MS (24 * 3600 * 1000LL)     /* silence before a node is forgotten */
#define BRK_CERT_LIFETIME_S (24 * 3600)     /* node certificates */
#define BRK_BROKER_CERT_LIFETIME_S (5 * 365 * 24 * 3600LL) /* broker and admin certs */
#define BRK_RATE_PER_S 20                   /* messages per second per key */
#define BRK_RATE_BURST 60                   /* token bucket depth */
#define BRK_RATE_BUCKETS 65536              /* buckets (keys hash onto them) */
#define BRK_NODES_MAX 1000000               /* registry limit */
#define BRK_SLICES_MAX 1024                 /* slices per broker (OVL_MSG_SLICES_MAX) */
#define BRK_NODE_SLICES_MAX 64              /* slices one node may be in */
#define BRK_ADMINS_MAX 16                   /* admin keys */
#define BRK_PEERS_MAX 15                    /* other brokers of the site (DIR/peers) */
#define BRK_TOKENS_MAX 4096                 /* enrolment tokens held */
#define BRK_PREAUTH_MAX 65536               /* pre-authorised node ids */
#define BRK_STRINGS_MAX 65536               /* distinct board/site/... strings */
#define BRK_RECV_MAX_BYTES (1u << 20)       /* largest message a node may send */
#define BRK_SEND_MAX_BYTES (16u << 20)      /* largest map the broker sends */
#define BRK_RID_MAX_BYTES 16                /* routing ids kept per node */
#define BRK_TOKEN_BYTES 16                  /* random bytes in an enrolment token */
#define BRK_TOKEN_PREFIX "shelf-tok-"
#define BRK_REGISTER_DOMAIN "shelf-register-v1" /* proof-of-possession signature domain */
#define BRK_SLICE_FLUSH_MS 1000             /* dirty slice epochs reach the disk within */
#define BRK_TICK_MS 100                     /* liveness tick of the server loop */

/* ---- configuration (one ovl_conf table) -------------------------------- */

#define BRK_PATH_MAX 512

struct brk_config {
	char dir[BRK_PATH_MAX];       /* site directory: keys, certificates, tokens, preauth */
	char state_dir[BRK_PATH_MAX]; /* soft state: slices, token use; "" = <dir>/state */
	char listen[256];             /* endpoint, tcp://[::]:7400 */
	char site[64];                /* site id (from broker.cert when empty) */
	int64_t heartbeat_ms;         /* interval nodes are told to use */
	int64_t down_ms;              /* silence -> down */
	int64_t grace_ms;             /* silence -> out */
	int64_t ttl_ms;               /* silence -> forgotten */
	int64_t cert_lifetime_ms;     /* node certificates */
	int64_t rate_per_s;           /* token bucket refill */
	int64_t rate_burst;           /* token bucket depth */
	int64_t max_nodes;            /* registry limit */
	char log_level[16];           /* error, warn, info, debug */
};

extern const struct ovl_conf_item brk_conf[];

/* ---- site directory ----------------------------------------------------- */

/*
 * Create a new site in `dir` (created if missing, must not hold ca.key):
 *   ca.key       the site CA identity (0600): move it offline afterwards
 *   ca.pub       the CA's Ed25519 public key, 64 hex digits
 *   broker.key   the broker identity (0600)
 *   broker.cert  the broker certificate, signed by the CA
 *   admin.key    an admin identity for the shelf CLI (0600)
 *   admin.cert   its admin certificate, signed by the broker
 *   broker.pub   the broker's CURVE public key in Z85 (what nodes and the CLI need)
 * Writes a summary for the operator into out (endpoint key, CA key, fingerprints).
 */
int brk_site_init(const char *dir, const char *site, char *out, size_t outlen, char *err,
		  size_t errlen);

/*
 * Issue a client: DIR/clients/NAME/ gets an identity (id.key), a client
 * certificate for the comma-separated slices signed by the broker
 * (client.cert), and the site's ca.pub, broker.cert and broker.pub. 0 or
 * -errno with err; out says where it went.
 */
int brk_client_issue(const char *dir, const char *name, const char *slices, uint64_t ttl_s,
		     char *out, size_t outlen, char *err, size_t errlen);

/*
 * May the client holding CURVE key `key` read slice `slice`'s map? Looks
 * for a valid client certificate of this broker in DIR/clients. 0 yes,
 * -EACCES (a client, not of that slice), -ENOENT (no such client), -EIO.
 */
int brk_client_slices(const char *dir, const uint8_t key[OVL_KEY_BYTES], const char *slice,
		      uint64_t now);

/* What a running broker loads from the site directory. */
struct brk_site {
	struct ovl_id *id;            /* broker identity (owned) */
	uint8_t ca_pk[OVL_ID_BYTES];
	uint8_t broker_cert[OVL_CERT_MAX_BYTES];
	size_t broker_cert_len;
	struct ovl_cert broker;       /* decoded, verified against ca_pk */
	char site[64];
	uint8_t admin_keys[BRK_ADMINS_MAX][OVL_ID_CURVE_BYTES]; /* from admin*.cert */
	unsigned n_admins;
	/* the other brokers of the site: Ed25519 keys from DIR/peers/NAME.cert (broker
	 * certificates of the same site, verified under the CA); see brk_slice_owner */
	uint8_t peers[BRK_PEERS_MAX][OVL_ID_BYTES];
	unsigned n_peers;
};

/*
 * Add a broker to the site of `from` (a site directory holding ca.key):
 * `dir` gets ca.pub, a new broker.key and broker.cert signed by the site CA,
 * broker.pub, an admin identity, and peers/ with the certificates of the
 * brokers `from` knows (its own and its peers'); from/peers/ gets the new
 * broker's certificate. Other brokers of the site need it copied into their
 * peers/ too (out says so).
 */
int brk_site_add_broker(const char *dir, const char *from, char *out, size_t outlen, char *err,
			size_t errlen);

/*
 * Which broker of the site owns slice `name`: the one whose Ed25519 key
 * scores highest under BLAKE2b-64(name || key), among this broker and its
 * peers (rendezvous hashing). Only the owner may create the slice, so two
 * brokers that know each other never issue epochs for one slice.
 */
void brk_slice_owner(const struct brk_site *s, const char *name, uint8_t owner[OVL_ID_BYTES]);

/* Load and verify the site directory. Free with brk_site_release(). */
int brk_site_load(struct brk_site *s, const char *dir, char *err, size_t errlen);
void brk_site_release(struct brk_site *s);

/*
 * Mint an enrolment token: appends its BLAKE2b hash, uses and expiry to
 * <dir>/tokens (the token itself is never stored) and writes the token text
 * into out. A running broker picks the file up within a second.
 */
int brk_token_mint(const char *dir, unsigned uses, uint64_t ttl_s, char *out, size_t outlen,
		   char *err, size_t errlen);
/* Append a node id to <dir>/preauth. */
int brk_preauth_add_file(const char *dir, const uint8_t node_id[OVL_ID_BYTES], char *err,
			 size_t errlen);

/* Crash-safe file replacement: temporary file, fsync, rename, fsync of the
 * directory. mode e.g. 0600. */
int brk_file_write(const char *path, const void *buf, size_t len, unsigned mode, char *err,
		   size_t errlen);

/* ---- rate limiter --------------------------------------------------------- */

struct brk_rate;
/* A token bucket per key hash: `per_s` tokens a second, `burst` deep. */
int brk_rate_new(struct brk_rate **out, unsigned per_s, unsigned burst, unsigned buckets);
void brk_rate_destroy(struct brk_rate **r);
/* Take one token for `key` at now_ms: true when allowed. */
bool brk_rate_take(struct brk_rate *r, const uint8_t key[OVL_KEY_BYTES], uint64_t now_ms);

#define BRK_RATE_TELL_MS 1000 /* a flooding key is told at most this often */
enum brk_rate_verdict {
	BRK_RATE_OK,     /* allowed: one token taken */
	BRK_RATE_REFUSE, /* over the limit: answer with an error (once per BRK_RATE_TELL_MS) */
	BRK_RATE_DROP,   /* over the limit: drop without an answer */
};
/* As brk_rate_take, but says when an over-the-limit message should be answered. */
enum brk_rate_verdict brk_rate_check(struct brk_rate *r, const uint8_t key[OVL_KEY_BYTES],
				     uint64_t now_ms);

/* ---- the core --------------------------------------------------------------- */

typedef struct brk brk_t;

/* Where a message came from and where a reply goes (as struct ovl_link_peer,
 * with the routing id bounded). */
struct brk_peer {
	uint8_t key[OVL_KEY_BYTES];
	uint8_t rid[BRK_RID_MAX_BYTES];
	uint8_t rid_len;
};

enum brk_event {
	BRK_EV_ADMIT,     /* a node was admitted (or re-admitted) */
	BRK_EV_REFUSE,    /* a request was refused */
	BRK_EV_STATE,     /* a node changed state */
	BRK_EV_SLICE,     /* a slice was created, changed, deleted or recovered */
	BRK_EV_FORGET,    /* a node's registration expired */
	BRK_EV_REVOKE,    /* a node was revoked */
	BRK_EV_ERROR,     /* the broker failed at something (disk, encoding) */
};

/* The seam between the core and the world. */
struct brk_io {
	/* Send buf to a peer. Return 0 or -errno (the core counts failures). */
	int (*send)(void *arg, const struct brk_peer *to, const void *buf, size_t len);
	uint64_t (*now_ms)(void *arg);  /* monotonic milliseconds */
	uint64_t (*unix_s)(void *arg);  /* wall clock, for certificates and timestamps */
	/* One structured line per admission, refusal, state and slice change. */
	void (*event)(void *arg, enum brk_event ev, const char *line);
	void *arg;
};

struct brk_params {
	uint64_t heartbeat_ms, down_ms, grace_ms, ttl_ms;
	uint64_t cert_lifetime_s;
	uint64_t max_nodes;
	const char *state_dir;          /* NULL: nothing persisted (tests, bench) */
	const char *site_dir;           /* site directory: issued clients, tokens and preauth re-read on a miss */
};

/*
 * Create a broker core for `site` (borrowed, must outlive it). When
 * params->state_dir is set, slice definitions and token use are loaded from
 * and saved to it. Returns 0 or -errno.
 */
int brk_new(brk_t **out, const struct brk_site *site, const struct brk_params *params,
	    const struct brk_io *io, char *err, size_t errlen);
void brk_destroy(brk_t **b);

/* Admission sources. */
int brk_token_add(brk_t *b, const uint8_t hash[32], unsigned uses, uint64_t expires_unix);
int brk_preauth_add(brk_t *b, const uint8_t node_id[OVL_ID_BYTES]);
/* Reload <dir>/tokens and <dir>/preauth when they changed. Returns how many
 * entries were added, or -errno. */
int brk_reload_files(brk_t *b, const char *dir, char *err, size_t errlen);

/* Handle one message from `from`. Never fails the broker: bad input is
 * answered with an error message and reported through io->event. */
void brk_handle(brk_t *b, const struct brk_peer *from, const void *buf, size_t len);
/* A message too large to receive: answer it with an error. */
void brk_refuse_oversized(brk_t *b, const struct brk_peer *from, size_t limit);
/* A key over its rate limit: answer `busy` with the limit (log it too). */
void brk_refuse_rate(brk_t *b, const struct brk_peer *from, unsigned per_s, unsigned burst);

/* Liveness and persistence: call every BRK_TICK_MS or so. */
void brk_tick(brk_t *b);

/* Slice operations (also reachable through admin messages). */
int brk_slice_create(brk_t *b, const char *name, unsigned replicas, const char *selector,
		     char *err, size_t errlen);
/* The same, and with encrypt the slice requires payload encryption (carried
 * in its maps and deltas, persisted with its definition, fixed for its life). */
int brk_slice_define(brk_t *b, const char *name, unsigned replicas, const char *selector,
		     bool encrypt, char *err, size_t errlen);
int brk_slice_delete(brk_t *b, const char *name, char *err, size_t errlen);
int brk_revoke(brk_t *b, const uint8_t node_id[OVL_ID_BYTES], char *err, size_t errlen);

/* Check a selector: "all", "board=X", "group=X", "chassis=X", "site=X". */
int brk_selector_check(const char *sel, char *err, size_t errlen);

/* Read-only views for tests and stats. */
struct brk_stats {
	uint64_t nodes, up, down, out;
	uint64_t slices;
	uint64_t registrations, refusals, introductions, deltas_sent, delta_bytes;
	uint64_t maps_sent, send_failures, rate_limited, bad_messages;
	uint64_t memory_bytes;  /* the registry's own accounting */
};
void brk_stats_get(brk_t *b, struct brk_stats *st);
/* 1 up, 2 down, 3 out (enum ovl_msg_state), or -ENOENT. */
int brk_node_state(brk_t *b, const uint8_t node_id[OVL_ID_BYTES]);
/* Epoch and member count of a slice, or -ENOENT. */
int brk_slice_info(brk_t *b, const char *name, uint64_t *epoch, uint32_t *members);
/* Count a message dropped by the rate limiter (for stats). */
void brk_count_rate_limited(brk_t *b);

/* ---- the server ------------------------------------------------------------- */

/* The link options of the broker's socket: ovl_link_opts_default with room
 * for 16 MiB maps, queues of 10,000 messages, and no ZMTP heartbeats (no
 * libzmq timer per connection; TCP keepalive instead). */
void brk_link_opts(struct ovl_link_opts *o);

/* Run the broker on cfg->listen until *stop becomes non-zero (a signal
 * handler sets it). Logs through ovl_log. Returns 0 or -errno. */
int brk_server_run(const struct brk_config *cfg, volatile int *stop, char *err, size_t errlen);

/* Lower-case hex of in[0..n) into out (2n + 1 bytes, NUL-terminated). */
void brk_hex_encode(const uint8_t *in, size_t n, char *out);

/* The first 2n hex digits of s into out[0..n). 0, or -EINVAL when s is
 * shorter or not hex there. */
int brk_hex_decode(const char *s, uint8_t *out, size_t n);

#endif
