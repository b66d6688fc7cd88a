/*
 * Certificates, the CA → broker → node chain, revocation lists, timestamp
 * tokens and trusted time: known answers, and every refusal with its exact
 * error. Hostile encodings are built here with an encoder of the test's own
 * (msgpack-c plus libsodium), independent of the library's.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "overlay.h"

#define NOW 1700000100ULL           /* 2023-11-14T22:15:00Z */
#define NODE_NBF 1700000000ULL
#define NODE_NAF 1700086400ULL
#define BROKER_NBF 1690000000ULL
#define BROKER_NAF 1800000000ULL
#define BUILD_TIME 1690000000LL     /* 2023-07-22T04:26:40Z */

static struct ovl_id *ca, *broker, *node, *rogue;

static void hex2bin(uint8_t *out, size_t n, const char *hex)
{
	size_t got = 0;

	assert_int_equal(sodium_hex2bin(out, n, hex, strlen(hex), NULL, &got, NULL), 0);
	assert_int_equal(got, n);
}

static void seeded(struct ovl_id **id, uint8_t sign_byte, uint8_t curve_byte)
{
	uint8_t s[32], c[32];

	memset(s, sign_byte, sizeof(s));
	memset(c, curve_byte, sizeof(c));
	assert_int_equal(ovl_id_from_seed(id, s, c), 0);
}

static int group_setup(void **state)
{
	uint8_t s[32], c[32];

	if (sodium_init() < 0)
		return -1;
	seeded(&ca, 0x11, 0x12);
	seeded(&broker, 0x22, 0x23);
	seeded(&rogue, 0x33, 0x34);
	/* the node: RFC 8032 TEST 1 seed, curve seed 00..1f (as in test_id) */
	hex2bin(s, 32, "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
	for (int i = 0; i < 32; i++)
		c[i] = (uint8_t)i;
	return ovl_id_from_seed(&node, s, c);
}

static int group_teardown(void **state)
{
	ovl_id_destroy(&ca);
	ovl_id_destroy(&broker);
	ovl_id_destroy(&rogue);
	ovl_id_destroy(&node);
	return 0;
}

static void make_node_cert(struct ovl_cert *c)
{
	char err[256];

	ovl_cert_init(c);
	ovl_cert_set_keys(c, node);
	c->serial = 7;
	assert_int_equal(ovl_cert_add_slice(c, "alpha", err, sizeof(err)), 0);
	assert_int_equal(ovl_cert_add_slice(c, "beta", err, sizeof(err)), 0);
	assert_int_equal(ovl_cert_add_group(c, "rack1", err, sizeof(err)), 0);
	strcpy(c->site, "sim-site");
	strcpy(c->chassis, "sim-1u");
	strcpy(c->slot, "3");
	c->role = OVL_ROLE_NODE;
	c->not_before = NODE_NBF;
	c->not_after = NODE_NAF;
}

static void make_broker_cert(struct ovl_cert *c)
{
	ovl_cert_init(c);
	ovl_cert_set_keys(c, broker);
	c->serial = 1;
	strcpy(c->site, "sim-site");
	c->role = OVL_ROLE_BROKER;
	c->not_before = BROKER_NBF;
	c->not_after = BROKER_NAF;
}

static size_t sign_cert(struct ovl_cert *c, const struct ovl_id *issuer, uint8_t *out)
{
	char err[256];
	int n = ovl_cert_sign(c, issuer->sign_sk, out, OVL_CERT_MAX_BYTES, err, sizeof(err));

	if (n < 0)
		fail_msg("ovl_cert_sign: %s", err);
	return (size_t)n;
}

static void fp_of(const struct ovl_id *id, char fp[OVL_ID_FP_BYTES])
{
	ovl_nodeid_fingerprint(id->sign_pk, fp);
}

/* ---- the test's own encoder, for hostile bodies --------------------------- */

struct raw {
	uint64_t version;
	bool serial_wide;        /* serial as uint64 even when small: not canonical */
	bool swap_keys;          /* "sign" before "curve" */
	const uint8_t *id, *curve, *sign;
	int nslices, ngroups;
	const char *slice;       /* every slice and group gets this name */
	const char *site;
	const char *role;
	uint64_t nbf, naf;
	const struct ovl_id *issuer;
};

static void raw_defaults(struct raw *r)
{
	memset(r, 0, sizeof(*r));
	r->version = 1;
	r->id = r->sign = node->sign_pk;
	r->curve = node->curve_pk;
	r->nslices = 2;
	r->ngroups = 1;
	r->slice = "alpha";
	r->site = "sim-site";
	r->role = "node";
	r->nbf = NODE_NBF;
	r->naf = NODE_NAF;
	r->issuer = broker;
}

static void pk_str(msgpack_packer *pk, const char *s)
{
	msgpack_pack_str_with_body(pk, s, strlen(s));
}

static void raw_body(const struct raw *r, msgpack_sbuffer *sb)
{
	msgpack_packer pk;
	uint8_t keyid[8];

	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 14);
	pk_str(&pk, "v");
	msgpack_pack_uint64(&pk, r->version);
	pk_str(&pk, "serial");
	if (r->serial_wide) {
		const char wide[] = { (char)0xcf, 0, 0, 0, 0, 0, 0, 0, 7 };

		msgpack_sbuffer_write(sb, wide, sizeof(wide));
	} else {
		msgpack_pack_uint64(&pk, 7);
	}
	pk_str(&pk, "id");
	msgpack_pack_bin_with_body(&pk, r->id, 32);
	pk_str(&pk, r->swap_keys ? "sign" : "curve");
	msgpack_pack_bin_with_body(&pk, r->swap_keys ? r->sign : r->curve, 32);
	pk_str(&pk, r->swap_keys ? "curve" : "sign");
	msgpack_pack_bin_with_body(&pk, r->swap_keys ? r->curve : r->sign, 32);
	pk_str(&pk, "slices");
	msgpack_pack_array(&pk, r->nslices);
	for (int i = 0; i < r->nslices; i++)
		pk_str(&pk, r->slice);
	pk_str(&pk, "groups");
	msgpack_pack_array(&pk, r->ngroups);
	for (int i = 0; i < r->ngroups; i++)
		pk_str(&pk, r->slice);
	pk_str(&pk, "site");
	pk_str(&pk, r->site);
	pk_str(&pk, "chassis");
	pk_str(&pk, "sim-1u");
	pk_str(&pk, "slot");
	pk_str(&pk, "3");
	pk_str(&pk, "role");
	pk_str(&pk, r->role);
	pk_str(&pk, "not_before");
	msgpack_pack_uint64(&pk, r->nbf);
	pk_str(&pk, "not_after");
	msgpack_pack_uint64(&pk, r->naf);
	pk_str(&pk, "issuer");
	ovl_keyid_compute(r->issuer->sign_pk, keyid);
	msgpack_pack_bin_with_body(&pk, keyid, 8);
}

/* [bin body, bin Ed25519(sk, domain ‖ 0 ‖ body)] built by hand. */
static size_t seal(const void *body, size_t len, const char *domain, const struct ovl_id *by,
		   uint8_t *out, size_t cap)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	uint8_t sig[64];
	uint8_t *msg = malloc(strlen(domain) + 1 + len);
	size_t n;

	assert_non_null(msg);
	memcpy(msg, domain, strlen(domain) + 1);
	memcpy(msg + strlen(domain) + 1, body, len);
	crypto_sign_detached(sig, NULL, msg, strlen(domain) + 1 + len, by->sign_sk);
	free(msg);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 2);
	msgpack_pack_bin_with_body(&pk, body, len);
	msgpack_pack_bin_with_body(&pk, sig, 64);
	assert_true(sb.size <= cap);
	memcpy(out, sb.data, sb.size);
	n = sb.size;
	msgpack_sbuffer_destroy(&sb);
	return n;
}

static size_t raw_cert(const struct raw *r, uint8_t *out, size_t cap)
{
	msgpack_sbuffer sb;
	size_t n;

	msgpack_sbuffer_init(&sb);
	raw_body(r, &sb);
	n = seal(sb.data, sb.size, OVL_CERT_DOMAIN, r->issuer, out, cap);
	msgpack_sbuffer_destroy(&sb);
	return n;
}

static void expect_verify(const uint8_t *buf, size_t len, int want_ret, const char *want_err)
{
	struct ovl_cert c;
	char err[512] = "";
	int ret = ovl_cert_verify(&c, buf, len, broker->sign_pk, NOW, err, sizeof(err));

	if (ret != want_ret || (want_err && strcmp(err, want_err) != 0))
		fail_msg("got %d '%s', want %d '%s'", ret, err, want_ret, want_err ? want_err : "");
}

/* ---- certificates ------------------------------------------------------ */

/*
 * The node certificate, byte for byte. Cross-checked with an independent
 * encoder written from PROTOCOL.md 2.3 in Python (hashlib + cryptography).
 */
static const char node_cert_hex[] =
	"92c4ff8ea17601a673657269616c07a26964c420d75a980182b10ab7d54bfed3c964073a0ee172f3"
	"daa62325af021a68f707511aa56375727665c4204701d08488451f545a409fb58ae3e58581ca40ac"
	"3f7f114698cd71deac73ca01a47369676ec420d75a980182b10ab7d54bfed3c964073a0ee172f3da"
	"a62325af021a68f707511aa6736c6963657392a5616c706861a462657461a667726f75707391a572"
	"61636b31a473697465a873696d2d73697465a763686173736973a673696d2d3175a4736c6f74a133"
	"a4726f6c65a46e6f6465aa6e6f745f6265666f7265ce6553f100a96e6f745f6166746572ce655542"
	"80a6697373756572c408fc8c895fc144884ec440d6b76ce78f6961253ee8266d0c6371fda45af4ff"
	"04e8b1702c3a79c0000383cadaa286865dec51a26b0e18e6ed1eb20a4a69623c07fa0ab05f8871ce"
	"59f35a0b";

static void test_cert_known_answer(void **state)
{
	struct ovl_cert c;
	uint8_t buf[OVL_CERT_MAX_BYTES];
	char hex[2 * OVL_CERT_MAX_BYTES + 1];
	size_t n;

	make_node_cert(&c);
	n = sign_cert(&c, broker, buf);
	sodium_bin2hex(hex, sizeof(hex), buf, n);
	printf("node cert %zu bytes: %s\n", n, hex);
	assert_string_equal(hex, node_cert_hex);
}

static void test_cert_roundtrip(void **state)
{
	struct ovl_cert c, d;
	uint8_t buf[OVL_CERT_MAX_BYTES], kid[8];
	char err[256];
	size_t n;

	make_node_cert(&c);
	n = sign_cert(&c, broker, buf);
	ovl_keyid_compute(broker->sign_pk, kid);
	assert_memory_equal(c.issuer, kid, 8);
	assert_int_equal(ovl_cert_verify(&d, buf, n, broker->sign_pk, NOW, err, sizeof(err)), 0);
	assert_memory_equal(&c, &d, sizeof(c));
	assert_int_equal(ovl_cert_decode(&d, buf, n, err, sizeof(err)), 0);
	assert_memory_equal(&c, &d, sizeof(c));
	assert_string_equal(d.slices[1], "beta");
	assert_int_equal(d.role, OVL_ROLE_NODE);
	/* signing is deterministic: the same certificate gives the same bytes */
	{
		uint8_t again[OVL_CERT_MAX_BYTES];

		assert_int_equal(sign_cert(&d, broker, again), n);
		assert_memory_equal(buf, again, n);
	}
	/* empty lists and strings at their limits */
	ovl_cert_init(&c);
	ovl_cert_set_keys(&c, node);
	c.role = OVL_ROLE_CLIENT;
	c.not_after = UINT64_MAX;
	memset(c.site, 'x', OVL_CERT_NAME_BYTES - 1);
	memset(c.slot, 'y', OVL_CERT_SLOT_BYTES - 1);
	for (int i = 0; i < OVL_CERT_LIST_MAX; i++) {
		char name[OVL_CERT_NAME_BYTES];

		memset(name, 'a' + i, sizeof(name) - 1);
		name[sizeof(name) - 1] = '\0';
		assert_int_equal(ovl_cert_add_slice(&c, name, err, sizeof(err)), 0);
		assert_int_equal(ovl_cert_add_group(&c, name, err, sizeof(err)), 0);
	}
	n = sign_cert(&c, broker, buf);
	assert_true(n <= OVL_CERT_MAX_BYTES);
	assert_int_equal(ovl_cert_verify(&d, buf, n, broker->sign_pk, NOW, err, sizeof(err)), 0);
	assert_memory_equal(&c, &d, sizeof(c));
}

static void test_cert_validity_window(void **state)
{
	struct ovl_cert c;
	uint8_t buf[OVL_CERT_MAX_BYTES];
	char err[256];
	size_t n;

	make_node_cert(&c);
	n = sign_cert(&c, broker, buf);
	assert_int_equal(ovl_cert_verify(&c, buf, n, broker->sign_pk, NODE_NBF, err, sizeof(err)), 0);
	assert_int_equal(ovl_cert_verify(&c, buf, n, broker->sign_pk, NODE_NAF, err, sizeof(err)), 0);
	assert_int_equal(ovl_cert_verify(&c, buf, n, broker->sign_pk, NODE_NBF - 1, err, sizeof(err)),
			 -EKEYEXPIRED);
	assert_string_equal(err, "certificate serial 7 is not valid before 1700000000 (now 1699999999)");
	assert_int_equal(c.serial, 0); /* zeroed on error */
	assert_int_equal(ovl_cert_verify(&c, buf, n, broker->sign_pk, NODE_NAF + 1, err, sizeof(err)),
			 -EKEYEXPIRED);
	assert_string_equal(err, "certificate serial 7 expired at 1700086400 (now 1700086401)");
}

static void test_cert_bad_signature(void **state)
{
	struct ovl_cert c;
	uint8_t buf[OVL_CERT_MAX_BYTES];
	char err[256], want[256], fp[OVL_ID_FP_BYTES];
	size_t n, curve_at;

	make_node_cert(&c);
	n = sign_cert(&c, broker, buf);
	fp_of(broker, fp);
	snprintf(want, sizeof(want), "certificate serial 7: signature does not verify under the issuer's key %s", fp);
	/* a bit of the signature */
	buf[n - 1] ^= 0x01;
	expect_verify(buf, n, -EKEYREJECTED, want);
	buf[n - 1] ^= 0x01;
	buf[n - 64] ^= 0x80;
	expect_verify(buf, n, -EKEYREJECTED, want);
	buf[n - 64] ^= 0x80;
	/* a bit of the body that leaves it well-formed: inside the curve key */
	for (curve_at = 0; curve_at < n && memcmp(buf + curve_at, node->curve_pk, 32) != 0; curve_at++)
		;
	assert_true(curve_at < n);
	buf[curve_at + 5] ^= 0x04;
	expect_verify(buf, n, -EKEYREJECTED, want);
	buf[curve_at + 5] ^= 0x04;
	expect_verify(buf, n, 0, NULL);
	/* every single-bit change anywhere is refused, one way or another */
	for (size_t i = 0; i < n; i++) {
		for (int bit = 0; bit < 8; bit++) {
			buf[i] ^= (uint8_t)(1u << bit);
			assert_true(ovl_cert_verify(&c, buf, n, broker->sign_pk, NOW, err, sizeof(err)) < 0);
			buf[i] ^= (uint8_t)(1u << bit);
		}
	}
}

static void test_cert_wrong_issuer(void **state)
{
	struct ovl_cert c;
	uint8_t buf[OVL_CERT_MAX_BYTES];
	char want[256], fpb[OVL_ID_FP_BYTES], fpr[OVL_ID_FP_BYTES];
	size_t n;
	struct raw r;

	fp_of(broker, fpb);
	fp_of(rogue, fpr);
	make_node_cert(&c);
	n = sign_cert(&c, rogue, buf);
	snprintf(want, sizeof(want), "certificate serial 7 was issued by key %s, not by the issuer's key %s",
		 fpr, fpb);
	expect_verify(buf, n, -EKEYREJECTED, want);
	/* signed by the rogue but claiming the broker as issuer */
	raw_defaults(&r);
	r.issuer = rogue;
	{
		msgpack_sbuffer sb;
		uint8_t keyid[8];

		msgpack_sbuffer_init(&sb);
		raw_body(&r, &sb);
		ovl_keyid_compute(broker->sign_pk, keyid);
		memcpy(sb.data + sb.size - 8, keyid, 8); /* the issuer field is last */
		n = seal(sb.data, sb.size, OVL_CERT_DOMAIN, rogue, buf, sizeof(buf));
		msgpack_sbuffer_destroy(&sb);
	}
	snprintf(want, sizeof(want), "certificate serial 7: signature does not verify under the issuer's key %s", fpb);
	expect_verify(buf, n, -EKEYREJECTED, want);
}

static void test_cert_domain_separation(void **state)
{
	struct raw r;
	msgpack_sbuffer sb;
	uint8_t buf[OVL_CERT_MAX_BYTES];
	char want[256], fp[OVL_ID_FP_BYTES];
	size_t n;

	raw_defaults(&r);
	msgpack_sbuffer_init(&sb);
	raw_body(&r, &sb);
	n = seal(sb.data, sb.size, OVL_CERT_DOMAIN, broker, buf, sizeof(buf));
	expect_verify(buf, n, 0, NULL);
	/* the same body signed for another purpose is not a certificate */
	fp_of(broker, fp);
	snprintf(want, sizeof(want), "certificate serial 7: signature does not verify under the issuer's key %s", fp);
	n = seal(sb.data, sb.size, OVL_TS_DOMAIN, broker, buf, sizeof(buf));
	expect_verify(buf, n, -EKEYREJECTED, want);
	n = seal(sb.data, sb.size, "shelf-cert-v1x", broker, buf, sizeof(buf));
	expect_verify(buf, n, -EKEYREJECTED, want);
	msgpack_sbuffer_destroy(&sb);
}

static void test_cert_truncated(void **state)
{
	struct ovl_cert c;
	uint8_t buf[OVL_CERT_MAX_BYTES + 1];
	char err[256];
	size_t n;

	make_node_cert(&c);
	n = sign_cert(&c, broker, buf);
	for (size_t len = 0; len < n; len++) {
		int ret = ovl_cert_verify(&c, buf, len, broker->sign_pk, NOW, err, sizeof(err));

		if (ret != -EBADMSG)
			fail_msg("prefix of %zu bytes: %d '%s'", len, ret, err);
	}
	expect_verify(buf, 0, -EBADMSG, "certificate: empty message");
	expect_verify(buf, 1, -EBADMSG,
		      "certificate: container at byte 0 announces 2 elements but only 0 bytes are left");
	expect_verify(buf, 100, -EBADMSG, "certificate: length 255 at byte 1 exceeds the 97 bytes left");
	buf[n] = 0xc0;
	expect_verify(buf, n + 1, -EBADMSG, "certificate: 1 trailing bytes after the envelope");
}

static void test_cert_oversized(void **state)
{
	struct ovl_cert c;
	struct raw r;
	uint8_t *buf = malloc(65536);
	char err[256];
	size_t n;

	assert_non_null(buf);
	raw_defaults(&r);
	r.nslices = 17;
	n = raw_cert(&r, buf, 65536);
	expect_verify(buf, n, -E2BIG, "certificate: 'slices' lists 17 names; at most 16 are allowed");
	raw_defaults(&r);
	r.ngroups = 17;
	n = raw_cert(&r, buf, 65536);
	expect_verify(buf, n, -E2BIG, "certificate: 'groups' lists 17 names; at most 16 are allowed");
	raw_defaults(&r);
	r.nslices = 200;
	n = raw_cert(&r, buf, 65536);
	expect_verify(buf, n, -E2BIG, "certificate: body: more than 128 elements");
	raw_defaults(&r);
	r.nslices = 16;
	r.slice = "this-slice-name-is-more-than-sixty-three-bytes-long-which-is-too-long";
	n = raw_cert(&r, buf, 65536);
	expect_verify(buf, n, -E2BIG, "certificate: 'slices[0]' is 69 bytes long, more than 63");
	raw_defaults(&r);
	r.nslices = 100;
	r.slice = "long-enough-slice-name-to-push-the-certificate-beyond-4k";
	n = raw_cert(&r, buf, 65536);
	{
		char want[128];

		snprintf(want, sizeof(want), "certificate is %zu bytes, more than the limit of 4096", n);
		expect_verify(buf, n, -E2BIG, want);
	}
	/* the signer refuses what a decoder would */
	make_node_cert(&c);
	for (int i = 2; i < OVL_CERT_LIST_MAX; i++)
		assert_int_equal(ovl_cert_add_slice(&c, "s", err, sizeof(err)), 0);
	assert_int_equal(ovl_cert_add_slice(&c, "x16", err, sizeof(err)), -E2BIG);
	assert_string_equal(err, "cannot add slice 'x16': a certificate holds at most 16");
	c.nslices = 17;
	assert_int_equal(ovl_cert_sign(&c, broker->sign_sk, buf, 65536, err, sizeof(err)), -E2BIG);
	assert_string_equal(err, "certificate: 'slices' lists 17 names; at most 16 are allowed");
	/* the output buffer is too small */
	make_node_cert(&c);
	assert_int_equal(ovl_cert_sign(&c, broker->sign_sk, buf, 100, err, sizeof(err)), -E2BIG);
	assert_string_equal(err, "certificate: 100 bytes of output space are too few");
	free(buf);
}

static void test_cert_malformed_fields(void **state)
{
	struct ovl_cert c;
	struct raw r;
	uint8_t buf[OVL_CERT_MAX_BYTES];
	char err[256];
	size_t n;

	raw_defaults(&r);
	r.serial_wide = true;
	n = raw_cert(&r, buf, sizeof(buf));
	expect_verify(buf, n, -EBADMSG, "certificate: body is not in canonical encoding");
	raw_defaults(&r);
	r.swap_keys = true;
	n = raw_cert(&r, buf, sizeof(buf));
	expect_verify(buf, n, -EBADMSG, "certificate: field 3 is not 'curve'");
	raw_defaults(&r);
	r.version = 2;
	n = raw_cert(&r, buf, sizeof(buf));
	expect_verify(buf, n, -EPROTONOSUPPORT, "certificate: format version 2 is not supported (expected 1)");
	raw_defaults(&r);
	r.role = "root";
	n = raw_cert(&r, buf, sizeof(buf));
	expect_verify(buf, n, -EBADMSG, "certificate: unknown role 'root'");
	raw_defaults(&r);
	r.sign = rogue->sign_pk;
	n = raw_cert(&r, buf, sizeof(buf));
	expect_verify(buf, n, -EBADMSG, "certificate: node id is not the signing key");
	raw_defaults(&r);
	r.site = "bad\nsite";
	n = raw_cert(&r, buf, sizeof(buf));
	expect_verify(buf, n, -EBADMSG, "certificate: 'site' holds byte 0x0a; only printable ASCII is allowed");
	raw_defaults(&r);
	r.slice = "";
	n = raw_cert(&r, buf, sizeof(buf));
	expect_verify(buf, n, -EBADMSG, "certificate: 'slices[0]' is empty");
	raw_defaults(&r);
	r.nbf = NODE_NAF + 1;
	n = raw_cert(&r, buf, sizeof(buf));
	expect_verify(buf, n, -EBADMSG, "certificate: not_before 1700086401 is after not_after 1700086400");
	/* envelopes that are not [bin, bin64] */
	{
		const uint8_t three[] = { 0x93, 0xc4, 0x00, 0xc4, 0x00, 0xc0 };
		const uint8_t str_body[] = { 0x92, 0xa0, 0xc4, 0x00 };
		const uint8_t short_sig[] = { 0x92, 0xc4, 0x00, 0xc4, 0x01, 0x00 };
		const uint8_t wide_len[] = { 0x92, 0xc5, 0x00, 0x00, 0xc4, 0x00 };
		uint8_t map_top[] = { 0x81, 0xa1, 'v', 0x01 };

		expect_verify(three, sizeof(three), -EBADMSG, "certificate: not a [body, signature] envelope");
		expect_verify(str_body, sizeof(str_body), -EBADMSG, "certificate: envelope body is not a bin");
		expect_verify(short_sig, sizeof(short_sig), -EBADMSG,
			      "certificate: envelope signature is not a bin of 64 bytes");
		expect_verify(wide_len, sizeof(wide_len), -EBADMSG,
			      "certificate: envelope body length is not in its shortest encoding");
		expect_verify(map_top, sizeof(map_top), -EBADMSG, "certificate: not a [body, signature] envelope");
	}
	/* the signer refuses fields no decoder would take */
	make_node_cert(&c);
	c.role = (enum ovl_role)9;
	assert_int_equal(ovl_cert_sign(&c, broker->sign_sk, buf, sizeof(buf), err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "certificate: role 9 is not a role");
	make_node_cert(&c);
	strcpy(c.chassis, "tab\there");
	assert_int_equal(ovl_cert_sign(&c, broker->sign_sk, buf, sizeof(buf), err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "certificate: 'chassis' must be at most 63 printable ASCII characters");
	assert_int_equal(ovl_cert_add_group(&c, "", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "group name '' must be 1 to 63 printable ASCII characters");
}

static void test_roles(void **state)
{
	enum ovl_role r;

	assert_string_equal(ovl_role_name(OVL_ROLE_NODE), "node");
	assert_string_equal(ovl_role_name(OVL_ROLE_CA), "ca");
	assert_null(ovl_role_name((enum ovl_role)0));
	assert_string_equal(ovl_role_name(OVL_ROLE_RELEASE), "release");
	assert_null(ovl_role_name((enum ovl_role)7)); /* the first number past the last role */
	assert_int_equal(ovl_role_parse("broker", &r), 0);
	assert_int_equal(r, OVL_ROLE_BROKER);
	assert_int_equal(ovl_role_parse("root", &r), -EINVAL);
}

/* ---- the chain ----------------------------------------------------------- */

struct chain {
	uint8_t node[OVL_CERT_MAX_BYTES], broker[OVL_CERT_MAX_BYTES];
	size_t node_len, broker_len;
	struct ovl_trust trust;
};

static void chain_default(struct chain *ch)
{
	struct ovl_cert c;

	memset(ch, 0, sizeof(*ch));
	make_node_cert(&c);
	ch->node_len = sign_cert(&c, broker, ch->node);
	make_broker_cert(&c);
	ch->broker_len = sign_cert(&c, ca, ch->broker);
	memcpy(ch->trust.ca_pk, ca->sign_pk, 32);
}

static void expect_chain(const struct chain *ch, int want_ret, const char *want_err)
{
	struct ovl_cert n, b;
	char err[512] = "";
	int ret = ovl_cert_verify_chain(&n, &b, ch->node, ch->node_len, ch->broker, ch->broker_len,
					&ch->trust, NOW, err, sizeof(err));

	if (ret != want_ret || (want_err && strcmp(err, want_err) != 0))
		fail_msg("got %d '%s', want %d '%s'", ret, err, want_ret, want_err ? want_err : "");
	if (ret < 0)
		assert_int_equal(n.serial + b.serial, 0);
}

static void test_chain_ok(void **state)
{
	struct chain ch;
	struct ovl_cert n, b;
	char err[256];

	chain_default(&ch);
	assert_int_equal(ovl_cert_verify_chain(&n, &b, ch.node, ch.node_len, ch.broker, ch.broker_len,
					       &ch.trust, NOW, err, sizeof(err)), 0);
	assert_int_equal(n.serial, 7);
	assert_int_equal(b.serial, 1);
	assert_memory_equal(b.sign_pk, broker->sign_pk, 32);
	assert_int_equal(ovl_cert_verify_chain(&n, NULL, ch.node, ch.node_len, ch.broker, ch.broker_len,
					       &ch.trust, NOW, err, sizeof(err)), 0);
	/* client and admin certificates are a broker's to issue too */
	for (enum ovl_role role = OVL_ROLE_ADMIN; role <= OVL_ROLE_CLIENT; role++) {
		struct ovl_cert c;

		make_node_cert(&c);
		c.role = role;
		ch.node_len = sign_cert(&c, broker, ch.node);
		expect_chain(&ch, 0, NULL);
	}
}

static void test_chain_wrong_role(void **state)
{
	struct chain ch;
	struct ovl_cert c;

	/* a broker certificate that is not role broker */
	chain_default(&ch);
	make_broker_cert(&c);
	c.role = OVL_ROLE_NODE;
	ch.broker_len = sign_cert(&c, ca, ch.broker);
	expect_chain(&ch, -EPERM,
		     "broker certificate serial 1 has role 'node'; only a broker certificate may issue node certificates");
	c.role = OVL_ROLE_CA;
	ch.broker_len = sign_cert(&c, ca, ch.broker);
	expect_chain(&ch, -EPERM,
		     "broker certificate serial 1 has role 'ca'; only a broker certificate may issue node certificates");
	/* a broker may not issue broker or CA certificates */
	chain_default(&ch);
	make_node_cert(&c);
	c.role = OVL_ROLE_BROKER;
	ch.node_len = sign_cert(&c, broker, ch.node);
	expect_chain(&ch, -EPERM,
		     "node certificate serial 7 has role 'broker'; a broker may issue only node, client and admin certificates");
	c.role = OVL_ROLE_CA;
	ch.node_len = sign_cert(&c, broker, ch.node);
	expect_chain(&ch, -EPERM,
		     "node certificate serial 7 has role 'ca'; a broker may issue only node, client and admin certificates");
}

static void test_chain_wrong_issuer(void **state)
{
	struct chain ch;
	struct ovl_cert c;
	char want[256], fpc[OVL_ID_FP_BYTES], fpb[OVL_ID_FP_BYTES], fpr[OVL_ID_FP_BYTES];

	fp_of(ca, fpc);
	fp_of(broker, fpb);
	fp_of(rogue, fpr);
	/* the CA signing a node certificate directly skips the broker: refused */
	chain_default(&ch);
	make_node_cert(&c);
	ch.node_len = sign_cert(&c, ca, ch.node);
	snprintf(want, sizeof(want),
		 "node certificate serial 7 was issued by key %s, not by the broker's key %s", fpc, fpb);
	expect_chain(&ch, -EKEYREJECTED, want);
	/* a broker certificate not from the CA */
	chain_default(&ch);
	make_broker_cert(&c);
	ch.broker_len = sign_cert(&c, rogue, ch.broker);
	snprintf(want, sizeof(want),
		 "broker certificate serial 1 was issued by key %s, not by the CA's key %s", fpr, fpc);
	expect_chain(&ch, -EKEYREJECTED, want);
	/* a broker certificate for the rogue's key: the node cert is not its */
	chain_default(&ch);
	make_broker_cert(&c);
	ovl_cert_set_keys(&c, rogue);
	ch.broker_len = sign_cert(&c, ca, ch.broker);
	snprintf(want, sizeof(want),
		 "node certificate serial 7 was issued by key %s, not by the broker's key %s", fpb, fpr);
	expect_chain(&ch, -EKEYREJECTED, want);
	/* a different trusted CA */
	chain_default(&ch);
	memcpy(ch.trust.ca_pk, rogue->sign_pk, 32);
	snprintf(want, sizeof(want),
		 "broker certificate serial 1 was issued by key %s, not by the CA's key %s", fpc, fpr);
	expect_chain(&ch, -EKEYREJECTED, want);
}

static void test_chain_time(void **state)
{
	struct chain ch;
	struct ovl_cert c;

	chain_default(&ch);
	make_broker_cert(&c);
	c.not_after = NOW - 1;
	ch.broker_len = sign_cert(&c, ca, ch.broker);
	expect_chain(&ch, -EKEYEXPIRED, "broker certificate serial 1 expired at 1700000099 (now 1700000100)");
	chain_default(&ch);
	make_node_cert(&c);
	c.not_before = NOW + 1;
	ch.node_len = sign_cert(&c, broker, ch.node);
	expect_chain(&ch, -EKEYEXPIRED, "node certificate serial 7 is not valid before 1700000101 (now 1700000100)");
}

static struct ovl_crl *make_crl(const struct ovl_id *issuer, uint64_t version, const uint64_t *s,
				size_t n)
{
	struct ovl_crl *crl = NULL;
	uint8_t *enc = NULL;
	size_t len = 0;
	char err[256];

	assert_int_equal(ovl_crl_sign(version, s, n, issuer->sign_sk, &enc, &len, err, sizeof(err)), 0);
	assert_int_equal(ovl_crl_decode(&crl, enc, len, issuer->sign_pk, err, sizeof(err)), 0);
	free(enc);
	return crl;
}

static void test_chain_revoked(void **state)
{
	const uint64_t node_serials[] = { 3, 7, 11 }, broker_serials[] = { 1 };
	struct ovl_crl *by_broker = make_crl(broker, 3, node_serials, 3);
	struct ovl_crl *by_ca = make_crl(ca, 9, broker_serials, 1);
	struct ovl_crl *by_rogue = make_crl(rogue, 1, node_serials, 3);
	const struct ovl_crl *lists[3];
	struct chain ch;

	chain_default(&ch);
	ch.trust.crls = lists;
	/* a list from another issuer does not apply, even if the serial matches */
	lists[0] = by_rogue;
	ch.trust.ncrls = 1;
	expect_chain(&ch, 0, NULL);
	lists[1] = by_broker;
	ch.trust.ncrls = 2;
	expect_chain(&ch, -EKEYREVOKED, "node certificate serial 7 is revoked (revocation list version 3)");
	lists[2] = by_ca;
	ch.trust.ncrls = 3;
	expect_chain(&ch, -EKEYREVOKED, "broker certificate serial 1 is revoked (revocation list version 9)");
	/* the CA's list says nothing about node serials: serials are per issuer */
	lists[0] = make_crl(ca, 10, node_serials, 3);
	ch.trust.ncrls = 1;
	expect_chain(&ch, 0, NULL);
	ovl_crl_destroy((struct ovl_crl **)&lists[0]);
	ovl_crl_destroy(&by_broker);
	ovl_crl_destroy(&by_ca);
	ovl_crl_destroy(&by_rogue);
}

/* ---- revocation lists ---------------------------------------------------- */

static const char crl_hex[] =
	"92c43584a17601a776657273696f6e04a6697373756572c408fc8c895fc144884ea773657269616c"
	"7395000305ccc8cf0000010000000000c4400081b3c692b198967aa078158cb09fb1a725033d21a4"
	"f90b2f8437d22c120379cfc33a29e14b21e4d7501b9e65935821e95c5cad14c9e8fc420ae5ddfc5e"
	"4e03";

static void test_crl_known_answer_and_lookup(void **state)
{
	const uint64_t s[] = { 1ULL << 40, 5, 3, 5, 0, 200 };
	struct ovl_crl *crl = NULL;
	uint8_t *enc = NULL;
	const uint8_t *back = NULL;
	char hex[1024], err[256];
	size_t len = 0, blen = 0;

	assert_int_equal(ovl_crl_sign(4, s, 6, broker->sign_sk, &enc, &len, err, sizeof(err)), 0);
	sodium_bin2hex(hex, sizeof(hex), enc, len);
	printf("crl %zu bytes: %s\n", len, hex);
	assert_string_equal(hex, crl_hex);
	assert_int_equal(ovl_crl_decode(&crl, enc, len, broker->sign_pk, err, sizeof(err)), 0);
	assert_int_equal(ovl_crl_version(crl), 4);
	assert_int_equal(ovl_crl_count(crl), 5);
	assert_memory_equal(ovl_crl_issuer_pk(crl), broker->sign_pk, 32);
	back = ovl_crl_encoded(crl, &blen);
	assert_int_equal(blen, len);
	assert_memory_equal(back, enc, len);
	assert_true(ovl_crl_is_revoked(crl, 0));
	assert_true(ovl_crl_is_revoked(crl, 3));
	assert_true(ovl_crl_is_revoked(crl, 5));
	assert_true(ovl_crl_is_revoked(crl, 200));
	assert_true(ovl_crl_is_revoked(crl, 1ULL << 40));
	assert_false(ovl_crl_is_revoked(crl, 4));
	assert_false(ovl_crl_is_revoked(crl, UINT64_MAX));
	assert_false(ovl_crl_is_revoked(NULL, 3));
	ovl_crl_destroy(&crl);
	assert_null(crl);
	free(enc);
}

static void test_crl_large(void **state)
{
	uint64_t *s = malloc((OVL_CRL_SERIALS_MAX + 1) * sizeof(*s));
	struct ovl_crl *crl = NULL;
	uint8_t *enc = NULL;
	size_t len = 0;
	char err[256];

	assert_non_null(s);
	for (size_t i = 0; i <= OVL_CRL_SERIALS_MAX; i++)
		s[i] = (i * 2654435761ULL) % 1000003 * 1000 + UINT32_MAX; /* distinct, 9-byte encodings */
	assert_int_equal(ovl_crl_sign(1, s, OVL_CRL_SERIALS_MAX + 1, broker->sign_sk, &enc, &len, err,
				      sizeof(err)), -E2BIG);
	assert_string_equal(err, "revocation list: 4097 serials, more than the limit of 4096");
	assert_null(enc);
	assert_int_equal(ovl_crl_sign(1, s, OVL_CRL_SERIALS_MAX, broker->sign_sk, &enc, &len, err,
				      sizeof(err)), 0);
	assert_true(len <= OVL_CRL_MAX_BYTES);
	assert_int_equal(ovl_crl_decode(&crl, enc, len, broker->sign_pk, err, sizeof(err)), 0);
	assert_int_equal(ovl_crl_count(crl), OVL_CRL_SERIALS_MAX);
	for (size_t i = 0; i < OVL_CRL_SERIALS_MAX; i++)
		assert_true(ovl_crl_is_revoked(crl, s[i]));
	assert_false(ovl_crl_is_revoked(crl, s[OVL_CRL_SERIALS_MAX]));
	assert_false(ovl_crl_is_revoked(crl, 1));
	ovl_crl_destroy(&crl);
	free(enc);
	free(s);
}

/* A list body built by hand: serials exactly as given. */
static size_t raw_crl(uint64_t version, const uint64_t *s, size_t n, uint8_t *out, size_t cap)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	uint8_t keyid[8];
	size_t len;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 4);
	pk_str(&pk, "v");
	msgpack_pack_uint64(&pk, 1);
	pk_str(&pk, "version");
	msgpack_pack_uint64(&pk, version);
	pk_str(&pk, "issuer");
	ovl_keyid_compute(broker->sign_pk, keyid);
	msgpack_pack_bin_with_body(&pk, keyid, 8);
	pk_str(&pk, "serials");
	msgpack_pack_array(&pk, n);
	for (size_t i = 0; i < n; i++)
		msgpack_pack_uint64(&pk, s[i]);
	len = seal(sb.data, sb.size, OVL_CRL_DOMAIN, broker, out, cap);
	msgpack_sbuffer_destroy(&sb);
	return len;
}

static void test_crl_malformed(void **state)
{
	const uint64_t unsorted[] = { 1, 3, 2 }, dup[] = { 1, 1 }, sorted[] = { 1, 2, 3 };
	uint64_t *many = calloc(OVL_CRL_SERIALS_MAX + 1, sizeof(*many));
	uint8_t *buf = malloc(OVL_CRL_MAX_BYTES * 2);
	struct ovl_crl *crl = NULL;
	char err[256];
	size_t n;

	assert_non_null(many);
	assert_non_null(buf);
	n = raw_crl(1, sorted, 3, buf, OVL_CRL_MAX_BYTES);
	assert_int_equal(ovl_crl_decode(&crl, buf, n, broker->sign_pk, err, sizeof(err)), 0);
	ovl_crl_destroy(&crl);
	n = raw_crl(1, unsorted, 3, buf, OVL_CRL_MAX_BYTES);
	assert_int_equal(ovl_crl_decode(&crl, buf, n, broker->sign_pk, err, sizeof(err)), -EBADMSG);
	assert_string_equal(err, "revocation list: serials are not in strictly ascending order at index 2");
	n = raw_crl(1, dup, 2, buf, OVL_CRL_MAX_BYTES);
	assert_int_equal(ovl_crl_decode(&crl, buf, n, broker->sign_pk, err, sizeof(err)), -EBADMSG);
	assert_string_equal(err, "revocation list: serials are not in strictly ascending order at index 1");
	for (size_t i = 0; i <= OVL_CRL_SERIALS_MAX; i++)
		many[i] = i;
	n = raw_crl(1, many, OVL_CRL_SERIALS_MAX + 1, buf, OVL_CRL_MAX_BYTES);
	assert_int_equal(ovl_crl_decode(&crl, buf, n, broker->sign_pk, err, sizeof(err)), -E2BIG);
	assert_string_equal(err, "revocation list: lists 4097 serials; at most 4096 are allowed");
	/* more bytes than any valid list: 8000 serials of 9 bytes each */
	free(many);
	many = calloc(8000, sizeof(*many));
	assert_non_null(many);
	for (size_t i = 0; i < 8000; i++)
		many[i] = UINT64_MAX - 8000 + i;
	n = raw_crl(1, many, 8000, buf, OVL_CRL_MAX_BYTES * 2);
	{
		char want[128];

		snprintf(want, sizeof(want), "revocation list is %zu bytes, more than the limit of 65536", n);
		assert_int_equal(ovl_crl_decode(&crl, buf, n, broker->sign_pk, err, sizeof(err)), -E2BIG);
		assert_string_equal(err, want);
	}
	/* truncations */
	n = raw_crl(1, sorted, 3, buf, OVL_CRL_MAX_BYTES);
	for (size_t len = 0; len < n; len++)
		assert_int_equal(ovl_crl_decode(&crl, buf, len, broker->sign_pk, err, sizeof(err)), -EBADMSG);
	assert_null(crl);
	free(many);
	free(buf);
}

static void test_crl_update(void **state)
{
	const uint64_t s[] = { 7 };
	struct ovl_crl *cur = NULL;
	uint8_t *v3 = NULL, *v2 = NULL, *v4 = NULL, *v5 = NULL, *rv = NULL;
	size_t l3, l2, l4, l5, lr;
	char err[256], want[256], fpb[OVL_ID_FP_BYTES], fpr[OVL_ID_FP_BYTES];

	fp_of(broker, fpb);
	fp_of(rogue, fpr);
	assert_int_equal(ovl_crl_sign(3, s, 1, broker->sign_sk, &v3, &l3, err, sizeof(err)), 0);
	assert_int_equal(ovl_crl_sign(2, s, 1, broker->sign_sk, &v2, &l2, err, sizeof(err)), 0);
	assert_int_equal(ovl_crl_sign(4, NULL, 0, broker->sign_sk, &v4, &l4, err, sizeof(err)), 0);
	assert_int_equal(ovl_crl_sign(5, s, 1, broker->sign_sk, &v5, &l5, err, sizeof(err)), 0);
	assert_int_equal(ovl_crl_sign(9, s, 1, rogue->sign_sk, &rv, &lr, err, sizeof(err)), 0);

	assert_int_equal(ovl_crl_update(&cur, v3, l3, broker->sign_pk, err, sizeof(err)), 0);
	assert_int_equal(ovl_crl_version(cur), 3);
	assert_true(ovl_crl_is_revoked(cur, 7));
	assert_int_equal(ovl_crl_update(&cur, v3, l3, broker->sign_pk, err, sizeof(err)), -ESTALE);
	assert_string_equal(err, "revocation list version 3 is not newer than the current version 3");
	assert_int_equal(ovl_crl_update(&cur, v2, l2, broker->sign_pk, err, sizeof(err)), -ESTALE);
	assert_string_equal(err, "revocation list version 2 is not newer than the current version 3");
	assert_int_equal(ovl_crl_version(cur), 3);
	/* a newer list may un-revoke */
	assert_int_equal(ovl_crl_update(&cur, v4, l4, broker->sign_pk, err, sizeof(err)), 0);
	assert_int_equal(ovl_crl_version(cur), 4);
	assert_false(ovl_crl_is_revoked(cur, 7));
	/* a forged newer list changes nothing */
	v5[l5 - 3] ^= 0x20;
	assert_int_equal(ovl_crl_update(&cur, v5, l5, broker->sign_pk, err, sizeof(err)), -EKEYREJECTED);
	snprintf(want, sizeof(want), "revocation list version 5: signature does not verify under key %s", fpb);
	assert_string_equal(err, want);
	assert_int_equal(ovl_crl_version(cur), 4);
	/* a list signed by someone else, offered as the broker's */
	assert_int_equal(ovl_crl_update(&cur, rv, lr, broker->sign_pk, err, sizeof(err)), -EKEYREJECTED);
	snprintf(want, sizeof(want), "revocation list version 9 was issued by key %s, not by key %s", fpr, fpb);
	assert_string_equal(err, want);
	/* and offered as its own: not a replacement for the broker's list */
	assert_int_equal(ovl_crl_update(&cur, rv, lr, rogue->sign_pk, err, sizeof(err)), -EKEYREJECTED);
	snprintf(want, sizeof(want), "revocation list from key %s cannot replace the list from key %s", fpr, fpb);
	assert_string_equal(err, want);
	assert_int_equal(ovl_crl_version(cur), 4);
	v5[l5 - 3] ^= 0x20;
	assert_int_equal(ovl_crl_update(&cur, v5, l5, broker->sign_pk, err, sizeof(err)), 0);
	assert_int_equal(ovl_crl_version(cur), 5);
	ovl_crl_destroy(&cur);
	free(v2);
	free(v3);
	free(v4);
	free(v5);
	free(rv);
}

/* ---- timestamps and trusted time ----------------------------------------- */

static const char ts_hex[] =
	"92c43784a17601a474696d65ce6553f100a56e6f6e6365c410303132333435363738396162636465"
	"66a6697373756572c408fc8c895fc144884ec44052349e1a14818f868366c02ac66a9f5586ab4f1a"
	"fc3bb9a12e0c3751b636defeaf805ecbbd39cb1794c9cc7b75c708c2d7c3e3007337a67588ed903b"
	"95700c07";

static void test_timestamp_token(void **state)
{
	const uint8_t nonce[16] = "0123456789abcdef";
	uint8_t buf[OVL_TS_MAX_BYTES];
	char hex[2 * OVL_TS_MAX_BYTES + 1], err[256], want[256], fpb[OVL_ID_FP_BYTES];
	uint64_t t = 0;
	int n;

	n = ovl_timestamp_sign(1700000000, nonce, sizeof(nonce), broker->sign_sk, buf, sizeof(buf), err,
			       sizeof(err));
	assert_true(n > 0);
	sodium_bin2hex(hex, sizeof(hex), buf, n);
	printf("timestamp %d bytes: %s\n", n, hex);
	assert_string_equal(hex, ts_hex);
	assert_int_equal(ovl_timestamp_verify(buf, n, broker->sign_pk, nonce, sizeof(nonce), &t, err,
					      sizeof(err)), 0);
	assert_int_equal(t, 1700000000);
	assert_int_equal(ovl_timestamp_verify(buf, n, broker->sign_pk, NULL, 0, &t, err, sizeof(err)), 0);
	assert_int_equal(ovl_timestamp_verify(buf, n, broker->sign_pk, nonce, 15, &t, err, sizeof(err)),
			 -ESTALE);
	assert_string_equal(err, "timestamp 1700000000 does not echo our nonce (replayed?)");
	buf[n - 10] ^= 1;
	fp_of(broker, fpb);
	snprintf(want, sizeof(want), "timestamp 1700000000: signature does not verify under key %s", fpb);
	assert_int_equal(ovl_timestamp_verify(buf, n, broker->sign_pk, NULL, 0, &t, err, sizeof(err)),
			 -EKEYREJECTED);
	assert_string_equal(err, want);
	assert_int_equal(ovl_timestamp_sign(1, buf, 33, broker->sign_sk, buf, sizeof(buf), err,
					    sizeof(err)), -E2BIG);
	assert_string_equal(err, "timestamp: nonce of 33 bytes is longer than 32");
	for (int len = 0; len < n; len++)
		assert_int_equal(ovl_timestamp_verify(buf, len, broker->sign_pk, NULL, 0, &t, err,
						      sizeof(err)), -EBADMSG);
}

struct fake_clock {
	int64_t real, mono;
};

static int64_t fake_real(void *ctx)
{
	return ((struct fake_clock *)ctx)->real;
}

static int64_t fake_mono(void *ctx)
{
	return ((struct fake_clock *)ctx)->mono;
}

static void test_time_local_clock(void **state)
{
	struct fake_clock fc = { .real = BUILD_TIME + 100, .mono = 5 };
	struct ovl_clock clk = { fake_real, fake_mono, &fc };
	struct ovl_time *t = ovl_time_new(BUILD_TIME, &clk);
	enum ovl_time_source src = OVL_TIME_BUILD;
	uint64_t now = 0;
	char reason[256] = "x";

	assert_non_null(t);
	assert_int_equal(ovl_time_now(t, &now, &src, reason, sizeof(reason)), 0);
	assert_int_equal(now, BUILD_TIME + 100);
	assert_int_equal(src, OVL_TIME_LOCAL);
	assert_string_equal(reason, "");
	/* exactly the build time counts as a working clock */
	fc.real = BUILD_TIME;
	assert_int_equal(ovl_time_now(t, &now, &src, reason, sizeof(reason)), 0);
	assert_int_equal(src, OVL_TIME_LOCAL);
	ovl_time_destroy(&t);
	assert_null(t);
	ovl_time_destroy(&t);
}

static void test_time_rtc_fallback(void **state)
{
	struct fake_clock fc = { .real = 5, .mono = 100 };
	struct ovl_clock clk = { fake_real, fake_mono, &fc };
	struct ovl_time *t = ovl_time_new(BUILD_TIME, &clk);
	const uint8_t nonce[8] = "n0nce-01";
	uint8_t tok[OVL_TS_MAX_BYTES], forged[OVL_TS_MAX_BYTES];
	enum ovl_time_source src = OVL_TIME_LOCAL;
	char reason[256], err[256], want[256], fpb[OVL_ID_FP_BYTES], fpr[OVL_ID_FP_BYTES];
	uint64_t now = 0;
	int n, nf;

	assert_non_null(t);
	fp_of(broker, fpb);
	fp_of(rogue, fpr);
	/* clock reset, no token yet: the build date, and why */
	assert_int_equal(ovl_time_now(t, &now, &src, reason, sizeof(reason)), 0);
	assert_int_equal(src, OVL_TIME_BUILD);
	assert_int_equal(now, BUILD_TIME);
	assert_string_equal(reason,
			    "local clock 1970-01-01T00:00:05Z is before the build date 2023-07-22T04:26:40Z and no broker timestamp has arrived; using the build date");
	/* a forged token is ignored: signed by the rogue, offered as the broker's */
	nf = ovl_timestamp_sign(1900000000, nonce, sizeof(nonce), rogue->sign_sk, forged, sizeof(forged),
				err, sizeof(err));
	assert_true(nf > 0);
	assert_int_equal(ovl_time_add_token(t, forged, nf, broker->sign_pk, nonce, sizeof(nonce), err,
					    sizeof(err)), -EKEYREJECTED);
	snprintf(want, sizeof(want), "timestamp 1900000000 was issued by key %s, not by key %s", fpr, fpb);
	assert_string_equal(err, want);
	/* the broker's token with one bit changed (the time) is ignored too */
	n = ovl_timestamp_sign(1700000000, nonce, sizeof(nonce), broker->sign_sk, tok, sizeof(tok), err,
			       sizeof(err));
	assert_true(n > 0);
	memcpy(forged, tok, n);
	for (int i = 0; i < n - 4; i++) {
		/* "time" is followed by 0xce and four bytes */
		if (memcmp(forged + i, "time\xce", 5) == 0) {
			forged[i + 6] ^= 0x40;
			break;
		}
	}
	assert_int_equal(ovl_time_add_token(t, forged, n, broker->sign_pk, nonce, sizeof(nonce), err,
					    sizeof(err)), -EKEYREJECTED);
	assert_non_null(strstr(err, "signature does not verify"));
	assert_int_equal(ovl_time_now(t, &now, &src, reason, sizeof(reason)), 0);
	assert_int_equal(src, OVL_TIME_BUILD);
	/* a replayed token (someone else's nonce) is ignored */
	assert_int_equal(ovl_time_add_token(t, tok, n, broker->sign_pk, (const uint8_t *)"other-01", 8,
					    err, sizeof(err)), -ESTALE);
	assert_int_equal(ovl_time_now(t, &now, &src, reason, sizeof(reason)), 0);
	assert_int_equal(src, OVL_TIME_BUILD);
	/* the genuine token is used, advanced by the monotonic clock */
	assert_int_equal(ovl_time_add_token(t, tok, n, broker->sign_pk, nonce, sizeof(nonce), err,
					    sizeof(err)), 0);
	fc.mono += 30;
	fc.real += 30;
	assert_int_equal(ovl_time_now(t, &now, &src, reason, sizeof(reason)), 0);
	assert_int_equal(src, OVL_TIME_BROKER);
	assert_int_equal(now, 1700000030);
	assert_string_equal(reason,
			    "local clock 1970-01-01T00:00:35Z is before the build date 2023-07-22T04:26:40Z; using the broker timestamp 2023-11-14T22:13:20Z received 30 s ago");
	/* an older genuine token never moves time back */
	n = ovl_timestamp_sign(1699999000, NULL, 0, broker->sign_sk, tok, sizeof(tok), err, sizeof(err));
	assert_int_equal(ovl_time_add_token(t, tok, n, broker->sign_pk, NULL, 0, err, sizeof(err)), 0);
	assert_int_equal(ovl_time_now(t, &now, &src, reason, sizeof(reason)), 0);
	assert_int_equal(now, 1700000030);
	/* a newer one moves it forward */
	n = ovl_timestamp_sign(1700001000, NULL, 0, broker->sign_sk, tok, sizeof(tok), err, sizeof(err));
	assert_int_equal(ovl_time_add_token(t, tok, n, broker->sign_pk, NULL, 0, err, sizeof(err)), 0);
	assert_int_equal(ovl_time_now(t, &now, &src, reason, sizeof(reason)), 0);
	assert_int_equal(now, 1700001000);
	/* a broker whose own clock is before the build date is refused */
	n = ovl_timestamp_sign(1000, NULL, 0, broker->sign_sk, tok, sizeof(tok), err, sizeof(err));
	assert_int_equal(ovl_time_add_token(t, tok, n, broker->sign_pk, NULL, 0, err, sizeof(err)), -ERANGE);
	assert_string_equal(err, "timestamp 1000 (1970-01-01T00:16:40Z) is before the build date 2023-07-22T04:26:40Z");
	/* once the local clock is set, it wins again */
	fc.real = 1700005000;
	assert_int_equal(ovl_time_now(t, &now, &src, reason, sizeof(reason)), 0);
	assert_int_equal(src, OVL_TIME_LOCAL);
	assert_int_equal(now, 1700005000);
	ovl_time_destroy(&t);
}

static void test_build_time(void **state)
{
	int64_t b = ovl_time_build_time();
	struct ovl_time *t = ovl_time_new(b, NULL);
	uint64_t now = 0;
	enum ovl_time_source src;
	char reason[256];

	assert_true(b >= 1704067200); /* 2024-01-01: this code did not exist before */
	assert_true(b <= time(NULL) + 86400);
	assert_non_null(t);
	/* the system clock of a test machine is set */
	assert_int_equal(ovl_time_now(t, &now, &src, reason, sizeof(reason)), 0);
	assert_int_equal(src, OVL_TIME_LOCAL);
	assert_true(now >= (uint64_t)b);
	ovl_time_destroy(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cert_known_answer),
		cmocka_unit_test(test_cert_roundtrip),
		cmocka_unit_test(test_cert_validity_window),
		cmocka_unit_test(test_cert_bad_signature),
		cmocka_unit_test(test_cert_wrong_issuer),
		cmocka_unit_test(test_cert_domain_separation),
		cmocka_unit_test(test_cert_truncated),
		cmocka_unit_test(test_cert_oversized),
		cmocka_unit_test(test_cert_malformed_fields),
		cmocka_unit_test(test_roles),
		cmocka_unit_test(test_chain_ok),
		cmocka_unit_test(test_chain_wrong_role),
		cmocka_unit_test(test_chain_wrong_issuer),
		cmocka_unit_test(test_chain_time),
		cmocka_unit_test(test_chain_revoked),
		cmocka_unit_test(test_crl_known_answer_and_lookup),
		cmocka_unit_test(test_crl_large),
		cmocka_unit_test(test_crl_malformed),
		cmocka_unit_test(test_crl_update),
		cmocka_unit_test(test_timestamp_token),
		cmocka_unit_test(test_time_local_clock),
		cmocka_unit_test(test_time_rtc_fallback),
		cmocka_unit_test(test_build_time),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
