#include "ovl_fleet.h"

#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ovl_large.h"
#include "ovl_signed.h"

#ifndef SHELF_VERSION
#define SHELF_VERSION "0.0.0"
#endif

/* ---- versions ------------------------------------------------------------ */

int ovl_fleet_version_check(const char *s, uint64_t *v, char *err, size_t errlen)
{
	uint64_t part[3] = { 0 };
	const char *p = s;

	if (!s) {
		snprintf(err, errlen, "no version given");
		return -EINVAL;
	}
	if (strnlen(s, OVL_FLEET_VERSION_BYTES) >= OVL_FLEET_VERSION_BYTES) {
		snprintf(err, errlen, "version '%.24s...' is too long; a version is MAJOR.MINOR.PATCH", s);
		return -EINVAL;
	}
	for (int i = 0; i < 3; i++) {
		const char *start = p;

		if (*p < '0' || *p > '9') {
			snprintf(err, errlen,
				 "version '%s' is not MAJOR.MINOR.PATCH (three decimal numbers 0..65535)", s);
			return -EINVAL;
		}
		while (*p >= '0' && *p <= '9') {
			part[i] = part[i] * 10 + (uint64_t)(*p - '0');
			if (part[i] > 65535) {
				snprintf(err, errlen, "version '%s': a number is larger than 65535", s);
				return -EINVAL;
			}
			p++;
		}
		if (*start == '0' && p - start > 1) {
			snprintf(err, errlen, "version '%s': a number has a leading zero", s);
			return -EINVAL;
		}
		if (i < 2) {
			if (*p != '.') {
				snprintf(err, errlen,
					 "version '%s' is not MAJOR.MINOR.PATCH (three decimal numbers 0..65535)",
					 s);
				return -EINVAL;
			}
			p++;
		}
	}
	if (*p != '\0') {
		snprintf(err, errlen, "version '%s' has something after MAJOR.MINOR.PATCH", s);
		return -EINVAL;
	}
	*v = part[0] << 32 | part[1] << 16 | part[2];
	return 0;
}

int ovl_fleet_version_parse(const char *s, uint64_t *v)
{
	char err[160];

	return ovl_fleet_version_check(s, v, err, sizeof(err));
}

void ovl_fleet_version_format(uint64_t v, char out[OVL_FLEET_VERSION_BYTES])
{
	snprintf(out, OVL_FLEET_VERSION_BYTES, "%u.%u.%u", (unsigned)((v >> 32) & 0xffff),
		 (unsigned)((v >> 16) & 0xffff), (unsigned)(v & 0xffff));
}

const char *ovl_fleet_build_version(void)
{
	return SHELF_VERSION;
}

bool ovl_fleet_board_ok(const char *name)
{
	size_t n = strnlen(name, OVL_FLEET_BOARD_BYTES);

	if (n == 0 || n >= OVL_FLEET_BOARD_BYTES || name[0] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

/* "2026-01-02T03:04:05Z" */
static void fmt_time(uint64_t t, char *out, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (t > (uint64_t)INT64_MAX / 2 || !gmtime_r(&tt, &tm) ||
	    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, len, "%" PRIu64, t);
}

/* ---- trust ------------------------------------------------------------- */

int ovl_fleet_release_cert_verify(struct ovl_cert *rc, const uint8_t *buf, size_t len,
				  const struct ovl_trust *trust, uint64_t now, char *err,
				  size_t errlen)
{
	char why[384], fp[OVL_ID_FP_BYTES];
	uint8_t keyid[OVL_KEYID_BYTES];
	int ret;

	ret = ovl_cert_verify(rc, buf, len, trust->ca_pk, now, why, sizeof(why));
	if (ret == -EKEYREJECTED) {
		ovl_keyid_compute(trust->ca_pk, keyid);
		ovl_keyid_format(keyid, fp);
		snprintf(err, errlen, "release key is not certified by this site's CA %s: %s", fp, why);
		goto out;
	}
	if (ret < 0) {
		snprintf(err, errlen, "release %s", why);
		goto out;
	}
	if (rc->role != OVL_ROLE_RELEASE) {
		snprintf(err, errlen,
			 "release certificate serial %llu has role '%s'; only a certificate of role 'release' may sign releases",
			 (unsigned long long)rc->serial, ovl_role_name(rc->role));
		ret = -EPERM;
		goto out;
	}
	for (size_t i = 0; i < trust->ncrls; i++) {
		const struct ovl_crl *crl = trust->crls[i];

		if (crl && memcmp(ovl_crl_issuer_pk(crl), trust->ca_pk, OVL_ID_BYTES) == 0 &&
		    ovl_crl_is_revoked(crl, rc->serial)) {
			snprintf(err, errlen,
				 "release certificate serial %llu is revoked (revocation list version %llu)",
				 (unsigned long long)rc->serial,
				 (unsigned long long)ovl_crl_version(crl));
			ret = -EKEYREVOKED;
			goto out;
		}
	}
	ret = 0;
out:
	if (ret < 0)
		memset(rc, 0, sizeof(*rc));
	return ret;
}

/* ---- 3.1 release metadata ------------------------------------------------ */

#define RELEASE_FIELDS 12
static const char *const release_keys[RELEASE_FIELDS] = {
	"v", "version", "board", "size", "sha256", "block_size", "blocks",
	"min_from", "expires", "rollback", "issued", "key",
};

static const struct ovl_mp_limits release_body_limits = {
	.max_depth = 2,
	.max_bytes = OVL_FLEET_META_MAX_BYTES,
	.max_elems = 1 + 2 * RELEASE_FIELDS + OVL_FLEET_BLOCKS_MAX + 8,
	.max_str = 255,
};

uint32_t ovl_fleet_block_size_for(uint64_t size)
{
	uint64_t bs = OVL_FLEET_BLOCK_MIN_BYTES;

	if (size == 0 || size > OVL_FLEET_SIZE_MAX_BYTES)
		return 0;
	while ((size + bs - 1) / bs > OVL_FLEET_BLOCKS_MAX)
		bs <<= 1;
	return (uint32_t)bs;
}

uint64_t ovl_fleet_block_len(const struct ovl_fleet_release *r, uint32_t i)
{
	uint64_t off;

	if (i >= r->nblocks || r->block_size == 0)
		return 0;
	off = (uint64_t)i * r->block_size;
	return r->size - off < r->block_size ? r->size - off : r->block_size;
}

static void pack_cstr(msgpack_packer *pk, const char *s)
{
	msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* The checks shared by sign and decode (everything but the encoding). */
static int release_check(const struct ovl_fleet_release *r, uint64_t *vnum, uint64_t *mnum,
			 char *err, size_t errlen)
{
	char why[160];
	uint64_t want;

	if (ovl_fleet_version_check(r->version, vnum, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "release metadata: %s", why);
		return -EINVAL;
	}
	if (ovl_fleet_version_check(r->min_from, mnum, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "release metadata: min_from: %s", why);
		return -EINVAL;
	}
	if (!ovl_fleet_board_ok(r->board)) {
		snprintf(err, errlen,
			 "release metadata: board must be 1 to %d of [A-Za-z0-9._-], not starting with '.'",
			 OVL_FLEET_BOARD_BYTES - 1);
		return -EINVAL;
	}
	if (r->size == 0 || r->size > OVL_FLEET_SIZE_MAX_BYTES) {
		snprintf(err, errlen, "release metadata: payload size %" PRIu64 " is not 1 byte to 64 GiB",
			 r->size);
		return -EINVAL;
	}
	if (r->block_size < OVL_FLEET_BLOCK_MIN_BYTES || r->block_size > OVL_FLEET_BLOCK_MAX_BYTES ||
	    (r->block_size & (r->block_size - 1)) != 0) {
		snprintf(err, errlen,
			 "release metadata: block size %u is not a power of two from 1 MiB to 64 MiB",
			 r->block_size);
		return -EINVAL;
	}
	want = (r->size + r->block_size - 1) / r->block_size;
	if (want > OVL_FLEET_BLOCKS_MAX) {
		snprintf(err, errlen,
			 "release metadata: %" PRIu64 " bytes in blocks of %u make %" PRIu64
			 " blocks; at most %d are allowed",
			 r->size, r->block_size, want, OVL_FLEET_BLOCKS_MAX);
		return -E2BIG;
	}
	if (r->nblocks != want) {
		snprintf(err, errlen,
			 "release metadata: %u block hashes for %" PRIu64 " bytes in blocks of %u (want %" PRIu64 ")",
			 r->nblocks, r->size, r->block_size, want);
		return -EINVAL;
	}
	if (!r->blocks) {
		snprintf(err, errlen, "release metadata: no block hashes");
		return -EINVAL;
	}
	return 0;
}

static void release_pack(msgpack_packer *pk, const struct ovl_fleet_release *r,
			 const uint8_t key[32])
{
	msgpack_pack_map(pk, RELEASE_FIELDS);
	pack_cstr(pk, "v");
	msgpack_pack_uint64(pk, OVL_FLEET_RELEASE_FORMAT);
	pack_cstr(pk, "version");
	pack_cstr(pk, r->version);
	pack_cstr(pk, "board");
	pack_cstr(pk, r->board);
	pack_cstr(pk, "size");
	msgpack_pack_uint64(pk, r->size);
	pack_cstr(pk, "sha256");
	msgpack_pack_bin_with_body(pk, r->sha256, 32);
	pack_cstr(pk, "block_size");
	msgpack_pack_uint64(pk, r->block_size);
	pack_cstr(pk, "blocks");
	msgpack_pack_array(pk, r->nblocks);
	for (uint32_t i = 0; i < r->nblocks; i++)
		msgpack_pack_bin_with_body(pk, r->blocks[i], 32);
	pack_cstr(pk, "min_from");
	pack_cstr(pk, r->min_from);
	pack_cstr(pk, "expires");
	msgpack_pack_uint64(pk, r->expires);
	pack_cstr(pk, "rollback");
	if (r->rollback)
		msgpack_pack_true(pk);
	else
		msgpack_pack_false(pk);
	pack_cstr(pk, "issued");
	msgpack_pack_uint64(pk, r->issued);
	pack_cstr(pk, "key");
	msgpack_pack_bin_with_body(pk, key, 32);
}

/* Seal body[0..len) under domain into a new buffer of at most max bytes. */
static int seal_new(const uint8_t *body, size_t len, const char *domain, const uint8_t sk[64],
		    size_t max, uint8_t **out, size_t *outlen, const char *what, char *err,
		    size_t errlen)
{
	uint8_t *buf = malloc(max);
	int ret;

	if (!buf) {
		snprintf(err, errlen, "%s: out of memory", what);
		return -ENOMEM;
	}
	ret = ovl_signed_seal(body, len, domain, sk, buf, max);
	if (ret < 0) {
		snprintf(err, errlen, ret == -E2BIG ? "%s: encoding is larger than %zu bytes"
						    : "%s: cannot sign (%zu)", what, max);
		free(buf);
		return ret;
	}
	*out = buf;
	*outlen = (size_t)ret;
	return 0;
}

int ovl_fleet_release_sign(const struct ovl_fleet_release *r,
			   const uint8_t release_sk[OVL_ID_SIGN_SK_BYTES], uint8_t **out,
			   size_t *outlen, char *err, size_t errlen)
{
	uint8_t *buf = NULL;
	uint8_t pk[32];
	struct ovl_signed_buf b = { 0 };
	msgpack_packer packer;
	uint64_t vnum, mnum;
	int ret;

	*out = NULL;
	*outlen = 0;
	ret = release_check(r, &vnum, &mnum, err, errlen);
	if (ret < 0)
		goto out;
	buf = malloc(OVL_FLEET_META_MAX_BYTES);
	if (!buf) {
		ret = -ENOMEM;
		snprintf(err, errlen, "release metadata: out of memory");
		goto out;
	}
	crypto_sign_ed25519_sk_to_pk(pk, release_sk);
	b.p = buf;
	b.cap = OVL_FLEET_META_MAX_BYTES - OVL_SIGNED_OVERHEAD_BYTES;
	msgpack_packer_init(&packer, &b, ovl_signed_buf_write);
	release_pack(&packer, r, pk);
	if (b.fail) {
		snprintf(err, errlen, "release metadata: encoding is larger than %d bytes",
			 OVL_FLEET_META_MAX_BYTES);
		ret = -E2BIG;
		goto out;
	}
	ret = seal_new(buf, b.len, OVL_FLEET_RELEASE_DOMAIN, release_sk, OVL_FLEET_META_MAX_BYTES, out,
		       outlen, "release metadata", err, errlen);
	if (ret < 0)
		goto out;
	ret = 0;
out:
	free(buf);
	return ret;
}

void ovl_fleet_release_id(const uint8_t *meta, size_t meta_len, uint8_t id[32])
{
	crypto_hash_sha256(id, meta, meta_len);
}

void ovl_fleet_release_free(struct ovl_fleet_release *r)
{
	free(r->blocks);
	memset(r, 0, sizeof(*r));
}

static int get_bool(const msgpack_object *o, bool *v, const char *what, const char *field,
		    char *err, size_t errlen)
{
	if (o->type != MSGPACK_OBJECT_BOOLEAN) {
		snprintf(err, errlen, "%s: '%s' is not a boolean", what, field);
		return -EBADMSG;
	}
	*v = o->via.boolean;
	return 0;
}

static int get_u32(const msgpack_object *o, uint32_t *v, const char *what, const char *field,
		   char *err, size_t errlen)
{
	uint64_t u = 0;
	int ret = ovl_signed_get_uint(o, &u, what, field, err, errlen);

	if (ret < 0)
		return ret;
	if (u > UINT32_MAX) {
		snprintf(err, errlen, "%s: '%s' is larger than 32 bits", what, field);
		return -EBADMSG;
	}
	*v = (uint32_t)u;
	return 0;
}

/* Decode the body of an opened envelope into r (the signature is the
 * caller's). */
static int release_decode_body(struct ovl_fleet_release *r, const struct ovl_signed *env,
			       char *err, size_t errlen)
{
	static const char what[] = "release metadata";
	const msgpack_object *f[RELEASE_FIELDS];
	msgpack_unpacked up;
	struct ovl_signed_buf cmp = { 0 };
	msgpack_packer packer;
	uint64_t vnum = 0, mnum = 0;
	const msgpack_object *bl;
	int ret;

	msgpack_unpacked_init(&up);
	ret = ovl_signed_unpack(&up, env->body, env->body_len, &release_body_limits,
				OVL_FLEET_RELEASE_FORMAT, RELEASE_FIELDS, what, err, errlen);
	if (ret < 0)
		goto out;
	for (unsigned i = 0; i < RELEASE_FIELDS; i++) {
		f[i] = ovl_signed_field(&up.data, i, release_keys[i], what, err, errlen);
		if (!f[i]) {
			ret = -EBADMSG;
			goto out;
		}
	}
	ret = ovl_signed_get_str(f[1], r->version, sizeof(r->version), 1, what, "version", err, errlen);
	if (ret == 0)
		ret = ovl_signed_get_str(f[2], r->board, sizeof(r->board), 1, what, "board", err, errlen);
	if (ret == 0)
		ret = ovl_signed_get_uint(f[3], &r->size, what, "size", err, errlen);
	if (ret == 0)
		ret = ovl_signed_get_bin(f[4], r->sha256, 32, what, "sha256", err, errlen);
	if (ret == 0)
		ret = get_u32(f[5], &r->block_size, what, "block_size", err, errlen);
	if (ret < 0)
		goto out;
	bl = f[6];
	if (bl->type != MSGPACK_OBJECT_ARRAY) {
		snprintf(err, errlen, "%s: 'blocks' is not an array", what);
		ret = -EBADMSG;
		goto out;
	}
	if (bl->via.array.size > OVL_FLEET_BLOCKS_MAX) {
		snprintf(err, errlen, "%s: 'blocks' lists %u hashes; at most %d are allowed", what,
			 bl->via.array.size, OVL_FLEET_BLOCKS_MAX);
		ret = -E2BIG;
		goto out;
	}
	r->nblocks = bl->via.array.size;
	r->blocks = calloc(r->nblocks ? r->nblocks : 1, 32);
	if (!r->blocks) {
		snprintf(err, errlen, "%s: out of memory", what);
		ret = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < r->nblocks && ret == 0; i++)
		ret = ovl_signed_get_bin(&bl->via.array.ptr[i], r->blocks[i], 32, what, "blocks[]", err,
					 errlen);
	if (ret == 0)
		ret = ovl_signed_get_str(f[7], r->min_from, sizeof(r->min_from), 1, what, "min_from",
					 err, errlen);
	if (ret == 0)
		ret = ovl_signed_get_uint(f[8], &r->expires, what, "expires", err, errlen);
	if (ret == 0)
		ret = get_bool(f[9], &r->rollback, what, "rollback", err, errlen);
	if (ret == 0)
		ret = ovl_signed_get_uint(f[10], &r->issued, what, "issued", err, errlen);
	if (ret == 0)
		ret = ovl_signed_get_bin(f[11], r->key, 32, what, "key", err, errlen);
	if (ret < 0) {
		ret = ret == -E2BIG ? -EBADMSG : ret;
		goto out;
	}
	ret = release_check(r, &vnum, &mnum, err, errlen);
	if (ret < 0) {
		ret = ret == -EINVAL ? -EBADMSG : ret;
		goto out;
	}
	r->version_num = vnum;
	r->min_from_num = mnum;
	/* one release, one byte string: re-encode and compare */
	cmp.want = env->body;
	cmp.cap = env->body_len;
	msgpack_packer_init(&packer, &cmp, ovl_signed_buf_write);
	release_pack(&packer, r, r->key);
	if (cmp.fail || cmp.len != env->body_len) {
		snprintf(err, errlen, "%s: body is not in canonical encoding", what);
		ret = -EBADMSG;
		goto out;
	}
	ret = 0;
out:
	msgpack_unpacked_destroy(&up);
	if (ret < 0)
		ovl_fleet_release_free(r);
	return ret;
}

int ovl_fleet_release_decode(struct ovl_fleet_release *r, const uint8_t *meta, size_t meta_len,
			     char *err, size_t errlen)
{
	struct ovl_signed env;
	int ret;

	memset(r, 0, sizeof(*r));
	ret = ovl_signed_open(&env, meta, meta_len, OVL_FLEET_META_MAX_BYTES, "release metadata",
			      err, errlen);
	if (ret < 0)
		return ret;
	ret = release_decode_body(r, &env, err, errlen);
	if (ret == 0)
		ovl_fleet_release_id(meta, meta_len, r->id);
	return ret;
}

int ovl_fleet_release_verify(struct ovl_fleet_release *r, const uint8_t *meta, size_t meta_len,
			     const uint8_t *rc_buf, size_t rc_len, const struct ovl_trust *trust,
			     uint64_t now, const char *want_board, const char *running, char *err,
			     size_t errlen)
{
	struct ovl_cert rc;
	struct ovl_signed env;
	char fp[OVL_ID_FP_BYTES], t1[32], t2[32], why[160];
	uint8_t keyid[OVL_KEYID_BYTES];
	uint64_t run = 0;
	int ret;

	memset(r, 0, sizeof(*r));
	ret = ovl_fleet_release_cert_verify(&rc, rc_buf, rc_len, trust, now, err, errlen);
	if (ret < 0)
		return ret;
	ret = ovl_signed_open(&env, meta, meta_len, OVL_FLEET_META_MAX_BYTES, "release metadata",
			      err, errlen);
	if (ret < 0)
		goto out;
	ret = ovl_signed_verify(&env, OVL_FLEET_RELEASE_DOMAIN, rc.sign_pk);
	if (ret < 0) {
		ovl_nodeid_fingerprint(rc.sign_pk, fp);
		if (ret == -EKEYREJECTED)
			snprintf(err, errlen,
				 "release metadata: signature does not verify under the release key %s (serial %llu)",
				 fp, (unsigned long long)rc.serial);
		else
			snprintf(err, errlen, "release metadata: %s", strerror(-ret));
		goto out;
	}
	ret = release_decode_body(r, &env, err, errlen);
	if (ret < 0)
		goto out;
	ovl_fleet_release_id(meta, meta_len, r->id);
	if (memcmp(r->key, rc.sign_pk, 32) != 0) {
		ovl_keyid_compute(r->key, keyid);
		ovl_keyid_format(keyid, fp);
		snprintf(err, errlen,
			 "release metadata names release key %s, not the certified key of release certificate serial %llu",
			 fp, (unsigned long long)rc.serial);
		ret = -EKEYREJECTED;
		goto out;
	}
	if (want_board && strcmp(r->board, want_board) != 0) {
		snprintf(err, errlen, "release %s is an image for board '%s', this is '%s'", r->version,
			 r->board, want_board);
		ret = -EXDEV;
		goto out;
	}
	if (now > r->expires) {
		fmt_time(r->expires, t1, sizeof(t1));
		fmt_time(now, t2, sizeof(t2));
		snprintf(err, errlen, "release metadata of %s expired at %s (now %s)", r->version, t1, t2);
		ret = -EKEYEXPIRED;
		goto out;
	}
	if (running) {
		if (ovl_fleet_version_check(running, &run, why, sizeof(why)) < 0) {
			snprintf(err, errlen, "running %s", why);
			ret = -EINVAL;
			goto out;
		}
		if (r->version_num < run && !r->rollback) {
			snprintf(err, errlen,
				 "version %s is lower than the running %s, and the release does not allow a rollback",
				 r->version, running);
			ret = -ERANGE;
			goto out;
		}
		if (run < r->min_from_num) {
			snprintf(err, errlen,
				 "release %s upgrades only from %s or later; this runs %s", r->version,
				 r->min_from, running);
			ret = -ERANGE;
			goto out;
		}
	}
	ret = 0;
out:
	if (ret < 0)
		ovl_fleet_release_free(r);
	return ret;
}

int ovl_fleet_block_check(const struct ovl_fleet_release *r, uint32_t i, const uint8_t *data,
			  size_t len, char *err, size_t errlen)
{
	uint8_t h[32];

	if (i >= r->nblocks) {
		snprintf(err, errlen, "release %s has %u blocks; there is no block %u", r->version,
			 r->nblocks, i);
		return -EBADMSG;
	}
	if ((uint64_t)len != ovl_fleet_block_len(r, i)) {
		snprintf(err, errlen, "block %u of release %s is %zu bytes, not %" PRIu64, i, r->version,
			 len, ovl_fleet_block_len(r, i));
		return -EBADMSG;
	}
	crypto_hash_sha256(h, data, len);
	if (sodium_memcmp(h, r->blocks[i], 32) != 0) {
		snprintf(err, errlen, "block %u of release %s does not verify", i, r->version);
		return -EBADMSG;
	}
	return 0;
}

/* ---- 3.2 the image file -------------------------------------------------- */

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

void ovl_fleet_image_fixed(uint8_t out[OVL_FLEET_IMAGE_FIXED_BYTES], uint32_t meta_len,
			   uint32_t cert_len)
{
	memcpy(out, OVL_FLEET_IMAGE_MAGIC, OVL_FLEET_IMAGE_MAGIC_BYTES);
	put_le32(out + 8, OVL_FLEET_IMAGE_FORMAT);
	put_le32(out + 12, meta_len);
	put_le32(out + 16, cert_len);
	put_le32(out + 20, 0);
}

int ovl_fleet_image_parse(const uint8_t *head, size_t head_len, struct ovl_fleet_image_head *h,
			  char *err, size_t errlen)
{
	uint32_t meta_len, cert_len;

	memset(h, 0, sizeof(*h));
	if (head_len < OVL_FLEET_IMAGE_FIXED_BYTES) {
		if (head_len < OVL_FLEET_IMAGE_MAGIC_BYTES ? memcmp(head, OVL_FLEET_IMAGE_MAGIC, head_len)
							  : memcmp(head, OVL_FLEET_IMAGE_MAGIC,
								   OVL_FLEET_IMAGE_MAGIC_BYTES)) {
			snprintf(err, errlen, "not a shelf image (no SHIMG magic)");
			return -EBADMSG;
		}
		h->head_len = OVL_FLEET_IMAGE_FIXED_BYTES;
		snprintf(err, errlen, "image head is truncated: %zu bytes, the fixed part is %d", head_len,
			 OVL_FLEET_IMAGE_FIXED_BYTES);
		return -ENODATA;
	}
	if (memcmp(head, OVL_FLEET_IMAGE_MAGIC, OVL_FLEET_IMAGE_MAGIC_BYTES) != 0) {
		snprintf(err, errlen, "not a shelf image (no SHIMG magic)");
		return -EBADMSG;
	}
	h->format = le32(head + 8);
	if (h->format != OVL_FLEET_IMAGE_FORMAT) {
		snprintf(err, errlen, "image format %u is not supported (expected %d)", h->format,
			 OVL_FLEET_IMAGE_FORMAT);
		return -EPROTONOSUPPORT;
	}
	meta_len = le32(head + 12);
	cert_len = le32(head + 16);
	if (meta_len == 0 || meta_len > OVL_FLEET_META_MAX_BYTES) {
		snprintf(err, errlen, "image head: metadata length %u is not 1 to %d bytes", meta_len,
			 OVL_FLEET_META_MAX_BYTES);
		return -EBADMSG;
	}
	if (cert_len == 0 || cert_len > OVL_CERT_MAX_BYTES) {
		snprintf(err, errlen, "image head: certificate length %u is not 1 to %d bytes", cert_len,
			 OVL_CERT_MAX_BYTES);
		return -EBADMSG;
	}
	if (le32(head + 20) != 0) {
		snprintf(err, errlen, "image head: reserved word is not zero");
		return -EBADMSG;
	}
	h->meta_off = OVL_FLEET_IMAGE_FIXED_BYTES;
	h->cert_off = h->meta_off + meta_len;
	h->head_len = h->cert_off + cert_len;
	h->meta_len = meta_len;
	h->cert_len = cert_len;
	if (head_len < h->head_len) {
		snprintf(err, errlen, "image head is truncated: %zu bytes of %" PRIu64, head_len,
			 h->head_len);
		return -ENODATA;
	}
	h->meta = head + h->meta_off;
	h->cert = head + h->cert_off;
	return 0;
}

static int pread_full(int fd, uint8_t *buf, size_t len, uint64_t off, size_t *got)
{
	*got = 0;
	while (*got < len) {
		ssize_t n = pread(fd, buf + *got, len - *got, (off_t)(off + *got));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		*got += (size_t)n;
	}
	return 0;
}

int ovl_fleet_image_read_head(int fd, uint8_t **buf, struct ovl_fleet_image_head *h, char *err,
			      size_t errlen)
{
	uint8_t fixed[OVL_FLEET_IMAGE_FIXED_BYTES];
	uint8_t *b = NULL;
	size_t got = 0;
	int ret;

	*buf = NULL;
	memset(h, 0, sizeof(*h));
	ret = pread_full(fd, fixed, sizeof(fixed), 0, &got);
	if (ret < 0) {
		snprintf(err, errlen, "cannot read the image: %s", strerror(-ret));
		goto out;
	}
	ret = ovl_fleet_image_parse(fixed, got, h, err, errlen);
	if (ret == 0 || ret != -ENODATA || h->head_len <= got) {
		if (ret == -ENODATA)
			snprintf(err, errlen, "image is truncated: %zu bytes, shorter than its head", got);
		if (ret == 0) /* impossible: meta_len >= 1 */
			ret = -EBADMSG;
		goto out;
	}
	b = malloc(h->head_len);
	if (!b) {
		snprintf(err, errlen, "cannot read the image head: out of memory");
		ret = -ENOMEM;
		goto out;
	}
	ret = pread_full(fd, b, h->head_len, 0, &got);
	if (ret < 0) {
		snprintf(err, errlen, "cannot read the image: %s", strerror(-ret));
		goto out;
	}
	ret = ovl_fleet_image_parse(b, got, h, err, errlen);
	if (ret == -ENODATA)
		snprintf(err, errlen, "image is truncated: %zu bytes, its head says %" PRIu64, got,
			 h->head_len);
	if (ret < 0)
		goto out;
	*buf = b;
	b = NULL;
out:
	free(b);
	return ret;
}

/* ---- 3.4 block keys --------------------------------------------------------- */

void ovl_fleet_block_key(uint8_t key[OVL_FLEET_BLOCK_KEY_BYTES], const uint8_t id[32], uint32_t i)
{
	memset(key, OVL_LARGE_PREFIX_BYTE, 8);
	key[8] = OVL_FLEET_BLOCK_KEY_TAG;
	memcpy(key + 9, id, 32);
	key[41] = (uint8_t)(i >> 24);
	key[42] = (uint8_t)(i >> 16);
	key[43] = (uint8_t)(i >> 8);
	key[44] = (uint8_t)i;
}

bool ovl_fleet_is_block_key(const uint8_t *key, size_t len)
{
	if (len != OVL_FLEET_BLOCK_KEY_BYTES || key[8] != OVL_FLEET_BLOCK_KEY_TAG)
		return false;
	for (int i = 0; i < 8; i++)
		if (key[i] != OVL_LARGE_PREFIX_BYTE)
			return false;
	return true;
}

/* ---- 3.5 the assignment -------------------------------------------------- */

#define ASSIGN_FIELDS 10
static const char *const assign_keys[ASSIGN_FIELDS] = {
	"v", "node", "seq", "issued", "valid", "action", "release", "cert", "slice", "rate",
};

static const struct ovl_mp_limits assign_body_limits = {
	.max_depth = 1,
	.max_bytes = OVL_FLEET_ASSIGN_MAX_BYTES,
	.max_elems = 1 + 2 * ASSIGN_FIELDS,
	.max_str = OVL_FLEET_META_MAX_BYTES,
};

const char *ovl_fleet_action_name(uint8_t action)
{
	static const char *const names[] = { "stay", "fetch", "restart", "rollback" };

	return action < 4 ? names[action] : NULL;
}

static int assign_check(const struct ovl_fleet_assign *a, char *err, size_t errlen)
{
	if (!ovl_fleet_action_name(a->action)) {
		snprintf(err, errlen, "assignment: unknown action %u", a->action);
		return -EINVAL;
	}
	if (!ovl_signed_name_ok(a->slice, sizeof(a->slice), 0)) {
		snprintf(err, errlen, "assignment: slice must be at most %zu printable ASCII characters",
			 sizeof(a->slice) - 1);
		return -EINVAL;
	}
	if (a->release_len > OVL_FLEET_META_MAX_BYTES || a->cert_len > OVL_CERT_MAX_BYTES) {
		snprintf(err, errlen, "assignment: release or certificate is too large");
		return -E2BIG;
	}
	if (a->action == OVL_FLEET_ACTION_FETCH || a->action == OVL_FLEET_ACTION_RESTART) {
		if (a->release_len == 0 || a->cert_len == 0 || a->slice[0] == '\0') {
			snprintf(err, errlen, "assignment: action %s needs a release, its certificate and a slice",
				 ovl_fleet_action_name(a->action));
			return -EINVAL;
		}
	}
	return 0;
}

static void assign_pack(msgpack_packer *pk, const struct ovl_fleet_assign *a)
{
	msgpack_pack_map(pk, ASSIGN_FIELDS);
	pack_cstr(pk, "v");
	msgpack_pack_uint64(pk, OVL_FLEET_ASSIGN_FORMAT);
	pack_cstr(pk, "node");
	msgpack_pack_bin_with_body(pk, a->node, 32);
	pack_cstr(pk, "seq");
	msgpack_pack_uint64(pk, a->seq);
	pack_cstr(pk, "issued");
	msgpack_pack_uint64(pk, a->issued);
	pack_cstr(pk, "valid");
	msgpack_pack_uint64(pk, a->valid);
	pack_cstr(pk, "action");
	msgpack_pack_uint64(pk, a->action);
	pack_cstr(pk, "release");
	msgpack_pack_bin_with_body(pk, a->release_len ? a->release : (const uint8_t *)"",
				   a->release_len);
	pack_cstr(pk, "cert");
	msgpack_pack_bin_with_body(pk, a->cert_len ? a->cert : (const uint8_t *)"", a->cert_len);
	pack_cstr(pk, "slice");
	pack_cstr(pk, a->slice);
	pack_cstr(pk, "rate");
	msgpack_pack_uint64(pk, a->rate);
}

int ovl_fleet_assign_sign(const struct ovl_fleet_assign *a, const uint8_t broker_sk[64],
			  uint8_t **out, size_t *outlen, char *err, size_t errlen)
{
	uint8_t *buf = NULL;
	struct ovl_signed_buf b = { 0 };
	msgpack_packer packer;
	int ret;

	*out = NULL;
	*outlen = 0;
	ret = assign_check(a, err, errlen);
	if (ret < 0)
		goto out;
	buf = malloc(OVL_FLEET_ASSIGN_MAX_BYTES);
	if (!buf) {
		snprintf(err, errlen, "assignment: out of memory");
		ret = -ENOMEM;
		goto out;
	}
	b.p = buf;
	b.cap = OVL_FLEET_ASSIGN_MAX_BYTES - OVL_SIGNED_OVERHEAD_BYTES;
	msgpack_packer_init(&packer, &b, ovl_signed_buf_write);
	assign_pack(&packer, a);
	if (b.fail) {
		snprintf(err, errlen, "assignment: encoding is larger than %d bytes",
			 OVL_FLEET_ASSIGN_MAX_BYTES);
		ret = -E2BIG;
		goto out;
	}
	ret = seal_new(buf, b.len, OVL_FLEET_ASSIGN_DOMAIN, broker_sk, OVL_FLEET_ASSIGN_MAX_BYTES, out,
		       outlen, "assignment", err, errlen);
	if (ret < 0)
		goto out;
	ret = 0;
out:
	free(buf);
	return ret;
}

int ovl_fleet_assign_verify(struct ovl_fleet_assign *a, const uint8_t *buf, size_t len,
			    const uint8_t broker_pk[32], char *err, size_t errlen)
{
	static const char what[] = "assignment";
	const msgpack_object *f[ASSIGN_FIELDS];
	struct ovl_signed env;
	msgpack_unpacked up;
	struct ovl_signed_buf cmp = { 0 };
	msgpack_packer packer;
	uint64_t action = 0;
	int ret;

	memset(a, 0, sizeof(*a));
	msgpack_unpacked_init(&up);
	ret = ovl_signed_open(&env, buf, len, OVL_FLEET_ASSIGN_MAX_BYTES, what, err, errlen);
	if (ret < 0)
		goto out;
	ret = ovl_signed_verify(&env, OVL_FLEET_ASSIGN_DOMAIN, broker_pk);
	if (ret < 0) {
		snprintf(err, errlen, "assignment: signature does not verify under the broker's key");
		goto out;
	}
	ret = ovl_signed_unpack(&up, env.body, env.body_len, &assign_body_limits,
				OVL_FLEET_ASSIGN_FORMAT, ASSIGN_FIELDS, what, err, errlen);
	if (ret < 0)
		goto out;
	for (unsigned i = 0; i < ASSIGN_FIELDS; i++) {
		f[i] = ovl_signed_field(&up.data, i, assign_keys[i], what, err, errlen);
		if (!f[i]) {
			ret = -EBADMSG;
			goto out;
		}
	}
	ret = ovl_signed_get_bin(f[1], a->node, 32, what, "node", err, errlen);
	if (ret == 0)
		ret = ovl_signed_get_uint(f[2], &a->seq, what, "seq", err, errlen);
	if (ret == 0)
		ret = ovl_signed_get_uint(f[3], &a->issued, what, "issued", err, errlen);
	if (ret == 0)
		ret = get_u32(f[4], &a->valid, what, "valid", err, errlen);
	if (ret == 0)
		ret = ovl_signed_get_uint(f[5], &action, what, "action", err, errlen);
	if (ret < 0)
		goto out;
	if (action > 255) {
		snprintf(err, errlen, "assignment: unknown action %" PRIu64, action);
		ret = -EBADMSG;
		goto out;
	}
	a->action = (uint8_t)action;
	if (f[6]->type != MSGPACK_OBJECT_BIN || f[7]->type != MSGPACK_OBJECT_BIN) {
		snprintf(err, errlen, "assignment: 'release' or 'cert' is not a bin");
		ret = -EBADMSG;
		goto out;
	}
	/* msgpack-c's objects point into buf (no zone copy for bin) */
	a->release = (const uint8_t *)f[6]->via.bin.ptr;
	a->release_len = f[6]->via.bin.size;
	a->cert = (const uint8_t *)f[7]->via.bin.ptr;
	a->cert_len = f[7]->via.bin.size;
	if (a->release_len == 0)
		a->release = NULL;
	if (a->cert_len == 0)
		a->cert = NULL;
	ret = ovl_signed_get_str(f[8], a->slice, sizeof(a->slice), 0, what, "slice", err, errlen);
	if (ret == 0)
		ret = ovl_signed_get_uint(f[9], &a->rate, what, "rate", err, errlen);
	if (ret < 0) {
		ret = ret == -E2BIG ? -EBADMSG : ret;
		goto out;
	}
	ret = assign_check(a, err, errlen);
	if (ret < 0) {
		ret = ret == -EINVAL ? -EBADMSG : ret;
		goto out;
	}
	cmp.want = env.body;
	cmp.cap = env.body_len;
	msgpack_packer_init(&packer, &cmp, ovl_signed_buf_write);
	assign_pack(&packer, a);
	if (cmp.fail || cmp.len != env.body_len) {
		snprintf(err, errlen, "%s: body is not in canonical encoding", what);
		ret = -EBADMSG;
		goto out;
	}
	ret = 0;
out:
	msgpack_unpacked_destroy(&up);
	if (ret < 0)
		memset(a, 0, sizeof(*a));
	return ret;
}

int ovl_fleet_assign_fresh(const struct ovl_fleet_assign *a, uint64_t now, char *err,
			   size_t errlen)
{
	char t1[32], t2[32];

	fmt_time(a->issued, t1, sizeof(t1));
	fmt_time(now, t2, sizeof(t2));
	if (a->issued > now + OVL_FLEET_ASSIGN_SKEW_S) {
		snprintf(err, errlen, "assignment %" PRIu64 " was issued at %s, in the future (now %s)",
			 a->seq, t1, t2);
		return -ESTALE;
	}
	if (now > a->issued + a->valid) {
		snprintf(err, errlen,
			 "assignment %" PRIu64 " issued at %s was valid for %u s and has expired (now %s)",
			 a->seq, t1, a->valid, t2);
		return -ESTALE;
	}
	return 0;
}

/* ---- 3.6 the report ------------------------------------------------------ */

#define REPORT_FIELDS 13
static const char *const report_keys[REPORT_FIELDS] = {
	"v", "running", "slot", "board", "state", "target", "seq",
	"done", "total", "reason", "degraded", "other", "other_good",
};

static const struct ovl_mp_limits report_limits = {
	.max_depth = 2, /* a later field may be a container */
	.max_bytes = OVL_FLEET_ASSIGN_MAX_BYTES,
	.max_elems = 1024,
	.max_str = 4096,
};

static const char *const state_names[OVL_FLEET_STATES] = {
	"idle", "fetching", "installed", "restarting", "healthy", "failed", "rolled_back",
};

const char *ovl_fleet_state_name(uint8_t state)
{
	return state < OVL_FLEET_STATES ? state_names[state] : NULL;
}

int ovl_fleet_report_encode(const struct ovl_fleet_report *r, uint8_t *out, size_t cap)
{
	struct ovl_signed_buf b = { .p = out, .cap = cap };
	msgpack_packer pk;

	if (!ovl_signed_name_ok(r->running, sizeof(r->running), 0) ||
	    !ovl_signed_name_ok(r->slot, sizeof(r->slot), 0) ||
	    !ovl_signed_name_ok(r->board, sizeof(r->board), 0) ||
	    !ovl_signed_name_ok(r->target, sizeof(r->target), 0) ||
	    !ovl_signed_name_ok(r->other, sizeof(r->other), 0) ||
	    !ovl_signed_name_ok(r->reason, sizeof(r->reason), 0) || !ovl_fleet_state_name(r->state))
		return -EINVAL;
	msgpack_packer_init(&pk, &b, ovl_signed_buf_write);
	msgpack_pack_map(&pk, REPORT_FIELDS);
	pack_cstr(&pk, "v");
	msgpack_pack_uint64(&pk, OVL_FLEET_REPORT_FORMAT);
	pack_cstr(&pk, "running");
	pack_cstr(&pk, r->running);
	pack_cstr(&pk, "slot");
	pack_cstr(&pk, r->slot);
	pack_cstr(&pk, "board");
	pack_cstr(&pk, r->board);
	pack_cstr(&pk, "state");
	msgpack_pack_uint64(&pk, r->state);
	pack_cstr(&pk, "target");
	pack_cstr(&pk, r->target);
	pack_cstr(&pk, "seq");
	msgpack_pack_uint64(&pk, r->seq);
	pack_cstr(&pk, "done");
	msgpack_pack_uint64(&pk, r->done);
	pack_cstr(&pk, "total");
	msgpack_pack_uint64(&pk, r->total);
	pack_cstr(&pk, "reason");
	pack_cstr(&pk, r->reason);
	pack_cstr(&pk, "degraded");
	msgpack_pack_uint64(&pk, r->degraded);
	pack_cstr(&pk, "other");
	pack_cstr(&pk, r->other);
	pack_cstr(&pk, "other_good");
	if (r->other_good)
		msgpack_pack_true(&pk);
	else
		msgpack_pack_false(&pk);
	if (b.fail)
		return -E2BIG;
	return (int)b.len;
}

int ovl_fleet_report_decode(struct ovl_fleet_report *r, const uint8_t *buf, size_t len,
			    char *err, size_t errlen)
{
	static const char what[] = "fleet report";
	const msgpack_object *f[REPORT_FIELDS];
	msgpack_unpacked up;
	char why[160];
	size_t used = 0, off = 0;
	uint64_t u = 0;
	int ret;

	memset(r, 0, sizeof(*r));
	msgpack_unpacked_init(&up);
	ret = ovl_mp_check(buf, len, &report_limits, &used, why, sizeof(why));
	if (ret < 0) {
		snprintf(err, errlen, "%s: %s", what, why);
		goto out;
	}
	if (used != len) {
		snprintf(err, errlen, "%s: %zu trailing bytes", what, len - used);
		ret = -EBADMSG;
		goto out;
	}
	if (msgpack_unpack_next(&up, (const char *)buf, len, &off) != MSGPACK_UNPACK_SUCCESS ||
	    up.data.type != MSGPACK_OBJECT_MAP || up.data.via.map.size == 0) {
		snprintf(err, errlen, "%s: not a map", what);
		ret = -EBADMSG;
		goto out;
	}
	f[0] = ovl_signed_field(&up.data, 0, "v", what, err, errlen);
	if (!f[0]) {
		ret = -EBADMSG;
		goto out;
	}
	ret = ovl_signed_get_uint(f[0], &u, what, "v", err, errlen);
	if (ret < 0)
		goto out;
	if (u != OVL_FLEET_REPORT_FORMAT) {
		snprintf(err, errlen, "%s: format version %" PRIu64 " is not supported (expected %d)",
			 what, u, OVL_FLEET_REPORT_FORMAT);
		ret = -EPROTONOSUPPORT;
		goto out;
	}
	if (up.data.via.map.size < REPORT_FIELDS) {
		snprintf(err, errlen, "%s: %u fields, expected at least %d", what,
			 up.data.via.map.size, REPORT_FIELDS);
		ret = -EBADMSG;
		goto out;
	}
	for (unsigned i = 1; i < REPORT_FIELDS; i++) {
		f[i] = ovl_signed_field(&up.data, i, report_keys[i], what, err, errlen);
		if (!f[i]) {
			ret = -EBADMSG;
			goto out;
		}
	}
	ret = ovl_signed_get_str(f[1], r->running, sizeof(r->running), 0, what, "running", err, errlen);
	if (ret == 0)
		ret = ovl_signed_get_str(f[2], r->slot, sizeof(r->slot), 0, what, "slot", err, errlen);
	if (ret == 0)
		ret = ovl_signed_get_str(f[3], r->board, sizeof(r->board), 0, what, "board", err, errlen);
	if (ret == 0)
		ret = ovl_signed_get_uint(f[4], &u, what, "state", err, errlen);
	if (ret == 0 && !ovl_fleet_state_name(u < 256 ? (uint8_t)u : 255)) {
		snprintf(err, errlen, "%s: unknown state %" PRIu64, what, u);
		ret = -EBADMSG;
	}
	if (ret < 0) {
		ret = ret == -E2BIG ? -EBADMSG : ret;
		goto out;
	}
	r->state = (uint8_t)u;
	ret = ovl_signed_get_str(f[5], r->target, sizeof(r->target), 0, what, "target", err, errlen);
	if (ret == 0)
		ret = ovl_signed_get_uint(f[6], &r->seq, what, "seq", err, errlen);
	if (ret == 0)
		ret = ovl_signed_get_uint(f[7], &r->done, what, "done", err, errlen);
	if (ret == 0)
		ret = ovl_signed_get_uint(f[8], &r->total, what, "total", err, errlen);
	if (ret == 0)
		ret = ovl_signed_get_str(f[9], r->reason, sizeof(r->reason), 0, what, "reason", err,
					 errlen);
	if (ret == 0)
		ret = ovl_signed_get_uint(f[10], &r->degraded, what, "degraded", err, errlen);
	if (ret == 0)
		ret = ovl_signed_get_str(f[11], r->other, sizeof(r->other), 0, what, "other", err,
					 errlen);
	if (ret == 0)
		ret = get_bool(f[12], &r->other_good, what, "other_good", err, errlen);
	if (ret < 0)
		ret = ret == -E2BIG ? -EBADMSG : ret;
out:
	msgpack_unpacked_destroy(&up);
	if (ret < 0)
		memset(r, 0, sizeof(*r));
	return ret;
}

const struct msgpack_object *ovl_fleet_doc_get(const struct msgpack_object *m, const char *key)
{
	size_t kl = strlen(key);

	if (!m || m->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (uint32_t i = 0; i < m->via.map.size; i++) {
		const msgpack_object_kv *kv = &m->via.map.ptr[i];

		if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == kl &&
		    memcmp(kv->key.via.str.ptr, key, kl) == 0)
			return &kv->val;
	}
	return NULL;
}
