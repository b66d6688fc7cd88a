/*
 * bench_fleet: `shelf-bench fleet`, fleet updates on a local cluster
 * (issue 16, "Benchmark"). Every node's link is shaped with tc tbf (both
 * directions of its veth pair: the node's eth0 and the backplane's vNN) so
 * that each node's own link is the bottleneck, as on real hardware.
 *
 *   fleet_distribute_24       the time for the image to be fetched, verified
 *                             and installed on the other nodes, all told at
 *                             once (stages canary,100%), against the time the
 *                             canary took alone, in the same run (ratio:
 *                             target <= 2; 23 sequential pulls would be ~23)
 *   fleet_rollout_24_s        a second release's whole rollout with the
 *                             default stages (canary,chassis,100%) and a
 *                             short soak
 *   fleet_site_ingress_copies the bytes the backplane (broker and clients:
 *                             the outside of the site) sent over the bridge
 *                             during publish, divided by the payload size
 *                             (target 1.0)
 *
 * Needs root (network namespaces); the cluster lives in DIR/fleet and is
 * removed after.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "bench_cluster.h"

#define FLEET_OUT_BYTES (256u << 10)

struct fleet_bench {
	struct bench_cluster cl;
	uint64_t image_size;
	const char *rate;        /* tc tbf rate */
	unsigned soak_s;
	char *out;               /* command output (FLEET_OUT_BYTES) */
};

/* Run a shell command (printf format); its stdout in fb->out. 0 or -errno. */
static int sh(struct fleet_bench *fb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sh(struct fleet_bench *fb, const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(cmd))
		return -E2BIG;
	return bench_capture(cmd, fb->out, FLEET_OUT_BYTES);
}

/* shelf-cluster exec -- CMD (a shell command line), stdout in fb->out */
static int cx(struct fleet_bench *fb, const char *cmd)
{
	return sh(fb, "'%s' exec --dir '%s' -- sh -c '%s' 2>>'%s'", fb->cl.script, fb->cl.cdir, cmd,
		  fb->cl.log);
}

static uint64_t num_after(const char *s, const char *key)
{
	const char *p = strstr(s, key);

	return p ? strtoull(p + strlen(key), NULL, 10) : 0;
}

static unsigned count_of(const char *s, const char *needle)
{
	unsigned n = 0;

	for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle))
		n++;
	return n;
}

struct fstatus {
	char state[16];
	unsigned included, pending, fetching, done_nodes;
	bool ok;
};

static void status(struct fleet_bench *fb, struct fstatus *st)
{
	const char *p;

	memset(st, 0, sizeof(*st));
	if (cx(fb, "shelf fleet rollout status --json") < 0 && !strstr(fb->out, "\"state\""))
		return;
	p = strstr(fb->out, "\"state\": \"");
	if (!p)
		return;
	sscanf(p + 10, "%15[a-z_]", st->state);
	st->included = (unsigned)num_after(fb->out, "\"included\": ");
	st->pending = count_of(fb->out, "\"state\": \"pending\"");
	st->fetching = count_of(fb->out, "\"state\": \"fetching\"");
	st->done_nodes = count_of(fb->out, "\"state\": \"installed\"") +
			 count_of(fb->out, "\"state\": \"rebooting\"") +
			 count_of(fb->out, "\"state\": \"healthy\"");
	st->ok = true;
}

static int shape(struct fleet_bench *fb)
{
	for (int i = 1; i <= fb->cl.nodes; i++) {
		int rc = sh(fb, "ip netns exec %s-n%02d tc qdisc replace dev eth0 root tbf rate %s "
			    "burst 256kb latency 100ms && ip netns exec %s-bp tc qdisc replace dev "
			    "vn%02d root tbf rate %s burst 256kb latency 100ms", fb->cl.nsp, i, fb->rate,
			    fb->cl.nsp, i, fb->rate);

		if (rc < 0) {
			fprintf(stderr, "fleet: cannot shape node %d's link with tc tbf\n", i);
			return rc;
		}
	}
	return 0;
}

/* An image of version v: the build's shelf-node and boards, padded to about
 * fb->image_size with random bytes. */
static int image(struct fleet_bench *fb, const char *v, const char *pad, char *path, size_t cap)
{
	char p[1200];

	snprintf(p, sizeof(p), "%s/payload-%s", fb->cl.dir, v);
	snprintf(path, cap, "%s/shelf-sim-%s.img", fb->cl.dir, v);
	return sh(fb, "set -e; rm -rf '%s'; mkdir -p '%s/bin'; echo %s >'%s/VERSION'; "
		  "cp '%s/shelf-node' '%s/bin/'; cp -R '%s/../boards' '%s/boards'; "
		  "cp '%s' '%s/boards/fleet-pad.bin'; "
		  "tar --format=ustar --owner=0 --group=0 --numeric-owner -cf '%s.tar' -C '%s' "
		  "VERSION bin boards; '%s/shelf' image build --version %s --board sim "
		  "--key '%s/broker/release/dev.key' --cert '%s/broker/release/dev.cert' "
		  "--out '%s' '%s.tar' >/dev/null; rm -rf '%s' '%s.tar'",
		  p, p, v, p, fb->cl.bin, p, fb->cl.bin, p, pad, p, p, p, fb->cl.bin, v, fb->cl.cdir,
		  fb->cl.cdir, path, p, p, p);
}

static uint64_t br_tx(struct fleet_bench *fb)
{
	if (cx(fb, "cat /sys/class/net/br0/statistics/tx_bytes") < 0)
		return 0;
	return strtoull(fb->out, NULL, 10);
}

static int run_bench(struct fleet_bench *fb)
{
	char img1[1200], img2[1200], pad[1100], cmd[1400], name[64];
	struct fstatus st;
	uint64_t tx0, tx1, size;
	double t0, t_one = 0, t_stage = 0, t_all = 0, t_roll;
	int n = fb->cl.nodes;

	snprintf(pad, sizeof(pad), "%s/pad.bin", fb->cl.dir);
	if (sh(fb, "head -c %llu /dev/urandom >'%s'", (unsigned long long)fb->image_size, pad) < 0 ||
	    image(fb, "9.0.1", pad, img1, sizeof(img1)) < 0 ||
	    image(fb, "9.0.2", pad, img2, sizeof(img2)) < 0) {
		fprintf(stderr, "fleet: cannot build the images (see %s)\n", fb->cl.log);
		return 1;
	}
	unlink(pad);
	if (shape(fb) < 0)
		return 1;
	printf("# fleet: %d nodes over %d chassis, R=2; every node's veth shaped with tc tbf "
	       "rate %s (both directions); image %llu MiB\n", n, fb->cl.chassis, fb->rate,
	       (unsigned long long)(fb->image_size >> 20));
	fflush(stdout);
	tx0 = br_tx(fb);
	snprintf(cmd, sizeof(cmd), "shelf fleet publish %s --json --timeout 600000", img1);
	if (cx(fb, cmd) < 0) {
		fprintf(stderr, "fleet: publish failed (see %s): %s\n", fb->cl.log, fb->out);
		return 1;
	}
	size = num_after(fb->out, "\"size\": "); /* before br_tx() reuses fb->out */
	tx1 = br_tx(fb);
	snprintf(cmd, sizeof(cmd), "shelf fleet publish %s --timeout 600000 >/dev/null", img2);
	if (!size || cx(fb, cmd) < 0) {
		fprintf(stderr, "fleet: publish failed (see %s): %s\n", fb->cl.log,
			size ? fb->out : "no size in the first publish's answer");
		return 1;
	}
	/* one: the canary alone; all: the others, told at once */
	if (cx(fb, "shelf fleet rollout start 9.0.1 --stages canary,100% --soak 1s") < 0) {
		fprintf(stderr, "fleet: rollout start failed: %s\n", fb->out);
		return 1;
	}
	t0 = bench_now();
	for (;;) {
		double now = bench_now();

		status(fb, &st);
		if (!strcmp(st.state, "halted") || !strcmp(st.state, "aborted") || now - t0 > 3600) {
			fprintf(stderr, "fleet: the first rollout is %s\n", st.state);
			return 1;
		}
		if (!t_one && st.done_nodes >= 1)
			t_one = now - t0;
		if (t_one && !t_stage && st.included > 1)
			t_stage = now;
		if (t_stage && st.pending + st.fetching == 0 && st.included == (unsigned)n) {
			t_all = now - t_stage;
			break;
		}
		if (!strcmp(st.state, "done")) {
			t_all = now - (t_stage ? t_stage : t0);
			break;
		}
		usleep(250000);
	}
	cx(fb, "shelf fleet rollout abort >/dev/null");
	snprintf(name, sizeof(name), "fleet_distribute_%d", n);
	bench_line(name, t_all, t_one, "s", "one-node-alone");
	/* the second release, default stages */
	snprintf(cmd, sizeof(cmd), "shelf fleet rollout start 9.0.2 --soak %us", fb->soak_s);
	if (cx(fb, cmd) < 0) {
		fprintf(stderr, "fleet: second rollout start failed: %s\n", fb->out);
		return 1;
	}
	t0 = bench_now();
	for (;;) {
		status(fb, &st);
		if (!strcmp(st.state, "done"))
			break;
		if (!strcmp(st.state, "halted") || bench_now() - t0 > 3600) {
			fprintf(stderr, "fleet: the second rollout is %s\n", st.state);
			return 1;
		}
		usleep(250000);
	}
	t_roll = bench_now() - t0;
	snprintf(name, sizeof(name), "fleet_rollout_%d_s", n);
	bench_line(name, t_roll, 0, "s", "-");
	bench_line("fleet_site_ingress_copies", (double)(tx1 - tx0) / (double)size, 1.0, "copies",
		   "ideal");
	return 0;
}

static int run_fleet(int argc, char **argv)
{
	struct fleet_bench fb = { .image_size = 256u << 20, .rate = "200mbit", .soak_s = 5 };
	const char *base = "build/bench", *script = NULL;
	static const struct option lo[] = {
		{ "dir", 1, NULL, 'd' },   { "nodes", 1, NULL, 'n' }, { "chassis", 1, NULL, 'c' },
		{ "image-size", 1, NULL, 's' }, { "rate", 1, NULL, 'r' }, { "soak", 1, NULL, 'S' },
		{ "cluster", 1, NULL, 'C' }, { "keep", 0, NULL, 'K' }, { "help", 0, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	int opt, ret;

	fb.cl.tag = "fleet";
	fb.cl.nodes = 24;
	fb.cl.chassis = 3;
	fb.cl.replicas = 2;
	fb.cl.drive_size = "768M";
	optind = 1;
	while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (opt) {
		case 'd': base = optarg; break;
		case 'n': fb.cl.nodes = atoi(optarg); break;
		case 'c': fb.cl.chassis = atoi(optarg); break;
		case 's': fb.image_size = bench_size_arg("--image-size", optarg); break;
		case 'r': fb.rate = optarg; break;
		case 'S': fb.soak_s = (unsigned)atoi(optarg); break;
		case 'C': script = optarg; break;
		case 'K': fb.cl.keep = true; break;
		default:
			printf("usage: shelf-bench fleet [--dir DIR] [--nodes 24] [--chassis 3] "
			       "[--image-size 256M] [--rate 200mbit] [--soak 5] [--cluster PATH] "
			       "[--keep]\n"
			       "  a local cluster (tools/shelf-cluster) in DIR/fleet, removed after; "
			       "needs root and tc\n");
			return opt == 'h' ? 0 : 2;
		}
	}
	if (fb.cl.nodes < 2 || fb.cl.nodes > 99 || fb.cl.chassis < 1 ||
	    fb.cl.chassis > fb.cl.nodes || fb.image_size > (4ull << 30) || fb.soak_s > 3600 ||
	    strspn(fb.rate, "0123456789kmgbit") != strlen(fb.rate)) {
		fprintf(stderr, "shelf-bench fleet: --nodes 2..99, --chassis 1..nodes, --image-size "
				"up to 4G, --soak 0..3600 (s), --rate like 200mbit\n");
		return 2;
	}
	fb.out = malloc(FLEET_OUT_BYTES);
	if (!fb.out)
		return 1;
	ret = bench_cluster_init(&fb.cl, base, script);
	if (ret) {
		free(fb.out);
		return ret == 77 ? 0 : ret;
	}
	/* the images live in the system slice, which shelf-cluster makes only
	 * when asked */
	fb.cl.system_slice = true;
	ret = bench_cluster_up(&fb.cl) < 0 ? 1 : 0;
	if (ret == 0)
		ret = run_bench(&fb);
	bench_cluster_down(&fb.cl);
	free(fb.out);
	return ret;
}

static const struct bench_cmd fleet_cmd = {
	"fleet",
	"fleet updates on a local cluster with shaped links (needs root, tc) [--dir DIR] "
	"[--image-size 256M]",
	run_fleet, false,
};
BENCH_COMMAND(fleet_cmd)
