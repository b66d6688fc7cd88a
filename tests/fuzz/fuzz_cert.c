/*
 * Fuzz the certificate decoder and verifier: decode, single verification,
 * and the chain with the input in either position. Properties checked on
 * every input:
 *  - every refusal comes with a message;
 *  - a decodable certificate re-encodes to the very same body (canonical);
 *  - a certificate that verifies also decodes to the same fields.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_keys.h"
#include "overlay.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct fuzz_keys keys;
static uint8_t broker_cert[OVL_CERT_MAX_BYTES], node_cert[OVL_CERT_MAX_BYTES];
static size_t broker_len, node_len;
static struct ovl_crl *crl_broker, *crl_ca;
static const struct ovl_crl *crls[2];
static struct ovl_trust trust;

static void init(void)
{
	const uint64_t node_revoked[] = { 3, 1000 }, broker_revoked[] = { 2 };
	struct ovl_cert c;
	uint8_t *enc = NULL;
	size_t len = 0;
	char err[256];
	int n;

	if (fuzz_keys_init(&keys) < 0)
		abort();
	n = fuzz_broker_cert(&keys, broker_cert, sizeof(broker_cert));
	if (n < 0)
		abort();
	broker_len = (size_t)n;
	fuzz_node_cert_fields(&keys, &c);
	n = ovl_cert_sign(&c, keys.broker->sign_sk, node_cert, sizeof(node_cert), err, sizeof(err));
	if (n < 0)
		abort();
	node_len = (size_t)n;
	if (ovl_crl_sign(5, node_revoked, 2, keys.broker->sign_sk, &enc, &len, err, sizeof(err)) < 0 ||
	    ovl_crl_decode(&crl_broker, enc, len, keys.broker->sign_pk, err, sizeof(err)) < 0)
		abort();
	free(enc);
	if (ovl_crl_sign(2, broker_revoked, 1, keys.ca->sign_sk, &enc, &len, err, sizeof(err)) < 0 ||
	    ovl_crl_decode(&crl_ca, enc, len, keys.ca->sign_pk, err, sizeof(err)) < 0)
		abort();
	free(enc);
	crls[0] = crl_broker;
	crls[1] = crl_ca;
	memcpy(trust.ca_pk, keys.ca->sign_pk, OVL_ID_BYTES);
	trust.crls = crls;
	trust.ncrls = 2;
}

static void need_message(int ret, const char *err)
{
	if (ret < 0 && err[0] == '\0')
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	struct ovl_cert c, d, b;
	uint8_t again[OVL_CERT_MAX_BYTES];
	uint8_t kid[OVL_KEYID_BYTES];
	char err[512];
	int ret, n;

	if (!ready) {
		init();
		ready = 1;
	}
	err[0] = '\0';
	ret = ovl_cert_decode(&c, data, size, err, sizeof(err));
	need_message(ret, err);
	if (ret == 0) {
		/* canonical: signing the decoded fields again with the issuer's key
		 * reproduces every byte but the signature */
		ovl_keyid_compute(keys.broker->sign_pk, kid);
		if (memcmp(kid, c.issuer, sizeof(kid)) == 0) {
			d = c;
			n = ovl_cert_sign(&d, keys.broker->sign_sk, again, sizeof(again), err, sizeof(err));
			if (n != (int)size || memcmp(again, data, size - OVL_ID_SIG_BYTES) != 0)
				abort();
		}
	}
	err[0] = '\0';
	ret = ovl_cert_verify(&d, data, size, keys.broker->sign_pk, FUZZ_NOW, err, sizeof(err));
	need_message(ret, err);
	if (ret == 0 && memcmp(&c, &d, sizeof(c)) != 0)
		abort();
	err[0] = '\0';
	ret = ovl_cert_verify_chain(&d, &b, data, size, broker_cert, broker_len, &trust, FUZZ_NOW,
				    err, sizeof(err));
	need_message(ret, err);
	err[0] = '\0';
	ret = ovl_cert_verify_chain(&d, NULL, node_cert, node_len, data, size, &trust, FUZZ_NOW, err,
				    sizeof(err));
	need_message(ret, err);
	return 0;
}
