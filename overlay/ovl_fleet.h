/*
 * ovl_fleet: the formats of fleet updates (issue 16).
 *
 *  - versions "MAJOR.MINOR.PATCH" (each 0..65535, no leading zeros);
 *  - release metadata, signed by a release key that the site CA certified
 *    (a certificate of role OVL_ROLE_RELEASE), domain "shelf-release-v1";
 *  - the image file: a head (magic, lengths, the metadata, the release
 *    certificate) followed by the payload;
 *  - the keys under which an image's blocks are stored in the array;
 *  - the director's assignment to one node, signed by the broker key,
 *    domain "shelf-assign-v1";
 *  - the node's report (unsigned; the CURVE link vouches for it).
 *
 * Signed bodies are canonical msgpack maps with fixed keys in a fixed order
 * (ovl_signed's envelope); every decoder runs ovl_mp_check() over the bytes
 * before msgpack-c sees them and refuses any non-canonical encoding. Every
 * function returns 0 (or a length) or a negative errno and fills err with a
 * sentence naming what was refused and why; nothing here logs.
 *
 * Error codes (as in ovl_cert.h):
 *   -EINVAL          a bad argument from the caller (a version string, a name)
 *   -EBADMSG         malformed, truncated, not canonical, a block that does not verify
 *   -E2BIG           over a size or count limit
 *   -EPROTONOSUPPORT an unknown format version
 *   -EKEYREJECTED    a signature that does not verify, a key not certified by the CA
 *   -EKEYEXPIRED     expired metadata or certificate
 *   -EKEYREVOKED     a revoked release certificate
 *   -EPERM           a certificate of another role than release
 *   -EXDEV           an image for another board
 *   -ERANGE          a lower version without rollback, a running version below min_from
 *   -ESTALE          an assignment outside its validity window
 *   -ENODATA         an image head shorter than its lengths say (read more)
 */
#ifndef OVL_FLEET_H
#define OVL_FLEET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ovl_cert.h"
#include "ovl_id.h"

#define OVL_FLEET_VERSION_BYTES 24 /* "65535.65535.65535" and a NUL fit */
#define OVL_FLEET_BOARD_BYTES 32   /* board name: 1..31 of [A-Za-z0-9._-], not starting with '.' */
#define OVL_FLEET_SLICE_BYTES 64   /* slice name in an assignment: up to 63 chars */

#define OVL_FLEET_RELEASE_DOMAIN "shelf-release-v1"
#define OVL_FLEET_ASSIGN_DOMAIN "shelf-assign-v1"
#define OVL_FLEET_RELEASE_FORMAT 1 /* body field "v" of the release metadata */
#define OVL_FLEET_ASSIGN_FORMAT 1  /* body field "v" of an assignment */
#define OVL_FLEET_REPORT_FORMAT 1  /* field "v" of a report */

#define OVL_FLEET_META_MAX_BYTES 65536             /* largest release metadata envelope */
#define OVL_FLEET_BLOCKS_MAX 1024                  /* most blocks per release */
#define OVL_FLEET_BLOCK_MIN_BYTES (1u << 20)       /* 1 MiB */
#define OVL_FLEET_BLOCK_MAX_BYTES (64u << 20)      /* 64 MiB */
#define OVL_FLEET_SIZE_MAX_BYTES (64ull << 30)     /* largest payload: 64 GiB */
#define OVL_FLEET_ASSIGN_MAX_BYTES 65536           /* = OVL_MSG_FLEET_MAX_BYTES */
#define OVL_FLEET_ASSIGN_VALID_S 60                /* default `valid` of an assignment */
#define OVL_FLEET_ASSIGN_SKEW_S 30                 /* how far `issued` may be ahead of now */
#define OVL_FLEET_REASON_BYTES 256                 /* report reason: up to 255 chars */

/* ---- versions ------------------------------------------------------------ */

/*
 * Parse "MAJOR.MINOR.PATCH" (three decimal numbers 0..65535, no sign, no
 * leading zero except "0" itself, nothing before or after) into
 * major<<32 | minor<<16 | patch. 0 or -EINVAL (*v unchanged).
 */
int ovl_fleet_version_parse(const char *s, uint64_t *v);

/* The same, with err saying why a version is refused ("version '1.02.3':
 * a number has a leading zero"). */
int ovl_fleet_version_check(const char *s, uint64_t *v, char *err, size_t errlen);

/* Format a parsed version back into out (OVL_FLEET_VERSION_BYTES). */
void ovl_fleet_version_format(uint64_t v, char out[OVL_FLEET_VERSION_BYTES]);

/* The tree's own version (Makefile VERSION, compiled in as SHELF_VERSION). */
const char *ovl_fleet_build_version(void);

/* Whether name is a valid board name (see OVL_FLEET_BOARD_BYTES). */
bool ovl_fleet_board_ok(const char *name);

/* ---- trust ------------------------------------------------------------- */

/*
 * Verify a release key's certificate buf[0..len): issued (key id and
 * signature) by trust->ca_pk, role release, not_before <= now <= not_after,
 * serial not on a revocation list verified with the CA key. On success *rc
 * holds it (its sign_pk is the release key); on error *rc is zeroed and:
 *   -EKEYREJECTED "release certificate serial N is not certified by this site's CA (...)"
 *   -EPERM        a certificate of another role
 *   -EKEYEXPIRED, -EKEYREVOKED, or a decode error.
 */
int ovl_fleet_release_cert_verify(struct ovl_cert *rc, const uint8_t *buf, size_t len,
				  const struct ovl_trust *trust, uint64_t now, char *err,
				  size_t errlen);

/* ---- 3.1 release metadata ------------------------------------------------ */

struct ovl_fleet_release {
	char version[OVL_FLEET_VERSION_BYTES];
	uint64_t version_num;                    /* parsed version */
	char board[OVL_FLEET_BOARD_BYTES];
	uint64_t size;                           /* payload bytes, 1..OVL_FLEET_SIZE_MAX_BYTES */
	uint64_t expires;                        /* unix s: not valid after this */
	uint64_t issued;                         /* unix s: when it was signed */
	uint8_t sha256[32];                      /* SHA-256 of the whole payload */
	uint32_t block_size;                     /* power of two, 1 MiB..64 MiB */
	uint32_t nblocks;                        /* ceil(size / block_size), <= 1024 */
	uint8_t (*blocks)[32];                   /* SHA-256 of each block; owned: ovl_fleet_release_free */
	char min_from[OVL_FLEET_VERSION_BYTES];  /* lowest version it upgrades from; "0.0.0" = any */
	uint64_t min_from_num;
	bool rollback;                           /* may replace a higher version */
	uint8_t key[32];                         /* the release key (= the release cert's sign_pk) */
	uint8_t id[32];                          /* SHA-256 of the encoded envelope: names the release */
};

/* The block size the builder uses for `size` bytes: the smallest power of
 * two >= 1 MiB that gives at most 1024 blocks (0 when size is 0 or over
 * OVL_FLEET_SIZE_MAX_BYTES). */
uint32_t ovl_fleet_block_size_for(uint64_t size);

/* The length of block i of r (the last one may be short); 0 when i is out
 * of range. */
uint64_t ovl_fleet_block_len(const struct ovl_fleet_release *r, uint32_t i);

/*
 * Encode r and sign it with the release key's secret key. The encoded `key`
 * field is the public key of release_sk (r->key, r->id and r->version_num /
 * r->min_from_num are not read: the strings are). r->blocks must hold
 * r->nblocks = ceil(size / block_size) hashes. *out is malloc'd (the
 * caller frees it), *outlen its size; the release's id is
 * ovl_fleet_release_id(*out, *outlen). -EINVAL (err names the field),
 * -E2BIG, -ENOMEM.
 */
int ovl_fleet_release_sign(const struct ovl_fleet_release *r,
			   const uint8_t release_sk[OVL_ID_SIGN_SK_BYTES], uint8_t **out,
			   size_t *outlen, char *err, size_t errlen);

/* id = SHA-256 of the encoded metadata envelope. */
void ovl_fleet_release_id(const uint8_t *meta, size_t meta_len, uint8_t id[32]);

/*
 * Decode meta[0..meta_len) into *r WITHOUT checking any signature, trust,
 * board, expiry or version rule: for display only. r->blocks is malloc'd
 * (free with ovl_fleet_release_free); on error *r is zeroed.
 */
int ovl_fleet_release_decode(struct ovl_fleet_release *r, const uint8_t *meta, size_t meta_len,
			     char *err, size_t errlen);

/*
 * Verify the release cert rc_buf (ovl_fleet_release_cert_verify), the
 * metadata's signature under the certified key, that its `key` field is that
 * key, then the rules:
 *   board != want_board                 -> -EXDEV   "image for board X, this is Y"
 *   now > expires                       -> -EKEYEXPIRED "release metadata ... expired at ..."
 *   version < running && !rollback      -> -ERANGE  "version X is lower than the running Y"
 *   running < min_from                  -> -ERANGE
 * want_board NULL / running NULL skip those checks (the broker checks only
 * signature, cert and expiry at publish). A running version that does not
 * parse is -EINVAL. On success *r is filled (r->blocks owned, free with
 * ovl_fleet_release_free); on error *r is zeroed.
 */
int ovl_fleet_release_verify(struct ovl_fleet_release *r, const uint8_t *meta, size_t meta_len,
			     const uint8_t *rc_buf, size_t rc_len, const struct ovl_trust *trust,
			     uint64_t now, const char *want_board, const char *running, char *err,
			     size_t errlen);

/* Free r->blocks and zero *r. Accepts a zeroed r. */
void ovl_fleet_release_free(struct ovl_fleet_release *r);

/* 0 when data[0..len) (len = block i's length) hashes to blocks[i], else
 * -EBADMSG "block i of release X does not verify" (or a wrong length / i). */
int ovl_fleet_block_check(const struct ovl_fleet_release *r, uint32_t i, const uint8_t *data,
			  size_t len, char *err, size_t errlen);

/* ---- 3.2 the image file -------------------------------------------------- */

#define OVL_FLEET_IMAGE_MAGIC "SHIMG\r\n\x1a" /* 8 bytes, no NUL */
#define OVL_FLEET_IMAGE_MAGIC_BYTES 8
#define OVL_FLEET_IMAGE_FORMAT 1
#define OVL_FLEET_IMAGE_FIXED_BYTES 24 /* magic, format, meta_len, cert_len, reserved */
/* the largest head: fixed part + metadata + certificate */
#define OVL_FLEET_IMAGE_HEAD_MAX_BYTES \
	(OVL_FLEET_IMAGE_FIXED_BYTES + OVL_FLEET_META_MAX_BYTES + OVL_CERT_MAX_BYTES)

/* Where the parts of an image lie. meta and cert are borrowed from the
 * buffer given to ovl_fleet_image_parse. */
struct ovl_fleet_image_head {
	uint32_t format;          /* OVL_FLEET_IMAGE_FORMAT */
	const uint8_t *meta;      /* the signed release metadata */
	size_t meta_len;
	const uint8_t *cert;      /* the release key's certificate */
	size_t cert_len;
	uint64_t meta_off, cert_off;
	uint64_t head_len;        /* = the payload's offset in the file */
};

/*
 * Parse an image head from head[0..head_len) (bytes after the head are
 * ignored). Checks the magic, the format, meta_len (1..64 KiB), cert_len
 * (1..OVL_CERT_MAX_BYTES) and the reserved word; does not decode the
 * metadata or the certificate. When head_len is shorter than the head:
 * -ENODATA with h->head_len set to the bytes needed (24 when even the fixed
 * part is missing), so that the caller can read that much and call again.
 * -EBADMSG (not an image, a bad length), -EPROTONOSUPPORT (another format).
 */
int ovl_fleet_image_parse(const uint8_t *head, size_t head_len, struct ovl_fleet_image_head *h,
			  char *err, size_t errlen);

/*
 * Write an image's fixed part for meta_len and cert_len into out (24 bytes).
 */
void ovl_fleet_image_fixed(uint8_t out[OVL_FLEET_IMAGE_FIXED_BYTES], uint32_t meta_len,
			   uint32_t cert_len);

/*
 * Read and parse the head of the image open at fd (read from offset 0 with
 * pread). *buf is malloc'd and holds the whole head (h's pointers borrow
 * it; the caller frees *buf). -ENODATA "image is truncated", the errors of
 * ovl_fleet_image_parse, or -errno of pread.
 */
int ovl_fleet_image_read_head(int fd, uint8_t **buf, struct ovl_fleet_image_head *h, char *err,
			      size_t errlen);

/* ---- 3.4 block keys --------------------------------------------------------- */

#define OVL_FLEET_BLOCK_KEY_BYTES 45 /* fe x8, 'F', release id (32), index u32 BE */
#define OVL_FLEET_BLOCK_KEY_TAG 'F'
/* The slice that holds fleet blocks on a node in several slices: keys carry
 * no slice, so a node's repair keeps fe x8 'F' keys to this slice and every
 * other key to its other slices (firmware/req/req_heal.c). */
#define OVL_FLEET_SYSTEM_SLICE "system"

void ovl_fleet_block_key(uint8_t key[OVL_FLEET_BLOCK_KEY_BYTES], const uint8_t id[32], uint32_t i);

/* Whether key[0..len) is a fleet block key (fe x8 'F', 45 bytes). */
bool ovl_fleet_is_block_key(const uint8_t *key, size_t len);

/* ---- 3.5 the assignment -------------------------------------------------- */

enum ovl_fleet_action {
	OVL_FLEET_ACTION_STAY = 0,     /* run what you run; stop fetching anything else */
	OVL_FLEET_ACTION_FETCH = 1,    /* fetch, verify, install into the inactive slot */
	OVL_FLEET_ACTION_RESTART = 2,  /* (once installed) restart into the new slot */
	OVL_FLEET_ACTION_ROLLBACK = 3, /* reserved */
};

/* "stay", "fetch", "restart", "rollback"; NULL for anything else. */
const char *ovl_fleet_action_name(uint8_t action);

struct ovl_fleet_assign {
	uint8_t node[32];         /* the node it is for */
	uint64_t seq;             /* broker-wide counter */
	uint64_t issued;          /* broker's trusted unix s */
	uint64_t rate;            /* B/s for the fetch, 0 = unlimited */
	uint32_t valid;           /* seconds it may be acted on after issued */
	uint8_t action;           /* enum ovl_fleet_action */
	char slice[OVL_FLEET_SLICE_BYTES]; /* where the blocks are */
	const uint8_t *release;   /* metadata envelope (borrowed); empty for stay */
	size_t release_len;
	const uint8_t *cert;      /* the release cert (borrowed) */
	size_t cert_len;
};

/*
 * Encode and sign a with the broker's secret key. *out malloc'd (the caller
 * frees it). -EINVAL (an unknown action, a bad slice name, fetch/restart
 * without a release or cert), -E2BIG (over OVL_FLEET_ASSIGN_MAX_BYTES),
 * -ENOMEM.
 */
int ovl_fleet_assign_sign(const struct ovl_fleet_assign *a, const uint8_t broker_sk[64],
			  uint8_t **out, size_t *outlen, char *err, size_t errlen);

/*
 * Verify the broker's signature over buf[0..len) and decode it into *a
 * (a->release and a->cert borrow buf). Checks the shape only (not the node,
 * the time, the seq or the release): -EKEYREJECTED, -EBADMSG, -E2BIG,
 * -EPROTONOSUPPORT. On error *a is zeroed.
 */
int ovl_fleet_assign_verify(struct ovl_fleet_assign *a, const uint8_t *buf, size_t len,
			    const uint8_t broker_pk[32], char *err, size_t errlen);

/*
 * Whether a verified assignment may be acted on at trusted time now:
 * issued <= now + OVL_FLEET_ASSIGN_SKEW_S and now <= issued + valid.
 * 0 or -ESTALE with err saying which.
 */
int ovl_fleet_assign_fresh(const struct ovl_fleet_assign *a, uint64_t now, char *err,
			   size_t errlen);

/* ---- 3.6 the report ------------------------------------------------------ */

enum ovl_fleet_state {
	OVL_FLEET_STATE_IDLE = 0,
	OVL_FLEET_STATE_FETCHING = 1,
	OVL_FLEET_STATE_INSTALLED = 2,   /* new slot written and marked to try */
	OVL_FLEET_STATE_RESTARTING = 3,
	OVL_FLEET_STATE_HEALTHY = 4,     /* runs the target, marked good */
	OVL_FLEET_STATE_FAILED = 5,      /* refused, or could not fetch/install */
	OVL_FLEET_STATE_ROLLED_BACK = 6, /* the new slot failed; runs the old one */
};
#define OVL_FLEET_STATES 7

struct ovl_fleet_report {
	char running[24], slot[4], board[32], target[24], other[24];
	uint8_t state;         /* enum ovl_fleet_state */
	bool other_good;
	uint64_t seq, done, total, degraded;
	char reason[OVL_FLEET_REASON_BYTES];
};

/*
 * Encode r as the report map into out[0..cap). Returns the length, -E2BIG
 * when cap is too small, -EINVAL when a string is not printable ASCII or
 * not NUL-terminated within its field or the state is unknown.
 */
int ovl_fleet_report_encode(const struct ovl_fleet_report *r, uint8_t *out, size_t cap);

/*
 * Decode a report. Fields after the known ones (added by later versions at
 * the end of the map) are ignored. -EBADMSG, -E2BIG, -EPROTONOSUPPORT; on
 * error *r is zeroed.
 */
int ovl_fleet_report_decode(struct ovl_fleet_report *r, const uint8_t *buf, size_t len,
			    char *err, size_t errlen);

/* "idle", "fetching", "installed", "restarting", "healthy", "failed",
 * "rolled_back"; NULL if unknown. */
const char *ovl_fleet_state_name(uint8_t state);

/* The value of key in a msgpack map (the admin documents of 9.6), or NULL
 * when m is NULL, not a map, or has no such string key. */
struct msgpack_object;
const struct msgpack_object *ovl_fleet_doc_get(const struct msgpack_object *m, const char *key);

#endif
