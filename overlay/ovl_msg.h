/*
 * ovl_msg: the control-plane message codec (ZeroMQ + msgpack).
 *
 * Every control-plane message between nodes, brokers and admin tools is one
 * msgpack map with string keys:
 *
 *   { "v": [major, minor], "t": "<type>", "rid": <request id>, ...fields }
 *
 * Each message type has a declarative schema (struct ovl_msg_schema, below):
 * its fields, their msgpack types, whether they are required, and their
 * limits. One generic encoder and one generic decoder are driven by those
 * tables; docs/PROTOCOL.md section 4 describes the same rules for independent
 * implementations.
 *
 * Decoding never trusts the input. ovl_msg_decode() first runs the bounded
 * walker ovl_mp_check() with the limits of the message type, then reads the
 * validated bytes directly into the C structs below. It refuses, with an
 * error naming the message type and the field:
 *   - a major version other than OVL_MSG_VERSION_MAJOR (a newer minor version
 *     is accepted; keys this build does not know are skipped);
 *   - unknown message types, missing required fields, wrong msgpack types,
 *     values out of range, strings or bins over their limits, invalid UTF-8,
 *     duplicate keys, maps with more than OVL_MSG_KEYS_MAX entries, floats and
 *     ext types anywhere, and trailing bytes after the map.
 *
 * Where decoded data lives:
 *   - integers, enums, strings (char arrays, always NUL-terminated) and
 *     fixed-size keys (uint8_t arrays) are copied into the struct;
 *   - variable-length opaque blobs (certificates, signed timestamps) are
 *     BORROWED: struct ovl_msg_bin points into the input buffer, so keep that
 *     buffer alive and unchanged while you use them;
 *   - arrays (members, slices, ...) are allocated on the heap by the decoder,
 *     one calloc() per array, and freed by ovl_msg_release(). Their size is
 *     bounded by the field's maximum count and by the input: an array is
 *     refused before allocation when the bytes left could not hold its
 *     announced count of minimal valid elements, so the allocation is at most
 *     a small multiple of the input length.
 *
 * Optional fields follow one rule: a zero value (0, false, "", an all-zero
 * key, an empty bin, an empty array, enum value 0) means "absent". The
 * encoder omits optional fields that are zero; the decoder leaves absent
 * fields zero.
 */
#ifndef OVL_MSG_H
#define OVL_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct msgpack_sbuffer;

/* ---- protocol constants ------------------------------------------------ */

#define OVL_MSG_VERSION_MAJOR 1
#define OVL_MSG_VERSION_MINOR 0

#define OVL_MSG_ID_BYTES 32          /* node id: the node's Ed25519 public key */
#define OVL_MSG_KEY_BYTES 32         /* Curve25519 public key (CURVE, crypto_kx) */
#define OVL_MSG_ADDR_BYTES 16        /* IPv6 address, network byte order */
#define OVL_MSG_OPAQUE_MAX_BYTES 4096 /* certificates and broker-signed timestamps */

/* char array sizes; the string limit is one less (room for the NUL) */
#define OVL_MSG_NAME_SIZE 64         /* slice names, stat names */
#define OVL_MSG_BOARD_SIZE 32        /* board profile name (as OVL_BOARD_NAME_MAX) */
#define OVL_MSG_SWVER_SIZE 64        /* software version string */
#define OVL_MSG_SITE_SIZE 64         /* failure domain: site */
#define OVL_MSG_CHASSIS_SIZE 64      /* failure domain: chassis */
#define OVL_MSG_SLOT_SIZE 32         /* failure domain: slot */
#define OVL_MSG_TOKEN_SIZE 256       /* enrolment token */
#define OVL_MSG_TEXT_SIZE 256        /* error message text */
#define OVL_MSG_SELECTOR_SIZE 128    /* slice member selector ("all", "board=x", ...) */
#define OVL_MSG_GROUP_SIZE 64        /* a node's group name */
#define OVL_MSG_SIG_BYTES 64         /* Ed25519 signature */
#define OVL_MSG_CRL_MAX_BYTES 65536  /* a revocation list (as OVL_CRL_MAX_BYTES) */
#define OVL_MSG_FLEET_MAX_BYTES 65536 /* (1.7) a fleet document (overlay/ovl_fleet.h) */

#define OVL_MSG_MEMBERS_MAX 100000   /* members in one slice map or delta */
#define OVL_MSG_NODES_MAX 100000     /* nodes in an admin list */
#define OVL_MSG_SLICES_MAX 1024      /* slices in any one list */
#define OVL_MSG_STATS_MAX 256        /* counters in an admin stats reply */
#define OVL_MSG_REPLICAS_MAX 16      /* copies a slice policy may ask for */
/* A slice's chunk size (1.6, `chunk_size`): objects larger than it are
 * stored by libshelf as chunks of this many bytes and a manifest. */
#define OVL_MSG_CHUNK_SIZE_DEFAULT (16u << 20) /* absent = this */
#define OVL_MSG_CHUNK_SIZE_MIN (1u << 20)
#define OVL_MSG_CHUNK_SIZE_MAX (64u << 20)
#define OVL_MSG_CHUNK_SIZE_ALIGN (64u << 10)   /* a multiple of this */

#define OVL_MSG_KEYS_MAX 64          /* entries in any one msgpack map */
#define OVL_MSG_DEPTH_MAX 8          /* nesting of containers, unknown fields included */
#define OVL_MSG_STR_MAX_BYTES 65536  /* any str or bin, unknown fields included */
#define OVL_MSG_SMALL_MAX_BYTES (1u << 20)  /* every message but the three below
					    * (map_report too: it is small) */
#define OVL_MSG_LARGE_MAX_BYTES (64u << 20) /* map, map_delta, admin_ok */
#define OVL_MSG_SMALL_MAX_ELEMS 65536u      /* walker element limit, small messages */
#define OVL_MSG_LARGE_MAX_ELEMS (8u << 20)  /* walker element limit, large messages */

#define OVL_MSG_HEARTBEAT_MS 1000        /* default heartbeat interval */
#define OVL_MSG_HEARTBEAT_MIN_MS 100
#define OVL_MSG_HEARTBEAT_MAX_MS 3600000

/* ---- value types ------------------------------------------------------- */

enum ovl_msg_type {
	OVL_MSG_NONE = 0,
	OVL_MSG_REGISTER,     /* node -> broker: admission request */
	OVL_MSG_REGISTER_OK,  /* broker -> node: certificate and slice epochs */
	OVL_MSG_HEARTBEAT,    /* node -> broker, every heartbeat_ms */
	OVL_MSG_HEARTBEAT_OK, /* broker -> node */
	OVL_MSG_MAP_GET,      /* anyone -> broker or node: ask for a full map */
	OVL_MSG_MAP,          /* full slice map */
	OVL_MSG_MAP_DELTA,    /* broker -> node: changes from one epoch to the next */
	OVL_MSG_CERT_RENEW,   /* node -> broker: renew the node certificate */
	OVL_MSG_CERT,         /* broker -> node: a fresh certificate */
	OVL_MSG_ERROR,        /* any reply that failed */
	OVL_MSG_ADMIN,        /* admin tool -> broker */
	OVL_MSG_ADMIN_OK,     /* broker -> admin tool */
	OVL_MSG_MAP_REPORT,   /* node -> broker: the signed map the node holds (1.4) */
	OVL_MSG_TYPE_COUNT
};

/* Member and node states; "unknown" is what a newer state decodes to. */
enum ovl_msg_state {
	OVL_MSG_STATE_UNKNOWN = 0,
	OVL_MSG_STATE_UP,   /* serving */
	OVL_MSG_STATE_DOWN, /* missed heartbeats; still owns its data */
	OVL_MSG_STATE_OUT,  /* leaving: placement no longer picks it, data moves away */
};

/* Why a member was removed from a slice map (a `left` record, PROTOCOL.md 6.4);
 * "unknown" is what a newer reason decodes to. */
enum ovl_msg_left_reason {
	OVL_MSG_LEFT_UNKNOWN = 0,
	OVL_MSG_LEFT_EXPIRED,  /* out (the grace period), then silent for ttl_ms: forgotten */
	OVL_MSG_LEFT_REVOKED,  /* an admin revoked it */
	OVL_MSG_LEFT_DELETED,  /* an admin deleted the slice */
};

enum ovl_msg_admin_op {
	OVL_MSG_ADMIN_NONE = 0, /* not valid on the wire */
	OVL_MSG_ADMIN_LIST_NODES,
	OVL_MSG_ADMIN_LIST_SLICES,
	OVL_MSG_ADMIN_SHOW_MAP,     /* answered with a "map" message */
	OVL_MSG_ADMIN_CREATE_SLICE,
	OVL_MSG_ADMIN_DELETE_SLICE,
	OVL_MSG_ADMIN_REVOKE_NODE,
	OVL_MSG_ADMIN_STATS,
	OVL_MSG_ADMIN_FLEET,        /* (1.7) fleet updates: request and reply in `fleet` */
};

/* Codes carried by "error" messages. Receivers accept codes they don't know. */
enum ovl_msg_errcode {
	OVL_MSG_ERR_BAD_REQUEST = 1, /* malformed or invalid message */
	OVL_MSG_ERR_VERSION = 2,     /* protocol major version not supported */
	OVL_MSG_ERR_DENIED = 3,      /* admission or authorisation refused */
	OVL_MSG_ERR_NOT_FOUND = 4,   /* unknown slice or node */
	OVL_MSG_ERR_EXISTS = 5,      /* slice already exists */
	OVL_MSG_ERR_REVOKED = 6,     /* this node's key is revoked */
	OVL_MSG_ERR_STALE = 7,       /* epoch mismatch: fetch the full map */
	OVL_MSG_ERR_BUSY = 8,        /* try again later */
	OVL_MSG_ERR_INTERNAL = 9,    /* the server failed */
};

/* Opaque bytes borrowed from the decoded buffer (or the caller's, to encode). */
struct ovl_msg_bin {
	const uint8_t *ptr;
	size_t len;
};

/* Failure domain, as in the board profile. */
struct ovl_msg_domain {
	char site[OVL_MSG_SITE_SIZE];
	char chassis[OVL_MSG_CHASSIS_SIZE];
	char slot[OVL_MSG_SLOT_SIZE];
};

/* A slice reference: name and epoch; replicas and members only in admin lists. */
struct ovl_msg_slice {
	char name[OVL_MSG_NAME_SIZE];
	uint64_t epoch;
	uint32_t replicas; /* optional: copies per object */
	uint32_t members;  /* optional: member count */
	char selector[OVL_MSG_SELECTOR_SIZE]; /* optional (1.1): which nodes belong */
	uint8_t owner[OVL_MSG_ID_BYTES];      /* optional (1.1): Ed25519 key of the owning broker */
	bool encrypt;                         /* optional (1.2): payloads must be encrypted */
	/* optional (1.5), admin lists and node registrations: how many copies a
	 * write needs before it is acknowledged, 1..replicas; 0 = replicas */
	uint32_t min_write_replicas;
	/* optional (1.5), admin lists: the slice was created with
	 * --allow-same-domain (more replicas than failure domains) */
	bool allow_same_domain;
	/* optional (1.6), admin lists and node registrations: the chunk size in
	 * bytes (OVL_MSG_CHUNK_SIZE_*); 0 = absent = the default */
	uint32_t chunk_size;
};

/* One member of a slice map. */
struct ovl_msg_member {
	uint8_t id[OVL_MSG_ID_BYTES];         /* Ed25519 public key */
	uint8_t curve_key[OVL_MSG_KEY_BYTES]; /* Curve25519 public key */
	uint8_t addr[OVL_MSG_ADDR_BYTES];     /* slice address */
	uint16_t port;                        /* data-plane TCP port, 1..65535 */
	struct ovl_msg_domain domain;
	uint64_t capacity;                    /* drive capacity, bytes */
	enum ovl_msg_state state;
	struct ovl_msg_bin cert;              /* optional (1.1): the member's node certificate */
};

/* The record of a member's removal from a slice map: without one, a map
 * that drops a member must not replace one that lists it (ovl_map.h). */
struct ovl_msg_left {
	uint8_t id[OVL_MSG_ID_BYTES];         /* the member's node id */
	uint64_t epoch;                       /* the epoch whose change removed it */
	enum ovl_msg_left_reason reason;
};

/* One node in an admin list_nodes reply. */
struct ovl_msg_node_info {
	uint8_t id[OVL_MSG_ID_BYTES];
	char board[OVL_MSG_BOARD_SIZE];
	char version[OVL_MSG_SWVER_SIZE];
	struct ovl_msg_domain domain;
	uint64_t capacity; /* bytes */
	uint64_t used;     /* optional: bytes in use */
	enum ovl_msg_state state;
	uint64_t seen_ms;  /* optional: milliseconds since the last heartbeat */
};

/* One counter in an admin stats reply. */
struct ovl_msg_stat {
	char name[OVL_MSG_NAME_SIZE];
	uint64_t value;
};

/* ---- messages ------------------------------------------------------------ */

struct ovl_msg_register {
	uint8_t node_id[OVL_MSG_ID_BYTES];
	uint8_t curve_key[OVL_MSG_KEY_BYTES];
	char board[OVL_MSG_BOARD_SIZE];
	char version[OVL_MSG_SWVER_SIZE]; /* software version */
	uint64_t capacity;                /* drive capacity, bytes */
	struct ovl_msg_domain domain;
	uint16_t port;                    /* data-plane TCP port */
	char token[OVL_MSG_TOKEN_SIZE];   /* optional enrolment token; "" = pre-authorised key */
	struct ovl_msg_slice *slices;     /* optional: slices and epochs cached on the drive */
	uint32_t n_slices;
	char group[OVL_MSG_GROUP_SIZE];   /* optional (1.1): the node's group, for selectors */
	uint8_t sig[OVL_MSG_SIG_BYTES];   /* optional (1.1): proof of possession of node_id */
	struct ovl_msg_bin cert;          /* optional (1.1): the node's current certificate */
	struct ovl_msg_bin broker_cert;   /* optional (1.1): the broker certificate that issued it */
};

struct ovl_msg_register_ok {
	struct ovl_msg_bin ts;        /* broker-signed timestamp */
	struct ovl_msg_bin cert;      /* the node certificate */
	uint32_t heartbeat_ms;        /* OVL_MSG_HEARTBEAT_MIN_MS..MAX_MS */
	struct ovl_msg_slice *slices; /* slices the node belongs to, current epochs */
	uint32_t n_slices;
	struct ovl_msg_bin broker_cert; /* optional (1.1): the broker's certificate (by the CA) */
	struct ovl_msg_bin crl;         /* optional (1.1): the broker's revocation list */
};

struct ovl_msg_heartbeat {
	uint8_t node_id[OVL_MSG_ID_BYTES];
	uint64_t seq;  /* increments by one per heartbeat */
	uint64_t used; /* optional: bytes in use on the drive */
	/* optional (1.7): the node's update report, an ovl_fleet report
	 * document (overlay/ovl_fleet.h); not signed: the CURVE link vouches */
	struct ovl_msg_bin fleet;
};

struct ovl_msg_heartbeat_ok {
	struct ovl_msg_bin ts;
	uint64_t seq;                 /* the heartbeat's seq */
	struct ovl_msg_slice *slices; /* optional: current epochs, to spot missed deltas */
	uint32_t n_slices;
	/* optional (1.7): the director's signed assignment for this node
	 * (overlay/ovl_fleet.h), sent when the node's report shows it does not
	 * hold the current one */
	struct ovl_msg_bin fleet;
};

struct ovl_msg_map_get {
	char slice[OVL_MSG_NAME_SIZE];
	uint64_t epoch; /* optional: the epoch the asker holds */
};

struct ovl_msg_map {
	struct ovl_msg_bin ts;
	char slice[OVL_MSG_NAME_SIZE];
	uint64_t epoch;
	uint32_t replicas; /* copies per object, 1..OVL_MSG_REPLICAS_MAX */
	struct ovl_msg_member *members;
	uint32_t n_members;
	struct ovl_msg_bin crl; /* optional (1.1): the broker's revocation list */
	bool encrypt;           /* optional (1.2): the slice requires payload encryption */
	uint8_t sig[OVL_MSG_SIG_BYTES]; /* optional (1.2): broker signature, ovl_msg_map_sign() */
	struct ovl_msg_left *left;      /* optional (1.3): members removed, and why */
	uint32_t n_left;
	/* optional (1.4), in maps the owning broker sends: the slice's
	 * definition, so that a member that joined after it registered holds it
	 * too (not signed: the broker's link vouches for it) */
	char selector[OVL_MSG_SELECTOR_SIZE];
	uint8_t owner[OVL_MSG_ID_BYTES];
	/* optional (1.5): copies a write needs before it is acknowledged,
	 * 1..replicas; 0 (absent) = replicas. Signed (ovl_msg_map_sign). A
	 * broker sends it only when it is below replicas, so that a map of a
	 * slice with the default policy is, and signs, as before. Use
	 * ovl_msg_map_min_write() for the value in force. */
	uint32_t min_write_replicas;
	/* optional (1.6): the slice's chunk size in bytes, OVL_MSG_CHUNK_SIZE_MIN..
	 * _MAX, a multiple of OVL_MSG_CHUNK_SIZE_ALIGN; 0 (absent) = the default.
	 * Signed. A broker sends it only when it is not the default, so that a
	 * default slice's map signs as before. ovl_msg_map_chunk_size() gives
	 * the value in force. */
	uint32_t chunk_size;
};

struct ovl_msg_map_delta {
	struct ovl_msg_bin ts;
	char slice[OVL_MSG_NAME_SIZE];
	uint64_t base_epoch;             /* applies only to a map at this epoch */
	uint64_t epoch;                  /* the epoch after applying it */
	uint32_t replicas;               /* optional: new policy; 0 = unchanged */
	struct ovl_msg_member *members;  /* optional: added or changed members, whole */
	uint32_t n_members;
	uint8_t (*removed)[OVL_MSG_ID_BYTES]; /* optional: ids of members removed */
	uint32_t n_removed;
	struct ovl_msg_bin crl;          /* optional (1.1): a newer revocation list */
	bool encrypt;                    /* optional (1.2): the slice requires encryption */
	uint8_t sig[OVL_MSG_SIG_BYTES];  /* optional (1.2): signature of the map after it */
	struct ovl_msg_left *left;       /* optional (1.3): records of the members `removed` */
	uint32_t n_left;
};

struct ovl_msg_cert_renew {
	uint8_t node_id[OVL_MSG_ID_BYTES];
	struct ovl_msg_bin cert; /* optional: the current certificate */
};

struct ovl_msg_cert {
	struct ovl_msg_bin ts;
	struct ovl_msg_bin cert;
};

struct ovl_msg_error {
	uint32_t code;                   /* enum ovl_msg_errcode, or a newer code */
	char message[OVL_MSG_TEXT_SIZE];
	struct ovl_msg_bin ts;           /* optional; a broker always sets it */
};

struct ovl_msg_admin {
	enum ovl_msg_admin_op op;
	char slice[OVL_MSG_NAME_SIZE];     /* show_map, create_slice, delete_slice */
	uint8_t node_id[OVL_MSG_ID_BYTES]; /* revoke_node */
	uint32_t replicas;                 /* create_slice */
	char selector[OVL_MSG_SELECTOR_SIZE]; /* optional (1.1), create_slice: "" = "all" */
	bool encrypt;                      /* optional (1.2), create_slice: require encryption */
	uint32_t min_write_replicas;       /* optional (1.5), create_slice: 1..replicas; 0 = replicas */
	bool allow_same_domain;            /* optional (1.5), create_slice: allow more replicas
					    * than the members' failure domains */
	uint32_t chunk_size;               /* optional (1.6), create_slice: bytes; 0 = default */
	struct ovl_msg_bin fleet;          /* (1.7) fleet: the request document (ovl_fleet.h) */
};

struct ovl_msg_admin_ok {
	struct ovl_msg_bin ts;
	enum ovl_msg_admin_op op;          /* the request's op */
	struct ovl_msg_node_info *nodes;   /* list_nodes */
	uint32_t n_nodes;
	struct ovl_msg_slice *slices;      /* list_slices */
	uint32_t n_slices;
	struct ovl_msg_stat *stats;        /* stats */
	uint32_t n_stats;
	uint64_t epoch;                    /* optional: create/delete: the new epoch */
	struct ovl_msg_bin fleet;          /* optional (1.7), fleet: the reply document */
};

struct ovl_msg {
	enum ovl_msg_type type;
	uint32_t ver_major; /* decoded: the sender's version; ignored by the encoder */
	uint32_t ver_minor;
	uint64_t rid;       /* optional request id, echoed in the reply; 0 = none */
	union {
		struct ovl_msg_register reg;
		struct ovl_msg_register_ok reg_ok;
		struct ovl_msg_heartbeat hb;
		struct ovl_msg_heartbeat_ok hb_ok;
		struct ovl_msg_map_get map_get;
		struct ovl_msg_map map;
		struct ovl_msg_map_delta delta;
		/* map_report: the map as the node holds it (no ts, no crl);
		 * a small message, so at most 1 MiB */
		struct ovl_msg_map report;
		struct ovl_msg_cert_renew cert_renew;
		struct ovl_msg_cert cert;
		struct ovl_msg_error error;
		struct ovl_msg_admin admin;
		struct ovl_msg_admin_ok admin_ok;
	} u;
};

/* ---- schemas --------------------------------------------------------------
 * Read-only tables, public so that tools can print any message generically. */

enum ovl_msg_ftype {
	OVL_MSG_F_UINT,   /* uint (or non-negative int) in an unsigned integer of `size` bytes, min..max */
	OVL_MSG_F_BOOL,   /* bool, stored in a bool */
	OVL_MSG_F_STR,    /* UTF-8 str without NUL bytes, copied into char[size] */
	OVL_MSG_F_FIXBIN, /* bin of exactly `size` bytes, copied into uint8_t[size] */
	OVL_MSG_F_BIN,    /* bin of at most `max` bytes, borrowed: struct ovl_msg_bin */
	OVL_MSG_F_ENUM,   /* str, one of `names`, stored as an int (the index) */
	OVL_MSG_F_STRUCT, /* map decoded with `sub`, stored inline in `size` bytes */
	OVL_MSG_F_ARRAY,  /* array of `elem`: heap pointer at offset, uint32_t count at count_offset;
			   * only a message's own fields are arrays (never inside a struct
			   * or an array), which keeps ovl_msg_release() one flat pass */
};

struct ovl_msg_schema;

struct ovl_msg_field {
	const char *name;   /* the map key (NULL for an array element) */
	uint8_t name_len;
	uint8_t type;       /* enum ovl_msg_ftype */
	bool required;
	bool open;          /* ENUM: unknown names decode as value 0 (names[0]) */
	size_t offset;      /* offset of the storage in its struct */
	size_t size;        /* bytes of storage (ARRAY: unused) */
	uint64_t min, max;  /* UINT: range; BIN: max length; ARRAY: max count */
	size_t count_offset;                /* ARRAY: offset of the uint32_t count */
	const struct ovl_msg_field *elem;   /* ARRAY: the element, stored at offset 0 */
	const struct ovl_msg_schema *sub;   /* STRUCT: its fields */
	const char *const *names;           /* ENUM: names by value, NULL-terminated after the
					     * last; names[0] is NULL when 0 is not valid */
};

struct ovl_msg_schema {
	const char *name;                  /* message type ("register") or struct name */
	const struct ovl_msg_field *fields;
	unsigned nfields;                  /* at most 60 */
	size_t max_bytes;                  /* messages: largest encoded message */
	uint32_t max_elems;                /* messages: walker element limit */
	/* Cross-field rules, run after decoding and before encoding; writes the
	 * reason (without the message name) into err and returns -EINVAL. */
	int (*check)(const void *obj, char *err, size_t errlen);
};

/* The schema of a message type, or NULL for OVL_MSG_NONE and out of range. */
const struct ovl_msg_schema *ovl_msg_schema_find(enum ovl_msg_type type);

/* "register", ... ; NULL when unknown. */
const char *ovl_msg_type_name(enum ovl_msg_type type);
const char *ovl_msg_state_name(enum ovl_msg_state state);
/* "expired", "revoked", "deleted", or NULL for a value with no name. */
const char *ovl_msg_left_reason_name(enum ovl_msg_left_reason reason);
const char *ovl_msg_admin_op_name(enum ovl_msg_admin_op op);

/* ---- codec --------------------------------------------------------------- */

/* Zero *m and set its type (and this build's version). Never fails. */
void ovl_msg_init(struct ovl_msg *m, enum ovl_msg_type type);

/*
 * Encode m, appending to sb. The message is checked against its schema first
 * (required arrays present, strings NUL-terminated within their arrays and
 * valid UTF-8, values in range, counts within limits), so the encoder never
 * produces what ovl_msg_decode() would refuse. Always writes version
 * [OVL_MSG_VERSION_MAJOR, OVL_MSG_VERSION_MINOR]; keys go out as "v", "t",
 * "rid" (when non-zero) and then in schema order.
 * Returns 0, -EINVAL (invalid message, err names the field), -E2BIG (larger
 * than the type allows) or -ENOMEM. On error sb is left as it was.
 */
int ovl_msg_encode(const struct ovl_msg *m, struct msgpack_sbuffer *sb, char *err,
		   size_t errlen);

/*
 * The same into buf[0..cap). Returns the encoded length (> 0), or -ENOSPC
 * when it does not fit, or the errors of ovl_msg_encode().
 */
int ovl_msg_encode_buf(const struct ovl_msg *m, void *buf, size_t cap, char *err,
		       size_t errlen);

/*
 * Decode one message from buf[0..len) (the whole buffer: trailing bytes are
 * refused) into *out, which is overwritten. Runs ovl_mp_check() with the
 * type's limits before anything else reads the bytes.
 *
 * Returns 0 with out->type set; the caller must ovl_msg_release(out) when
 * done, and keep buf alive while it uses struct ovl_msg_bin fields.
 * On error returns a negative errno, leaves *out zeroed (nothing to release)
 * and writes "<type>: <reason>" into err ("message: ..." while the type is not
 * known yet):
 *   -EBADMSG          malformed, truncated, wrong type, missing or invalid field
 *   -E2BIG            over the message's size or element limits
 *   -ELOOP            nested deeper than OVL_MSG_DEPTH_MAX
 *   -EPROTONOSUPPORT  another protocol major version
 *   -ENOMSG           unknown message type
 *   -ENOMEM           out of memory
 */
int ovl_msg_decode(const void *buf, size_t len, struct ovl_msg *out, char *err,
		   size_t errlen);

/*
 * Free every array of m with free(), set those pointers to NULL and their
 * counts to 0, and set m->type to OVL_MSG_NONE (so a second release does
 * nothing). Other fields keep their values. Use it on decoded messages, or on
 * messages whose arrays you allocated with malloc(). NULL is fine.
 */
void ovl_msg_release(struct ovl_msg *m);

/* ---- map signatures (docs/PROTOCOL.md 6.4) --------------------------------
 *
 * A broker signs the state of a slice map at each epoch so that anyone
 * holding its key can check a map that reached them through a node. The
 * signed bytes are OVL_MSG_MAP_SIG_DOMAIN, a 0x00 byte, and the msgpack array
 *   [slice, epoch, replicas, encrypt,
 *    [[id, curve_key, addr, port, site, chassis, slot, capacity, state, cert], ...]]
 * with the members sorted by id (bytewise), state as its name, cert a bin
 * (empty when absent); `ts`, `crl` and `sig` are not covered. A map with
 * `left` records appends a sixth element, [[id, epoch, reason], ...] sorted
 * by id (reason as its name, "unknown" for any other), so that a map
 * without records signs exactly as before. A map with min_write_replicas
 * (1.5) appends that left array (empty when there are no records) and
 * then min_write_replicas as a uint: seven elements; a map without it
 * signs exactly as before. A map with chunk_size (1.6) appends the left
 * array, min_write_replicas (0 when absent) and chunk_size as a uint:
 * eight elements; a map without it signs exactly as before.
 */
#define OVL_MSG_MAP_SIG_DOMAIN "shelf-map-v1"

/* The bytes to sign for m (appended to sb, after the domain and 0x00).
 * 0 or -ENOMEM. */
int ovl_msg_map_sig_input(const struct ovl_msg_map *m, struct msgpack_sbuffer *sb);

/* The copies a write on m's slice needs: m->min_write_replicas when set,
 * else m->replicas. */
uint32_t ovl_msg_map_min_write(const struct ovl_msg_map *m);

/* The chunk size of m's slice: m->chunk_size when set, else
 * OVL_MSG_CHUNK_SIZE_DEFAULT. */
uint32_t ovl_msg_map_chunk_size(const struct ovl_msg_map *m);

/* Whether cs is a valid chunk size (0: absent, valid). 0, or -EINVAL with
 * err naming the field and the rule. */
int ovl_msg_chunk_size_check(uint32_t cs, char *err, size_t errlen);

/* Sign m with an Ed25519 secret key (64 bytes, libsodium form) into m->sig.
 * 0 or -ENOMEM. */
int ovl_msg_map_sign(struct ovl_msg_map *m, const uint8_t sign_sk[64]);

/* Does m->sig verify under sign_pk? 0, -EKEYREJECTED (absent or wrong), -ENOMEM. */
int ovl_msg_map_verify(const struct ovl_msg_map *m, const uint8_t sign_pk[OVL_MSG_ID_BYTES]);

#endif
