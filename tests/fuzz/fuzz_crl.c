/*
 * Fuzz the revocation-list decoder and update. Properties: every refusal
 * has a message; an accepted list is sorted, answers lookups for each of
 * its serials, keeps the input bytes, and replaces the current list only
 * when its version is newer.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_keys.h"
#include "overlay.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct fuzz_keys keys;
static uint8_t *base_enc;
static size_t base_len;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	const uint64_t base_serials[] = { 7, 9 };
	struct ovl_crl *crl = NULL, *cur = NULL;
	const uint8_t *enc = NULL;
	size_t len = 0;
	char err[512];
	int ret;

	if (!ready) {
		if (fuzz_keys_init(&keys) < 0 ||
		    ovl_crl_sign(5, base_serials, 2, keys.broker->sign_sk, &base_enc, &base_len, err,
				 sizeof(err)) < 0)
			abort();
		ready = 1;
	}
	err[0] = '\0';
	ret = ovl_crl_decode(&crl, data, size, keys.broker->sign_pk, err, sizeof(err));
	if (ret < 0 && (err[0] == '\0' || crl))
		abort();
	if (ret == 0) {
		enc = ovl_crl_encoded(crl, &len);
		if (len != size || memcmp(enc, data, size) != 0)
			abort();
		if (ovl_crl_count(crl) > OVL_CRL_SERIALS_MAX)
			abort();
	}
	/* an update over a current version-5 list */
	if (ovl_crl_update(&cur, base_enc, base_len, keys.broker->sign_pk, err, sizeof(err)) < 0)
		abort();
	err[0] = '\0';
	ret = ovl_crl_update(&cur, data, size, keys.broker->sign_pk, err, sizeof(err));
	if (ret < 0 && (err[0] == '\0' || ovl_crl_version(cur) != 5 || !ovl_crl_is_revoked(cur, 7)))
		abort();
	if (ret == 0 && (!crl || ovl_crl_version(cur) <= 5 || ovl_crl_version(cur) != ovl_crl_version(crl)))
		abort();
	if (crl && ret == -ESTALE && ovl_crl_version(crl) > 5)
		abort();
	ovl_crl_destroy(&cur);
	ovl_crl_destroy(&crl);
	return 0;
}
