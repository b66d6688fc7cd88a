#include "ovl_slice.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

/* Longest text the parsers look at, bytes: a prefix is at most 49. */
#define TEXT_MAX_BYTES 64
/* Longest quoted name in a message: 63 bytes, each up to 4 when escaped. */
#define QUOTE_BYTES (4 * OVL_SLICE_NAME_MAX_BYTES + 8)

/*
 * Copies s into out for a message, escaping anything that is not printable
 * ASCII as \xNN and stopping after max_in input bytes (with "..." appended),
 * so that hostile input cannot garble a log line.
 */
static void quote(char *out, size_t outlen, const char *s, size_t max_in)
{
	size_t o = 0;
	size_t i;

	if (outlen == 0)
		return;
	for (i = 0; s[i] != '\0' && i < max_in; i++) {
		unsigned char c = (unsigned char)s[i];
		char tmp[5];
		size_t n;

		if (c >= 0x20 && c < 0x7f && c != '\\') {
			tmp[0] = (char)c;
			tmp[1] = '\0';
		} else {
			snprintf(tmp, sizeof(tmp), "\\x%02x", c);
		}
		n = strlen(tmp);
		if (o + n + 1 > outlen)
			break;
		memcpy(out + o, tmp, n);
		o += n;
	}
	if (s[i] != '\0' && o + 4 <= outlen) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
}

static bool name_char_ok(unsigned char c, bool first)
{
	if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
		return true;
	return !first && (c == '-' || c == '_' || c == '.');
}

int ovl_slice_name_check(const char *name, const char *what, char *err, size_t errlen)
{
	char q[QUOTE_BYTES];
	size_t len;

	if (name == NULL || name[0] == '\0') {
		snprintf(err, errlen, "invalid %s '': it is empty", what);
		return -EINVAL;
	}
	len = strnlen(name, OVL_SLICE_NAME_MAX_BYTES + 1);
	quote(q, sizeof(q), name, OVL_SLICE_NAME_MAX_BYTES);
	if (len > OVL_SLICE_NAME_MAX_BYTES) {
		snprintf(err, errlen, "invalid %s '%s': longer than %d bytes", what, q,
			 OVL_SLICE_NAME_MAX_BYTES);
		return -EINVAL;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		char qc[8];

		if (name_char_ok(c, i == 0))
			continue;
		if (c >= 0x20 && c < 0x7f)
			snprintf(qc, sizeof(qc), "'%c'", c);
		else
			snprintf(qc, sizeof(qc), "0x%02x", c);
		if (i == 0 && name_char_ok(c, false))
			snprintf(err, errlen, "invalid %s '%s': it must start with a-z or 0-9, not %s",
				 what, q, qc);
		else
			snprintf(err, errlen,
				 "invalid %s '%s': character %s at offset %zu is not one of a-z 0-9 - _ .",
				 what, q, qc, i);
		return -EINVAL;
	}
	return 0;
}

/* Appends field(x) = len(x) as one byte, then x, to the hash state. */
static void hash_field(crypto_generichash_state *st, const void *x, size_t len)
{
	uint8_t n = (uint8_t)len;

	crypto_generichash_update(st, &n, 1);
	crypto_generichash_update(st, x, len);
}

int ovl_slice_init(struct ovl_slice *s, const char *site, const char *name,
		   char *err, size_t errlen)
{
	crypto_generichash_state st;
	int rc = 0;

	memset(s, 0, sizeof(*s));
	rc = ovl_slice_name_check(site, "site id", err, errlen);
	if (rc < 0)
		goto out;
	rc = ovl_slice_name_check(name, "slice name", err, errlen);
	if (rc < 0)
		goto out;
	memcpy(s->site, site, strlen(site) + 1);
	memcpy(s->name, name, strlen(name) + 1);

	crypto_generichash_init(&st, NULL, 0, OVL_SLICE_ID_BYTES);
	hash_field(&st, OVL_SLICE_TAG_ID, strlen(OVL_SLICE_TAG_ID));
	hash_field(&st, s->site, strlen(s->site));
	hash_field(&st, s->name, strlen(s->name));
	crypto_generichash_final(&st, s->id, sizeof(s->id));

	/* RFC 4193: fd, 40-bit global id, 16-bit subnet id, all from the id. */
	s->prefix.s6_addr[0] = 0xfd;
	memcpy(&s->prefix.s6_addr[1], s->id, 7);
out:
	if (rc < 0)
		memset(s, 0, sizeof(*s));
	sodium_memzero(&st, sizeof(st));
	return rc;
}

void ovl_slice_iid_hash(const struct ovl_slice *s, const uint8_t pubkey[OVL_SLICE_PUBKEY_BYTES],
			uint8_t counter, uint8_t retry, uint8_t iid[OVL_SLICE_IID_BYTES])
{
	crypto_generichash_state st;
	uint8_t h[32];

	crypto_generichash_init(&st, NULL, 0, sizeof(h));
	hash_field(&st, OVL_SLICE_TAG_IID, strlen(OVL_SLICE_TAG_IID));
	hash_field(&st, s->id, OVL_SLICE_ID_BYTES);
	hash_field(&st, pubkey, OVL_SLICE_PUBKEY_BYTES);
	hash_field(&st, &counter, 1);
	hash_field(&st, &retry, 1);
	crypto_generichash_final(&st, h, sizeof(h));
	memcpy(iid, h, OVL_SLICE_IID_BYTES);
}

static uint64_t be64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

bool ovl_slice_iid_is_reserved(const uint8_t iid[OVL_SLICE_IID_BYTES])
{
	uint64_t v = be64(iid);

	if (v == 0)
		return true;
	if (v >= UINT64_C(0x02005efffe000000) && v <= UINT64_C(0x02005efffeffffff))
		return true;
	return v >= UINT64_C(0xfdffffffffffff80);
}

int ovl_slice_addr(const struct ovl_slice *s, const uint8_t pubkey[OVL_SLICE_PUBKEY_BYTES],
		   uint8_t counter, struct in6_addr *addr)
{
	uint8_t iid[OVL_SLICE_IID_BYTES];

	for (unsigned r = 0; r <= OVL_SLICE_RETRY_MAX; r++) {
		ovl_slice_iid_hash(s, pubkey, counter, (uint8_t)r, iid);
		if (ovl_slice_iid_is_reserved(iid))
			continue;
		memcpy(addr->s6_addr, s->prefix.s6_addr, 8);
		memcpy(addr->s6_addr + 8, iid, sizeof(iid));
		return 0;
	}
	memset(addr, 0, sizeof(*addr));
	return -EADDRNOTAVAIL;
}

int ovl_slice_addr_verify(const struct ovl_slice *s, const uint8_t pubkey[OVL_SLICE_PUBKEY_BYTES],
			  const struct in6_addr *addr, uint8_t max_counter)
{
	struct in6_addr want;

	if (memcmp(addr->s6_addr, s->prefix.s6_addr, 8) != 0)
		return -EADDRNOTAVAIL;
	for (unsigned c = 0; c <= max_counter; c++) {
		if (ovl_slice_addr(s, pubkey, (uint8_t)c, &want) < 0)
			continue;
		if (memcmp(want.s6_addr, addr->s6_addr, sizeof(want.s6_addr)) == 0)
			return (int)c;
	}
	return -EKEYREJECTED;
}

bool ovl_slice_addr_collides(const struct in6_addr *addr, const struct in6_addr *taken,
			     size_t ntaken)
{
	for (size_t i = 0; i < ntaken; i++)
		if (memcmp(addr->s6_addr, taken[i].s6_addr, sizeof(addr->s6_addr)) == 0)
			return true;
	return false;
}

int ovl_slice_addr_assign(const struct ovl_slice *s, const uint8_t pubkey[OVL_SLICE_PUBKEY_BYTES],
			  const struct in6_addr *taken, size_t ntaken, uint8_t max_counter,
			  struct in6_addr *addr)
{
	struct in6_addr a;
	int rc = -EADDRINUSE;

	memset(addr, 0, sizeof(*addr));
	for (unsigned c = 0; c <= max_counter; c++) {
		int r = ovl_slice_addr(s, pubkey, (uint8_t)c, &a);

		if (r < 0) {
			rc = r;
			continue;
		}
		if (ovl_slice_addr_collides(&a, taken, ntaken)) {
			rc = -EADDRINUSE;
			continue;
		}
		*addr = a;
		return (int)c;
	}
	return rc;
}

int ovl_slice_addr_format(const struct in6_addr *addr, char *buf, size_t buflen)
{
	char tmp[INET6_ADDRSTRLEN];
	size_t n;

	if (buflen > 0)
		buf[0] = '\0';
	if (inet_ntop(AF_INET6, addr, tmp, sizeof(tmp)) == NULL)
		return -EINVAL;
	n = strlen(tmp);
	if (n + 1 > buflen)
		return -ENOSPC;
	memcpy(buf, tmp, n + 1);
	return (int)n;
}

int ovl_slice_addr_parse(const char *text, struct in6_addr *addr, char *err, size_t errlen)
{
	char q[QUOTE_BYTES];

	if (inet_pton(AF_INET6, text, addr) == 1)
		return 0;
	memset(addr, 0, sizeof(*addr));
	quote(q, sizeof(q), text, TEXT_MAX_BYTES);
	snprintf(err, errlen, "invalid IPv6 address '%s'", q);
	return -EINVAL;
}

int ovl_slice_prefix_format(const struct in6_addr *prefix, unsigned plen, char *buf,
			    size_t buflen)
{
	char tmp[INET6_ADDRSTRLEN];
	int n;

	if (buflen > 0)
		buf[0] = '\0';
	if (plen > 128 || inet_ntop(AF_INET6, prefix, tmp, sizeof(tmp)) == NULL)
		return -EINVAL;
	n = snprintf(buf, buflen, "%s/%u", tmp, plen);
	if (n < 0 || (size_t)n >= buflen) {
		if (buflen > 0)
			buf[0] = '\0';
		return -ENOSPC;
	}
	return n;
}

int ovl_slice_prefix_parse(const char *text, struct in6_addr *prefix, unsigned *plen,
			   char *err, size_t errlen)
{
	char q[QUOTE_BYTES];
	char a[INET6_ADDRSTRLEN];
	const char *slash = NULL;
	const char *p = NULL;
	unsigned len = 0;
	size_t alen;
	int rc = -EINVAL;

	memset(prefix, 0, sizeof(*prefix));
	*plen = 0;
	quote(q, sizeof(q), text, TEXT_MAX_BYTES);
	slash = strchr(text, '/');
	if (slash == NULL) {
		snprintf(err, errlen, "invalid IPv6 prefix '%s': no '/length'", q);
		goto out;
	}
	alen = (size_t)(slash - text);
	if (alen >= sizeof(a)) {
		snprintf(err, errlen, "invalid IPv6 prefix '%s': address too long", q);
		goto out;
	}
	memcpy(a, text, alen);
	a[alen] = '\0';
	if (inet_pton(AF_INET6, a, prefix) != 1) {
		snprintf(err, errlen, "invalid IPv6 prefix '%s': bad address", q);
		goto out;
	}
	p = slash + 1;
	if (*p == '\0' || strlen(p) > 3 || (p[0] == '0' && p[1] != '\0')) {
		snprintf(err, errlen, "invalid IPv6 prefix '%s': bad length", q);
		goto out;
	}
	for (; *p != '\0'; p++) {
		if (*p < '0' || *p > '9') {
			snprintf(err, errlen, "invalid IPv6 prefix '%s': bad length", q);
			goto out;
		}
		len = len * 10 + (unsigned)(*p - '0');
	}
	if (len > 128) {
		snprintf(err, errlen, "invalid IPv6 prefix '%s': length %u is over 128", q, len);
		goto out;
	}
	for (unsigned bit = len; bit < 128; bit++) {
		if (prefix->s6_addr[bit / 8] & (0x80u >> (bit % 8))) {
			snprintf(err, errlen, "invalid IPv6 prefix '%s': bits set beyond /%u", q, len);
			goto out;
		}
	}
	*plen = len;
	rc = 0;
out:
	if (rc < 0)
		memset(prefix, 0, sizeof(*prefix));
	return rc;
}

int ovl_slice_id_format(const struct ovl_slice *s, char *buf, size_t buflen)
{
	if (buflen < OVL_SLICE_ID_HEXLEN) {
		if (buflen > 0)
			buf[0] = '\0';
		return -ENOSPC;
	}
	sodium_bin2hex(buf, buflen, s->id, sizeof(s->id));
	return 2 * OVL_SLICE_ID_BYTES;
}
