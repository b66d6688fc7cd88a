#include "ovl_wire.h"

#include <errno.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ovl_mp.h"
#include "ovl_mpr.h"
#include "ovl_peers.h"

#define DIR_C2S 1
#define DIR_S2C 2
#define KDF_DOMAIN "shelf-wire-v1"   /* every derivation starts with it and a NUL */
#define META_DEPTH_MAX 4             /* map > fwd map > chain array > [id, home] */
#define META_ELEMS_MAX 2048u         /* msgpack objects in one meta */
#define META_KEYS_MAX 32             /* entries in a meta map (the counters map: 64) */
#define FWD_KEYS_MAX 8               /* entries in a `fwd` map */
#define PROOF_BYTES 16

_Static_assert(OVL_WIRE_CHUNKS_MAX < (1u << 24), "chunk index fits 3 nonce bytes");
_Static_assert(crypto_aead_chacha20poly1305_ietf_ABYTES == OVL_WIRE_TAG_BYTES, "tag size");
_Static_assert(crypto_aead_chacha20poly1305_ietf_NPUBBYTES == 12, "nonce size");

/* ---- small helpers ---------------------------------------------------------- */

static void put_be(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
}

static uint64_t get_be(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

static int fail(char *err, size_t errlen, int ret, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int ret, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return ret;
}

/* The one status table: the name, what a client reports for the status,
 * and which errno of the node's own layers it answers (0: none does). */
static const struct {
	const char *name;
	int to_errno;
	int from_errno;
} statuses[OVL_WIRE_STATUS_COUNT] = {
	[OVL_WIRE_OK] = { "ok", 0, 0 },
	[OVL_WIRE_BAD_REQUEST] = { "bad-request", -EPROTO, -EINVAL },
	[OVL_WIRE_AUTH_FAILED] = { "auth-failed", -EACCES, 0 },
	[OVL_WIRE_VERSION] = { "version", -EPROTO, 0 },
	[OVL_WIRE_STALE_MAP] = { "stale-map", -ESTALE, 0 },
	[OVL_WIRE_WRONG_SLICE] = { "wrong-slice", -EACCES, 0 },
	[OVL_WIRE_NOT_FOUND] = { "not-found", -ENOENT, -ENOENT },
	[OVL_WIRE_NO_SPACE] = { "no-space", -ENOSPC, -ENOSPC },
	[OVL_WIRE_TOO_LARGE] = { "too-large", -E2BIG, -E2BIG },
	[OVL_WIRE_CHECKSUM_MISMATCH] = { "checksum-mismatch", -EIO, -EIO },
	[OVL_WIRE_BUSY] = { "busy", -EBUSY, -EBUSY },
	[OVL_WIRE_TIMEOUT] = { "timeout", -ETIMEDOUT, 0 },
	[OVL_WIRE_READ_ONLY] = { "read-only", -EROFS, -EROFS },
	[OVL_WIRE_INTERNAL] = { "internal", -EPROTO, 0 },
};

const char *ovl_wire_status_name(uint32_t status)
{
	return status < OVL_WIRE_STATUS_COUNT ? statuses[status].name : NULL;
}

int ovl_wire_status_to_errno(uint32_t status)
{
	return status < OVL_WIRE_STATUS_COUNT ? statuses[status].to_errno : -EPROTO;
}

uint32_t ovl_wire_errno_to_status(int err)
{
	if (err == 0)
		return OVL_WIRE_OK;
	for (uint32_t st = 0; st < OVL_WIRE_STATUS_COUNT; st++)
		if (statuses[st].from_errno == err)
			return st;
	return OVL_WIRE_INTERNAL;
}

int ovl_wire_ver_cmp(const struct ovl_wire_ver *a, const struct ovl_wire_ver *b)
{
	if (a->hlc != b->hlc)
		return a->hlc < b->hlc ? -1 : 1;
	if (a->node != b->node)
		return a->node < b->node ? -1 : 1;
	return 0;
}

const char *ovl_wire_type_name(uint8_t type)
{
	switch (type) {
	case OVL_WIRE_T_HELLO: return "hello";
	case OVL_WIRE_T_HELLO_OK: return "hello-ok";
	case OVL_WIRE_T_ERROR: return "error";
	case OVL_WIRE_T_PUT: return "put";
	case OVL_WIRE_T_GET: return "get";
	case OVL_WIRE_T_DELETE: return "delete";
	case OVL_WIRE_T_STAT: return "stat";
	case OVL_WIRE_T_LIST: return "list";
	case OVL_WIRE_T_NODE_STAT: return "node-stat";
	case OVL_WIRE_T_MAP: return "map";
	case OVL_WIRE_T_DIGEST: return "digest";
	case OVL_WIRE_T_HEAL: return "heal";
	case OVL_WIRE_T_PUT | OVL_WIRE_T_RESPONSE: return "put-response";
	case OVL_WIRE_T_GET | OVL_WIRE_T_RESPONSE: return "get-response";
	case OVL_WIRE_T_DELETE | OVL_WIRE_T_RESPONSE: return "delete-response";
	case OVL_WIRE_T_STAT | OVL_WIRE_T_RESPONSE: return "stat-response";
	case OVL_WIRE_T_LIST | OVL_WIRE_T_RESPONSE: return "list-response";
	case OVL_WIRE_T_NODE_STAT | OVL_WIRE_T_RESPONSE: return "node-stat-response";
	case OVL_WIRE_T_MAP | OVL_WIRE_T_RESPONSE: return "map-response";
	case OVL_WIRE_T_DIGEST | OVL_WIRE_T_RESPONSE: return "digest-response";
	case OVL_WIRE_T_HEAL | OVL_WIRE_T_RESPONSE: return "heal-response";
	default: return NULL;
	}
}

static bool is_handshake(uint8_t type)
{
	return type == OVL_WIRE_T_HELLO || type == OVL_WIRE_T_HELLO_OK || type == OVL_WIRE_T_ERROR;
}

static bool is_request(uint8_t type)
{
	return type >= OVL_WIRE_T_PUT && type <= OVL_WIRE_T_HEAL;
}

static bool is_response(uint8_t type)
{
	return (type & OVL_WIRE_T_RESPONSE) && is_request(type & ~OVL_WIRE_T_RESPONSE);
}

/* Only a PUT request and GET, LIST, MAP and DIGEST responses carry a payload. */
static bool has_payload(uint8_t type)
{
	return type == OVL_WIRE_T_PUT || type == (OVL_WIRE_T_GET | OVL_WIRE_T_RESPONSE) ||
	       type == (OVL_WIRE_T_LIST | OVL_WIRE_T_RESPONSE) ||
	       type == (OVL_WIRE_T_MAP | OVL_WIRE_T_RESPONSE) ||
	       type == (OVL_WIRE_T_DIGEST | OVL_WIRE_T_RESPONSE);
}

/* ---- payload sizes ------------------------------------------------------- */

uint64_t ovl_wire_sealed_len(uint64_t plain)
{
	uint64_t chunks = (plain + OVL_WIRE_CHUNK_BYTES - 1) / OVL_WIRE_CHUNK_BYTES;

	return plain + chunks * OVL_WIRE_TAG_BYTES;
}

int ovl_wire_plain_len(uint64_t wire, uint64_t *plain)
{
	const uint64_t full = OVL_WIRE_CHUNK_BYTES + OVL_WIRE_TAG_BYTES;
	uint64_t rest = wire % full;

	*plain = 0;
	if (rest != 0 && rest <= OVL_WIRE_TAG_BYTES)
		return -EBADMSG; /* a last chunk with no plaintext, or a cut tag */
	*plain = wire - (wire / full) * OVL_WIRE_TAG_BYTES - (rest ? OVL_WIRE_TAG_BYTES : 0);
	return 0;
}

/* ---- header ---------------------------------------------------------------- */

static int hdr_check(const struct ovl_wire_hdr *h, int bad, char *err, size_t errlen)
{
	const char *name = ovl_wire_type_name(h->type);
	uint64_t plain = 0;

	if (!name)
		return fail(err, errlen, bad, "frame: unknown type 0x%02x", h->type);
	if (h->flags & ~OVL_WIRE_FLAG_ENCRYPTED)
		return fail(err, errlen, bad, "%s: unknown flags 0x%02x", name, h->flags);
	if (h->meta_len > OVL_WIRE_META_MAX_BYTES)
		return fail(err, errlen, bad == -EINVAL ? -EINVAL : -EMSGSIZE,
			    "%s: meta length %u is over the cap of %u bytes", name, h->meta_len,
			    OVL_WIRE_META_MAX_BYTES);
	if (h->meta_len == 0)
		return fail(err, errlen, bad, "%s: meta length is 0", name);
	if (h->payload_len && !has_payload(h->type))
		return fail(err, errlen, bad, "%s: carries no payload, but payload length is %llu",
			    name, (unsigned long long)h->payload_len);
	if ((h->flags & OVL_WIRE_FLAG_ENCRYPTED) && !has_payload(h->type))
		return fail(err, errlen, bad, "%s: flag 'encrypted' on a frame without payload", name);
	if (h->flags & OVL_WIRE_FLAG_ENCRYPTED) {
		if (h->payload_len > OVL_WIRE_PAYLOAD_MAX_BYTES)
			return fail(err, errlen, bad == -EINVAL ? -EINVAL : -EMSGSIZE,
				    "%s: payload length %llu is over the cap of %llu bytes", name,
				    (unsigned long long)h->payload_len,
				    (unsigned long long)OVL_WIRE_PAYLOAD_MAX_BYTES);
		if (ovl_wire_plain_len(h->payload_len, &plain) < 0)
			return fail(err, errlen, bad,
				    "%s: payload length %llu is not a run of encrypted chunks", name,
				    (unsigned long long)h->payload_len);
	} else if (h->payload_len > OVL_WIRE_OBJECT_MAX_BYTES) {
		return fail(err, errlen, bad == -EINVAL ? -EINVAL : -EMSGSIZE,
			    "%s: payload length %llu is over the cap of %llu bytes", name,
			    (unsigned long long)h->payload_len,
			    (unsigned long long)OVL_WIRE_OBJECT_MAX_BYTES);
	}
	if (is_handshake(h->type) && (h->seq || h->rid))
		return fail(err, errlen, bad, "%s: sequence and request id must be 0", name);
	return 0;
}

int ovl_wire_hdr_pack(const struct ovl_wire_hdr *h, uint8_t out[OVL_WIRE_HDR_BYTES], char *err,
		      size_t errlen)
{
	int ret = hdr_check(h, -EINVAL, err, errlen);

	if (ret < 0)
		return ret;
	memcpy(out, OVL_WIRE_MAGIC, 4);
	out[4] = h->type;
	out[5] = h->flags;
	out[6] = out[7] = 0;
	put_be(out + 8, h->meta_len, 4);
	put_be(out + 12, h->payload_len, 8);
	put_be(out + 20, h->seq, 8);
	put_be(out + 28, h->rid, 4);
	return 0;
}

int ovl_wire_hdr_parse(struct ovl_wire_hdr *h, const uint8_t buf[OVL_WIRE_HDR_BYTES], char *err,
		       size_t errlen)
{
	memset(h, 0, sizeof(*h));
	if (memcmp(buf, OVL_WIRE_MAGIC, 4) != 0)
		return fail(err, errlen, -EBADMSG,
			    "frame: bad magic %02x %02x %02x %02x (expected \"SHD1\")", buf[0],
			    buf[1], buf[2], buf[3]);
	if (buf[6] || buf[7])
		return fail(err, errlen, -EBADMSG, "frame: reserved header bytes 6..7 are not zero");
	h->type = buf[4];
	h->flags = buf[5];
	h->meta_len = (uint32_t)get_be(buf + 8, 4);
	h->payload_len = get_be(buf + 12, 8);
	h->seq = get_be(buf + 20, 8);
	h->rid = (uint32_t)get_be(buf + 28, 4);
	return hdr_check(h, -EBADMSG, err, errlen);
}

size_t ovl_wire_head_len(const struct ovl_wire_hdr *h, bool authed)
{
	return OVL_WIRE_HDR_BYTES + h->meta_len + (authed ? OVL_WIRE_MAC_BYTES : 0);
}

int ovl_wire_head_need(const uint8_t *buf, size_t len, bool authed, struct ovl_wire_hdr *h,
		       size_t *need, char *err, size_t errlen)
{
	size_t total;
	int ret;

	memset(h, 0, sizeof(*h));
	if (len < 4 && memcmp(buf, OVL_WIRE_MAGIC, len) != 0)
		return fail(err, errlen, -EBADMSG, "frame: bad magic");
	if (len < OVL_WIRE_HDR_BYTES) {
		*need = OVL_WIRE_HDR_BYTES - len;
		return 0;
	}
	ret = ovl_wire_hdr_parse(h, buf, err, errlen);
	if (ret < 0) {
		*need = 0;
		return ret;
	}
	if (authed == is_handshake(h->type)) {
		*need = 0;
		return fail(err, errlen, -EBADMSG, "%s: not expected %s the handshake",
			    ovl_wire_type_name(h->type), authed ? "after" : "before");
	}
	total = ovl_wire_head_len(h, authed);
	*need = len >= total ? 0 : total - len;
	return 0;
}

/* ---- sessions: MAC and AEAD ------------------------------------------------ */

void ovl_wire_session_clear(struct ovl_wire_session *s)
{
	sodium_memzero(s, sizeof(*s));
}

bool ovl_wire_session_allows(const struct ovl_wire_session *s, const char *slice)
{
	for (uint32_t i = 0; i < s->peer.nslices && i < OVL_CERT_LIST_MAX; i++)
		if (strcmp(s->peer.slices[i], slice) == 0)
			return true;
	return false;
}

static void mac_compute(const uint8_t key[OVL_WIRE_KEY_BYTES], const uint8_t *hdr,
			const uint8_t *meta, size_t meta_len, uint8_t mac[OVL_WIRE_MAC_BYTES])
{
	crypto_generichash_state st;

	crypto_generichash_init(&st, key, OVL_WIRE_KEY_BYTES, OVL_WIRE_MAC_BYTES);
	crypto_generichash_update(&st, hdr, OVL_WIRE_HDR_BYTES);
	crypto_generichash_update(&st, meta, meta_len);
	crypto_generichash_final(&st, mac, OVL_WIRE_MAC_BYTES);
	sodium_memzero(&st, sizeof(st));
}

int ovl_wire_head_seal(struct ovl_wire_session *s, struct ovl_wire_hdr *h, const uint8_t *meta,
		       size_t meta_len, uint8_t *out, size_t cap, char *err, size_t errlen)
{
	size_t total = OVL_WIRE_HDR_BYTES + meta_len + OVL_WIRE_MAC_BYTES;
	int ret;

	if (is_handshake(h->type))
		return fail(err, errlen, -EINVAL, "%s: a handshake frame is never sealed",
			    ovl_wire_type_name(h->type));
	if (meta_len > OVL_WIRE_META_MAX_BYTES)
		return fail(err, errlen, -EINVAL, "meta length %zu is over the cap of %u bytes",
			    meta_len, OVL_WIRE_META_MAX_BYTES);
	h->seq = s->tx_seq;
	h->meta_len = (uint32_t)meta_len;
	if (cap < total)
		return fail(err, errlen, -ENOSPC, "head of %zu bytes does not fit in %zu", total, cap);
	ret = ovl_wire_hdr_pack(h, out, err, errlen);
	if (ret < 0)
		return ret;
	memmove(out + OVL_WIRE_HDR_BYTES, meta, meta_len);
	mac_compute(s->tx_mac, out, out + OVL_WIRE_HDR_BYTES, meta_len,
		    out + OVL_WIRE_HDR_BYTES + meta_len);
	s->tx_seq++;
	return (int)total;
}

int ovl_wire_head_open(struct ovl_wire_session *s, const uint8_t *buf, size_t len,
		       struct ovl_wire_hdr *h, const uint8_t **meta, char *err, size_t errlen)
{
	uint8_t mac[OVL_WIRE_MAC_BYTES];
	const char *name;
	int ret;

	if (meta)
		*meta = NULL;
	if (len < OVL_WIRE_HDR_BYTES)
		return fail(err, errlen, -EBADMSG, "frame: truncated header (%zu bytes)", len);
	ret = ovl_wire_hdr_parse(h, buf, err, errlen);
	if (ret < 0)
		return ret;
	name = ovl_wire_type_name(h->type);
	if (is_handshake(h->type))
		return fail(err, errlen, -EBADMSG, "%s: not expected after the handshake", name);
	if (len != ovl_wire_head_len(h, true))
		return fail(err, errlen, -EBADMSG, "%s: head is %zu bytes, expected %zu", name, len,
			    ovl_wire_head_len(h, true));
	mac_compute(s->rx_mac, buf, buf + OVL_WIRE_HDR_BYTES, h->meta_len, mac);
	if (crypto_verify_16(mac, buf + OVL_WIRE_HDR_BYTES + h->meta_len) != 0)
		return fail(err, errlen, -EBADE,
			    "%s: MAC does not verify (tampered frame, or the peer does not hold "
			    "its certificate's key)", name);
	if (h->seq != s->rx_seq)
		return fail(err, errlen, -EPROTO,
			    "%s: sequence %llu out of order (expected %llu): replayed or reordered",
			    name, (unsigned long long)h->seq, (unsigned long long)s->rx_seq);
	s->rx_seq++;
	if (meta)
		*meta = buf + OVL_WIRE_HDR_BYTES;
	return 0;
}

/* The chunk's nonce: direction, 24-bit chunk index, 64-bit sequence. */
static int chunk_prep(const uint8_t hdr[OVL_WIRE_HDR_BYTES], uint8_t dir, uint32_t idx,
		      size_t len, uint8_t nonce[12])
{
	uint64_t wire = get_be(hdr + 12, 8), plain = 0, start;
	size_t expect;

	if (!(hdr[5] & OVL_WIRE_FLAG_ENCRYPTED) || ovl_wire_plain_len(wire, &plain) < 0)
		return -EINVAL;
	start = (uint64_t)idx * OVL_WIRE_CHUNK_BYTES;
	if (idx >= OVL_WIRE_CHUNKS_MAX || start >= plain)
		return -EINVAL;
	expect = plain - start < OVL_WIRE_CHUNK_BYTES ? (size_t)(plain - start)
						      : OVL_WIRE_CHUNK_BYTES;
	if (len != expect)
		return -EINVAL;
	nonce[0] = dir;
	put_be(nonce + 1, idx, 3);
	memcpy(nonce + 4, hdr + 20, 8);
	return 0;
}

int ovl_wire_chunk_seal_detached(const struct ovl_wire_session *s,
				 const uint8_t hdr[OVL_WIRE_HDR_BYTES], uint32_t idx, uint8_t *buf,
				 size_t len, uint8_t tag[OVL_WIRE_TAG_BYTES])
{
	uint8_t nonce[12];

	if (chunk_prep(hdr, s->tx_dir, idx, len, nonce) < 0)
		return -EINVAL;
	crypto_aead_chacha20poly1305_ietf_encrypt_detached(buf, tag, NULL, buf, len, hdr,
							   OVL_WIRE_HDR_BYTES, NULL, nonce,
							   s->tx_aead);
	return 0;
}

int ovl_wire_chunk_seal(const struct ovl_wire_session *s, const uint8_t hdr[OVL_WIRE_HDR_BYTES],
			uint32_t idx, uint8_t *buf, size_t len)
{
	return ovl_wire_chunk_seal_detached(s, hdr, idx, buf, len, buf + len);
}

int ovl_wire_chunk_open(const struct ovl_wire_session *s, const uint8_t hdr[OVL_WIRE_HDR_BYTES],
			uint32_t idx, uint8_t *buf, size_t len)
{
	uint8_t nonce[12];

	if (chunk_prep(hdr, s->rx_dir, idx, len, nonce) < 0)
		return -EINVAL;
	if (crypto_aead_chacha20poly1305_ietf_decrypt_detached(buf, NULL, buf, len, buf + len, hdr,
							       OVL_WIRE_HDR_BYTES, nonce,
							       s->rx_aead) != 0)
		return -EBADMSG;
	return 0;
}

/* ---- whole payloads ------------------------------------------------------ */

uint32_t ovl_wire_chunk_count(uint64_t plain)
{
	return (uint32_t)((plain + OVL_WIRE_CHUNK_BYTES - 1) / OVL_WIRE_CHUNK_BYTES);
}

/* hdr describes an encrypted payload of exactly plen plaintext bytes. */
static bool payload_fits(const uint8_t hdr[OVL_WIRE_HDR_BYTES], uint64_t plen)
{
	uint64_t plain = 0;

	return (hdr[5] & OVL_WIRE_FLAG_ENCRYPTED) &&
	       ovl_wire_plain_len(get_be(hdr + 12, 8), &plain) == 0 && plain == plen;
}

static size_t chunk_len(uint64_t left)
{
	return left < OVL_WIRE_CHUNK_BYTES ? (size_t)left : OVL_WIRE_CHUNK_BYTES;
}

int ovl_wire_payload_seal(const struct ovl_wire_session *s, const uint8_t hdr[OVL_WIRE_HDR_BYTES],
			  const uint8_t *plain, uint64_t plen, uint8_t *out)
{
	uint32_t i = 0;

	if (!payload_fits(hdr, plen))
		return -EINVAL;
	for (uint64_t off = 0; off < plen; off += OVL_WIRE_CHUNK_BYTES, i++) {
		size_t k = chunk_len(plen - off);

		memcpy(out, plain + off, k);
		/* each chunk is bound to this frame's header, direction, seq and index */
		if (ovl_wire_chunk_seal(s, hdr, i, out, k) < 0)
			return -EINVAL;
		out += k + OVL_WIRE_TAG_BYTES;
	}
	return 0;
}

int ovl_wire_payload_seal_detached(const struct ovl_wire_session *s,
				   const uint8_t hdr[OVL_WIRE_HDR_BYTES], uint8_t *buf,
				   uint64_t plen, uint8_t *tags)
{
	uint32_t i = 0;

	if (!payload_fits(hdr, plen))
		return -EINVAL;
	for (uint64_t off = 0; off < plen; off += OVL_WIRE_CHUNK_BYTES, i++)
		if (ovl_wire_chunk_seal_detached(s, hdr, i, buf + off, chunk_len(plen - off),
						 tags + (size_t)i * OVL_WIRE_TAG_BYTES) < 0)
			return -EINVAL;
	return 0;
}

int ovl_wire_opener_init(struct ovl_wire_opener *o, const struct ovl_wire_session *s,
			 const uint8_t hdr[OVL_WIRE_HDR_BYTES])
{
	uint64_t wire = get_be(hdr + 12, 8), plain = wire;

	memset(o, 0, sizeof(*o));
	o->s = s;
	memcpy(o->hdr, hdr, OVL_WIRE_HDR_BYTES);
	o->encrypted = hdr[5] & OVL_WIRE_FLAG_ENCRYPTED;
	if (o->encrypted && ovl_wire_plain_len(wire, &plain) < 0)
		return -EBADMSG;
	o->wire_left = wire;
	o->plain_left = plain;
	o->need = o->encrypted && plain ? chunk_len(plain) + OVL_WIRE_TAG_BYTES : 0;
	return 0;
}

size_t ovl_wire_opener_want(const struct ovl_wire_opener *o)
{
	if (!o->encrypted)
		return o->wire_left > SIZE_MAX ? SIZE_MAX : (size_t)o->wire_left;
	return o->need - o->fill;
}

bool ovl_wire_opener_done(const struct ovl_wire_opener *o)
{
	return o->wire_left == 0 && o->fill == 0;
}

ssize_t ovl_wire_opener_feed(struct ovl_wire_opener *o, uint8_t *piece, const uint8_t *in,
			     size_t len, size_t *plain)
{
	size_t k = ovl_wire_opener_want(o), n;

	*plain = 0;
	if (k > len)
		k = len;
	if (k && in != piece + o->fill)
		memmove(piece + o->fill, in, k);
	o->wire_left -= k;
	if (!o->encrypted) {
		o->plain_left -= k;
		*plain = k;
		return (ssize_t)k;
	}
	o->fill += k;
	if (o->fill < o->need)
		return (ssize_t)k;
	n = o->need - OVL_WIRE_TAG_BYTES;
	if (ovl_wire_chunk_open(o->s, o->hdr, o->idx, piece, n) < 0)
		return -EBADMSG;
	o->plain_left -= n;
	o->idx++;
	o->fill = 0;
	o->need = o->plain_left ? chunk_len(o->plain_left) + OVL_WIRE_TAG_BYTES : 0;
	*plain = n;
	return (ssize_t)k;
}

int ovl_wire_payload_open(const struct ovl_wire_session *s, const uint8_t hdr[OVL_WIRE_HDR_BYTES],
			  uint8_t *buf, uint64_t wire, uint64_t *plain, uint32_t *bad_chunk)
{
	struct ovl_wire_opener o;
	uint64_t in = 0, out = 0;

	*plain = 0;
	if (ovl_wire_opener_init(&o, s, hdr) < 0 || o.wire_left != wire)
		return -EBADMSG;
	while (!ovl_wire_opener_done(&o)) {
		size_t n = 0;
		size_t step = wire - in < SIZE_MAX ? (size_t)(wire - in) : SIZE_MAX;
		ssize_t k = ovl_wire_opener_feed(&o, buf + out, buf + in, step, &n);

		if (k < 0) {
			if (bad_chunk)
				*bad_chunk = o.idx;
			return -EBADMSG;
		}
		in += (uint64_t)k;
		out += n;
	}
	*plain = out;
	return 0;
}

/* ---- msgpack writer ------------------------------------------------------------ */

struct wb {
	uint8_t *p;
	size_t cap, len;
	bool full;
};

static void w_raw(struct wb *w, const void *d, size_t n)
{
	if (w->full || n > w->cap - w->len) {
		w->full = true;
		return;
	}
	memcpy(w->p + w->len, d, n);
	w->len += n;
}

static void w_byte(struct wb *w, uint8_t b)
{
	w_raw(w, &b, 1);
}

static void w_head(struct wb *w, uint8_t code, uint64_t v, unsigned n)
{
	uint8_t b[9];

	b[0] = code;
	put_be(b + 1, v, n);
	w_raw(w, b, 1 + n);
}

static void w_uint(struct wb *w, uint64_t v)
{
	if (v < 128)
		w_byte(w, (uint8_t)v);
	else if (v <= 0xff)
		w_head(w, 0xcc, v, 1);
	else if (v <= 0xffff)
		w_head(w, 0xcd, v, 2);
	else if (v <= 0xffffffffu)
		w_head(w, 0xce, v, 4);
	else
		w_head(w, 0xcf, v, 8);
}

static void w_str(struct wb *w, const char *s, size_t n)
{
	if (n < 32)
		w_byte(w, (uint8_t)(0xa0 | n));
	else if (n <= 0xff)
		w_head(w, 0xd9, n, 1);
	else
		w_head(w, 0xda, n, 2);
	w_raw(w, s, n);
}

static void w_key(struct wb *w, const char *s)
{
	w_str(w, s, strlen(s));
}

static void w_bin(struct wb *w, const uint8_t *d, size_t n)
{
	if (n <= 0xff)
		w_head(w, 0xc4, n, 1);
	else if (n <= 0xffff)
		w_head(w, 0xc5, n, 2);
	else
		w_head(w, 0xc6, n, 4);
	w_raw(w, d, n);
}

static void w_map(struct wb *w, size_t n)
{
	if (n < 16)
		w_byte(w, (uint8_t)(0x80 | n));
	else
		w_head(w, 0xde, n, 2);
}

static void w_array(struct wb *w, size_t n)
{
	if (n < 16)
		w_byte(w, (uint8_t)(0x90 | n));
	else
		w_head(w, 0xdc, n, 2);
}

static void w_bool(struct wb *w, bool b)
{
	w_byte(w, b ? 0xc3 : 0xc2);
}

static void w_ver(struct wb *w, const struct ovl_wire_ver *v)
{
	w_array(w, 2);
	w_uint(w, v->hlc);
	w_uint(w, v->node);
}

static void w_id_or_nil(struct wb *w, bool has, const uint8_t *id)
{
	if (has)
		w_bin(w, id, OVL_WIRE_NODE_ID_BYTES);
	else
		w_byte(w, 0xc0);
}

static void w_version(struct wb *w, uint32_t major)
{
	w_key(w, "v");
	w_byte(w, 0x92);
	w_uint(w, major);
	w_uint(w, OVL_WIRE_VERSION_MINOR);
}

/* ---- the reader: ovl_mpr (msgpack that ovl_mp_check() has accepted) ---- */

/* Printable ASCII? (Slice and counter names; msgpack str otherwise UTF-8.) */
static bool printable(const uint8_t *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return false;
	return true;
}


/* ---- meta schema --------------------------------------------------------------
 * Every key any meta may hold, with its type and limits. Each frame type
 * lists the keys it knows and which of them are required; other keys are
 * skipped (a newer minor version may add them). */

enum fid {
	F_V, F_CERT, F_NONCE, F_SLICE, F_PROOF, F_CODE, F_MESSAGE, F_EPOCH, F_KEY, F_PREFIX,
	F_AFTER, F_SIZE, F_CRC, F_OFFSET, F_LENGTH, F_LIMIT, F_STATUS, F_SEQ, F_COUNT, F_MORE,
	F_COUNTERS, F_VER, F_FWD, F_VERS, F_HELD, F_HOMES, F_SUPERSEDED, F_TOMB, F_BUCKET,
	F_BUCKETS, F_CHECK_ONLY, F_RATE, F_DUTY, F_REPAIR, F_BUCKET_SET, F_BY_SET, F_COUNT_ALL
};

_Static_assert(F_COUNT_ALL <= 64, "field bits fit a uint64_t");

enum fkind { K_UINT, K_STR, K_NAME, K_BIN, K_BOOL, K_VERSION, K_COUNTERS, K_VER, K_FWD, K_HELD };

struct fdesc {
	const char *name;
	uint8_t kind;
	uint64_t min, max; /* UINT: value; STR/NAME/BIN: length */
};

static const struct fdesc fdescs[F_COUNT_ALL] = {
	[F_V] = { "v", K_VERSION, 0, 0 },
	[F_CERT] = { "cert", K_BIN, 1, OVL_CERT_MAX_BYTES },
	[F_NONCE] = { "nonce", K_BIN, OVL_WIRE_NONCE_BYTES, OVL_WIRE_NONCE_BYTES },
	[F_SLICE] = { "slice", K_NAME, 1, OVL_WIRE_NAME_SIZE - 1 },
	[F_PROOF] = { "proof", K_BIN, PROOF_BYTES, PROOF_BYTES },
	[F_CODE] = { "code", K_UINT, 1, UINT32_MAX },
	[F_MESSAGE] = { "message", K_STR, 0, OVL_WIRE_TEXT_SIZE - 1 },
	[F_EPOCH] = { "epoch", K_UINT, 0, UINT64_MAX },
	[F_KEY] = { "key", K_BIN, 1, OVL_WIRE_KEY_MAX_BYTES },
	[F_PREFIX] = { "prefix", K_BIN, 0, OVL_WIRE_KEY_MAX_BYTES },
	[F_AFTER] = { "after", K_BIN, 0, OVL_WIRE_KEY_MAX_BYTES },
	[F_SIZE] = { "size", K_UINT, 0, OVL_WIRE_OBJECT_MAX_BYTES },
	[F_CRC] = { "crc", K_UINT, 0, UINT32_MAX },
	[F_OFFSET] = { "offset", K_UINT, 0, OVL_WIRE_OBJECT_MAX_BYTES },
	[F_LENGTH] = { "length", K_UINT, 0, OVL_WIRE_OBJECT_MAX_BYTES },
	[F_LIMIT] = { "limit", K_UINT, 1, OVL_WIRE_LIST_MAX },
	[F_STATUS] = { "status", K_UINT, 0, UINT32_MAX },
	[F_SEQ] = { "seq", K_UINT, 0, UINT64_MAX },
	[F_COUNT] = { "count", K_UINT, 0, OVL_WIRE_LIST_MAX },
	[F_MORE] = { "more", K_BOOL, 0, 0 },
	[F_COUNTERS] = { "counters", K_COUNTERS, 0, OVL_WIRE_COUNTERS_MAX },
	[F_VER] = { "ver", K_VER, 0, 0 },
	[F_FWD] = { "fwd", K_FWD, 0, OVL_WIRE_CHAIN_MAX },
	[F_VERS] = { "vers", K_BOOL, 0, 0 },
	[F_HELD] = { "held", K_HELD, 0, OVL_WIRE_HELD_MAX },
	[F_HOMES] = { "homes", K_UINT, 0, OVL_WIRE_HELD_MAX },
	[F_SUPERSEDED] = { "superseded", K_BOOL, 0, 0 },
	[F_TOMB] = { "tomb", K_BOOL, 0, 0 },
	[F_BUCKET] = { "bucket", K_UINT, 0, OVL_WIRE_DIGEST_BUCKETS - 1 },
	[F_BUCKETS] = { "buckets", K_UINT, 0, OVL_WIRE_DIGEST_BUCKETS },
	[F_CHECK_ONLY] = { "check_only", K_BOOL, 0, 0 },
	[F_RATE] = { "rate", K_UINT, 0, UINT64_MAX },
	[F_DUTY] = { "duty", K_UINT, 1, 100 },
	[F_REPAIR] = { "repair", K_BOOL, 0, 0 },
	[F_BUCKET_SET] = { "bucket_set", K_BIN, OVL_WIRE_DIGEST_BUCKETS / 8, OVL_WIRE_DIGEST_BUCKETS / 8 },
	[F_BY_SET] = { "by_set", K_BOOL, 0, 0 },
};

#define BIT(f) (1ull << (f))
#define RESP_COMMON (BIT(F_STATUS) | BIT(F_MESSAGE) | BIT(F_EPOCH))
#define WRITE_REPL (BIT(F_VER) | BIT(F_FWD) | BIT(F_REPAIR))
#define WRITE_ANSWER (BIT(F_VER) | BIT(F_HELD) | BIT(F_HOMES) | BIT(F_SUPERSEDED))

struct fschema {
	uint8_t type;
	uint64_t known, required;
};

static const struct fschema fschemas[] = {
	{ OVL_WIRE_T_HELLO, BIT(F_V) | BIT(F_CERT) | BIT(F_NONCE) | BIT(F_SLICE),
	  BIT(F_V) | BIT(F_CERT) | BIT(F_NONCE) },
	{ OVL_WIRE_T_HELLO_OK, BIT(F_V) | BIT(F_CERT) | BIT(F_NONCE) | BIT(F_PROOF),
	  BIT(F_V) | BIT(F_CERT) | BIT(F_NONCE) | BIT(F_PROOF) },
	{ OVL_WIRE_T_ERROR, BIT(F_CODE) | BIT(F_MESSAGE), BIT(F_CODE) | BIT(F_MESSAGE) },
	{ OVL_WIRE_T_PUT,
	  BIT(F_SLICE) | BIT(F_EPOCH) | BIT(F_KEY) | BIT(F_SIZE) | BIT(F_CRC) | WRITE_REPL,
	  BIT(F_SLICE) | BIT(F_EPOCH) | BIT(F_KEY) | BIT(F_SIZE) | BIT(F_CRC) },
	{ OVL_WIRE_T_GET, BIT(F_SLICE) | BIT(F_EPOCH) | BIT(F_KEY) | BIT(F_OFFSET) | BIT(F_LENGTH),
	  BIT(F_SLICE) | BIT(F_EPOCH) | BIT(F_KEY) },
	{ OVL_WIRE_T_DELETE, BIT(F_SLICE) | BIT(F_EPOCH) | BIT(F_KEY) | WRITE_REPL,
	  BIT(F_SLICE) | BIT(F_EPOCH) | BIT(F_KEY) },
	{ OVL_WIRE_T_STAT, BIT(F_SLICE) | BIT(F_EPOCH) | BIT(F_KEY),
	  BIT(F_SLICE) | BIT(F_EPOCH) | BIT(F_KEY) },
	{ OVL_WIRE_T_LIST,
	  BIT(F_SLICE) | BIT(F_EPOCH) | BIT(F_PREFIX) | BIT(F_AFTER) | BIT(F_LIMIT) | BIT(F_VERS) |
	  BIT(F_BUCKET) | BIT(F_BUCKET_SET),
	  BIT(F_SLICE) | BIT(F_EPOCH) },
	{ OVL_WIRE_T_NODE_STAT, BIT(F_SLICE) | BIT(F_EPOCH), BIT(F_SLICE) | BIT(F_EPOCH) },
	{ OVL_WIRE_T_MAP, BIT(F_SLICE) | BIT(F_EPOCH), BIT(F_SLICE) | BIT(F_EPOCH) },
	{ OVL_WIRE_T_DIGEST, BIT(F_SLICE) | BIT(F_EPOCH) | BIT(F_BUCKETS),
	  BIT(F_SLICE) | BIT(F_EPOCH) },
	{ OVL_WIRE_T_HEAL, BIT(F_SLICE) | BIT(F_EPOCH) | BIT(F_CHECK_ONLY) | BIT(F_RATE) | BIT(F_DUTY),
	  BIT(F_SLICE) | BIT(F_EPOCH) },
	{ OVL_WIRE_T_PUT | OVL_WIRE_T_RESPONSE,
	  RESP_COMMON | BIT(F_SIZE) | BIT(F_CRC) | BIT(F_SEQ) | WRITE_ANSWER, RESP_COMMON },
	{ OVL_WIRE_T_GET | OVL_WIRE_T_RESPONSE,
	  RESP_COMMON | BIT(F_SIZE) | BIT(F_CRC) | BIT(F_OFFSET) | BIT(F_VER) | BIT(F_TOMB),
	  RESP_COMMON },
	{ OVL_WIRE_T_DELETE | OVL_WIRE_T_RESPONSE, RESP_COMMON | WRITE_ANSWER, RESP_COMMON },
	{ OVL_WIRE_T_STAT | OVL_WIRE_T_RESPONSE,
	  RESP_COMMON | BIT(F_SIZE) | BIT(F_CRC) | BIT(F_SEQ) | BIT(F_VER) | BIT(F_TOMB),
	  RESP_COMMON },
	{ OVL_WIRE_T_LIST | OVL_WIRE_T_RESPONSE,
	  RESP_COMMON | BIT(F_COUNT) | BIT(F_MORE) | BIT(F_CRC) | BIT(F_VERS) | BIT(F_BY_SET),
	  RESP_COMMON },
	{ OVL_WIRE_T_NODE_STAT | OVL_WIRE_T_RESPONSE, RESP_COMMON | BIT(F_COUNTERS), RESP_COMMON },
	{ OVL_WIRE_T_MAP | OVL_WIRE_T_RESPONSE, RESP_COMMON | BIT(F_CRC), RESP_COMMON },
	{ OVL_WIRE_T_DIGEST | OVL_WIRE_T_RESPONSE, RESP_COMMON | BIT(F_CRC), RESP_COMMON },
	{ OVL_WIRE_T_HEAL | OVL_WIRE_T_RESPONSE, RESP_COMMON | BIT(F_COUNTERS), RESP_COMMON },
};

static const struct fschema *fschema_find(uint8_t type)
{
	for (size_t i = 0; i < sizeof(fschemas) / sizeof(fschemas[0]); i++)
		if (fschemas[i].type == type)
			return &fschemas[i];
	return NULL;
}

/* What one meta map held: the values of the known keys, checked for type and range. */
struct meta {
	const char *frame;   /* type name, for errors */
	const uint8_t *end;  /* end of the meta */
	uint64_t seen;
	struct ovl_mpr_val val[F_COUNT_ALL];
	uint64_t ver_major, ver_minor;
	struct ovl_wire_ver ver;          /* F_VER */
	struct ovl_wire_fwd fwd;          /* F_FWD */
	uint32_t nheld;                   /* F_HELD */
	uint8_t held[OVL_WIRE_HELD_MAX][OVL_WIRE_NODE_ID_BYTES];
};

static const struct ovl_mp_limits meta_limits = {
	.max_depth = META_DEPTH_MAX,
	.max_bytes = OVL_WIRE_META_MAX_BYTES,
	.max_elems = META_ELEMS_MAX,
	.max_str = OVL_WIRE_META_MAX_BYTES,
	.allow_ext = false,
	.allow_float = false,
};

/* [hlc, node]: an array of exactly two unsigned integers. */
static int read_ver(struct meta *m, const char *field, struct ovl_mpr *r,
		    const struct ovl_mpr_val *v, struct ovl_wire_ver *out, char *err, size_t errlen)
{
	struct ovl_mpr_val a, b;

	if (v->kind != OVL_MPR_ARRAY || v->n != 2 || ovl_mpr_next(r, &a) < 0 ||
	    ovl_mpr_next(r, &b) < 0 || a.kind != OVL_MPR_UINT || b.kind != OVL_MPR_UINT)
		return fail(err, errlen, -EBADMSG,
			    "%s: field '%s' is not an array of two unsigned integers [hlc, node]",
			    m->frame, field);
	out->hlc = a.n;
	out->node = b.n;
	return 0;
}

/* A node id: bin of exactly 32 bytes. */
static int read_id(struct meta *m, const char *field, const struct ovl_mpr_val *v, uint8_t *out,
		   char *err, size_t errlen)
{
	if (v->kind != OVL_MPR_BIN || v->n != OVL_WIRE_NODE_ID_BYTES)
		return fail(err, errlen, -EBADMSG, "%s: field '%s' has a node id that is not a bin "
			    "of 32 bytes", m->frame, field);
	memcpy(out, v->ptr, OVL_WIRE_NODE_ID_BYTES);
	return 0;
}

/* A node id or nil (then *has is false). */
static int read_id_or_nil(struct meta *m, const char *field, const struct ovl_mpr_val *v,
			  bool *has, uint8_t *out, char *err, size_t errlen)
{
	*has = v->kind != OVL_MPR_NIL;
	return *has ? read_id(m, field, v, out, err, errlen) : 0;
}

/* fwd.chain: 0..OVL_WIRE_CHAIN_MAX entries [id, home|nil], ids distinct, home != id. */
static int read_chain(struct meta *m, struct ovl_mpr *r, const struct ovl_mpr_val *v, char *err,
		      size_t errlen)
{
	struct ovl_wire_fwd *f = &m->fwd;
	int ret;

	if (v->kind != OVL_MPR_ARRAY)
		return fail(err, errlen, -EBADMSG, "%s: field 'fwd.chain' is not an array", m->frame);
	if (v->n > OVL_WIRE_CHAIN_MAX)
		return fail(err, errlen, -EBADMSG,
			    "%s: field 'fwd.chain' has %llu entries, more than %d", m->frame,
			    (unsigned long long)v->n, OVL_WIRE_CHAIN_MAX);
	for (uint32_t i = 0; i < v->n; i++) {
		struct ovl_wire_hop *h = &f->chain[i];
		struct ovl_mpr_val e, id, home;

		if (ovl_mpr_next(r, &e) < 0 || e.kind != OVL_MPR_ARRAY || e.n != 2 ||
		    ovl_mpr_next(r, &id) < 0 || ovl_mpr_next(r, &home) < 0)
			return fail(err, errlen, -EBADMSG,
				    "%s: field 'fwd.chain' entry %u is not an array [id, home]",
				    m->frame, i);
		ret = read_id(m, "fwd.chain", &id, h->id, err, errlen);
		if (ret == 0)
			ret = read_id_or_nil(m, "fwd.chain", &home, &h->has_home, h->home, err,
					     errlen);
		if (ret < 0)
			return ret;
		if (h->has_home && memcmp(h->id, h->home, OVL_WIRE_NODE_ID_BYTES) == 0)
			return fail(err, errlen, -EBADMSG,
				    "%s: field 'fwd.chain' entry %u names itself as its home",
				    m->frame, i);
		for (uint32_t j = 0; j < i; j++)
			if (memcmp(f->chain[j].id, h->id, OVL_WIRE_NODE_ID_BYTES) == 0)
				return fail(err, errlen, -EBADMSG,
					    "%s: field 'fwd.chain' names a node twice", m->frame);
	}
	f->nchain = (uint32_t)v->n;
	return 0;
}

/* fwd: a map with `chain` and `home` (both required); other keys are skipped. */
static int read_fwd(struct meta *m, struct ovl_mpr *r, const struct ovl_mpr_val *v, char *err,
		    size_t errlen)
{
	const uint8_t *keys[FWD_KEYS_MAX];
	size_t klen[FWD_KEYS_MAX];
	bool chain = false, home = false;
	int ret;

	memset(&m->fwd, 0, sizeof(m->fwd));
	if (v->kind != OVL_MPR_MAP)
		return fail(err, errlen, -EBADMSG, "%s: field 'fwd' is not a map", m->frame);
	if (v->n > FWD_KEYS_MAX)
		return fail(err, errlen, -EBADMSG, "%s: field 'fwd' has %llu keys, more than %d",
			    m->frame, (unsigned long long)v->n, FWD_KEYS_MAX);
	for (uint32_t i = 0; i < v->n; i++) {
		struct ovl_mpr_val k, val;

		if (ovl_mpr_next(r, &k) < 0 || k.kind != OVL_MPR_STR ||
		    !ovl_mp_utf8_valid(k.ptr, k.n))
			return fail(err, errlen, -EBADMSG, "%s: field 'fwd' has a key that is not a "
				    "UTF-8 string", m->frame);
		for (uint32_t j = 0; j < i; j++)
			if (klen[j] == k.n && memcmp(keys[j], k.ptr, k.n) == 0)
				return fail(err, errlen, -EBADMSG, "%s: field 'fwd' has a duplicate "
					    "key", m->frame);
		keys[i] = k.ptr;
		klen[i] = k.n;
		if (k.n == 5 && memcmp(k.ptr, "chain", 5) == 0) {
			if (ovl_mpr_next(r, &val) < 0)
				return fail(err, errlen, -EBADMSG, "%s: field 'fwd' is truncated",
					    m->frame);
			ret = read_chain(m, r, &val, err, errlen);
			chain = true;
		} else if (k.n == 4 && memcmp(k.ptr, "home", 4) == 0) {
			if (ovl_mpr_next(r, &val) < 0)
				return fail(err, errlen, -EBADMSG, "%s: field 'fwd' is truncated",
					    m->frame);
			ret = read_id_or_nil(m, "fwd.home", &val, &m->fwd.has_home, m->fwd.home,
					     err, errlen);
			home = true;
		} else {
			ret = ovl_mpr_skip(r, 1) < 0 ? fail(err, errlen, -EBADMSG,
							    "%s: field 'fwd' is truncated", m->frame)
						     : 0;
		}
		if (ret < 0)
			return ret;
	}
	if (!chain || !home)
		return fail(err, errlen, -EBADMSG, "%s: field 'fwd' lacks '%s'", m->frame,
			    chain ? "home" : "chain");
	return 0;
}

/* held: 0..OVL_WIRE_HELD_MAX distinct node ids. */
static int read_held(struct meta *m, struct ovl_mpr *r, const struct ovl_mpr_val *v, char *err,
		     size_t errlen)
{
	int ret;

	if (v->kind != OVL_MPR_ARRAY)
		return fail(err, errlen, -EBADMSG, "%s: field 'held' is not an array", m->frame);
	if (v->n > OVL_WIRE_HELD_MAX)
		return fail(err, errlen, -EBADMSG, "%s: field 'held' has %llu entries, more than %d",
			    m->frame, (unsigned long long)v->n, OVL_WIRE_HELD_MAX);
	for (uint32_t i = 0; i < v->n; i++) {
		struct ovl_mpr_val e;

		if (ovl_mpr_next(r, &e) < 0)
			return fail(err, errlen, -EBADMSG, "%s: field 'held' is truncated", m->frame);
		ret = read_id(m, "held", &e, m->held[i], err, errlen);
		if (ret < 0)
			return ret;
		for (uint32_t j = 0; j < i; j++)
			if (memcmp(m->held[j], m->held[i], OVL_WIRE_NODE_ID_BYTES) == 0)
				return fail(err, errlen, -EBADMSG,
					    "%s: field 'held' names a node twice", m->frame);
	}
	m->nheld = (uint32_t)v->n;
	return 0;
}

static int check_value(struct meta *m, enum fid id, struct ovl_mpr *r, const struct ovl_mpr_val *v, char *err,
		       size_t errlen)
{
	const struct fdesc *d = &fdescs[id];
	struct ovl_mpr_val a, b;

	switch (d->kind) {
	case K_UINT:
		if (v->kind != OVL_MPR_UINT)
			return fail(err, errlen, -EBADMSG, "%s: field '%s' is not an unsigned integer",
				    m->frame, d->name);
		if (v->n < d->min || v->n > d->max)
			return fail(err, errlen, -EBADMSG,
				    "%s: field '%s' is %llu, outside %llu..%llu", m->frame, d->name,
				    (unsigned long long)v->n, (unsigned long long)d->min,
				    (unsigned long long)d->max);
		return 0;
	case K_BOOL:
		if (v->kind != OVL_MPR_BOOL)
			return fail(err, errlen, -EBADMSG, "%s: field '%s' is not a boolean",
				    m->frame, d->name);
		return 0;
	case K_STR:
	case K_NAME:
		if (v->kind != OVL_MPR_STR)
			return fail(err, errlen, -EBADMSG, "%s: field '%s' is not a string",
				    m->frame, d->name);
		if (v->n < d->min || v->n > d->max)
			return fail(err, errlen, -EBADMSG, "%s: field '%s' has %llu bytes, not %llu..%llu",
				    m->frame, d->name, (unsigned long long)v->n,
				    (unsigned long long)d->min, (unsigned long long)d->max);
		if (d->kind == K_NAME ? !printable(v->ptr, v->n) : !ovl_mp_utf8_valid(v->ptr, v->n))
			return fail(err, errlen, -EBADMSG, "%s: field '%s' is not %s", m->frame,
				    d->name, d->kind == K_NAME ? "printable ASCII" : "valid UTF-8");
		return 0;
	case K_BIN:
		if (v->kind != OVL_MPR_BIN)
			return fail(err, errlen, -EBADMSG, "%s: field '%s' is not a bin", m->frame,
				    d->name);
		if (v->n < d->min || v->n > d->max)
			return fail(err, errlen, -EBADMSG, "%s: field '%s' has %llu bytes, not %llu..%llu",
				    m->frame, d->name, (unsigned long long)v->n,
				    (unsigned long long)d->min, (unsigned long long)d->max);
		return 0;
	case K_VERSION:
		if (v->kind != OVL_MPR_ARRAY || v->n != 2 || ovl_mpr_next(r, &a) < 0 || ovl_mpr_next(r, &b) < 0 ||
		    a.kind != OVL_MPR_UINT || b.kind != OVL_MPR_UINT || a.n > UINT32_MAX || b.n > UINT32_MAX)
			return fail(err, errlen, -EBADMSG,
				    "%s: field 'v' is not an array of two unsigned integers", m->frame);
		m->ver_major = a.n;
		m->ver_minor = b.n;
		return 0;
	case K_VER:
		return read_ver(m, d->name, r, v, &m->ver, err, errlen);
	case K_FWD:
		return read_fwd(m, r, v, err, errlen);
	case K_HELD:
		return read_held(m, r, v, err, errlen);
	default: /* K_COUNTERS: entries checked when they are read */
		if (v->kind != OVL_MPR_MAP)
			return fail(err, errlen, -EBADMSG, "%s: field '%s' is not a map", m->frame,
				    d->name);
		if (v->n > d->max)
			return fail(err, errlen, -EBADMSG, "%s: field '%s' has %llu entries, more than %llu",
				    m->frame, d->name, (unsigned long long)v->n,
				    (unsigned long long)d->max);
		return ovl_mpr_skip(r, 2 * v->n) < 0
			       ? fail(err, errlen, -EBADMSG, "%s: field '%s' is truncated", m->frame,
				      d->name)
			       : 0;
	}
}

/* Walks the meta, then reads its map's keys into m. Required keys are the caller's. */
static int meta_read(struct meta *m, uint8_t type, const uint8_t *buf, size_t len, char *err,
		     size_t errlen)
{
	const struct fschema *s = fschema_find(type);
	const uint8_t *unknown[META_KEYS_MAX];
	size_t unknown_len[META_KEYS_MAX];
	unsigned nunknown = 0;
	struct ovl_mpr r = { buf, buf + len };
	size_t used = 0;
	char why[160];
	struct ovl_mpr_val v;
	int ret;

	memset(m, 0, sizeof(*m));
	m->frame = ovl_wire_type_name(type);
	m->end = buf + len;
	if (!s)
		return fail(err, errlen, -EBADMSG, "frame: unknown type 0x%02x", type);
	if (len > OVL_WIRE_META_MAX_BYTES)
		return fail(err, errlen, -E2BIG, "%s: meta of %zu bytes is over the cap", m->frame, len);
	why[0] = '\0';
	ret = ovl_mp_check(buf, len, &meta_limits, &used, why, sizeof(why));
	if (ret < 0)
		return fail(err, errlen, ret == -ELOOP ? -EBADMSG : ret, "%s: meta: %s", m->frame, why);
	if (used != len)
		return fail(err, errlen, -EBADMSG, "%s: %zu bytes follow the meta map", m->frame,
			    len - used);
	if (ovl_mpr_next(&r, &v) < 0 || v.kind != OVL_MPR_MAP)
		return fail(err, errlen, -EBADMSG, "%s: meta is not a map", m->frame);
	if (v.n > META_KEYS_MAX)
		return fail(err, errlen, -EBADMSG, "%s: meta has %llu keys, more than %d", m->frame,
			    (unsigned long long)v.n, META_KEYS_MAX);
	for (uint64_t i = v.n; i > 0; i--) {
		struct ovl_mpr_val key, val;
		int id = -1;

		if (ovl_mpr_next(&r, &key) < 0 || key.kind != OVL_MPR_STR)
			return fail(err, errlen, -EBADMSG, "%s: a meta key is not a string", m->frame);
		for (int f = 0; f < F_COUNT_ALL; f++)
			if ((s->known & BIT(f)) && strlen(fdescs[f].name) == key.n &&
			    memcmp(fdescs[f].name, key.ptr, key.n) == 0)
				id = f;
		if (id < 0) {
			if (!ovl_mp_utf8_valid(key.ptr, key.n))
				return fail(err, errlen, -EBADMSG, "%s: a meta key is not valid UTF-8",
					    m->frame);
			for (unsigned j = 0; j < nunknown; j++)
				if (unknown_len[j] == key.n && memcmp(unknown[j], key.ptr, key.n) == 0)
					return fail(err, errlen, -EBADMSG, "%s: duplicate key",
						    m->frame);
			unknown[nunknown] = key.ptr;
			unknown_len[nunknown++] = key.n;
			if (ovl_mpr_skip(&r, 1) < 0)
				return fail(err, errlen, -EBADMSG, "%s: meta is truncated", m->frame);
			continue;
		}
		if (m->seen & BIT(id))
			return fail(err, errlen, -EBADMSG, "%s: duplicate key '%s'", m->frame,
				    fdescs[id].name);
		if (ovl_mpr_next(&r, &val) < 0)
			return fail(err, errlen, -EBADMSG, "%s: field '%s' is truncated", m->frame,
				    fdescs[id].name);
		ret = check_value(m, (enum fid)id, &r, &val, err, errlen);
		if (ret < 0)
			return ret;
		m->seen |= BIT(id);
		m->val[id] = val;
	}
	return 0;
}

static int meta_required(const struct meta *m, uint8_t type, char *err, size_t errlen)
{
	const struct fschema *s = fschema_find(type);

	for (int f = 0; f < F_COUNT_ALL; f++)
		if ((s->required & BIT(f)) && !(m->seen & BIT(f)))
			return fail(err, errlen, -EBADMSG, "%s: required field '%s' is missing",
				    m->frame, fdescs[f].name);
	return 0;
}

static void copy_str(char *dst, const struct ovl_mpr_val *v)
{
	memcpy(dst, v->ptr, v->n);
	dst[v->n] = '\0';
}

/* ---- requests and responses -------------------------------------------------- */

static bool name_ok(const char *s, size_t max)
{
	size_t n = strnlen(s, max + 1);

	return n >= 1 && n <= max && printable((const uint8_t *)s, n);
}

/* The rules read_fwd() and ovl_wire_req_decode() apply to `ver` and `fwd`. */
static int req_repl_check(const struct ovl_wire_req *r, const char *name, char *err,
			  size_t errlen)
{
	const struct ovl_wire_fwd *f = &r->fwd;

	if (r->type != OVL_WIRE_T_PUT && r->type != OVL_WIRE_T_DELETE)
		return fail(err, errlen, -EINVAL, "%s: fields 'ver' and 'fwd' are for PUT and "
			    "DELETE only", name);
	if (r->has_ver != r->has_fwd)
		return fail(err, errlen, -EINVAL, "%s: fields 'ver' and 'fwd' go together", name);
	if (r->ver.hlc == 0)
		return fail(err, errlen, -EINVAL, "%s: field 'ver' has hlc 0 (no version)", name);
	if (f->nchain > OVL_WIRE_CHAIN_MAX)
		return fail(err, errlen, -EINVAL, "%s: field 'fwd.chain' has more than %d entries",
			    name, OVL_WIRE_CHAIN_MAX);
	for (uint32_t i = 0; i < f->nchain; i++) {
		if (f->chain[i].has_home &&
		    memcmp(f->chain[i].id, f->chain[i].home, OVL_WIRE_NODE_ID_BYTES) == 0)
			return fail(err, errlen, -EINVAL, "%s: field 'fwd.chain' entry %u names "
				    "itself as its home", name, i);
		for (uint32_t j = 0; j < i; j++)
			if (memcmp(f->chain[j].id, f->chain[i].id, OVL_WIRE_NODE_ID_BYTES) == 0)
				return fail(err, errlen, -EINVAL, "%s: field 'fwd.chain' names a "
					    "node twice", name);
	}
	return 0;
}

int ovl_wire_req_encode(const struct ovl_wire_req *r, uint8_t *out, size_t cap, char *err,
			size_t errlen)
{
	const char *name = ovl_wire_type_name(r->type);
	struct wb w = { out, cap, 0, false };
	size_t n = 2;
	int ret;

	if (!is_request(r->type))
		return fail(err, errlen, -EINVAL, "request: type 0x%02x is not a request", r->type);
	if (!name_ok(r->slice, OVL_WIRE_NAME_SIZE - 1))
		return fail(err, errlen, -EINVAL, "%s: field 'slice' must be 1..63 printable bytes",
			    name);
	if (r->key_len > OVL_WIRE_KEY_MAX_BYTES || r->after_len > OVL_WIRE_KEY_MAX_BYTES ||
	    (r->type != OVL_WIRE_T_LIST && r->type != OVL_WIRE_T_NODE_STAT &&
	     r->type != OVL_WIRE_T_MAP && r->type != OVL_WIRE_T_DIGEST &&
	     r->type != OVL_WIRE_T_HEAL && r->key_len == 0))
		return fail(err, errlen, -EINVAL, "%s: field '%s' must be %s..1024 bytes", name,
			    r->type == OVL_WIRE_T_LIST ? "prefix" : "key",
			    r->type == OVL_WIRE_T_LIST ? "0" : "1");
	if (r->type == OVL_WIRE_T_PUT && r->size > OVL_WIRE_OBJECT_MAX_BYTES)
		return fail(err, errlen, -EINVAL, "put: field 'size' is over 64 MiB");
	if (r->type == OVL_WIRE_T_GET && r->has_range &&
	    (r->offset > OVL_WIRE_OBJECT_MAX_BYTES || r->length > OVL_WIRE_OBJECT_MAX_BYTES))
		return fail(err, errlen, -EINVAL, "get: field 'offset' or 'length' is over 64 MiB");
	if (r->type == OVL_WIRE_T_LIST && r->limit > OVL_WIRE_LIST_MAX)
		return fail(err, errlen, -EINVAL, "list: field 'limit' is over %d", OVL_WIRE_LIST_MAX);
	if (r->vers && r->type != OVL_WIRE_T_LIST)
		return fail(err, errlen, -EINVAL, "%s: field 'vers' is for LIST only", name);
	if (r->has_bucket && r->type != OVL_WIRE_T_LIST)
		return fail(err, errlen, -EINVAL, "%s: field 'bucket' is for LIST only", name);
	if (r->has_bucket_set &&
	    (!r->has_bucket || !(r->bucket_set[r->bucket / 8] & (1u << (r->bucket % 8)))))
		return fail(err, errlen, -EINVAL, "%s: field 'bucket_set' needs 'bucket', in the set",
			    name);
	if (r->buckets && (r->type != OVL_WIRE_T_DIGEST || r->buckets != OVL_WIRE_DIGEST_BUCKETS))
		return fail(err, errlen, -EINVAL, "%s: field 'buckets' is 0 or %d, for DIGEST only",
			    name, OVL_WIRE_DIGEST_BUCKETS);
	if ((r->check_only || r->has_rate || r->has_duty) && r->type != OVL_WIRE_T_HEAL)
		return fail(err, errlen, -EINVAL, "%s: fields 'check_only', 'rate' and 'duty' are "
			    "for HEAL only", name);
	if (r->has_duty && (r->duty < 1 || r->duty > 100))
		return fail(err, errlen, -EINVAL, "%s: field 'duty' is outside 1..100", name);
	if (r->repair && !r->has_ver)
		return fail(err, errlen, -EINVAL, "%s: field 'repair' needs 'ver' and 'fwd'", name);
	if (r->has_ver || r->has_fwd) {
		ret = req_repl_check(r, name, err, errlen);
		if (ret < 0)
			return ret;
		n += 2;
	}
	switch (r->type) {
	case OVL_WIRE_T_PUT: n += 3; break;
	case OVL_WIRE_T_GET: n += 1 + (r->has_range ? 2 : 0); break;
	case OVL_WIRE_T_DELETE: case OVL_WIRE_T_STAT: n += 1; break;
	case OVL_WIRE_T_LIST:
		n += (r->key_len > 0) + (r->after_len > 0) + (r->limit > 0) + r->vers +
		     r->has_bucket + r->has_bucket_set;
		break;
	case OVL_WIRE_T_DIGEST: n += r->buckets > 0; break;
	case OVL_WIRE_T_HEAL: n += r->check_only + r->has_rate + r->has_duty; break;
	default: break;
	}
	n += r->repair;
	w_map(&w, n);
	w_key(&w, "slice");
	w_str(&w, r->slice, strlen(r->slice));
	w_key(&w, "epoch");
	w_uint(&w, r->epoch);
	if (r->type == OVL_WIRE_T_LIST) {
		if (r->key_len) {
			w_key(&w, "prefix");
			w_bin(&w, r->key, r->key_len);
		}
		if (r->after_len) {
			w_key(&w, "after");
			w_bin(&w, r->after, r->after_len);
		}
		if (r->limit) {
			w_key(&w, "limit");
			w_uint(&w, r->limit);
		}
		if (r->vers) {
			w_key(&w, "vers");
			w_bool(&w, true);
		}
		if (r->has_bucket) {
			w_key(&w, "bucket");
			w_uint(&w, r->bucket);
		}
		if (r->has_bucket_set) {
			w_key(&w, "bucket_set");
			w_bin(&w, r->bucket_set, sizeof(r->bucket_set));
		}
	} else if (r->type == OVL_WIRE_T_DIGEST) {
		if (r->buckets) {
			w_key(&w, "buckets");
			w_uint(&w, r->buckets);
		}
	} else if (r->type == OVL_WIRE_T_HEAL) {
		if (r->check_only) {
			w_key(&w, "check_only");
			w_bool(&w, true);
		}
		if (r->has_rate) {
			w_key(&w, "rate");
			w_uint(&w, r->rate);
		}
		if (r->has_duty) {
			w_key(&w, "duty");
			w_uint(&w, r->duty);
		}
	} else if (r->type != OVL_WIRE_T_NODE_STAT && r->type != OVL_WIRE_T_MAP) {
		w_key(&w, "key");
		w_bin(&w, r->key, r->key_len);
	}
	if (r->type == OVL_WIRE_T_PUT) {
		w_key(&w, "size");
		w_uint(&w, r->size);
		w_key(&w, "crc");
		w_uint(&w, r->crc);
	}
	if (r->type == OVL_WIRE_T_GET && r->has_range) {
		w_key(&w, "offset");
		w_uint(&w, r->offset);
		w_key(&w, "length");
		w_uint(&w, r->length);
	}
	if (r->has_ver) {
		w_key(&w, "ver");
		w_ver(&w, &r->ver);
		w_key(&w, "fwd");
		w_map(&w, 2);
		w_key(&w, "chain");
		w_array(&w, r->fwd.nchain);
		for (uint32_t i = 0; i < r->fwd.nchain; i++) {
			w_array(&w, 2);
			w_bin(&w, r->fwd.chain[i].id, OVL_WIRE_NODE_ID_BYTES);
			w_id_or_nil(&w, r->fwd.chain[i].has_home, r->fwd.chain[i].home);
		}
		w_key(&w, "home");
		w_id_or_nil(&w, r->fwd.has_home, r->fwd.home);
	}
	if (r->repair) {
		w_key(&w, "repair");
		w_bool(&w, true);
	}
	if (w.full || w.len > OVL_WIRE_META_MAX_BYTES)
		return fail(err, errlen, -ENOSPC, "%s: meta does not fit in %zu bytes", name, cap);
	return (int)w.len;
}

int ovl_wire_req_decode(uint8_t type, const uint8_t *meta, size_t len, struct ovl_wire_req *r,
			char *err, size_t errlen)
{
	struct meta m;
	int ret;

	memset(r, 0, sizeof(*r));
	if (!is_request(type))
		return fail(err, errlen, -EBADMSG, "frame: type 0x%02x is not a request", type);
	ret = meta_read(&m, type, meta, len, err, errlen);
	if (ret == 0)
		ret = meta_required(&m, type, err, errlen);
	if (ret == 0 && !!(m.seen & BIT(F_OFFSET)) != !!(m.seen & BIT(F_LENGTH)))
		ret = fail(err, errlen, -EBADMSG, "get: fields 'offset' and 'length' go together");
	if (ret == 0 && !!(m.seen & BIT(F_VER)) != !!(m.seen & BIT(F_FWD)))
		ret = fail(err, errlen, -EBADMSG, "%s: fields 'ver' and 'fwd' go together", m.frame);
	if (ret == 0 && (m.seen & BIT(F_VER)) && m.ver.hlc == 0)
		ret = fail(err, errlen, -EBADMSG, "%s: field 'ver' has hlc 0 (no version)", m.frame);
	if (ret == 0 && m.val[F_REPAIR].n && !(m.seen & BIT(F_VER)))
		ret = fail(err, errlen, -EBADMSG, "%s: field 'repair' needs 'ver' and 'fwd'", m.frame);
	if (ret == 0 && (m.seen & BIT(F_BUCKET_SET)) &&
	    (!(m.seen & BIT(F_BUCKET)) ||
	     !(((const uint8_t *)m.val[F_BUCKET_SET].ptr)[m.val[F_BUCKET].n / 8] &
	       (1u << (m.val[F_BUCKET].n % 8)))))
		ret = fail(err, errlen, -EBADMSG, "%s: field 'bucket_set' needs 'bucket', in the set",
			   m.frame);
	if (ret == 0 && (m.seen & BIT(F_BUCKETS)) && m.val[F_BUCKETS].n != 0 &&
	    m.val[F_BUCKETS].n != OVL_WIRE_DIGEST_BUCKETS)
		ret = fail(err, errlen, -EBADMSG, "%s: field 'buckets' is %llu, not 0 or %d", m.frame,
			   (unsigned long long)m.val[F_BUCKETS].n, OVL_WIRE_DIGEST_BUCKETS);
	if (ret < 0) {
		memset(r, 0, sizeof(*r));
		return ret;
	}
	r->type = type;
	copy_str(r->slice, &m.val[F_SLICE]);
	r->epoch = m.val[F_EPOCH].n;
	if (m.seen & BIT(F_KEY)) {
		memcpy(r->key, m.val[F_KEY].ptr, m.val[F_KEY].n);
		r->key_len = (uint32_t)m.val[F_KEY].n;
	}
	if (m.seen & BIT(F_PREFIX)) {
		memcpy(r->key, m.val[F_PREFIX].ptr, m.val[F_PREFIX].n);
		r->key_len = (uint32_t)m.val[F_PREFIX].n;
	}
	if (m.seen & BIT(F_AFTER)) {
		memcpy(r->after, m.val[F_AFTER].ptr, m.val[F_AFTER].n);
		r->after_len = (uint32_t)m.val[F_AFTER].n;
	}
	r->size = m.val[F_SIZE].n;
	r->crc = (uint32_t)m.val[F_CRC].n;
	r->has_range = (m.seen & BIT(F_OFFSET)) != 0;
	r->offset = m.val[F_OFFSET].n;
	r->length = m.val[F_LENGTH].n;
	r->limit = (uint32_t)m.val[F_LIMIT].n;
	r->vers = m.val[F_VERS].n != 0;
	r->has_ver = (m.seen & BIT(F_VER)) != 0;
	if (r->has_ver)
		r->ver = m.ver;
	r->has_fwd = (m.seen & BIT(F_FWD)) != 0;
	if (r->has_fwd)
		r->fwd = m.fwd;
	r->has_bucket = (m.seen & BIT(F_BUCKET)) != 0;
	r->bucket = (uint8_t)m.val[F_BUCKET].n;
	r->has_bucket_set = (m.seen & BIT(F_BUCKET_SET)) != 0;
	if (r->has_bucket_set)
		memcpy(r->bucket_set, m.val[F_BUCKET_SET].ptr, sizeof(r->bucket_set));
	r->buckets = (uint32_t)m.val[F_BUCKETS].n;
	r->check_only = m.val[F_CHECK_ONLY].n != 0;
	r->has_rate = (m.seen & BIT(F_RATE)) != 0;
	r->rate = m.val[F_RATE].n;
	r->has_duty = (m.seen & BIT(F_DUTY)) != 0;
	r->duty = (uint32_t)m.val[F_DUTY].n;
	r->repair = m.val[F_REPAIR].n != 0;
	return 0;
}

/* The rules ovl_wire_resp_decode() applies to the replication fields. */
static int resp_repl_check(const struct ovl_wire_resp *r, uint8_t op, const char *name,
			   char *err, size_t errlen)
{
	bool write = op == OVL_WIRE_T_PUT || op == OVL_WIRE_T_DELETE;
	bool read = op == OVL_WIRE_T_GET || op == OVL_WIRE_T_STAT;

	if (r->has_ver && !write && !read)
		return fail(err, errlen, -EINVAL, "%s: field 'ver' is for PUT, DELETE, GET and "
			    "STAT only", name);
	if (r->tomb && (!read || !r->has_ver || r->status != OVL_WIRE_NOT_FOUND))
		return fail(err, errlen, -EINVAL, "%s: field 'tomb' needs 'ver' and status "
			    "not-found (GET, STAT)", name);
	if (r->vers && op != OVL_WIRE_T_LIST)
		return fail(err, errlen, -EINVAL, "%s: field 'vers' is for LIST only", name);
	if ((r->has_held || r->superseded || r->homes) && !write)
		return fail(err, errlen, -EINVAL, "%s: fields 'held', 'homes' and 'superseded' are "
			    "for PUT and DELETE only", name);
	if (r->homes && !r->has_held)
		return fail(err, errlen, -EINVAL, "%s: field 'homes' needs 'held'", name);
	if (r->nheld > OVL_WIRE_HELD_MAX || (!r->has_held && r->nheld))
		return fail(err, errlen, -EINVAL, "%s: field 'held' has more than %d entries", name,
			    OVL_WIRE_HELD_MAX);
	if (r->homes > r->nheld)
		return fail(err, errlen, -EINVAL, "%s: field 'homes' (%u) is more than 'held' has "
			    "(%u)", name, r->homes, r->nheld);
	for (uint32_t i = 0; i < r->nheld; i++)
		for (uint32_t j = 0; j < i; j++)
			if (memcmp(r->held[i], r->held[j], OVL_WIRE_NODE_ID_BYTES) == 0)
				return fail(err, errlen, -EINVAL,
					    "%s: field 'held' names a node twice", name);
	return 0;
}

int ovl_wire_resp_encode(const struct ovl_wire_resp *r, uint8_t *out, size_t cap, char *err,
			 size_t errlen)
{
	const char *name = ovl_wire_type_name(r->type);
	uint8_t op = r->type & ~OVL_WIRE_T_RESPONSE;
	struct wb w = { out, cap, 0, false };
	size_t mlen = strnlen(r->message, OVL_WIRE_TEXT_SIZE);
	bool sized = op == OVL_WIRE_T_PUT || op == OVL_WIRE_T_GET || op == OVL_WIRE_T_STAT;
	bool ok = r->status == OVL_WIRE_OK;
	bool counted = op == OVL_WIRE_T_NODE_STAT || op == OVL_WIRE_T_HEAL;
	size_t n = 3;
	int ret;

	if (!is_response(r->type))
		return fail(err, errlen, -EINVAL, "response: type 0x%02x is not a response", r->type);
	if (mlen >= OVL_WIRE_TEXT_SIZE || !ovl_mp_utf8_valid((const uint8_t *)r->message, mlen))
		return fail(err, errlen, -EINVAL, "%s: field 'message' must be 0..255 bytes of UTF-8",
			    name);
	if (sized && r->size > OVL_WIRE_OBJECT_MAX_BYTES)
		return fail(err, errlen, -EINVAL, "%s: field 'size' is over 64 MiB", name);
	if (op == OVL_WIRE_T_GET && r->offset > OVL_WIRE_OBJECT_MAX_BYTES)
		return fail(err, errlen, -EINVAL, "%s: field 'offset' is over 64 MiB", name);
	if (op == OVL_WIRE_T_LIST && r->count > OVL_WIRE_LIST_MAX)
		return fail(err, errlen, -EINVAL, "%s: field 'count' is over %d", name,
			    OVL_WIRE_LIST_MAX);
	if (counted && r->ncounters > OVL_WIRE_COUNTERS_MAX)
		return fail(err, errlen, -EINVAL, "%s: field 'counters' has more than %d entries",
			    name, OVL_WIRE_COUNTERS_MAX);
	for (uint32_t i = 0; counted && i < r->ncounters; i++)
		if (!name_ok(r->counters[i].name, OVL_WIRE_NAME_SIZE - 1))
			return fail(err, errlen, -EINVAL,
				    "%s: counter %u name must be 1..63 printable bytes", name, i);
	ret = resp_repl_check(r, op, name, err, errlen);
	if (ret < 0)
		return ret;
	/* replication fields go out whenever set; n counts them */
	n += r->has_ver + r->tomb + r->vers + (r->has_held ? 2 : 0) + r->superseded;
	/* per-op fields go out on success only */
	if (ok) {
		if (op == OVL_WIRE_T_PUT || op == OVL_WIRE_T_STAT)
			n += 3;
		else if (op == OVL_WIRE_T_GET)
			n += 3;
		else if (op == OVL_WIRE_T_LIST)
			n += 3 + r->by_set;
		else if (counted || op == OVL_WIRE_T_MAP || op == OVL_WIRE_T_DIGEST)
			n += 1;
	}
	w_map(&w, n);
	w_key(&w, "status");
	w_uint(&w, r->status);
	w_key(&w, "message");
	w_str(&w, r->message, mlen);
	w_key(&w, "epoch");
	w_uint(&w, r->epoch);
	if (ok && sized) {
		w_key(&w, "size");
		w_uint(&w, r->size);
		w_key(&w, "crc");
		w_uint(&w, r->crc);
		if (op == OVL_WIRE_T_GET) {
			w_key(&w, "offset");
			w_uint(&w, r->offset);
		} else {
			w_key(&w, "seq");
			w_uint(&w, r->seq);
		}
	}
	if (ok && op == OVL_WIRE_T_LIST) {
		w_key(&w, "count");
		w_uint(&w, r->count);
		w_key(&w, "more");
		w_byte(&w, r->more ? 0xc3 : 0xc2);
		w_key(&w, "crc");
		w_uint(&w, r->crc);
		if (r->by_set) {
			w_key(&w, "by_set");
			w_byte(&w, 0xc3);
		}
	}
	if (ok && (op == OVL_WIRE_T_MAP || op == OVL_WIRE_T_DIGEST)) {
		w_key(&w, "crc");
		w_uint(&w, r->crc);
	}
	if (ok && counted) {
		w_key(&w, "counters");
		w_map(&w, r->ncounters);
		for (uint32_t i = 0; i < r->ncounters; i++) {
			w_key(&w, r->counters[i].name);
			w_uint(&w, r->counters[i].value);
		}
	}
	if (r->has_ver) {
		w_key(&w, "ver");
		w_ver(&w, &r->ver);
	}
	if (r->tomb) {
		w_key(&w, "tomb");
		w_bool(&w, true);
	}
	if (r->vers) {
		w_key(&w, "vers");
		w_bool(&w, true);
	}
	if (r->has_held) {
		w_key(&w, "held");
		w_array(&w, r->nheld);
		for (uint32_t i = 0; i < r->nheld; i++)
			w_bin(&w, r->held[i], OVL_WIRE_NODE_ID_BYTES);
		w_key(&w, "homes");
		w_uint(&w, r->homes);
	}
	if (r->superseded) {
		w_key(&w, "superseded");
		w_bool(&w, true);
	}
	if (w.full || w.len > OVL_WIRE_META_MAX_BYTES)
		return fail(err, errlen, -ENOSPC, "%s: meta does not fit in %zu bytes", name, cap);
	return (int)w.len;
}

static int counters_read(struct meta *m, struct ovl_wire_resp *r, char *err, size_t errlen)
{
	const struct ovl_mpr_val *cv = &m->val[F_COUNTERS];
	struct ovl_mpr rd = { cv->ptr, m->end };

	for (uint32_t i = 0; i < cv->n; i++) {
		struct ovl_mpr_val k, v;

		if (ovl_mpr_next(&rd, &k) < 0 || ovl_mpr_next(&rd, &v) < 0)
			return fail(err, errlen, -EBADMSG, "%s: field 'counters' is truncated", m->frame);
		if (k.kind != OVL_MPR_STR || k.n < 1 || k.n > OVL_WIRE_NAME_SIZE - 1 ||
		    !printable(k.ptr, k.n))
			return fail(err, errlen, -EBADMSG,
				    "%s: field 'counters' has a name that is not 1..63 printable bytes",
				    m->frame);
		if (v.kind != OVL_MPR_UINT)
			return fail(err, errlen, -EBADMSG,
				    "%s: field 'counters' has a value that is not an unsigned integer",
				    m->frame);
		for (uint32_t j = 0; j < i; j++)
			if (strlen(r->counters[j].name) == k.n &&
			    memcmp(r->counters[j].name, k.ptr, k.n) == 0)
				return fail(err, errlen, -EBADMSG,
					    "%s: field 'counters' has a duplicate name", m->frame);
		copy_str(r->counters[i].name, &k);
		r->counters[i].value = v.n;
	}
	r->ncounters = (uint32_t)cv->n;
	return 0;
}

int ovl_wire_resp_decode(uint8_t type, const uint8_t *meta, size_t len, struct ovl_wire_resp *r,
			 char *err, size_t errlen)
{
	struct meta m;
	int ret;

	memset(r, 0, sizeof(*r));
	if (!is_response(type))
		return fail(err, errlen, -EBADMSG, "frame: type 0x%02x is not a response", type);
	ret = meta_read(&m, type, meta, len, err, errlen);
	if (ret == 0)
		ret = meta_required(&m, type, err, errlen);
	if (ret == 0 && (m.seen & BIT(F_COUNTERS)))
		ret = counters_read(&m, r, err, errlen);
	if (ret == 0 && m.val[F_TOMB].n &&
	    (!(m.seen & BIT(F_VER)) || m.val[F_STATUS].n != OVL_WIRE_NOT_FOUND))
		ret = fail(err, errlen, -EBADMSG, "%s: field 'tomb' needs 'ver' and status "
			   "not-found", m.frame);
	if (ret == 0 && (m.seen & BIT(F_HOMES)) && !(m.seen & BIT(F_HELD)))
		ret = fail(err, errlen, -EBADMSG, "%s: field 'homes' needs 'held'", m.frame);
	if (ret == 0 && m.val[F_HOMES].n > m.nheld)
		ret = fail(err, errlen, -EBADMSG, "%s: field 'homes' (%llu) is more than 'held' has "
			   "(%u)", m.frame, (unsigned long long)m.val[F_HOMES].n, m.nheld);
	if (ret < 0) {
		memset(r, 0, sizeof(*r));
		return ret;
	}
	r->type = type;
	r->status = (uint32_t)m.val[F_STATUS].n;
	copy_str(r->message, &m.val[F_MESSAGE]);
	r->epoch = m.val[F_EPOCH].n;
	r->size = m.val[F_SIZE].n;
	r->has_crc = (m.seen & BIT(F_CRC)) != 0;
	r->crc = (uint32_t)m.val[F_CRC].n;
	r->seq = m.val[F_SEQ].n;
	r->offset = m.val[F_OFFSET].n;
	r->count = (uint32_t)m.val[F_COUNT].n;
	r->more = m.val[F_MORE].n != 0;
	r->by_set = m.val[F_BY_SET].n != 0;
	r->has_ver = (m.seen & BIT(F_VER)) != 0;
	if (r->has_ver)
		r->ver = m.ver;
	r->tomb = m.val[F_TOMB].n != 0;
	r->vers = m.val[F_VERS].n != 0;
	r->has_held = (m.seen & BIT(F_HELD)) != 0;
	r->nheld = m.nheld;
	memcpy(r->held, m.held, sizeof(r->held));
	r->homes = (uint32_t)m.val[F_HOMES].n;
	r->superseded = m.val[F_SUPERSEDED].n != 0;
	return 0;
}

/* ---- LIST payload ----------------------------------------------------------------- */

int ovl_wire_keys_encode(const struct ovl_wire_bin *keys, uint32_t n, uint8_t *out, size_t cap)
{
	struct wb w = { out, cap, 0, false };

	if (n > OVL_WIRE_LIST_MAX)
		return -EINVAL;
	if (n < 16)
		w_byte(&w, (uint8_t)(0x90 | n));
	else
		w_head(&w, 0xdc, n, 2);
	for (uint32_t i = 0; i < n; i++) {
		if (keys[i].len < 1 || keys[i].len > OVL_WIRE_KEY_MAX_BYTES)
			return -EINVAL;
		w_bin(&w, keys[i].ptr, keys[i].len);
	}
	if (w.full || w.len > INT32_MAX)
		return -ENOSPC;
	return (int)w.len;
}

int ovl_wire_keys_decode(const uint8_t *buf, size_t len, struct ovl_wire_bin **keys, uint32_t *n,
			 char *err, size_t errlen)
{
	static const struct ovl_mp_limits lim = {
		.max_depth = 1,
		.max_bytes = OVL_WIRE_OBJECT_MAX_BYTES,
		.max_elems = OVL_WIRE_LIST_MAX + 1,
		.max_str = OVL_WIRE_KEY_MAX_BYTES,
	};
	struct ovl_wire_bin *arr = NULL;
	struct ovl_mpr r = { buf, buf + len };
	size_t used = 0;
	char why[160];
	struct ovl_mpr_val v;
	int ret;

	*keys = NULL;
	*n = 0;
	why[0] = '\0';
	ret = ovl_mp_check(buf, len, &lim, &used, why, sizeof(why));
	if (ret < 0)
		return fail(err, errlen, ret == -ELOOP ? -EBADMSG : ret, "list payload: %s", why);
	if (used != len)
		return fail(err, errlen, -EBADMSG, "list payload: %zu bytes follow the array",
			    len - used);
	if (ovl_mpr_next(&r, &v) < 0 || v.kind != OVL_MPR_ARRAY)
		return fail(err, errlen, -EBADMSG, "list payload: not an array");
	if (v.n > OVL_WIRE_LIST_MAX)
		return fail(err, errlen, -E2BIG, "list payload: %llu keys, more than %d",
			    (unsigned long long)v.n, OVL_WIRE_LIST_MAX);
	arr = calloc(v.n ? v.n : 1, sizeof(*arr));
	if (!arr)
		return -ENOMEM;
	for (uint32_t i = 0; i < v.n; i++) {
		struct ovl_mpr_val k;

		if (ovl_mpr_next(&r, &k) < 0 || k.kind != OVL_MPR_BIN || k.n < 1 ||
		    k.n > OVL_WIRE_KEY_MAX_BYTES) {
			free(arr);
			return fail(err, errlen, -EBADMSG, "list payload: key %u is not a bin of "
				    "1..1024 bytes", i);
		}
		arr[i].ptr = k.ptr;
		arr[i].len = (uint32_t)k.n;
	}
	*keys = arr;
	*n = (uint32_t)v.n;
	return 0;
}

/* ---- ERROR frames ------------------------------------------------------------------ */

int ovl_wire_error_frame(uint32_t status, const char *text, uint8_t *out, size_t cap)
{
	uint8_t meta[OVL_WIRE_TEXT_SIZE + 32];
	struct wb w = { meta, sizeof(meta), 0, false };
	struct ovl_wire_hdr h = { .type = OVL_WIRE_T_ERROR };
	size_t n = strnlen(text, OVL_WIRE_TEXT_SIZE - 1);

	/* cut at a character boundary so that the text stays valid UTF-8 */
	while (n > 0 && !ovl_mp_utf8_valid((const uint8_t *)text, n))
		n--;
	w_map(&w, 2);
	w_key(&w, "code");
	w_uint(&w, status ? status : OVL_WIRE_INTERNAL);
	w_key(&w, "message");
	w_str(&w, text, n);
	h.meta_len = (uint32_t)w.len;
	if (cap < OVL_WIRE_HDR_BYTES + w.len)
		return -ENOSPC;
	ovl_wire_hdr_pack(&h, out, NULL, 0);
	memcpy(out + OVL_WIRE_HDR_BYTES, meta, w.len);
	return (int)(OVL_WIRE_HDR_BYTES + w.len);
}

int ovl_wire_error_parse(const uint8_t *meta, size_t len, uint32_t *status,
			 char text[OVL_WIRE_TEXT_SIZE], char *err, size_t errlen)
{
	struct meta m;
	int ret;

	*status = 0;
	text[0] = '\0';
	ret = meta_read(&m, OVL_WIRE_T_ERROR, meta, len, err, errlen);
	if (ret == 0)
		ret = meta_required(&m, OVL_WIRE_T_ERROR, err, errlen);
	if (ret < 0)
		return ret;
	*status = (uint32_t)m.val[F_CODE].n;
	copy_str(text, &m.val[F_MESSAGE]);
	return 0;
}

/* ---- handshake ---------------------------------------------------------------------- */

struct ovl_wire_hs {
	bool server;
	int state; /* 0 new, 1 HELLO sent (client), 2 done */
	struct ovl_wire_hs_cfg cfg;
	char slice[OVL_WIRE_NAME_SIZE];
	uint8_t nonce[OVL_WIRE_NONCE_BYTES];      /* ours */
	uint8_t hello[OVL_WIRE_HDR_BYTES + OVL_WIRE_META_MAX_BYTES]; /* the HELLO frame */
	size_t hello_len;
	struct ovl_wire_session sess;
};

static int hs_new(struct ovl_wire_hs **out, const struct ovl_wire_hs_cfg *cfg, bool server,
		  char *err, size_t errlen)
{
	struct ovl_wire_hs *hs = NULL;

	*out = NULL;
	if (!cfg->id || !cfg->cert || cfg->cert_len == 0 || cfg->cert_len > OVL_CERT_MAX_BYTES)
		return fail(err, errlen, -EINVAL, "handshake: an identity and a certificate of "
			    "1..%d bytes are required", OVL_CERT_MAX_BYTES);
	if (!cfg->verify && !cfg->peers)
		return fail(err, errlen, -EINVAL,
			    "handshake: a verifier or a trust store (peers) is required");
	if (!server && cfg->slice && cfg->slice[0] && !name_ok(cfg->slice, OVL_WIRE_NAME_SIZE - 1))
		return fail(err, errlen, -EINVAL, "handshake: slice must be 1..63 printable bytes");
	if (sodium_init() < 0)
		return fail(err, errlen, -EIO, "handshake: libsodium cannot initialise");
	hs = calloc(1, sizeof(*hs));
	if (!hs)
		return -ENOMEM;
	hs->server = server;
	hs->cfg = *cfg;
	if (!server && cfg->slice)
		snprintf(hs->slice, sizeof(hs->slice), "%s", cfg->slice);
	if (cfg->nonce)
		memcpy(hs->nonce, cfg->nonce, OVL_WIRE_NONCE_BYTES);
	else
		randombytes_buf(hs->nonce, OVL_WIRE_NONCE_BYTES);
	*out = hs;
	return 0;
}

int ovl_wire_client_new(struct ovl_wire_hs **out, const struct ovl_wire_hs_cfg *cfg, char *err,
			size_t errlen)
{
	return hs_new(out, cfg, false, err, errlen);
}

int ovl_wire_server_new(struct ovl_wire_hs **out, const struct ovl_wire_hs_cfg *cfg, char *err,
			size_t errlen)
{
	return hs_new(out, cfg, true, err, errlen);
}

void ovl_wire_hs_destroy(struct ovl_wire_hs **hs)
{
	if (!hs || !*hs)
		return;
	sodium_memzero(*hs, sizeof(**hs));
	free(*hs);
	*hs = NULL;
}

static uint32_t hs_major(const struct ovl_wire_hs *hs)
{
	return hs->cfg.ver_major ? hs->cfg.ver_major : OVL_WIRE_VERSION_MAJOR;
}

static int hs_verify(struct ovl_wire_hs *hs, const struct ovl_mpr_val *cert, const char *slice,
		     struct ovl_cert *out, char *err, size_t errlen)
{
	int ret;

	if (hs->cfg.verify)
		return hs->cfg.verify(hs->cfg.verify_arg, cert->ptr, cert->n, slice, out, err, errlen);
	ret = ovl_peers_admit(hs->cfg.peers, cert->ptr, cert->n, hs->cfg.now, out, err, errlen);
	if (ret < 0)
		return ret;
	if (slice[0]) {
		for (uint32_t i = 0; i < out->nslices; i++)
			if (strcmp(out->slices[i], slice) == 0)
				return 0;
		return fail(err, errlen, -EACCES, "certificate serial %llu does not allow slice '%s'",
			    (unsigned long long)out->serial, slice);
	}
	return 0;
}

/* key = BLAKE2b-256(key = kx key, "shelf-wire-v1" 0 label 0 ‖ client nonce ‖ server nonce) */
static void kdf(uint8_t out[OVL_WIRE_KEY_BYTES], const uint8_t kx[crypto_kx_SESSIONKEYBYTES],
		const char *label, const uint8_t cn[OVL_WIRE_NONCE_BYTES],
		const uint8_t sn[OVL_WIRE_NONCE_BYTES])
{
	crypto_generichash_state st;

	crypto_generichash_init(&st, kx, crypto_kx_SESSIONKEYBYTES, OVL_WIRE_KEY_BYTES);
	crypto_generichash_update(&st, (const uint8_t *)KDF_DOMAIN, sizeof(KDF_DOMAIN));
	crypto_generichash_update(&st, (const uint8_t *)label, strlen(label) + 1);
	crypto_generichash_update(&st, cn, OVL_WIRE_NONCE_BYTES);
	crypto_generichash_update(&st, sn, OVL_WIRE_NONCE_BYTES);
	crypto_generichash_final(&st, out, OVL_WIRE_KEY_BYTES);
	sodium_memzero(&st, sizeof(st));
}

/* Derives the session; kx keys as crypto_kx names them for this side. */
static int derive(struct ovl_wire_hs *hs, const uint8_t peer_curve[OVL_ID_CURVE_BYTES],
		  const uint8_t cn[OVL_WIRE_NONCE_BYTES], const uint8_t sn[OVL_WIRE_NONCE_BYTES])
{
	uint8_t rx[crypto_kx_SESSIONKEYBYTES], tx[crypto_kx_SESSIONKEYBYTES];
	const uint8_t *c2s = NULL, *s2c = NULL;
	struct ovl_wire_session *s = &hs->sess;
	int ret;

	if (hs->server)
		ret = crypto_kx_server_session_keys(rx, tx, hs->cfg.id->curve_pk,
						    hs->cfg.id->curve_sk, peer_curve);
	else
		ret = crypto_kx_client_session_keys(rx, tx, hs->cfg.id->curve_pk,
						    hs->cfg.id->curve_sk, peer_curve);
	if (ret != 0)
		goto out; /* a peer key of low order */
	c2s = hs->server ? rx : tx;
	s2c = hs->server ? tx : rx;
	kdf(hs->server ? s->rx_mac : s->tx_mac, c2s, "c2s-mac", cn, sn);
	kdf(hs->server ? s->rx_aead : s->tx_aead, c2s, "c2s-aead", cn, sn);
	kdf(hs->server ? s->tx_mac : s->rx_mac, s2c, "s2c-mac", cn, sn);
	kdf(hs->server ? s->tx_aead : s->rx_aead, s2c, "s2c-aead", cn, sn);
	s->tx_dir = hs->server ? DIR_S2C : DIR_C2S;
	s->rx_dir = hs->server ? DIR_C2S : DIR_S2C;
	s->tx_seq = s->rx_seq = 0;
out:
	sodium_memzero(rx, sizeof(rx));
	sodium_memzero(tx, sizeof(tx));
	return ret == 0 ? 0 : -EKEYREJECTED;
}

/* proof = BLAKE2b-128(key = s2c MAC key, "shelf-wire-v1" 0 "proof" 0 ‖ HELLO frame ‖
 *                     server certificate ‖ server nonce) */
static void proof_compute(const struct ovl_wire_hs *hs, const uint8_t s2c_mac[OVL_WIRE_KEY_BYTES],
			  const uint8_t *cert, size_t cert_len,
			  const uint8_t sn[OVL_WIRE_NONCE_BYTES], uint8_t out[PROOF_BYTES])
{
	crypto_generichash_state st;

	crypto_generichash_init(&st, s2c_mac, OVL_WIRE_KEY_BYTES, PROOF_BYTES);
	crypto_generichash_update(&st, (const uint8_t *)KDF_DOMAIN, sizeof(KDF_DOMAIN));
	crypto_generichash_update(&st, (const uint8_t *)"proof", sizeof("proof"));
	crypto_generichash_update(&st, hs->hello, hs->hello_len);
	crypto_generichash_update(&st, cert, cert_len);
	crypto_generichash_update(&st, sn, OVL_WIRE_NONCE_BYTES);
	crypto_generichash_final(&st, out, PROOF_BYTES);
	sodium_memzero(&st, sizeof(st));
}

int ovl_wire_client_hello(struct ovl_wire_hs *hs, uint8_t *out, size_t cap, char *err,
			  size_t errlen)
{
	struct ovl_wire_hdr h = { .type = OVL_WIRE_T_HELLO };
	uint8_t *meta = hs->hello + OVL_WIRE_HDR_BYTES;
	struct wb w = { meta, OVL_WIRE_META_MAX_BYTES, 0, false };

	if (hs->server || hs->state != 0)
		return fail(err, errlen, -EINVAL, "hello: not a new client handshake");
	w_map(&w, hs->slice[0] ? 4 : 3);
	w_version(&w, hs_major(hs));
	w_key(&w, "cert");
	w_bin(&w, hs->cfg.cert, hs->cfg.cert_len);
	w_key(&w, "nonce");
	w_bin(&w, hs->nonce, OVL_WIRE_NONCE_BYTES);
	if (hs->slice[0]) {
		w_key(&w, "slice");
		w_str(&w, hs->slice, strlen(hs->slice));
	}
	h.meta_len = (uint32_t)w.len;
	if (w.full || ovl_wire_hdr_pack(&h, hs->hello, err, errlen) < 0)
		return fail(err, errlen, -EINVAL, "hello: does not fit");
	hs->hello_len = OVL_WIRE_HDR_BYTES + w.len;
	if (cap < hs->hello_len)
		return fail(err, errlen, -ENOSPC, "hello: %zu bytes do not fit in %zu",
			    hs->hello_len, cap);
	memcpy(out, hs->hello, hs->hello_len);
	hs->state = 1;
	return (int)hs->hello_len;
}

static int version_check(const struct meta *m, char *err, size_t errlen)
{
	if (m->ver_major != OVL_WIRE_VERSION_MAJOR)
		return fail(err, errlen, -EPROTONOSUPPORT,
			    "%s: protocol major version %llu is not supported (this build speaks %d)",
			    m->frame, (unsigned long long)m->ver_major, OVL_WIRE_VERSION_MAJOR);
	return 0;
}

/* Why a HELLO is refused: not the status table (ovl_wire_errno_to_status),
 * because a failed certificate check comes as many errnos that all mean
 * auth-failed to the client. */
static uint32_t hello_refusal(int ret)
{
	switch (ret) {
	case -EPROTONOSUPPORT: return OVL_WIRE_VERSION;
	case -EBADMSG: case -EMSGSIZE: case -E2BIG: return OVL_WIRE_BAD_REQUEST;
	case -EACCES: return OVL_WIRE_WRONG_SLICE;
	case -ENOMEM: case -EIO: return OVL_WIRE_INTERNAL;
	default: return OVL_WIRE_AUTH_FAILED;
	}
}

int ovl_wire_server_hello(struct ovl_wire_hs *hs, const uint8_t *in, size_t len, uint8_t *out,
			  size_t cap, size_t *outlen, char *err, size_t errlen)
{
	uint8_t meta[OVL_WIRE_META_MAX_BYTES];
	struct wb w = { meta, sizeof(meta), 0, false };
	struct ovl_wire_hdr h, oh = { .type = OVL_WIRE_T_HELLO_OK };
	uint8_t proof[PROOF_BYTES];
	char why[OVL_WIRE_TEXT_SIZE];
	struct meta m;
	int ret, n;

	*outlen = 0;
	why[0] = '\0';
	if (!hs->server || hs->state != 0) {
		ret = fail(why, sizeof(why), -EINVAL, "hello: not a new server handshake");
		goto out;
	}
	if (len < OVL_WIRE_HDR_BYTES) {
		ret = fail(why, sizeof(why), -EBADMSG, "hello: truncated frame");
		goto out;
	}
	ret = ovl_wire_hdr_parse(&h, in, why, sizeof(why));
	if (ret < 0)
		goto out;
	if (h.type != OVL_WIRE_T_HELLO) {
		ret = fail(why, sizeof(why), -EBADMSG, "%s: expected hello",
			   ovl_wire_type_name(h.type));
		goto out;
	}
	if (len != ovl_wire_head_len(&h, false)) {
		ret = fail(why, sizeof(why), -EBADMSG, "hello: frame is %zu bytes, expected %zu",
			   len, ovl_wire_head_len(&h, false));
		goto out;
	}
	ret = meta_read(&m, OVL_WIRE_T_HELLO, in + OVL_WIRE_HDR_BYTES, h.meta_len, why,
			sizeof(why));
	if (ret == 0 && (m.seen & BIT(F_V)))
		ret = version_check(&m, why, sizeof(why));
	if (ret == 0)
		ret = meta_required(&m, OVL_WIRE_T_HELLO, why, sizeof(why));
	if (ret < 0)
		goto out;
	memcpy(hs->hello, in, len);
	hs->hello_len = len;
	if (m.seen & BIT(F_SLICE))
		copy_str(hs->slice, &m.val[F_SLICE]);
	ret = hs_verify(hs, &m.val[F_CERT], hs->slice, &hs->sess.peer, why, sizeof(why));
	if (ret < 0)
		goto out;
	ret = derive(hs, hs->sess.peer.curve_pk, m.val[F_NONCE].ptr, hs->nonce);
	if (ret < 0) {
		fail(why, sizeof(why), ret, "hello: the certificate's curve key is unusable");
		goto out;
	}
	proof_compute(hs, hs->sess.tx_mac, hs->cfg.cert, hs->cfg.cert_len, hs->nonce, proof);
	w_map(&w, 4);
	w_version(&w, hs_major(hs));
	w_key(&w, "cert");
	w_bin(&w, hs->cfg.cert, hs->cfg.cert_len);
	w_key(&w, "nonce");
	w_bin(&w, hs->nonce, OVL_WIRE_NONCE_BYTES);
	w_key(&w, "proof");
	w_bin(&w, proof, PROOF_BYTES);
	oh.meta_len = (uint32_t)w.len;
	if (w.full || cap < OVL_WIRE_HDR_BYTES + w.len) {
		ret = fail(why, sizeof(why), -ENOSPC, "hello-ok: does not fit in %zu bytes", cap);
		goto out;
	}
	ovl_wire_hdr_pack(&oh, out, NULL, 0);
	memcpy(out + OVL_WIRE_HDR_BYTES, meta, w.len);
	*outlen = OVL_WIRE_HDR_BYTES + w.len;
	snprintf(hs->sess.slice, sizeof(hs->sess.slice), "%s", hs->slice);
	hs->state = 2;
out:
	if (ret < 0) {
		sodium_memzero(&hs->sess, sizeof(hs->sess));
		fail(err, errlen, ret, "%s", why);
		n = ovl_wire_error_frame(hello_refusal(ret), why, out, cap);
		*outlen = n > 0 ? (size_t)n : 0;
	}
	return ret;
}

int ovl_wire_client_finish(struct ovl_wire_hs *hs, const uint8_t *in, size_t len,
			   uint32_t *status, char *err, size_t errlen)
{
	uint8_t proof[PROOF_BYTES];
	char text[OVL_WIRE_TEXT_SIZE];
	struct ovl_wire_hdr h;
	uint32_t code = 0;
	struct meta m;
	int ret;

	if (status)
		*status = 0;
	if (hs->server || hs->state != 1)
		return fail(err, errlen, -EINVAL, "hello-ok: no HELLO was sent");
	if (len < OVL_WIRE_HDR_BYTES)
		return fail(err, errlen, -EBADMSG, "hello-ok: truncated frame");
	ret = ovl_wire_hdr_parse(&h, in, err, errlen);
	if (ret < 0)
		return ret;
	if (len != ovl_wire_head_len(&h, false) ||
	    (h.type != OVL_WIRE_T_HELLO_OK && h.type != OVL_WIRE_T_ERROR))
		return fail(err, errlen, -EBADMSG, "%s: expected hello-ok or error of %zu bytes",
			    ovl_wire_type_name(h.type), ovl_wire_head_len(&h, false));
	if (h.type == OVL_WIRE_T_ERROR) {
		ret = ovl_wire_error_parse(in + OVL_WIRE_HDR_BYTES, h.meta_len, &code, text, err,
					   errlen);
		if (ret < 0)
			return ret;
		if (status)
			*status = code;
		return fail(err, errlen, -ECONNREFUSED, "server refused the handshake: %s (%u): %s",
			    ovl_wire_status_name(code) ? ovl_wire_status_name(code) : "unknown",
			    code, text);
	}
	ret = meta_read(&m, OVL_WIRE_T_HELLO_OK, in + OVL_WIRE_HDR_BYTES, h.meta_len, err, errlen);
	if (ret == 0 && (m.seen & BIT(F_V)))
		ret = version_check(&m, err, errlen);
	if (ret == 0)
		ret = meta_required(&m, OVL_WIRE_T_HELLO_OK, err, errlen);
	if (ret < 0)
		return ret;
	ret = hs_verify(hs, &m.val[F_CERT], "", &hs->sess.peer, err, errlen);
	if (ret < 0)
		return ret;
	ret = derive(hs, hs->sess.peer.curve_pk, hs->nonce, m.val[F_NONCE].ptr);
	if (ret < 0)
		return fail(err, errlen, ret, "hello-ok: the certificate's curve key is unusable");
	proof_compute(hs, hs->sess.rx_mac, m.val[F_CERT].ptr, m.val[F_CERT].n, m.val[F_NONCE].ptr,
		      proof);
	if (crypto_verify_16(proof, m.val[F_PROOF].ptr) != 0) {
		sodium_memzero(&hs->sess, sizeof(hs->sess));
		return fail(err, errlen, -EBADE,
			    "hello-ok: proof does not verify: the server does not hold the key "
			    "its certificate names");
	}
	snprintf(hs->sess.slice, sizeof(hs->sess.slice), "%s", hs->slice);
	hs->state = 2;
	return 0;
}

int ovl_wire_hs_session(struct ovl_wire_hs *hs, struct ovl_wire_session *s)
{
	if (hs->state != 2)
		return -EINVAL;
	*s = hs->sess;
	sodium_memzero(&hs->sess, sizeof(hs->sess));
	hs->state = 3;
	return 0;
}

/* ---- versioned LIST payload -------------------------------------------------------- */

int ovl_wire_vkeys_encode(const struct ovl_wire_vkey *ents, uint32_t n, uint8_t *out, size_t cap)
{
	struct wb w = { out, cap, 0, false };

	if (n > OVL_WIRE_LIST_MAX)
		return -EINVAL;
	w_array(&w, n);
	for (uint32_t i = 0; i < n; i++) {
		if (ents[i].len < 1 || ents[i].len > OVL_WIRE_KEY_MAX_BYTES)
			return -EINVAL;
		w_array(&w, 4);
		w_bin(&w, ents[i].ptr, ents[i].len);
		w_uint(&w, ents[i].ver.hlc);
		w_uint(&w, ents[i].ver.node);
		w_bool(&w, ents[i].tomb);
	}
	if (w.full || w.len > INT32_MAX)
		return -ENOSPC;
	return (int)w.len;
}

int ovl_wire_vkeys_decode(const uint8_t *buf, size_t len, struct ovl_wire_vkey **ents,
			  uint32_t *n, char *err, size_t errlen)
{
	static const struct ovl_mp_limits lim = {
		.max_depth = 2,
		.max_bytes = OVL_WIRE_OBJECT_MAX_BYTES,
		.max_elems = 5 * OVL_WIRE_LIST_MAX + 1,
		.max_str = OVL_WIRE_KEY_MAX_BYTES,
	};
	struct ovl_wire_vkey *arr = NULL;
	struct ovl_mpr r = { buf, buf + len };
	size_t used = 0;
	char why[160];
	struct ovl_mpr_val v;
	int ret;

	*ents = NULL;
	*n = 0;
	why[0] = '\0';
	ret = ovl_mp_check(buf, len, &lim, &used, why, sizeof(why));
	if (ret < 0)
		return fail(err, errlen, ret == -ELOOP ? -EBADMSG : ret, "versioned list payload: %s",
			    why);
	if (used != len)
		return fail(err, errlen, -EBADMSG,
			    "versioned list payload: %zu bytes follow the array", len - used);
	if (ovl_mpr_next(&r, &v) < 0 || v.kind != OVL_MPR_ARRAY)
		return fail(err, errlen, -EBADMSG, "versioned list payload: not an array");
	if (v.n > OVL_WIRE_LIST_MAX)
		return fail(err, errlen, -E2BIG, "versioned list payload: %llu entries, more than %d",
			    (unsigned long long)v.n, OVL_WIRE_LIST_MAX);
	arr = calloc(v.n ? v.n : 1, sizeof(*arr));
	if (!arr)
		return -ENOMEM;
	for (uint32_t i = 0; i < v.n; i++) {
		struct ovl_mpr_val e, k, hlc, node, tomb;

		if (ovl_mpr_next(&r, &e) < 0 || e.kind != OVL_MPR_ARRAY || e.n != 4 ||
		    ovl_mpr_next(&r, &k) < 0 || ovl_mpr_next(&r, &hlc) < 0 ||
		    ovl_mpr_next(&r, &node) < 0 || ovl_mpr_next(&r, &tomb) < 0 ||
		    k.kind != OVL_MPR_BIN || k.n < 1 || k.n > OVL_WIRE_KEY_MAX_BYTES ||
		    hlc.kind != OVL_MPR_UINT || node.kind != OVL_MPR_UINT ||
		    tomb.kind != OVL_MPR_BOOL) {
			free(arr);
			return fail(err, errlen, -EBADMSG, "versioned list payload: entry %u is not "
				    "[key bin 1..1024, hlc uint, node uint, tomb bool]", i);
		}
		arr[i].ptr = k.ptr;
		arr[i].len = (uint32_t)k.n;
		arr[i].ver.hlc = hlc.n;
		arr[i].ver.node = node.n;
		arr[i].tomb = tomb.n != 0;
	}
	*ents = arr;
	*n = (uint32_t)v.n;
	return 0;
}
