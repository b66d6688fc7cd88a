#include "ovl_link.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>
#include <zmq.h>

#include "ovl_id.h"
#include "ovl_util.h"

#define PROBE_REQUEST_ID "ovl-link-probe"
#define SEND_RETRY_MS 2 /* sleep between tries when one ROUTER peer's queue is full */

const struct ovl_link_opts ovl_link_opts_default = {
	.max_msg_bytes = OVL_LINK_MAX_MSG_BYTES,
	.heartbeat_ivl_ms = OVL_LINK_HEARTBEAT_IVL_MS,
	.heartbeat_timeout_ms = OVL_LINK_HEARTBEAT_TIMEOUT_MS,
	.heartbeat_ttl_ms = OVL_LINK_HEARTBEAT_TTL_MS,
	.handshake_ivl_ms = OVL_LINK_HANDSHAKE_IVL_MS,
	.linger_ms = OVL_LINK_LINGER_MS,
	.sndhwm_msgs = OVL_LINK_HWM_MSGS,
	.rcvhwm_msgs = OVL_LINK_HWM_MSGS,
	.reconnect_ivl_ms = OVL_LINK_RECONNECT_IVL_MS,
	.reconnect_ivl_max_ms = OVL_LINK_RECONNECT_IVL_MAX_MS,
};

struct opt_range {
	const char *name;
	size_t offset; /* of an int in struct ovl_link_opts */
	int min, max;
	bool zero_ok;  /* 0 (off) is allowed besides min..max */
};

/* Zero would mean "never" or "unbounded" to libzmq for most of these; for
 * the heartbeat interval and TTL it means "off" and is allowed. */
static const struct opt_range opt_ranges[] = {
	{ "heartbeat_ivl_ms", offsetof(struct ovl_link_opts, heartbeat_ivl_ms), 100, 600000, true },
	{ "heartbeat_timeout_ms", offsetof(struct ovl_link_opts, heartbeat_timeout_ms), 100, 3600000,
	  false },
	/* libzmq sends the TTL in deciseconds in 16 bits */
	{ "heartbeat_ttl_ms", offsetof(struct ovl_link_opts, heartbeat_ttl_ms), 100, 6553500, true },
	{ "handshake_ivl_ms", offsetof(struct ovl_link_opts, handshake_ivl_ms), 100, 600000, false },
	{ "linger_ms", offsetof(struct ovl_link_opts, linger_ms), 0, OVL_LINK_LINGER_MAX_MS, false },
	{ "sndhwm_msgs", offsetof(struct ovl_link_opts, sndhwm_msgs), 1, OVL_LINK_HWM_MAX_MSGS, false },
	{ "rcvhwm_msgs", offsetof(struct ovl_link_opts, rcvhwm_msgs), 1, OVL_LINK_HWM_MAX_MSGS, false },
	{ "reconnect_ivl_ms", offsetof(struct ovl_link_opts, reconnect_ivl_ms), 10, 600000, false },
	{ "reconnect_ivl_max_ms", offsetof(struct ovl_link_opts, reconnect_ivl_max_ms), 10, 3600000,
	  false },
};

int ovl_link_opts_check(const struct ovl_link_opts *o, char *err, size_t errlen)
{
	if (o->max_msg_bytes < OVL_LINK_MAX_MSG_BYTES_MIN ||
	    o->max_msg_bytes > OVL_LINK_MAX_MSG_BYTES_LIMIT) {
		snprintf(err, errlen, "link option 'max_msg_bytes' = %zu is out of range %d..%d",
			 o->max_msg_bytes, OVL_LINK_MAX_MSG_BYTES_MIN, OVL_LINK_MAX_MSG_BYTES_LIMIT);
		return -EINVAL;
	}
	if (o->max_recv_bytes && (o->max_recv_bytes < OVL_LINK_MAX_MSG_BYTES_MIN ||
				  o->max_recv_bytes > o->max_msg_bytes)) {
		snprintf(err, errlen, "link option 'max_recv_bytes' = %zu is out of range %d..%zu "
			 "(max_msg_bytes)", o->max_recv_bytes, OVL_LINK_MAX_MSG_BYTES_MIN,
			 o->max_msg_bytes);
		return -EINVAL;
	}
	for (size_t i = 0; i < sizeof(opt_ranges) / sizeof(opt_ranges[0]); i++) {
		const struct opt_range *r = &opt_ranges[i];
		int v;

		memcpy(&v, (const char *)o + r->offset, sizeof(v));
		if ((v < r->min || v > r->max) && !(v == 0 && r->zero_ok)) {
			snprintf(err, errlen, "link option '%s' = %d is out of range %s%d..%d",
				 r->name, v, r->zero_ok ? "0 (off) or " : "", r->min, r->max);
			return -EINVAL;
		}
	}
	if (o->heartbeat_ivl_ms && o->heartbeat_timeout_ms < o->heartbeat_ivl_ms) {
		snprintf(err, errlen,
			 "link option 'heartbeat_timeout_ms' = %d is shorter than 'heartbeat_ivl_ms' = %d",
			 o->heartbeat_timeout_ms, o->heartbeat_ivl_ms);
		return -EINVAL;
	}
	if (o->reconnect_ivl_max_ms < o->reconnect_ivl_ms) {
		snprintf(err, errlen,
			 "link option 'reconnect_ivl_max_ms' = %d is shorter than 'reconnect_ivl_ms' = %d",
			 o->reconnect_ivl_max_ms, o->reconnect_ivl_ms);
		return -EINVAL;
	}
	return 0;
}

int ovl_link_key_public(const uint8_t secret[OVL_KEY_BYTES], uint8_t public_key[OVL_KEY_BYTES])
{
	if (sodium_init() < 0)
		return -EIO;
	return crypto_scalarmult_base(public_key, secret) == 0 ? 0 : -EINVAL;
}

static int64_t now_ms(void)
{
	return (int64_t)ovl_mono_ms();
}

static long remaining_ms(int64_t deadline)
{
	int64_t r = deadline - now_ms();

	return r < 0 ? 0 : (long)r;
}

/* Waits until `sock` has `events` or the deadline passes: 0, -ETIMEDOUT or -errno. */
static int wait_for(void *sock, short events, int64_t deadline)
{
	for (;;) {
		zmq_pollitem_t it = { sock, 0, events, 0 };
		int rc = zmq_poll(&it, 1, remaining_ms(deadline));

		if (rc < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (rc > 0 && (it.revents & events))
			return 0;
		if (now_ms() >= deadline)
			return -ETIMEDOUT;
	}
}

/* Discards the rest of a multipart message. */
static void drain(void *sock)
{
	int more = 1;
	size_t len = sizeof(more);

	while (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &len) == 0 && more) {
		zmq_msg_t m;

		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, sock, ZMQ_DONTWAIT) < 0) {
			zmq_msg_close(&m);
			return;
		}
		zmq_msg_close(&m);
		len = sizeof(more);
	}
}

static bool key_is_zero(const uint8_t *key)
{
	return ovl_mem_is_zero(key, OVL_KEY_BYTES);
}

/* Parses a User-Id: exactly 64 hex digits. Returns 0 or -EBADMSG. */
static int user_id_parse(const char *s, uint8_t key[OVL_KEY_BYTES])
{
	_Static_assert(OVL_KEY_BYTES == OVL_ID_BYTES, "a User-Id is written as a node id is");
	return ovl_nodeid_parse(s, key) < 0 ? -EBADMSG : 0;
}

static int set_int(void *sock, int opt, const char *name, int v, char *err, size_t errlen)
{
	int e;

	if (zmq_setsockopt(sock, opt, &v, sizeof(v)) == 0)
		return 0;
	e = errno;
	snprintf(err, errlen, "cannot set %s = %d on link socket: %s", name, v, zmq_strerror(e));
	return -e;
}

static int set_bytes(void *sock, int opt, const char *name, const void *v, size_t len, char *err,
		     size_t errlen)
{
	int e;

	if (zmq_setsockopt(sock, opt, v, len) == 0)
		return 0;
	e = errno;
	snprintf(err, errlen, "cannot set %s on link socket: %s", name, zmq_strerror(e));
	return -e;
}

/* The options both ends share: limits, heartbeats, handshake, linger, IPv6. */
static int apply_opts(void *sock, const struct ovl_link_opts *o, bool client, char *err,
		      size_t errlen)
{
	size_t recv_max = o->max_recv_bytes ? o->max_recv_bytes : o->max_msg_bytes;
	int64_t maxmsg = (int64_t)(recv_max + OVL_LINK_CURVE_OVERHEAD_BYTES);
	int rc = 0;

	if (zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg)) < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot set ZMQ_MAXMSGSIZE on link socket: %s",
			 zmq_strerror(-rc));
		return rc;
	}
	if ((rc = set_int(sock, ZMQ_IPV6, "ZMQ_IPV6", 1, err, errlen)) < 0 ||
	    (rc = set_int(sock, ZMQ_LINGER, "ZMQ_LINGER", o->linger_ms, err, errlen)) < 0 ||
	    (rc = set_int(sock, ZMQ_SNDHWM, "ZMQ_SNDHWM", o->sndhwm_msgs, err, errlen)) < 0 ||
	    (rc = set_int(sock, ZMQ_RCVHWM, "ZMQ_RCVHWM", o->rcvhwm_msgs, err, errlen)) < 0 ||
	    (rc = set_int(sock, ZMQ_HANDSHAKE_IVL, "ZMQ_HANDSHAKE_IVL", o->handshake_ivl_ms, err,
			  errlen)) < 0 ||
	    (rc = set_int(sock, ZMQ_HEARTBEAT_TTL, "ZMQ_HEARTBEAT_TTL", o->heartbeat_ttl_ms, err,
			  errlen)) < 0)
		return rc;
	if (o->heartbeat_ivl_ms) {
		if ((rc = set_int(sock, ZMQ_HEARTBEAT_IVL, "ZMQ_HEARTBEAT_IVL", o->heartbeat_ivl_ms,
				  err, errlen)) < 0 ||
		    (rc = set_int(sock, ZMQ_HEARTBEAT_TIMEOUT, "ZMQ_HEARTBEAT_TIMEOUT",
				  o->heartbeat_timeout_ms, err, errlen)) < 0)
			return rc;
	} else if ((rc = set_int(sock, ZMQ_TCP_KEEPALIVE, "ZMQ_TCP_KEEPALIVE", 1, err,
				 errlen)) < 0 ||
		   (rc = set_int(sock, ZMQ_TCP_KEEPALIVE_IDLE, "ZMQ_TCP_KEEPALIVE_IDLE",
				 OVL_LINK_KEEPALIVE_IDLE_S, err, errlen)) < 0 ||
		   (rc = set_int(sock, ZMQ_TCP_KEEPALIVE_INTVL, "ZMQ_TCP_KEEPALIVE_INTVL",
				 OVL_LINK_KEEPALIVE_INTVL_S, err, errlen)) < 0 ||
		   (rc = set_int(sock, ZMQ_TCP_KEEPALIVE_CNT, "ZMQ_TCP_KEEPALIVE_CNT",
				 OVL_LINK_KEEPALIVE_CNT, err, errlen)) < 0) {
		/* no ZMTP heartbeats: the kernel finds dead peers instead, without a
		 * libzmq timer per connection */
		return rc;
	}
	if (!client)
		return 0;
	if ((rc = set_int(sock, ZMQ_RECONNECT_IVL, "ZMQ_RECONNECT_IVL", o->reconnect_ivl_ms, err,
			  errlen)) < 0 ||
	    (rc = set_int(sock, ZMQ_RECONNECT_IVL_MAX, "ZMQ_RECONNECT_IVL_MAX",
			  o->reconnect_ivl_max_ms, err, errlen)) < 0 ||
	    (rc = set_int(sock, ZMQ_IMMEDIATE, "ZMQ_IMMEDIATE", 1, err, errlen)) < 0)
		return rc;
	return 0;
}

/* ---- server ------------------------------------------------------------ */

struct ovl_link_server {
	ovl_zap_t *zap; /* borrowed */
	void *sock;     /* ROUTER */
	char domain[OVL_ZAP_DOMAIN_MAX_CHARS + 1];
	struct ovl_link_opts opts;
	struct ovl_link_server_stats stats;
};

/*
 * Asks whoever answers at the ZAP endpoint of `zctx` about a NULL-mechanism
 * client: a deny-by-default handler must say 400. Returns 0 when it did,
 * -EPERM with the reason in `why` otherwise.
 */
static int zap_probe(void *zctx, const char *domain, char *why, size_t whylen)
{
	const char *req_frames[] = { "1.0", PROBE_REQUEST_ID, domain, "", "", "NULL" };
	const size_t nreq = sizeof(req_frames) / sizeof(req_frames[0]);
	int64_t deadline = now_ms() + OVL_LINK_ZAP_PROBE_MS;
	char status[4] = "";
	void *req = NULL;
	int rc = 0, linger = 0, more = 1, nf = 0;

	req = zmq_socket(zctx, ZMQ_REQ);
	if (!req) {
		rc = -errno;
		snprintf(why, whylen, "cannot open a probe socket: %s", zmq_strerror(-rc));
		goto out;
	}
	zmq_setsockopt(req, ZMQ_LINGER, &linger, sizeof(linger));
	if (zmq_connect(req, OVL_ZAP_ENDPOINT) < 0) {
		rc = -errno;
		snprintf(why, whylen, "cannot connect to '%s': %s", OVL_ZAP_ENDPOINT,
			 zmq_strerror(-rc));
		goto out;
	}
	for (size_t i = 0; i < nreq; i++) {
		if (zmq_send(req, req_frames[i], strlen(req_frames[i]),
			     ZMQ_DONTWAIT | (i + 1 < nreq ? ZMQ_SNDMORE : 0)) < 0) {
			rc = -errno;
			snprintf(why, whylen, "nothing listens on '%s'", OVL_ZAP_ENDPOINT);
			goto out;
		}
	}
	rc = wait_for(req, ZMQ_POLLIN, deadline);
	if (rc < 0) {
		snprintf(why, whylen, "no answer on '%s' within %d ms", OVL_ZAP_ENDPOINT,
			 OVL_LINK_ZAP_PROBE_MS);
		goto out;
	}
	while (more) {
		zmq_msg_t m;

		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, req, ZMQ_DONTWAIT) < 0) {
			rc = -errno;
			zmq_msg_close(&m);
			snprintf(why, whylen, "cannot read the answer: %s", zmq_strerror(-rc));
			goto out;
		}
		if (nf == 2 && zmq_msg_size(&m) == 3)
			memcpy(status, zmq_msg_data(&m), 3);
		more = zmq_msg_more(&m);
		zmq_msg_close(&m);
		nf++;
	}
	if (nf != 6 || strcmp(status, "400") != 0) {
		rc = -EPERM;
		snprintf(why, whylen, "the handler answered status '%s' to a NULL-mechanism request",
			 status);
	}
out:
	if (req)
		zmq_close(req);
	return rc < 0 ? -EPERM : 0;
}

int ovl_link_server_new(ovl_link_server_t **srvp, ovl_zap_t *zap,
			const struct ovl_link_server_cfg *cfg, char *err, size_t errlen)
{
	const struct ovl_link_opts *o = NULL;
	ovl_link_server_t *srv = NULL;
	char why[160] = "";
	int rc = 0;

	*srvp = NULL;
	if (!cfg || !cfg->endpoint || !cfg->domain || !cfg->secret_key) {
		snprintf(err, errlen, "link server needs an endpoint, a ZAP domain and a secret key");
		return -EINVAL;
	}
	o = cfg->opts ? cfg->opts : &ovl_link_opts_default;
	rc = ovl_link_opts_check(o, err, errlen);
	if (rc < 0)
		return rc;
	if (!zmq_has("curve")) {
		snprintf(err, errlen, "cannot bind '%s': libzmq was built without CURVE",
			 cfg->endpoint);
		return -ENOTSUP;
	}
	if (!zap || !ovl_zap_running(zap)) {
		snprintf(err, errlen,
			 "cannot bind '%s': no ZAP handler in this context; refusing to accept "
			 "unauthenticated clients", cfg->endpoint);
		return -EPERM;
	}
	if (strlen(cfg->domain) == 0 || strlen(cfg->domain) > OVL_ZAP_DOMAIN_MAX_CHARS) {
		snprintf(err, errlen, "cannot bind '%s': ZAP domain '%s' must have 1 to %d characters",
			 cfg->endpoint, cfg->domain, OVL_ZAP_DOMAIN_MAX_CHARS);
		return -EINVAL;
	}
	if (key_is_zero(cfg->secret_key)) {
		snprintf(err, errlen, "cannot bind '%s': the secret key is all zeros", cfg->endpoint);
		return -EINVAL;
	}
	if (!ovl_zap_domain_known(zap, cfg->domain)) {
		snprintf(err, errlen,
			 "cannot bind '%s': ZAP domain '%s' has no keyring, so every client would be "
			 "refused", cfg->endpoint, cfg->domain);
		return -ENOENT;
	}
	if (zap_probe(ovl_zap_context(zap), cfg->domain, why, sizeof(why)) < 0) {
		snprintf(err, errlen,
			 "cannot bind '%s': no ZAP handler in this context; refusing to accept "
			 "unauthenticated clients (%s)", cfg->endpoint, why);
		return -EPERM;
	}

	srv = calloc(1, sizeof(*srv));
	if (!srv) {
		snprintf(err, errlen, "cannot bind '%s': out of memory", cfg->endpoint);
		return -ENOMEM;
	}
	srv->zap = zap;
	srv->opts = *o;
	memcpy(srv->domain, cfg->domain, strlen(cfg->domain) + 1);
	srv->sock = zmq_socket(ovl_zap_context(zap), ZMQ_ROUTER);
	if (!srv->sock) {
		rc = -errno;
		snprintf(err, errlen, "cannot bind '%s': %s", cfg->endpoint, zmq_strerror(-rc));
		goto out;
	}
	if ((rc = apply_opts(srv->sock, o, false, err, errlen)) < 0 ||
	    (rc = set_int(srv->sock, ZMQ_ROUTER_MANDATORY, "ZMQ_ROUTER_MANDATORY", 1, err,
			  errlen)) < 0 ||
	    (rc = set_int(srv->sock, ZMQ_CURVE_SERVER, "ZMQ_CURVE_SERVER", 1, err, errlen)) < 0 ||
	    (rc = set_bytes(srv->sock, ZMQ_CURVE_SECRETKEY, "ZMQ_CURVE_SECRETKEY",
			    cfg->secret_key, OVL_KEY_BYTES, err, errlen)) < 0 ||
	    (rc = set_bytes(srv->sock, ZMQ_ZAP_DOMAIN, "ZMQ_ZAP_DOMAIN", cfg->domain,
			    strlen(cfg->domain), err, errlen)) < 0)
		goto out;
	if (zmq_bind(srv->sock, cfg->endpoint) < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot bind '%s': %s", cfg->endpoint, zmq_strerror(-rc));
		goto out;
	}
	*srvp = srv;
	srv = NULL;
out:
	ovl_link_server_destroy(&srv);
	return rc;
}

void ovl_link_server_destroy(ovl_link_server_t **srvp)
{
	ovl_link_server_t *srv = srvp ? *srvp : NULL;

	if (!srv)
		return;
	if (srv->sock)
		zmq_close(srv->sock);
	free(srv);
	*srvp = NULL;
}

int ovl_link_server_endpoint(ovl_link_server_t *srv, char *buf, size_t len)
{
	size_t n = len;

	if (zmq_getsockopt(srv->sock, ZMQ_LAST_ENDPOINT, buf, &n) < 0)
		return errno == EINVAL ? -ENOBUFS : -errno;
	return 0;
}

void *ovl_link_server_socket(ovl_link_server_t *srv)
{
	return srv->sock;
}

/*
 * Reads one message that is ready. Returns its length, -EMSGSIZE, -EAGAIN
 * when nothing usable was read (dropped or spurious), or another -errno.
 */
static int server_recv_one(ovl_link_server_t *srv, struct ovl_link_peer *from, void *buf,
			   size_t buflen)
{
	zmq_msg_t rid, payload;
	uint8_t key[OVL_KEY_BYTES];
	size_t size;
	int rc = 0;

	zmq_msg_init(&rid);
	zmq_msg_init(&payload);
	if (zmq_msg_recv(&rid, srv->sock, ZMQ_DONTWAIT) < 0) {
		rc = -errno;
		goto out;
	}
	/* a ROUTER always prefixes the routing id; anything else is a bug or an attack */
	if (!zmq_msg_more(&rid) || zmq_msg_size(&rid) == 0 ||
	    zmq_msg_size(&rid) > OVL_LINK_RID_MAX_BYTES) {
		srv->stats.dropped_malformed++;
		drain(srv->sock);
		rc = -EAGAIN;
		goto out;
	}
	if (zmq_msg_recv(&payload, srv->sock, ZMQ_DONTWAIT) < 0) {
		rc = -errno;
		goto out;
	}
	if (zmq_msg_more(&payload)) {
		srv->stats.dropped_malformed++;
		drain(srv->sock);
		rc = -EAGAIN;
		goto out;
	}
	/* the User-Id came from our ZAP handler; checking again catches revocations */
	if (user_id_parse(zmq_msg_gets(&payload, "User-Id"), key) < 0 ||
	    ovl_zap_check(srv->zap, srv->domain, key) != 0) {
		srv->stats.dropped_unauthorised++;
		rc = -EAGAIN;
		goto out;
	}
	memcpy(from->key, key, OVL_KEY_BYTES);
	from->rid_len = zmq_msg_size(&rid);
	memcpy(from->rid, zmq_msg_data(&rid), from->rid_len);
	size = zmq_msg_size(&payload);
	if (size > buflen) {
		srv->stats.dropped_too_big++;
		rc = -EMSGSIZE;
		goto out;
	}
	if (size)
		memcpy(buf, zmq_msg_data(&payload), size);
	srv->stats.received++;
	rc = (int)size;
out:
	zmq_msg_close(&rid);
	zmq_msg_close(&payload);
	return rc;
}

int ovl_link_server_recv(ovl_link_server_t *srv, struct ovl_link_peer *from, void *buf,
			 size_t buflen, int timeout_ms)
{
	int64_t deadline;
	int rc;

	if (!from || (!buf && buflen) || timeout_ms < 0)
		return -EINVAL;
	deadline = now_ms() + timeout_ms;
	for (;;) {
		rc = wait_for(srv->sock, ZMQ_POLLIN, deadline);
		if (rc < 0)
			return rc;
		rc = server_recv_one(srv, from, buf, buflen);
		if (rc != -EAGAIN && rc != -EINTR)
			return rc;
	}
}

int ovl_link_server_send(ovl_link_server_t *srv, const struct ovl_link_peer *to,
			 const void *buf, size_t len, int timeout_ms)
{
	int64_t deadline;

	if (!to || to->rid_len == 0 || to->rid_len > OVL_LINK_RID_MAX_BYTES || (!buf && len) ||
	    timeout_ms < 0)
		return -EINVAL;
	if (len > srv->opts.max_msg_bytes)
		return -EMSGSIZE;
	deadline = now_ms() + timeout_ms;
	/* ROUTER_MANDATORY: the routing id frame is refused while that peer's queue is full */
	while (zmq_send(srv->sock, to->rid, to->rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
		struct timespec ts = { 0, SEND_RETRY_MS * 1000000L };
		int e = errno;

		if (e != EAGAIN && e != EINTR)
			return -e;
		if (now_ms() >= deadline)
			return -ETIMEDOUT;
		/* POLLOUT on a ROUTER means "some peer", not this one: sleep instead */
		nanosleep(&ts, NULL);
	}
	if (zmq_send(srv->sock, buf, len, ZMQ_DONTWAIT) < 0)
		return -errno;
	srv->stats.sent++;
	return 0;
}

void ovl_link_server_stats_get(ovl_link_server_t *srv, struct ovl_link_server_stats *out)
{
	*out = srv->stats;
}

/* ---- client ------------------------------------------------------------ */

#define CLIENT_EVENTS                                                                      \
	(ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |            \
	 ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |           \
	 ZMQ_EVENT_DISCONNECTED)

struct ovl_link_client {
	void *sock; /* DEALER */
	void *mon;  /* PAIR receiving the DEALER's handshake events */
	char endpoint[OVL_LINK_ENDPOINT_MAX_CHARS];
	struct ovl_link_opts opts;
	bool up;           /* a handshake succeeded and no disconnect since */
	int fail_event;    /* last handshake failure not yet reported, or 0 */
	uint32_t fail_val; /* its value: ZAP status, protocol error or errno */
	bool saw_no_detail; /* a handshake ended without detail since the last report */
};

/* Applies every pending monitor event to the client's state. */
static void monitor_drain(ovl_link_client_t *cl)
{
	for (;;) {
		zmq_msg_t m;
		uint16_t ev = 0;
		uint32_t val = 0;

		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, cl->mon, ZMQ_DONTWAIT) < 0) {
			zmq_msg_close(&m);
			return;
		}
		if (zmq_msg_size(&m) == sizeof(ev) + sizeof(val)) {
			memcpy(&ev, zmq_msg_data(&m), sizeof(ev));
			memcpy(&val, (const char *)zmq_msg_data(&m) + sizeof(ev), sizeof(val));
		}
		zmq_msg_close(&m);
		drain(cl->mon); /* the endpoint frame */

		switch (ev) {
		case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
			cl->up = true;
			cl->fail_event = 0;
			cl->saw_no_detail = false;
			break;
		case ZMQ_EVENT_DISCONNECTED:
			cl->up = false;
			break;
		case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
			cl->up = false;
			cl->saw_no_detail = true;
			break;
		case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
		case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
			cl->up = false;
			cl->fail_event = ev;
			cl->fail_val = val;
			break;
		default:
			break;
		}
	}
}

int ovl_link_client_new(ovl_link_client_t **clp, void *zctx,
			const struct ovl_link_client_cfg *cfg, char *err, size_t errlen)
{
	const struct ovl_link_opts *o = NULL;
	ovl_link_client_t *cl = NULL;
	uint8_t pub[OVL_KEY_BYTES];
	char monaddr[64];
	int rc = 0, zero = 0;

	*clp = NULL;
	if (!zctx || !cfg || !cfg->endpoint || !cfg->server_key || !cfg->secret_key) {
		snprintf(err, errlen,
			 "link client needs a context, an endpoint, the server key and a secret key");
		return -EINVAL;
	}
	if (strlen(cfg->endpoint) >= OVL_LINK_ENDPOINT_MAX_CHARS) {
		snprintf(err, errlen, "cannot connect to '%.40s...': endpoint longer than %d characters",
			 cfg->endpoint, OVL_LINK_ENDPOINT_MAX_CHARS - 1);
		return -EINVAL;
	}
	o = cfg->opts ? cfg->opts : &ovl_link_opts_default;
	rc = ovl_link_opts_check(o, err, errlen);
	if (rc < 0)
		return rc;
	if (!zmq_has("curve")) {
		snprintf(err, errlen, "cannot connect to '%s': libzmq was built without CURVE",
			 cfg->endpoint);
		return -ENOTSUP;
	}
	if (key_is_zero(cfg->server_key) || key_is_zero(cfg->secret_key) ||
	    ovl_link_key_public(cfg->secret_key, pub) < 0) {
		snprintf(err, errlen, "cannot connect to '%s': a CURVE key is all zeros or invalid",
			 cfg->endpoint);
		return -EINVAL;
	}

	cl = calloc(1, sizeof(*cl));
	if (!cl) {
		snprintf(err, errlen, "cannot connect to '%s': out of memory", cfg->endpoint);
		return -ENOMEM;
	}
	cl->opts = *o;
	memcpy(cl->endpoint, cfg->endpoint, strlen(cfg->endpoint) + 1);
	cl->sock = zmq_socket(zctx, ZMQ_DEALER);
	if (!cl->sock) {
		rc = -errno;
		snprintf(err, errlen, "cannot connect to '%s': %s", cfg->endpoint, zmq_strerror(-rc));
		goto out;
	}
	if ((rc = apply_opts(cl->sock, o, true, err, errlen)) < 0 ||
	    (rc = set_bytes(cl->sock, ZMQ_CURVE_SERVERKEY, "ZMQ_CURVE_SERVERKEY", cfg->server_key,
			    OVL_KEY_BYTES, err, errlen)) < 0 ||
	    (rc = set_bytes(cl->sock, ZMQ_CURVE_PUBLICKEY, "ZMQ_CURVE_PUBLICKEY", pub,
			    OVL_KEY_BYTES, err, errlen)) < 0 ||
	    (rc = set_bytes(cl->sock, ZMQ_CURVE_SECRETKEY, "ZMQ_CURVE_SECRETKEY", cfg->secret_key,
			    OVL_KEY_BYTES, err, errlen)) < 0)
		goto out;

	/*
	 * Handshake events tell "refused" from "unreachable". libzmq's monitor
	 * socket blocks its I/O thread when its queue is full, so ours has no
	 * receive limit (RCVHWM 0) and is drained by every client call; it is
	 * connected before the DEALER connects, so no event waits for a reader.
	 */
	/* inproc names are released asynchronously: a freed client's may still be taken */
	snprintf(monaddr, sizeof(monaddr), "inproc://ovl-link-monitor-%08x%08x%08x",
		 randombytes_random(), randombytes_random(), randombytes_random());
	if (zmq_socket_monitor(cl->sock, monaddr, CLIENT_EVENTS) < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot monitor the link to '%s': %s", cfg->endpoint,
			 zmq_strerror(-rc));
		goto out;
	}
	cl->mon = zmq_socket(zctx, ZMQ_PAIR);
	if (!cl->mon) {
		rc = -errno;
		snprintf(err, errlen, "cannot monitor the link to '%s': %s", cfg->endpoint,
			 zmq_strerror(-rc));
		goto out;
	}
	if ((rc = set_int(cl->mon, ZMQ_LINGER, "ZMQ_LINGER", 0, err, errlen)) < 0 ||
	    (rc = set_int(cl->mon, ZMQ_RCVHWM, "ZMQ_RCVHWM", zero, err, errlen)) < 0)
		goto out;
	if (zmq_connect(cl->mon, monaddr) < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot monitor the link to '%s': %s", cfg->endpoint,
			 zmq_strerror(-rc));
		goto out;
	}
	if (zmq_connect(cl->sock, cfg->endpoint) < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot connect to '%s': %s", cfg->endpoint, zmq_strerror(-rc));
		goto out;
	}
	*clp = cl;
	cl = NULL;
out:
	sodium_memzero(pub, sizeof(pub));
	ovl_link_client_destroy(&cl);
	return rc;
}

void ovl_link_client_destroy(ovl_link_client_t **clp)
{
	ovl_link_client_t *cl = clp ? *clp : NULL;

	if (!cl)
		return;
	if (cl->sock)
		zmq_socket_monitor(cl->sock, NULL, 0);
	if (cl->mon)
		zmq_close(cl->mon);
	if (cl->sock)
		zmq_close(cl->sock);
	free(cl);
	*clp = NULL;
}

/* Turns a reported failure into a code and words, and forgets it. */
static int client_failure(ovl_link_client_t *cl, char *err, size_t errlen)
{
	int ev = cl->fail_event;
	uint32_t val = cl->fail_val;

	cl->fail_event = 0;
	cl->saw_no_detail = false;
	if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
		snprintf(err, errlen, "server '%s' refused our key (ZAP status %u)", cl->endpoint,
			 val);
		return -EACCES;
	}
	snprintf(err, errlen, "handshake with '%s' failed: CURVE protocol error 0x%x",
		 cl->endpoint, val);
	return -EPROTO;
}

int ovl_link_client_wait_ready(ovl_link_client_t *cl, int timeout_ms, char *err, size_t errlen)
{
	int64_t deadline;
	int rc;

	if (timeout_ms < 0) {
		snprintf(err, errlen, "timeout %d ms is negative", timeout_ms);
		return -EINVAL;
	}
	deadline = now_ms() + timeout_ms;
	for (;;) {
		monitor_drain(cl);
		if (cl->up)
			return 0;
		if (cl->fail_event)
			return client_failure(cl, err, errlen);
		rc = wait_for(cl->mon, ZMQ_POLLIN, deadline);
		if (rc == -ETIMEDOUT)
			break;
		if (rc < 0) {
			snprintf(err, errlen, "cannot wait for '%s': %s", cl->endpoint,
				 zmq_strerror(-rc));
			return rc;
		}
	}
	if (cl->saw_no_detail) {
		cl->saw_no_detail = false;
		snprintf(err, errlen,
			 "handshake with '%s' failed: the server closed the connection (wrong server "
			 "key?)", cl->endpoint);
		return -ECONNRESET;
	}
	snprintf(err, errlen, "no handshake with '%s' within %d ms", cl->endpoint, timeout_ms);
	return -ETIMEDOUT;
}

int ovl_link_client_send(ovl_link_client_t *cl, const void *buf, size_t len, int timeout_ms)
{
	int64_t deadline;
	int rc;

	if ((!buf && len) || timeout_ms < 0)
		return -EINVAL;
	if (len > cl->opts.max_msg_bytes)
		return -EMSGSIZE;
	monitor_drain(cl);
	deadline = now_ms() + timeout_ms;
	for (;;) {
		if (zmq_send(cl->sock, buf, len, ZMQ_DONTWAIT) >= 0)
			return 0;
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
		rc = wait_for(cl->sock, ZMQ_POLLOUT, deadline);
		if (rc < 0)
			return rc;
	}
}

int ovl_link_client_recv(ovl_link_client_t *cl, void *buf, size_t buflen, int timeout_ms)
{
	int64_t deadline;
	int rc;

	if ((!buf && buflen) || timeout_ms < 0)
		return -EINVAL;
	monitor_drain(cl);
	deadline = now_ms() + timeout_ms;
	for (;;) {
		zmq_msg_t m;
		size_t size;

		rc = wait_for(cl->sock, ZMQ_POLLIN, deadline);
		if (rc < 0)
			return rc;
		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, cl->sock, ZMQ_DONTWAIT) < 0) {
			rc = -errno;
			zmq_msg_close(&m);
			if (rc == -EAGAIN || rc == -EINTR)
				continue;
			return rc;
		}
		if (zmq_msg_more(&m)) {
			zmq_msg_close(&m);
			drain(cl->sock);
			continue;
		}
		size = zmq_msg_size(&m);
		if (size > buflen) {
			zmq_msg_close(&m);
			return -EMSGSIZE;
		}
		if (size)
			memcpy(buf, zmq_msg_data(&m), size);
		zmq_msg_close(&m);
		return (int)size;
	}
}

void *ovl_link_client_socket(ovl_link_client_t *cl)
{
	return cl->sock;
}
