/* Revocation lists: an issuer-signed, versioned, sorted list of serials. */
#include "ovl_cert.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ovl_signed.h"

#define CRL_FIELDS 4 /* v, version, issuer, serials */

struct ovl_crl {
	uint64_t version;                /* monotonic per issuer */
	uint8_t issuer_pk[OVL_ID_BYTES]; /* the key the list was verified with */
	size_t n;
	uint64_t *serials;               /* strictly ascending, n entries */
	uint8_t *enc;                    /* the verified encoding, enc_len bytes */
	size_t enc_len;
};

/* Lets a list one over the limit be reported by name, not by the walker. */
static const struct ovl_mp_limits crl_body_limits = {
	.max_depth = 2,
	.max_bytes = OVL_CRL_MAX_BYTES,
	.max_elems = OVL_CRL_SERIALS_MAX + 64,
	.max_str = 64,
};

static void crl_pack(msgpack_packer *pk, uint64_t version, const uint8_t keyid[OVL_KEYID_BYTES],
		     const uint64_t *serials, size_t n)
{
	msgpack_pack_map(pk, CRL_FIELDS);
	msgpack_pack_str_with_body(pk, "v", 1);
	msgpack_pack_uint64(pk, OVL_CRL_VERSION);
	msgpack_pack_str_with_body(pk, "version", 7);
	msgpack_pack_uint64(pk, version);
	msgpack_pack_str_with_body(pk, "issuer", 6);
	msgpack_pack_bin_with_body(pk, keyid, OVL_KEYID_BYTES);
	msgpack_pack_str_with_body(pk, "serials", 7);
	msgpack_pack_array(pk, (size_t)n);
	for (size_t i = 0; i < n; i++)
		msgpack_pack_uint64(pk, serials[i]);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

int ovl_crl_sign(uint64_t version, const uint64_t *serials, size_t n,
		 const uint8_t issuer_sk[OVL_ID_SIGN_SK_BYTES], uint8_t **out, size_t *outlen,
		 char *err, size_t errlen)
{
	uint64_t *sorted = NULL;
	uint8_t *body = NULL, *enc = NULL;
	uint8_t pk[OVL_ID_BYTES], keyid[OVL_KEYID_BYTES];
	struct ovl_signed_buf b = { 0 };
	msgpack_packer packer;
	size_t m = 0;
	int ret;

	*out = NULL;
	*outlen = 0;
	sorted = malloc((n ? n : 1) * sizeof(*sorted));
	body = malloc(OVL_CRL_MAX_BYTES);
	enc = malloc(OVL_CRL_MAX_BYTES);
	if (!sorted || !body || !enc) {
		snprintf(err, errlen, "revocation list: %s", strerror(ENOMEM));
		ret = -ENOMEM;
		goto out;
	}
	if (n)
		memcpy(sorted, serials, n * sizeof(*sorted));
	qsort(sorted, n, sizeof(*sorted), cmp_u64);
	for (size_t i = 0; i < n; i++)
		if (m == 0 || sorted[m - 1] != sorted[i])
			sorted[m++] = sorted[i];
	if (m > OVL_CRL_SERIALS_MAX) {
		snprintf(err, errlen, "revocation list: %zu serials, more than the limit of %d", m,
			 OVL_CRL_SERIALS_MAX);
		ret = -E2BIG;
		goto out;
	}
	crypto_sign_ed25519_sk_to_pk(pk, issuer_sk);
	ovl_keyid_compute(pk, keyid);
	b.p = body;
	b.cap = OVL_CRL_MAX_BYTES - OVL_SIGNED_OVERHEAD_BYTES;
	msgpack_packer_init(&packer, &b, ovl_signed_buf_write);
	crl_pack(&packer, version, keyid, sorted, m);
	if (b.fail) {
		snprintf(err, errlen, "revocation list: encoding is larger than %d bytes",
			 OVL_CRL_MAX_BYTES);
		ret = -E2BIG;
		goto out;
	}
	ret = ovl_signed_seal(body, b.len, OVL_CRL_DOMAIN, issuer_sk, enc, OVL_CRL_MAX_BYTES);
	if (ret < 0) {
		snprintf(err, errlen, "revocation list: %s", strerror(-ret));
		goto out;
	}
	*outlen = (size_t)ret;
	*out = enc;
	enc = NULL;
	ret = 0;
out:
	free(sorted);
	free(body);
	free(enc);
	return ret;
}

void ovl_crl_destroy(struct ovl_crl **crl)
{
	if (!crl || !*crl)
		return;
	free((*crl)->serials);
	free((*crl)->enc);
	free(*crl);
	*crl = NULL;
}

int ovl_crl_decode(struct ovl_crl **out, const uint8_t *buf, size_t len,
		   const uint8_t issuer_pk[OVL_ID_BYTES], char *err, size_t errlen)
{
	static const char what[] = "revocation list";
	struct ovl_crl *crl = NULL;
	struct ovl_signed env;
	struct ovl_signed_buf cmp = { 0 };
	msgpack_packer packer;
	msgpack_unpacked up;
	const msgpack_object *v = NULL;
	uint8_t issuer[OVL_KEYID_BYTES], keyid[OVL_KEYID_BYTES];
	char got[OVL_ID_FP_BYTES], want[OVL_ID_FP_BYTES];
	uint64_t version = 0;
	uint32_t n;
	int ret;

	*out = NULL;
	msgpack_unpacked_init(&up);
	ret = ovl_signed_open(&env, buf, len, OVL_CRL_MAX_BYTES, what, err, errlen);
	if (ret < 0)
		goto out;
	ret = ovl_signed_unpack(&up, env.body, env.body_len, &crl_body_limits, OVL_CRL_VERSION,
				CRL_FIELDS, what, err, errlen);
	if (ret < 0)
		goto out;
	ret = -EBADMSG;
	v = ovl_signed_field(&up.data, 1, "version", what, err, errlen);
	if (!v || (ret = ovl_signed_get_uint(v, &version, what, "version", err, errlen)) < 0)
		goto out;
	ret = -EBADMSG;
	v = ovl_signed_field(&up.data, 2, "issuer", what, err, errlen);
	if (!v || (ret = ovl_signed_get_bin(v, issuer, sizeof(issuer), what, "issuer", err,
					    errlen)) < 0)
		goto out;
	ret = -EBADMSG;
	v = ovl_signed_field(&up.data, 3, "serials", what, err, errlen);
	if (!v)
		goto out;
	if (v->type != MSGPACK_OBJECT_ARRAY) {
		snprintf(err, errlen, "%s: 'serials' is not an array", what);
		goto out;
	}
	n = v->via.array.size;
	if (n > OVL_CRL_SERIALS_MAX) {
		snprintf(err, errlen, "%s: lists %u serials; at most %d are allowed", what, n,
			 OVL_CRL_SERIALS_MAX);
		ret = -E2BIG;
		goto out;
	}
	crl = calloc(1, sizeof(*crl));
	if (crl)
		crl->serials = malloc((n ? n : 1) * sizeof(uint64_t));
	if (!crl || !crl->serials) {
		snprintf(err, errlen, "%s: %s", what, strerror(ENOMEM));
		ret = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < n; i++) {
		const msgpack_object *s = &v->via.array.ptr[i];

		if (s->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
			snprintf(err, errlen, "%s: serial %u is not an unsigned integer", what, i);
			goto out;
		}
		if (i > 0 && s->via.u64 <= crl->serials[i - 1]) {
			snprintf(err, errlen, "%s: serials are not in strictly ascending order at index %u",
				 what, i);
			goto out;
		}
		crl->serials[i] = s->via.u64;
	}
	crl->n = n;
	crl->version = version;
	cmp.want = env.body;
	cmp.cap = env.body_len;
	msgpack_packer_init(&packer, &cmp, ovl_signed_buf_write);
	crl_pack(&packer, version, issuer, crl->serials, n);
	if (cmp.fail || cmp.len != env.body_len) {
		snprintf(err, errlen, "%s: body is not in canonical encoding", what);
		goto out;
	}
	ovl_keyid_compute(issuer_pk, keyid);
	if (memcmp(keyid, issuer, sizeof(keyid)) != 0) {
		ovl_keyid_format(issuer, got);
		ovl_keyid_format(keyid, want);
		snprintf(err, errlen, "%s version %llu was issued by key %s, not by key %s", what,
			 (unsigned long long)version, got, want);
		ret = -EKEYREJECTED;
		goto out;
	}
	ret = ovl_signed_verify(&env, OVL_CRL_DOMAIN, issuer_pk);
	if (ret < 0) {
		ovl_keyid_format(keyid, want);
		snprintf(err, errlen, "%s version %llu: signature does not verify under key %s", what,
			 (unsigned long long)version, want);
		goto out;
	}
	crl->enc = malloc(len);
	if (!crl->enc) {
		snprintf(err, errlen, "%s: %s", what, strerror(ENOMEM));
		ret = -ENOMEM;
		goto out;
	}
	memcpy(crl->enc, buf, len);
	crl->enc_len = len;
	memcpy(crl->issuer_pk, issuer_pk, OVL_ID_BYTES);
	*out = crl;
	crl = NULL;
	ret = 0;
out:
	msgpack_unpacked_destroy(&up);
	ovl_crl_destroy(&crl);
	return ret;
}

int ovl_crl_update(struct ovl_crl **current, const uint8_t *buf, size_t len,
		   const uint8_t issuer_pk[OVL_ID_BYTES], char *err, size_t errlen)
{
	struct ovl_crl *cand = NULL;
	char have[OVL_ID_FP_BYTES], got[OVL_ID_FP_BYTES];
	int ret;

	if (*current && memcmp((*current)->issuer_pk, issuer_pk, OVL_ID_BYTES) != 0) {
		ovl_nodeid_fingerprint(issuer_pk, got);
		ovl_nodeid_fingerprint((*current)->issuer_pk, have);
		snprintf(err, errlen,
			 "revocation list from key %s cannot replace the list from key %s", got, have);
		return -EKEYREJECTED;
	}
	ret = ovl_crl_decode(&cand, buf, len, issuer_pk, err, errlen);
	if (ret < 0)
		goto out;
	if (*current && cand->version <= (*current)->version) {
		snprintf(err, errlen,
			 "revocation list version %llu is not newer than the current version %llu",
			 (unsigned long long)cand->version, (unsigned long long)(*current)->version);
		ret = -ESTALE;
		goto out;
	}
	ovl_crl_destroy(current);
	*current = cand;
	cand = NULL;
	ret = 0;
out:
	ovl_crl_destroy(&cand);
	return ret;
}

bool ovl_crl_is_revoked(const struct ovl_crl *crl, uint64_t serial)
{
	return crl && crl->n &&
	       bsearch(&serial, crl->serials, crl->n, sizeof(uint64_t), cmp_u64) != NULL;
}

uint64_t ovl_crl_version(const struct ovl_crl *crl)
{
	return crl->version;
}

size_t ovl_crl_count(const struct ovl_crl *crl)
{
	return crl->n;
}

const uint8_t *ovl_crl_issuer_pk(const struct ovl_crl *crl)
{
	return crl->issuer_pk;
}

const uint8_t *ovl_crl_encoded(const struct ovl_crl *crl, size_t *len)
{
	*len = crl->enc_len;
	return crl->enc;
}
