/*
 * shelf-bench overlay (codec part): decoding a typical "register" message
 * with ovl_msg_decode() (bounded walk, schema checks, copy into the struct)
 * against msgpack-c's msgpack_unpack() of the same bytes with no validation
 * at all, in the same run. Each repetition runs each side for about
 * BENCH_CODEC_RUN_S, alternating in slices of BENCH_CODEC_SLICE_S so that the
 * load of a shared machine falls on both sides alike; BENCH_CODEC_REPS
 * repetitions, medians reported.
 */
#include <errno.h>
#include <msgpack.h>
#include <stdio.h>
#include <string.h>

#include "bench.h"
#include "overlay.h"

#define BENCH_CODEC_RUN_S 1.0
#define BENCH_CODEC_SLICE_S 0.01
#define BENCH_CODEC_REPS 3
#define BENCH_CODEC_BATCH 256 /* iterations between clock reads */

static volatile uint64_t bench_codec_sink;

/* The register message a node sends at start-up, as the bench input. */
static int build_register(msgpack_sbuffer *sb)
{
	static const char *const names[] = { "alpha", "beta" };
	struct ovl_msg_slice slices[2];
	struct ovl_msg m;
	char err[256];
	int ret;

	ovl_msg_init(&m, OVL_MSG_REGISTER);
	m.rid = 42;
	for (int i = 0; i < OVL_MSG_ID_BYTES; i++) {
		m.u.reg.node_id[i] = (uint8_t)(1 + 7 * i);
		m.u.reg.curve_key[i] = (uint8_t)(2 + 7 * i);
	}
	snprintf(m.u.reg.board, sizeof(m.u.reg.board), "sim");
	snprintf(m.u.reg.version, sizeof(m.u.reg.version), "shelf 0.1.0");
	m.u.reg.capacity = 4000787030016ull;
	snprintf(m.u.reg.domain.site, sizeof(m.u.reg.domain.site), "lab-1");
	snprintf(m.u.reg.domain.chassis, sizeof(m.u.reg.domain.chassis), "c07");
	snprintf(m.u.reg.domain.slot, sizeof(m.u.reg.domain.slot), "12");
	m.u.reg.port = 7100;
	snprintf(m.u.reg.token, sizeof(m.u.reg.token), "enrol-3f9a1c");
	memset(slices, 0, sizeof(slices));
	for (int i = 0; i < 2; i++) {
		snprintf(slices[i].name, sizeof(slices[i].name), "%s", names[i]);
		slices[i].epoch = 7 + i;
	}
	m.u.reg.slices = slices;
	m.u.reg.n_slices = 2;
	ret = ovl_msg_encode(&m, sb, err, sizeof(err));
	if (ret < 0)
		fprintf(stderr, "shelf-bench: cannot encode the register message: %s\n", err);
	return ret;
}

/* ovl_msg_decode() for about `secs`: adds messages to *n and seconds to *t. */
static int run_ours(const char *buf, size_t len, double secs, uint64_t *count, double *spent)
{
	double t0 = bench_now(), t = t0;
	uint64_t n = 0, sum = 0;
	struct ovl_msg m;
	char err[256];

	while (t - t0 < secs) {
		for (int i = 0; i < BENCH_CODEC_BATCH; i++) {
			if (ovl_msg_decode(buf, len, &m, err, sizeof(err)) < 0)
				return -EBADMSG;
			sum += m.u.reg.port + m.u.reg.n_slices;
			ovl_msg_release(&m);
		}
		n += BENCH_CODEC_BATCH;
		t = bench_now();
	}
	bench_codec_sink += sum;
	*count += n;
	*spent += t - t0;
	return 0;
}

/* The same with msgpack_unpack() into a reused zone, without any checks. */
static int run_ref(const char *buf, size_t len, double secs, uint64_t *count, double *spent)
{
	double t0 = bench_now(), t = t0;
	uint64_t n = 0, sum = 0;
	msgpack_zone zone;
	msgpack_object obj;

	if (!msgpack_zone_init(&zone, 2048))
		return -ENOMEM;
	while (t - t0 < secs) {
		for (int i = 0; i < BENCH_CODEC_BATCH; i++) {
			size_t off = 0;

			if (msgpack_unpack(buf, len, &off, &zone, &obj) != MSGPACK_UNPACK_SUCCESS) {
				msgpack_zone_destroy(&zone);
				return -EBADMSG;
			}
			sum += obj.via.map.size;
			msgpack_zone_clear(&zone);
		}
		n += BENCH_CODEC_BATCH;
		t = bench_now();
	}
	msgpack_zone_destroy(&zone);
	bench_codec_sink += sum;
	*count += n;
	*spent += t - t0;
	return 0;
}

static int bench_codec(int argc, char **argv)
{
	double ours[BENCH_CODEC_REPS], ref[BENCH_CODEC_REPS];
	msgpack_sbuffer sb;
	int ret = 1;

	/* --dir DIR is accepted and ignored; other options belong to other parts */
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
			i++;
	}
	msgpack_sbuffer_init(&sb);
	if (build_register(&sb) < 0)
		goto out;
	for (int r = 0; r < BENCH_CODEC_REPS; r++) {
		uint64_t n_ours = 0, n_ref = 0;
		double t_ours = 0, t_ref = 0;

		while (t_ours < BENCH_CODEC_RUN_S || t_ref < BENCH_CODEC_RUN_S) {
			if (run_ours(sb.data, sb.size, BENCH_CODEC_SLICE_S, &n_ours, &t_ours) < 0 ||
			    run_ref(sb.data, sb.size, BENCH_CODEC_SLICE_S, &n_ref, &t_ref) < 0) {
				fprintf(stderr, "shelf-bench: decoding the register message failed\n");
				goto out;
			}
		}
		ours[r] = (double)n_ours / t_ours;
		ref[r] = (double)n_ref / t_ref;
	}
	bench_line("codec_decode_register", bench_median(ours, BENCH_CODEC_REPS),
		   bench_median(ref, BENCH_CODEC_REPS), "msg/s", "msgpack_unpack");
	ret = 0;
out:
	msgpack_sbuffer_destroy(&sb);
	return ret;
}

static const struct bench_cmd bench_codec_cmd = {
	.name = "overlay",
	.usage = "overlay library figures (codec: decode a register message) [--dir DIR]",
	.run = bench_codec,
	.in_all = true,
};
BENCH_COMMAND(bench_codec_cmd)
