/*
 * shelf-bench overlay (certificate part): how fast a node certificate is
 * decoded and verified, next to the bare Ed25519 verification it contains.
 *
 *   BENCH cert_verify ours=<verify/s> ref=<verify/s> ...
 * ours: ovl_cert_verify() of one encoded node certificate (envelope and body
 *       walk, msgpack decode, canonical check, issuer key id, signature,
 *       validity window);
 * ref:  crypto_sign_verify_detached() of the certificate's own signature
 *       over the message it covers (same size, same key).
 * Both are the median of BENCH_CERT_REPS runs of about BENCH_CERT_RUN_S
 * seconds each, interleaved in one process.
 */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "bench.h"
#include "overlay.h"

#define BENCH_CERT_REPS 5
#define BENCH_CERT_RUN_S 1.0
#define BENCH_CERT_BATCH 64 /* verifications between clock reads */
#define BENCH_CERT_NOW 1700000100ULL

static int build_cert(struct ovl_id *node, struct ovl_id *broker, uint8_t *out, size_t *len)
{
	struct ovl_cert c;
	char err[256];
	int n;

	ovl_cert_init(&c);
	ovl_cert_set_keys(&c, node);
	c.serial = 4242;
	if (ovl_cert_add_slice(&c, "dataset-shards", err, sizeof(err)) < 0 ||
	    ovl_cert_add_slice(&c, "scratch", err, sizeof(err)) < 0 ||
	    ovl_cert_add_group(&c, "rack-07", err, sizeof(err)) < 0) {
		fprintf(stderr, "bench cert: %s\n", err);
		return -1;
	}
	strcpy(c.site, "edge-site-0113");
	strcpy(c.chassis, "1u-chassis-02");
	strcpy(c.slot, "17");
	c.role = OVL_ROLE_NODE;
	c.not_before = BENCH_CERT_NOW - 3600;
	c.not_after = BENCH_CERT_NOW + 86400;
	n = ovl_cert_sign(&c, broker->sign_sk, out, OVL_CERT_MAX_BYTES, err, sizeof(err));
	if (n < 0) {
		fprintf(stderr, "bench cert: %s\n", err);
		return -1;
	}
	*len = (size_t)n;
	return 0;
}

/* Verifications per second of our full certificate check. */
static double run_ours(const uint8_t *cert, size_t len, const uint8_t *pk)
{
	struct ovl_cert c;
	char err[256];
	double t0 = bench_now(), t = t0;
	uint64_t n = 0;

	while (t - t0 < BENCH_CERT_RUN_S) {
		for (int i = 0; i < BENCH_CERT_BATCH; i++) {
			if (ovl_cert_verify(&c, cert, len, pk, BENCH_CERT_NOW, err, sizeof(err)) < 0) {
				fprintf(stderr, "bench cert: %s\n", err);
				return -1;
			}
		}
		n += BENCH_CERT_BATCH;
		t = bench_now();
	}
	return n / (t - t0);
}

/* Verifications per second of libsodium alone on a same-size message. */
static double run_ref(const uint8_t *sig, const uint8_t *msg, size_t len, const uint8_t *pk)
{
	double t0 = bench_now(), t = t0;
	uint64_t n = 0;

	while (t - t0 < BENCH_CERT_RUN_S) {
		for (int i = 0; i < BENCH_CERT_BATCH; i++) {
			if (crypto_sign_verify_detached(sig, msg, len, pk) != 0) {
				fprintf(stderr, "bench cert: reference signature does not verify\n");
				return -1;
			}
		}
		n += BENCH_CERT_BATCH;
		t = bench_now();
	}
	return n / (t - t0);
}

static int bench_cert_run(int argc, char **argv)
{
	uint8_t seed[OVL_ID_SEED_BYTES], cert[OVL_CERT_MAX_BYTES], msg[OVL_CERT_MAX_BYTES + 32];
	uint8_t sig[OVL_ID_SIG_BYTES];
	double ours[BENCH_CERT_REPS], ref[BENCH_CERT_REPS];
	struct ovl_id *node = NULL, *broker = NULL;
	size_t len = 0, inner, hdr, dlen, signed_len;
	int ret = 1;

	/* `--dir DIR` and options meant for other parts of `overlay` are ignored */
	(void)argc;
	(void)argv;
	if (sodium_init() < 0) {
		fprintf(stderr, "bench cert: libsodium does not initialise\n");
		return 1;
	}
	memset(seed, 0x5a, sizeof(seed));
	if (ovl_id_from_seed(&node, seed, seed) < 0)
		goto out;
	memset(seed, 0xb7, sizeof(seed));
	if (ovl_id_from_seed(&broker, seed, seed) < 0)
		goto out;
	if (build_cert(node, broker, cert, &len) < 0)
		goto out;
	/* The reference verifies the very message the certificate's signature
	 * covers, "shelf-cert-v1\0" ‖ body, with that signature. The envelope is
	 * 0x92, a bin header (2 bytes below 256 body bytes, else 3), the body and
	 * the 66-byte signature bin. */
	inner = len - 1 - (2 + OVL_ID_SIG_BYTES);
	hdr = inner - 2 < 256 ? 2 : 3;
	dlen = strlen(OVL_CERT_DOMAIN) + 1;
	signed_len = dlen + inner - hdr;
	memcpy(msg, OVL_CERT_DOMAIN, dlen);
	memcpy(msg + dlen, cert + 1 + hdr, inner - hdr);
	memcpy(sig, cert + len - OVL_ID_SIG_BYTES, OVL_ID_SIG_BYTES);
	for (int r = 0; r < BENCH_CERT_REPS; r++) {
		ours[r] = run_ours(cert, len, broker->sign_pk);
		ref[r] = run_ref(sig, msg, signed_len, broker->sign_pk);
		if (ours[r] < 0 || ref[r] < 0)
			goto out;
	}
	bench_line("cert_verify", bench_median(ours, BENCH_CERT_REPS),
		   bench_median(ref, BENCH_CERT_REPS), "verify/s", "crypto_sign_verify_detached");
	ret = 0;
out:
	ovl_id_destroy(&node);
	ovl_id_destroy(&broker);
	return ret;
}

static const struct bench_cmd bench_cert = {
	.name = "overlay",
	.usage = "certificate decode + verify vs raw Ed25519 verify [--dir DIR]",
	.run = bench_cert_run,
	.in_all = true,
};
BENCH_COMMAND(bench_cert)
