#include "ovl_mp.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

const struct ovl_mp_limits ovl_mp_limits_default = {
	.max_depth = 8,
	.max_bytes = 1 << 20,
	.max_elems = 65536,
	.max_str = 1 << 20,
	.allow_ext = false,
	.allow_float = false,
};

static uint32_t be16(const uint8_t *p)
{
	return (uint32_t)p[0] << 8 | p[1];
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

enum kind { K_SCALAR, K_ARRAY, K_MAP };

/*
 * Decodes the header at p: how many header bytes, how many payload bytes
 * follow (str/bin/ext/scalars), and for containers how many children.
 * Returns 0, or -EBADMSG when the header itself is cut off or reserved.
 */
static int header(const uint8_t *p, size_t left, size_t *hlen, uint64_t *payload,
		  enum kind *kind, uint64_t *children, int *flags)
{
	uint8_t b = p[0];
	size_t need = 1;

	*payload = 0;
	*kind = K_SCALAR;
	*children = 0;
	*flags = 0; /* 1 = ext, 2 = float, 4 = str/bin */
	if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
		*hlen = 1;
		return 0;
	}
	if ((b & 0xf0) == 0x80 || (b & 0xf0) == 0x90) {
		*kind = (b & 0xf0) == 0x80 ? K_MAP : K_ARRAY;
		*children = b & 0x0f;
		*hlen = 1;
		return 0;
	}
	if ((b & 0xe0) == 0xa0) {
		*payload = b & 0x1f;
		*hlen = 1;
		*flags = 4;
		return 0;
	}
	switch (b) {
	case 0xcc: case 0xd0: need = 2; break;
	case 0xcd: case 0xd1: need = 3; break;
	case 0xce: case 0xd2: need = 5; break;
	case 0xcf: case 0xd3: need = 9; break;
	case 0xca: need = 5; *flags = 2; break;
	case 0xcb: need = 9; *flags = 2; break;
	case 0xd4: need = 2; *payload = 1; *flags = 1; break;
	case 0xd5: need = 2; *payload = 2; *flags = 1; break;
	case 0xd6: need = 2; *payload = 4; *flags = 1; break;
	case 0xd7: need = 2; *payload = 8; *flags = 1; break;
	case 0xd8: need = 2; *payload = 16; *flags = 1; break;
	case 0xd9: case 0xc4: need = 2; *flags = 4; break;
	case 0xda: case 0xc5: need = 3; *flags = 4; break;
	case 0xdb: case 0xc6: need = 5; *flags = 4; break;
	case 0xc7: need = 3; *flags = 1; break;
	case 0xc8: need = 4; *flags = 1; break;
	case 0xc9: need = 6; *flags = 1; break;
	case 0xdc: case 0xde: need = 3; break;
	case 0xdd: case 0xdf: need = 5; break;
	default: return -EBADMSG; /* 0xc1 is reserved */
	}
	if (left < need)
		return -EBADMSG;
	*hlen = need;
	switch (b) {
	case 0xd9: case 0xc4: *payload = p[1]; break;
	case 0xda: case 0xc5: *payload = be16(p + 1); break;
	case 0xdb: case 0xc6: *payload = be32(p + 1); break;
	case 0xc7: *payload = p[1]; break;
	case 0xc8: *payload = be16(p + 1); break;
	case 0xc9: *payload = be32(p + 1); break;
	case 0xdc: *kind = K_ARRAY; *children = be16(p + 1); break;
	case 0xdd: *kind = K_ARRAY; *children = be32(p + 1); break;
	case 0xde: *kind = K_MAP; *children = be16(p + 1); break;
	case 0xdf: *kind = K_MAP; *children = be32(p + 1); break;
	}
	return 0;
}

int ovl_mp_check(const void *buf, size_t len, const struct ovl_mp_limits *lim,
		 size_t *consumed, char *err, size_t errlen)
{
	const uint8_t *p = buf;
	uint64_t pending[OVL_MP_DEPTH_MAX + 1]; /* elements still owed per open container */
	unsigned depth = 0, max_depth = lim->max_depth;
	uint64_t elems = 0;
	size_t off = 0, end = len;

	if (max_depth > OVL_MP_DEPTH_MAX)
		max_depth = OVL_MP_DEPTH_MAX;
	if (end > lim->max_bytes)
		end = lim->max_bytes;
	if (len == 0) {
		snprintf(err, errlen, "empty message");
		return -EBADMSG;
	}
	pending[0] = 1; /* the top-level object */
	while (depth > 0 || pending[0] > 0) {
		size_t hlen = 0, left = end - off;
		uint64_t payload, children;
		enum kind kind;
		int flags, ret;

		if (pending[depth] == 0) {
			depth--;
			continue;
		}
		if (off >= end) {
			if (len > lim->max_bytes) {
				snprintf(err, errlen, "message is larger than %zu bytes", lim->max_bytes);
				return -E2BIG;
			}
			snprintf(err, errlen, "truncated at byte %zu", off);
			return -EBADMSG;
		}
		ret = header(p + off, left, &hlen, &payload, &kind, &children, &flags);
		if (ret < 0) {
			snprintf(err, errlen, p[off] == 0xc1 ? "reserved type 0xc1 at byte %zu"
				 : "truncated header at byte %zu", off);
			return ret;
		}
		pending[depth]--;
		if (++elems > lim->max_elems) {
			snprintf(err, errlen, "more than %u elements", lim->max_elems);
			return -E2BIG;
		}
		if ((flags & 1) && !lim->allow_ext) {
			snprintf(err, errlen, "ext type at byte %zu is not allowed", off);
			return -EBADMSG;
		}
		if ((flags & 2) && !lim->allow_float) {
			snprintf(err, errlen, "float at byte %zu is not allowed", off);
			return -EBADMSG;
		}
		off += hlen;
		left = end - off;
		if ((flags & 5) && payload > lim->max_str) {
			snprintf(err, errlen, "string of %llu bytes at byte %zu exceeds %u",
				 (unsigned long long)payload, off - hlen, lim->max_str);
			return -E2BIG;
		}
		if (payload > left && end < len) {
			snprintf(err, errlen, "message is larger than %zu bytes", lim->max_bytes);
			return -E2BIG;
		}
		if (payload > left) {
			snprintf(err, errlen, "length %llu at byte %zu exceeds the %zu bytes left",
				 (unsigned long long)payload, off - hlen, left);
			return -EBADMSG;
		}
		off += payload;
		if (kind == K_SCALAR)
			continue;
		if (kind == K_MAP)
			children *= 2;
		if (children > end - off && end < len) {
			snprintf(err, errlen, "message is larger than %zu bytes", lim->max_bytes);
			return -E2BIG;
		}
		if (children > end - off) {
			snprintf(err, errlen, "container at byte %zu announces %llu elements but only %zu bytes are left",
				 off - hlen, (unsigned long long)children, end - off);
			return -EBADMSG;
		}
		if (children == 0)
			continue;
		if (depth + 1 > max_depth) {
			snprintf(err, errlen, "nesting deeper than %u at byte %zu", max_depth, off - hlen);
			return -ELOOP;
		}
		pending[++depth] = children;
	}
	if (consumed)
		*consumed = off;
	return 0;
}

bool ovl_mp_utf8_valid(const uint8_t *s, size_t n)
{
	size_t i = 0;

	/* the common case, short ASCII: one compare per byte */
	while (i < n && (uint8_t)(s[i] - 1) < 0x7f)
		i++;
	while (i < n) {
		uint8_t c = s[i];

		if (c >= 0x01 && c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			if (i + 1 >= n || (s[i + 1] & 0xc0) != 0x80)
				return false;
			i += 2;
		} else if (c >= 0xe0 && c <= 0xef) {
			uint8_t lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;

			if (i + 2 >= n || s[i + 1] < lo || s[i + 1] > hi || (s[i + 2] & 0xc0) != 0x80)
				return false;
			i += 3;
		} else if (c >= 0xf0 && c <= 0xf4) {
			uint8_t lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;

			if (i + 3 >= n || s[i + 1] < lo || s[i + 1] > hi ||
			    (s[i + 2] & 0xc0) != 0x80 || (s[i + 3] & 0xc0) != 0x80)
				return false;
			i += 4;
		} else {
			return false; /* NUL, continuation byte, 0xc0/0xc1, 0xf5.. */
		}
	}
	return true;
}
