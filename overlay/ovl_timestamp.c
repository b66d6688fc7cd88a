/* Broker-signed timestamp tokens and trusted time for boards without an RTC. */
#include "ovl_cert.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ovl_signed.h"

#define TS_FIELDS 4 /* v, time, nonce, issuer */
#define ISO_BYTES 32 /* "1970-01-01T00:00:00Z" and room to spare */

static const struct ovl_mp_limits ts_body_limits = {
	.max_depth = 1,
	.max_bytes = OVL_TS_MAX_BYTES,
	.max_elems = 16,
	.max_str = 64,
};

static void ts_pack(msgpack_packer *pk, uint64_t unix_s, const uint8_t *nonce, size_t nonce_len,
		    const uint8_t keyid[OVL_KEYID_BYTES])
{
	msgpack_pack_map(pk, TS_FIELDS);
	msgpack_pack_str_with_body(pk, "v", 1);
	msgpack_pack_uint64(pk, OVL_TS_VERSION);
	msgpack_pack_str_with_body(pk, "time", 4);
	msgpack_pack_uint64(pk, unix_s);
	msgpack_pack_str_with_body(pk, "nonce", 5);
	msgpack_pack_bin_with_body(pk, nonce, nonce_len);
	msgpack_pack_str_with_body(pk, "issuer", 6);
	msgpack_pack_bin_with_body(pk, keyid, OVL_KEYID_BYTES);
}

int ovl_timestamp_sign(uint64_t unix_s, const uint8_t *nonce, size_t nonce_len,
		       const uint8_t issuer_sk[OVL_ID_SIGN_SK_BYTES], uint8_t *out,
		       size_t outlen, char *err, size_t errlen)
{
	uint8_t body[OVL_TS_MAX_BYTES];
	uint8_t pk[OVL_ID_BYTES], keyid[OVL_KEYID_BYTES];
	struct ovl_signed_buf b = { .p = body, .cap = sizeof(body) };
	msgpack_packer packer;
	int ret;

	if (nonce_len > OVL_TS_NONCE_MAX_BYTES) {
		snprintf(err, errlen, "timestamp: nonce of %zu bytes is longer than %d", nonce_len,
			 OVL_TS_NONCE_MAX_BYTES);
		return -E2BIG;
	}
	crypto_sign_ed25519_sk_to_pk(pk, issuer_sk);
	ovl_keyid_compute(pk, keyid);
	msgpack_packer_init(&packer, &b, ovl_signed_buf_write);
	ts_pack(&packer, unix_s, nonce, nonce_len, keyid);
	ret = ovl_signed_seal(body, b.len, OVL_TS_DOMAIN, issuer_sk, out, outlen);
	if (ret == -E2BIG)
		snprintf(err, errlen, "timestamp: %zu bytes of output space are too few", outlen);
	else if (ret < 0)
		snprintf(err, errlen, "timestamp: %s", strerror(-ret));
	return ret;
}

int ovl_timestamp_verify(const uint8_t *buf, size_t len, const uint8_t issuer_pk[OVL_ID_BYTES],
			 const uint8_t *nonce, size_t nonce_len, uint64_t *unix_s, char *err,
			 size_t errlen)
{
	static const char what[] = "timestamp";
	struct ovl_signed env;
	struct ovl_signed_buf cmp = { 0 };
	msgpack_packer packer;
	msgpack_unpacked up;
	const msgpack_object *v = NULL;
	uint8_t issuer[OVL_KEYID_BYTES], keyid[OVL_KEYID_BYTES], echo[OVL_TS_NONCE_MAX_BYTES];
	char got[OVL_ID_FP_BYTES], want[OVL_ID_FP_BYTES];
	uint64_t t = 0;
	size_t echo_len = 0;
	int ret;

	msgpack_unpacked_init(&up);
	ret = ovl_signed_open(&env, buf, len, OVL_TS_MAX_BYTES, what, err, errlen);
	if (ret < 0)
		goto out;
	ret = ovl_signed_unpack(&up, env.body, env.body_len, &ts_body_limits, OVL_TS_VERSION,
				TS_FIELDS, what, err, errlen);
	if (ret < 0)
		goto out;
	ret = -EBADMSG;
	v = ovl_signed_field(&up.data, 1, "time", what, err, errlen);
	if (!v || (ret = ovl_signed_get_uint(v, &t, what, "time", err, errlen)) < 0)
		goto out;
	ret = -EBADMSG;
	v = ovl_signed_field(&up.data, 2, "nonce", what, err, errlen);
	if (!v)
		goto out;
	if (v->type != MSGPACK_OBJECT_BIN || v->via.bin.size > OVL_TS_NONCE_MAX_BYTES) {
		snprintf(err, errlen, "%s: 'nonce' is not a bin of at most %d bytes", what,
			 OVL_TS_NONCE_MAX_BYTES);
		goto out;
	}
	echo_len = v->via.bin.size;
	memcpy(echo, v->via.bin.ptr, echo_len);
	v = ovl_signed_field(&up.data, 3, "issuer", what, err, errlen);
	if (!v || (ret = ovl_signed_get_bin(v, issuer, sizeof(issuer), what, "issuer", err,
					    errlen)) < 0)
		goto out;
	cmp.want = env.body;
	cmp.cap = env.body_len;
	msgpack_packer_init(&packer, &cmp, ovl_signed_buf_write);
	ts_pack(&packer, t, echo, echo_len, issuer);
	if (cmp.fail || cmp.len != env.body_len) {
		snprintf(err, errlen, "%s: body is not in canonical encoding", what);
		ret = -EBADMSG;
		goto out;
	}
	ovl_keyid_compute(issuer_pk, keyid);
	if (memcmp(keyid, issuer, sizeof(keyid)) != 0) {
		ovl_keyid_format(issuer, got);
		ovl_keyid_format(keyid, want);
		snprintf(err, errlen, "%s %llu was issued by key %s, not by key %s", what,
			 (unsigned long long)t, got, want);
		ret = -EKEYREJECTED;
		goto out;
	}
	ret = ovl_signed_verify(&env, OVL_TS_DOMAIN, issuer_pk);
	if (ret < 0) {
		ovl_keyid_format(keyid, want);
		snprintf(err, errlen, "%s %llu: signature does not verify under key %s", what,
			 (unsigned long long)t, want);
		goto out;
	}
	if (nonce && (nonce_len != echo_len || memcmp(nonce, echo, echo_len) != 0)) {
		snprintf(err, errlen, "%s %llu does not echo our nonce (replayed?)", what,
			 (unsigned long long)t);
		ret = -ESTALE;
		goto out;
	}
	*unix_s = t;
	ret = 0;
out:
	msgpack_unpacked_destroy(&up);
	return ret;
}

/* ---- clocks and trusted time --------------------------------------------- */

static int64_t system_clock(clockid_t id)
{
	struct timespec ts;

	if (clock_gettime(id, &ts) < 0)
		return 0;
	return (int64_t)ts.tv_sec;
}

static int64_t system_realtime(void *ctx)
{
	return system_clock(CLOCK_REALTIME);
}

static int64_t system_monotonic(void *ctx)
{
	return system_clock(CLOCK_BOOTTIME);
}

const struct ovl_clock ovl_clock_system = {
	.realtime_s = system_realtime,
	.monotonic_s = system_monotonic,
	.ctx = NULL,
};

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t era;
	unsigned yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

int64_t ovl_time_build_time(void)
{
#ifdef SHELF_BUILD_TIME
	return (int64_t)(SHELF_BUILD_TIME);
#else
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	const char *date = __DATE__; /* "Mmm dd yyyy", day padded with a space */
	unsigned m = 1, d = 0;
	int64_t y = 0;

	for (unsigned i = 0; i < 12; i++)
		if (memcmp(date, months + 3 * i, 3) == 0)
			m = i + 1;
	d = (date[4] == ' ' ? 0 : (unsigned)(date[4] - '0') * 10) + (unsigned)(date[5] - '0');
	for (int i = 7; i < 11; i++)
		y = y * 10 + (date[i] - '0');
	return days_from_civil(y, m, d) * 86400;
#endif
}

struct ovl_time {
	int64_t build_s;         /* no correct clock reads earlier */
	struct ovl_clock clock;
	bool have_token;
	uint64_t token_s;        /* latest verified broker time */
	int64_t token_mono_s;    /* monotonic clock when it arrived */
};

struct ovl_time *ovl_time_new(int64_t build_time_s, const struct ovl_clock *clock)
{
	struct ovl_time *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->build_s = build_time_s;
	t->clock = clock ? *clock : ovl_clock_system;
	return t;
}

void ovl_time_destroy(struct ovl_time **t)
{
	if (!t || !*t)
		return;
	free(*t);
	*t = NULL;
}

/* The held broker time advanced by the monotonic clock. */
static uint64_t token_now(const struct ovl_time *t, int64_t mono)
{
	int64_t elapsed = mono - t->token_mono_s;

	return t->token_s + (uint64_t)(elapsed > 0 ? elapsed : 0);
}

static void iso(int64_t s, char out[ISO_BYTES])
{
	struct tm tm;
	time_t tt = (time_t)s;

	if (!gmtime_r(&tt, &tm) || strftime(out, ISO_BYTES, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, ISO_BYTES, "@%lld", (long long)s);
}

int ovl_time_add_token(struct ovl_time *t, const uint8_t *buf, size_t len,
		       const uint8_t broker_pk[OVL_ID_BYTES], const uint8_t *nonce,
		       size_t nonce_len, char *err, size_t errlen)
{
	char when[ISO_BYTES], build[ISO_BYTES];
	uint64_t ts = 0;
	int64_t mono;
	int ret;

	ret = ovl_timestamp_verify(buf, len, broker_pk, nonce, nonce_len, &ts, err, errlen);
	if (ret < 0)
		return ret;
	if (ts > INT64_MAX || (int64_t)ts < t->build_s) {
		iso(ts > INT64_MAX ? INT64_MAX : (int64_t)ts, when);
		iso(t->build_s, build);
		snprintf(err, errlen, "timestamp %llu (%s) is before the build date %s",
			 (unsigned long long)ts, when, build);
		return -ERANGE;
	}
	mono = t->clock.monotonic_s(t->clock.ctx);
	/* an older token (replayed, or from a slower broker) never moves time back */
	if (!t->have_token || ts > token_now(t, mono)) {
		t->have_token = true;
		t->token_s = ts;
		t->token_mono_s = mono;
	}
	return 0;
}

int ovl_time_now(struct ovl_time *t, uint64_t *now, enum ovl_time_source *src, char *reason,
		 size_t reasonlen)
{
	char local_iso[ISO_BYTES], build_iso[ISO_BYTES], token_iso[ISO_BYTES];
	int64_t local = t->clock.realtime_s(t->clock.ctx);
	int64_t mono;
	enum ovl_time_source s;

	if (local >= t->build_s) {
		*now = (uint64_t)local;
		s = OVL_TIME_LOCAL;
		if (reasonlen)
			reason[0] = '\0';
		goto out;
	}
	iso(local, local_iso);
	iso(t->build_s, build_iso);
	if (t->have_token) {
		mono = t->clock.monotonic_s(t->clock.ctx);
		*now = token_now(t, mono);
		s = OVL_TIME_BROKER;
		iso((int64_t)t->token_s, token_iso);
		snprintf(reason, reasonlen,
			 "local clock %s is before the build date %s; using the broker timestamp %s received %llu s ago",
			 local_iso, build_iso, token_iso,
			 (unsigned long long)(*now - t->token_s));
		goto out;
	}
	*now = (uint64_t)t->build_s;
	s = OVL_TIME_BUILD;
	snprintf(reason, reasonlen,
		 "local clock %s is before the build date %s and no broker timestamp has arrived; using the build date",
		 local_iso, build_iso);
out:
	if (src)
		*src = s;
	return 0;
}
