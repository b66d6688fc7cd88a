/*
 * fleet_corpus DIR: write the seed corpus of tests/fuzz/fuzz_fleet.c into
 * DIR/fleet (the directory must exist): for each of its four decoders (the
 * first byte of an entry), a valid input signed with the harness's keys
 * (tests/fuzz/fuzz_keys.h), one with a byte flipped and one cut short.
 *
 *   build/tests/prog/fleet_corpus tests/fuzz/corpus
 */
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "overlay.h"
#include "tests/fuzz/fuzz_keys.h"

static const char *root;

static void put(const char *name, uint8_t sel, const uint8_t *p, size_t n, long flip, size_t cut)
{
	char path[1024];
	FILE *f = NULL;
	uint8_t *c = malloc(n + 1);

	if (!c)
		exit(1);
	c[0] = sel;
	memcpy(c + 1, p, n);
	if (flip >= 0)
		c[1 + flip] ^= 0x01;
	n = cut ? cut : n;
	snprintf(path, sizeof(path), "%s/fleet/%s", root, name);
	f = fopen(path, "wb");
	if (!f || fwrite(c, 1, n + 1, f) != n + 1 || fclose(f) != 0) {
		fprintf(stderr, "fleet_corpus: cannot write '%s': %s\n", path, strerror(errno));
		exit(1);
	}
	free(c);
}

static void three(const char *name, uint8_t sel, const uint8_t *p, size_t n)
{
	char nm[128];

	put(name, sel, p, n, -1, 0);
	snprintf(nm, sizeof(nm), "%s-flipped", name);
	put(nm, sel, p, n, (long)(n / 2), 0);
	snprintf(nm, sizeof(nm), "%s-short", name);
	put(nm, sel, p, n, -1, n - 7);
}

int main(int argc, char **argv)
{
	struct fuzz_keys keys;
	struct ovl_fleet_release r;
	struct ovl_fleet_assign a;
	struct ovl_fleet_report rep;
	struct ovl_cert c;
	uint8_t payload[100], cert[OVL_CERT_MAX_BYTES], *meta = NULL, *asg = NULL, *img;
	uint8_t rbuf[1024];
	size_t meta_len = 0, asg_len = 0;
	char err[256];
	int n, cert_len;

	if (argc != 2) {
		fprintf(stderr, "usage: fleet_corpus DIR\n");
		return 2;
	}
	root = argv[1];
	if (sodium_init() < 0 || fuzz_keys_init(&keys) < 0)
		return 1;
	memset(payload, 0x61, sizeof(payload));
	memset(&r, 0, sizeof(r));
	snprintf(r.version, sizeof(r.version), "0.2.0");
	snprintf(r.board, sizeof(r.board), "sim");
	snprintf(r.min_from, sizeof(r.min_from), "0.0.0");
	r.size = sizeof(payload);
	r.block_size = ovl_fleet_block_size_for(r.size);
	r.nblocks = 1;
	r.blocks = calloc(1, 32);
	crypto_hash_sha256(r.blocks[0], payload, sizeof(payload));
	crypto_hash_sha256(r.sha256, payload, sizeof(payload));
	r.issued = FUZZ_NOW - 10;
	r.expires = FUZZ_NOW + 3600;
	if (ovl_fleet_release_sign(&r, keys.node->sign_sk, &meta, &meta_len, err, sizeof(err)) < 0)
		goto fail;
	three("release", 0, meta, meta_len);

	ovl_cert_init(&c);
	ovl_cert_set_keys(&c, keys.node);
	c.serial = 9;
	c.role = OVL_ROLE_RELEASE;
	c.not_before = FUZZ_NOW - 86400;
	c.not_after = FUZZ_NOW + 86400;
	cert_len = ovl_cert_sign(&c, keys.ca->sign_sk, cert, sizeof(cert), err, sizeof(err));
	if (cert_len < 0)
		goto fail;
	img = malloc(OVL_FLEET_IMAGE_FIXED_BYTES + meta_len + (size_t)cert_len);
	ovl_fleet_image_fixed(img, (uint32_t)meta_len, (uint32_t)cert_len);
	memcpy(img + OVL_FLEET_IMAGE_FIXED_BYTES, meta, meta_len);
	memcpy(img + OVL_FLEET_IMAGE_FIXED_BYTES + meta_len, cert, (size_t)cert_len);
	three("image", 1, img, OVL_FLEET_IMAGE_FIXED_BYTES + meta_len + (size_t)cert_len);
	free(img);

	memset(&a, 0, sizeof(a));
	memset(a.node, 0x44, 32);
	a.seq = 3;
	a.issued = FUZZ_NOW;
	a.valid = 60;
	a.action = OVL_FLEET_ACTION_FETCH;
	snprintf(a.slice, sizeof(a.slice), "system");
	a.release = meta;
	a.release_len = meta_len;
	a.cert = cert;
	a.cert_len = (size_t)cert_len;
	if (ovl_fleet_assign_sign(&a, keys.broker->sign_sk, &asg, &asg_len, err, sizeof(err)) < 0)
		goto fail;
	three("assign", 2, asg, asg_len);

	memset(&rep, 0, sizeof(rep));
	snprintf(rep.running, sizeof(rep.running), "0.1.0");
	snprintf(rep.slot, sizeof(rep.slot), "a");
	snprintf(rep.board, sizeof(rep.board), "sim");
	snprintf(rep.target, sizeof(rep.target), "0.2.0");
	snprintf(rep.reason, sizeof(rep.reason), "health gate: deadline 120 s passed");
	rep.state = OVL_FLEET_STATE_ROLLED_BACK;
	rep.seq = 3;
	rep.total = 100;
	n = ovl_fleet_report_encode(&rep, rbuf, sizeof(rbuf));
	if (n < 0)
		goto fail;
	three("report", 3, rbuf, (size_t)n);
	free(meta);
	free(asg);
	free(r.blocks);
	return 0;
fail:
	fprintf(stderr, "fleet_corpus: %s\n", err);
	return 1;
}
