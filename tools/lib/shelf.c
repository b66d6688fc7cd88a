#include "shelf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "overlay.h"

#define SHELF_API __attribute__((visibility("default")))
#define SHELF_MAP_MAX_BYTES (16u << 20)
#define SHELF_CONNS_MAX 64
#define SHELF_SLICES_MAX 16
#define SHELF_MAP_ANSWERS 3 /* nodes asked for a map that answer, before keeping the newest */

struct map {
	char slice[OVL_MSG_NAME_SIZE];
	uint8_t *buf;          /* the encoded map; bins in msg point into it */
	size_t len;            /* bytes of it */
	struct ovl_msg msg;
	bool valid;
};

struct node_addr {
	struct in6_addr addr;
	uint16_t port;
};

struct conn {
	struct in6_addr addr;
	uint16_t port;
	int fd;
	struct ovl_wire_session ses;
	uint32_t rid;
};

struct shelf {
	char dir[512], broker[256];
	struct ovl_id *id;
	uint8_t cert[OVL_CERT_MAX_BYTES];
	size_t cert_len;
	uint8_t broker_key[OVL_KEY_BYTES];
	uint8_t broker_sign_pk[OVL_ID_BYTES]; /* checks map signatures (PROTOCOL.md 6.4) */
	struct node_addr nodes[SHELF_NODES_MAX]; /* asked for maps when no broker answers */
	unsigned nnodes;
	char map_source[96];                  /* where the last map came from */
	ovl_keyring_t *kr;
	struct ovl_peers *peers;
	void *zctx;
	ovl_link_client_t *link;
	struct map maps[SHELF_SLICES_MAX];
	struct conn conns[SHELF_CONNS_MAX];
	unsigned nconns;
	int timeout_ms;
	shelf_progress_cb progress;
	void *progress_arg;
};

static bool all_zero(const uint8_t *p, size_t n)
{
	uint8_t acc = 0;

	for (size_t i = 0; i < n; i++)
		acc |= p[i];
	return acc == 0;
}

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return code;
}

static int read_file(const char *path, uint8_t *buf, size_t cap, size_t *len)
{
	FILE *f = fopen(path, "rb");
	size_t n;

	if (!f)
		return -errno;
	n = fread(buf, 1, cap - 1, f);
	fclose(f);
	buf[n] = 0;
	*len = n;
	return 0;
}

SHELF_API int shelf_open(struct shelf **out, const char *dir, const char *broker, char *err,
			 size_t errlen)
{
	struct shelf *s = calloc(1, sizeof(*s));
	uint8_t buf[OVL_CERT_MAX_BYTES + 1], ca[OVL_ID_BYTES];
	char path[600];
	size_t len;
	int ret;

	*out = NULL;
	if (!s)
		return -ENOMEM;
	s->timeout_ms = SHELF_TIMEOUT_MS_DEFAULT;
	snprintf(s->dir, sizeof(s->dir), "%s", dir);
	snprintf(s->broker, sizeof(s->broker), "%s", broker ? broker : "");
	snprintf(path, sizeof(path), "%s/id.key", dir);
	ret = ovl_id_load(&s->id, path, err, errlen);
	if (ret < 0)
		goto out;
	snprintf(path, sizeof(path), "%s/client.cert", dir);
	if ((ret = read_file(path, s->cert, sizeof(s->cert), &s->cert_len)) < 0) {
		fail(err, errlen, ret, "cannot read client certificate '%s': %s", path, strerror(-ret));
		goto out;
	}
	snprintf(path, sizeof(path), "%s/ca.pub", dir);
	if ((ret = read_file(path, buf, sizeof(buf), &len)) < 0 || len < 64 ||
	    (buf[64] = 0, ovl_nodeid_parse((const char *)buf, ca) < 0)) {
		ret = fail(err, errlen, -EINVAL, "cannot read the site CA key from '%s'", path);
		goto out;
	}
	snprintf(path, sizeof(path), "%s/broker.pub", dir);
	if ((ret = read_file(path, buf, sizeof(buf), &len)) < 0 ||
	    (buf[strcspn((char *)buf, "\r\n")] = 0, ovl_key_z85_decode((char *)buf, s->broker_key) < 0)) {
		ret = fail(err, errlen, -EINVAL, "cannot read the broker key from '%s'", path);
		goto out;
	}
	s->kr = ovl_keyring_new();
	if (!s->kr || ovl_peers_new(&s->peers, ca, s->kr) < 0) {
		ret = -ENOMEM;
		goto out;
	}
	snprintf(path, sizeof(path), "%s/broker.cert", dir);
	if ((ret = read_file(path, buf, sizeof(buf), &len)) < 0) {
		fail(err, errlen, ret, "cannot read broker certificate '%s'", path);
		goto out;
	}
	ret = ovl_peers_add_broker(s->peers, buf, len, (uint64_t)time(NULL), err, errlen);
	if (ret < 0)
		goto out;
	{
		struct ovl_cert bc;

		if ((ret = ovl_cert_decode(&bc, buf, len, err, errlen)) < 0)
			goto out;
		memcpy(s->broker_sign_pk, bc.sign_pk, OVL_ID_BYTES);
	}
	*out = s;
	s = NULL;
out:
	shelf_close(&s);
	return ret;
}

static void conn_close(struct conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	ovl_wire_session_clear(&c->ses);
}

SHELF_API void shelf_close(struct shelf **sp)
{
	struct shelf *s = sp ? *sp : NULL;

	if (!s)
		return;
	for (unsigned i = 0; i < s->nconns; i++)
		conn_close(&s->conns[i]);
	for (unsigned i = 0; i < SHELF_SLICES_MAX; i++) {
		if (s->maps[i].valid)
			ovl_msg_release(&s->maps[i].msg);
		free(s->maps[i].buf);
	}
	ovl_link_client_destroy(&s->link);
	if (s->zctx)
		zmq_ctx_term(s->zctx);
	ovl_peers_destroy(&s->peers);
	ovl_keyring_destroy(&s->kr);
	ovl_id_destroy(&s->id);
	free(s);
	*sp = NULL;
}

SHELF_API void shelf_set_timeout(struct shelf *s, int timeout_ms)
{
	s->timeout_ms = timeout_ms > 0 ? timeout_ms : SHELF_TIMEOUT_MS_DEFAULT;
}

SHELF_API void shelf_set_progress(struct shelf *s, shelf_progress_cb cb, void *arg)
{
	s->progress = cb;
	s->progress_arg = arg;
}

/* ---- maps from the broker, cached in the client directory ---- */

static void cache_path(const struct shelf *s, const char *slice, char *out, size_t len)
{
	snprintf(out, len, "%s/cache/%s.map", s->dir, slice);
}

/* Keep the map for when no broker answers: temp file, fsync, rename. */
static void cache_store(const struct shelf *s, const char *slice, const uint8_t *buf, size_t len)
{
	char path[700], tmp[720];
	FILE *f;

	snprintf(path, sizeof(path), "%s/cache", s->dir);
	mkdir(path, 0700);
	cache_path(s, slice, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "wb");
	if (!f)
		return;
	if (fwrite(buf, 1, len, f) == len && fflush(f) == 0 && fsync(fileno(f)) == 0) {
		fclose(f);
		rename(tmp, path);
		return;
	}
	fclose(f);
	unlink(tmp);
}

/* Decode a map (from the broker, a node or the cache) into m and check the
 * broker's signature over it. */
static int map_decode(const struct shelf *s, struct map *m, const char *slice, size_t len,
		      char *err, size_t errlen)
{
	char e2[256];
	int ret = ovl_msg_decode(m->buf, len, &m->msg, e2, sizeof(e2));

	if (ret < 0)
		return fail(err, errlen, -EBADMSG, "map of slice '%s': %s", slice, e2);
	if (m->msg.type == OVL_MSG_ERROR) {
		ret = m->msg.u.error.code == OVL_MSG_ERR_NOT_FOUND ? -ENOENT : -EACCES;
		fail(err, errlen, ret, "slice '%s': %s", slice, m->msg.u.error.message);
		ovl_msg_release(&m->msg);
		return ret;
	}
	if (m->msg.type != OVL_MSG_MAP || strcmp(m->msg.u.map.slice, slice) != 0) {
		ovl_msg_release(&m->msg);
		return fail(err, errlen, -EBADMSG, "expected the map of slice '%s'", slice);
	}
	if (ovl_msg_map_verify(&m->msg.u.map, s->broker_sign_pk) < 0) {
		ret = fail(err, errlen, -EKEYREJECTED, "map of slice '%s' epoch %llu: %s", slice,
			   (unsigned long long)m->msg.u.map.epoch,
			   all_zero(m->msg.u.map.sig, sizeof(m->msg.u.map.sig))
				   ? "not signed by a broker"
				   : "the broker's signature does not verify");
		ovl_msg_release(&m->msg);
		return ret;
	}
	snprintf(m->slice, sizeof(m->slice), "%s", slice);
	m->len = len;
	m->valid = true;
	return 0;
}

static int cache_load(struct shelf *s, struct map *m, const char *slice, char *err, size_t errlen)
{
	char path[700];
	size_t len = 0;

	cache_path(s, slice, path, sizeof(path));
	if (read_file(path, m->buf, SHELF_MAP_MAX_BYTES, &len) < 0)
		return -ENOENT;
	return map_decode(s, m, slice, len, err, errlen);
}

static int broker_fetch(struct shelf *s, struct map *m, const char *slice, char *err,
			size_t errlen);

static int nodes_fetch(struct shelf *s, struct map *m, const char *slice, char *err,
		       size_t errlen);

/*
 * The map from the broker; when no broker answers, the newest of the
 * cached one and those nodes hold (the nodes given with shelf_add_node()
 * and the members of the cached map).
 */
static int map_fetch(struct shelf *s, const char *slice, struct map **out, char *err, size_t errlen)
{
	struct map *m = NULL;
	char e3[384];
	int ret;

	for (unsigned i = 0; i < SHELF_SLICES_MAX && !m; i++)
		if (!s->maps[i].slice[0] || strcmp(s->maps[i].slice, slice) == 0)
			m = &s->maps[i];
	if (!m)
		m = &s->maps[0];
	if (m->valid)
		ovl_msg_release(&m->msg);
	m->valid = false;
	if (!m->buf && !(m->buf = malloc(SHELF_MAP_MAX_BYTES)))
		return -ENOMEM;
	if (s->broker[0])
		ret = broker_fetch(s, m, slice, err, errlen);
	else
		ret = fail(err, errlen, -EHOSTUNREACH, "no broker given");
	if (ret == -EHOSTUNREACH) {
		/* the broker is out of the data path: keep going */
		int r2 = nodes_fetch(s, m, slice, e3, sizeof(e3));

		if (r2 == 0) {
			ret = 0;
		} else {
			char e4[256];

			snprintf(e4, sizeof(e4), "%s", err);
			fail(err, errlen, ret, "%s; %s", e4, e3);
		}
	}
	if (ret == 0)
		*out = m;
	return ret;
}

static int broker_fetch(struct shelf *s, struct map *m, const char *slice, char *err,
			size_t errlen)
{
	struct ovl_link_opts lo = ovl_link_opts_default;
	struct ovl_link_client_cfg cfg = { 0 };
	struct ovl_msg req;
	msgpack_sbuffer sb;
	char e2[256];
	int ret;

	if (!s->link) {
		s->zctx = s->zctx ? s->zctx : zmq_ctx_new();
		lo.max_msg_bytes = SHELF_MAP_MAX_BYTES;
		lo.linger_ms = 0;
		cfg.endpoint = s->broker;
		cfg.server_key = s->broker_key;
		cfg.secret_key = s->id->curve_sk;
		cfg.opts = &lo;
		if (!s->zctx || ovl_link_client_new(&s->link, s->zctx, &cfg, e2, sizeof(e2)) < 0)
			return fail(err, errlen, -EHOSTUNREACH, "cannot reach broker '%s': %s", s->broker, e2);
		ret = ovl_link_client_wait_ready(s->link, s->timeout_ms, e2, sizeof(e2));
		if (ret < 0) {
			ovl_link_client_destroy(&s->link);
			return fail(err, errlen, -EHOSTUNREACH, "cannot reach broker '%s': %s", s->broker, e2);
		}
	}
	ovl_msg_init(&req, OVL_MSG_MAP_GET);
	snprintf(req.u.map_get.slice, sizeof(req.u.map_get.slice), "%s", slice);
	req.rid = 1;
	msgpack_sbuffer_init(&sb);
	ret = ovl_msg_encode(&req, &sb, e2, sizeof(e2));
	if (ret == 0)
		ret = ovl_link_client_send(s->link, sb.data, sb.size, s->timeout_ms);
	msgpack_sbuffer_destroy(&sb);
	if (ret < 0)
		return fail(err, errlen, -EHOSTUNREACH, "cannot send to broker '%s'", s->broker);
	ret = ovl_link_client_recv(s->link, m->buf, SHELF_MAP_MAX_BYTES, s->timeout_ms);
	if (ret < 0) {
		ovl_link_client_destroy(&s->link); /* a late answer must not be read as the next */
		return fail(err, errlen, -EHOSTUNREACH, "broker '%s' did not answer within %d ms",
			    s->broker, s->timeout_ms);
	}
	{
		size_t len = (size_t)ret;

		ret = map_decode(s, m, slice, len, err, errlen);
		if (ret == 0) {
			cache_store(s, slice, m->buf, len);
			snprintf(s->map_source, sizeof(s->map_source), "broker %.80s", s->broker);
		}
	}
	return ret;
}

/*
 * The map to use: the one in memory, else the cached one (nodes answer
 * stale-map when it is behind, and then it is fetched again), else the
 * broker's.
 */
static int map_get(struct shelf *s, const char *slice, struct map **out, char *err, size_t errlen)
{
	struct map *free_slot = NULL;
	char e2[256];

	for (unsigned i = 0; i < SHELF_SLICES_MAX; i++) {
		if (s->maps[i].valid && strcmp(s->maps[i].slice, slice) == 0) {
			*out = &s->maps[i];
			return 0;
		}
		if (!free_slot && !s->maps[i].valid)
			free_slot = &s->maps[i];
	}
	if (free_slot && (free_slot->buf || (free_slot->buf = malloc(SHELF_MAP_MAX_BYTES))) &&
	    cache_load(s, free_slot, slice, e2, sizeof(e2)) == 0) {
		*out = free_slot;
		return 0;
	}
	return map_fetch(s, slice, out, err, errlen);
}

/* The member holding key (the primary, by placement over members up). */
static int locate(struct shelf *s, const struct map *m, const void *key, size_t klen,
		  const struct ovl_msg_member **out, char *err, size_t errlen)
{
	const struct ovl_msg_map *mp = &m->msg.u.map;
	struct ovl_place_member *pm = calloc(mp->n_members ? mp->n_members : 1, sizeof(*pm));
	unsigned pick = 0;
	int n;

	if (!pm)
		return -ENOMEM;
	for (uint32_t i = 0; i < mp->n_members; i++) {
		memcpy(pm[i].id, mp->members[i].id, 32);
		/* out members hold no data: placement leaves them out */
		pm[i].weight = mp->members[i].state == OVL_MSG_STATE_OUT ? 0 : mp->members[i].capacity;
		pm[i].site = mp->members[i].domain.site;
		pm[i].chassis = mp->members[i].domain.chassis;
		pm[i].slot = mp->members[i].domain.slot;
	}
	n = ovl_place(pm, mp->n_members, key, klen, 1, &pick);
	free(pm);
	if (n <= 0)
		return fail(err, errlen, -EHOSTUNREACH, "slice '%s' has no member to hold objects",
			    m->slice);
	*out = &mp->members[pick];
	return 0;
}

/* ---- node connections ---- */

static int io_full(int fd, uint8_t *buf, size_t n, bool wr)
{
	while (n) {
		ssize_t r = wr ? send(fd, buf, n, MSG_NOSIGNAL) : recv(fd, buf, n, 0);

		if (r <= 0)
			return r == 0 ? -ECONNRESET : -errno;
		buf += r;
		n -= (size_t)r;
	}
	return 0;
}

#define PROGRESS_STEP (256u * 1024)

/* A payload, in steps that report progress. */
static int io_payload(const struct shelf *s, int fd, uint8_t *buf, size_t n, bool wr)
{
	size_t done = 0;

	while (done < n) {
		size_t step = n - done < PROGRESS_STEP ? n - done : PROGRESS_STEP;
		int ret = io_full(fd, buf + done, step, wr);

		if (ret < 0)
			return ret;
		done += step;
		if (s->progress)
			s->progress(s->progress_arg, done, n);
	}
	return 0;
}

static int read_head(int fd, bool authed, uint8_t *buf, struct ovl_wire_hdr *h)
{
	size_t need = 0;
	char e[128];
	int ret = io_full(fd, buf, OVL_WIRE_HDR_BYTES, false);

	if (ret < 0)
		return ret;
	if (ovl_wire_head_need(buf, OVL_WIRE_HDR_BYTES, authed, h, &need, e, sizeof(e)) < 0)
		return -EBADMSG;
	if (need && (ret = io_full(fd, buf + OVL_WIRE_HDR_BYTES, need, false)) < 0)
		return ret;
	return (int)(OVL_WIRE_HDR_BYTES + need);
}

static int tcp_connect(const struct in6_addr *a, uint16_t port, int timeout_ms)
{
	struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_addr = *a, .sin6_port = htons(port) };
	struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
	struct pollfd p;
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), one = 1, soerr = 0;
	socklen_t sl = sizeof(soerr);

	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
		int e = -errno;

		close(fd);
		return e;
	}
	p = (struct pollfd){ fd, POLLOUT, 0 };
	if (poll(&p, 1, timeout_ms) <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 ||
	    soerr) {
		close(fd);
		return soerr ? -soerr : -ETIMEDOUT;
	}
	fcntl(fd, F_SETFL, 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static int conn_get(struct shelf *s, const uint8_t addr[16], uint16_t port, const char *slice,
		    struct conn **out, char *err, size_t errlen)
{
	struct ovl_wire_hs_cfg cfg = { 0 };
	struct ovl_wire_hs *hs = NULL;
	struct ovl_wire_hdr h;
	uint8_t buf[OVL_WIRE_HEAD_MAX_BYTES];
	char text[INET6_ADDRSTRLEN], e2[256];
	struct conn *c = NULL;
	uint32_t status = 0;
	int ret, n = 0;

	for (unsigned i = 0; i < s->nconns; i++)
		if (s->conns[i].fd >= 0 && s->conns[i].port == port &&
		    memcmp(&s->conns[i].addr, addr, 16) == 0) {
			*out = &s->conns[i];
			return 0;
		}
	for (unsigned i = 0; i < s->nconns && !c; i++)
		if (s->conns[i].fd < 0)
			c = &s->conns[i];
	if (!c && s->nconns < SHELF_CONNS_MAX)
		c = &s->conns[s->nconns++];
	if (!c) {
		c = &s->conns[0];
		conn_close(c);
	}
	memset(c, 0, sizeof(*c));
	memcpy(&c->addr, addr, 16);
	c->port = port;
	inet_ntop(AF_INET6, addr, text, sizeof(text));
	c->fd = tcp_connect(&c->addr, c->port, s->timeout_ms);
	if (c->fd < 0) {
		ret = c->fd;
		c->fd = -1;
		return fail(err, errlen, -EHOSTUNREACH, "node %s port %u: %s", text, port,
			    ret == -ETIMEDOUT ? "did not answer in time" : strerror(-ret));
	}
	cfg.id = s->id;
	cfg.cert = s->cert;
	cfg.cert_len = s->cert_len;
	cfg.peers = s->peers;
	cfg.now = (uint64_t)time(NULL);
	cfg.slice = slice;
	ret = ovl_wire_client_new(&hs, &cfg, e2, sizeof(e2));
	if (ret == 0 && (n = ovl_wire_client_hello(hs, buf, sizeof(buf), e2, sizeof(e2))) > 0)
		ret = io_full(c->fd, buf, (size_t)n, true);
	if (ret == 0 && (n = read_head(c->fd, false, buf, &h)) < 0)
		ret = n;
	if (ret == 0)
		ret = ovl_wire_client_finish(hs, buf, (size_t)n, &status, e2, sizeof(e2));
	if (ret == 0)
		ret = ovl_wire_hs_session(hs, &c->ses);
	ovl_wire_hs_destroy(&hs);
	if (ret < 0) {
		conn_close(c);
		if (ret == -EAGAIN || ret == -ETIMEDOUT)
			return fail(err, errlen, -EHOSTUNREACH, "node %s did not answer within %d ms",
				    text, s->timeout_ms);
		return fail(err, errlen, ret == -ECONNREFUSED ? -EACCES : ret,
			    "handshake with node %s: %s", text, e2[0] ? e2 : strerror(-ret));
	}
	*out = c;
	return 0;
}

/*
 * One request on a connection: send, read the response and its payload.
 * With encrypt, a request payload goes out as AEAD chunks and a response
 * payload must arrive as chunks (PROTOCOL.md 7.6); *out is the plaintext.
 */
static int call(struct shelf *s, struct conn *c, uint8_t type, struct ovl_wire_req *q,
		const void *payload, size_t plen, bool encrypt, struct ovl_wire_resp *r,
		uint8_t **out, size_t *outlen, char *err, size_t errlen)
{
	struct ovl_wire_hdr h = { 0 }, rh;
	uint8_t meta[OVL_WIRE_META_MAX_BYTES], head[OVL_WIRE_HEAD_MAX_BYTES], *body = NULL;
	uint8_t *sealed = NULL;
	const uint8_t *rmeta = NULL;
	char e2[256] = "", text[INET6_ADDRSTRLEN];
	uint64_t plain = 0;
	int mlen, hl, ret, n = 0;

	inet_ntop(AF_INET6, &c->addr, text, sizeof(text));
	q->type = type;
	mlen = ovl_wire_req_encode(q, meta, sizeof(meta), e2, sizeof(e2));
	if (mlen < 0)
		return fail(err, errlen, -EINVAL, "%s", e2);
	h.type = type;
	h.payload_len = plen;
	if (encrypt && plen) {
		h.flags = OVL_WIRE_FLAG_ENCRYPTED;
		h.payload_len = ovl_wire_sealed_len(plen);
		sealed = malloc(h.payload_len);
		if (!sealed)
			return -ENOMEM;
	}
	h.rid = ++c->rid;
	hl = ovl_wire_head_seal(&c->ses, &h, meta, (size_t)mlen, head, sizeof(head), e2, sizeof(e2));
	if (hl < 0) {
		free(sealed);
		return fail(err, errlen, -EINVAL, "%s", e2);
	}
	if (sealed) {
		uint8_t *dst = sealed;

		/* each chunk is bound to this frame's header, direction, seq and index */
		for (size_t off = 0, i = 0; off < plen; off += OVL_WIRE_CHUNK_BYTES, i++) {
			size_t k = plen - off < OVL_WIRE_CHUNK_BYTES ? plen - off : OVL_WIRE_CHUNK_BYTES;

			memcpy(dst, (const uint8_t *)payload + off, k);
			ovl_wire_chunk_seal(&c->ses, head, (uint32_t)i, dst, k);
			dst += k + OVL_WIRE_TAG_BYTES;
		}
		payload = sealed;
		plen = h.payload_len;
	}
	ret = io_full(c->fd, head, (size_t)hl, true);
	if (ret == 0 && plen)
		ret = io_payload(s, c->fd, (uint8_t *)payload, plen, true);
	free(sealed);
	if (ret == 0 && (n = read_head(c->fd, true, head, &rh)) < 0)
		ret = n;
	if (ret < 0)
		goto io_err;
	if (ovl_wire_head_open(&c->ses, head, (size_t)n, &rh, &rmeta, e2, sizeof(e2)) < 0 ||
	    rh.rid != h.rid ||
	    ovl_wire_resp_decode(rh.type, rmeta, rh.meta_len, r, e2, sizeof(e2)) < 0) {
		conn_close(c);
		return fail(err, errlen, -EBADMSG, "node %s sent a bad response: %s", text, e2);
	}
	plain = rh.payload_len;
	if (rh.payload_len) {
		bool enc = rh.flags & OVL_WIRE_FLAG_ENCRYPTED;

		/* an encrypted answer is always welcome (its tags prove it); a
		 * plaintext one on a slice that requires encryption is not */
		if (!enc && encrypt) {
			conn_close(c);
			return fail(err, errlen, -EPROTO, "node %s sent a plaintext payload on a slice "
				    "that requires encryption", text);
		}
		if (enc && ovl_wire_plain_len(rh.payload_len, &plain) < 0) {
			conn_close(c);
			return fail(err, errlen, -EBADMSG, "node %s sent an invalid encrypted length", text);
		}
		body = malloc(rh.payload_len);
		if (!body)
			return -ENOMEM;
		ret = io_payload(s, c->fd, body, rh.payload_len, false);
		if (ret < 0) {
			free(body);
			goto io_err;
		}
		if (enc) {
			uint8_t *src = body, *dst = body;

			for (uint64_t off = 0, i = 0; off < plain; off += OVL_WIRE_CHUNK_BYTES, i++) {
				size_t k = plain - off < OVL_WIRE_CHUNK_BYTES ? (size_t)(plain - off)
									     : OVL_WIRE_CHUNK_BYTES;

				if (ovl_wire_chunk_open(&c->ses, head, (uint32_t)i, src, k) < 0) {
					free(body);
					conn_close(c);
					return fail(err, errlen, -EIO,
						    "node %s: payload chunk %llu failed authentication",
						    text, (unsigned long long)i);
				}
				memmove(dst, src, k);
				src += k + OVL_WIRE_TAG_BYTES;
				dst += k;
			}
		}
	}
	if (out) {
		*out = body;
		*outlen = (size_t)plain;
	} else {
		free(body);
	}
	return 0;
io_err:
	conn_close(c);
	if (ret == -EAGAIN || ret == -EWOULDBLOCK || ret == -ETIMEDOUT)
		return fail(err, errlen, -EHOSTUNREACH, "node %s did not answer within %d ms", text,
			    s->timeout_ms);
	return fail(err, errlen, -EHOSTUNREACH, "node %s: %s", text, strerror(-ret));
}

static int status_errno(uint32_t st)
{
	switch (st) {
	case OVL_WIRE_OK: return 0;
	case OVL_WIRE_NOT_FOUND: return -ENOENT;
	case OVL_WIRE_NO_SPACE: return -ENOSPC;
	case OVL_WIRE_TOO_LARGE: return -E2BIG;
	case OVL_WIRE_CHECKSUM_MISMATCH: return -EIO;
	case OVL_WIRE_AUTH_FAILED:
	case OVL_WIRE_WRONG_SLICE: return -EACCES;
	case OVL_WIRE_BUSY: return -EBUSY;
	case OVL_WIRE_READ_ONLY: return -EROFS;
	case OVL_WIRE_TIMEOUT: return -ETIMEDOUT;
	case OVL_WIRE_STALE_MAP: return -ESTALE;
	default: return -EPROTO;
	}
}

/*
 * Run one keyed request against the key's node, refreshing the map and
 * retrying once on stale-map or a node that went away.
 */
static int keyed(struct shelf *s, const char *what, const char *slice, uint8_t type,
		 const void *key, size_t klen, struct ovl_wire_req *q, const void *payload,
		 size_t plen, struct ovl_wire_resp *r, uint8_t **out, size_t *outlen, char *err,
		 size_t errlen)
{
	char e2[384], kshow[80], text[INET6_ADDRSTRLEN];
	int ret = 0;

	snprintf(kshow, sizeof(kshow), "%.*s", (int)(klen < 64 ? klen : 64), (const char *)key);
	if (!slice || !*slice || klen == 0 || klen > OVL_WIRE_KEY_MAX_BYTES)
		return fail(err, errlen, -EINVAL, "%s '%s': the key must be 1..%u bytes and a slice named",
			    what, kshow, OVL_WIRE_KEY_MAX_BYTES);
	for (int attempt = 0; attempt < 2; attempt++) {
		struct map *m = NULL;
		const struct ovl_msg_member *mb = NULL;
		struct conn *c = NULL;

		ret = attempt ? map_fetch(s, slice, &m, e2, sizeof(e2)) : map_get(s, slice, &m, e2, sizeof(e2));
		if (ret == 0)
			ret = locate(s, m, key, klen, &mb, e2, sizeof(e2));
		if (ret < 0)
			break;
		inet_ntop(AF_INET6, mb->addr, text, sizeof(text));
		if (mb->state == OVL_MSG_STATE_DOWN && attempt == 0)
			continue; /* the map may be newer at the broker */
		ret = conn_get(s, mb->addr, mb->port, slice, &c, e2, sizeof(e2));
		if (ret == 0) {
			snprintf(q->slice, sizeof(q->slice), "%s", slice);
			q->epoch = m->msg.u.map.epoch;
			memcpy(q->key, key, klen);
			q->key_len = (uint32_t)klen;
			ret = call(s, c, type, q, payload, plen, m->msg.u.map.encrypt, r, out,
				   outlen, e2, sizeof(e2));
		}
		if (ret == 0 && r->status == OVL_WIRE_STALE_MAP && attempt == 0) {
			if (out) {
				free(*out);
				*out = NULL;
			}
			continue;
		}
		if (ret == 0 && r->status != OVL_WIRE_OK) {
			ret = status_errno(r->status);
			snprintf(e2, sizeof(e2), "node %s: %s%s%s", text,
				 ovl_wire_status_name(r->status) ? ovl_wire_status_name(r->status) : "error",
				 r->message[0] ? ": " : "", r->message);
			if (out) {
				free(*out);
				*out = NULL;
			}
		}
		if (ret != -EHOSTUNREACH || attempt)
			break;
	}
	if (ret < 0)
		fail(err, errlen, ret, "%s '%s': %s", what, kshow, e2);
	return ret;
}

/* Replace m with the map in buf[0..len) when it verifies and is newer. */
static bool map_offer(struct shelf *s, struct map *m, const char *slice, uint8_t *buf, size_t len,
		      const char *source, char *err, size_t errlen)
{
	struct map t = { .buf = buf };

	if (len >= SHELF_MAP_MAX_BYTES || map_decode(s, &t, slice, len, err, errlen) < 0)
		return false;
	if (m->valid && t.msg.u.map.epoch <= m->msg.u.map.epoch) {
		ovl_msg_release(&t.msg);
		return false;
	}
	ovl_msg_release(&t.msg);
	if (m->valid)
		ovl_msg_release(&m->msg);
	m->valid = false;
	memcpy(m->buf, buf, len);
	if (map_decode(s, m, slice, len, err, errlen) < 0)
		return false;
	snprintf(s->map_source, sizeof(s->map_source), "%s", source);
	return true;
}

static int nodes_fetch(struct shelf *s, struct map *m, const char *slice, char *err,
		       size_t errlen)
{
	struct node_addr *cand = NULL;
	unsigned ncand = 0, answers = 0;
	char e2[384] = "no node address known (give one with --node or SHELF_NODES)";
	char text[INET6_ADDRSTRLEN + 16];
	bool from_node = false;
	size_t cap;

	{
		char ec[256]; /* a cache that does not verify is only a missed chance */

		if (cache_load(s, m, slice, ec, sizeof(ec)) == 0)
			snprintf(s->map_source, sizeof(s->map_source), "cache");
	}
	cap = s->nnodes + (m->valid ? m->msg.u.map.n_members : 0);
	cand = calloc(cap ? cap : 1, sizeof(*cand));
	if (!cand)
		return -ENOMEM;
	for (unsigned i = 0; i < s->nnodes; i++)
		cand[ncand++] = s->nodes[i];
	for (uint32_t i = 0; m->valid && i < m->msg.u.map.n_members; i++) {
		const struct ovl_msg_member *mb = &m->msg.u.map.members[i];

		if (mb->state == OVL_MSG_STATE_OUT)
			continue;
		memcpy(&cand[ncand].addr, mb->addr, 16);
		cand[ncand++].port = mb->port;
	}
	for (unsigned i = 0; i < ncand && answers < SHELF_MAP_ANSWERS; i++) {
		struct ovl_wire_req q = { 0 };
		struct ovl_wire_resp r;
		struct conn *c = NULL;
		uint8_t *body = NULL;
		size_t blen = 0;
		int ret;

		inet_ntop(AF_INET6, &cand[i].addr, text, INET6_ADDRSTRLEN);
		snprintf(q.slice, sizeof(q.slice), "%s", slice);
		q.epoch = m->valid ? m->msg.u.map.epoch : 0;
		ret = conn_get(s, (const uint8_t *)&cand[i].addr, cand[i].port, slice, &c, e2,
			       sizeof(e2));
		if (ret == 0)
			ret = call(s, c, OVL_WIRE_T_MAP, &q, NULL, 0, false, &r, &body, &blen, e2,
				   sizeof(e2));
		if (ret == 0 && r.status != OVL_WIRE_OK) {
			ret = status_errno(r.status);
			snprintf(e2, sizeof(e2), "node %s: %s: %s", text,
				 ovl_wire_status_name(r.status) ? ovl_wire_status_name(r.status) : "error",
				 r.message);
		} else if (ret == 0 && r.has_crc && ovl_crc32c(0, body, blen) != r.crc) {
			ret = -EIO;
			snprintf(e2, sizeof(e2), "node %s: map checksum mismatch in transit", text);
		}
		if (ret == 0) {
			char src[96], e3[256] = "";

			snprintf(src, sizeof(src), "node %s", text);
			answers++;
			if (map_offer(s, m, slice, body, blen, src, e3, sizeof(e3)))
				from_node = true;
			else if (e3[0])
				snprintf(e2, sizeof(e2), "node %s: %s", text, e3);
		}
		free(body);
	}
	free(cand);
	if (!m->valid)
		return fail(err, errlen, -EHOSTUNREACH, "no map of slice '%s' from any node: %s", slice,
			    e2);
	if (from_node)
		cache_store(s, slice, m->buf, m->len); /* for the next start without broker */
	return 0;
}

SHELF_API int shelf_put(struct shelf *s, const char *slice, const void *key, size_t klen,
			const void *data, size_t len, char *err, size_t errlen)
{
	struct ovl_wire_req q = { 0 };
	struct ovl_wire_resp r;

	q.size = len;
	q.crc = ovl_crc32c(0, data, len);
	return keyed(s, "put", slice, OVL_WIRE_T_PUT, key, klen, &q, data, len, &r, NULL, NULL, err,
		     errlen);
}

SHELF_API int shelf_get(struct shelf *s, const char *slice, const void *key, size_t klen,
			uint64_t off, uint64_t len, void **data, size_t *dlen, uint64_t *total,
			char *err, size_t errlen)
{
	struct ovl_wire_req q = { 0 };
	struct ovl_wire_resp r;
	uint8_t *body = NULL;
	size_t blen = 0;
	int ret;

	*data = NULL;
	*dlen = 0;
	if (off || len != UINT64_MAX) {
		q.has_range = true;
		q.offset = off;
		q.length = len;
	}
	ret = keyed(s, "get", slice, OVL_WIRE_T_GET, key, klen, &q, NULL, 0, &r, &body, &blen, err,
		    errlen);
	if (ret < 0)
		return ret;
	/* end to end: what arrived is what the node read and verified */
	if (r.has_crc && ovl_crc32c(0, body, blen) != r.crc) {
		free(body);
		return fail(err, errlen, -EIO, "get '%.*s': payload checksum mismatch in transit",
			    (int)(klen < 64 ? klen : 64), (const char *)key);
	}
	*data = body ? body : malloc(1);
	*dlen = blen;
	if (total)
		*total = r.size;
	return 0;
}

SHELF_API int shelf_delete(struct shelf *s, const char *slice, const void *key, size_t klen,
			   char *err, size_t errlen)
{
	struct ovl_wire_req q = { 0 };
	struct ovl_wire_resp r;

	return keyed(s, "rm", slice, OVL_WIRE_T_DELETE, key, klen, &q, NULL, 0, &r, NULL, NULL, err,
		     errlen);
}

SHELF_API int shelf_stat(struct shelf *s, const char *slice, const void *key, size_t klen,
			 struct shelf_objstat *st, char *err, size_t errlen)
{
	struct ovl_wire_req q = { 0 };
	struct ovl_wire_resp r;
	int ret = keyed(s, "stat", slice, OVL_WIRE_T_STAT, key, klen, &q, NULL, 0, &r, NULL, NULL,
			err, errlen);

	if (ret == 0) {
		st->size = r.size;
		st->crc = r.crc;
		st->seq = r.seq;
	}
	return ret;
}

SHELF_API int shelf_locate(struct shelf *s, const char *slice, const void *key, size_t klen,
			   char *addr, size_t addrlen, uint16_t *port, char *err, size_t errlen)
{
	struct map *m = NULL;
	const struct ovl_msg_member *mb = NULL;
	int ret = map_get(s, slice, &m, err, errlen);

	if (ret == 0)
		ret = locate(s, m, key, klen, &mb, err, errlen);
	if (ret == 0) {
		inet_ntop(AF_INET6, mb->addr, addr, (socklen_t)addrlen);
		*port = mb->port;
	}
	return ret;
}

struct klist {
	struct ovl_wire_bin *k;
	uint8_t **owned;
	size_t n, cap;
};

static int kcmp(const void *a, const void *b)
{
	const struct ovl_wire_bin *x = a, *y = b;
	int c = memcmp(x->ptr, y->ptr, x->len < y->len ? x->len : y->len);

	return c ? c : (x->len > y->len) - (x->len < y->len);
}

SHELF_API int shelf_list(struct shelf *s, const char *slice, const void *prefix, size_t plen,
			 const void *after, size_t alen, unsigned limit, shelf_list_cb cb,
			 void *arg, char *err, size_t errlen)
{
	struct map *m = NULL;
	struct klist all = { 0 };
	char e2[384], text[INET6_ADDRSTRLEN];
	unsigned given = 0;
	int ret;

	if (!limit)
		limit = 1000;
	if (limit > OVL_WIRE_LIST_MAX || plen > OVL_WIRE_KEY_MAX_BYTES || alen > OVL_WIRE_KEY_MAX_BYTES)
		return fail(err, errlen, -EINVAL, "ls: limit at most %u, prefix at most %u bytes",
			    OVL_WIRE_LIST_MAX, OVL_WIRE_KEY_MAX_BYTES);
	ret = map_fetch(s, slice, &m, err, errlen);
	if (ret < 0)
		return ret;
	/* every node holds part of the slice: ask each, merge in key order */
	for (uint32_t i = 0; i < m->msg.u.map.n_members; i++) {
		const struct ovl_msg_member *mb = &m->msg.u.map.members[i];
		struct ovl_wire_req q = { 0 };
		struct ovl_wire_resp r;
		struct ovl_wire_bin *keys = NULL;
		uint32_t nk = 0;
		struct conn *c = NULL;
		uint8_t *body = NULL;
		size_t blen = 0;

		if (mb->state == OVL_MSG_STATE_OUT)
			continue;
		inet_ntop(AF_INET6, mb->addr, text, sizeof(text));
		snprintf(q.slice, sizeof(q.slice), "%s", slice);
		q.epoch = m->msg.u.map.epoch;
		if (plen)
			memcpy(q.key, prefix, plen);
		q.key_len = (uint32_t)plen;
		if (alen)
			memcpy(q.after, after, alen);
		q.after_len = (uint32_t)alen;
		q.limit = limit;
		ret = conn_get(s, mb->addr, mb->port, slice, &c, e2, sizeof(e2));
		if (ret == 0)
			ret = call(s, c, OVL_WIRE_T_LIST, &q, NULL, 0, m->msg.u.map.encrypt, &r, &body,
				   &blen, e2, sizeof(e2));
		if (ret == 0 && r.status != OVL_WIRE_OK) {
			ret = status_errno(r.status);
			snprintf(e2, sizeof(e2), "node %s: %s", text, r.message);
		}
		if (ret == 0)
			ret = ovl_wire_keys_decode(body, blen, &keys, &nk, e2, sizeof(e2));
		if (ret < 0) {
			free(body);
			fail(err, errlen, ret, "ls: %s", e2);
			goto out;
		}
		for (uint32_t j = 0; j < nk; j++) {
			uint8_t *copy = malloc(keys[j].len);

			if (all.n == all.cap) {
				size_t cap = all.cap ? all.cap * 2 : 256;
				void *a = realloc(all.k, cap * sizeof(*all.k));
				void *o = realloc(all.owned, cap * sizeof(*all.owned));

				if (a)
					all.k = a;
				if (o)
					all.owned = o;
				if (!a || !o || !copy) {
					free(copy);
					free(keys);
					free(body);
					ret = -ENOMEM;
					goto out;
				}
				all.cap = cap;
			}
			memcpy(copy, keys[j].ptr, keys[j].len);
			all.k[all.n].ptr = copy;
			all.k[all.n].len = keys[j].len;
			all.owned[all.n++] = copy;
		}
		free(keys);
		free(body);
	}
	qsort(all.k, all.n, sizeof(*all.k), kcmp);
	for (size_t i = 0; i < all.n && given < limit; i++) {
		if (i && kcmp(&all.k[i - 1], &all.k[i]) == 0)
			continue; /* a replica's copy */
		given++;
		if (cb && cb(arg, all.k[i].ptr, all.k[i].len))
			break;
	}
	ret = (int)given;
out:
	for (size_t i = 0; i < all.n; i++)
		free(all.owned[i]);
	free(all.k);
	free(all.owned);
	return ret;
}

SHELF_API int shelf_add_node(struct shelf *s, const char *node, char *err, size_t errlen)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *end;
	unsigned long port = SHELF_DATA_PORT_DEFAULT;
	struct node_addr *na;

	if (s->nnodes >= SHELF_NODES_MAX)
		return fail(err, errlen, -ENOSPC, "more than %d node addresses", SHELF_NODES_MAX);
	if (node[0] == '[') {
		char *pe = NULL;

		end = strchr(node, ']');
		if (!end || (size_t)(end - node - 1) >= sizeof(host) || end[1] != ':')
			goto bad;
		memcpy(host, node + 1, (size_t)(end - node - 1));
		host[end - node - 1] = 0;
		errno = 0;
		port = strtoul(end + 2, &pe, 10);
		if (errno || !end[2] || *pe || port < 1 || port > 65535)
			goto bad;
	} else {
		if (strlen(node) >= sizeof(host))
			goto bad;
		snprintf(host, sizeof(host), "%s", node);
	}
	na = &s->nodes[s->nnodes];
	if (inet_pton(AF_INET6, host, &na->addr) != 1)
		goto bad;
	na->port = (uint16_t)port;
	s->nnodes++;
	return 0;
bad:
	return fail(err, errlen, -EINVAL, "node '%s': expected an IPv6 address or [ADDR]:PORT", node);
}

SHELF_API int shelf_map(struct shelf *s, const char *slice, struct shelf_map_info *info,
			struct shelf_member **members, char *err, size_t errlen)
{
	struct map *m = NULL;
	struct shelf_member *out = NULL;
	const struct ovl_msg_map *mp;
	int ret;

	*members = NULL;
	memset(info, 0, sizeof(*info));
	if (!slice || !*slice)
		return fail(err, errlen, -EINVAL, "no slice named");
	ret = map_fetch(s, slice, &m, err, errlen);
	if (ret < 0)
		return ret;
	mp = &m->msg.u.map;
	if (mp->n_members && !(out = calloc(mp->n_members, sizeof(*out))))
		return -ENOMEM;
	for (uint32_t i = 0; i < mp->n_members; i++) {
		const struct ovl_msg_member *mb = &mp->members[i];
		const char *st = ovl_msg_state_name(mb->state);

		memcpy(out[i].id, mb->id, sizeof(out[i].id));
		inet_ntop(AF_INET6, mb->addr, out[i].addr, sizeof(out[i].addr));
		out[i].port = mb->port;
		out[i].state = st ? st : "unknown";
		out[i].capacity = mb->capacity;
		snprintf(out[i].site, sizeof(out[i].site), "%s", mb->domain.site);
		snprintf(out[i].chassis, sizeof(out[i].chassis), "%s", mb->domain.chassis);
		snprintf(out[i].slot, sizeof(out[i].slot), "%s", mb->domain.slot);
	}
	info->epoch = mp->epoch;
	info->replicas = mp->replicas;
	info->encrypt = mp->encrypt;
	info->n_members = mp->n_members;
	snprintf(info->source, sizeof(info->source), "%.95s", s->map_source);
	*members = out;
	return 0;
}

SHELF_API int shelf_node_stat(struct shelf *s, const char *slice, const char *addr, uint16_t port,
			      struct shelf_counter *out, unsigned cap, char *err, size_t errlen)
{
	struct ovl_wire_req q = { 0 };
	struct ovl_wire_resp *r = NULL;
	struct in6_addr a;
	struct conn *c = NULL;
	char e2[384];
	int ret;

	if (!slice || !*slice || inet_pton(AF_INET6, addr, &a) != 1)
		return fail(err, errlen, -EINVAL, "node-stat: a slice and an IPv6 address are needed");
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	snprintf(q.slice, sizeof(q.slice), "%s", slice);
	q.epoch = UINT64_MAX; /* never stale: NODE_STAT does not depend on placement */
	ret = conn_get(s, (const uint8_t *)&a, port, slice, &c, e2, sizeof(e2));
	if (ret == 0)
		ret = call(s, c, OVL_WIRE_T_NODE_STAT, &q, NULL, 0, false, r, NULL, NULL, e2,
			   sizeof(e2));
	if (ret == 0 && r->status != OVL_WIRE_OK) {
		ret = status_errno(r->status);
		snprintf(e2, sizeof(e2), "node %s: %s", addr, r->message);
	}
	if (ret < 0) {
		fail(err, errlen, ret, "node-stat: %s", e2);
		goto out;
	}
	for (uint32_t i = 0; i < r->ncounters && i < cap; i++) {
		snprintf(out[i].name, sizeof(out[i].name), "%s", r->counters[i].name);
		out[i].value = r->counters[i].value;
	}
	ret = (int)(r->ncounters < cap ? r->ncounters : cap);
out:
	free(r);
	return ret;
}
