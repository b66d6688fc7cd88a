#include "ovl_cert.h"

#include <errno.h>
#include <sodium.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "ovl_signed.h"

/*
 * The certificate body: a map of these fields in this order (PROTOCOL.md
 * 2.3). One table drives both the encoder and the decoder so they cannot
 * drift apart.
 */
enum ftype { F_VERSION, F_U64, F_BIN, F_STR, F_LIST, F_ROLE };

struct field {
	const char *key;
	enum ftype type;
	size_t off;       /* offset in struct ovl_cert */
	size_t size;      /* F_BIN: bytes; F_STR, F_LIST: buffer per string */
	size_t count_off; /* F_LIST: offset of the uint32_t count */
	size_t min_len;   /* F_STR, F_LIST: shortest string allowed */
};

static const struct field cert_fields[] = {
	{ "v", F_VERSION, 0, 0, 0, 0 },
	{ "serial", F_U64, offsetof(struct ovl_cert, serial), 0, 0, 0 },
	{ "id", F_BIN, offsetof(struct ovl_cert, node_id), OVL_ID_BYTES, 0, 0 },
	{ "curve", F_BIN, offsetof(struct ovl_cert, curve_pk), OVL_ID_CURVE_BYTES, 0, 0 },
	{ "sign", F_BIN, offsetof(struct ovl_cert, sign_pk), OVL_ID_BYTES, 0, 0 },
	{ "slices", F_LIST, offsetof(struct ovl_cert, slices), OVL_CERT_NAME_BYTES,
	  offsetof(struct ovl_cert, nslices), 1 },
	{ "groups", F_LIST, offsetof(struct ovl_cert, groups), OVL_CERT_NAME_BYTES,
	  offsetof(struct ovl_cert, ngroups), 1 },
	{ "site", F_STR, offsetof(struct ovl_cert, site), OVL_CERT_NAME_BYTES, 0, 0 },
	{ "chassis", F_STR, offsetof(struct ovl_cert, chassis), OVL_CERT_NAME_BYTES, 0, 0 },
	{ "slot", F_STR, offsetof(struct ovl_cert, slot), OVL_CERT_SLOT_BYTES, 0, 0 },
	{ "role", F_ROLE, offsetof(struct ovl_cert, role), 0, 0, 0 },
	{ "not_before", F_U64, offsetof(struct ovl_cert, not_before), 0, 0, 0 },
	{ "not_after", F_U64, offsetof(struct ovl_cert, not_after), 0, 0, 0 },
	{ "issuer", F_BIN, offsetof(struct ovl_cert, issuer), OVL_KEYID_BYTES, 0, 0 },
};
#define CERT_FIELDS (sizeof(cert_fields) / sizeof(cert_fields[0]))

/* Generous enough that list limits are reported by name, not by the walker:
 * 1 map + 14 keys + 14 values + up to 99 list items. */
static const struct ovl_mp_limits cert_body_limits = {
	.max_depth = 2,
	.max_bytes = OVL_CERT_MAX_BYTES,
	.max_elems = 128,
	.max_str = 255,
};

static const char *const role_names[] = {
	[OVL_ROLE_NODE] = "node",
	[OVL_ROLE_BROKER] = "broker",
	[OVL_ROLE_ADMIN] = "admin",
	[OVL_ROLE_CLIENT] = "client",
	[OVL_ROLE_CA] = "ca",
	[OVL_ROLE_RELEASE] = "release",
};

const char *ovl_role_name(enum ovl_role role)
{
	if ((unsigned)role >= sizeof(role_names) / sizeof(role_names[0]))
		return NULL;
	return role_names[role];
}

int ovl_role_parse(const char *name, enum ovl_role *role)
{
	for (unsigned i = 1; i < sizeof(role_names) / sizeof(role_names[0]); i++) {
		if (strcmp(name, role_names[i]) == 0) {
			*role = (enum ovl_role)i;
			return 0;
		}
	}
	return -EINVAL;
}

void ovl_cert_init(struct ovl_cert *c)
{
	memset(c, 0, sizeof(*c));
	c->version = OVL_CERT_VERSION;
}

void ovl_cert_set_keys(struct ovl_cert *c, const struct ovl_id *id)
{
	memcpy(c->node_id, id->sign_pk, OVL_ID_BYTES);
	memcpy(c->sign_pk, id->sign_pk, OVL_ID_BYTES);
	memcpy(c->curve_pk, id->curve_pk, OVL_ID_CURVE_BYTES);
}

static int list_add(char (*list)[OVL_CERT_NAME_BYTES], uint32_t *n, const char *what,
		    const char *name, char *err, size_t errlen)
{
	size_t len = strlen(name);

	if (*n >= OVL_CERT_LIST_MAX) {
		snprintf(err, errlen, "cannot add %s '%s': a certificate holds at most %d", what, name,
			 OVL_CERT_LIST_MAX);
		return -E2BIG;
	}
	if (len >= OVL_CERT_NAME_BYTES) {
		snprintf(err, errlen, "%s name '%s' is longer than %d bytes", what, name,
			 OVL_CERT_NAME_BYTES - 1);
		return -E2BIG;
	}
	if (!ovl_signed_name_ok(name, OVL_CERT_NAME_BYTES, 1)) {
		snprintf(err, errlen, "%s name '%s' must be 1 to %d printable ASCII characters", what,
			 name, OVL_CERT_NAME_BYTES - 1);
		return -EINVAL;
	}
	memcpy(list[*n], name, len + 1);
	(*n)++;
	return 0;
}

int ovl_cert_add_slice(struct ovl_cert *c, const char *name, char *err, size_t errlen)
{
	return list_add(c->slices, &c->nslices, "slice", name, err, errlen);
}

int ovl_cert_add_group(struct ovl_cert *c, const char *name, char *err, size_t errlen)
{
	return list_add(c->groups, &c->ngroups, "group", name, err, errlen);
}

/* The checks that do not depend on the encoding, shared by sign and decode. */
static int cert_check(const struct ovl_cert *c, const char *what, char *err, size_t errlen)
{
	const uint8_t *base = (const uint8_t *)c;

	if (c->version != OVL_CERT_VERSION) {
		snprintf(err, errlen, "%s: format version %u is not supported (expected %d)", what,
			 c->version, OVL_CERT_VERSION);
		return -EPROTONOSUPPORT;
	}
	for (size_t i = 0; i < CERT_FIELDS; i++) {
		const struct field *f = &cert_fields[i];

		if (f->type == F_STR && !ovl_signed_name_ok((const char *)base + f->off, f->size, 0)) {
			snprintf(err, errlen, "%s: '%s' must be at most %zu printable ASCII characters",
				 what, f->key, f->size - 1);
			return -EINVAL;
		}
		if (f->type == F_LIST) {
			uint32_t n;

			memcpy(&n, base + f->count_off, sizeof(n));
			if (n > OVL_CERT_LIST_MAX) {
				snprintf(err, errlen, "%s: '%s' lists %u names; at most %d are allowed",
					 what, f->key, n, OVL_CERT_LIST_MAX);
				return -E2BIG;
			}
			for (uint32_t j = 0; j < n; j++) {
				if (!ovl_signed_name_ok((const char *)base + f->off + j * f->size,
							f->size, f->min_len)) {
					snprintf(err, errlen,
						 "%s: '%s'[%u] must be 1 to %zu printable ASCII characters",
						 what, f->key, j, f->size - 1);
					return -EINVAL;
				}
			}
		}
	}
	if (!ovl_role_name(c->role)) {
		snprintf(err, errlen, "%s: role %d is not a role", what, (int)c->role);
		return -EINVAL;
	}
	if (memcmp(c->node_id, c->sign_pk, OVL_ID_BYTES) != 0) {
		snprintf(err, errlen, "%s: node id is not the signing key", what);
		return -EINVAL;
	}
	if (c->not_before > c->not_after) {
		snprintf(err, errlen, "%s: not_before %llu is after not_after %llu", what,
			 (unsigned long long)c->not_before, (unsigned long long)c->not_after);
		return -EINVAL;
	}
	return 0;
}

static void pack_cstr(msgpack_packer *pk, const char *s)
{
	msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* Encode c's body through pk; the caller has run cert_check. */
static void cert_pack(msgpack_packer *pk, const struct ovl_cert *c)
{
	const uint8_t *base = (const uint8_t *)c;

	msgpack_pack_map(pk, CERT_FIELDS);
	for (size_t i = 0; i < CERT_FIELDS; i++) {
		const struct field *f = &cert_fields[i];
		uint64_t u;
		uint32_t n;

		pack_cstr(pk, f->key);
		switch (f->type) {
		case F_VERSION:
			msgpack_pack_uint64(pk, c->version);
			break;
		case F_U64:
			memcpy(&u, base + f->off, sizeof(u));
			msgpack_pack_uint64(pk, u);
			break;
		case F_BIN:
			msgpack_pack_bin_with_body(pk, base + f->off, f->size);
			break;
		case F_STR:
			pack_cstr(pk, (const char *)base + f->off);
			break;
		case F_LIST:
			memcpy(&n, base + f->count_off, sizeof(n));
			msgpack_pack_array(pk, n);
			for (uint32_t j = 0; j < n; j++)
				pack_cstr(pk, (const char *)base + f->off + j * f->size);
			break;
		case F_ROLE:
			pack_cstr(pk, ovl_role_name(c->role));
			break;
		}
	}
}

int ovl_cert_sign(struct ovl_cert *c, const uint8_t issuer_sk[OVL_ID_SIGN_SK_BYTES],
		  uint8_t *out, size_t outlen, char *err, size_t errlen)
{
	uint8_t body[OVL_CERT_MAX_BYTES];
	uint8_t pk[OVL_ID_BYTES];
	struct ovl_signed_buf b = { .p = body, .cap = sizeof(body) };
	msgpack_packer packer;
	int ret;

	ret = cert_check(c, "certificate", err, errlen);
	if (ret < 0)
		return ret;
	crypto_sign_ed25519_sk_to_pk(pk, issuer_sk);
	ovl_keyid_compute(pk, c->issuer);
	msgpack_packer_init(&packer, &b, ovl_signed_buf_write);
	cert_pack(&packer, c);
	if (b.fail || b.len + OVL_SIGNED_OVERHEAD_BYTES > OVL_CERT_MAX_BYTES) {
		snprintf(err, errlen, "certificate: encoding is larger than %d bytes", OVL_CERT_MAX_BYTES);
		return -E2BIG;
	}
	ret = ovl_signed_seal(body, b.len, OVL_CERT_DOMAIN, issuer_sk, out, outlen);
	if (ret == -E2BIG)
		snprintf(err, errlen, "certificate: %zu bytes of output space are too few", outlen);
	else if (ret < 0)
		snprintf(err, errlen, "certificate: %s", strerror(-ret));
	return ret;
}

static int decode_field(struct ovl_cert *c, const struct field *f, const msgpack_object *v,
			const char *what, char *err, size_t errlen)
{
	uint8_t *base = (uint8_t *)c;
	char name[32], role[16];
	uint32_t n;
	int ret = 0;

	switch (f->type) {
	case F_VERSION: /* checked by ovl_signed_unpack */
		c->version = OVL_CERT_VERSION;
		break;
	case F_U64:
		ret = ovl_signed_get_uint(v, (uint64_t *)(base + f->off), what, f->key, err, errlen);
		break;
	case F_BIN:
		ret = ovl_signed_get_bin(v, base + f->off, f->size, what, f->key, err, errlen);
		break;
	case F_STR:
		ret = ovl_signed_get_str(v, (char *)base + f->off, f->size, f->min_len, what, f->key,
					 err, errlen);
		break;
	case F_LIST:
		if (v->type != MSGPACK_OBJECT_ARRAY) {
			snprintf(err, errlen, "%s: '%s' is not an array", what, f->key);
			return -EBADMSG;
		}
		n = v->via.array.size;
		if (n > OVL_CERT_LIST_MAX) {
			snprintf(err, errlen, "%s: '%s' lists %u names; at most %d are allowed", what,
				 f->key, n, OVL_CERT_LIST_MAX);
			return -E2BIG;
		}
		for (uint32_t j = 0; j < n && ret == 0; j++) {
			snprintf(name, sizeof(name), "%s[%u]", f->key, j);
			ret = ovl_signed_get_str(&v->via.array.ptr[j], (char *)base + f->off + j * f->size,
						 f->size, f->min_len, what, name, err, errlen);
		}
		memcpy(base + f->count_off, &n, sizeof(n));
		break;
	case F_ROLE:
		ret = ovl_signed_get_str(v, role, sizeof(role), 1, what, f->key, err, errlen);
		if (ret == 0 && ovl_role_parse(role, &c->role) < 0) {
			snprintf(err, errlen, "%s: unknown role '%s'", what, role);
			ret = -EBADMSG;
		}
		if (ret == -E2BIG) {
			snprintf(err, errlen, "%s: unknown role", what);
			ret = -EBADMSG;
		}
		break;
	}
	return ret;
}

/* Open the envelope and decode the body into c; the signature is left for
 * the caller, in env. */
static int cert_decode(struct ovl_cert *c, struct ovl_signed *env, const uint8_t *buf,
		       size_t len, const char *what, char *err, size_t errlen)
{
	msgpack_unpacked up;
	struct ovl_signed_buf cmp = { 0 };
	msgpack_packer packer;
	int ret;

	memset(c, 0, sizeof(*c));
	msgpack_unpacked_init(&up);
	ret = ovl_signed_open(env, buf, len, OVL_CERT_MAX_BYTES, what, err, errlen);
	if (ret < 0)
		goto out;
	ret = ovl_signed_unpack(&up, env->body, env->body_len, &cert_body_limits, OVL_CERT_VERSION,
				CERT_FIELDS, what, err, errlen);
	if (ret < 0)
		goto out;
	for (size_t i = 0; i < CERT_FIELDS; i++) {
		const msgpack_object *v = ovl_signed_field(&up.data, i, cert_fields[i].key, what, err,
							   errlen);

		if (!v) {
			ret = -EBADMSG;
			goto out;
		}
		ret = decode_field(c, &cert_fields[i], v, what, err, errlen);
		if (ret < 0)
			goto out;
	}
	ret = cert_check(c, what, err, errlen);
	if (ret < 0) {
		ret = ret == -EINVAL ? -EBADMSG : ret;
		goto out;
	}
	/* one certificate, one byte string: re-encode and compare */
	cmp.want = env->body;
	cmp.cap = env->body_len;
	msgpack_packer_init(&packer, &cmp, ovl_signed_buf_write);
	cert_pack(&packer, c);
	if (cmp.fail || cmp.len != env->body_len) {
		snprintf(err, errlen, "%s: body is not in canonical encoding", what);
		ret = -EBADMSG;
		goto out;
	}
	ret = 0;
out:
	msgpack_unpacked_destroy(&up);
	if (ret < 0)
		memset(c, 0, sizeof(*c));
	return ret;
}

int ovl_cert_decode(struct ovl_cert *c, const uint8_t *buf, size_t len, char *err,
		    size_t errlen)
{
	struct ovl_signed env;

	return cert_decode(c, &env, buf, len, "certificate", err, errlen);
}

/* Decode, then issuer key id, signature and validity window. `whose` names
 * the issuer key in messages ("the broker's"). */
static int verify_one(struct ovl_cert *c, const uint8_t *buf, size_t len,
		      const uint8_t issuer_pk[OVL_ID_BYTES], const char *whose, uint64_t now,
		      const char *what, char *err, size_t errlen)
{
	struct ovl_signed env;
	uint8_t keyid[OVL_KEYID_BYTES];
	char got[OVL_ID_FP_BYTES], want[OVL_ID_FP_BYTES];
	unsigned long long serial;
	int ret;

	ret = cert_decode(c, &env, buf, len, what, err, errlen);
	if (ret < 0)
		return ret;
	serial = c->serial;
	ovl_keyid_compute(issuer_pk, keyid);
	if (memcmp(keyid, c->issuer, OVL_KEYID_BYTES) != 0) {
		ovl_keyid_format(c->issuer, got);
		ovl_keyid_format(keyid, want);
		snprintf(err, errlen, "%s serial %llu was issued by key %s, not by %s key %s", what,
			 serial, got, whose, want);
		ret = -EKEYREJECTED;
		goto out;
	}
	ret = ovl_signed_verify(&env, OVL_CERT_DOMAIN, issuer_pk);
	if (ret < 0) {
		ovl_keyid_format(keyid, want);
		snprintf(err, errlen, "%s serial %llu: signature does not verify under %s key %s", what,
			 serial, whose, want);
		goto out;
	}
	if (now < c->not_before) {
		snprintf(err, errlen, "%s serial %llu is not valid before %llu (now %llu)", what, serial,
			 (unsigned long long)c->not_before, (unsigned long long)now);
		ret = -EKEYEXPIRED;
		goto out;
	}
	if (now > c->not_after) {
		snprintf(err, errlen, "%s serial %llu expired at %llu (now %llu)", what, serial,
			 (unsigned long long)c->not_after, (unsigned long long)now);
		ret = -EKEYEXPIRED;
		goto out;
	}
	ret = 0;
out:
	if (ret < 0)
		memset(c, 0, sizeof(*c));
	return ret;
}

int ovl_cert_verify(struct ovl_cert *c, const uint8_t *buf, size_t len,
		    const uint8_t issuer_pk[OVL_ID_BYTES], uint64_t now, char *err, size_t errlen)
{
	return verify_one(c, buf, len, issuer_pk, "the issuer's", now, "certificate", err, errlen);
}

/* The first list verified with issuer_pk that revokes serial, or NULL. */
static const struct ovl_crl *revoked_by(const struct ovl_trust *trust,
					const uint8_t issuer_pk[OVL_ID_BYTES], uint64_t serial)
{
	for (size_t i = 0; i < trust->ncrls; i++) {
		const struct ovl_crl *crl = trust->crls[i];

		if (crl && memcmp(ovl_crl_issuer_pk(crl), issuer_pk, OVL_ID_BYTES) == 0 &&
		    ovl_crl_is_revoked(crl, serial))
			return crl;
	}
	return NULL;
}

int ovl_cert_verify_chain(struct ovl_cert *node, struct ovl_cert *broker,
			  const uint8_t *node_buf, size_t node_len,
			  const uint8_t *broker_buf, size_t broker_len,
			  const struct ovl_trust *trust, uint64_t now, char *err, size_t errlen)
{
	struct ovl_cert local;
	struct ovl_cert *b = broker ? broker : &local;
	const struct ovl_crl *crl = NULL;
	int ret;

	memset(node, 0, sizeof(*node));
	ret = verify_one(b, broker_buf, broker_len, trust->ca_pk, "the CA's", now,
			 "broker certificate", err, errlen);
	if (ret < 0)
		goto out;
	if (b->role != OVL_ROLE_BROKER) {
		snprintf(err, errlen,
			 "broker certificate serial %llu has role '%s'; only a broker certificate may issue node certificates",
			 (unsigned long long)b->serial, ovl_role_name(b->role));
		ret = -EPERM;
		goto out;
	}
	crl = revoked_by(trust, trust->ca_pk, b->serial);
	if (crl) {
		snprintf(err, errlen, "broker certificate serial %llu is revoked (revocation list version %llu)",
			 (unsigned long long)b->serial, (unsigned long long)ovl_crl_version(crl));
		ret = -EKEYREVOKED;
		goto out;
	}
	ret = verify_one(node, node_buf, node_len, b->sign_pk, "the broker's", now,
			 "node certificate", err, errlen);
	if (ret < 0)
		goto out;
	if (node->role != OVL_ROLE_NODE && node->role != OVL_ROLE_CLIENT &&
	    node->role != OVL_ROLE_ADMIN) {
		snprintf(err, errlen,
			 "node certificate serial %llu has role '%s'; a broker may issue only node, client and admin certificates",
			 (unsigned long long)node->serial, ovl_role_name(node->role));
		ret = -EPERM;
		goto out;
	}
	crl = revoked_by(trust, b->sign_pk, node->serial);
	if (crl) {
		snprintf(err, errlen, "node certificate serial %llu is revoked (revocation list version %llu)",
			 (unsigned long long)node->serial, (unsigned long long)ovl_crl_version(crl));
		ret = -EKEYREVOKED;
		goto out;
	}
	ret = 0;
out:
	if (ret < 0) {
		memset(node, 0, sizeof(*node));
		memset(b, 0, sizeof(*b));
	}
	return ret;
}
