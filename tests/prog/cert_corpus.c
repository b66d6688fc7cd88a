/*
 * cert_corpus DIR: write the seed corpora of the certificate, revocation
 * list and timestamp fuzz harnesses into DIR/cert, DIR/crl and
 * DIR/timestamp (the directories must exist). Valid encodings are signed
 * with the harnesses' keys (tests/fuzz/fuzz_keys.h); hostile ones are built
 * by hand: wrong signatures, wrong issuers and roles, non-canonical and
 * oversized bodies, truncations and counts larger than the message.
 *
 *   build/tests/prog/cert_corpus tests/fuzz/corpus
 *
 * The committed corpora hold the named seeds that add coverage plus
 * found-* inputs kept from libFuzzer runs (merged, then pruned of inputs
 * whose only new coverage was inside the msgpack walker, which test_mp
 * covers), at most ~50 files per harness.
 */
#include <errno.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "overlay.h"
#include "tests/fuzz/fuzz_keys.h"

static const char *root;
static struct fuzz_keys keys;

static void put(const char *kind, const char *name, const void *p, size_t n)
{
	char path[1024];
	FILE *f = NULL;

	snprintf(path, sizeof(path), "%s/%s/%s", root, kind, name);
	f = fopen(path, "wb");
	if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
		fprintf(stderr, "cert_corpus: cannot write '%s': %s\n", path, strerror(errno));
		exit(1);
	}
}

/* Variants of the same thing, each with one byte changed. */
static void put_flipped(const char *kind, const char *name, const uint8_t *p, size_t n, size_t at)
{
	uint8_t *c = malloc(n);

	memcpy(c, p, n);
	c[at] ^= 0x01;
	put(kind, name, c, n);
	free(c);
}

static size_t seal(const void *body, size_t len, const char *domain, const struct ovl_id *by,
		   uint8_t *out)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	uint8_t sig[64];
	size_t dlen = strlen(domain) + 1, n;
	uint8_t *msg = malloc(dlen + len);

	memcpy(msg, domain, dlen);
	memcpy(msg + dlen, body, len);
	crypto_sign_detached(sig, NULL, msg, dlen + len, by->sign_sk);
	free(msg);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 2);
	msgpack_pack_bin_with_body(&pk, body, len);
	msgpack_pack_bin_with_body(&pk, sig, 64);
	memcpy(out, sb.data, sb.size);
	n = sb.size;
	msgpack_sbuffer_destroy(&sb);
	return n;
}

static void s(msgpack_packer *pk, const char *str)
{
	msgpack_pack_str_with_body(pk, str, strlen(str));
}

/* A node certificate body with knobs for what a signer would refuse. */
static void raw_cert(const char *name, uint64_t version, int nslices, const char *role,
		     int wide_serial)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	uint8_t kid[8], out[65536];

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 14);
	s(&pk, "v");
	msgpack_pack_uint64(&pk, version);
	s(&pk, "serial");
	if (wide_serial) {
		const char w[] = { (char)0xcf, 0, 0, 0, 0, 0, 0, 0, 8 };

		msgpack_sbuffer_write(&sb, w, sizeof(w));
	} else {
		msgpack_pack_uint64(&pk, 8);
	}
	s(&pk, "id");
	msgpack_pack_bin_with_body(&pk, keys.node->sign_pk, 32);
	s(&pk, "curve");
	msgpack_pack_bin_with_body(&pk, keys.node->curve_pk, 32);
	s(&pk, "sign");
	msgpack_pack_bin_with_body(&pk, keys.node->sign_pk, 32);
	s(&pk, "slices");
	msgpack_pack_array(&pk, nslices);
	for (int i = 0; i < nslices; i++)
		s(&pk, "alpha");
	s(&pk, "groups");
	msgpack_pack_array(&pk, 0);
	s(&pk, "site");
	s(&pk, "");
	s(&pk, "chassis");
	s(&pk, "");
	s(&pk, "slot");
	s(&pk, "");
	s(&pk, "role");
	s(&pk, role);
	s(&pk, "not_before");
	msgpack_pack_uint64(&pk, FUZZ_NOW - 10);
	s(&pk, "not_after");
	msgpack_pack_uint64(&pk, FUZZ_NOW + 10);
	s(&pk, "issuer");
	ovl_keyid_compute(keys.broker->sign_pk, kid);
	msgpack_pack_bin_with_body(&pk, kid, 8);
	put("cert", name, out, seal(sb.data, sb.size, OVL_CERT_DOMAIN, keys.broker, out));
	msgpack_sbuffer_destroy(&sb);
}

static size_t sign_cert(struct ovl_cert *c, const struct ovl_id *by, uint8_t *out)
{
	char err[256];
	int n = ovl_cert_sign(c, by->sign_sk, out, OVL_CERT_MAX_BYTES, err, sizeof(err));

	if (n < 0) {
		fprintf(stderr, "cert_corpus: %s\n", err);
		exit(1);
	}
	return (size_t)n;
}

static void certs(void)
{
	static const uint8_t huge_array[] = { 0xdd, 0xff, 0xff, 0xff, 0xff };
	static const uint8_t huge_bin[] = { 0x92, 0xc6, 0xff, 0xff, 0xff, 0xff, 0x00 };
	static const uint8_t three[] = { 0x93, 0xc4, 0x00, 0xc4, 0x00, 0xc0 };
	uint8_t buf[OVL_CERT_MAX_BYTES + 1], deep[200];
	struct ovl_cert c;
	size_t n;
	char err[256];

	fuzz_node_cert_fields(&keys, &c);
	n = sign_cert(&c, keys.broker, buf);
	put("cert", "node-valid", buf, n);
	put_flipped("cert", "node-sig-flipped", buf, n, n - 1);
	put_flipped("cert", "node-body-flipped", buf, n, 40);
	put("cert", "node-truncated", buf, n / 2);
	buf[n] = 0xc0;
	put("cert", "node-trailing-byte", buf, n + 1);
	c.role = OVL_ROLE_CLIENT;
	put("cert", "client-valid", buf, sign_cert(&c, keys.broker, buf));
	c.role = OVL_ROLE_BROKER;
	put("cert", "node-role-broker", buf, sign_cert(&c, keys.broker, buf));
	fuzz_node_cert_fields(&keys, &c);
	put("cert", "node-by-ca", buf, sign_cert(&c, keys.ca, buf));
	c.serial = 3;
	put("cert", "node-revoked", buf, sign_cert(&c, keys.broker, buf));
	fuzz_node_cert_fields(&keys, &c);
	c.not_after = FUZZ_NOW - 1;
	put("cert", "node-expired", buf, sign_cert(&c, keys.broker, buf));
	/* every list and string at its limit */
	fuzz_node_cert_fields(&keys, &c);
	c.nslices = c.ngroups = 0;
	for (int i = 0; i < OVL_CERT_LIST_MAX; i++) {
		char name[OVL_CERT_NAME_BYTES];

		memset(name, 'a' + i, sizeof(name) - 1);
		name[sizeof(name) - 1] = '\0';
		ovl_cert_add_slice(&c, name, err, sizeof(err));
		ovl_cert_add_group(&c, name, err, sizeof(err));
	}
	memset(c.site, 's', OVL_CERT_NAME_BYTES - 1);
	memset(c.slot, '9', OVL_CERT_SLOT_BYTES - 1);
	put("cert", "node-max-lists", buf, sign_cert(&c, keys.broker, buf));
	n = (size_t)fuzz_broker_cert(&keys, buf, sizeof(buf));
	put("cert", "broker-valid", buf, n);
	raw_cert("raw-17-slices", 1, 17, "node", 0);
	raw_cert("raw-version-2", 2, 1, "node", 0);
	raw_cert("raw-role-root", 1, 1, "root", 0);
	raw_cert("raw-wide-serial", 1, 1, "node", 1);
	raw_cert("raw-canonical", 1, 1, "node", 0);
	put("cert", "empty", buf, 0);
	put("cert", "huge-array", huge_array, sizeof(huge_array));
	put("cert", "huge-bin", huge_bin, sizeof(huge_bin));
	put("cert", "three-elements", three, sizeof(three));
	memset(deep, 0x91, sizeof(deep));
	put("cert", "deep", deep, sizeof(deep));
}

static void raw_crl(const char *name, uint64_t version, const uint64_t *serials, size_t n)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	uint8_t kid[8], *out = malloc(OVL_CRL_MAX_BYTES * 2);

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 4);
	s(&pk, "v");
	msgpack_pack_uint64(&pk, 1);
	s(&pk, "version");
	msgpack_pack_uint64(&pk, version);
	s(&pk, "issuer");
	ovl_keyid_compute(keys.broker->sign_pk, kid);
	msgpack_pack_bin_with_body(&pk, kid, 8);
	s(&pk, "serials");
	msgpack_pack_array(&pk, n);
	for (size_t i = 0; i < n; i++)
		msgpack_pack_uint64(&pk, serials[i]);
	put("crl", name, out, seal(sb.data, sb.size, OVL_CRL_DOMAIN, keys.broker, out));
	msgpack_sbuffer_destroy(&sb);
	free(out);
}

static void crl_signed(const char *name, uint64_t version, const uint64_t *serials, size_t n,
		       const struct ovl_id *by)
{
	uint8_t *enc = NULL;
	size_t len = 0;
	char err[256];

	if (ovl_crl_sign(version, serials, n, by->sign_sk, &enc, &len, err, sizeof(err)) < 0) {
		fprintf(stderr, "cert_corpus: %s\n", err);
		exit(1);
	}
	put("crl", name, enc, len);
	if (strcmp(name, "v6") == 0) {
		put_flipped("crl", "v6-sig-flipped", enc, len, len - 2);
		put("crl", "v6-truncated", enc, len - 20);
	}
	free(enc);
}

static void crls(void)
{
	static const uint64_t few[] = { 7, 3, 1ULL << 40, 0 }, unsorted[] = { 5, 4 };
	static const uint8_t huge_count[] = { 0x92, 0xc4, 0x08, 0x84, 0xa1, 'v', 0x01, 0xa1, 'x',
					      0xdd, 0xff, 0xc4, 0x40 };
	uint64_t *many = malloc((OVL_CRL_SERIALS_MAX + 1) * sizeof(*many));

	for (size_t i = 0; i <= OVL_CRL_SERIALS_MAX; i++)
		many[i] = i * 3 + 1;
	crl_signed("v6", 6, few, 4, keys.broker);
	crl_signed("v5-equal", 5, few, 4, keys.broker);
	crl_signed("v4-older", 4, few, 4, keys.broker);
	crl_signed("v7-empty", 7, NULL, 0, keys.broker);
	crl_signed("v8-by-ca", 8, few, 4, keys.ca);
	crl_signed("v9-100", 9, many, 100, keys.broker);
	raw_crl("raw-unsorted", 10, unsorted, 2);
	raw_crl("raw-4097", 11, many, OVL_CRL_SERIALS_MAX + 1);
	put("crl", "huge-count", huge_count, sizeof(huge_count));
	free(many);
}

static void raw_ts(const char *name, uint64_t t, size_t nonce_len)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	uint8_t kid[8], out[1024], nonce[64];

	memset(nonce, 'n', sizeof(nonce));
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 4);
	s(&pk, "v");
	msgpack_pack_uint64(&pk, 1);
	s(&pk, "time");
	msgpack_pack_uint64(&pk, t);
	s(&pk, "nonce");
	msgpack_pack_bin_with_body(&pk, nonce, nonce_len);
	s(&pk, "issuer");
	ovl_keyid_compute(keys.broker->sign_pk, kid);
	msgpack_pack_bin_with_body(&pk, kid, 8);
	put("timestamp", name, out, seal(sb.data, sb.size, OVL_TS_DOMAIN, keys.broker, out));
	msgpack_sbuffer_destroy(&sb);
}

static void timestamps(void)
{
	static const uint8_t nonce[8] = "n0nce-01";
	uint8_t buf[OVL_TS_MAX_BYTES];
	char err[256];
	int n;

	n = ovl_timestamp_sign(FUZZ_NOW, nonce, sizeof(nonce), keys.broker->sign_sk, buf, sizeof(buf),
			       err, sizeof(err));
	put("timestamp", "valid-nonce", buf, n);
	put_flipped("timestamp", "valid-nonce-sig-flipped", buf, n, n - 5);
	put("timestamp", "truncated", buf, n - 30);
	n = ovl_timestamp_sign(FUZZ_NOW, NULL, 0, keys.broker->sign_sk, buf, sizeof(buf), err,
			       sizeof(err));
	put("timestamp", "valid-no-nonce", buf, n);
	n = ovl_timestamp_sign(FUZZ_NOW, nonce, sizeof(nonce), keys.ca->sign_sk, buf, sizeof(buf), err,
			       sizeof(err));
	put("timestamp", "forged-by-ca", buf, n);
	n = ovl_timestamp_sign(1000, nonce, sizeof(nonce), keys.broker->sign_sk, buf, sizeof(buf), err,
			       sizeof(err));
	put("timestamp", "before-build", buf, n);
	n = ovl_timestamp_sign(UINT64_MAX, nonce, sizeof(nonce), keys.broker->sign_sk, buf, sizeof(buf),
			       err, sizeof(err));
	put("timestamp", "max-time", buf, n);
	raw_ts("raw-nonce-33", FUZZ_NOW, 33);
	put("timestamp", "empty", buf, 0);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: cert_corpus DIR   (writes DIR/cert, DIR/crl, DIR/timestamp)\n");
		return 2;
	}
	root = argv[1];
	if (sodium_init() < 0 || fuzz_keys_init(&keys) < 0)
		return 1;
	certs();
	crls();
	timestamps();
	return 0;
}
