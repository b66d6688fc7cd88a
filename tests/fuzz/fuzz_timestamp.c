/*
 * Fuzz broker timestamp tokens and the trusted-time object on a board whose
 * clock reads 1970. Properties: every refusal has a message; a refused
 * token never changes the trusted time; trusted time never goes back and
 * never reads before the build time.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_keys.h"
#include "overlay.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct fuzz_keys keys;

static int64_t clock_real(void *ctx)
{
	return 5; /* the RTC battery is flat */
}

static int64_t clock_mono(void *ctx)
{
	return 100;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	static const uint8_t nonce[8] = "n0nce-01";
	const struct ovl_clock clk = { clock_real, clock_mono, NULL };
	struct ovl_time *t = NULL;
	enum ovl_time_source src;
	uint64_t ts = 0, before = 0, after = 0;
	char err[512], reason[512];
	int ret;

	if (!ready) {
		if (fuzz_keys_init(&keys) < 0)
			abort();
		ready = 1;
	}
	err[0] = '\0';
	ret = ovl_timestamp_verify(data, size, keys.broker->sign_pk, NULL, 0, &ts, err, sizeof(err));
	if (ret < 0 && err[0] == '\0')
		abort();
	t = ovl_time_new(FUZZ_BUILD_TIME, &clk);
	if (!t)
		abort();
	ovl_time_now(t, &before, &src, reason, sizeof(reason));
	err[0] = '\0';
	ret = ovl_time_add_token(t, data, size, keys.broker->sign_pk, nonce, sizeof(nonce), err,
				 sizeof(err));
	if (ret < 0 && err[0] == '\0')
		abort();
	ovl_time_now(t, &after, &src, reason, sizeof(reason));
	if (after < before || after < FUZZ_BUILD_TIME || (ret < 0 && after != before))
		abort();
	if (ret == 0 && (src != OVL_TIME_BROKER || reason[0] == '\0'))
		abort();
	ovl_time_destroy(&t);
	return 0;
}
