/*
 * broker.h: the public interface of libshelf-broker, for the shelf-broker
 * daemon, its tests and the benchmark. Other folders include only this file.
 *
 * The broker admits nodes, groups them into slices, signs short-lived node
 * certificates and sends slice maps and deltas (docs/PROTOCOL.md section 6).
 * It is split into:
 *   - the core (brk_t, brk_core.c): registry, slices, admission, maps,
 *     deltas, liveness, admin requests. It does no I/O of its own: messages
 *     come in through brk_handle(), replies and deltas leave through the io
 *     seam (struct brk_io), time comes from the same seam, and so do its
 *     state files and the look-up of issued clients, so tests drive it
 *     deterministically;
 *   - state (brk_state_*, brk_state.c): the files of the state directory
 *     (slices, token uses, revocations) as plain values; the membership's
 *     base and journal (brk_members_log_*, brk_members.c);
 *   - files (brk_site_*, brk_token_mint, brk_preauth_add_file,
 *     brk_client_issue, brk_files_*: brk_files.c): the site directory written
 *     by `shelf-broker init`, and the files object that serves a running core
 *     through its seam (state, tokens and pre-authorisations, the index of
 *     issued clients, each re-read only when its files change);
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
#define BRK_SLICE_FLUSH_MS 1000             /* dirty token uses (and slice epochs, without a
					     * membership journal) reach the disk within */
#define BRK_TICK_MS 100                     /* liveness tick of the server loop */
#define BRK_LEFT_MAX 1024                   /* removal records a slice map keeps */
#define BRK_REPLICAS_MAX 5                  /* copies a new slice may ask for (the codec
					     * carries up to OVL_MSG_REPLICAS_MAX) */
#define BRK_OUTBOX_MAX_BYTES (64u << 20)    /* replies held until their state is durable
					     * (a delta's bytes count once, however many
					     * members it goes to); past it, a save at once */

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
	char fleet_slice[OVL_MSG_NAME_SIZE]; /* slice that holds image blocks */
	int64_t fleet_soak_ms;        /* default soak of a rollout stage */
	int64_t fleet_assign_valid_ms; /* how long a node may act on an assignment */
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
 * Issue a release key (fleet updates): DIR/release/NAME.key (an identity,
 * 0600, the format of every key file) and DIR/release/NAME.cert (a
 * certificate of role release, signed by the site CA, valid ttl_s seconds).
 * Needs DIR/ca.key (which must match DIR/ca.pub when that exists). Refuses
 * a bad NAME (-EINVAL), an existing NAME (-EEXIST: nothing is replaced).
 * 0 or -errno with err; out says what was written.
 */
int brk_release_key_issue(const char *dir, const char *name, uint64_t ttl_s, char *out,
			  size_t outlen, char *err, size_t errlen);

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

/* ---- state directory (brk_state.c) ------------------------------------------- */

/*
 * What a core keeps across restarts, as plain values, and the text files
 * that hold them (one entry a line, '#' comments, each rewritten whole with
 * ovl_file_write_atomic):
 *   DIR/slices       "name replicas epoch owner selector [encrypt] [min_write=W]
 *                    [same_domain] [chunk_size=B]" (chunk_size only when it is
 *                    not the default; the optional words in any order, each at
 *                    most once; min_write only when W < replicas, so a file
 *                    without it, as older brokers wrote, reads as W = replicas)
 *   DIR/tokens.used  "hash count": uses of enrolment tokens
 *   DIR/revoked      "crl_version V", "node ID KEY|-", "serial S"
 *   DIR/members, DIR/members.log  the membership of every slice (below)
 * DIR is the state directory, except for revoked: the site directory when
 * the broker has one (an operator's decision, not soft state).
 */
struct brk_slice_def {
	char name[OVL_MSG_NAME_SIZE];
	char selector[OVL_MSG_SELECTOR_SIZE];
	uint8_t owner[OVL_ID_BYTES];    /* Ed25519 key of the broker that owns it */
	unsigned replicas;
	unsigned min_write;             /* copies a write needs, 1..replicas; 0 = replicas */
	uint64_t epoch;
	bool encrypt;                   /* payloads must be encrypted */
	bool allow_same_domain;         /* created with more replicas than failure domains */
	uint32_t chunk_size;            /* bytes; 0 = OVL_MSG_CHUNK_SIZE_DEFAULT */
};

struct brk_token_use {
	uint8_t hash[32];               /* BLAKE2b-256 of the token text */
	unsigned count;                 /* registrations it admitted */
};

/* The revocations of a broker. Every array is malloc'd and owned by whoever
 * holds the struct (free each). */
struct brk_revocations {
	uint64_t crl_version;           /* version of the last signed list; 0: none */
	uint8_t (*ids)[OVL_ID_BYTES];   /* revoked node ids */
	uint8_t (*keys)[OVL_KEY_BYTES]; /* their CURVE keys (parallel to ids, zero when
					 * unknown); NULL when no key is known */
	size_t n_ids;
	uint64_t *serials;              /* revoked certificate serials */
	size_t n_serials;
};

/*
 * The membership of the slices, as the core persists it, so that a restarted
 * broker lists every member it had, not only those that came back
 * (docs/PROTOCOL.md 6.5). Two text files of the state directory hold it
 * (brk_members.c; one entry a line, IDs, keys, addresses and certificates
 * in hex, strings hex-encoded or "-" when empty, STATE up, down or out,
 * REASON expired, revoked or deleted):
 *
 *   DIR/members      the base, a snapshot; rewritten whole (ovl_file_write_atomic)
 *                    only by a compaction:
 *     "# shelf-broker members v2"
 *     "generation G"
 *     "node ID CURVE PORT STATE CAPACITY SERIAL BOARD VERSION SITE CHASSIS SLOT
 *      GROUP CERT"   a node that is a member of some slice
 *     "slice NAME EPOCH", then its "member ID ADDR" (ADDR: its address in the
 *      slice, 32 hex digits) and "left ID EPOCH REASON" (removal records)
 *     "end CRC"      last: the crc32c of every byte before this line (8 hex digits)
 *   A file of the previous format ("# shelf-broker members v1": no generation
 *   and no end line) reads as generation 0.
 *
 *   DIR/members.log  the journal: appended to, one batch of changes and one
 *                    fdatasync at a time. Every line is "CRC SEQ OP ARGS": CRC is
 *                    the crc32c of "SEQ OP ARGS" (8 hex digits), SEQ counts 0, 1, 2..
 *     "journal G"                     record 0: it continues the base of generation G
 *     "node ..."                      (as in the base) add or replace a node
 *     "state ID STATE"                a node's state
 *     "epoch NAME EPOCH"              a slice's epoch (the slice is listed from then on)
 *     "member NAME ID ADDR"           a member joins (its removal record goes)
 *     "remove NAME ID"                a member goes
 *     "left NAME ID EPOCH REASON"     a removal record (replacing the member's older
 *                                     one; past BRK_LEFT_MAX the oldest goes)
 *     "drop NAME"                     a slice is deleted, its members and records too
 *     "commit N"                      closes a batch of the N records before it
 *
 * Loading is the base, then the committed batches of a journal of the same
 * generation (a journal of an older generation is stale: a compaction wrote
 * the base and crashed before it replaced the journal; its records are all
 * in the base). A record that fails its check (CRC, or no newline) with no
 * valid record after it is a torn tail: it and its uncommitted batch are
 * dropped (they were never acknowledged). One followed by a valid record is
 * damage: loading fails with -EBADMSG naming the file and line, and never
 * goes on with less. So do a damaged base, a journal of a newer generation
 * than the base, or a record out of sequence.
 *
 * A compaction writes the base at generation G+1, then replaces the journal
 * with one that holds only "journal G+1" (both with ovl_file_write_atomic).
 */
struct brk_node_rec {
	uint8_t id[OVL_ID_BYTES];
	uint8_t curve_key[OVL_KEY_BYTES];
	char board[OVL_MSG_BOARD_SIZE];
	char version[OVL_MSG_SWVER_SIZE];
	char group[OVL_MSG_GROUP_SIZE];  /* "" when none */
	struct ovl_msg_domain domain;
	uint64_t capacity, serial;
	uint16_t port;
	uint8_t state;                   /* enum ovl_msg_state: up, down or out */
	const uint8_t *cert;             /* loaded: malloc'd (brk_membership_release frees
					  * it); saved: borrowed */
	size_t cert_len;
};

struct brk_member_rec {
	uint8_t id[OVL_ID_BYTES];
	uint8_t addr[OVL_MSG_ADDR_BYTES];
};

struct brk_slice_members {
	char name[OVL_MSG_NAME_SIZE];
	uint64_t epoch;
	struct brk_member_rec *members;  /* loaded: malloc'd; saved: borrowed */
	size_t n_members;
	struct ovl_msg_left *left;       /* loaded: malloc'd; saved: borrowed */
	size_t n_left;
};

struct brk_membership {
	struct brk_node_rec *nodes;
	size_t n_nodes;
	struct brk_slice_members *slices;
	size_t n_slices;
};

/* One change of the membership: one record of the journal. */
enum brk_change_op {
	BRK_CHANGE_NODE = 1, /* node: add the node, or replace the record of node.id */
	BRK_CHANGE_STATE,    /* node.id (a known node) is now in node.state */
	BRK_CHANGE_EPOCH,    /* slice is at epoch (created when unknown) */
	BRK_CHANGE_MEMBER,   /* member (of a known node) joins slice; its removal record goes */
	BRK_CHANGE_REMOVE,   /* member.id (a member) leaves slice */
	BRK_CHANGE_LEFT,     /* slice records left */
	BRK_CHANGE_DROP,     /* slice is deleted */
};

struct brk_change {
	enum brk_change_op op;
	char slice[OVL_MSG_NAME_SIZE];   /* all but NODE and STATE */
	uint64_t epoch;                  /* EPOCH */
	struct brk_node_rec node;        /* NODE (cert borrowed); STATE: id and state */
	struct brk_member_rec member;    /* MEMBER; REMOVE: id */
	struct ovl_msg_left left;        /* LEFT */
};

/* Free what a load allocated and zero *m. NULL is fine. */
void brk_membership_release(struct brk_membership *m);
/*
 * Apply c to *m as a journal replay does (arrays grow with realloc; a NODE's
 * certificate is copied). 0, -EBADMSG when c does not fit m (a STATE or
 * MEMBER of an unknown node, a REMOVE of a non-member, a bad op) or -ENOMEM.
 */
int brk_membership_apply(struct brk_membership *m, const struct brk_change *c);
/*
 * Load DIR/members and DIR/members.log into *m (zeroed first; empty when
 * both are missing) as described above, without changing either file.
 * Nodes in no slice are left out. 0, -EBADMSG ("'PATH' line N: ...") or
 * -errno with err; on error *m holds nothing.
 */
int brk_state_members_load(const char *dir, struct brk_membership *m, char *err,
			   size_t errlen);
/* Replace the membership in DIR with *m: a compaction (base at the next
 * generation, then an empty journal). 0 or -errno with err. */
int brk_state_members_save(const char *dir, const struct brk_membership *m, char *err,
			   size_t errlen);

#define BRK_MEMBERS_LOG_MIN_BYTES (1u << 20) /* a journal below this is never compacted */
#define BRK_MEMBERS_LOG_RATIO 2              /* ...nor one below RATIO times its base */

/* The membership of a state directory, open for appending. */
struct brk_members_log;
/*
 * Load DIR's membership into *m as brk_state_members_load does and open its
 * journal for appending: a torn tail is cut off (ftruncate, fdatasync), a
 * missing or stale journal is replaced by an empty one of the base's
 * generation. 0 or -errno with err; on error nothing is open and *m holds
 * nothing.
 */
int brk_members_log_open(struct brk_members_log **out, const char *dir,
			 struct brk_membership *m, char *err, size_t errlen);
/*
 * Append c[0..n) and "commit n" in one write, then fdatasync. Returns 0
 * when they are durable, 1 when they are and the journal has outgrown its
 * base (BRK_MEMBERS_LOG_RATIO times it and BRK_MEMBERS_LOG_MIN_BYTES:
 * compact soon), or -errno with err: then the journal is as it was before
 * the call (a failed write is cut off again; if even that fails, every
 * append fails until brk_members_log_compact succeeds).
 */
int brk_members_log_append(struct brk_members_log *l, const struct brk_change *c, size_t n,
			   char *err, size_t errlen);
/*
 * Compaction: *m (the whole membership, every change appended so far
 * included) becomes the base of the next generation, and the journal starts
 * again empty. Crash-safe at every step. 0 or -errno with err (the files
 * then still hold the membership as it was, or already *m).
 */
int brk_members_log_compact(struct brk_members_log *l, const struct brk_membership *m,
			    char *err, size_t errlen);
/* Bytes in the base and in the journal now, and the generation. */
void brk_members_log_sizes(const struct brk_members_log *l, uint64_t *base_bytes,
			   uint64_t *log_bytes, uint64_t *generation);
/* Close l (NULL is fine) and NULL *l. */
void brk_members_log_close(struct brk_members_log **l);

/*
 * Load DIR/slices into *defs (malloc'd, the caller frees it; NULL when
 * empty) and *n. A missing file is empty. Every definition is checked as
 * brk_slice_define would (name, replicas, selector, no duplicates, at most
 * BRK_SLICES_MAX). 0, -EBADMSG ("'PATH' line N is not a valid slice
 * definition") or -errno, with err.
 */
int brk_state_slices_load(const char *dir, struct brk_slice_def **defs, size_t *n, char *err,
			  size_t errlen);
/* Replace DIR/slices with defs[0..n). 0 or -errno with err. */
int brk_state_slices_save(const char *dir, const struct brk_slice_def *defs, size_t n,
			  char *err, size_t errlen);
/*
 * Load DIR/tokens.used into *uses (malloc'd, the caller frees it) and *n;
 * lines that do not parse are skipped, a missing file is empty. 0 or -errno
 * with err; what was read before an error is handed over all the same.
 */
int brk_state_uses_load(const char *dir, struct brk_token_use **uses, size_t *n, char *err,
			size_t errlen);
/* Replace DIR/tokens.used with uses[0..n). 0 or -errno with err. */
int brk_state_uses_save(const char *dir, const struct brk_token_use *uses, size_t n,
			char *err, size_t errlen);
/* Load DIR/revoked into *r (zeroed first; all empty when the file is
 * missing). 0, -EBADMSG or -errno with err; on error *r holds nothing. */
int brk_state_revoked_load(const char *dir, struct brk_revocations *r, char *err,
			   size_t errlen);
/* Replace DIR/revoked with *r. 0 or -errno with err. */
int brk_state_revoked_save(const char *dir, const struct brk_revocations *r, char *err,
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

/* The seam between the core and the world: the only way the core reaches
 * the network, the clocks and the disk. */
struct brk_io {
	/* Send buf to a peer. Return 0 or -errno (the core counts failures). */
	int (*send)(void *arg, const struct brk_peer *to, const void *buf, size_t len);
	uint64_t (*now_ms)(void *arg);  /* monotonic milliseconds */
	uint64_t (*unix_s)(void *arg);  /* wall clock, for certificates and timestamps */
	/* One structured line per admission, refusal, state and slice change. */
	void (*event)(void *arg, enum brk_event ev, const char *line);
	void *arg;

	/*
	 * The files behind the core, called with `files` (brk_files_io() sets
	 * every one of them). Each may be NULL: then that thing is neither
	 * loaded, saved nor looked up (tests, the benchmark). Loads run in
	 * brk_new() and have the meaning of the brk_state_*_load functions
	 * (arrays are malloc'd and become the core's); saves run when the state
	 * changed (token uses at most every BRK_SLICE_FLUSH_MS, a token's last
	 * use and a revocation at once; slice definitions at once, their epochs
	 * with each compaction of the membership, or every BRK_SLICE_FLUSH_MS
	 * without members_append).
	 * Each returns 0 or -errno with err.
	 */
	int (*slices_load)(void *files, struct brk_slice_def **defs, size_t *n, char *err,
			   size_t errlen);
	int (*slices_save)(void *files, const struct brk_slice_def *defs, size_t n, char *err,
			   size_t errlen);
	int (*uses_load)(void *files, struct brk_token_use **uses, size_t *n, char *err,
			 size_t errlen);
	int (*uses_save)(void *files, const struct brk_token_use *uses, size_t n, char *err,
			 size_t errlen);
	/*
	 * The membership of the slices (brk_members_log_*). A core with
	 * members_append holds every message it sends while a change of
	 * membership or epoch is not yet durable, and sends them once it is
	 * (brk_flush): no map, delta or epoch leaves before it is on disk.
	 * members_load loads (and opens the journal); members_append appends a
	 * batch of changes durably (0, 1: compact soon, or -errno);
	 * members_save replaces the whole membership (a compaction). Without
	 * both members_append and members_save nothing is held and the
	 * membership is not saved.
	 */
	int (*members_load)(void *files, struct brk_membership *m, char *err, size_t errlen);
	int (*members_append)(void *files, const struct brk_change *c, size_t n, char *err,
			      size_t errlen);
	int (*members_save)(void *files, const struct brk_membership *m, char *err,
			    size_t errlen);
	int (*revoked_load)(void *files, struct brk_revocations *r, char *err, size_t errlen);
	int (*revoked_save)(void *files, const struct brk_revocations *r, char *err,
			    size_t errlen);
	/* An unknown node registers: take up enrolment tokens and pre-authorised
	 * ids added since the last look (through brk_token_* and
	 * brk_preauth_add on b). Cheap when nothing changed. */
	void (*admission_refresh)(void *files, brk_t *b);
	/* May the client holding CURVE key `key` read slice `slice`'s map at
	 * unix time `now` (from unix_s)? 0 yes, -EACCES a client not of that
	 * slice, -ENOENT no client valid at now, -EIO. */
	int (*client_slices)(void *files, const uint8_t key[OVL_KEY_BYTES], const char *slice,
			     uint64_t now);
	void *files;
};

struct brk_params {
	uint64_t heartbeat_ms, down_ms, grace_ms, ttl_ms;
	uint64_t cert_lifetime_s;
	uint64_t max_nodes;
	/* fleet updates (brk_fleet.c): the director's directory (state_dir/fleet;
	 * NULL: nothing persisted), the default slice of image blocks ("system"
	 * when NULL), the default soak of a stage and how long an assignment may
	 * be acted on (0: 60 s each) */
	const char *fleet_dir;
	const char *fleet_slice;
	uint64_t fleet_soak_ms, fleet_assign_valid_ms;
};

/*
 * Create a broker core for `site` (borrowed, must outlive it). Slice
 * definitions, token uses and revocations are loaded through the io seam
 * (a load error fails, except for token uses: reported as an event); io's
 * `files` must outlive the core, which saves through it until
 * brk_destroy(). Returns 0 or -errno with err.
 */
int brk_new(brk_t **out, const struct brk_site *site, const struct brk_params *params,
	    const struct brk_io *io, char *err, size_t errlen);
void brk_destroy(brk_t **b);

/* Admission sources. */
int brk_token_add(brk_t *b, const uint8_t hash[32], unsigned uses, uint64_t expires_unix);
int brk_preauth_add(brk_t *b, const uint8_t node_id[OVL_ID_BYTES]);
/* Forget every enrolment token (their uses are kept), before the tokens of
 * a changed tokens file are added again. */
void brk_token_clear(brk_t *b);

/* Handle one message from `from`. Never fails the broker: bad input is
 * answered with an error message and reported through io->event. */
void brk_handle(brk_t *b, const struct brk_peer *from, const void *buf, size_t len);
/* A message too large to receive: answer it with an error. */
void brk_refuse_oversized(brk_t *b, const struct brk_peer *from, size_t limit);
/* A key over its rate limit: answer `busy` with the limit (log it too). */
void brk_refuse_rate(brk_t *b, const struct brk_peer *from, unsigned per_s, unsigned burst);

/* Liveness and persistence: call every BRK_TICK_MS or so (it flushes too). */
void brk_tick(brk_t *b);
/*
 * Make every change of membership and epoch durable (one append to the
 * journal through io.members_append for all the changes since the last, or
 * a whole save when one is due), save DIR/slices when a definition
 * changed, and send the messages held until then, in order; then compact
 * the journal when it asked for it (after the sends: nothing waits for
 * that). Call it after each batch of messages handled, before the loop
 * sleeps (group commit: the changes of a batch cost one fdatasync). While
 * held messages would pass BRK_OUTBOX_MAX_BYTES, the core flushes by
 * itself. Without io.members_append nothing is ever held. Returns the
 * number of messages sent, or -errno when the save failed (they stay held;
 * a call BRK_TICK_MS later tries again, saving whole).
 */
int brk_flush(brk_t *b);

/* Whether brk_flush() has a save to make or held messages to send. */
bool brk_flush_pending(const brk_t *b);

/* A slice's policy, fixed for its life. */
struct brk_slice_policy {
	unsigned replicas;        /* copies per object, 1..BRK_REPLICAS_MAX */
	unsigned min_write;       /* copies a write needs before it is acknowledged,
				   * 1..replicas; 0 = replicas */
	bool encrypt;             /* payloads must be encrypted */
	bool allow_same_domain;   /* skip the failure-domain check (below) */
	uint32_t chunk_size;      /* bytes, OVL_MSG_CHUNK_SIZE_MIN..MAX in multiples of
				   * OVL_MSG_CHUNK_SIZE_ALIGN; 0 = OVL_MSG_CHUNK_SIZE_DEFAULT */
};

/*
 * Create slice `name` with members `selector` ("" or NULL: "all") and
 * policy *p (the admin request create_slice). The failure-domain check:
 * with replicas R >= 2, the nodes the selector matches now (registered and
 * not `out`) must span at least R failure domains, a domain being a
 * distinct (site, chassis) pair of their board profiles: the level at which
 * ovl_place() spreads copies past a single node (a slot holds one node).
 * Otherwise the slice is refused unless p->allow_same_domain, and err says
 * how many domains the matched nodes span and which R was asked for (also
 * when no node matches yet: create replicated slices once their nodes have
 * registered). Nodes that match later join as always; a slice whose
 * members span fewer domains later (nodes out, revoked) is not changed:
 * `shelf status` warns. The policy is persisted with the definition;
 * min_write goes into the slice's signed maps when it is below replicas,
 * chunk_size when it is not the default (a bad one is -EINVAL).
 * Returns 0, -EINVAL (bad name, selector or policy; err says which),
 * -EEXIST, -EXDEV (another broker owns the name), -ENOSPC, -ENOMEM.
 */
int brk_slice_define_policy(brk_t *b, const char *name, const char *selector,
			    const struct brk_slice_policy *p, char *err, size_t errlen);
/* brk_slice_define_policy with min_write = replicas, without the
 * failure-domain check (for tests and tools that define slices before their
 * nodes register; the slice is not marked allow_same_domain, so `shelf
 * status` still warns when its members share domains) and, for
 * brk_slice_define, encrypt. */
int brk_slice_create(brk_t *b, const char *name, unsigned replicas, const char *selector,
		     char *err, size_t errlen);
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
	uint64_t rx_bytes;      /* bytes of the messages handed to brk_handle() */
};
void brk_stats_get(brk_t *b, struct brk_stats *st);
/* 1 up, 2 down, 3 out (enum ovl_msg_state), or -ENOENT. */
int brk_node_state(brk_t *b, const uint8_t node_id[OVL_ID_BYTES]);
/* Epoch and member count of a slice, or -ENOENT. */
int brk_slice_info(brk_t *b, const char *name, uint64_t *epoch, uint32_t *members);
/* Count a message dropped by the rate limiter (for stats). */
void brk_count_rate_limited(brk_t *b);

/* ---- the files behind a running core (brk_files.c) ---------------------------- */

struct brk_files;

/*
 * Serve a core's seam from the site directory `site_dir` (tokens, preauth,
 * revoked, clients/; NULL: none) and the state directory `state_dir`
 * (slices, tokens.used; created when missing; NULL: none). `site` (borrowed,
 * for the life of f) names the broker whose client certificates count; it
 * may be NULL without a site directory. 0 or -errno with err.
 */
int brk_files_new(struct brk_files **out, const struct brk_site *site, const char *site_dir,
		  const char *state_dir, char *err, size_t errlen);
/* Free f (NULL is fine) and NULL *f. Destroy the core it serves first. */
void brk_files_destroy(struct brk_files **f);
/* Point io's file members and `files` at f. */
void brk_files_io(struct brk_files *f, struct brk_io *io);
/*
 * Look at the site directory again: when DIR/tokens changed, its tokens
 * replace the core's (brk_token_clear, brk_token_add); ids new in
 * DIR/preauth are added; when DIR/clients changed, the client index is
 * rebuilt. Each file costs a stat() when unchanged. Returns how many tokens
 * and ids were added (the server calls it every second).
 */
int brk_files_reload(struct brk_files *f, brk_t *b);
/*
 * May the client holding `key` read slice's map at unix time `now`? Answers
 * from the client index: built from DIR/clients/NAME/client.cert (client
 * certificates signed by this broker, their signatures checked once) on
 * first use, rebuilt only when a file under DIR/clients changed (checked
 * with stat() when the key is not answered with 0). Validity is checked
 * against `now`. 0, -EACCES, -ENOENT, as brk_io.client_slices.
 */
int brk_files_client_slices(struct brk_files *f, const uint8_t key[OVL_KEY_BYTES],
			    const char *slice, uint64_t now);

struct brk_files_stats {
	uint64_t client_loads;          /* client index (re)builds */
	uint64_t client_certs_checked;  /* client certificates read and verified */
	uint64_t client_lookups;        /* brk_files_client_slices() calls */
	uint64_t clients;               /* clients in the index now */
};
void brk_files_stats_get(const struct brk_files *f, struct brk_files_stats *st);

/* ---- the server ------------------------------------------------------------- */

/* The link options of the broker's socket: ovl_link_opts_default with room
 * for 16 MiB maps, queues of 10,000 messages, and no ZMTP heartbeats (no
 * libzmq timer per connection; TCP keepalive instead). */
void brk_link_opts(struct ovl_link_opts *o);

/* Run the broker on cfg->listen until *stop becomes non-zero (a signal
 * handler sets it). Logs through ovl_log. Returns 0 or -errno. */
int brk_server_run(const struct brk_config *cfg, volatile int *stop, char *err, size_t errlen);

#endif
