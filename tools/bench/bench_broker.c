/*
 * shelf-bench broker: a real shelf-broker process and simulated nodes.
 *
 *   shelf-bench broker [--nodes N] [--dir DIR]
 *
 * The bench makes a site in a temporary directory (shelf-broker init, one
 * enrolment token with enough uses), runs `shelf-broker run` on
 * tcp://[::1]:PORT and creates slices with `shelf slice create`. Every
 * simulated node has its own identity (ovl_id_generate) and its own CURVE
 * DEALER connection, and sends a `register` built with ovl_msg and signed as
 * docs/PROTOCOL.md 6.3 says (proof of possession). Lines printed:
 *
 *   broker_register_10k   seconds for N nodes (default 10,000) to register and
 *                         receive register_ok, at most BENCH_BRK_WINDOW in
 *                         flight, each on a new connection. ref: the same
 *                         count of CURVE request/reply round trips, each on a
 *                         new connection, to an ovl_link echo server in a
 *                         thread of this process (same window).
 *   broker_bytes_per_node (broker VmRSS after - before) / N, connections held.
 *   broker_introduce_p99_ms / _1k_p99_ms  register one more node into a slice
 *                         of 24 (1,000) members that keep reading: from its
 *                         register to the last existing member holding the
 *                         map_delta naming it; p99 of BENCH_BRK_INTRO_SAMPLES.
 *   broker_delta_bytes_24 / _1k  size of that map_delta as a member receives it.
 *
 * The N registering nodes are not selected by any slice (a `--members all`
 * slice of 10,000 joins costs N^2/2 deltas and maps; see the # notes); the
 * 24- and 1,000-member slices are joined on purpose.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <msgpack.h>
#include <sodium.h>
#include <zmq.h>

#include "bench.h"
#include "overlay.h"

#define BENCH_BRK_NODES_DEFAULT 10000
#define BENCH_BRK_WINDOW 256             /* registrations in flight at once */
#define BENCH_BRK_INTRO_SAMPLES 50
#define BENCH_BRK_NOFILE 200000          /* RLIMIT_NOFILE wanted */
#define BENCH_BRK_FDS_PER_NODE 3u        /* TCP, socket mailbox, reaper share (seen) */
#define BENCH_BRK_PHASE_TIMEOUT_S 600.0  /* one phase may take at most this */
#define BENCH_BRK_RECV_BYTES (16u << 20) /* largest map accepted */
#define BENCH_BRK_MSG_BYTES 1024         /* an encoded register fits */
#define BENCH_BRK_START_MS 10000         /* broker start-up wait */
#define BENCH_BRK_STOP_MS 5000           /* SIGTERM, then SIGKILL after this */
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
	void *zctx;
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

static int sim_prepare(struct bench_brk *b, struct sim *s, enum sim_kind kind, const char *group,
		       unsigned idx)
{
	struct ovl_msg m;
	struct ovl_msg_register *r = &m.u.reg;
	uint8_t pop[sizeof(BENCH_BRK_REGISTER_DOMAIN) + 2 * OVL_ID_BYTES];
	char err[256];
	int n;

	memset(s, 0, sizeof(*s));
	if (ovl_id_generate(&s->id) < 0)
		return -ENOMEM;
	ovl_msg_init(&m, OVL_MSG_REGISTER);
	memcpy(r->node_id, s->id->sign_pk, OVL_ID_BYTES);
	memcpy(r->curve_key, s->id->curve_pk, OVL_KEY_BYTES);
	snprintf(r->board, sizeof(r->board), "sim");
	snprintf(r->version, sizeof(r->version), "shelf-bench");
	r->capacity = 4000787030016ULL;
	snprintf(r->domain.site, sizeof(r->domain.site), "%s", BENCH_BRK_SITE);
	snprintf(r->domain.chassis, sizeof(r->domain.chassis), "c%u", idx / 64);
	snprintf(r->domain.slot, sizeof(r->domain.slot), "%u", idx % 64);
	r->port = 7480;
	snprintf(r->token, sizeof(r->token), "%s", b->token);
	snprintf(r->group, sizeof(r->group), "%s", group);
	memcpy(pop, BENCH_BRK_REGISTER_DOMAIN, sizeof(BENCH_BRK_REGISTER_DOMAIN));
	memcpy(pop + sizeof(BENCH_BRK_REGISTER_DOMAIN), r->node_id, OVL_ID_BYTES);
	memcpy(pop + sizeof(BENCH_BRK_REGISTER_DOMAIN) + OVL_ID_BYTES, r->curve_key, OVL_KEY_BYTES);
	crypto_sign_detached(r->sig, NULL, pop, sizeof(pop), s->id->sign_sk);
	n = ovl_msg_encode_buf(&m, s->msg, sizeof(s->msg), err, sizeof(err));
	if (n < 0) {
		fprintf(stderr, "bench broker: cannot encode register: %s\n", err);
		return n;
	}
	s->msg_len = (size_t)n; /* SIM_ECHO sends the same bytes as its payload */
	(void)kind;
	return 0;
}

static int sim_connect(struct bench_brk *b, struct sim *s, const uint8_t *server_key,
		       const char *endpoint)
{
	int one = 1, zero = 0;
	int64_t maxmsg = BENCH_BRK_RECV_BYTES + OVL_LINK_CURVE_OVERHEAD_BYTES;

	s->sock = zmq_socket(b->zctx, ZMQ_DEALER);
	if (!s->sock)
		return -errno;
	zmq_setsockopt(s->sock, ZMQ_LINGER, &zero, sizeof(zero));
	zmq_setsockopt(s->sock, ZMQ_IMMEDIATE, &one, sizeof(one));
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

/* Read what s has; returns 0, or -EPROTO when the broker refused it. `watch`
 * (may be NULL): the node id a map_delta must name to set *seen. */
static int sim_read(struct bench_brk *b, struct sim *s, enum sim_kind kind, const uint8_t *watch,
		    bool *seen)
{
	struct ovl_msg m;
	char err[256];
	int n;

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
	zmq_pollitem_t *items = calloc(n, sizeof(*items));
	unsigned *idx = calloc(n, sizeof(*idx));
	unsigned next = 0, done = 0, inflight = 0;
	double t0 = bench_now(), rc = -1;

	if (!items || !idx)
		goto out;
	while (done < n) {
		unsigned np = 0;

		if (bench_now() - t0 > BENCH_BRK_PHASE_TIMEOUT_S) {
			fprintf(stderr, "bench broker: %u of %u nodes done after %.0f s; giving up\n",
				done, n, BENCH_BRK_PHASE_TIMEOUT_S);
			goto out;
		}
		while (inflight < BENCH_BRK_WINDOW && next < n) {
			if (sim_connect(b, &s[next], server_key, endpoint) < 0) {
				fprintf(stderr, "bench broker: cannot connect node %u: %s\n", next,
					zmq_strerror(errno));
				goto out;
			}
			next++;
			inflight++;
		}
		for (unsigned i = 0; i < next; i++) {
			if (s[i].done && !drain)
				continue;
			items[np] = (zmq_pollitem_t){ s[i].sock, 0, s[i].sent ? ZMQ_POLLIN : ZMQ_POLLOUT, 0 };
			idx[np++] = i;
		}
		if (zmq_poll(items, (int)np, 100) < 0 && errno != EINTR)
			goto out;
		for (unsigned k = 0; k < np; k++) {
			struct sim *x = &s[idx[k]];

			if (items[k].revents & ZMQ_POLLOUT) {
				if (zmq_send(x->sock, x->msg, x->msg_len, ZMQ_DONTWAIT) == (int)x->msg_len)
					x->sent = true;
			}
			if (items[k].revents & ZMQ_POLLIN) {
				if (sim_read(b, x, kind, NULL, NULL) < 0)
					goto out;
				if (!x->done && x->got_ok && x->got_map) {
					x->done = true;
					done++;
					inflight--;
				}
			}
		}
	}
	rc = bench_now() - t0;
out:
	free(items);
	free(idx);
	return rc;
}

/* ---- the echo server (ref) ----------------------------------------------------- */

struct echo {
	void *zctx;
	ovl_zap_t *zap;
	ovl_keyring_t *kr;
	ovl_link_server_t *srv;
	uint8_t pk[OVL_KEY_BYTES], sk[OVL_KEY_BYTES];
	char endpoint[OVL_LINK_ENDPOINT_MAX_CHARS];
	volatile int stop;
	pthread_t thread;
};

static int admit_any(void *arg, const uint8_t key[OVL_KEY_BYTES],
		     const struct ovl_keyring_entry *entry, uint64_t now, int verdict)
{
	(void)arg;
	(void)key;
	(void)entry;
	(void)now;
	(void)verdict;
	return 0;
}

static void *echo_main(void *arg)
{
	struct echo *e = arg;
	struct ovl_link_peer from;
	uint8_t *buf = malloc(OVL_LINK_MAX_MSG_BYTES);
	int n;

	while (buf && !e->stop) {
		n = ovl_link_server_recv(e->srv, &from, buf, OVL_LINK_MAX_MSG_BYTES, 100);
		if (n >= 0)
			ovl_link_server_send(e->srv, &from, buf, (size_t)n, 0);
	}
	free(buf);
	return NULL;
}

static int echo_start(struct echo *e)
{
	struct ovl_link_server_cfg cfg = { 0 };
	char err[256] = "";
	int rc;

	crypto_box_keypair(e->pk, e->sk);
	e->zctx = zmq_ctx_new();
	e->kr = ovl_keyring_new();
	if (!e->zctx || !e->kr)
		return -ENOMEM;
	zmq_ctx_set(e->zctx, ZMQ_MAX_SOCKETS, 65536);
	if ((rc = ovl_zap_new(&e->zap, e->zctx, err, sizeof(err))) < 0)
		goto out;
	ovl_keyring_hook_set(e->kr, admit_any, NULL);
	if ((rc = ovl_zap_domain_set(e->zap, OVL_LINK_DOMAIN_NODE, e->kr)) < 0)
		goto out;
	cfg.endpoint = "tcp://[::1]:*";
	cfg.domain = OVL_LINK_DOMAIN_NODE;
	cfg.secret_key = e->sk;
	if ((rc = ovl_link_server_new(&e->srv, e->zap, &cfg, err, sizeof(err))) < 0)
		goto out;
	if ((rc = ovl_link_server_endpoint(e->srv, e->endpoint, sizeof(e->endpoint))) < 0)
		goto out;
	rc = -pthread_create(&e->thread, NULL, echo_main, e);
out:
	if (rc < 0)
		fprintf(stderr, "bench broker: echo server: %s (%s)\n", err, strerror(-rc));
	return rc;
}

static void echo_stop(struct echo *e)
{
	e->stop = 1;
	pthread_join(e->thread, NULL);
	ovl_link_server_destroy(&e->srv);
	ovl_zap_destroy(&e->zap);
	ovl_keyring_destroy(&e->kr);
	zmq_ctx_term(e->zctx);
}

/* ---- measurements ------------------------------------------------------------- */

static void sims_free(struct sim *s, unsigned n)
{
	for (unsigned i = 0; s && i < n; i++) {
		sim_close(&s[i]);
		ovl_id_destroy(&s[i].id);
	}
	free(s);
}

static struct sim *sims_new(struct bench_brk *b, unsigned n, enum sim_kind kind,
			    const char *group, unsigned base)
{
	struct sim *s = calloc(n, sizeof(*s));

	for (unsigned i = 0; s && i < n; i++)
		if (sim_prepare(b, &s[i], kind, group, base + i) < 0) {
			sims_free(s, i);
			return NULL;
		}
	return s;
}

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
	zmq_pollitem_t *items = NULL;
	double samples[BENCH_BRK_INTRO_SAMPLES], t;
	bool *seen = NULL;
	int rc = -1;

	snprintf(sel, sizeof(sel), "group=%s", group);
	if (slice_create(b, slice, sel) < 0)
		return -1;
	m = sims_new(b, members, SIM_BROKER, group, base);
	nc = sims_new(b, BENCH_BRK_INTRO_SAMPLES, SIM_BROKER, group, base + members);
	items = calloc(members + 1, sizeof(*items));
	seen = calloc(members, sizeof(*seen));
	if (!m || !nc || !items || !seen)
		goto out;
	t = sim_run(b, m, members, SIM_BROKER, b->server_key, b->endpoint, true);
	if (t < 0)
		goto out;
	fprintf(stderr, "# broker: %u members joined slice %s in %.2f s\n", members, slice, t);
	for (unsigned k = 0; k < BENCH_BRK_INTRO_SAMPLES; k++) {
		struct sim *x = &nc[k];
		unsigned left = members;
		double t0;

		memset(seen, 0, members * sizeof(*seen));
		if (sim_connect(b, x, b->server_key, b->endpoint) < 0)
			goto out;
		items[0] = (zmq_pollitem_t){ x->sock, 0, ZMQ_POLLOUT, 0 };
		if (zmq_poll(items, 1, 5000) != 1) {
			fprintf(stderr, "bench broker: newcomer %u: no handshake in 5 s\n", k);
			goto out;
		}
		t0 = bench_now();
		if (zmq_send(x->sock, x->msg, x->msg_len, ZMQ_DONTWAIT) != (int)x->msg_len)
			goto out;
		while (left > 0) {
			if (bench_now() - t0 > 30) {
				fprintf(stderr, "bench broker: newcomer %u: %u members without the "
					"delta after 30 s\n", k, left);
				goto out;
			}
			for (unsigned i = 0; i < members; i++)
				items[i] = (zmq_pollitem_t){ m[i].sock, 0, ZMQ_POLLIN, 0 };
			items[members] = (zmq_pollitem_t){ x->sock, 0, ZMQ_POLLIN, 0 };
			if (zmq_poll(items, (int)members + 1, 100) < 0 && errno != EINTR)
				goto out;
			for (unsigned i = 0; i < members; i++) {
				if (!(items[i].revents & ZMQ_POLLIN))
					continue;
				if (sim_read(b, &m[i], SIM_BROKER, x->id->sign_pk, &seen[i]) < 0)
					goto out;
				if (seen[i] && !m[i].done) /* done doubles as "seen" here */
					m[i].done = true;
			}
			left = 0;
			for (unsigned i = 0; i < members; i++)
				left += !seen[i];
			if (items[members].revents & ZMQ_POLLIN &&
			    sim_read(b, x, SIM_BROKER, NULL, NULL) < 0)
				goto out;
		}
		samples[k] = (bench_now() - t0) * 1000.0;
		/* the newcomer stays a member; drop its connection (the broker's sends
		 * to it then fail fast) so only the original members are read */
		sim_close(x);
	}
	qsort(samples, BENCH_BRK_INTRO_SAMPLES, sizeof(samples[0]), cmp_double);
	*p99_ms = samples[(BENCH_BRK_INTRO_SAMPLES * 99 + 99) / 100 - 1];
	*delta_bytes = b->last_delta_bytes;
	rc = 0;
out:
	free(items);
	free(seen);
	sims_free(m, members);
	sims_free(nc, BENCH_BRK_INTRO_SAMPLES);
	return rc;
}

static int broker_run(int argc, char **argv)
{
	struct bench_brk b = { 0 };
	struct echo e = { 0 };
	struct rlimit rl;
	struct sim *reg = NULL, *ref = NULL;
	unsigned n = BENCH_BRK_NODES_DEFAULT;
	const char *base = NULL;
	char cmd[PATH_MAX + 32], name[64];
	double t_ours, t_ref, p99;
	size_t d24 = 0, d1k = 0;
	long rss0, rss1;
	bool echo_up = false;
	int rc = 1;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--nodes") == 0 && i + 1 < argc)
			n = (unsigned)bench_size_arg("--nodes", argv[++i]);
		else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
			base = argv[++i];
		else {
			fprintf(stderr, "usage: shelf-bench broker [--nodes N] [--dir DIR]\n");
			return 2;
		}
	}
	if (n == 0)
		n = BENCH_BRK_NODES_DEFAULT;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		if (rl.rlim_max < BENCH_BRK_NOFILE)
			rl.rlim_max = BENCH_BRK_NOFILE; /* works as root; else keep the old */
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0 && getrlimit(RLIMIT_NOFILE, &rl) == 0) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
		getrlimit(RLIMIT_NOFILE, &rl);
		if (rl.rlim_cur < BENCH_BRK_FDS_PER_NODE * n + 4096) {
			unsigned fit = rl.rlim_cur > 8192 ?
				(unsigned)((rl.rlim_cur - 4096) / BENCH_BRK_FDS_PER_NODE) : 1024;

			fprintf(stderr, "# broker: RLIMIT_NOFILE %llu (hard limit, not raisable "
				"here) holds about %u simulated nodes in one process at %u fds "
				"each; measuring %u, not %u\n", (unsigned long long)rl.rlim_cur,
				fit, BENCH_BRK_FDS_PER_NODE, fit, n);
			n = fit;
		}
	}
	if (sodium_init() < 0)
		return 1;
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
	b.rbuf = malloc(BENCH_BRK_RECV_BYTES);
	b.zctx = zmq_ctx_new();
	if (!b.rbuf || !b.zctx)
		goto out;
	zmq_ctx_set(b.zctx, ZMQ_MAX_SOCKETS, (int)n + 4096);
	if (broker_start(&b, n + 2000 + 4 * BENCH_BRK_INTRO_SAMPLES) < 0)
		goto out;
	if (slice_create(&b, "bench-bulk", "group=bench-nobody") < 0)
		goto out;

	/* 1 and 2: N registrations, and the broker's memory for them */
	reg = sims_new(&b, n, SIM_BROKER, "bench-bulk", 0);
	ref = sims_new(&b, n, SIM_ECHO, "", 0);
	if (!reg || !ref)
		goto out;
	if (echo_start(&e) < 0)
		goto out;
	echo_up = true;
	t_ref = sim_run(&b, ref, n, SIM_ECHO, e.pk, e.endpoint, false);
	sims_free(ref, n);
	ref = NULL;
	echo_stop(&e);
	echo_up = false;
	if (t_ref < 0)
		goto out;
	usleep(500000);
	rss0 = rss_bytes(b.pid);
	t_ours = sim_run(&b, reg, n, SIM_BROKER, b.server_key, b.endpoint, false);
	if (t_ours < 0)
		goto out;
	usleep(500000);
	rss1 = rss_bytes(b.pid);
	snprintf(name, sizeof(name), "broker_register_%s",
		 n == 10000 ? "10k" : n == 100000 ? "100k" : "n");
	if (n != 10000 && n != 100000)
		fprintf(stderr, "# broker: broker_register_n measured with %u nodes\n", n);
	bench_line(name, t_ours, t_ref, "s", "ovl_link-echo-new-conn");
	snprintf(name, sizeof(name), "broker_bytes_per_node_%s",
		 n == 10000 ? "10k" : n == 100000 ? "100k" : "n");
	if (rss0 > 0 && rss1 > 0)
		bench_line(name, (double)(rss1 - rss0) / n, 0, "bytes", "-");
	sims_free(reg, n);
	reg = NULL;

	/* 3 and 4: introductions into a slice of 24, then of 1,000 members */
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
	if (echo_up)
		echo_stop(&e);
	sims_free(reg, n);
	sims_free(ref, n);
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
	.usage = "a real shelf-broker and simulated nodes [--nodes N] [--dir DIR]",
	.run = broker_run,
	.in_all = true,
};
BENCH_COMMAND(bench_broker)
