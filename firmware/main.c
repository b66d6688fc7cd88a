/*
 * shelf-node: the per-drive daemon.
 *
 *   shelf-node --board NAME [--config FILE] [--state-dir DIR] [--set KEY=VALUE]...
 *              [--format] [--check] [--log-level LEVEL] [--syslog]
 *
 * Start-up: configuration (defaults, then the file, then --set; every key
 * and value validated, a bad one refused by name), the board profile, one
 * io_uring for disk and network, the drive (formatted only when told to, or
 * on the sim board's first start when its drive file is created), the node
 * identity (created on first start, mode 0600). Shutdown on SIGTERM or
 * SIGINT: in-flight work finishes, the store is synced and checkpointed.
 *
 * Exit codes: 0 clean shutdown, 1 runtime failure, 2 bad configuration or
 * usage, 3 the drive could not be opened.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <liburing.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "node.h"
#include "overlay.h"

#define NODE_EXIT_RUNTIME 1
#define NODE_EXIT_CONFIG 2
#define NODE_EXIT_DRIVE 3
#define NODE_PATH_BYTES 512
#define NODE_BUDGET_CHECK_MS 10000 /* how often RSS is compared with the budget */

struct node_config {
	char state_dir[NODE_PATH_BYTES];
	char brokers[1024];        /* comma-separated broker endpoints */
	int64_t data_port;         /* data-plane TCP port */
	int64_t checkpoint_records;
	int64_t commit_window_us;
	int64_t shutdown_deadline_ms;
	char log_level[16];
	bool syslog;
	char site[64], chassis[64], slot[32]; /* failure domain; empty: the board's */
};

#define C(f) offsetof(struct node_config, f)
#define CS(f) sizeof(((struct node_config *)0)->f)

static const struct ovl_conf_item node_conf[] = {
	{ "state_dir", OVL_CONF_STR, "/var/lib/shelf/node", C(state_dir), CS(state_dir), 0, 0,
	  "identity, cached maps and certificate, and a file drive's default home" },
	{ "brokers", OVL_CONF_STR, "", C(brokers), CS(brokers), 0, 0,
	  "broker endpoints, comma-separated (tcp://[addr]:port)" },
	{ "data_port", OVL_CONF_INT, "7480", C(data_port), 0, 1, 65535,
	  "TCP port of the data plane on every slice address" },
	{ "checkpoint_records", OVL_CONF_INT, "1000000", C(checkpoint_records), 0, 1000, INT64_MAX,
	  "store records between index checkpoints" },
	{ "commit_window_us", OVL_CONF_INT, "2000", C(commit_window_us), 0, 0, 1000000,
	  "longest a write waits for its group commit, microseconds" },
	{ "shutdown_deadline", OVL_CONF_MS, "5s", C(shutdown_deadline_ms), 0, 0, 600000,
	  "how long a shutdown waits for in-flight requests" },
	{ "log_level", OVL_CONF_STR, "info", C(log_level), CS(log_level), 0, 0,
	  "error, warn, info or debug" },
	{ "syslog", OVL_CONF_BOOL, "false", C(syslog), 0, 0, 0, "log to syslog instead of stderr" },
	{ "site", OVL_CONF_STR, "", C(site), CS(site), 0, 0, "failure domain: site (default: the board's)" },
	{ "chassis", OVL_CONF_STR, "", C(chassis), CS(chassis), 0, 0,
	  "failure domain: chassis (default: the board's)" },
	{ "slot", OVL_CONF_STR, "", C(slot), CS(slot), 0, 0, "failure domain: slot (default: the board's)" },
	OVL_CONF_END
};

/* The daemon's one context. */
struct node_ctx {
	struct node_config cfg;
	struct ovl_board board;
	struct node_loop *loop;
	struct node_store *store;
	struct ovl_id *id;
	char drive_path[NODE_PATH_BYTES];
	int sigfd;
	struct signalfd_siginfo sig;
	struct node_loop_ev sig_ev;
	bool sig_armed;
	struct node_loop_ev tick_ev;   /* periodic housekeeping */
	struct __kernel_timespec tick;
	bool tick_armed, tick_due;
	bool stop;
	int stop_signal;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: shelf-node --board NAME [--config FILE] [--state-dir DIR] [--set KEY=VALUE]...\n"
		"                  [--format] [--check] [--log-level LEVEL] [--syslog]\n\n"
		"  --board NAME     board profile (boards/NAME/board.conf)\n"
		"  --config FILE    configuration file (key = value)\n"
		"  --set KEY=VALUE  override one configuration key\n"
		"  --format         format the drive if it holds no store\n"
		"  --check          validate configuration, board and drive, then exit\n\n"
		"configuration keys:\n");
	ovl_conf_print_help(node_conf, f);
	fprintf(f, "\nexit codes: 0 clean shutdown, 1 runtime failure, 2 configuration, 3 drive\n");
}

static int mkdir_p(const char *path, mode_t mode)
{
	char buf[NODE_PATH_BYTES];

	if (strlen(path) >= sizeof(buf))
		return -ENAMETOOLONG;
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static long rss_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long pages = 0, rss = 0;

	if (!f)
		return -1;
	if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
		rss = -1;
	fclose(f);
	return rss < 0 ? -1 : rss * sysconf(_SC_PAGESIZE);
}

static void on_signal(struct node_loop_ev *ev, int res, uint32_t flags);

static int arm_signal(struct node_ctx *n)
{
	struct io_uring_sqe *sqe = node_loop_sqe(n->loop, &n->sig_ev);

	if (!sqe)
		return -EBUSY;
	n->sig_ev.fn = on_signal;
	io_uring_prep_read(sqe, n->sigfd, &n->sig, sizeof(n->sig), 0);
	n->sig_armed = true;
	return 0;
}

static void on_tick(struct node_loop_ev *ev, int res, uint32_t flags)
{
	struct node_ctx *n = (struct node_ctx *)((char *)ev - offsetof(struct node_ctx, tick_ev));

	n->tick_armed = false;
	n->tick_due = true;
}

static int arm_tick(struct node_ctx *n)
{
	struct io_uring_sqe *sqe = node_loop_sqe(n->loop, &n->tick_ev);

	if (!sqe)
		return -EBUSY;
	n->tick_ev.fn = on_tick;
	n->tick.tv_sec = NODE_BUDGET_CHECK_MS / 1000;
	n->tick.tv_nsec = 0;
	io_uring_prep_timeout(sqe, &n->tick, 0, 0);
	n->tick_armed = true;
	return 0;
}

/* Cancel an armed request and wait for its completion. */
static void disarm(struct node_ctx *n, struct node_loop_ev *ev, bool *armed)
{
	struct io_uring_sqe *sqe;

	if (!*armed)
		return;
	sqe = node_loop_sqe(n->loop, NULL);
	if (sqe) {
		io_uring_prep_cancel(sqe, ev, 0);
		io_uring_sqe_set_data(sqe, NULL);
	}
	for (int i = 0; i < 100 && *armed; i++)
		if (node_loop_run(n->loop, true) < 0)
			break;
}

static void on_signal(struct node_loop_ev *ev, int res, uint32_t flags)
{
	struct node_ctx *n = (struct node_ctx *)((char *)ev - offsetof(struct node_ctx, sig_ev));

	n->sig_armed = false;
	if (res == (int)sizeof(n->sig)) {
		n->stop = true;
		n->stop_signal = (int)n->sig.ssi_signo;
		return;
	}
	if (!n->stop)
		arm_signal(n);
}

static int parse_args(struct node_ctx *n, int argc, char **argv, bool *format, bool *check)
{
	static const struct option lo[] = {
		{ "board", required_argument, NULL, 'b' },  { "config", required_argument, NULL, 'c' },
		{ "state-dir", required_argument, NULL, 'd' }, { "set", required_argument, NULL, 's' },
		{ "format", no_argument, NULL, 'f' },       { "check", no_argument, NULL, 'k' },
		{ "log-level", required_argument, NULL, 'l' }, { "syslog", no_argument, NULL, 'y' },
		{ "help", no_argument, NULL, 'h' },         { NULL, 0, NULL, 0 },
	};
	const char *board = NULL, *config = NULL, *state_dir = NULL;
	char *sets[64];
	int nsets = 0, opt;
	char err[512];

	if (ovl_conf_defaults(node_conf, &n->cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "shelf-node: %s\n", err);
		return NODE_EXIT_CONFIG;
	}
	while ((opt = getopt_long(argc, argv, "b:c:d:s:fkl:yh", lo, NULL)) != -1) {
		switch (opt) {
		case 'b': board = optarg; break;
		case 'c': config = optarg; break;
		case 'd': state_dir = optarg; break;
		case 's':
			if (nsets == 64) {
				fprintf(stderr, "shelf-node: too many --set options\n");
				return NODE_EXIT_CONFIG;
			}
			sets[nsets++] = optarg;
			break;
		case 'f': *format = true; break;
		case 'k': *check = true; break;
		case 'l': snprintf(n->cfg.log_level, sizeof(n->cfg.log_level), "%s", optarg); break;
		case 'y': n->cfg.syslog = true; break;
		case 'h': usage(stdout); return -1;
		default: usage(stderr); return NODE_EXIT_CONFIG;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "shelf-node: unexpected argument '%s'\n", argv[optind]);
		return NODE_EXIT_CONFIG;
	}
	if (!board) {
		fprintf(stderr, "shelf-node: --board is required (for example --board sim)\n");
		return NODE_EXIT_CONFIG;
	}
	if (config && ovl_conf_load_file(node_conf, &n->cfg, config, err, sizeof(err)) < 0) {
		fprintf(stderr, "shelf-node: %s\n", err);
		return NODE_EXIT_CONFIG;
	}
	/* precedence: defaults, the file, then the command line */
	if (state_dir && ovl_conf_set(node_conf, &n->cfg, "state_dir", state_dir, err, sizeof(err)) < 0) {
		fprintf(stderr, "shelf-node: --state-dir: %s\n", err);
		return NODE_EXIT_CONFIG;
	}
	for (int i = 0; i < nsets; i++) {
		if (ovl_conf_set_pair(node_conf, &n->cfg, sets[i], err, sizeof(err)) < 0) {
			fprintf(stderr, "shelf-node: --set: %s\n", err);
			return NODE_EXIT_CONFIG;
		}
	}
	{
		enum ovl_log_level lvl;

		if (ovl_log_level_parse(n->cfg.log_level, &lvl) < 0) {
			fprintf(stderr, "shelf-node: config key 'log_level': '%s' is not error, warn, info or debug\n",
				n->cfg.log_level);
			return NODE_EXIT_CONFIG;
		}
		ovl_log_open("shelf-node", lvl, n->cfg.syslog);
	}
	if (ovl_board_load(&n->board, board, NULL, err, sizeof(err)) < 0) {
		fprintf(stderr, "shelf-node: %s\n", err);
		return NODE_EXIT_CONFIG;
	}
	/* one board profile serves many nodes: each may name its own slot */
	if (n->cfg.site[0])
		snprintf(n->board.site, sizeof(n->board.site), "%s", n->cfg.site);
	if (n->cfg.chassis[0])
		snprintf(n->board.chassis, sizeof(n->board.chassis), "%s", n->cfg.chassis);
	if (n->cfg.slot[0])
		snprintf(n->board.slot, sizeof(n->board.slot), "%s", n->cfg.slot);
	return 0;
}

static int open_drive(struct node_ctx *n, bool format)
{
	struct node_store_opts o;
	struct node_store_stats st;
	char err[512];
	bool created;
	int ret;

	if (n->board.drive[0] == '/')
		snprintf(n->drive_path, sizeof(n->drive_path), "%s", n->board.drive);
	else
		snprintf(n->drive_path, sizeof(n->drive_path), "%s/%s", n->cfg.state_dir,
			 n->board.drive);
	created = n->board.drive_is_file && access(n->drive_path, F_OK) != 0;
	node_store_opts_init(&o);
	o.path = n->drive_path;
	o.loop = n->loop;
	o.create_size = n->board.drive_is_file ? n->board.drive_size : 0;
	/* a drive file the node itself just created may be formatted */
	o.format = format || created;
	o.segment_bytes = n->board.segment_size;
	o.write_buffers = (unsigned)n->board.write_buffers;
	o.write_buffer_bytes = n->board.write_buffer_size;
	o.ckpt_records = (uint64_t)n->cfg.checkpoint_records;
	o.commit_window_us = (uint64_t)n->cfg.commit_window_us;
	ret = node_store_open(&n->store, &o, err, sizeof(err));
	if (ret < 0) {
		ovl_err("cannot open the store: %s", err);
		return ret;
	}
	node_store_stats(n->store, &st);
	if (st.repaired_superblock)
		ovl_warn("drive '%s': a damaged superblock copy was repaired", n->drive_path);
	ovl_info("drive '%s': %s%" PRIu64 " objects, %" PRIu64 " of %" PRIu64 " segments free, %" PRIu64 " records replayed",
		 n->drive_path, created ? "created and formatted, " : "", st.objects,
		 st.segments_free, st.segments, st.recovered_records);
	return 0;
}

static int setup_signals(struct node_ctx *n)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -errno;
	n->sigfd = signalfd(-1, &set, SFD_CLOEXEC);
	if (n->sigfd < 0)
		return -errno;
	return arm_signal(n);
}

int main(int argc, char **argv)
{
	struct node_ctx n;
	bool format = false, check = false, created = false;
	char err[512], idpath[NODE_PATH_BYTES + 16], hex[OVL_ID_HEX_BYTES], fp[OVL_ID_FP_BYTES];
	int ret, code = 0;

	memset(&n, 0, sizeof(n));
	n.sigfd = -1;
	ret = parse_args(&n, argc, argv, &format, &check);
	if (ret)
		return ret < 0 ? 0 : ret;
	ret = mkdir_p(n.cfg.state_dir, 0700);
	if (ret < 0) {
		ovl_err("cannot create state directory '%s': %s", n.cfg.state_dir, strerror(-ret));
		return NODE_EXIT_CONFIG;
	}
	ret = node_loop_new(&n.loop, (unsigned)n.board.ring_depth, err, sizeof(err));
	if (ret < 0) {
		ovl_err("%s", err);
		return NODE_EXIT_RUNTIME;
	}
	ovl_info("board '%s' (%s), failure domain %s/%s/%s; io_uring %u entries%s%s", n.board.name,
		 n.board.description, n.board.site, n.board.chassis, n.board.slot,
		 node_loop_features(n.loop)->entries,
		 node_loop_features(n.loop)->single_issuer ? ", single issuer" : "",
		 node_loop_features(n.loop)->defer_taskrun ? ", deferred task work" : "");
	if (open_drive(&n, format) < 0) {
		code = NODE_EXIT_DRIVE;
		goto out;
	}
	snprintf(idpath, sizeof(idpath), "%s/id.key", n.cfg.state_dir);
	ret = ovl_id_load_or_create(&n.id, idpath, &created, err, sizeof(err));
	if (ret < 0) {
		ovl_err("%s", err);
		code = NODE_EXIT_CONFIG;
		goto out;
	}
	ovl_nodeid_format(n.id->sign_pk, hex);
	ovl_nodeid_fingerprint(n.id->sign_pk, fp);
	ovl_info("identity %s (%s)%s", hex, fp, created ? ", created" : "");
	if (check) {
		ovl_info("configuration, board, drive and identity are valid");
		goto out;
	}
	ret = setup_signals(&n);
	if (ret < 0) {
		ovl_err("cannot set up signal handling: %s", strerror(-ret));
		code = NODE_EXIT_RUNTIME;
		goto out;
	}
	if (!n.cfg.brokers[0])
		ovl_warn("no brokers configured: serving from cached maps only");
	ovl_info("ready: node %s, drive '%s', rss %ld KiB of %" PRIu64 " KiB budget", fp,
		 n.drive_path, rss_bytes() / 1024, n.board.memory_budget / 1024);
	arm_tick(&n);
	while (!n.stop) {
		struct node_store_stats st;

		/* the store's own work first, then sleep until anything completes */
		ret = node_store_poll(n.store, false);
		if (ret == 0)
			ret = node_loop_run(n.loop, true);
		if (ret < 0) {
			ovl_err("event loop failed: %s", strerror(-ret));
			code = NODE_EXIT_RUNTIME;
			break;
		}
		if (!n.tick_due)
			continue;
		n.tick_due = false;
		arm_tick(&n);
		node_store_stats(n.store, &st);
		if (st.read_only)
			ovl_err("store is read-only (writes refused, reads served): %s",
				st.read_only_reason);
		else if (st.segments_free <= st.segments_reserved + 1) {
			/* before puts start failing: checkpoint and compact now */
			ret = node_store_reclaim(n.store);
			node_store_stats(n.store, &st);
			/* a full drive with nothing to free would say so every tick */
			ovl_log(ret > 0 ? OVL_LOG_INFO : OVL_LOG_DEBUG,
				"space: reclaim %s, %" PRIu64 " of %" PRIu64 " segments free (%" PRIu64 " reserved)",
				ret > 0 ? "freed segments" : ret == 0 ? "found nothing to free" : strerror(-ret),
				st.segments_free, st.segments, st.segments_reserved);
		}
		if (rss_bytes() > (long)n.board.memory_budget)
			ovl_warn("rss %ld KiB is over the board's budget of %" PRIu64 " KiB",
				 rss_bytes() / 1024, n.board.memory_budget / 1024);
	}
	if (n.stop)
		ovl_info("signal %d: shutting down (syncing and checkpointing the store)", n.stop_signal);
out:
	if (n.store) {
		node_store_close(&n.store);
		ovl_info("store closed cleanly");
	}
	ovl_id_destroy(&n.id);
	if (n.loop) {
		disarm(&n, &n.sig_ev, &n.sig_armed);
		disarm(&n, &n.tick_ev, &n.tick_armed);
	}
	if (n.sigfd >= 0)
		close(n.sigfd);
	node_loop_destroy(&n.loop);
	return code;
}
