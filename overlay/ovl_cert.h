/*
 * ovl_cert: certificates, the CA → broker → node chain, revocation lists,
 * broker-signed timestamps and trusted time for boards without an RTC.
 *
 * Every signed object is the same envelope (docs/PROTOCOL.md section 2):
 *   msgpack [bin body, bin signature(64)]
 *   signature = Ed25519(issuer, "<domain>" ‖ 0x00 ‖ body)
 * with the domains OVL_CERT_DOMAIN, OVL_CRL_DOMAIN and OVL_TS_DOMAIN, so a
 * signature made for one kind of object never verifies as another. A body
 * is a msgpack map with fixed keys in a fixed order, every value in its
 * shortest encoding; decoders refuse any other encoding of the same content,
 * so one certificate has exactly one byte string.
 *
 * All decoders run ovl_mp_check() over the untrusted bytes before msgpack-c
 * sees them, and never trust a count they have not bounded. Verification is
 * offline: the caller supplies the issuer key and "now".
 *
 * Error codes used throughout (err says which object and why):
 *   -EBADMSG         malformed, truncated, or not the canonical encoding
 *   -E2BIG           over a size or list limit
 *   -EPROTONOSUPPORT an unknown format version
 *   -EKEYREJECTED    signature does not verify, or the wrong issuer key
 *   -EKEYEXPIRED     outside its validity window at "now"
 *   -EKEYREVOKED     its serial is on the issuer's revocation list
 *   -EPERM           a role that may not appear where it does in the chain
 *   -ESTALE          a revocation list that is not newer, a wrong nonce
 */
#ifndef OVL_CERT_H
#define OVL_CERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ovl_id.h"

#define OVL_CERT_DOMAIN "shelf-cert-v1" /* signed as these bytes, a NUL, the body */
#define OVL_CRL_DOMAIN "shelf-crl-v1"
#define OVL_TS_DOMAIN "shelf-time-v1"

#define OVL_CERT_VERSION 1        /* body field "v" */
#define OVL_CERT_MAX_BYTES 4096   /* largest encoded certificate accepted */
#define OVL_CERT_LIST_MAX 16      /* most slices, and most groups, per certificate */
#define OVL_CERT_NAME_BYTES 64    /* slice, group, site, chassis: up to 63 chars + NUL */
#define OVL_CERT_SLOT_BYTES 32    /* slot: up to 31 chars + NUL */

enum ovl_role {
	OVL_ROLE_NODE = 1,   /* a storage node: issued by a broker */
	OVL_ROLE_BROKER = 2, /* a broker: issued by the site CA only */
	OVL_ROLE_ADMIN = 3,  /* an operator's tool: issued by a broker */
	OVL_ROLE_CLIENT = 4, /* a client: issued by a broker */
	OVL_ROLE_CA = 5,     /* a CA; never valid inside a chain */
	OVL_ROLE_RELEASE = 6, /* a release key (fleet updates): issued by the site CA only;
			       * never valid inside a chain (ovl_fleet_release_cert_verify) */
};

/* "node", "broker", "admin", "client", "ca", "release", or NULL for anything else. */
const char *ovl_role_name(enum ovl_role role);

/* Parse one of the names above. 0 or -EINVAL. */
int ovl_role_parse(const char *name, enum ovl_role *role);

/*
 * A decoded certificate: a plain value with no pointers, owned by whoever
 * holds it. Strings are NUL-terminated printable ASCII. In format version 1
 * node_id always equals sign_pk.
 */
struct ovl_cert {
	uint32_t version;                          /* OVL_CERT_VERSION */
	uint64_t serial;                           /* unique per issuer */
	uint8_t node_id[OVL_ID_BYTES];             /* = sign_pk */
	uint8_t curve_pk[OVL_ID_CURVE_BYTES];      /* Curve25519: CURVE and crypto_kx */
	uint8_t sign_pk[OVL_ID_BYTES];             /* Ed25519 */
	uint32_t nslices;
	char slices[OVL_CERT_LIST_MAX][OVL_CERT_NAME_BYTES]; /* slices it may join, 1..63 chars */
	uint32_t ngroups;
	char groups[OVL_CERT_LIST_MAX][OVL_CERT_NAME_BYTES]; /* groups, 1..63 chars */
	char site[OVL_CERT_NAME_BYTES];            /* failure domain; may be empty */
	char chassis[OVL_CERT_NAME_BYTES];
	char slot[OVL_CERT_SLOT_BYTES];
	enum ovl_role role;
	uint64_t not_before;                       /* unix seconds, valid from (inclusive) */
	uint64_t not_after;                        /* unix seconds, valid until (inclusive) */
	uint8_t issuer[OVL_KEYID_BYTES];           /* key id of the issuer's Ed25519 key */
};

/* Zero c and set its version. */
void ovl_cert_init(struct ovl_cert *c);

/*
 * Set node_id and sign_pk to id->sign_pk and curve_pk to id->curve_pk.
 */
void ovl_cert_set_keys(struct ovl_cert *c, const struct ovl_id *id);

/* Append a slice / group name. -E2BIG when the list is full or the name too
 * long, -EINVAL when it is empty or not printable ASCII. */
int ovl_cert_add_slice(struct ovl_cert *c, const char *name, char *err, size_t errlen);
int ovl_cert_add_group(struct ovl_cert *c, const char *name, char *err, size_t errlen);

/*
 * Sign c with the issuer's Ed25519 secret key and write the encoded
 * certificate into out. Sets c->issuer to the key id of the signing key.
 * Returns the encoded size (at most OVL_CERT_MAX_BYTES), -EINVAL / -E2BIG for
 * a field that could never decode (err names it), or -E2BIG when outlen is
 * too small.
 */
int ovl_cert_sign(struct ovl_cert *c, const uint8_t issuer_sk[OVL_ID_SIGN_SK_BYTES],
		  uint8_t *out, size_t outlen, char *err, size_t errlen);

/*
 * Decode buf[0..len) into c WITHOUT checking the signature, the issuer or the
 * time: for display and for finding the issuer. 0 or an error above; on
 * error *c is zeroed.
 */
int ovl_cert_decode(struct ovl_cert *c, const uint8_t *buf, size_t len, char *err,
		    size_t errlen);

/*
 * Decode and verify one certificate: its issuer key id must be that of
 * issuer_pk, its signature must verify under issuer_pk, and
 * not_before <= now <= not_after. Roles and revocation are not checked here
 * (see ovl_cert_verify_chain). 0 or an error above; on error *c is zeroed.
 */
int ovl_cert_verify(struct ovl_cert *c, const uint8_t *buf, size_t len,
		    const uint8_t issuer_pk[OVL_ID_BYTES], uint64_t now, char *err, size_t errlen);

struct ovl_crl;

/* What a chain is checked against. */
struct ovl_trust {
	uint8_t ca_pk[OVL_ID_BYTES];       /* the site CA's Ed25519 public key */
	const struct ovl_crl *const *crls; /* verified revocation lists, any issuers; may be NULL */
	size_t ncrls;
};

/*
 * Verify a node certificate against the broker certificate that issued it,
 * and that against the trusted CA key:
 *  - the broker certificate: issuer key id = key id of trust->ca_pk, signed
 *    by it, role broker, valid at now, serial not on a CA revocation list;
 *  - the node certificate: issuer key id = key id of the broker's sign_pk,
 *    signed by it, role node, client or admin, valid at now, serial not on
 *    a revocation list of that broker.
 * A revocation list applies to a certificate when it was verified with the
 * very key that signed the certificate. On success *node (and *broker when
 * not NULL) hold the decoded certificates; on error they are zeroed and err
 * says "node certificate ..." or "broker certificate ...".
 */
int ovl_cert_verify_chain(struct ovl_cert *node, struct ovl_cert *broker,
			  const uint8_t *node_buf, size_t node_len,
			  const uint8_t *broker_buf, size_t broker_len,
			  const struct ovl_trust *trust, uint64_t now, char *err, size_t errlen);

/* ---- revocation lists ---------------------------------------------------- */

#define OVL_CRL_VERSION 1          /* body field "v" (format, not the list's version) */
#define OVL_CRL_SERIALS_MAX 4096   /* most serials one list may hold */
#define OVL_CRL_MAX_BYTES 65536    /* largest encoded list accepted */

/*
 * Encode and sign a revocation list: list version `version` (monotonic per
 * issuer) revoking serials[0..n) (any order, duplicates dropped). *out is
 * malloc'd and the caller's to free; *outlen its size. 0, -E2BIG when n is
 * over OVL_CRL_SERIALS_MAX, or -ENOMEM.
 */
int ovl_crl_sign(uint64_t version, const uint64_t *serials, size_t n,
		 const uint8_t issuer_sk[OVL_ID_SIGN_SK_BYTES], uint8_t **out, size_t *outlen,
		 char *err, size_t errlen);

/*
 * Decode buf[0..len) and verify that issuer_pk signed it (issuer key id and
 * signature). *out is the caller's; free with ovl_crl_destroy().
 */
int ovl_crl_decode(struct ovl_crl **out, const uint8_t *buf, size_t len,
		   const uint8_t issuer_pk[OVL_ID_BYTES], char *err, size_t errlen);

/*
 * Replace *current with the candidate list buf[0..len) when it is signed by
 * issuer_pk and its version is newer than (*current)'s. *current may be NULL
 * (no list yet: any version is accepted). Returns 0; -ESTALE when the
 * candidate's version is older or equal; -EKEYREJECTED when it is from
 * another issuer than *current or its signature fails; any decode error.
 * On error *current is untouched.
 */
int ovl_crl_update(struct ovl_crl **current, const uint8_t *buf, size_t len,
		   const uint8_t issuer_pk[OVL_ID_BYTES], char *err, size_t errlen);

/* Whether serial is on the list (binary search). */
bool ovl_crl_is_revoked(const struct ovl_crl *crl, uint64_t serial);

/* The list's version, its number of serials, the issuer key it was verified
 * with (borrowed, OVL_ID_BYTES), and its encoding (borrowed, to cache or
 * forward as is). */
uint64_t ovl_crl_version(const struct ovl_crl *crl);
size_t ovl_crl_count(const struct ovl_crl *crl);
const uint8_t *ovl_crl_issuer_pk(const struct ovl_crl *crl);
const uint8_t *ovl_crl_encoded(const struct ovl_crl *crl, size_t *len);

/* Free *crl and set it to NULL. Accepts NULL. */
void ovl_crl_destroy(struct ovl_crl **crl);

/* ---- timestamp tokens and trusted time ----------------------------------- */

#define OVL_TS_VERSION 1          /* body field "v" */
#define OVL_TS_MAX_BYTES 256      /* largest encoded token accepted */
#define OVL_TS_NONCE_MAX_BYTES 32 /* longest nonce a token may echo */

/*
 * Sign a timestamp token saying "it is `unix_s`", echoing the requester's
 * nonce[0..nonce_len) (nonce_len may be 0). Returns the encoded size, or
 * -E2BIG (nonce too long, or outlen too small).
 */
int ovl_timestamp_sign(uint64_t unix_s, const uint8_t *nonce, size_t nonce_len,
		       const uint8_t issuer_sk[OVL_ID_SIGN_SK_BYTES], uint8_t *out,
		       size_t outlen, char *err, size_t errlen);

/*
 * Verify a token against issuer_pk and return its time in *unix_s. When
 * nonce is not NULL the token must echo exactly nonce[0..nonce_len), or
 * -ESTALE (a replayed token).
 */
int ovl_timestamp_verify(const uint8_t *buf, size_t len, const uint8_t issuer_pk[OVL_ID_BYTES],
			 const uint8_t *nonce, size_t nonce_len, uint64_t *unix_s, char *err,
			 size_t errlen);

/* The clock seam: tests supply their own. */
struct ovl_clock {
	int64_t (*realtime_s)(void *ctx);  /* unix seconds; wrong on a board without RTC */
	int64_t (*monotonic_s)(void *ctx); /* seconds since boot, never goes back */
	void *ctx;
};

/* CLOCK_REALTIME and CLOCK_BOOTTIME. */
extern const struct ovl_clock ovl_clock_system;

/*
 * The build time as unix seconds: SHELF_BUILD_TIME when it was defined at
 * compile time (-DSHELF_BUILD_TIME=$(date +%s); use it for releases and
 * reproducible builds), otherwise midnight UTC of __DATE__ of the
 * compilation of ovl_timestamp.c. No correct clock is ever earlier.
 */
int64_t ovl_time_build_time(void);

enum ovl_time_source {
	OVL_TIME_LOCAL = 0,  /* the local clock, which is not before the build time */
	OVL_TIME_BROKER = 1, /* latest verified broker timestamp + monotonic time since */
	OVL_TIME_BUILD = 2,  /* no usable clock yet: the build time, a lower bound */
};

/* One per process, used from one thread (no locking inside). */
struct ovl_time;

/*
 * Trusted time: the local clock unless it reads earlier than build_time_s
 * (a board whose clock reset), then the latest verified broker timestamp
 * advanced by the monotonic clock, or failing that build_time_s itself.
 * `clock` is copied; NULL means ovl_clock_system. NULL on ENOMEM.
 */
struct ovl_time *ovl_time_new(int64_t build_time_s, const struct ovl_clock *clock);

/* Free *t and set it to NULL. Accepts NULL. */
void ovl_time_destroy(struct ovl_time **t);

/*
 * Verify a broker timestamp token (see ovl_timestamp_verify) and remember it
 * when it is later than the one held. A token before the build time is
 * refused (-ERANGE). A refused token (forged, replayed, malformed) changes
 * nothing. 0 or an error above.
 */
int ovl_time_add_token(struct ovl_time *t, const uint8_t *buf, size_t len,
		       const uint8_t broker_pk[OVL_ID_BYTES], const uint8_t *nonce,
		       size_t nonce_len, char *err, size_t errlen);

/*
 * The current trusted time into *now and where it came from into *src (may
 * be NULL). When the source is not OVL_TIME_LOCAL, reason says why, for the
 * daemon to log ("local clock 1970-01-01T00:00:05Z is before the build
 * date ..."); otherwise reason is "". Returns 0.
 */
int ovl_time_now(struct ovl_time *t, uint64_t *now, enum ovl_time_source *src, char *reason,
		 size_t reasonlen);

#endif
