/*
 * ovl_signed: the signed envelope shared by certificates, revocation lists
 * and timestamp tokens. Private to overlay/ (not included by overlay.h).
 *
 * Envelope = msgpack array of two bin objects, shortest encodings only:
 *   0x92, bin(body), bin(signature, 64 bytes)
 * signature = Ed25519(issuer secret key, domain ‖ 0x00 ‖ body)
 * The body is itself one msgpack map whose fields each type defines; it is
 * walked with ovl_mp_check() before msgpack-c decodes it, and it must be the
 * canonical encoding of what it decodes to (checked by re-encoding it).
 */
#ifndef OVL_SIGNED_H
#define OVL_SIGNED_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ovl_id.h"
#include "ovl_mp.h"

#define OVL_SIGNED_OVERHEAD_BYTES 72 /* 0x92, bin32 header, bin8 header, 64-byte signature */
#define OVL_SIGNED_DOMAIN_MAX 32     /* longest domain string, without its NUL */

/* Where the body and the signature of an opened envelope lie (borrowed). */
struct ovl_signed {
	const uint8_t *body;
	size_t body_len;
	const uint8_t *sig; /* OVL_ID_SIG_BYTES */
};

/*
 * Split buf[0..len) into body and signature. Refuses (err prefixed with
 * `what`) more than max_bytes (-E2BIG), anything but exactly one canonical
 * envelope (-EBADMSG). Does not check the signature.
 */
int ovl_signed_open(struct ovl_signed *env, const uint8_t *buf, size_t len, size_t max_bytes,
		    const char *what, char *err, size_t errlen);

/* 0 when env's signature verifies under pk for `domain`, else -EKEYREJECTED
 * (or -ENOMEM for a body too large for the stack buffer). */
int ovl_signed_verify(const struct ovl_signed *env, const char *domain,
		      const uint8_t pk[OVL_ID_BYTES]);

/*
 * Sign body under `domain` with the Ed25519 secret key sk and write the
 * envelope into out. Returns the envelope's size, -E2BIG when outlen is too
 * small, or -ENOMEM.
 */
int ovl_signed_seal(const uint8_t *body, size_t body_len, const char *domain,
		    const uint8_t sk[OVL_ID_SIGN_SK_BYTES], uint8_t *out, size_t outlen);

/*
 * A msgpack-c write callback target: writes into p[0..cap) when `want` is
 * NULL, otherwise compares against want[0..cap) (a canonical-encoding check).
 * `fail` is set on overflow or on the first difference.
 */
struct ovl_signed_buf {
	uint8_t *p;
	const uint8_t *want;
	size_t cap;
	size_t len;
	bool fail;
};
int ovl_signed_buf_write(void *data, const char *buf, size_t len);

/*
 * Walk body with lim, then unpack it with msgpack-c into up (the caller
 * destroys up). The body must be one map whose first field is "v" with the
 * value `version` (-EPROTONOSUPPORT otherwise) and which has exactly
 * `nfields` fields. -EBADMSG / -E2BIG / -ELOOP from the walker.
 */
int ovl_signed_unpack(msgpack_unpacked *up, const uint8_t *body, size_t len,
		      const struct ovl_mp_limits *lim, uint64_t version, uint32_t nfields,
		      const char *what, char *err, size_t errlen);

/* Field i of map must be named key: returns its value or NULL (err set). */
const msgpack_object *ovl_signed_field(const msgpack_object *map, uint32_t i, const char *key,
				       const char *what, char *err, size_t errlen);

/* Typed readers: 0 or -EBADMSG / -E2BIG with err naming `what` and `field`. */
int ovl_signed_get_uint(const msgpack_object *o, uint64_t *v, const char *what,
			const char *field, char *err, size_t errlen);
/* A bin of exactly n bytes. */
int ovl_signed_get_bin(const msgpack_object *o, uint8_t *dst, size_t n, const char *what,
		       const char *field, char *err, size_t errlen);
/* A str of printable ASCII (0x20..0x7e), min_len..cap-1 bytes, NUL-terminated into dst. */
int ovl_signed_get_str(const msgpack_object *o, char *dst, size_t cap, size_t min_len,
		       const char *what, const char *field, char *err, size_t errlen);

/* True when s is printable ASCII, min_len..cap-1 bytes long. */
bool ovl_signed_name_ok(const char *s, size_t cap, size_t min_len);

#endif
