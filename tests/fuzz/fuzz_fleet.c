/*
 * Fuzz the fleet-update formats (overlay/ovl_fleet.h). The first byte picks
 * the decoder, the rest is its input:
 *   0  release metadata, verified under the release certificate the
 *      harness trusts (the fuzz node key, certified by the fuzz CA)
 *   1  an image head, then its metadata decoded for display
 *   2  an assignment, verified under the fuzz broker key
 *   3  a node's report
 * Properties: every refusal has a message and leaves nothing behind; what is
 * accepted is within the format's bounds; an accepted assignment is the
 * only encoding of what it says (signing it again gives the same bytes);
 * a report survives encode/decode unchanged.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_keys.h"
#include "overlay.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct fuzz_keys keys;
static uint8_t rel_cert[OVL_CERT_MAX_BYTES];
static size_t rel_cert_len;
static struct ovl_trust trust;

static void init(void)
{
	struct ovl_cert c;
	char err[256];
	int n;

	if (fuzz_keys_init(&keys) < 0)
		abort();
	ovl_cert_init(&c);
	ovl_cert_set_keys(&c, keys.node);
	c.serial = 9;
	c.role = OVL_ROLE_RELEASE;
	c.not_before = FUZZ_NOW - 86400;
	c.not_after = FUZZ_NOW + 86400;
	n = ovl_cert_sign(&c, keys.ca->sign_sk, rel_cert, sizeof(rel_cert), err, sizeof(err));
	if (n < 0)
		abort();
	rel_cert_len = (size_t)n;
	memcpy(trust.ca_pk, keys.ca->sign_pk, OVL_ID_BYTES);
}

static void check_release(const struct ovl_fleet_release *r)
{
	uint64_t v;

	if (r->nblocks == 0 || r->nblocks > OVL_FLEET_BLOCKS_MAX || !r->blocks ||
	    r->nblocks != (r->size + r->block_size - 1) / r->block_size ||
	    ovl_fleet_version_parse(r->version, &v) < 0 || v != r->version_num ||
	    !ovl_fleet_board_ok(r->board))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	struct ovl_fleet_release r;
	struct ovl_fleet_image_head h;
	struct ovl_fleet_assign a;
	struct ovl_fleet_report rep, back;
	uint8_t *out = NULL, enc[4096];
	size_t outlen = 0;
	char err[1024];
	int ret, n;

	if (!ready) {
		init();
		ready = 1;
	}
	if (size < 1)
		return 0;
	err[0] = '\0';
	switch (data[0] % 4) {
	case 0:
		ret = ovl_fleet_release_verify(&r, data + 1, size - 1, rel_cert, rel_cert_len, &trust,
					       FUZZ_NOW, "sim", "0.1.0", err, sizeof(err));
		if (ret < 0 && (err[0] == '\0' || r.blocks))
			abort();
		if (ret == 0) {
			check_release(&r);
			if (memcmp(r.key, keys.node->sign_pk, 32) != 0 || strcmp(r.board, "sim") != 0)
				abort();
		}
		ovl_fleet_release_free(&r);
		break;
	case 1:
		ret = ovl_fleet_image_parse(data + 1, size - 1, &h, err, sizeof(err));
		if (ret < 0 && err[0] == '\0')
			abort();
		if (ret == -ENODATA && h.head_len <= size - 1)
			abort();
		if (ret == 0) {
			if (h.head_len != OVL_FLEET_IMAGE_FIXED_BYTES + h.meta_len + h.cert_len ||
			    h.head_len > size - 1 || h.meta != data + 1 + h.meta_off)
				abort();
			err[0] = '\0';
			ret = ovl_fleet_release_decode(&r, h.meta, h.meta_len, err, sizeof(err));
			if (ret < 0 && err[0] == '\0')
				abort();
			if (ret == 0)
				check_release(&r);
			ovl_fleet_release_free(&r);
		}
		break;
	case 2:
		ret = ovl_fleet_assign_verify(&a, data + 1, size - 1, keys.broker->sign_pk, err,
					      sizeof(err));
		if (ret < 0 && err[0] == '\0')
			abort();
		if (ret == 0) {
			if (!ovl_fleet_action_name(a.action))
				abort();
			/* Ed25519 is deterministic: the one encoding signs to the same bytes */
			if (ovl_fleet_assign_sign(&a, keys.broker->sign_sk, &out, &outlen, err,
						  sizeof(err)) < 0 ||
			    outlen != size - 1 || memcmp(out, data + 1, outlen) != 0)
				abort();
			free(out);
			ovl_fleet_assign_fresh(&a, FUZZ_NOW, err, sizeof(err));
		}
		break;
	default:
		ret = ovl_fleet_report_decode(&rep, data + 1, size - 1, err, sizeof(err));
		if (ret < 0 && err[0] == '\0')
			abort();
		if (ret == 0) {
			n = ovl_fleet_report_encode(&rep, enc, sizeof(enc));
			if (n <= 0 || ovl_fleet_report_decode(&back, enc, (size_t)n, err, sizeof(err)) < 0 ||
			    memcmp(&back, &rep, sizeof(rep)) != 0)
				abort();
		}
		break;
	}
	return 0;
}
