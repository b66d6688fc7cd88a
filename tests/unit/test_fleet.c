/*
 * ovl_fleet: versions, the release role, release metadata, the image head,
 * block keys, assignments and reports. Round trips, and every refusal with
 * its error code and the words that say why. Hostile encodings are built
 * with the test's own msgpack-c packer and sealed with the right key, so
 * that only the property under test is wrong. Randomized parts print their
 * seed; SEED=n replays them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "overlay.h"
#include "ovl_signed.h"

#define NOW 1700000100ULL
#define MIB (1u << 20)

static struct ovl_id *ca, *rogue_ca, *broker, *relkey, *rogue_rel;
static uint8_t rel_cert[OVL_CERT_MAX_BYTES], rogue_cert[OVL_CERT_MAX_BYTES];
static size_t rel_cert_len, rogue_cert_len;
static struct ovl_trust trust;
static uint8_t *payload;                  /* PAYLOAD_BYTES of deterministic bytes */
#define PAYLOAD_BYTES (3 * MIB + 5)       /* 4 blocks, the last short */
static unsigned seed;

static void seeded(struct ovl_id **id, uint8_t sign_byte)
{
	uint8_t s[32], c[32];

	memset(s, sign_byte, sizeof(s));
	memset(c, sign_byte + 1, sizeof(c));
	assert_int_equal(ovl_id_from_seed(id, s, c), 0);
}

/* A certificate of `role` for subject, signed by issuer; returns its length. */
static size_t mkcert(uint8_t *out, const struct ovl_id *subject, const struct ovl_id *issuer,
		     enum ovl_role role, uint64_t serial, uint64_t nbf, uint64_t naf)
{
	struct ovl_cert c;
	char err[256];
	int n;

	ovl_cert_init(&c);
	ovl_cert_set_keys(&c, subject);
	c.serial = serial;
	c.role = role;
	c.not_before = nbf;
	c.not_after = naf;
	n = ovl_cert_sign(&c, issuer->sign_sk, out, OVL_CERT_MAX_BYTES, err, sizeof(err));
	assert_true(n > 0);
	return (size_t)n;
}

static int group_setup(void **state)
{
	const char *s = getenv("SEED");

	if (sodium_init() < 0)
		return -1;
	seed = s ? (unsigned)strtoul(s, NULL, 10) : (unsigned)time(NULL);
	fprintf(stderr, "test_fleet: SEED=%u\n", seed);
	seeded(&ca, 0x41);
	seeded(&rogue_ca, 0x43);
	seeded(&broker, 0x45);
	seeded(&relkey, 0x47);
	seeded(&rogue_rel, 0x49);
	memset(&trust, 0, sizeof(trust));
	memcpy(trust.ca_pk, ca->sign_pk, 32);
	rel_cert_len = mkcert(rel_cert, relkey, ca, OVL_ROLE_RELEASE, 11, NOW - 100, NOW + 86400);
	rogue_cert_len = mkcert(rogue_cert, rogue_rel, rogue_ca, OVL_ROLE_RELEASE, 12, NOW - 100,
				NOW + 86400);
	payload = malloc(PAYLOAD_BYTES);
	if (!payload)
		return -1;
	for (size_t i = 0; i < PAYLOAD_BYTES; i++)
		payload[i] = (uint8_t)(i * 131 + (i >> 13));
	return 0;
}

static int group_teardown(void **state)
{
	ovl_id_destroy(&ca);
	ovl_id_destroy(&rogue_ca);
	ovl_id_destroy(&broker);
	ovl_id_destroy(&relkey);
	ovl_id_destroy(&rogue_rel);
	free(payload);
	return 0;
}

static void assert_contains(const char *hay, const char *needle)
{
	if (!strstr(hay, needle)) {
		fprintf(stderr, "'%s' does not contain '%s'\n", hay, needle);
		fail();
	}
}

/* ---- versions ------------------------------------------------------------ */

static void test_version(void **state)
{
	static const char *const bad[] = {
		"", "1", "1.2", "1.2.3.4", "01.2.3", "1.02.3", "1.2.03", "1.2.3 ", " 1.2.3",
		"1.2.-3", "-1.2.3", "+1.2.3", "65536.0.0", "0.65536.0", "0.0.65536", "1..2",
		"a.b.c", "1.2.3x", "1.2.3-rc1", "99999999999999999999.0.0", "1.2.", ".1.2",
		"1,2,3", "1.2.3\n", "0x1.2.3", "00.0.0",
	};
	char err[256], out[OVL_FLEET_VERSION_BYTES];
	uint64_t v = 0, w = 0;

	assert_int_equal(ovl_fleet_version_parse("0.0.0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(ovl_fleet_version_parse("1.2.3", &v), 0);
	assert_int_equal(v, (1ULL << 32) | (2 << 16) | 3);
	assert_int_equal(ovl_fleet_version_parse("65535.65535.65535", &v), 0);
	assert_int_equal(v, 0xffffffffffffULL);
	ovl_fleet_version_format(v, out);
	assert_string_equal(out, "65535.65535.65535");
	assert_int_equal(ovl_fleet_version_parse("1.10.0", &v), 0);
	assert_int_equal(ovl_fleet_version_parse("1.9.65535", &w), 0);
	assert_true(v > w); /* numeric, not text, order */
	ovl_fleet_version_format(w, out);
	assert_string_equal(out, "1.9.65535");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = 77;
		err[0] = '\0';
		if (ovl_fleet_version_check(bad[i], &v, err, sizeof(err)) != -EINVAL) {
			fprintf(stderr, "version '%s' was accepted\n", bad[i]);
			fail();
		}
		assert_int_equal(v, 77);
		assert_true(strlen(err) > 0);
		assert_int_equal(ovl_fleet_version_parse(bad[i], &v), -EINVAL);
	}
	assert_int_equal(ovl_fleet_version_check("01.2.3", &v, err, sizeof(err)), -EINVAL);
	assert_contains(err, "leading zero");
	assert_int_equal(ovl_fleet_version_check("1.2.70000", &v, err, sizeof(err)), -EINVAL);
	assert_contains(err, "65535");
	assert_int_equal(ovl_fleet_version_check(NULL, &v, err, sizeof(err)), -EINVAL);
	/* the tree's own version is a version */
	assert_int_equal(ovl_fleet_version_parse(ovl_fleet_build_version(), &v), 0);
	/* boards */
	assert_true(ovl_fleet_board_ok("sim"));
	assert_true(ovl_fleet_board_ok("rpi-4_b.v2"));
	assert_false(ovl_fleet_board_ok(""));
	assert_false(ovl_fleet_board_ok(".hidden"));
	assert_false(ovl_fleet_board_ok("a/b"));
	assert_false(ovl_fleet_board_ok("a b"));
	assert_false(ovl_fleet_board_ok("0123456789012345678901234567890123"));
}

/* ---- the release role and its certificate --------------------------------- */

static void test_release_role(void **state)
{
	enum ovl_role r;

	assert_string_equal(ovl_role_name(OVL_ROLE_RELEASE), "release");
	assert_int_equal(ovl_role_parse("release", &r), 0);
	assert_int_equal(r, OVL_ROLE_RELEASE);
	assert_null(ovl_role_name((enum ovl_role)7));
}

static void test_release_cert(void **state)
{
	uint8_t buf[OVL_CERT_MAX_BYTES];
	struct ovl_cert rc, nc;
	uint8_t *crl = NULL;
	size_t crl_len = 0, n;
	struct ovl_crl *list = NULL;
	const struct ovl_crl *lists[1];
	struct ovl_trust t2;
	uint64_t serials[1] = { 11 };
	char err[512];

	assert_int_equal(ovl_fleet_release_cert_verify(&rc, rel_cert, rel_cert_len, &trust, NOW, err,
						       sizeof(err)), 0);
	assert_int_equal(rc.role, OVL_ROLE_RELEASE);
	assert_memory_equal(rc.sign_pk, relkey->sign_pk, 32);
	/* signed by another CA */
	assert_int_equal(ovl_fleet_release_cert_verify(&rc, rogue_cert, rogue_cert_len, &trust, NOW,
						       err, sizeof(err)), -EKEYREJECTED);
	assert_contains(err, "not certified by this site's CA");
	assert_true(ovl_mem_is_zero(&rc, sizeof(rc)));
	/* a node certificate (issued by a broker) used as a release certificate */
	n = mkcert(buf, relkey, broker, OVL_ROLE_NODE, 13, NOW - 100, NOW + 86400);
	assert_int_equal(ovl_fleet_release_cert_verify(&rc, buf, n, &trust, NOW, err, sizeof(err)),
			 -EKEYREJECTED);
	assert_contains(err, "not certified by this site's CA");
	/* ... and even one the CA signed but for another role */
	n = mkcert(buf, relkey, ca, OVL_ROLE_NODE, 14, NOW - 100, NOW + 86400);
	assert_int_equal(ovl_fleet_release_cert_verify(&rc, buf, n, &trust, NOW, err, sizeof(err)),
			 -EPERM);
	assert_contains(err, "role 'node'");
	n = mkcert(buf, relkey, ca, OVL_ROLE_BROKER, 15, NOW - 100, NOW + 86400);
	assert_int_equal(ovl_fleet_release_cert_verify(&rc, buf, n, &trust, NOW, err, sizeof(err)),
			 -EPERM);
	/* expired, not yet valid */
	assert_int_equal(ovl_fleet_release_cert_verify(&rc, rel_cert, rel_cert_len, &trust,
						       NOW + 86401, err, sizeof(err)), -EKEYEXPIRED);
	assert_int_equal(ovl_fleet_release_cert_verify(&rc, rel_cert, rel_cert_len, &trust, NOW - 101,
						       err, sizeof(err)), -EKEYEXPIRED);
	/* revoked by a CA list; a list of another issuer does not apply */
	assert_int_equal(ovl_crl_sign(1, serials, 1, ca->sign_sk, &crl, &crl_len, err, sizeof(err)),
			 0);
	assert_int_equal(ovl_crl_decode(&list, crl, crl_len, ca->sign_pk, err, sizeof(err)), 0);
	lists[0] = list;
	t2 = trust;
	t2.crls = lists;
	t2.ncrls = 1;
	assert_int_equal(ovl_fleet_release_cert_verify(&rc, rel_cert, rel_cert_len, &t2, NOW, err,
						       sizeof(err)), -EKEYREVOKED);
	assert_contains(err, "revoked");
	ovl_crl_destroy(&list);
	free(crl);
	crl = NULL;
	assert_int_equal(ovl_crl_sign(1, serials, 1, broker->sign_sk, &crl, &crl_len, err,
				      sizeof(err)), 0);
	assert_int_equal(ovl_crl_decode(&list, crl, crl_len, broker->sign_pk, err, sizeof(err)), 0);
	lists[0] = list;
	assert_int_equal(ovl_fleet_release_cert_verify(&rc, rel_cert, rel_cert_len, &t2, NOW, err,
						       sizeof(err)), 0);
	ovl_crl_destroy(&list);
	free(crl);
	/* garbage */
	assert_int_equal(ovl_fleet_release_cert_verify(&rc, (const uint8_t *)"\x92\xc4", 2, &trust,
						       NOW, err, sizeof(err)), -EBADMSG);

	/* the chain never takes a release certificate for a broker's or a node's */
	{
		uint8_t bc[OVL_CERT_MAX_BYTES], nodec[OVL_CERT_MAX_BYTES], rcb[OVL_CERT_MAX_BYTES];
		size_t bl, nl, rl;
		struct ovl_cert b;

		/* a release cert where the broker cert goes, and a node cert it "issued" */
		nl = mkcert(nodec, broker, relkey, OVL_ROLE_NODE, 16, NOW - 100, NOW + 86400);
		assert_int_equal(ovl_cert_verify_chain(&nc, &b, nodec, nl, rel_cert, rel_cert_len,
						       &trust, NOW, err, sizeof(err)), -EPERM);
		assert_contains(err, "role 'release'");
		/* a release cert (issued by a real broker) where the node cert goes */
		bl = mkcert(bc, broker, ca, OVL_ROLE_BROKER, 17, NOW - 100, NOW + 86400);
		rl = mkcert(rcb, relkey, broker, OVL_ROLE_RELEASE, 18, NOW - 100, NOW + 86400);
		assert_int_equal(ovl_cert_verify_chain(&nc, &b, rcb, rl, bc, bl, &trust, NOW, err,
						       sizeof(err)), -EPERM);
		assert_contains(err, "role 'release'");
		/* and the same chain with a node cert passes */
		nl = mkcert(nodec, relkey, broker, OVL_ROLE_NODE, 19, NOW - 100, NOW + 86400);
		assert_int_equal(ovl_cert_verify_chain(&nc, &b, nodec, nl, bc, bl, &trust, NOW, err,
						       sizeof(err)), 0);
	}
}

/* ---- release metadata ------------------------------------------------------- */

static void fill_release(struct ovl_fleet_release *r, const char *version, const char *board,
			 const uint8_t *data, uint64_t size)
{
	memset(r, 0, sizeof(*r));
	snprintf(r->version, sizeof(r->version), "%s", version);
	snprintf(r->board, sizeof(r->board), "%s", board);
	snprintf(r->min_from, sizeof(r->min_from), "0.0.0");
	r->size = size;
	r->block_size = ovl_fleet_block_size_for(size);
	r->nblocks = (uint32_t)((size + r->block_size - 1) / r->block_size);
	r->blocks = calloc(r->nblocks, 32);
	assert_non_null(r->blocks);
	for (uint32_t i = 0; i < r->nblocks; i++)
		crypto_hash_sha256(r->blocks[i], data + (uint64_t)i * r->block_size,
				   ovl_fleet_block_len(r, i));
	crypto_hash_sha256(r->sha256, data, size);
	r->issued = NOW - 10;
	r->expires = NOW + 3600;
}

/* Sign a release of the test payload; *meta malloc'd. */
static size_t sign_release(uint8_t **meta, const char *version, const char *board,
			   const char *min_from, bool rollback, uint64_t expires,
			   const struct ovl_id *key)
{
	struct ovl_fleet_release r;
	char err[256];
	size_t len = 0;

	fill_release(&r, version, board, payload, PAYLOAD_BYTES);
	snprintf(r.min_from, sizeof(r.min_from), "%s", min_from);
	r.rollback = rollback;
	r.expires = expires;
	assert_int_equal(ovl_fleet_release_sign(&r, key->sign_sk, meta, &len, err, sizeof(err)), 0);
	ovl_fleet_release_free(&r);
	return len;
}

static int verify(struct ovl_fleet_release *r, const uint8_t *meta, size_t len,
		  const char *board, const char *running, uint64_t now, char *err, size_t errlen)
{
	return ovl_fleet_release_verify(r, meta, len, rel_cert, rel_cert_len, &trust, now, board,
					running, err, errlen);
}

static void test_block_size(void **state)
{
	assert_int_equal(ovl_fleet_block_size_for(0), 0);
	assert_int_equal(ovl_fleet_block_size_for(1), MIB);
	assert_int_equal(ovl_fleet_block_size_for(1024ULL * MIB), MIB);
	assert_int_equal(ovl_fleet_block_size_for(1024ULL * MIB + 1), 2 * MIB);
	assert_int_equal(ovl_fleet_block_size_for(256ULL * MIB), MIB);
	assert_int_equal(ovl_fleet_block_size_for(64ULL << 30), 64 * MIB);
	assert_int_equal(ovl_fleet_block_size_for((64ULL << 30) + 1), 0);
}

static void test_release_roundtrip(void **state)
{
	struct ovl_fleet_release r, d;
	uint8_t *meta = NULL, id[32];
	size_t len;
	char err[512];

	len = sign_release(&meta, "1.2.3", "sim", "1.0.0", false, NOW + 3600, relkey);
	assert_true(len < OVL_FLEET_META_MAX_BYTES);
	assert_int_equal(verify(&r, meta, len, "sim", "1.1.0", NOW, err, sizeof(err)), 0);
	assert_string_equal(r.version, "1.2.3");
	assert_int_equal(r.version_num, (1ULL << 32) | (2 << 16) | 3);
	assert_string_equal(r.board, "sim");
	assert_int_equal(r.size, PAYLOAD_BYTES);
	assert_int_equal(r.block_size, MIB);
	assert_int_equal(r.nblocks, 4);
	assert_string_equal(r.min_from, "1.0.0");
	assert_int_equal(r.min_from_num, 1ULL << 32);
	assert_false(r.rollback);
	assert_int_equal(r.expires, NOW + 3600);
	assert_int_equal(r.issued, NOW - 10);
	assert_memory_equal(r.key, relkey->sign_pk, 32);
	crypto_hash_sha256(id, meta, len);
	assert_memory_equal(r.id, id, 32);
	assert_int_equal(ovl_fleet_block_len(&r, 3), 5);
	assert_int_equal(ovl_fleet_block_len(&r, 4), 0);
	/* every block verifies; one flipped byte in any block does not */
	for (uint32_t i = 0; i < r.nblocks; i++) {
		uint8_t *b = payload + (size_t)i * MIB;
		size_t bl = (size_t)ovl_fleet_block_len(&r, i);
		size_t at = (size_t)(rand_r(&seed) % bl);

		assert_int_equal(ovl_fleet_block_check(&r, i, b, bl, err, sizeof(err)), 0);
		b[at] ^= 0x01;
		assert_int_equal(ovl_fleet_block_check(&r, i, b, bl, err, sizeof(err)), -EBADMSG);
		assert_contains(err, "does not verify");
		b[at] ^= 0x01;
		assert_int_equal(ovl_fleet_block_check(&r, i, b, bl - 1, err, sizeof(err)), -EBADMSG);
	}
	/* block 0's bytes are not block 1 */
	assert_int_equal(ovl_fleet_block_check(&r, 1, payload, MIB, err, sizeof(err)), -EBADMSG);
	assert_int_equal(ovl_fleet_block_check(&r, 4, payload, 5, err, sizeof(err)), -EBADMSG);
	/* decode (display only) gives the same */
	assert_int_equal(ovl_fleet_release_decode(&d, meta, len, err, sizeof(err)), 0);
	assert_memory_equal(d.blocks, r.blocks, 4 * 32);
	assert_memory_equal(d.id, r.id, 32);
	assert_memory_equal(d.sha256, r.sha256, 32);
	ovl_fleet_release_free(&d);
	ovl_fleet_release_free(&r);
	/* NULL board and running skip those checks */
	assert_int_equal(verify(&r, meta, len, NULL, NULL, NOW, err, sizeof(err)), 0);
	ovl_fleet_release_free(&r);
	free(meta);
}

static void test_release_flips(void **state)
{
	struct ovl_fleet_release r;
	uint8_t *meta = NULL;
	size_t len;
	char err[512];

	len = sign_release(&meta, "1.2.3", "sim", "0.0.0", false, NOW + 3600, relkey);
	/* one flipped byte anywhere in the metadata: refused */
	for (size_t i = 0; i < len; i++) {
		int ret;

		meta[i] ^= 0x20;
		ret = verify(&r, meta, len, "sim", "1.0.0", NOW, err, sizeof(err));
		if (ret == 0) {
			fprintf(stderr, "a flip at byte %zu of %zu was accepted\n", i, len);
			fail();
		}
		assert_true(ovl_mem_is_zero(&r, sizeof(r)));
		/* in the signature (the last 64 bytes): it does not verify */
		if (i >= len - 64)
			assert_int_equal(ret, -EKEYREJECTED);
		meta[i] ^= 0x20;
	}
	assert_int_equal(verify(&r, meta, len, "sim", "1.0.0", NOW, err, sizeof(err)), 0);
	ovl_fleet_release_free(&r);
	/* a flipped byte in the body: the signature says so */
	meta[len / 2] ^= 0x01;
	assert_int_equal(verify(&r, meta, len, "sim", "1.0.0", NOW, err, sizeof(err)), -EKEYREJECTED);
	assert_contains(err, "signature does not verify");
	meta[len / 2] ^= 0x01;
	/* every truncation, and trailing bytes */
	for (size_t n = 0; n < len; n++)
		assert_true(verify(&r, meta, n, "sim", "1.0.0", NOW, err, sizeof(err)) < 0);
	{
		uint8_t *more = malloc(len + 1);

		memcpy(more, meta, len);
		more[len] = 0;
		assert_int_equal(verify(&r, more, len + 1, "sim", NULL, NOW, err, sizeof(err)),
				 -EBADMSG);
		free(more);
	}
	free(meta);
}

static void test_release_refusals(void **state)
{
	struct ovl_fleet_release r;
	uint8_t *meta = NULL;
	size_t len;
	char err[512];
	uint8_t cert2[OVL_CERT_MAX_BYTES];
	size_t cert2_len;

	/* signed by a key the CA did not certify, presented with its own cert */
	len = sign_release(&meta, "1.2.3", "sim", "0.0.0", false, NOW + 3600, rogue_rel);
	assert_int_equal(ovl_fleet_release_verify(&r, meta, len, rogue_cert, rogue_cert_len, &trust,
						  NOW, "sim", "1.0.0", err, sizeof(err)),
			 -EKEYREJECTED);
	assert_contains(err, "not certified by this site's CA");
	/* ... or with the site's release cert */
	assert_int_equal(verify(&r, meta, len, "sim", "1.0.0", NOW, err, sizeof(err)), -EKEYREJECTED);
	assert_contains(err, "signature does not verify");
	free(meta);
	/* a node certificate of the same key where the release cert goes */
	cert2_len = mkcert(cert2, relkey, broker, OVL_ROLE_NODE, 21, NOW - 100, NOW + 86400);
	len = sign_release(&meta, "1.2.3", "sim", "0.0.0", false, NOW + 3600, relkey);
	assert_int_equal(ovl_fleet_release_verify(&r, meta, len, cert2, cert2_len, &trust, NOW, "sim",
						  "1.0.0", err, sizeof(err)), -EKEYREJECTED);
	cert2_len = mkcert(cert2, relkey, ca, OVL_ROLE_NODE, 22, NOW - 100, NOW + 86400);
	assert_int_equal(ovl_fleet_release_verify(&r, meta, len, cert2, cert2_len, &trust, NOW, "sim",
						  "1.0.0", err, sizeof(err)), -EPERM);
	/* another board */
	assert_int_equal(verify(&r, meta, len, "rpi4", "1.0.0", NOW, err, sizeof(err)), -EXDEV);
	assert_contains(err, "image for board 'sim', this is 'rpi4'");
	assert_true(ovl_mem_is_zero(&r, sizeof(r)));
	/* expired (the last second is still valid) */
	assert_int_equal(verify(&r, meta, len, "sim", "1.0.0", NOW + 3600, err, sizeof(err)), 0);
	ovl_fleet_release_free(&r);
	assert_int_equal(verify(&r, meta, len, "sim", "1.0.0", NOW + 3601, err, sizeof(err)),
			 -EKEYEXPIRED);
	assert_contains(err, "expired at");
	/* lower version than the running one, equal is fine */
	assert_int_equal(verify(&r, meta, len, "sim", "1.2.4", NOW, err, sizeof(err)), -ERANGE);
	assert_contains(err, "lower than the running 1.2.4");
	assert_int_equal(verify(&r, meta, len, "sim", "1.10.0", NOW, err, sizeof(err)), -ERANGE);
	assert_int_equal(verify(&r, meta, len, "sim", "1.2.3", NOW, err, sizeof(err)), 0);
	ovl_fleet_release_free(&r);
	/* a running version that is not one */
	assert_int_equal(verify(&r, meta, len, "sim", "1.2", NOW, err, sizeof(err)), -EINVAL);
	free(meta);
	/* a rollback signed by the release key may go lower */
	len = sign_release(&meta, "1.2.3", "sim", "0.0.0", true, NOW + 3600, relkey);
	assert_int_equal(verify(&r, meta, len, "sim", "2.0.0", NOW, err, sizeof(err)), 0);
	assert_true(r.rollback);
	ovl_fleet_release_free(&r);
	free(meta);
	/* below min_from */
	len = sign_release(&meta, "2.0.0", "sim", "1.5.0", false, NOW + 3600, relkey);
	assert_int_equal(verify(&r, meta, len, "sim", "1.4.9", NOW, err, sizeof(err)), -ERANGE);
	assert_contains(err, "upgrades only from 1.5.0");
	assert_int_equal(verify(&r, meta, len, "sim", "1.5.0", NOW, err, sizeof(err)), 0);
	ovl_fleet_release_free(&r);
	free(meta);
}

static void test_release_sign_refusals(void **state)
{
	struct ovl_fleet_release r;
	uint8_t *meta = NULL;
	size_t len = 0;
	char err[512];

	fill_release(&r, "1.2", "sim", payload, PAYLOAD_BYTES);
	assert_int_equal(ovl_fleet_release_sign(&r, relkey->sign_sk, &meta, &len, err, sizeof(err)),
			 -EINVAL);
	assert_null(meta);
	snprintf(r.version, sizeof(r.version), "1.2.3");
	snprintf(r.board, sizeof(r.board), "a/b");
	assert_int_equal(ovl_fleet_release_sign(&r, relkey->sign_sk, &meta, &len, err, sizeof(err)),
			 -EINVAL);
	snprintf(r.board, sizeof(r.board), "sim");
	snprintf(r.min_from, sizeof(r.min_from), "x");
	assert_int_equal(ovl_fleet_release_sign(&r, relkey->sign_sk, &meta, &len, err, sizeof(err)),
			 -EINVAL);
	snprintf(r.min_from, sizeof(r.min_from), "0.0.0");
	r.block_size = 3 * MIB;
	assert_int_equal(ovl_fleet_release_sign(&r, relkey->sign_sk, &meta, &len, err, sizeof(err)),
			 -EINVAL);
	r.block_size = MIB;
	r.nblocks = 3;
	assert_int_equal(ovl_fleet_release_sign(&r, relkey->sign_sk, &meta, &len, err, sizeof(err)),
			 -EINVAL);
	r.nblocks = 4;
	r.size = 0;
	assert_int_equal(ovl_fleet_release_sign(&r, relkey->sign_sk, &meta, &len, err, sizeof(err)),
			 -EINVAL);
	r.size = PAYLOAD_BYTES;
	assert_int_equal(ovl_fleet_release_sign(&r, relkey->sign_sk, &meta, &len, err, sizeof(err)),
			 0);
	free(meta);
	ovl_fleet_release_free(&r);
}

/* The test's own encoder of a release body: fields in order, `mode` picks
 * one thing to get wrong; sealed with the release key. */
enum hostile { H_NONE, H_WIDE_SIZE, H_EXTRA_FIELD, H_ORDER, H_BLOCKS_SHORT, H_BLOCKS_1025,
	       H_BS_ODD, H_KEY_OTHER, H_V2, H_BOARD_SLASH };

static size_t hostile_release(uint8_t *out, size_t cap, enum hostile mode)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	uint8_t h[32] = { 0 };
	uint32_t nb = mode == H_BLOCKS_SHORT ? 3 : mode == H_BLOCKS_1025 ? 1025 : 4;
	uint64_t size = mode == H_BLOCKS_1025 ? 1025ULL * MIB : PAYLOAD_BYTES;
	int n;

#define KEY(s) msgpack_pack_str_with_body(&pk, s, strlen(s))
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, mode == H_EXTRA_FIELD ? 13 : 12);
	KEY("v");
	msgpack_pack_uint64(&pk, mode == H_V2 ? 2 : 1);
	KEY("version");
	KEY("1.2.3");
	if (mode == H_ORDER) {
		KEY("size");
		msgpack_pack_uint64(&pk, size);
		KEY("board");
		KEY("sim");
	} else {
		KEY("board");
		KEY(mode == H_BOARD_SLASH ? "s/m" : "sim");
		KEY("size");
		if (mode == H_WIDE_SIZE) {
			uint8_t wide[9] = { 0xcf };

			for (int i = 0; i < 8; i++)
				wide[1 + i] = (uint8_t)(size >> (56 - 8 * i));
			msgpack_sbuffer_write(&sb, (const char *)wide, sizeof(wide));
		} else {
			msgpack_pack_uint64(&pk, size);
		}
	}
	KEY("sha256");
	msgpack_pack_bin_with_body(&pk, h, 32);
	KEY("block_size");
	msgpack_pack_uint64(&pk, mode == H_BS_ODD ? 3 * MIB : MIB);
	KEY("blocks");
	msgpack_pack_array(&pk, nb);
	for (uint32_t i = 0; i < nb; i++)
		msgpack_pack_bin_with_body(&pk, h, 32);
	KEY("min_from");
	KEY("0.0.0");
	KEY("expires");
	msgpack_pack_uint64(&pk, NOW + 3600);
	KEY("rollback");
	msgpack_pack_false(&pk);
	KEY("issued");
	msgpack_pack_uint64(&pk, NOW);
	KEY("key");
	msgpack_pack_bin_with_body(&pk, mode == H_KEY_OTHER ? rogue_rel->sign_pk : relkey->sign_pk,
				   32);
	if (mode == H_EXTRA_FIELD) {
		KEY("zz");
		msgpack_pack_uint64(&pk, 1);
	}
#undef KEY
	n = ovl_signed_seal((const uint8_t *)sb.data, sb.size, OVL_FLEET_RELEASE_DOMAIN,
			    relkey->sign_sk, out, cap);
	msgpack_sbuffer_destroy(&sb);
	assert_true(n > 0);
	return (size_t)n;
}

static void test_release_hostile(void **state)
{
	static const struct {
		enum hostile mode;
		int ret;
		const char *why;
	} cases[] = {
		{ H_WIDE_SIZE, -EBADMSG, "canonical" },
		{ H_EXTRA_FIELD, -EBADMSG, "fields" },
		{ H_ORDER, -EBADMSG, "is not 'board'" },
		{ H_BLOCKS_SHORT, -EBADMSG, "block hashes" },
		{ H_BLOCKS_1025, -E2BIG, "at most 1024" },
		{ H_BS_ODD, -EBADMSG, "power of two" },
		{ H_KEY_OTHER, -EKEYREJECTED, "not the certified key" },
		{ H_V2, -EPROTONOSUPPORT, "not supported" },
		{ H_BOARD_SLASH, -EBADMSG, "board" },
	};
	uint8_t *buf = malloc(OVL_FLEET_META_MAX_BYTES);
	struct ovl_fleet_release r;
	char err[512];
	size_t len;

	assert_non_null(buf);
	/* the encoder itself is right: its plain body passes */
	len = hostile_release(buf, OVL_FLEET_META_MAX_BYTES, H_NONE);
	assert_int_equal(verify(&r, buf, len, "sim", NULL, NOW, err, sizeof(err)), 0);
	ovl_fleet_release_free(&r);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		len = hostile_release(buf, OVL_FLEET_META_MAX_BYTES, cases[i].mode);
		err[0] = '\0';
		assert_int_equal(verify(&r, buf, len, "sim", NULL, NOW, err, sizeof(err)), cases[i].ret);
		assert_contains(err, cases[i].why);
		assert_null(r.blocks);
	}
	free(buf);
}

/* ---- the image head ---------------------------------------------------------- */

static size_t make_head(uint8_t *out, const uint8_t *meta, size_t meta_len)
{
	ovl_fleet_image_fixed(out, (uint32_t)meta_len, (uint32_t)rel_cert_len);
	memcpy(out + OVL_FLEET_IMAGE_FIXED_BYTES, meta, meta_len);
	memcpy(out + OVL_FLEET_IMAGE_FIXED_BYTES + meta_len, rel_cert, rel_cert_len);
	return OVL_FLEET_IMAGE_FIXED_BYTES + meta_len + rel_cert_len;
}

static void test_image_head(void **state)
{
	uint8_t *meta = NULL, *head, *got = NULL;
	struct ovl_fleet_image_head h;
	struct ovl_fleet_release r;
	char err[512], path[] = "/tmp/test_fleet_imgXXXXXX";
	size_t len, hl;
	int fd;

	len = sign_release(&meta, "1.2.3", "sim", "0.0.0", false, NOW + 3600, relkey);
	head = malloc(OVL_FLEET_IMAGE_HEAD_MAX_BYTES + 16);
	assert_non_null(head);
	hl = make_head(head, meta, len);
	assert_memory_equal(head, "SHIMG\r\n\x1a", 8);
	assert_int_equal(ovl_fleet_image_parse(head, hl, &h, err, sizeof(err)), 0);
	assert_int_equal(h.format, 1);
	assert_int_equal(h.meta_off, 24);
	assert_int_equal(h.meta_len, len);
	assert_int_equal(h.cert_off, 24 + len);
	assert_int_equal(h.cert_len, rel_cert_len);
	assert_int_equal(h.head_len, hl);
	assert_ptr_equal(h.meta, head + 24);
	assert_int_equal(ovl_fleet_release_verify(&r, h.meta, h.meta_len, h.cert, h.cert_len, &trust,
						  NOW, "sim", NULL, err, sizeof(err)), 0);
	ovl_fleet_release_free(&r);
	/* more bytes (the payload) after the head are fine */
	assert_int_equal(ovl_fleet_image_parse(head, hl + 16, &h, err, sizeof(err)), 0);
	/* every truncation asks for more, and says how much */
	for (size_t n = 0; n < hl; n++) {
		assert_int_equal(ovl_fleet_image_parse(head, n, &h, err, sizeof(err)), -ENODATA);
		assert_int_equal(h.head_len, n < 24 ? 24 : hl);
	}
	/* garbage */
	head[0] = 'X';
	assert_int_equal(ovl_fleet_image_parse(head, hl, &h, err, sizeof(err)), -EBADMSG);
	assert_contains(err, "not a shelf image");
	assert_int_equal(ovl_fleet_image_parse(head, 3, &h, err, sizeof(err)), -EBADMSG);
	head[0] = 'S';
	head[8] = 2;
	assert_int_equal(ovl_fleet_image_parse(head, hl, &h, err, sizeof(err)), -EPROTONOSUPPORT);
	head[8] = 1;
	ovl_fleet_image_fixed(head, 0, (uint32_t)rel_cert_len);
	assert_int_equal(ovl_fleet_image_parse(head, hl, &h, err, sizeof(err)), -EBADMSG);
	ovl_fleet_image_fixed(head, OVL_FLEET_META_MAX_BYTES + 1, (uint32_t)rel_cert_len);
	assert_int_equal(ovl_fleet_image_parse(head, hl, &h, err, sizeof(err)), -EBADMSG);
	ovl_fleet_image_fixed(head, 0xffffffffu, 0xffffffffu);
	assert_int_equal(ovl_fleet_image_parse(head, hl, &h, err, sizeof(err)), -EBADMSG);
	ovl_fleet_image_fixed(head, (uint32_t)len, OVL_CERT_MAX_BYTES + 1);
	assert_int_equal(ovl_fleet_image_parse(head, hl, &h, err, sizeof(err)), -EBADMSG);
	ovl_fleet_image_fixed(head, (uint32_t)len, 0);
	assert_int_equal(ovl_fleet_image_parse(head, hl, &h, err, sizeof(err)), -EBADMSG);
	ovl_fleet_image_fixed(head, (uint32_t)len, (uint32_t)rel_cert_len);
	head[22] = 1;
	assert_int_equal(ovl_fleet_image_parse(head, hl, &h, err, sizeof(err)), -EBADMSG);
	assert_contains(err, "reserved");
	head[22] = 0;
	/* random garbage never crashes and never parses without the magic */
	for (int it = 0; it < 2000; it++) {
		uint8_t g[64];
		size_t n = (size_t)(rand_r(&seed) % sizeof(g));

		for (size_t i = 0; i < n; i++)
			g[i] = (uint8_t)rand_r(&seed);
		if (it & 1)
			memcpy(g, OVL_FLEET_IMAGE_MAGIC, n < 8 ? n : 8);
		assert_true(ovl_fleet_image_parse(g, n, &h, err, sizeof(err)) < 0);
	}
	/* read from a file: whole, then cut short */
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(ovl_file_write_full(fd, head, hl), 0);
	assert_int_equal(ovl_fleet_image_read_head(fd, &got, &h, err, sizeof(err)), 0);
	assert_int_equal(h.head_len, hl);
	assert_memory_equal(got, head, hl);
	assert_memory_equal(h.meta, meta, len);
	free(got);
	got = NULL;
	assert_int_equal(ftruncate(fd, (off_t)hl - 1), 0);
	assert_int_equal(ovl_fleet_image_read_head(fd, &got, &h, err, sizeof(err)), -ENODATA);
	assert_contains(err, "truncated");
	assert_null(got);
	assert_int_equal(ftruncate(fd, 10), 0);
	assert_int_equal(ovl_fleet_image_read_head(fd, &got, &h, err, sizeof(err)), -ENODATA);
	assert_int_equal(ftruncate(fd, 0), 0);
	assert_int_equal(ovl_fleet_image_read_head(fd, &got, &h, err, sizeof(err)), -ENODATA);
	close(fd);
	unlink(path);
	free(head);
	free(meta);
}

/* ---- block keys -------------------------------------------------------------- */

static void test_block_key(void **state)
{
	uint8_t id[32], key[OVL_FLEET_BLOCK_KEY_BYTES];

	for (int i = 0; i < 32; i++)
		id[i] = (uint8_t)(0xa0 + i);
	ovl_fleet_block_key(key, id, 0x01020304);
	for (int i = 0; i < 8; i++)
		assert_int_equal(key[i], 0xfe);
	assert_int_equal(key[8], 'F');
	assert_memory_equal(key + 9, id, 32);
	assert_memory_equal(key + 41, "\x01\x02\x03\x04", 4);
	assert_true(ovl_fleet_is_block_key(key, sizeof(key)));
	assert_true(ovl_large_key_reserved(key, sizeof(key)));
	assert_false(ovl_fleet_is_block_key(key, sizeof(key) - 1));
	key[8] = 'C';
	assert_false(ovl_fleet_is_block_key(key, sizeof(key)));
	key[8] = 'F';
	key[3] = 0xff;
	assert_false(ovl_fleet_is_block_key(key, sizeof(key)));
}

/* ---- assignments ------------------------------------------------------------- */

static void test_assign(void **state)
{
	struct ovl_fleet_assign a, d;
	uint8_t *meta = NULL, *buf = NULL;
	size_t mlen, len = 0;
	char err[512];

	mlen = sign_release(&meta, "1.2.3", "sim", "0.0.0", false, NOW + 3600, relkey);
	memset(&a, 0, sizeof(a));
	memset(a.node, 0x5a, 32);
	a.seq = 42;
	a.issued = NOW;
	a.valid = OVL_FLEET_ASSIGN_VALID_S;
	a.rate = 1 << 20;
	a.action = OVL_FLEET_ACTION_FETCH;
	snprintf(a.slice, sizeof(a.slice), "system");
	a.release = meta;
	a.release_len = mlen;
	a.cert = rel_cert;
	a.cert_len = rel_cert_len;
	assert_int_equal(ovl_fleet_assign_sign(&a, broker->sign_sk, &buf, &len, err, sizeof(err)), 0);
	assert_int_equal(ovl_fleet_assign_verify(&d, buf, len, broker->sign_pk, err, sizeof(err)), 0);
	assert_memory_equal(d.node, a.node, 32);
	assert_int_equal(d.seq, 42);
	assert_int_equal(d.issued, NOW);
	assert_int_equal(d.valid, 60);
	assert_int_equal(d.rate, 1 << 20);
	assert_int_equal(d.action, OVL_FLEET_ACTION_FETCH);
	assert_string_equal(d.slice, "system");
	assert_int_equal(d.release_len, mlen);
	assert_memory_equal(d.release, meta, mlen);
	assert_true(d.release >= buf && d.release < buf + len); /* borrowed */
	assert_int_equal(d.cert_len, rel_cert_len);
	assert_memory_equal(d.cert, rel_cert, rel_cert_len);
	/* freshness */
	assert_int_equal(ovl_fleet_assign_fresh(&d, NOW, err, sizeof(err)), 0);
	assert_int_equal(ovl_fleet_assign_fresh(&d, NOW + 60, err, sizeof(err)), 0);
	assert_int_equal(ovl_fleet_assign_fresh(&d, NOW + 61, err, sizeof(err)), -ESTALE);
	assert_contains(err, "expired");
	assert_int_equal(ovl_fleet_assign_fresh(&d, NOW - 30, err, sizeof(err)), 0);
	assert_int_equal(ovl_fleet_assign_fresh(&d, NOW - 31, err, sizeof(err)), -ESTALE);
	assert_contains(err, "future");
	/* the wrong broker key */
	assert_int_equal(ovl_fleet_assign_verify(&d, buf, len, relkey->sign_pk, err, sizeof(err)),
			 -EKEYREJECTED);
	assert_true(ovl_mem_is_zero(&d, sizeof(d)));
	/* every truncation, and flips across the whole envelope */
	for (size_t n = 0; n < len; n++)
		assert_true(ovl_fleet_assign_verify(&d, buf, n, broker->sign_pk, err, sizeof(err)) < 0);
	for (size_t i = 0; i < len; i += 1 + len / 512) {
		buf[i] ^= 0x04;
		assert_true(ovl_fleet_assign_verify(&d, buf, len, broker->sign_pk, err, sizeof(err)) < 0);
		buf[i] ^= 0x04;
	}
	/* a release's metadata signature is not an assignment's */
	assert_int_equal(ovl_fleet_assign_verify(&d, meta, mlen, relkey->sign_pk, err, sizeof(err)),
			 -EKEYREJECTED);
	free(buf);
	buf = NULL;
	/* stay: no release needed */
	a.action = OVL_FLEET_ACTION_STAY;
	a.release = NULL;
	a.release_len = 0;
	a.cert = NULL;
	a.cert_len = 0;
	assert_int_equal(ovl_fleet_assign_sign(&a, broker->sign_sk, &buf, &len, err, sizeof(err)), 0);
	assert_int_equal(ovl_fleet_assign_verify(&d, buf, len, broker->sign_pk, err, sizeof(err)), 0);
	assert_int_equal(d.action, OVL_FLEET_ACTION_STAY);
	assert_null(d.release);
	assert_int_equal(d.release_len, 0);
	free(buf);
	buf = NULL;
	/* what cannot be signed */
	a.action = OVL_FLEET_ACTION_RESTART;
	assert_int_equal(ovl_fleet_assign_sign(&a, broker->sign_sk, &buf, &len, err, sizeof(err)),
			 -EINVAL);
	a.action = 9;
	assert_int_equal(ovl_fleet_assign_sign(&a, broker->sign_sk, &buf, &len, err, sizeof(err)),
			 -EINVAL);
	assert_null(buf);
	assert_string_equal(ovl_fleet_action_name(OVL_FLEET_ACTION_RESTART), "restart");
	assert_null(ovl_fleet_action_name(4));
	free(meta);
}

/* ---- reports ------------------------------------------------------------------- */

static void test_report(void **state)
{
	struct ovl_fleet_report r, d;
	uint8_t buf[2048];
	char err[512];
	int n;

	memset(&r, 0, sizeof(r));
	snprintf(r.running, sizeof(r.running), "0.1.0");
	snprintf(r.slot, sizeof(r.slot), "a");
	snprintf(r.board, sizeof(r.board), "sim");
	snprintf(r.target, sizeof(r.target), "0.2.0");
	snprintf(r.other, sizeof(r.other), "0.0.9");
	snprintf(r.reason, sizeof(r.reason), "block 3 of release 0.2.0 does not verify");
	r.state = OVL_FLEET_STATE_FAILED;
	r.other_good = true;
	r.seq = 9;
	r.done = 1 << 20;
	r.total = 3 << 20;
	r.degraded = 2;
	n = ovl_fleet_report_encode(&r, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal(ovl_fleet_report_decode(&d, buf, (size_t)n, err, sizeof(err)), 0);
	assert_memory_equal(&d, &r, sizeof(r));
	/* too little room */
	assert_int_equal(ovl_fleet_report_encode(&r, buf, 10), -E2BIG);
	/* every truncation and trailing garbage */
	for (int i = 0; i < n; i++)
		assert_true(ovl_fleet_report_decode(&d, buf, (size_t)i, err, sizeof(err)) < 0);
	buf[n] = 0xc0;
	assert_int_equal(ovl_fleet_report_decode(&d, buf, (size_t)n + 1, err, sizeof(err)), -EBADMSG);
	/* a state that does not exist, a bad string, a wrong version */
	r.state = 7;
	assert_int_equal(ovl_fleet_report_encode(&r, buf, sizeof(buf)), -EINVAL);
	r.state = OVL_FLEET_STATE_ROLLED_BACK;
	r.reason[0] = '\n';
	assert_int_equal(ovl_fleet_report_encode(&r, buf, sizeof(buf)), -EINVAL);
	r.reason[0] = 'b';
	{
		msgpack_sbuffer sb;
		msgpack_packer pk;
		static const char *const keys[] = { "v", "running", "slot", "board", "state", "target",
						    "seq", "done", "total", "reason", "degraded",
						    "other", "other_good" };

		for (int mode = 0; mode < 5; mode++) {
			msgpack_sbuffer_init(&sb);
			msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
			msgpack_pack_map(&pk, mode == 4 ? 14 : 13);
			for (int k = 0; k < 13; k++) {
				msgpack_pack_str_with_body(&pk, keys[k], strlen(keys[k]));
				if (k == 0)
					msgpack_pack_uint64(&pk, mode == 1 ? 2 : 1);
				else if (k == 4)
					msgpack_pack_uint64(&pk, mode == 2 ? 7 : 4);
				else if (k >= 6 && k <= 10 && k != 9)
					msgpack_pack_uint64(&pk, 5);
				else if (k == 12)
					msgpack_pack_true(&pk);
				else if (k == 9 && mode == 3)
					msgpack_pack_str_with_body(&pk, "a\x01", 2);
				else if (k == 2)
					msgpack_pack_str_with_body(&pk, "b", 1);
				else
					msgpack_pack_str_with_body(&pk, "1.0.0", 5);
			}
			if (mode == 4) { /* a later version's field: ignored */
				msgpack_pack_str_with_body(&pk, "zz", 2);
				msgpack_pack_array(&pk, 1);
				msgpack_pack_uint64(&pk, 1);
			}
			n = ovl_fleet_report_decode(&d, (const uint8_t *)sb.data, sb.size, err,
						    sizeof(err));
			switch (mode) {
			case 0:
			case 4:
				assert_int_equal(n, 0);
				assert_int_equal(d.state, OVL_FLEET_STATE_HEALTHY);
				assert_string_equal(d.running, "1.0.0");
				assert_string_equal(d.slot, "b");
				assert_true(d.other_good);
				break;
			case 1: assert_int_equal(n, -EPROTONOSUPPORT); break;
			case 2: assert_int_equal(n, -EBADMSG); assert_contains(err, "state"); break;
			case 3: assert_int_equal(n, -EBADMSG); break;
			}
			msgpack_sbuffer_destroy(&sb);
		}
	}
	/* random garbage: never a crash, never a silent success with junk */
	for (int it = 0; it < 5000; it++) {
		uint8_t g[256];
		size_t len = (size_t)(rand_r(&seed) % sizeof(g));

		for (size_t i = 0; i < len; i++)
			g[i] = (uint8_t)rand_r(&seed);
		if (ovl_fleet_report_decode(&d, g, len, err, sizeof(err)) == 0)
			assert_non_null(ovl_fleet_state_name(d.state));
		else
			assert_true(ovl_mem_is_zero(&d, sizeof(d)));
	}
	/* a huge announced array is refused before msgpack-c allocates for it */
	assert_int_equal(ovl_fleet_report_decode(&d, (const uint8_t *)"\xdd\xff\xff\xff\xff", 5, err,
						 sizeof(err)), -EBADMSG);
	assert_string_equal(ovl_fleet_state_name(OVL_FLEET_STATE_IDLE), "idle");
	assert_string_equal(ovl_fleet_state_name(OVL_FLEET_STATE_ROLLED_BACK), "rolled_back");
	assert_null(ovl_fleet_state_name(OVL_FLEET_STATES));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_version),
		cmocka_unit_test(test_release_role),
		cmocka_unit_test(test_release_cert),
		cmocka_unit_test(test_block_size),
		cmocka_unit_test(test_release_roundtrip),
		cmocka_unit_test(test_release_flips),
		cmocka_unit_test(test_release_refusals),
		cmocka_unit_test(test_release_sign_refusals),
		cmocka_unit_test(test_release_hostile),
		cmocka_unit_test(test_image_head),
		cmocka_unit_test(test_block_key),
		cmocka_unit_test(test_assign),
		cmocka_unit_test(test_report),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
