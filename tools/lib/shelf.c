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

struct map {
	char slice[OVL_MSG_NAME_SIZE];
	uint8_t *buf;          /* the encoded map; bins in msg point into it */
	struct ovl_msg msg;
	bool valid;
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
	snprintf(s->broker, sizeof(s->broker), "%s", broker);
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

/* Decode a map (from the broker or the cache) into m. */
static int map_decode(struct map *m, const char *slice, size_t len, char *err, size_t errlen)
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
	snprintf(m->slice, sizeof(m->slice), "%s", slice);
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
	return map_decode(m, slice, len, err, errlen);
}

static int broker_fetch(struct shelf *s, struct map *m, const char *slice, char *err,
			size_t errlen);

/* The map from the broker; when no broker answers, the cached one. */
static int map_fetch(struct shelf *s, const char *slice, struct map **out, char *err, size_t errlen)
{
	struct map *m = NULL;
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
	ret = broker_fetch(s, m, slice, err, errlen);
	if (ret == -EHOSTUNREACH && cache_load(s, m, slice, err, errlen) == 0)
		ret = 0; /* the broker is out of the data path: keep going */
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

		ret = map_decode(m, slice, len, err, errlen);
		if (ret == 0)
			cache_store(s, slice, m->buf, len);
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

static int conn_get(struct shelf *s, const struct ovl_msg_member *mb, const char *slice,
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
		if (s->conns[i].fd >= 0 && s->conns[i].port == mb->port &&
		    memcmp(&s->conns[i].addr, mb->addr, 16) == 0) {
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
	memcpy(&c->addr, mb->addr, 16);
	c->port = mb->port;
	inet_ntop(AF_INET6, mb->addr, text, sizeof(text));
	c->fd = tcp_connect(&c->addr, c->port, s->timeout_ms);
	if (c->fd < 0) {
		ret = c->fd;
		c->fd = -1;
		return fail(err, errlen, -EHOSTUNREACH, "node %s port %u: %s", text, mb->port,
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

/* One request on a connection: send, read the response and its payload. */
static int call(struct shelf *s, struct conn *c, uint8_t type, struct ovl_wire_req *q,
		const void *payload, size_t plen, struct ovl_wire_resp *r, uint8_t **out,
		size_t *outlen, char *err, size_t errlen)
{
	struct ovl_wire_hdr h = { 0 }, rh;
	uint8_t meta[OVL_WIRE_META_MAX_BYTES], head[OVL_WIRE_HEAD_MAX_BYTES], *body = NULL;
	const uint8_t *rmeta = NULL;
	char e2[256] = "", text[INET6_ADDRSTRLEN];
	int mlen, hl, ret, n = 0;

	inet_ntop(AF_INET6, &c->addr, text, sizeof(text));
	q->type = type;
	mlen = ovl_wire_req_encode(q, meta, sizeof(meta), e2, sizeof(e2));
	if (mlen < 0)
		return fail(err, errlen, -EINVAL, "%s", e2);
	h.type = type;
	h.payload_len = plen;
	h.rid = ++c->rid;
	hl = ovl_wire_head_seal(&c->ses, &h, meta, (size_t)mlen, head, sizeof(head), e2, sizeof(e2));
	if (hl < 0)
		return fail(err, errlen, -EINVAL, "%s", e2);
	ret = io_full(c->fd, head, (size_t)hl, true);
	if (ret == 0 && plen)
		ret = io_payload(s, c->fd, (uint8_t *)payload, plen, true);
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
	if (rh.payload_len) {
		if (rh.flags & OVL_WIRE_FLAG_ENCRYPTED) {
			conn_close(c);
			return fail(err, errlen, -EPROTO, "node %s sent an encrypted payload this client did not ask for", text);
		}
		body = malloc(rh.payload_len);
		if (!body)
			return -ENOMEM;
		ret = io_payload(s, c->fd, body, rh.payload_len, false);
		if (ret < 0) {
			free(body);
			goto io_err;
		}
	}
	if (out) {
		*out = body;
		*outlen = rh.payload_len;
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
		ret = conn_get(s, mb, slice, &c, e2, sizeof(e2));
		if (ret == 0) {
			snprintf(q->slice, sizeof(q->slice), "%s", slice);
			q->epoch = m->msg.u.map.epoch;
			memcpy(q->key, key, klen);
			q->key_len = (uint32_t)klen;
			ret = call(s, c, type, q, payload, plen, r, out, outlen, e2, sizeof(e2));
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
		ret = conn_get(s, mb, slice, &c, e2, sizeof(e2));
		if (ret == 0)
			ret = call(s, c, OVL_WIRE_T_LIST, &q, NULL, 0, &r, &body, &blen, e2, sizeof(e2));
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
