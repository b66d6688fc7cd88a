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
 * usage, 3 the drive could not be opened, 75 a clean shutdown to restart
 * into the slot an update installed (shelf-boot starts it).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <liburing.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <arpa/inet.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "node.h"
#include "overlay.h"

#define NODE_EXIT_RUNTIME 1
#define NODE_EXIT_CONFIG 2
#define NODE_EXIT_DRIVE 3
#define NODE_PATH_BYTES 512
#define NODE_TICK_MS 100           /* control plane, data-plane timers */
#define NODE_BUDGET_CHECK_MS 10000 /* how often RSS is compared with the budget */
#define NODE_ADDRS_MAX 16          /* slice addresses installed */
#define NODE_DRAIN_MS 5000         /* shutdown: longest wait for the loop to drain */

struct node_config {
	char state_dir[NODE_PATH_BYTES];
	char brokers[1024];        /* comma-separated broker endpoints */
	char broker_keys[1024];    /* their CURVE keys (Z85 or files), same order */
	char ca_key[512];          /* the site CA key (hex or a file) */
	char token[256];           /* enrolment token */
	char group[64];
	int64_t data_port;         /* data-plane TCP port */
	int64_t checkpoint_records;
	int64_t commit_window_us;
	int64_t shutdown_deadline_ms;
	char log_level[16];
	bool syslog;
	char site[64], chassis[64], slot[32]; /* failure domain; empty: the board's */
	char interface[32];                   /* for slice addresses; empty: the board's */
	uint64_t drive_size;                  /* a drive file created now; 0: the board's */
	/* data-plane limits (node_dp_opts) */
	int64_t max_conns, max_unauth_conns, max_unauth_per_addr, max_conns_per_key, max_inflight;
	uint64_t put_budget, progress_bytes;
	int64_t handshake_timeout_ms, idle_timeout_ms, progress_interval_ms;
	/* GET answers (node_dp_opts) */
	uint64_t response_budget, response_conn_share, response_piece;
	int64_t send_timeout_ms;
	/* replication (node_repl_opts) */
	int64_t forward_timeout_ms, max_clock_skew_ms;
	/* hints and tombstones (node_req_opts) */
	int64_t hint_sync_timeout_ms, tombstone_gc_after_ms, hints_max;
	int64_t antientropy_interval_ms;
	/* background work: pacing, inbound repair, scrub (node_req_opts) */
	uint64_t repair_rate, scrub_budget;
	int64_t repair_duty, repair_inbound_max, scrub_interval_ms;
	/* large objects' chunk GC (node_req_opts) */
	int64_t chunk_gc_after_ms, chunk_gc_interval_ms;
	/* fleet updates (firmware/update) */
	uint64_t update_rate;
	int64_t update_inflight;
	/* fleet updates: the health gate of a slot on trial (firmware/update/gate.h) */
	int64_t update_gate_deadline_ms;
};

#define C(f) offsetof(struct node_config, f)
#define CS(f) sizeof(((struct node_config *)0)->f)
#define STR(x) #x
#define XSTR(x) STR(x) /* a default of dp.h as the table's text */

static const struct ovl_conf_item node_conf[] = {
	{ "state_dir", OVL_CONF_STR, "/var/lib/shelf/node", C(state_dir), CS(state_dir), 0, 0,
	  "identity, cached maps and certificate, and a file drive's default home" },
	{ "brokers", OVL_CONF_STR, "", C(brokers), CS(brokers), 0, 0,
	  "broker endpoints, comma-separated (tcp://[addr]:port)" },
	{ "broker_keys", OVL_CONF_STR, "", C(broker_keys), CS(broker_keys), 0, 0,
	  "the brokers' CURVE public keys, Z85 text or files (broker.pub), in the order of 'brokers'" },
	{ "ca_key", OVL_CONF_STR, "", C(ca_key), CS(ca_key), 0, 0,
	  "the site CA's public key: 64 hex digits or a file (ca.pub)" },
	{ "token", OVL_CONF_STR, "", C(token), CS(token), 0, 0,
	  "enrolment token (not needed for a pre-authorised key or a valid certificate)" },
	{ "group", OVL_CONF_STR, "", C(group), CS(group), 0, 0, "group name, for slice selectors" },
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
	{ "interface", OVL_CONF_STR, "", C(interface), CS(interface), 0, 0,
	  "interface for slice addresses (default: the board's)" },
	{ "drive_size", OVL_CONF_SIZE, "0", C(drive_size), 0, 0, INT64_MAX,
	  "size of a drive file created on first start (default 0: the board's drive_size)" },
	/* data-plane limits; the defaults fit the sim board's 32 MiB budget:
	 * PUTs 8 MiB, connections at most ~6 KiB each (3 MiB), the rest for
	 * the store, the receive ring and responses */
	{ "max_conns", OVL_CONF_INT, XSTR(NODE_DP_MAX_CONNS_DEFAULT), C(max_conns), 0, 2, 65536,
	  "data-plane connections open at once; a new one beyond: the oldest unauthenticated "
	  "is closed for it, or when all are authenticated it gets ERROR busy" },
	{ "max_unauth_conns", OVL_CONF_INT, XSTR(NODE_DP_MAX_UNAUTH_DEFAULT), C(max_unauth_conns), 0, 1, 65535,
	  "of them, not yet authenticated (below max_conns); at it the oldest is closed "
	  "(ERROR busy) for a new one" },
	{ "max_unauth_per_addr", OVL_CONF_INT, XSTR(NODE_DP_MAX_UNAUTH_PER_ADDR_DEFAULT), C(max_unauth_per_addr), 0, 1, 65535,
	  "not yet authenticated from one source address (at most max_unauth_conns); "
	  "one more gets ERROR busy" },
	{ "max_conns_per_key", OVL_CONF_INT, XSTR(NODE_DP_MAX_CONNS_PER_KEY_DEFAULT), C(max_conns_per_key), 0, 0, 65536,
	  "authenticated connections of one client key (0: no cap); one more: its first "
	  "request answered busy, then closed" },
	{ "max_inflight", OVL_CONF_INT, XSTR(NODE_DP_MAX_INFLIGHT_DEFAULT), C(max_inflight), 0, 1, 4096,
	  "requests in flight per connection; one more is answered busy" },
	{ "put_budget", OVL_CONF_SIZE, XSTR(NODE_DP_PUT_BUDGET_MIB_DEFAULT) "M", C(put_budget), 0, 1 << 20, 1LL << 32,
	  "PUT payload memory, all connections (small payloads whole, ~0.6 MiB per "
	  "streamed one); a PUT beyond it is answered busy" },
	{ "handshake_timeout", OVL_CONF_MS, XSTR(NODE_DP_HANDSHAKE_TIMEOUT_S_DEFAULT) "s", C(handshake_timeout_ms), 0, 100, 600000,
	  "from accept to the first authenticated request; then ERROR timeout (in HELLO) "
	  "and the close" },
	{ "idle_timeout", OVL_CONF_MS, XSTR(NODE_DP_IDLE_TIMEOUT_S_DEFAULT) "s", C(idle_timeout_ms), 0, 1000, 86400000,
	  "nothing received, no frame in progress and nothing to send: the close" },
	{ "progress_interval", OVL_CONF_MS, XSTR(NODE_DP_PROGRESS_INTERVAL_S_DEFAULT) "s", C(progress_interval_ms), 0, 100, 3600000,
	  "a frame being received must bring progress_bytes in every such interval" },
	{ "progress_bytes", OVL_CONF_SIZE, XSTR(NODE_DP_PROGRESS_KIB_DEFAULT) "K", C(progress_bytes), 0, 1, 64 << 20,
	  "the minimum progress; less: status (PUT) or ERROR (HELLO) timeout, the close, "
	  "nothing stored" },
	/* sized for the sim board's 32 MiB: 16 connections that stop reading
	 * mid-answer hold at most 16 x 2 pieces (8.3 MiB), and the rest serves
	 * others; a share takes a 1 MiB object whole, in one read and send */
	{ "response_budget", OVL_CONF_SIZE, "12M", C(response_budget), 0, 1 << 20, 1ll << 40,
	  "GET answer bytes the node holds in memory, all connections; a GET without room waits" },
	{ "response_conn_share", OVL_CONF_SIZE, "1152K", C(response_conn_share), 0, 128 << 10, 1ll << 40,
	  "GET answer bytes one connection may hold (at least response_piece + 72K); an answer whose read fits "
	  "what is free of it is read and sent whole; over it, the connection is not read until its sends drain" },
	{ "response_piece", OVL_CONF_SIZE, "256K", C(response_piece), 0, 64 << 10, 1 << 20,
	  "a GET too long to read whole is read from the drive in pieces of this size (a multiple of 64K), "
	  "at most two held per connection, as the socket drains" },
	{ "send_timeout", OVL_CONF_MS, "30s", C(send_timeout_ms), 0, 1000, 3600000,
	  "a connection whose sends make no progress this long is closed, and what it held freed" },
	/* replicated slices */
	{ "forward_timeout", OVL_CONF_MS, "2s", C(forward_timeout_ms), 0, 100, 600000,
	  "a replica a write is forwarded to that shows no progress this long (per hop after it) "
	  "counts as down: the write fails over it" },
	{ "max_clock_skew_ms", OVL_CONF_MS, "60s", C(max_clock_skew_ms), 0, 1, 86400000,
	  "a forwarded write whose version is further ahead of this node's clock is refused "
	  "(bad-request, version from the future)" },
	{ "hint_sync_timeout", OVL_CONF_MS, "10s", C(hint_sync_timeout_ms), 0, 100, 3600000,
	  "a node that starts (or was cut off from its broker) first takes back the hinted writes other "
	  "nodes hold for it, answering reads of replicated slices busy: at most this long once it reaches "
	  "its broker and no member reports hints for it" },
	{ "tombstone_gc_after", OVL_CONF_MS, "24h", C(tombstone_gc_after_ms), 0, 1000, 1ll << 40,
	  "a delete's tombstone is forgotten this long after the delete, once every home of the key holds it" },
	{ "hints_max", OVL_CONF_INT, "16384", C(hints_max), 0, 16, 1 << 22,
	  "hinted writes this node keeps for nodes that are down (about 100 bytes of memory each); "
	  "beyond that a write it would stand in for is refused (busy)" },
	{ "antientropy_interval", OVL_CONF_MS, "1h", C(antientropy_interval_ms), 0, 1000, 1ll << 40,
	  "each replicated slice is compared with its other members (digests, then the keys that "
	  "differ) and repaired this often, +-20 % jitter; at once when a member goes out or joins" },
	/* background work: hand-offs, repair copies, scrub */
	{ "repair_rate", OVL_CONF_SIZE, "64M", C(repair_rate), 0, 0, 1ll << 40,
	  "bytes per second every background hand-off together may move (hints and repair copies; "
	  "0: unlimited, else at least 64K); shelf repair --rate changes it at run time" },
	{ "repair_duty", OVL_CONF_INT, "100", C(repair_duty), 0, 1, 100,
	  "percent of each second in which background hand-offs and scrub may run" },
	{ "repair_inbound_max", OVL_CONF_INT, XSTR(NODE_REQ_REPAIR_INBOUND_MAX_DEFAULT), C(repair_inbound_max), 0, 1, 1024,
	  "repair copies this node receives at once; one more is answered busy (the sender backs off)" },
	{ "scrub_interval", OVL_CONF_MS, "24h", C(scrub_interval_ms), 0, 0, 1ll << 40,
	  "a scrub pass over the whole drive starts this often (±20 % jitter; 0: never); damaged "
	  "copies are fetched again from a replica" },
	{ "scrub_budget", OVL_CONF_SIZE, "4M", C(scrub_budget), 0, 64 << 10, 1ll << 30,
	  "bytes scrub verifies per tick (100 ms), only while the drive has no other work" },
	/* large objects: intents and their chunks */
	{ "chunk_gc_after", OVL_CONF_MS, "1h", C(chunk_gc_after_ms), 0, 1000, 1ll << 40,
	  "a large object's write intent is settled this long after it was written: its chunks "
	  "are deleted unless the object's manifest names them (a killed PUT, an overwrite, a delete)" },
	{ "chunk_gc_interval", OVL_CONF_MS, "10m", C(chunk_gc_interval_ms), 0, 1000, 1ll << 40,
	  "how often (+-20 % jitter) a pass over this node's intents starts; paced like other "
	  "background work" },
	/* fleet updates */
	{ "update_rate", OVL_CONF_SIZE, "32M", C(update_rate), 0, 0, 1ll << 40,
	  "bytes per second an update's blocks are fetched at, at most (0: unlimited); the "
	  "rollout's own rate, when lower, wins" },
	{ "update_inflight", OVL_CONF_INT, XSTR(NODE_UPDATE_INFLIGHT_DEFAULT), C(update_inflight), 0, 1,
	  NODE_UPDATE_INFLIGHT_MAX,
	  "an update's blocks fetched at once (each one piece of at most 256K at a time)" },
	{ "update_gate_deadline", OVL_CONF_MS, "120s", C(update_gate_deadline_ms), 0, 1000, 86400000,
	  "a node started by shelf-boot in a slot on trial must register, pass a sample scrub and "
	  "answer its own data-plane self-check within this, or it exits 1 (and the slot counts a "
	  "failed attempt)" },
	OVL_CONF_END
};

/* The daemon's one context. */
struct node_ctx {
	struct node_config cfg;
	struct ovl_board board;
	struct node_loop *loop;
	struct node_store *store;
	struct node_req *req;          /* the request layer over the store */
	struct node_repl *repl;        /* replication: forwards to the other nodes */
	struct node_update *update;    /* the update agent (with brokers only) */
	bool update_time;              /* registered once: trusted time for updates */
	bool restart;                  /* the agent asked for a restart into its new slot */
	int space_state;           /* last logged: 0 ok, 1 nearly full, 2 full */
	struct ovl_id *id;
	char drive_path[NODE_PATH_BYTES];
	int sigfd;
	struct signalfd_siginfo sig;
	struct node_loop_ev sig_ev;
	bool sig_armed;
	void *zctx;
	node_ctl_t *ctl;
	ovl_keyring_t *kr;
	struct ovl_peers *peers;
	struct node_dp *dp;
	struct ovl_nl *nl;
	struct in6_addr addrs[NODE_ADDRS_MAX];
	unsigned naddrs;
	uint64_t crl_version;
	char last_event[512];
	unsigned ticks;
	bool alone;                    /* no broker has answered lately (hints_tick()) */
	bool alone_before;             /* hints_tick() ran before */
	bool hint_syncing;
	uint64_t hint_sync_timeouts;
	struct node_loop_ev tick_ev;   /* periodic housekeeping */
	struct __kernel_timespec tick;
	bool tick_armed, tick_due;
	bool stop;
	int stop_signal;
	struct node_gate *gate;        /* the health gate while the slot is on trial */
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
	fprintf(f, "\nexit codes: 0 clean shutdown, 1 runtime failure, 2 configuration, 3 drive,\n"
		   "            75 restart into the slot an update installed (for shelf-boot)\n");
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

#define NODE_FDS_SPARE 128 /* descriptors beyond the connections: drive, sockets, files */

/* The data-plane limits that depend on each other, and enough file
 * descriptors for max_conns (the soft limit is raised up to the hard one). */
static int limits_check(const struct node_config *c, char *err, size_t errlen)
{
	struct rlimit rl;
	rlim_t need = (rlim_t)c->max_conns * 2 + NODE_FDS_SPARE; /* closing ones linger */

	if (c->max_unauth_conns >= c->max_conns) {
		snprintf(err, errlen, "config key 'max_unauth_conns': %" PRId64 " must be below "
			 "max_conns (%" PRId64 ")", c->max_unauth_conns, c->max_conns);
		return -EINVAL;
	}
	if (c->max_unauth_per_addr > c->max_unauth_conns) {
		snprintf(err, errlen, "config key 'max_unauth_per_addr': %" PRId64 " is above "
			 "max_unauth_conns (%" PRId64 ")", c->max_unauth_per_addr, c->max_unauth_conns);
		return -EINVAL;
	}
	if (c->repair_rate && c->repair_rate < NODE_REQ_REPAIR_RATE_MIN) {
		snprintf(err, errlen, "config key 'repair_rate': %" PRIu64 " bytes/s is below the "
			 "minimum of %u (0: unlimited)", c->repair_rate, NODE_REQ_REPAIR_RATE_MIN);
		return -EINVAL;
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 0;
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
		rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > need ? need : rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		if (rl.rlim_cur < (rlim_t)c->max_conns + NODE_FDS_SPARE) {
			snprintf(err, errlen, "config key 'max_conns': %" PRId64 " connections need %llu "
				 "file descriptors; the limit is %llu (ulimit -n)", c->max_conns,
				 (unsigned long long)((rlim_t)c->max_conns + NODE_FDS_SPARE),
				 (unsigned long long)rl.rlim_cur);
			return -EINVAL;
		}
	}
	return 0;
}

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
	n->tick.tv_sec = 0;
	n->tick.tv_nsec = NODE_TICK_MS * 1000000L;
	io_uring_prep_timeout(sqe, &n->tick, 0, 0);
	n->tick_armed = true;
	return 0;
}

/* Cancel an armed request and wait for its completion (main owns the
 * loop: it alone runs it). */
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
	if (limits_check(&n->cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "shelf-node: %s\n", err);
		return NODE_EXIT_CONFIG;
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
	if (n->cfg.interface[0])
		snprintf(n->board.interface, sizeof(n->board.interface), "%s", n->cfg.interface);
	if (n->cfg.drive_size) {
		if (n->cfg.drive_size < 4 * n->board.segment_size) {
			fprintf(stderr, "shelf-node: config key 'drive_size': %" PRIu64
				" bytes is less than 4 segments of board '%s' (%" PRIu64 " bytes)\n",
				n->cfg.drive_size, n->board.name, 4 * n->board.segment_size);
			return NODE_EXIT_CONFIG;
		}
		n->board.drive_size = n->cfg.drive_size;
	}
	if (n->cfg.response_piece % (64 << 10)) {
		fprintf(stderr, "shelf-node: config key 'response_piece': %" PRIu64
			" bytes is not a multiple of 64K\n", n->cfg.response_piece);
		return NODE_EXIT_CONFIG;
	}
	if (n->cfg.response_conn_share < n->cfg.response_piece + NODE_DP_PIECE_SLACK_BYTES) {
		fprintf(stderr, "shelf-node: config key 'response_conn_share': %" PRIu64
			" bytes is less than response_piece and 72K (%" PRIu64 " bytes)\n",
			n->cfg.response_conn_share, n->cfg.response_piece + NODE_DP_PIECE_SLACK_BYTES);
		return NODE_EXIT_CONFIG;
	}
	if (n->cfg.response_budget < n->cfg.response_conn_share) {
		fprintf(stderr, "shelf-node: config key 'response_budget': %" PRIu64
			" bytes is less than response_conn_share (%" PRIu64 " bytes)\n",
			n->cfg.response_budget, n->cfg.response_conn_share);
		return NODE_EXIT_CONFIG;
	}
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
	o.page_cache_reads = n->board.page_cache_reads;
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
	if (st.upgraded_from)
		ovl_info("drive '%s': upgraded from store format version %" PRIu32 " (older builds now refuse it)",
			 n->drive_path, st.upgraded_from);
	if (st.checkpoint_fallback)
		ovl_warn("drive '%s': the newest checkpoint is damaged; recovery started from the one before it",
			 n->drive_path);
	if (st.checkpoint_repaired)
		ovl_warn("drive '%s': a damaged or stale checkpoint pointer was rewritten, or a damaged checkpoint replaced",
			 n->drive_path);
	ovl_info("drive '%s': %s%" PRIu64 " objects, %" PRIu64 " of %" PRIu64 " segments free, %" PRIu64 " records replayed",
		 n->drive_path, created ? "created and formatted, " : "", st.objects,
		 st.segments_free, st.segments, st.recovered_records);
	if (st.damaged_objects || st.damaged_unknown)
		ovl_warn("drive '%s': %" PRIu64 " objects are damaged (their newest version failed its checks; they answer checksum-mismatch until rewritten or deleted); %" PRIu64 " damaged records of unknown key found at this start; %" PRIu64 " damaged records over the drive's life",
			 n->drive_path, st.damaged_objects, st.damaged_unknown, st.damaged_records);
	if (st.frontier_lost)
		ovl_warn("drive '%s': both copies of the flush frontier are damaged: a failed record after the checkpoint was taken for the end of the log",
			 n->drive_path);
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

/* A key given inline, or the first line of the file it names. */
static int key_text(const char *v, char *out, size_t len)
{
	FILE *f = NULL;

	if (!strchr(v, '/')) {
		snprintf(out, len, "%s", v);
		return 0;
	}
	f = fopen(v, "r");
	if (!f)
		return -errno;
	if (!fgets(out, (int)len, f))
		out[0] = '\0';
	fclose(f);
	out[strcspn(out, "\r\n \t")] = '\0';
	return 0;
}

/* ---- the update agent's view of the node ---- */

static int upd_report(void *arg, uint8_t *buf, size_t cap)
{
	struct node_ctx *n = arg;

	return n->update ? node_update_report(n->update, buf, cap) : 0;
}

static void upd_ok(void *arg, const uint8_t *buf, size_t len, const uint8_t *broker_pk)
{
	struct node_ctx *n = arg;

	node_update_heartbeat_ok(n->update, buf, len, broker_pk);
}

static uint64_t upd_now(void *arg)
{
	struct node_ctx *n = arg;

	if (n->ctl && node_ctl_registered(n->ctl))
		n->update_time = true;
	return n->update_time ? node_ctl_now(n->ctl) : 0;
}

static const struct ovl_crl *upd_crl(void *arg)
{
	struct node_ctx *n = arg;

	return n->ctl ? node_ctl_crl(n->ctl) : NULL;
}

static uint64_t upd_degraded(void *arg)
{
	struct node_ctx *n = arg;

	return n->req ? node_req_degraded(n->req) : 0;
}

static const uint8_t *upd_broker_key(void *arg, unsigned i)
{
	struct node_ctx *n = arg;

	return n->ctl ? node_ctl_broker_key(n->ctl, i) : NULL;
}

static unsigned upd_counters(void *arg, struct ovl_wire_counter *c, unsigned max)
{
	struct node_ctx *n = arg;

	return node_update_counters(n->update, c, max);
}

/* The update agent: its directory is the boot state's (shelf-boot says
 * where, and which slot and version run), else the state directory. */
static int update_start(struct node_ctx *n, const uint8_t ca_pk[OVL_ID_BYTES])
{
	struct node_update_opts o = { 0 };
	const char *dir = getenv("SHELF_BOOT_STATE"), *slot = getenv("SHELF_SLOT");
	char err[512];

	o.dir = dir && *dir ? dir : n->cfg.state_dir;
	o.board = n->board.name;
	o.node_id = n->id->sign_pk;
	memcpy(o.ca_pk, ca_pk, OVL_ID_BYTES);
	o.slot = slot && (strcmp(slot, "a") == 0 || strcmp(slot, "b") == 0) ? slot[0] : 0;
	o.running = node_running_version();
	o.rate = n->cfg.update_rate;
	o.inflight = (unsigned)n->cfg.update_inflight;
	o.now_s = upd_now;
	o.crl = upd_crl;
	o.degraded = upd_degraded;
	o.broker_key = upd_broker_key;
	o.arg = n;
	if (node_update_new(&n->update, &o, err, sizeof(err)) < 0) {
		ovl_err("update: %s", err);
		return -EINVAL;
	}
	ovl_info("update: running version %s%s%s, updates in '%s/update'", o.running,
		 o.slot ? " in slot " : " (not started by shelf-boot)", o.slot ? slot : "", o.dir);
	return 0;
}

/* What the update agent has to say; it never logs. */
static void update_events_log(struct node_ctx *n)
{
	char text[512];
	int level;

	while (node_update_event_next(n->update, &level, text, sizeof(text))) {
		if (level >= NODE_UPDATE_EV_ERROR)
			ovl_err("%s", text);
		else if (level == NODE_UPDATE_EV_WARN)
			ovl_warn("%s", text);
		else
			ovl_info("%s", text);
	}
}

static int ctl_start(struct node_ctx *n, uint64_t capacity)
{
	struct node_ctl_cfg cfg;
	char err[512], list[1024], keys[1024], text[256], *save1 = NULL, *save2 = NULL;
	char *ep, *k;

	memset(&cfg, 0, sizeof(cfg));
	if (!n->cfg.brokers[0])
		return 0;
	if (!n->cfg.ca_key[0] || key_text(n->cfg.ca_key, text, sizeof(text)) < 0 ||
	    ovl_nodeid_parse(text, cfg.ca_pk) < 0) {
		ovl_err("config key 'ca_key': the site CA key (64 hex digits or a file) is needed with brokers");
		return -EINVAL;
	}
	snprintf(list, sizeof(list), "%s", n->cfg.brokers);
	snprintf(keys, sizeof(keys), "%s", n->cfg.broker_keys);
	for (ep = strtok_r(list, ",", &save1), k = strtok_r(keys, ",", &save2); ep;
	     ep = strtok_r(NULL, ",", &save1), k = strtok_r(NULL, ",", &save2)) {
		struct node_ctl_broker *b = &cfg.brokers[cfg.n_brokers];

		if (cfg.n_brokers == NODE_CTL_BROKERS_MAX) {
			ovl_err("config key 'brokers': more than %d brokers", NODE_CTL_BROKERS_MAX);
			return -EINVAL;
		}
		if (!k || key_text(k, text, sizeof(text)) < 0 || ovl_key_z85_decode(text, b->server_key) < 0) {
			ovl_err("config key 'broker_keys': no valid CURVE key for broker '%s'", ep);
			return -EINVAL;
		}
		snprintf(b->endpoint, sizeof(b->endpoint), "%s", ep);
		cfg.n_brokers++;
	}
	cfg.id = n->id;
	cfg.state_dir = n->cfg.state_dir;
	snprintf(cfg.board, sizeof(cfg.board), "%s", n->board.name);
	snprintf(cfg.group, sizeof(cfg.group), "%s", n->cfg.group);
	snprintf(cfg.token, sizeof(cfg.token), "%s", n->cfg.token);
	snprintf(cfg.domain.site, sizeof(cfg.domain.site), "%s", n->board.site);
	snprintf(cfg.domain.chassis, sizeof(cfg.domain.chassis), "%s", n->board.chassis);
	snprintf(cfg.domain.slot, sizeof(cfg.domain.slot), "%s", n->board.slot);
	cfg.capacity = capacity;
	cfg.port = (uint16_t)n->cfg.data_port;
	cfg.fleet_report = upd_report;
	cfg.fleet_ok = upd_ok;
	cfg.fleet_arg = n;
	if (update_start(n, cfg.ca_pk) < 0)
		return -EINVAL;
	n->zctx = zmq_ctx_new();
	if (!n->zctx || node_ctl_new(&n->ctl, n->zctx, &cfg, err, sizeof(err)) < 0) {
		ovl_err("control plane: %s", n->zctx ? err : "cannot create a zeromq context");
		return -EINVAL;
	}
	n->kr = ovl_keyring_new();
	if (!n->kr || ovl_peers_new(&n->peers, cfg.ca_pk, n->kr) < 0)
		return -ENOMEM;
	ovl_info("control plane: %u broker(s), state cached in '%s'", cfg.n_brokers, n->cfg.state_dir);
	return 0;
}

static uint64_t trusted_now(void *arg)
{
	return node_ctl_now(arg);
}

/* Start the data plane once the node holds a certificate. */
/* A data-plane MAP: the signed map the control plane holds. */
static int dp_map_get(void *arg, const char *slice, uint8_t **buf, size_t *len)
{
	return node_ctl_map_encode(arg, slice, buf, len);
}

static const struct node_ctl_map *repl_map_find(void *arg, const char *slice)
{
	struct node_ctx *n = arg;

	return n->ctl ? node_ctl_map_find(n->ctl, slice) : NULL;
}

static const struct node_ctl_map *repl_map_at(void *arg, unsigned i)
{
	struct node_ctx *n = arg;

	return n->ctl && i < node_ctl_map_count(n->ctl) ? node_ctl_map_at(n->ctl, i) : NULL;
}

static const uint8_t *repl_cert_get(void *arg, size_t *len)
{
	struct node_ctx *n = arg;

	return n->ctl ? node_ctl_cert(n->ctl, len) : NULL;
}

static void repl_map_stale(void *arg, const char *slice)
{
	struct node_ctx *n = arg;

	(void)slice;
	if (n->ctl)
		node_ctl_refresh(n->ctl);
}

static uint64_t repl_now_s(void *arg)
{
	struct node_ctx *n = arg;

	return node_ctl_now(n->ctl);
}

/* Versions' clock, unix ms: the system clock while it agrees with the
 * trusted (broker-signed) time within a second; the trusted time when it
 * does not (a board without a real-time clock). */
static uint64_t repl_now_ms(void *arg)
{
	struct node_ctx *n = arg;
	struct timespec ts;
	uint64_t sys, trusted = node_ctl_now(n->ctl) * 1000;

	clock_gettime(CLOCK_REALTIME, &ts);
	sys = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	if (!trusted || (sys + 1000 >= trusted && sys <= trusted + 2000))
		return sys;
	return trusted;
}

static void dp_start(struct node_ctx *n, const uint8_t *cert, size_t len)
{
	struct node_dp_opts o = { 0 };
	struct sockaddr_in6 any = { .sin6_family = AF_INET6 };
	char err[512];

	if (!n->repl && n->ctl) {
		struct node_repl_opts po = { 0 };

		po.loop = n->loop;
		po.id = n->id;
		po.peers = n->peers;
		po.map_find = repl_map_find;
		po.map_at = repl_map_at;
		po.cert_get = repl_cert_get;
		po.now_s = repl_now_s;
		po.now_ms = repl_now_ms;
		po.map_stale = repl_map_stale;
		po.arg = n;
		po.forward_timeout_ms = (uint64_t)n->cfg.forward_timeout_ms;
		po.max_clock_skew_ms = (uint64_t)n->cfg.max_clock_skew_ms;
		if (node_repl_new(&n->repl, &po, err, sizeof(err)) < 0) {
			ovl_err("data plane: %s", err);
			return;
		}
		node_update_repl_set(n->update, n->repl);
	}
	if (!n->req) {
		struct node_req_opts ro = { .loop = n->loop, .store = n->store, .repl = n->repl };
		struct node_req_hint_stats hst;

		ro.hint_sync_timeout_ms = (uint64_t)n->cfg.hint_sync_timeout_ms;
		ro.tombstone_gc_after_ms = (uint64_t)n->cfg.tombstone_gc_after_ms;
		ro.hints_max = (unsigned)n->cfg.hints_max;
		ro.antientropy_interval_ms = (uint64_t)n->cfg.antientropy_interval_ms;
		ro.repair_rate = n->cfg.repair_rate ? (int64_t)n->cfg.repair_rate : -1;
		ro.repair_duty = (unsigned)n->cfg.repair_duty;
		ro.repair_inbound_max = (unsigned)n->cfg.repair_inbound_max;
		ro.scrub_interval_ms = n->cfg.scrub_interval_ms ? (uint64_t)n->cfg.scrub_interval_ms
							       : UINT64_MAX;
		ro.scrub_budget = n->cfg.scrub_budget;
		ro.chunk_gc_after_ms = (uint64_t)n->cfg.chunk_gc_after_ms;
		ro.chunk_gc_interval_ms = (uint64_t)n->cfg.chunk_gc_interval_ms;
		ro.counters = upd_counters;
		ro.counters_arg = n;
		if (node_req_new(&n->req, &ro, err, sizeof(err)) < 0) {
			ovl_err("data plane: %s", err);
			return;
		}
		if (node_req_errmsg(n->req) && node_req_errmsg(n->req)[0])
			ovl_warn("hints: %s", node_req_errmsg(n->req));
		node_req_hint_stats(n->req, &hst);
		if (hst.waiting)
			ovl_info("hints: %" PRIu64 " hinted writes wait for their homes", hst.waiting);
	}
	o.loop = n->loop;
	o.req = n->req;
	o.id = n->id;
	o.cert = cert;
	o.cert_len = len;
	o.peers = n->peers;
	o.now_s = trusted_now;
	o.now_arg = n->ctl;
	o.max_conns = (unsigned)n->cfg.max_conns;
	o.max_unauth = (unsigned)n->cfg.max_unauth_conns;
	o.max_unauth_per_addr = (unsigned)n->cfg.max_unauth_per_addr;
	o.max_conns_per_key = (unsigned)n->cfg.max_conns_per_key;
	o.max_inflight = (unsigned)n->cfg.max_inflight;
	/* PUT payloads up to 128 KiB are buffered whole; larger ones stream
	 * into the store through about 0.6 MiB each, whatever their size */
	o.max_payload_bytes = n->cfg.put_budget;
	o.handshake_timeout_ms = (uint64_t)n->cfg.handshake_timeout_ms;
	o.idle_timeout_ms = (uint64_t)n->cfg.idle_timeout_ms;
	o.progress_interval_ms = (uint64_t)n->cfg.progress_interval_ms;
	o.progress_min_bytes = n->cfg.progress_bytes;
	o.resp_budget_bytes = n->cfg.response_budget;
	o.resp_conn_bytes = n->cfg.response_conn_share;
	o.resp_piece_bytes = (size_t)n->cfg.response_piece;
	o.send_timeout_ms = (uint64_t)n->cfg.send_timeout_ms;
	o.map_get = dp_map_get;
	o.map_arg = n->ctl;
	any.sin6_addr = in6addr_any;
	any.sin6_port = htons((uint16_t)n->cfg.data_port);
	if (node_dp_new(&n->dp, &o, err, sizeof(err)) < 0 ||
	    node_dp_listen(n->dp, &any, err, sizeof(err)) < 0) {
		ovl_err("data plane: %s", err);
		node_dp_destroy(&n->dp);
		return;
	}
	ovl_info("data plane: listening on port %" PRId64, n->cfg.data_port);
}

static void addr_install(struct node_ctx *n, const struct in6_addr *a, const char *slice)
{
	char err[512], text[INET6_ADDRSTRLEN];
	int ret;

	for (unsigned i = 0; i < n->naddrs; i++)
		if (memcmp(&n->addrs[i], a, sizeof(*a)) == 0)
			return;
	if (n->naddrs == NODE_ADDRS_MAX)
		return;
	if (!n->nl && ovl_nl_new(&n->nl, err, sizeof(err)) < 0) {
		ovl_err("netlink: %s", err);
		return;
	}
	ret = ovl_nl_addr_add(n->nl, n->board.interface, a, 64, err, sizeof(err));
	inet_ntop(AF_INET6, a, text, sizeof(text));
	if (ret < 0 && ret != -EEXIST) {
		ovl_err("slice '%s': %s", slice, err);
		return;
	}
	n->addrs[n->naddrs++] = *a;
	ovl_info("slice '%s': address %s on '%s'", slice, text, n->board.interface);
}

/* Apply what the control plane learned: certificate, trust, maps. */
static void ctl_apply(struct node_ctx *n)
{
	const uint8_t *cert, *bc;
	const struct ovl_crl *crl;
	size_t len;
	char err[512];

	for (unsigned i = 0; (bc = node_ctl_broker_cert(n->ctl, i, &len)) != NULL; i++)
		ovl_peers_add_broker(n->peers, bc, len, node_ctl_now(n->ctl), err, sizeof(err));
	crl = node_ctl_crl(n->ctl);
	if (crl && ovl_crl_version(crl) > n->crl_version) {
		const uint8_t *enc = ovl_crl_encoded(crl, &len);
		int removed = ovl_peers_update_crl(n->peers, enc, len, err, sizeof(err));

		n->crl_version = ovl_crl_version(crl);
		ovl_info("revocation list version %" PRIu64 ": %d peer key(s) removed", n->crl_version,
			 removed > 0 ? removed : 0);
	}
	cert = node_ctl_cert(n->ctl, &len);
	if (cert && !n->dp)
		dp_start(n, cert, len);
	else if (cert && n->dp)
		node_dp_cert_set(n->dp, cert, len);
	for (unsigned i = 0; n->dp && i < node_ctl_map_count(n->ctl); i++) {
		const struct node_ctl_map *m = node_ctl_map_at(n->ctl, i);

		for (uint32_t j = 0; j < m->n_members; j++) {
			struct in6_addr a;

			if (memcmp(m->members[j].id, n->id->sign_pk, OVL_ID_BYTES) != 0)
				continue;
			memcpy(&a, m->members[j].addr, sizeof(a));
			addr_install(n, &a, m->name);
			node_dp_slice_set(n->dp, m->name, m->epoch, m->encrypt);
		}
	}
}

/* Hints: hand-offs, the sync and tombstone GC. A node that no broker has
 * answered for 2 heartbeat intervals may be cut off from the network,
 * and writes made meanwhile go to substitutes (a head gives up on a
 * replica after forward_timeout, 2 s by default): it starts taking its
 * hints back at once, reads of replicated slices busy, and goes on while
 * it reaches too few of its peers, so that it serves no stale copy when
 * its links come back. A node whose broker alone is gone reaches its
 * peers, hears that none holds a hint for it and serves again within one
 * round. */
static void hints_tick(struct node_ctx *n)
{
	uint64_t now = ovl_mono_ms();
	bool reg = n->ctl && node_ctl_registered(n->ctl);
	uint64_t quiet = n->ctl ? node_ctl_quiet_ms(n->ctl, now) : 0;
	uint64_t limit = n->ctl ? (uint64_t)node_ctl_heartbeat_ms(n->ctl) * 2 : 0;
	bool alone = n->ctl && (!reg || quiet > limit);
	struct node_req_hint_stats st;

	/* at start the node takes its hints back if its drive holds objects
	 * (node_req_new()); afterwards, each time it finds itself alone */
	if (alone && !n->alone && n->alone_before) {
		ovl_info("hints: no broker answered for %" PRIu64 " ms: this node may be cut off; taking back the hinted writes before serving reads",
			 quiet == UINT64_MAX ? limit : quiet);
		node_req_hint_sync(n->req);
	}
	n->alone = alone;
	n->alone_before = true;
	node_req_connected(n->req, !alone);
	node_req_tick(n->req, now);
	node_req_hint_stats(n->req, &st);
	if (st.syncing != n->hint_syncing) {
		if (st.syncing)
			ovl_info("hints: taking back the hinted writes other nodes hold for this one; reads of replicated slices answer busy meanwhile");
		else if (st.sync_timeouts > n->hint_sync_timeouts)
			ovl_warn("hints: the hinted writes were not all taken back within hint_sync_timeout; serving reads");
		else
			ovl_info("hints: no member reached holds a hint for this node; serving reads");
		n->hint_syncing = st.syncing;
		n->hint_sync_timeouts = st.sync_timeouts;
	}
}

/* What the request layer has to say (repair, scrub): it never logs. */
static void req_events_log(struct node_ctx *n)
{
	char text[OVL_WIRE_TEXT_SIZE];
	int level;

	while (node_req_event_next(n->req, &level, text, sizeof(text))) {
		if (level >= NODE_REQ_EV_ERROR)
			ovl_err("%s", text);
		else if (level == NODE_REQ_EV_WARN)
			ovl_warn("%s", text);
		else if (level == NODE_REQ_EV_INFO)
			ovl_info("%s", text);
		else
			ovl_debug("%s", text);
	}
}

static void ctl_tick(struct node_ctx *n)
{
	const char *ev;
	int ret;

	if (!n->ctl)
		return;
	ret = node_ctl_poll(n->ctl, 0);
	ev = node_ctl_last_event(n->ctl);
	if (ev && *ev && strcmp(ev, n->last_event) != 0) {
		ovl_info("control plane: %s", ev);
		snprintf(n->last_event, sizeof(n->last_event), "%s", ev);
	}
	if (ret < 0)
		ovl_err("control plane: %s", strerror(-ret));
	if (ret > 0 || (!n->dp && node_ctl_cert(n->ctl, &(size_t){ 0 })))
		ctl_apply(n);
}

/* The health gate of a slot on trial (firmware/update/gate.h): one step
 * per tick; false when it failed (the node exits 1). */
static bool gate_tick(struct node_ctx *n)
{
	struct node_gate_env e = { .store = n->store, .id = n->id, .peers = n->peers };
	char msg[NODE_GATE_MSG_BYTES];
	int ret;

	if (n->ctl) {
		e.registered = node_ctl_registered(n->ctl);
		e.now_s = node_ctl_now(n->ctl);
		e.cert = n->dp ? node_ctl_cert(n->ctl, &e.cert_len) : NULL;
		/* a slice whose address this node installed */
		for (unsigned i = 0; e.cert && !e.slice && i < node_ctl_map_count(n->ctl); i++) {
			const struct node_ctl_map *m = node_ctl_map_at(n->ctl, i);

			for (uint32_t j = 0; !e.slice && j < m->n_members; j++)
				for (unsigned k = 0; k < n->naddrs; k++)
					if (!memcmp(m->members[j].id, n->id->sign_pk, OVL_ID_BYTES) &&
					    !memcmp(m->members[j].addr, &n->addrs[k], sizeof(n->addrs[k]))) {
						e.slice = m->name;
						e.epoch = m->epoch;
						e.addr = n->addrs[k];
						break;
					}
		}
	}
	ret = node_gate_step(n->gate, &e, ovl_mono_ms(), msg, sizeof(msg));
	if (ret == NODE_GATE_PENDING)
		return true;
	if (ret == NODE_GATE_PASSED)
		ovl_info("%s", msg);
	else
		ovl_err("%s", msg);
	node_gate_destroy(&n->gate);
	return ret == NODE_GATE_PASSED;
}

static void gate_start(struct node_ctx *n)
{
	char slot = 0, dir[1024], err[512];
	struct node_gate_opts o = { .loop = n->loop, .data_port = (uint16_t)n->cfg.data_port };
	int ret = node_gate_needed(&slot, dir, sizeof(dir), err, sizeof(err));

	if (getenv("SHELF_SLOT"))
		ovl_info("slot %s, version %s (started by shelf-boot)", getenv("SHELF_SLOT"),
			 node_running_version());
	if (ret < 0)
		ovl_err("health gate: %s", err);
	if (ret <= 0)
		return;
	o.boot_dir = dir;
	o.slot = slot;
	o.deadline_ms = (uint64_t)n->cfg.update_gate_deadline_ms;
	if (node_gate_new(&n->gate, &o, err, sizeof(err)) < 0) {
		ovl_err("%s", err);
		return;
	}
	ovl_info("slot %c is on trial: health gate within %" PRId64 " ms", slot,
		 n->cfg.update_gate_deadline_ms);
}

/*
 * Shutting down, as the loop's owner: stop the data plane (its closes and
 * cancellations are queued on the loop), then run the loop until nothing
 * but the tick is in flight and the store is idle, or NODE_DRAIN_MS
 * passed; the modules are destroyed after this. No module runs the loop
 * from its destroy. true when drained.
 */
static bool drain(struct node_ctx *n)
{
	uint64_t end = ovl_mono_ms() + NODE_DRAIN_MS;

	node_dp_stop(n->dp);
	if (n->req)
		node_req_stop(n->req); /* no more hand-offs */
	node_repl_stop(n->repl); /* its connections to other nodes close */
	disarm(n, &n->sig_ev, &n->sig_armed);
	for (;;) {
		unsigned tick = n->tick_armed ? 1 : 0;

		if (node_loop_inflight(n->loop) <= tick && (!n->store || node_store_idle(n->store)))
			return true;
		if (ovl_mono_ms() >= end)
			return false;
		/* the tick bounds each wait, so the deadline is seen */
		if (!n->tick_armed && arm_tick(n) < 0)
			return false;
		if (node_loop_run(n->loop, true) < 0)
			return false;
	}
}

static void shutdown_net(struct node_ctx *n)
{
	char err[512];

	node_dp_destroy(&n->dp);
	for (unsigned i = 0; n->nl && i < n->naddrs; i++)
		ovl_nl_addr_remove(n->nl, n->board.interface, &n->addrs[i], 64, err, sizeof(err));
	if (n->naddrs)
		ovl_info("removed %u slice address(es)", n->naddrs);
	ovl_nl_destroy(&n->nl);
	node_ctl_destroy(&n->ctl);
	ovl_peers_destroy(&n->peers);
	ovl_keyring_destroy(&n->kr);
	if (n->zctx)
		zmq_ctx_term(n->zctx);
	n->zctx = NULL;
}

int main(int argc, char **argv)
{
	struct node_ctx n;
	bool format = false, check = false, created = false, drained;
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
	{
		struct node_store_stats st;

		node_store_stats(n.store, &st);
		if (ctl_start(&n, st.capacity_bytes) < 0) {
			code = NODE_EXIT_CONFIG;
			goto out;
		}
	}
	if (!n.cfg.brokers[0])
		ovl_warn("no brokers configured: nothing to register with");
	ovl_info("ready: node %s, drive '%s', rss %ld KiB of %" PRIu64 " KiB budget", fp,
		 n.drive_path, rss_bytes() / 1024, n.board.memory_budget / 1024);
	gate_start(&n);
	arm_tick(&n);
	while (!n.stop) {
		struct node_store_stats st;

		/* modules' work runs from the loop's before-sleep hooks */
		ret = node_loop_run(n.loop, true);
		if (ret < 0) {
			ovl_err("event loop failed: %s", strerror(-ret));
			code = NODE_EXIT_RUNTIME;
			break;
		}
		if (n.update)
			node_update_poll(n.update, ovl_mono_ms());
		if (!n.tick_due)
			continue;
		n.tick_due = false;
		arm_tick(&n);
		ctl_tick(&n);
		if (n.gate && !gate_tick(&n)) {
			/* stop the way a signal does (the signalfd read in flight
			 * completes), then exit 1: the slot failed its trial */
			code = NODE_EXIT_RUNTIME;
			kill(getpid(), SIGTERM);
		}
		if (n.dp)
			node_dp_tick(n.dp, (uint64_t)(ovl_mono_ms()));
		if (n.repl)
			node_repl_tick(n.repl, ovl_mono_ms());
		if (n.req) {
			hints_tick(&n);
			req_events_log(&n);
		}
		if (n.update) {
			node_update_tick(n.update, ovl_mono_ms());
			update_events_log(&n);
			if (!n.restart && node_update_exit_wanted(n.update)) {
				ovl_info("update: shutting down to restart into the new slot (exit %d)",
					 NODE_UPDATE_EXIT_RESTART);
				n.restart = true;
				/* the way a SIGTERM stops the node: its signalfd read
				 * completes, so nothing is left to cancel on the loop */
				kill(getpid(), SIGTERM);
			}
		}
		if (++n.ticks % (NODE_BUDGET_CHECK_MS / NODE_TICK_MS))
			continue;
		node_store_stats(n.store, &st);
		if (st.read_only)
			ovl_err("store is read-only (writes refused, reads served): %s",
				st.read_only_reason);
		else if ((st.full ? 2 : st.nearly_full ? 1 : 0) != n.space_state) {
			/* the store compacts by itself; say when its state changes */
			n.space_state = st.full ? 2 : st.nearly_full ? 1 : 0;
			ovl_log(n.space_state ? OVL_LOG_WARN : OVL_LOG_INFO,
				"space: %s, %" PRIu64 " MiB live of %" PRIu64 " MiB usable, %" PRIu64 " of %" PRIu64 " segments free (%" PRIu64 " reserved)",
				st.full ? "full: puts are refused" : st.nearly_full ? "nearly full" : "ok",
				st.live_bytes >> 20, st.usable_bytes >> 20, st.segments_free, st.segments,
				st.segments_reserved);
		}
		if (rss_bytes() > (long)n.board.memory_budget)
			ovl_warn("rss %ld KiB is over the board's budget of %" PRIu64 " KiB",
				 rss_bytes() / 1024, n.board.memory_budget / 1024);
	}
	if (n.stop)
		ovl_info("signal %d: shutting down (syncing and checkpointing the store)", n.stop_signal);
out:
	node_gate_destroy(&n.gate);
	drained = !n.loop || drain(&n);
	shutdown_net(&n);
	node_req_destroy(&n.req);
	node_repl_destroy(&n.repl);
	node_update_destroy(&n.update);
	if (n.store && !drained) {
		/* i/o still on the loop: the store cannot be closed under it;
		 * the next start recovers it as after a crash */
		ovl_err("shutdown: %u operations still in flight after %d ms; the store is left to recovery",
			node_loop_inflight(n.loop), NODE_DRAIN_MS);
		code = NODE_EXIT_RUNTIME;
	} else if (n.store) {
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
	if (n.restart && code == 0)
		code = NODE_UPDATE_EXIT_RESTART;
	return code;
}
