/*
 * shelf-bench broker: a real shelf-broker process and simulated nodes.
 *
 *   shelf-bench broker [--nodes N] [--procs P] [--dir DIR]
 *
 * The bench makes a site in a temporary directory (shelf-broker init, one
 * enrolment token with enough uses), runs `shelf-broker run` on
 * tcp://[::1]:PORT and creates slices with `shelf slice create`. Every
 * simulated node has its own identity (ovl_id_generate) and its own CURVE
 * DEALER connection, and sends a `register` built with ovl_msg and signed as
 * docs/PROTOCOL.md 6.3 says (proof of possession).
 *
 * The N nodes of the bulk phase are split across P forked processes (the
 * fleet), because a process holds about three fds per libzmq connection and
 * the hard RLIMIT_NOFILE here is 20,000; P defaults to the fewest processes
 * that fit, at least 2. The broker holds one fd per connection. Lines printed:
 *
 *   broker_register_10k   seconds for N nodes (default 10,000) to register and
 *                         receive register_ok, each on a new connection, at
 *                         most BENCH_BRK_WINDOW in flight per fleet process,
 *                         from the moment every process is ready (keys made,
 *                         registers signed) to the last one done. ref: the
 *                         same count of CURVE request/reply round trips, each
 *                         on a new connection, from the same fleet (same P,
 *                         same window) to an ovl_link echo server in a
 *                         process of its own.
 *   broker_bytes_per_conn_10k  (broker VmRSS after - before) / N, all N
 *                         connections held open: mostly libzmq's
 *                         per-connection buffers and CURVE state.
 *   broker_bytes_per_node_10k / _100k  the registry's own memory: the broker
 *                         core (brk_t) driven in this process through
 *                         brk_handle() with 10,000 (100,000) registrations of
 *                         distinct real keys, each node a member of a slice of
 *                         at most 100 (so 1,000 slices at 100,000, the most a
 *                         broker holds); heap in use (mallinfo2: uordblks +
 *                         hblkhd, so malloc's own headers count) after -
 *                         before, per node. The RSS growth is printed as a #
 *                         note next to it.
 *   broker_introduce_p99_ms / _1k_p99_ms  register one more node into a slice
 *                         of 24 (1,000) members that keep reading: from its
 *                         register to the last existing member holding the
 *                         map_delta naming it; p99 of BENCH_BRK_INTRO_SAMPLES.
 *   broker_delta_bytes_24 / _1k  size of that map_delta as a member receives it.
 *
 * The N registering nodes are not selected by any slice (a `--members all`
 * slice of 10,000 joins costs N^2/2 deltas and maps); the 24- and
 * 1,000-member slices are joined on purpose.
 *
 * Simulated nodes are watched through epoll on their sockets' ZMQ_FD, so a
 * process serving thousands of them does O(1) work per event, not a
 * zmq_poll over every socket.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <msgpack.h>
#include <sodium.h>
#include <zmq.h>

#include "bench.h"
#include "broker.h"
#include "overlay.h"

#define BENCH_BRK_NODES_DEFAULT 10000
#define BENCH_BRK_WINDOW 256             /* registrations in flight per fleet process */
#define BENCH_BRK_INTRO_SAMPLES 50
#define BENCH_BRK_FDS_PER_NODE 3u        /* TCP, socket mailbox, reaper share (seen) */
#define BENCH_BRK_FDS_SPARE 1024u        /* fds a fleet process keeps for itself */
#define BENCH_BRK_PROCS_MIN 2u           /* fleet processes at least (2 cores) */
#define BENCH_BRK_PHASE_TIMEOUT_S 600.0  /* one phase may take at most this */
#define BENCH_BRK_RECV_BYTES (16u << 20) /* largest map accepted */
#define BENCH_BRK_MSG_BYTES 1024         /* an encoded register fits */
#define BENCH_BRK_START_MS 10000         /* broker start-up wait */
#define BENCH_BRK_STOP_MS 5000           /* SIGTERM, then SIGKILL after this */
#define BENCH_BRK_EVENTS 512             /* epoll events per wait */
#define BENCH_BRK_SLICE_MEMBERS 100      /* registry bench: members per slice */
#define BENCH_BRK_REG_BIG 100000         /* registry bench: the large count */
#define BENCH_BRK_SITE "bench-site"
#define BENCH_BRK_REGISTER_DOMAIN "shelf-register-v1" /* PROTOCOL.md 6.3 */

enum sim_kind { SIM_BROKER, SIM_ECHO };

/* One simulated node (or echo client). */
struct sim {
	struct ovl_id *id;
	void *sock;
	uint8_t msg[BENCH_BRK_MSG_BYTES]; /* the encoded register (or echo payload) */
	size_t msg_len;
	bool sent, got_ok, got_map, done;
};

struct bench_brk {
	char dir[PATH_MAX];         /* site directory (temporary) */
	char bin_broker[PATH_MAX];
	char bin_shelf[PATH_MAX];
	char endpoint[128];
	char token[128];
	uint8_t server_key[OVL_KEY_BYTES];
	pid_t pid;
	void *zctx;                 /* NULL until the fleet phases are over (fork) */
	uint8_t *rbuf;              /* BENCH_BRK_RECV_BYTES */
	size_t last_delta_bytes;    /* size of the last map_delta seen */
};

/* ---- process and files ------------------------------------------------------ */

static void find_bin(const char *name, char *out, size_t cap)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n > 0) {
		char *slash;

		self[n] = '\0';
		slash = strrchr(self, '/');
		if (slash) {
			*slash = '\0';
			if (snprintf(out, cap, "%.*s/%s", PATH_MAX / 2, self, name) < (int)cap &&
			    access(out, X_OK) == 0)
				return;
		}
	}
	snprintf(out, cap, "build/%s", name);
}

static long rss_bytes(pid_t pid)
{
	char path[64], line[256];
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb < 0 ? -1 : kb * 1024;
}

static int free_port(void)
{
	struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	socklen_t al = sizeof(a);
	int fd = socket(AF_INET6, SOCK_STREAM, 0), port = -1;

	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &al) == 0)
		port = ntohs(a.sin6_port);
	close(fd);
	return port;
}

static int run_cmd(const char *cmd, char *out, size_t cap)
{
	char dummy[4096];
	int rc = bench_capture(cmd, out ? out : dummy, out ? cap : sizeof(dummy));

	if (rc < 0)
		fprintf(stderr, "bench broker: command failed: %s\n", cmd);
	return rc;
}

static int broker_start(struct bench_brk *b, unsigned uses)
{
	char cmd[3 * PATH_MAX], out[512], z85[64], log[PATH_MAX + 16];
	FILE *f = NULL;
	int port, rc;

	snprintf(cmd, sizeof(cmd), "'%s' init --dir '%s' --site %s", b->bin_broker, b->dir,
		 BENCH_BRK_SITE);
	if ((rc = run_cmd(cmd, out, sizeof(out))) < 0)
		return rc;
	snprintf(cmd, sizeof(cmd), "'%s' token --dir '%s' --uses %u --ttl 1h", b->bin_broker,
		 b->dir, uses);
	if ((rc = run_cmd(cmd, out, sizeof(out))) < 0)
		return rc;
	if (sscanf(out, "%127s", b->token) != 1)
		return -EINVAL;
	snprintf(cmd, sizeof(cmd), "%s/broker.pub", b->dir);
	f = fopen(cmd, "r");
	if (!f || fscanf(f, "%63s", z85) != 1 || ovl_key_z85_decode(z85, b->server_key) < 0) {
		fprintf(stderr, "bench broker: cannot read '%s'\n", cmd);
		if (f)
			fclose(f);
		return -EINVAL;
	}
	fclose(f);
	port = free_port();
	if (port < 0)
		return -EADDRNOTAVAIL;
	snprintf(b->endpoint, sizeof(b->endpoint), "tcp://[::1]:%d", port);
	snprintf(log, sizeof(log), "%s/broker.log", b->dir);
	b->pid = fork();
	if (b->pid < 0)
		return -errno;
	if (b->pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		/* never down or out during the run: the sims do not heartbeat */
		execl(b->bin_broker, b->bin_broker, "run", "--dir", b->dir, "--listen", b->endpoint,
		      "--set", "heartbeat_ms=3600000", "--set", "down_ms=3600000", "--set",
		      "grace_ms=7200000", "--set", "rate_burst=1000", "--log-level", "warn",
		      (char *)NULL);
		_exit(127);
	}
	return 0;
}

static void broker_stop(struct bench_brk *b)
{
	int st;

	if (b->pid <= 0)
		return;
	kill(b->pid, SIGTERM);
	for (int i = 0; i < BENCH_BRK_STOP_MS / 10; i++) {
		if (waitpid(b->pid, &st, WNOHANG) == b->pid) {
			b->pid = 0;
			return;
		}
		usleep(10000);
	}
	kill(b->pid, SIGKILL);
	waitpid(b->pid, &st, 0);
	b->pid = 0;
}

/* `shelf slice create NAME --replicas 1 --members SEL`, retried while the
 * broker starts. */
static int slice_create(struct bench_brk *b, const char *name, const char *sel)
{
	char cmd[3 * PATH_MAX], out[1024];
	int rc = -ETIMEDOUT;

	snprintf(cmd, sizeof(cmd),
		 "SHELF_ADMIN='%s' SHELF_BROKER='%s' '%s' slice create %s --replicas 1 "
		 "--members %s 2>&1",
		 b->dir, b->endpoint, b->bin_shelf, name, sel);
	for (int i = 0; i < BENCH_BRK_START_MS / 200; i++) {
		rc = bench_capture(cmd, out, sizeof(out));
		if (rc == 0)
			return 0;
		usleep(200000);
	}
	fprintf(stderr, "bench broker: %s: %s\n", cmd, out);
	return rc;
}

/* ---- simulated nodes ---------------------------------------------------------- */

/* A signed `register` for identity id (node number idx) into buf: its length,
 * or -errno. */
static int reg_encode(const struct ovl_id *id, const char *token, const char *group,
		      unsigned idx, uint8_t *buf, size_t cap)
{
	struct ovl_msg m;
	struct ovl_msg_register *r = &m.u.reg;
	uint8_t pop[sizeof(BENCH_BRK_REGISTER_DOMAIN) + 2 * OVL_ID_BYTES];
	char err[256];
	int n;

	ovl_msg_init(&m, OVL_MSG_REGISTER);
	memcpy(r->node_id, id->sign_pk, OVL_ID_BYTES);
	memcpy(r->curve_key, id->curve_pk, OVL_KEY_BYTES);
	snprintf(r->board, sizeof(r->board), "sim");
	snprintf(r->version, sizeof(r->version), "shelf-bench");
	r->capacity = 4000787030016ULL;
	snprintf(r->domain.site, sizeof(r->domain.site), "%s", BENCH_BRK_SITE);
	snprintf(r->domain.chassis, sizeof(r->domain.chassis), "c%u", idx / 64);
	snprintf(r->domain.slot, sizeof(r->domain.slot), "%u", idx % 64);
	r->port = 7480;
	snprintf(r->token, sizeof(r->token), "%s", token);
	snprintf(r->group, sizeof(r->group), "%s", group);
	memcpy(pop, BENCH_BRK_REGISTER_DOMAIN, sizeof(BENCH_BRK_REGISTER_DOMAIN));
	memcpy(pop + sizeof(BENCH_BRK_REGISTER_DOMAIN), r->node_id, OVL_ID_BYTES);
	memcpy(pop + sizeof(BENCH_BRK_REGISTER_DOMAIN) + OVL_ID_BYTES, r->curve_key, OVL_KEY_BYTES);
	crypto_sign_detached(r->sig, NULL, pop, sizeof(pop), id->sign_sk);
	n = ovl_msg_encode_buf(&m, buf, cap, err, sizeof(err));
	if (n < 0)
		fprintf(stderr, "bench broker: cannot encode register: %s\n", err);
	return n;
}

static int sim_prepare(struct bench_brk *b, struct sim *s, const char *group, unsigned idx)
{
	int n;

	memset(s, 0, sizeof(*s));
	if (ovl_id_generate(&s->id) < 0)
		return -ENOMEM;
	n = reg_encode(s->id, b->token, group, idx, s->msg, sizeof(s->msg));
	if (n < 0)
		return n;
	s->msg_len = (size_t)n; /* SIM_ECHO sends the same bytes as its payload */
	return 0;
}

/* `immediate`: ZMQ_IMMEDIATE, so a send waits for the handshake (the
 * introduction newcomer times from its send); otherwise the register is
 * queued at once and leaves when the handshake is done. */
static int sim_connect(struct bench_brk *b, struct sim *s, const uint8_t *server_key,
		       const char *endpoint, int immediate)
{
	int one = 1, zero = 0;
	int64_t maxmsg = BENCH_BRK_RECV_BYTES + OVL_LINK_CURVE_OVERHEAD_BYTES;

	s->sock = zmq_socket(b->zctx, ZMQ_DEALER);
	if (!s->sock)
		return -errno;
	zmq_setsockopt(s->sock, ZMQ_LINGER, &zero, sizeof(zero));
	zmq_setsockopt(s->sock, ZMQ_IMMEDIATE, &immediate, sizeof(immediate));
	zmq_setsockopt(s->sock, ZMQ_IPV6, &one, sizeof(one));
	zmq_setsockopt(s->sock, ZMQ_RCVHWM, &zero, sizeof(zero)); /* never drop a delta */
	zmq_setsockopt(s->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg));
	zmq_setsockopt(s->sock, ZMQ_CURVE_SERVERKEY, server_key, OVL_KEY_BYTES);
	zmq_setsockopt(s->sock, ZMQ_CURVE_PUBLICKEY, s->id->curve_pk, OVL_KEY_BYTES);
	zmq_setsockopt(s->sock, ZMQ_CURVE_SECRETKEY, s->id->curve_sk, OVL_KEY_BYTES);
	if (zmq_connect(s->sock, endpoint) < 0)
		return -errno;
	return 0;
}

static void sim_close(struct sim *s)
{
	if (s->sock)
		zmq_close(s->sock);
	s->sock = NULL;
}

/* Watch s's socket in epoll set ep under `tag`. */
static int sim_watch(struct sim *s, int ep, uint32_t tag)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u32 = tag };
	size_t len = sizeof(int);
	int fd;

	if (zmq_getsockopt(s->sock, ZMQ_FD, &fd, &len) < 0)
		return -errno;
	return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static void sim_unwatch(struct sim *s, int ep)
{
	size_t len = sizeof(int);
	int fd;

	if (zmq_getsockopt(s->sock, ZMQ_FD, &fd, &len) == 0)
		epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
}

/*
 * Everything s has: its socket's pending commands first (ZMQ_EVENTS, which
 * also clears ZMQ_FD), then every message until EAGAIN, so the next one
 * signals ZMQ_FD again. Sends the register if it is still queued. Returns
 * 0, or -EPROTO when the broker refused the node. `watch` (may be NULL):
 * the node id a map_delta must name to set *seen.
 */
static int sim_service(struct bench_brk *b, struct sim *s, enum sim_kind kind,
		       const uint8_t *watch, bool *seen)
{
	struct ovl_msg m;
	uint32_t events = 0;
	size_t elen = sizeof(events);
	char err[256];
	int n;

	if (zmq_getsockopt(s->sock, ZMQ_EVENTS, &events, &elen) < 0)
		return -errno;
	if (!s->sent && (events & ZMQ_POLLOUT) &&
	    zmq_send(s->sock, s->msg, s->msg_len, ZMQ_DONTWAIT) == (int)s->msg_len)
		s->sent = true;
	if (!(events & ZMQ_POLLIN))
		return 0;
	while ((n = zmq_recv(s->sock, b->rbuf, BENCH_BRK_RECV_BYTES, ZMQ_DONTWAIT)) >= 0) {
		if (kind == SIM_ECHO) {
			s->got_ok = s->got_map = true;
			continue;
		}
		if (ovl_msg_decode(b->rbuf, (size_t)n, &m, err, sizeof(err)) < 0) {
			fprintf(stderr, "bench broker: bad message from the broker: %s\n", err);
			return -EPROTO;
		}
		switch (m.type) {
		case OVL_MSG_REGISTER_OK:
			s->got_ok = true;
			if (m.u.reg_ok.n_slices == 0)
				s->got_map = true;
			break;
		case OVL_MSG_MAP:
			s->got_map = true;
			break;
		case OVL_MSG_MAP_DELTA:
			if (watch && seen && m.u.delta.n_members == 1 &&
			    memcmp(m.u.delta.members[0].id, watch, OVL_ID_BYTES) == 0) {
				*seen = true;
				b->last_delta_bytes = (size_t)n;
			}
			break;
		case OVL_MSG_ERROR:
			fprintf(stderr, "bench broker: broker refused a node: %s\n",
				m.u.error.message);
			ovl_msg_release(&m);
			return -EPROTO;
		default:
			break;
		}
		ovl_msg_release(&m);
	}
	return 0;
}

/*
 * Connect and register s[0..n), at most BENCH_BRK_WINDOW in flight; a node
 * is done with its register_ok (and its map when a slice selects it). With
 * `drain`, done nodes are read too (they are members receiving deltas).
 * Connections stay open. Returns the seconds taken, or < 0.
 */
static double sim_run(struct bench_brk *b, struct sim *s, unsigned n, enum sim_kind kind,
		      const uint8_t *server_key, const char *endpoint, bool drain)
{
	struct epoll_event evs[BENCH_BRK_EVENTS];
	unsigned next = 0, done = 0, inflight = 0;
	double t0 = bench_now(), rc = -1;
	int ep = epoll_create1(EPOLL_CLOEXEC);

	if (ep < 0)
		return -1;
	while (done < n) {
		int nev;

		if (bench_now() - t0 > BENCH_BRK_PHASE_TIMEOUT_S) {
			fprintf(stderr, "bench broker: %u of %u nodes done after %.0f s; giving up\n",
				done, n, BENCH_BRK_PHASE_TIMEOUT_S);
			goto out;
		}
		while (inflight < BENCH_BRK_WINDOW && next < n) {
			struct sim *x = &s[next];

			if (sim_connect(b, x, server_key, endpoint, 0) < 0 ||
			    sim_watch(x, ep, next) < 0) {
				fprintf(stderr, "bench broker: cannot connect node %u: %s\n", next,
					zmq_strerror(errno));
				goto out;
			}
			if (zmq_send(x->sock, x->msg, x->msg_len, ZMQ_DONTWAIT) == (int)x->msg_len)
				x->sent = true;
			next++;
			inflight++;
		}
		nev = epoll_wait(ep, evs, BENCH_BRK_EVENTS, 100);
		if (nev < 0 && errno != EINTR)
			goto out;
		for (int k = 0; k < nev || (nev == 0 && (unsigned)k < next); k++) {
			/* nothing for 100 ms: look at every open node once (a safety net;
			 * ZMQ_FD has no missed edges when each node is read to EAGAIN) */
			unsigned i = nev > 0 ? evs[k].data.u32 : (unsigned)k;
			struct sim *x = &s[i];

			if (x->done && !drain)
				continue;
			if (sim_service(b, x, kind, NULL, NULL) < 0)
				goto out;
			if (!x->done && x->got_ok && x->got_map) {
				x->done = true;
				done++;
				inflight--;
				if (!drain)
					sim_unwatch(x, ep);
			}
		}
	}
	rc = bench_now() - t0;
out:
	close(ep);
	return rc;
}

static void sims_free(struct sim *s, unsigned n)
{
	for (unsigned i = 0; s && i < n; i++) {
		sim_close(&s[i]);
		ovl_id_destroy(&s[i].id);
	}
	free(s);
}

static struct sim *sims_new(struct bench_brk *b, unsigned n, const char *group, unsigned base)
{
	struct sim *s = calloc(n, sizeof(*s));

	for (unsigned i = 0; s && i < n; i++)
		if (sim_prepare(b, &s[i], group, base + i) < 0) {
			sims_free(s, i);
			return NULL;
		}
	return s;
}

/* ---- the fleet: simulated nodes in forked processes ------------------------------ */

struct fleet_result {
	double seconds;                 /* < 0: failed */
	unsigned done;
};

struct fleet {
	pid_t pid[64];
	unsigned procs;
	int go_w;                       /* one byte per process starts it; EOF ends it */
	int res_r;                      /* struct fleet_result, one per process */
};

static ssize_t read_full(int fd, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t r = read(fd, (uint8_t *)buf + got, len - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return got ? (ssize_t)got : r;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

/* A fleet process: n nodes from number `base` on. Never returns. */
static void fleet_child(struct bench_brk *b, enum sim_kind kind, unsigned n, unsigned base,
			const uint8_t *key, const char *endpoint, int ready_w, int go_r, int res_w)
{
	struct fleet_result res = { -1, 0 };
	struct sim *s = NULL;
	char c = 'r';

	b->zctx = zmq_ctx_new();
	b->rbuf = malloc(BENCH_BRK_RECV_BYTES);
	if (b->zctx)
		zmq_ctx_set(b->zctx, ZMQ_MAX_SOCKETS, (int)n + 64);
	s = b->zctx && b->rbuf ? sims_new(b, n, "bench-bulk", base) : NULL;
	if (!s)
		c = 'f';
	if (write(ready_w, &c, 1) != 1 || c != 'r' || read_full(go_r, &c, 1) != 1)
		_exit(1);
	res.seconds = sim_run(b, s, n, kind, key, endpoint, false);
	for (unsigned i = 0; i < n; i++)
		res.done += s[i].done;
	if (write(res_w, &res, sizeof(res)) != (ssize_t)sizeof(res))
		_exit(1);
	/* hold the connections until the parent has looked at the server */
	for (;;) {
		ssize_t r = read(go_r, &c, 1);

		if (r == 0 || (r < 0 && errno != EINTR))
			break;
	}
	sims_free(s, n);
	zmq_ctx_term(b->zctx);
	free(b->rbuf);
	_exit(res.seconds < 0 ? 1 : 0);
}

static void fleet_stop(struct fleet *f)
{
	int st;

	if (f->go_w >= 0)
		close(f->go_w);
	if (f->res_r >= 0)
		close(f->res_r);
	f->go_w = f->res_r = -1;
	for (unsigned i = 0; i < f->procs; i++)
		if (f->pid[i] > 0)
			waitpid(f->pid[i], &st, 0);
	f->procs = 0;
}

/* Wait for one byte or struct from fd, watching for a fleet process that
 * died: read_full's result, or -1. */
static ssize_t fleet_read(struct fleet *f, int fd, void *buf, size_t len, double deadline)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	while (bench_now() < deadline) {
		int st;

		if (poll(&p, 1, 1000) > 0)
			return read_full(fd, buf, len);
		for (unsigned i = 0; i < f->procs; i++)
			if (f->pid[i] > 0 && waitpid(f->pid[i], &st, WNOHANG) == f->pid[i]) {
				f->pid[i] = 0;
				fprintf(stderr, "bench broker: a fleet process exited early\n");
				return -1;
			}
	}
	return -1;
}

/*
 * Fork `procs` processes sharing n nodes, wait until every one has its keys
 * and registers ready, start them together and wait for the last. The
 * processes keep their connections until fleet_stop(). Returns the seconds
 * from the start to the last one done, or < 0.
 */
static double fleet_run(struct bench_brk *b, struct fleet *f, enum sim_kind kind, unsigned n,
			unsigned procs, const uint8_t *key, const char *endpoint)
{
	int ready[2] = { -1, -1 }, go[2] = { -1, -1 }, res[2] = { -1, -1 };
	double t0, deadline, rc = -1;
	unsigned base = 0;

	memset(f, 0, sizeof(*f));
	f->go_w = f->res_r = -1;
	if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(go, O_CLOEXEC) < 0 || pipe2(res, O_CLOEXEC) < 0)
		goto out;
	fflush(NULL);
	for (unsigned i = 0; i < procs; i++) {
		unsigned share = n / procs + (i < n % procs);
		pid_t pid = fork();

		if (pid < 0)
			goto out;
		if (pid == 0) {
			close(ready[0]);
			close(go[1]);
			close(res[0]);
			fleet_child(b, kind, share, base, key, endpoint, ready[1], go[0], res[1]);
		}
		f->pid[f->procs++] = pid;
		base += share;
	}
	close(ready[1]);
	close(go[0]);
	close(res[1]);
	ready[1] = go[0] = res[1] = -1;
	f->go_w = go[1];
	f->res_r = res[0];
	go[1] = res[0] = -1;
	deadline = bench_now() + BENCH_BRK_PHASE_TIMEOUT_S;
	for (unsigned i = 0; i < procs; i++) {
		char c;

		if (fleet_read(f, ready[0], &c, 1, deadline) != 1 || c != 'r') {
			fprintf(stderr, "bench broker: a fleet process could not make its nodes\n");
			goto out;
		}
	}
	t0 = bench_now();
	for (unsigned i = 0; i < procs; i++)
		if (write(f->go_w, "g", 1) != 1)
			goto out;
	for (unsigned i = 0; i < procs; i++) {
		struct fleet_result r;

		if (fleet_read(f, f->res_r, &r, sizeof(r), deadline) != (ssize_t)sizeof(r) ||
		    r.seconds < 0) {
			fprintf(stderr, "bench broker: a fleet process failed\n");
			goto out;
		}
	}
	rc = bench_now() - t0;
out:
	for (int i = 0; i < 2; i++) {
		if (ready[i] >= 0)
			close(ready[i]);
		if (go[i] >= 0)
			close(go[i]);
		if (res[i] >= 0)
			close(res[i]);
	}
	if (rc < 0) {
		for (unsigned i = 0; i < f->procs; i++)
			if (f->pid[i] > 0)
				kill(f->pid[i], SIGKILL);
		fleet_stop(f);
	}
	return rc;
}

/* ---- the echo server (ref), a process of its own ------------------------------------ */

struct echo {
	pid_t pid;
	int stop_w;                     /* closing it stops the server */
	uint8_t pk[OVL_KEY_BYTES];
	char endpoint[OVL_LINK_ENDPOINT_MAX_CHARS];
};

/* The echo process: an ovl_link server in one thread, as the broker's
 * server is, answering each message with its bytes. Never returns. */
static void echo_child(int info_w, int stop_r)
{
	struct ovl_link_server_cfg cfg = { 0 };
	struct ovl_link_opts opts;
	struct ovl_link_peer from;
	struct pollfd p = { .fd = stop_r, .events = POLLIN };
	uint8_t sk[OVL_KEY_BYTES], *buf = malloc(OVL_LINK_MAX_MSG_BYTES);
	struct echo info = { 0 };
	ovl_link_server_t *srv = NULL;
	ovl_keyring_t *kr = ovl_keyring_new();
	ovl_zap_t *zap = NULL;
	void *zctx = zmq_ctx_new();
	char err[256] = "";
	int n, rc = -ENOMEM;

	crypto_box_keypair(info.pk, sk);
	if (!zctx || !kr || !buf)
		goto out;
	zmq_ctx_set(zctx, ZMQ_MAX_SOCKETS, 65536);
	if ((rc = ovl_zap_new(&zap, zctx, err, sizeof(err))) < 0)
		goto out;
	ovl_keyring_hook_set(kr, ovl_keyring_admit_any, NULL);
	if ((rc = ovl_zap_domain_set(zap, OVL_LINK_DOMAIN_NODE, kr)) < 0)
		goto out;
	cfg.endpoint = "tcp://[::1]:*";
	cfg.domain = OVL_LINK_DOMAIN_NODE;
	cfg.secret_key = sk;
	brk_link_opts(&opts); /* the broker's socket options, so only the work differs */
	cfg.opts = &opts;
	if ((rc = ovl_link_server_new(&srv, zap, &cfg, err, sizeof(err))) < 0 ||
	    (rc = ovl_link_server_endpoint(srv, info.endpoint, sizeof(info.endpoint))) < 0)
		goto out;
	if (write(info_w, &info, sizeof(info)) != (ssize_t)sizeof(info))
		goto out;
	while (poll(&p, 1, 0) == 0) {
		n = ovl_link_server_recv(srv, &from, buf, OVL_LINK_MAX_MSG_BYTES, 100);
		if (n >= 0)
			ovl_link_server_send(srv, &from, buf, (size_t)n, 0);
	}
	rc = 0;
out:
	if (rc < 0)
		fprintf(stderr, "bench broker: echo server: %s (%s)\n", err, strerror(-rc));
	ovl_link_server_destroy(&srv);
	ovl_zap_destroy(&zap);
	ovl_keyring_destroy(&kr);
	if (zctx)
		zmq_ctx_term(zctx);
	free(buf);
	_exit(rc < 0 ? 1 : 0);
}

static int echo_start(struct echo *e)
{
	struct echo got;
	int info[2], stop[2];

	if (pipe2(info, O_CLOEXEC) < 0)
		return -errno;
	if (pipe2(stop, O_CLOEXEC) < 0) {
		close(info[0]);
		close(info[1]);
		return -errno;
	}
	fflush(NULL);
	e->pid = fork();
	if (e->pid == 0) {
		close(info[0]);
		close(stop[1]);
		echo_child(info[1], stop[0]);
	}
	close(info[1]);
	close(stop[0]);
	e->stop_w = stop[1];
	if (e->pid < 0 || read_full(info[0], &got, sizeof(got)) != (ssize_t)sizeof(got)) {
		close(info[0]);
		return -EIO;
	}
	close(info[0]);
	memcpy(e->pk, got.pk, sizeof(e->pk));
	memcpy(e->endpoint, got.endpoint, sizeof(e->endpoint));
	return 0;
}

static void echo_stop(struct echo *e)
{
	int st;

	if (e->stop_w >= 0)
		close(e->stop_w);
	e->stop_w = -1;
	if (e->pid > 0)
		waitpid(e->pid, &st, 0);
	e->pid = 0;
}

/* ---- the registry's own memory (the core in this process) -------------------------- */

struct reg_io {
	uint64_t sent;
};

static int reg_send(void *arg, const struct brk_peer *to, const void *buf, size_t len)
{
	struct reg_io *r = arg;

	(void)to;
	(void)buf;
	r->sent += len;
	return 0;
}

static uint64_t reg_now_ms(void *arg)
{
	(void)arg;
	return (uint64_t)(bench_now() * 1000.0);
}

static uint64_t reg_unix_s(void *arg)
{
	(void)arg;
	return (uint64_t)time(NULL);
}

static size_t heap_in_use(void)
{
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
}

/*
 * Drive a broker core in this process with `count` registrations of distinct
 * real keys (each node in a slice of at most BENCH_BRK_SLICE_MEMBERS, by
 * group), replies discarded. *heap and *rss: growth per node.
 */
static int registry_bytes(struct bench_brk *b, unsigned count, double *heap, double *rss)
{
	struct brk_site site;
	struct brk_params p = { 0 };
	struct reg_io rio = { 0 };
	struct brk_io io = { .send = reg_send, .now_ms = reg_now_ms, .unix_s = reg_unix_s,
			     .arg = &rio };
	struct brk_stats st;
	brk_t *core = NULL;
	uint8_t buf[BENCH_BRK_MSG_BYTES], hash[32];
	const char *token = "bench-registry-token";
	char err[256] = "", group[32];
	unsigned nslices = (count + BENCH_BRK_SLICE_MEMBERS - 1) / BENCH_BRK_SLICE_MEMBERS;
	size_t heap0;
	long rss0;
	double t0;
	int rc;

	memset(&site, 0, sizeof(site));
	if ((rc = brk_site_load(&site, b->dir, err, sizeof(err))) < 0)
		goto out;
	p.max_nodes = count;
	if ((rc = brk_new(&core, &site, &p, &io, err, sizeof(err))) < 0)
		goto out;
	crypto_generichash(hash, sizeof(hash), (const uint8_t *)token, strlen(token), NULL, 0);
	if ((rc = brk_token_add(core, hash, count, (uint64_t)time(NULL) + 3600)) < 0)
		goto out;
	for (unsigned k = 0; k < nslices; k++) {
		char name[32], sel[48];

		snprintf(name, sizeof(name), "reg-%u", k);
		snprintf(sel, sizeof(sel), "group=reg-%u", k);
		if ((rc = brk_slice_create(core, name, 3, sel, err, sizeof(err))) < 0)
			goto out;
	}
	heap0 = heap_in_use();
	rss0 = rss_bytes(getpid());
	t0 = bench_now();
	for (unsigned i = 0; i < count; i++) {
		struct ovl_id *id = NULL;
		struct brk_peer from = { .rid_len = 5 };
		int n;

		if ((rc = ovl_id_generate(&id)) < 0)
			goto out;
		snprintf(group, sizeof(group), "reg-%u", i / BENCH_BRK_SLICE_MEMBERS);
		n = reg_encode(id, token, group, i, buf, sizeof(buf));
		memcpy(from.key, id->curve_pk, OVL_KEY_BYTES);
		memcpy(from.rid + 1, &i, sizeof(i));
		ovl_id_destroy(&id);
		if (n < 0) {
			rc = n;
			goto out;
		}
		brk_handle(core, &from, buf, (size_t)n);
	}
	brk_stats_get(core, &st);
	if (st.nodes != count || st.registrations != count) {
		snprintf(err, sizeof(err), "%llu of %u registrations admitted",
			 (unsigned long long)st.registrations, count);
		rc = -EPROTO;
		goto out;
	}
	*heap = (double)(heap_in_use() - heap0) / count;
	*rss = (double)(rss_bytes(getpid()) - rss0) / count;
	fprintf(stderr, "# broker: registry of %u nodes in %u slices: %.0f B/node heap, %.0f B/node "
		"RSS, %llu B/node by the core's own count; %.1f s (keys made here too)\n", count,
		nslices, *heap, *rss, (unsigned long long)(st.memory_bytes / count),
		bench_now() - t0);
	rc = 0;
out:
	if (rc < 0)
		fprintf(stderr, "bench broker: registry of %u nodes: %s (%s)\n", count, err,
			strerror(-rc));
	brk_destroy(&core);
	brk_site_release(&site);
	return rc;
}

/* ---- introductions ----------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/*
 * A slice of `members` nodes (group `group`, slice `slice` selecting it),
 * then BENCH_BRK_INTRO_SAMPLES newcomers: p99 in ms of register ->
 * the last original member holding the delta naming the newcomer.
 */
static int introduce(struct bench_brk *b, const char *slice, const char *group,
		     unsigned members, unsigned base, double *p99_ms, size_t *delta_bytes)
{
	char sel[96];
	struct sim *m = NULL, *nc = NULL;
	struct epoll_event evs[BENCH_BRK_EVENTS];
	double samples[BENCH_BRK_INTRO_SAMPLES], t;
	bool *seen = NULL;
	int ep = -1, rc = -1;

	snprintf(sel, sizeof(sel), "group=%s", group);
	if (slice_create(b, slice, sel) < 0)
		return -1;
	m = sims_new(b, members, group, base);
	nc = sims_new(b, BENCH_BRK_INTRO_SAMPLES, group, base + members);
	seen = calloc(members, sizeof(*seen));
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (!m || !nc || !seen || ep < 0)
		goto out;
	t = sim_run(b, m, members, SIM_BROKER, b->server_key, b->endpoint, true);
	if (t < 0)
		goto out;
	fprintf(stderr, "# broker: %u members joined slice %s in %.2f s\n", members, slice, t);
	for (unsigned i = 0; i < members; i++)
		if (sim_watch(&m[i], ep, i) < 0)
			goto out;
	for (unsigned k = 0; k < BENCH_BRK_INTRO_SAMPLES; k++) {
		struct sim *x = &nc[k];
		zmq_pollitem_t it;
		unsigned left = members;
		double t0;

		memset(seen, 0, members * sizeof(*seen));
		if (sim_connect(b, x, b->server_key, b->endpoint, 1) < 0 ||
		    sim_watch(x, ep, members) < 0)
			goto out;
		it = (zmq_pollitem_t){ x->sock, 0, ZMQ_POLLOUT, 0 };
		if (zmq_poll(&it, 1, 5000) != 1) {
			fprintf(stderr, "bench broker: newcomer %u: no handshake in 5 s\n", k);
			goto out;
		}
		t0 = bench_now();
		if (zmq_send(x->sock, x->msg, x->msg_len, ZMQ_DONTWAIT) != (int)x->msg_len)
			goto out;
		x->sent = true;
		while (left > 0) {
			int nev;

			if (bench_now() - t0 > 30) {
				fprintf(stderr, "bench broker: newcomer %u: %u members without the "
					"delta after 30 s\n", k, left);
				goto out;
			}
			nev = epoll_wait(ep, evs, BENCH_BRK_EVENTS, 100);
			if (nev < 0 && errno != EINTR)
				goto out;
			for (int j = 0; j < nev || (nev == 0 && (unsigned)j <= members); j++) {
				/* nothing for 100 ms: look at everyone once (safety net) */
				unsigned i = nev > 0 ? evs[j].data.u32 : (unsigned)j;

				if (i == members) {
					if (sim_service(b, x, SIM_BROKER, NULL, NULL) < 0)
						goto out;
					continue;
				}
				if (sim_service(b, &m[i], SIM_BROKER, x->id->sign_pk, &seen[i]) < 0)
					goto out;
				if (seen[i] && !m[i].done) /* done doubles as "seen" here */
					m[i].done = true;
			}
			left = 0;
			for (unsigned i = 0; i < members; i++)
				left += !seen[i];
		}
		samples[k] = (bench_now() - t0) * 1000.0;
		/* the newcomer stays a member; drop its connection (the broker's sends
		 * to it then fail fast) so only the original members are read */
		sim_unwatch(x, ep);
		sim_close(x);
	}
	qsort(samples, BENCH_BRK_INTRO_SAMPLES, sizeof(samples[0]), cmp_double);
	*p99_ms = samples[(BENCH_BRK_INTRO_SAMPLES * 99 + 99) / 100 - 1];
	*delta_bytes = b->last_delta_bytes;
	rc = 0;
out:
	if (ep >= 0)
		close(ep);
	free(seen);
	sims_free(m, members);
	sims_free(nc, BENCH_BRK_INTRO_SAMPLES);
	return rc;
}

/* ---- the run ------------------------------------------------------------------------ */

static long fd_count(pid_t pid)
{
	char path[64];
	struct dirent *de;
	DIR *d;
	long n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	if (!d)
		return -1;
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

/* User + system CPU seconds of a process, from /proc/PID/stat. */
static double proc_cpu(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long ut = 0, st = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	p = fgets(buf, sizeof(buf), f);
	fclose(f);
	p = p ? strrchr(buf, ')') : NULL;
	/* after "pid (comm)": state ppid pgrp session tty tpgid flags minflt
	 * cminflt majflt cmajflt utime stime */
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
			 &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU seconds of the waited-for children so far. */
static double children_cpu(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_CHILDREN, &ru) < 0)
		return -1;
	return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

static const char *count_name(unsigned n)
{
	return n == 10000 ? "10k" : n == 100000 ? "100k" : "n";
}

static int broker_run(int argc, char **argv)
{
	struct bench_brk b = { 0 };
	struct echo e = { .pid = 0, .stop_w = -1 };
	struct fleet fl = { .go_w = -1, .res_r = -1 };
	struct rlimit rl;
	unsigned n = BENCH_BRK_NODES_DEFAULT, procs = 0, fit;
	const char *base = NULL, *parts = "register,registry,introduce";
	char cmd[PATH_MAX + 32], name[64];
	double t_ours, t_ref, p99, heap, rss, cpu0, cpu1, srv_cpu;
	size_t d24 = 0, d1k = 0;
	long rss0, rss1, fds;
	int rc = 1;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--nodes") == 0 && i + 1 < argc)
			n = (unsigned)bench_size_arg("--nodes", argv[++i]);
		else if (strcmp(argv[i], "--procs") == 0 && i + 1 < argc)
			procs = (unsigned)bench_size_arg("--procs", argv[++i]);
		else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
			base = argv[++i];
		else if (strcmp(argv[i], "--parts") == 0 && i + 1 < argc)
			parts = argv[++i];
		else {
			fprintf(stderr, "usage: shelf-bench broker [--nodes N] [--procs P] [--dir DIR] "
				"[--parts register,registry,introduce]\n");
			return 2;
		}
	}
	if (n == 0)
		n = BENCH_BRK_NODES_DEFAULT;
	/* the soft limit up to the hard one (raising the hard one needs
	 * CAP_SYS_RESOURCE): the broker, started from here, inherits it */
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 1;
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur <= 2 * BENCH_BRK_FDS_SPARE || rl.rlim_cur - BENCH_BRK_FDS_SPARE <= n) {
		fprintf(stderr, "bench broker: RLIMIT_NOFILE %llu cannot hold a broker with %u "
			"connections\n", (unsigned long long)rl.rlim_cur, n);
		return 1;
	}
	fit = (unsigned)((rl.rlim_cur - BENCH_BRK_FDS_SPARE) / BENCH_BRK_FDS_PER_NODE);
	if (procs == 0)
		procs = (n + fit - 1) / fit;
	if (procs < BENCH_BRK_PROCS_MIN)
		procs = BENCH_BRK_PROCS_MIN;
	if (procs > sizeof(fl.pid) / sizeof(fl.pid[0]) || (n + procs - 1) / procs > fit) {
		fprintf(stderr, "bench broker: %u fleet processes cannot hold %u nodes at %u fds "
			"each under RLIMIT_NOFILE %llu\n", procs, n, BENCH_BRK_FDS_PER_NODE,
			(unsigned long long)rl.rlim_cur);
		return 2;
	}
	if (sodium_init() < 0)
		return 1;
	signal(SIGPIPE, SIG_IGN); /* a fleet process that died is reported, not fatal here */
	find_bin("shelf-broker", b.bin_broker, sizeof(b.bin_broker));
	find_bin("shelf", b.bin_shelf, sizeof(b.bin_shelf));
	if (base && mkdir(base, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "bench broker: cannot create '%s': %s\n", base, strerror(errno));
		return 1;
	}
	snprintf(b.dir, sizeof(b.dir), "%s/brkbench.XXXXXX", base ? base : "/tmp");
	if (!mkdtemp(b.dir)) {
		fprintf(stderr, "bench broker: cannot create '%s': %s\n", b.dir, strerror(errno));
		return 1;
	}
	if (broker_start(&b, n + 2000 + 4 * BENCH_BRK_INTRO_SAMPLES) < 0)
		goto out;
	if (slice_create(&b, "bench-bulk", "group=bench-nobody") < 0)
		goto out;
	fprintf(stderr, "# broker: %u nodes in %u fleet processes, %u in flight each; "
		"RLIMIT_NOFILE %llu\n", n, procs, BENCH_BRK_WINDOW, (unsigned long long)rl.rlim_cur);

	/* 1: the ref, then N registrations and the broker's memory with them open */
	if (!strstr(parts, "register"))
		goto registry;
	if (echo_start(&e) < 0)
		goto out;
	cpu0 = children_cpu();
	t_ref = fleet_run(&b, &fl, SIM_ECHO, n, procs, e.pk, e.endpoint);
	srv_cpu = proc_cpu(e.pid);
	if (t_ref >= 0)
		fprintf(stderr, "# broker: echo server with %u connections: %ld fds, %ld B RSS\n",
			n, fd_count(e.pid), rss_bytes(e.pid));
	fleet_stop(&fl);
	cpu1 = children_cpu();
	echo_stop(&e);
	if (t_ref < 0)
		goto out;
	fprintf(stderr, "# broker: ref %u round trips in %.2f s; CPU: echo server %.2f s, fleet "
		"%.2f s\n", n, t_ref, srv_cpu, cpu1 - cpu0);
	usleep(500000);
	rss0 = rss_bytes(b.pid);
	srv_cpu = proc_cpu(b.pid);
	cpu0 = children_cpu();
	t_ours = fleet_run(&b, &fl, SIM_BROKER, n, procs, b.server_key, b.endpoint);
	if (t_ours < 0)
		goto out;
	srv_cpu = proc_cpu(b.pid) - srv_cpu;
	usleep(500000);
	rss1 = rss_bytes(b.pid);
	fds = fd_count(b.pid);
	fprintf(stderr, "# broker: %u registrations in %.2f s (%.0f/s); the broker holds %ld fds "
		"(RLIMIT_NOFILE %llu)\n", n, t_ours, n / t_ours, fds,
		(unsigned long long)rl.rlim_cur);
	if (fds < 0 || (unsigned long long)fds >= rl.rlim_cur) {
		fprintf(stderr, "bench broker: the broker's fds are at its limit\n");
		goto out;
	}
	snprintf(name, sizeof(name), "broker_register_%s", count_name(n));
	if (n != 10000 && n != 100000)
		fprintf(stderr, "# broker: broker_register_n measured with %u nodes\n", n);
	bench_line(name, t_ours, t_ref, "s", "ovl_link-echo-new-conn");
	snprintf(name, sizeof(name), "broker_bytes_per_conn_%s", count_name(n));
	if (rss0 > 0 && rss1 > 0)
		bench_line(name, (double)(rss1 - rss0) / n, 0, "bytes", "-");
	fleet_stop(&fl);
	fprintf(stderr, "# broker: CPU for the registrations: broker %.2f s, fleet %.2f s\n",
		srv_cpu, children_cpu() - cpu0);

	/* 2: the registry's own memory, at N and at 100,000 nodes */
registry:
	if (!strstr(parts, "registry"))
		goto intro;
	if (registry_bytes(&b, n, &heap, &rss) < 0)
		goto out;
	snprintf(name, sizeof(name), "broker_bytes_per_node_%s", count_name(n));
	bench_line(name, heap, 0, "bytes", "-");
	if (n != BENCH_BRK_REG_BIG) {
		if (registry_bytes(&b, BENCH_BRK_REG_BIG, &heap, &rss) < 0)
			goto out;
		bench_line("broker_bytes_per_node_100k", heap, 0, "bytes", "-");
	}

	/* 3 and 4: introductions into a slice of 24, then of 1,000 members */
intro:
	if (!strstr(parts, "introduce")) {
		rc = 0;
		goto out;
	}
	b.rbuf = malloc(BENCH_BRK_RECV_BYTES);
	b.zctx = zmq_ctx_new();
	if (!b.rbuf || !b.zctx)
		goto out;
	zmq_ctx_set(b.zctx, ZMQ_MAX_SOCKETS, 4096);
	if (introduce(&b, "bench-intro24", "bench-intro24", 24, n, &p99, &d24) < 0)
		goto out;
	bench_line("broker_introduce_p99_ms", p99, 0, "ms", "-");
	bench_line("broker_delta_bytes_24", (double)d24, 0, "bytes", "-");
	if (introduce(&b, "bench-intro1k", "bench-intro1k", 1000, n + 100, &p99, &d1k) < 0)
		goto out;
	bench_line("broker_introduce_1k_p99_ms", p99, 0, "ms", "-");
	bench_line("broker_delta_bytes_1k", (double)d1k, 0, "bytes", "-");
	rc = 0;
out:
	fleet_stop(&fl);
	echo_stop(&e);
	broker_stop(&b);
	if (b.zctx)
		zmq_ctx_term(b.zctx);
	free(b.rbuf);
	if (rc == 0 || !base) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", b.dir);
		if (system(cmd) != 0)
			fprintf(stderr, "bench broker: cannot remove '%s'\n", b.dir);
	} else {
		fprintf(stderr, "bench broker: failed; the site and broker.log stay in '%s'\n", b.dir);
	}
	return rc;
}

static const struct bench_cmd bench_broker = {
	.name = "broker",
	.usage = "a real shelf-broker and simulated nodes [--nodes N] [--procs P] [--dir DIR]",
	.run = broker_run,
	.in_all = true,
};
BENCH_COMMAND(bench_broker)
