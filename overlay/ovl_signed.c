#include "ovl_signed.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STACK_MSG_BYTES 4608 /* signed messages up to this size avoid malloc */

static uint32_t be16(const uint8_t *p)
{
	return (uint32_t)p[0] << 8 | p[1];
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Size of the shortest msgpack bin header for n payload bytes. */
static size_t bin_header_len(size_t n)
{
	return n < 256 ? 2 : n < 65536 ? 3 : 5;
}

int ovl_signed_open(struct ovl_signed *env, const uint8_t *buf, size_t len, size_t max_bytes,
		    const char *what, char *err, size_t errlen)
{
	struct ovl_mp_limits lim = {
		.max_depth = 1,
		.max_bytes = max_bytes,
		.max_elems = 16, /* the shape check below reports a wrong count */
		.max_str = (uint32_t)max_bytes,
	};
	char why[160];
	size_t used = 0, hlen, blen, off;
	int ret;

	memset(env, 0, sizeof(*env));
	if (len > max_bytes) {
		snprintf(err, errlen, "%s is %zu bytes, more than the limit of %zu", what, len,
			 max_bytes);
		return -E2BIG;
	}
	ret = ovl_mp_check(buf, len, &lim, &used, why, sizeof(why));
	if (ret < 0) {
		snprintf(err, errlen, "%s: %s", what, why);
		return ret;
	}
	if (used != len) {
		snprintf(err, errlen, "%s: %zu trailing bytes after the envelope", what, len - used);
		return -EBADMSG;
	}
	/* the walker vouches for every length below: only the shape is left */
	if (buf[0] != 0x92 || len < 3) {
		snprintf(err, errlen, "%s: not a [body, signature] envelope", what);
		return -EBADMSG;
	}
	switch (buf[1]) {
	case 0xc4: hlen = 2; blen = buf[2]; break;
	case 0xc5: hlen = 3; blen = be16(buf + 2); break;
	case 0xc6: hlen = 5; blen = be32(buf + 2); break;
	default:
		snprintf(err, errlen, "%s: envelope body is not a bin", what);
		return -EBADMSG;
	}
	if (hlen != bin_header_len(blen)) {
		snprintf(err, errlen, "%s: envelope body length is not in its shortest encoding", what);
		return -EBADMSG;
	}
	off = 1 + hlen + blen;
	if (len - off != 2 + OVL_ID_SIG_BYTES || buf[off] != 0xc4 || buf[off + 1] != OVL_ID_SIG_BYTES) {
		snprintf(err, errlen, "%s: envelope signature is not a bin of %d bytes", what,
			 OVL_ID_SIG_BYTES);
		return -EBADMSG;
	}
	env->body = buf + 1 + hlen;
	env->body_len = blen;
	env->sig = buf + off + 2;
	return 0;
}

int ovl_signed_verify(const struct ovl_signed *env, const char *domain,
		      const uint8_t pk[OVL_ID_BYTES])
{
	uint8_t stack[STACK_MSG_BYTES];
	uint8_t *msg = stack;
	size_t dlen = strlen(domain) + 1, mlen = dlen + env->body_len;
	int ret;

	if (mlen > sizeof(stack)) {
		msg = malloc(mlen);
		if (!msg)
			return -ENOMEM;
	}
	memcpy(msg, domain, dlen); /* the NUL separates domain and body */
	memcpy(msg + dlen, env->body, env->body_len);
	ret = crypto_sign_verify_detached(env->sig, msg, mlen, pk) == 0 ? 0 : -EKEYREJECTED;
	if (msg != stack)
		free(msg);
	return ret;
}

int ovl_signed_seal(const uint8_t *body, size_t body_len, const char *domain,
		    const uint8_t sk[OVL_ID_SIGN_SK_BYTES], uint8_t *out, size_t outlen)
{
	uint8_t stack[STACK_MSG_BYTES];
	uint8_t *msg = stack;
	size_t dlen = strlen(domain) + 1, mlen = dlen + body_len;
	size_t hlen = bin_header_len(body_len), total = 1 + hlen + body_len + 2 + OVL_ID_SIG_BYTES;
	uint8_t *p = out;

	if (total > outlen)
		return -E2BIG;
	if (mlen > sizeof(stack)) {
		msg = malloc(mlen);
		if (!msg)
			return -ENOMEM;
	}
	memcpy(msg, domain, dlen);
	memcpy(msg + dlen, body, body_len);
	*p++ = 0x92;
	if (hlen == 2) {
		*p++ = 0xc4;
		*p++ = (uint8_t)body_len;
	} else if (hlen == 3) {
		*p++ = 0xc5;
		*p++ = (uint8_t)(body_len >> 8);
		*p++ = (uint8_t)body_len;
	} else {
		*p++ = 0xc6;
		*p++ = (uint8_t)(body_len >> 24);
		*p++ = (uint8_t)(body_len >> 16);
		*p++ = (uint8_t)(body_len >> 8);
		*p++ = (uint8_t)body_len;
	}
	memmove(p, body, body_len); /* body may already live in out */
	p += body_len;
	*p++ = 0xc4;
	*p++ = OVL_ID_SIG_BYTES;
	crypto_sign_detached(p, NULL, msg, mlen, sk);
	if (msg != stack)
		free(msg);
	return (int)total;
}

int ovl_signed_buf_write(void *data, const char *buf, size_t len)
{
	struct ovl_signed_buf *b = data;

	if (len == 0)
		return 0;
	if (b->fail || len > b->cap - b->len) {
		b->fail = true;
		return -1;
	}
	if (b->want) {
		if (memcmp(b->want + b->len, buf, len) != 0) {
			b->fail = true;
			return -1;
		}
	} else {
		memcpy(b->p + b->len, buf, len);
	}
	b->len += len;
	return 0;
}

const msgpack_object *ovl_signed_field(const msgpack_object *map, uint32_t i, const char *key,
				       const char *what, char *err, size_t errlen)
{
	const msgpack_object_kv *kv = &map->via.map.ptr[i];
	size_t klen = strlen(key);

	if (kv->key.type != MSGPACK_OBJECT_STR || kv->key.via.str.size != klen ||
	    memcmp(kv->key.via.str.ptr, key, klen) != 0) {
		snprintf(err, errlen, "%s: field %u is not '%s'", what, i, key);
		return NULL;
	}
	return &kv->val;
}

int ovl_signed_unpack(msgpack_unpacked *up, const uint8_t *body, size_t len,
		      const struct ovl_mp_limits *lim, uint64_t version, uint32_t nfields,
		      const char *what, char *err, size_t errlen)
{
	const msgpack_object *map = NULL, *v = NULL;
	char why[160];
	size_t used = 0, off = 0;
	uint64_t ver = 0;
	int ret;

	ret = ovl_mp_check(body, len, lim, &used, why, sizeof(why));
	if (ret < 0) {
		snprintf(err, errlen, "%s: body: %s", what, why);
		return ret;
	}
	if (used != len) {
		snprintf(err, errlen, "%s: %zu trailing bytes after the body", what, len - used);
		return -EBADMSG;
	}
	if (msgpack_unpack_next(up, (const char *)body, len, &off) != MSGPACK_UNPACK_SUCCESS) {
		snprintf(err, errlen, "%s: body cannot be decoded", what);
		return -EBADMSG;
	}
	map = &up->data;
	if (map->type != MSGPACK_OBJECT_MAP || map->via.map.size == 0) {
		snprintf(err, errlen, "%s: body is not a map", what);
		return -EBADMSG;
	}
	v = ovl_signed_field(map, 0, "v", what, err, errlen);
	if (!v)
		return -EBADMSG;
	ret = ovl_signed_get_uint(v, &ver, what, "v", err, errlen);
	if (ret < 0)
		return ret;
	if (ver != version) {
		snprintf(err, errlen, "%s: format version %llu is not supported (expected %llu)", what,
			 (unsigned long long)ver, (unsigned long long)version);
		return -EPROTONOSUPPORT;
	}
	if (map->via.map.size != nfields) {
		snprintf(err, errlen, "%s: body has %u fields, expected %u", what, map->via.map.size,
			 nfields);
		return -EBADMSG;
	}
	return 0;
}

int ovl_signed_get_uint(const msgpack_object *o, uint64_t *v, const char *what,
			const char *field, char *err, size_t errlen)
{
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
		snprintf(err, errlen, "%s: '%s' is not an unsigned integer", what, field);
		return -EBADMSG;
	}
	*v = o->via.u64;
	return 0;
}

int ovl_signed_get_bin(const msgpack_object *o, uint8_t *dst, size_t n, const char *what,
		       const char *field, char *err, size_t errlen)
{
	if (o->type != MSGPACK_OBJECT_BIN || o->via.bin.size != n) {
		snprintf(err, errlen, "%s: '%s' is not a bin of %zu bytes", what, field, n);
		return -EBADMSG;
	}
	memcpy(dst, o->via.bin.ptr, n);
	return 0;
}

bool ovl_signed_name_ok(const char *s, size_t cap, size_t min_len)
{
	size_t n = strnlen(s, cap);

	if (n >= cap || n < min_len)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return false;
	return true;
}

int ovl_signed_get_str(const msgpack_object *o, char *dst, size_t cap, size_t min_len,
		       const char *what, const char *field, char *err, size_t errlen)
{
	size_t n;

	if (o->type != MSGPACK_OBJECT_STR) {
		snprintf(err, errlen, "%s: '%s' is not a string", what, field);
		return -EBADMSG;
	}
	n = o->via.str.size;
	if (n >= cap) {
		snprintf(err, errlen, "%s: '%s' is %zu bytes long, more than %zu", what, field, n,
			 cap - 1);
		return -E2BIG;
	}
	if (n < min_len) {
		snprintf(err, errlen, "%s: '%s' is empty", what, field);
		return -EBADMSG;
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)o->via.str.ptr[i];

		if (c < 0x20 || c > 0x7e) {
			snprintf(err, errlen, "%s: '%s' holds byte 0x%02x; only printable ASCII is allowed",
				 what, field, c);
			return -EBADMSG;
		}
	}
	memcpy(dst, o->via.str.ptr, n);
	dst[n] = '\0';
	return 0;
}
